//! After the run: checking, reading and questioning reports (`lapse report verify|render|lookup|
//! schema`) and generating keys (`lapse keygen`).
//!
//! - `store` — where reports are read from ([`store::ReportStore`]: a local directory, or a bucket
//!   prefix through `sink::S3Reports`).
//! - `verify` — signatures, evidence files and the hash chain, with the public key alone.
//! - `render` — self-contained HTML (summary, chart, certificate of destruction) and CSV.
//! - `lookup` — "was subject X destroyed, and when?" through the keyed hashes.
//! - `keygen` — signing key pair and evidence key files.
//! - `combine` — the shard reports of one sharded run (`--shard i/n`) summed into one summary.

pub mod combine;
pub mod keygen;
pub mod lookup;
pub mod render;
pub mod sink;
pub mod store;
pub mod verify;

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
