//! Catalog queries: columns, primary key and referencing foreign keys of a table, per dialect.

use crate::connector::ColumnKind;

/// Maps a PostgreSQL `typname` to a kind.
pub fn pg_kind(typname: &str) -> ColumnKind {
    match typname {
        "int2" | "int4" | "int8" => ColumnKind::Int,
        "float4" | "float8" => ColumnKind::Float,
        "text" | "varchar" | "bpchar" | "name" | "citext" => ColumnKind::Text,
        "bool" => ColumnKind::Bool,
        "timestamp" => ColumnKind::Timestamp { tz: false },
        "timestamptz" => ColumnKind::Timestamp { tz: true },
        "date" => ColumnKind::Date,
        "bytea" => ColumnKind::Bytes,
        _ => ColumnKind::Other,
    }
}

/// Maps a MySQL/MariaDB `DATA_TYPE` to a kind.
pub fn mysql_kind(data_type: &str) -> ColumnKind {
    match data_type.to_ascii_lowercase().as_str() {
        // BIT(n) holds an unsigned number of n bits, written and compared as an integer.
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" | "bit" => ColumnKind::Int,
        "float" | "double" | "real" => ColumnKind::Float,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => ColumnKind::Text,
        "datetime" => ColumnKind::Timestamp { tz: false },
        "timestamp" => ColumnKind::Timestamp { tz: true },
        "date" => ColumnKind::Date,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnKind::Bytes,
        _ => ColumnKind::Other,
    }
}

/// Maps an SQLite declared type to a kind, by SQLite's affinity rules, with dates recognised by
/// name (SQLite has no date type; `DATE`, `DATETIME`, `TIMESTAMP` are conventions).
pub fn sqlite_kind(declared: &str) -> ColumnKind {
    let t = declared.to_ascii_uppercase();
    if t.contains("TIMESTAMP") || t.contains("DATETIME") {
        ColumnKind::Timestamp { tz: false }
    } else if t.contains("DATE") {
        ColumnKind::Date
    } else if t.contains("INT") {
        ColumnKind::Int
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ColumnKind::Text
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnKind::Float
    } else if t.contains("BOOL") {
        ColumnKind::Bool
    } else if t.contains("BLOB") {
        ColumnKind::Bytes
    } else {
        ColumnKind::Other
    }
}

pub const PG_COLUMNS: &str =
    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, NOT a.attnotnull, \
     CASE WHEN t.typname IN ('varchar','bpchar') AND a.atttypmod > 4 THEN (a.atttypmod - 4)::int8 END, \
     a.attgenerated <> '' OR a.attidentity = 'a' \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// The columns of any unique index or constraint: alone or with others (`UNIQUE (tenant,
/// email)`), partial, on a prefix, or in an index expression (PostgreSQL: the column named in
/// it). A value many records share (a constant, a bucket) collides in any of them, and the
/// index refuses the batch on every run (before, only single-column whole indexes counted).
pub const PG_UNIQUE: &str = "SELECT DISTINCT a.attname::text FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique \
     AND (a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]) OR (i.indexprs IS NOT NULL \
          AND pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || regexp_replace(a.attname, '(\\W)', '\\\\\\1', 'g') || '\\M')))";
pub const MY_UNIQUE: &str = "SELECT DISTINCT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 AND COLUMN_NAME IS NOT NULL";
/// MariaDB/MySQL: whether a column leads an index (the primary key's included), so that the
/// key range of the rows a range of it selects is read from that index alone (`counts`).
pub const MY_LEADS_INDEX: &str = "SELECT COUNT(*) FROM information_schema.STATISTICS \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND COLUMN_NAME = ? AND SEQ_IN_INDEX = 1";
pub const LITE_UNIQUE: &str =
    "SELECT DISTINCT ii.name FROM pragma_index_list(?) AS l, pragma_index_info(l.name) AS ii \
     WHERE l.\"unique\" = 1 AND ii.name IS NOT NULL";

