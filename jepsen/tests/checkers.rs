mod common;

use std::collections::BTreeSet;

use common::Rec;
use jepsen::history::{self, pair, Outcome, Process};
use jepsen::results::{CheckerResult, Results, Validity};
use jepsen::{bank, feed, revocation, set};
use serde_json::{json, Value};

#[test]
fn history_round_trips_through_jsonl_with_jepsen_field_names() {
    let mut r = Rec::default();
    r.invoke(3, "write", json!({ "key": "k", "value": "a" }));
    r.nemesis("partition");
    r.ok(3, "write", json!({ "version": 1 }));
    let mut buf = Vec::new();
    history::write_jsonl(&mut buf, r.history().ops()).unwrap();
    let text = String::from_utf8(buf.clone()).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({ "index": 0, "time": 0, "type": "invoke", "process": 3, "f": "write",
                "value": { "key": "k", "value": "a" } })
    );
    assert!(text.lines().nth(1).unwrap().contains(r#""process":"nemesis""#));
    let back = history::read_jsonl(buf.as_slice()).unwrap();
    assert_eq!(back, r.history().ops());
    assert_eq!(back[1].process, Process::Nemesis);
    assert_eq!(history::last_nemesis_index(&back), Some(1));
}

#[test]
fn pairing_matches_processes_and_turns_unfinished_ops_into_info() {
    let mut r = Rec::default();
    r.invoke(0, "read", Value::Null);
    r.invoke(1, "write", json!("x"));
    r.nemesis("kill");
    r.ok(0, "read", json!("x"));
    let done = r.completed();
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].process, done[0].outcome, done[0].complete_index), (0, Outcome::Ok, Some(3)));
    assert_eq!(done[0].complete_ns, Some(3_000));
    assert_eq!((done[1].process, done[1].outcome, done[1].complete_index), (1, Outcome::Info, None));
    assert_eq!(done[1].complete_ns, None);
}

#[test]
fn pairing_rejects_completion_without_invocation() {
    let mut r = Rec::default();
    r.ok(0, "read", Value::Null);
    let err = pair(r.history().ops()).unwrap_err();
    assert_eq!(err.index, 0);
}

