//! Write-ahead intents for destruction without a transactional journal (object stores).
//!
//! A SQL batch writes its journal rows in the destroying transaction, so a kill can never leave a
//! destroyed row unrecorded. `DeleteObjects` has no transaction: a kill after it returned and
//! before the evidence line was written would leave deleted objects in no evidence. So before an
//! object batch is deleted, the engine appends an [`Intent`] per record to
//! `<report stem>.intents.jsonl` next to the evidence file, and flushes and fsyncs it. An intent
//! holds the same keyed hashes as evidence (record, subject), never a key or a value.
//!
//! After each batch, the records whose outcome is known and of which nothing was destroyed
//! (gone or no longer due at the batch's re-check, held by the storage, failed with no version
//! deleted) are marked void in the same file ([`IntentLog::void`]); the destroyed ones are
//! settled by their evidence lines. Only intents with no outcome are ever reconciled: a run
//! that ends with failures does not leave a later run to claim objects it skipped, which
//! someone else may have deleted since.
//!
//! A run that completes without failures has resolved its intents (its evidence says what it
//! destroyed) and removes the file once its report is written. An intent file left behind comes
//! from a run that was killed (or whose batches failed, e.g. a `DeleteObjects` whose response was
//! lost on every retry): the next run of the same policy ([`pending`], then the engine's reconciliation) looks
//! up every intent that no evidence confirms; a record whose object no longer exists (no version
//! left) is written to the new run's evidence marked `reconciled_from` the interrupted run, and
//! counted `reconciled` in its report; a record whose object still exists was not destroyed (the
//! intent is void; the run processes the object normally). Then the policy is marked resolved in
//! the intent file ([`resolve`]); a file whose policies are all resolved is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::report::Evidence;

/// File name suffix of an intent journal (`<report stem>.intents.jsonl`).
pub const SUFFIX: &str = ".intents.jsonl";

/// A record a batch is about to destroy, written (and fsynced) before the destruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub run_id: String,
    pub policy: String,
    pub stage: String,
    pub action: String,
    pub batch: u64,
    /// HMAC of the record key (as in evidence).
    pub record: String,
    /// HMAC of the data subject, when the dataset has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Identifies the evidence key the hashes were made with.
    pub key_id: String,
    pub at: DateTime<Utc>,
    /// The policy's connection and dataset (as written) when the intent was made: the record
    /// hashes name them, so intents of another spelling of the dataset cannot be looked up
    /// (absent in intents of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<(String, String)>,
}

/// One line of an intent journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Intent(Intent),
    /// Records of a batch whose outcome is known and destroyed nothing of them (gone or no
    /// longer due at the batch's re-check, held by the storage, failed with no version
    /// deleted): their intents are void, never reconciled as destroyed.
    Void {
        policy: String,
        stage: String,
        batch: u64,
        records: Vec<String>,
    },
    /// A later run reconciled this policy's intents.
    Resolved {
        policy: String,
        by_run: String,
        at: DateTime<Utc>,
    },
}

/// The intent journal of the current run, created on its first intent (a run that destroys
/// only SQL rows never creates one).
pub struct IntentLog {
    dir: PathBuf,
    stem: String,
    file: Option<std::fs::File>,
}

impl IntentLog {
    pub fn new(dir: PathBuf, stem: String) -> IntentLog {
        IntentLog { dir, stem, file: None }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The report stem of this run (`lapse-run-<time>-<id>`).
    pub fn stem(&self) -> &str {
        &self.stem
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}{SUFFIX}", self.stem))
    }

