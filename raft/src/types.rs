use std::fmt;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// What the cluster knows of a member: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Peer port (mutual TLS): Raft RPCs and forwarded writes.
    pub raft_addr: String,
    /// Client port (TLS): the strongbox.v1 API.
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        // One entry carries a group of commands (see proposer.rs); it
        // answers with one response per command, in order.
        D = Vec<strongbox_store::Command>,
        R = Vec<strongbox_store::Response>,
        NodeId = NodeId,
        Node = NodeInfo,
        // An image file (`store::snapshot`), read and written by our code
        // only: `network::full_snapshot` streams its frames.
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;
