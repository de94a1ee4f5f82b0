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
//! - A file larger than [`PART_SIZE`] (an evidence file of a run of millions of records) is
//!   uploaded in parts, streamed from the file a part at a time: a single `PutObject` takes at
//!   most 5 GiB and must finish within one attempt's timeout. An upload that fails is aborted,
//!   so no stored parts are left behind on the bucket.

use std::path::Path;

use anyhow::Context;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockEnabled, ObjectLockMode,
};
use aws_sdk_s3::Client;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};

use super::store::{kind, plain_name, FileKind, ReportStore, StoredClaim};
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
    /// Files larger than this are uploaded in parts of this size (or larger: see [`MAX_PARTS`]).
    part_size: u64,
}

/// The size of an upload's parts: files up to this size are stored with one `PutObject`. Small
/// enough that a part's upload ends well within the client's 60 s attempt timeout on a slow link
/// (64 MiB in 60 s is 1.1 MB/s), large enough that few requests are made.
pub const PART_SIZE: u64 = 64 * 1024 * 1024;
/// S3 numbers an upload's parts 1 to 10,000: a file larger than 10,000 parts of [`PART_SIZE`]
/// (625 GiB) is uploaded in larger parts.
pub const MAX_PARTS: u64 = 10_000;
/// Parts of one file uploaded at the same time.
const PARTS_AT_ONCE: usize = 4;

impl S3Reports {
    /// The sink of `reports.s3`, if configured.
    pub async fn from_config(cfg: &Config) -> Option<S3Reports> {
        let r = cfg.reports.s3.as_ref()?;
        let c = cfg.connections.get(&r.connection)?;
        let client = s3::client(c.region.as_deref(), c.endpoint.as_deref(), c.path_style).await;
        Some(S3Reports::new(client, &r.bucket, &cfg.report_prefix(), r.retention.clone()))
    }

    /// A sink on `bucket` under `prefix` (empty, or ending with `/` once made) with `client`.
    pub fn new(client: Client, bucket: &str, prefix: &str, retention: Option<ReportRetention>) -> S3Reports {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        S3Reports { client, bucket: bucket.to_string(), prefix, retention, part_size: PART_SIZE }
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
        Ok(S3Reports::new(client, bucket, prefix, None))
    }

    /// Uploads files larger than `bytes` in parts of `bytes` ([`PART_SIZE`] unless set). S3
    /// refuses parts under 5 MiB other than the last, so a smaller size only serves tests of
    /// what happens when an upload fails.
    pub fn with_part_size(mut self, bytes: u64) -> S3Reports {
        self.part_size = bytes.max(1);
        self
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
                s3::err(&format!("checking bucket '{}' (HeadBucket: s3:ListBucket)", self.bucket), e)
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
        Ok(self.listing().await?.into_iter().map(|o| o.name).collect())
    }

