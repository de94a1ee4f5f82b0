//! `lapse report verify --journal`: do the reports account for every run the databases' journal
//! tables record?
//!
//! Every SQL batch journals its run id in its destroying transaction. A newest run report
//! removed with its evidence file leaves a chain that still verifies (the next run takes its
//! sequence), but its batches stay in the journal. This check reads, for each SQL policy of the
//! config, the runs its journal table records since the earliest run report present, and finds
//! each accounted for: by a run report (its `run_id`), by a report that accounted for the
//! evidence file of a run killed before its report (`interrupted_runs`, named by the run id's
//! first 8 hex digits), by a run that reconciled its batches (`reconciled_from`), or by an
//! evidence file here no report accounts for yet (a killed run, or one still going: said, not a
//! problem). Anything else is a problem: a removed report, or a run that keeps its reports
//! elsewhere. Reads only; the journal's records (keyed hashes) are not read.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::store::{self, FileKind, ReportStore};
use super::verify::{Finding, Outcome, Problem};
use crate::engine::{Connections, Workspace};

/// The fields of a run report this check reads.
#[derive(Deserialize)]
struct View {
    run_id: String,
    started_at: DateTime<Utc>,
    #[serde(default)]
    interrupted_runs: Vec<Interrupted>,
    #[serde(default)]
    policies: Vec<PolicyView>,
    #[serde(default)]
    shard: Option<crate::report::ShardInfo>,
}

#[derive(Deserialize)]
struct Interrupted {
    report: String,
}

#[derive(Deserialize)]
struct PolicyView {
    #[serde(default)]
    reconciled_from: BTreeMap<String, u64>,
}

/// What the reports of one or more stores account for.
#[derive(Default)]
struct Accounted {
    /// Run ids of run reports, and those named by `reconciled_from`.
    runs: BTreeSet<String>,
    /// Run id prefixes (8 hex digits) of killed runs a report accounted for.
    interrupted: BTreeSet<String>,
    /// Run id prefixes of evidence files no report here accounts for (yet).
    pending: BTreeSet<String>,
    /// Start of the earliest run report read.
    since: Option<DateTime<Utc>>,
    /// Per shard layout (`count`), the shards whose reports were read.
    shards: BTreeMap<u32, BTreeSet<u32>>,
    reports: usize,
}

/// The run id prefix in a run report's or its evidence file's name
/// (`lapse-run-<time>-<prefix>.json`, as `report::run_of` reads it).
fn prefix_of(name: &str) -> Option<String> {
    let report = match store::kind(name) {
        FileKind::Report => name.to_string(),
        FileKind::Evidence { report } => report,
        _ => return None,
    };
    let (_, p) = crate::report::run_of(&report)?;
    (p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit())).then(|| p.to_ascii_lowercase())
}

fn read_store(st: &dyn ReportStore, acc: &mut Accounted) -> anyhow::Result<()> {
    let names = st.list()?;
    let mut evidence = Vec::new();
    let mut reported = BTreeSet::new();
    for name in names.iter().filter(|n| n.starts_with("lapse-run-")) {
        match store::kind(name) {
            FileKind::Report => {
                // An unreadable report is verify's finding; its run is then unaccounted here.
                let Ok(v) =
                    st.read(name).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice::<View>(&b)?))
                else {
                    continue;
                };
                acc.reports += 1;
                acc.since = Some(acc.since.map_or(v.started_at, |s| s.min(v.started_at)));
                acc.runs.insert(v.run_id.to_ascii_lowercase());
                for i in &v.interrupted_runs {
                    if let Some(p) = prefix_of(&i.report) {
                        reported.insert(i.report.clone());
                        acc.interrupted.insert(p);
                    }
                }
                for p in &v.policies {
                    acc.runs.extend(p.reconciled_from.keys().map(|k| k.to_ascii_lowercase()));
                }
                if let Some(s) = v.shard {
                    acc.shards.entry(s.count).or_default().insert(s.index);
                }
                reported.insert(name.clone());
            }
            FileKind::Evidence { report } => evidence.push((name.clone(), report)),
            _ => {}
        }
    }
    for (name, report) in evidence {
        if !reported.contains(&report) {
            acc.pending.extend(prefix_of(&name));
        }
    }
    Ok(())
}

