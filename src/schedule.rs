//! `lapse schedule`: a long-running process that runs jobs on cron schedules
//! (`tokio-cron-scheduler`), for servers without a Kubernetes CronJob.
//!
//! - Each job names a cron expression (5 fields, or 6 with seconds first), an IANA time zone and
//!   the policies it enforces (default: all), or `dry_run: true` for a plan.
//! - Runs never overlap: a job that fires while any run is in progress is skipped and logged.
//! - A signal stops the schedule: no new run starts, the current run finishes its batch and
//!   writes its report (the same graceful shutdown as `lapse run`), then the process exits.
//! - The workspace (config, policies, holds) is read again at every run, so an updated
//!   ConfigMap takes effect at the next run; the schedule itself is read once at start.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde::Deserialize;
use tokio_cron_scheduler::{Job, JobScheduler};

/// `schedule:` in the worker config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// IANA time zone of the cron expressions (default `UTC`), e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    pub jobs: Vec<ScheduledJob>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJob {
    pub name: String,
    /// `30 2 * * *` (minute hour day month weekday) or with seconds first.
    pub cron: String,
    /// Overrides `schedule.timezone` for this job.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Policies of this job (default: every policy).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Plan only (counts, read-only sessions), no destruction.
    #[serde(default)]
    pub dry_run: bool,
}

/// A job ready to schedule.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    /// Six fields (seconds first; a seventh, the year, optional), as [`next_fire`] reads them.
    pub cron: String,
    pub tz: chrono_tz::Tz,
    pub policies: Vec<String>,
    pub dry_run: bool,
}

/// A cron expression with seconds: 5 fields get `0` seconds prepended.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields = expr.split_whitespace().count();
    let six = match fields {
        5 => format!("0 {}", expr.trim()),
        6 | 7 => expr.trim().to_string(),
        _ => {
            return Err(format!(
                "cron expression '{expr}' must have 5 fields (minute hour day month weekday), or 6 with seconds first (7 with a year last)"
            ))
        }
    };
    // Both day fields restricted: the scheduler fires when both match (the 1st that is a
    // Monday), cron and a Kubernetes CronJob when either does: a job meant for every Monday
    // and the 1st would run a few times a year. Refused rather than read either way.
    let parts: Vec<&str> = six.split_whitespace().collect();
    let restricted = |f: &str| f != "*" && f != "?";
    if restricted(parts[3]) && restricted(parts[5]) {
        return Err(format!(
            "cron expression '{expr}' restricts both the day of the month and the weekday, which cron schedulers read differently (either, or both): restrict one, and use two jobs for both"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&six)
        .map_err(|e| format!("invalid cron expression '{expr}': {e}"))?;
    Ok(six)
}

pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("unknown time zone '{name}' (use an IANA name such as Europe/Berlin)"))
}

