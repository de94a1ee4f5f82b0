//! Legal holds from a holds file. (Holds kept in a database table are described in the worker
//! config and checked by the connector inside each destroying statement.)

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics, Location};
use crate::yamlpos::Positions;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    holds: Vec<RawHold>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHold {
    #[serde(deserialize_with = "text")]
    id: String,
    #[serde(deserialize_with = "text")]
    matter: String,
    #[serde(default)]
    reason: Option<String>,
    /// Data subjects held (values of each policy's subject column). Empty: every subject.
    #[serde(default)]
    subjects: Vec<serde_yaml_ng::Value>,
    /// Policies held. Empty: every policy.
    #[serde(default)]
    policies: Vec<String>,
    /// `YYYY-MM-DD` or RFC 3339. A hold without expiry lasts until it is removed.
    #[serde(default)]
    expires: Option<String>,
}

/// A string or a number, as text. Plain serde reads `id: ~` as the string "~": a hold whose
/// id or matter is null would pass unnoticed.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_yaml_ng::Value::deserialize(d)? {
        serde_yaml_ng::Value::String(s) => Ok(s),
        serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
        serde_yaml_ng::Value::Null => Err(serde::de::Error::custom("null where a text is required")),
        _ => Err(serde::de::Error::custom("expected a text")),
    }
}

/// A character that changes how the text around it is shown: controls (line breaks, escapes)
/// and the bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069).
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The value of an integer YAML writes in hexadecimal, octal or binary (`0x1F`, `-0o17`,
/// `0b101`, which the YAML reader takes for 5: before, only the text `0b101` was held, found by
/// a review), which no database reads as a number.
pub fn non_decimal_number(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

/// One legal hold.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub id: String,
    pub matter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Subject identifiers. Never written to reports (they are personal data).
    #[serde(skip)]
    pub subjects: Vec<String>,
    pub subject_count: usize,
    pub policies: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
    /// Where each entry of `policies` is written (for diagnostics).
    #[serde(skip)]
    pub policy_locations: Vec<Option<Location>>,
    /// Where each entry of `subjects` is written (for diagnostics).
    #[serde(skip)]
    pub subject_locations: Vec<Option<Location>>,
}

impl Hold {
    pub fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|e| e > t)
    }

    pub fn applies_to(&self, policy: &str) -> bool {
        self.policies.is_empty() || self.policies.iter().any(|p| p == policy)
    }

    /// Holds every record of the policy (no subject list).
    pub fn whole_policy(&self) -> bool {
        self.subjects.is_empty()
    }
}

/// Reads the holds file: its holds, and the SHA-256 (hex) of the bytes read (none when it
/// could not be read), which reports carry keyed (`report::Inputs`).
pub fn load(path: &Path, diags: &mut Diagnostics) -> (Vec<Hold>, Option<String>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::error(format!("cannot read holds file: {e}")).in_file(path));
            return (Vec::new(), None);
        }
    };
    let sha256 = crate::integrity::sha256_hex(&bytes);
    let holds = match crate::yamlpos::decode(path, bytes) {
        Ok(text) => parse(path, &text, diags),
        Err(d) => {
            diags.push(d);
            Vec::new()
        }
    };
    (holds, Some(sha256))
}

