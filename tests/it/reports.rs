//! Reports after the fact, on SQLite: `report verify` names every kind of tampering, `report
//! lookup` answers for destroyed, held and unknown subjects, `report render` produces HTML that
//! headless Chromium renders (summary and chart) and that, like the CSV, carries no personal
//! value; `keygen` writes usable keys; the committed JSON Schema matches the types.
//!
//! The fixture: the conformance seed (`people`, 8 rows), a delete policy lapsing after one year,
//! a file hold on subject `S-HELD` whose matter and reason try to inject markup, report signing
//! on, then one plan and four runs: a chain of run reports with sequences 1..4, the first with
//! the evidence of 4 deleted records (rows 1, 2, 3, 8; row 7 is held).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{repo_root, Backend, Fixture, Run};
use crate::conformance::seeded;

const POLICY: &str = "name: people
description: \"<script>alert('description')</script>\"
dataset:
  connection: db
  table: people
  key: id
  subject: subject
personal:
  email: { category: email }
  full_name: { category: name }
  ip: { category: ip_address }
  birth: { category: date_of_birth }
  postcode: { category: postal_address }
  score: { category: account_id }
purposes:
  - name: service
    legal_basis: contract
    retain: 1y
    after: created_at
on_lapse: delete
guardrail:
  max_share: 100%
";

const HOLDS: &str = "holds:
  - id: LH-1
    matter: \"<script>alert('matter')</script> Doe & <b>Sons</b>\"
    reason: '\"><img src=x onerror=alert(1)>'
    subjects: [S-HELD]
";

/// Every personal value of the conformance seed (subjects included).
fn personal_values() -> Vec<String> {
    let mut v = vec!["1980-05-17".to_string(), "2001:db8:85a3:1234".to_string(), "S-HELD".to_string()];
    for id in 1..=8 {
        v.push(format!("person{id}@example.com"));
        v.push(format!("Person Number{id}"));
        v.push(format!("203.0.113.{}", 10 + id));
        v.push(format!("SW1A {id}AA"));
        v.push(format!("S-{id}"));
    }
    v
}

/// `lapse <args>` without the fixture's `-c`.
fn lapse(args: &[&str]) -> Run {
    let out = Command::new(crate::common::lapse_bin())
        .args(args)
        .env("LAPSE_LOG", "lapse=warn")
        .env_remove("LAPSE_CONFIG")
        .output()
        .expect("run lapse");
    Run::from(out)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A signed chain: one plan and four runs. Returns the fixture and the public key file.
async fn signed_chain() -> (Fixture, PathBuf) {
    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    f.holds(HOLDS);
    f.lapse(&["plan"]).ok();
    for _ in 0..4 {
        f.lapse(&["run"]).ok();
    }
    (f, public)
}

/// The secret signing key given for the public one (`signing.key` for `signing.pub`): said so
/// (before, "wrong public key … or the report was altered"; found by a README walkthrough).
/// Half of all seeds are no valid public key at all; the other half are read as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_secret_key_given_for_the_public_one() {
    let f = seeded(Backend::Sqlite).await;
    f.sign_reports();
    f.policy("people", POLICY);
    f.lapse(&["run"]).ok();
    let r = lapse(&["report", "verify", p(&f.path("reports")), "--public-key", p(&f.path("signing.key"))]);
    assert_ne!(r.code, 0);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("is the signing key") && said.contains("itself (its secret), not its public key")
            || said.contains("if this is the signing key's secret, signing.key, pass its public key, signing.pub"),
        "{said}"
    );
}

/// A removed newest report, whose sequence the next run then takes, leaves the chain whole:
/// verify says so, prints the newest report's name and SHA-256 to keep, and `--known` with a
/// kept line finds the report gone (or altered). Before, the only advice was to compare the
/// last sequence, which the next run had taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_report_one_kept_a_record_of() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let r = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    r.ok();
    let newest = by_sequence(&dir).last_key_value().map(|(_, n)| n.clone()).unwrap();
    let sha = lapse::integrity::sha256_hex(&std::fs::read(dir.join(&newest)).unwrap());
    let kept = format!("{newest}:{sha}");
    assert!(r.stdout.contains(&format!("--known {kept}")), "{}", r.stdout);
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--known", &kept]).ok();
    // The newest report removed, with all its files, and a later run.
    let stem = newest.trim_end_matches(".json").to_string();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with(&stem) {
            std::fs::remove_file(path).unwrap();
        }
    }
    f.lapse(&["run"]).ok();
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).ok();
    let r = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--known", &kept]);
    r.code(4);
    assert!(r.stdout.contains("missing") && r.stdout.contains("a report you recorded was removed"), "{}", r.stdout);
    // Another report's bytes under a kept name: altered.
    let other = by_sequence(&dir).first_key_value().map(|(_, n)| n.clone()).unwrap();
    let r = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--known", &format!("{other}:{sha}")]);
    r.code(4);
    assert!(r.stdout.contains("is not the report you knew"), "{}", r.stdout);
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--known", "nonsense"]).code(2);
}

/// Run reports of a directory by sequence.
fn by_sequence(dir: &Path) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("lapse-run-") && name.ends_with(".json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
            m.insert(v["sequence"].as_u64().unwrap(), name);
        }
    }
    m
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The line `verify` prints for a report (`ok`/`FAIL`, name, ...).
fn status_line<'a>(out: &'a str, file: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(file))
        .unwrap_or_else(|| panic!("no line for {file}:\n{out}"))
}

/// The problems `verify` printed as (kind, line).
fn problems(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with("problems"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| (l.split_whitespace().next().unwrap().to_string(), l.trim().to_string()))
        .collect()
}

#[track_caller]
fn has_problem(out: &str, kind: &str, needles: &[&str]) {
    assert!(
        problems(out).iter().any(|(k, l)| k == kind && needles.iter().all(|n| l.contains(n))),
        "no '{kind}' problem mentioning {needles:?}:\n{out}"
    );
}

/// The signing key is rotated part-way through a chain: `verify` takes every key the chain was
/// signed with (each report is checked with the key it names) and, given only the new one,
/// names the reports signed with the old key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_follows_a_key_rotation() {
    let (f, old) = signed_chain().await;
    let old_copy = f.path("old.pub");
    std::fs::copy(&old, &old_copy).unwrap();
    // A new key pair in place of the old one; the chain goes on.
    let new = lapse::integrity::Signer::generate();
    std::fs::write(f.path("signing.key"), new.secret_hex()).unwrap();
    std::fs::write(f.path("new.pub"), new.public_hex()).unwrap();
    for _ in 0..2 {
        f.lapse(&["run"]).ok();
    }
    let dir = f.path("reports");
    let seqs = by_sequence(&dir);
    assert_eq!(seqs.len(), 6);
    // The first report under the new key says, signed, that the one it follows is not signed by
    // that key (a forged head would be chained to the same way); the next one does not.
    let report = |seq: u64| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(&seqs[&seq])).unwrap()).unwrap()
    };
    let said = report(5)["previous_unverified"].as_str().unwrap_or_default().to_string();
    assert!(said.contains(&seqs[&4]) && said.contains("carries no signature by this run's signing key"), "{said}");
    assert!(report(6).get("previous_unverified").is_none() && report(4).get("previous_unverified").is_none());
    let both =
        lapse(&["report", "verify", p(&dir), "--public-key", p(&old_copy), "--public-key", p(&f.path("new.pub"))]);
    both.ok();
    assert!(both.stdout.contains("sequences 1..6") && both.stdout.contains("result: OK"), "{}", both.stdout);
    assert!(both.stdout.contains(&format!("{} says: the previous report {}", seqs[&5], seqs[&4])), "{}", both.stdout);
    let only_new = lapse(&["report", "verify", p(&dir), "--public-key", p(&f.path("new.pub"))]);
    only_new.code(4);
    let old_id = lapse::integrity::key_id(&lapse::integrity::read_public_key(&old_copy).unwrap());
    has_problem(&only_new.stdout, "signature-invalid", &[&seqs[&4], &format!("names signing key {old_id}")]);
    assert!(status_line(&only_new.stdout, &seqs[&5]).starts_with("  ok"), "{}", only_new.stdout);
    // A key that did not sign anything here changes nothing for the others.
    let stray = lapse::integrity::Signer::generate();
    std::fs::write(f.path("stray.pub"), stray.public_hex()).unwrap();
    lapse(&[
        "report",
        "verify",
        p(&dir),
        "--public-key",
        p(&f.path("stray.pub")),
        "--public-key",
        p(&old_copy),
        "--public-key",
        p(&f.path("new.pub")),
    ])
    .ok();
}

/// The oldest reports are deleted when their own retention ends: `--first-sequence` says where
/// the kept chain starts; without it, or with an earlier start, the deletion is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_chain_whose_oldest_reports_were_deleted() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let seqs = by_sequence(&dir);
    for s in [1, 2] {
        let stem = seqs[&s].trim_end_matches(".json").to_string();
        for suffix in [".json", ".json.sig", ".csv", ".evidence.jsonl"] {
            std::fs::remove_file(dir.join(format!("{stem}{suffix}"))).unwrap();
        }
    }
    let plain = lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    plain.code(4);
    has_problem(&plain.stdout, "missing", &["the chain does not start at 1"]);
    let kept = lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--first-sequence", "3"]);
    kept.ok();
    assert!(kept.stdout.contains("before sequence 3 are taken as deleted on purpose"), "{}", kept.stdout);
    let early = lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--first-sequence", "2"]);
    early.code(4);
    has_problem(&early.stdout, "missing", &[&seqs[&2]]);
    // A later report deleted is still found.
    let stem = seqs[&3].trim_end_matches(".json").to_string();
    std::fs::remove_file(dir.join(format!("{stem}.json"))).unwrap();
    let gap = lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--first-sequence", "3"]);
    gap.code(4);
    has_problem(&gap.stdout, "missing", &[&seqs[&3]]);
    lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--first-sequence", "0"]).code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_an_intact_chain() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let r = lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    r.ok();
    assert!(r.stdout.contains("result: OK"), "{}", r.stdout);
    assert!(r.stdout.contains("sequences 1..4"), "{}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    let seqs = by_sequence(&dir);
    assert_eq!(seqs.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(status_line(&r.stdout, &seqs[&1]).contains("evidence ok (4 records)"), "{}", r.stdout);
    // One file, and JSON output.
    lapse(&["report", "verify", p(&dir.join(&seqs[&3])), "--public-key", p(&public)]).ok();
    let j = lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--json"]);
    j.ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["chain"]["last_sequence"], 4);
    assert_eq!(v["reports"].as_array().unwrap().len(), 5, "4 runs and a plan");
    // Unsigned reports fail: the public key alone is the check.
    let g = seeded(Backend::Sqlite).await;
    g.policy("people", POLICY);
    g.lapse(&["run"]).ok();
    let u = lapse(&["report", "verify", p(&g.path("reports")), "--public-key", p(&public)]);
    u.code(4);
    has_problem(&u.stdout, "signature-missing", &["lapse-run-"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_tampering() {
    let (f, public) = signed_chain().await;
    let clean = f.path("reports");
    let seqs = by_sequence(&clean);
    let work = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut case = |what: &str| {
        n += 1;
        let d = work.path().join(format!("{n}-{what}"));
        copy_dir(&clean, &d);
        d
    };
    let verify = |d: &Path| {
        let r = lapse(&["report", "verify", p(d), "--public-key", p(&public)]);
        r.code(4);
        assert!(r.stdout.contains("result: FAILED"), "{}", r.stdout);
        r.stdout
    };

    // One byte changed in the middle of the chain: its signature fails and the next report's
    // link no longer matches; the others stay valid.
    let d = case("byte");
    let file = d.join(&seqs[&2]);
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replacen("\"rows_total\": 4", "\"rows_total\": 5", 1);
    assert_eq!(changed.len(), text.len());
    assert_ne!(changed, text, "the second run saw 4 rows");
    std::fs::write(&file, changed).unwrap();
    let out = verify(&d);
    has_problem(&out, "altered", &[&seqs[&2], "signature"]);
    has_problem(&out, "altered", &[&seqs[&2], &seqs[&3]]);
    assert!(status_line(&out, &seqs[&2]).starts_with("  FAIL"), "{out}");
    for s in [1, 3, 4] {
        assert!(status_line(&out, &seqs[&s]).starts_with("  ok"), "{out}");
    }

    // A report deleted from the middle of the chain.
    let d = case("deleted");
    std::fs::remove_file(d.join(&seqs[&3])).unwrap();
    let out = verify(&d);
    has_problem(
        &out,
        "missing",
        &[&seqs[&3], &format!("sequence 3 missing between {} (sequence 2) and {} (sequence 4)", seqs[&2], seqs[&4])],
    );

    // ... and with its signature, CSV and evidence, leaving no trace but the chain.
    let d = case("deleted-all");
    let stem = seqs[&3].trim_end_matches(".json");
    for suffix in [".json", ".json.sig", ".csv", ".evidence.jsonl"] {
        std::fs::remove_file(d.join(format!("{stem}{suffix}"))).unwrap();
    }
    let out = verify(&d);
    has_problem(&out, "missing", &[&seqs[&3], "sequence 3 missing between"]);

    // Two reports reordered: their files (and signatures) swap names.
    let d = case("renamed");
    let (a, b) = (&seqs[&2], &seqs[&3]);
    for suffix in ["", ".sig"] {
        let (pa, pb, tmp) = (d.join(format!("{a}{suffix}")), d.join(format!("{b}{suffix}")), d.join("swap.tmp"));
        std::fs::rename(&pa, &tmp).unwrap();
        std::fs::rename(&pb, &pa).unwrap();
        std::fs::rename(&tmp, &pb).unwrap();
    }
    let out = verify(&d);
    has_problem(&out, "out-of-order", &[a, "sequence 3", &format!("written as {b}")]);
    has_problem(&out, "out-of-order", &[b, "sequence 2", &format!("written as {a}")]);

    // Two reports reordered by swapping their sequence numbers.
    let d = case("resequenced");
    for (s, t) in [(2, 3), (3, 2)] {
        let file = d.join(&seqs[&s]);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replacen(&format!("\"sequence\": {s},"), &format!("\"sequence\": {t},"), 1))
            .unwrap();
    }
    let out = verify(&d);
    has_problem(&out, "altered", &[&seqs[&2], "signature"]);
    has_problem(&out, "altered", &[&seqs[&3], "signature"]);
    has_problem(&out, "broken-link", &[&seqs[&2]]);

    // Signatures swapped between two reports.
    let d = case("sigs");
    let (a, b) = (&seqs[&1], &seqs[&4]);
    let (sa, sb) = (d.join(format!("{a}.sig")), d.join(format!("{b}.sig")));
    let (ta, tb) = (std::fs::read(&sa).unwrap(), std::fs::read(&sb).unwrap());
    std::fs::write(&sa, tb).unwrap();
    std::fs::write(&sb, ta).unwrap();
    let out = verify(&d);
    has_problem(&out, "signature-swapped", &[a, &format!("is the signature of {b}")]);
    has_problem(&out, "signature-swapped", &[b, &format!("is the signature of {a}")]);

    // A signature removed.
    let d = case("unsigned");
    std::fs::remove_file(d.join(format!("{}.sig", seqs[&2]))).unwrap();
    has_problem(&verify(&d), "signature-missing", &[&seqs[&2]]);

    // The evidence of the first run altered (one byte of one record).
    let d = case("evidence");
    let ev = format!("{}.evidence.jsonl", seqs[&1].trim_end_matches(".json"));
    let text = std::fs::read_to_string(d.join(&ev)).unwrap();
    assert_eq!(text.lines().count(), 4);
    let i = text.find("\"batch\":1").unwrap() + "\"batch\":".len();
    let mut bytes = text.into_bytes();
    bytes[i] = b'2';
    std::fs::write(d.join(&ev), bytes).unwrap();
    let out = verify(&d);
    has_problem(&out, "evidence-altered", &[&ev, &seqs[&1]]);
    // ... or a record dropped.
    let d = case("evidence-line");
    let text = std::fs::read_to_string(d.join(&ev)).unwrap();
    let kept: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.join(&ev), kept).unwrap();
    has_problem(&verify(&d), "evidence-altered", &[&ev, "3 records", "4 records"]);

    // Another key.
    let other = work.path().join("other.pub");
    std::fs::write(&other, lapse::integrity::Signer::generate().public_hex()).unwrap();
    let r = lapse(&["report", "verify", p(&clean), "--public-key", p(&other)]);
    r.code(4);
    has_problem(&r.stdout, "signature-invalid", &[&seqs[&1], "wrong public key"]);
    // A bad key file is a usage error, not a verdict.
    std::fs::write(&other, "not a key").unwrap();
    lapse(&["report", "verify", p(&clean), "--public-key", p(&other)]).code(2);
}

/// A run killed between signing its report and renaming it into place left the signature and
/// a whole report under its temporary name: `verify` took that for a deleted report, for good.
/// The next run finishes the write (the signature checks), chains to it, and all verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_write_cut_short_is_finished_by_the_next_run() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let seqs = by_sequence(&dir);
    let newest = seqs[&4].clone();
    let stem = newest.strip_suffix(".json").unwrap();
    std::fs::rename(dir.join(&newest), dir.join(format!(".{stem}.json.tmp"))).unwrap();
    std::fs::remove_file(dir.join(format!("{stem}.csv"))).unwrap();
    // Meanwhile verify says what it is (before: a deleted report, for good), not a problem.
    let v = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    v.ok();
    assert!(v.stdout.contains(&format!("{newest} is not written yet")), "{}", v.stdout);
    f.lapse(&["run"]).ok();
    assert!(dir.join(&newest).exists(), "the cut-short report took its name");
    assert!(dir.join(format!("{stem}.csv")).exists());
    let seqs = by_sequence(&dir);
    assert_eq!(seqs.len(), 5, "{seqs:?}");
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).ok();

    // Killed before the signature was renamed into place: the next run finishes both.
    let newest = seqs[&5].clone();
    let stem = newest.strip_suffix(".json").unwrap();
    std::fs::rename(dir.join(&newest), dir.join(format!(".{stem}.json.tmp"))).unwrap();
    std::fs::remove_file(dir.join(format!("{stem}.csv"))).unwrap();
    std::fs::rename(dir.join(format!("{stem}.json.sig")), dir.join(format!(".{stem}.json.sig.tmp"))).unwrap();
    f.lapse(&["run"]).ok();
    assert!(dir.join(&newest).exists(), "the cut-short report took its name");
    assert!(dir.join(format!("{stem}.json.sig")).exists(), "with its signature");
    assert!(dir.join(format!("{stem}.csv")).exists());
    let seqs = by_sequence(&dir);
    assert_eq!(seqs.len(), 6);
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).ok();

    // A whole temporary report without a signature (planted by whoever can write here, or
    // altered after the run signed it) is never signed by a later run: it stays out of the
    // chain, and verify says it is there.
    let newest = seqs[&6].clone();
    let stem = newest.strip_suffix(".json").unwrap();
    let planted = std::fs::read_to_string(dir.join(&newest)).unwrap().replace("\"sequence\": 6", "\"sequence\": 7");
    let fake_stem = stem.replace("lapse-run-", "lapse-run-2099");
    std::fs::write(dir.join(format!(".{fake_stem}.json.tmp")), &planted).unwrap();
    let r = f.lapse(&["run"]);
    r.ok();
    assert!(r.stderr.contains("cannot finish"), "{}", r.stderr);
    assert!(!dir.join(format!("{fake_stem}.json")).exists(), "an unsigned report was taken in");
    assert!(!dir.join(format!("{fake_stem}.json.sig")).exists(), "an unsigned report was signed");
    let seqs = by_sequence(&dir);
    assert_eq!(seqs.len(), 7);
    let v = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    v.ok();
    assert!(v.stdout.contains("whose write did not finish"), "{}", v.stdout);
    std::fs::remove_file(dir.join(format!(".{fake_stem}.json.tmp"))).unwrap();

    // A signed temporary report the chain has moved past (a run killed, and another run, say
    // with a rotated key, took its sequence): finishing it would fork the chain; it is left.
    let newest = seqs[&7].clone();
    let stem = newest.strip_suffix(".json").unwrap();
    let late_stem = stem.replace("lapse-run-", "lapse-run-2099");
    std::fs::copy(dir.join(&newest), dir.join(format!(".{late_stem}.json.tmp"))).unwrap();
    std::fs::copy(dir.join(format!("{newest}.sig")), dir.join(format!(".{late_stem}.json.sig.tmp"))).unwrap();
    let r = f.lapse(&["run"]);
    r.ok();
    assert!(r.stderr.contains("moved past"), "{}", r.stderr);
    assert!(!dir.join(format!("{late_stem}.json")).exists(), "a superseded report was taken in");
    assert_eq!(by_sequence(&dir).len(), 8);
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).ok();
}

