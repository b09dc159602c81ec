use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::put_secret::list_new_path;
use super::set_state_version::{SECRET_METADATA_FIRST, SECRET_PURGE};
use super::{
    below_state_version, refuse, secret_resource, validate_secret_path, Applied, CommandError, Ctx,
    ErrorCode, Outcome, Required, SecretMeta,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::limits::{SECRET_VERSIONS_DEFAULT, SECRET_VERSIONS_LIMIT};
use crate::secret_deletions;
use crate::secret_settings::{self, validate_custom_metadata};
use crate::state_machine::Tx;

/// Changes a secret's settings without writing a version (Vault's `kv
/// metadata put`): versions to keep (applied at the next put, as Vault
/// does), whether puts must carry check-and-set, custom metadata (replaced
/// whole). Unset fields stay as they are. From state version
/// `SECRET_PURGE` on (the version that brought the settings record); from
/// `SECRET_METADATA_FIRST` on, on a path with no secret yet too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSecretMetadata {
    pub path: String,
    pub max_versions: Option<u64>,
    pub cas_required: Option<bool>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

impl UpdateSecretMetadata {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)?;
        if let Some(m) = self.max_versions {
            if m == 0 || m > SECRET_VERSIONS_LIMIT {
                return Err(CommandError::invalid(format!(
                    "max_versions: must be 1..={SECRET_VERSIONS_LIMIT}, got {m}"
                )));
            }
        }
        if let Some(m) = &self.custom_metadata {
            validate_custom_metadata(m)?;
        }
        if self.max_versions.is_none() && self.cas_required.is_none() && self.custom_metadata.is_none() {
            return Err(CommandError::invalid(
                "nothing to change: set max_versions, cas_required or custom_metadata",
            ));
        }
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Write, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        if let Some(e) = below_state_version(tx, SECRET_PURGE, "updating a secret's metadata") {
            return Ok(Err(e));
        }
        let names = tx.names()?;
        let key = names.key(Cf::Secrets, &self.path);
        let existing = tx.get::<SecretMeta>(Cf::Secrets, &key)?;
        let created = existing.is_none();
        let mut meta = match existing {
            Some(meta) => meta,
            None if tx.state_version() >= SECRET_METADATA_FIRST => {
                // A new path, as a put would make it: no `.` or `..` segment
                // (listed literally, matched by rules literally).
                if self.path.split('/').any(|seg| seg == "." || seg == "..") {
                    return refuse(
                        ErrorCode::InvalidArgument,
                        format!(
                            "path: {:?} has a '.' or '..' segment; name the secret by its plain path",
                            self.path
                        ),
                    );
                }
                // Metadata before the first version (Vault creates it too):
                // listed at once, no version yet; the first put is version 1.
                list_new_path(tx, &names, &self.path)?;
                SecretMeta {
                    latest_version: 0,
                    oldest_version: 1,
                    max_versions: SECRET_VERSIONS_DEFAULT,
                    deleted: false,
                    // Both set below, with the updated ones.
                    created_revision: 0,
                    created_ms: 0,
                    updated_revision: 0,
                    updated_ms: 0,
                    updated_by: String::new(),
                }
            }
            None => {
                return refuse(
                    ErrorCode::NotFound,
                    format!(
                        "no secret at {}: write it first (cas 0 makes sure it is new), then set its metadata",
                        self.path
                    ),
                )
            }
        };
        let mut settings = secret_settings::load(&*tx, &key)?;
        let before = (meta.max_versions, settings.clone());
        if let Some(m) = self.max_versions {
            meta.max_versions = m;
        }
        if let Some(c) = self.cas_required {
            settings.cas_required = c;
        }
        if let Some(m) = &self.custom_metadata {
            settings.custom_metadata = m.clone();
        }
        // The same settings again change nothing (a retry without an id).
        if !created && before == (meta.max_versions, settings.clone()) {
            return Ok(Ok(Outcome::Done));
        }
        secret_settings::save(tx, &key, &settings);
        // A latest version deleted before state version 4 has no mark: its
        // time is the meta's last change, which this one would move.
        if meta.deleted {
            let mut marks = secret_deletions::load(&*tx, &key)?;
            if marks.insert(meta.latest_version, meta.updated_ms) {
                secret_deletions::save(tx, &key, &mut marks, meta.oldest_version);
            }
        }
        meta.updated_revision = tx.next_revision();
        meta.updated_ms = tx.clock_ms();
        meta.updated_by = ctx.actor_name();
        if created {
            meta.created_revision = meta.updated_revision;
            meta.created_ms = meta.updated_ms;
        }
        tx.put(Cf::Secrets, &key, &meta);
        Ok(Ok(Outcome::Done))
    }
}
