//! `lapse` command line. Exit codes are decided here, in one place:
//! 0 success, 1 partial failure (or interrupted), 2 invalid configuration, 3 guardrail tripped,
//! 6 another worker holds the run lock (nothing done). `lapse report`: 4 verification failed, 5 not found.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use lapse::diag::Diagnostics;
use lapse::engine::{self, Exit, Mode, Options, Workspace};

#[derive(Parser)]
#[command(
    name = "lapse",
    version,
    about = "Destroys personal data whose purpose has lapsed, honours legal holds, and proves it"
)]
struct Cli {
    /// Log format on stderr (default auto: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// No progress bar (shown only when stderr is a terminal and logs are text).
    #[arg(long, global = true)]
    no_progress: bool,
    /// After SIGTERM/SIGINT: seconds to finish the current batch and write the report before
    /// the process exits anyway (keep it below the pod's terminationGracePeriodSeconds). A second
    /// signal exits at once.
    #[arg(long, global = true, default_value_t = 25, value_name = "SECONDS")]
    shutdown_grace: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Worker configuration file.
    #[arg(long, short, default_value = "lapse.yaml", env = "LAPSE_CONFIG", hide_env_values = true)]
    config: PathBuf,
    /// Only these policies (repeatable).
    #[arg(long = "policy", short = 'p')]
    policies: Vec<String>,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Cutoff instant (RFC 3339 or YYYY-MM-DD, or `today` / `this-hour`: the start of the current UTC
    /// day or hour, which shards of one run agree on); default: now. A purpose lapses when
    /// anchor + period <= cutoff.
    #[arg(long)]
    cutoff: Option<String>,
    /// Rows per batch (one transaction each, 1 to 50000); overrides config and policy.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50000))]
    batch_size: Option<u32>,
    /// Exempt a policy from its guardrail for this run (`*` for all). Repeatable.
    #[arg(long = "allow-share")]
    allow_share: Vec<String>,
    /// Let `run` take a --cutoff in the future (it destroys what lapses only then; `plan` looks
    /// ahead without it).
    #[arg(long)]
    allow_future_cutoff: bool,
    /// Stop each stage after N batches (at least 1); what is still due is left for the next run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_batches: Option<u64>,
    /// Write reports here instead of the config's reports.dir.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Process only shard INDEX of COUNT workers (0-based, e.g. `--shard 2/3`): each policy goes to
    /// one shard by a stable hash of its name; `shard_by_key` policies are split by key.
    #[arg(long, env = "LAPSE_SHARD", value_name = "INDEX/COUNT")]
    shard: Option<lapse::shard::Shard>,
    #[command(flatten)]
    metrics: lapse::metrics::MetricsArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check config and policies (every error, with file:line:column); --connect checks the catalog too.
    Validate {
        #[command(flatten)]
        common: Common,
        /// Also check tables, columns, types, keys and foreign keys in the live databases (read-only).
        #[arg(long)]
        connect: bool,
        /// Do not read secrets (URLs, keys): for checking a rendered config where secrets are
        /// mounted only at run time (e.g. a Helm chart).
        #[arg(long, conflicts_with = "connect")]
        skip_secrets: bool,
    },
    /// Dry run: count what is due, held and kept, in read-only sessions. Changes nothing.
    Plan {
        #[command(flatten)]
        args: RunArgs,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Enforce: destroy what is due, in bounded batches, and write the destruction report.
    Run {
        #[command(flatten)]
        args: RunArgs,
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short)]
        yes: bool,
    },
    /// Long-running: run the config's `schedule.jobs` on their cron schedules (with time zones);
    /// runs never overlap; SIGTERM finishes the current batch, writes the report and exits.
    /// Each job names its policies (`--policy` is refused here).
    #[command(mut_arg("policies", |a| a.hide(true)))]
    Schedule {
        #[command(flatten)]
        common: Common,
        /// Reports directory for the scheduled runs (default: the config's reports.dir).
        #[arg(long)]
        report_dir: Option<PathBuf>,
    },
    /// Quickstart: create a SQLite shop with sample personal data in DIR, then plan and run.
    Demo {
        /// Directory for the demo database, config, policies and reports.
        #[arg(long, default_value = "demo-out")]
        dir: PathBuf,
        /// Number of customers to seed.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
        customers: u32,
        /// Only create the data and config; do not plan or run.
        #[arg(long)]
        seed_only: bool,
    },
    /// Reports after the fact: verify, render, look up a subject, print the JSON Schema.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// Generate keys: an Ed25519 signing key pair and a random evidence key (secrets mode 0600).
    Keygen {
        /// Directory for signing.key, signing.pub and evidence.key.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite existing key files (what was made with the old keys stops matching).
        #[arg(long)]
        force: bool,
    },
}

/// `print!`/`println!` (`write`, `writeln`) to stdout or stderr that take a closed pipe
/// (`lapse plan | head -3`, `lapse validate 2>&1 | true`) for a reader that has read enough: what
/// was printed is ignored, not a panic (exit 101; found by a read-only review). The report is
/// written before anything is printed.
macro_rules! put {
    ($stream:ident, $write:ident, $($t:tt)*) => {{
        use std::io::Write as _;
        let _ = $write!(std::io::$stream().lock(), $($t)*);
    }};
}
macro_rules! out { ($($t:tt)*) => { put!(stdout, write, $($t)*) }; }
macro_rules! outln { ($($t:tt)*) => { put!(stdout, writeln, $($t)*) }; }
macro_rules! errout { ($($t:tt)*) => { put!(stderr, write, $($t)*) }; }
macro_rules! errln { ($($t:tt)*) => { put!(stderr, writeln, $($t)*) }; }

