//! `lapse report combine`: the reports of the `n` shards of one logical run (`--shard i/n`) merged
//! into one summary.
//!
//! Combining refuses anything that is not one run: every shard `0..n` exactly once, the same
//! mode, cutoff, tool version, evidence key and policy files (by SHA-256), and every policy either
//! in the one shard its name hashes to or (split by key) in all of them. Counts are summed per
//! policy. The combined file names each shard report with the SHA-256 of its bytes, so it can be
//! checked against the (signed) shard reports, which remain the evidence.
//!
//! A shard retried (the chart's per-index retries, or a run started again with the same cutoff)
//! leaves several run reports of the same run in its directory: each attempt destroyed what it
//! reports, so they are all combined — what they destroyed summed, the rows total and due as the
//! first attempt that began each policy found them, what was kept (held, unreadable, failed, the
//! outcome) as the last that began it left it — and the earlier attempts are named with their
//! status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::shard::Shard;

/// The combined summary of a sharded run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Combined {
    /// `combined`.
    pub kind: String,
    /// `plan` or `run`.
    pub mode: String,
    /// The worst shard status: `incomplete`, `partial`, `guardrail` or `complete`.
    pub status: String,
    pub cutoff: DateTime<Utc>,
    /// The earliest shard start and the latest shard end.
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tool_version: String,
    pub evidence_key_id: String,
    pub shard_count: u32,
    /// The policies the run was limited to (`--policy`), the same in every shard; empty: every
    /// policy of the policy files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_policies: Vec<String>,
    /// Key ids of the public keys every shard report's signature was checked with
    /// (`--public-key`); empty: not checked.
    #[serde(default)]
    pub signatures_checked_with: Vec<String>,
    /// One entry per shard, in index order.
    pub shards: Vec<ShardRef>,
    /// Per policy, counts summed over the shards that processed it.
    pub policies: Vec<CombinedPolicy>,
}

/// A shard report the summary was made from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShardRef {
    pub index: u32,
    pub run_id: String,
    /// The report file, as given.
    pub file: PathBuf,
    /// SHA-256 (hex) of the report file's bytes.
    pub sha256: String,
    pub status: String,
    pub signing_key_id: Option<String>,
    /// Records in the shard's evidence file.
    pub evidence_records: Option<u64>,
    /// The shard's report says its evidence file was cut short by a write error
    /// (`Report::evidence_incomplete`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evidence_incomplete: bool,
    /// Reports of earlier runs of this shard that ended without them (killed), whose evidence
    /// files this shard's report accounts for (its `interrupted_runs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted_runs: Vec<String>,
    /// Earlier attempts of this shard at the same run (same cutoff, config, holds and policy
    /// files), oldest first: their destructions are in the counts too. (This entry is the last.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_attempts: Vec<Attempt>,
}

/// An earlier run report of a shard, combined with its last.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    pub run_id: String,
    pub file: PathBuf,
    /// SHA-256 (hex) of the report file's bytes.
    pub sha256: String,
    pub status: String,
}

/// One policy over all shards.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CombinedPolicy {
    pub name: String,
    pub connection: String,
    pub table: String,
    pub action: String,
    /// The shards that processed it: one, or all (split by key).
    pub shards: Vec<u32>,
    /// The worst outcome: `failed`, `guardrail`, `held`, then `done` / `planned`.
    pub outcome: String,
    pub rows_total: u64,
    pub rows_due: u64,
    pub deleted: u64,
    pub anonymized: u64,
    pub fields_anonymized: u64,
    pub held: u64,
    pub held_by: BTreeMap<String, u64>,
    pub null_anchor_kept: u64,
    pub blocked_by_dependents: u64,
    pub unreadable: u64,
    pub held_by_storage: u64,
    pub versions_deleted: u64,
    pub bytes_reclaimed: u64,
    pub dependents_deleted: BTreeMap<String, u64>,
    /// Destroyed by interrupted runs, recorded from their write-ahead intents.
    pub reconciled: u64,
    /// Evidence lines written from the journal for an earlier reported run's records
    /// (`PolicyReport::evidence_recovered`; counted in that run's report, not destroyed here).
    #[serde(default, skip_serializing_if = "crate::report::is_zero")]
    pub evidence_recovered: u64,
    pub failed: u64,
    /// Every shard verified its destroyed records.
    pub verified: bool,
}