fn parse(path: &Path, text: &str, diags: &mut Diagnostics) -> Vec<Hold> {
    if let Some((line, column)) = crate::yamlpos::too_deep(text) {
        diags.push(crate::policy::deep_error().at(Some(Location { file: path.to_path_buf(), line, column })));
        return Vec::new();
    }
    let pos = Positions::index(path, text);
    let raw: RawFile = match crate::yamlpos::no_panic(|| serde_yaml_ng::from_str::<RawFile>(text))
        .unwrap_or_else(|| Err(serde::de::Error::custom(crate::yamlpos::PARSER_FAILED)))
    {
        Ok(r) => r,
        Err(e) => {
            diags.push(crate::yamlpos::serde_error(path, &e, 0, &pos, true));
            return Vec::new();
        }
    };
    // Said, and the holds still read: a run refuses on the error, and `report lookup`, which
    // only warns, still answers HELD for the holds that are there.
    diags.0.extend(pos.unreadable(0));
    for mut d in pos.unread_values(0) {
        // Every hold commented out leaves `holds:` alone; the key itself is required.
        if d.message.starts_with("'holds' has no value") {
            d.message = "'holds' has no value: a file without holds says 'holds: []'".into();
        }
        diags.push(d);
    }
    let mut out = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (i, mut h) in raw.holds.into_iter().enumerate() {
        let at = |p: &str| pos.nearest(0, &format!("holds.{i}.{p}"));
        // An id or matter as written: YAML reads `2026.10` or `0042` as a number, whose text
        // (`2026.1`, `42`) is another id than the one the legal team wrote (found by a review).
        for (key, text) in [("id", &mut h.id), ("matter", &mut h.matter)] {
            if let Some(written) = pos.scalar(0, &format!("holds.{i}.{key}")) {
                *text = written.to_string();
            }
        }
        let mut ok = true;
        let mut err = |p: &str, m: String| {
            diags.push(Diagnostic::error(m).at(at(p)).in_file(path));
            ok = false;
        };
        if h.id.trim().is_empty() {
            err("id", "a hold needs an id".into());
        }
        // Printed in reports, lookups and HTML: a line break or a bidirectional control there
        // could make a line that is not there or turn text around (`NOTHING FOUND`).
        for (key, text) in [("id", Some(&h.id)), ("matter", Some(&h.matter)), ("reason", h.reason.as_ref())] {
            if text.is_some_and(|t| t.trim_end().chars().any(unprintable)) {
                err(
                    key,
                    format!("hold {key}: a line break, control or bidirectional formatting character is not allowed"),
                );
            }
        }
        if !ids.insert(h.id.clone()) {
            err("id", format!("duplicate hold id '{}'", h.id));
        }
        if h.subjects.is_empty() && h.policies.is_empty() {
            err(
                "id",
                format!("hold '{}' names neither subjects nor policies; list the policies it freezes explicitly", h.id),
            );
        }
        let mut subjects = Vec::new();
        // The numbers of subjects written in hexadecimal or octal, held besides them.
        let mut extra = Vec::new();
        for (j, s) in h.subjects.iter().enumerate() {
            match s {
                serde_yaml_ng::Value::String(s) => subjects.push(s.clone()),
                // As written: YAML reads `+4915112345678`, `007`, `12.50` or `0x1F` as numbers,
                // whose text (`4915112345678`, `7`, `12.5`, `31`) names another subject.
                serde_yaml_ng::Value::Number(n) => {
                    let written = pos
                        .scalar(0, &format!("holds.{i}.subjects.{j}"))
                        .map(str::to_string)
                        .unwrap_or_else(|| n.to_string());
                    // `0x2` or `0o2`, which YAML reads as 2 and no database as a number: the
                    // number is held too (keeping wins; before, an integer subject column held
                    // nothing for it).
                    if let Some(v) = non_decimal_number(&written) {
                        extra.push(v.to_string());
                    }
                    subjects.push(written);
                }
                _ => err(&format!("subjects.{j}"), format!("hold '{}': a subject must be a string or a number", h.id)),
            }
        }
        let expires = match h.expires.as_deref().map(parse_plausible_time) {
            None => None,
            // A bare date holds through that day: the hold ends at the next midnight (UTC).
            Some(Ok(t)) if h.expires.as_deref().is_some_and(is_bare_date) => Some(t + chrono::Duration::days(1)),
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                err("expires", format!("hold '{}': {e}", h.id));
                None
            }
        };
        if ok {
            let policy_locations = (0..h.policies.len()).map(|j| at(&format!("policies.{j}"))).collect();
            let subject_locations = (0..subjects.len()).map(|j| at(&format!("subjects.{j}"))).collect();
            out.push(Hold {
                policy_locations,
                subject_locations,
                id: h.id,
                matter: h.matter,
                reason: h.reason,
                subject_count: subjects.len(),
                subjects: subjects.into_iter().chain(extra).collect(),
                policies: h.policies,
                expires,
            });
        }
    }
    out
}

