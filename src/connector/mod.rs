//! The connector trait: the only way the engine touches a dataset.
//!
//! A connector answers a handful of questions about a dataset ("how many rows match this
//! filter", "give me the next keys that are due") and performs one destructive operation,
//! [`Connector::destroy`], on a batch. The engine describes *what* with dialect-free types
//! ([`Filter`], [`Scope`]); each connector decides *how*.
//!
//! Architecture invariant: every destructive operation of every connector selects its rows with
//! [`Scope::destroy_filter`], which always includes the hold predicates. There is no other way to
//! ask a connector to destroy anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::HoldsTable;
use crate::policy::condition::Condition;
use crate::policy::strategy::{PendingTest, Strategy};
use crate::value::Value;

/// What kind of data a column holds, as far as lapse decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Int,
    Float,
    Text,
    Bool,
    /// A timestamp; `tz` when the database stores an absolute instant.
    Timestamp {
        tz: bool,
    },
    Date,
    Bytes,
    /// Anything else (uuid, inet, json, decimal…): read and written as text.
    Other,
}

impl ColumnKind {
    pub fn is_temporal(self) -> bool {
        matches!(self, ColumnKind::Timestamp { .. } | ColumnKind::Date)
    }
}

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: ColumnKind,
    /// Its values can be read as instants, so it can be a purpose's anchor: a date or timestamp
    /// column; on SQLite also a text one (a STRICT table has no date type to declare), whose
    /// values must then read as times (`Connector::anchor_readable`). Not a number column: any
    /// number reads as a time (a Julian day or Unix seconds), a score or a `20250101` too.
    pub instant: bool,
    /// The type as the database names it (e.g. `character varying(255)`).
    pub sql_type: String,
    pub nullable: bool,
    pub max_len: Option<u64>,
    /// Computed by the database (a generated column; PostgreSQL's `GENERATED ALWAYS AS IDENTITY`):
    /// an `UPDATE` cannot write it.
    pub generated: bool,
    /// In a unique index or constraint (alone or with other columns, partial, or in an index
    /// expression): two rows may not be able to share a value.
    pub unique: bool,
    /// Set to the current time by the database when another column of the row changes
    /// (MariaDB/MySQL's `ON UPDATE CURRENT_TIMESTAMP`): an anonymizing `UPDATE` sets it to
    /// itself, or it would move the anchor it is and put off the record's lapse.
    pub on_update: bool,
}

/// A foreign key by which `table` references the described table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub constraint: String,
    /// The referencing (child) table.
    pub table: String,
    /// Referencing columns in the child table.
    pub columns: Vec<String>,
    /// Referenced columns in the parent table, in the same order.
    pub referenced: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    pub referenced_by: Vec<ForeignKey>,
}

/// A table as the catalog names it (see [`Connector::identify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIdentity {
    /// Schema-qualified, as the catalog spells it (SQLite: in lower case, as it compares names):
    /// two policies naming the same table in different ways get the same one.
    pub canonical: String,
    /// What it is when it is not a base table (`view`, `materialized view`).
    pub not_a_table: Option<&'static str>,
    /// Where the table is stored, the same through every connection that reaches it (two
    /// connections of the config may reach one database): PostgreSQL, the server's start time,
    /// the database's and the table's object ids; MariaDB/MySQL, the server's host name, port,
    /// data directory and id, the table's name and creation time; SQLite, the database file's
    /// device and inode and the table's name. `None`: cannot tell (an in-memory SQLite database).
    pub place: Option<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn kind(&self, name: &str) -> ColumnKind {
        self.column(name).map(|c| c.kind).unwrap_or(ColumnKind::Other)
    }
}

/// "The purpose has lapsed for this row": `anchor <= threshold` (that is, `anchor + period <=
/// cutoff`) and the purpose's condition holds. A NULL anchor lapses only when `null_lapses`.
#[derive(Debug, Clone)]
pub struct LapseRule {
    pub anchor: String,
    pub threshold: DateTime<Utc>,
    pub condition: Option<Condition>,
    pub null_lapses: bool,
}