/// A journaled run as the journal shows it, per policy.
struct JournalRun {
    batches: u64,
    records: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

/// Checks the runs the journal tables of `ws`'s SQL policies record against the reports of
/// `stores` (a reports directory and its shard directories), adding a
/// finding per run no report accounts for and notes on what was read. `Err`: a journal could
/// not be read, or the stores do not hold every shard of a sharded layout (no answer).
///
/// `first`: the sequence the chain starts at (`--first-sequence`). From 1, every run the
/// journal records must be accounted for; from later, only those since the earliest run report
/// read (the reports before it were deleted on purpose).
pub async fn check(
    stores: &[Box<dyn ReportStore>],
    ws: &Workspace,
    conns: &Connections,
    first: u64,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let mut acc = Accounted::default();
    for st in stores {
        read_store(st.as_ref(), &mut acc)?;
    }
    for (n, seen) in &acc.shards {
        // Key-sharded policies journal every shard's runs in one table: the other shards' run
        // reports are needed to account for them.
        if seen.len() < *n as usize {
            anyhow::bail!(
                "--journal needs the reports of every shard of the layout ({n} shards; reports of {} read): check a shard-<i>-of-{n} directory with its siblings beside it",
                seen.len()
            );
        }
    }
    let since = match (first, acc.since) {
        (1, _) => None,
        (_, Some(t)) => Some(t),
        (_, None) => {
            out.notes.push(
                "journal: no run report here to date the chain's start (--first-sequence), so the journal was not compared"
                    .into(),
            );
            return Ok(());
        }
    };
    // RFC 3339 with milliseconds, as the journal's `committed_at` is written (compared as text).
    let since_text = since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default();
    let mut runs = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut pending = BTreeSet::new();
    for p in ws.policies.policies.iter().filter(|p| p.objects.is_none()) {
        let Some(conn) = conns.get(&p.connection) else { continue };
        let table = ws.config.connections.get(&p.connection).map(|c| c.journal_table.clone()).unwrap_or_default();
        let batches = conn.journal_batches(&p.name, "", &since_text).await.map_err(|e| {
            anyhow::anyhow!(
                "policy '{}': cannot read journal table '{table}' of connection '{}': {e}",
                p.name,
                p.connection
            )
        })?;
        tables.insert(format!("{table} ({})", p.connection));
        let mut by_run: BTreeMap<String, JournalRun> = BTreeMap::new();
        for b in batches {
            let r = by_run.entry(b.run_id.to_ascii_lowercase()).or_insert(JournalRun {
                batches: 0,
                records: 0,
                first: None,
                last: None,
            });
            r.batches += 1;
            r.records += b.records;
            if let Some(t) = b.committed_at {
                r.first = Some(r.first.map_or(t, |f| f.min(t)));
                r.last = Some(r.last.map_or(t, |l| l.max(t)));
            }
        }
        for (run_id, r) in by_run {
            runs.insert(run_id.clone());
            let prefix = run_id.get(..8).unwrap_or(&run_id).to_string();
            if acc.runs.contains(&run_id) || acc.interrupted.contains(&prefix) {
                continue;
            }
            if acc.pending.contains(&prefix) {
                pending.insert(prefix);
                continue;
            }
            let when = |t: Option<DateTime<Utc>>| {
                t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "?".into())
            };
            out.findings.push(Finding {
                problem: Problem::UnaccountedRun,
                file: format!("journal table {table} ({})", p.connection),
                message: format!(
                    "run {run_id} committed {} batch(es), {} record(s), of policy '{}' from {} to {}, and no report here accounts for it: its run report was removed with its evidence file, or the run kept its reports elsewhere (another directory or bucket; a run still going when its report was not yet written)",
                    r.batches,
                    r.records,
                    p.name,
                    when(r.first),
                    when(r.last)
                ),
            });
        }
    }
    for p in pending {
        out.notes.push(format!(
            "journal: run {p}… has an evidence file here but no report yet (killed, or still going): its policies' next run accounts for it"
        ));
    }
    let sql_policies = ws.policies.policies.iter().filter(|p| p.objects.is_none()).count();
    out.notes.push(format!(
        "journal: {} run(s) of {sql_policies} SQL polic{} recorded in {}{}, compared with {} run report(s){}",
        runs.len(),
        if sql_policies == 1 { "y" } else { "ies" },
        if tables.is_empty() {
            "no journal table".to_string()
        } else {
            tables.into_iter().collect::<Vec<_>>().join(", ")
        },
        match since {
            Some(t) => format!(" since {} (the earliest run report read)", t.format("%Y-%m-%d %H:%M:%S UTC")),
            None => String::new(),
        },
        acc.reports,
        if out.findings.iter().any(|f| f.problem == Problem::UnaccountedRun) { "" } else { ": each accounted for" }
    ));
    out.ok = out.ok && out.findings.is_empty();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_prefixes_of_file_names() {
        assert_eq!(prefix_of("lapse-run-20260101T000000Z-abcd1234.json").as_deref(), Some("abcd1234"));
        assert_eq!(prefix_of("lapse-run-20260101T000000Z-ABCD1234.evidence.jsonl").as_deref(), Some("abcd1234"));
        assert_eq!(prefix_of("lapse-run-20260101T000000Z-abcd123.json"), None);
        assert_eq!(prefix_of("lapse-run-20260101T000000Z-abcd1234.csv"), None);
    }
}