/// `parse_time`, for an instant an operator types (`--cutoff`, a hold's expiry): only from
/// 1970 to 2100. Anything else is a typo that would silently change what is destroyed (a hold
/// that "expired" in 1900 holds nothing; a cutoff in 2101 makes every period lapse).
pub fn parse_plausible_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = parse_time(s)?;
    let shown = t.to_rfc3339();
    if t < NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default().and_time(NaiveTime::MIN).and_utc() {
        return Err(format!("{shown} is before 1970; dates must be from 1970-01-01 to 2100-12-31"));
    }
    if t >= NaiveDate::from_ymd_opt(2101, 1, 1).unwrap_or_default().and_time(NaiveTime::MIN).and_utc() {
        return Err(format!("{shown} is after 2100; dates must be from 1970-01-01 to 2100-12-31"));
    }
    Ok(t)
}

/// A hold's `expires` written as a date alone (`2027-06-30`), which holds through that day.
fn is_bare_date(s: &str) -> bool {
    DateTime::parse_from_rfc3339(s).is_err() && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
        .map_err(|_| format!("invalid date '{s}' (expected YYYY-MM-DD or RFC 3339)"))
}

/// Whether a hold's subject `a` names the subject `b`, however either is written: as text, a
/// number with or without leading zeros (`961`, `0961`), a uuid in capitals or without hyphens,
/// or text differing only in case (Unicode, as a case-insensitive collation folds `JÖRG` and
/// `jörg`) and surrounding spaces (`S-1`, ` s-1`). Where lapse
/// compares subjects itself (object policies, `report lookup`) rather than through a database
/// (whose column may be a number, a uuid or a case-insensitive text): it may hold more than an
/// exact comparison, never less.
pub fn same_subject(a: &str, b: &str) -> bool {
    let (x, y) = (a.trim(), b.trim());
    a == b
        || x.eq_ignore_ascii_case(y)
        || x.to_lowercase() == y.to_lowercase()
        // The same text in another Unicode form: `Jörg` typed (composed) and `Jo\u{308}rg` as a
        // macOS file name writes it (decomposed), which a collation takes for one (before, a
        // hold of the one did not hold the other's object).
        || (!(x.is_ascii() && y.is_ascii()) && folded(x) == folded(y))
        || matches!((whole_number(x), whole_number(y)), (Some(m), Some(n)) if m == n)
        || matches!((uuid::Uuid::parse_str(x), uuid::Uuid::parse_str(y)), (Ok(m), Ok(n)) if m == n)
}

/// What [`same_subject`] compares, as keys: two subjects are the same exactly where they share
/// one (each kind tagged). A hold's subjects are keyed once ([`crate::connector::FileHold`]),
/// and each object's subject looked up among them: comparing every object with every subject
/// of a hold of hundreds cost an S3 run of 50,000 objects seconds of CPU.
pub fn subject_keys(s: &str) -> Vec<String> {
    let x = s.trim();
    let mut keys = vec![format!("l:{}", x.to_lowercase())];
    // `folded` of ASCII is its ASCII lower case (NFKC leaves ASCII as it is).
    keys.push(format!("f:{}", if x.is_ascii() { x.to_ascii_lowercase() } else { folded(x) }));
    if let Some(n) = whole_number(x) {
        keys.push(format!("n:{n}"));
    }
    if let Ok(u) = uuid::Uuid::parse_str(x) {
        keys.push(format!("u:{u}"));
    }
    keys
}

/// Compatibility-composed (NFKC), then lower case: one spelling of what a case-insensitive
/// Unicode collation compares equal (it may fold more, never less here).
fn folded(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfkc().collect::<String>().to_lowercase()
}

