use serde::{Deserialize, Serialize};

use super::{
    secret_version_key, validate_secret_path, CommandError, ErrorCode, Outcome, SecretMeta, SecretVersion,
};
use crate::layout::Cf;
use crate::limits::{SECRET_VALUE_BYTES_MAX, SECRET_VERSIONS_MAX};
use crate::state_machine::Tx;
use crate::DbError;

/// Writes a new version of the secret at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutSecret {
    pub path: String,
    pub value: Vec<u8>,
    /// Check-and-set: succeed only if the current version is this one
    /// (0 = the secret must not exist).
    pub cas: Option<u64>,
}

impl PutSecret {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_secret_path(&self.path)?;
        if self.value.len() > SECRET_VALUE_BYTES_MAX {
            return Err(CommandError::invalid(format!(
                "value is {} bytes; the limit is {SECRET_VALUE_BYTES_MAX}",
                self.value.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>) -> Result<Result<Outcome, CommandError>, DbError> {
        let key = self.path.as_bytes();
        let meta: Option<SecretMeta> = tx.get(Cf::Secrets, key)?;
        let current = meta.as_ref().map_or(0, |m| m.latest_version);
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
            &secret_version_key(&self.path, version),
            &SecretVersion { value: self.value.clone(), created_ms: now_ms, revision },
        );
        if version > SECRET_VERSIONS_MAX {
            tx.delete(Cf::SecretVersions, &secret_version_key(&self.path, version - SECRET_VERSIONS_MAX));
        }
        tx.put(
            Cf::Secrets,
            key,
            &SecretMeta {
                latest_version: version,
                deleted: false,
                created_revision: meta.as_ref().map_or(revision, |m| m.created_revision),
                updated_revision: revision,
                updated_ms: now_ms,
            },
        );
        Ok(Ok(Outcome::SecretWritten { version }))
    }
}
