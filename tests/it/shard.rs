//! Scale-out: `n` shards (separate processes, running at once) together destroy exactly what one
//! unsharded worker destroys, on identical copies of the same data.
//!
//! Policies: `customers` (anonymize, record and field level, file holds) and `accounts` (delete,
//! cascading to `sessions`) are split by key (`shard_by_key: true`; keys include negative ids);
//! `events`, `leads` and `tickets` (a text key) go whole to the shard their name hashes to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

use crate::common::{Backend, Fixture, CUTOFF};
use crate::per_backend;

const SCHEMA: &str = "
CREATE TABLE customers (
  id BIGINT NOT NULL PRIMARY KEY,
  subject VARCHAR(64),
  email VARCHAR(255),
  full_name VARCHAR(255) NOT NULL,
  ip VARCHAR(64),
  status VARCHAR(16) NOT NULL,
  created_at {TS} NULL
);
CREATE TABLE accounts (
  id INTEGER NOT NULL PRIMARY KEY,
  login VARCHAR(255),
  created_at {TS} NULL
);
CREATE TABLE sessions (
  id BIGINT NOT NULL PRIMARY KEY,
  account_id INTEGER NOT NULL,
  ua VARCHAR(255),
  CONSTRAINT sessions_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id)
);
CREATE TABLE events (
  id BIGINT NOT NULL PRIMARY KEY,
  ip VARCHAR(64),
  created_at {TS} NULL
);
CREATE TABLE leads (
  id BIGINT NOT NULL PRIMARY KEY,
  email VARCHAR(255),
  created_at {TS} NULL
);
CREATE TABLE tickets (
  code VARCHAR(32) NOT NULL PRIMARY KEY,
  body VARCHAR(255),
  created_at {TS} NULL
);";

const TABLES: [(&str, &str); 6] = [
    ("customers", "id"),
    ("accounts", "id"),
    ("sessions", "id"),
    ("events", "id"),
    ("leads", "id"),
    ("tickets", "code"),
];

/// A timestamp spread over 2017..2025 (cutoff 2026-01-01, periods of 2 or 3 years), NULL for some.
fn created(i: i64) -> String {
    if i.rem_euclid(13) == 0 {
        return "NULL".into();
    }
    format!("'{}-{:02}-15 10:00:00'", 2017 + i.rem_euclid(9), 1 + i.rem_euclid(12))
}

fn seed_sql() -> String {
    let mut s = String::new();
    for i in -30..120i64 {
        let status = if i % 7 == 0 { "open" } else { "closed" };
        s.push_str(&format!(
            "INSERT INTO customers VALUES ({i}, 'C-{i}', 'c{i}@example.com', 'Customer {i}', '198.51.100.{}', '{status}', {});\n",
            i.rem_euclid(250),
            created(i)
        ));
    }
    for i in 1..90i64 {
        s.push_str(&format!("INSERT INTO accounts VALUES ({i}, 'login{i}', {});\n", created(i * 3)));
        for j in 0..2 {
            s.push_str(&format!("INSERT INTO sessions VALUES ({}, {i}, 'agent {i}/{j}');\n", i * 10 + j));
        }
    }
    for i in 1..70i64 {
        s.push_str(&format!("INSERT INTO events VALUES ({i}, '203.0.113.{i}', {});\n", created(i + 5)));
    }
    for i in 1..45i64 {
        s.push_str(&format!("INSERT INTO leads VALUES ({i}, 'lead{i}@example.com', {});\n", created(i + 2)));
    }
    for i in 1..35i64 {
        s.push_str(&format!("INSERT INTO tickets VALUES ('T-{i:03}', 'ticket body {i}', {});\n", created(i + 7)));
    }
    s
}

const CUSTOMERS: &str = "name: customers
dataset: { connection: db, table: customers, key: id, subject: subject }
personal:
  email:     { category: email, anonymize: nullify }
  full_name: { category: name, anonymize: { constant: '(anonymized)' } }
  ip:        { category: ip_address, anonymize: generalize_ip }
purposes:
  - name: account
    legal_basis: contract
    retain: 3y
    after: created_at
    when: \"status = 'closed'\"
    covers: [email, full_name]
  - name: security
    legal_basis: legitimate_interests
    retain: 2y
    after: created_at
    covers: [ip]
on_lapse: anonymize
guardrail: { max_share: 100% }
shard_by_key: true
";

const ACCOUNTS: &str = "name: accounts
dataset: { connection: db, table: accounts, key: id }
personal:
  login: { category: account_id }
purposes:
  - { name: service, legal_basis: contract, retain: 2y, after: created_at }
on_lapse: delete
dependents:
  - { table: sessions, on_delete: cascade }
guardrail: { max_share: 100% }
shard_by_key: true
";

