//! The ledger inside apply: TigerBeetle's semantics, and what must never
//! happen (a half-applied chain, a transfer applied twice, an account
//! breaking its flags, debits != credits).

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use strongbox_store::auth::{Action, Effect, Rule};
use strongbox_store::command::{
    CreateAccounts, CreateTransfers, CreateUser, ExpirePendingTransfers, Outcome, PutRole,
    STATE_VERSION_SUPPORTED,
};
use strongbox_store::ledger::model::{
    account_flags as af, transfer_flags as tf, Account, AccountFilter, PendingStatus, Transfer,
};
use strongbox_store::ledger::read;
use strongbox_store::ledger::results::{CreateAccountResult as AR, CreateTransferResult as TR};
use strongbox_store::{Cf, Command, ErrorCode, Op, StateMachine};

const LEDGER: u32 = 700;

fn acct(id: u128, flags: u16) -> Account {
    Account { id, ledger: LEDGER, code: 10, flags, ..Default::default() }
}

fn xfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: LEDGER,
        code: 1,
        ..Default::default()
    }
}

fn accounts_cmd(id: &str, t: u64, accounts: Vec<Account>) -> Command {
    as_admin(id, t, Op::CreateAccounts(CreateAccounts { accounts }))
}

fn transfers_cmd(id: &str, t: u64, transfers: Vec<Transfer>) -> Command {
    as_admin(id, t, Op::CreateTransfers(CreateTransfers { transfers }))
}

fn create_accounts(sm: &StateMachine, id: &str, accounts: Vec<Account>) -> Vec<AR> {
    match apply_one(sm, &accounts_cmd(id, 1, accounts)).result {
        Ok(Outcome::AccountsCreated { results }) => results,
        other => panic!("unexpected {other:?}"),
    }
}

fn create_transfers_at(sm: &StateMachine, id: &str, t: u64, transfers: Vec<Transfer>) -> Vec<TR> {
    match apply_one(sm, &transfers_cmd(id, t, transfers)).result {
        Ok(Outcome::TransfersCreated { results }) => results,
        other => panic!("unexpected {other:?}"),
    }
}

fn create_transfers(sm: &StateMachine, id: &str, transfers: Vec<Transfer>) -> Vec<TR> {
    create_transfers_at(sm, id, 1, transfers)
}

fn account(sm: &StateMachine, id: u128) -> Account {
    read::accounts(sm.db(), &[id]).unwrap().pop().expect("account exists")
}

/// (debits_pending, debits_posted, credits_pending, credits_posted)
fn bal(sm: &StateMachine, id: u128) -> (u128, u128, u128, u128) {
    let a = account(sm, id);
    (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
}

fn with_accounts(sm: &StateMachine) {
    let r =
        create_accounts(sm, "a", vec![acct(1, 0), acct(2, 0), acct(3, af::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    assert_eq!(r, vec![AR::Ok; 3]);
}

#[test]
fn a_transfer_moves_value_and_keeps_debits_equal_to_credits() {
    let (_d, sm) = open();
    with_accounts(&sm);
    assert_eq!(create_transfers(&sm, "t", vec![xfer(10, 1, 2, 500)]), vec![TR::Ok]);
    assert_eq!(bal(&sm, 1), (0, 500, 0, 0));
    assert_eq!(bal(&sm, 2), (0, 0, 0, 500));
    let totals = read::ledger_totals(sm.db(), LEDGER).unwrap();
    assert!(totals.balanced() && totals.debits_posted == 500, "{totals:?}");
    let t = read::transfers(sm.db(), &[10]).unwrap().pop().unwrap();
    assert!(t.transfer.timestamp > 0 && t.revision == sm.revision().unwrap());
}

#[test]
fn a_failing_link_undoes_the_whole_chain_and_only_the_chain() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let linked = |mut t: Transfer| {
        t.flags |= tf::LINKED;
        t
    };
    let batch = vec![
        xfer(10, 1, 2, 5),         // alone: ok
        linked(xfer(11, 1, 2, 7)), // chain start
        linked(xfer(12, 2, 1, 1)), //
        xfer(13, 1, 99, 1),        // chain end: account 99 does not exist
        xfer(14, 2, 1, 2),         // alone: ok
    ];
    let r = create_transfers(&sm, "t", batch);
    assert_eq!(
        r,
        vec![TR::Ok, TR::LinkedEventFailed, TR::LinkedEventFailed, TR::CreditAccountNotFound, TR::Ok]
    );
    assert!(read::transfers(sm.db(), &[11, 12, 13]).unwrap().is_empty(), "nothing of the chain is stored");
    assert_eq!(bal(&sm, 1), (0, 5, 0, 2));
    // The ids of a failed chain stay free.
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(11, 1, 2, 7)]), vec![TR::Ok]);

    let open_chain = vec![xfer(20, 1, 2, 1), linked(xfer(21, 1, 2, 1)), linked(xfer(22, 1, 2, 1))];
    let r = create_transfers(&sm, "t3", open_chain);
    assert_eq!(r, vec![TR::Ok, TR::LinkedEventFailed, TR::LinkedEventChainOpen]);
    assert!(read::transfers(sm.db(), &[21, 22]).unwrap().is_empty());
}

#[test]
fn an_id_is_applied_once_and_a_different_body_is_named() {
    let (_d, sm) = open();
    with_accounts(&sm);
    assert_eq!(create_transfers(&sm, "t1", vec![xfer(10, 1, 2, 5)]), vec![TR::Ok]);
    // A new request id, so this is the ledger's own idempotency, not the request table's.
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(10, 1, 2, 5)]), vec![TR::Exists]);
    assert_eq!(create_transfers(&sm, "t3", vec![xfer(10, 1, 2, 6)]), vec![TR::ExistsWithDifferentAmount]);
    assert_eq!(
        create_transfers(&sm, "t4", vec![xfer(10, 2, 1, 5)]),
        vec![TR::ExistsWithDifferentDebitAccountId]
    );
    let mut other = xfer(10, 1, 2, 5);
    other.user_data_64 = 9;
    assert_eq!(create_transfers(&sm, "t5", vec![other]), vec![TR::ExistsWithDifferentUserData64]);
    assert_eq!(bal(&sm, 1), (0, 5, 0, 0), "applied exactly once");

    let mut changed = acct(1, 0);
    changed.code = 11;
    let r = create_accounts(&sm, "a2", vec![acct(1, 0), changed, acct(2, af::HISTORY)]);
    assert_eq!(r, vec![AR::Exists, AR::ExistsWithDifferentCode, AR::ExistsWithDifferentFlags]);
}