/// A whole number however written: `961`, `0961`, `+961`, `961.00` (a `NUMERIC(10,2)` holds
/// column read as text).
fn whole_number(s: &str) -> Option<i128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    (frac.bytes().all(|b| b == b'0') && !int.is_empty()).then(|| int.parse::<i128>().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_yaml_writes_otherwise_are_read_as_it_reads_them() {
        assert_eq!(non_decimal_number("0x1F"), Some(31));
        assert_eq!(non_decimal_number("-0o17"), Some(-15));
        assert_eq!(non_decimal_number("0b101"), Some(5));
        assert_eq!(non_decimal_number("0b102"), None);
        assert_eq!(non_decimal_number("101"), None);
        // As the YAML reader does: `subjects: [0b101]` is the number 5.
        let v: Vec<i64> = serde_yaml_ng::from_str("[0b101, 0x1F, 0o17]").unwrap();
        assert_eq!(v, [5, 31, 15]);
    }

    #[test]
    fn same_subject_only_ever_holds_more() {
        assert!(same_subject("961", "0961") && same_subject("+49151", "49151"));
        assert!(same_subject("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC999C0B4EF8BB6D6BB9BD380A11"));
        assert!(same_subject(" s-7", "S-7") && same_subject("S-1", "S-1"));
        assert!(same_subject("JÖRG@x.de", "jörg@X.DE"));
        assert!(same_subject("Jörg", "Jo\u{308}rg") && same_subject("JO\u{308}RG", "jörg"));
        assert!(!same_subject("Jörg", "Jorg"));
        assert!(same_subject("961.00", "961") && !same_subject("961.5", "961") && !same_subject(".0", "0"));
        assert!(!same_subject("S-1", "S-01") && !same_subject("961", "9610") && !same_subject("", "0"));
    }

    /// `subject_keys` says exactly what `same_subject` says: two subjects share a key where
    /// they are the same, and only there.
    #[test]
    fn subject_keys_agree_with_same_subject() {
        let words = [
            "961",
            "0961",
            "+961",
            "961.00",
            "961.5",
            "9610",
            "",
            "0",
            ".0",
            " s-7",
            "S-7",
            "s-7",
            "S-1",
            "S-01",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
            "JÖRG@x.de",
            "jörg@X.DE",
            "Jörg",
            "Jo\u{308}rg",
            "JO\u{308}RG",
            "Jorg",
            "ﬁle",
            "FILE",
            "file",
            "Straße",
            "STRASSE",
            "İstanbul",
            "istanbul",
            "ǅ",
            "ǆ",
            "Ǆ",
            "①",
            "1",
            "+49151",
            "49151",
            "00",
            "-0",
            "+0",
            "1e3",
        ];
        for a in words {
            for b in words {
                let ka = subject_keys(a);
                let shared = subject_keys(b).iter().any(|k| ka.contains(k));
                assert_eq!(shared, same_subject(a, b), "{a:?} / {b:?}");
            }
        }
    }

    fn loaded(expires: &str) -> Hold {
        let dir = std::env::temp_dir().join(format!("lapse-holds-{}-{}", std::process::id(), expires.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("holds.yaml");
        std::fs::write(&path, format!("holds:\n  - id: H\n    matter: M\n    policies: [p]\n    expires: {expires}\n"))
            .unwrap();
        let mut diags = Diagnostics::default();
        let mut holds = load(&path, &mut diags);
        std::fs::remove_dir_all(&dir).ok();
        assert!(!diags.has_errors(), "{:?}", diags.0);
        holds.0.pop().unwrap()
    }

    /// An id or matter YAML reads as a number is kept as written (before, `2026.10` became
    /// `2026.1` and `0042` `42`: another hold id than the legal team's).
    #[test]
    fn ids_and_matters_are_kept_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holds.yaml");
        let text = "holds:\n  - id: 2026.10\n    matter: 0042\n    policies: [p]\n  - id: \"LH 7\"\n    matter: 'Doe v. Example'\n    policies: [p]\n";
        std::fs::write(&path, text).unwrap();
        let mut diags = Diagnostics::default();
        let holds = load(&path, &mut diags).0;
        assert!(!diags.has_errors(), "{:?}", diags.0);
        let got: Vec<(&str, &str)> = holds.iter().map(|h| (h.id.as_str(), h.matter.as_str())).collect();
        assert_eq!(got, [("2026.10", "0042"), ("LH 7", "Doe v. Example")]);
    }

    /// A legal hold that says `expires: 2027-06-30` is in force on that day, all of it (before,
    /// it ended at 2027-06-30 00:00 UTC, and a run that day destroyed what it held).
    #[test]
    fn a_bare_date_expires_at_the_end_of_that_day() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let h = loaded("2027-06-30");
        assert!(h.active_at(at("2027-06-30T00:00:00Z")));
        assert!(h.active_at(at("2027-06-30T23:59:59Z")));
        assert!(!h.active_at(at("2027-07-01T00:00:00Z")));
        // An instant is taken as written.
        let h = loaded("2027-06-30T12:00:00Z");
        assert!(h.active_at(at("2027-06-30T11:59:59Z")));
        assert!(!h.active_at(at("2027-06-30T12:00:00Z")));
    }
}
