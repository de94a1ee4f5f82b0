//! Anonymization strategies and what each does to a value.
//!
//! Every strategy here except [`Strategy::Pseudonymize`] is irreversible: the output cannot be
//! linked back to the input. [`Strategy::apply`] is the definition of each strategy. Where a
//! database can compute a strategy itself, `sql::builder::Builder::in_place_form` spells it in
//! SQL, with a guard that admits only the values for which the SQL gives exactly what `apply`
//! gives; every other value is computed here and bound.

use std::fmt;
use std::net::IpAddr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use sha2::Sha256;

use crate::policy::condition::Literal;
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DateUnit {
    Month,
    Year,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Set the column to NULL.
    Nullify,
    /// Replace with a constant.
    Constant(Literal),
    /// Truncate a date or timestamp to the first instant of its month or year.
    GeneralizeDate(DateUnit),
    /// Keep the network of an IP address: IPv4 /24, IPv6 /48 (6to4: /40, its IPv4's /24).
    GeneralizeIp,
    /// Replace a number by the lower bound of its bucket of this width.
    Bucket(f64),
    /// Keep the first N characters.
    KeepPrefix(usize),
    /// Replace with a fresh random token (`anon_` + 32 hex digits) that links nothing.
    RandomToken,
    /// Keyed hash with a kept key. Linkable by whoever holds the key: pseudonymization, not
    /// anonymization, and reported as such.
    Pseudonymize,
}

/// The prefix of a random token; a value that already looks like a token is left alone, so a
/// second run changes nothing.
pub const TOKEN_PREFIX: &str = "anon_";

/// The prefix of a pseudonym (32 hex digits of a keyed hash follow); likewise left alone.
pub const PSEUDONYM_PREFIX: &str = "pse_";

impl Strategy {
    pub fn is_anonymization(&self) -> bool {
        !matches!(self, Strategy::Pseudonymize)
    }

    /// The method name used in reports.
    pub fn method(&self) -> String {
        match self {
            Strategy::Nullify => "nullify".into(),
            Strategy::Constant(_) => "constant".into(),
            Strategy::GeneralizeDate(DateUnit::Month) => "generalize_date(month)".into(),
            Strategy::GeneralizeDate(DateUnit::Year) => "generalize_date(year)".into(),
            Strategy::GeneralizeIp => "generalize_ip(/24,/48)".into(),
            Strategy::Bucket(w) => format!("bucket({w})"),
            Strategy::KeepPrefix(n) => format!("keep_prefix({n})"),
            Strategy::RandomToken => "random_token".into(),
            Strategy::Pseudonymize => "pseudonymize(hmac-sha256)".into(),
        }
    }

