//! The one place that builds dynamic SQL.
//!
//! Identifiers reach this module only after validation against the catalog, and are quoted here;
//! every value is a bound parameter. Destroying statements (`delete`, `update`, `cascade`) take
//! their row predicate from [`Scope::destroy_filter`] and nothing else, so the hold predicates are
//! part of every destroying statement — a hold inserted while a run is in progress is honoured by
//! the very statement that would have destroyed the row.

use chrono::{DateTime, Utc};

use crate::config::HoldsTable;
use crate::connector::{Cascade, ColumnKind, Filter, ForeignKey, LapseRule, Scope, TableInfo};
use crate::policy::condition::{Literal, Test};
use crate::policy::strategy::{literal_value, DateUnit, PendingTest, Strategy};
use crate::value::Value;

/// One decimal octet of a canonical dotted quad (0–255, no leading zeros), as a regular
/// expression: the IPv4 guard of the in-place update and the test of a done network.
macro_rules! octet {
    () => {
        "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    };
}

/// What `generalize_ip` writes for an address, as a regular expression without its end anchor
/// (dialects differ: PCRE's `$` also matches before a final newline): an IPv4 /24 `a.b.c.0`,
/// the same as IPv6 `::ffff:a.b.c.0`, an IPv6 /48 as Rust writes one (lowercase, no leading
/// zeros, the zeros after it folded: `2001:db8:c::`, `2001::`, `::`), or a 6to4 address's /40
/// (`2002:cb00:7100::`: its embedded IPv4 address's /24; its /48 would keep all of it). The
/// first group of a /48 is any but `2002`, spelled out (no look-ahead in every dialect).
const IP_NETWORK: &str = concat!(
    "^(",
    octet!(),
    "(\\.",
    octet!(),
    "){2}\\.0|::ffff:",
    octet!(),
    "(\\.",
    octet!(),
    "){2}\\.0",
    "|(0|[1-9a-f][0-9a-f]{0,2}|[13-9a-f][0-9a-f]{3}|2[1-9a-f][0-9a-f]{2}|20[1-9a-f][0-9a-f]|200[013-9a-f])",
    "(:(0|[1-9a-f][0-9a-f]{0,3})){0,2}::",
    "|2002(:(0|[1-9a-f][0-9a-f]{0,3})(:(0|[1-9a-f][0-9a-f]?00))?)?::",
    "|::",
    ")"
);

/// A value `generalize_ip` leaves as it is: a network (`IP_NETWORK`), then any mask, which it
/// keeps as written (a prefix length, or an IPv4 netmask as Rust parses one); `end` is the
/// dialect's end-of-text anchor.
fn ip_done(end: &str) -> String {
    const OCTET: &str = octet!();
    format!("{IP_NETWORK}(/([0-9]{{1,3}}|{OCTET}(\\.{OCTET}){{3}}))?{end}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    /// Starts a destroying transaction. SQLite takes the write lock up front (`IMMEDIATE`): a
    /// deferred transaction that reads, then writes, fails at once with "database is locked" when
    /// another process (another shard) wrote in between, instead of waiting its turn.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        }
    }

    /// The transaction of a delete batch that selects its own rows (`delete_next`), on a
    /// table whose holds are in a holds table (`holds_table`) and which no `restrict` dependent
    /// guards. Its statement is planned for a key range whose end is a subquery: PostgreSQL
    /// guesses a few rows and anti-joins them to the holds by hash, reading and hashing the whole
    /// holds table for every batch (25,000 rows, 3.7 ms of a 10 ms `DELETE` in the benchmark's
    /// table). Without hash joins, in this transaction only (`SET LOCAL`), it merges them with
    /// the holds' subject index, read up to the batch's last key, or sorts the holds where there
    /// is no such index: a run of the benchmark's delete 10 % faster, and no slower without the
    /// index (BENCHMARKS.md). A `restrict` dependent's table, which may be large and have no
    /// index on its foreign key, keeps the planner's choice.
    pub fn begin_delete_batch(self, holds_table: bool) -> &'static str {
        match self {
            Dialect::Postgres if holds_table => "BEGIN; SET LOCAL enable_hashjoin = off",
            _ => self.begin_write(),
        }
    }

    /// The run lock (`try_run_lock`): a session-level lock released when the session ends,
    /// also when the process is killed. One bound parameter: the lock key (PostgreSQL: a
    /// bigint; MySQL: a name, server-wide). SQLite has none (a lock file is used instead).
    pub fn try_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Postgres => Some("SELECT pg_try_advisory_lock($1)"),
            Dialect::MySql => Some("SELECT GET_LOCK(?, 0)"),
            Dialect::Sqlite => None,
        }
    }

    /// Quotes an identifier (`schema.table` becomes two quoted parts).
    pub fn quote(self, ident: &str) -> String {
        ident
            .split('.')
            .map(|part| match self {
                Dialect::MySql => format!("`{}`", part.replace('`', "``")),
                _ => format!("\"{}\"", part.replace('"', "\"\"")),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// A statement and its parameters.
#[derive(Debug, Clone)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Value>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql { text: String::new(), params: Vec::new(), dialect }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// The same statement with other values, as many and in the same places.
    pub fn rebound(mut self, params: Vec<Value>) -> Sql {
        assert_eq!(params.len(), self.params.len(), "a statement rebound with as many values");
        self.params = params;
        self
    }

    fn bind(&mut self, v: Value) -> &mut Self {
        self.params.push(v);
        match self.dialect {
            Dialect::Postgres => {
                let n = self.params.len();
                self.text.push_str(&format!("${n}"))
            }
            _ => self.text.push('?'),
        }
        self
    }

    /// Binds a value compared with or assigned to `col`; PostgreSQL needs an explicit cast for
    /// types that have no implicit conversion from the parameter's type (a date or time
    /// written as text in a policy, as `constant: "1900-01-01"` or `when: "birth > '1980-01-01'"`,
    /// is compared with a `date` column as a `date`).
    fn bind_for(&mut self, v: Value, col: Option<&crate::connector::ColumnInfo>, assign: bool) -> &mut Self {
        let cast = match (self.dialect, col) {
            (Dialect::Postgres, Some(c))
                if assign
                    || c.kind == ColumnKind::Other
                    || (c.kind.is_temporal() && matches!(v, Value::Text(_)))
                    || (c.kind == ColumnKind::Bytes && matches!(v, Value::Text(_)))
                    || is_bpchar(c)
                    // `citext = text` compares as text, case and all: a hold of `A@X.DE`
                    // must hold `a@x.de` as the column's own comparison does.
                    || c.sql_type.ends_with("citext") =>
            {
                Some(c.sql_type.clone())
            }
            _ => None,
        };
        // Compared, a value is cast to the column's type without its modifier: `numeric(10,0)`
        // rounds 2.5 to 3 and `character(6)` cuts 'closed_final' to 'closed', and the
        // comparison then matched rows it must not (`score <= 2.5` lapsed a score of 3).
        let cast = match (cast, assign) {
            (Some(t), false) => Some(comparison_type(&t)),
            (t, _) => t,
        };
        match cast {
            Some(t) => {
                self.push("CAST(");
                self.bind(v);
                self.push(&format!(" AS {t})"))
            }
            None => self.bind(v),
        }
    }
}

/// PostgreSQL: a statement that casts `v` to a column's type, to learn before a run whether the
/// column can hold a policy's constant (`Connector::accepts`). `sql_type` is the catalog's own
/// spelling of the type (`format_type`), never text from a policy.
pub fn cast_probe(sql_type: &str, v: Value) -> Sql {
    let mut sql = Sql::new(Dialect::Postgres);
    sql.push("SELECT CAST(");
    sql.bind(v);
    sql.push(&format!(" AS {sql_type}) IS NULL"));
    sql
}

/// A PostgreSQL type (as `format_type` spells it) without its modifier, to compare a value
/// with a column of it: `numeric(10,0)` → `numeric`, `timestamp(0) with time zone` →
/// `timestamp with time zone`, `character(6)` → `bpchar` (blank-padded comparison, no length:
/// `character` alone is `character(1)`), `bit(3)` → `bit varying`.
fn comparison_type(t: &str) -> String {
    // An array of a type: the array of its element's comparison type (`character(6)[]` is
    // `bpchar[]`, not `character[]`, which is `character(1)[]`).
    if let Some(element) = t.trim_end().strip_suffix("[]") {
        return format!("{}[]", comparison_type(element));
    }
    let mut out = String::with_capacity(t.len());
    let mut depth = 0usize;
    for c in t.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    match out.as_str() {
        "character" | "bpchar" => "bpchar".into(),
        "bit" => "bit varying".into(),
        _ => out,
    }
}

/// MariaDB/MySQL: the type to cast a constant to so that it compares equal to what the column
/// stores: a single-precision `FLOAT` keeps `0.1` as 0.100000001, a `DECIMAL(10,2)` rounds
/// `1.005` to 1.01. None for other types (compared as they are).
fn mysql_stored_type(c: &crate::connector::ColumnInfo) -> Option<String> {
    let t = c.sql_type.to_ascii_lowercase();
    let t = t.trim_end_matches(" unsigned zerofill").trim_end_matches(" unsigned").trim_end_matches(" zerofill");
    if t == "float" || (t.starts_with("float(") && !t.contains(',')) {
        return Some("FLOAT".into());
    }
    if let Some(args) = t.strip_prefix("decimal(").and_then(|r| r.strip_suffix(')')) {
        if args.bytes().all(|b| b.is_ascii_digit() || b == b',') {
            return Some(format!("DECIMAL({args})"));
        }
    }
    None
}

/// A `numeric`/`decimal` column (kind `Other`: read as text), whose values a hold's subject
/// must also be compared with as numbers (`42` is the stored `42.00`).
fn is_decimal(c: &crate::connector::ColumnInfo) -> bool {
    let t = c.sql_type.to_ascii_lowercase();
    c.kind == ColumnKind::Other && (t.starts_with("numeric") || t.starts_with("decimal")) && !t.ends_with("[]")
}

/// A subject written as a plain decimal number that a `DECIMAL(65,30)` holds: the text to
/// cast and compare with a decimal column. None for anything else (compared as text only).
fn decimal_subject(v: &Value) -> Option<String> {
    let t = v.canonical();
    let t = t.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !int.is_empty()
        && int.len() <= 35
        && frac.len() <= 30
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| t.to_string())
}

/// A PostgreSQL `char(n)`: compared with a text parameter it is cast to text, which drops its
/// padding (`'a  '` no longer equals the key read back), so its parameters are cast to it.
fn is_bpchar(c: &crate::connector::ColumnInfo) -> bool {
    c.sql_type.starts_with("character(") || c.sql_type == "bpchar" || c.sql_type == "character"
}

/// SQLite's `time_expr` of the expression `e`.
fn lite_time_expr(e: &str) -> String {
    format!(
        "(CASE typeof({e}) WHEN 'integer' THEN (CASE WHEN {e} >= 2415020.5 AND NOT {e} BETWEEN 10000101 AND 99991231 THEN julianday({e},'auto') END) \
         WHEN 'real' THEN (CASE WHEN {e} >= 2415020.5 AND NOT {e} BETWEEN 10000101 AND 99991231 THEN julianday({e},'auto') END) \
         WHEN 'blob' THEN NULL ELSE (CASE WHEN {e} LIKE '____-__-__%' AND unicode({e}) BETWEEN 48 AND 57 THEN julianday({e}) END) END)"
    )
}

/// SQLite's `not_truncated`: a value not in any shape `truncate_text` writes, `YYYY-MM-01`,
/// `YYYY-MM-01 00:00` or `YYYY-MM-01 00:00:00` (`MM` `01` for a year), with a month `[01][0-9]` from 01 to 12
/// (`00` and `13`–`19` are no month), nor MariaDB's zero date, which `truncate_text` leaves as
/// it is (else it would be read again in every run).
fn lite_not_truncated(e: &str, unit: DateUnit) -> String {
    let day = match unit {
        DateUnit::Year => "01-01",
        DateUnit::Month => "[01][0-9]-01",
    };
    format!(
        "NOT (({e} GLOB '[0-9][0-9][0-9][0-9]-{day}' OR {e} GLOB '[0-9][0-9][0-9][0-9]-{day} 00:00:00' \
         OR {e} GLOB '[0-9][0-9][0-9][0-9]-{day} 00:00') \
         AND SUBSTR({e}, 6, 2) BETWEEN '01' AND '12' OR {e} GLOB '0000-00-00*')"
    )
}

/// What `lite_time_expr` reads text by, written plainly: only text that starts with a date.
/// `lite_time_expr` tests less, at two thirds of the cost over a million rows (0.25 s against
/// 0.35 s: `GLOB` is slower than `julianday` itself), and reads the same: text that `julianday`
/// reads, with a digit first and `-` fifth and eighth, was read as a date `YYYY-MM-DD` (a time
/// `HH:MM` has a digit fifth; a number has one `-` at most after a digit first, in its
/// exponent; `now` starts with no digit). `sqlite_text_anchor_test_reads_as_the_plain_rule`
/// holds the two together.
#[cfg(test)]
fn lite_time_expr_plain(e: &str) -> String {
    lite_time_expr(e).replace(
        &format!("{e} LIKE '____-__-__%' AND unicode({e}) BETWEEN 48 AND 57"),
        &format!("{e} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"),
    )
}

/// SQLite's `generalize_date` of text `e` (`Strategy::apply`'s `truncate_text`): the first
/// `len` characters of the date (`YYYY` or `YYYY-MM`) and `tail`, with the time's shape. A time
/// with a zone offset is generalized from its UTC date (`datetime`, which reads it as the
/// anchor's `julianday` does), since what is written has no offset and reads as UTC: never
/// later than the value. `'+0 days'` has `datetime` write the date it computed, not the one
/// written (`2021-02-28 24:00` is March's, which `datetime` alone writes as it is).
///
/// A time to the minute keeps that shape (`strategy::to_the_minute`: after whitespace or `T`, a
/// `:` third and none sixth), so that what is written is never longer than the value.
fn lite_generalize_date(e: &str, len: usize, tail: &str) -> String {
    format!(
        "CASE WHEN {e} IS NULL THEN NULL WHEN LENGTH({e}) = 10 THEN SUBSTR({e}, 1, {len}) || '{tail}' \
         ELSE SUBSTR(COALESCE(datetime({e}, '+0 days'), {e}), 1, {len}) || '{tail} 00:00' \
         || CASE WHEN SUBSTR(LTRIM(SUBSTR({e}, 11), 'T ' || char(9, 10, 11, 12, 13)), 3, 1) = ':' \
         AND SUBSTR(LTRIM(SUBSTR({e}, 11), 'T ' || char(9, 10, 11, 12, 13)), 6, 1) <> ':' THEN '' ELSE ':00' END END"
    )
}

/// The values `lite_generalize_date` computes as `Strategy::apply` does: text starting with a
/// real date, alone or in years 0001–9998 (where a time and offset cannot move the UTC date out
/// of the years `datetime` writes in four digits; `Strategy::apply` refuses those) and at most
/// 64 characters long (a fraction of hundreds of digits, which `Strategy::apply` refuses). The
/// year is compared as the text `SUBSTR` gives, which has no affinity: the column itself, of a
/// declared `DATE` or `DATETIME` (numeric affinity), would compare the literals as numbers.
fn lite_generalize_date_guard(e: &str) -> String {
    format!(
        "(typeof({e}) = 'text' AND date(SUBSTR({e}, 1, 10)) IS SUBSTR({e}, 1, 10) \
         AND (LENGTH({e}) = 10 OR (SUBSTR({e}, 1, 4) BETWEEN '0001' AND '9998' AND LENGTH({e}) <= 64)))"
    )
}

/// PostgreSQL: a date or timestamp that is no time (`infinity`, `-infinity`).
fn pg_infinite(e: &str) -> String {
    format!("{e} IN ('-infinity', 'infinity')")
}

/// SQLite: a range of stored values that holds every anchor `time_expr` reads as at or before
/// `threshold`, so that an index on the anchor serves the lapsed test (which, through
/// `julianday`, serves none): every number (numbers sort before text), and text before the date
/// two days after the threshold's. Text reads as a time only when it starts with a date
/// `YYYY-MM-DD` (`time_expr`; a blob never does), and a time at or before the threshold is
/// written on a date at most one day after the threshold's, since a zone offset is at most 14:59
/// (`+14:59`: the local date is the next one) and a day past the month's end (`02-31`) only
/// moves the time later; such text sorts before that date two days on, whatever follows the
/// date and whatever the column's built-in collation (`NOCASE`, `RTRIM`: digits and `-` only).
/// One range, not two (blobs sort after text): SQLite answers an `OR` of two ranges by
/// collecting every row id it finds, memory that grows with the table. `None` where that date
/// is past year 9999 (four digits no longer sort by value): no range then.
pub fn lite_lapsed_range(threshold: DateTime<Utc>) -> Option<String> {
    let upper = threshold.date_naive().checked_add_days(chrono::Days::new(2))?;
    use chrono::Datelike;
    (upper.year() <= 9999 && upper.year() >= 0).then(|| upper.format("%Y-%m-%d").to_string())
}

/// Converts a value to the representation a column of `kind` expects (hold subjects and
/// condition literals are written as text in YAML).
pub fn coerce(v: Value, kind: ColumnKind) -> Result<Value, String> {
    Ok(match (v, kind) {
        (Value::Text(s), ColumnKind::Int) => {
            Value::Int(s.trim().parse().map_err(|_| format!("'{s}' is not an integer"))?)
        }
        (Value::Text(s), ColumnKind::Float) => {
            Value::Float(s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?)
        }
        (Value::Int(i), ColumnKind::Text | ColumnKind::Other) => Value::Text(i.to_string()),
        (Value::Float(f), ColumnKind::Text | ColumnKind::Other) => Value::Text(f.to_string()),
        (Value::Bool(b), ColumnKind::Text | ColumnKind::Other) => Value::Text(b.to_string()),
        (Value::Int(i), ColumnKind::Float) => Value::Float(i as f64),
        (v, _) => v,
    })
}

/// Builds the statements of one scope.
pub struct Builder<'a> {
    pub d: Dialect,
    pub scope: &'a Scope,
    /// Catalog of the holds table, when the connection has one.
    pub holds_info: Option<&'a TableInfo>,
    pub journal_table: &'a str,
    /// MariaDB rather than MySQL (same dialect): it has table value constructors, `VALUES
    /// (...), (...)`, which MySQL spells `VALUES ROW(...)`.
    pub mariadb: bool,
    /// The database has a strong random source callable in SQL (PostgreSQL 13+
    /// `gen_random_uuid`, MariaDB 10.10+/MySQL `RANDOM_BYTES`, SQLite `randomblob`): random
    /// tokens can be made in an `UPDATE` (see [`Builder::in_place`]).
    pub db_random: bool,
    /// Rendering a count ([`Builder::counting`]): SQLite's lapsed test adds its range
    /// (`lite_lapsed_range`) there only. In a batch's statements, which go by key windows, the
    /// planner (with `ANALYZE`'s statistics) could take the anchor's index for it and sort,
    /// rereading the whole lapsed range for each batch.
    pub counting: std::cell::Cell<bool>,
    /// Rendering a WHERE clause of holds-file subjects alone ([`Builder::table_holds_of`]):
    /// `subject IN (…)` without the `COALESCE` that a negation needs, so that an index on the
    /// subject serves it (with it, every row of the table was read: found by a review).
    pub bare_in: std::cell::Cell<bool>,
    /// SQLite: held rows may be counted from the holds' side (`lite_split_held`). Not where
    /// the schema declares a collation: `subject IN (the holds' subjects)` compares by the row's
    /// subject column's collation, the destroying statements' `NOT EXISTS (… lh.subject =
    /// subject)` by the holds column's, and the counts would not be what is destroyed.
    pub split_holds: bool,
    /// The verification read (`SqlConnector::remaining`): random tokens, pseudonyms and IP
    /// networks are tested by their quick form only (a prefix; `LIKE`s), which lapse's
    /// `Strategy::apply` then checks exactly on each row read. Everything lapse writes has
    /// the exact form, so the quick form finds the same rows; the exact tests, run on every
    /// anonymized row of the range, took SQLite's benchmark run 9 % longer.
    pub quick_pending: bool,
    /// MariaDB/MySQL, a count of unknown anchors (`Filter::AnchorNull`) of this `DATE` or
    /// `DATETIME` column, which leads an index, whose dates from `0001-01-01` on are of these
    /// years (from, to): the zero and partial dates are read from the index where they sort,
    /// before `0001-01-01` and between one month's last instant and the next one's first
    /// ([`zero_date_gaps`]), instead of testing every entry of the index.
    pub unknown_years: Option<(String, i32, i32)>,
    /// While the filter of a batch `DELETE` bounded by a subquery is rendered
    /// ([`Builder::delete_next`] on PostgreSQL and SQLite): the key range the batch reads, which
    /// then bounds the holds' subjects too where the subject is the integer key
    /// ([`Builder::held_subjects_within`]).
    pub batch_keys: std::cell::RefCell<Option<KeyWindow>>,
}

/// The key range of a batch's statement: its lower bound (and whether it is inclusive), its
/// upper bound (inclusive).
#[derive(Debug)]
pub struct KeyWindow {
    pub lower: Option<(Value, bool)>,
    pub upper: Option<Value>,
}

impl<'a> Builder<'a> {
    /// Renders a count: `render` with [`Builder::counting`] set.
    fn counting<T>(&self, render: impl FnOnce() -> T) -> T {
        let was = self.counting.replace(true);
        let out = render();
        self.counting.set(was);
        out
    }

    fn q(&self, ident: &str) -> String {
        self.d.quote(ident)
    }

    fn table(&self) -> String {
        self.q(&self.scope.table.name)
    }

    fn col(&self, qual: &str, c: &str) -> String {
        format!("{qual}.{}", self.q(c))
    }

