//! Keys of apply's in-memory layers (a batch's writes, a command's staged
//! writes): a column family and a RocksDB key held inline. Apply looks up
//! and stages several keys per ledger event; a heap allocation for each,
//! and a pointer chase in every comparison, was a visible share of apply.

use std::cmp::Ordering;

use crate::layout::Cf;

/// The longest key any column family uses (a folder-index key: two hashes).
pub const KEY_BYTES_MAX: usize = 64;

#[derive(Clone, Copy)]
pub struct Key {
    pub cf: Cf,
    len: u8,
    bytes: [u8; KEY_BYTES_MAX],
}

impl Key {
    pub fn new(cf: Cf, key: &[u8]) -> Key {
        assert!(
            key.len() <= KEY_BYTES_MAX,
            "{} key of {} bytes: the longest is {KEY_BYTES_MAX}",
            cf.name(),
            key.len()
        );
        let mut bytes = [0u8; KEY_BYTES_MAX];
        bytes[..key.len()].copy_from_slice(key);
        Key { cf, len: key.len() as u8, bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Column family first, then the key bytes as RocksDB orders them.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cf.cmp(&other.cf).then_with(|| self.bytes().cmp(other.bytes()))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cf == other.cf && self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.cf.name(), crate::codec::hex(self.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_column_family_then_bytes() {
        let k = |cf, b: &[u8]| Key::new(cf, b);
        assert!(k(Cf::Secrets, b"b") > k(Cf::Secrets, b"a"));
        assert!(k(Cf::Secrets, b"ab") > k(Cf::Secrets, b"a"), "a prefix sorts first");
        assert!(k(Cf::Secrets, b"a\0") > k(Cf::Secrets, b"a"), "trailing zero bytes are not padding");
        assert_ne!(k(Cf::Secrets, b"a\0"), k(Cf::Secrets, b"a"));
        assert!(k(Cf::Users, b"") > k(Cf::Secrets, &[0xff; 64]));
        assert_eq!(k(Cf::Secrets, b"xy").bytes(), b"xy");
    }
}
