//! `lapse` command line. Exit codes are decided here, in one place:
//! 0 success, 1 partial failure (or interrupted), 2 invalid configuration, 3 guardrail tripped.

use std::io::IsTerminal;
use std::path::PathBuf;
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
    /// Log format on stderr (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Worker configuration file.
    #[arg(long, short, default_value = "lapse.yaml", env = "LAPSE_CONFIG")]
    config: PathBuf,
    /// Only these policies (repeatable).
    #[arg(long = "policy", short = 'p')]
    policies: Vec<String>,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Cutoff instant (RFC 3339); default: now. A purpose lapses when anchor + period <= cutoff.
    #[arg(long)]
    cutoff: Option<String>,
    /// Rows per batch (one transaction each); overrides config and policy.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Exempt a policy from its guardrail for this run (`*` for all). Repeatable.
    #[arg(long = "allow-share")]
    allow_share: Vec<String>,
    /// Stop each stage after N batches.
    #[arg(long)]
    max_batches: Option<u64>,
    /// Write reports here instead of the config's reports.dir.
    #[arg(long)]
    report_dir: Option<PathBuf>,
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
    /// Quickstart: create a SQLite shop with sample personal data in DIR, then plan and run.
    Demo {
        /// Directory for the demo database, config, policies and reports.
        #[arg(long, default_value = "demo-out")]
        dir: PathBuf,
        /// Number of customers to seed.
        #[arg(long, default_value_t = 2000)]
        customers: u32,
        /// Only create the data and config; do not plan or run.
        #[arg(long)]
        seed_only: bool,
    },
}

fn init_logging(format: Option<LogFormat>, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter =
        EnvFilter::try_from_env("LAPSE_LOG").unwrap_or_else(|_| EnvFilter::new(format!("lapse={default},warn")));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if json {
        b.json().flatten_event(true).with_current_span(true).init();
    } else {
        b.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn print_diags(d: &Diagnostics) {
    for x in &d.0 {
        eprintln!("{x}");
    }
    let n = d.errors().count();
    if n > 0 {
        eprintln!("error: {n} problem{} found; nothing was changed", if n == 1 { "" } else { "s" });
    }
}

/// Cancellation on SIGINT/SIGTERM: the current batch finishes, the report is written.
fn install_signals(flag: Arc<AtomicBool>) {
    tokio::spawn(async move {
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
        tracing::warn!("signal received: finishing the current batch, then writing the report");
        flag.store(true, Ordering::SeqCst);
    });
}

async fn plan_or_run(mode: Mode, args: RunArgs, json: bool, yes: bool) -> Result<Exit, (Exit, String)> {
    let invalid = |m: String| (Exit::Invalid, m);
    let ws = Workspace::load(&args.common.config).map_err(|d| {
        print_diags(&d);
        (Exit::Invalid, String::new())
    })?;
    for p in &args.common.policies {
        if !ws.policies.policies.iter().any(|x| &x.name == p) {
            return Err(invalid(format!("unknown policy '{p}'")));
        }
    }
    let key = ws.evidence_key().map_err(|e| invalid(format!("{e:#}")))?;
    let cutoff = match &args.cutoff {
        Some(c) => Some(lapse::holds::parse_time(c).map_err(|e| invalid(format!("--cutoff: {e}")))?),
        None => None,
    };
    let conns =
        ws.connect(&args.common.policies, mode == Mode::Plan).await.map_err(|e| (Exit::Partial, format!("{e:#}")))?;
    let prepared = engine::prepare(&ws, &args.common.policies, &conns).await.map_err(|d| {
        print_diags(&d);
        (Exit::Invalid, String::new())
    })?;
    if mode == Mode::Run && !yes && std::io::stdin().is_terminal() {
        eprint!(
            "This will destroy or anonymize data under {} polic{}. Continue? [y/N] ",
            prepared.len(),
            if prepared.len() == 1 { "y" } else { "ies" }
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err((Exit::Partial, "aborted; nothing was changed".into()));
        }
    }
    let cancel = Arc::new(AtomicBool::new(false));
    install_signals(cancel.clone());
    let opts = Options {
        cutoff,
        allow_share: args.allow_share,
        batch_size: args.batch_size,
        max_batches: args.max_batches,
        report_dir: args.report_dir,
    };
    let out = engine::execute(&ws, &prepared, &conns, &key, mode, &opts, &cancel)
        .await
        .map_err(|e| (Exit::Partial, format!("{e:#}")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out.report).unwrap_or_default());
    } else {
        print!("{}", engine::summary(&out.report));
    }
    eprintln!("report: {}", out.report_path.display());
    Ok(Exit::of(&out.report))
}

async fn validate(common: Common, connect: bool) -> Result<Exit, (Exit, String)> {
    let ws = Workspace::load(&common.config).map_err(|d| {
        print_diags(&d);
        (Exit::Invalid, String::new())
    })?;
    if connect {
        let conns = ws.connect(&common.policies, true).await.map_err(|e| (Exit::Partial, format!("{e:#}")))?;
        engine::prepare(&ws, &common.policies, &conns).await.map_err(|d| {
            print_diags(&d);
            (Exit::Invalid, String::new())
        })?;
    }
    println!(
        "ok: {} polic{} in {} file{}{}",
        ws.policies.policies.len(),
        if ws.policies.policies.len() == 1 { "y" } else { "ies" },
        ws.policies.files.len(),
        if ws.policies.files.len() == 1 { "" } else { "s" },
        if connect { ", checked against the live catalog" } else { "" }
    );
    Ok(Exit::Success)
}

async fn demo(dir: PathBuf, customers: u32, seed_only: bool) -> Result<Exit, (Exit, String)> {
    let fail = |e: anyhow::Error| (Exit::Partial, format!("{e:#}"));
    lapse::demo::setup(&dir, lapse::demo::Sizes { customers, ..Default::default() }, 42).await.map_err(fail)?;
    eprintln!(
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
        max_batches: None,
        report_dir: None,
    };
    eprintln!("\n== lapse plan (dry run, read-only) ==");
    plan_or_run(Mode::Plan, args.clone(), false, true).await?;
    // The first run on an old database clears a backlog (the plan above shows the customers
    // guardrail tripping); the demo allows it explicitly, as an operator would.
    eprintln!("\n== lapse run --allow-share customers ==");
    let args = RunArgs { allow_share: vec!["customers".into()], ..args };
    let code = plan_or_run(Mode::Run, args, false, true).await?;
    eprintln!("\nreports (JSON, CSV, evidence) are in {}", dir.join("reports").display());
    Ok(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let result = match cli.cmd {
        Cmd::Validate { common, connect } => validate(common, connect).await,
        Cmd::Plan { args, json } => plan_or_run(Mode::Plan, args, json, true).await,
        Cmd::Run { args, yes } => plan_or_run(Mode::Run, args, false, yes).await,
        Cmd::Demo { dir, customers, seed_only } => demo(dir, customers, seed_only).await,
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err((code, msg)) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            ExitCode::from(code as u8)
        }
    }
}