fn rank_status(s: &str) -> u8 {
    match s {
        "incomplete" => 3,
        "partial" => 2,
        "guardrail" => 1,
        _ => 0,
    }
}

/// The worse of two shards' outcomes wins: a shard that `--max-batches` stopped leaves rows due,
/// so the policy is `stopped`, not `done` (before, the two tied and the first shard's won).
fn rank_outcome(s: &str) -> u8 {
    match s {
        "failed" => 5,
        "guardrail" => 4,
        "interrupted" => 3,
        "stopped" => 2,
        "held" => 1,
        _ => 0,
    }
}

/// Whether two reports are of one run: the same mode, shard, cutoff, tool version, evidence
/// key, policy files, holds file, config and selected policies.
fn same_run(a: &Report, b: &Report) -> Option<&'static str> {
    let digests = |r: &Report| {
        let mut v: Vec<(String, String)> = r
            .policy_files
            .iter()
            .map(|f| (f.path.file_name().unwrap_or_default().to_string_lossy().into_owned(), f.sha256.clone()))
            .collect();
        v.sort();
        v
    };
    let count = |r: &Report| r.shard.map(|s| s.count);
    if count(a) != count(b) {
        return Some("the number of shards");
    }
    if a.mode != b.mode {
        return Some("the mode");
    }
    if a.cutoff != b.cutoff {
        return Some("the cutoff (shards of one run need the same one: `--cutoff today`, `this-hour` or an instant)");
    }
    if a.tool.version != b.tool.version {
        return Some("the tool version");
    }
    if a.evidence_key_id != b.evidence_key_id {
        return Some("the evidence key");
    }
    if digests(a) != digests(b) {
        return Some("the policy files (SHA-256)");
    }
    // Shards that read another holds file or config did not enforce one run's rules (a
    // shard report left from an earlier run of the same cutoff, a holds file edited between
    // the shards' starts).
    if let (Some(x), Some(y)) = (&a.inputs, &b.inputs) {
        if x.holds_file.as_ref().map(|h| &h.hmac_sha256) != y.holds_file.as_ref().map(|h| &h.hmac_sha256) {
            return Some("the holds file (its keyed digest)");
        }
        if x.config.hmac_sha256 != y.config.hmac_sha256 {
            return Some("the config (its keyed digest)");
        }
    }
    if a.selected_policies != b.selected_policies {
        // A shard limited to other policies (`--policy`) left its share of the others
        // undone: the shards together are not one run of anything.
        return Some("the policies selected with --policy");
    }
    None
}

/// The run reports a path stands for, oldest first: the file itself, or a directory's newest
/// run report (the highest `sequence`; plan reports when there is no run report) after the
/// earlier run reports of the same run in that directory (a retried shard's attempts).
fn pick(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut all: Vec<(bool, u64, DateTime<Utc>, PathBuf, Report)> = Vec::new();
    for e in std::fs::read_dir(path).map_err(|e| anyhow::anyhow!("cannot read '{}': {e}", path.display()))? {
        let p = e?.path();
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !n.starts_with("lapse-") || !n.ends_with(".json") || n.ends_with(".evidence.json") {
            continue;
        }
        let Ok(r) = serde_json::from_slice::<Report>(&std::fs::read(&p)?) else { continue };
        all.push((r.mode == "run", r.sequence, r.started_at, p, r));
    }
    all.sort_by_key(|a| (a.0, a.1, a.2));
    let Some((run, _, _, newest, last)) = all.pop() else { anyhow::bail!("no lapse report in '{}'", path.display()) };
    let mut files: Vec<PathBuf> = match run {
        true => all
            .into_iter()
            .filter(|(run, _, _, _, r)| *run && r.shard == last.shard && same_run(r, &last).is_none())
            .map(|(_, _, _, p, _)| p)
            .collect(),
        false => Vec::new(),
    };
    files.push(newest);
    Ok(files)
}

/// A shard report whose signature does not verify with the given keys (`combine --public-key`).
#[derive(Debug)]
pub struct SignatureFailed(pub String);

impl std::fmt::Display for SignatureFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SignatureFailed {}

