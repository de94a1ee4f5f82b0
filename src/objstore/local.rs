//! A local directory as an object store: files under a root (a mounted volume), keys are their
//! `/`-separated relative paths, the anchor is the modification time. No versions, no locks.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ObjectBackend, ObjectEntry, Version};
use crate::connector::ConnectorError;

pub struct DirBackend {
    root: PathBuf,
    /// Entries whose names are not UTF-8 met by listings (`walk`): no key can name them, so
    /// they are never objects. Each one once (a listing's pages walk a directory again), at
    /// most [`MAX_UNNAMED`]; the count pass takes them (`take_unnamed`).
    unnamed: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Distinct unnamed entries remembered, at most.
pub const MAX_UNNAMED: usize = 100_000;

impl DirBackend {
    pub fn new(root: PathBuf) -> Self {
        DirBackend { root, unnamed: Arc::default() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, ConnectorError> {
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
            return Err(ConnectorError::Invalid("object key outside the directory".into()));
        }
        self.no_link_on_the_way(key)?;
        Ok(self.root.join(key))
    }

    /// A path under the root reached through a symbolic link may lead outside it (the walk
    /// never follows one; a prefix or key naming one must not either).
    fn no_link_on_the_way(&self, rel: &str) -> Result<(), ConnectorError> {
        let mut p = self.root.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(ConnectorError::Invalid(
                        "the path passes through a symbolic link, which may lead outside the directory".into(),
                    ))
                }
                Ok(_) => {}
                Err(_) => break, // nothing there (yet): nothing to follow
            }
        }
        Ok(())
    }
}

impl fmt::Display for DirBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Directory({})", self.root.display())
    }
}

/// Key order of this store: component by component, so that a sorted depth-first walk yields
/// keys in order.
fn cmp_keys(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

fn io_err(context: &str) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
    move |e| ConnectorError::Query { context: context.to_string(), message: format!("{:?}", e.kind()) }
}

fn entry(key: String, md: &std::fs::Metadata) -> ObjectEntry {
    ObjectEntry { key, last_modified: md.modified().ok().map(DateTime::<Utc>::from), size: md.len(), version: None }
}

/// Notes a file or directory the walk cannot read (counted as unreadable, never destroyed).
fn note_unreadable(unnamed: &Mutex<HashSet<PathBuf>>, path: &Path) {
    let mut seen = unnamed.lock().expect("unnamed");
    if seen.len() < MAX_UNNAMED {
        seen.insert(path.to_path_buf());
    }
}

/// Depth-first, sorted walk collecting up to `max` files after `after`. Returns true if it stopped
/// early (more may follow).
fn walk(
    dir: &Path,
    rel: &str,
    first: Option<&str>,
    after: Option<&str>,
    max: usize,
    out: &mut Vec<ObjectEntry>,
    unnamed: &Mutex<HashSet<PathBuf>>,
) -> std::io::Result<bool> {
    let mut names: Vec<(String, std::fs::FileType)> = Vec::new();
    // Below the root, a directory that vanished while the walk went on holds nothing now, and
    // one this process may not read (a root-owned `lost+found` at a volume's root) is noted
    // like a name that is not UTF-8 (counted as unreadable, nothing in it destroyed): neither
    // stops the listing of the rest. The root itself unreadable stops it.
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if !rel.is_empty() && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        // Any other failure below the root (no permission, a path longer than the system
        // takes, an I/O error of one directory): that subtree is unreadable; before, a path
        // over PATH_MAX stopped the dataset's listing on every run (found by a review).
        Err(_) if !rel.is_empty() => {
            note_unreadable(unnamed, dir);
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ft = match e.file_type() {
            Ok(ft) => ft,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let name = match e.file_name().into_string() {
            Ok(name) => name,
            // Not UTF-8: no key names it (nor, for a directory, anything in it). Noted when
            // inside the listed prefix (the valid start of a name says that exactly).
            Err(raw) => {
                let listed = ft.is_file() || ft.is_dir();
                if listed && first.is_none_or(|p| raw.as_encoded_bytes().starts_with(p.as_bytes())) {
                    note_unreadable(unnamed, &e.path());
                }
                continue;
            }
        };
        if rel.is_empty() && name.starts_with(LOCK_PREFIX) {
            continue; // run lock files (`try_lock`), never objects
        }
        names.push((name, ft));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ft) in names {
        if first.is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        let key = format!("{rel}{name}");
        if ft.is_dir() {
            if let Some(a) = after {
                // Skip a whole directory that sorts before the cursor.
                let inside = a.starts_with(&format!("{key}/"));
                if !inside && cmp_keys(&key, a) == Ordering::Less {
                    continue;
                }
            }
            if walk(&dir.join(&name), &format!("{key}/"), None, after, max, out, unnamed)? {
                return Ok(true);
            }
        } else if ft.is_file() {
            if after.is_some_and(|a| cmp_keys(&key, a) != Ordering::Greater) {
                continue;
            }
            let md = match std::fs::metadata(dir.join(&name)) {
                Ok(md) => md,
                // Removed since the directory was read: not there to destroy.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => {
                    note_unreadable(unnamed, &dir.join(&name));
                    continue;
                }
            };
            out.push(entry(key, &md));
            if out.len() >= max {
                return Ok(true);
            }
        } else {
            // A symbolic link (never followed: it may lead outside the directory), a FIFO, a
            // socket, a device: no object lapse destroys, but noted, as a name that is not
            // UTF-8 is (its name may be personal data; before, it was left without a word;
            // found by a review).
            if after.is_none_or(|a| cmp_keys(&key, a) == Ordering::Greater) {
                note_unreadable(unnamed, &dir.join(&name));
            }
        }
    }
    Ok(false)
}

