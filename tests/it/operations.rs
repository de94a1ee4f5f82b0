//! Running it like a platform team does, process-level against real databases: the run lock
//! (two workers, exactly one enforces), graceful SIGTERM (the batch in flight finishes and the
//! report tells the truth), and `lapse schedule` (fires on schedule, skips overlaps, stops on
//! SIGTERM after the run in progress).
//!
//! A run is held in the middle of a batch by a row lock the test takes in its own transaction:
//! lapse's destroy locks its batch rows (`SELECT ... FOR UPDATE`) and waits for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use crate::common::{Backend, Fixture, CUTOFF};
use crate::conformance::{seeded, PEOPLE_DELETE as POLICY};

const LAPSED: i64 = 5;

/// `lapse <args> -c lapse.yaml` started in the background, stderr to `log`.
fn spawn(f: &Fixture, args: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(crate::common::lapse_bin());
    cmd.args(args).arg("-c").arg(f.path("lapse.yaml"));
    if args.first() == Some(&"run") {
        cmd.args(["--cutoff", CUTOFF, "--yes"]);
    }
    cmd.env("LAPSE_LOG", "lapse=info")
        .env_remove("LAPSE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start lapse")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig}");
}

/// Waits for the child to exit (at most `limit`); its exit code.
fn wait(child: &mut Child, limit: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("lapse did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session of the test holding row `id` of `people` locked until `release`.
enum RowLock {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl RowLock {
    async fn take(f: &Fixture, id: i64) -> RowLock {
        let sql = format!("SELECT id FROM people WHERE id = {id} FOR UPDATE");
        match f.db.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&f.db.url).await.unwrap();
                c.execute("BEGIN").await.unwrap();
                c.execute(sql.as_str()).await.unwrap();
                RowLock::Pg(c)
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&f.db.url).await.unwrap();
                c.execute("BEGIN").await.unwrap();
                c.execute(sql.as_str()).await.unwrap();
                RowLock::My(c)
            }
            Backend::Sqlite => unreachable!("row locks: PostgreSQL and MariaDB"),
        }
    }

    async fn release(self) {
        match self {
            RowLock::Pg(mut c) => c.execute("ROLLBACK").await.map(|_| ()).unwrap(),
            RowLock::My(mut c) => c.execute("ROLLBACK").await.map(|_| ()).unwrap(),
        }
    }
}

/// Is some session of this database waiting for a row lock (lapse's destroy, held by the test)?
async fn someone_waits(f: &Fixture) -> bool {
    let sql = match f.db.backend {
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        }
        Backend::MySql => "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
        Backend::Sqlite => unreachable!(),
    };
    f.db.count(sql).await > 0
}

fn run_reports(f: &Fixture) -> Vec<serde_json::Value> {
    run_reports_in(&f.path("reports"))
}

fn run_reports_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    n.starts_with("lapse-run-") && n.ends_with(".json")
                })
                .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|r| r["sequence"].as_u64());
    v
}

fn deleted(r: &serde_json::Value) -> i64 {
    r["policies"].as_array().unwrap().iter().map(|p| p["deleted"].as_i64().unwrap()).sum()
}