fn init_logging(format: Option<LogFormat>, quiet: bool, no_progress: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    // At DEBUG and TRACE the AWS SDK logs the resolved credentials (the access key id; the secret key and
    // session token it redacts) when it resolves endpoints and signs, and request URLs (object keys):
    // never below INFO for them. A directive of LAPSE_LOG naming one of their modules
    // (`aws_smithy_runtime::client=debug`, more specific than the clamp, would win) is dropped.
    const AWS: [&str; 5] = ["aws_sdk_s3", "aws_smithy_runtime", "aws_smithy_runtime_api", "aws_runtime", "aws_sigv4"];
    let user = std::env::var("LAPSE_LOG").ok().map(|v| {
        v.split(',')
            .filter(|d| {
                let target = d.trim().split(['=', '[']).next().unwrap_or_default();
                !AWS.iter().any(|a| target == *a || target.starts_with(&format!("{a}::")) || target.starts_with("aws"))
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    // A filter that does not parse is said once logging is set up (before, it was dropped
    // without a word; found by a review).
    let mut unparsed = None;
    let mut filter = user
        .filter(|u| !u.trim().is_empty())
        .and_then(|u| EnvFilter::try_new(&u).map_err(|e| unparsed = Some(e.to_string())).ok())
        // tokio-cron-scheduler logs "Error receiving Closed" at ERROR as `schedule` stops: its
        // channels closing, no error of a run (`serve` returns the errors of its calls).
        .unwrap_or_else(|| EnvFilter::new(format!("lapse={default},warn,tokio_cron_scheduler=off")));
    for quiet in [
        "aws_sdk_s3=info",
        "aws_smithy_runtime=info",
        "aws_smithy_runtime_api=info",
        "aws_runtime=info",
        "aws_sigv4=info",
    ] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    JSON_DIAGNOSTICS.store(matches!(format, Some(LogFormat::Json)), Ordering::Relaxed);
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        Some(LogFormat::Auto) | None => !std::io::stderr().is_terminal(),
    };
    if !json && !quiet && !no_progress && std::io::stderr().is_terminal() {
        lapse::progress::enable();
    }
    // And whatever enabled them (a span directive such as `[policy]=debug` enables every event
    // inside the span, the SDK's too), no AWS crate's event below INFO gets out.
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Nor any AWS event below WARN: `aws_config` logs the loaded credentials (the access key id)
    // at INFO from a profile. Never the driver's relay of PostgreSQL notices (a function may
    // set its own `client_min_messages`, and its `RAISE WARNING` quote a row's values), nor
    // its connect-option warnings, which quote an unknown URL parameter's value
    // (`sslpassword=…`) and a malformed `.pgpass` line, password and all (found by a review).
    // (Only the option warnings that carry a value: an unknown parameter's, a `.pgpass` line;
    // the others, a `.pgpass` too open or unreadable, say nothing secret.)
    // `-q` keeps to warnings and errors whatever `LAPSE_LOG` enables (before, a filter of
    // `LAPSE_LOG`, which the chart always sets, made it do nothing; found by a review).
    let aws_quiet = tracing_subscriber::filter::filter_fn(move |m| {
        let t = m.target();
        let quotes = m.fields().field("value").is_some() || m.fields().field("line").is_some();
        !((quiet && m.is_event() && *m.level() > tracing::Level::WARN)
            || (t.starts_with("aws") && *m.level() > tracing::Level::WARN)
            || t.starts_with("sqlx::postgres::notice")
            || (t.starts_with("sqlx_postgres::options") && quotes))
    });
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(lapse::progress::writer).with_target(false);
    if json {
        b.json().flatten_event(true).with_current_span(true).finish().with(aws_quiet).init();
    } else {
        b.with_ansi(std::io::stderr().is_terminal()).finish().with(aws_quiet).init();
    }
    if let Some(e) = unparsed {
        tracing::warn!("LAPSE_LOG is no filter lapse can read ({e}): the default filter is used");
    }
}

/// A catalog that could not be read (connection lost, server error) is a failed run (1), not an
/// invalid configuration (2): a CronJob should retry it, not wait for a fixed config.
fn prepare_exit(d: &Diagnostics) -> Exit {
    if d.only_unavailable() {
        Exit::Partial
    } else {
        Exit::Invalid
    }
}

/// At most this many diagnostics are printed (a file of 20,000 broken documents would print
/// 20,000 lines); the count of the rest follows.
const MAX_PRINTED_DIAGNOSTICS: usize = 50;

/// Set by `--log-format json`: diagnostics and the final error line are log events too (a log
/// pipeline reads one JSON object per line; before, the lines that say why a run exited 2 were
/// plain text among them). Not when JSON was only picked because stderr is no terminal.
static JSON_DIAGNOSTICS: AtomicBool = AtomicBool::new(false);

/// Prints the diagnostics (at most [`MAX_PRINTED_DIAGNOSTICS`]); returns the closing line's
/// text (how many problems, nothing changed), empty without errors, for the caller's error.
fn print_diags(d: &Diagnostics) -> String {
    let json = JSON_DIAGNOSTICS.load(Ordering::Relaxed);
    for x in d.0.iter().take(MAX_PRINTED_DIAGNOSTICS) {
        if !json {
            errln!("{x}");
            continue;
        }
        let (file, line, column) = match (&x.location, &x.file) {
            (Some(l), _) => (Some(l.file.display().to_string()), Some(l.line), Some(l.column)),
            (None, Some(f)) => (Some(f.display().to_string()), None, None),
            (None, None) => (None, None, None),
        };
        let level = match x.severity {
            lapse::diag::Severity::Warning => "WARN",
            _ => "ERROR",
        };
        json_event(
            level,
            &x.to_string(),
            serde_json::json!({"file": file, "line": line, "column": column, "policy": x.policy}),
        );
    }
    if d.0.len() > MAX_PRINTED_DIAGNOSTICS {
        say_error(&format!("... and {} more", d.0.len() - MAX_PRINTED_DIAGNOSTICS), false);
    }
    let n = d.errors().count();
    if n > 0 {
        format!("{n} problem{} found; nothing was changed", if n == 1 { "" } else { "s" })
    } else {
        String::new()
    }
}

/// One JSON log line in the shape of the log's (`timestamp`, `level`, `message`, then `fields`'
/// non-null entries), written directly: no `LAPSE_LOG` filter may drop why a run exited 2.
fn json_event(level: &str, message: &str, fields: serde_json::Value) {
    let mut o = serde_json::Map::new();
    o.insert("timestamp".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
    o.insert("level".into(), level.into());
    o.insert("message".into(), message.into());
    if let serde_json::Value::Object(f) = fields {
        o.extend(f.into_iter().filter(|(_, v)| !v.is_null()));
    }
    errln!("{}", serde_json::Value::Object(o));
}

/// The final error line: `error: …` on stderr, or an ERROR event with `--log-format json`.
fn say_error(msg: &str, prefixed: bool) {
    if JSON_DIAGNOSTICS.load(Ordering::Relaxed) {
        json_event("ERROR", msg, serde_json::Value::Null);
    } else if prefixed {
        errln!("error: {msg}");
    } else {
        errln!("{msg}");
    }
}

/// Set while `run` waits at its confirmation prompt: a signal then aborts at once.
static PROMPTING: AtomicBool = AtomicBool::new(false);

/// Runs (and plans) in progress: `schedule` is idle between them.
static IN_PROGRESS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a run in progress for as long as it lives ([`IN_PROGRESS`]).
struct InProgress;

impl InProgress {
    fn start() -> InProgress {
        IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
        InProgress
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        IN_PROGRESS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SIGTERM / SIGINT: set `flag` (the run stops after its current batch and writes its report);
/// exit anyway after `grace`, or at once on a second signal.
fn install_signals(flag: Arc<AtomicBool>, grace: std::time::Duration, schedule: bool) {
    async fn next_signal() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
    tokio::spawn(async move {
        next_signal().await;
        if PROMPTING.load(Ordering::SeqCst) {
            // At the confirmation nothing has started: no batch to finish, no grace to wait.
            errln!();
            say_error("aborted at the confirmation; nothing was changed", true);
            std::process::exit(Exit::Partial as i32);
        }
        if schedule && IN_PROGRESS.load(Ordering::SeqCst) == 0 {
            // Between runs: nothing to finish, and no grace to wait for (before, the schedule
            // said it was finishing a batch, and with `--shutdown-grace 0` exited 1 saying a
            // run did not stop; found by a review). It stops within its poll.
            tracing::warn!("signal received: stopping the schedule (no run in progress)");
            flag.store(true, Ordering::SeqCst);
            next_signal().await;
            say_error("second signal: exiting now", true);
            std::process::exit(Exit::Partial as i32);
        }
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "signal received: finishing the current batch, then writing the report"
        );
        flag.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = next_signal() => {
                say_error("second signal: exiting now; committed batches are in the journal table, the report was not written", true);
            }
            _ = tokio::time::sleep(grace) => {
                say_error(&format!("the run did not stop within {}s of the signal (a batch or a count was in flight): exiting without a report; committed batches are in the journal table and the evidence file", grace.as_secs()), true);
            }
        }
        std::process::exit(Exit::Partial as i32);
    });
}

async fn plan_or_run(
    mode: Mode,
    args: RunArgs,
    json: bool,
    yes: bool,
    cancel: Arc<AtomicBool>,
) -> Result<Exit, (Exit, String)> {
    let _in_progress = InProgress::start();
    let invalid = |m: String| (Exit::Invalid, m);
    let ws = Workspace::load(&args.common.config).map_err(|d| (Exit::Invalid, print_diags(&d)))?;
    for p in &args.common.policies {
        if !ws.policies.policies.iter().any(|x| &x.name == p) {
            return Err(invalid(unknown_policy(&ws, p)));
        }
    }
    // A typo here left the guardrail in place, and the run meant to clear a backlog stopped
    // at it again without a word.
    for p in args.allow_share.iter().filter(|p| p.as_str() != "*") {
        if !ws.policies.policies.iter().any(|x| &x.name == p) {
            return Err(invalid(format!("--allow-share: {}", unknown_policy(&ws, p))));
        }
    }
    // A shard opens, checks and prepares only the policies it runs (its own, and its part of
    // the key-sharded ones): before, every policy's database had to answer, and one outage or
    // broken table failed every shard of the run. (A shard that takes none goes through all,
    // as before: an empty selection means every policy.)
    let selected: Vec<String> = match args.shard {
        Some(s) => {
            let mine: Vec<String> = ws
                .policies
                .policies
                .iter()
                .filter(|p| args.common.policies.is_empty() || args.common.policies.contains(&p.name))
                .filter(|p| s.takes(p))
                .map(|p| p.name.clone())
                .collect();
            // None of the asked policies is this shard's: the selection as asked (an empty
            // list would mean every policy, and the shard would run policies nobody asked for).
            if mine.is_empty() {
                args.common.policies.clone()
            } else {
                mine
            }
        }
        None => args.common.policies.clone(),
    };
    if let Some(dir) = &args.report_dir {
        let d =
            lapse::diag::Diagnostics(lapse::engine::reports_inside_a_dataset(&ws.config, &ws.policies.policies, dir));
        if !d.0.is_empty() {
            return Err(invalid(format!("--report-dir: {}", print_diags(&d))));
        }
    }
    // The command line's metrics settings are checked as the config's are, before anything is
    // destroyed (a `--pushgateway` URL with credentials was refused only when publishing).
    let metrics = ws.config.metrics.with_args(&args.metrics, &ws.config.base_dir);
    if let Some((_, m)) = metrics.problems().into_iter().next() {
        return Err(invalid(format!("--pushgateway: {m}")));
    }
    // (A path of the command line is the working directory's, as it is written: before, it was
    // checked as the config directory's; found by a review.)
    let textfile = metrics.textfile.as_deref().map(|t| match t.is_relative() {
        true => std::env::current_dir().map(|d| d.join(t)).unwrap_or_else(|_| t.to_path_buf()),
        false => t.to_path_buf(),
    });
    if let Some(m) = textfile.and_then(|t| lapse::engine::textfile_overwrites(&ws.config, &t)) {
        return Err(invalid(m));
    }
    ws.check_secrets(&selected).map_err(|e| invalid(format!("{e:#}")))?;
    let key = ws.evidence_key().map_err(|e| invalid(format!("{e:#}")))?;
    let cutoff = match &args.cutoff {
        Some(c) => {
            Some(lapse::shard::parse_cutoff(c, chrono::Utc::now()).map_err(|e| invalid(format!("--cutoff: {e}")))?)
        }
        None => None,
    };
    // A cutoff ahead of now destroys what has not lapsed yet: `2062` typed for `2026`. A few
    // minutes of clock skew between workers are not the future.
    if let Some(c) = cutoff.filter(|c| mode == Mode::Run && *c > chrono::Utc::now() + chrono::Duration::minutes(5)) {
        if !args.allow_future_cutoff {
            return Err(invalid(format!(
                "--cutoff {} is in the future: a run would destroy what has not lapsed yet (plan looks ahead; --allow-future-cutoff if a run should)",
                c.to_rfc3339()
            )));
        }
    }
    let conns = ws.connect(&selected, mode == Mode::Plan).await.map_err(connect_exit)?;
    let prepared = engine::prepare(&ws, &selected, &conns).await.map_err(|d| (prepare_exit(&d), print_diags(&d)))?;
    if mode == Mode::Run {
        ws.check_report_bucket().await.map_err(sink_exit)?;
    }
    if mode == Mode::Run && !yes && std::io::stdin().is_terminal() {
        if !std::io::stderr().is_terminal() {
            // The prompt would go to a file or a log pipeline and the run would seem to hang.
            return Err(invalid(
                "run asks for confirmation on the terminal, but stderr is not one (redirected): give --yes to run without asking".into(),
            ));
        }
        let n = prepared.iter().filter(|(p, _)| args.shard.is_none_or(|s| s.takes(p))).count();
        errout!(
            "This will destroy or anonymize data under {n} polic{}. Continue? [y/N] ",
            if n == 1 { "y" } else { "ies" }
        );
        PROMPTING.store(true, Ordering::SeqCst);
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        PROMPTING.store(false, Ordering::SeqCst);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err((Exit::Partial, "aborted; nothing was changed".into()));
        }
    }
    let opts = Options {
        cutoff,
        allow_share: args.allow_share,
        batch_size: args.batch_size,
        max_batches: args.max_batches,
        report_dir: args.report_dir,
        shard: args.shard,
        // A shard prepared only its own policies: its report names the run's selection.
        selection: args.shard.map(|_| args.common.policies.clone()),
    };
    // A watchdog: a statement on a connection that went silent (no answer, no close) waits for
    // ever, and with it the run, a scheduler's every later job, and a CronJob until its deadline
    // (found by a review). Without progress (an answer from a database or store, a batch) for
    // `defaults.stall_seconds` the process exits 1: the uncommitted batch rolls back with its
    // connections, what was committed is in the evidence and journal, and the next run accounts
    // for it, as for a killed run (`schedule` is restarted by its supervisor). A task of its own,
    // so that a blocked thread of the run cannot hold it up.
    let stall = std::time::Duration::from_secs(ws.config.defaults.stall_seconds);
    lapse::progress::touch();
    let watchdog = tokio::spawn(async move {
        let tick = (stall / 10).clamp(std::time::Duration::from_millis(200), std::time::Duration::from_secs(10));
        loop {
            tokio::time::sleep(tick).await;
            if lapse::progress::idle() >= stall {
                say_error(
                    &format!(
                        "no progress for {} s (defaults.stall_seconds): a database or store stopped answering; exiting without the report (what was committed is in the evidence file, and the next run accounts for it)",
                        stall.as_secs()
                    ),
                    true,
                );
                std::process::exit(Exit::Partial as i32);
            }
        }
    });
    let executed = engine::execute(&ws, &prepared, &conns, &key, mode, &opts, &cancel).await;
    watchdog.abort();
    // Sessions ended, not dropped with the process: SQLite then checkpoints its WAL into the
    // database file (found by a review: a `-wal` file left behind replayed a run's deletions
    // into a database restored from a backup). Bounded: a server that stopped answering does
    // not hold up the exit.
    let closing = futures::future::join_all(conns.values().map(|c| c.close()));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), closing).await;
    let out = executed.map_err(|e| {
        if e.downcast_ref::<engine::Busy>().is_some() {
            (Exit::Busy, format!("{e:#}"))
        } else {
            (Exit::Partial, format!("{e:#}"))
        }
    })?;
    // A report not stored on the report bucket fails the run (exit 1; the next run retries).
    let code = match (&out.archive_error, Exit::of(&out.report)) {
        (Some(_), Exit::Success) => Exit::Partial,
        (_, code) => code,
    };
    if mode == Mode::Run {
        // Metrics never change the exit code; a failure is logged (see `lapse::metrics`). They
        // give the process's own: a run whose report is not on the bucket is no success.
        let mut m = ws.config.metrics.with_args(&args.metrics, &ws.config.base_dir);
        m.policies = ws.policies.policies.iter().map(|p| p.name.clone()).collect();
        lapse::metrics::publish(&m, &out.report, code as u8).await;
    }
    if json && JSON_DIAGNOSTICS.load(Ordering::Relaxed) {
        // One line, as every line lapse writes under `--log-format json`.
        outln!("{}", serde_json::to_string(&out.report).unwrap_or_default());
    } else if json {
        outln!("{}", serde_json::to_string_pretty(&out.report).unwrap_or_default());
    } else if JSON_DIAGNOSTICS.load(Ordering::Relaxed) {
        // `--log-format json`: every line lapse writes is JSON.
        outln!("{}", engine::summary_json(&out.report, &out.report_path));
    } else {
        out!("{}", engine::summary(&out.report));
    }
    tracing::info!(report = %out.report_path.display(), status = %out.report.status, "report written");
    if let Some(e) = &out.archive_error {
        say_error(&format!("the report was not stored on the report bucket (the next run retries): {e}"), true);
    }
    Ok(code)
}

async fn schedule(
    common: Common,
    report_dir: Option<PathBuf>,
    cancel: Arc<AtomicBool>,
) -> Result<Exit, (Exit, String)> {
    if !common.policies.is_empty() {
        return Err((
            Exit::Invalid,
            "`schedule` takes no --policy: each job names its policies (`schedule.jobs[].policies`)".into(),
        ));
    }
    // Set for `run --shard` (the chart's Indexed Job): a scheduler does not shard, and every host
    // given one would run every policy, the intended split silently not happening.
    if std::env::var_os("LAPSE_SHARD").is_some_and(|v| !v.is_empty()) {
        return Err((
            Exit::Invalid,
            "`schedule` does not shard, but LAPSE_SHARD is set: shards are runs (`lapse run --shard I/N`, the chart's Indexed Job); unset it, or give each scheduler its own jobs' policies".into(),
        ));
    }
    let ws = Workspace::load(&common.config).map_err(|d| (Exit::Invalid, print_diags(&d)))?;
    let Some(sch) = &ws.config.schedule else {
        return Err((Exit::Invalid, format!("'{}' has no `schedule:` section", common.config.display())));
    };
    let jobs = sch.specs().map_err(|e| (Exit::Invalid, e))?;
    for j in &jobs {
        for p in &j.policies {
            if !ws.policies.policies.iter().any(|x| &x.name == p) {
                return Err((Exit::Invalid, format!("schedule job '{}': {}", j.name, unknown_policy(&ws, p))));
            }
        }
    }
    // A key or URL that cannot be read is said at start, not by every scheduled run.
    for j in &jobs {
        ws.check_secrets(&j.policies).map_err(|e| (Exit::Invalid, format!("schedule job '{}': {e:#}", j.name)))?;
    }
    let config = common.config.clone();
    let inner = cancel.clone();
    lapse::schedule::serve(jobs, cancel, move |job| {
        let args = RunArgs {
            common: Common { config: config.clone(), policies: job.policies.clone() },
            cutoff: None,
            batch_size: None,
            allow_share: vec![],
            allow_future_cutoff: false,
            max_batches: None,
            report_dir: report_dir.clone(),
            shard: None,
            metrics: lapse::metrics::MetricsArgs { schedule_job: Some(job.name.clone()), ..Default::default() },
        };
        let cancel = inner.clone();
        let config = config.clone();
        async move {
            // The schedule is read at start; the rest of the config at every run. A job changed
            // since (its cron, policies or `dry_run`: the edit an operator makes to stop
            // destruction in a hurry) is not run as it was, unsaid: it is skipped until
            // `schedule` is restarted (found by a review: it ran as before, destroying).
            if let Some(changed) = schedule_changed(&config, &job) {
                tracing::error!(job = %job.name, "scheduled run skipped: {changed}; restart `lapse schedule` to apply the config as it is now");
                return;
            }
            let mode = if job.dry_run { Mode::Plan } else { Mode::Run };
            match plan_or_run(mode, args, false, true, cancel).await {
                // (Not at INFO when it did not succeed: an alert on warnings sees a run that
                // ended incomplete or at its guardrail; found by a review.)
                Ok(Exit::Success) => tracing::info!(job = %job.name, exit = 0, "run done"),
                Ok(code) => tracing::warn!(job = %job.name, exit = code as u8, "run done, not successfully (see its report)"),
                Err((code, msg)) => tracing::error!(job = %job.name, exit = code as u8, "run failed: {msg}"),
            }
        }
    })
    .await
    .map_err(|e| (Exit::Partial, format!("{e:#}")))?;
    Ok(Exit::Success)
}

/// How the config's `schedule:` now differs for `job` from what `schedule` started with, if it
/// does (a config that cannot be read is the run's to say).
fn schedule_changed(config: &std::path::Path, job: &lapse::schedule::JobSpec) -> Option<String> {
    let mut d = Diagnostics::default();
    let cfg = lapse::config::Config::load(config, &mut d)?;
    let now = match cfg.schedule.as_ref().map(|s| s.specs()) {
        None => return Some("the config has no `schedule:` section any more".into()),
        Some(Err(e)) => return Some(format!("the config's schedule is invalid now: {e}")),
        Some(Ok(specs)) => specs,
    };
    match now.into_iter().find(|j| j.name == job.name) {
        None => Some(format!("job '{}' is no longer in the config", job.name)),
        Some(j) if j.dry_run != job.dry_run => Some(format!("its dry_run is now {}", j.dry_run)),
        Some(j) if j.policies != job.policies => Some(format!("its policies are now {}", j.policies.join(", "))),
        Some(j) if j.cron != job.cron || j.tz != job.tz => Some("its cron or time zone changed".into()),
        Some(_) => None,
    }
}

/// A connection that could not be opened: the configuration's fault (a holds table that does
/// not exist or lacks a column) is invalid input (2); a server that did not answer, partial (1).
fn connect_exit(e: anyhow::Error) -> (Exit, String) {
    let code = match e.downcast_ref::<lapse::connector::ConnectorError>() {
        Some(lapse::connector::ConnectorError::Invalid(_)) => Exit::Invalid,
        _ => Exit::Partial,
    };
    (code, format!("{e:#}"))
}

fn sink_exit(e: lapse::reporting::sink::SinkCheck) -> (Exit, String) {
    match e {
        lapse::reporting::sink::SinkCheck::Invalid(m) => (Exit::Invalid, m),
        lapse::reporting::sink::SinkCheck::Unavailable(m) => (Exit::Partial, m),
    }
}

async fn validate(common: Common, connect: bool, skip_secrets: bool) -> Result<Exit, (Exit, String)> {
    let ws = Workspace::load(&common.config).map_err(|d| (Exit::Invalid, print_diags(&d)))?;
    // As `plan` and `run` do: a misspelt name must not pass a CI gate as "ok".
    for p in &common.policies {
        if !ws.policies.policies.iter().any(|x| &x.name == p) {
            return Err((Exit::Invalid, unknown_policy(&ws, p)));
        }
    }
    if !skip_secrets {
        ws.check_secrets(&common.policies).map_err(|e| (Exit::Invalid, format!("{e:#}")))?;
    }
    if connect {
        let conns = ws.connect(&common.policies, true).await.map_err(connect_exit)?;
        engine::prepare(&ws, &common.policies, &conns).await.map_err(|d| (prepare_exit(&d), print_diags(&d)))?;
        ws.check_report_bucket().await.map_err(sink_exit)?;
    }
    let ok = format!(
        "ok: {} polic{} in {} file{}{}",
        ws.policies.policies.len(),
        if ws.policies.policies.len() == 1 { "y" } else { "ies" },
        ws.policies.files.len(),
        if ws.policies.files.len() == 1 { "" } else { "s" },
        if connect { ", checked against the live catalog" } else { "" }
    );
    if JSON_DIAGNOSTICS.load(Ordering::Relaxed) {
        // `--log-format json`: every line lapse writes is JSON.
        let event = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "INFO",
            "message": ok,
            "policies": ws.policies.policies.len(),
            "files": ws.policies.files.len(),
            "connected": connect,
        });
        outln!("{event}");
    } else {
        outln!("{ok}");
    }
    Ok(Exit::Success)
}

