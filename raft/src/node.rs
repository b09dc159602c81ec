//! A running Raft member: proposes writes (forwarding them to the leader when
//! it is a follower), runs read barriers, reports status and changes
//! membership. The api layer talks to this, never to openraft directly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, InitializeError, RaftError,
};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, ServerState, Vote};
use strongbox_proto::raft::v1::ReadIndexRequest;
use strongbox_store::{Command, Db, Response, StateMachine};
use tokio::time::{sleep, timeout, Instant};

use crate::check_quorum::{self, Silence};
use crate::config::RaftTuning;
use crate::election_hold::{ElectionHolds, Hold};
use crate::log_store::{LogStore, PendingInstalls};
use crate::network::{NetworkFactory, PeerChannels};
use crate::pre_vote::{self, LeaderContact};
use crate::proposer::{
    forward_rpc, until_leader_changes, ProposeError, ProposeResult, Proposer, FORWARD_TIMEOUT,
};
use crate::quorum_clock::{self, QuorumClock};
use crate::sm_store::SmStore;
use crate::snapshot_policy;
use crate::types::{LogId, NodeId, NodeInfo, Raft, TypeConfig};
use crate::wire::{ForwardReply, Forwarded, MembershipOp};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no leader: an election is in progress or a majority of nodes is unreachable; retry shortly")]
    NoLeader,
    /// A write ran out of time after it may have reached a leader: its
    /// outcome is unknown (the request id is named so it can be retried).
    #[error(
        "timed out after {0} ms waiting for the write to commit; it may still be applied: \
         retry with request_id {1:?} (a retry is answered, never applied twice)"
    )]
    Timeout(u128, String),
    /// A write failed after an earlier attempt of it may have reached a
    /// leader, or this node stopped with it in flight: its outcome is unknown.
    #[error(
        "the write's outcome is unknown ({0}); it may have been applied: \
         retry with request_id {1:?} (a retry is answered, never applied twice)"
    )]
    Interrupted(String, String),
    /// Leadership did not move within the budget.
    #[error("timed out after {0} ms waiting for {1}")]
    TransferTimeout(u128, &'static str),
    /// A read (or a write's check before proposing) ran out of time:
    /// nothing was changed.
    #[error("timed out after {0} ms waiting for {1}; nothing was changed, retry")]
    ReadTimeout(u128, String),
    #[error("{0}")]
    Refused(String),
    /// This node is no longer a member (see `removal`).
    #[error("{0}")]
    Removed(String),
    /// A local read on a node that may be too far behind (see `local_read_age`).
    #[error(
        "this node may be stale: {}; a local read here allows {max_ms} ms \
         (ReadOptions.max_staleness_ms, node setting local_read_staleness_max_ms). \
         Read from another node, or use a linearizable read",
        match age_ms {
            Some(ms) => format!("it was last in step with a leader {ms} ms ago"),
            None => "it has not been in step with a leader since it started".to_string(),
        }
    )]
    Stale { age_ms: Option<u128>, max_ms: u128 },
    #[error(
        "the leader's write queue is full ({} pending); retry with backoff",
        crate::proposer::PROPOSAL_QUEUE_MAX
    )]
    Overloaded,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A membership change (which has no request id) ran out of time.
    #[error(
        "timed out after {0} ms waiting for the membership change to commit; it may still take effect: \
         check `strongbox cluster status` before trying again"
    )]
    MembershipTimeout(u128),
    #[error("this node has stopped: {0}")]
    Fatal(String),
}

fn propose_error(e: ProposeError) -> NodeError {
    match e {
        ProposeError::NotLeader => NodeError::NoLeader,
        ProposeError::Overloaded => NodeError::Overloaded,
        // A member that is not there reads NOT_FOUND, as for membership
        // changes (the text crosses the forward RPC).
        ProposeError::Refused(m) => refusal(m),
        ProposeError::Busy(m) => NodeError::Refused(m),
        ProposeError::Fatal(m) => NodeError::Fatal(m),
    }
}

impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            // Removed: this endpoint cannot serve and another can, which
            // is what makes clients (and `LeaderRouted`) move on.
            NodeError::NoLeader | NodeError::Stale { .. } | NodeError::Removed(_) => {
                tonic::Status::unavailable(msg)
            }
            NodeError::Timeout(..) | NodeError::ReadTimeout(..) | NodeError::TransferTimeout(..) => {
                tonic::Status::deadline_exceeded(msg)
            }
            // gRPC's code for "may or may not have happened".
            NodeError::Interrupted(..) => tonic::Status::unknown(msg),
            NodeError::Refused(_) => tonic::Status::failed_precondition(msg),
            NodeError::Overloaded => tonic::Status::resource_exhausted(msg),
            NodeError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            NodeError::NotFound(_) => tonic::Status::not_found(msg),
            NodeError::OutOfRange(_) => tonic::Status::out_of_range(msg),
            NodeError::AlreadyExists(_) => tonic::Status::already_exists(msg),
            NodeError::MembershipTimeout(_) => tonic::Status::deadline_exceeded(msg),
            NodeError::Fatal(_) => tonic::Status::unavailable(msg),
        }
    }
}

/// Everything `cluster status` shows about one node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub id: NodeId,
    pub state: ServerState,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub revision: u64,
    /// (id, node, is_voter, matched index if this node leads)
    pub members: Vec<(NodeId, NodeInfo, bool, Option<u64>)>,
}

