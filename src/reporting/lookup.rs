//! `lapse report lookup`: was this subject (or record) destroyed, when and how — or is it held?
//!
//! The reports never store an identifier: evidence lines carry `HMAC-SHA256(evidence key, …)`.
//! With the evidence key from the worker config, the lookup recomputes the keyed hash of the
//! subject (or of the record key, which needs the policy's connection and table) and scans the
//! evidence files of the directory's run reports.
//!
//! Holds: reports record each hold by id, matter and *number* of subjects, never the subjects.
//! Whether a subject is held is therefore answered from the holds file named by the config (as
//! it is now); holds kept in a database table live in that table; and a hold that froze a whole
//! policy applies to every subject of it, which reports cannot tie to one subject. The answer
//! says which of these it could and could not check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::printable;
use super::store::{self, FileKind, ReportStore};
use crate::config::{self, Config};
use crate::diag::Diagnostics;
use crate::evidence::EvidenceKey;
use crate::holds::{self, Hold};
use crate::report::{Evidence, EvidenceFile};
use crate::value::Value;

/// The fields of a run report the lookup reads; tolerant of other fields and of reports written
/// by other versions.
#[derive(Debug, Deserialize)]
struct RunView {
    #[serde(default)]
    mode: Option<String>,
    run_id: String,
    started_at: DateTime<Utc>,
    #[serde(default)]
    sequence: u64,
    evidence_key_id: String,
    #[serde(default)]
    signing_key_id: Option<String>,
    /// The config and holds file it read (keyed digests; none in reports of earlier versions).
    #[serde(default)]
    inputs: Option<crate::report::Inputs>,
    #[serde(default)]
    evidence: Option<EvidenceFile>,
    #[serde(default)]
    holds: Vec<HoldView>,
    #[serde(default)]
    policies: Vec<PolicyView>,
    /// Evidence files of runs that ended without their report, accounted for (and bound by
    /// their SHA-256) by this report.
    #[serde(default)]
    interrupted_runs: Vec<InterruptedView>,
    /// The shard of a sharded run this report is (none: the whole run).
    #[serde(default)]
    shard: Option<crate::report::ShardInfo>,
}

