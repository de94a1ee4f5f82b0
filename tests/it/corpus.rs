//! The bad-input corpus: `tests/corpus/<case>/`, real files a reviewer can open.
//!
//! Each case directory holds the file(s) it breaks — `policies/*.yaml` (replacing the base
//! policies), `lapse.yaml`, `holds.yaml` — and `case.yaml`: the fragments that must appear on one
//! line of stderr (`expect`), optionally where (`at`, `file:line:column` relative to the
//! workspace) and the commands to run (`commands`; default `validate` then `run`). Everything a
//! case does not override comes from `tests/corpus/_base/`, a valid workspace that WOULD delete
//! five of the eight seeded rows — so a bad input that slips through shows up as destroyed data.
//!
//! For every case and command: exit code 2, the expected message (and position), no panic and
//! no backtrace, a bounded stderr (a 100 KB value is not echoed back in full), bounded memory
//! (peak RSS, where GNU time is available), no secret printed; and afterwards nothing was
//! written: every table of the seeded SQLite database is unchanged, no table was created (no
//! journal), and no file appeared in the workspace (no plan or run report).
//!
//! The corpus files are also the seeds of the policy-parser fuzz target (`scripts/fuzz.sh`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::common::{repo_root, Backend, Fixture, Run, CUTOFF};
use crate::conformance::seeded;

/// The evidence key the fixture writes; it must never be printed.
const KEY: &str = "test-evidence-key-0123456789abcdef";
/// Secrets some cases carry in their files; never to be echoed.
const SECRETS: &[&str] = &[KEY, "s3cretpw", "hunter2"];
/// How long one `lapse` invocation may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(20);
/// The most a refusal may print on stderr.
const MAX_STDERR: usize = 16 * 1024;
/// The most memory (peak resident set) one refusal may use.
const MAX_RSS_KB: u64 = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Fragments that must all appear on one stderr line.
    expect: Vec<String>,
    /// `file:line:column`, relative to the workspace.
    #[serde(default)]
    at: Option<String>,
    /// Commands to run (without `-c`); default `validate` and `run`.
    #[serde(default)]
    commands: Option<Vec<Vec<String>>>,
}

struct Case {
    name: String,
    dir: PathBuf,
    expect: Expect,
}

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/corpus")
}

fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(dir.join("case.yaml"))
                .unwrap_or_else(|e| panic!("{name}: cannot read case.yaml: {e}"));
            let expect: Expect =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: bad case.yaml: {e}"));
            assert!(!expect.expect.is_empty(), "{name}: expect is empty");
            Case { name, dir, expect }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The category of a case: its name up to the first `-` (`sql-ident` and `sql-cond` count apart).
