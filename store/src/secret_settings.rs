//! A secret's settings beyond its versions (Vault KV v2 metadata), from
//! state version `SECRET_PURGE` on: whether every write must carry a
//! check-and-set version, and custom key-value metadata. One record beside
//! the meta (the secret's key and one byte), absent for a secret with
//! neither, so a put to such a secret reads one key that misses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Read;
use crate::command::CommandError;
use crate::layout::Cf;
use crate::state_machine::Tx;
use crate::DbError;

/// Custom metadata entries per secret (Vault's limit).
pub const CUSTOM_METADATA_KEYS_MAX: usize = 64;
/// Bytes per custom metadata key (Vault's limit).
pub const CUSTOM_METADATA_KEY_BYTES_MAX: usize = 128;
/// Bytes per custom metadata value (Vault's limit).
pub const CUSTOM_METADATA_VALUE_BYTES_MAX: usize = 512;

/// The record's key: the secret's own key in `Cf::Secrets` and one byte
/// (the meta's key is 32 bytes, the deletion record's ends in `d`).
pub fn settings_key(secret_key: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..32].copy_from_slice(secret_key);
    k[32] = b's';
    k
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSettings {
    /// Every put must carry `cas` (Vault's `cas_required`).
    pub cas_required: bool,
    /// Not secret, but sealed at rest like every value.
    pub custom_metadata: BTreeMap<String, String>,
}

impl SecretSettings {
    pub fn is_default(&self) -> bool {
        *self == SecretSettings::default()
    }
}

pub fn validate_custom_metadata(m: &BTreeMap<String, String>) -> Result<(), CommandError> {
    if m.len() > CUSTOM_METADATA_KEYS_MAX {
        return Err(CommandError::invalid(format!(
            "custom_metadata: at most {CUSTOM_METADATA_KEYS_MAX} keys, got {}",
            m.len()
        )));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > CUSTOM_METADATA_KEY_BYTES_MAX {
            return Err(CommandError::invalid(format!(
                "custom_metadata: keys must be 1..={CUSTOM_METADATA_KEY_BYTES_MAX} bytes, got {} ({k:?})",
                k.len()
            )));
        }
        if v.len() > CUSTOM_METADATA_VALUE_BYTES_MAX {
            return Err(CommandError::invalid(format!(
                "custom_metadata[{k:?}]: values must be at most {CUSTOM_METADATA_VALUE_BYTES_MAX} bytes, got {}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// The secret's settings (the defaults when it has no record).
pub(crate) fn load(r: &impl Read, secret_key: &[u8; 32]) -> Result<SecretSettings, DbError> {
    Ok(r.get(Cf::Secrets, &settings_key(secret_key))?.unwrap_or_default())
}

/// Writes the settings; defaults leave no record.
pub(crate) fn save(tx: &mut Tx<'_>, secret_key: &[u8; 32], settings: &SecretSettings) {
    let key = settings_key(secret_key);
    if settings.is_default() {
        tx.delete(Cf::Secrets, &key);
    } else {
        tx.put(Cf::Secrets, &key, settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_metadata_limits_are_enforced() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(validate_custom_metadata(&one("owner", "team-a")).is_ok());
        assert!(validate_custom_metadata(&one("", "x")).is_err());
        assert!(validate_custom_metadata(&one(&"k".repeat(129), "x")).is_err());
        assert!(validate_custom_metadata(&one("k", &"v".repeat(513))).is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_custom_metadata(&many).unwrap_err().message.contains("at most 64 keys"));
    }

    #[test]
    fn the_record_sits_beside_the_meta_and_the_deletion_record() {
        let k = settings_key(&[7; 32]);
        assert_ne!(k, crate::secret_deletions::deleted_versions_key(&[7; 32]));
        assert_eq!(k[..32], [7; 32]);
    }
}