#[derive(Debug, Deserialize)]
struct InterruptedView {
    report: String,
    evidence: EvidenceFile,
    #[serde(default)]
    unconfirmed: BTreeMap<String, u64>,
    /// The key its hashes were made with, when not the report's (`InterruptedRun::evidence_key_id`).
    #[serde(default)]
    evidence_key_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HoldView {
    id: String,
    matter: String,
    source: String,
    #[serde(default)]
    subject_count: usize,
    #[serde(default)]
    policies: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PolicyView {
    name: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    held_by: BTreeMap<String, u64>,
    #[serde(default)]
    columns: BTreeMap<String, ColumnView>,
    #[serde(default)]
    stages: Vec<StageView>,
}

#[derive(Debug, Deserialize)]
struct ColumnView {
    #[serde(default = "yes")]
    irreversible: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct StageView {
    name: String,
    #[serde(default)]
    columns: Vec<String>,
}

impl PolicyView {
    /// Records a stage of it anonymized are pseudonymized: a column it rewrote (the stage's, or
    /// every personal column for the whole record) is pseudonymized, which its key's holder can
    /// link (not anonymization; found by a review: lookup said DESTROYED).
    fn pseudonymizes(&self, stage: &str) -> bool {
        let columns = self.stages.iter().find(|s| s.name == stage).map(|s| &s.columns).filter(|c| !c.is_empty());
        match columns {
            Some(cs) => cs.iter().any(|c| self.columns.get(c).is_some_and(|m| !m.irreversible)),
            None => self.columns.values().any(|m| !m.irreversible),
        }
    }
}

/// What to look for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A data subject (the value of the policies' subject column).
    Subject(String),
    /// A record key (its column values, in key order) of one policy's dataset.
    Record { policy: String, key: Vec<String> },
}

/// What the config provides: the evidence key, the holds file, the datasets of the policies.
pub struct Context {
    pub key: EvidenceKey,
    pub holds: Vec<Hold>,
    pub holds_file: Option<PathBuf>,
    /// The holds file's keyed digest as it is now (`report::Inputs`), to tell whether the runs
    /// read the same file.
    pub holds_digest: Option<String>,
    /// Policy name → (connection, table) of the current policy files.
    pub datasets: BTreeMap<String, (String, String)>,
    /// Policy name → the number of its key columns (current policy files).
    pub key_columns: BTreeMap<String, usize>,
    /// The config names a holds file that could not be read whole (missing, or invalid): no
    /// answer can then be "no hold names it".
    pub holds_unreadable: bool,
    /// Problems that limit the answer (an unreadable holds file, invalid policies).
    pub warnings: Vec<String>,
    /// The holds of the databases' holds tables that name the subject (`--connect`,
    /// [`table_holds`]); `None`: not asked.
    pub table_holds: Option<Vec<TableHold>>,
}

/// A hold of a database's holds table in force now that holds the subject's records, as
/// [`table_holds`] finds it.
#[derive(Debug, Clone)]
pub struct TableHold {
    pub connection: String,
    pub id: String,
    /// Its matter (the table's `matter` column, where the config names it).
    pub matter: Option<String>,
    /// The policies whose records of the subject it holds.
    pub policies: Vec<String>,
    /// Its row names no subject: every subject of its policies.
    pub every_subject: bool,
    /// An object policy's hold of every subject (or of a policy without subjects): whether the
    /// subject has objects there is not known, so it answers nothing either way.
    pub records_unknown: bool,
}

/// The holds in force now of the holds tables of `conns` (`Workspace::open_holds_tables`) that
/// hold a record of `subject` (`report lookup --connect`: reports record holds by id and
/// count, never by subject), found as the runs find them:
/// - a SQL policy's, by the database, in its connection's holds table: the policy's records
///   whose subject is `subject` (compared as a holds-file subject is), joined with the holds
///   as the destroying statements join them, the database's types, affinity and collation
///   included (before, a Rust comparison of the texts answered NOTHING FOUND for a subject
///   that `7e0`, an accent or a case held in the database: found by a review). A subject
///   without records there is held by nothing there;
/// - an object policy's, in every holds table, as its runs compare them
///   (`FileHold::holds_any_of`).
pub async fn table_holds(
    policies: &[crate::policy::Policy],
    conns: &crate::engine::Connections,
    subject: &str,
) -> anyhow::Result<Vec<TableHold>> {
    use crate::connector::{FileHold, Filter, HoldScope, Scope, Work, LOOKUP_PROBE};
    let now = Utc::now();
    let keys = holds::subject_keys(subject);
    let mut out: Vec<TableHold> = Vec::new();
    for (name, conn) in conns {
        let Some(ht) = conn.holds_table().cloned() else { continue };
        // By id, and apart whether it holds the subject's records or, unknown to lookup, every
        // record of a policy (merged, the first made the second HELD too).
        let mut found: BTreeMap<(String, bool), TableHold> = BTreeMap::new();
        let mut hold = |id: &str, policy: &str, every: bool, unknown: bool| {
            let t = found.entry((id.to_string(), unknown)).or_insert_with(|| TableHold {
                connection: name.clone(),
                id: id.to_string(),
                matter: None,
                policies: vec![],
                every_subject: every,
                records_unknown: unknown,
            });
            if !t.policies.iter().any(|p| p == policy) {
                t.policies.push(policy.to_string());
            }
            t.every_subject |= every;
        };
        for p in policies.iter().filter(|p| p.objects.is_none() && p.connection == *name) {
            let Some(column) = p.subject.clone() else {
                // A policy without a subject column cannot tell a subject's records: a hold
                // naming it keeps all of them, whether this subject has any there is not known
                // (before, such holds were left out without a word: found by a review).
                for h in conn.holds_in_force(std::slice::from_ref(&p.name), now, true).await? {
                    if h.whole_policy {
                        hold(&h.id, &p.name, true, true);
                    }
                }
                continue;
            };
            let table = conn.describe(&p.table).await?;
            // The subject typed as the engine types a holds-file subject for this column (a
            // uuid in the database's spelling: asked in capitals, it found nothing; found by a
            // review).
            let mut values = crate::engine::typed_subject(subject, &table, Some(&column), conn.keeps_any_type());
            if values.is_empty() {
                values.push(Value::Text(subject.to_string()));
            }
            // The policies whose holds keep this policy's records, as the run asks them.
            let sharing: Vec<String> = p.hold_policies().into_iter().map(str::to_string).collect();
            let scope = Scope {
                policy: p.name.clone(),
                table,
                key: p.key.clone(),
                subject: Some(column),
                lapse: Filter::True,
                whole_lapse: Filter::True,
                work: Work::Delete,
                holds: HoldScope {
                    policies: sharing,
                    file: vec![FileHold::new(LOOKUP_PROBE.into(), values, false)],
                    table: Some(ht.clone()),
                    tables: vec![],
                    now,
                },
                restrict: vec![],
                cascade: vec![],
                pseudonym_key: None,
                objects: None,
            };
            for (id, every) in conn.table_holds_of(&scope).await? {
                hold(&id, &p.name, every, false);
            }
        }
        for p in policies.iter().filter(|p| p.objects.is_some()) {
            let subjectless = p.subject.is_none();
            for h in conn.holds_in_force(std::slice::from_ref(&p.name), now, subjectless).await? {
                if h.whole_policy {
                    hold(&h.id, &p.name, true, true);
                } else if h.holds_any_of(&keys) {
                    hold(&h.id, &p.name, false, false);
                }
            }
        }
        if found.is_empty() {
            continue;
        }
        for (id, matter) in conn.hold_matters(now).await? {
            for unknown in [false, true] {
                if let Some(t) = found.get_mut(&(id.clone(), unknown)) {
                    t.matter = Some(matter.clone());
                }
            }
        }
        out.extend(found.into_values());
    }
    Ok(out)
}

impl Context {
    /// Reads the worker config. An invalid config is an error (its diagnostics); an invalid
    /// policy or holds file only limits the answer.
    pub fn load(config_path: &Path) -> Result<Context, Diagnostics> {
        let mut d = Diagnostics::default();
        let Some(cfg) = Config::load(config_path, &mut d) else { return Err(d) };
        let key = match config::read_secret(&cfg.evidence, &cfg.base_dir, "evidence key") {
            Ok(k) => EvidenceKey::new(k),
            Err(e) => {
                d.push(crate::diag::Diagnostic::error(format!("{e:#}")).in_file(config_path));
                return Err(d);
            }
        };
        let mut warnings = Vec::new();
        let mut pd = Diagnostics::default();
        let set = crate::policy::load_dir(&cfg.resolve(&cfg.policies), &mut pd);
        if pd.has_errors() {
            warnings.push(format!(
                "the policy files have {} error(s) (run lapse validate); datasets are taken from the reports",
                pd.errors().count()
            ));
        }
        let datasets = set.policies.iter().map(|p| (p.name.clone(), (p.connection.clone(), p.table.clone()))).collect();
        let key_columns = set.policies.iter().map(|p| (p.name.clone(), p.key.len())).collect();
        let holds_file = cfg.holds_file.as_ref().map(|f| cfg.resolve(f));
        let mut holds_digest = None;
        let mut holds_unreadable = false;
        let holds = match &holds_file {
            Some(f) => {
                let mut hd = Diagnostics::default();
                let (h, sha256) = holds::load(f, &mut hd);
                holds_digest = sha256.map(|s| key.file_digest(&s));
                if hd.has_errors() {
                    holds_unreadable = true;
                    warnings.push(format!(
                        "the holds file {} cannot be read whole (run lapse validate): holds that could not be read were not checked",
                        f.display()
                    ));
                }
                h
            }
            None => Vec::new(),
        };
        Ok(Context {
            key,
            holds,
            holds_file,
            holds_digest,
            datasets,
            key_columns,
            holds_unreadable,
            warnings,
            table_holds: None,
        })
    }
}

/// A destroyed record of the subject (or the record looked up).
#[derive(Debug, Clone, Serialize)]
pub struct Destroyed {
    pub at: DateTime<Utc>,
    pub policy: String,
    /// `deleted`, `anonymized` or `fields_anonymized`.
    pub action: String,
    pub stage: String,
    pub batch: u64,
    pub run_id: String,
    pub report: String,
    /// The record's keyed hash.
    pub record: String,
    /// Anonymized with a pseudonym among its values (`pseudonymize`): not anonymization, its
    /// key's holder can link it.
    pub pseudonymized: bool,
}

/// A hold of the holds file that names the subject.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBy {
    pub hold: String,
    /// `file` (the holds file) or `table:<connection>` (its holds table, with `--connect`).
    pub source: String,
    pub matter: String,
    pub reason: Option<String>,
    /// Empty: every policy.
    pub policies: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
    /// In force now.
    pub active: bool,
    /// The hold names the subject as it was asked for (or with surrounding spaces); false: as
    /// another spelling of the same number or uuid (`017` for `17`), which holds it where the
    /// subject column is numeric (or a uuid) but not in a text column: no answer then.
    pub exact: bool,
    /// Runs in which this hold kept lapsed records (of any of its subjects).
    pub kept_in: Vec<KeptIn>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeptIn {
    pub run_id: String,
    pub report: String,
    pub started_at: DateTime<Utc>,
    pub policy: String,
    /// Lapsed records the hold kept in that run, for all its subjects together.
    pub records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// `subject` or `record of policy <name>`.
    pub target: String,
    /// The keyed hashes searched for.
    pub hashes: Vec<String>,
    pub evidence_key_id: String,
    pub run_reports: usize,
    pub evidence_records_scanned: u64,
    pub destroyed: Vec<Destroyed>,
    /// Lines found only in evidence files no report accounts for (a run killed before its
    /// report, whose next run of the policy checks them against its journal and accounts for
    /// them; or a file put there), or, with `--public-key`, accounted for only by reports whose
    /// signature does not verify: nothing signed vouches for them, so they are no answer.
    pub unconfirmed: Vec<Destroyed>,
    pub held: Vec<HeldBy>,
    /// What the reports cannot tell about this target, and where to look instead.
    pub cannot_answer: Vec<String>,
    pub warnings: Vec<String>,
    /// Destroyed or held.
    pub found: bool,
    /// Evidence files of the reports that could not be read: with nothing found, the question
    /// is not answered (exit 2, not 5).
    pub evidence_unreadable: usize,
    /// Key ids of the public keys the reports' signatures were checked with (`--public-key`);
    /// empty: not checked.
    pub signatures_checked_with: Vec<String>,
    /// Run reports whose signature did not verify with those keys (their evidence: `unconfirmed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports_unsigned: Vec<String>,
    /// Whether the holds file as it is now is, byte for byte, the one the newest run read (by
    /// its keyed digest in that run's report); none: not known (no holds file, or no report
    /// recording it).
    pub holds_file_unchanged: Option<bool>,
    /// The config's holds file could not be read whole: with nothing found, the question is not
    /// answered (exit 2, not 5).
    pub holds_unreadable: bool,
    /// The reports searched are those of one shard of a sharded run (`shard i of n`): with
    /// nothing found, the question is not answered (exit 2, not 5): another shard may have
    /// destroyed it (before, "NOTHING FOUND"; found by a review).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_only: Option<String>,
    /// The holds tables were asked whether a hold holds the subject (`--connect`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub holds_tables_asked: bool,
    /// A hold of a holds table freezes every record of a policy whose records of this subject
    /// lookup cannot tell (an object policy's hold of every subject, a hold of a policy without
    /// subjects): with nothing found, the question is not answered (exit 2, not 5).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub table_holds_unknown: bool,
}

/// The runs in which a hold kept records, a line each.
fn kept_lines(s: &mut String, kept_in: &[KeptIn]) {
    for k in kept_in {
        s.push_str(&format!(
            "    kept {} lapsed record(s) of policy {} (all its subjects together) in run {} on {}\n",
            k.records,
            printable(&k.policy),
            printable(short(&k.run_id)),
            k.started_at.format("%Y-%m-%d")
        ));
    }
}

/// The spellings a value may have been recorded under: as given, without surrounding spaces,
/// and, for a uuid, as databases write one (lower case, hyphens). Not a number's other
/// spellings: `042` is not `42` in a text column, and another person's record would answer
/// (an integer column's `42` hashes as the text `42`).
///
/// A value written as bytes — a uuid, or hex after `0x` or `\x` (as holds name a binary
/// subject, `engine::binary_subject`) — is also tried as a binary column's value is recorded:
/// its bytes in lower-case hex (`Value::canonical`), and, where they are UTF-8, as that text
/// (MariaDB's binary columns are read as text when they are). Bare hex is not: `CAFE` and
/// `cafe` are two subjects of a text column.
fn spellings(id: &str) -> Vec<String> {
    let mut v = vec![id.to_string(), id.trim().to_string()];
    let t = id.trim();
    let bytes = match uuid::Uuid::parse_str(t) {
        Ok(u) => {
            v.push(u.hyphenated().to_string());
            Some(u.as_bytes().to_vec())
        }
        Err(_) => t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .or_else(|| t.strip_prefix("\\x"))
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| !b.is_empty()),
    };
    if let Some(b) = bytes {
        v.push(hex::encode(&b));
        if let Ok(text) = String::from_utf8(b) {
            v.push(text);
        }
    }
    // A date-time, as a timestamp column's value is recorded (`Value::canonical`: `T`, the
    // fraction in whole milli-, micro- or nanoseconds, UTC): `2024-01-02 03:04:05` as the
    // database prints it found nothing (found by a read-only review).
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .or_else(|| chrono::DateTime::parse_from_rfc3339(t).ok().map(|d| d.naive_utc()))
        .or_else(|| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z").ok().map(|d| d.naive_utc()));
    if let Some(d) = naive {
        v.push(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
    }
    v.sort();
    v.dedup();
    v
}

/// `--key`'s values: separated by commas, a comma inside a value written `\\,` and a
/// backslash before a comma `\\\\` (a key's values are anything a column holds).
pub fn key_parts(arg: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            // Any other backslash is itself (a value like `C:\\dir`).
            '\\' => {
                let part = parts.last_mut().expect("one part at least");
                match chars.next() {
                    Some(n @ (',' | '\\')) => part.push(n),
                    Some(n) => {
                        part.push('\\');
                        part.push(n);
                    }
                    None => part.push('\\'),
                }
            }
            ',' => parts.push(String::new()),
            c => parts.last_mut().expect("one part at least").push(c),
        }
    }
    parts
}

/// The keyed hashes a subject may have been recorded under (see `spellings`).
pub fn subject_hashes(key: &EvidenceKey, id: &str) -> Vec<String> {
    let mut v: Vec<String> = spellings(id).into_iter().map(|s| key.subject(&Value::Text(s))).collect();
    v.sort();
    v.dedup();
    v
}

/// The keyed hashes of a record key in each candidate dataset, trying each key part's
/// spellings (see `spellings`).
pub fn record_hashes(key: &EvidenceKey, datasets: &BTreeSet<(String, String)>, parts: &[String]) -> Vec<String> {
    let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
    for p in parts {
        let forms: Vec<Value> = spellings(p).into_iter().map(Value::Text).collect();
        combos = combos
            .into_iter()
            .flat_map(|c| {
                forms.iter().map(move |f| {
                    let mut c = c.clone();
                    c.push(f.clone());
                    c
                })
            })
            .take(256)
            .collect();
    }
    let mut v: Vec<String> =
        datasets.iter().flat_map(|(c, t)| combos.iter().map(move |k| key.record(c, t, k))).collect();
    v.sort();
    v.dedup();
    v
}

/// Looks `target` up in the run reports of `st`.
/// `keys`: public keys to check each run report's signature (`<report>.sig`) with; when given,
/// what a report that no key's signature vouches for says is no answer (`unconfirmed`), as
/// evidence no report accounts for. Empty: reports are read as they are (the answer says so).
pub fn lookup(
    st: &dyn ReportStore,
    ctx: &Context,
    target: &Target,
    only_policy: Option<&str>,
    keys: &[ed25519_dalek::VerifyingKey],
) -> anyhow::Result<Answer> {
    let key_id = ctx.key.key_id();
    let mut warnings = ctx.warnings.clone();
    let mut reports: Vec<(String, RunView)> = Vec::new();
    // Run reports no given key's signature vouches for (with `keys` only).
    let mut unsigned: BTreeSet<String> = BTreeSet::new();
    // Evidence not searched (a report or evidence file unreadable, altered or cut short).
    let mut evidence_unreadable = 0usize;
    let listed = st.list()?;
    for name in &listed {
        if store::kind(name) != FileKind::Report || !name.starts_with("lapse-run-") {
            continue;
        }
        let parsed = st.read(name).map_err(anyhow::Error::from).and_then(|b| {
            let r = serde_json::from_slice::<RunView>(&b)?;
            Ok((b, r))
        });
        match parsed {
            Ok((_, r)) if r.mode.as_deref().is_some_and(|m| m != "run") => {
                // A plan report renamed: it destroyed nothing and holds no evidence.
                warnings.push(format!(
                    "{name}: named as a run report but it is a {} report (renamed?): skipped; run `lapse report verify`",
                    r.mode.as_deref().unwrap_or_default()
                ));
            }
            Ok((bytes, r)) => {
                if !keys.is_empty() {
                    let sig = st.read(&format!("{name}.sig")).map(|s| String::from_utf8_lossy(&s).into_owned());
                    let signed =
                        sig.is_ok_and(|s| keys.iter().any(|k| crate::integrity::check_signature(k, &bytes, &s)));
                    if !signed {
                        warnings.push(format!(
                            "{name}: its signature is missing or does not verify with the given public key{} (the report names signing key {}): what its evidence says is unconfirmed; run `lapse report verify`",
                            if keys.len() == 1 { "" } else { "s" },
                            r.signing_key_id.as_deref().unwrap_or("none")
                        ));
                        unsigned.insert(name.clone());
                    }
                }
                reports.push((name.clone(), r))
            }
            Err(e) => {
                warnings.push(format!("{name}: not readable as a report ({e}); skipped"));
                // Its evidence is not searched: no answer can be "nothing".
                evidence_unreadable += 1;
            }
        }
    }
    // Run evidence files with the report each belongs to.
    let evidence: Vec<(&String, String)> = listed
        .iter()
        .filter(|n| n.starts_with("lapse-run-"))
        .filter_map(|n| match store::kind(n) {
            FileKind::Evidence { report } => Some((n, report)),
            _ => None,
        })
        .collect();
    if reports.is_empty() && evidence.is_empty() {
        // Nothing to search is no answer (exit 2), not "nothing found" (5). (A first run killed
        // before its report left its evidence: that is searched.)
        anyhow::bail!(
            "no run report here to search (each shard of a sharded deployment keeps its reports in a shard-<i>-of-<n> directory of its own: look up in each)"
        );
    }
    reports.sort_by_key(|(_, r)| (r.sequence, r.started_at));
    // Each policy's datasets (connection, table): the policy files' and, for a policy since
    // renamed or removed, the reports'.
    let mut datasets: BTreeMap<&str, BTreeSet<(String, String)>> = BTreeMap::new();
    for (name, d) in &ctx.datasets {
        datasets.entry(name.as_str()).or_default().insert(d.clone());
    }
    for (_, r) in &reports {
        for p in r.policies.iter().filter(|p| !p.table.is_empty()) {
            datasets.entry(p.name.as_str()).or_default().insert((p.connection.clone(), p.table.clone()));
        }
    }
    // A policy of the same table as the one asked about destroys and holds its records too
    // (holds are shared as purposes are; two policies of one table find the same rows due, and
    // which destroys a row depends on which ran first).
    let shares = |asked: &str, other: &str| {
        asked == other || datasets.get(asked).zip(datasets.get(other)).is_some_and(|(a, b)| !a.is_disjoint(b))
    };
    let asked_policy = match target {
        Target::Subject(_) => only_policy,
        Target::Record { policy, .. } => Some(policy.as_str()),
    };
    if let Some(policy) = asked_policy {
        if !datasets.contains_key(policy) && !reports.iter().any(|(_, r)| r.policies.iter().any(|p| p.name == policy)) {
            anyhow::bail!(
                "policy '{policy}' is neither in the policy files nor in any run report here{}",
                if matches!(target, Target::Record { .. }) {
                    ": its connection and table (part of the record hash) are unknown"
                } else {
                    ""
                }
            );
        }
    }
    // A report no given key signed: what its evidence says is unconfirmed, and what it does not
    // say is no answer either (a line taken out of it, its digest rewritten, reads the same).
    evidence_unreadable += reports.iter().filter(|(n, r)| unsigned.contains(n) && r.evidence_key_id == key_id).count();
    let other_key: Vec<&str> =
        reports.iter().filter(|(_, r)| r.evidence_key_id != key_id).map(|(n, _)| n.as_str()).collect();
    if !other_key.is_empty() {
        // Not searched (their hashes cannot match): the record sought may be among them.
        evidence_unreadable += other_key.len();
        warnings.push(format!(
            "{} report(s) were written with another evidence key than the configured one ({key_id}), so their hashes cannot match: {}",
            other_key.len(),
            other_key.join(", ")
        ));
    }
    let (label, hashes) = match target {
        Target::Subject(id) => ("subject".to_string(), subject_hashes(&ctx.key, id)),
        Target::Record { policy, key } => {
            let ds = datasets.get(policy.as_str()).cloned().unwrap_or_default();
            if ds.is_empty() {
                anyhow::bail!(
                    "policy '{policy}' names no table in the policy files or the run reports here: its connection and table (part of the record hash) are unknown"
                );
            }
            let hashes = match ctx.key_columns.get(policy) {
                // A single-column key given with a comma in it (split by `--key`'s
                // comma-separated form): the whole, as typed.
                Some(1) => record_hashes(&ctx.key, &ds, &[key.join(",")]),
                Some(&n) if n != key.len() => anyhow::bail!(
                    "policy '{policy}' has a key of {n} columns; --key gave {} value(s) (separate them with commas; write a comma inside a value as \\,)",
                    key.len()
                ),
                Some(_) => record_hashes(&ctx.key, &ds, key),
                // A policy no longer in the policy files: the parts as given, and the whole.
                None => {
                    let mut h = record_hashes(&ctx.key, &ds, key);
                    if key.len() > 1 {
                        h.extend(record_hashes(&ctx.key, &ds, &[key.join(",")]));
                        h.sort();
                        h.dedup();
                    }
                    h
                }
            };
            (format!("record of policy {policy}"), hashes)
        }
    };
    // Not only the evidence of the policy asked about: a record's hash names its dataset, and
    // another policy of the same table may have destroyed the record (or the subject's).
    let policy_filter = match target {
        Target::Subject(_) => only_policy,
        Target::Record { .. } => None,
    };
    let wanted: BTreeSet<&str> = hashes.iter().map(String::as_str).collect();
    let mut destroyed = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut scanned = 0u64;
    // What to search: the evidence of every run report with this key, then evidence files no
    // report names: a run killed before its report (its batches' records are in its journal
    // table; its evidence file is the only record a lookup here can read), searched too, never
    // taken for "nothing found".
    struct Source<'a> {
        file: String,
        run_id: String,
        report: String,
        /// The report's SHA-256 of the file (none: no report names it).
        sha256: Option<&'a str>,
        /// Per policy, lines of it the journal did not hold (`InterruptedRun::unconfirmed`).
        unconfirmed: Option<&'a BTreeMap<String, u64>>,
        /// The report naming it is signed by a given key, or no keys were given.
        vouched: bool,
        /// The policies of the report that names it.
        policies: &'a [PolicyView],
    }
    let mut sources: Vec<Source> = reports
        .iter()
        .filter(|(_, r)| r.evidence_key_id == key_id)
        .filter_map(|(name, r)| {
            r.evidence.as_ref().map(|ev| Source {
                file: ev.file.clone(),
                run_id: r.run_id.clone(),
                report: name.clone(),
                sha256: Some(ev.sha256.as_str()),
                unconfirmed: None,
                vouched: !unsigned.contains(name),
                policies: &r.policies,
            })
        })
        .collect();
    // Evidence files of runs killed before their report, which a later report accounted for:
    // bound by that report's SHA-256 like its own evidence (an altered or missing one is no
    // answer, not "nothing found").
    // Searched under the key its run noted (a run killed before a change of key; before, taken
    // for the accounting report's, and its records were found under neither; found by a review).
    for (name, r) in &reports {
        for i in &r.interrupted_runs {
            let theirs = i.evidence_key_id.as_deref().unwrap_or(&r.evidence_key_id);
            if theirs != key_id {
                if r.evidence_key_id == key_id {
                    evidence_unreadable += 1;
                    warnings.push(format!(
                        "{} (of a run killed before its report, accounted for by {name}) was written with evidence key {theirs}, not the configured one ({key_id}): not searched; look it up with that key",
                        i.evidence.file
                    ));
                }
                continue;
            }
            sources.push(Source {
                file: i.evidence.file.clone(),
                run_id: format!("(the run of {}, killed before its report)", i.report.trim_end_matches(".json")),
                report: format!("{name}, which accounts for it"),
                sha256: Some(i.evidence.sha256.as_str()),
                unconfirmed: Some(&i.unconfirmed),
                vouched: !unsigned.contains(name),
                policies: &r.policies,
            });
        }
    }
    let named: BTreeSet<String> = reports
        .iter()
        .flat_map(|(_, r)| {
            r.evidence.iter().map(|e| e.file.clone()).chain(r.interrupted_runs.iter().map(|i| i.evidence.file.clone()))
        })
        .collect();
    for (name, report) in evidence.iter().filter(|(n, _)| !named.contains(*n)) {
        let stem = report.trim_end_matches(".json");
        // Its report may be here all the same: unreadable, or naming no evidence (the file could
        // not be read back when the report was written).
        let (why, run) = match (listed.contains(report), reports.iter().find(|(n, _)| n == report)) {
            (_, Some((_, r))) if r.evidence_key_id != key_id => continue, // another key: counted above
            (_, Some(_)) => ("its report names no evidence file", "whose report names no evidence file"),
            (true, None) => ("its report cannot be read", "whose report cannot be read"),
            (false, None) => ("a run that wrote no report (killed, or still running)", "which wrote no report"),
        };
        warnings.push(format!(
            "{name}: the evidence of {why}: searched too, but no report accounts for it (the next run of its policies checks it against their journal table and accounts for it): what it says is unconfirmed"
        ));
        sources.push(Source {
            file: name.to_string(),
            run_id: format!("(the run of {stem}, {run})"),
            report: "(none)".into(),
            sha256: None,
            unconfirmed: None,
            vouched: false,
            policies: &[],
        });
    }
    for src in &sources {
        let reader = match st.open(&src.file) {
            Ok(x) => x,
            Err(e) => {
                warnings.push(format!("{}: evidence of {} cannot be read ({e}); skipped", src.file, src.report));
                evidence_unreadable += 1;
                continue;
            }
        };
        let mut hash = Sha256::new();
        let mut bad = 0u64;
        let mut hits: Vec<Destroyed> = Vec::new();
        // The file's bytes as they are hashed (a killed run's file may end in a line cut short,
        // which its accounting report's SHA-256 covers and which is no record).
        let mut reader = reader;
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| anyhow::anyhow!("reading evidence file {}: {e}", src.file))?;
            if read == 0 {
                break;
            }
            hash.update(&line);
            let whole = line.last() == Some(&b'\n');
            scanned += 1;
            let Ok(e) = serde_json::from_slice::<Evidence>(line.strip_suffix(b"\n").unwrap_or(&line)) else {
                if whole {
                    bad += 1;
                }
                continue;
            };
            if policy_filter.is_some_and(|p| !shares(p, &e.policy)) {
                continue;
            }
            let hit = match target {
                Target::Subject(_) => {
                    e.subject.as_deref().is_some_and(|s| wanted.contains(s))
                        || e.other_subjects.iter().any(|s| wanted.contains(s.as_str()))
                }
                Target::Record { .. } => wanted.contains(e.record.as_str()),
            };
            if hit {
                if let Some(n) = src.unconfirmed.and_then(|u| u.get(&e.policy)) {
                    warnings.push(format!(
                        "{}: {} ({n} of its lines of {} are in no batch its journal holds): this record's line may not be a destruction by that run",
                        src.file, src.report, e.policy
                    ));
                }
                // Kept apart until the file's digest is known: a line added to a signed
                // report's evidence file is no destruction that report vouches for.
                let pseudonymized = e.action != "deleted"
                    && src.policies.iter().find(|p| p.name == e.policy).is_some_and(|p| p.pseudonymizes(&e.stage));
                hits.push(Destroyed {
                    pseudonymized,
                    at: e.at,
                    policy: e.policy,
                    action: e.action,
                    stage: e.stage,
                    batch: e.batch,
                    // An object an interrupted run deleted, found gone by this one: that run
                    // destroyed it (the time is when it was found gone).
                    run_id: e.reconciled_from.unwrap_or_else(|| src.run_id.clone()),
                    report: src.report.clone(),
                    record: e.record,
                });
            }
        }
        let intact = match src.sha256 {
            Some(sha) => bad == 0 && hex::encode(hash.finalize()) == sha,
            None => false,
        };
        if intact && src.vouched {
            destroyed.append(&mut hits);
        } else {
            unconfirmed.append(&mut hits);
        }
        match src.sha256 {
            Some(_) if !intact => {
                warnings.push(format!(
                    "{} does not match what {} records (altered or truncated): what it says is unconfirmed; run `lapse report verify`",
                    src.file, src.report
                ));
                // What is missing from it may be the answer.
                evidence_unreadable += 1;
            }
            None if bad > 0 => {
                warnings.push(format!("{}: {bad} line(s) are not evidence (cut short?)", src.file));
            }
            _ => {}
        }
    }
    destroyed.sort_by_key(|d| d.at);
    unconfirmed.sort_by_key(|d| d.at);

    // Is the holds file as it is now the one the newest run read? (Reports of runs that
    // recorded their inputs, and, with keys, whose signature verifies.)
    let as_read = |r: &RunView| r.inputs.as_ref().and_then(|i| i.holds_file.as_ref()).map(|h| h.hmac_sha256.clone());
    // (Digests are keyed: only reports made with the configured evidence key can tell.)
    let recorded: Vec<&(String, RunView)> = reports
        .iter()
        .filter(|(n, r)| !unsigned.contains(n) && r.inputs.is_some() && r.evidence_key_id == key_id)
        .collect();
    let mut holds_file_unchanged = None;
    let subject = matches!(target, Target::Subject(_));
    if let (true, Some(now), Some(f), Some((_, newest))) =
        (subject, &ctx.holds_digest, &ctx.holds_file, recorded.last())
    {
        let same = as_read(newest).as_ref() == Some(now);
        holds_file_unchanged = Some(same);
        if !same {
            let last_read = recorded.iter().rev().find(|(_, r)| as_read(r).as_ref() == Some(now));
            warnings.push(format!(
                "the holds file {} is not the file the newest run ({}, {}) read{}: holds in force then may be gone from it, or others added; {}",
                f.display(),
                short(&newest.run_id),
                newest.started_at.format("%Y-%m-%d %H:%M UTC"),
                if as_read(newest).is_none() { ", which read none" } else { "" },
                match last_read {
                    Some((_, r)) => format!(
                        "the last run that read this very file was {} ({})",
                        short(&r.run_id),
                        r.started_at.format("%Y-%m-%d %H:%M UTC")
                    ),
                    None => "no run report here read this very file".into(),
                }
            ));
        }
    }
    let mut held = Vec::new();
    let mut cannot = Vec::new();
    let mut table_holds_unknown = false;
    let now = Utc::now();
    // The runs in which a hold id kept lapsed records (of any of its subjects), by the
    // reports a given key vouches for.
    let kept_in_of = |id: &str| -> Vec<KeptIn> {
        reports
            .iter()
            .filter(|(name, _)| !unsigned.contains(name))
            .flat_map(|(name, r)| {
                r.policies.iter().filter_map(move |p| {
                    p.held_by.get(id).filter(|n| **n > 0).map(|n| KeptIn {
                        run_id: r.run_id.clone(),
                        report: name.clone(),
                        started_at: r.started_at,
                        policy: p.name.clone(),
                        records: *n,
                    })
                })
            })
            .collect()
    };
    match target {
        Target::Subject(id) => {
            for h in ctx.table_holds.iter().flatten() {
                if only_policy.is_some_and(|p| !h.policies.iter().any(|q| shares(p, q))) {
                    continue;
                }
                if h.records_unknown {
                    table_holds_unknown = true;
                    cannot.push(format!(
                        "Hold {} ({}) of the holds table of connection '{}' holds every record of {}: whether this subject has any there is not known.",
                        h.id,
                        h.matter.as_deref().unwrap_or("no matter column configured"),
                        h.connection,
                        h.policies.join(", ")
                    ));
                    continue;
                }
                held.push(HeldBy {
                    hold: h.id.clone(),
                    source: format!("table:{}", h.connection),
                    matter: h.matter.clone().unwrap_or_else(|| "(no matter column configured)".into()),
                    reason: h.every_subject.then(|| "a row without a subject: every subject of its policies".into()),
                    policies: h.policies.clone(),
                    expires: None,
                    active: true,
                    // Compared by the database as the runs compare (or, for objects, as their
                    // runs do): no other spelling to doubt.
                    exact: true,
                    kept_in: kept_in_of(&h.id),
                });
            }
            for h in &ctx.holds {
                if !h.subjects.iter().any(|s| same_subject(s, id)) {
                    continue;
                }
                let exact = h.subjects.iter().any(|s| s == id || s.trim() == id.trim());
                if only_policy.is_some_and(|p| !(h.policies.is_empty() || h.policies.iter().any(|q| shares(p, q)))) {
                    continue;
                }
                let kept_in = kept_in_of(&h.id);
                held.push(HeldBy {
                    hold: h.id.clone(),
                    source: "file".into(),
                    matter: h.matter.clone(),
                    reason: h.reason.clone(),
                    policies: h.policies.clone(),
                    expires: h.expires,
                    active: h.active_at(now),
                    exact,
                    kept_in,
                });
            }
            cannot.push(match &ctx.holds_file {
                Some(f) => format!(
                    "Reports record holds by id, matter and number of subjects, never the subjects: whether this subject is held was checked against the holds file {} as it is now; {}",
                    f.display(),
                    match holds_file_unchanged {
                        Some(true) => "the newest run read this very file (its keyed digest is the same).",
                        Some(false) => "it is not the file the newest run read (see the warnings): a hold removed from it since is not visible.",
                        None => "a hold removed from it since is not visible.",
                    }
                ),
                None => "Reports record holds by id, matter and number of subjects, never the subjects; the config names no holds file, so no subject hold was checked.".into(),
            });
        }
        Target::Record { .. } => cannot.push(
            "Whether a record is held depends on its subject, which the reports link to a record only once it is destroyed: look its subject up with --subject."
                .into(),
        ),
    }
    let tables: BTreeSet<String> = reports
        .iter()
        .flat_map(|(_, r)| {
            r.holds
                .iter()
                // A holds table by its entry (`<table>.*`), not by each of its holds listed.
                .filter(|x| x.source.starts_with("table:") && x.id.ends_with(".*"))
                .map(|x| format!("{} ({})", x.matter, crate::report::hold_source_words(&x.source)))
        })
        .collect();
    for t in tables {
        cannot.push(match (&ctx.table_holds, target) {
            (Some(_), Target::Subject(_)) => format!(
                "Holds kept in the database — {t} — were asked (--connect) as they are now: a hold released since a run is not visible."
            ),
            _ => format!(
                "Holds kept in the database — {t} — are recorded there by subject, not in reports: query that table for this subject{}.",
                if matches!(target, Target::Subject(_)) { ", or look it up with --connect" } else { "" }
            ),
        });
    }
    let mut whole: BTreeMap<(String, String, Vec<String>), Vec<String>> = BTreeMap::new();
    for (_, r) in &reports {
        for x in r.holds.iter().filter(|x| x.source == "file" && x.subject_count == 0 && !x.policies.is_empty()) {
            if only_policy.is_some_and(|p| !x.policies.iter().any(|q| shares(p, q))) {
                continue;
            }
            whole
                .entry((x.id.clone(), x.matter.clone(), x.policies.clone()))
                .or_default()
                .push(short(&r.run_id).into());
        }
    }
    for ((id, matter, policies), runs) in whole {
        cannot.push(format!(
            "Hold {id} ({matter}) froze every record of {} in {} run(s) ({}): any records of this {} there were kept, but the reports do not say whether it had any.",
            policies.join(", "),
            runs.len(),
            runs.join(", "),
            if matches!(target, Target::Subject(_)) { "subject" } else { "record" }
        ));
    }
    cannot.push("Records that had not lapsed yet were neither destroyed nor recorded.".into());
    if keys.is_empty() {
        cannot.push(
            "The reports are read as they are here; their signatures and chain are not checked by this lookup (give --public-key, or run `lapse report verify`): anyone able to write here could have changed what they say."
                .into(),
        );
    } else {
        cannot.push(format!(
            "Each run report's signature was checked ({} of {} vouched for by key {}); their chain was not: a report removed whole is not noticed here (`lapse report verify` checks the chain).",
            reports.len() - unsigned.len(),
            reports.len(),
            keys.iter().map(crate::integrity::key_id).collect::<Vec<_>>().join(", ")
        ));
    }
    if evidence_unreadable > 0 {
        cannot.push(format!(
            "The evidence of {evidence_unreadable} run report(s) could not be read whole (see the warnings): what those runs destroyed is not known here."
        ));
    }
    // A hold that names the subject only as another spelling of its number or uuid is no
    // answer: it holds the subject in a numeric (or uuid) column, not in a text one.
    // (A hold that has expired keeps nothing: no answer of HELD; found by a review.)
    let found = !destroyed.is_empty() || held.iter().any(|h| h.exact && h.active);
    let holds_unreadable = matches!(target, Target::Subject(_)) && ctx.holds_unreadable;
    let shard_only = reports
        .iter()
        .find_map(|(_, r)| r.shard.as_ref().filter(|s| s.count > 1))
        .map(|s| format!("shard {} of {}", s.index, s.count));
    Ok(Answer {
        target: label,
        hashes,
        evidence_key_id: key_id,
        run_reports: reports.len(),
        evidence_records_scanned: scanned,
        destroyed,
        unconfirmed,
        held,
        cannot_answer: cannot,
        warnings,
        found,
        evidence_unreadable,
        signatures_checked_with: keys.iter().map(crate::integrity::key_id).collect(),
        reports_unsigned: unsigned.into_iter().collect(),
        holds_file_unchanged,
        holds_unreadable,
        shard_only,
        holds_tables_asked: ctx.table_holds.is_some() && matches!(target, Target::Subject(_)),
        table_holds_unknown,
    })
}