pub const PG_PRIMARY_KEY: &str = "SELECT a.attname::text FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
     ORDER BY array_position(i.indkey::int2[], a.attnum)";

/// (A partitioned table's foreign key is one constraint: the copies PostgreSQL keeps on each of
/// its partitions, whose parent constraint references the same table, are not asked for again;
/// before, every new partition made every run exit 2 until it was declared; found by a review.
/// A copy made for a referenced partition, whose parent references the partitioned table, is
/// kept: a policy on that partition has that dependent. A foreign key that references one
/// partition of a partitioned policy table is that table's dependent too: a delete through the
/// parent reaches the partition's rows, and before, its cascade went unseen; found by a review.)
pub const PG_REFERENCED_BY: &str = "SELECT c.conname::text, c.conrelid::regclass::text, \
     CASE WHEN c.confrelid <> to_regclass($1) THEN c.confrelid::regclass::text END, \
     (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(num, ord) \
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num), \
     (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(num, ord) \
        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num) \
     FROM pg_constraint c WHERE c.contype = 'f' \
     AND (c.confrelid = to_regclass($1) OR c.confrelid IN (SELECT relid FROM pg_partition_tree(to_regclass($1)))) \
     AND NOT EXISTS (SELECT 1 FROM pg_constraint pc WHERE pc.oid = c.conparentid \
       AND (pc.confrelid = to_regclass($1) OR pc.confrelid IN (SELECT relid FROM pg_partition_tree(to_regclass($1))))) \
     ORDER BY 2, 1";

pub const MY_COLUMNS: &str = "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), CAST(DATA_TYPE AS CHAR), \
     CAST(IS_NULLABLE = 'YES' AS SIGNED), CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), \
     CAST(EXTRA LIKE '%VIRTUAL GENERATED%' OR EXTRA LIKE '%STORED GENERATED%' OR EXTRA LIKE '%PERSISTENT%' AS SIGNED), \
     CAST(LOWER(EXTRA) LIKE '%on update%' AS SIGNED) \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";

pub const MY_PRIMARY_KEY: &str = "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION";

/// A referencing table of another database than the connection's is named with its database
/// (`tenant_b.orders`), as PostgreSQL's `regclass` names one outside the search path: unqualified,
/// the cascade and restrict statements read and deleted the connection's own `orders` (found by
/// a review).
pub const MY_REFERENCED_BY: &str =
    "SELECT CAST(CONSTRAINT_NAME AS CHAR), \
     CAST(IF(TABLE_SCHEMA LIKE '%.%' OR TABLE_NAME LIKE '%.%', CONCAT('\"', TABLE_SCHEMA, '.', TABLE_NAME, '\"'), \
       IF(TABLE_SCHEMA = DATABASE(), TABLE_NAME, CONCAT(TABLE_SCHEMA, '.', TABLE_NAME))) AS CHAR), CAST(COLUMN_NAME AS CHAR), \
     CAST(REFERENCED_COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
     WHERE REFERENCED_TABLE_SCHEMA = COALESCE(?, DATABASE()) AND REFERENCED_TABLE_NAME = ? \
     AND (@@lower_case_table_names <> 0 OR BINARY REFERENCED_TABLE_NAME = BINARY ?) \
     ORDER BY TABLE_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION";

/// MariaDB's `JSON` is `LONGTEXT` with a `json_valid` check; MySQL's is a type of its own
/// (`DATA_TYPE` `json`), and its `CHECK_CONSTRAINTS` has no `TABLE_NAME`.
pub const MARIADB_CHECKS: &str = "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
     WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";

/// Whether a text is JSON (1), for a constant meant for a JSON column.
pub const MY_JSON_VALID: &str = "SELECT CAST(JSON_VALID(?) AS SIGNED)";

