use serde::{Deserialize, Serialize};

use super::delete_secret_versions::{sorted_unique, Versioned};
use super::{
    secret_resource, validate_secret_path, validate_versions, Applied, CommandError, Ctx, Outcome, Required,
};
use crate::auth::{Access, Action};
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
        let mut s = match Versioned::load(tx, &self.path, "undeleting versions by number")? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let mut undeleted = Vec::new();
        for v in sorted_unique(&self.versions) {
            if !s.is_deleted(v) || !s.has_value(tx, v)? {
                continue;
            }
            s.marks.remove(v);
            if v == s.meta.latest_version {
                s.meta.deleted = false;
            }
            undeleted.push(v);
        }
        let latest_version = s.store(tx, ctx, !undeleted.is_empty());
        Ok(Ok(Outcome::SecretVersionsUndeleted { versions: undeleted, latest_version }))
    }
}
