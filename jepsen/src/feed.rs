//! Change-feed checker. Each subscriber must receive every acknowledged write
//! exactly once, in strictly increasing revision order, without skipping
//! revisions (the cluster assigns revisions without gaps), including across
//! reconnects. Deliveries are given per subscriber in the order received.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::results::{CheckerResult, Validity};

/// A write the cluster acknowledged, with the revision it was given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedWrite {
    pub revision: u64,
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub subscriber: String,
    pub revision: u64,
    pub key: String,
    pub value: String,
}

/// How many examples of each problem `check` writes out.
const EXAMPLES_MAX: usize = 20;

#[derive(Default)]
struct Problems {
    counts: BTreeMap<&'static str, u64>,
    examples: BTreeMap<&'static str, Vec<Value>>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, example: Value) {
        *self.counts.entry(kind).or_default() += 1;
        let examples = self.examples.entry(kind).or_default();
        if examples.len() < EXAMPLES_MAX {
            examples.push(example);
        }
    }
}

const KINDS: [&str; 6] = ["missing", "duplicate", "out_of_order", "gap", "mismatched", "conflicting_acks"];

/// `subscribers` lists every subscriber expected to have caught up; one that
/// received nothing is then reported as missing everything.
pub fn check(acked: &[AckedWrite], deliveries: &[Delivery], subscribers: &[String]) -> CheckerResult {
    let mut problems = Problems::default();
    let mut by_revision: BTreeMap<u64, &AckedWrite> = BTreeMap::new();
    for write in acked {
        if let Some(earlier) = by_revision.insert(write.revision, write) {
            if earlier != write {
                problems.add("conflicting_acks", json!({ "first": earlier, "second": write }));
            }
        }
    }
    for subscriber in subscribers {
        let mut seen = BTreeSet::new();
        let mut last: Option<u64> = None;
        for d in deliveries.iter().filter(|d| &d.subscriber == subscriber) {
            let example = || json!({ "subscriber": subscriber, "revision": d.revision, "previous": last });
            if seen.contains(&d.revision) {
                problems.add("duplicate", example());
            } else if last.is_some_and(|l| d.revision < l) {
                problems.add("out_of_order", example());
            } else if last.is_some_and(|l| d.revision > l + 1) {
                problems.add("gap", example());
            }
            if by_revision.get(&d.revision).is_some_and(|w| w.key != d.key || w.value != d.value) {
                problems.add("mismatched", json!({ "delivered": d, "acked": by_revision[&d.revision] }));
            }
            seen.insert(d.revision);
            last = last.max(Some(d.revision));
        }
        for revision in by_revision.keys().filter(|r| !seen.contains(r)) {
            problems.add("missing", json!({ "subscriber": subscriber, "revision": revision }));
        }
    }
    // Nothing written or nobody watching: nothing was shown.
    let valid = if subscribers.is_empty() || by_revision.is_empty() {
        Validity::Unknown
    } else if problems.counts.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let mut result = CheckerResult::new(valid)
        .with_count("subscribers", subscribers.len() as u64)
        .with_count("acked_writes", by_revision.len() as u64)
        .with_count("deliveries", deliveries.len() as u64);
    for kind in KINDS {
        result = result.with_count(kind, problems.counts.get(kind).copied().unwrap_or(0));
    }
    for (kind, examples) in problems.examples {
        result = result.with_detail(kind, Value::Array(examples));
    }
    result
}
