//! Prometheus metrics at the end of a run, derived from the final [`Report`] so that they always
//! agree with it: written as a node_exporter textfile (atomically: temporary file, then rename)
//! and/or pushed to a Pushgateway.
//!
//! Labels are policy and connection names only (schema objects, never personal data). A metrics
//! failure never changes what was destroyed nor the exit code: it is logged as a warning, and the
//! staleness of `lapse_last_run_timestamp_seconds` is what an alert watches.
//!
//! `lapse_last_success_timestamp_seconds` keeps its previous value after a failed run: the
//! textfile carries the old value over, and the Pushgateway is sent a `POST` (which replaces only
//! the metric names pushed) without it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::report::Report;

/// The `metrics:` section of the worker config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A file for node_exporter's textfile collector (name it `*.prom`), relative to the config.
    #[serde(default)]
    pub textfile: Option<PathBuf>,
    #[serde(default)]
    pub pushgateway: Option<Pushgateway>,
    /// The `lapse schedule` job whose run this is (not from the config): its metrics go to a
    /// textfile and a grouping key of their own, labelled `schedule_job`, so that one job's
    /// run never replaces another's series (its failures, its last success).
    #[serde(skip)]
    pub schedule_job: Option<String>,
    /// Every policy the policy files name (not from the config; empty: not known): a run of
    /// some policies carries over only their samples, not those of a policy removed since.
    #[serde(skip)]
    pub policies: BTreeSet<String>,
}

/// Where and how to push.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pushgateway {
    /// Base URL, `http://` or `https://` (e.g. `http://pushgateway.monitoring:9091`).
    pub url: String,
    /// The `job` of the grouping key. Default `lapse`.
    #[serde(default = "default_job")]
    pub job: String,
    /// More grouping-key labels (e.g. `cluster: eu-1`). A sharded run adds `shard: <index>`.
    #[serde(default)]
    pub grouping: BTreeMap<String, String>,
    /// Request timeout in seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_job() -> String {
    "lapse".into()
}

fn default_timeout() -> u64 {
    10
}

/// `--metrics-textfile` and `--pushgateway`: override the config's `metrics:` for one run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Write Prometheus metrics to this file at the end of the run (textfile collector format,
    /// atomically replaced).
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
    /// Push Prometheus metrics to this Pushgateway at the end of the run (job `lapse`).
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,
    /// Set by `lapse schedule` for each job's runs (see [`MetricsConfig::schedule_job`]).
    #[arg(skip)]
    pub schedule_job: Option<String>,
}

fn valid_label(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !name.starts_with("__")
}

