//! S3 (and S3-compatible stores: MinIO, Ceph, Garage) through `aws-sdk-s3`.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity — so IRSA
//! and pod identity work without configuration). Object Lock is read per version from
//! `HeadObject` (`x-amz-object-lock-*`); a locked version is never deleted and no governance
//! bypass header is ever sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, EncodingType, ObjectIdentifier, ObjectLockEnabled, ObjectLockLegalHoldStatus};
use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{ObjectBackend, ObjectEntry, Version};
use crate::connector::ConnectorError;

pub struct S3Backend {
    client: Client,
    endpoint: String,
    lock_enabled: Mutex<HashMap<String, bool>>,
    lease: Duration,
}

impl fmt::Display for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmazonS3({})", self.endpoint)
    }
}

fn time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

pub(crate) fn err<E>(context: &str, e: SdkError<E, HttpResponse>) -> ConnectorError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let message = match &e {
        SdkError::ServiceError(s) => {
            let m = s.err();
            // A HEAD answer has no body, hence no error code: name the HTTP status instead.
            let status = s.raw().status().as_u16();
            // The code only: the server's message may quote the key or an ARN holding it
            // (`…:object/exports/jane.doe@example.com.csv`), and keys hold personal data.
            match (m.code(), status) {
                (Some(code), _) => format!("{code} (HTTP {status})"),
                (None, 403) => "access denied (HTTP 403)".to_string(),
                (None, _) => format!("HTTP {status}"),
            }
        }
        // No credentials anywhere: a setup to fix, not an endpoint that did not answer (before,
        // "temporarily unavailable: cannot reach the S3 endpoint" and the SDK's debug dump;
        // found by a README walkthrough).
        _ if no_credentials(&e) => {
            let context = context.to_string();
            return ConnectorError::Query {
                context,
                message: "no AWS credentials found (tried the environment, the profile, a web identity token, the ECS \
                          and instance metadata providers): give lapse credentials"
                    .to_string(),
            };
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            format!("cannot reach the S3 endpoint ({})", DisplayErrorContext(&e))
        }
        _ => DisplayErrorContext(&e).to_string(),
    };
    // What the SDK's own retries could not get past, but a later attempt may.
    let transient = match &e {
        SdkError::ServiceError(s) => matches!(s.raw().status().as_u16(), 500 | 502 | 503 | 504),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    let context = context.to_string();
    if transient {
        ConnectorError::Lost { context, message }
    } else {
        ConnectorError::Query { context, message }
    }
}

/// Whether the request failed for want of credentials (the credential chain found none).
fn no_credentials<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<aws_credential_types::provider::error::CredentialsError>().is_some_and(|c| {
            matches!(c, aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_))
        }) {
            return true;
        }
        source = s.source();
    }
    false
}

/// The action a `HeadObject` needs (named in its errors: a HEAD answer has no error code).
fn head_action(version: Option<&str>) -> &'static str {
    match version {
        Some(_) => "HeadObject: s3:GetObjectVersion",
        None => "HeadObject: s3:GetObject",
    }
}

/// An S3 client from the standard AWS chain (env, profile, IRSA / pod identity), with bounded
/// retries and timeouts; `region`, `endpoint` and `path_style` from a `kind: s3` connection.
pub async fn client(region: Option<&str>, endpoint: Option<&str>, path_style: bool) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    let sdk = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if sdk.region().is_none() {
        b = b.region(Region::new("us-east-1"));
    }
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep);
    }
    Client::from_conf(b.build())
}

pub(crate) fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            matches!(s.err().code(), Some("NotFound" | "NoSuchKey" | "NoSuchBucket"))
                || s.raw().status().as_u16() == 404
        }
        _ => false,
    }
}

impl S3Backend {
    pub async fn new(region: Option<&str>, endpoint: Option<&str>, path_style: bool) -> S3Backend {
        S3Backend {
            client: client(region, endpoint, path_style).await,
            endpoint: endpoint.unwrap_or("aws").to_string(),
            lock_enabled: Mutex::new(HashMap::new()),
            lease: DEFAULT_LEASE,
        }
    }

    /// The run lock's lease (zero: no run lock on this connection).
    pub fn with_lease(mut self, lease: Duration) -> S3Backend {
        self.lease = lease;
        self
    }