    /// Appends the intents and makes them durable (flush + fsync) before returning: only then
    /// may the batch be destroyed.
    ///
    /// The file appears under its name with its first intents in it (written to a temporary
    /// name, synced, renamed): a run reading the directory meanwhile (another policy's, sharing
    /// it) never finds it empty, so it can take an intent file without a whole line for one a
    /// killed run left, and remove it.
    pub fn record(&mut self, intents: &[Intent]) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        for i in intents {
            serde_json::to_writer(&mut buf, &Line::Intent(i.clone()))?;
            buf.push(b'\n');
        }
        match self.file.as_mut() {
            Some(f) => {
                f.write_all(&buf)?;
                f.sync_data()?;
            }
            None => {
                std::fs::create_dir_all(&self.dir)?;
                let path = self.path();
                let tmp = self.dir.join(format!(".{}{SUFFIX}.tmp", self.stem));
                let cannot =
                    |e: std::io::Error| anyhow::anyhow!("cannot create intent journal '{}': {e}", path.display());
                let mut f =
                    std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&tmp).map_err(cannot)?;
                f.write_all(&buf).and_then(|()| f.sync_data()).map_err(cannot)?;
                std::fs::rename(&tmp, &path).map_err(cannot)?;
                // The file's name must survive a crash too, not only its bytes.
                std::fs::File::open(&self.dir)?.sync_all()?;
                // Later intents are appended through the same handle (its offset is the end).
                self.file = Some(f);
            }
        }
        Ok(())
    }

    /// Marks intents of `policy`'s batch void: the batch's outcome for these records is known
    /// and it destroyed nothing of them (a `void` line). Written after the batch, synced;
    /// the records it destroyed are settled by their evidence lines.
    pub fn void(&mut self, policy: &str, stage: &str, batch: u64, records: Vec<String>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        let mut line = serde_json::to_vec(&Line::Void { policy: policy.into(), stage: stage.into(), batch, records })?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()?;
        Ok(())
    }

    /// After the run's report is written: its evidence resolves its intents.
    pub fn close(self) -> anyhow::Result<()> {
        if self.file.is_some() {
            std::fs::remove_file(self.path())?;
        }
        Ok(())
    }
}

/// Unconfirmed intents of one policy left by one interrupted run.
#[derive(Debug, Clone)]
pub struct Pending {
    pub path: PathBuf,
    pub run_id: String,
    /// Intents that no evidence confirms (one per record and stage).
    pub intents: Vec<Intent>,
    /// Intents made with another evidence key than the current one (cannot be looked up).
    pub other_key: usize,
}

fn read_lines(path: &Path) -> std::io::Result<Vec<Line>> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for line in f.split(b'\n') {
        // A line cut by the kill was never complete, so its batch was never sent.
        if let Ok(l) = serde_json::from_slice::<Line>(&line?) {
            out.push(l);
        }
    }
    Ok(out)
}

fn evidence_lines(path: &Path) -> Vec<Evidence> {
    let Ok(f) = std::fs::File::open(path) else { return Vec::new() };
    std::io::BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_slice::<Evidence>(&l).ok())
        .collect()
}

/// Run stems in `dir` with a file of suffix `suffix` but no report (`<stem>.json`).
fn without_report(names: &BTreeSet<String>, suffix: &str) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| n.strip_suffix(suffix))
        .filter(|stem| stem.starts_with("lapse-run-") && !names.contains(&format!("{stem}.json")))
        .map(str::to_string)
        .collect()
}

