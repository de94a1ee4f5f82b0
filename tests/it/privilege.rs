//! Least privilege: the database grants the README documents are exactly enough.
//!
//! On a fresh PostgreSQL and MariaDB database, with the admin account, two users are created
//! with the grants of the README's "Database grants and IAM actions" section (the SQL below is
//! that text): a read-only user for `validate --connect` and `plan`, and a run user. Then:
//! `plan` as the read-only user succeeds and changes nothing; `run` as the read-only user fails
//! cleanly (exit 1, a message naming the refused privilege, nothing destroyed, no journal row);
//! `run` as the run user succeeds and destroys exactly what is due — deleting from one table,
//! anonymizing two columns of another, honouring a hold in the holds table.
//!
//! S3 (`s3_iam_actions`): a private moto server with IAM enforcement on
//! (`INITIAL_NO_AUTH_ACTION_COUNT`), IAM users whose policies hold the README's S3 actions, and
//! the same three checks: `plan` with the plan actions changes nothing; `run` with the run actions
//! destroys what a run with `s3:*` destroys; `run` without the delete actions fails (exit 1,
//! `AccessDenied` in the report) and destroys nothing. See that test for what moto checks.
//! `s3_actions_on_rgw` checks every S3 action of the README on Ceph RGW (the test bed's), which
//! asks for the actions AWS documents, as a user that owns nothing and holds exactly those
//! actions by the bucket's policy, leaving each out in turn.

use crate::common::{Backend, Fixture, Run};
use crate::conformance::seeded;
// Deletes people rows 1, 2, 3 and 8 here (7 is held by the holds table) at the fixed cutoff.
use crate::conformance::PEOPLE_DELETE as PEOPLE_POLICY;

/// A second table, anonymized column by column: rows 1 and 2 are due at the fixed cutoff.
const LEADS: &str = "
CREATE TABLE leads (
  id BIGINT NOT NULL PRIMARY KEY,
  email VARCHAR(255),
  full_name VARCHAR(255),
  source VARCHAR(32),
  created_at {TS} NULL
);
INSERT INTO leads (id, email, full_name, source, created_at) VALUES
  (1, 'lead1@example.com', 'Lead One', 'fair', '2020-01-01 00:00:00'),
  (2, 'lead2@example.com', 'Lead Two', 'web', '2020-02-01 00:00:00'),
  (3, 'lead3@example.com', 'Lead Three', 'web', '2025-12-01 00:00:00');
INSERT INTO legal_holds (id, subject, policy, expires_at) VALUES ('LH-7', 'S-HELD', NULL, NULL);";

/// Anonymizes email and full_name of leads 1 and 2.
const LEADS_POLICY: &str = "\
name: leads
dataset:
  connection: db
  table: leads
  key: id
personal:
  email: { category: email, anonymize: random_token }
  full_name: { category: name, anonymize: { constant: '(anonymized)' } }
purposes:
  - name: marketing
    legal_basis: consent
    retain: 1y
    after: created_at
on_lapse: anonymize
guardrail:
  max_share: 100%
";

/// The journal table, created by the database administrator so that the run user needs no
/// CREATE privilege (lapse creates it itself only when it is missing). `{text}`: `LONGTEXT` on
/// MySQL/MariaDB, `TEXT` elsewhere.
const JOURNAL_DDL: &str = "CREATE TABLE lapse_journal (run_id VARCHAR(64) NOT NULL, policy VARCHAR(128) NOT NULL, \
     stage VARCHAR(128) NOT NULL, action VARCHAR(32) NOT NULL, batch_no BIGINT NOT NULL, record_count BIGINT NOT NULL, \
     records {text} NOT NULL, subjects {text} NOT NULL, committed_at VARCHAR(40) NOT NULL)";

fn journal_ddl(b: Backend) -> String {
    JOURNAL_DDL.replace("{text}", if b == Backend::MySql { "LONGTEXT" } else { "TEXT" })
}

/// PostgreSQL, as documented in the README. `{db}`, `{user}` and `{password}` are filled in.
const PG_PLAN_GRANTS: &str = "\
CREATE ROLE {user} LOGIN PASSWORD '{password}';
GRANT CONNECT ON DATABASE {db} TO {user};
GRANT USAGE ON SCHEMA public TO {user};
GRANT SELECT ON people, leads, legal_holds TO {user};";

const PG_RUN_GRANTS: &str = "\
CREATE ROLE {user} LOGIN PASSWORD '{password}';
GRANT CONNECT ON DATABASE {db} TO {user};
GRANT USAGE ON SCHEMA public TO {user};
GRANT SELECT ON people, leads, legal_holds TO {user};
GRANT DELETE ON people TO {user};
GRANT UPDATE (email) ON people TO {user};
GRANT UPDATE (email, full_name) ON leads TO {user};
GRANT SELECT, INSERT ON lapse_journal TO {user};";

/// MariaDB / MySQL, as documented in the README.
const MY_PLAN_GRANTS: &str = "\
CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
GRANT SELECT ON {db}.people TO '{user}'@'%';
GRANT SELECT ON {db}.leads TO '{user}'@'%';
GRANT SELECT ON {db}.legal_holds TO '{user}'@'%';";

