//! The bank as one linearizable object: good histories pass, a read that no
//! order of the transfers explains fails, and so does an ok transfer that
//! would have overdrawn its account.

mod common;

use common::Rec;
use jepsen::linear::{check, Bank, LinResult};
use serde_json::json;

const MODEL: Bank = Bank { accounts: 2, initial: 10 };

fn transfer(from: u64, to: u64, amount: u64) -> serde_json::Value {
    json!({ "from": from, "to": to, "amount": amount })
}

fn balances(a: i64, b: i64) -> serde_json::Value {
    json!({ "1": a, "2": b })
}

#[test]
fn concurrent_transfer_and_reads_either_side_of_it_are_linearizable() {
    let mut r = Rec::default();
    r.invoke(0, "transfer", transfer(1, 2, 3));
    r.invoke(1, "read", json!(null));
    r.ok(1, "read", balances(10, 10)); // before the transfer
    r.invoke(1, "read", json!(null));
    r.ok(1, "read", balances(7, 13)); // after it
    r.ok(0, "transfer", json!({"id": 1}));
    // A refused transfer did nothing; an unknown one may apply later.
    r.invoke(2, "transfer", transfer(1, 2, 50));
    r.fail(2, "transfer", json!({"error": "exceeds_credits"}));
    r.invoke(3, "transfer", transfer(2, 1, 1));
    r.info(3, "transfer", json!({"error": "timeout"}));
    r.invoke(1, "read", json!(null));
    r.ok(1, "read", balances(8, 12));
    assert_eq!(check(&MODEL, &r.completed(), 5_000), LinResult::Valid);
}

#[test]
fn a_read_no_order_explains_is_not_linearizable() {
    let mut r = Rec::default();
    r.invoke(0, "transfer", transfer(1, 2, 3));
    r.ok(0, "transfer", json!({"id": 1}));
    // The transfer completed before this read began: it must be visible.
    r.invoke(1, "read", json!(null));
    r.ok(1, "read", balances(10, 10));
    assert!(matches!(check(&MODEL, &r.completed(), 5_000), LinResult::Invalid { .. }));
}

#[test]
fn an_ok_transfer_that_overdraws_is_not_linearizable() {
    let mut r = Rec::default();
    r.invoke(0, "transfer", transfer(1, 2, 8));
    r.ok(0, "transfer", json!({"id": 1}));
    r.invoke(0, "transfer", transfer(1, 2, 8));
    r.ok(0, "transfer", json!({"id": 2}));
    assert!(matches!(check(&MODEL, &r.completed(), 5_000), LinResult::Invalid { .. }));
}
