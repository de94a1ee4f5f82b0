//! Seeing what a run does: Prometheus metrics (textfile and a real HTTP listener standing in for
//! the Pushgateway: the bytes on the wire are checked), JSON logs with run id and policy on every
//! line of policy work, and no progress bar when stderr is not a terminal.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use serde_json::Value as Json;

use crate::common::Backend;
use crate::conformance::seeded;

const PEOPLE: &str = "name: people
dataset: { connection: db, table: people, key: id, subject: subject }
personal:
  email:     { category: email }
  full_name: { category: name }
  ip:        { category: ip_address }
  birth:     { category: date_of_birth }
  postcode:  { category: postal_address }
  score:     { category: account_id }
purposes:
  - { name: service, legal_basis: contract, retain: 1y, after: created_at }
on_lapse: delete
guardrail: { max_share: 100% }
";

/// A parsed exposition: `name{labels}` -> value, after checking every sample's family is typed.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut typed = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(typed.iter().any(|t| t == name), "sample of an untyped family: {line}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        out.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("value of {line}")));
    }
    out
}

fn series(policy: &str) -> impl Fn(&str) -> String + '_ {
    move |name| format!("{name}{{policy=\"{policy}\",connection=\"db\"}}")
}

pub async fn textfile_metrics_agree_with_the_report(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", PEOPLE);
    let prom = f.path("metrics/lapse.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let prom_s = prom.display().to_string();
    f.lapse(&["run", "--metrics-textfile", &prom_s]).ok();
    let m = parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    let r = f.report("run");
    let p = &r["policies"][0];
    let s = series("people");
    assert_eq!(m[&s("lapse_records_deleted")], p["deleted"].as_f64().unwrap());
    assert_eq!(m[&s("lapse_records_deleted")], 5.0);
    assert_eq!(m[&s("lapse_records_anonymized")], 0.0);
    assert_eq!(m[&s("lapse_records_held")], p["held"].as_f64().unwrap());
    assert_eq!(m[&s("lapse_records_failed")], 0.0);
    assert_eq!(m[&s("lapse_records_skipped")], 0.0);
    assert_eq!(m[&s("lapse_records_unreadable")], 0.0);
    assert!(m[&s("lapse_policy_duration_seconds")] > 0.0);
    let outcome = |o: &str| format!("lapse_policy_outcome{{policy=\"people\",connection=\"db\",outcome=\"{o}\"}}");
    assert_eq!(m[&outcome("done")], 1.0, "{m:?}");
    assert_eq!(m.keys().filter(|k| k.starts_with("lapse_policy_outcome")).count(), 1, "one outcome per policy");
    assert_eq!(m["lapse_run_exit_code"], 0.0);
    let success = m["lapse_last_success_timestamp_seconds"];
    assert_eq!(success, m["lapse_last_run_timestamp_seconds"]);
    let finished = chrono::DateTime::parse_from_rfc3339(r["finished_at"].as_str().unwrap()).unwrap();
    assert_eq!(success, finished.timestamp_millis() as f64 / 1000.0);
    // No temporary file is left beside it (the collector reads every *.prom).
    let names: Vec<String> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, vec!["lapse.prom".to_string()]);

    // A run stopped by the guardrail: exit code 3 in the metrics, the last success kept.
    f.policy("people", &PEOPLE.replace("max_share: 100%", "max_share: 1%").replace("retain: 1y", "retain: 1d"));
    f.lapse(&["run", "--metrics-textfile", &prom_s]).code(3);
    let m = parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m["lapse_run_exit_code"], 3.0);
    assert_eq!(m[&s("lapse_policy_guardrail_tripped")], 1.0);
    assert_eq!(m[&outcome("guardrail")], 1.0, "{m:?}");
    assert_eq!(m["lapse_last_success_timestamp_seconds"], success, "a failed run keeps the last success");
    assert!(m["lapse_last_run_timestamp_seconds"] > success);
}