async fn two_workers(b: Backend) {
    let f = seeded(b).await;
    f.policy("people", POLICY);
    let lock = RowLock::take(&f, 1).await;
    let mut a = spawn(&f, &["run"], &f.path("a.log"));
    until("worker A waiting inside its first batch", Duration::from_secs(60), async || someone_waits(&f).await).await;
    // B starts while A enforces: it takes no lock, changes nothing, writes no run report.
    let r = f.lapse(&["run"]);
    r.code(6).stderr_has("policy 'people' is being enforced by another lapse worker");
    assert_eq!(run_reports(&f).len(), 0, "B wrote no run report");
    lock.release().await;
    assert_eq!(wait(&mut a, Duration::from_secs(60)), 0, "{}", std::fs::read_to_string(f.path("a.log")).unwrap());
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8 - LAPSED);
    let reports = run_reports(&f);
    assert_eq!(reports.len(), 1);
    assert_eq!(deleted(&reports[0]), LAPSED);
    // The lock died with A: a later worker runs (and finds nothing left to do).
    f.lapse(&["run"]).ok();
    assert_eq!(deleted(&f.report("run")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_exactly_one_enforces_postgres() {
    two_workers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_exactly_one_enforces_mariadb() {
    two_workers(Backend::MySql).await;
}

/// SQLite: the run lock is an OS file lock next to the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_exactly_one_enforces_sqlite() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let db_file = f.db.url.trim_start_matches("sqlite://").to_string();
    // The test holds the database's write lock, so worker A waits inside its run.
    // (WAL first, as lapse sets it: switching journal modes would itself wait for the lock.)
    let mut hold = sqlx::SqliteConnection::connect(&f.db.url).await.unwrap();
    hold.execute("PRAGMA journal_mode = WAL").await.unwrap();
    hold.execute("BEGIN IMMEDIATE").await.unwrap();
    let mut a = spawn(&f, &["run"], &f.path("a.log"));
    let lock_file = || {
        let dir = Path::new(&db_file).parent().unwrap().to_path_buf();
        let base = Path::new(&db_file).file_name().unwrap().to_string_lossy().into_owned();
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{base}.lapse-lock-")))
    };
    until("worker A holding its run lock", Duration::from_secs(60), async || {
        lock_file().is_some_and(|p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
        })
    })
    .await;
    f.lapse(&["run"]).code(6).stderr_has("being enforced by another lapse worker");
    hold.execute("ROLLBACK").await.unwrap();
    assert_eq!(wait(&mut a, Duration::from_secs(60)), 0, "{}", std::fs::read_to_string(f.path("a.log")).unwrap());
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8 - LAPSED);
    assert_eq!(run_reports(&f).len(), 1);
}

