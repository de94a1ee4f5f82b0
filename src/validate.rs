//! Validation against the live catalog (`lapse validate --connect`, and before every plan/run).
//!
//! Offline checks live with the policy loader; this module checks what only the database knows:
//! tables and columns exist, anchors are dates, keys exist, strategies fit column types, and
//! every table that references a policy's table by foreign key is accounted for.

use std::collections::BTreeSet;

use crate::connector::{Cascade, ColumnKind, Connector, ConnectorError, ForeignKey, TableIdentity, TableInfo};
use crate::diag::{Diagnostic, Diagnostics};
use crate::policy::condition::{CmpOp, Literal, Test};
use crate::policy::strategy::{literal_value, Strategy, TOKEN_PREFIX};
use crate::policy::{Action, Dependent, OnDelete, Policy};
use crate::value::Value;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A policy checked against its database, with what the catalog told us.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub table: TableInfo,
    /// The catalog's name of the table, when the connector says (see `Connector::identify`).
    pub identity: Option<TableIdentity>,
    pub cascade: Vec<Cascade>,
    pub restrict: Vec<ForeignKey>,
}

/// What a column of `kind` needs of a `constant` it is anonymized to, if `l` is not that (the
/// database would refuse it at the first run, or on PostgreSQL fail to compare it at all).
fn constant_misfit(kind: ColumnKind, sql_type: &str, l: &Literal) -> Option<&'static str> {
    let text = |l: &Literal| match l {
        Literal::Text(s) => Some(s.trim().to_string()),
        _ => None,
    };
    let fits = match kind {
        // MariaDB/MySQL's BOOLEAN is `tinyint(1)`: true and false are its values (and `bit(1)`'s).
        ColumnKind::Int if matches!(l, Literal::Bool(_)) => {
            let t = sql_type.to_ascii_lowercase();
            t.starts_with("tinyint(1)") || t == "bit(1)"
        }
        ColumnKind::Int => {
            let v = match l {
                Literal::Int(i) => Some(*i),
                other => text(other).and_then(|s| s.parse::<i64>().ok()),
            };
            v.is_some_and(|v| int_range(sql_type).contains(&i128::from(v)))
        }
        ColumnKind::Float => match l {
            Literal::Int(_) | Literal::Float(_) => true,
            other => text(other).is_some_and(|s| s.parse::<f64>().is_ok()),
        },
        // SQLite keeps a BOOLEAN as 0 or 1.
        ColumnKind::Bool => matches!(l, Literal::Bool(_) | Literal::Int(0 | 1)),
        ColumnKind::Date => text(l).is_some_and(|s| chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").is_ok()),
        ColumnKind::Timestamp { .. } => text(l).is_some_and(|s| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .any(|f| chrono::NaiveDateTime::parse_from_str(&s, f).is_ok())
                || crate::holds::parse_time(&s).is_ok()
        }),
        // MariaDB/MySQL's ENUM and SET hold only their listed values.
        ColumnKind::Text if sql_type.starts_with("enum(") || sql_type.starts_with("set(") => {
            let want = match l {
                Literal::Text(t) => t.clone(),
                Literal::Int(i) => i.to_string(),
                Literal::Float(f) => f.to_string(),
                Literal::Bool(b) => b.to_string(),
            };
            let listed = listed_values(sql_type);
            match sql_type.starts_with("set(") {
                // A set's value is any of its members, comma-separated (or none).
                true => want.is_empty() || want.split(',').all(|w| listed.iter().any(|v| v == w)),
                false => listed.contains(&want),
            }
        }
        ColumnKind::Text | ColumnKind::Other | ColumnKind::Bytes => true,
    };
    (!fits).then_some(match kind {
        ColumnKind::Int => "an integer within the column's range",
        ColumnKind::Float => "a number",
        ColumnKind::Bool => "true or false",
        ColumnKind::Date => "a date, as \"1900-01-01\"",
        ColumnKind::Text => "one of the values the column lists",
        _ => "a date and time, as \"1900-01-01 00:00:00\"",
    })
}

