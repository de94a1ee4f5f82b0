//! Least privilege: the database grants the README documents are exactly enough.
//!
//! On a fresh PostgreSQL and MariaDB database, with the admin account, two users are created
//! with the grants of the README's "Database grants and IAM actions" section (the SQL below is
//! that text): a read-only user for `validate --connect` and `plan`, and a run user. Then:
//! `plan` as the read-only user succeeds and changes nothing; `run` as the read-only user fails
//! cleanly (exit 1, a message naming the refused privilege, nothing destroyed, no journal row);
//! `run` as the run user succeeds and destroys exactly what is due — deleting from one table,
//! anonymizing two columns of another, honouring a hold in the holds table.

use crate::common::{Backend, Fixture, Run};
use crate::conformance::seeded;

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

/// Deletes people rows 1, 2, 3 and 8 (7 is held by the holds table) at the fixed cutoff.
const PEOPLE_POLICY: &str = "\
name: people
dataset:
  connection: db
  table: people
  key: id
  subject: subject
personal:
  email: { category: email }
  full_name: { category: name }
purposes:
  - name: service
    legal_basis: contract
    retain: 1y
    after: created_at
on_lapse: delete
guardrail:
  max_share: 100%
";

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
/// CREATE privilege (lapse creates it itself only when it is missing).
const JOURNAL_DDL: &str = "CREATE TABLE lapse_journal (run_id VARCHAR(64) NOT NULL, policy VARCHAR(128) NOT NULL, \
     stage VARCHAR(128) NOT NULL, action VARCHAR(32) NOT NULL, record VARCHAR(64) NOT NULL, subject VARCHAR(64), \
     committed_at VARCHAR(40) NOT NULL)";

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
    f.db.exec(JOURNAL_DDL).await;
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
    assert_eq!(f.db.count("SELECT COUNT(*) FROM lapse_journal").await, 6, "one journal row per destroyed record");
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
    f.db.exec(JOURNAL_DDL).await;
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