const MY_RUN_GRANTS: &str = "\
CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
GRANT SELECT, DELETE ON {db}.people TO '{user}'@'%';
GRANT SELECT, UPDATE (email, full_name) ON {db}.leads TO '{user}'@'%';
GRANT SELECT ON {db}.legal_holds TO '{user}'@'%';
GRANT SELECT, INSERT ON {db}.lapse_journal TO '{user}'@'%';";

/// `scheme://user:password@rest` from `scheme://[userinfo@]rest`.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    format!("{scheme}://{user}:{password}@{rest}")
}

struct Users {
    plan_url: String,
    run_url: String,
    names: Vec<String>,
}

/// Creates the two users with the documented grants; returns their URLs.
async fn create_users(f: &Fixture) -> Users {
    let db = f.db.url.rsplit('/').next().unwrap().to_string();
    let tag = format!("{:08x}", rand::random::<u32>());
    let (plan_user, run_user) = (format!("lapse_plan_{tag}"), format!("lapse_run_{tag}"));
    let password = format!("Pw-{tag}-x");
    let (plan, run) = match f.db.backend {
        Backend::Postgres => (PG_PLAN_GRANTS, PG_RUN_GRANTS),
        Backend::MySql => (MY_PLAN_GRANTS, MY_RUN_GRANTS),
        Backend::Sqlite => unreachable!("SQLite has no users"),
    };
    let fill =
        |sql: &str, user: &str| sql.replace("{db}", &db).replace("{user}", user).replace("{password}", &password);
    f.db.exec(&fill(plan, &plan_user)).await;
    f.db.exec(&fill(run, &run_user)).await;
    Users {
        plan_url: with_user(&f.db.url, &plan_user, &password),
        run_url: with_user(&f.db.url, &run_user, &password),
        names: vec![plan_user, run_user],
    }
}

async fn drop_users(f: &Fixture, u: &Users) {
    for name in &u.names {
        let sql = match f.db.backend {
            Backend::Postgres => format!("DROP OWNED BY {name}; DROP ROLE {name};"),
            _ => format!("DROP USER '{name}'@'%';"),
        };
        f.db.exec(&sql).await;
    }
}

fn use_url(f: &Fixture, url: &str) {
    std::fs::write(f.path("db.url"), url).unwrap();
}

/// Everything a run could change: both tables and the journal.
async fn state(f: &Fixture) -> (Vec<String>, Vec<String>, i64) {
    (
        f.db.snapshot("people", "id").await,
        f.db.snapshot("leads", "id").await,
        f.db.count("SELECT COUNT(*) FROM lapse_journal").await,
    )
}

fn run_reports(f: &Fixture) -> usize {
    std::fs::read_dir(f.path("reports"))
        .map(|rd| rd.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("lapse-run-")).count())
        .unwrap_or(0)
}

