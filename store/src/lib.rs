//! The deterministic state machine of strongbox and everything it keeps on disk.
//!
//! `store` knows nothing of networking or Raft: it is handed commands that
//! already carry their time and ids, applies them in order, and persists the
//! result in RocksDB. Every byte that reaches RocksDB goes through [`codec`],
//! the single seam where encryption at rest plugs in.

pub mod audit;
pub mod auth;
pub mod backup;
mod caller_cache;
pub mod codec;
pub mod command;
pub mod db;
pub mod feed;
mod folder_cache;
pub mod keyring;
pub mod layout;
pub mod ledger;
pub mod limits;
pub mod local_audit;
pub mod names;
mod overlay;
pub mod reencrypt;
mod requests;
pub mod secret_deletions;
pub mod secret_settings;
pub mod snapshot;
pub mod snapshot_gate;
pub mod state_hash;
pub mod state_machine;

pub use command::{Actor, Command, CommandError, ErrorCode, Op, Response};
pub use db::{Batch, Db, DbError};
pub use layout::Cf;
pub use state_machine::{ApplyBatch, StateMachine};
