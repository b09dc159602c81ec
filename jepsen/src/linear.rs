//! Linearizability checking (Wing & Gong / Lowe search with memoisation),
//! per independent key, under a time budget, with counterexample shrinking.

mod bank;
mod register;
mod search;

use std::collections::BTreeMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

pub use bank::{Bank, BankInput, BankOutput};
pub use register::{key_of, Register, RegisterInput, RegisterOutput, RegisterState};

use crate::history::{Completed, Outcome};
use crate::results::{CheckerResult, Validity};
use search::{search, slots, start_states, Entry, Slot, Verdict, View, CONFIGS_MAX};

/// A sequential specification of one object.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input: Clone + Eq + Hash;
    type Output;

    fn init(&self) -> Self::State;

    /// Reads an invocation's value (`f` names the operation).
    fn parse_input(&self, f: &str, value: &Value) -> Result<Self::Input, String>;

    /// Reads an ok completion's value.
    fn parse_output(&self, input: &Self::Input, value: &Value) -> Result<Self::Output, String>;

    /// The state after applying `input` when it returned `output`, or None if
    /// that output is impossible from `state`. `output` is None when unknown
    /// (info ops): then any outcome consistent with the input is allowed.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Rewrites inputs that no output in `outputs` (all the outputs one search
    /// checks) could tell apart into equal inputs. The search then treats
    /// unknown-outcome ops with equal inputs as interchangeable and tries only
    /// one of them, which keeps many info ops from costing 2^n. Default: none.
    fn merge_indistinguishable(&self, _inputs: &mut [Self::Input], _outputs: &[&Self::Output]) {}

    /// States the object may be in before `ops`, a window of the history
    /// whose past is unknown (`None` outputs are unknown): enough of them that
    /// if the window can be linearized from any state at all, it can from one
    /// of these. None when the model cannot say; counterexamples then always
    /// start at the beginning of the history.
    fn start_states(&self, _ops: &[(&Self::Input, Option<&Self::Output>)]) -> Option<Vec<Self::State>> {
        None
    }
}

/// A contiguous stretch of one key's history that cannot be linearized from
/// any starting state: the ops invoked in `[start_index, end_index]`. Earlier
/// ops still running at `start_index` may or may not have taken effect; ops
/// still running at `end_index` count as pending. (When the model offers no
/// `start_states`, the window starts at the key's first op and is checked
/// from the initial state.)
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    pub start_index: u64,
    pub end_index: u64,
    pub ops: Vec<Completed>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LinResult {
    Valid,
    Invalid { counterexample: Window },
    Unknown { reason: String },
}

impl LinResult {
    pub fn validity(&self) -> Validity {
        match self {
            LinResult::Valid => Validity::Valid,
            LinResult::Invalid { .. } => Validity::Invalid,
            LinResult::Unknown { .. } => Validity::Unknown,
        }
    }
}

/// How an unknown verdict that is not a spent budget starts.
pub const MALFORMED: &str = "malformed";
/// How an unknown verdict for a spent budget starts.
pub const GAVE_UP: &str = "gave up";

/// Checks one object's ops. The search gets `time_budget_ms`; shrinking a
/// counterexample gets at most as much again.
pub fn check<M: Model>(model: &M, ops: &[Completed], time_budget_ms: u64) -> LinResult {
    let mut ops: Vec<&Completed> = ops.iter().filter(|op| op.outcome != Outcome::Fail).collect();
    ops.sort_by_key(|op| op.invoke_index);
    let entries = match parse(model, &ops) {
        Ok(entries) => entries,
        // An op the model cannot read is evidence of a broken client or a
        // corrupt answer, not a lack of budget: reported as such.
        Err(reason) => return LinResult::Unknown { reason: format!("{MALFORMED}: {reason}") },
    };
    let budget = Duration::from_millis(time_budget_ms);
    match search(model, &slots(model, &entries, View::WHOLE), &[model.init()], Instant::now() + budget) {
        Verdict::Linearizable => LinResult::Valid,
        Verdict::GaveUp => LinResult::Unknown {
            reason: format!("{GAVE_UP} after {time_budget_ms} ms or {CONFIGS_MAX} configurations"),
        },
        Verdict::NotLinearizable => {
            let (start_index, end_index) = shrink(model, &entries, budget);
            let ops = ops.iter().filter(|op| (start_index..=end_index).contains(&op.invoke_index));
            LinResult::Invalid {
                counterexample: Window { start_index, end_index, ops: ops.cloned().cloned().collect() },
            }
        }
    }
}