/// The server ends the session that holds worker A's run lock mid-run (an idle timeout, a DBA,
/// a proxy). If nobody took the lock since, A takes it again and finishes; if another worker
/// did, A stops before its next commit (before, A never noticed, and two workers destroyed at
/// once): the batch whose statement was waiting for a row lock meanwhile is rolled back, as
/// the lock is asked about after a batch's statement, before its commit.
async fn run_lock_session_ended(another_worker_takes_it: bool) {
    let f = seeded(Backend::Postgres).await;
    f.policy("people", POLICY);
    let lock = RowLock::take(&f, 2).await; // batch 1 (row 1) commits, batch 2 (row 2) waits
    let mut a = spawn(&f, &["run", "--batch-size", "1"], &f.path("a.log"));
    until("the second batch waiting", Duration::from_secs(60), async || someone_waits(&f).await).await;
    until("the first batch committed", Duration::from_secs(60), async || {
        f.db.count("SELECT COUNT(*) FROM people").await == 8 - 1
    })
    .await;
    let mut admin = sqlx::PgConnection::connect(&f.db.url).await.unwrap();
    let (pid, key): (i32, i64) = sqlx::query_as(
        "SELECT pid, (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.unwrap();
    assert!(ended);
    if another_worker_takes_it {
        // `pg_terminate_backend` signals the session; it ends (and frees the lock) soon after.
        until("the lock free once its session ended", Duration::from_secs(10), async || {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut admin)
                .await
                .unwrap()
        })
        .await;
    }
    lock.release().await;
    let code = wait(&mut a, Duration::from_secs(60));
    let log = std::fs::read_to_string(f.path("a.log")).unwrap();
    let left = f.db.count("SELECT COUNT(*) FROM people").await;
    let r = f.report("run");
    if another_worker_takes_it {
        assert_eq!(code, 1, "{log}");
        // Batch 1 committed; batch 2, whose statement waited while the lock was lost, was
        // rolled back (asked about after its statement); no batch began after.
        assert_eq!(left, 8 - 1, "{log}");
        assert_eq!(deleted(&r), 8 - left, "the report counts exactly what is gone");
        let errors = r["policies"][0]["errors"].to_string();
        assert!(errors.contains("another worker holds the lock now"), "{errors}");
        assert_eq!(r["policies"][0]["outcome"], "failed");
    } else {
        assert_eq!(code, 0, "{log}");
        assert!(log.contains("taking the lock again"), "{log}");
        assert_eq!(left, 8 - LAPSED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lock_taken_again_when_its_session_ends() {
    run_lock_session_ended(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lock_lost_to_another_worker_stops_the_run() {
    run_lock_session_ended(true).await;
}

/// SIGTERM while a batch waits: the batch finishes, no new batch starts, the report is written,
/// marked incomplete, and counts exactly what is gone; a re-run completes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_and_reports_the_truth() {
    let f = seeded(Backend::Postgres).await;
    f.policy("people", POLICY);
    // A second policy, after `people`: interrupted before it began, it is not counted.
    f.db.exec(
        "CREATE TABLE visits (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(64), created_at TIMESTAMP NOT NULL); \
               INSERT INTO visits VALUES (1, 'v@example.com', '2019-01-01 00:00:00')",
    )
    .await;
    f.policy(
        "zz-visits",
        &POLICY
            .replace("name: people", "name: zz-visits")
            .replace("table: people", "table: visits")
            .replace("  subject: subject\n", "")
            .replace("  full_name: { category: name }\n", ""),
    );
    let lock = RowLock::take(&f, 2).await; // batch 1 (row 1) commits, batch 2 (row 2) waits
    let mut a = spawn(&f, &["run", "--batch-size", "1"], &f.path("a.log"));
    until("the second batch waiting", Duration::from_secs(60), async || someone_waits(&f).await).await;
    signal(&a, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.release().await;
    let code = wait(&mut a, Duration::from_secs(30));
    let log = std::fs::read_to_string(f.path("a.log")).unwrap();
    assert_eq!(code, 1, "interrupted runs exit 1:\n{log}");
    assert!(log.contains("signal received"), "{log}");
    let r = f.report("run");
    assert_eq!(r["status"], "incomplete");
    let gone = 8 - f.db.count("SELECT COUNT(*) FROM people").await;
    assert_eq!(gone, 2, "the batch in flight finished, no further batch started");
    assert_eq!(deleted(&r), gone, "the report counts exactly what is gone");
    assert_eq!(f.db.journal_records().await, gone, "journal agrees");
    // Not claimed done (before, every policy said `done`).
    let policies = r["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{r}");
    assert_eq!(policies[0]["outcome"], "interrupted");
    assert_eq!(policies[1]["name"], "zz-visits");
    assert_eq!(policies[1]["outcome"], "interrupted");
    assert_eq!(policies[1]["rows_total"], 0, "not counted after the signal");
    assert!(policies[1]["errors"][0].as_str().unwrap().starts_with("not started"), "{}", policies[1]);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM visits").await, 1);
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8 - LAPSED);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM visits").await, 0);
}

/// `lapse schedule`: a job every second; the first run is held, later firings are skipped (no
/// overlap); once released the work is done; SIGTERM stops the scheduler cleanly. A second job
/// firing meanwhile waits for the run in progress, not skipped (before, two jobs on one cron
/// each lost about half their runs), and each job's metrics are a textfile of their own,
/// labelled with the job (before, every job rewrote one file: the last job's success hid the
/// other's failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fires_skips_overlaps_and_stops_on_sigterm() {
    let f = seeded(Backend::Postgres).await;
    f.policy("people", POLICY);
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    // The scheduled runs use the real clock: every seeded row older than a year lapses.
    let schedule = "schedule:\n  timezone: Europe/Berlin\n  jobs:\n    - name: every-second\n      cron: \"* * * * * *\"\n      policies: [people]\n    \
                    - name: other\n      cron: \"*/2 * * * * *\"\n      policies: [people]\nmetrics:\n  textfile: metrics/lapse.prom\n";
    std::fs::create_dir_all(f.path("metrics")).unwrap();
    std::fs::write(f.path("lapse.yaml"), format!("{cfg}{schedule}")).unwrap();
    f.lapse(&["validate"]).ok();

    let lock = RowLock::take(&f, 1).await;
    let log = f.path("schedule.log");
    let mut s = spawn(&f, &["schedule", "--log-format", "json"], &log);
    until("a scheduled run waiting", Duration::from_secs(60), async || someone_waits(&f).await).await;
    until("an overlapping firing skipped", Duration::from_secs(30), async || {
        std::fs::read_to_string(&log).unwrap().contains("scheduled run skipped")
    })
    .await;
    let started = |job: &str| {
        let needle = format!("\"job\":\"{job}\"");
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("scheduled run starting") && l.contains(&needle))
            .count()
    };
    let first = if started("other") == 1 { "other" } else { "every-second" };
    let second = if first == "other" { "every-second" } else { "other" };
    until("the other job's firing waiting its turn", Duration::from_secs(30), async || {
        std::fs::read_to_string(&log).unwrap().contains("scheduled run waiting")
    })
    .await;
    lock.release().await;
    until("the held run's report", Duration::from_secs(60), async || !run_reports(&f).is_empty()).await;
    until("the waiting job's run", Duration::from_secs(60), async || started(second) >= 1).await;
    until("both jobs' metrics", Duration::from_secs(60), async || {
        f.path("metrics/lapse-job-every-second.prom").exists() && f.path("metrics/lapse-job-other.prom").exists()
    })
    .await;
    assert!(started(first) >= 1);
    for job in ["every-second", "other"] {
        let prom = std::fs::read_to_string(f.path(&format!("metrics/lapse-job-{job}.prom"))).unwrap();
        assert!(prom.contains(&format!("lapse_run_exit_code{{schedule_job=\"{job}\"}} 0")), "{prom}");
    }
    assert!(!f.path("metrics/lapse.prom").exists(), "no job writes the shared file");
    signal(&s, "TERM");
    let code = wait(&mut s, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("job scheduled") && text.contains("stopping the schedule"), "{text}");
    // Every log line is JSON.
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    let reports = run_reports(&f);
    assert!(!reports.is_empty());
    // Runs never overlapped.
    for w in reports.windows(2) {
        assert!(
            w[0]["finished_at"].as_str().unwrap() <= w[1]["started_at"].as_str().unwrap(),
            "overlapping runs: {} and {}",
            w[0]["run_id"],
            w[1]["run_id"]
        );
    }
    let total: i64 = reports.iter().map(deleted).sum();
    let left = f.db.count("SELECT COUNT(*) FROM people").await;
    assert_eq!(total, 8 - left, "reports account for every deleted row");
    assert!(left <= 8 - LAPSED, "at least the rows lapsed at the test cutoff are gone");
    for r in &reports {
        assert!(matches!(r["status"].as_str(), Some("complete" | "incomplete")), "{}", r["status"]);
    }
}

/// `lapse schedule` reads its schedule at start: a job changed in the config since (here set to
/// `dry_run: true`, the edit that stops destruction) is skipped, said at ERROR, until the
/// scheduler is restarted, never run as it was (before, it went on destroying; found by a
/// review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_skips_a_job_changed_since_start() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let schedule = "schedule:\n  jobs:\n    - name: every-second\n      cron: \"* * * * * *\"\n      policies: [people]\n      dry_run: true\n";
    std::fs::write(f.path("lapse.yaml"), format!("{cfg}{schedule}")).unwrap();
    let log = f.path("schedule.log");
    let mut s = spawn(&f, &["schedule", "--log-format", "json"], &log);
    until("a dry run's report", Duration::from_secs(60), async || {
        std::fs::read_dir(f.path("reports"))
            .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("lapse-plan-")))
    })
    .await;
    // The job made destroying: not done until a restart.
    std::fs::write(f.path("lapse.yaml"), format!("{cfg}{}", schedule.replace("dry_run: true", "dry_run: false")))
        .unwrap();
    until("the changed job skipped", Duration::from_secs(30), async || {
        std::fs::read_to_string(&log).unwrap().contains("its dry_run is now false")
    })
    .await;
    let people = f.db.count("SELECT COUNT(*) FROM people").await;
    assert_eq!(people, 8, "nothing destroyed");
    assert!(run_reports(&f).is_empty(), "no run");
    signal(&s, "TERM");
    let code = wait(&mut s, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("stopping the schedule"), "{text}");
    assert!(text.lines().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("scheduled run skipped")), "{text}");
}

