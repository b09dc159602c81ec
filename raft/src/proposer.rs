//! Group commit on the leader: concurrent commands are coalesced into one
//! Raft entry, so they share one log append, one fsync, one replication
//! round and one apply batch.
//!
//! openraft 0.9 appends (and fsyncs) every `client_write` on its own, so
//! without this each write pays a full fsync on the leader's critical path.
//! At most `PROPOSALS_IN_FLIGHT_MAX` entries are in flight; while they are,
//! new commands queue up and leave together as the next entry. The queue is
//! bounded: a full queue is an explicit refusal, not unbounded memory.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use strongbox_store::{Command, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::types::{LogId, NodeId, NodeInfo, Raft};

/// Commands waiting to be proposed; beyond this, RESOURCE_EXHAUSTED.
pub const PROPOSAL_QUEUE_MAX: usize = 4096;
/// Commands per Raft entry.
pub const PROPOSAL_COMMANDS_MAX: usize = 256;
/// Approximate bytes per Raft entry (one command may exceed it alone).
pub const PROPOSAL_BYTES_MAX: usize = 256 * 1024;
/// Entries proposed but not yet applied.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

#[derive(Debug, Clone)]
pub enum ProposeError {
    /// Not the leader; the leader if known.
    NotLeader(Option<(NodeId, NodeInfo)>),
    Overloaded,
    /// Refused as a whole (e.g. a membership change already in progress).
    Refused(String),
    Fatal(String),
}

type Reply = oneshot::Sender<Result<(LogId, Response), ProposeError>>;

struct Pending {
    cmd: Command,
    reply: Reply,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task for this node's Raft.
    pub fn start(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_MAX);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes one command through this node's Raft (which must lead) and
    /// waits for its own response.
    pub async fn propose(&self, cmd: Command) -> Result<(LogId, Response), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Pending { cmd, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ProposeError::Fatal("proposer stopped".into()),
        })?;
        rx.await.map_err(|_| ProposeError::Fatal("proposal dropped (node shutting down)".into()))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch fill up.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
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
        let raft = raft.clone();
        tokio::spawn(async move {
            let (cmds, replies): (Vec<Command>, Vec<Reply>) =
                batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let res = raft.client_write(cmds).await;
            drop(permit);
            match res {
                Ok(r) => {
                    assert_eq!(r.data.len(), replies.len(), "one response per proposed command");
                    for (reply, response) in replies.into_iter().zip(r.data) {
                        let _ = reply.send(Ok((r.log_id, response)));
                    }
                }
                Err(e) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            ProposeError::NotLeader(f.leader_id.zip(f.leader_node))
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
        });
    }
}
