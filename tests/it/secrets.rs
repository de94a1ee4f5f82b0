//! Secrets stay secret, beyond what `no_pii` covers: every command's `--help` (and usage errors)
//! with secrets in every environment variable an operator might set, and object-storage
//! credentials when the S3 endpoint fails, at the most verbose log level of every crate.

use std::process::Command;

use crate::common::Run;

const DB_PASSWORD: &str = "Env-Db-Pw-Q7k2Zx";
const EVIDENCE_KEY: &str = "env-evidence-key-V9w8e7r6t5y4";
const AWS_KEY_ID: &str = "AKIAGUARDTEST7Q2W9E4R";
const AWS_SECRET: &str = "Aws-Secret-Key-x1c2v3b4n5m6Qw8Er9Ty0";
const AWS_TOKEN: &str = "Aws-Session-Token-Zz9Yy8Xx7Ww6Vv5";

fn url() -> String {
    format!("postgres://app:{DB_PASSWORD}@127.0.0.1:1/app")
}

/// The environment an operator's shell or pod might have: every value a secret, including
/// `LAPSE_CONFIG` (the one variable `lapse` reads through clap, which shows env values in help
/// unless told not to).
fn secret_env(cmd: &mut Command) -> &mut Command {
    cmd.env("LAPSE_CONFIG", url())
        .env("DATABASE_URL", url())
        .env("SHOP_DATABASE_URL", url())
        .env("PGPASSWORD", DB_PASSWORD)
        .env("MYSQL_PWD", DB_PASSWORD)
        .env("LAPSE_EVIDENCE_KEY", EVIDENCE_KEY)
        .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_SESSION_TOKEN", AWS_TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("LAPSE_LOG", "trace")
}

const SECRETS: [&str; 5] = [DB_PASSWORD, EVIDENCE_KEY, AWS_KEY_ID, AWS_SECRET, AWS_TOKEN];

