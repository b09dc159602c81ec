//! Pending transfers past their timeout release their reservation. Driven
//! by command time, never a node's clock: every ledger command sweeps what
//! is due first, and the leader proposes a sweep when a timeout passes with
//! no ledger traffic (`ExpirePendingTransfers`).

use super::model::{account_flags as af, transfer_flags as f, AccountEntry, PendingStatus};
use super::{account, entry_key, id_key, next_timestamp, store_accounts, transfer, EXPIRE_PER_COMMAND_MAX};
use crate::auth::Read;
use crate::command::set_state_version::EXPIRY_WITHOUT_HISTORY;
use crate::layout::Cf;
use crate::state_machine::Tx;
use crate::DbError;

/// `expires_at_ns ++ id`.
pub fn key(expires_at_ns: u64, id: u128) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires_at_ns.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Expires (at most a bounded number of) pending transfers due at the
/// command's time. Returns how many expired.
pub(crate) fn expire_due(tx: &mut Tx<'_>) -> Result<usize, DbError> {
    let now_ns = tx.clock_ms().saturating_mul(1_000_000);
    let upto = key(now_ns.saturating_add(1), 0);
    if !tx.may_have_below(Cf::PendingExpiry, &upto)? {
        return Ok(0);
    }
    let due = tx.scan_raw(Cf::PendingExpiry, &[], &upto, EXPIRE_PER_COMMAND_MAX)?;
    for (k, _) in &due {
        let id = u128::from_be_bytes(k[8..].try_into().expect("24-byte key"));
        let p = transfer(tx, id)?.expect("an expiring transfer exists").transfer;
        let status: Option<PendingStatus> = tx.get(Cf::PendingTransfers, &id_key(id))?;
        assert_eq!(status, Some(PendingStatus::Pending), "resolved transfers leave the expiry index");
        let dr0 = account(tx, p.debit_account_id)?.expect("a pending transfer's accounts exist");
        let cr0 = account(tx, p.credit_account_id)?.expect("a pending transfer's accounts exist");
        let (mut dr, mut cr) = (dr0, cr0);
        dr.debits_pending = dr.debits_pending.checked_sub(p.amount).expect("a pending amount is reserved");
        cr.credits_pending = cr.credits_pending.checked_sub(p.amount).expect("a pending amount is reserved");
        if p.has(f::CLOSING_DEBIT) {
            dr.flags &= !af::CLOSED;
        }
        if p.has(f::CLOSING_CREDIT) {
            cr.flags &= !af::CLOSED;
        }
        let revision = tx.next_revision();
        let timestamp = next_timestamp(tx)?;
        store_accounts(tx, &[(dr0, dr), (cr0, cr)])?;
        tx.put(Cf::PendingTransfers, &id_key(id), &PendingStatus::Expired);
        tx.delete(Cf::PendingExpiry, k);
        tx.expired.push(id);
        if tx.state_version() >= EXPIRY_WITHOUT_HISTORY {
            continue;
        }
        for (a, debit) in [(&dr, true), (&cr, false)] {
            if a.has(af::HISTORY) {
                let entry = AccountEntry { transfer_id: id, debit, revision, balance: Some(a.balance()) };
                tx.put(Cf::AccountHistory, &entry_key(a.id, timestamp), &entry);
            }
        }
    }
    Ok(due.len())
}
