//! The engine: plan and run, the same loop with a different verb.
//!
//! For each policy the engine derives *stages* (record-level lapse, then one per group of
//! columns that lapse earlier), counts what is due, held and kept, applies the guardrail, and in
//! `run` mode destroys in bounded batches through [`Connector::destroy`]. It knows nothing of
//! SQL: rows are described with [`Filter`]s.
//!
//! Architecture invariant: the engine never asks a connector to destroy anything except through
//! `destroy(scope, …)`, whose rows are chosen by [`Scope::destroy_filter`] (holds included).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::ConnectionKind;
use crate::config::{self, Config};
use crate::connector::{
    backoff, retry, BatchOutcome, Candidate, Connector, ConnectorError, EvidenceId, FileHold, Filter, HoldScope,
    JournalCtx, KeyRange, LapseRule, Scope, TableIdentity, Work,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::evidence::EvidenceKey;
use crate::holds::{self, Hold};
use crate::intent::{Intent, IntentLog};
use crate::objstore::{local::DirBackend, s3::S3Backend, ObjectConnector};
use crate::policy::{self, Action, NullAnchor, Policy, PolicySet};
use crate::report::{
    self, ColumnMethod, Evidence, EvidenceFile, Guardrail, PolicyReport, PurposeInfo, Report, StageReport, Verification,
};
use crate::sql::builder::coerce;
use crate::sql::SqlConnector;

/// Open connectors by connection name.
pub type Connections = BTreeMap<String, Arc<dyn Connector>>;
use crate::validate::{self, Prepared};
use crate::value::Value;

/// Everything read from disk: config, policies, holds file. Loading is offline.
pub struct Workspace {
    pub config: Config,
    pub policies: PolicySet,
    pub holds: Vec<Hold>,
    /// SHA-256 (hex) of the holds file's bytes as read (none: no holds file).
    pub holds_sha256: Option<String>,
}

impl Workspace {
    pub fn load(config_path: &Path) -> Result<Workspace, Diagnostics> {
        let mut d = Diagnostics::default();
        let Some(config) = Config::load(config_path, &mut d) else { return Err(d) };
        let policies = policy::load_dir(&config.resolve(&config.policies), &mut d);
        for p in &policies.policies {
            if let Some(c) = config.connections.get(&p.connection) {
                let objects = c.kind != ConnectionKind::Sql;
                if objects != p.objects.is_some() {
                    let what = if objects { "an object store" } else { "a SQL database" };
                    d.push(p.error(
                        "dataset",
                        format!("connection '{}' is {what}; the dataset does not match it", p.connection),
                    ));
                }
                if c.kind == ConnectionKind::S3
                    && p.objects.as_ref().is_some_and(|o| o.bucket.is_none())
                    && c.bucket.is_none()
                {
                    d.push(p.error("dataset", "no bucket: set dataset.bucket or the connection's bucket"));
                }
                // A directory has no buckets, and its keys stay inside it: said here, not by
                // the first `plan` (exit 1, as if transient) or not at all (found by a review).
                if let (ConnectionKind::Directory, Some(o)) = (c.kind, &p.objects) {
                    if o.bucket.is_some() {
                        d.push(p.error(
                            "dataset.bucket",
                            format!("connection '{}' is a directory: it has no buckets", p.connection),
                        ));
                    }
                    if o.prefix.starts_with('/') || o.prefix.split('/').any(|x| x == ".." || x == ".") {
                        let at =
                            if p.key_at("dataset.prefix").is_some() { "dataset.prefix" } else { "dataset.key_pattern" };
                        d.push(p.error(at, format!("prefix '{}' leaves the directory (a key is a relative path in it, without '.' or '..')", o.prefix)));
                    }
                }
                // Files have no tags, and no user metadata: a tag failed the run at its first
                // file, and `metadata:` made every file unreadable, kept for ever (found by a
                // README review).
                if c.kind == ConnectionKind::Directory && p.objects.is_some() {
                    let store_only = |f: &str| f.starts_with("tag:") || f.starts_with("metadata:");
                    let no_such = |what: &str, fact: &str, instead: &str| {
                        format!(
                            "{what} '{fact}': files in a directory (connection '{}') have no tags or metadata; use {instead}",
                            p.connection
                        )
                    };
                    for (i, x) in p.purposes.iter().enumerate().filter(|(_, x)| store_only(&x.anchor)) {
                        d.push(p.error(
                            &format!("purposes.{i}.after"),
                            no_such("anchor", &x.anchor, "last_modified or key_date"),
                        ));
                    }
                    if let Some(s) = p.subject.as_deref().filter(|s| store_only(s)) {
                        d.push(p.error(
                            "dataset.subject",
                            no_such("subject", s, "key (with {subject} in the key pattern)"),
                        ));
                    }
                }
            }
            // Every record's anonymization would fail at the run.
            if config.pseudonymization.is_none() {
                for c in p
                    .columns
                    .iter()
                    .filter(|c| matches!(c.strategy, Some(crate::policy::strategy::Strategy::Pseudonymize)))
                {
                    d.push(p.error(
                        &format!("personal.{}.anonymize", c.name),
                        "pseudonymize needs a key: set 'pseudonymization' (key_file or key_env) in the config",
                    ));
                }
            }
            if !config.connections.contains_key(&p.connection) {
                let known: Vec<&str> = config.connections.keys().map(String::as_str).collect();
                d.push(p.error(
                    "dataset.connection",
                    format!("unknown connection '{}' (configured: {})", p.connection, known.join(", ")),
                ));
            }
        }
        // A schedule job naming no policy would fail at each firing; `validate` says so now.
        if let Some(sch) = &config.schedule {
            let names: BTreeSet<&str> = policies.policies.iter().map(|p| p.name.as_str()).collect();
            for j in &sch.jobs {
                for p in j.policies.iter().filter(|p| !names.contains(p.as_str())) {
                    d.push(
                        Diagnostic::error(format!("schedule job '{}': unknown policy '{p}'", j.name))
                            .in_file(config.path.clone()),
                    );
                }
            }
        }
        let (holds, holds_sha256) = match &config.holds_file {
            Some(f) => holds::load(&config.resolve(f), &mut d),
            None => (Vec::new(), None),
        };
        let names: BTreeSet<&str> = policies.policies.iter().map(|p| p.name.as_str()).collect();
        // Policies already said to be broken, and whether some policy file could not be read at
        // all: a hold naming one of those is no typo of its own.
        let broken: BTreeSet<String> = d.0.iter().filter(|x| x.is_error()).filter_map(|x| x.policy.clone()).collect();
        let unreadable = d.0.iter().any(|x| x.is_error() && x.policy.is_none());
        // No policy loaded at all (a misspelt `policies:` directory): that error is said; one
        // more per hold naming a policy would bury it (found by a README walkthrough).
        let none_loaded = policies.policies.is_empty() && unreadable;
        for h in holds.iter().filter(|_| !none_loaded) {
            for (j, p) in h.policies.iter().enumerate() {
                if !names.contains(p.as_str()) && !broken.contains(p) {
                    // A typo here would silently release what the hold protects.
                    let file = config.holds_file.as_ref().map(|f| config.resolve(f)).unwrap_or_default();
                    let at = h.policy_locations.get(j).cloned().flatten();
                    let hint = if unreadable { " (or one in a policy file that could not be read, above)" } else { "" };
                    d.push(
                        Diagnostic::error(format!("hold '{}' names unknown policy '{p}'{hint}", h.id))
                            .at(at)
                            .in_file(file),
                    );
                }
            }
            // A subject hold needs the policy's subject column to find the subject's records:
            // without one it would keep nothing there. Named policies: refused (keeping wins);
            // a hold on every policy: said, for each policy it cannot reach.
            if h.whole_policy() {
                continue;
            }
            let file = config.holds_file.as_ref().map(|f| config.resolve(f)).unwrap_or_default();
            for p in policies.policies.iter().filter(|p| p.subject.is_none()) {
                // The hold applies to this policy, or to one on the same table (whose holds
                // keep this policy's records too, `stages`).
                let shared = p.hold_policies();
                if !shared.iter().any(|n| h.applies_to(n)) {
                    continue;
                }
                let j = h.policies.iter().position(|x| shared.contains(&x.as_str()));
                let via = match h.policies.iter().find(|x| shared.contains(&x.as_str()) && *x != &p.name) {
                    Some(other) if !h.policies.contains(&p.name) => {
                        format!(" (it holds the records of policy '{other}', on the same table)")
                    }
                    _ => String::new(),
                };
                let msg = format!(
                    "hold '{}' lists subjects, but policy '{}'{via} has no 'subject' column to find their records by",
                    h.id, p.name
                );
                d.push(match j {
                    Some(j) => Diagnostic::error(format!("{msg}: add one to the policy, or hold the whole policy"))
                        .at(h.policy_locations.get(j).cloned().flatten())
                        .in_file(file.clone()),
                    None => Diagnostic::warning(format!("{msg}: the hold keeps none of its records"))
                        .policy(&p.name)
                        .in_file(file.clone()),
                });
            }
        }
        for x in reports_inside_a_dataset(&config, &policies.policies, &config.resolve(&config.reports.dir)) {
            d.push(x);
        }
        if d.has_errors() {
            return Err(d);
        }
        // Print warnings later with the rest.
        let ws = Workspace { config, policies, holds, holds_sha256 };
        if !d.0.is_empty() {
            for w in &d.0 {
                tracing::warn!("{w}");
            }
        }
        Ok(ws)
    }

    pub fn evidence_key(&self) -> anyhow::Result<EvidenceKey> {
        Ok(EvidenceKey::new(self.evidence_key_bytes()?))
    }

    fn evidence_key_bytes(&self) -> anyhow::Result<Vec<u8>> {
        config::read_secret(&self.config.evidence, &self.config.base_dir, "evidence key")
    }

    pub fn selected(&self, only: &[String]) -> Vec<&Policy> {
        self.policies.policies.iter().filter(|p| only.is_empty() || only.contains(&p.name)).collect()
    }

    /// Resolves every secret the selected policies need (connection URLs, evidence key, the
    /// report signing key and the pseudonymization key, each read and parsed as it will be used)
    /// without connecting: a missing variable or file, or a key of the wrong form, is a
    /// configuration error before anything is destroyed, not a run that destroys and then
    /// cannot sign its report.
    pub fn check_secrets(&self, only: &[String]) -> anyhow::Result<()> {
        // Every missing or malformed secret at once (before, one per invocation).
        let mut problems: Vec<String> = Vec::new();
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                let m = format!("{e:#}");
                if !problems.contains(&m) {
                    problems.push(m);
                }
            }
        };
        let evidence = self.evidence_key_bytes();
        if let Some(w) = evidence.as_deref().ok().and_then(config::weak_key) {
            // A warning, not a refusal: a deployed key keeps working (a new key starts new
            // hashes, and lookups of older records need the old one).
            tracing::warn!(
                "evidence key: {w}; anyone holding a report could test guesses of it and recover small record and subject ids"
            );
        }
        let signer = self.config.reports.signing_key.as_ref().map(|r| {
            config::read_secret(r, &self.config.base_dir, "report signing key")
                .and_then(|k| crate::integrity::Signer::from_secret(&k))
        });
        // Not the evidence key the signing key's secret or public key (the published one): one
        // secret would serve two ends, or a public one key the records' hashes (found by a
        // review).
        let shared = match (&evidence, &signer) {
            (Ok(ev), Some(Ok(signer))) => {
                let ev = String::from_utf8_lossy(ev).trim().to_ascii_lowercase();
                (ev == signer.public_hex()).then_some("public").or((ev == signer.secret_hex()).then_some("secret"))
            }
            _ => None,
        };
        note(evidence.map(drop));
        if let Some(s) = signer {
            note(s.map(drop));
        }
        if let Some(r) = &self.config.pseudonymization {
            note(config::read_secret(r, &self.config.base_dir, "pseudonymization key").map(drop));
        }
        if let Some(which) = shared {
            note(Err(anyhow::anyhow!(
                "evidence key: it is the report signing key's {which} key; the evidence key is a secret of its own (lapse keygen writes one)"
            )));
        }
        let selected = self.selected(only);
        // A URL that is none of the schemes lapse reads failed only at connect: said here, where
        // `validate` sees it (the URL itself is never shown: it may hold a password).
        for p in &selected {
            let c = &self.config.connections[&p.connection];
            if c.kind == ConnectionKind::Sql {
                note(c.url(&p.connection, &self.config.base_dir).and_then(|u| {
                    match crate::sql::url_scheme_problem(&p.connection, &u) {
                        Some(m) => Err(anyhow::anyhow!("{m}")),
                        None => Ok(()),
                    }
                }));
            }
        }
        // The holds tables of every SQL connection hold the objects of object policies
        // (`connect` opens them all): their URLs too.
        if selected.iter().any(|p| p.objects.is_some()) {
            for (name, c) in &self.config.connections {
                if c.kind == ConnectionKind::Sql && c.holds_table.is_some() {
                    note(c.url(name, &self.config.base_dir).map(drop));
                }
            }
        }
        match problems.len() {
            0 => Ok(()),
            1 => Err(anyhow::anyhow!("{}", problems.remove(0))),
            n => Err(anyhow::anyhow!("{n} secrets cannot be used:\n  - {}", problems.join("\n  - "))),
        }
    }

    /// `reports.s3`, when configured: the bucket exists, and has Object Lock when a retention is
    /// asked for. Run before anything is destroyed.
    pub async fn check_report_bucket(&self) -> Result<(), crate::reporting::sink::SinkCheck> {
        match crate::reporting::sink::S3Reports::from_config(&self.config).await {
            Some(b) => b.check().await,
            None => Ok(()),
        }
    }

    /// Opens the connections the selected policies use.
    pub async fn connect(&self, only: &[String], read_only: bool) -> anyhow::Result<Connections> {
        let mut out = BTreeMap::new();
        for p in self.selected(only) {
            if out.contains_key(&p.connection) {
                continue;
            }
            let c = &self.config.connections[&p.connection];
            let conn: Arc<dyn Connector> = match c.kind {
                ConnectionKind::Sql => {
                    let url = c.url(&p.connection, &self.config.base_dir)?;
                    Arc::new(
                        SqlConnector::open(
                            &p.connection,
                            &url,
                            read_only,
                            &c.journal_table,
                            c.holds_table.clone(),
                            std::time::Duration::from_secs(c.lock_wait),
                        )
                        .await?,
                    )
                }
                ConnectionKind::S3 => {
                    let b = S3Backend::new(c.region.as_deref(), c.endpoint.as_deref(), c.path_style)
                        .await
                        .with_lease(std::time::Duration::from_secs(c.run_lock_lease));
                    Arc::new(ObjectConnector::new(&p.connection, Box::new(b), c.bucket.clone(), c.concurrency))
                }
                ConnectionKind::Directory => {
                    let root = self.config.resolve(c.path.as_deref().unwrap_or(std::path::Path::new(".")));
                    Arc::new(ObjectConnector::new(&p.connection, Box::new(DirBackend::new(root)), None, c.concurrency))
                }
            };
            out.insert(p.connection.clone(), conn);
        }
        // An object store has no holds table: an object policy is held by the holds tables of
        // the configuration's SQL connections (read only), which must open, or nothing runs.
        if self.selected(only).iter().any(|p| p.objects.is_some()) {
            for (name, c) in &self.config.connections {
                if c.kind != ConnectionKind::Sql || c.holds_table.is_none() || out.contains_key(name) {
                    continue;
                }
                let conn = self
                    .open_read_only(name, c)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e} (its holds table holds the objects of object policies)"))?;
                out.insert(name.clone(), conn);
            }
        }
        Ok(out)
    }

    /// Every SQL connection with a holds table, read only (`report lookup --connect`, which
    /// asks them whether a hold names a subject).
    pub async fn open_holds_tables(&self) -> anyhow::Result<Connections> {
        let mut out = BTreeMap::new();
        for (name, c) in &self.config.connections {
            if c.kind != ConnectionKind::Sql || c.holds_table.is_none() {
                continue;
            }
            out.insert(name.clone(), self.open_read_only(name, c).await?);
        }
        Ok(out)
    }

    /// A SQL connection with its holds table, read only.
    async fn open_read_only(&self, name: &str, c: &config::Connection) -> anyhow::Result<Arc<dyn Connector>> {
        let url = c.url(name, &self.config.base_dir)?;
        let conn = SqlConnector::open(
            name,
            &url,
            true,
            &c.journal_table,
            c.holds_table.clone(),
            std::time::Duration::from_secs(c.lock_wait),
        )
        .await?;
        Ok(Arc::new(conn))
    }
}

/// Checks the selected policies against their databases.
pub async fn prepare<'a>(
    ws: &'a Workspace,
    only: &[String],
    conns: &Connections,
) -> Result<Vec<(&'a Policy, Prepared)>, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut out = Vec::new();
    for p in ws.selected(only) {
        let conn = conns[&p.connection].clone();
        if let Some(prep) = validate::check(p, conn.as_ref(), &mut d).await {
            if let Some(m) = crate::shard::key_shard_problem(p, &prep) {
                d.push(p.error("shard_by_key", m));
                continue;
            }
            out.push((p, prep));
        }
    }
    hold_subjects_of_another_type(ws, conns, &out, &mut d);
    let named = canonical_names(ws, conns, &out, &mut d).await;
    same_table_spelled_alike(&named, &out, &mut d);
    no_cascade_into_a_governed_table(&named, conns, &out, &mut d).await;
    overlapping_object_datasets(ws, &out, &mut d);
    for w in d.0.iter().filter(|w| !w.is_error()) {
        tracing::warn!("{w}");
    }
    if d.has_errors() {
        Err(d)
    } else {
        Ok(out)
    }
}

/// A hold's subject that no value of a policy's subject column can equal (`0x2` or `S-1` for an
/// integer column) holds nothing there. An error where the hold names policies and the subject
/// fits none of their subject columns (it was meant for one of them: `0x2`, which YAML reads as
/// 2, was taken as written and held nothing); a warning otherwise: a hold on several policies
/// may carry identifiers of each one's shape, a hold on every policy subjects meant for other
/// tables, and SQLite keeps any type in any column, where the subject is compared as written.
fn hold_subjects_of_another_type(
    ws: &Workspace,
    conns: &Connections,
    prepared: &[(&Policy, Prepared)],
    d: &mut Diagnostics,
) {
    use crate::connector::ColumnKind;
    let file = ws.config.holds_file.as_ref().map(|f| ws.config.resolve(f)).unwrap_or_default();
    for h in &ws.holds {
        // The SQL policies the hold reaches, with their subject column and whether a value of
        // another type can be in it (SQLite).
        let reached: Vec<(&Policy, &crate::connector::ColumnInfo, bool)> = prepared
            .iter()
            .filter(|(p, _)| p.objects.is_none() && p.hold_policies().iter().any(|n| h.applies_to(n)))
            .filter_map(|(p, prep)| {
                let col = p.subject.as_ref().and_then(|s| prep.table.column(s))?;
                let any_type = conns.get(&p.connection).is_some_and(|c| c.keeps_any_type());
                Some((*p, col, any_type))
            })
            .collect();
        // The subjects as written (the numbers of those written in hexadecimal or octal follow,
        // held too: such a subject holds its number).
        for (j, s) in h.subjects.iter().enumerate().take(h.subject_count) {
            if crate::holds::non_decimal_number(s).is_some() {
                continue;
            }
            // (A uuid column of PostgreSQL or MariaDB holds uuids only: a subject that is none,
            // one digit short, held nothing without a word; found by a review.)
            let typed = |col: &crate::connector::ColumnInfo, any_type: bool| {
                if col.sql_type.eq_ignore_ascii_case("uuid") && !any_type {
                    return uuid::Uuid::parse_str(s.trim()).is_ok();
                }
                matches!(col.kind, ColumnKind::Text | ColumnKind::Other)
                    || coerce(Value::Text(s.clone()), col.kind).is_ok()
            };
            let misfits: Vec<_> = reached.iter().filter(|(_, col, any_type)| !typed(col, *any_type)).collect();
            if misfits.is_empty() {
                continue;
            }
            let fits_one = reached.iter().any(|(_, col, any_type)| *any_type || typed(col, *any_type));
            let where_: Vec<String> = misfits
                .iter()
                .map(|(p, col, _)| format!("policy '{}''s '{}' ({})", p.name, col.name, col.sql_type))
                .collect();
            let named = !h.policies.is_empty();
            let msg = format!(
                "hold '{}': subject #{} is no value of the subject column of {}, so it holds nothing there{}",
                h.id,
                j + 1,
                where_.join(", "),
                if named && !fits_one {
                    "; write it as the column's values are written (a number in decimal)"
                } else {
                    ""
                }
            );
            let at = h.subject_locations.get(j).cloned().flatten();
            let diag = if named && !fits_one { Diagnostic::error(msg) } else { Diagnostic::warning(msg) };
            d.push(diag.at(at).in_file(file.clone()));
        }
    }
}

/// The bytes a holds-file subject names in a binary subject column: a UUID (any spelling the
/// `uuid` crate reads: hyphens or none, braces, `urn:uuid:`), or hexadecimal (`0x` or `\x`
/// first, or neither). `None` for other text.
pub fn binary_subject(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if let Ok(u) = uuid::Uuid::parse_str(s) {
        return Some(u.as_bytes().to_vec());
    }
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("\\x")).unwrap_or(s);
    hex::decode(hex).ok().filter(|b| !b.is_empty())
}

/// Object policies are merged (keeping wins) by their dataset as written, like tables: two
/// whose datasets overlap (one prefix inside the other, or one bucket named once and once as
/// the connection's) would each be enforced alone, and the shorter retention would destroy
/// what the longer one keeps. Such a pair is refused, the unselected policies included.
fn overlapping_object_datasets(ws: &Workspace, prepared: &[(&Policy, Prepared)], d: &mut Diagnostics) {
    let selected = |p: &Policy| prepared.iter().any(|(q, _)| q.name == p.name);
    // Where the objects are: the store (an S3 endpoint, or the file system; two connections
    // may name the same one), the bucket, and the prefix within it. A directory's prefix is its
    // resolved path and the policy's prefix: one connection's directory may be inside another's
    // (`files` and `files/exports`; before, such a pair passed, and the shorter retention
    // deleted what the longer one kept; found by a review).
    let place = |p: &Policy| {
        let o = p.objects.as_ref()?;
        let c = ws.config.connections.get(&p.connection)?;
        Some(match c.kind {
            ConnectionKind::Directory => {
                let root = directory_root(&ws.config, c).to_string_lossy().trim_end_matches('/').to_string();
                // (A directory has no buckets: its store ignores one.)
                ("dir".to_string(), String::new(), format!("{root}/{}", o.prefix))
            }
            _ => (
                format!("s3:{}", c.endpoint.clone().unwrap_or_default()),
                o.bucket.clone().or_else(|| c.bucket.clone()).unwrap_or_default(),
                o.prefix.clone(),
            ),
        })
    };
    let objects: Vec<&Policy> = ws.policies.policies.iter().filter(|p| p.objects.is_some()).collect();
    for (i, a) in objects.iter().enumerate() {
        for b in &objects[i + 1..] {
            let (Some((sa, ba, pa)), Some((sb, bb, pb))) = (place(a), place(b)) else { continue };
            let overlap = pa.starts_with(&pb) || pb.starts_with(&pa);
            if (sa, ba) == (sb, bb)
                && overlap
                && (a.connection != b.connection || a.table != b.table)
                && (selected(a) || selected(b))
            {
                d.push(a.error(
                    "dataset",
                    format!(
                        "its objects ('{}') overlap those of policy '{}' ('{}'): each would be enforced alone, and the shorter \
                         retention would destroy what the other keeps; make them one policy (the same dataset, written the \
                         same way), or give them prefixes that do not overlap",
                        a.table, b.name, b.table
                    ),
                ));
            }
        }
    }
}

