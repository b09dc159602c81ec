//! The ledger: double-entry accounts and transfers with TigerBeetle's
//! semantics (linked chains, idempotent ids, two-phase transfers, balancing
//! and closing transfers, precise result codes).
//!
//! Every function here runs inside apply, on a [`Tx`]: deterministic, with
//! time taken from the command. Each event gets a unique, strictly
//! increasing timestamp in ns derived from the command's time. Invariants
//! are asserted, not hoped for: per ledger, the sum of all debits equals the
//! sum of all credits (pending and posted) after every event, and no account
//! leaves the bounds its flags set.

mod account;
pub mod cache;
pub(crate) mod chain;
mod expiry;
pub mod model;
pub mod read;
pub mod results;
mod transfer;
mod two_phase;

pub(crate) use account::create_account;
pub(crate) use chain::run_chains;
pub(crate) use expiry::expire_due;
pub(crate) use transfer::create_transfer;

use crate::auth::{Access, Action, Caller, Read};
use crate::command::CommandError;
use crate::layout::Cf;
use crate::state_machine::Tx;
use crate::DbError;
use model::{Account, AccountEntry, StoredTransfer, Transfer};

/// Events in one `create_accounts` or `create_transfers` request: what fits
/// TigerBeetle's 1 MiB message, kept for familiarity.
pub const EVENTS_PER_BATCH_MAX: usize = 8189;
/// Results of one lookup or account query.
pub const QUERY_RESULTS_MAX: usize = 8189;
/// Pending transfers expired per command (the rest wait for the next one;
/// a post or void checks the timeout itself, so late sweeping is harmless).
pub const EXPIRE_PER_COMMAND_MAX: usize = 8189;

/// Why a command stops as a whole (not one event's result).
pub(crate) enum Abort {
    Db(DbError),
    Refused(CommandError),
}

impl From<DbError> for Abort {
    fn from(e: DbError) -> Self {
        Abort::Db(e)
    }
}

/// A ledger command's answer: one result per event, or why it stopped whole.
pub(crate) fn answer<R>(
    results: Result<Vec<R>, Abort>,
    outcome: impl FnOnce(Vec<R>) -> crate::command::Outcome,
) -> crate::command::Applied {
    match results {
        Ok(results) => Ok(Ok(outcome(results))),
        Err(Abort::Db(e)) => Err(e),
        Err(Abort::Refused(e)) => Ok(Err(e)),
    }
}

/// The resource governing a ledger: `ledgers:<number>`.
pub fn ledger_resource(ledger: u32) -> String {
    format!("ledgers:{ledger}")
}

/// Write access to a ledger, checked per event inside apply (a batch may
/// span ledgers, and a post inherits its ledger from the pending transfer).
/// Whether this command keeps ledger events' flags whole (see
/// `LEDGER_FLAGS_KEPT`).
pub(crate) fn flags_kept(tx: &Tx<'_>) -> bool {
    tx.state_version() >= crate::command::set_state_version::LEDGER_FLAGS_KEPT
}

pub(crate) fn require_write(caller: &Caller, ledger: u32) -> Result<(), Abort> {
    caller.require(&Access::new(Action::Write, ledger_resource(ledger))).map_err(Abort::Refused)
}

/// Whether this command keeps what lies on ledgers the caller may not see
/// to itself (see `FOREIGN_LEDGERS_STAY_HIDDEN`).
pub(crate) fn hides_foreign(tx: &Tx<'_>) -> bool {
    tx.state_version() >= crate::command::set_state_version::FOREIGN_LEDGERS_STAY_HIDDEN
}

pub(crate) fn may_write(caller: &Caller, ledger: u32) -> bool {
    caller.allows(&Access::new(Action::Write, ledger_resource(ledger)))
}

/// Read or write: what a caller may learn about a ledger's records.
pub(crate) fn may_see(caller: &Caller, ledger: u32) -> bool {
    may_write(caller, ledger) || caller.allows(&Access::new(Action::Read, ledger_resource(ledger)))
}

pub fn id_key(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

/// `id ++ timestamp`: an account's entries in time order.
pub fn entry_key(account_id: u128, timestamp: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&account_id.to_be_bytes());
    k[16..].copy_from_slice(&timestamp.to_be_bytes());
    k
}

pub(crate) fn account(tx: &Tx<'_>, id: u128) -> Result<Option<Account>, DbError> {
    tx.account(id)
}