    async fn lock_enabled(&self, bucket: &str) -> bool {
        if let Some(v) = self.lock_enabled.lock().expect("lock").get(bucket) {
            return *v;
        }
        let enabled = match self.client.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(o) => o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            // No configuration (or not allowed to read it): check every version's head anyway.
            Err(e) => !is_not_found(&e) && e.code() != Some("ObjectLockConfigurationNotFoundError"),
        };
        self.lock_enabled.lock().expect("lock").insert(bucket.to_string(), enabled);
        enabled
    }

    /// Lists keys (hidden ones included) from `ListObjectVersions`, one entry per key with its
    /// newest data version, strictly after `after`. A key whose versions continue on the next
    /// page is left for it.
    async fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), ConnectorError> {
        let mut entries: std::collections::BTreeMap<String, Listed> = std::collections::BTreeMap::new();
        let (mut key_marker, mut version_marker) = (after.map(str::to_string), None::<String>);
        loop {
            let r = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .max_keys(max.clamp(1, 1000) as i32)
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .map(url_decoded)
                .map_err(|e| err(&format!("listing versions in bucket '{bucket}'"), e))?;
            add_page(&mut entries, &r, after);
            if !r.is_truncated().unwrap_or(false) {
                return Ok((entries.into_values().map(Listed::into_entry).collect(), false));
            }
            key_marker = r.next_key_marker().map(str::to_string);
            version_marker = r.next_version_id_marker().map(str::to_string);
            if entries.len() > 1 {
                // The last key may continue on the next page: leave it to the next call.
                let last = entries.keys().next_back().cloned().expect("non-empty");
                entries.remove(&last);
                return Ok((entries.into_values().map(Listed::into_entry).collect(), true));
            }
        }
    }

    async fn lock_of(&self, bucket: &str, key: &str, version: Option<&str>) -> Result<Option<String>, ConnectorError> {
        let r =
            self.client.head_object().bucket(bucket).key(key).set_version_id(version.map(str::to_string)).send().await;
        let h = match r {
            Ok(h) => h,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(err(&format!("reading an object version's lock ({})", head_action(version)), e)),
        };
        if h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On) {
            return Ok(Some("legal-hold".into()));
        }
        if let Some(until) = time(h.object_lock_retain_until_date()) {
            if until > Utc::now() {
                let mode = h.object_lock_mode().map(|m| m.as_str().to_string()).unwrap_or_else(|| "retention".into());
                return Ok(Some(format!("{mode} retention until {}", until.format("%Y-%m-%dT%H:%M:%SZ"))));
            }
        }
        Ok(None)
    }
}

/// A key as the versions listing shows it: its newest data version, and its newest delete
/// marker's date.
struct Listed {
    entry: ObjectEntry,
    data: bool,
    marker: Option<DateTime<Utc>>,
}

impl Listed {
    /// The key's entry; a key left with delete markers only (its data gone, its name, which
    /// may name a person, still listed) is dated by its newest marker, as a batch's re-check
    /// judges it (`destroy`): undated, a `last_modified` anchor left it unreadable on every run.
    fn into_entry(self) -> ObjectEntry {
        let mut e = self.entry;
        if !self.data {
            e.last_modified = self.marker;
        }
        e
    }
}

/// Folds one `ListObjectVersions` page into `entries` (per key, its newest data version and
/// newest delete marker), keys at or before `after` left out: S3 lists strictly after a
/// `key-marker` given alone, but Ceph RGW (Pacific) lists the marker key's versions again, and
/// every page after the first would count its first key twice. Run lock objects
/// (`LOCK_PREFIX`) are never objects: left out.
fn add_page(
    entries: &mut std::collections::BTreeMap<String, Listed>,
    r: &aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput,
    after: Option<&str>,
) {
    let wanted = |k: &str| after.is_none_or(|a| k > a) && !k.starts_with(LOCK_PREFIX);
    let blank = |k: &str| Listed {
        entry: ObjectEntry { key: k.to_string(), last_modified: None, size: 0, version: None },
        data: false,
        marker: None,
    };
    for v in r.versions() {
        let Some(k) = v.key().filter(|k| wanted(k)) else { continue };
        let l = entries.entry(k.to_string()).or_insert_with(|| blank(k));
        let t = time(v.last_modified());
        if !l.data || t > l.entry.last_modified {
            l.data = true;
            let e = &mut l.entry;
            e.last_modified = t;
            e.size = v.size().unwrap_or(0).max(0) as u64;
            // Only a hidden object's facts are asked for by version (`null` too: written before
            // the bucket kept versions); a visible one's are the current version's, asked for
            // without one (a version needs `s3:GetObjectVersion`, its tags
            // `s3:GetObjectVersionTagging`).
            e.version = match v.is_latest() {
                Some(true) => None,
                _ => v.version_id().map(str::to_string),
            };
        }
    }
    for m in r.delete_markers() {
        let Some(k) = m.key().filter(|k| wanted(k)) else { continue };
        let l = entries.entry(k.to_string()).or_insert_with(|| blank(k));
        let t = time(m.last_modified());
        if l.marker.is_none() || t > l.marker {
            l.marker = t;
        }
    }
}

/// The size of a range listing's next page, after one of `previous` entries (0: the first)
/// that was `wasted` (less than half of it wanted) when `left` more versions are expected:
/// enough for them with a little slack; double the previous page once the range holds more
/// than the caller expected (a wasted page, or nothing left expected); from 32 to S3's 1,000.
fn page_size(previous: usize, wasted: bool, left: usize) -> usize {
    let grow = if wasted || left == 0 { previous * 2 } else { 0 };
    (left + left / 16 + 16).max(grow).clamp(32, 1000)
}