#[derive(Clone)]
pub struct RaftNode {
    pub id: NodeId,
    pub info: NodeInfo,
    pub raft: Raft,
    pub sm: StateMachine,
    channels: Arc<PeerChannels>,
    proposer: Proposer,
    elections: Arc<ElectionHolds>,
    /// When this node last heard from a live leader (`pre_vote`).
    pub contact: Arc<LeaderContact>,
    /// When a quorum last acknowledged this node as leader.
    quorum: QuorumClock,
    pub election_timeouts: pre_vote::Timeouts,
    /// Leader transfers running here (see `HeartbeatsOff`).
    transfers: Arc<std::sync::atomic::AtomicUsize>,
    /// Received snapshots openraft is installing (see `LogStore::purge`).
    pub installs: PendingInstalls,
    /// Set once this node begins a clean stop: it neither campaigns nor
    /// accepts a leadership hand-off from then on.
    stopping: Arc<std::sync::Mutex<Option<Hold>>>,
    /// Whether a leader said this node is no member (see `removal`).
    removal: Arc<crate::removal::Removal>,
}

/// How far behind the leader's log a learner may be and still be promoted.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 1_000;
/// How long adding a learner waits for it to catch up before answering
/// (it is a member either way; `promote` checks that it caught up).
pub const LEARNER_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// How far behind the leader's log a leader transfer's target may be: a
/// target further behind needs a snapshot or a long catch-up before it can
/// win, with the cluster's heartbeats off meanwhile.
pub const TRANSFER_LAG_ENTRIES_MAX: u64 = 1_000;
/// Election triggers a transfer's target may leave unanswered in a row
/// before the transfer ends: one may be lost to a hiccup.
const TRANSFER_TRIGGERS_UNANSWERED_MAX: u32 = 2;
const BACKOFF_START_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 400;

/// Exponential back-off between retries while a leader is elected or found.
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next_ms: BACKOFF_START_MS }
    }

    async fn wait(&mut self) {
        sleep(Duration::from_millis(self.next_ms)).await;
        self.next_ms = (self.next_ms * 2).min(BACKOFF_MAX_MS);
    }
}

impl RaftNode {
    pub async fn start(
        id: NodeId,
        info: NodeInfo,
        db: Db,
        tuning: &RaftTuning,
        channels: Arc<PeerChannels>,
    ) -> Result<RaftNode, NodeError> {
        let config = Arc::new(tuning.to_config().map_err(|e| NodeError::InvalidArgument(e.to_string()))?);
        let sm = StateMachine::new(db.clone());
        let silence = Silence::default();
        let quorum = QuorumClock::default();
        let installs = PendingInstalls::default();
        let log_store = LogStore::new(db.clone(), installs.clone());
        let appended_bytes = log_store.appended_bytes();
        let sm_store = SmStore::open(sm.clone())
            .map_err(|e| NodeError::Fatal(e.to_string()))?
            .with_installs(installs.clone());
        let raft = Raft::new(
            id,
            config,
            NetworkFactory::new(
                channels.clone(),
                silence.clone(),
                quorum.clone(),
                db.codec().clone(),
                db.snapshot_gate().clone(),
            ),
            log_store,
            sm_store.clone(),
        )
        .await
        .map_err(|e| NodeError::Fatal(e.to_string()))?;
        snapshot_policy::spawn(raft.clone(), sm_store, appended_bytes, tuning.snapshot_logs);
        quorum_clock::spawn(raft.clone(), quorum.clone());
        channels.follow_membership(&raft);
        let timers = check_quorum::Timers {
            heartbeat: Duration::from_millis(tuning.heartbeat_ms),
            quorum_timeout: Duration::from_millis(tuning.election_timeout_min_ms),
            follower_lease: Duration::from_millis(tuning.election_timeout_max_ms),
        };
        check_quorum::spawn(raft.clone(), silence, timers);
        channels.set_sender(id);
        let removal = Arc::new(crate::removal::Removal::default());
        let proposer = Proposer::start(id, raft.clone(), channels.clone(), removal.clone());
        let elections = ElectionHolds::new();
        let contact = LeaderContact::new();
        let election_timeouts = pre_vote::Timeouts {
            election_min: Duration::from_millis(tuning.election_timeout_min_ms),
            election_max: Duration::from_millis(tuning.election_timeout_max_ms),
        };
        pre_vote::spawn(
            raft.clone(),
            channels.clone(),
            elections.clone(),
            contact.clone(),
            election_timeouts,
        );
        Ok(RaftNode {
            id,
            info,
            raft,
            sm,
            channels,
            proposer,
            elections,
            contact,
            quorum,
            election_timeouts,
            transfers: Arc::default(),
            removal,
            installs,
            stopping: Arc::default(),
        })
    }

