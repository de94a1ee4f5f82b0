//! Object storage as a dataset: S3 buckets ([`s3`]) and local directories ([`local`]).
//!
//! An object's *facts* (key, last-modified time, a date or subject in its key, user metadata,
//! tags) play the role of columns: the engine's [`Filter`]s are evaluated here, in Rust, over
//! them. Objects whose facts cannot be read are never destroyed. Destroying an object removes
//! every version and delete marker of its key; versions under an S3 Object Lock (legal hold or
//! unexpired retention) are kept and reported as held by storage — there is no bypass.

pub mod local;
pub mod s3;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures::StreamExt;

use crate::connector::{
    BatchOutcome, Candidate, ColumnInfo, ColumnKind, Connector, ConnectorError, EvidenceId, Filter, JournalCtx, Scope,
    TableInfo,
};
use crate::policy::ObjectDataset;
use crate::value::Value;

// ---- key patterns and facts ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Year,
    Month,
    Day,
    Subject,
    Any,
}

/// Per-key errors of a delete that say the storage refused it, so did nothing to the object
/// (its write-ahead intent may be voided); any other leaves the outcome unknown. `Refused` is
/// the code a backend gives when it knows it did nothing (the directory store: an unlink refused
/// for permission, a read-only file system, a directory or a busy file, or a key outside the
/// root; its other errors, such as `EIO` on NFS, leave the outcome unknown).
const REFUSALS: [&str; 10] = [
    "Refused",
    "AccessDenied",
    "InvalidArgument",
    "InvalidRequest",
    "NoSuchBucket",
    "NoSuchVersion",
    "MethodNotAllowed",
    "ObjectLocked",
    "InvalidObjectState",
    "AllAccessDisabled",
];

/// Whether a per-key delete error says the storage did nothing to the object.
pub fn is_refusal(code: &str) -> bool {
    REFUSALS.iter().any(|c| code.starts_with(c))
}

/// A key pattern such as `exports/{yyyy}/{mm}/{dd}/{subject}.csv`. Placeholders: `{yyyy}`,
/// `{mm}`, `{dd}` (digits), `{subject}` and `{*}` (any characters except `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    parts: Vec<Part>,
    text: String,
}

/// What a key pattern yields for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    pub date: Option<NaiveDate>,
    pub subject: Option<String>,
}

impl KeyPattern {
    pub fn parse(text: &str) -> Result<KeyPattern, String> {
        let err = |m: &str| format!("invalid key pattern '{text}': {m}");
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(err("unclosed '{'"));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(parts.last(), Some(p) if *p != Part::Lit(String::new()) && !matches!(p, Part::Lit(_))) {
                        return Err(err("two placeholders must be separated by literal text"));
                    }
                    let part = match name.as_str() {
                        "yyyy" => Part::Year,
                        "mm" => Part::Month,
                        "dd" => Part::Day,
                        "subject" => Part::Subject,
                        "*" => Part::Any,
                        "" => return Err(err("empty or unclosed placeholder")),
                        other => {
                            return Err(err(&format!(
                                "unknown placeholder '{{{other}}}' (use {{yyyy}}, {{mm}}, {{dd}}, {{subject}}, {{*}})"
                            )))
                        }
                    };
                    if part != Part::Any && !seen.insert(name.clone()) {
                        return Err(err(&format!("placeholder '{{{name}}}' appears twice")));
                    }
                    parts.push(part);
                }
                '}' => return Err(err("'}' without '{'")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if (seen.contains("mm") || seen.contains("dd")) && !seen.contains("yyyy") {
            return Err(err("{mm} and {dd} need {yyyy}"));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Lit(_))) {
            return Err(err("no placeholder"));
        }
        Ok(KeyPattern { parts, text: text.to_string() })
    }

    /// The literal text before the first placeholder (the listing prefix).
    pub fn literal_prefix(&self) -> String {
        match self.parts.first() {
            Some(Part::Lit(s)) => s.clone(),
            _ => String::new(),
        }
    }

    pub fn has_date(&self) -> bool {
        self.parts.contains(&Part::Year)
    }

    pub fn has_subject(&self) -> bool {
        self.parts.contains(&Part::Subject)
    }

    /// Matches a whole key. `None` when the key does not have the pattern's shape, holds an
    /// impossible date, or can be read in two ways that give different facts: a `{subject}`
    /// or `{*}` may contain the literal after it (`{subject}-{*}.pdf` over
    /// `550e8400-e29b-….pdf`), and reading only up to its first occurrence gave a subject cut
    /// short, which no hold names: the object was destroyed under a hold of its subject. Such
    /// a key is unreadable instead (kept, and counted). A key read one way only is read that
    /// way wherever the literal falls (`{subject}.csv` over `a.csv.csv`: subject `a.csv`).
    pub fn matches(&self, key: &str) -> Option<KeyFacts> {
        let mut found = Found::Nothing;
        let mut budget = MATCH_STEPS;
        self.walk(0, key, Partial::default(), &mut found, &mut budget);
        match found {
            Found::One(f) => Some(f),
            Found::Nothing | Found::Ambiguous => None,
        }
    }

    /// Every way the parts from `i` on match `rest`, given what the parts before found, into
    /// `found` (stopping at the second distinct one, or when `budget` steps are spent: a
    /// pattern such as `{*}a{*}a{*}b` over a long run of `a`s has very many ways to fail).
    fn walk<'k>(&self, i: usize, rest: &'k str, acc: Partial<'k>, found: &mut Found, budget: &mut usize) {
        if matches!(found, Found::Ambiguous) {
            return;
        }
        if *budget == 0 {
            *found = Found::Ambiguous;
            return;
        }
        *budget -= 1;
        let Some(part) = self.parts.get(i) else {
            if !rest.is_empty() {
                return;
            }
            let date = match acc.y {
                // `0000`: a placeholder for "no date", no year of the calendar.
                Some(0) => return,
                // A key that names only part of its date stands for every day of that part:
                // it is anchored on the latest of them, so that its purpose never lapses early
                // (a December invoice under `{yyyy}/` is not anchored on 1 January, 11 months
                // before its retention ends; `{yyyy}` and `{dd}` without `{mm}`: December's).
                Some(y) => {
                    let m = acc.m.unwrap_or(12);
                    let last_of_month = || {
                        NaiveDate::from_ymd_opt(y + i32::from(m == 12), m % 12 + 1, 1)
                            .and_then(|first| first.pred_opt())
                            .map(|d| d.day())
                    };
                    match acc.d.or_else(last_of_month).and_then(|d| NaiveDate::from_ymd_opt(y, m, d)) {
                        Some(d) => Some(d),
                        None => return,
                    }
                }
                None => None,
            };
            let facts = KeyFacts { date, subject: acc.subject.map(str::to_string) };
            *found = match std::mem::replace(found, Found::Nothing) {
                Found::Nothing => Found::One(facts),
                Found::One(f) if f == facts => Found::One(f),
                _ => Found::Ambiguous,
            };
            return;
        };
        match part {
            Part::Lit(l) => {
                if let Some(r) = rest.strip_prefix(l.as_str()) {
                    self.walk(i + 1, r, acc, found, budget);
                }
            }
            Part::Year | Part::Month | Part::Day => {
                let n = if *part == Part::Year { 4 } else { 2 };
                let Some(digits) = rest.get(..n) else { return };
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return;
                }
                let Ok(v) = digits.parse::<u32>() else { return };
                let mut acc = acc;
                match part {
                    Part::Year => acc.y = Some(v as i32),
                    Part::Month => acc.m = Some(v),
                    _ => acc.d = Some(v),
                }
                self.walk(i + 1, &rest[n..], acc, found, budget);
            }
            Part::Subject | Part::Any => {
                // A value is not empty and holds no `/`; it ends where the next literal
                // (placeholders are always separated by one) begins, at any of its occurrences.
                let limit = rest.find('/').unwrap_or(rest.len());
                let take = |end: usize, found: &mut Found, budget: &mut usize| {
                    let mut acc = acc.clone();
                    if *part == Part::Subject {
                        acc.subject = Some(&rest[..end]);
                    }
                    self.walk(i + 1, &rest[end..], acc, found, budget);
                };
                match self.parts.get(i + 1) {
                    Some(Part::Lit(next)) => {
                        let mut from = rest.chars().next().map_or(1, char::len_utf8);
                        while let Some(at) = rest.get(from..).and_then(|r| r.find(next.as_str())) {
                            let end = from + at;
                            if end > limit {
                                break;
                            }
                            take(end, found, budget);
                            from = end + rest[end..].chars().next().map_or(1, char::len_utf8);
                        }
                    }
                    _ => {
                        if !rest.is_empty() && limit == rest.len() {
                            take(rest.len(), found, budget);
                        }
                    }
                }
            }
        }
    }
}

