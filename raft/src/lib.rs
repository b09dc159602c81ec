//! openraft glue for strongbox: the RocksDB log store, the state machine
//! adapter, the tonic network between peers and the node that ties them up.
//!
//! This crate moves commands around without looking inside them: it knows
//! nothing of secrets, users or ledgers, only that `store` applies them.

pub mod check_quorum;
pub mod clock;
pub mod config;
pub mod election_hold;
pub mod forward_link;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer_service;
pub mod pre_vote;
pub mod proposer;
pub mod quorum_clock;
pub mod removal;
pub mod restore;
pub mod sm_store;
pub mod snapshot_policy;
pub mod types;
pub mod wire;

pub use node::{NodeError, RaftNode};
pub use types::{NodeId, NodeInfo, TypeConfig};