/// What one HTTP request looked like on the wire.
struct Captured {
    request_line: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// A one-request HTTP/1.1 server on 127.0.0.1: answers `status` and returns what it received.
fn http_listener(status: &'static str) -> (u16, std::thread::JoinHandle<Captured>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut sock, _) = l.accept().unwrap();
        let mut r = BufReader::new(sock.try_clone().unwrap());
        let mut request_line = String::new();
        r.read_line(&mut request_line).unwrap();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        sock.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
            .unwrap();
        Captured { request_line: request_line.trim_end().into(), headers, body: String::from_utf8(body).unwrap() }
    });
    (port, h)
}

pub async fn metrics_pushed_to_a_pushgateway(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", PEOPLE);
    let (port, server) = http_listener("200 OK");
    f.config(&format!(
        "metrics:\n  pushgateway:\n    url: http://127.0.0.1:{port}/\n    job: retention\n    grouping: {{ cluster: eu-1, team: privacy/ops }}\n"
    ));
    let run = tokio::task::spawn_blocking(move || {
        let r = f.lapse(&["run", "--shard", "0/1"]);
        (f, r)
    });
    let (f, r) = run.await.unwrap();
    r.ok();
    let got = server.join().unwrap();
    // POST (replaces only the pushed names: a failed run keeps the last success), the grouping
    // key in the path, base64 for a value with a slash, the shard added to the grouping key.
    assert_eq!(
        got.request_line,
        "POST /metrics/job/retention/cluster/eu-1/shard/0/team@base64/cHJpdmFjeS9vcHM= HTTP/1.1"
    );
    assert!(got.headers["content-type"].starts_with("text/plain; version=0.0.4"), "{:?}", got.headers);
    let m = parse_exposition(&got.body);
    let dir = f.path("reports/shard-0-of-1");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".json") && !p.to_string_lossy().contains("evidence"))
        .unwrap();
    let rep: Json = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let s = series("people");
    assert_eq!(m[&s("lapse_records_deleted")], rep["policies"][0]["deleted"].as_f64().unwrap());
    assert_eq!(m[&s("lapse_records_deleted")], 5.0);
    assert_eq!(m["lapse_run_exit_code"], 0.0);
    assert!(m.contains_key("lapse_last_success_timestamp_seconds"));
    assert!(!got.body.contains("S-1") && !got.body.contains("example.com"), "no personal data in metrics");
}

pub async fn metrics_failures_do_not_change_the_run(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", PEOPLE);
    // A Pushgateway answering 500, and a textfile in a directory that does not exist.
    let (port, server) = http_listener("500 Internal Server Error");
    let url = format!("http://127.0.0.1:{port}");
    let prom = f.path("missing-dir/lapse.prom").display().to_string();
    let run = tokio::task::spawn_blocking(move || {
        let r = f.lapse(&["run", "--pushgateway", &url, "--metrics-textfile", &prom]);
        (f, r)
    });
    let (f, r) = run.await.unwrap();
    server.join().unwrap();
    r.ok().stderr_has("metrics not published").stderr_has("500");
    assert!(r.stderr.contains("cannot write metrics file"), "{}", r.stderr);
    assert_eq!(f.report("run")["policies"][0]["deleted"], 5, "destruction unaffected");
}