/// A SQLite `tickets` table (key of type `id_type`, subject, e-mail, anchor) holding `rows`, and
/// a delete policy on it lapsing a year after `created_at`.
async fn tickets(id_type: &str, rows: &str) -> Fixture {
    tickets_on(Backend::Sqlite, id_type, rows).await
}

async fn tickets_on(b: Backend, id_type: &str, rows: &str) -> Fixture {
    let f = Fixture::new(
        b,
        &format!(
            "CREATE TABLE tickets (id {id_type} NOT NULL PRIMARY KEY, subject TEXT, email TEXT, created_at TIMESTAMP);"
        ),
    )
    .await;
    f.db.exec(&format!("INSERT INTO tickets VALUES {rows}")).await;
    f.policy(
        "tickets",
        "name: tickets\ndataset:\n  connection: db\n  table: tickets\n  key: id\n  subject: subject\npersonal:\n  email: { category: email }\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    f
}

/// A run killed before its report leaves its evidence file, flushed batch by batch: the only
/// record of what it destroyed that a lookup here can read. Before, `lookup` searched only the
/// evidence that reports name and answered "NOTHING FOUND … lapse never destroyed it" (exit 5)
/// for a subject whose record that run had destroyed. No signed report vouches for that file
/// (a planted one reads the same), so what it says is UNCONFIRMED, no answer (exit 2); once the
/// next run accounts for it, it is DESTROYED (the test after this one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_searches_the_evidence_of_a_run_that_wrote_no_report() {
    let f = tickets(
        "INTEGER",
        "(1, '42', 'a@example.com', '2019-01-01 00:00:00'), (2, '43', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    // A first run, at a cutoff where nothing is due yet: a report to search.
    f.lapse_at("2019-06-01T00:00:00Z", &["run"]).ok();
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 1);
    // As if killed before its report: the report and its CSV never written.
    let report = f.latest("run", ".json");
    let ev_stem = report.file_stem().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_file(report.with_extension("csv")).unwrap();
    let dir = f.path("reports");
    // Found, but no signed report vouches for it (a planted file would read the same): no
    // answer (exit 2), not DESTROYED and not NOTHING FOUND.
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.code(2);
    assert!(r.stdout.contains("UNCONFIRMED: 1 line") && !r.stdout.contains("DESTROYED"), "{}", r.stdout);
    assert!(r.stdout.contains("wrote no report") || r.stderr.contains("wrote no report"), "{}{}", r.stdout, r.stderr);
    // And a subject it did not destroy is still nothing found.
    f.lapse(&["report", "lookup", p(&dir), "--subject", "43"]).code(5);
    // No report at all (a first run killed before its report): its evidence is still searched,
    // not refused as "nothing here to search".
    for r in lapse::integrity::run_reports(&dir) {
        std::fs::remove_file(&r).unwrap();
    }
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.code(2);
    assert!(r.stdout.contains("UNCONFIRMED: 1 line"), "{}", r.stdout);
    // A report that cannot be read is said to be so, not "no report".
    std::fs::write(dir.join(format!("{}.json", ev_stem)), "{ not a report").unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    assert!(r.stdout.contains("UNCONFIRMED: 1 line"), "{}", r.stdout);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("its report cannot be read"), "{}{}", r.stdout, r.stderr);
}

/// The evidence file of a run killed before its report, once a later report accounts for it,
/// is bound by that report's SHA-256: altered or gone, the lookup has no answer (exit 2), as
/// for a report's own evidence. Before, it was searched as if no report named it, and a line
/// taken out of it answered "NOTHING FOUND" (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_checks_the_evidence_a_later_report_accounts_for() {
    let f = tickets("INTEGER", "(1, '42', 'a@example.com', '2019-01-01 00:00:00')").await;
    f.lapse(&["run"]).ok();
    let report = f.latest("run", ".json");
    let evidence = f.latest("run", ".evidence.jsonl");
    std::fs::remove_file(&report).unwrap();
    std::fs::remove_file(report.with_extension("csv")).unwrap();
    // Killed in the middle of writing a line: the file ends cut short.
    let mut cut = std::fs::OpenOptions::new().append(true).open(&evidence).unwrap();
    std::io::Write::write_all(&mut cut, b"{\"record\":\"0123").unwrap();
    drop(cut);
    f.lapse(&["run"]).ok();
    let accounted = f.report("run");
    assert_eq!(accounted["interrupted_runs"].as_array().map(Vec::len), Some(1), "{accounted}");
    // Its journal holds every line of it.
    assert!(accounted["interrupted_runs"][0].get("unconfirmed").is_none(), "{accounted}");
    let dir = f.path("reports");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)") && r.stdout.contains("which accounts for it"), "{}", r.stdout);
    assert!(!r.stdout.contains("does not match"), "a line cut short is part of the bytes accounted for:\n{}", r.stdout);
    // Nothing of another subject: "nothing found" (5), not "not answered" (2).
    f.lapse(&["report", "lookup", p(&dir), "--subject", "77"]).code(5);
    std::fs::write(&evidence, "").unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.code(2);
    assert!(r.stdout.contains("NOT ANSWERED"), "{}", r.stdout);
    std::fs::remove_file(&evidence).unwrap();
    f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]).code(2);
}

/// An evidence file no run wrote, planted where the reports are kept (no signing key needed),
/// was accounted for by the next run as a killed run's destructions, signed into the chain, and
/// found by `lookup` as DESTROYED. Now each of its lines of a SQL policy is checked against
/// the journal, where every committed batch records its records in its destroying
/// transaction: the report says which lines no batch of that run accounts for, and the lookup
/// says so beside a hit. A real killed run's file has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_no_journal_backs_is_reported_unconfirmed() {
    let f = tickets(
        "INTEGER",
        "(1, '42', 'a@example.com', '2019-01-01 00:00:00'), (2, '43', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    f.lapse(&["run"]).ok();
    let line = std::fs::read_to_string(f.latest("run", ".evidence.jsonl")).unwrap();
    let dir = f.path("reports");
    // Subject 43's record is there, not lapsed: a line claiming its destruction, in the real
    // line's shape, as someone who can write to the directory would write it.
    let key = lapse::evidence::EvidenceKey::new(std::fs::read(f.path("evidence.key")).unwrap());
    let real: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let mut fake = real.clone();
    fake["subject"] = key.subject(&lapse::value::Value::Text("43".into())).into();
    fake["record"] = key.record("db", "tickets", &[lapse::value::Value::Int(2)]).into();
    std::fs::write(dir.join("lapse-run-20260101T000000Z-deadbeef.evidence.jsonl"), format!("{fake}\n")).unwrap();
    let r = f.lapse(&["run"]);
    r.ok();
    assert!(r.stdout.contains("1 of its lines of tickets are in no batch its journal holds"), "{}", r.stdout);
    let accounted = f.report("run");
    let runs = accounted["interrupted_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{accounted}");
    assert_eq!(runs[0]["unconfirmed"], serde_json::json!({"tickets": 1}), "{accounted}");
    // The CSV has the run-level facts too, on the policy's row (before, the JSON, the
    // certificate and the summary only: found by a review of the renderings).
    let mut csv = csv::Reader::from_path(f.latest("run", ".csv")).unwrap();
    let head: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    let row = csv.records().next().unwrap().unwrap();
    let cell =
        |name: &str| row[head.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name}: {head:?}"))].to_string();
    let facts =
        ["interrupted_runs", "interrupted_destroyed", "interrupted_unconfirmed", "evidence_incomplete", "shard"]
            .map(cell);
    assert_eq!(facts, ["1", "1", "1", "false", ""].map(String::from), "{head:?}");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 1, "the record is still there");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "43"]);
    assert!(r.stdout.contains("may not be a destruction by that run"), "{}", r.stdout);
    assert!(f.render_html(&[]).contains("NOT in its journal"), "the certificate says so");
    // Under `--log-format json` the summary event says so too (before, only the text did).
    std::fs::write(dir.join("lapse-run-20260101T000001Z-deadbee0.evidence.jsonl"), format!("{fake}\n")).unwrap();
    let r = f.lapse(&["run", "--log-format", "json"]);
    r.ok();
    let sum: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let runs = sum["interrupted_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{sum}");
    assert_eq!(runs[0]["unconfirmed"], serde_json::json!({"tickets": 1}), "{sum}");
    assert_eq!(runs[0]["report"], "lapse-run-20260101T000001Z-deadbee0.json", "{sum}");
}

/// What the lookup answers must be what was done to the record. Before: a record whose
/// sign-up address alone was anonymized (the record kept) was "DESTROYED"; a record destroyed
/// by another policy of the same table was "NOTHING FOUND" when asked under this one's name
/// (the record's hash is the same); and a key with a comma in it (split by `--key`'s
/// comma-separated form) could not be asked for at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answers_what_was_done_to_the_record() {
    let f = Fixture::new(
        Backend::Sqlite,
        "CREATE TABLE tickets (id TEXT NOT NULL PRIMARY KEY, subject TEXT, email TEXT, signup_ip TEXT, created_at TIMESTAMP, last_seen TIMESTAMP);",
    )
    .await;
    f.db.exec(
        "INSERT INTO tickets VALUES ('Doe, Jane', 'S-1', 'a@example.com', '10.1.2.3', '2019-01-01 00:00:00', '2019-01-01 00:00:00'), \
         ('T-2', 'S-2', 'b@example.com', '10.1.2.4', '2019-01-01 00:00:00', '2025-12-01 00:00:00')",
    )
    .await;
    for name in ["tickets", "tickets-archive"] {
        f.policy(
            name,
            &format!(
                "name: {name}\ndataset:\n  connection: db\n  table: tickets\n  key: id\n  subject: subject\npersonal:\n  email: {{ category: email, anonymize: nullify }}\n  \
                 signup_ip: {{ category: ip_address, anonymize: generalize_ip }}\npurposes:\n  - name: support\n    legal_basis: contract\n    \
                 retain: 1y\n    after: last_seen\n    covers: [email]\n  - name: fraud\n    legal_basis: legitimate_interests\n    retain: 90d\n    \
                 after: created_at\n    covers: [signup_ip]\non_lapse: delete\nguardrail:\n  max_share: 100%\n"
            ),
        );
    }
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 1);
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets WHERE signup_ip = '10.1.2.3'").await, 0);
    let dir = f.path("reports");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-2"]);
    r.ok();
    assert!(!r.stdout.contains("DESTROYED"), "a kept record is not destroyed:\n{}", r.stdout);
    assert!(r.stdout.contains("FIELDS ANONYMIZED: 1 record(s) kept"), "{}", r.stdout);
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    // Asked under either policy's name (one of them destroyed it), by its whole key.
    for policy in ["tickets", "tickets-archive"] {
        let r = f.lapse(&["report", "lookup", p(&dir), "--key", "Doe, Jane", "--policy", policy]);
        r.ok();
        assert!(r.stdout.contains("DESTROYED: 1 record(s)") && r.stdout.contains("deleted"), "{policy}:\n{}", r.stdout);
        assert!(!r.stdout.contains("Doe") && !r.stdout.contains("Jane"), "the key is never printed:\n{}", r.stdout);
    }
    f.lapse(&["report", "lookup", p(&dir), "--key", "Doe", "--policy", "tickets"]).code(5);
}

/// Two policies on one table find the same records due and held: the HTML's totals and a
/// hold's "Lapsed records kept" count each record once (before, added up over the policies: one
/// held record showed as 2; found by a read-only review), and a note says the table is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_count_a_record_of_a_shared_table_once() {
    let f = tickets(
        "TEXT",
        "('T-1', 'S-1', 'a@example.com', '2019-01-01 00:00:00'), ('T-2', 'S-2', 'b@example.com', '2019-01-01 00:00:00'), \
         ('T-3', 'S-3', 'c@example.com', '2019-01-01 00:00:00'), ('T-4', 'S-4', 'd@example.com', '2099-01-01 00:00:00')",
    )
    .await;
    let first = std::fs::read_to_string(f.path("policies/tickets.yaml")).unwrap();
    f.policy("tickets-b", &first.replace("name: tickets\n", "name: tickets-b\n"));
    f.holds("holds:\n  - id: LH-1\n    matter: m\n    subjects: [S-1]\n    policies: [tickets-b]\n");
    let total = |html: &str, label: &str| -> String {
        let end = html.find(&format!("</span>{label}")).unwrap_or_else(|| panic!("no total {label:?}:\n{html}"));
        html[..end].rsplit('>').next().unwrap().to_string()
    };
    f.lapse(&["plan"]).ok();
    let plan = f.report("plan");
    assert_eq!(plan["policies"][0]["held"], 1);
    assert_eq!(plan["policies"][1]["held"], 1);
    let html = {
        let out = f.path("plan.html");
        lapse(&["report", "render", "--format", "html", "--out", p(&out), p(&f.latest("plan", ".json"))]).ok();
        std::fs::read_to_string(out).unwrap()
    };
    assert_eq!(total(&html, "records due for deletion"), "2", "T-2 and T-3, once");
    assert_eq!(total(&html, "lapsed records kept by legal holds"), "1", "T-1, once");
    assert!(html.contains("is covered by policies tickets-b, tickets: they find the same records due"), "{html}");
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 2, "T-1 (held) and T-4 (not lapsed) kept");
    let html = f.render_html(&[]);
    assert_eq!(total(&html, "records deleted"), "2");
    assert_eq!(total(&html, "lapsed records kept by legal holds"), "1");
    let row = html.split("<code>LH-1</code>").nth(1).and_then(|r| r.split("</tr>").next()).expect("the hold's row");
    assert!(row.ends_with("<td class=\"num\">1</td>") && row.contains("<td>holds file</td>"), "{row}");
    assert!(!html.contains("Nothing was destroyed") && html.contains("2. Data destroyed (what)"), "{html}");
    // Run again: nothing is destroyed, and the certificate says so rather than "Data destroyed"
    // and "Pass" (found by a README walkthrough).
    f.lapse(&["run"]).ok();
    let html = f.render_html(&[]);
    assert!(
        html.contains("Nothing was destroyed in this run.") && html.contains("2. Data in scope (nothing destroyed)"),
        "{html}"
    );
    assert!(
        html.contains("<strong>Nothing to verify</strong>") && !html.contains("2. Data destroyed (what)"),
        "{html}"
    );
}

