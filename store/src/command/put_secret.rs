use serde::{Deserialize, Serialize};

use super::set_state_version::{SECRET_DELETES_PER_VERSION, SECRET_PURGE};
use super::{
    secret_resource, validate_secret_path, Applied, CommandError, Ctx, ErrorCode, Outcome, Required,
    SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::limits::{SECRET_VALUE_BYTES_MAX, SECRET_VERSIONS_DEFAULT, SECRET_VERSIONS_LIMIT};
use crate::names::{index_entries, version_key_of, IndexEntry, NameKey};
use crate::state_machine::Tx;
use crate::DbError;
use crate::{secret_deletions, secret_settings};

/// Writes a new version of the secret at `path`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutSecret {
    pub path: String,
    pub value: Vec<u8>,
    /// Check-and-set: succeed only if the current version is this one
    /// (0 = the secret must not exist).
    pub cas: Option<u64>,
    /// Versions to keep from now on (1..=100); unset keeps the current
    /// setting (10 for a new secret).
    pub max_versions: Option<u64>,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecret")
            .field("path", &self.path)
            .field("value", &super::Redacted(self.value.as_ref()))
            .field("cas", &self.cas)
            .field("max_versions", &self.max_versions)
            .finish()
    }
}

impl PutSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)?;
        if self.value.len() > SECRET_VALUE_BYTES_MAX {
            return Err(CommandError::new(
                ErrorCode::ResourceExhausted,
                format!("value is {} bytes; the limit is {SECRET_VALUE_BYTES_MAX}", self.value.len()),
            ));
        }
        if let Some(m) = self.max_versions {
            if !(1..=SECRET_VERSIONS_LIMIT).contains(&m) {
                return Err(CommandError::invalid(format!(
                    "max_versions: must be 1..={SECRET_VERSIONS_LIMIT}, got {m}"
                )));
            }
        }
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Write, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let names = tx.names()?;
        let key = &names.key(Cf::Secrets, &self.path);
        let meta: Option<SecretMeta> = tx.get(Cf::Secrets, key)?;
        if meta.is_none() {
            list_new_path(tx, &names, &self.path)?;
        }
        let current = meta.as_ref().map_or(0, |m| m.latest_version);
        // Settings exist only from SECRET_PURGE on; an older state has none.
        if self.cas.is_none() && meta.is_some() && tx.state_version() >= SECRET_PURGE {
            if secret_settings::load(&*tx, key)?.cas_required {
                return Ok(Err(CommandError::new(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "{} requires check-and-set: send cas (the current version is {current})",
                        self.path
                    ),
                )));
            }
        }
        if let Some(expected) = self.cas {
            if expected != current {
                return Ok(Err(CommandError::new(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "check-and-set failed for {}: expected version {expected}, current is {current}",
                        self.path
                    ),
                )));
            }
        }
        let version = current + 1;
        let revision = tx.next_revision();
        let now_ms = tx.clock_ms();
        tx.put(
            Cf::SecretVersions,
            &version_key_of(key, version),
            &SecretVersion { value: self.value.clone(), created_ms: now_ms, revision },
        );
        let max_versions =
            self.max_versions.or(meta.as_ref().map(|m| m.max_versions)).unwrap_or(SECRET_VERSIONS_DEFAULT);
        let mut oldest_version = meta.as_ref().map_or(1, |m| m.oldest_version);
        // Bounded: max_versions only shrinks by at most SECRET_VERSIONS_LIMIT.
        while version - oldest_version + 1 > max_versions {
            tx.delete(Cf::SecretVersions, &version_key_of(key, oldest_version));
            oldest_version += 1;
        }
        // The deleted latest version stays deleted (its entry is written
        // here if the deletion predates SECRET_DELETES_PER_VERSION).
        if let Some(m) =
            meta.as_ref().filter(|m| m.deleted && tx.state_version() >= SECRET_DELETES_PER_VERSION)
        {
            let mut marks = secret_deletions::load(&*tx, key)?;
            if marks.insert(m.latest_version, m.updated_ms) || oldest_version > m.oldest_version {
                secret_deletions::save(tx, key, &mut marks, oldest_version);
            }
        }
        tx.put(
            Cf::Secrets,
            key,
            &SecretMeta {
                latest_version: version,
                oldest_version,
                max_versions,
                deleted: false,
                created_revision: meta.as_ref().map_or(revision, |m| m.created_revision),
                created_ms: meta.as_ref().map_or(now_ms, |m| m.created_ms),
                updated_revision: revision,
                updated_ms: now_ms,
                updated_by: ctx.actor_name(),
            },
        );
        Ok(Ok(Outcome::SecretWritten { version }))
    }
}

/// Lists a new path under each of its folders from now on (until a purge
/// removes it). Leaf first, then up: a folder already listed has all its
/// ancestors listed too, so the walk stops there.
pub(super) fn list_new_path(tx: &mut Tx<'_>, names: &NameKey, path: &str) -> Result<(), DbError> {
    for (folder, child) in index_entries(path).into_iter().rev() {
        let key = names.index_key(folder, child);
        if child.ends_with('/') && tx.folder_listed(&key)? {
            break;
        }
        tx.put(Cf::SecretIndex, &key, &IndexEntry { name: child.into() });
    }
    Ok(())
}
