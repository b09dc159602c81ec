//! The ledger against a small in-memory reference model, written apart from
//! the real code: random batches of transfers (linked chains, two-phase,
//! limits, duplicates and near-duplicates) must give the same result for
//! every event and the same balances.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use strongbox_store::command::{CreateAccounts, CreateTransfers, Outcome};
use strongbox_store::ledger::model::{account_flags as af, transfer_flags as tf, Account, Transfer};
use strongbox_store::ledger::read;
use strongbox_store::ledger::results::CreateTransferResult as R;
use strongbox_store::Op;

const LEDGER: u32 = 700;
const ACCOUNTS: u128 = 5;

/// What the generator asks for; ids are assigned in order.
#[derive(Debug, Clone)]
enum Gen {
    Plain {
        dr: u128,
        cr: u128,
        amount: u128,
    },
    Pending {
        dr: u128,
        cr: u128,
        amount: u128,
    },
    /// Post (amount None: everything) or void an earlier event's id.
    Resolve {
        target: usize,
        post: bool,
        amount: Option<u128>,
    },
    /// An earlier event again, verbatim or with another amount.
    Again {
        target: usize,
        other_amount: bool,
    },
}

fn gen() -> impl Strategy<Value = (Gen, bool)> {
    let account = 1..=ACCOUNTS;
    let event = prop_oneof![
        3 => (account.clone(), account.clone(), 0..40u128).prop_map(|(dr, cr, amount)| Gen::Plain { dr, cr, amount }),
        2 => (account.clone(), account, 0..40u128).prop_map(|(dr, cr, amount)| Gen::Pending { dr, cr, amount }),
        2 => (0..64usize, any::<bool>(), proptest::option::of(0..40u128))
            .prop_map(|(target, post, amount)| Gen::Resolve { target, post, amount }),
        1 => (0..64usize, any::<bool>()).prop_map(|(target, other_amount)| Gen::Again { target, other_amount }),
    ];
    (event, proptest::bool::weighted(0.25))
}

/// The reference: balances (dp, dpo, cp, cpo), flags, transfers as stored,
/// and pending states. Deliberately simple and separate from `store::ledger`.
#[derive(Clone, Default)]
struct Model {
    balances: HashMap<u128, [u128; 4]>,
    flags: HashMap<u128, u16>,
    transfers: HashMap<u128, Transfer>,
    /// pending id -> 0 pending, 1 posted, 2 voided
    status: HashMap<u128, u8>,
    /// Ids of transfers that failed for a reason that could pass later.
    failed: HashSet<u128>,
}

