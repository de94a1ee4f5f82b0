//! `lapse keygen`: the keys a deployment needs, written as mounted-secret files.
//!
//! `signing.key` (the Ed25519 seed, 64 hex characters, mode 0600), `signing.pub` (the public
//! key, 64 hex characters: all `lapse report verify` needs) and `evidence.key` (32 random bytes
//! as 64 hex characters, mode 0600: the HMAC key of the evidence hashes). Existing files are
//! never overwritten unless asked: replacing a key orphans what was made with it.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::evidence::EvidenceKey;
use crate::integrity::Signer;

pub struct Keys {
    pub signing_key: PathBuf,
    pub public_key: PathBuf,
    pub evidence_key: PathBuf,
    pub signing_key_id: String,
    pub evidence_key_id: String,
}

pub fn generate(dir: &Path, force: bool) -> anyhow::Result<Keys> {
    let signing_key = dir.join("signing.key");
    let public_key = dir.join("signing.pub");
    let evidence_key = dir.join("evidence.key");
    if !force {
        let existing: Vec<String> = [&signing_key, &public_key, &evidence_key]
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            anyhow::bail!(
                "{} already exist{}; keys are not replaced (reports and evidence made with them would no longer verify or match); use --force to overwrite",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            );
        }
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create '{}': {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let signer = Signer::generate();
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let evidence = hex::encode(raw);
    write(&signing_key, &signer.secret_hex(), 0o600)?;
    write(&public_key, &signer.public_hex(), 0o644)?;
    write(&evidence_key, &evidence, 0o600)?;
    Ok(Keys {
        signing_key,
        public_key,
        evidence_key,
        signing_key_id: signer.key_id(),
        evidence_key_id: EvidenceKey::new(evidence.into_bytes()).key_id(),
    })
}

/// Writes `text` and a newline to a new file created with `mode` (never briefly world-readable).
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(|e| anyhow::anyhow!("cannot create '{}': {e}", path.display()))?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keys_that_load_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let k = generate(&out, false).unwrap();
        let seed = std::fs::read(&k.signing_key).unwrap();
        let signer = Signer::from_secret(&seed).unwrap();
        assert_eq!(signer.key_id(), k.signing_key_id);
        let public = crate::integrity::read_public_key(&k.public_key).unwrap();
        assert!(crate::integrity::check_signature(&public, b"x", &signer.sign(b"x")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&k.signing_key), 0o600);
            assert_eq!(mode(&k.evidence_key), 0o600);
        }
        assert!(generate(&out, false).is_err());
        let again = generate(&out, true).unwrap();
        assert_ne!(again.signing_key_id, k.signing_key_id);
    }
}