    /// Parses the `anonymize:` value of a column: a name (`nullify`) or a one-key mapping
    /// (`{constant: 'redacted'}`).
    pub fn from_yaml(v: &serde_yaml_ng::Value) -> Result<Strategy, String> {
        use serde_yaml_ng::Value as Y;
        const HELP: &str = "expected one of: nullify, random_token, generalize_ip, pseudonymize, {constant: V}, {generalize_date: month|year}, {bucket: N}, {keep_prefix: N}";
        match v {
            Y::String(s) => match s.as_str() {
                "nullify" | "null" => Ok(Strategy::Nullify),
                "random_token" => Ok(Strategy::RandomToken),
                "generalize_ip" => Ok(Strategy::GeneralizeIp),
                "pseudonymize" => Ok(Strategy::Pseudonymize),
                "hash" | "sha256" | "md5" => Err(format!(
                    "'{s}' is not an anonymization strategy: an unsalted hash can be reversed by hashing candidates; use random_token, or pseudonymize (keyed, reported as pseudonymization)"
                )),
                "generalize_date" | "constant" | "bucket" | "keep_prefix" => {
                    Err(format!("strategy '{s}' needs a parameter, e.g. {{{s}: ...}}; {HELP}"))
                }
                other => Err(format!("unknown anonymization strategy '{other}'; {HELP}")),
            },
            Y::Null => Ok(Strategy::Nullify),
            Y::Mapping(m) if m.len() == 1 => {
                let (k, val) = m.iter().next().expect("one entry");
                let name = k.as_str().unwrap_or_default();
                match name {
                    "constant" => {
                        let lit = match val {
                            Y::String(s) => Literal::Text(s.clone()),
                            Y::Bool(b) => Literal::Bool(*b),
                            Y::Number(n) if n.is_i64() => Literal::Int(n.as_i64().unwrap_or_default()),
                            Y::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                                Literal::Float(n.as_f64().unwrap_or_default())
                            }
                            // `.nan` was written as NULL (and counted anonymized), `.inf` refused
                            // by the database at the run.
                            Y::Number(_) => return Err("constant must be a finite number (not .nan or .inf)".into()),
                            _ => return Err("constant must be a string, number or boolean".into()),
                        };
                        Ok(Strategy::Constant(lit))
                    }
                    "generalize_date" => match val.as_str() {
                        Some("month") => Ok(Strategy::GeneralizeDate(DateUnit::Month)),
                        Some("year") => Ok(Strategy::GeneralizeDate(DateUnit::Year)),
                        _ => Err("generalize_date takes 'month' or 'year'".into()),
                    },
                    "bucket" => match val.as_f64() {
                        Some(w) if w > 0.0 && w.is_finite() => Ok(Strategy::Bucket(w)),
                        _ => Err("bucket takes a positive width, e.g. {bucket: 10}".into()),
                    },
                    "keep_prefix" => match val.as_u64() {
                        Some(n) if n > 0 && n <= 64 => Ok(Strategy::KeepPrefix(n as usize)),
                        _ => Err("keep_prefix takes a whole number of characters from 1 to 64".into()),
                    },
                    other => Err(format!("unknown anonymization strategy '{other}'; {HELP}")),
                }
            }
            _ => Err(format!("invalid anonymization strategy; {HELP}")),
        }
    }

    /// Whether the database can tell, without Rust's help, that a value still needs work (and
    /// which test to use). Strategies that answer `None` are checked in Rust after reading.
    pub fn pending_test(&self) -> Option<PendingTest> {
        match self {
            Strategy::Nullify => Some(PendingTest::NotNull),
            Strategy::Constant(l) => Some(PendingTest::NotEqual(literal_value(l))),
            Strategy::RandomToken => Some(PendingTest::NotToken(TOKEN_PREFIX.into())),
            Strategy::Pseudonymize => Some(PendingTest::NotToken(PSEUDONYM_PREFIX.into())),
            Strategy::GeneralizeIp => Some(PendingTest::NotIpNetwork),
            Strategy::GeneralizeDate(unit) => Some(PendingTest::NotTruncated(*unit)),
            Strategy::KeepPrefix(n) => Some(PendingTest::LongerThan(*n)),
            Strategy::Bucket(w) => Some(PendingTest::NotMultipleOf(*w)),
        }
    }

    /// The anonymized form of `v`. `Ok(None)` means "already in anonymized form, leave it".
    pub fn apply(&self, v: &Value, pseudonym_key: Option<&[u8]>) -> Result<Option<Value>, String> {
        let new = match (self, v) {
            (_, Value::Null) => return Ok(None),
            (Strategy::Nullify, _) => Value::Null,
            (Strategy::Constant(l), v) if same_constant(v, l) => return Ok(None),
            (Strategy::Constant(l), _) => literal_value(l),
            (Strategy::RandomToken, Value::Text(s)) if is_token(s) => return Ok(None),
            (Strategy::RandomToken, _) => {
                let mut bytes = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut bytes);
                Value::Text(format!("{TOKEN_PREFIX}{}", hex16(&bytes)))
            }
            (Strategy::Pseudonymize, Value::Text(s)) if is_shaped(PSEUDONYM_PREFIX, s) => return Ok(None),
            (Strategy::Pseudonymize, other) => {
                let key = pseudonym_key.ok_or("pseudonymize needs a pseudonymization key in the worker config")?;
                let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
                mac.update(other.canonical().as_bytes());
                Value::Text(format!("{PSEUDONYM_PREFIX}{}", hex16(&mac.finalize().into_bytes()[..16])))
            }
            (Strategy::GeneralizeDate(unit), Value::Timestamp(t)) => Value::Timestamp(truncate(*t, *unit)),
            (Strategy::GeneralizeDate(unit), Value::Date(d)) => {
                Value::Date(truncate(d.and_hms_opt(0, 0, 0).expect("midnight"), *unit).date())
            }
            // Empty or blank text (spaces, as SQL's `TRIM` strips) holds no date or address (a
            // `NOT NULL DEFAULT ''` column):
            // nothing to generalize. (Before, an error, which failed the whole row: its other
            // columns, an e-mail, were kept on every run; found by a review.) The pending test
            // agrees (`Builder::filter`, `Filter::Pending`).
            (Strategy::GeneralizeDate(_) | Strategy::GeneralizeIp, Value::Text(s))
                if s.trim_matches(' ').is_empty() =>
            {
                return Ok(None)
            }
            (Strategy::GeneralizeDate(unit), Value::Text(s)) => Value::Text(truncate_text(s, *unit)?),
            (Strategy::GeneralizeIp, Value::Text(s)) => Value::Text(generalize_ip(s)?),
            (Strategy::Bucket(w), Value::Int(i)) if w.fract() == 0.0 => {
                let w = *w as i64;
                Value::Int(i.div_euclid(w.max(1)) * w.max(1))
            }
            // A fractional width on an integer (validation refuses it for an integer column;
            // SQLite keeps integers in any column): the float bound, or nothing if it is the
            // integer itself.
            (Strategy::Bucket(w), Value::Int(i)) => {
                let b = (*i as f64 / w).floor() * w;
                if b == *i as f64 {
                    return Ok(None);
                }
                Value::Float(b)
            }
            (Strategy::Bucket(w), Value::Float(x)) => Value::Float((x / w).floor() * w),
            (Strategy::KeepPrefix(n), Value::Text(s)) => Value::Text(s.chars().take(*n).collect()),
            (s, other) => {
                return Err(format!("strategy {} cannot be applied to a {} value", s.method(), other.kind_name()))
            }
        };
        Ok(if &new == v { None } else { Some(new) })
    }
}

