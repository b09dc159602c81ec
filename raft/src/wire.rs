//! Encoding of peer messages: openraft's serde types as postcard bytes inside
//! a protobuf `Payload`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strongbox_proto::raft::v1::Payload;

use crate::proposer::{ProposeError, ProposeResult};
use crate::types::{LogId, NodeId, NodeInfo};

pub fn encode<T: Serialize>(v: &T) -> Payload {
    Payload {
        data: postcard::to_stdvec(v).expect("postcard encodes openraft messages"),
        ..Default::default()
    }
}

pub fn decode<T: DeserializeOwned>(p: &Payload) -> Result<T, tonic::Status> {
    postcard::from_bytes(&p.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable peer payload: {e}")))
}

/// Membership changes, executed by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOp {
    AddLearner { id: NodeId, node: NodeInfo },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

/// What a follower hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    /// A batch of stamped commands; each is answered on its own.
    Writes(Vec<strongbox_store::Command>),
    Membership(MembershipOp),
    /// Hand leadership to this voter (run by the leader).
    TransferLeader {
        to: NodeId,
        budget_ms: u64,
    },
}

/// The leader's answer to a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    Writes(Vec<ProposeResult>),
    Membership(Result<LogId, ProposeError>),
    /// The leader after the transfer.
    TransferLeader(Result<Option<NodeId>, ProposeError>),
}
