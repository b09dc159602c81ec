use serde::{Deserialize, Serialize};

use super::set_state_version::SECRET_DELETES_PER_VERSION;
use super::{
    refuse, secret_resource, validate_secret_path, Applied, CommandError, Ctx, ErrorCode, Outcome, Required,
    SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::secret_deletions;
use crate::state_machine::Tx;

/// Brings back a soft-deleted latest version (Vault's undelete). Nothing is
/// deleted: a no-op. The latest version destroyed meanwhile: there is
/// nothing to bring back, so FAILED_PRECONDITION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeleteSecret {
    pub path: String,
}

impl UndeleteSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Write, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let names = tx.names()?;
        let key = &names.key(Cf::Secrets, &self.path);
        let Some(mut meta) = tx.get::<SecretMeta>(Cf::Secrets, key)? else {
            return refuse(ErrorCode::NotFound, format!("no secret at {}", self.path));
        };
        if !meta.deleted {
            return Ok(Ok(Outcome::SecretUndeleted { version: meta.latest_version }));
        }
        let latest = names.version_key(&self.path, meta.latest_version);
        if tx.get::<SecretVersion>(Cf::SecretVersions, &latest)?.is_none() {
            return refuse(
                ErrorCode::FailedPrecondition,
                format!(
                    "the latest version ({}) of secret {} was destroyed: nothing to bring back",
                    meta.latest_version, self.path
                ),
            );
        }
        meta.deleted = false;
        if tx.state_version() >= SECRET_DELETES_PER_VERSION {
            let mut marks = secret_deletions::load(&*tx, key)?;
            if marks.remove(meta.latest_version) {
                secret_deletions::save(tx, key, &mut marks, meta.oldest_version);
            }
        }
        meta.updated_revision = tx.next_revision();
        meta.updated_ms = tx.clock_ms();
        meta.updated_by = ctx.actor_name();
        tx.put(Cf::Secrets, key, &meta);
        Ok(Ok(Outcome::SecretUndeleted { version: meta.latest_version }))
    }
}