/// Whether a MariaDB check clause is the one that makes `column` hold only JSON: its `JSON`
/// type's column check, or the same written as a table check (MariaDB writes both as
/// ``json_valid(`column`)``).
pub fn is_json_check(clause: &str, column: &str) -> bool {
    clause.trim() == format!("json_valid(`{}`)", column.replace('`', "``"))
}

/// The canonical name and relation kind of a table (see `Connector::identify`).
/// The table's name, kind and place (`TableIdentity::place`; a start time as microseconds since
/// the epoch, whatever the session's time zone and float format).
pub const PG_IDENTIFY: &str = "SELECT n.nspname::text || '.' || c.relname::text, \
     CASE WHEN c.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid) \
       THEN 'inherited' ELSE c.relkind::text END, \
     'postgres/' || (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text || '/' || \
     (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())::text || '/' || c.oid::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";
/// PostgreSQL: a relation's kind (`r` a plain table, `v` a view…), or none.
pub const PG_RELKIND: &str = "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)";
pub const MY_IDENTIFY: &str = "SELECT CAST(CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) AS CHAR), CAST(TABLE_TYPE AS CHAR), \
     CAST(CONCAT_WS('/', 'mysql', @@hostname, @@port, @@datadir, @@server_id, TABLE_SCHEMA, TABLE_NAME, \
     UNIX_TIMESTAMP(CREATE_TIME)) AS CHAR) \
     FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?";
pub const LITE_IDENTIFY: &str =
    "SELECT lower(name), type FROM sqlite_master WHERE name = ? COLLATE NOCASE AND type IN ('table', 'view')";

/// What a relation is when it is not a base table, from its catalog kind (PostgreSQL `relkind`,
/// MariaDB/MySQL `TABLE_TYPE`, SQLite `type`).
pub fn not_a_table(kind: &str) -> Option<&'static str> {
    match kind {
        "v" | "VIEW" | "view" => Some("view"),
        "m" => Some("materialized view"),
        // (Found by a read-only review: a delete or update there destroyed nothing of the old
        // row versions it keeps; and a parent's delete took its inheritance children's rows,
        // which no policy names, with their foreign keys unchecked.)
        "SYSTEM VERSIONED" => Some("system-versioned table (it keeps every old version of a row)"),
        "inherited" => Some("table with inheritance children (a delete there deletes their rows too)"),
        _ => None,
    }
}

/// `table_xinfo` lists generated columns too (`hidden` 2 and 3); 1 is a virtual table's hidden
/// column, which is not the table's.
pub const LITE_COLUMNS: &str =
    "SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid";

pub const LITE_TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name";

pub const LITE_FOREIGN_KEYS: &str =
    "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?) ORDER BY id, seq";

