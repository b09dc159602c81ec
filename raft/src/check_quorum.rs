//! CheckQuorum for openraft 0.9 leaders.
//!
//! A leader that can send but not receive (a one-way partition, a broken
//! NIC queue) never learns it lost its quorum: openraft 0.9 has no step-down,
//! and its AppendEntries keep arriving at the followers and renewing their
//! leader lease, so they never elect anyone else. Nothing commits until the
//! network heals. Found by the consistency harness (`jepsen/`, one-way
//! partition of the leader).
//!
//! The watchdog here makes such a leader fall silent: once no quorum has
//! acknowledged it for an election timeout, the peer network
//! stops sending its AppendEntries and snapshots, the followers' leases run
//! out, and they elect a new leader. Every few leases the silence lifts for
//! a couple of heartbeats to probe: if a quorum answers, the leader carries
//! on; if a new leader has been elected, its higher term demotes this node
//! and the silence ends. Silence never affects safety: it only withholds
//! messages, which Raft tolerates by design.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::types::Raft;

/// Shared between the watchdog and the peer network.
#[derive(Clone, Default)]
pub struct Silence(Arc<AtomicBool>);

impl Silence {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

pub struct Timers {
    pub heartbeat: Duration,
    /// Silent after this long without a quorum's answer: the shortest
    /// election timeout, after which followers would have given up on a
    /// leader that stopped talking (etcd's CheckQuorum uses the same).
    pub quorum_timeout: Duration,
    /// Followers refuse votes for this long after hearing from the leader.
    pub follower_lease: Duration,
}

/// Runs until the Raft instance shuts down.
pub fn spawn(raft: Raft, silence: Silence, timers: Timers) {
    tokio::spawn(async move {
        // Long enough for openraft's replication back-off (500 ms) to pass.
        let probe_every = timers.follower_lease * 4;
        let probe_for = (timers.follower_lease / 2).max(timers.heartbeat * 3);
        let mut leader_since: Option<Instant> = None;
        let mut silent_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(timers.heartbeat).await;
            let (leads, ack_ms, voters) = {
                let m = raft.metrics();
                let m = m.borrow();
                if m.running_state.is_err() {
                    return;
                }
                let voters = m.membership_config.membership().voter_ids().count();
                (m.state == ServerState::Leader, m.millis_since_quorum_ack, voters)
            };
            if !leads || voters < 2 {
                if silence.is_on() {
                    tracing::info!("no longer the leader; peer messages resume");
                }
                silence.set(false);
                (leader_since, silent_since) = (None, None);
                continue;
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            let timeout_ms = timers.quorum_timeout.as_millis() as u64;
            // Right after an election no quorum has answered yet.
            let stale = ack_ms.map_or(since.elapsed() > timers.quorum_timeout, |ms| ms > timeout_ms);
            match (stale, silent_since) {
                (false, Some(_)) => {
                    tracing::info!("a quorum answers again; this leader carries on");
                    silence.set(false);
                    silent_since = None;
                }
                (false, None) => {}
                (true, None) => {
                    tracing::warn!(
                        ack_ms,
                        "leader: no quorum has answered within the lease; falling silent so the others elect a new leader"
                    );
                    metrics::counter!("strongbox_leader_silenced_total").increment(1);
                    silence.set(true);
                    silent_since = Some(Instant::now());
                }
                (true, Some(at)) => {
                    // Probe at the end of each period: heartbeats go out for
                    // a moment, after the followers had a chance to elect.
                    let phase = at.elapsed().as_millis() % probe_every.as_millis();
                    silence.set(phase < (probe_every - probe_for).as_millis());
                }
            }
        }
    });
}
