//! Pre-vote (Raft thesis §9.6, etcd's `--pre-vote`) for openraft 0.9,
//! which has none.
//!
//! Without it, a voter that stops hearing from the leader — paused, or cut
//! off by a partition — campaigns on its own: it raises its term, loses,
//! raises it again. When it hears from the leader again, its answer carries
//! the higher term and deposes a healthy leader: an election, and writes
//! stall for it, every time a node comes back.
//!
//! So openraft's own election timer is off (`enable_elect: false`) and this
//! module runs the timer instead: a voter that has heard from no leader for
//! the leader lease plus a random part of the election timeout's spread
//! first asks the other voters whether they would vote for it, without
//! changing any term. Only when a majority (itself included) says yes does
//! it start a real election. A voter says yes when it has not heard from a
//! leader for the lease itself (a leader it still hears is alive) and the
//! candidate's log is at least as up to date as its own. A node that leads
//! with a quorum that answered within the lease says no.
//!
//! Elections on purpose (leader transfer, `TriggerElection`) bypass this.
//! Safety never depends on it: a real vote still follows every pre-vote.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::election_hold::ElectionHolds;
use crate::network::PeerChannels;
use crate::types::{LogId, NodeId, Raft};

/// What a voter asks the others before it campaigns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log: Option<LogId>,
}

/// When this node last heard from a live leader (or was one, or granted a
/// real vote, which restarts the election timer in Raft). `None` until the
/// first time: a node that has heard of no leader since it started knows
/// of none to protect.
#[derive(Debug)]
pub struct LeaderContact {
    started: Instant,
    at: Mutex<Option<Instant>>,
    /// When a leader's AppendEntries last matched this node's log: what a
    /// local read's staleness is measured by (a granted vote or a snapshot
    /// frame restarts the election timer but says nothing of this node's
    /// data being current).
    in_step_at: Mutex<Option<Instant>>,
}

impl LeaderContact {
    pub fn new() -> Arc<Self> {
        Arc::new(LeaderContact {
            started: Instant::now(),
            at: Mutex::new(None),
            in_step_at: Mutex::new(None),
        })
    }

    pub fn touch(&self) {
        *self.at.lock().expect("leader contact lock") = Some(Instant::now());
    }

    /// A leader's AppendEntries matched this node's log; a quorum had
    /// acknowledged that leader `leader_quorum_age` before it sent it
    /// (`None`: none had; then only the election timer starts over).
    pub fn touch_in_step(&self, leader_quorum_age: Option<Duration>) {
        let now = Instant::now();
        *self.at.lock().expect("leader contact lock") = Some(now);
        let Some(at) = leader_quorum_age.and_then(|age| now.checked_sub(age)) else { return };
        let mut in_step = self.in_step_at.lock().expect("leader contact lock");
        // Never backwards: messages of one leader may carry older acks.
        if in_step.is_none_or(|t| t < at) {
            *in_step = Some(at);
        }
    }

    /// How long since the last contact; `None` if there was none yet.
    pub fn since(&self) -> Option<Duration> {
        self.at.lock().expect("leader contact lock").map(|at| at.elapsed())
    }

    /// How long since a leader's AppendEntries last matched this node's
    /// log; `None` if none has since this process started.
    pub fn since_in_step(&self) -> Option<Duration> {
        self.in_step_at.lock().expect("leader contact lock").map(|at| at.elapsed())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub election_min: Duration,
    pub election_max: Duration,
}

impl Timeouts {
    /// A voter that heard from a leader more recently than this refuses a
    /// pre-vote. openraft's followers refuse real votes for as long (its
    /// leader lease is the longest election timeout), so a pre-vote won is
    /// a real vote that can be won.
    fn leader_alive(&self) -> Duration {
        self.election_max
    }

    /// A fresh random part of the election timeout's spread.
    fn jitter(&self) -> Duration {
        let spread = self.election_max.saturating_sub(self.election_min).as_millis() as u64;
        let mut h = RandomState::new().build_hasher();
        h.write_u64(Instant::now().elapsed().as_nanos() as u64);
        Duration::from_millis(if spread == 0 { 0 } else { h.finish() % (spread + 1) })
    }

