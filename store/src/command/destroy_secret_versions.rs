use serde::{Deserialize, Serialize};

use super::{
    refuse, secret_resource, validate_secret_path, validate_versions, Applied, CommandError, Ctx, ErrorCode,
    Outcome, Required, SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::state_machine::Tx;

/// Permanently removes the values of the given versions; the version
/// numbers are never reused. Versions already gone are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroySecretVersions {
    pub path: String,
    pub versions: Vec<u64>,
}

impl DestroySecretVersions {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)?;
        validate_versions(&self.versions)
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
        let mut destroyed = 0;
        for v in super::delete_secret_versions::sorted_unique(&self.versions) {
            let vk = names.version_key(&self.path, v);
            if tx.get::<SecretVersion>(Cf::SecretVersions, &vk)?.is_some() {
                tx.delete(Cf::SecretVersions, &vk);
                destroyed += 1;
            }
        }
        if destroyed > 0 {
            meta.updated_revision = tx.next_revision();
            meta.updated_ms = tx.clock_ms();
            meta.updated_by = ctx.actor_name();
            tx.put(Cf::Secrets, key, &meta);
        }
        Ok(Ok(Outcome::SecretVersionsDestroyed { destroyed }))
    }
}
