//! Shared test harness: a fresh database per test on each real backend, a workspace directory
//! with config and policies, and the `lapse` binary.
//!
//! PostgreSQL and MariaDB come from `scripts/testbed.sh` (started by `scripts/test.sh`), which
//! exports `LAPSE_TEST_PG_ADMIN_URL` and `LAPSE_TEST_MYSQL_ADMIN_URL`. Set
//! `LAPSE_TEST_BACKENDS=sqlite` to run only the SQLite half locally; under `CI` a missing server
//! is a failure, never a skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{Executor, Row};

pub const CUTOFF: &str = "2026-01-01T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// Timestamp column type.
    pub fn ts(self) -> &'static str {
        match self {
            Backend::Postgres => "TIMESTAMP",
            _ => "DATETIME",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }

    /// Whether this backend runs here. Under CI every backend must.
    pub fn enabled(self) -> bool {
        if let Ok(list) = std::env::var("LAPSE_TEST_BACKENDS") {
            if std::env::var("CI").is_err() {
                return list.split(',').any(|b| b.trim() == self.name());
            }
        }
        true
    }
}

pub enum Pool {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

/// A connection of its own to a server's test database, outside any pool: for a transaction a
/// test holds open while lapse runs (PostgreSQL and MariaDB).
pub enum Session {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Session {
    pub async fn open(db: &TestDb) -> Session {
        use sqlx::Connection;
        match db.backend {
            Backend::Postgres => Session::Pg(sqlx::PgConnection::connect(&db.url).await.unwrap()),
            Backend::MySql => Session::My(sqlx::MySqlConnection::connect(&db.url).await.unwrap()),
            Backend::Sqlite => panic!("a session of its own is for the servers"),
        }
    }