impl MetricsConfig {
    /// Offline checks: every problem, as `(path, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(p) = &self.pushgateway {
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                out.push((
                    "metrics.pushgateway.url".into(),
                    format!("pushgateway url '{}' must start with http:// or https://", shown(&p.url)),
                ));
            }
            if let Some(m) = credentials_problem(&p.url) {
                out.push(("metrics.pushgateway.url".into(), m));
            } else if p.url.contains(['?', '#']) {
                // lapse appends `/metrics/job/…` to the URL: after a query it became part of the
                // query, the gateway answered 404 and the metrics were never delivered, with only
                // a warning (found by a read-only review of operations).
                out.push((
                    "metrics.pushgateway.url".into(),
                    format!(
                        "pushgateway url '{}' has a query or fragment ('?' or '#'); give the gateway's base url \
                         (lapse appends /metrics/job/… to its path)",
                        shown(&p.url)
                    ),
                ));
            }
            if p.job.is_empty() {
                out.push(("metrics.pushgateway.job".into(), "pushgateway job must not be empty".into()));
            }
            for k in p.grouping.keys() {
                if !valid_label(k) || k == "job" {
                    out.push((
                        format!("metrics.pushgateway.grouping.{k}"),
                        format!("'{k}' is not a usable grouping label name"),
                    ));
                } else if ["shard", "schedule_job", "policies"].contains(&k.as_str()) {
                    // lapse sets these itself, a group per shard, scheduled job or selection: one
                    // given here would put them all in one group, each push replacing the last.
                    out.push((
                        format!("metrics.pushgateway.grouping.{k}"),
                        format!("'{k}' is a grouping label lapse sets itself (per shard, scheduled job or --policy selection)"),
                    ));
                }
            }
            if p.timeout_seconds == 0 || p.timeout_seconds > 300 {
                out.push((
                    "metrics.pushgateway.timeout_seconds".into(),
                    "timeout_seconds must be from 1 to 300".into(),
                ));
            }
        }
        out
    }

    /// The config's section with the command line's overrides applied.
    pub fn with_args(&self, args: &MetricsArgs, base_dir: &Path) -> MetricsConfig {
        let mut m = self.clone();
        if let Some(t) = &args.metrics_textfile {
            m.textfile = Some(t.clone());
        } else if let Some(t) = &m.textfile {
            if t.is_relative() {
                m.textfile = Some(base_dir.join(t));
            }
        }
        if let Some(u) = &args.pushgateway {
            let mut p = m.pushgateway.take().unwrap_or(Pushgateway {
                url: String::new(),
                job: default_job(),
                grouping: BTreeMap::new(),
                timeout_seconds: default_timeout(),
            });
            p.url = u.clone();
            m.pushgateway = Some(p);
        }
        m.schedule_job = args.schedule_job.clone();
        m
    }

    pub fn is_empty(&self) -> bool {
        self.textfile.is_none() && self.pushgateway.is_none()
    }
}

