//! Soft deletion of single secret versions (Vault KV v2), from state
//! version `SECRET_DELETES_PER_VERSION` on.
//!
//! `SecretMeta::deleted` says whether the latest version is deleted; it is
//! all versions 1 to 3 knew, so a put made the old latest version readable
//! again. From version 4, each soft-deleted version also has an entry in
//! the secret's `DeletedVersions` record, which stays when a put moves the
//! latest on. One record per secret, not one per version, so a put that
//! prunes versions writes nothing extra: entries below the oldest kept
//! version are stale, read as absent, and dropped at the next rewrite.
//!
//! A version is deleted when it has an entry, or when it is the latest and
//! the meta says so (a deletion made before version 4 has no entry; its
//! time is taken as the meta's last change, the closest kept: a destroy of
//! another version since then moves it later).

use serde::{Deserialize, Serialize};

use crate::auth::Read;
use crate::layout::Cf;
use crate::state_machine::Tx;
use crate::DbError;

/// The record's key: the secret's own key in `Cf::Secrets` and one byte
/// (the meta's key is 32 bytes, so the two never meet).
pub fn deleted_versions_key(secret_key: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(secret_key);
    k[32] = b'd';
    k
}

/// The soft-deleted versions of one secret and when each was deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedVersions {
    /// `(version, deleted_ms)`, ascending by version, no duplicates. Bounded
    /// by the secret's `max_versions` plus the stale entries of versions
    /// pruned since the last rewrite (also at most `max_versions`).
    entries: Vec<(u64, u64)>,
}

impl DeletedVersions {
    /// When `version` was deleted, if it is (and is still kept).
    pub fn deleted_ms(&self, version: u64, oldest_version: u64) -> Option<u64> {
        if version < oldest_version {
            return None;
        }
        let i = self.entries.binary_search_by_key(&version, |e| e.0).ok()?;
        Some(self.entries[i].1)
    }

    /// Marks `version` deleted at `now_ms`; false if it was already.
    pub fn insert(&mut self, version: u64, now_ms: u64) -> bool {
        match self.entries.binary_search_by_key(&version, |e| e.0) {
            Ok(_) => false,
            Err(i) => {
                self.entries.insert(i, (version, now_ms));
                true
            }
        }
    }

    /// Clears `version`'s mark; false if it had none.
    pub fn remove(&mut self, version: u64) -> bool {
        match self.entries.binary_search_by_key(&version, |e| e.0) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Drops the entries of pruned versions (before a rewrite).
    pub fn drop_pruned(&mut self, oldest_version: u64) {
        self.entries.retain(|e| e.0 >= oldest_version);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The secret's record (empty when there is none).
pub(crate) fn load(r: &impl Read, secret_key: &[u8; 32]) -> Result<DeletedVersions, DbError> {
    Ok(r.get(Cf::Secrets, &deleted_versions_key(secret_key))?.unwrap_or_default())
}

/// Writes the record back without its stale entries (none left: removed).
pub(crate) fn save(tx: &mut Tx<'_>, secret_key: &[u8; 32], marks: &mut DeletedVersions, oldest_version: u64) {
    marks.drop_pruned(oldest_version);
    let key = deleted_versions_key(secret_key);
    if marks.is_empty() {
        tx.delete(Cf::Secrets, &key);
    } else {
        tx.put(Cf::Secrets, &key, marks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_sorted_and_unique() {
        let mut d = DeletedVersions::default();
        assert!(d.insert(5, 50));
        assert!(d.insert(2, 20));
        assert!(!d.insert(5, 99), "a second delete keeps the first time");
        assert_eq!(d.entries, vec![(2, 20), (5, 50)]);
        assert_eq!(d.deleted_ms(5, 1), Some(50));
        assert_eq!(d.deleted_ms(3, 1), None);
        assert!(d.remove(2));
        assert!(!d.remove(2));
        assert_eq!(d.entries, vec![(5, 50)]);
    }

    #[test]
    fn pruned_versions_read_as_not_deleted() {
        let mut d = DeletedVersions::default();
        d.insert(1, 10);
        d.insert(4, 40);
        assert_eq!(d.deleted_ms(1, 2), None, "version 1 is pruned: its entry is stale");
        d.drop_pruned(2);
        assert_eq!(d.entries, vec![(4, 40)]);
    }

    #[test]
    fn the_record_sits_beside_the_meta_not_on_it() {
        let k = deleted_versions_key(&[7; 32]);
        assert_eq!(k[..32], [7; 32]);
        assert_eq!(k.len(), 33, "never 32 bytes, the length of a meta key");
    }
}