/// The intents of `policy` that earlier runs left in `dir` (killed, or finished with failures)
/// unconfirmed by any evidence: their own evidence file, or an earlier reconciliation by a run
/// that was itself interrupted before it could mark them resolved. Files whose every policy is
/// resolved are removed on the way when `tidy` (a directory this run's layout owns; never one of
/// another layout, whose run may be live). `own_stem`: the current run.
pub fn pending(dir: &Path, own_stem: &str, policy: &str, key_id: &str, tidy: bool) -> anyhow::Result<Vec<Pending>> {
    let names: BTreeSet<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut reconciled_elsewhere: Option<BTreeMap<String, BTreeSet<(String, String)>>> = None;
    let mut out = Vec::new();
    let stems: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix(SUFFIX)).collect();
    for stem in stems {
        if stem == own_stem || !stem.starts_with("lapse-run-") {
            continue;
        }
        let path = dir.join(format!("{stem}{SUFFIX}"));
        let lines = match read_lines(&path) {
            Ok(l) => l,
            // Removed since the listing (its run closed it, or another run resolved it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let mut intents = Vec::new();
        let mut policies = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        let mut void: BTreeSet<(String, String)> = BTreeSet::new();
        for l in lines {
            match l {
                Line::Intent(i) => {
                    policies.insert(i.policy.clone());
                    if i.policy == policy {
                        intents.push(i);
                    }
                }
                Line::Void { policy: vp, stage, records, .. } => {
                    if vp == policy {
                        void.extend(records.into_iter().map(|r| (r, stage.clone())));
                    }
                }
                Line::Resolved { policy, .. } => {
                    resolved.insert(policy);
                }
            }
        }
        // (Also a file without a whole line: a killed run's, whose first batch was never sent;
        // a live run's file always has its first intents, see `IntentLog::record`.)
        if policies.is_subset(&resolved) {
            if tidy {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if resolved.contains(policy) || intents.is_empty() {
            continue;
        }
        let run_id = intents[0].run_id.clone();
        let own: BTreeSet<(String, String)> = evidence_lines(&dir.join(format!("{stem}.evidence.jsonl")))
            .into_iter()
            .filter(|e| e.policy == policy)
            .map(|e| (e.record, e.stage))
            .collect();
        let elsewhere = reconciled_elsewhere.get_or_insert_with(|| {
            // Reconciliations written by runs that were interrupted in turn (rare: read only
            // when there is something to reconcile).
            let mut m: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
            for s in without_report(&names, ".evidence.jsonl") {
                for e in evidence_lines(&dir.join(format!("{s}.evidence.jsonl"))) {
                    if let Some(from) = e.reconciled_from.clone().filter(|_| e.policy == policy) {
                        m.entry(from).or_default().insert((e.record, e.stage));
                    }
                }
            }
            m
        });
        let done = elsewhere.get(&run_id);
        let mut seen = BTreeSet::new();
        let mut other_key = 0;
        let mut left = Vec::new();
        for i in intents {
            let id = (i.record.clone(), i.stage.clone());
            if own.contains(&id) || void.contains(&id) || done.is_some_and(|d| d.contains(&id)) || !seen.insert(id) {
                continue;
            }
            if i.key_id != key_id {
                other_key += 1;
                continue;
            }
            left.push(i);
        }
        out.push(Pending { path, run_id, intents: left, other_key });
    }
    Ok(out)
}

/// Whether the run that writes intent file `path` is still going on (another worker's, of
/// other policies, sharing the directory): it holds its evidence file locked, and its intents
/// are its own, not left (found by a review: a run took a live run's intents for an
/// interrupted run's, and removed its file).
pub fn still_running(path: &Path) -> bool {
    let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(SUFFIX)) else {
        return false;
    };
    std::fs::File::open(path.with_file_name(format!("{stem}.evidence.jsonl"))).is_ok_and(|f| f.try_lock().is_err())
}

/// The policies with intents not marked resolved in the intent files earlier runs left in
/// `dir` (not `own_stem`'s): whether a policy has any left is then for [`pending`] to say.
pub fn unresolved_policies(dir: &Path, own_stem: &str) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    let mut out = BTreeSet::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(SUFFIX) else { continue };
        if stem == own_stem || !stem.starts_with("lapse-run-") {
            continue;
        }
        if still_running(&e.path()) {
            continue;
        }
        let Ok(lines) = read_lines(&e.path()) else { continue };
        let (mut policies, mut resolved) = (BTreeSet::new(), BTreeSet::new());
        for l in lines {
            match l {
                Line::Intent(i) => {
                    policies.insert(i.policy);
                }
                Line::Resolved { policy, .. } => {
                    resolved.insert(policy);
                }
                Line::Void { .. } => {}
            }
        }
        out.extend(policies.difference(&resolved).cloned());
    }
    out
}

/// Marks `policy` resolved in an interrupted run's intent file (after the reconciled evidence
/// is durable); removes the file once every policy in it is resolved.
pub fn resolve(p: &Pending, policy: &str, by_run: &str) -> anyhow::Result<()> {
    let lines = read_lines(&p.path)?;
    let mut policies = BTreeSet::new();
    let mut resolved = BTreeSet::from([policy.to_string()]);
    for l in &lines {
        match l {
            Line::Intent(i) => {
                policies.insert(i.policy.clone());
            }
            Line::Resolved { policy, .. } => {
                resolved.insert(policy.clone());
            }
            Line::Void { .. } => {}
        }
    }
    if policies.is_subset(&resolved) {
        std::fs::remove_file(&p.path)?;
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&p.path)?;
    let mut line =
        serde_json::to_vec(&Line::Resolved { policy: policy.into(), by_run: by_run.into(), at: Utc::now() })?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()?;
    Ok(())
}

