//! Where `verify` and `lookup` read reports from: a [`ReportStore`].
//!
//! A local directory ([`LocalDir`]) or a bucket prefix (`super::sink::S3Reports`, for
//! `s3://bucket/prefix`). The trait is synchronous (the report commands are batch reads); the S3
//! implementation bridges with `tokio::task::block_in_place`, since the CLI runs on the
//! multi-threaded runtime.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A flat collection of report files (reports, signatures, evidence, CSV) addressed by name.
pub trait ReportStore {
    /// Where this is, for messages (a directory path, `s3://bucket/prefix`).
    fn location(&self) -> String;
    /// The names of every file directly in the store, sorted.
    fn list(&self) -> std::io::Result<Vec<String>>;
    /// A whole file (reports and signatures are small).
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>>;
    /// A file as a stream (evidence files can be large).
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + '_>>;
    /// The chain's claims, by sequence. Only a report bucket has claims (`sink::CLAIMS`); a
    /// directory has none.
    fn claims(&self) -> std::io::Result<Vec<StoredClaim>> {
        Ok(Vec::new())
    }
    /// Files a versioned store keeps but no longer shows: names whose newest entry is a delete
    /// marker over stored versions (a `DELETE` without a version id, which Object Lock allows:
    /// it hides a report and its claim from listings and reads without removing them). A
    /// directory has none.
    fn hidden(&self) -> std::io::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A claim of a sequence of a report bucket's chain.
pub struct StoredClaim {
    pub sequence: u64,
    /// The link it holds, or why it cannot be read.
    pub link: Result<crate::integrity::ChainLink, String>,
    /// When it was made (the store's time).
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A directory of the local file system.
pub struct LocalDir {
    pub dir: PathBuf,
}

impl LocalDir {
    pub fn new(dir: impl Into<PathBuf>) -> LocalDir {
        LocalDir { dir: dir.into() }
    }

    fn path(&self, name: &str) -> std::io::Result<PathBuf> {
        if !plain_name(name) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a plain file name: {name}"),
            ));
        }
        Ok(self.dir.join(name))
    }

    /// The path of a regular file of the directory: a name that is a link to a device or a
    /// pipe (`/dev/zero`, which never ends) is no report or evidence file.
    fn regular(&self, name: &str) -> std::io::Result<PathBuf> {
        let p = self.path(name)?;
        if !std::fs::metadata(&p)?.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a regular file: {name}")));
        }
        Ok(p)
    }
}

impl ReportStore for LocalDir {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.regular(name)?)
    }

    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + '_>> {
        Ok(Box::new(BufReader::new(std::fs::File::open(self.regular(name)?)?)))
    }
}

/// A file name without directory parts (names inside reports are never trusted as paths).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Opens a report location: a directory, or `s3://bucket/prefix` (client settings from the
/// config's `reports.s3` connection when a config is given, else from the AWS environment).
pub fn open(location: &Path, config: Option<&crate::config::Config>) -> anyhow::Result<Box<dyn ReportStore>> {
    let text = location.to_string_lossy();
    if text.starts_with("s3://") {
        let st = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(super::sink::S3Reports::from_location(&text, config))
        })?;
        return Ok(Box::new(st));
    }
    if !location.is_dir() {
        anyhow::bail!("'{}' is not a directory", location.display());
    }
    Ok(Box::new(LocalDir::new(location)))
}

/// The kind of a report-directory file, from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// `lapse-<mode>-<time>-<run>.json`
    Report,
    /// `<report>.json.sig`
    Signature {
        report: String,
    },
    /// `<stem>.evidence.jsonl`
    Evidence {
        report: String,
    },
    /// `<stem>.csv`
    Csv {
        report: String,
    },
    Other,
}

impl FileKind {
    /// The report a companion file (signature, evidence, CSV) belongs to.
    pub fn report(&self) -> Option<&str> {
        match self {
            FileKind::Signature { report } | FileKind::Evidence { report } | FileKind::Csv { report } => Some(report),
            FileKind::Report | FileKind::Other => None,
        }
    }
}

pub fn kind(name: &str) -> FileKind {
    if name.starts_with('.') || !name.starts_with("lapse-") {
        return FileKind::Other;
    }
    if let Some(r) = name.strip_suffix(".sig") {
        if r.ends_with(".json") {
            return FileKind::Signature { report: r.to_string() };
        }
    }
    if let Some(stem) = name.strip_suffix(".evidence.jsonl") {
        return FileKind::Evidence { report: format!("{stem}.json") };
    }
    if let Some(stem) = name.strip_suffix(".csv") {
        return FileKind::Csv { report: format!("{stem}.json") };
    }
    if name.ends_with(".json") {
        return FileKind::Report;
    }
    FileKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds() {
        assert_eq!(kind("lapse-run-20260101T000000Z-abcd1234.json"), FileKind::Report);
        assert_eq!(
            kind("lapse-run-20260101T000000Z-abcd1234.json.sig"),
            FileKind::Signature { report: "lapse-run-20260101T000000Z-abcd1234.json".into() }
        );
        assert_eq!(
            kind("lapse-run-20260101T000000Z-abcd1234.evidence.jsonl"),
            FileKind::Evidence { report: "lapse-run-20260101T000000Z-abcd1234.json".into() }
        );
        assert_eq!(kind(".lapse-run-x.json.tmp"), FileKind::Other);
        assert_eq!(kind("notes.json"), FileKind::Other);
        assert!(!plain_name("../etc/passwd"));
        assert!(plain_name("lapse-run-x.evidence.jsonl"));
    }

    /// An evidence file linked to `/dev/zero` made `verify` and `lookup` read forever.
    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("lapse-run-x.evidence.jsonl")).unwrap();
        std::fs::write(dir.path().join("lapse-run-y.json"), "{}").unwrap();
        let st = LocalDir::new(dir.path());
        assert_eq!(
            st.open("lapse-run-x.evidence.jsonl").err().map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput)
        );
        assert!(st.read("lapse-run-x.evidence.jsonl").is_err());
        assert_eq!(st.read("lapse-run-y.json").unwrap(), b"{}");
    }
}