/// Run lock files at the root of the directory store.
const LOCK_PREFIX: &str = ".lapse-lock-";

#[async_trait]
impl ObjectBackend for DirBackend {
    fn take_unnamed(&self) -> u64 {
        std::mem::take(&mut *self.unnamed.lock().expect("unnamed")).len() as u64
    }

    async fn try_lock(&self, _bucket: &str, name: &str) -> Result<super::RunLock, ConnectorError> {
        use sha2::Digest;
        let err = |e: std::io::Error| ConnectorError::Query {
            context: "taking the run lock".into(),
            message: format!("lock file: {}", e.kind()),
        };
        let path = self.root.join(format!("{LOCK_PREFIX}{}", &hex::encode(sha2::Sha256::digest(name))[..16]));
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(err)?;
        match f.try_lock() {
            Ok(()) => Ok(super::RunLock::Held(Box::new(f), None)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(super::RunLock::Busy),
            Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
        }
    }

    async fn check(&self, _bucket: &str) -> Result<(), ConnectorError> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(ConnectorError::NotFound { what: format!("directory '{}'", self.root.display()) }),
        }
    }

    async fn list(
        &self,
        _bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), ConnectorError> {
        let (dir_part, first) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if prefix.starts_with('/') || dir_part.split('/').any(|c| c == ".." || c == ".") {
            return Err(ConnectorError::Invalid(format!("prefix '{prefix}' leaves the directory")));
        }
        self.no_link_on_the_way(dir_part)?;
        let dir = self.root.join(dir_part);
        if !dir.is_dir() {
            return Ok((vec![], false));
        }
        let (root, unnamed) = (self.root.clone(), self.unnamed.clone());
        let (rel, first, after) = (dir_part.to_string(), first.to_string(), after.map(str::to_string));
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let first = (!first.is_empty()).then_some(first.as_str());
            let more = walk(&root.join(&rel), &rel, first, after.as_deref(), max, &mut out, &unnamed)
                .map_err(io_err("listing the directory"))?;
            Ok((out, more))
        })
        .await
        .map_err(|e| ConnectorError::Invalid(e.to_string()))?
    }

    async fn head(
        &self,
        _bucket: &str,
        key: &str,
        _version: Option<&str>,
    ) -> Result<Option<(ObjectEntry, HashMap<String, String>)>, ConnectorError> {
        match std::fs::metadata(self.path(key)?) {
            Ok(md) if md.is_file() => Ok(Some((entry(key.to_string(), &md), HashMap::new()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading a file's metadata")(e)),
        }
    }

    async fn tags(
        &self,
        _bucket: &str,
        _key: &str,
        _version: Option<&str>,
    ) -> Result<HashMap<String, String>, ConnectorError> {
        Err(ConnectorError::Invalid("files in a directory have no tags; use last_modified or key_date".into()))
    }

    async fn versions(&self, bucket: &str, key: &str) -> Result<Vec<Version>, ConnectorError> {
        let head = self.head(bucket, key, None).await?;
        Ok(head
            .map(|(e, _)| Version {
                id: None,
                size: e.size,
                delete_marker: false,
                lock: None,
                last_modified: e.last_modified,
                latest: true,
            })
            .into_iter()
            .collect())
    }

    async fn delete(
        &self,
        bucket: &str,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        self.delete_within(bucket, "", items).await
    }

    /// Each file, then the directories its removal emptied (their names can hold personal
    /// data too), up to `keep` (the dataset's deepest literal directory, which is not the
    /// dataset's to remove, nor are those above it). A key that names no file under the root
    /// fails alone: the files before it in the call are removed and reported so.
    async fn delete_within(
        &self,
        _bucket: &str,
        keep: &str,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        let keep = self.root.join(keep.trim_end_matches('/'));
        // Each key's path (checked: under the root, no link on the way) and what is there, read
        // once. How many of this call's names each file has: a file all of whose names are here
        // is removed whole (before, two names of one file in the dataset were refused for good).
        use std::os::unix::fs::MetadataExt as _;
        let found: Vec<(Result<PathBuf, ConnectorError>, Option<std::fs::Metadata>)> = items
            .iter()
            .map(|(key, _)| {
                let path = self.path(key);
                let md = path.as_ref().ok().and_then(|p| std::fs::symlink_metadata(p).ok());
                (path, md)
            })
            .collect();
        let mut names: std::collections::HashMap<(u64, u64), u64> = std::collections::HashMap::new();
        for md in found.iter().filter_map(|(_, md)| md.as_ref()) {
            *names.entry((md.dev(), md.ino())).or_default() += 1;
        }
        let mut out = Vec::with_capacity(items.len());
        for (path, md) in found {
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    out.push(Err(format!("Refused: {e}")));
                    continue;
                }
            };
            // A file with other hard links: removing this name would leave its content under
            // the others, and the report would say it was destroyed (found by a review).
            // Refused, removing nothing.
            if let Some(md) = md.filter(|md| md.is_file()) {
                let here = names.get(&(md.dev(), md.ino())).copied().unwrap_or(1);
                if md.nlink() > here {
                    out.push(Err(format!(
                        "Refused: the file has {} other hard link(s) outside this deletion: removing this name would not destroy its content",
                        md.nlink() - here
                    )));
                    continue;
                }
            }
            // An unlink the file system refused removed nothing: a refusal, so the object's
            // write-ahead intent is voided, not left to be claimed once someone else deletes it.
            // Any other error (`EIO`, `ETIMEDOUT`, `ESTALE` on NFS or FUSE) may follow an unlink
            // the server performed: its outcome is unknown, and the intent stays open.
            let r = match std::fs::remove_file(&path) {
                Ok(()) => {
                    let mut p = path.parent();
                    while let Some(dir) = p {
                        if !dir.starts_with(&keep) || dir == keep || std::fs::remove_dir(dir).is_err() {
                            break;
                        }
                        p = dir.parent();
                    }
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(unlink_error(&e)),
            };
            out.push(r);
        }
        Ok(out)
    }
}

/// Errors of an unlink that say the file system removed nothing: a refusal (`Refused`, which
/// `objstore::is_refusal` knows). The key is checked before (`path`): one that leaves the root
/// or passes a symlink is refused as well.
const REFUSED: [std::io::ErrorKind; 5] = [
    std::io::ErrorKind::PermissionDenied,
    std::io::ErrorKind::ReadOnlyFilesystem,
    std::io::ErrorKind::IsADirectory,
    std::io::ErrorKind::NotADirectory,
    std::io::ErrorKind::ResourceBusy,
];

/// The per-key error of a failed unlink: `Refused: …` where the file system removed nothing
/// (`REFUSED`), the error's kind otherwise (its outcome unknown). With the system's message,
/// which names no path.
fn unlink_error(e: &std::io::Error) -> String {
    let refused = if REFUSED.contains(&e.kind()) { "Refused: " } else { "" };
    format!("{refused}{:?}: {e}", e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a read-only review: a directory removed while the walk went on (another
    /// process's temporary files), or one this process may not read (a root-owned `lost+found`
    /// at a volume's root, lapse running as uid 65532), failed the whole listing, and the
    /// policy destroyed nothing, every run. Now the rest is listed; the unreadable one is noted.
    #[test]
    fn a_walk_goes_on_past_vanished_and_unreadable_directories() {
        let root = tempfile::tempdir().unwrap();
        let unnamed = Mutex::new(HashSet::new());
        let mut out = Vec::new();
        // Listed by its parent, gone before the walk reached it.
        let more = walk(&root.path().join("gone"), "gone/", None, None, 10, &mut out, &unnamed).unwrap();
        assert!(!more && out.is_empty());
        // The root itself missing is still an error.
        assert!(walk(&root.path().join("gone"), "", None, None, 10, &mut out, &unnamed).is_err());

        std::fs::create_dir_all(root.path().join("a")).unwrap();
        std::fs::write(root.path().join("a/x.pdf"), "x").unwrap();
        std::fs::create_dir_all(root.path().join("lost+found")).unwrap();
        std::fs::write(root.path().join("z.pdf"), "z").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path().join("lost+found"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let denied = std::fs::read_dir(root.path().join("lost+found")).is_err();
        let mut out = Vec::new();
        let r = walk(root.path(), "", None, None, 10, &mut out, &unnamed);
        std::fs::set_permissions(root.path().join("lost+found"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let keys: Vec<&str> = out.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a/x.pdf", "z.pdf"], "{r:?}");
        // (As root every directory is readable: the refusal only happens without privileges.)
        assert_eq!(unnamed.lock().unwrap().len(), usize::from(denied));
    }

    /// Permission, a read-only file system, a directory, a busy mount point: refusals. An I/O
    /// error, a timeout or a stale handle (NFS, FUSE), which may follow an unlink the server
    /// performed: unknown, and the system's message is kept.
    #[test]
    fn only_unlinks_that_removed_nothing_are_refusals() {
        use std::io::Error;
        // Linux's errno values: EPERM, EACCES, EROFS, EISDIR, ENOTDIR, EBUSY.
        for errno in [1, 13, 30, 21, 20, 16] {
            let code = unlink_error(&Error::from_raw_os_error(errno));
            assert!(crate::objstore::is_refusal(&code), "errno {errno}: {code}");
        }
        // EIO, ETIMEDOUT, ESTALE, EINTR, ENOSPC.
        for errno in [5, 110, 116, 4, 28] {
            let code = unlink_error(&Error::from_raw_os_error(errno));
            assert!(!crate::objstore::is_refusal(&code), "errno {errno}: {code}");
            assert!(code.contains(&format!("os error {errno}")), "{code}");
        }
    }

    /// A key that names no file under the root fails alone; the files before and after it in
    /// the call are removed and reported removed (before, the whole call failed after the
    /// first file was already gone).
    #[tokio::test]
    async fn a_bad_key_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        for k in ["a.csv", "b.csv"] {
            std::fs::write(dir.path().join(k), k).unwrap();
        }
        let b = DirBackend::new(dir.path().to_path_buf());
        let items: Vec<(String, Option<String>)> =
            ["a.csv", "../outside.csv", "b.csv"].iter().map(|k| (k.to_string(), None)).collect();
        let r = b.delete("", &items).await.unwrap();
        assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok(), "{r:?}");
        assert!(!dir.path().join("a.csv").exists() && !dir.path().join("b.csv").exists());
    }

    /// The directory store's refusals (`IsADirectory`, a key leaving the root) are said as
    /// refusals: the unlink removed nothing, so the key's write-ahead intent is voided. Before,
    /// such an error left the intent open, and a later run claimed the object as destroyed by
    /// this run once someone else removed it. Other errors (`EIO` on NFS) stay unknown.
    #[tokio::test]
    async fn its_delete_errors_are_refusals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x.csv")).unwrap();
        let b = DirBackend::new(dir.path().to_path_buf());
        let items: Vec<(String, Option<String>)> =
            ["x.csv", "../outside.csv"].iter().map(|k| (k.to_string(), None)).collect();
        let r = b.delete("", &items).await.unwrap();
        for e in &r {
            let code = e.as_ref().expect_err("both fail");
            assert!(crate::objstore::is_refusal(code), "{code}");
        }
        assert!(dir.path().join("x.csv").is_dir());
    }

    /// Emptied directories are removed up to the dataset's deepest literal directory, which is
    /// kept with those above it.
    #[tokio::test]
    async fn emptied_directories_go_up_to_the_datasets_own() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("app/uploads/2019");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("S-1.pdf"), "x").unwrap();
        let b = DirBackend::new(dir.path().to_path_buf());
        let r = b.delete_within("", "app/uploads/", &[("app/uploads/2019/S-1.pdf".into(), None)]).await.unwrap();
        assert!(r[0].is_ok());
        assert!(!d.exists(), "the emptied year directory goes");
        assert!(dir.path().join("app/uploads").is_dir(), "the dataset's directory stays");
    }

    /// Names that are not UTF-8 are noted once each however many pages walk their directory,
    /// only within the listed prefix (its last, partial segment included), only files and
    /// directories; `take_unnamed` forgets them.
    #[tokio::test]
    async fn unnamed_entries_are_noted_once_within_the_prefix() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("logs");
        std::fs::create_dir_all(&d).unwrap();
        for k in ["app-1.log", "app-2.log", "app-3.log", "other.log"] {
            std::fs::write(d.join(k), k).unwrap();
        }
        std::fs::write(d.join(OsStr::from_bytes(b"app-\xff.log")), "x").unwrap();
        std::fs::create_dir_all(d.join(OsStr::from_bytes(b"app-\xfe"))).unwrap();
        std::fs::write(d.join(OsStr::from_bytes(b"other-\xff.log")), "outside the prefix").unwrap();
        std::os::unix::fs::symlink("app-1.log", d.join(OsStr::from_bytes(b"app-\xfd.log"))).unwrap();
        let b = DirBackend::new(dir.path().to_path_buf());
        let mut after: Option<String> = None;
        let mut keys = Vec::new();
        loop {
            let (page, more) = b.list("", "logs/app-", after.as_deref(), 1).await.unwrap();
            keys.extend(page.iter().map(|e| e.key.clone()));
            after = page.last().map(|e| e.key.clone());
            if !more {
                break;
            }
        }
        assert_eq!(keys, ["logs/app-1.log", "logs/app-2.log", "logs/app-3.log"]);
        assert_eq!(b.take_unnamed(), 2, "the file and the directory, once each over three pages");
        assert_eq!(b.take_unnamed(), 0, "forgotten once taken");
        b.list("", "logs/app-", None, 100).await.unwrap();
        assert_eq!(b.take_unnamed(), 2, "noted again by a later listing");
    }

    #[tokio::test]
    async fn lists_in_key_order_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        for k in ["a/1.txt", "a/2.txt", "a-b.txt", "b/c/d.txt", "b/e.txt", "z.txt"] {
            let p = dir.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, k).unwrap();
        }
        let b = DirBackend::new(dir.path().to_path_buf());
        let (all, more) = b.list("", "", None, 100).await.unwrap();
        let keys: Vec<&str> = all.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a/1.txt", "a/2.txt", "a-b.txt", "b/c/d.txt", "b/e.txt", "z.txt"]);
        assert!(!more);
        let (page, more) = b.list("", "", Some("a-b.txt"), 2).await.unwrap();
        assert_eq!(page.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["b/c/d.txt", "b/e.txt"]);
        assert!(more);
        let (page, _) = b.list("", "b/", None, 10).await.unwrap();
        assert_eq!(page.len(), 2);
        assert!(b.path("../etc/passwd").is_err());
    }

    /// A prefix or key through a symbolic link is refused: the link may lead outside the root
    /// (before, `files/exports -> /elsewhere` made lapse delete files there, and their emptied
    /// directories).
    #[tokio::test]
    async fn no_path_through_a_symbolic_link() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("2020")).unwrap();
        std::fs::write(outside.path().join("2020/victim.csv"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("exports")).unwrap();
        let b = DirBackend::new(root.path().to_path_buf());
        assert!(b.list("", "exports/", None, 10).await.is_err());
        assert!(b.list("", "exports/2020/", None, 10).await.is_err());
        assert!(b.list("", "../", None, 10).await.is_err());
        assert!(b.delete("", &[("exports/2020/victim.csv".into(), None)]).await.unwrap()[0].is_err());
        assert!(b.head("", "exports/2020/victim.csv", None).await.is_err());
        assert!(outside.path().join("2020/victim.csv").exists());
        // The walk from the root skips the link.
        let (all, _) = b.list("", "", None, 10).await.unwrap();
        assert!(all.is_empty());
    }
}