/// Splits ops by `key_of` (None: not an op of this checker) and checks each
/// key on its own, which is sound because keys are independent objects.
pub fn check_by_key<M: Model>(
    model: &M,
    ops: &[Completed],
    key_of: impl Fn(&Completed) -> Option<String>,
    time_budget_ms: u64,
) -> BTreeMap<String, LinResult> {
    let mut by_key: BTreeMap<String, Vec<Completed>> = BTreeMap::new();
    for op in ops {
        if let Some(key) = key_of(op) {
            by_key.entry(key).or_default().push(op.clone());
        }
    }
    by_key.into_iter().map(|(key, ops)| (key, check(model, &ops, time_budget_ms))).collect()
}

/// How many invalid keys' counterexamples `summarize` writes out.
const EXAMPLES_MAX: usize = 8;

pub fn summarize(results: &BTreeMap<String, LinResult>) -> CheckerResult {
    let (mut invalid, mut unknown) = (serde_json::Map::new(), serde_json::Map::new());
    let mut counts = [0u64; 4];
    for (key, result) in results {
        match result {
            LinResult::Valid => counts[0] += 1,
            LinResult::Invalid { counterexample } => {
                counts[1] += 1;
                if invalid.len() < EXAMPLES_MAX {
                    invalid.insert(key.clone(), json!(counterexample));
                }
            }
            LinResult::Unknown { reason } => {
                counts[2] += 1;
                if reason.starts_with(MALFORMED) {
                    counts[3] += 1;
                }
                unknown.insert(key.clone(), json!(reason));
            }
        }
    }
    let valid = if results.is_empty() {
        Validity::Unknown
    } else if counts[3] > 0 {
        Validity::Invalid
    } else {
        Validity::all(results.values().map(LinResult::validity))
    };
    CheckerResult::new(valid)
        .with_count("keys", results.len() as u64)
        .with_count("valid_keys", counts[0])
        .with_count("invalid_keys", counts[1])
        .with_count("unknown_keys", counts[2])
        .with_count("malformed_keys", counts[3])
        .with_count("gave_up_keys", counts[2] - counts[3])
        .with_detail("counterexamples", Value::Object(invalid))
        .with_detail("unknown", Value::Object(unknown))
}

fn parse<M: Model>(model: &M, ops: &[&Completed]) -> Result<Vec<Entry<M>>, String> {
    ops.iter()
        .map(|op| {
            let bad = |e: String| format!("op invoked at index {}: {e}", op.invoke_index);
            let input = model.parse_input(&op.f, &op.value_in).map_err(bad)?;
            let (output, end) = match op.outcome {
                Outcome::Ok => {
                    (Some(model.parse_output(&input, &op.value_out).map_err(bad)?), op.complete_index)
                }
                _ => (None, None),
            };
            Ok(Entry { input, output, invoke: op.invoke_index, end })
        })
        .collect()
}

/// Each shrinking search gets this fraction of the budget, so one hard
/// window cannot starve the others.
const SHRINK_SLICES: u32 = 8;

/// Finds a short failing window `[start, end]` of a non-linearizable history.
/// Both steps are binary searches over monotone properties: a failing prefix
/// stays failing when extended, and a window that fails from every start
/// state still does when its start moves earlier (anything a linearization of
/// the longer window did before the shorter one's start can be folded into
/// the start state). A search that gives up counts as "not failing",
/// so bounds only move to windows proven to fail: the result is always a
/// genuine counterexample, if not always the shortest.
fn shrink<M: Model>(model: &M, entries: &[Entry<M>], budget: Duration) -> (u64, u64) {
    let overall = Instant::now() + budget;
    let fails = |slots: &[Slot<'_, M>], starts: &[M::State]| {
        let deadline = overall.min(Instant::now() + budget / SHRINK_SLICES);
        search(model, slots, starts, deadline) == Verdict::NotLinearizable
    };
    // Nothing is learnt between ok completions, so only they can end the
    // window; the last one fails, as only info ops can follow it.
    let mut ends: Vec<u64> = entries.iter().filter_map(|e| e.end).collect();
    ends.sort_unstable();
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&slots(model, entries, View { cut: ends[mid], window_start: None }), &[model.init()]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let end = ends[hi];
    let starts: Vec<u64> = entries.iter().map(|e| e.invoke).filter(|&i| i <= end).collect();
    // Invariant: the window from starts[lo] fails from every state (lo = -1:
    // only the whole prefix is known to fail, from the initial state), and
    // the one from starts[hi] is not known to.
    let (mut lo, mut hi) = (-1, starts.len() as isize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let window = slots(model, entries, View { cut: end, window_start: Some(starts[mid as usize]) });
        if start_states(model, &window).is_some_and(|states| fails(&window, &states)) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (starts[lo.max(0) as usize], end)
}
