//! Keyed names: RocksDB keys built from identifiers users choose (usernames,
//! client ids, role names, secret paths, request ids) are HMAC-SHA256 of the
//! name under a per-cluster key, so a data directory does not reveal them.
//! Equal names still give equal keys (point lookups work); order is lost, so
//! records that are listed carry their name in their (encrypted) value, and
//! secrets are listed through a per-folder index (`Cf::SecretIndex`).
//!
//! The key must be the same on every node (snapshots carry keys as they
//! are), so it is state: drawn by the node that bootstraps the cluster, it
//! travels in the `Bootstrap` command (inside mutual TLS; sealed at rest like
//! every log entry) and lives in `SmMeta` (sealed). Before bootstrap there is
//! no key and the all-zero key stands in: nothing named exists yet but the
//! request ids of refused commands.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::layout::Cf;

#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "[u8; 32]", into = "[u8; 32]")]
pub struct NameKey {
    key: [u8; 32],
    /// HMAC state with the key already absorbed: each name costs two
    /// SHA-256 compressions fewer.
    keyed: Hmac<Sha256>,
}

impl From<[u8; 32]> for NameKey {
    fn from(key: [u8; 32]) -> NameKey {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        NameKey { key, keyed }
    }
}

impl From<NameKey> for [u8; 32] {
    fn from(k: NameKey) -> [u8; 32] {
        k.key
    }
}

impl PartialEq for NameKey {
    fn eq(&self, other: &NameKey) -> bool {
        self.key == other.key
    }
}

impl Eq for NameKey {}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameKey(redacted)")
    }
}

impl Drop for NameKey {
    fn drop(&mut self) {
        // The keyed HMAC state derives from the key but is not the key.
        self.key.zeroize();
    }
}

impl NameKey {
    /// A fresh random key (by the bootstrapping node, never inside apply).
    pub fn generate() -> NameKey {
        NameKey::from(rand::random::<[u8; 32]>())
    }

    /// Stands in before bootstrap.
    pub fn unset() -> NameKey {
        NameKey::from([0u8; 32])
    }

    /// The RocksDB key of `name` in `cf`. The column family is hashed in, so
    /// equal names in different families do not give equal keys.
    pub fn key(&self, cf: Cf, name: &str) -> [u8; 32] {
        self.mac(&[&[cf as u8], name.as_bytes()])
    }

    /// A request id's key within its caller's scope (`scope` is fixed-length
    /// per kind of caller). The 0xFF byte cannot start a UTF-8 name, so no
    /// scoped key equals an unscoped `key(Cf::Requests, id)`.
    pub fn scoped_request_key(&self, scope: &[u8], id: &str) -> [u8; 32] {
        self.mac(&[&[Cf::Requests as u8, 0xFF], scope, id.as_bytes()])
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A secret version: the path's key, then the big-endian version.
    pub fn version_key(&self, path: &str, version: u64) -> [u8; 40] {
        version_key_of(&self.key(Cf::Secrets, path), version)
    }

    /// A folder's entry for one direct child (`name` or `name/`): the
    /// folder's hash, then the child's. A folder's children share a prefix.
    pub fn index_key(&self, folder: &str, child: &str) -> [u8; 64] {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&self.index_prefix(folder));
        k[32..].copy_from_slice(&self.mac(&[
            &[Cf::SecretIndex as u8, 1],
            folder.as_bytes(),
            &[0],
            child.as_bytes(),
        ]));
        k
    }

    pub fn index_prefix(&self, folder: &str) -> [u8; 32] {
        self.mac(&[&[Cf::SecretIndex as u8, 0], folder.as_bytes()])
    }
}

/// `NameKey::version_key` from the path's key, already at hand.
pub fn version_key_of(secret_key: &[u8; 32], version: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(secret_key);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

/// A direct child of a secrets folder, as its index entry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// `name` for a secret, `name/` for a sub-folder.
    pub name: String,
}

/// The (folder, child) pairs a secret path puts in the index:
/// `a/b/c` → ("", "a/"), ("a/", "b/"), ("a/b/", "c").
pub fn index_entries(path: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in path.match_indices('/') {
        out.push((&path[..start], &path[start..=i]));
        start = i + 1;
    }
    out.push((&path[..start], &path[start..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_key_the_family_and_the_name() {
        let (a, b) = (NameKey::from([1u8; 32]), NameKey::from([2u8; 32]));
        assert_eq!(a.key(Cf::Users, "alice"), a.key(Cf::Users, "alice"));
        assert_ne!(a.key(Cf::Users, "alice"), b.key(Cf::Users, "alice"));
        assert_ne!(a.key(Cf::Users, "alice"), a.key(Cf::Clients, "alice"));
        assert_ne!(a.key(Cf::Users, "alice"), a.key(Cf::Users, "alicf"));
        assert!(!a.key(Cf::Users, "alice").windows(5).any(|w| w == b"alice"));
        assert_eq!(a.index_key("x/", "y")[..32], a.index_prefix("x/"));
        assert_ne!(a.index_key("x/", "y"), a.index_key("x/", "y/"));
        assert_eq!(format!("{a:?}"), "NameKey(redacted)");
    }

    #[test]
    fn a_path_lists_under_each_of_its_folders() {
        assert_eq!(index_entries("a/b/c"), [("", "a/"), ("a/", "b/"), ("a/b/", "c")]);
        assert_eq!(index_entries("top"), [("", "top")]);
    }
}
