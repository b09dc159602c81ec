use serde::{Deserialize, Serialize};

use super::create_accounts::validate_batch;
use super::{Applied, CommandError, Ctx, Outcome, Required};
use crate::ledger::chain::ChainCodes;
use crate::ledger::model::{transfer_flags, Transfer};
use crate::ledger::results::CreateTransferResult as R;
use crate::ledger::{answer, create_transfer, expire_due, keep_failed_id, run_chains};
use crate::state_machine::Tx;

/// What one transfer writes: itself, its two accounts and their two
/// entries, and the ledger's totals (history and pending records are rarer).
const WRITES_PER_TRANSFER: usize = 6;

/// A batch of transfers, applied in order; one result per transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTransfers {
    pub transfers: Vec<Transfer>,
}

impl CreateTransfers {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_batch(self.transfers.len())
    }

    /// Write on each transfer's ledger, checked per event inside apply (a
    /// post or void may name no ledger and inherit its pending transfer's).
    pub fn required(&self) -> Required {
        Required::Authenticated
    }

    pub(crate) fn apply(&self, tx: &mut Tx<'_>, ctx: &Ctx<'_>) -> Applied {
        let caller = ctx.caller();
        let codes = ChainCodes {
            ok: R::Ok,
            linked_event_failed: R::LinkedEventFailed,
            linked_event_chain_open: R::LinkedEventChainOpen,
        };
        expire_due(tx)?;
        tx.expect_writes(WRITES_PER_TRANSFER * self.transfers.len());
        tx.prefetch_absent_transfers(self.transfers.iter().map(|t| t.id))?;
        let linked = |t: &Transfer| t.has(transfer_flags::LINKED);
        let apply = |tx: &mut Tx<'_>, t: &Transfer| create_transfer(tx, caller, t);
        let failed = |tx: &mut Tx<'_>, t: &Transfer, r| keep_failed_id(tx, caller, t, r);
        let results = run_chains(tx, &self.transfers, linked, codes, apply, failed);
        answer(results, |results| Outcome::TransfersCreated { results })
    }
}