    /// How long a voter has waited without a leader and how long it must:
    /// after a leader, its lease (openraft's own timer waited lease +
    /// timeout); after this node's own attempt, or with no leader heard of
    /// yet (a cluster forming), the shortest election timeout. Plus jitter.
    /// `since_contact`: since this node last heard a leader (or streamed
    /// one's snapshot); `since_start`: since the node started.
    fn wait(
        &self,
        since_contact: Option<Duration>,
        since_start: Duration,
        last_attempt: Option<Instant>,
        jitter: Duration,
    ) -> (Duration, Duration) {
        let attempt = last_attempt.map(|a| a.elapsed());
        let (waited, base) = match (since_contact, attempt) {
            (Some(c), Some(a)) if a < c => (a, self.election_min),
            (Some(c), _) => (c, self.leader_alive()),
            (None, Some(a)) => (a, self.election_min),
            (None, None) => (since_start, self.election_min),
        };
        (waited, base + jitter)
    }
}

/// Whether this node leads with a quorum that answered within the leader
/// lease (the shortest election timeout): the one test behind both vetoes a
/// leader has, of pre-votes here and of real votes in
/// `RaftNode::refuse_vote_while_leading`. A leader that lost its quorum
/// (openraft 0.9 leaders never step down by themselves) must veto neither:
/// it would hold the cluster leaderless until its next check_quorum probe.
pub fn leads_with_quorum(raft: &Raft, timeouts: &Timeouts) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader
        && m.millis_since_quorum_ack.is_some_and(|ms| u128::from(ms) < timeouts.election_min.as_millis())
}

/// Whether the nodes in `granted` are a majority of every configuration of
/// `joint` (one outside a membership change, two during one), as the real
/// election will need.
fn majority_in_each(joint: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    joint.iter().all(|config| config.iter().filter(|id| granted.contains(id)).count() > config.len() / 2)
}

/// This node's answer to a pre-vote request.
pub fn answer(raft: &Raft, contact: &LeaderContact, timeouts: &Timeouts, req: &PreVoteRequest) -> bool {
    if leads_with_quorum(raft, timeouts) {
        return false;
    }
    if contact.since().is_some_and(|d| d < timeouts.leader_alive()) {
        return false;
    }
    let mine = raft.data_metrics().borrow().last_log;
    req.last_log >= mine
}

/// Runs this node's election timer until the Raft instance shuts down.
pub fn spawn(
    raft: Raft,
    channels: Arc<PeerChannels>,
    holds: Arc<ElectionHolds>,
    contact: Arc<LeaderContact>,
    timeouts: Timeouts,
) {
    tokio::spawn(async move {
        let tick = (timeouts.election_min / 10).max(Duration::from_millis(10));
        let mut jitter = timeouts.jitter();
        let mut last_attempt: Option<Instant> = None;
        // When this node last held off its elections for a snapshot it was
        // receiving: not leader contact for the others' pre-votes (those
        // are answered from `contact`, which AppendEntries and snapshot
        // frames themselves touch), only a reason for this node not to
        // campaign yet.
        let mut busy_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            let (state, me, voters, joint, leader_known) = {
                let m = raft.metrics();
                let m = m.borrow();
                if m.running_state.is_err() {
                    return;
                }
                let membership = m.membership_config.membership();
                let voters: Vec<(NodeId, String)> = membership
                    .voter_ids()
                    .filter(|id| *id != m.id)
                    .filter_map(|id| membership.get_node(&id).map(|n| (id, n.raft_addr.clone())))
                    .collect();
                let is_voter = membership.voter_ids().any(|id| id == m.id);
                let joint = membership.get_joint_config().clone();
                (m.state, m.id, is_voter.then_some(voters), joint, m.current_leader.is_some())
            };
            // A learner (or a node not yet part of a cluster) never
            // campaigns. It is not told about leaders either, so its contact
            // time stays as it is: it must not refuse the pre-votes of a
            // cluster being formed.
            let Some(voters) = voters else { continue };
            if state == ServerState::Leader {
                // A leader never campaigns; while its quorum answers it is
                // the leader the others hear (a leader that lost its quorum
                // is not, and waits a lease after it is deposed).
                if leads_with_quorum(&raft, &timeouts) {
                    contact.touch();
                }
                continue;
            }
            if holds.held() {
                busy_at = Some(Instant::now());
                continue;
            }
            let since_contact = match (contact.since(), busy_at.map(|b| b.elapsed())) {
                (Some(c), Some(b)) => Some(c.min(b)),
                (c, b) => c.or(b),
            };
            let (waited, timeout) =
                timeouts.wait(since_contact, contact.started.elapsed(), last_attempt, jitter);
            if waited < timeout {
                continue;
            }
            let last_log = raft.data_metrics().borrow().last_log;
            let req = PreVoteRequest { candidate: me, last_log };
            let round = Instant::now();
            let mut yes = ask(&channels, &voters, &req, timeouts.election_min / 2).await;
            yes.insert(me);
            let (granted, won) = (yes.len(), majority_in_each(&joint, &yes));
            // Heard from a leader, or voted for someone, while asking: an
            // election settled meanwhile, and campaigning now would undo it.
            let settled = contact.since().is_some_and(|d| d < round.elapsed());
            if settled {
                tracing::debug!(granted, "a leader was heard while asking; not campaigning");
            } else if won {
                tracing::info!(
                    granted,
                    voters = voters.len() + 1,
                    leader_known,
                    "pre-vote won; starting an election"
                );
                metrics::counter!("strongbox_pre_votes_total", "outcome" => "won").increment(1);
                if let Err(e) = raft.trigger().elect().await {
                    tracing::debug!(%e, "election trigger failed");
                }
            } else {
                tracing::debug!(granted, voters = voters.len() + 1, "pre-vote lost; not campaigning");
                metrics::counter!("strongbox_pre_votes_total", "outcome" => "lost").increment(1);
            }
            // A whole new timeout before the next attempt, as after a real
            // election that did not settle. (Not a leader contact: this
            // node must not refuse the others' pre-votes because of it.)
            last_attempt = Some(Instant::now());
            jitter = timeouts.jitter();
        }
    });
}

