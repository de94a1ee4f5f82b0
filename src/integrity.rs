//! Report integrity: an Ed25519 signature per report and a hash chain across runs.
//!
//! Each run report names the previous run report of its directory (file name and SHA-256) and
//! carries a sequence number; the signature (`<report>.json.sig`, hex) covers the report file's
//! exact bytes. Altering a byte breaks the signature; removing or reordering reports breaks the
//! chain. Verification needs only the public key.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A link to the previous report of the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ChainLink {
    /// File name of the previous run report, in the same directory.
    pub file: String,
    /// SHA-256 (hex) of that file's bytes.
    pub sha256: String,
    /// Its sequence number.
    pub sequence: u64,
}

pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// From the secret: 64 hex characters (the 32-byte seed), surrounding whitespace ignored.
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<Signer> {
        let text = std::str::from_utf8(secret).map_err(|_| anyhow::anyhow!("signing key: not hex text"))?.trim();
        let bytes = hex::decode(text).map_err(|_| anyhow::anyhow!("signing key: expected 64 hex characters"))?;
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("signing key: expected 64 hex characters (32 bytes)"))?;
        Ok(Signer { key: SigningKey::from_bytes(&seed) })
    }

    pub fn generate() -> Signer {
        Signer { key: SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn key_id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Hex signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        hex::encode(self.key.sign(bytes).to_bytes())
    }
}

pub fn key_id(k: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(k.to_bytes())[..8])
}

/// Parses a public key (64 hex characters).
pub fn public_key(text: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = hex::decode(text.trim()).map_err(|_| anyhow::anyhow!("public key: expected 64 hex characters"))?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("public key: expected 32 bytes"))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| {
        anyhow::anyhow!("public key: {e} (not a public key: if this is the signing key's secret, signing.key, pass its public key, signing.pub)")
    })
}

/// Reads a public key file (64 hex characters, as written by `lapse keygen` or the demo).
pub fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read public key file '{}': {e}", path.display()))?;
    public_key(&text).map_err(|e| anyhow::anyhow!("'{}': {e}", path.display()))
}

/// Checks a hex signature over `bytes`.
pub fn check_signature(key: &VerifyingKey, bytes: &[u8], sig_hex: &str) -> bool {
    let Ok(raw) = hex::decode(sig_hex.trim()) else { return false };
    let Ok(arr) = <[u8; 64]>::try_from(raw.as_slice()) else { return false };
    key.verify(bytes, &ed25519_dalek::Signature::from_bytes(&arr)).is_ok()
}

/// Whether the signature file at `sig_path` (absent: no) is `key`'s signature of `bytes`.
pub fn signature_file_signs(key: &VerifyingKey, bytes: &[u8], sig_path: &Path) -> bool {
    std::fs::read_to_string(sig_path).is_ok_and(|s| check_signature(key, bytes, &s))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Run reports of a directory, in file-name order (`lapse-run-*.json`).
pub fn run_reports(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| {
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        n.starts_with("lapse-run-") && n.ends_with(".json")
    });
    v.sort();
    v
}

/// Locks the report chain of `dir` (exclusively, waiting for another process that holds it)
/// until the returned file is dropped: `.lapse-chain.lock`, which no report command reads.
pub fn lock_chain(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create report directory '{}': {e}", dir.display()))?;
    let path = dir.join(".lapse-chain.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the report chain lock '{}': {e}", path.display()))?;
    f.lock().map_err(|e| anyhow::anyhow!("cannot lock the report chain '{}': {e}", path.display()))?;
    Ok(f)
}

/// The newest run report of `dir` (highest sequence), as the link the next report points to.
pub fn chain_head(dir: &Path) -> anyhow::Result<Option<ChainLink>> {
    let mut best: Option<ChainLink> = None;
    for p in run_reports(dir) {
        let bytes = std::fs::read(&p)?;
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => continue, // an unreadable report is reported by `verify`, not chained to
        };
        let seq = v.get("sequence").and_then(|s| s.as_u64()).unwrap_or(0);
        if best.as_ref().is_none_or(|b| seq > b.sequence) {
            best = Some(ChainLink {
                file: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                sha256: sha256_hex(&bytes),
                sequence: seq,
            });
        }
    }
    Ok(best)
}
