//! The destruction report: what was destroyed, what was kept and why, per policy.
//!
//! JSON is the authoritative format (`schema_version` versioned); a CSV summary is written next
//! to it. Records appear only as keyed hashes ([`crate::evidence`]); no personal value is ever
//! part of a report.
//!
//! The types are read back too (`lapse report render`) and published as JSON Schema
//! (`schema/report.schema.json`, generated from them: regenerate it with `lapse report schema` when
//! a type changes). A field added within a schema version gets `#[serde(default)]` so that reports
//! written before it still read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::policy::PolicyFile;

pub const SCHEMA_VERSION: &str = "1";

/// A string fixed when the report is written (schema version, tool name and version). The alias
/// keeps serde from borrowing it from the input when a report is read back; see [`interned`].
pub type Fixed = &'static str;

/// A `lapse` destruction report (`plan` or `run`): what was destroyed, what was kept and why, per
/// policy. Records and subjects appear only as keyed hashes; no personal value is ever part of it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Version of this format (`1`).
    #[serde(deserialize_with = "interned")]
    #[schemars(extend("const" = "1"))]
    pub schema_version: Fixed,
    /// Unique id of the run (a UUID).
    pub run_id: String,
    /// `plan` (nothing changed) or `run`.
    pub mode: String,
    /// `complete`, `partial` (some work failed), `guardrail` (a policy was stopped) or
    /// `incomplete` (the run was interrupted, or a policy failed part-way: what it committed
    /// is counted, its error is in the policy's `errors`).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Fixed at the start of the run: a purpose lapses when `anchor + period <= cutoff`.
    pub cutoff: DateTime<Utc>,
    /// The worker that wrote the report.
    pub tool: Tool,
    /// Identifies the evidence key (not the key itself).
    pub evidence_key_id: String,
    /// Every policy file read, with the SHA-256 of its bytes.
    #[serde(deserialize_with = "policy_files")]
    #[schemars(with = "Vec<PolicyFileDigest>")]
    pub policy_files: Vec<PolicyFile>,
    /// The config and holds file this run read, as keyed digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    /// The policies this run was limited to (`--policy`), by name; empty: every policy of the
    /// policy files. A sharded run's shards must agree on it (`lapse report combine`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_policies: Vec<String>,
    /// Legal holds active at the start of the run (identifiers of held subjects are never
    /// included, only their number).
    pub holds: Vec<HoldInfo>,
    /// One entry per policy enforced (or planned).
    pub policies: Vec<PolicyReport>,
    /// Position in this report directory's chain of run reports (1 for the first).
    pub sequence: u64,
    /// The previous run report of the chain: its file name and SHA-256. Removing, altering or
    /// reordering reports breaks the chain.
    pub previous: Option<crate::integrity::ChainLink>,
    /// Set when this run signs and the previous report of the chain carries no signature by its
    /// key: written without signing, signed with another key (a rotation), or put there. This
    /// report links to it all the same (the chain stays whole) and says so, signed: `lapse
    /// report verify` with the right public keys tells which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_unverified: Option<String>,
    /// Identifies the Ed25519 key that signs this report (`<file>.sig`), when signing is on.
    pub signing_key_id: Option<String>,
    /// Per-record evidence, streamed to a JSON Lines file next to the report as batches commit.
    pub evidence: Option<EvidenceFile>,
    /// The evidence file could not be written to its end (a full volume, a file-size limit, an
    /// I/O error): batches committed after its last line are in the journal only. The next run
    /// that enforces the policy writes their lines from the journal (`reconciled_from` this run)
    /// and counts them in its `evidence_recovered` (not as destruction: counted here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evidence_incomplete: bool,
    /// Set when this report is one shard of a run split with `--shard index/count`; the shards'
    /// reports together (`lapse report combine`) account for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Evidence files of earlier runs that ended without a report of their own (killed, out of
    /// memory, a lost node), found in this report's directory by this run and accounted for here:
    /// their SHA-256 binds them into the chain. What such a run committed after its last
    /// evidence line is in its journal rows (SQL) or write-ahead intents (objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted_runs: Vec<InterruptedRun>,
}

/// The files a run read besides the policy files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Inputs {
    /// The worker config.
    pub config: KeyedDigest,
    /// The holds file (`holds_file`), when the config names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_file: Option<KeyedDigest>,
}

/// A file identified without its content being guessable from the report: a holds file names
/// data subjects and a config may hold credentials, so a plain digest would let a reader
/// confirm a guess of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyedDigest {
    /// The file as the run read it.
    pub path: String,
    /// HMAC-SHA256 with the evidence key of `"file" NUL <hex SHA-256 of its bytes>`, hex:
    /// whoever holds the evidence key and a file can tell whether it is the one read (`lapse
    /// report lookup` does for the holds file it answers from).
    pub hmac_sha256: String,
}

