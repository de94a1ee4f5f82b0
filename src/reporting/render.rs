//! `lapse report render`: the report as a person reads it.
//!
//! HTML: one self-contained file (inline CSS and SVG, no script, no external asset; a
//! Content-Security-Policy forbids loading anything) that prints cleanly to PDF. The summary
//! comes first — what was destroyed, under which policy and legal basis, by which method; what
//! was kept and why (each hold with id and matter); what failed — with a bar chart of destroyed,
//! anonymized and held records per policy; then each policy in detail; then a certificate of
//! destruction in the manner of the certificate of sanitization of NIST SP 800-88 Rev. 1.
//! Every text taken from the report goes through [`esc`]: hold matters, error messages and names
//! cannot inject markup.
//!
//! CSV: the summary CSV written next to every report ([`Report::csv`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::report::{PolicyReport, Report};

/// What is known about the rendered file itself.
pub struct Source {
    /// File name of the JSON report.
    pub file: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Id of the public key the signature was checked with at render time, if it was.
    pub signature_checked_with: Option<String>,
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Controls, and bidirectional formatting characters (a hold id of a holds table
            // could turn a row's signed numbers around).
            c if c != '\n' && c != '\t' && crate::holds::unprintable(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` → `1,234,567`.
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn when(t: &DateTime<Utc>) -> String {
    format!("<time datetime=\"{}\">{}</time>", esc(&t.to_rfc3339()), t.format("%Y-%m-%d %H:%M:%S UTC"))
}

/// A hold's expiry: the instant in `datetime`, said as the day a bare-date hold holds through
/// (`super::hold_expiry`; before, `expires: 2027-06-30` showed as 2027-07-01 00:00:00).
fn hold_expiry_cell(t: &DateTime<Utc>) -> String {
    format!("<time datetime=\"{}\">{}</time>", esc(&t.to_rfc3339()), esc(&super::hold_expiry(t)))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", num(n), if n == 1 { one } else { many })
}

const CSS: &str = r#"
:root { --ink:#1b1f24; --muted:#57606a; --line:#d0d7de; --soft:#f6f8fa; --del:#b42318; --anon:#1f5fbf; --held:#a15c07; --ok:#1a7f37; --bad:#b42318; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0 auto; max-width: 64rem; padding: 2rem 1.5rem 3rem; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
header.doc { border-bottom: 3px solid var(--ink); padding-bottom: .8rem; }
.kicker { margin: 0; text-transform: uppercase; letter-spacing: .08em; font-size: .75rem; color: var(--muted); }
h1 { font-size: 1.8rem; margin: .2rem 0 .3rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .8rem; padding-bottom: .25rem; border-bottom: 2px solid var(--ink); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
h4 { font-size: .95rem; margin: 1rem 0 .3rem; }
p { margin: .4rem 0 .7rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: .85em; }
code.hash { overflow-wrap: anywhere; word-break: break-all; }
.dataset { display: block; color: var(--muted); font-size: .8rem; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .6rem 0 0; font-size: .9rem; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .88rem; }
th, td { border: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
thead th { background: var(--soft); }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
ul.plain { margin: 0; padding-left: 1.1rem; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: .8rem; font-weight: 600; border: 1px solid currentColor; }
.st-complete, .good { color: var(--ok); }
.st-partial, .st-incomplete, .st-guardrail, .bad { color: var(--bad); }
.st-plan { color: var(--anon); }
.notice { border-left: 4px solid var(--held); background: #fff8e6; padding: .55rem .9rem; margin: .8rem 0; }
.notice.bad { border-color: var(--bad); background: #fdecea; color: var(--ink); }
.notice.good { border-color: var(--ok); background: #eaf6ec; color: var(--ink); }
ul.totals { display: grid; grid-template-columns: repeat(auto-fit, minmax(8.5rem, 1fr)); gap: .6rem; list-style: none; padding: 0; margin: .8rem 0 1rem; }
ul.totals li { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .75rem; font-size: .85rem; color: var(--muted); }
ul.totals .n { display: block; font-size: 1.45rem; font-weight: 650; color: var(--ink); }
figure.chart { margin: .4rem 0 1.2rem; }
figure.chart svg { width: 100%; max-width: 46rem; height: auto; display: block; }
figcaption { font-size: .8rem; color: var(--muted); }
article.policy { border-top: 1px solid var(--line); margin-top: 1.2rem; }
table.form th { width: 26%; background: var(--soft); font-weight: 600; }
table.form tr.group th { background: var(--ink); color: #fff; letter-spacing: .02em; }
.signoff { display: grid; grid-template-columns: 1fr 1fr; gap: 1.6rem 2.5rem; margin-top: 2rem; }
.signoff div { border-top: 1px solid var(--ink); padding-top: .25rem; font-size: .8rem; color: var(--muted); min-height: 2.6rem; }
footer { margin-top: 3rem; font-size: .78rem; color: var(--muted); border-top: 1px solid var(--line); padding-top: .6rem; }
@page { size: A4; margin: 15mm 13mm 17mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  table, figure, ul.totals li, tr, .notice, .signoff { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  section.certificate { break-before: page; page-break-before: always; }
  figure.chart svg { max-width: 100%; }
}
"#;

/// The self-contained HTML rendering.
pub fn html(r: &Report, src: &Source) -> String {
    let plan = r.mode == "plan";
    let mut h = String::new();
    let title = if plan { "Retention plan (dry run)" } else { "Destruction report" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"lapse {}\">\n<title>{} — run {} — {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(env!("CARGO_PKG_VERSION")),
        title,
        esc(short(&r.run_id)),
        r.started_at.format("%Y-%m-%d"),
    );
    header(&mut h, r, title);
    h.push_str("<main>\n");
    summary(&mut h, r);
    details(&mut h, r);
    certificate(&mut h, r, src);
    h.push_str("</main>\n");
    let _ = write!(
        h,
        "<footer>Rendered by lapse {} from <code class=\"hash\">{}</code> (SHA-256 <code class=\"hash\">{}</code>). The JSON report and its Ed25519 signature are authoritative; check them with <code>lapse report verify</code>. Records and subjects are identified only by keyed hash: no value of the datasets is in this document (hold matters and reasons are shown as written in the holds).</footer>\n</body>\n</html>\n",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&src.file),
        esc(&src.sha256)
    );
    h
}

fn short(run_id: &str) -> &str {
    run_id.get(..8).unwrap_or(run_id)
}

fn status_text(r: &Report) -> (&'static str, String) {
    let plan = r.mode == "plan";
    match r.status.as_str() {
        "complete" if plan => ("good", "Plan complete: the counts below are what a run would destroy; nothing was changed.".into()),
        "complete" if !plan && r.policies.iter().any(|p| p.skipped() > 0) => (
            "bad",
            "Complete, except for due records that were selected and kept: they changed meanwhile, or the database kept them (see What failed); the next run looks at them again.".into(),
        ),
        "complete" if r.policies.iter().any(|p| p.outcome == "stopped") => (
            "good",
            "Complete for the batches allowed: a stage stopped at --max-batches, and what is still due is left for the next run.".into(),
        ),
        "complete" => ("good", "Complete: everything due was destroyed, except what holds and the rules below kept.".into()),
        "partial" => ("bad", "Partial: some work failed (see What failed). What was committed is counted here.".into()),
        "guardrail" if plan => (
            "bad",
            "A guardrail would stop at least one policy: it would destroy an implausible share of its dataset, so a run would destroy nothing of it (see What failed).".into(),
        ),
        "guardrail"
            if r.policies.iter().any(|p| {
                p.guardrail.tripped && (p.deleted | p.anonymized | p.fields_anonymized | p.versions_deleted) > 0
            }) =>
        {
            (
                "bad",
                "Stopped by a guardrail: at least one policy destroyed its share of its dataset for this run, and more was due than that share allows; what it destroyed is counted here, the rest is left (see What failed).".into(),
            )
        }
        "guardrail" => (
            "bad",
            "Stopped by a guardrail: at least one policy would have destroyed an implausible share of its dataset and destroyed nothing (see What failed).".into(),
        ),
        "incomplete" => (
            "bad",
            "Incomplete: the run was interrupted, or a policy stopped part-way (see What failed). Only the batches committed before that are counted; a re-run finishes the job.".into(),
        ),
        other => ("bad", format!("Status: {other}.")),
    }
}

fn header(h: &mut String, r: &Report, title: &str) {
    let st_class =
        if r.mode == "plan" && r.status == "complete" { "st-plan".to_string() } else { format!("st-{}", r.status) };
    let _ = write!(
        h,
        "<header class=\"doc\">\n<p class=\"kicker\">lapse · retention enforcement</p>\n<h1>{title}</h1>\n<dl class=\"meta\">\n\
         <dt>Run</dt><dd><code>{}</code> ({})</dd>\n<dt>Status</dt><dd><span class=\"badge {}\">{}</span></dd>\n\
         <dt>Started</dt><dd>{}</dd>\n<dt>Finished</dt><dd>{}</dd>\n<dt>Cutoff</dt><dd>{} — a purpose lapses when its anchor plus the retention period is at or before this instant</dd>\n\
         <dt>Worker</dt><dd>{} {}</dd>\n</dl>\n</header>\n",
        esc(&r.run_id),
        esc(&r.mode),
        esc(&st_class),
        esc(&r.status),
        when(&r.started_at),
        r.finished_at.as_ref().map(when).unwrap_or_else(|| "—".into()),
        when(&r.cutoff),
        esc(r.tool.name),
        esc(r.tool.version),
    );
}

/// Per policy: (deleted, anonymized incl. field-level, held). For a plan: what is due.
fn series(r: &Report, p: &PolicyReport) -> [u64; 3] {
    if r.mode == "plan" {
        let due = |pred: &dyn Fn(&str) -> bool| {
            p.stages.iter().filter(|s| pred(&s.action)).map(|s| s.due).fold(0u64, u64::saturating_add)
        };
        [due(&|a| a == "deleted"), due(&|a| a != "deleted"), p.held]
    } else {
        [p.deleted, p.anonymized.saturating_add(p.fields_anonymized), p.held]
    }
}

fn summary(h: &mut String, r: &Report) {
    let plan = r.mode == "plan";
    h.push_str("<section id=\"summary\" aria-labelledby=\"summary-h\">\n<h2 id=\"summary-h\">Summary</h2>\n");
    let (class, text) = status_text(r);
    let _ = writeln!(h, "<p class=\"notice {class}\" id=\"status\">{}</p>", esc(&text));
    let sum = |f: &dyn Fn(&PolicyReport) -> u64| r.policies.iter().map(f).fold(0u64, u64::saturating_add);
    // Policies on one table find the same records due and held (their purposes and holds are
    // merged): those are counted once per table, by the largest of its policies' figures (before,
    // added up: a record kept by one hold counted twice; found by a read-only review). Deletes
    // are distinct (a record is deleted by one of them) and are added up.
    let once = |f: &dyn Fn(&PolicyReport) -> u64| per_table_max(r, f);
    let deleted = if plan { once(&|p| series(r, p)[0]) } else { sum(&|p| p.deleted) };
    let anonymized = once(&|p| p.anonymized);
    let fields = sum(&|p| p.fields_anonymized);
    let due_anon = once(&|p| series(r, p)[1]);
    let cascaded = sum(&|p| p.dependents_deleted.values().fold(0u64, |a, b| a.saturating_add(*b)));
    let held = once(&|p| p.held);
    let failed = sum(&|p| p.failed);
    h.push_str("<ul class=\"totals\" id=\"totals\">\n");
    let mut tot = |n: u64, label: &str| {
        let _ = writeln!(h, "<li><span class=\"n\">{}</span>{}</li>", num(n), esc(label));
    };
    if plan {
        tot(deleted, "records due for deletion");
        tot(due_anon, "records due for anonymization");
    } else {
        tot(deleted, "records deleted");
        tot(anonymized, "records anonymized");
        tot(fields, "field-level anonymizations (a record per stage: lapsed fields of kept records)");
        tot(cascaded, "dependent rows deleted");
        let reconciled = sum(&|p| p.reconciled);
        if reconciled > 0 {
            tot(reconciled, "records destroyed by an interrupted run, reconciled from its write-ahead intents (objects) or its journal (SQL)");
        }
        let recovered = sum(&|p| p.evidence_recovered);
        if recovered > 0 {
            tot(recovered, "evidence lines written from the journal for records an earlier run destroyed and reported, but could not write evidence for (counted in that run's report, not here)");
        }
    }
    tot(held, "lapsed records kept by legal holds");
    tot(failed, "records in failed batches");
    h.push_str("</ul>\n");
    for (table, names) in shared_tables(r) {
        let after = match plan {
            true => "",
            false => "; each policy's figures are taken when it runs, after what the policies before it destroyed",
        };
        let _ = writeln!(
            h,
            "<p class=\"note\">Table {} is covered by policies {}: they find the same records due and held, so a record is counted once in these totals and under each of them below{after}.</p>",
            esc(&table),
            esc(&names.join(", "))
        );
    }

    // What was destroyed.
    let _ = writeln!(h, "<h3>{}</h3>", if plan { "What a run would destroy" } else { "What was destroyed" });
    h.push_str("<table id=\"destroyed\">\n<thead><tr><th>Policy and dataset</th><th>Purposes and legal basis</th><th>Method</th>");
    if plan {
        h.push_str("<th class=\"num\">Due: delete</th><th class=\"num\">Due: anonymize</th>");
    } else {
        h.push_str("<th class=\"num\">Deleted</th><th class=\"num\">Anonymized</th><th class=\"num\">Fields anonymized</th><th>Verified</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for p in &r.policies {
        let s = series(r, p);
        let _ = write!(
            h,
            "<tr><td><strong>{}</strong><span class=\"dataset\">{} · {}</span></td><td>{}</td><td>{}{}</td>",
            esc(&p.name),
            esc(&p.connection),
            esc(&p.table),
            purposes_cell(p),
            method_cell(p),
            cascade_note(p)
        );
        if plan {
            let _ = write!(h, "<td class=\"num\">{}</td><td class=\"num\">{}</td>", num(s[0]), num(s[1]));
        } else {
            let _ = write!(
                h,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>",
                num(p.deleted),
                num(p.anonymized),
                num(p.fields_anonymized),
                verified_cell(p)
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    interrupted(h, r);

    chart(h, r);
    kept(h, r);
    failed_section(h, r);
    h.push_str("</section>\n");
}

/// Runs that ended without their report, whose evidence this report accounts for.
fn interrupted(h: &mut String, r: &Report) {
    if r.interrupted_runs.is_empty() {
        return;
    }
    h.push_str("<h3>Runs that ended without their report</h3>\n<p>These runs were stopped before they wrote their report (killed, out of memory, a lost node). What they destroyed is in their evidence files, accounted for here by SHA-256; what they committed after their last evidence line is in the journal table (SQL) or their write-ahead intents (objects).</p>\n");
    h.push_str("<table id=\"interrupted\">\n<thead><tr><th>Run</th><th>Evidence file</th><th class=\"num\">Records</th><th>Destroyed</th><th>From – to</th></tr></thead>\n<tbody>\n");
    for i in &r.interrupted_runs {
        let by: Vec<String> = i
            .destroyed
            .iter()
            .flat_map(|(p, actions)| actions.iter().map(move |(a, n)| format!("{p}: {} {a}", num(*n))))
            .chain(
                i.reconciled.iter().map(|(p, n)| format!("{p}: {} reconciled for an earlier interrupted run", num(*n))),
            )
            .chain(i.unconfirmed.iter().map(|(p, n)| {
                format!(
                    "{p}: {} of these NOT in its journal (unconfirmed: not shown to be destructions of that run)",
                    num(*n)
                )
            }))
            .collect();
        let span = match (&i.first_at, &i.last_at) {
            (Some(a), Some(b)) => format!("{} – {}", when(a), when(b)),
            _ => String::new(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><code>{}</code><span class=\"dataset\">SHA-256 {}</span></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(i.report.trim_end_matches(".json")),
            esc(&i.evidence.file),
            esc(&i.evidence.sha256),
            num(i.evidence.records),
            esc(&by.join("; ")),
            // (`when` escapes its text: the span is HTML already, once escaped again it showed
            // its tags; found by a review.)
            span
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn purposes_cell(p: &PolicyReport) -> String {
    let mut s = String::from("<ul class=\"plain\">");
    for x in &p.purposes {
        let _ = write!(
            s,
            "<li>{}: <strong>{}</strong>, {} after <code>{}</code>{}{}</li>",
            esc(&x.name),
            esc(&x.legal_basis.replace('_', " ")),
            esc(&x.retain),
            esc(&x.anchor),
            x.condition.as_deref().map(|c| format!(" when <code>{}</code>", esc(c))).unwrap_or_default(),
            x.from_policy.as_deref().map(|f| format!(" (from policy {})", esc(f))).unwrap_or_default(),
        );
    }
    s.push_str("</ul>");
    s
}

fn method_cell(p: &PolicyReport) -> String {
    // A record deleted whole: only the fields some purpose does not cover can lapse before it
    // (before, a strategy on a column every purpose covers was listed as "lapsed fields
    // earlier", though it never is; found by a README walkthrough).
    let earlier = |name: &str| {
        p.action != "delete" || p.purposes.is_empty() || p.purposes.iter().any(|x| !x.covers.iter().any(|c| c == name))
    };
    let strategies: Vec<String> = p
        .columns
        .iter()
        .filter(|(name, c)| c.method != "deleted with the record" && earlier(name))
        .map(|(name, c)| {
            format!(
                "<li><code>{}</code> ({}): {}{}</li>",
                esc(name),
                esc(&c.category.replace('_', " ")),
                esc(&c.method),
                if c.irreversible {
                    ""
                } else {
                    " — <strong>pseudonymization, reversible by the key holder</strong>"
                }
            )
        })
        .collect();
    let head = match p.action.as_str() {
        "delete" if p.is_objects() => "Deletion of the object: every version and delete marker",
        "delete" => "Deletion of the record",
        "anonymize" => "Anonymization in place",
        other => return esc(other),
    };
    if strategies.is_empty() {
        head.to_string()
    } else if p.action == "delete" {
        format!("{head}; a field that lapses before it (a purpose does not cover it) is anonymized then:<ul class=\"plain\">{}</ul>", strategies.join(""))
    } else {
        format!("{head}:<ul class=\"plain\">{}</ul>", strategies.join(""))
    }
}

fn cascade_note(p: &PolicyReport) -> String {
    if p.dependents_deleted.is_empty() {
        return String::new();
    }
    let casc: Vec<String> = p.dependents_deleted.iter().map(|(t, n)| format!("{} ({})", esc(t), num(*n))).collect();
    format!("<br>Dependents deleted with it: {}", casc.join(", "))
}

/// Records the policy's re-check is owed: deleted (rows or objects), anonymized, and kept records
/// whose lapsed fields were anonymized. (Reconciled objects were found gone, not destroyed here.)
fn to_recheck(p: &PolicyReport) -> u64 {
    p.deleted.saturating_add(p.anonymized).saturating_add(p.fields_anonymized)
}

/// A policy's re-check passed: every record it destroyed was re-checked and none is still
/// there (or it destroyed nothing). A policy that stopped before its re-check did not pass.
/// Records that failed one by one were not destroyed (the errors say which), and do not fail
/// the re-check of those that were (found by a review: "Fail" beside a summary that said every
/// destroyed record was re-checked and gone).
fn verification_passed(p: &PolicyReport) -> bool {
    let v = &p.verification;
    v.verified
        || (to_recheck(p) == 0 && v.checked == 0 && v.still_present == 0)
        || (p.failed > 0 && v.still_present == 0 && v.checked > 0 && v.checked >= to_recheck(p))
}

fn verified_cell(p: &PolicyReport) -> String {
    let v = &p.verification;
    if v.still_present == 0 && !v.verified && v.checked < to_recheck(p) {
        format!(
            "<span class=\"bad\">NOT VERIFIED</span>: {} of {} re-checked, none still present (the policy stopped before its re-check ended, or a batch was recorded from the journal)",
            num(v.checked),
            num(to_recheck(p))
        )
    } else if v.still_present == 0 && !v.verified && v.checked > 0 && p.failed > 0 {
        // Every destroyed record re-checked and gone; the records that failed were not destroyed
        // (the errors say which): not a failed re-check.
        format!("{} re-checked, none still present; {} failed and kept (see errors)", num(v.checked), num(p.failed))
    } else if v.still_present == 0 && !v.verified && v.checked > 0 {
        // Every record re-checked, none found, but the policy stopped before it ended (a lost
        // run lock): not a failed re-check.
        format!(
            "<span class=\"bad\">NOT VERIFIED</span>: the policy stopped before its verification ended ({} re-checked, none still present)",
            num(v.checked)
        )
    } else if v.checked == 0 && v.still_present == 0 {
        "— (nothing destroyed)".into()
    } else if v.verified {
        format!("<span class=\"good\">yes</span>, {} re-checked", num(v.checked))
    } else {
        format!("<span class=\"bad\">NO</span>: {} of {} still present", num(v.still_present), num(v.checked))
    }
}

/// Horizontal grouped bars: destroyed (deleted), anonymized, held, per policy.
fn chart(h: &mut String, r: &Report) {
    let plan = r.mode == "plan";
    let labels = if plan { ["due: delete", "due: anonymize", "held"] } else { ["deleted", "anonymized", "held"] };
    let kinds = ["deleted", "anonymized", "held"];
    let colors = ["#b42318", "#1f5fbf", "#a15c07"];
    let _ = writeln!(
        h,
        "<h3>{}</h3>",
        if plan { "Due and held, per policy" } else { "Destroyed, anonymized and held, per policy" }
    );
    let max = r.policies.iter().flat_map(|p| series(r, p)).max().unwrap_or(0).max(1);
    let (w, label_w, bar_w, bar_h, gap, group_gap, top) = (720.0, 180.0, 440.0, 14.0, 3.0, 18.0, 34.0);
    let group_h = 3.0 * bar_h + 2.0 * gap;
    let height = top + r.policies.len() as f64 * (group_h + group_gap) + 4.0;
    let _ = writeln!(
        h,
        "<figure class=\"chart\" id=\"chart\">\n<svg viewBox=\"0 0 {w} {height}\" width=\"{w}\" height=\"{height}\" role=\"img\" aria-labelledby=\"chart-title chart-desc\" font-family=\"system-ui, sans-serif\" font-size=\"12\">\n\
         <title id=\"chart-title\">Records {} per policy</title>\n<desc id=\"chart-desc\">One group of three bars per policy; bar length is the number of records.</desc>",
        if plan { "due and held" } else { "deleted, anonymized and held" }
    );
    // Legend.
    for (i, (label, color)) in labels.iter().zip(colors).enumerate() {
        let x = label_w + i as f64 * 150.0;
        let _ = writeln!(
            h,
            "<g class=\"legend\"><rect x=\"{x}\" y=\"6\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"16\" fill=\"#1b1f24\">{}</text></g>",
            x + 17.0,
            esc(label)
        );
    }
    for (pi, p) in r.policies.iter().enumerate() {
        let y0 = top + pi as f64 * (group_h + group_gap);
        let name = if p.name.chars().count() > 26 {
            format!("{}…", p.name.chars().take(25).collect::<String>())
        } else {
            p.name.clone()
        };
        let _ = writeln!(
            h,
            "<g class=\"policy-bars\" data-policy=\"{}\"><text class=\"policy-label\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1b1f24\" font-weight=\"600\">{}<title>{}</title></text>",
            esc(&p.name),
            label_w - 10.0,
            y0 + group_h / 2.0 + 4.0,
            esc(&name),
            esc(&p.name)
        );
        for (i, v) in series(r, p).into_iter().enumerate() {
            let y = y0 + i as f64 * (bar_h + gap);
            let bw = if v == 0 { 0.0 } else { (v as f64 / max as f64 * bar_w).max(1.5) };
            let _ = writeln!(
                h,
                "<rect class=\"bar bar-{kind}\" data-series=\"{kind}\" data-value=\"{v}\" x=\"{label_w}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"{}\"><title>{}: {} {}</title></rect>\
                 <text class=\"bar-value\" x=\"{:.1}\" y=\"{}\" fill=\"#1b1f24\">{}</text>",
                colors[i],
                esc(&p.name),
                num(v),
                esc(labels[i]),
                label_w + bw + 5.0,
                y + bar_h - 3.0,
                num(v),
                kind = kinds[i],
            );
        }
        h.push_str("</g>\n");
    }
    let _ = writeln!(
        h,
        "</svg>\n<figcaption>{}</figcaption>\n</figure>",
        if plan {
            "Records each policy would delete or anonymize, and lapsed records legal holds keep."
        } else {
            "Records deleted; records anonymized (whole records and lapsed fields); lapsed records kept by legal holds."
        }
    );
}

/// The sum over tables of the largest `f` of the policies on each (`connection · table`).
fn per_table_max(r: &Report, f: &dyn Fn(&PolicyReport) -> u64) -> u64 {
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for p in &r.policies {
        let e = by.entry((p.connection.as_str(), p.table.as_str())).or_default();
        *e = (*e).max(f(p));
    }
    by.values().fold(0u64, |a, b| a.saturating_add(*b))
}

/// The tables (`connection · table`) several policies of the report cover, with their names.
fn shared_tables(r: &Report) -> Vec<(String, Vec<String>)> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in r.policies.iter().filter(|p| p.kind != "objects") {
        by.entry(format!("{} · {}", p.connection, p.table)).or_default().push(p.name.clone());
    }
    by.into_iter().filter(|(_, v)| v.len() > 1).collect()
}

fn kept(h: &mut String, r: &Report) {
    h.push_str("<h3>What was kept, and why</h3>\n");
    // Holds: each with id and matter, and how many lapsed records it kept (once per table, as
    // the totals: the policies on a table keep the same records).
    let mut kept_by: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, _) in r.policies.iter().flat_map(|p| p.held_by.iter()) {
        if !kept_by.contains_key(id.as_str()) {
            let n = per_table_max(r, &|p| p.held_by.get(id).copied().unwrap_or(0));
            kept_by.insert(id.as_str(), n);
        }
    }
    if r.holds.is_empty() && kept_by.is_empty() {
        h.push_str("<p id=\"holds\">No legal hold was in force.</p>\n");
    } else {
        h.push_str("<table id=\"holds\">\n<thead><tr><th>Hold</th><th>Matter</th><th>Reason</th><th>Source</th><th>Applies to</th><th>In force</th><th class=\"num\">Lapsed records kept</th></tr></thead>\n<tbody>\n");
        let listed: BTreeSet<&str> = r.holds.iter().map(|x| x.id.as_str()).collect();
        for x in &r.holds {
            let scope = match (x.subject_count, x.policies.is_empty()) {
                (0, true) => "every policy".to_string(),
                (0, false) => format!("all records of {}", esc(&x.policies.join(", "))),
                (n, true) => format!("{} under every policy", plural(n as u64, "subject", "subjects")),
                (n, false) => {
                    format!("{} under {}", plural(n as u64, "subject", "subjects"), esc(&x.policies.join(", ")))
                }
            };
            let scope = if x.source.starts_with("table:") { "rows of the holds table".to_string() } else { scope };
            let kept = match x.source.strip_prefix("table:") {
                _ if x.is_whole_table() => "see below".to_string(),
                // One of a holds table's holds: what it kept in its connection's policies and
                // the object policies (another table may have a hold of the same id).
                Some(conn) => {
                    // An object policy's count is by bare id: this table's only where no other
                    // holds table lists a hold of that id (the engine names its matter so too).
                    let shared = r.holds.iter().any(|y| {
                        y.id == x.id && y.source != x.source && y.source.starts_with("table:") && !y.is_whole_table()
                    });
                    num(per_table_max(r, &|p| {
                        let its = p.connection == conn || (p.is_objects() && !shared);
                        its.then(|| p.held_by.get(&x.id).copied()).flatten().unwrap_or(0)
                    }))
                }
                None => num(kept_by.get(x.id.as_str()).copied().unwrap_or(0)),
            };
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&x.id),
                esc(&x.matter),
                x.reason.as_deref().map(esc).unwrap_or_else(|| "—".into()),
                esc(&x.source_words()),
                scope,
                match (&x.expires, x.source.starts_with("table:")) {
                    (Some(t), _) => hold_expiry_cell(t),
                    // Each row of the table has its own expiry (an expired row holds nothing).
                    (None, true) => "by each row's expiry".into(),
                    (None, false) => "until released".into(),
                },
                kept
            );
        }
        for (id, n) in kept_by.iter().filter(|(id, _)| !listed.contains(**id)) {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>(recorded in the holds table)</td><td>—</td><td>holds table</td><td>—</td><td>—</td><td class=\"num\">{}</td></tr>",
                esc(id),
                num(*n)
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("<table id=\"kept\">\n<thead><tr><th>Policy</th><th class=\"num\">Records in dataset</th><th class=\"num\">Kept by holds</th><th>By hold</th><th class=\"num\">Unknown anchor kept</th><th class=\"num\">Kept for dependents</th></tr></thead>\n<tbody>\n");
    for p in &r.policies {
        let by: Vec<String> = p.held_by.iter().map(|(k, n)| format!("<code>{}</code>: {}", esc(k), num(*n))).collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&p.name),
            num(p.rows_total),
            num(p.held),
            if by.is_empty() { "—".into() } else { by.join(", ") },
            num(p.null_anchor_kept),
            num(p.blocked_by_dependents)
        );
    }
    h.push_str("</tbody>\n</table>\n<p>Records whose purposes have not all lapsed are kept by the policies themselves and are not listed. Kept for dependents: lapsed records still referenced by rows of a table declared <code>restrict</code>. Unknown anchor: the date a period runs from is empty, and the purpose keeps such records.</p>\n");
}

fn failed_section(h: &mut String, r: &Report) {
    h.push_str("<h3>What failed</h3>\n");
    let mut items = Vec::new();
    if r.status == "incomplete" {
        items.push(
            match r.policies.iter().any(|p| p.outcome == "interrupted") {
                true => "The run was interrupted; batches after the last committed one were not attempted.",
                false => {
                    "A policy stopped part-way (below); its batches after the last committed one were not attempted."
                }
            }
            .to_string(),
        );
    }
    for p in &r.policies {
        let name = esc(&p.name);
        // Tripped before the first batch (the counts' share above the maximum), nothing was
        // destroyed; tripped by the batches (more became due than was counted), the budget was
        // (found by a review: the page said "nothing of it was destroyed" then too).
        let destroyed = p.deleted + p.anonymized + p.fields_anonymized;
        if p.guardrail.tripped && (destroyed | p.versions_deleted) == 0 {
            items.push(format!(
                "<strong>{name}</strong>: stopped by its guardrail — {:.1}% of the dataset was due, above the maximum of {:.1}%; nothing of it was destroyed.",
                p.guardrail.share * 100.0,
                p.guardrail.max_share * 100.0
            ));
        } else if p.guardrail.tripped {
            items.push(format!(
                "<strong>{name}</strong>: stopped by its guardrail after {} destroyed, the most one run may destroy ({:.1}% of the dataset): more became due during the run than were counted at its start. What is still due is left for the next run.",
                plural(destroyed, "record", "records"),
                p.guardrail.max_share * 100.0
            ));
        }
        if p.outcome == "failed" || p.failed > 0 {
            items.push(format!(
                "<strong>{name}</strong>: {} ({} in failed batches).",
                if p.outcome == "failed" { "failed" } else { "partly failed" },
                plural(p.failed, "record", "records")
            ));
        }
        if p.skipped() > 0 {
            items.push(format!(
                "<strong>{name}</strong>: {} selected by a batch and not destroyed: changed while it ran, or kept by the database (a trigger that skips a deletion). The next run looks at them again; the same number run after run means something keeps them.",
                plural(p.skipped(), "due record", "due records"),
            ));
        }
        if p.unreadable > 0 {
            items.push(format!(
                "<strong>{name}</strong>: {} whose date or subject could not be read (from the name, the metadata, or the file itself) kept: lapse never destroys what it cannot judge.",
                plural(p.unreadable, "object", "objects")
            ));
        }
        if p.verification.still_present > 0 {
            items.push(format!(
                "<strong>{name}</strong>: verification found {} still present after destruction.",
                plural(p.verification.still_present, "record", "records")
            ));
        }
        for e in &p.errors {
            if !(p.guardrail.tripped && e.starts_with("guardrail")) {
                items.push(format!("<strong>{name}</strong>: <code>{}</code>", esc(e)));
            }
        }
    }
    if items.is_empty() {
        h.push_str("<p id=\"failures\" class=\"good\">Nothing failed.</p>\n");
    } else {
        h.push_str("<ul id=\"failures\">\n");
        for i in items {
            let _ = writeln!(h, "<li>{i}</li>");
        }
        h.push_str("</ul>\n");
    }
}

fn details(h: &mut String, r: &Report) {
    h.push_str(
        "<section id=\"policies\" aria-labelledby=\"policies-h\">\n<h2 id=\"policies-h\">Policies in detail</h2>\n",
    );
    for p in &r.policies {
        let _ = writeln!(
            h,
            "<article class=\"policy\">\n<h3>{}</h3>\n<dl class=\"meta\"><dt>Policy file</dt><dd><code>{}</code></dd><dt>Dataset</dt><dd><code>{}</code> · {}</dd><dt>On lapse</dt><dd>{}</dd><dt>Outcome</dt><dd>{}</dd><dt>Guardrail</dt><dd>{:.1}% due of at most {:.1}%{}</dd></dl>",
            esc(&p.name),
            esc(&p.file.display().to_string()),
            esc(&p.connection),
            esc(&p.table),
            esc(&p.action),
            esc(&p.outcome),
            p.guardrail.share * 100.0,
            p.guardrail.max_share * 100.0,
            if p.guardrail.tripped {
                " — tripped"
            } else if p.guardrail.overridden {
                " — exceeded, allowed for this run (--allow-share)"
            } else {
                ""
            }
        );
        h.push_str("<h4>Purposes</h4>\n<table><thead><tr><th>Purpose</th><th>Legal basis</th><th>Retain</th><th>After</th><th>Lapsed if anchor at or before</th><th>Condition</th><th>Covers</th><th>Unknown anchor</th></tr></thead><tbody>\n");
        for x in &p.purposes {
            let _ = writeln!(
                h,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.name),
                x.from_policy.as_deref().map(|f| format!(" (from {})", esc(f))).unwrap_or_default(),
                esc(&x.legal_basis.replace('_', " ")),
                esc(&x.retain),
                esc(&x.anchor),
                x.lapsed_if_anchor_before_or_at.as_ref().map(when).unwrap_or_else(|| "—".into()),
                x.condition.as_deref().map(|c| format!("<code>{}</code>", esc(c))).unwrap_or_else(|| "—".into()),
                esc(&x.covers.join(", ")),
                esc(&x.null_anchor)
            );
        }
        h.push_str("</tbody></table>\n<h4>Personal columns</h4>\n<table><thead><tr><th>Column</th><th>Category</th><th>Method</th><th>Irreversible</th></tr></thead><tbody>\n");
        for (c, m) in &p.columns {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(c),
                esc(&m.category.replace('_', " ")),
                esc(&m.method),
                if m.irreversible { "yes" } else { "<strong class=\"bad\">no (pseudonymization)</strong>" }
            );
        }
        h.push_str("</tbody></table>\n<h4>Stages</h4>\n<table><thead><tr><th>Stage</th><th>Action</th><th class=\"num\">Due</th><th class=\"num\">Destroyed</th><th class=\"num\">Already done</th><th class=\"num\">Changed meanwhile</th><th class=\"num\">Batches</th></tr></thead><tbody>\n");
        for s in &p.stages {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&s.name),
                esc(&s.action.replace('_', " ")),
                num(s.due),
                num(s.destroyed),
                num(s.unchanged),
                num(s.skipped_concurrently),
                num(s.batches)
            );
        }
        h.push_str("</tbody></table>\n");
        if r.mode != "plan" {
            let v = &p.verification;
            let _ = writeln!(
                h,
                "<p>Verification: {} — {}, {} still present: {}.</p>",
                if v.method.is_empty() { "none".into() } else { esc(&v.method) },
                plural(v.checked, "record re-checked", "records re-checked"),
                num(v.still_present),
                if v.verified {
                    "<span class=\"good\">verified</span>"
                } else {
                    "<span class=\"bad\">not verified</span>"
                }
            );
        }
        if !p.errors.is_empty() {
            h.push_str("<h4>Errors</h4>\n<ul>\n");
            for e in &p.errors {
                let _ = writeln!(h, "<li><code>{}</code></li>", esc(e));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</article>\n");
    }
    h.push_str("</section>\n");
}

fn certificate(h: &mut String, r: &Report, src: &Source) {
    h.push_str("<section id=\"certificate\" class=\"certificate\" aria-labelledby=\"cert-h\">\n<h2 id=\"cert-h\">Certificate of destruction</h2>\n");
    if r.mode == "plan" {
        h.push_str("<p class=\"notice\">Not issued: this report is a plan (dry run) and nothing was destroyed.</p>\n</section>\n");
        return;
    }
    h.push_str("<p>In the manner of the certificate of sanitization of NIST SP 800-88 Rev. 1 (Appendix G): what data, which method, how it was verified, when, and by what.</p>\n");
    if src.signature_checked_with.is_none() {
        // Whoever can edit the report can edit what this page says: only a checked signature
        // makes it the run's word.
        h.push_str("<p class=\"notice bad\"><strong>Signature not checked:</strong> this page shows the report file as it is; anyone able to edit that file could have changed what it says. Render it with <code>--public-key</code> (or check it with <code>lapse report verify</code>) before relying on it.</p>\n");
    }
    if r.status != "complete" {
        let _ = writeln!(
            h,
            "<p class=\"notice bad\">This run's status is <strong>{}</strong>: the certificate covers only what was committed (see What failed).</p>",
            esc(&r.status)
        );
    }
    let row = |h: &mut String, k: &str, v: String| {
        let _ = writeln!(h, "<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>");
    };
    let group = |h: &mut String, k: &str| {
        let _ = writeln!(h, "<tr class=\"group\"><th colspan=\"2\" scope=\"rowgroup\">{k}</th></tr>");
    };
    let sum = |f: &dyn Fn(&PolicyReport) -> u64| r.policies.iter().map(f).fold(0u64, u64::saturating_add);
    // A run that destroyed nothing certifies no destruction (before, its form read "Data
    // destroyed" with every dataset and category, and "Pass — 0 records re-checked"; found by
    // a README walkthrough).
    let destroyed = sum(&|p| {
        [p.deleted, p.anonymized, p.fields_anonymized, p.versions_deleted, p.reconciled]
            .into_iter()
            .chain(p.dependents_deleted.values().copied())
            .fold(0u64, u64::saturating_add)
    });
    let nothing = destroyed == 0 && r.interrupted_runs.is_empty();
    if nothing {
        h.push_str("<p class=\"notice\" id=\"nothing-destroyed\"><strong>Nothing was destroyed in this run.</strong> The form below records the datasets it enforced and what it checked; it certifies no destruction.</p>\n");
    }
    h.push_str("<table class=\"form\" id=\"certificate-form\">\n<tbody>\n");

    group(h, "1. Performed by");
    row(h, "Tool", format!("{} {} — automated retention-enforcement worker", esc(r.tool.name), esc(r.tool.version)));
    row(h, "Run id", format!("<code>{}</code>", esc(&r.run_id)));
    row(h, "Responsible person", "Named in the sign-off below.".into());

    group(h, if nothing { "2. Data in scope (nothing destroyed)" } else { "2. Data destroyed (what)" });
    let mut ds = String::from("<ul class=\"plain\">");
    let mut categories = BTreeSet::new();
    for p in &r.policies {
        let cats: BTreeSet<String> = p.columns.values().map(|c| c.category.replace('_', " ")).collect();
        categories.extend(cats.iter().cloned());
        let _ = write!(
            ds,
            "<li><code>{}</code> · {} (policy {}): {} in the dataset; categories: {}</li>",
            esc(&p.connection),
            esc(&p.table),
            esc(&p.name),
            match p.is_objects() {
                true => plural(p.rows_total, "object", "objects"),
                false => plural(p.rows_total, "record", "records"),
            },
            esc(&cats.into_iter().collect::<Vec<_>>().join(", "))
        );
    }
    ds.push_str("</ul>");
    row(h, "Datasets", ds);
    row(h, "Categories of personal data", esc(&categories.into_iter().collect::<Vec<_>>().join(", ")));
    let cascaded = sum(&|p| p.dependents_deleted.values().fold(0u64, |a, b| a.saturating_add(*b)));
    let objects = r.policies.iter().any(|p| p.is_objects());
    let tables = r.policies.iter().any(|p| !p.is_objects());
    if tables {
        row(
            h,
            "Records",
            format!(
                "{} deleted; {} anonymized; {} field-level anonymizations (a kept record counts once per group of fields that lapsed); {} dependent rows deleted by cascade; {} destroyed by an interrupted run and reconciled from its journal",
                num(sum(&|p| if p.is_objects() { 0 } else { p.deleted })),
                // Once per table, as the summary (the policies on a table anonymize the same records).
                num(per_table_max(r, &|p| p.anonymized)),
                num(sum(&|p| p.fields_anonymized)),
                num(cascaded),
                num(sum(&|p| if p.is_objects() { 0 } else { p.reconciled }))
            ),
        );
    }
    if objects {
        let of_objects = |f: &dyn Fn(&PolicyReport) -> u64| sum(&|p| if p.is_objects() { f(p) } else { 0 });
        row(
            h,
            "Objects",
            format!(
                "{} deleted ({}, {} reclaimed); {} deleted by an interrupted run and reconciled from its write-ahead intents",
                num(of_objects(&|p| p.deleted)),
                plural(of_objects(&|p| p.versions_deleted), "version or delete marker", "versions and delete markers"),
                plural(of_objects(&|p| p.bytes_reclaimed), "byte", "bytes"),
                num(of_objects(&|p| p.reconciled))
            ),
        );
    }
    row(
        h,
        "Kept",
        format!(
            "{} kept by legal holds ({}); listed under What was kept",
            // Once per table, as in the summary (two policies on one table hold the same
            // records; found by a review: the summary said 448, this row 896).
            plural(per_table_max(r, &|p| p.held), "lapsed record", "lapsed records"),
            // A holds table's holds by its entry (`<table>.*`), each under What was kept.
            esc(&r
                .holds
                .iter()
                .filter(|x| x.is_whole_table() || !x.source.starts_with("table:"))
                .map(|x| x.id.as_str())
                .collect::<Vec<_>>()
                .join(", "))
        ),
    );

    group(h, "3. Method (how)");
    let mut m = String::from("<ul class=\"plain\">");
    for p in &r.policies {
        let casc: Vec<String> = p.dependents_deleted.keys().map(|t| esc(t)).collect();
        let _ = write!(
            m,
            "<li><strong>{}</strong>: {}{}</li>",
            esc(&p.name),
            method_cell(p),
            if casc.is_empty() {
                String::new()
            } else {
                format!(" Dependents deleted by cascade: {}.", casc.join(", "))
            }
        );
    }
    m.push_str("</ul>");
    row(h, "Method per dataset", m);
    let mut kinds = Vec::new();
    if tables {
        kinds.push("Logical destruction in the database: rows deleted (SQL DELETE, dependents in the same transaction) or personal columns overwritten in place by irreversible anonymization, in bounded transactions that re-check legal holds inside the destroying statement.");
    }
    if objects {
        kinds.push("Deletion from the object store: every version and delete marker of each lapsed object removed (S3 DeleteObjects by version id; a file removed from a directory), objects under a legal hold left out of every batch, a version under S3 Object Lock kept and counted as held, a write-ahead intent recorded before each batch is sent.");
    }
    row(h, "Method type", kinds.join(" "));
    let pseudo: Vec<String> = r
        .policies
        .iter()
        .flat_map(|p| p.columns.iter().filter(|(_, c)| !c.irreversible).map(move |(c, _)| format!("{}.{}", p.name, c)))
        .collect();
    if !pseudo.is_empty() {
        row(
            h,
            "Pseudonymized (not anonymized)",
            format!(
                "<span class=\"bad\">{}</span> — linkable by whoever holds the pseudonymization key",
                esc(&pseudo.join(", "))
            ),
        );
    }

    group(h, "4. Verification");
    let methods: BTreeSet<&str> =
        r.policies.iter().map(|p| p.verification.method.as_str()).filter(|m| !m.is_empty()).collect();
    row(
        h,
        "Method",
        if methods.is_empty() {
            "— (nothing destroyed)".into()
        } else {
            esc(&methods.into_iter().collect::<Vec<_>>().join("; "))
        },
    );
    let checked = sum(&|p| p.verification.checked);
    let still = sum(&|p| p.verification.still_present);
    let all_ok = r.policies.iter().all(verification_passed);
    row(
        h,
        "Result",
        format!(
            "{} — {} re-checked, {} still present",
            if nothing && all_ok && still == 0 {
                "<strong>Nothing to verify</strong>"
            } else if all_ok && still == 0 {
                "<strong class=\"good\">Pass</strong>"
            } else {
                "<strong class=\"bad\">Fail</strong>"
            },
            plural(checked, "record", "records"),
            num(still)
        ),
    );
    row(h, "Evidence", {
        let mut ev = match &r.evidence {
                Some(e) => format!(
                    "<code class=\"hash\">{}</code>: {}, each identified by HMAC-SHA256 with evidence key <code>{}</code>; SHA-256 <code class=\"hash\">{}</code>",
                    esc(&e.file),
                    plural(e.records, "record", "records"),
                    esc(&r.evidence_key_id),
                    esc(&e.sha256)
                ),
                None => "—".into(),
            };
        // Said here, where the file is named (found by a review: only the raw error told).
        if r.evidence_incomplete {
            ev.push_str("<br><span class=\"bad\">INCOMPLETE</span>: the evidence file could not be written to its end; the records of the batches committed after its last line are in the journal only, and the next run writes them from there (its <code>evidence_recovered</code>)");
        }
        // Runs that ended without their report: their files, and the key of each.
        for i in &r.interrupted_runs {
            let key = i.evidence_key_id.as_deref().unwrap_or(&r.evidence_key_id);
            let _ = write!(
                    ev,
                    "<br><code class=\"hash\">{}</code> (a run that ended without its report, accounted for here): {}, evidence key <code>{}</code>{}",
                    esc(&i.evidence.file),
                    plural(i.evidence.records, "record", "records"),
                    esc(key),
                    if key != r.evidence_key_id { " — <span class=\"bad\">another key than this run's</span>" } else { "" }
                );
        }
        ev
    });

    group(h, "5. When");
    row(h, "Started", when(&r.started_at));
    row(h, "Finished", r.finished_at.as_ref().map(when).unwrap_or_else(|| "— (not recorded)".into()));
    row(h, "Cutoff", when(&r.cutoff));

    group(h, "6. Integrity");
    row(
        h,
        "Report",
        format!(
            "<code class=\"hash\">{}</code>, SHA-256 <code class=\"hash\">{}</code>",
            esc(&src.file),
            esc(&src.sha256)
        ),
    );
    row(
        h,
        "Signature",
        match (&r.signing_key_id, &src.signature_checked_with) {
            (Some(k), Some(_)) => format!(
                "Ed25519, signing key <code>{}</code> — <strong class=\"good\">verified</strong> when this document was rendered",
                esc(k)
            ),
            (Some(k), None) => format!(
                "Ed25519, signing key <code>{}</code> (<code>{}.sig</code>) — not checked by this rendering",
                esc(k),
                esc(&src.file)
            ),
            (None, _) => "<span class=\"bad\">unsigned</span> (no signing key was configured)".into(),
        },
    );
    row(
        h,
        "Chain",
        match &r.previous {
            Some(l) => format!(
                "sequence {}; previous report <code class=\"hash\">{}</code> (sequence {}), SHA-256 <code class=\"hash\">{}</code>{}",
                r.sequence,
                esc(&l.file),
                l.sequence,
                esc(&l.sha256),
                // (Found by a review: the report's own warning was not shown.)
                match &r.previous_unverified {
                    Some(w) => format!("<br><span class=\"bad\">Previous report not vouched for by this key</span>: {}", esc(w)),
                    None => String::new(),
                }
            ),
            None => format!("sequence {} (first of its directory)", r.sequence),
        },
    );
    let mut pf = String::from("<ul class=\"plain\">");
    for f in &r.policy_files {
        let _ = write!(
            pf,
            "<li><code class=\"hash\">{}</code><br>SHA-256 <code class=\"hash\">{}</code></li>",
            esc(&f.path.display().to_string()),
            esc(&f.sha256)
        );
    }
    pf.push_str("</ul>");
    row(h, "Policy files", pf);
    if let Some(i) = &r.inputs {
        let mut inp = String::from("<ul class=\"plain\">");
        for (what, d) in [("config", Some(&i.config)), ("holds file", i.holds_file.as_ref())] {
            if let Some(d) = d {
                let _ = write!(
                    inp,
                    "<li>{what} <code class=\"hash\">{}</code><br>HMAC-SHA256 <code class=\"hash\">{}</code></li>",
                    esc(&d.path),
                    esc(&d.hmac_sha256)
                );
            }
        }
        inp.push_str("</ul><span class=\"dataset\">Keyed with the evidence key (a holds file names data subjects): whoever holds that key and a file can tell whether it is the one read; <code>lapse report lookup</code> does for the holds file.</span>");
        row(h, "Config and holds file", inp);
    }

    group(h, "7. Notes");
    row(
        h,
        "Scope",
        "This certificate covers the live datasets named above. Copies outside them — backups, replicas, exports, database free space and logs — follow their own retention and are not covered.".into(),
    );
    h.push_str("</tbody>\n</table>\n");
    h.push_str("<div class=\"signoff\"><div>Reviewed by (name, title)</div><div>Organization</div><div>Signature</div><div>Date</div></div>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        // A right-to-left override (a hold id of a holds table) would turn signed numbers
        // around; a terminal escape is no text either.
        assert_eq!(esc("LH-7\u{202e}: 12"), "LH-7\u{fffd}: 12");
        assert_eq!(esc("a\u{1b}[2Kb\u{2066}c"), "a\u{fffd}[2Kb\u{fffd}c");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(12), "12");
    }

    /// A deleting policy lists as lapsing earlier only fields a purpose does not cover
    /// (found by a README walkthrough: the demo's orders listed two that never lapse earlier).
    #[test]
    fn only_fields_that_can_lapse_earlier_are_listed() {
        use crate::report::{ColumnMethod, PurposeInfo};
        let col = |m: &str| ColumnMethod { category: "email".into(), method: m.into(), irreversible: true };
        let purpose = |covers: &[&str]| PurposeInfo {
            covers: covers.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        let mut p = PolicyReport { action: "delete".into(), ..Default::default() };
        p.columns.insert("card_last4".into(), col("nullify"));
        p.columns.insert("signup_ip".into(), col("generalize_ip"));
        p.purposes = vec![purpose(&["card_last4", "signup_ip"]), purpose(&["card_last4"])];
        let cell = method_cell(&p);
        assert!(
            cell.contains("a field that lapses before it")
                && cell.contains("signup_ip")
                && !cell.contains("card_last4"),
            "{cell}"
        );
        p.purposes = vec![purpose(&["card_last4", "signup_ip"])];
        assert_eq!(method_cell(&p), "Deletion of the record");
    }

    /// A policy stopped after re-checking every record it destroyed (a lost run lock) shows
    /// NOT VERIFIED, not "NO: 0 of N still present", which reads as a failed re-check.
    #[test]
    fn a_stopped_policy_is_not_verified_not_failed() {
        let mut p = PolicyReport { deleted: 8, ..Default::default() };
        (p.verification.checked, p.verification.still_present, p.verification.verified) = (8, 0, false);
        assert!(verified_cell(&p).contains("NOT VERIFIED"), "{}", verified_cell(&p));
        p.verification.checked = 3;
        assert!(verified_cell(&p).contains("3 of 8 re-checked"), "{}", verified_cell(&p));
        (p.verification.checked, p.verification.still_present) = (8, 2);
        assert!(verified_cell(&p).contains("NO</span>: 2 of 8 still present"), "{}", verified_cell(&p));
        (p.verification.still_present, p.verification.verified) = (0, true);
        assert!(verified_cell(&p).contains("yes"), "{}", verified_cell(&p));
        // Finished, with records that failed (kept): re-checked, not "stopped".
        (p.verification.verified, p.failed) = (false, 2);
        assert!(verified_cell(&p).contains("none still present; 2 failed"), "{}", verified_cell(&p));
    }

    /// A bare-date hold's expiry (the next midnight) shows the day it holds through (before,
    /// `expires: 2027-06-30` showed "2027-07-01 00:00:00 UTC").
    #[test]
    fn a_hold_expiry_shows_the_day_it_holds_through() {
        let t = chrono::DateTime::parse_from_rfc3339("2027-07-01T00:00:00Z").unwrap().to_utc();
        let cell = hold_expiry_cell(&t);
        assert!(cell.contains(">in force through 2027-06-30</time>"), "{cell}");
        assert!(cell.contains("datetime=\"2027-07-01T00:00:00+00:00\""), "{cell}");
    }
}