/// `--subject S --policy P` answers for P's table: another policy of the same table may have
/// destroyed the subject's record (whichever ran first). Before, only evidence lines of P itself
/// were searched ("NOTHING FOUND", exit 5), and a misspelt policy name answered "NOTHING FOUND"
/// too; now it is no answer (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_of_a_subject_under_a_policy_searches_its_table() {
    let f = tickets(
        "INTEGER",
        "(1, 'S-1', 'a@example.com', '2019-01-01 00:00:00'), (2, 'S-2', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    f.policy(
        "tickets-archive",
        "name: tickets-archive\ndataset:\n  connection: db\n  table: tickets\n  key: id\n  subject: subject\npersonal:\n  email: { category: email }\n\
         purposes:\n  - name: archive\n    legal_basis: contract\n    retain: 2y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 1);
    let dir = f.path("reports");
    for policy in ["tickets", "tickets-archive"] {
        let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--policy", policy]);
        r.ok();
        assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{policy}:\n{}", r.stdout);
    }
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-2", "--policy", "tickets"]).code(5);
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--policy", "tikets"]);
    r.code(2).stderr_has("policy 'tikets' is neither in the policy files nor in any run report here");
    assert!(!r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
}

/// A holds file the lookup cannot read (missing, or invalid) leaves "is this subject held?"
/// unanswered: before, the answer was "NOTHING FOUND … no hold of the holds file names it"
/// (exit 5) for a subject under a legal hold. And a hold that names the subject only as another
/// spelling of its number (`017` for `17`) holds it in a numeric column but not in a text one,
/// where `017` is another subject: MAYBE HELD, no answer (exit 2), not HELD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_without_a_readable_holds_file_gives_no_answer() {
    let (f, _) = signed_chain().await;
    let dir = f.path("reports");
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-HELD"]).ok();
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-NOBODY"]).code(5);
    // Destroyed is still an answer without the holds file.
    let destroyed = |f: &Fixture| {
        let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1"]);
        r.ok();
        assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    };
    for broken in ["holds:\n  - id: LH-1\n    matter: [unclosed\n", ""] {
        if broken.is_empty() {
            std::fs::remove_file(f.path("holds.yaml")).unwrap();
        } else {
            f.holds(broken);
        }
        for subject in ["S-HELD", "S-NOBODY"] {
            let r = f.lapse(&["report", "lookup", p(&dir), "--subject", subject]);
            r.code(2);
            assert!(r.stdout.contains("NOT ANSWERED: the holds file could not be read whole"), "{}", r.stdout);
            assert!(!r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
        }
        destroyed(&f);
    }
    f.holds("holds:\n  - id: LH-7\n    matter: m\n    subjects: ['017']\n");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "17"]);
    r.code(2);
    assert!(r.stdout.contains("MAYBE HELD") && r.stdout.contains("LH-7"), "{}", r.stdout);
    assert!(!r.stdout.lines().any(|l| l.starts_with("HELD:")) && !r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "017"]);
    r.ok();
    assert!(r.stdout.contains("HELD: named by the holds file") && !r.stdout.contains("MAYBE"), "{}", r.stdout);
    // A hold that has expired keeps nothing: not HELD, exit 0 (found by a review), but said.
    f.holds("holds:\n  - id: LH-8\n    matter: m\n    subjects: ['S-OLD']\n    expires: 2021-01-01\n");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-OLD"]);
    r.code(5);
    assert!(r.stdout.contains("NO LONGER HELD") && r.stdout.contains("LH-8"), "{}", r.stdout);
    assert!(!r.stdout.lines().any(|l| l.starts_with("HELD:")) && r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
    let json = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-OLD", "--json"]);
    let a: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(a["found"], false, "{a}");
}

