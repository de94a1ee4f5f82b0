//! The destruction report: what was destroyed, what was kept and why, per policy.
//!
//! JSON is the authoritative format (`schema_version` versioned); a CSV summary is written next
//! to it. Records appear only as keyed hashes ([`crate::evidence`]); no personal value is ever
//! part of a report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::policy::PolicyFile;

pub const SCHEMA_VERSION: &str = "1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: &'static str,
    pub run_id: String,
    /// `plan` (nothing changed) or `run`.
    pub mode: String,
    /// `complete`, `partial` (some work failed), `guardrail` (a policy was stopped) or
    /// `incomplete` (the run was interrupted).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Fixed at the start of the run: a purpose lapses when `anchor + period <= cutoff`.
    pub cutoff: DateTime<Utc>,
    pub tool: Tool,
    /// Identifies the evidence key (not the key itself).
    pub evidence_key_id: String,
    pub policy_files: Vec<PolicyFile>,
    pub holds: Vec<HoldInfo>,
    pub policies: Vec<PolicyReport>,
    /// Position in this report directory's chain of run reports (1 for the first).
    pub sequence: u64,
    /// The previous run report of the chain: its file name and SHA-256. Removing, altering or
    /// reordering reports breaks the chain.
    pub previous: Option<crate::integrity::ChainLink>,
    /// Identifies the Ed25519 key that signs this report (`<file>.sig`), when signing is on.
    pub signing_key_id: Option<String>,
    /// Per-record evidence, streamed to a JSON Lines file next to the report as batches commit.
    pub evidence: Option<EvidenceFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceFile {
    /// File name, relative to the report.
    pub file: String,
    pub sha256: String,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct HoldInfo {
    pub id: String,
    pub matter: String,
    /// `file` or `table:<connection>`.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub subject_count: usize,
    pub policies: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PurposeInfo {
    pub name: String,
    pub legal_basis: String,
    pub retain: String,
    pub anchor: String,
    /// Anchors at or before this instant have lapsed.
    pub lapsed_if_anchor_before_or_at: Option<DateTime<Utc>>,
    pub condition: Option<String>,
    pub covers: Vec<String>,
    pub null_anchor: String,
    /// Set when the purpose comes from another policy on the same table (keeping wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnMethod {
    pub category: String,
    pub method: String,
    /// False for pseudonymization (linkable by the key holder).
    pub irreversible: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StageReport {
    /// `record` (every purpose lapsed) or `fields:<columns>` (field-level lapse).
    pub name: String,
    pub action: String,
    pub columns: Vec<String>,
    pub due: u64,
    pub destroyed: u64,
    pub unchanged: u64,
    pub skipped_concurrently: u64,
    pub batches: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Guardrail {
    pub max_share: f64,
    pub share: f64,
    pub tripped: bool,
    pub overridden: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Verification {
    pub method: String,
    pub checked: u64,
    pub still_present: u64,
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// HMAC of the record key.
    pub record: String,
    /// HMAC of the data subject, when the dataset has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub policy: String,
    /// `deleted`, `anonymized` or `fields_anonymized`.
    pub action: String,
    pub stage: String,
    pub batch: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PolicyReport {
    pub name: String,
    pub file: PathBuf,
    pub connection: String,
    pub table: String,
    pub action: String,
    pub legal_bases: Vec<String>,
    pub purposes: Vec<PurposeInfo>,
    pub columns: BTreeMap<String, ColumnMethod>,
    /// `done`, `failed`, `guardrail`, `held` (a hold covers the whole policy) or `planned`.
    pub outcome: String,
    pub rows_total: u64,
    pub rows_due: u64,
    pub deleted: u64,
    pub anonymized: u64,
    pub fields_anonymized: u64,
    pub held: u64,
    pub held_by: BTreeMap<String, u64>,
    pub null_anchor_kept: u64,
    pub blocked_by_dependents: u64,
    pub dependents_deleted: BTreeMap<String, u64>,
    pub failed: u64,
    pub stages: Vec<StageReport>,
    pub guardrail: Guardrail,
    pub verification: Verification,
    /// A few due records as keyed hashes (plan).
    pub sample: Vec<String>,
    pub errors: Vec<String>,
}

impl Report {
    pub fn file_stem(&self) -> String {
        format!("lapse-{}-{}-{}", self.mode, self.started_at.format("%Y%m%dT%H%M%SZ"), &self.run_id[..8])
    }

    /// Writes `<stem>.json` (and `<stem>.json.sig` when a signer is given) and `<stem>.csv`
    /// into `dir`; returns the JSON path. The signature covers the exact bytes of the JSON file.
    pub fn write(&self, dir: &Path, signer: Option<&crate::integrity::Signer>) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create report directory '{}': {e}", dir.display()))?;
        let stem = self.file_stem();
        let json = dir.join(format!("{stem}.json"));
        let bytes = serde_json::to_vec_pretty(self)?;
        if let Some(s) = signer {
            std::fs::write(dir.join(format!("{stem}.json.sig")), s.sign(&bytes))?;
        }
        let tmp = dir.join(format!(".{stem}.json.tmp"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &json)?;
        std::fs::write(dir.join(format!("{stem}.csv")), self.csv()?)?;
        Ok(json)
    }

    pub fn csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "run_id",
            "mode",
            "status",
            "cutoff",
            "policy",
            "connection",
            "table",
            "action",
            "legal_bases",
            "outcome",
            "rows_total",
            "rows_due",
            "deleted",
            "anonymized",
            "fields_anonymized",
            "held",
            "held_by",
            "null_anchor_kept",
            "blocked_by_dependents",
            "dependents_deleted",
            "failed",
            "guardrail_share",
            "guardrail_tripped",
            "verified",
        ])?;
        for p in &self.policies {
            let held_by: Vec<String> = p.held_by.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let deps: Vec<String> = p.dependents_deleted.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            w.write_record([
                self.run_id.clone(),
                self.mode.clone(),
                self.status.clone(),
                self.cutoff.to_rfc3339(),
                p.name.clone(),
                p.connection.clone(),
                p.table.clone(),
                p.action.clone(),
                p.legal_bases.join(";"),
                p.outcome.clone(),
                p.rows_total.to_string(),
                p.rows_due.to_string(),
                p.deleted.to_string(),
                p.anonymized.to_string(),
                p.fields_anonymized.to_string(),
                p.held.to_string(),
                held_by.join(";"),
                p.null_anchor_kept.to_string(),
                p.blocked_by_dependents.to_string(),
                deps.join(";"),
                p.failed.to_string(),
                format!("{:.4}", p.guardrail.share),
                p.guardrail.tripped.to_string(),
                p.verification.verified.to_string(),
            ])?;
        }
        Ok(w.into_inner()?)
    }
}
