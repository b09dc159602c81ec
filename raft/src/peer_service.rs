//! The peer port's gRPC service: Raft RPCs in, forwarded writes and read-index
//! requests from followers. Reachable only by holders of a cluster certificate.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use openraft::raft::AppendEntriesResponse;
use openraft::{Snapshot, Vote};
use strongbox_proto::raft::v1::raft_peer_server::RaftPeer;
use strongbox_proto::raft::v1::{Empty, Payload, ReadIndexRequest, ReadIndexResponse};
use strongbox_store::snapshot::FrameWriter;
use strongbox_store::DbError;
use tokio::sync::{mpsc, watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use crate::forward_link::FORWARD_STREAM_CALLS_MAX;
use crate::proposer::FORWARD_TIMEOUT;
use crate::removal;

use crate::types::{NodeId, SnapshotMeta};

use crate::node::RaftNode;
use crate::pre_vote::{self, PreVoteRequest};
use crate::wire::{self, ForwardReply, Forwarded};

pub struct PeerService {
    node: RaftNode,
    /// Turns true when this node stops: the long-lived streams end then
    /// (the server's shutdown waits for every connection to close, and a
    /// follower's forwards must move on to the next leader, not reach a
    /// Raft that is shutting down).
    stop: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(node: RaftNode, stop: watch::Receiver<bool>) -> Self {
        PeerService { node, stop }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A stream of answers to a peer's stream of requests.
pub type PeerAnswers = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = wire::decode(req.get_ref())?;
        let quorum_age = req.get_ref().leader_quorum_age_ms;
        let res = self.node.raft.append_entries(rpc).await;
        note_leader_contact(&self.node, &res, quorum_age);
        Ok(Response::new(wire::encode(&res)))
    }

    type AppendEntriesStreamStream = PeerAnswers;

    /// Each request answered in order (`then` runs one at a time); the
    /// answers end when the sender ends its stream, or with the status of a
    /// broken or undecodable request.
    async fn append_entries_stream(
        &self,
        req: Request<Streaming<Payload>>,
    ) -> Result<Response<PeerAnswers>, Status> {
        let node = self.node.clone();
        let answers = req.into_inner().take_until(stopped(self.stop.clone())).then(move |msg| {
            let node = node.clone();
            async move {
                let msg = msg?;
                let rpc = wire::decode(&msg)?;
                let res = node.raft.append_entries(rpc).await;
                note_leader_contact(&node, &res, msg.leader_quorum_age_ms);
                Ok(wire::encode(&res))
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = wire::decode(req.get_ref())?;
        if let Some(refusal) = self.node.refuse_vote_while_leading() {
            let res: Result<_, openraft::error::RaftError<crate::types::NodeId>> = Ok(refusal);
            return Ok(Response::new(wire::encode(&res)));
        }
        let res = self.node.raft.vote(rpc).await;
        if matches!(&res, Ok(r) if r.vote_granted) {
            // Granting a vote restarts the election timer, as in Raft.
            self.node.contact.touch();
        }
        Ok(Response::new(wire::encode(&res)))
    }

    async fn pre_vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let ask: PreVoteRequest = wire::decode(req.get_ref())?;
        let granted =
            pre_vote::answer(&self.node.raft, &self.node.contact, &self.node.election_timeouts, &ask);
        tracing::debug!(candidate = ask.candidate, granted, "pre-vote asked");
        Ok(Response::new(wire::encode(&granted)))
    }

    /// Receives a whole image (see `network::full_snapshot`): each frame is
    /// checked and sealed with this node's keys into an unnamed file, one
    /// frame in memory at a time; openraft installs it once the end frame
    /// has arrived.
    async fn install_snapshot(&self, req: Request<Streaming<Payload>>) -> Result<Response<Payload>, Status> {
        let mut stream = req.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta) = wire::decode(&first)?;
        // The sender leads (or did): until install_full_snapshot, openraft
        // here would hear nothing from it and campaign mid-stream.
        let hold = self.node.hold_elections_for(&vote);
        let db = self.node.sm.db().clone();
        // Held until the install below has copied the image under this
        // node's keys: no key is retired under frames received meanwhile.
        let gate = db.snapshot_gate().clone();
        let _keys = tokio::task::spawn_blocking(move || gate.enter())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let dir = db.snapshot_dir().to_path_buf();
        let mut w = off_runtime(move || {
            std::fs::create_dir_all(&dir).map_err(|e| DbError::Format(format!("{}: {e}", dir.display())))?;
            FrameWriter::new(crate::sm_store::snapshot_receive_file(&dir)?, db.codec().clone())
        })
        .await?;
        while let Some(frame) = next_frame(&mut stream).await? {
            if hold.is_some() {
                // The current leader is talking to this node: others'
                // pre-votes are refused while frames come (not for as long
                // as the hold waits for a next frame that may never come).
                self.node.contact.touch();
            }
            w = off_runtime(move || {
                let mut w = w;
                w.push_plain(&frame.data)?;
                Ok(w)
            })
            .await?;
        }
        if !w.ended() {
            return Err(Status::invalid_argument("snapshot stream ended before the image's end frame"));
        }
        let file = off_runtime(move || w.finish()).await?;
        let snapshot = Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) };
        // Until openraft answers, the log purge it runs meanwhile waits
        // for the image to be in (see `LogStore::purge`). On a task of its
        // own: a sender gone mid-install (a leader crash, a reset stream)
        // drops this handler, and with it the guard, while the install and
        // the purge waiting for it go on.
        let pending = self.node.installs.start(snapshot.meta.last_log_id.map_or(0, |l| l.index));
        let raft = self.node.raft.clone();
        let res = tokio::spawn(async move {
            let _pending = pending;
            raft.install_full_snapshot(vote, snapshot).await
        })
        .await
        .map_err(|e| Status::internal(format!("snapshot install task: {e}")))?;
        Ok(Response::new(wire::encode(&res)))
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        if let Some(refused) = self.node.refuse_non_member(removal::sender(req.metadata())) {
            return Err(refused);
        }
        let fwd: Forwarded = wire::decode(req.get_ref())?;
        Ok(Response::new(wire::encode(&run_forwarded(&self.node, fwd).await)))
    }

    type ForwardStreamStream = PeerAnswers;

    /// Forwarded requests as `(seq, Forwarded)` messages (see
    /// `forward_link`), each run on its own task, at most
    /// `FORWARD_STREAM_CALLS_MAX` at once and each for at most
    /// `FORWARD_TIMEOUT` (the follower has given up by then, as a unary
    /// call's deadline would); answers `(seq, ForwardReply)` go back as
    /// they finish.
    async fn forward_stream(
        &self,
        req: Request<Streaming<Payload>>,
    ) -> Result<Response<PeerAnswers>, Status> {
        let sender = removal::sender(req.metadata());
        if let Some(refused) = self.node.refuse_non_member(sender) {
            return Err(refused);
        }
        let mut inbound = req.into_inner();
        let (answers, rx) = mpsc::channel(FORWARD_STREAM_CALLS_MAX);
        let slots = Arc::new(Semaphore::new(FORWARD_STREAM_CALLS_MAX));
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return, // the follower ended the stream
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        return;
                    }
                };
                let (seq, fwd): (u64, Forwarded) = match wire::decode(&msg) {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = answers.send(Err(status)).await;
                        return;
                    }
                };
                // Removed while its stream was open: the stream ends, and
                // the sender's next one is refused at the start, so it learns.
                if let Some(refused) = node.refuse_non_member(sender) {
                    let _ = answers.send(Err(refused)).await;
                    return;
                }
                let (node, answers) = (node.clone(), answers.clone());
                tokio::spawn(async move {
                    if let Ok(reply) = tokio::time::timeout(FORWARD_TIMEOUT, run_forwarded(&node, fwd)).await
                    {
                        let _ = answers.send(Ok(wire::encode(&(seq, reply)))).await;
                    }
                    drop(slot);
                });
            }
        });
        let answers = tokio_stream::wrappers::ReceiverStream::new(rx).take_until(stopped(self.stop.clone()));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        if let Some(refused) = self.node.refuse_non_member(removal::sender(req.metadata())) {
            return Err(refused);
        }
        let index = self.node.leader_read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn trigger_election(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        if self.node.is_stopping() {
            return Err(Status::failed_precondition(format!("node {} is stopping", self.node.id)));
        }
        self.node.raft.trigger().elect().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }
}

