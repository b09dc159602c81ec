use serde::{Deserialize, Serialize};

use super::set_state_version::SECRET_DELETES_PER_VERSION;
use super::{
    secret_resource, validate_secret_path, validate_versions, Applied, CommandError, Ctx, Outcome, Required,
    SecretMeta, SecretVersion,
};
use crate::auth::{Access, Action, Read};
use crate::layout::Cf;
use crate::names::version_key_of;
use crate::secret_deletions::{self, DeletedVersions};
use crate::state_machine::Tx;
use crate::DbError;

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
        let mut s = match Versioned::load(tx, &self.path, "deleting versions by number")? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let now_ms = tx.clock_ms();
        let mut deleted = Vec::new();
        for v in sorted_unique(&self.versions) {
            if s.is_deleted(v) || !s.has_value(tx, v)? {
                continue;
            }
            s.marks.insert(v, now_ms);
            s.meta.deleted |= v == s.meta.latest_version;
            deleted.push(v);
        }
        let latest_version = s.store(tx, ctx, !deleted.is_empty());
        Ok(Ok(Outcome::SecretVersionsDeleted { versions: deleted, latest_version }))
    }
}

/// A secret as the by-number commands change it: its meta and its record
/// of deleted versions, loaded once the state version allows them.
pub(super) struct Versioned {
    key: [u8; 32],
    pub(super) meta: SecretMeta,
    pub(super) marks: DeletedVersions,
}

impl Versioned {
    /// `what` names the command in its refusal on an older state.
    pub(super) fn load(
        tx: &Tx<'_>,
        path: &str,
        what: &str,
    ) -> Result<Result<Versioned, CommandError>, DbError> {
        if let Some(e) = super::below_state_version(tx, SECRET_DELETES_PER_VERSION, what) {
            return Ok(Err(e));
        }
        let key = tx.name_key(Cf::Secrets, path)?;
        let Some(meta) = tx.get::<SecretMeta>(Cf::Secrets, &key)? else {
            return Ok(Err(CommandError::not_found(format!("no secret at {path}"))));
        };
        let marks = secret_deletions::load(tx, &key)?;
        Ok(Ok(Versioned { key, meta, marks }))
    }

    pub(super) fn is_deleted(&self, version: u64) -> bool {
        (version == self.meta.latest_version && self.meta.deleted)
            || self.marks.deleted_ms(version, self.meta.oldest_version).is_some()
    }

    /// Whether `version` still has its value: written, neither pruned nor
    /// destroyed.
    pub(super) fn has_value(&self, tx: &Tx<'_>, version: u64) -> Result<bool, DbError> {
        if !(self.meta.oldest_version..=self.meta.latest_version).contains(&version) {
            return Ok(false);
        }
        Ok(tx.get::<SecretVersion>(Cf::SecretVersions, &version_key_of(&self.key, version))?.is_some())
    }

    /// Writes the record and the meta back if `changed` (a new revision);
    /// else nothing. Returns the latest version, for the outcome.
    pub(super) fn store(mut self, tx: &mut Tx<'_>, ctx: &Ctx<'_>, changed: bool) -> u64 {
        if changed {
            secret_deletions::save(tx, &self.key, &mut self.marks, self.meta.oldest_version);
            self.meta.updated_revision = tx.next_revision();
            self.meta.updated_ms = tx.clock_ms();
            self.meta.updated_by = ctx.actor_name();
            tx.put(Cf::Secrets, &self.key, &self.meta);
        }
        self.meta.latest_version
    }
}

/// The versions named, ascending, each once.
pub(super) fn sorted_unique(versions: &[u64]) -> Vec<u64> {
    let mut v = versions.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}