/// Every JSON log line of policy work carries the run id and the policy.
pub async fn json_logs_carry_run_id_and_policy(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", &format!("{PEOPLE}batch_size: 2\n"));
    let r = f.lapse(&["--log-format", "json", "run"]);
    r.ok();
    let run_id = f.report("run")["run_id"].as_str().unwrap().to_string();
    // Every line on stdout is JSON too: the summary is one event (before, its text lines were
    // no JSON for a log collector; found by a review), with the report's counts.
    let out: Vec<Json> = r
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {l}")))
        .collect();
    assert_eq!(out.len(), 1, "{}", r.stdout);
    let (sum, rep) = (&out[0], f.report("run"));
    assert_eq!(
        (&sum["message"], &sum["run_id"], &sum["status"]),
        (&"run summary".into(), &rep["run_id"], &rep["status"])
    );
    assert_eq!(sum["policies"][0]["deleted"], rep["policies"][0]["deleted"], "{sum}");
    assert_eq!(sum["policies"][0]["due"], rep["policies"][0]["rows_due"], "{sum}");
    assert!(sum["policies"][0]["deleted"].as_u64() > Some(0), "{sum}");
    assert_eq!((&sum["level"], &sum["interrupted_runs"]), (&"INFO".into(), &serde_json::json!([])), "{sum}");
    let lines: Vec<Json> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let policy_of = |j: &Json| j["span"]["policy"].as_str().map(str::to_string);
    let first = lines.iter().position(|j| policy_of(j).is_some()).expect("policy lines");
    let last = lines.iter().rposition(|j| policy_of(j).is_some()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for j in &lines[first..=last] {
        let p = policy_of(j).unwrap_or_else(|| panic!("a line of policy work without its policy: {j}"));
        assert_eq!(j["span"]["run_id"], run_id.as_str(), "{j}");
        seen.insert(p);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["people".to_string()]);
    let batches = lines.iter().filter(|j| j["message"] == "batch committed").count();
    assert!(batches >= 3, "debug-level work lines are among them ({batches} batches)");
    // Not a terminal: no progress bar (no cursor movement or line clearing).
    assert!(!r.stderr.contains('\u{1b}'), "escape codes on a non-terminal stderr");
    // Quiet (warnings only): a warning of policy work still carries them (before, the span was
    // filtered out with the INFO lines; found by a README walkthrough).
    let g = seeded(b).await;
    g.policy("people", &format!("{PEOPLE}batch_size: 1\n"));
    // (LAPSE_LOG empty: `-q`'s own filter.)
    let r = g.lapse_env(&["run", "--log-format", "json", "-q", "--max-batches", "1"], &[("LAPSE_LOG", "")]);
    r.ok();
    let warned: Vec<Json> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("--max-batches"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!warned.is_empty(), "{}", r.stderr);
    for j in warned {
        assert_eq!(policy_of(&j).as_deref(), Some("people"), "{j}");
        assert!(j["span"]["run_id"].is_string(), "{j}");
    }
    // `-q` under a `LAPSE_LOG` filter (the chart always sets one): still warnings only (before,
    // the filter won and every INFO and DEBUG line came out; found by a review).
    let r = g.lapse_env(&["run", "--log-format", "json", "-q", "--max-batches", "1"], &[("LAPSE_LOG", "lapse=debug")]);
    r.ok();
    let levels: std::collections::BTreeSet<String> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Json>(l).unwrap()["level"].as_str().unwrap().to_string())
        .collect();
    assert!(levels.iter().all(|l| l == "WARN" || l == "ERROR") && !levels.is_empty(), "{levels:?}\n{}", r.stderr);
    // A filter that does not parse is said, and the default one used.
    let r = g.lapse_env(&["plan", "--log-format", "json"], &[("LAPSE_LOG", "lapse=loud")]);
    assert!(r.stderr.contains("LAPSE_LOG is no filter lapse can read"), "{}", r.stderr);
    assert!(r.stderr.contains("\"level\":\"INFO\""), "the default filter: {}", r.stderr);
}

/// Text logs also carry the policy on each line of policy work, and no escape codes off a TTY.
pub async fn text_logs_name_the_policy(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", PEOPLE);
    let r = f.lapse(&["--log-format", "text", "run"]);
    r.ok();
    let committed: Vec<&str> = r.stderr.lines().filter(|l| l.contains("batch committed")).collect();
    assert!(!committed.is_empty());
    for l in committed {
        assert!(l.contains("policy=people") && l.contains("run_id="), "{l}");
    }
    assert!(!r.stderr.contains('\u{1b}'), "escape codes on a non-terminal stderr");
}