/// A composite key is asked for by its values in key order; a comma inside one is written
/// `\,`. Before, a value with a comma could not be given, and too few values answered
/// "NOTHING FOUND" (exit 5) where the question was wrong (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_of_a_composite_key_checks_its_values() {
    let f = Fixture::new(
        Backend::Sqlite,
        "CREATE TABLE lines (order_ref TEXT NOT NULL, line INTEGER NOT NULL, subject TEXT, email TEXT, created_at TIMESTAMP, PRIMARY KEY (order_ref, line));",
    )
    .await;
    f.db.exec(
        "INSERT INTO lines VALUES ('Doe, Jr.', 1, 'S-1', 'a@example.com', '2019-01-01 00:00:00'), \
         ('Doe, Jr.', 2, 'S-1', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    f.policy(
        "lines",
        "name: lines\ndataset:\n  connection: db\n  table: lines\n  key: [order_ref, line]\n  subject: subject\npersonal:\n  email: { category: email }\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM lines").await, 1);
    let dir = f.path("reports");
    let r = f.lapse(&["report", "lookup", p(&dir), "--key", "Doe\\, Jr.,1", "--policy", "lines"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    assert!(!r.stdout.contains("Doe"), "the key is never printed:\n{}", r.stdout);
    f.lapse(&["report", "lookup", p(&dir), "--key", "Doe\\, Jr.,2", "--policy", "lines"]).code(5);
    for wrong in ["1", "Doe, Jr.,1"] {
        f.lapse(&["report", "lookup", p(&dir), "--key", wrong, "--policy", "lines"])
            .code(2)
            .stderr_has("policy 'lines' has a key of 2 columns");
    }
}

/// A subject kept in a binary column (a uuid's 16 bytes) is recorded by its bytes: asked for as
/// the uuid, or as `0x` hex, it is found. Before, only the text as typed was tried: "NOTHING
/// FOUND" (exit 5) for a destroyed record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_a_binary_subject_by_its_uuid() {
    let f = Fixture::new(
        Backend::Sqlite,
        "CREATE TABLE devices (id INTEGER NOT NULL PRIMARY KEY, owner BLOB, email TEXT, created_at TIMESTAMP);",
    )
    .await;
    f.db.exec(
        "INSERT INTO devices VALUES (1, X'A0EEBC999C0B4EF8BB6D6BB9BD380A11', 'a@example.com', '2019-01-01 00:00:00'), \
         (2, X'B0EEBC999C0B4EF8BB6D6BB9BD380A11', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    f.policy(
        "devices",
        "name: devices\ndataset:\n  connection: db\n  table: devices\n  key: id\n  subject: owner\npersonal:\n  email: { category: email }\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM devices").await, 1);
    let dir = f.path("reports");
    for asked in [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "0xa0eebc999c0b4ef8bb6d6bb9bd380a11",
    ] {
        let r = f.lapse(&["report", "lookup", p(&dir), "--subject", asked]);
        r.ok();
        assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{asked}:\n{}", r.stdout);
    }
    f.lapse(&["report", "lookup", p(&dir), "--subject", "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]).code(5);
}

/// A number's other spelling is another text: in a text column, `042` is not `42`, and asking
/// for `042` must not answer with the destroyed record of `42` (before, every spelling that
/// parsed as the integer 42 did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_takes_no_number_for_another_text() {
    let f = tickets(
        "TEXT",
        "('42', '42', 'a@example.com', '2019-01-01 00:00:00'), ('042', '042', 'b@example.com', '2025-12-01 00:00:00')",
    )
    .await;
    f.lapse(&["run"]).ok();
    let dir = f.path("reports");
    f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]).ok();
    f.lapse(&["report", "lookup", p(&dir), "--subject", " 42 "]).ok();
    f.lapse(&["report", "lookup", p(&dir), "--key", "42", "--policy", "tickets"]).ok();
    for other in ["042", "+42"] {
        let r = f.lapse(&["report", "lookup", p(&dir), "--subject", other]);
        r.code(5);
        assert!(r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
    }
    f.lapse(&["report", "lookup", p(&dir), "--key", "042", "--policy", "tickets"]).code(5);
    // Nothing to search, or evidence that cannot be read, is no answer (2), not "nothing
    // found" (5): a sharded deployment's reports directory holds only shard directories, and
    // an evidence file may be lost.
    f.lapse(&["report", "lookup", p(&f.path("policies")), "--subject", "42"]).code(2).stderr_has("no run report here");
    let evidence = f.latest("run", ".evidence.jsonl");
    // Cut short (a full disk), the record sought may be in what is missing.
    std::fs::write(&evidence, "").unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.code(2);
    assert!(r.stdout.contains("NOT ANSWERED"), "{}", r.stdout);
    std::fs::remove_file(&evidence).unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "42"]);
    r.code(2);
    assert!(r.stdout.contains("NOT ANSWERED"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_destroyed_and_held_subjects() {
    let (f, _) = signed_chain().await;
    let dir = f.path("reports");
    let first = by_sequence(&dir)[&1].clone();
    let run1: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(&first)).unwrap()).unwrap();
    let run_id = run1["run_id"].as_str().unwrap();

    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    assert!(r.stdout.contains("policy people  deleted (stage record, batch 1)"), "{}", r.stdout);
    assert!(r.stdout.contains(run_id) && r.stdout.contains(&first), "{}", r.stdout);
    assert!(!r.stdout.contains("HELD"), "{}", r.stdout);

    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-HELD"]);
    r.ok();
    assert!(r.stdout.contains("HELD") && r.stdout.contains("LH-1"), "{}", r.stdout);
    assert!(r.stdout.contains("kept 1 lapsed record(s) of policy people"), "{}", r.stdout);
    assert!(!r.stdout.contains("DESTROYED"), "{}", r.stdout);

    for unknown in ["S-NOBODY", "S-4"] {
        let r = f.lapse(&["report", "lookup", p(&dir), "--subject", unknown]);
        r.code(5);
        assert!(r.stdout.contains("NOTHING FOUND"), "{}", r.stdout);
        assert!(!r.stdout.contains(unknown), "the identifier is never printed:\n{}", r.stdout);
    }

    // By record key (the policy gives connection and table); JSON output.
    let r = f.lapse(&["report", "lookup", p(&dir), "--key", "2", "--policy", "people", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["destroyed"].as_array().unwrap().len(), 1);
    assert_eq!(v["destroyed"][0]["action"], "deleted");
    assert_eq!(v["destroyed"][0]["run_id"], run_id);
    f.lapse(&["report", "lookup", p(&dir), "--key", "4", "--policy", "people"]).code(5);
    f.lapse(&["report", "lookup", p(&dir), "--key", "2"]).code(2);
}

/// A lookup reads the reports as they are: anyone able to write where they are kept could
/// add a line claiming a subject's destruction to an evidence file and put its new SHA-256 in
/// the report, and the lookup answered DESTROYED. With `--public-key`, each run report's
/// signature is checked: what a report no given key signed says is UNCONFIRMED (exit 2), and
/// the answer says which reports were vouched for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_with_a_public_key_answers_only_from_signed_reports() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--public-key", p(&public)]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    let reports = by_sequence(&dir).len();
    assert!(r.stdout.contains(&format!("({reports} of {reports} vouched for by key")), "{}", r.stdout);
    // Without a key the answer says the signatures were not checked.
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1"]);
    r.ok();
    assert!(r.stdout.contains("not checked by this lookup (give --public-key"), "{}", r.stdout);

    // S-4 was never destroyed; a line claiming it is added to the newest report's evidence,
    // and the report's SHA-256 of that file updated (its signature is now stale).
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-4", "--public-key", p(&public)]).code(5);
    let newest = by_sequence(&dir).last_key_value().map(|(_, n)| n.clone()).unwrap();
    let first = by_sequence(&dir)[&1].clone();
    let real_evidence = dir.join(first.replace(".json", ".evidence.jsonl"));
    let line = std::fs::read_to_string(&real_evidence).unwrap().lines().next().unwrap().to_string();
    let mut fake: serde_json::Value = serde_json::from_str(&line).unwrap();
    let key = lapse::evidence::EvidenceKey::new(std::fs::read(f.path("evidence.key")).unwrap());
    fake["subject"] = key.subject(&lapse::value::Value::Text("S-4".into())).into();
    let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(&newest)).unwrap()).unwrap();
    let ev_name = match report["evidence"]["file"].as_str() {
        Some(n) => n.to_string(),
        None => newest.replace(".json", ".evidence.jsonl"),
    };
    let ev_path = dir.join(&ev_name);
    let mut bytes = std::fs::read(&ev_path).unwrap_or_default();
    bytes.extend_from_slice(format!("{fake}\n").as_bytes());
    std::fs::write(&ev_path, &bytes).unwrap();
    let records = report["evidence"]["records"].as_u64().unwrap_or(0) + 1;
    report["evidence"] = serde_json::json!({
        "file": ev_name,
        "sha256": lapse::integrity::sha256_hex(&bytes),
        "records": records,
    });
    std::fs::write(dir.join(&newest), serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    // Read as it is, the forgery answers DESTROYED.
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-4"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)"), "{}", r.stdout);
    // Checked, it is no answer, and the report is named.
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-4", "--public-key", p(&public)]);
    r.code(2);
    assert!(r.stdout.contains("UNCONFIRMED: 1 line") && !r.stdout.contains("DESTROYED"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{newest}: its signature is missing or does not verify")), "{}", r.stdout);
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-4", "--public-key", p(&public), "--json"]);
    r.code(2);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reports_unsigned"], serde_json::json!([newest]), "{v}");
    assert_eq!(v["unconfirmed"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["signatures_checked_with"].as_array().map(Vec::len), Some(1), "{v}");
    // The other reports still answer: S-1's destruction is in the first, still signed.
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--public-key", p(&public)]).ok();
    // Another key vouches for nothing; a key file that is not a key is refused.
    let other = f.path("other.pub");
    std::fs::write(&other, lapse::integrity::Signer::generate().public_hex()).unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--public-key", p(&other)]);
    r.code(2);
    assert!(
        r.stdout.contains("UNCONFIRMED: 1 line") && r.stdout.contains(&format!("(0 of {reports} vouched")),
        "{}",
        r.stdout
    );
    // After a rotation, both keys: each report is checked with the one that signed it.
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--public-key", p(&other), "--public-key", p(&public)])
        .ok();
    std::fs::write(&other, "not a key").unwrap();
    f.lapse(&["report", "lookup", p(&dir), "--subject", "S-1", "--public-key", p(&other)]).code(2);
}

/// A report named the policy files it read (SHA-256) but not the holds file or the config: a
/// compliance officer could not tell which holds a run honoured, and `lookup`, which answers
/// HELD from the holds file as it is now, could not tell whether that was the file the runs
/// read. Both are now in `inputs`, keyed with the evidence key (a holds file names data
/// subjects: its plain digest would let a reader confirm a guess of them), and the lookup says
/// whether the holds file is the one the newest run read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_name_the_config_and_holds_file_they_read_keyed() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let key = lapse::evidence::EvidenceKey::new(std::fs::read(f.path("evidence.key")).unwrap());
    let holds = std::fs::read(f.path("holds.yaml")).unwrap();
    let config = std::fs::read(f.path("lapse.yaml")).unwrap();
    let report = f.report("run");
    let text = std::fs::read_to_string(f.latest("run", ".json")).unwrap();
    let inputs = &report["inputs"];
    assert_eq!(inputs["holds_file"]["hmac_sha256"], key.file_digest(&lapse::integrity::sha256_hex(&holds)), "{inputs}");
    assert_eq!(inputs["config"]["hmac_sha256"], key.file_digest(&lapse::integrity::sha256_hex(&config)), "{inputs}");
    assert!(inputs["holds_file"]["path"].as_str().unwrap().ends_with("holds.yaml"), "{inputs}");
    assert!(inputs["config"]["path"].as_str().unwrap().ends_with("lapse.yaml"), "{inputs}");
    for plain in [lapse::integrity::sha256_hex(&holds), lapse::integrity::sha256_hex(&config)] {
        assert!(!text.contains(&plain), "a plain digest of the holds file or config is in the report");
    }
    // Another key gives another digest: it is keyed.
    let other = lapse::evidence::EvidenceKey::new(b"another-evidence-key".to_vec());
    assert_ne!(inputs["holds_file"]["hmac_sha256"], other.file_digest(&lapse::integrity::sha256_hex(&holds)));
    assert!(f.render_html(&[]).contains("Config and holds file"), "the certificate names them");

    let lookup = |json: bool| {
        let mut args = vec!["report", "lookup", p(&dir), "--subject", "S-HELD", "--public-key", p(&public)];
        if json {
            args.push("--json");
        }
        f.lapse(&args)
    };
    let r = lookup(false);
    r.ok();
    assert!(r.stdout.contains("the newest run read this very file"), "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&lookup(true).stdout).unwrap();
    assert_eq!(v["holds_file_unchanged"], true, "{v}");
    // Edited since (even a comment: other bytes), the answer says it is not the file read.
    std::fs::write(f.path("holds.yaml"), [holds.as_slice(), b"# edited\n"].concat()).unwrap();
    let r = lookup(false);
    r.ok();
    assert!(
        r.stdout.contains("is not the file the newest run")
            && r.stdout.contains("no run report here read this very file"),
        "{}",
        r.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&lookup(true).stdout).unwrap();
    assert_eq!(v["holds_file_unchanged"], false, "{v}");
    // A run reads the edited file; the earlier bytes back are the file an earlier run read.
    f.lapse(&["run"]).ok();
    assert!(lookup(true).stdout.contains("\"holds_file_unchanged\": true"), "a run read the edited file");
    std::fs::write(f.path("holds.yaml"), &holds).unwrap();
    let r = lookup(false);
    assert!(r.stdout.contains("the last run that read this very file was"), "{}", r.stdout);
}

/// Found by a read-only review of the report tools, each failing before:
/// - a line added to a signed report's evidence file (its digest in the report left as it
///   was) answered DESTROYED, exit 0, even with `--public-key`: the hit was counted before the
///   file's digest was compared; it is now UNCONFIRMED, no answer (exit 2);
/// - with `--public-key`, a report that does not verify left "NOTHING FOUND" (exit 5) possible:
///   a line taken out of it reads the same; now no answer (exit 2);
/// - a line whose `record` is not ASCII made a text lookup panic (exit 101);
/// - a field or file name with terminal controls (`\r`, ESC sequences) was printed raw, and
///   could overwrite the answer on screen; now escaped;
/// - a plan report renamed as a run report was taken for a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_takes_no_answer_from_evidence_that_is_not_what_was_signed() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let key = lapse::evidence::EvidenceKey::new(std::fs::read(f.path("evidence.key")).unwrap());
    let lookup = |subject: &str, with_key: bool| {
        let mut args = vec!["report", "lookup", p(&dir), "--subject", subject];
        if with_key {
            args.extend(["--public-key", p(&public)]);
        }
        f.lapse(&args)
    };
    lookup("S-4", true).code(5);
    let first = by_sequence(&dir)[&1].clone();
    let evidence = dir.join(first.replace(".json", ".evidence.jsonl"));
    let original = std::fs::read(&evidence).unwrap();
    let line = String::from_utf8(original.clone()).unwrap().lines().next().unwrap().to_string();
    let mut fake: serde_json::Value = serde_json::from_str(&line).unwrap();
    fake["subject"] = key.subject(&lapse::value::Value::Text("S-4".into())).into();
    std::fs::write(&evidence, [original.as_slice(), format!("{fake}\n").as_bytes()].concat()).unwrap();
    for with_key in [true, false] {
        let r = lookup("S-4", with_key);
        r.code(2);
        assert!(r.stdout.contains("UNCONFIRMED: 1 line") && !r.stdout.contains("DESTROYED"), "{}", r.stdout);
        assert!(r.stdout.contains("does not match what"), "{}", r.stdout);
    }
    std::fs::write(&evidence, &original).unwrap();
    lookup("S-1", true).ok();

    // Another key vouches for no report: nothing found is no answer.
    let other = f.path("other.pub");
    std::fs::write(&other, lapse::integrity::Signer::generate().public_hex()).unwrap();
    let r = f.lapse(&["report", "lookup", p(&dir), "--subject", "S-NOBODY", "--public-key", p(&other)]);
    r.code(2);
    assert!(r.stdout.contains("NOT ANSWERED"), "{}", r.stdout);

    // A planted file: a record that is not ASCII, a policy with terminal controls.
    let mut planted = fake.clone();
    planted["record"] =
        "a\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}".into();
    planted["policy"] = "people\r\u{1b}[1A\u{1b}[2KDESTROYED: 1 record(s)\n".into();
    std::fs::write(dir.join("lapse-run-20990101T000000Z-deadbeef.evidence.jsonl"), format!("{planted}\n")).unwrap();
    let r = lookup("S-4", true);
    r.code(2);
    assert!(r.stdout.contains("UNCONFIRMED: 1 line"), "{}", r.stdout);
    assert!(!r.stdout.contains('\u{1b}') && !r.stdout.contains('\r'), "terminal controls printed:\n{:?}", r.stdout);
    assert!(!r.stdout.lines().any(|l| l.starts_with("DESTROYED")), "{}", r.stdout);
    // And verify names that file's oddities escaped too.
    std::fs::write(dir.join("lapse-run-x\r\u{1b}[3Aresult: OK.evidence.jsonl"), "").unwrap();
    let r = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    assert!(!r.stdout.contains('\u{1b}') && !r.stdout.contains('\r'), "terminal controls printed:\n{:?}", r.stdout);
    for n in ["lapse-run-20990101T000000Z-deadbeef.evidence.jsonl", "lapse-run-x\r\u{1b}[3Aresult: OK.evidence.jsonl"] {
        std::fs::remove_file(dir.join(n)).unwrap();
    }

    // A plan report renamed as a run report is no run.
    let plan = f.latest("plan", ".json");
    let renamed = dir.join(plan.file_name().unwrap().to_string_lossy().replace("lapse-plan-", "lapse-run-"));
    std::fs::rename(&plan, &renamed).unwrap();
    let r = lookup("S-HELD", true);
    assert!(r.stdout.contains("named as a run report but it is a plan report"), "{}", r.stdout);
}

/// A report file with an absurd sequence made `verify` panic (exit 101, an overflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_survives_an_absurd_sequence() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(f.latest("run", ".json")).unwrap()).unwrap();
    r["sequence"] = u64::MAX.into();
    r["run_id"] = "deadbeef-0000-0000-0000-000000000000".into();
    std::fs::write(dir.join("lapse-run-20990101T000000Z-deadbeef.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).code(4);
}

/// Every text cell of the CSV summary is spreadsheet-safe: a connection name is free text in
/// the config (before, only tables and hold ids were guarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_cells_of_connection_names_are_no_formulas() {
    let f = tickets("INTEGER", "(1, '42', 'a@example.com', '2019-01-01 00:00:00')").await;
    let cfg = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    std::fs::write(f.path("lapse.yaml"), cfg.replacen("  db:\n", "  \"=db\":\n", 1)).unwrap();
    let policy = std::fs::read_to_string(f.path("policies/tickets.yaml")).unwrap();
    std::fs::write(f.path("policies/tickets.yaml"), policy.replace("connection: db", "connection: \"=db\"")).unwrap();
    f.lapse(&["plan"]).ok();
    let csv = std::fs::read_to_string(f.latest("plan", ".csv")).unwrap();
    assert!(csv.contains(",'=db,"), "{csv}");
}

fn chromium() -> Option<String> {
    let bin = std::env::var("LAPSE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some(bin);
    }
    assert!(std::env::var("CI").is_err(), "chromium is missing: scripts/testbed.sh start installs it");
    eprintln!("skipped: chromium is not installed (scripts/testbed.sh start installs it)");
    None
}

/// Runs headless Chromium on a file with extra arguments; returns stdout. Killed after 120 s.
fn headless(bin: &str, page: &Path, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_renders_in_headless_chromium_without_personal_data() {
    let (f, public) = signed_chain().await;
    let dir = f.path("reports");
    let first = dir.join(&by_sequence(&dir)[&1]);
    let out = tempfile::tempdir().unwrap();
    let html_path = out.path().join("report.html");
    lapse(&["report", "render", p(&first), "--format", "html", "--out", p(&html_path), "--public-key", p(&public)])
        .ok();
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(!html.contains("Signature not checked"), "checked with the public key");
    // Written whole (a temporary file renamed): nothing else left beside it.
    let beside: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(beside, ["report.html"]);

    // Self-contained, and nothing from the report becomes markup.
    for forbidden in ["<script", "<img", "<link", "<iframe", "<object", "<embed", "http://", "https://", "url("] {
        assert!(!html.contains(forbidden), "HTML contains {forbidden:?}");
    }
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.contains("&lt;script&gt;alert(&#39;matter&#39;)&lt;/script&gt; Doe &amp; &lt;b&gt;Sons&lt;/b&gt;"));
    assert!(html.contains("@media print"));

    if let Some(bin) = chromium() {
        let dom = headless(&bin, &html_path, &["--dump-dom".into()]);
        for text in [
            "Destruction report",
            "Summary",
            "What was destroyed",
            "What was kept, and why",
            "What failed",
            "Nothing failed.",
            "Certificate of destruction",
            "NIST SP 800-88",
            "re-query of every destroyed key after commit",
            "LH-1",
        ] {
            assert!(dom.contains(text), "rendered DOM lacks {text:?}:\n{dom}");
        }
        // The summary comes before the chart, the chart before the certificate.
        let at = |s: &str| dom.find(s).unwrap_or_else(|| panic!("no {s:?}"));
        assert!(at("id=\"summary\"") < at("id=\"chart\"") && at("id=\"chart\"") < at("id=\"certificate\""));
        // The chart: three bars for the one policy, with their values.
        assert_eq!(dom.matches("<rect class=\"bar bar-").count(), 3, "{dom}");
        for bar in ["data-series=\"deleted\" data-value=\"4\"", "data-series=\"held\" data-value=\"1\""] {
            assert!(dom.contains(bar), "rendered DOM lacks the bar {bar}");
        }
        // The injected markup stayed text.
        for forbidden in ["<script", "<img", "<b>"] {
            assert!(!dom.contains(forbidden), "rendered DOM contains {forbidden:?}");
        }
        assert!(dom.contains("&lt;script&gt;alert('matter')&lt;/script&gt; Doe &amp; &lt;b&gt;Sons&lt;/b&gt;"));
        // A screenshot and a PDF.
        let png = out.path().join("report.png");
        headless(&bin, &html_path, &[format!("--screenshot={}", png.display()), "--window-size=1100,1600".into()]);
        assert!(std::fs::metadata(&png).map(|m| m.len() > 10_000).unwrap_or(false), "no screenshot");
        let pdf = out.path().join("report.pdf");
        headless(&bin, &html_path, &[format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".into()]);
        let head = std::fs::read(&pdf).expect("no PDF");
        assert!(head.starts_with(b"%PDF"), "not a PDF");
    }

    // No personal value in any rendering, of any report: HTML, CSV, and what verify and lookup
    // print.
    let mut texts = vec![html];
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        for format in ["html", "csv"] {
            let r = lapse(&["report", "render", p(&path), "--format", format]);
            r.ok();
            texts.push(r.stdout.clone());
        }
        texts.push(std::fs::read_to_string(&path).unwrap());
    }
    texts.push(lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).stdout);
    for s in ["S-1", "S-HELD", "S-NOBODY"] {
        texts.push(f.lapse(&["report", "lookup", p(&dir), "--subject", s]).stdout);
    }
    texts.push(f.all_report_text());
    for text in &texts {
        for v in personal_values() {
            assert!(!text.contains(&v), "personal value {v:?} in a rendering:\n{text}");
        }
    }
    // CSV rendering = the summary CSV written next to the report.
    let csv = lapse(&["report", "render", p(&first), "--format", "csv"]).stdout;
    assert_eq!(csv, std::fs::read_to_string(first.with_extension("csv")).unwrap());
    // A rendering refuses a report whose signature does not verify.
    let tampered = out.path().join(first.file_name().unwrap());
    let text = std::fs::read_to_string(&first).unwrap().replacen("\"deleted\": 4", "\"deleted\": 0", 1);
    std::fs::write(&tampered, text).unwrap();
    std::fs::copy(format!("{}.sig", first.display()), format!("{}.sig", tampered.display())).unwrap();
    lapse(&["report", "render", p(&tampered), "--public-key", p(&public)]).code(4);
    // `--out` never replaces a report: the one rendered, another of lapse's files, or a file in
    // a directory `combine` reads (before, the signed report became its HTML; found by a review).
    let bytes = std::fs::read(&first).unwrap();
    lapse(&["report", "render", p(&first), "--out", p(&first)]).code(2).stderr_has("'lapse-…' names lapse's own");
    let renamed = out.path().join("report.json");
    std::fs::copy(&first, &renamed).unwrap();
    lapse(&["report", "render", p(&renamed), "--out", p(&renamed)]).code(2).stderr_has("would replace what is read");
    lapse(&["report", "combine", p(&dir), "--out", p(&dir.join("combined.json"))])
        .code(2)
        .stderr_has("would replace what is read");
    assert_eq!(std::fs::read(&first).unwrap(), bytes, "the report is as it was");
    assert!(!dir.join("combined.json").exists());
}

#[test]
fn keygen_writes_usable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let r = lapse(&["keygen", "--out", p(&out)]);
    r.ok();
    let signer = lapse::integrity::Signer::from_secret(&std::fs::read(out.join("signing.key")).unwrap()).unwrap();
    let public = lapse::integrity::read_public_key(&out.join("signing.pub")).unwrap();
    assert!(lapse::integrity::check_signature(&public, b"report", &signer.sign(b"report")));
    assert!(r.stdout.contains(&signer.key_id()), "{}", r.stdout);
    assert!(std::fs::read_to_string(out.join("evidence.key")).unwrap().trim().len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in ["signing.key", "evidence.key"] {
            assert_eq!(std::fs::metadata(out.join(secret)).unwrap().permissions().mode() & 0o777, 0o600, "{secret}");
        }
    }
    let again = lapse(&["keygen", "--out", p(&out)]);
    again.code(2).stderr_has("already exist");
    assert_eq!(lapse::integrity::read_public_key(&out.join("signing.pub")).unwrap(), public, "not overwritten");
    lapse(&["keygen", "--out", p(&out), "--force"]).ok();
}

#[test]
fn committed_json_schemas_match_the_types() {
    for (file, generated, flag) in [
        ("schema/report.schema.json", lapse::reporting::report_schema(), ""),
        ("schema/evidence.schema.json", lapse::reporting::evidence_schema(), " --evidence"),
    ] {
        let path = repo_root().join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{file} differs from the schema generated from the report types; regenerate it with\n  cargo run -q -- report schema{flag} > {file}"
        );
    }
    let cli = lapse(&["report", "schema"]);
    cli.ok();
    assert_eq!(cli.stdout, lapse::reporting::report_schema());
}

/// Real reports validate against the committed schema (with Python's `jsonschema` when present).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_validate_against_the_schema() {
    let has_validator =
        Command::new("python3").args(["-c", "import jsonschema"]).output().is_ok_and(|o| o.status.success());
    if !has_validator {
        eprintln!("skipped: python3 with jsonschema is not available");
        return;
    }
    let (f, _) = signed_chain().await;
    let script = "import json, sys, glob, jsonschema
report = json.load(open(sys.argv[1])); evidence = json.load(open(sys.argv[2]))
n = 0
for path in glob.glob(sys.argv[3] + '/lapse-*.json'):
    jsonschema.validate(json.load(open(path)), report, cls=jsonschema.Draft202012Validator); n += 1
for path in glob.glob(sys.argv[3] + '/*.evidence.jsonl'):
    for line in open(path):
        jsonschema.validate(json.loads(line), evidence, cls=jsonschema.Draft202012Validator); n += 1