    /// A temporal column as a comparable expression. SQLite stores times as text or numbers, so
    /// both sides go through `julianday`: a number as SQLite's date functions read it with
    /// `'auto'` (up to 5373484.5 a Julian day number, the `REAL` convention of SQLite's manual;
    /// beyond, Unix seconds), and only from 2415020.5 (1 January 1900 as a Julian day): below,
    /// a number is a year (`2019`), a sentinel (`0`) or a time in the first weeks of 1970, no
    /// anchor to trust (unknown, kept), nor is one from 10000101 to 99991231 (a date written
    /// `YYYYMMDD`, which `'auto'` would read as Unix seconds of 1970-1973); text only when it starts with a date `YYYY-MM-DD` (a blob never:
    /// no one stores a time so, and one range of text then holds every lapsed anchor, `lite_lapsed_range`):
    /// `julianday` also reads text of digits as a Julian day (`'2019'`, a year, is 4708 BC; `'0'`,
    /// a sentinel, 4713 BC), and `'now'` as now; such text is no time here (unknown, kept). The
    /// simple `CASE` reads the storage class once per row (a scan of a million rows: 0.24 s
    /// against 0.29 s for `CASE WHEN typeof(…) IN (…)`, the same values).
    fn time_expr(&self, qual: &str, c: &str) -> String {
        let e = self.col(qual, c);
        match self.d {
            Dialect::Sqlite => lite_time_expr(&e),
            _ => e,
        }
    }

    /// A non-NULL value of a column of `kind` that `generalize_date` would still change: not
    /// the first instant of its year or month, exactly as `Strategy::apply` sees it. Text is
    /// already generalized only in the three shapes `Strategy::apply` writes (`YYYY-01-01`,
    /// `YYYY-01-01 00:00` and `YYYY-01-01 00:00:00`); anything else is left to it (which rewrites it or reports it as
    /// no ISO date). PostgreSQL's dates and timestamps are compared by `date_part` and
    /// `date_trunc` (sessions run in UTC, as lapse reads instants): a third of `to_char`'s cost
    /// over a million rows, and `to_char` has no form for text.
    fn not_truncated(&self, e: &str, kind: ColumnKind, unit: DateUnit) -> String {
        let (field, day) = match unit {
            DateUnit::Year => ("year", "01-01"),
            DateUnit::Month => ("month", "(0[1-9]|1[0-2])-01"),
        };
        // SQLite hands every date over as its text (`Strategy::apply` sees text there whatever
        // the declared type).
        // Blank text holds no date: done (`Strategy::apply`).
        if kind == ColumnKind::Text || self.d == Dialect::Sqlite {
            return match self.d {
                Dialect::Postgres => format!("TRIM({e}) <> '' AND {e} !~ '^[0-9]{{4}}-{day}( 00:00(:00)?)?$'"),
                Dialect::MySql => {
                    format!("TRIM({e}) <> '' AND CAST({e} AS BINARY) NOT REGEXP '^[0-9]{{4}}-{day}( 00:00(:00)?)?$'")
                }
                Dialect::Sqlite => {
                    format!("(typeof({e}) <> 'text' OR TRIM({e}) <> '') AND {}", lite_not_truncated(e, unit))
                }
            };
        }
        match (self.d, kind) {
            (Dialect::Postgres, ColumnKind::Date) => {
                let part = if unit == DateUnit::Year { "doy" } else { "day" };
                format!("date_part('{part}', {e}) <> 1")
            }
            (Dialect::Postgres, _) => format!("{e} <> date_trunc('{field}', {e})"),
            _ => {
                let (fmt, want) = match unit {
                    DateUnit::Year => ("%m-%d %H:%i:%s", "01-01 00:00:00"),
                    DateUnit::Month => ("%d %H:%i:%s", "01 00:00:00"),
                };
                // The zero date is left as it is (`Strategy::apply` too).
                format!("YEAR({e}) <> 0 AND DATE_FORMAT({e}, '{fmt}') <> '{want}'")
            }
        }
    }

    /// A non-NULL number that `bucket: w` would still change, exactly as `Strategy::apply`
    /// computes it: an integer not a multiple of a whole `w`, otherwise a number not equal to
    /// `floor(x / w) * w` in floating point. (`%` has no floating-point form on PostgreSQL, and
    /// SQLite's truncates a float to an integer first: 20.5 passed for a multiple of 10.) `w`
    /// is written as Rust prints it, the shortest text that reads back as the same double.
    fn not_multiple(&self, e: &str, kind: ColumnKind, w: f64) -> String {
        let whole = (w.fract() == 0.0).then_some(w as i64);
        let float = |x: &str| match self.d {
            Dialect::Postgres => format!("{x} <> floor({x} / {w:?}) * {w:?}"),
            Dialect::MySql => format!("{x} <> FLOOR({x} / {w:?}) * {w:?}"),
            // No math functions in every SQLite build: the floor is the integer part, less one
            // below zero.
            Dialect::Sqlite => {
                let q = format!("({x} / {w:?})");
                format!("{x} <> (CAST({q} AS INTEGER) - ({q} < CAST({q} AS INTEGER))) * {w:?}")
            }
        };
        match (self.d, kind, whole) {
            (Dialect::Sqlite, _, Some(w)) => {
                format!("(CASE typeof({e}) WHEN 'real' THEN {} ELSE ({e} % {w}) <> 0 END)", float(e))
            }
            (Dialect::Sqlite, _, None) => float(&format!("CAST({e} AS REAL)")),
            (Dialect::Postgres, _, None) | (Dialect::Postgres, ColumnKind::Float, _) => {
                float(&format!("CAST({e} AS double precision)"))
            }
            (Dialect::MySql, _, None) | (Dialect::MySql, ColumnKind::Float, _) => float(e),
            (_, _, Some(w)) => format!("({e} % {w}) <> 0"),
        }
    }

    fn bind_time(&self, sql: &mut Sql, t: DateTime<Utc>) {
        match self.d {
            Dialect::Sqlite => {
                sql.push("julianday(");
                sql.bind(Value::Text(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()));
                sql.push(")");
            }
            _ => {
                sql.bind(Value::Timestamp(t.naive_utc()));
            }
        }
    }

    /// SQLite keeps any type in any column and orders every number before every text: a value
    /// of another type than a condition's literal made `!=`, `>` and `>=` true, and the row
    /// lapsed (`vip != true` deleted a row whose `vip` is the text `'t'`; `score > 3` the
    /// empty text; found by a review). ` AND typeof(e) IN (…)` of the literals' types, bound
    /// as [`Builder::literal`] binds them: another type is no answer, as NULL is (the purpose
    /// has not lapsed). Empty elsewhere, and for times (compared through `julianday`, which
    /// gives NULL for what is no time).
    fn lite_same_type(&self, e: &str, info: Option<&crate::connector::ColumnInfo>, literals: &[&Literal]) -> String {
        let kind = info.map(|c| c.kind).unwrap_or(ColumnKind::Other);
        if self.d != Dialect::Sqlite || self.lite_time(info) {
            return String::new();
        }
        // The class each comparison is made in, by SQLite's rules: a column of TEXT affinity
        // makes the literal text; one of numeric affinity (INTEGER, REAL, NUMERIC: `DECIMAL`,
        // `BOOLEAN`…) makes a literal that reads as a number a number (and its own values that
        // read as numbers are numbers already); a column of no affinity leaves it as bound.
        // The column's kind is its affinity (`catalog::sqlite_kind`), times aside: `Text` for
        // TEXT, `Bytes` for a declared BLOB, `Other` for NUMERIC or none, told apart here.
        let text_affinity = kind == ColumnKind::Text;
        let no_affinity = kind == ColumnKind::Bytes || info.is_none_or(|c| c.sql_type.trim().is_empty());
        let mut types = std::collections::BTreeSet::new();
        for l in literals {
            let bound = coerce(literal_value(l), kind).unwrap_or_else(|_| literal_value(l));
            let number = match &bound {
                Value::Int(_) | Value::Float(_) | Value::Bool(_) => true,
                Value::Text(t) if !no_affinity => t.trim().parse::<f64>().is_ok_and(f64::is_finite),
                Value::Text(_) => false,
                _ => return String::new(),
            };
            match number && !text_affinity {
                true => types.extend(["'integer'", "'real'"]),
                false => {
                    types.insert("'text'");
                }
            }
        }
        format!(" AND typeof({e}) IN ({})", types.into_iter().collect::<Vec<_>>().join(", "))
    }