fn whole(name: &str, key: &str, column: &str, category: &str) -> String {
    format!(
        "name: {name}
dataset: {{ connection: db, table: {name}, key: {key} }}
personal:
  {column}: {{ category: {category} }}
purposes:
  - {{ name: service, legal_basis: legitimate_interests, retain: 2y, after: created_at }}
on_lapse: delete
guardrail: {{ max_share: 100% }}
"
    )
}

async fn workspace(b: Backend) -> Fixture {
    let f = Fixture::new(b, SCHEMA).await;
    f.db.exec(&seed_sql()).await;
    f.policy("customers", CUSTOMERS);
    f.policy("accounts", ACCOUNTS);
    f.policy("events", &whole("events", "id", "ip", "ip_address"));
    f.policy("leads", &whole("leads", "id", "email", "email"));
    f.policy("tickets", &whole("tickets", "code", "body", "free_text"));
    f.holds("holds:\n  - { id: LH-1, matter: audit, subjects: ['C-3', 'C-44', 'C--12'], policies: [customers] }\n");
    f
}

fn lapse_cmd(f: &Fixture, args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::common::lapse_bin());
    cmd.args(args)
        .arg("-c")
        .arg(f.path("lapse.yaml"))
        .args(["--cutoff", CUTOFF, "--yes", "--batch-size", "7"])
        .env("LAPSE_LOG", "lapse=debug")
        .env_remove("LAPSE_CONFIG")
        .env_remove("LAPSE_SHARD")
        .stdin(Stdio::null());
    cmd
}

fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn run_report(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("lapse-run-") && n.ends_with(".json") && !n.contains(".evidence")
        })
        .collect();
    assert_eq!(v.len(), 1, "one run report in {}", dir.display());
    v.pop().unwrap()
}

const COUNTS: [&str; 7] = ["rows_total", "rows_due", "deleted", "anonymized", "fields_anonymized", "held", "failed"];

/// Per policy: the counts of `COUNTS`, summed over the reports, and dependents deleted.
fn totals(reports: &[Json]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in reports {
        for p in r["policies"].as_array().unwrap() {
            let e = out.entry(p["name"].as_str().unwrap().to_string()).or_default();
            for k in COUNTS {
                *e.entry(k.to_string()).or_default() += p[k].as_u64().unwrap();
            }
            for (t, n) in p["dependents_deleted"].as_object().into_iter().flatten() {
                *e.entry(format!("dependents:{t}")).or_default() += n.as_u64().unwrap();
            }
        }
    }
    out
}

async fn snapshot(f: &Fixture) -> Vec<Vec<String>> {
    let mut v = Vec::new();
    for (t, k) in TABLES {
        v.push(f.db.snapshot(t, k).await);
    }
    v
}