print(n)";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(repo_root().join("schema/report.schema.json"))
        .arg(repo_root().join("schema/evidence.schema.json"))
        .arg(f.path("reports"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let n: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(n, 5 + 4, "5 reports and 4 evidence lines validated");
}

/// `reports.s3` on a bucket with Object Lock (moto): every report file is stored with the
/// configured retention; the chain continues from the bucket when the local directory starts
/// empty (a CronJob's scratch volume); `verify` and `lookup` read `s3://`; a rewritten report
/// object is named by `verify`; the locked original cannot be deleted. Misconfigured sinks stop
/// the run before anything is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_archived_on_a_locked_bucket() {
    use aws_sdk_s3::types::ObjectLockMode;
    let c = crate::objects::client();
    let bucket = crate::objects::unique("reports");
    c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
    let plain = crate::objects::unique("plain");
    c.create_bucket().bucket(&plain).send().await.unwrap();

    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    f.holds(HOLDS);
    let base = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let with_sink = |bucket: &str, retention: &str| {
        let archive = format!(
            "  archive:\n    kind: s3\n    endpoint: {}\n    path_style: true\n    region: us-east-1\npolicies: policies\n",
            crate::objects::endpoint()
        );
        let cfg = base.replace("policies: policies\n", &archive).replace(
            "  signing_key:\n",
            &format!(
                "  s3:\n    connection: archive\n    bucket: {bucket}\n    prefix: prod\n{retention}  signing_key:\n"
            ),
        );
        std::fs::write(f.path("lapse.yaml"), cfg).unwrap();
    };
    let retention = "    retention:\n      mode: governance\n      days: 30\n";

    // Misconfigured sinks: exit 2 before anything is destroyed.
    with_sink("no-such-reports-bucket", "");
    f.lapse(&["run"]).code(2).stderr_has("reports.s3: unknown bucket 'no-such-reports-bucket'");
    with_sink(&plain, retention);
    f.lapse(&["run"]).code(2).stderr_has("does not have Object Lock enabled");
    f.lapse(&["validate", "--connect"]).code(2).stderr_has("does not have Object Lock enabled");
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 8, "nothing destroyed");

    with_sink(&bucket, retention);
    f.lapse(&["run"]).ok();
    let first = f.latest("run", ".json").file_name().unwrap().to_string_lossy().into_owned();
    let stem = first.trim_end_matches(".json");
    let listed: Vec<String> = c
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect();
    for suffix in [".json", ".json.sig", ".csv", ".evidence.jsonl"] {
        let key = format!("prod/{stem}{suffix}");
        assert!(listed.contains(&key), "{key} not in {listed:?}");
        let h = c.head_object().bucket(&bucket).key(&key).send().await.unwrap();
        assert_eq!(h.object_lock_mode(), Some(&ObjectLockMode::Governance), "{key}");
        let until = h.object_lock_retain_until_date().unwrap().secs();
        let days = (until - chrono::Utc::now().timestamp()) as f64 / 86_400.0;
        assert!((29.9..=30.1).contains(&days), "{key}: retained for {days} days");
    }
    // The bucket copy is byte-identical to the local one.
    let body = c.get_object().bucket(&bucket).key(format!("prod/{first}")).send().await.unwrap();
    let bytes = body.body.collect().await.unwrap().into_bytes();
    assert_eq!(bytes.as_ref(), std::fs::read(f.path("reports").join(&first)).unwrap().as_slice());

    // A fresh scratch directory: the chain continues from the bucket.
    std::fs::remove_dir_all(f.path("reports")).unwrap();
    f.lapse(&["run"]).ok();
    let second = f.report("run");
    assert_eq!(second["sequence"], 2);
    assert_eq!(second["previous"]["file"], first.as_str());

    let loc = format!("s3://{bucket}/prod");
    let r = f.lapse(&["report", "verify", &loc, "--public-key", p(&public)]);
    r.ok();
    assert!(r.stdout.contains(&first), "{}", r.stdout);
    let r = f.lapse(&["report", "lookup", &loc, "--subject", "S-1"]);
    r.ok();
    assert!(r.stdout.contains("DESTROYED: 1 record(s)") && r.stdout.contains(&first), "{}", r.stdout);
    f.lapse(&["report", "lookup", &loc, "--subject", "S-NOBODY"]).code(5);

    // The locked version cannot be deleted; a rewritten report is caught by verify.
    let versions = c.list_object_versions().bucket(&bucket).prefix(format!("prod/{first}")).send().await.unwrap();
    let v = versions.versions().iter().find(|v| v.key() == Some(&format!("prod/{first}"))).unwrap();
    let del =
        c.delete_object().bucket(&bucket).key(format!("prod/{first}")).version_id(v.version_id().unwrap()).send().await;
    assert!(del.is_err(), "a report version under retention must not be deletable");
    let forged = String::from_utf8(bytes.to_vec()).unwrap().replace("\"deleted\": 4", "\"deleted\": 3");
    assert_ne!(forged.as_bytes(), bytes.as_ref(), "the forgery changes the report");
    c.put_object().bucket(&bucket).key(format!("prod/{first}")).body(forged.into_bytes().into()).send().await.unwrap();
    let r = f.lapse(&["report", "verify", &loc, "--public-key", p(&public)]);
    r.code(4);
    assert!(r.stdout.contains(&first), "{}", r.stdout);

    // A run of another policy still going on in the same directory: its evidence file, not
    // yet whole, is stored as it is, and stored again once it grew (before, the bucket kept the
    // part-written copy for good), and no more once it stopped changing.
    let busy = "lapse-run-20991231T000000Z-0123abcd.evidence.jsonl";
    std::fs::write(f.path("reports").join(busy), "{\"part\":1}\n").unwrap();
    f.lapse(&["run"]).ok();
    let stored = |key: String| {
        let c = c.clone();
        let bucket = bucket.clone();
        async move {
            let o = c.get_object().bucket(&bucket).key(key).send().await.unwrap();
            String::from_utf8(o.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
        }
    };
    assert_eq!(stored(format!("prod/{busy}")).await, "{\"part\":1}\n");
    std::fs::write(f.path("reports").join(busy), "{\"part\":1}\n{\"part\":2}\n").unwrap();
    f.lapse(&["run"]).ok();
    assert_eq!(stored(format!("prod/{busy}")).await, "{\"part\":1}\n{\"part\":2}\n");
    // It does not change any more (the run was killed): not stored again.
    f.lapse(&["run"]).ok();
    let v = c.list_object_versions().bucket(&bucket).prefix(format!("prod/{busy}")).send().await.unwrap();
    assert_eq!(v.versions().len(), 2, "{:?}", v.versions());
    // A finished run's files are stored once: the run before the last one stored them, and the
    // last one, finding its report in the bucket, did not again.
    let runs = lapse::integrity::run_reports(&f.path("reports"));
    let third = runs[runs.len() - 2].file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!("prod/{}", third.trim_end_matches(".json"));
    let versions = c.list_object_versions().bucket(&bucket).prefix(&prefix).send().await.unwrap();
    assert_eq!(versions.versions().len(), 4, "{:?}", versions.versions());
    // Its local evidence, signature and CSV altered since: the bucket keeps the copies its
    // report binds (before, the altered files replaced them, the genuine evidence left as an
    // older version or, unversioned, lost; found by a read-only review).
    let stem = third.trim_end_matches(".json");
    let mut genuine = Vec::new();
    for name in [format!("{stem}.evidence.jsonl"), format!("{third}.sig"), format!("{stem}.csv")] {
        let path = f.path("reports").join(&name);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}planted\n")).unwrap();
        genuine.push((name, text));
    }
    // The local report altered to bind the altered evidence: the bucket's report is what
    // counts (found by a review of the fix).
    let local = f.path("reports").join(&third);
    let mut rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
    let altered = std::fs::read(f.path("reports").join(format!("{stem}.evidence.jsonl"))).unwrap();
    rep["evidence"]["sha256"] = lapse::integrity::sha256_hex(&altered).into();
    std::fs::write(&local, serde_json::to_vec_pretty(&rep).unwrap()).unwrap();
    f.lapse(&["run"]).ok();
    for (name, text) in genuine {
        assert_eq!(stored(format!("prod/{name}")).await, text, "{name}");
    }
    let versions = c.list_object_versions().bucket(&bucket).prefix(&prefix).send().await.unwrap();
    assert_eq!(versions.versions().len(), 4, "{:?}", versions.versions());
}

/// A host's clock stepped back between two runs (an NTP correction, a moved VM): the second
/// report ends before the first, and links to it by its hash, so it was written after it.
/// `report verify` says so in a note and passes. Before, it was `out-of-order`, and the
/// untouched chain failed every verification from then on (found by a review). The clock is
/// moved by a library preloaded into the second run (`clock_gettime`, 10 minutes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_between_two_runs_is_a_note_not_a_broken_chain() {
    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    f.lapse(&["run"]).ok();
    let src = f.path("behind.c");
    std::fs::write(
        &src,
        "#define _GNU_SOURCE\n#include <time.h>\n#include <dlfcn.h>\n\
         int clock_gettime(clockid_t c, struct timespec *ts) {\n\
           static int (*real)(clockid_t, struct timespec *) = 0;\n\
           if (!real) real = dlsym(RTLD_NEXT, \"clock_gettime\");\n\
           int r = real(c, ts);\n\
           if (r == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE)) ts->tv_sec -= 600;\n\
           return r;\n}\n",
    )
    .unwrap();
    let so = f.path("behind.so");
    let cc = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&src).arg("-ldl").status();
    assert!(cc.unwrap().success(), "cc could not build the clock library");
    f.lapse_env(&["run"], &[("LD_PRELOAD", so.to_str().unwrap())]).ok();
    let reports: Vec<serde_json::Value> = lapse::integrity::run_reports(&f.path("reports"))
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let at = |seq: u64| {
        let r = reports.iter().find(|r| r["sequence"] == seq).unwrap_or_else(|| panic!("no sequence {seq}"));
        chrono::DateTime::parse_from_rfc3339(r["finished_at"].as_str().unwrap()).unwrap()
    };
    assert!(at(2) < at(1), "the second run's clock was not behind: {} against {}", at(2), at(1));
    let r = f.lapse(&["report", "verify", p(&f.path("reports")), "--public-key", p(&public)]);
    assert!(!r.stdout.contains("out-of-order"), "{}", r.stdout);
    assert!(r.stdout.contains("links to it by its hash: it was written after it, by a clock"), "{}", r.stdout);
    r.ok();
}

/// Points `f`'s reports at `bucket` (an Object Lock bucket of the local S3 server), prefix
/// `prod`, locked a day in governance mode.
fn with_report_bucket(f: &Fixture, bucket: &str) {
    with_report_bucket_kept(f, bucket, "    retention:\n      mode: governance\n      days: 1\n")
}

/// [`with_report_bucket`] with `retention` (the lines of `reports.s3.retention`, or none).
fn with_report_bucket_kept(f: &Fixture, bucket: &str, retention: &str) {
    let base = std::fs::read_to_string(f.path("lapse.yaml")).unwrap();
    let archive = format!(
        "  archive:\n    kind: s3\n    endpoint: {}\n    path_style: true\n    region: us-east-1\npolicies: policies\n",
        crate::objects::endpoint()
    );
    let cfg = base.replace("policies: policies\n", &archive).replace(
        "  signing_key:\n",
        &format!("  s3:\n    connection: archive\n    bucket: {bucket}\n    prefix: prod\n{retention}  signing_key:\n"),
    );
    std::fs::write(f.path("lapse.yaml"), cfg).unwrap();
}

/// A signed SQLite fixture of the people policy whose reports go to a new Object Lock bucket
/// ([`with_report_bucket`]): the client, the bucket, the fixture, the public key.
async fn on_a_locked_report_bucket() -> (aws_sdk_s3::Client, String, Fixture, PathBuf) {
    let c = crate::objects::client();
    let bucket = crate::objects::unique("reports");
    c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    with_report_bucket(&f, &bucket);
    (c, bucket, f, public)
}

/// The newest report of a bucket and its claim deleted without version ids (which Object Lock
/// allows: a delete marker hides them from listings and reads, the versions stay): `report
/// verify` of the bucket finds each hidden file `missing`, and says how to show it again.
/// Before, the chain ended at the report before and verified OK (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_hidden_on_the_bucket_by_a_delete_marker_is_missing() {
    let (c, bucket, f, public) = on_a_locked_report_bucket().await;
    f.lapse(&["run"]).ok();
    f.lapse(&["run"]).ok();
    let loc = format!("s3://{bucket}/prod");
    f.lapse(&["report", "verify", &loc, "--public-key", p(&public)]).ok();
    let newest = f.report("run");
    assert_eq!(newest["sequence"], 2, "{newest:#}");
    let stem = f.latest("run", ".json").file_name().unwrap().to_string_lossy().trim_end_matches(".json").to_string();
    let mut hidden: Vec<String> =
        [".json", ".json.sig", ".csv", ".evidence.jsonl"].iter().map(|s| format!("{stem}{s}")).collect();
    hidden.push("chain/00000000000000000002".into());
    for name in &hidden {
        c.delete_object().bucket(&bucket).key(format!("prod/{name}")).send().await.unwrap();
    }
    let r = f.lapse(&["report", "verify", &loc, "--public-key", p(&public)]);
    r.code(4);
    for name in &hidden {
        assert!(
            r.stdout.lines().any(|l| l.contains("missing") && l.contains(name.as_str()) && l.contains("is hidden")),
            "{name}: {}",
            r.stdout
        );
    }
    // Reports before `--first-sequence` may be gone on purpose (a lifecycle rule that leaves
    // delete markers): not hidden then.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    f.lapse(&["run"]).ok();
    let r = f.lapse(&["report", "verify", &loc, "--public-key", p(&public), "--first-sequence", "3"]);
    assert!(!r.stdout.contains("is hidden"), "{}", r.stdout);
}

/// A run killed after claiming its sequence on the report bucket and before writing its
/// report (here: its report removed, its evidence left in the directory, as such a kill leaves
/// them): the next run chains to the claim and accounts for the run's evidence. `report
/// verify`, of the bucket and of the directory, notes the sequence as never written and
/// passes. Before, the genuine chain had a `missing` report for good (found by a review). The
/// same gap with a successor that does not account for that run stays `missing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_claimed_by_a_run_killed_before_its_report_is_noted_not_missing() {
    let c = crate::objects::client();
    let bucket = crate::objects::unique("reports");
    c.create_bucket().bucket(&bucket).send().await.unwrap();
    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    with_report_bucket_kept(&f, &bucket, "");
    f.lapse(&["run"]).ok();
    let first = f.latest("run", ".json").file_name().unwrap().to_string_lossy().into_owned();
    let stem = first.trim_end_matches(".json").to_string();
    for suffix in [".json", ".json.sig", ".csv"] {
        std::fs::remove_file(f.path("reports").join(format!("{stem}{suffix}"))).unwrap();
    }
    for suffix in [".json", ".json.sig", ".csv", ".evidence.jsonl"] {
        c.delete_object().bucket(&bucket).key(format!("prod/{stem}{suffix}")).send().await.unwrap();
    }
    f.lapse(&["run"]).ok();
    let next = f.report("run");
    assert_eq!(next["sequence"], 2, "{next:#}");
    assert_eq!(next["previous"]["file"], first.as_str(), "{next:#}");
    assert_eq!(next["interrupted_runs"][0]["report"], first.as_str(), "{next:#}");
    let loc = format!("s3://{bucket}/prod");
    for at in [loc.as_str(), p(&f.path("reports"))] {
        let r = f.lapse(&["report", "verify", at, "--public-key", p(&public)]);
        assert!(r.stdout.contains(&format!("sequence 1 ({first}) was never written")), "{at}: {}", r.stdout);
        r.ok();
    }
    // A successor that does not account for it: missing.
    let next_name = f.latest("run", ".json");
    let rewritten = std::fs::read_to_string(&next_name).unwrap();
    let d = f.path("unaccounted");
    std::fs::create_dir_all(&d).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&rewritten).unwrap();
    v.as_object_mut().unwrap().remove("interrupted_runs");
    std::fs::write(d.join(next_name.file_name().unwrap()), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let r = f.lapse(&["report", "verify", p(&d), "--public-key", p(&public)]);
    assert!(r.stdout.contains("missing") && r.stdout.contains(&first), "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("never written"), "{}", r.stdout);
}

/// An interrupted run whose `.accounted` marker cannot be written is left out of the report
/// (the next run accounts for it): with a report bucket, before the report's claim hashes it.
/// Before, the marker was written after the claim, the report's bytes then differed from the
/// hash its locked claim recorded, and `report verify` of the bucket said `altered` of a
/// genuine report for good (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_leaves_out_an_interrupted_run_matches_its_bucket_claim() {
    let (_, bucket, f, public) = on_a_locked_report_bucket().await;
    let dir = f.path("reports");
    std::fs::create_dir_all(&dir).unwrap();
    let orphan = "lapse-run-20261207T000000Z-deadbeef.evidence.jsonl";
    std::fs::write(dir.join(orphan), "").unwrap();
    // Its marker cannot be written: a link to a directory that does not exist.
    std::os::unix::fs::symlink("/nonexistent-lapse-dir/x", dir.join(format!(".{orphan}.accounted"))).unwrap();
    f.lapse(&["run"]).ok().stderr_has("is left for the next run to account for");
    let rep = f.report("run");
    assert!(rep.get("interrupted_runs").is_none(), "{rep:#}");
    let loc = format!("s3://{bucket}/prod");
    let r = f.lapse(&["report", "verify", &loc, "--public-key", p(&public)]);
    assert!(!r.stdout.contains("altered"), "{}", r.stdout);
    r.ok();
}

