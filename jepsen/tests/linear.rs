mod common;

use common::sim::simulated_history;
use common::{cas, read, seen, version, write, Rec};
use jepsen::linear::{check, check_by_key, key_of, summarize, LinResult, Register, Window};
use jepsen::results::Validity;

const BUDGET_MS: u64 = 10_000;

fn verdict(rec: &Rec) -> LinResult {
    check(&Register, &rec.completed(), BUDGET_MS)
}

fn window(result: LinResult) -> Window {
    match result {
        LinResult::Invalid { counterexample } => counterexample,
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn fs_and_starts(w: &Window) -> Vec<(&str, u64)> {
    w.ops.iter().map(|op| (op.f.as_str(), op.invoke_index)).collect()
}

#[test]
fn concurrent_write_and_reads_are_linearizable() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(0, None));
    r.invoke(2, "read", read("k"));
    r.ok(0, "write", version(1));
    r.ok(2, "read", seen(1, Some("a")));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("a")));
    assert_eq!(verdict(&r), LinResult::Valid);
}

#[test]
fn stale_read_after_completed_write_is_invalid() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.ok(0, "write", version(1));
    r.invoke(0, "write", write("k", "b"));
    r.ok(0, "write", version(2));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("a")));
    let w = window(verdict(&r));
    assert_eq!((w.start_index, w.end_index), (2, 5));
    assert_eq!(fs_and_starts(&w), vec![("write", 2), ("read", 4)]);
}

#[test]
fn counterexample_skips_the_healthy_prefix() {
    let mut r = Rec::default();
    for (i, v) in ["a", "b", "c", "d"].iter().enumerate() {
        r.invoke(0, "write", write("k", v));
        r.ok(0, "write", version(i as u64 + 1));
        r.invoke(1, "read", read("k"));
        r.ok(1, "read", seen(i as u64 + 1, Some(v)));
    }
    // Index 16: a read that goes back two versions.
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(2, Some("b")));
    r.invoke(0, "write", write("k", "e"));
    r.ok(0, "write", version(5));
    // The earlier ops only matter as possible effects: two reads going
    // backwards in version are a contradiction on their own.
    let w = window(verdict(&r));
    assert_eq!((w.start_index, w.end_index), (14, 17));
    assert_eq!(fs_and_starts(&w), vec![("read", 14), ("read", 16)]);
}

#[test]
fn lost_update_two_cas_from_same_version_is_invalid() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.ok(0, "write", version(1));
    r.invoke(1, "cas", cas("k", 1, "b"));
    r.invoke(2, "cas", cas("k", 1, "c"));
    r.ok(1, "cas", version(2));
    r.ok(2, "cas", version(2));
    let w = window(verdict(&r));
    assert_eq!(fs_and_starts(&w), vec![("cas", 2), ("cas", 3)]);
}

#[test]
fn cas_that_succeeds_twice_is_invalid() {
    let mut r = Rec::default();
    r.invoke(0, "cas", cas("k", 0, "a"));
    r.ok(0, "cas", version(1));
    r.invoke(1, "cas", cas("k", 0, "b"));
    r.ok(1, "cas", version(2));
    assert!(matches!(verdict(&r), LinResult::Invalid { .. }));
}

#[test]
fn concurrent_cas_where_one_fails_is_valid() {
    let mut r = Rec::default();
    r.invoke(1, "cas", cas("k", 0, "b"));
    r.invoke(2, "cas", cas("k", 0, "c"));
    r.ok(1, "cas", version(1));
    r.fail(2, "cas", serde_json::Value::Null);
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("b")));
    assert_eq!(verdict(&r), LinResult::Valid);
}

#[test]
fn read_of_value_never_written_is_invalid() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.ok(0, "write", version(1));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("zzz")));
    // Alone the read could have seen some earlier state; the write pins it.
    let w = window(verdict(&r));
    assert_eq!(fs_and_starts(&w), vec![("write", 0), ("read", 2)]);
}

#[test]
fn info_write_that_is_read_later_is_valid() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.info(0, "write", write("k", "a"));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(0, None));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("a")));
    r.invoke(1, "write", write("k", "b"));
    r.ok(1, "write", version(2));
    assert_eq!(verdict(&r), LinResult::Valid);
}

#[test]
fn info_write_never_read_is_valid() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.info(0, "write", write("k", "a"));
    r.invoke(1, "write", write("k", "b"));
    r.ok(1, "write", version(1));
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(1, Some("b")));
    // Never completed at all: pairing turns it into an info op.
    r.invoke(2, "write", write("k", "c"));
    assert_eq!(verdict(&r), LinResult::Valid);
}