pub async fn shards_destroy_what_one_worker_destroys(b: Backend) {
    const N: u32 = 3;
    let single = workspace(b).await;
    let sharded = workspace(b).await;
    assert_eq!(snapshot(&single).await, snapshot(&sharded).await, "identical copies");
    let before = snapshot(&single).await;

    single.lapse(&["run", "--batch-size", "7"]).ok();
    let one = read_json(&run_report(&single.path("reports")));
    assert_eq!(one["status"], "complete", "{one:#}");
    assert!(one.get("shard").is_none(), "an unsharded report has no shard");

    // n processes at once, as the pods of an Indexed Job would run. Output goes to files: a
    // full pipe must not stall one shard while another waits for it.
    let log = |i: u32, what: &str| sharded.path(&format!("shard-{i}.{what}"));
    let children: Vec<_> = (0..N)
        .map(|i| {
            lapse_cmd(&sharded, &["run", "--shard", &format!("{i}/{N}")])
                .stdout(std::fs::File::create(log(i, "out")).unwrap())
                .stderr(std::fs::File::create(log(i, "err")).unwrap())
                .spawn()
                .expect("spawn lapse")
        })
        .collect();
    for (i, mut c) in (0..N).zip(children) {
        let status = c.wait().unwrap();
        assert!(
            status.success(),
            "shard {i} failed ({status})\nstdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(log(i, "out")).unwrap(),
            std::fs::read_to_string(log(i, "err")).unwrap()
        );
    }

    let after = snapshot(&single).await;
    assert_ne!(after, before, "the single worker destroyed something");
    assert_eq!(snapshot(&sharded).await, after, "{N} shards left the data exactly as one worker did");

    let parts: Vec<Json> =
        (0..N).map(|i| read_json(&run_report(&sharded.path(&format!("reports/shard-{i}-of-{N}"))))).collect();
    for (i, r) in parts.iter().enumerate() {
        assert_eq!(r["shard"]["index"], i as u64);
        assert_eq!(r["shard"]["count"], N as u64);
        // Its CSV says so on every row, not as `i/n`, which a spreadsheet reads as a date.
        let csv = run_report(&sharded.path(&format!("reports/shard-{i}-of-{N}"))).with_extension("csv");
        let mut csv = csv::Reader::from_path(&csv).unwrap();
        let at = csv.headers().unwrap().iter().position(|h| h == "shard").expect("the column");
        let cells: Vec<String> = csv.records().map(|r| r.unwrap()[at].to_string()).collect();
        assert!(!cells.is_empty() && cells.iter().all(|c| *c == format!("{i} of {N}")), "{cells:?}");
        assert_eq!(r["status"], "complete");
        let names: Vec<&str> = r["policies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        for name in ["customers", "accounts"] {
            assert!(names.contains(&name), "key-sharded {name} is processed by every shard");
        }
        for name in ["events", "leads", "tickets"] {
            let owner = lapse::shard::Shard::owner(name, N) == i as u32;
            assert_eq!(names.contains(&name), owner, "{name} belongs to shard {}", lapse::shard::Shard::owner(name, N));
        }
        let accounts = r["policies"].as_array().unwrap().iter().find(|p| p["name"] == "accounts").unwrap();
        assert!(accounts["deleted"].as_u64().unwrap() > 0, "every shard took a part of accounts");
    }
    let combined = totals(&parts);
    let expected = totals(std::slice::from_ref(&one));
    assert_eq!(combined, expected, "the shards' counts add up to the single worker's");
    assert!(expected["customers"]["held"] > 0 && expected["customers"]["fields_anonymized"] > 0);
    assert!(expected["accounts"]["dependents:sessions"] > 0);

    // The combined report of the shards says the same, and refuses an incomplete set.
    let out = sharded.path("combined.json");
    let dirs: Vec<String> =
        (0..N).map(|i| sharded.path(&format!("reports/shard-{i}-of-{N}")).display().to_string()).collect();
    let mut args = vec!["report", "combine"];
    args.extend(dirs.iter().map(String::as_str));
    let out_s = out.display().to_string();
    args.extend(["--out", &out_s]);
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&args).output().unwrap());
    r.ok();
    let c = read_json(&out);
    assert_eq!(c["shard_count"], N as u64);
    assert_eq!(c["cutoff"], one["cutoff"]);
    for (name, want) in &expected {
        let p = c["policies"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str()).unwrap();
        for k in COUNTS {
            assert_eq!(p[k].as_u64().unwrap(), want[k], "combined {name}.{k}");
        }
    }
    // A shard whose evidence was cut short, and lines recovered for an earlier run: carried into
    // the combined report (before, dropped; found by a review). Edited into a copy of the
    // shards' reports (unsigned checks: `combine` without --public-key reads them as they are).
    let copies: Vec<String> = (0..N)
        .map(|i| {
            let to = sharded.path(&format!("copy/shard-{i}-of-{N}"));
            std::fs::create_dir_all(&to).unwrap();
            let from = run_report(&sharded.path(&format!("reports/shard-{i}-of-{N}")));
            let mut r = read_json(&from);
            if i == 1 {
                r["evidence_incomplete"] = true.into();
                r["policies"][0]["evidence_recovered"] = 3.into();
            }
            std::fs::write(to.join(from.file_name().unwrap()), serde_json::to_vec_pretty(&r).unwrap()).unwrap();
            to.display().to_string()
        })
        .collect();
    let mut cargs = vec!["report", "combine"];
    cargs.extend(copies.iter().map(String::as_str));
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&cargs).output().unwrap());
    r.ok();
    assert!(r.stdout.contains("shard 1's evidence file was cut short by a write error"), "{}", r.stdout);
    cargs.insert(2, "--json");
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&cargs).output().unwrap());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(j["shards"][1]["evidence_incomplete"], true, "{j:#}");
    let recovered: u64 =
        j["policies"].as_array().unwrap().iter().map(|p| p["evidence_recovered"].as_u64().unwrap_or(0)).sum();
    assert_eq!(recovered, 3, "{j:#}");
    let missing = crate::common::Run::from(
        Command::new(crate::common::lapse_bin()).args(["report", "combine", &dirs[0], &dirs[2]]).output().unwrap(),
    );
    missing.code(2).stderr_has("shard 1 of 3 is missing");

    // Shard 1's run as if killed before its report (the report never written): the shard's
    // next run accounts for its evidence, and the combined report of that run says which shard.
    let dir1 = sharded.path(&format!("reports/shard-1-of-{N}"));
    let killed = run_report(&dir1);
    let killed_name = killed.file_name().unwrap().to_string_lossy().into_owned();
    for suffix in ["json", "json.sig", "csv"] {
        let _ = std::fs::remove_file(killed.with_extension(suffix));
    }
    for i in 0..N {
        let out = lapse_cmd(&sharded, &["run", "--shard", &format!("{i}/{N}")]).output().unwrap();
        crate::common::Run::from(out).ok();
    }
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&args).output().unwrap());
    r.ok();
    assert!(r.stdout.contains("shard 1 accounts for the evidence of 1 earlier run(s)"), "{}", r.stdout);
    let c = read_json(&out);
    let shards = c["shards"].as_array().unwrap();
    assert_eq!(shards[1]["interrupted_runs"], serde_json::json!([killed_name]), "{c:#}");
    assert!(shards[0].get("interrupted_runs").is_none() && shards[2].get("interrupted_runs").is_none(), "{c:#}");

    // `verify --journal` on one shard's directory reads its siblings' reports too: the journal
    // of a key-sharded policy holds every shard's runs, each accounted for (the killed one by
    // shard 1's next report). A shard directory without its siblings is no answer.
    let public = sharded.path("unused.pub");
    std::fs::write(&public, lapse::integrity::Signer::generate().public_hex()).unwrap();
    let verify_journal = |dir: &std::path::Path| {
        crate::common::Run::from(
            Command::new(crate::common::lapse_bin())
                .args(["report", "verify"])
                .arg(dir)
                .arg("--public-key")
                .arg(&public)
                .args(["--journal", "--json", "-c"])
                .arg(sharded.path("lapse.yaml"))
                .output()
                .unwrap(),
        )
    };
    let r = verify_journal(&dir1);
    let v: Json = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    let unaccounted: Vec<&Json> =
        v["findings"].as_array().unwrap().iter().filter(|f| f["problem"] == "unaccounted-run").collect();
    assert!(unaccounted.is_empty(), "{unaccounted:#?}");
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("each accounted for")), "{v:#}");
    let alone = sharded.path(&format!("alone/shard-1-of-{N}"));
    std::fs::create_dir_all(&alone).unwrap();
    for e in std::fs::read_dir(&dir1).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), alone.join(e.file_name())).unwrap();
        }
    }
    verify_journal(&alone).code(2).stderr_has("needs the reports of every shard");
    // Shard 1's reports copied in place of shard 0's: `verify` of that directory says so
    // (before, it passed; found by a review).
    let swapped = sharded.path(&format!("swapped/shard-0-of-{N}"));
    std::fs::create_dir_all(&swapped).unwrap();
    for e in std::fs::read_dir(&dir1).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), swapped.join(e.file_name())).unwrap();
        }
    }
    let r = crate::common::Run::from(
        Command::new(crate::common::lapse_bin())
            .args(["report", "verify"])
            .arg(&swapped)
            .arg("--public-key")
            .arg(&public)
            .output()
            .unwrap(),
    );
    assert!(
        r.stdout.contains(&format!("is the report of shard 1 of {N}, in the directory of shard 0 of {N}")),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Given as `.` inside it: the same.
    let r = crate::common::Run::from(
        Command::new(crate::common::lapse_bin())
            .args(["report", "verify", ".", "--public-key"])
            .arg(&public)
            .current_dir(&swapped)
            .output()
            .unwrap(),
    );
    assert!(r.stdout.contains(&format!("is the report of shard 1 of {N}")), "{}{}", r.stdout, r.stderr);
    // A look-up in one shard's reports that finds nothing is no answer (exit 2): another shard
    // may have destroyed it (before, "NOTHING FOUND", exit 5).
    let r = crate::common::Run::from(
        Command::new(crate::common::lapse_bin())
            .args(["report", "lookup"])
            .arg(&dir1)
            .args(["--subject", "C-nobody", "-c"])
            .arg(sharded.path("lapse.yaml"))
            .output()
            .unwrap(),
    );
    r.code(2);
    assert!(
        r.stdout.contains(&format!("NOT ANSWERED: these are the reports of shard 1 of {N} of a sharded run only")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);

    // Shards limited to other policies are not one run: before, shard 0 run with `--policy
    // customers` beside whole shards combined as "complete", its share of the others left out.
    let run_shards = |only: &[&str], every_shard: bool| {
        for i in 0..N {
            let shard = format!("{i}/{N}");
            let mut a = vec!["run", "--shard", shard.as_str()];
            if i == 0 || every_shard {
                a.extend(only.iter().flat_map(|p| ["--policy", *p]));
            }
            crate::common::Run::from(lapse_cmd(&sharded, &a).output().unwrap()).ok();
        }
    };
    // (Both split by key, so each shard still has its share of them: only the selection tells.)
    run_shards(&["customers", "accounts"], false);
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&args).output().unwrap());
    r.code(2).stderr_has("the policies selected with --policy differs");
    run_shards(&["customers", "accounts"], true);
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&args).output().unwrap());
    r.ok();
    assert!(r.stdout.contains("limited to the policies accounts, customers (--policy)"), "{}", r.stdout);
    assert_eq!(read_json(&out)["selected_policies"], serde_json::json!(["accounts", "customers"]));
    assert!(r.stdout.contains("signatures were not checked"), "{}", r.stdout);

    // With --public-key, a shard report no given key signed (these are unsigned) is refused.
    let mut signed = args.clone();
    signed.extend(["--public-key", public.to_str().unwrap()]);
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&signed).output().unwrap());
    r.code(4).stderr_has("does not verify");
    // A shard that read another holds file did not enforce the same run: before, combined.
    let holds = std::fs::read_to_string(sharded.path("holds.yaml")).unwrap();
    std::fs::write(sharded.path("holds.yaml"), format!("{holds}# edited\n")).unwrap();
    crate::common::Run::from(lapse_cmd(&sharded, &["run", "--shard", &format!("1/{N}")]).output().unwrap()).ok();
    let r = crate::common::Run::from(Command::new(crate::common::lapse_bin()).args(&args).output().unwrap());
    r.code(2).stderr_has("the holds file (its keyed digest) differs");
}