/// A report file larger than the part size (the evidence file of a run of millions of records:
/// one `PutObject` takes at most 5 GiB, within one 60 s attempt) is stored in parts, each read
/// from the file when sent: byte-identical on the bucket, with the configured retention, and no
/// upload left open. An upload the store refuses (parts under S3's 5 MiB minimum) fails with
/// the store's reason, is aborted (no parts left behind, none billed), and stores nothing. On
/// moto and on Ceph RGW, which both drop the Object Lock headers of a multipart upload: lapse
/// sets the retention on the stored version then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_report_files_are_stored_in_parts_with_their_retention() {
    use crate::objects::StoreKind;
    use aws_sdk_s3::types::ObjectLockMode;
    use lapse::config::{LockMode, ReportRetention};
    use lapse::reporting::sink::S3Reports;
    use rand::RngCore;
    let retention = || Some(ReportRetention { mode: LockMode::Governance, days: 7 });
    // 12 MiB and a few bytes of random data: parts of 5, 5 and 2 MiB.
    let dir = tempfile::tempdir().unwrap();
    let name = "lapse-run-20991231T000000Z-0123abcd.evidence.jsonl";
    let mut data = vec![0u8; 12 * 1024 * 1024 + 4321];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(dir.path().join(name), &data).unwrap();
    // Its report, small: one PutObject.
    let report = "lapse-run-20991231T000000Z-0123abcd.json";
    std::fs::write(dir.path().join(report), "{\"sequence\": 1}\n").unwrap();
    let small = tempfile::tempdir().unwrap();
    let other = "lapse-run-20991231T000001Z-0123abcd.evidence.jsonl";
    std::fs::write(small.path().join(other), &data[..3 * 1024 * 1024]).unwrap();

    for kind in [StoreKind::S3, StoreKind::Rgw] {
        let c = crate::objects::client_of(kind);
        let bucket = crate::objects::unique("parts");
        c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
        let sink = S3Reports::new(c.clone(), &bucket, "big", retention()).with_part_size(5 * 1024 * 1024);
        sink.check().await.unwrap();
        let stored = sink.store_dir(dir.path()).await.unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
        assert_eq!(stored, [name, report], "{kind:?}");
        let o = c.get_object().bucket(&bucket).key(format!("big/{report}")).send().await.unwrap();
        assert_eq!(o.body.collect().await.unwrap().into_bytes().as_ref(), b"{\"sequence\": 1}\n", "{kind:?}");

        let key = format!("big/{name}");
        let h = c.head_object().bucket(&bucket).key(&key).send().await.unwrap();
        assert_eq!(h.content_length(), Some(data.len() as i64), "{kind:?}");
        for key in [&key, &format!("big/{report}")] {
            let h = c.head_object().bucket(&bucket).key(key).send().await.unwrap();
            assert_eq!(h.object_lock_mode(), Some(&ObjectLockMode::Governance), "{kind:?}: {key}");
            let until = h.object_lock_retain_until_date().unwrap().secs();
            let days = (until - chrono::Utc::now().timestamp()) as f64 / 86_400.0;
            assert!((6.9..=7.1).contains(&days), "{kind:?}: {key} retained for {days} days");
        }
        // A multipart object's ETag ends in its number of parts.
        assert!(h.e_tag().unwrap().trim_matches('"').ends_with("-3"), "{kind:?}: ETag {:?}", h.e_tag());
        let o = c.get_object().bucket(&bucket).key(&key).send().await.unwrap();
        assert!(o.body.collect().await.unwrap().into_bytes().as_ref() == data.as_slice(), "{kind:?}: the copy differs");
        let open = c.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
        assert!(open.uploads().is_empty(), "{kind:?}: {:?}", open.uploads());

        // Parts of 1 MiB: the store refuses to complete the upload, which is then aborted.
        let sink = S3Reports::new(c.clone(), &bucket, "big", retention()).with_part_size(1024 * 1024);
        let e = format!("{:#}", sink.store_dir(small.path()).await.unwrap_err());
        assert!(
            e.contains(&format!("storing s3://{bucket}/big/{other}")) && e.contains("EntityTooSmall"),
            "{kind:?}: {e}"
        );
        let open = c.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
        assert!(open.uploads().is_empty(), "{kind:?}: an upload was left open: {:?}", open.uploads());
        let listed = c.list_objects_v2().bucket(&bucket).prefix(format!("big/{other}")).send().await.unwrap();
        assert!(listed.contents().is_empty(), "{kind:?}: {:?}", listed.contents());
    }
}

/// A sequence of a bucket's chain is claimed once: the first claim gets it, a second one for the
/// same sequence learns it lost (and takes no object's place), and the head is the newest claim.
/// On moto and on Ceph RGW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_of_the_bucket_chain_is_claimed_once() {
    use lapse::integrity::ChainLink;
    use lapse::reporting::sink::{Claim, S3Reports};
    for kind in [crate::objects::StoreKind::S3, crate::objects::StoreKind::Rgw] {
        let c = crate::objects::client_of(kind);
        let bucket = crate::objects::unique("claims");
        // With Object Lock: each claim is locked like the reports.
        c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
        let retention = lapse::config::ReportRetention { mode: lapse::config::LockMode::Governance, days: 3 };
        let sink = S3Reports::new(c.clone(), &bucket, "prod", Some(retention));
        assert_eq!(sink.chain_head().await.unwrap(), None);
        let link = |who: &str, sequence| ChainLink {
            file: format!("lapse-run-20991231T00000{sequence}Z-{who}.json"),
            sha256: format!("{who:0>64}"),
            sequence,
        };
        assert_eq!(sink.claim(&link("a", 1)).await.unwrap(), Claim::Claimed);
        // The same claim again (a retry whose first attempt was stored but whose answer was lost).
        assert_eq!(sink.claim(&link("a", 1)).await.unwrap(), Claim::Claimed, "{kind:?}");
        assert_eq!(sink.claim(&link("b", 1)).await.unwrap(), Claim::Taken, "{kind:?}");
        assert_eq!(sink.chain_head().await.unwrap(), Some(link("a", 1)), "the first claim stands");
        let h = c.head_object().bucket(&bucket).key("prod/chain/00000000000000000001").send().await.unwrap();
        assert_eq!(h.object_lock_mode(), Some(&aws_sdk_s3::types::ObjectLockMode::Governance), "{kind:?}");
        assert_eq!(sink.claim(&link("b", 2)).await.unwrap(), Claim::Claimed);
        assert_eq!(sink.chain_head().await.unwrap(), Some(link("b", 2)));
        // A worker of a version that does not claim stores sequence 3 without a claim (a
        // rolling upgrade): the head is its report, so the next claim is 4, not a second 3.
        let old = "lapse-run-20991231T000003Z-oldver00.json";
        let body = b"{\n  \"sequence\": 3\n}".to_vec();
        c.put_object().bucket(&bucket).key(format!("prod/{old}")).body(body.clone().into()).send().await.unwrap();
        let head = sink.chain_head().await.unwrap().unwrap();
        let expected = ChainLink { file: old.into(), sha256: lapse::integrity::sha256_hex(&body), sequence: 3 };
        assert_eq!(head, expected, "{kind:?}");
        // The claims are beside the reports, not among them.
        let keys: Vec<String> = c
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect();
        let old_key = format!("prod/{old}");
        assert_eq!(keys, ["prod/chain/00000000000000000001", "prod/chain/00000000000000000002", old_key.as_str()]);
        assert_eq!(sink.names().await.unwrap(), [old]);
    }
}

/// Workers that share only a report bucket and end at the same moment: each claims its report's
/// sequence on the bucket before writing the report, so however their ends interleave the chain
/// does not fork: 4 workers started together, 3 times over, make one chain of 12 reports, each
/// sequence claimed by the report that has it, and `report verify` of the bucket passes; once the
/// newest report is removed, its claim makes `verify` find it missing. On moto and on Ceph RGW
/// (both honour `If-None-Match: *`), also on a versioned bucket, where RGW ignores it and keeps a
/// lost claim as a later version (without the claims, this fails every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ending_together_on_a_shared_report_bucket_do_not_fork_its_chain() {
    ending_together(crate::objects::StoreKind::S3, false).await;
    ending_together(crate::objects::StoreKind::Rgw, false).await;
    // A versioned bucket (Object Lock on), where Ceph RGW 16.2 ignores `If-None-Match`: each
    // claim is kept as a version, and the first written holds.
    ending_together(crate::objects::StoreKind::Rgw, true).await;
}

async fn ending_together(kind: crate::objects::StoreKind, versioned: bool) {
    let c = crate::objects::client_of(kind);
    let bucket = crate::objects::unique("together");
    c.create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(versioned).send().await.unwrap();
    let schema = "CREATE TABLE tickets (id INTEGER NOT NULL PRIMARY KEY, email TEXT, created_at TIMESTAMP);";
    let policy = "name: tickets\ndataset:\n  connection: db\n  table: tickets\n  key: id\npersonal:\n  email: { category: email }\n\
                  purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\n\
                  guardrail:\n  max_share: 100%\n";
    let mut workers: Vec<Fixture> = Vec::new();
    for _ in 0..4 {
        let f = Fixture::new(Backend::Sqlite, schema).await;
        f.policy("tickets", policy);
        // One signing key for all, so that one `report verify` checks the whole chain.
        f.sign_reports();
        if let Some(first) = workers.first() {
            std::fs::copy(first.path("signing.key"), f.path("signing.key")).unwrap();
        }
        f.report_bucket(&kind.endpoint(), &bucket, "shared");
        workers.push(f);
    }
    for round in 0..3 {
        for f in &workers {
            f.db.exec(&format!("INSERT INTO tickets VALUES ({round}, 'p{round}@example.com', '2019-03-01 00:00:00')"))
                .await;
        }
        std::thread::scope(|s| {
            for f in &workers {
                s.spawn(|| {
                    f.lapse(&["run"]).ok();
                });
            }
        });
    }
    // Every report, from every worker's directory: 12 distinct sequences, 1 to 12, each linked
    // to the one before it and claimed by itself.
    let mut reports: Vec<(u64, String, serde_json::Value, String)> = Vec::new();
    for f in &workers {
        for path in lapse::integrity::run_reports(&f.path("reports")) {
            let bytes = std::fs::read(&path).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            reports.push((v["sequence"].as_u64().unwrap(), name, v, lapse::integrity::sha256_hex(&bytes)));
        }
    }
    reports.sort_by_key(|r| r.0);
    let sequences: Vec<u64> = reports.iter().map(|r| r.0).collect();
    assert_eq!(sequences, (1..=12).collect::<Vec<u64>>(), "{kind:?}: a fork or a gap");
    for w in reports.windows(2) {
        assert_eq!(w[1].2["previous"]["file"], w[0].1.as_str(), "sequence {}", w[1].0);
        assert_eq!(w[1].2["previous"]["sha256"], w[0].3.as_str(), "sequence {}", w[1].0);
    }
    // Each claim (its first version: on the versioned bucket a lost claim may be a later one)
    // names the report that has its sequence.
    let mut lost = 0;
    for (seq, name, _, sha) in &reports {
        let key = format!("shared/chain/{seq:020}");
        let versions = c.list_object_versions().bucket(&bucket).prefix(&key).send().await.unwrap();
        let ids: Vec<String> = versions.versions().iter().filter_map(|v| v.version_id().map(str::to_string)).collect();
        lost += ids.len() - 1;
        let o = c.get_object().bucket(&bucket).key(&key).version_id(ids.last().unwrap()).send().await.unwrap();
        let claim: serde_json::Value = serde_json::from_slice(&o.body.collect().await.unwrap().into_bytes()).unwrap();
        assert_eq!(claim, serde_json::json!({"file": name, "sha256": sha, "sequence": seq}), "{kind:?}");
    }
    if !versioned {
        assert_eq!(lost, 0, "{kind:?}: a claim written over another");
    }
    eprintln!("{kind:?}, versioned {versioned}: {lost} claims lost as later versions");
    let public = workers[0].path("signing.pub");
    let r = workers[0].lapse(&["report", "verify", &format!("s3://{bucket}/shared"), "--public-key", p(&public)]);
    r.ok();
    assert!(!r.stdout.contains("fork"), "{kind:?}: {}", r.stdout);
    assert!(
        r.stdout.contains(
            "note: 12 claims of the bucket's chain (chain/, sequences 1..12) checked against the reports they name"
        ),
        "{kind:?}: {}",
        r.stdout
    );
    // Not the directory's warning that a removed newest report leaves no trace (the claims do
    // show it: before, both were said; found by a README walkthrough).
    assert!(
        r.stdout.contains("the bucket's claims would show it removed") && !r.stdout.contains("leaves no trace"),
        "{kind:?}: {}",
        r.stdout
    );

    // The newest report removed from the bucket with its companions (no retention here): no
    // later report links to it, no leftover names it, but its claim does. Within the hour after the claim, its run may still be storing
    // it: `verify` notes it (an older claim: missing, `a_claim_whose_report_never_came`).
    // (On a versioned bucket, every version: a `DELETE` without one leaves a delete marker,
    // which hides the report without removing it, and `verify` finds it hidden.)
    let newest = &reports[11].1;
    let stem = newest.trim_end_matches(".json");
    for suffix in [".json", ".json.sig", ".csv", ".evidence.jsonl"] {
        let key = format!("shared/{stem}{suffix}");
        match versioned {
            false => {
                c.delete_object().bucket(&bucket).key(&key).send().await.unwrap();
            }
            true => {
                let v = c.list_object_versions().bucket(&bucket).prefix(&key).send().await.unwrap();
                for id in v.versions().iter().filter(|v| v.key() == Some(key.as_str())).filter_map(|v| v.version_id()) {
                    c.delete_object().bucket(&bucket).key(&key).version_id(id).send().await.unwrap();
                }
            }
        }
    }
    let r = workers[0].lapse(&["report", "verify", &format!("s3://{bucket}/shared"), "--public-key", p(&public)]);
    r.ok();
    assert!(
        r.stdout.contains(&format!("note: {newest} has sequence 12 by the bucket's claim of "))
            && r.stdout.contains("but is not stored yet"),
        "{kind:?}: {}",
        r.stdout
    );
}

/// `report verify` against a report bucket's claims, on the reports of a directory given the
/// claims a bucket would hold (S3's `LastModified` cannot be set back, so an hour-old claim is
/// made here): a claim whose report never came is missing once the hour has passed, and pending
/// before; a claimed report whose bytes differ from the claim is altered; a report of a claimed
/// sequence that the claim does not name forked the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_report_never_came_is_missing() {
    use lapse::integrity::ChainLink;
    use lapse::reporting::store::{LocalDir, ReportStore, StoredClaim};
    use lapse::reporting::verify::{verify, Problem};
    struct WithClaims(LocalDir, Vec<(u64, ChainLink, i64)>);
    impl ReportStore for WithClaims {
        fn location(&self) -> String {
            self.0.location()
        }
        fn list(&self) -> std::io::Result<Vec<String>> {
            self.0.list()
        }
        fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
            self.0.read(name)
        }
        fn open(&self, name: &str) -> std::io::Result<Box<dyn std::io::BufRead + '_>> {
            self.0.open(name)
        }
        fn claims(&self) -> std::io::Result<Vec<StoredClaim>> {
            Ok(self
                .1
                .iter()
                .map(|(sequence, link, minutes_ago)| StoredClaim {
                    sequence: *sequence,
                    link: Ok(link.clone()),
                    at: Some(chrono::Utc::now() - chrono::Duration::minutes(*minutes_ago)),
                })
                .collect())
        }
    }
    let f = seeded(Backend::Sqlite).await;
    let public = f.sign_reports();
    f.policy("people", POLICY);
    f.lapse(&["run"]).ok();
    f.lapse(&["run"]).ok();
    let dir = f.path("reports");
    let links: Vec<ChainLink> = lapse::integrity::run_reports(&dir)
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            ChainLink {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                sha256: lapse::integrity::sha256_hex(&bytes),
                sequence: v["sequence"].as_u64().unwrap(),
            }
        })
        .collect();
    let mut links = links;
    links.sort_by_key(|l| l.sequence);
    assert_eq!(links.iter().map(|l| l.sequence).collect::<Vec<_>>(), [1, 2]);
    let key = lapse::integrity::read_public_key(&public).unwrap();
    let ghost =
        ChainLink { file: "lapse-run-20991231T000000Z-deadbeef.json".into(), sha256: "0".repeat(64), sequence: 3 };
    let check =
        |claims: Vec<(u64, ChainLink, i64)>| verify(&WithClaims(LocalDir::new(&dir), claims), None, &[key], 1, &[]);

    // The claims agree with the reports.
    let o = check(vec![(1, links[0].clone(), 120), (2, links[1].clone(), 90)]);
    assert!(o.ok, "{:?}", o.findings);
    // A third sequence claimed 90 minutes ago, whose report never came: missing.
    let o = check(vec![(1, links[0].clone(), 120), (2, links[1].clone(), 90), (3, ghost.clone(), 90)]);
    assert!(!o.ok);
    let f3: Vec<_> = o.findings.iter().filter(|x| x.file == ghost.file).collect();
    assert!(f3.len() == 1 && f3[0].problem == Problem::Missing, "{:?}", o.findings);
    // Claimed 10 minutes ago: its run may still be storing it.
    let o = check(vec![(1, links[0].clone(), 120), (2, links[1].clone(), 90), (3, ghost.clone(), 10)]);
    assert!(o.ok, "{:?}", o.findings);
    assert!(o.notes.iter().any(|n| n.contains(&ghost.file) && n.contains("not stored yet")), "{:?}", o.notes);
    // The claim of 2 recorded other bytes: the report was altered after its claim.
    let mut other = links[1].clone();
    other.sha256 = "1".repeat(64);
    let o = check(vec![(1, links[0].clone(), 120), (2, other, 90)]);
    assert!(o.findings.iter().any(|x| x.problem == Problem::Altered && x.file == links[1].file), "{:?}", o.findings);
    // The claim of 2 names another report: this one forked the chain.
    let o = check(vec![(1, links[0].clone(), 120), (2, ChainLink { sequence: 2, ..ghost.clone() }, 90)]);
    assert!(o.findings.iter().any(|x| x.problem == Problem::Fork && x.file == links[1].file), "{:?}", o.findings);
}