/// A run of some policies only (`--policy`) keeps the other policies' samples in the textfile
/// (their outcome, their counts, their last success) and does not advance the whole run's last
/// success, and each policy has a last success of its own (found by a read-only review: such a
/// run replaced every other policy's series and reset the success a staleness alert watches,
/// while another policy kept failing).
#[tokio::test]
async fn a_run_of_some_policies_keeps_the_others_metrics() {
    let f = seeded(Backend::Sqlite).await;
    f.db.exec(
        "CREATE TABLE visits (id INTEGER PRIMARY KEY, subject TEXT NOT NULL, email TEXT, created_at TEXT NOT NULL);
         INSERT INTO visits VALUES (1, 'S-1', 'a@example.com', '2020-01-01 00:00:00');
         INSERT INTO visits VALUES (2, 'S-2', 'b@example.com', '2020-01-02 00:00:00');",
    )
    .await;
    let visits = "name: visits
dataset: { connection: db, table: visits, key: id, subject: subject }
personal:
  email: { category: email }
purposes:
  - { name: service, legal_basis: contract, retain: 1y, after: created_at }
on_lapse: delete
guardrail: { max_share: 100% }
";
    f.policy("people", PEOPLE);
    f.policy("visits", visits);
    let prom = f.path("metrics/lapse.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let prom_s = prom.display().to_string();
    let read = || parse_exposition(&std::fs::read_to_string(&prom).unwrap());
    let outcome =
        |p: &str, o: &str| format!("lapse_policy_outcome{{policy=\"{p}\",connection=\"db\",outcome=\"{o}\"}}");
    let success = |p: &str| format!("lapse_policy_last_success_timestamp_seconds{{policy=\"{p}\",connection=\"db\"}}");
    f.lapse(&["run", "--metrics-textfile", &prom_s]).ok();
    let m = read();
    let first = m["lapse_last_success_timestamp_seconds"];
    assert_eq!(m[&success("people")], first);
    assert_eq!(m[&success("visits")], first);
    // `people` trips its guardrail: its outcome says so, its last success stays the first run's.
    f.policy("people", &PEOPLE.replace("max_share: 100%", "max_share: 1%").replace("retain: 1y", "retain: 1d"));
    f.db.exec("INSERT INTO visits VALUES (3, 'S-3', 'c@example.com', '2020-01-03 00:00:00');").await;
    f.lapse(&["run", "--metrics-textfile", &prom_s]).code(3);
    let m = read();
    assert_eq!(m[&outcome("people", "guardrail")], 1.0, "{m:?}");
    assert_eq!(m[&success("people")], first, "{m:?}");
    assert!(m[&success("visits")] > first, "{m:?}");
    assert_eq!(m["lapse_last_success_timestamp_seconds"], first);
    // Then `visits` alone: `people`'s series are still there, as the last run of it left them.
    f.db.exec("INSERT INTO visits VALUES (4, 'S-4', 'd@example.com', '2020-01-04 00:00:00');").await;
    f.lapse(&["run", "--policy", "visits", "--metrics-textfile", &prom_s]).ok();
    let m = read();
    assert_eq!(m[&outcome("people", "guardrail")], 1.0, "{m:?}");
    assert_eq!(m[&outcome("visits", "done")], 1.0, "{m:?}");
    assert_eq!(m["lapse_policy_guardrail_tripped{policy=\"people\",connection=\"db\"}"], 1.0, "{m:?}");
    assert_eq!(m["lapse_records_deleted{policy=\"visits\",connection=\"db\"}"], 1.0, "{m:?}");
    assert_eq!(m[&success("people")], first, "{m:?}");
    let visits_success = m[&success("visits")];
    assert_eq!(visits_success, m["lapse_last_run_timestamp_seconds"]);
    assert_eq!(m["lapse_run_exit_code"], 0.0);
    assert_eq!(m["lapse_last_success_timestamp_seconds"], first, "a run of some policies is not the whole's success");
    // `people` removed from the policy files: a run of `visits` alone carries none of its
    // series over (before, its last success grew old for good, and a staleness alert fired for
    // a policy that no longer exists; found by a read-only review).
    std::fs::remove_file(f.path("policies/people.yaml")).unwrap();
    f.lapse(&["run", "--policy", "visits", "--metrics-textfile", &prom_s]).ok();
    let m = read();
    assert!(m.keys().all(|k| !k.contains("policy=\"people\"")), "{m:?}");
    assert_eq!(m[&outcome("visits", "done")], 1.0, "{m:?}");
}

crate::per_backend!(
    textfile_metrics_agree_with_the_report,
    metrics_pushed_to_a_pushgateway,
    metrics_failures_do_not_change_the_run,
    json_logs_carry_run_id_and_policy,
    text_logs_name_the_policy
);
