//! Cross-checks the pruned, memoised search and the counterexample shrinking
//! against a brute-force reading of the definitions on small histories.

mod common;

use common::seen;
use common::sim::{simulated_history, Lcg};
use jepsen::history::{Completed, Outcome};
use jepsen::linear::{check, LinResult, Model, Register, RegisterInput, RegisterOutput, RegisterState};
use serde_json::json;

struct BruteOp {
    input: RegisterInput,
    output: Option<RegisterOutput>,
    invoke: u64,
    end: u64,
    required: bool,
}

/// Some subset holding every required op has an order that respects real
/// time and the model.
fn linearizable(ops: &[BruteOp], start: &RegisterState) -> bool {
    let optional: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].required).collect();
    (0..1u32 << optional.len()).any(|mask| {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                ops[i].required || optional.iter().position(|&o| o == i).is_some_and(|b| mask >> b & 1 == 1)
            })
            .collect();
        orders(ops, &chosen, &mut vec![false; ops.len()], start)
    })
}

fn orders(ops: &[BruteOp], chosen: &[usize], used: &mut [bool], state: &RegisterState) -> bool {
    if chosen.iter().all(|&i| used[i]) {
        return true;
    }
    for &i in chosen {
        let preceded = chosen.iter().any(|&j| !used[j] && ops[j].end < ops[i].invoke);
        if used[i] || preceded {
            continue;
        }
        if let Some(next) = Register.step(state, &ops[i].input, ops[i].output.as_ref()) {
            used[i] = true;
            if orders(ops, chosen, used, &next) {
                return true;
            }
            used[i] = false;
        }
    }
    false
}

/// The ops a window `[start, end]` stands for: ops invoked in it, with the
/// outputs of those completed by `end`, plus earlier ops still running at
/// `start` as optional with unknown output.
fn window_ops(history: &[Completed], start: u64, end: u64) -> Vec<BruteOp> {
    let mut ops = Vec::new();
    for op in history.iter().filter(|op| op.outcome != Outcome::Fail && op.invoke_index <= end) {
        let input = Register.parse_input(&op.f, &op.value_in).unwrap();
        let done = op.complete_index.filter(|&c| op.is_ok() && c <= end);
        let required = done.is_some() && op.invoke_index >= start;
        if op.invoke_index < start && done.is_some_and(|c| c < start) {
            continue;
        }
        let output =
            if required { Some(Register.parse_output(&input, &op.value_out).unwrap()) } else { None };
        ops.push(BruteOp { input, output, invoke: op.invoke_index, end: done.unwrap_or(u64::MAX), required });
    }
    ops
}

/// Every state a small history could need to start from.
fn all_states(history: &[Completed]) -> Vec<RegisterState> {
    let mut values = vec![None, Some("zz".to_string())];
    for op in history {
        for v in [&op.value_in["value"], &op.value_out["value"]] {
            values.extend(v.as_str().map(|s| Some(s.to_string())));
        }
    }
    let versions = 0..=history.len() as u64 + 4;
    versions
        .flat_map(|version| values.iter().map(move |value| RegisterState { version, value: value.clone() }))
        .collect()
}

fn corrupt(history: &mut [Completed], rng: &mut Lcg) {
    let oks: Vec<usize> = (0..history.len()).filter(|&i| history[i].is_ok()).collect();
    let Some(&i) = oks.get(rng.below(oks.len().max(1) as u64) as usize) else { return };
    let op = &mut history[i];
    let version = op.value_out["version"].as_u64().unwrap_or(0);
    let shifted = if rng.below(2) == 0 { version + 1 } else { version.saturating_sub(1) };
    op.value_out = match (op.f.as_str(), rng.below(2)) {
        ("read", 0) => seen(shifted, op.value_out["value"].as_str()),
        ("read", _) => seen(version.max(1), Some("zz")),
        _ => json!({ "version": shifted }),
    };
}

#[test]
fn search_and_shrinking_agree_with_brute_force() {
    let (mut valid, mut invalid, mut shrunk) = (0, 0, 0);
    for seed in 0..1500 {
        let mut rng = Lcg(seed ^ 0x5eed);
        let mut history = simulated_history(seed, 9, 4);
        if rng.below(3) != 0 {
            corrupt(&mut history, &mut rng);
        }
        let init = RegisterState::default();
        let expected = linearizable(&window_ops(&history, 0, u64::MAX), &init);
        let w = match check(&Register, &history, 10_000) {
            LinResult::Valid => {
                assert!(expected, "seed {seed}: brute force finds no linearization");
                valid += 1;
                continue;
            }
            LinResult::Invalid { counterexample } => counterexample,
            other => panic!("seed {seed}: {other:?}"),
        };
        assert!(!expected, "seed {seed}: brute force found a linearization");
        invalid += 1;
        let (start, end) = (w.start_index, w.end_index);
        let first = history.iter().filter(|op| op.outcome != Outcome::Fail).map(|op| op.invoke_index).min();
        let states = all_states(&history);
        let fails_everywhere =
            |s: u64| states.iter().all(|st| !linearizable(&window_ops(&history, s, end), st));
        // The window is a genuine counterexample...
        if Some(start) == first {
            assert!(!linearizable(&window_ops(&history, 0, end), &init), "seed {seed}: prefix");
        } else {
            assert!(fails_everywhere(start), "seed {seed}: window {start}..{end} has a linearization");
            shrunk += 1;
        }
        // ...that ends as early and starts as late as possible.
        let ends = history.iter().filter(|op| op.is_ok()).filter_map(|op| op.complete_index);
        if let Some(earlier) = ends.filter(|&c| c < end).max() {
            assert!(linearizable(&window_ops(&history, 0, earlier), &init), "seed {seed}: ends too late");
        }
        let later = history.iter().map(|op| op.invoke_index).filter(|&i| i > start && i <= end).min();
        if let Some(later) = later {
            assert!(!fails_everywhere(later), "seed {seed}: starts too early");
        }
    }
    // The generator must exercise both outcomes and real shrinking.
    assert!(valid > 50 && invalid > 50 && shrunk > 20, "{valid} valid, {invalid} invalid, {shrunk} shrunk");
}
