//! The SQL connector: PostgreSQL, MySQL/MariaDB and SQLite through concrete `sqlx` pools.
//!
//! Statements come from [`builder`] (the one place that writes SQL); this module opens pools,
//! binds and decodes values, runs transactions and maps errors. Database error messages are
//! passed through [`sanitize`] because some (MySQL's "Duplicate entry 'x'") quote row values.

pub mod builder;
pub mod catalog;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};

use crate::config::HoldsTable;
use crate::connector::{
    BatchOutcome, Begun, Candidate, ColumnInfo, ColumnKind, ConnectorError, EvidenceId, Filter, ForeignKey, IdFn,
    JournalCtx, Scope, TableIdentity, TableInfo, Work,
};
use crate::value::Value;
use builder::{Builder, Dialect, Rows, Sql, Subjects};

/// Bound parameters a batch's statements may take (see `max_batch`).
const MAX_BATCH_PARAMS: usize = 30_000;

/// Statements with more bound parameters than this are prepared without caching (see `bound!`).
const MAX_CACHED_PARAMS: usize = 64;
/// Rows a SQLite connection's worker thread may hand over before it waits for them to be taken
/// (sqlx's default is 50): a batch reads or deletes thousands of rows, and each wait is a trip
/// between threads.
const ROW_BUFFER: usize = 1024;

enum Pool {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

/// A connection to one SQL database, named as in the worker config.
pub struct SqlConnector {
    name: String,
    dialect: Dialect,
    pool: Pool,
    journal_table: String,
    holds_table: Option<(HoldsTable, TableInfo)>,
    /// Whether `DELETE ... RETURNING` exists here (PostgreSQL, SQLite, MariaDB; not MySQL).
    returning: bool,
    /// The database has a strong random source callable in SQL (`Builder::db_random`).
    db_random: bool,
    /// `Builder::split_holds`: not on SQLite where the schema declares a collation somewhere.
    split_holds: bool,
    /// SQLite in WAL mode, with a writing connection (`run`): a reader's snapshot holds while
    /// batches commit, and keeps them from no commit (`Connector::pins_counts`).
    lite_wal: bool,
    /// PostgreSQL: the holds table is a plain table, whose rows' `xmin` tells the holds written
    /// since a snapshot (`holds_since`); a view has none, and every batch then probes in full.
    holds_xmin: bool,
    /// The journal table's [`JournalShape`], as a `u8` (tables made by an earlier lapse keep
    /// theirs; see `ensure_journal`).
    journal_shape: std::sync::atomic::AtomicU8,
    /// The first and last key of the rows each counted filter matched (single integer keys), by
    /// [`bounds_id`]: `begin_next` scans only between them.
    due_bounds: std::sync::Mutex<std::collections::HashMap<String, (Value, Value)>>,
    /// MariaDB/MySQL: whether a table's column leads an index, by table and column (asked
    /// once, for the anchor of the lapse rule that bounds a count: `lapsed_key_range`).
    leads_index: std::sync::Mutex<std::collections::HashMap<(String, String), bool>>,
    /// What `lapsed_key_range` read for a policy's table and lapse rule (its threshold
    /// included), kept for the rest of the run: the due count reads it, the report's counts of
    /// held rows beside the batches use it again (the batches take rows out of it, never add).
    lapsed_ranges: std::sync::Mutex<std::collections::HashMap<String, LapsedRange>>,
    /// Run locks taken by `try_run_lock`: the sessions (or lock files) that hold them, kept
    /// open until the connector is dropped at the end of the process (`run_lock_alive` checks
    /// the sessions between batches).
    run_locks: tokio::sync::Mutex<Vec<HeldLock>>,
    /// SQLite: the one connection on which batches select and destroy their own rows
    /// (`sqlite_delete_next`, `anonymize_next`; `destroy` uses the pool). One, so that its
    /// `PRAGMA data_version` tells whether another connection committed between two batches
    /// (see [`ReadAhead`]).
    lite_writer: Option<LiteWriter>,
    /// SQLite: the next batch's read, begun while this one is destroyed.
    read_ahead: std::sync::Mutex<Option<ReadAhead>>,
    /// MariaDB/MySQL: the latest instant a `TIMESTAMP` holds on this server (`catalog::my_misfit`).
    my_timestamp_max: chrono::NaiveDateTime,
}

/// How long a batch waits, under its write lock, for the batch read ahead ([`ReadAhead`]).
const READ_AHEAD_WAIT: Duration = Duration::from_millis(500);

/// SQLite reads a batch ahead. While batch *i* is deleted or updated by the writing connection
/// (under its write lock), batch *i+1* (the next due keys after batch *i*'s last) is read on
/// another connection, on a snapshot taken after that lock was: of the database as it will be
/// when batch *i* commits, save batch *i*'s own changes, which concern only keys up to its
/// last. Batch *i+1* uses that read if, under its own write lock, it is on the same writing
/// connection ([`LiteWriter`]) and that connection's `PRAGMA data_version` is what it was
/// under batch *i*'s: no other connection (no other process: a hold inserted meanwhile)
/// committed in between. Otherwise it reads again, under
/// its lock, as it always did. Only where batch *i*'s own changes cannot reach other rows or
/// the holds: no triggers in the database (checked under every batch's lock: creating one is a
/// commit of its own) and no foreign key referencing the table.
struct ReadAhead {
    /// The scope's filter (`bounds_id`), the key the read starts after, and its limit.
    at: (String, i64, usize),
    /// The writing connection (`LiteWriter::opened`) and its `data_version`, under batch *i*'s
    /// lock.
    writer: (usize, i64),
    task: tokio::task::JoinHandle<Result<Option<Packed>, sqlx::Error>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SQLite's one writing connection: a pool of one, and how many connections it has opened.
/// `data_version` values of two connections cannot be compared (each starts anew), nor can
/// their handles (a closed connection's address may be the next one's): the count tells them
/// apart. With at most one connection, the one in hand is the last opened.
struct LiteWriter {
    pool: sqlx::SqlitePool,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The writing SQLite connection, as [`ReadAhead`] compares it: which connection it is
/// (`LiteWriter::opened`), its `data_version`, and whether any trigger exists.
async fn writer_mark(c: &mut sqlx::SqliteConnection, writer: &LiteWriter) -> Result<((usize, i64), bool), sqlx::Error> {
    let (version, triggers): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT data_version FROM pragma_data_version()), (SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger')",
    )
    .fetch_one(&mut *c)
    .await?;
    let connection = writer.opened.load(std::sync::atomic::Ordering::SeqCst);
    Ok(((connection, version), triggers == 0))
}

/// A referencing table as PostgreSQL's `regclass` text names it (`orders`, `tenant_b.orders`,
/// `"People"`), quotes taken off where each part is then a plain identifier; otherwise as it is
/// (`"main.orders"`: a dot in the name would read as schema and table, and the cascade reached
/// another table; found by a review), which validation refuses.
fn pg_child_name(raw: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // `""` inside quotes is a quote of the name (`"a""b"` is `a"b`, not `ab`; found by
            // a review): kept, so that the name fails the identifier test below.
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    match parts.len() <= 2 && parts.iter().all(|p| crate::policy::valid_identifier(p)) {
        true => parts.join("."),
        false => raw.to_string(),
    }
}

/// Where a count's statements run: on the pool, side by side, or one after another on one
/// SQLite connection in a read transaction (`Connector::counts_pinned`).
enum Via<'a> {
    Pool,
    Pinned(&'a futures::lock::Mutex<&'a mut sqlx::SqliteConnection>),
}

/// `before_acquire` of the SQLite pools: whether the connection may be used (see where they
/// are built).
fn sqlite_connection_fresh(
    c: &mut sqlx::SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    let ok = !sqlx::Connection::is_in_transaction(c);
    if !ok {
        tracing::warn!("a SQLite connection left in a transaction by a failed commit is closed and replaced");
    }
    Box::pin(async move { Ok(ok) })
}

/// The pool a batch's writing transaction comes from: SQLite's one writing connection, the
/// pool itself on the servers.
trait WritePool {
    fn for_writes<'a>(&'a self, _: &'a SqlConnector) -> &'a Self {
        self
    }
}

impl WritePool for sqlx::PgPool {}

impl WritePool for sqlx::MySqlPool {}

impl WritePool for sqlx::SqlitePool {
    fn for_writes<'a>(&'a self, c: &'a SqlConnector) -> &'a Self {
        c.lite_writer.as_ref().map_or(self, |w| &w.pool)
    }
}

/// [`SqlConnector::read_packed`] on a batch's transaction: SQLite's; the servers read no
/// packed batch (`SqlConnector::packs`).
trait ReadPacked {
    fn read_packed<'a>(
        &'a mut self,
        _: &'a SqlConnector,
        _: &'a Scope,
        _: Option<&'a [Value]>,
        _: usize,
    ) -> impl std::future::Future<Output = Result<Option<Packed>, sqlx::Error>> + Send + 'a {
        async { Ok(None) }
    }
}

impl ReadPacked for sqlx::PgConnection {}

impl ReadPacked for sqlx::MySqlConnection {}

impl ReadPacked for sqlx::SqliteConnection {
    async fn read_packed<'a>(
        &'a mut self,
        c: &'a SqlConnector,
        scope: &'a Scope,
        after: Option<&'a [Value]>,
        limit: usize,
    ) -> Result<Option<Packed>, sqlx::Error> {
        c.read_packed(self, scope, after, limit).await
    }
}

impl fmt::Display for SqlConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.dialect {
            Dialect::Postgres => "Postgres",
            Dialect::MySql => "MySql",
            Dialect::Sqlite => "Sqlite",
        };
        write!(f, "{kind}({})", self.name)
    }
}

/// A database message is shown only when it quotes nothing: MySQL's "Duplicate entry '…'" and
/// PostgreSQL's `invalid input syntax for type uuid: "…"` quote row values (and MySQL does not
/// even escape quotes inside them). Otherwise only the error's class is kept.
pub fn sanitize(msg: &str) -> String {
    // A server set to another language (`lc_messages`) quotes with other marks (« », „ “, ‘ ’,
    // 「 」…): a message that is not plain ASCII is withheld too.
    if msg.contains(['\'', '"', '`']) || !msg.is_ascii() {
        "the database's message quotes values and is withheld".to_string()
    } else {
        msg.to_string()
    }
}

/// MySQL/MariaDB's privilege errors quote the user and table (`SELECT command denied to user
/// 'u'@'h' for table `db`.`t``), so `sanitize` would withhold them whole and the operator would
/// not learn that a grant is missing. Keep what is safe: the refused command.
fn mysql_denied(d: &dyn sqlx::error::DatabaseError) -> Option<String> {
    let number = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()?.number();
    match number {
        // ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR
        1142 | 1143 => {
            let verb = d.message().split_once(" command denied").map(|(v, _)| v)?;
            let verb =
                if verb.len() <= 32 && verb.chars().all(|c| c.is_ascii_alphabetic() || c == ' ') { verb } else { "a" };
            Some(format!("permission denied: {verb} command denied to this user (a grant is missing)"))
        }
        // ER_DBACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_PROCACCESS_DENIED_ERROR
        1044 | 1227 | 1370 => Some("permission denied: access denied to this user (a grant is missing)".into()),
        _ => None,
    }
}

/// MariaDB/MySQL messages kept as they are: the server's fixed texts, which quote nothing, for
/// the errors an operator acts on (a lock wait, a deadlock, a read-only or stopping server).
/// Any other text may be a `SIGNAL`'s, whatever its number.
fn mysql_fixed_text(number: u16, message: &str) -> bool {
    const FIXED: &[(u16, &str)] = &[
        (1205, "Lock wait timeout exceeded; try restarting transaction"),
        (1213, "Deadlock found when trying to get lock; try restarting transaction"),
        (1317, "Query execution was interrupted"),
        (1040, "Too many connections"),
        (1053, "Server shutdown in progress"),
        (1792, "Cannot execute statement in a READ ONLY transaction"),
        (1792, "Cannot execute statement in a READ ONLY transaction."),
        (1969, "Query execution was interrupted (max_statement_time exceeded)"),
        (3024, "Query execution was interrupted, maximum statement execution time exceeded"),
    ];
    let read_only = ["MariaDB", "MySQL"].iter().any(|server| {
        ["--read-only", "--super-read-only"].iter().any(|option| {
            message
                == format!(
                    "The {server} server is running with the {option} option so it cannot execute this statement"
                )
        })
    });
    FIXED.iter().any(|(n, t)| *n == number && message == *t) || (number == 1290 && read_only)
}

/// A policy's table as its schema (if named) and bare name: `crm.people` → (`crm`, `people`).
fn split_table(table: &str) -> (Option<String>, String) {
    match table.split_once('.') {
        Some((s, t)) => (Some(s.to_string()), t.to_string()),
        None => (None, table.to_string()),
    }
}

/// `columns` with `unique` set for those named in `unique` (see `catalog::PG_UNIQUE`).
fn mark_unique(mut columns: Vec<ColumnInfo>, unique: &[String]) -> Vec<ColumnInfo> {
    for c in &mut columns {
        c.unique = unique.contains(&c.name);
    }
    columns
}

/// An error whose text the database's users wrote (PostgreSQL `RAISE` in a trigger or function,
/// whatever its code; MySQL/MariaDB `SIGNAL`; SQLite `RAISE()` in a trigger): it may quote a
/// row's values without quotes around them (`no delete of alice@example.com`), which `sanitize`
/// cannot tell, so none of it is kept.
fn user_raised(d: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        // `RAISE` with any `ERRCODE` comes from PL/pgSQL's `exec_stmt_raise`; class P0 is
        // `raise_exception` and its kin from other languages.
        return pg.routine() == Some("exec_stmt_raise") || pg.code().starts_with("P0");
    }
    if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // ER_SIGNAL_EXCEPTION, whatever SQLSTATE the SIGNAL gave; 45xxx is the class for it.
        return my.number() == 1644 || my.code().is_some_and(|c| c.starts_with("45"));
    }
    // SQLite: SQLITE_CONSTRAINT_TRIGGER.
    d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() && d.code().as_deref() == Some("1811")
}

fn db_err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ConnectorError {
    let context = context.into();
    move |e| {
        let message = match &e {
            sqlx::Error::Database(d) => {
                let code = d.code().map(|c| format!(" [{c}]")).unwrap_or_default();
                let kind = match d.kind() {
                    sqlx::error::ErrorKind::UniqueViolation => "unique constraint violated: ",
                    sqlx::error::ErrorKind::ForeignKeyViolation => "foreign key violated: ",
                    sqlx::error::ErrorKind::NotNullViolation => "NOT NULL violated: ",
                    sqlx::error::ErrorKind::CheckViolation => "check constraint violated: ",
                    _ => "",
                };
                let constraint = d.constraint().map(|c| format!(" (constraint {c})")).unwrap_or_default();
                if let Some(denied) = mysql_denied(d.as_ref()) {
                    return ConnectorError::Query { context, message: format!("{denied}{code}") };
                }
                if user_raised(d.as_ref()) {
                    return ConnectorError::Query {
                        context,
                        message: format!(
                            "a trigger or function raised an error; its text is withheld (it may quote the row's values){code}"
                        ),
                    };
                }
                // MariaDB/MySQL: a `SIGNAL` may give any error number and SQLSTATE (1062,
                // '23000': a duplicate key, to the client), and its text quotes nothing:
                // only the server's own fixed texts are kept (found by a review: a trigger's
                // `no delete of <e-mail>` reached the signed report).
                if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                    let number = my.number();
                    let text = match mysql_fixed_text(number, d.message()) {
                        true => d.message().to_string(),
                        false => format!("the database's message is withheld (error {number})"),
                    };
                    return ConnectorError::Query { context, message: format!("{kind}{text}{constraint}{code}") };
                }
                format!("{kind}{}{constraint}{code}", sanitize(d.message()))
            }
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                return ConnectorError::Lost { context, message: sanitize(&e.to_string()) };
            }
            other => sanitize(&other.to_string()),
        };
        ConnectorError::Query { context, message }
    }
}

/// Runs `$body` with `$p` bound to the concrete pool, whatever the backend.
macro_rules! with_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Pg($p) => $body,
            Pool::My($p) => $body,
            Pool::Lite($p) => $body,
        }
    };
}

/// Binds the statement's parameters onto a `sqlx` query.
///
/// A statement with many parameters (one per key or value of a batch) is not kept in the
/// connection's prepared-statement cache: its text changes with the batch's shape (which
/// columns vary, how many rows), so caching it would keep up to 100 copies of a text of
/// hundreds of kilobytes per connection (memory grew with the table, 36 to 105 MiB at a
/// million rows, before this); small fixed statements (counts, range deletes) stay cached.
macro_rules! bound {
    ($sql:expr) => {{
        let mut q = sqlx::query(&$sql.text).persistent($sql.params.len() <= MAX_CACHED_PARAMS);
        for v in &$sql.params {
            q = match v {
                Value::Null => q.bind(None::<String>),
                Value::Int(i) => q.bind(*i),
                Value::Float(f) => q.bind(*f),
                Value::Text(s) => q.bind(s.clone()),
                Value::Bool(b) => q.bind(*b),
                Value::Timestamp(t) => q.bind(*t),
                Value::Date(d) => q.bind(*d),
                Value::Bytes(b) => q.bind(b.clone()),
            };
        }
        q
    }};
}

/// Decodes column `i` of a row into a [`Value`] according to the type the database reports.
trait DecodeRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error>;

    /// A row of a single-column key, then the subject if the scope has one.
    fn candidate(&self, with_subject: bool) -> Result<Candidate, sqlx::Error> {
        let key = self.value(0)?;
        let subject = if with_subject { Some(self.value(1)?) } else { None };
        Ok(Candidate { key: vec![key], subject })
    }

    /// A row of [`Builder::select_next_packed`] (SQLite only): `None` when its lists cannot
    /// give the batch back exactly (a key or subject that is not an integer).
    fn packed(&self, _subjects: Subjects) -> Result<Option<Packed>, sqlx::Error> {
        Ok(None)
    }

    /// The row of [`Builder::delete_next_packed`] (PostgreSQL only): the rows it deleted.
    fn arrays(&self, _subjects: Subjects) -> Result<Vec<Candidate>, sqlx::Error> {
        Err(sqlx::Error::Protocol("a batch as arrays is PostgreSQL's".into()))
    }
}

/// A batch read as one row by [`Builder::select_next_packed`].
struct Packed {
    /// In key order.
    batch: Vec<Candidate>,
    /// The batch's keys, in the same order.
    keys: Vec<i64>,
    /// The keys between the batch's first and last that are not in it, when they are few
    /// ([`others_between`]): the batch is then destroyed as its key range less those.
    others: Option<Vec<i64>>,
}

/// The most keys between a batch's first and last that may be left out of it for the batch to
/// be destroyed as its key range less those ([`Builder::delete_listed`]): a quarter of the batch.
fn most_others(batch: usize) -> usize {
    batch / 4 + 16
}