/// The same subject, surely: as written, or the same number or uuid however written (a numeric
/// or uuid subject column compares them so). Not the wider match object policies hold by
/// (`crate::holds::same_subject`, case and spaces ignored): an answer of HELD must not name a
/// hold a SQL policy's text column does not match.
fn same_subject(a: &str, b: &str) -> bool {
    let (x, y) = (a.trim(), b.trim());
    a == b
        || matches!((x.parse::<i128>(), y.parse::<i128>()), (Ok(m), Ok(n)) if m == n)
        || matches!((uuid::Uuid::parse_str(x), uuid::Uuid::parse_str(y)), (Ok(m), Ok(n)) if m == n)
}

fn short(s: &str) -> &str {
    s.get(..8).unwrap_or(s)
}

impl Answer {
    /// For a terminal. Never prints the identifier looked up (only its keyed hash).
    pub fn text(&self, location: &str) -> String {
        let mut s = format!(
            "lookup {} in {}: {} run report{}, {} evidence record{} scanned (evidence key {})\n",
            printable(&self.target),
            printable(location),
            self.run_reports,
            if self.run_reports == 1 { "" } else { "s" },
            self.evidence_records_scanned,
            if self.evidence_records_scanned == 1 { "" } else { "s" },
            self.evidence_key_id
        );
        s.push_str(&format!(
            "keyed hash{}: {}\n",
            if self.hashes.len() == 1 { "" } else { "es" },
            self.hashes.iter().map(|h| format!("{}…", &h[..16.min(h.len())])).collect::<Vec<_>>().join(", ")
        ));
        // Only some of a record's fields anonymized, or some of an object's versions deleted,
        // is not its destruction: said apart.
        let (fields, whole): (Vec<&Destroyed>, Vec<&Destroyed>) =
            self.destroyed.iter().partition(|d| d.action == "fields_anonymized");
        let (versions, whole): (Vec<&Destroyed>, Vec<&Destroyed>) =
            whole.into_iter().partition(|d| d.action == "versions_deleted");
        let (pseudonymized, whole): (Vec<&Destroyed>, Vec<&Destroyed>) =
            whole.into_iter().partition(|d| d.pseudonymized);
        let unconfirmed: Vec<&Destroyed> = self.unconfirmed.iter().collect();
        for (list, head) in [
            (whole, "DESTROYED: {} record(s)\n"),
            (
                pseudonymized,
                "PSEUDONYMIZED: {} record(s) kept with a pseudonym among their values (`pseudonymize`): not anonymization, the pseudonym key's holder can link them\n",
            ),
            (fields, "FIELDS ANONYMIZED: {} record(s) kept, some of their fields anonymized (see each stage)\n"),
            (
                versions,
                "VERSIONS DELETED: {} object(s) kept, some of their versions deleted before the storage refused another (see the run's errors)\n",
            ),
            (
                unconfirmed,
                "UNCONFIRMED: {} line(s) in evidence no report vouches for (a run killed before its report, accounted for by its policies' next run; a report whose signature does not verify with --public-key; or a file put there): no answer\n",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            // Records, not lines: a record destroyed again (restored from a backup, or its
            // key used again) is one record in two lines (found by a review: "6 record(s)" for
            // 3 destroyed twice).
            let records: BTreeSet<&str> = list.iter().map(|d| d.record.as_str()).collect();
            let mut line = head.replace("{}", &records.len().to_string());
            if records.len() < list.len() {
                // One record in several stages or policies is several lines of one run; in two
                // runs by one policy and stage, it came back (found by a review: the restore was
                // named for a record of two field stages).
                let mut runs: BTreeMap<(&str, &str, &str), BTreeSet<&str>> = BTreeMap::new();
                for d in &list {
                    runs.entry((&d.record, &d.policy, &d.stage)).or_default().insert(&d.run_id);
                }
                let why = match runs.values().any(|r| r.len() > 1) {
                    true => "the same record again (restored from a backup, or its key used again)",
                    false => "one for each stage or policy that changed it",
                };
                line = line.replacen('\n', &format!(" — in {} lines: {why}\n", list.len()), 1);
            }
            s.push_str(&line);
            for d in list {
                s.push_str(&format!(
                    "  {}  policy {}  {} (stage {}, batch {})  run {}  record {}…  [{}]\n",
                    d.at.format("%Y-%m-%d %H:%M:%S UTC"),
                    printable(&d.policy),
                    printable(&d.action),
                    printable(&d.stage),
                    d.batch,
                    printable(&d.run_id),
                    printable(&d.record.chars().take(16).collect::<String>()),
                    printable(&d.report)
                ));
            }
        }
        let (tables, files): (Vec<&HeldBy>, Vec<&HeldBy>) =
            self.held.iter().partition(|h| h.source.starts_with("table:"));
        // Compared by the database as the runs compare: held or not, no other spelling.
        if !tables.is_empty() {
            s.push_str("HELD: held by a hold in force in a holds table (asked with --connect)\n");
            for h in tables {
                s.push_str(&format!(
                    "  {} — {}{} — policies {}, in force now ({})\n",
                    printable(&h.hold),
                    printable(&h.matter),
                    h.reason.as_deref().map(|r| format!(" ({})", printable(r))).unwrap_or_default(),
                    printable(&h.policies.join(", ")),
                    crate::report::hold_source_words(&h.source)
                ));
                kept_lines(&mut s, &h.kept_in);
            }
        }
        let (exact, other): (Vec<&HeldBy>, Vec<&HeldBy>) = files.into_iter().partition(|h| h.exact);
        let (exact, expired): (Vec<&HeldBy>, Vec<&HeldBy>) = exact.into_iter().partition(|h| h.active);
        let other: Vec<&HeldBy> = other.into_iter().filter(|h| h.active).collect();
        for (list, head) in [
            (exact, "HELD: named by the holds file\n"),
            (expired, "NO LONGER HELD: named by a hold of the holds file that has expired, which keeps nothing\n"),
            (
                other,
                "MAYBE HELD: named by the holds file as another spelling of the same number or uuid (`017` for `17`): held where the subject column is numeric (or a uuid), NOT in a text column, where it is another subject: no answer\n",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            s.push_str(head);
            for h in list {
                s.push_str(&format!(
                    "  {} — {}{} — {}, {}{}\n",
                    printable(&h.hold),
                    printable(&h.matter),
                    h.reason.as_deref().map(|r| format!(" ({})", printable(r))).unwrap_or_default(),
                    if h.policies.is_empty() {
                        "every policy".to_string()
                    } else {
                        format!("policies {}", printable(&h.policies.join(", ")))
                    },
                    match (&h.expires, h.active) {
                        (Some(t), true) => super::hold_expiry(t),
                        (Some(t), false) => format!("was {}", super::hold_expiry(t)),
                        (None, _) => "until released".into(),
                    },
                    match (&h.expires, h.active) {
                        (_, false) => ", EXPIRED",
                        (None, true) => ", in force",
                        (Some(_), true) => "",
                    }
                ));
                kept_lines(&mut s, &h.kept_in);
            }
        }
        if !self.found && self.holds_unreadable {
            s.push_str(
                "NOT ANSWERED: the holds file could not be read whole (see the warnings): whether a hold names this subject is not known.\n",
            );
        }
        if self.destroyed.is_empty() && self.evidence_unreadable > 0 {
            s.push_str(&format!(
                "NOT ANSWERED: no evidence record of this {} in the evidence that could be read, but the evidence of {} run report(s) could not be read whole.\n",
                if self.target == "subject" { "subject" } else { "record" },
                self.evidence_unreadable
            ));
        }
        if let Some(shard) = self.shard_only.as_ref().filter(|_| !self.found) {
            s.push_str(&format!(
                "NOT ANSWERED: these are the reports of {shard} of a sharded run only: another shard may have destroyed this {}; look up in each shard-<i>-of-<n> directory.\n",
                if self.target == "subject" { "subject" } else { "record" },
            ));
        } else if !self.found && self.table_holds_unknown {
            s.push_str(
                "NOT ANSWERED: no evidence record of it, but a hold of a holds table freezes every record of a policy in which lookup cannot tell whether this subject has any (below).\n",
            );
        } else if !self.found
            && self.evidence_unreadable == 0
            && !self.holds_unreadable
            && !self.held.iter().any(|h| h.active)
        {
            s.push_str(&format!(
                "NOTHING FOUND: no evidence record of this {} in {} run report(s), and no hold of the holds file in force names it{}.\n\
                 Either lapse never destroyed it (not lapsed, not under a policy, or held as below), or the reports were written with another evidence key.\n",
                if self.target == "subject" { "subject" } else { "record" },
                self.run_reports,
                if self.holds_tables_asked { ", nor does one of the holds tables hold a record of it (asked with --connect)" } else { "" }
            ));
        }
        if !self.cannot_answer.is_empty() {
            s.push_str("not answerable from the reports:\n");
            for c in &self.cannot_answer {
                s.push_str(&format!("  - {}\n", printable(c)));
            }
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {}\n", printable(w)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A date-time as the database prints it is tried as a timestamp key is recorded
    /// (`Value::canonical`; found by a read-only review: `2024-01-02 03:04:05` found nothing).
    #[test]
    fn a_date_time_is_tried_as_a_timestamp_is_recorded() {
        let recorded = |s: &str| {
            let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
            Value::Timestamp(t).canonical()
        };
        for (given, stored) in [
            ("2024-01-02 03:04:05", "2024-01-02 03:04:05"),
            ("2024-01-02T03:04:05", "2024-01-02 03:04:05"),
            ("2024-01-02 03:04:05.5", "2024-01-02 03:04:05.5"),
            ("2024-01-02T04:04:05.5+01:00", "2024-01-02 03:04:05.5"),
        ] {
            let forms = spellings(given);
            assert!(forms.contains(&recorded(stored)), "{given}: {forms:?}");
        }
        assert_eq!(spellings("abc"), vec!["abc".to_string()]);
    }

    /// An answer of these destroyed records and holds (found when there are any).
    fn answer(destroyed: Vec<Destroyed>, held: Vec<HeldBy>) -> Answer {
        Answer {
            target: "subject".into(),
            hashes: vec![],
            evidence_key_id: "k".into(),
            run_reports: 1,
            evidence_records_scanned: destroyed.len() as u64,
            found: !destroyed.is_empty() || !held.is_empty(),
            destroyed,
            unconfirmed: vec![],
            held,
            cannot_answer: vec![],
            warnings: vec![],
            evidence_unreadable: 0,
            signatures_checked_with: vec![],
            reports_unsigned: vec![],
            holds_file_unchanged: None,
            holds_unreadable: false,
            shard_only: None,
            holds_tables_asked: false,
            table_holds_unknown: false,
        }
    }

    /// `expires: 2027-06-30` holds through that day: lookup says so, not "expires 2027-07-01".
    #[test]
    fn a_bare_date_hold_is_said_through_its_day() {
        let expires = chrono::DateTime::parse_from_rfc3339("2027-07-01T00:00:00Z").unwrap().to_utc();
        let hold = HeldBy {
            hold: "LH-1".into(),
            source: "file".into(),
            matter: "m".into(),
            reason: None,
            policies: vec![],
            expires: Some(expires),
            active: true,
            exact: true,
            kept_in: vec![],
        };
        let answer = answer(
            vec![],
            vec![hold.clone(), HeldBy { active: false, ..hold.clone() }, HeldBy { expires: None, ..hold }],
        );
        let text = answer.text("reports");
        assert!(text.contains("  LH-1 — m — every policy, in force through 2027-06-30\n"), "{text}");
        assert!(text.contains("every policy, was in force through 2027-06-30, EXPIRED\n"), "{text}");
        assert!(text.contains("every policy, until released, in force\n"), "{text}");
        assert!(!text.contains("2027-07-01"), "{text}");
    }

    /// A record anonymized with a pseudonym among its values is said apart from a destroyed one
    /// (before, DESTROYED; found by a review): its stage's columns, or every personal column
    /// for the whole record, decide.
    #[test]
    fn pseudonymized_records_are_not_destroyed_ones() {
        let p: PolicyView = serde_json::from_str(
            r#"{"name":"p","columns":{"email":{"irreversible":false},"name":{"irreversible":true}},
                "stages":[{"name":"record","columns":[]},{"name":"fields:name","columns":["name"]}]}"#,
        )
        .unwrap();
        assert!(p.pseudonymizes("record"));
        assert!(!p.pseudonymizes("fields:name"));
        let d = Destroyed {
            at: Utc::now(),
            policy: "p".into(),
            action: "anonymized".into(),
            stage: "record".into(),
            batch: 1,
            run_id: "r".into(),
            report: "x.json".into(),
            record: "ab".repeat(32),
            pseudonymized: true,
        };
        let answer = answer(vec![d.clone(), Destroyed { pseudonymized: false, ..d }], vec![]);
        let text = answer.text("reports");
        assert!(text.contains("\nDESTROYED: 1 record(s)\n"), "{text}");
        assert!(text.contains("\nPSEUDONYMIZED: 1 record(s) kept with a pseudonym"), "{text}");
    }

    /// A record destroyed twice (restored from a backup in between) is one record in two lines
    /// (before, "DESTROYED: 2 record(s)"; found by a review).
    #[test]
    fn a_record_destroyed_again_is_counted_once() {
        let d = Destroyed {
            at: Utc::now(),
            policy: "p".into(),
            action: "deleted".into(),
            stage: "record".into(),
            batch: 1,
            run_id: "r".into(),
            report: "x.json".into(),
            record: "ab".repeat(32),
            pseudonymized: false,
        };
        let other = Destroyed { record: "cd".repeat(32), ..d.clone() };
        let text = answer(vec![d.clone(), Destroyed { run_id: "r2".into(), ..d.clone() }, other.clone()], vec![])
            .text("reports");
        assert!(text.contains("\nDESTROYED: 2 record(s) — in 3 lines: the same record again"), "{text}");
        // Two stages of one run: no restore named.
        let text =
            answer(vec![d.clone(), Destroyed { stage: "fields:phone".into(), ..d }, other], vec![]).text("reports");
        assert!(
            text.contains("\nDESTROYED: 2 record(s) — in 3 lines: one for each stage or policy that changed it"),
            "{text}"
        );
    }

    #[test]
    fn integer_subjects_hash_like_their_text() {
        let k = EvidenceKey::new(b"0123456789abcdef0123".to_vec());
        assert_eq!(subject_hashes(&k, "17"), vec![k.subject(&Value::Int(17))]);
        // `017` is not `17` in a text column: tried only as written.
        assert_eq!(subject_hashes(&k, "017"), vec![k.subject(&Value::Text("017".into()))]);
        assert_eq!(subject_hashes(&k, " 17 ").len(), 2);
        let u = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
        assert!(subject_hashes(&k, u).contains(&k.subject(&Value::Text(u.to_lowercase()))));
        assert_eq!(subject_hashes(&k, "S-1"), vec![k.subject(&Value::Text("S-1".into()))]);
        let ds: BTreeSet<(String, String)> = [("db".to_string(), "people".to_string())].into();
        assert_eq!(record_hashes(&k, &ds, &["2".into()]), vec![k.record("db", "people", &[Value::Int(2)])]);
        assert!(same_subject("17", "017") && !same_subject("S-1", "S-01"));
        assert!(same_subject("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc999c0b4ef8bb6d6bb9bd380a11"));
        assert!(!same_subject("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"));
        // Not case: a text column holds `S-1` and `s-1` apart.
        assert!(!same_subject("S-1", "s-1"));
    }

    /// A binary subject column's value is recorded as its bytes in lower-case hex (or, read as
    /// text where MariaDB does, as that text): asked for as a uuid or as `0x`/`\x` hex, it is
    /// found; bare hex is taken as written (`CAFE` is not `cafe` in a text column).
    #[test]
    fn binary_subjects_are_tried_as_their_bytes() {
        let k = EvidenceKey::new(b"0123456789abcdef0123".to_vec());
        let bytes = hex::decode("a0eebc999c0b4ef8bb6d6bb9bd380a11").unwrap();
        let recorded = k.subject(&Value::Bytes(bytes.clone()));
        for asked in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "0xA0EEBC999C0B4EF8BB6D6BB9BD380A11",
            "\\xa0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(subject_hashes(&k, asked).contains(&recorded), "{asked}");
        }
        let upper = "A0EEBC999C0B4EF8BB6D6BB9BD380A11";
        // (A uuid all the same: 32 hex digits parse as one.)
        assert!(subject_hashes(&k, upper).contains(&recorded));
        assert_eq!(subject_hashes(&k, "CAFE"), vec![k.subject(&Value::Text("CAFE".into()))]);
        assert!(subject_hashes(&k, "0xCAFE").contains(&k.subject(&Value::Bytes(vec![0xca, 0xfe]))));
        // Bytes that are UTF-8: as MariaDB's binary column is read.
        assert!(subject_hashes(&k, "0x414243").contains(&k.subject(&Value::Text("ABC".into()))));
        assert!(!subject_hashes(&k, "0x").contains(&k.subject(&Value::Text(String::new()))));
    }

    #[test]
    fn key_values_are_split_at_commas_not_escaped_ones() {
        assert_eq!(key_parts("7,2"), vec!["7", "2"]);
        assert_eq!(key_parts("Doe\\, Jr.,John"), vec!["Doe, Jr.", "John"]);
        assert_eq!(key_parts("a\\\\,b"), vec!["a\\", "b"]);
        assert_eq!(key_parts("C:\\dir"), vec!["C:\\dir"]);
        assert_eq!(key_parts("x\\"), vec!["x\\"]);
        assert_eq!(key_parts(""), vec![""]);
    }
}