    /// Initializes a brand-new cluster with these voters. Does nothing (and
    /// returns false) if this node already belongs to an initialized cluster.
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<bool, NodeError> {
        if self.raft.is_initialized().await.map_err(|e| NodeError::Fatal(e.to_string()))? {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(e)) => Err(NodeError::InvalidArgument(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(NodeError::Fatal(e.to_string())),
        }
    }

    /// Proposes a command and waits for it to be applied, on whichever node
    /// leads. Retries through elections until `budget` runs out: the same
    /// command (same request id) is proposed again, and apply deduplicates it
    /// if an earlier attempt won.
    ///
    /// Once an attempt may have reached a leader (an unanswered proposal, a
    /// lost forward), no answer but success says "not applied": running
    /// out of time is DEADLINE_EXCEEDED, and any later refusal says the
    /// outcome is unknown. UNAVAILABLE (no leader) only while nothing was sent.
    pub async fn write(&self, cmd: Command, budget: Duration) -> Result<(LogId, Response), NodeError> {
        let started = Instant::now();
        // Set as an attempt starts (it may reach a leader while it runs),
        // and kept by any attempt that ends without an answer.
        let maybe_sent = std::sync::atomic::AtomicBool::new(false);
        let attempt = async {
            let mut backoff = Backoff::new();
            let mut lost = false;
            loop {
                if let (false, Some(why)) = (lost, self.removal()) {
                    return Err(NodeError::Removed(why));
                }
                // With no leader known nothing is proposed: a refusal then
                // would only blur "never sent" with "lost on the way".
                if self.leader().is_some() {
                    maybe_sent.store(true, Ordering::Relaxed);
                    let res = self.proposer.propose(cmd.clone()).await;
                    maybe_sent.store(lost, Ordering::Relaxed);
                    match res {
                        Ok(r) => return Ok(r),
                        Err(ProposeError::NotLeader) => {
                            lost = true;
                            maybe_sent.store(true, Ordering::Relaxed);
                        }
                        // Refused before it was queued: nothing was sent.
                        Err(ProposeError::Fatal(why))
                            if !lost && why == crate::proposer::PROPOSER_STOPPED =>
                        {
                            return Err(NodeError::Fatal(why))
                        }
                        Err(ProposeError::Fatal(why)) => {
                            return Err(NodeError::Interrupted(
                                format!("this node stopped with it in flight: {why}"),
                                cmd.request_id.clone(),
                            ))
                        }
                        // The leader refused it unread: this node is no member.
                        Err(ProposeError::Refused(why)) if !lost && self.removal().is_some() => {
                            return Err(NodeError::Removed(why))
                        }
                        Err(e) if lost => {
                            return Err(NodeError::Interrupted(e.to_string(), cmd.request_id.clone()))
                        }
                        Err(e) => return Err(propose_error(e)),
                    }
                }
                backoff.wait().await;
            }
        };
        let res = timeout(budget, attempt).await;
        metrics::histogram!("strongbox_write_seconds").record(started.elapsed().as_secs_f64());
        res.map_err(|_| {
            if maybe_sent.load(Ordering::Relaxed) {
                NodeError::Timeout(budget.as_millis(), cmd.request_id.clone())
            } else {
                NodeError::NoLeader
            }
        })?
    }

    /// Proposes a command only if this node leads (forwarded writes).
    pub async fn propose_local(&self, cmd: Command) -> ProposeResult {
        self.proposer.propose_local(cmd).await
    }

    pub async fn change_membership(&self, op: MembershipOp, budget: Duration) -> Result<LogId, NodeError> {
        let deadline = Instant::now() + budget;
        // Why the last attempt was put off, if it was (see `ProposeError::Busy`).
        let busy = std::sync::Mutex::new(None::<String>);
        let attempt = async {
            let mut backoff = Backoff::new();
            // An attempt that got no answer may have taken effect.
            let mut maybe_applied = false;
            loop {
                let res = match self.leader() {
                    Some((l, node)) if l != self.id => {
                        match forward_rpc(&self.channels, &node, Forwarded::Membership(op.clone())).await {
                            Ok(ForwardReply::Membership(r)) => r,
                            Ok(other) => Err(ProposeError::Fatal(format!("unexpected reply {other:?}"))),
                            Err(_) => {
                                maybe_applied = true;
                                Err(ProposeError::NotLeader)
                            }
                        }
                    }
                    _ => self.membership_here(op.clone()).await,
                };
                match res {
                    Ok(log_id) => return Ok(log_id),
                    // Also what a change retried on a new leader meets while
                    // the old leader's attempt is still uncommitted there.
                    Err(ProposeError::Busy(m)) => *busy.lock().expect("busy lock") = Some(m),
                    Err(ProposeError::NotLeader) => {
                        maybe_applied = true;
                        *busy.lock().expect("busy lock") = None
                    }
                    // A removal retried after one that may have committed:
                    // the member being gone is its success, not a refusal.
                    Err(ProposeError::Refused(m))
                        if maybe_applied
                            && matches!(op, MembershipOp::Remove { .. })
                            && m.contains(NOT_A_MEMBER) =>
                    {
                        let now =
                            (*self.raft.metrics().borrow().membership_config.log_id()).unwrap_or_default();
                        return Ok(now);
                    }
                    Err(ProposeError::Refused(m)) => return Err(refusal(m)),
                    Err(e) => return Err(propose_error(e)),
                }
                backoff.wait().await;
            }
        };
        let log_id =
            timeout(budget, attempt).await.map_err(|_| match busy.lock().expect("busy lock").take() {
                Some(m) => NodeError::Refused(format!("{m}; still so after {} ms", budget.as_millis())),
                None => match self.leader() {
                    None => NodeError::NoLeader,
                    Some(_) => NodeError::MembershipTimeout(budget.as_millis()),
                },
            })??;
        let left = || deadline.saturating_duration_since(Instant::now());
        let leads = self.raft.metrics().borrow().state == ServerState::Leader;
        if let (MembershipOp::AddLearner { id, .. }, true) = (&op, leads) {
            // Scripts promote right after adding: give a running learner a
            // moment to catch up (a learner not started yet just stays
            // behind). Only the leader sees replication progress.
            let id = *id;
            let _ = self
                .raft
                .wait(Some(LEARNER_CATCH_UP_WAIT.min(left())))
                .metrics(
                    move |m| {
                        let last = m.last_log_index.unwrap_or(0);
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&id).cloned().flatten())
                            .is_some_and(|l| l.index + PROMOTE_LAG_ENTRIES_MAX >= last)
                    },
                    "learner caught up",
                )
                .await;
        }
        // Let this node see the new membership before answering, so the
        // caller's next status (served here) reflects the change. A node
        // removing itself may never see it (the leader stops replicating to
        // it once it is out): no wait there.
        let removes_self = matches!(op, MembershipOp::Remove { id } if id == self.id);
        let wait = if removes_self { Duration::ZERO } else { left() };
        let _ = self
            .raft
            .wait(Some(wait))
            .metrics(
                move |m| m.membership_config.log_id().is_some_and(|l| l.index >= log_id.index),
                "membership visible",
            )
            .await;
        Ok(log_id)
    }

    /// Runs a membership change if this node leads.
    pub async fn membership_here(&self, op: MembershipOp) -> Result<LogId, ProposeError> {
        // Deposed meanwhile: the change may never be answered here (as a
        // proposal; see `proposer::deposed`). Retried through the new leader.
        let view = self.raft.metrics().borrow().membership_config.clone();
        membership_conflict(view.membership(), &op).map_err(|e| ProposeError::Refused(e.to_string()))?;
        if let MembershipOp::Promote { id } = op {
            self.check_in_sync(id)?;
        }
        self.check_voters_answer(&op)?;
        let deposed = crate::proposer::deposed(&self.raft, self.id);
        let res = tokio::select! {
            res = self.apply_membership_local(op) => res,
            () = deposed => return Err(ProposeError::NotLeader),
        };
        match res {
            Ok(r) => Ok(r.log_id),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(ProposeError::NotLeader),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => match e {
                ChangeMembershipError::InProgress(_) => Err(ProposeError::Busy(e.to_string())),
                _ => Err(ProposeError::Refused(e.to_string())),
            },
            Err(RaftError::Fatal(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// A learner is promoted only once it has caught up (as etcd does): a
    /// voter that cannot keep up counts towards every quorum and leaves the
    /// cluster one failure from losing it. A voter already is left alone, so
    /// a retried promotion stays a no-op.
    fn check_in_sync(&self, id: NodeId) -> Result<(), ProposeError> {
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == id) {
            return Ok(());
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
        match matched {
            Some(i) if i + PROMOTE_LAG_ENTRIES_MAX >= last => Ok(()),
            Some(i) => Err(ProposeError::Refused(format!(
                "node {id} is not in sync with the leader yet (it has the log up to index {i} of {last}); \
                 promote it once it has caught up (strongbox cluster status shows its progress)"
            ))),
            None => Err(ProposeError::Refused(format!(
                "node {id} has not yet received the log from the leader (is it running and reachable, and a \
                 learner?); promote it once it has caught up (strongbox cluster status shows its progress)"
            ))),
        }
    }

    /// A change of voters goes through a joint configuration that needs a
    /// majority of the old voters and of the new: if either lacks one, it
    /// can never commit, and no write commits meanwhile (every later entry
    /// waits behind it). So it is refused up front, as etcd's strict
    /// reconfiguration check does, unless enough voters answer the leader now.
    fn check_voters_answer(&self, op: &MembershipOp) -> Result<(), ProposeError> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        let before: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut after = before.clone();
        match *op {
            MembershipOp::Remove { id } => after.remove(&id),
            MembershipOp::Promote { id } => after.insert(id),
            MembershipOp::AddLearner { .. } => return Ok(()),
        };
        if after == before {
            return Ok(());
        }
        // Up: answered within the shortest election timeout (several
        // heartbeats), and its last RPC did not fail (a stopped node's
        // connection is refused at once).
        let within = self.election_timeouts.election_min;
        let answers = |v: &NodeId| {
            *v == self.id
                || membership.get_node(v).is_some_and(|n| {
                    self.channels.answered_within(&n.raft_addr, within)
                        && !self.channels.known_unreachable(&n.raft_addr)
                })
        };
        for set in [&before, &after] {
            let up: Vec<NodeId> = set.iter().copied().filter(answers).collect();
            if up.len() * 2 <= set.len() {
                let silent: Vec<NodeId> = set.iter().copied().filter(|v| !answers(v)).collect();
                return Err(ProposeError::Refused(format!(
                    "refused: the change needs a majority of voters {set:?} to commit, and only {up:?} answered \
                     the leader in the last {} ms (not answering: {silent:?}); it would stall every write until \
                     they return. Bring them back first",
                    within.as_millis()
                )));
            }
        }
        Ok(())
    }

    /// A leader transfer out of time: UNAVAILABLE if no leader is known (an
    /// election, or a lost quorum), DEADLINE_EXCEEDED if one is.
    fn timeout_error(&self, budget: Duration, what: &'static str) -> NodeError {
        match self.leader() {
            None => NodeError::NoLeader,
            Some(_) => NodeError::TransferTimeout(budget.as_millis(), what),
        }
    }

    /// As `timeout_error`, for a read.
    fn read_timeout_error(&self, budget: Duration, what: String) -> NodeError {
        match self.leader() {
            None => NodeError::NoLeader,
            Some(_) => NodeError::ReadTimeout(budget.as_millis(), what),
        }
    }

    /// The current leader and its address, as this node believes.
    fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        Some((leader, m.membership_config.membership().get_node(&leader)?.clone()))
    }

    /// Runs a membership change on this node (which must lead).
    pub async fn apply_membership_local(
        &self,
        op: MembershipOp,
    ) -> Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> {
        match op {
            // Not blocking: a learner added before it is started (etcd's
            // order: member add, then start it) must not hold the answer.
            MembershipOp::AddLearner { id, node } => self.raft.add_learner(id, node, false).await,
            MembershipOp::Promote { id } => {
                self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await
            }
            MembershipOp::Remove { id } => {
                let is_voter =
                    self.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == id);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await
            }
        }
    }

    /// On the leader: confirms leadership with a quorum (one heartbeat round)
    /// and returns the index a linearizable read must see applied.
    pub async fn leader_read_index(&self) -> Result<u64, NodeError> {
        let mut backoff = Backoff::new();
        for _ in 0..5 {
            match self.raft.get_read_log_id().await {
                Ok((read, _applied)) => return Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                    return Err(NodeError::Refused("not the leader".into()))
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    tracing::debug!(%e, "read index: quorum not reached; retrying");
                }
                Err(RaftError::Fatal(e)) => return Err(NodeError::Fatal(e.to_string())),
            }
            backoff.wait().await;
        }
        Err(NodeError::NoLeader)
    }

    /// Read index from whoever leads: locally, or over the peer port.
    async fn read_index(&self) -> Result<u64, NodeError> {
        let mut backoff = Backoff::new();
        loop {
            match self.leader() {
                Some((l, _)) if l == self.id => match self.leader_read_index().await {
                    Err(NodeError::Refused(_)) => {}
                    other => return other,
                },
                Some((leader_id, node)) => {
                    let reply = match self.channels.client(&node.raft_addr) {
                        Ok(mut c) => {
                            let mut req = tonic::Request::new(ReadIndexRequest {});
                            self.channels.stamp(&mut req);
                            let call = c.read_index(req);
                            until_leader_changes(&self.raft, leader_id, call).await
                        }
                        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
                    };
                    match reply {
                        Ok(r) => return Ok(r.into_inner().index),
                        Err(s) if crate::removal::is_refusal(&s) => {
                            self.removal.told(self.applied_index(), &s);
                            return Err(NodeError::Removed(crate::removal::client_message(
                                self.id,
                                s.message(),
                            )));
                        }
                        Err(s) => tracing::debug!(%s, "read index from leader failed; retrying"),
                    }
                }
                None => {}
            }
            backoff.wait().await;
        }
    }

    /// CheckQuorum for the leader. openraft 0.9 keeps a lease on followers
    /// only (they refuse votes while they hear from a leader), so a leader
    /// steps down for any vote request with a higher term: a node that hears
    /// nobody (a one-way partition) campaigns again and again and keeps the
    /// whole cluster leaderless. A leader that a quorum acknowledged within
    /// the lease refuses instead, as etcd's does. Refusing a vote is always
    /// safe; the lease is shorter than the followers' own, so a leader that
    /// really lost its quorum, or pauses itself to hand over leadership, is
    /// replaced as fast as before.
    pub fn refuse_vote_while_leading(&self) -> Option<openraft::raft::VoteResponse<NodeId>> {
        // A leader that is stopping wants a successor now (its hand-off
        // asked for this vote): it does not hold on to its lease.
        if self.is_stopping() || !pre_vote::leads_with_quorum(&self.raft, &self.election_timeouts) {
            return None;
        }
        // Read after the check: a refusal is safe with whatever vote is
        // current by now.
        let vote = self.raft.metrics().borrow().vote;
        let last_log = self.raft.data_metrics().borrow().last_log;
        metrics::counter!("strongbox_votes_refused_while_leading_total").increment(1);
        Some(openraft::raft::VoteResponse::new(vote, last_log, false))
    }

    /// A clean stop begins: this node's own elections stop for good, and
    /// a leader's hand-off to it is refused (it would lead for a moment,
    /// then leave the cluster leaderless for an election timeout).
    pub fn begin_stop(&self) {
        let mut stopping = self.stopping.lock().expect("stopping lock");
        if stopping.is_none() {
            *stopping = Some(self.elections.hold());
        }
    }

    fn applied_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// Why this node is no member of the cluster, if it knows it is not:
    /// its own membership (applied, or appended) leaves it out, or the
    /// leader said so and nothing was applied here since.
    pub fn removal(&self) -> Option<String> {
        let (listed, empty, applied) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let listed = membership.get_node(&self.id).is_some();
            let empty = membership.nodes().next().is_none();
            (listed, empty, m.last_applied.map(|l| l.index))
        };
        // An empty membership: a new node waiting to be added.
        if !listed && !empty {
            return Some(crate::removal::client_message(self.id, "its own membership no longer lists it"));
        }
        let why = self.removal.current(applied)?;
        Some(crate::removal::client_message(self.id, &why))
    }

    /// On the leader: a refusal for a peer request from a node that its
    /// membership does not list (see `removal`). None for any other sender,
    /// or when this node does not lead (the leader judges).
    pub fn refuse_non_member(&self, from: Option<NodeId>) -> Option<tonic::Status> {
        let from = from?;
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(self.id) {
            return None;
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&from).is_some() {
            return None;
        }
        let members = membership
            .nodes()
            .map(|(id, n)| format!("{id} at {}", n.api_addr))
            .collect::<Vec<_>>()
            .join(", ");
        Some(crate::removal::refusal(from, self.id, &members))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.lock().expect("stopping lock").is_some()
    }

    /// Keeps this node from campaigning while `leader` streams it a
    /// snapshot (see `election_hold`). None for a sender whose vote is
    /// older than this node's: a deposed leader must not silence anyone.
    pub fn hold_elections_for(&self, leader: &Vote<NodeId>) -> Option<Hold> {
        let current = self.raft.metrics().borrow().vote;
        (leader.is_committed() && *leader >= current).then(|| self.elections.hold())
    }

    /// Waits until a read on this node may be served: after a linearizable
    /// barrier (if asked) and once `min_revision` is applied here.
    pub async fn read_barrier(
        &self,
        linearizable: bool,
        min_revision: u64,
        staleness_max: Option<Duration>,
        budget: Duration,
    ) -> Result<(), NodeError> {
        let deadline = Instant::now() + budget;
        if let Some(why) = self.removal() {
            return Err(NodeError::Removed(why));
        }
        if let (false, Some(max)) = (linearizable, staleness_max) {
            self.within_staleness(max)?;
        }
        if linearizable {
            let index = timeout(budget, self.read_index())
                .await
                .map_err(|_| self.read_timeout_error(budget, "a quorum to confirm the leader".into()))??;
            let left = deadline.saturating_duration_since(Instant::now());
            self.raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|_| {
                    NodeError::ReadTimeout(
                        budget.as_millis(),
                        "this node to apply up to the read index".into(),
                    )
                })?;
            // Every acknowledged write is applied here now: a revision
            // past this one was never returned by any write.
            let latest = self.sm.revision().map_err(|e| NodeError::Fatal(e.to_string()))?;
            if min_revision > latest {
                return Err(NodeError::OutOfRange(format!(
                    "options.min_revision: {min_revision} is past the cluster's latest revision {latest}; \
                     pass a revision a write to this cluster returned"
                )));
            }
        }
        if min_revision > 0 {
            let sm = self.sm.clone();
            let left = deadline.saturating_duration_since(Instant::now());
            self.raft
                .wait(Some(left))
                .metrics(move |_| sm.revision().map_or(false, |r| r >= min_revision), "min_revision")
                .await
                .map_err(|_| {
                    let at = self.sm.revision().map_or_else(|e| format!("unknown: {e}"), |r| r.to_string());
                    NodeError::ReadTimeout(
                        budget.as_millis(),
                        format!(
                            "this node to reach min_revision {min_revision} (it has applied revision {at}; \
                             pass a revision a write to this cluster returned)"
                        ),
                    )
                })?;
        }
        Ok(())
    }

    /// Refuses when this node's state may be more than `max` behind (see
    /// `local_read_age`): for what is served from it without a barrier.
    pub fn within_staleness(&self, max: Duration) -> Result<(), NodeError> {
        match self.local_read_age() {
            Some(age) if age <= max => Ok(()),
            age => Err(NodeError::Stale { age_ms: age.map(|a| a.as_millis()), max_ms: max.as_millis() }),
        }
    }

    /// How far behind the cluster this node's state may be, for a local
    /// read: the leader, since a quorum last acknowledged it; any other
    /// member, since the quorum acknowledgement a leader's AppendEntries
    /// carried when it last matched this node's log. `None`: no such moment
    /// since this process started.
    pub fn local_read_age(&self) -> Option<Duration> {
        if self.raft.metrics().borrow().state == ServerState::Leader {
            return self.quorum.age();
        }
        self.contact.since_in_step()
    }

    /// Hands leadership to voter `to`, from any node (run by the leader).
    pub async fn transfer_leader(&self, to: NodeId, budget: Duration) -> Result<Option<NodeId>, NodeError> {
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = match self.leader() {
                Some((l, _)) if l == to => return Ok(Some(to)),
                Some((l, node)) if l != self.id => {
                    // Within the forward's own deadline, so the leader
                    // answers (won, or why not) before the call is dropped.
                    let budget = left.min(FORWARD_TIMEOUT.saturating_sub(Duration::from_secs(1)));
                    let fwd = Forwarded::TransferLeader { to, budget_ms: budget.as_millis() as u64 };
                    match forward_rpc(&self.channels, &node, fwd).await {
                        Ok(ForwardReply::TransferLeader(r)) => r,
                        Ok(other) => Err(ProposeError::Fatal(format!("unexpected reply {other:?}"))),
                        Err(_) => Err(ProposeError::NotLeader),
                    }
                }
                _ => self.transfer_leader_here(to, left).await,
            };
            match res {
                Ok(leader) => return Ok(leader),
                Err(ProposeError::NotLeader) if Instant::now() < deadline => {}
                Err(ProposeError::NotLeader) => return Err(self.timeout_error(budget, "the new leader")),
                Err(e) => return Err(propose_error(e)),
            }
            backoff.wait().await;
        }
    }

    /// Leadership transfer, run on the leader. openraft 0.9 has no transfer
    /// API, and followers refuse a candidate while the leader's lease is
    /// alive; so the leader stops heartbeats and its own elections, and asks
    /// the target to campaign until it wins (its log is complete: it is a
    /// voter the leader replicates to). Both are re-enabled whatever happens.
    pub async fn transfer_leader_here(
        &self,
        to: NodeId,
        budget: Duration,
    ) -> Result<Option<NodeId>, ProposeError> {
        self.transfer_leader_to(to, budget, TRANSFER_TRIGGERS_UNANSWERED_MAX).await
    }

    /// As `transfer_leader_here`; it gives up once `unanswered_max` election
    /// triggers in a row went unanswered.
    async fn transfer_leader_to(
        &self,
        to: NodeId,
        budget: Duration,
        unanswered_max: u32,
    ) -> Result<Option<NodeId>, ProposeError> {
        let (node, matched, last_log) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(self.id) {
                return Err(ProposeError::NotLeader);
            }
            let membership = m.membership_config.membership();
            if membership.get_node(&to).is_none() {
                let members = membership.nodes().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(", ");
                return Err(ProposeError::Refused(format!(
                    "id: node {to} {NOT_A_MEMBER} (members: {members})"
                )));
            }
            if !membership.voter_ids().any(|v| v == to) {
                return Err(ProposeError::Refused(format!(
                    "id: node {to} is a learner, not a voter; promote it first"
                )));
            }
            let node = membership.get_node(&to).cloned().expect("voters have node info");
            let matched = m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index);
            (node, matched, m.last_log_index.unwrap_or(0))
        };
        if to == self.id {
            return Ok(Some(to));
        }
        // Checked before anything is disturbed: a target that cannot win
        // would only leave the cluster without heartbeats until some other
        // follower campaigned, as etcd's MoveLeader refuses such a target.
        if self.channels.known_unreachable(&node.raft_addr) {
            return Err(ProposeError::Refused(format!(
                "node {to} is unreachable from the leader (node {}); leadership stays",
                self.id
            )));
        }
        // Unknown right after an election, until the target first answers.
        if let Some(matched) = matched.filter(|m| last_log.saturating_sub(*m) > TRANSFER_LAG_ENTRIES_MAX) {
            return Err(ProposeError::Refused(format!(
                "node {to} is behind: it holds the log up to index {matched} of {last_log}; \
                 transfer once it has caught up (cluster status shows each member's index); leadership stays"
            )));
        }
        let deadline = Instant::now() + budget;
        let _heartbeats_off = HeartbeatsOff::start(&self.raft, &self.transfers);
        let _hold = self.elections.hold();
        let election_timeout = Duration::from_millis(self.raft.config().election_timeout_min);
        let mut unanswered = 0;
        let result = loop {
            // Bounded: a paused or cut-off target answers nothing, and the
            // transfer must end within its budget (heartbeats are off).
            let ask = deadline.saturating_duration_since(Instant::now()).min(election_timeout);
            let asked = match self.channels.client(&node.raft_addr) {
                Ok(mut c) => {
                    match tokio::time::timeout(ask, c.trigger_election(strongbox_proto::raft::v1::Empty {}))
                        .await
                    {
                        Ok(r) => r.map(|_| ()),
                        Err(_) => Err(tonic::Status::deadline_exceeded("no answer to the election trigger")),
                    }
                }
                Err(e) => Err(tonic::Status::unavailable(e.to_string())),
            };
            match asked {
                Ok(()) => unanswered = 0,
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    break Err(ProposeError::Refused(format!(
                        "node {to} refused: {}; leadership stays",
                        s.message()
                    )));
                }
                Err(s) => {
                    tracing::debug!(to, %s, "leader transfer: election trigger failed");
                    unanswered += 1;
                    if unanswered >= unanswered_max {
                        // A target gone mid-way: end here, not at the
                        // budget's end, so heartbeats are not off any
                        // longer than that.
                        break Err(ProposeError::Refused(format!(
                            "node {to} stopped answering ({}: {}); {}",
                            s.code(),
                            s.message(),
                            self.leader_now()
                        )));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let round = election_timeout.min(left);
            let waited =
                self.raft.wait(Some(round)).metrics(move |m| m.current_leader == Some(to), "transfer").await;
            if let Ok(m) = waited {
                break Ok(m.current_leader);
            }
            if Instant::now() >= deadline {
                // With heartbeats off for that long another follower may
                // have campaigned: say who leads now, not what was hoped.
                break Err(ProposeError::Refused(format!(
                    "node {to} did not win an election within {} ms; {}",
                    budget.as_millis(),
                    self.leader_now()
                )));
            }
        };
        result
    }

    /// On a clean stop, as etcd's leader does: hands leadership to the
    /// most caught-up voter that answers, so clients wait for a transfer
    /// (a few round trips), not for an election timeout after the leader's
    /// heartbeats stop. Nothing to do on a follower or a single voter.
    /// Returns who leads afterwards when a hand-off was tried.
    pub async fn hand_off_leadership(&self, budget: Duration) -> Option<Result<Option<NodeId>, String>> {
        let deadline = Instant::now() + budget;
        // An election this node began before it started stopping may still
        // make it leader: let it settle, or it would win and then leave.
        if self.raft.metrics().borrow().state == ServerState::Candidate {
            let _ =
                self.raft.wait(Some(budget)).metrics(|m| m.state != ServerState::Candidate, "settle").await;
        }
        let targets: Vec<NodeId> = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.current_leader != Some(self.id) {
                return None;
            }
            let membership = m.membership_config.membership();
            let mut live: Vec<(Option<u64>, NodeId)> = membership
                .voter_ids()
                .filter(|v| *v != self.id)
                .filter(|v| {
                    membership.get_node(v).is_some_and(|n| {
                        !self.channels.known_unreachable(&n.raft_addr)
                            && self
                                .channels
                                .answered_within(&n.raft_addr, self.election_timeouts.election_min)
                    })
                })
                .map(|v| {
                    (m.replication.as_ref().and_then(|r| r.get(&v).copied().flatten()).map(|l| l.index), v)
                })
                .collect();
            live.sort_unstable_by(|a, b| b.cmp(a)); // most caught-up first
            live.into_iter().map(|(_, v)| v).collect()
        };
        let mut why = None;
        // One unanswered trigger ends a try: the next voter may be up (a
        // target that is stopping too refuses at once).
        for to in targets {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.transfer_leader_to(to, left, 1).await {
                Ok(leader) => return Some(Ok(leader)),
                Err(ProposeError::Refused(w)) => why = Some(w),
                Err(e) => return Some(Err(e.to_string())),
            }
        }
        why.map(Err)
    }

    /// Who leads, for a transfer that failed: with heartbeats off for a
    /// while another follower may have campaigned, so this says what is,
    /// not what was hoped.
    fn leader_now(&self) -> String {
        match self.raft.metrics().borrow().current_leader {
            Some(l) if l == self.id => "leadership stays".to_string(),
            Some(l) => format!("node {l} leads now"),
            None => "no leader is known yet".to_string(),
        }
    }

    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let m = self.raft.metrics().borrow().clone();
        let committed = self
            .raft
            .with_raft_state(|s| s.committed.map_or(0, |l| l.index))
            .await
            .map_err(|e| NodeError::Fatal(e.to_string()))?;
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m.replication.as_ref().and_then(|r| r.get(id)).and_then(|l| l.map(|l| l.index));
                (*id, node.clone(), voters.contains(id), matched)
            })
            .collect();
        Ok(NodeStatus {
            id: self.id,
            state: m.state,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: committed,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            revision: self.sm.revision().map_err(|e| NodeError::Fatal(e.to_string()))?,
            members,
        })
    }
}