/// Run lock objects: `.lapse-locks/<hash>` at the bucket root, never listed as objects.
pub const LOCK_PREFIX: &str = ".lapse-locks/";
/// A lock object is a lease: renewed every third of it while its worker lives, taken over by
/// another worker once expired (a killed worker's lock lasts at most this long). Default of the
/// connection's `run_lock_lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// A held lock object: renews its lease until dropped, then deletes it if it still names this
/// worker (another worker's may be there now).
struct LeaseGuard {
    renew: tokio::task::JoinHandle<()>,
    /// Tells the renewal task to end after the write it may be making.
    stop: std::sync::Arc<tokio::sync::Notify>,
    client: Client,
    bucket: String,
    key: String,
    holder: String,
    /// How the server takes `If-Match` on a write (`if_match_form`); none: it does not.
    form: Option<EtagForm>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let (c, b, k, holder, form) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.holder.clone(), self.form);
        let renew = &mut self.renew;
        self.stop.notify_one();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                // Every version of the lock object (a plain delete on a versioned bucket would
                // leave them behind, and a delete marker), if it is still this worker's; once
                // the renewal task has ended (a renewal in flight could land after the listing,
                // and would be left).
                tokio::task::block_in_place(|| {
                    h.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(30), &mut *renew).await;
                        if let Ok(LockState { holder: Some(owner), .. }) = lock_state(&c, &b, &k).await {
                            if owner == holder && !delete_every_version(&c, &b, &k).await {
                                // A version the bucket keeps (a default Object Lock retention):
                                // the lease is ended instead, so that the next worker takes the
                                // lock over at once rather than find it busy until the lease
                                // would have expired. Read again (the current version may be
                                // another now), and written under `If-Match` what was read:
                                // never over another worker's (nor where the server ignores it).
                                if let (Some(form), Ok(l)) = (form, lock_state(&c, &b, &k).await) {
                                    if let (Some(owner), Some(etag)) = (l.holder, l.etag) {
                                        if owner == holder {
                                            let ended = ended_lease_body(&holder);
                                            let _ = write_if_match(&c, &b, &k, &ended, &etag, form).await;
                                        }
                                    }
                                }
                            }
                        }
                    })
                });
            }
        }
        self.renew.abort();
    }
}

/// Deletes every version and delete marker of `key` (a plain delete on a versioned bucket would
/// leave them behind, and add a delete marker), best effort: false if one could not be.
async fn delete_every_version(c: &Client, b: &str, k: &str) -> bool {
    let Ok(r) = c.list_object_versions().bucket(b).prefix(k).send().await else { return false };
    let ids = r
        .versions()
        .iter()
        .filter(|v| v.key() == Some(k))
        .map(|v| v.version_id().map(str::to_string))
        .chain(r.delete_markers().iter().filter(|m| m.key() == Some(k)).map(|m| m.version_id().map(str::to_string)))
        .collect::<Vec<_>>();
    if ids.is_empty() {
        return c.delete_object().bucket(b).key(k).send().await.is_ok();
    }
    let mut all = true;
    for id in ids {
        all &= c.delete_object().bucket(b).key(k).set_version_id(id).send().await.is_ok();
    }
    all
}

/// A lease its worker ended without deleting the lock object: expired whatever the reader's
/// clock (it names the epoch), and said to be ended (`LockState::ended`).
fn ended_lease_body(holder: &str) -> Vec<u8> {
    serde_json::json!({ "holder": holder, "expires": "1970-01-01T00:00:00+00:00", "ended": true })
        .to_string()
        .into_bytes()
}

fn lease_body(holder: &str, lease: Duration) -> Vec<u8> {
    let expires = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    serde_json::json!({ "holder": holder, "expires": expires.to_rfc3339() }).to_string().into_bytes()
}

impl S3Backend {
    /// Creates the lock object with `If-None-Match: *`: false when it exists (412).
    async fn put_lock(&self, bucket: &str, key: &str, holder: &str) -> Result<bool, ConnectorError> {
        let r = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .body(aws_sdk_s3::primitives::ByteStream::from(lease_body(holder, self.lease)))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if refused(&e) => Ok(false),
            Err(e) => Err(err("taking the run lock", e)),
        }
    }
}

/// A listing asked for with `encoding-type=url` (a key with a control character cannot be
/// written in XML 1.0, and the whole listing failed to parse): its keys, markers and prefixes
/// decoded as the AWS SDKs for Python and Ruby decode them (`+` is a space). Left as it is when
/// the server did not encode (the response names no encoding).
fn url_decoded(
    mut r: aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput,
) -> aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput {
    if r.encoding_type() != Some(&EncodingType::Url) {
        return r;
    }
    fn dec(s: &mut Option<String>) {
        if let Some(v) = s.as_mut() {
            *v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        }
    }
    dec(&mut r.key_marker);
    dec(&mut r.next_key_marker);
    dec(&mut r.prefix);
    dec(&mut r.delimiter);
    for v in r.versions.iter_mut().flatten() {
        dec(&mut v.key);
    }
    for m in r.delete_markers.iter_mut().flatten() {
        dec(&mut m.key);
    }
    for p in r.common_prefixes.iter_mut().flatten() {
        dec(&mut p.prefix);
    }
    r
}

/// Whether XML 1.0 can carry `key` as text (no control character but tab; a line break or
/// carriage return would be normalized by the server's parser).
fn xml_safe(key: &str) -> bool {
    !key.chars().any(|c| (c < ' ' && c != '\t') || matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// A precondition (`If-Match`, `If-None-Match`) that did not hold: 412.
fn refused<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => s.raw().status().as_u16() == 412 || s.err().code() == Some("PreconditionFailed"),
        _ => false,
    }
}

/// The lock object as read: its holder, whether its lease is over (or unreadable, e.g.
/// half-written), its ETag (none when there is no lock object) and its content.
struct LockState {
    exists: bool,
    holder: Option<String>,
    expired: bool,
    /// Its worker ended the lease (`ended_lease_body`): not a worker that was killed.
    ended: bool,
    etag: Option<String>,
    body: Vec<u8>,
}