#[test]
fn invalid_events_get_precise_codes_and_change_nothing() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let rev = sm.revision().unwrap();
    let mut ts = xfer(30, 1, 2, 1);
    ts.timestamp = 5;
    let mut two_phases = xfer(31, 1, 2, 1);
    two_phases.flags = tf::PENDING | tf::VOID_PENDING_TRANSFER;
    let mut timeout = xfer(32, 1, 2, 1);
    timeout.timeout = 5;
    let mut other_ledger = xfer(33, 1, 2, 1);
    other_ledger.ledger = LEDGER + 1;
    let r = create_transfers(
        &sm,
        "t",
        vec![
            ts,
            xfer(0, 1, 2, 1),
            xfer(u128::MAX, 1, 2, 1),
            two_phases,
            xfer(34, 1, 1, 1),
            xfer(35, 0, 2, 1),
            timeout,
            other_ledger,
            xfer(36, 3, 1, 1),
        ],
    );
    assert_eq!(
        r,
        vec![
            TR::TimestampMustBeZero,
            TR::IdMustNotBeZero,
            TR::IdMustNotBeIntMax,
            TR::FlagsAreMutuallyExclusive,
            TR::AccountsMustBeDifferent,
            TR::DebitAccountIdMustNotBeZero,
            TR::TimeoutReservedForPendingTransfer,
            TR::TransferMustHaveTheSameLedgerAsAccounts,
            TR::ExceedsCredits,
        ]
    );
    assert_eq!(sm.revision().unwrap(), rev, "a batch of failures changes no state");
    let r = create_accounts(
        &sm,
        "a-invalid",
        vec![
            acct(40, af::DEBITS_MUST_NOT_EXCEED_CREDITS | af::CREDITS_MUST_NOT_EXCEED_DEBITS),
            Account { ledger: 0, ..acct(41, 0) },
            Account { credits_posted: 1, ..acct(42, 0) },
        ],
    );
    assert_eq!(r, vec![AR::FlagsAreMutuallyExclusive, AR::LedgerMustNotBeZero, AR::CreditsPostedMustBeZero]);
}

#[test]
fn limits_on_balances_hold_and_balancing_transfers_take_what_is_allowed() {
    let (_d, sm) = open();
    with_accounts(&sm);
    // Account 3 may not spend more than it received.
    assert_eq!(create_transfers(&sm, "t1", vec![xfer(10, 2, 3, 100)]), vec![TR::Ok]);
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(11, 3, 1, 101)]), vec![TR::ExceedsCredits]);
    let mut bal_debit = xfer(12, 3, 1, 1_000);
    bal_debit.flags = tf::BALANCING_DEBIT;
    assert_eq!(create_transfers(&sm, "t3", vec![bal_debit]), vec![TR::Ok]);
    assert_eq!(read::transfers(sm.db(), &[12]).unwrap()[0].transfer.amount, 100);
    assert_eq!(bal(&sm, 3), (0, 100, 0, 100));
    // An identical retry of the balancing transfer is `exists`, not a second move.
    assert_eq!(create_transfers(&sm, "t4", vec![bal_debit]), vec![TR::Exists]);
    // Overflow is refused, never wrapped.
    assert_eq!(create_transfers(&sm, "t5", vec![xfer(13, 1, 2, u128::MAX - 10)]), vec![TR::Ok]);
    assert_eq!(create_transfers(&sm, "t6", vec![xfer(14, 1, 2, 1_000)]), vec![TR::OverflowsDebitsPosted]);
}

#[test]
fn two_phase_transfers_reserve_post_partially_void_and_expire_by_command_time() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let pending =
        |id, amount, timeout_s| Transfer { flags: tf::PENDING, timeout: timeout_s, ..xfer(id, 1, 2, amount) };
    let resolve = |id, pending_id, flags, amount| Transfer {
        id,
        pending_id,
        flags,
        amount,
        code: 0,
        ledger: 0,
        ..Default::default()
    };
    let t0 = 1_000_000; // ms
    let r =
        create_transfers_at(&sm, "p", t0, vec![pending(10, 100, 0), pending(11, 50, 0), pending(12, 30, 10)]);
    assert_eq!(r, vec![TR::Ok; 3]);
    assert_eq!(bal(&sm, 1), (180, 0, 0, 0));
    assert_eq!(bal(&sm, 2), (0, 0, 180, 0));

    let r = create_transfers_at(
        &sm,
        "r",
        t0 + 1,
        vec![
            resolve(20, 10, tf::POST_PENDING_TRANSFER, 60), // partial post
            resolve(21, 10, tf::POST_PENDING_TRANSFER, u128::MAX), // already posted
            resolve(22, 11, tf::POST_PENDING_TRANSFER, 51), // more than reserved
            resolve(23, 11, tf::VOID_PENDING_TRANSFER, 0),  // void
            resolve(24, 11, tf::VOID_PENDING_TRANSFER, 0),  // already voided
            resolve(25, 99, tf::VOID_PENDING_TRANSFER, 0),  // unknown
            resolve(26, 20, tf::VOID_PENDING_TRANSFER, 0),  // not a pending transfer
        ],
    );
    assert_eq!(
        r,
        vec![
            TR::Ok,
            TR::PendingTransferAlreadyPosted,
            TR::ExceedsPendingTransferAmount,
            TR::Ok,
            TR::PendingTransferAlreadyVoided,
            TR::PendingTransferNotFound,
            TR::PendingTransferNotPending,
        ]
    );
    // 100 reserved, 60 posted, 40 released; 50 released; 30 still reserved.
    assert_eq!(bal(&sm, 1), (30, 60, 0, 0));
    let post = read::transfers(sm.db(), &[20]).unwrap().pop().unwrap().transfer;
    assert_eq!((post.debit_account_id, post.credit_account_id, post.ledger, post.amount), (1, 2, LEDGER, 60));

    // Ten seconds of command time later, pending 12 can no longer be posted,
    // and its reservation is released by the sweep, the same on every node.
    let r =
        create_transfers_at(&sm, "late", t0 + 10_001, vec![resolve(27, 12, tf::POST_PENDING_TRANSFER, 30)]);
    assert_eq!(r, vec![TR::PendingTransferExpired]);
    assert_eq!(read::pending_status(sm.db(), 12).unwrap(), Some(PendingStatus::Expired));
    assert_eq!(bal(&sm, 1), (0, 60, 0, 0));
    assert!(read::ledger_totals(sm.db(), LEDGER).unwrap().balanced());
}