    /// `instant`: compared as an instant (SQLite, `lite_time_term`), through `julianday`.
    fn literal(&self, sql: &mut Sql, qual_col: Option<&crate::connector::ColumnInfo>, l: &Literal, instant: bool) {
        let kind = qual_col.map(|c| c.kind).unwrap_or(ColumnKind::Other);
        let mut v = coerce(literal_value(l), kind).unwrap_or_else(|_| literal_value(l));
        // A column without a zone (MariaDB's DATETIME and TIMESTAMP, read in the session's
        // UTC; PostgreSQL's `timestamp` and `date`) compared with text that has an offset:
        // MariaDB read `2020-06-01T00:00:00+02:00` as 2020-06-01 00:00:00 and PostgreSQL's cast
        // dropped the offset, so rows lapsed two hours early; SQLite (`julianday`) and
        // PostgreSQL's `timestamptz` honour it. The instant in UTC, as lapse reads such columns.
        let naive = match self.d {
            Dialect::MySql => kind.is_temporal(),
            Dialect::Postgres => matches!(kind, ColumnKind::Timestamp { tz: false } | ColumnKind::Date),
            Dialect::Sqlite => false,
        };
        if naive {
            if let Value::Text(t) = &v {
                if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t.trim()) {
                    v = Value::Timestamp(at.naive_utc());
                }
            }
        }
        // A date column against a literal with a time of day: compared as that instant (the
        // date as its midnight), as SQLite (`julianday`) and MariaDB compare them. PostgreSQL's
        // cast to `date` dropped the time: `closed_on >= '2024-06-30 12:00:00'` held for
        // 2024-06-30 there, and nowhere else (found by a read-only review).
        if kind == ColumnKind::Date && self.d != Dialect::Sqlite {
            if let Value::Text(t) = &v {
                if let Some(at) = text_date_time(t) {
                    v = Value::Timestamp(at);
                }
            }
        }
        if instant {
            // Compared as an instant, like the column's side (`time_expr`).
            sql.push("julianday(");
            sql.bind(v);
            sql.push(")");
            return;
        }
        sql.bind_for(v, qual_col, false);
    }

    /// A condition's column compared by instant: SQLite keeps a date or time as text of any
    /// shape, or a number, so comparing what is stored compares text (`2020-01-01T03:00:00` >
    /// `2020-01-01 05:00:00`) or mixes kinds; both sides go through `julianday` instead.
    /// So is a text column a purpose counts from (its values are times, `anchor_readable`): a
    /// condition on it compared text, and `at > '2024-06-30 12:00:00'` held for
    /// `2024-06-30T06:00:00` (`T` sorts after a space; found by a review).
    fn lite_time(&self, info: Option<&crate::connector::ColumnInfo>) -> bool {
        self.d == Dialect::Sqlite
            && info.is_some_and(|c| c.kind.is_temporal() || (c.instant && self.is_anchor(&c.name)))
    }

    /// A condition's term on SQLite compared by instant: its column a date or time or a text
    /// anchor (`lite_time`), or a text column compared with full dates or times only
    /// (`closed_at > '2024-06-30 12:00:00'` held for `2024-06-30T06:00:00` as text; found by a
    /// review). So is a column declared with no type or one SQLite gives no other affinity
    /// (`NUMERIC`, `STRING`): it keeps such text as text too, and `'2024-06-30 18:00:00' <
    /// '2024-06-30T12:00:00'` held (found by a review: a row closed after the condition's time
    /// was deleted).
    fn lite_time_term(&self, info: Option<&crate::connector::ColumnInfo>, literals: &[&Literal]) -> bool {
        self.lite_time(info)
            || (self.d == Dialect::Sqlite
                && info.is_some_and(|c| c.instant || c.kind == ColumnKind::Other)
                && !literals.is_empty()
                && literals
                    .iter()
                    .all(|l| matches!(l, Literal::Text(t) if crate::policy::condition::is_time_literal(t))))
    }

    /// A purpose of the scope counts from `column`.
    fn is_anchor(&self, column: &str) -> bool {
        fn walk(f: &Filter, column: &str) -> bool {
            match f {
                Filter::Lapsed(r) => r.anchor == column,
                Filter::All(parts) | Filter::Any(parts) => parts.iter().any(|p| walk(p, column)),
                Filter::Not(inner) => walk(inner, column),
                _ => false,
            }
        }
        walk(&self.scope.lapse, column)
    }

    /// Renders a filter over the scope's table, qualified by `qual`.
    pub fn filter(&self, sql: &mut Sql, f: &Filter, qual: &str) {
        match f {
            Filter::True => {
                sql.push("1=1");
            }
            Filter::Lapsed(rule) => self.lapsed(sql, rule, qual),
            Filter::AnchorNull(c) => {
                let e = self.col(qual, c);
                match self.d {
                    // The zero date, and SQLite's text that is no time, count as NULL (see
                    // `lapsed`).
                    Dialect::MySql => {
                        sql.push(&format!("({e} IS NULL OR "));
                        self.my_partial_in_gaps(sql, c, &e);
                        sql.push(")");
                    }
                    Dialect::Sqlite => {
                        sql.push(&format!("{} IS NULL", self.time_expr(qual, c)));
                    }
                    // `infinity` and `-infinity` (a NOT NULL column's "no date") are no time
                    // either (two points of an index on the anchor).
                    Dialect::Postgres => {
                        let col = self.scope.table.column(c);
                        let infinite = col.is_some_and(|c| c.kind.is_temporal()).then(|| pg_infinite(&e));
                        match (col.is_some_and(|c| !c.nullable), infinite) {
                            (true, Some(inf)) => sql.push(&inf),
                            // NOT NULL is known there.
                            (true, None) => sql.push("1=0"),
                            (false, Some(inf)) => sql.push(&format!("({e} IS NULL OR {inf})")),
                            (false, None) => sql.push(&format!("{e} IS NULL")),
                        };
                    }
                };
            }
            // Unknown and not "no date" (`lapsed` under `null_anchor: lapse`): kept.
            Filter::AnchorNeverLapses(c) => {
                let e = self.col(qual, c);
                match self.d {
                    Dialect::Sqlite => {
                        sql.push(&format!(
                            "({e} IS NOT NULL AND {} IS NULL AND NOT {})",
                            self.time_expr(qual, c),
                            lite_blank(&e)
                        ));
                    }
                    Dialect::MySql => {
                        sql.push("(");
                        self.my_partial_in_gaps(sql, c, &e);
                        sql.push(&format!(" AND NOT {})", my_zero(&e)));
                    }
                    Dialect::Postgres if self.is_temporal(c) => {
                        sql.push(&format!("{e} = 'infinity'"));
                    }
                    Dialect::Postgres => {
                        sql.push("1=0");
                    }
                };
            }
            Filter::All(parts) | Filter::Any(parts) => {
                let (op, empty) = if matches!(f, Filter::All(_)) { (" AND ", "1=1") } else { (" OR ", "1=0") };
                if parts.is_empty() {
                    sql.push(empty);
                    return;
                }
                sql.push("(");
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        sql.push(op);
                    }
                    self.filter(sql, p, qual);
                }
                sql.push(")");
            }
            Filter::Not(inner) if matches!(**inner, Filter::Held) => self.not_held(sql, qual),
            Filter::Not(inner) => {
                sql.push("NOT (");
                self.filter(sql, inner, qual);
                sql.push(")");
            }
            Filter::Held => self.held(sql, qual, None),
            Filter::HeldByFile(id) => self.held(sql, qual, Some(id)),
            Filter::Pending(tests) => {
                // Any column still needing work makes the row pending: the cheapest tests go
                // first, so that a row not yet anonymized is decided by them (the date test,
                // which parses a date per row, came first for a `birth_date` column: SQLite's
                // batch reads took 0.75 s over 60 batches of the benchmark, 0.51 s after).
                let cost = |t: &PendingTest| match t {
                    PendingTest::NotNull => 0,
                    PendingTest::NotEqual(_) | PendingTest::NotMultipleOf(_) | PendingTest::LongerThan(_) => 1,
                    PendingTest::NotToken(_) => 2,
                    PendingTest::NotIpNetwork => 3,
                    PendingTest::NotTruncated(_) => 4,
                };
                let mut tests: Vec<&(String, PendingTest)> = tests.iter().collect();
                tests.sort_by_key(|(_, t)| cost(t));
                sql.push("(");
                for (i, (c, t)) in tests.into_iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    let e = self.col(qual, c);
                    let info = self.scope.table.column(c);
                    match t {
                        PendingTest::NotNull => {
                            sql.push(&format!("{e} IS NOT NULL"));
                        }
                        PendingTest::NotEqual(v) => {
                            // The constant as the column stores it (the cast of an assignment,
                            // modifier and all: `0` is `0.00` in a `numeric(10,2)`, `0.1` a
                            // single-precision `real`'s nearest value), or the written value
                            // never equals the stored one and the row is anonymized again on
                            // every run.
                            // SQLite stores the written value as the column's affinity makes
                            // it, and compares the same value as it would store it: the value
                            // as written (coerced here, `0.0` in a `TEXT` column was compared
                            // with `'0'` and stored as `'0.0'`, `true` with `'true'` and stored
                            // as `'1'`: anonymized again on every run; found by a review).
                            let kind = info.map(|i| i.kind).unwrap_or(ColumnKind::Other);
                            let v = match self.d {
                                Dialect::Sqlite => v.clone(),
                                _ => coerce(v.clone(), kind).unwrap_or_else(|_| v.clone()),
                            };
                            if self.d == Dialect::Postgres && kind == ColumnKind::Other {
                                // Compared as the column's text: some types (`json`) have no `<>`.
                                sql.push(&format!("({e} IS NOT NULL AND CAST({e} AS TEXT) <> CAST("));
                                sql.bind_for(v, info, true);
                                sql.push(" AS TEXT))");
                            } else {
                                sql.push(&format!("({e} IS NOT NULL AND {e} <> "));
                                match (self.d, info.and_then(mysql_stored_type)) {
                                    (Dialect::MySql, Some(t)) => {
                                        sql.push("CAST(");
                                        sql.bind(v);
                                        sql.push(&format!(" AS {t})"));
                                    }
                                    _ => {
                                        sql.bind_for(v, info, true);
                                    }
                                }
                                sql.push(")");
                            }
                        }
                        PendingTest::NotIpNetwork => {
                            // As `Strategy::apply` sees it: the column's text (an `inet` column's
                            // includes its mask, `10.1.2.0/32`), the address before any `/mask`.
                            // Done is what `generalize_ip` writes, exactly: the `LIKE`s decide
                            // most rows cheaply, then the address before any `/` must be a
                            // network as Rust writes one (`ip_done`). The `LIKE`s alone took
                            // `203.0.113.7/255.255.255.0` and `198.51.100.23, 10.0.0.0` for
                            // done: never anonymized, never reported.
                            let t = self.read_expr(qual, c);
                            let colons = format!("(LENGTH({t}) - LENGTH(REPLACE({t}, ':', '')))");
                            // (A 6to4 network, `2002:cb00:7100::`, is done too: the exact test
                            // below says so. Only the quick test alone leaves it out: with it,
                            // a generalized 6to4 network stayed due on every run; found by a
                            // review.)
                            let quick = |six_to_four: &str| {
                                format!("(({t} LIKE '%.0' OR {t} LIKE '%.0/%') AND ({t} NOT LIKE '%:%' OR {t} LIKE '::ffff:%')) OR (({t} LIKE '%::' OR {t} LIKE '%::/%') AND {colons} <= 4{six_to_four})")
                            };
                            // Blank text holds no address: done (`Strategy::apply`).
                            let blank = format!(" AND TRIM({t}) <> ''");
                            if self.quick_pending {
                                let quick = quick(&format!(" AND {t} NOT LIKE '2002:%'"));
                                sql.push(&format!("({e} IS NOT NULL{blank} AND NOT ({quick}))"));
                                continue;
                            }
                            let quick = quick("");
                            let (done, end) = match self.d {
                                Dialect::Postgres => (format!("{t} ~ "), "$"),
                                Dialect::MySql => (format!("CAST({t} AS BINARY) REGEXP "), "\\z"),
                                // `REGEXP` (the `regex` crate) sees only ASCII: text that is not
                                // UTF-8 would fail the statement there.
                                Dialect::Sqlite => (
                                    format!("typeof({t}) = 'text' AND ltrim({t}, '0123456789abcdef.:/') = '' AND {t} REGEXP "),
                                    "$",
                                ),
                            };
                            sql.push(&format!("({e} IS NOT NULL{blank} AND NOT (({quick}) AND {done}"));
                            sql.bind(Value::Text(ip_done(end)));
                            sql.push("))");
                        }
                        PendingTest::NotTruncated(unit) => {
                            let kind = info.map(|i| i.kind).unwrap_or(ColumnKind::Other);
                            sql.push(&format!("({e} IS NOT NULL AND {})", self.not_truncated(&e, kind, *unit)));
                        }
                        PendingTest::LongerThan(n) => {
                            let len = if self.d == Dialect::MySql { "CHAR_LENGTH" } else { "LENGTH" };
                            sql.push(&format!("({e} IS NOT NULL AND {len}({e}) > {n})"));
                        }
                        PendingTest::NotMultipleOf(w) => {
                            let kind = info.map(|i| i.kind).unwrap_or(ColumnKind::Other);
                            sql.push(&format!("({e} IS NOT NULL AND {})", self.not_multiple(&e, kind, *w)));
                        }
                        PendingTest::NotToken(p) => {
                            if self.quick_pending {
                                sql.push(&format!("({e} IS NOT NULL AND SUBSTR({e}, 1, {}) <> ", p.len()));
                                sql.bind(Value::Text(p.clone()));
                                sql.push(")");
                                continue;
                            }
                            // The prefix and 32 hex digits, exactly (`Strategy::apply`'s test).
                            let n = p.len() + 32;
                            let done = match self.d {
                                Dialect::Postgres => format!("LENGTH({e}) = {n} AND CAST({e} AS TEXT) ~ "),
                                Dialect::MySql => format!("CHAR_LENGTH({e}) = {n} AND CAST({e} AS BINARY) REGEXP "),
                                Dialect::Sqlite => format!(
                                    "typeof({e}) = 'text' AND LENGTH({e}) = {n} AND unhex(SUBSTR({e}, {})) IS NOT NULL AND SUBSTR({e}, 1, {}) = ",
                                    p.len() + 1,
                                    p.len()
                                ),
                            };
                            sql.push(&format!("({e} IS NOT NULL AND NOT ({done}"));
                            sql.bind(Value::Text(match self.d {
                                Dialect::Sqlite => p.clone(),
                                _ => format!("^{p}[0-9a-fA-F]{{32}}$"),
                            }));
                            sql.push("))");
                        }
                    }
                }
                sql.push(")");
            }
            Filter::Unreadable => {
                sql.push("1=0");
            }
            Filter::KeyShard { column, index, count } => {
                // Integer keys only (checked at prepare); normalised so negative keys fall in
                // 0..count too: `%` keeps the dividend's sign in all three dialects.
                let e = self.col(qual, column);
                sql.push(&format!("((({e} % "));
                sql.bind(Value::Int(i64::from(*count)));
                sql.push(") + ");
                sql.bind(Value::Int(i64::from(*count)));
                sql.push(") % ");
                sql.bind(Value::Int(i64::from(*count)));
                sql.push(" = ");
                sql.bind(Value::Int(i64::from(*index)));
                sql.push(")");
            }
            Filter::HasDependents => {
                let shared = self.scope.shared_children();
                if self.scope.restrict.is_empty() && shared.is_empty() {
                    sql.push("1=0");
                    return;
                }
                sql.push("(");
                for (i, fk) in self.scope.restrict.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    let alias = format!("dep{i}");
                    sql.push(&format!("EXISTS (SELECT 1 FROM {} {alias} WHERE ", self.q(&fk.table)));
                    self.fk_join(sql, fk, &alias, qual);
                    sql.push(")");
                }
                // A cascaded child another record owns too, where that record is held or not
                // lapsed (`Scope::shared_children`). Not "not due": a record kept only by such a
                // child of its own would keep the other, and neither would ever go.
                for (i, (by, other)) in shared.iter().enumerate() {
                    if i > 0 || !self.scope.restrict.is_empty() {
                        sql.push(" OR ");
                    }
                    let (child, owner) = (format!("sh{i}"), format!("so{i}"));
                    sql.push(&format!("EXISTS (SELECT 1 FROM {} {child} WHERE ", self.q(&by.table)));
                    self.fk_join(sql, by, &child, qual);
                    sql.push(&format!(" AND EXISTS (SELECT 1 FROM {} {owner} WHERE ", self.table()));
                    self.fk_join(sql, other, &child, &owner);
                    // (Against the whole record's lapse, whatever shard the other owner is in
                    // and whatever stage this is: tested against this shard's stage filter, two
                    // owners in two shards kept each other for good, and a field stage's filter
                    // holds this very test; found by a review.)
                    sql.push(" AND NOT (");
                    let lapsed = self.scope.whole_lapse.clone();
                    self.filter(sql, &Filter::All(vec![lapsed, Filter::negate(Filter::Held)]), &owner);
                    sql.push(")))");
                }
                sql.push(")");
            }
        }
    }

    fn fk_join(&self, sql: &mut Sql, fk: &ForeignKey, child: &str, parent: &str) {
        let conds: Vec<String> = fk
            .columns
            .iter()
            .zip(&fk.referenced)
            .map(|(c, r)| format!("{} = {}", self.col(child, c), self.col(parent, r)))
            .collect();
        sql.push(&conds.join(" AND "));
    }

    fn lapsed(&self, sql: &mut Sql, rule: &LapseRule, qual: &str) {
        let anchor = self.col(qual, &rule.anchor);
        let t = self.time_expr(qual, &rule.anchor);
        sql.push("(");
        // MariaDB/MySQL's zero date (`0000-00-00`, written where the date is unknown) and
        // partial dates (`2023-00-00`, `2023-06-00`: a month or day unknown) sort before every
        // date they could mean: not lapsed at the earliest of them, but unknown.
        // SQLite's text that is no time (`julianday` gives NULL) is unknown too.
        let not_zero = match self.d {
            Dialect::MySql => format!(" AND NOT {}", my_partial(&anchor)),
            // `-infinity` (a NOT NULL column's "no date", as the zero date is MariaDB's) sorts
            // before every date: unknown, not lapsed since the beginning of time.
            Dialect::Postgres if self.is_temporal(&rule.anchor) => format!(" AND {anchor} <> '-infinity'"),
            _ => String::new(),
        };
        if rule.null_lapses {
            // `null_anchor: lapse`: what says "no date" lapses, as NULL does: MariaDB's zero
            // date, PostgreSQL's `-infinity`, SQLite's empty text. Not what is a date lapse
            // cannot place: a partial date (`2026-11-00`), `infinity`, SQLite's text or number
            // in a shape it does not read (`2026-11-24T10:00:00+0100`, `20261124`), a blob.
            // Those lapsed at once, up to a whole period early (found by a review); they are
            // kept and counted with the unknown anchors kept (`Filter::AnchorNeverLapses`).
            let no_date = match self.d {
                Dialect::MySql => format!(" OR {}", my_zero(&anchor)),
                Dialect::Postgres if self.is_temporal(&rule.anchor) => format!(" OR {anchor} = '-infinity'"),
                Dialect::Postgres => String::new(),
                Dialect::Sqlite => format!(" OR {}", lite_blank(&anchor)),
            };
            // SQLite: `NULL <= x` is no answer: said false, as below.
            let (open, close) = if self.d == Dialect::Sqlite { ("COALESCE(", ", 1=0)") } else { ("", "") };
            sql.push(&format!("({anchor} IS NULL{no_date} OR ({open}{t} <= "));
            self.bind_time(sql, rule.threshold);
            sql.push(&format!("{close}{not_zero}))"));
        } else if self.d == Dialect::Sqlite {
            // `julianday` of text that is no time is NULL, and `NULL <= x` no answer: said false,
            // so that a `NOT` around this (a stage's "not every purpose lapsed") is an answer too.
            // The `julianday` test serves no index; the range before it does, and takes nothing
            // away (`lite_lapsed_range`).
            sql.push(&format!("({anchor} IS NOT NULL AND "));
            if let Some(upper) = lite_lapsed_range(rule.threshold).filter(|_| self.counting.get()) {
                sql.push(&format!("{anchor} < "));
                sql.bind(Value::Text(upper));
                sql.push(" AND ");
            }
            sql.push(&format!("COALESCE({t} <= "));
            self.bind_time(sql, rule.threshold);
            sql.push(", 1=0))");
        } else {
            sql.push(&format!("({anchor} IS NOT NULL{not_zero} AND {t} <= "));
            self.bind_time(sql, rule.threshold);
            sql.push(")");
        }
        if let Some(cond) = &rule.condition {
            for term in &cond.terms {
                let info = self.scope.table.column(&term.column);
                let literals: Vec<&Literal> = match &term.test {
                    Test::Compare(_, l) => vec![l],
                    Test::In(list) => list.iter().collect(),
                    _ => vec![],
                };
                let instant = self.lite_time_term(info, &literals);
                let e = match instant {
                    true => self.time_expr(qual, &term.column),
                    false => self.col(qual, &term.column),
                };
                sql.push(" AND ");
                // A comparison with a NULL value is no answer (SQL's third value): said false
                // (the purpose has not lapsed), so that a stage's `NOT (every purpose lapsed)`
                // is true for that row instead of unknown, which kept its other lapsed fields.
                // (`IS NOT NULL AND` rather than `COALESCE`: an index on the column still serves.)
                match &term.test {
                    Test::Compare(op, l) => {
                        let same = if instant { String::new() } else { self.lite_same_type(&e, info, &[l]) };
                        sql.push(&format!("({e} IS NOT NULL{same} AND {e} {} ", op.sql()));
                        self.literal(sql, info, l, instant);
                        sql.push(")");
                    }
                    Test::In(list) => {
                        let same = match instant {
                            true => String::new(),
                            false => self.lite_same_type(&e, info, &list.iter().collect::<Vec<_>>()),
                        };
                        sql.push(&format!("({e} IS NOT NULL{same} AND {e} IN ("));
                        for (i, l) in list.iter().enumerate() {
                            if i > 0 {
                                sql.push(", ");
                            }
                            self.literal(sql, info, l, instant);
                        }
                        sql.push("))");
                    }
                    Test::IsNull => {
                        sql.push(&format!("{} IS NULL", self.col(qual, &term.column)));
                    }
                    Test::IsNotNull => {
                        sql.push(&format!("{} IS NOT NULL", self.col(qual, &term.column)));
                    }
                }
            }
        }
        sql.push(")");
    }

    /// Under an active hold (all holds, or one file hold).
    fn held(&self, sql: &mut Sql, qual: &str, only: Option<&str>) {
        self.held_parts(sql, qual, only, false)
    }

    /// [`Self::held`], or with `by_row` only its parts that depend on the row (holds of
    /// subjects), without the holds of the whole policy or of every subject
    /// ([`Self::held_everywhere`]).
    fn held_parts(&self, sql: &mut Sql, qual: &str, only: Option<&str>, by_row: bool) {
        let holds = &self.scope.holds;
        let subject = self.scope.subject.as_deref();
        let subject_info = subject.and_then(|s| self.scope.table.column(s));
        let mut parts = 0;
        sql.push("(");
        for h in holds.file.iter().filter(|h| only.is_none_or(|id| id == h.id) && !(by_row && h.whole_policy)) {
            if parts > 0 {
                sql.push(" OR ");
            }
            parts += 1;
            // A subject column of a non-standard type (uuid…) is compared as text, so a hold
            // subject of another shape matches nothing instead of failing the cast.
            let as_text = subject_info.is_some_and(|c| c.kind == ColumnKind::Other);
            // A subject the column's type cannot hold (text for an integer column) can be in
            // the column on SQLite only, which keeps any type in any column: compared as
            // written there, left out elsewhere (a server would fail the comparison, or, as
            // MariaDB does, compare the text as the number 0).
            let kind = subject_info.map(|c| c.kind).unwrap_or(ColumnKind::Other);
            let subjects: Vec<&Value> = h
                .subjects
                .iter()
                .filter(|v| as_text || self.d == Dialect::Sqlite || coerce((*v).clone(), kind).is_ok())
                .collect();
            match (h.whole_policy, subject) {
                (true, _) => {
                    sql.push("1=1");
                }
                (false, Some(s)) if !subjects.is_empty() => {
                    // A NULL subject is no subject a hold names: `COALESCE` makes that a "no"
                    // rather than SQL's unknown, which `NOT` would keep unknown, and the row
                    // neither destroyed nor counted due (as the holds table's join says already).
                    let open = if self.bare_in.get() { "(" } else { "COALESCE(" };
                    if as_text {
                        sql.push(&format!("{open}{} IN (", self.as_text(qual, s)));
                    } else {
                        sql.push(&format!("{open}{} IN (", self.col(qual, s)));
                    }
                    // A decimal column's value is read as text (`42.00`): subjects written as
                    // numbers are compared as numbers too (before, `42` held nothing there).
                    let numbers: Vec<String> = match subject_info.filter(|c| is_decimal(c)) {
                        Some(_) => subjects.iter().filter_map(|v| decimal_subject(v)).collect(),
                        None => Vec::new(),
                    };
                    for (i, v) in subjects.into_iter().enumerate() {
                        if i > 0 {
                            sql.push(", ");
                        }
                        if as_text {
                            sql.bind(Value::Text(v.canonical()));
                        } else {
                            sql.bind_for(v.clone(), subject_info, false);
                        }
                    }
                    sql.push(")");
                    if !numbers.is_empty() {
                        let decimal = if self.d == Dialect::MySql { "DECIMAL(65,30)" } else { "NUMERIC" };
                        sql.push(&format!(" OR {} IN (", self.col(qual, s)));
                        for (i, n) in numbers.into_iter().enumerate() {
                            if i > 0 {
                                sql.push(", ");
                            }
                            sql.push("CAST(");
                            sql.bind(Value::Text(n));
                            sql.push(&format!(" AS {decimal})"));
                        }
                        sql.push(")");
                    }
                    sql.push(if self.bare_in.get() { ")" } else { ", 1=0)" });
                }
                _ => {
                    sql.push("1=0");
                }
            }
        }
        if only.is_none() {
            for part in self.table_hold_parts().into_iter().filter(|&part| part || !by_row) {
                if parts > 0 {
                    sql.push(" OR ");
                }
                parts += 1;
                // SQLite under a declared collation: the destroying statements' comparison
                // (`EXISTS`, by the holds column's collation), not `IN` (by the row's).
                if part && (self.d != Dialect::Sqlite || self.split_holds) {
                    self.table_hold_in(sql, qual);
                } else {
                    self.table_hold_exists(sql, qual, part);
                }
            }
        }
        if parts == 0 {
            sql.push("1=0");
        }
        sql.push(")");
    }

    /// Not under any active hold: the negation of [`Self::held`] as a conjunction, `NOT (file
    /// hold) AND NOT EXISTS (hold of the row's subject) AND NOT EXISTS (hold of every subject)`,
    /// which databases plan as an anti-join and a one-time test (a negated `OR` of correlated
    /// subqueries is evaluated row by row).
    fn not_held(&self, sql: &mut Sql, qual: &str) {
        let mut parts = 0;
        sql.push("(");
        for h in &self.scope.holds.file {
            if parts > 0 {
                sql.push(" AND ");
            }
            parts += 1;
            sql.push("NOT ");
            self.held(sql, qual, Some(&h.id));
        }
        for part in self.table_hold_parts() {
            if parts > 0 {
                sql.push(" AND ");
            }
            parts += 1;
            sql.push("NOT ");
            self.table_hold_exists(sql, qual, part);
        }
        if parts == 0 {
            sql.push("1=1");
        }
        sql.push(")");
    }

    /// The parts of the holds table that apply: holds of the row's subject (`true`, if the
    /// scope has a subject) and holds of every subject (`false`). None without a holds table.
    fn table_hold_parts(&self) -> Vec<bool> {
        match (&self.scope.holds.table, self.holds_info) {
            (Some(_), Some(_)) if self.scope.subject.is_some() => vec![true, false],
            (Some(_), Some(_)) => vec![false],
            _ => vec![],
        }
    }

    /// `EXISTS (an active hold of the holds table)`, of the row's subject or of every subject.
    /// Two separate subqueries instead of one on `subject = … OR subject IS NULL`: the first is
    /// a (hash or index) semi-join on the subject, the second does not depend on the row at all.
    fn table_hold_exists(&self, sql: &mut Sql, qual: &str, by_subject: bool) {
        let Some(ht) = &self.scope.holds.table else { return };
        sql.push(&format!("EXISTS (SELECT 1 FROM {} lh WHERE ", self.q(&ht.table)));
        self.table_hold_match_part(sql, ht, qual, Some(by_subject));
        sql.push(")");
    }

    /// `subject IN (the subjects of the active holds of the holds table)`: [`Self::held`]'s
    /// test for a hold of the row's subject. Under an `OR` (with the holds of every subject), a
    /// correlated `EXISTS` is probed row by row; an uncorrelated `IN` is read once and hashed
    /// (PostgreSQL: a held count of 300,000 lapsed rows, 490 -> 170 ms). Two-valued like
    /// `EXISTS`, so that its negation stays exact: a NULL subject is not held, and NULL hold
    /// subjects (holds of every subject, the other part) are left out of the list.
    fn table_hold_in(&self, sql: &mut Sql, qual: &str) {
        let (Some(ht), Some(s)) = (&self.scope.holds.table, &self.scope.subject) else { return };
        let (subject, hs) = self.subject_pair(ht, qual, s);
        sql.push(&format!(
            "({subject} IS NOT NULL AND {subject} IN (SELECT {hs} FROM {} lh WHERE {hs} IS NOT NULL",
            self.q(&ht.table)
        ));
        self.table_hold_active(sql, ht);
        sql.push("))");
    }

    /// The join condition between a row (`qual`) and an active row `lh` of the holds table:
    /// any hold of the row (`None`), only holds of the row's subject (`Some(true)`) or only
    /// holds of every subject (`Some(false)`).
    fn table_hold_match_part(&self, sql: &mut Sql, ht: &HoldsTable, qual: &str, by_subject: Option<bool>) {
        let hs = self.col("lh", &ht.subject);
        match (&self.scope.subject, by_subject) {
            (Some(s), None) => {
                let (row, held) = self.subject_pair(ht, qual, s);
                sql.push(&format!("({held} = {row} OR {hs} IS NULL)"))
            }
            (Some(s), Some(true)) => {
                let (row, held) = self.subject_pair(ht, qual, s);
                sql.push(&format!("{held} = {row}"))
            }
            (None, Some(true)) => sql.push("1=0"),
            // A policy without a subject column cannot tell a subject's records: a hold that
            // names this policy (not every policy) and a subject keeps all of them, as a hold of
            // every subject does (refused in a holds file; a table's rows come at run time).
            (None, _) if ht.policy.is_some() => {
                let hp = self.col("lh", ht.policy.as_deref().expect("policy column"));
                sql.push(&format!("({hs} IS NULL OR {hp} IS NOT NULL)"))
            }
            (_, _) => sql.push(&format!("{hs} IS NULL")),
        };
        if by_subject == Some(true) {
            self.held_subjects_within(sql, ht, &hs);
        }
        self.table_hold_active(sql, ht);
    }

    /// ` AND` the holds' subject within [`Builder::batch_keys`], when the subject is the
    /// scope's single integer key and the holds' subject column is an integer too (so that the
    /// two compare as numbers, and `held = row` with the row's key in the range puts `held` in
    /// it): redundant, and what lets PostgreSQL's merge anti-join with the holds' subject index
    /// start at the batch's first key. Without it each batch read that index from its first
    /// entry, the holds of every key before the batch: at 10,000,000 rows the last batches of
    /// a delete took 21.5 ms instead of 6 ms (BENCHMARKS.md).
    fn held_subjects_within(&self, sql: &mut Sql, ht: &HoldsTable, held: &str) {
        let window = self.batch_keys.borrow();
        let Some(w) = window.as_ref() else { return };
        let int = |c: Option<&crate::connector::ColumnInfo>| c.is_some_and(|c| c.kind == ColumnKind::Int);
        let held_info = self.holds_info.and_then(|i| i.column(&ht.subject));
        let [key] = self.scope.key.as_slice() else { return };
        if self.scope.subject.as_ref() != Some(key) || !int(self.scope.table.column(key)) || !int(held_info) {
            return;
        }
        if let Some((v, inclusive)) = &w.lower {
            sql.push(&format!(" AND {held} {} ", if *inclusive { ">=" } else { ">" }));
            sql.bind_for(v.clone(), held_info, false);
        }
        if let Some(v) = &w.upper {
            sql.push(&format!(" AND {held} <= "));
            sql.bind_for(v.clone(), held_info, false);
        }
    }

    /// The row's subject (`qual`) and the holds table's (`lh`), as compared with each other:
    /// as they are, except between a number and text on the servers (an integer subject, a
    /// text holds column shared by several tables). PostgreSQL refuses to compare them
    /// (`character varying = bigint`); MariaDB compares them as numbers, reading any text as
    /// one (`'7abc'` as 7, `'S-8'` as 0, with a warning each). There the text is read as a
    /// number where it is one, surrounding spaces included (`'042'` and `' 42 '` hold subject
    /// 42, as SQLite's affinity has it), and matches nothing where it is not. Other pairs of types go as they are: where a database
    /// cannot compare them (PostgreSQL: `uuid` against text), the run fails at its first
    /// count, before anything is destroyed.
    fn subject_pair(&self, ht: &HoldsTable, qual: &str, s: &str) -> (String, String) {
        let row = self.col(qual, s);
        let held = self.col("lh", &ht.subject);
        if self.d == Dialect::Sqlite {
            return (row, held);
        }
        let kind = |info: Option<&crate::connector::ColumnInfo>| info.map_or(ColumnKind::Other, |c| c.kind);
        let row_kind = kind(self.scope.table.column(s));
        let held_kind = kind(self.holds_info.and_then(|i| i.column(&ht.subject)));
        let numeric = |k: ColumnKind| matches!(k, ColumnKind::Int | ColumnKind::Float);
        // A number: sign, digits, decimals, an exponent of at most two digits (so that neither
        // `numeric` nor a double overflows). Exactly what the cast reads, so it cannot fail.
        const NUMBER: &str = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?0*[0-9]{1,2})?";
        let number = |e: String| match self.d {
            // ASCII white space only, which `numeric` skips (`\s` may be wider, by collation).
            Dialect::Postgres => format!(
                "(CASE WHEN {e} ~ E'^[ \\t\\n\\r\\f\\v]*{NUMBER}[ \\t\\n\\r\\f\\v]*$' THEN CAST({e} AS NUMERIC) END)"
            ),
            _ => format!("(CASE WHEN TRIM({e}) REGEXP '^{NUMBER}$' THEN CAST(TRIM({e}) AS DOUBLE) END)"),
        };
        match (row_kind, held_kind) {
            (r, ColumnKind::Text) if numeric(r) => (row, number(held)),
            (ColumnKind::Text, h) if numeric(h) => (number(row), held),
            _ => (row, held),
        }
    }

    /// ` AND` the hold `lh` applies to this policy and has not expired.
    fn table_hold_active(&self, sql: &mut Sql, ht: &HoldsTable) {
        if let Some(p) = &ht.policy {
            let hp = self.col("lh", p);
            let names = match self.scope.holds.policies.is_empty() {
                true => std::slice::from_ref(&self.scope.policy),
                false => &self.scope.holds.policies[..],
            };
            sql.push(&format!(" AND ({hp} IS NULL OR {hp} IN ("));
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Value::Text(name.clone()));
            }
            sql.push("))");
        }
        self.table_hold_unexpired(sql, ht);
    }

    /// The policies named by holds in force in the holds table that are none of `known`,
    /// compared as the holds are matched (so by the column's collation): such a hold holds
    /// nothing. `None` without a policy column.
    pub fn holds_of_other_policies(&self, ht: &HoldsTable, known: &[String]) -> Option<Sql> {
        let p = ht.policy.as_ref()?;
        let hp = self.col("lh", p);
        let mut sql = Sql::new(self.d);
        sql.push(&format!("SELECT DISTINCT {hp} FROM {} lh WHERE {hp} IS NOT NULL", self.q(&ht.table)));
        for name in known {
            sql.push(&format!(" AND {hp} <> "));
            sql.bind(Value::Text(name.clone()));
        }
        self.table_hold_unexpired(&mut sql, ht);
        sql.push(&format!(" ORDER BY {hp} LIMIT 20"));
        Some(sql)
    }

    /// The matter of each hold id in force in the holds table (`table_hold_unexpired`): the
    /// hold id as text as [`Builder::count_by_table_hold`] reads it (a SQL policy's `held_by`),
    /// as [`Builder::holds_in_force`] reads it (an object policy's: a binary id as its bytes),
    /// and the least matter of its rows (a hold id's rows name one matter; should they not, one
    /// of them, always the same). `None` without a matter column.
    pub fn hold_matters(&self, ht: &HoldsTable) -> Option<Sql> {
        let m = ht.matter.as_ref()?;
        let text = |c: &str| self.as_text("lh", c);
        let as_in_force = self.hold_column_read(&ht.id);
        let mut sql = Sql::new(self.d);
        sql.push(&format!(
            "SELECT {}, {as_in_force}, MIN({}) FROM {} lh WHERE {} IS NOT NULL",
            text(&ht.id),
            text(m),
            self.q(&ht.table),
            self.col("lh", m)
        ));
        self.table_hold_unexpired(&mut sql, ht);
        sql.push(" GROUP BY 1, 2 ORDER BY 1");
        Some(sql)
    }

    /// The holds in force that apply to the scope's policies (`table_hold_active`), as text:
    /// hold id, subject (NULL: every subject). For object policies, whose store has no holds
    /// table: the engine evaluates them beside the holds file's.
    pub fn holds_in_force(&self, ht: &HoldsTable) -> Sql {
        // (A binary subject is read as its bytes, which the connector gives as lower-case hex,
        // as the evidence records them and as a uuid reads: cast to text, PostgreSQL's `\x…`
        // and MariaDB's raw bytes matched no object's subject, and a held one was deleted;
        // found by a review.)
        let text = |c: &str| self.hold_column_read(c);
        // Whether the hold names a policy (not every policy): a policy without subjects cannot
        // tell a subject's objects, and such a hold of a subject keeps all of them.
        let named = match &ht.policy {
            Some(p) => format!("CASE WHEN {} IS NULL THEN 0 ELSE 1 END", self.col("lh", p)),
            None => "0".into(),
        };
        let mut sql = Sql::new(self.d);
        sql.push(&format!(
            "SELECT {}, {}, {named} FROM {} lh WHERE 1=1",
            text(&ht.id),
            text(&ht.subject),
            self.q(&ht.table)
        ));
        self.table_hold_active(&mut sql, ht);
        sql.push(" ORDER BY 1, 2");
        sql
    }

    fn table_hold_unexpired(&self, sql: &mut Sql, ht: &HoldsTable) {
        if let Some(e) = &ht.expires {
            // An expiry the database cannot read as a time (SQLite text that is no date,
            // MariaDB/MySQL's zero or partial date) keeps the hold: keeping wins.
            let he = self.col("lh", e);
            let t = self.time_expr("lh", e);
            let zero = if self.d == Dialect::MySql { format!(" OR {}", my_partial(&he)) } else { String::new() };
            sql.push(&format!(" AND ({he} IS NULL{zero} OR COALESCE({t} > "));
            self.bind_time(sql, self.scope.holds.now);
            sql.push(", 1=1))");
        }
    }

    fn keys_in(&self, sql: &mut Sql, qual: &str, keys: &[Vec<Value>]) {
        let cols: Vec<String> = self.scope.key.iter().map(|k| self.col(qual, k)).collect();
        if keys.is_empty() {
            sql.push("1=0");
            return;
        }
        let infos: Vec<_> = self.scope.key.iter().map(|k| self.scope.table.column(k)).collect();
        if cols.len() == 1 {
            sql.push(&format!("{} IN (", cols[0]));
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_for(k[0].clone(), infos[0], false);
            }
        } else {
            sql.push(&format!("({}) IN (", cols.join(", ")));
            for (i, k) in keys.iter().enumerate() {
                sql.push(if i > 0 { ", (" } else { "(" });
                for (j, v) in k.iter().enumerate() {
                    if j > 0 {
                        sql.push(", ");
                    }
                    sql.bind_for(v.clone(), infos[j], false);
                }
                sql.push(")");
            }
        }
        sql.push(")");
    }

    /// Read expression of a column (types without a native mapping are read as text).
    fn read_expr(&self, qual: &str, c: &str) -> String {
        let e = self.col(qual, c);
        match (self.scope.table.kind(c), self.d) {
            (ColumnKind::Other, Dialect::MySql) => format!("CAST({e} AS CHAR)"),
            (ColumnKind::Other, _) => format!("CAST({e} AS TEXT)"),
            _ => e,
        }
    }

    // ---- read-only statements ---------------------------------------------------------------

    /// Whether the holds of the whole policy or of every subject (not of one subject) apply:
    /// the same for every row.
    fn held_everywhere(&self, sql: &mut Sql) {
        let whole_policy = self.scope.holds.file.iter().any(|h| h.whole_policy);
        let every_subject = self.table_hold_parts().contains(&false);
        sql.push(match (whole_policy, every_subject) {
            (true, _) => "(1=1)",
            (false, false) => "(1=0)",
            (false, true) => "",
        });
        if !whole_policy && every_subject {
            self.table_hold_exists(sql, &self.table(), false);
        }
    }

    /// SQLite, with a holds table: a count of rows held, or not held, among others (`f` is
    /// `rest AND [NOT] Held`) is `rest`'s count, less its held rows where not held, and its held
    /// rows are counted from the holds' side: every one of them where a hold of the whole policy
    /// or of every subject applies, else those whose subject a hold names (`subject IN (the
    /// holds' subjects)`, which SQLite reads from the holds and looks up by the subject's
    /// index). Written as SQLite reads it otherwise, a test per row (`NOT EXISTS`, or an `OR`
    /// with the holds of every subject) probed the holds for each lapsed row: the benchmark's
    /// due count took 0.26 s of which 0.08 s was that probe, and its held count 0.21 s against
    /// 0.03 s. One statement, so one snapshot: the two counts cannot disagree. The held part
    /// is two-valued (`Self::held`), so the difference is exact. `None` for any other filter.
    fn lite_split_held(&self, f: &Filter) -> Option<(Filter, bool)> {
        if self.d != Dialect::Sqlite || !self.split_holds || self.table_hold_parts().is_empty() {
            return None;
        }
        fn conjuncts(f: &Filter, out: &mut Vec<Filter>) {
            match f {
                Filter::All(parts) => parts.iter().for_each(|p| conjuncts(p, out)),
                other => out.push(other.clone()),
            }
        }
        let mut parts = Vec::new();
        conjuncts(f, &mut parts);
        let at = |neg: bool| {
            parts.iter().position(|p| match (p, neg) {
                (Filter::Held, false) => true,
                (Filter::Not(inner), true) => matches!(**inner, Filter::Held),
                _ => false,
            })
        };
        let (i, negated) = match (at(false), at(true)) {
            (Some(i), None) => (i, false),
            (None, Some(i)) => (i, true),
            _ => return None,
        };
        parts.remove(i);
        // No other hold test hides in what is left (the split sees only this one).
        fn holds(f: &Filter) -> bool {
            match f {
                Filter::Held | Filter::HeldByFile(_) => true,
                Filter::All(parts) | Filter::Any(parts) => parts.iter().any(holds),
                Filter::Not(inner) => holds(inner),
                _ => false,
            }
        }
        if parts.iter().any(holds) {
            return None;
        }
        Some((Filter::All(parts), negated))
    }

    /// `(CASE WHEN <held everywhere> THEN <rows of rest> ELSE <rows of rest held by subject>
    /// END)`: [`Self::lite_split_held`]'s count of the held rows of `rest`.
    fn lite_held_count(&self, sql: &mut Sql, rest: &Filter) {
        let t = self.table();
        sql.push("(CASE WHEN ");
        self.held_everywhere(sql);
        sql.push(&format!(" THEN (SELECT COUNT(*) FROM {t} WHERE "));
        self.filter(sql, rest, &t);
        sql.push(&format!(") ELSE (SELECT COUNT(*) FROM {t} WHERE "));
        self.filter(sql, rest, &t);
        sql.push(" AND ");
        self.held_parts(sql, &t, None, true);
        sql.push(") END)");
    }

    pub fn count(&self, f: &Filter) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            match self.lite_split_held(f) {
                Some((rest, negated)) => {
                    sql.push("SELECT ");
                    if negated {
                        sql.push(&format!("(SELECT COUNT(*) FROM {t} WHERE "));
                        self.filter(&mut sql, &rest, &t);
                        sql.push(") - ");
                    }
                    self.lite_held_count(&mut sql, &rest);
                }
                None => {
                    sql.push(&format!("SELECT COUNT(*) FROM {t} WHERE "));
                    self.filter(&mut sql, f, &t);
                }
            }
            sql
        })
    }

    /// Rows matching `f`, and the first and last of their keys (single-column keys). Where
    /// `f` is counted as a difference ([`Self::lite_split_held`]), the keys bound the rows of
    /// `rest`, which include those of `f`.
    pub fn count_bounds(&self, f: &Filter) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            let k = self.col(&t, &self.scope.key[0]);
            match self.lite_split_held(f) {
                Some((rest, true)) => {
                    sql.push("SELECT a.n - ");
                    self.lite_held_count(&mut sql, &rest);
                    sql.push(&format!(
                        ", a.lo, a.hi FROM (SELECT COUNT(*) AS n, MIN({k}) AS lo, MAX({k}) AS hi FROM {t} WHERE "
                    ));
                    self.filter(&mut sql, &rest, &t);
                    sql.push(") a");
                }
                _ => {
                    sql.push(&format!("SELECT COUNT(*), MIN({k}), MAX({k}) FROM {t} WHERE "));
                    self.filter(&mut sql, f, &t);
                }
            }
            sql
        })
    }

    /// Whether `held` (`rest AND Held`) is the held part of `due` (`rest AND NOT Held`), both
    /// counted as [`Self::lite_split_held`] does, with one `rest` (written alike, bound alike):
    /// then [`Self::count_bounds_held`] counts both in one statement.
    pub fn held_with_due(&self, due: &Filter, held: &Filter) -> bool {
        let (Some((a, true)), Some((b, false))) = (self.lite_split_held(due), self.lite_split_held(held)) else {
            return false;
        };
        let t = self.table();
        let (mut x, mut y) = (Sql::new(self.d), Sql::new(self.d));
        self.counting(|| {
            self.filter(&mut x, &a, &t);
            self.filter(&mut y, &b, &t);
        });
        x.text == y.text && x.params == y.params
    }

    /// [`Self::count_bounds`] of `due`, counted as a difference ([`Self::lite_split_held`]),
    /// with its held part: `rest`'s rows, their first and last key, and its held rows, which
    /// are the rows of `held` where [`Self::held_with_due`]. One statement, so one snapshot:
    /// the report's held rows are those the due count left out, with no statement of their own
    /// (the benchmark's held count took 0.05–0.1 s of a SQLite delete's 1 s, BENCHMARKS.md).
    /// `None` where `due` is not counted as a difference.
    pub fn count_bounds_held(&self, due: &Filter) -> Option<Sql> {
        let Some((rest, true)) = self.lite_split_held(due) else { return None };
        Some(self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            let k = self.col(&t, &self.scope.key[0]);
            sql.push("SELECT a.n, a.lo, a.hi, ");
            self.lite_held_count(&mut sql, &rest);
            sql.push(&format!(" FROM (SELECT COUNT(*) AS n, MIN({k}) AS lo, MAX({k}) AS hi FROM {t} WHERE "));
            self.filter(&mut sql, &rest, &t);
            sql.push(") a");
            sql
        }))
    }

    /// The first and last key (single-column keys) of the rows `f` matches, `NULL`s when
    /// none, then the table's first and last key: with `f` a lapse rule on an indexed anchor, a
    /// read of that index alone where a secondary index holds the primary key (InnoDB), and
    /// two reads of the primary key's ends, for [`Self::count_bounds_between`].
    pub fn key_bounds(&self, f: &Filter) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            let k = self.col(&t, &self.scope.key[0]);
            let all = self.q("all_rows");
            let ak = self.col(&all, &self.scope.key[0]);
            sql.push(&format!(
                "SELECT MIN({k}), MAX({k}), (SELECT MIN({ak}) FROM {t} {all}), (SELECT MAX({ak}) FROM {t} {all}) FROM {t} WHERE "
            ));
            self.filter(&mut sql, f, &t);
            sql
        })
    }

    /// MariaDB/MySQL: the first and last year of the dates of column `c` from `0001-01-01` on
    /// (two reads of its index), for [`Builder::unknown_years`].
    pub fn anchor_years(&self, c: &str) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push("SELECT ");
        self.anchor_years_of(&mut sql, c);
        sql
    }

    /// `(first year), (last year)` of [`Self::anchor_years`], as two subqueries.
    fn anchor_years_of(&self, sql: &mut Sql, c: &str) {
        let t = self.table();
        let y = self.q("anchor_years");
        let e = self.col(&y, c);
        let from = year_one(self.is_date(c));
        for (i, f) in ["MIN", "MAX"].iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(&format!("(SELECT YEAR({f}({e})) FROM {t} {y} WHERE {e} >= "));
            sql.bind(from.clone());
            sql.push(")");
        }
    }

    /// Whether column `c` holds dates without a time of day.
    /// MariaDB/MySQL: `e` (column `c`) is a zero or partial date; where the anchor's years are
    /// known (`unknown_years`), within the ranges of its index that hold such dates only
    /// (`zero_date_gaps`), so that the index serves the count instead of a scan.
    fn my_partial_in_gaps(&self, sql: &mut Sql, c: &str, e: &str) {
        match &self.unknown_years {
            // The same rows: every one the test finds is in one of these ranges of the index,
            // which hold no other date.
            Some((col, from, to)) if col == c => {
                let date_only = self.is_date(c);
                sql.push(&format!("(({e} < "));
                sql.bind(year_one(date_only));
                for (after, before) in zero_date_gaps(*from, *to, date_only) {
                    sql.push(&format!(" OR ({e} > "));
                    sql.bind(after);
                    sql.push(&format!(" AND {e} < "));
                    sql.bind(before);
                    sql.push(")");
                }
                sql.push(&format!(") AND {})", my_partial(e)));
            }
            _ => {
                sql.push(&my_partial(e));
            }
        }
    }

    fn is_temporal(&self, c: &str) -> bool {
        self.scope.table.column(c).is_some_and(|i| i.kind.is_temporal())
    }

    fn is_date(&self, c: &str) -> bool {
        self.scope.table.column(c).is_some_and(|i| i.kind == ColumnKind::Date)
    }

    /// A count of `f` with [`Self::anchor_years`] of `c` read in the same statement (one
    /// snapshot), to tell that the [`Builder::unknown_years`] it was rendered with still hold.
    pub fn count_with_anchor_years(&self, f: &Filter, c: &str) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            sql.push("SELECT COUNT(*), ");
            self.anchor_years_of(&mut sql, c);
            sql.push(&format!(" FROM {t} WHERE "));
            self.filter(&mut sql, f, &t);
            sql
        })
    }

    /// [`Self::count_bounds`] of the rows whose key is from `first` to `last`, which must hold
    /// every row `f` matches ([`Self::key_bounds`] of a filter that every row of `f` matches):
    /// the same count, read as a range of the primary key where the table is stored in its
    /// order (InnoDB) instead of the whole table.
    pub fn count_bounds_between(&self, f: &Filter, first: &Value, last: &Value) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            let k = self.col(&t, &self.scope.key[0]);
            sql.push(&format!("SELECT COUNT(*), MIN({k}), MAX({k}) FROM {t} WHERE "));
            self.next_rows(&mut sql, &t, None, Some(&(first.clone(), last.clone())));
            sql.push("(");
            self.filter(&mut sql, f, &t);
            sql.push(")");
            sql
        })
    }

    /// Rows matching each of `filters` in one scan of the table: `SELECT COUNT(CASE WHEN f1
    /// THEN 1 END), …`. Only for filters without subqueries ([`Builder::plain`]), which cost
    /// the same per row in one statement as in several.
    pub fn count_many(&self, filters: &[&Filter]) -> Sql {
        self.counting(|| {
            let mut sql = Sql::new(self.d);
            let t = self.table();
            sql.push("SELECT ");
            for (i, f) in filters.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("COUNT(CASE WHEN ");
                self.filter(&mut sql, f, &t);
                sql.push(" THEN 1 END)");
            }
            sql.push(&format!(" FROM {t}"));
            sql
        })
    }

    /// Whether `f` is a plain row predicate: no holds or dependents (subqueries).
    pub fn plain(f: &Filter) -> bool {
        match f {
            Filter::Held | Filter::HeldByFile(_) | Filter::HasDependents | Filter::Unreadable => false,
            Filter::All(parts) | Filter::Any(parts) => parts.iter().all(Builder::plain),
            Filter::Not(inner) => Builder::plain(inner),
            Filter::True
            | Filter::Lapsed(_)
            | Filter::AnchorNull(_)
            | Filter::AnchorNeverLapses(_)
            | Filter::Pending(_)
            | Filter::KeyShard { .. } => true,
        }
    }

    /// Rows matching `f` per hold of the holds table; with `within`, only rows whose key is
    /// from its first to its last value, which must hold every row `f` matches
    /// ([`Self::key_bounds`]): the same count, whose row reads then stay in that part of the
    /// table.
    pub fn count_by_table_hold(&self, f: &Filter, within: Option<&(Value, Value)>) -> Option<Sql> {
        self.counting(|| {
            let ht = self.scope.holds.table.as_ref()?;
            self.holds_info?;
            let mut sql = Sql::new(self.d);
            let t = self.table();
            let read_id = self.as_text("lh", &ht.id);
            // Holds of the row's subject and holds of every subject are counted apart: a join on
            // `subject = … OR subject IS NULL` cannot be a hash join, and would compare every row
            // with every hold.
            // A row counts once per hold id: a hold id may have several rows (a subject's and
            // every subject's, or the same one twice), and `UNION` keeps each (hold id, key) once.
            let int = if self.d == Dialect::MySql { "SIGNED" } else { "BIGINT" };
            let keys: Vec<String> =
                self.scope.key.iter().enumerate().map(|(i, k)| format!("{} AS k{i}", self.col(&t, k))).collect();
            sql.push(&format!("SELECT hold_id, CAST(COUNT(*) AS {int}) FROM ("));
            for (i, part) in [true, false].into_iter().enumerate() {
                if i > 0 {
                    sql.push(" UNION ");
                }
                sql.push(&format!(
                    "SELECT {read_id} AS hold_id, {} FROM {t} JOIN {} lh ON ",
                    keys.join(", "),
                    self.q(&ht.table)
                ));
                self.table_hold_match_part(&mut sql, ht, &t, Some(part));
                sql.push(" WHERE ");
                self.next_rows(&mut sql, &t, None, within);
                self.filter(&mut sql, f, &t);
            }
            sql.push(") held GROUP BY hold_id ORDER BY hold_id");
            Some(sql)
        })
    }

    /// A column cast to text (`CHAR` on MariaDB/MySQL), as hold ids are read.
    fn as_text(&self, qual: &str, c: &str) -> String {
        match self.d {
            Dialect::MySql => format!("CAST({} AS CHAR)", self.col(qual, c)),
            _ => format!("CAST({} AS TEXT)", self.col(qual, c)),
        }
    }

    /// A column of the holds table (`lh`) as [`Builder::holds_in_force`] reads it: as text, a
    /// binary one as its bytes.
    fn hold_column_read(&self, c: &str) -> String {
        match self.scope.table.kind(c) {
            ColumnKind::Bytes => self.col("lh", c),
            _ => self.as_text("lh", c),
        }
    }

    /// The holds of the holds table that hold a record of the subject of the file hold `probe`
    /// (`report lookup --connect`): the records of the scope's table whose subject is that
    /// subject, compared as a holds-file subject is ([`Self::held`]), joined with the table's
    /// holds as the destroying statements join them (`table_hold_match_part`: the database's
    /// own comparison, affinity and collation). Columns: hold id as text (as
    /// [`Builder::count_by_table_hold`] reads it), 1 for a row without a subject (every
    /// subject). `None` without a holds table or subject column.
    pub fn table_holds_of(&self, probe: &str) -> Option<Sql> {
        let ht = self.scope.holds.table.as_ref()?;
        self.holds_info?;
        self.scope.subject.as_ref()?;
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let read_id = self.as_text("lh", &ht.id);
        let every = format!("CASE WHEN {} IS NULL THEN 1 ELSE 0 END", self.col("lh", &ht.subject));
        sql.push(&format!("SELECT DISTINCT {read_id}, {every} FROM {t} JOIN {} lh ON ", self.q(&ht.table)));
        self.table_hold_match_part(&mut sql, ht, &t, None);
        sql.push(" WHERE ");
        self.bare_in.set(true);
        self.held(&mut sql, &t, Some(probe));
        self.bare_in.set(false);
        Some(sql)
    }

    /// The next due keys (and subjects) in key order.
    pub fn candidates(&self, after: Option<&[Value]>, limit: usize) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        sql.push(&format!("SELECT {} FROM {t} WHERE ", self.key_and_subject(&t).join(", ")));
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        if let Some(after) = after {
            sql.push(" AND ");
            self.key_compare(&mut sql, &t, ">", after);
        }
        let order: Vec<String> = self.scope.key.iter().map(|k| self.col(&t, k)).collect();
        sql.push(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        sql
    }

    /// Inside the destroying transaction: re-reads (and locks) the batch rows that are still
    /// due, with the values the anonymization needs. Columns: keys, then `columns`.
    pub fn lock(&self, rows: Rows, columns: &[String]) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let mut cols: Vec<String> = self.scope.key.iter().map(|k| self.read_expr(&t, k)).collect();
        cols.extend(columns.iter().map(|c| self.read_expr(&t, c)));
        sql.push(&format!("SELECT {} FROM {t} WHERE ", cols.join(", ")));
        self.rows(&mut sql, &t, rows);
        sql.push(" AND ");
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        if self.d != Dialect::Sqlite {
            sql.push(" FOR UPDATE");
        }
        sql
    }

    /// Reads the rows of `keys` under a shared lock, whatever their values (no filter): waits for
    /// any transaction that is changing or deleting them ([`crate::connector::Connector::settle`]).
    /// PostgreSQL `FOR SHARE`, MySQL/MariaDB `LOCK IN SHARE MODE`; SQLite has one writer and no
    /// row locks (the statement is never run there).
    pub fn share_lock(&self, keys: &[Vec<Value>]) -> Sql {
        self.share_lock_where(|b, sql, t| b.keys_in(sql, t, keys))
    }

    /// The same for the rows with a key after `after` (if any) up to `upto`: the key range a
    /// batch of its own statements read.
    pub fn share_lock_range(&self, after: Option<&[Value]>, upto: &[Value]) -> Sql {
        self.share_lock_where(|b, sql, t| {
            if let Some(after) = after {
                b.key_compare(sql, t, ">", after);
                sql.push(" AND ");
            }
            b.key_compare(sql, t, "<=", upto);
        })
    }

    /// `SELECT` the keys of the rows `rows` writes the condition of, under a shared lock.
    fn share_lock_where(&self, rows: impl FnOnce(&Self, &mut Sql, &str)) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let cols: Vec<String> = self.scope.key.iter().map(|k| self.read_expr(&t, k)).collect();
        sql.push(&format!("SELECT {} FROM {t} WHERE ", cols.join(", ")));
        rows(self, &mut sql, &t);
        match self.d {
            Dialect::Postgres => sql.push(" FOR SHARE"),
            Dialect::MySql => sql.push(" LOCK IN SHARE MODE"),
            Dialect::Sqlite => &mut sql,
        };
        sql
    }

    /// Inside the destroying transaction: reads and locks the next `limit` due rows after
    /// `after`, in key order, with the values the anonymization needs (a batch without a
    /// candidate query first). Columns: keys, the subject if the scope has one, then `columns`.
    /// `bounds` as in [`Builder::delete_next`].
    pub fn lock_next(
        &self,
        after: Option<&[Value]>,
        limit: usize,
        bounds: Option<&(Value, Value)>,
        columns: &[String],
    ) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let mut cols = self.key_and_subject(&t);
        cols.extend(columns.iter().map(|c| self.read_expr(&t, c)));
        self.next_select(&mut sql);
        sql.push(&format!("{} FROM {t} WHERE ", cols.join(", ")));
        self.next_locked(&mut sql, after, limit, bounds);
        sql
    }

    /// `SELECT ` of a read of the next batch (`ORDER BY key LIMIT n` over the rest of the due
    /// key range). On MariaDB with the holds' `NOT EXISTS` kept as it is written, a look-up in
    /// the holds' subject index for each row read: MariaDB otherwise turns it into `NOT IN`
    /// (`exists_to_in`) and, costing the range as if the whole of it were read (the `LIMIT`
    /// left out), materializes the holds table for every batch, a scan of every hold (92 ms a
    /// batch with 265,000 holds, against 20 ms by look-ups; at 10,000,000 rows the reads were
    /// two thirds of an anonymize run). `SET STATEMENT` sets it for this statement alone;
    /// the counts, which read every lapsed row, keep the materialization, faster there.
    fn next_select(&self, sql: &mut Sql) {
        if self.mariadb {
            sql.push("SET STATEMENT optimizer_switch='exists_to_in=off' FOR ");
        }
        sql.push("SELECT ");
    }

    /// The rest of a read of the next batch after its columns (`... FROM t WHERE `): the next
    /// `limit` due rows after `after` in key order, locked (`FOR UPDATE`; on SQLite the
    /// transaction's write lock does it).
    fn next_locked(&self, sql: &mut Sql, after: Option<&[Value]>, limit: usize, bounds: Option<&(Value, Value)>) {
        let t = self.table();
        self.next_rows(sql, &t, after, bounds);
        self.filter(sql, &self.scope.destroy_filter(), &t);
        let order: Vec<String> = self.scope.key.iter().map(|k| self.col(&t, k)).collect();
        sql.push(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        if self.d != Dialect::Sqlite {
            sql.push(" FOR UPDATE");
        }
    }

    /// Reads `columns` of the rows that still match the scope's lapse filter, among `rows`
    /// (verification: a destroyed row must be gone, or no longer need work). When anonymizing
    /// with strategies the database can test, only rows that still need work are returned (the
    /// same `Filter::Pending` the destroying statements use; the caller still checks each
    /// returned value in Rust): an anonymized range comes back empty instead of whole.
    pub fn read(&self, rows: Rows, columns: &[String]) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let mut cols: Vec<String> = self.scope.key.iter().map(|k| self.read_expr(&t, k)).collect();
        cols.extend(columns.iter().map(|c| self.read_expr(&t, c)));
        sql.push(&format!("SELECT {} FROM {t} WHERE ", cols.join(", ")));
        self.rows(&mut sql, &t, rows);
        sql.push(" AND ");
        // What is left to do first: after a batch, it is false for nearly every row of the
        // range, and the database then skips the anchor's test (a date parsed per row on
        // SQLite); the rows are the same in either order.
        let mut all: Vec<Filter> = self.scope.pending().into_iter().collect();
        all.push(self.scope.lapse.clone());
        self.filter(&mut sql, &Filter::All(all), &t);
        sql
    }

    // ---- destroying statements --------------------------------------------------------------

    /// Deletes dependents (deepest first) of the batch rows that are being destroyed. Each
    /// statement reaches the parent through `EXISTS (... destroy_filter ...)`, so a held parent
    /// keeps its children too.
    pub fn cascade(&self, keys: &[Vec<Value>]) -> Vec<(String, Sql)> {
        let mut out = Vec::new();
        for c in &self.scope.cascade {
            self.cascade_node(c, &mut Vec::new(), keys, &mut out);
        }
        out
    }

    fn cascade_node<'b>(
        &self,
        node: &'b Cascade,
        chain: &mut Vec<&'b ForeignKey>,
        keys: &[Vec<Value>],
        out: &mut Vec<(String, Sql)>,
    ) {
        chain.push(&node.fk);
        for child in &node.children {
            self.cascade_node(child, chain, keys, out);
        }
        let mut sql = Sql::new(self.d);
        let target = self.q(&node.fk.table);
        sql.push(&format!("DELETE FROM {target} WHERE "));
        // chain[0] is the edge from the policy table; the last is this node's own edge.
        self.parent_exists(&mut sql, chain, chain.len() - 1, &target, keys);
        out.push((node.fk.table.clone(), sql));
        chain.pop();
    }

    /// `EXISTS (SELECT 1 FROM <parent of chain[i]> pI WHERE join AND <parent's own condition>)`.
    fn parent_exists(&self, sql: &mut Sql, chain: &[&ForeignKey], i: usize, child_qual: &str, keys: &[Vec<Value>]) {
        let fk = chain[i];
        let alias = format!("p{i}");
        let parent_table = if i == 0 { self.scope.table.name.clone() } else { chain[i - 1].table.clone() };
        sql.push(&format!("EXISTS (SELECT 1 FROM {} {alias} WHERE ", self.q(&parent_table)));
        self.fk_join(sql, fk, child_qual, &alias);
        sql.push(" AND ");
        if i == 0 {
            self.keys_in(sql, &alias, keys);
            sql.push(" AND ");
            self.filter(sql, &self.scope.destroy_filter(), &alias);
        } else {
            self.parent_exists(sql, chain, i - 1, &alias, keys);
        }
        sql.push(")");
    }

    /// Deletes the due rows whose key lies between `first` and `last` (inclusive, in the
    /// database's own key order: the first and last candidate of a batch) and returns their
    /// keys and subjects (columns: keys, then the subject if the scope has one). The range is a
    /// plain index range scan, where an `IN` list of the batch's keys would be one probe (and
    /// one bound parameter) per key; what it deleted comes back from `RETURNING`, so a row that
    /// became due inside the range meanwhile is seen, never assumed.
    pub fn delete_range(&self, first: &[Value], last: &[Value]) -> Sql {
        let mut sql = self.delete_span(first, last);
        sql.push(&format!(" RETURNING {}", self.key_and_subject(&self.table()).join(", ")));
        sql
    }

    /// Deletes the due rows whose key lies between `first` and `last` (inclusive), returning
    /// nothing: the batch [`Builder::select_next`] read under SQLite's write lock, so its caller
    /// knows the rows and checks that the count deleted is the count read. The statement
    /// still tests `destroy_filter` for every row it deletes.
    pub fn delete_span(&self, first: &[Value], last: &[Value]) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        sql.push(&format!("DELETE FROM {t} WHERE "));
        self.rows(&mut sql, &t, Rows::Range(first, last));
        sql.push(" AND ");
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql
    }

    /// Deletes the next `limit` due rows after `after` (in key order) and returns their keys and
    /// subjects, like [`Builder::delete_range`], without a candidate query first: MariaDB
    /// deletes in key order with `ORDER BY … LIMIT`; PostgreSQL deletes the key range up to the
    /// last of the next `limit` due keys, found by a subquery of the same statement. Either way
    /// every deleted row passed `destroy_filter` in the deleting statement itself. Single-column
    /// keys only. (SQLite: [`Builder::select_next_packed`], then [`Builder::delete_listed`];
    /// other keys [`Builder::select_next`], then [`Builder::delete_span`].)
    ///
    /// `bounds`: the first and last due key when the rows were counted. The scan starts at the
    /// first (MariaDB otherwise plans the first batch as a scan of the anchor's index and a
    /// sort) and stops at the last (the last batch does not read on to the end of the table);
    /// a row that became due beyond them is left for the next run.
    pub fn delete_next(&self, after: Option<&[Value]>, limit: usize, bounds: Option<&(Value, Value)>) -> Sql {
        self.delete_next_as(after, limit, bounds, false)
    }

    /// PostgreSQL with a holds table: one row if a hold now applies to any of `subjects` (those
    /// of the rows a batch's single destroying statement just deleted, or of its candidates),
    /// none otherwise. Run in the batch's transaction after that statement: under READ
    /// COMMITTED the statement read the holds table as of its start, and a row it had to wait
    /// for (locked by a transaction that then inserted a hold on its subject and committed) was
    /// deleted without that hold being seen; this statement, begun after every deleted row's
    /// lock was taken, sees it (found by a review). `None` where it does not apply, or where a
    /// subject cannot be put in an array (bytes): the caller then takes the batch by locking its
    /// rows first.
    pub fn holds_probe(&self, subjects: &[Value]) -> Option<Sql> {
        if !self.holds_probe_fits(subjects) {
            return None;
        }
        let mut sql = Sql::new(self.d);
        sql.push("SELECT 1 FROM ");
        match self.scope.subject.as_deref() {
            Some(s) => {
                let info = self.scope.table.column(s)?;
                let mut literal = String::with_capacity(subjects.len() * 12 + 2);
                literal.push('{');
                for (i, v) in subjects.iter().enumerate() {
                    if i > 0 {
                        literal.push(',');
                    }
                    pg_array_item(&mut literal, &Cell::Value(v.clone()));
                }
                literal.push('}');
                sql.push("(SELECT unnest(CAST(");
                sql.bind(Value::Text(literal));
                sql.push(&format!(" AS {}[])) AS {}) t", info.sql_type, self.q(s)));
            }
            None => {
                sql.push("(SELECT 1) t");
            }
        }
        sql.push(" WHERE ");
        self.held(&mut sql, "t", None);
        sql.push(" LIMIT 1");
        Some(sql)
    }

    /// Whether [`Builder::holds_probe`] can check `subjects` (PostgreSQL with a holds table,
    /// subjects an array can hold), without building it.
    pub fn holds_probe_fits(&self, subjects: &[Value]) -> bool {
        self.d == Dialect::Postgres
            && self.scope.holds.table.is_some()
            && match self.scope.subject.as_deref() {
                Some(s) => {
                    self.scope.table.column(s).is_some()
                        && !subjects
                            .iter()
                            .any(|v| matches!(v, Value::Bytes(_)) || matches!(v, Value::Float(f) if !f.is_finite()))
                }
                None => true,
            }
    }

    /// PostgreSQL: the oldest transaction running at this statement's snapshot (`xid8`, as
    /// text), taken before a fast path's destroying statement ([`Builder::holds_recent`]).
    pub fn holds_snapshot_xmin(&self) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push("SELECT CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT)");
        sql
    }

    /// PostgreSQL: one row if a row of the holds table was written by a transaction not older
    /// than `xid` (its 32 bits), the oldest running at a destroying statement's snapshot: a
    /// superset of the holds that statement could not see, usually empty (a hold written
    /// earlier, even much earlier by a transaction older than `xid`, had committed before
    /// the statement began, or is frozen). Then, and only then, [`Builder::holds_probe`].
    /// Integer subjects compared with an integer holds column: only the holds of every subject
    /// and those within the subjects' range are read (an index on the holds' subject serves it).
    pub fn holds_recent(&self, xid: u32, subjects: &[Value]) -> Sql {
        let mut sql = Sql::new(self.d);
        let Some(ht) = self.scope.holds.table.as_ref() else {
            sql.push("SELECT 1 WHERE 1=0");
            return sql;
        };
        sql.push(&format!("SELECT 1 FROM {} lh WHERE age(lh.xmin) <= age(CAST(", self.q(&ht.table)));
        sql.bind(Value::Text(xid.to_string()));
        sql.push(" AS xid))");
        let int = |info: Option<&crate::connector::ColumnInfo>| info.is_some_and(|c| c.kind == ColumnKind::Int);
        let ints: Option<Vec<i64>> =
            subjects.iter().map(|v| if let Value::Int(i) = v { Some(*i) } else { None }).collect();
        let subject_info = self.scope.subject.as_deref().and_then(|s| self.scope.table.column(s));
        if let (true, true, Some(ints)) =
            (int(subject_info), int(self.holds_info.and_then(|i| i.column(&ht.subject))), ints)
        {
            if let (Some(lo), Some(hi)) = (ints.iter().min(), ints.iter().max()) {
                let hs = format!("lh.{}", self.q(&ht.subject));
                sql.push(&format!(" AND ({hs} IS NULL OR ({hs} >= "));
                sql.bind(Value::Int(*lo));
                sql.push(&format!(" AND {hs} <= "));
                sql.bind(Value::Int(*hi));
                sql.push("))");
            }
        }
        sql.push(" LIMIT 1");
        sql
    }

    /// [`Builder::delete_next`] on PostgreSQL, returning one row: the count of rows deleted,
    /// their keys and their subjects as `bigint[]` (`array_agg` over the `DELETE … RETURNING`;
    /// `NULL::bigint[]` instead of the subjects when there are none or they are the keys). Integer keys and subjects only: a driver hands a row over at a cost of its
    /// own, and arrays of integers give every value back exactly (NULL included).
    pub fn delete_next_packed(&self, after: Option<&[Value]>, limit: usize, bounds: Option<&(Value, Value)>) -> Sql {
        self.delete_next_as(after, limit, bounds, true)
    }

    fn delete_next_as(
        &self,
        after: Option<&[Value]>,
        limit: usize,
        bounds: Option<&(Value, Value)>,
        packed: bool,
    ) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let key = self.col(&t, &self.scope.key[0]);
        let destroy = self.scope.destroy_filter();
        if packed {
            sql.push("WITH d AS (");
        }
        sql.push(&format!("DELETE FROM {t} WHERE "));
        if self.d == Dialect::MySql {
            self.next_rows(&mut sql, &t, after, bounds);
        } else {
            *self.batch_keys.borrow_mut() = Some(KeyWindow {
                lower: match (after, bounds) {
                    (Some([a]), _) => Some((a.clone(), false)),
                    (None, Some((first, _))) => Some((first.clone(), true)),
                    _ => None,
                },
                upper: bounds.map(|(_, last)| last.clone()),
            });
            // The first batch starts at the first due key here too: with no lower bound of
            // its own, PostgreSQL planned it as a scan of the anchor's index over every
            // lapsed row (105 ms against 13 ms at 1M rows).
            self.next_rows(&mut sql, &t, after, None);
            if let Some((first, _)) = bounds.filter(|_| after.is_none()) {
                let info = self.scope.table.column(&self.scope.key[0]);
                sql.push(&format!("{key} >= "));
                sql.bind_for(first.clone(), info, false);
                sql.push(" AND ");
            }
            // The upper end of the batch: the last of the next `limit` due keys.
            let inner = "n";
            let ikey = self.col(inner, &self.scope.key[0]);
            sql.push(&format!(
                "{key} <= (SELECT MAX(b.k) FROM (SELECT {ikey} AS k FROM {} {inner} WHERE ",
                self.q(&self.scope.table.name)
            ));
            self.next_rows(&mut sql, inner, after, bounds);
            self.filter(&mut sql, &destroy, inner);
            sql.push(&format!(" ORDER BY {ikey} LIMIT {limit}) b) AND "));
        }
        self.filter(&mut sql, &destroy, &t);
        self.batch_keys.take();
        if self.d == Dialect::MySql {
            sql.push(&format!(" ORDER BY {key} LIMIT {limit}"));
        }
        let returned = self.key_and_subject(&t);
        if packed {
            // The subject that is the key is returned once (each array costs about 2 ms per
            // 5,000 rows); so is no subject.
            let (subjects, list) = match (returned.get(1), Subjects::of(self.scope)) {
                (Some(s), Subjects::Listed) => (format!(", {s} AS s"), "array_agg(d.s::bigint)"),
                _ => (String::new(), "NULL::bigint[]"),
            };
            sql.push(&format!(
                " RETURNING {key} AS k{subjects}) SELECT COUNT(*), array_agg(d.k::bigint), {list} FROM d"
            ));
        } else {
            sql.push(&format!(" RETURNING {}", returned.join(", ")));
        }
        sql
    }

    /// The next `limit` due keys and subjects after `after` (in key order, within `bounds` as
    /// in [`Builder::delete_next`]). SQLite's delete batch: read under the write lock taken by
    /// `BEGIN IMMEDIATE` (nothing can change them before the delete, [`Builder::delete_span`]),
    /// so the evidence ids are computed while the rows are deleted. On a server, after a
    /// `delete_next` that deleted fewer rows than it asked for: whether any row is still due.
    /// Single-column keys only.
    pub fn select_next(&self, after: Option<&[Value]>, limit: usize, bounds: Option<&(Value, Value)>) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let key = self.col(&t, &self.scope.key[0]);
        self.next_select(&mut sql);
        sql.push(&format!("{} FROM {t} WHERE ", self.key_and_subject(&t).join(", ")));
        self.next_rows(&mut sql, &t, after, bounds);
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql.push(&format!(" ORDER BY {key} LIMIT {limit}"));
        sql
    }

    /// [`Builder::select_next`] as one row (SQLite): the count of rows, how many of their key
    /// (and subject) values are not integers, and the keys (and subjects) as comma-separated
    /// lists (`group_concat`). A driver hands a row over at a cost several times that of the
    /// statement finding it: one row instead of thousands makes the read a third. The lists
    /// are exact only for integers, hence the count of other values (the caller reads the batch
    /// row by row again if it is not 0). Single-column integer keys; an integer subject.
    pub fn select_next_packed(&self, after: Option<&[Value]>, limit: usize, bounds: Option<&(Value, Value)>) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let key = self.col(&t, &self.scope.key[0]);
        // The subject that is the key comes once.
        let listed = Subjects::of(self.scope) == Subjects::Listed;
        let (lists, not_int) = match listed {
            true => ("group_concat(b.k), group_concat(b.s)", "typeof(b.k) <> 'integer' OR typeof(b.s) <> 'integer'"),
            false => ("group_concat(b.k), NULL", "typeof(b.k) <> 'integer'"),
        };
        let read = self.key_and_subject(&t);
        let aliased = match read.as_slice() {
            [k, s] if listed => format!("{k} AS k, {s} AS s"),
            _ => format!("{key} AS k"),
        };
        sql.push(&format!(
            "SELECT COUNT(*), COALESCE(SUM({not_int}), 0), {lists} FROM (SELECT {aliased} FROM {t} WHERE "
        ));
        self.next_rows(&mut sql, &t, after, bounds);
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql.push(&format!(" ORDER BY {key} LIMIT {limit}) b"));
        sql
    }

    /// The keys of the rows from key `first` to key `last`, at most `most` of them (SQLite, a
    /// single-column key): how many were read, and their text as a comma-separated list. For a
    /// batch that [`Builder::select_next_packed`] read: the keys in its range that are not in
    /// it (rows not due, held), when they are few, let [`Builder::delete_listed`] and
    /// [`Builder::update_listed`] take the range less those instead of looking every key up.
    /// Read through the key's index only. (A key that is not an integer — a real between two
    /// integers — does not read back as one: the caller then goes by the keys.)
    pub fn keys_between(&self, first: i64, last: i64, most: usize) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let key = self.col(&t, &self.scope.key[0]);
        sql.push(&format!("SELECT COUNT(*), group_concat(k) FROM (SELECT {key} AS k FROM {t} WHERE {key} >= "));
        sql.bind(Value::Int(first));
        sql.push(&format!(" AND {key} <= "));
        sql.bind(Value::Int(last));
        sql.push(&format!(" ORDER BY {key} LIMIT "));
        sql.bind(Value::Int(most as i64));
        sql.push(")");
        sql
    }

    /// Deletes the rows whose integer key is in `keys` (SQLite, one parameter: a JSON array read
    /// by `json_each`), for a batch that [`Builder::select_next_packed`] read in the same
    /// `BEGIN IMMEDIATE` transaction, or ahead with nothing committed since (`ReadAhead` in
    /// `sql`): nothing else can have changed which of them are due, so `destroy_filter` is not
    /// tested again (that cost as much as the deletion itself: 16
    /// against 8 ms per 5,000 rows). A row the database keeps (a trigger's `RAISE(IGNORE)`)
    /// shows in the count, which the caller compares with the batch's. With `others`, every key
    /// between the batch's first and last that is not in it ([`Builder::keys_between`], read
    /// in the batch's read transaction): the rows of that key range less those, exactly the
    /// batch for the same reason (no row can have come into the range since), in a quarter less
    /// time than a look-up of each key when they are few (4.5 against 5.9 ms per 5,000 rows of
    /// the benchmark's table, 1.5 ms less for the anonymizing update).
    pub fn delete_listed(&self, keys: &[i64], others: Option<&[i64]>) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        sql.push(&format!("DELETE FROM {t}"));
        self.listed(&mut sql, &t, keys, others);
        sql
    }

    /// `key > after AND ` (when there is an `after`), then `key >= first AND ` (first batch only)
    /// and `key <= last AND ` (with `bounds`): where the next batch's rows are.
    fn next_rows(&self, sql: &mut Sql, qual: &str, after: Option<&[Value]>, bounds: Option<&(Value, Value)>) {
        if let Some(after) = after {
            self.key_compare(sql, qual, ">", after);
            sql.push(" AND ");
        }
        if let Some((first, last)) = bounds {
            let info = self.scope.table.column(&self.scope.key[0]);
            let k = self.col(qual, &self.scope.key[0]);
            if after.is_none() {
                sql.push(&format!("{k} >= "));
                sql.bind_for(first.clone(), info, false);
                sql.push(" AND ");
            }
            sql.push(&format!("{k} <= "));
            sql.bind_for(last.clone(), info, false);
            sql.push(" AND ");
        }
    }

    /// The key columns, then the subject column if the scope has one, as read expressions.
    fn key_and_subject(&self, qual: &str) -> Vec<String> {
        let mut cols: Vec<String> = self.scope.key.iter().map(|k| self.read_expr(qual, k)).collect();
        if let Some(s) = &self.scope.subject {
            cols.push(self.read_expr(qual, s));
        }
        cols
    }

    /// The predicate selecting `rows`.
    fn rows(&self, sql: &mut Sql, qual: &str, rows: Rows) {
        match rows {
            Rows::Keys(keys) => self.keys_in(sql, qual, keys),
            Rows::Range(first, last) => {
                self.key_compare(sql, qual, ">=", first);
                sql.push(" AND ");
                self.key_compare(sql, qual, "<=", last);
            }
        }
    }

    /// `key <op> (values)`: a column comparison, or a row comparison for a composite key.
    fn key_compare(&self, sql: &mut Sql, qual: &str, op: &str, values: &[Value]) {
        let keys: Vec<String> = self.scope.key.iter().map(|k| self.col(qual, k)).collect();
        if keys.len() == 1 {
            sql.push(&format!("{} {op} ", keys[0]));
        } else {
            sql.push(&format!("({}) {op} (", keys.join(", ")));
        }
        for (i, (v, k)) in values.iter().zip(&self.scope.key).enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind_for(v.clone(), self.scope.table.column(k), false);
        }
        if keys.len() > 1 {
            sql.push(")");
        }
    }

    pub fn delete(&self, keys: &[Vec<Value>]) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        sql.push(&format!("DELETE FROM {t} WHERE "));
        self.keys_in(&mut sql, &t, keys);
        sql.push(" AND ");
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql
    }

    /// Writes new values: `rows` holds, per row, its key and one new value per column of
    /// `columns` (`None`: leave the column as it is).
    ///
    /// A column whose new value is the same on every row is assigned one bound value. The
    /// others come from a derived table of the batch (key, then per column a value and a "set"
    /// flag) joined on the key, so the statement grows linearly with the batch (a `CASE` per
    /// row would have the database compare every row with every key).
    ///
    /// `range`: the batch's first and last key, when it is a key range: repeated as a range
    /// predicate, so that the database reads the batch's rows by an index range scan instead of
    /// planning the join as a scan of the whole table.
    pub fn update(&self, columns: &[String], rows: &[(Vec<Value>, Vec<Option<Value>>)], range: Option<Rows>) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        let uniform: Vec<Option<Value>> = (0..columns.len())
            .map(|ci| {
                let first = rows.first().and_then(|(_, vs)| vs[ci].clone())?;
                rows.iter().all(|(_, vs)| vs[ci].as_ref() == Some(&first)).then_some(first)
            })
            .collect();
        let varying: Vec<usize> = (0..columns.len()).filter(|&ci| uniform[ci].is_none()).collect();
        let mut names = self.key_names();
        for &ci in &varying {
            names.push(format!("v{ci}"));
            names.push(format!("f{ci}"));
        }
        let table: Vec<Vec<Cell>> = rows
            .iter()
            .map(|(key, vs)| {
                let mut cells = self.key_cells(key);
                for &ci in &varying {
                    let info = self.scope.table.column(&columns[ci]);
                    let (v, set) = match &vs[ci] {
                        Some(v) => (v.clone(), 1),
                        None => (Value::Null, 0),
                    };
                    cells.push(Cell::Assign(v, info));
                    cells.push(Cell::Flag(set));
                }
                cells
            })
            .collect();
        let set = |sql: &mut Sql, qualified: bool| {
            for (ci, c) in columns.iter().enumerate() {
                if ci > 0 {
                    sql.push(", ");
                }
                let target = if qualified { self.col(&t, c) } else { self.q(c) };
                match &uniform[ci] {
                    Some(v) => {
                        sql.push(&format!("{target} = "));
                        sql.bind_for(v.clone(), self.scope.table.column(c), true);
                    }
                    None => {
                        sql.push(&format!(
                            "{target} = CASE WHEN v.f{ci} = 1 THEN v.v{ci} ELSE {} END",
                            self.col(&t, c)
                        ));
                    }
                }
            }
            for c in self.anchors_kept_in_place(columns) {
                let target = if qualified { self.col(&t, c) } else { self.q(c) };
                sql.push(&format!(", {target} = {}", self.col(&t, c)));
            }
        };
        let join = self.key_join(&t);
        if varying.is_empty() {
            sql.push(&format!("UPDATE {t} SET "));
            set(&mut sql, false);
        } else if self.d == Dialect::MySql {
            // The batch's values first, then the table by its key (`STRAIGHT_JOIN` keeps that
            // order): the update reads, and so locks, only the batch's own rows, never those
            // of a batch begun after it (a multi-table update has no semi-consistent read).
            sql.push("UPDATE ");
            self.derived(&mut sql, &names, table);
            sql.push(&format!(" STRAIGHT_JOIN {t} ON {} SET ", join.join(" AND ")));
            set(&mut sql, true);
        } else {
            sql.push(&format!("UPDATE {t} SET "));
            set(&mut sql, false);
            sql.push(" FROM ");
            self.derived(&mut sql, &names, table);
        }
        sql.push(" WHERE ");
        if varying.is_empty() {
            let keys: Vec<Vec<Value>> = rows.iter().map(|(k, _)| k.clone()).collect();
            self.keys_in(&mut sql, &t, &keys);
            sql.push(" AND ");
        } else if self.d != Dialect::MySql {
            // The join with the batch's derived table already limits the rows to the batch.
            sql.push(&format!("{} AND ", join.join(" AND ")));
        }
        if let Some(r) = range {
            self.rows(&mut sql, &t, r);
            sql.push(" AND ");
        }
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql
    }

    /// The key's columns in a derived table of keys ([`Builder::derived`]): `k0`, `k1`, …
    fn key_names(&self) -> Vec<String> {
        (0..self.scope.key.len()).map(|j| format!("k{j}")).collect()
    }

    /// A key's cells in a derived table, each with its column's type.
    fn key_cells(&self, key: &[Value]) -> Vec<Cell<'_>> {
        key.iter().zip(&self.scope.key).map(|(v, k)| Cell::Key(v.clone(), self.scope.table.column(k))).collect()
    }

    /// The table's key equal to the derived table's (`t.id = v.k0`, …).
    fn key_join(&self, t: &str) -> Vec<String> {
        self.scope.key.iter().enumerate().map(|(j, k)| format!("{} = v.k{j}", self.col(t, k))).collect()
    }

    /// A derived table `v` with columns `names` and one row per entry of `rows`: `(VALUES ...)`
    /// on SQLite, arrays `unnest`ed on PostgreSQL, `(SELECT ... UNION ALL ...)` on MySQL. On
    /// MariaDB, where every cell has its column, a table value constructor after an empty head
    /// that reads the columns themselves (`SELECT id AS k0, email AS v0, 1 AS f0 FROM t WHERE
    /// 0 UNION ALL VALUES (...), ...`): a 5,000-way `UNION ALL` is 5,000 query blocks for its
    /// optimizer, and a bare `VALUES` sizes its columns by its first row (a longer value in a
    /// later row fails with "data too long"); the head gives them the catalog's types.
    fn derived(&self, sql: &mut Sql, names: &[String], rows: Vec<Vec<Cell>>) {
        let cells = |sql: &mut Sql, row: Vec<Cell>, named: bool| {
            for (i, c) in row.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                match c {
                    Cell::Key(v, info) => sql.bind_for(v, info, false),
                    Cell::Assign(v, info) => sql.bind_for(v, info, true),
                    Cell::Value(v) => sql.bind(v),
                    Cell::Flag(f) => sql.push(&f.to_string()),
                };
                if named {
                    sql.push(&format!(" AS {}", names[i]));
                }
            }
        };
        let head: Option<Vec<String>> = rows.first().filter(|_| self.mariadb).and_then(|r| {
            r.iter()
                .zip(names)
                .map(|(c, n)| match c {
                    Cell::Key(_, Some(i)) | Cell::Assign(_, Some(i)) => Some(format!("{} AS {n}", self.q(&i.name))),
                    Cell::Flag(_) => Some(format!("1 AS {n}")),
                    _ => None,
                })
                .collect()
        });
        match self.d {
            Dialect::MySql if head.is_some() => {
                let head = head.unwrap_or_default();
                sql.push(&format!("(SELECT {} FROM {} WHERE 0 UNION ALL VALUES ", head.join(", "), self.table()));
                for (i, row) in rows.into_iter().enumerate() {
                    sql.push(if i == 0 { "(" } else { ", (" });
                    cells(sql, row, false);
                    sql.push(")");
                }
                sql.push(") AS v");
            }
            Dialect::MySql => {
                sql.push("(");
                for (i, row) in rows.into_iter().enumerate() {
                    sql.push(if i == 0 { "SELECT " } else { " UNION ALL SELECT " });
                    cells(sql, row, i == 0);
                }
                sql.push(") AS v");
            }
            Dialect::Postgres if pg_arrays(&rows) => {
                // One array per column, `unnest`ed: a handful of parameters instead of one per
                // cell, so the statement is parsed and planned in a millisecond, not in tens.
                let ncols = names.len();
                let mut cols: Vec<(String, String)> = Vec::with_capacity(ncols);
                for i in 0..ncols {
                    let ty = match &rows[0][i] {
                        Cell::Key(_, Some(c)) | Cell::Assign(_, Some(c)) => c.sql_type.clone(),
                        Cell::Flag(_) => "integer".into(),
                        _ => "text".into(),
                    };
                    let mut literal = String::with_capacity(rows.len() * 16);
                    literal.push('{');
                    for (j, r) in rows.iter().enumerate() {
                        if j > 0 {
                            literal.push(',');
                        }
                        pg_array_item(&mut literal, &r[i]);
                    }
                    literal.push('}');
                    cols.push((literal, ty));
                }
                sql.push("unnest(");
                for (i, (literal, ty)) in cols.into_iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.push("CAST(");
                    sql.bind(Value::Text(literal));
                    sql.push(&format!(" AS {ty}[])"));
                }
                sql.push(&format!(") AS v({})", names.join(", ")));
            }
            Dialect::Postgres | Dialect::Sqlite => {
                if self.d == Dialect::Sqlite {
                    // SQLite names the columns of VALUES column1, column2…
                    let renamed: Vec<String> =
                        names.iter().enumerate().map(|(i, n)| format!("column{} AS {n}", i + 1)).collect();
                    sql.push(&format!("(SELECT {} FROM ", renamed.join(", ")));
                }
                sql.push("(VALUES ");
                for (i, row) in rows.into_iter().enumerate() {
                    sql.push(if i == 0 { "(" } else { ", (" });
                    cells(sql, row, false);
                    sql.push(")");
                }
                sql.push(")");
                if self.d == Dialect::Postgres {
                    sql.push(&format!(" AS v({})", names.join(", ")));
                } else {
                    sql.push(") AS v");
                }
            }
        }
    }

    // ---- anonymizing in the database ---------------------------------------------------------

    /// Whether the database can compute every new value of `cols` itself (see
    /// [`Builder::in_place_form`]): then an anonymizing batch is a lock read of its keys and one
    /// `UPDATE` that computes the values, instead of reading the values, computing them here and
    /// writing them back.
    pub fn in_place(&self, cols: &[(String, Strategy)]) -> bool {
        cols.iter().all(|(c, s)| self.in_place_form(c, s).is_some())
    }

    /// Strategy `s` on column `c` as SQL: the new value as an expression of the old one, and
    /// a guard that admits the values for which that expression gives exactly what
    /// `Strategy::apply` gives (`None`: every value). A batch with a value the guard refuses
    /// (an IPv6 address, a date stored in another shape) is computed in Rust instead. `None`
    /// when this database cannot compute the strategy on this column's type (keyed
    /// pseudonyms, buckets, a random token without a random source).
    ///
    /// Each form is the SQL spelling of `Strategy::apply`, case by case: NULL stays NULL; a
    /// random token that is already one is kept; an IPv4 address (canonical dotted quad, as
    /// Rust parses it) keeps its /24; a date keeps its year or month. A token's 32 hex digits
    /// come from the database's strong random source: 128 bits (MariaDB/MySQL `RANDOM_BYTES`,
    /// SQLite's ChaCha20 `randomblob`), or on PostgreSQL the 122 random bits of a version-4
    /// UUID (two of its digits are fixed); either way it links nothing.
    fn in_place_form(&self, c: &str, s: &Strategy) -> Option<InPlaceForm> {
        use Piece::{Bind, Sql as S};
        let info = self.scope.table.column(c)?;
        let kind = info.kind;
        let e = self.col(&self.table(), c);
        let d = self.d;
        let text_ok = kind == ColumnKind::Text && !(d == Dialect::Postgres && is_bpchar(info));
        // SQLite stores any value in any column: the Rust path sees its storage class.
        let lite_text = format!("typeof({e}) = 'text'");
        let form = |set: Vec<Piece>, guard: Option<Vec<Piece>>| Some(InPlaceForm { set, guard });
        match s {
            Strategy::Nullify => form(vec![S("NULL".into())], None),
            Strategy::Constant(l) => form(
                vec![
                    S(format!("CASE WHEN {e} IS NULL THEN NULL ELSE ")),
                    Bind(literal_value(l), Some(info.clone())),
                    S(" END".into()),
                ],
                None,
            ),
            Strategy::RandomToken if text_ok && self.db_random => {
                let (is_token, token) = match d {
                    Dialect::Postgres => (
                        format!("(LENGTH({e}) = 37 AND {e} ~ '^anon_[0-9a-fA-F]{{32}}$')"),
                        "'anon_' || replace(CAST(gen_random_uuid() AS text), '-', '')".to_string(),
                    ),
                    Dialect::MySql => (
                        format!("(CHAR_LENGTH({e}) = 37 AND CAST({e} AS BINARY) REGEXP '^anon_[0-9a-fA-F]{{32}}$')"),
                        "CONCAT('anon_', LOWER(HEX(RANDOM_BYTES(16))))".to_string(),
                    ),
                    Dialect::Sqlite => (
                        format!(
                            "({lite_text} AND LENGTH({e}) = 37 AND SUBSTR({e}, 1, 5) = 'anon_' AND SUBSTR({e}, 6) NOT GLOB '*[^0-9a-fA-F]*')"
                        ),
                        "'anon_' || lower(hex(randomblob(16)))".to_string(),
                    ),
                };
                form(vec![S(format!("CASE WHEN {e} IS NULL OR {is_token} THEN {e} ELSE {token} END"))], None)
            }
            Strategy::GeneralizeDate(unit) => {
                let (pg, my_date, my_time, len, lite_tail) = match unit {
                    DateUnit::Year => ("year", "%Y-01-01", "%Y-01-01 00:00:00", 4, "-01-01"),
                    DateUnit::Month => ("month", "%Y-%m-01", "%Y-%m-01 00:00:00", 7, "-01"),
                };
                match (d, kind) {
                    // `infinity`, which lapse cannot read, stays `infinity`.
                    (Dialect::Postgres, ColumnKind::Date) => {
                        form(vec![S(format!("CAST(date_trunc('{pg}', {e}) AS date)"))], None)
                    }
                    (Dialect::Postgres, ColumnKind::Timestamp { tz: false }) => {
                        form(vec![S(format!("date_trunc('{pg}', {e})"))], None)
                    }
                    (Dialect::MySql, ColumnKind::Date) => form(
                        vec![S(format!("CAST(DATE_FORMAT({e}, '{my_date}') AS DATE)"))],
                        Some(vec![S(format!("(YEAR({e}) > 0 AND MONTH({e}) > 0 AND DAYOFMONTH({e}) > 0)"))]),
                    ),
                    (Dialect::MySql, ColumnKind::Timestamp { tz: false }) => form(
                        vec![S(format!("CAST(DATE_FORMAT({e}, '{my_time}') AS DATETIME)"))],
                        Some(vec![S(format!("(YEAR({e}) > 0 AND MONTH({e}) > 0 AND DAYOFMONTH({e}) > 0)"))]),
                    ),
                    // Text in SQLite whatever the declared type (`truncate_text`): an ISO date,
                    // alone or followed by a time, keeps its shape. A time with a zone offset
                    // is generalized from its UTC date (`datetime`, which reads it as the
                    // anchor's `julianday` does), as what is written has none: never later.
                    (Dialect::Sqlite, _) => form(
                        vec![S(lite_generalize_date(&e, len, lite_tail))],
                        // `date` writes a date as `YYYY-MM-DD` and nothing else (a year before 1
                        // with a sign, longer): what reads back as itself is such a date (a
                        // `GLOB` for its shape before it cost a pattern match per row, for nothing).
                        Some(vec![S(lite_generalize_date_guard(&e))]),
                    ),
                    _ => None,
                }
            }
            Strategy::GeneralizeIp if text_ok => {
                // A canonical dotted quad: four decimal octets of 0–255 without leading zeros.
                const OCTET: &str = octet!();
                let pattern = format!("^{OCTET}(\\.{OCTET}){{3}}$");
                let last_octet_zero = format!("rtrim({e}, '0123456789') || '0'");
                let (text, len, op, set) = match d {
                    Dialect::Postgres => (String::new(), "LENGTH", "~", last_octet_zero),
                    Dialect::MySql => {
                        (String::new(), "CHAR_LENGTH", "REGEXP", format!("CONCAT(SUBSTRING_INDEX({e}, '.', 3), '.0')"))
                    }
                    // `REGEXP` is the `regex` crate's, registered on every connection of the
                    // pool (`SqliteConnectOptions::with_regexp`). It sees only text of digits
                    // and dots: SQLite keeps any type in any column, and text that is not UTF-8
                    // would fail the statement there.
                    Dialect::Sqlite => {
                        (format!("{lite_text} AND {e} NOT GLOB '*[^0-9.]*' AND "), "LENGTH", "REGEXP", last_octet_zero)
                    }
                };
                form(
                    vec![S(set)],
                    Some(vec![
                        S(format!("({text}{len}({e}) <= 15 AND {e} {op} ")),
                        Bind(Value::Text(pattern), None),
                        S(")".into()),
                    ]),
                )
            }
            Strategy::KeepPrefix(n) if text_ok => match d {
                Dialect::Postgres => form(vec![S(format!("left({e}, {n})"))], None),
                Dialect::MySql => form(vec![S(format!("LEFT({e}, {n})"))], None),
                Dialect::Sqlite => form(vec![S(format!("SUBSTR({e}, 1, {n})"))], Some(vec![S(lite_text)])),
            },
            _ => None,
        }
    }

    /// The next `limit` due rows after `after` in key order, as [`Builder::lock_next`], without
    /// their values: the keys, the subject if the scope has one, then (when a strategy has a
    /// guard) 1 if the database computes every new value of the row exactly, else 0. Locked
    /// (`FOR UPDATE`; on SQLite the transaction's write lock does it).
    pub fn next_in_place(
        &self,
        after: Option<&[Value]>,
        limit: usize,
        bounds: Option<&(Value, Value)>,
        cols: &[(String, Strategy)],
    ) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        self.next_select(&mut sql);
        sql.push(&self.key_and_subject(&t).join(", "));
        let guards = self.guards(cols);
        if !guards.is_empty() {
            sql.push(", ");
            self.guard(&mut sql, &t, guards);
        }
        sql.push(&format!(" FROM {t} WHERE "));
        self.next_locked(&mut sql, after, limit, bounds);
        sql
    }

    /// The guards of the in-place forms of `cols` that have one, by column.
    fn guards(&self, cols: &[(String, Strategy)]) -> Vec<(String, Vec<Piece>)> {
        cols.iter().filter_map(|(c, s)| Some((c.clone(), self.in_place_form(c, s)?.guard?))).collect()
    }

    /// `CASE WHEN … THEN 1 ELSE 0 END`: whether the database computes every new value of the
    /// row exactly (each column NULL or admitted by its form's guard).
    fn guard(&self, sql: &mut Sql, qual: &str, guards: Vec<(String, Vec<Piece>)>) {
        sql.push("CASE WHEN ");
        for (i, (c, guard)) in guards.into_iter().enumerate() {
            if i > 0 {
                sql.push(" AND ");
            }
            sql.push(&format!("({} IS NULL OR ", self.col(qual, &c)));
            render(sql, guard);
            sql.push(")");
        }
        sql.push(" THEN 1 ELSE 0 END");
    }

    /// Anonymizes a batch read and locked by [`Builder::next_in_place`] in the database: every
    /// column of `cols` set to its form's expression, for the batch's rows (`keys`, in key order)
    /// that still pass the destroy filter (a row that became held since it was read is not
    /// updated; the caller compares the count). Only the batch's own rows: over its key range
    /// with the filter alone, a hold that moved from a held row of the range to a row of the
    /// batch left the count as it was and the evidence naming the wrong row. PostgreSQL: joined
    /// with the batch's keys (`unnest`, one array); MariaDB: by the batch's keys (a single-table
    /// update of rows it has locked, which never waits for the rows of the batch begun after
    /// it); SQLite: over the key range (its batches read and update under one write lock: no
    /// hold moves between them).
    pub fn update_in_place(&self, cols: &[(String, Strategy)], keys: &[Vec<Value>]) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        self.set_in_place(&mut sql, cols);
        match (self.d, keys.first(), keys.last()) {
            (Dialect::Sqlite, Some(first), Some(last)) => {
                sql.push(" WHERE ");
                self.rows(&mut sql, &t, Rows::Range(first, last));
            }
            (Dialect::Postgres, Some(first), Some(last)) => {
                sql.push(" FROM ");
                self.derived(&mut sql, &self.key_names(), keys.iter().map(|k| self.key_cells(k)).collect());
                sql.push(&format!(" WHERE {} AND ", self.key_join(&t).join(" AND ")));
                self.rows(&mut sql, &t, Rows::Range(first, last));
            }
            (_, Some(first), Some(last)) => {
                // The range for the optimizer; the batch's keys tested on each row of it (as
                // `(… IN …) = 1`, a test the range optimizer does not make 5,000 point ranges of).
                sql.push(" WHERE ");
                self.rows(&mut sql, &t, Rows::Range(first, last));
                sql.push(" AND (");
                self.keys_in(&mut sql, &t, keys);
                sql.push(") = 1");
            }
            _ => {
                sql.push(" WHERE ");
                self.keys_in(&mut sql, &t, keys);
            }
        }
        sql.push(" AND ");
        self.filter(&mut sql, &self.scope.destroy_filter(), &t);
        sql
    }

    /// [`Builder::update_in_place`] of the rows whose integer key is in `keys` and whose values
    /// the guards admit (those of [`Builder::next_in_place`], tested here instead of in the
    /// read), without testing `destroy_filter` again (SQLite; as [`Builder::delete_listed`],
    /// for a batch [`Builder::select_next_packed`] read in the same transaction, or ahead with
    /// nothing committed since). The caller
    /// compares the count with the batch's: a row left out has a value only Rust computes
    /// exactly (or the database kept it).
    pub fn update_listed(&self, cols: &[(String, Strategy)], keys: &[i64], others: Option<&[i64]>) -> Sql {
        let mut sql = Sql::new(self.d);
        let t = self.table();
        self.set_in_place(&mut sql, cols);
        self.listed(&mut sql, &t, keys, others);
        let guards = self.guards(cols);
        if !guards.is_empty() {
            sql.push(" AND ");
            self.guard(&mut sql, &t, guards);
            sql.push(" = 1");
        }
        sql
    }

    /// `UPDATE t SET` each column of `cols` to its form's expression.
    fn set_in_place(&self, sql: &mut Sql, cols: &[(String, Strategy)]) {
        sql.push(&format!("UPDATE {} SET ", self.table()));
        for (i, (c, s)) in cols.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(&format!("{} = ", self.q(c)));
            let form = self.in_place_form(c, s).expect("in_place checked by the caller");
            render(sql, form.set);
        }
        let set: Vec<&String> = cols.iter().map(|(c, _)| c).collect();
        for c in self.anchors_kept_in_place(set) {
            sql.push(&format!(", {0} = {0}", self.q(c)));
        }
    }

    /// The anchors an `UPDATE` of `set` would move: MariaDB/MySQL's `ON UPDATE
    /// CURRENT_TIMESTAMP` columns a purpose counts from, which the statement sets to themselves
    /// (the database then leaves them). Before, anonymizing a field set its record's anchor to
    /// the run's time, and the record lapsed a whole period late (found by a review).
    fn anchors_kept_in_place<S: AsRef<str>>(&self, set: impl IntoIterator<Item = S>) -> Vec<&str> {
        let set: Vec<S> = set.into_iter().collect();
        self.scope
            .table
            .columns
            .iter()
            .filter(|c| c.on_update && self.is_anchor(&c.name) && !set.iter().any(|s| s.as_ref() == c.name))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// ` WHERE key IN (…)`: the integer keys `keys` (in order) as one bound JSON array
    /// (`json_each`); with `others` (the keys between the first and the last of `keys` that are
    /// not in it), ` WHERE key >= first AND key <= last AND key NOT IN (others)`.
    fn listed(&self, sql: &mut Sql, qual: &str, keys: &[i64], others: Option<&[i64]>) {
        let key = self.col(qual, &self.scope.key[0]);
        let json = |keys: &[i64]| {
            let mut list = String::with_capacity(keys.len() * 8 + 2);
            list.push('[');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                list.push_str(&k.to_string());
            }
            list.push(']');
            Value::Text(list)
        };
        match (others, keys.first(), keys.last()) {
            (Some(others), Some(&first), Some(&last)) => {
                sql.push(&format!(" WHERE {key} >= "));
                sql.bind(Value::Int(first));
                sql.push(&format!(" AND {key} <= "));
                sql.bind(Value::Int(last));
                sql.push(&format!(" AND {key} NOT IN (SELECT value FROM json_each("));
                sql.bind(json(others));
                sql.push("))");
            }
            _ => {
                sql.push(&format!(" WHERE {key} IN (SELECT value FROM json_each("));
                sql.bind(json(keys));
                sql.push("))");
            }
        }
    }

    // ---- journal ------------------------------------------------------------------------------

    /// 1 when some value of `column` reads as a time (`time_expr`) or none is there, else 0:
    /// stops at the first time it finds.
    pub fn anchor_readable(&self, column: &str) -> String {
        let t = self.table();
        format!(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM {t} x WHERE {} IS NOT NULL) THEN 1 \
             WHEN EXISTS (SELECT 1 FROM {t} x WHERE {} IS NOT NULL) THEN 0 ELSE 1 END",
            self.time_expr("x", column),
            self.col("x", column)
        )
    }

    /// The journal: one row per committed batch, its records' keyed hashes in one value, 32
    /// bytes each (a batch of thousands is one short insert, where a row per record cost as much
    /// as the deletion itself; bytes, not hex text, halve what is sent and stored).
    pub fn journal_create(&self) -> String {
        let bytes = match self.d {
            Dialect::Postgres => "BYTEA",
            Dialect::MySql => "LONGBLOB",
            Dialect::Sqlite => "BLOB",
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (run_id VARCHAR(64) NOT NULL, policy VARCHAR(128) NOT NULL, stage VARCHAR(128) NOT NULL, action VARCHAR(32) NOT NULL, batch_no BIGINT NOT NULL, record_count BIGINT NOT NULL, records {bytes} NOT NULL, subjects {bytes} NOT NULL, committed_at VARCHAR(40) NOT NULL)",
            self.q(self.journal_table)
        )
    }

    /// PostgreSQL: the record lists are stored uncompressed (keyed hashes do not compress, and
    /// trying to costs more than writing them: 28 ms against 6 ms for a batch of 5,000).
    pub fn journal_storage(&self) -> Option<String> {
        (self.d == Dialect::Postgres).then(|| {
            format!(
                "ALTER TABLE {} ALTER COLUMN records SET STORAGE EXTERNAL, ALTER COLUMN subjects SET STORAGE EXTERNAL",
                self.q(self.journal_table)
            )
        })
    }

    /// The journal row of one committed batch: `constants` are run, policy, stage, action and
    /// commit time; `records` and `subjects` the batch's `count` keyed hashes in the same order,
    /// as the table stores them (bytes, or comma-separated hex text).
    pub fn journal_insert_batch(
        &self,
        constants: &[Value; 5],
        batch: u64,
        count: usize,
        records: Value,
        subjects: Value,
    ) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push(&format!(
            "INSERT INTO {} (run_id, policy, stage, action, batch_no, record_count, records, subjects, committed_at) VALUES (",
            self.q(self.journal_table)
        ));
        for v in &constants[..4] {
            sql.bind(v.clone());
            sql.push(", ");
        }
        sql.bind(Value::Int(batch as i64));
        sql.push(", ");
        sql.bind(Value::Int(count as i64));
        sql.push(", ");
        sql.bind(records);
        sql.push(", ");
        sql.bind(subjects);
        sql.push(", ");
        sql.bind(constants[4].clone());
        sql.push(")");
        sql
    }

    /// The batches of `policy` journaled by runs whose id starts with `run_prefix` (hex digits
    /// only, checked by the caller), committed at or after `since` (RFC 3339 text, as written).
    pub fn journal_batches(&self, policy: &str, run_prefix: &str, since: &str) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push(&format!(
            "SELECT run_id, stage, action, batch_no, record_count, committed_at FROM {} WHERE policy = ",
            self.q(self.journal_table)
        ));
        sql.bind(Value::Text(policy.to_string()));
        sql.push(" AND run_id LIKE ");
        sql.bind(Value::Text(format!("{run_prefix}%")));
        sql.push(" AND committed_at >= ");
        sql.bind(Value::Text(since.to_string()));
        sql.push(" ORDER BY run_id, stage, batch_no");
        sql
    }

    /// The policies the journal names in batches of runs whose id starts with `run_prefix`,
    /// committed at or after `since`.
    pub fn journal_policies(&self, run_prefix: &str, since: &str) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push(&format!("SELECT DISTINCT policy FROM {} WHERE run_id LIKE ", self.q(self.journal_table)));
        sql.bind(Value::Text(format!("{run_prefix}%")));
        sql.push(" AND committed_at >= ");
        sql.bind(Value::Text(since.to_string()));
        sql
    }

    /// The record and subject lists of one journaled batch.
    pub fn journal_batch_ids(&self, policy: &str, run_id: &str, stage: &str, batch: u64) -> Sql {
        let mut sql = Sql::new(self.d);
        sql.push(&format!("SELECT records, subjects FROM {} WHERE run_id = ", self.q(self.journal_table)));
        sql.bind(Value::Text(run_id.to_string()));
        sql.push(" AND policy = ");
        sql.bind(Value::Text(policy.to_string()));
        sql.push(" AND stage = ");
        sql.bind(Value::Text(stage.to_string()));
        sql.push(" AND batch_no = ");
        sql.bind(Value::Int(batch as i64));
        sql
    }

    /// A journal table of the earlier per-record shape (`record`, `subject` columns, no
    /// `records`), still written in its own shape. One journal row per record: the batch's constants (run, policy, stage, action, commit
    /// time) are bound once; records and subjects come from a derived table.
    pub fn journal_insert_rows(&self, constants: &[Value; 5], records: &[(Value, Value)]) -> Sql {
        let mut sql = Sql::new(self.d);
        if self.d == Dialect::MySql {
            // MySQL/MariaDB have no named-column VALUES table and a derived UNION ALL of the
            // batch is slow there: plain rows.
            sql.push(&format!(
                "INSERT INTO {} (run_id, policy, stage, action, record, subject, committed_at) VALUES ",
                self.q(self.journal_table)
            ));
            for (i, (r, s)) in records.iter().enumerate() {
                sql.push(if i > 0 { ", (" } else { "(" });
                for v in constants[..4].iter().chain([r, s, &constants[4]]) {
                    sql.bind(v.clone());
                    sql.push(", ");
                }
                sql.text.truncate(sql.text.len() - 2);
                sql.push(")");
            }
            return sql;
        }
        if self.d == Dialect::Postgres && records.iter().all(|(r, s)| is_hex(r) && (is_hex(s) || s.is_null())) {
            // Two bound parameters for the whole batch instead of two per record (parsing and
            // binding thousands of parameters costs more than the insert): the records and the
            // subjects, each a comma-separated list of hex digests (an absent subject is empty).
            sql.push(&format!(
                "INSERT INTO {} (run_id, policy, stage, action, record, subject, committed_at) SELECT ",
                self.q(self.journal_table)
            ));
            for v in &constants[..4] {
                self.bind_text(&mut sql, v.clone());
                sql.push(", ");
            }
            sql.push("v.record, NULLIF(v.subject, ''), ");
            self.bind_text(&mut sql, constants[4].clone());
            sql.push(" FROM unnest(string_to_array(");
            sql.bind(hash_list(records, |x| &x.0));
            sql.push(", ','), string_to_array(");
            sql.bind(hash_list(records, |x| &x.1));
            sql.push(", ',')) AS v(record, subject)");
            return sql;
        }
        sql.push(&format!(
            "INSERT INTO {} (run_id, policy, stage, action, record, subject, committed_at) SELECT ",
            self.q(self.journal_table)
        ));
        for (i, v) in constants[..4].iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            self.bind_text(&mut sql, v.clone());
        }
        sql.push(", v.record, v.subject, ");
        self.bind_text(&mut sql, constants[4].clone());
        sql.push(" FROM ");
        let rows: Vec<Vec<Cell>> =
            records.iter().map(|(r, s)| vec![Cell::Value(r.clone()), Cell::Value(s.clone())]).collect();
        self.derived(&mut sql, &["record".into(), "subject".into()], rows);
        sql
    }

    /// A text parameter in a select list (PostgreSQL cannot infer its type there otherwise).
    fn bind_text(&self, sql: &mut Sql, v: Value) {
        if self.d == Dialect::Postgres {
            sql.push("CAST(");
            sql.bind(v);
            sql.push(" AS TEXT)");
        } else {
            sql.bind(v);
        }
    }
}

