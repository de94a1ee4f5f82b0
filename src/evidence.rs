//! Keyed hashes that identify records in evidence without storing them.
//!
//! `record` = HMAC-SHA256(key, "record" ‖ connection ‖ table ‖ key values) and
//! `subject` = HMAC-SHA256(key, "subject" ‖ subject value), hex-encoded, fields separated by NUL.
//! Whoever holds the key can answer "was subject X destroyed, and when?" by recomputing the hash;
//! a reader of the report without the key learns nothing about X. The subject hash does not
//! depend on the dataset, so one subject can be followed across tables.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::value::Value;

/// The HMAC, keyed once (the key's inner and outer blocks are computed when the key is made,
/// not for every record: a run hashes two values per destroyed record).
#[derive(Clone)]
pub struct EvidenceKey(Hmac<Sha256>);

impl std::fmt::Debug for EvidenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvidenceKey(<redacted>)")
    }
}

impl EvidenceKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        EvidenceKey(Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes any key length"))
    }

    /// The HMAC of `names` then `values` (their [`Value::canonical`] forms), separated by NUL:
    /// the one layout of every hash here. No string per value and no list of parts: a run
    /// hashes two per destroyed record.
    fn mac(&self, names: &[&str], values: &[Value]) -> String {
        let mut m = self.0.clone();
        for (i, p) in names.iter().enumerate() {
            if i > 0 {
                m.update(&[0]);
            }
            m.update(p.as_bytes());
        }
        for v in values {
            m.update(&[0]);
            update_canonical(&mut m, v);
        }
        hex_of(m)
    }

    pub fn record(&self, connection: &str, table: &str, key: &[Value]) -> String {
        self.mac(&["record", connection, table], key)
    }

    pub fn subject(&self, subject: &Value) -> String {
        self.mac(&["subject"], std::slice::from_ref(subject))
    }

    /// A keyed digest of a file the run read (config, holds file), given the SHA-256 (hex) of
    /// its bytes: `HMAC-SHA256(key, "file" ‖ NUL ‖ hex SHA-256)`. Keyed because a holds file
    /// names data subjects and a config may hold credentials: a plain digest would let a
    /// reader confirm a guess of them.
    pub fn file_digest(&self, sha256_hex: &str) -> String {
        self.mac(&["file", sha256_hex], &[])
    }

    /// Identifies the key itself (so reports made with different keys can be told apart) without
    /// revealing it.
    pub fn key_id(&self) -> String {
        self.mac(&["key-id"], &[])[..16].to_string()
    }
}

/// Feeds `v`'s [`Value::canonical`] form to the HMAC; integers and text (the usual keys and
/// subjects) without a copy.
fn update_canonical(m: &mut Hmac<Sha256>, v: &Value) {
    match v {
        Value::Int(i) => m.update(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Text(s) => m.update(s.as_bytes()),
        other => m.update(other.canonical().as_bytes()),
    }
}

fn hex_of(m: Hmac<Sha256>) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(m.finalize().into_bytes(), &mut out).expect("32 bytes fit 64 hex digits");
    // (`hex::encode` builds its string a char at a time.)
    String::from_utf8(out.to_vec()).expect("hex digits")
}

/// The 32 bytes of a hash's 64 hex digits (as [`EvidenceKey`] writes them), into `out`; `false`
/// (and `out` unspecified) when `hex` is not 64 hex digits. A table, not `hex::decode_to_slice`,
/// which takes a tenth of a run's time when every journaled hash goes through it.
pub fn digest_bytes(hex: &str, out: &mut [u8]) -> bool {
    const INVALID: u8 = 0xFF;
    const NIBBLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut c = 0;
        while c < 256 {
            t[c] = match c as u8 {
                b'0'..=b'9' => c as u8 - b'0',
                b'a'..=b'f' => c as u8 - b'a' + 10,
                b'A'..=b'F' => c as u8 - b'A' + 10,
                _ => INVALID,
            };
            c += 1;
        }
        t
    };
    let hex = hex.as_bytes();
    if hex.len() != 64 || out.len() != 32 {
        return false;
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    // A valid nibble is at most 0x0F; INVALID sets the high bits.
    bad & 0xF0 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_bytes_reads_what_hex_of_writes() {
        let k = EvidenceKey::new(b"0123456789abcdef0123".to_vec());
        let h = k.record("db", "t", &[Value::Int(1)]);
        let mut out = [0u8; 32];
        assert!(digest_bytes(&h, &mut out));
        assert_eq!(hex::encode(out), h);
        assert!(digest_bytes(&h.to_uppercase(), &mut out));
        assert_eq!(hex::encode(out), h);
        let all: String = (0..=255u8).map(|b| format!("{b:02x}")).collect::<String>()[..64].to_string();
        assert!(digest_bytes(&all, &mut out));
        assert_eq!(&out[..], &(0..32u8).collect::<Vec<_>>()[..]);
        for bad in [&h[..62], "g".repeat(64).as_str(), &format!("{}0", &h[..63]).replace('0', " ")] {
            assert!(!digest_bytes(bad, &mut out), "{bad}");
        }
        assert!(!digest_bytes(&format!("{h}00"), &mut out), "too long");
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let k1 = EvidenceKey::new(b"0123456789abcdef0123".to_vec());
        let k2 = EvidenceKey::new(b"another-key-entirely".to_vec());
        let v = Value::Text("alice@example.com".into());
        assert_eq!(k1.subject(&v), k1.subject(&v));
        assert_ne!(k1.subject(&v), k2.subject(&v));
        assert!(!k1.subject(&v).contains("alice"));
        assert_ne!(k1.record("a", "t", &[Value::Int(1)]), k1.record("a", "u", &[Value::Int(1)]));
    }

    /// The layout the module documents, computed independently: evidence of earlier runs (and
    /// `report lookup`) depends on these bytes never changing.
    #[test]
    fn hashes_are_the_documented_hmac() {
        let key = b"0123456789abcdef0123";
        let k = EvidenceKey::new(key.to_vec());
        let hmac = |input: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(input);
            hex::encode(m.finalize().into_bytes())
        };
        let date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        let key_values = [Value::Int(-9_000_000_000), Value::Text("a\u{0}b".into()), Value::Date(date), Value::Null];
        assert_eq!(
            k.record("crm", "people", &key_values),
            hmac(b"record\x00crm\x00people\x00-9000000000\x00a\x00b\x002024-02-29\x00\x00null")
        );
        assert_eq!(k.record("crm", "people", &[Value::Int(7)]), hmac(b"record\x00crm\x00people\x007"));
        assert_eq!(k.subject(&Value::Int(42)), hmac(b"subject\x0042"));
        assert_eq!(k.subject(&Value::Text("alice@example.com".into())), hmac(b"subject\x00alice@example.com"));
        assert_eq!(k.subject(&Value::Float(1.5)), hmac(b"subject\x001.5"));
        assert_eq!(k.key_id(), hmac(b"key-id")[..16]);
    }
}