/// A path made absolute and resolved as far as it exists (symbolic links, `..`): the report
/// directory may not exist yet.
fn resolved(path: &std::path::Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Whether a dataset whose keys start with `prefix` holds any of what lapse writes under
/// `inner` (a key prefix, empty or ending in `/`): its reports and evidence (`lapse-…`), shard
/// directories (`shard-…`), the bucket's chain claims (`chain/…`) and the directory's lock and
/// markers (`.…`). `reports` under a dataset of `reports/archive/` do not meet; nor reports at a
/// bucket's root and a dataset of `invoices/`.
fn prefixes_meet(inner: &str, prefix: &str) -> bool {
    const WRITTEN: [&str; 4] = ["lapse-", "shard-", "chain/", "."];
    if inner.starts_with(prefix) {
        return true;
    }
    match prefix.strip_prefix(inner) {
        Some(rest) => WRITTEN.iter().any(|w| w.starts_with(rest) || rest.starts_with(w)),
        None => false,
    }
}

/// The reports, and the intents, markers and chain lock beside them, must not be the data of
/// an object policy: a directory dataset whose keys include the report directory, or a bucket
/// and prefix that include the report bucket's, would have lapse destroy its own proof once
/// the reports are older than the retention (and the chain start again at 1, still verifying).
/// `report_dir`: the report directory of the run (`reports.dir`, or `--report-dir`).
pub fn reports_inside_a_dataset(config: &Config, policies: &[Policy], report_dir: &std::path::Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let reports = resolved(report_dir);
    let bucket = config.reports.s3.as_ref();
    // (Read once: a connection's URL may be behind a variable or a file.)
    let own = own_files(config);
    for p in policies {
        let (Some(o), Some(c)) = (p.objects.as_ref(), config.connections.get(&p.connection)) else { continue };
        let root = (c.kind == ConnectionKind::Directory).then(|| directory_root(config, c));
        let clash = match &root {
            Some(root) => key_under(root, &reports).and_then(|mut key| {
                if !key.is_empty() {
                    key.push('/');
                }
                prefixes_meet(&key, &o.prefix)
                    .then(|| format!("the report directory {} is inside its directory", report_dir.display()))
            }),
            None => bucket.and_then(|b| {
                let same_store = config.connections.get(&b.connection).is_some_and(|rc| rc.endpoint == c.endpoint);
                let data_bucket = o.bucket.clone().or_else(|| c.bucket.clone()).unwrap_or_default();
                let inner = config.report_prefix();
                (same_store && data_bucket == b.bucket && prefixes_meet(&inner, &o.prefix)).then(|| {
                    format!(
                        "the report bucket's prefix '{}' of bucket '{}' (reports.s3) is inside its dataset",
                        b.prefix, b.bucket
                    )
                })
            }),
        };
        if let Some(what) = clash {
            out.push(p.error(
                "dataset",
                format!(
                    "{what}: lapse would destroy its own reports, intents and chain as data once they are older than the retention; keep the reports outside the dataset (another directory, bucket or prefix)"
                ),
            ));
        }
        // Nor lapse's own files: its keys, holds, config and policies (before, a directory
        // dataset of `{subject}.{*}` at the config's directory deleted the evidence key and the
        // holds file as data; found by a review).
        if let Some(root) = &root {
            for (what, path, dir) in &own {
                let dir = *dir;
                let Some(mut key) = key_under(root, &resolved(path)) else { continue };
                if dir {
                    key.push('/');
                }
                if key.starts_with(&o.prefix) || (dir && o.prefix.starts_with(&key)) {
                    out.push(p.error(
                        "dataset",
                        format!(
                            "{what} {} is inside its directory: lapse would delete it as data; keep it outside the dataset (another directory, or a prefix that does not include it)",
                            path.display()
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// A directory connection's root, resolved (`resolved`).
fn directory_root(config: &Config, c: &crate::config::Connection) -> std::path::PathBuf {
    resolved(&config.resolve(c.path.as_deref().unwrap_or(std::path::Path::new("."))))
}

/// `path` as a key of the directory `root` (both resolved): its components joined by `/`
/// (empty for the root itself); `None` outside it.
fn key_under(root: &std::path::Path, path: &std::path::Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"))
}

/// What the metrics textfile `textfile` would overwrite of lapse's own files (its config, keys,
/// holds, policies, a SQLite database), if anything: the textfile is replaced whole at the end
/// of every run (before, `--metrics-textfile evidence.key` made the metrics the evidence key,
/// and `metrics.textfile: holds.yaml` wiped the holds; found by a review).
pub fn textfile_overwrites(config: &Config, textfile: &std::path::Path) -> Option<String> {
    let target = resolved(&config.resolve(textfile));
    // In the policies directory, only a file it would read as a policy.
    let yaml = target.extension().is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    own_files(config).into_iter().filter(|(what, _, _)| what != "the metrics textfile").find_map(|(what, path, dir)| {
        let path = resolved(&path);
        let hit = if dir { yaml && target.starts_with(&path) } else { target == path };
        hit.then(|| {
            format!(
                "the metrics textfile {} would overwrite {what} ({}) at the end of every run: name another file",
                textfile.display(),
                path.display()
            )
        })
    })
}

/// The files lapse reads to run, which no dataset may hold: what they are, where, and whether
/// a directory.
fn own_files(config: &Config) -> Vec<(String, std::path::PathBuf, bool)> {
    let mut files = vec![
        ("the config file".to_string(), config.path.clone(), false),
        ("the policies directory".to_string(), config.resolve(&config.policies), true),
    ];
    let mut file = |what: &str, p: Option<&std::path::PathBuf>| {
        if let Some(p) = p {
            files.push((what.to_string(), config.resolve(p), false));
        }
    };
    file("the holds file", config.holds_file.as_ref());
    file("the evidence key file", config.evidence.key_file.as_ref());
    file("the pseudonymization key file", config.pseudonymization.as_ref().and_then(|k| k.key_file.as_ref()));
    file("the report signing key file", config.reports.signing_key.as_ref().and_then(|k| k.key_file.as_ref()));
    file("the metrics textfile", config.metrics.textfile.as_ref());
    for (name, c) in &config.connections {
        file(&format!("connection '{name}''s url_file"), c.url_file.as_ref());
    }
    // A SQLite database (where the connection's URL can be read: inline, or its variable or
    // file), as it is opened (`Connection::url`), with the files SQLite keeps beside it.
    for (name, c) in &config.connections {
        let url = match c.kind {
            ConnectionKind::Sql => c.url(name, &config.base_dir).ok(),
            _ => None,
        };
        let db = url.as_deref().and_then(|u| u.strip_prefix("sqlite://").or_else(|| u.strip_prefix("sqlite:")));
        if let Some(db) = db.map(|d| d.split('?').next().unwrap_or(d)).filter(|d| !d.is_empty() && *d != ":memory:") {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let path = std::path::PathBuf::from(format!("{db}{suffix}"));
                files.push((format!("connection '{name}''s SQLite database"), config.resolve(&path), false));
            }
        }
    }
    files
}

/// The run lock of a policy (a shard locks only its part of a key-sharded one).
fn run_lock_name(p: &Policy, opts: &Options) -> String {
    match opts.shard.filter(|s| s.part(p).is_some()) {
        Some(s) => format!("lapse/policy/{}/shard/{}-of-{}", p.name, s.index, s.count),
        None => format!("lapse/policy/{}", p.name),
    }
}

/// The catalog's name of every policy's table that the cross-policy checks below compare (see
/// `Connector::identify`), read once: the selected policies' from their preparation, the others
/// on the same open connections asked here. `Err`: the catalog could not answer.
type Canonical<'a> = Vec<(&'a Policy, Result<Option<TableIdentity>, String>)>;

async fn canonical_names<'a>(
    ws: &'a Workspace,
    conns: &Connections,
    prepared: &[(&'a Policy, Prepared)],
    d: &mut Diagnostics,
) -> Canonical<'a> {
    let mut named: Canonical<'a> = prepared.iter().map(|(p, prep)| (*p, Ok(prep.identity.clone()))).collect();
    // The connections of unselected policies only, opened read-only here: another connection
    // may reach the same database (`same_table_spelled_alike`). One that cannot be opened
    // (a secret this environment lacks, a server down) is warned of; its policies' tables are
    // unknown (`Err`), which refuses only a selected policy whose table has the same name.
    let mut others: BTreeMap<String, Option<Arc<dyn Connector>>> = BTreeMap::new();
    for p in &ws.policies.policies {
        if named.iter().any(|(q, _)| q.name == p.name) || p.objects.is_some() {
            continue;
        }
        let conn = match conns.get(&p.connection) {
            Some(c) => c.clone(),
            None => {
                if !others.contains_key(&p.connection) {
                    let opened = open_sql_read_only(ws, &p.connection).await;
                    if let Err(e) = &opened {
                        let mut w = p.error(
                            "dataset.connection",
                            format!(
                                "cannot tell whether connection '{}' reaches a database of this run's policies \
                                 (their purposes would not be merged with this policy's): {e:#}",
                                p.connection
                            ),
                        );
                        w.severity = crate::diag::Severity::Warning;
                        d.push(w);
                    }
                    others.insert(p.connection.clone(), opened.ok());
                }
                match &others[&p.connection] {
                    Some(c) => c.clone(),
                    None => {
                        named.push((p, Err(format!("connection '{}' could not be opened", p.connection))));
                        continue;
                    }
                }
            }
        };
        named.push((p, conn.identify(&p.table).await.map_err(|e| e.to_string())));
    }
    named
}

/// A SQL connection of the config opened read-only (as `plan` opens it), without its holds table,
/// within `OTHER_CONNECTION_WAIT` (not the run's own: a server down would hold every `-p` run up
/// for the pool's whole acquire timeout).
async fn open_sql_read_only(ws: &Workspace, name: &str) -> anyhow::Result<Arc<dyn Connector>> {
    const OTHER_CONNECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let c = &ws.config.connections[name];
    let url = c.url(name, &ws.config.base_dir)?;
    let open =
        SqlConnector::open(name, &url, true, &c.journal_table, None, std::time::Duration::from_secs(c.lock_wait));
    match tokio::time::timeout(OTHER_CONNECTION_WAIT, open).await {
        Ok(opened) => Ok(Arc::new(opened?)),
        Err(_) => anyhow::bail!("it did not answer within {} s", OTHER_CONNECTION_WAIT.as_secs()),
    }
}

/// Policies on one table share their purposes (keeping wins), matched by the connection and the
/// table's name as written: two policies that name the same table differently (`mp` and
/// `public.mp`; on SQLite `MP`), or through two connections that reach one database, would each
/// be enforced alone, and the shorter retention would destroy what the longer one keeps. Such a
/// pair is refused, the unselected policies of the open connections included.
fn same_table_spelled_alike(named: &Canonical, prepared: &[(&Policy, Prepared)], d: &mut Diagnostics) {
    let selected = |p: &Policy| prepared.iter().any(|(q, _)| q.name == p.name);
    for (i, (a, ia)) in named.iter().enumerate() {
        for (b, ib) in &named[i + 1..] {
            // A pair neither of which runs now is for the run that selects one of them.
            if !(selected(a) || selected(b)) {
                continue;
            }
            let (ia, ib) = match (ia, ib) {
                (Ok(Some(ia)), Ok(Some(ib))) => (ia, ib),
                // Fails closed: a table that could not be identified (its connection could not
                // be opened, its catalog not asked) may be this one when its name is.
                (Err(e), _) | (_, Err(e))
                    if (a.connection != b.connection || a.table != b.table)
                        && bare_name(&a.table) == bare_name(&b.table) =>
                {
                    let (sel, other) = if selected(a) { (a, b) } else { (b, a) };
                    d.push(
                        sel.error(
                            "dataset.table",
                            format!(
                                "cannot tell whether '{}' is the same table as '{}' of policy '{}' (connection '{}'): {e}; \
                                 if it is, their purposes would not be merged and the shorter retention would destroy what \
                                 the other keeps (make that connection reachable from here)",
                                sel.table, other.table, other.name, other.connection
                            ),
                        )
                        .unavailable(),
                    );
                    continue;
                }
                _ => continue,
            };
            if a.connection == b.connection && ia.canonical == ib.canonical && a.table != b.table {
                d.push(a.error(
                    "dataset.table",
                    format!(
                        "'{}' is the same table as '{}' of policy '{}': write its name the same way in both, \
                         so that each policy keeps the other's records while its purposes last",
                        a.table, b.table, b.name
                    ),
                ));
            } else if a.connection != b.connection && ia.place.is_some() && ia.place == ib.place {
                d.push(a.error(
                    "dataset.connection",
                    format!(
                        "table '{}' of connection '{}' is the same table as '{}' of connection '{}' (policy '{}'): \
                         the two connections reach one database; name it through the same connection, and the same way, \
                         in both policies, so that each keeps the other's records while its purposes last",
                        a.table, a.connection, b.table, b.connection, b.name
                    ),
                ));
            }
        }
    }
}

/// A table's name without its schema, unquoted, in lower case: two names that may be one table.
fn bare_name(t: &str) -> String {
    t.rsplit('.').next().unwrap_or(t).trim_matches(|c| c == '"' || c == '`').to_lowercase()
}

/// Whether a table identified as `ct` (named `t`) through policy `p`'s connection is policy
/// `q`'s table (identified as `cq`): on the same connection, by name as written or as the
/// catalog names it; through another connection that reaches the same database, by place.
fn same_table(p: &Policy, t: &str, ct: Option<&TableIdentity>, q: &Policy, cq: Option<&TableIdentity>) -> bool {
    match q.connection == p.connection {
        true => q.table == t || matches!((ct, cq), (Some(a), Some(b)) if a.canonical == b.canonical),
        false => matches!((ct, cq), (Some(a), Some(b)) if a.place.is_some() && a.place == b.place),
    }
}

/// A cascade deletes a dependent table's rows through its parent's checks only: another policy
/// on that table, and the holds that apply to it, are not consulted (a child under its own
/// policy's hold was deleted with its parent). Such a dependent must be `restrict` (the parent
/// waits until that policy has destroyed its children) — keeping wins.
async fn no_cascade_into_a_governed_table(
    named: &Canonical<'_>,
    conns: &Connections,
    prepared: &[(&Policy, Prepared)],
    d: &mut Diagnostics,
) {
    /// Every table a cascade reaches, with the first-level dependent it goes through.
    fn tables(c: &[crate::connector::Cascade], first: Option<&str>, out: &mut Vec<(String, String)>) {
        for n in c {
            let top = first.unwrap_or(&n.fk.table).to_string();
            out.push((n.fk.table.clone(), top.clone()));
            tables(&n.children, Some(&top), out);
        }
    }
    for (p, prep) in prepared {
        let mut reached = Vec::new();
        tables(&prep.cascade, None, &mut reached);
        let Some(conn) = conns.get(&p.connection) else { continue };
        if reached.is_empty() {
            continue;
        }
        let mut said = BTreeSet::new();
        // The other policies' tables in this database, each by its name as its own catalog
        // gives it, schema and all (a name as written resolves by this connection's search path
        // or database; found by a review): through another connection, the same table by the
        // catalog's place, as `same_table` tells (found by a review of this check). Looked up
        // once per policy, not per table the cascade reaches; `Err`: unknown (fails closed).
        let mut others: Vec<(&Policy, Result<String, String>)> = Vec::new();
        for (q, cq) in named.iter() {
            if q.name == p.name || q.objects.is_some() || (q.connection == p.connection && q.table == p.table) {
                continue;
            }
            let q_table = cq.as_ref().ok().and_then(|c| c.as_ref()).map_or(q.table.clone(), |c| c.canonical.clone());
            if q.connection == p.connection {
                others.push((q, Ok(q_table)));
                continue;
            }
            let there = cq.as_ref().ok().and_then(|c| c.as_ref()).and_then(|b| b.place.clone());
            match conn.identify(&q_table).await.map(|found| found.and_then(|a| a.place)) {
                Ok(here) if there.is_some() && here == there => others.push((q, Ok(q_table))),
                Err(e) if there.is_some() => others.push((q, Err(e.to_string()))),
                _ => {}
            }
        }
        // The tables referencing each of them.
        let mut referencing: BTreeMap<String, Result<BTreeSet<String>, String>> = BTreeMap::new();
        for (t, top) in reached.clone() {
            // Fails closed: a table the catalog cannot name is compared by its name only, and
            // a failed lookup is an error, not "no other policy".
            let ct = match conn.identify(&t).await {
                Ok(c) => c,
                Err(e) => {
                    d.push(p.error("dependents", format!("cannot check dependent '{t}': {e}")).unavailable());
                    continue;
                }
            };
            for (q, cq) in named.iter().filter(|(q, _)| q.name != p.name) {
                let same = match cq {
                    Ok(cq) => same_table(p, &t, ct.as_ref(), q, cq.as_ref()),
                    // Written alike on the same connection: the same table.
                    Err(_) if q.connection == p.connection && q.table == t => true,
                    // Fails closed where it may be the same table.
                    Err(e) if q.connection == p.connection || bare_name(&q.table) == bare_name(&t) => {
                        d.push(p.error("dependents", format!("cannot check dependent '{t}': {e}")).unavailable());
                        continue;
                    }
                    Err(_) => false,
                };
                if same && said.insert((t.clone(), q.name.clone())) {
                    let how = match top == t {
                        true => format!("declare '{t}' with on_delete: restrict (a record waits until '{}' has destroyed its dependents)", q.name),
                        false => format!(
                            "declare '{top}', through which it is reached, with on_delete: restrict, and give '{top}' a policy of its own"
                        ),
                    };
                    d.push(p.error(
                        "dependents",
                        format!(
                            "this policy's deletes cascade into '{t}', which policy '{}' governs: its legal holds \
                             would not keep those rows; {how}",
                            q.name
                        ),
                    ));
                }
            }
            // A cascaded child that also references another policy's table (a message of a
            // user and of a ticket) is that record's too: the cascade deleted it while the
            // ticket was held or not lapsed (found by a read-only review). Keeping wins: refused,
            // as a cascade into that table would be. (A child referencing the policy's own table
            // twice is kept by `Scope::shared_children`.)
            for (q, q_table) in &others {
                if q.table == t || reached.iter().any(|(r, _)| *r == q.table) {
                    continue; // a cascade into q's table itself: said above
                }
                let refs = match q_table {
                    Err(e) => Err(e.clone()),
                    Ok(q_table) => match referencing.get(q_table) {
                        Some(r) => r.clone(),
                        None => {
                            let r = conn
                                .describe(q_table)
                                .await
                                .map(|info| info.referenced_by.into_iter().map(|f| f.table).collect::<BTreeSet<_>>())
                                .map_err(|e| e.to_string());
                            referencing.insert(q_table.clone(), r.clone());
                            r
                        }
                    },
                };
                // (Even where a table above it references q's table too, an order's items that
                // name its customer: nothing proves the two keys name the same row, and a
                // message by a held person on another person's ticket went with the ticket;
                // found by a review. Refused: keeping wins.)
                let refers = match refs {
                    Ok(r) => r.contains(&t),
                    Err(e) => {
                        // Fails closed: whether the child is the other record's too is unknown.
                        if said.insert((t.clone(), q.name.clone())) {
                            d.push(
                                p.error(
                                    "dependents",
                                    format!("cannot check dependent '{t}' against policy '{}''s table: {e}", q.name),
                                )
                                .unavailable(),
                            );
                        }
                        continue;
                    }
                };
                if refers && said.insert((t.clone(), q.name.clone())) {
                    d.push(p.error(
                        "dependents",
                        format!(
                            "this policy's deletes cascade into '{t}', whose rows also reference table '{}', which policy '{}' governs: \
                             that policy's legal holds and retention would not keep those rows; declare '{top}' with \
                             on_delete: restrict and give '{t}' a policy of its own",
                            q.table, q.name
                        ),
                    ));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Run,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Default: now (millisecond precision).
    pub cutoff: Option<DateTime<Utc>>,
    /// Policies exempt from the guardrail for this run (`*` for all).
    pub allow_share: Vec<String>,
    pub batch_size: Option<u32>,
    /// Stop each stage after this many batches (staged roll-outs; tests of resumption).
    pub max_batches: Option<u64>,
    /// Where reports go (default: the config's `reports.dir`).
    pub report_dir: Option<PathBuf>,
    /// This worker's shard of a run split across workers (`--shard i/n`); see [`crate::shard`].
    pub shard: Option<crate::shard::Shard>,
    /// The run's selection of policies as asked (`--policy`; empty: all), when `prepared` is
    /// narrower than it: a shard prepares only its own policies, and its report must still
    /// name the selection every shard of the run shares (`report combine` compares them).
    pub selection: Option<Vec<String>>,
}

struct Ctx<'a> {
    mode: Mode,
    run_id: String,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    key: &'a EvidenceKey,
    holds: &'a [Hold],
    opts: &'a Options,
    defaults: &'a config::Defaults,
    /// This policy's guardrail ([`table_max_share`]) and the policy that sets it.
    max_share: (f64, String),
    pseudonym_key: Option<Vec<u8>>,
    cancel: &'a AtomicBool,
    evidence: Option<&'a mut EvidenceSink>,
    /// Write-ahead intents of batches whose connector has no journaled destroy (run only).
    intents: Option<&'a mut IntentLog>,
    /// This shard's part of a key-sharded policy (`None`: the whole policy).
    part: Option<Filter>,
    /// The run's SQL connections that have a holds table, by name: an object policy's holds
    /// are read from them (its store has none of its own).
    hold_tables: &'a [(String, Arc<dyn Connector>)],
    /// Per evidence file of a run that ended without its report, per policy: its lines that the
    /// policy's journal does not hold (`reconcile_journal`; `InterruptedRun::unconfirmed`).
    unconfirmed: &'a mut BTreeMap<String, BTreeMap<String, u64>>,
    /// Every policy the policy files name (selected or not).
    policy_names: &'a BTreeSet<String>,
    /// The (connection, evidence file) pairs whose journal was searched this run for batches
    /// of policies no policy file names now (`unnamed_journal_batches`).
    journals_named: &'a mut BTreeSet<(String, String)>,
    /// Whether the intents were searched this run for those of such policies (`reconcile`).
    intents_named: &'a mut bool,
}

/// Streams evidence lines to `<report>.evidence.jsonl`, hashing as it goes. Lines are formatted,
/// hashed and written on the sink's own thread, so that a batch's evidence is written while the
/// next batch is destroyed; [`EvidenceSink::flush`] waits until everything sent is on disk.
pub struct EvidenceSink {
    path: PathBuf,
    /// Bounded: a writer that falls behind holds the batch loop back instead of its memory.
    tx: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
    worker: Option<std::thread::JoinHandle<anyhow::Result<(String, u64)>>>,
    /// What the writer failed on, once it has: nothing more is destroyed after that.
    failed: Option<String>,
    /// The file's lock, until [`EvidenceSink::take_lock`].
    lock: Option<std::fs::File>,
}

/// How much evidence the writer lets pile up unsynced (a batch of 5,000 records is about
/// 1.3 MB): each sync then takes a few milliseconds of the writer's thread, none of the batches'.
const EVIDENCE_SYNC_BYTES: usize = 8 << 20;

enum SinkMsg {
    /// One serialized line, newline included.
    Line(Vec<u8>),
    /// Lines of one batch: `{"record":"<hex>"[,"subject":"<hex>"]` + `rest` each.
    Batch { rest: String, ids: Vec<(String, Option<String>)> },
    /// Answer once everything before is written and synced to disk.
    Sync(std::sync::mpsc::Sender<()>),
}

impl EvidenceSink {
    fn create(path: PathBuf) -> anyhow::Result<EvidenceSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create report directory '{}': {e}", dir.display()))?;
        }
        // Locked before it appears under its name (written under a temporary name, locked,
        // renamed): a run that finds it without its report can tell this run, still going on,
        // from one that ended without writing its report (`report::orphan_evidence`). The
        // kernel releases the lock when the process ends, however it ends.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot create evidence file '{}': {e}", path.display());
        let file = std::fs::File::create(&tmp).map_err(cannot)?;
        let lock = file.try_clone().map_err(cannot)?;
        let lock = match lock.try_lock() {
            Ok(()) => Some(lock),
            Err(e) => {
                tracing::warn!("cannot lock this run's evidence file '{}': {e}", path.display());
                None
            }
        };
        std::fs::rename(&tmp, &path).map_err(cannot)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkMsg>(4);
        let worker = std::thread::Builder::new().name("lapse-evidence".into()).spawn(move || {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut hash = Sha256::new();
            let mut records = 0u64;
            let mut line = Vec::with_capacity(256);
            // Bytes written since the last sync. Synced as they pile up, on this thread and so
            // behind the batches: otherwise the kernel holds them all (it starts writing dirty
            // pages only after 30 s or at a tenth of memory), and the sync at the policy's end,
            // which the run waits for, writes the whole file: 48 ms of a 0.85 s run for the
            // 77 MB of 297,000 records.
            let mut unsynced = 0usize;
            fn sync(file: &mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()> {
                file.flush()?;
                file.get_ref().sync_data()
            }
            for msg in rx {
                match msg {
                    SinkMsg::Line(l) => {
                        hash.update(&l);
                        file.write_all(&l)?;
                        records += 1;
                        unsynced += l.len();
                    }
                    SinkMsg::Batch { rest, ids } => {
                        // Keyed hashes are hex digits, which JSON needs no escaping for; anything
                        // else (never the case) is escaped as `serde_json` would.
                        let string = |line: &mut Vec<u8>, v: &str| -> std::io::Result<()> {
                            // Without an early exit, so that the loop can be vectorized: the
                            // byte-at-a-time check was a quarter of lapse's own CPU time
                            // (`perf`, a PostgreSQL delete of 297,000 rows).
                            if v.bytes().fold(true, |ok, b| ok & b.is_ascii_hexdigit()) {
                                line.push(b'"');
                                line.extend_from_slice(v.as_bytes());
                                line.push(b'"');
                                Ok(())
                            } else {
                                serde_json::to_writer(line, v).map_err(std::io::Error::other)
                            }
                        };
                        for (record, subject) in &ids {
                            line.clear();
                            line.extend_from_slice(br#"{"record":"#);
                            string(&mut line, record)?;
                            if let Some(s) = subject {
                                line.extend_from_slice(br#","subject":"#);
                                string(&mut line, s)?;
                            }
                            line.extend_from_slice(rest.as_bytes());
                            line.push(b'\n');
                            hash.update(&line);
                            file.write_all(&line)?;
                            records += 1;
                            unsynced += line.len();
                        }
                        // To the OS: a killed process loses none of it.
                        file.flush()?;
                    }
                    SinkMsg::Sync(done) => {
                        sync(&mut file)?;
                        unsynced = 0;
                        let _ = done.send(());
                    }
                }
                if unsynced >= EVIDENCE_SYNC_BYTES {
                    sync(&mut file)?;
                    unsynced = 0;
                }
            }
            sync(&mut file)?;
            Ok((hex::encode(hash.finalize()), records))
        })?;
        Ok(EvidenceSink { path, tx: Some(tx), worker: Some(worker), failed: None, lock })
    }

    /// The lock of the evidence file, to be held until the run's report is written.
    fn take_lock(&mut self) -> Option<std::fs::File> {
        self.lock.take()
    }

    /// Whether the writer still runs. It stops only on an error (a full disk), which this
    /// returns: a batch whose evidence cannot be written must not be destroyed. (The writer
    /// works behind the batches, so the batch that met the error may have committed; its
    /// records are in its journal rows or write-ahead intents.)
    fn check(&mut self) -> anyhow::Result<()> {
        match &self.worker {
            Some(w) if !w.is_finished() => Ok(()),
            _ => Err(self.stop()),
        }
    }

    fn send(&mut self, msg: SinkMsg) -> anyhow::Result<()> {
        match self.tx.as_ref().map(|tx| tx.send(msg)) {
            Some(Ok(())) => Ok(()),
            // The writer stopped on an error: that error.
            _ => Err(self.stop()),
        }
    }

    /// What the writer failed on, from its thread's end: its error, or (a panic, or no error)
    /// that it stopped.
    fn failure(&self, ended: std::thread::Result<Option<anyhow::Error>>) -> String {
        match ended {
            Ok(Some(e)) => format!("writing evidence file '{}': {e}", self.path.display()),
            _ => format!("evidence file '{}': the writer stopped", self.path.display()),
        }
    }

    /// Ends the writer after a failure and returns what it failed on (the first failure, on
    /// every call).
    fn stop(&mut self) -> anyhow::Error {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            self.failed = Some(self.failure(w.join().map(|r| r.err())));
        }
        anyhow::anyhow!("{}", self.failed.as_deref().unwrap_or("evidence file: the writer stopped"))
    }

    fn write(&mut self, e: &Evidence) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(e)?;
        line.push(b'\n');
        self.send(SinkMsg::Line(line))
    }

    /// The lines of one batch: `proto` gives everything but the record and subject hashes. The
    /// same bytes as [`EvidenceSink::write`] per line, without serializing the batch's common
    /// fields once per record; the lines are put together on the sink's thread.
    fn write_batch(&mut self, proto: &Evidence, ids: Vec<(String, Option<String>)>) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let common = serde_json::to_string(&Evidence { record: String::new(), subject: None, ..proto.clone() })?;
        let Some(rest) = common.strip_prefix(r#"{"record":"""#) else { anyhow::bail!("evidence line layout changed") };
        self.send(SinkMsg::Batch { rest: rest.to_string(), ids })
    }

    /// Waits until every line sent is written and synced to disk.
    fn flush(&mut self) -> anyhow::Result<()> {
        let (done, wait) = std::sync::mpsc::channel();
        self.send(SinkMsg::Sync(done))?;
        match wait.recv() {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stop()),
        }
    }

    /// Ends the writer. After a failure, the error, and the file as the failure left it, cut
    /// back to its last whole line and described as it is (`None` if it cannot be read): the
    /// report still binds the evidence that was written, and says what is missing.
    fn finish(mut self) -> (Option<EvidenceFile>, Option<anyhow::Error>) {
        self.tx = None;
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if self.failed.is_none() {
            match self.worker.take().map(|w| w.join()) {
                Some(Ok(Ok((sha256, records)))) => return (Some(EvidenceFile { file: name, sha256, records }), None),
                Some(Ok(Err(e))) => self.failed = Some(self.failure(Ok(Some(e)))),
                _ => self.failed = Some(self.failure(Ok(None))),
            }
        }
        let e = anyhow::anyhow!("{}", self.failed.as_deref().unwrap_or("evidence file: the writer stopped"));
        let as_written = (|| -> std::io::Result<EvidenceFile> {
            let mut bytes = std::fs::read(&self.path)?;
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole < bytes.len() {
                bytes.truncate(whole);
                let f = std::fs::OpenOptions::new().write(true).open(&self.path)?;
                f.set_len(whole as u64)?;
                f.sync_all()?;
            }
            let records = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            Ok(EvidenceFile { file: name.clone(), sha256: hex::encode(Sha256::digest(&bytes)), records })
        })();
        match as_written {
            Ok(ev) => (Some(ev), Some(e)),
            Err(read) => (None, Some(anyhow::anyhow!("{e}; and it cannot be read back: {read}"))),
        }
    }
}

/// Another worker holds the run lock of a policy: this run did nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "policy '{policy}' is being enforced by another lapse worker (its run lock on connection '{connection}' is held); this run changed nothing"
)]
pub struct Busy {
    pub policy: String,
    pub connection: String,
}

/// The result of a plan or run.
pub struct Outcome {
    pub report: Report,
    pub report_path: PathBuf,
    /// Set when `reports.s3` is configured and storing the reports there failed (the next run
    /// uploads what is missing).
    pub archive_error: Option<String>,
}

/// [`crate::integrity::lock_chain`] off the async workers (it waits while another process holds
/// the lock).
async fn lock_chain(dir: &Path) -> anyhow::Result<std::fs::File> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::integrity::lock_chain(&dir))
        .await
        .map_err(|e| anyhow::anyhow!("locking the report chain: {e}"))?
}

/// Plans or runs the prepared policies and writes the report.
pub async fn execute(
    ws: &Workspace,
    prepared: &[(&Policy, Prepared)],
    conns: &Connections,
    key: &EvidenceKey,
    mode: Mode,
    opts: &Options,
    cancel: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let started_at = Utc::now();
    let cutoff = opts.cutoff.unwrap_or(started_at).trunc_subsecs(3);
    let run_id = uuid::Uuid::new_v4().to_string();
    let pseudonym_key = match &ws.config.pseudonymization {
        Some(r) => Some(config::read_secret(r, &ws.config.base_dir, "pseudonymization key")?),
        None => None,
    };
    // Holds are judged as of the run's start; a `plan` that looks ahead (`--cutoff` in the
    // future), as of its cutoff: what a run then would find (before, a hold that ends before
    // that cutoff was counted as keeping; found by a review). A run keeps every hold in force.
    let holds_at = match mode {
        Mode::Plan => cutoff.max(started_at),
        _ => started_at,
    };
    let active: Vec<Hold> = ws.holds.iter().filter(|h| h.active_at(holds_at)).cloned().collect();
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        run_id: run_id.clone(),
        mode: if mode == Mode::Plan { "plan".into() } else { "run".into() },
        status: "complete".into(),
        started_at,
        finished_at: None,
        cutoff,
        tool: report::Tool { name: "lapse", version: env!("CARGO_PKG_VERSION") },
        evidence_key_id: key.key_id(),
        evidence_incomplete: false,
        policy_files: ws.policies.files.clone(),
        inputs: Some(report::Inputs {
            config: report::KeyedDigest {
                path: ws.config.path.display().to_string(),
                hmac_sha256: key.file_digest(&ws.config.sha256),
            },
            holds_file: ws.config.holds_file.as_ref().zip(ws.holds_sha256.as_ref()).map(|(f, sha)| {
                report::KeyedDigest {
                    path: ws.config.resolve(f).display().to_string(),
                    hmac_sha256: key.file_digest(sha),
                }
            }),
        }),
        selected_policies: {
            let mut names: Vec<String> = match &opts.selection {
                Some(asked) => asked.clone(),
                None => prepared.iter().map(|(p, _)| p.name.clone()).collect(),
            };
            names.sort();
            names.dedup();
            if names.is_empty() || names.len() == ws.policies.policies.len() {
                Vec::new()
            } else {
                names
            }
        },
        holds: active
            .iter()
            .map(|h| report::HoldInfo {
                id: h.id.clone(),
                matter: h.matter.clone(),
                source: "file".into(),
                reason: h.reason.clone(),
                subject_count: h.subject_count,
                policies: h.policies.clone(),
                expires: h.expires,
            })
            .collect(),
        policies: Vec::new(),
        sequence: 0,
        previous: None,
        signing_key_id: None,
        evidence: None,
        shard: opts.shard.map(|s| report::ShardInfo { index: s.index, count: s.count }),
        interrupted_runs: Vec::new(),
        previous_unverified: None,
    };
    let mut report_dir = opts.report_dir.clone().unwrap_or_else(|| ws.config.resolve(&ws.config.reports.dir));
    if let Some(x) = reports_inside_a_dataset(&ws.config, &ws.policies.policies, &report_dir).into_iter().next() {
        // (`reports.dir` was checked when the workspace was loaded; this is `--report-dir`.)
        anyhow::bail!("{x}");
    }
    if let Some(s) = opts.shard {
        // One report chain per shard: shards run at once and must not fork each other's chain.
        report_dir = report_dir.join(s.dir_name());
    }
    // This shard's policies, of the run's selection (`opts.selection`, when `prepared` may be
    // wider than it: never a policy nobody asked for).
    let prepared: Vec<&(&Policy, Prepared)> = prepared
        .iter()
        .filter(|(p, _)| opts.shard.is_none_or(|s| s.takes(p)))
        .filter(|(p, _)| opts.selection.as_ref().is_none_or(|sel| sel.is_empty() || sel.contains(&p.name)))
        .collect();
    if mode == Mode::Run {
        // One worker per policy at a time: the locks die with the process (see `try_run_lock`).
        // A shard locks only its policies, and only its part of a key-sharded one.
        for (p, _) in &prepared {
            let conn = &conns[&p.connection];
            let got = conn.try_run_lock(&run_lock_name(p, opts), p.objects.as_ref()).await?;
            if !got {
                return Err(Busy { policy: p.name.clone(), connection: p.connection.clone() }.into());
            }
        }
    }
    // The report bucket is checked, and its chain head read, before anything is destroyed.
    let report_bucket = match mode {
        Mode::Run => crate::reporting::sink::S3Reports::from_config(&ws.config).await.map(|b| match opts.shard {
            Some(s) => b.subdir(&s.dir_name()),
            None => b,
        }),
        Mode::Plan => None,
    };
    let bucket_head = match &report_bucket {
        Some(b) => {
            b.check().await?;
            b.chain_head().await?
        }
        None => None,
    };
    let mut sink = match mode {
        Mode::Run => {
            // The report chain can be locked (a volume without locks stops the run here,
            // before anything is destroyed, not after).
            drop(lock_chain(&report_dir).await?);
            // The connections of the policies to run (not one opened only for its holds table).
            let used: BTreeSet<&String> = prepared.iter().map(|(p, _)| &p.connection).collect();
            for c in used {
                conns[c].prepare_run().await?;
            }
            let name = format!("{}.evidence.jsonl", report.file_stem());
            let sink = EvidenceSink::create(report_dir.join(&name))?;
            report::mark_evidence_key(&report_dir, &name, &key.key_id());
            Some(sink)
        }
        Mode::Plan => None,
    };
    // Locked until this function returns, after the report is written (or the process ends):
    // a run finding this evidence file without its report knows this run is still going on.
    let _evidence_lock = sink.as_mut().and_then(EvidenceSink::take_lock);
    let mut intents = match mode {
        Mode::Run => Some(IntentLog::new(report_dir.clone(), report.file_stem())),
        Mode::Plan => None,
    };
    // Holds-table holds in force for a policy that does not exist hold nothing: a typo, or a
    // retired policy. Said before anything is destroyed, and in the report's hold entry.
    // Every holds table of the run: those of the policies' connections, and those opened for
    // object policies (`Workspace::connect`).
    // A holds table holds the tables of its own connection and every object policy: a row
    // naming a SQL policy of another connection holds nothing either (before, it was taken
    // for a known policy and said nowhere: found by a review).
    let known_by = |conn: &str| -> Vec<String> {
        ws.policies
            .policies
            .iter()
            .filter(|p| p.objects.is_some() || p.connection == conn)
            .map(|p| p.name.clone())
            .collect()
    };
    let hold_tables: Vec<(String, Arc<dyn Connector>)> =
        conns.iter().filter(|(_, c)| c.holds_table().is_some()).map(|(n, c)| (n.clone(), c.clone())).collect();
    let mut stray_holds: BTreeMap<String, String> = BTreeMap::new();
    for (name, c) in &ws.config.connections {
        if let (Some(h), false) = (&c.holds_table, hold_tables.iter().any(|(n, _)| n == name)) {
            if known_by(name).is_empty() {
                tracing::warn!(
                    "connection '{name}': holds table '{}' holds nothing: a holds table holds its own connection's tables and the object policies, and this connection has neither",
                    h.table
                );
            }
        }
    }
    for (name, conn) in &hold_tables {
        let Some(h) = conn.holds_table() else { continue };
        let known = known_by(name);
        let note = match conn.holds_of_other_policies(&known, started_at).await {
            Ok(names) if names.is_empty() => String::new(),
            Ok(names) => {
                // Quoted only when it could be a policy's name: the column is the database's,
                // and what else it holds is not for a log.
                let (elsewhere, unknown): (Vec<&String>, Vec<&String>) =
                    names.iter().partition(|n| ws.policies.policies.iter().any(|p| &p.name == *n));
                let said = |names: Vec<&String>| -> Vec<String> {
                    names
                        .into_iter()
                        .map(|n| {
                            if policy::valid_policy_name(n) {
                                format!("'{n}'")
                            } else {
                                "(a value that is no policy name)".into()
                            }
                        })
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                };
                let plural = |n: &[String]| if n.len() == 1 { "policy" } else { "policies" };
                let (unknown, elsewhere) = (said(unknown), said(elsewhere));
                let mut parts = Vec::new();
                if !unknown.is_empty() {
                    parts.push(format!("{} {}, which no policy is named", plural(&unknown), unknown.join(", ")));
                }
                if !elsewhere.is_empty() {
                    parts.push(format!(
                        "{} {} of another connection (a holds table holds its own connection's tables and the object policies)",
                        plural(&elsewhere),
                        elsewhere.join(", ")
                    ));
                }
                format!("holds in force name {}: they hold nothing", parts.join(", and "))
            }
            Err(e) => format!("the policies its holds name could not be read: {e}"),
        };
        if !note.is_empty() {
            tracing::warn!("connection '{name}': holds table '{}': {note}", h.table);
        }
        stray_holds.insert(name.clone(), note);
    }
    // A policy that stopped part-way makes the run `incomplete` (per-record failures: `partial`).
    let mut aborted = false;
    let mut unconfirmed = BTreeMap::new();
    let policy_names: BTreeSet<String> = ws.policies.policies.iter().map(|p| p.name.clone()).collect();
    let mut journals_named = BTreeSet::new();
    let mut intents_named = false;
    for (p, prep) in prepared {
        crate::progress::touch();
        let conn = conns[&p.connection].clone();
        let mut ctx = Ctx {
            mode,
            run_id: run_id.clone(),
            cutoff,
            now: holds_at,
            key,
            holds: &active,
            opts,
            defaults: &ws.config.defaults,
            max_share: table_max_share(ws, p),
            pseudonym_key: pseudonym_key.clone(),
            cancel,
            evidence: sink.as_mut(),
            intents: intents.as_mut(),
            part: opts.shard.and_then(|s| s.part(p)),
            hold_tables: &hold_tables,
            unconfirmed: &mut unconfirmed,
            policy_names: &policy_names,
            journals_named: &mut journals_named,
            intents_named: &mut intents_named,
        };
        let mut pr = describe_policy(p, prep, &ctx);
        if cancel.load(Ordering::SeqCst) {
            // Interrupted before this policy began: not counted (the grace period is for the
            // batch in flight, not for more counts), nothing done.
            pr.outcome = "interrupted".into();
            pr.errors.push("not started: the run was interrupted before this policy".into());
            report.policies.push(pr);
            continue;
        }
        if let Some(Err(e)) = ctx.evidence.as_deref_mut().map(EvidenceSink::check) {
            // The evidence of what it would destroy could not be written: nothing of it is.
            pr.outcome = "failed".into();
            pr.errors.push(format!("not started: {e}; nothing more is destroyed in this run"));
            report.policies.push(pr);
            aborted = true;
            continue;
        }
        // At ERROR level, so that it is enabled under every filter: at INFO, `--quiet` (filter
        // `warn`) disabled it and the warnings of policy work lost their policy and run id
        // (found by a README walkthrough). A span prints nothing of its own.
        let span = tracing::error_span!("policy", run_id = %run_id, policy = %p.name);
        let t0 = std::time::Instant::now();
        // A policy that fails part-way (a lost connection, even a bug's panic) keeps what it
        // committed in `pr`; the run goes on with the next policy and the report says
        // `incomplete`. `instrument`, not `enter`: a guard held across `.await` would tag other
        // tasks' lines and lose the span when the task resumes on another worker thread.
        let work =
            std::panic::AssertUnwindSafe(enforce(p, prep, conn.as_ref(), &mut ctx, &mut pr).instrument(span.clone()));
        let result = futures::FutureExt::catch_unwind(work).await;
        let _g = span.enter(); // synchronous code only, to the end of this iteration
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("internal error (panic) while enforcing; see the log".to_string()),
        };
        if let Some(e) = failure {
            tracing::error!("{e}");
            pr.errors.push(e);
            pr.outcome = "failed".into();
            aborted = true;
        }
        // Its evidence on disk before the next policy starts: a write that fails now (the
        // writer works behind the batches) is this policy's, whose last lines are lost. (With
        // nothing written since the last sync, a sync costs nothing.)
        if let Some(Err(e)) = ctx.evidence.as_deref_mut().map(EvidenceSink::flush) {
            let e = format!("{e:#}");
            if !pr.errors.iter().any(|x| x.contains(&e)) {
                tracing::error!("{e}");
                pr.errors.push(format!("{e}: the evidence of its last records may be missing"));
            }
            pr.outcome = "failed".into();
            aborted = true;
        }
        pr.duration_seconds = t0.elapsed().as_secs_f64();
        tracing::info!(
            outcome = %pr.outcome, due = pr.rows_due, deleted = pr.deleted, anonymized = pr.anonymized,
            fields_anonymized = pr.fields_anonymized, held = pr.held, failed = pr.failed, "policy finished"
        );
        report.policies.push(pr);
        // Table holds become known while counting. An object policy's are those of every
        // holds table of the run.
        let sources: Vec<(&String, &Arc<dyn Connector>)> = match p.objects.is_some() {
            true => hold_tables.iter().map(|(n, c)| (n, c)).collect(),
            false => vec![(&p.connection, &conn)],
        };
        for (name, c) in sources {
            let Some(h) = c.holds_table() else { continue };
            let src = format!("table:{name}");
            if !report.holds.iter().any(|x| x.source == src) {
                let note = stray_holds.get(name).filter(|n| !n.is_empty());
                report.holds.push(report::HoldInfo {
                    id: format!("{}.*", h.table),
                    matter: format!("holds table '{}'", h.table),
                    source: src,
                    reason: note.cloned(),
                    subject_count: 0,
                    policies: vec![],
                    expires: None,
                });
            }
        }
    }
    table_hold_matters(&mut report, &hold_tables, holds_at, cancel).await;
    if let Some(s) = sink {
        let path = s.path.clone();
        let (evidence, failed) = s.finish();
        report.evidence = evidence;
        report.evidence_incomplete = failed.is_some() && mode == Mode::Run;
        if let (true, Some(dir), Some(name)) = (report.evidence_incomplete, path.parent(), path.file_name()) {
            report::mark_evidence_incomplete(dir, &name.to_string_lossy());
        }
        if let Some(e) = failed {
            // The report still says what was committed; the evidence file binds what was
            // written, and the policy whose lines were lost says so. (A policy that met the
            // failure itself already says it.)
            let e = format!("{e:#}");
            tracing::error!("{e}");
            aborted = true;
            // Every policy's evidence was synced as it ended: a policy that met the failure
            // says so; otherwise the lines lost are the last destroying policy's.
            let met = report.policies.iter().any(|p| p.errors.iter().any(|x| x.contains(&e)));
            let last =
                report.policies.iter_mut().rev().find(|p| {
                    p.deleted + p.anonymized + p.versions_deleted + p.reconciled > 0 || p.fields_anonymized > 0
                });
            if let Some(p) = last.filter(|_| !met) {
                p.errors.push(format!("{e}: the evidence of its last records may be missing"));
                p.outcome = "failed".into();
            }
        }
    }
    report.finished_at = Some(Utc::now());
    report.status = if cancel.load(Ordering::SeqCst) || aborted {
        "incomplete".into()
    } else if report.policies.iter().any(|p| p.failed > 0 || p.outcome == "failed") {
        "partial".into()
    } else if report.policies.iter().any(|p| p.guardrail.tripped) {
        "guardrail".into()
    } else {
        "complete".into()
    };
    let signer = match &ws.config.reports.signing_key {
        Some(r) => Some(crate::integrity::Signer::from_secret(&config::read_secret(
            r,
            &ws.config.base_dir,
            "report signing key",
        )?)?),
        None => None,
    };
    report.signing_key_id = signer.as_ref().map(|s| s.key_id());
    // Runs of other policies may share the directory: the chain head is read and this report
    // written under an exclusive lock of the directory, else two reports could name the same
    // previous one and fork the chain (`report verify` would refuse it).
    // (Taken once before anything was destroyed: a directory that cannot be locked stopped the
    // run then. If it fails now all the same, the report is still written.)
    let chain_lock = match mode {
        Mode::Run => match lock_chain(&report_dir).await {
            Ok(lock) => Some(lock),
            Err(e) => {
                tracing::error!("{e:#}; the report is written without it");
                None
            }
        },
        Mode::Plan => None,
    };
    if mode == Mode::Run {
        // Chain: this run report points at the newest run report of the directory (a report
        // a killed run signed but did not rename first takes its name).
        // Only under the lock: without it, the write it would finish may be a live run's.
        if chain_lock.is_some() {
            for r in report::finish_interrupted_writes(&report_dir, signer.as_ref()) {
                tracing::warn!("finished the report write an interrupted run left: {}", r.display());
            }
            // Runs that ended without a report: this report accounts for their evidence.
            report.interrupted_runs = report::unreported_evidence(&report_dir, &report.file_stem());
            for r in &mut report.interrupted_runs {
                r.unconfirmed = unconfirmed.remove(&r.evidence.file).unwrap_or_default();
            }
            for r in &report.interrupted_runs {
                tracing::warn!(
                    evidence = %r.evidence.file,
                    records = r.evidence.records,
                    "a run ended without its report ({}): this report accounts for its evidence",
                    r.report
                );
            }
        }
        // Files this report does not list (another run's report accounted for them since they
        // were checked, or the directory could not be locked): said by the policy, as when an
        // earlier report had (`reconcile_journal`), not lost.
        for (file, policies) in std::mem::take(&mut unconfirmed) {
            for (policy, lines) in policies {
                if let Some(pr) = report.policies.iter_mut().find(|p| p.name == policy) {
                    pr.errors.push(unconfirmed_words(lines, &file));
                }
            }
        }
        let local = crate::integrity::chain_head(&report_dir)?;
        // The bucket's head again, now: another worker sharing the bucket (not this directory)
        // may have stored a report since this run began. (If it cannot be read now, the one
        // read at the start.)
        let bucket_head = match &report_bucket {
            Some(b) => match b.chain_head().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(
                        "reading the report bucket's chain head again: {e:#}; using the one read at the start"
                    );
                    bucket_head
                }
            },
            None => None,
        };
        report.previous = match (local, bucket_head) {
            (Some(l), Some(b)) => Some(if b.sequence > l.sequence { b } else { l }),
            (l, b) => l.or(b),
        };
        report.sequence = report.previous.as_ref().map_or(1, |p| p.sequence + 1);
        // A head in this directory that this run's key did not sign (a forged report would be
        // chained to, and vouched for, silently): said in this signed report.
        if let (Some(k), Some(prev)) = (signer.as_ref(), report.previous.as_ref()) {
            if let Ok(bytes) = std::fs::read(report_dir.join(&prev.file)) {
                let sig = report_dir.join(format!("{}.sig", prev.file));
                if !crate::integrity::signature_file_signs(&k.verifying_key(), &bytes, &sig) {
                    let why = format!(
                        "the previous report {} carries no signature by this run's signing key {}: written without signing, signed with another key, or put there; `lapse report verify` with the right public keys tells which",
                        prev.file,
                        k.key_id()
                    );
                    tracing::warn!("{why}");
                    report.previous_unverified = Some(why);
                }
            }
        }
        // The markers of the evidence this report accounts for name it, before it is written,
        // and before its bucket claim hashes it: an interrupted run whose marker cannot be
        // written is left out of the report, which changes its bytes (marked after the claim,
        // a genuine report differed from its own locked claim for good: `altered`; found by a
        // review).
        let name = format!("{}.json", report.file_stem());
        report::mark_accounted(&report_dir, &mut report, &name);
        // Sealed now, under the lock and after the heads were read: the chain's order is the
        // order of `finished_at` (a head this report follows was sealed before it was read).
        report.finished_at = Some(Utc::now());
        if let Some(b) = &report_bucket {
            claim_sequence(b, &mut report).await;
        }
    }
    let report_path = report.write(&report_dir, signer.as_ref())?;
    drop(chain_lock);
    // The report names the evidence key now (unless its evidence was cut short: later runs
    // reconcile that file with the journal, and read the note).
    if let Some(ev) = report.evidence.as_ref().filter(|_| !report.evidence_incomplete) {
        report::forget_evidence_key(&report_dir, &ev.file);
    }
    if let Some(log) = intents.filter(|_| matches!(report.status.as_str(), "complete" | "guardrail")) {
        // The report and its evidence now account for every intent of this run. (After a
        // failure the file stays: a deletion whose answer was lost may have happened, and the
        // next run reconciles it.)
        if let Err(e) = log.close() {
            tracing::warn!("cannot remove this run's intent journal (the next run removes it): {e}");
        }
    }
    let mut archive_error = None;
    if let Some(b) = &report_bucket {
        match b.store_dir(&report_dir).await {
            Ok(names) => {
                tracing::info!(files = names.len(), location = %b.url(), "reports stored on the report bucket")
            }
            Err(e) => {
                tracing::error!(
                    "the report was written to {} but not stored on the report bucket: {e:#}",
                    report_dir.display()
                );
                archive_error = Some(format!("{e:#}"));
            }
        }
    }
    Ok(Outcome { report, report_path, archive_error })
}