async fn lock_state(c: &Client, bucket: &str, key: &str) -> Result<LockState, ConnectorError> {
    let r = match c.get_object().bucket(bucket).key(key).send().await {
        Ok(r) => r,
        Err(e) if is_not_found(&e) => {
            return Ok(LockState { exists: false, holder: None, expired: true, ended: false, etag: None, body: vec![] })
        }
        Err(e) => return Err(err("reading the run lock", e)),
    };
    let etag = r.e_tag().map(str::to_string);
    let body = r.body.collect().await.map(|b| b.to_vec()).unwrap_or_default();
    let v = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let holder = v.get("holder").and_then(|h| h.as_str()).map(str::to_string);
    let expires = v.get("expires").and_then(|e| e.as_str()).and_then(|e| DateTime::parse_from_rfc3339(e).ok());
    let ended = v.get("ended").and_then(|e| e.as_bool()) == Some(true);
    let expired = ended || expires.is_none_or(|e| e.with_timezone(&Utc) <= Utc::now());
    Ok(LockState { exists: true, holder, expired, ended, etag, body })
}

/// How a server takes the ETag of an `If-Match` on a write: as it gave it (quoted, as S3 does),
/// or bare (Ceph RGW 16.2 refuses the quoted form even when it matches).
#[derive(Clone, Copy)]
enum EtagForm {
    AsGiven,
    Bare,
}

impl EtagForm {
    fn of(self, etag: &str) -> String {
        match self {
            EtagForm::AsGiven => etag.to_string(),
            EtagForm::Bare => etag.trim_matches('"').to_string(),
        }
    }
}

/// Writes this worker's lease to the lock object, under `If-Match` when `cond` is given: false
/// when the precondition failed (412).
async fn put_lease(
    c: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    cond: Option<String>,
) -> Result<bool, SdkError<aws_sdk_s3::operation::put_object::PutObjectError, HttpResponse>> {
    let put = c.put_object().bucket(bucket).key(key).set_if_match(cond).body(body.into());
    match put.send().await {
        Ok(_) => Ok(true),
        Err(e) if refused(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A request that the server answers with an error because it does not support a header it
/// was given (rather than because a precondition failed).
fn unsupported<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() == 501
                || matches!(s.err().code(), Some("NotImplemented" | "InvalidArgument" | "InvalidRequest"))
        }
        _ => false,
    }
}

/// What a write under `If-Match` did to the lock object.
enum Conditional {
    Written,
    /// Refused: the lock object is no longer the one read (another worker's write).
    Replaced,
    /// There is no lock object any more.
    Gone,
    /// The server does not take the condition in this form (it refused an unchanged object,
    /// or refused the header).
    Unsupported,
}

/// Writes `body` over the lock object read with ETag `etag`, under `If-Match` in `form`. A
/// refusal is told apart by reading the lock object again: this very write, landed with its
/// answer lost and retried by the SDK (the content is `body`); an unchanged object (the
/// server does not take this form); or another worker's write.
async fn write_if_match(
    c: &Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    etag: &str,
    form: EtagForm,
) -> Result<Conditional, ConnectorError> {
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        return match put_lease(c, bucket, key, body.to_vec(), Some(form.of(etag))).await {
            Ok(true) => Ok(Conditional::Written),
            Ok(false) => {
                let l = lock_state(c, bucket, key).await?;
                Ok(match l.etag {
                    _ if !l.exists => Conditional::Gone,
                    _ if l.body == body => Conditional::Written,
                    Some(now) if now == etag => Conditional::Unsupported,
                    _ => Conditional::Replaced,
                })
            }
            Err(e) if is_not_found(&e) => Ok(Conditional::Gone),
            // S3's answer to two conditional writes of one key at once (two workers taking an
            // expired lock over): neither is known to have won yet. The same write again.
            Err(e) if attempt < 5 && matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 409) => {
                tokio::time::sleep(Duration::from_millis(100 * attempt + rand::random::<u64>() % 100)).await;
                continue;
            }
            Err(e) if unsupported(&e) => Ok(Conditional::Unsupported),
            Err(e) => Err(err("writing the run lock", e)),
        };
    }
}

/// In which form, if any, the server honours `If-Match` on a write of the lock object this
/// worker holds (ETag `etag`): a write under a wrong ETag must be refused and one under the
/// right ETag taken. S3 and moto take the ETag quoted, as they give it; Ceph RGW 16.2 refuses
/// the quoted form even when it matches, and takes the bare one. A server that takes a write
/// under a wrong ETag ignores the header. Where none holds, renewals are not conditional.
async fn if_match_form(
    c: &Client,
    bucket: &str,
    key: &str,
    holder: &str,
    lease: Duration,
    etag: &str,
) -> Option<EtagForm> {
    for form in [EtagForm::AsGiven, EtagForm::Bare] {
        let wrong = form.of("\"00000000000000000000000000000000\"");
        match put_lease(c, bucket, key, lease_body(holder, lease), Some(wrong)).await {
            Ok(false) => {}
            // Taken under a wrong ETag (the header is ignored), or no answer to go by.
            Ok(true) | Err(_) => return None,
        }
        match write_if_match(c, bucket, key, &lease_body(holder, lease), etag, form).await {
            Ok(Conditional::Written) => return Some(form),
            Ok(Conditional::Unsupported) => continue,
            _ => return None,
        }
    }
    None
}