/// A run that ended without its report (killed, out of memory, a lost node), as its evidence
/// file shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InterruptedRun {
    /// The run's report name, as it would have been (`lapse-run-<started>-<run id prefix>.json`).
    pub report: String,
    /// Its evidence file as this run found it. A line the run was writing when it stopped, cut
    /// short, is part of the file's bytes but not counted as a record.
    pub evidence: EvidenceFile,
    /// Its records per policy and action (`deleted`, `anonymized`, `fields_anonymized`),
    /// from the whole lines it wrote of its own destructions.
    pub destroyed: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records per policy that it wrote `reconciled_from` an earlier interrupted run (destroyed
    /// by that run, not by this one; counted in `evidence.records`, not in `destroyed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reconciled: BTreeMap<String, u64>,
    /// Per policy (SQL), its lines that this run found in no batch of that run in the policy's
    /// journal table, where every committed batch records its records in its destroying
    /// transaction (lines of a batch the journal does not hold, or beyond what it journaled):
    /// not shown to be destructions of that run. A file that run did not write (planted where
    /// the reports are kept), or altered. Counted in `destroyed`, as the file has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unconfirmed: BTreeMap<String, u64>,
    /// The evidence key its records' hashes were made with, as that run noted it when it began
    /// (`.<evidence file>.key`): another than this report's means `lapse report lookup` must be
    /// given that key for them. Absent: not noted (a run of an earlier lapse), taken to be this
    /// report's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_key_id: Option<String>,
    /// Time of its first evidence line.
    pub first_at: Option<DateTime<Utc>>,
    /// Time of its last evidence line.
    pub last_at: Option<DateTime<Utc>>,
}

/// Which part of a sharded run a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShardInfo {
    /// 0-based shard index (a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`).
    pub index: u32,
    /// Number of shards of the run.
    pub count: u32,
}

/// The evidence file of a run: one [`Evidence`] line per destroyed record.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvidenceFile {
    /// File name, relative to the report.
    pub file: String,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
    /// Number of lines (records).
    pub records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    /// `lapse`.
    #[serde(deserialize_with = "interned")]
    pub name: Fixed,
    #[serde(deserialize_with = "interned")]
    pub version: Fixed,
}

/// A legal hold in force during the run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HoldInfo {
    /// The hold's id. `<table>.*` stands for every hold of a holds table; a hold of a holds
    /// table that kept records in the run is listed by its own id too, with its matter, where
    /// the connection names the table's matter column (its subjects, policies and expiry are in
    /// its rows: `subject_count` 0, `policies` empty and `expires` null here).
    pub id: String,
    /// The legal matter (case, inquiry) the hold serves.
    pub matter: String,
    /// `file` or `table:<connection>`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Number of data subjects the hold names (0: it holds whole policies).
    pub subject_count: usize,
    /// Policies the hold applies to (empty: every policy).
    pub policies: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
}

impl HoldInfo {
    /// The entry that stands for every hold of a holds table (`<table>.*`), not one hold.
    pub fn is_whole_table(&self) -> bool {
        self.source.starts_with("table:") && self.id.ends_with(".*")
    }

    /// Where the hold is kept, in words: "holds file", or "holds table of connection 'shop'"
    /// (`source` is `file` or `table:<connection>`; before, shown as written: "table:shop").
    pub fn source_words(&self) -> String {
        hold_source_words(&self.source)
    }
}

/// [`HoldInfo::source_words`] of a `source`.
pub fn hold_source_words(source: &str) -> String {
    match source.strip_prefix("table:") {
        Some(conn) => format!("holds table of connection '{conn}'"),
        None if source == "file" => "holds file".to_string(),
        None => source.to_string(),
    }
}

/// A purpose of a policy and when it lapses.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
pub struct PurposeInfo {
    pub name: String,
    /// `consent`, `contract`, `legal_obligation`, `vital_interests`, `public_task` or
    /// `legitimate_interests`.
    pub legal_basis: String,
    /// The retention period as written (`3 years`, `90d`).
    pub retain: String,
    /// The anchor column (or object fact) the period runs from.
    pub anchor: String,
    /// Anchors at or before this instant have lapsed.
    pub lapsed_if_anchor_before_or_at: Option<DateTime<Utc>>,
    /// The `when:` condition, if any.
    pub condition: Option<String>,
    /// Personal columns this purpose needs.
    pub covers: Vec<String>,
    /// `keep` (an unknown anchor never lapses) or `lapse`.
    pub null_anchor: String,
    /// Set when the purpose comes from another policy on the same table (keeping wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_policy: Option<String>,
}

/// How a personal column is destroyed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ColumnMethod {
    /// Category of personal data (`email`, `name`, `ip_address`, ...).
    pub category: String,
    /// The anonymization strategy, or `deleted with the record`.
    pub method: String,
    /// False for pseudonymization (linkable by the key holder).
    pub irreversible: bool,
}

/// One stage of a policy: the whole record, or a group of columns that lapse earlier.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
pub struct StageReport {
    /// `record` (every purpose lapsed) or `fields:<columns>` (field-level lapse).
    pub name: String,
    /// `deleted`, `anonymized` or `fields_anonymized`.
    pub action: String,
    pub columns: Vec<String>,
    /// Rows due when counted (holds excluded; objects found under Object Lock by a run's
    /// batches moved to held).
    pub due: u64,
    pub destroyed: u64,
    /// Rows already in their anonymized form.
    pub unchanged: u64,
    /// Rows that were selected but not destroyed: they stopped matching between selection and
    /// destruction (e.g. a hold arrived), or the database kept them (a trigger that skips the
    /// deletion of a row).
    pub skipped_concurrently: u64,
    pub batches: u64,
}

