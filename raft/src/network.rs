//! Raft RPCs to peers over tonic with mutual TLS.
//!
//! One lazily connected `Channel` per peer address, shared by every
//! replication stream, vote and forwarded write (openraft calls `new_client`
//! per stream and per read-index round, so channels are cached, not built).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use serde::de::DeserializeOwned;
use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
use strongbox_proto::raft::v1::Payload;
use strongbox_store::codec::Codec;
use strongbox_store::snapshot::FrameReader;
use strongbox_store::snapshot_gate::SnapshotGate;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::check_quorum::Silence;
use crate::config::PEER_MESSAGE_BYTES_MAX;
use crate::forward_link::{ForwardLink, PeerStreamError};
use crate::quorum_clock::QuorumClock;
use crate::types::{NodeId, NodeInfo, TypeConfig};
use crate::wire;

/// The TLS server name every node certificate carries, so peers verify each
/// other whatever address they listen on.
pub const PEER_TLS_NAME: &str = "strongbox-node";

pub struct PeerChannels {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Forward streams by leader address (see `forward_link`), each behind
    /// its own lock: opening one never holds up forwards to another.
    links: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Link>>>>>,
    /// Whether the last Raft RPC to each address got through: a peer going
    /// down or coming back is logged once, not on every retry.
    reachable: Mutex<HashMap<String, bool>>,
    /// When each address last answered a Raft RPC (heartbeats included):
    /// whether a membership change can commit depends on who answers now.
    answered: Mutex<HashMap<String, Instant>>,
    /// This node's id, named on the peer requests the leader answers for
    /// it (see `removal`).
    sender: std::sync::OnceLock<NodeId>,
}

enum Link {
    Open(Arc<ForwardLink>),
    /// The peer had no forward stream (an older release) when asked at
    /// this instant.
    Unary(Instant),
}

