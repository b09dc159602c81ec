//! Group commit: concurrent commands are coalesced into one Raft entry, so
//! they share one log append, one fsync, one replication round and one apply
//! batch.
//!
//! openraft 0.9 appends (and fsyncs) every `client_write` on its own, so
//! without this each write pays a full fsync on the leader's critical path.
//! Every node batches: the leader proposes a batch as one entry; a follower
//! forwards the whole batch to the leader in one peer RPC, where its commands
//! join the leader's next batch. At most `PROPOSALS_IN_FLIGHT_MAX` (leader) or
//! `FORWARDS_IN_FLIGHT_MAX` (follower) batches are in flight; meanwhile new
//! commands queue up and leave together. The queue is bounded: a full queue
//! is an explicit refusal.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use strongbox_store::{Command, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::network::PeerChannels;
use crate::types::{LogId, NodeId, NodeInfo, Raft};
use crate::wire::{self, ForwardReply, Forwarded};

/// Commands waiting to be proposed; beyond this, RESOURCE_EXHAUSTED.
pub const PROPOSAL_QUEUE_MAX: usize = 4096;
/// Commands per Raft entry (and per forwarded batch).
pub const PROPOSAL_COMMANDS_MAX: usize = 256;
/// Approximate bytes per Raft entry (one command may exceed it alone).
pub const PROPOSAL_BYTES_MAX: usize = 256 * 1024;
/// Batches proposed to this node's Raft but not yet applied. One: commands
/// queue up and leave together (openraft appends each on its own); measured
/// better than two at 1, 16 and 64 clients (BENCHMARKS.md).
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 1;
/// Except for large commands (a ledger batch of thousands of transfers):
/// they already amortise the fsync on their own, and overlapping the next
/// one's append and replication with this one's apply is what pays.
pub const LARGE_PROPOSALS_IN_FLIGHT_MAX: usize = 2;
/// What counts as a large command (`Command::size_bytes`).
pub const LARGE_COMMAND_BYTES: usize = 64 * 1024;
/// Batches forwarded to the leader but not yet answered. Wider: the leader
/// batches again, and queueing twice would double the latency.
pub const FORWARDS_IN_FLIGHT_MAX: usize = 2;
/// How long a follower waits for the leader to answer a forwarded batch.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader waits for its own proposal's answer before the
/// proposal stops holding up the next batch, if it still leads (see
/// `propose_here`; a deposed leader lets go at once).
pub const PROPOSAL_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a proposal was refused before it was queued (this node stopping).
pub const PROPOSER_STOPPED: &str = "proposer stopped";

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// No leader reachable right now (election, leader change, lost peer):
    /// retry the same command after a back-off; dedup makes that safe.
    #[error("no leader reachable")]
    NotLeader,
    #[error("proposal queue full")]
    Overloaded,
    /// Refused as a whole (e.g. a membership change that names no member).
    #[error("{0}")]
    Refused(String),
    /// Refused for now: another membership change is not yet committed
    /// (openraft allows one at a time). Retried until the caller's budget
    /// runs out, then reported as `Refused`.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Fatal(String),
}

pub type ProposeResult = Result<(LogId, Response), ProposeError>;

struct Pending {
    cmd: Command,
    /// Proposed here or nowhere: commands a follower forwarded to us are not
    /// forwarded again (no ping-pong between nodes with stale leader views).
    local_only: bool,
    reply: oneshot::Sender<ProposeResult>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

struct Ctx {
    id: NodeId,
    raft: Raft,
    channels: Arc<PeerChannels>,
    removal: Arc<crate::removal::Removal>,
}

impl Proposer {
    pub fn start(
        id: NodeId,
        raft: Raft,
        channels: Arc<PeerChannels>,
        removal: Arc<crate::removal::Removal>,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(run(Arc::new(Ctx { id, raft, channels, removal }), rx));
        Proposer { tx }
    }

    /// Proposes one command through whichever node leads and waits for its
    /// own response.
    pub async fn propose(&self, cmd: Command) -> ProposeResult {
        self.submit(cmd, false).await
    }

    /// Proposes one command only if this node leads.
    pub async fn propose_local(&self, cmd: Command) -> ProposeResult {
        self.submit(cmd, true).await
    }