/// Two workers with directories of their own share one report bucket and prefix (two CronJobs of
/// other policies). The second began before the first stored its report and ended after: it
/// read the bucket's chain head when it began, so both reports claimed sequence 1, a fork
/// `verify` refuses. The head is now read again when the report is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_only_a_report_bucket_keep_one_chain() {
    use std::io::BufRead;
    let c = crate::objects::client();
    let bucket = crate::objects::unique("shared");
    c.create_bucket().bucket(&bucket).send().await.unwrap();
    let schema = "CREATE TABLE tickets (id INTEGER NOT NULL PRIMARY KEY, email TEXT, created_at TIMESTAMP);";
    let policy = "name: tickets\ndataset:\n  connection: db\n  table: tickets\n  key: id\npersonal:\n  email: { category: email }\n\
                  purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\n\
                  guardrail:\n  max_share: 100%\n";
    let (a, b) = (Fixture::new(Backend::Sqlite, schema).await, Fixture::new(Backend::Sqlite, schema).await);
    // B long enough to be overtaken: 20,000 rows at 200 a batch; A: 10 rows.
    for (f, n) in [(&a, 10), (&b, 20_000)] {
        f.db.exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO tickets SELECT i, 'p' || i || '@example.com', '2019-03-01 00:00:00' FROM n"
        ))
        .await;
        f.policy("tickets", policy);
        f.report_bucket(&crate::objects::endpoint(), &bucket, "shared");
    }
    // B starts, reads the bucket's head (none yet) and destroys batch after batch; once it has
    // committed its first batch, A runs from start to end and stores its report.
    let mut child = std::process::Command::new(crate::common::lapse_bin())
        .args(["run", "--yes", "--batch-size", "200", "--log-format", "json", "--cutoff", crate::common::CUTOFF, "-c"])
        .arg(b.path("lapse.yaml"))
        .env("LAPSE_LOG", "lapse=info")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("LAPSE_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("batch committed") {
            break;
        }
    }
    assert!(log.contains("batch committed"), "{log}");
    a.lapse(&["run"]).ok();
    assert!(
        c.list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .any(|o| o.key().unwrap().ends_with(".json")),
        "A's report is in the bucket"
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{log}{}", rest.join("\n"));
    let (ra, rb) = (a.report("run"), b.report("run"));
    assert_eq!(rb["policies"][0]["deleted"], 20_000);
    // One chain: one of them is sequence 1, the other 2 and linked to it (B, unless it ended
    // before A stored its report, which the 20,000 rows make unlikely).
    let name = |f: &Fixture| f.latest("run", ".json").file_name().unwrap().to_string_lossy().into_owned();
    let (first, second, first_name) = match (ra["sequence"].as_u64(), rb["sequence"].as_u64()) {
        (Some(1), Some(2)) => (&ra, &rb, name(&a)),
        (Some(2), Some(1)) => (&rb, &ra, name(&b)),
        other => panic!("not one chain: sequences {other:?} (A {}, B {})", ra["previous"], rb["previous"]),
    };
    assert!(first["previous"].is_null());
    assert_eq!(second["previous"]["file"], first_name.as_str());
}

/// Lines of a file (0 if it is not there yet).
fn line_count(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

/// A run killed before its report (SIGKILL) leaves its evidence file and nothing else in the
/// directory. Before, no report ever mentioned what it destroyed: `verify` only noted a file
/// that "belongs to no report". Now the next run accounts for it in its own report (the file's
/// SHA-256 and records, per policy and action), bound into the signed chain: `verify` checks it
/// like any report's evidence (an alteration is found), and later runs do not account for it
/// again. A run still going on holds its evidence file locked: a run of another policy in the
/// same directory meanwhile leaves it alone, and the live run's own report covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_report_is_accounted_for_by_the_next() {
    let rows: Vec<String> =
        (1..=10000).map(|i| format!("({i}, 'S{i}', 'e{i}@example.com', '2019-01-01 00:00:00')")).collect();
    let f = tickets("INTEGER", &rows.join(", ")).await;
    f.db.exec("CREATE TABLE notes (id INTEGER NOT NULL PRIMARY KEY, body TEXT, created_at TIMESTAMP)").await;
    f.db.exec("INSERT INTO notes VALUES (1, 'n1', '2019-01-01 00:00:00'), (2, 'n2', '2019-01-01 00:00:00')").await;
    f.policy(
        "notes",
        "name: notes\ndataset:\n  connection: db\n  table: notes\n  key: id\npersonal:\n  body: { category: free_text }\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    let public = f.sign_reports();
    let dir = f.path("reports");
    let config = f.path("lapse.yaml");
    let evidence = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
        v.retain(|p| p.to_string_lossy().ends_with(".evidence.jsonl"));
        v
    };
    // A slow run of `tickets` (a batch per row, each committed and synced on its own).
    let start = || {
        let mut cmd = crate::crash::lapse_cmd(&config, 1);
        cmd.args(["--policy", "tickets"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd.spawn().expect("spawn lapse")
    };
    let wait_for_evidence = |dir: PathBuf| async move {
        for _ in 0..1000 {
            if let Some(e) = evidence(&dir).first() {
                if line_count(e) >= 3 {
                    return e.clone();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the run wrote no evidence");
    };

    // 1. While it runs, a run of the other policy in the same directory leaves its file alone.
    let mut live = start();
    let live_evidence = wait_for_evidence(dir.clone()).await;
    f.lapse(&["run", "--policy", "notes"]).ok();
    let r = f.report("run");
    assert_eq!(r["policies"][0]["name"], "notes");
    assert!(r.get("interrupted_runs").is_none(), "a live run's evidence was taken for a killed run's: {r}");
    // 2. Killed: no report of its own, its evidence file stays.
    assert!(live.try_wait().unwrap().is_none(), "the slow run ended before it was killed");
    live.start_kill().expect("SIGKILL");
    live.wait().await.unwrap();
    let killed_stem = live_evidence.file_name().unwrap().to_string_lossy().replace(".evidence.jsonl", "");
    assert!(!dir.join(format!("{killed_stem}.json")).exists(), "the killed run wrote its report");
    let records = line_count(&live_evidence);
    let destroyed = 10000 - f.db.count("SELECT COUNT(*) FROM tickets").await as usize;
    assert!(records >= 3 && records <= destroyed, "{records} evidence lines, {destroyed} rows gone");
    let v = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    v.ok();
    assert!(v.stdout.contains("belongs to no report"), "{}", v.stdout);

    // A marker naming a report that was never written (a run killed after it marked the file,
    // before its report) does not count.
    let marker = dir.join(format!(".{killed_stem}.evidence.jsonl.accounted"));
    std::fs::write(&marker, "lapse-run-20200101T000000Z-deadbeef.json\n").unwrap();

    // 3. The next run accounts for it: file, SHA-256, records per policy and action.
    let next = f.lapse(&["run", "--policy", "notes"]);
    next.ok();
    assert!(
        next.stdout.contains(&format!("interrupted run {killed_stem} ended without its report")),
        "{}",
        next.stdout
    );
    let r = f.report("run");
    let i = &r["interrupted_runs"];
    assert_eq!(i.as_array().unwrap().len(), 1, "{r}");
    assert_eq!(i[0]["report"], format!("{killed_stem}.json"));
    assert_eq!(i[0]["evidence"]["file"], format!("{killed_stem}.evidence.jsonl"));
    assert_eq!(i[0]["evidence"]["records"], records as u64);
    let sha = lapse::integrity::sha256_hex(&std::fs::read(&live_evidence).unwrap());
    assert_eq!(i[0]["evidence"]["sha256"], sha.as_str());
    assert_eq!(i[0]["destroyed"]["tickets"]["deleted"], records as u64, "{i}");
    assert!(i[0]["first_at"].is_string() && i[0]["last_at"].is_string(), "{i}");
    // Every record of it is in the journal, which the killed run's committed batches wrote.
    let journal =
        f.db.count(&format!(
            "SELECT COALESCE(SUM(record_count), 0) FROM lapse_journal WHERE run_id LIKE '{}%'",
            killed_stem.rsplit('-').next().unwrap()
        ))
        .await as usize;
    assert!(journal >= records, "journal {journal} < evidence {records}");
    // verify checks it as the evidence of that report, and no longer notes it.
    let v = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    v.ok();
    assert!(!v.stdout.contains("belongs to no report"), "{}", v.stdout);
    // The HTML names it.
    let html = f.path("report.html");
    lapse(&["report", "render", p(&f.latest("run", ".json")), "--out", p(&html)]).ok();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Runs that ended without their report") && page.contains(&killed_stem), "HTML");
    // Rendered without a public key: the certificate says its signature was not checked.
    assert!(page.contains("<strong>Signature not checked:</strong>"), "HTML");

    // Its marker names the report that accounted for it.
    let accounting = f.latest("run", ".json");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), accounting.file_name().unwrap().to_string_lossy());

    // 4. Accounted for once: the run after does not list it again.
    f.lapse(&["run", "--policy", "notes"]).ok();
    assert!(f.report("run").get("interrupted_runs").is_none(), "accounted for twice");

    // 5. Altered afterwards: verify names it against the report that accounted for it.
    let mut bytes = std::fs::read(&live_evidence).unwrap();
    bytes.extend_from_slice(b"{\"record\":\"00\"}\n");
    std::fs::write(&live_evidence, bytes).unwrap();
    let v = f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]);
    v.code(4);
    has_problem(&v.stdout, "evidence-altered", &[&killed_stem]);
}

/// A `tickets` table of `n` lapsed rows (subjects `S<i>`) and a policy deleting them.
async fn lapsed_tickets(b: Backend, n: usize) -> Fixture {
    let f = Fixture::new(
        b,
        "CREATE TABLE tickets (id BIGINT NOT NULL PRIMARY KEY, subject VARCHAR(32), email VARCHAR(64), created_at {TS})",
    )
    .await;
    let rows: Vec<String> =
        (1..=n).map(|i| format!("({i}, 'S{i}', 'e{i}@example.com', '2019-01-01 00:00:00')")).collect();
    f.db.exec(&format!("INSERT INTO tickets VALUES {}", rows.join(", "))).await;
    f.policy(
        "tickets",
        "name: tickets\ndataset:\n  connection: db\n  table: tickets\n  key: id\n  subject: subject\npersonal:\n  email: { category: email }\n\
         purposes:\n  - name: support\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\nguardrail:\n  max_share: 100%\n",
    );
    f
}

/// What a run killed between a batch's commit and its evidence lines leaves, made by hand from
/// a finished run of `--batch-size 10`: its report gone, its evidence cut back to `keep`
/// lines. Returns the run's file stem.
fn killed_after_lines(f: &Fixture, keep: usize) -> String {
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let killed = f.latest("run", ".json");
    let stem = killed.file_stem().unwrap().to_string_lossy().into_owned();
    let evidence = f.path("reports").join(format!("{stem}.evidence.jsonl"));
    let text = std::fs::read_to_string(&evidence).unwrap();
    let all: Vec<&str> = text.lines().collect();
    std::fs::write(&evidence, all[..keep].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    for suffix in ["json", "json.sig", "csv"] {
        let _ = std::fs::remove_file(killed.with_extension(suffix));
    }
    stem
}

/// A run killed between a batch's commit and its evidence lines: the journal (written in the
/// destroying transaction) has the batch, its evidence file does not. The state is made by hand
/// from a finished run (report removed, evidence cut back to 23 of 50 lines: two whole batches of
/// 10 and 3 lines of the third), on every SQL backend. The next run writes the 27 missing records
/// to its evidence `reconciled_from` that run (counted in the policy's `reconciled`), accounts for
/// the killed run's evidence file, and `report lookup` finds a subject of the reconciled batch;
/// the run after reconciles nothing again.
async fn committed_batches_missing_from_a_killed_runs_evidence_are_reconciled_from_the_journal(b: Backend) {
    reconciled_from_the_journal(b, false).await
}

/// The same from a journal table of the shape lapse made before (hex text lists), up to the
/// reconciled records and the subject found.
async fn reconciled_from_a_journal_of_text_lists(b: Backend) {
    reconciled_from_the_journal(b, true).await
}

async fn reconciled_from_the_journal(b: Backend, text_lists: bool) {
    let f = lapsed_tickets(b, 50).await;
    if text_lists {
        f.db.exec(&f.db.text_lists_journal_ddl()).await;
    }
    let dir = f.path("reports");
    let public = f.sign_reports();
    f.lapse(&["run", "--batch-size", "10"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 0);
    let killed = f.latest("run", ".json");
    let stem = killed.file_stem().unwrap().to_string_lossy().into_owned();
    let evidence = dir.join(format!("{stem}.evidence.jsonl"));
    let text = std::fs::read_to_string(&evidence).unwrap();
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all.len(), 50);
    std::fs::write(&evidence, all[..23].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    for suffix in ["json", "json.sig", "csv"] {
        let _ = std::fs::remove_file(killed.with_extension(suffix));
    }
    let run_ids: Vec<String> =
        f.db.texts("SELECT DISTINCT run_id FROM lapse_journal").await.into_iter().flatten().collect();
    assert_eq!(run_ids.len(), 1);

    let r = f.lapse(&["run", "--batch-size", "10"]);
    r.ok();
    let rep = f.report("run");
    let pol = &rep["policies"][0];
    assert_eq!(pol["reconciled"], 27, "{pol:#}");
    assert_eq!(pol["reconciled_from"][&run_ids[0]], 27, "{pol:#}");
    assert_eq!(rep["interrupted_runs"][0]["evidence"]["records"], 23, "{rep:#}");
    assert_eq!(rep["status"], "complete");
    // Both evidence files together name every record the journal has, once.
    let mut named: Vec<String> = crate::crash::evidence_lines(&dir).into_iter().map(|(r, _)| r).collect();
    named.sort();
    let before = named.len();
    named.dedup();
    assert_eq!((before, named.len()), (50, 50), "every journaled record once in the evidence");
    let reconciled_in = f.latest("run", ".evidence.jsonl").file_name().unwrap().to_string_lossy().into_owned();
    let reconciled: Vec<serde_json::Value> = std::fs::read_to_string(dir.join(&reconciled_in))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reconciled.len(), 27);
    assert!(reconciled.iter().all(|e| e["reconciled_from"] == run_ids[0].as_str() && e["action"] == "deleted"));
    let look = f.lapse(&["report", "lookup", p(&dir), "--subject", "S45"]);
    look.ok();
    assert!(look.stdout.contains("DESTROYED: 1 record"), "{}", look.stdout);
    f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public)]).ok();
    if text_lists {
        let width = f.db.texts(&format!("SELECT {} FROM lapse_journal", f.db.text("LENGTH(records)"))).await;
        assert!(width.iter().flatten().all(|w| w == "649"), "written as text lists of 10: {width:?}");
        return;
    }
    // Dated by the killed run's commits, not by the run that wrote them.
    let started = rep["started_at"].as_str().unwrap();
    let at = |e: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(started).unwrap();
    assert!(reconciled.iter().all(|e| at(e) < started), "reconciled lines dated by the batches' commits");

    // Its `.reconciled` marker lost (it could not be written): the next run finds the lines in
    // that run's evidence file, reported, and writes none again.
    std::fs::remove_file(dir.join(format!(".{stem}.evidence.jsonl.reconciled"))).unwrap();
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let rep = f.report("run");
    assert_eq!(rep["policies"][0]["reconciled"], 0, "{rep:#}");
    assert!(rep.get("interrupted_runs").is_none(), "{rep:#}");
    assert!(dir.join(format!(".{stem}.evidence.jsonl.reconciled")).exists());

    // The reconciling run killed after its lines, before its `.reconciled` marker and its report
    // (both removed by hand; the `.accounted` marker it wrote names a report that is gone):
    // the next run finds the lines in that run's evidence and writes none again.
    let reconciling = dir.join(format!("{}.json", reconciled_in.trim_end_matches(".evidence.jsonl")));
    let reconciling_stem = reconciling.file_stem().unwrap().to_string_lossy().into_owned();
    for suffix in ["json", "json.sig", "csv"] {
        let _ = std::fs::remove_file(reconciling.with_extension(suffix));
    }
    std::fs::remove_file(dir.join(format!(".{stem}.evidence.jsonl.reconciled"))).unwrap();
    let r = f.lapse(&["run", "--batch-size", "10"]);
    r.ok();
    let rep = f.report("run");
    assert_eq!(rep["policies"][0]["reconciled"], 0, "{rep:#}");
    let accounted: BTreeSet<&str> =
        rep["interrupted_runs"].as_array().unwrap().iter().map(|i| i["report"].as_str().unwrap()).collect();
    assert_eq!(
        accounted,
        BTreeSet::from([format!("{stem}.json").as_str(), format!("{reconciling_stem}.json").as_str()])
    );
    // The reconciling run's file holds what the first run destroyed: counted apart.
    let entry = |name: String| {
        rep["interrupted_runs"].as_array().unwrap().iter().find(|i| i["report"] == name.as_str()).unwrap().clone()
    };
    let theirs = entry(format!("{reconciling_stem}.json"));
    assert_eq!(theirs["evidence"]["records"], 27, "{theirs:#}");
    assert_eq!(theirs["reconciled"]["tickets"], 27, "{theirs:#}");
    assert!(theirs["destroyed"].as_object().unwrap().is_empty(), "{theirs:#}");
    let first = entry(format!("{stem}.json"));
    assert_eq!(first["destroyed"]["tickets"]["deleted"], 23, "{first:#}");
    assert!(first.get("reconciled").is_none(), "{first:#}");
    let mut named: Vec<String> = crate::crash::evidence_lines(&dir).into_iter().map(|(r, _)| r).collect();
    named.sort();
    let before = named.len();
    named.dedup();
    assert_eq!((before, named.len()), (50, 50), "every journaled record once in the evidence");

    // Once: the run after reconciles nothing and accounts for nothing.
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let rep = f.report("run");
    assert_eq!(rep["policies"][0]["reconciled"], 0, "{rep:#}");
    assert!(rep.get("interrupted_runs").is_none());
}