/// A shard retried at the same cutoff (the chart's per-index retries, or a run started again)
/// leaves two run reports of the same run in its directory; each destroyed what it reports.
/// `combine` takes them all: what they destroyed summed, the rows total and due as the first
/// attempt found them, the kept rows as the last left them, and the earlier attempt named.
/// Before, only the newest report of each shard directory was read: the first attempt's
/// destructions (and its status) were left out of the combined summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_shards_attempts_are_all_combined() {
    const N: u32 = 2;
    let single = workspace(Backend::Sqlite).await;
    let sharded = workspace(Backend::Sqlite).await;
    single.lapse(&["run", "--batch-size", "7"]).ok();
    let one = read_json(&run_report(&single.path("reports")));
    for i in 0..N {
        let shard = format!("{i}/{N}");
        // A first attempt that stops after one batch of each stage (with its report), then the retry.
        let first = lapse_cmd(&sharded, &["run", "--shard", &shard, "--max-batches", "1"]).output().unwrap();
        assert!(first.status.code().is_some(), "{first:?}");
        crate::common::Run::from(lapse_cmd(&sharded, &["run", "--shard", &shard]).output().unwrap()).ok();
    }
    assert_eq!(snapshot(&sharded).await, snapshot(&single).await, "the attempts left the data as one worker did");
    let dirs: Vec<String> =
        (0..N).map(|i| sharded.path(&format!("reports/shard-{i}-of-{N}")).display().to_string()).collect();
    let out = sharded.path("combined.json");
    let combine = || {
        crate::common::Run::from(
            Command::new(crate::common::lapse_bin())
                .args(["report", "combine", &dirs[0], &dirs[1], "--out"])
                .arg(&out)
                .output()
                .unwrap(),
        )
    };
    let r = combine();
    r.ok();
    assert!(r.stdout.contains("shard 0 was run 2 times at this cutoff (retried)"), "{}", r.stdout);
    let c = read_json(&out);
    let expected = totals(std::slice::from_ref(&one));
    let mut destroyed_by_first_attempts = 0;
    for (name, want) in &expected {
        let p = c["policies"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str()).unwrap();
        for k in COUNTS {
            assert_eq!(p[k].as_u64().unwrap(), want[k], "combined {name}.{k}:\n{c:#}");
        }
    }
    for (i, sh) in c["shards"].as_array().unwrap().iter().enumerate() {
        let attempts = sh["earlier_attempts"].as_array().unwrap_or_else(|| panic!("shard {i}: {c:#}"));
        assert_eq!(attempts.len(), 1, "{c:#}");
        let first = read_json(Path::new(attempts[0]["file"].as_str().unwrap()));
        destroyed_by_first_attempts +=
            first["policies"].as_array().unwrap().iter().map(|p| p["deleted"].as_u64().unwrap()).sum::<u64>();
    }
    assert!(destroyed_by_first_attempts > 0, "the first attempts destroyed something, counted once");

    // An attempt stopped before it began a policy (here: shard 0's first attempt, its last
    // policy made "not started", as an interrupt before it leaves it) counted nothing of it:
    // the combined totals are the retry's and it is verified (before, 0 and unverified; found
    // by a review).
    let first_attempt = c["shards"][0]["earlier_attempts"][0]["file"].as_str().unwrap().to_string();
    let mut r0 = read_json(Path::new(&first_attempt));
    let p = r0["policies"].as_array_mut().unwrap().last_mut().unwrap();
    let name = p["name"].as_str().unwrap().to_string();
    for k in ["rows_total", "rows_due", "deleted", "anonymized", "fields_anonymized", "held", "failed"] {
        if p.get(k).is_some() {
            p[k] = serde_json::json!(0);
        }
    }
    p["outcome"] = serde_json::json!("interrupted");
    p["errors"] = serde_json::json!(["not started: the run was interrupted before this policy"]);
    p["verification"]["verified"] = serde_json::json!(false);
    std::fs::write(&first_attempt, serde_json::to_vec_pretty(&r0).unwrap()).unwrap();
    combine().ok();
    let again = read_json(&out);
    let p = again["policies"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str()).unwrap();
    // Shard 0's from its retry, shard 1's from its first attempt (none where the policy is
    // whole, run by one shard).
    let of = |file: &Json, k: &str| {
        let r = read_json(Path::new(file.as_str().unwrap()));
        let p = r["policies"].as_array().unwrap().iter().find(|p| p["name"] == name.as_str());
        p.map_or(0, |p| p[k].as_u64().unwrap())
    };
    let shards = again["shards"].as_array().unwrap();
    for k in ["rows_total", "rows_due"] {
        let want = of(&shards[0]["file"], k) + of(&shards[1]["earlier_attempts"][0]["file"], k);
        assert!(want > 0, "{k}");
        assert_eq!(p[k].as_u64().unwrap(), want, "combined {name}.{k}:\n{again:#}");
    }
    assert_eq!(p["verified"], serde_json::json!(true), "{again:#}");
    // The last attempt (shard 1's) stopped before the policy instead: what was kept and the
    // outcome are its first attempt's (before, the interrupted attempt's zeros).
    let retry = again["shards"][1]["file"].as_str().unwrap().to_string();
    let earlier_one = again["shards"][1]["earlier_attempts"][0]["file"].as_str().unwrap().to_string();
    let mut r1 = read_json(Path::new(&retry));
    let keyed = r1["policies"].as_array().unwrap().iter().position(|p| p["name"] == "customers");
    if let Some(i) = keyed {
        let p = &mut r1["policies"][i];
        for k in ["rows_total", "rows_due", "deleted", "anonymized", "fields_anonymized", "held", "failed"] {
            p[k] = serde_json::json!(0);
        }
        p["outcome"] = serde_json::json!("interrupted");
        p["errors"] = serde_json::json!(["not started: the run was interrupted before this policy"]);
        std::fs::write(&retry, serde_json::to_vec_pretty(&r1).unwrap()).unwrap();
        combine().ok();
        let third = read_json(&out);
        let c = third["policies"].as_array().unwrap().iter().find(|p| p["name"] == "customers").unwrap();
        let first = read_json(Path::new(&earlier_one));
        let f1 = first["policies"].as_array().unwrap().iter().find(|p| p["name"] == "customers").unwrap();
        let r0 = read_json(Path::new(third["shards"][0]["file"].as_str().unwrap()));
        let s0 = r0["policies"].as_array().unwrap().iter().find(|p| p["name"] == "customers").unwrap();
        assert_eq!(c["held"].as_u64(), Some(f1["held"].as_u64().unwrap() + s0["held"].as_u64().unwrap()), "{third:#}");
    }
}