    /// Report files of the bucket (plain names) with their sizes and times, by name.
    async fn listing(&self) -> anyhow::Result<Vec<Listed>> {
        let mut out: Vec<Listed> =
            self.children(&self.prefix, "listing reports").await?.into_iter().filter(|o| plain_name(&o.name)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The objects directly under `prefix` (`/` as delimiter: not the chain's claims, nor the
    /// reports of shards, `<prefix>shard-<i>-of-<n>/`, which grow with every run), named
    /// relative to it.
    async fn children(&self, prefix: &str, what: &str) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let r = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| s3::err(&format!("{what} in s3://{}/{prefix}", self.bucket), e))?;
            for o in r.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(prefix)) {
                    out.push(Listed {
                        name: name.to_string(),
                        size: o.size().map(|n| n.max(0) as u64),
                        modified: o
                            .last_modified()
                            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                    });
                }
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
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

    /// The Object Lock mode and retain-until date of an object stored now, when configured.
    fn lock(&self) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        self.retention.as_ref().map(|r| {
            let until = Utc::now() + chrono::Duration::days(i64::from(r.days));
            let mode = match r.mode {
                LockMode::Compliance => ObjectLockMode::Compliance,
                LockMode::Governance => ObjectLockMode::Governance,
            };
            (mode, aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()))
        })
    }

    /// Uploads one file, with the configured Object Lock retention: in one request up to the
    /// part size, in parts above it.
    pub async fn put(&self, name: &str, path: &Path) -> anyhow::Result<()> {
        let len = tokio::fs::metadata(path).await.with_context(|| format!("reading '{}'", path.display()))?.len();
        if len > self.part_size {
            return self.put_in_parts(name, path, len).await;
        }
        let crc = crc32(path, 0, len).await?;
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(len))
            .build()
            .await
            .with_context(|| format!("reading '{}'", path.display()))?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc)
            .body(body);
        // One date for the upload and its check (a second date, taken later, could be a
        // second later and ask to extend what was just set).
        let lock = self.lock();
        if let Some((mode, until)) = lock.clone() {
            req = req.object_lock_mode(mode).object_lock_retain_until_date(until);
        }
        let put = req.send().await.map_err(|e| s3::err(&format!("storing {}{name}", self.url()), e))?;
        self.ensure_retention(&format!("{}{name}", self.prefix), put.version_id(), lock).await
    }

    /// A multipart upload of the file's first `len` bytes (an evidence file being appended to is
    /// stored as it was when listed; a later run stores it whole), each part read from the file
    /// when it is sent and checksummed (CRC32) by the client. The retention is set when the
    /// upload is created; the object appears, locked, only when the upload completes. Any
    /// failure aborts the upload, so its parts are not left (and billed) on the bucket.
    async fn put_in_parts(&self, name: &str, path: &Path, len: u64) -> anyhow::Result<()> {
        let key = format!("{}{name}", self.prefix);
        let what = format!("storing {}{name}", self.url());
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        let lock = self.lock();
        if let Some((mode, until)) = lock.clone() {
            req = req.object_lock_mode(mode).object_lock_retain_until_date(until);
        }
        let created = req.send().await.map_err(|e| s3::err(&what, e))?;
        let id = created.upload_id().with_context(|| format!("{what}: the store gave no upload id"))?.to_string();
        let part = self.part_size.max(len.div_ceil(MAX_PARTS));
        let uploaded = async {
            let parts: Vec<CompletedPart> = futures::stream::iter(0..len.div_ceil(part))
                .map(|i| {
                    let (key, id, what) = (&key, &id, &what);
                    async move {
                        let (offset, size) = (i * part, part.min(len - i * part));
                        let crc = crc32(path, offset, size).await?;
                        let body = ByteStream::read_from()
                            .path(path)
                            .offset(offset)
                            .length(Length::Exact(size))
                            .build()
                            .await
                            .with_context(|| format!("reading '{}'", path.display()))?;
                        let number = i as i32 + 1;
                        let r = self
                            .client
                            .upload_part()
                            .bucket(&self.bucket)
                            .key(key)
                            .upload_id(id)
                            .part_number(number)
                            .checksum_algorithm(ChecksumAlgorithm::Crc32)
                            .checksum_crc32(crc.clone())
                            .body(body)
                            .send()
                            .await
                            .map_err(|e| s3::err(&format!("{what} (part {number})"), e))?;
                        crate::progress::touch();
                        anyhow::Ok(
                            CompletedPart::builder()
                                .part_number(number)
                                .set_e_tag(r.e_tag)
                                // The CRC sent, when the store does not echo it.
                                .checksum_crc32(r.checksum_crc32.unwrap_or(crc))
                                .build(),
                        )
                    }
                })
                .buffered(PARTS_AT_ONCE)
                .try_collect()
                .await?;
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await;
            match done {
                Ok(done) => anyhow::Ok(done.version_id),
                // A retry of a completion whose answer was lost: the object may be there whole.
                Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("NoSuchUpload") => {
                    match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
                        Ok(h) if h.content_length() == Some(len as i64) => Ok(h.version_id),
                        _ => Err(s3::err(&what, e).into()),
                    }
                }
                Err(e) => Err(s3::err(&what, e).into()),
            }
        }
        .await;
        let version = match uploaded {
            Ok(v) => v,
            Err(e) => {
                if let Err(a) =
                    self.client.abort_multipart_upload().bucket(&self.bucket).key(&key).upload_id(&id).send().await
                {
                    let a = s3::err(&format!("aborting the upload of {}{name}", self.url()), a);
                    return Err(
                        e.context(format!("{a}; its parts stay on the bucket until a lifecycle rule removes them"))
                    );
                }
                return Err(e);
            }
        };
        self.ensure_retention(&key, version.as_deref(), lock).await
    }

    /// Checks that the stored version has the retention it was uploaded with (or a stronger one:
    /// compliance for governance, a later date), and sets it if not: some S3-compatible stores
    /// (Ceph RGW 16.2, moto) drop the Object Lock headers of a multipart upload and would leave
    /// the file unprotected. If it cannot be set, the unprotected version is deleted (it is not
    /// locked, so it can be), so that the next run stores the file again instead of taking the
    /// bucket's copy for stored.
    async fn ensure_retention(
        &self,
        key: &str,
        version: Option<&str>,
        lock: Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)>,
    ) -> anyhow::Result<()> {
        let Some((mode, until)) = lock else { return Ok(()) };
        let what = format!("s3://{}/{key}", self.bucket);
        let set = async {
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .send()
                .await
                .map_err(|e| s3::err(&format!("checking the retention of {what}"), e))?;
            let strong_enough = match head.object_lock_mode() {
                Some(ObjectLockMode::Compliance) => true,
                Some(m) => *m == mode,
                None => false,
            };
            if strong_enough && head.object_lock_retain_until_date().is_some_and(|d| d.secs() >= until.secs()) {
                return anyhow::Ok(());
            }
            tracing::info!(
                "the store did not apply the upload's Object Lock retention to a report file: setting it on its version"
            );
            self.client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.map(str::to_string))
                .retention(
                    aws_sdk_s3::types::ObjectLockRetention::builder()
                        .mode(aws_sdk_s3::types::ObjectLockRetentionMode::from(mode.as_str()))
                        .retain_until_date(until)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3::err(&format!("setting the retention of {what}"), e))?;
            Ok(())
        };
        let Err(e) = set.await else { return Ok(()) };
        let removed = match version {
            Some(v) => self.client.delete_object().bucket(&self.bucket).key(key).version_id(v).send().await.is_ok(),
            None => false,
        };
        Err(e.context(if removed {
            "the version stored without its retention was deleted; the next run stores the file again"
        } else {
            "the version stored without its retention could not be deleted: it stays on the bucket unprotected"
        }))
    }

    /// Uploads every report file of `dir` the bucket does not have yet; returns their names.
    /// A report is stored once (it is never rewritten); its evidence, signature and CSV again
    /// whenever the bucket's copy differs in size from the local file: the evidence file of a
    /// run still going on in the same directory is stored as it is then, and stored whole by a
    /// later run (also when an upload of the part-written file ended after the whole one).
    pub async fn store_dir(&self, dir: &Path) -> anyhow::Result<Vec<String>> {
        let have: std::collections::BTreeMap<String, Option<u64>> =
            self.listing().await?.into_iter().map(|o| (o.name, o.size)).collect();
        // Evidence files whose report is on the bucket, to store only as that report binds them.
        let mut bound: Vec<(String, String)> = Vec::new();
        let mut todo: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading report directory '{}'", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let k = kind(&n);
                let stored_report = k.report().is_some_and(|r| have.contains_key(r));
                let differs = |size: &Option<u64>| size.is_some_and(|size| e.metadata().is_ok_and(|m| m.len() != size));
                let upload = match (&k, have.get(&n)) {
                    (FileKind::Other, _) => false,
                    // Its report is on the bucket, so it was stored before it, whole: the
                    // signature and CSV are renamed into place, never rewritten; an evidence file
                    // only as the bucket's report binds it (a part-written copy a concurrent
                    // upload left). Before, a local copy altered since replaced the bucket's
                    // genuine one (found by a read-only review).
                    (FileKind::Evidence { report }, size) if stored_report => {
                        if size.is_none_or(differs) {
                            bound.push((n.clone(), report.clone()));
                        }
                        false
                    }
                    (_, None) => true,
                    (FileKind::Report, Some(_)) => false,
                    (FileKind::Signature { .. } | FileKind::Csv { .. }, Some(_)) if stored_report => false,
                    // A size the listing does not give is taken as the same.
                    (_, Some(size)) => differs(size),
                };
                upload.then_some(n)
            })
            .collect();
        for (n, report) in bound {
            // The bucket's report, not the local one (which may have been altered with it).
            let Ok(stored) = self.get(&report).await else { continue };
            if bound_by_report(&stored, &dir.join(&n)) {
                todo.push(n);
            }
        }
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

    /// The chain's head: the newest claim (see [`S3Reports::claim`]), or a run report stored
    /// after it with a higher sequence and no claim (a worker of a version that did not claim
    /// yet, sharing the bucket: a rolling upgrade); on a bucket without claims (reports stored
    /// by lapse before claims, or a store that keeps none), the run report of the highest
    /// sequence, read report by report.
    pub async fn chain_head(&self) -> anyhow::Result<Option<ChainLink>> {
        if let Some(seq) = self.claimed().await?.last().copied() {
            let (mut head, at) = self.read_claim_at(seq).await?;
            // Reports stored since the claim (minus a margin for the store's clocks): usually
            // only the claimed one, which is not read again.
            let since = at.map(|t| t - chrono::Duration::minutes(10));
            for n in self.run_reports_since(since).await? {
                if n == head.file {
                    continue;
                }
                if let Some(link) = self.report_link(&n).await? {
                    if link.sequence > head.sequence {
                        head = link;
                    }
                }
            }
            return Ok(Some(head));
        }
        let mut best: Option<ChainLink> = None;
        for n in self.names().await? {
            if !(n.starts_with("lapse-run-") && kind(&n) == FileKind::Report) {
                continue;
            }
            if let Some(link) = self.report_link(&n).await? {
                if best.as_ref().is_none_or(|b| link.sequence > b.sequence) {
                    best = Some(link);
                }
            }
        }
        Ok(best)
    }

    /// The link to a stored run report (its sequence read from it), if it reads as one.
    async fn report_link(&self, name: &str) -> anyhow::Result<Option<ChainLink>> {
        let bytes = self.get(name).await?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Ok(None) };
        let sequence = v.get("sequence").and_then(|s| s.as_u64()).unwrap_or(0);
        Ok(Some(ChainLink { file: name.to_string(), sha256: sha256_hex(&bytes), sequence }))
    }

    /// Names of the run reports directly under the prefix stored at or after `since` (all, if
    /// the store gave no time).
    async fn run_reports_since(&self, since: Option<chrono::DateTime<Utc>>) -> anyhow::Result<Vec<String>> {
        Ok(self
            .listing()
            .await?
            .into_iter()
            .filter(|o| o.name.starts_with("lapse-run-") && kind(&o.name) == FileKind::Report)
            .filter(|o| since.is_none_or(|since| o.modified.is_none_or(|t| t >= since)))
            .map(|o| o.name)
            .collect())
    }

    /// The names under the prefix (its files and the chain's claims) whose newest entry is a
    /// delete marker over stored versions ([`ReportStore::hidden`]), sorted.
    async fn hidden_names(&self) -> anyhow::Result<Vec<String>> {
        let (mut marked, mut stored) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let ours = |k: Option<&str>| {
            k.and_then(|k| k.strip_prefix(self.prefix.as_str()))
                .filter(|n| !n.contains('/') || n.strip_prefix(CLAIMS).is_some_and(|c| !c.contains('/')))
                .map(str::to_string)
        };
        self.version_pages(&self.prefix, |r| {
            marked.extend(
                r.delete_markers().iter().filter(|m| m.is_latest() == Some(true)).filter_map(|m| ours(m.key())),
            );
            stored.extend(r.versions().iter().filter_map(|v| ours(v.key())));
        })
        .await
        .map_err(|e| s3::err(&format!("listing the versions in s3://{}/{}", self.bucket, self.prefix), e))?;
        Ok(marked.intersection(&stored).cloned().collect())
    }

    /// Every page of `ListObjectVersions` under `prefix`, in order, handed to `each`.
    async fn version_pages(
        &self,
        prefix: &str,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput),
    ) -> Result<(), aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::list_object_versions::ListObjectVersionsError>>
    {
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let r = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker)
                .set_version_id_marker(version_marker)
                .send()
                .await?;
            each(&r);
            if r.is_truncated() != Some(true) {
                return Ok(());
            }
            (key_marker, version_marker) =
                (r.next_key_marker().map(str::to_string), r.next_version_id_marker().map(str::to_string));
            if key_marker.is_none() && version_marker.is_none() {
                return Ok(());
            }
        }
    }

    /// The key of the claim of sequence `n`: zero-padded, so the keys sort as the sequences.
    fn claim_key(&self, n: u64) -> String {
        format!("{}{CLAIMS}{n:020}", self.prefix)
    }

    /// The sequences claimed, ascending.
    async fn claimed(&self) -> anyhow::Result<Vec<u64>> {
        let prefix = format!("{}{CLAIMS}", self.prefix);
        let mut claimed: Vec<u64> = self
            .children(&prefix, "listing the chain's claims")
            .await?
            .into_iter()
            .filter(|o| o.name.len() == 20)
            .filter_map(|o| o.name.parse().ok())
            .collect();
        claimed.sort_unstable();
        Ok(claimed)
    }

    /// The link the claim of `seq` holds.
    async fn read_claim(&self, seq: u64) -> anyhow::Result<ChainLink> {
        Ok(self.read_claim_at(seq).await?.0)
    }

    /// The link the claim of `seq` holds, and when the claim was made.
    async fn read_claim_at(&self, seq: u64) -> anyhow::Result<(ChainLink, Option<chrono::DateTime<Utc>>)> {
        let first = self.first_version(&self.claim_key(seq)).await;
        self.read_claim_version(seq, first).await
    }

    /// The link a version of the claim of `seq` holds (`None`: the current one), and its time.
    async fn read_claim_version(
        &self,
        seq: u64,
        version: Option<String>,
    ) -> anyhow::Result<(ChainLink, Option<chrono::DateTime<Utc>>)> {
        let key = self.claim_key(seq);
        let r = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_version_id(version)
            .send()
            .await
            .map_err(|e| s3::err(&format!("reading the chain's claim s3://{}/{key}", self.bucket), e))?;
        let at = r.last_modified().and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
        let bytes = r.body.collect().await.context("reading a claim")?.into_bytes();
        let link: ChainLink = serde_json::from_slice(&bytes)
            .ok()
            .filter(|l: &ChainLink| l.sequence == seq && plain_name(&l.file))
            .with_context(|| format!("s3://{}/{key} is no claim of sequence {seq}", self.bucket))?;
        Ok((link, at))
    }

    /// The version of a claim's key written first: Ceph RGW 16.2 ignores `If-None-Match` on a
    /// versioned bucket (every bucket with Object Lock is one) and stores a second claim as a
    /// newer version; the first written holds. Also when the listing shows one version: a claim
    /// written between the listing and the read would be the current version by then, so that
    /// one version is read, not the current one (the race broke the chain under load). `None`
    /// on a bucket without versions (the listing's `null` version), or when the versions cannot
    /// be listed (`s3:ListBucketVersions` not granted: the conditional write is trusted then).
    async fn first_version(&self, key: &str) -> Option<String> {
        let mut versions = Vec::new();
        // Newest first.
        let read = self
            .version_pages(key, |r| {
                versions.extend(
                    r.versions()
                        .iter()
                        .filter(|v| v.key() == Some(key))
                        .filter_map(|v| v.version_id().map(str::to_string)),
                )
            })
            .await;
        if let Err(e) = read {
            let e = s3::err(&format!("listing the versions of s3://{}/{key}", self.bucket), e);
            tracing::debug!("{e}; the claim is taken as written once");
            return None;
        }
        versions.pop().filter(|v| v != "null")
    }

    /// Claims `link.sequence` for the run report `link` names, before that report is written:
    /// the claim object is created only if no claim of that sequence exists (`If-None-Match:
    /// *`), so of two workers sharing the bucket that read the same head, one gets the sequence
    /// and the other learns it lost it and chains after the winner instead of forking the
    /// chain. With a retention configured the claim is locked like the reports. A store that
    /// ignores the condition on a versioned bucket (Ceph RGW 16.2) keeps each claim as a version:
    /// the first written holds ([`S3Reports::first_version`]). One that ignores it on a bucket
    /// without versions accepts every claim (the fork stays possible there).
    pub async fn claim(&self, link: &ChainLink) -> anyhow::Result<Claim> {
        let key = self.claim_key(link.sequence);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("application/json")
            .body(ByteStream::from(serde_json::to_vec(link)?));
        if let Some((mode, until)) = self.lock() {
            req = req.object_lock_mode(mode).object_lock_retain_until_date(until);
        }
        match req.send().await {
            // Written; but a store that ignored the condition may hold an earlier claim of it
            // as an earlier version.
            Ok(_) => match self.first_version(&key).await {
                None => Ok(Claim::Claimed),
                Some(first) => match self.read_claim_version(link.sequence, Some(first)).await {
                    Ok((found, _)) if found == *link => Ok(Claim::Claimed),
                    _ => Ok(Claim::Taken),
                },
            },
            // 412: the claim exists. 409: another conditional write of it is under way. Either
            // may answer a retry of this very claim whose first attempt was written but whose
            // answer was lost: then the claim is this report's.
            Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if matches!(e.raw().status().as_u16(), 409 | 412) => {
                match self.read_claim(link.sequence).await {
                    Ok(found) if found == *link => Ok(Claim::Claimed),
                    _ => Ok(Claim::Taken),
                }
            }
            Err(e) => Err(s3::err(&format!("claiming sequence {} in {}", link.sequence, self.url()), e).into()),
        }
    }
}