#[test]
fn info_cas_may_or_may_not_apply() {
    for observed in [seen(1, Some("a")), seen(2, Some("b"))] {
        let mut r = Rec::default();
        r.invoke(0, "write", write("k", "a"));
        r.ok(0, "write", version(1));
        r.invoke(1, "cas", cas("k", 1, "b"));
        r.info(1, "cas", serde_json::Value::Null);
        r.invoke(2, "read", read("k"));
        r.ok(2, "read", observed);
        assert_eq!(verdict(&r), LinResult::Valid);
    }
}

#[test]
fn fail_ops_are_ignored() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("k", "a"));
    r.fail(0, "write", serde_json::Value::Null);
    r.invoke(0, "cas", cas("k", 0, "b"));
    r.fail(0, "cas", serde_json::Value::Null);
    r.invoke(1, "read", read("k"));
    r.ok(1, "read", seen(0, None));
    assert_eq!(verdict(&r), LinResult::Valid);
}

#[test]
fn time_budget_exhaustion_is_unknown() {
    // Concurrent info writes of values that reads observe (so none merge),
    // and one impossible read: refuting it means trying every subset of the
    // writes.
    let mut r = Rec::default();
    for p in 0..40 {
        r.invoke(p, "write", write("k", &format!("v{p}")));
        r.invoke(100 + p, "read", read("k"));
    }
    r.invoke(200, "read", read("k"));
    for p in 0..40 {
        r.ok(100 + p, "read", seen(p + 1, Some(&format!("v{p}"))));
    }
    r.ok(200, "read", seen(1, Some("never")));
    let result = check(&Register, &r.completed(), 1);
    assert!(matches!(result, LinResult::Unknown { .. }), "{result:?}");
    assert_eq!(result.validity(), Validity::Unknown);
}

#[test]
fn a_malformed_op_is_no_pass_for_the_checker() {
    let mut r = Rec::default();
    r.invoke(0, "write", read("k"));
    r.ok(0, "write", version(1));
    let result = verdict(&r);
    assert!(
        matches!(&result, LinResult::Unknown { reason } if reason.starts_with(jepsen::linear::MALFORMED)),
        "{result:?}"
    );
    // Summarized, it fails the checker rather than passing as "unknown".
    let summary = jepsen::linear::summarize(&[("k".to_string(), result)].into_iter().collect());
    assert_eq!(summary.valid, Validity::Invalid);
    assert_eq!(summary.count("malformed_keys"), 1);
}

#[test]
fn keys_are_checked_independently() {
    let mut r = Rec::default();
    r.invoke(0, "write", write("x", "a"));
    r.ok(0, "write", version(1));
    r.invoke(0, "read", read("y"));
    r.ok(0, "read", seen(0, None));
    r.invoke(0, "read", read("x"));
    r.ok(0, "read", seen(1, Some("a")));
    r.invoke(1, "transfer", serde_json::json!({ "from": 1 }));
    r.ok(1, "transfer", serde_json::Value::Null);
    r.invoke(0, "read", read("y"));
    r.ok(0, "read", seen(1, Some("a")));
    let results = check_by_key(&Register, &r.completed(), key_of, BUDGET_MS);
    assert_eq!(results.keys().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(results["x"], LinResult::Valid);
    assert!(matches!(results["y"], LinResult::Invalid { .. }));
    let summary = summarize(&results);
    assert_eq!(summary.valid, Validity::Invalid);
    assert_eq!((summary.count("valid_keys"), summary.count("invalid_keys")), (1, 1));
    assert!(summary.details["counterexamples"].get("y").is_some());
}

#[test]
fn simulated_linearizable_histories_are_valid() {
    for seed in 0..20 {
        let history = simulated_history(seed, 200, 5);
        assert_eq!(check(&Register, &history, BUDGET_MS), LinResult::Valid, "seed {seed}");
    }
}

#[test]
fn simulated_history_with_one_corrupted_read_is_invalid() {
    for seed in 0..20 {
        let mut history = simulated_history(seed, 200, 5);
        let victim = history.iter_mut().rev().find(|op| op.f == "read" && op.is_ok()).expect("a read");
        victim.value_out = seen(1, Some("never-written"));
        let victim_index = victim.invoke_index;
        let w = window(check(&Register, &history, BUDGET_MS));
        assert!(w.ops.iter().any(|op| op.invoke_index == victim_index), "seed {seed}: {w:?}");
    }
}
