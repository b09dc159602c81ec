//! `create_transfers`: one event. Single-phase and pending transfers here;
//! posting and voiding a pending transfer in `two_phase`.

use super::model::{
    account_flags as af, transfer_flags as f, Account, PendingStatus, StoredTransfer, Transfer, AMOUNT_MAX,
    NS_PER_S,
};
use super::results::CreateTransferResult as R;
use super::{
    account, flags_kept, hides_foreign, id_key, may_see, may_write, next_timestamp, record_entries,
    require_write, store_accounts, transfer, transfer_id, Abort,
};
use crate::auth::Caller;
use crate::layout::Cf;
use crate::state_machine::Tx;

pub(crate) fn create_transfer(tx: &mut Tx<'_>, caller: &Caller, t: &Transfer) -> Result<R, Abort> {
    if t.timestamp != 0 {
        return Ok(R::TimestampMustBeZero);
    }
    if t.flags & !f::ALL != 0 {
        return Ok(R::ReservedFlag);
    }
    if t.id == 0 {
        return Ok(R::IdMustNotBeZero);
    }
    if t.id == u128::MAX {
        return Ok(R::IdMustNotBeIntMax);
    }
    if t.ledger != 0 {
        require_write(caller, t.ledger)?;
    }
    if let Some(e) = transfer_id(tx, t.id)? {
        if hides_foreign(tx) && !may_write(caller, e.transfer.ledger) {
            // Taken on a ledger this caller may not write (so not the one
            // it named): that much it must learn, ids being global; how the
            // transfer there differs from this one it may not.
            return Ok(R::ExistsWithDifferentLedger);
        }
        require_write(caller, e.transfer.ledger)?;
        if e.is_failed() {
            return Ok(R::IdAlreadyFailed);
        }
        // A post or void that exists names an existing pending transfer.
        let p = match t.pending_id {
            0 => None,
            id => transfer(tx, id)?.map(|p| p.transfer),
        };
        return Ok(exists(t, &e.transfer, p.as_ref(), flags_kept(tx)));
    }
    if flags_conflict(t.flags) {
        return Ok(R::FlagsAreMutuallyExclusive);
    }
    if t.has(f::POST_PENDING_TRANSFER) || t.has(f::VOID_PENDING_TRANSFER) {
        return super::two_phase::post_or_void(tx, caller, t);
    }
    if t.debit_account_id == 0 {
        return Ok(R::DebitAccountIdMustNotBeZero);
    }
    if t.debit_account_id == u128::MAX {
        return Ok(R::DebitAccountIdMustNotBeIntMax);
    }
    if t.credit_account_id == 0 {
        return Ok(R::CreditAccountIdMustNotBeZero);
    }
    if t.credit_account_id == u128::MAX {
        return Ok(R::CreditAccountIdMustNotBeIntMax);
    }
    if t.debit_account_id == t.credit_account_id {
        return Ok(R::AccountsMustBeDifferent);
    }
    if t.pending_id != 0 {
        return Ok(R::PendingIdMustBeZero);
    }
    if !t.has(f::PENDING) && t.timeout != 0 {
        return Ok(R::TimeoutReservedForPendingTransfer);
    }
    if (t.has(f::CLOSING_DEBIT) || t.has(f::CLOSING_CREDIT)) && !t.has(f::PENDING) {
        return Ok(R::ClosingTransferMustBePending);
    }
    if t.ledger == 0 {
        return Ok(R::LedgerMustNotBeZero);
    }
    if t.code == 0 {
        return Ok(R::CodeMustNotBeZero);
    }
    // An account on a ledger the caller may not see is not found. The
    // transfer's own ledger passed `require_write` above: no rule scan.
    let hidden = |a: &Account| a.ledger != t.ledger && hides_foreign(tx) && !may_see(caller, a.ledger);
    let Some(dr0) = account(tx, t.debit_account_id)?.filter(|a| !hidden(a)) else {
        return Ok(R::DebitAccountNotFound);
    };
    let Some(cr0) = account(tx, t.credit_account_id)?.filter(|a| !hidden(a)) else {
        return Ok(R::CreditAccountNotFound);
    };
    if dr0.ledger != cr0.ledger {
        return Ok(R::AccountsMustHaveTheSameLedger);
    }
    if t.ledger != dr0.ledger {
        return Ok(R::TransferMustHaveTheSameLedgerAsAccounts);
    }
    if dr0.has(af::CLOSED) {
        return Ok(R::DebitAccountAlreadyClosed);
    }
    if cr0.has(af::CLOSED) {
        return Ok(R::CreditAccountAlreadyClosed);
    }

    let mut amount = t.amount;
    if t.has(f::BALANCING_DEBIT) {
        let spent = dr0.debits_posted.saturating_add(dr0.debits_pending);
        amount = amount.min(dr0.credits_posted.saturating_sub(spent));
    }
    if t.has(f::BALANCING_CREDIT) {
        let spent = cr0.credits_posted.saturating_add(cr0.credits_pending);
        amount = amount.min(cr0.debits_posted.saturating_sub(spent));
    }

    let pending = t.has(f::PENDING);
    let (mut dr, mut cr) = (dr0, cr0);
    // A pending amount must also fit the posted balances it may be posted to.
    if pending {
        if dr.debits_pending.checked_add(amount).is_none() {
            return Ok(R::OverflowsDebitsPending);
        }
        if cr.credits_pending.checked_add(amount).is_none() {
            return Ok(R::OverflowsCreditsPending);
        }
    }
    if dr.debits_posted.checked_add(amount).is_none() {
        return Ok(R::OverflowsDebitsPosted);
    }
    if cr.credits_posted.checked_add(amount).is_none() {
        return Ok(R::OverflowsCreditsPosted);
    }
    if pending {
        dr.debits_pending += amount;
        cr.credits_pending += amount;
    } else {
        dr.debits_posted += amount;
        cr.credits_posted += amount;
    }
    let Some(dr_debits) = dr.debits_pending.checked_add(dr.debits_posted) else {
        return Ok(R::OverflowsDebits);
    };
    let Some(cr_credits) = cr.credits_pending.checked_add(cr.credits_posted) else {
        return Ok(R::OverflowsCredits);
    };
    let timestamp = next_timestamp(tx)?;
    if pending && timestamp.checked_add(u64::from(t.timeout) * NS_PER_S).is_none() {
        return Ok(R::OverflowsTimeout);
    }
    if dr.has(af::DEBITS_MUST_NOT_EXCEED_CREDITS) && dr_debits > dr.credits_posted {
        return Ok(R::ExceedsCredits);
    }
    if cr.has(af::CREDITS_MUST_NOT_EXCEED_DEBITS) && cr_credits > cr.debits_posted {
        return Ok(R::ExceedsDebits);
    }
    if t.has(f::CLOSING_DEBIT) {
        dr.flags |= af::CLOSED;
    }
    if t.has(f::CLOSING_CREDIT) {
        cr.flags |= af::CLOSED;
    }

    let flags = if flags_kept(tx) { t.flags } else { t.flags & !f::LINKED };
    let created = Transfer { amount, timestamp, flags, ..*t };
    let revision = tx.next_revision();
    store_accounts(tx, &[(dr0, dr), (cr0, cr)])?;
    store_transfer(tx, &created, revision);
    if pending {
        tx.put(Cf::PendingTransfers, &id_key(created.id), &PendingStatus::Pending);
        if let Some(at) = created.expires_at_ns() {
            tx.put(Cf::PendingExpiry, &super::expiry::key(at, created.id), &());
        }
    }
    record_entries(tx, &created, &dr, &cr, revision);
    Ok(R::Ok)
}