/// Whether every value a column of this kind can hold has a PostgreSQL array literal form
/// ([`pg_arrays`] then holds for a batch of such columns, whatever their values): the catalog's
/// side of that test, for sizing batches before any value is read (`max_batch`).
pub fn pg_array_kind(kind: ColumnKind) -> bool {
    !matches!(kind, ColumnKind::Float | ColumnKind::Bytes)
}

/// Whether a derived table can be sent to PostgreSQL as one array per column: every column's
/// type is known (the same in every row) and every value has an array literal form.
fn pg_arrays(rows: &[Vec<Cell>]) -> bool {
    let Some(first) = rows.first() else { return false };
    let typed = |c: &Cell| match c {
        Cell::Key(_, info) | Cell::Assign(_, info) => info.is_some(),
        Cell::Flag(_) | Cell::Value(_) => true,
    };
    first.iter().all(typed)
        && rows.iter().flatten().all(|c| match c {
            Cell::Key(v, _) | Cell::Assign(v, _) | Cell::Value(v) => match v {
                Value::Bytes(_) => false,
                Value::Float(f) => f.is_finite(),
                _ => true,
            },
            Cell::Flag(_) => true,
        })
}

/// One element of a PostgreSQL array literal (`{…}`): NULL, a number, or a double-quoted text
/// with `"` and `\` escaped. Read by the column type's own input function, like a bound text.
fn pg_array_item(out: &mut String, c: &Cell) {
    use std::fmt::Write as _;
    let v = match c {
        Cell::Key(v, _) | Cell::Assign(v, _) | Cell::Value(v) => v,
        Cell::Flag(f) => {
            let _ = write!(out, "{f}");
            return;
        }
    };
    let quoted = |out: &mut String, t: &str| {
        out.push('"');
        for ch in t.chars() {
            if ch == '\\' || ch == '"' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    };
    let _ = match v {
        Value::Null => write!(out, "NULL"),
        Value::Int(i) => write!(out, "{i}"),
        Value::Float(f) => write!(out, "{f}"),
        Value::Bool(b) => write!(out, "{}", if *b { "t" } else { "f" }),
        Value::Text(t) => {
            quoted(out, t);
            Ok(())
        }
        // Dates and times hold no character that needs escaping.
        Value::Timestamp(t) => write!(out, "\"{}\"", t.format("%Y-%m-%d %H:%M:%S%.f")),
        Value::Date(d) => write!(out, "\"{d}\""),
        Value::Bytes(_) => unreachable!("pg_arrays excludes bytes"),
    };
}

/// One column of a batch's journal entries (records or subjects) as one comma-separated text, in
/// batch order; a non-text entry (an absent subject) is empty.
fn hash_list(records: &[(Value, Value)], column: impl Fn(&(Value, Value)) -> &Value) -> Value {
    let texts: Vec<&str> = records
        .iter()
        .map(|x| match column(x) {
            Value::Text(t) => t.as_str(),
            _ => "",
        })
        .collect();
    Value::Text(texts.join(","))
}

/// A non-empty text of hex digits (an evidence digest).
fn is_hex(v: &Value) -> bool {
    matches!(v, Value::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The subjects of a batch read as one row ([`Builder::select_next_packed`],
/// [`Builder::delete_next_packed`]): none, a list of their own, or the keys themselves
/// (`Scope::subject_is_key`: the statement returns the list once).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Subjects {
    None,
    Listed,
    Keys,
}

impl Subjects {
    pub fn of(scope: &Scope) -> Subjects {
        match &scope.subject {
            None => Subjects::None,
            Some(_) if scope.subject_is_key() => Subjects::Keys,
            Some(_) => Subjects::Listed,
        }
    }
}

/// Which rows a statement reads: these keys, or every key in a range (inclusive, in the
/// database's key order; cheaper than an `IN` list of a batch that is contiguous in it).
#[derive(Debug, Clone, Copy)]
pub enum Rows<'k> {
    Keys(&'k [Vec<Value>]),
    Range(&'k [Value], &'k [Value]),
}

/// One cell of a derived table.
/// A strategy's SQL (`Builder::in_place_form`).
struct InPlaceForm {
    set: Vec<Piece>,
    guard: Option<Vec<Piece>>,
}

/// A piece of SQL text, or a value bound as a parameter (assigned to its column, when given).
enum Piece {
    Sql(String),
    Bind(Value, Option<crate::connector::ColumnInfo>),
}

fn render(sql: &mut Sql, pieces: Vec<Piece>) {
    for p in pieces {
        match p {
            Piece::Sql(s) => {
                sql.push(&s);
            }
            Piece::Bind(v, col) => {
                sql.bind_for(v, col.as_ref(), col.is_some());
            }
        }
    }
}

enum Cell<'a> {
    /// A key value, compared with its column.
    Key(Value, Option<&'a crate::connector::ColumnInfo>),
    /// A value assigned to its column.
    Assign(Value, Option<&'a crate::connector::ColumnInfo>),
    Value(Value),
    /// A literal 0/1 flag (not data).
    Flag(u8),
}

/// A date and a time of day written without a zone, in the shapes `when:` takes
/// (`2024-06-30 12:00:00`, `2024-06-30T12:00:00.5`; `condition::is_time_literal`).
fn text_date_time(t: &str) -> Option<chrono::NaiveDateTime> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t.trim(), f).ok())
}

/// MariaDB/MySQL: whether a date or time `e` is the zero date or a partial one (`2023-00-00`,
/// `2023-06-00`, which MariaDB stores outside `NO_ZERO_IN_DATE`): no moment the database can
/// compare; each sorts before every date it could mean.
fn my_partial(e: &str) -> String {
    format!("(YEAR({e}) = 0 OR MONTH({e}) = 0 OR DAYOFMONTH({e}) = 0)")
}

/// MariaDB/MySQL's zero date (`0000-00-00`, at any time of day): "no date".
fn my_zero(e: &str) -> String {
    format!("(YEAR({e}) = 0 AND MONTH({e}) = 0 AND DAYOFMONTH({e}) = 0)")
}

/// SQLite: empty text, or spaces only: "no date".
fn lite_blank(e: &str) -> String {
    format!("(typeof({e}) = 'text' AND TRIM({e}) = '')")
}

/// `0001-01-01` (at midnight unless `date_only`): MariaDB/MySQL's zero years sort before it.
fn year_one(date_only: bool) -> Value {
    let day = chrono::NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or_default();
    match date_only {
        true => Value::Date(day),
        false => Value::Timestamp(day.and_time(chrono::NaiveTime::MIN)),
    }
}

/// MariaDB/MySQL order a `DATE` or `DATETIME` by year, month, day and time, zero parts
/// included: a date with a zero month sorts after every date of the year before and before
/// the year's `01-01`, one with a zero day (or a day past the month's end, which only
/// `ALLOW_INVALID_DATES` stores) after the month before and before the month's `01`, and one
/// with a zero year before `0001-01-01`. So every zero or partial date of the years `from` to
/// `to` lies strictly between the bounds of one of these pairs (a month's last day, at
/// 23:59:59 for a `DATETIME`, and the next month's first, at midnight), and no whole date
/// does but a `DATETIME(n)` in the last second of a month, which the test of the zero parts
/// then leaves out. The bounds are whole seconds, which no conversion to the column's
/// precision rounds. Year 1's zero month and January's zero day sort before `0001-01-01`:
/// not repeated here.
pub(crate) fn zero_date_gaps(from: i32, to: i32, date_only: bool) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for year in from.max(1)..=to {
        for month in 1..=12u32 {
            if year == 1 && month == 1 {
                continue;
            }
            let Some(first) = chrono::NaiveDate::from_ymd_opt(year, month, 1) else { continue };
            let Some(last) = first.pred_opt() else { continue };
            out.push(match date_only {
                true => (Value::Date(last), Value::Date(first)),
                false => (
                    Value::Timestamp(last.and_hms_opt(23, 59, 59).unwrap_or_default()),
                    Value::Timestamp(first.and_time(chrono::NaiveTime::MIN)),
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value compared with a column is cast to its type without the modifier (which would
    /// round or cut the value), and a decimal subject is a plain number only.
    #[test]
    fn comparison_types_drop_their_modifier() {
        assert_eq!(comparison_type("numeric(10,0)"), "numeric");
        assert_eq!(comparison_type("character(6)"), "bpchar");
        assert_eq!(comparison_type("character varying(20)"), "character varying");
        assert_eq!(comparison_type("timestamp(0) without time zone"), "timestamp without time zone");
        assert_eq!(comparison_type("time(3) with time zone"), "time with time zone");
        assert_eq!(comparison_type("bit(3)"), "bit varying");
        assert_eq!(comparison_type("uuid"), "uuid");
        assert_eq!(comparison_type("character(6)[]"), "bpchar[]");
        assert_eq!(comparison_type("numeric(4,1)[]"), "numeric[]");
        assert_eq!(decimal_subject(&Value::Text(" 42.00 ".into())).as_deref(), Some("42.00"));
        assert_eq!(decimal_subject(&Value::Int(-7)).as_deref(), Some("-7"));
        for not in ["4e2", "0x2A", "", ".5", "1.2.3", "S-42"] {
            assert_eq!(decimal_subject(&Value::Text(not.into())), None, "{not}");
        }
    }

    /// `IP_NETWORK` admits exactly what `generalize_ip` writes: every address's network, and
    /// no address that is not one (its test of what is left to do must not pass them).
    #[test]
    fn ip_network_is_what_generalize_ip_writes() {
        let re = regex::Regex::new(&ip_done("$")).unwrap();
        let ip = |s: &str| Strategy::GeneralizeIp.apply(&Value::Text(s.into()), None).unwrap();
        for a in [
            "192.168.17.42",
            "0.0.0.7",
            "255.255.255.255",
            "10.1.2.3/32",
            "203.0.113.7/255.255.255.0",
            "::ffff:10.1.2.3",
            "2001:db8:abcd:12::1",
            "2001:0:c:1::1",
            "0:0:0:0:0:0:0:1",
            "::1",
            "fe80::1/64",
            "2001:db8::",
            "1:2:3:4:5:6:7:8",
            "2002:cb00:7107::1",
            "2002:cb00:7107:42:a:b:c:d",
            "2002:cb00:7::1",
            "2002::1",
            "2003:1:2:3::1",
            "200f:1:2::1",
        ] {
            let net = match ip(a) {
                Some(Value::Text(n)) => n,
                None => a.to_string(),
                other => panic!("{a}: {other:?}"),
            };
            assert!(re.is_match(&net), "{a} -> {net}");
            assert_eq!(ip(&net), None, "{net} is done");
        }
        for not_done in [
            "203.0.113.7",
            "198.51.100.23, 10.0.0.0",
            "010.1.2.0",
            "256.1.2.0",
            " 10.1.2.0",
            "10.1.2.0 ",
            "::FFFF:1.2.3.0",
            "2001:DB8::",
            "2001:0db8::",
            "foo::",
            "203.0.113.7/255.255.255.0",
            "10.1.2.0\n",
            "10.0.0.0/8, 203.0.113.7",
            "10.1.2.0/24\n203.0.113.7",
            "1:2:3:4::",
            "anon_10.0.0.0",
            // A 6to4 address's /48 keeps its whole IPv4 address (what generalize_ip wrote before).
            "2002:cb00:7107::",
            "2002:cb00:71::",
        ] {
            assert!(!re.is_match(not_done), "{not_done}");
        }
    }

    /// The ranges between months where MariaDB's partial dates sort: from each month's last
    /// second (or day) to the next month's first instant, February's end in a leap year
    /// included; year 1 without its January (before `0001-01-01`).
    #[test]
    fn zero_date_gaps_lie_between_months() {
        let at = |s: &str| Value::Timestamp(chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap());
        let day = |s: &str| Value::Date(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap());
        let gaps = zero_date_gaps(1, 2, false);
        assert_eq!(gaps.len(), 11 + 12);
        assert_eq!(gaps[0], (at("0001-01-31 23:59:59"), at("0001-02-01 00:00:00")));
        assert_eq!(gaps[11], (at("0001-12-31 23:59:59"), at("0002-01-01 00:00:00")));
        let leap = zero_date_gaps(2020, 2020, true);
        assert_eq!(leap[0], (day("2019-12-31"), day("2020-01-01")));
        assert_eq!(leap[2], (day("2020-02-29"), day("2020-03-01")));
        assert_eq!(leap[11], (day("2020-11-30"), day("2020-12-01")));
        assert!(zero_date_gaps(1, 0, false).is_empty(), "no year from 1 on: no range");
    }

    #[test]
    fn quoting_neutralizes_hostile_identifiers() {
        assert_eq!(Dialect::Postgres.quote("users\"; DROP TABLE x; --"), "\"users\"\"; DROP TABLE x; --\"");
        assert_eq!(Dialect::MySql.quote("a`b"), "`a``b`");
        assert_eq!(Dialect::Sqlite.quote("s.t"), "\"s\".\"t\"");
    }

    /// The range `lite_lapsed_range` adds before SQLite's lapsed test takes no lapsed anchor
    /// away, in SQLite itself (the library lapse links): every value that `time_expr` reads as
    /// at or before the threshold is in it, over columns of every affinity and built-in
    /// collation, with zone offsets, `T` and `24:00`, days past the month's end, numbers and
    /// blobs, around thresholds at month and year ends.
    #[tokio::test]
    async fn sqlite_lapsed_range_keeps_every_lapsed_anchor() {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let columns = ["DATETIME", "TEXT", "TEXT COLLATE NOCASE", "TEXT COLLATE RTRIM", "", "INTEGER", "REAL"];
        let defs: Vec<String> = columns.iter().enumerate().map(|(i, t)| format!("c{i} {t}")).collect();
        sqlx::query(&format!("CREATE TABLE t (id INTEGER PRIMARY KEY, {})", defs.join(", ")))
            .execute(&pool)
            .await
            .unwrap();
        for i in 0..columns.len() {
            sqlx::query(&format!("CREATE INDEX t_c{i} ON t (c{i})")).execute(&pool).await.unwrap();
        }
        let thresholds = [
            "2022-12-31 23:59:59.999",
            "2023-01-01 00:00:00",
            "2024-02-29 12:00:00",
            "9999-12-29 00:00:00",
            "9999-12-30 00:00:00",
        ];
        let mut values: Vec<String> = Vec::new();
        for th in thresholds {
            let t = chrono::NaiveDateTime::parse_from_str(th, "%Y-%m-%d %H:%M:%S%.f").unwrap().and_utc();
            for days in -3i64..=3 {
                for secs in [0i64, 1, 3599, 43_200, 86_399] {
                    let Some(x) = t.checked_add_signed(chrono::Duration::seconds(days * 86_400 + secs - 43_200)) else {
                        continue;
                    };
                    let d = x.format("%Y-%m-%d").to_string();
                    let hms = x.format("%H:%M:%S").to_string();
                    values.push(format!("'{d} {hms}'"));
                    values.push(format!("'{d}T{hms}Z'"));
                    values.push(format!("'{d}'"));
                    values.push(format!("'{d}   {hms}.123'"));
                    for off in ["+14:59", "+14:00", "+01:00", "-01:00", "-14:00", "-14:59"] {
                        values.push(format!("'{d} {hms}{off}'"));
                        values.push(format!("'{d}T{hms}{off}'"));
                    }
                    values.push(format!("'{d} 24:00:00'"));
                    values.push(format!("'{d} {hms} garbage'"));
                    values.push(format!("' {d} {hms}'"));
                    values.push(format!("X'{}'", hex(&format!("{d} {hms}"))));
                    values.push(x.timestamp().to_string());
                    values.push(format!("{}.5", x.timestamp()));
                    let jd = x.timestamp() as f64 / 86_400.0 + 2_440_587.5;
                    values.push(format!("{jd:?}"));
                    values.push(format!("'{jd:?}'"));
                    // A day past the month's end: SQLite reads it as a day of the next month.
                    values.push(format!("'{}-31 {hms}'", x.format("%Y-%m")));
                    values.push(format!("'{}-31 {hms}+14:59'", x.format("%Y-%m")));
                }
            }
        }
        values.extend(
            ["'now'", "'12:30'", "'12:30-05:00'", "'-2022-12-31'", "'2019'", "20221231", "0", "''", "X''"]
                .map(String::from),
        );
        for v in &values {
            let all = vec![v.as_str(); columns.len()].join(", ");
            sqlx::query(&format!(
                "INSERT INTO t ({}) VALUES ({all})",
                (0..columns.len()).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ")
            ))
            .execute(&pool)
            .await
            .unwrap();
        }
        let mut lapsed_seen = 0i64;
        for th in thresholds {
            let t = chrono::NaiveDateTime::parse_from_str(th, "%Y-%m-%d %H:%M:%S%.f").unwrap().and_utc();
            let upper = lite_lapsed_range(t);
            if th.starts_with("9999-12-30") {
                assert_eq!(upper, None, "no range past year 9999");
                continue;
            }
            let upper = upper.unwrap();
            for (i, column) in columns.iter().enumerate() {
                let c = format!("t.c{i}");
                let lapsed = format!("COALESCE({} <= julianday(?), 1=0)", lite_time_expr(&c));
                let sql = format!(
                    "SELECT COALESCE(SUM({lapsed}), 0), COALESCE(SUM({lapsed} AND NOT {c} < ?), 0), \
                     (SELECT COUNT(*) FROM t INDEXED BY t_c{i} WHERE {c} < ? AND {lapsed}) FROM t"
                );
                let row = sqlx::query(&sql)
                    .bind(th)
                    .bind(th)
                    .bind(&upper)
                    .bind(&upper)
                    .bind(th)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let (lapsed_n, outside, through_index): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                assert_eq!(outside, 0, "column {column}: {outside} lapsed anchors outside the range before {upper}");
                assert_eq!(
                    through_index, lapsed_n,
                    "column {column}: the range through the index finds every lapsed anchor"
                );
                lapsed_seen += lapsed_n;
            }
        }
        assert!(lapsed_seen > 1000, "the values straddle the thresholds ({lapsed_seen} lapsed)");
    }

    /// SQLite's `generalize_date` of text writes what `Strategy::apply` writes wherever its
    /// guard admits the value, and neither ever writes a value that reads as later than the one
    /// it replaces: SQLite's own reading of times (any whitespace or `T`s before the time,
    /// whitespace around the offset, offsets to 14:59, fractions as doubles summed in C's
    /// order, text up to its first NUL) is Rust's too. Values the guard leaves to Rust (years
    /// 0000 and 9999 with a time, fractions past 64 characters, no date) are generalized or
    /// refused there, as expected of each, never later either. Every value written reads as a
    /// date, counts as done (`lite_not_truncated`) and is left as it is by a second pass. In
    /// columns of no affinity, `TEXT` and `DATETIME` (numeric affinity) alike.
    #[tokio::test]
    async fn sqlite_generalized_dates_are_what_rust_writes_and_never_later() {
        use sqlx::Row;
        #[derive(Debug, PartialEq)]
        enum Path {
            Sql,
            Rust,
            Refused,
        }
        use Path::*;
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let fraction = |digits: String| format!("2021-06-01 02:00:00.{digits}+05:00");
        let mut values: Vec<(String, Path)> = [
            "2021-06-01",
            "2021-06-01 02:00",
            "2021-06-01 00:00",
            "2021-06-01 02:00Z",
            "2021-06-01 02:00:00",
            "2021-06-01 02:00:00+05:00",
            "2021-06-01T02:00+05:00",
            "2021-06-01T02:00:00.123456+05:00",
            "2021-06-01 02:00:00 +05:00",
            "2021-06-01  02:00:00+05:00",
            "2021-06-01 02:00:00+05:00 ",
            "2021-05-31 22:00:00.5 -05:00",
            "2021-05-31 24:00:00+05:00",
            "2021-05-31 24:00:00",
            "2021-05-31 24:30:00",
            "2021-05-31 24:00:01",
            "2021-05-31 23:59:59.9999",
            "2021-05-31 23:59:59.9994",
            "2021-05-31 23:59:59.",
            "2021-06-01 00:00:00Z",
            "2021-06-01 00:00:00z",
            "2021-01-01 05:00:00+06:00",
            "2021-01-01 00:30+14:59",
            "2021-12-31 23:00:00-14:59",
            "2021-06-01 02:00:60+05:00",
            "2021-06-01 02:00:00+5:00",
            "2021-06-01 02:00:00+05",
            "2021-06-01 25:00:00+05:00",
            "2021-06-01 02:00:00 garbage",
            "2021-06-01t02:00:00+05:00",
            "2021-06-01x",
            "2021-06-01\t02:00+05:00",
            "2021-06-0102:00+05:00",
            "2021-06-01TT02:00+05:00",
            "2021-06-01 T02:00+05:00",
            "2021-06-01T 02:00+05:00",
            "2021-06-01 02:00\t+05:00",
            "2021-06-01 02:00+05:00\n",
            "2021-06-01 02:00+05:00\r",
            "2021-06-01\x0b02:00+05:00\x0c",
            "2021-06-01 02:00 Z ",
            "2021-06-01 02:00+15:00",
            "2021-06-01 02:00+05:60",
            "2021-06-01 02:00:00.+05:00",
            "2021-06-01 02:00.5+05:00",
            "2021-05-31 24:00:00.",
            "2021-06-01 \u{a0}02:00+05:00",
            "2021-06-01 02:00:00.9995+05:00",
            "2021-05-31 23:59:59.99949999999",
            "2021-06-01 04:59:59.999499999999993985+05:00",
            "2021-05-31 23:59:59.999499999999993985",
            "2021-06-01 02:00:01.79949999999999998",
            "2021-02-28 24:00",
            "2021-02-28 24:30:00",
            "2021-02-28 24:00Z",
            "2021-02-28 24:00+00:00",
            "2020-02-28 24:00",
            "2021-06-01 02:00+05:00\0junk",
            "2021-06-01\0",
            "2021-06-01 00:00:00\0x",
            "0001-01-01 02:00+05:00",
            "9998-12-31 23:00-05:00",
            "0000-01-01",
            "9999-12-31",
        ]
        .iter()
        .map(|v| (v.to_string(), Sql))
        .collect();
        values.push((fraction("5".repeat(20)), Sql));
        values.extend([
            (fraction("9".repeat(400)), Refused),
            (fraction("0".repeat(400)), Rust),
            (fraction("1".repeat(300)), Rust),
        ]);
        for (v, path) in [
            ("9999-12-31 23:00-05:00", Refused),
            ("9999-12-31 24:00:00", Refused),
            ("9999-12-31 12:00:00", Rust),
            ("0000-01-01 02:00+05:00", Refused),
            ("0000-01-01 12:00:00", Rust),
            ("2021-02-30 02:00+05:00", Refused),
            (" 2021-06-01 02:00+05:00", Refused),
            ("2021-6-01 02:00+05:00", Refused),
        ] {
            values.push((v.to_string(), path));
        }
        sqlx::query("CREATE TABLE g (i INTEGER PRIMARY KEY, n, t TEXT, d DATETIME)").execute(&pool).await.unwrap();
        for (i, (v, _)) in values.iter().enumerate() {
            sqlx::query("INSERT INTO g VALUES (?1, ?2, ?2, ?2)").bind(i as i64).bind(v).execute(&pool).await.unwrap();
        }
        for unit in [DateUnit::Month, DateUnit::Year] {
            let (len, tail) = match unit {
                DateUnit::Year => (4, "-01-01"),
                DateUnit::Month => (7, "-01"),
            };
            let generalize = Strategy::GeneralizeDate(unit);
            for c in ["n", "t", "d"] {
                let sql = format!(
                    "SELECT i, typeof({c}), {}, {}, julianday({c}), julianday({}) FROM g ORDER BY i",
                    lite_generalize_date_guard(c),
                    lite_generalize_date(c, len, tail),
                    lite_generalize_date(c, len, tail)
                );
                for row in sqlx::query(&sql).fetch_all(&pool).await.unwrap() {
                    let (v, path) = &values[row.get::<i64, _>(0) as usize];
                    assert_eq!(row.get::<String, _>(1), "text", "{v:?} in {c}");
                    let guarded: bool = row.get(2);
                    assert_eq!(guarded, *path == Sql, "{v:?} in {c} ({unit:?}): guarded");
                    let rust = generalize.apply(&Value::Text(v.clone()), None);
                    let got = match (path, rust) {
                        (Refused, Err(_)) => continue, // reported as failed, unchanged
                        (Refused, other) => panic!("{v:?}: refused, not {other:?}"),
                        (_, Ok(Some(Value::Text(t)))) => t,
                        (_, Ok(None)) => v.clone(),
                        (_, other) => panic!("{v:?} ({unit:?}): {other:?}"),
                    };
                    if guarded {
                        assert_eq!(row.get::<String, _>(3), got, "{v:?} in {c} ({unit:?}): SQLite and Rust agree");
                    }
                    let (before, after): (Option<f64>, Option<f64>) =
                        sqlx::query_as("SELECT julianday(?1), julianday(?2)")
                            .bind(v)
                            .bind(&got)
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                    let after = after.unwrap_or_else(|| panic!("{v:?} -> {got:?}: a date SQLite reads"));
                    if let Some(before) = before {
                        assert!(after <= before, "{v:?} in {c} ({unit:?}) -> {got:?}: never later");
                        // A time SQLite reads is written in no more characters than the value's.
                        assert!(got.chars().count() <= v.chars().count(), "{v:?} -> {got:?}: never longer");
                    }
                    let done: bool = sqlx::query_scalar(&format!("SELECT NOT {}", lite_not_truncated("?1", unit)))
                        .bind(&got)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    assert!(done, "{v:?} -> {got:?} ({unit:?}): done");
                    assert_eq!(
                        generalize.apply(&Value::Text(got.clone()), None),
                        Ok(None),
                        "{v:?} -> {got:?} ({unit:?}): a second pass leaves it"
                    );
                }
            }
        }
        // Text that is no date of a month from 01 to 12 is still to do, not done.
        for v in ["2021-00-01", "2021-13-01 00:00:00", "2021-19-01"] {
            let to_do: bool = sqlx::query_scalar(&format!("SELECT {}", lite_not_truncated("?1", DateUnit::Month)))
                .bind(v)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(to_do, "{v}: to do");
        }
        // MariaDB's zero date, which `Strategy::apply` leaves, is done.
        for v in ["0000-00-00", "0000-00-00 12:00:00"] {
            assert_eq!(Strategy::GeneralizeDate(DateUnit::Month).apply(&Value::Text(v.into()), None), Ok(None));
            let to_do: bool = sqlx::query_scalar(&format!("SELECT {}", lite_not_truncated("?1", DateUnit::Month)))
                .bind(v)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(!to_do, "{v}: done");
        }
    }

    /// `lite_time_expr` reads every value as the plain rule does (`lite_time_expr_plain`), in
    /// SQLite itself: text shaped like dates and times and numbers and none of them, and
    /// random text over their characters.
    #[tokio::test]
    async fn sqlite_text_anchor_test_reads_as_the_plain_rule() {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE v (x)").execute(&pool).await.unwrap();
        let mut texts: Vec<String> = [
            "2023-01-01",
            "2023-01-01 10:00:00",
            "2023-01-01T10:00:00Z",
            "2023-01-01 10:00:00+14:59",
            "2023-02-31",
            "2023-13-01",
            "2023-1-01",
            "2023-01-1",
            " 2023-01-01",
            "-2023-01-01",
            "+2023-01-01",
            "2023-01-01 junk",
            "12:30",
            "12:30:45",
            "12:30-05:00",
            "12:30:45.5+01:00",
            "now",
            "NOW",
            "subsec",
            "2019",
            "2459000.5",
            "123e-5",
            "1234e-56",
            "    -1e-5",
            "  -1.0e-5",
            "0",
            "",
            "-",
            "1e5",
            "0000-00-00",
            "9999-12-31 24:00:00",
            "2023-01-01T",
            "2023-01-01TT10:00",
            "2023-01-01\t10:00",
            "٢٠٢٣-٠١-٠١",
            "２０２３-01-01",
            "2023−01−01",
        ]
        .map(String::from)
        .to_vec();
        // Random text over the characters of dates, times and numbers (a fixed generator).
        let alphabet: Vec<char> = "0123456789-:.+eETZ n\t".chars().collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        for _ in 0..60_000 {
            let len = next(24);
            let mut t: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            if next(2) == 0 && len >= 10 {
                // Mostly dates, some of them spoilt.
                t.replace_range(0..10, &format!("{:04}-{:02}-{:02}", next(10_000), next(14), next(33)));
            }
            texts.push(t);
            // A valid time with one or two characters changed.
            let mut t: Vec<char> = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
                next(10_000),
                1 + next(12),
                1 + next(28),
                [" ", "T", "  "][next(3)],
                next(24),
                next(60),
                next(60)
            )
            .chars()
            .collect();
            for _ in 0..next(3) {
                let at = next(t.len());
                t[at] = alphabet[next(alphabet.len())];
            }
            texts.push(t.into_iter().collect());
        }
        let json = serde_json::to_string(&texts).unwrap();
        sqlx::query("INSERT INTO v SELECT value FROM json_each(?)").bind(&json).execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO v SELECT CAST(x AS BLOB) FROM v WHERE rowid % 7 = 0").execute(&pool).await.unwrap();
        let (fast, plain) = (lite_time_expr("x"), lite_time_expr_plain("x"));
        assert_ne!(fast, plain);
        let row = sqlx::query(&format!(
            "SELECT COUNT(*), SUM(({fast}) IS NOT ({plain})), SUM(({plain}) IS NOT NULL), \
             (SELECT group_concat(quote(x), ' ') FROM (SELECT x FROM v WHERE ({fast}) IS NOT ({plain}) LIMIT 5)) FROM v"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        let (all, differ, read): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let examples: Option<String> = row.get(3);
        assert_eq!(differ, 0, "{differ} of {all} values read differently: {examples:?}");
        assert!(
            read > 20_000 && read < all - 20_000,
            "both readable and unreadable values were tried ({read} of {all})"
        );
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02X}")).collect()
    }
}