#[test]
fn the_pulse_expires_pending_transfers_without_ledger_traffic() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let p = Transfer { flags: tf::PENDING, timeout: 1, ..xfer(10, 1, 2, 9) };
    assert_eq!(create_transfers_at(&sm, "p", 5_000, vec![p]), vec![TR::Ok]);
    assert!(read::next_expiry_ns(sm.db()).unwrap().is_some());
    let early =
        apply_one(&sm, &as_node("pulse1", 5_500, Op::ExpirePendingTransfers(ExpirePendingTransfers {})));
    assert_eq!(early.result, Ok(Outcome::PendingExpired { expired: 0 }));
    assert_eq!(bal(&sm, 1), (9, 0, 0, 0));
    let due =
        apply_one(&sm, &as_node("pulse2", 6_001, Op::ExpirePendingTransfers(ExpirePendingTransfers {})));
    assert_eq!(due.result, Ok(Outcome::PendingExpired { expired: 1 }));
    assert_eq!(bal(&sm, 1), (0, 0, 0, 0));
    assert_eq!(read::next_expiry_ns(sm.db()).unwrap(), None);
    // Clients cannot send the pulse.
    let forged =
        apply_one(&sm, &as_admin("pulse3", 7_000, Op::ExpirePendingTransfers(ExpirePendingTransfers {})));
    assert_eq!(forged.result.unwrap_err().code, ErrorCode::PermissionDenied);
}

#[test]
fn a_closing_transfer_closes_and_voiding_it_reopens() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let closing = Transfer { flags: tf::PENDING | tf::CLOSING_DEBIT, ..xfer(10, 1, 2, 0) };
    assert_eq!(create_transfers(&sm, "c", vec![closing]), vec![TR::Ok]);
    assert!(account(&sm, 1).has(af::CLOSED));
    assert_eq!(create_transfers(&sm, "x", vec![xfer(11, 1, 2, 1)]), vec![TR::DebitAccountAlreadyClosed]);
    assert_eq!(create_transfers(&sm, "y", vec![xfer(12, 2, 1, 1)]), vec![TR::CreditAccountAlreadyClosed]);
    let not_pending = Transfer { flags: tf::CLOSING_CREDIT, ..xfer(13, 1, 2, 0) };
    assert_eq!(create_transfers(&sm, "z", vec![not_pending]), vec![TR::ClosingTransferMustBePending]);
    // Nothing moves in a closed account, its own closing transfer included:
    // that can only stay pending, be voided or expire.
    let post = Transfer { id: 15, pending_id: 10, flags: tf::POST_PENDING_TRANSFER, ..Default::default() };
    assert_eq!(create_transfers(&sm, "p", vec![post]), vec![TR::DebitAccountAlreadyClosed]);
    let void = Transfer { id: 14, pending_id: 10, flags: tf::VOID_PENDING_TRANSFER, ..Default::default() };
    assert_eq!(create_transfers(&sm, "v", vec![void]), vec![TR::Ok]);
    assert!(!account(&sm, 1).has(af::CLOSED));
    // Transfer 11 was refused while the account was closed: its id stays
    // failed; the same transfer under a new id goes through.
    assert_eq!(create_transfers(&sm, "w", vec![xfer(11, 1, 2, 1)]), vec![TR::IdAlreadyFailed]);
    assert_eq!(create_transfers(&sm, "w2", vec![xfer(16, 1, 2, 1)]), vec![TR::Ok]);
}