/// A dialect-free row predicate.
#[derive(Debug, Clone)]
pub enum Filter {
    True,
    Lapsed(LapseRule),
    AnchorNull(String),
    /// An anchor that is unknown and lapses not even under `null_anchor: lapse` (SQLite's
    /// blob): the row is kept, and counted with the unknown anchors kept.
    AnchorNeverLapses(String),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    /// Under any active hold: from the holds file or the holds table.
    Held,
    /// Under this hold of the holds file.
    HeldByFile(String),
    /// At least one of these columns is not yet in anonymized form.
    Pending(Vec<(String, PendingTest)>),
    /// Referenced by a row of a `restrict` dependent.
    HasDependents,
    /// Objects whose facts (anchor, subject) cannot be read. Never true for table rows.
    Unreadable,
    /// This worker's part of a key-sharded policy (`--shard index/count`): rows whose integer
    /// key `column` is congruent to `index` modulo `count`; objects whose key's stable hash
    /// ([`crate::shard::key_hash`]) is. Parts are disjoint and together cover every row.
    KeyShard {
        column: String,
        index: u32,
        count: u32,
    },
}

impl Filter {
    pub fn negate(f: Filter) -> Filter {
        Filter::Not(Box::new(f))
    }
}

/// A hold from the holds file, resolved for one policy.
#[derive(Debug, Clone)]
pub struct FileHold {
    pub id: String,
    /// Subject values typed like the subject column. Empty with `whole_policy`.
    pub subjects: Vec<Value>,
    pub whole_policy: bool,
    /// `holds::subject_keys` of every subject, built at the first [`FileHold::holds_any_of`]
    /// (once `subjects` is complete).
    keys: std::sync::OnceLock<std::collections::HashSet<String>>,
}

impl FileHold {
    pub fn new(id: String, subjects: Vec<Value>, whole_policy: bool) -> FileHold {
        FileHold { id, subjects, whole_policy, keys: Default::default() }
    }

    /// Whether one of the hold's subjects is the subject of `subject_keys`
    /// (`holds::subject_keys` of it) however either is written (`holds::same_subject`).
    pub fn holds_any_of(&self, subject_keys: &[String]) -> bool {
        let keys = self
            .keys
            .get_or_init(|| self.subjects.iter().flat_map(|v| crate::holds::subject_keys(&v.canonical())).collect());
        subject_keys.iter().any(|k| keys.contains(k))
    }
}

/// The id of the file hold that carries the subject `report lookup --connect` asks about
/// ([`Connector::table_holds_of`]); no hold of a holds file has it (a control character).
pub const LOOKUP_PROBE: &str = "\u{1}lookup";

/// The holds that apply to one policy.
#[derive(Debug, Clone)]
pub struct HoldScope {
    /// The policies whose holds keep this dataset's records: this policy and every other
    /// policy on the same table (whose purposes it shares, `policy::check_set`), so that a hold
    /// scoped to one of them is not passed by another's destruction. Empty: this policy only.
    pub policies: Vec<String>,
    pub file: Vec<FileHold>,
    /// The database's holds table (checked inside each destroying statement).
    pub table: Option<HoldsTable>,
    /// Object policies: the holds in force for this policy in the holds tables of the run's
    /// SQL connections (an object store has no holds table of its own), as read by
    /// [`Connector::holds_in_force`]; read again before each batch. Empty for tables.
    pub tables: Vec<FileHold>,
    /// Holds expiring before this instant no longer hold. Fixed at the start of the run.
    pub now: DateTime<Utc>,
}

/// Dependent rows deleted with their parent, in the same transaction.
#[derive(Debug, Clone)]
pub struct Cascade {
    pub fk: ForeignKey,
    pub children: Vec<Cascade>,
}

#[derive(Debug, Clone)]
pub enum Work {
    Delete,
    /// Anonymize these columns with these strategies.
    Anonymize(Vec<(String, Strategy)>),
}