#[test]
fn results_combine_validity_and_serialise_jepsen_style() {
    let mut results = Results::new();
    results.insert("a", CheckerResult::new(Validity::Valid));
    assert_eq!(results.valid(), Validity::Valid);
    results.insert("b", CheckerResult::new(Validity::Unknown).with_count("n", 2));
    assert_eq!(results.valid(), Validity::Unknown);
    assert_eq!(results.to_json()["valid"], json!("unknown"));
    results.insert("c", CheckerResult::new(Validity::Invalid));
    assert_eq!(results.to_json()["valid"], json!(false));
    assert_eq!(results.to_json()["checkers"]["a"]["valid"], json!(true));
    assert_eq!(results.to_json()["checkers"]["b"]["counts"]["n"], json!(2));
    let dir = std::env::temp_dir().join(format!("jepsen-results-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    results.save(&path).unwrap();
    assert_eq!(Results::load(&path).unwrap(), results);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bank_config() -> bank::BankConfig {
    bank::BankConfig { total: 100, non_negative: BTreeSet::from(["a".to_string()]) }
}

fn bank_history(reads: &[Value]) -> Vec<history::Completed> {
    let mut r = Rec::default();
    r.invoke(9, "transfer", json!({ "from": "a", "to": "b", "amount": 5 }));
    r.ok(9, "transfer", Value::Null);
    for balances in reads {
        r.invoke(0, "read", Value::Null);
        r.ok(0, "read", balances.clone());
    }
    r.invoke(0, "read", Value::Null);
    r.fail(0, "read", json!({ "a": 1 }));
    r.completed()
}

#[test]
fn bank_reads_with_the_right_total_are_valid() {
    let result = bank::check(
        &bank_history(&[json!({ "a": 50, "b": 50 }), json!({ "a": 0, "b": 100 })]),
        &bank_config(),
    );
    assert_eq!(result.valid, Validity::Valid);
    assert_eq!((result.count("reads_checked"), result.count("bad_reads")), (2, 0));
}

#[test]
fn bank_read_with_wrong_total_or_overdraft_is_invalid() {
    let reads = [json!({ "a": 50, "b": 50 }), json!({ "a": 45, "b": 50 }), json!({ "a": -5, "b": 105 })];
    let result = bank::check(&bank_history(&reads), &bank_config());
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.count("reads_checked"), 3);
    assert_eq!((result.count("bad_reads"), result.count("wrong_total"), result.count("negative")), (2, 1, 1));
    assert_eq!(result.details["bad_reads"][0]["invoke_index"], json!(4));
}

#[test]
fn bank_allows_overdraft_of_unflagged_accounts() {
    let result = bank::check(&bank_history(&[json!({ "a": 105, "b": -5 })]), &bank_config());
    assert_eq!(result.valid, Validity::Valid);
}

fn set_history(final_read: &[u64], heal_after_read: bool) -> (Vec<history::Completed>, Option<u64>) {
    let mut r = Rec::default();
    for (p, element, outcome) in [(0, 1, "ok"), (1, 2, "ok"), (2, 3, "info"), (3, 4, "info"), (4, 5, "fail")]
    {
        r.invoke(p, "add", json!(element));
        match outcome {
            "ok" => r.ok(p, "add", json!(element)),
            "info" => r.info(p, "add", json!(element)),
            _ => r.fail(p, "add", json!(element)),
        };
    }
    r.nemesis("heal");
    r.invoke(0, "read", Value::Null);
    r.ok(0, "read", json!(final_read));
    if heal_after_read {
        r.nemesis("heal");
    }
    let last_nemesis = history::last_nemesis_index(r.history().ops());
    (r.completed(), last_nemesis)
}

#[test]
fn set_with_every_acknowledged_add_is_valid_and_counts_recovered() {
    let (ops, heal) = set_history(&[1, 2, 3], false);
    let result = set::check(&ops, heal);
    assert_eq!(result.valid, Validity::Valid);
    assert_eq!((result.count("ok_adds"), result.count("info_adds"), result.count("fail_adds")), (2, 2, 1));
    assert_eq!((result.count("recovered"), result.count("lost")), (1, 0));
}

#[test]
fn set_lost_element_is_invalid() {
    let (ops, heal) = set_history(&[1, 3, 9], false);
    let result = set::check(&ops, heal);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(set::lost(&result), ["2"]);
    assert_eq!(result.details["unexpected"], json!(["9"]));
    assert_eq!((result.count("lost"), result.count("unexpected")), (1, 1));
}

#[test]
fn set_failed_add_that_appears_is_invalid() {
    let (ops, heal) = set_history(&[1, 2, 5], false);
    let result = set::check(&ops, heal);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.details["failed_but_present"], json!(["5"]));
}

#[test]
fn set_without_read_after_final_heal_is_unknown() {
    let (ops, heal) = set_history(&[1, 2], true);
    assert_eq!(set::check(&ops, heal).valid, Validity::Unknown);
}

#[test]
fn revocation_use_invoked_after_revoke_completed_must_fail() {
    let mut r = Rec::default();
    r.invoke(0, "revoke", json!("t1"));
    r.invoke(1, "use", json!("t1")); // concurrent with the revoke: may succeed
    r.ok(0, "revoke", Value::Null);
    r.ok(1, "use", Value::Null);
    r.invoke(2, "use", json!("t1"));
    r.fail(2, "use", json!({"error": revocation::UNAUTHENTICATED}));
    r.invoke(3, "use", json!("t2")); // never revoked
    r.ok(3, "use", Value::Null);
    // Failed for want of a leader: no evidence either way.
    r.invoke(4, "use", json!("t1"));
    r.fail(4, "use", json!({"error": "The service is currently unavailable"}));
    let result = revocation::check(&r.completed());
    assert_eq!(result.valid, Validity::Valid);
    assert_eq!((result.count("uses_after_revoke"), result.count("violations")), (1, 0));

    r.invoke(1, "use", json!("t1"));
    r.ok(1, "use", Value::Null);
    let result = revocation::check(&r.completed());
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.count("violations"), 1);
    assert_eq!(result.details["violations"][0]["use_invoke_index"], json!(10));
    assert_eq!(result.details["violations"][0]["revoke_complete_index"], json!(2));
}

fn acked(revisions: &[u64]) -> Vec<feed::AckedWrite> {
    revisions
        .iter()
        .map(|&r| feed::AckedWrite { revision: r, key: format!("k{r}"), value: "v".into() })
        .collect()
}

fn delivered(subscriber: &str, revisions: &[u64]) -> Vec<feed::Delivery> {
    let d = |&r: &u64| feed::Delivery {
        subscriber: subscriber.into(),
        revision: r,
        key: format!("k{r}"),
        value: "v".into(),
    };
    revisions.iter().map(d).collect()
}