#[track_caller]
fn assert_no_secret(what: &str, r: &Run) {
    for s in SECRETS {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "{what} printed the secret {s:?}\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// `--help` of every command and subcommand, `help <command>`, `--version`, and usage errors
/// (which print part of the help): nothing from the environment is shown.
#[test]
fn every_help_hides_environment_values() {
    let commands: &[&[&str]] = &[
        &["--help"],
        &["-h"],
        &["--version"],
        &["help"],
        &["validate", "--help"],
        &["plan", "--help"],
        &["run", "--help"],
        &["demo", "--help"],
        &["keygen", "--help"],
        &["report", "--help"],
        &["report", "verify", "--help"],
        &["report", "render", "--help"],
        &["report", "lookup", "--help"],
        &["report", "schema", "--help"],
        &["help", "run"],
        &["help", "report", "lookup"],
        &["run", "--no-such-flag"],
        &["report", "lookup"],
        &["plan", "--batch-size", "many"],
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut documented = false;
    for args in commands {
        let out = secret_env(&mut Command::new(env!("CARGO_BIN_EXE_lapse")))
            .args(*args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let r = Run::from(out);
        let what = format!("lapse {}", args.join(" "));
        assert!(!r.stdout.is_empty() || !r.stderr.is_empty(), "{what} printed nothing");
        assert!(!r.stderr.contains("panicked"), "{what} panicked:\n{}", r.stderr);
        assert_no_secret(&what, &r);
        assert!(!r.stdout.contains("127.0.0.1:1") && !r.stderr.contains("127.0.0.1:1"), "{what} showed LAPSE_CONFIG");
        documented |= r.stdout.contains("LAPSE_CONFIG");
    }
    assert!(documented, "the help still names the LAPSE_CONFIG variable");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "help wrote nothing");
}

/// An S3 connection that fails — a closed port, and (with the test server) a bucket that does
/// not exist, so requests are signed and sent with the session token — never shows the
/// credentials, not even at `LAPSE_LOG=trace` for every crate (the AWS SDK and HTTP stack
/// included).
#[test]
fn s3_credentials_never_printed() {
    let mut endpoints = vec!["http://127.0.0.1:1".to_string()];
    if let Ok(e) = std::env::var("LAPSE_TEST_S3_ENDPOINT") {
        endpoints.push(e);
    }
    for endpoint in endpoints {
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f);
        std::fs::create_dir_all(p("policies")).unwrap();
        std::fs::write(p("evidence.key"), "test-evidence-key-0123456789abcdef").unwrap();
        std::fs::write(
            p("lapse.yaml"),
            format!(
                "connections:\n  archive:\n    kind: s3\n    region: us-east-1\n    endpoint: {endpoint}\n    path_style: true\n    bucket: guard-no-such-bucket\npolicies: policies\nevidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n"
            ),
        )
        .unwrap();
        std::fs::write(
            p("policies/exports.yaml"),
            "name: exports\ndataset:\n  connection: archive\n  prefix: logs/\npersonal:\n  content: { category: free_text }\npurposes:\n  - name: debugging\n    legal_basis: legitimate_interests\n    retain: 30d\n    after: last_modified\non_lapse: delete\n",
        )
        .unwrap();
        // Credentials from the environment, and from a profile in a shared credentials file
        // (`aws_config` logs those it loads at INFO, the access key id in them; found by a
        // review).
        std::fs::write(
            p("credentials"),
            format!("[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\naws_session_token = {AWS_TOKEN}\n"),
        )
        .unwrap();
        for profile in [false, true] {
            for args in [&["validate", "--connect"][..], &["plan"], &["run", "--yes"]] {
                for format in ["json", "text"] {
                    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lapse"));
                    secret_env(&mut cmd);
                    if profile {
                        cmd.env_remove("AWS_ACCESS_KEY_ID")
                            .env_remove("AWS_SECRET_ACCESS_KEY")
                            .env_remove("AWS_SESSION_TOKEN")
                            .env("AWS_SHARED_CREDENTIALS_FILE", p("credentials"))
                            .env("AWS_CONFIG_FILE", p("no-config"));
                    }
                    let out = cmd
                        .args(args)
                        .args(["--log-format", format, "-c"])
                        .arg(p("lapse.yaml"))
                        .args(["--cutoff", "2026-01-01T00:00:00Z"].iter().filter(|_| args[0] != "validate"))
                        .output()
                        .unwrap();
                    let r = Run::from(out);
                    let what =
                        format!("{endpoint} (profile: {profile}): lapse {} --log-format {format}", args.join(" "));
                    assert_ne!(r.code, 0, "{what} succeeded:\n{}", r.stderr);
                    assert!(!r.stderr.contains("panicked"), "{what} panicked:\n{}", r.stderr);
                    assert_no_secret(&what, &r);
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(p("reports")) {
            for e in rd {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
                for s in SECRETS {
                    assert!(!text.contains(s), "a report holds the secret {s:?}");
                }
            }
        }
    }
}

/// The PostgreSQL driver's warnings about connect options quote them: an unknown URL parameter
/// with its value (`sslpassword=…`, libpq's client-key passphrase) and a malformed `.pgpass`
/// line, password included. Neither reaches the log, at any level (found by a review).
#[test]
fn postgres_connect_option_warnings_are_not_logged() {
    const SSL_PW: &str = "SeCrEtSsl1-Qz8";
    const PGPASS_PW: &str = "SeCrEtPgPass2-Wx7";
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    std::fs::create_dir_all(p("policies")).unwrap();
    std::fs::write(p("evidence.key"), "test-evidence-key-0123456789abcdef").unwrap();
    std::fs::write(p("db.url"), format!("postgres://app@127.0.0.1:1/app?sslpassword={SSL_PW}\n")).unwrap();
    std::fs::write(p("pgpass"), format!("127.0.0.1:1:app:{PGPASS_PW}\n")).unwrap();
    std::fs::write(
        p("lapse.yaml"),
        "connections:\n  db:\n    url_file: db.url\npolicies: policies\nevidence:\n  key_file: evidence.key\nreports:\n  dir: reports\n",
    )
    .unwrap();
    std::fs::write(
        p("policies/people.yaml"),
        "name: people\ndataset:\n  connection: db\n  table: people\n  key: id\npersonal:\n  email: { category: email }\npurposes:\n  - name: service\n    legal_basis: contract\n    retain: 1y\n    after: created_at\non_lapse: delete\n",
    )
    .unwrap();
    // (Each invocation waits out the connection's retries: two of them.)
    for (level, format) in [("", "json"), ("trace", "text")] {
        let out = Command::new(env!("CARGO_BIN_EXE_lapse"))
            .args(["validate", "--connect", "--log-format", format, "-c"])
            .arg(p("lapse.yaml"))
            .env("LAPSE_LOG", level)
            .env("PGPASSFILE", p("pgpass"))
            .env_remove("LAPSE_CONFIG")
            .output()
            .unwrap();
        let r = Run::from(out);
        assert_ne!(r.code, 0, "nothing listens on port 1");
        for s in [SSL_PW, PGPASS_PW] {
            assert!(
                !r.stdout.contains(s) && !r.stderr.contains(s),
                "LAPSE_LOG={level:?} {format}: {s} printed:\n{}",
                r.stderr
            );
        }
    }
}