/// A policy split by key needs a single integer key: a text key is refused before anything runs.
pub async fn key_sharding_needs_an_integer_key(b: Backend) {
    let f = workspace(b).await;
    f.policy("tickets", &format!("{}shard_by_key: true\n", whole("tickets", "code", "body", "free_text")));
    f.lapse(&["validate", "--connect"]).code(2).stderr_has("shard_by_key needs an integer key column; 'code'");
    let before = snapshot(&f).await;
    f.lapse(&["run", "--shard", "0/2"]).code(2);
    assert_eq!(snapshot(&f).await, before, "nothing destroyed");
}

/// `--shard` is checked: out of range is a usage error.
pub async fn bad_shard_argument(b: Backend) {
    let f = workspace(b).await;
    let r = f.lapse(&["plan", "--shard", "3/3"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("0 <= INDEX < COUNT"), "{}", r.stderr);
}

per_backend!(shards_destroy_what_one_worker_destroys, key_sharding_needs_an_integer_key, bad_shard_argument);

/// Object stores: a key-sharded policy is split by a stable hash of the object key; the shards
/// together delete exactly the objects one worker deletes.
async fn object_shards_destroy_what_one_worker_destroys(kind: crate::objects::StoreKind) {
    use crate::objects::Store;
    const N: u32 = 3;
    let single = Store::new(kind, false, false).await;
    let sharded = Store::new(kind, false, false).await;
    // moto answers a ListObjectVersions whose key-marker no longer exists (the last key of the
    // previous batch, just deleted) by skipping the next key, which real S3 does not: on S3 one
    // batch takes everything, so no listing resumes after a deleted key.
    let batch = if kind == crate::objects::StoreKind::S3 { 100 } else { 4 };
    for s in [&single, &sharded] {
        for i in 0..60 {
            let day = format!("{}/{:02}/{:02}", 2019 + i % 7, 1 + i % 12, 1 + i % 28);
            s.put(&format!("exports/{day}/S-{i}.csv"), "id,email").await;
        }
        s.put("exports/undated/S-x.csv", "no date").await;
        s.policy(
            "  key_pattern: \"exports/{yyyy}/{mm}/{dd}/{subject}.csv\"\n  subject: key\n",
            "  - { name: reporting, legal_basis: legitimate_interests, retain: 2y, after: key_date }\n",
            &format!("guardrail: {{ max_share: 100% }}\nshard_by_key: true\nbatch_size: {batch}\n"),
        );
        s.f.holds("holds:\n  - { id: LH-1, matter: m, subjects: [S-7, S-14] }\n");
    }
    single.f.lapse(&["run"]).ok();
    let mut deleted = 0;
    for i in 0..N {
        sharded.f.lapse(&["run", "--shard", &format!("{i}/{N}")]).ok();
        let r = read_json(&run_report(&sharded.f.path(&format!("reports/shard-{i}-of-{N}"))));
        let d = r["policies"][0]["deleted"].as_u64().unwrap();
        assert!(d > 0, "shard {i} took a part");
        deleted += d;
    }
    let one = read_json(&run_report(&single.f.path("reports")));
    assert_eq!(deleted, one["policies"][0]["deleted"].as_u64().unwrap());
    assert!(deleted > 10);
    // (The directory store's run-lock files, `.lapse-lock-*`, are not data.)
    let data = |keys: Vec<String>| keys.into_iter().filter(|k| !k.starts_with(".lapse-lock-")).collect::<Vec<_>>();
    assert_eq!(data(sharded.keys().await), data(single.keys().await), "the same objects are left");
}

/// The shard layout changed (3 shards, then 2, then none) after a run of the old layout was
/// killed between deleting objects and recording them: its write-ahead intents are in
/// `reports/shard-1-of-3/`, which no run of the new layout reads. A run of the new layout names
/// them and the run that reconciles them, and fails the policy (exit 1) rather than leave that
/// run's destructions in no report without a word; once the old layout's shard has run (and
/// reconciled them), the new layout runs clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_of_an_earlier_shard_layout_are_named_until_reconciled() {
    use crate::objects::{Store, StoreKind};
    // The newest run report of a directory (several runs write to each here).
    let newest = |dir: &Path| {
        lapse::integrity::run_reports(dir)
            .iter()
            .map(|p| read_json(p))
            .max_by_key(|r| r["sequence"].as_u64())
            .unwrap_or_else(|| panic!("no run report in {}", dir.display()))
    };
    let s = Store::new(StoreKind::Dir, false, false).await;
    for i in 0..30 {
        s.put(&format!("exports/{}/01/01/S-{i}.csv", 2019 + i % 3), "id,email").await;
    }
    s.policy(
        "  key_pattern: \"exports/{yyyy}/{mm}/{dd}/{subject}.csv\"\n  subject: key\n",
        "  - { name: reporting, legal_basis: legitimate_interests, retain: 2y, after: key_date }\n",
        "guardrail: { max_share: 100% }\nshard_by_key: true\n",
    );
    s.f.lapse(&["run", "--shard", "1/3"]).ok();
    let old = s.f.path("reports/shard-1-of-3");
    let key_id = newest(&old)["evidence_key_id"].as_str().unwrap().to_string();
    // What the killed run left: the intent of a deletion it made (the object is gone) and
    // never recorded.
    let intent = serde_json::json!({
        "kind": "intent", "run_id": "0badc0de-0000-4000-8000-000000000001", "policy": "exports",
        "stage": "record", "action": "deleted", "batch": 1, "record": "f".repeat(64),
        "key_id": key_id, "at": "2026-01-01T00:00:00Z"
    });
    let intents = old.join("lapse-run-20260101T000000Z-0badc0de.intents.jsonl");
    std::fs::write(&intents, format!("{intent}\n")).unwrap();

    for args in [&["run", "--shard", "0/2"][..], &["run"][..]] {
        let r = s.f.lapse(args);
        r.code(1);
        let dir = if args.len() > 1 { "reports/shard-0-of-2" } else { "reports" };
        let report = newest(&s.f.path(dir));
        let p = &report["policies"][0];
        assert_eq!(p["outcome"], "failed", "{args:?}: {p}");
        let errors = p["errors"].to_string();
        assert!(
            errors.contains("1 write-ahead intents of interrupted run 0badc0de-0000-4000-8000-000000000001")
                && errors.contains("shard-1-of-3")
                && errors.contains("run `lapse run --shard 1/3` once"),
            "{args:?}: {errors}"
        );
        assert!(p["deleted"].as_u64().unwrap() > 0, "{args:?}: the policy still ran: {p}");
        assert!(intents.exists(), "{args:?}: not this layout's to resolve");
    }
    // The old layout's shard reconciles them; then the new layout runs clean.
    s.f.lapse(&["run", "--shard", "1/3"]).ok();
    let p = &newest(&old)["policies"][0];
    assert_eq!(p["reconciled"], 1, "{p}");
    assert!(!intents.exists());
    s.f.lapse(&["run", "--shard", "0/2"]).ok();
    let p = &newest(&s.f.path("reports/shard-0-of-2"))["policies"][0];
    assert_eq!(p["errors"], serde_json::json!([]), "{p}");

    // The policy no longer split by key, same shard count: it goes whole to one shard, and the
    // intents a killed run of the other shard left for it are that shard's no longer. Named,
    // with the configuration the reconciling run needs.
    let owner = lapse::shard::Shard::owner("exports", 2);
    let other = 1 - owner;
    let policy = std::fs::read_to_string(s.f.path("policies/exports.yaml")).unwrap();
    std::fs::write(s.f.path("policies/exports.yaml"), policy.replace("shard_by_key: true\n", "")).unwrap();
    let left = s.f.path(&format!("reports/shard-{other}-of-2/lapse-run-20260101T000000Z-0badc0de.intents.jsonl"));
    std::fs::create_dir_all(left.parent().unwrap()).unwrap();
    std::fs::write(&left, format!("{intent}\n")).unwrap();
    let r = s.f.lapse(&["run", "--shard", &format!("{owner}/2")]);
    r.code(1);
    let p = &newest(&s.f.path(&format!("reports/shard-{owner}-of-2")))["policies"][0];
    let errors = p["errors"].to_string();
    assert!(
        errors.contains(&format!("shard-{other}-of-2"))
            && errors.contains("no run of the current configuration reads them for this policy")
            && errors.contains(&format!("`lapse run --shard {other}/2` once under the configuration that wrote them")),
        "{errors}"
    );
    assert!(left.exists());
}