/// The matter of each holds-table hold that kept records in this run, read from its table
/// (where the connection names a matter column) and added to `report.holds` beside the table's
/// own entry (`<table>.*`), so that the certificate names the matter a held record was kept
/// for, as it does for the holds file's. A SQL policy's hold is its connection's; an object
/// policy's, whichever holds table's (its `held_by` has the bare id): named only when every
/// holds table was read (each has a matter column and answered) and exactly one has that id
/// in force (two tables' holds of one id took one's matter for both: found by a review). A
/// table that cannot be read now is warned of: the records were kept, and the report says by
/// which hold id. Not after a signal: the grace is for the report.
async fn table_hold_matters(
    report: &mut Report,
    hold_tables: &[(String, Arc<dyn Connector>)],
    now: DateTime<Utc>,
    cancel: &AtomicBool,
) {
    if cancel.load(Ordering::SeqCst) {
        return;
    }
    let file_ids: BTreeSet<String> = report.holds.iter().filter(|h| h.source == "file").map(|h| h.id.clone()).collect();
    let held = |p: &PolicyReport| -> Vec<String> {
        p.held_by
            .iter()
            .filter(|(id, n)| **n > 0 && !id.starts_with("storage:") && !file_ids.contains(*id))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let mut matters: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for (name, conn) in hold_tables {
        let holds =
            report.policies.iter().filter(|p| p.is_objects() || p.connection == *name).any(|p| !held(p).is_empty());
        if !holds || conn.holds_table().is_none_or(|h| h.matter.is_none()) {
            continue;
        }
        match retry(|| conn.hold_matters(now)).await {
            Ok(m) => matters.push((name.clone(), m.into_iter().collect())),
            Err(e) => tracing::warn!("connection '{name}': {e:#}; the report names its holds by id only"),
        }
    }
    let every_table_read = matters.len() == hold_tables.len();
    let mut named: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in &report.policies {
        if p.is_objects() && !every_table_read {
            continue;
        }
        for id in held(p) {
            let mut owners =
                matters.iter().filter(|(n, m)| (p.is_objects() || p.connection == *n) && m.contains_key(&id));
            if let (Some((n, m)), None) = (owners.next(), owners.next()) {
                named.insert((n.clone(), id.clone()), m[&id].clone());
            }
        }
    }
    for ((name, id), matter) in named {
        report.holds.push(report::HoldInfo {
            id,
            matter,
            source: format!("table:{name}"),
            reason: None,
            subject_count: 0,
            policies: vec![],
            expires: None,
        });
    }
}

/// Claims the report's sequence on the report bucket before the report is written, so that
/// workers sharing only the bucket never fork its chain: a sequence another report claimed first
/// sends this one after the bucket's head, read again, until a claim holds. A bucket that cannot
/// be claimed on (unreachable, or refusing) leaves the report as it is, said in the log: the
/// report is written all the same (the destruction happened), and `report verify` would show a
/// fork that resulted.
async fn claim_sequence(b: &crate::reporting::sink::S3Reports, report: &mut Report) {
    use crate::reporting::sink::Claim;
    const TRIES: u32 = 10;
    for attempt in 1..=TRIES {
        let link = match report.link() {
            Ok(l) => l,
            Err(e) => return tracing::warn!("cannot claim the report's sequence on the report bucket: {e:#}"),
        };
        match b.claim(&link).await {
            Ok(Claim::Claimed) => return,
            Ok(Claim::Taken) => {
                tracing::info!(
                    sequence = link.sequence,
                    "another report claimed this sequence first: chaining after it"
                );
                match b.chain_head().await {
                    // (Never its own claim: `claim` tells a retry of it apart.)
                    Ok(Some(head)) if head.sequence >= report.sequence && head.file != link.file => {
                        report.sequence = head.sequence + 1;
                        report.previous = Some(head);
                        // Sealed again: after the head it now follows.
                        report.finished_at = Some(Utc::now());
                    }
                    // The winner's claim is not readable yet (409: its write is under way).
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await,
                    Err(e) => {
                        return tracing::warn!(
                            "reading the report bucket's chain head after a lost claim: {e:#}; the report keeps sequence {}, which another report has",
                            report.sequence
                        )
                    }
                }
            }
            Err(e) => {
                return tracing::warn!(
                    "{e:#}: the report keeps sequence {} unclaimed (another worker sharing the bucket may take it too)",
                    report.sequence
                )
            }
        }
    }
    tracing::warn!(
        "the report's sequence could not be claimed on the report bucket in {TRIES} tries; it keeps sequence {}",
        report.sequence
    );
}

fn describe_policy(p: &Policy, prep: &Prepared, ctx: &Ctx) -> PolicyReport {
    let mut bases: Vec<String> = p.purposes.iter().map(|x| format!("{:?}", x.legal_basis)).map(|s| snake(&s)).collect();
    bases.sort();
    bases.dedup();
    PolicyReport {
        name: p.name.clone(),
        file: p.file.clone(),
        connection: p.connection.clone(),
        table: prep.table.name.clone(),
        kind: if p.objects.is_some() { "objects" } else { "table" }.into(),
        action: action_name(p.action).into(),
        legal_bases: bases,
        purposes: p
            .purposes
            .iter()
            .map(|x| PurposeInfo {
                name: x.name.clone(),
                legal_basis: snake(&format!("{:?}", x.legal_basis)),
                retain: x.retain.clone(),
                anchor: x.anchor.clone(),
                lapsed_if_anchor_before_or_at: x.period.threshold(ctx.cutoff),
                condition: x.condition.as_ref().map(|c| c.to_string()),
                covers: x.covers.clone(),
                null_anchor: if x.null_anchor == NullAnchor::Keep { "keep".into() } else { "lapse".into() },
                from_policy: x.from_policy.clone(),
            })
            .collect(),
        columns: p
            .columns
            .iter()
            .map(|c| {
                let (method, irreversible) = match &c.strategy {
                    Some(s) => (s.method(), s.is_anonymization()),
                    None => ("deleted with the record".into(), true),
                };
                (c.name.clone(), ColumnMethod { category: snake(&format!("{:?}", c.category)), method, irreversible })
            })
            .collect(),
        outcome: if ctx.mode == Mode::Plan { "planned".into() } else { "done".into() },
        ..Default::default()
    }
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Delete => "delete",
        Action::Anonymize => "anonymize",
    }
}