fn feed_check(revisions: &[u64]) -> CheckerResult {
    let mut deliveries = delivered("s1", &[1, 2, 3, 4]);
    deliveries.extend(delivered("s2", revisions));
    feed::check(&acked(&[1, 2, 3, 4]), &deliveries, &["s1".into(), "s2".into()])
}

#[test]
fn feed_in_order_exactly_once_is_valid() {
    let result = feed_check(&[1, 2, 3, 4]);
    assert_eq!(result.valid, Validity::Valid);
    assert_eq!(result.count("deliveries"), 8);
}

#[test]
fn feed_duplicate_after_reconnect_is_invalid() {
    let result = feed_check(&[1, 2, 2, 3, 4]);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!((result.count("duplicate"), result.count("missing"), result.count("gap")), (1, 0, 0));
}

#[test]
fn feed_gap_is_invalid_and_reports_missing() {
    let result = feed_check(&[1, 2, 4]);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!((result.count("gap"), result.count("missing")), (1, 1));
    assert_eq!(result.details["missing"][0], json!({ "subscriber": "s2", "revision": 3 }));
}

#[test]
fn feed_out_of_order_is_invalid() {
    let result = feed_check(&[1, 3, 2, 4]);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!((result.count("out_of_order"), result.count("gap")), (1, 1));
}

#[test]
fn feed_delivery_with_wrong_value_is_invalid() {
    let mut deliveries = delivered("s1", &[1, 2]);
    deliveries[1].value = "other".into();
    let result = feed::check(&acked(&[1, 2]), &deliveries, &["s1".into()]);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(result.count("mismatched"), 1);
}

/// After the heal the ledger's transfers settle what the history left
/// open, and contradict what it said was certain.
#[test]
fn bank_transfers_are_settled_against_the_ledger_after_the_heal() {
    let history = |listed: Value| {
        let mut r = Rec::default();
        let t = |id: u64| json!({ "id": id, "from": 1, "to": 2, "amount": 3 });
        r.invoke(1, "transfer", t(10));
        r.ok(1, "transfer", json!({ "id": 10 }));
        r.invoke(2, "transfer", t(11));
        r.fail(2, "transfer", json!({ "error": "refused" }));
        r.invoke(3, "transfer", t(12));
        r.info(3, "transfer", json!({ "error": "timeout" }));
        r.invoke(0, "read", Value::Null);
        r.ok(0, "read", json!({ "a": 50, "b": 50 }));
        r.invoke(0, "applied", json!({}));
        r.ok(0, "applied", json!({ "transfers": listed }));
        r.completed()
    };
    let clean = bank::check(&history(json!([[10, 1, 2, 3], [12, 1, 2, 3]])), &bank_config());
    assert_eq!(clean.valid, Validity::Valid, "{clean:?}");
    assert_eq!((clean.count("unknown_settled_applied"), clean.count("transfers_in_ledger")), (1, 2));

    // The failed one applied, the acknowledged one missing, an unknown id.
    let bad = bank::check(&history(json!([[11, 1, 2, 3], [99, 1, 2, 3]])), &bank_config());
    assert_eq!(bad.valid, Validity::Invalid);
    assert_eq!(bad.count("failed_but_applied"), 1);
    assert_eq!(bad.count("acknowledged_but_not_in_the_ledger"), 1);
    assert_eq!(bad.count("unknown_settled_not_applied"), 1);
    assert_eq!(bad.details["transfer_problems"].as_array().unwrap().len(), 3, "{bad:?}");

    // Applied with another amount than asked.
    let other = bank::check(&history(json!([[10, 1, 2, 4]])), &bank_config());
    assert_eq!(other.count("applied_with_another_body"), 1);
}

/// Every final read (one per node) must hold every acknowledged add: a node
/// that lost one is caught even if the last read has it.
#[test]
fn set_final_reads_through_every_node_must_all_hold_every_add() {
    let mut r = Rec::default();
    for element in [1, 2] {
        r.invoke(0, "add", json!(element));
        r.ok(0, "add", json!(element));
    }
    r.nemesis("heal");
    for read in [json!([1]), json!([1, 2])] {
        r.invoke(9, "read", Value::Null);
        r.ok(9, "read", read);
    }
    let last = history::last_nemesis_index(r.history().ops());
    let result = set::check(&r.completed(), last);
    assert_eq!(result.valid, Validity::Invalid);
    assert_eq!(set::lost(&result), ["2"]);
    assert_eq!((result.count("final_reads"), result.count("final_reads_disagreeing")), (2, 1));
}