/// The steps one key's match may take before it is called ambiguous (unreadable): far more than
/// any key of a sensible pattern needs (one step per part and per occurrence of a literal).
const MATCH_STEPS: usize = 10_000;

/// What the parts of a key pattern matched so far.
#[derive(Clone, Default)]
struct Partial<'k> {
    y: Option<i32>,
    m: Option<u32>,
    d: Option<u32>,
    subject: Option<&'k str>,
}

/// The facts of the ways a key matched: none, one, or two that differ.
enum Found {
    Nothing,
    One(KeyFacts),
    Ambiguous,
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where a fact about an object comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    LastModified,
    /// The date in the key (`key_pattern` with `{yyyy}`).
    KeyDate,
    /// The `{subject}` of the key pattern (subject only).
    KeySubject,
    Metadata(String),
    Tag(String),
}

impl Fact {
    /// Parses an anchor (`last_modified`, `key_date`, `metadata:<name>`, `tag:<name>`) or, with
    /// `subject`, a subject source (`key`, `metadata:<name>`, `tag:<name>`).
    pub fn parse(s: &str, subject: bool) -> Result<Fact, String> {
        let name_ok = |n: &str| {
            !n.is_empty() && n.len() <= 128 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let f = match s.split_once(':') {
            Some(("metadata", n)) if name_ok(n) => Fact::Metadata(n.to_ascii_lowercase()),
            Some(("tag", n)) if name_ok(n) => Fact::Tag(n.to_string()),
            None if s == "last_modified" && !subject => Fact::LastModified,
            None if s == "key_date" && !subject => Fact::KeyDate,
            None if s == "key" && subject => Fact::KeySubject,
            _ => {
                return Err(if subject {
                    format!("invalid object subject '{s}' (use key, metadata:<name> or tag:<name>)")
                } else {
                    format!("invalid object anchor '{s}' (use last_modified, key_date, metadata:<name> or tag:<name>)")
                })
            }
        };
        Ok(f)
    }
}

pub fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !b.starts_with(['-', '.'])
}

// ---- the backend seam ---------------------------------------------------------------------------

/// One listed object (its current version).
#[derive(Debug, Clone)]
pub struct ObjectEntry {
    pub key: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: u64,
    /// The version whose facts (metadata, tags) are read. As listed: a hidden object's newest
    /// data version (asked without a version, the store answers for its delete marker: not
    /// found), `None` for a visible one (its current version). At the re-check before deletion:
    /// the version judged, so that one written since is not read in its place.
    pub version: Option<String>,
}

/// One version (or delete marker) of a key.
#[derive(Debug, Clone)]
pub struct Version {
    /// `None` on an unversioned store.
    pub id: Option<String>,
    pub size: u64,
    pub delete_marker: bool,
    /// Object Lock state preventing deletion, e.g. `legal-hold` or `COMPLIANCE until 2030-01-01`.
    pub lock: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
    /// The current version (or delete marker) of the key.
    pub latest: bool,
}

/// The newest of `versions` (in the store's listing order, newest first): the current one, else
/// the last modified; of two modified in the same second (S3 dates versions to the second), the
/// first listed. (`max_by_key` keeps the last of equals: the older version's facts were read.)
fn newest_version<'a>(versions: impl Iterator<Item = &'a Version>) -> Option<&'a Version> {
    versions.reduce(|best, v| if (v.latest, v.last_modified) > (best.latest, best.last_modified) { v } else { best })
}

/// The answer of [`ObjectBackend::try_lock`].
pub enum RunLock {
    /// Taken; the value holds it until dropped. With a [`Lease`] (S3): whether it still holds.
    Held(Box<dyn std::any::Any + Send>, Option<std::sync::Arc<Lease>>),
    /// Another worker holds it.
    Busy,
    /// The store has no lock that dies with its holder (S3).
    Unsupported,
}

/// A run lock that holds only while renewed (S3's lock object), as its renewal sees it: until
/// when it surely holds (a monotonic instant: the start of its last successful renewal plus the
/// lease), and why it was lost, if it was.
pub struct Lease {
    lease: std::time::Duration,
    valid_until: std::sync::Mutex<std::time::Instant>,
    lost: std::sync::Mutex<Option<&'static str>>,
}

impl Lease {
    /// A lease taken (its create sent) at `from`.
    pub fn new(lease: std::time::Duration, from: std::time::Instant) -> Lease {
        Lease { lease, valid_until: std::sync::Mutex::new(from + lease), lost: Default::default() }
    }

    /// Renewed by a write sent at `from`.
    pub fn renewed(&self, from: std::time::Instant) {
        let mut until = self.valid_until.lock().expect("lease");
        *until = (*until).max(from + self.lease);
    }

    /// The lock no longer surely holds, for `why`: renewing stops, and so does the policy.
    pub fn lose(&self, why: &'static str) {
        self.lost.lock().expect("lease").get_or_insert(why);
    }

    /// Whether (and why) the lock was lost.
    pub fn lost(&self) -> Option<&'static str> {
        *self.lost.lock().expect("lease")
    }

    /// Whether the lease has run out: nothing may be renewed after that (another worker may
    /// have taken the lock over).
    pub fn expired(&self) -> bool {
        std::time::Instant::now() >= *self.valid_until.lock().expect("lease")
    }

    /// Ok while the lock surely holds for a third of its lease more (time for a batch); an
    /// error, which stops the policy before its next batch, once it was lost or no renewal has
    /// succeeded for two thirds of the lease.
    pub fn check(&self) -> Result<(), ConnectorError> {
        let context = "checking the run lock".to_string();
        if let Some(why) = self.lost() {
            return Err(ConnectorError::Query {
                context,
                message: format!("the run lock was lost ({why}): stopping before the next batch"),
            });
        }
        let left = self.valid_until.lock().expect("lease").saturating_duration_since(std::time::Instant::now());
        if left < self.lease / 3 {
            return Err(ConnectorError::Query {
                context,
                message: format!(
                    "the run lock's lease could not be renewed and ends in {} s (another worker may take it over then): stopping before the next batch",
                    left.as_secs()
                ),
            });
        }
        Ok(())
    }
}