/// The guardrail: the largest share of a dataset one run may destroy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
pub struct Guardrail {
    pub max_share: f64,
    /// The largest share due in one stage.
    pub share: f64,
    pub tripped: bool,
    /// `--allow-share` exempted the policy for this run.
    pub overridden: bool,
}

/// How destruction was checked after commit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
pub struct Verification {
    pub method: String,
    /// Destroyed records re-checked.
    pub checked: u64,
    /// Re-checked records still found in their original form (0 when verified).
    pub still_present: u64,
    pub verified: bool,
}

impl Verification {
    /// `checked` more records re-checked, `still_present` of them found as before.
    pub fn add(&mut self, checked: usize, still_present: u64) {
        self.checked += checked as u64;
        self.still_present += still_present;
    }
}

/// One line of the evidence file: a destroyed record, identified by keyed hash.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// HMAC of the record key.
    pub record: String,
    /// HMAC of the data subject, when the dataset has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Objects whose subject is each version's own (metadata or tags): HMACs of the other
    /// subjects of the versions destroyed with it (`subject` is the newest version's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_subjects: Vec<String>,
    pub policy: String,
    /// `deleted`, `anonymized` or `fields_anonymized`; objects: `versions_deleted` for one some of
    /// whose versions were deleted before the storage refused another (kept, reported failed).
    pub action: String,
    pub stage: String,
    pub batch: u64,
    pub at: DateTime<Utc>,
    /// Objects: versions and delete markers removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<u64>,
    /// Objects: bytes reclaimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Set when the record was destroyed by an interrupted run (this run id) that was stopped
    /// before its evidence line, and this run records it here. Objects: the run recorded its
    /// write-ahead intent, and this run found the object gone (no version left); `at` is when it
    /// was found gone. SQL rows: the run's batch committed (its journal row, written in the
    /// destroying transaction); `at` is that commit, as the journal row gives it. `stage` and
    /// `batch` are the interrupted run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_from: Option<String>,
}

/// What one policy destroyed and kept.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
pub struct PolicyReport {
    pub name: String,
    /// The policy file.
    pub file: PathBuf,
    pub connection: String,
    pub table: String,
    /// What `table` names: `table` (a SQL table) or `objects` (a bucket or directory and prefix,
    /// whose records are objects). Empty in reports written before it was recorded: read as
    /// `table`.
    #[serde(default)]
    pub kind: String,
    /// `delete` or `anonymize`.
    pub action: String,
    pub legal_bases: Vec<String>,
    pub purposes: Vec<PurposeInfo>,
    /// Personal columns by name.
    pub columns: BTreeMap<String, ColumnMethod>,
    /// `done` (also when a hold keeps every record: they are counted in `held`), `failed`,
    /// `guardrail`, `stopped`
    /// (`--max-batches` ended a stage while rows may still be due), `interrupted` (a signal
    /// stopped the run during or before this policy: what is still due is left for the next
    /// run) or `planned`.
    pub outcome: String,
    pub rows_total: u64,
    /// Rows due, summed over stages (holds excluded). Objects: a run moves those it finds under
    /// Object Lock from due to held (a listing does not show the lock; a plan counts them due).
    pub rows_due: u64,
    pub deleted: u64,
    pub anonymized: u64,
    /// Field-level anonymizations: a kept record whose lapsed columns were anonymized, counted once
    /// per stage (a record whose fields lapse under two purposes, in two stages, counts twice).
    pub fields_anonymized: u64,
    /// Lapsed rows kept by a legal hold.
    pub held: u64,
    /// Lapsed rows kept, per hold id.
    pub held_by: BTreeMap<String, u64>,
    /// Rows kept because an anchor is unknown (NULL) and the purpose says `keep`.
    pub null_anchor_kept: u64,
    /// Lapsed rows kept because a `restrict` dependent still references them.
    pub blocked_by_dependents: u64,
    /// Objects whose facts (anchor, subject) could not be read, and a directory's files and
    /// directories whose names are not UTF-8 (no key names them): never destroyed.
    #[serde(default)]
    pub unreadable: u64,
    /// Objects kept because a version is under S3 Object Lock (also counted in `held`).
    #[serde(default)]
    pub held_by_storage: u64,
    /// Objects: versions and delete markers removed, and bytes reclaimed.
    #[serde(default)]
    pub versions_deleted: u64,
    #[serde(default)]
    pub bytes_reclaimed: u64,
    /// Rows of dependent tables deleted by cascade, per table.
    pub dependents_deleted: BTreeMap<String, u64>,
    /// Records destroyed by an interrupted run of this policy that its evidence lacks, recorded
    /// in this run's evidence (lines with `reconciled_from`): objects deleted after its
    /// write-ahead intent and found gone by this run, and rows of batches it committed (its
    /// journal rows) before it was killed, ahead of their evidence lines. Not counted in
    /// `deleted` or `anonymized`.
    #[serde(default)]
    pub reconciled: u64,
    /// `reconciled` per interrupted run id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reconciled_from: BTreeMap<String, u64>,
    /// Evidence lines this run wrote from the journal (`reconciled_from` that run) for records
    /// an earlier run destroyed and counted in its own report but could not write evidence for
    /// (its report says `evidence_incomplete`). Counted there, not destroyed here: not part of
    /// `reconciled`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evidence_recovered: u64,
    /// Rows whose batch failed.
    pub failed: u64,
    /// Time spent on the policy (counting, destroying, verifying), in seconds.
    #[serde(default)]
    pub duration_seconds: f64,
    pub stages: Vec<StageReport>,
    pub guardrail: Guardrail,
    pub verification: Verification,
    /// A few due records as keyed hashes (plan).
    pub sample: Vec<String>,
    pub errors: Vec<String>,
}