    async fn submit(&self, cmd: Command, local_only: bool) -> ProposeResult {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Pending { cmd, local_only, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ProposeError::Fatal(PROPOSER_STOPPED.into()),
        })?;
        rx.await.map_err(|_| ProposeError::Fatal("proposal dropped (node shutting down)".into()))?
    }
}

async fn run(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Pending>) {
    // A small batch takes every permit (one in flight, as measured best);
    // a batch led by a large command takes one.
    let proposals = Arc::new(Semaphore::new(LARGE_PROPOSALS_IN_FLIGHT_MAX));
    const _: () = assert!(PROPOSALS_IN_FLIGHT_MAX == 1, "small batches hold every permit");
    let forwards = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        let leads_here = current_leader(&ctx.raft).is_none_or(|(l, _)| l == ctx.id);
        let (slots, permits) = match (leads_here, first.cmd.size_bytes() >= LARGE_COMMAND_BYTES) {
            (true, true) => (&proposals, 1),
            (true, false) => (&proposals, LARGE_PROPOSALS_IN_FLIGHT_MAX as u32),
            (false, _) => (&forwards, 1),
        };
        // Waiting for a slot is what lets the next batch fill up.
        let Ok(permit) = slots.clone().acquire_many_owned(permits).await else { return };
        let mut bytes = first.cmd.size_bytes();
        let mut batch = vec![first];
        while batch.len() < PROPOSAL_COMMANDS_MAX && bytes < PROPOSAL_BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.cmd.size_bytes();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("strongbox_proposal_commands").record(batch.len() as f64);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            dispatch(&ctx, batch).await;
            drop(permit);
        });
    }
}

fn current_leader(raft: &Raft) -> Option<(NodeId, NodeInfo)> {
    let m = raft.server_metrics();
    let m = m.borrow();
    let leader = m.current_leader?;
    Some((leader, m.membership_config.membership().get_node(&leader)?.clone()))
}

async fn dispatch(ctx: &Ctx, batch: Vec<Pending>) {
    match current_leader(&ctx.raft).filter(|(l, _)| *l != ctx.id) {
        Some((leader_id, leader)) => {
            let (local_only, remote): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| p.local_only);
            for p in local_only {
                let _ = p.reply.send(Err(ProposeError::NotLeader));
            }
            if !remote.is_empty() {
                forward(ctx, leader_id, &leader, remote).await;
            }
        }
        None => propose_here(ctx, batch).await,
    }
}

/// How far ahead of the leader's clock a command's stamped time may be.
/// Apply's clock is the largest time applied and never goes back, so one
/// node whose clock ran ahead would move it forward for good (tokens and
/// pending transfers expiring early on every node). The leader caps each
/// command's time at its own clock plus this before proposing; the time
/// logged is the capped one, so apply stays deterministic.
pub const CLOCK_AHEAD_MS_MAX: u64 = 1_000;

/// How far behind the leader's clock a command's stamped time may be (a
/// forward takes milliseconds; the rest is a slow clock).
pub const CLOCK_BEHIND_MS_MAX: u64 = 1_000;

/// Caps every command's `time_ms` at `leader_now_ms + CLOCK_AHEAD_MS_MAX`
/// (token expiries move back with it: `Command::cap_time`); returns by how
/// much the furthest one was ahead of `leader_now_ms` (0: none was capped).
///
/// Times more than `CLOCK_BEHIND_MS_MAX` behind the leader's clock are
/// raised to that floor (`Command::floor_time`): with a node whose clock
/// runs slow stamping writes, the applied clock would lag, and a token
/// expired by the cluster's time would still pass the check inside apply.
pub fn cap_times(cmds: &mut [Command], leader_now_ms: u64) -> u64 {
    let cap = leader_now_ms.saturating_add(CLOCK_AHEAD_MS_MAX);
    let floor = leader_now_ms.saturating_sub(CLOCK_BEHIND_MS_MAX);
    let mut ahead_ms = 0;
    for c in cmds.iter_mut() {
        if c.floor_time(floor) > 0 {
            metrics::counter!("strongbox_command_times_raised_total").increment(1);
        }
        let back_ms = c.cap_time(cap);
        if back_ms > 0 {
            ahead_ms = ahead_ms.max(back_ms + CLOCK_AHEAD_MS_MAX);
        }
    }
    ahead_ms
}