/// TigerBeetle's transient failures: a transfer refused for a reason that
/// could pass later (a limit, an account or pending transfer not there yet,
/// a closed account) keeps its id failed, so a client that reported the
/// refusal is never contradicted by a late retry that succeeds.
#[test]
fn an_id_that_failed_for_a_transient_reason_never_succeeds_later() {
    let (_d, sm) = open();
    with_accounts(&sm);
    // Account 3 may not owe more than it holds: nothing yet.
    assert_eq!(create_transfers(&sm, "t1", vec![xfer(30, 3, 1, 10)]), vec![TR::ExceedsCredits]);
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(31, 1, 3, 50)]), vec![TR::Ok]);
    // Now it would pass, but the id has failed: a retry (a new request id,
    // so the ledger's own check, not the request table) is refused.
    assert_eq!(create_transfers(&sm, "t3", vec![xfer(30, 3, 1, 10)]), vec![TR::IdAlreadyFailed]);
    assert_eq!(bal(&sm, 3), (0, 0, 0, 50), "the failed id moved nothing");
    assert!(read::transfers(sm.db(), &[30]).unwrap().is_empty(), "a failed id is not a transfer");
    // Within one batch too, and a post naming a failed id finds no transfer.
    let resolve = Transfer { id: 33, pending_id: 30, flags: tf::VOID_PENDING_TRANSFER, ..Default::default() };
    let r = create_transfers(&sm, "t4", vec![xfer(32, 3, 1, 1_000), xfer(32, 3, 1, 1), resolve]);
    assert_eq!(r, vec![TR::ExceedsCredits, TR::IdAlreadyFailed, TR::PendingTransferNotFound]);
    // That void named no ledger and no pending transfer that exists, so no
    // write permission was checked for it: its id is not kept (else any
    // caller could burn anyone's ids).
    assert_eq!(create_transfers(&sm, "t4b", vec![xfer(33, 1, 2, 1)]), vec![TR::Ok]);
    // A failure that no later state can change leaves the id free.
    assert_eq!(create_transfers(&sm, "t5", vec![xfer(34, 1, 1, 5)]), vec![TR::AccountsMustBeDifferent]);
    assert_eq!(create_transfers(&sm, "t6", vec![xfer(34, 1, 2, 5)]), vec![TR::Ok]);
    // In a chain, the failing event's id is kept; the others' stay free.
    let linked = |mut t: Transfer| {
        t.flags |= tf::LINKED;
        t
    };
    let r = create_transfers(&sm, "t7", vec![linked(xfer(40, 1, 2, 1)), xfer(41, 3, 1, 10_000)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::ExceedsCredits]);
    let r = create_transfers(&sm, "t8", vec![xfer(40, 1, 2, 1), xfer(41, 3, 1, 1)]);
    assert_eq!(r, vec![TR::Ok, TR::IdAlreadyFailed]);
    // A chain left open is tried first: a member that fails says why.
    let r = create_transfers(&sm, "t9", vec![linked(xfer(50, 1, 99, 1)), linked(xfer(51, 1, 2, 1))]);
    assert_eq!(r, vec![TR::CreditAccountNotFound, TR::LinkedEventChainOpen]);
    let r = create_transfers(&sm, "t10", vec![xfer(50, 1, 2, 1), xfer(51, 1, 2, 1)]);
    assert_eq!(r, vec![TR::IdAlreadyFailed, TR::Ok]);
    assert!(read::ledger_totals(sm.db(), LEDGER).unwrap().balanced());
}

#[test]
fn posts_and_voids_follow_tigerbeetle_on_amounts_user_data_and_retries() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let pending = Transfer { flags: tf::PENDING, user_data_128: 7, user_data_32: 3, ..xfer(70, 1, 2, 100) };
    assert_eq!(create_transfers(&sm, "p", vec![pending]), vec![TR::Ok]);
    let resolve = |id, flags, amount| Transfer { id, pending_id: 70, flags, amount, ..Default::default() };
    let void = tf::VOID_PENDING_TRANSFER;
    let post = tf::POST_PENDING_TRANSFER;
    // A void releases exactly the pending amount (0: that amount).
    let r = create_transfers(
        &sm,
        "v",
        vec![resolve(71, void, 101), resolve(72, void, u128::MAX), resolve(73, void, 99)],
    );
    assert_eq!(
        r,
        vec![
            TR::ExceedsPendingTransferAmount,
            TR::ExceedsPendingTransferAmount,
            TR::PendingTransferHasDifferentAmount
        ]
    );
    // A partial post inherits the user data it leaves at 0.
    let mut partial = resolve(74, post, 60);
    partial.user_data_64 = 9;
    assert_eq!(create_transfers(&sm, "p1", vec![partial]), vec![TR::Ok]);
    let stored = read::transfers(sm.db(), &[74]).unwrap().pop().unwrap().transfer;
    assert_eq!((stored.user_data_128, stored.user_data_64, stored.user_data_32), (7, 9, 3));
    // Retries: the same post, and "post everything", which it was not.
    assert_eq!(create_transfers(&sm, "p2", vec![partial]), vec![TR::Exists]);
    let mut everything = partial;
    everything.amount = u128::MAX;
    assert_eq!(create_transfers(&sm, "p3", vec![everything]), vec![TR::ExistsWithDifferentAmount]);
    let mut other_data = partial;
    other_data.user_data_128 = 8;
    assert_eq!(create_transfers(&sm, "p4", vec![other_data]), vec![TR::ExistsWithDifferentUserData128]);
    assert_eq!(bal(&sm, 1), (0, 60, 0, 0));
}

/// TigerBeetle keeps an event's flags as sent, `linked` included, and
/// compares all of them when an id comes again (its own test cases).
#[test]
fn flags_are_kept_whole_and_compared_whole_on_a_retry() {
    let (_d, sm) = open();
    let linked = |mut a: Account| {
        a.flags |= af::LINKED;
        a
    };
    assert_eq!(create_accounts(&sm, "a1", vec![acct(1, 0)]), vec![AR::Ok]);
    let r = create_accounts(&sm, "a2", vec![linked(acct(2, 0)), linked(acct(1, 0)), linked(acct(3, 0))]);
    assert_eq!(r, vec![AR::LinkedEventFailed, AR::ExistsWithDifferentFlags, AR::LinkedEventChainOpen]);
    let mut other_code = linked(acct(1, 0));
    other_code.code = 11;
    let r = create_accounts(&sm, "a3", vec![other_code, acct(2, 0)]);
    assert_eq!(r, vec![AR::ExistsWithDifferentFlags, AR::LinkedEventFailed]);
    assert_eq!(create_accounts(&sm, "a4", vec![linked(acct(2, 0)), acct(3, 0)]), vec![AR::Ok, AR::Ok]);
    assert!(account(&sm, 2).has(af::LINKED), "stored as sent");
    assert!(!account(&sm, 3).has(af::LINKED));
    // A retry of the chain as sent: `exists` (which fails a chain too).
    assert_eq!(
        create_accounts(&sm, "a5", vec![linked(acct(2, 0)), acct(3, 0)]),
        vec![AR::Exists, AR::LinkedEventFailed]
    );

    let t1 = Transfer { flags: tf::LINKED, ..xfer(10, 2, 3, 5) };
    assert_eq!(create_transfers(&sm, "t1", vec![t1, xfer(11, 2, 3, 1)]), vec![TR::Ok, TR::Ok]);
    let stored = read::transfers(sm.db(), &[10]).unwrap().pop().unwrap().transfer;
    assert_eq!(stored.flags, tf::LINKED);
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(10, 2, 3, 5)]), vec![TR::ExistsWithDifferentFlags]);
    assert_eq!(
        create_transfers(&sm, "t3", vec![t1, xfer(11, 2, 3, 1)]),
        vec![TR::Exists, TR::LinkedEventFailed]
    );

    // `closed`, set since by a closing transfer, is compared too.
    let closing = Transfer { flags: tf::PENDING | tf::CLOSING_DEBIT, ..xfer(12, 3, 2, 1) };
    assert_eq!(create_transfers(&sm, "t4", vec![closing]), vec![TR::Ok]);
    assert_eq!(create_accounts(&sm, "a6", vec![acct(3, 0)]), vec![AR::ExistsWithDifferentFlags]);
    assert_eq!(create_accounts(&sm, "a7", vec![acct(3, af::CLOSED)]), vec![AR::Exists]);
    assert_eq!(bal(&sm, 2), (0, 6, 1, 0));
}