/// How long a peer that answered a stream with UNIMPLEMENTED gets unary
/// calls before the stream is tried again: it may have been upgraded
/// since (a rolling upgrade), and a node should not need a restart to
/// use its peers' streams.
pub const UNARY_FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long opening a forward stream may take (one round trip when the
/// leader is there).
const LINK_OPEN_TIMEOUT: Duration = Duration::from_secs(3);

impl PeerChannels {
    /// `tls: None` only behind the explicit `--insecure` flag.
    pub fn new(tls: Option<ClientTlsConfig>) -> Arc<Self> {
        Arc::new(PeerChannels {
            tls,
            channels: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            reachable: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            sender: std::sync::OnceLock::new(),
        })
    }

    /// Sets the id this node's peer requests name as their sender (once).
    pub fn set_sender(&self, id: NodeId) {
        let _ = self.sender.set(id);
    }

    /// Names this node as the sender of a peer request (see `removal`).
    pub fn stamp<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(id) = self.sender.get() {
            crate::removal::stamp(req, *id);
        }
    }

    /// Records whether a Raft RPC to `target` got through (`failure: None`)
    /// or found it unreachable, and logs the changes only. openraft logs
    /// every failed replication attempt (at ERROR, twice a second for a
    /// peer that is down); the node's default log filter leaves those out,
    /// and this says it once.
    pub fn note_reachability(&self, target: NodeId, addr: &str, failure: Option<&tonic::Status>) {
        if failure.is_none() {
            let mut answered = self.answered.lock().expect("answer time map poisoned");
            match answered.get_mut(addr) {
                Some(at) => *at = Instant::now(),
                None => {
                    answered.insert(addr.to_string(), Instant::now());
                }
            }
        }
        let was = {
            let mut reachable = self.reachable.lock().expect("reachability map poisoned");
            let was = reachable.get(addr).copied();
            if was == Some(failure.is_none()) {
                // No change: the common case, once per AppendEntries.
                return;
            }
            reachable.insert(addr.to_string(), failure.is_none());
            was
        };
        metrics::gauge!("strongbox_peer_reachable", "peer" => target.to_string()).set(if failure.is_none() {
            1.0
        } else {
            0.0
        });
        match (was, failure) {
            (Some(true) | None, Some(s)) => {
                tracing::warn!(peer = target, addr, code = ?s.code(), reason = s.message(), "peer unreachable")
            }
            (Some(false), None) => tracing::info!(peer = target, addr, "peer reachable again"),
            _ => {}
        }
    }

    /// Whether the last Raft RPC to this address failed (no RPC yet: not
    /// known to be down).
    pub fn known_unreachable(&self, addr: &str) -> bool {
        self.reachable.lock().expect("reachability map poisoned").get(addr) == Some(&false)
    }

    /// Whether this address answered a Raft RPC within `window`.
    pub fn answered_within(&self, addr: &str, window: Duration) -> bool {
        self.answered
            .lock()
            .expect("answer time map poisoned")
            .get(addr)
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// The open forward stream to this address, opened if there is none or
    /// the last one closed; `None` when the peer only takes unary calls.
    pub async fn forward_link(&self, addr: &str) -> Result<Option<Arc<ForwardLink>>, tonic::Status> {
        let slot = self
            .links
            .lock()
            .expect("forward link map poisoned")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        match &*slot {
            Some(Link::Unary(since)) if since.elapsed() < UNARY_FALLBACK_RETRY_AFTER => return Ok(None),
            Some(Link::Open(link)) if !link.is_closed() => return Ok(Some(link.clone())),
            _ => {}
        }
        let client = self.client(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let opened =
            tokio::time::timeout(LINK_OPEN_TIMEOUT, ForwardLink::open(client, self.sender.get().copied()))
                .await
                .map_err(|_| {
                    tonic::Status::unavailable(format!("no answer from {addr} opening a forward stream"))
                })?;
        match opened {
            Ok(link) => {
                *slot = Some(Link::Open(link.clone()));
                Ok(Some(link))
            }
            Err(PeerStreamError::Unimplemented) => {
                tracing::info!(peer = addr, "peer has no forward stream; using unary calls for now");
                *slot = Some(Link::Unary(Instant::now()));
                Ok(None)
            }
            Err(PeerStreamError::Status(s)) => Err(s),
        }
    }

    /// Drops the channels, forward streams and reachability kept for
    /// addresses outside `keep`: members come and go (a replaced machine, a
    /// pod with a new address), and what was cached for the old ones would
    /// otherwise stay for the life of the process. A dropped entry is only a
    /// cache: the next call to that address builds it again.
    pub fn retain_addresses(&self, keep: &HashSet<String>) {
        self.channels.lock().expect("peer channel map poisoned").retain(|a, _| keep.contains(a));
        self.links.lock().expect("forward link map poisoned").retain(|a, _| keep.contains(a));
        self.reachable.lock().expect("reachability map poisoned").retain(|a, _| keep.contains(a));
        self.answered.lock().expect("answer time map poisoned").retain(|a, _| keep.contains(a));
    }

    /// Keeps the caches to the members' addresses for as long as `raft`
    /// runs (see `retain_addresses`).
    pub fn follow_membership(self: &Arc<Self>, raft: &crate::types::Raft) {
        let channels = Arc::downgrade(self);
        // Server metrics change with the vote, leader and membership only.
        let mut metrics = raft.server_metrics();
        tokio::spawn(async move {
            let mut led = false;
            let mut peers: HashSet<NodeId> = HashSet::new();
            loop {
                let (keep, leads, members) = {
                    let m = metrics.borrow_and_update();
                    let nodes = m.membership_config.membership().nodes();
                    let (keep, members): (HashSet<String>, HashSet<NodeId>) = nodes
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, n)| (n.raft_addr.clone(), *id))
                        .unzip();
                    (keep, m.current_leader == Some(m.id), members)
                };
                let Some(channels) = channels.upgrade() else { return };
                if !members.is_empty() {
                    channels.retain_addresses(&keep);
                }
                // Only a leader reaches its peers steadily: once it stops
                // leading, or a peer leaves, what was last seen is no
                // longer known, and must not stand as "down" (or "up").
                // (A peer that left was dropped from the map above.)
                let deposed = led && !leads;
                let gone: Vec<NodeId> = if deposed {
                    peers.iter().copied().collect()
                } else {
                    peers.difference(&members).copied().collect()
                };
                if !gone.is_empty() {
                    channels.reachability_unknown(&gone, deposed);
                }
                (led, peers) = (leads, members);
                drop(channels);
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Marks these peers' reachability unknown: their gauge reads NaN until
    /// the next Raft RPC to them sets it again. `forget`: a leader that
    /// stepped down also forgets what it saw (a later term starts afresh).
    fn reachability_unknown(&self, ids: &[NodeId], forget: bool) {
        if forget {
            self.reachable.lock().expect("reachability map poisoned").clear();
        }
        for id in ids {
            metrics::gauge!("strongbox_peer_reachable", "peer" => id.to_string()).set(f64::NAN);
        }
    }

    #[cfg(test)]
    fn cached_addresses(&self) -> usize {
        self.channels.lock().expect("peer channel map poisoned").len()
    }

    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, tonic::transport::Error> {
        let mut map = self.channels.lock().expect("peer channel map poisoned");
        let channel = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
                    .connect_timeout(Duration::from_millis(1000))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                if let Some(tls) = &self.tls {
                    ep = ep.tls_config(tls.clone())?;
                }
                let c = ep.connect_lazy();
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }
}

#[derive(Clone)]
pub struct NetworkFactory {
    channels: Arc<PeerChannels>,
    silence: Silence,
    quorum: QuorumClock,
    /// Opens this node's snapshot image frames before they are sent.
    codec: Codec,
    /// Held while an image is read for sending (no key retired under it).
    gate: Arc<SnapshotGate>,
}

impl NetworkFactory {
    pub fn new(
        channels: Arc<PeerChannels>,
        silence: Silence,
        quorum: QuorumClock,
        codec: Codec,
        gate: Arc<SnapshotGate>,
    ) -> Self {
        NetworkFactory { channels, silence, quorum, codec, gate }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            channels: self.channels.clone(),
            silence: self.silence.clone(),
            quorum: self.quorum.clone(),
            codec: self.codec.clone(),
            gate: self.gate.clone(),
            append_stream: None,
            append_unary_since: None,
        }
    }
}

/// The open AppendEntries stream of one replication stream (see the proto's
/// `AppendEntriesStream`): requests go out on `requests`, answers come back
/// in order on `answers`.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<Payload>,
    answers: tonic::Streaming<Payload>,
}

pub struct PeerClient {
    target: NodeId,
    node: NodeInfo,
    channels: Arc<PeerChannels>,
    silence: Silence,
    quorum: QuorumClock,
    codec: Codec,
    gate: Arc<SnapshotGate>,
    /// Taken out for each call and put back only once its answer arrived:
    /// a call openraft abandons mid-way drops the stream with it, so no
    /// late answer is ever read as the next call's.
    append_stream: Option<AppendStream>,
    /// When the peer answered the stream with UNIMPLEMENTED: unary calls
    /// until `UNARY_FALLBACK_RETRY_AFTER` has passed.
    append_unary_since: Option<Instant>,
}

/// Frames read ahead of the snapshot stream (each at most
/// `snapshot::FRAME_BYTES_MAX`): what sending a snapshot holds in memory.
const SNAPSHOT_FRAMES_AHEAD: usize = 2;
/// How long one frame may take to reach the peer before the transfer is
/// abandoned (openraft retries it later).
const SNAPSHOT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

/// Maps a transport or gRPC failure to what openraft should do about it.
fn map_status<E: std::error::Error>(status: tonic::Status, entries_hint: u64) -> RpcErr<E> {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        Code::ResourceExhausted | Code::OutOfRange => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries_hint.max(1)))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

/// A leader's message withheld by `check_quorum` (the leader lost its quorum).
fn silenced<E: std::error::Error>() -> RpcErr<E> {
    let e = std::io::Error::other("leader without a quorum is silent (check_quorum)");
    RPCError::Unreachable(Unreachable::new(&e))
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, tonic::Status> {
        self.channels
            .client(&self.node.raft_addr)
            .map_err(|e| tonic::Status::unavailable(format!("bad peer address {}: {e}", self.node.raft_addr)))
    }

    fn unwrap_remote<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        reply: Result<tonic::Response<strongbox_proto::raft::v1::Payload>, tonic::Status>,
        entries_hint: u64,
    ) -> Result<T, RpcErr<E>> {
        let payload = match reply {
            Ok(r) => {
                self.channels.note_reachability(self.target, &self.node.raft_addr, None);
                r.into_inner()
            }
            Err(s) => {
                let err = map_status(s.clone(), entries_hint);
                if matches!(err, RPCError::Unreachable(_)) {
                    self.channels.note_reachability(self.target, &self.node.raft_addr, Some(&s));
                }
                return Err(err);
            }
        };
        let res: Result<T, RaftError<NodeId, E>> =
            wire::decode(&payload).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl PeerClient {
    /// Sends one AppendEntries on this replication stream's open stream
    /// (opening it first if needed) and waits for its answer.
    async fn append_streamed(&mut self, request: Payload) -> Result<Payload, PeerStreamError> {
        let mut stream = match self.append_stream.take() {
            Some(open) => {
                if open.requests.send(request).await.is_err() {
                    return Err(PeerStreamError::Status(tonic::Status::unavailable(
                        "AppendEntries stream closed",
                    )));
                }
                open
            }
            None => {
                let (requests, rx) = tokio::sync::mpsc::channel(1);
                requests.try_send(request).expect("a new channel has room for one");
                let mut client = self.client().map_err(PeerStreamError::Status)?;
                let call = tokio_stream::wrappers::ReceiverStream::new(rx);
                let answers = match client.append_entries_stream(tonic::Request::new(call)).await {
                    Ok(r) => r.into_inner(),
                    Err(s) if s.code() == Code::Unimplemented => return Err(PeerStreamError::Unimplemented),
                    Err(s) => return Err(PeerStreamError::Status(s)),
                };
                AppendStream { requests, answers }
            }
        };
        match stream.answers.message().await {
            Ok(Some(answer)) => {
                self.append_stream = Some(stream);
                Ok(answer)
            }
            Ok(None) => {
                Err(PeerStreamError::Status(tonic::Status::unavailable("AppendEntries stream ended")))
            }
            Err(s) => Err(PeerStreamError::Status(s)),
        }
    }
}

impl PeerClient {
    /// The body of `full_snapshot`.
    async fn send_image(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        if self.silence.is_on() {
            let e = std::io::Error::other("leader without a quorum is silent (check_quorum)");
            return Err(StreamingError::Unreachable(Unreachable::new(&e)));
        }
        let mut client = self.client().map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
        let file = (*snapshot.snapshot).into_std().await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Payload>(SNAPSHOT_FRAMES_AHEAD);
        let first = wire::encode(&(vote, snapshot.meta.clone()));
        let codec = self.codec.clone();
        let gate = self.gate.clone();
        let silence = self.silence.clone();
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let _keys = gate.enter();
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            let mut frames = FrameReader::new(file, codec).map_err(|e| e.to_string())?;
            while let Some(plain) = frames.next_plain().map_err(|e| e.to_string())? {
                // A leader that lost its quorum mid-image stops here: the
                // receiver would otherwise keep refusing the others'
                // pre-votes for it (the image ends unfinished, refused).
                if silence.is_on() {
                    break;
                }
                if tx.blocking_send(Payload { data: plain, ..Default::default() }).is_err() {
                    break; // the call ended (failed or cancelled)
                }
            }
            Ok(())
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match tokio::time::timeout(SNAPSHOT_FRAME_TIMEOUT, rx.recv()).await {
                Ok(Some(p)) => Some((p, rx)),
                // Ended, or the reader stalled: end the stream (the peer
                // refuses an image without its end frame).
                _ => None,
            }
        });
        let started = std::time::Instant::now();
        let reply = tokio::select! {
            r = client.install_snapshot(tonic::Request::new(stream)) => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        metrics::histogram!("strongbox_peer_rpc_seconds", "rpc" => "install_snapshot")
            .record(started.elapsed().as_secs_f64());
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let e = std::io::Error::other(format!("reading the snapshot image: {e}"));
                return Err(StreamingError::StorageError(openraft::StorageError::from_io_error(
                    openraft::ErrorSubject::Snapshot(None),
                    openraft::ErrorVerb::Read,
                    e,
                )));
            }
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let payload = reply
            .map_err(|s| match map_status::<openraft::error::Infallible>(s, 1) {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                other => StreamingError::Network(NetworkError::new(&other)),
            })?
            .into_inner();
        let res: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            wire::decode(&payload).map_err(|s| StreamingError::Network(NetworkError::new(&s)))?;
        res.map_err(|e| {
            StreamingError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
        })
    }
}