/// A storage backend for objects: listing, facts, versions, deletion.
#[async_trait]
pub trait ObjectBackend: Send + Sync + fmt::Display {
    /// How many entries the listings since the last call met that no key can name (a
    /// directory's names that are not UTF-8), each once; forgets them.
    fn take_unnamed(&self) -> u64 {
        0
    }
    /// A run lock that dies with the process, where the store has one.
    async fn try_lock(&self, _bucket: &str, _name: &str) -> Result<RunLock, ConnectorError> {
        Ok(RunLock::Unsupported)
    }
    /// Fails with `NotFound` for an unknown bucket/directory.
    async fn check(&self, bucket: &str) -> Result<(), ConnectorError>;
    /// A page of objects under `prefix` in key order, strictly after `after`.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ObjectEntry>, bool), ConnectorError>;
    /// A version's facts (the current version's without one): last-modified and user metadata.
    /// `None` when gone.
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<(ObjectEntry, HashMap<String, String>)>, ConnectorError>;
    /// A version's tags (the current version's without one).
    async fn tags(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<HashMap<String, String>, ConnectorError>;
    /// Every version and delete marker of exactly `key`, with lock state.
    async fn versions(&self, bucket: &str, key: &str) -> Result<Vec<Version>, ConnectorError>;
    /// Every version of each of `keys` (in key order), by key; a key without versions is
    /// absent. `expected` is how many versions the caller expects to find (a guess that sizes
    /// a listing's pages, never a limit: 0 when checking that the keys are gone). The default
    /// asks [`ObjectBackend::versions`] for each key, `concurrency` at a time; a store that can
    /// list a range of keys at once does better.
    async fn versions_of(
        &self,
        bucket: &str,
        keys: &[String],
        expected: usize,
        concurrency: usize,
    ) -> Result<HashMap<String, Vec<Version>>, ConnectorError> {
        let _ = expected;
        let futs: Vec<_> = keys.iter().map(|k| async move { (k.clone(), self.versions(bucket, k).await) }).collect();
        let all: Vec<_> = futures::stream::iter(futs).buffer_unordered(concurrency.max(1)).collect().await;
        let mut out = HashMap::new();
        for (k, v) in all {
            let v = v?;
            if !v.is_empty() {
                out.insert(k, v);
            }
        }
        Ok(out)
    }
    /// Deletes versions (up to 1000 per call); per item: `Err(code)` on failure.
    async fn delete(
        &self,
        bucket: &str,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), String>>, ConnectorError>;
    /// [`ObjectBackend::delete`] for a dataset whose keys start with `keep`, the deepest
    /// directory its prefix names (`app/uploads/` of `app/uploads/{yyyy}/{subject}.pdf`; empty:
    /// none): a store that removes the directories a deletion empties (a directory) keeps that
    /// one and those above it, which are not the dataset's. Default: `delete`.
    async fn delete_within(
        &self,
        bucket: &str,
        _keep: &str,
        items: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), String>>, ConnectorError> {
        self.delete(bucket, items).await
    }
}

/// The deepest directory a dataset's listing prefix names, `/` included (`logs/app-` names
/// `logs/`); empty when it names none.
fn prefix_dir(prefix: &str) -> &str {
    prefix.rfind('/').map(|i| &prefix[..=i]).unwrap_or("")
}

/// The deepest directory that is the dataset's own, kept when a deletion empties it: the
/// deeper of the listing prefix's (`prefix_dir`) and the key pattern's literal start's. A
/// `prefix:` written explicitly (`""` or `app/`) names less than `app/uploads/{yyyy}/{subject}.pdf`
/// does, and `app/uploads/` is still the dataset's (every key of it starts with both, so the
/// longer one is the deeper).
fn keep_dir(ds: &ObjectDataset) -> String {
    let of_prefix = prefix_dir(&ds.prefix);
    let of_pattern = ds.pattern.as_ref().map(|p| prefix_dir(&p.literal_prefix()).to_string()).unwrap_or_default();
    match of_pattern.len() > of_prefix.len() {
        true => of_pattern,
        false => of_prefix.to_string(),
    }
}

/// Why a batch's re-check keeps a due key whole, found in an older version's subject.
enum Kept {
    /// Named by these holds.
    Held(Vec<String>),
    /// Not readable: whether a hold names it is unknown.
    Unreadable,
}

/// A connector over an [`ObjectBackend`].
pub struct ObjectConnector {
    name: String,
    backend: Box<dyn ObjectBackend>,
    default_bucket: Option<String>,
    concurrency: usize,
    /// Run locks taken by `try_run_lock`, by name: what holds each, and its lease if it has one.
    #[allow(clippy::type_complexity)]
    run_locks: std::sync::Mutex<Vec<(String, Box<dyn std::any::Any + Send>, Option<std::sync::Arc<Lease>>)>>,
    /// The due objects each policy's count pass found, by [`due_memo_id`].
    due: std::sync::Mutex<HashMap<String, DueMemo>>,
    /// The version ids `destroy` deleted, by key, with the newest version it saw of the key,
    /// until `remaining` re-checks them: a version written since (the object uploaded again)
    /// is newer than any it saw.
    #[allow(clippy::type_complexity)]
    deleted: std::sync::Mutex<HashMap<String, (Vec<Option<String>>, Option<DateTime<Utc>>)>>,
    due_memo_max: usize,
}

/// At most this many due objects are remembered per policy (about 100 bytes each); beyond
/// them the batches list on from the last one remembered.
const DUE_MEMO_MAX: usize = 100_000;

/// The due objects (key, subject) a policy's count pass found, in key order, so that its
/// batches need not list the prefix again. Hints only: each batch re-reads its objects'
/// versions and re-evaluates the destroy filter before deleting anything (see `destroy`).
struct DueMemo {
    due: Vec<(String, Option<String>)>,
    /// The pass saw every due object (else: every one up to the last remembered).
    complete: bool,
}

/// What identifies a policy stage's due objects: policy, dataset and destroy filter (cutoff,
/// holds, shard part). A new count pass replaces the memo of the same id.
fn due_memo_id(scope: &Scope) -> String {
    format!("{}\n{:?}\n{:?}", scope.policy, scope.objects, scope.destroy_filter())
}

impl fmt::Display for ObjectConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.backend)
    }
}

/// The facts of one object, as the engine's filters see them.
#[derive(Debug, Clone, Default)]
struct Facts {
    key: String,
    anchors: HashMap<String, Option<DateTime<Utc>>>,
    subject: Option<String>,
    /// `holds::subject_keys` of `subject`, made at the first hold's test of this object and
    /// looked up by every hold after it (a holds table may give thousands).
    subject_keys: std::cell::OnceCell<Vec<String>>,
    subject_readable: bool,
    /// The key has the shape of the dataset's key pattern (or there is none). A key under the
    /// prefix that does not (`README.txt` beside `{*}.pdf`) is not the policy's to destroy,
    /// whatever its other facts: it is unreadable.
    in_pattern: bool,
}

impl ObjectConnector {
    pub fn new(
        name: &str,
        backend: Box<dyn ObjectBackend>,
        default_bucket: Option<String>,
        concurrency: usize,
    ) -> Self {
        ObjectConnector {
            name: name.to_string(),
            backend,
            default_bucket,
            concurrency: concurrency.max(1),
            run_locks: Default::default(),
            due: Default::default(),
            deleted: Default::default(),
            due_memo_max: DUE_MEMO_MAX,
        }
    }

