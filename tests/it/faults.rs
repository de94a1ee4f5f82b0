//! Faults: connections dropped mid-batch, a database going away during a run, and S3 answering
//! 503 SlowDown, 500 InternalError or resetting connections (before the request reaches the
//! server, or after it did the work) on a share of requests — through the loopback proxies of
//! [`crate::proxy`], which count every fault they inject.
//!
//! What must hold: every run exits 0 or 1 (never "invalid", never a crash), in bounded time;
//! nothing outside policy is destroyed (the invariants of [`crate::crash`], checked after every
//! run against the seed's oracle); what could not be done is reported and gives exit 1; re-runs
//! converge to exactly the oracle's state.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::{Backend, Fixture};
use crate::crash::{
    check_s3, check_sql, evidence_lines, evidence_records, lapse_cmd, reset_sql, run_to_end, s3_drop, s3_reseed,
    s3_state, sql_fixture, S3Seed, SqlOracle, SqlSeed, SqlState, DATA_SEED, S3_OBJECTS, S3_POLICY_DATASET, S3_PURPOSES,
    SQL_CUSTOMERS, SQL_LEADS,
};
use crate::objects::{endpoint, Store, StoreKind};
use crate::proxy::{Fault, S3Proxy, TcpProxy};

/// A run may take this long at most, whatever the faults (retries are bounded).
const BOUND: Duration = Duration::from_secs(120);
const ALL_FAULTS: [Fault; 4] = [Fault::SlowDown, Fault::InternalError, Fault::ResetBefore, Fault::ResetAfter];

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(DATA_SEED, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

async fn timed_run(config: &Path, batch: usize, ctx: &str) -> (i32, String) {
    let t = Instant::now();
    let r = tokio::time::timeout(BOUND, run_to_end(config, batch))
        .await
        .unwrap_or_else(|_| panic!("{ctx}: a run took longer than {BOUND:?}: retries are not bounded"));
    assert!(t.elapsed() < BOUND);
    assert!(matches!(r.0, 0 | 1), "{ctx}: exit {} (expected 0, or 1 for a partial run):\n{}", r.0, r.1);
    assert!(!r.1.contains("panicked"), "{ctx}: lapse panicked:\n{}", r.1);
    r
}

// ------------------------------------------------------------------------------------ S3 ---

/// An S3 store seeded like the kill harness, whose connection goes through a fault proxy.
async fn s3_behind_proxy(name: &str) -> (Store, S3Seed, S3Proxy) {
    let seed = S3Seed::generate(DATA_SEED, S3_OBJECTS);
    let s = Store::new(StoreKind::S3, true, false).await;
    // A run that fails before it can release its lease would block the next attempt (by design).
    s.without_run_lock();
    s.policy(S3_POLICY_DATASET, S3_PURPOSES, "guardrail:\n  max_share: 100%\n");
    s.f.holds(&seed.holds_yaml());
    s3_reseed(&s, &seed).await;
    let proxy = S3Proxy::start(&endpoint(), seed_of(name)).await;
    let cfg = std::fs::read_to_string(s.f.path("lapse.yaml")).unwrap();
    std::fs::write(s.f.path("lapse.yaml"), cfg.replace(&endpoint(), &proxy.endpoint())).unwrap();
    (s, seed, proxy)
}

/// A quarter of all requests fail (every kind of fault): runs exit 0 or 1, never destroy outside
/// policy, account for every deletion, and converge to the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_faults_converge() {
    let (s, seed, proxy) = s3_behind_proxy("s3_faults_converge").await;
    let oracle = seed.oracle();
    let c = s.client.clone().unwrap();
    proxy.faults(0.25, &ALL_FAULTS, None);
    let config = s.f.path("lapse.yaml");
    let mut runs = 0;
    let mut partial = 0;
    loop {
        runs += 1;
        let ctx = format!("S3 with 25% faults, run {runs}");
        let (code, _) = timed_run(&config, 3, &ctx).await;
        partial += usize::from(code == 1);
        let st = s3_state(&c, &s.bucket).await;
        let (done, unaccounted) = check_s3(&seed, &oracle, &st, &evidence_records(&s.f.path("reports")), &s.bucket)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(unaccounted, 0, "{ctx}: {unaccounted} deleted objects are in no evidence");
        if done == oracle.len() {
            break;
        }
        assert!(runs < 12, "{ctx}: not converged after {runs} runs ({done} of {})", oracle.len());
    }
    let k = proxy.counters();
    eprintln!("[faults] FIGURES s3_faults_converge: share=25% {} runs={runs} partial_runs={partial} lost=0", k.line());
    assert!(k.injected() > 0 && k.slowdown.load(Ordering::SeqCst) > 0, "no fault was injected: {}", k.line());
    s3_drop(&c, &s.bucket).await;
}

/// Every request fails: lapse gives up in bounded time with a non-zero exit and destroys nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_every_request_fails() {
    let (s, seed, proxy) = s3_behind_proxy("s3_every_request_fails").await;
    let c = s.client.clone().unwrap();
    let before = s3_state(&c, &s.bucket).await;
    proxy.faults(1.0, &[Fault::SlowDown, Fault::InternalError, Fault::ResetBefore], None);
    let t = Instant::now();
    let (code, out) = timed_run(&s.f.path("lapse.yaml"), 3, "S3 with 100% faults").await;
    let took = t.elapsed();
    assert_eq!(code, 1, "every request failed, yet exit {code}:\n{out}");
    assert_eq!(s3_state(&c, &s.bucket).await, before, "something was destroyed");
    let k = proxy.counters();
    eprintln!("[faults] FIGURES s3_every_request_fails: {} exit={code} took_ms={}", k.line(), took.as_millis());
    assert!(k.injected() >= 4, "the SDK retried nothing? {}", k.line());
    drop(seed);
    s3_drop(&c, &s.bucket).await;
}

/// Listing works but every DeleteObjects fails: the objects are reported as failed (exit 1, a
/// partial report naming the storage's error), nothing is destroyed, nothing is in the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_deletes_fail() {
    let (s, seed, proxy) = s3_behind_proxy("s3_deletes_fail").await;
    let c = s.client.clone().unwrap();
    let before = s3_state(&c, &s.bucket).await;
    proxy.faults(1.0, &[Fault::SlowDown, Fault::InternalError, Fault::ResetBefore], Some("?delete"));
    let (code, out) = timed_run(&s.f.path("lapse.yaml"), 50, "S3 with failing deletes").await;
    assert_eq!(code, 1, "no delete succeeded, yet exit {code}:\n{out}");
    assert_eq!(s3_state(&c, &s.bucket).await, before, "something was destroyed");
    let r = s.f.report("run");
    assert_eq!(r["status"], "partial", "{r}");
    let p = &r["policies"][0];
    assert_eq!(p["deleted"], 0);
    assert_eq!(p["failed"].as_u64().unwrap(), seed.oracle().len() as u64, "every due object is reported failed: {p}");
    assert!(!p["errors"].as_array().unwrap().is_empty());
    assert!(evidence_records(&s.f.path("reports")).is_empty());
    let k = proxy.counters();
    eprintln!("[faults] FIGURES s3_deletes_fail: {} exit={code}", k.line());
    // The SDK's attempts times lapse's own retries, per DeleteObjects call.
    assert!(k.injected() >= 3, "{}", k.line());
    s3_drop(&c, &s.bucket).await;
}