struct Stage {
    name: String,
    action: &'static str,
    columns: Vec<String>,
    scope: Scope,
}

impl Stage {
    /// Adds `n` records this stage destroyed to the policy's count of its action.
    fn count_destroyed(&self, pr: &mut PolicyReport, n: u64) {
        match self.action {
            "deleted" => pr.deleted += n,
            "anonymized" => pr.anonymized += n,
            _ => pr.fields_anonymized += n,
        }
    }

    /// Records of this stage (its stage report `si`) known from the journal only (their
    /// batch's acknowledgement was lost): counted and written to the evidence as `proto` (the
    /// batch's line, dated by the journal's commit time). Their keys are not known, so they are
    /// not re-checked; the caller counts them as unchecked.
    fn record_journaled(
        &self,
        pr: &mut PolicyReport,
        si: usize,
        sink: Option<&mut EvidenceSink>,
        proto: Evidence,
        ids: Vec<EvidenceId>,
    ) -> anyhow::Result<u64> {
        let n = ids.len() as u64;
        pr.stages[si].destroyed += n;
        self.count_destroyed(pr, n);
        crate::progress::advance(n);
        if let Some(sink) = sink {
            sink.write_batch(&proto, ids.into_iter().map(|id| (id.record, id.subject)).collect())?;
        }
        Ok(n)
    }

    /// The evidence line of a record of this stage's batch `batch` (record and subject empty,
    /// filled in per record).
    fn evidence_line(&self, policy: &str, batch: u64, at: DateTime<Utc>) -> Evidence {
        Evidence {
            record: String::new(),
            subject: None,
            other_subjects: Vec::new(),
            policy: policy.to_string(),
            action: self.action.into(),
            stage: self.name.clone(),
            batch,
            at,
            versions: None,
            bytes: None,
            reconciled_from: None,
        }
    }
}

/// The values a holds-file subject `s` is compared as with the subject column `col`, as the
/// engine binds them: a uuid column's subject in the database's spelling (SQLite, which keeps
/// text as written: every usual spelling), a binary column's also as its bytes, a subject of
/// the column's type as that type, else as written. `report lookup --connect` asks with the
/// same values.
///
/// `table` and `column`: the dataset and its subject column (`None`: no subject column, nothing
/// to compare with). A column the table does not describe (an object policy's subject, a fact of
/// its keys or metadata) is of kind `Other`: the subject as written (before a review's
/// refactoring made it no value at all, and an object's hold held nothing).
pub fn typed_subject(
    s: &str,
    table: &crate::connector::TableInfo,
    column: Option<&str>,
    keeps_any_type: bool,
) -> Vec<Value> {
    let subject_kind = column.map(|c| table.kind(c));
    let uuid_subject = column.and_then(|c| table.column(c)).is_some_and(|c| c.sql_type.eq_ignore_ascii_case("uuid"));
    let mut subjects = Vec::new();
    let s = match uuid_subject.then(|| uuid::Uuid::parse_str(s.trim())) {
        // SQLite has no uuid type: a column declared so keeps the text as the
        // application wrote it, and the hold holds it as written (before, only the
        // database's spelling was held there, and a row in capitals was deleted under
        // its hold; found by a review).
        // (Every usual spelling, as SQLite compares text exactly: a hold in lower case
        // missed a row in capitals; found by a review of the fix.)
        Some(Ok(u)) if keeps_any_type => {
            let (hyphenated, simple) = (u.hyphenated().to_string(), u.simple().to_string());
            for spelling in [hyphenated.to_uppercase(), simple.to_uppercase(), hyphenated, simple] {
                if spelling != s {
                    subjects.push(Value::Text(spelling));
                }
            }
            s.to_string()
        }
        Some(Ok(u)) => u.hyphenated().to_string(),
        _ => s.to_string(),
    };
    // A binary subject column (a UUID in `BINARY(16)`, `bytea`, a blob): a subject written
    // as a UUID or in hexadecimal is held by its bytes too, beside the text as written
    // (before, only the text was compared, which no binary value equals: found by a
    // read-only review).
    if subject_kind == Some(crate::connector::ColumnKind::Bytes) {
        if let Some(b) = binary_subject(&s) {
            subjects.push(Value::Bytes(b));
        }
    }
    // A subject of another shape than the column's (text for an integer column) is kept
    // as written: SQLite keeps any type in any column, and the SQL builder leaves it out
    // where the column cannot hold it (before, it was dropped here, and a SQLite row with
    // that text in its integer subject column was destroyed under the hold).
    match subject_kind.map(|k| coerce(Value::Text(s.clone()), k)) {
        Some(Ok(v)) => subjects.push(v),
        Some(Err(_)) => subjects.push(Value::Text(s)),
        None => {}
    }
    subjects
}

/// Record-level stage first, then field-level stages (columns grouped by the purposes that
/// cover them). Keeping wins: a column is touched only when every purpose covering it lapsed,
/// a record only when every purpose lapsed.
/// `keeps_any_type`: the connection keeps any text in any column (SQLite).
fn stages(p: &Policy, prep: &Prepared, ctx: &Ctx, keeps_any_type: bool) -> anyhow::Result<Vec<Stage>> {
    let rules: Vec<Filter> = p
        .purposes
        .iter()
        .map(|x| {
            Filter::Lapsed(LapseRule {
                anchor: x.anchor.clone(),
                threshold: x.period.threshold(ctx.cutoff).unwrap_or(DateTime::<Utc>::MIN_UTC),
                condition: x.condition.clone(),
                null_lapses: x.null_anchor == NullAnchor::Lapse,
            })
        })
        .collect();
    let all_lapsed = Filter::All(rules.clone());
    // A hold scoped to any policy on this table keeps its records from every policy on it:
    // their purposes are shared (`policy::check_set` lends each the others'), and so are their
    // holds (before, one policy destroyed what another's hold kept).
    let policies: Vec<String> = p.hold_policies().into_iter().map(str::to_string).collect();
    let mut file = Vec::new();
    for h in ctx.holds.iter().filter(|h| policies.iter().any(|n| h.applies_to(n))) {
        let mut subjects = Vec::new();
        for s in &h.subjects {
            // A uuid column compares as the database writes uuids (lower case, hyphens): a hold
            // may write them in capitals, without hyphens or in braces, and must still hold the
            // subject (`typed_subject`).
            subjects.extend(typed_subject(s, &prep.table, p.subject.as_deref(), keeps_any_type));
        }
        if !h.whole_policy() && subjects.is_empty() {
            continue;
        }
        file.push(FileHold::new(h.id.clone(), subjects, h.whole_policy()));
    }
    let holds = HoldScope {
        policies,
        file,
        table: None,    // filled per connector below
        tables: vec![], // object policies: read from the holds tables before the counts
        now: ctx.now,
    };
    // Dependents go with (`cascade`) a record that is deleted; one that is anonymized, whole or
    // field by field, is kept, and its dependents change nothing: `restrict` blocks deletes
    // only (`Scope::destroy_filter`; a field stage blocked by them was never done and reported
    // nowhere: found by a review).
    let base = |lapse: Filter, work: Work| Scope {
        policy: p.name.clone(),
        table: prep.table.clone(),
        key: p.key.clone(),
        subject: p.subject.clone(),
        lapse,
        whole_lapse: all_lapsed.clone(),
        restrict: prep.restrict.clone(),
        // (Kept on a field stage too, where nothing cascades (`Work::Anonymize`): its lapse
        // filter leaves out the records the record stage deletes, and `HasDependents` there
        // must see the shared children that keep a record from it; found by a review.)
        cascade: prep.cascade.clone(),
        work,
        holds: holds.clone(),
        pseudonym_key: ctx.pseudonym_key.clone(),
        objects: p.objects.clone(),
    };
    let mut out = Vec::new();
    let all_cols: Vec<(String, policy::strategy::Strategy)> =
        p.columns.iter().filter_map(|c| c.strategy.clone().map(|s| (c.name.clone(), s))).collect();
    let (work, action) = match p.action {
        Action::Delete => (Work::Delete, "deleted"),
        Action::Anonymize => (Work::Anonymize(all_cols.clone()), "anonymized"),
    };
    out.push(Stage {
        name: "record".into(),
        action,
        columns: p.columns.iter().map(|c| c.name.clone()).collect(),
        scope: base(all_lapsed.clone(), work),
    });
    let all_idx: BTreeSet<usize> = (0..p.purposes.len()).collect();
    let mut groups: BTreeMap<BTreeSet<usize>, Vec<(String, policy::strategy::Strategy)>> = BTreeMap::new();
    for c in &p.columns {
        let cover: BTreeSet<usize> =
            p.purposes.iter().enumerate().filter(|(_, x)| x.covers.contains(&c.name)).map(|(i, _)| i).collect();
        if cover == all_idx || cover.is_empty() {
            continue;
        }
        if let Some(s) = &c.strategy {
            groups.entry(cover).or_default().push((c.name.clone(), s.clone()));
        }
    }
    // A field stage takes the rows the record stage does not destroy: not every purpose lapsed,
    // or (a delete kept by a `restrict` dependent) every purpose lapsed and children left. Before,
    // such a blocked record kept its lapsed fields as long as its children, said nowhere.
    let kept_by_dependents =
        !prep.restrict.is_empty() || !crate::connector::shared_children(&prep.table, &prep.cascade).is_empty();
    let destroyed_whole = match (p.action, kept_by_dependents) {
        (Action::Delete, true) => Filter::All(vec![all_lapsed.clone(), Filter::negate(Filter::HasDependents)]),
        _ => all_lapsed.clone(),
    };
    for (cover, cols) in groups {
        let lapse = Filter::All(vec![
            Filter::All(cover.iter().map(|&i| rules[i].clone()).collect()),
            Filter::negate(destroyed_whole.clone()),
        ]);
        let names: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
        out.push(Stage {
            name: format!("fields:{}", names.join(",")),
            action: "fields_anonymized",
            columns: names,
            scope: base(lapse, Work::Anonymize(cols)),
        });
    }
    Ok(out)
}

/// The guardrail of `p`: the smallest `max_share` of the policies on its table, and the policy
/// that sets it (`p` itself where it is as small). Their purposes are shared (`check_set`), so
/// they find the same records due: a mistake that trips one policy's guardrail must not pass
/// through another's larger one (found by a read-only review).
fn table_max_share(ws: &Workspace, p: &Policy) -> (f64, String) {
    let share = |q: &Policy| q.max_share.unwrap_or(ws.config.defaults.max_share);
    let mut out = (share(p), p.name.clone());
    for q in &ws.policies.policies {
        if q.connection == p.connection && q.table == p.table && share(q) < out.0 {
            out = (share(q), q.name.clone());
        }
    }
    out
}

/// The policy stops at its guardrail, saying why. A policy that has already failed (a killed
/// run's journal or intents it could not reconcile) stays `failed`: exit 1 asks why, where
/// `guardrail` (exit 3) would only ask for `--allow-share`.
fn stop_at_guardrail(pr: &mut PolicyReport, msg: String) {
    tracing::warn!("{msg}");
    pr.errors.push(msg);
    pr.guardrail.tripped = true;
    if pr.outcome != "failed" {
        pr.outcome = "guardrail".into();
    }
}

/// The rows a stage may destroy in one run: `max_share` of `total`, rounded down, with the
/// floating-point error of the product forgiven (100 × 0.29 is 28.999…: 29 rows).
fn rows_budget(total: u64, max_share: f64) -> u64 {
    let exact = total as f64 * max_share;
    let near = exact.round();
    match (exact - near).abs() <= 1e-9 * exact.max(1.0) {
        true => near as u64,
        false => exact.floor() as u64,
    }
}