/// A void means the whole pending amount by 0 only: retried with
/// `AMOUNT_MAX` it is a different amount (a fresh one exceeds it).
#[test]
fn a_void_retried_with_the_maximum_amount_is_a_different_amount() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let pending = Transfer { flags: tf::PENDING, ..xfer(70, 1, 2, 10) };
    assert_eq!(create_transfers(&sm, "p", vec![pending]), vec![TR::Ok]);
    let void = |amount| Transfer {
        id: 71,
        pending_id: 70,
        flags: tf::VOID_PENDING_TRANSFER,
        amount,
        ..Default::default()
    };
    assert_eq!(create_transfers(&sm, "v1", vec![void(0)]), vec![TR::Ok]);
    assert_eq!(create_transfers(&sm, "v2", vec![void(0)]), vec![TR::Exists]);
    assert_eq!(create_transfers(&sm, "v3", vec![void(10)]), vec![TR::Exists]);
    assert_eq!(create_transfers(&sm, "v4", vec![void(u128::MAX)]), vec![TR::ExistsWithDifferentAmount]);
}

/// A cluster made by an older build (state version 1) keeps the rules it
/// had until an admin moves it on: every node answers the same log entry
/// the same way, whichever build it runs.
#[test]
fn a_state_at_version_one_keeps_its_old_flag_rules() {
    let (_d, sm) = open_at_version(1);
    let linked = Account { flags: af::LINKED, ..acct(2, 0) };
    assert_eq!(create_accounts(&sm, "a1", vec![acct(1, 0), linked, acct(3, 0)]), vec![AR::Ok; 3]);
    assert!(!account(&sm, 2).has(af::LINKED), "version 1 dropped `linked`");
    assert_eq!(create_accounts(&sm, "a2", vec![acct(2, 0)]), vec![AR::Exists]);
    let pending = Transfer { flags: tf::PENDING, ..xfer(70, 1, 2, 10) };
    assert_eq!(create_transfers(&sm, "p", vec![pending]), vec![TR::Ok]);
    let void = Transfer { id: 71, pending_id: 70, flags: tf::VOID_PENDING_TRANSFER, ..Default::default() };
    assert_eq!(create_transfers(&sm, "v1", vec![void]), vec![TR::Ok]);
    let max = Transfer { amount: u128::MAX, ..void };
    assert_eq!(create_transfers(&sm, "v2", vec![max]), vec![TR::Exists]);

    let up = Op::SetStateVersion(strongbox_store::command::SetStateVersion { version: 2 });
    assert!(apply_one(&sm, &as_admin("up", 1, up)).result.is_ok());
    assert_eq!(create_transfers(&sm, "v3", vec![max]), vec![TR::ExistsWithDifferentAmount]);
    let linked4 = Account { flags: af::LINKED, ..acct(4, 0) };
    assert_eq!(create_accounts(&sm, "a3", vec![linked4, acct(5, 0)]), vec![AR::Ok, AR::Ok]);
    assert!(account(&sm, 4).has(af::LINKED), "version 2 keeps it");
}

#[test]
fn a_pending_amount_must_fit_the_posted_balance_it_may_be_posted_to() {
    let (_d, sm) = open();
    with_accounts(&sm);
    assert_eq!(create_transfers(&sm, "big", vec![xfer(80, 1, 2, u128::MAX - 5)]), vec![TR::Ok]);
    let pending = Transfer { flags: tf::PENDING, ..xfer(81, 1, 2, 10) };
    assert_eq!(create_transfers(&sm, "p", vec![pending]), vec![TR::OverflowsDebitsPosted]);
    assert_eq!(bal(&sm, 1), (0, u128::MAX - 5, 0, 0));
}

#[test]
fn ledger_permissions_are_per_ledger_and_refuse_the_whole_batch() {
    for version in [STATE_VERSION_SUPPORTED, 8] {
        let (_d, sm) = open_at_version(version);
        let bob = with_teller(&sm, &[(Action::Write, LEDGER)]);
        let ok = bob_transfers(&sm, bob, "b1", vec![xfer(10, 1, 2, 1)]);
        assert_eq!(ok, Ok(vec![TR::Ok]));
        // A batch that names a ledger bob may not write is refused whole.
        let mixed = vec![xfer(11, 1, 2, 1), Transfer { ledger: 800, ..xfer(12, 50, 51, 1) }];
        assert_eq!(bob_transfers(&sm, bob, "b2", mixed).unwrap_err(), ErrorCode::PermissionDenied);
        assert!(
            read::transfers(sm.db(), &[11, 12]).unwrap().is_empty(),
            "nothing of a refused batch applies"
        );
    }
}

