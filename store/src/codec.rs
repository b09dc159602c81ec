//! The storage codec: the only way bytes reach RocksDB.
//!
//! Every value is framed as `[format u8][body]`. Format 0 is plaintext; the
//! encryption-at-rest work adds an AES-256-GCM format whose associated data is
//! the column family and key, so a value moved to another key fails to open.
//! Keeping the frame now means data written today stays readable then.

use crate::layout::Cf;

const FORMAT_PLAIN: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("corrupt value in column family {cf} at key {key_hex}: {reason}")]
    Corrupt { cf: &'static str, key_hex: String, reason: String },
}

#[derive(Debug, Clone, Default)]
pub struct Codec {}

impl Codec {
    pub fn plaintext() -> Self {
        Codec {}
    }

    pub fn seal(&self, _cf: Cf, _key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 1);
        out.push(FORMAT_PLAIN);
        out.extend_from_slice(plain);
        out
    }

    pub fn open(&self, cf: Cf, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CodecError> {
        match sealed.first() {
            Some(&FORMAT_PLAIN) => Ok(sealed[1..].to_vec()),
            Some(other) => Err(corrupt(cf, key, format!("unknown value format {other}"))),
            None => Err(corrupt(cf, key, "empty value".into())),
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

    #[test]
    fn roundtrip() {
        let c = Codec::plaintext();
        let sealed = c.seal(Cf::Secrets, b"k", b"value");
        assert_eq!(c.open(Cf::Secrets, b"k", &sealed).unwrap(), b"value");
    }

    #[test]
    fn unknown_format_is_corruption_not_data() {
        let c = Codec::plaintext();
        let err = c.open(Cf::Secrets, b"k", &[9, 1, 2]).unwrap_err();
        assert!(err.to_string().contains("secrets"), "{err}");
        assert!(c.open(Cf::Secrets, b"k", &[]).is_err());
    }
}
