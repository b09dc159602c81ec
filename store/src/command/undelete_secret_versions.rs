use serde::{Deserialize, Serialize};

use super::delete_secret_versions::sorted_unique;
use super::set_state_version::SECRET_DELETES_PER_VERSION;
use super::{
    refuse, secret_resource, validate_secret_path, validate_versions, Applied, CommandError, Ctx, ErrorCode,
    Outcome, Required, SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::secret_deletions;
use crate::state_machine::Tx;

/// Brings back the named soft-deleted versions of a secret (Vault's
/// `undelete`). Versions not deleted, destroyed (nothing to bring back),
/// pruned or not written yet are skipped; the outcome lists the versions
/// this command brought back. From state version
/// `SECRET_DELETES_PER_VERSION` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeleteSecretVersions {
    pub path: String,
    pub versions: Vec<u64>,
}

impl UndeleteSecretVersions {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)?;
        validate_versions(&self.versions)
    }

    pub fn required(&self) -> Required {
        Required::Access(Access::new(Action::Write, secret_resource(&self.path)))
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        if tx.state_version() < SECRET_DELETES_PER_VERSION {
            return refuse(
                ErrorCode::FailedPrecondition,
                format!("undeleting versions by number needs state version {SECRET_DELETES_PER_VERSION}"),
            );
        }
        let names = tx.names()?;
        let key = names.key(Cf::Secrets, &self.path);
        let Some(mut meta) = tx.get::<SecretMeta>(Cf::Secrets, &key)? else {
            return refuse(ErrorCode::NotFound, format!("no secret at {}", self.path));
        };
        let mut marks = secret_deletions::load(&*tx, &key)?;
        let mut undeleted = Vec::new();
        for v in sorted_unique(&self.versions) {
            let latest = v == meta.latest_version;
            let deleted = (latest && meta.deleted) || marks.deleted_ms(v, meta.oldest_version).is_some();
            if !deleted
                || v < meta.oldest_version
                || tx.get::<SecretVersion>(Cf::SecretVersions, &names.version_key(&self.path, v))?.is_none()
            {
                continue;
            }
            marks.remove(v);
            if latest {
                meta.deleted = false;
            }
            undeleted.push(v);
        }
        if !undeleted.is_empty() {
            secret_deletions::save(tx, &key, &mut marks, meta.oldest_version);
            meta.updated_revision = tx.next_revision();
            meta.updated_ms = tx.clock_ms();
            meta.updated_by = ctx.actor_name();
            tx.put(Cf::Secrets, &key, &meta);
        }
        Ok(Ok(Outcome::SecretVersionsUndeleted { versions: undeleted, latest_version: meta.latest_version }))
    }
}