/// A test the database runs to find values that still need anonymizing.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingTest {
    NotNull,
    NotEqual(Value),
    /// Not the prefix followed by 32 hex digits and nothing else: a random token or a
    /// pseudonym as lapse writes them (a value that only starts with the prefix, such as
    /// `anon_jsmith@example.com`, is still to do).
    NotToken(String),
    /// Not an IPv4 /24 network (`a.b.c.0`) nor an IPv6 /48 (`a:b:c::`).
    NotIpNetwork,
    /// Not the first instant of its month/year.
    NotTruncated(DateUnit),
    /// Longer than N characters.
    LongerThan(usize),
    /// A number that is not the lower bound of its bucket (`floor(x / w) * w`).
    NotMultipleOf(f64),
}

/// `v` is the constant `l` as a column stores it: the same value, or the same number or
/// truth value written otherwise (SQLite's `TEXT` column stores `0.0` as `'0.0'` and `true` as
/// `'1'`; PostgreSQL's text cast of `true` is `'true'`): done, not anonymized again and again
/// (found by a review).
fn same_constant(v: &Value, l: &Literal) -> bool {
    let lit = literal_value(l);
    if *v == lit {
        return true;
    }
    let number = |x: &Value| match x {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Text(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    };
    match (v, &lit) {
        (Value::Text(s), Value::Bool(b)) if s.trim().eq_ignore_ascii_case(if *b { "true" } else { "false" }) => true,
        _ => matches!((number(v), number(&lit)), (Some(a), Some(b)) if a == b),
    }
}

pub fn literal_value(l: &Literal) -> Value {
    match l {
        Literal::Text(s) => Value::Text(s.clone()),
        Literal::Int(i) => Value::Int(*i),
        Literal::Float(f) => Value::Float(*f),
        Literal::Bool(b) => Value::Bool(*b),
    }
}

fn is_token(s: &str) -> bool {
    is_shaped(TOKEN_PREFIX, s)
}

/// `s` is `prefix` and 32 hex digits: a random token or a pseudonym.
fn is_shaped(prefix: &str, s: &str) -> bool {
    s.len() == prefix.len() + 32 && s.starts_with(prefix) && s[prefix.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn truncate(t: NaiveDateTime, unit: DateUnit) -> NaiveDateTime {
    let d = t.date();
    let first = match unit {
        DateUnit::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1),
        DateUnit::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1),
    };
    first.expect("valid first day").and_hms_opt(0, 0, 0).expect("midnight").with_nanosecond(0).expect("ns")
}

/// Dates stored as text (SQLite): keeps the stored shape (`YYYY-MM-DD` or a timestamp).
fn truncate_text(s: &str, unit: DateUnit) -> Result<String, String> {
    // MariaDB's zero date says nothing of anyone: nothing to generalize.
    if s.starts_with("0000-00-00") {
        return Ok(s.to_string());
    }
    // SQLite reads text only up to its first NUL (as `julianday`, `LENGTH` and `GLOB` do).
    let s = s.split('\0').next().unwrap_or_default();
    let date = s
        .get(..10)
        .filter(|p| p.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() }))
        .and_then(|p| NaiveDate::parse_from_str(p, "%Y-%m-%d").ok())
        .ok_or("value is not an ISO date")?;
    // A time with a zone offset is read (SQLite's `julianday`) as the UTC instant, and what is
    // written has no offset, so reads as UTC: generalized from the UTC date, never later than
    // the value (`2020-06-01 02:00+05:00` is May 31 in UTC: `2020-05-01`, not `2020-06-01`,
    // which would move a lapse up to 15 hours later). `2020-05-31 24:00` is June's.
    let date = match sqlite_utc_millis(&s.as_bytes()[10..])? {
        None => date,
        Some(ms) => {
            let utc = (date.and_hms_opt(0, 0, 0).expect("midnight") + chrono::Duration::milliseconds(ms)).date();
            // SQLite writes no date outside years 0–9999 as one (nor does `%Y` in four digits).
            if !(0..=9999).contains(&utc.year()) {
                return Err("value's UTC date is outside the years 0000-9999".into());
            }
            utc
        }
    };
    let t = truncate(date.and_hms_opt(0, 0, 0).expect("midnight"), unit);
    // The value's own shape, never longer (a `VARCHAR(16)` of `YYYY-MM-DD HH:MM` would not hold
    // seconds): a date alone, a time to the minute, or to the second.
    let shape = if s.len() == 10 {
        "%Y-%m-%d"
    } else if to_the_minute(&s[10..]) {
        "%Y-%m-%d %H:%M"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    Ok(t.format(shape).to_string())
}

