//! The Wing & Gong / Lowe depth-first search, memoised on (linearized set,
//! model state): two paths reaching the same configuration have the same
//! future, so each configuration is explored once.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::Model;

/// A parsed op. `end` is the completion index of an ok op; info ops have none.
pub(crate) struct Entry<M: Model> {
    pub input: M::Input,
    pub output: Option<M::Output>,
    pub invoke: u64,
    pub end: Option<u64>,
}

/// An entry as one search sees it.
pub(crate) struct Slot<'a, M: Model> {
    input: M::Input,
    output: Option<&'a M::Output>,
    invoke: u64,
    /// Completion index, or u64::MAX for ops that may land at any later time.
    end: u64,
    /// Whether the op must be linearized; others may be, before their `end`.
    required: bool,
    /// An optional slot with an equal input that starts and ends before this
    /// one. Taking that twin instead leaves a superset of choices, so this
    /// slot waits while its twin is available.
    twin: Option<usize>,
}

/// Which part of a history a search looks at. Entries invoked after `cut` are
/// left out and those completing after it become pending, as a prefix of the
/// history would show them. With a `window_start`, the search is about the
/// entries invoked from there on: entries that completed before it are left
/// out (their effect belongs in the start state), and earlier entries still
/// running at it become optional with unknown output, but keep their
/// deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub cut: u64,
    pub window_start: Option<u64>,
}

impl View {
    pub const WHOLE: View = View { cut: u64::MAX, window_start: None };
}

/// Entries must be sorted by invocation.
pub(crate) fn slots<'a, M: Model>(model: &M, entries: &'a [Entry<M>], view: View) -> Vec<Slot<'a, M>> {
    let start = view.window_start.unwrap_or(0);
    let end = |e: &Entry<M>| e.end.filter(|&end| end <= view.cut);
    let entries: Vec<&Entry<M>> =
        entries.iter().filter(|e| e.invoke <= view.cut && end(e).is_none_or(|end| end > start)).collect();
    let known: Vec<bool> = entries.iter().map(|e| e.invoke >= start && end(e).is_some()).collect();
    let mut inputs: Vec<M::Input> = entries.iter().map(|e| e.input.clone()).collect();
    let outputs: Vec<&M::Output> =
        entries.iter().zip(&known).filter(|(_, k)| **k).filter_map(|(e, _)| e.output.as_ref()).collect();
    model.merge_indistinguishable(&mut inputs, &outputs);
    let mut slots: Vec<Slot<'a, M>> = entries
        .iter()
        .zip(known)
        .zip(inputs)
        .map(|((e, known), input)| Slot {
            input,
            output: if known { e.output.as_ref() } else { None },
            invoke: e.invoke,
            end: end(e).unwrap_or(u64::MAX),
            required: known,
            twin: None,
        })
        .collect();
    let mut classes: HashMap<&M::Input, Vec<usize>> = HashMap::new();
    for (i, slot) in slots.iter().enumerate().filter(|(_, s)| !s.required) {
        classes.entry(&slot.input).or_default().push(i);
    }
    let mut twins = Vec::new();
    for mut class in classes.into_values() {
        class.sort_by_key(|&i| (slots[i].end, slots[i].invoke));
        // Only a twin that also started no later leaves a superset of choices.
        let earlier = |pair: &&[usize]| slots[pair[0]].invoke < slots[pair[1]].invoke;
        twins.extend(class.windows(2).filter(earlier).map(|pair| (pair[1], pair[0])));
    }
    for (i, twin) in twins {
        slots[i].twin = Some(twin);
    }
    slots
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Linearizable,
    NotLinearizable,
    /// Out of time or memory.
    GaveUp,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
}

struct Frame<S> {
    /// Linearized ops, plus optional ops that can no longer be: whether such
    /// an op was skipped or taken makes no difference to the future, and
    /// marking it keeps those two paths one memo entry.
    done: Bitset,
    state: S,
    done_required: usize,
    /// Latest invocation among linearized ops: an op that ended before it
    /// cannot come after it.
    latest: u64,
    /// Next slot to try as the op linearized after this configuration.
    cursor: usize,
    /// Smallest end among required ops not yet linearized: an op invoked
    /// after it cannot go next, since that op precedes it in real time.
    horizon: u64,
    /// Every slot before this one is done.
    first_undone: usize,
}

