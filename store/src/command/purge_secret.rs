use serde::{Deserialize, Serialize};

use super::set_state_version::{SECRET_METADATA_FIRST, SECRET_PURGE};
use super::{
    below_state_version, refuse, secret_resource, validate_secret_path, Applied, CommandError, Ctx,
    ErrorCode, Outcome, Required, SecretMeta,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::names::{index_entries, version_key_of};
use crate::secret_deletions::deleted_versions_key;
use crate::secret_settings::settings_key;
use crate::state_machine::Tx;
use crate::DbError;

/// Removes a secret outright: every kept version, its metadata, its
/// deletion record and settings, and its entry in its folder's listing, with the
/// entries of folders left empty (Vault's `kv metadata delete`). The path
/// is free again: the next put there writes version 1. Needs admin on the
/// secret (write only soft-deletes and destroys single versions), from
/// state version `SECRET_PURGE` on. A path with no secret is done already:
/// OK, no revision (from `SECRET_METADATA_FIRST` on; NOT_FOUND before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeSecret {
    pub path: String,
}

impl PurgeSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Admin, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if let Some(e) = below_state_version(tx, SECRET_PURGE, "purging a secret") {
            return Ok(Err(e));
        }
        let names = tx.names()?;
        let key = names.key(Cf::Secrets, &self.path);
        let Some(meta) = tx.get::<SecretMeta>(Cf::Secrets, &key)? else {
            if tx.state_version() >= SECRET_METADATA_FIRST {
                // Nothing to remove: done, and no revision (as Vault).
                return Ok(Ok(Outcome::SecretPurged { versions_destroyed: 0 }));
            }
            return refuse(ErrorCode::NotFound, format!("no secret at {}", self.path));
        };
        // Bounded: at most `max_versions` versions are kept.
        let mut destroyed = 0;
        for v in meta.oldest_version..=meta.latest_version {
            let vk = version_key_of(&key, v);
            if tx.contains(Cf::SecretVersions, &vk)? {
                tx.delete(Cf::SecretVersions, &vk);
                destroyed += 1;
            }
        }
        tx.delete(Cf::Secrets, &key);
        tx.delete(Cf::Secrets, &deleted_versions_key(&key));
        tx.delete(Cf::Secrets, &settings_key(&key));
        // The leaf's entry, then each folder's that is left with no child,
        // up to the first that still has one.
        for (folder, child) in index_entries(&self.path).into_iter().rev() {
            if child.ends_with('/') && !folder_is_empty(tx, &names.index_prefix(&format!("{folder}{child}")))?
            {
                break;
            }
            tx.unlist(&names.index_key(folder, child));
        }
        tx.next_revision();
        Ok(Ok(Outcome::SecretPurged { versions_destroyed: destroyed }))
    }
}

/// Whether no entry starts with the folder's prefix: a scan up to the next
/// prefix (the overlay's keys are at most 64 bytes, so the end cannot be
/// the prefix and a run of 0xff bytes).
fn folder_is_empty(tx: &Tx<'_>, prefix: &[u8; 32]) -> Result<bool, DbError> {
    let mut end = *prefix;
    for b in end.iter_mut().rev() {
        let (next, carry) = b.overflowing_add(1);
        *b = next;
        if !carry {
            break;
        }
    }
    // A prefix of all 0xff bytes (a 2^-256 chance) wraps to zeros: scan to
    // the family's end instead.
    let end: &[u8] = if end == [0u8; 32] { &[0xff; 64] } else { &end };
    Ok(tx.scan_raw(Cf::SecretIndex, prefix, end, 1)?.is_empty())
}