/// Reads the keys between the first and the last of `p`'s batch (`between`: the statement of
/// [`Builder::keys_between`], bound here), on the connection (and in the transaction) that read
/// the batch, and sets `p.others` to those not in it when they are few and all integers (else
/// it stays `None`: the batch goes by its keys).
async fn others_between(c: &mut sqlx::SqliteConnection, between: Sql, p: &mut Packed) -> Result<(), sqlx::Error> {
    let (Some(&first), Some(&last)) = (p.keys.first(), p.keys.last()) else { return Ok(()) };
    let most = p.keys.len() + most_others(p.keys.len());
    let read = between.rebound(vec![Value::Int(first), Value::Int(last), Value::Int(most as i64 + 1)]);
    let row = bound!(read).fetch_one(&mut *c).await?;
    let (n, list): (i64, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    if n as usize > most {
        tracing::debug!(keys = p.keys.len(), "many rows between the batch's keys: the batch goes by its keys");
        return Ok(());
    }
    let Some(mut between) = list
        .unwrap_or_default()
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<i64>().ok())
        .collect::<Option<Vec<_>>>()
    else {
        tracing::debug!(
            keys = p.keys.len(),
            "a key between the batch's keys is not an integer: the batch goes by its keys"
        );
        return Ok(());
    };
    // As many keys as were counted (a value that is no number is never in the range).
    if between.len() as i64 != n {
        return Ok(());
    }
    between.sort_unstable();
    // Every key of the batch must be among them (in order, both sorted); the rest are the others.
    let mut others = Vec::with_capacity(between.len().saturating_sub(p.keys.len()));
    let mut batch = p.keys.iter().peekable();
    for k in between {
        match batch.peek() {
            Some(&&b) if b == k => {
                batch.next();
            }
            _ => others.push(k),
        }
    }
    if batch.next().is_none() {
        tracing::debug!(
            keys = p.keys.len(),
            others = others.len(),
            "the batch goes as its key range less the keys not in it"
        );
        p.others = Some(others);
    }
    Ok(())
}

fn unknown_type(name: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unsupported column type {name}").into())
}

impl DecodeRow for PgRow {
    fn arrays(&self, shape: Subjects) -> Result<Vec<Candidate>, sqlx::Error> {
        let n: i64 = self.try_get(0)?;
        let keys: Vec<i64> = self.try_get::<Option<Vec<i64>>, _>(1)?.unwrap_or_default();
        let subjects: Vec<Option<i64>> = match shape {
            Subjects::Keys => keys.iter().copied().map(Some).collect(),
            Subjects::None => vec![None; keys.len()],
            Subjects::Listed => self.try_get::<Option<Vec<Option<i64>>>, _>(2)?.unwrap_or_default(),
        };
        if keys.len() as i64 != n || subjects.len() as i64 != n {
            return Err(sqlx::Error::Protocol(format!(
                "{n} rows deleted, {} keys and {} subjects returned",
                keys.len(),
                subjects.len()
            )));
        }
        let subject = |s: Option<i64>| (shape != Subjects::None).then(|| s.map_or(Value::Null, Value::Int));
        Ok(keys
            .into_iter()
            .zip(subjects)
            .map(|(k, s)| Candidate { key: vec![Value::Int(k)], subject: subject(s) })
            .collect())
    }

    fn value(&self, i: usize) -> Result<Value, sqlx::Error> {
        if self.try_get_raw(i)?.is_null() {
            return Ok(Value::Null);
        }
        let name = self.column(i).type_info().name().to_string();
        Ok(match name.as_str() {
            "INT2" => Value::Int(self.try_get::<i16, _>(i)? as i64),
            "INT4" => Value::Int(self.try_get::<i32, _>(i)? as i64),
            "INT8" => Value::Int(self.try_get::<i64, _>(i)?),
            "FLOAT4" => Value::Float(self.try_get::<f32, _>(i)? as f64),
            "FLOAT8" => Value::Float(self.try_get::<f64, _>(i)?),
            "BOOL" => Value::Bool(self.try_get(i)?),
            "TIMESTAMP" => Value::Timestamp(self.try_get(i)?),
            "TIMESTAMPTZ" => Value::Timestamp(self.try_get::<DateTime<Utc>, _>(i)?.naive_utc()),
            "DATE" => Value::Date(self.try_get(i)?),
            "BYTEA" => Value::Bytes(self.try_get(i)?),
            // (`citext`, an extension's type, is named as its catalog spells it.)
            "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" | "citext" => {
                Value::Text(self.try_get_unchecked(i)?)
            }
            other => return Err(unknown_type(other)),
        })
    }
}

impl DecodeRow for MySqlRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error> {
        if self.try_get_raw(i)?.is_null() {
            return Ok(Value::Null);
        }
        let name = self.column(i).type_info().name().to_ascii_uppercase();
        let base = name.trim_end_matches(" UNSIGNED");
        Ok(match base {
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "BOOLEAN" => {
                if name.ends_with("UNSIGNED") {
                    // Above 2^63 - 1 a value has no exact integer here: refused, not wrapped to
                    // a negative one (a due count's last key became negative, and the batches
                    // between its first and last key found nothing).
                    let u = self.try_get_unchecked::<u64, _>(i)?;
                    Value::Int(i64::try_from(u).map_err(|_| {
                        sqlx::Error::Decode("an unsigned integer above 9223372036854775807 is not supported".into())
                    })?)
                } else {
                    Value::Int(self.try_get_unchecked::<i64, _>(i)?)
                }
            }
            // BIT(n) comes as its bytes, most significant first (n <= 64).
            "BIT" => {
                let u = self.try_get_unchecked::<Vec<u8>, _>(i)?.iter().fold(0u64, |v, b| v << 8 | u64::from(*b));
                Value::Int(i64::try_from(u).map_err(|_| {
                    sqlx::Error::Decode("a BIT(64) value above 9223372036854775807 is not supported".into())
                })?)
            }
            "FLOAT" => Value::Float(self.try_get_unchecked::<f32, _>(i)? as f64),
            "DOUBLE" => Value::Float(self.try_get_unchecked::<f64, _>(i)?),
            // A zero or partial date (`0000-00-00`, `1990-05-00`: MariaDB keeps them outside strict
            // mode) has no chrono value: it is handed over as its text, so that the row is judged
            // on its own (a strategy that cannot use it fails that row, not the batch).
            "DATETIME" | "TIMESTAMP" => match self.try_get_unchecked::<NaiveDateTime, _>(i) {
                Ok(t) => Value::Timestamp(t),
                Err(e) => {
                    Value::Text(mysql_date_text(self.try_get_unchecked::<Vec<u8>, _>(i).ok().as_deref()).ok_or(e)?)
                }
            },
            "DATE" => match self.try_get_unchecked::<NaiveDate, _>(i) {
                Ok(d) => Value::Date(d),
                Err(e) => {
                    Value::Text(mysql_date_text(self.try_get_unchecked::<Vec<u8>, _>(i).ok().as_deref()).ok_or(e)?)
                }
            },
            "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" | "JSON" => {
                Value::Text(self.try_get_unchecked(i)?)
            }
            "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                let b: Vec<u8> = self.try_get_unchecked(i)?;
                match String::from_utf8(b) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Bytes(e.into_bytes()),
                }
            }
            "NULL" => Value::Null,
            other => return Err(unknown_type(other)),
        })
    }
}

/// The text of a MariaDB/MySQL date or datetime in the binary protocol (a length, then year,
/// month, day and, if longer, hour, minute, second), zero parts included: `0000-00-00`,
/// `1990-05-00 10:00:00`. The text protocol's value is already text.
fn mysql_date_text(buf: Option<&[u8]>) -> Option<String> {
    let buf = buf?;
    if let Ok(s) = std::str::from_utf8(buf) {
        if s.len() >= 10 && s.as_bytes()[4] == b'-' {
            return Some(s.to_string());
        }
    }
    let (&len, rest) = buf.split_first()?;
    match len {
        0 => Some("0000-00-00".into()),
        4 | 7 | 11 if rest.len() >= len as usize => {
            let year = u16::from_le_bytes([rest[0], rest[1]]);
            let date = format!("{year:04}-{:02}-{:02}", rest[2], rest[3]);
            Some(match len {
                4 => date,
                _ => format!("{date} {:02}:{:02}:{:02}", rest[4], rest[5], rest[6]),
            })
        }
        _ => None,
    }
}

impl DecodeRow for SqliteRow {
    fn value(&self, i: usize) -> Result<Value, sqlx::Error> {
        let raw = self.try_get_raw(i)?;
        if raw.is_null() {
            return Ok(Value::Null);
        }
        let name = raw.type_info().name().to_string();
        Ok(match name.as_str() {
            "INTEGER" | "BOOLEAN" => Value::Int(self.try_get_unchecked::<i64, _>(i)?),
            "REAL" => Value::Float(self.try_get_unchecked::<f64, _>(i)?),
            "BLOB" => Value::Bytes(self.try_get_unchecked(i)?),
            _ => Value::Text(self.try_get_unchecked(i)?),
        })
    }

    fn packed(&self, subjects: Subjects) -> Result<Option<Packed>, sqlx::Error> {
        unpack(self, subjects)
    }
}

fn decode_all<R: DecodeRow + Row>(row: &R) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len()).map(|i| row.value(i)).collect()
}

/// PostgreSQL with a holds table, in a fast path's transaction: before its destroying
/// statement, the snapshot's oldest running transaction (`holds_since`; `None` where the holds
/// table has no `xmin` or there is nothing to watch)…
macro_rules! holds_since {
    ($self:expr, $b:expr, $tx:expr, $watch:expr, $ctx:expr) => {
        match ($watch, $self.holds_xmin) {
            (true, true) => {
                let snap = $b.holds_snapshot_xmin();
                let row = bound!(snap).fetch_one(&mut *$tx).await.map_err(db_err(&$ctx))?;
                let text: String = row.try_get(0).map_err(db_err(&$ctx))?;
                text.parse::<u64>().ok().map(|x| (x % (1u64 << 32)) as u32).filter(|x| *x >= 3)
            }
            _ => None,
        }
    };
}

/// …and after it, whether a hold may have been committed while it ran on a row it deleted:
/// holds written by a transaction not older than that snapshot's oldest (usually none: one
/// short scan of the holds table), and only then the full probe of the subjects
/// (`Builder::holds_probe`, built only then). Subjects it cannot check count as found.
macro_rules! held_since {
    ($b:expr, $tx:expr, $since:expr, $subjects:expr, $ctx:expr) => {{
        let subjects: &[Value] = $subjects;
        let recent = match $since {
            Some(x) => {
                let recent = $b.holds_recent(x, subjects);
                !bound!(recent).fetch_all(&mut *$tx).await.map_err(db_err(&$ctx))?.is_empty()
            }
            None => true,
        };
        match recent.then(|| $b.holds_probe(subjects)) {
            None => false,
            Some(Some(probe)) => !bound!(probe).fetch_all(&mut *$tx).await.map_err(db_err(&$ctx))?.is_empty(),
            Some(None) => true,
        }
    }};
}

/// The subjects of a batch's candidates, `NULL` for none, for the hold probe (`held_since`).
fn subjects_of(batch: &[Candidate]) -> Vec<Value> {
    batch.iter().map(|c| c.subject.clone().unwrap_or(Value::Null)).collect()
}