/// Everything a connector needs to find and destroy one policy stage's rows.
#[derive(Debug, Clone)]
pub struct Scope {
    pub policy: String,
    pub table: TableInfo,
    pub key: Vec<String>,
    pub subject: Option<String>,
    /// Rows whose purposes (for this stage) have lapsed.
    pub lapse: Filter,
    /// Rows whose every purpose has lapsed (the record stage's lapse, without a shard's part):
    /// what the other owner of a shared child is tested against (`Scope::shared_children`).
    pub whole_lapse: Filter,
    pub work: Work,
    pub holds: HoldScope,
    /// Foreign keys of `restrict` dependents.
    pub restrict: Vec<ForeignKey>,
    pub cascade: Vec<Cascade>,
    /// Key for `pseudonymize`.
    pub pseudonym_key: Option<Vec<u8>>,
    /// For object datasets: bucket, prefix and key pattern.
    pub objects: Option<crate::policy::ObjectDataset>,
}

impl Scope {
    /// The subject column is the (single-column) key itself: a table keyed by its data
    /// subject. A batch returned as lists carries the keys once.
    pub fn subject_is_key(&self) -> bool {
        self.key.len() == 1 && self.subject.as_ref() == Some(&self.key[0])
    }

    /// THE choke point: the rows a destructive operation may touch. Lapsed, not held, still
    /// needing work, and not blocked by a `restrict` dependent. Connectors build every
    /// destroying statement or call from this filter and nothing else.
    pub fn destroy_filter(&self) -> Filter {
        let mut all = vec![self.lapse.clone(), Filter::negate(Filter::Held)];
        all.extend(self.pending());
        // Dependents block a delete only: an anonymized record is kept, children and all.
        if self.blocks_by_dependents() {
            all.push(Filter::negate(Filter::HasDependents));
        }
        Filter::All(all)
    }

    /// Whether a record can be kept by its dependents (`Filter::HasDependents`): a `restrict`
    /// one, or a cascaded child that another record of the table, held or not due, also owns.
    pub fn blocks_by_dependents(&self) -> bool {
        matches!(self.work, Work::Delete) && (!self.restrict.is_empty() || !self.shared_children().is_empty())
    }

    /// The cascaded children that reference the table twice: the foreign key they are cascaded
    /// by, and another of theirs to the same table. Such a child (a message from A to B) is
    /// B's too: while B is held, or its purposes have not lapsed, the child is kept, and so is
    /// A, whose deletion would take it (before, A's deletion deleted it under B's hold; found
    /// by a review).
    pub fn shared_children(&self) -> Vec<(&ForeignKey, &ForeignKey)> {
        shared_children(&self.table, &self.cascade)
    }

    /// When anonymizing with strategies the database can test: the rows that still need work.
    pub fn pending(&self) -> Option<Filter> {
        let Work::Anonymize(cols) = &self.work else { return None };
        let tests: Option<Vec<(String, PendingTest)>> =
            cols.iter().map(|(c, s)| s.pending_test().map(|t| (c.clone(), t))).collect();
        tests.map(Filter::Pending)
    }
}

/// [`Scope::shared_children`] of `table` cascading to `cascade`.
pub fn shared_children<'a>(table: &'a TableInfo, cascade: &'a [Cascade]) -> Vec<(&'a ForeignKey, &'a ForeignKey)> {
    let mut out = Vec::new();
    for c in cascade {
        for other in table.referenced_by.iter().filter(|f| f.table == c.fk.table && f.constraint != c.fk.constraint) {
            out.push((&c.fk, other));
        }
    }
    out
}

/// A row that is due, identified by its key.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: Vec<Value>,
    pub subject: Option<Value>,
}

/// Evidence identifiers of a candidate (keyed hashes), written to the journal with the batch.
#[derive(Debug, Clone)]
pub struct EvidenceId {
    pub record: String,
    pub subject: Option<String>,
}

