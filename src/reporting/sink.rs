//! The S3 report sink (`reports.s3`): every report file is also stored on a bucket, where it
//! cannot be quietly changed once the bucket's Object Lock puts a retention on it.
//!
//! - The local report directory stays the working copy; after each run, every report file of the
//!   directory that the bucket lacks is uploaded (so a failed upload is caught up by the next run),
//!   evidence, CSV and signature before the report JSON they belong to.
//! - With `retention` configured, each object is written with Object Lock mode and retain-until
//!   date; the bucket must have Object Lock enabled, which `check` verifies before any destruction.
//! - The chain: a run report links to the newest run report of the bucket or of the directory,
//!   whichever is further along (a CronJob's scratch directory starts empty every time).
//! - [`S3Reports`] is also a [`ReportStore`], so `report verify` and `report lookup` read
//!   `s3://bucket/prefix` directly.

use std::path::Path;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use aws_sdk_s3::Client;
use chrono::Utc;

use super::store::{kind, plain_name, FileKind, ReportStore};
use crate::config::{Config, LockMode, ReportRetention};
use crate::integrity::{sha256_hex, ChainLink};
use crate::objstore::s3;

/// Why the report bucket cannot be used: a configuration mistake, or the store is unreachable.
#[derive(Debug, thiserror::Error)]
pub enum SinkCheck {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

pub struct S3Reports {
    client: Client,
    bucket: String,
    /// Empty or ending with `/`.
    prefix: String,
    retention: Option<ReportRetention>,
}

impl S3Reports {
    /// The sink of `reports.s3`, if configured.
    pub async fn from_config(cfg: &Config) -> Option<S3Reports> {
        let r = cfg.reports.s3.as_ref()?;
        let c = cfg.connections.get(&r.connection)?;
        let client = s3::client(c.region.as_deref(), c.endpoint.as_deref(), c.path_style).await;
        Some(S3Reports {
            client,
            bucket: r.bucket.clone(),
            prefix: cfg.report_prefix(),
            retention: r.retention.clone(),
        })
    }

    /// `s3://bucket/prefix`, for `verify` and `lookup`. The client settings (endpoint, region,
    /// addressing) come from `reports.s3`'s connection when a config is given, else from the AWS
    /// environment.
    pub async fn from_location(location: &str, cfg: Option<&Config>) -> anyhow::Result<S3Reports> {
        let rest = location.strip_prefix("s3://").context("not an s3:// location")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !crate::objstore::valid_bucket(bucket) {
            anyhow::bail!("'{location}': invalid bucket name");
        }
        let conn = cfg.and_then(|c| c.reports.s3.as_ref().and_then(|r| c.connections.get(&r.connection)));
        let client = match conn {
            Some(c) => s3::client(c.region.as_deref(), c.endpoint.as_deref(), c.path_style).await,
            None => s3::client(None, None, false).await,
        };
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        Ok(S3Reports { client, bucket: bucket.to_string(), prefix, retention: None })
    }

    /// The same bucket one level down: `<prefix><dir>/` (a shard's reports, its own chain).
    pub fn subdir(mut self, dir: &str) -> S3Reports {
        self.prefix = format!("{}{dir}/", self.prefix);
        self
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Before any destruction: the bucket exists and, when a retention is configured, has Object
    /// Lock enabled (otherwise the reports would be stored without the protection asked for).
    pub async fn check(&self) -> Result<(), SinkCheck> {
        if let Err(e) = self.client.head_bucket().bucket(&self.bucket).send().await {
            if s3::is_not_found(&e) {
                return Err(SinkCheck::Invalid(format!("reports.s3: unknown bucket '{}'", self.bucket)));
            }
            return Err(SinkCheck::Unavailable(format!(
                "reports.s3: {}",
                s3::err(&format!("checking bucket '{}'", self.bucket), e)
            )));
        }
        if self.retention.is_some() {
            let enabled = match self.client.get_object_lock_configuration().bucket(&self.bucket).send().await {
                Ok(o) => o
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
                Err(_) => false,
            };
            if !enabled {
                return Err(SinkCheck::Invalid(format!(
                    "reports.s3: bucket '{}' does not have Object Lock enabled, so reports cannot get the configured retention",
                    self.bucket
                )));
            }
        }
        Ok(())
    }

    /// Names of the report files directly under the prefix.
    pub async fn names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.listing().await?.into_iter().map(|(n, _)| n).collect())
    }

