use serde::{Deserialize, Serialize};

use super::{Applied, CommandError, Ctx, ErrorCode, Outcome, Required};
use crate::ledger::chain::ChainCodes;
use crate::ledger::model::{account_flags, Account};
use crate::ledger::results::CreateAccountResult as R;
use crate::ledger::{answer, create_account, expire_due, run_chains, EVENTS_PER_BATCH_MAX};
use crate::state_machine::Tx;

/// A batch of accounts, applied in order; one result per account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAccounts {
    pub accounts: Vec<Account>,
}

impl CreateAccounts {
    pub fn validate(&self) -> Result<(), CommandError> {
        validate_batch(self.accounts.len())
    }

    /// Write on each account's ledger, checked per event inside apply.
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
        // The account and the ledger's totals.
        tx.expect_writes(2 * self.accounts.len());
        let linked = |a: &Account| a.has(account_flags::LINKED);
        // No account failure depends on state that could change: nothing
        // is kept of a failed one.
        let apply = |tx: &mut Tx<'_>, a: &Account| create_account(tx, caller, a);
        let results = run_chains(tx, &self.accounts, linked, codes, apply, |_, _, _| Ok(()));
        answer(results, |results| Outcome::AccountsCreated { results })
    }
}

/// 1..=EVENTS_PER_BATCH_MAX events.
pub(crate) fn validate_batch(events: usize) -> Result<(), CommandError> {
    if events == 0 {
        return Err(CommandError::invalid("a batch needs at least one event"));
    }
    if events > EVENTS_PER_BATCH_MAX {
        return Err(CommandError::new(
            ErrorCode::ResourceExhausted,
            format!("a batch holds at most {EVENTS_PER_BATCH_MAX} events, got {events}; split it"),
        ));
    }
    Ok(())
}
