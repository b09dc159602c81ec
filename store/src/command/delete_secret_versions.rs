use serde::{Deserialize, Serialize};

use super::set_state_version::SECRET_DELETES_PER_VERSION;
use super::{
    refuse, secret_resource, validate_secret_path, validate_versions, Applied, CommandError, Ctx, ErrorCode,
    Outcome, Required, SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::secret_deletions;
use crate::state_machine::Tx;

/// Soft-deletes the named versions of a secret (Vault's `delete` with
/// versions): their values stay, reads of them answer not found, and
/// `UndeleteSecretVersions` brings them back. Versions pruned, destroyed,
/// not written yet or deleted already are skipped, as Vault skips them; the
/// outcome lists the versions this command deleted. From state version
/// `SECRET_DELETES_PER_VERSION` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSecretVersions {
    pub path: String,
    pub versions: Vec<u64>,
}

impl DeleteSecretVersions {
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
                format!("deleting versions by number needs state version {SECRET_DELETES_PER_VERSION}"),
            );
        }
        let names = tx.names()?;
        let key = names.key(Cf::Secrets, &self.path);
        let Some(mut meta) = tx.get::<SecretMeta>(Cf::Secrets, &key)? else {
            return refuse(ErrorCode::NotFound, format!("no secret at {}", self.path));
        };
        let mut marks = secret_deletions::load(&*tx, &key)?;
        let now_ms = tx.clock_ms();
        let mut deleted = Vec::new();
        for v in sorted_unique(&self.versions) {
            let latest = v == meta.latest_version;
            if v < meta.oldest_version
                || v > meta.latest_version
                || (latest && meta.deleted)
                || marks.deleted_ms(v, meta.oldest_version).is_some()
                || tx.get::<SecretVersion>(Cf::SecretVersions, &names.version_key(&self.path, v))?.is_none()
            {
                continue;
            }
            marks.insert(v, now_ms);
            meta.deleted |= latest;
            deleted.push(v);
        }
        if !deleted.is_empty() {
            secret_deletions::save(tx, &key, &mut marks, meta.oldest_version);
            meta.updated_revision = tx.next_revision();
            meta.updated_ms = now_ms;
            meta.updated_by = ctx.actor_name();
            tx.put(Cf::Secrets, &key, &meta);
        }
        Ok(Ok(Outcome::SecretVersionsDeleted { versions: deleted, latest_version: meta.latest_version }))
    }
}

/// The versions named, ascending, each once.
pub(super) fn sorted_unique(versions: &[u64]) -> Vec<u64> {
    let mut v = versions.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}
