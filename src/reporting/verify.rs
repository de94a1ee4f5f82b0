//! `lapse report verify`: checks reports with the public key alone.
//!
//! For every report (`lapse-<mode>-<time>-<run>.json`): its Ed25519 signature (`<report>.sig`,
//! over the file's exact bytes) and, for run reports, its evidence file (SHA-256 and number of
//! records against the report's `evidence` field). Across the run reports of a directory: the
//! chain — sequences 1..n, each without gap or duplicate, each `previous` link naming the file of
//! the preceding sequence with the SHA-256 of its bytes, start times in sequence order, file names
//! matching their content. Every problem names the file it is about.
//!
//! Limits: removing the newest report (with its signature) leaves no trace in the directory:
//! verify prints the newest report's name and SHA-256 for the reader to keep, and
//! `--known NAME:SHA256` checks later that a report one kept is still there, unchanged (a
//! report bucket's claims do this by themselves). File modification times are
//! not used (copies and archives change them); the times inside the signed reports are.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::printable;
use super::store::{self, FileKind, LocalDir, ReportStore};
use crate::integrity::{self, ChainLink};
use crate::report::{EvidenceFile, Report};

/// What is wrong. Serialized in kebab-case (`--json`); printed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// The file cannot be read, or is not a report.
    Unreadable,
    /// The file's bytes differ from what was signed or chained.
    Altered,
    /// No signature file next to the report.
    SignatureMissing,
    /// The signature does not verify, and the bytes are otherwise vouched for (or it is malformed,
    /// or made with another key).
    SignatureInvalid,
    /// The signature file is the signature of another report.
    SignatureSwapped,
    EvidenceMissing,
    EvidenceAltered,
    /// A report of the chain is missing.
    Missing,
    /// Two reports claim the same place in the chain.
    Fork,
    /// Files renamed or swapped, or sequence order contradicting time order.
    OutOfOrder,
    /// A chain link that does not fit (absent, wrong sequence, pointing nowhere).
    BrokenLink,
    /// A run the journal records committing batches that no report here accounts for
    /// (`--journal`).
    UnaccountedRun,
}

impl Problem {
    pub fn label(self) -> &'static str {
        match self {
            Problem::Unreadable => "unreadable",
            Problem::Altered => "altered",
            Problem::SignatureMissing => "signature-missing",
            Problem::SignatureInvalid => "signature-invalid",
            Problem::SignatureSwapped => "signature-swapped",
            Problem::EvidenceMissing => "evidence-missing",
            Problem::EvidenceAltered => "evidence-altered",
            Problem::Missing => "missing",
            Problem::Fork => "fork",
            Problem::OutOfOrder => "out-of-order",
            Problem::BrokenLink => "broken-link",
            Problem::UnaccountedRun => "unaccounted-run",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub problem: Problem,
    /// The file the problem is about (a report, a signature or evidence file, or the name of a
    /// missing report).
    pub file: String,
    pub message: String,
}

/// One report as checked.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub file: String,
    pub mode: Option<String>,
    pub run_id: Option<String>,
    pub sequence: Option<u64>,
    pub sha256: String,
    /// `valid`, `missing` or `invalid`.
    pub signature: &'static str,
    /// `ok`, `missing`, `altered`; absent for reports without evidence (plans).
    pub evidence: Option<&'static str>,
    pub evidence_records: Option<u64>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainSummary {
    pub run_reports: usize,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The report with the highest sequence.
    pub newest: String,
    /// SHA-256 (hex) of its bytes: with its name, what to keep for `--known`.
    pub newest_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub location: String,
    /// Identifies the public keys used (comma-separated when several were given).
    pub key_id: String,
    pub reports: Vec<Checked>,
    /// Absent when a single file was checked or the directory has no run report.
    pub chain: Option<ChainSummary>,
    pub findings: Vec<Finding>,
    /// Remarks that are not failures (orphan files, limits of what was checked).
    pub notes: Vec<String>,
    pub ok: bool,
}

/// The fields of a report that verification needs; tolerant of other fields and versions.
#[derive(Debug, Deserialize)]
struct Head {
    mode: String,
    run_id: String,
    started_at: DateTime<Utc>,
    /// Sealed under the directory's chain lock, in sequence order (runs of other policies may
    /// overlap: one that started earlier can end later).
    #[serde(default)]
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    sequence: u64,
    #[serde(default)]
    previous: Option<ChainLink>,
    #[serde(default)]
    signing_key_id: Option<String>,
    /// The report's own word that the report it follows carries no signature by its key.
    #[serde(default)]
    previous_unverified: Option<String>,
    #[serde(default)]
    evidence: Option<EvidenceFile>,
    /// Evidence files of runs that ended without their report, accounted for by this one.
    #[serde(default)]
    interrupted_runs: Vec<Accounted>,
    /// The report's own word that its evidence writer failed (`Report::evidence_incomplete`).
    #[serde(default)]
    evidence_incomplete: bool,
    /// The shard of a sharded run the report is.
    #[serde(default)]
    shard: Option<crate::report::ShardInfo>,
}

#[derive(Debug, Deserialize)]
struct Accounted {
    /// The report its run did not write.
    #[serde(default)]
    report: Option<String>,
    evidence: EvidenceFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Valid,
    Missing,
    Invalid,
}

struct Entry {
    name: String,
    bytes: Vec<u8>,
    sha: String,
    head: Option<Head>,
    sig: Sig,
    sig_text: Option<String>,
}

impl Entry {
    fn seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.sequence)
    }
}

