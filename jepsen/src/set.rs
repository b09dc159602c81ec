//! Set workload checker: every acknowledged `add` must survive into the final
//! reads, taken through every node once the cluster has healed (each is
//! checked; the counts are over all of them).
//!
//! `add` is invoked with the element as its value; `read` completes ok with an
//! array of elements. Elements compare by `history::value_key`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::history::{value_key, Completed, Outcome};
use crate::results::{CheckerResult, Validity};

/// How many elements of each kind `check` lists.
const LIST_MAX: usize = 50;

/// `last_nemesis_index` (see `history::last_nemesis_index`): the final read
/// must be invoked after it, or faults could still hide acknowledged adds.
pub fn check(ops: &[Completed], last_nemesis_index: Option<u64>) -> CheckerResult {
    // The strongest outcome of any add of an element: ok beats info beats fail.
    let mut adds: BTreeMap<String, Outcome> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.f == "add") {
        let rank = |o: Outcome| match o {
            Outcome::Ok => 2,
            Outcome::Info => 1,
            Outcome::Fail => 0,
        };
        let slot = adds.entry(value_key(&op.value_in)).or_insert(op.outcome);
        if rank(op.outcome) > rank(*slot) {
            *slot = op.outcome;
        }
    }
    let with = |outcome| adds.values().filter(|o| **o == outcome).count() as u64;
    let result = CheckerResult::new(Validity::Unknown)
        .with_count("ok_adds", with(Outcome::Ok))
        .with_count("info_adds", with(Outcome::Info))
        .with_count("fail_adds", with(Outcome::Fail));

    let finals: Vec<&Completed> = ops
        .iter()
        .filter(|op| op.f == "read" && op.is_ok())
        .filter(|r| last_nemesis_index.is_none_or(|n| r.invoke_index > n))
        .collect();
    let Some(final_read) = finals.iter().max_by_key(|op| op.invoke_index).copied() else {
        return result.with_detail("reason", json!("no ok read after the final heal"));
    };
    let mut reads: Vec<BTreeSet<String>> = Vec::new();
    for r in &finals {
        let Some(elements) = r.value_out.as_array() else {
            return CheckerResult { valid: Validity::Invalid, ..result }
                .with_detail("reason", json!(format!("read {} is not an array", r.invoke_index)));
        };
        reads.push(elements.iter().map(value_key).collect());
    }
    let read: BTreeSet<String> = reads.last().cloned().unwrap_or_default();
    let in_all = |e: &String| reads.iter().all(|r| r.contains(e));
    let in_any = |e: &String| reads.iter().any(|r| r.contains(e));

    let (mut lost, mut recovered, mut failed_present) = (Vec::new(), Vec::new(), Vec::new());
    for (element, outcome) in &adds {
        match outcome {
            Outcome::Ok if !in_all(element) => lost.push(element.clone()),
            Outcome::Info if in_any(element) => recovered.push(element.clone()),
            Outcome::Fail if in_any(element) => failed_present.push(element.clone()),
            _ => {}
        }
    }
    // Every final read must agree too (a node that kept something another
    // lost, or the reverse).
    let mut unexpected: BTreeSet<String> = BTreeSet::new();
    for r in &reads {
        unexpected.extend(r.iter().filter(|e| !adds.contains_key(*e)).cloned());
    }
    let unexpected: Vec<String> = unexpected.into_iter().collect();
    let disagreeing = reads.windows(2).filter(|w| w[0] != w[1]).count() as u64;
    let valid = if lost.is_empty() && unexpected.is_empty() && failed_present.is_empty() && disagreeing == 0 {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let list = |v: &[String]| json!(v.iter().take(LIST_MAX).collect::<Vec<_>>());
    CheckerResult { valid, ..result }
        .with_count("final_read_size", read.len() as u64)
        .with_count("final_reads", reads.len() as u64)
        .with_count("final_reads_disagreeing", disagreeing)
        .with_count("lost", lost.len() as u64)
        .with_count("recovered", recovered.len() as u64)
        .with_count("unexpected", unexpected.len() as u64)
        .with_count("failed_but_present", failed_present.len() as u64)
        .with_count("final_read_index", final_read.invoke_index)
        .with_detail("lost", list(&lost))
        .with_detail("recovered", list(&recovered))
        .with_detail("unexpected", list(&unexpected))
        .with_detail("failed_but_present", list(&failed_present))
}

/// The lost elements of a set result, for callers that want them typed.
pub fn lost(result: &CheckerResult) -> Vec<String> {
    let lost = result.details.get("lost").and_then(Value::as_array);
    lost.map(|l| l.iter().map(value_key).collect()).unwrap_or_default()
}
