//! Phase two of a pending transfer: post (all or part of the amount) or
//! void (release it). Either resolves the pending transfer for good.

use super::model::{account_flags as af, transfer_flags as f, PendingStatus, Transfer, AMOUNT_MAX};
use super::results::CreateTransferResult as R;
use super::transfer::store_transfer;
use super::{
    account, flags_kept, hides_foreign, id_key, may_see, next_timestamp, record_entries, require_write,
    store_accounts, transfer, Abort,
};
use crate::auth::{Caller, Read};
use crate::layout::Cf;
use crate::state_machine::Tx;

pub(super) fn post_or_void(tx: &mut Tx<'_>, caller: &Caller, t: &Transfer) -> Result<R, Abort> {
    let post = t.has(f::POST_PENDING_TRANSFER);
    if t.pending_id == 0 {
        return Ok(R::PendingIdMustNotBeZero);
    }
    if t.pending_id == u128::MAX {
        return Ok(R::PendingIdMustNotBeIntMax);
    }
    if t.pending_id == t.id {
        return Ok(R::PendingIdMustBeDifferent);
    }
    if t.timeout != 0 {
        return Ok(R::TimeoutReservedForPendingTransfer);
    }
    let Some(p) = transfer(tx, t.pending_id)? else { return Ok(R::PendingTransferNotFound) };
    let p = p.transfer;
    if hides_foreign(tx) && !may_see(caller, p.ledger) {
        return Ok(R::PendingTransferNotFound);
    }
    require_write(caller, p.ledger)?;
    if !p.has(f::PENDING) {
        return Ok(R::PendingTransferNotPending);
    }
    if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
        return Ok(R::PendingTransferHasDifferentDebitAccountId);
    }
    if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
        return Ok(R::PendingTransferHasDifferentCreditAccountId);
    }
    if t.ledger != 0 && t.ledger != p.ledger {
        return Ok(R::PendingTransferHasDifferentLedger);
    }
    if t.code != 0 && t.code != p.code {
        return Ok(R::PendingTransferHasDifferentCode);
    }
    // The whole pending amount: a post of AMOUNT_MAX, a void of 0. A post
    // may take less; a void releases exactly the pending amount.
    let amount = match (post, t.amount) {
        (true, AMOUNT_MAX) | (false, 0) => p.amount,
        (_, asked) => asked,
    };
    if amount > p.amount {
        return Ok(R::ExceedsPendingTransferAmount);
    }
    if !post && amount < p.amount {
        return Ok(R::PendingTransferHasDifferentAmount);
    }
    let status: PendingStatus =
        tx.get(Cf::PendingTransfers, &id_key(p.id))?.expect("every pending transfer has a status");
    match status {
        PendingStatus::Pending => {}
        PendingStatus::Posted => return Ok(R::PendingTransferAlreadyPosted),
        PendingStatus::Voided => return Ok(R::PendingTransferAlreadyVoided),
        PendingStatus::Expired => return Ok(R::PendingTransferExpired),
    }
    let timestamp = next_timestamp(tx)?;
    // Not yet swept, but past its timeout all the same.
    if p.expires_at_ns().is_some_and(|at| timestamp >= at) {
        return Ok(R::PendingTransferExpired);
    }
    let dr0 = account(tx, p.debit_account_id)?.expect("a pending transfer's accounts exist");
    let cr0 = account(tx, p.credit_account_id)?.expect("a pending transfer's accounts exist");
    // Nothing moves in a closed account; voiding only releases a
    // reservation (and voiding the closing transfer reopens the account).
    // So a closing transfer is never posted: it stays pending, is voided,
    // or expires.
    if post && dr0.has(af::CLOSED) {
        return Ok(R::DebitAccountAlreadyClosed);
    }
    if post && cr0.has(af::CLOSED) {
        return Ok(R::CreditAccountAlreadyClosed);
    }
    let (mut dr, mut cr) = (dr0, cr0);
    dr.debits_pending = dr.debits_pending.checked_sub(p.amount).expect("a pending amount is reserved");
    cr.credits_pending = cr.credits_pending.checked_sub(p.amount).expect("a pending amount is reserved");
    if post {
        assert!(!p.has(f::CLOSING_DEBIT) && !p.has(f::CLOSING_CREDIT), "a closing transfer posted");
        let Some(d) = dr.debits_posted.checked_add(amount) else { return Ok(R::OverflowsDebitsPosted) };
        let Some(c) = cr.credits_posted.checked_add(amount) else { return Ok(R::OverflowsCreditsPosted) };
        (dr.debits_posted, cr.credits_posted) = (d, c);
    } else {
        if p.has(f::CLOSING_DEBIT) {
            dr.flags &= !af::CLOSED;
        }
        if p.has(f::CLOSING_CREDIT) {
            cr.flags &= !af::CLOSED;
        }
    }

    // User data left at 0 is the pending transfer's, so a resolution can
    // be found by the same correlation ids.
    let created = Transfer {
        debit_account_id: p.debit_account_id,
        credit_account_id: p.credit_account_id,
        ledger: p.ledger,
        code: p.code,
        amount,
        timestamp,
        flags: if flags_kept(tx) { t.flags } else { t.flags & !f::LINKED },
        user_data_128: if t.user_data_128 == 0 { p.user_data_128 } else { t.user_data_128 },
        user_data_64: if t.user_data_64 == 0 { p.user_data_64 } else { t.user_data_64 },
        user_data_32: if t.user_data_32 == 0 { p.user_data_32 } else { t.user_data_32 },
        ..*t
    };
    let revision = tx.next_revision();
    store_accounts(tx, &[(dr0, dr), (cr0, cr)])?;
    store_transfer(tx, &created, revision);
    let resolved = if post { PendingStatus::Posted } else { PendingStatus::Voided };
    tx.put(Cf::PendingTransfers, &id_key(p.id), &resolved);
    if let Some(at) = p.expires_at_ns() {
        tx.delete(Cf::PendingExpiry, &super::expiry::key(at, p.id));
    }
    record_entries(tx, &created, &dr, &cr, revision);
    Ok(R::Ok)
}
