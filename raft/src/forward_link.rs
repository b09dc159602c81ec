//! Forwarded write batches travel to the leader as messages on one
//! long-lived stream per leader address (the proto's `ForwardStream`),
//! instead of one unary call each: a follower forwards about one batch per
//! Raft entry, and each unary call paid a new HTTP/2 stream (headers,
//! trailers, a server task). Calls overlap (`FORWARDS_IN_FLIGHT_MAX`), so
//! each message carries a sequence number and answers come back in any
//! order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
use strongbox_proto::raft::v1::Payload;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::wire::{self, ForwardReply, Forwarded};

/// Forwarded batches one stream carries at once, on both ends: the sender
/// waits for room, the receiver stops reading (HTTP/2 flow control then
/// holds the sender).
pub const FORWARD_STREAM_CALLS_MAX: usize = 16;

/// One open stream to a leader's peer port.
pub struct ForwardLink {
    requests: mpsc::Sender<Payload>,
    waiting: Arc<Mutex<Waiting>>,
}

#[derive(Default)]
struct Waiting {
    next_seq: u64,
    calls: HashMap<u64, oneshot::Sender<ForwardReply>>,
    /// The stream ended or broke: every call fails, a new link is opened.
    closed: bool,
}

/// Why a call on a peer stream (forward or AppendEntries) failed.
pub enum PeerStreamError {
    /// The peer does not serve the stream (an older release): use unary calls.
    Unimplemented,
    Status(Status),
}

impl ForwardLink {
    pub async fn open(
        mut client: RaftPeerClient<Channel>,
        sender: Option<crate::types::NodeId>,
    ) -> Result<Arc<ForwardLink>, PeerStreamError> {
        let (requests, rx) = mpsc::channel(FORWARD_STREAM_CALLS_MAX);
        // Our half of the stream ends with the answers (`read_answers` drops
        // `ended`): a leader that stops ends its half, and its graceful
        // shutdown waits for both halves to close.
        let (ended, end) = oneshot::channel::<()>();
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(rx).take_until(end);
        let mut call = tonic::Request::new(outgoing);
        if let Some(id) = sender {
            crate::removal::stamp(&mut call, id);
        }
        let answers = match client.forward_stream(call).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::Unimplemented => return Err(PeerStreamError::Unimplemented),
            Err(s) => return Err(PeerStreamError::Status(s)),
        };
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        tokio::spawn(read_answers(answers, waiting.clone(), ended));
        Ok(Arc::new(ForwardLink { requests, waiting }))
    }

    pub fn is_closed(&self) -> bool {
        self.waiting.lock().expect("forward link poisoned").closed || self.requests.is_closed()
    }

    /// Sends one forwarded request and waits for its answer. Dropping the
    /// future (a timeout, a leader change) forgets the call; its answer, if
    /// it comes, is discarded.
    pub async fn call(&self, fwd: &Forwarded) -> Result<ForwardReply, Status> {
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut w = self.waiting.lock().expect("forward link poisoned");
            if w.closed {
                return Err(closed());
            }
            let seq = w.next_seq;
            w.next_seq += 1;
            w.calls.insert(seq, tx);
            seq
        };
        let _forget = Forget { waiting: &self.waiting, seq };
        self.requests.send(wire::encode(&(seq, fwd))).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())
    }
}

fn closed() -> Status {
    Status::unavailable("the forward stream to the leader closed")
}

struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    seq: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.calls.remove(&self.seq);
        }
    }
}

async fn read_answers(
    mut answers: Streaming<Payload>,
    waiting: Arc<Mutex<Waiting>>,
    _ended: oneshot::Sender<()>,
) {
    loop {
        let answer = match answers.message().await {
            Ok(Some(p)) => wire::decode::<(u64, ForwardReply)>(&p),
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "forward stream to the leader broke");
                break;
            }
        };
        let (seq, reply) = match answer {
            Ok(a) => a,
            Err(status) => {
                tracing::warn!(%status, "undecodable answer on the forward stream");
                break;
            }
        };
        let call = waiting.lock().expect("forward link poisoned").calls.remove(&seq);
        if let Some(call) = call {
            let _ = call.send(reply);
        }
    }
    let mut w = waiting.lock().expect("forward link poisoned");
    w.closed = true;
    w.calls.clear(); // each caller sees the stream closed
}