impl Model {
    fn event(&mut self, t: &Transfer) -> R {
        if self.failed.contains(&t.id) {
            return R::IdAlreadyFailed;
        }
        if let Some(e) = self.transfers.get(&t.id) {
            // Flags are kept as sent, `linked` included (TigerBeetle's rule).
            let same_flags = t.flags == e.flags;
            if !same_flags {
                return R::ExistsWithDifferentFlags;
            }
            if t.pending_id != e.pending_id {
                return R::ExistsWithDifferentPendingId;
            }
            let void = t.flags & tf::VOID_PENDING_TRANSFER != 0;
            let resolves = void || t.flags & tf::POST_PENDING_TRANSFER != 0;
            if !resolves && t.debit_account_id != e.debit_account_id {
                return R::ExistsWithDifferentDebitAccountId;
            }
            if !resolves && t.credit_account_id != e.credit_account_id {
                return R::ExistsWithDifferentCreditAccountId;
            }
            // A void of 0 and a post of the maximum mean the pending amount.
            let asked = match (resolves, void, t.amount) {
                (true, true, 0) | (true, false, u128::MAX) => self.transfers[&t.pending_id].amount,
                _ => t.amount,
            };
            return if asked == e.amount { R::Exists } else { R::ExistsWithDifferentAmount };
        }
        let post = t.flags & tf::POST_PENDING_TRANSFER != 0;
        let void = t.flags & tf::VOID_PENDING_TRANSFER != 0;
        if post || void {
            if t.pending_id == t.id {
                return R::PendingIdMustBeDifferent;
            }
            let Some(p) = self.transfers.get(&t.pending_id).copied() else {
                return R::PendingTransferNotFound;
            };
            if p.flags & tf::PENDING == 0 {
                return R::PendingTransferNotPending;
            }
            let amount = match (void, t.amount) {
                (true, 0) | (false, u128::MAX) => p.amount,
                (_, a) => a,
            };
            if amount > p.amount {
                return R::ExceedsPendingTransferAmount;
            }
            if void && amount < p.amount {
                return R::PendingTransferHasDifferentAmount;
            }
            match self.status[&p.id] {
                1 => return R::PendingTransferAlreadyPosted,
                2 => return R::PendingTransferAlreadyVoided,
                _ => {}
            }
            let dr = self.balances.get_mut(&p.debit_account_id).unwrap();
            dr[0] -= p.amount;
            if post {
                dr[1] += amount;
            }
            let cr = self.balances.get_mut(&p.credit_account_id).unwrap();
            cr[2] -= p.amount;
            if post {
                cr[3] += amount;
            }
            self.status.insert(p.id, if post { 1 } else { 2 });
            let stored = Transfer {
                debit_account_id: p.debit_account_id,
                credit_account_id: p.credit_account_id,
                ledger: p.ledger,
                code: p.code,
                amount,
                flags: t.flags,
                timestamp: 0,
                ..*t
            };
            self.transfers.insert(t.id, stored);
            return R::Ok;
        }
        if t.debit_account_id == t.credit_account_id {
            return R::AccountsMustBeDifferent;
        }
        let pending = t.flags & tf::PENDING != 0;
        let (dr, cr) = (self.balances[&t.debit_account_id], self.balances[&t.credit_account_id]);
        if self.flags[&t.debit_account_id] & af::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && dr[0] + dr[1] + t.amount > dr[3]
        {
            return R::ExceedsCredits;
        }
        if self.flags[&t.credit_account_id] & af::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
            && cr[2] + cr[3] + t.amount > cr[1]
        {
            return R::ExceedsDebits;
        }
        let (d, c) = if pending { (0, 2) } else { (1, 3) };
        self.balances.get_mut(&t.debit_account_id).unwrap()[d] += t.amount;
        self.balances.get_mut(&t.credit_account_id).unwrap()[c] += t.amount;
        if pending {
            self.status.insert(t.id, 0);
        }
        self.transfers.insert(t.id, Transfer { timestamp: 0, ..*t });
        R::Ok
    }

    /// A batch, chain by chain: a failing chain leaves the model untouched.
    fn batch(&mut self, events: &[Transfer]) -> Vec<R> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < events.len() {
            // A chain still open at the batch's end: its members are tried
            // (the first failing one says why) and undone whatever happens,
            // and the last one says the chain was open.
            let (end, open) = match (start..events.len()).find(|&i| events[i].flags & tf::LINKED == 0) {
                Some(end) => (end, false),
                None => (events.len() - 1, true),
            };
            let tried = if open { &events[start..end] } else { &events[start..=end] };
            let saved = self.clone();
            let mut results = Vec::new();
            for e in tried {
                let r = self.event(e);
                results.push(r);
                if r != R::Ok {
                    break;
                }
            }
            let failure = results.iter().position(|r| *r != R::Ok);
            if failure.is_some() || open {
                *self = saved;
                let mut chain: Vec<R> = (start..=end).map(|_| R::LinkedEventFailed).collect();
                if open {
                    *chain.last_mut().unwrap() = R::LinkedEventChainOpen;
                }
                if let Some(i) = failure {
                    chain[i] = results[i];
                    // A post or void naming neither a ledger nor a pending
                    // transfer that exists passed no permission check: its
                    // id is not kept.
                    let transient = match results[i] {
                        R::DebitAccountNotFound
                        | R::CreditAccountNotFound
                        | R::ExceedsCredits
                        | R::ExceedsDebits => true,
                        R::PendingTransferNotFound => tried[i].ledger != 0,
                        _ => false,
                    };
                    if transient {
                        self.failed.insert(tried[i].id);
                    }
                }
                out.extend(chain);
            } else {
                out.extend(results);
            }
            start = end + 1;
        }
        out
    }
}

