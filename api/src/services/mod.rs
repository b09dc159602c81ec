//! The client API. Every service holds an [`Api`]: the node plus the
//! authenticator, and the two paths every request takes (read or write).

pub mod audit;
pub mod auth;
pub mod clients;
pub mod cluster;
pub mod feed;
pub mod keys;
pub mod ledger;
pub mod roles;
pub mod secrets;
pub mod users;

use std::sync::Arc;

use strongbox_proto::v1::{Consistency, Page, ReadOptions, WriteOptions};
use strongbox_raft::RaftNode;
use strongbox_store::auth::{Caller, TokenHash};
use strongbox_store::command::Outcome;
use strongbox_store::{Actor, Command, Op};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::auth::tokens::bearer;
use crate::auth::{Auth, Rpc};
use crate::limits::{READ_TIMEOUT, WRITE_TIMEOUT};
use crate::observe::{command_status, now_ms, request_id};

/// Largest and default page of a List call.
pub const PAGE_SIZE_MAX: u32 = 1000;
pub const PAGE_SIZE_DEFAULT: u32 = 100;

#[derive(Clone)]
pub struct Api {
    pub node: RaftNode,
    pub auth: Arc<Auth>,
    /// Configured limit on secret values (the store's hard cap is larger).
    pub secret_value_bytes_max: usize,
    /// Skip the linearizable barrier on reads (`serve --unsafe-stale-reads`).
    pub unsafe_stale_reads: bool,
}

/// The result of a write that was applied.
pub struct Written {
    pub outcome: Outcome,
    pub revision: u64,
    pub deduplicated: bool,
}

impl Api {
    pub fn new(node: RaftNode, auth: Arc<Auth>, secret_value_bytes_max: usize) -> Api {
        Api { node, auth, secret_value_bytes_max, unsafe_stale_reads: false }
    }

    /// A read: the barrier first (linearizable unless the request opted
    /// out), then the caller is checked against state at least that new, so
    /// a revocation acknowledged before the request started is seen.
    pub async fn read(
        &self,
        meta: &MetadataMap,
        rpc: Rpc,
        subject: &str,
        opts: Option<&ReadOptions>,
    ) -> Result<Caller, Status> {
        let hash = bearer(meta)?;
        self.read_barrier(opts).await?;
        self.check(&hash, rpc, subject)
    }

    /// Checks a caller against the applied state of this node.
    pub fn check(&self, hash: &TokenHash, rpc: Rpc, subject: &str) -> Result<Caller, Status> {
        let caller = self.node.sm.resolve_token(hash, now_ms()).map_err(internal)?.map_err(command_status)?;
        if let Some(access) = rpc.need().access(subject) {
            caller.require(&access).map_err(command_status)?;
        }
        Ok(caller)
    }

    /// A write on behalf of the bearer: refused early when this node's state
    /// already says no (after catching up, so a token or role granted a
    /// moment ago on another node is not refused), then checked for real
    /// inside apply, where a revocation that commits first wins.
    pub async fn write(
        &self,
        meta: &MetadataMap,
        rpc: Rpc,
        subject: &str,
        opts: Option<&WriteOptions>,
        op: Op,
    ) -> Result<Written, Status> {
        let hash = self.precheck(meta, rpc, subject).await?;
        let cmd = Command { request_id: request_id(opts), time_ms: now_ms(), actor: Actor::Token(hash), op };
        self.propose(cmd).await
    }

    /// The early check of a write (also run before expensive work such as
    /// hashing a password): this node's state, caught up with the leader
    /// before saying no.
    pub async fn precheck(&self, meta: &MetadataMap, rpc: Rpc, subject: &str) -> Result<TokenHash, Status> {
        let hash = bearer(meta)?;
        if self.check(&hash, rpc, subject).is_err() {
            self.node.read_barrier(true, 0, READ_TIMEOUT).await?;
            self.check(&hash, rpc, subject)?;
        }
        Ok(hash)
    }

    /// Proposes a command and waits for its answer.
    pub async fn propose(&self, cmd: Command) -> Result<Written, Status> {
        cmd.validate().map_err(command_status)?;
        let (_, resp) = self.node.write(cmd, WRITE_TIMEOUT).await?;
        let outcome = resp.result.map_err(command_status)?;
        Ok(Written { outcome, revision: resp.revision, deduplicated: resp.deduplicated })
    }

    /// Applies the read options: a linearizable barrier and/or min_revision.
    pub async fn read_barrier(&self, opts: Option<&ReadOptions>) -> Result<(), Status> {
        let linearizable = opts.is_none_or(|o| o.consistency() == Consistency::Linearizable);
        let min_revision = opts.map_or(0, |o| o.min_revision);
        let linearizable = linearizable && !self.unsafe_stale_reads;
        self.node.read_barrier(linearizable, min_revision, READ_TIMEOUT).await?;
        Ok(())
    }

    pub fn revision(&self) -> Result<u64, Status> {
        self.node.sm.revision().map_err(internal)
    }
}

pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// (page size, the token to start after).
pub fn page(p: Option<&Page>) -> Result<(usize, String), Status> {
    let size = p.map_or(0, |p| p.page_size);
    if size > PAGE_SIZE_MAX {
        return Err(Status::invalid_argument(format!("page.page_size: at most {PAGE_SIZE_MAX}, got {size}")));
    }
    let size = if size == 0 { PAGE_SIZE_DEFAULT } else { size };
    Ok((size as usize, p.map(|p| p.page_token.clone()).unwrap_or_default()))
}

/// The next page token: the last name, when the page was full.
pub fn next_token<T>(items: &[T], size: usize, name: impl Fn(&T) -> String) -> String {
    if items.len() == size {
        items.last().map(name).unwrap_or_default()
    } else {
        String::new()
    }
}

/// An outcome a handler did not expect for its op: a bug, not bad input.
pub fn unexpected(o: Outcome) -> Status {
    Status::internal(format!("unexpected outcome {o:?}"))
}