/// Why a leader's own proposal was let go before openraft answered it.
enum Unanswered {
    /// This node stopped leading the term it proposed in.
    Deposed,
    /// `PROPOSAL_ANSWER_TIMEOUT` passed.
    Timeout,
}

async fn propose_here(ctx: &Ctx, batch: Vec<Pending>) {
    let (mut cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let leader_now_ms = crate::clock::now_ms();
    let ahead_ms = cap_times(&mut cmds, leader_now_ms);
    if ahead_ms > 0 {
        metrics::counter!("strongbox_command_times_capped_total").increment(1);
        // At most one warning per 10 s: a node whose clock runs fast sends
        // such commands in every batch.
        static WARNED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now_ms = leader_now_ms;
        let last_ms = WARNED_MS.load(std::sync::atomic::Ordering::Relaxed);
        if now_ms.saturating_sub(last_ms) >= 10_000
            && WARNED_MS
                .compare_exchange(
                    last_ms,
                    now_ms,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(
                ahead_ms,
                "a command was stamped ahead of this leader's clock (does a node's clock run fast?); its time is capped"
            );
        }
    }
    // openraft 0.9 answers a proposal only when its entry is applied here
    // or truncated here. A leader deposed around its entry can wait for
    // neither: an image installed over it skips the apply (jepsen/ saw
    // every later write stall behind one for a minute, under pauses, kills
    // and partitions). So the proposal is let go as soon as this node no
    // longer leads the term it proposed in, and in any case after
    // `PROPOSAL_ANSWER_TIMEOUT`. The outcome is unknown either way: the
    // callers retry with the same request ids (deduplicated in apply), and
    // the next batch goes.
    let deposed = deposed(&ctx.raft, ctx.id);
    let written = tokio::select! {
        written = ctx.raft.client_write(cmds) => Ok(written),
        () = deposed => Err(Unanswered::Deposed),
        () = tokio::time::sleep(PROPOSAL_ANSWER_TIMEOUT) => Err(Unanswered::Timeout),
    };
    let written = match written {
        Ok(written) => written,
        Err(why) => {
            match why {
                Unanswered::Deposed => {
                    tracing::info!(
                        commands = replies.len(),
                        "no longer leading with a proposal unanswered; its callers retry"
                    )
                }
                Unanswered::Timeout => tracing::warn!(
                    timeout_ms = PROPOSAL_ANSWER_TIMEOUT.as_millis() as u64,
                    commands = replies.len(),
                    "a proposal got no answer in time; its callers retry and the next batch goes"
                ),
            }
            let reason = match why {
                Unanswered::Deposed => "deposed",
                Unanswered::Timeout => "timeout",
            };
            metrics::counter!("strongbox_proposals_unanswered_total", "reason" => reason).increment(1);
            for reply in replies {
                let _ = reply.send(Err(ProposeError::NotLeader));
            }
            return;
        }
    };
    match written {
        Ok(r) => {
            assert_eq!(r.data.len(), replies.len(), "one response per proposed command");
            for (reply, response) in replies.into_iter().zip(r.data) {
                let _ = reply.send(Ok((r.log_id, response)));
            }
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                    // openraft's own answer: the entry was truncated here
                    // (a new leader's log replaced it), or this node no
                    // longer led when the write reached its core.
                    metrics::counter!("strongbox_proposals_refused_total", "reason" => "forward_to_leader")
                        .increment(1);
                    ProposeError::NotLeader
                }
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    ProposeError::Fatal(format!("unexpected membership error for a write: {e}"))
                }
                RaftError::Fatal(f) => ProposeError::Fatal(f.to_string()),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Resolves once this node no longer leads the term it leads at the call:
/// a proposal or membership change made here may then never be answered
/// (see `propose_here`). If the metrics do not show it leading yet (they
/// trail the core: a node that has just won an election may accept a
/// proposal before its metrics say so), the term is the first one they
/// show it leading; a node that does not lead has its request refused at
/// once, and the future is dropped with it.
pub(crate) fn deposed(raft: &Raft, id: NodeId) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut metrics = raft.server_metrics();
    // Read at the call, not at the first poll: a deposition in between
    // must count.
    let (term, leading) = {
        let m = metrics.borrow();
        (m.vote.leader_id.term, m.current_leader == Some(id))
    };
    async move {
        let term = if leading {
            term
        } else {
            match metrics.wait_for(|m| m.current_leader == Some(id)).await {
                Ok(m) => m.vote.leader_id.term,
                // The node is shutting down: nothing will answer.
                Err(_) => return,
            }
        };
        let _ = metrics.wait_for(|m| m.vote.leader_id.term != term || m.current_leader != Some(id)).await;
    }
}

async fn forward(ctx: &Ctx, leader_id: NodeId, leader: &NodeInfo, batch: Vec<Pending>) {
    metrics::counter!("strongbox_forwarded_total").increment(batch.len() as u64);
    let (cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    let call = forward_rpc(&ctx.channels, leader, Forwarded::Writes(cmds));
    let results = match until_leader_changes(&ctx.raft, leader_id, call).await {
        // The leader stopping with these in flight: outcome unknown, and
        // another leader takes over; the caller retries with the same ids.
        Ok(ForwardReply::Writes(results)) if results.len() == n => results
            .into_iter()
            .map(|r| match r {
                Err(ProposeError::Fatal(why)) => {
                    tracing::debug!(
                        why = why.as_str(),
                        "the leader stopped with a forwarded write in flight"
                    );
                    Err(ProposeError::NotLeader)
                }
                other => other,
            })
            .collect(),
        Ok(other) => {
            vec![Err(ProposeError::Fatal(format!("leader answered a write batch with {other:?}"))); n]
        }
        // Refused unread: this node is no member (see `removal`).
        Err(status) if crate::removal::is_refusal(&status) => {
            ctx.removal.told(ctx.raft.metrics().borrow().last_applied.map(|l| l.index), &status);
            let why = crate::removal::client_message(ctx.id, status.message());
            vec![Err(ProposeError::Refused(why)); n]
        }
        Err(status) => {
            // Unknown outcome: the caller retries with the same request ids.
            tracing::debug!(%status, "forwarding to the leader failed");
            vec![Err(ProposeError::NotLeader); n]
        }
    };
    for (reply, res) in replies.into_iter().zip(results) {
        let _ = reply.send(res);
    }
}

/// Runs a call to the leader, abandoning it (UNAVAILABLE) as soon as this
/// node learns of another leader. A partitioned or paused old leader never
/// answers (its packets are dropped, no reset comes), and waiting out the
/// RPC timeout would stall every write queued behind it long after the
/// election. Abandoning is safe: the outcome is unknown either way, and the
/// retry carries the same request ids.
pub(crate) async fn until_leader_changes<T>(
    raft: &Raft,
    leader_id: NodeId,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    // The server metrics change only with the vote, role, leader or
    // membership; the full metrics change with every append and apply, and
    // would wake each call in flight several times per entry.
    let mut metrics = raft.server_metrics();
    let changed = metrics.wait_for(|m| m.current_leader != Some(leader_id));
    tokio::select! {
        r = call => r,
        _ = changed => Err(tonic::Status::unavailable(format!("node {leader_id} is no longer the leader"))),
    }
}

/// Sends a forwarded request to the leader's peer port: on the forward
/// stream to it, or as a unary call to a peer of an older release. One
/// deadline covers opening the stream, the call and its answer.
pub(crate) async fn forward_rpc(
    channels: &PeerChannels,
    leader: &NodeInfo,
    fwd: Forwarded,
) -> Result<ForwardReply, tonic::Status> {
    let call = async {
        if let Some(link) = channels.forward_link(&leader.raft_addr).await? {
            return link.call(&fwd).await;
        }
        let mut client =
            channels.client(&leader.raft_addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(wire::encode(&fwd));
        req.set_timeout(FORWARD_TIMEOUT);
        channels.stamp(&mut req);
        let reply = client.forward(req).await?;
        wire::decode(reply.get_ref())
    };
    tokio::time::timeout(FORWARD_TIMEOUT, call).await.map_err(|_| {
        tonic::Status::deadline_exceeded(format!("no answer from the leader within {FORWARD_TIMEOUT:?}"))
    })?
}