impl PolicyReport {
    /// The policy's records are objects of an object store.
    pub fn is_objects(&self) -> bool {
        self.kind == "objects"
    }

    /// Due records its batches selected and did not destroy: they stopped matching while their
    /// batch ran, or the database kept them (a trigger that skips a deletion). The next run
    /// looks at them again.
    pub fn skipped(&self) -> u64 {
        self.stages.iter().map(|s| s.skipped_concurrently).sum()
    }
}

/// Schema of a policy file digest (the report stores `crate::policy::PolicyFile`).
#[derive(Deserialize, JsonSchema)]
struct PolicyFileDigest {
    path: PathBuf,
    /// SHA-256 (hex) of the file's bytes.
    sha256: String,
}

fn policy_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PolicyFile>, D::Error> {
    let v = Vec::<PolicyFileDigest>::deserialize(d)?;
    Ok(v.into_iter().map(|f| PolicyFile { path: f.path, sha256: f.sha256 }).collect())
}

/// `&'static str` fields (schema version, tool name and version) read back from a file: each
/// distinct value is leaked once and shared, so reading many reports costs a few bytes in all.
fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<Fixed, D::Error> {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let s = String::deserialize(d)?;
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(x) = seen.get(s.as_str()) {
        return Ok(x);
    }
    let leaked: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(leaked);
    Ok(leaked)
}

/// The marker of an evidence file a report has accounted for as an interrupted run's
/// (`.<evidence file>.accounted`, holding that report's name).
fn accounted_marker(dir: &Path, evidence: &str) -> PathBuf {
    dir.join(format!(".{evidence}.accounted"))
}

/// The report that accounted for evidence file `evidence` of `dir` as an interrupted run's: the
/// one its marker names, if that report is there. (The marker is written before the report: a
/// run killed between the two leaves a marker naming a report that never appeared, and the
/// evidence is still to be accounted for.)
pub fn accounted_by(dir: &Path, evidence: &str) -> Option<String> {
    let named = std::fs::read_to_string(accounted_marker(dir, evidence)).ok()?;
    let named = named.trim();
    let plain = !named.is_empty() && !named.contains(['/', '\\']) && !named.starts_with('.');
    (plain && dir.join(named).is_file()).then(|| named.to_string())
}

/// An evidence file whose run ended without its report, held locked while the value lives.
pub struct Orphan {
    /// `<stem>.evidence.jsonl`
    pub name: String,
    /// `<stem>.json`, the report its run did not write.
    pub report: String,
    pub file: std::fs::File,
}

impl Orphan {
    /// The run's start (to the second) and the first 8 hex digits of its id, from the name.
    pub fn run(&self) -> Option<(DateTime<Utc>, &str)> {
        run_of(&self.report)
    }
}

/// A run report's start (to the second) and the first 8 hex digits of its run id, from its name
/// (`lapse-run-<start>-<id>.json`).
pub fn run_of(report: &str) -> Option<(DateTime<Utc>, &str)> {
    let rest = report.strip_prefix("lapse-run-")?.strip_suffix(".json")?;
    let (at, id) = rest.split_once('-')?;
    let at = chrono::NaiveDateTime::parse_from_str(at, "%Y%m%dT%H%M%SZ").ok()?.and_utc();
    Some((at, id))
}

/// The evidence files in `dir` of runs started at or after `since` (to the second, from their
/// names), whatever became of those runs, except `own_stem`'s: where lines a run wrote
/// `reconciled_from` an interrupted one can be.
pub fn run_evidence_since(dir: &Path, since: DateTime<Utc>, own_stem: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let crate::reporting::store::FileKind::Evidence { report } = crate::reporting::store::kind(&name) else {
                return None;
            };
            let (at, _) = run_of(&report)?;
            (at >= since && report.trim_end_matches(".json") != own_stem).then(|| e.path())
        })
        .collect();
    found.sort();
    found
}

/// The evidence files of `dir` whose run ended without writing its report, each locked; with
/// `accounted`, also those a report already accounted for (see [`unreported_evidence`]).
pub fn orphan_evidence(dir: &Path, own_stem: &str, accounted: bool) -> Vec<Orphan> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let crate::reporting::store::FileKind::Evidence { report } = crate::reporting::store::kind(&name) else {
            continue;
        };
        let stem = report.trim_end_matches(".json");
        // With `accounted` (the journal's reconciliation), a run that says its evidence was cut
        // short by a write error (its marker, [`mark_evidence_incomplete`]) leaves its file to
        // reconcile too (before, its journal-only records reached no evidence; found by a
        // read-only review). A marker, not the report read: every run would read every report.
        let done = |dir: &Path| {
            let reported = dir.join(&report).exists() && !(accounted && incomplete_marker(dir, &name).exists());
            reported || (!accounted && accounted_by(dir, &name).is_some())
        };
        if stem == own_stem || !stem.starts_with("lapse-run-") || done(dir) {
            continue;
        }
        let Ok(file) = std::fs::File::open(dir.join(&name)) else { continue };
        if file.try_lock().is_err() {
            continue; // a run still going on (or a file system without locks)
        }
        // Its run may have written its report between the test above and the lock.
        if done(dir) {
            continue;
        }
        found.push(Orphan { name, report, file });
    }
    found
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn key_marker(dir: &Path, evidence: &str) -> PathBuf {
    dir.join(format!(".{evidence}.key"))
}