/// A schedule stopped between runs stops at once and exits 0, with `--shutdown-grace 0` too,
/// and says so (before, it said it was finishing the current batch, and with a grace of 0
/// exited 1 saying a run did not stop in time; found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_stopped_between_runs_exits_0() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let schedule = "schedule:\n  jobs:\n    - name: yearly\n      cron: \"0 0 3 1 1 *\"\n      policies: [people]\n";
    std::fs::write(f.path("lapse.yaml"), format!("{cfg}{schedule}")).unwrap();
    let log = f.path("schedule.log");
    let mut s = spawn(&f, &["schedule", "--log-format", "json", "--shutdown-grace", "0"], &log);
    until("the job scheduled", Duration::from_secs(30), async || {
        std::fs::read_to_string(&log).unwrap().contains("job scheduled")
    })
    .await;
    signal(&s, "TERM");
    let code = wait(&mut s, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("signal received: stopping the schedule (no run in progress)"), "{text}");
    assert!(!text.contains("finishing the current batch") && !text.contains("did not stop within"), "{text}");
}

/// Schedule errors are configuration errors with positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    for (schedule, needle) in [
        ("schedule:\n  jobs:\n    - name: a\n      cron: \"61 * * * *\"\n", "invalid cron expression '61 * * * *'"),
        ("schedule:\n  jobs:\n    - name: a\n      cron: \"* * *\"\n", "must have 5 fields"),
        (
            "schedule:\n  timezone: Mars/Olympus\n  jobs:\n    - name: a\n      cron: \"0 3 * * *\"\n",
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            "schedule:\n  jobs:\n    - name: a\n      cron: \"0 3 * * *\"\n    - name: a\n      cron: \"0 4 * * *\"\n",
            "duplicate job name 'a'",
        ),
        ("schedule:\n  jobs:\n    - name: a\n      cron: \"0 3 * * *\"\n      every: 5m\n", "unknown field `every`"),
    ] {
        std::fs::write(f.path("lapse.yaml"), format!("{cfg}{schedule}")).unwrap();
        f.lapse(&["validate"]).code(2).stderr_has(needle).stderr_has("lapse.yaml:");
    }
    std::fs::write(
        f.path("lapse.yaml"),
        format!("{cfg}schedule:\n  jobs:\n    - name: a\n      cron: \"0 3 * * *\"\n      policies: [nope]\n"),
    )
    .unwrap();
    f.lapse(&["schedule"]).code(2).stderr_has("schedule job 'a': unknown policy 'nope'");
    // --policy would be ignored by the jobs: refused.
    f.lapse(&["schedule", "--policy", "people"]).code(2).stderr_has("`schedule` takes no --policy");
    // LAPSE_SHARD (the chart's Indexed Job sets it for `run`): a scheduler does not shard, and
    // every host given one ran every policy, silently (found by a review).
    f.lapse_env(&["schedule"], &[("LAPSE_SHARD", "1/3")]).code(2).stderr_has("`schedule` does not shard");
    // `validate` says so too (before, it passed what `schedule` then refused).
    f.lapse(&["validate"]).code(2).stderr_has("schedule job 'a': unknown policy 'nope'").stderr_has("lapse.yaml");
    // A date no month has, also within a year field: refused.
    std::fs::write(
        f.path("lapse.yaml"),
        format!("{cfg}schedule:\n  jobs:\n    - name: a\n      cron: \"0 0 0 31 4 * 2030\"\n"),
    )
    .unwrap();
    f.lapse(&["validate"]).code(2).stderr_has("has no occurrence at all: it would never run");
    std::fs::write(f.path("lapse.yaml"), &cfg).unwrap();
    f.lapse(&["schedule"]).code(2).stderr_has("has no `schedule:` section");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8);
}

