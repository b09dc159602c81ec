use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use strongbox_raft::sm_store::{Export, META_APPLIED};
use strongbox_raft::types::LogId;
use strongbox_store::auth::{Action, Effect, Rule};
use strongbox_store::layout::sm_keys;
use strongbox_store::state_hash::state_hash;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use strongbox_proto::v1::cluster_server::Cluster;
use strongbox_proto::v1::*;
use strongbox_raft::node::NodeStatus;
use strongbox_raft::wire::MembershipOp;
use strongbox_raft::{NodeInfo, RaftNode};
use tonic::{Request, Response, Status};

use strongbox_store::command::{Op, Outcome, SetStateVersion, STATE_VERSION_SUPPORTED};

use super::{internal, token_of, Api};
use crate::auth::tokens::bearer;
use crate::auth::Rpc;
use crate::local_audit;

const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whole-state reads running at once on one node: snapshot saves (each
/// holds an image on disk until its client has it) and state hashes.
const SAVES_RUNNING_MAX: usize = 1;
/// Frames read ahead of a slow client (each at most `FRAME_BYTES_MAX`).
const SAVE_FRAMES_AHEAD: usize = 2;
/// How long a client may take to read one frame before the save ends.
const SAVE_FRAME_SEND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ClusterService {
    node: RaftNode,
    api: Api,
    saves: Arc<Semaphore>,
}

type SaveSnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

impl ClusterService {
    pub fn new(api: Api) -> Self {
        ClusterService { node: api.node.clone(), api, saves: Arc::new(Semaphore::new(SAVES_RUNNING_MAX)) }
    }

    /// Membership changes are checked after a linearizable barrier: they do
    /// not pass through apply, so this is the only check.
    async fn admin(&self, meta: &tonic::metadata::MetadataMap, rpc: Rpc) -> Result<(), Status> {
        self.api.read(meta, rpc, "", None).await.map(|_| ())
    }

    async fn members(&self) -> Result<Vec<Member>, Status> {
        Ok(members_of(&self.node.status().await?))
    }
}

fn members_of(s: &NodeStatus) -> Vec<Member> {
    s.members
        .iter()
        .map(|(id, node, voter, matched)| Member {
            id: *id,
            raft_addr: node.raft_addr.clone(),
            api_addr: node.api_addr.clone(),
            voter: *voter,
            matched_index: *matched,
        })
        .collect()
}

fn state_name(s: openraft::ServerState) -> &'static str {
    match s {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}

fn require_id(id: u64) -> Result<u64, Status> {
    if id == 0 {
        return Err(Status::invalid_argument("id: must be a non-zero node id"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.api
            .rpc("cluster.status", token_of(req.metadata()), async {
                // Against local state, no barrier: status must answer without a
                // quorum, which is when it is needed most (a barrier only when
                // local state refuses the caller).
                self.api.check_caught_up(&bearer(req.metadata())?, Rpc::ClusterStatus, "").await?;
                let s = self.node.status().await?;
                Ok(StatusResponse {
                    node_id: s.id,
                    state: state_name(s.state).into(),
                    leader_id: s.leader,
                    term: s.term,
                    last_log_index: s.last_log_index,
                    committed_index: s.committed_index,
                    applied_index: s.applied_index,
                    revision: s.revision,
                    snapshot_index: s.snapshot_index,
                    purged_index: s.purged_index,
                    members: members_of(&s),
                    version: env!("CARGO_PKG_VERSION").into(),
                    state_version: self.node.sm.state_version().map_err(internal)?,
                    state_version_supported: STATE_VERSION_SUPPORTED,
                    leader_contact_age_ms: self.node.local_read_age().map(|a| a.as_millis() as u64),
                })
            })
            .await
    }

    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let this = self.clone();
        self.api
            .rpc_detached("cluster.add_learner", token_of(req.metadata()), async move {
                this.admin(req.metadata(), Rpc::ClusterAddLearner).await?;
                let r = req.into_inner();
                let id = require_id(r.id)?;
                for (field, v) in [("raft_addr", &r.raft_addr), ("api_addr", &r.api_addr)] {
                    host_port(field, v)?;
                }
                let op = MembershipOp::AddLearner {
                    id,
                    node: NodeInfo { raft_addr: r.raft_addr, api_addr: r.api_addr },
                };
                let log_id = this.node.change_membership(op, MEMBERSHIP_TIMEOUT).await?;
                local_audit::took_effect();
                Ok(MembershipResponse { members: this.members().await?, log_index: log_id.index })
            })
            .await
    }

    async fn promote(&self, req: Request<PromoteRequest>) -> Result<Response<MembershipResponse>, Status> {
        let this = self.clone();
        self.api
            .rpc_detached("cluster.promote", token_of(req.metadata()), async move {
                this.admin(req.metadata(), Rpc::ClusterPromote).await?;
                let id = require_id(req.into_inner().id)?;
                let log_id =
                    this.node.change_membership(MembershipOp::Promote { id }, MEMBERSHIP_TIMEOUT).await?;
                local_audit::took_effect();
                Ok(MembershipResponse { members: this.members().await?, log_index: log_id.index })
            })
            .await
    }

    async fn remove(&self, req: Request<RemoveRequest>) -> Result<Response<MembershipResponse>, Status> {
        let this = self.clone();
        self.api
            .rpc_detached("cluster.remove", token_of(req.metadata()), async move {
                this.admin(req.metadata(), Rpc::ClusterRemove).await?;
                let id = require_id(req.into_inner().id)?;
                let log_id =
                    this.node.change_membership(MembershipOp::Remove { id }, MEMBERSHIP_TIMEOUT).await?;
                local_audit::took_effect();
                Ok(MembershipResponse { members: this.members().await?, log_index: log_id.index })
            })
            .await
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.api
            .rpc("cluster.transfer_leader", token_of(req.metadata()), async {
                self.admin(req.metadata(), Rpc::ClusterTransferLeader).await?;
                let id = require_id(req.into_inner().id)?;
                let leader = self.node.transfer_leader(id, MEMBERSHIP_TIMEOUT).await?;
                local_audit::took_effect();
                Ok(TransferLeaderResponse { leader_id: leader })
            })
            .await
    }

    async fn set_state_version(
        &self,
        req: Request<SetStateVersionRequest>,
    ) -> Result<Response<SetStateVersionResponse>, Status> {
        self.api
            .rpc("cluster.set_state_version", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                self.admin(&meta, Rpc::ClusterSetStateVersion).await?;
                // This node would stop at the entry: refused before it is
                // logged. (Whether the other members support it is the
                // caller's to check first, as `cluster upgrade-state` does.)
                if r.version > STATE_VERSION_SUPPORTED {
                    return Err(Status::failed_precondition(format!(
                        "this node's build supports state versions up to {STATE_VERSION_SUPPORTED}, not {}; \
                         upgrade every member first",
                        r.version
                    )));
                }
                // Nothing to log for the version the state has (a build
                // older than the command could not even decode it) or an
                // older one.
                if r.version == 0 {
                    return Err(Status::invalid_argument("version: state versions start at 1"));
                }
                let current = self.node.sm.state_version().map_err(internal)?;
                if r.version == current {
                    return Ok(SetStateVersionResponse { version: current, revision: 0 });
                }
                if r.version < current {
                    return Err(Status::failed_precondition(format!(
                        "the state is at version {current} and never goes back (asked for {})",
                        r.version
                    )));
                }
                let op = Op::SetStateVersion(SetStateVersion { version: r.version });
                let w =
                    self.api.write(&meta, Rpc::ClusterSetStateVersion, "", r.options.as_ref(), op).await?;
                match w.outcome {
                    Outcome::StateVersion { version } => {
                        Ok(SetStateVersionResponse { version, revision: w.revision })
                    }
                    other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
                }
            })
            .await
    }

    type SaveSnapshotStream = SaveSnapshotStream;

    async fn state_hash(
        &self,
        req: Request<StateHashRequest>,
    ) -> Result<Response<StateHashResponse>, Status> {
        self.api
            .rpc("cluster.state_hash", token_of(req.metadata()), async {
                // This node as it is: no barrier (a partitioned member can
                // still be compared once it is back).
                self.api.check_caught_up(&bearer(req.metadata())?, Rpc::ClusterStateHash, "").await?;
                let permit = self.saves.clone().try_acquire_owned().map_err(|_| {
                    Status::resource_exhausted(
                        "this node is reading its whole state already (a snapshot save or a state hash); \
                         try again when it is done",
                    )
                })?;
                let sm = self.node.sm.clone();
                let keys: [&[u8]; 2] = [META_APPLIED, sm_keys::REVISION];
                let h = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    state_hash(sm.db(), &keys)
                })
                .await
                .map_err(internal)?
                .map_err(internal)?;
                let applied: Option<LogId> = h.meta(META_APPLIED).map_err(internal)?;
                Ok(StateHashResponse {
                    node_id: self.node.id,
                    applied_index: applied.map_or(0, |l| l.index),
                    applied_term: applied.map_or(0, |l| l.leader_id.term),
                    revision: h.meta::<u64>(sm_keys::REVISION).map_err(internal)?.unwrap_or(0),
                    records: h.records,
                    digest: h.hex(),
                })
            })
            .await
    }

    async fn save_snapshot(
        &self,
        req: Request<SaveSnapshotRequest>,
    ) -> Result<Response<SaveSnapshotStream>, Status> {
        self.api
            .rpc("cluster.save_snapshot", token_of(req.metadata()), async {
                // After the barrier: the image holds every write acknowledged
                // before the call.
                let caller = self.api.read(req.metadata(), Rpc::ClusterSaveSnapshot, "", None).await?;
                // A deny rule anywhere (a folder of secrets kept from this
                // caller) would be moot in an image of everything.
                let everything = Rule { effect: Effect::Allow, action: Action::Admin, resource: "*".into() };
                caller
                    .require_holds(std::slice::from_ref(&everything), "save a snapshot")
                    .map_err(crate::observe::command_status)?;
                let permit = self.saves.clone().try_acquire_owned().map_err(|_| {
                    Status::resource_exhausted(
                        "a snapshot is being saved from this node already; wait for it or ask another node",
                    )
                })?;
                let (sm, node_id) = (self.node.sm.clone(), self.node.id);
                let (tx, rx) = mpsc::channel(SAVE_FRAMES_AHEAD);
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let failed =
                        |e: strongbox_store::DbError| Err(Status::internal(format!("snapshot image: {e}")));
                    let gone = tx.clone();
                    let mut export = match Export::start(&sm, move || gone.is_closed()) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tx.blocking_send(failed(e));
                            return;
                        }
                    };
                    let info = SnapshotInfo {
                        node_id,
                        applied_index: export.applied.map_or(0, |l| l.index),
                        applied_term: export.applied.map_or(0, |l| l.leader_id.term),
                        revision: export.revision,
                    };
                    tracing::info!(applied_index = info.applied_index, "saving a snapshot for a backup");
                    let mut next = Ok(SnapshotChunk { info: Some(info), frame: Vec::new() });
                    let runtime = tokio::runtime::Handle::current();
                    loop {
                        let last = next.is_err();
                        // A client gone, or one that stopped reading (it
                        // would hold the save slot and keep data keys from
                        // retiring): the image goes with the export.
                        let sent =
                            runtime.block_on(tokio::time::timeout(SAVE_FRAME_SEND_TIMEOUT, tx.send(next)));
                        if !matches!(sent, Ok(Ok(()))) || last {
                            return;
                        }
                        next = match export.next_frame() {
                            Ok(Some(frame)) => Ok(SnapshotChunk { info: None, frame }),
                            Ok(None) => return,
                            Err(e) => failed(e),
                        };
                    }
                });
                Ok(Box::pin(ReceiverStream::new(rx)) as SaveSnapshotStream)
            })
            .await
    }
}

/// `host:port` (a name or an IP address, and a port), as peers dial it.
fn host_port(field: &str, v: &str) -> Result<(), Status> {
    const ADDR_BYTES_MAX: usize = 261; // a 253-byte DNS name, ':' and a port
    let refuse = || Status::invalid_argument(format!("{field}: {v:?} is not host:port (like 10.0.0.4:7111)"));
    if v.len() > ADDR_BYTES_MAX {
        return Err(Status::invalid_argument(format!("{field}: at most {ADDR_BYTES_MAX} bytes")));
    }
    if v.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = v.rsplit_once(':').ok_or_else(refuse)?;
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(refuse());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn peer_addresses_must_be_host_and_port() {
        for ok in ["127.0.0.1:7111", "[::1]:7111", "node-2.example:7111", "db2:1"] {
            assert!(host_port("raft_addr", ok).is_ok(), "{ok}");
        }
        for bad in ["", ":", "node2", "node2:", ":7111", "node 2:7111", "node2:0", "node2:99999", "a:b:c"] {
            let e = host_port("raft_addr", bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(e.message().starts_with("raft_addr: "), "{}", e.message());
        }
        assert!(host_port("api_addr", &format!("{}:1", "a".repeat(300))).is_err());
    }
}