/// What follows a date is a time to the minute, `HH:MM` with no seconds, as SQLite's
/// `lite_generalize_date` tells it (after any whitespace or `T`, a `:` third and none sixth,
/// counted in characters): the shape `truncate_text` keeps.
pub(crate) fn to_the_minute(rest: &str) -> bool {
    let mut t = rest.trim_start_matches(|c: char| c == 'T' || c == ' ' || ('\t'..='\r').contains(&c)).chars();
    t.nth(2) == Some(':') && t.nth(2) != Some(':')
}

/// What follows a date `YYYY-MM-DD`, read as SQLite reads it (date.c, `parseYyyyMmDd`): a run of
/// whitespace (`\t\n\v\f\r `) or `T`, then a time `HH:MM[:SS[.F…]]` (`HH` to 24, `24:00` being
/// the next day's midnight) and a zone (whitespace, then nothing, `Z` or `±HH:MM` up to `14:59`,
/// then whitespace). The milliseconds from the date's midnight to the UTC instant, computed as
/// SQLite computes them (`(SS.F × 1000 + 0.5)` in doubles, truncated); `None` where SQLite reads
/// no time (nothing follows, or what follows is no time: the value then reads as the date, or
/// as no instant). A fraction of hundreds of digits is no number (infinity over infinity),
/// whose conversion C leaves undefined: refused.
fn sqlite_utc_millis(rest: &[u8]) -> Result<Option<i64>, String> {
    Ok(match sqlite_time(rest) {
        None => None,
        Some((_, frac, _)) if !frac.is_finite() => return Err("value's fraction of a second is out of range".into()),
        Some((hm, frac, tz)) => Some(hm + frac as i64 - tz * 60_000),
    })
}