/// How taking over an expired lock object went.
#[derive(Debug, PartialEq, Eq)]
pub enum TakeOver {
    /// This worker's lease is written over the expired one: the lock is this worker's.
    Taken,
    /// Another worker wrote its own first: busy.
    Busy,
    /// The lock object is gone: whoever creates it first (`If-None-Match: *`) holds the lock.
    Gone,
    /// The server takes no `If-Match` on a write: the expired object can only be removed
    /// without condition, and created again.
    Unconditional,
}

/// Takes over the expired lock object read with ETag `etag`: writes this worker's lease
/// (`body`) over it under `If-Match` that ETag, so that of two workers that found it expired
/// only the first succeeds where the server honours the header; the other's write names an
/// ETag the lock object no longer has. (A server that ignores it takes both writes: the first
/// worker's next renewal then finds the other's holder, and stops.)
pub async fn take_over_expired_lock(
    c: &Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    etag: &str,
) -> Result<TakeOver, ConnectorError> {
    for form in [EtagForm::AsGiven, EtagForm::Bare] {
        match write_if_match(c, bucket, key, body, etag, form).await? {
            Conditional::Written => return Ok(TakeOver::Taken),
            Conditional::Replaced => return Ok(TakeOver::Busy),
            Conditional::Gone => return Ok(TakeOver::Gone),
            Conditional::Unsupported => continue,
        }
    }
    Ok(TakeOver::Unconditional)
}

