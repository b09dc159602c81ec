//! The storage codec: the only way bytes reach RocksDB.
//!
//! Every value is framed as `[format u8][body]`:
//! - format 0, plaintext: only for nodes started without encryption (tests);
//! - format 1, AES-256-GCM: `[1][data key id u32 BE][nonce 12][ciphertext+tag]`,
//!   with associated data `[1][column family][key]`, so a value moved or
//!   copied to another key or column family fails to open.
//!
//! An encrypting codec refuses plaintext values: otherwise replacing a
//! ciphertext by a plaintext frame would be a tampering nobody notices.

use std::sync::Arc;

use crate::keyring::Keyring;
use crate::layout::Cf;

const FORMAT_PLAIN: u8 = 0;
const FORMAT_AES_GCM: u8 = 1;
const HEADER_BYTES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("corrupt value in column family {cf} at key {key_hex}: {reason}")]
    Corrupt { cf: &'static str, key_hex: String, reason: String },
}

#[derive(Clone, Default)]
pub struct Codec {
    keyring: Option<Arc<Keyring>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.keyring.is_some() { "Codec(aes-256-gcm)" } else { "Codec(plaintext)" })
    }
}

/// Keys up to this long build their associated data on the stack.
const STACK_KEY_BYTES_MAX: usize = 64;

/// Runs `f` with the associated data of `(cf, key)`: `[1][cf][key]`.
fn with_aad<R>(cf: Cf, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if key.len() <= STACK_KEY_BYTES_MAX {
        let mut a = [0u8; STACK_KEY_BYTES_MAX + 2];
        a[0] = FORMAT_AES_GCM;
        a[1] = cf as u8;
        a[2..2 + key.len()].copy_from_slice(key);
        f(&a[..2 + key.len()])
    } else {
        f(&[&[FORMAT_AES_GCM, cf as u8][..], key].concat())
    }
}

impl Codec {
    pub fn plaintext() -> Self {
        Codec { keyring: None }
    }

    pub fn encrypted(keyring: Arc<Keyring>) -> Self {
        Codec { keyring: Some(keyring) }
    }

    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    pub fn seal(&self, cf: Cf, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(cf, key, plain, &mut out);
        out
    }

    /// Seals into `out` (cleared first), so a writer can reuse one buffer.
    pub fn seal_into(&self, cf: Cf, key: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match &self.keyring {
            None => {
                out.reserve(plain.len() + 1);
                out.push(FORMAT_PLAIN);
                out.extend_from_slice(plain);
            }
            Some(k) => {
                out.push(FORMAT_AES_GCM);
                out.extend_from_slice(&[0; 4]);
                let id = with_aad(cf, key, |aad| k.seal_into(aad, plain, out));
                out[1..HEADER_BYTES].copy_from_slice(&id.to_be_bytes());
            }
        }
    }

    pub fn open(&self, cf: Cf, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CodecError> {
        match (sealed.first(), &self.keyring) {
            (Some(&FORMAT_PLAIN), None) => Ok(sealed[1..].to_vec()),
            (Some(&FORMAT_PLAIN), Some(_)) => {
                Err(corrupt(cf, key, "plaintext value in an encrypted database (tampered?)".into()))
            }
            (Some(&FORMAT_AES_GCM), None) => {
                Err(corrupt(cf, key, "encrypted value but the node runs without a master key".into()))
            }
            (Some(&FORMAT_AES_GCM), Some(k)) => {
                if sealed.len() < HEADER_BYTES {
                    return Err(corrupt(cf, key, "truncated header".into()));
                }
                let id = u32::from_be_bytes(sealed[1..HEADER_BYTES].try_into().expect("4 bytes"));
                match with_aad(cf, key, |aad| k.decrypt(id, aad, &sealed[HEADER_BYTES..])) {
                    None => {
                        Err(corrupt(cf, key, format!("sealed with data key {id}, which this keyring lacks")))
                    }
                    Some(None) => Err(corrupt(
                        cf,
                        key,
                        "AES-GCM authentication failed: the value was altered, or moved from another key"
                            .into(),
                    )),
                    Some(Some(plain)) => Ok(plain),
                }
            }
            (Some(other), _) => Err(corrupt(cf, key, format!("unknown value format {other}"))),
            (None, _) => Err(corrupt(cf, key, "empty value".into())),
        }
    }

    /// True for a value sealed under a data key other than the active one.
    pub fn stale(&self, sealed: &[u8]) -> bool {
        match &self.keyring {
            Some(k) if sealed.len() >= HEADER_BYTES && sealed[0] == FORMAT_AES_GCM => {
                u32::from_be_bytes(sealed[1..HEADER_BYTES].try_into().expect("4 bytes")) != k.active()
            }
            _ => false,
        }
    }
}

fn corrupt(cf: Cf, key: &[u8], reason: String) -> CodecError {
    CodecError::Corrupt { cf: cf.name(), key_hex: hex(key), reason }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::MasterKey;

    fn encrypted() -> (tempfile::TempDir, Codec) {
        let dir = tempfile::tempdir().unwrap();
        let (mk, _) = MasterKey::generate();
        let k = Keyring::create(dir.path(), mk).unwrap();
        (dir, Codec::encrypted(Arc::new(k)))
    }

    #[test]
    fn roundtrip() {
        let c = Codec::plaintext();
        let sealed = c.seal(Cf::Secrets, b"k", b"value");
        assert_eq!(c.open(Cf::Secrets, b"k", &sealed).unwrap(), b"value");
        let (_d, e) = encrypted();
        let sealed = e.seal(Cf::Secrets, b"k", b"value");
        assert!(!sealed.windows(5).any(|w| w == b"value"), "ciphertext shows the plaintext");
        assert_eq!(e.open(Cf::Secrets, b"k", &sealed).unwrap(), b"value");
        assert_ne!(sealed, e.seal(Cf::Secrets, b"k", b"value"), "random nonces: equal values differ");
    }

    #[test]
    fn unknown_format_is_corruption_not_data() {
        let c = Codec::plaintext();
        let err = c.open(Cf::Secrets, b"k", &[9, 1, 2]).unwrap_err();
        assert!(err.to_string().contains("secrets"), "{err}");
        assert!(c.open(Cf::Secrets, b"k", &[]).is_err());
    }

    #[test]
    fn flipped_bits_moved_values_and_plaintext_frames_are_refused() {
        let (_d, e) = encrypted();
        let sealed = e.seal(Cf::Users, b"alice", b"record");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(e.open(Cf::Users, b"alice", &bad).is_err(), "flipped byte {i} went unnoticed");
        }
        let err = e.open(Cf::Users, b"mallory", &sealed).unwrap_err();
        assert!(err.to_string().contains("users") && err.to_string().contains("6d616c6c6f7279"), "{err}");
        assert!(e.open(Cf::Clients, b"alice", &sealed).is_err(), "moved to another column family");
        let plain = Codec::plaintext().seal(Cf::Users, b"alice", b"record");
        assert!(e.open(Cf::Users, b"alice", &plain).is_err(), "a plaintext frame is a downgrade");
        assert!(Codec::plaintext().open(Cf::Users, b"alice", &sealed).is_err());
    }
}