/// A user who may write one ledger learns nothing of another from a
/// ledger command but that an id is taken (state version 9 on): before, an
/// id taken there refused the whole batch naming that ledger (so a writer
/// on one ledger could block another's batches by taking its ids), and an
/// account there answered "must have the same ledger" (so it existed).
#[test]
fn other_ledgers_stay_hidden_from_a_writer_on_one() {
    use strongbox_store::command::set_state_version::FOREIGN_LEDGERS_STAY_HIDDEN as HIDDEN;
    use strongbox_store::ledger::model::AMOUNT_MAX;
    for version in [HIDDEN, HIDDEN - 1] {
        let (_d, sm) = open_at_version(version);
        let bob = with_teller(&sm, &[(Action::Write, LEDGER)]);
        let pending = Transfer { ledger: 800, flags: tf::PENDING, ..xfer(98, 50, 51, 1) };
        let foreign = vec![Transfer { ledger: 800, ..xfer(99, 50, 51, 1) }, pending];
        assert_eq!(create_transfers(&sm, "admin-99", foreign), vec![TR::Ok; 2]);

        // A transfer id taken on ledger 800, next to a good transfer.
        let batch = vec![xfer(20, 1, 2, 1), xfer(99, 1, 2, 1)];
        let r = bob_transfers(&sm, bob, "b3", batch);
        // An account on ledger 800, debit or credit.
        let r2 = bob_transfers(&sm, bob, "b4", vec![xfer(21, 50, 2, 1), xfer(22, 1, 51, 1)]);
        // A post of ledger 800's pending transfer, naming no ledger.
        let post = Transfer {
            id: 23,
            pending_id: 98,
            amount: AMOUNT_MAX,
            flags: tf::POST_PENDING_TRANSFER,
            ..Default::default()
        };
        let r3 = bob_transfers(&sm, bob, "b5", vec![post]);
        // An account id taken on ledger 800.
        let accounts = Op::CreateAccounts(CreateAccounts { accounts: vec![acct(60, 0), acct(50, 0)] });
        let r4 = apply_one(&sm, &as_token(bob, "b6", 2, accounts)).result;
        assert_eq!(bal(&sm, 50), (1, 1, 0, 0), "ledger 800 untouched");
        if version >= HIDDEN {
            assert_eq!(r, Ok(vec![TR::Ok, TR::ExistsWithDifferentLedger]));
            assert_eq!(r2, Ok(vec![TR::DebitAccountNotFound, TR::CreditAccountNotFound]));
            assert_eq!(r3, Ok(vec![TR::PendingTransferNotFound]));
            let results = vec![AR::Ok, AR::ExistsWithDifferentLedger];
            assert_eq!(r4, Ok(Outcome::AccountsCreated { results }));
            // Its own transfer applied; no id kept for the post it could not see.
            assert_eq!(read::transfers(sm.db(), &[20]).unwrap().len(), 1);
            assert!(read::transfers(sm.db(), &[23]).unwrap().is_empty());
            let again = create_transfers(&sm, "admin-23", vec![Transfer { id: 23, ..post }]);
            assert_eq!(again, vec![TR::Ok], "the id of a post bob could not see stays free");
        } else {
            assert_eq!(r.unwrap_err(), ErrorCode::PermissionDenied);
            let named = vec![TR::AccountsMustHaveTheSameLedger, TR::AccountsMustHaveTheSameLedger];
            assert_eq!(r2, Ok(named));
            assert_eq!(r3.unwrap_err(), ErrorCode::PermissionDenied);
            assert_eq!(r4.unwrap_err().code, ErrorCode::PermissionDenied);
        }
    }

    // A caller who may read ledger 800 learns what it could look up anyway.
    let (_d, sm) = open();
    let bob = with_teller(&sm, &[(Action::Write, LEDGER), (Action::Read, 800)]);
    let r = bob_transfers(&sm, bob, "b7", vec![xfer(21, 50, 2, 1)]);
    assert_eq!(r, Ok(vec![TR::AccountsMustHaveTheSameLedger]));
}

/// Accounts 1-3 on `LEDGER`, 50-51 on ledger 800, and bob with a role
/// holding `rights`; bob's token.
fn with_teller(sm: &StateMachine, rights: &[(Action, u32)]) -> [u8; 32] {
    with_accounts(sm);
    let other = vec![Account { ledger: 800, ..acct(50, 0) }, Account { ledger: 800, ..acct(51, 0) }];
    assert_eq!(create_accounts(sm, "other", other), vec![AR::Ok; 2]);
    let rules = rights
        .iter()
        .map(|(action, ledger)| Rule {
            effect: Effect::Allow,
            action: *action,
            resource: format!("ledgers:{ledger}"),
        })
        .collect();
    let role = PutRole { name: "teller".into(), rules };
    assert!(apply_one(sm, &as_admin("role", 1, Op::PutRole(role))).result.is_ok());
    let bob =
        CreateUser { username: "bob".into(), password_phc: "$bob".into(), roles: vec!["teller".into()] };
    assert!(apply_one(sm, &as_admin("bob", 1, Op::CreateUser(bob))).result.is_ok());
    const BOB: [u8; 32] = [2; 32];
    assert!(apply_one(sm, &login("bob", "$bob", BOB, 1, FAR_MS)).result.is_ok());
    BOB
}

fn bob_transfers(
    sm: &StateMachine,
    bob: [u8; 32],
    id: &str,
    transfers: Vec<Transfer>,
) -> Result<Vec<TR>, ErrorCode> {
    match apply_one(sm, &as_token(bob, id, 2, Op::CreateTransfers(CreateTransfers { transfers }))).result {
        Ok(Outcome::TransfersCreated { results }) => Ok(results),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.code),
    }
}

#[test]
fn batches_are_bounded() {
    let (_d, sm) = open();
    let too_many = vec![xfer(1, 1, 2, 1); strongbox_store::ledger::EVENTS_PER_BATCH_MAX + 1];
    let r = apply_one(&sm, &transfers_cmd("big", 1, too_many));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::ResourceExhausted);
    let r = apply_one(&sm, &transfers_cmd("empty", 1, vec![]));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::InvalidArgument);
}

