//! Keeps a data key alive while a snapshot image sealed with it is being
//! written, sent or received. Image files are sealed frame by frame with
//! whichever key is active; the re-encryption pass re-seals the files it
//! finds in the snapshot directory, then retires old keys. An image still
//! being built, streamed from an open file, or received into an unnamed file
//! is out of its reach: retiring a key under it would leave frames no key
//! opens. So such work holds a `Use`, and the pass's re-seal-and-retire step
//! waits until none is held.
//!
//! Uses do not wait for a pass that is only waiting (they may nest across
//! threads: a receive holds one while its install takes another), so a
//! stream of snapshots can delay a retirement but never deadlock with it.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
pub struct SnapshotGate {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    uses: usize,
    retiring: bool,
}

/// Image work in progress: no key is retired while it lives.
pub struct Use {
    gate: Arc<SnapshotGate>,
}

/// The re-seal-and-retire step: no image work starts while it lives.
pub struct Retiring<'a> {
    gate: &'a SnapshotGate,
}

impl SnapshotGate {
    /// Blocks only while a retirement is running (not while one waits).
    pub fn enter(self: &Arc<Self>) -> Use {
        let mut s = self.state.lock().expect("snapshot gate");
        while s.retiring {
            s = self.changed.wait(s).expect("snapshot gate");
        }
        s.uses += 1;
        Use { gate: self.clone() }
    }

    /// Blocks until no image work is in progress.
    pub fn retire(&self) -> Retiring<'_> {
        let mut s = self.state.lock().expect("snapshot gate");
        while s.uses > 0 || s.retiring {
            s = self.changed.wait(s).expect("snapshot gate");
        }
        s.retiring = true;
        Retiring { gate: self }
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().expect("snapshot gate");
        s.uses -= 1;
        if s.uses == 0 {
            self.gate.changed.notify_all();
        }
    }
}

impl Drop for Retiring<'_> {
    fn drop(&mut self) {
        self.gate.state.lock().expect("snapshot gate").retiring = false;
        self.gate.changed.notify_all();
    }
}