/// The values of a MariaDB/MySQL `enum('a','b')` or `set(…)` type, as `COLUMN_TYPE` writes them
/// (single quotes, a quote doubled inside).
fn listed_values(sql_type: &str) -> Vec<String> {
    let inner = sql_type.split_once('(').map(|(_, r)| r.strip_suffix(')').unwrap_or(r)).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = inner.chars().peekable();
    while let Some(ch) = chars.next() {
        match (&mut cur, ch) {
            (None, '\'') => cur = Some(String::new()),
            (Some(v), '\'') if chars.peek() == Some(&'\'') => {
                v.push('\'');
                chars.next();
            }
            (Some(_), '\'') => out.push(cur.take().unwrap_or_default()),
            (Some(v), c) => v.push(c),
            (None, _) => {}
        }
    }
    out
}

/// The values an integer column of this SQL type holds, where its name says (PostgreSQL's
/// `smallint`, `integer`; MariaDB/MySQL's `tinyint`, `smallint`, `mediumint`, signed or not);
/// otherwise 64 bits: SQLite's `INT` and `INTEGER` hold 64, and MariaDB's `int(11)` is left to
/// the database rather than guessed here.
fn int_range(sql_type: &str) -> std::ops::RangeInclusive<i128> {
    let t = sql_type.to_ascii_lowercase();
    if let Some(n) = t.strip_prefix("bit(").and_then(|r| r.strip_suffix(')')).and_then(|n| n.parse::<u32>().ok()) {
        // MariaDB/MySQL's BIT(n): n bits, no sign.
        return 0..=(1i128 << n.min(64)) - 1;
    }
    let bits = if t.starts_with("tinyint") {
        8
    } else if t.starts_with("smallint") || t == "int2" {
        16
    } else if t.starts_with("mediumint") {
        24
    } else if sql_type == "integer" || t == "int4" {
        // PostgreSQL's catalog spells it in lower case; SQLite keeps the declaration's spelling.
        32
    } else {
        64
    };
    match t.contains("unsigned") {
        true => 0..=(1i128 << bits) - 1,
        false => -(1i128 << (bits - 1))..=(1i128 << (bits - 1)) - 1,
    }
}

/// Text that starts with a date (`YYYY-MM-DD`): a literal meant as a time.
fn starts_with_a_date(t: &str) -> bool {
    let b = t.trim_start().as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
}

fn kind_name(k: ColumnKind) -> &'static str {
    match k {
        ColumnKind::Int => "integer",
        ColumnKind::Float => "floating-point",
        ColumnKind::Text => "text",
        ColumnKind::Bool => "boolean",
        ColumnKind::Timestamp { .. } => "timestamp",
        ColumnKind::Date => "date",
        ColumnKind::Bytes => "binary",
        ColumnKind::Other => "non-standard",
    }
}

/// A catalog read that failed because the backend could not answer (no connection, a lost one,
/// a server error), which says nothing about the configuration.
fn unavailable(e: &ConnectorError) -> bool {
    matches!(e, ConnectorError::Connect { .. } | ConnectorError::Lost { .. })
}