fn transfers(gens: &[(Gen, bool)], first_id: u128, earlier: &mut Vec<Transfer>) -> Vec<Transfer> {
    let mut out = Vec::new();
    for (i, (g, linked)) in gens.iter().enumerate() {
        let id = first_id + i as u128;
        let base = Transfer { id, ledger: LEDGER, code: 1, ..Default::default() };
        let mut t = match g {
            Gen::Plain { dr, cr, amount } => {
                Transfer { debit_account_id: *dr, credit_account_id: *cr, amount: *amount, ..base }
            }
            Gen::Pending { dr, cr, amount } => Transfer {
                debit_account_id: *dr,
                credit_account_id: *cr,
                amount: *amount,
                flags: tf::PENDING,
                ..base
            },
            Gen::Resolve { target, post, amount } => {
                let pending_id = earlier.get(target % earlier.len().max(1)).map_or(id + 1_000_000, |t| t.id);
                Transfer {
                    pending_id,
                    amount: amount.unwrap_or(if *post { u128::MAX } else { 0 }),
                    flags: if *post { tf::POST_PENDING_TRANSFER } else { tf::VOID_PENDING_TRANSFER },
                    ledger: 0,
                    code: 0,
                    ..base
                }
            }
            Gen::Again { target, other_amount } => match earlier.get(target % earlier.len().max(1)) {
                Some(e) => Transfer { amount: e.amount ^ u128::from(*other_amount), ..*e },
                None => Transfer { debit_account_id: 1, credit_account_id: 2, amount: 1, ..base },
            },
        };
        t.flags = (t.flags & !tf::LINKED) | if *linked { tf::LINKED } else { 0 };
        earlier.push(t);
        out.push(t);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_matches_the_reference_model(
        limits in proptest::collection::vec(0..3u8, ACCOUNTS as usize),
        batches in proptest::collection::vec(proptest::collection::vec(gen(), 1..8), 1..16),
    ) {
        let (_d, sm) = open();
        let mut model = Model::default();
        let accounts: Vec<Account> = (1..=ACCOUNTS)
            .map(|id| {
                let flags = match limits[id as usize - 1] {
                    1 => af::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    2 => af::CREDITS_MUST_NOT_EXCEED_DEBITS,
                    _ => 0,
                };
                model.balances.insert(id, [0; 4]);
                model.flags.insert(id, flags);
                Account { id, ledger: LEDGER, code: 1, flags, ..Default::default() }
            })
            .collect();
        let r = apply_one(&sm, &as_admin("accounts", 1, Op::CreateAccounts(CreateAccounts { accounts })));
        prop_assert!(r.result.is_ok());
        // Seed balances so the limited accounts can move something.
        let seed: Vec<(Gen, bool)> = (1..=ACCOUNTS)
            .flat_map(|a| {
                let other = 1 + a % ACCOUNTS;
                [(Gen::Plain { dr: other, cr: a, amount: 50 }, false), (Gen::Plain { dr: a, cr: other, amount: 50 }, false)]
            })
            .collect();
        let mut earlier = Vec::new();
        let mut next_id = 1u128;
        for (b, gens) in std::iter::once(&seed).chain(batches.iter()).enumerate() {
            let events = transfers(gens, next_id, &mut earlier);
            next_id += gens.len() as u128;
            let expected = model.batch(&events);
            let cmd = as_admin(&format!("b{b}"), 2, Op::CreateTransfers(CreateTransfers { transfers: events.clone() }));
            let got = match apply_one(&sm, &cmd).result {
                Ok(Outcome::TransfersCreated { results }) => results,
                other => return Err(TestCaseError::fail(format!("batch {b}: {other:?}"))),
            };
            prop_assert_eq!(&got, &expected, "batch {}: {:?}", b, events);
        }
        let mut sums = [0u128; 4];
        for id in 1..=ACCOUNTS {
            let a = read::accounts(sm.db(), &[id]).unwrap().pop().unwrap();
            let balances = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted];
            prop_assert_eq!(balances, model.balances[&id], "account {}", id);
            for (sum, b) in sums.iter_mut().zip(balances) {
                *sum += b;
            }
        }
        // The ledger's stored totals are the sums of its accounts (failed
        // chains roll the totals back with the balances).
        let t = read::ledger_totals(sm.db(), LEDGER).unwrap();
        prop_assert_eq!([t.debits_pending, t.debits_posted, t.credits_pending, t.credits_posted], sums);
        let stored = read::transfers(sm.db(), &(1..next_id).collect::<Vec<_>>()).unwrap();
        prop_assert_eq!(stored.len(), model.transfers.len());
        for s in stored {
            let m = model.transfers[&s.transfer.id];
            prop_assert_eq!(Transfer { timestamp: 0, ..s.transfer }, m);
        }
    }
}