pub(super) fn store_transfer(tx: &mut Tx<'_>, t: &Transfer, revision: u64) {
    tx.put(Cf::Transfers, &id_key(t.id), &StoredTransfer { transfer: *t, revision });
}

/// Pending, post and void exclude each other; a post or void inherits its
/// amount logic from the pending transfer, so it cannot also balance or
/// close.
fn flags_conflict(flags: u16) -> bool {
    let phase = [f::PENDING, f::POST_PENDING_TRANSFER, f::VOID_PENDING_TRANSFER];
    let phases = phase.iter().filter(|p| flags & **p != 0).count();
    let resolves = flags & (f::POST_PENDING_TRANSFER | f::VOID_PENDING_TRANSFER) != 0;
    let shapes =
        flags & (f::BALANCING_DEBIT | f::BALANCING_CREDIT | f::CLOSING_DEBIT | f::CLOSING_CREDIT) != 0;
    phases > 1 || (resolves && shapes)
}

/// An id that is taken: the same transfer again, or which field differs.
/// `p` is the pending transfer a post or void names. `kept`: the state
/// keeps flags whole (`LEDGER_FLAGS_KEPT`), so all of them are compared.
fn exists(t: &Transfer, e: &Transfer, p: Option<&Transfer>, kept: bool) -> R {
    let mask = if kept { u16::MAX } else { !f::LINKED };
    if t.flags & mask != e.flags & mask {
        return R::ExistsWithDifferentFlags;
    }
    if t.pending_id != e.pending_id {
        return R::ExistsWithDifferentPendingId;
    }
    if t.timeout != e.timeout {
        return R::ExistsWithDifferentTimeout;
    }
    let resolves = t.has(f::POST_PENDING_TRANSFER) || t.has(f::VOID_PENDING_TRANSFER);
    match (resolves, p) {
        (true, Some(p)) => resolution_exists(t, e, p, kept),
        // Same flags and pending id as a stored post or void: its pending
        // transfer is stored too.
        (true, None) => unreachable!("a stored post or void of {} names a missing pending transfer", e.id),
        (false, _) => plain_exists(t, e),
    }
}