/// Notes, before anything is destroyed, which evidence key the run's evidence file `evidence`
/// is hashed with: a run killed before its report leaves its file (and its journal's keyed
/// hashes) without a report to say it, and a later run may be given another key (found by a
/// read-only review: a run after a key change wrote the killed run's journal records, hashed
/// with the old key, into evidence under the new one, and `report lookup` answered "nothing
/// found" for them under either key). If it cannot be written, it is said.
pub fn mark_evidence_key(dir: &Path, evidence: &str, key_id: &str) {
    let marker = key_marker(dir, evidence);
    let wrote = std::fs::File::create(&marker).and_then(|mut f| {
        std::io::Write::write_all(&mut f, key_id.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = wrote {
        tracing::warn!(
            "cannot write '{}' ({e}): were this run killed before its report, its evidence key would not be known",
            marker.display()
        );
    }
}

/// The evidence key a run noted for its evidence file (`mark_evidence_key`), if it did.
pub fn evidence_key(dir: &Path, evidence: &str) -> Option<String> {
    let k = std::fs::read_to_string(key_marker(dir, evidence)).ok()?;
    let k = k.trim();
    (!k.is_empty()).then(|| k.to_string())
}

/// Removes the note of a run's evidence key once its report (which names the key) is written.
pub fn forget_evidence_key(dir: &Path, evidence: &str) {
    let _ = std::fs::remove_file(key_marker(dir, evidence));
}

fn incomplete_marker(dir: &Path, evidence: &str) -> PathBuf {
    dir.join(format!(".{evidence}.incomplete"))
}

/// Notes, before its report is written, that a run's evidence file `evidence` was cut short by
/// a write error ([`Report::evidence_incomplete`]): later runs reconcile it with the journal as
/// if its run had no report ([`orphan_evidence`]). If it cannot be written, it is said.
pub fn mark_evidence_incomplete(dir: &Path, evidence: &str) {
    let marker = incomplete_marker(dir, evidence);
    if let Err(e) = std::fs::File::create(&marker).and_then(|f| f.sync_all()) {
        tracing::error!(
            "cannot write '{}' ({e}): the batches after the evidence file's last line stay in the journal only",
            marker.display()
        );
    }
}

/// Evidence files in `dir` of runs that ended without writing their report: no report of
/// theirs, no report that accounted for them already (its marker), not this run's (`own_stem`),
/// and not locked by a run still going on (a run locks its evidence file before it appears; a
/// file that cannot be locked is left alone). Call with the chain locked (so that two runs never account for the same file),
/// after [`finish_interrupted_writes`]: a report write a killed run left that is still not
/// finished then (cut short, unsigned, or passed by the chain) never joins the chain, so its
/// evidence is accounted for here like that of a run killed earlier.
pub fn unreported_evidence(dir: &Path, own_stem: &str) -> Vec<InterruptedRun> {
    let mut found = Vec::new();
    for Orphan { name, report, file: f } in orphan_evidence(dir, own_stem, false) {
        let path = dir.join(&name);
        let mut run = InterruptedRun {
            report: report.clone(),
            evidence: EvidenceFile { file: name.clone(), sha256: String::new(), records: 0 },
            destroyed: BTreeMap::new(),
            reconciled: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            evidence_key_id: evidence_key(dir, &name),
            first_at: None,
            last_at: None,
        };
        // Streamed: an evidence file may hold millions of lines.
        let read = (|| -> std::io::Result<String> {
            use sha2::Digest;
            use std::io::BufRead;
            let mut r = std::io::BufReader::with_capacity(1 << 16, &f);
            let (mut hash, mut line) = (sha2::Sha256::new(), Vec::with_capacity(256));
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                hash.update(&line);
                if line.last() != Some(&b'\n') {
                    break; // cut short by the end of its run: bound by the hash, not a record
                }
                run.evidence.records += 1;
                let Ok(e) = serde_json::from_slice::<Evidence>(&line) else { continue };
                match e.reconciled_from {
                    Some(_) => *run.reconciled.entry(e.policy).or_default() += 1,
                    None => *run.destroyed.entry(e.policy).or_default().entry(e.action).or_default() += 1,
                }
                run.first_at = Some(run.first_at.map_or(e.at, |t| t.min(e.at)));
                run.last_at = Some(run.last_at.map_or(e.at, |t| t.max(e.at)));
            }
            Ok(hex::encode(hash.finalize()))
        })();
        match read {
            Ok(sha) => run.evidence.sha256 = sha,
            Err(e) => {
                tracing::warn!("cannot read the evidence file '{}' of a run without a report: {e}", path.display());
                continue;
            }
        }
        found.push(run);
    }
    found
}

/// The marker of the policies whose journal batches were reconciled with an interrupted run's
/// evidence file (`.<evidence file>.reconciled`, a policy name per line).
fn reconciled_marker(dir: &Path, evidence: &str) -> PathBuf {
    dir.join(format!(".{evidence}.reconciled"))
}

/// The policies whose journal was already reconciled with evidence file `evidence` of `dir`.
pub fn journal_reconciled(dir: &Path, evidence: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(reconciled_marker(dir, evidence))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Notes that `policy`'s journal was reconciled with evidence file `evidence` (see
/// [`journal_reconciled`]). If it cannot be written, the next run reconciles it again.
pub fn mark_journal_reconciled(dir: &Path, evidence: &str, policy: &str) {
    use std::io::Write as _;
    let marker = reconciled_marker(dir, evidence);
    let done = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&marker)
        .and_then(|mut f| f.write_all(format!("{policy}\n").as_bytes()).and_then(|()| f.sync_data()));
    if let Err(e) = done {
        tracing::warn!("cannot write '{}' ({e}): the next run reconciles it again", marker.display());
    }
}

/// Marks the evidence files `report` accounted for (see [`unreported_evidence`]), so that later
/// runs do not account for them again: each marker names `report_name`, the file the report is
/// about to be written as. Called before the report is written (a marker counts only once the
/// report it names is there, [`accounted_by`]): a run killed after its report, or whose report
/// write a later run finishes, has left its markers, so no later run accounts for the same
/// file again, and one killed before its report leaves markers that do not count. A file whose
/// marker cannot be written is taken out of the report (its marker removed), and the next run
/// accounts for it; only if the marker can be neither written nor removed does it stay in the
/// report, said (twice is better than never).
pub fn mark_accounted(dir: &Path, report: &mut Report, report_name: &str) {
    use std::io::Write as _;
    report.interrupted_runs.retain(|r| {
        let marker = accounted_marker(dir, &r.evidence.file);
        let written = std::fs::File::create(&marker)
            .and_then(|mut f| f.write_all(format!("{report_name}\n").as_bytes()).and_then(|()| f.sync_data()));
        let Err(e) = written else { return true };
        match std::fs::remove_file(&marker) {
            Err(gone) if gone.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "cannot write '{}' ({e}) nor remove it ({gone}): this report accounts for {}, and the next run may again",
                    marker.display(),
                    r.evidence.file
                );
                true
            }
            _ => {
                tracing::warn!(
                    "cannot write '{}' ({e}): {} is left for the next run to account for",
                    marker.display(),
                    r.evidence.file
                );
                false
            }
        }
    });
}