async fn enforce(
    p: &Policy,
    prep: &Prepared,
    conn: &dyn Connector,
    ctx: &mut Ctx<'_>,
    pr: &mut PolicyReport,
) -> anyhow::Result<()> {
    let mut stages = stages(p, prep, ctx, conn.keeps_any_type())?;
    if ctx.mode == Mode::Run && !conn.journaled_destroy() {
        // Only connectors that get intents have any to reconcile (SQL: none, nothing read).
        // Before anything of this policy is destroyed: an object this run deletes itself must
        // not also be taken for one an interrupted run deleted.
        if let Err(e) = reconcile(p, &stages[0].scope, conn, ctx, pr).await {
            let msg = format!(
                "intents of an interrupted run could not be reconciled: nothing of this policy was destroyed (the next run retries): {e:#}"
            );
            tracing::error!("{msg}");
            pr.errors.push(msg);
            // Destructions of that run are in no report yet: not a complete run. And none by
            // this one: an object it deleted that an open intent names would be taken, by the
            // next run's reconciliation, for one the interrupted run deleted, and recorded twice.
            pr.outcome = "failed".into();
            return Ok(());
        }
        // (Only unreconciled intents fail the policy: the others cannot be acted on by a run.)
        for (msg, fails) in orphaned_intents(p, ctx) {
            tracing::error!("{msg}");
            pr.errors.push(msg);
            if fails {
                pr.outcome = "failed".into();
            }
        }
    }
    if ctx.mode == Mode::Run && conn.journaled_destroy() {
        if let Err(e) = reconcile_journal(p, conn, ctx, pr).await {
            let msg = format!(
                "the journal of a run killed before its report could not be reconciled with its evidence (the next run retries): {e:#}"
            );
            tracing::error!("{msg}");
            pr.errors.push(msg);
            pr.outcome = "failed".into();
        }
    }
    // A key-sharded policy: every count and every destroy sees only this shard's part.
    let within = |f: Filter| match &ctx.part {
        Some(part) => Filter::All(vec![part.clone(), f]),
        None => f,
    };
    for s in &mut stages {
        s.scope.holds.table = conn.holds_table().cloned();
        s.scope.lapse = within(s.scope.lapse.clone());
    }
    // An object store has no holds table: the holds tables of the run's SQL connections hold
    // its objects (read again before each batch). Unreadable: nothing of the policy is done.
    let objects_held_by_tables = p.objects.is_some() && !ctx.hold_tables.is_empty();
    if objects_held_by_tables {
        let tables = table_holds_for_objects(ctx, &stages[0].scope).await?;
        for s in &mut stages {
            s.scope.holds.tables = tables.clone();
        }
    }
    let full = &stages[0].scope;
    let any_lapse = Filter::Any(stages.iter().map(|s| s.scope.lapse.clone()).collect());
    // The report's counts are independent queries: run them side by side (the connector's
    // pool bounds how many reach the database at once).
    let held_filter = Filter::All(vec![any_lapse.clone(), Filter::Held]);
    let file_filters: Vec<Filter> = full
        .holds
        .file
        .iter()
        .map(|h| Filter::All(vec![any_lapse.clone(), Filter::HeldByFile(h.id.clone())]))
        .collect();
    let everything = within(Filter::True);
    // Unknown anchors: NULL, or a value the database cannot read as a time (MariaDB's zero
    // date, SQLite's text that is no time), which a NOT NULL column can hold too (the
    // connector answers "none" at once where NOT NULL means known). Counted with the others
    // when every anchor may be NULL; with a NOT NULL one among them, alongside the batches
    // (report only, and no batch changes such a row: its purpose never lapses), so that the
    // first batch does not wait for what is usually nothing.
    // Under `null_anchor: lapse`, an unknown anchor lapses, except one that never does
    // (SQLite's blob): such rows are counted with the kept ones (SQL only: an object store
    // reports unknown facts as unreadable), alongside the batches (usually there are none).
    let null_anchors: Vec<Filter> = p
        .purposes
        .iter()
        .filter_map(|x| match x.null_anchor {
            NullAnchor::Keep => Some(Filter::AnchorNull(x.anchor.clone())),
            NullAnchor::Lapse if p.objects.is_none() => Some(Filter::AnchorNeverLapses(x.anchor.clone())),
            NullAnchor::Lapse => None,
        })
        .collect();
    let null_alongside = p.objects.is_none()
        && p.purposes
            .iter()
            .any(|x| x.null_anchor == NullAnchor::Lapse || prep.table.column(&x.anchor).is_some_and(|c| !c.nullable));
    let null_filter = within(Filter::Any(null_anchors.clone()));
    // One deleting stage whose destroy filter is "lapsed and not held": every lapsed row is
    // either due or held, so `held = lapsed - due`, and the lapsed rows are counted instead of
    // the held ones (a plain predicate, where "held" is a semi-join per row). Only where both
    // counts are one statement (one snapshot): a holds table makes the due count a statement of
    // its own, and rows the application deletes between the two showed as held with no hold.
    // Otherwise the held rows are counted themselves.
    let held_by_difference = p.objects.is_none()
        && stages.len() == 1
        && matches!(full.work, Work::Delete)
        && !full.blocks_by_dependents()
        && full.holds.table.is_none();
    // Where the due count's statement counts its held rows anyway (SQLite with a holds table:
    // `counts_held_with_due`), the held count is asked with it, and costs nothing of its own.
    let held_with_due = {
        let lapsed_held = Filter::All(vec![full.lapse.clone(), Filter::Held]);
        (p.objects.is_none()
            && stages.len() == 1
            && matches!(full.work, Work::Delete)
            && !full.blocks_by_dependents()
            && conn.counts_held_with_due(full, &full.destroy_filter(), &lapsed_held))
        .then_some(lapsed_held)
    };
    let held_filter = match (held_by_difference, &held_with_due) {
        (true, _) => any_lapse.clone(),
        // (The one stage's lapse: `any_lapse` of it.)
        (false, Some(lapsed_held)) => lapsed_held.clone(),
        (false, None) => held_filter,
    };
    // Held rows of a table counted as such (a semi-join per row) are for the report only, like
    // the per-hold counts below, and no batch changes them: they are counted alongside the
    // batches, not before the first one (where they competed with the due count for the
    // machine). An object store answers every count from one listing: its held count stays
    // with the others.
    let held_alongside = !held_by_difference && held_with_due.is_none() && p.objects.is_none();
    // Every count of the report in one request to the connector, which may answer them all in
    // one pass (an object store lists its prefix once): total, held (unless counted alongside),
    // due per stage, held per file hold, then the optional ones. A stage's scope differs from
    // `full` only in what its destroy filter already says.
    let mut filters = vec![everything];
    let held_at = (!held_alongside).then(|| {
        filters.push(held_filter.clone());
        filters.len() - 1
    });
    let dues_at = filters.len();
    filters.extend(stages.iter().map(|s| s.scope.destroy_filter()));
    let files_at = filters.len();
    filters.extend(file_filters);
    let null_at = (!null_anchors.is_empty() && p.objects.is_none() && !null_alongside).then(|| {
        filters.push(null_filter.clone());
        filters.len() - 1
    });
    // (Dependents block deletes only: an anonymized record is not blocked.)
    let blocked_at = full.blocks_by_dependents().then(|| {
        filters.push(Filter::All(vec![full.lapse.clone(), Filter::negate(Filter::Held), Filter::HasDependents]));
        filters.len() - 1
    });
    let unreadable_at = p.objects.is_some().then(|| {
        filters.push(within(Filter::Unreadable));
        filters.len() - 1
    });
    // The held rows per holds-table hold are for the report only, and no batch of this run
    // can change them (every destroying statement leaves held rows alone): they are counted
    // alongside everything else, the batches included, instead of before the first batch.
    // Counts only read: a transient error (a server restarting) is retried like a batch's.
    // In a run they start once the counts the guardrail needs are in (sent then, or dropped on
    // an error), so as not to slow the counts that the first batch waits for.
    let (counted, counts_in) = futures::channel::oneshot::channel::<()>();
    let counts_in = futures::FutureExt::shared(counts_in);
    let after_counts = || {
        let counts_in = counts_in.clone();
        let run = ctx.mode == Mode::Run;
        async move {
            if run {
                let _ = counts_in.await;
            }
        }
    };
    let by_table = {
        let wait = after_counts();
        async {
            wait.await;
            retry(|| conn.count_by_table_hold(full, &any_lapse)).await
        }
    };
    // A report-only count beside the batches, when `on`.
    let beside = |on: bool, f: Filter| {
        let wait = after_counts();
        async move {
            if !on {
                return None;
            }
            wait.await;
            Some(retry(|| conn.count(full, &f)).await)
        }
    };
    let held_alone = beside(held_alongside, held_filter.clone());
    let null_alone = beside(null_alongside, null_filter.clone());
    // Outside the batches' block: what they re-checked is reported even when they fail.
    let mut verify = Verification::default();
    // Records destroyed and recorded but never re-checked (a lost COMMIT acknowledgement).
    let mut unchecked = 0u64;
    // Batches recorded from the journal after their COMMIT's acknowledgement was lost (destroyed
    // by candidates: re-checked as any batch, but what the lost reply carried is not known).
    let mut acks_lost = 0u64;
    let rest = async {
        let max_share = ctx.max_share.0;
        let overridden = ctx.opts.allow_share.iter().any(|x| x == "*" || x == &p.name);
        // Where no count can stop the policy (a guardrail of 100 %, which no share of the
        // table passes), a run begins its batches as soon as the connector holds the snapshot
        // its counts read (`Connector::counts_pinned`), and the counts are taken beside the
        // batches: they still describe the table as it was before the first batch (on SQLite
        // the due count was a sixth of a delete's time, BENCHMARKS.md). Otherwise the
        // guardrail needs them first; so does `--allow-share` below 100 %, whose budget still
        // bounds the run when the share counted is within it. (Not objects, whose batches move
        // records from due to held: their counts come first.)
        let early = ctx.mode == Mode::Run && p.objects.is_none() && max_share >= 1.0 && conn.pins_counts(full);
        let mut counted = Some(counted);
        // A stage's report, before its batches.
        let stage_report = |s: &Stage| StageReport {
            name: s.name.clone(),
            action: s.action.into(),
            columns: s.columns.clone(),
            ..Default::default()
        };
        // The report's counts, in order (see `filters`).
        let fill = |pr: &mut PolicyReport, counts: &[u64]| {
            pr.rows_total = counts[0];
            let dues = &counts[dues_at..dues_at + stages.len()];
            if let Some(i) = held_at {
                pr.held = if held_by_difference { counts[i].saturating_sub(dues[0]) } else { counts[i] };
            }
            // (Begun early, the stages' reports are there already.)
            let fresh = pr.stages.is_empty();
            for (si, (s, &due)) in stages.iter().zip(dues).enumerate() {
                pr.rows_due += due;
                if fresh {
                    pr.stages.push(stage_report(s));
                }
                pr.stages[si].due = due;
            }
            let by_file = &counts[files_at..];
            for (h, &n) in full.holds.file.iter().zip(by_file) {
                if n > 0 {
                    pr.held_by.insert(h.id.clone(), n);
                }
            }
            if let Some(i) = null_at {
                pr.null_anchor_kept = counts[i];
            }
            if let Some(i) = blocked_at {
                pr.blocked_by_dependents = counts[i];
            }
            if let Some(i) = unreadable_at {
                pr.unreadable = counts[i];
                pr.null_anchor_kept = 0; // for objects, unknown facts are counted as unreadable
            }
            // Guardrail: an implausible share stops the policy before anything is destroyed.
            // The share is per stage (a row may be due in several stages, for different columns).
            let worst = pr.stages.iter().map(|s| s.due).max().unwrap_or(0);
            let share = if pr.rows_total == 0 { 0.0 } else { worst as f64 / pr.rows_total as f64 };
            // In whole rows, the same number the run's batches keep to (`budget` below): a share
            // compared in floating point could pass here and leave a budget of one row less
            // (29 of 100 at 29 %: 100 × 0.29 = 28.999…).
            let above = worst > rows_budget(pr.rows_total, max_share);
            pr.guardrail =
                Guardrail { max_share, share, tripped: above && !overridden, overridden: overridden && above };
        };
        if early {
            tracing::debug!(policy = %p.name, "the batches begin once the counts' snapshot is held; the counts are taken beside them");
            pr.stages.extend(stages.iter().map(stage_report));
        } else {
            let counts = retry(|| conn.counts(full, &filters)).await;
            if let Some(c) = counted.take() {
                let _ = c.send(());
            }
            fill(pr, &counts?);
            if let Some(s) = stages.iter().find(|s| pr.stages.iter().any(|r| r.name == s.name && r.due > 0)) {
                let sample = conn.candidates(&s.scope, None, 5).await?;
                pr.sample = sample.iter().map(|c| ctx.key.record(&p.connection, &p.table, &c.key)).collect();
            }
            if pr.guardrail.tripped {
                let worst_stage = pr.stages.iter().max_by_key(|s| s.due);
                let worst = worst_stage.map_or(0, |s| s.due);
                let whose = match &ctx.max_share.1 {
                    by if *by == p.name => "the policy's maximum".to_string(),
                    by => format!("the maximum that policy '{by}' sets for this table (the smallest of its policies')"),
                };
                // Named by its stage where there are several: a field stage's due rows are not the
                // policy's `due` (found by a README walkthrough: "1696 of 2000" beside "due 1947").
                let stage = match (pr.stages.len() > 1, worst_stage) {
                    (true, Some(s)) => format!(" in stage '{}'", s.name),
                    _ => String::new(),
                };
                let msg = format!(
                    "guardrail: {} of {} rows ({:.1}%) are due{stage}, above {whose} of {:.1}%; nothing destroyed (override with --allow-share {})",
                    worst,
                    pr.rows_total,
                    pr.guardrail.share * 100.0,
                    max_share * 100.0,
                    p.name
                );
                stop_at_guardrail(pr, msg);
                return Ok(());
            }
            if ctx.mode == Mode::Plan {
                return Ok(());
            }
        }
        // Safety net during the run: no stage may destroy more than its share allows (begun
        // early, at 100 %, no bound: the table's own rows never pass it).
        let budget = match early {
            true => u64::MAX,
            false => rows_budget(pr.rows_total, max_share),
        };
        let batch_size = ctx.opts.batch_size.or(p.batch_size).unwrap_or(ctx.defaults.batch_size) as usize;
        verify.method = match p.objects.is_some() {
            true => "re-listing of every deleted object's versions after deletion",
            false => "re-query of every destroyed key after commit",
        }
        .into();
        let counts_failed = std::sync::atomic::AtomicBool::new(false);
        // Begun early: the counts' error, once the batches' outcome is accounted for.
        let mut counts_error: Option<ConnectorError> = None;
        // Begun early: each stage's due rows, once counted (for the progress bar).
        let known_dues: std::sync::Mutex<Option<Vec<u64>>> = std::sync::Mutex::new(None);
        let batch_loop = async {
            for (si, stage) in stages.iter().enumerate() {
                let journal = JournalCtx {
                    run_id: ctx.run_id.clone(),
                    policy: p.name.clone(),
                    stage: stage.name.clone(),
                    action: stage.action.into(),
                    batch: 0,
                };
                let batch_size = batch_size.min(conn.max_batch(&stage.scope));
                let mut after: Option<Vec<Value>> = None;
                let mut batches = 0u64;
                let mut stage_destroyed = 0u64;
                // The batch loop is a pipeline of three: while batch i is destroyed, batch i+1 is begun
                // (`begin_next` on a server) or its candidates (keys after batch i's last) are read,
                // and batch i-1 is verified; each on its own pooled connection. Batch i+1's rows are
                // re-checked by its own destroying statements, so reading them early changes nothing
                // of what is destroyed.
                // Candidates read ahead, with the limit they were read with.
                let mut prefetched: Option<(usize, Result<Vec<Candidate>, ConnectorError>)> = None;
                let mut fused = conn.destroys_next(&stage.scope);
                // After rows changed under a batch, that batch goes by its candidates, then the
                // stage goes back to `begin_next`.
                let mut fuse_again = false;
                // A batch destroyed by its own statements whose connection was lost, and which the
                // journal did not show: the same batch taken again by its candidates starts knowing it
                // (the lost attempt may still be committing).
                let mut retake_lost: Option<LostBatch> = None;
                let hash = |c: &Candidate| EvidenceId {
                    record: ctx.key.record(&p.connection, &p.table, &c.key),
                    subject: c.subject.as_ref().filter(|s| !s.is_null()).map(|s| ctx.key.subject(s)),
                };
                // A batch begun ahead (`begin_next`) whose transaction is still open, with its limit.
                let mut open: Option<(usize, crate::connector::Begun<'_>)> = None;
                // What the stage may still destroy in this run: no batch asks for more, so the
                // budget is never passed, even by rows that became due after the counts (a hold
                // released meanwhile). `--allow-share` lifts it.
                let overridden = pr.guardrail.overridden;
                let room = |destroyed: u64| match overridden {
                    true => batch_size,
                    false => budget.saturating_sub(destroyed).min(batch_size as u64) as usize,
                };
                let mut unverified: Vec<Vec<Value>> = Vec::new();
                // (Begun early: the stage's due rows once counted.)
                let due = match early {
                    true => known_dues.lock().expect("dues").as_ref().map(|d| d[si]),
                    false => Some(pr.stages[si].due),
                };
                crate::progress::stage(&p.name, &stage.name, due);
                loop {
                    // Begun early, the counts failed: no further batch (their error is the policy's).
                    if counts_failed.load(Ordering::SeqCst) && open.is_none() {
                        break;
                    }
                    // A batch already begun is in flight: it finishes (commits) first.
                    if ctx.cancel.load(Ordering::SeqCst) && open.is_none() {
                        // (Once per policy, not per stage.)
                        let said = "interrupted: stopped after the last committed batch";
                        if !pr.errors.iter().any(|e| e == said) {
                            pr.errors.push(said.into());
                        }
                        if pr.outcome == "done" {
                            pr.outcome = "interrupted".into();
                        }
                        break;
                    }
                    // The evidence writer still running (it stops only on an error): a batch whose
                    // evidence cannot be written is not destroyed.
                    // (A lost batch still to be taken again is named with either error: it may have
                    // committed.)
                    if let Some(sink) = ctx.evidence.as_deref_mut() {
                        sink.check().map_err(|e| stopped(e, batches + 1, retake_lost.as_ref()))?;
                    }
                    // The run lock still held (a server may end the session that holds it): else
                    // another worker may be destroying too. A batch destroyed by its own statements
                    // (`fused`) is asked about below, before its commit and after its statement (and
                    // any wait for a row lock), beside the next batch's statement; any other batch
                    // here, before it is destroyed.
                    let lock = run_lock_name(p, ctx.opts);
                    if !fused {
                        retry(|| conn.run_lock_alive(&lock))
                            .await
                            .map_err(|e| stopped(e, batches + 1, retake_lost.as_ref()))?;
                    }
                    if let Some(m) = ctx.opts.max_batches.filter(|&m| batches >= m) {
                        // Every batch so far was full: more may be due. Said, not claimed done,
                        // unless nothing is (the last batch was exactly the rest: before, `stopped`
                        // then too, and "left for the next run"; found by a review).
                        let more = retry(|| conn.candidates(&stage.scope, after.as_deref(), 1)).await;
                        if more.map_err(|e| anyhow::anyhow!("stage {}: {e}", stage.name))?.is_empty() {
                            break;
                        }
                        let msg = format!(
                        "stage '{}' stopped after {m} batch{} (--max-batches): what is still due is left for the next run",
                        stage.name,
                        if m == 1 { "" } else { "es" }
                    );
                        tracing::warn!("{msg}");
                        pr.errors.push(msg);
                        if pr.outcome == "done" {
                            pr.outcome = "stopped".into();
                        }
                        break;
                    }
                    // The budget spent (and no batch begun ahead, which asked for no more than was
                    // left): if anything more is due, the guardrail stops the stage here, with its
                    // share destroyed.
                    let reserved = retake_lost.as_ref().map_or(0, |l| l.reserved);
                    let limit = match &open {
                        Some((l, _)) => *l,
                        None => room(stage_destroyed + reserved),
                    };
                    // (With a lost batch still to be looked up, no room is left for its retake: it
                    // asks the journal with no candidates, and the budget is judged again after.)
                    if limit == 0 && reserved == 0 {
                        let more = retry(|| conn.candidates(&stage.scope, after.as_deref(), 1)).await;
                        let more = more.map_err(|e| anyhow::anyhow!("stage {}: {e}", stage.name))?;
                        if !more.is_empty() {
                            let msg = format!(
                            "guardrail: destroyed {stage_destroyed} rows, the budget of {budget} for this run, and more are due now than were counted at the start; stopped"
                        );
                            stop_at_guardrail(pr, msg);
                        }
                        break;
                    }
                    // Where the stage can, the batch is selected and destroyed by its own statements
                    // (`begin_next`); otherwise its candidates are read first (or were read ahead).
                    let to_verify = std::mem::take(&mut unverified);
                    // What the journal said of a lost batch looked up with no room for its retake.
                    let mut looked: Option<Looked> = None;
                    let (cands, mut ids, outcome, left) = if fused {
                        let begun = match open.take() {
                            Some((_, b)) => Ok(b),
                            None => {
                                let journal = JournalCtx { batch: batches + 1, ..journal.clone() };
                                retry(|| conn.begin_next(&stage.scope, after.as_deref(), limit, &hash, journal.clone()))
                                    .await
                            }
                        };
                        let begun = match begun {
                            Ok(b) => b,
                            // Which rows the failed statement took is unknown (it rolled back): the
                            // batch is taken again the other way, candidates first, so that a failure is
                            // counted against the rows it concerns and the stage goes on past them.
                            Err(e) => {
                                tracing::warn!(stage = %stage.name, batch = batches + 1, "{e}; taking the batch again by its candidates");
                                unverified = to_verify;
                                fused = false;
                                continue;
                            }
                        };
                        // On a server, the next batch is begun (its rows selected and destroyed in a
                        // transaction of its own, on another connection) while this one is journaled
                        // and committed: their key ranges are disjoint. It commits only after this one
                        // has (also after an interrupt: it is in flight), and is rolled back if this one
                        // fails or the stage stops here (guardrail).
                        let next_limit = room(stage_destroyed + begun.taken as u64);
                        let ahead = conn.overlaps_batches()
                            && begun.taken >= limit
                            && next_limit > 0
                            && ctx.opts.max_batches.is_none_or(|m| batches + 2 <= m)
                            && !ctx.cancel.load(Ordering::SeqCst);
                        let next_after = begun.last.clone();
                        let next_journal = JournalCtx { batch: batches + 2, ..journal.clone() };
                        let beginning = async {
                            match ahead {
                                true => Some(
                                    retry(|| {
                                        conn.begin_next(
                                            &stage.scope,
                                            next_after.as_deref(),
                                            next_limit,
                                            &hash,
                                            next_journal.clone(),
                                        )
                                    })
                                    .await,
                                ),
                                false => None,
                            }
                        };
                        let verifying = verify_batch(conn, &stage.scope, &to_verify);
                        // This batch commits (`finish`) only once the run lock is known to be held,
                        // asked after its statement ended: a round trip that no longer holds up the
                        // next batch's statement, sent meanwhile (PostgreSQL's and MariaDB's deletes
                        // 4-5 % faster, BENCHMARKS.md). A lost lock stops the policy; this batch and
                        // the next, uncommitted, roll back as they are dropped.
                        let taken = begun.taken as u64;
                        let finishing = async {
                            retry(|| conn.run_lock_alive(&lock)).await?;
                            Ok::<_, ConnectorError>(begun.finish.await)
                        };
                        // The next batch first: it is polled before this batch's `finish`, which
                        // hashes its rows on this task a slice at a time, so that the next batch's
                        // statements go out between slices (`sql::evidence_ids_yielding`).
                        let (next, done, left) = futures::join!(beginning, finishing, verifying);
                        let done = match done {
                            Ok(done) => done,
                            Err(lost) => {
                                drop(next);
                                // The lost lock is the policy's error: a re-check that failed
                                // beside it (one blip of the server, say) leaves its records
                                // unverified, not the report without the reason it stopped.
                                if let Ok(left) = left {
                                    verify.add(to_verify.len(), left);
                                }
                                return Err(lost.into());
                            }
                        };
                        match done {
                            Ok((cands, ids, outcome)) => {
                                match next {
                                    Some(Ok(b)) => open = Some((next_limit, b)),
                                    // The next batch goes the other way, after this one.
                                    Some(Err(e)) => {
                                        tracing::warn!(stage = %stage.name, batch = batches + 2, "{e}; taking the batch again by its candidates");
                                        fused = false;
                                    }
                                    None => {}
                                }
                                (cands, ids, Ok(outcome), left)
                            }
                            Err(e) => {
                                // Rolled back, and so is the batch begun after it (dropped here): the
                                // batch is taken again by its candidates. Rows that changed under it
                                // (`Changed`) are re-selected that way once, then batches go on as
                                // before; after any other failure the stage stays on that path.
                                drop(next);
                                // Unless the server committed it and only the acknowledgement was lost
                                // with the connection: the journal, written in the batch's transaction,
                                // says so. Its records go to the evidence and the counts from there
                                // (before, they were in the journal only, and the batch's number was
                                // given again to the rows after them).
                                // (Recorded before the previous batch's re-check is accounted for:
                                // that re-check may have failed in the same outage.)
                                let lost = matches!(e, ConnectorError::Lost { .. });
                                if let Ok(Some((jb, jids))) =
                                    journaled_anyway(conn, &journal, batches + 1, ctx.now, lost).await
                                {
                                    batches += 1;
                                    after = next_after.clone();
                                    pr.stages[si].batches = batches;
                                    let at = jb.committed_at.unwrap_or_else(Utc::now);
                                    let proto = stage.evidence_line(&p.name, batches, at);
                                    let sink = ctx.evidence.as_deref_mut();
                                    let n = stage.record_journaled(pr, si, sink, proto, jids)?;
                                    stage_destroyed += n;
                                    // Its keys are not known here (the journal has their keyed hashes):
                                    // not re-checked, and said so.
                                    let msg = format!(
                                    "stage {}: batch {batches} was committed but its acknowledgement was lost ({e}): its {n} records are recorded from the journal and were not re-checked",
                                    stage.name
                                );
                                    tracing::warn!("{msg}");
                                    pr.errors.push(msg);
                                    unchecked += n;
                                    verify.add(to_verify.len(), left?);
                                    fused = false;
                                    continue;
                                }
                                verify.add(to_verify.len(), left?);
                                tracing::warn!(stage = %stage.name, batch = batches + 1, "{e}; taking the batch again by its candidates");
                                if lost {
                                    let last = next_after.clone();
                                    retake_lost = Some(LostBatch { error: e.to_string(), reserved: taken, last });
                                }
                                fuse_again = matches!(e, ConnectorError::Changed { .. });
                                fused = false;
                                continue;
                            }
                        }
                    } else {
                        // Read ahead with a limit at least this batch's: its first `limit` rows are
                        // what this batch would read now (a smaller one could look short).
                        let cands = match prefetched.take() {
                            Some((read_with, c)) if read_with >= limit => c,
                            _ => retry(|| conn.candidates(&stage.scope, after.as_deref(), limit)).await,
                        };
                        let cands = match cands {
                            Ok(mut c) => {
                                c.truncate(limit);
                                c
                            }
                            // The stage cannot go on: the policy stops here (its committed counts stay).
                            Err(e) => {
                                return Err(stopped(
                                    format!("stage {}: {e}", stage.name),
                                    batches + 1,
                                    retake_lost.as_ref(),
                                ))
                            }
                        };
                        // An object policy's holds-table holds, read again right before the batch's
                        // re-check: a hold inserted since the counts is honoured; one that cannot be
                        // read stops the policy before anything of the batch is sent.
                        let refreshed;
                        let scope = match objects_held_by_tables && !cands.is_empty() {
                            true => match table_holds_for_objects(ctx, &stage.scope).await {
                                Ok(tables) => {
                                    let mut s = stage.scope.clone();
                                    s.holds.tables = tables;
                                    refreshed = s;
                                    &refreshed
                                }
                                Err(e) => {
                                    return Err(stopped(
                                        format!("stage {}: {e:#}", stage.name),
                                        batches + 1,
                                        retake_lost.as_ref(),
                                    ))
                                }
                            },
                            false => &stage.scope,
                        };
                        let ids: Vec<EvidenceId> = cands.iter().map(hash).collect();
                        if !cands.is_empty() && !conn.journaled_destroy() {
                            // Write-ahead: durable before the first deletion is sent, so that a kill
                            // between the deletion and its evidence line leaves the batch accounted for.
                            if let Some(log) = ctx.intents.as_deref_mut() {
                                let at = Utc::now();
                                let lines: Vec<Intent> = ids
                                    .iter()
                                    .map(|id| Intent {
                                        run_id: ctx.run_id.clone(),
                                        policy: p.name.clone(),
                                        stage: stage.name.clone(),
                                        action: stage.action.into(),
                                        batch: batches + 1,
                                        record: id.record.clone(),
                                        subject: id.subject.clone(),
                                        key_id: ctx.key.key_id(),
                                        at,
                                        dataset: Some((p.connection.clone(), p.table.clone())),
                                    })
                                    .collect();
                                log.record(&lines)
                                    .map_err(|e| anyhow::anyhow!("stage {}: write-ahead intent: {e}", stage.name))?;
                            }
                        }
                        let journal = JournalCtx { batch: batches + 1, ..journal.clone() };
                        let last = cands.last().map(|c| c.key.clone());
                        // After a short batch nothing more was due: no read-ahead.
                        let next_limit = room(stage_destroyed + cands.len() as u64);
                        // (Not after a lookup with no room for a retake, `limit` 0: nothing was read.)
                        let read_ahead = limit > 0
                            && cands.len() >= limit
                            && next_limit > 0
                            && ctx.opts.max_batches.is_none_or(|m| batches + 1 < m);
                        let retake = retake_lost.take();
                        let looked_up_without_room = retake.as_ref().filter(|_| limit == 0).cloned();
                        // The lost batch's rows: after the batch before it, up to its last key.
                        let retake = retake.map(|l| l.into_before(after.clone()));
                        let destroying = async {
                            // A lost connection rolled the batch back, and it is retried (bounded),
                            // unless only the acknowledgement of its COMMIT was lost: then the
                            // journal has it (`destroy_or_journaled`).
                            let (outcome, lost) =
                                destroy_or_journaled(conn, scope, &cands, &ids, &journal, ctx.now, retake).await;
                            (outcome.map_err(|e| anyhow::anyhow!("batch {}: {e}", batches + 1)), lost)
                        };
                        let reading = async {
                            match read_ahead {
                                true => Some((
                                    next_limit,
                                    retry(|| conn.candidates(&stage.scope, last.as_deref(), next_limit)).await,
                                )),
                                false => None,
                            }
                        };
                        let verifying = verify_batch(conn, &stage.scope, &to_verify);
                        let ((outcome, lost), next, left) = futures::join!(destroying, reading, verifying);
                        prefetched = next;
                        if let Some(batch) = looked_up_without_room {
                            looked = Some(match &lost {
                                Some(LostReply::Recovered { .. }) => Looked::Committed,
                                Some(LostReply::Uncertain { .. }) => Looked::Unknown,
                                None => Looked::NotYet(batch),
                            });
                        }
                        if let Some(lost) = lost {
                            let none = BatchOutcome::default();
                            let o = outcome.as_ref().unwrap_or(&none);
                            let msg = lost_message(&stage.name, batches + 1, &stage.scope, cands.len(), o, &lost);
                            tracing::warn!("{msg}");
                            pr.errors.push(msg);
                            acks_lost += 1;
                            if let LostReply::Recovered { unread: Some(unread), .. } = lost {
                                // The lost attempt's records of rows this one did not read, under
                                // this batch's number (also when this attempt failed: the journal
                                // showed them).
                                let proto =
                                    stage.evidence_line(&p.name, batches + 1, unread.at.unwrap_or_else(Utc::now));
                                let sink = ctx.evidence.as_deref_mut();
                                let n = stage.record_journaled(pr, si, sink, proto, unread.ids)?;
                                stage_destroyed += n;
                                unchecked += n;
                                if cands.is_empty() {
                                    // Its batch, though nothing was left for this attempt.
                                    batches += 1;
                                    pr.stages[si].batches = batches;
                                }
                            }
                        }
                        (cands, ids, outcome, left)
                    };
                    // A failed verification stops the policy, but only after this batch's committed
                    // outcome is accounted for below.
                    let verified = left.map(|n| verify.add(to_verify.len(), n));
                    if cands.is_empty() {
                        verified?;
                        match looked {
                            // A lost batch looked up with no room for its retake: the budget is
                            // judged again, with what the journal had of it.
                            Some(Looked::Committed) => continue,
                            // Rolled back: taken again by its candidates, as after any lost batch, in
                            // the room the budget leaves.
                            Some(Looked::NotYet(lost)) => {
                                retake_lost = Some(LostBatch { reserved: 0, ..lost });
                                continue;
                            }
                            // The journal cannot tell: if the batch committed, the budget is spent.
                            Some(Looked::Unknown) => {
                                pr.errors.push(format!(
                                "stage {}: stopped: batch {} may have committed, and the guardrail's budget for this run leaves no room beside it",
                                stage.name,
                                batches + 1
                            ));
                                break;
                            }
                            None => break,
                        }
                    }
                    batches += 1;
                    // Fewer rows than asked for: no more are due. (A batch that selected and destroyed
                    // its own rows and destroyed fewer than it asked for has checked that none are
                    // left before it commits: `Connector::begin_next`.)
                    let short = cands.len() < limit;
                    after = cands.last().map(|c| c.key.clone());
                    crate::progress::advance(cands.len() as u64);
                    let o = match outcome {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::error!(stage = %stage.name, "{e}");
                            pr.errors.push(format!("stage {}: {e}", stage.name));
                            pr.failed += cands.len() as u64;
                            verified?;
                            if short {
                                break;
                            }
                            continue;
                        }
                    };
                    let n = o.destroyed.len() as u64;
                    stage_destroyed += n;
                    pr.failed += o.failures.len() as u64;
                    // Objects some of whose versions were deleted before another was refused (a
                    // legal hold put on that version after the batch's re-check, or lock headers the
                    // run's credentials may not read): kept, and their deleted versions recorded
                    // (`versions_deleted` evidence lines, below). Not those with an unknown outcome
                    // (a lost reply): a later run reconciles them.
                    let partly: BTreeSet<usize> = o
                        .failures
                        .iter()
                        .map(|(i, _)| *i)
                        .filter(|i| !o.unknown.contains(i) && o.details.get(i).is_some_and(|d| d.versions > 0))
                        .collect();
                    for (i, code) in &o.failures {
                        // The storage's error code only: an object key may itself be personal data.
                        // A row is named by its evidence id (a keyed hash), never by its values.
                        let msg = match p.objects.is_some() {
                        true if partly.contains(i) => format!(
                            "stage {}: object {} could not be deleted whole after retries ({code}): {} of its versions were deleted, the others kept (evidence action versions_deleted)",
                            stage.name,
                            ids.get(*i).map(|x| x.record.as_str()).unwrap_or("?"),
                            o.details.get(i).map_or(0, |d| d.versions)
                        ),
                        true => format!("stage {}: an object could not be deleted after retries: {code}", stage.name),
                        false => format!(
                            "stage {}: record {} could not be anonymized: {code}",
                            stage.name,
                            ids.get(*i).map(|x| x.record.as_str()).unwrap_or("?")
                        ),
                    };
                        pr.errors.push(msg);
                    }
                    for (_, lock) in &o.held_by_storage {
                        pr.held_by_storage += 1;
                        let kind = lock.split(' ').next().unwrap_or("lock").to_string();
                        *pr.held_by.entry(format!("storage:{kind}")).or_default() += 1;
                        pr.held += 1;
                    }
                    // A listing does not show Object Lock: the batch finds it, and what it keeps moves
                    // from due to held (counted in both, due and held added up to more than the
                    // dataset, and a run that destroyed all it could seemed to leave some due).
                    for (_, holds) in &o.held {
                        for h in holds {
                            *pr.held_by.entry(h.clone()).or_default() += 1;
                        }
                        pr.held += 1;
                    }
                    // An older version's subject that cannot be read keeps the key whole: it moves
                    // from due to unreadable, as an unreadable newest version is counted.
                    pr.unreadable += o.unreadable.len() as u64;
                    let locked = (o.held_by_storage.len() + o.held.len() + o.unreadable.len()) as u64;
                    pr.rows_due = pr.rows_due.saturating_sub(locked);
                    pr.stages[si].due = pr.stages[si].due.saturating_sub(locked);
                    for d in o.details.values() {
                        pr.versions_deleted += d.versions;
                        pr.bytes_reclaimed += d.bytes;
                    }
                    let sr = &mut pr.stages[si];
                    sr.destroyed += n;
                    sr.unchanged += o.unchanged.len() as u64;
                    sr.skipped_concurrently += (cands.len() as u64).saturating_sub(
                        n + o.unchanged.len() as u64
                            + o.failures.len() as u64
                            + o.held_by_storage.len() as u64
                            + o.held.len() as u64
                            + o.unreadable.len() as u64,
                    );
                    sr.batches = batches;
                    stage.count_destroyed(pr, n);
                    for (t, k) in o.cascaded {
                        *pr.dependents_deleted.entry(t).or_default() += k;
                    }
                    // The batch's records it destroyed nothing of, by a known outcome (gone or no
                    // longer due at its re-check, held, held by the storage, unreadable, failed by
                    // a per-item error in a reply that arrived, with no version deleted): their
                    // write-ahead intents are void, so that a later run does not take such an
                    // object, gone by then, for one this run destroyed. Not those a whole delete
                    // call failed for (`unknown`: its reply lost, the server may have deleted
                    // them): a later run reconciles them. (The records it destroyed are settled by
                    // their evidence lines, written first.)
                    let void: Vec<String> = match conn.journaled_destroy() {
                        true => Vec::new(),
                        false => {
                            let done: BTreeSet<usize> = o.destroyed.iter().chain(&o.unknown).copied().collect();
                            (0..cands.len())
                                .filter(|i| !done.contains(i) && o.details.get(i).is_none_or(|d| d.versions == 0))
                                .filter_map(|i| ids.get(i).map(|id| id.record.clone()))
                                .collect()
                        }
                    };
                    let at = Utc::now();
                    if let Some(sink) = ctx.evidence.as_deref_mut() {
                        let proto = stage.evidence_line(&p.name, batches, at);
                        if o.details.is_empty() {
                            // The batch's ids are not needed after this: moved to the sink, not copied.
                            let lines = o
                                .destroyed
                                .iter()
                                .map(|&i| (std::mem::take(&mut ids[i].record), ids[i].subject.take()))
                                .collect();
                            sink.write_batch(&proto, lines)?;
                        } else {
                            // The subjects the batch's re-check read of each version (a subject
                            // of metadata or tags), else the one the candidate was listed with.
                            let subjects = |i: usize| -> (Option<String>, Vec<String>) {
                                match o.subjects.get(&i) {
                                    Some(read) => {
                                        let mut h = read.iter().map(|s| ctx.key.subject(&Value::Text(s.clone())));
                                        (h.next(), h.collect())
                                    }
                                    None => (ids[i].subject.clone(), Vec::new()),
                                }
                            };
                            let lines = o.destroyed.iter().map(|&i| (i, &proto.action));
                            let versions_deleted = "versions_deleted".to_string();
                            for (i, action) in lines.chain(partly.iter().map(|&i| (i, &versions_deleted))) {
                                let (subject, other_subjects) = subjects(i);
                                sink.write(&Evidence {
                                    record: ids[i].record.clone(),
                                    subject,
                                    other_subjects,
                                    action: action.clone(),
                                    versions: o.details.get(&i).map(|d| d.versions),
                                    bytes: o.details.get(&i).map(|d| d.bytes),
                                    ..proto.clone()
                                })?;
                            }
                        }
                        if !conn.journaled_destroy() {
                            // No journal: the intents of the batch are reconciled with these lines, which
                            // must be on disk first. (Otherwise the batch is durable in the journal, in
                            // the destroying transaction; the sink writes its lines while the next batch
                            // is destroyed and syncs the file once, before the report.)
                            sink.flush()?;
                        }
                    }
                    if let Some(log) = ctx.intents.as_deref_mut() {
                        log.void(&p.name, &stage.name, batches, void)
                            .map_err(|e| anyhow::anyhow!("stage {}: write-ahead intent: {e}", stage.name))?;
                    }
                    verified?;
                    // Verified (the destroyed keys no longer match) alongside the next batch.
                    // In key order, as `remaining` takes them.
                    let mut idx = o.destroyed.clone();
                    idx.sort_unstable();
                    unverified = idx.iter().map(|&i| cands[i].key.clone()).collect();
                    tracing::info!(stage = %stage.name, batch = batches, destroyed = n, "batch committed");
                    if stage_destroyed > budget && !pr.guardrail.overridden {
                        let msg = format!(
                        "guardrail: destroyed {stage_destroyed} rows, above the budget of {budget} for this run; stopped"
                    );
                        stop_at_guardrail(pr, msg);
                        break;
                    }
                    if short {
                        // Fewer than asked for: nothing more was due when the batch was selected.
                        break;
                    }
                    if fuse_again && !fused {
                        fused = true;
                        fuse_again = false;
                        prefetched = None;
                    }
                }
                // A lost batch not yet taken again when the stage stopped (interrupted, say): it may
                // have committed.
                if let Some(l) = retake_lost.take() {
                    let msg = format!(
                        "stage {}: stopped before it was taken again: {}",
                        stage.name,
                        l.may_have_committed(batches + 1)
                    );
                    tracing::warn!("{msg}");
                    pr.errors.push(msg);
                    acks_lost += 1;
                }
                // A batch begun ahead of a stop (guardrail, failure) is rolled back.
                drop(open.take());
                verify.checked += unverified.len() as u64;
                verify.still_present += verify_batch(conn, &stage.scope, &unverified).await?;
                crate::progress::finish();
                if pr.guardrail.tripped {
                    break;
                }
            }
            anyhow::Ok(())
        };
        if early {
            let (pinned, pin) = futures::channel::oneshot::channel();
            let counting = async {
                let counts = conn.counts_pinned(full, &filters, pinned).await;
                match &counts {
                    Ok(c) => {
                        let dues = c[dues_at..dues_at + stages.len()].to_vec();
                        for (s, &due) in stages.iter().zip(&dues) {
                            crate::progress::due(&p.name, &s.name, due);
                        }
                        // (A stage begun from here on reads its due rows here; one under way
                        // was told above. Both in this task: nothing runs in between.)
                        *known_dues.lock().expect("dues") = Some(dues);
                    }
                    Err(_) => counts_failed.store(true, Ordering::SeqCst),
                }
                counts
            };
            let mut sample = Vec::new();
            let destroying = async {
                // (No snapshot held: the counts failed, and nothing is destroyed.)
                if pin.await.is_err() {
                    return anyhow::Ok(());
                }
                if let Some(c) = counted.take() {
                    let _ = c.send(());
                }
                // Read before the first batch, as the counts: a few of the records due.
                for s in &stages {
                    sample = conn.candidates(&s.scope, None, 5).await?;
                    if !sample.is_empty() {
                        break;
                    }
                }
                batch_loop.await
            };
            let (counts, destroyed) = futures::join!(counting, destroying);
            match counts {
                Ok(counts) => {
                    fill(pr, &counts);
                    if pr.rows_due > 0 {
                        pr.sample = sample.iter().map(|c| ctx.key.record(&p.connection, &p.table, &c.key)).collect();
                    }
                }
                // Said with the batches' own outcome (their verification included): the error
                // fails the policy below, after what the batches did is accounted for.
                Err(e) => counts_error = Some(e),
            }
            if let Err(e) = destroyed {
                if let Some(c) = counts_error.take() {
                    pr.errors.push(format!("the report's counts could not be taken: {c}"));
                }
                return Err(e);
            }
        } else {
            batch_loop.await?;
        }
        verify.verified = verify.still_present == 0 && pr.failed == 0 && unchecked == 0;
        // (`stopped` by --max-batches, or `guardrail`, is no excuse either: before, such a policy
        // kept its outcome and the run said `complete`, exit 0: found by a review.)
        if (unchecked > 0 || acks_lost > 0) && matches!(pr.outcome.as_str(), "done" | "guardrail" | "stopped") {
            // Destroyed and recorded, but not re-checked, or not fully counted (a lost
            // acknowledgement): not claimed, even when the guardrail stopped the stage after
            // (exit 1, not 3: a lost acknowledgement is the failure to act on).
            pr.outcome = "failed".into();
        }
        if verify.still_present > 0 {
            // The storage acknowledged a destruction the re-query does not see: the run must not
            // claim it (status partial, exit 1), whatever the counts say.
            let msg = format!(
                "verification: {} of {} destroyed records are still present after commit",
                verify.still_present, verify.checked
            );
            tracing::error!("{msg}");
            pr.errors.push(msg);
            if matches!(pr.outcome.as_str(), "done" | "guardrail" | "stopped") {
                pr.outcome = "failed".into();
            }
        }
        if pr.failed > 0 && matches!(pr.outcome.as_str(), "done" | "stopped") {
            pr.outcome = "failed".into();
        }
        if let Some(e) = counts_error {
            return Err(anyhow::anyhow!("the report's counts could not be taken: {e}"));
        }
        anyhow::Ok(())
    };
    let (by_table, held_alone, null_alone, rest) = futures::join!(by_table, held_alone, null_alone, rest);
    pr.verification = verify;
    // Recorded even when the batches failed; their error comes first.
    // Added to what the batches found under the same hold (an older version's subject).
    let held_by = by_table.map(|by| {
        for (id, n) in by {
            *pr.held_by.entry(id).or_default() += n;
        }
    });
    let held = held_alone.map(|n| n.map(|n| pr.held = n)).transpose();
    let unknown = null_alone.map(|n| n.map(|n| pr.null_anchor_kept = n)).transpose();
    rest?;
    held_by?;
    held?;
    unknown?;
    Ok(())
}