/// The record hashes of every intent in `dir`'s intent journals (for tests and diagnostics).
pub fn all_records(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().ends_with(SUFFIX) {
            for l in read_lines(&e.path()).unwrap_or_default() {
                if let Line::Intent(i) = l {
                    out.insert(i.record);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(run: &str, policy: &str, record: &str) -> Intent {
        Intent {
            run_id: run.into(),
            policy: policy.into(),
            stage: "record".into(),
            action: "deleted".into(),
            batch: 1,
            record: record.into(),
            subject: None,
            key_id: "k".into(),
            at: Utc::now(),
            dataset: None,
        }
    }

    #[test]
    fn pending_intents_are_those_no_evidence_confirms() {
        let dir = std::env::temp_dir().join(format!("lapse-intent-{}", uuid::Uuid::new_v4()));
        let stem = "lapse-run-20260101T000000Z-aaaaaaaa";
        let mut log = IntentLog::new(dir.clone(), stem.into());
        log.record(&[intent("A", "p", "r1"), intent("A", "p", "r2"), intent("A", "q", "r3")]).unwrap();
        let ev = Evidence {
            record: "r1".into(),
            subject: None,
            other_subjects: Vec::new(),
            policy: "p".into(),
            action: "deleted".into(),
            stage: "record".into(),
            batch: 1,
            at: Utc::now(),
            versions: Some(1),
            bytes: Some(1),
            reconciled_from: None,
        };
        let mut line = serde_json::to_vec(&ev).unwrap();
        line.extend_from_slice(b"\n{\"record\": \"cut by a ki");
        std::fs::write(dir.join(format!("{stem}.evidence.jsonl")), line).unwrap();
        drop(log);
        let p = pending(&dir, "lapse-run-20260101T000001Z-bbbbbbbb", "p", "k", true).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].run_id, "A");
        assert_eq!(p[0].intents.iter().map(|i| i.record.as_str()).collect::<Vec<_>>(), ["r2"]);
        // Another key: cannot be looked up.
        assert_eq!(pending(&dir, "x", "p", "other", true).unwrap()[0].other_key, 1);
        resolve(&p[0], "p", "B").unwrap();
        assert!(pending(&dir, "x", "p", "k", true).unwrap().is_empty(), "p is resolved");
        assert_eq!(pending(&dir, "x", "q", "k", true).unwrap()[0].intents.len(), 1);
        let q = pending(&dir, "x", "q", "k", true).unwrap();
        resolve(&q[0], "q", "B").unwrap();
        assert!(!dir.join(format!("{stem}{SUFFIX}")).exists(), "every policy resolved: removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_cut_short_are_removed_and_another_layouts_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("lapse-intent-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // A killed run's file whose first line was cut: its batch was never sent.
        let cut = dir.join(format!("lapse-run-20260101T000000Z-aaaaaaaa{SUFFIX}"));
        std::fs::write(&cut, "{\"kind\":\"intent\",\"run_id\":\"A\",\"pol").unwrap();
        assert!(pending(&dir, "x", "p", "k", false).unwrap().is_empty());
        assert!(cut.exists(), "not removed without tidy");
        assert!(pending(&dir, "x", "p", "k", true).unwrap().is_empty());
        assert!(!cut.exists(), "removed with tidy");
        // A log never shows under its name without its first intents.
        let mut log = IntentLog::new(dir.clone(), "lapse-run-20260101T000002Z-cccccccc".into());
        log.record(&[intent("C", "p", "r1")]).unwrap();
        log.record(&[intent("C", "p", "r2")]).unwrap();
        let lines = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
        log.close().unwrap();
        // Every policy resolved, but in a directory this run does not tidy.
        let stem = "lapse-run-20260101T000001Z-bbbbbbbb";
        let mut log = IntentLog::new(dir.clone(), stem.into());
        log.record(&[intent("A", "p", "r1")]).unwrap();
        let p = pending(&dir, "x", "p", "k", false).unwrap();
        let mut line =
            serde_json::to_vec(&Line::Resolved { policy: "p".into(), by_run: "B".into(), at: Utc::now() }).unwrap();
        line.push(b'\n');
        std::fs::OpenOptions::new().append(true).open(&p[0].path).unwrap().write_all(&line).unwrap();
        assert!(pending(&dir, "x", "p", "k", false).unwrap().is_empty());
        assert!(log.path().exists(), "not removed without tidy");
        assert!(pending(&dir, "x", "p", "k", true).unwrap().is_empty());
        assert!(!log.path().exists(), "removed with tidy");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_closed_log_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("lapse-intent-{}", uuid::Uuid::new_v4()));
        let stem = "lapse-run-20260101T000000Z-aaaaaaaa";
        let mut log = IntentLog::new(dir.clone(), stem.into());
        log.record(&[intent("A", "p", "r1")]).unwrap();
        let path = log.path();
        assert_eq!(pending(&dir, stem, "p", "k", true).unwrap().len(), 0, "the own run is not reconciled");
        assert_eq!(pending(&dir, "x", "p", "k", true).unwrap().len(), 1);
        log.close().unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