/// Prometheus text exposition format (version 0.0.4).
struct Exposition {
    out: String,
    /// Labels every sample carries (a sharded run's textfile: `shard`).
    common: Vec<(&'static str, String)>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        let common = self.common.iter().map(|(k, v)| (*k, v.as_str()));
        let labels: Vec<(&str, &str)> = labels.iter().copied().chain(common).collect();
        if !labels.is_empty() {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// The metrics of a finished run. `last_success`: the value of
/// `lapse_last_success_timestamp_seconds` (this run's end when it succeeded, else the previous
/// success if known); omitted when `None`.
pub fn exposition(r: &Report, exit_code: u8, last_success: Option<f64>) -> String {
    exposition_with(r, exit_code, last_success, vec![], &Carried::default())
}

/// Each policy's last success: the end of the last run in which it was done.
const POLICY_SUCCESS: &str = "lapse_policy_last_success_timestamp_seconds";

/// What a textfile keeps of the one it replaces: each policy's last success, and, for a run of
/// some policies only (`--policy`), the samples of the others, which that run did not count
/// (before, it replaced them all: their failures, their counts).
#[derive(Debug, Default)]
struct Carried {
    /// Metric name -> sample lines, as written, of policies the run did not take.
    lines: BTreeMap<String, Vec<String>>,
    /// Policy -> its `lapse_policy_last_success_timestamp_seconds`.
    success: BTreeMap<String, f64>,
}

/// A label's value in a sample line (`name{a="x",policy="p"} 1`), unescaped.
fn label_value(line: &str, key: &str) -> Option<String> {
    let labels = &line[line.find('{')? + 1..];
    let mut rest = labels;
    loop {
        let (k, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if k.trim_start_matches(',') == key {
            return Some(value);
        }
        rest = &after[end + 1..];
    }
}

/// Reads `previous` (the textfile being replaced): the last success of each policy, and when
/// `partial`, the samples of the per-policy families of policies not in `taken`.
/// Policies not in `known` (when not empty) are not carried: removed from the policy files
/// since, their last success would only grow old and raise a staleness alert for a policy that
/// no longer exists (found by a read-only review).
fn carried(
    previous: &str,
    taken: &BTreeSet<&str>,
    partial: bool,
    families: &[&str],
    known: &BTreeSet<String>,
) -> Carried {
    let mut c = Carried::default();
    for line in previous.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
        let Some(policy) = label_value(line, "policy") else { continue };
        if !known.is_empty() && !known.contains(&policy) {
            continue;
        }
        if name == POLICY_SUCCESS {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.trim().parse().ok()) {
                c.success.insert(policy.clone(), v);
            }
        }
        if partial && !taken.contains(policy.as_str()) && (families.contains(&name) || name == POLICY_SUCCESS) {
            c.lines.entry(name.to_string()).or_default().push(line.to_string());
        }
    }
    c
}

/// The policy families of the exposition (for [`carried`]).
const POLICY_FAMILIES: [&str; 11] = [
    "lapse_records_deleted",
    "lapse_records_anonymized",
    "lapse_records_fields_anonymized",
    "lapse_records_due",
    "lapse_records_held",
    "lapse_records_failed",
    "lapse_records_skipped",
    "lapse_records_unreadable",
    "lapse_policy_guardrail_tripped",
    "lapse_policy_duration_seconds",
    "lapse_policy_outcome",
];

/// A policy's outcome that counts as its success.
fn succeeded(outcome: &str) -> bool {
    matches!(outcome, "done" | "held")
}

fn exposition_with(
    r: &Report,
    exit_code: u8,
    last_success: Option<f64>,
    common: Vec<(&'static str, String)>,
    carried: &Carried,
) -> String {
    let mut e = Exposition { out: String::new(), common };
    let keep = |e: &mut Exposition, name: &str| {
        for line in carried.lines.get(name).into_iter().flatten() {
            e.out.push_str(line);
            e.out.push('\n');
        }
    };
    type Get = fn(&crate::report::PolicyReport) -> f64;
    let per_policy: [(&str, &str, &str, Get); 10] = [
        ("lapse_records_deleted", "gauge", "Records (rows or objects) deleted by the last run.", |p| {
            p.deleted as f64
        }),
        ("lapse_records_anonymized", "gauge", "Records fully anonymized by the last run.", |p| {
            p.anonymized as f64
        }),
        (
            "lapse_records_fields_anonymized",
            "gauge",
            "Field-level anonymizations of the last run: a kept record counts once per group of its fields that lapsed (per stage).",
            |p| p.fields_anonymized as f64,
        ),
        ("lapse_records_due", "gauge", "Records due at the start of the last run (holds excluded).", |p| {
            p.rows_due as f64
        }),
        ("lapse_records_held", "gauge", "Lapsed records kept by a legal hold in the last run.", |p| p.held as f64),
        ("lapse_records_failed", "gauge", "Records whose destruction failed in the last run.", |p| p.failed as f64),
        (
            "lapse_records_skipped",
            "gauge",
            "Due records the last run's batches selected and did not destroy: they changed meanwhile, or the database kept them (a trigger); the next run looks at them again.",
            |p| p.skipped() as f64,
        ),
        (
            "lapse_records_unreadable",
            "gauge",
            "Objects whose facts (anchor, subject) could not be read in the last run: never destroyed.",
            |p| p.unreadable as f64,
        ),
        ("lapse_policy_guardrail_tripped", "gauge", "1 when the guardrail stopped the policy in the last run.", |p| {
            if p.guardrail.tripped {
                1.0
            } else {
                0.0
            }
        }),
        ("lapse_policy_duration_seconds", "gauge", "Time the last run spent on the policy.", |p| p.duration_seconds),
    ];
    for (name, kind, help, get) in per_policy {
        e.family(name, kind, help);
        for p in &r.policies {
            e.sample(name, &[("policy", &p.name), ("connection", &p.connection)], get(p));
        }
        keep(&mut e, name);
    }
    // What became of each policy: its counts above are 0 where it was never counted (a run
    // stopped before it, a connection lost while counting), which alone reads as "nothing due".
    let outcome = "lapse_policy_outcome";
    e.family(
        outcome,
        "gauge",
        "1 for the policy's outcome in the last run (done, failed, guardrail, stopped, interrupted; a policy whose due records were all held is done): its counts mean something only where it is done or stopped.",
    );
    for p in &r.policies {
        e.sample(outcome, &[("policy", &p.name), ("connection", &p.connection), ("outcome", &p.outcome)], 1.0);
    }
    keep(&mut e, outcome);
    let end = r.finished_at.unwrap_or(r.started_at).timestamp_millis() as f64 / 1000.0;
    e.family(POLICY_SUCCESS, "gauge", "End of the last run in which the policy was done (Unix time).");
    for p in &r.policies {
        let t = if succeeded(&p.outcome) { Some(end) } else { carried.success.get(&p.name).copied() };
        if let Some(t) = t {
            e.sample(POLICY_SUCCESS, &[("policy", &p.name), ("connection", &p.connection)], t);
        }
    }
    keep(&mut e, POLICY_SUCCESS);
    let end = r.finished_at.unwrap_or(r.started_at);
    let secs = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
    e.family("lapse_run_duration_seconds", "gauge", "Duration of the last run.");
    e.sample("lapse_run_duration_seconds", &[], (end - r.started_at).num_milliseconds() as f64 / 1000.0);
    e.family("lapse_run_exit_code", "gauge", "Exit code of the last run (0 success, 1 partial, 3 guardrail).");
    e.sample("lapse_run_exit_code", &[], f64::from(exit_code));
    e.family("lapse_last_run_timestamp_seconds", "gauge", "End of the last run (Unix time).");
    e.sample("lapse_last_run_timestamp_seconds", &[], secs(end));
    if let Some(t) = last_success {
        e.family("lapse_last_success_timestamp_seconds", "gauge", "End of the last successful run (Unix time).");
        e.sample("lapse_last_success_timestamp_seconds", &[], t);
    }
    e.out
}

/// A shard's textfile: `<stem>-shard-<i>-of-<n>.prom` beside the configured one.
pub fn shard_textfile(path: &Path, s: crate::report::ShardInfo) -> std::path::PathBuf {
    suffixed(path, &format!("shard-{}-of-{}", s.index, s.count))
}

/// A scheduled job's textfile: `<stem>-job-<name>.prom` beside the configured one (job names
/// are identifiers, with `-`: `schedule::ScheduleConfig::problems`).
pub fn job_textfile(path: &Path, job: &str) -> std::path::PathBuf {
    suffixed(path, &format!("job-{job}"))
}

fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let stem = path.file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_else(|| "lapse".into());
    let ext = path.extension().map(|x| format!(".{}", x.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}-{suffix}{ext}"))
}

/// The previous `lapse_last_success_timestamp_seconds` of a textfile, if any.
fn previous_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // With or without labels (a shard's file: `{shard="1"}`).
    text.lines()
        .find_map(|l| {
            l.strip_prefix("lapse_last_success_timestamp_seconds")
                .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                .and_then(|rest| rest.rsplit(' ').next())
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Writes `text` to `path` atomically: a temporary file in the same directory (not ending in
/// `.prom`, so the collector ignores it), synced, then renamed over the target.
pub fn write_textfile(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow::anyhow!("'{}' is not a file path", path.display()))?;
    // Unique to this write: pods on one node share a textfile directory, and each is pid 1.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{}.{}.{nanos}.tmp", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write metrics file '{}': {e}", path.display())
    })
}

/// A grouping-key path segment: as is when plain, else base64url (`label@base64/...`).
fn segment(label: &str, value: &str) -> String {
    use base64::Engine;
    let plain = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c));
    if plain {
        format!("/{label}/{value}")
    } else {
        let enc = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
        format!("/{label}@base64/{}", if enc.is_empty() { "=".into() } else { enc })
    }
}

/// The push URL: `<url>/metrics/job/<job>{/<label>/<value>}`.
pub fn push_url(
    p: &Pushgateway,
    shard: Option<crate::report::ShardInfo>,
    job: Option<&str>,
    policies: Option<&str>,
) -> String {
    let mut grouping = p.grouping.clone();
    if let Some(names) = policies {
        grouping.insert("policies".into(), names.to_string());
    }
    if let Some(s) = shard {
        grouping.insert("shard".into(), s.index.to_string());
    }
    if let Some(j) = job {
        grouping.insert("schedule_job".into(), j.to_string());
    }
    let mut url = format!("{}/metrics{}", p.url.trim_end_matches('/'), segment("job", &p.job));
    for (k, v) in &grouping {
        url.push_str(&segment(k, v));
    }
    url
}

/// A URL as it may be printed: without what comes before its last `@` (`user:password@`; a
/// password may hold `/`, `?` or `#`, so the authority cannot be told from the path there).
/// Nor its query or fragment (`?token=…`), nor anything that is no `scheme://` URL (a bare
/// token given for one; found by a review).
pub fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "(not shown: no scheme://)".into() };
    let rest = match rest.rfind('@') {
        Some(at) => format!("<credentials>@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    match rest.find(['?', '#']) {
        Some(q) => format!("{scheme}://{}?…", &rest[..q]),
        None => format!("{scheme}://{rest}"),
    }
}