impl SqlConnector {
    /// Opens a pool. `read_only` sessions cannot write at all: `plan` and `validate` use them.
    /// `lock_wait`: how long a statement waits for a lock another session holds (the
    /// connection's `lock_wait`).
    pub async fn open(
        name: &str,
        url: &str,
        read_only: bool,
        journal_table: &str,
        holds: Option<HoldsTable>,
        lock_wait: Duration,
    ) -> Result<SqlConnector, ConnectorError> {
        let conn_err = |e: sqlx::Error| ConnectorError::Connect {
            name: name.to_string(),
            message: redact_url(&e.to_string(), url),
        };
        // A URL that cannot be read (a bad port, an unknown sslmode) is the configuration's
        // fault (exit 2), not a server that did not answer (1).
        let url_err = |e: sqlx::Error| {
            ConnectorError::Invalid(format!(
                "connection '{name}': the URL cannot be read: {}",
                redact_url(&e.to_string(), url)
            ))
        };
        let scheme = url.split(':').next().unwrap_or_default();
        let acquire = Duration::from_secs(15);
        let (dialect, pool, lite_writer) = match scheme {
            "postgres" | "postgresql" => {
                // No notices or warnings from the server: a trigger's `RAISE WARNING` may quote a row's
                // values, and the driver would log it (errors are sanitized, `sanitize`).
                let mut opts = PgConnectOptions::from_str(url)
                    .map_err(url_err)?
                    .options([("TimeZone", "UTC"), ("client_min_messages", "error")]);
                if read_only {
                    opts = opts.options([("default_transaction_read_only", "on")]);
                } else {
                    // A run's statements are small keyed batches: starting parallel workers for
                    // each (a `LIMIT` scan the planner thinks large) costs more than the scan.
                    opts = opts.options([("max_parallel_workers_per_gather", "0")]);
                    // A batch statement runs with other key bounds each time, over a table it is
                    // emptying: a generic plan, chosen once, can scan the whole range each time.
                    opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
                }
                // A row lock the application holds (a session idle in its transaction) would
                // keep a batch waiting for ever, and a scheduler's every later tick with it.
                opts = opts.options([("lock_timeout", format!("{}s", lock_wait.as_secs()))]);
                let pool = match PgPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(acquire)
                    .connect_with(opts.clone())
                    .await
                {
                    Ok(p) => p,
                    Err(e) => return Err(conn_err(pool_cause(e, &opts, acquire).await)),
                };
                (Dialect::Postgres, Pool::Pg(pool), None)
            }
            "mysql" | "mariadb" => {
                let url = url.replacen("mariadb://", "mysql://", 1);
                let opts = MySqlConnectOptions::from_str(&url).map_err(url_err)?.timezone(Some("+00:00".to_string()));
                let pool = MySqlPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(acquire)
                    .after_connect(move |c, _| {
                        Box::pin(async move {
                            c.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                            // Row locks and metadata locks (a table being altered) alike.
                            let wait = lock_wait.as_secs();
                            c.execute(
                                format!("SET SESSION innodb_lock_wait_timeout = {wait}, lock_wait_timeout = {wait}")
                                    .as_str(),
                            )
                            .await?;
                            if read_only {
                                c.execute("SET SESSION TRANSACTION READ ONLY").await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(opts.clone())
                    .await;
                let pool = match pool {
                    Ok(p) => p,
                    Err(e) => return Err(conn_err(pool_cause(e, &opts, acquire).await)),
                };
                (Dialect::MySql, Pool::My(pool), None)
            }
            "sqlite" => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(url_err)?
                    .read_only(read_only)
                    .busy_timeout(lock_wait)
                    .foreign_keys(true)
                    .row_buffer_size(ROW_BUFFER)
                    // `REGEXP` (the `regex` crate, each pattern compiled once per statement):
                    // the in-place IPv4 guard (`Builder::in_place_form`).
                    .with_regexp();
                // Named, where the driver says only "unable to open database file" (a file's path
                // is no secret; found by a README walkthrough).
                let file = opts.get_filename().to_path_buf();
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                // (`?mode=rwc` asks for the file to be created: the operator's explicit choice.)
                let create = url.contains("mode=rwc");
                if !in_memory && !create && !file.exists() {
                    return Err(ConnectorError::Connect {
                        name: name.to_string(),
                        message: format!(
                            "the SQLite file '{}' does not exist (lapse never creates a database; a relative path is taken from the config file's directory)",
                            file.display()
                        ),
                    });
                }
                let conn_err = |e: sqlx::Error| ConnectorError::Connect {
                    name: name.to_string(),
                    message: format!("{} (SQLite file '{}')", redact_url(&e.to_string(), url), file.display()),
                };
                if !read_only {
                    // WAL stays set in the file: switched once, by one connection, not by every
                    // pooled one. Switching needs the file to itself, and workers started at once
                    // (the shards of an Indexed Job) meet here: "database is locked" is retried.
                    let mut attempt = 0u64;
                    loop {
                        let wal = opts.clone().journal_mode(SqliteJournalMode::Wal);
                        match sqlx::ConnectOptions::connect(&wal).await {
                            Ok(c) => {
                                let _ = sqlx::Connection::close(c).await;
                                break;
                            }
                            Err(sqlx::Error::Database(e))
                                if attempt < 20
                                    && e.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5) =>
                            {
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                            }
                            Err(e) => return Err(conn_err(e)),
                        }
                    }
                }
                // A connection the driver still counts as in a transaction is not used again:
                // after a COMMIT that failed with an I/O error SQLite has rolled back itself, the
                // driver's ROLLBACK then fails ("no transaction is active") and its count stays
                // at one, and every later batch on it failed with "begin_with at non-zero
                // transaction depth" (found by a read-only review). Checked at acquire, after the
                // release's ping has run the queued rollback; such a connection is closed and
                // another opened.
                let pool = SqlitePoolOptions::new()
                    .before_acquire(sqlite_connection_fresh)
                    // WAL: the counts, the verification and the next batch's reads go on while a
                    // batch writes; writers wait for each other (`BEGIN IMMEDIATE`, busy timeout).
                    // Five: a batch (on the writing connection below when it selects its own
                    // rows), the next batch's candidates or read ahead, the previous batch's
                    // verification, and the report's counts that run alongside the batches: the
                    // counts taken on a snapshot (`counts_pinned`), the rows per hold and the
                    // unknown anchors (beside those, a held count by semi-join waits its turn).
                    .max_connections(5)
                    .acquire_timeout(acquire)
                    .connect_with(opts.clone())
                    .await
                    .map_err(conn_err)?;
                // The one writing connection lives as long as the run (a replaced one, after an
                // error, is told apart by `LiteWriter::opened`).
                let writer = match read_only {
                    true => None,
                    false => {
                        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                        let counter = opened.clone();
                        let pool = SqlitePoolOptions::new()
                            .before_acquire(sqlite_connection_fresh)
                            .max_connections(1)
                            .idle_timeout(None)
                            .max_lifetime(None)
                            .acquire_timeout(acquire)
                            .after_connect(move |_, _| {
                                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                Box::pin(async { Ok(()) })
                            })
                            .connect_lazy_with(opts);
                        Some(LiteWriter { pool, opened })
                    }
                };
                (Dialect::Sqlite, Pool::Lite(pool), writer)
            }
            _ => {
                return Err(ConnectorError::Invalid(
                    url_scheme_problem(name, url).unwrap_or_else(|| format!("connection '{name}': unreadable URL")),
                ));
            }
        };
        let (returning, my_timestamp_max) = match &pool {
            Pool::My(p) => {
                let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(p).await.map_err(conn_err)?;
                (version.contains("MariaDB"), catalog::my_timestamp_max(&version))
            }
            _ => (true, catalog::my_timestamp_max("")),
        };
        let db_random = match &pool {
            Pool::Pg(p) => sqlx::query("SELECT gen_random_uuid()").execute(p).await.is_ok(),
            Pool::My(p) => sqlx::query("SELECT RANDOM_BYTES(1)").execute(p).await.is_ok(),
            Pool::Lite(_) => true,
        };
        // SQLite: whether the schema declares no collation anywhere (`Builder::split_holds`).
        let split_holds = match &pool {
            Pool::Lite(p) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%collate%'")
                    .fetch_one(p)
                    .await
                    .is_ok_and(|n| n == 0)
            }
            _ => true,
        };
        // (An in-memory database answers `memory`; one whose file could not be switched, its mode.)
        let lite_wal = match (&pool, &lite_writer) {
            (Pool::Lite(p), Some(_)) => sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
                .fetch_one(p)
                .await
                .is_ok_and(|m| m.eq_ignore_ascii_case("wal")),
            _ => false,
        };
        let mut c = SqlConnector {
            name: name.to_string(),
            dialect,
            pool,
            journal_table: journal_table.to_string(),
            holds_table: None,
            returning,
            db_random,
            split_holds,
            lite_wal,
            holds_xmin: false,
            journal_shape: std::sync::atomic::AtomicU8::new(JournalShape::Binary as u8),
            due_bounds: std::sync::Mutex::new(std::collections::HashMap::new()),
            leads_index: std::sync::Mutex::new(std::collections::HashMap::new()),
            lapsed_ranges: std::sync::Mutex::new(std::collections::HashMap::new()),
            run_locks: tokio::sync::Mutex::new(Vec::new()),
            lite_writer,
            read_ahead: std::sync::Mutex::new(None),
            my_timestamp_max,
        };
        // A journal table that exists must be one (its first batch would fail, every run).
        match c.describe_table(&c.journal_table).await {
            Ok(t) => c.learn_journal(&t).map_err(|m| ConnectorError::Invalid(format!("connection '{name}': {m}")))?,
            Err(ConnectorError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(h) = holds {
            let info = c.describe_table(&h.table).await.map_err(|e| match e {
                ConnectorError::NotFound { .. } => {
                    ConnectorError::Invalid(format!("connection '{name}': holds table '{}' not found", h.table))
                }
                other => other,
            })?;
            for col in [Some(&h.id), Some(&h.subject), h.policy.as_ref(), h.expires.as_ref(), h.matter.as_ref()]
                .into_iter()
                .flatten()
            {
                if info.column(col).is_none() {
                    return Err(ConnectorError::Invalid(format!(
                        "connection '{name}': holds table '{}' has no column '{col}'",
                        h.table
                    )));
                }
            }
            if let Some(pc) = &h.policy {
                // Policy names are text: a number column is compared with them by every count
                // (PostgreSQL refuses `integer = text` there, after validation passed).
                let kind = info.kind(pc);
                if !matches!(kind, ColumnKind::Text | ColumnKind::Other) {
                    return Err(ConnectorError::Invalid(format!(
                        "connection '{name}': the policy column '{pc}' of holds table '{}' is {}, not text (it holds policy names)",
                        h.table,
                        info.column(pc).map(|c| c.sql_type.as_str()).unwrap_or("?")
                    )));
                }
            }
            if let Some(e) = &h.expires {
                // SQLite keeps times as text or numbers, read by `julianday`; elsewhere text
                // would be compared with a time (PostgreSQL refuses it at the first count,
                // MariaDB reads an unparseable text as no time).
                let kind = info.kind(e);
                if c.dialect != Dialect::Sqlite && !kind.is_temporal() {
                    return Err(ConnectorError::Invalid(format!(
                        "connection '{name}': the expires column '{e}' of holds table '{}' is {}, not a date or timestamp",
                        h.table,
                        info.column(e).map(|c| c.sql_type.as_str()).unwrap_or("?")
                    )));
                }
            }
            if let Pool::Pg(p) = &c.pool {
                let kind: Option<String> = sqlx::query_scalar(catalog::PG_RELKIND)
                    .bind(&h.table)
                    .fetch_optional(p)
                    .await
                    .map_err(db_err(format!("reading holds table '{}'", h.table)))?
                    .flatten();
                c.holds_xmin = kind.as_deref() == Some("r");
            }
            c.holds_table = Some((h, info));
        }
        Ok(c)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn journal(&self) -> JournalShape {
        JournalShape::from_u8(self.journal_shape.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Takes the shape of the existing journal table `t`; an error when it is no journal.
    fn learn_journal(&self, t: &TableInfo) -> Result<(), String> {
        let shape = journal_shape(t, self.dialect != Dialect::Postgres)?;
        self.journal_shape.store(shape as u8, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// MariaDB rather than MySQL: of the two, only MariaDB has `DELETE ... RETURNING`.
    fn is_mariadb(&self) -> bool {
        self.dialect == Dialect::MySql && self.returning
    }

    fn builder<'a>(&'a self, scope: &'a Scope) -> Builder<'a> {
        Builder {
            d: self.dialect,
            scope,
            holds_info: self.holds_table.as_ref().map(|(_, i)| i),
            journal_table: &self.journal_table,
            mariadb: self.is_mariadb(),
            db_random: self.db_random,
            counting: std::cell::Cell::new(false),
            bare_in: std::cell::Cell::new(false),
            split_holds: self.split_holds,
            quick_pending: false,
            unknown_years: None,
            batch_keys: Default::default(),
        }
    }

    async fn rows(&self, sql: &Sql, context: &str) -> Result<Vec<Vec<Value>>, ConnectorError> {
        with_pool!(self, p => {
            let rows = bound!(sql).fetch_all(p).await.map_err(db_err(context))?;
            rows.iter().map(decode_all).collect::<Result<Vec<_>, _>>().map_err(db_err(context))
        })
    }

    /// [`Self::rows`] on the pool or on one pinned SQLite connection ([`Via`]).
    async fn rows_via(&self, via: &Via<'_>, sql: &Sql, context: &str) -> Result<Vec<Vec<Value>>, ConnectorError> {
        match via {
            Via::Pool => self.rows(sql, context).await,
            Via::Pinned(c) => {
                let mut c = c.lock().await;
                let rows = bound!(sql).fetch_all(&mut **c).await.map_err(db_err(context))?;
                rows.iter().map(decode_all).collect::<Result<Vec<_>, _>>().map_err(db_err(context))
            }
        }
    }

    /// Creates the journal table if it does not exist (`run` only; `plan` never writes).
    ///
    /// Looks first: `CREATE TABLE IF NOT EXISTS` needs the CREATE privilege even when the table
    /// exists (PostgreSQL checks the schema's CREATE before existence), so a run user without
    /// CREATE could not use a journal table its administrator made for it.
    pub async fn ensure_journal(&self) -> Result<(), ConnectorError> {
        match self.describe_table(&self.journal_table).await {
            // A table made for an earlier lapse is written in its shape.
            Ok(t) => return self.learn_journal(&t).map_err(ConnectorError::Invalid),
            Err(ConnectorError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let dummy = journal_scope();
        let ddl = self.builder(&dummy).journal_create();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = with_pool!(self, p => { sqlx::query(&ddl).execute(p).await.map(|_| ()).map_err(db_err(format!("creating journal table '{}'", self.journal_table))) });
            // Shards starting at once race on `CREATE TABLE IF NOT EXISTS` (PostgreSQL can
            // answer a unique violation in its catalog); the loser's retry finds the table.
            if r.is_ok() {
                // (A table made meanwhile by another shard is of the same shape.)
                self.journal_shape.store(JournalShape::Binary as u8, std::sync::atomic::Ordering::Relaxed);
                if let Some(tune) = self.builder(&dummy).journal_storage() {
                    // Only a speed setting: a refusal changes nothing else.
                    let t = with_pool!(self, p => { sqlx::query(&tune).execute(p).await.map(|_| ()) });
                    if let Err(e) = t {
                        tracing::debug!("journal table storage not tuned: {}", sanitize(&e.to_string()));
                    }
                }
            }
            if r.is_ok() || attempt == 3 {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
    }

    async fn describe_table(&self, table: &str) -> Result<TableInfo, ConnectorError> {
        let ctx = format!("reading the catalog of '{table}'");
        let not_found = || ConnectorError::NotFound { what: format!("table '{table}'") };
        let (schema, bare) = split_table(table);
        match &self.pool {
            Pool::Pg(p) => {
                let reg = self.dialect.quote(table);
                let cols = sqlx::query(catalog::PG_COLUMNS).bind(&reg).fetch_all(p).await.map_err(db_err(&ctx))?;
                if cols.is_empty() {
                    return Err(not_found());
                }
                let columns = cols
                    .iter()
                    .map(|r| {
                        let kind = catalog::pg_kind(&r.try_get::<String, _>(2)?);
                        Ok(ColumnInfo {
                            name: r.try_get(0)?,
                            sql_type: r.try_get(1)?,
                            kind,
                            instant: kind.is_temporal(),
                            nullable: r.try_get(3)?,
                            max_len: r.try_get::<Option<i64>, _>(4)?.map(|x| x as u64),
                            generated: r.try_get(5)?,
                            unique: false,
                            on_update: false,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(db_err(&ctx))?;
                let unique = sqlx::query_scalar::<_, String>(catalog::PG_UNIQUE)
                    .bind(&reg)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                let columns = mark_unique(columns, &unique);
                let pk = sqlx::query_scalar::<_, String>(catalog::PG_PRIMARY_KEY)
                    .bind(&reg)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                let fks = sqlx::query(catalog::PG_REFERENCED_BY).bind(&reg).fetch_all(p).await.map_err(db_err(&ctx))?;
                // A key to one partition of a partitioned table: its rows would be matched to the
                // partitioned table's by value, and a child of a live row in that partition went
                // with a due row of another partition holding the same value (found by a
                // review). Not followed yet: refused, fail closed.
                for r in &fks {
                    if let Some(part) = r.try_get::<Option<String>, _>(2).map_err(db_err(&ctx))? {
                        let (child, constraint): (String, String) =
                            (r.try_get(1).map_err(db_err(&ctx))?, r.try_get(0).map_err(db_err(&ctx))?);
                        return Err(ConnectorError::Invalid(format!(
                            "table {child} references partition {part} of '{table}' through foreign key '{constraint}': \
                             lapse does not follow a foreign key to one partition; reference the partitioned table, \
                             or give '{table}''s partitions policies of their own"
                        )));
                    }
                }
                let referenced_by = fks
                    .iter()
                    .map(|r| {
                        Ok(ForeignKey {
                            constraint: r.try_get(0)?,
                            table: pg_child_name(&r.try_get::<String, _>(1)?),
                            columns: r.try_get(3)?,
                            referenced: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(db_err(&ctx))?;
                Ok(TableInfo { name: table.to_string(), columns, primary_key: pk, referenced_by })
            }
            Pool::My(p) => {
                let cols = sqlx::query(catalog::MY_COLUMNS)
                    .bind(&schema)
                    .bind(&bare)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                if cols.is_empty() {
                    return Err(not_found());
                }
                let columns = cols
                    .iter()
                    .map(|r| {
                        let kind = catalog::mysql_kind(&r.try_get_unchecked::<String, _>(2)?);
                        Ok(ColumnInfo {
                            name: r.try_get_unchecked(0)?,
                            sql_type: r.try_get_unchecked(1)?,
                            kind,
                            instant: kind.is_temporal(),
                            nullable: r.try_get_unchecked::<i64, _>(3)? != 0,
                            max_len: r.try_get_unchecked::<Option<i64>, _>(4)?.map(|x| x as u64),
                            generated: r.try_get_unchecked::<i64, _>(5)? != 0,
                            unique: false,
                            on_update: r.try_get_unchecked::<i64, _>(6)? != 0,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(db_err(&ctx))?;
                let mut columns = columns;
                if self.is_mariadb() {
                    // MariaDB: a `JSON` column is text the database checks; say what it is, so
                    // that validate refuses strategies that would write text that is no JSON.
                    let checks = sqlx::query(catalog::MARIADB_CHECKS)
                        .bind(&schema)
                        .bind(&bare)
                        .fetch_all(p)
                        .await
                        .map_err(db_err(&ctx))?;
                    for r in &checks {
                        let clause: String = r.try_get_unchecked(0).map_err(db_err(&ctx))?;
                        for c in columns.iter_mut().filter(|c| c.kind == ColumnKind::Text) {
                            if catalog::is_json_check(&clause, &c.name) {
                                c.kind = ColumnKind::Other;
                                c.sql_type = "json".into();
                                c.max_len = None;
                            }
                        }
                    }
                }
                let unique = sqlx::query(catalog::MY_UNIQUE)
                    .bind(&schema)
                    .bind(&bare)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?
                    .iter()
                    .map(|r| r.try_get_unchecked::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err(&ctx))?;
                let columns = mark_unique(columns, &unique);
                let pk = sqlx::query(catalog::MY_PRIMARY_KEY)
                    .bind(&schema)
                    .bind(&bare)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                let pk = pk
                    .iter()
                    .map(|r| r.try_get_unchecked::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err(&ctx))?;
                // (`REFERENCED_TABLE_NAME` compares without case: the keys referencing `People`
                // were taken for `people`'s, where names have case; found by a review.)
                let rows = sqlx::query(catalog::MY_REFERENCED_BY)
                    .bind(&schema)
                    .bind(&bare)
                    .bind(&bare)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                let mut referenced_by: Vec<ForeignKey> = Vec::new();
                for r in &rows {
                    let (constraint, child, col, refcol): (String, String, String, String) = (
                        r.try_get_unchecked(0).map_err(db_err(&ctx))?,
                        r.try_get_unchecked(1).map_err(db_err(&ctx))?,
                        r.try_get_unchecked(2).map_err(db_err(&ctx))?,
                        r.try_get_unchecked(3).map_err(db_err(&ctx))?,
                    );
                    match referenced_by.last_mut() {
                        Some(fk) if fk.constraint == constraint && fk.table == child => {
                            fk.columns.push(col);
                            fk.referenced.push(refcol);
                        }
                        _ => referenced_by.push(ForeignKey {
                            constraint,
                            table: child,
                            columns: vec![col],
                            referenced: vec![refcol],
                        }),
                    }
                }
                Ok(TableInfo { name: table.to_string(), columns, primary_key: pk, referenced_by })
            }
            Pool::Lite(p) => {
                // The catalog read is the main database's: a table of another schema
                // (`temp.people`, an attached or unknown one) is no table lapse knows (before,
                // `nosuch.people` passed validation as `people`, and the run failed on it).
                if schema.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("main")) {
                    return Err(not_found());
                }
                let cols = sqlx::query(catalog::LITE_COLUMNS).bind(&bare).fetch_all(p).await.map_err(db_err(&ctx))?;
                if cols.is_empty() {
                    return Err(not_found());
                }
                let mut pk: Vec<(i64, String)> = Vec::new();
                let mut columns = Vec::new();
                for r in &cols {
                    let name: String = r.try_get(0).map_err(db_err(&ctx))?;
                    let declared: String = r.try_get(1).map_err(db_err(&ctx))?;
                    let notnull: i64 = r.try_get(2).map_err(db_err(&ctx))?;
                    let pkpos: i64 = r.try_get(3).map_err(db_err(&ctx))?;
                    let hidden: i64 = r.try_get(4).map_err(db_err(&ctx))?;
                    if pkpos > 0 {
                        pk.push((pkpos, name.clone()));
                    }
                    let kind = catalog::sqlite_kind(&declared);
                    columns.push(ColumnInfo {
                        name,
                        kind,
                        // A STRICT table has no date type to declare: its times are text
                        // (`Builder::time_expr` reads text and numbers in any column).
                        instant: kind.is_temporal() || kind == ColumnKind::Text,
                        sql_type: declared,
                        nullable: notnull == 0 && pkpos == 0,
                        max_len: None,
                        generated: hidden >= 2,
                        unique: false,
                        on_update: false,
                    });
                }
                pk.sort();
                let primary_key: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
                let unique = sqlx::query_scalar::<_, String>(catalog::LITE_UNIQUE)
                    .bind(&bare)
                    .fetch_all(p)
                    .await
                    .map_err(db_err(&ctx))?;
                let mut columns = mark_unique(columns, &unique);
                if let [k] = primary_key.as_slice() {
                    // A single-column primary key that is not the rowid has its index; the rowid
                    // alias (`INTEGER PRIMARY KEY`) has none, and is unique all the same.
                    columns.iter_mut().filter(|c| &c.name == k).for_each(|c| c.unique = true);
                }
                let tables =
                    sqlx::query_scalar::<_, String>(catalog::LITE_TABLES).fetch_all(p).await.map_err(db_err(&ctx))?;
                let mut referenced_by = Vec::new();
                for child in tables {
                    let rows = sqlx::query(catalog::LITE_FOREIGN_KEYS)
                        .bind(&child)
                        .fetch_all(p)
                        .await
                        .map_err(db_err(&ctx))?;
                    let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
                    for r in &rows {
                        let id: i64 = r.try_get(0).map_err(db_err(&ctx))?;
                        let parent: String = r.try_get(1).map_err(db_err(&ctx))?;
                        if !parent.eq_ignore_ascii_case(&bare) {
                            continue;
                        }
                        let from: String = r.try_get(2).map_err(db_err(&ctx))?;
                        let to: Option<String> = r.try_get(3).map_err(db_err(&ctx))?;
                        let fk = by_id.entry(id).or_insert_with(|| ForeignKey {
                            constraint: format!("{child}_fk{id}"),
                            // A name with a dot (`"main.orders"`) would read as schema and table:
                            // kept quoted, it is no name validation accepts (found by a review).
                            table: match crate::policy::valid_identifier(&child) {
                                true => child.clone(),
                                false => format!("\"{child}\""),
                            },
                            columns: vec![],
                            referenced: vec![],
                        });
                        let idx = fk.columns.len();
                        fk.columns.push(from);
                        fk.referenced.push(to.unwrap_or_else(|| primary_key.get(idx).cloned().unwrap_or_default()));
                    }
                    referenced_by.extend(by_id.into_values());
                }
                Ok(TableInfo { name: table.to_string(), columns, primary_key, referenced_by })
            }
        }
    }
}

/// The main database's file; `None` in memory.
async fn lite_main_file(p: &SqlitePool) -> Result<Option<String>, sqlx::Error> {
    let file: Option<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'").fetch_optional(p).await?;
    Ok(file.filter(|f| !f.is_empty()))
}

/// Which file `path` is, whatever path names it: its device and inode (elsewhere, its canonical
/// path).
fn lite_file_id(path: &str) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| format!("{}:{}", m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        std::fs::canonicalize(path).ok().map(|p| p.display().to_string())
    }
}

/// What [`SqlConnector::lapsed_key_range`] found: `None`, no range to count within; `Some(None)`,
/// no row has lapsed; else the first and last key of the lapsed rows.
type LapsedRange = Option<Option<(Value, Value)>>;

/// Identifies a policy's filter for the `due_bounds` memo (the filter's rendering names its
/// columns, thresholds, holds and shard; the values of a condition are redacted in it, so the
/// policy is part of the id: its counts always come just before its batches).
fn bounds_id(scope: &Scope, f: &Filter) -> String {
    format!("{}\n{}\n{f:?}", scope.policy, scope.table.name)
}

/// The batch of a [`Builder::select_next_packed`] row, in key order; `None` when a key or
/// subject is not an integer (the lists would not give it back exactly).
fn unpack(row: &SqliteRow, shape: Subjects) -> Result<Option<Packed>, sqlx::Error> {
    let n: i64 = row.try_get(0)?;
    let not_int: i64 = row.try_get(1)?;
    if not_int != 0 {
        return Ok(None);
    }
    let list = |i: usize| -> Result<Option<Vec<i64>>, sqlx::Error> {
        let text: Option<String> = row.try_get(i)?;
        Ok(text.unwrap_or_default().split(',').filter(|v| !v.is_empty()).map(|v| v.parse().ok()).collect())
    };
    let Some(keys) = list(2)? else { return Ok(None) };
    let subjects = match shape {
        Subjects::Listed => match list(3)? {
            Some(s) => Some(s),
            None => return Ok(None),
        },
        Subjects::Keys => Some(keys.clone()),
        Subjects::None => None,
    };
    if keys.len() as i64 != n || subjects.as_ref().is_some_and(|s| s.len() != keys.len()) {
        return Ok(None);
    }
    let mut pairs: Vec<(i64, Option<i64>)> = match subjects {
        Some(s) => keys.into_iter().zip(s.into_iter().map(Some)).collect(),
        None => keys.into_iter().map(|k| (k, None)).collect(),
    };
    // `group_concat` follows the rows' order in practice, which SQLite does not promise.
    pairs.sort_unstable_by_key(|&(k, _)| k);
    let batch =
        pairs.iter().map(|&(k, s)| Candidate { key: vec![Value::Int(k)], subject: s.map(Value::Int) }).collect();
    Ok(Some(Packed { batch, keys: pairs.into_iter().map(|(k, _)| k).collect(), others: None }))
}

/// The evidence ids of a batch, computed on two threads for a large batch: work between the
/// deletion and the journal insert of its transaction, which the database waits for unless it
/// runs while a statement of the batch does (`meanwhile`: SQLite's delete, every update).
fn evidence_ids(batch: &[Candidate], id: &IdFn<'_>) -> Vec<EvidenceId> {
    if batch.len() < 2048 {
        return batch.iter().map(id).collect();
    }
    let (a, b) = batch.split_at(batch.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| b.iter().map(id).collect::<Vec<_>>());
        let mut ids: Vec<EvidenceId> = a.iter().map(id).collect();
        ids.extend(second.join().expect("hashing thread"));
        ids
    })
}

/// [`evidence_ids`] a slice at a time, yielding to the task between slices. A server batch's
/// `finish` hashes its rows on the task that also begins the next batch (`futures::join!` in the
/// engine): hashed in one go, the 5,000 rows kept the next batch's statement from being sent
/// until they were done, after its `BEGIN` had been answered (PostgreSQL's statement log: the
/// journal's `INSERT`, sent after the hashing, went out before the next batch's `DELETE`).
/// Between slices, the next batch's statements go out and run in the server meanwhile.
async fn evidence_ids_yielding(batch: &[Candidate], id: &IdFn<'_>) -> Vec<EvidenceId> {
    const SLICE: usize = 1024;
    let mut ids = Vec::with_capacity(batch.len());
    for slice in batch.chunks(SLICE) {
        tokio::task::yield_now().await;
        ids.extend(slice.iter().map(id));
    }
    ids
}

/// A lapse rule that every row `f` matches meets: one of its conjuncts (at any depth of
/// `All`), without its `when` condition, which only narrows it. `None` where `f` is no such
/// conjunction (a disjunction of rules, the unknown anchors, the total).
fn bounding_rule(f: &Filter) -> Option<crate::connector::LapseRule> {
    match f {
        Filter::Lapsed(r) => Some(crate::connector::LapseRule { condition: None, ..r.clone() }),
        Filter::All(parts) => parts.iter().find_map(bounding_rule),
        Filter::Any(parts) if parts.len() == 1 => bounding_rule(&parts[0]),
        _ => None,
    }
}

/// The one column `f` tests for an unknown anchor (`Filter::AnchorNull`), if it tests one
/// column only.
fn sole_anchor_null(f: &Filter) -> Option<&str> {
    fn walk<'f>(f: &'f Filter, out: &mut Vec<&'f str>) {
        match f {
            Filter::AnchorNull(c) | Filter::AnchorNeverLapses(c) => out.push(c),
            Filter::All(parts) | Filter::Any(parts) => parts.iter().for_each(|p| walk(p, out)),
            _ => {}
        }
    }
    let mut cols = Vec::new();
    walk(f, &mut cols);
    let first = *cols.first()?;
    cols.iter().all(|c| *c == first).then_some(first)
}

/// Whether `f` selects every row (of this shard): the report's total.
fn counts_everything(f: &Filter) -> bool {
    match f {
        Filter::True => true,
        Filter::All(parts) => parts.iter().all(|p| matches!(p, Filter::True | Filter::KeyShard { .. })),
        _ => false,
    }
}

/// Runs `work` on this thread while `statement` runs in the database (or on a SQLite
/// connection's worker thread): the statement is polled once, which sends it, then `work`
/// runs, then the statement is awaited. (On a server, a statement not yet prepared on the
/// connection sends only its preparation on that first poll: then `work` overlaps less.)
async fn meanwhile<F: std::future::Future, T>(statement: F, work: impl FnOnce() -> T) -> (F::Output, T) {
    let mut statement = std::pin::pin!(statement);
    let early = futures::poll!(statement.as_mut());
    let done = work();
    let out = match early {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => statement.await,
    };
    (out, done)
}

/// The anonymized values of one row's `cols` (`old`, in the same order); `None` when every value
/// is already in anonymized form (the row is left unchanged). An error names the column and
/// what is wrong with its value, never the value: that row fails on its own
/// (`BatchOutcome::failures`), the rest of its batch is anonymized.
fn new_values(
    scope: &Scope,
    cols: &[(String, crate::policy::strategy::Strategy)],
    old: &[Value],
) -> Result<Option<Vec<Option<Value>>>, String> {
    let new = cols
        .iter()
        .zip(old)
        .map(|((c, s), v)| s.apply(v, scope.pseudonym_key.as_deref()).map_err(|e| format!("column '{c}': {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!new.iter().all(Option::is_none)).then_some(new))
}

/// Whether the scope's key is one integer column (the engine can follow its order in Rust).
fn int_key(scope: &Scope) -> bool {
    scope.key.len() == 1 && scope.table.kind(&scope.key[0]) == crate::connector::ColumnKind::Int
}

/// Values an anonymizing update of `cols` binds per row: the key and each column's new value.
/// PostgreSQL binds one array per column (`Builder::derived`) where every value has an array
/// literal form: not per row.
fn update_binds(dialect: Dialect, scope: &Scope, cols: &[(String, crate::policy::strategy::Strategy)]) -> usize {
    let arrays = dialect == Dialect::Postgres
        && scope
            .key
            .iter()
            .chain(cols.iter().map(|(c, _)| c))
            .all(|c| scope.table.column(c).is_some_and(|i| builder::pg_array_kind(i.kind)));
    if arrays {
        0
    } else {
        scope.key.len() + cols.len()
    }
}

/// Values every statement of a batch binds whatever its size: the subjects of the holds file.
fn fixed_binds(scope: &Scope) -> usize {
    scope.holds.file.iter().map(|h| h.subjects.len()).sum()
}

/// The anonymizing update of `rows` computed in Rust, as statements of at most as many rows as
/// the bound-parameter limit allows (a batch sized for the database's own computation can be
/// larger), each restricted to the batch's key range (`first` to `last`).
fn update_rows(
    b: &Builder,
    dialect: Dialect,
    scope: &Scope,
    cols: &[(String, crate::policy::strategy::Strategy)],
    rows: &[(Vec<Value>, Vec<Option<Value>>)],
    (first, last): (&[Value], &[Value]),
) -> Vec<Sql> {
    let work_cols: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
    // PostgreSQL's arrays bind nothing per row (where every value is the same, the keys go in
    // an `IN` list: one per row, which `max_batch` counts).
    let cap = match update_binds(dialect, scope, cols) {
        0 => rows.len().max(1),
        per_row => (MAX_BATCH_PARAMS.saturating_sub(fixed_binds(scope)) / per_row).max(1),
    };
    rows.chunks(cap).map(|chunk| b.update(&work_cols, chunk, Some(Rows::Range(first, last)))).collect()
}

/// A single-column integer key, and an integer subject or none.
fn int_key_and_subject(scope: &Scope) -> bool {
    int_key(scope) && scope.subject.as_ref().is_none_or(|s| scope.table.kind(s) == crate::connector::ColumnKind::Int)
}

/// How a journal table stores a committed batch. A table keeps the shape it was made with: one
/// made by an earlier lapse is written in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum JournalShape {
    /// A row per batch, its records' and subjects' keyed hashes as bytes, 32 each, in the same
    /// order (`records` and `subjects` binary: half the bytes of hex text to send and store).
    Binary = 0,
    /// A row per batch, the hashes as comma-separated hex text (`records` and `subjects` text).
    TextLists = 1,
    /// A row per record (`record`, `subject` columns).
    PerRecord = 2,
}

impl JournalShape {
    fn from_u8(v: u8) -> JournalShape {
        match v {
            0 => JournalShape::Binary,
            1 => JournalShape::TextLists,
            _ => JournalShape::PerRecord,
        }
    }
}

/// An existing journal table's shape; an error names what a table of none lacks.
///
/// The journal's statements name its columns unquoted: MariaDB and SQLite match them in any
/// case (`any_case`), PostgreSQL folds them to lower case.
fn journal_shape(t: &TableInfo, any_case: bool) -> Result<JournalShape, String> {
    const COMMON: [&str; 5] = ["run_id", "policy", "stage", "action", "committed_at"];
    const PER_BATCH: [&str; 4] = ["batch_no", "record_count", "records", "subjects"];
    const PER_RECORD: [&str; 2] = ["record", "subject"];
    let named = |c: &str| t.columns.iter().find(|x| x.name == c || (any_case && x.name.eq_ignore_ascii_case(c)));
    let has = |c: &str| named(c).is_some();
    let per_record = !has("records") && has("record");
    let wanted = COMMON.iter().chain(if per_record { &PER_RECORD[..] } else { &PER_BATCH[..] });
    let missing: Vec<&str> = wanted.filter(|c| !has(c)).copied().collect();
    if !missing.is_empty() {
        return Err(format!(
            "journal_table '{}' exists but is no lapse journal: it has no column {} (name a table of its own, or create it as the README says)",
            t.name,
            missing.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")
        ));
    }
    let binary = |c: &str| named(c).is_some_and(|x| x.kind == ColumnKind::Bytes);
    Ok(match (per_record, binary("records"), binary("subjects")) {
        (true, _, _) => JournalShape::PerRecord,
        (false, true, true) => JournalShape::Binary,
        (false, false, false) => JournalShape::TextLists,
        (false, _, _) => {
            return Err(format!(
                "journal_table '{}' exists but is no lapse journal: its columns 'records' and 'subjects' must both be binary or both be text",
                t.name
            ))
        }
    })
}

/// The journal row (or, in a per-record journal table, rows) of the destroyed batch entries
/// `destroyed`, stamped with the time it is written (just before the commit). An error, before
/// anything is written, when a hash is not one (64 hex digits) and the table stores bytes.
fn journal_sql(
    b: &Builder,
    shape: JournalShape,
    journal: &JournalCtx,
    ids: &[EvidenceId],
    destroyed: &[usize],
) -> Result<Sql, ConnectorError> {
    let constants = [
        Value::Text(journal.run_id.clone()),
        Value::Text(journal.policy.clone()),
        Value::Text(journal.stage.clone()),
        Value::Text(journal.action.clone()),
        Value::Text(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    ];
    let (records, subjects) = match shape {
        JournalShape::PerRecord => {
            let records: Vec<(Value, Value)> = destroyed
                .iter()
                .map(|&i| {
                    (Value::Text(ids[i].record.clone()), ids[i].subject.clone().map(Value::Text).unwrap_or(Value::Null))
                })
                .collect();
            return Ok(b.journal_insert_rows(&constants, &records));
        }
        JournalShape::Binary => {
            // 32 bytes a record; subjects likewise, an absent one as 32 zero bytes (no keyed
            // hash is), or none at all when no record of the batch has one.
            let digest = |hex_digest: &str, out: &mut [u8]| match crate::evidence::digest_bytes(hex_digest, out) {
                true => Ok(()),
                false => Err(ConnectorError::Invalid(format!(
                    "journal_table: an evidence id of {} characters is no keyed hash (64 hex digits)",
                    hex_digest.len()
                ))),
            };
            let mut records = vec![0u8; destroyed.len() * 32];
            for (slot, &i) in records.chunks_exact_mut(32).zip(destroyed) {
                digest(&ids[i].record, slot)?;
            }
            let has_subjects = destroyed.iter().any(|&i| ids[i].subject.is_some());
            let mut subjects = vec![0u8; if has_subjects { destroyed.len() * 32 } else { 0 }];
            for (slot, &i) in subjects.chunks_exact_mut(32).zip(destroyed) {
                if let Some(s) = &ids[i].subject {
                    digest(s, slot)?;
                }
            }
            (Value::Bytes(records), Value::Bytes(subjects))
        }
        JournalShape::TextLists => {
            // The lists are joined straight from the ids, without a copy of every digest first.
            let has_subjects = destroyed.first().is_some_and(|&i| ids[i].subject.is_some());
            let mut records = String::with_capacity(destroyed.len() * 65);
            let mut subjects = String::with_capacity(if has_subjects { destroyed.len() * 65 } else { destroyed.len() });
            for (n, &i) in destroyed.iter().enumerate() {
                if n > 0 {
                    records.push(',');
                    subjects.push(',');
                }
                records.push_str(&ids[i].record);
                subjects.push_str(ids[i].subject.as_deref().unwrap_or_default());
            }
            (Value::Text(records), Value::Text(subjects))
        }
    };
    Ok(b.journal_insert_batch(&constants, journal.batch, destroyed.len(), records, subjects))
}

/// The record and subject hashes of one journal row of `shape` (not `PerRecord`), in order; an
/// error, not a shorter list, when a binary row's lengths are not those lapse writes (whole
/// hashes, and as many subjects as records or none).
fn journal_entries(shape: JournalShape, records: Value, subjects: Value) -> Result<Vec<EvidenceId>, String> {
    if shape == JournalShape::Binary {
        // (MariaDB hands a blob that happens to be valid UTF-8 over as text.)
        let bytes = |v: Value| match v {
            Value::Bytes(b) => b,
            Value::Text(s) => s.into_bytes(),
            _ => vec![],
        };
        let (records, subjects) = (bytes(records), bytes(subjects));
        if records.len() % 32 != 0 || !(subjects.is_empty() || subjects.len() == records.len()) {
            return Err(format!(
                "a batch row's hashes are {} bytes of records and {} of subjects, not 32 bytes a hash",
                records.len(),
                subjects.len()
            ));
        }
        let mut subjects = subjects.chunks_exact(32);
        return Ok(records
            .chunks_exact(32)
            .map(|r| EvidenceId {
                record: hex::encode(r),
                subject: subjects.next().filter(|s| s.iter().any(|&b| b != 0)).map(hex::encode),
            })
            .collect());
    }
    let (records, subjects) = (journal_text(records), journal_text(subjects));
    let mut subjects = subjects.split(',');
    Ok(records
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let s = subjects.next().unwrap_or_default();
            EvidenceId { record: r.to_string(), subject: (!s.is_empty()).then(|| s.to_string()) }
        })
        .collect())
}

/// Removes the URL (which may carry a password) from an error message.
/// MariaDB/MySQL: the zone a server writes `NOW()` in (`@@global.time_zone`, or the host's
/// `@@system_time_zone` for `SYSTEM`), unless it is UTC.
fn non_utc_zone(global: &str, system: &str) -> Option<String> {
    let zone = if global.eq_ignore_ascii_case("SYSTEM") { system } else { global };
    let utc = ["UTC", "GMT", "+00:00", "-00:00", "Etc/UTC", "Etc/GMT", "Z", "Coordinated Universal Time"];
    (!utc.iter().any(|u| zone.trim().eq_ignore_ascii_case(u))).then(|| zone.trim().to_string())
}

/// What is wrong with `url`'s scheme, if lapse reads none of its kind; said without the URL
/// (a secret): a key/value DSN or a bare password carries no `scheme:` and would be quoted
/// whole. Only a scheme that is one is named. Checked by `validate` too (`check_secrets`).
pub fn url_scheme_problem(name: &str, url: &str) -> Option<String> {
    let scheme = url.split(':').next().unwrap_or_default();
    if ["postgres", "postgresql", "mysql", "mariadb", "sqlite"].contains(&scheme) && url.len() > scheme.len() {
        return None;
    }
    let scheme_like = url.contains("://")
        && !scheme.is_empty()
        && scheme.len() <= 20
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    let what = match scheme_like {
        true => format!("unsupported URL scheme '{scheme}'"),
        false => "the URL is not of the form scheme://… (its value is not shown)".to_string(),
    };
    Some(format!("connection '{name}': {what} (use postgres://, mysql:// or sqlite://)"))
}

/// The pool tries a refused or failing connection again until its acquire timeout, then says
/// only "pool timed out while waiting for an open connection" (found by a review: a refused
/// port waited 15 s and never said it was refused): the cause is asked of one connection of its
/// own, and given with how long it was tried.
async fn pool_cause<O>(e: sqlx::Error, opts: &O, tried: Duration) -> sqlx::Error
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    if !matches!(e, sqlx::Error::PoolTimedOut) {
        return e;
    }
    match tokio::time::timeout(Duration::from_secs(5), opts.connect()).await {
        Ok(Err(sqlx::Error::Io(cause))) => {
            sqlx::Error::Io(std::io::Error::new(cause.kind(), format!("{cause} (tried for {} s)", tried.as_secs())))
        }
        Ok(Err(cause)) => cause,
        _ => e,
    }
}

fn redact_url(msg: &str, url: &str) -> String {
    let mut out = msg.replace(url, "<url>");
    if let Some((_, rest)) = url.split_once("://") {
        if let Some((userinfo, _)) = rest.split('/').next().unwrap_or_default().rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                if !pw.is_empty() {
                    out = out.replace(pw, "<redacted>");
                }
            }
        }
    }
    out
}

/// A run lock held (see `try_run_lock`): its name, and what holds it.
struct HeldLock {
    name: String,
    session: LockSession,
}

enum LockSession {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
    File(#[allow(dead_code)] std::fs::File),
}

impl SqlConnector {
    /// Takes the run lock `name` on a session (or lock file) of its own; `None` when another
    /// worker holds it.
    async fn take_run_lock(&self, name: &str) -> Result<Option<HeldLock>, ConnectorError> {
        let ctx = "taking the run lock";
        let digest = |extra: &str| {
            use sha2::Digest;
            sha2::Sha256::digest(format!("{extra}\0{name}").as_bytes())
        };
        let session = match &self.pool {
            Pool::Pg(p) => {
                let key = i64::from_be_bytes(digest("").as_slice()[..8].try_into().expect("8 bytes"));
                let mut c = p.acquire().await.map_err(db_err(ctx))?.detach();
                let sql = self.dialect.try_lock().expect("postgres");
                let got: bool = sqlx::query_scalar(sql).bind(key).fetch_one(&mut c).await.map_err(db_err(ctx))?;
                if !got {
                    return Ok(None);
                }
                LockSession::Pg(c)
            }
            Pool::My(p) => {
                // GET_LOCK names are server-wide: the database name is part of the key.
                let mut c = p.acquire().await.map_err(db_err(ctx))?.detach();
                let db: Option<String> =
                    sqlx::query_scalar("SELECT DATABASE()").fetch_one(&mut c).await.map_err(db_err(ctx))?;
                let key = format!("lapse:{}", &hex::encode(digest(&db.unwrap_or_default()))[..40]);
                let sql = self.dialect.try_lock().expect("mysql");
                let got: Option<i64> =
                    sqlx::query_scalar(sql).bind(key).fetch_one(&mut c).await.map_err(db_err(ctx))?;
                if got != Some(1) {
                    return Ok(None);
                }
                LockSession::My(c)
            }
            Pool::Lite(p) => {
                let Some(file) = lite_main_file(p).await.map_err(db_err(ctx))? else {
                    // In memory: no other process can reach it.
                    return Ok(Some(HeldLock {
                        name: name.to_string(),
                        session: LockSession::File(tempfile::tempfile().map_err(|e| ConnectorError::Query {
                            context: ctx.into(),
                            message: format!("lock file: {}", e.kind()),
                        })?),
                    }));
                };
                let path = format!("{file}.lapse-lock-{}", &hex::encode(digest(""))[..16]);
                let f =
                    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
                        ConnectorError::Query { context: ctx.into(), message: format!("lock file: {}", e.kind()) }
                    })?;
                match f.try_lock() {
                    Ok(()) => LockSession::File(f),
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(ConnectorError::Query {
                            context: ctx.into(),
                            message: format!("lock file: {}", e.kind()),
                        })
                    }
                }
            }
        };
        Ok(Some(HeldLock { name: name.to_string(), session }))
    }

    /// The first and last due key of the scope's last count (see `due_bounds`).
    fn bounds_of(&self, scope: &Scope) -> Option<(Value, Value)> {
        self.due_bounds.lock().expect("bounds").get(&bounds_id(scope, &scope.destroy_filter())).cloned()
    }

    /// MariaDB/MySQL: the first and last key of the rows that meet a lapse
    /// rule every row of `f` meets ([`bounding_rule`]), when its anchor leads an index: read
    /// from that index alone (a secondary index holds the primary key), so that `f` is then
    /// counted over that range of the primary key, in whose order InnoDB stores the table,
    /// instead of over the whole table (the optimizer's choice when the lapsed rows are more
    /// than a few percent of the table, and their key range is not known to it). Where keys
    /// grow with the anchor, as they usually do, that range is the lapsed part of the table:
    /// the benchmark's due count (30 % of 1,000,000 rows due) took 0.2 s and 0.09 s for the
    /// range, against 0.75 s, BENCHMARKS.md. `None`: not here, no such rule, or a range over
    /// more than three quarters of the table's keys; `Some(None)`: no row meets the rule, so
    /// none matches `f`. (PostgreSQL's planner reads the anchor's index itself, bitmap scans;
    /// SQLite's table is stored in the order of its rowid, which is not the key unless declared
    /// `INTEGER PRIMARY KEY`.) Single integer keys only.
    /// The range and the count are two statements: a row that lapses between them (inserted
    /// with an old anchor) outside the range is not counted, as if it had come after the count.
    /// Read once per run and rule (`lapsed_ranges`): a row inserted with an old anchor outside
    /// it during the run is not in the report's later counts either.
    async fn lapsed_key_range(&self, scope: &Scope, f: &Filter) -> Result<LapsedRange, ConnectorError> {
        let Pool::My(p) = &self.pool else { return Ok(None) };
        if !int_key(scope) {
            return Ok(None);
        }
        let Some(rule) = bounding_rule(f) else { return Ok(None) };
        let ctx = format!("counting rows of '{}'", scope.table.name);
        if !self.leads_index(p, scope, &rule.anchor).await? {
            return Ok(None);
        }
        let memo = format!("{}\n{}\n{rule:?}", scope.policy, scope.table.name);
        if let Some(range) = self.lapsed_ranges.lock().expect("ranges").get(&memo) {
            return Ok(range.clone());
        }
        let sql = self.builder(scope).key_bounds(&Filter::Lapsed(rule));
        let row = self.rows(&sql, &ctx).await?.pop();
        let range = match row.as_deref() {
            Some([first @ Value::Int(a), last @ Value::Int(b), Value::Int(lo), Value::Int(hi)]) => {
                // Keys that do not grow with the anchor: the range is most of the table, and
                // a range scan of nearly all of it was slower than the whole table's (1.50
                // against 1.40 s on the benchmark's table with its keys shuffled).
                let (span, whole) = (i128::from(*b) - i128::from(*a), i128::from(*hi) - i128::from(*lo));
                (span * 4 <= whole * 3).then(|| Some((first.clone(), last.clone())))
            }
            _ => Some(None),
        };
        self.lapsed_ranges.lock().expect("ranges").insert(memo, range.clone());
        Ok(range)
    }

    /// [`Connector::counts`], each statement run `via` the pool (side by side) or one pinned
    /// connection (one after another).
    async fn counts_via(&self, scope: &Scope, filters: &[Filter], via: &Via<'_>) -> Result<Vec<u64>, ConnectorError> {
        let (plain, joined): (Vec<usize>, Vec<usize>) = (0..filters.len()).partition(|&i| Builder::plain(&filters[i]));
        let together = async {
            if plain.len() < 2 {
                return Ok(None);
            }
            let fs: Vec<&Filter> = plain.iter().map(|&i| &filters[i]).collect();
            let rows = self
                .rows_via(
                    via,
                    &self.builder(scope).count_many(&fs),
                    &format!("counting rows of '{}'", scope.table.name),
                )
                .await?;
            let row = rows.into_iter().next().unwrap_or_default();
            Ok::<_, ConnectorError>(Some(
                row.into_iter().map(|v| if let Value::Int(n) = v { n as u64 } else { 0 }).collect::<Vec<u64>>(),
            ))
        };
        let alone: Vec<usize> = if plain.len() < 2 { (0..filters.len()).collect() } else { joined };
        // A held count that is a due count's held part is answered by the due count's statement
        // (`counts_held_with_due`): (due, held) by position.
        let paired: Vec<(usize, usize)> = match int_key(scope) {
            true => {
                let b = self.builder(scope);
                alone
                    .iter()
                    .filter_map(|&i| {
                        let j = alone.iter().copied().find(|&j| j != i && b.held_with_due(&filters[i], &filters[j]))?;
                        Some((i, j))
                    })
                    .collect()
            }
            false => Vec::new(),
        };
        let held_of = |i: usize| paired.iter().find(|&&(d, _)| d == i).map(|&(_, h)| h);
        let alone: Vec<usize> = alone.into_iter().filter(|&j| !paired.iter().any(|&(_, h)| h == j)).collect();
        let each = futures::future::try_join_all(
            alone.iter().map(|&i| self.count_alone(scope, &filters[i], held_of(i).is_some(), via)),
        );
        let (together, each) = futures::future::try_join(together, each).await?;
        let mut out = vec![0u64; filters.len()];
        if let Some(ns) = together {
            for (&i, n) in plain.iter().zip(ns) {
                out[i] = n;
            }
        }
        for (&i, (n, held)) in alone.iter().zip(each) {
            out[i] = n;
            if let (Some(j), Some(h)) = (held_of(i), held) {
                out[j] = h;
            }
        }
        Ok(out)
    }

    /// [`Connector::count`], its statement run `via` the pool or a pinned connection.
    async fn count_via(&self, scope: &Scope, filter: &Filter, via: &Via<'_>) -> Result<u64, ConnectorError> {
        if let Some(c) = sole_anchor_null(filter) {
            if let Some(n) = self.count_unknown_in_gaps(scope, filter, c).await? {
                return Ok(n);
            }
        }
        let sql = self.builder(scope).count(filter);
        let rows = self.rows_via(via, &sql, &format!("counting rows of '{}'", scope.table.name)).await?;
        Ok(match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        })
    }

    /// One count of [`Connector::counts`] on its own statement; `with_held`, a due count with
    /// its held part (`Builder::count_bounds_held`): (due, held).
    async fn count_alone(
        &self,
        scope: &Scope,
        f: &Filter,
        with_held: bool,
        via: &Via<'_>,
    ) -> Result<(u64, Option<u64>), ConnectorError> {
        // The total needs no key range (a `MIN`/`MAX` beside `COUNT(*)` makes SQLite scan
        // the whole table instead of counting an index); any other count may be a stage's.
        if !int_key(scope) || counts_everything(f) {
            return Ok((self.count_via(scope, f, via).await?, None));
        }
        let held = with_held.then(|| self.builder(scope).count_bounds_held(f)).flatten();
        let with_held = held.is_some();
        // With the key range of what it counts (see `begin_next`), at no extra cost; on
        // MariaDB/MySQL within the lapsed rows' key range where the anchor is indexed.
        let sql = match held {
            Some(sql) => {
                tracing::debug!(table = %scope.table.name, "held rows counted with the due rows");
                sql
            }
            None => match self.lapsed_key_range(scope, f).await? {
                None => self.builder(scope).count_bounds(f),
                Some(Some((first, last))) => {
                    tracing::debug!(table = %scope.table.name, "counted within the key range of the lapsed rows");
                    self.builder(scope).count_bounds_between(f, &first, &last)
                }
                Some(None) => {
                    tracing::debug!(table = %scope.table.name, "no row has lapsed: nothing to count");
                    self.due_bounds.lock().expect("bounds").remove(&bounds_id(scope, f));
                    return Ok((0, None));
                }
            },
        };
        let row = self.rows_via(via, &sql, &format!("counting rows of '{}'", scope.table.name)).await?.pop();
        let row = row.unwrap_or_default();
        // The rows counted, their first and last key, and (with its held part) the held rows
        // among them, which the due rows leave out.
        let held = match row.get(3) {
            Some(Value::Int(h)) => Some(*h as u64),
            _ => with_held.then_some(0),
        };
        let n = match row.first() {
            Some(Value::Int(n)) => (*n as u64).saturating_sub(held.unwrap_or(0)),
            _ => 0,
        };
        let id = bounds_id(scope, f);
        match row.get(1..3) {
            Some([first @ Value::Int(_), last @ Value::Int(_)]) => {
                self.due_bounds.lock().expect("bounds").insert(id, (first.clone(), last.clone()));
            }
            // Nothing counted: no bounds (none left from an earlier run either).
            _ => {
                self.due_bounds.lock().expect("bounds").remove(&id);
            }
        }
        Ok((n, held))
    }

    /// MariaDB/MySQL: whether column `c` of the scope's table leads an index (asked once per
    /// run and column).
    async fn leads_index(&self, p: &sqlx::MySqlPool, scope: &Scope, c: &str) -> Result<bool, ConnectorError> {
        let id = (scope.table.name.clone(), c.to_string());
        if let Some(b) = self.leads_index.lock().expect("index").get(&id).copied() {
            return Ok(b);
        }
        let (schema, bare) = split_table(&scope.table.name);
        let n: i64 = sqlx::query_scalar(catalog::MY_LEADS_INDEX)
            .bind(&schema)
            .bind(&bare)
            .bind(c)
            .fetch_one(p)
            .await
            .map_err(db_err(format!("reading the indexes of '{}'", scope.table.name)))?;
        self.leads_index.lock().expect("index").insert(id, n > 0);
        Ok(n > 0)
    }

    /// MariaDB/MySQL: a count of `f`, whose only unknown-anchor test is of column `c`, with
    /// the zero and partial dates read where they sort in `c`'s index ([`Builder::unknown_years`])
    /// instead of testing every entry: about as many index reads as the column's dates span
    /// months, where the whole index took 0.5 s of the benchmark's table of 1,000,000 rows,
    /// beside the batches. `None` where that does not apply: not a `DATE` or `DATETIME` (a
    /// `TIMESTAMP` holds no partial date; text is read as it is), no index led by `c`, dates over
    /// more than a century, or years that kept moving between the statements.
    /// The years are read again in the count's own statement: what it counted holds only for
    /// the years it was written for.
    async fn count_unknown_in_gaps(&self, scope: &Scope, f: &Filter, c: &str) -> Result<Option<u64>, ConnectorError> {
        const MAX_YEARS: i32 = 100;
        let Pool::My(p) = &self.pool else { return Ok(None) };
        let Some(info) = scope.table.column(c) else { return Ok(None) };
        let ty = info.sql_type.to_ascii_lowercase();
        if !(ty == "date" || ty.starts_with("datetime")) || !self.leads_index(p, scope, c).await? {
            return Ok(None);
        }
        let ctx = format!("counting rows of '{}'", scope.table.name);
        let year = |v: &Value| match v {
            Value::Int(y) => i32::try_from(*y).ok(),
            _ => None,
        };
        let row = self.rows(&self.builder(scope).anchor_years(c), &ctx).await?.pop().unwrap_or_default();
        let mut years = match row.as_slice() {
            [a, b] => year(a).zip(year(b)),
            _ => return Ok(None),
        };
        for _ in 0..3 {
            // No date from year 1 on: the NULLs and zero years only.
            let (from, to) = years.unwrap_or((1, 0));
            if to - from > MAX_YEARS {
                return Ok(None);
            }
            let b = Builder { unknown_years: Some((c.to_string(), from, to)), ..self.builder(scope) };
            let row = self.rows(&b.count_with_anchor_years(f, c), &ctx).await?.pop().unwrap_or_default();
            let [Value::Int(n), a, z] = row.as_slice() else { return Ok(None) };
            let now = year(a).zip(year(z));
            match now {
                Some((a, z)) if a < from || z > to => years = now,
                _ => {
                    tracing::debug!(table = %scope.table.name, "unknown anchors read where they sort in the anchor's index");
                    return Ok(Some(*n as u64));
                }
            }
        }
        Ok(None)
    }

    /// `Connector::begin_next` for an anonymizing stage: locks the next due rows and computes
    /// their new values (in the database when it computes every column exactly as
    /// `Strategy::apply`, see `Builder::in_place`; else here); `finish` updates them (the same
    /// filter in the `UPDATE`: a row that became held since it was locked is not updated, the
    /// batch is rolled back, and the engine takes it again by its candidates), journals and
    /// commits. SQLite with integer keys and subjects: the batch is read as one row of lists
    /// and updated in place by its keys here, under the write lock (no filter again: nothing
    /// else can change what is due; a batch read ahead is used only if nothing else committed
    /// since, [`ReadAhead`]), and `finish` journals and commits.
    async fn anonymize_next<'a>(
        &'a self,
        scope: &'a Scope,
        cols: &'a [(String, crate::policy::strategy::Strategy)],
        after: Option<&[Value]>,
        limit: usize,
        id: &'a IdFn<'a>,
        journal: JournalCtx,
    ) -> Result<Begun<'a>, ConnectorError> {
        let b = self.builder(scope);
        let shape = self.journal();
        let ctx = format!("destroying a batch of '{}'", scope.table.name);
        let work_cols: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
        let bounds = self.bounds_of(scope);
        let nk = scope.key.len();
        let ns = usize::from(scope.subject.is_some());
        let in_place = b.in_place(cols);
        with_pool!(self, p => {
            let mut tx = p.for_writes(self).begin_with(self.dialect.begin_write()).await.map_err(db_err(&ctx))?;
            // The batch's rows, what becomes of each, and either the updates with the count of
            // rows they must change or, when the update already ran, the evidence ids.
            let mut prepared = None;
            // SQLite, integer keys (and subjects): the batch comes as one row of lists
            // (`Builder::select_next_packed`, under the write lock or ahead: `read_packed`),
            // and is updated at once by its keys (or as its key range less the few other keys
            // in it, `others_between`), with the guards in the update instead of the read; the evidence ids are
            // hashed meanwhile. A row the guards leave out (a value only Rust computes exactly)
            // rolls the update back to its savepoint, and the batch goes by the path below, in
            // the same transaction.
            // (Keys or subjects that are not integers after all: read row by row below.)
            let mut row_wise = in_place;
            if in_place && self.packs(scope) {
                let packed = (*tx).read_packed(self, scope, after, limit).await.map_err(db_err(&ctx))?;
                if let Some(Packed { batch, keys, others }) = packed {
                    row_wise = false;
                    let outcome = BatchOutcome { destroyed: (0..batch.len()).collect(), ..Default::default() };
                    if batch.is_empty() {
                        prepared = Some((batch, outcome, Vec::new(), 0, None));
                    } else {
                        sqlx::query("SAVEPOINT lapse_in_place").execute(&mut *tx).await.map_err(db_err(&ctx))?;
                        let upd = b.update_listed(cols, &keys, others.as_deref());
                        let (r, ids) = meanwhile(bound!(upd).execute(&mut *tx), || evidence_ids(&batch, id)).await;
                        if r.map_err(db_err(&ctx))?.rows_affected() == batch.len() as u64 {
                            sqlx::query("RELEASE lapse_in_place").execute(&mut *tx).await.map_err(db_err(&ctx))?;
                            prepared = Some((batch, outcome, Vec::new(), 0, Some(ids)));
                        } else {
                            sqlx::query("ROLLBACK TO lapse_in_place; RELEASE lapse_in_place")
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err(&ctx))?;
                            tracing::debug!(table = %scope.table.name, "the in-place update left rows out (a value only lapse computes exactly): a value of the batch is anonymized in lapse, not in the database");
                        }
                    }
                }
            }
            if row_wise {
                // The database computes the new values itself: the batch's keys are read and
                // locked, then one `UPDATE` writes them. A row with a value only Rust computes
                // exactly (the guard's 0) sends the batch to the path below, in the same
                // transaction: the rows it locks are the same. (Reading without the lock and
                // checking what a `RETURNING` update returned was slower on PostgreSQL: the read
                // costs the same, and the update then also takes the row locks. Both in one
                // statement, as a delete batch is, was slower too: its statements took less
                // time, but the read of the next batch no longer ran beside this one's update;
                // BENCHMARKS.md, 2026-12-07 10:55.)
                let read = b.next_in_place(after, limit, bounds.as_ref(), cols);
                let read = bound!(read).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
                let mut batch = Vec::with_capacity(read.len());
                let mut exact = true;
                for row in &read {
                    let key = (0..nk).map(|i| row.value(i)).collect::<Result<Vec<_>, _>>().map_err(db_err(&ctx))?;
                    let subject = if ns == 1 { Some(row.value(nk).map_err(db_err(&ctx))?) } else { None };
                    if row.len() > nk + ns && row.value(nk + ns).map_err(db_err(&ctx))? != Value::Int(1) {
                        exact = false;
                        break;
                    }
                    batch.push(Candidate { key, subject });
                }
                drop(read);
                if exact {
                    let keys: Vec<Vec<Value>> = batch.iter().map(|c| c.key.clone()).collect();
                    let upd: Vec<Sql> = (!batch.is_empty()).then(|| b.update_in_place(cols, &keys)).into_iter().collect();
                    let outcome = BatchOutcome { destroyed: (0..batch.len()).collect(), ..Default::default() };
                    let expected = batch.len();
                    prepared = Some((batch, outcome, upd, expected, None));
                } else {
                    tracing::debug!(table = %scope.table.name, "a value of the batch is anonymized in lapse, not in the database");
                }
            }
            let (batch, outcome, upd, expected, done) = match prepared {
                Some(p) => p,
                None => {
                    let lock = b.lock_next(after, limit, bounds.as_ref(), &work_cols);
                    let locked = bound!(lock).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
                    let locked: Vec<Vec<Value>> =
                        locked.iter().map(decode_all).collect::<Result<_, _>>().map_err(db_err(&ctx))?;
                    let mut batch = Vec::with_capacity(locked.len());
                    let mut outcome = BatchOutcome::default();
                    let mut rows = Vec::new();
                    for (i, row) in locked.into_iter().enumerate() {
                        let key = row[..nk].to_vec();
                        match new_values(scope, cols, &row[nk + ns..]) {
                            Err(e) => outcome.failures.push((i, e)),
                            Ok(None) => outcome.unchanged.push(i),
                            Ok(Some(new)) => {
                                outcome.destroyed.push(i);
                                rows.push((key.clone(), new));
                            }
                        }
                        batch.push(Candidate { key, subject: (ns == 1).then(|| row[nk].clone()) });
                    }
                    let upd = match rows.is_empty() {
                        true => Vec::new(),
                        false => update_rows(
                            &b,
                            self.dialect,
                            scope,
                            cols,
                            &rows,
                            (&batch[0].key, &batch[batch.len() - 1].key),
                        ),
                    };
                    (batch, outcome, upd, rows.len(), None)
                }
            };
            let (taken, last) = (batch.len(), batch.last().map(|c| c.key.clone()));
            let finish = Box::pin(async move {
                let mut upd = upd.into_iter();
                let (ids, updated) = match (done, upd.next()) {
                    (Some(ids), _) => (ids, !batch.is_empty()),
                    // The evidence ids are computed while the (first) update runs, a slice at a
                    // time: the next batch, begun beside this one, sends its statements meanwhile.
                    (None, Some(first)) => {
                        let (r, ids) =
                            futures::join!(bound!(first).execute(&mut *tx), evidence_ids_yielding(&batch, id));
                        let mut changed = r.map_err(db_err(&ctx))?.rows_affected();
                        for more in upd {
                            changed += bound!(more).execute(&mut *tx).await.map_err(db_err(&ctx))?.rows_affected();
                        }
                        if changed != expected as u64 {
                            tx.rollback().await.map_err(db_err(&ctx))?;
                            return Err(ConnectorError::Changed { context: ctx });
                        }
                        (ids, true)
                    }
                    (None, None) => (evidence_ids(&batch, id), false),
                };
                if updated {
                    let ins = journal_sql(&b, shape, &journal, &ids, &outcome.destroyed)?;
                    bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
                }
                tx.commit().await.map_err(db_err(&ctx))?;
                Ok((batch, ids, outcome))
            });
            Ok(Begun { taken, last, finish })
        })
    }

    /// The batch read ahead of this one ([`ReadAhead`]), if it was read after `after` with
    /// this limit and the writing connection is as it was then; any other is dropped.
    fn take_read_ahead(
        &self,
        scope: &Scope,
        after: Option<&[Value]>,
        limit: usize,
        writer: (usize, i64),
    ) -> Option<ReadAhead> {
        let ahead = self.read_ahead.lock().expect("read ahead").take()?;
        let Some([Value::Int(after)]) = after else { return None };
        let at = (bounds_id(scope, &scope.destroy_filter()), *after, limit);
        if ahead.at != at {
            return None;
        }
        if ahead.writer != writer {
            tracing::debug!(table = %scope.table.name, "the database changed since the batch was read ahead (another connection committed, or the writing connection was replaced): read again");
            return None;
        }
        Some(ahead)
    }

    /// Reads the batch after `batch` ahead, on another connection ([`ReadAhead`]), where it may
    /// be: a full batch, no trigger (`no_triggers`, seen under this batch's lock), no foreign
    /// key referencing the table.
    fn start_read_ahead(
        &self,
        scope: &Scope,
        batch: &[Candidate],
        limit: usize,
        (writer, no_triggers): ((usize, i64), bool),
    ) {
        let (Pool::Lite(pool), Some(Value::Int(last))) = (&self.pool, batch.last().map(|c| &c.key[0])) else { return };
        if batch.len() < limit || !no_triggers || !scope.table.referenced_by.is_empty() {
            return;
        }
        let b = self.builder(scope);
        let read = b.select_next_packed(Some(&[Value::Int(*last)]), limit, self.bounds_of(scope).as_ref());
        // The keys between are read in the same transaction (one snapshot), by the statement
        // `keys_between` gives, built here and bound there.
        let between = b.keys_between(0, 0, 0);
        let (pool, subjects) = (pool.clone(), Subjects::of(scope));
        let task = tokio::spawn(async move {
            let mut tx = pool.begin().await?;
            let row = bound!(read).fetch_one(&mut *tx).await?;
            let mut packed = row.packed(subjects)?;
            drop(row);
            if let Some(p) = packed.as_mut() {
                others_between(&mut tx, between, p).await?;
            }
            tx.commit().await?;
            Ok(packed)
        });
        let at = (bounds_id(scope, &scope.destroy_filter()), *last, limit);
        *self.read_ahead.lock().expect("read ahead") = Some(ReadAhead { at, writer, task });
    }

    /// The packed read of the next batch, under the write lock: the batch read ahead where it
    /// still holds, else read here (`tx`); then the batch after it is read ahead.
    async fn read_packed(
        &self,
        tx: &mut sqlx::SqliteConnection,
        scope: &Scope,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Option<Packed>, sqlx::Error> {
        let mark = match &self.lite_writer {
            Some(w) => Some(writer_mark(tx, w).await?),
            None => None,
        };
        let ahead = mark.and_then(|(writer, _)| self.take_read_ahead(scope, after, limit, writer));
        let packed = match ahead {
            // Waited for under the write lock, but not for long: a read ahead still waiting
            // for a connection is read again here instead.
            Some(mut ahead) => match tokio::time::timeout(READ_AHEAD_WAIT, &mut ahead.task).await {
                Ok(Ok(Ok(packed))) => {
                    tracing::debug!(table = %scope.table.name, "batch read ahead");
                    Some(packed)
                }
                Ok(Ok(Err(e))) => {
                    tracing::debug!(table = %scope.table.name, "the batch read ahead failed, read again: {}", sanitize(&e.to_string()));
                    None
                }
                _ => {
                    tracing::debug!(table = %scope.table.name, "the batch read ahead is late: read again");
                    None
                }
            },
            None => None,
        };
        let packed = match packed {
            Some(p) => p,
            None => {
                let b = self.builder(scope);
                let read = b.select_next_packed(after, limit, self.bounds_of(scope).as_ref());
                let mut packed = bound!(read).fetch_one(&mut *tx).await?.packed(Subjects::of(scope))?;
                if let Some(p) = packed.as_mut() {
                    others_between(tx, b.keys_between(0, 0, 0), p).await?;
                }
                packed
            }
        };
        if let (Some(mark), Some(p)) = (mark, &packed) {
            self.start_read_ahead(scope, &p.batch, limit, mark);
        }
        Ok(packed)
    }

    /// Whether a batch of `scope` is read as one row ([`Builder::select_next_packed`]): SQLite,
    /// a single-column integer key, and an integer subject or none.
    fn packs(&self, scope: &Scope) -> bool {
        self.dialect == Dialect::Sqlite && int_key_and_subject(scope)
    }

    /// `Connector::begin_next` for a SQLite delete. SQLite has one writer, and `BEGIN
    /// IMMEDIATE` makes this batch that writer until it commits, so the batch is read first,
    /// then deleted while the evidence ids are computed here, on this thread, as the
    /// connection's worker thread deletes. Integer keys and subjects: read as one row of lists
    /// (`Builder::select_next_packed`) and deleted by their keys (`Builder::delete_listed`), or
    /// as their key range less the few other keys in it (`others_between`), without testing the
    /// filter again: nothing else can change what is due, nor which rows are in the range,
    /// under the write lock (a batch read ahead, before the lock, is used only if nothing else
    /// committed since: [`ReadAhead`]). (Nor can a trigger: where a table has triggers, SQLite evaluates a statement's
    /// `WHERE` for every row before it deletes the first.) Otherwise read row by row (`Builder::select_next`) and
    /// the key range deleted with the filter (`Builder::delete_span`). The count deleted must be the count read (else
    /// `finish` rolls back: `ConnectorError::Changed`). A single `DELETE … RETURNING` (the
    /// servers' form) tests the filter twice per row, and SQLite returns its rows only once it
    /// has deleted them all, so the hashing could only follow it.
    async fn sqlite_delete_next<'a>(
        &'a self,
        p: &'a sqlx::SqlitePool,
        scope: &'a Scope,
        after: Option<&[Value]>,
        limit: usize,
        id: &'a IdFn<'a>,
        journal: JournalCtx,
    ) -> Result<Begun<'a>, ConnectorError> {
        let b = self.builder(scope);
        let shape = self.journal();
        let ctx = format!("destroying a batch of '{}'", scope.table.name);
        let bounds = self.bounds_of(scope);
        let mut tx = p.for_writes(self).begin_with(self.dialect.begin_write()).await.map_err(db_err(&ctx))?;
        // Integer keys and subjects come as one row of lists (read ahead where it could be);
        // anything else (or a list that holds another type after all) row by row.
        let mut packed = None;
        if self.packs(scope) {
            packed = self.read_packed(&mut tx, scope, after, limit).await.map_err(db_err(&ctx))?;
        }
        // Read as integers under the write lock (or ahead, nothing committed since): the batch
        // is deleted by its keys, without testing the filter again.
        let (batch, keys) = match packed {
            Some(Packed { batch, keys, others }) => (batch, Some((keys, others))),
            None => {
                let read = b.select_next(after, limit, bounds.as_ref());
                let rows = bound!(read).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
                let batch = rows
                    .iter()
                    .map(|r| r.candidate(scope.subject.is_some()))
                    .collect::<Result<_, _>>()
                    .map_err(db_err(&ctx))?;
                (batch, None)
            }
        };
        let (taken, last) = (batch.len(), batch.last().map(|c| c.key.clone()));
        let (deleted, ids) = match (batch.first(), batch.last()) {
            (Some(first), Some(last)) => {
                let del = match &keys {
                    Some((keys, others)) => b.delete_listed(keys, others.as_deref()),
                    None => b.delete_span(&first.key, &last.key),
                };
                let (deleted, ids) = meanwhile(bound!(del).execute(&mut *tx), || evidence_ids(&batch, id)).await;
                (deleted.map_err(db_err(&ctx))?.rows_affected(), ids)
            }
            _ => (0, Vec::new()),
        };
        let finish = Box::pin(async move {
            if deleted != batch.len() as u64 {
                tx.rollback().await.map_err(db_err(&ctx))?;
                return Err(ConnectorError::Changed { context: ctx });
            }
            if !batch.is_empty() {
                let all: Vec<usize> = (0..batch.len()).collect();
                let ins = journal_sql(&b, shape, &journal, &ids, &all)?;
                bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
            }
            tx.commit().await.map_err(db_err(&ctx))?;
            let outcome = BatchOutcome { destroyed: (0..batch.len()).collect(), ..Default::default() };
            Ok((batch, ids, outcome))
        });
        Ok(Begun { taken, last, finish })
    }

    /// One attempt at `Connector::destroy`.
    async fn destroy_once(
        &self,
        scope: &Scope,
        batch: &[Candidate],
        ids: &[EvidenceId],
        journal: &JournalCtx,
    ) -> Result<BatchOutcome, ConnectorError> {
        let b = self.builder(scope);
        let shape = self.journal();
        let keys: Vec<Vec<Value>> = batch.iter().map(|c| c.key.clone()).collect();
        let work_cols: Vec<String> = match &scope.work {
            Work::Delete => vec![],
            Work::Anonymize(cols) => cols.iter().map(|(c, _)| c.clone()).collect(),
        };
        let ctx = format!("destroying a batch of '{}'", scope.table.name);
        // An anonymizing batch reads the due rows of its key range (the rows of other batches
        // in it are skipped below); a delete that could not take the fast path reads its keys.
        let lock = match &scope.work {
            Work::Anonymize(_) if !batch.is_empty() => {
                b.lock(Rows::Range(&batch[0].key, &batch[batch.len() - 1].key), &work_cols)
            }
            _ => b.lock(Rows::Keys(&keys), &work_cols),
        };
        let cascades = if matches!(scope.work, Work::Delete) { b.cascade(&keys) } else { vec![] };
        let nk = scope.key.len();
        // Where each key is in the batch.
        let position: std::collections::HashMap<Vec<String>, usize> =
            batch.iter().enumerate().map(|(i, c)| (c.key.iter().map(Value::canonical).collect(), i)).collect();
        let index_of = |key: &[Value]| position.get(&key.iter().map(Value::canonical).collect::<Vec<_>>()).copied();

        // PostgreSQL with a holds table: the holds seen by a fast path's single statement are
        // checked again after it (`Builder::holds_probe`); where they cannot be, the batch takes
        // the locking path.
        let watch = self.dialect == Dialect::Postgres && scope.holds.table.is_some();
        let subjects = if watch { subjects_of(batch) } else { Vec::new() };
        let fast = !watch || b.holds_probe_fits(&subjects);
        if fast && matches!(scope.work, Work::Delete) && cascades.is_empty() && self.returning && !batch.is_empty() {
            // Fastest path: one range delete over the batch's key range that returns what it
            // deleted. Every row it deletes passed `destroy_filter` in that statement; a
            // candidate that became held or changed meanwhile is simply not deleted. Only a
            // row outside the batch (one that became due inside its range since it was
            // selected) sends the batch to the locking path, since its evidence ids are not
            // at hand.
            let del = b.delete_range(&batch[0].key, &batch[batch.len() - 1].key);
            let done = with_pool!(self, p => {
                let mut tx = p.begin_with(self.dialect.begin_write()).await.map_err(db_err(&ctx))?;
                let since = holds_since!(self, b, tx, watch, ctx);
                let rows = bound!(del).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
                let mut destroyed = Vec::with_capacity(rows.len());
                for row in &rows {
                    let key: Vec<String> = (0..nk)
                        .map(|i| row.value(i).map(|v| v.canonical()))
                        .collect::<Result<_, _>>()
                        .map_err(db_err(&ctx))?;
                    match position.get(&key) {
                        Some(&i) => destroyed.push(i),
                        None => break,
                    }
                }
                let held = watch && !rows.is_empty() && held_since!(b, tx, since, &subjects, ctx);
                if destroyed.len() == rows.len() && !held {
                    destroyed.sort_unstable();
                    if !destroyed.is_empty() {
                        let ins = journal_sql(&b, shape, journal, ids, &destroyed)?;
                        bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
                    }
                    tx.commit().await.map_err(db_err(&ctx))?;
                    Some(BatchOutcome { destroyed, ..Default::default() })
                } else {
                    tx.rollback().await.map_err(db_err(&ctx))?;
                    None
                }
            });
            if let Some(o) = done {
                return Ok(o);
            }
        } else if fast && matches!(scope.work, Work::Delete) && !batch.is_empty() {
            // Fast path: the destroying statements re-check every row with the destroy filter
            // themselves; if they destroy exactly the batch, no row changed since it was
            // selected and nothing needs locking first. Otherwise roll back and take the
            // locking path below, which finds out which rows are still due.
            let del = b.delete(&keys);
            let all: Vec<usize> = (0..batch.len()).collect();
            let done = with_pool!(self, p => {
                let mut tx = p.begin().await.map_err(db_err(&ctx))?;
                let since = holds_since!(self, b, tx, watch, ctx);
                let mut cascaded: BTreeMap<String, u64> = BTreeMap::new();
                for (table, sql) in &cascades {
                    let r = bound!(sql).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (dependent table '{table}')")))?;
                    *cascaded.entry(table.clone()).or_default() += r.rows_affected();
                }
                let r = bound!(del).execute(&mut *tx).await.map_err(db_err(&ctx))?;
                let held = watch && held_since!(b, tx, since, &subjects, ctx);
                if r.rows_affected() == batch.len() as u64 && !held {
                    let ins = journal_sql(&b, shape, journal, ids, &all)?;
                    bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
                    tx.commit().await.map_err(db_err(&ctx))?;
                    Some(BatchOutcome { destroyed: all.clone(), cascaded, ..Default::default() })
                } else {
                    tx.rollback().await.map_err(db_err(&ctx))?;
                    None
                }
            });
            if let Some(o) = done {
                return Ok(o);
            }
        }
        with_pool!(self, p => {
            let mut tx = p.begin_with(self.dialect.begin_write()).await.map_err(db_err(&ctx))?;
            // 1. Re-read and lock the rows that are still due and not held.
            let locked = bound!(lock).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
            let locked: Vec<Vec<Value>> = locked.iter().map(decode_all).collect::<Result<_, _>>().map_err(db_err(&ctx))?;
            let mut outcome = BatchOutcome::default();
            let expected: u64;
            match &scope.work {
                Work::Delete => {
                    for row in &locked {
                        if let Some(i) = index_of(&row[..nk]) {
                            outcome.destroyed.push(i);
                        }
                    }
                    expected = outcome.destroyed.len() as u64;
                    if expected > 0 {
                        // 2. Dependents first, through the same filter on the parent.
                        for (table, sql) in &cascades {
                            let r = bound!(sql).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (dependent table '{table}')")))?;
                            *outcome.cascaded.entry(table.clone()).or_default() += r.rows_affected();
                        }
                        // 3. The rows themselves.
                        let locked_keys: Vec<Vec<Value>> = outcome.destroyed.iter().map(|&i| batch[i].key.clone()).collect();
                        let del = b.delete(&locked_keys);
                        let r = bound!(del).execute(&mut *tx).await.map_err(db_err(&ctx))?;
                        if r.rows_affected() != expected {
                            outcome.conflict = true;
                        }
                    }
                }
                Work::Anonymize(cols) => {
                    let mut rows = Vec::new();
                    for row in &locked {
                        let Some(i) = index_of(&row[..nk]) else { continue };
                        match new_values(scope, cols, &row[nk..]) {
                            Err(e) => outcome.failures.push((i, e)),
                            Ok(None) => outcome.unchanged.push(i),
                            Ok(Some(new)) => {
                                outcome.destroyed.push(i);
                                rows.push((batch[i].key.clone(), new));
                            }
                        }
                    }
                    expected = rows.len() as u64;
                    if expected > 0 {
                        let range = (batch[0].key.as_slice(), batch[batch.len() - 1].key.as_slice());
                        let mut changed = 0;
                        for upd in update_rows(&b, self.dialect, scope, cols, &rows, range) {
                            changed += bound!(upd).execute(&mut *tx).await.map_err(db_err(&ctx))?.rows_affected();
                        }
                        if changed != expected {
                            outcome.conflict = true;
                        }
                    }
                }
            }
            if outcome.conflict {
                tx.rollback().await.map_err(db_err(&ctx))?;
                return Ok(BatchOutcome { conflict: true, ..Default::default() });
            }
            // 4. The journal, in the same transaction: committed work is always accounted for.
            if expected > 0 {
                let ins = journal_sql(&b, shape, journal, ids, &outcome.destroyed)?;
                bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
            }
            tx.commit().await.map_err(db_err(&ctx))?;
            Ok(outcome)
        })
    }
}

/// The scope of the journal's own statements: no policy, no table.
fn journal_scope() -> Scope {
    bare_scope(
        TableInfo { name: String::new(), columns: vec![], primary_key: vec![], referenced_by: vec![] },
        Utc::now(),
    )
}

/// A hold id (or matter) read from a holds table as text: text as it is, anything else in its
/// canonical form (a binary id in hex).
fn hold_text(v: Value) -> String {
    match v {
        Value::Text(s) => s,
        other => other.canonical(),
    }
}

/// A journal column's text (its columns are text; a NULL reads as empty).
fn journal_text(v: Value) -> String {
    match v {
        Value::Text(s) => s,
        Value::Null => String::new(),
        other => other.canonical(),
    }
}

/// A scope of no policy over `table`, for the statements that are about a table or the
/// connection rather than a policy's rows.
fn bare_scope(table: TableInfo, now: DateTime<Utc>) -> Scope {
    Scope {
        policy: String::new(),
        table,
        key: vec![],
        subject: None,
        lapse: Filter::True,
        whole_lapse: Filter::True,
        work: Work::Delete,
        holds: crate::connector::HoldScope { policies: vec![], file: vec![], table: None, tables: vec![], now },
        restrict: vec![],
        cascade: vec![],
        pseudonym_key: None,
        objects: None,
    }
}

#[async_trait]
impl crate::connector::Connector for SqlConnector {
    fn holds_table(&self) -> Option<&HoldsTable> {
        self.holds_table.as_ref().map(|(h, _)| h)
    }

    fn own_tables(&self) -> Vec<String> {
        vec![self.journal_table.clone()]
    }

    fn holds_subject_column(&self) -> Option<&crate::connector::ColumnInfo> {
        self.holds_table.as_ref().and_then(|(h, info)| info.column(&h.subject))
    }

    async fn holds_of_other_policies(
        &self,
        known: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, ConnectorError> {
        let Some((ht, info)) = &self.holds_table else { return Ok(vec![]) };
        let scope = bare_scope(info.clone(), now);
        let Some(sql) = self.builder(&scope).holds_of_other_policies(ht, known) else { return Ok(vec![]) };
        let ctx = format!("reading holds table '{}'", ht.table);
        with_pool!(self, p => {
            let rows = bound!(sql).fetch_all(p).await.map_err(db_err(&ctx))?;
            rows.iter()
                .map(|r| {
                    Ok(hold_text(r.value(0).map_err(db_err(&ctx))?))
                })
                .collect()
        })
    }

    async fn hold_matters(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, ConnectorError> {
        let Some((ht, info)) = &self.holds_table else { return Ok(vec![]) };
        let scope = bare_scope(info.clone(), now);
        let Some(sql) = self.builder(&scope).hold_matters(ht) else { return Ok(vec![]) };
        let ctx = format!("reading the matters of holds table '{}'", ht.table);
        // Streamed: a hold per held subject is a row per hold.
        with_pool!(self, p => {
            use futures::TryStreamExt;
            let mut out = Vec::new();
            let mut rows = bound!(sql).fetch(p);
            while let Some(row) = rows.try_next().await.map_err(db_err(&ctx))? {
                let id = hold_text(row.value(0).map_err(db_err(&ctx))?);
                let in_force = hold_text(row.value(1).map_err(db_err(&ctx))?);
                let matter = hold_text(row.value(2).map_err(db_err(&ctx))?);
                // Both forms of a binary id: a SQL policy's `held_by` and an object policy's.
                if in_force != id {
                    out.push((in_force, matter.clone()));
                }
                out.push((id, matter));
            }
            Ok(out)
        })
    }

    async fn table_holds_of(&self, scope: &Scope) -> Result<Vec<(String, bool)>, ConnectorError> {
        let Some(sql) = self.builder(scope).table_holds_of(crate::connector::LOOKUP_PROBE) else { return Ok(vec![]) };
        let ctx = format!("reading the holds of the subject in '{}'", scope.table.name);
        with_pool!(self, p => {
            let rows = bound!(sql).fetch_all(p).await.map_err(db_err(&ctx))?;
            rows.iter()
                .map(|r| {
                    let id = hold_text(r.value(0).map_err(db_err(&ctx))?);
                    Ok((id, matches!(r.value(1).map_err(db_err(&ctx))?, Value::Int(1))))
                })
                .collect()
        })
    }

    fn keeps_any_type(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    async fn holds_in_force(
        &self,
        policies: &[String],
        now: DateTime<Utc>,
        subjectless: bool,
    ) -> Result<Vec<crate::connector::FileHold>, ConnectorError> {
        let Some((ht, info)) = &self.holds_table else { return Ok(vec![]) };
        let mut scope = bare_scope(info.clone(), now);
        scope.policy = policies.first().cloned().unwrap_or_default();
        scope.holds.policies = policies.to_vec();
        let sql = self.builder(&scope).holds_in_force(ht);
        let ctx = format!("reading holds table '{}'", ht.table);
        let rows: Vec<(String, Option<Value>, bool)> = with_pool!(self, p => {
            let rows = bound!(sql).fetch_all(p).await.map_err(db_err(&ctx))?;
            rows.iter()
                .map(|r| {
                    let id = hold_text(r.value(0).map_err(db_err(&ctx))?);
                    let named = !matches!(r.value(2).map_err(db_err(&ctx))?, Value::Int(0));
                    let subject = Some(r.value(1).map_err(db_err(&ctx))?).filter(|v| !matches!(v, Value::Null));
                    Ok((id, subject, named))
                })
                .collect::<Result<Vec<_>, ConnectorError>>()
        })?;
        let mut out: Vec<crate::connector::FileHold> = Vec::new();
        for (id, subject, named) in rows {
            if out.last().is_none_or(|h| h.id != id) {
                out.push(crate::connector::FileHold::new(id, vec![], false));
            }
            let h = out.last_mut().expect("pushed");
            match subject {
                // A policy without subjects cannot tell a subject's objects: a hold of a
                // subject that names it keeps all of them (a holds file naming it is refused).
                Some(_) if subjectless && named => h.whole_policy = true,
                // A binary subject as its bytes in hex (a uuid reads so), and as its text when
                // the bytes are UTF-8 (`CAST('S-1' AS BLOB)`): an identifier stored as bytes
                // (found by a review of the first fix, which read hex only).
                Some(Value::Bytes(b)) => {
                    if let Ok(t) = std::str::from_utf8(&b) {
                        h.subjects.push(Value::Text(t.to_string()));
                    }
                    h.subjects.push(Value::Text(hex::encode(&b)));
                }
                Some(Value::Text(s)) => h.subjects.push(Value::Text(s)),
                Some(other) => h.subjects.push(Value::Text(other.canonical())),
                None => h.whole_policy = true,
            }
        }
        for h in out.iter_mut().filter(|h| h.whole_policy) {
            h.subjects.clear();
        }
        Ok(out)
    }

    async fn prepare_run(&self) -> Result<(), ConnectorError> {
        self.ensure_journal().await
    }

    fn journal_readable(&self) -> bool {
        self.journal() != JournalShape::PerRecord
    }

    async fn journal_batches(
        &self,
        policy: &str,
        run_prefix: &str,
        since: &str,
    ) -> Result<Vec<crate::connector::JournalBatch>, ConnectorError> {
        if self.journal() == JournalShape::PerRecord || !run_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(vec![]);
        }
        let scope = journal_scope();
        let sql = self.builder(&scope).journal_batches(policy, run_prefix, since);
        let ctx = format!("reading journal table '{}'", self.journal_table);
        // The rows decoded inside (each backend's row type is its own); the query's own error
        // apart: no journal table yet (nothing run on this connection; `report verify
        // --journal` creates nothing) is nothing journaled.
        let fetched = with_pool!(self, p => {
            bound!(sql).fetch_all(p).await.map(|rows| {
                rows.iter()
                    .map(|r| {
                        let int = |v: Value| match v {
                            Value::Int(n) => n.max(0) as u64,
                            other => other.canonical().parse().unwrap_or(0),
                        };
                        Ok(crate::connector::JournalBatch {
                            run_id: journal_text(r.value(0).map_err(db_err(&ctx))?),
                            stage: journal_text(r.value(1).map_err(db_err(&ctx))?),
                            action: journal_text(r.value(2).map_err(db_err(&ctx))?),
                            batch: int(r.value(3).map_err(db_err(&ctx))?),
                            records: int(r.value(4).map_err(db_err(&ctx))?),
                            committed_at: chrono::DateTime::parse_from_rfc3339(&journal_text(
                                r.value(5).map_err(db_err(&ctx))?,
                            ))
                            .ok()
                            .map(|t| t.with_timezone(&chrono::Utc)),
                        })
                    })
                    .collect::<Result<Vec<_>, ConnectorError>>()
            })
        });
        match fetched {
            Ok(batches) => batches,
            Err(e) => match self.describe_table(&self.journal_table).await {
                Err(ConnectorError::NotFound { .. }) => Ok(vec![]),
                _ => Err(db_err(&ctx)(e)),
            },
        }
    }

    async fn journal_policies(&self, run_prefix: &str, since: &str) -> Result<Vec<String>, ConnectorError> {
        if self.journal() == JournalShape::PerRecord || !run_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(vec![]);
        }
        let scope = journal_scope();
        let sql = self.builder(&scope).journal_policies(run_prefix, since);
        let ctx = format!("reading journal table '{}'", self.journal_table);
        let fetched = with_pool!(self, p => {
            bound!(sql).fetch_all(p).await.map(|rows| {
                rows.iter()
                    .map(|r| Ok(journal_text(r.value(0).map_err(db_err(&ctx))?)))
                    .collect::<Result<Vec<_>, ConnectorError>>()
            })
        });
        match fetched {
            Ok(names) => names,
            Err(e) => match self.describe_table(&self.journal_table).await {
                Err(ConnectorError::NotFound { .. }) => Ok(vec![]),
                _ => Err(db_err(&ctx)(e)),
            },
        }
    }

    async fn journal_batch_ids(
        &self,
        policy: &str,
        b: &crate::connector::JournalBatch,
    ) -> Result<Vec<EvidenceId>, ConnectorError> {
        let scope = journal_scope();
        let sql = self.builder(&scope).journal_batch_ids(policy, &b.run_id, &b.stage, b.batch);
        let ctx = format!("reading journal table '{}'", self.journal_table);
        let shape = self.journal();
        let rows: Vec<(Value, Value)> = with_pool!(self, p => {
            let rows = bound!(sql).fetch_all(p).await.map_err(db_err(&ctx))?;
            rows.iter()
                .map(|r| Ok((r.value(0).map_err(db_err(&ctx))?, r.value(1).map_err(db_err(&ctx))?)))
                .collect::<Result<Vec<_>, ConnectorError>>()
        })?;
        let mut ids = Vec::new();
        for (records, subjects) in rows {
            ids.extend(journal_entries(shape, records, subjects).map_err(|m| {
                ConnectorError::Invalid(format!(
                    "{ctx}: batch {} of run {} (policy '{policy}', stage '{}'): {m}",
                    b.batch, b.run_id, b.stage
                ))
            })?);
        }
        Ok(ids)
    }

    /// A batch's statements bind a few values per row (its key in an `IN` list, the new values
    /// of an anonymizing update computed in Rust): the batch is kept under the smallest limit
    /// on bound parameters of the three databases (SQLite's 32,766) with room to spare. Not
    /// an anonymizing batch whose values the database computes: its update computed in Rust,
    /// when a value needs one, is split to fit (`update_rows`).
    fn max_batch(&self, scope: &Scope) -> usize {
        // The journal binds a few values per batch, or per record in a per-record table.
        let journal = match (self.journal(), self.dialect) {
            (JournalShape::Binary | JournalShape::TextLists, _) => 0,
            (JournalShape::PerRecord, Dialect::MySql) => 7,
            (JournalShape::PerRecord, _) => 2,
        };
        // An anonymizing batch the database computes itself binds nothing per row; when a value
        // sends it to Rust, its update is split to fit (`update_rows`).
        let update = match &scope.work {
            Work::Anonymize(cols) if !self.builder(scope).in_place(cols) => update_binds(self.dialect, scope, cols),
            _ => 0,
        };
        let per_row = journal.max(scope.key.len()).max(update);
        (MAX_BATCH_PARAMS.saturating_sub(fixed_binds(scope)) / per_row).max(1)
    }

    async fn try_run_lock(
        &self,
        name: &str,
        _objects: Option<&crate::policy::ObjectDataset>,
    ) -> Result<bool, ConnectorError> {
        match self.take_run_lock(name).await? {
            Some(held) => {
                self.run_locks.lock().await.push(held);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn close(&self) {
        // The read ahead's task holds a pooled connection: stopped first (`Pool::close` waits
        // for every connection to come back).
        let ahead = self.read_ahead.lock().map(|mut a| a.take()).unwrap_or_default();
        drop(ahead);
        for held in self.run_locks.lock().await.drain(..) {
            let _ = match held.session {
                LockSession::Pg(c) => sqlx::Connection::close(c).await,
                LockSession::My(c) => sqlx::Connection::close(c).await,
                LockSession::File(_) => Ok(()),
            };
        }
        if let Some(w) = &self.lite_writer {
            w.pool.close().await;
        }
        match &self.pool {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
            Pool::Lite(p) => p.close().await,
        }
    }

    /// A session-level lock lives as long as its session, which the server may end while the
    /// run goes on (PostgreSQL's `idle_session_timeout`, MariaDB's `wait_timeout`, a DBA, a
    /// proxy dropping an idle connection): another worker could then take it and both would
    /// destroy at once. The session holding lock `name` is asked for a sign of life; a dead
    /// one's lock is taken again on a new session, and if another worker has it meanwhile, this
    /// policy stops (the lock is forgotten: the other policies' locks are their own). A session
    /// slow to answer is not taken for dead (its lock would refuse the new session): the engine
    /// asks again.
    async fn run_lock_alive(&self, name: &str) -> Result<(), ConnectorError> {
        let mut locks = self.run_locks.lock().await;
        let Some(i) = locks.iter().position(|h| h.name == name) else { return Ok(()) };
        let answer = match &mut locks[i].session {
            LockSession::Pg(c) => {
                tokio::time::timeout(Duration::from_secs(10), sqlx::query("SELECT 1").execute(&mut *c))
                    .await
                    .map(|r| r.is_ok())
            }
            LockSession::My(c) => {
                tokio::time::timeout(Duration::from_secs(10), sqlx::query("SELECT 1").execute(&mut *c))
                    .await
                    .map(|r| r.is_ok())
            }
            LockSession::File(_) => Ok(true),
        };
        match answer {
            Ok(true) => return Ok(()),
            Err(_) => {
                return Err(ConnectorError::Lost {
                    context: "checking the run lock".into(),
                    message: "the session holding the run lock did not answer within 10 s".into(),
                })
            }
            Ok(false) => {}
        }
        tracing::warn!("the session holding the run lock ended; taking the lock again");
        match self.take_run_lock(name).await {
            Ok(Some(again)) => {
                locks[i] = again;
                Ok(())
            }
            Ok(None) => {
                locks.remove(i);
                Err(ConnectorError::Query {
                    context: "checking the run lock".into(),
                    message: "the session holding the run lock ended, and another worker holds the lock now: stopping before the next batch".into(),
                })
            }
            // A server restarting: worth another try (the engine retries, with backoff).
            Err(e) if e.is_transient() => Err(ConnectorError::Lost {
                context: "checking the run lock".into(),
                message: format!(
                    "the session holding the run lock ended, and the lock could not be taken again yet: {e}"
                ),
            }),
            Err(e) => Err(ConnectorError::Query {
                context: "checking the run lock".into(),
                message: format!("the session holding the run lock ended, and the lock could not be taken again: {e}"),
            }),
        }
    }

    async fn describe(&self, table: &str) -> Result<TableInfo, ConnectorError> {
        self.describe_table(table).await
    }

    async fn identify(&self, table: &str) -> Result<Option<TableIdentity>, ConnectorError> {
        let ctx = format!("reading the catalog of '{table}'");
        let (schema, bare) = split_table(table);
        let row: Option<(String, String, Option<String>)> = match &self.pool {
            Pool::Pg(p) => sqlx::query_as(catalog::PG_IDENTIFY)
                .bind(self.dialect.quote(table))
                .fetch_optional(p)
                .await
                .map_err(db_err(&ctx))?,
            Pool::My(p) => {
                let r = sqlx::query(catalog::MY_IDENTIFY)
                    .bind(&schema)
                    .bind(&bare)
                    .fetch_optional(p)
                    .await
                    .map_err(db_err(&ctx))?;
                match r {
                    Some(r) => Some((
                        r.try_get_unchecked(0).map_err(db_err(&ctx))?,
                        r.try_get_unchecked(1).map_err(db_err(&ctx))?,
                        r.try_get_unchecked(2).map_err(db_err(&ctx))?,
                    )),
                    None => None,
                }
            }
            // Tables of an attached database are not in `main`'s catalog: nothing said.
            Pool::Lite(_) if schema.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("main")) => None,
            Pool::Lite(p) => {
                let row: Option<(String, String)> =
                    sqlx::query_as(catalog::LITE_IDENTIFY).bind(&bare).fetch_optional(p).await.map_err(db_err(&ctx))?;
                match row {
                    Some((name, kind)) => {
                        // The main database's file, by its device and inode (one file under
                        // any path, link or mount); none in memory.
                        let file = lite_main_file(p).await.map_err(db_err(&ctx))?;
                        let place = file.and_then(|f| lite_file_id(&f)).map(|f| format!("sqlite/{f}/{name}"));
                        Some((format!("main.{name}"), kind, place))
                    }
                    None => None,
                }
            }
        };
        Ok(row.map(|(canonical, kind, place)| TableIdentity {
            canonical,
            not_a_table: catalog::not_a_table(&kind),
            place,
        }))
    }

    async fn count(&self, scope: &Scope, filter: &Filter) -> Result<u64, ConnectorError> {
        self.count_via(scope, filter, &Via::Pool).await
    }

    /// The plain filters (no subqueries) are counted together in one scan of the table; the
    /// others (holds, dependents: semi- and anti-joins) each in their own statement, side by
    /// side.
    async fn counts(&self, scope: &Scope, filters: &[Filter]) -> Result<Vec<u64>, ConnectorError> {
        self.counts_via(scope, filters, &Via::Pool).await
    }

    fn pins_counts(&self, _scope: &Scope) -> bool {
        // (PostgreSQL could, in a repeatable-read transaction; measured, its counts beside the
        // batches took from them what the batches gained: BENCHMARKS.md, 2026-12-08.)
        self.lite_wal
    }

    async fn counts_pinned(
        &self,
        scope: &Scope,
        filters: &[Filter],
        pinned: futures::channel::oneshot::Sender<()>,
    ) -> Result<Vec<u64>, ConnectorError> {
        // (Only SQLite pins: elsewhere, the default's order.)
        let Pool::Lite(p) = &self.pool else {
            let counts = self.counts(scope, filters).await;
            let _ = pinned.send(());
            return counts;
        };
        let ctx = format!("counting rows of '{}'", scope.table.name);
        let first = format!("SELECT 1 FROM {} LIMIT 1", self.dialect.quote(&scope.table.name));
        // One pooled connection in a read transaction begun by reading the table: what every
        // count then reads is the table as it was then, whatever commits after (WAL). The
        // signal goes once that read is done; the counts follow one after another. (The
        // driver's own transaction: dropped unfinished, it is rolled back before the
        // connection is used again, `sqlite_connection_fresh`.)
        // Nothing is destroyed before the signal: a transient error there is tried again, as any
        // count is (not after it, where a retry would count a later table).
        let (ctx, first) = (&ctx, &first);
        let mut tx = crate::connector::retry(|| async move {
            let mut tx = p.begin().await.map_err(db_err(ctx))?;
            sqlx::query(first).fetch_optional(&mut *tx).await.map_err(db_err(ctx))?;
            Ok(tx)
        })
        .await?;
        let _ = pinned.send(());
        let counts = {
            let on = futures::lock::Mutex::new(&mut *tx);
            self.counts_via(scope, filters, &Via::Pinned(&on)).await
        };
        // Read only: nothing to keep.
        let _ = tx.rollback().await;
        counts
    }

    fn counts_held_with_due(&self, scope: &Scope, due: &Filter, held: &Filter) -> bool {
        int_key(scope) && self.builder(scope).held_with_due(due, held)
    }

    async fn count_by_table_hold(&self, scope: &Scope, filter: &Filter) -> Result<Vec<(String, u64)>, ConnectorError> {
        if scope.holds.table.is_none() {
            return Ok(vec![]);
        }
        // MariaDB/MySQL: the rows each hold names are read within the lapsed rows' key range
        // (`lapsed_key_range`), where the batches read too, instead of anywhere in the table:
        // on the benchmark's table, larger than the buffer pool, 0.05 s instead of 0.5 s, with
        // a hold per held subject (BENCHMARKS.md).
        let within = match self.lapsed_key_range(scope, filter).await? {
            Some(Some(range)) => {
                tracing::debug!(table = %scope.table.name, "held rows counted within the key range of the lapsed rows");
                Some(range)
            }
            Some(None) => return Ok(vec![]),
            None => None,
        };
        let Some(sql) = self.builder(scope).count_by_table_hold(filter, within.as_ref()) else { return Ok(vec![]) };
        let ctx = format!("counting held rows of '{}'", scope.table.name);
        // Streamed: a hold per held subject makes this one row per held row, and the rows are
        // not all kept in the driver's form and ours at once.
        with_pool!(self, p => {
            use futures::TryStreamExt;
            let mut out = Vec::new();
            let mut rows = bound!(sql).fetch(p);
            while let Some(row) = rows.try_next().await.map_err(db_err(&ctx))? {
                let id = hold_text(row.value(0).map_err(db_err(&ctx))?);
                let n = match row.value(1).map_err(db_err(&ctx))? {
                    Value::Int(n) => n as u64,
                    _ => 0,
                };
                out.push((id, n));
            }
            Ok(out)
        })
    }

    async fn candidates(
        &self,
        scope: &Scope,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Candidate>, ConnectorError> {
        let sql = self.builder(scope).candidates(after, limit);
        let rows = self.rows(&sql, &format!("selecting due rows of '{}'", scope.table.name)).await?;
        let nk = scope.key.len();
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let subject = if scope.subject.is_some() { r.pop() } else { None };
                r.truncate(nk);
                Candidate { key: r, subject }
            })
            .collect())
    }

    async fn destroy(
        &self,
        scope: &Scope,
        batch: &[Candidate],
        ids: &[EvidenceId],
        journal: &JournalCtx,
    ) -> Result<BatchOutcome, ConnectorError> {
        // A deadlock or serialization failure rolled the whole transaction back: nothing was
        // committed, so the batch is simply tried again (workers on the same tables, e.g. shards
        // cascading into one child table, can deadlock on MariaDB's gap locks).
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            match self.destroy_once(scope, batch, ids, journal).await {
                Err(ConnectorError::Query { message, .. })
                    if attempt < 5 && (message.ends_with("[40001]") || message.ends_with("[40P01]")) =>
                {
                    let jitter = rand::random::<u64>() % 50;
                    tokio::time::sleep(Duration::from_millis(50 * attempt + jitter)).await;
                }
                r => return r,
            }
        }
    }

    /// Deletes without dependents to cascade to, on a database with `DELETE … RETURNING`, keyed
    /// by one integer column (whose order the engine can follow: the deleted rows come back in
    /// no particular order and are sorted here).
    ///
    /// Anonymizing batches, with any key: the transaction reads and locks the next due rows in
    /// key order (`Builder::lock_next`), computes their new values, updates and journals them.
    fn destroys_next(&self, scope: &Scope) -> bool {
        match scope.work {
            Work::Delete => scope.cascade.is_empty() && self.returning && int_key(scope),
            Work::Anonymize(_) => true,
        }
    }

    fn overlaps_batches(&self) -> bool {
        // SQLite has one writer at a time: the next batch would only wait for the lock. On the
        // servers a batch's `finish` locks only its own rows: a delete's writes its journal row
        // alone, an update joins the batch's values to the table by its key (PostgreSQL locks
        // only the rows it joins; MariaDB's multi-table update, which has no semi-consistent
        // read, reads the values first and the table by key, `Builder::update`).
        self.dialect != Dialect::Sqlite
    }

    async fn begin_next<'a>(
        &'a self,
        scope: &'a Scope,
        after: Option<&[Value]>,
        limit: usize,
        id: &'a IdFn<'a>,
        journal: JournalCtx,
    ) -> Result<Begun<'a>, ConnectorError> {
        if let Work::Anonymize(cols) = &scope.work {
            return self.anonymize_next(scope, cols, after, limit, id, journal).await;
        }
        if !self.destroys_next(scope) {
            return Err(ConnectorError::Invalid(format!(
                "'{}': no single-statement batches for this policy",
                scope.table.name
            )));
        }
        if let Pool::Lite(p) = &self.pool {
            return self.sqlite_delete_next(p, scope, after, limit, id, journal).await;
        }
        let b = self.builder(scope);
        let shape = self.journal();
        let ctx = format!("destroying a batch of '{}'", scope.table.name);
        let bounds = self.bounds_of(scope);
        // PostgreSQL, integer keys and subjects: the deleted rows come back as one row of arrays.
        let packed = self.dialect == Dialect::Postgres && int_key_and_subject(scope);
        let del = match packed {
            true => b.delete_next_packed(after, limit, bounds.as_ref()),
            false => b.delete_next(after, limit, bounds.as_ref()),
        };
        let begin = self.dialect.begin_delete_batch(scope.holds.table.is_some() && !scope.blocks_by_dependents());
        let watch = self.dialect == Dialect::Postgres && scope.holds.table.is_some();
        with_pool!(self, p => {
            let mut tx = p.begin_with(begin).await.map_err(db_err(&ctx))?;
            let since = holds_since!(self, b, tx, watch, ctx);
            let rows = bound!(del).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
            let mut batch: Vec<Candidate> = match packed {
                true => rows.first().map(|r| r.arrays(Subjects::of(scope))).transpose().map_err(db_err(&ctx))?.unwrap_or_default(),
                false => rows.iter().map(|r| r.candidate(scope.subject.is_some())).collect::<Result<_, _>>().map_err(db_err(&ctx))?,
            };
            drop(rows);
            batch.sort_by_key(|c| match c.key[0] { Value::Int(i) => i, _ => i64::MIN });
            let (taken, last) = (batch.len(), batch.last().map(|c| c.key.clone()));
            // Fewer rows deleted than asked for: the end of the due rows, unless the database
            // kept some it was asked to delete (a trigger that skips a row's deletion) or rows
            // changed meanwhile. Which, this statement cannot tell (it returns what it deleted,
            // not what it selected): if any row is still due after the batch's start, the batch
            // rolls back (`Changed`) and the engine takes it by its candidates, which account
            // for every row they read. Otherwise the stage ends here.
            let unsure = if taken < limit {
                let read = b.select_next(after, 1, bounds.as_ref());
                !bound!(read).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?.is_empty()
            } else {
                false
            };
            // PostgreSQL with a holds table: a hold committed while the statement waited for a
            // row's lock (`Builder::holds_probe`). Found, or not to be checked here: taken again
            // by its candidates, which lock their rows first.
            let unsure = unsure || (watch && !batch.is_empty() && held_since!(b, tx, since, &subjects_of(&batch), ctx));
            let finish = Box::pin(async move {
                if unsure {
                    tx.rollback().await.map_err(db_err(&ctx))?;
                    return Err(ConnectorError::Changed { context: ctx });
                }
                let ids = evidence_ids_yielding(&batch, id).await;
                if !batch.is_empty() {
                    let all: Vec<usize> = (0..batch.len()).collect();
                    let ins = journal_sql(&b, shape, &journal, &ids, &all)?;
                    bound!(ins).execute(&mut *tx).await.map_err(db_err(format!("{ctx} (writing the journal)")))?;
                }
                tx.commit().await.map_err(db_err(&ctx))?;
                let outcome = BatchOutcome { destroyed: (0..batch.len()).collect(), ..Default::default() };
                Ok((batch, ids, outcome))
            });
            Ok(Begun { taken, last, finish })
        })
    }

    async fn accepts(&self, column: &ColumnInfo, value: &Value) -> Result<(), String> {
        // SQLite converts what it is given; a JSON column takes only JSON; PostgreSQL's types
        // (uuid, inet, json, bytea…) parse it, and can be asked.
        if let (Pool::My(p), "json") = (&self.pool, column.sql_type.as_str()) {
            // As it will be written (a number or boolean as its text).
            let Ok(Value::Text(t)) = builder::coerce(value.clone(), ColumnKind::Other) else { return Ok(()) };
            let valid: Option<i64> = sqlx::query_scalar(catalog::MY_JSON_VALID)
                .bind(t)
                .fetch_one(p)
                .await
                .map_err(|e| format!("it could not be checked: {e}"))?;
            return match valid {
                Some(1) => Ok(()),
                _ => Err("it is not JSON, and the column takes only JSON".into()),
            };
        }
        let Pool::Pg(p) = &self.pool else { return Ok(()) };
        // As the run binds it (`Builder::update` coerces a constant to the column's kind first:
        // a number for a `jsonb` column is sent as its text, which the cast reads).
        let sent = builder::coerce(value.clone(), column.kind).unwrap_or_else(|_| value.clone());
        let probe = builder::cast_probe(&column.sql_type, sent);
        match bound!(probe).fetch_one(p).await {
            Ok(_) => Ok(()),
            // The constant is the policy's own text, not personal data: the message may quote it.
            Err(sqlx::Error::Database(e)) => {
                Err(format!("PostgreSQL refuses it: {} [{}]", e.message(), e.code().as_deref().unwrap_or("?")))
            }
            Err(e) => Err(format!("it could not be checked: {e}")),
        }
    }

    /// MariaDB/MySQL: strict mode refuses at the write what does not fit (a number out of
    /// range, a date out of a TIMESTAMP's, too many bytes): known from the type.
    fn stores(&self, column: &ColumnInfo, value: &Value) -> Result<(), String> {
        match &self.pool {
            Pool::My(_) => catalog::my_misfit(&column.sql_type, value, self.my_timestamp_max).map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }

    async fn local_time_zone(&self) -> Option<String> {
        let Pool::My(p) = &self.pool else { return None };
        // The server's zone (`SYSTEM`: the host's), which the application's sessions write
        // `NOW()` in unless they set one of their own.
        let (global, system): (String, String) =
            sqlx::query_as("SELECT CAST(@@global.time_zone AS CHAR), CAST(@@system_time_zone AS CHAR)")
                .fetch_one(p)
                .await
                .ok()?;
        non_utc_zone(&global, &system)
    }

    fn key_column_problem(&self, column: &ColumnInfo) -> Option<String> {
        let t = column.sql_type.trim().to_ascii_lowercase();
        match self.dialect {
            // Found by a read-only review: `k > 'b'` compares the text, the index orders by the
            // type's list, and rows before the batch's last key were left due, the run "done".
            Dialect::MySql if t.starts_with("enum") || t.starts_with("set") => Some(format!(
                "it is {}: MariaDB orders its values by their place in the type's list but compares them with a \
                 value as text, so batches taken by key would skip rows; use a key of another type",
                if t.starts_with("enum") { "an ENUM" } else { "a SET" }
            )),
            // Its values are read back as text, which equals no integer in a column of no
            // affinity: every batch after the first matched nothing (found by a review).
            // (And `ANY` in a STRICT table, the same; found by a review.)
            Dialect::Sqlite if t.is_empty() || t == "any" => Some(
                "it has no declared type (or ANY): SQLite compares its integers and texts as different values, so \
                 batches taken by key would find nothing; declare its type (INTEGER, TEXT, …)"
                    .to_string(),
            ),
            _ => None,
        }
    }

    async fn anchor_readable(&self, table: &TableInfo, column: &str) -> Result<bool, ConnectorError> {
        let scope = bare_scope(table.clone(), Utc::now());
        let sql = self.builder(&scope).anchor_readable(column);
        let ctx = format!("reading anchor column '{column}' of '{}'", table.name);
        let readable: i64 =
            with_pool!(self, p => { sqlx::query_scalar(&sql).fetch_one(p).await.map_err(db_err(&ctx)) })?;
        Ok(readable != 0)
    }

    async fn settle(
        &self,
        scope: &Scope,
        keys: &[Vec<Value>],
        range: Option<crate::connector::KeyRange<'_>>,
    ) -> Result<(), ConnectorError> {
        if (keys.is_empty() && range.is_none()) || self.dialect == Dialect::Sqlite {
            return Ok(());
        }
        let b = self.builder(scope);
        let mut locks = Vec::new();
        if !keys.is_empty() {
            locks.push(b.share_lock(keys));
        }
        if let Some(r) = range {
            locks.push(b.share_lock_range(r.after, r.upto));
        }
        let ctx = format!("waiting for the rows of a batch of '{}'", scope.table.name);
        with_pool!(self, p => {
            let mut tx = p.begin().await.map_err(db_err(&ctx))?;
            for sql in locks {
                bound!(sql).fetch_all(&mut *tx).await.map_err(db_err(&ctx))?;
            }
            tx.rollback().await.map_err(db_err(&ctx))?;
        });
        Ok(())
    }

    async fn remaining(&self, scope: &Scope, keys: &[Vec<Value>]) -> Result<u64, ConnectorError> {
        if keys.is_empty() {
            return Ok(0);
        }
        // The quick tests of what is left to do; `Strategy::apply` decides each row below.
        let b = Builder { quick_pending: true, ..self.builder(scope) };
        let ctx = format!("verifying '{}'", scope.table.name);
        let names: Vec<String> = match &scope.work {
            Work::Delete => vec![],
            Work::Anonymize(cols) => cols.iter().map(|(c, _)| c.clone()).collect(),
        };
        // The keys come in key order: the rows between the first and the last are read with one
        // index range scan (binding thousands of keys costs the database more than reading the
        // few other lapsed rows of the range, which are then left out here).
        let rows = self.rows(&b.read(Rows::Range(&keys[0], &keys[keys.len() - 1]), &names), &ctx).await?;
        if rows.is_empty() {
            // The usual answer: nothing of the range is left to match against the keys.
            return Ok(0);
        }
        // Single integer keys, the usual, are looked up as integers: the text form of every key
        // of the batch cost two allocations a key (a tenth of lapse's own allocations in a
        // PostgreSQL delete, by `perf`), for the few rows read here.
        let nk = scope.key.len();
        let int_keys: Option<std::collections::HashSet<i64>> = match nk {
            1 => keys.iter().map(|k| if let [Value::Int(i)] = k[..] { Some(i) } else { None }).collect(),
            _ => None,
        };
        let mut text_keys: Option<std::collections::HashSet<Vec<String>>> = None;
        let mut left = 0;
        for row in rows {
            let wanted = match (&int_keys, &row[..nk]) {
                (Some(ints), [Value::Int(i)]) => ints.contains(i),
                _ => text_keys
                    .get_or_insert_with(|| keys.iter().map(|k| k.iter().map(Value::canonical).collect()).collect())
                    .contains(&row[..nk].iter().map(Value::canonical).collect::<Vec<String>>()),
            };
            if !wanted {
                continue;
            }
            let pending = match &scope.work {
                Work::Delete => true,
                // Random tokens and pseudonyms are recognised by shape; a nullified or constant
                // value applies to itself as a no-op.
                Work::Anonymize(cols) => cols
                    .iter()
                    .zip(&row[nk..])
                    .any(|((_, s), v)| matches!(s.apply(v, scope.pseudonym_key.as_deref()), Ok(Some(_)))),
            };
            if pending {
                left += 1;
            }
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn journal_rows_read_as_written() {
        let h = |n: u8| [n; 32];
        let mut records = [h(1), h(2), h(3)].concat();
        let subjects = [h(7), [0; 32], h(9)].concat();
        let ids = journal_entries(JournalShape::Binary, Value::Bytes(records.clone()), Value::Bytes(subjects)).unwrap();
        let got: Vec<(String, Option<String>)> = ids.into_iter().map(|i| (i.record, i.subject)).collect();
        assert_eq!(
            got,
            vec![
                (hex::encode(h(1)), Some(hex::encode(h(7)))),
                (hex::encode(h(2)), None),
                (hex::encode(h(3)), Some(hex::encode(h(9)))),
            ],
            "a zero subject is none"
        );
        // No subject in the batch; bytes that MariaDB handed over as text.
        let ascii = [b'a'; 64];
        let ids = journal_entries(JournalShape::Binary, Value::Text("a".repeat(64)), Value::Bytes(vec![])).unwrap();
        assert_eq!(
            ids.iter().map(|i| (i.record.clone(), i.subject.clone())).collect::<Vec<_>>(),
            vec![(hex::encode(&ascii[..32]), None), (hex::encode(&ascii[32..]), None)]
        );
        // Lengths lapse does not write: an error, not fewer records.
        let short = journal_entries(JournalShape::Binary, Value::Bytes(records[..40].to_vec()), Value::Bytes(vec![]));
        assert!(short.unwrap_err().contains("40 bytes of records"));
        records.truncate(64);
        let odd = journal_entries(JournalShape::Binary, Value::Bytes(records), Value::Bytes(vec![7; 32]));
        assert!(odd.unwrap_err().contains("32 of subjects"));
        // The earlier text lists, an empty subject entry none.
        let ids =
            journal_entries(JournalShape::TextLists, Value::Text("ab,cd".into()), Value::Text(",ef".into())).unwrap();
        assert_eq!(
            ids.iter().map(|i| (i.record.as_str(), i.subject.as_deref())).collect::<Vec<_>>(),
            vec![("ab", None), ("cd", Some("ef"))]
        );
    }

    #[test]
    fn mysql_zero_and_partial_dates_as_text() {
        assert_eq!(mysql_date_text(Some(&[0])).as_deref(), Some("0000-00-00"));
        let partial = [4, 0xC6, 0x07, 0, 0]; // 1990, month 0, day 0
        assert_eq!(mysql_date_text(Some(&partial)).as_deref(), Some("1990-00-00"));
        let datetime = [7, 0xC6, 0x07, 5, 0, 10, 20, 30];
        assert_eq!(mysql_date_text(Some(&datetime)).as_deref(), Some("1990-05-00 10:20:30"));
        assert_eq!(mysql_date_text(Some(b"1990-05-00")).as_deref(), Some("1990-05-00"), "text protocol");
        assert_eq!(mysql_date_text(Some(&[4, 1])), None, "short");
    }

    use super::*;

    #[test]
    fn sanitize_drops_quoted_values() {
        assert!(!sanitize("Duplicate entry 'z-O'Qwertyuiop' for key 'ab'").contains("Qwerty"));
        assert!(!sanitize("invalid input syntax for type uuid: \"zelda@example.org\"").contains("zelda"));
        assert_eq!(sanitize("deadlock detected"), "deadlock detected");
        // Localized messages (lc_messages): other quotation marks.
        for m in [
            "la valeur d'une clé dupliquée rompt la contrainte unique « people_email_key »",
            "ungültige Eingabesyntax für Typ uuid: „zelda@example.org“",
            "неверный синтаксис для типа uuid: «zelda@example.org»",
        ] {
            assert!(!sanitize(m).contains("zelda") && !sanitize(m).contains("people_email"), "{m}");
        }
    }

    #[test]
    fn a_servers_zone_is_said_unless_utc() {
        assert_eq!(non_utc_zone("SYSTEM", "UTC"), None);
        assert_eq!(non_utc_zone("+00:00", "CET"), None);
        assert_eq!(non_utc_zone("SYSTEM", "CET").as_deref(), Some("CET"));
        assert_eq!(non_utc_zone("-05:00", "UTC").as_deref(), Some("-05:00"));
        assert_eq!(non_utc_zone("Europe/Berlin", "UTC").as_deref(), Some("Europe/Berlin"));
    }

    #[test]
    fn redact_url_hides_passwords() {
        let m = redact_url(
            "error connecting to db.internal: password s3cr3t rejected",
            "postgres://app:s3cr3t@db.internal/app",
        );
        assert!(!m.contains("s3cr3t"));
    }
}
