//! Raft RPCs to peers over tonic with mutual TLS.
//!
//! One lazily connected `Channel` per peer address, shared by every
//! replication stream, vote and forwarded write (openraft calls `new_client`
//! per stream and per read-index round, so channels are cached, not built).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::check_quorum::Silence;
use crate::config::PEER_MESSAGE_BYTES_MAX;
use crate::types::{NodeId, NodeInfo, TypeConfig};
use crate::wire;

/// The TLS server name every node certificate carries, so peers verify each
/// other whatever address they listen on.
pub const PEER_TLS_NAME: &str = "strongbox-node";

pub struct PeerChannels {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerChannels {
    /// `tls: None` only behind the explicit `--insecure` flag.
    pub fn new(tls: Option<ClientTlsConfig>) -> Arc<Self> {
        Arc::new(PeerChannels { tls, channels: Mutex::new(HashMap::new()) })
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
}

impl NetworkFactory {
    pub fn new(channels: Arc<PeerChannels>, silence: Silence) -> Self {
        NetworkFactory { channels, silence }
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
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    node: NodeInfo,
    channels: Arc<PeerChannels>,
    silence: Silence,
}

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
        let payload = reply.map_err(|s| map_status(s, entries_hint))?.into_inner();
        let res: Result<T, RaftError<NodeId, E>> =
            wire::decode(&payload).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
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
        let mut client = self.client().map_err(|s| map_status(s, hint))?;
        let started = std::time::Instant::now();
        let reply = client.append_entries(with_ttl(wire::encode(&rpc), &option)).await;
        metrics::histogram!("strongbox_peer_rpc_seconds", "rpc" => "append_entries")
            .record(started.elapsed().as_secs_f64());
        self.unwrap_remote(reply, hint)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        if self.silence.is_on() {
            return Err(silenced());
        }
        let mut client = self.client().map_err(|s| map_status(s, 1))?;
        let reply = client.install_snapshot(with_ttl(wire::encode(&rpc), &option)).await;
        self.unwrap_remote(reply, 1)
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