// ----------------------------------------------------------------------------------- SQL ---

/// A seeded SQL fixture whose `db.url` points at a TCP proxy in front of the server.
async fn sql_behind_proxy(b: Backend, name: &str) -> (Fixture, SqlSeed, TcpProxy) {
    let seed = SqlSeed::generate(DATA_SEED, SQL_CUSTOMERS, SQL_LEADS);
    let f = sql_fixture(b, &seed).await;
    let proxy = proxy_in_front(&f, seed_of(name)).await;
    (f, seed, proxy)
}

/// Points the fixture's `db.url` at a TCP proxy in front of its server.
async fn proxy_in_front(f: &Fixture, seed: u64) -> TcpProxy {
    let url = f.db.url.clone();
    let at = url.find("127.0.0.1:").expect("a loopback url") + "127.0.0.1:".len();
    let port: String = url[at..].chars().take_while(char::is_ascii_digit).collect();
    let proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap(), seed).await;
    std::fs::write(f.path("db.url"), url.replacen(&format!("127.0.0.1:{port}"), &proxy.addr.to_string(), 1)).unwrap();
    proxy
}

/// `people` with `n` lapsed rows (id `i`, subject `S-i`), and when asked `orders` (order `100 + i`
/// of person `i`) and the holds table `legal_holds` (configured, empty), then `extra` statements.
async fn people(b: Backend, n: i64, orders: bool, holds: bool, extra: &str) -> Fixture {
    let mut schema = "CREATE TABLE people (id BIGINT NOT NULL PRIMARY KEY, subject VARCHAR(64), email VARCHAR(255), created_at {TS} NULL);".to_string();
    if orders {
        schema.push_str(" CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, person_id BIGINT NOT NULL, note VARCHAR(10), FOREIGN KEY (person_id) REFERENCES people (id));");
    }
    if holds {
        schema.push_str(" CREATE TABLE legal_holds (id VARCHAR(64) NOT NULL PRIMARY KEY, subject VARCHAR(64), policy VARCHAR(64), expires_at {TS} NULL);");
    }
    schema.push_str(extra);
    let f = Fixture::new(b, &schema).await;
    if holds {
        f.holds_table_config();
    }
    let rows: Vec<String> =
        (1..=n).map(|i| format!("({i}, 'S-{i}', 'p{i}@example.com', '2020-03-01 10:00:00')")).collect();
    f.db.exec(&format!("INSERT INTO people (id, subject, email, created_at) VALUES {}", rows.join(", "))).await;
    if orders {
        let rows: Vec<String> = (1..=n).map(|i| format!("({}, {i}, 'o')", 100 + i)).collect();
        f.db.exec(&format!("INSERT INTO orders (id, person_id, note) VALUES {}", rows.join(", "))).await;
    }
    f
}

/// The policy of [`people`]: `on_lapse` after a year, e-mails nullified, and with `cascade` the
/// person's orders deleted with them.
fn people_policy(on_lapse: &str, cascade: bool) -> String {
    let mut policy = format!("name: people\ndataset:\n  connection: db\n  table: people\n  key: id\n  subject: subject\npersonal:\n  email: {{ category: email, anonymize: nullify }}\npurposes:\n  - name: p\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: {on_lapse}\nguardrail:\n  max_share: 100%\n");
    if cascade {
        policy.push_str("dependents:\n  - table: orders\n    on_delete: cascade\n");
    }
    policy
}