impl Schedule {
    /// Every problem of the schedule, with the YAML path it belongs to.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(tz) = &self.timezone {
            if let Err(e) = parse_tz(tz) {
                out.push(("schedule.timezone".into(), e));
            }
        }
        if self.jobs.is_empty() {
            out.push(("schedule.jobs".into(), "schedule.jobs is empty".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let at = format!("schedule.jobs.{i}");
            if !crate::policy::valid_identifier(&j.name.replace('-', "_")) {
                out.push((format!("{at}.name"), format!("invalid job name '{}'", j.name)));
            }
            if !names.insert(j.name.clone()) {
                out.push((format!("{at}.name"), format!("duplicate job name '{}'", j.name)));
            }
            let tz = match j.timezone.as_deref().or(self.timezone.as_deref()).map(parse_tz).transpose() {
                Ok(tz) => Some(tz.unwrap_or(chrono_tz::UTC)),
                Err(e) => {
                    if j.timezone.is_some() {
                        out.push((format!("{at}.timezone"), e));
                    }
                    None
                }
            };
            match normalize_cron(&j.cron) {
                Err(e) => out.push((format!("{at}.cron"), e)),
                // A job that can never fire (the 31st of a month of 30 days) would leave its
                // policies unenforced while the schedule looks alive. One whose occurrences are
                // all past (a year field) may have run its course: `Schedule::finished`, a
                // warning. (It was this error, and the configuration that had been valid for
                // the job's last run was refused from that run on: that run, every other job's,
                // and `run` and `validate` with it, exit 2.)
                Ok(cron) => {
                    if let Some(tz) = tz {
                        let spec = JobSpec { name: j.name.clone(), cron, tz, policies: vec![], dry_run: j.dry_run };
                        if next_fire(&spec, DateTime::<Utc>::UNIX_EPOCH).is_none() {
                            out.push((
                                format!("{at}.cron"),
                                format!("job '{}': '{}' has no occurrence at all: it would never run", j.name, j.cron),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// The jobs whose every occurrence is before `now` (a year field gone by), with where they
    /// are and what to say: `validate` warns of them, `schedule` does not arm them (and ends
    /// when no job is left).
    pub fn finished(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let Ok(specs) = self.specs() else { return Vec::new() };
        specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| next_fire(spec, now).is_none())
            .map(|(i, spec)| {
                (
                    format!("schedule.jobs.{i}.cron"),
                    format!(
                        "job '{}': '{}' has no occurrence from now on: it will not run again",
                        spec.name, self.jobs[i].cron
                    ),
                )
            })
            .collect()
    }

    pub fn specs(&self) -> Result<Vec<JobSpec>, String> {
        if let Some((_, e)) = self.problems().into_iter().next() {
            return Err(e);
        }
        let default_tz = self.timezone.as_deref().map(parse_tz).transpose()?.unwrap_or(chrono_tz::UTC);
        self.jobs
            .iter()
            .map(|j| {
                Ok(JobSpec {
                    name: j.name.clone(),
                    cron: normalize_cron(&j.cron)?,
                    tz: j.timezone.as_deref().map(parse_tz).transpose()?.unwrap_or(default_tz),
                    policies: j.policies.clone(),
                    dry_run: j.dry_run,
                })
            })
            .collect()
    }
}

/// The first time `spec` fires after `after`, in its time zone's own offsets: each occurrence
/// is found in the zone (a job at 02:30 Europe/Berlin runs at 02:30 local time in winter and in
/// summer). `tokio-cron-scheduler`'s cron jobs keep the zone's offset of the moment they were
/// made, so a process started in winter ran summer's jobs an hour late: lapse finds each
/// occurrence itself and gives the scheduler one one-shot job at a time.
pub fn next_fire(spec: &JobSpec, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&spec.cron)
        .ok()?;
    // croner searches the zone's wall-clock time: in the hour that repeats when the clocks go
    // back, it can answer with the first pass of a time while `after` is in the second, a time
    // already past (a scheduler would fire at once, and again, until the hour is over). Such
    // an answer is searched past, a minute at a time (at most the repeated hour and a little).
    // From the whole second: croner keeps `after`'s fraction in what it finds (a job at 03:00
    // was armed for 03:00:00.77, and fired early by the scheduler's rounding to seconds).
    let after_second = after.with_nanosecond(0).unwrap_or(after);
    let mut from = after_second;
    for _ in 0..=180 {
        let t = cron.find_next_occurrence(&from.with_timezone(&spec.tz), false).ok()?.with_timezone(&Utc);
        if t > after {
            return Some(t);
        }
        from += chrono::Duration::minutes(1);
    }
    None
}

/// What every firing of every job shares.
struct Serving<F> {
    /// Held by the run in progress: runs never overlap.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// The jobs with a run in progress or waiting for `busy`: a job's firing while its own
    /// run is still there is skipped; another job's waits its turn.
    queued: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    run: Arc<F>,
    cancel: Arc<AtomicBool>,
    /// Why the schedule stopped by itself: a job's next firing could not be scheduled (the
    /// job would never run again while the process looks alive), or none is left.
    stopped: Arc<std::sync::Mutex<Option<Stop>>>,
    /// Jobs with a firing still to come.
    armed: Arc<std::sync::atomic::AtomicUsize>,
}

/// When a firing is done (its run finished or skipped): stops the schedule if its job could not
/// be armed again (`failed`), or counts the job's last firing out of `Serving::armed` and says
/// the schedule is exhausted when it was the last job. Set after the run, so that the serving
/// loop never stops before it.
struct StopOnDrop<F> {
    serving: Serving<F>,
    last: bool,
    failed: Option<String>,
}

impl<F> Drop for StopOnDrop<F> {
    fn drop(&mut self) {
        let s = &self.serving;
        let mut stopped = s.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(msg) = self.failed.take() {
            *stopped = Some(Stop::Failed(msg));
            // No run starts after this: a firing already waiting for the run lock would start
            // one while the schedule stops (and the process may end in its middle).
            s.cancel.store(true, Ordering::SeqCst);
        } else if self.last && s.armed.fetch_sub(1, Ordering::SeqCst) == 1 {
            stopped.get_or_insert(Stop::Exhausted);
        }
    }
}

/// Why `serve` stops without being asked.
#[derive(Debug, Clone)]
enum Stop {
    /// A job's next firing could not be scheduled: an error (the process exits non-zero, so
    /// that whatever supervises it starts it again).
    Failed(String),
    /// No job has a later occurrence.
    Exhausted,
}

impl<F> Clone for Serving<F> {
    fn clone(&self) -> Self {
        Serving {
            busy: self.busy.clone(),
            queued: self.queued.clone(),
            run: self.run.clone(),
            cancel: self.cancel.clone(),
            stopped: self.stopped.clone(),
            armed: self.armed.clone(),
        }
    }
}

/// A job's place among those with a run in progress or waiting ([`Serving::queued`]), given up
/// when dropped (also if the run panics).
struct Queued {
    set: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    name: String,
}

impl Queued {
    fn enter(set: &Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>, name: &str) -> Option<Queued> {
        let fresh = set.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string());
        fresh.then(|| Queued { set: set.clone(), name: name.to_string() })
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}

/// A one-shot job that fires `spec` at `at` and, as it fires, arms the next occurrence (first,
/// so that a run longer than the interval skips firings but never ends the schedule).
fn firing<F, Fut>(spec: JobSpec, at: DateTime<Utc>, serving: Serving<F>) -> anyhow::Result<Job>
where
    F: Fn(JobSpec) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    let name = spec.name.clone();
    let job = Job::new_one_shot_at_instant_async(std::time::Instant::now() + wait, move |_id, sched| {
        let (spec, serving) = (spec.clone(), serving.clone());
        Box::pin(async move {
            // The scheduler waits in whole seconds and may fire up to two seconds early: a job
            // at midnight on the 1st started on the last day of the month before, its cutoff,
            // report and name a day and month early. Never before its time.
            if let Ok(early) = (at - Utc::now()).to_std() {
                tokio::time::sleep(early).await;
            }
            if serving.cancel.load(Ordering::SeqCst) {
                return;
            }
            // After this firing's own time, even if it fired a little early.
            let next = next_fire(&spec, at.max(Utc::now()));
            let mut failed = None;
            match next {
                Some(next) => {
                    let armed = async { anyhow::Ok(sched.add(firing(spec.clone(), next, serving.clone())?).await?) };
                    if let Err(e) = armed.await {
                        let msg = format!("job '{}': its next run could not be scheduled: {e}", spec.name);
                        tracing::error!(job = %spec.name, "{msg}; the schedule stops after this run");
                        failed = Some(msg);
                    }
                }
                None => tracing::warn!(job = %spec.name, "the job has no later occurrence"),
            }
            // The job's last firing: once its run is done (or skipped), the schedule may have
            // nothing left to do.
            let last = StopOnDrop { serving: serving.clone(), last: next.is_none(), failed };
            // Runs never overlap. A job's firing while its previous run is still in progress
            // (or still waiting) is skipped: the next firing catches up. Another job's firing
            // waits for the run in progress (before, it was skipped too: two jobs on the same
            // cron each lost about half their runs).
            let Some(_queued) = Queued::enter(&serving.queued, &spec.name) else {
                tracing::warn!(job = %spec.name, "scheduled run skipped: this job's previous run is still in progress or waiting for another job's");
                return;
            };
            let guard = match serving.busy.clone().try_lock_owned() {
                Ok(g) => g,
                Err(_) => {
                    tracing::info!(job = %spec.name, "scheduled run waiting: another job's run is in progress (runs never overlap)");
                    serving.busy.clone().lock_owned().await
                }
            };
            if !serving.cancel.load(Ordering::SeqCst) {
                tracing::info!(job = %spec.name, dry_run = spec.dry_run, "scheduled run starting");
                (serving.run)(spec.clone()).await;
                tracing::info!(job = %spec.name, "scheduled run finished");
            }
            drop(guard);
            drop(last);
        })
    })
    .map_err(|e| anyhow::anyhow!("job '{name}': {e}"))?;
    Ok(job)
}

/// Runs `jobs` until `cancel` is set, then waits for the run in progress. `run` performs one
/// run (it observes `cancel` itself to stop after its current batch).
pub async fn serve<F, Fut>(jobs: Vec<JobSpec>, cancel: Arc<AtomicBool>, run: F) -> anyhow::Result<()>
where
    F: Fn(JobSpec) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sched = JobScheduler::new().await?;
    let serving = Serving {
        busy: Arc::new(tokio::sync::Mutex::new(())),
        queued: Arc::default(),
        run: Arc::new(run),
        cancel: cancel.clone(),
        stopped: Arc::default(),
        armed: Arc::default(),
    };
    for spec in jobs {
        let Some(next) = next_fire(&spec, Utc::now()) else {
            tracing::warn!(job = %spec.name, cron = %spec.cron, "the job has no later occurrence: not scheduled");
            continue;
        };
        sched.add(firing(spec.clone(), next, serving.clone())?).await?;
        serving.armed.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            job = %spec.name, cron = %spec.cron, timezone = %spec.tz,
            next = %next.with_timezone(&spec.tz).to_rfc3339(), "job scheduled"
        );
    }
    if serving.armed.load(Ordering::SeqCst) == 0 {
        anyhow::bail!("no job of the schedule has a later occurrence: nothing to run");
    }
    sched.start().await?;
    let stopped = || serving.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone();
    while !cancel.load(Ordering::SeqCst) && stopped().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (Said only when a run is in progress: "waiting for the run in progress" after a signal
    // between runs contradicted the signal's own line; found by a review.)
    let running = serving.busy.try_lock().is_err();
    let waiting = if running { "; waiting for the run in progress" } else { "" };
    match stopped() {
        Some(Stop::Exhausted) => tracing::info!("no job has a later occurrence: the schedule ends{}", waiting),
        Some(Stop::Failed(_)) => tracing::error!("stopping the schedule{waiting}"),
        None => tracing::info!("stopping the schedule: no new run starts{waiting}"),
    }
    sched.shutdown().await?;
    let _last = serving.busy.lock().await;
    match stopped() {
        Some(Stop::Failed(msg)) => Err(anyhow::anyhow!(msg)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{next_fire, normalize_cron, JobSpec};
    use chrono::{DateTime, Timelike, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn spec(cron: &str, tz: &str) -> JobSpec {
        JobSpec {
            name: "j".into(),
            cron: normalize_cron(cron).unwrap(),
            tz: tz.parse().unwrap(),
            policies: vec![],
            dry_run: false,
        }
    }

    /// A schedule whose jobs have no later occurrence ends once the last one's run is done
    /// (before, it idled for ever, looking alive); one with none to begin with is an error.
    #[tokio::test]
    async fn a_schedule_with_no_occurrence_left_ends_after_its_last_run() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let at = Utc::now() + chrono::Duration::seconds(2);
        let once = at.format("%S %M %H %d %m ? %Y").to_string();
        let due = at.with_nanosecond(0).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let started = Arc::new(std::sync::Mutex::new(None));
        let start = started.clone();
        let served = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            super::serve(vec![spec(&once, "UTC")], Arc::new(AtomicBool::new(false)), move |_| {
                let counted = counted.clone();
                *start.lock().unwrap() = Some(Utc::now());
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .expect("the schedule ends by itself");
        served.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "its one run, done before the end");
        // Never before its time (the scheduler's whole seconds fired it up to two seconds early).
        let started = started.lock().unwrap().expect("started");
        assert!(started >= due, "started at {started}, due at {due}");
        let past = super::serve(vec![spec("0 0 3 * * ? 2020", "UTC")], Arc::new(AtomicBool::new(false)), |_| async {});
        let e = past.await.expect_err("nothing to run");
        assert!(e.to_string().contains("no job of the schedule has a later occurrence"), "{e}");
    }

    /// Every occurrence in the zone's offset of its own day: a process started in winter runs
    /// a 12:00 Europe/Berlin job at 11:00 UTC in winter and at 10:00 UTC in summer, and the
    /// other way round (`tokio-cron-scheduler` kept the offset of the job's creation).
    #[test]
    fn occurrences_follow_daylight_saving_time() {
        let noon = spec("0 12 * * *", "Europe/Berlin");
        assert_eq!(next_fire(&noon, at("2026-03-28T11:00:00Z")), Some(at("2026-03-29T10:00:00Z")));
        assert_eq!(next_fire(&noon, at("2026-03-27T12:00:00Z")), Some(at("2026-03-28T11:00:00Z")));
        assert_eq!(next_fire(&noon, at("2026-10-24T10:00:00Z")), Some(at("2026-10-25T11:00:00Z")));
        // The 1st of the month at midnight, local time: not 23:00 of the month before.
        let monthly = spec("0 0 1 * *", "Europe/Berlin");
        assert_eq!(next_fire(&monthly, at("2026-01-15T00:00:00Z")), Some(at("2026-01-31T23:00:00Z")));
        assert_eq!(next_fire(&monthly, at("2026-05-15T00:00:00Z")), Some(at("2026-05-31T22:00:00Z")));
        // On the whole second, whatever the fraction of the moment asked from (before, 03:00
        // carried it: 03:00:00.772, which the scheduler's rounding fired a second early).
        let three = spec("0 3 * * *", "UTC");
        assert_eq!(next_fire(&three, at("2026-06-01T00:00:00.772Z")), Some(at("2026-06-01T03:00:00Z")));
        assert_eq!(next_fire(&three, at("2026-06-01T03:00:00.5Z")), Some(at("2026-06-02T03:00:00Z")));
        // Strictly after: a firing at its own time arms the next one, not itself.
        assert_eq!(next_fire(&noon, at("2026-03-29T10:00:00Z")), Some(at("2026-03-30T10:00:00Z")));
        // Once on that night: the first pass's 02:30 arms the next day's.
        assert_eq!(
            next_fire(&spec("30 2 * * *", "Europe/Berlin"), at("2026-10-25T00:30:00Z")),
            Some(at("2026-10-26T01:30:00Z"))
        );
        let utc = spec("30 2 * * *", "UTC");
        assert_eq!(next_fire(&utc, at("2026-06-01T00:00:00Z")), Some(at("2026-06-01T02:30:00Z")));
        // The hour that repeats when the clocks go back (Berlin, 2026-10-25: 02:00–03:00 CEST,
        // 00:00–01:00Z, then 02:00–03:00 CET, 01:00–02:00Z). Asked from the second pass, the
        // answer is never a time already past (before: 02:30 CEST, 00:30Z, at every ask).
        let night = spec("30 2 * * *", "Europe/Berlin");
        let after = at("2026-10-25T01:10:00Z");
        let next = next_fire(&night, after).unwrap();
        assert!(next > after, "{next}");
        assert!(next <= at("2026-10-26T01:30:00Z"), "{next}");
        // Every minute, across the repeated hour: each answer later than the one before.
        let minutely = spec("* * * * *", "Europe/Berlin");
        let mut t = at("2026-10-24T23:50:00Z");
        for _ in 0..150 {
            let n = next_fire(&minutely, t).unwrap();
            assert!(n > t && n - t <= chrono::Duration::minutes(61), "{t} -> {n}");
            t = n;
        }
        assert!(t >= at("2026-10-25T01:20:00Z"), "150 firings reach past the repeated hour: {t}");
    }

    /// A job that can never fire is refused by `validate` (before, it passed, and `schedule`
    /// dropped it with a warning, its policies never enforced): a date no month has, also
    /// within a year field.
    #[test]
    fn jobs_that_never_fire_are_refused() {
        let schedule = |cron: &str| super::Schedule {
            timezone: None,
            jobs: vec![super::ScheduledJob {
                name: "j".into(),
                cron: cron.into(),
                timezone: None,
                policies: vec![],
                dry_run: false,
            }],
        };
        for cron in ["0 3 31 4,6,9,11 *", "0 0 30 2 *", "0 0 0 31 4 * 2027"] {
            let problems = schedule(cron).problems();
            assert!(
                problems.iter().any(|(at, e)| at == "schedule.jobs.0.cron" && e.contains("it would never run")),
                "{cron}: {problems:?}"
            );
        }
        assert!(schedule("0 3 31 * *").problems().is_empty());
        assert!(schedule("0 3 31 * *").finished(Utc::now()).is_empty());
    }

    /// A job whose occurrences are all past (a year field) has run its course: no error, or a
    /// configuration valid for its last run is refused from that run on (every other job's
    /// runs, `run` and `validate` too; found by a review), but a warning.
    #[test]
    fn a_job_whose_occurrences_are_past_is_a_warning_not_an_error() {
        let schedule = |cron: &str| super::Schedule {
            timezone: None,
            jobs: vec![
                super::ScheduledJob {
                    name: "every".into(),
                    cron: "0 3 * * *".into(),
                    timezone: None,
                    policies: vec![],
                    dry_run: false,
                },
                super::ScheduledJob {
                    name: "once".into(),
                    cron: cron.into(),
                    timezone: None,
                    policies: vec![],
                    dry_run: true,
                },
            ],
        };
        let gone = schedule("0 0 0 1 1 * 2025");
        assert!(gone.problems().is_empty(), "{:?}", gone.problems());
        let finished = gone.finished(Utc::now());
        assert_eq!(finished.len(), 1, "{finished:?}");
        assert_eq!(finished[0].0, "schedule.jobs.1.cron");
        assert!(finished[0].1.contains("job 'once'") && finished[0].1.contains("will not run again"), "{finished:?}");
        // Its last occurrence: valid just before it, finished just after, never an error.
        let last = schedule("30 0 12 7 12 * 2026");
        assert!(last.problems().is_empty());
        assert!(last.finished(at("2026-12-07T12:00:29Z")).is_empty());
        assert_eq!(last.finished(at("2026-12-07T12:00:30Z")).len(), 1);
    }

    /// Both day fields restricted is refused: this scheduler would fire on the 1st that is a
    /// Monday, cron on the 1st and on every Monday.
    #[test]
    fn both_day_fields_are_refused() {
        let e = normalize_cron("0 0 1 * MON").unwrap_err();
        assert!(e.contains("restricts both the day of the month and the weekday"), "{e}");
        assert!(normalize_cron("30 2 1,15 * SUN").is_err());
        assert_eq!(normalize_cron("0 0 1 * *").unwrap(), "0 0 0 1 * *");
        // A seventh field is the year, and the occurrences keep to it.
        let seven = normalize_cron("0 30 2 * * * 2027").unwrap();
        let j = JobSpec { cron: seven, ..spec("30 2 * * *", "UTC") };
        assert_eq!(next_fire(&j, at("2026-06-01T00:00:00Z")), Some(at("2027-01-01T02:30:00Z")));
        assert!(normalize_cron("0 3 * * MON").is_ok());
    }
}
