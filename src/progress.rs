//! A progress bar on an interactive terminal: per policy stage, records done of those counted as
//! due. Off unless [`enable`] is called (the CLI does so only when stderr is a terminal, logs are
//! text and `--no-progress` is not given), so a CronJob's or a pipe's stderr never sees an escape
//! code. Log lines go through [`writer`], which lifts the bar while a line is printed.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

struct State {
    enabled: bool,
    bar: Option<ProgressBar>,
    /// The policy and stage of `bar`.
    of: (String, String),
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(State { enabled: false, bar: None, of: Default::default() }))
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = state().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// When the run last made progress (a stage began, records were handled), in milliseconds since
/// the process's first call: what the run's watchdog reads (`idle`).
static LAST: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// The run made progress now (also called by [`stage`], [`advance`] and [`finish`]).
pub fn touch() {
    LAST.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// How long since the run last made progress ([`touch`]).
pub fn idle() -> Duration {
    epoch().elapsed().saturating_sub(Duration::from_millis(LAST.load(Ordering::Relaxed)))
}

/// Turns the bar on for this process.
pub fn enable() {
    with(|s| s.enabled = true);
}

/// A stage starts: `total` records are due (`None`: not counted yet, [`due`] says it later).
pub fn stage(policy: &str, stage: &str, total: Option<u64>) {
    touch();
    with(|s| {
        if !s.enabled {
            return;
        }
        if let Some(b) = s.bar.take() {
            b.finish_and_clear();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>24} {msg:<20} [{bar:30}] {pos}/{len} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(policy.to_string());
        bar.set_message(stage.to_string());
        s.bar = Some(bar);
        s.of = (policy.to_string(), stage.to_string());
    });
}

/// `total` records are due in this stage, counted after it began (counts taken beside the
/// batches): said if it is the one under way.
pub fn due(policy: &str, stage: &str, total: u64) {
    with(|s| {
        if let Some(b) = &s.bar {
            if s.of.0 == policy && s.of.1 == stage {
                b.set_length(total);
            }
        }
    });
}

/// `n` more records of the stage were handled (destroyed, unchanged or failed).
pub fn advance(n: u64) {
    touch();
    with(|s| {
        if let Some(b) = &s.bar {
            b.inc(n);
        }
    });
}

/// The stage is over: the bar is cleared (the log and the summary say what happened).
pub fn finish() {
    touch();
    with(|s| {
        if let Some(b) = s.bar.take() {
            b.finish_and_clear();
        }
    });
}

/// Stderr for the log formatter: each line is printed with the bar lifted, then the bar redrawn.
pub struct Writer;

/// For `tracing_subscriber::fmt().with_writer(lapse::progress::writer)`.
pub fn writer() -> Writer {
    Writer
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = with(|s| s.bar.clone());
        match bar {
            Some(b) => b.suspend(|| std::io::stderr().write_all(buf)).map(|_| buf.len()),
            None => std::io::stderr().write_all(buf).map(|_| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