async fn demo(dir: PathBuf, customers: u32, seed_only: bool, cancel: Arc<AtomicBool>) -> Result<Exit, (Exit, String)> {
    let fail = |e: anyhow::Error| (Exit::Partial, format!("{e:#}"));
    lapse::demo::refuse_foreign(&dir).map_err(|e| (Exit::Invalid, format!("{e:#}")))?;
    lapse::demo::setup(&dir, lapse::demo::Sizes { customers, ..Default::default() }, 42).await.map_err(fail)?;
    errln!(
        "demo: seeded {} (customers, orders, order items, support tickets, newsletter leads, legal holds)",
        dir.join("demo.db").display()
    );
    if seed_only {
        return Ok(Exit::Success);
    }
    let config = dir.join("lapse.yaml");
    let args = RunArgs {
        common: Common { config, policies: vec![] },
        cutoff: None,
        batch_size: None,
        allow_share: vec![],
        allow_future_cutoff: false,
        max_batches: None,
        report_dir: None,
        shard: None,
        metrics: Default::default(),
    };
    errln!("\n== lapse plan (dry run, read-only) ==");
    plan_or_run(Mode::Plan, args.clone(), false, true, cancel.clone()).await?;
    // The first run on an old database clears a backlog (the plan above shows the customers
    // guardrail tripping); the demo allows it explicitly, as an operator would.
    errln!("\n== lapse run --allow-share customers ==");
    let args = RunArgs { allow_share: vec!["customers".into()], ..args };
    let code = plan_or_run(Mode::Run, args, false, true, cancel).await?;
    errln!("\nreports (JSON, CSV, evidence) are in {}", dir.join("reports").display());
    Ok(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet, cli.no_progress);
    let cancel = Arc::new(AtomicBool::new(false));
    if matches!(cli.cmd, Cmd::Plan { .. } | Cmd::Run { .. } | Cmd::Schedule { .. } | Cmd::Demo { .. }) {
        let schedule = matches!(cli.cmd, Cmd::Schedule { .. });
        install_signals(cancel.clone(), std::time::Duration::from_secs(cli.shutdown_grace), schedule);
    }
    let result = match cli.cmd {
        Cmd::Validate { common, connect, skip_secrets } => validate(common, connect, skip_secrets).await,
        Cmd::Plan { args, json } => plan_or_run(Mode::Plan, args, json, true, cancel).await,
        Cmd::Run { args, yes } => plan_or_run(Mode::Run, args, false, yes, cancel).await,
        Cmd::Schedule { common, report_dir } => schedule(common, report_dir, cancel).await,
        Cmd::Demo { dir, customers, seed_only } => demo(dir, customers, seed_only, cancel).await,
        Cmd::Report { cmd } => return report_cmd(cmd),
        Cmd::Keygen { out, force } => return keygen(&out, force),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err((code, msg)) => {
            if !msg.is_empty() {
                say_error(&msg, true);
            }
            ExitCode::from(code as u8)
        }
    }
}