/// TigerBeetle: balances released by a timeout do not change the history;
/// every row is a transfer's, at that transfer's timestamp. Below state
/// version 7 an expiry added a row of its own, and still does there.
#[test]
fn an_expiry_adds_no_balance_history_row_from_state_version_7() {
    for (version, expiry_rows) in [(STATE_VERSION_SUPPORTED, 0), (6, 1)] {
        let (_d, sm) = open_at_version(version);
        assert_eq!(create_accounts(&sm, "a", vec![acct(1, af::HISTORY), acct(2, 0)]), vec![AR::Ok; 2]);
        let pending = Transfer { flags: tf::PENDING, timeout: 1, ..xfer(10, 1, 2, 9) };
        assert_eq!(create_transfers_at(&sm, "p", 5_000, vec![pending]), vec![TR::Ok]);
        // A later transfer sweeps the expired one first, then applies.
        assert_eq!(create_transfers_at(&sm, "t", 7_000, vec![xfer(11, 2, 1, 4)]), vec![TR::Ok]);
        assert_eq!(read::pending_status(sm.db(), 10).unwrap(), Some(PendingStatus::Expired));
        assert_eq!(bal(&sm, 1), (0, 0, 0, 4), "the reservation is released either way");

        let history =
            read::account_entries(sm.db(), Cf::AccountHistory, &account_filter(1, true, true, false, 100))
                .unwrap()
                .entries;
        let ids: Vec<u128> = history.iter().map(|(_, e)| e.transfer_id).collect();
        let mut expected = vec![10];
        expected.extend(std::iter::repeat_n(10, expiry_rows));
        expected.push(11);
        assert_eq!(ids, expected, "state version {version}");
        let transfers = read::transfers(sm.db(), &[10, 11]).unwrap();
        let transfer_timestamps: Vec<u64> = transfers.iter().map(|t| t.transfer.timestamp).collect();
        let paired = history.iter().filter(|(ts, _)| transfer_timestamps.contains(ts)).count();
        assert_eq!(paired, 2, "state version {version}: rows at a transfer's timestamp");
        let last = history.last().unwrap().1.balance.unwrap();
        assert_eq!((last.debits_pending, last.credits_posted), (0, 4), "state version {version}");
    }
}

#[test]
fn account_queries_filter_by_side_time_and_revision() {
    let (_d, sm) = open();
    create_accounts(&sm, "a", vec![acct(1, af::HISTORY), acct(2, 0)]);
    for i in 0..10u128 {
        let (dr, cr) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
        let t =
            Transfer { code: 1 + (i % 3) as u16, user_data_64: i as u64 % 2, ..xfer(100 + i, dr, cr, 10) };
        create_transfers(&sm, &format!("t{i}"), vec![t]);
    }
    let filter = |debits, credits, reversed, limit| account_filter(1, debits, credits, reversed, limit);
    let ids = |page: &read::EntryPage| page.entries.iter().map(|(_, e)| e.transfer_id).collect::<Vec<_>>();
    let all = read::account_entries(sm.db(), Cf::AccountTransfers, &filter(true, true, false, 100)).unwrap();
    assert_eq!(ids(&all), (100..110).collect::<Vec<_>>());
    assert_eq!(all.next_timestamp, None, "the whole range fit");
    let debits = read::account_entries(sm.db(), Cf::AccountTransfers, &filter(true, false, true, 2)).unwrap();
    assert_eq!(ids(&debits), vec![108, 106]);
    // A full page says where the next one starts.
    let mut next = filter(true, false, true, 2);
    next.timestamp_max = debits.next_timestamp.expect("a full page may have more");
    let page2 = read::account_entries(sm.db(), Cf::AccountTransfers, &next).unwrap();
    assert_eq!(ids(&page2), vec![104, 102]);
    let all = all.entries;
    let mut f = filter(true, true, false, 100);
    f.revision_min = all[3].1.revision;
    f.revision_max = all[5].1.revision;
    let window = read::account_entries(sm.db(), Cf::AccountTransfers, &f).unwrap();
    assert_eq!(ids(&window), vec![103, 104, 105]);
    let history =
        read::account_entries(sm.db(), Cf::AccountHistory, &filter(true, true, false, 100)).unwrap().entries;
    let last = history.last().unwrap().1.balance.unwrap();
    assert_eq!((last.debits_posted, last.credits_posted), (50, 50));
    let none = read::account_entries(sm.db(), Cf::AccountHistory, &account_filter(2, true, true, false, 100))
        .unwrap();
    assert!(none.entries.is_empty(), "no history without the flag");
    // The transfers' own fields, ANDed (TigerBeetle's AccountFilter), for
    // transfers and for the balances they made.
    let mut by_code = filter(true, true, false, 100);
    by_code.code = 2;
    let found = read::account_entries(sm.db(), Cf::AccountTransfers, &by_code).unwrap();
    assert_eq!(ids(&found), vec![101, 104, 107]);
    by_code.user_data_64 = 1;
    let found = read::account_entries(sm.db(), Cf::AccountTransfers, &by_code).unwrap();
    assert_eq!(ids(&found), vec![101, 107]);
    let found = read::account_entries(sm.db(), Cf::AccountHistory, &by_code).unwrap();
    assert_eq!(ids(&found), vec![101, 107]);
    by_code.user_data_128 = 5;
    assert!(read::account_entries(sm.db(), Cf::AccountTransfers, &by_code).unwrap().entries.is_empty());
}

/// A filter that matches little stops at the scan's bound of rows; the page
/// then says where to go on, rather than looking like the end.
#[test]
fn a_query_cut_short_by_its_scan_bound_says_where_to_go_on() {
    let (_d, sm) = open();
    create_accounts(&sm, "a", vec![acct(1, 0), acct(2, 0)]);
    let (batches, per_batch) = (9u128, 7_400u128); // 66,600 credits of account 1: past the bound
    for b in 0..batches {
        let batch = (0..per_batch).map(|i| xfer(1_000 + b * per_batch + i, 2, 1, 1)).collect();
        assert!(create_transfers(&sm, &format!("c{b}"), batch).iter().all(|r| *r == TR::Ok));
    }
    assert_eq!(create_transfers(&sm, "d", vec![xfer(9, 1, 2, 1)]), vec![TR::Ok]);
    let mut f = account_filter(1, true, false, false, 10); // debits only
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = read::account_entries(sm.db(), Cf::AccountTransfers, &f).unwrap();
        found.extend(page.entries.iter().map(|(_, e)| e.transfer_id));
        pages += 1;
        match page.next_timestamp {
            Some(ts) => f.timestamp_min = ts,
            None => break,
        }
    }
    assert_eq!(found, vec![9], "the one debit is found, past the rows the first page could scan");
    assert!(pages >= 2, "the first page stopped at the scan bound");
}