    /// Runs `sql` (statements separated by `;`).
    pub async fn exec(&mut self, sql: &str) {
        match self {
            Session::Pg(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
            Session::My(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A fresh, empty database.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub pool: Pool,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn admin_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the suite with scripts/test.sh (it starts the test servers), or set LAPSE_TEST_BACKENDS=sqlite"))
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url with a database");
    format!("{base}/{db}")
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("lapse_t{}_{}_{n}", std::process::id(), rand_suffix());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("test.db");
                let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
                let pool = SqlitePool::connect_with(opts).await.unwrap();
                TestDb { backend, url: format!("sqlite://{}", path.display()), pool: Pool::Lite(pool), _dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin = admin_url("LAPSE_TEST_PG_ADMIN_URL");
                let ap = PgPool::connect(&admin).await.unwrap();
                ap.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                ap.close().await;
                let url = with_db(&admin, &name);
                let pool = PgPool::connect(&url).await.unwrap();
                TestDb { backend, url, pool: Pool::Pg(pool), _dir: None }
            }
            Backend::MySql => {
                let admin = admin_url("LAPSE_TEST_MYSQL_ADMIN_URL");
                let ap = MySqlPool::connect(&admin).await.unwrap();
                ap.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                ap.close().await;
                let url = with_db(&admin, &name);
                let pool = MySqlPool::connect(&url).await.unwrap();
                TestDb { backend, url, pool: Pool::My(pool), _dir: None }
            }
        }
    }

    /// Runs one or more statements.
    pub async fn exec(&self, sql: &str) {
        let r = match &self.pool {
            Pool::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Pool::My(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Pool::Lite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A single integer (e.g. `SELECT COUNT(*) ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        let r = match &self.pool {
            Pool::Pg(p) => sqlx::query(sql).fetch_one(p).await.map(|r| r.get::<i64, _>(0)),
            Pool::My(p) => sqlx::query(sql).fetch_one(p).await.map(|r| r.get::<i64, _>(0)),
            Pool::Lite(p) => sqlx::query(sql).fetch_one(p).await.map(|r| r.get::<i64, _>(0)),
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Records in the journal table (a row per committed batch, `record_count` records each).
    pub async fn journal_records(&self) -> i64 {
        let int = if self.backend == Backend::MySql { "SIGNED" } else { "BIGINT" };
        self.count(&format!("SELECT CAST(COALESCE(SUM(record_count), 0) AS {int}) FROM lapse_journal")).await
    }

    /// The first column of every row, as text (cast in SQL by the caller where needed).
    pub async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        let r = match &self.pool {
            Pool::Pg(p) => {
                sqlx::query(sql).fetch_all(p).await.map(|rs| rs.iter().map(|r| r.get::<Option<String>, _>(0)).collect())
            }
            Pool::My(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .map(|rs| rs.iter().map(|r| r.try_get_unchecked::<Option<String>, _>(0).unwrap()).collect()),
            Pool::Lite(p) => {
                sqlx::query(sql).fetch_all(p).await.map(|rs| rs.iter().map(|r| r.get::<Option<String>, _>(0)).collect())
            }
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A binary value as lower-case hex digits, in this dialect.
    pub fn hex(&self, expr: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("encode({expr}, 'hex')"),
            _ => format!("LOWER(HEX({expr}))"),
        }
    }

    /// The journal table as lapse made it before its hashes were stored as bytes: a row per
    /// batch, the hashes as comma-separated hex text. Such a table is still written and read
    /// in its shape.
    pub fn text_lists_journal_ddl(&self) -> String {
        let text = if self.backend == Backend::MySql { "LONGTEXT" } else { "TEXT" };
        format!(
            "CREATE TABLE lapse_journal (run_id VARCHAR(64) NOT NULL, policy VARCHAR(128) NOT NULL, \
             stage VARCHAR(128) NOT NULL, action VARCHAR(32) NOT NULL, batch_no BIGINT NOT NULL, \
             record_count BIGINT NOT NULL, records {text} NOT NULL, subjects {text} NOT NULL, \
             committed_at VARCHAR(40) NOT NULL)"
        )
    }

    /// The journal's batches as (record, subject) hash pairs, from a table of bytes (32 a hash,
    /// an absent subject all zeros) or, `text_lists`, of comma-separated hex text (an absent
    /// subject empty).
    pub async fn journal_entries(&self, text_lists: bool) -> Vec<(String, Option<String>)> {
        let binary = !text_lists;
        let (r, s) = match binary {
            true => (self.hex("records"), self.hex("subjects")),
            false => (self.text("records"), self.text("subjects")),
        };
        let rows = self
            .texts(&format!(
                "SELECT {} FROM lapse_journal ORDER BY run_id, stage, batch_no",
                self.concat(&[&r, "'|'", &s])
            ))
            .await;
        let mut out = vec![];
        for row in rows.into_iter().flatten() {
            let (records, subjects) = row.split_once('|').unwrap();
            let split = |l: &str| -> Vec<String> {
                match binary {
                    true => l.as_bytes().chunks(64).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect(),
                    false => l.split(',').map(str::to_string).collect(),
                }
            };
            let records = split(records);
            let subjects = split(subjects);
            for (i, r) in records.into_iter().enumerate() {
                let s = subjects.get(i).filter(|s| !s.is_empty() && s.bytes().any(|b| b != b'0')).cloned();
                out.push((r, s));
            }
        }
        out
    }

    /// `a || b || ...` in this dialect.
    pub fn concat(&self, parts: &[&str]) -> String {
        match self.backend {
            Backend::MySql => format!("CONCAT({})", parts.join(", ")),
            _ => parts.join(" || "),
        }
    }

    /// A text cast in this dialect: `CAST(x AS TEXT)` / `CAST(x AS CHAR)`.
    pub fn text(&self, expr: &str) -> String {
        match self.backend {
            Backend::MySql => format!("CAST({expr} AS CHAR)"),
            _ => format!("CAST({expr} AS TEXT)"),
        }
    }

    /// Every row of a table, rendered as text, for "nothing changed" checks.
    pub async fn snapshot(&self, table: &str, order_by: &str) -> Vec<String> {
        let sql = match self.backend {
            Backend::Postgres => format!("SELECT CAST(t.* AS TEXT) FROM {table} t ORDER BY {order_by}"),
            _ => {
                let cols = self.columns(table).await;
                let parts: Vec<String> = cols.iter().map(|c| format!("COALESCE({}, '<null>')", self.text(c))).collect();
                let joined = match self.backend {
                    Backend::MySql => format!("CONCAT_WS('|', {})", parts.join(", ")),
                    _ => parts.join(" || '|' || "),
                };
                format!("SELECT {joined} FROM {table} ORDER BY {order_by}")
            }
        };
        self.texts(&sql).await.into_iter().map(|x| x.unwrap_or_default()).collect()
    }

    async fn columns(&self, table: &str) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => self.texts(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")).await,
            _ => self
                .texts(&format!("SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"))
                .await,
        }
        .into_iter()
        .flatten()
        .collect()
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    let n: u32 = rand::thread_rng().gen();
    format!("{n:08x}")
}

/// A workspace: config, policies and holds in a temporary directory, pointing at a test
/// database.
pub struct Fixture {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new(backend: Backend, schema: &str) -> Fixture {
        let db = TestDb::new(backend).await;
        let schema = schema.replace("{TS}", backend.ts());
        db.exec(&schema).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("db.url"), &db.url).unwrap();
        std::fs::write(dir.path().join("evidence.key"), "test-evidence-key-0123456789abcdef").unwrap();
        let f = Fixture { db, dir };
        f.config("");
        f
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `lapse.yaml`; `extra` is appended under the `db` connection (indented 4).
    pub fn config(&self, connection_extra: &str) {
        let text = format!(
            "connections:\n  db:\n    url_file: db.url\n{connection_extra}\npolicies: policies\nholds_file: holds.yaml\nevidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n"
        );
        std::fs::write(self.path("lapse.yaml"), text).unwrap();
        if !self.path("holds.yaml").exists() {
            std::fs::write(self.path("holds.yaml"), "holds: []\n").unwrap();
        }
    }

    pub fn holds_table_config(&self) {
        self.config("    holds_table:\n      table: legal_holds\n      id: id\n      subject: subject\n      policy: policy\n      expires: expires_at\n");
    }

    pub fn policy(&self, name: &str, yaml: &str) {
        std::fs::write(self.path(&format!("policies/{name}.yaml")), yaml).unwrap();
    }

    pub fn holds(&self, yaml: &str) {
        std::fs::write(self.path("holds.yaml"), yaml).unwrap();
    }

    /// The newest run report rendered as HTML by `lapse report render` (`extra`: more of its
    /// arguments, e.g. `--public-key`).
    pub fn render_html(&self, extra: &[&str]) -> String {
        let html = self.path("run.html");
        let out = Command::new(lapse_bin())
            .args(["report", "render", "--format", "html", "--out"])
            .arg(&html)
            .args(extra)
            .arg(self.latest("run", ".json"))
            .output()
            .unwrap();
        Run::from(out).ok();
        std::fs::read_to_string(html).unwrap()
    }

    /// Runs `lapse <args> -c lapse.yaml` (with the fixed cutoff for plan and run).
    pub fn lapse(&self, args: &[&str]) -> Run {
        self.lapse_env(args, &[])
    }

    /// `lapse`, with extra environment variables set last (e.g. other S3 credentials).
    pub fn lapse_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.lapse_with(args, env, CUTOFF)
    }

    /// `lapse plan` or `run` at another cutoff than [`CUTOFF`].
    pub fn lapse_at(&self, cutoff: &str, args: &[&str]) -> Run {
        self.lapse_with(args, &[], cutoff)
    }

    fn lapse_with(&self, args: &[&str], env: &[(&str, &str)], cutoff: &str) -> Run {
        let mut cmd = Command::new(lapse_bin());
        cmd.args(args).arg("-c").arg(self.path("lapse.yaml"));
        if matches!(args.first(), Some(&"plan") | Some(&"run")) {
            cmd.args(["--cutoff", cutoff]);
        }
        if args.first() == Some(&"run") {
            cmd.arg("--yes");
        }
        cmd.env("LAPSE_LOG", "lapse=debug").env_remove("LAPSE_CONFIG");
        // Credentials for the local S3 server (moto accepts any).
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "2");
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run lapse");
        Run::from(out)
    }

    /// The newest report of a mode, parsed.
    pub fn report(&self, mode: &str) -> serde_json::Value {
        let path = self.latest(mode, ".json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub fn latest(&self, mode: &str, suffix: &str) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path("reports"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("lapse-{mode}-"))
                    && n.ends_with(suffix)
                    && !n.ends_with(&format!(".evidence{suffix}"))
            })
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        files.pop().unwrap_or_else(|| panic!("no {mode} report in {}", self.path("reports").display()))
    }

    /// Every file the runs wrote into `reports/`, concatenated.
    pub fn all_report_text(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.path("reports")) {
            for e in rd {
                s.push_str(&String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()));
            }
        }
        s
    }

    /// Turns report signing on: writes an Ed25519 key pair (`signing.key`, `signing.pub`) and
    /// adds `reports.signing_key` to `lapse.yaml` (`config` rewrites that file: call this after
    /// it). Returns the public key file, which is all `lapse report verify` needs.
    /// Stores the reports also on `bucket` under `prefix` of the S3 server at `endpoint`
    /// (`reports.s3`, through a connection `archive`).
    pub fn report_bucket(&self, endpoint: &str, bucket: &str, prefix: &str) {
        let cfg = std::fs::read_to_string(self.path("lapse.yaml")).unwrap();
        let (policies, reports) = ("policies: policies\n", "reports:\n  dir: reports\n");
        assert!(cfg.contains(policies) && cfg.contains(reports), "lapse.yaml:\n{cfg}");
        let archive = format!(
            "  archive:\n    kind: s3\n    endpoint: {endpoint}\n    path_style: true\n    region: us-east-1\n{policies}"
        );
        let sink = format!("{reports}  s3:\n    connection: archive\n    bucket: {bucket}\n    prefix: {prefix}\n");
        std::fs::write(self.path("lapse.yaml"), cfg.replace(policies, &archive).replace(reports, &sink)).unwrap();
    }

    pub fn sign_reports(&self) -> PathBuf {
        let signer = lapse::integrity::Signer::generate();
        std::fs::write(self.path("signing.key"), signer.secret_hex()).unwrap();
        std::fs::write(self.path("signing.pub"), signer.public_hex()).unwrap();
        let cfg = std::fs::read_to_string(self.path("lapse.yaml")).unwrap();
        let plain = "reports:\n  dir: reports\n";
        assert!(cfg.contains(plain), "lapse.yaml has no plain `reports:` section:\n{cfg}");
        let signed = "reports:\n  dir: reports\n  signing_key:\n    key_file: signing.key\n";
        std::fs::write(self.path("lapse.yaml"), cfg.replace(plain, signed)).unwrap();
        self.path("signing.pub")
    }
}

/// A finished `lapse` process.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "lapse failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}:\n{}", self.stdout);
        self
    }
}

/// Generates one `#[tokio::test]` per backend for each named check of a module.
#[macro_export]
macro_rules! per_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if $crate::common::Backend::Sqlite.enabled() { super::$check($crate::common::Backend::Sqlite).await }
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if $crate::common::Backend::Postgres.enabled() { super::$check($crate::common::Backend::Postgres).await }
            })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if $crate::common::Backend::MySql.enabled() { super::$check($crate::common::Backend::MySql).await }
            })*
        }
    };
}

/// The `lapse` binary: `LAPSE_TEST_BIN` if set (a copy that a concurrent build of a shared target
/// directory cannot replace mid-run), else the one cargo built.
pub fn lapse_bin() -> String {
    std::env::var("LAPSE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lapse").to_string())
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