    /// Report files of the bucket with their sizes (when the listing gives one), by name.
    async fn listing(&self) -> anyhow::Result<Vec<(String, Option<u64>)>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let r = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| s3::err(&format!("listing reports in {}", self.url()), e))?;
            for o in r.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) {
                    if plain_name(name) {
                        out.push((name.to_string(), o.size().map(|n| n.max(0) as u64)));
                    }
                }
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn fetch(&self, name: &str) -> anyhow::Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        Ok(self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .send()
            .await
            .map_err(|e| s3::err(&format!("reading {}{name}", self.url()), e))?)
    }

    pub async fn get(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.fetch(name).await?;
        Ok(r.body.collect().await.context("reading a report object")?.into_bytes().to_vec())
    }

    /// Uploads one file, with the configured Object Lock retention.
    pub async fn put(&self, name: &str, path: &Path) -> anyhow::Result<()> {
        let body = ByteStream::from_path(path).await.with_context(|| format!("reading '{}'", path.display()))?;
        let mut req = self.client.put_object().bucket(&self.bucket).key(format!("{}{name}", self.prefix)).body(body);
        if let Some(r) = &self.retention {
            let until = Utc::now() + chrono::Duration::days(i64::from(r.days));
            req = req
                .object_lock_mode(match r.mode {
                    LockMode::Compliance => ObjectLockMode::Compliance,
                    LockMode::Governance => ObjectLockMode::Governance,
                })
                .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()));
        }
        req.send().await.map_err(|e| s3::err(&format!("storing {}{name}", self.url()), e))?;
        Ok(())
    }

    /// Uploads every report file of `dir` the bucket does not have yet; returns their names.
    /// A report is stored once (it is never rewritten); its evidence, signature and CSV again
    /// whenever the bucket's copy differs in size from the local file: the evidence file of a
    /// run still going on in the same directory is stored as it is then, and stored whole by a
    /// later run (also when an upload of the part-written file ended after the whole one).
    pub async fn store_dir(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let have: std::collections::BTreeMap<String, Option<u64>> = self.listing().await?.into_iter().collect();
        let todo: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading report directory '{}'", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let upload = match (kind(&n), have.get(&n)) {
                    (FileKind::Other, _) => false,
                    (_, None) => true,
                    (FileKind::Report, Some(_)) => false,
                    // A size the listing does not give is taken as the same.
                    (_, Some(size)) => size.is_some_and(|size| e.metadata().is_ok_and(|m| m.len() != size)),
                };
                upload.then_some(n)
            })
            .collect();
        // By run: a report's evidence, CSV and signature, then the report (a report object in the
        // bucket implies its companions). A run whose files cannot be stored does not hold the
        // others back; its error is returned after them.
        let mut runs: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for n in todo {
            let report = kind(&n).report().map_or_else(|| n.clone(), str::to_string);
            runs.entry(report).or_default().push(n);
        }
        let (mut stored, mut errors) = (Vec::new(), Vec::new());
        for (_, mut files) in runs {
            files.sort_by_key(|n| (kind(n) == FileKind::Report, n.clone()));
            for n in &files {
                match self.put(n, &dir.join(n)).await {
                    Ok(()) => stored.push(n.clone()),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
        match errors.len() {
            0 => Ok(stored),
            1 => anyhow::bail!("{}", errors[0]),
            n => anyhow::bail!("{} (and {} more: {})", errors[0], n - 1, errors[1..].join("; ")),
        }
    }

    /// The newest run report of the bucket (highest sequence).
    pub async fn chain_head(&self) -> anyhow::Result<Option<ChainLink>> {
        let mut best: Option<ChainLink> = None;
        for n in self.names().await? {
            if !(n.starts_with("lapse-run-") && kind(&n) == FileKind::Report) {
                continue;
            }
            let bytes = self.get(&n).await?;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            let seq = v.get("sequence").and_then(|s| s.as_u64()).unwrap_or(0);
            if best.as_ref().is_none_or(|b| seq > b.sequence) {
                best = Some(ChainLink { file: n, sha256: sha256_hex(&bytes), sequence: seq });
            }
        }
        Ok(best)
    }
}

fn block<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> std::io::Result<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

impl ReportStore for S3Reports {
    fn location(&self) -> String {
        self.url()
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        block(self.names())
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        block(self.get(name))
    }

    /// Evidence files can be large: streamed to an anonymous temporary file, then read from it.
    fn open(&self, name: &str) -> std::io::Result<Box<dyn std::io::BufRead + '_>> {
        use std::io::{Seek, Write};
        let mut file = tempfile::tempfile()?;
        let f = &mut file;
        block(async move {
            let mut r = self.fetch(name).await?;
            while let Some(chunk) = r.body.try_next().await.context("reading a report object")? {
                f.write_all(&chunk)?;
            }
            Ok(())
        })?;
        file.rewind()?;
        Ok(Box::new(std::io::BufReader::new(file)))
    }
}