    fn dataset<'a>(&'a self, scope: &'a Scope) -> Result<(&'a str, &'a ObjectDataset), ConnectorError> {
        let ds = scope
            .objects
            .as_ref()
            .ok_or_else(|| ConnectorError::Invalid(format!("connection '{}' holds objects, not tables", self.name)))?;
        let bucket = ds.bucket.as_deref().or(self.default_bucket.as_deref()).unwrap_or("");
        Ok((bucket, ds))
    }

    fn anchors(scope: &Scope) -> Vec<String> {
        let mut out = Vec::new();
        collect_anchors(&scope.lapse, &mut out);
        out
    }

    /// Reads the facts an object's filters need (HEAD and tags only when used).
    async fn facts(&self, scope: &Scope, entry: &ObjectEntry) -> Result<Facts, ConnectorError> {
        let (bucket, ds) = self.dataset(scope)?;
        let anchors = Self::anchors(scope);
        let subject_fact =
            scope.subject.as_deref().map(|s| Fact::parse(s, true)).transpose().map_err(ConnectorError::Invalid)?;
        let mut wanted: Vec<Fact> = anchors.iter().filter_map(|a| Fact::parse(a, false).ok()).collect();
        wanted.extend(subject_fact.clone());
        let key_facts = ds.pattern.as_ref().and_then(|p| p.matches(&entry.key));
        let needs_meta = wanted.iter().any(|f| matches!(f, Fact::Metadata(_)));
        let needs_tags = wanted.iter().any(|f| matches!(f, Fact::Tag(_)));
        let key = &entry.key;
        let meta = match needs_meta {
            true => self
                .backend
                .head(bucket, key, entry.version.as_deref())
                .await
                .map_err(|e| without_key(e, key))?
                .map(|(_, m)| m),
            false => None,
        };
        let tags = match needs_tags {
            true => {
                Some(self.backend.tags(bucket, key, entry.version.as_deref()).await.map_err(|e| without_key(e, key))?)
            }
            false => None,
        };
        let read = |f: &Fact| -> Option<String> {
            match f {
                Fact::LastModified => entry.last_modified.map(|t| t.to_rfc3339()),
                Fact::KeyDate => key_facts.as_ref()?.date.map(|d| d.format("%Y-%m-%d").to_string()),
                Fact::KeySubject => key_facts.as_ref()?.subject.clone(),
                Fact::Metadata(n) => meta.as_ref()?.get(n).cloned(),
                Fact::Tag(n) => tags.as_ref()?.get(n).cloned(),
            }
        };
        let in_pattern = ds.pattern.is_none() || key_facts.is_some();
        let mut facts = Facts { key: entry.key.clone(), in_pattern, ..Default::default() };
        for a in anchors {
            let t = Fact::parse(&a, false).ok().and_then(|f| read(&f)).and_then(|s| crate::holds::parse_time(&s).ok());
            facts.anchors.insert(a, t);
        }
        match &subject_fact {
            Some(f) => {
                facts.subject = read(f);
                facts.subject_readable = facts.subject.is_some();
            }
            None => facts.subject_readable = true,
        }
        Ok(facts)
    }

    fn readable(f: &Facts) -> bool {
        f.in_pattern && f.subject_readable && f.anchors.values().all(Option::is_some)
    }

    fn eval(f: &Filter, facts: &Facts, scope: &Scope) -> bool {
        match f {
            Filter::True => true,
            Filter::Lapsed(rule) => {
                // Unknown facts never lapse, whatever `null_anchor` says: unreadable objects are
                // reported, never destroyed.
                matches!(facts.anchors.get(&rule.anchor), Some(Some(t)) if *t <= rule.threshold)
                    && Self::readable(facts)
            }
            Filter::AnchorNull(a) => matches!(facts.anchors.get(a), Some(None)),
            // Unknown facts are reported as unreadable.
            Filter::AnchorNeverLapses(_) => false,
            Filter::Unreadable => !Self::readable(facts),
            Filter::All(v) => v.iter().all(|x| Self::eval(x, facts, scope)),
            Filter::Any(v) => v.iter().any(|x| Self::eval(x, facts, scope)),
            Filter::Not(x) => !Self::eval(x, facts, scope),
            // File holds, and the holds-table holds of the run's SQL connections (an object
            // store has no holds table of its own).
            Filter::Held => scope.holds.file.iter().chain(&scope.holds.tables).any(|h| Self::held_by(h, facts)),
            Filter::HeldByFile(id) => scope.holds.file.iter().any(|h| &h.id == id && Self::held_by(h, facts)),
            Filter::Pending(_) => true,
            Filter::HasDependents => false,
            Filter::KeyShard { index, count, .. } => {
                crate::shard::key_hash(&facts.key) % u64::from(*count) == u64::from(*index)
            }
        }
    }

    /// The ids of the holds (file and holds tables) that hold an object of these facts.
    fn holds_of(&self, scope: &Scope, facts: &Facts) -> Vec<String> {
        let mut ids: Vec<String> = scope
            .holds
            .file
            .iter()
            .chain(&scope.holds.tables)
            .filter(|h| Self::held_by(h, facts))
            .map(|h| h.id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// A hold's subject names an object's however either is written (`crate::holds::same_subject`:
    /// `961` a key's `0961`, a uuid in capitals, `s-1` `S-1`): the holds table's column may be a
    /// number, a uuid or a case-insensitive text, which SQL policies compare through the
    /// database. Leniency may only hold more, never less.
    fn held_by(h: &crate::connector::FileHold, facts: &Facts) -> bool {
        h.whole_policy
            || facts
                .subject
                .as_ref()
                .is_some_and(|s| h.holds_any_of(facts.subject_keys.get_or_init(|| crate::holds::subject_keys(s))))
    }

    /// Streams the listing, evaluating `f` on each object; calls `each` for matches until it
    /// returns false. Memory is bounded by one listing page.
    async fn scan<F>(&self, scope: &Scope, f: &Filter, after: Option<&str>, mut each: F) -> Result<(), ConnectorError>
    where
        F: FnMut(&Facts) -> bool + Send,
    {
        let (bucket, ds) = self.dataset(scope)?;
        let mut cursor = after.map(str::to_string);
        loop {
            let (page, more) = self.backend.list(bucket, &ds.prefix, cursor.as_deref(), 1000).await?;
            crate::progress::touch();
            let Some(last) = page.last() else { break };
            cursor = Some(last.key.clone());
            let futs: Vec<_> = page.iter().map(|e| self.facts(scope, e)).collect();
            let facts: Vec<Result<Facts, ConnectorError>> =
                futures::stream::iter(futs).buffered(self.concurrency).collect().await;
            for fa in facts {
                let fa = fa?;
                if Self::eval(f, &fa, scope) && !each(&fa) {
                    return Ok(());
                }
            }
            if !more {
                break;
            }
        }
        Ok(())
    }
}

/// A batch's `DeleteObjects` calls in flight at once (at most; the connection's `concurrency`
/// if lower). Measured on Ceph RGW (BENCHMARKS.md, S3): eight at a time made the server spend
/// 20-70 % more CPU on the same deletes than four, and the run took longer.
const DELETE_CALLS_IN_FLIGHT: usize = 4;

/// The size of a batch's `DeleteObjects` calls for `n` versions, `in_flight` calls at a time:
/// as even as the limit of 1,000 keys per call allows, so that the last calls do not run alone
/// (a server such as Ceph RGW deletes a call's keys one after another: 6,000 versions in calls
/// of 1,000, four at a time, left two calls running alone for the second half of the batch),
/// and never under 100 keys, so that a small batch is not spread over many requests.
fn delete_chunk(n: usize, in_flight: usize) -> usize {
    let calls = n.div_ceil(1000).next_multiple_of(in_flight.max(1));
    n.div_ceil(calls).clamp(100, 1000)
}

/// A batch's `DeleteObjects` calls: `items` (a key's versions next to each other, `key` naming
/// the key of one) cut into calls of about `delete_chunk` items, between keys, so that the
/// versions of one key go in one call: calls run at once, and a server that edits a key's list
/// of versions by reading and rewriting it (moto does) loses one call's deletions when two
/// calls rewrite the same key together. Only a key with more than 1,000 versions (S3's limit
/// per call) spans calls.
fn delete_calls<T>(items: Vec<T>, key: impl Fn(&T) -> usize, in_flight: usize) -> Vec<Vec<T>> {
    if items.is_empty() {
        return Vec::new();
    }
    let target = delete_chunk(items.len(), in_flight);
    let mut calls: Vec<Vec<T>> = Vec::new();
    let mut call: Vec<T> = Vec::new();
    let mut items = items.into_iter().peekable();
    while let Some(first) = items.next() {
        let k = key(&first);
        let mut run = vec![first];
        while let Some(next) = items.next_if(|n| key(n) == k) {
            run.push(next);
        }
        if call.len() + run.len() > 1000 && !call.is_empty() {
            calls.push(std::mem::take(&mut call));
        }
        for v in run {
            if call.len() == 1000 {
                calls.push(std::mem::take(&mut call));
            }
            call.push(v);
        }
        if call.len() >= target {
            calls.push(std::mem::take(&mut call));
        }
    }
    if !call.is_empty() {
        calls.push(call);
    }
    calls
}

fn collect_anchors(f: &Filter, out: &mut Vec<String>) {
    match f {
        Filter::Lapsed(r) if !out.contains(&r.anchor) => out.push(r.anchor.clone()),
        Filter::All(v) | Filter::Any(v) => v.iter().for_each(|x| collect_anchors(x, out)),
        Filter::Not(x) => collect_anchors(x, out),
        _ => {}
    }
}

/// Strips a key from a storage error message: keys often hold names or e-mail addresses.
fn scrub(msg: &str, key: &str) -> String {
    if key.is_empty() {
        msg.to_string()
    } else {
        msg.replace(key, "<key>")
    }
}

/// `scrub` for every key of a batch.
fn scrub_all(msg: &str, keys: &[String]) -> String {
    keys.iter().fold(msg.to_string(), |m, k| scrub(&m, k))
}

/// An error about objects, under `context`, with none of `keys` in its message, and as
/// transient as it was (a 503 or a dropped connection is retried).
fn scrub_errors(e: ConnectorError, context: &str, keys: &[String]) -> ConnectorError {
    let message = scrub_all(&e.to_string(), keys);
    let context = context.to_string();
    match e.is_transient() {
        true => ConnectorError::Lost { context, message },
        false => ConnectorError::Query { context, message },
    }
}

/// An error about one object, without its key (keys hold personal data).
fn without_key(e: ConnectorError, key: &str) -> ConnectorError {
    match e {
        ConnectorError::Query { context, message } => ConnectorError::Query { context, message: scrub(&message, key) },
        ConnectorError::Lost { context, message } => ConnectorError::Lost { context, message: scrub(&message, key) },
        ConnectorError::Invalid(m) => ConnectorError::Invalid(scrub(&m, key)),
        other => other,
    }
}

#[async_trait]
impl Connector for ObjectConnector {
    /// A lock object's lease (S3) must still hold for a while (`Lease::check`): once it was lost
    /// or no renewal has succeeded for two thirds of it, the policy stops before its next batch
    /// (before, a failed renewal only warned, and a worker went on destroying past its lease,
    /// when another may have taken the lock over). A lock file holds until the process ends.
    async fn run_lock_alive(&self, name: &str) -> Result<(), ConnectorError> {
        let locks = self.run_locks.lock().expect("run locks");
        match locks.iter().find(|(n, _, _)| n == name) {
            Some((_, _, Some(lease))) => lease.check(),
            _ => Ok(()),
        }
    }

    async fn try_run_lock(&self, name: &str, objects: Option<&ObjectDataset>) -> Result<bool, ConnectorError> {
        let bucket = objects.and_then(|o| o.bucket.as_deref()).or(self.default_bucket.as_deref()).unwrap_or("");
        match self.backend.try_lock(bucket, name).await? {
            RunLock::Held(h, lease) => {
                self.run_locks.lock().expect("run locks").push((name.to_string(), h, lease));
                Ok(true)
            }
            RunLock::Busy => Ok(false),
            RunLock::Unsupported => {
                tracing::warn!(
                    connection = %self.name,
                    "object store without a run lock: rely on the CronJob's concurrencyPolicy (deleting a version twice is harmless)"
                );
                Ok(true)
            }
        }
    }

    /// `table` is `bucket/prefix`, or `/prefix` on the connection's default bucket (validation
    /// asks so for a dataset without a bucket: its prefix may hold a `/` itself, which was read
    /// as a bucket's end, `unknown bucket 'exports'` for `exports/2020/`).
    async fn describe(&self, table: &str) -> Result<TableInfo, ConnectorError> {
        let (bucket, table) = match table.split_once('/') {
            Some(("", prefix)) => (self.default_bucket.clone().unwrap_or_default(), prefix),
            Some((b, _)) if self.default_bucket.is_none() || !b.is_empty() => (b.to_string(), table),
            _ => (self.default_bucket.clone().unwrap_or_default(), table),
        };
        self.backend.check(&bucket).await?;
        let col = |name: &str, kind: ColumnKind| ColumnInfo {
            name: name.into(),
            kind,
            instant: kind.is_temporal(),
            sql_type: "fact".into(),
            nullable: true,
            max_len: None,
            generated: false,
            unique: false,
            on_update: false,
        };
        Ok(TableInfo {
            name: table.to_string(),
            columns: vec![col("key", ColumnKind::Text), col("last_modified", ColumnKind::Timestamp { tz: true })],
            primary_key: vec!["key".into()],
            referenced_by: vec![],
        })
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<u64, ConnectorError> {
        let mut n = 0u64;
        self.scan(scope, filter, None, |_| {
            n += 1;
            true
        })
        .await?;
        Ok(n)
    }

    /// One listing of the prefix for all of them; it also remembers the due objects (see
    /// [`DueMemo`]) for [`Connector::candidates`].
    async fn counts(&self, scope: &Scope, filters: &[Filter]) -> Result<Vec<u64>, ConnectorError> {
        let mut n = vec![0u64; filters.len()];
        let destroy = scope.destroy_filter();
        let mut memo = DueMemo { due: Vec::new(), complete: true };
        self.backend.take_unnamed();
        self.scan(scope, &Filter::True, None, |f| {
            for (i, filter) in filters.iter().enumerate() {
                if Self::eval(filter, f, scope) {
                    n[i] += 1;
                }
            }
            if memo.complete && Self::eval(&destroy, f, scope) {
                if memo.due.len() < self.due_memo_max {
                    memo.due.push((f.key.clone(), f.subject.clone()));
                } else {
                    memo.complete = false;
                }
            }
            true
        })
        .await?;
        // Entries no key can name are never objects: kept, and counted as unreadable (of a
        // policy sharded by key, by shard 0 alone: every shard meets them).
        let unnamed = self.backend.take_unnamed();
        if unnamed > 0 {
            let unreadable = |f: &Filter| match f {
                Filter::Unreadable => true,
                Filter::All(parts) => {
                    matches!(parts.as_slice(), [Filter::KeyShard { index: 0, .. }, Filter::Unreadable])
                }
                _ => false,
            };
            let counted = filters.iter().any(unreadable);
            let at_least = if unnamed as usize >= local::MAX_UNNAMED { "at least " } else { "" };
            tracing::warn!(
                connection = %self.name,
                policy = %scope.policy,
                unnamed,
                "{at_least}{unnamed} files or directories under the dataset cannot be named or read (names that are not UTF-8, symbolic links, FIFOs or sockets, subtrees the walk cannot read): they are kept{}; rename, move or fix them",
                if counted { " and counted as unreadable" } else { "" }
            );
            for (i, f) in filters.iter().enumerate() {
                if unreadable(f) {
                    n[i] += unnamed;
                }
            }
        }
        self.due.lock().expect("due memo").insert(due_memo_id(scope), memo);
        Ok(n)
    }

    /// The holds-table holds of the run's SQL connections (`HoldScope::tables`): one listing
    /// of the prefix, each object matching `filter` counted under every such hold that holds it.
    async fn count_by_table_hold(&self, scope: &Scope, filter: &Filter) -> Result<Vec<(String, u64)>, ConnectorError> {
        let holds = &scope.holds.tables;
        if holds.is_empty() {
            return Ok(vec![]);
        }
        let mut n: BTreeMap<String, u64> = BTreeMap::new();
        self.scan(scope, filter, None, |f| {
            for h in holds.iter().filter(|h| Self::held_by(h, f)) {
                *n.entry(h.id.clone()).or_default() += 1;
            }
            true
        })
        .await?;
        Ok(n.into_iter().collect())
    }

    async fn candidates(
        &self,
        scope: &Scope,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Candidate>, ConnectorError> {
        let mut after = after.and_then(|a| a.first()).map(Value::canonical);
        let mut out = Vec::new();
        // From the count pass's memo when there is one: no listing at all, or a listing from
        // the last remembered due object on when the memo is full.
        if let Some(m) = self.due.lock().expect("due memo").get(&due_memo_id(scope)) {
            // The memo is in the backend's listing order, which is not string order everywhere
            // (a directory lists `a/2.log` before `a-b.log`): the previous batch's last key is
            // found by itself (a binary search by string order skipped due objects). A key
            // not in the memo came from a listing past it.
            let found = after.as_deref().map(|a| m.due.iter().position(|(k, _)| k == a));
            let start = match found {
                None => 0,
                Some(Some(i)) => i + 1,
                Some(None) => m.due.len(),
            };
            out.extend(
                m.due[start..]
                    .iter()
                    .take(limit)
                    .map(|(k, s)| Candidate { key: vec![Value::Text(k.clone())], subject: s.clone().map(Value::Text) }),
            );
            if out.len() >= limit || m.complete {
                return Ok(out);
            }
            if let Some((last, _)) = m.due.last() {
                if !matches!(found, Some(None)) {
                    after = Some(last.clone());
                }
            }
        }
        self.scan(scope, &scope.destroy_filter(), after.as_deref(), |f| {
            out.push(Candidate { key: vec![Value::Text(f.key.clone())], subject: f.subject.clone().map(Value::Text) });
            out.len() < limit
        })
        .await?;
        Ok(out)
    }

    async fn destroy(
        &self,
        scope: &Scope,
        batch: &[Candidate],
        _ids: &[EvidenceId],
        _journal: &JournalCtx,
    ) -> Result<BatchOutcome, ConnectorError> {
        let (bucket, ds) = self.dataset(scope)?;
        let keep = keep_dir(ds);
        let keep = keep.as_str();
        let filter = scope.destroy_filter();
        // 1. Re-check each object against the destroy filter (it may have been overwritten or
        //    put under a hold since it was listed), and gather its versions.
        let filter = &filter;
        let keys: Vec<String> = batch.iter().map(|c| c.key[0].canonical()).collect();
        // Transient stays transient (a 503, a dropped connection): the engine retries the batch.
        let scrubbed = |e: ConnectorError| scrub_errors(e, "checking objects", &keys);
        // A guess of a batch's versions (most objects have one or two): sizes the listing's pages.
        let expected = keys.len() + keys.len() / 4;
        let mut all_versions =
            self.backend.versions_of(bucket, &keys, expected, self.concurrency).await.map_err(scrubbed)?;
        let newest_seen: HashMap<String, Option<DateTime<Utc>>> = all_versions
            .iter()
            .map(|(k, vs)| (k.clone(), vs.iter().map(|v| v.last_modified).max().flatten()))
            .collect();
        // A subject read from metadata or tags is each version's own: the re-check reads every
        // data version's, for the holds (where a hold could name one: without file or
        // holds-table holds they change nothing, a whole-policy hold makes nothing due) and for
        // the evidence, which names the subjects of every version it destroys.
        let per_version_subject = scope
            .subject
            .as_deref()
            .is_some_and(|s| matches!(Fact::parse(s, true), Ok(Fact::Metadata(_) | Fact::Tag(_))));
        let subject_holds = !(scope.holds.file.is_empty() && scope.holds.tables.is_empty());
        let check_futs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let versions = all_versions.remove(key).unwrap_or_default();
                async move {
                    // Re-check with the facts of the newest data version: an object overwritten
                    // since it was listed is no longer due.
                    // A key left with delete markers only (its data gone, its name, which may
                    // name a person, still listed) is judged by its newest marker, as the
                    // listing saw it: before, it was due on every run and never removed.
                    let newest = newest_version(versions.iter().filter(|v| !v.delete_marker))
                        .or_else(|| newest_version(versions.iter()));
                    let Some(newest) = newest else { return Ok((i, key.clone(), None)) };
                    let entry = ObjectEntry {
                        key: key.clone(),
                        last_modified: newest.last_modified,
                        size: newest.size,
                        // The facts of exactly the version judged (one written since must not be
                        // read in its place), except an unversioned bucket's current `null`.
                        version: newest
                            .id
                            .clone()
                            .filter(|id| !newest.delete_marker && (!newest.latest || id != "null")),
                    };
                    let facts = self.facts(scope, &entry).await?;
                    if !Self::eval(filter, &facts, scope) {
                        return Ok((i, key.clone(), None));
                    }
                    // The subjects of its data versions, newest first, as read now (an object
                    // overwritten since the counts names its new subject).
                    let mut subjects: Vec<String> = Vec::new();
                    // A subject read from metadata or tags is each version's own: every version
                    // goes with the key, so a hold on the subject of any of them holds it whole.
                    if per_version_subject {
                        subjects.extend(facts.subject.clone());
                        let newest_id = newest.id.clone();
                        for v in versions.iter().filter(|v| !v.delete_marker && v.id.is_some() && v.id != newest_id) {
                            let older = ObjectEntry {
                                key: key.clone(),
                                last_modified: v.last_modified,
                                size: v.size,
                                version: v.id.clone(),
                            };
                            let facts = self.facts(scope, &older).await?;
                            if subject_holds {
                                // A version whose subject cannot be read may be a held one's:
                                // the key is kept whole, as an unreadable newest version keeps it.
                                if facts.subject.is_none() {
                                    return Ok((i, key.clone(), Some(Err(Kept::Unreadable))));
                                }
                                let held = self.holds_of(scope, &facts);
                                if !held.is_empty() {
                                    return Ok((i, key.clone(), Some(Err(Kept::Held(held)))));
                                }
                            }
                            if let Some(s) = facts.subject {
                                if !subjects.contains(&s) {
                                    subjects.push(s);
                                }
                            }
                        }
                    }
                    Ok::<_, ConnectorError>((i, key.clone(), Some(Ok((versions, subjects)))))
                }
            })
            .collect();
        let checks = futures::stream::iter(check_futs).buffer_unordered(self.concurrency).collect::<Vec<_>>().await;
        let mut outcome = BatchOutcome::default();
        let mut items: Vec<(usize, String, Option<String>, u64)> = Vec::new();
        let mut locked: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for r in checks {
            let (i, key, versions) = match r {
                Ok(x) => x,
                Err(e) => {
                    let (context, message) = ("checking objects".to_string(), scrub_all(&e.to_string(), &keys));
                    // Transient (a 503, a lost connection): the engine retries the batch.
                    return Err(if e.is_transient() {
                        ConnectorError::Lost { context, message }
                    } else {
                        ConnectorError::Query { context, message }
                    });
                }
            };
            let versions = match versions {
                None => continue,
                Some(Ok((v, subjects))) => {
                    if !subjects.is_empty() {
                        outcome.subjects.insert(i, subjects);
                    }
                    v
                }
                Some(Err(Kept::Held(held))) => {
                    outcome.held.push((i, held));
                    continue;
                }
                Some(Err(Kept::Unreadable)) => {
                    outcome.unreadable.push(i);
                    continue;
                }
            };
            // A key with a version under the storage's own hold is held whole: deleting its
            // other versions would destroy data while reporting the object held, and removing a
            // delete marker above a locked version would show the object again.
            let locks: Vec<String> = versions.iter().filter_map(|v| v.lock.clone()).collect();
            if !locks.is_empty() {
                locked.entry(i).or_default().extend(locks);
            } else {
                for v in versions {
                    items.push((i, key.clone(), v.id.clone(), if v.delete_marker { 0 } else { v.size }));
                }
            }
            outcome.details.entry(i).or_default();
        }
        // 2. Delete unlocked versions in calls of up to 1000 of even size, a key's versions in
        //    one call, a few calls at a time (see `delete_calls`); per-item failures are
        //    retried with backoff and jitter, then reported per object.
        let in_flight = self.concurrency.min(DELETE_CALLS_IN_FLIGHT);
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        // Items a whole call failed for on some attempt: the server may have deleted them.
        let mut unknown: BTreeSet<usize> = BTreeSet::new();
        let mut deleted: HashMap<String, (Vec<Option<String>>, Option<DateTime<Utc>>)> = HashMap::new();
        let mut pending = items;
        for attempt in 0..3 {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                let jitter: u64 = rand::random::<u64>() % 200;
                tokio::time::sleep(std::time::Duration::from_millis(200 * (1 << attempt) + jitter)).await;
            }
            pending.sort_by_key(|item| item.0); // a retry's items come in the order calls ended
            let chunks = delete_calls(std::mem::take(&mut pending), |item| item.0, in_flight);
            let delete_futs: Vec<_> = chunks
                .into_iter()
                .map(|chunk| async move {
                    let ids: Vec<(String, Option<String>)> =
                        chunk.iter().map(|(_, k, v, _)| (k.clone(), v.clone())).collect();
                    let r = self.backend.delete_within(bucket, keep, &ids).await;
                    (chunk, r)
                })
                .collect();
            let results = futures::stream::iter(delete_futs).buffer_unordered(in_flight).collect::<Vec<_>>().await;
            pending = Vec::new();
            for (chunk, r) in results {
                match r {
                    Ok(per_item) => {
                        for (item, res) in chunk.into_iter().zip(per_item) {
                            match res {
                                Ok(()) => {
                                    let d = outcome.details.entry(item.0).or_default();
                                    d.versions += 1;
                                    d.bytes += item.3;
                                    failed.remove(&item.0);
                                    let seen = newest_seen.get(&item.1).copied().flatten();
                                    deleted
                                        .entry(item.1.clone())
                                        .or_insert_with(|| (Vec::new(), seen))
                                        .0
                                        .push(item.2.clone());
                                }
                                Err(code) => {
                                    // Only a refusal says nothing was done for that key; any
                                    // other failure (a server error, a code-less one) leaves it
                                    // unknown, as a lost reply does.
                                    if !is_refusal(&code) {
                                        unknown.insert(item.0);
                                    }
                                    failed.insert(item.0, code);
                                    pending.push(item);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        for item in chunk {
                            unknown.insert(item.0);
                            failed.insert(item.0, scrub(&e.to_string(), &item.1));
                            pending.push(item);
                        }
                    }
                }
            }
        }
        for item in &pending {
            let msg = failed.get(&item.0).cloned().unwrap_or_else(|| "delete failed".into());
            outcome.failures.push((item.0, msg));
        }
        outcome.failures.sort();
        outcome.failures.dedup_by_key(|(i, _)| *i);
        outcome.unknown = unknown.into_iter().collect();
        for (i, locks) in locked {
            let mut l = locks;
            l.sort();
            l.dedup();
            outcome.held_by_storage.push((i, l.join(", ")));
        }
        self.deleted.lock().expect("deleted versions").extend(deleted);
        let bad: std::collections::BTreeSet<usize> =
            outcome.failures.iter().map(|(i, _)| *i).chain(outcome.held_by_storage.iter().map(|(i, _)| *i)).collect();
        let mut destroyed: Vec<usize> = outcome.details.keys().copied().filter(|i| !bad.contains(i)).collect();
        destroyed.sort();
        outcome.destroyed = destroyed;
        Ok(outcome)
    }

    /// `DeleteObjects` has no transaction to write a journal in: the engine writes intents.
    fn journaled_destroy(&self) -> bool {
        false
    }

    /// One listing of the dataset's prefix (the backend lists every key that has a version or a
    /// delete marker, hidden ones included), each key hashed and looked up; keys never leave
    /// this function.
    ///
    /// A listed key is then read version by version: on a versioned store, a version written
    /// after the intent (the object uploaded again after the interrupted run destroyed it) does
    /// not make the intended object present. Where versions have no id of their own (a
    /// directory, an unversioned bucket: an upload replaces the object), any version does: an
    /// overwrite cannot be told from a deletion and a new upload, and is not claimed.
    async fn still_present(
        &self,
        scope: &Scope,
        hash: &(dyn for<'k> Fn(&'k [Value]) -> String + Send + Sync),
        records: &BTreeMap<String, DateTime<Utc>>,
    ) -> Result<BTreeSet<String>, ConnectorError> {
        let (bucket, ds) = self.dataset(scope)?;
        let mut listed: Vec<(String, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, more) = self.backend.list(bucket, &ds.prefix, cursor.as_deref(), 1000).await?;
            crate::progress::touch();
            let Some(last) = page.last() else { break };
            cursor = Some(last.key.clone());
            for e in &page {
                let h = hash(&[Value::Text(e.key.clone())]);
                if records.contains_key(&h) {
                    listed.push((e.key.clone(), h));
                }
            }
            if !more {
                break;
            }
        }
        listed.sort();
        let keys: Vec<String> = listed.iter().map(|(k, _)| k.clone()).collect();
        let versions = self
            .backend
            .versions_of(bucket, &keys, keys.len(), self.concurrency)
            .await
            .map_err(|e| scrub_errors(e, "reading objects' versions", &keys))?;
        let mut out = BTreeSet::new();
        for (key, h) in listed {
            let Some(vs) = versions.get(&key) else { continue };
            let at = records[&h];
            let present = vs.iter().any(|v| {
                let own_id = v.id.as_deref().is_some_and(|id| id != "null");
                !own_id || v.last_modified.is_none_or(|t| t <= at)
            });
            if present {
                out.insert(h);
            }
        }
        Ok(out)
    }

    async fn remaining(&self, scope: &Scope, keys: &[Vec<Value>]) -> Result<u64, ConnectorError> {
        let (bucket, _) = self.dataset(scope)?;
        let keys: Vec<String> = keys.iter().map(|k| k[0].canonical()).collect();
        let listed = self.backend.versions_of(bucket, &keys, 0, self.concurrency).await?;
        // A key is still there if a version `destroy` deleted is listed again, or one no newer
        // than the newest it saw (one its listing missed); one written since (the object
        // uploaded again meanwhile) is new data, not a failed deletion. Where the deleted
        // versions are not known, or one had no id of its own (`null`: an unversioned bucket,
        // where a new upload takes the same id), any version counts.
        let mut deleted = self.deleted.lock().expect("deleted versions");
        let mut left = 0;
        for key in &keys {
            let ids = deleted.remove(key);
            let Some(versions) = listed.get(key) else { continue };
            let present = match ids {
                Some((ids, Some(seen))) if ids.iter().all(|id| id.as_deref().is_some_and(|v| v != "null")) => {
                    versions.iter().any(|v| ids.contains(&v.id) || v.last_modified.is_none_or(|t| t <= seen))
                }
                _ => !versions.is_empty(),
            };
            left += u64::from(present);
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_of_a_tie_is_the_first_listed() {
        let at = |secs: i64, id: &str, latest: bool| Version {
            id: Some(id.into()),
            size: 1,
            delete_marker: false,
            lock: None,
            last_modified: DateTime::from_timestamp(secs, 0),
            latest,
        };
        // Listed newest first; the object was deleted (its current version a marker, not here).
        let listed = [at(100, "b", false), at(100, "a", false), at(50, "z", false)];
        assert_eq!(newest_version(listed.iter()).and_then(|v| v.id.as_deref()), Some("b"));
        let listed = [at(90, "c", true), at(100, "b", false)];
        assert_eq!(newest_version(listed.iter()).and_then(|v| v.id.as_deref()), Some("c"), "the current one first");
        assert!(newest_version([].iter()).is_none());
    }

    #[test]
    fn a_lease_holds_while_renewed_and_not_once_lost() {
        use std::time::{Duration, Instant};
        let lease = Duration::from_secs(30);
        let l = Lease::new(lease, Instant::now());
        assert!(l.check().is_ok(), "just taken");
        // Taken 25 s ago and never renewed since: 5 s left, under a third.
        let old = Lease::new(lease, Instant::now() - Duration::from_secs(25));
        let e = old.check().unwrap_err().to_string();
        assert!(e.contains("could not be renewed"), "{e}");
        assert!(!old.expired());
        old.renewed(Instant::now());
        assert!(old.check().is_ok(), "renewed");
        let gone = Lease::new(lease, Instant::now() - Duration::from_secs(31));
        assert!(gone.expired() && gone.check().is_err());
        l.lose("another worker's lock object replaced this worker's");
        assert!(l.lost().is_some());
        assert!(l.check().unwrap_err().to_string().contains("another worker's lock object replaced"));
    }

    /// An object's error names no key: not the failing one, not any other of its batch
    /// (before, only the batch's first key was scrubbed, and the count pass scrubbed none).
    #[test]
    fn object_errors_name_no_key() {
        let e = ConnectorError::Query {
            context: "reading tags".into(),
            message: "AccessDenied on arn:aws:s3:::b/exports/jane.doe@example.com.csv".into(),
        };
        let m = without_key(e, "exports/jane.doe@example.com.csv").to_string();
        assert!(!m.contains("jane.doe"), "{m}");
        let keys = vec!["a/first@example.com".to_string(), "a/second@example.com".to_string()];
        let m = scrub_all("failed: a/second@example.com and a/first@example.com", &keys);
        assert_eq!(m, "failed: <key> and <key>");
    }

    #[test]
    fn delete_calls_are_even_and_within_limits() {
        assert_eq!(delete_chunk(6000, 8), 750, "eight calls of 750, not six of 1,000");
        assert_eq!(delete_chunk(6000, 4), 750, "two rounds of four");
        assert_eq!(delete_chunk(12_000, 8), 750, "sixteen calls");
        assert_eq!(delete_chunk(9000, 1), 1000, "one at a time: full calls");
        assert_eq!(delete_chunk(949, 8), 119);
        assert_eq!(delete_chunk(300, 8), 100, "no call under 100 keys");
        assert_eq!(delete_chunk(5, 8), 100);
        assert_eq!(delete_chunk(1_000_000, 8), 1000, "never over S3's limit");
    }

    #[test]
    fn a_keys_versions_go_in_one_call() {
        let sizes = |calls: &[Vec<usize>]| calls.iter().map(Vec::len).collect::<Vec<_>>();
        // Key 0 with one version, key 1 with 150: one call, not 100 + 51 split inside key 1.
        let items: Vec<usize> = std::iter::once(0).chain(std::iter::repeat_n(1, 150)).collect();
        let calls = delete_calls(items, |k| *k, 4);
        assert_eq!(sizes(&calls), [151]);
        // 6,000 keys of one version: even calls as `delete_chunk` sizes them.
        let calls = delete_calls((0..6000).collect(), |k| *k, 4);
        assert_eq!(sizes(&calls), [750; 8]);
        // 3,000 keys of two versions: calls end between keys, none over 1,000.
        let items: Vec<usize> = (0..3000).flat_map(|k| [k, k]).collect();
        let calls = delete_calls(items, |k| *k, 4);
        assert_eq!(sizes(&calls), [750; 8]);
        for w in calls.windows(2) {
            assert_ne!(w[0].last(), w[1].first(), "a key split between calls");
        }
        // 2,500 versions of one key between small keys: split only where S3's limit forces it.
        let items: Vec<usize> = [0].into_iter().chain(std::iter::repeat_n(1, 2500)).chain([2]).collect();
        let calls = delete_calls(items, |k| *k, 4);
        assert_eq!(sizes(&calls), [1, 1000, 1000, 501]);
        assert_eq!(calls.concat().len(), 2502, "every item in exactly one call");
        assert!(delete_calls(Vec::<usize>::new(), |k| *k, 4).is_empty());
    }

    #[test]
    fn key_patterns_extract_dates_and_subjects() {
        let p = KeyPattern::parse("exports/{yyyy}/{mm}/{dd}/{subject}.csv").unwrap();
        assert_eq!(p.literal_prefix(), "exports/");
        let f = p.matches("exports/2021/03/04/alice@example.com.csv").unwrap();
        assert_eq!(f.date, NaiveDate::from_ymd_opt(2021, 3, 4));
        assert_eq!(f.subject.as_deref(), Some("alice@example.com"));
        assert!(p.matches("exports/2021/13/04/x.csv").is_none(), "impossible month");
        assert!(p.matches("exports/2021/03/04/a/b.csv").is_none());
        assert!(p.matches("other/2021/03/04/x.csv").is_none());
        assert!(p.matches("exports/0000/01/01/x.csv").is_none(), "a placeholder, no date");
    }

    /// A key that names part of its date is anchored on the latest day it can stand for: before,
    /// on the first (`{yyyy}` → 1 January), so that a December invoice under a 7-year legal
    /// obligation lapsed 11 months early.
    #[test]
    fn a_partial_key_date_is_its_latest_day() {
        let date = |pattern: &str, key: &str| KeyPattern::parse(pattern).unwrap().matches(key).and_then(|f| f.date);
        assert_eq!(date("app/{yyyy}/{subject}.pdf", "app/2018/S-1.pdf"), NaiveDate::from_ymd_opt(2018, 12, 31));
        assert_eq!(date("app/{yyyy}/{mm}/{subject}.pdf", "app/2024/02/S-1.pdf"), NaiveDate::from_ymd_opt(2024, 2, 29));
        assert_eq!(date("app/{yyyy}/{mm}/{subject}.pdf", "app/2023/02/S-1.pdf"), NaiveDate::from_ymd_opt(2023, 2, 28));
        assert_eq!(date("app/{yyyy}/{mm}/{subject}.pdf", "app/2023/12/S-1.pdf"), NaiveDate::from_ymd_opt(2023, 12, 31));
        assert_eq!(date("app/{yyyy}/{mm}/{subject}.pdf", "app/2023/04/S-1.pdf"), NaiveDate::from_ymd_opt(2023, 4, 30));
        assert_eq!(date("app/{yyyy}-{dd}/{subject}.pdf", "app/2023-05/S-1.pdf"), NaiveDate::from_ymd_opt(2023, 12, 5));
        assert_eq!(date("app/{yyyy}/{mm}/{subject}.pdf", "app/2023/00/S-1.pdf"), None);
        assert_eq!(date("app/{yyyy}/{subject}.pdf", "app/0000/S-1.pdf"), None);
        assert_eq!(date("app/{yyyy}/{subject}.pdf", "app/9999/S-1.pdf"), NaiveDate::from_ymd_opt(9999, 12, 31));
    }

    /// A key the pattern reads in two ways with different facts is unreadable (before, the
    /// first occurrence of the next literal ended a `{subject}`: a UUID cut at its first `-`,
    /// which no hold names); one read is taken wherever the literal falls.
    #[test]
    fn ambiguous_keys_are_unreadable() {
        let p = KeyPattern::parse("exports/{subject}-{*}.pdf").unwrap();
        assert_eq!(p.matches("exports/550e8400-e29b-41d4-a716-446655440000-invoice.pdf"), None);
        assert_eq!(p.matches("exports/S1-invoice.pdf").unwrap().subject.as_deref(), Some("S1"));
        let p = KeyPattern::parse("{*}_{subject}.csv").unwrap();
        assert_eq!(p.matches("inv_2020_alice.csv"), None, "subject '2020_alice' or 'alice'");
        assert_eq!(p.matches("inv_alice.csv").unwrap().subject.as_deref(), Some("alice"));
        // One read only, the literal inside the value: `a.csv` (before: no match at all).
        let p = KeyPattern::parse("{subject}.csv").unwrap();
        assert_eq!(p.matches("a.csv.csv").unwrap().subject.as_deref(), Some("a.csv"));
        assert_eq!(p.matches("ünï.csv").unwrap().subject.as_deref(), Some("ünï"));
        // Two reads of `{*}` that give the same facts: readable.
        let p = KeyPattern::parse("{subject}/{*}-{*}.pdf").unwrap();
        assert_eq!(p.matches("S1/a-b-c.pdf").unwrap().subject.as_deref(), Some("S1"));
        // A date read two ways is ambiguous too; read one way it is kept.
        let p = KeyPattern::parse("{*}-{yyyy}-{*}.log").unwrap();
        assert_eq!(p.matches("app-2021-x.log").unwrap().date, NaiveDate::from_ymd_opt(2021, 12, 31));
        assert_eq!(p.matches("app-2021-03-x.log").unwrap().date, NaiveDate::from_ymd_opt(2021, 12, 31));
        assert_eq!(p.matches("a-2020-b-2021-c.log"), None, "2020 or 2021");
        // Very many ways to fail end within the step budget, unreadable.
        let p = KeyPattern::parse("{*}a{*}a{*}a{*}a{*}b").unwrap();
        assert_eq!(p.matches(&"a".repeat(1000)), None);
        assert_eq!(p.matches("xayazawavb").unwrap(), KeyFacts::default());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in
            ["exports/{yyyy", "x/{month}/y", "{subject}{yyyy}", "x/{mm}/y", "plain/prefix/", "a/{subject}/{subject}"]
        {
            assert!(KeyPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// The counts of one pass equal the counts one by one, and the batches' candidates from the
    /// count pass's memo (whole, or full after two objects) equal those of a plain listing.
    #[tokio::test]
    async fn one_pass_counts_and_remembered_candidates() {
        use crate::connector::{FileHold, HoldScope, LapseRule, Work};
        let dir = tempfile::tempdir().unwrap();
        for (i, day) in [1, 2, 3, 4, 5, 6, 7, 8, 9].iter().enumerate() {
            let p = dir.path().join(format!("e/2020/01/0{day}/s{i}.csv"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::fs::write(dir.path().join("e/unreadable.csv"), "x").unwrap();
        let threshold = "2020-01-07T00:00:00Z".parse().unwrap();
        let scope = Scope {
            policy: "p".into(),
            table: TableInfo {
                name: "e/".into(),
                columns: vec![],
                primary_key: vec!["key".into()],
                referenced_by: vec![],
            },
            key: vec!["key".into()],
            subject: Some("key".into()),
            lapse: Filter::Lapsed(LapseRule {
                anchor: "key_date".into(),
                threshold,
                condition: None,
                null_lapses: true,
            }),
            whole_lapse: Filter::True,
            work: Work::Delete,
            holds: HoldScope {
                policies: vec![],
                file: vec![FileHold::new("H".into(), vec![Value::Text("s2".into())], false)],
                table: None,
                tables: vec![],
                now: threshold,
            },
            restrict: vec![],
            cascade: vec![],
            pseudonym_key: None,
            objects: Some(ObjectDataset {
                bucket: None,
                prefix: "e/".into(),
                pattern: Some(KeyPattern::parse("e/{yyyy}/{mm}/{dd}/{subject}.csv").unwrap()),
            }),
        };
        let conn = |max: usize| {
            let mut c = ObjectConnector::new("t", Box::new(local::DirBackend::new(dir.path().into())), None, 4);
            c.due_memo_max = max;
            c
        };
        let filters =
            [Filter::True, scope.destroy_filter(), Filter::Held, Filter::HeldByFile("H".into()), Filter::Unreadable];
        let plain = conn(0);
        let mut one_by_one = Vec::new();
        for f in &filters {
            one_by_one.push(plain.count(&scope, f).await.unwrap());
        }
        assert_eq!(one_by_one, [10, 6, 1, 1, 1]);
        let batches = |c: ObjectConnector| {
            let scope = scope.clone();
            async move {
                let mut all = Vec::new();
                let mut after: Option<Vec<Value>> = None;
                loop {
                    let b = c.candidates(&scope, after.as_deref(), 2).await.unwrap();
                    let Some(last) = b.last() else { break };
                    after = Some(last.key.clone());
                    all.extend(b.iter().map(|c| (c.key[0].canonical(), c.subject.as_ref().map(Value::canonical))));
                }
                all
            }
        };
        let expected = batches(conn(0)).await;
        assert_eq!(expected.len(), 6);
        for max in [0, 1, 2, 3, 100] {
            let c = conn(max);
            assert_eq!(c.counts(&scope, &filters).await.unwrap(), one_by_one, "memo of {max}");
            assert_eq!(batches(c).await, expected, "memo of {max}");
        }
    }

    #[test]
    fn facts_parse() {
        assert_eq!(Fact::parse("metadata:Created-At", false).unwrap(), Fact::Metadata("created-at".into()));
        assert!(Fact::parse("key", false).is_err());
        assert!(Fact::parse("tag:", true).is_err());
    }
}