mod objects {
    use crate::objects::StoreKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn directory_shards_destroy_what_one_worker_destroys() {
        super::object_shards_destroy_what_one_worker_destroys(StoreKind::Dir).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_shards_destroy_what_one_worker_destroys() {
        super::object_shards_destroy_what_one_worker_destroys(StoreKind::S3).await;
    }
}

/// Found by a read-only review of the operational surface: a sharded run opened, checked and
/// prepared every policy's connection, not only its shard's: one database down (or one broken
/// table) failed every shard of the run, nothing enforced anywhere. Now a shard needs only its
/// own policies' databases; the shard that owns the broken one fails, the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_needs_only_its_own_databases() {
    const N: u32 = 3;
    let f = workspace(Backend::Sqlite).await;
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    std::fs::write(
        f.path("lapse.yaml"),
        cfg.replacen("connections:\n", "connections:\n  broken:\n    url: sqlite://no-such-dir/x.db\n", 1),
    )
    .unwrap();
    f.policy(
        "ghost",
        &whole("ghosts", "id", "email", "email")
            .replace("name: ghosts", "name: ghost")
            .replace("connection: db", "connection: broken"),
    );
    let owner = lapse::shard::Shard::owner("ghost", N);
    let other = (owner + 1) % N;
    let r = crate::common::Run::from(lapse_cmd(&f, &["run", "--shard", &format!("{other}/{N}")]).output().unwrap());
    r.ok();
    let r = crate::common::Run::from(lapse_cmd(&f, &["run", "--shard", &format!("{owner}/{N}")]).output().unwrap());
    assert_ne!(r.code, 0, "the shard that owns the broken policy fails:\n{}", r.stderr);
    assert!(r.stderr.contains("broken"), "{}", r.stderr);
    // Found by a review of the fix above: a shard that takes none of the policies asked for
    // with --policy ran every policy it takes (an empty selection meant all). It runs nothing.
    let (shard, asked) = (0..N)
        .flat_map(|i| ["events", "leads", "tickets"].map(|p| (i, p)))
        .find(|(i, p)| lapse::shard::Shard::owner(p, N) != *i)
        .unwrap();
    let before = f.db.count(&format!("SELECT COUNT(*) FROM {asked}")).await;
    let r = crate::common::Run::from(
        lapse_cmd(&f, &["run", "--shard", &format!("{shard}/{N}"), "--policy", asked]).output().unwrap(),
    );
    r.ok();
    let report = read_json(&run_report(&f.path(&format!("reports/shard-{shard}-of-{N}"))));
    assert_eq!(report["policies"].as_array().map(Vec::len), Some(0), "{report:#}");
    assert_eq!(report["selected_policies"], serde_json::json!([asked]), "{report:#}");
    assert_eq!(f.db.count(&format!("SELECT COUNT(*) FROM {asked}")).await, before);
    // A typo in --allow-share is said (before, ignored: the guardrail stopped the run again).
    f.lapse(&["plan", "--allow-share", "custmers"])
        .code(2)
        .stderr_has("--allow-share: unknown policy 'custmers' (did you mean 'customers'?");
}