/// `lapse run` in batches of 10, its output captured.
fn spawn_run(f: &Fixture) -> tokio::process::Child {
    lapse_cmd(&f.path("lapse.yaml"), 10)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Holds in the holds table of [`people`] on the persons `ids` (subject `S-i`).
async fn hold_people(f: &Fixture, ids: impl IntoIterator<Item = i64>) {
    let holds: Vec<String> = ids.into_iter().map(|i| format!("('H-{i}', 'S-{i}', NULL, NULL)")).collect();
    f.db.exec(&format!("INSERT INTO legal_holds (id, subject, policy, expires_at) VALUES {}", holds.join(", "))).await;
}

/// Whether the count `sql` became positive within 20 s (polled every 20 ms).
async fn poll_until(f: &Fixture, sql: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if f.db.count(sql).await > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Until the proxy has cut a batch's `COMMIT` (bounded): the running `child` back. If lapse
/// exits first, or the bound passes, the test fails with what lapse wrote.
async fn wait_for_cut(proxy: &TcpProxy, mut child: tokio::process::Child) -> tokio::process::Child {
    let t = Instant::now();
    while proxy.counters().commits_cut.load(Ordering::SeqCst) == 0 {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || t.elapsed() >= Duration::from_secs(30) {
            if exited.is_none() {
                child.start_kill().unwrap();
            }
            let out = child.wait_with_output().await.unwrap();
            let why = exited.map_or("in 30 s".to_string(), |s| format!("before lapse exited ({s})"));
            panic!(
                "no COMMIT was cut {why}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child
}

async fn journal_exists(f: &Fixture) -> bool {
    let schema = match f.db.backend {
        Backend::MySql => "DATABASE()",
        _ => "current_schema()",
    };
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'lapse_journal' AND table_schema = {schema}"
    );
    f.db.count(&sql).await > 0
}

async fn check_now(f: &Fixture, seed: &SqlSeed, oracle: &SqlOracle, ctx: &str) -> usize {
    let st = SqlState::settled(&f.db, journal_exists(f).await).await;
    check_sql(seed, oracle, &st, &evidence_records(&f.path("reports"))).unwrap_or_else(|e| panic!("{ctx}: {e}"))
}

/// Connections are cut mid-stream (a random byte budget on a third of them, so batches die in
/// every phase: lock, delete, journal, commit): runs exit 0 or 1, keep every invariant, and
/// converge.
async fn sql_drops_converge(b: Backend) {
    let name = format!("{b:?} connection drops");
    let (f, seed, proxy) = sql_behind_proxy(b, &name).await;
    let oracle = SqlOracle::of(&seed);
    proxy.drop_connections(0.5, 500, 30_000);
    let config = f.path("lapse.yaml");
    let (mut runs, mut partial) = (0, 0);
    // The pool keeps few connections: repeat from the seed until some were cut mid-stream.
    for round in 0..4 {
        if round > 0 {
            reset_sql(&f, &seed).await;
        }
        loop {
            runs += 1;
            let ctx = format!("{name}, run {runs}");
            let (code, _) = timed_run(&config, 4, &ctx).await;
            partial += usize::from(code == 1);
            let done = check_now(&f, &seed, &oracle, &ctx).await;
            if done == oracle.total() && code == 0 {
                break;
            }
            assert!(runs < 40, "{ctx}: not converged ({done} of {})", oracle.total());
        }
        if proxy.counters().dropped_mid_stream.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    let k = proxy.counters();
    let drops = k.dropped_mid_stream.load(Ordering::SeqCst);
    eprintln!(
        "[faults] FIGURES {name}: connections={} dropped_mid_stream={drops} runs={runs} partial_runs={partial} lost=0",
        k.connections.load(Ordering::SeqCst)
    );
    assert!(drops > 0, "no connection was dropped");
}

/// The database goes away during a run (every connection cut, new ones refused for two seconds,
/// as in a restart): the run ends with exit 1 and a report saying what failed, or finishes after
/// reconnecting; nothing outside policy is destroyed; the re-run converges.
async fn sql_restart_mid_run(b: Backend) {
    let name = format!("{b:?} restart");
    let (f, seed, proxy) = sql_behind_proxy(b, &name).await;
    let oracle = SqlOracle::of(&seed);
    let config = f.path("lapse.yaml");
    let t = Instant::now();
    let child = lapse_cmd(&config, 1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first commits, then "restart".
    loop {
        assert!(t.elapsed() < BOUND, "{name}: no commit seen");
        if journal_exists(&f).await && f.db.count("SELECT COUNT(*) FROM lapse_journal").await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.refuse(true);
    proxy.kill_all();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.refuse(false);
    let out = tokio::time::timeout(BOUND, child.wait_with_output()).await.expect("bounded").unwrap();
    let code = out.status.code().unwrap_or(-1);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(matches!(code, 0 | 1), "{name}: exit {code}:\n{text}");
    let done = check_now(&f, &seed, &oracle, &format!("{name}, after the restart")).await;
    if code == 1 {
        let r = f.report("run");
        assert_eq!(r["status"], "partial", "{name}: {r}");
    } else {
        assert_eq!(done, oracle.total(), "{name}: exit 0 but not everything done");
    }
    let (rc, rout) = timed_run(&config, 4, &format!("{name}, re-run")).await;
    assert_eq!(rc, 0, "{name}: re-run failed:\n{rout}");
    let after = check_now(&f, &seed, &oracle, &format!("{name}, after the re-run")).await;
    assert_eq!(after, oracle.total(), "{name}: the re-run did not converge");
    let k = proxy.counters();
    eprintln!(
        "[faults] FIGURES {name}: first_run_exit={code} committed_before_rerun={done}/{} killed={} refused={} lost=0",
        oracle.total(),
        k.killed.load(Ordering::SeqCst),
        k.refused.load(Ordering::SeqCst)
    );
    assert!(k.killed.load(Ordering::SeqCst) > 0, "no live connection was cut");
}

/// The server commits a batch and the connection drops before lapse reads the acknowledgement
/// (cut just after the `COMMIT` went out): the batch is in the journal, written in its
/// transaction, and the run records it from there: every deleted row in the evidence and the
/// counts, the run `partial` (those records were not re-checked), the rows after it deleted by
/// the next batches. Before, the batch's records were in the journal only, and the rows after
/// it were journaled under its number again.
///
/// With `cascade`, the policy deletes each person's orders with them, so its batches are
/// destroyed by their candidates (`Connector::destroy`), not by their own statements: the
/// batch's call is retried after the lost connection, found nothing left and counted the rows
/// as gone concurrently, their records in the journal only (the same defect on the other path).
async fn sql_lost_commit_acknowledgement(b: Backend, cascade: bool) {
    let f = people(b, 40, cascade, false, "").await;
    f.policy("people", &people_policy("delete", cascade));
    let proxy = proxy_in_front(&f, 7).await;
    // Batch 1 commits; batch 2's COMMIT reaches the server, its acknowledgement does not.
    proxy.cut_after_commit(1);
    let run = f.lapse(&["run", "--batch-size", "10"]);
    let k = proxy.counters();
    eprintln!(
        "[faults] FIGURES {b:?} lost commit acknowledgement: commits={} cut={}",
        k.commits.load(Ordering::SeqCst),
        k.commits_cut.load(Ordering::SeqCst)
    );
    run.code(1);
    assert_eq!(proxy.counters().commits_cut.load(Ordering::SeqCst), 1, "one COMMIT cut");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 0, "every lapsed row deleted");
    let r = f.report("run");
    let p = &r["policies"][0];
    assert_eq!(p["deleted"], 40, "{p}");
    assert_eq!(r["status"], "partial", "{r}");
    let errors = p["errors"].to_string();
    assert!(errors.contains("batch 2 was committed but its acknowledgement was lost"), "{errors}");
    assert_eq!(evidence_records(&f.path("reports")).len(), 40, "every deleted record in the evidence");
    assert_eq!(f.db.journal_records().await, 40);
    let batches = f.db.count("SELECT COUNT(DISTINCT batch_no) FROM lapse_journal").await;
    assert_eq!(batches, f.db.count("SELECT COUNT(*) FROM lapse_journal").await, "no batch number given twice");
    if cascade {
        assert_eq!(f.db.count("SELECT COUNT(*) FROM orders").await, 0, "every order deleted with its person");
        // Batch 2's own orders went with it, but its lost reply was what counted them.
        assert_eq!(p["dependents_deleted"]["orders"], 30, "{p}");
        assert!(errors.contains("rows deleted with them in dependent tables are not counted"), "{errors}");
        assert_eq!(p["stages"][0]["skipped_concurrently"], 0, "nothing counted as gone concurrently: {p}");
    }
    f.lapse(&["run"]).ok();
    assert_eq!(f.report("run")["policies"][0]["rows_due"], 0);
}

/// A database that stops answering without closing its connections (a network partition, a
/// failover behind a stale address): the run is abandoned after `defaults.stall_seconds`
/// without progress (exit 1, said), instead of waiting for ever; what it committed is in its
/// evidence and journal, and the next run accounts for it and finishes (before, the statement
/// waited for ever, and in `schedule` every later job with it; found by a review).
async fn sql_silent_database(b: Backend) {
    let f = people(b, 200, false, false, "").await;
    f.policy("people", &people_policy("delete", false));
    let config = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let config = config.replace("    url_file: db.url\n", "    url_file: db.url\n    lock_wait: 1\n");
    std::fs::write(f.path("lapse.yaml"), format!("{config}defaults:\n  stall_seconds: 3\n")).unwrap();
    let proxy = proxy_in_front(&f, 11).await;
    let child = spawn_run(&f);
    // Some batches committed (read past the proxy), then the network goes silent.
    assert!(poll_until(&f, "SELECT 170 - COUNT(*) FROM people").await, "{b:?}: three batches committed");
    proxy.freeze(true);
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("the run ended by itself")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{b:?}: {text}");
    assert!(text.contains("no progress for 3 s (defaults.stall_seconds)"), "{b:?}: {text}");
    assert!(
        !f.path("reports").read_dir().unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("lapse-run-")
            && e.file_name().to_string_lossy().ends_with(".json")),
        "{b:?}: no report"
    );
    proxy.freeze(false);
    proxy.kill_all();
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 0, "{b:?}: the next run finished the job");
    assert_eq!(evidence_records(&f.path("reports")).len(), 200, "{b:?}: every record in the evidence, once");
    let r = f.report("run");
    assert_eq!(r["interrupted_runs"].as_array().map(Vec::len), Some(1), "{b:?}: the abandoned run accounted for: {r}");
    assert_eq!(f.db.journal_records().await, 200, "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_silent_database_is_abandoned() {
    if Backend::Postgres.enabled() {
        sql_silent_database(Backend::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_silent_database_is_abandoned() {
    if Backend::MySql.enabled() {
        sql_silent_database(Backend::MySql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_commit_acknowledgement() {
    if Backend::Postgres.enabled() {
        sql_lost_commit_acknowledgement(Backend::Postgres, false).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lost_commit_acknowledgement() {
    if Backend::MySql.enabled() {
        sql_lost_commit_acknowledgement(Backend::MySql, false).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_commit_acknowledgement_of_a_cascading_batch() {
    if Backend::Postgres.enabled() {
        sql_lost_commit_acknowledgement(Backend::Postgres, true).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lost_commit_acknowledgement_of_a_cascading_batch() {
    if Backend::MySql.enabled() {
        sql_lost_commit_acknowledgement(Backend::MySql, true).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_drops_converge() {
    if Backend::Postgres.enabled() {
        sql_drops_converge(Backend::Postgres).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connection_drops_converge() {
    if Backend::MySql.enabled() {
        sql_drops_converge(Backend::MySql).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_run() {
    if Backend::Postgres.enabled() {
        sql_restart_mid_run(Backend::Postgres).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restart_mid_run() {
    if Backend::MySql.enabled() {
        sql_restart_mid_run(Backend::MySql).await
    }
}

// ------------------------------------------------------------------------ local resources ---

const ROWS_TABLE: &str = "(id BIGINT PRIMARY KEY, email TEXT, created_at {TS})";

fn rows_policy(name: &str) -> String {
    format!(
        "name: {name}\ndataset:\n  connection: db\n  table: {name}\n  key: id\npersonal:\n  email: {{ category: email }}\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\n\
         guardrail:\n  max_share: 100%\n"
    )
}

async fn insert_lapsed(f: &Fixture, table: &str, n: usize) {
    let rows: Vec<String> = (1..=n).map(|i| format!("({i}, 'person{i}@example.com', '2019-03-01 00:00:00')")).collect();
    f.db.exec(&format!("INSERT INTO {table} VALUES {}", rows.join(", "))).await;
}

/// The volume of the reports fills up part-way through a run (here: the file-size limit, which
/// fails the evidence file's writes as a full disk would). Before, the run went on destroying
/// with every later policy, one batch each, and then wrote no report at all. Now the policy
/// that met the failure stops, no later policy starts (its rows are all still there), and the
/// report is written: `incomplete`, the evidence file bound as it was written (cut back to its
/// last whole line), the journal holding every committed batch, the policy that stopped shown
/// as not verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_evidence_volume_stops_destruction_and_the_report_says_so() {
    let b = Backend::Postgres;
    if !b.enabled() {
        return;
    }
    let ts = b.ts();
    let schema = ["a_first", "b_second", "c_third"]
        .map(|t| format!("CREATE TABLE {t} {};", ROWS_TABLE.replace("{TS}", ts)))
        .join("\n");
    let f = Fixture::new(b, &schema).await;
    for (t, n) in [("a_first", 40), ("b_second", 400), ("c_third", 30)] {
        insert_lapsed(&f, t, n).await;
        f.policy(t, &rows_policy(t));
    }
    let public = f.sign_reports();
    // A limit the first policy's evidence (40 lines of about 300 bytes) fits in, the second's
    // not; SIGXFSZ ignored, so that a write past it fails (EFBIG) instead of killing lapse.
    let out = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec prlimit --fsize=30000 \"$0\" \"$@\""])
        .arg(crate::common::lapse_bin())
        .args(["run", "--yes", "--batch-size", "20", "--cutoff", crate::common::CUTOFF, "-c"])
        .arg(f.path("lapse.yaml"))
        .env("LAPSE_LOG", "lapse=info")
        .env_remove("LAPSE_CONFIG")
        .output()
        .unwrap();
    let r = crate::common::Run::from(out);
    r.code(1);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    let rep = f.report("run");
    assert_eq!(rep["status"], "incomplete", "{}", r.stderr);
    let pol = |name: &str| rep["policies"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let (a, bb, c) = (pol("a_first"), pol("b_second"), pol("c_third"));
    assert_eq!(a["outcome"], "done");
    assert_eq!(a["deleted"], 40);
    assert_eq!(bb["outcome"], "failed");
    let b_errors = bb["errors"].to_string();
    assert!(b_errors.contains("evidence file"), "{b_errors}");
    let b_deleted = bb["deleted"].as_u64().unwrap();
    assert!(b_deleted > 0 && b_deleted < 400, "the second policy stopped part-way: {b_deleted}");
    assert!(
        bb["verification"]["checked"].as_u64().unwrap() < b_deleted && bb["verification"]["verified"] == false,
        "{}",
        bb["verification"]
    );
    // Not started: nothing of it destroyed.
    assert_eq!(c["outcome"], "failed");
    assert!(c["errors"].to_string().contains("not started"), "{}", c["errors"]);
    assert_eq!(c["deleted"], 0);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM c_third").await, 30);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM a_first").await, 0);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM b_second").await, 400 - b_deleted as i64);
    // Every committed batch is in the journal, written in its own transaction.
    assert_eq!(f.db.journal_records().await, 40 + b_deleted as i64);

    // The evidence file as written: whole lines, as many as the report says, and the report
    // set verifies.
    let ev = rep["evidence"].clone();
    let text = std::fs::read_to_string(f.path("reports").join(ev["file"].as_str().unwrap())).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    assert_eq!(text.lines().count() as u64, ev["records"].as_u64().unwrap());
    assert!(text.lines().count() >= 40 && (text.lines().count() as u64) < 40 + b_deleted);
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let v =
        f.lapse(&["report", "verify", f.path("reports").to_str().unwrap(), "--public-key", public.to_str().unwrap()]);
    v.ok();
    assert!(v.stdout.contains("says its evidence file was cut short by a write error"), "{}", v.stdout);

    // The certificate does not call that a pass.
    let html = f.render_html(&["--public-key", public.to_str().unwrap()]);
    assert!(html.contains("NOT VERIFIED"), "the stopped policy's re-check is shown as not done");
    assert!(!html.contains("class=\"good\">Pass"), "the certificate says Pass");

    // The report says its evidence is incomplete (signed with it), and so does its CSV.
    assert_eq!(rep["evidence_incomplete"], true);
    let csv = std::process::Command::new(crate::common::lapse_bin())
        .args(["report", "render", "--format", "csv"])
        .arg(f.latest("run", ".json"))
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut csv = csv::Reader::from_reader(csv.as_bytes());
    let at = csv.headers().unwrap().iter().position(|h| h == "evidence_incomplete").expect("the column");
    let cells: Vec<String> = csv.records().map(|r| r.unwrap()[at].to_string()).collect();
    assert!(!cells.is_empty() && cells.iter().all(|c| c == "true"), "on every policy's row: {cells:?}");
    let missing = 40 + b_deleted - text.lines().count() as u64;
    assert!(missing > 0, "the test needs batches committed after the last line");

    // With room again, the next run finishes the job, and writes the lines of the batches
    // committed after the evidence stopped from the journal (before, those records reached no
    // evidence file: a lookup answered NOTHING FOUND and `verify --journal` OK; found by a
    // read-only review).
    f.lapse(&["run", "--batch-size", "20"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM b_second").await, 0);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM c_third").await, 0);
    let next = f.report("run");
    assert!(next.get("evidence_incomplete").is_none(), "{}", next["evidence_incomplete"]);
    let b2 = next["policies"].as_array().unwrap().iter().find(|p| p["name"] == "b_second").unwrap().clone();
    // Recovered evidence, not destruction of this run's: counted apart from `reconciled` (the
    // first report counted those records; found by a review).
    assert_eq!(b2["evidence_recovered"].as_u64(), Some(missing), "{b2}");
    assert_eq!(b2["reconciled"].as_u64(), Some(0), "{b2}");
    let text2 = std::fs::read_to_string(f.path("reports").join(next["evidence"]["file"].as_str().unwrap())).unwrap();
    let run1 = rep["run_id"].as_str().unwrap();
    let recovered = text2.lines().filter(|l| l.contains(&format!("\"reconciled_from\":\"{run1}\""))).count() as u64;
    assert_eq!(recovered, missing);
    // Once: a third run reconciles nothing more.
    f.lapse(&["run", "--batch-size", "20"]).ok();
    let third = f.report("run");
    assert!(
        third["policies"].as_array().unwrap().iter().all(|p| p["reconciled"].as_u64().unwrap_or(0) == 0),
        "{third}"
    );
    f.lapse(&["report", "verify", f.path("reports").to_str().unwrap(), "--public-key", public.to_str().unwrap()]).ok();
}

/// A SQLite COMMIT that fails with an I/O error (here the file-size limit, met by the WAL):
/// SQLite rolls back by itself, the driver's own ROLLBACK then fails and it kept counting the
/// connection as in a transaction, so every later batch on it failed with "begin_with at
/// non-zero transaction depth" (found by a read-only review). Now such a connection is closed
/// and replaced: the failed batches are said as I/O errors, and later batches may go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_commit_failed_by_an_io_error_leaves_no_stuck_connection() {
    let f = Fixture::new(
        Backend::Sqlite,
        "CREATE TABLE t (id BIGINT PRIMARY KEY, email TEXT, pad TEXT, created_at TIMESTAMP);",
    )
    .await;
    let rows: Vec<String> = (1..=2000)
        .map(|i| format!("({i}, 'person{i}@example.com', '{}', '2019-03-01 00:00:00')", "x".repeat(1000)))
        .collect();
    for chunk in rows.chunks(500) {
        f.db.exec(&format!("INSERT INTO t VALUES {}", chunk.join(", "))).await;
    }
    f.policy("t", &rows_policy("t"));
    let out = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec prlimit --fsize=819200 \"$0\" \"$@\""])
        .arg(crate::common::lapse_bin())
        .args(["run", "--yes", "--batch-size", "200", "--cutoff", crate::common::CUTOFF, "--log-format", "text", "-c"])
        .arg(f.path("lapse.yaml"))
        .env_remove("LAPSE_CONFIG")
        .output()
        .unwrap();
    let r = crate::common::Run::from(out);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(
        r.stderr.contains("disk I/O error"),
        "the limit must fail a commit for this test to mean anything:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("non-zero transaction depth"), "{}", r.stderr);
    let rep = f.report("run");
    assert!(!rep["policies"][0]["errors"].to_string().contains("transaction depth"), "{}", rep["policies"][0]);
    // Every row is either deleted (and journaled) or still there.
    let left = f.db.count("SELECT COUNT(*) FROM t").await as u64;
    assert_eq!(left + rep["policies"][0]["deleted"].as_u64().unwrap(), 2000);
}

/// A row the application keeps locked (a session idle in its transaction) held a PostgreSQL
/// batch for ever, and with it a scheduler's every later tick. The connection's `lock_wait`
/// bounds the wait: the batch holding the row fails after it (its other rows are rolled back
/// with it: a batch is one transaction), the later batches are destroyed, the run ends
/// `partial` with the lock named, and the next run, the lock gone, destroys the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_by_another_session_bounds_the_wait() {
    for b in [Backend::Postgres, Backend::MySql] {
        if !b.enabled() {
            continue;
        }
        let f = Fixture::new(b, &format!("CREATE TABLE tickets {ROWS_TABLE};")).await;
        insert_lapsed(&f, "tickets", 50).await;
        f.policy("tickets", &rows_policy("tickets"));
        f.config("    lock_wait: 1\n");
        // One session of its own, its transaction left open.
        let lock = "BEGIN; SELECT id FROM tickets WHERE id = 17 FOR UPDATE;";
        let mut locker = match b {
            Backend::Postgres => {
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&f.db.url).await.unwrap();
                sqlx::raw_sql(lock).execute(&mut c).await.unwrap();
                (Some(c), None)
            }
            _ => {
                let mut c = <sqlx::MySqlConnection as sqlx::Connection>::connect(&f.db.url).await.unwrap();
                sqlx::raw_sql(lock).execute(&mut c).await.unwrap();
                (None, Some(c))
            }
        };
        let t = Instant::now();
        let r = f.lapse(&["run", "--batch-size", "10"]);
        let took = t.elapsed();
        r.code(1);
        assert!(took < Duration::from_secs(90), "{b:?}: the run waited {took:?}");
        let rep = f.report("run");
        assert_eq!(rep["status"], "partial", "{b:?}: {}", r.stderr);
        let p = &rep["policies"][0];
        assert_eq!(p["deleted"], 40, "{b:?}: {p}");
        assert_eq!(p["failed"], 10, "{b:?}: {p}");
        assert!(p["errors"].to_string().to_lowercase().contains("lock"), "{b:?}: {}", p["errors"]);
        assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets WHERE id BETWEEN 11 AND 20").await, 10);
        assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 10);
        match &mut locker {
            (Some(c), _) => sqlx::raw_sql("ROLLBACK").execute(c).await.map(|_| ()),
            (_, Some(c)) => sqlx::raw_sql("ROLLBACK").execute(c).await.map(|_| ()),
            _ => unreachable!(),
        }
        .unwrap();
        f.lapse(&["run"]).ok();
        assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 0, "{b:?}");
        // Out of range: refused with where it is.
        f.config("    lock_wait: 0\n");
        f.lapse(&["validate"]).code(2).stderr_has("lock_wait must be from 1 to 3600");
    }
}

/// PostgreSQL: a hold committed by a session that had locked the held person's row, while
/// lapse's batch statement waited for that lock. Under READ COMMITTED that statement read the
/// holds table as of its start and, once the lock was free, deleted the row without the hold
/// (found by a review). A statement after it, in the batch's transaction, finds the hold
/// (`Builder::holds_probe`): the batch is taken again with its rows locked first, and the held
/// person is kept, with batches of 10 and of 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_committed_while_a_batch_waits_for_its_row_is_honoured() {
    if !Backend::Postgres.enabled() {
        return;
    }
    for batch in ["10", "1000"] {
        let f = people(Backend::Postgres, 30, false, true, "").await;
        f.policy("people", &people_policy("delete", false));
        let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&f.db.url).await.unwrap();
        sqlx::raw_sql(
            "BEGIN; SELECT id FROM people WHERE id = 7 FOR UPDATE; \
             INSERT INTO legal_holds (id, subject, policy, expires_at) VALUES ('LATE', 'S-7', NULL, NULL);",
        )
        .execute(&mut locker)
        .await
        .unwrap();
        let run = lapse_cmd(&f.path("lapse.yaml"), batch.parse().unwrap())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Until a statement of the run waits for the row's lock.
        let waiting = poll_until(
            &f,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .await;
        sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
        let out = run.wait_with_output().await.unwrap();
        assert!(waiting, "batch {batch}: the run never waited for the row");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "batch {batch}: {stderr}");
        assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 1, "batch {batch}: only the held person is left");
        assert_eq!(
            f.db.count("SELECT COUNT(*) FROM people WHERE id = 7").await,
            1,
            "batch {batch}: the held person kept"
        );
        let p = &f.report("run")["policies"][0];
        assert_eq!(p["deleted"], 29, "batch {batch}: {p}");
    }
}

/// Runs of different policies (separate CronJobs, or a person's manual run beside the
/// schedule) may share a report directory. Each read the chain's head and then wrote its
/// report: two that ended together both named the same previous report, the chain forked and
/// `report verify` refused a directory nobody had tampered with. The head is now read and the
/// report written under a lock of the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_of_other_policies_keep_one_chain() {
    let b = Backend::Sqlite;
    let tables: Vec<String> = (1..=6).map(|i| format!("t{i}")).collect();
    let schema =
        tables.iter().map(|t| format!("CREATE TABLE {t} {};", ROWS_TABLE.replace("{TS}", b.ts()))).collect::<String>();
    let f = Fixture::new(b, &schema).await;
    for t in &tables {
        insert_lapsed(&f, t, 5).await;
        f.policy(t, &rows_policy(t));
    }
    let public = f.sign_reports();
    // Three rounds of six runs at once, one policy each.
    for _ in 0..3 {
        std::thread::scope(|s| {
            let runs: Vec<_> = tables.iter().map(|t| s.spawn(|| f.lapse(&["run", "--policy", t]))).collect();
            for r in runs {
                r.join().unwrap().ok();
            }
        });
    }
    let reports = f.path("reports");
    let mut seqs: Vec<u64> = lapse::integrity::run_reports(&reports)
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            v["sequence"].as_u64().unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=18).collect::<Vec<u64>>(), "one chain, no two reports in one place");
    f.lapse(&["report", "verify", reports.to_str().unwrap(), "--public-key", public.to_str().unwrap()]).ok();
    for t in &tables {
        assert_eq!(f.db.count(&format!("SELECT COUNT(*) FROM {t}")).await, 0);
    }
}

/// A hold moves from one subject to another while an in-place anonymize batch is begun beside
/// the batch before it (its rows read and locked, its `UPDATE` not yet run): the row that became
/// held is kept and the row that became due is anonymized, each recorded as what happened to it.
/// Before, the batch's `UPDATE` over its key range re-applied the due filter and compared only
/// the count: one row fewer and one more made the same count, so the evidence named the held
/// row (kept, recorded anonymized) and not the other (anonymized without evidence). A trigger
/// that sleeps in the first batch's `UPDATE` holds the second batch between its read and its
/// update while the hold moves.
async fn sql_hold_moved_under_an_in_place_batch(b: Backend) {
    let f = people(b, 30, false, true, "").await;
    // Person 15 is held: the second batch is 11-14 and 16-21, its key range 11..21.
    f.db.exec("INSERT INTO legal_holds (id, subject, policy, expires_at) VALUES ('H-A', 'S-15', NULL, NULL)").await;
    match b {
        Backend::Postgres => {
            f.db.exec(
                "CREATE FUNCTION slow_five() RETURNS trigger AS $$ BEGIN IF NEW.id = 5 THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
                 CREATE TRIGGER slow_five BEFORE UPDATE ON people FOR EACH ROW EXECUTE FUNCTION slow_five();",
            )
            .await
        }
        _ => {
            f.db.exec(
                "CREATE TRIGGER slow_five BEFORE UPDATE ON people FOR EACH ROW BEGIN IF NEW.id = 5 THEN DO SLEEP(3); END IF; END",
            )
            .await
        }
    }
    f.policy("people", &people_policy("anonymize", false));
    let child = spawn_run(&f);
    // The first batch's UPDATE sleeps on person 5; the second batch is begun meanwhile.
    let sleeping = match b {
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()"
        }
        _ => "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User sleep' AND DB = DATABASE()",
    };
    let t = Instant::now();
    while f.db.count(sleeping).await == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "{b:?}: the first batch never reached its sleep");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The hold moves from person 15 to person 12, in one transaction.
    f.db.exec(
        "BEGIN; DELETE FROM legal_holds WHERE id = 'H-A'; INSERT INTO legal_holds (id, subject, policy, expires_at) VALUES ('H-B', 'S-12', NULL, NULL); COMMIT;",
    )
    .await;
    let out = tokio::time::timeout(BOUND, child.wait_with_output()).await.expect("bounded").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(matches!(out.status.code(), Some(0 | 1)), "{b:?}: {text}");
    // The race happened: the second batch's update changed one row fewer than it had read.
    assert!(
        text.contains(
            "rows changed under the batch; nothing of it committed; taking the batch again by its candidates"
        ),
        "{b:?}: the hold moved before the second batch was read:\n{text}"
    );
    let left = f.db.texts(&format!("SELECT {} FROM people WHERE email IS NOT NULL ORDER BY id", f.db.text("id"))).await;
    let left: Vec<String> = left.into_iter().flatten().collect();
    assert_eq!(left, vec!["12".to_string()], "{b:?}: only the newly held person keeps their e-mail:\n{text}");
    // The evidence names exactly the rows anonymized: every person but 12, 15 among them.
    assert_eq!(evidence_records(&f.path("reports")).len(), 29, "{b:?}: one evidence line per anonymized row:\n{text}");
    let reports = f.path("reports");
    let dir = reports.to_str().unwrap();
    let found = |id: i64| {
        let r = f.lapse(&["report", "lookup", dir, "--key", &id.to_string(), "--policy", "people", "--json"]);
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .map_or(0, |v| v["destroyed"].as_array().map_or(0, Vec::len))
    };
    assert_eq!(found(1), 1, "{b:?}: person 1 is in the evidence:\n{text}");
    assert_eq!(found(15), 1, "{b:?}: person 15, anonymized, is in the evidence:\n{text}");
    assert_eq!(found(12), 0, "{b:?}: person 12, kept by the hold, is not:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hold_moved_under_an_in_place_batch() {
    if Backend::Postgres.enabled() {
        sql_hold_moved_under_an_in_place_batch(Backend::Postgres).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_hold_moved_under_an_in_place_batch() {
    if Backend::MySql.enabled() {
        sql_hold_moved_under_an_in_place_batch(Backend::MySql).await
    }
}

/// A batch destroyed by its candidates loses its connection as its `COMMIT` goes out, and the
/// server never gets the `COMMIT` (rolled back); meanwhile a row of the batch is put under a
/// hold (`whole`: every row of it), so the retry destroys all of the batch but that row (none of
/// it). The journal then has the retry's records only (nothing under the batch's number):
/// nothing was lost with the connection, and the run says nothing of the kind (before the
/// second and third reviews of 11da415, a retry short of its batch after a lost connection was
/// reported as a lost acknowledgement, or as one the journal could not tell, and the policy
/// failed).
async fn sql_commit_lost_with_its_connection(b: Backend, whole: bool) {
    let f = people(b, 40, true, true, "").await;
    f.policy("people", &people_policy("delete", true));
    let proxy = proxy_in_front(&f, 7).await;
    // Batch 1 commits; batch 2's COMMIT is dropped with its connection.
    proxy.cut_instead_of_commit(1);
    let child = wait_for_cut(&proxy, spawn_run(&f)).await;
    // Before the retry (lapse first asks the journal for 1.5 s): person 15 is held, or every
    // person of the batch (11 to 20).
    let held: Vec<i64> = if whole { (11..=20).collect() } else { vec![15] };
    hold_people(&f, held.iter().copied()).await;
    let (kept, gone) = (held.len() as i64, 40 - held.len() as i64);
    let out = tokio::time::timeout(BOUND, child.wait_with_output()).await.expect("bounded").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{b:?}: {text}");
    assert!(!text.contains("acknowledgement was lost") && !text.contains("may have been"), "{b:?}: {text}");
    assert!(text.contains("retrying"), "{b:?}: the batch was retried after its connection was lost: {text}");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, kept, "{b:?}: only the held people are left");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM orders").await, kept, "{b:?}: and their orders");
    let r = f.report("run");
    let p = &r["policies"][0];
    assert_eq!(r["status"], "complete", "{r}");
    assert_eq!(p["deleted"], gone, "{p}");
    assert_eq!(p["dependents_deleted"]["orders"], gone, "{p}");
    assert_eq!(p["stages"][0]["skipped_concurrently"], kept, "{p}");
    assert_eq!(evidence_records(&f.path("reports")).len() as i64, gone);
    assert_eq!(f.db.journal_records().await, gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_lost_with_its_connection() {
    if Backend::Postgres.enabled() {
        sql_commit_lost_with_its_connection(Backend::Postgres, false).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_commit_lost_with_its_connection() {
    if Backend::MySql.enabled() {
        sql_commit_lost_with_its_connection(Backend::MySql, false).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_lost_with_its_connection_then_all_held() {
    if Backend::Postgres.enabled() {
        sql_commit_lost_with_its_connection(Backend::Postgres, true).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_commit_lost_with_its_connection_then_all_held() {
    if Backend::MySql.enabled() {
        sql_commit_lost_with_its_connection(Backend::MySql, true).await
    }
}

/// PostgreSQL: a batch's `COMMIT` reaches the server, which does not make it visible until the
/// test lets it (a deferred constraint trigger waits at commit for an advisory lock the test
/// holds, as a synchronous standby would make it wait) while it holds the batch's row locks,
/// and the connection is cut meanwhile. lapse asks
/// the journal for 1.5 s (nothing yet); before its retry every person of the batch is held, so
/// the retry locks none of the batch's rows and does not wait for the lost attempt. It then
/// waits for the rows' locks (`Connector::settle`) and finds the lost attempt's commit in the
/// journal: recorded, and the policy fails saying so. (Before the fourth review of 11da415, the
/// journal was read once at that point, found nothing, and the batch's 10 records stayed in the
/// journal only: exit 0.)
///
/// Without `cascade` the batch is destroyed by its own statements (`begin_next`); after the lost
/// acknowledgement the journal shows nothing for 1.5 s, and the batch is taken again by its
/// candidates, whose `DELETE` waits for the rows' locks and finds them gone. That attempt starts
/// knowing the connection was lost before (before the fifth review: it did not, and counted the
/// 10 rows as gone concurrently, exit 0).
/// With `budget`, persons 21–40 are held and the guardrail allows 50 %: batch 2 fills the run's
/// budget, so no room is left to take it again until the journal has been asked.
/// With `hold`, every person of batch 2 is held once its connection is cut.
async fn postgres_commit_visible_late(cascade: bool, budget: bool, hold: bool) {
    if !Backend::Postgres.enabled() {
        return;
    }
    let b = Backend::Postgres;
    let f = people(
        b,
        40,
        cascade,
        true,
        " CREATE FUNCTION slow_commit() RETURNS trigger AS $$ BEGIN IF OLD.id = 15 THEN PERFORM pg_advisory_xact_lock(4242); END IF; RETURN OLD; END $$ LANGUAGE plpgsql;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER DELETE ON people DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .await;
    let mut policy = people_policy("delete", cascade);
    if budget {
        policy = policy.replace("max_share: 100%", "max_share: 50%");
        hold_people(&f, 21..=40).await;
    }
    f.policy("people", &policy);
    let proxy = proxy_in_front(&f, 7).await;
    // The commit of batch 2 (which deletes person 15) waits for this lock.
    let mut gate: sqlx::PgConnection = sqlx::Connection::connect(&f.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut gate).await.unwrap();
    // Batch 2's COMMIT goes through; its connection is cut 300 ms later, during the commit.
    proxy.cut_after_commit(1);
    let child = wait_for_cut(&proxy, spawn_run(&f)).await;
    // Still committing (waiting for the test's lock), and lapse still asking the journal. With
    // `hold`, every person of batch 2 is held before its retry, which then destroys nothing of
    // it and waits for the rows' locks; without, the retry's `DELETE` waits for them. Only then
    // the commit goes on. (Where lapse does not wait, it goes on after 20 s.)
    let waiting = if hold {
        hold_people(&f, 11..=20).await;
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'"
    } else {
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND wait_event_type = 'Lock' AND wait_event <> 'advisory'"
    };
    let settled = poll_until(&f, waiting).await;
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut gate).await.unwrap();
    let out = tokio::time::timeout(BOUND, child.wait_with_output()).await.expect("bounded").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(settled, "lapse never waited for the batch's row locks:\n{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let destroyed = if budget { 20 } else { 40 };
    let left = f.db.count("SELECT COUNT(*) FROM people").await;
    assert_eq!(left, 40 - destroyed, "the late commit deleted batch 2: {text}");
    let r = f.report("run");
    let p = &r["policies"][0];
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(p["deleted"], destroyed, "{p}");
    let errors = p["errors"].to_string();
    assert!(errors.contains("batch 2 was committed but its acknowledgement was lost"), "{errors}");
    assert!(errors.contains("its 10 records destroyed then are recorded from the journal"), "{errors}");
    assert_eq!(evidence_records(&f.path("reports")).len() as i64, destroyed, "every deleted record in the evidence");
    assert_eq!(f.db.journal_records().await, destroyed);
}

/// A batch destroyed by its own statements loses its connection during its `COMMIT`, and the
/// commit becomes visible only after lapse's journal lookups gave up on it, but before the batch
/// is taken again by its candidates: their read finds the rows after it (21–30), which the
/// retake destroys under the lost batch's number. The journal then has both attempts' records
/// under that number; the lost one's are recorded from it, not left there alone.
/// With `budget`, 50 people of whom 26–50 are held at the start, under a guardrail of 50 %: a
/// budget of 25 rows, all of them due at the start; the holds are released while batch 2 is lost,
/// so more is due than the budget allows when the batch is taken again.
async fn postgres_commit_visible_before_the_retakes_read(on_lapse: &str, rows: i64, budget: bool) {
    if !Backend::Postgres.enabled() {
        return;
    }
    let b = Backend::Postgres;
    let event = if on_lapse == "delete" { "DELETE" } else { "UPDATE" };
    let f = people(
        b,
        rows,
        false,
        true,
        &format!(" CREATE FUNCTION slow_commit() RETURNS trigger AS $$ BEGIN IF OLD.id = 15 THEN PERFORM pg_advisory_xact_lock(4242); END IF; RETURN OLD; END $$ LANGUAGE plpgsql;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER {event} ON people DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();"),
    )
    .await;
    let mut policy = people_policy(on_lapse, false);
    if budget {
        policy = policy.replace("max_share: 100%", "max_share: 50%");
        hold_people(&f, 26..=rows).await;
    }
    f.policy("people", &policy);
    let public = f.sign_reports();
    let proxy = proxy_in_front(&f, 7).await;
    // The commit of batch 2 (persons 11–20) waits for this lock.
    let mut gate: sqlx::PgConnection = sqlx::Connection::connect(&f.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut gate).await.unwrap();
    proxy.cut_after_commit(1);
    let child = wait_for_cut(&proxy, spawn_run(&f)).await;
    if budget {
        f.db.exec("DELETE FROM legal_holds").await;
    }
    // An exclusive lock on the holds table, queued behind the committing transaction (which read
    // it): every later read of the table queues behind it, so the retake's read of its
    // candidates waits until the commit is through (the lock is then taken and let go at once).
    let url = f.db.url.clone();
    let queued = tokio::spawn(async move {
        let mut c: sqlx::PgConnection = sqlx::Connection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut c).await.unwrap();
        sqlx::query("LOCK TABLE legal_holds IN ACCESS EXCLUSIVE MODE").execute(&mut c).await.unwrap();
        sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
    });
    // Until lapse's read of the candidates waits for the holds table, after its journal lookups.
    let waiting =
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND wait_event_type = 'Lock' AND wait_event = 'relation' AND query NOT LIKE 'LOCK TABLE%'";
    let read_waits = poll_until(&f, waiting).await;
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut gate).await.unwrap();
    tokio::time::timeout(BOUND, queued).await.expect("bounded").unwrap();
    let out = tokio::time::timeout(BOUND, child.wait_with_output()).await.expect("bounded").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(read_waits, "lapse's read of the candidates never waited for the holds table:\n{text}");
    assert!(text.contains("taking the batch again by its candidates"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let left = match on_lapse {
        "delete" => "SELECT COUNT(*) FROM people",
        _ => "SELECT COUNT(*) FROM people WHERE email IS NOT NULL",
    };
    // Within the budget: with it, the retake asks for the 5 rows that batch 1 and the lost batch
    // 2 leave of it (before: 10, and the run destroyed 30, and was reported stopped by the
    // guardrail, exit 3, as if it had destroyed nothing).
    let destroyed = if budget { 25 } else { rows };
    assert_eq!(f.db.count(left).await, rows - destroyed, "every due person's e-mail destroyed: {text}");
    let done = if on_lapse == "delete" { "deleted" } else { "anonymized" };
    let r = f.report("run");
    let p = &r["policies"][0];
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(p[done], destroyed, "{p}");
    assert_eq!(p["guardrail"]["tripped"], budget, "{p}");
    let errors = p["errors"].to_string();
    assert!(errors.contains("batch 2 was committed but its acknowledgement was lost"), "{errors}");
    assert!(errors.contains("its 10 records destroyed then are recorded from the journal"), "{errors}");
    // (Not the batch's own rows read again before the commit was visible, which the late-commit
    // tests cover: the rows after them.)
    assert!(errors.contains("10 of them by that attempt alone, not among the rows taken again"), "{errors}");
    assert_eq!(evidence_records(&f.path("reports")).len() as i64, destroyed, "every deleted record in the evidence");
    assert_eq!(evidence_lines(&f.path("reports")).len() as i64, destroyed, "no record twice");
    assert_eq!(f.db.journal_records().await, destroyed);
    // The run's report holds together with its evidence, and nothing is left to do.
    f.lapse(&["report", "verify", f.path("reports").to_str().unwrap(), "--public-key", public.to_str().unwrap()]).ok();
    if !budget {
        f.lapse(&["run"]).ok();
        assert_eq!(f.report("run")["policies"][0][done], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_before_the_retakes_read_of_a_delete() {
    postgres_commit_visible_before_the_retakes_read("delete", 40, false).await
}

/// The same when the lost batch was the last: the retake's read finds nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_before_the_retakes_read_of_the_last_batch() {
    postgres_commit_visible_before_the_retakes_read("delete", 20, false).await
}

/// The same near the guardrail's budget, with more due than it allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_before_the_retakes_read_near_the_budget() {
    postgres_commit_visible_before_the_retakes_read("delete", 50, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_before_the_retakes_read_of_an_anonymize() {
    postgres_commit_visible_before_the_retakes_read("anonymize", 40, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_late_on_a_cascading_batch() {
    postgres_commit_visible_late(true, false, true).await
}

/// The batch fills the budget: its lookup with no room for a retake finds nothing yet, and it
/// is taken again in the room left once the journal was asked (before: the next batch read its
/// rows as any batch, found them gone and counted them deleted concurrently, exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_late_on_a_batch_that_fills_the_budget() {
    postgres_commit_visible_late(false, true, false).await
}

/// Its rows all held once its connection is cut: its retake reads the rows after them, which it
/// destroys, and then waits for the lost batch's key range (before: it waited for nothing, found
/// only its own records in the journal, and the run exited 0 with batch 2's 10 records in the
/// journal only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_late_on_a_batch_of_its_own_statements_then_held() {
    postgres_commit_visible_late(false, false, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_commit_visible_late_on_a_batch_of_its_own_statements() {
    postgres_commit_visible_late(false, false, false).await
}