#[async_trait]
impl ObjectBackend for S3Backend {
    /// A lease object created with `If-None-Match: *` (only one creator wins), renewed while the
    /// worker lives, deleted when it ends; an expired lease is taken over. A server that does
    /// not refuse a second create of the lock object gets no lock (`Unsupported`, a warning).
    async fn try_lock(&self, bucket: &str, name: &str) -> Result<super::RunLock, ConnectorError> {
        use sha2::Digest;
        let key = format!("{LOCK_PREFIX}{}", &hex::encode(sha2::Sha256::digest(name))[..16]);
        let holder = uuid::Uuid::new_v4().to_string();
        if self.lease.is_zero() {
            return Ok(super::RunLock::Unsupported);
        }
        let mut taken_at = std::time::Instant::now();
        let mut got = self.put_lock(bucket, &key, &holder).await?;
        if !got {
            // Our own first attempt may have succeeded with its answer lost (the SDK then
            // retried into a 412): the lock is ours.
            let state = lock_state(&self.client, bucket, &key).await?;
            got = state.holder.as_deref() == Some(holder.as_str());
            if !got && state.expired {
                taken_at = std::time::Instant::now();
                let body = lease_body(&holder, self.lease);
                let how = match state.etag.as_deref() {
                    Some(etag) => take_over_expired_lock(&self.client, bucket, &key, &body, etag).await?,
                    None if state.exists => TakeOver::Unconditional,
                    None => TakeOver::Gone,
                };
                got = match how {
                    TakeOver::Taken => true,
                    TakeOver::Busy => return Ok(super::RunLock::Busy),
                    TakeOver::Gone => self.put_lock(bucket, &key, &holder).await?,
                    // Unless it changed since it was read (another worker took it over).
                    TakeOver::Unconditional if lock_state(&self.client, bucket, &key).await?.etag != state.etag => {
                        return Ok(super::RunLock::Busy)
                    }
                    TakeOver::Unconditional => {
                        self.client
                            .delete_object()
                            .bucket(bucket)
                            .key(&key)
                            .send()
                            .await
                            .map_err(|e| err("removing an expired run lock", e))?;
                        self.put_lock(bucket, &key, &holder).await?
                    }
                };
                match got {
                    // Left by a worker that ended in a bucket that keeps versions: as expected.
                    true if state.ended => tracing::info!("took over an ended run lock"),
                    true => tracing::warn!("took over an expired run lock (a worker ended without releasing it)"),
                    false => {}
                }
            }
        }
        if !got {
            return Ok(super::RunLock::Busy);
        }
        // The lock holds only if the server refuses a second create of the key. Ceph RGW 16.2
        // ignores `If-None-Match` on versioned buckets, where every worker's lock would "win":
        // there, no lock (the caller warns) rather than one that keeps nobody out.
        match self.put_lock(bucket, &key, &holder).await {
            Ok(false) => {}
            Ok(true) => {
                delete_every_version(&self.client, bucket, &key).await;
                tracing::warn!(
                    "the S3 server does not honour If-None-Match on this bucket: a lock object would not keep a second worker out"
                );
                return Ok(super::RunLock::Unsupported);
            }
            Err(e) => {
                delete_every_version(&self.client, bucket, &key).await;
                return Err(e);
            }
        }
        // Renewals are conditional (`If-Match` the ETag the renewal's read found) where the
        // server honours that: a renewal then never writes over another worker's lock object,
        // even one written between its read and its write.
        let held = lock_state(&self.client, bucket, &key).await.ok().filter(|l| l.holder.as_deref() == Some(&holder));
        let form = match held.and_then(|l| l.etag) {
            Some(etag) => if_match_form(&self.client, bucket, &key, &holder, self.lease, &etag).await,
            None => None,
        };
        if form.is_none() {
            tracing::warn!(
                "the run lock's renewals are not conditional: the S3 server does not honour If-Match on writes (or the probe failed)"
            );
        }
        let state = std::sync::Arc::new(super::Lease::new(self.lease, taken_at));
        let (c, b, k, s, h) = (self.client.clone(), bucket.to_string(), key.clone(), state.clone(), holder.clone());
        let lease = self.lease;
        // Renewed only while it holds: not once its lease is over (another worker may hold the
        // lock by then), nor once another worker's lock object is in its place (written over,
        // it would let two workers destroy); `Lease::check` then stops the policy.
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let renew = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(lease / 3) => {}
                    _ = stopped.notified() => return,
                }
                if s.expired() {
                    tracing::warn!("the run lock's lease ran out before it could be renewed");
                    return;
                }
                let from = std::time::Instant::now();
                let read = match lock_state(&c, &b, &k).await {
                    Ok(l) if l.holder.as_deref() != Some(holder.as_str()) => {
                        tracing::warn!("another worker's lock object replaced this worker's run lock");
                        s.lose("another worker's lock object replaced this worker's");
                        return;
                    }
                    // Its written expiry has passed: another worker may take it over any moment.
                    Ok(l) if l.expired => {
                        tracing::warn!("the run lock's lease ran out before it could be renewed");
                        s.lose("its written expiry passed before it could be renewed");
                        return;
                    }
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!("renewing the run lock failed: {e}");
                        continue;
                    }
                };
                let body = lease_body(&holder, lease);
                let written = match (form, read.etag.as_deref()) {
                    (Some(form), Some(etag)) => write_if_match(&c, &b, &k, &body, etag, form).await,
                    _ => put_lease(&c, &b, &k, body, None)
                        .await
                        .map(|_| Conditional::Written)
                        .map_err(|e| err("writing the run lock", e)),
                };
                match written {
                    // Written after the lease ran out (a write that hung): another worker may
                    // have taken the lock over meanwhile (and, where the write was not
                    // conditional, had it written over). Lost: this worker stops.
                    Ok(Conditional::Written) if s.expired() => {
                        tracing::warn!("the run lock's renewal was written after its lease ran out");
                        s.lose(
                            "its renewal was written after the lease ran out: another worker may have taken it over",
                        );
                        return;
                    }
                    Ok(Conditional::Written) => s.renewed(from),
                    // Replaced (or removed) between the read and the write.
                    Ok(Conditional::Replaced | Conditional::Gone) => {
                        tracing::warn!("another worker's lock object replaced this worker's run lock");
                        s.lose("another worker's lock object replaced this worker's");
                        return;
                    }
                    Ok(Conditional::Unsupported) => {
                        tracing::warn!("renewing the run lock failed: the server refused the write")
                    }
                    Err(e) => tracing::warn!("renewing the run lock failed: {e}"),
                }
            }
        });
        Ok(super::RunLock::Held(
            Box::new(LeaseGuard {
                renew,
                stop,
                client: self.client.clone(),
                bucket: bucket.into(),
                key,
                holder: h,
                form,
            }),
            Some(state),
        ))
    }

    async fn check(&self, bucket: &str) -> Result<(), ConnectorError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(ConnectorError::NotFound { what: format!("bucket '{bucket}'") }),
            Err(e) => Err(err(&format!("checking bucket '{bucket}' (HeadBucket: s3:ListBucket)"), e)),
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), ConnectorError> {
        // Always from the versions listing: on a versioned bucket an object hidden by a delete
        // marker still holds data, and `ListObjectsV2` does not show it. (An unversioned bucket
        // answers the same listing with one `null` version per key.)
        // Run lock objects are left out page by page (`add_page`): dropped from a page that
        // was already cut, they left it empty while the listing went on, and an empty page
        // ends every scan (the counts, the candidates and the intents' reconciliation).
        self.list_versions(bucket, prefix, after, max).await
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<(ObjectEntry, HashMap<String, String>)>, ConnectorError> {
        match self.client.head_object().bucket(bucket).key(key).set_version_id(version.map(str::to_string)).send().await
        {
            Ok(h) => {
                let meta = h
                    .metadata()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                let e = ObjectEntry {
                    key: key.to_string(),
                    last_modified: time(h.last_modified()),
                    size: h.content_length().unwrap_or(0).max(0) as u64,
                    version: version.map(str::to_string),
                };
                Ok(Some((e, meta)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err(&format!("reading an object's metadata ({})", head_action(version)), e)),
        }
    }

    async fn tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<HashMap<String, String>, ConnectorError> {
        match self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(t) => Ok(t.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()),
            Err(e) if is_not_found(&e) => Ok(HashMap::new()),
            Err(e) => Err(err("reading an object's tags", e)),
        }
    }

    async fn versions(&self, bucket: &str, key: &str) -> Result<Vec<Version>, ConnectorError> {
        // The range listing of a one-key batch: prefix `key`, stopping once past it.
        let mut all = self.versions_of(bucket, std::slice::from_ref(&key.to_string()), 2, 1).await?;
        Ok(all.remove(key).unwrap_or_default())
    }

    /// One listing over the batch's key range (a batch is a run of neighbouring keys of the
    /// listing), instead of one request per key. Its pages are sized to what the caller expects
    /// to find, and double while the range goes on: a server renders every version of a page,
    /// and a page of 1,000 would run up to 1,000 versions past the range's end (a verification
    /// listing, which expects nothing, would return little else).
    async fn versions_of(
        &self,
        bucket: &str,
        keys: &[String],
        expected: usize,
        concurrency: usize,
    ) -> Result<HashMap<String, Vec<Version>>, ConnectorError> {
        let mut out: HashMap<String, Vec<Version>> = HashMap::new();
        let wanted: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        let (Some(first), Some(last)) = (keys.iter().min(), keys.iter().max()) else { return Ok(out) };
        let prefix: String = {
            let common = first.bytes().zip(last.bytes()).take_while(|(a, b)| a == b).count();
            let mut n = common;
            while !first.is_char_boundary(n) {
                n -= 1;
            }
            first[..n].to_string()
        };
        // The listing starts after the marker: any string below `first` will do, and the
        // keys between it and `first` are filtered out below.
        let mut marker: Option<String> = {
            let mut m = first.clone();
            m.pop();
            (!m.is_empty() && m.as_str() >= prefix.as_str()).then_some(m)
        };
        let mut version_marker: Option<String> = None;
        let (mut page, mut found, mut wasted) = (0usize, 0usize, false);
        loop {
            page = page_size(page, wasted, expected.saturating_sub(found));
            let r = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(&prefix)
                .set_key_marker(marker.clone())
                .set_version_id_marker(version_marker.clone())
                .max_keys(page as i32)
                .encoding_type(EncodingType::Url)
                .send()
                .await
                .map(url_decoded)
                .map_err(|e| err("listing the versions of a batch", e))?;
            let mut this_page = 0usize;
            for v in r.versions().iter().filter(|v| v.key().is_some_and(|k| wanted.contains(k))) {
                this_page += 1;
                out.entry(v.key().unwrap_or_default().to_string()).or_default().push(Version {
                    id: v.version_id().map(str::to_string),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    delete_marker: false,
                    lock: None,
                    last_modified: time(v.last_modified()),
                    latest: v.is_latest().unwrap_or(false),
                });
            }
            for m in r.delete_markers().iter().filter(|m| m.key().is_some_and(|k| wanted.contains(k))) {
                this_page += 1;
                out.entry(m.key().unwrap_or_default().to_string()).or_default().push(Version {
                    id: m.version_id().map(str::to_string),
                    size: 0,
                    delete_marker: true,
                    lock: None,
                    last_modified: time(m.last_modified()),
                    latest: m.is_latest().unwrap_or(false),
                });
            }
            found += this_page;
            wasted = this_page * 2 < page;
            let past = r.next_key_marker().is_some_and(|k| k > last.as_str());
            if !r.is_truncated().unwrap_or(false) || past {
                break;
            }
            marker = r.next_key_marker().map(str::to_string);
            version_marker = r.next_version_id_marker().map(str::to_string);
        }
        if self.lock_enabled(bucket).await {
            let heads: Vec<_> = out
                .iter()
                .flat_map(|(k, vs)| {
                    vs.iter()
                        .enumerate()
                        .filter(|(_, v)| !v.delete_marker)
                        .map(move |(i, v)| (k.clone(), i, v.id.clone()))
                })
                .map(|(k, i, id)| async move {
                    let lock = self.lock_of(bucket, &k, id.as_deref()).await;
                    (k, i, lock)
                })
                .collect();
            let locks: Vec<_> = futures::stream::iter(heads).buffer_unordered(concurrency.max(1)).collect().await;
            for (k, i, lock) in locks {
                if let Some(v) = out.get_mut(&k).and_then(|vs| vs.get_mut(i)) {
                    v.lock = lock?;
                }
            }
        }
        Ok(out)
    }

    async fn delete(
        &self,
        bucket: &str,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // A key with a character XML 1.0 cannot carry (a control character) makes the whole
        // `DeleteObjects` request malformed: every key of the batch failed with it, on every
        // run. Such keys go alone, by `DeleteObject`, whose key travels in the URL.
        if items.iter().any(|(k, _)| !xml_safe(k)) {
            let (odd, fine): (Vec<usize>, Vec<usize>) = (0..items.len()).partition(|&i| !xml_safe(&items[i].0));
            let mut out: Vec<Result<(), String>> = vec![Ok(()); items.len()];
            let rest: Vec<(String, Option<String>)> = fine.iter().map(|&i| items[i].clone()).collect();
            for (i, r) in fine.iter().zip(self.delete(bucket, &rest).await?) {
                out[*i] = r;
            }
            for i in odd {
                let (k, v) = &items[i];
                let r = self.client.delete_object().bucket(bucket).key(k).set_version_id(v.clone()).send().await;
                out[i] = match r {
                    Ok(_) => Ok(()),
                    Err(SdkError::ServiceError(e)) => Err(e.err().code().unwrap_or("error").to_string()),
                    // No answer: the outcome is unknown, as for a whole batch.
                    Err(e) => return Err(err("deleting an object", e)),
                };
            }
            return Ok(out);
        }
        let ids = items
            .iter()
            .map(|(k, v)| ObjectIdentifier::builder().key(k).set_version_id(v.clone()).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| ConnectorError::Invalid(e.to_string()))?;
        let r = self
            .client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| err("deleting objects", e))?;
        let mut out: Vec<Result<(), String>> = vec![Ok(()); items.len()];
        for e in r.errors() {
            // An error that names the key but no version id (moto's, e.g. `AccessDenied` for the
            // whole request) fails every version of that key asked for: never counted deleted.
            let hit = |(k, v): &(String, Option<String>)| {
                Some(k.as_str()) == e.key()
                    && (v.is_none() || e.version_id().is_none_or(str::is_empty) || v.as_deref() == e.version_id())
            };
            for (i, item) in items.iter().enumerate() {
                if hit(item) {
                    out[i] = Err(e.code().unwrap_or("error").to_string());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{add_page, page_size, url_decoded, xml_safe};
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::primitives::DateTime;
    use aws_sdk_s3::types::{DeleteMarkerEntry, EncodingType, ObjectVersion};

    /// Keys of a listing asked for with `encoding-type=url` are decoded as the AWS SDKs for
    /// Python and Ruby decode them (`+` a space, `%2B` a plus), only when the server encoded.
    #[test]
    fn url_encoded_listings_are_decoded() {
        let page = |enc: Option<EncodingType>| {
            ListObjectVersionsOutput::builder()
                .set_encoding_type(enc)
                .versions(ObjectVersion::builder().key("u/c+d%2Be%01.csv").build())
                .delete_markers(DeleteMarkerEntry::builder().key("u/%C3%B6.csv").build())
                .next_key_marker("u/c+d")
                .build()
        };
        let r = url_decoded(page(Some(EncodingType::Url)));
        assert_eq!(r.versions()[0].key(), Some("u/c d+e\u{1}.csv"));
        assert_eq!(r.delete_markers()[0].key(), Some("u/\u{f6}.csv"));
        assert_eq!(r.next_key_marker(), Some("u/c d"));
        let raw = url_decoded(page(None));
        assert_eq!(raw.versions()[0].key(), Some("u/c+d%2Be%01.csv"), "not encoded: left as it is");
        assert!(xml_safe("u/a b+c.csv") && xml_safe("tab\there") && !xml_safe("b\u{1}") && !xml_safe("a\nb"));
    }

    #[test]
    fn a_page_resumed_after_a_key_leaves_that_key_out() {
        // What Ceph RGW (16.2) answers to `key-marker=b` without a version marker: b's versions
        // first. S3 starts after b; both must give the same entries.
        let v = |k: &str, secs: i64, size: i64| {
            ObjectVersion::builder().key(k).last_modified(DateTime::from_secs(secs)).size(size).build()
        };
        let page = ListObjectVersionsOutput::builder()
            .versions(v("b", 10, 1))
            .versions(v("b", 20, 2))
            .versions(v("c", 30, 3))
            .versions(v("c", 40, 4))
            .delete_markers(DeleteMarkerEntry::builder().key("b").build())
            .delete_markers(DeleteMarkerEntry::builder().key("d").build())
            .build();
        let mut after_b = std::collections::BTreeMap::new();
        add_page(&mut after_b, &page, Some("b"));
        let keys: Vec<_> = after_b.values().map(|l| (l.entry.key.as_str(), l.entry.size)).collect();
        assert_eq!(keys, [("c", 4), ("d", 0)], "the newest data version per key, none of b");
        let mut from_start = std::collections::BTreeMap::new();
        add_page(&mut from_start, &page, None);
        assert_eq!(from_start.keys().map(String::as_str).collect::<Vec<_>>(), ["b", "c", "d"]);
        assert_eq!(from_start["b"].entry.size, 2);
    }

    /// A key left with delete markers only is dated by its newest marker (a `last_modified`
    /// anchor can judge it); a key with data keeps its newest data version's date.
    #[test]
    fn a_key_with_markers_only_is_dated_by_its_newest_marker() {
        let page = ListObjectVersionsOutput::builder()
            .versions(ObjectVersion::builder().key("a").last_modified(DateTime::from_secs(10)).size(3).build())
            .delete_markers(DeleteMarkerEntry::builder().key("a").last_modified(DateTime::from_secs(20)).build())
            .delete_markers(DeleteMarkerEntry::builder().key("b").last_modified(DateTime::from_secs(30)).build())
            .delete_markers(DeleteMarkerEntry::builder().key("b").last_modified(DateTime::from_secs(40)).build())
            .build();
        let mut listed = std::collections::BTreeMap::new();
        add_page(&mut listed, &page, None);
        let entries: Vec<_> = listed.into_values().map(super::Listed::into_entry).collect();
        let secs: Vec<_> = entries.iter().map(|e| (e.key.as_str(), e.last_modified.map(|t| t.timestamp()))).collect();
        assert_eq!(secs, [("a", Some(10)), ("b", Some(40))]);
    }

    #[test]
    fn range_listing_pages_fit_what_is_expected() {
        // A re-read of 1,000 objects expected to have 1,250 versions: a full page, then the rest.
        assert_eq!(page_size(0, false, 1250), 1000);
        assert_eq!(page_size(1000, false, 250), 281);
        // A verification listing expects nothing: small pages, doubling while the range goes on.
        assert_eq!(page_size(0, false, 0), 32);
        assert_eq!(page_size(32, true, 0), 64);
        assert_eq!(page_size(512, true, 0), 1000);
        // More versions than expected (objects still there, or a key with many versions):
        // pages grow, so a long range is never read 32 at a time.
        assert_eq!(page_size(281, false, 0), 562);
        assert_eq!(page_size(32, false, 0), 64);
        assert_eq!(page_size(100, true, 500), 547);
        assert_eq!(page_size(100, false, 500), 547);
    }
}