/// Reads the shard reports (files or directories) and combines them. Every reason they are not
/// the complete set of one run is an error; with `keys`, so is a shard report no given key
/// signed ([`SignatureFailed`]).
pub fn combine(paths: &[PathBuf], keys: &[ed25519_dalek::VerifyingKey]) -> anyhow::Result<Combined> {
    // Each given path's reports: the last of each (the shard's report), and before it, for a
    // directory, its earlier attempts at the same run.
    let mut reports: Vec<(PathBuf, String, Report)> = Vec::new();
    let mut earlier: Vec<Vec<(PathBuf, String, Report)>> = Vec::new();
    for p in paths {
        let mut files = pick(p)?;
        let last = files.pop().expect("pick gives one report at least");
        let mut attempts = Vec::new();
        for file in files.into_iter().chain([last]) {
            attempts.push(read_report(&file, keys)?);
        }
        reports.push(attempts.pop().expect("the last"));
        earlier.push(attempts);
    }
    combine_reports(reports, earlier, keys)
}

/// A report file, its SHA-256, and (with `keys`) its signature checked.
fn read_report(file: &Path, keys: &[ed25519_dalek::VerifyingKey]) -> anyhow::Result<(PathBuf, String, Report)> {
    {
        let file = file.to_path_buf();
        let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read '{}': {e}", file.display()))?;
        if !keys.is_empty() {
            let sig = std::fs::read_to_string(format!("{}.sig", file.display())).unwrap_or_default();
            if !keys.iter().any(|k| crate::integrity::check_signature(k, &bytes, &sig)) {
                return Err(SignatureFailed(format!(
                    "the signature of '{}' is missing or does not verify with the given public key(s); not combined (run `lapse report verify`)",
                    file.display()
                ))
                .into());
            }
        }
        let r: Report = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("'{}' is not a lapse report: {e}", file.display()))?;
        Ok((file, crate::integrity::sha256_hex(&bytes), r))
    }
}

