//! After the run: checking, reading and questioning reports (`lapse report verify|render|lookup|
//! schema`) and generating keys (`lapse keygen`).
//!
//! - `store` — where reports are read from ([`store::ReportStore`]: a local directory, or a bucket
//!   prefix through `sink::S3Reports`).
//! - `verify` — signatures, evidence files and the hash chain, with the public key alone.
//! - `render` — self-contained HTML (summary, chart, certificate of destruction) and CSV.
//! - `lookup` — "was subject X destroyed, and when?" through the keyed hashes.
//! - `keygen` — signing key pair and evidence key files.
//! - `journal` — `verify --journal`: every run the SQL journal tables record is accounted for by
//!   a report (a removed newest report leaves its batches there).
//! - `combine` — the shard reports of one sharded run (`--shard i/n`) summed into one summary.

pub mod combine;
pub mod journal;
pub mod keygen;
pub mod lookup;
pub mod render;
pub mod sink;
pub mod store;
pub mod verify;

/// A hold's expiry as people read it: a bare date in the holds file (`expires: 2027-06-30`)
/// holds through that day and is stored as the next midnight UTC, which is said as the day it
/// holds through ("in force through 2027-06-30"), not as the next day; any other instant whole.
pub fn hold_expiry(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    if t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0 {
        let day = t.date_naive().pred_opt().unwrap_or(t.date_naive());
        format!("in force through {}", day.format("%Y-%m-%d"))
    } else {
        format!("in force until {}", t.format("%Y-%m-%d %H:%M:%S UTC"))
    }
}

/// Text for a terminal: controls (line breaks, escapes) and bidirectional formatting
/// characters written as `\u{..}` escapes, so that a file name or a field read from the reports
/// directory cannot move the cursor, erase or forge a line, or turn text around.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(crate::holds::unprintable) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if crate::holds::unprintable(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `report verify`: a report is altered, missing, out of order, or badly signed.
pub const EXIT_VERIFY_FAILED: u8 = 4;
/// `report lookup`: nothing is known of the subject or record.
pub const EXIT_NOT_FOUND: u8 = 5;

/// The JSON Schema of the report (`schema/report.schema.json`), generated from
/// [`crate::report::Report`].
pub fn report_schema() -> String {
    pretty(schemars::schema_for!(crate::report::Report))
}

/// The JSON Schema of one line of an evidence file (`schema/evidence.schema.json`), generated
/// from [`crate::report::Evidence`].
pub fn evidence_schema() -> String {
    pretty(schemars::schema_for!(crate::report::Evidence))
}

fn pretty(schema: schemars::Schema) -> String {
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// A bare-date hold (`expires: 2027-06-30`, stored as 2027-07-01T00:00Z) is said as the day
    /// it holds through (before, lookup printed "expires 2027-07-01").
    #[test]
    fn a_hold_expiry_is_said_as_the_day_it_holds_through() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(super::hold_expiry(&at("2027-07-01T00:00:00Z")), "in force through 2027-06-30");
        assert_eq!(super::hold_expiry(&at("2027-07-01T12:30:00Z")), "in force until 2027-07-01 12:30:00 UTC");
        assert_eq!(super::hold_expiry(&at("2027-07-01T00:00:00.5Z")), "in force until 2027-07-01 00:00:00 UTC");
    }

    /// A file name or field read from the reports directory cannot drive the terminal.
    #[test]
    fn printable_escapes_controls_and_bidi() {
        assert_eq!(super::printable("lapse-run-1.json"), "lapse-run-1.json");
        let s = super::printable("x\r\u{1b}[3A\nresult: OK\u{202e}");
        assert!(!s.chars().any(crate::holds::unprintable), "{s}");
        assert_eq!(s, "x\\u{d}\\u{1b}[3A\\u{a}result: OK\\u{202e}");
    }
}
