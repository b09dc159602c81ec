//! Bank workload checker: transfers move money between accounts, so every
//! successful read of all balances must add up to the same total, and some
//! accounts must never be overdrawn.
//!
//! A `read` completes ok with a map of account name to integer balance.
//! After the heal, one `applied` op lists every transfer the ledger holds
//! (`[id, from, to, amount]`): a transfer that failed must not be among
//! them, one acknowledged must be, with the amount asked; one of unknown
//! outcome is settled either way (counted).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::history::{Completed, Outcome};
use crate::results::{CheckerResult, Validity};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankConfig {
    /// What the balances sum to in every consistent snapshot.
    pub total: i64,
    /// Accounts whose balance must never be negative.
    pub non_negative: BTreeSet<String>,
}

/// How many bad reads `check` writes out as examples.
const EXAMPLES_MAX: usize = 10;

pub fn check(ops: &[Completed], config: &BankConfig) -> CheckerResult {
    let (mut checked, mut wrong_total, mut negative, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut bad_reads = 0u64;
    let mut examples = Vec::new();
    for op in ops.iter().filter(|op| op.f == "read" && op.is_ok()) {
        checked += 1;
        let problems = match balances(&op.value_out) {
            None => {
                malformed += 1;
                vec!["malformed read".to_string()]
            }
            Some(balances) => {
                let mut problems = Vec::new();
                let total: i64 = balances.iter().map(|(_, b)| b).sum();
                if total != config.total {
                    wrong_total += 1;
                    problems.push(format!("total {total}, expected {}", config.total));
                }
                let overdrawn: Vec<&str> = balances
                    .iter()
                    .filter(|(account, b)| *b < 0 && config.non_negative.contains(account))
                    .map(|(account, _)| account.as_str())
                    .collect();
                if !overdrawn.is_empty() {
                    negative += 1;
                    problems.push(format!("negative balances: {}", overdrawn.join(", ")));
                }
                problems
            }
        };
        if !problems.is_empty() {
            bad_reads += 1;
            if examples.len() < EXAMPLES_MAX {
                examples.push(json!({
                    "invoke_index": op.invoke_index,
                    "problems": problems,
                    "balances": op.value_out,
                }));
            }
        }
    }
    let settled = settle(ops);
    // A problem wins; then no evidence (no ok read, or the run's transfers
    // never looked up) is unknown, said as such.
    let nothing_to_check = checked == 0 || settled.lookup_missing;
    let valid = if bad_reads + settled.problems.len() as u64 > 0 {
        Validity::Invalid
    } else if nothing_to_check {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let mut result = CheckerResult::new(valid).with_count("nothing_to_check", u64::from(nothing_to_check));
    for (name, n) in &settled.counts {
        result = result.with_count(name, *n);
    }
    result
        .with_detail(
            "transfer_problems",
            Value::Array(settled.problems.into_iter().take(EXAMPLES_MAX).collect()),
        )
        .with_count("reads_checked", checked)
        .with_count("bad_reads", bad_reads)
        .with_count("wrong_total", wrong_total)
        .with_count("negative", negative)
        .with_count("malformed", malformed)
        .with_detail("bad_reads", Value::Array(examples))
}

/// The history's transfers against what the ledger holds after the heal.
#[derive(Default)]
struct Settled {
    counts: BTreeMap<String, u64>,
    problems: Vec<Value>,
    /// Transfers with ids were sent, and no lookup after the heal answered.
    lookup_missing: bool,
}

fn settle(ops: &[Completed]) -> Settled {
    let mut s = Settled::default();
    let Some(lookup) = ops.iter().find(|op| op.f == "applied" && op.is_ok()) else {
        s.lookup_missing = ops.iter().any(|op| op.f == "transfer" && op.value_in.get("id").is_some());
        return s;
    };
    let Some(listed) = lookup.value_out.get("transfers").and_then(Value::as_array) else {
        s.problems.push(json!({"problem": "malformed lookup", "value": lookup.value_out}));
        return s;
    };
    let quad = |v: &Value| -> Option<(u64, [u64; 3])> {
        let a = v.as_array()?;
        Some((a.first()?.as_u64()?, [a.get(1)?.as_u64()?, a.get(2)?.as_u64()?, a.get(3)?.as_u64()?]))
    };
    let mut applied: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
    for v in listed {
        match quad(v) {
            Some((id, body)) => {
                applied.insert(id, body);
            }
            None => s.problems.push(json!({"problem": "malformed transfer in lookup", "value": v})),
        }
    }
    let mut bump = |name: &str| *s.counts.entry(name.to_string()).or_default() += 1;
    let mut problems = Vec::new();
    let mut invoked = BTreeSet::new();
    for op in ops.iter().filter(|op| op.f == "transfer") {
        let field = |k: &str| op.value_in.get(k).and_then(Value::as_u64);
        let (Some(id), Some(from), Some(to), Some(amount)) =
            (field("id"), field("from"), field("to"), field("amount"))
        else {
            problems.push(json!({"problem": "malformed transfer op", "invoke_index": op.invoke_index}));
            continue;
        };
        invoked.insert(id);
        let found = applied.get(&id);
        let problem = match (op.outcome, found) {
            (_, Some(body)) if *body != [from, to, amount] => Some("applied with another body"),
            (Outcome::Ok, None) => Some("acknowledged but not in the ledger"),
            (Outcome::Fail, Some(_)) => Some("failed but applied"),
            (Outcome::Info, Some(_)) => {
                bump("unknown_settled_applied");
                None
            }
            (Outcome::Info, None) => {
                bump("unknown_settled_not_applied");
                None
            }
            _ => None,
        };
        if let Some(problem) = problem {
            bump(&problem.replace(' ', "_"));
            problems.push(
                json!({"problem": problem, "invoke_index": op.invoke_index, "id": id, "ledger": found}),
            );
        }
    }
    for id in applied.keys().filter(|id| !invoked.contains(id)) {
        problems.push(json!({"problem": "in the ledger but never sent", "id": id}));
    }
    s.counts.insert("transfers_in_ledger".into(), applied.len() as u64);
    s.problems.extend(problems);
    s
}

/// Balances in a read, or None unless it is an object of integers.
fn balances(value: &Value) -> Option<Vec<(String, i64)>> {
    value.as_object()?.iter().map(|(account, b)| Some((account.clone(), b.as_i64()?))).collect()
}
