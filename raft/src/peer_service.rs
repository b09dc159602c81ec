//! The peer port's gRPC service: Raft RPCs in, forwarded writes and read-index
//! requests from followers. Reachable only by holders of a cluster certificate.

use std::time::Duration;
use strongbox_proto::raft::v1::raft_peer_server::RaftPeer;
use strongbox_proto::raft::v1::{Empty, Payload, ReadIndexRequest, ReadIndexResponse};

use tonic::{Request, Response, Status};

use crate::node::RaftNode;
use crate::wire::{self, ForwardReply, Forwarded};

pub struct PeerService {
    node: RaftNode,
}

impl PeerService {
    pub fn new(node: RaftNode) -> Self {
        PeerService { node }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = wire::decode(req.get_ref())?;
        let res = self.node.raft.append_entries(rpc).await;
        Ok(Response::new(wire::encode(&res)))
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = wire::decode(req.get_ref())?;
        if let Some(refusal) = self.node.refuse_vote_while_leading() {
            let res: Result<_, openraft::error::RaftError<crate::types::NodeId>> = Ok(refusal);
            return Ok(Response::new(wire::encode(&res)));
        }
        let res = self.node.raft.vote(rpc).await;
        Ok(Response::new(wire::encode(&res)))
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = wire::decode(req.get_ref())?;
        let res = self.node.raft.install_snapshot(rpc).await;
        Ok(Response::new(wire::encode(&res)))
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let fwd: Forwarded = wire::decode(req.get_ref())?;
        let reply = match fwd {
            Forwarded::Writes(cmds) => {
                // Each joins this node's next batch; none is forwarded again.
                let results = futures::future::join_all(cmds.into_iter().map(|c| self.node.propose_local(c)));
                ForwardReply::Writes(results.await)
            }
            Forwarded::Membership(op) => ForwardReply::Membership(self.node.membership_here(op).await),
            Forwarded::TransferLeader { to, budget_ms } => ForwardReply::TransferLeader(
                self.node.transfer_leader_here(to, Duration::from_millis(budget_ms)).await,
            ),
        };
        Ok(Response::new(wire::encode(&reply)))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let index = self.node.leader_read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn trigger_election(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.node.raft.trigger().elect().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }
}