/// Checks one policy against its connector. Errors go to `diags`; returns the prepared policy
/// when there were none.
pub async fn check(policy: &Policy, conn: &dyn Connector, diags: &mut Diagnostics) -> Option<Prepared> {
    let before = diags.0.iter().filter(|d| d.is_error()).count();
    // A dataset of objects without a bucket is on the connection's default one (`describe`).
    let described = match &policy.objects {
        Some(o) if o.bucket.is_none() => format!("/{}", policy.table),
        _ => policy.table.clone(),
    };
    let table = match conn.describe(&described).await {
        Ok(t) => t,
        Err(ConnectorError::NotFound { what }) if policy.objects.is_some() => {
            let path =
                if policy.objects.as_ref().is_some_and(|o| o.bucket.is_some()) { "dataset.bucket" } else { "dataset" };
            diags.push(policy.error(path, format!("unknown {what} on connection '{}'", policy.connection)));
            return None;
        }
        Err(ConnectorError::NotFound { .. }) => {
            diags.push(policy.error(
                "dataset.table",
                format!("unknown table '{}' on connection '{}'", policy.table, policy.connection),
            ));
            return None;
        }
        Err(e) => {
            let d = policy.error("dataset", e.to_string());
            diags.push(if unavailable(&e) { d.unavailable() } else { d });
            return None;
        }
    };
    if policy.objects.is_some() {
        // Objects have facts, not columns; `describe` checked that the bucket/directory exists.
        return Some(Prepared { table, identity: None, cascade: Vec::new(), restrict: Vec::new() });
    }
    let identity = match conn.identify(&policy.table).await {
        Ok(i) => i,
        Err(e) => {
            let d = policy.error("dataset", e.to_string());
            diags.push(if unavailable(&e) { d.unavailable() } else { d });
            return None;
        }
    };
    if let Some(what) = identity.as_ref().and_then(|i| i.not_a_table) {
        // A view's rows are its base tables' rows: their foreign keys (and cascades) and other
        // readers are out of sight here. The policy must name the table itself.
        diags.push(policy.error(
            "dataset.table",
            match what {
                "view" | "materialized view" => format!(
                    "'{}' is a {what}, not a table: name the table it reads, so that its foreign keys are checked",
                    policy.table
                ),
                _ => format!("'{}' is a {what}: lapse cannot destroy its records for good", policy.table),
            },
        ));
        return None;
    }
    // Not lapse's own tables: its holds table (a policy there destroyed the holds in force, as
    // data past their period) or its journal (found by a review).
    if let Some((what, t)) = own_table(conn, &policy.table, identity.as_ref()).await {
        diags.push(policy.error(
            "dataset.table",
            format!("'{}' is {what} '{t}': lapse keeps it, no policy may destroy its rows", policy.table),
        ));
        return None;
    }
    let mut err = |path: &str, msg: String| diags.push(policy.error(path, msg));
    let mut seen = BTreeSet::new();
    for (col, path) in policy.referenced_columns() {
        if table.column(&col).is_none() && seen.insert((col.clone(), path.clone())) {
            // Names are matched exactly (quoted identifiers): a name in another case is named.
            let hint = match table.columns.iter().find(|c| c.name.eq_ignore_ascii_case(&col)) {
                Some(c) => format!(" (did you mean '{}'? names are matched exactly)", c.name),
                None => String::new(),
            };
            err(&path, format!("unknown column '{col}' in table '{}'{hint}", policy.table));
        }
    }
    for k in &policy.key {
        if let Some(m) = table.column(k).and_then(|c| conn.key_column_problem(c)) {
            diags.push(policy.error("dataset.key", format!("key column '{k}' cannot be batched by: {m}")));
        }
        if table.column(k).is_some_and(|c| c.nullable) {
            // A row whose key is NULL can be neither named in evidence nor destroyed by its key,
            // and a batch holding one could not finish.
            diags.push(policy.error(
                "dataset.key",
                format!(
                    "key column '{k}' may be NULL: a row without a key cannot be destroyed or recorded; \
                     make it NOT NULL, or use the primary key"
                ),
            ));
        }
    }
    // A binary subject column against a holds table's subject column that is not binary: no
    // text equals a binary value (MariaDB compares bytes, SQLite storage classes, PostgreSQL
    // refuses), so every hold of that table would keep nothing here (found by a read-only
    // review: held rows were destroyed without a word).
    let subject_col = policy.subject.as_ref().and_then(|s| table.column(s));
    if let (Some(c), Some(h), Some(ht)) = (subject_col, conn.holds_subject_column(), conn.holds_table()) {
        if c.kind == ColumnKind::Bytes && h.kind != ColumnKind::Bytes {
            diags.push(policy.error(
                "dataset.subject",
                format!(
                    "subject column '{}' is {} (binary), and the subject column '{}' of holds table '{}' is {}: \
                     a text subject never equals a binary value, so that table's holds would keep nothing here; \
                     make the holds table's subject column binary too",
                    c.name, c.sql_type, h.name, ht.table, h.sql_type
                ),
            ));
        }
    }
    let same_columns = |a: &[String], b: &[String]| {
        a.len() == b.len() && a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
    };
    if !policy.key.iter().all(|k| table.column(k).is_some()) {
        // already reported
    } else if !table.primary_key.is_empty() && !same_columns(&table.primary_key, &policy.key) {
        diags.push(
            Diagnostic::warning(format!(
                "key ({}) is not the primary key ({}) of '{}'; it must identify rows uniquely",
                policy.key.join(", "),
                table.primary_key.join(", "),
                policy.table
            ))
            .policy(&policy.name)
            .at(policy.at("dataset.key")),
        );
    }
    let mut when_ask: Vec<(String, crate::connector::ColumnInfo, String)> = Vec::new();
    let mut later: Vec<Diagnostic> = Vec::new();
    // An anchor without a zone (MariaDB's DATETIME, `date`) is read as UTC: times an application
    // writes in the server's zone west of UTC lapse that many hours early. Said where the
    // server's zone is another (found by a review).
    let zoneless: Vec<(usize, &str, String)> = policy
        .purposes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.from_policy.is_none())
        .filter_map(|(i, p)| {
            let c = table.column(&p.anchor)?;
            matches!(c.kind, ColumnKind::Timestamp { tz: false } | ColumnKind::Date)
                .then(|| (i, p.anchor.as_str(), c.sql_type.clone()))
        })
        .collect();
    if !zoneless.is_empty() {
        if let Some(zone) = conn.local_time_zone().await {
            for (i, anchor, sql_type) in zoneless {
                diags.push(
                    Diagnostic::warning(format!(
                        "anchor column '{anchor}' ({sql_type}) holds no time zone and is read as UTC, but the server's time zone is '{zone}': times written in it (NOW()) lapse by its offset early or late; write UTC, or use a TIMESTAMP column"
                    ))
                    .policy(&policy.name)
                    .at(policy.at(&format!("purposes.{i}.after"))),
                );
            }
        }
    }
    let mut err = |path: &str, msg: String| diags.push(policy.error(path, msg));
    for (i, p) in policy.purposes.iter().enumerate().filter(|(_, p)| p.from_policy.is_none()) {
        if let Some(c) = table.column(&p.anchor) {
            if !c.instant {
                err(
                    &format!("purposes.{i}.after"),
                    format!(
                        "anchor column '{}' of purpose '{}' is {} ({}), not a date or timestamp",
                        p.anchor,
                        p.name,
                        kind_name(c.kind),
                        c.sql_type
                    ),
                );
            } else if !c.kind.is_temporal() {
                // Text that must hold times: a mistaken column (`after: email`) holds none.
                match conn.anchor_readable(&table, &p.anchor).await {
                    Ok(true) => {}
                    Ok(false) => err(
                        &format!("purposes.{i}.after"),
                        format!(
                            "anchor column '{}' of purpose '{}' is {} ({}), not a date or timestamp: none of its values reads as a time",
                            p.anchor,
                            p.name,
                            kind_name(c.kind),
                            c.sql_type
                        ),
                    ),
                    Err(e) => {
                        // A database that did not answer says nothing of the policy (exit 1).
                        let d = policy.error(&format!("purposes.{i}.after"), e.to_string());
                        later.push(if unavailable(&e) { d.unavailable() } else { d });
                    }
                }
            }
        }
        if let Some(cond) = &p.condition {
            for term in &cond.terms {
                let Some(c) = table.column(&term.column) else { continue };
                let lits: Vec<&Literal> = match &term.test {
                    Test::Compare(_, l) => vec![l],
                    Test::In(ls) => ls.iter().collect(),
                    _ => vec![],
                };
                // `<`, `<=`, `>`, `>=`: an order, which text of another shape than the literal's
                // gets wrong (`=`, `!=` and `in` compare text exactly: a label such as
                // `'2024-06-30-batch7'` is no time meant).
                let ordering = matches!(&term.test, Test::Compare(CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge, _));
                // numeric / decimal: compared with numbers (the database converts them).
                let decimal = ["numeric", "decimal"].iter().any(|t| c.sql_type.to_ascii_lowercase().starts_with(t));
                for l in lits {
                    let ok = matches!(
                        (c.kind, l),
                        (ColumnKind::Int, Literal::Int(_))
                            | (ColumnKind::Float, Literal::Int(_) | Literal::Float(_))
                            | (ColumnKind::Text | ColumnKind::Other, Literal::Text(_))
                            | (ColumnKind::Bool | ColumnKind::Int, Literal::Bool(_))
                            | (ColumnKind::Timestamp { .. } | ColumnKind::Date, Literal::Text(_))
                    ) || (decimal && matches!(l, Literal::Int(_) | Literal::Float(_)));
                    if !ok {
                        err(
                            &format!("purposes.{i}.when"),
                            format!(
                                "condition compares {} column '{}' with a literal of another type",
                                kind_name(c.kind),
                                term.column
                            ),
                        );
                    } else if let Some(t) = match (l, c.kind) {
                        (Literal::Text(t), ColumnKind::Timestamp { .. } | ColumnKind::Date)
                            if !crate::policy::condition::is_time_literal(t) =>
                        {
                            Some(t)
                        }
                        _ => None,
                    } {
                        // Each database reads other text its own way: SQLite's `julianday` reads
                        // `'1995'` as a Julian day (every row lapses), and says yes to anything.
                        err(
                            &format!("purposes.{i}.when"),
                            crate::policy::time_literal_error(&p.name, t, kind_name(c.kind), &term.column),
                        );
                    } else if let Some(t) = match (l, c.kind) {
                        (Literal::Text(t), ColumnKind::Text | ColumnKind::Other)
                            if ordering && starts_with_a_date(t) && !crate::policy::condition::is_time_literal(t) =>
                        {
                            Some(t)
                        }
                        _ => None,
                    }
                    .filter(|_| conn.keeps_any_type())
                    {
                        // SQLite compares a column that may hold times with full dates and times
                        // by instant (`Builder::lite_time_term`); other text, as text, and
                        // `closed_at >= '2024-06-30 12:00'` held for `2024-06-30T06:00:00`
                        // (found by a review).
                        err(
                            &format!("purposes.{i}.when"),
                            crate::policy::time_literal_error(&p.name, t, kind_name(c.kind), &term.column),
                        );
                    } else if let (Literal::Text(t), ColumnKind::Text, false) = (l, c.kind, conn.keeps_any_type()) {
                        if ordering && starts_with_a_date(t) {
                            // PostgreSQL and MariaDB compare text with text character by
                            // character: right only where every value has the literal's shape.
                            later.push(
                                Diagnostic::warning(format!(
                                    "purpose '{}': the condition compares text column '{}' with '{t}' as text, character by character ('2024-06-30 18:00:00' < '2024-06-30T12:00:00'): right only where every value is written in that literal's shape; a date or timestamp column is compared as a time",
                                    p.name, term.column
                                ))
                                .policy(&policy.name)
                                .at(policy.at(&format!("purposes.{i}.when"))),
                            );
                        }
                    } else if let (
                        Literal::Text(t),
                        ColumnKind::Timestamp { .. } | ColumnKind::Date | ColumnKind::Other,
                    ) = (l, c.kind)
                    {
                        // Text the column's type must read (`'2019-13-45'` is no time): asked
                        // below, where the database knows (else every count of the run failed).
                        when_ask.push((format!("purposes.{i}.when"), c.clone(), t.clone()));
                    }
                }
            }
        }
    }
    // Constants for types only the database knows (uuid, inet, json…): it is asked below.
    let mut ask: Vec<(String, crate::connector::ColumnInfo, Value)> = Vec::new();
    for c in &policy.columns {
        let (Some(info), Some(s)) = (table.column(&c.name), &c.strategy) else { continue };
        let path = format!("personal.{}.anonymize", c.name);
        if info.unique && !matches!(s, Strategy::Nullify | Strategy::RandomToken | Strategy::Pseudonymize) {
            // A constant, a prefix, a bucket, a generalized date or network give two records
            // the same value sooner or later, and the unique index refuses the batch every run.
            err(
                &path,
                format!(
                    "column '{}' is in a unique index or constraint: {} could give two records the same value; \
                     use random_token, pseudonymize or nullify",
                    c.name,
                    s.method()
                ),
            );
            continue;
        }
        if info.generated {
            err(
                &path,
                format!(
                    "column '{}' is generated by the database and cannot be written: \
                     anonymize the columns it is computed from, if any",
                    c.name
                ),
            );
            continue;
        }
        // Another table's foreign key refers to it: a new value breaks the reference unless the
        // key updates with it, and the database then refuses the batch on every run (found by a
        // review; whether the key is `ON UPDATE CASCADE` is not read here).
        if let Some(fk) = table.referenced_by.iter().find(|fk| fk.referenced.contains(&c.name)) {
            later.push(
                Diagnostic::warning(format!(
                    "column '{}' is referenced by foreign key '{}' of table '{}': unless that key is ON UPDATE CASCADE or SET NULL, the database refuses every batch that anonymizes it",
                    c.name, fk.constraint, fk.table
                ))
                .policy(&policy.name)
                .at(policy.at(&path)),
            );
        }
        let fits = match s {
            Strategy::Nullify => {
                if !info.nullable {
                    err(
                        &path,
                        format!(
                            "column '{}' is NOT NULL, so 'nullify' cannot anonymize it; use a constant or random_token",
                            c.name
                        ),
                    );
                }
                true
            }
            Strategy::Constant(l) => {
                // A number is written as its text (before, only text constants were measured:
                // PostgreSQL cut `123456` to `123` in a varchar(3), and the run's verification
                // found the row still to do, every run).
                let written = match l {
                    Literal::Text(t) => Some(t.clone()),
                    Literal::Int(i) => Some(i.to_string()),
                    Literal::Float(f) => Some(f.to_string()),
                    Literal::Bool(b) => Some(b.to_string()),
                };
                let long = match (info.kind, info.max_len, written) {
                    (ColumnKind::Text, Some(n), Some(t)) if t.chars().count() as u64 > n => Some(n),
                    _ => None,
                };
                if let Some(n) = long {
                    // PostgreSQL would cut it to fit (a cast) and MariaDB refuse it, every run.
                    err(&path, format!("column '{}' holds at most {n} characters; the constant has more", c.name));
                }
                if let Some(want) = constant_misfit(info.kind, &info.sql_type, l) {
                    err(
                        &path,
                        format!(
                            "the constant does not fit {} column '{}' ({}): {want}",
                            kind_name(info.kind),
                            c.name,
                            info.sql_type
                        ),
                    );
                } else if long.is_none() {
                    // The database's own word on it, for every type (PostgreSQL: a cast of the
                    // value, which refuses a `real` overflow or a bad uuid; MariaDB: its
                    // ranges and lengths, `catalog::my_misfit`).
                    ask.push((path.clone(), info.clone(), literal_value(l)));
                }
                true
            }
            Strategy::GeneralizeDate(_) => info.kind.is_temporal() || info.kind == ColumnKind::Text,
            // A JSON column (PostgreSQL's json/jsonb, MariaDB/MySQL's JSON) takes no bare address.
            Strategy::GeneralizeIp => {
                matches!(info.kind, ColumnKind::Text | ColumnKind::Other) && !info.sql_type.starts_with("json")
            }
            Strategy::Bucket(w) => {
                if info.kind == ColumnKind::Int && w.fract() != 0.0 {
                    err(
                        &path,
                        format!(
                            "column '{}' holds integers; a bucket width of {w} would write fractions (use a whole width)",
                            c.name
                        ),
                    );
                }
                if info.kind == ColumnKind::Int && *w == 1.0 {
                    // Every integer is a multiple of 1: nothing would change, and the lapsed
                    // records would be counted as anonymized.
                    err(
                        &path,
                        format!(
                            "column '{}' holds integers; a bucket width of 1 changes none of them (use a wider bucket)",
                            c.name
                        ),
                    );
                }
                matches!(info.kind, ColumnKind::Int | ColumnKind::Float)
            }
            Strategy::KeepPrefix(n) => {
                if let (ColumnKind::Text, Some(max)) = (info.kind, info.max_len) {
                    if *n as u64 >= max {
                        // No value is longer than the prefix kept: nothing would change.
                        err(
                            &path,
                            format!(
                                "column '{}' holds at most {max} characters; keep_prefix: {n} keeps all of them (keep fewer)",
                                c.name
                            ),
                        );
                    }
                }
                info.kind == ColumnKind::Text
            }
            Strategy::RandomToken | Strategy::Pseudonymize => {
                if info.kind == ColumnKind::Text {
                    if let Some(n) = info.max_len {
                        if n < (TOKEN_PREFIX.len() + 32) as u64 {
                            err(&path, format!("column '{}' holds at most {n} characters; a token needs 37", c.name));
                        }
                    }
                }
                info.kind == ColumnKind::Text
            }
        };
        if !fits {
            err(
                &path,
                format!(
                    "strategy {} does not fit {} column '{}' ({})",
                    s.method(),
                    kind_name(info.kind),
                    c.name,
                    info.sql_type
                ),
            );
        }
        if policy.key.contains(&c.name) {
            err(
                &path,
                format!("column '{}' is part of the key; anonymizing it would lose the record's identity", c.name),
            );
        }
    }
    for d in later {
        diags.push(d);
    }
    // `accepts` says "it could not be checked" when the database did not answer: that says
    // nothing of the policy (exit 1, not 2).
    let unchecked =
        |why: &str, d: Diagnostic| if why.starts_with("it could not be checked") { d.unavailable() } else { d };
    for (path, info, t) in when_ask {
        if let Err(why) = conn.accepts(&info, &Value::Text(t.clone())).await {
            let d = policy.error(
                &path,
                format!(
                    "the condition's literal '{t}' does not fit {} column '{}' ({}): {why}",
                    kind_name(info.kind),
                    info.name,
                    info.sql_type
                ),
            );
            diags.push(unchecked(&why, d));
        }
    }
    for (path, info, v) in ask {
        // What the type cannot store first, then what the database refuses.
        let verdict = match conn.stores(&info, &v) {
            Ok(()) => conn.accepts(&info, &v).await,
            refused => refused,
        };
        if let Err(why) = verdict {
            let d = policy.error(
                &path,
                format!(
                    "the constant does not fit {} column '{}' ({}): {why}",
                    kind_name(info.kind),
                    info.name,
                    info.sql_type
                ),
            );
            diags.push(unchecked(&why, d));
        }
    }
    let (cascade, restrict) = if policy.action == Action::Delete {
        dependents(policy, conn, &table, &policy.dependents, "dependents", diags).await
    } else {
        (Vec::new(), Vec::new())
    };
    let after = diags.0.iter().filter(|d| d.is_error()).count();
    (after == before).then_some(Prepared { table, identity, cascade, restrict })
}