fn combine_reports(
    reports: Vec<(PathBuf, String, Report)>,
    earlier: Vec<Vec<(PathBuf, String, Report)>>,
    keys: &[ed25519_dalek::VerifyingKey],
) -> anyhow::Result<Combined> {
    let Some((first_file, _, first)) = reports.first() else { anyhow::bail!("no shard reports given") };
    let Some(s0) = first.shard else {
        anyhow::bail!("'{}' is not a shard report (the run had no --shard)", first_file.display())
    };
    let n = s0.count;
    let mut by_index: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, (file, _, r)) in reports.iter().enumerate() {
        let Some(s) = r.shard else {
            anyhow::bail!("'{}' is not a shard report (the run had no --shard)", file.display())
        };
        if let Some(what) = same_run(r, first) {
            anyhow::bail!("'{}' is not of the same run as '{}': {what} differs", file.display(), first_file.display());
        }
        if let Some(j) = by_index.insert(s.index, i) {
            anyhow::bail!(
                "shard {} of {n} is given twice ('{}' and '{}')",
                s.index,
                reports[j].0.display(),
                file.display()
            );
        }
    }
    if let Some(missing) = (0..n).find(|i| !by_index.contains_key(i)) {
        anyhow::bail!("shard {missing} of {n} is missing; combine needs every shard of the run");
    }
    let mut policies: BTreeMap<String, CombinedPolicy> = BTreeMap::new();
    let mut shards = Vec::new();
    for (&index, &i) in &by_index {
        let (file, sha256, r) = &reports[i];
        shards.push(ShardRef {
            index,
            run_id: r.run_id.clone(),
            file: file.clone(),
            sha256: sha256.clone(),
            status: r.status.clone(),
            signing_key_id: r.signing_key_id.clone(),
            evidence_records: r.evidence.as_ref().map(|e| e.records),
            evidence_incomplete: r.evidence_incomplete,
            interrupted_runs: r.interrupted_runs.iter().map(|i| i.report.clone()).collect(),
            earlier_attempts: earlier[i]
                .iter()
                .map(|(file, sha256, a)| Attempt {
                    run_id: a.run_id.clone(),
                    file: file.clone(),
                    sha256: sha256.clone(),
                    status: a.status.clone(),
                })
                .collect(),
        });
        let attempts: Vec<&Report> = earlier[i].iter().map(|(_, _, a)| a).collect();
        for p in &merged(&attempts, r) {
            let c = policies.entry(p.name.clone()).or_insert_with(|| CombinedPolicy {
                name: p.name.clone(),
                connection: p.connection.clone(),
                table: p.table.clone(),
                action: p.action.clone(),
                outcome: p.outcome.clone(),
                verified: true,
                ..Default::default()
            });
            c.shards.push(index);
            if rank_outcome(&p.outcome) > rank_outcome(&c.outcome) {
                c.outcome = p.outcome.clone();
            }
            c.rows_total = c.rows_total.saturating_add(p.rows_total);
            c.rows_due = c.rows_due.saturating_add(p.rows_due);
            c.deleted = c.deleted.saturating_add(p.deleted);
            c.anonymized = c.anonymized.saturating_add(p.anonymized);
            c.fields_anonymized = c.fields_anonymized.saturating_add(p.fields_anonymized);
            c.held = c.held.saturating_add(p.held);
            for (h, k) in &p.held_by {
                let n = c.held_by.entry(h.clone()).or_default();
                *n = n.saturating_add(*k);
            }
            c.null_anchor_kept = c.null_anchor_kept.saturating_add(p.null_anchor_kept);
            c.blocked_by_dependents = c.blocked_by_dependents.saturating_add(p.blocked_by_dependents);
            c.unreadable = c.unreadable.saturating_add(p.unreadable);
            c.held_by_storage = c.held_by_storage.saturating_add(p.held_by_storage);
            c.versions_deleted = c.versions_deleted.saturating_add(p.versions_deleted);
            c.bytes_reclaimed = c.bytes_reclaimed.saturating_add(p.bytes_reclaimed);
            for (t, k) in &p.dependents_deleted {
                let n = c.dependents_deleted.entry(t.clone()).or_default();
                *n = n.saturating_add(*k);
            }
            c.reconciled = c.reconciled.saturating_add(p.reconciled);
            c.evidence_recovered = c.evidence_recovered.saturating_add(p.evidence_recovered);
            c.failed = c.failed.saturating_add(p.failed);
            c.verified &= p.verification.verified || r.mode != "run";
        }
    }
    for c in policies.values() {
        let whole = c.shards.len() == 1 && c.shards[0] == Shard::owner(&c.name, n);
        if !whole && c.shards.len() != n as usize {
            anyhow::bail!(
                "policy '{}' was processed by shards {:?} of {n}: neither its own shard ({}) alone nor every shard (split by key)",
                c.name,
                c.shards,
                Shard::owner(&c.name, n)
            );
        }
    }
    let all: Vec<&Report> = by_index.values().map(|&i| &reports[i].2).collect();
    Ok(Combined {
        kind: "combined".into(),
        mode: first.mode.clone(),
        status: all.iter().map(|r| r.status.clone()).max_by_key(|s| rank_status(s)).unwrap_or_default(),
        cutoff: first.cutoff,
        started_at: all.iter().map(|r| r.started_at).min().unwrap_or(first.started_at),
        finished_at: if all.iter().all(|r| r.finished_at.is_some()) {
            all.iter().filter_map(|r| r.finished_at).max()
        } else {
            None
        },
        tool_version: first.tool.version.to_string(),
        evidence_key_id: first.evidence_key_id.clone(),
        shard_count: n,
        selected_policies: first.selected_policies.clone(),
        signatures_checked_with: keys.iter().map(crate::integrity::key_id).collect(),
        shards,
        policies: policies.into_values().collect(),
    })
}

