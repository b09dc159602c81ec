use serde::{Deserialize, Serialize};

use super::set_state_version::{SECRET_DELETES_PER_VERSION, SECRET_DELETE_IDEMPOTENT};
use super::{
    refuse, secret_resource, validate_secret_path, Applied, CommandError, Ctx, ErrorCode, Outcome, Required,
    SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::names::version_key_of;
use crate::secret_deletions;
use crate::state_machine::Tx;

/// Soft-deletes the latest version of a secret: reads of it answer
/// not-found, older versions stay readable. Before
/// `SECRET_DELETES_PER_VERSION`, the next put made it readable again by its
/// number; from then on it stays deleted (see `secret_deletions`).
/// From `SECRET_DELETE_IDEMPOTENT` on, deleting what is deleted already
/// succeeds and changes nothing (a retry without a request id, as in Vault).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSecret {
    pub path: String,
}

impl DeleteSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Write, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let key = &tx.name_key(Cf::Secrets, &self.path)?;
        let meta: Option<SecretMeta> = tx.get(Cf::Secrets, key)?;
        let Some(mut meta) = meta.filter(|m| !m.deleted || tx.state_version() >= SECRET_DELETE_IDEMPOTENT)
        else {
            return refuse(ErrorCode::NotFound, format!("no secret at {}", self.path));
        };
        if meta.deleted {
            return Ok(Ok(Outcome::SecretDeleted { version: meta.latest_version }));
        }
        if tx.state_version() >= SECRET_DELETES_PER_VERSION {
            // A destroyed latest version has nothing left to hide: Vault
            // answers OK and changes nothing (as `DeleteSecretVersions` does).
            let latest = version_key_of(key, meta.latest_version);
            if tx.get::<SecretVersion>(Cf::SecretVersions, &latest)?.is_none() {
                return Ok(Ok(Outcome::SecretDeleted { version: meta.latest_version }));
            }
        }
        meta.deleted = true;
        if tx.state_version() >= SECRET_DELETES_PER_VERSION {
            let mut marks = secret_deletions::load(&*tx, key)?;
            marks.insert(meta.latest_version, tx.clock_ms());
            secret_deletions::save(tx, key, &mut marks, meta.oldest_version);
        }
        meta.updated_revision = tx.next_revision();
        meta.updated_ms = tx.clock_ms();
        meta.updated_by = ctx.actor_name();
        tx.put(Cf::Secrets, key, &meta);
        Ok(Ok(Outcome::SecretDeleted { version: meta.latest_version }))
    }
}