/// Verifies a report file, or every report of a directory.
/// `keys`: the public keys reports may be signed with (after a key rotation, the old and the new);
/// each report is checked with the one its `signing_key_id` names.
/// `first`: the sequence the chain is expected to start at (1, or after the oldest reports were
/// deleted on purpose, the oldest one kept).
pub fn verify_path(
    path: &Path,
    keys: &[VerifyingKey],
    first: u64,
    known: &[Known],
    config: Option<&crate::config::Config>,
) -> anyhow::Result<Outcome> {
    if path.is_dir() || path.to_string_lossy().starts_with("s3://") {
        let st = store::open(path, config)?;
        let names = st.list()?;
        if !names.iter().any(|n| matches!(store::kind(n), FileKind::Report | FileKind::Signature { .. })) {
            anyhow::bail!("no report (lapse-<mode>-<time>-<run>.json) in '{}'", st.location());
        }
        Ok(verify(st.as_ref(), None, keys, first, known))
    } else if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow::anyhow!("'{}' is not a file", path.display()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => ".".into(),
        };
        if !known.is_empty() {
            anyhow::bail!("--known checks a directory's chain: give the directory, not one report");
        }
        Ok(verify(&LocalDir::new(dir), Some(&name), keys, first, known))
    } else {
        anyhow::bail!("'{}' does not exist", path.display())
    }
}

/// A run report the reader knows of (`--known NAME:SHA256`, as an earlier verify printed it):
/// it must still be in the chain, with these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub name: String,
    pub sha256: String,
}

impl std::str::FromStr for Known {
    type Err = String;
    fn from_str(s: &str) -> Result<Known, String> {
        let (name, sha) = s.rsplit_once(':').ok_or("expected NAME:SHA256 (as `report verify` prints them)")?;
        let sha = sha.trim().to_ascii_lowercase();
        if store::kind(name) != FileKind::Report || !name.starts_with("lapse-run-") {
            return Err(format!("'{name}' is not a run report's file name (lapse-run-<time>-<run>.json)"));
        }
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the SHA-256 must be 64 hex digits".into());
        }
        Ok(Known { name: name.to_string(), sha256: sha })
    }
}

/// The start a run's file name carries (`lapse-run-20261207T120000Z-…`: `20261207T120000Z`),
/// which sorts as time.
fn run_stamp(name: &str) -> Option<String> {
    let rest = name.strip_prefix("lapse-")?;
    let (_, rest) = rest.split_once('-')?;
    let stamp = rest.get(..16)?;
    (stamp.len() == 16 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z')).then(|| stamp.to_string())
}

/// Verifies the reports of a store (`only`: one report, its link to the previous one included).
pub fn verify(st: &dyn ReportStore, only: Option<&str>, keys: &[VerifyingKey], first: u64, known: &[Known]) -> Outcome {
    let mut v = Verifier {
        st,
        keys,
        findings: Vec::new(),
        notes: Vec::new(),
        claims_checked: false,
        never_written: BTreeSet::new(),
    };
    let key_id = keys.iter().map(integrity::key_id).collect::<Vec<_>>().join(", ");
    let names = match st.list() {
        Ok(n) => n,
        Err(e) => {
            v.find(Problem::Unreadable, &st.location(), format!("cannot list: {e}"));
            return v.finish(key_id, Vec::new(), None);
        }
    };
    let report_names: Vec<String> = match only {
        Some(n) => vec![n.to_string()],
        None => names.iter().filter(|n| store::kind(n) == FileKind::Report).cloned().collect(),
    };
    let mut entries = Vec::new();
    for name in &report_names {
        if let Some(e) = v.read_entry(name) {
            entries.push(e);
        }
    }
    v.resolve_signatures(&entries);
    let mut evidence_state = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    for e in &entries {
        if let Some(ev) = e.head.as_ref().and_then(|h| h.evidence.as_ref()) {
            claimed.insert(ev.file.clone());
            evidence_state.insert(e.name.clone(), v.check_evidence(&e.name, ev));
        }
        // Not a finding (the file is as the report binds it), but what it lacks is said: a
        // lookup of those records finds nothing until the next run of the policy writes their
        // lines from the journal (found by a review).
        if e.head.as_ref().is_some_and(|h| h.evidence_incomplete) {
            v.notes.push(format!(
                "{} says its evidence file was cut short by a write error: batches committed after its last line are in the journal only, until the next run of its policies writes their lines (evidence_recovered)",
                e.name
            ));
        }
        // An interrupted run's evidence, bound by the report that accounted for it.
        for a in e.head.iter().flat_map(|h| &h.interrupted_runs) {
            claimed.insert(a.evidence.file.clone());
            v.check_evidence(&e.name, &a.evidence);
        }
    }
    let mut chain = None;
    let mut renamed = BTreeSet::new();
    match only {
        None => {
            for e in &entries {
                if let Some(h) = &e.head {
                    let expected = expected_name(h);
                    if e.name != expected {
                        renamed.insert(e.name.clone());
                        v.find(
                            Problem::OutOfOrder,
                            &e.name,
                            format!(
                                "holds the {} report of run {} (sequence {}, started {}), which was written as {expected}: files renamed or swapped",
                                h.mode, short(&h.run_id), h.sequence, h.started_at.to_rfc3339()
                            ),
                        );
                    }
                }
            }
            v.check_hidden(&entries, first);
            v.check_shard_dir(&entries);
            chain = v.check_chain(&entries, &renamed, first);
            v.check_leftovers(&names, &entries, &claimed);
            v.check_claims(&entries, first);
            v.check_known(&entries, known);
            v.check_csv(&entries);
        }
        Some(name) => v.check_single_link(&entries, name),
    }
    let checked: Vec<Checked> = entries
        .iter()
        .map(|e| {
            let (evidence, records) = match evidence_state.get(&e.name) {
                Some((s, n)) => (Some(*s), Some(*n)),
                None => (None, None),
            };
            Checked {
                file: e.name.clone(),
                mode: e.head.as_ref().map(|h| h.mode.clone()),
                run_id: e.head.as_ref().map(|h| h.run_id.clone()),
                sequence: e.head.as_ref().map(|h| h.sequence),
                sha256: e.sha.clone(),
                signature: match e.sig {
                    Sig::Valid => "valid",
                    Sig::Missing => "missing",
                    Sig::Invalid => "invalid",
                },
                evidence,
                evidence_records: records,
                ok: true,
            }
        })
        .collect();
    let mut checked: Vec<Checked> = checked;
    checked.sort_by_key(|c| (c.mode.as_deref() != Some("run"), c.sequence.unwrap_or(0), c.file.clone()));
    let mut out = v.finish(key_id, checked, chain);
    if let Some(n) = only {
        out.location = format!("{}/{n}", out.location);
    }
    out
}

/// How long a claim newer than every stored report may wait for its report before `verify` calls
/// the report missing: a run stores its report last, after its evidence (minutes, for gigabytes
/// of it). An upload that failed is retried by the next run; until then the bucket lacks a
/// report, and `verify` says so.
const PENDING_HOURS: i64 = 1;

struct Verifier<'a> {
    st: &'a dyn ReportStore,
    keys: &'a [VerifyingKey],
    findings: Vec<Finding>,
    notes: Vec<String>,
    /// The bucket's claims were checked: they show a removed newest report.
    claims_checked: bool,
    /// Reports of the chain never written (a killed run's claimed sequence), as their
    /// successors account for them.
    never_written: BTreeSet<String>,
}

