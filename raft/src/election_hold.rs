//! Pauses this node's own elections while it has evidence that openraft
//! cannot see of a live leader: a snapshot the leader is streaming to it.
//! openraft 0.9 hears from the leader only when the whole image has arrived
//! and `install_full_snapshot` runs, and the leader's heartbeats to this node
//! wait behind the stream; without the hold a large image outlasts the
//! election timeout and the receiver campaigns, deposing a healthy leader
//! (openraft 0.9 has no pre-vote). Holds nest: elections resume when the
//! last one is dropped. Voting for others is never paused.

use std::sync::{Arc, Mutex};

use crate::types::Raft;

pub struct ElectionHolds {
    raft: Raft,
    held: Mutex<usize>,
}

/// Elections stay off while this lives.
pub struct Hold {
    holds: Arc<ElectionHolds>,
}

impl ElectionHolds {
    pub fn new(raft: Raft) -> Arc<Self> {
        Arc::new(ElectionHolds { raft, held: Mutex::new(0) })
    }

    pub fn hold(self: &Arc<Self>) -> Hold {
        let mut held = self.held.lock().expect("election holds lock");
        if *held == 0 {
            self.raft.runtime_config().elect(false);
        }
        *held += 1;
        Hold { holds: self.clone() }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.holds.held.lock().expect("election holds lock");
        *held -= 1;
        if *held == 0 {
            self.holds.raft.runtime_config().elect(true);
        }
    }
}