/// Finishes the report writes a killed run left half-done in `dir`. A report is written as
/// `.<stem>.json.sig.tmp` (its signature), `.<stem>.json.tmp` (the report), the CSV, then the
/// signature and the report renamed into place, in that order. A temporary report that is whole,
/// that its signature (final or temporary) signs with this signer's key (without a signer: an
/// unsigned one), and that is the chain's next link (its `previous` is the directory's newest run
/// report) takes its name, with its signature and CSV. Nothing is signed here: an unsigned
/// temporary report in a signed directory is left as it is (whoever can write to the directory
/// could have put it there), and so is one the chain has moved past (another run took its
/// sequence); `verify` names both. Call with the chain locked. Returns the reports finished.
pub fn finish_interrupted_writes(dir: &Path, signer: Option<&crate::integrity::Signer>) -> Vec<PathBuf> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return done };
    let mut pending: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_prefix('.')?.strip_suffix(".json.tmp")?;
            stem.starts_with("lapse-run-").then(|| (stem.to_string(), e.path()))
        })
        .collect();
    pending.sort();
    for (stem, path) in pending {
        let json = dir.join(format!("{stem}.json"));
        let sig = dir.join(format!("{stem}.json.sig"));
        let sig_tmp = dir.join(format!(".{stem}.json.sig.tmp"));
        if json.exists() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(report) = serde_json::from_slice::<Report>(&bytes) else { continue }; // cut short: not a report
        let signs = |path: &Path, k: &crate::integrity::Signer| {
            crate::integrity::signature_file_signs(&k.verifying_key(), &bytes, path)
        };
        let signed = match signer {
            Some(k) => signs(&sig, k) || signs(&sig_tmp, k),
            None => !sig.exists() && !sig_tmp.exists(),
        };
        if !signed {
            tracing::warn!(
                "{} is a temporary report this run cannot finish (no signature of it by this run's signing key); left as it is",
                path.display()
            );
            continue;
        }
        let head = crate::integrity::chain_head(dir).ok().flatten();
        let next = match (&report.previous, &head) {
            (Some(l), Some(h)) => l.file == h.file && l.sha256 == h.sha256 && report.sequence == h.sequence + 1,
            (None, None) => report.sequence == 1,
            _ => false,
        };
        if !next {
            tracing::warn!(
                "{} is a temporary report the chain has moved past (another run took its place); left as it is",
                path.display()
            );
            continue;
        }
        if signer.is_some() && !sig.exists() && std::fs::rename(&sig_tmp, &sig).is_err() {
            continue;
        }
        let csv = dir.join(format!("{stem}.csv"));
        let csv_tmp = dir.join(format!(".{stem}.csv.tmp"));
        if report.write_csv_synced(&csv_tmp).is_ok() {
            let _ = std::fs::rename(&csv_tmp, &csv);
        }
        if std::fs::rename(&path, &json).is_ok() {
            sync_dir(dir);
            done.push(json);
        }
    }
    done
}