fn plain_exists(t: &Transfer, e: &Transfer) -> R {
    // A balancing amount is an upper limit: any limit at or above what
    // moved is the same request.
    let balancing = t.has(f::BALANCING_DEBIT) || t.has(f::BALANCING_CREDIT);
    let amount_matches = if balancing { t.amount >= e.amount } else { t.amount == e.amount };
    if t.debit_account_id != e.debit_account_id {
        R::ExistsWithDifferentDebitAccountId
    } else if t.credit_account_id != e.credit_account_id {
        R::ExistsWithDifferentCreditAccountId
    } else if !amount_matches {
        R::ExistsWithDifferentAmount
    } else if t.user_data_128 != e.user_data_128 {
        R::ExistsWithDifferentUserData128
    } else if t.user_data_64 != e.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if t.user_data_32 != e.user_data_32 {
        R::ExistsWithDifferentUserData32
    } else if t.ledger != e.ledger {
        R::ExistsWithDifferentLedger
    } else if t.code != e.code {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}

/// A post or void again. Fields it may leave at 0 (accounts, ledger, code,
/// user data) were filled in from the pending transfer `p`; the "whole
/// amount" forms (a post of `AMOUNT_MAX`, a void of 0) mean `p`'s amount.
fn resolution_exists(t: &Transfer, e: &Transfer, p: &Transfer, kept: bool) -> R {
    let given = |asked: u128, stored: u128| asked == 0 || asked == stored;
    // Builds before user data was inherited stored the 0 sent.
    let user_data = |asked: u128, stored: u128, pending: u128| {
        if asked == 0 {
            stored == pending || stored == 0
        } else {
            asked == stored
        }
    };
    let void = t.has(f::VOID_PENDING_TRANSFER);
    // Those builds also took a void of AMOUNT_MAX for the whole amount
    // (as states before `LEDGER_FLAGS_KEPT` still do).
    let whole =
        if void { t.amount == 0 || (!kept && t.amount == AMOUNT_MAX) } else { t.amount == AMOUNT_MAX };
    let amount = if whole { p.amount } else { t.amount };
    if !given(t.debit_account_id, e.debit_account_id) {
        R::ExistsWithDifferentDebitAccountId
    } else if !given(t.credit_account_id, e.credit_account_id) {
        R::ExistsWithDifferentCreditAccountId
    } else if amount != e.amount {
        R::ExistsWithDifferentAmount
    } else if !user_data(t.user_data_128, e.user_data_128, p.user_data_128) {
        R::ExistsWithDifferentUserData128
    } else if !user_data(t.user_data_64.into(), e.user_data_64.into(), p.user_data_64.into()) {
        R::ExistsWithDifferentUserData64
    } else if !user_data(t.user_data_32.into(), e.user_data_32.into(), p.user_data_32.into()) {
        R::ExistsWithDifferentUserData32
    } else if !given(t.ledger.into(), e.ledger.into()) {
        R::ExistsWithDifferentLedger
    } else if !given(t.code.into(), e.code.into()) {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}
