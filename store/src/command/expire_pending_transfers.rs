use serde::{Deserialize, Serialize};

use super::{Applied, CommandError, Ctx, Outcome, Required};
use crate::ledger::expire_due;
use crate::state_machine::Tx;

/// The leader's pulse: releases pending transfers whose timeout has passed
/// when no ledger command came along to do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirePendingTransfers {}

impl ExpirePendingTransfers {
    pub fn validate(&self) -> Result<(), CommandError> {
        Ok(())
    }

    pub fn required(&self) -> Required {
        Required::Node
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, _ctx: &Ctx<'_>) -> Applied {
        let expired = expire_due(tx)?;
        Ok(Ok(Outcome::PendingExpired { expired: expired as u64 }))
    }
}