/// Heartbeats off for as long as a leader transfer runs, and back on when
/// the last one running ends however it ends: a transfer whose caller gives
/// up (a forward timing out, a client gone) is dropped mid-way, and a
/// leader left without heartbeats loses its followers whenever it is idle,
/// every term it leads. Counted: two transfers may overlap (two admins, a
/// retried forward), and the first to end must not turn heartbeats back on
/// under the other.
struct HeartbeatsOff {
    raft: Raft,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl HeartbeatsOff {
    fn start(raft: &Raft, running: &Arc<std::sync::atomic::AtomicUsize>) -> HeartbeatsOff {
        running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        raft.runtime_config().heartbeat(false);
        HeartbeatsOff { raft: raft.clone(), running: running.clone() }
    }
}

impl Drop for HeartbeatsOff {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.raft.runtime_config().heartbeat(true);
        }
    }
}

/// How a refusal for a member that is not there reads (it crosses the
/// forward RPC as text).
const NOT_A_MEMBER: &str = "is not a member";
/// How a refusal for an id or address already taken reads.
const ALREADY_TAKEN: [&str; 2] = ["is already a member", "two ids at one address"];

/// A refusal as the status it stands for (the leader's text names it).
fn refusal(m: String) -> NodeError {
    if m.contains(NOT_A_MEMBER) {
        NodeError::NotFound(m)
    } else if ALREADY_TAKEN.iter().any(|t| m.contains(t)) {
        NodeError::AlreadyExists(m)
    } else {
        NodeError::Refused(m)
    }
}