/// Whether `table` (its identity, if known) is one lapse keeps through `conn`: its holds table
/// or its journal. What it is and its name.
async fn own_table(
    conn: &dyn Connector,
    table: &str,
    identity: Option<&crate::connector::TableIdentity>,
) -> Option<(&'static str, String)> {
    let own = conn
        .holds_table()
        .map(|h| ("the connection's holds table", h.table.clone()))
        .into_iter()
        .chain(conn.own_tables().into_iter().map(|t| ("lapse's journal table", t)));
    let identity = match identity {
        Some(i) => Some(i.clone()),
        None => conn.identify(table).await.ok().flatten(),
    };
    for (what, t) in own {
        let same = match (&identity, conn.identify(&t).await) {
            (Some(a), Ok(Some(b))) => a.canonical == b.canonical,
            _ => t == table,
        };
        if same {
            return Some((what, t));
        }
    }
    None
}

/// Matches the declared dependents with the foreign keys the catalog reports; every referencing
/// foreign key must be declared (recursively for cascades).
fn dependents<'a>(
    policy: &'a Policy,
    conn: &'a dyn Connector,
    parent: &'a TableInfo,
    declared: &'a [Dependent],
    path: &'a str,
    diags: &'a mut Diagnostics,
) -> BoxFuture<'a, (Vec<Cascade>, Vec<ForeignKey>)> {
    Box::pin(async move {
        let mut cascade = Vec::new();
        let mut restrict = Vec::new();
        let mut used = vec![false; declared.len()];
        for fk in &parent.referenced_by {
            // A referencing table whose name lapse cannot write (a dot, a quote or a space in
            // it: the catalog keeps it quoted) could not be named in a statement without
            // reaching another table (found by a review): refused, fail closed.
            if !crate::policy::valid_table_name(&fk.table) {
                diags.push(policy.error(
                    path,
                    format!(
                        "table {} references '{}' through foreign key '{}', and its name is not one lapse can write in a statement \
                         (letters, digits and '_', optionally after a schema): rename it",
                        fk.table, parent.name, fk.constraint
                    ),
                ));
                continue;
            }
            // By the name exactly, or in another case only where no other referencing table
            // has that name in another case: `orders` declared matched `"Orders"` too on
            // PostgreSQL, and the undeclared table's rows were cascaded (found by a review).
            let folded = parent
                .referenced_by
                .iter()
                .filter(|f| f.table.eq_ignore_ascii_case(&fk.table))
                .map(|f| f.table.as_str())
                .collect::<BTreeSet<_>>()
                .len()
                > 1;
            let pos = declared.iter().position(|d| {
                (d.table == fk.table || (!folded && d.table.eq_ignore_ascii_case(&fk.table)))
                    && d.foreign_key.as_ref().is_none_or(|n| n.eq_ignore_ascii_case(&fk.constraint))
            });
            let Some(i) = pos else {
                diags.push(policy.error(
                    path,
                    format!(
                        "table '{}' references '{}' through foreign key '{}' ({}), but the policy does not say what happens to those rows: add it under 'dependents' with on_delete: cascade or restrict",
                        fk.table, parent.name, fk.constraint, fk.columns.join(", ")
                    ),
                ));
                continue;
            };
            used[i] = true;
            let d = &declared[i];
            if fk.table.eq_ignore_ascii_case(&parent.name) && d.on_delete == OnDelete::Cascade {
                diags.push(policy.error(
                    &d.path,
                    format!("self-referencing foreign key '{}' cannot cascade; use restrict", fk.constraint),
                ));
                continue;
            }
            // A cascade into the holds table deleted the holds of the parent's subjects (another
            // policy's too) with it, and the data they held went in the same run; into the
            // journal, the evidence of past batches (found by a review). A restrict keeps.
            if d.on_delete == OnDelete::Cascade {
                if let Some((what, t)) = own_table(conn, &fk.table, None).await {
                    diags.push(policy.error(
                        &d.path,
                        format!(
                            "'{}' is {what} '{t}': a cascade would delete its rows with the records; use on_delete: restrict (such records are then kept while it references them)",
                            fk.table
                        ),
                    ));
                    continue;
                }
            }
            match d.on_delete {
                OnDelete::Restrict => restrict.push(fk.clone()),
                OnDelete::Cascade => {
                    let child = match conn.describe(&fk.table).await {
                        Ok(t) => t,
                        Err(e) => {
                            let x = policy.error(&d.path, format!("dependent table '{}': {e}", fk.table));
                            diags.push(if unavailable(&e) { x.unavailable() } else { x });
                            continue;
                        }
                    };
                    let (children, nested_restrict) =
                        dependents(policy, conn, &child, &d.dependents, &format!("{}.dependents", d.path), diags).await;
                    if !nested_restrict.is_empty() {
                        diags.push(policy.error(&d.path, format!("dependents of cascaded table '{}' must cascade too ('restrict' is only supported one level deep)", fk.table)));
                    }
                    cascade.push(Cascade { fk: fk.clone(), children });
                }
            }
        }
        for (i, d) in declared.iter().enumerate() {
            if !used[i] {
                diags.push(policy.error(
                    &format!("{}.table", d.path),
                    format!("declared dependent '{}' does not reference '{}' by any foreign key", d.table, parent.name),
                ));
            }
        }
        (cascade, restrict)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges_by_type_name() {
        assert_eq!(int_range("smallint"), -32768..=32767);
        assert_eq!(int_range("integer"), -(1i128 << 31)..=(1i128 << 31) - 1, "PostgreSQL");
        assert_eq!(int_range("INTEGER"), -(1i128 << 63)..=(1i128 << 63) - 1, "SQLite: 64 bits");
        assert_eq!(int_range("tinyint(3) unsigned"), 0..=255);
        assert_eq!(int_range("mediumint(9)"), -(1i128 << 23)..=(1i128 << 23) - 1);
        assert_eq!(int_range("bigint"), -(1i128 << 63)..=(1i128 << 63) - 1);
        let lit = |i| Literal::Int(i);
        assert!(constant_misfit(ColumnKind::Int, "smallint", &lit(70_000)).is_some());
        assert!(constant_misfit(ColumnKind::Int, "smallint", &lit(-5)).is_none());
        assert!(constant_misfit(ColumnKind::Int, "tinyint(3) unsigned", &lit(-1)).is_some());
        assert!(constant_misfit(ColumnKind::Int, "tinyint(1)", &Literal::Bool(false)).is_none(), "MariaDB's BOOLEAN");
        assert!(constant_misfit(ColumnKind::Int, "bigint", &Literal::Bool(false)).is_some());
        assert!(constant_misfit(ColumnKind::Bool, "BOOLEAN", &lit(0)).is_none(), "SQLite's BOOLEAN");
        assert_eq!(listed_values("enum('a','b','it''s')"), ["a", "b", "it's"]);
        let text = |t: &str| Literal::Text(t.into());
        assert!(constant_misfit(ColumnKind::Text, "enum('active','anon')", &text("anon")).is_none());
        assert!(constant_misfit(ColumnKind::Text, "enum('active','anon')", &text("zzz")).is_some());
        assert!(constant_misfit(ColumnKind::Text, "varchar(20)", &text("zzz")).is_none());
        assert!(constant_misfit(ColumnKind::Text, "set('a','b')", &text("a,b")).is_none());
        assert!(constant_misfit(ColumnKind::Text, "set('a','b')", &text("a,c")).is_some());
        assert!(constant_misfit(ColumnKind::Date, "date", &Literal::Text("1900-01-01".into())).is_none());
        assert!(constant_misfit(ColumnKind::Date, "date", &Literal::Text("n/a".into())).is_some());
        assert!(constant_misfit(
            ColumnKind::Timestamp { tz: true },
            "timestamptz",
            &Literal::Text("1900-01-01T00:00:00Z".into())
        )
        .is_none());
    }
}