#[track_caller]
fn refused_for_privilege(r: &Run, what: &str) {
    assert_eq!(r.code, 1, "{what}: exit 1 (partial failure)\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let lower = r.stderr.to_lowercase();
    assert!(
        lower.contains("permission denied") || lower.contains("command denied"),
        "{what}: the message names the refused privilege:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{what}: panicked:\n{}", r.stderr);
}

async fn least_privilege(b: Backend) {
    let f = seeded(b).await;
    f.db.exec(&LEADS.replace("{TS}", b.ts())).await;
    f.db.exec(&journal_ddl(b)).await;
    f.holds_table_config();
    f.policy("people", PEOPLE_POLICY);
    f.policy("leads", LEADS_POLICY);
    let users = create_users(&f).await;
    let before = state(&f).await;

    // The read-only user: validate --connect and plan work and change nothing.
    use_url(&f, &users.plan_url);
    f.lapse(&["validate", "--connect"]).ok();
    let plan = f.lapse(&["plan"]);
    plan.ok();
    let report = f.report("plan");
    let due: u64 = report["policies"].as_array().unwrap().iter().map(|p| p["rows_due"].as_u64().unwrap()).sum();
    assert_eq!(due, 6, "plan counts 4 people and 2 leads as due:\n{}", plan.stdout);
    assert_eq!(state(&f).await, before, "plan changed nothing");

    // The read-only user cannot run: refused by the database, nothing destroyed.
    let r = f.lapse(&["run"]);
    refused_for_privilege(&r, "run as the read-only user");
    assert_eq!(state(&f).await, before, "a refused run destroyed nothing");

    // The run user, with exactly the documented grants, does the job.
    use_url(&f, &users.run_url);
    f.lapse(&["validate", "--connect"]).ok();
    let r = f.lapse(&["run"]);
    r.ok();
    let ids = f.db.texts(&format!("SELECT {} FROM people ORDER BY id", f.db.text("id"))).await;
    let ids: Vec<String> = ids.into_iter().flatten().collect();
    assert_eq!(ids, ["4", "5", "6", "7"], "1, 2, 3 and 8 deleted; 7 held by LH-7; 4, 5 not due; 6 no anchor");
    let leads = f.db.texts("SELECT full_name FROM leads ORDER BY id").await;
    assert_eq!(
        leads,
        [Some("(anonymized)".to_string()), Some("(anonymized)".to_string()), Some("Lead Three".to_string())]
    );
    assert_eq!(f.db.count("SELECT COUNT(*) FROM leads WHERE email LIKE 'anon\\_%'").await, 2, "emails tokenized");
    assert_eq!(f.db.journal_records().await, 6, "every destroyed record journaled");
    assert!(run_reports(&f) >= 1);
    // And a second run with the same grants destroys nothing more.
    let after = state(&f).await;
    f.lapse(&["run"]).ok();
    assert_eq!(state(&f).await, after, "idempotent");
    drop_users(&f, &users).await;
}

/// Without the journal table and without CREATE, `run` fails before destroying anything and says
/// what it could not do.
async fn run_without_journal_table(b: Backend) {
    let f = seeded(b).await;
    f.db.exec(&LEADS.replace("{TS}", b.ts())).await;
    f.db.exec(&journal_ddl(b)).await;
    f.holds_table_config();
    f.policy("people", PEOPLE_POLICY);
    f.policy("leads", LEADS_POLICY);
    let users = create_users(&f).await;
    f.db.exec("DROP TABLE lapse_journal").await;
    let people = f.db.snapshot("people", "id").await;
    let leads = f.db.snapshot("leads", "id").await;
    use_url(&f, &users.run_url);
    let r = f.lapse(&["run"]);
    refused_for_privilege(&r, "run without a journal table");
    assert!(r.stderr.contains("lapse_journal"), "the message names the journal table:\n{}", r.stderr);
    assert_eq!(f.db.snapshot("people", "id").await, people);
    assert_eq!(f.db.snapshot("leads", "id").await, leads);
    drop_users(&f, &users).await;
}

mod postgres {
    use crate::common::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn least_privilege() {
        if Backend::Postgres.enabled() {
            super::least_privilege(Backend::Postgres).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_without_journal_table() {
        if Backend::Postgres.enabled() {
            super::run_without_journal_table(Backend::Postgres).await
        }
    }
}

mod mysql {
    use crate::common::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn least_privilege() {
        if Backend::MySql.enabled() {
            super::least_privilege(Backend::MySql).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_without_journal_table() {
        if Backend::MySql.enabled() {
            super::run_without_journal_table(Backend::MySql).await
        }
    }
}

// ---- S3: the README's IAM actions, against moto with IAM enforcement on ------------------------
//
// moto 5 authorizes each S3 request against the caller's IAM policies once it has served
// `INITIAL_NO_AUTH_ACTION_COUNT` requests, but with its own idea of which action a request needs
// (moto/s3/responses.py, `ACTION_MAP`). Where it matches AWS the README's list is tested here:
// `ListObjectVersions` needs `s3:ListBucketVersions`, `HeadObject` `s3:GetObject`, the run lock's
// `PutObject` `s3:PutObject` on `.lapse-locks/*` and its versioned `DeleteObject`
// `s3:DeleteObjectVersion`, and `DeleteObjects` `s3:DeleteObject`. Where it does not, it is not:
// moto asks `HeadBucket` for a made-up `s3:HeadBucket` (AWS: `s3:ListBucket`; granted below as
// well, as a moto-only extra), `GetObjectLockConfiguration` for `s3:ListBucket` (AWS:
// `s3:GetBucketObjectLockConfiguration`), `HeadObject` with a version id for `s3:GetObject` (AWS:
// `s3:GetObjectVersion`), checks `DeleteObjects` once against the bucket's ARN and never for
// `s3:DeleteObjectVersion`, and returns lock headers without `s3:GetObjectLegalHold` /
// `s3:GetObjectRetention`.

/// The README's S3 actions for `plan` (no metadata or tag facts here).
const S3_PLAN_ACTIONS: &[&str] = &["s3:ListBucket", "s3:ListBucketVersions"];
/// What `run` reads on top of the plan actions: the bucket's Object Lock, and each version's
/// lock before deletion.
const S3_RUN_READS: &[&str] = &[
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectLegalHold",
    "s3:GetObjectRetention",
];
/// What `run` deletes with.
const S3_DELETE_ACTIONS: &[&str] = &["s3:DeleteObject", "s3:DeleteObjectVersion"];

/// The README's S3 actions for `run` (without the run lock's).
fn s3_run_actions() -> Vec<&'static str> {
    S3_PLAN_ACTIONS.iter().chain(S3_RUN_READS).chain(S3_DELETE_ACTIONS).copied().collect()
}
/// The run lock's actions, on `.lapse-locks/*` only (README, "One worker per policy").
const S3_LOCK_ACTIONS: &[&str] =
    &["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:ListBucketVersions"];
/// moto's name for what `HeadBucket` needs (AWS: `s3:ListBucket`).
const MOTO_HEAD_BUCKET: &str = "s3:HeadBucket";

/// Seeds the buckets and creates the IAM users with moto's initial unauthenticated requests,
/// then spends the rest of them with a probe until moto refuses the unknown `test` key: from
/// then on every request is authenticated and authorized. Prints `{user: [key id, secret]}`.
const MOTO_SETUP: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, spec = sys.argv[1], json.loads(sys.argv[2])
def client(service, key="test", secret="test"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3, iam = client("s3"), client("iam")
for bucket in spec["buckets"]:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key, bodies in spec["objects"]:
        for body in bodies:
            if body is None:
                s3.delete_object(Bucket=bucket, Key=key)  # a delete marker
            else:
                s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
keys = {}
for user, doc in spec["users"].items():
    iam.create_user(UserName=user)
    arn = iam.create_policy(PolicyName=user, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    k = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = [k["AccessKeyId"], k["SecretAccessKey"]]
for _ in range(1000):
    try:
        s3.list_buckets()
    except ClientError:
        break
else:
    sys.exit("moto never started enforcing IAM")
print(json.dumps(keys))
"#;

/// Objects of both buckets: versions oldest first, `None` a delete marker.
const S3_OBJECTS: &[(&str, &[Option<&str>])] = &[
    ("exports/2020/03/01/S-1.csv", &[Some("id,email\n1,old@example.com\n"), Some("id,email\n1,new@example.com\n")]),
    ("exports/2020/03/02/S-2.csv", &[Some("id,email\n2,person2@example.com\n"), None]),
    ("exports/2020/03/03/S-3.csv", &[Some("id,email\n3,person3@example.com\n")]),
    ("exports/2025/12/01/S-4.csv", &[Some("recent")]),
    ("exports/2019/01/01/S-HELD.csv", &[Some("held")]),
    ("other/2019/01/01/S-7.csv", &[Some("outside the prefix")]),
];

const S3_POLICY: &str = "\
name: exports
dataset:
  connection: store
  bucket: {bucket}
  key_pattern: \"exports/{yyyy}/{mm}/{dd}/{subject}.csv\"
  subject: key
personal:
  content: { category: free_text }
purposes:
  - name: reporting
    legal_basis: legitimate_interests
    retain: 1y
    after: key_date
on_lapse: delete
guardrail:
  max_share: 100%
";

/// A moto server of this test's own, killed when dropped (also on a panic).
struct Moto {
    child: std::process::Child,
    endpoint: String,
    python: std::path::PathBuf,
    _log: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// `moto_server` from the testbed's virtualenv (`scripts/moto.sh`), or `LAPSE_TEST_MOTO_SERVER`.
    fn start(no_auth_actions: u32) -> Moto {
        let server = std::env::var("LAPSE_TEST_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| crate::common::repo_root().join(".testbed/venv/bin/moto_server"));
        assert!(server.exists(), "{} is missing: run scripts/testbed.sh start (it installs moto)", server.display());
        let python = server.with_file_name("python");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(log.path().join("moto.log")).unwrap();
        let child = std::process::Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth_actions.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}"), python, _log: log };
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        moto
    }

    /// Runs [`MOTO_SETUP`] with `spec` (buckets, objects, users): the users' keys, and a client
    /// of the user `admin`.
    fn setup(&self, spec: &serde_json::Value) -> (serde_json::Value, aws_sdk_s3::Client) {
        let out = std::process::Command::new(&self.python)
            .args(["-c", MOTO_SETUP, &self.endpoint, &spec.to_string()])
            .output()
            .expect("run the moto setup script");
        assert!(out.status.success(), "moto setup failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let admin = self.client(keys["admin"][0].as_str().unwrap(), keys["admin"][1].as_str().unwrap());
        (keys, admin)
    }

    fn client(&self, key: &str, secret: &str) -> aws_sdk_s3::Client {
        crate::objects::client_with(&self.endpoint, key, secret)
    }
}

/// `{"Version": ..., "Statement": [...]}` allowing each `(actions, resources)` pair.
fn iam_policy(statements: &[(Vec<&str>, Vec<String>)]) -> serde_json::Value {
    let st: Vec<serde_json::Value> =
        statements.iter().map(|(a, r)| serde_json::json!({ "Effect": "Allow", "Action": a, "Resource": r })).collect();
    serde_json::json!({ "Version": "2012-10-17", "Statement": st })
}

/// Every version and delete marker of the bucket but the run lock's: (key, version id, marker?).
async fn s3_state(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String, bool)> {
    let r = c.list_object_versions().bucket(bucket).send().await.unwrap();
    assert_ne!(r.is_truncated(), Some(true));
    let mut out: Vec<(String, String, bool)> = r
        .versions()
        .iter()
        .map(|v| (v.key().unwrap().to_string(), v.version_id().unwrap_or_default().to_string(), false))
        .chain(
            r.delete_markers()
                .iter()
                .map(|m| (m.key().unwrap().to_string(), m.version_id().unwrap_or_default().to_string(), true)),
        )
        .filter(|(k, _, _)| !k.starts_with(".lapse-locks/"))
        .collect();
    out.sort();
    out
}

/// Keys with the number of versions and markers each has left.
fn shape(state: &[(String, String, bool)]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for (k, _, _) in state {
        match out.last_mut() {
            Some((last, n)) if last == k => *n += 1,
            _ => out.push((k.clone(), 1)),
        }
    }
    out
}

/// A workspace whose `store` connection is `bucket` on `endpoint`, with the policy and a hold.
async fn s3_workspace(endpoint: &str, bucket: &str) -> Fixture {
    let f = Fixture::new(Backend::Sqlite, "CREATE TABLE unused (id INTEGER PRIMARY KEY);").await;
    let text = format!(
        "connections:\n  db:\n    url_file: db.url\n  store:\n    kind: s3\n    endpoint: {endpoint}\n    path_style: true\n    region: us-east-1\n    bucket: {bucket}\npolicies: policies\nholds_file: holds.yaml\nevidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n"
    );
    std::fs::write(f.path("lapse.yaml"), text).unwrap();
    f.policy("exports", &S3_POLICY.replace("{bucket}", bucket));
    f.holds("holds:\n  - id: LH-1\n    matter: Doe v. Example\n    subjects: [S-HELD]\n");
    f
}

fn creds<'a>(keys: &'a serde_json::Value, user: &str) -> [(&'static str, &'a str); 2] {
    [("AWS_ACCESS_KEY_ID", keys[user][0].as_str().unwrap()), ("AWS_SECRET_ACCESS_KEY", keys[user][1].as_str().unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_iam_actions() {
    let moto = Moto::start(300);
    let (least, normal) = ("lapse-least", "lapse-normal");
    let bucket_arn = format!("arn:aws:s3:::{least}");
    let objects_arn = format!("arn:aws:s3:::{least}/*");
    let locks_arn = format!("arn:aws:s3:::{least}/.lapse-locks/*");
    let both = vec![bucket_arn.clone(), objects_arn.clone()];
    let plan_actions: Vec<&str> = S3_PLAN_ACTIONS.iter().copied().chain([MOTO_HEAD_BUCKET]).collect();
    let run_actions: Vec<&str> = s3_run_actions().into_iter().chain([MOTO_HEAD_BUCKET]).collect();
    let no_delete: Vec<&str> = plan_actions.iter().chain(S3_RUN_READS).copied().collect();
    let no_listing = without(&plan_actions, "s3:ListBucketVersions");
    let lock = (S3_LOCK_ACTIONS.to_vec(), vec![locks_arn]);
    let spec = serde_json::json!({
        "buckets": [least, normal],
        "objects": S3_OBJECTS,
        "users": {
            "admin": iam_policy(&[(vec!["s3:*"], vec!["*".to_string()])]),
            "plan": iam_policy(&[(plan_actions.clone(), both.clone())]),
            "nolisting": iam_policy(&[(no_listing, both.clone())]),
            "run": iam_policy(&[(run_actions, both.clone()), lock.clone()]),
            "nodelete": iam_policy(&[(no_delete, both), lock]),
        }
    });
    let (keys, admin) = moto.setup(&spec);
    // IAM is on: the default test key is refused now.
    assert!(moto.client("test", "test").list_object_versions().bucket(least).send().await.is_err());
    let seeded = s3_state(&admin, least).await;
    assert_eq!(seeded.len(), 8, "7 versions and 1 delete marker");

    let f = s3_workspace(&moto.endpoint, least).await;

    // 1. `plan` with the plan actions: counts, changes nothing.
    let plan = f.lapse_env(&["plan"], &creds(&keys, "plan"));
    plan.ok();
    assert_eq!(f.report("plan")["policies"][0]["rows_due"].as_u64(), Some(3), "{}", plan.stdout);
    assert_eq!(s3_state(&admin, least).await, seeded, "plan changed nothing");
    // Enforcement is real: without `s3:ListBucketVersions` the plan fails.
    let r = f.lapse_env(&["plan"], &creds(&keys, "nolisting"));
    assert_ne!(r.code, 0, "plan without s3:ListBucketVersions fails\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("AccessDenied") || r.stderr.contains("AccessDenied"), "{}\n{}", r.stdout, r.stderr);

    // 3. `run` without the delete actions: refused, nothing destroyed.
    let r = f.lapse_env(&["run"], &creds(&keys, "nodelete"));
    assert_eq!(r.code, 1, "run without delete actions exits 1\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let report = std::fs::read_to_string(f.latest("run", ".json")).unwrap();
    assert!(
        report.contains("AccessDenied") || r.stderr.contains("AccessDenied"),
        "the report or log names the refusal:\nreport:\n{report}\nstderr:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let p = &f.report("run")["policies"][0];
    assert_eq!((p["deleted"].as_u64(), p["failed"].as_u64()), (Some(0), Some(3)), "{}\n{}", p, r.stdout);
    assert_eq!(s3_state(&admin, least).await, seeded, "a refused run destroyed nothing");

    // 2. `run` with exactly the run actions destroys what a run with `s3:*` destroys.
    let r = f.lapse_env(&["run"], &creds(&keys, "run"));
    r.ok();
    let g = s3_workspace(&moto.endpoint, normal).await;
    g.lapse_env(&["run"], &creds(&keys, "admin")).ok();
    let (left, normal_left) = (shape(&s3_state(&admin, least).await), shape(&s3_state(&admin, normal).await));
    assert_eq!(left, normal_left, "the same keys and versions are left");
    let expect: Vec<(String, usize)> =
        [("exports/2019/01/01/S-HELD.csv", 1), ("exports/2025/12/01/S-4.csv", 1), ("other/2019/01/01/S-7.csv", 1)]
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
    assert_eq!(left, expect, "S-1 (2 versions), S-2 (version + marker) and S-3 destroyed; S-HELD held");
    let (p, q) = (&f.report("run")["policies"][0], &g.report("run")["policies"][0]);
    for field in ["deleted", "versions_deleted"] {
        assert_eq!(p[field], q[field], "{field}");
    }
    assert_eq!(p["deleted"].as_u64(), Some(3));
    assert_eq!(p["versions_deleted"].as_u64(), Some(5));
    // No lock object is left behind: the lock's own actions were enough to release it.
    let locks = admin.list_object_versions().bucket(least).prefix(".lapse-locks/").send().await.unwrap();
    assert!(locks.versions().is_empty() && locks.delete_markers().is_empty(), "the run lock was released");
}

/// The README's actions for the report bucket (`reports.s3`, without a retention), and moto's
/// `s3:HeadBucket` for the bucket check.
const S3_SINK_ACTIONS: &[&str] = &[
    "s3:PutObject",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:AbortMultipartUpload",
    MOTO_HEAD_BUCKET,
];

/// A run whose reports go to a report bucket, as a user with the data's run actions and exactly
/// the README's report-bucket actions: it stores its report files and claims its sequence (on a
/// versioned bucket, so its claim's versions are listed too). Without `s3:PutObject` on the
/// report bucket it exits 1 and says the report was not stored, naming the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_report_bucket_iam_actions() {
    let moto = Moto::start(300);
    let (data, reports) = ("lapse-data", "lapse-reports");
    let data_arns = vec![format!("arn:aws:s3:::{data}"), format!("arn:aws:s3:::{data}/*")];
    let report_arns = vec![format!("arn:aws:s3:::{reports}"), format!("arn:aws:s3:::{reports}/*")];
    let locks = (S3_LOCK_ACTIONS.to_vec(), vec![format!("arn:aws:s3:::{data}/.lapse-locks/*")]);
    let run_actions: Vec<&str> = s3_run_actions().into_iter().chain([MOTO_HEAD_BUCKET]).collect();
    let no_put = without(S3_SINK_ACTIONS, "s3:PutObject");
    let spec = serde_json::json!({
        "buckets": [data, reports],
        "objects": S3_OBJECTS,
        "users": {
            "admin": iam_policy(&[(vec!["s3:*"], vec!["*".to_string()])]),
            "sink": iam_policy(&[(run_actions.clone(), data_arns.clone()), locks.clone(), (S3_SINK_ACTIONS.to_vec(), report_arns.clone())]),
            "noput": iam_policy(&[(run_actions, data_arns), locks, (no_put, report_arns)]),
        }
    });
    let (keys, admin) = moto.setup(&spec);

    let f = s3_workspace(&moto.endpoint, data).await;
    f.report_bucket(&moto.endpoint, reports, "prod");

    let r = f.lapse_env(&["run"], &creds(&keys, "sink"));
    r.ok();
    let stem = f.latest("run", ".json").file_name().unwrap().to_string_lossy().trim_end_matches(".json").to_string();
    // (The setup seeds every bucket with the same objects: the reports are under `prod/`.)
    let listed = admin.list_objects_v2().bucket(reports).prefix("prod/").send().await.unwrap();
    let mut stored: Vec<String> = listed.contents().iter().map(|o| o.key().unwrap().to_string()).collect();
    stored.sort();
    let mut expected: Vec<String> =
        [".csv", ".evidence.jsonl", ".json"].iter().map(|s| format!("prod/{stem}{s}")).collect();
    expected.insert(0, "prod/chain/00000000000000000001".into());
    assert_eq!(stored, expected, "{}", r.stderr);

    let r = f.lapse_env(&["run"], &creds(&keys, "noput"));
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("not stored on the report bucket") && r.stderr.contains("AccessDenied"), "{}", r.stderr);
}

// ---- S3: the README's actions, against Ceph RGW's bucket policies ------------------------------
//
// Ceph RGW (the test bed's, `scripts/radosgw.sh`) authorizes a user's request on a bucket the
// user does not own against the bucket's policy, asking for the actions AWS documents where moto
// does not: `HeadBucket` `s3:ListBucket`, `GetObjectLockConfiguration`
// `s3:GetBucketObjectLockConfiguration`, `HeadObject` of a version `s3:GetObjectVersion`,
// `DeleteObjects` `s3:DeleteObject` and, per version, `s3:DeleteObjectVersion`; and it leaves a
// version's legal hold out of `HeadObject` without `s3:GetObjectLegalHold`. The user `limited`
// owns nothing; the test grants it actions by the bucket's policy.

/// The keys of the test bed's RGW user that owns nothing (`scripts/radosgw.sh`).
const RGW_LIMITED_KEYS: (&str, &str) = ("limitedkey", "limitedsecret");
/// The same as lapse's environment.
const RGW_LIMITED: [(&str, &str); 2] =
    [("AWS_ACCESS_KEY_ID", RGW_LIMITED_KEYS.0), ("AWS_SECRET_ACCESS_KEY", RGW_LIMITED_KEYS.1)];

/// Versions locked by the storage itself, due by their dates: an Object Lock legal hold, and a
/// governance-mode retention until 2099.
const S3_LOCKED_KEY: &str = "exports/2019/06/01/S-LOCKED.csv";
const S3_RETAINED_KEY: &str = "exports/2019/07/01/S-RETAINED.csv";

/// An Object Lock bucket (versioned) with [`S3_OBJECTS`], [`S3_LOCKED_KEY`] and [`S3_RETAINED_KEY`].
async fn rgw_bucket(owner: &aws_sdk_s3::Client, bucket: &str) {
    use aws_sdk_s3::types::{ObjectLockLegalHoldStatus, ObjectLockMode};
    owner.create_bucket().bucket(bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
    for (key, bodies) in S3_OBJECTS {
        for body in *bodies {
            match body {
                Some(b) => {
                    owner
                        .put_object()
                        .bucket(bucket)
                        .key(*key)
                        .body(b.as_bytes().to_vec().into())
                        .send()
                        .await
                        .unwrap();
                }
                None => {
                    owner.delete_object().bucket(bucket).key(*key).send().await.unwrap();
                }
            }
        }
    }
    let body = || b"id,email\n9,locked@example.com\n".to_vec().into();
    let put = owner.put_object().bucket(bucket).body(body());
    put.key(S3_LOCKED_KEY).object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On).send().await.unwrap();
    let until = aws_sdk_s3::primitives::DateTime::from_secs(4_102_444_800); // 2100-01-01
    let put = owner.put_object().bucket(bucket).body(body()).key(S3_RETAINED_KEY);
    put.object_lock_mode(ObjectLockMode::Governance).object_lock_retain_until_date(until).send().await.unwrap();
}

/// The bucket's policy, replaced: the user `limited` may do `actions` on the bucket and its
/// objects, and the run lock's actions on `.lapse-locks/*`.
async fn rgw_grant(owner: &aws_sdk_s3::Client, bucket: &str, actions: &[&str]) {
    let who = serde_json::json!({ "AWS": ["arn:aws:iam:::user/limited"] });
    let doc = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow", "Principal": who, "Action": actions,
              "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")] },
            { "Effect": "Allow", "Principal": who, "Action": S3_LOCK_ACTIONS,
              "Resource": [format!("arn:aws:s3:::{bucket}/.lapse-locks/*")] },
        ]
    });
    owner.put_bucket_policy().bucket(bucket).policy(doc.to_string()).send().await.unwrap();
}

fn without<'a>(actions: &[&'a str], left_out: &str) -> Vec<&'a str> {
    actions.iter().copied().filter(|a| *a != left_out).collect()
}

/// On Ceph RGW, as a user that owns nothing, with a bucket policy granting it exactly the
/// README's actions: `plan` changes nothing, and fails without either listing action; `run`
/// destroys what the owner's run destroys on a twin bucket and reports both storage locks as
/// held; without `s3:DeleteObject` or `s3:DeleteObjectVersion`, or without `s3:GetObjectVersion`
/// (the locks are read by version), it exits 1 and destroys nothing; without
/// `s3:GetObjectLegalHold` or `s3:GetObjectRetention` that lock is not shown to lapse, and its
/// version is reported failed instead of held (the storage refuses its deletion all the same);
/// without `s3:GetBucketObjectLockConfiguration` every version's head is read, to the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_actions_on_rgw() {
    use crate::objects::{client_of, unique, StoreKind};
    let endpoint = StoreKind::Rgw.endpoint();
    let owner = client_of(StoreKind::Rgw);
    let limited = crate::objects::client_with(&endpoint, RGW_LIMITED_KEYS.0, RGW_LIMITED_KEYS.1);
    assert!(
        limited.list_buckets().send().await.is_ok(),
        "the RGW user `limited` is missing: restart the test bed (scripts/testbed.sh start; scripts/radosgw.sh makes it)"
    );
    let owner_keys = [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")];
    let run_actions = s3_run_actions();
    // A workspace on a fresh bucket whose policy grants `limited` `actions`.
    let bucket_granting = |actions: Vec<&'static str>| {
        let (owner, endpoint) = (owner.clone(), endpoint.clone());
        async move {
            let bucket = unique("lapse-priv");
            rgw_bucket(&owner, &bucket).await;
            rgw_grant(&owner, &bucket, &actions).await;
            (s3_workspace(&endpoint, &bucket).await, bucket)
        }
    };
    let kept_all: Vec<(String, usize)> = [
        ("exports/2019/01/01/S-HELD.csv", 1),
        (S3_LOCKED_KEY, 1),
        (S3_RETAINED_KEY, 1),
        ("exports/2025/12/01/S-4.csv", 1),
        ("other/2019/01/01/S-7.csv", 1),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), *n))
    .collect();

    // The owner's run on its own bucket: what the user's runs are held to.
    let (g, twin) = bucket_granting(vec![]).await;
    g.lapse_env(&["run"], &owner_keys).ok();
    let q = &g.report("run")["policies"][0];
    assert_eq!((q["deleted"].as_u64(), q["held_by_storage"].as_u64()), (Some(3), Some(2)), "{q}");
    assert_eq!(
        shape(&s3_state(&owner, &twin).await),
        kept_all,
        "S-1 (2 versions), S-2 (version + marker), S-3 destroyed"
    );

    // 1. `plan` with exactly the plan actions counts and changes nothing; without a grant, or
    //    without either listing action, it is refused.
    let (f, least) = bucket_granting(vec![]).await;
    let seeded = s3_state(&owner, &least).await;
    assert_eq!(seeded.len(), 10, "9 versions and 1 delete marker");
    let r = f.lapse_env(&["plan"], &RGW_LIMITED);
    assert_ne!(r.code, 0, "plan without any grant\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    rgw_grant(&owner, &least, S3_PLAN_ACTIONS).await;
    let plan = f.lapse_env(&["plan"], &RGW_LIMITED);
    plan.ok();
    let due = f.report("plan")["policies"][0]["rows_due"].as_u64();
    assert_eq!(due, Some(5), "S-1, S-2, S-3, S-LOCKED and S-RETAINED\n{}", plan.stdout);
    for (action, code) in [("s3:ListBucket", 2), ("s3:ListBucketVersions", 1)] {
        rgw_grant(&owner, &least, &without(S3_PLAN_ACTIONS, action)).await;
        let r = f.lapse_env(&["plan"], &RGW_LIMITED);
        assert_eq!(r.code, code, "plan without {action}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("403"), "{}", r.stderr);
        if action == "s3:ListBucket" {
            // A HEAD answer has no error code: the message names what was refused and why.
            assert!(r.stderr.contains("access denied (HTTP 403)"), "{}", r.stderr);
            assert!(r.stderr.contains("HeadBucket: s3:ListBucket"), "{}", r.stderr);
        }
    }
    assert_eq!(s3_state(&owner, &least).await, seeded, "plan changed nothing");

    // 2. `run` with exactly the run actions: what the owner's run did.
    rgw_grant(&owner, &least, &run_actions).await;
    f.lapse_env(&["run"], &RGW_LIMITED).ok();
    assert_eq!(shape(&s3_state(&owner, &least).await), kept_all);
    let p = &f.report("run")["policies"][0];
    for field in ["deleted", "versions_deleted", "held_by_storage", "failed"] {
        assert_eq!(p[field], q[field], "{field}: {p}\n{q}");
    }

    // 3. Without an action the deletion or the locks' reading needs: exit 1, nothing destroyed.
    for action in ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObjectVersion"] {
        let (f, bucket) = bucket_granting(without(&run_actions, action)).await;
        let seeded = s3_state(&owner, &bucket).await;
        let r = f.lapse_env(&["run"], &RGW_LIMITED);
        assert_eq!(r.code, 1, "run without {action}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        let p = &f.report("run")["policies"][0];
        assert_eq!(p["deleted"].as_u64(), Some(0), "{action}: {p}");
        let errors = p["errors"].to_string();
        assert!(errors.contains("403") || errors.contains("AccessDenied"), "{p}");
        if action == "s3:GetObjectVersion" {
            assert!(errors.contains("HeadObject: s3:GetObjectVersion"), "{p}");
        }
        assert_eq!(s3_state(&owner, &bucket).await, seeded, "a run without {action} destroyed nothing");
    }

    // 4. Without the action that shows a lock, its version looks unlocked: reported failed, not
    //    held; the storage keeps it.
    for action in ["s3:GetObjectLegalHold", "s3:GetObjectRetention"] {
        let (f, bucket) = bucket_granting(without(&run_actions, action)).await;
        let r = f.lapse_env(&["run"], &RGW_LIMITED);
        assert_eq!(r.code, 1, "run without {action}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        let p = &f.report("run")["policies"][0];
        let counts = (p["deleted"].as_u64(), p["failed"].as_u64(), p["held_by_storage"].as_u64());
        assert_eq!(counts, (Some(3), Some(1), Some(1)), "{action}: {p}");
        assert_eq!(shape(&s3_state(&owner, &bucket).await), kept_all, "{action}");
    }

    // 5. Without `s3:GetBucketObjectLockConfiguration`: the locks are read anyway.
    let (f, bucket) = bucket_granting(without(&run_actions, "s3:GetBucketObjectLockConfiguration")).await;
    f.lapse_env(&["run"], &RGW_LIMITED).ok();
    let p = &f.report("run")["policies"][0];
    assert_eq!((p["deleted"].as_u64(), p["held_by_storage"].as_u64()), (Some(3), Some(2)), "{p}");
    assert_eq!(shape(&s3_state(&owner, &bucket).await), kept_all);
}
