use serde::{Deserialize, Serialize};

use super::set_state_version::{unsupported, STATE_VERSION_SUPPORTED};
use super::{refuse, Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::auth::Read;
use crate::layout::{sm_keys, Cf};
use crate::state_machine::Tx;

/// The state version a new cluster starts at: the newest its first node
/// supports, proposed by that node just before `Bootstrap`, so no write
/// ever applies to the new cluster by older rules. (A state that never
/// applied this is at version 1, as every cluster made before it was.)
/// Through the log like every change of version: a member of an older
/// build cannot read this op and stops at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitStateVersion {
    pub version: u32,
}

impl InitStateVersion {
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.version == 0 {
            return Err(CommandError::invalid("version must be 1 or more"));
        }
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        if self.version > STATE_VERSION_SUPPORTED {
            return Err(unsupported(self.version));
        }
        if tx.get::<bool>(Cf::SmMeta, sm_keys::BOOTSTRAPPED)?.is_some() {
            return refuse(
                ErrorCode::FailedPrecondition,
                "the cluster has its first admin: an admin moves its state version \
                 (`strongbox cluster upgrade-state`)",
            );
        }
        if self.version > tx.state_version() {
            tx.set_state_version(self.version);
            tx.next_revision();
        }
        Ok(Ok(Outcome::StateVersion { version: self.version }))
    }
}
