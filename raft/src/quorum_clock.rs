//! When a quorum last acknowledged this node as leader, as an instant.
//!
//! openraft 0.9's metrics carry `millis_since_quorum_ack`, an age as of
//! their last flush: a leader whose Raft task stalls keeps reporting the
//! small age it had. Turned into an instant when each flush is seen, the
//! age keeps growing while nothing is flushed.
//!
//! The leader sends the age with every AppendEntries (`Payload`), so a
//! follower dates its data by the leader's quorum, not by the message: an
//! old leader cut off with a minority keeps reaching that minority (its
//! probes, `check_quorum`), but the age it sends grows, and their local
//! reads stop (`RaftNode::local_read_age`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::types::Raft;

#[derive(Clone, Default)]
pub struct QuorumClock(Arc<Mutex<Option<Instant>>>);

impl QuorumClock {
    /// How long since a quorum acknowledged this node as leader; `None`
    /// when it does not lead (or no quorum has answered it yet).
    pub fn age(&self) -> Option<Duration> {
        self.0.lock().expect("quorum clock lock").map(|at| at.elapsed())
    }

    fn set(&self, at: Option<Instant>) {
        *self.0.lock().expect("quorum clock lock") = at;
    }
}

/// Follows the metrics until the Raft instance shuts down.
pub fn spawn(raft: Raft, clock: QuorumClock) {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                let acked = m.millis_since_quorum_ack.filter(|_| m.state == ServerState::Leader);
                clock.set(acked.and_then(|ms| Instant::now().checked_sub(Duration::from_millis(ms))));
            }
            if metrics.changed().await.is_err() {
                clock.set(None);
                return;
            }
        }
    });
}