/// The journal context of a batch: which run, policy, stage and batch (numbered from 1 per
/// stage, as in the evidence) commit it.
#[derive(Debug, Clone)]
pub struct JournalCtx {
    pub run_id: String,
    pub policy: String,
    pub stage: String,
    pub action: String,
    pub batch: u64,
}

/// The keys after `after` (all, when `None`) up to `upto`, in the scope's key order.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange<'a> {
    pub after: Option<&'a [Value]>,
    pub upto: &'a [Value],
}

/// A batch in the journal, as [`Connector::journal_batches`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalBatch {
    pub run_id: String,
    pub stage: String,
    pub action: String,
    pub batch: u64,
    /// Records the batch destroyed (its `record_count`).
    pub records: u64,
    /// When its transaction was committed (as the run wrote it; `None` if unreadable).
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Makes the evidence id of a row (the engine's keyed hashes of its key and subject).
pub type IdFn<'a> = dyn for<'c> Fn(&'c Candidate) -> EvidenceId + Send + Sync + 'a;

/// A committed batch: its rows in key order, their evidence ids, and what became of them.
pub type Destroyed = (Vec<Candidate>, Vec<EvidenceId>, BatchOutcome);

/// A batch whose destroying statements ran in a transaction that is still open
/// ([`Connector::begin_next`]).
pub struct Begun<'a> {
    /// How many rows the batch took.
    pub taken: usize,
    /// The batch's last key: the next batch begins after it.
    pub last: Option<Vec<Value>>,
    /// Journals and commits the batch; dropped without being awaited, rolls it back.
    pub finish: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Destroyed, ConnectorError>> + Send + 'a>>,
}

#[derive(Debug, Default, Clone)]
pub struct BatchOutcome {
    /// Indices (into the batch) of the records destroyed by the committed transaction.
    pub destroyed: Vec<usize>,
    /// Rows that were due but already in anonymized form.
    pub unchanged: Vec<usize>,
    /// Rows deleted in dependent tables, by table.
    pub cascaded: BTreeMap<String, u64>,
    /// The data changed under the batch (e.g. a hold arrived); nothing was committed.
    pub conflict: bool,
    /// Objects: versions and bytes destroyed, by batch index.
    pub details: BTreeMap<usize, ObjectDetail>,
    /// Objects kept because a version is under an Object Lock (legal hold or retention).
    pub held_by_storage: Vec<(usize, String)>,
    /// Objects kept because an older version's subject (read from its own metadata or tags)
    /// is under a hold, with the ids of those holds: the newest version, which the counts
    /// judged, is not.
    pub held: Vec<(usize, Vec<String>)>,
    /// Items that could not be destroyed: objects after retries, with the storage's error
    /// code; rows whose value a strategy cannot anonymize, with what is wrong (never the value).
    pub failures: Vec<(usize, String)>,
    /// Objects a deletion was sent for whose outcome is unknown: a whole call failed (its reply
    /// lost, a dropped connection, a 5xx) on some attempt, so the server may have deleted them.
    /// Never void: a later run reconciles them from their intents.
    pub unknown: Vec<usize>,
    /// Objects kept because the subject of one of their older versions cannot be read (a
    /// metadata field or tag missing): whether a hold names it is unknown.
    pub unreadable: Vec<usize>,
    /// Objects whose subject is each version's own (read from metadata or tags): the distinct
    /// subjects of their data versions as the batch's re-check read them, newest first (the
    /// evidence names them all; personal data, only ever hashed).
    pub subjects: BTreeMap<usize, Vec<String>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ObjectDetail {
    pub versions: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot connect to '{name}': {message}")]
    Connect { name: String, message: String },
    #[error("{context}: {message}")]
    Query { context: String, message: String },
    /// The connection broke, none could be had (I/O error, pool timeout), or the server said it
    /// is temporarily unavailable (HTTP 500/503, a timeout): the work was not done, or its
    /// transaction was rolled back. Worth a bounded retry; says nothing about the configuration.
    #[error("{context}: temporarily unavailable: {message}")]
    Lost { context: String, message: String },
    /// Rows of the batch changed between the statement that selected them and the one that
    /// destroyed them: the transaction was rolled back, nothing of it committed. Taking the
    /// batch again (re-selected) may succeed.
    #[error("{context}: rows changed under the batch; nothing of it committed")]
    Changed { context: String },
}

impl ConnectorError {
    /// Whether retrying the same work later may succeed (see [`ConnectorError::Lost`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Lost { .. })
    }
}

/// Runs `op` again after a transient error ([`ConnectorError::is_transient`]: a lost connection,
/// a server temporarily unavailable), at most 4 attempts with exponential backoff and jitter
/// (about 4 s in all), so that a database restart or a dropped connection costs a pause, not the
/// rest of the run.
pub async fn retry<T, F, Fut>(mut op: F) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ConnectorError>>,
{
    let mut attempt = 0u32;
    loop {
        let r = op().await;
        // An answer came (or the connection closed): the run is not stalled (`progress::idle`).
        crate::progress::touch();
        match r {
            Err(e) if e.is_transient() && attempt < 3 => {
                attempt += 1;
                backoff(attempt, &e).await;
            }
            r => return r,
        }
    }
}

/// The pause before attempt `attempt + 1` after the transient error `e` ([`retry`]).
pub async fn backoff(attempt: u32, e: &ConnectorError) {
    let wait = 250 * (1u64 << attempt) + rand::random::<u64>() % 250;
    tracing::warn!(attempt, wait_ms = wait, "{e}; retrying");
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
}

/// A dataset backend. Implementations: [`crate::sql::SqlConnector`] (PostgreSQL, MySQL/MariaDB,
/// SQLite) and [`crate::objstore::ObjectConnector`] (S3, local directories).
#[async_trait]
pub trait Connector: Send + Sync + fmt::Display {
    /// Columns, key and referencing foreign keys of a table, from the catalog.
    async fn describe(&self, table: &str) -> Result<TableInfo, ConnectorError>;

    /// What the catalog calls `table`: one name per table however a policy spells it, and
    /// what kind of relation it is. `None`: nothing to say (object stores; a table not found).
    async fn identify(&self, _table: &str) -> Result<Option<TableIdentity>, ConnectorError> {
        Ok(None)
    }

    /// Number of rows of the scope's table matching `filter`.
    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<u64, ConnectorError>;

    /// The rows matching each of `filters`, in order: the report's counts of one policy. The
    /// default asks [`Connector::count`] for each, side by side (a database counts each in
    /// one statement); a connector that can only count by reading the whole dataset (an object
    /// store's listing) counts them all in one pass.
    async fn counts(&self, scope: &Scope, filters: &[Filter]) -> Result<Vec<u64>, ConnectorError> {
        futures::future::try_join_all(filters.iter().map(|f| self.count(scope, f))).await
    }

    /// Whether [`Connector::counts_pinned`] takes its counts on a snapshot of the dataset that
    /// no later commit changes, and says when it holds it (SQLite: a read transaction in WAL
    /// mode). Then, where no count can stop the policy (its guardrail cannot trip), the engine
    /// begins the batches at that signal instead of waiting for the counts: they still
    /// describe the dataset as it was before the first batch.
    fn pins_counts(&self, _scope: &Scope) -> bool {
        false
    }

    /// [`Connector::counts`] on a snapshot taken first: `pinned` is sent once it is held, and
    /// nothing committed after that is counted. The default takes the counts, then sends.
    async fn counts_pinned(
        &self,
        scope: &Scope,
        filters: &[Filter],
        pinned: futures::channel::oneshot::Sender<()>,
    ) -> Result<Vec<u64>, ConnectorError> {
        let counts = self.counts(scope, filters).await;
        let _ = pinned.send(());
        counts
    }

    /// Whether [`Connector::counts`], asked for `due` and `held` together, counts `held` with
    /// `due` in one statement (it is `due`'s held part), at no cost of its own: the engine then
    /// asks for it with the counts the first batch waits for, instead of beside the batches.
    fn counts_held_with_due(&self, _scope: &Scope, _due: &Filter, _held: &Filter) -> bool {
        false
    }

    /// Rows matching `filter` per hold of the holds table (hold id -> rows).
    async fn count_by_table_hold(&self, scope: &Scope, filter: &Filter) -> Result<Vec<(String, u64)>, ConnectorError>;

    /// The next rows, in key order after `after`, that match [`Scope::destroy_filter`]: at most
    /// `limit`, and fewer only when no more match.
    async fn candidates(
        &self,
        scope: &Scope,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Candidate>, ConnectorError>;

    /// Destroys the batch in one transaction: re-checks every row with
    /// [`Scope::destroy_filter`] inside the destroying statements, cascades to dependents,
    /// writes the journal, and commits only if exactly the re-checked rows were destroyed.
    async fn destroy(
        &self,
        scope: &Scope,
        batch: &[Candidate],
        ids: &[EvidenceId],
        journal: &JournalCtx,
    ) -> Result<BatchOutcome, ConnectorError>;

    /// Whether [`Connector::begin_next`] serves this scope.
    fn destroys_next(&self, _scope: &Scope) -> bool {
        false
    }

    /// Whether a batch begun by [`Connector::begin_next`] may be finished while the next one is
    /// begun on another connection: only where finishing a batch can never wait for a lock the
    /// next batch holds (the next batch's transaction waits for this one to finish: such a wait
    /// would last until the database's lock timeout). `false` finishes each batch before the
    /// next begins.
    fn overlaps_batches(&self) -> bool {
        false
    }

    /// A batch without a separate candidate query, in two halves. This call selects the next
    /// due rows after `after` (at most `limit`, in key order) and runs the destroying
    /// statements on them in one open transaction, with [`Scope::destroy_filter`] in those
    /// statements. The returned [`Begun::finish`] completes the batch: makes the rows'
    /// evidence ids with `id` (or has made them while the statements ran), journals them,
    /// commits, and yields the batch in key order (fewer than `limit`: nothing more was due;
    /// a batch that destroyed fewer rows than it selected, e.g. because a trigger kept one,
    /// rolls back with [`ConnectorError::Changed`] instead, so that the engine takes it by its
    /// candidates), the ids and the outcome (indices into the batch). Dropping `finish`
    /// unpolled rolls the batch back. Only called when [`Connector::destroys_next`] says so.
    async fn begin_next<'a>(
        &'a self,
        _scope: &'a Scope,
        _after: Option<&[Value]>,
        _limit: usize,
        _id: &'a IdFn<'a>,
        _journal: JournalCtx,
    ) -> Result<Begun<'a>, ConnectorError> {
        Err(ConnectorError::Invalid("this connector selects its candidates before destroying them".into()))
    }

    /// How many of these keys still match the scope's lapse filter and still need work: used to
    /// verify a destruction after the fact (0 means verified). `keys` are in key order (the
    /// order of [`Connector::candidates`]).
    async fn remaining(&self, scope: &Scope, keys: &[Vec<Value>]) -> Result<u64, ConnectorError>;

    /// Whether `column` can hold `value` (a policy's constant, checked by `validate` before
    /// anything runs), for types only the database knows; `Err` says why not. Default: yes.
    async fn accepts(&self, _column: &ColumnInfo, _value: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Whether `column` can store `value` (a constant the run will write, not a literal it
    /// compares with), where the database's limits are known from the type; `Err` says why
    /// not. Default: yes.
    fn stores(&self, _column: &ColumnInfo, _value: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Why `column` cannot be a key lapse batches by, if it cannot: the database orders its
    /// values otherwise than it compares them with a bound value, so batches taken by key would
    /// skip rows (MariaDB's `ENUM`/`SET`; a SQLite column of no declared type, where an integer
    /// never equals the text it is read back as). Default: it can.
    fn key_column_problem(&self, _column: &ColumnInfo) -> Option<String> {
        None
    }

    /// For an anchor whose declared type is no date (`ColumnInfo::instant` on a text column):
    /// whether any of its values reads as a time, or it has none. `validate` refuses an anchor
    /// whose every value is something else (`after: email`). Default: yes.
    async fn anchor_readable(&self, _table: &TableInfo, _column: &str) -> Result<bool, ConnectorError> {
        Ok(true)
    }

    /// The time zone the database server writes zone-less times in (`NOW()` into a MariaDB
    /// `DATETIME`), when it is not UTC and can be told; lapse reads such columns as UTC.
    /// Default: none (UTC or unknown).
    async fn local_time_zone(&self) -> Option<String> {
        None
    }

    /// The holds table of this connection, if any.
    fn holds_table(&self) -> Option<&HoldsTable> {
        None
    }

    /// The tables lapse itself keeps through this connection (its journal), beside the holds
    /// table: no policy may govern them.
    fn own_tables(&self) -> Vec<String> {
        Vec::new()
    }

    /// The subject column of the holds table, if any, as the catalog describes it.
    fn holds_subject_column(&self) -> Option<&ColumnInfo> {
        None
    }

    /// The policy names (a few) of holds in force at `now` in the holds table that are none
    /// of `known`: such a hold holds nothing (a typo, or a retired policy). Default: none.
    async fn holds_of_other_policies(
        &self,
        _known: &[String],
        _now: DateTime<Utc>,
    ) -> Result<Vec<String>, ConnectorError> {
        Ok(vec![])
    }

    /// The matter of each hold id in force at `now` in this connection's holds table, as
    /// (hold id, matter), for the report: each id as [`Connector::count_by_table_hold`] gives
    /// it and, where that differs (a binary id), as [`Connector::holds_in_force`] does. Default:
    /// none (no holds table, or no matter column).
    async fn hold_matters(&self, _now: DateTime<Utc>) -> Result<Vec<(String, String)>, ConnectorError> {
        Ok(vec![])
    }

    /// The holds of this connection's holds table that hold a record of the scope's table
    /// whose subject is that of the file hold [`LOOKUP_PROBE`] in `scope.holds.file`, compared
    /// as the runs compare (`report lookup --connect`): (hold id, whether the hold's row names
    /// no subject: every subject). Default: none (no holds table).
    async fn table_holds_of(&self, _scope: &Scope) -> Result<Vec<(String, bool)>, ConnectorError> {
        Ok(vec![])
    }

    /// Whether a column can hold a value of another type than it declares (SQLite): a hold's
    /// subject that is no value of the subject column's type may still be in it.
    fn keeps_any_type(&self) -> bool {
        false
    }

    /// The holds in force at `now` in this connection's holds table that apply to any of
    /// `policies` (a hold naming one of them, or every policy), each hold id once with the
    /// subjects its rows name (as text; a row with no subject: every subject; for a
    /// `subjectless` policy, a row with a subject that names a policy, not every policy, keeps
    /// the whole policy too). For object policies, whose store has no holds table. Default:
    /// none (no holds table).
    async fn holds_in_force(
        &self,
        _policies: &[String],
        _now: DateTime<Utc>,
        _subjectless: bool,
    ) -> Result<Vec<FileHold>, ConnectorError> {
        Ok(vec![])
    }

    /// Whether [`Connector::destroy`] records its batch atomically with the destruction (SQL:
    /// the journal rows are inserted in the destroying transaction). When `false` (object
    /// stores: `DeleteObjects` has no transaction), the engine writes a durable write-ahead
    /// intent before each destroy ([`crate::intent`]) and reconciles the intents of interrupted
    /// runs with [`Connector::still_present`].
    fn journaled_destroy(&self) -> bool {
        true
    }

    /// Which of `records` (keyed hashes of record keys, as `hash` makes them, each with the
    /// time of its intent) still exist in the dataset as they were then (object stores: a
    /// version or delete marker of the key; on a versioned store, not one written after the
    /// intent: the object uploaded again under its key after the interrupted run destroyed it).
    /// Used to reconcile write-ahead intents; only connectors without a journaled destroy
    /// implement it.
    async fn still_present(
        &self,
        _scope: &Scope,
        _hash: &(dyn for<'k> Fn(&'k [Value]) -> String + Send + Sync),
        _records: &BTreeMap<String, DateTime<Utc>>,
    ) -> Result<BTreeSet<String>, ConnectorError> {
        Err(ConnectorError::Invalid("this connector has no write-ahead intents to reconcile".into()))
    }

    /// The batches of `policy` the journal holds for runs whose id starts with `run_prefix`,
    /// committed at or after `since` (RFC 3339, milliseconds): what a run killed before its
    /// report committed, to be compared with its evidence file. Default: none (no journal; a
    /// journal table of the earlier per-record shape is not read either).
    async fn journal_batches(
        &self,
        _policy: &str,
        _run_prefix: &str,
        _since: &str,
    ) -> Result<Vec<JournalBatch>, ConnectorError> {
        Ok(vec![])
    }

    /// The policy names of the batches the journal holds for runs whose id starts with
    /// `run_prefix`, committed at or after `since` (as [`Connector::journal_batches`]): a
    /// policy renamed or removed since such a run is found by its old name. Default: none.
    async fn journal_policies(&self, _run_prefix: &str, _since: &str) -> Result<Vec<String>, ConnectorError> {
        Ok(vec![])
    }

    /// Waits until no other transaction holds a lock on the rows of `keys`, and on those with a
    /// key in `range` (after its first, up to its last; whatever they hold now), so that a
    /// transaction that was changing them has ended and what it committed is visible: after a
    /// lost connection, a retry that locked none of its batch's rows (every one held or no
    /// longer due by then) did not wait for the lost attempt, which may still be committing; nor
    /// did a retake of a batch of its own statements, whose rows (the range it read) it may not
    /// have read again. Bounded by the connection's lock wait. Default: nothing to wait for.
    async fn settle(
        &self,
        _scope: &Scope,
        _keys: &[Vec<Value>],
        _range: Option<KeyRange<'_>>,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Whether [`Connector::journal_batches`] reads this connector's journal (SQL: not a journal
    /// table of the earlier per-record shape), so that a batch it does not list was not
    /// journaled. Default: whether there is a journal at all.
    fn journal_readable(&self) -> bool {
        self.journaled_destroy()
    }

    /// The evidence ids (records and subjects, in order) of one journaled batch.
    async fn journal_batch_ids(&self, _policy: &str, _batch: &JournalBatch) -> Result<Vec<EvidenceId>, ConnectorError> {
        Ok(vec![])
    }

    /// The largest batch [`Connector::destroy`] can take for this scope (e.g. a database's
    /// limit on bound parameters per statement); the engine never asks for more.
    fn max_batch(&self, _scope: &Scope) -> usize {
        usize::MAX
    }

    /// Prepares for a `run` (e.g. creates the journal table). Never called by `plan`.
    async fn prepare_run(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Whether run lock `name` (taken by `try_run_lock`) is still held (checked before each
    /// batch); a lock whose holder died is taken again, or the policy stops with an error.
    /// Default: yes.
    async fn run_lock_alive(&self, _name: &str) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Takes the run lock `name` (one per policy and shard) for the rest of the process: `false`
    /// when another worker holds it. The lock dies with the process (a session-level database
    /// lock, an OS file lock), so a killed worker never leaves a stale lock behind.
    /// `objects`: the policy's object dataset (object stores lock in its bucket).
    async fn try_run_lock(
        &self,
        name: &str,
        objects: Option<&crate::policy::ObjectDataset>,
    ) -> Result<bool, ConnectorError>;

    /// Ends the connector's sessions at the end of a command, its run locks with them, so that
    /// the database sees them close rather than the process vanish: SQLite writes its WAL back
    /// into the database file when the last connection closes (a `-wal` file left behind holds
    /// the run's commits, and a database file restored from a backup beside it would have them
    /// replayed into it). Default: nothing to close.
    async fn close(&self) {}
}