/// The parts of `sqlite_utc_millis`: the milliseconds of hours and minutes, the seconds'
/// `SS.F × 1000 + 0.5` and the offset in minutes.
fn sqlite_time(rest: &[u8]) -> Option<(i64, f64, i64)> {
    let space = |b: &u8| *b == b' ' || (9..=13).contains(b);
    let r = &rest[rest.iter().take_while(|b| space(b) || **b == b'T').count()..];
    let two = |j: usize, max: i64| -> Option<i64> {
        let (a, b) = (*r.get(j)?, *r.get(j + 1)?);
        let v = (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))?;
        (v <= max).then_some(v)
    };
    let (h, m) = (two(0, 24)?, two(3, 59)?);
    if r.get(2) != Some(&b':') {
        return None;
    }
    let mut j = 5;
    let mut sec = 0f64;
    if r.get(j) == Some(&b':') {
        sec = two(j + 1, 59)? as f64;
        j += 3;
        if r.get(j) == Some(&b'.') && r.get(j + 1).is_some_and(u8::is_ascii_digit) {
            let (mut f, mut scale) = (0f64, 1f64);
            j += 1;
            while let Some(d) = r.get(j).filter(|d| d.is_ascii_digit()) {
                // As C evaluates `ms*10.0 + *zDate - '0'` (the order rounds differently past
                // 2^53, in long fractions).
                f = (f * 10.0 + f64::from(*d)) - 48.0;
                scale *= 10.0;
                j += 1;
            }
            sec += f / scale;
        }
    }
    j += r[j..].iter().take_while(|b| space(b)).count();
    let tz = match r.get(j) {
        None => 0,
        Some(b'Z' | b'z') => {
            j += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if r.get(j + 3) != Some(&b':') {
                return None;
            }
            let o = two(j + 1, 14)? * 60 + two(j + 4, 59)?;
            j += 6;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        Some(_) => return None,
    };
    j += r[j..].iter().take_while(|b| space(b)).count();
    (j == r.len()).then_some((h * 3_600_000 + m * 60_000, sec * 1000.0 + 0.5, tz))
}

/// The /24 (IPv4) or /48 (IPv6) network of an address. A `/mask` after it is kept as written
/// (an `inet` column's text includes one: `10.1.2.3/32` becomes `10.1.2.0/32`, which the column
/// gives back as it was, so the value is done).
fn generalize_ip(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (addr, mask) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| "value is not an IP address".to_string())?;
    // A mask is a prefix length or an IPv4 netmask, kept as written; anything else after a `/`
    // (`10.0.0.0/8, 203.0.113.7`) is not one address: failed, not passed for a network.
    if let Some(m) = mask {
        let length = !m.is_empty() && m.len() <= 3 && m.bytes().all(|b| b.is_ascii_digit());
        if !length && m.parse::<std::net::Ipv4Addr>().is_err() {
            return Err("value is not an IP address (with a prefix length or netmask)".into());
        }
    }
    let net = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0", o[0], o[1], o[2])
        }
        // An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, how MariaDB's INET6 keeps one):
        // its /24, written the same way.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            let o = v6.to_ipv4_mapped().expect("mapped").octets();
            format!("::ffff:{}.{}.{}.0", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            for s in seg.iter_mut().skip(3) {
                *s = 0;
            }
            // 6to4 (`2002::/16`): bits 16 to 47 are the whole IPv4 address, which the /48 would
            // keep. Its /24, as for the address written as IPv4: a /40.
            if seg[0] == 0x2002 {
                seg[2] &= 0xff00;
            }
            std::net::Ipv6Addr::from(seg).to_string()
        }
    };
    Ok(match mask {
        Some(m) => format!("{net}/{m}"),
        None => net,
    })
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.method())
    }
}