/// MariaDB/MySQL: why a policy's constant would not fit a column of type `column_type`
/// (`COLUMN_TYPE`), as strict mode refuses it at the write (every run's batches failed); `None`
/// when it fits, or for a type not checked here. Integers by the column's own range (a decimal
/// is rounded), `DECIMAL(p,s)` by the digits before the point, `YEAR`, `TIMESTAMP`'s range,
/// `TIME`'s form and range, and the byte lengths of `BINARY`, `VARBINARY`, the `TEXT`s and
/// `BLOB`s, the characters of the `TEXT`s (a `VARCHAR`'s are measured by `validate`).
pub fn my_misfit(
    column_type: &str,
    value: &crate::value::Value,
    timestamp_max: chrono::NaiveDateTime,
) -> Option<String> {
    use crate::value::Value;
    let text = match value {
        Value::Text(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => u8::from(*b).to_string(),
        _ => return None,
    };
    let t = column_type.trim().to_ascii_lowercase();
    let base: String = t.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let args: Vec<u64> = t
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let unsigned = t.contains("unsigned");
    let s = text.trim();
    let number = || s.parse::<f64>().ok().filter(|x| x.is_finite());
    let bytes = |max: u64| {
        let n = text.len() as u64;
        (n > max).then(|| format!("it holds at most {max} bytes; the constant has {n}"))
    };
    let chars = |max: u64| {
        let n = text.chars().count() as u64;
        (n > max).then(|| format!("it holds at most {max} bytes; the constant has {n} characters"))
    };
    match base.as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
            let bits = match base.as_str() {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" | "integer" => 32,
                _ => 64,
            };
            let (lo, hi) = match unsigned {
                true => (0i128, (1i128 << bits) - 1),
                false => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
            };
            let Some(x) = number() else { return Some("it is not a number".into()) };
            let r = x.round();
            (r < lo as f64 || r > hi as f64).then(|| format!("it is out of the column's range ({lo} to {hi})"))
        }
        "decimal" | "numeric" | "dec" | "fixed" => {
            let p = args.first().copied().unwrap_or(10);
            let scale = args.get(1).copied().unwrap_or(0);
            let Some(x) = number() else { return Some("it is not a number".into()) };
            if unsigned && x < 0.0 {
                return Some("the column holds no negative number".into());
            }
            let whole = x.abs().trunc();
            let digits = if whole < 1.0 { 0 } else { format!("{whole:.0}").len() as u64 };
            (digits > p.saturating_sub(scale))
                .then(|| format!("it holds at most {} digits before the point", p.saturating_sub(scale)))
        }
        "year" => {
            let ok = s.parse::<i64>().is_ok_and(|y| y == 0 || (1..=99).contains(&y) || (1901..=2155).contains(&y));
            (!ok).then(|| "a year from 1901 to 2155 (or 0)".into())
        }
        "timestamp" => {
            let at = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
                .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
            let lo = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 1));
            match (at, lo) {
                (Some(at), Some(lo)) if at < lo || at > timestamp_max => {
                    Some(format!("a TIMESTAMP holds {lo} to {timestamp_max} (UTC) on this server"))
                }
                _ => None,
            }
        }
        "time" => {
            // [-][D ]H[H…][:MM[:SS[.f]]], or a number read as [H…]HMMSS[.f]; at most 838:59:59.
            let body = s.strip_prefix('-').unwrap_or(s);
            let whole = body.split('.').next().unwrap_or_default();
            let ok = if !body.contains(':') && !body.contains(' ') {
                let n = whole.parse::<u64>().ok();
                let frac_ok = body.split('.').nth(1).is_none_or(|f| f.bytes().all(|b| b.is_ascii_digit()));
                matches!(n, Some(n) if frac_ok && n % 100 < 60 && n / 100 % 100 < 60 && n / 10_000 <= 838)
            } else {
                let (days, rest) = match body.split_once(' ') {
                    Some((d, r)) => (d.parse::<u64>().ok(), r),
                    None => (Some(0), body),
                };
                let mut parts = rest.split(':');
                let hours = parts.next().and_then(|h| h.parse::<u64>().ok());
                let min_sec_ok = parts.enumerate().all(|(i, p)| {
                    let p = if i == 1 { p.split('.').next().unwrap_or_default() } else { p };
                    i < 2 && p.len() <= 2 && p.parse::<u64>().is_ok_and(|v| v < 60)
                });
                matches!((days, hours), (Some(d), Some(h)) if min_sec_ok && d * 24 + h <= 838)
            };
            (!ok).then(|| "a time as \"10:00:00\", at most 838:59:59".into())
        }
        "binary" | "varbinary" => bytes(args.first().copied().unwrap_or(1)),
        "tinyblob" => bytes(255),
        "blob" => bytes(args.first().copied().unwrap_or(65_535)),
        "mediumblob" => bytes(16_777_215),
        // Text in the column's character set, which this does not know: at least a byte a
        // character (a utf8mb4 column refuses more at the write; never refused here wrongly).
        "tinytext" => chars(255),
        "text" => chars(args.first().copied().unwrap_or(65_535)),
        "mediumtext" => chars(16_777_215),
        _ => None,
    }
}