/// A job whose occurrences are all past (a year field) has run its course: `validate` warns,
/// and the configuration stays valid for `run` and the other jobs. Before, it became invalid
/// at the job's last occurrence: that run, every other job's runs, and `run`, `validate` and
/// `report lookup` all exited 2 (found by a review). A schedule with no job left says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ran_its_course_leaves_the_configuration_valid() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let once = "    - name: once\n      cron: \"0 0 0 1 1 * 2025\"\n      dry_run: true\n";
    std::fs::write(
        f.path("lapse.yaml"),
        format!("{cfg}schedule:\n  jobs:\n    - name: nightly\n      cron: \"0 3 * * *\"\n{once}"),
    )
    .unwrap();
    f.lapse(&["validate"])
        .code(0)
        .stderr_has("job 'once': '0 0 0 1 1 * 2025' has no occurrence from now on: it will not run again")
        .stderr_has("lapse.yaml:");
    f.lapse(&["run"]).code(0);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8 - LAPSED);
    std::fs::write(f.path("lapse.yaml"), format!("{cfg}schedule:\n  jobs:\n{once}")).unwrap();
    f.lapse(&["schedule"]).code(1).stderr_has("no job of the schedule has a later occurrence: nothing to run");
}

/// With `--log-format json` (as the chart runs it), the lines that say why a run exited 2 are
/// JSON log events too, with the file, line and column as fields (before, the diagnostics and
/// the closing `error:` line were plain text among the JSON, and a scheduled run's `run
/// failed` event had an empty message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_diagnostics() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", &POLICY.replace("on_lapse: delete", "on_lapse: delete\nretension: 3y"));
    for cmd in [&["validate", "--log-format", "json"][..], &["run", "--log-format", "json"]] {
        let r = f.lapse(cmd);
        r.code(2);
        let events: Vec<serde_json::Value> = r
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}\n{}", r.stderr)))
            .collect();
        let diag = events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains("retension")))
            .unwrap_or_else(|| panic!("no event names the unknown key:\n{}", r.stderr));
        assert_eq!(diag["level"], "ERROR", "{diag}");
        assert!(diag["file"].as_str().is_some_and(|p| p.ends_with("people.yaml")), "{diag}");
        assert!(diag["line"].as_u64().is_some() && diag["column"].as_u64().is_some(), "{diag}");
        assert!(
            events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("found; nothing was changed"))),
            "{}",
            r.stderr
        );
    }
    // No log filter drops them: they are why the run exited 2.
    let r = f.lapse_env(&["validate", "--log-format", "json"], &[("LAPSE_LOG", "off")]);
    r.code(2);
    assert!(r.stderr.contains("retension") && r.stderr.contains("nothing was changed"), "{}", r.stderr);
    // Without it, plain lines as before.
    f.lapse(&["validate", "--log-format", "text"]).code(2).stderr_has("error: 1 problem found; nothing was changed");
    // Valid, its one line on stdout is a JSON event too.
    f.policy("people", POLICY);
    let r = f.lapse(&["validate", "--log-format", "json"]);
    r.ok();
    let ok: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!((&ok["message"], &ok["policies"]), (&"ok: 1 policy in 1 file".into(), &1.into()), "{ok}");
    // The report commands' errors too.
    let r = f.lapse(&["report", "lookup", "no-such-reports", "--subject", "S-1", "--log-format", "json"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    let err: serde_json::Value = serde_json::from_str(r.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
    assert_eq!(err["level"], "ERROR", "{err}");
    assert!(err["message"].as_str().is_some_and(|m| m.contains("no-such-reports")), "{err}");
}

/// Found by a read-only review of the operational surface: with `--log-format json` (as the
/// chart runs it), the line saying why a run left no report after a signal (the grace spent)
/// was plain text among the JSON events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_line_is_a_json_event() {
    let f = seeded(Backend::Postgres).await;
    f.policy("people", POLICY);
    let lock = RowLock::take(&f, 2).await; // batch 2 (row 2) waits on the lock
    let mut a =
        spawn(&f, &["run", "--batch-size", "1", "--log-format", "json", "--shutdown-grace", "0"], &f.path("a.log"));
    until("the second batch waiting", Duration::from_secs(60), async || someone_waits(&f).await).await;
    signal(&a, "TERM");
    let code = wait(&mut a, Duration::from_secs(30));
    lock.release().await;
    let log = std::fs::read_to_string(f.path("a.log")).unwrap();
    assert_eq!(code, 1, "{log}");
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("the last line is not JSON:\n{log}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(last["message"].as_str().is_some_and(|m| m.contains("did not stop within 0s")), "{last}");
}

/// `lapse run` on a terminal, through a pseudo-terminal (Python's `pty`). Found by the same
/// review: Ctrl-C at the confirmation prompt waited out the whole shutdown grace, then said a
/// batch had been in flight; and with stderr redirected the prompt went to the file and the
/// run seemed to hang. Now the signal aborts at once, saying nothing was changed, and a
/// redirected stderr is refused (give --yes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_prompt_on_a_terminal() {
    let f = seeded(Backend::Sqlite).await;
    f.policy("people", POLICY);
    let script = r#"
import os, pty, signal, sys, time
lapse, cfg, cutoff, mode, errfile = sys.argv[1:6]
pid, fd = pty.fork()
if pid == 0:
    if mode == "redirected":
        os.dup2(os.open(errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    os.execv(lapse, [lapse, "run", "-c", cfg, "--cutoff", cutoff, "--no-progress", "--shutdown-grace", "60"])
out = b""
deadline = time.time() + 60
while time.time() < deadline:
    if mode == "interrupt" and b"Continue?" in out:
        os.kill(pid, signal.SIGINT)
        mode = "sent"
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(str(os.waitstatus_to_exitcode(status)) + "\n" + out.decode(errors="replace"))
"#;
    let run = |mode: &str| {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(crate::common::lapse_bin())
            .arg(f.path("lapse.yaml"))
            .arg(CUTOFF)
            .arg(mode)
            .arg(f.path("err.log"))
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, rest) = text.split_once('\n').unwrap_or(("", ""));
        (
            code.trim().parse::<i32>().unwrap_or_else(|_| panic!("{text}{}", String::from_utf8_lossy(&out.stderr))),
            rest.to_string(),
        )
    };
    let (code, out) = run("interrupt");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("aborted at the confirmation; nothing was changed"), "{out}");
    assert!(!out.contains("did not stop within"), "{out}");
    let (code, out) = run("redirected");
    assert_eq!(code, 2, "{out}");
    let err = std::fs::read_to_string(f.path("err.log")).unwrap();
    assert!(err.contains("give --yes") && !err.contains("Continue?"), "{err}");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8, "nothing was changed");
}