/// Hex digits of 16 bytes (`hex::encode` builds its string a char at a time; this runs per cell).
fn hex16(bytes: &[u8]) -> String {
    let mut out = [0u8; 32];
    hex::encode_to_slice(bytes, &mut out).expect("16 bytes fit 32 hex digits");
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    /// A constant already stored, however the column writes it, is done.
    #[test]
    fn a_constant_stored_otherwise_is_done() {
        let c = |l: Literal| Strategy::Constant(l);
        assert_eq!(c(Literal::Float(0.0)).apply(&t("0.0"), None), Ok(None));
        assert_eq!(c(Literal::Bool(true)).apply(&t("1"), None), Ok(None));
        assert_eq!(c(Literal::Bool(true)).apply(&t("true"), None), Ok(None));
        assert_eq!(c(Literal::Int(0)).apply(&Value::Float(0.0), None), Ok(None));
        assert_eq!(c(Literal::Int(0)).apply(&t("x"), None), Ok(Some(Value::Int(0))));
        assert_eq!(c(Literal::Text("n/a".into())).apply(&t("N/A"), None), Ok(Some(t("n/a"))));
    }

    /// Blank text holds no date and no address: left as it is, not an error (which failed the
    /// whole row, its other columns kept; found by a review).
    #[test]
    fn blank_text_holds_nothing_to_generalize() {
        for blank in ["", " ", "   "] {
            assert_eq!(Strategy::GeneralizeIp.apply(&t(blank), None), Ok(None), "{blank:?}");
            assert_eq!(Strategy::GeneralizeDate(DateUnit::Year).apply(&t(blank), None), Ok(None), "{blank:?}");
        }
        // Other whitespace is not blank to SQL's `TRIM` either: an error on both sides, never
        // due on one and done on the other.
        assert!(Strategy::GeneralizeIp.apply(&t("\t"), None).is_err());
        assert!(Strategy::GeneralizeIp.apply(&t("x"), None).is_err());
    }

    /// A token or a pseudonym is recognised by its whole shape, not its prefix: a value that
    /// only starts with `anon_` or `pse_` is personal data still to do.
    #[test]
    fn tokens_and_pseudonyms_by_their_whole_shape() {
        let key = Some(&b"k"[..]);
        let pse = Strategy::Pseudonymize.apply(&t("pse_john@example.com"), key).unwrap().expect("pseudonymized");
        assert!(matches!(&pse, Value::Text(p) if is_shaped(PSEUDONYM_PREFIX, p)), "{pse:?}");
        assert_eq!(Strategy::Pseudonymize.apply(&pse, key).unwrap(), None, "a pseudonym is kept");
        assert!(Strategy::RandomToken.apply(&t("anon_jsmith@example.com"), None).unwrap().is_some());
        assert_eq!(Strategy::RandomToken.apply(&t("anon_0123456789abcdef0123456789ABCDEF"), None).unwrap(), None);
    }

    #[test]
    fn strategies_transform_irreversibly_and_idempotently() {
        assert_eq!(Strategy::GeneralizeIp.apply(&t("192.168.17.42"), None).unwrap(), Some(t("192.168.17.0")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("192.168.17.0"), None).unwrap(), None);
        assert_eq!(Strategy::GeneralizeIp.apply(&t("2001:db8:abcd:12::1"), None).unwrap(), Some(t("2001:db8:abcd::")));
        // 6to4 keeps its embedded IPv4 address's /24 only (203.0.113.7 → 203.0.113.0).
        assert_eq!(Strategy::GeneralizeIp.apply(&t("2002:cb00:7107::1"), None).unwrap(), Some(t("2002:cb00:7100::")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("2002:cb00:7107::"), None).unwrap(), Some(t("2002:cb00:7100::")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("2002:cb00:7100::"), None).unwrap(), None);
        // A mask (PostgreSQL's `inet` as text) is kept, so the column's value is done afterwards.
        assert_eq!(Strategy::GeneralizeIp.apply(&t("10.1.2.3/32"), None).unwrap(), Some(t("10.1.2.0/32")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("10.1.2.0/32"), None).unwrap(), None);
        assert_eq!(
            Strategy::GeneralizeIp.apply(&t("203.0.113.7/255.255.255.0"), None).unwrap(),
            Some(t("203.0.113.0/255.255.255.0"))
        );
        assert!(Strategy::GeneralizeIp.apply(&t("10.0.0.0/8, 203.0.113.7"), None).is_err(), "not one address");
        assert_eq!(Strategy::GeneralizeIp.apply(&t("2001:db8:1:2::1/128"), None).unwrap(), Some(t("2001:db8:1::/128")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("::ffff:10.1.2.3"), None).unwrap(), Some(t("::ffff:10.1.2.0")));
        assert_eq!(Strategy::GeneralizeIp.apply(&t("::ffff:10.1.2.0"), None).unwrap(), None);
        assert_eq!(Strategy::Bucket(10.0).apply(&Value::Float(-15.5), None).unwrap(), Some(Value::Float(-20.0)));
        assert_eq!(Strategy::Bucket(10.0).apply(&Value::Float(20.0), None).unwrap(), None);
        assert_eq!(Strategy::KeepPrefix(2).apply(&t("SW1A 1AA"), None).unwrap(), Some(t("SW")));
        assert_eq!(Strategy::Bucket(10.0).apply(&Value::Int(37), None).unwrap(), Some(Value::Int(30)));
        assert_eq!(
            Strategy::GeneralizeDate(DateUnit::Year).apply(&t("1984-07-23"), None).unwrap(),
            Some(t("1984-01-01"))
        );
        assert_eq!(
            Strategy::GeneralizeDate(DateUnit::Month).apply(&t("2021-05-09 13:14:15"), None).unwrap(),
            Some(t("2021-05-01 00:00:00"))
        );
        // A zone offset: generalized from the UTC date (what SQLite reads the anchor as), so
        // never later than the value; written without an offset, which reads as UTC.
        for (v, want) in [
            ("2021-06-01 02:00:00+05:00", "2021-05-01 00:00:00"),
            ("2021-06-01T02:00+05:00", "2021-05-01 00:00"),
            ("2021-05-31 22:00:00.5 -05:00", "2021-06-01 00:00:00"),
            ("2021-06-01 00:00:00Z", "2021-06-01 00:00:00"),
            ("2021-06-15 10:00:00+14:59", "2021-06-01 00:00:00"),
            ("2021-06-01 02:00:00 garbage", "2021-06-01 00:00:00"),
        ] {
            assert_eq!(Strategy::GeneralizeDate(DateUnit::Month).apply(&t(v), None).unwrap(), Some(t(want)), "{v}");
        }
        assert_eq!(
            Strategy::GeneralizeDate(DateUnit::Year).apply(&t("2021-01-01 05:00:00+06:00"), None).unwrap(),
            Some(t("2020-01-01 00:00:00"))
        );
        // A time to the minute keeps its shape: never longer than the value (`VARCHAR(16)`).
        for (v, want) in [
            ("2021-05-09 13:14", Some("2021-05-01 00:00")),
            ("2021-05-09T13:14Z", Some("2021-05-01 00:00")),
            ("2021-05-01 00:00", None),
            ("2021-05-01 00:00:00", None),
            ("2021-05-31 24:00", Some("2021-06-01 00:00")),
        ] {
            assert_eq!(Strategy::GeneralizeDate(DateUnit::Month).apply(&t(v), None).unwrap(), want.map(t), "{v}");
        }
        let tok = Strategy::RandomToken.apply(&t("alice@example.com"), None).unwrap().unwrap();
        assert!(matches!(&tok, Value::Text(s) if is_token(s)));
        assert_eq!(Strategy::RandomToken.apply(&tok, None).unwrap(), None);
        assert_eq!(Strategy::Nullify.apply(&Value::Null, None).unwrap(), None);
        assert!(Strategy::GeneralizeIp.apply(&t("not-an-ip"), None).is_err());
    }

    #[test]
    fn unsalted_hashes_are_refused() {
        let err = Strategy::from_yaml(&serde_yaml_ng::Value::String("sha256".into())).unwrap_err();
        assert!(err.contains("not an anonymization strategy"));
    }
}