/// The holds in force for an object policy (its scope's policies, or every policy) in the
/// holds tables of the run's SQL connections. A table that cannot be read is an error: the
/// policy destroys nothing it could not check.
async fn table_holds_for_objects(ctx: &Ctx<'_>, scope: &Scope) -> anyhow::Result<Vec<FileHold>> {
    let names = match scope.holds.policies.is_empty() {
        true => vec![scope.policy.clone()],
        false => scope.holds.policies.clone(),
    };
    let mut out = Vec::new();
    for (name, c) in ctx.hold_tables {
        let table = c.holds_table().map(|h| h.table.as_str()).unwrap_or("?");
        let found = retry(|| c.holds_in_force(&names, ctx.now, scope.subject.is_none())).await.map_err(|e| {
            anyhow::anyhow!(
                "connection '{name}': holds table '{table}' could not be read, so no object of this policy is destroyed: {e}"
            )
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// Intents an interrupted run of another shard layout left for this policy (the shard count
/// changed, sharding was switched on or off, or the policy stopped or started being split by
/// key): they are in a report directory no run of this layout reads for this policy, so they
/// would never be reconciled, and that run's last destructions would be in no report. This run
/// does not take them over (a run of the other layout may still be going on, and a key-sharded
/// part sees only its own keys): it names them, with the run that reconciles them, and the
/// policy fails until one has. Directories are only read here, never tidied.
fn orphaned_intents(p: &Policy, ctx: &Ctx<'_>) -> Vec<(String, bool)> {
    use crate::shard::Shard;
    let Some(log) = ctx.intents.as_deref() else { return Vec::new() };
    let root = match ctx.opts.shard {
        Some(_) => match log.dir().parent() {
            Some(parent) => parent.to_path_buf(),
            None => return Vec::new(),
        },
        None => log.dir().to_path_buf(),
    };
    // (directory, the command whose run reads it for this policy, if this configuration has one)
    let mut dirs: Vec<(PathBuf, Option<String>)> = Vec::new();
    if ctx.opts.shard.is_some() {
        dirs.push((root.clone(), Some("lapse run".into())));
    }
    let entries = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            return vec![(
                format!("cannot look for intents of another shard layout in '{}': {e}", root.display()),
                false,
            )]
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Only the names shards write (`shard-1-of-3`, not `shard-01-of-3` or `shard-5-of-3`).
        let Some(shard) = Shard::from_dir_name(&name) else { continue };
        let Shard { index, count } = shard;
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let takes = shard.takes(p);
        // A shard of this layout that takes the policy reads its own directory.
        if ctx.opts.shard.is_some_and(|s| s.count == count) && takes {
            continue;
        }
        dirs.push((e.path(), takes.then(|| format!("lapse run --shard {index}/{count}"))));
    }
    let key_id = ctx.key.key_id();
    let mut out = Vec::new();
    for (dir, how) in dirs {
        let found = match crate::intent::pending(&dir, log.stem(), &p.name, &key_id, false) {
            Ok(f) => f,
            Err(e) => {
                out.push((format!("cannot read the intents in '{}': {e:#}", dir.display()), false));
                continue;
            }
        };
        for x in found {
            if !x.intents.is_empty() {
                let remedy = match &how {
                    Some(cmd) => format!("run `{cmd}` once"),
                    None => format!(
                        "no run of the current configuration reads them for this policy: run `lapse run --shard {}` once under the configuration that wrote them",
                        dir.file_name().map(|n| n.to_string_lossy().replace("shard-", "").replace("-of-", "/")).unwrap_or_default()
                    ),
                };
                out.push((
                    format!(
                        "{} write-ahead intents of interrupted run {} are in '{}', left by another shard layout, where no run of this layout reconciles them: {remedy}, so that the destructions of that run get into a report",
                        x.intents.len(),
                        x.run_id,
                        dir.display()
                    ),
                    true,
                ));
            }
            if x.other_key > 0 {
                out.push((
                    format!(
                        "{} write-ahead intents of interrupted run {} in '{}' were made with another evidence key and cannot be reconciled",
                        x.other_key,
                        x.run_id,
                        dir.display()
                    ),
                    false,
                ));
            }
        }
    }
    out
}

/// Reconciles the write-ahead intents that interrupted runs left for this policy
/// ([`crate::intent`]): an intended record whose object no longer exists was destroyed by that
/// run after its intent and before its evidence; it goes into this run's evidence, marked
/// `reconciled_from` that run, and is counted `reconciled`. An intended record that still exists
/// was not destroyed (the intent is void) and is processed normally.
async fn reconcile(
    p: &Policy,
    scope: &Scope,
    conn: &dyn Connector,
    ctx: &mut Ctx<'_>,
    pr: &mut PolicyReport,
) -> anyhow::Result<()> {
    let Some(log) = ctx.intents.as_deref() else { return Ok(()) };
    let key_id = ctx.key.key_id();
    // Intents of a policy no policy file names now (renamed or removed since the run that left
    // them was killed): no run reconciles them (a run reconciles its own policy's), and they
    // stayed without a word (found by a read-only review). Said once, by the first object
    // policy of this run, which fails in it; then marked resolved: this report is their account.
    if !std::mem::replace(ctx.intents_named, true) {
        let (dir, stem) = (log.dir().to_path_buf(), log.stem().to_string());
        for name in crate::intent::unresolved_policies(&dir, &stem) {
            if ctx.policy_names.contains(&name) {
                continue;
            }
            for x in crate::intent::pending(&dir, &stem, &name, &key_id, false)? {
                if crate::intent::still_running(&x.path) {
                    continue;
                }
                let n = x.intents.len() + x.other_key;
                if n > 0 {
                    pr.errors.push(format!(
                        "{}: write-ahead intents of interrupted run {} for {n} object(s) of policy '{}', which no policy file names now (renamed or removed since): whether that run deleted them is in no evidence, and no run reconciles them, so this report is their account",
                        x.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                        x.run_id,
                        crate::reporting::printable(&name)
                    ));
                    pr.outcome = "failed".into();
                }
                crate::intent::resolve(&x, &name, &ctx.run_id)?;
            }
        }
    }
    let pending = crate::intent::pending(log.dir(), log.stem(), &p.name, &key_id, true)?;
    if pending.is_empty() {
        return Ok(());
    }
    // Each record with its latest intent: a version written after it is not what was intended.
    let mut wanted: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for i in pending.iter().flat_map(|x| &x.intents) {
        let at = wanted.entry(i.record.clone()).or_insert(i.at);
        *at = (*at).max(i.at);
    }
    let present = if wanted.is_empty() {
        BTreeSet::new()
    } else {
        let key = ctx.key;
        let (connection, table) = (p.connection.clone(), p.table.clone());
        let hash = move |k: &[Value]| key.record(&connection, &table, k);
        retry(|| conn.still_present(scope, &hash, &wanted)).await?
    };
    let here = (p.connection.clone(), p.table.clone());
    for x in &pending {
        if x.other_key > 0 {
            pr.errors.push(format!(
                "{} write-ahead intents of interrupted run {} were made with another evidence key and cannot be reconciled",
                x.other_key, x.run_id
            ));
            continue;
        }
        // Made for another spelling of the dataset (connection renamed, bucket moved into the
        // policy, prefix changed): their hashes name that one, so every object would look gone
        // here, and still-present objects would be recorded as destroyed (before this check).
        if let Some((connection, table)) = x.intents.iter().filter_map(|i| i.dataset.as_ref()).find(|d| **d != here) {
            pr.errors.push(format!(
                "{} write-ahead intents of interrupted run {} were made for dataset '{table}' of connection '{connection}', which this policy no longer names as such ('{}' of '{}'): they cannot be looked up here and are left unreconciled ({}); run the policy once with its dataset written as it was, or remove that file once the objects it names are accounted for",
                x.intents.len(),
                x.run_id,
                p.table,
                p.connection,
                x.path.display()
            ));
            // That run's destructions may be in no report yet: not a complete run.
            pr.outcome = "failed".into();
            continue;
        }
        let gone: Vec<&Intent> = x.intents.iter().filter(|i| !present.contains(&i.record)).collect();
        let at = Utc::now();
        if let Some(sink) = ctx.evidence.as_deref_mut() {
            for i in &gone {
                sink.write(&Evidence {
                    record: i.record.clone(),
                    subject: i.subject.clone(),
                    other_subjects: Vec::new(),
                    policy: i.policy.clone(),
                    action: i.action.clone(),
                    stage: i.stage.clone(),
                    batch: i.batch,
                    at,
                    versions: None,
                    bytes: None,
                    reconciled_from: Some(x.run_id.clone()),
                })?;
            }
            sink.flush()?;
        }
        let n = gone.len() as u64;
        if n > 0 {
            pr.reconciled += n;
            *pr.reconciled_from.entry(x.run_id.clone()).or_default() += n;
        }
        tracing::info!(
            interrupted_run = %x.run_id, reconciled = n, void = x.intents.len() as u64 - n,
            "write-ahead intents of an interrupted run reconciled"
        );
        // Only once the evidence is durable: a kill before this line makes the next run look
        // again (and find these lines in this run's evidence).
        crate::intent::resolve(x, &p.name, &ctx.run_id)?;
    }
    Ok(())
}

/// Every whole evidence line of `file` (read from its start, as a stream: an evidence file may
/// hold millions of lines); lines that do not parse are skipped.
fn each_evidence_line(file: &std::fs::File, visit: &mut dyn FnMut(Evidence)) -> anyhow::Result<()> {
    use std::io::{BufRead, Seek};
    let mut f = file;
    f.rewind()?;
    for line in std::io::BufReader::new(f).split(b'\n') {
        if let Ok(e) = serde_json::from_slice::<Evidence>(&line?) {
            visit(e);
        }
    }
    Ok(())
}

/// The lines of `policy`'s own destructions (not `reconciled_from` an earlier run) in an
/// evidence file, per stage and batch.
fn own_lines_per_batch(file: &std::fs::File, policy: &str) -> anyhow::Result<BTreeMap<(String, u64), u64>> {
    let mut have: BTreeMap<(String, u64), u64> = BTreeMap::new();
    each_evidence_line(file, &mut |e| {
        if e.policy == policy && e.reconciled_from.is_none() {
            *have.entry((e.stage, e.batch)).or_default() += 1;
        }
    })?;
    Ok(have)
}

/// What a policy's report says of evidence lines of a run without its report that its journal
/// does not hold, where this report does not list the file (another report accounted for it).
fn unconfirmed_words(lines: u64, file: &str) -> String {
    format!(
        "{lines} line(s) of {file} (a run without its report, which this report does not list) are in no batch its journal holds: not shown to be destructions of that run (a file it did not write, or altered; or the database was restored from a backup since, with its journal)"
    )
}

/// Batches a run killed before its report committed (its journal rows, in the destroying
/// transactions) but whose evidence lines it did not write (killed between the commit and the
/// line): written to this run's evidence `reconciled_from` that run and counted in the policy's
/// `reconciled`, so that the evidence, the lookup and the reports cover every committed record.
/// Once per killed run and policy (a marker next to its evidence file); the killed run's
/// evidence file itself is accounted for in this run's report (`interrupted_runs`).
async fn reconcile_journal(
    p: &Policy,
    conn: &dyn Connector,
    ctx: &mut Ctx<'_>,
    pr: &mut PolicyReport,
) -> anyhow::Result<()> {
    let Some(log) = ctx.intents.as_deref() else { return Ok(()) };
    if ctx.evidence.is_none() {
        return Ok(()); // nowhere to write the lines: left for a run that has
    }
    let (dir, own) = (log.dir().to_path_buf(), log.stem().to_string());
    // Accounted for by a report or not: that report's run may not have enforced this policy.
    for o in report::orphan_evidence(&dir, &own, true) {
        let Some((started, prefix)) = o.run() else { continue };
        let since = started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Once per connection and file in a run, whichever policies reconciled the file already
        // (looked for only with a policy's first reconciliation of it, a policy removed after
        // the others had was never said; found by a review). One small read of the journal
        // (a row per batch) per file that a killed run left.
        if ctx.journals_named.insert((p.connection.clone(), o.name.clone())) {
            unnamed_journal_batches(p, conn, ctx, pr, &dir, &o, prefix, &since).await?;
        }
        if report::journal_reconciled(&dir, &o.name).contains(&p.name) {
            continue;
        }
        let batches = one_row_per_batch(retry(|| conn.journal_batches(&p.name, prefix, &since)).await?);
        let runs: BTreeSet<&str> = batches.iter().map(|b| b.run_id.as_str()).collect();
        if runs.len() > 1 {
            pr.errors.push(format!(
                "the journal holds batches of {} runs whose id starts with {prefix} since {since}: which one wrote {} is not known, so its journal is not reconciled with it",
                runs.len(),
                o.name
            ));
            pr.outcome = "failed".into();
            // Said once, in this report (the policy fails in it): the next run would find the
            // same runs again.
            report::mark_journal_reconciled(&dir, &o.name, &p.name);
            continue;
        }
        // What its evidence file has of each batch of this policy (its own lines only), read as
        // a stream through the locked handle: the file may hold millions of lines.
        let have = own_lines_per_batch(&o.file, &p.name)?;
        // Every line of a committed batch has its record in the journal row the batch wrote in
        // its destroying transaction. Lines of a batch the journal does not hold, or more lines
        // than it journaled, are no destruction the journal shows: a file that run did not
        // write (planted where reports are kept), or altered. The report says so beside them.
        let journaled: BTreeMap<(&str, u64), u64> =
            batches.iter().map(|b| ((b.stage.as_str(), b.batch), b.records)).collect();
        let unbacked: u64 = have
            .iter()
            .map(|((stage, batch), n)| n.saturating_sub(journaled.get(&(stage.as_str(), *batch)).copied().unwrap_or(0)))
            .sum();
        // (A journal table of the earlier per-record shape lists no batch: nothing to tell.)
        if unbacked > 0 && conn.journal_readable() {
            tracing::warn!(
                evidence = %o.name, lines = unbacked,
                "evidence lines of a run without its report that its journal does not hold: not shown to be destructions of that run"
            );
            if report::accounted_by(&dir, &o.name).is_some() {
                // An earlier report accounted for the file before this policy's lines were
                // checked (that run did not enforce it): said in this report, by the policy.
                pr.errors.push(unconfirmed_words(unbacked, &o.name));
            } else {
                ctx.unconfirmed.entry(o.name.clone()).or_default().insert(p.name.clone(), unbacked);
            }
        }
        // Batches whose evidence lines are not all there; of those, the lines that are (cut
        // short within the batch), read in one more pass.
        let short: Vec<&crate::connector::JournalBatch> = batches
            .iter()
            .filter(|b| have.get(&(b.stage.clone(), b.batch)).copied().unwrap_or(0) < b.records)
            .collect();
        let Some(run) = short.first().map(|b| b.run_id.clone()) else {
            report::mark_journal_reconciled(&dir, &o.name, &p.name);
            continue;
        };
        // The journal's records are keyed hashes made with that run's evidence key: written
        // into this run's evidence (under this run's key) only if it is the same. Otherwise
        // left, and said on every run until one with that key reconciles them (found by a
        // read-only review: they were written under the new key, and `report lookup` found
        // them under neither).
        if let Some(theirs) = report::evidence_key(&dir, &o.name).filter(|k| *k != ctx.key.key_id()) {
            pr.errors.push(format!(
                "{}: its run, which ended without its report, journaled {} batch(es) of this policy whose records are not in its evidence, with evidence key {theirs}; this run's key is {}: they are not reconciled into this run's evidence; run once with that evidence key to reconcile them",
                o.name,
                short.len(),
                ctx.key.key_id()
            ));
            pr.outcome = "failed".into();
            continue;
        }
        // The lines already written of those batches: the killed run's own (cut short within a
        // batch: read again only then), and those a later run wrote `reconciled_from` it (a
        // run killed after them and before its marker, or whose marker could not be written,
        // or that stopped halfway on an error), in every later run's evidence file, reported or
        // not, locked or not (a run of this policy cannot be going on: this run holds its lock).
        let mut written: BTreeMap<(String, u64), BTreeSet<String>> =
            short.iter().map(|b| ((b.stage.clone(), b.batch), BTreeSet::new())).collect();
        let cut_short = short.iter().any(|b| have.contains_key(&(b.stage.clone(), b.batch)));
        for path in report::run_evidence_since(&dir, started, &own) {
            let its_own = path.file_name().is_some_and(|n| n.to_string_lossy() == o.name);
            if its_own && !cut_short {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else { continue };
            let from = if its_own { None } else { Some(run.as_str()) };
            each_evidence_line(&file, &mut |e| {
                if e.policy == p.name && e.reconciled_from.as_deref() == from {
                    if let Some(w) = written.get_mut(&(e.stage, e.batch)) {
                        w.insert(e.record);
                    }
                }
            })?;
        }
        // Every batch's records read before any line is written: a read that fails leaves
        // nothing half-written.
        let mut missing = Vec::with_capacity(short.len());
        for b in short {
            let ids = retry(|| conn.journal_batch_ids(&p.name, b)).await?;
            let lines = &written[&(b.stage.clone(), b.batch)];
            missing.push((b, ids.into_iter().filter(|id| !lines.contains(&id.record)).collect::<Vec<_>>()));
        }
        let sink = ctx.evidence.as_deref_mut().expect("checked at the start");
        let mut n = 0u64;
        let now = Utc::now();
        let wrote = (|| -> anyhow::Result<()> {
            for (b, ids) in missing {
                // When the killed run destroyed them: the batch's commit, as its journal row says.
                let at = b.committed_at.unwrap_or(now);
                for id in ids {
                    sink.write(&Evidence {
                        record: id.record,
                        subject: id.subject,
                        other_subjects: Vec::new(),
                        policy: p.name.clone(),
                        action: b.action.clone(),
                        stage: b.stage.clone(),
                        batch: b.batch,
                        at,
                        versions: None,
                        bytes: None,
                        reconciled_from: Some(b.run_id.clone()),
                    })?;
                    n += 1;
                }
            }
            sink.flush()
        })();
        // Counted as written, even when a write failed after some. A run with a report (whose
        // evidence writer failed) counted those records itself: recovered evidence, not
        // destruction of this run's to count again (found by a review).
        if n > 0 && dir.join(&o.report).exists() {
            pr.evidence_recovered += n;
            tracing::info!(run = %run, lines = n, "evidence lines of batches a run committed and reported but could not write written from the journal");
        } else if n > 0 {
            pr.reconciled += n;
            *pr.reconciled_from.entry(run.clone()).or_default() += n;
            tracing::info!(interrupted_run = %run, reconciled = n, "committed batches of a run killed before its evidence lines reconciled from the journal");
        }
        wrote?;
        // Only once the evidence is durable: a kill before this makes the next run look again.
        report::mark_journal_reconciled(&dir, &o.name, &p.name);
    }
    Ok(())
}

/// Batches the journal of `p`'s connection holds for the run of evidence file `o` under a
/// policy that no policy file names now (renamed or removed since that run was killed), whose
/// records its evidence file lacks: no run can reconcile them (a run reconciles its own
/// policy's), and they were left out of every evidence file without a word (found by a
/// read-only review). Said once, by the first policy of this run on that connection (it fails
/// in that run), and marked as the ambiguous runs are: the report that says it is their account.
#[allow(clippy::too_many_arguments)]
async fn unnamed_journal_batches(
    p: &Policy,
    conn: &dyn Connector,
    ctx: &mut Ctx<'_>,
    pr: &mut PolicyReport,
    dir: &Path,
    o: &report::Orphan,
    prefix: &str,
    since: &str,
) -> anyhow::Result<()> {
    let done = report::journal_reconciled(dir, &o.name);
    let names = retry(|| conn.journal_policies(prefix, since)).await?;
    for name in names.into_iter().filter(|n| !ctx.policy_names.contains(n) && !done.contains(n)) {
        let batches = one_row_per_batch(retry(|| conn.journal_batches(&name, prefix, since)).await?);
        let have = own_lines_per_batch(&o.file, &name)?;
        let (mut short, mut records) = (0u64, 0u64);
        for b in &batches {
            let n = have.get(&(b.stage.clone(), b.batch)).copied().unwrap_or(0);
            if n < b.records {
                short += 1;
                records += b.records - n;
            }
        }
        if short > 0 {
            pr.errors.push(format!(
                "{}: its run, which ended without its report, committed {short} batch(es) of policy '{}' ({records} record(s)) that the journal table of connection '{}' holds and its evidence file lacks, and no policy file names '{}' now (renamed or removed since): no run reconciles them, so this report is their account",
                o.name,
                crate::reporting::printable(&name),
                p.connection,
                crate::reporting::printable(&name)
            ));
            pr.outcome = "failed".into();
        }
        report::mark_journal_reconciled(dir, &o.name, &name);
    }
    Ok(())
}

/// The journal's batches with a batch number journaled twice taken as one (a batch taken again
/// by its candidates after a lost attempt that had committed: `from_journal`): both rows'
/// records counted, dated by the earlier commit. (`Connector::journal_batch_ids` reads every
/// row under the number.)
fn one_row_per_batch(batches: Vec<crate::connector::JournalBatch>) -> Vec<crate::connector::JournalBatch> {
    let mut out: BTreeMap<(String, String, u64), crate::connector::JournalBatch> = BTreeMap::new();
    for b in batches {
        match out.entry((b.run_id.clone(), b.stage.clone(), b.batch)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(b);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let o = o.get_mut();
                o.records += b.records;
                o.committed_at = match (o.committed_at, b.committed_at) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
        }
    }
    out.into_values().collect()
}

/// What the journal said of a lost batch looked up with no room left in the budget for its
/// retake (`limit` 0 in the batch loop).
enum Looked {
    /// It committed: its records are recorded from the journal.
    Committed,
    /// Not there, once no transaction held its rows: rolled back. Taken again in the room the
    /// budget leaves.
    NotYet(LostBatch),
    /// The journal cannot tell.
    Unknown,
}

/// Where the journal, written in the destroying transaction, is the only witness.
const JOURNAL_IS_AUTHORITY: &str = "the journal table, written in its transaction, is the authority";

/// A batch destroyed by its own statements whose connection was lost at its commit, and which
/// the journal did not show (yet): taken again by its candidates (`retake_lost`).
#[derive(Clone)]
struct LostBatch {
    /// The lost connection's error.
    error: String,
    /// The rows it took, which may have been destroyed: the budget's room for its retake leaves
    /// them out. 0 once the journal was asked with no room left (`Looked::NotYet`).
    reserved: u64,
    /// Its last key (the rows it took are after the batch before it, up to this one).
    last: Option<Vec<Value>>,
}

impl LostBatch {
    /// Said of it (batch `batch`) when the stage stops before it is taken again.
    fn may_have_committed(&self, batch: u64) -> String {
        format!(
            "batch {batch}, whose connection was lost during its commit ({}), may have committed ({JOURNAL_IS_AUTHORITY})",
            self.error
        )
    }

    /// What its retake, reading after `after` (the batch before it), knows of it.
    fn into_before(self, after: Option<Vec<Value>>) -> LostBefore {
        LostBefore { error: self.error, range: self.last.map(|upto| (after, upto)) }
    }
}

/// An error that stops a stage, naming a lost batch (`batch`) still to be taken again.
fn stopped(e: impl std::fmt::Display, batch: u64, lost: Option<&LostBatch>) -> anyhow::Error {
    match lost {
        Some(l) => anyhow::anyhow!("{e}; {}", l.may_have_committed(batch)),
        None => anyhow::anyhow!("{e}"),
    }
}

/// What [`destroy_or_journaled`] knows of a lost attempt by the batch's own statements.
struct LostBefore {
    error: String,
    /// The key range that attempt read (after, up to): its rows, whatever they hold now.
    range: Option<(Option<Vec<Value>>, Vec<Value>)>,
}

/// Records of a lost attempt by a batch's own statements that the journal has under the
/// batch's number but that are not among the rows of the batch taken again (gone when those
/// were read, or held or no longer due by then): known by their evidence ids only, dated by
/// the earliest commit journaled under the number. Nothing else writes this run's stage under
/// the number, so they can only be that attempt's.
struct Unread {
    ids: Vec<EvidenceId>,
    at: Option<DateTime<Utc>>,
}

/// What a lost connection left unknown about a batch ([`destroy_or_journaled`]).
enum LostReply {
    /// An attempt committed and its acknowledgement was lost: `from_journal` of the batch's
    /// records destroyed are recorded from the journal, among them the lost attempt's `unread`
    /// ones, which the caller records (`Stage::record_journaled`). `others_accounted`: the
    /// batch's other rows are accounted for by a later attempt (or its failure); otherwise the
    /// report says they were not destroyed, and that why is not known. `untold`: the journal,
    /// which had shown the unread records beside an attempt that lost its connection, did not
    /// tell again after the attempt that succeeded: whether that lost attempt committed late is
    /// not known.
    Recovered { error: String, from_journal: usize, others_accounted: bool, unread: Option<Unread>, untold: bool },
    /// The journal could not tell whether an attempt whose connection was lost committed.
    Uncertain { error: String },
}

impl LostReply {
    /// Only the lost attempt's unread records, beside whatever this batch did.
    fn unread_only(error: String, unread: Unread) -> LostReply {
        LostReply::Recovered {
            error,
            from_journal: unread.ids.len(),
            others_accounted: true,
            unread: Some(unread),
            untold: false,
        }
    }
}

/// The report's line for a batch whose reply was lost ([`destroy_or_journaled`]): what is
/// recorded from the journal, and what only the lost reply told.
fn lost_message(stage: &str, batch: u64, scope: &Scope, taken: usize, o: &BatchOutcome, lost: &LostReply) -> String {
    let other = taken.saturating_sub(o.destroyed.len() + o.unchanged.len() + o.failures.len());
    let cascades = matches!(scope.work, Work::Delete) && !scope.cascade.is_empty();
    match lost {
        LostReply::Recovered { error, from_journal, others_accounted, unread, untold } => {
            let mut msg = format!(
                "stage {stage}: batch {batch} was committed but its acknowledgement was lost ({error}): its {from_journal} records destroyed then are recorded from the journal"
            );
            if let Some(u) = unread {
                msg.push_str(&format!(
                    "; {} of them by that attempt alone, not among the rows taken again (its own were gone, held or no longer due when they were read): they were not re-checked",
                    u.ids.len()
                ));
            }
            if cascades {
                msg.push_str("; rows deleted with them in dependent tables are not counted");
            }
            if *untold {
                msg.push_str("; an attempt after it lost its connection too, and the journal could not tell again whether that one committed: rows it destroyed then are not in this run's evidence or counts (the journal table, written in the destroying transaction, is the authority)");
            }
            if other > 0 && !others_accounted {
                msg.push_str(&format!(
                    "; its other {other} rows were not destroyed, and are counted as changed under the batch (why is not known)"
                ));
            }
            msg
        }
        LostReply::Uncertain { error } => format!(
            "stage {stage}: batch {batch}: the connection was lost during an attempt ({error}) and the journal could not tell whether it committed: rows it destroyed then are not in this run's evidence or counts (the journal table, written in the destroying transaction, is the authority)"
        ),
    }
}

/// Waits for the rows of `keys` and of `range` ([`Connector::settle`]): false if the wait
/// failed (a transaction may still be committing them).
async fn settle_or_warn(
    conn: &dyn Connector,
    scope: &Scope,
    keys: &[Vec<Value>],
    range: Option<KeyRange<'_>>,
    batch: u64,
) -> bool {
    match retry(|| conn.settle(scope, keys, range)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("batch {batch}: {e}");
            false
        }
    }
}

/// The error of a batch whose every attempt failed, with the reply that goes with it: the lost
/// attempt's unread records if the journal showed them (`shown`), else, after a lost
/// connection (`lost`), a warning that an attempt may have committed.
fn give_up(msg: String, lost: Option<&str>, shown: Option<Unread>) -> (anyhow::Error, Option<LostReply>) {
    match (lost, shown) {
        (Some(error), Some(unread)) => (anyhow::Error::msg(msg), Some(LostReply::unread_only(error.to_string(), unread))),
        (Some(_), None) => (
            anyhow::Error::msg(format!(
                "{msg}; the connection was lost during an earlier attempt, which may have been committed with its acknowledgement lost: {JOURNAL_IS_AUTHORITY}"
            )),
            None,
        ),
        (None, _) => (anyhow::Error::msg(msg), None),
    }
}

/// A batch destroyed by its candidates ([`Connector::destroy`]), run again after a transient
/// error as [`retry`] does (and, as before, up to three times when its rows changed under it),
/// but first looked for in the journal: if the call failed after the server committed the batch
/// (the COMMIT's acknowledgement lost with the connection), a retry would find nothing left and
/// count the batch's rows as gone concurrently, their records in the journal only. The journal's
/// records are matched to the batch by their evidence ids.
///
/// After a lost connection (this call's, or `lost_before`, that of the batch's attempt by its
/// own statements: a retake), a later attempt asks the journal again once no transaction holds
/// the rows it left, nor, in a retake, the lost attempt's key range, which it may not have read
/// again (`Connector::settle`: it did not lock them, so it did not wait for a lost attempt still
/// committing them); records it did not destroy itself are the lost one's (in a retake, also
/// records of rows it did not read: [`Unread`]). A retake that finds nothing left asks the
/// journal the same way. Attempts that run out after a lost connection say that the batch may
/// have committed, or return the unread records the journal showed beside a failed attempt
/// with their error.
async fn destroy_or_journaled(
    conn: &dyn Connector,
    scope: &Scope,
    cands: &[Candidate],
    ids: &[EvidenceId],
    journal: &JournalCtx,
    started: DateTime<Utc>,
    lost_before: Option<LostBefore>,
) -> (anyhow::Result<BatchOutcome>, Option<LostReply>) {
    let (mut attempt, mut conflicts) = (0u32, 0u32);
    let lost_before = lost_before.filter(|_| conn.journaled_destroy());
    let range = lost_before
        .as_ref()
        .and_then(|l| l.range.as_ref())
        .map(|(after, upto)| KeyRange { after: after.as_deref(), upto });
    // The first lost connection's error, once one was met (journaled destroys only): this
    // call's, or that of the batch's attempt by its own statements (`lost_before`).
    let mut lost: Option<String> = lost_before.as_ref().map(|l| l.error.clone());
    // A retake: the journal is asked whatever this call destroys.
    let retake = lost.is_some();
    if cands.is_empty() {
        // Nothing left to take again: whatever the journal has under the batch's number, the
        // lost attempt committed (its rows are gone, so nothing here is matched to them).
        let Some(error) = lost else { return (Ok(BatchOutcome::default()), None) };
        let settled = settle_or_warn(conn, scope, &[], range, journal.batch).await;
        let reply = match from_journal(conn, &[], journal, started, true, true).await {
            Journal::Absent if settled => None,
            Journal::WithUnread { unread, .. } => Some(LostReply::unread_only(error, unread)),
            Journal::Absent | Journal::Found(_) | Journal::Unknown => Some(LostReply::Uncertain { error }),
        };
        return (Ok(BatchOutcome::default()), reply);
    }
    // The lost attempt's unread records, once the journal showed them beside an attempt of this
    // call that failed (rolled back): recorded even if every attempt fails.
    let mut shown: Option<Unread> = None;
    loop {
        let e = match conn.destroy(scope, cands, ids, journal).await {
            Ok(o) if o.conflict => {
                conflicts += 1;
                if conflicts < 3 {
                    continue;
                }
                let (e, reply) =
                    give_up("rows kept changing under the batch (3 attempts); skipped".into(), lost.as_deref(), shown);
                return (Err(e), reply);
            }
            Ok(mut o) => {
                let Some(error) = lost.filter(|_| retake || o.destroyed.len() < cands.len()) else {
                    return (Ok(o), None);
                };
                // The journal has this attempt's records and, if it committed after all, the
                // lost one's, under the same batch number. But this attempt did not lock the rows
                // it left (held or no longer due by then), nor, in a retake, those of the lost
                // attempt it did not read, so it did not wait for the lost one, which may still be
                // committing them: first wait for those rows' locks.
                o.destroyed.sort_unstable();
                let keys: Vec<Vec<Value>> = (0..cands.len())
                    .filter(|i| o.destroyed.binary_search(i).is_err())
                    .map(|i| cands[i].key.clone())
                    .collect();
                let settled = settle_or_warn(conn, scope, &keys, range, journal.batch).await;
                let mut untold = false;
                let (journaled, unread) = match (from_journal(conn, ids, journal, started, false, retake).await, shown)
                {
                    (Journal::Found(mine), _) => (mine, None),
                    (Journal::WithUnread { mine, unread }, _) => (mine, Some(unread)),
                    // The lost attempt's records the journal showed before (beside an attempt
                    // that failed), which it cannot show now.
                    (_, Some(unread)) => {
                        untold = true;
                        (vec![], Some(unread))
                    }
                    // Neither attempt journaled anything, and no transaction holds the rows:
                    // the lost one was rolled back.
                    (Journal::Absent, None) if o.destroyed.is_empty() && settled => return (Ok(o), None),
                    (Journal::Absent | Journal::Unknown, None) => {
                        return (Ok(o), Some(LostReply::Uncertain { error }));
                    }
                };
                let before = o.destroyed.len();
                o.destroyed.extend(journaled);
                o.destroyed.sort_unstable();
                o.destroyed.dedup();
                if o.destroyed.len() == before && unread.is_none() {
                    // Only this attempt's own records: once no transaction holds the rows it left,
                    // the lost one was rolled back (if the wait failed, it may still commit).
                    return (Ok(o), (!settled).then_some(LostReply::Uncertain { error }));
                }
                o.unchanged.retain(|i| o.destroyed.binary_search(i).is_err());
                o.failures.retain(|(i, _)| o.destroyed.binary_search(i).is_err());
                let from_journal = o.destroyed.len() - before + unread.as_ref().map_or(0, |u| u.ids.len());
                let reply = LostReply::Recovered { error, from_journal, others_accounted: true, unread, untold };
                return (Ok(o), Some(reply));
            }
            Err(e) => e,
        };
        let is_lost = matches!(e, ConnectorError::Lost { .. }) && conn.journaled_destroy();
        // This attempt's records in the journal (with, in a retake, the lost attempt's unread
        // ones): it committed. The unread ones alone: this one was rolled back, and is tried
        // again (they are kept, should every attempt fail).
        let (destroyed, unread) = match from_journal(conn, ids, journal, started, is_lost, retake).await {
            Journal::Found(mine) => (mine, None),
            Journal::WithUnread { mine, unread } if !mine.is_empty() => (mine, Some(unread)),
            Journal::WithUnread { unread, .. } => {
                shown = Some(unread);
                (vec![], None)
            }
            Journal::Absent | Journal::Unknown => (vec![], None),
        };
        if !destroyed.is_empty() {
            let from_journal = destroyed.len() + unread.as_ref().map_or(0, |u| u.ids.len());
            let error = e.to_string();
            return (
                Ok(BatchOutcome { destroyed, ..Default::default() }),
                Some(LostReply::Recovered { error, from_journal, others_accounted: false, unread, untold: false }),
            );
        }
        if is_lost && lost.is_none() {
            lost = Some(e.to_string());
        }
        if !e.is_transient() || attempt >= 3 {
            let (e, reply) = give_up(e.to_string(), lost.as_deref(), shown);
            return (Err(e), reply);
        }
        attempt += 1;
        backoff(attempt, &e).await;
    }
}

/// What the journal says of a batch ([`from_journal`]).
enum Journal {
    /// The batch's indices whose records it has under the batch's number.
    Found(Vec<usize>),
    /// In a retake, records under the batch's number that are not all this batch's: the
    /// batch's indices whose records it has (`mine`), and the lost attempt's records of rows
    /// this batch did not read ([`Unread`]).
    WithUnread { mine: Vec<usize>, unread: Unread },
    /// It was read and has nothing under the batch's number.
    Absent,
    /// No journal, one this connector cannot read by batch (the earlier per-record shape), a
    /// read that failed, or, outside a retake, records under the number that are not all this
    /// batch's.
    Unknown,
}

/// What the journal has of this batch under its number ([`journaled_anyway`]), asked a few
/// times over 1.5 s when `after_lost_connection` (the server may still be committing). (A batch
/// number can be journaled twice: a batch destroyed by its own statements whose lost
/// acknowledgement its own lookups missed, then the batch taken again by its candidates,
/// `retake`: records that are not this batch's are then that attempt's, `Journal::WithUnread`;
/// otherwise they are not taken for this batch's.)
async fn from_journal(
    conn: &dyn Connector,
    ids: &[EvidenceId],
    journal: &JournalCtx,
    started: DateTime<Utc>,
    after_lost_connection: bool,
    retake: bool,
) -> Journal {
    let (jb, jids) = match journaled_anyway(conn, journal, journal.batch, started, after_lost_connection).await {
        Ok(Some(found)) => found,
        Ok(None) => return Journal::Absent,
        Err(()) => return Journal::Unknown,
    };
    let at: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.record.as_str(), i)).collect();
    let mut destroyed: Vec<usize> = jids.iter().filter_map(|j| at.get(j.record.as_str()).copied()).collect();
    destroyed.sort_unstable();
    destroyed.dedup();
    if destroyed.len() != jids.len() && retake {
        let mut seen = BTreeSet::new();
        let ids: Vec<EvidenceId> =
            jids.into_iter().filter(|j| !at.contains_key(j.record.as_str()) && seen.insert(j.record.clone())).collect();
        if ids.is_empty() {
            // Only this batch's records, one of them twice: nothing of another attempt.
            return Journal::Found(destroyed);
        }
        tracing::warn!(
            "batch {}: the journal has {} records under its number that are not this batch's: its lost attempt's, which destroyed other rows than those taken again",
            journal.batch,
            ids.len()
        );
        return Journal::WithUnread { mine: destroyed, unread: Unread { ids, at: jb.committed_at } };
    }
    if destroyed.len() != jids.len() {
        tracing::warn!(
            "batch {}: the journal's records under its number are not all this batch's; not taken from it",
            journal.batch
        );
        return Journal::Unknown;
    }
    Journal::Found(destroyed)
}

/// Batch `batch` of this run's stage as the journal has it, with its records' evidence ids:
/// committed, though the call that destroyed it failed (the COMMIT's acknowledgement lost with
/// the connection). `Ok(None)` if the journal does not have it, `Err` if it cannot be read
/// (either way the batch is then taken again, as after any failure).
async fn journaled_anyway(
    conn: &dyn Connector,
    journal: &JournalCtx,
    batch: u64,
    started: DateTime<Utc>,
    lost: bool,
) -> Result<Option<(crate::connector::JournalBatch, Vec<EvidenceId>)>, ()> {
    if !conn.journal_readable() {
        return Err(());
    }
    // The journal's commit times are this run's clock, from its start on: an hour of margin.
    let since = (started - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // By the run id's leading hex digits (what `journal_batches` takes), then the whole id.
    let prefix = journal.run_id.split('-').next().unwrap_or_default();
    // After a lost connection the server may still be committing (a synchronous standby, say):
    // asked again a few times before the batch is taken to be rolled back.
    let attempts = if lost { 4 } else { 1 };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(250 * attempt)).await;
        }
        let batches = match retry(|| conn.journal_batches(&journal.policy, prefix, &since)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("the journal could not be read to see whether the batch committed: {e}");
                return Err(());
            }
        };
        // If the number was journaled twice (`from_journal`), the row committed first (an
        // undated one before any).
        let found = batches
            .into_iter()
            .filter(|b| b.run_id == journal.run_id && b.stage == journal.stage && b.batch == batch)
            .min_by_key(|b| b.committed_at);
        if let Some(b) = found {
            let ids = retry(|| conn.journal_batch_ids(&journal.policy, &b)).await.map_err(|e| {
                tracing::warn!("the journal could not be read to see whether the batch committed: {e}");
            })?;
            return Ok(Some((b, ids)));
        }
    }
    Ok(None)
}

