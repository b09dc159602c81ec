//! `create_accounts`: one event.

use super::model::{account_flags as f, Account};
use super::results::CreateAccountResult as R;
use super::{
    account, flags_kept, hides_foreign, may_write, next_timestamp, require_write, store_accounts, Abort,
};
use crate::auth::Caller;
use crate::state_machine::Tx;

pub(crate) fn create_account(tx: &mut Tx<'_>, caller: &Caller, a: &Account) -> Result<R, Abort> {
    if a.timestamp != 0 {
        return Ok(R::TimestampMustBeZero);
    }
    if a.flags & !f::ALL != 0 {
        return Ok(R::ReservedFlag);
    }
    if a.id == 0 {
        return Ok(R::IdMustNotBeZero);
    }
    if a.id == u128::MAX {
        return Ok(R::IdMustNotBeIntMax);
    }
    // Before anything that reveals what exists: the caller must be allowed
    // on the ledger named; an account taken on another ledger it may not
    // write tells it no more than that.
    if a.ledger != 0 {
        require_write(caller, a.ledger)?;
    }
    if let Some(e) = account(tx, a.id)? {
        if hides_foreign(tx) && !may_write(caller, e.ledger) {
            // Taken on a ledger this caller may not write: see the transfer's.
            return Ok(R::ExistsWithDifferentLedger);
        }
        require_write(caller, e.ledger)?;
        return Ok(exists(a, &e, flags_kept(tx)));
    }
    if a.has(f::DEBITS_MUST_NOT_EXCEED_CREDITS) && a.has(f::CREDITS_MUST_NOT_EXCEED_DEBITS) {
        return Ok(R::FlagsAreMutuallyExclusive);
    }
    if a.debits_pending != 0 {
        return Ok(R::DebitsPendingMustBeZero);
    }
    if a.debits_posted != 0 {
        return Ok(R::DebitsPostedMustBeZero);
    }
    if a.credits_pending != 0 {
        return Ok(R::CreditsPendingMustBeZero);
    }
    if a.credits_posted != 0 {
        return Ok(R::CreditsPostedMustBeZero);
    }
    if a.ledger == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    if a.code == 0 {
        return Ok(R::CodeMustNotBeZero);
    }
    let timestamp = next_timestamp(tx)?;
    tx.next_revision();
    let flags = if flags_kept(tx) { a.flags } else { a.flags & !f::LINKED };
    let created = Account { flags, timestamp, ..*a };
    // A new account joins its ledger's totals with zero balances.
    store_accounts(tx, &[(Account { timestamp: 0, ..created }, created)])?;
    Ok(R::Ok)
}

/// An id that is taken: the same account again, or which field differs.
/// Every flag is compared, as TigerBeetle does (`closed` set by a closing
/// transfer since included); states before `LEDGER_FLAGS_KEPT` compare
/// neither `linked` nor `closed`.
fn exists(a: &Account, e: &Account, all_flags: bool) -> R {
    let mask = if all_flags { u16::MAX } else { !(f::LINKED | f::CLOSED) };
    if a.flags & mask != e.flags & mask {
        R::ExistsWithDifferentFlags
    } else if a.user_data_128 != e.user_data_128 {
        R::ExistsWithDifferentUserData128
    } else if a.user_data_64 != e.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if a.user_data_32 != e.user_data_32 {
        R::ExistsWithDifferentUserData32
    } else if a.ledger != e.ledger {
        R::ExistsWithDifferentLedger
    } else if a.code != e.code {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}