impl<S> Frame<S> {
    /// `from`: a slot before which every slot is done (the parent's
    /// `first_undone`). The scans stay within the ops running at the
    /// frontier, not the whole history: slots are sorted by invocation and
    /// an op ends after it starts, so none invoked after the horizon can
    /// lower it.
    fn new<M: Model>(
        slots: &[Slot<'_, M>],
        done: Bitset,
        state: S,
        done_required: usize,
        latest: u64,
        from: usize,
    ) -> Self {
        let mut first_undone = from;
        while first_undone < slots.len() && done.contains(first_undone) {
            first_undone += 1;
        }
        let mut horizon = u64::MAX;
        let mut i = first_undone;
        while i < slots.len() && slots[i].invoke <= horizon {
            if slots[i].required && !done.contains(i) {
                horizon = horizon.min(slots[i].end);
            }
            i += 1;
        }
        Frame { done, state, done_required, latest, cursor: first_undone, horizon, first_undone }
    }
}

/// How many configurations to expand between clock reads.
const CLOCK_EVERY: u64 = 1024;

/// Memo size at which a search gives up, so a generous time budget cannot
/// exhaust memory (each entry holds a bitset of the history).
pub(crate) const CONFIGS_MAX: usize = 4_000_000;

/// The model's start states for the ops a window view shows.
pub(crate) fn start_states<M: Model>(model: &M, slots: &[Slot<'_, M>]) -> Option<Vec<M::State>> {
    let ops: Vec<(&M::Input, Option<&M::Output>)> = slots.iter().map(|s| (&s.input, s.output)).collect();
    model.start_states(&ops)
}

/// Whether the slots can be linearized from any of `starts`.
pub(crate) fn search<M: Model>(
    model: &M,
    slots: &[Slot<'_, M>],
    starts: &[M::State],
    deadline: Instant,
) -> Verdict {
    let required_total = slots.iter().filter(|s| s.required).count();
    if required_total == 0 {
        return Verdict::Linearizable;
    }
    // Shared by all starts: whether a configuration can finish does not
    // depend on how it was reached.
    let mut seen: HashSet<(Bitset, M::State)> = HashSet::new();
    let mut stack = Vec::new();
    let mut starts = starts.iter();
    let mut expanded: u64 = 0;
    loop {
        if stack.is_empty() {
            let Some(start) = starts.next() else { break };
            if seen.insert((Bitset::new(slots.len()), start.clone())) {
                stack.push(Frame::new(slots, Bitset::new(slots.len()), start.clone(), 0, 0, 0));
            }
            continue;
        }
        let frame = stack.last_mut().expect("not empty");
        expanded += 1;
        if expanded.is_multiple_of(CLOCK_EVERY) && Instant::now() >= deadline || seen.len() >= CONFIGS_MAX {
            return Verdict::GaveUp;
        }
        let mut child = None;
        while frame.cursor < slots.len() && slots[frame.cursor].invoke < frame.horizon {
            let i = frame.cursor;
            frame.cursor += 1;
            let slot = &slots[i];
            let twin_waits = |t: usize| !frame.done.contains(t) && slots[t].invoke < frame.horizon;
            if frame.done.contains(i) || slot.twin.is_some_and(twin_waits) {
                continue;
            }
            let Some(next) = model.step(&frame.state, &slot.input, slot.output) else { continue };
            // An optional op that changes nothing (an info read) can only
            // shrink the choices left, so taking it is never needed.
            if !slot.required && next == frame.state {
                continue;
            }
            let done_required = frame.done_required + usize::from(slot.required);
            if done_required == required_total {
                return Verdict::Linearizable;
            }
            let latest = frame.latest.max(slot.invoke);
            let mut done = frame.done.clone();
            done.insert(i);
            if latest > frame.latest {
                // Only ops invoked by `latest` can have ended by it.
                for (j, other) in slots.iter().enumerate().skip(frame.first_undone) {
                    if other.invoke > latest {
                        break;
                    }
                    if !other.required && other.end <= latest {
                        done.insert(j);
                    }
                }
            }
            if seen.insert((done.clone(), next.clone())) {
                child = Some(Frame::new(slots, done, next, done_required, latest, frame.first_undone));
                break;
            }
        }
        match child {
            Some(child) => stack.push(child),
            None => {
                stack.pop();
            }
        }
    }
    Verdict::NotLinearizable
}