/// `lapse demo` (the README's first command) end to end in a directory of its own: seeded, run,
/// its reports verify; run again in the same directory. A directory with files of one's own
/// is refused with exit 2 and left as it was (before, the demo wiped its `files/` and replaced
/// its `lapse.yaml`, then ran; found by a review); so is `--customers 0` (before, a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_in_a_directory_of_its_own_only() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = |dir: &Path, extra: &[&str]| {
        Command::new(crate::common::lapse_bin()).arg("demo").arg("--dir").arg(dir).args(extra).output().unwrap()
    };
    let d = tmp.path().join("demo");
    for round in 0..2 {
        let out = demo(&d, &[]);
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        if round == 0 {
            // The plan's guardrail names the stage it counts (before, "1696 of 2000 rows" beside
            // the policy's "due 1947"; found by a README walkthrough).
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("are due in stage 'fields:signup_ip', above the policy's maximum"), "{err}");
        }
    }
    let verify = Command::new(crate::common::lapse_bin())
        .args(["report", "verify"])
        .arg(d.join("reports"))
        .arg("--public-key")
        .arg(d.join("signing.pub"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(mine.join("files/thesis")).unwrap();
    std::fs::write(mine.join("files/thesis/thesis.tex"), "\\documentclass{article}").unwrap();
    std::fs::write(mine.join("lapse.yaml"), "# mine\n").unwrap();
    let out = demo(&mine, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory `lapse demo` made"));
    assert!(mine.join("files/thesis/thesis.tex").exists());
    assert_eq!(std::fs::read_to_string(mine.join("lapse.yaml")).unwrap(), "# mine\n");
    let out = demo(&tmp.path().join("zero"), &["--customers", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A run ends its SQLite sessions before it exits, so SQLite writes the WAL back into the
/// database file and removes it: nothing of the run is left in a `-wal` file. Before, the pools
/// were dropped with the process and a run often left one holding its commits; a database file
/// restored from a backup beside it had them replayed into it, and the next run found nothing
/// due (found by a read-only review). Here the restored data is enforced again, as DESIGN.md
/// asks of data restored from a backup.
#[test]
fn a_run_leaves_no_wal_and_a_restored_database_is_enforced_again() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("demo");
    let lapse = |args: &[&str]| {
        let out = Command::new(crate::common::lapse_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    lapse(&["demo", "--dir", d.to_str().unwrap(), "--seed-only"]);
    let db = d.join("demo.db");
    let wal = d.join("demo.db-wal");
    let backup = tmp.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    let config = d.join("lapse.yaml");
    let run = || {
        lapse(&["run", "-c", config.to_str().unwrap(), "--yes", "--policy", "orders"]);
        let n = run_reports_in(&d.join("reports")).last().map(deleted).unwrap();
        let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        (n, left)
    };
    let (first, left) = run();
    assert!(first > 0, "the demo's orders policy has due rows");
    assert_eq!(left, 0, "a -wal file of {left} bytes was left beside the database");
    std::fs::copy(&backup, &db).unwrap();
    let (again, left) = run();
    assert_eq!(again, first, "the restored rows are destroyed again");
    assert_eq!(left, 0);
}

/// Output into a pipe its reader closed (`lapse plan | head -3`, `| true`): lapse ends as it
/// would have, not with a panic and exit 101 (found by a read-only review). The reader is
/// closed before lapse writes (it exits at once), so the write meets a closed pipe.
#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    let f = crate::common::lapse_bin();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("lapse-run-x.json");
    std::fs::write(&json, "{}").unwrap();
    // Stderr into the closed pipe too (`2>&1`), and a command that fails: its own exit code.
    let missing = tmp.path().join("missing.yaml");
    for (args, code) in [
        ("report schema".to_string(), 0),
        ("report schema --evidence".to_string(), 0),
        (format!("validate -c {} 2>&1", missing.display()), 2),
        (format!("report render {} 2>&1", json.display()), 2),
    ] {
        let out = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; \"$0\" {args} | true")])
            .arg(&f)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
        assert_eq!(out.status.code(), Some(code), "{args}: {stderr}");
    }
}