/// An object directly under a listed prefix.
struct Listed {
    /// Its key without the prefix.
    name: String,
    size: Option<u64>,
    modified: Option<chrono::DateTime<Utc>>,
}

/// What claiming a sequence of the chain found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The sequence is this report's.
    Claimed,
    /// Another report claimed it first: read the head again and chain after it.
    Taken,
}

/// Where the chain's claims are, under the prefix: `<prefix>chain/<sequence, 20 digits>`, each
/// holding the [`ChainLink`] of the run report that took the sequence.
pub const CLAIMS: &str = "chain/";

/// The CRC32 (base64, as S3 takes it) of `len` bytes of the file from `offset`. Sent as a header
/// with the upload (the store checks the bytes it got against it) instead of the client's
/// default, a checksum trailer after a chunk-encoded body, which S3-compatible stores that
/// predate trailers (Ceph RGW before Reef) refuse: the file is read twice, the second time as it
/// is sent.
async fn crc32(path: &Path, offset: u64, len: u64) -> anyhow::Result<String> {
    use base64::Engine;
    use std::io::{Read, Seek};
    let p = path.to_path_buf();
    let crc = tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
        let mut f = std::fs::File::open(&p)?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        let (mut h, mut buf, mut left) = (crc32fast::Hasher::new(), vec![0u8; 1 << 20], len);
        while left > 0 {
            let n = f.read(&mut buf[..left.min(1 << 20) as usize])?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file got shorter"));
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(h.finalize())
    })
    .await?
    .with_context(|| format!("reading '{}'", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes()))
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

    fn claims(&self) -> std::io::Result<Vec<StoredClaim>> {
        block(async {
            let mut out = Vec::new();
            for sequence in self.claimed().await? {
                let (link, at) = match self.read_claim_at(sequence).await {
                    Ok((l, at)) => (Ok(l), at),
                    Err(e) => (Err(format!("{e:#}")), None),
                };
                out.push(StoredClaim { sequence, link, at });
            }
            Ok(out)
        })
    }

    fn hidden(&self) -> std::io::Result<Vec<String>> {
        block(self.hidden_names())
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

/// Whether the evidence file at `evidence` is the one the report `report` (its bytes, as the
/// bucket holds it) binds (its SHA-256 as the report states it). Streamed: an evidence file may hold millions of lines.
fn bound_by_report(report: &[u8], evidence: &Path) -> bool {
    use sha2::Digest;
    let Ok(r) = serde_json::from_slice::<crate::report::Report>(report) else {
        return false;
    };
    let Some(want) = r.evidence.map(|e| e.sha256) else { return false };
    let Ok(mut f) = std::fs::File::open(evidence) else { return false };
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).is_ok() && hex::encode(h.finalize()) == want
}
