//! Bank workload checker: transfers move money between accounts, so every
//! successful read of all balances must add up to the same total, and some
//! accounts must never be overdrawn.
//!
//! A `read` completes ok with a map of account name to integer balance.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::history::Completed;
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
    let valid = match (checked, bad_reads) {
        (0, _) => Validity::Unknown,
        (_, 0) => Validity::Valid,
        _ => Validity::Invalid,
    };
    CheckerResult::new(valid)
        .with_count("reads_checked", checked)
        .with_count("bad_reads", bad_reads)
        .with_count("wrong_total", wrong_total)
        .with_count("negative", negative)
        .with_count("malformed", malformed)
        .with_detail("bad_reads", Value::Array(examples))
}

/// Balances in a read, or None unless it is an object of integers.
fn balances(value: &Value) -> Option<Vec<(String, i64)>> {
    value.as_object()?.iter().map(|(account, b)| Some((account.clone(), b.as_i64()?))).collect()
}