/// Credentials in the pushgateway URL: refused (a secret in the config file or on the command
/// line, and lapse sends no authentication).
fn credentials_problem(url: &str) -> Option<String> {
    url.split_once("://").map_or(url, |(_, r)| r).contains('@').then(|| {
        "the pushgateway url carries credentials (user:password@), which lapse neither sends nor keeps in its config: \
         reach the gateway without them (a sidecar or network policy)"
            .to_string()
    })
}

/// POSTs the exposition to the Pushgateway (POST replaces only the metric names pushed).
pub async fn push(p: &Pushgateway, url: &str, body: String) -> anyhow::Result<()> {
    // The configured URL (the grouping key's segments after it may hold `@base64`).
    if let Some(m) = credentials_problem(&p.url) {
        anyhow::bail!("{m}");
    }
    let show = shown(&p.url);
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| anyhow::anyhow!("TLS setup for the pushgateway: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = hyper::Request::post(url)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| anyhow::anyhow!("pushgateway url '{show}': {e}"))?;
    let send = async {
        let resp = client.request(req).await.map_err(|e| anyhow::anyhow!("pushgateway '{show}': {e}"))?;
        let status = resp.status();
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if !status.is_success() {
            let t = String::from_utf8_lossy(&text);
            anyhow::bail!("pushgateway '{show}' answered {status}: {}", t.trim().chars().take(200).collect::<String>());
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(p.timeout_seconds), send)
        .await
        .map_err(|_| anyhow::anyhow!("pushgateway '{show}': no answer within {} s", p.timeout_seconds))?
}

/// A run limited to some policies by `--policy` (a shard's or a scheduled job's runs have
/// files and groups of their own, and always take the same policies).
fn partial(r: &Report, m: &MetricsConfig) -> bool {
    !r.selected_policies.is_empty() && r.shard.is_none() && m.schedule_job.is_none()
}

/// The exposition without family `name` (its `# HELP`, `# TYPE` and samples).
fn without_family(text: &str, name: &str) -> String {
    let ours = |l: &str| {
        let l = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
        l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' ']))
    };
    text.lines().filter(|l| !ours(l)).map(|l| format!("{l}\n")).collect()
}