/// How many of a committed batch's destroyed keys still need work (0: verified).
async fn verify_batch(conn: &dyn Connector, scope: &Scope, keys: &[Vec<Value>]) -> Result<u64, ConnectorError> {
    if keys.is_empty() {
        return Ok(0);
    }
    retry(|| conn.remaining(scope, keys)).await
}

/// Exit codes a CronJob can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// Some work failed (or the run was interrupted); what was committed is in the report.
    Partial = 1,
    /// Configuration or policies are invalid; nothing was destroyed.
    Invalid = 2,
    /// A guardrail stopped at least one policy: before anything of it was destroyed, or once its
    /// share for the run was destroyed and more was due.
    Guardrail = 3,
    /// Another worker holds the run lock of a selected policy; nothing was done.
    Busy = 6,
}

impl Exit {
    pub fn of(report: &Report) -> Exit {
        match report.status.as_str() {
            "complete" => Exit::Success,
            "guardrail" => Exit::Guardrail,
            _ => Exit::Partial,
        }
    }
}

/// The holds of a summary: the ten that kept the most records, most first.
const HOLDS_SHOWN: usize = 10;

fn largest_holds(held_by: &std::collections::BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let order = |a: &(&String, &u64), b: &(&String, &u64)| b.1.cmp(a.1).then(a.0.cmp(b.0));
    let mut by: Vec<(&String, &u64)> = held_by.iter().collect();
    if by.len() > HOLDS_SHOWN {
        by.select_nth_unstable_by(HOLDS_SHOWN - 1, order);
        by.truncate(HOLDS_SHOWN);
    }
    by.sort_by(order);
    by
}