fn account_filter(
    account_id: u128,
    debits: bool,
    credits: bool,
    reversed: bool,
    limit: usize,
) -> AccountFilter {
    AccountFilter {
        account_id,
        timestamp_min: 0,
        timestamp_max: 0,
        revision_min: 0,
        revision_max: 0,
        debits,
        credits,
        reversed,
        limit,
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        code: 0,
    }
}

/// A random workload (pending, posts, voids, limits, linked chains, time
/// passing) applied once entry by entry and once in random groupings: the
/// same results and the same balances, and the invariants hold throughout.
#[test]
fn random_workloads_keep_the_invariants_whatever_the_grouping() {
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let accounts: Vec<Account> = (1..=6u128)
            .map(|id| {
                let flags = match id % 3 {
                    0 => af::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    1 => af::CREDITS_MUST_NOT_EXCEED_DEBITS,
                    _ => 0,
                };
                acct(id, flags)
            })
            .collect();
        let mut cmds = vec![accounts_cmd("accounts", 1, accounts)];
        let mut time_ms = 1_000;
        for c in 0..60u128 {
            time_ms += rng.random_range(0..800);
            let transfers = (0..rng.random_range(1..6u128))
                .map(|i| {
                    let id = 1000 + c * 10 + i;
                    let dr = rng.random_range(1..=6u128);
                    let cr = rng.random_range(1..=6u128);
                    let mut t = xfer(id, dr, cr, rng.random_range(0..50));
                    match rng.random_range(0..10) {
                        0..=2 => {
                            t.flags = tf::PENDING;
                            t.timeout = rng.random_range(0..3);
                        }
                        3 | 4 => {
                            t = Transfer {
                                id,
                                pending_id: rng.random_range(1000..1000 + (c + 1) * 10),
                                flags: if rng.random_bool(0.5) {
                                    tf::POST_PENDING_TRANSFER
                                } else {
                                    tf::VOID_PENDING_TRANSFER
                                },
                                amount: if rng.random_bool(0.5) {
                                    u128::MAX
                                } else {
                                    rng.random_range(0..50)
                                },
                                ..Default::default()
                            }
                        }
                        5 => t.flags = tf::BALANCING_DEBIT,
                        _ => {}
                    }
                    if rng.random_bool(0.2) {
                        t.flags |= tf::LINKED;
                    }
                    t
                })
                .collect();
            cmds.push(transfers_cmd(&format!("c{c}"), time_ms, transfers));
        }

        let (_d1, one_by_one) = open();
        let expected: Vec<_> = cmds.iter().map(|c| apply_one(&one_by_one, c)).collect();
        let (_d2, grouped) = open();
        let mut got = Vec::new();
        let mut rest = cmds.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(8));
            let mut b = grouped.begin().unwrap();
            for c in &rest[..n] {
                got.push(b.apply(c).unwrap());
            }
            b.commit().unwrap();
            rest = &rest[n..];
        }
        assert_eq!(got, expected, "seed {seed}: grouping changed a result");
        for sm in [&one_by_one, &grouped] {
            let all = read::accounts(sm.db(), &(1..=6).collect::<Vec<_>>()).unwrap();
            let (mut dp, mut dpo, mut cp, mut cpo) = (0u128, 0u128, 0u128, 0u128);
            for a in &all {
                dp += a.debits_pending;
                dpo += a.debits_posted;
                cp += a.credits_pending;
                cpo += a.credits_posted;
                if a.has(af::DEBITS_MUST_NOT_EXCEED_CREDITS) {
                    assert!(a.debits_pending + a.debits_posted <= a.credits_posted, "seed {seed}: {a:?}");
                }
                if a.has(af::CREDITS_MUST_NOT_EXCEED_DEBITS) {
                    assert!(a.credits_pending + a.credits_posted <= a.debits_posted, "seed {seed}: {a:?}");
                }
            }
            assert_eq!((dp, dpo), (cp, cpo), "seed {seed}: debits != credits");
            let totals = read::ledger_totals(sm.db(), LEDGER).unwrap();
            assert_eq!((totals.debits_pending, totals.debits_posted), (dp, dpo));
        }
        assert_eq!(
            read::accounts(one_by_one.db(), &(1..=6).collect::<Vec<_>>()).unwrap(),
            read::accounts(grouped.db(), &(1..=6).collect::<Vec<_>>()).unwrap(),
            "seed {seed}"
        );
        let applied = expected
            .iter()
            .filter_map(|r| match &r.result {
                Ok(Outcome::TransfersCreated { results }) => {
                    Some(results.iter().filter(|r| **r == TR::Ok).count())
                }
                _ => None,
            })
            .sum::<usize>();
        assert!(applied > 30, "seed {seed}: the workload must do something ({applied} ok)");
    }
}

/// Apply reads accounts through a cache of committed accounts: after a
/// snapshot replaces the state, apply must see the snapshot's balances, not
/// the ones it cached before.
#[test]
fn a_snapshot_install_is_seen_by_the_next_transfer_not_cached_balances() {
    let (_d, sm) = open();
    with_accounts(&sm);
    let before = image_of(&sm);
    assert_eq!(create_transfers(&sm, "t1", vec![xfer(10, 1, 2, 500)]), vec![TR::Ok]);
    assert_eq!(bal(&sm, 1), (0, 500, 0, 0));
    install_image(&sm, before, &sm);
    assert_eq!(bal(&sm, 1), (0, 0, 0, 0));
    assert_eq!(create_transfers(&sm, "t2", vec![xfer(11, 1, 2, 7)]), vec![TR::Ok]);
    assert_eq!(bal(&sm, 1), (0, 7, 0, 0), "apply used a balance from before the install");
    assert_eq!(bal(&sm, 2), (0, 0, 0, 7));
    let totals = read::ledger_totals(sm.db(), LEDGER).unwrap();
    assert!(totals.balanced() && totals.debits_posted == 7, "{totals:?}");
}