// ---- `lapse report ...` and `lapse keygen` (exit codes: see `lapse::reporting`) ----

#[derive(Subcommand)]
enum ReportCmd {
    /// Check signatures, evidence files and the hash chain of a report or a directory of reports.
    /// Exit 0: all good; 4: a problem was found (each named); 2: bad arguments or key.
    Verify {
        /// A report (`lapse-*.json`), a directory of reports, or `s3://bucket/prefix`.
        path: PathBuf,
        /// The Ed25519 public key file (64 hex characters, e.g. signing.pub). Repeatable: after a
        /// key rotation, give the old and the new; each report is checked with the key it names.
        #[arg(long, required = true)]
        public_key: Vec<PathBuf>,
        /// The sequence the chain starts at, when the reports before it were deleted on purpose
        /// (their own retention ended): the absence of sequences 1..N-1 is then not a problem.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        first_sequence: u64,
        /// A run report you recorded earlier (`NAME:SHA256`, as the last verify printed it): it
        /// must still be in the chain with these bytes (a removed newest report leaves no other
        /// trace in a directory). Repeatable.
        #[arg(long, value_name = "NAME:SHA256")]
        known: Vec<lapse::reporting::verify::Known>,
        /// For `s3://` locations: take endpoint, region and addressing from this config's
        /// `reports.s3` connection (default: the AWS environment).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also read the journal tables of the config's SQL policies (read only; needs
        /// --config): every run they record since the earliest run report here must be
        /// accounted for by a report (a removed newest report leaves its batches there).
        #[arg(long, requires = "config")]
        journal: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render a report for people: self-contained HTML (summary, chart, certificate) or CSV.
    Render {
        /// A report (`lapse-*.json`).
        path: PathBuf,
        #[arg(long, value_enum, default_value = "html")]
        format: RenderFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Check the report's signature first (exit 4 without rendering if it does not verify).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Was a subject (or record) destroyed, when and how, or is it held? Uses the evidence key.
    /// Exit 0: found (destroyed or held); 5: nothing found; 2: bad arguments or config, or no
    /// answer (evidence unreadable, found only in evidence no report accounts for, holds file
    /// unreadable, or a hold naming the subject only as another spelling of its number or uuid).
    Lookup {
        /// A directory of reports, or `s3://bucket/prefix` (client settings from the config's
        /// `reports.s3` connection).
        dir: PathBuf,
        /// The data subject (value of the policies' subject column).
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        subject: Option<String>,
        /// A record key: its values in key order, separated by commas for a composite key (a
        /// comma inside a value written `\,`, a backslash before a comma `\\`); needs --policy.
        #[arg(long, requires = "policy")]
        key: Option<String>,
        /// Worker configuration (for the evidence key, holds file and policies).
        #[arg(long, short, default_value = "lapse.yaml", env = "LAPSE_CONFIG", hide_env_values = true)]
        config: PathBuf,
        /// Only this policy (required with --key).
        #[arg(long, short)]
        policy: Option<String>,
        /// Check each run report's signature with this Ed25519 public key (repeatable, as for
        /// `verify`): what a report no given key signed says is then unconfirmed (exit 2).
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// With --subject: also ask the holds tables of the config's connections (read only,
        /// with their credentials) whether a hold in force names the subject. Reports record
        /// such holds by id and count, never by subject.
        #[arg(long, requires = "subject")]
        connect: bool,
    },
    /// Combine the reports of the n shards of one run (`--shard i/n`) into one summary.
    /// Exit 0: combined; 2: not every shard of one run (missing, duplicated, or different runs:
    /// settings, policy files, holds file or config differ); 4: a signature did not verify.
    Combine {
        /// Shard reports, or directories (each's newest run report is taken).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the combined JSON here (the summary goes to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Check each shard report's signature with this Ed25519 public key first (repeatable):
        /// exit 4, nothing combined, if one does not verify.
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// Print the combined JSON on stdout instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the report (committed as schema/report.schema.json).
    Schema {
        /// The schema of one evidence line instead (schema/evidence.schema.json).
        #[arg(long)]
        evidence: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderFormat {
    Html,
    Csv,
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    // A JSON event under `--log-format json`, as every other error line (before, the report
    // commands' errors stayed plain text: found by a review).
    say_error(&msg.to_string(), true);
    ExitCode::from(code)
}

fn load_config(path: &std::path::Path) -> Result<lapse::config::Config, ExitCode> {
    let mut d = lapse::diag::Diagnostics::default();
    lapse::config::Config::load(path, &mut d).ok_or_else(|| {
        let m = print_diags(&d);
        if !m.is_empty() {
            say_error(&m, true);
        }
        ExitCode::from(Exit::Invalid as u8)
    })
}

/// `report verify --journal`: the journal tables of the config's SQL policies against the
/// reports of `path` (and, for a `shard-<i>-of-<n>` directory, of its sibling shards).
async fn verify_journal(
    path: &std::path::Path,
    config: &std::path::Path,
    cfg: Option<&lapse::config::Config>,
    first: u64,
    out: &mut lapse::reporting::verify::Outcome,
) -> anyhow::Result<()> {
    use lapse::reporting::store;
    if path.is_file() {
        anyhow::bail!("it compares a directory's reports with the journal: give the directory, not one report");
    }
    let ws = lapse::engine::Workspace::load(config).map_err(|d| anyhow::anyhow!("{}", print_diags(&d)))?;
    // The whole reports tree: the directory and its shard-<i>-of-<n> directories (for a shard
    // directory, its parent's), whatever the layout: the journal holds the runs of every layout
    // the deployment had.
    let shard_dir = |p: &std::path::Path| {
        p.is_dir()
            && p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.strip_prefix("shard-").and_then(|r| r.split_once("-of-")).is_some_and(|(i, c)| {
                    !i.is_empty() && !c.is_empty() && i.bytes().chain(c.bytes()).all(|b| b.is_ascii_digit())
                })
            })
    };
    let mut dirs = vec![path.to_path_buf()];
    if path.is_dir() {
        let root = match path.parent() {
            Some(parent) if shard_dir(path) => parent.to_path_buf(),
            _ => path.to_path_buf(),
        };
        dirs = vec![root.clone()];
        let mut shards: Vec<std::path::PathBuf> =
            std::fs::read_dir(&root)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| shard_dir(p)).collect();
        shards.sort();
        dirs.extend(shards);
    }
    let stores = dirs.iter().map(|d| store::open(d, cfg)).collect::<anyhow::Result<Vec<_>>>()?;
    let conns = ws.connect(&[], true).await?;
    lapse::reporting::journal::check(&stores, &ws, &conns, first, out).await
}

/// The `--public-key` files of a report command (exit 2 for one that is not a key).
/// Why `--out` may not be written: it is one of the `inputs` (a report, a directory of them) or
/// inside one, or it has the name of one of lapse's own files (`lapse-…`: a report, its
/// evidence or signature). Before, `report render R.json --out R.json` replaced the signed
/// report with its HTML, and `combine --out` a shard's report (found by a review).
fn out_over_reports(out: &Path, inputs: &[&Path]) -> Option<String> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.starts_with("lapse-") {
        return Some(format!(
            "--out {}: 'lapse-…' names lapse's own reports, evidence and signatures; name the output otherwise",
            out.display()
        ));
    }
    // Where `out` would be: its directory resolved (it may not exist yet).
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let at = std::fs::canonicalize(parent).ok()?.join(out.file_name()?);
    inputs.iter().filter_map(|i| std::fs::canonicalize(i).ok()).find_map(|i| {
        (at == i || (i.is_dir() && at.starts_with(&i))).then(|| {
            format!("--out {} would replace what is read ({}); write it elsewhere", out.display(), i.display())
        })
    })
}

/// "unknown policy 'x'", with the names there are (a typo of `-p order` said only that; found by
/// a README walkthrough).
fn unknown_policy(ws: &Workspace, p: &str) -> String {
    let names: Vec<&str> = ws.policies.policies.iter().map(|x| x.name.as_str()).collect();
    // The one meant: another case, a prefix either way, or at most two edits away.
    let near = names.iter().find(|n| {
        n.eq_ignore_ascii_case(p) || n.starts_with(p) || p.starts_with(**n) || strsim::levenshtein(n, p) <= 2
    });
    let listed = match names.len() {
        0 => "no policies are loaded".to_string(),
        n if n <= 20 => format!("the policies are: {}", names.join(", ")),
        n => format!("{n} policies are loaded; `lapse validate` lists them"),
    };
    match near {
        Some(n) => format!("unknown policy '{p}' (did you mean '{n}'? {listed})"),
        None => format!("unknown policy '{p}' ({listed})"),
    }
}

fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<ed25519_dalek::VerifyingKey>, ExitCode> {
    paths
        .iter()
        .map(|k| lapse::integrity::read_public_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(Exit::Invalid as u8, format!("{e:#}")))
}

fn report_cmd(cmd: ReportCmd) -> ExitCode {
    use lapse::reporting::{self, lookup, render, store, verify};
    const INVALID: u8 = Exit::Invalid as u8;
    match cmd {
        ReportCmd::Verify { path, public_key, first_sequence, known, config, journal, json } => {
            let keys = match read_public_keys(&public_key) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let cfg = match config.as_deref().map(load_config).transpose() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut out = match verify::verify_path(&path, &keys, first_sequence, &known, cfg.as_ref()) {
                Ok(o) => o,
                Err(e) => return fail(INVALID, format!("{e:#}")),
            };
            if journal {
                let config = config.unwrap_or_default();
                let checked = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(verify_journal(
                        &path,
                        &config,
                        cfg.as_ref(),
                        first_sequence,
                        &mut out,
                    ))
                });
                if let Err(e) = checked {
                    return fail(INVALID, format!("--journal: {e:#}"));
                }
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                out!("{}", out.text());
            }
            if out.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(reporting::EXIT_VERIFY_FAILED)
            }
        }
        ReportCmd::Render { path, format, out, public_key } => {
            if path.is_dir() {
                return fail(INVALID, format!("'{}' is a directory; render one report file", path.display()));
            }
            if let Some(m) = out.as_deref().and_then(|o| out_over_reports(o, &[path.as_path()])) {
                return fail(INVALID, m);
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => return fail(INVALID, format!("cannot read '{}': {e}", path.display())),
            };
            let report: lapse::report::Report = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => return fail(INVALID, format!("'{}' is not a lapse report: {e}", path.display())),
            };
            let mut checked_with = None;
            if let Some(pk) = public_key {
                let key = match lapse::integrity::read_public_key(&pk) {
                    Ok(k) => k,
                    Err(e) => return fail(INVALID, format!("{e:#}")),
                };
                let sig = std::fs::read_to_string(format!("{}.sig", path.display())).unwrap_or_default();
                if !lapse::integrity::check_signature(&key, &bytes, &sig) {
                    return fail(
                        reporting::EXIT_VERIFY_FAILED,
                        format!(
                            "the signature of '{}' is missing or does not verify with key {}; not rendered (run `lapse report verify`)",
                            path.display(),
                            lapse::integrity::key_id(&key)
                        ),
                    );
                }
                checked_with = Some(lapse::integrity::key_id(&key));
            }
            let text = match format {
                RenderFormat::Html => {
                    let src = render::Source {
                        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                        sha256: lapse::integrity::sha256_hex(&bytes),
                        signature_checked_with: checked_with,
                    };
                    render::html(&report, &src).into_bytes()
                }
                RenderFormat::Csv => match report.csv() {
                    Ok(c) => c,
                    Err(e) => return fail(1, format!("{e:#}")),
                },
            };
            match out {
                Some(o) => {
                    if let Err(e) = lapse::report::write_whole(&o, &text) {
                        return fail(1, format!("cannot write '{}': {e}", o.display()));
                    }
                    errln!("wrote {}", o.display());
                }
                None => {
                    use std::io::Write;
                    // A reader that closed the pipe has read what it wanted (as `out!`).
                    match std::io::stdout().write_all(&text) {
                        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return fail(1, e),
                        _ => {}
                    }
                }
            }
            ExitCode::SUCCESS
        }
        ReportCmd::Lookup { dir, subject, key, config, policy, public_key, json, connect } => {
            let keys = match read_public_keys(&public_key) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let target = match (subject, key, &policy) {
                (Some(s), None, _) => lookup::Target::Subject(s),
                (None, Some(k), Some(p)) => lookup::Target::Record { policy: p.clone(), key: lookup::key_parts(&k) },
                (None, Some(_), None) => {
                    return fail(INVALID, "--key needs --policy (the record hash covers its dataset)")
                }
                _ => return fail(INVALID, "give --subject ID or --key K1[,K2] --policy NAME"),
            };
            let mut ctx = match lookup::Context::load(&config) {
                Ok(c) => c,
                Err(d) => {
                    let m = print_diags(&d);
                    if !m.is_empty() {
                        say_error(&m, true);
                    }
                    return ExitCode::from(INVALID);
                }
            };
            if let (true, lookup::Target::Subject(s)) = (connect, &target) {
                let asked = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        let ws = lapse::engine::Workspace::load(&config)
                            .map_err(|d| anyhow::anyhow!("{}", print_diags(&d)))?;
                        let conns = ws.open_holds_tables().await?;
                        if conns.is_empty() {
                            anyhow::bail!("no connection of the config has a holds table");
                        }
                        // With --policy, its dataset's policies only (those share their holds):
                        // another policy's unreadable table is no reason for no answer.
                        let named = policy.as_ref().and_then(|n| ws.policies.policies.iter().find(|p| &p.name == n));
                        let asked: Vec<lapse::policy::Policy> = ws
                            .policies
                            .policies
                            .iter()
                            .filter(|q| named.is_none_or(|p| p.hold_policies().contains(&q.name.as_str())))
                            .cloned()
                            .collect();
                        lookup::table_holds(&asked, &conns, s).await
                    })
                });
                match asked {
                    Ok(held) => ctx.table_holds = Some(held),
                    // No answer without them: a hold may name the subject.
                    Err(e) => return fail(INVALID, format!("--connect: {e:#}")),
                }
            }
            let cfg = if dir.to_string_lossy().starts_with("s3://") {
                match load_config(&config) {
                    Ok(c) => Some(c),
                    Err(code) => return code,
                }
            } else {
                None
            };
            let st = match store::open(&dir, cfg.as_ref()) {
                Ok(s) => s,
                Err(e) => return fail(INVALID, format!("{e:#}")),
            };
            let answer = match lookup::lookup(st.as_ref(), &ctx, &target, policy.as_deref(), &keys) {
                Ok(a) => a,
                Err(e) => return fail(INVALID, format!("{e:#}")),
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            } else {
                out!("{}", answer.text(&st.location()));
            }
            if answer.found {
                ExitCode::SUCCESS
            } else if answer.evidence_unreadable > 0
                || !answer.unconfirmed.is_empty()
                || answer.holds_unreadable
                || answer.table_holds_unknown
                || answer.held.iter().any(|h| h.active)
                || answer.shard_only.is_some()
            {
                // Not "nothing found": evidence that could hold the answer was not read, or
                // says what no signed report confirms; the holds file could not be read; or a
                // hold names the subject only as another spelling of its number or uuid; or the
                // reports are one shard's.
                ExitCode::from(INVALID)
            } else {
                ExitCode::from(reporting::EXIT_NOT_FOUND)
            }
        }
        ReportCmd::Combine { paths, out, public_key, json } => {
            let inputs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            if let Some(m) = out.as_deref().and_then(|o| out_over_reports(o, &inputs)) {
                return fail(INVALID, m);
            }
            let keys = match read_public_keys(&public_key) {
                Ok(k) => k,
                Err(code) => return code,
            };
            let c = match lapse::reporting::combine::combine(&paths, &keys) {
                Ok(c) => c,
                Err(e) if e.is::<lapse::reporting::combine::SignatureFailed>() => {
                    return fail(reporting::EXIT_VERIFY_FAILED, format!("{e:#}"))
                }
                Err(e) => return fail(INVALID, format!("{e:#}")),
            };
            let text = serde_json::to_string_pretty(&c).unwrap_or_default() + "\n";
            if let Some(o) = &out {
                // Whole or not at all, as `render --out` (found by a review).
                if let Err(e) = lapse::report::write_whole(o, text.as_bytes()) {
                    return fail(1, format!("cannot write '{}': {e}", o.display()));
                }
            }
            if json {
                out!("{text}");
            } else {
                out!("{}", c.text());
            }
            ExitCode::SUCCESS
        }
        ReportCmd::Schema { evidence } => {
            out!("{}", if evidence { reporting::evidence_schema() } else { reporting::report_schema() });
            ExitCode::SUCCESS
        }
    }
}

fn keygen(out: &std::path::Path, force: bool) -> ExitCode {
    match lapse::reporting::keygen::generate(out, force) {
        Ok(k) => {
            outln!("wrote {} (Ed25519 signing key, mode 0600; key id {})", k.signing_key.display(), k.signing_key_id);
            outln!("wrote {} (public key: all `lapse report verify` needs)", k.public_key.display());
            outln!("wrote {} (evidence HMAC key, mode 0600; key id {})", k.evidence_key.display(), k.evidence_key_id);
            outln!(
                "\nin lapse.yaml (mount the secrets as files; never commit them):\nevidence:\n  key_file: {}\nreports:\n  signing_key:\n    key_file: {}",
                k.evidence_key.display(),
                k.signing_key.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(Exit::Invalid as u8, format!("{e:#}")),
    }
}