/// What a membership change would contradict in a membership view: an id
/// already there at another address, an address another member uses (one
/// machine's vote would count twice), a member that is not there.
fn membership_conflict(
    m: &openraft::Membership<NodeId, NodeInfo>,
    op: &MembershipOp,
) -> Result<(), NodeError> {
    let listed = || m.nodes().map(|(id, _)| id.to_string()).collect::<Vec<_>>().join(", ");
    match op {
        MembershipOp::AddLearner { id, node } => {
            if let Some(existing) = m.get_node(id) {
                if existing == node {
                    return Ok(()); // a retry of the same addition
                }
                return Err(NodeError::AlreadyExists(format!(
                    "node {id} is already a member (raft_addr {}, api_addr {}); remove it first to change \
                     its addresses",
                    existing.raft_addr, existing.api_addr
                )));
            }
            for (other, info) in m.nodes() {
                for (field, mine, theirs) in [
                    ("raft_addr", &node.raft_addr, &info.raft_addr),
                    ("api_addr", &node.api_addr, &info.api_addr),
                ] {
                    if mine == theirs {
                        return Err(NodeError::AlreadyExists(format!(
                            "{field} {mine} is node {other}'s; two ids at one address would count one \
                             machine's vote twice"
                        )));
                    }
                }
            }
            Ok(())
        }
        MembershipOp::Promote { id } | MembershipOp::Remove { id } => match m.get_node(id) {
            Some(_) => Ok(()),
            None => Err(NodeError::NotFound(format!("node {id} {NOT_A_MEMBER} (members: {})", listed()))),
        },
    }
}
