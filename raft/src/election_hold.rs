//! Pauses this node's own elections while it has evidence that openraft
//! cannot see of a live leader: a snapshot the leader is streaming to it.
//! openraft 0.9 hears from the leader only when the whole image has arrived
//! and `install_full_snapshot` runs, and the leader's heartbeats to this node
//! wait behind the stream; without the hold a large image outlasts the
//! election timeout and the receiver campaigns, deposing a healthy leader.
//! Holds nest: elections resume when the last one is dropped. The election
//! timer (`pre_vote`) looks at them; voting for others is never paused.

use std::sync::{Arc, Mutex};

pub struct ElectionHolds {
    held: Mutex<usize>,
}

/// Elections stay off while this lives.
pub struct Hold {
    holds: Arc<ElectionHolds>,
}

impl ElectionHolds {
    pub fn new() -> Arc<Self> {
        Arc::new(ElectionHolds { held: Mutex::new(0) })
    }

    pub fn hold(self: &Arc<Self>) -> Hold {
        *self.held.lock().expect("election holds lock") += 1;
        Hold { holds: self.clone() }
    }

    /// Whether any hold is alive.
    pub fn held(&self) -> bool {
        *self.held.lock().expect("election holds lock") > 0
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        *self.holds.held.lock().expect("election holds lock") -= 1;
    }
}