/// MariaDB/MySQL: the latest instant a `TIMESTAMP` holds, by the server's `VERSION()`: MariaDB
/// 11.5 took it from 2038 to 2106 (unsigned seconds); MySQL and earlier MariaDB stop in 2038.
pub fn my_timestamp_max(version: &str) -> chrono::NaiveDateTime {
    let mut nums = version.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let wide = version.contains("MariaDB") && (major, minor) >= (11, 5);
    let (date, time) = match wide {
        true => (chrono::NaiveDate::from_ymd_opt(2106, 2, 7), chrono::NaiveTime::from_hms_opt(6, 28, 15)),
        false => (chrono::NaiveDate::from_ymd_opt(2038, 1, 19), chrono::NaiveTime::from_hms_opt(3, 14, 7)),
    };
    date.zip(time).map(|(d, t)| d.and_time(t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{my_misfit, my_timestamp_max};
    use crate::value::Value;

    fn fits(t: &str, v: Value) -> bool {
        my_misfit(t, &v, my_timestamp_max("10.11.19-MariaDB-0+deb12u1")).is_none()
    }

    /// The cases a review found passing `validate --connect` and failing every run (strict
    /// mode), and their neighbours that fit.
    #[test]
    fn mariadb_constants_that_do_not_fit_their_column() {
        assert!(!fits("int(11)", Value::Int(9_999_999_999)));
        assert!(fits("int(11)", Value::Int(2_147_483_647)));
        assert!(!fits("int(10) unsigned", Value::Int(-1)));
        assert!(fits("bigint(20)", Value::Int(9_999_999_999)));
        assert!(!fits("tinyint(4)", Value::Text("abc".into())));
        assert!(!fits("decimal(5,2)", Value::Int(12345)));
        assert!(fits("decimal(5,2)", Value::Float(123.456)), "rounded, as the server does");
        assert!(fits("decimal(5,2)", Value::Text("-999.99".into())));
        assert!(!fits("timestamp", Value::Text("1900-01-01 00:00:00".into())));
        assert!(fits("timestamp", Value::Text("2000-01-01 00:00:00".into())));
        assert!(!fits("year(4)", Value::Int(1800)));
        assert!(fits("year", Value::Int(2000)));
        assert!(!fits("varbinary(4)", Value::Text("abcdefgh".into())));
        assert!(fits("varbinary(4)", Value::Text("abcd".into())));
        assert!(!fits("time", Value::Text("zz".into())));
        assert!(fits("time", Value::Text("10:00:00".into())));
        assert!(fits("time", Value::Text("-838:59:59".into())));
        assert!(!fits("time", Value::Text("839:00:00".into())));
        assert!(fits("time", Value::Text("1 10:00:00.5".into())));
        assert!(!fits("tinyblob", Value::Text("é".repeat(200))));
        assert!(fits("tinytext", Value::Text("é".repeat(200))), "a latin1 column holds them");
        assert!(!fits("tinytext", Value::Text("x".repeat(256))));
        assert!(fits("time", Value::Int(100_000)), "10:00:00");
        assert!(fits("time", Value::Text("1000".into())), "00:10:00");
        assert!(fits("time", Value::Float(10.5)));
        assert!(!fits("time", Value::Int(8_400_000)));
        assert!(!fits("timestamp", Value::Text("2050-01-01 00:00:00".into())));
        let wide = my_timestamp_max("11.8.2-MariaDB");
        assert!(my_misfit("timestamp", &Value::Text("2050-01-01 00:00:00".into()), wide).is_none());
        assert!(my_misfit("timestamp", &Value::Text("2107-01-01 00:00:00".into()), wide).is_some());
        assert_eq!(my_timestamp_max("8.0.36"), my_timestamp_max("10.11.19-MariaDB"));
        assert!(fits("varchar(3)", Value::Int(123_456)), "characters: measured by validate");
        assert!(fits("json", Value::Text("{}".into())));
    }
}