/// A created transfer (not an id kept as failed).
pub(crate) fn transfer(tx: &Tx<'_>, id: u128) -> Result<Option<StoredTransfer>, DbError> {
    Ok(transfer_id(tx, id)?.and_then(|s| (!s.is_failed()).then_some(s)))
}

/// Whatever holds a transfer id: a created transfer or a failed id.
pub(crate) fn transfer_id(tx: &Tx<'_>, id: u128) -> Result<Option<StoredTransfer>, DbError> {
    tx.get(Cf::Transfers, &id_key(id))
}

/// Keeps the id of a transfer that failed for a transient reason, after its
/// chain's rollback, so that it stays failed; under the ledger the caller
/// was found allowed to write. A post or void that names no ledger and no
/// pending transfer that exists passed no such check: nothing is kept for
/// it (else anyone could burn any id).
pub(crate) fn keep_failed_id(
    tx: &mut Tx<'_>,
    caller: &Caller,
    t: &Transfer,
    r: results::CreateTransferResult,
) -> Result<(), Abort> {
    if !r.transient() {
        return Ok(());
    }
    let ledger = match (t.ledger, t.pending_id) {
        (0, 0) => 0,
        // A pending transfer on a ledger the caller may not see was "not
        // found": no check passed, so nothing is kept.
        (0, pending) => match transfer(tx, pending)? {
            Some(p) if !hides_foreign(tx) || may_write(caller, p.transfer.ledger) => p.transfer.ledger,
            _ => 0,
        },
        (ledger, _) => ledger,
    };
    if ledger != 0 {
        let code = u16::try_from(r.code()).expect("result codes fit in u16");
        tx.put(Cf::Transfers, &id_key(t.id), &StoredTransfer::failed(t.id, code, ledger));
    }
    Ok(())
}

/// The next event timestamp: the command's time in ns, or one past the
/// last handed out, whichever is later. Unique and strictly increasing.
pub(crate) fn next_timestamp(tx: &mut Tx<'_>) -> Result<u64, DbError> {
    let last = tx.ledger_timestamp_ns()?;
    let now_ns = tx.clock_ms().saturating_mul(1_000_000);
    let ts = now_ns.max(last + 1);
    tx.set_ledger_timestamp_ns(ts);
    Ok(ts)
}

/// Writes changed accounts of one ledger and folds their balance changes
/// into the ledger's totals, then asserts double entry still holds.
pub(crate) fn store_accounts(tx: &mut Tx<'_>, changes: &[(Account, Account)]) -> Result<(), DbError> {
    let Some((first, _)) = changes.first() else { return Ok(()) };
    let ledger = first.ledger;
    let mut t = tx.ledger_totals(ledger)?;
    for (before, after) in changes {
        assert_eq!(before.id, after.id);
        assert_eq!(before.ledger, ledger, "one ledger per change set");
        assert_eq!(after.ledger, ledger);
        assert!(after.within_limits(), "account {}: balance past its limit flags: {after:?}", after.id);
        // Wrapping: the sums may exceed u128 even when no account does;
        // equality modulo 2^128 is still the invariant.
        t.debits_pending =
            t.debits_pending.wrapping_sub(before.debits_pending).wrapping_add(after.debits_pending);
        t.debits_posted =
            t.debits_posted.wrapping_sub(before.debits_posted).wrapping_add(after.debits_posted);
        t.credits_pending =
            t.credits_pending.wrapping_sub(before.credits_pending).wrapping_add(after.credits_pending);
        t.credits_posted =
            t.credits_posted.wrapping_sub(before.credits_posted).wrapping_add(after.credits_posted);
        tx.put(Cf::Accounts, &id_key(after.id), after);
    }
    assert!(t.balanced(), "ledger {ledger}: debits != credits after an event: {t:?}");
    tx.set_ledger_totals(ledger, t);
    Ok(())
}

/// Indexes a transfer under both its accounts (and their history, for
/// accounts that keep one).
pub(crate) fn record_entries(tx: &mut Tx<'_>, t: &Transfer, dr: &Account, cr: &Account, revision: u64) {
    for (account, debit) in [(dr, true), (cr, false)] {
        let key = entry_key(account.id, t.timestamp);
        let entry = AccountEntry { transfer_id: t.id, debit, revision, balance: None };
        if account.has(model::account_flags::HISTORY) {
            tx.put(
                Cf::AccountHistory,
                &key,
                &AccountEntry { balance: Some(account.balance()), ..entry.clone() },
            );
        }
        tx.put(Cf::AccountTransfers, &key, &entry);
    }
}