/// Which of `voters` grant the pre-vote within `budget`. A peer that does
/// not know the RPC (an older release) counts as granting: it would have
/// been asked for a real vote before pre-votes existed.
async fn ask(
    channels: &PeerChannels,
    voters: &[(NodeId, String)],
    req: &PreVoteRequest,
    budget: Duration,
) -> BTreeSet<NodeId> {
    let asks = voters.iter().map(|(id, addr)| {
        let payload = crate::wire::encode(req);
        async move {
            let mut client = channels.client(addr).ok()?;
            let mut request = tonic::Request::new(payload);
            request.set_timeout(budget);
            let granted = match tokio::time::timeout(budget, client.pre_vote(request)).await {
                Ok(Ok(r)) => crate::wire::decode::<bool>(r.get_ref()).ok(),
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Some(true),
                _ => None,
            };
            (granted == Some(true)).then_some(*id)
        }
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_spread_and_varies() {
        let t =
            Timeouts { election_min: Duration::from_millis(1000), election_max: Duration::from_millis(2000) };
        let seen: Vec<Duration> = (0..64).map(|_| t.jitter()).collect();
        assert!(seen.iter().all(|d| *d <= t.election_max - t.election_min), "{seen:?}");
        assert!(seen.iter().any(|d| *d != seen[0]), "no jitter: {seen:?}");
    }

    #[test]
    fn after_a_leader_the_wait_is_its_lease_and_after_an_attempt_a_timeout() {
        let t =
            Timeouts { election_min: Duration::from_millis(1000), election_max: Duration::from_millis(2000) };
        let no_jitter = Duration::ZERO;
        let started = Duration::from_secs(9);
        assert_eq!(t.wait(None, started, None, no_jitter).1, t.election_min, "forming: no lease to respect");
        let heard = Some(Duration::ZERO);
        assert_eq!(
            t.wait(heard, started, None, no_jitter).1,
            t.election_max,
            "a leader was heard: its lease"
        );
        let heard = Some(Duration::from_millis(5));
        let (waited, timeout) = t.wait(heard, started, Some(Instant::now()), no_jitter);
        assert_eq!(timeout, t.election_min, "after this node's own attempt");
        assert!(waited < Duration::from_millis(5), "counted from the attempt: {waited:?}");
    }

    #[test]
    fn a_pre_vote_needs_a_majority_of_each_configuration_of_a_change() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
        let plain = vec![set(&[1, 2, 3])];
        assert!(majority_in_each(&plain, &set(&[1, 3])));
        assert!(!majority_in_each(&plain, &set(&[1])));
        // Removing voter 5 of five: {1, 2, 5} is a majority of the old
        // configuration but not of the new one.
        let removing = vec![set(&[1, 2, 3, 4, 5]), set(&[1, 2, 3, 4])];
        assert!(!majority_in_each(&removing, &set(&[1, 2, 5])));
        assert!(majority_in_each(&removing, &set(&[1, 2, 3])));
        // Replacing 4 and 5 by 6 and 7: no majority of all seven is needed.
        let replacing = vec![set(&[1, 2, 3, 4, 5]), set(&[1, 2, 3, 6, 7])];
        assert!(majority_in_each(&replacing, &set(&[1, 2, 3])));
    }

    /// A follower's data is dated by the leader's last quorum acknowledgement
    /// the AppendEntries carried, not by the message: an old leader cut off
    /// with a minority still reaches that minority, with an ever older age.
    #[test]
    fn in_step_is_dated_by_the_leaders_quorum_not_by_its_messages() {
        let c = LeaderContact::new();
        c.touch_in_step(None);
        assert!(c.since().is_some(), "the election timer starts over");
        assert_eq!(c.since_in_step(), None, "a leader without a quorum says nothing of the data");
        c.touch_in_step(Some(Duration::from_secs(30)));
        assert!(c.since_in_step().unwrap() >= Duration::from_secs(30), "as old as the leader's quorum");
        c.touch_in_step(Some(Duration::from_millis(50)));
        assert!(c.since_in_step().unwrap() < Duration::from_secs(1));
        c.touch_in_step(Some(Duration::from_secs(20)));
        assert!(c.since_in_step().unwrap() < Duration::from_secs(1), "never moved back by an older ack");
    }
}