impl Verifier<'_> {
    /// The signature verifies over the bytes with the key the report names, or (a report that
    /// names none) with any given key.
    fn signed(&self, bytes: &[u8], sig: &str, signed_by: Option<&str>) -> bool {
        self.keys
            .iter()
            .filter(|k| signed_by.is_none_or(|id| integrity::key_id(k) == id))
            .any(|k| integrity::check_signature(k, bytes, sig))
    }

    fn find(&mut self, problem: Problem, file: &str, message: String) {
        self.findings.push(Finding { problem, file: file.to_string(), message });
    }

    fn finish(mut self, key_id: String, mut reports: Vec<Checked>, chain: Option<ChainSummary>) -> Outcome {
        for r in &mut reports {
            r.ok = r.signature == "valid"
                && r.evidence.is_none_or(|e| e == "ok")
                && !self.findings.iter().any(|f| f.file == r.file);
        }
        if let Some(c) = &chain {
            if self.findings.is_empty() && self.claims_checked {
                self.notes.push(format!(
                    "the newest run report is sequence {} ({}); the bucket's claims would show it removed (and --known {}:{} checks that it is still here)",
                    c.last_sequence, c.newest, c.newest, c.newest_sha256
                ));
            } else if self.findings.is_empty() {
                self.notes.push(format!(
                    "the newest run report is sequence {} ({}); a removed newest report leaves no trace here: keep this line, and check later that it is still here with --known {}:{}",
                    c.last_sequence, c.newest, c.newest, c.newest_sha256
                ));
            }
        }
        Outcome {
            location: self.st.location(),
            key_id,
            ok: self.findings.is_empty(),
            reports,
            chain,
            findings: self.findings,
            notes: self.notes,
        }
    }

    fn read_entry(&mut self, name: &str) -> Option<Entry> {
        let bytes = match self.st.read(name) {
            Ok(b) => b,
            Err(e) => {
                self.find(Problem::Unreadable, name, format!("cannot read: {e}"));
                return None;
            }
        };
        let sha = integrity::sha256_hex(&bytes);
        let head = match serde_json::from_slice::<Head>(&bytes) {
            Ok(h) => Some(h),
            Err(e) => {
                self.find(Problem::Unreadable, name, format!("is not a readable report ({e})"));
                None
            }
        };
        let sig_name = format!("{name}.sig");
        let (sig, sig_text) = match self.st.read(&sig_name) {
            Ok(s) => {
                let text = String::from_utf8_lossy(&s).into_owned();
                if self.signed(&bytes, &text, head.as_ref().and_then(|h| h.signing_key_id.as_deref())) {
                    (Sig::Valid, Some(text))
                } else {
                    (Sig::Invalid, Some(text))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = if head.as_ref().is_some_and(|h| h.signing_key_id.is_none()) {
                    " (the report says it was written without a signing key: set reports.signing_key)"
                } else {
                    ""
                };
                self.find(Problem::SignatureMissing, name, format!("has no signature file {sig_name}{why}"));
                (Sig::Missing, None)
            }
            Err(e) => {
                self.find(Problem::Unreadable, &sig_name, format!("cannot read: {e}"));
                (Sig::Missing, None)
            }
        };
        Some(Entry { name: name.to_string(), bytes, sha, head, sig, sig_text })
    }

    /// Explains each invalid signature: swapped with another report's, malformed, another key,
    /// or (most often) a report altered after signing.
    fn resolve_signatures(&mut self, entries: &[Entry]) {
        let ids: Vec<String> = self.keys.iter().map(integrity::key_id).collect();
        let key_id = ids.join(", ");
        for e in entries.iter().filter(|e| e.sig == Sig::Invalid) {
            let text = e.sig_text.as_deref().unwrap_or_default();
            let sig_name = format!("{}.sig", e.name);
            if let Some(owner) = entries.iter().find(|o| o.name != e.name && self.signed(&o.bytes, text, None)) {
                self.find(
                    Problem::SignatureSwapped,
                    &e.name,
                    format!(
                        "its signature file {sig_name} is the signature of {}, not of this report (signature files swapped or copied)",
                        owner.name
                    ),
                );
                continue;
            }
            let well_formed = text.trim().len() == 128 && text.trim().bytes().all(|b| b.is_ascii_hexdigit());
            if !well_formed {
                self.find(
                    Problem::SignatureInvalid,
                    &e.name,
                    format!("its signature file {sig_name} is malformed (expected 128 hex characters)"),
                );
                continue;
            }
            let signed_by = e.head.as_ref().and_then(|h| h.signing_key_id.clone());
            if let Some(k) = signed_by.filter(|k| !ids.contains(k)) {
                // The secret signing key given for the public one (`signing.key` for
                // `signing.pub`; found by a README walkthrough): its public key is that id.
                let secret_given = self.keys.iter().any(|v| {
                    crate::integrity::key_id(&ed25519_dalek::SigningKey::from_bytes(&v.to_bytes()).verifying_key()) == k
                });
                let msg = match secret_given {
                    true => format!(
                        "does not verify: the key given is the signing key {k} itself (its secret), not its public key; pass the public key (signing.pub), and keep the secret key secret"
                    ),
                    false => format!(
                        "does not verify with the given public key{} (id {key_id}); the report names signing key {k}: wrong public key (after a key rotation, give every key with --public-key), or the report was altered",
                        if ids.len() == 1 { "" } else { "s" }
                    ),
                };
                self.find(Problem::SignatureInvalid, &e.name, msg);
                continue;
            }
            let vouched = entries
                .iter()
                .filter_map(|o| o.head.as_ref().and_then(|h| h.previous.as_ref()).map(|l| (o, l)))
                .find(|(_, l)| l.sha256 == e.sha);
            if let Some((o, _)) = vouched {
                self.find(
                    Problem::SignatureInvalid,
                    &e.name,
                    format!(
                        "its signature {sig_name} does not verify, although {} chained to exactly these bytes: the signature file was altered or replaced",
                        o.name
                    ),
                );
            } else {
                self.find(
                    Problem::Altered,
                    &e.name,
                    format!(
                        "was altered after signing: the signature {sig_name} does not verify over the file's bytes"
                    ),
                );
            }
        }
    }

    /// (`ok`|`missing`|`altered`, records found).
    fn check_evidence(&mut self, report: &str, ev: &EvidenceFile) -> (&'static str, u64) {
        if !store::plain_name(&ev.file) {
            self.find(
                Problem::EvidenceAltered,
                report,
                format!("names evidence file '{}', which is not a plain file name", ev.file),
            );
            return ("altered", 0);
        }
        let mut r = match self.st.open(&ev.file) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.find(
                    Problem::EvidenceMissing,
                    &ev.file,
                    format!("is missing: {report} records {} evidence records in it", ev.records),
                );
                return ("missing", 0);
            }
            Err(e) => {
                self.find(Problem::EvidenceMissing, &ev.file, format!("cannot be read: {e}"));
                return ("missing", 0);
            }
        };
        let mut hash = Sha256::new();
        let mut lines = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hash.update(&buf[..n]);
                    lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                }
                Err(e) => {
                    self.find(Problem::EvidenceMissing, &ev.file, format!("cannot be read: {e}"));
                    return ("missing", lines);
                }
            }
        }
        let sha = hex::encode(hash.finalize());
        if sha != ev.sha256 || lines != ev.records {
            self.find(
                Problem::EvidenceAltered,
                &ev.file,
                format!(
                    "was altered: it has {lines} records and SHA-256 {}…, but {report} records {} records and SHA-256 {}…",
                    &sha[..16],
                    ev.records,
                    ev.sha256.get(..16).unwrap_or(&ev.sha256)
                ),
            );
            return ("altered", lines);
        }
        ("ok", lines)
    }

    fn check_chain(&mut self, entries: &[Entry], renamed: &BTreeSet<String>, first: u64) -> Option<ChainSummary> {
        let mut runs: Vec<&Entry> =
            entries.iter().filter(|e| e.head.as_ref().is_some_and(|h| h.mode == "run")).collect();
        if runs.is_empty() {
            return None;
        }
        runs.sort_by(|a, b| {
            let (ha, hb) = (a.head.as_ref().unwrap(), b.head.as_ref().unwrap());
            (ha.sequence, ha.started_at, &a.name).cmp(&(hb.sequence, hb.started_at, &b.name))
        });
        let mut by_seq: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
        for e in &runs {
            if e.seq() == 0 {
                self.find(Problem::BrokenLink, &e.name, "is a run report without a sequence number".into());
                continue;
            }
            by_seq.entry(e.seq()).or_default().push(e);
        }
        for (s, group) in &by_seq {
            if group.len() > 1 {
                let names: Vec<&str> = group.iter().map(|e| e.name.as_str()).collect();
                for e in group {
                    self.find(
                        Problem::Fork,
                        &e.name,
                        format!("fork: sequence {s} is claimed by {} reports: {}", group.len(), names.join(", ")),
                    );
                }
            }
        }
        for e in entries.iter() {
            if let Some(why) = e.head.as_ref().and_then(|h| h.previous_unverified.as_deref()) {
                self.notes.push(format!("{} says: {why}", e.name));
            }
        }
        let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        // Gaps. (Reports before `first` were deleted on purpose: the chain starts there, and its
        // first report's link points at a report that is not here.)
        let first = first.max(1);
        if first > 1 {
            self.notes.push(format!(
                "reports before sequence {first} are taken as deleted on purpose (--first-sequence): their absence is not checked"
            ));
        }
        let mut expect = by_seq.keys().next().map_or(first, |&lowest| lowest.min(first));
        let mut prev: Option<&Entry> = None;
        for (s, group) in &by_seq {
            let e = group[0];
            if *s > expect {
                let range = if *s - expect == 1 {
                    format!("sequence {expect}")
                } else {
                    format!("sequences {expect}..{}", s - 1)
                };
                let link = e.head.as_ref().and_then(|h| h.previous.as_ref());
                let absent = link.filter(|l| !present.contains(l.file.as_str()) && l.sequence == s - 1);
                let between = match prev {
                    Some(p) => format!("between {} (sequence {}) and {} (sequence {s})", p.name, p.seq(), e.name),
                    None => format!("before {} (sequence {s})", e.name),
                };
                let start = if prev.is_none() { ": the chain does not start at 1" } else { "" };
                // A run that claimed its sequence on a report bucket and was killed before it
                // wrote its report: the next run chained to the claim, and its signed report
                // accounts for that run's evidence as an interrupted run's, found without its
                // report (it cannot have been there then). A note; before, the genuine chain
                // had a `missing` report for good (found by a review).
                let never_written = absent.filter(|l| {
                    *s - expect == 1
                        && e.head.as_ref().is_some_and(|h| {
                            h.interrupted_runs.iter().any(|a| a.report.as_deref() == Some(l.file.as_str()))
                        })
                });
                match (absent, never_written) {
                    (_, Some(l)) => {
                        self.never_written.insert(l.file.clone());
                        self.notes.push(format!(
                            "{range} ({}) was never written: its run ended after claiming it and before writing its report; {} (sequence {s}) links to it and accounts for that run's evidence",
                            l.file, e.name
                        ));
                    }
                    (Some(l), None) => self.find(
                        Problem::Missing,
                        &l.file,
                        format!("is missing: {range} missing {between}, which links to it{start}"),
                    ),
                    (None, _) => self.find(Problem::Missing, &range, format!("missing {between}{start}")),
                }
            }
            expect = s.saturating_add(1);
            prev = Some(e);
        }
        // Links.
        for e in runs.iter().filter(|e| e.seq() > 0) {
            let s = e.seq();
            let link = e.head.as_ref().and_then(|h| h.previous.as_ref());
            let l = match (s, link) {
                (1, None) => continue,
                (1, Some(l)) => {
                    self.find(
                        Problem::BrokenLink,
                        &e.name,
                        format!("is sequence 1 but links to a previous report {}", l.file),
                    );
                    continue;
                }
                (_, None) => {
                    self.find(
                        Problem::BrokenLink,
                        &e.name,
                        format!("is sequence {s} but has no link to a previous report"),
                    );
                    continue;
                }
                (_, Some(l)) => l,
            };
            if l.sequence != s - 1 {
                self.find(
                    Problem::BrokenLink,
                    &e.name,
                    format!("is sequence {s} but links to {} as sequence {} (expected {})", l.file, l.sequence, s - 1),
                );
            }
            let by_hash = entries.iter().find(|x| x.sha == l.sha256);
            let by_name = entries.iter().find(|x| x.name == l.file);
            match (by_name, by_hash) {
                (_, Some(t)) if t.name == l.file => {}
                (_, Some(t)) => {
                    if !renamed.contains(&t.name) {
                        self.find(
                            Problem::OutOfOrder,
                            &t.name,
                            format!("is the report {} (sequence {s}) links to as {}: renamed", e.name, l.file),
                        );
                    }
                }
                (Some(t), None) => {
                    self.find(
                        Problem::Altered,
                        &t.name,
                        format!(
                            "was altered after {} (sequence {s}) chained to it: its SHA-256 is {}…, the link records {}…",
                            e.name,
                            &t.sha[..16],
                            l.sha256.get(..16).unwrap_or(&l.sha256)
                        ),
                    );
                }
                (None, None) => {
                    if let Some(here) = by_seq.get(&(s - 1)) {
                        let names: Vec<&str> = here.iter().map(|x| x.name.as_str()).collect();
                        self.find(
                            Problem::BrokenLink,
                            &e.name,
                            format!(
                                "links to {} (sequence {}), which is not here; the report here with sequence {} is {}",
                                l.file,
                                l.sequence,
                                s - 1,
                                names.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        // Time order: a later sequence cannot have ended earlier. (Not started: runs of other
        // policies overlap, and the one that started first may end last.) Unless it links to
        // the earlier one by its hash: then it was written after it, whatever its clock read,
        // and the clock of a host was stepped back between them (an NTP correction, a moved
        // VM): a note, the times being as the hosts' clocks read them. (It was `out-of-order`,
        // and an untouched chain failed every verification from then on; found by a review.)
        let firsts: Vec<&Entry> = by_seq.values().map(|g| g[0]).collect();
        for w in firsts.windows(2) {
            let (a, b) = (w[0].head.as_ref().unwrap(), w[1].head.as_ref().unwrap());
            let (ta, tb) = (a.finished_at.unwrap_or(a.started_at), b.finished_at.unwrap_or(b.started_at));
            let linked = b
                .previous
                .as_ref()
                .is_some_and(|l| l.file == w[0].name && l.sha256 == w[0].sha && l.sequence == a.sequence);
            if tb < ta && linked {
                self.notes.push(format!(
                    "{} (sequence {}) ended at {}, before sequence {} ({}, ended {}), and links to it by its hash: it was written after it, by a clock {} s behind",
                    w[1].name,
                    b.sequence,
                    tb.to_rfc3339(),
                    a.sequence,
                    w[0].name,
                    ta.to_rfc3339(),
                    (ta - tb).num_seconds().max(1)
                ));
            } else if tb < ta {
                self.find(
                    Problem::OutOfOrder,
                    &w[1].name,
                    format!(
                        "is sequence {} but ended at {}, before sequence {} ({}, ended {})",
                        b.sequence,
                        tb.to_rfc3339(),
                        a.sequence,
                        w[0].name,
                        ta.to_rfc3339()
                    ),
                );
            }
        }
        let last = *firsts.last()?;
        Some(ChainSummary {
            run_reports: runs.len(),
            first_sequence: firsts[0].seq(),
            last_sequence: last.seq(),
            newest: last.name.clone(),
            newest_sha256: last.sha.clone(),
        })
    }

    /// The reports the reader kept a record of (`--known`): still here, with the same bytes. A
    /// removed newest report, whose sequence a later run then took, shows only this way (or by a
    /// report bucket's claims).
    fn check_known(&mut self, entries: &[Entry], known: &[Known]) {
        for k in known {
            match entries.iter().find(|e| e.name == k.name) {
                Some(e) if e.sha == k.sha256 => {}
                Some(e) => self.find(
                    Problem::Altered,
                    &k.name,
                    format!(
                        "is not the report you knew: its SHA-256 is {}…, you recorded {}…",
                        &e.sha[..16],
                        &k.sha256[..16]
                    ),
                ),
                None => {
                    let same_bytes = entries.iter().find(|e| e.sha == k.sha256);
                    self.find(
                        Problem::Missing,
                        &k.name,
                        match same_bytes {
                            Some(e) => format!("is not here by that name: its bytes are {}", e.name),
                            None => "is not here: a report you recorded was removed (a later run may have taken its sequence)"
                                .to_string(),
                        },
                    )
                }
            }
        }
    }

    /// Signatures, evidence and CSV files whose report is gone.
    /// A report bucket's claims (`sink::CLAIMS`): each names the run report that took its
    /// sequence, with its SHA-256. The claimed report must be in the store (a missing newest
    /// report, which no later link reveals, shows here), with the claimed bytes and sequence;
    /// another report of that sequence forked the chain. Claims below `first` are not checked.
    /// Files of a versioned store hidden by a delete marker (`ReportStore::hidden`): a
    /// report, its signature, evidence or claim deleted without its version id is gone from
    /// every listing and read, and a newest report and its claim so hidden left a chain that
    /// verified (found by a review). Each is `missing`, with how to show it again. Versions
    /// that cannot be listed are a note.
    fn check_hidden(&mut self, entries: &[Entry], first: u64) {
        // From `--first-sequence` on (older reports may have been expired on purpose, by a
        // lifecycle rule that leaves delete markers): a claim by its sequence, a run's file by
        // the start its name carries, against the report of that first sequence here.
        let since = entries.iter().filter(|e| e.seq() == first && first > 1).find_map(|e| run_stamp(&e.name));
        let kept = |name: &str| match name.strip_prefix(super::sink::CLAIMS) {
            Some(seq) => seq.parse::<u64>().is_ok_and(|s| s >= first),
            None => {
                name.starts_with("lapse-")
                    && since.as_deref().is_none_or(|s| run_stamp(name).is_none_or(|n| n.as_str() >= s))
            }
        };
        match self.st.hidden() {
            Ok(names) => {
                for name in names.into_iter().filter(|n| kept(n)) {
                    self.find(
                        Problem::Missing,
                        &name,
                        format!(
                            "is hidden: the store keeps its versions, but its newest entry is a delete marker (a DELETE without a version id); deleting that marker shows it again ({})",
                            self.st.location()
                        ),
                    );
                }
            }
            // Credentials that may read the reports but not list their versions: said, not a
            // failure of the reports.
            Err(e) => self.notes.push(format!(
                "the versions of {} cannot be listed ({e}): a report or claim hidden by a delete marker would not be found; verify with credentials that may list them (s3:ListBucketVersions)",
                self.st.location()
            )),
        }
    }

    /// A `shard-<i>-of-<n>` directory (or bucket prefix) holds the reports of that shard only:
    /// one holding another shard's reports had its directories swapped or copied (before,
    /// `shard-1-of-3` copied in place of `shard-2-of-3` verified OK; found by a review).
    fn check_shard_dir(&mut self, entries: &[Entry]) {
        // A directory by its resolved path (`.` inside a shard directory is that directory).
        let location = self.st.location();
        let location = std::fs::canonicalize(&location).map(|p| p.display().to_string()).unwrap_or(location);
        let last = location.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
        let Some(crate::shard::Shard { index: i, count: n }) = crate::shard::Shard::from_dir_name(&last) else {
            return;
        };
        for e in entries {
            let Some(h) = &e.head else { continue };
            let holds = match &h.shard {
                Some(s) if s.index == i && s.count == n => continue,
                Some(s) => format!("shard {} of {}", s.index, s.count),
                None => "a whole run (no shard)".to_string(),
            };
            self.find(
                Problem::OutOfOrder,
                &e.name,
                format!("is the report of {holds}, in the directory of shard {i} of {n} ({last}): directories swapped or copied"),
            );
        }
    }

    fn check_claims(&mut self, entries: &[Entry], first: u64) {
        let claims = match self.st.claims() {
            Ok(c) => c,
            Err(e) => {
                let at = format!("{}{}", self.st.location(), super::sink::CLAIMS);
                return self.find(Problem::Unreadable, &at, format!("cannot list the chain's claims: {e}"));
            }
        };
        let newest_stored = entries.iter().map(Entry::seq).max().unwrap_or(0);
        let claims: Vec<_> = claims.into_iter().filter(|c| c.sequence >= first).collect();
        if let (Some(low), Some(high)) = (claims.first().map(|c| c.sequence), claims.last().map(|c| c.sequence)) {
            self.claims_checked = true;
            self.notes.push(format!(
                "{} of the bucket's chain ({}, sequences {low}..{high}) checked against the reports they name",
                match claims.len() {
                    1 => "1 claim".to_string(),
                    n => format!("{n} claims"),
                },
                super::sink::CLAIMS
            ));
        }
        for claim in claims {
            let seq = claim.sequence;
            let c = match claim.link {
                Ok(c) => c,
                Err(e) => {
                    let at = format!("{}{}{seq:020}", self.st.location(), super::sink::CLAIMS);
                    self.find(Problem::Unreadable, &at, format!("the claim of sequence {seq} cannot be read: {e}"));
                    continue;
                }
            };
            match entries.iter().find(|e| e.name == c.file) {
                // A report missing in the middle of the chain is already found by its successor,
                // or accounted for by it as never written.
                None if self.never_written.contains(&c.file)
                    || self.findings.iter().any(|f| f.problem == Problem::Missing && f.file == c.file) => {}
                // Claimed after every stored report, less than a day ago: its run may still be
                // storing it (the report goes last, after its evidence), or failed to and the
                // next run stores it.
                None if seq > newest_stored
                    && claim.at.is_some_and(|at| chrono::Utc::now() - at < chrono::Duration::hours(PENDING_HOURS)) =>
                {
                    self.notes.push(format!(
                        "{} has sequence {seq} by the bucket's claim of {}, but is not stored yet: its run may still be storing it, or the next run will; if it is still not there {PENDING_HOURS} h after the claim, verify finds it missing",
                        c.file,
                        claim.at.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ))
                }
                None => self.find(
                    Problem::Missing,
                    &c.file,
                    format!(
                        "is missing: the bucket's claim gives it sequence {seq}, but the store has no such report (its run may still be storing it; else it ended before storing it, or the report was removed)"
                    ),
                ),
                Some(e) if e.sha != c.sha256 => self.find(
                    Problem::Altered,
                    &e.name,
                    format!(
                        "was altered: its SHA-256 is {}…, but the bucket's claim of sequence {seq} recorded {}…",
                        &e.sha[..16],
                        c.sha256.get(..16).unwrap_or(&c.sha256)
                    ),
                ),
                Some(e) if e.seq() != seq => self.find(
                    Problem::BrokenLink,
                    &e.name,
                    format!("is sequence {}, but the bucket's claim gives it sequence {seq}", e.seq()),
                ),
                Some(_) => {}
            }
            let others: Vec<String> = entries
                .iter()
                .filter(|e| e.seq() == seq && e.name != c.file && e.head.as_ref().is_some_and(|h| h.mode == "run"))
                .map(|e| e.name.clone())
                .collect();
            for o in others {
                self.find(
                    Problem::Fork,
                    &o,
                    format!("fork: it has sequence {seq}, which the bucket's claim gives to {}", c.file),
                );
            }
        }
    }

    fn check_leftovers(&mut self, names: &[String], entries: &[Entry], claimed: &BTreeSet<String>) {
        let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        for n in names {
            match store::kind(n) {
                FileKind::Signature { report }
                    if !listed.contains(report.as_str()) && listed.contains(format!(".{report}.tmp").as_str()) =>
                {
                    self.notes.push(format!(
                        "{report} is not written yet: its signature {n} is here and the report under its temporary name .{report}.tmp (a run killed between the two renames; the next run finishes it)"
                    ));
                }
                FileKind::Signature { report } if !listed.contains(report.as_str()) => {
                    self.find(
                        Problem::Missing,
                        &report,
                        format!("is missing, but its signature {n} is still here (a deleted report?)"),
                    );
                }
                FileKind::Evidence { report } if !claimed.contains(n) && !present.contains(report.as_str()) => {
                    self.notes.push(format!(
                        "{n} belongs to no report here (a run killed before it wrote its report — its journal table has the records; objects it deleted without an evidence line are recorded by a later run as reconciled — or a deleted report)"
                    ));
                }
                FileKind::Other if n.starts_with(".lapse-run-") && n.ends_with(".json.tmp") => {
                    self.notes.push(format!(
                        "{n} is a report whose write did not finish (a run killed while writing it; the next run finishes it if it is whole, its signature checks with that run's key and no other report took its place in the chain): not part of the chain"
                    ));
                }
                FileKind::Other if n.ends_with(crate::intent::SUFFIX) => {
                    self.notes.push(format!(
                        "{n} holds write-ahead intents of a run stopped before it wrote its report; the next run of its policies reconciles them"
                    ));
                }
                FileKind::Csv { report } if !listed.contains(report.as_str()) => {
                    self.notes.push(format!("{n} belongs to no report here ({report} is absent)"));
                }
                _ => {}
            }
        }
    }

    /// The CSV summary is a convenience copy, not signed: say when it differs from the JSON.
    fn check_csv(&mut self, entries: &[Entry]) {
        for e in entries.iter().filter(|e| e.head.is_some()) {
            let csv = format!("{}.csv", e.name.trim_end_matches(".json"));
            let Ok(bytes) = self.st.read(&csv) else { continue };
            let Ok(report) = serde_json::from_slice::<Report>(&e.bytes) else { continue };
            if report.csv().is_ok_and(|c| !same_csv(&bytes, &c)) {
                self.notes.push(format!(
                    "{csv} differs from a rendering of the signed {} (the CSV is not signed; the JSON is authoritative)",
                    e.name
                ));
            }
        }
    }

    /// One report: its link to the previous report, when that file is next to it.
    fn check_single_link(&mut self, entries: &[Entry], name: &str) {
        let Some(e) = entries.first() else { return };
        let Some(h) = &e.head else { return };
        if e.name != expected_name(h) {
            self.notes.push(format!("{name} was written as {}", expected_name(h)));
        }
        let Some(l) = &h.previous else { return };
        match self.st.read(&l.file) {
            Ok(b) => {
                let sha = integrity::sha256_hex(&b);
                if sha != l.sha256 {
                    self.find(
                        Problem::Altered,
                        &l.file,
                        format!(
                            "(sequence {}) was altered after {name} chained to it: its SHA-256 is {}…, the link records {}…",
                            l.sequence,
                            &sha[..16],
                            l.sha256.get(..16).unwrap_or(&l.sha256)
                        ),
                    );
                } else {
                    self.notes.push(format!(
                        "the link to the previous report {} (sequence {}) matches; verify the directory to check the whole chain",
                        l.file, l.sequence
                    ));
                }
            }
            Err(_) => self.notes.push(format!(
                "the previous report {} (sequence {}) is not next to this file; verify the directory to check the chain",
                l.file, l.sequence
            )),
        }
    }
}

fn expected_name(h: &Head) -> String {
    format!("lapse-{}-{}-{}.json", h.mode, h.started_at.format("%Y%m%dT%H%M%SZ"), short(&h.run_id))
}

fn short(run_id: &str) -> &str {
    run_id.get(..8).unwrap_or(run_id)
}

impl Outcome {
    /// For a terminal.
    pub fn text(&self) -> String {
        let mut s = format!(
            "verify {} with public key{} {} ({} report{})\n",
            printable(&self.location),
            if self.key_id.contains(',') { "s" } else { "" },
            self.key_id,
            self.reports.len(),
            if self.reports.len() == 1 { "" } else { "s" }
        );
        let width = self.reports.iter().map(|r| r.file.len()).max().unwrap_or(0);
        for r in &self.reports {
            let what = match (r.mode.as_deref(), r.sequence) {
                (Some("run"), Some(n)) => format!("run #{n}"),
                (Some(m), _) => m.to_string(),
                _ => "?".into(),
            };
            let ev = match (r.evidence, r.evidence_records) {
                (Some(state), Some(n)) => format!("  evidence {state} ({n} records)"),
                _ => String::new(),
            };
            s.push_str(&format!(
                "  {:<4}  {:<width$}  {:<8}  signature {}{}\n",
                if r.ok { "ok" } else { "FAIL" },
                printable(&r.file),
                printable(&what),
                r.signature,
                ev
            ));
        }
        if let Some(c) = &self.chain {
            s.push_str(&format!(
                "chain: {} run report{}, sequences {}..{}, newest {}\n",
                c.run_reports,
                if c.run_reports == 1 { "" } else { "s" },
                c.first_sequence,
                c.last_sequence,
                printable(&c.newest)
            ));
        }
        if !self.findings.is_empty() {
            s.push_str(&format!("problems ({}):\n", self.findings.len()));
            for f in &self.findings {
                s.push_str(&format!("  {:<18} {} {}\n", f.problem.label(), printable(&f.file), printable(&f.message)));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("note: {}\n", printable(n)));
        }
        if self.ok {
            s.push_str("result: OK — signatures valid, evidence intact");
            s.push_str(if self.chain.is_some() { ", chain unbroken\n" } else { "\n" });
        } else {
            s.push_str(&format!(
                "result: FAILED — {} problem{}\n",
                self.findings.len(),
                if self.findings.len() == 1 { "" } else { "s" }
            ));
        }
        s
    }
}

/// Whether a stored CSV summary says what a rendering of its report says. A CSV written by an
/// earlier lapse, before the run's own facts were appended to each row, has exactly the first
/// [`CSV_COLUMNS_BEFORE_RUN_FACTS`] columns, under the same header: it is compared on them, so
/// that reports written before do not read as altered. Any other shorter CSV differs (a review
/// found one cut to its first column passing).
fn same_csv(stored: &[u8], rendered: &[u8]) -> bool {
    if stored == rendered {
        return true;
    }
    let rows = |b: &[u8]| -> Option<Vec<csv::StringRecord>> {
        csv::ReaderBuilder::new().has_headers(false).from_reader(b).records().collect::<Result<_, _>>().ok()
    };
    let (Some(stored), Some(rendered)) = (rows(stored), rows(rendered)) else { return false };
    let n = CSV_COLUMNS_BEFORE_RUN_FACTS;
    stored.len() == rendered.len()
        && stored.iter().zip(&rendered).all(|(s, r)| s.len() == n && r.len() > n && s.iter().eq(r.iter().take(n)))
}

/// The columns of the CSV summary as lapse wrote it before the run's own facts
/// (`evidence_incomplete` …) were appended: `run_id` to `evidence_recovered`.
const CSV_COLUMNS_BEFORE_RUN_FACTS: usize = 27;

#[cfg(test)]
mod tests {
    use super::same_csv;

    #[test]
    fn an_earlier_csv_is_compared_on_its_own_columns() {
        let cols = |n: usize, v: &str| (0..n).map(|i| format!("{v}{i}")).collect::<Vec<_>>().join(",");
        let head = |n: usize| cols(n, "c");
        let row = |n: usize| cols(n, "v");
        let csv = |n: usize, body: &str| format!("{}\n{body}\n", head(n)).into_bytes();
        let now = csv(33, &row(33));
        assert!(same_csv(&now, &now));
        assert!(same_csv(&csv(27, &row(27)), &now), "written before the run's facts");
        assert!(!same_csv(&csv(27, &row(27).replace("v3", "x")), &now), "a value changed");
        assert!(!same_csv(&csv(10, &row(10)), &now), "cut short");
        assert!(!same_csv(&csv(1, &row(1)), &now), "cut to one column");
        assert!(!same_csv(&format!("{}\n{}\n{}\n", head(27), row(27), row(27)).into_bytes(), &now), "a row added");
    }
}