fn category(name: &str) -> String {
    let mut parts = name.splitn(3, '-');
    let first = parts.next().unwrap_or_default();
    match (first, parts.next()) {
        ("sql" | "config" | "holds", Some(second)) => format!("{first}-{second}"),
        _ => first.to_string(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// The base workspace, then the case's files on top (its `policies/` replaces the base one).
fn lay_out(f: &Fixture, case_dir: &Path) {
    let base = corpus_dir().join("_base");
    std::fs::remove_dir_all(f.path("policies")).unwrap();
    let policies = if case_dir.join("policies").is_dir() { case_dir.join("policies") } else { base.join("policies") };
    copy_dir(&policies, &f.path("policies"));
    for file in ["lapse.yaml", "holds.yaml"] {
        let from = if case_dir.join(file).exists() { case_dir.join(file) } else { base.join(file) };
        std::fs::copy(from, f.path(file)).unwrap();
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What "nothing was written" compares: every table's rows and the list of tables.
async fn state(f: &Fixture) -> Vec<String> {
    let mut s =
        f.db.texts("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .await
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
    s.extend(f.db.snapshot("people", "id").await);
    s.extend(f.db.snapshot("legal_holds", "id").await);
    s
}

/// A finished invocation with its peak memory (KiB), when GNU time could measure it.
struct Measured {
    run: Run,
    max_rss_kb: Option<u64>,
}

/// `lapse <args> -c lapse.yaml` in the workspace, with a deadline, under GNU time when present.
/// `plan` and `run` get the harness's fixed cutoff unless the case gives one; `run` gets `--yes`.
fn lapse(f: &Fixture, args: &[String], out_dir: &Path) -> Measured {
    let time = Path::new("/usr/bin/time");
    let rss_file = out_dir.join("rss");
    let _ = std::fs::remove_file(&rss_file);
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(env!("CARGO_BIN_EXE_lapse"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_lapse"))
    };
    cmd.args(args).arg("-c").arg(f.path("lapse.yaml"));
    let first = args.first().map(String::as_str);
    if matches!(first, Some("plan" | "run")) && !args.iter().any(|a| a == "--cutoff") {
        cmd.args(["--cutoff", CUTOFF]);
    }
    if first == Some("run") {
        cmd.arg("--yes");
    }
    cmd.env("LAPSE_LOG", "lapse=debug").env_remove("LAPSE_CONFIG").env_remove("RUST_BACKTRACE");
    let (out, err) = (out_dir.join("stdout"), out_dir.join("stderr"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    // Its own process group, so that a hung `lapse` under GNU time is killed with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("run lapse");
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code().unwrap_or(-1), false);
        }
        if start.elapsed() > DEADLINE {
            let _ = Command::new("kill").args(["-KILL", &format!("-{}", child.id())]).status();
            child.kill().unwrap_or_default();
            child.wait().unwrap();
            break (-1, true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let mut stderr = read(&err);
    // GNU time reports a non-zero exit on its first line of the -o file; the last line is %M.
    let max_rss_kb = read(&rss_file).lines().last().and_then(|l| l.trim().parse().ok());
    if timed_out {
        stderr.push_str(&format!("\n<lapse did not finish within {DEADLINE:?} and was killed>\n"));
    }
    Measured { run: Run { code, stdout: read(&out), stderr }, max_rss_kb }
}

fn excerpt(s: &str) -> String {
    if s.len() <= 4000 {
        return s.to_string();
    }
    let mut end = 4000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes in all]", &s[..end], s.len())
}

/// Runs one case; returns its problems (empty: refused as it should be) and the peak RSS seen.
async fn check(case: &Case, out_dir: &Path) -> (Vec<String>, u64) {
    let f = seeded(Backend::Sqlite).await;
    lay_out(&f, &case.dir);
    let before = state(&f).await;
    let files_before = files(f.dir.path());
    let default = vec![vec!["validate".to_string()], vec!["run".to_string()]];
    let commands = case.expect.commands.as_ref().unwrap_or(&default);
    let at = case.expect.at.as_ref().map(|a| format!("/{a}"));
    let mut problems = Vec::new();
    let mut peak = 0;
    for args in commands {
        let Measured { run: r, max_rss_kb } = lapse(&f, args, out_dir);
        peak = peak.max(max_rss_kb.unwrap_or(0));
        let mut bad = Vec::new();
        if r.code != 2 {
            bad.push(format!("exit code {} (want 2)", r.code));
        }
        let found = r.stderr.lines().any(|l| {
            case.expect.expect.iter().all(|e| l.contains(e.as_str())) && at.as_ref().is_none_or(|a| l.contains(a))
        });
        if !found {
            bad.push(format!("no stderr line has {:?} at {:?}", case.expect.expect, case.expect.at));
        }
        if r.stderr.contains("panicked") || r.stderr.contains("stack backtrace") || r.stderr.contains("RUST_BACKTRACE")
        {
            bad.push("panicked".into());
        }
        if r.stderr.len() > MAX_STDERR {
            bad.push(format!("stderr is {} bytes (at most {MAX_STDERR})", r.stderr.len()));
        }
        if let Some(kb) = max_rss_kb.filter(|&kb| kb > MAX_RSS_KB) {
            bad.push(format!("peak memory {kb} KiB (at most {MAX_RSS_KB})"));
        }
        for s in SECRETS {
            if r.stderr.contains(s) || r.stdout.contains(s) {
                bad.push(format!("printed the secret {s:?}"));
            }
        }
        if !bad.is_empty() {
            problems.push(format!(
                "`lapse {}`: {}\n--- stdout:\n{}--- stderr:\n{}",
                args.join(" "),
                bad.join("; "),
                excerpt(&r.stdout),
                excerpt(&r.stderr)
            ));
        }
    }
    if state(&f).await != before {
        problems.push("the database changed (rows or tables)".into());
    }
    let files_after = files(f.dir.path());
    if files_after != files_before {
        let new: Vec<&String> = files_after.iter().filter(|x| !files_before.contains(x)).collect();
        problems.push(format!("files were written: {new:?}"));
    }
    (problems, peak)
}

/// The corpus is what the issue asks for: at least 60 cases over every category.
#[test]
fn the_corpus_covers_every_category() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        *by.entry(category(&c.name)).or_default() += 1;
    }
    for want in [
        "syntax",
        "unknown",
        "type",
        "period",
        "date",
        "tz",
        "null",
        "dup",
        "conflict",
        "sql-ident",
        "sql-cond",
        "long",
        "encoding",
        "bomb",
        "catalog",
    ] {
        assert!(by.get(want).copied().unwrap_or(0) > 0, "no case of category {want}: {by:?}");
    }
    for c in &cases {
        let own: Vec<String> = files(&c.dir).into_iter().filter(|f| f != "case.yaml").collect();
        assert!(!own.is_empty() || c.expect.commands.is_some(), "{}: the case changes nothing", c.name);
    }
}

/// The control experiment: the base workspace is valid, and its run destroys five rows.
#[tokio::test]
async fn the_base_workspace_is_valid_and_would_destroy() {
    let f = seeded(Backend::Sqlite).await;
    lay_out(&f, &corpus_dir().join("_base"));
    f.lapse(&["validate", "--connect"]).ok();
    f.lapse(&["run"]).ok();
    assert_eq!(f.db.count("SELECT COUNT(*) FROM people").await, 3);
}

/// Every case of the corpus is refused with exit 2 and its message, and nothing is written.
/// `LAPSE_CORPUS=name,...` runs only those cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_and_nothing_is_written() {
    let only: Option<Vec<String>> =
        std::env::var("LAPSE_CORPUS").ok().map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let cases: Vec<Case> = cases().into_iter().filter(|c| only.as_ref().is_none_or(|o| o.contains(&c.name))).collect();
    let out_dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let (mut invocations, mut peak) = (0, 0);
    for c in &cases {
        let (problems, rss) = check(c, out_dir.path()).await;
        invocations += c.expect.commands.as_ref().map_or(2, Vec::len);
        peak = peak.max(rss);
        if !problems.is_empty() {
            failures.push(format!("[{}]\n{}", c.name, problems.join("\n")));
        }
    }
    eprintln!(
        "corpus: {} cases, {invocations} invocations, {} refused as they should be; peak memory {peak} KiB",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases were not refused as they should be:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
