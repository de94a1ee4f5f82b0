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
    /// Six fields (seconds first), as `tokio-cron-scheduler` wants them.
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
                "cron expression '{expr}' must have 5 fields (minute hour day month weekday) or 6 with seconds first"
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
            if let Err(e) = normalize_cron(&j.cron) {
                out.push((format!("{at}.cron"), e));
            }
            if let Some(tz) = &j.timezone {
                if let Err(e) = parse_tz(tz) {
                    out.push((format!("{at}.timezone"), e));
                }
            }
        }
        out
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

/// Runs `jobs` until `cancel` is set, then waits for the run in progress. `run` performs one
/// run (it observes `cancel` itself to stop after its current batch).
pub async fn serve<F, Fut>(jobs: Vec<JobSpec>, cancel: Arc<AtomicBool>, run: F) -> anyhow::Result<()>
where
    F: Fn(JobSpec) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sched = JobScheduler::new().await?;
    let busy = Arc::new(tokio::sync::Mutex::new(()));
    let run = Arc::new(run);
    for spec in jobs {
        let (busy2, run2, cancel2, spec2) = (busy.clone(), run.clone(), cancel.clone(), spec.clone());
        let job = Job::new_async_tz(spec.cron.as_str(), spec.tz, move |_id, _sched| {
            let (busy, run, cancel, spec) = (busy2.clone(), run2.clone(), cancel2.clone(), spec2.clone());
            Box::pin(async move {
                if cancel.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(guard) = busy.try_lock_owned() else {
                    tracing::warn!(job = %spec.name, "scheduled run skipped: the previous run is still in progress (runs never overlap)");
                    return;
                };
                tracing::info!(job = %spec.name, dry_run = spec.dry_run, "scheduled run starting");
                run(spec.clone()).await;
                tracing::info!(job = %spec.name, "scheduled run finished");
                drop(guard);
            })
        })
        .map_err(|e| anyhow::anyhow!("job '{}': {e}", spec.name))?;
        let id = sched.add(job).await?;
        let next = sched.next_tick_for_job(id).await.ok().flatten();
        tracing::info!(
            job = %spec.name, cron = %spec.cron, timezone = %spec.tz,
            next = %next.map(|t| t.to_rfc3339()).unwrap_or_default(), "job scheduled"
        );
    }
    sched.start().await?;
    while !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::info!("stopping the schedule: no new run starts; waiting for the run in progress");
    sched.shutdown().await?;
    let _last = busy.lock().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize_cron;

    /// Both day fields restricted is refused: this scheduler would fire on the 1st that is a
    /// Monday, cron on the 1st and on every Monday.
    #[test]
    fn both_day_fields_are_refused() {
        let e = normalize_cron("0 0 1 * MON").unwrap_err();
        assert!(e.contains("restricts both the day of the month and the weekday"), "{e}");
        assert!(normalize_cron("30 2 1,15 * SUN").is_err());
        assert_eq!(normalize_cron("0 0 1 * *").unwrap(), "0 0 0 1 * *");
        assert!(normalize_cron("0 3 * * MON").is_ok());
    }
}