/// The summary's "held by" lines: the holds that keep the most rows, at most ten, then how many
/// more there are (one hold per held subject can make thousands: the report lists every one).
fn held_lines(held_by: &std::collections::BTreeMap<String, u64>) -> String {
    let mut s = String::new();
    for (h, n) in largest_holds(held_by) {
        s.push_str(&format!("      held by {}: {n}\n", crate::reporting::printable(h)));
    }
    if held_by.len() > HOLDS_SHOWN {
        s.push_str(&format!("      held by {} more holds (listed in the report)\n", held_by.len() - HOLDS_SHOWN));
    }
    s
}

/// The plan/run summary as one JSON line, for `--log-format json`: in a container every line
/// of the worker's output is collected as a log event, and the text summary's lines were no
/// JSON (found by a review). The counts of [`summary`], by policy; the report has the rest.
pub fn summary_json(r: &Report, report_path: &Path) -> String {
    let policies: Vec<serde_json::Value> = r
        .policies
        .iter()
        .map(|p| {
            serde_json::json!({
                "policy": p.name,
                "action": p.action,
                "outcome": p.outcome,
                "total": p.rows_total,
                "due": p.rows_due,
                "deleted": p.deleted,
                "anonymized": p.anonymized,
                "fields_anonymized": p.fields_anonymized,
                "held": p.held,
                "null_anchor_kept": p.null_anchor_kept,
                "failed": p.failed,
                "not_destroyed": p.skipped(),
                "unreadable": p.unreadable,
                // The holds that kept the most, as the text says them; all are in the report.
                "held_by": largest_holds(&p.held_by).into_iter().map(|(h, n)| serde_json::json!({"hold": h, "records": n})).collect::<Vec<_>>(),
                "held_by_more": p.held_by.len().saturating_sub(HOLDS_SHOWN),
                "reconciled_from": p.reconciled_from,
                "errors": p.errors.iter().map(|e| crate::reporting::printable(e)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let interrupted: Vec<serde_json::Value> = r
        .interrupted_runs
        .iter()
        .map(|i| {
            serde_json::json!({
                "report": i.report,
                "evidence_file": i.evidence.file,
                "records": i.evidence.records,
                "destroyed": i.destroyed,
                "reconciled": i.reconciled,
                // Lines no journal batch of that run holds: not shown to be its destructions.
                "unconfirmed": i.unconfirmed,
            })
        })
        .collect();
    let level = match r.status.as_str() {
        "complete" => "INFO",
        "guardrail" => "WARN",
        _ => "ERROR",
    };
    serde_json::json!({
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level,
        "message": format!("{} summary", r.mode),
        "run_id": r.run_id,
        "mode": r.mode,
        "status": r.status,
        "cutoff": r.cutoff,
        "report": report_path.display().to_string(),
        "interrupted_runs": interrupted,
        "policies": policies,
    })
    .to_string()
}

/// Renders a plan/run summary for a terminal.
pub fn summary(r: &Report) -> String {
    let mut s = format!("{} {} · cutoff {} · status {}\n", r.mode, r.run_id, r.cutoff.to_rfc3339(), r.status);
    for p in &r.policies {
        s.push_str(&format!(
            "  {:<24} {:<9} total {:>8}  due {:>8}  deleted {:>8}  anonymized {:>8}  fields {:>8}  held {:>6}  null-anchor {:>6}  failed {:>4}  [{}]\n",
            p.name, p.action, p.rows_total, p.rows_due, p.deleted, p.anonymized, p.fields_anonymized, p.held, p.null_anchor_kept, p.failed, p.outcome
        ));
        s.push_str(&held_lines(&p.held_by));
        // Kept though due, by no hold or rule: said, or the line does not add up (found by a
        // review: a trigger that skips deletions kept a due row on every run, unsaid).
        if p.skipped() > 0 {
            s.push_str(&format!(
                "      not destroyed: {} due, selected and kept (changed meanwhile, or kept by the database): the next run looks at them again\n",
                p.skipped()
            ));
        }
        if p.unreadable > 0 {
            s.push_str(&format!("      unreadable: {} (facts that cannot be read; never destroyed)\n", p.unreadable));
        }
        for (run, n) in &p.reconciled_from {
            s.push_str(&format!(
                "      reconciled: {n} destroyed by interrupted run {run} ({})\n",
                if p.is_objects() {
                    "write-ahead intent, object gone"
                } else {
                    "committed in its journal, no evidence line"
                }
            ));
        }
        if !p.sample.is_empty() && r.mode == "plan" {
            let short: Vec<&str> = p.sample.iter().map(|x| &x[..16]).collect();
            s.push_str(&format!("      e.g. records {}\n", short.join(" ")));
        }
        for e in &p.errors {
            s.push_str(&format!("      ! {}\n", crate::reporting::printable(e)));
        }
    }
    for i in &r.interrupted_runs {
        let by: Vec<String> = i
            .destroyed
            .iter()
            .flat_map(|(p, actions)| actions.iter().map(move |(a, n)| format!("{p} {a} {n}")))
            .chain(i.reconciled.iter().map(|(p, n)| format!("{p} reconciled for an earlier run {n}")))
            .collect();
        s.push_str(&format!(
            "  interrupted run {} ended without its report: {} records in {} (SHA-256 {}…), accounted for here{}\n",
            i.report.trim_end_matches(".json"),
            i.evidence.records,
            i.evidence.file,
            &i.evidence.sha256[..16.min(i.evidence.sha256.len())],
            if by.is_empty() { String::new() } else { format!(": {}", by.join(", ")) }
        ));
        for (p, n) in &i.unconfirmed {
            s.push_str(&format!(
                "      ! {n} of its lines of {p} are in no batch its journal holds: not shown to be destructions of that run (a file it did not write, or altered; or the database was restored from a backup since, with its journal)\n"
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What lapse writes under a report prefix meets a dataset's prefix only where a name it
    /// writes can start with it (found by a review: a report bucket prefix `lapse` was refused
    /// beside a dataset of `lapse-data/`, and reports at a bucket's root beside any dataset).
    #[test]
    fn report_prefixes_meet_datasets_only_where_their_names_can() {
        assert!(prefixes_meet("", ""));
        assert!(prefixes_meet("lapse/prod/", "lapse/"));
        assert!(prefixes_meet("", "lapse-run-"));
        assert!(prefixes_meet("", "l"));
        assert!(prefixes_meet("reports/", "reports/shard-0"));
        assert!(prefixes_meet("", "chain/"));
        assert!(prefixes_meet("x/", "x/."));
        assert!(!prefixes_meet("lapse/", "lapse-data/"));
        assert!(!prefixes_meet("", "invoices/"));
        assert!(!prefixes_meet("reports/", "reports/archive/"));
        assert!(!prefixes_meet("lapse-reports/", "exports/"));
    }

    #[test]
    fn the_budget_is_the_share_in_whole_rows() {
        assert_eq!(super::rows_budget(100, 0.29), 29, "100 × 0.29 is 28.999… in floating point");
        assert_eq!(super::rows_budget(3, 0.5), 1);
        assert_eq!(super::rows_budget(1_000_000, 1.0), 1_000_000);
        assert_eq!(super::rows_budget(0, 0.1), 0);
        assert_eq!(super::rows_budget(7, 0.1), 0);
        // Every share of a whole percent, every total to 1,000: the guardrail's test (above the
        // budget) and the exact share in integers agree.
        for pct in 0..=100u64 {
            for total in 1..=1_000u64 {
                assert_eq!(super::rows_budget(total, pct as f64 / 100.0), total * pct / 100, "{pct} % of {total}");
            }
        }
    }

    #[test]
    fn a_batch_number_journaled_twice_is_one_batch_of_both_rows() {
        let at = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let row = |run: &str, stage: &str, batch: u64, records: u64, when: Option<DateTime<Utc>>| {
            crate::connector::JournalBatch {
                run_id: run.into(),
                stage: stage.into(),
                action: "deleted".into(),
                batch,
                records,
                committed_at: when,
            }
        };
        let rows = vec![
            row("r1", "record", 1, 10, at("2026-01-01T00:00:01Z")),
            row("r1", "record", 2, 10, at("2026-01-01T00:00:05Z")),
            row("r1", "record", 2, 7, at("2026-01-01T00:00:02Z")),
            row("r1", "record", 3, 10, None),
            row("r1", "other", 2, 4, None),
            row("r1", "other", 2, 1, at("2026-01-01T00:00:09Z")),
        ];
        let merged = one_row_per_batch(rows);
        let got: Vec<(&str, u64, u64, Option<DateTime<Utc>>)> =
            merged.iter().map(|b| (b.stage.as_str(), b.batch, b.records, b.committed_at)).collect();
        assert_eq!(
            got,
            vec![
                ("other", 2, 5, at("2026-01-01T00:00:09Z")),
                ("record", 1, 10, at("2026-01-01T00:00:01Z")),
                ("record", 2, 17, at("2026-01-01T00:00:02Z")),
                ("record", 3, 10, None),
            ]
        );
    }

    /// A holds table's hold id is the database's text: its controls are escaped in the summary
    /// (before, a newline and `ESC[2K` forged a summary line; found by a review).
    #[test]
    fn summary_escapes_controls_of_hold_ids() {
        let held: std::collections::BTreeMap<String, u64> = [("LH\n\u{1b}[2K  orders [done]".to_string(), 2)].into();
        assert_eq!(held_lines(&held), "      held by LH\\u{a}\\u{1b}[2K  orders [done]: 2\n");
    }

    #[test]
    fn summary_lists_the_ten_largest_holds() {
        let few: std::collections::BTreeMap<String, u64> = [("b".to_string(), 1), ("a".to_string(), 3)].into();
        assert_eq!(held_lines(&few), "      held by a: 3\n      held by b: 1\n");
        let many: std::collections::BTreeMap<String, u64> =
            (0..30_000u64).map(|i| (format!("H-{i:05}"), i % 7 + i / 29_990)).collect();
        let text = held_lines(&many);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        // Largest first, then by id among equals.
        assert_eq!(lines[0], "      held by H-29994: 7");
        assert_eq!(lines[1], "      held by H-00006: 6");
        assert_eq!(lines[9], "      held by H-00062: 6");
        assert_eq!(lines[10], "      held by 29990 more holds (listed in the report)");
    }

    /// The batch writer's lines are byte for byte what serializing each line gives.
    #[test]
    fn batch_evidence_lines_match_serialized_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = EvidenceSink::create(dir.path().join("one.jsonl")).unwrap();
        let mut batch = EvidenceSink::create(dir.path().join("batch.jsonl")).unwrap();
        let proto = Evidence {
            record: String::new(),
            subject: None,
            other_subjects: Vec::new(),
            policy: "crm \"leads\"".into(),
            action: "deleted".into(),
            stage: "fields:email,phone".into(),
            batch: 7,
            at: Utc::now(),
            versions: None,
            bytes: None,
            reconciled_from: None,
        };
        let ids = [("0a1b", Some("ff00")), ("c3d4", None), ("not hex \"x\"", Some("e5"))];
        for (r, s) in ids {
            one.write(&Evidence { record: r.into(), subject: s.map(Into::into), ..proto.clone() }).unwrap();
        }
        batch.write_batch(&proto, ids.iter().map(|(r, s)| (r.to_string(), s.map(str::to_string))).collect()).unwrap();
        let done = |(ev, failed): (Option<EvidenceFile>, Option<anyhow::Error>)| {
            assert!(failed.is_none(), "{failed:?}");
            ev.unwrap()
        };
        let (a, b) = (done(one.finish()), done(batch.finish()));
        assert_eq!(a.records, 3);
        assert_eq!((a.sha256, a.records), (b.sha256, b.records));
        let text = std::fs::read_to_string(dir.path().join("batch.jsonl")).unwrap();
        assert_eq!(text, std::fs::read_to_string(dir.path().join("one.jsonl")).unwrap());
        assert!(
            text.starts_with("{\"record\":\"0a1b\",\"subject\":\"ff00\",\"policy\":\"crm \\\"leads\\\"\""),
            "{text}"
        );
    }

    /// Evidence past the writer's periodic sync (`EVIDENCE_SYNC_BYTES`, more than twice over,
    /// with a policy's flush between batches) is written whole and in order, and the file's
    /// digest and record count are what the writer reports.
    #[test]
    fn evidence_synced_as_it_goes_is_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let mut sink = EvidenceSink::create(path.clone()).unwrap();
        let proto = Evidence {
            record: String::new(),
            subject: None,
            other_subjects: Vec::new(),
            policy: "customers".into(),
            action: "deleted".into(),
            stage: "record".into(),
            batch: 1,
            at: Utc::now(),
            versions: None,
            bytes: None,
            reconciled_from: None,
        };
        let per_batch = 20_000u64;
        let batches = 5u64;
        for b in 0..batches {
            let ids = (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    (format!("{n:064x}"), Some(format!("{:064x}", n * 7)))
                })
                .collect();
            sink.write_batch(&Evidence { batch: b + 1, ..proto.clone() }, ids).unwrap();
            if b == 2 {
                sink.flush().unwrap();
            }
        }
        let (ev, failed) = sink.finish();
        assert!(failed.is_none(), "{failed:?}");
        let ev = ev.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 2 * EVIDENCE_SYNC_BYTES, "{} bytes", bytes.len());
        assert_eq!(ev.records, batches * per_batch);
        assert_eq!(ev.sha256, hex::encode(Sha256::digest(&bytes)));
        let mut n = 0u64;
        each_evidence_line(&std::fs::File::open(&path).unwrap(), &mut |e| {
            assert_eq!(e.record, format!("{n:064x}"));
            assert_eq!(e.subject, Some(format!("{:064x}", n * 7)));
            assert_eq!(e.batch, n / per_batch + 1);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, batches * per_batch);
    }
}