/// Writes `bytes` to `path` and syncs them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it, synced, renamed
/// over it (`report render --out`: a render killed midway left a truncated certificate that
/// still opened: found by a review).
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_synced(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir);
    }
    Ok(())
}

/// Syncs a directory's entries (renames) to the disk; best effort (not every file system can).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Report {
    pub fn file_stem(&self) -> String {
        format!("lapse-{}-{}-{}", self.mode, self.started_at.format("%Y%m%dT%H%M%SZ"), &self.run_id[..8])
    }

    /// The link to this report as [`Report::write`] will write it (file name, SHA-256 of the
    /// JSON's exact bytes, sequence), hashed as it is serialized, never held whole.
    pub fn link(&self) -> anyhow::Result<crate::integrity::ChainLink> {
        use sha2::Digest;
        struct Hashing(sha2::Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.update(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(sha2::Sha256::new());
        serde_json::to_writer_pretty(&mut h, self)?;
        Ok(crate::integrity::ChainLink {
            file: format!("{}.json", self.file_stem()),
            sha256: hex::encode(h.0.finalize()),
            sequence: self.sequence,
        })
    }

    /// Writes `<stem>.json` (and `<stem>.json.sig` when a signer is given) and `<stem>.csv`
    /// into `dir`; returns the JSON path. The signature covers the exact bytes of the JSON file.
    pub fn write(&self, dir: &Path, signer: Option<&crate::integrity::Signer>) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create report directory '{}': {e}", dir.display()))?;
        let stem = self.file_stem();
        let json = dir.join(format!("{stem}.json"));
        let tmp = dir.join(format!(".{stem}.json.tmp"));
        let failed = |what: &Path, e: &dyn std::fmt::Display| {
            anyhow::anyhow!("the report was not written: writing '{}': {e}", what.display())
        };
        // Unsigned, the JSON goes straight to the file; signed, its bytes are kept for the
        // signature. Neither it nor the CSV is held in memory otherwise: with a count per hold
        // of the holds table, both grow with the holds. The signature first, under a temporary
        // name, then the report, then the renames (signature, report): a run killed before
        // them leaves a whole report and its signature, which the next run finishes
        // (`finish_interrupted_writes`) without signing anything itself.
        let sig = dir.join(format!("{stem}.json.sig"));
        let sig_tmp = dir.join(format!(".{stem}.json.sig.tmp"));
        let csv = dir.join(format!("{stem}.csv"));
        let csv_tmp = dir.join(format!(".{stem}.csv.tmp"));
        // A write that failed leaves no temporary file for a later run to take for a report.
        let clean = || {
            for t in [&sig_tmp, &tmp, &csv_tmp] {
                let _ = std::fs::remove_file(t);
            }
        };
        // Each file is synced before it is renamed, and the directory after: a power loss leaves
        // the old state or the new one, never an empty report under its final name.
        let written = match signer {
            Some(s) => serde_json::to_vec_pretty(self).map_err(|e| failed(&tmp, &e)).and_then(|bytes| {
                write_synced(&sig_tmp, s.sign(&bytes).as_bytes()).map_err(|e| failed(&sig_tmp, &e))?;
                write_synced(&tmp, &bytes).map_err(|e| failed(&tmp, &e))
            }),
            None => (|| -> std::io::Result<()> {
                let f = std::fs::File::create(&tmp)?;
                let mut w = std::io::BufWriter::new(&f);
                serde_json::to_writer_pretty(&mut w, self).map_err(std::io::Error::other)?;
                std::io::Write::flush(&mut w)?;
                drop(w);
                f.sync_all()
            })()
            .map_err(|e| failed(&tmp, &e)),
        };
        if let Err(e) = written {
            clean();
            return Err(e);
        }
        // The CSV is whole before the report appears: a report in the directory means its
        // companions are final.
        let csv_written =
            self.write_csv_synced(&csv_tmp).and_then(|()| std::fs::rename(&csv_tmp, &csv).map_err(anyhow::Error::from));
        if signer.is_some() {
            std::fs::rename(&sig_tmp, &sig).map_err(|e| failed(&sig, &e))?;
        }
        std::fs::rename(&tmp, &json).map_err(|e| failed(&json, &e))?;
        sync_dir(dir);
        csv_written.map_err(|e| {
            let _ = std::fs::remove_file(&csv_tmp);
            anyhow::anyhow!("the report '{}' was written, its CSV not: '{}': {e}", json.display(), csv.display())
        })?;
        Ok(json)
    }

    /// The CSV form, written to `path` and synced to the disk.
    fn write_csv_synced(&self, path: &Path) -> anyhow::Result<()> {
        let f = std::fs::File::create(path)?;
        self.csv_to(std::io::BufWriter::new(&f))?;
        f.sync_all()?;
        Ok(())
    }

    pub fn csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.csv_to(&mut out)?;
        Ok(out)
    }

    /// The CSV form of the report (a row per policy), written to `out`.
    pub fn csv_to<W: std::io::Write>(&self, out: W) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record([
            "run_id",
            "mode",
            "status",
            "cutoff",
            "policy",
            "connection",
            "table",
            "action",
            "legal_bases",
            "outcome",
            "rows_total",
            "rows_due",
            "deleted",
            "anonymized",
            "fields_anonymized",
            "held",
            "held_by",
            "null_anchor_kept",
            "blocked_by_dependents",
            "dependents_deleted",
            "failed",
            "guardrail_share",
            "guardrail_tripped",
            "verified",
            "reconciled",
            // Whether `--allow-share` let the policy past its guardrail (the JSON's
            // `guardrail.overridden`; found by a README walkthrough: not in the CSV).
            "guardrail_overridden",
            "evidence_recovered",
            // Run-level facts, the same on every row (the JSON's and the certificate's; a
            // review of the renderings found them missing here): whether the evidence file
            // was written to its end, whether the previous report of the chain carries this
            // run's signing key, the shard, and the interrupted runs this run accounted for,
            // with this policy's records in them (destroyed, and those its journal does not
            // confirm).
            "evidence_incomplete",
            "previous_unverified",
            "shard",
            "interrupted_runs",
            "interrupted_destroyed",
            "interrupted_unconfirmed",
        ])?;
        // `i of n`: a spreadsheet reads `1/4` as a date.
        let shard = self.shard.map(|s| format!("{} of {}", s.index, s.count)).unwrap_or_default();
        for p in &self.policies {
            // Written into one string, not a string per hold joined afterwards.
            let mut held_by = String::new();
            for (i, (k, v)) in p.held_by.iter().enumerate() {
                if i > 0 {
                    held_by.push(';');
                }
                let _ = write!(held_by, "{k}:{v}");
            }
            let held_by = spreadsheet_safe(held_by);
            let deps: Vec<String> = p.dependents_deleted.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            // Every text cell: a connection name is free text in the config, a policy name
            // may start with `-`, and a report read back may say anything.
            w.write_record([
                spreadsheet_safe(self.run_id.clone()),
                spreadsheet_safe(self.mode.clone()),
                spreadsheet_safe(self.status.clone()),
                self.cutoff.to_rfc3339(),
                spreadsheet_safe(p.name.clone()),
                spreadsheet_safe(p.connection.clone()),
                spreadsheet_safe(p.table.clone()),
                spreadsheet_safe(p.action.clone()),
                spreadsheet_safe(p.legal_bases.join(";")),
                spreadsheet_safe(p.outcome.clone()),
                p.rows_total.to_string(),
                p.rows_due.to_string(),
                p.deleted.to_string(),
                p.anonymized.to_string(),
                p.fields_anonymized.to_string(),
                p.held.to_string(),
                held_by,
                p.null_anchor_kept.to_string(),
                p.blocked_by_dependents.to_string(),
                spreadsheet_safe(deps.join(";")),
                p.failed.to_string(),
                format!("{:.4}", p.guardrail.share),
                p.guardrail.tripped.to_string(),
                p.verification.verified.to_string(),
                p.reconciled.to_string(),
                p.guardrail.overridden.to_string(),
                p.evidence_recovered.to_string(),
                self.evidence_incomplete.to_string(),
                self.previous_unverified.is_some().to_string(),
                shard.clone(),
                self.interrupted_runs.len().to_string(),
                self.interrupted_runs
                    .iter()
                    .filter_map(|i| i.destroyed.get(&p.name))
                    .flat_map(|by_action| by_action.values())
                    .sum::<u64>()
                    .to_string(),
                self.interrupted_runs.iter().filter_map(|i| i.unconfirmed.get(&p.name)).sum::<u64>().to_string(),
            ])?;
        }
        let mut out = w.into_inner().map_err(|e| anyhow::anyhow!("writing the CSV report: {}", e.error()))?;
        out.flush()?;
        Ok(())
    }
}
/// A CSV cell a spreadsheet will not run as a formula: text from a holds table or file (a hold
/// id) that starts with `=`, `+`, `-`, `@` or a control character is written after a `'`.
fn spreadsheet_safe(cell: String) -> String {
    // Each `;`-separated piece as a cell of its own: a spreadsheet set to a locale whose list
    // separator is `;` splits an unquoted cell there (a hold id `LH;=1+1` gave the formula
    // `=1+1`: found by a review).
    let guard = |piece: &str| match piece.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{piece}"),
        _ => piece.to_string(),
    };
    if !cell.contains(';') {
        return guard(&cell);
    }
    cell.split(';').map(guard).collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    /// A hold id such as `=HYPERLINK(…)` is not run by a spreadsheet opening the CSV.
    #[test]
    fn csv_cells_are_no_formulas() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"http://x/\")".into()), "'=HYPERLINK(\"http://x/\")");
        assert_eq!(spreadsheet_safe("LH;=1+1;x:3".into()), "LH;'=1+1;x:3");
        assert_eq!(spreadsheet_safe("a:1;b:2".into()), "a:1;b:2");
        for c in ["+1", "-1", "@SUM(A1)", "\tx"] {
            assert!(spreadsheet_safe(c.into()).starts_with('\''), "{c}");
        }
        assert_eq!(spreadsheet_safe("LH-1:3".into()), "LH-1:3");
    }
}