/// An AppendEntries this node accepted (anything but "your vote is stale")
/// came from the live leader: its election timer starts over. One that
/// matched its log also dates its data (local reads' staleness), by the
/// leader's last quorum acknowledgement it carries.
fn note_leader_contact<E>(
    node: &RaftNode,
    res: &Result<AppendEntriesResponse<NodeId>, E>,
    leader_quorum_age_ms: Option<u64>,
) {
    match res {
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) => {
            let age = match leader_quorum_age_ms {
                // A leader of an older release: dated by its message.
                None => Some(Duration::ZERO),
                Some(u64::MAX) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            };
            node.contact.touch_in_step(age)
        }
        Ok(AppendEntriesResponse::Conflict) => node.contact.touch(),
        Ok(AppendEntriesResponse::HigherVote(_)) | Err(_) => {}
    }
}

async fn run_forwarded(node: &RaftNode, fwd: Forwarded) -> ForwardReply {
    match fwd {
        Forwarded::Writes(cmds) => {
            // Each joins this node's next batch; none is forwarded again.
            let results = futures::future::join_all(cmds.into_iter().map(|c| node.propose_local(c)));
            ForwardReply::Writes(results.await)
        }
        Forwarded::Membership(op) => ForwardReply::Membership(node.membership_here(op).await),
        Forwarded::TransferLeader { to, budget_ms } => ForwardReply::TransferLeader(
            node.transfer_leader_here(to, Duration::from_millis(budget_ms)).await,
        ),
    }
}

/// A sender silent this long is gone (paused, cut off): the receive ends,
/// elections resume here, and the leader retries the transfer later.
pub const SNAPSHOT_FRAME_WAIT_MS: u64 = 5_000;

async fn next_frame(stream: &mut Streaming<Payload>) -> Result<Option<Payload>, Status> {
    let wait = Duration::from_millis(SNAPSHOT_FRAME_WAIT_MS);
    tokio::time::timeout(wait, stream.message()).await.map_err(|_| {
        Status::deadline_exceeded(format!("no snapshot frame for {SNAPSHOT_FRAME_WAIT_MS} ms; abandoned"))
    })?
}

/// File work of a snapshot receive, off the async runtime's threads. A bad
/// frame is the sender's fault (INVALID_ARGUMENT); the transfer is retried.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(format!("snapshot image: {e}")))
}