/// A shard's policies over its attempts (`earlier`, oldest first, then `last`): what they
/// destroyed summed; the rows total and due as the first attempt that ran the policy found them;
/// what was kept, failed, and the outcome as the last that began it left them (its earlier failures are named
/// by their attempts' status); verified only if every attempt verified.
fn merged(earlier: &[&Report], last: &Report) -> Vec<crate::report::PolicyReport> {
    // An attempt stopped before it began a policy counted nothing of it: its zero totals and
    // unverified state are no attempt's findings (before, they set the combined totals; found
    // by a review). When the last attempt did not begin it, what was kept, failed and the
    // outcome are those of the last attempt that did (its "not started" among the errors).
    let started = |q: &crate::report::PolicyReport| !q.errors.iter().any(|e| e.starts_with("not started"));
    let mut out = last.policies.clone();
    for p in &mut out {
        let mut before: Vec<&crate::report::PolicyReport> = earlier
            .iter()
            .filter_map(|r| r.policies.iter().find(|q| q.name == p.name))
            .filter(|q| started(q))
            .collect();
        let totals = before.first().map(|first| (first.rows_total, first.rows_due));
        if !started(p) {
            if let Some(base) = before.pop() {
                let errors = std::mem::take(&mut p.errors);
                *p = base.clone();
                p.errors.extend(errors);
            }
        }
        if let Some((total, due)) = totals {
            p.rows_total = total;
            p.rows_due = due;
        }
        for q in before {
            p.deleted = p.deleted.saturating_add(q.deleted);
            p.anonymized = p.anonymized.saturating_add(q.anonymized);
            p.fields_anonymized = p.fields_anonymized.saturating_add(q.fields_anonymized);
            p.versions_deleted = p.versions_deleted.saturating_add(q.versions_deleted);
            p.bytes_reclaimed = p.bytes_reclaimed.saturating_add(q.bytes_reclaimed);
            for (t, k) in &q.dependents_deleted {
                let n = p.dependents_deleted.entry(t.clone()).or_default();
                *n = n.saturating_add(*k);
            }
            p.reconciled = p.reconciled.saturating_add(q.reconciled);
            p.evidence_recovered = p.evidence_recovered.saturating_add(q.evidence_recovered);
            p.verification.verified &= q.verification.verified;
        }
    }
    out
}

impl Combined {
    /// A few lines for a terminal.
    pub fn text(&self) -> String {
        let mut s = format!(
            "combined {} of {} shards · cutoff {} · status {}\n",
            self.mode,
            self.shard_count,
            self.cutoff.to_rfc3339(),
            self.status
        );
        if !self.selected_policies.is_empty() {
            s.push_str(&format!("  limited to the policies {} (--policy)\n", self.selected_policies.join(", ")));
        }
        for p in &self.policies {
            s.push_str(&format!(
                "  {:<24} shards {:<9} total {:>8}  due {:>8}  deleted {:>8}  anonymized {:>8}  fields {:>8}  held {:>6}  failed {:>4}  [{}]\n",
                p.name,
                if p.shards.len() == 1 { p.shards[0].to_string() } else { "all".into() },
                p.rows_total, p.rows_due, p.deleted, p.anonymized, p.fields_anonymized, p.held, p.failed, p.outcome
            ));
        }
        if self.signatures_checked_with.is_empty() {
            s.push_str("  the shard reports' signatures were not checked (give --public-key, or run `lapse report verify` on each shard directory)\n");
        } else {
            s.push_str(&format!(
                "  every shard report's signature verified (key {})\n",
                self.signatures_checked_with.join(", ")
            ));
        }
        for sh in self.shards.iter().filter(|sh| !sh.earlier_attempts.is_empty()) {
            s.push_str(&format!(
                "  shard {} was run {} times at this cutoff (retried): its counts include the earlier attempts, {}\n",
                sh.index,
                sh.earlier_attempts.len() + 1,
                sh.earlier_attempts
                    .iter()
                    .map(|a| format!("{} ({})", a.run_id, a.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for sh in self.shards.iter().filter(|sh| !sh.interrupted_runs.is_empty()) {
            s.push_str(&format!(
                "  shard {} accounts for the evidence of {} earlier run(s) that ended without their report: {}\n",
                sh.index,
                sh.interrupted_runs.len(),
                sh.interrupted_runs.join(", ")
            ));
        }
        for sh in self.shards.iter().filter(|sh| sh.evidence_incomplete) {
            s.push_str(&format!(
                "  shard {}'s evidence file was cut short by a write error: batches after its last line are in the journal, until the shard's next run writes their lines\n",
                sh.index
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::rank_outcome;

    #[test]
    fn the_worse_outcome_wins() {
        let order = ["done", "held", "stopped", "interrupted", "guardrail", "failed"];
        for w in order.windows(2) {
            assert!(rank_outcome(w[0]) < rank_outcome(w[1]), "{} ranks below {}", w[0], w[1]);
        }
        assert_eq!(rank_outcome("planned"), rank_outcome("done"));
    }
}