fn with_ttl<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        if self.silence.is_on() {
            return Err(silenced());
        }
        let hint = (rpc.entries.len() as u64 / 2).max(1);
        // u64::MAX: no quorum has acknowledged this leader (absent would
        // mean a leader of an older release, which does not say).
        let quorum_age_ms =
            Some(self.quorum.age().map_or(u64::MAX, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)));
        let request = Payload { leader_quorum_age_ms: quorum_age_ms, ..wire::encode(&rpc) };
        // Refused here, before sending: a stream has no per-call status for
        // an oversized message, and openraft halves the batch on this.
        if request.data.len() > PEER_MESSAGE_BYTES_MAX - 1024 {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        let started = std::time::Instant::now();
        let unary = self.append_unary_since.is_some_and(|t| t.elapsed() < UNARY_FALLBACK_RETRY_AFTER);
        let reply = if unary {
            let mut client = self.client().map_err(|s| map_status(s, hint))?;
            client.append_entries(with_ttl(request, &option)).await
        } else {
            match tokio::time::timeout(option.hard_ttl(), self.append_streamed(request)).await {
                Ok(Ok(answer)) => Ok(tonic::Response::new(answer)),
                Ok(Err(PeerStreamError::Status(s))) => Err(s),
                Ok(Err(PeerStreamError::Unimplemented)) => {
                    tracing::info!(
                        peer = self.target,
                        "peer has no AppendEntries stream; using unary calls for now"
                    );
                    self.append_unary_since = Some(Instant::now());
                    let mut client = self.client().map_err(|s| map_status(s, hint))?;
                    let request = Payload { leader_quorum_age_ms: quorum_age_ms, ..wire::encode(&rpc) };
                    client.append_entries(with_ttl(request, &option)).await
                }
                Err(_) => Err(tonic::Status::deadline_exceeded("no AppendEntries answer within the TTL")),
            }
        };
        metrics::histogram!("strongbox_peer_rpc_seconds", "rpc" => "append_entries")
            .record(started.elapsed().as_secs_f64());
        self.unwrap_remote(reply, hint)
    }

    /// Never used: `full_snapshot` streams whole images instead of
    /// openraft's chunks (which would carry frames sealed with our keys).
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let e = std::io::Error::other("chunked snapshots are not used: see full_snapshot");
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    /// Streams the image: (vote, meta), then each frame opened with our
    /// codec, read ahead on a blocking thread with a small bounded buffer.
    /// The peer seals the frames with its own keys and answers once it has
    /// installed the image.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let index = snapshot.meta.last_log_id.map(|l| l.index);
        let res = self.send_image(vote, snapshot, cancel).await;
        // openraft's own report of this is left out of the default log
        // filter with the rest of its replication noise.
        if let Err(e) = &res {
            if !matches!(e, StreamingError::Closed(_)) {
                tracing::warn!(peer = self.target, ?index, error = %e, "sending a snapshot failed; it will be retried");
            }
        }
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let mut client = self.client().map_err(|s| map_status(s, 1))?;
        let reply = client.vote(with_ttl(wire::encode(&rpc), &option)).await;
        self.unwrap_remote(reply, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_no_member_has_are_forgotten() {
        let channels = PeerChannels::new(None);
        for addr in ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"] {
            channels.client(addr).expect("a valid address");
            channels.note_reachability(1, addr, None);
        }
        assert_eq!(channels.cached_addresses(), 3);
        channels.retain_addresses(&HashSet::from(["127.0.0.1:2".to_string()]));
        assert_eq!(channels.cached_addresses(), 1);
        assert_eq!(channels.reachable.lock().unwrap().len(), 1);
        // Still usable: the cache is rebuilt on demand.
        channels.client("127.0.0.1:1").expect("a valid address");
        assert_eq!(channels.cached_addresses(), 2);
    }
}