/// A run killed between a batch's commit and its evidence lines, then the evidence key changed.
/// The journal's records are hashes made with the old key: the next run, under the new key,
/// does not write them into its evidence (before, it did, under the new key, and `report lookup`
/// found them under neither key; found by a read-only review); its policy fails and says how to
/// reconcile them, on every run until one with the old key does, which then writes them.
/// `report lookup` under the new key does not search the killed run's file, and says why,
/// instead of answering "nothing found". A run notes its evidence key beside its evidence file
/// (`.<file>.key`) and removes the note once its report names the key. The killed run's state
/// is made by hand from a finished run, as above, its note put back as the run left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_journal_under_another_evidence_key_is_left_for_that_key() {
    let f = lapsed_tickets(Backend::Sqlite, 50).await;
    let dir = f.path("reports");
    let old_key = lapse::evidence::EvidenceKey::new(std::fs::read(f.path("evidence.key")).unwrap()).key_id();
    let stem = killed_after_lines(&f, 23);
    let note = dir.join(format!(".{stem}.evidence.jsonl.key"));
    assert!(!note.exists(), "the note is removed once the report names the key");
    std::fs::write(&note, &old_key).unwrap();
    let old_secret = std::fs::read(f.path("evidence.key")).unwrap();
    std::fs::write(f.path("evidence.key"), "another-evidence-key-0123456789abcdef").unwrap();

    for _ in 0..2 {
        let r = f.lapse(&["run", "--batch-size", "10"]);
        r.code(1);
        let rep = f.report("run");
        let pol = &rep["policies"][0];
        assert_ne!(rep["evidence_key_id"], old_key.as_str());
        assert_eq!(pol["reconciled"], 0, "{pol:#}");
        assert_eq!(pol["outcome"], "failed", "{pol:#}");
        let errors = pol["errors"].to_string();
        assert!(
            errors.contains(&format!("journaled 3 batch(es) of this policy whose records are not in its evidence, with evidence key {old_key}")),
            "{errors}"
        );
        assert!(errors.contains("run once with that evidence key to reconcile them"), "{errors}");
    }
    // The first of them accounted for the killed run's file, under the key its run noted.
    let accounting = f.lapse(&["report", "lookup", p(&dir), "--subject", "S45"]);
    let out = &accounting.stdout;
    assert!(out.contains(&format!("was written with evidence key {old_key}, not the configured one")), "{out}");
    assert!(out.contains("look it up with that key"), "{out}");
    assert!(out.contains("NOT ANSWERED") && !out.contains("NOTHING FOUND"), "{out}");
    let lines = crate::crash::evidence_lines(&dir);
    assert_eq!(lines.len(), 23, "nothing written under the new key");

    // With the old key again: reconciled, once.
    std::fs::write(f.path("evidence.key"), &old_secret).unwrap();
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let rep = f.report("run");
    assert_eq!(rep["policies"][0]["reconciled"], 27, "{rep:#}");
    let mut named: Vec<String> = crate::crash::evidence_lines(&dir).into_iter().map(|(r, _)| r).collect();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), 50, "every journaled record in the evidence");
    let look = f.lapse(&["report", "lookup", p(&dir), "--subject", "S45"]);
    look.ok();
    assert!(look.stdout.contains("DESTROYED: 1 record"), "{}", look.stdout);
}

/// A run killed between a batch's commit and its evidence lines, then its policy renamed
/// (`tickets` to `support`): a run reconciles its own policy's journal rows, so no run took the
/// killed run's rows under the old name, and their records were in no evidence file, every
/// report saying "complete" (found by a read-only review). The next run says so in its report,
/// with the number of batches and records, and its policy on that connection fails; once: the
/// run after says nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_journal_under_a_policy_renamed_since_is_said() {
    let f = lapsed_tickets(Backend::Sqlite, 50).await;
    let stem = killed_after_lines(&f, 23);
    let policy = std::fs::read_to_string(f.path("policies/tickets.yaml")).unwrap();
    std::fs::remove_file(f.path("policies/tickets.yaml")).unwrap();
    f.policy("support", &policy.replace("name: tickets", "name: support"));

    let r = f.lapse(&["run", "--batch-size", "10"]);
    r.code(1);
    let rep = f.report("run");
    let pol = &rep["policies"][0];
    assert_eq!(pol["name"], "support");
    assert_eq!(pol["outcome"], "failed", "{pol:#}");
    let errors = pol["errors"].to_string();
    assert!(
        errors.contains(&format!(
            "{stem}.evidence.jsonl: its run, which ended without its report, committed 3 batch(es) of policy 'tickets' (27 record(s)) that the journal table of connection 'db' holds and its evidence file lacks, and no policy file names 'tickets' now"
        )),
        "{errors}"
    );
    assert_eq!(rep["interrupted_runs"][0]["destroyed"]["tickets"]["deleted"], 23, "{rep:#}");
    // Said once.
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let rep = f.report("run");
    assert!(rep["policies"][0].get("errors").is_none_or(|e| e.as_array().unwrap().is_empty()), "{rep:#}");

    // Removed after another policy of the connection had reconciled the killed run's file: said
    // too (before, the search went with a policy's first reconciliation of the file, and none
    // was left to make it; found by a review of the fix).
    let g = lapsed_tickets(Backend::Sqlite, 50).await;
    g.db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, subject TEXT, email TEXT, created_at TEXT)").await;
    g.policy("notes", &policy.replace("name: tickets", "name: notes").replace("table: tickets", "table: notes"));
    let stem = killed_after_lines(&g, 23);
    g.lapse(&["run", "--policy", "notes"]).ok();
    std::fs::remove_file(g.path("policies/tickets.yaml")).unwrap();
    g.lapse(&["run"]).code(1);
    let errors = g.report("run")["policies"][0]["errors"].to_string();
    assert!(
        errors.contains(&format!(
            "{stem}.evidence.jsonl: its run, which ended without its report, committed 3 batch(es) of policy 'tickets'"
        )),
        "{errors}"
    );
}

/// The certificate says what the JSON says (found by a review of the renderings): an
/// `evidence_incomplete` report's evidence row says the file is short; each interrupted run's
/// evidence file is named with its key, another than the run's said so; `previous_unverified`
/// is shown in the chain row; records held by two policies of one table are counted once in the
/// Kept row, as in the summary; records that failed one by one do not make the re-check "Fail".
/// The demo's run report, edited to each case, rendered (its signature is not checked here).
#[test]
fn the_certificate_says_what_the_json_says() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("demo");
    let out = std::process::Command::new(crate::common::lapse_bin()).arg("demo").arg("--dir").arg(&d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = std::fs::read_dir(d.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("lapse-run-") && n.ends_with(".json")
        })
        .unwrap();
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
    r["evidence_incomplete"] = true.into();
    r["previous_unverified"] = "the previous report carries no signature by this run's signing key".into();
    r["interrupted_runs"] = serde_json::json!([{
        "report": "lapse-run-20260101T000000Z-0badc0de.json",
        "evidence": {"file": "lapse-run-20260101T000000Z-0badc0de.evidence.jsonl", "sha256": "00", "records": 7},
        "destroyed": {"orders": {"deleted": 7}},
        "evidence_key_id": "0123456789abcdef",
        "first_at": null, "last_at": null
    }]);
    r["previous"] = serde_json::json!({"file": "lapse-run-x.json", "sha256": "11", "sequence": 1});
    // A second policy on the newsletter leads' table, holding the same records.
    let policies = r["policies"].as_array_mut().unwrap();
    let leads = policies.iter().find(|p| p["name"] == "newsletter-leads").unwrap().clone();
    let held_total: u64 = policies.iter().map(|p| p["held"].as_u64().unwrap()).sum();
    let mut twin = leads.clone();
    twin["name"] = "newsletter-leads-b".into();
    policies.push(twin);
    // Records that failed one by one, every destroyed one re-checked and gone.
    let tickets = policies.iter_mut().find(|p| p["name"] == "support-tickets").unwrap();
    tickets["failed"] = 2.into();
    tickets["verification"]["verified"] = false.into();
    let edited = tmp.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&r).unwrap()).unwrap();
    let html = tmp.path().join("edited.html");
    let out = std::process::Command::new(crate::common::lapse_bin())
        .args(["report", "render"])
        .arg(&edited)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.contains("INCOMPLETE</span>: the evidence file could not be written to its end"), "incomplete");
    assert!(
        html.contains("lapse-run-20260101T000000Z-0badc0de.evidence.jsonl</code> (a run that ended without its report, accounted for here): 7 records, evidence key <code>0123456789abcdef</code> — <span class=\"bad\">another key than this run's</span>"),
        "interrupted run's key"
    );
    assert!(
        html.contains("Previous report not vouched for by this key</span>: the previous report carries no signature"),
        "previous_unverified"
    );
    assert!(
        html.contains(&format!("{held_total} lapsed records kept by legal holds")),
        "kept once per table ({held_total})"
    );
    assert!(html.contains("<strong class=\"good\">Pass</strong>"), "failed records do not fail the re-check");
}

/// Two runs of the policy in the journal share the 8 hex digits a killed run's file name keeps
/// of its id (one chance in billions, made here by hand): which one wrote the file is not known.
/// The next run says so and its policy fails, once: the run after neither repeats it nor
/// reconciles anything, and no record was written to the evidence for either run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runs_journal_shared_by_two_run_ids_is_reported_once() {
    let f = lapsed_tickets(Backend::Sqlite, 30).await;
    let dir = f.path("reports");
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let killed = f.latest("run", ".json");
    let stem = killed.file_stem().unwrap().to_string_lossy().into_owned();
    let evidence = dir.join(format!("{stem}.evidence.jsonl"));
    let text = std::fs::read_to_string(&evidence).unwrap();
    let all: Vec<&str> = text.lines().collect();
    std::fs::write(&evidence, all[..5].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    for suffix in ["json", "csv"] {
        let _ = std::fs::remove_file(killed.with_extension(suffix));
    }
    // Another run id with the same first 8 hex digits, a batch of its own journaled since.
    let run_id = f.db.texts("SELECT DISTINCT run_id FROM lapse_journal").await[0].clone().unwrap();
    let twin = format!("{}-0000-4000-8000-000000000000", &run_id[..8]);
    f.db.exec(&format!(
        "INSERT INTO lapse_journal (run_id, policy, stage, action, batch_no, record_count, records, subjects, committed_at) \
         SELECT '{twin}', policy, stage, action, batch_no, record_count, records, subjects, committed_at FROM lapse_journal WHERE batch_no = 1"
    ))
    .await;

    f.lapse(&["run", "--batch-size", "10"]).code(1);
    let rep = f.report("run");
    let pol = &rep["policies"][0];
    assert_eq!(pol["outcome"], "failed", "{pol:#}");
    assert_eq!(pol["reconciled"], 0, "{pol:#}");
    let errors = pol["errors"].to_string();
    assert!(errors.contains("runs whose id starts with") && errors.contains(&stem), "{errors}");
    assert_eq!(rep["interrupted_runs"][0]["evidence"]["records"], 5, "{rep:#}");

    // Once: the next run neither repeats it nor reconciles.
    f.lapse(&["run", "--batch-size", "10"]).ok();
    let rep = f.report("run");
    assert_eq!(rep["policies"][0]["outcome"], "done", "{rep:#}");
    assert_eq!(rep["policies"][0]["reconciled"], 0, "{rep:#}");
    assert!(rep["policies"][0]["errors"].as_array().is_none_or(|e| e.is_empty()), "{rep:#}");
    let reconciled = crate::crash::evidence_lines(&dir).len();
    assert_eq!(reconciled, 5, "no line written for either run");
}

mod journal {
    use super::{
        committed_batches_missing_from_a_killed_runs_evidence_are_reconciled_from_the_journal,
        reconciled_from_a_journal_of_text_lists,
    };
    crate::per_backend!(
        committed_batches_missing_from_a_killed_runs_evidence_are_reconciled_from_the_journal,
        reconciled_from_a_journal_of_text_lists
    );
}

/// The newest run report removed with all its files, and a later run that takes its sequence,
/// leave a chain that verifies: before, only `verify --known` with a line kept from an earlier
/// verify could tell. The removed run's batches stay in the journal table, written in their
/// destroying transactions: `verify --journal` reads it and names the run no report accounts
/// for. A run killed before its report (its evidence file still here) is said, not a problem,
/// and once the next run accounts for it the check passes again.
async fn verify_journal_finds_a_removed_newest_report(b: Backend) {
    let f = tickets_on(
        b,
        "INTEGER",
        "(1, '42', 'a@example.com', '2019-01-01 00:00:00'), (2, '43', 'b@example.com', '2020-06-01 00:00:00'), \
         (3, '44', 'c@example.com', '2021-06-01 00:00:00')",
    )
    .await;
    let public = f.sign_reports();
    let dir = f.path("reports");
    let verify = |extra: &[&str]| {
        let mut args = vec!["report", "verify", p(&dir), "--public-key", p(&public)];
        args.extend_from_slice(extra);
        f.lapse(&args)
    };
    // (`f.lapse` gives the config, which --journal needs to find the databases.)
    let journal = ["--journal"];
    f.lapse_at("2020-03-01T00:00:00Z", &["run"]).ok();
    f.lapse_at("2021-09-01T00:00:00Z", &["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM tickets").await, 1);
    let r = verify(&journal);
    r.ok();
    assert!(
        r.stdout.contains("journal: 2 run(s) of 1 SQL policy") && r.stdout.contains("each accounted for"),
        "{}",
        r.stdout
    );
    // The newest report removed, with its evidence, signature and summary; a later run.
    let newest = f.latest("run", ".json");
    let gone: serde_json::Value = serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
    let stem = newest.file_name().unwrap().to_string_lossy().trim_end_matches(".json").to_string();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with(&stem) {
            std::fs::remove_file(path).unwrap();
        }
    }
    f.lapse_at("2021-09-02T00:00:00Z", &["run"]).ok();
    verify(&[]).ok();
    let r = verify(&journal);
    r.code(4);
    let run_id = gone["run_id"].as_str().unwrap();
    assert!(r.stdout.contains("unaccounted-run") && r.stdout.contains(run_id), "{}", r.stdout);
    assert!(r.stdout.contains("committed 1 batch(es), 1 record(s), of policy 'tickets'"), "{}", r.stdout);
    let r = verify(&["--journal", "--json"]);
    r.code(4);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["findings"][0]["problem"], "unaccounted-run", "{v}");
}

/// A run killed before its report leaves its evidence file: said by `verify --journal`, not a
/// problem, until its policy's next run accounts for it.
async fn verify_journal_leaves_a_killed_run_to_its_next_run(b: Backend) {
    let f = tickets_on(b, "INTEGER", "(1, '42', 'a@example.com', '2019-01-01 00:00:00')").await;
    let public = f.sign_reports();
    let dir = f.path("reports");
    f.lapse(&["plan"]).ok();
    f.lapse(&["run"]).ok();
    // The run's report, summary and signature gone, as if killed before writing them.
    let run = f.latest("run", ".json");
    let stem = run.file_name().unwrap().to_string_lossy().trim_end_matches(".json").to_string();
    for ext in [".json", ".csv", ".json.sig"] {
        std::fs::remove_file(dir.join(format!("{stem}{ext}"))).unwrap();
    }
    assert!(dir.join(format!("{stem}.evidence.jsonl")).exists());
    let verify = || f.lapse(&["report", "verify", p(&dir), "--public-key", p(&public), "--journal"]);
    let r = verify();
    r.ok();
    assert!(r.stdout.contains("has an evidence file here but no report yet"), "{}", r.stdout);
    assert!(!r.stdout.contains("unaccounted-run"), "{}", r.stdout);
    // The next run accounts for its evidence file: no longer said.
    f.lapse(&["run"]).ok();
    let r = verify();
    r.ok();
    assert!(!r.stdout.contains("no report yet") && r.stdout.contains("each accounted for"), "{}", r.stdout);
}

mod verify_journal {
    use super::{verify_journal_finds_a_removed_newest_report, verify_journal_leaves_a_killed_run_to_its_next_run};
    crate::per_backend!(
        verify_journal_finds_a_removed_newest_report,
        verify_journal_leaves_a_killed_run_to_its_next_run
    );
}

/// No AWS credentials anywhere: said as such (before, "temporarily unavailable: cannot reach
/// the S3 endpoint" with the SDK's debug dump, an outage to wait out; found by a README
/// walkthrough), and not as a transient failure.
#[test]
fn missing_aws_credentials_are_named() {
    let Ok(endpoint) = std::env::var("LAPSE_TEST_S3_ENDPOINT") else { return };
    let dir = tempfile::tempdir().unwrap();
    let signer = lapse::integrity::Signer::generate();
    std::fs::write(dir.path().join("signing.pub"), signer.public_hex()).unwrap();
    std::fs::write(dir.path().join("evidence.key"), "test-evidence-key-0123456789abcdef").unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("lapse.yaml"),
        format!(
            "connections:\n  store:\n    kind: s3\n    endpoint: {endpoint}\n    path_style: true\n    region: us-east-1\n\
             policies: policies\nevidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(crate::common::lapse_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["report", "verify", "s3://no-such-bucket/x", "-c"])
        .arg(dir.path().join("lapse.yaml"))
        .arg("--public-key")
        .arg(dir.path().join("signing.pub"))
        .env("HOME", dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_ne!(r.code, 0);
    r.stderr_has("no AWS credentials found");
    assert!(!r.stderr.contains("temporarily unavailable") && !r.stderr.contains("DispatchFailure"), "{}", r.stderr);
}