/// Writes and pushes the metrics of a finished run; returns the problems (already logged as
/// warnings). Never fails the run.
pub async fn publish(m: &MetricsConfig, r: &Report, exit_code: u8) -> Vec<String> {
    let mut problems = Vec::new();
    let succeeded = exit_code == 0;
    let end = r.finished_at.unwrap_or(r.started_at).timestamp_millis() as f64 / 1000.0;
    if let Some(path) = &m.textfile {
        // The shards of a run, on one node, write a file each (`lapse-shard-1-of-4.prom`), their
        // samples labelled with the shard: one file would keep only the last shard's policies.
        let (mut path, mut common) = match r.shard {
            Some(s) => (shard_textfile(path, s), vec![("shard", s.index.to_string())]),
            None => (path.clone(), vec![]),
        };
        // Likewise each job of `lapse schedule`: one file would keep only the last job's
        // policies, and any job's success would hide another's failures.
        if let Some(j) = &m.schedule_job {
            path = job_textfile(&path, j);
            common.push(("schedule_job", j.clone()));
        }
        // A run of some policies only (`--policy`) keeps the others' samples, and is not the
        // success of the whole: the last success stays that of a run of every policy.
        let partial = partial(r, m);
        let previous = std::fs::read_to_string(&path).unwrap_or_default();
        let taken: BTreeSet<&str> = r.policies.iter().map(|p| p.name.as_str()).collect();
        let kept = carried(&previous, &taken, partial, &POLICY_FAMILIES, &m.policies);
        let last = if succeeded && !partial { Some(end) } else { previous_success(&path) };
        if let Err(e) = write_textfile(&path, &exposition_with(r, exit_code, last, common, &kept)) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Some(p) = &m.pushgateway {
        // A run of some policies only pushes to a group of its own (`policies=<names>`): a
        // `POST` replaces every series of a name in its group, the other policies' too.
        let selection = partial(r, m).then(|| r.selected_policies.join(","));
        let url = push_url(p, r.shard, m.schedule_job.as_deref(), selection.as_deref());
        let mut body = exposition(r, exit_code, succeeded.then_some(end));
        if !succeeded {
            // Each policy's last success survives a failed run as the run's does: not pushed.
            body = without_family(&body, POLICY_SUCCESS);
        }
        if let Err(e) = push(p, &url, body).await {
            problems.push(format!("{e:#}"));
        }
    }
    for e in &problems {
        tracing::warn!(run_id = %r.run_id, "metrics not published (the run itself is unaffected): {e}");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shards of a run on one node write a textfile each, every sample labelled with its
    /// shard, and a shard's last success is read back from its own labelled file (before, they
    /// shared one file, which kept only the last shard's policies).
    #[test]
    fn shards_write_textfiles_of_their_own() {
        let s = crate::report::ShardInfo { index: 1, count: 4 };
        let path = shard_textfile(Path::new("/var/lib/textfile/lapse.prom"), s);
        assert_eq!(path, Path::new("/var/lib/textfile/lapse-shard-1-of-4.prom"));
        let mut e = Exposition { out: String::new(), common: vec![("shard", "1".into())] };
        e.sample("lapse_run_exit_code", &[], 0.0);
        e.sample("lapse_records_due", &[("policy", "p")], 3.0);
        e.sample("lapse_last_success_timestamp_seconds", &[], 1700000000.5);
        assert!(e.out.contains("lapse_run_exit_code{shard=\"1\"} 0\n"), "{}", e.out);
        assert!(e.out.contains("lapse_records_due{policy=\"p\",shard=\"1\"} 3\n"), "{}", e.out);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.prom");
        write_textfile(&file, &e.out).unwrap();
        assert_eq!(previous_success(&file), Some(1700000000.5));
        std::fs::write(&file, "lapse_last_success_timestamp_seconds 12\n").unwrap();
        assert_eq!(previous_success(&file), Some(12.0));
    }

    /// A pushgateway URL with credentials is refused at validation, and no message prints them
    /// (before, they were accepted, never sent, and logged on every run).
    #[test]
    fn pushgateway_credentials_are_refused_and_never_shown() {
        assert_eq!(shown("http://metrics:Hunter2@gw:9091/x"), "http://<credentials>@gw:9091/x");
        assert_eq!(shown("http://metrics:ab/c+d@gw:9091"), "http://<credentials>@gw:9091");
        assert_eq!(shown("http://u:p#ss@gw"), "http://<credentials>@gw");
        assert_eq!(shown("https://gw:9091"), "https://gw:9091");
        // Nor a query's token, nor a bare token given for a URL (found by a review).
        assert_eq!(shown("http://gw:9091/?token=PuShPw4"), "http://gw:9091/?…");
        assert_eq!(shown("PuShPw3"), "(not shown: no scheme://)");
        assert_eq!(shown("hxxp://u:Hunter2@gw"), "hxxp://<credentials>@gw");
        for url in
            ["http://metrics:Hunter2@127.0.0.1:1", "hxxp://metrics:Hunter2@127.0.0.1:1", "http://m:Hunter2/x@gw:1"]
        {
            let m = gateway(url, BTreeMap::new());
            let problems = m.problems();
            assert!(problems.iter().any(|(_, msg)| msg.contains("carries credentials")), "{url}: {problems:?}");
            assert!(problems.iter().all(|(_, msg)| !msg.contains("Hunter2")), "{url}: {problems:?}");
        }
    }

    /// A config that pushes to `url` with `grouping`.
    fn gateway(url: &str, grouping: BTreeMap<String, String>) -> MetricsConfig {
        MetricsConfig {
            pushgateway: Some(Pushgateway {
                url: url.into(),
                job: default_job(),
                grouping,
                timeout_seconds: default_timeout(),
            }),
            ..Default::default()
        }
    }

    /// A query or fragment is refused: the push path went after it, the gateway answered 404 and
    /// the metrics were lost with only a warning (found by a review). The token is not shown.
    #[test]
    fn pushgateway_url_with_a_query_is_refused() {
        for (url, refused) in [
            ("http://gw:9091/?token=PuShPw4", true),
            ("https://gw:9091/base#frag", true),
            ("http://gw:9091/base/", false),
            ("http://gw:9091", false),
        ] {
            let m = gateway(url, BTreeMap::new());
            let problems = m.problems();
            assert_eq!(
                problems.iter().any(|(_, msg)| msg.contains("query or fragment")),
                refused,
                "{url}: {problems:?}"
            );
            assert!(problems.iter().all(|(_, msg)| !msg.contains("PuShPw4")), "{url}: {problems:?}");
        }
    }

    /// The labels lapse groups by itself are refused in `grouping`: a `shard` given there put
    /// every shard's push in one group, the last replacing the others (found by a review).
    #[test]
    fn grouping_labels_lapse_sets_are_refused() {
        for k in ["shard", "schedule_job", "policies", "job"] {
            let m = gateway("http://gw:9091", BTreeMap::from([(k.to_string(), "db-03".to_string())]));
            assert!(m.problems().iter().any(|(at, _)| at == &format!("metrics.pushgateway.grouping.{k}")), "{k}");
        }
        let p = Pushgateway {
            url: "http://gw:9091".into(),
            job: default_job(),
            grouping: BTreeMap::from([("cluster".to_string(), "eu".to_string())]),
            timeout_seconds: default_timeout(),
        };
        let shard = |index| Some(crate::report::ShardInfo { index, count: 2 });
        assert_ne!(push_url(&p, shard(0), None, None), push_url(&p, shard(1), None, None));
        assert_eq!(push_url(&p, shard(1), None, None), "http://gw:9091/metrics/job/lapse/cluster/eu/shard/1");
    }

    #[test]
    fn grouping_segments() {
        assert_eq!(segment("job", "lapse"), "/job/lapse");
        assert_eq!(segment("cluster", "eu/1"), "/cluster@base64/ZXUvMQ==");
        assert_eq!(segment("x", ""), "/x@base64/=");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
