//! The client API. Every service holds an [`Api`]: the node plus the
//! authenticator, and the two paths every request takes (read or write).

pub mod audit;
pub mod auth;
pub mod clients;
pub mod cluster;
pub mod feed;
pub mod keys;
pub mod ledger;
pub mod recovery;
pub mod roles;
pub mod secrets;
pub mod users;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strongbox_proto::v1::{Consistency, Page, ReadOptions, WriteOptions};
use strongbox_raft::RaftNode;
use strongbox_store::auth::{Caller, TokenHash};
use strongbox_store::command::Outcome;
use strongbox_store::local_audit::LocalEntry;
use strongbox_store::{Actor, Command, Op};
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

use crate::auth::tokens::bearer;
use crate::auth::{Auth, Rpc};
use crate::limits::{LOCAL_READ_STALENESS_MAX_MS_DEFAULT, READ_TIMEOUT, WRITE_TIMEOUT};
use crate::local_audit::{self, LocalAudit};
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
    /// How stale a local read may be here (`local_read_staleness_max_ms`);
    /// a request can only tighten it.
    pub local_read_staleness_max: Duration,
    /// Where requests that leave no replicated record are audited.
    pub local_audit: LocalAudit,
}

/// The result of a write that was applied.
pub struct Written {
    pub outcome: Outcome,
    pub revision: u64,
    pub deduplicated: bool,
}

impl Api {
    pub fn new(
        node: RaftNode,
        auth: Arc<Auth>,
        secret_value_bytes_max: usize,
        local_audit: LocalAudit,
    ) -> Api {
        Api {
            node,
            auth,
            secret_value_bytes_max,
            unsafe_stale_reads: false,
            local_read_staleness_max: Duration::from_millis(LOCAL_READ_STALENESS_MAX_MS_DEFAULT),
            local_audit,
        }
    }

    /// Runs one client RPC: metrics, and an audit record for every request
    /// whose command did not reach apply (those are in the replicated
    /// chain). The answer leaves only once its record is durable.
    /// `token` is the request's bearer, read before the handler runs, so a
    /// request refused before any check is still attributed.
    /// As `rpc`, for an RPC that changes something outside apply
    /// (membership, keys): it runs to its end on its own task even if the
    /// caller goes away (a client deadline drops the handler's future), so
    /// what it did is finished, answered to no one, and still audited.
    pub async fn rpc_detached<T: Send + 'static>(
        &self,
        method: &'static str,
        token: Option<TokenHash>,
        f: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        local_audit::entered();
        let api = self.clone();
        tokio::spawn(async move { api.rpc(method, token, f).await })
            .await
            .map_err(|e| Status::internal(format!("{method} did not finish: {e}")))?
    }

    pub async fn rpc<T>(
        &self,
        method: &'static str,
        token: Option<TokenHash>,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        local_audit::entered();
        // The handler's future goes to the heap once, here: it is kilobytes
        // (a write's proposal, its retries and timers), and each wrapper
        // below would otherwise copy it whole as it is built.
        let f = Box::pin(f);
        // A request without a usable bearer token hears that first, as from
        // etcd or Vault, whatever else is wrong with it.
        let needs_token = !TOKENLESS_METHODS.contains(&method);
        let f = async move {
            if needs_token && token.is_none() {
                return Err(Status::unauthenticated(
                    "missing, malformed or repeated authorization metadata: send exactly one \
                     `authorization: Bearer <token>` (get one with Auth.Login)",
                ));
            }
            f.await
        };
        crate::observe::rpc(method, async {
            let (res, mut seen) = local_audit::scoped(f).await;
            seen.token = seen.token.or(token);
            if seen.replicated {
                return res;
            }
            // A snapshot install started while this request read: what it
            // read may mix the old state and part of the new one.
            let res = match (res, seen.install_epoch) {
                (Ok(_), Some(e)) if !seen.took_effect && self.node.sm.install_epoch() != e => {
                    Err(installing())
                }
                (other, _) => other,
            };
            let actor = match (seen.actor, &seen.token) {
                (Some(actor), _) => actor,
                (None, Some(hash)) => self.actor_of(hash),
                (None, None) => "anonymous".to_string(),
            };
            let outcome = match &res {
                Ok(_) => "ok".to_string(),
                Err(s) => format!("{:?}", s.code()),
            };
            let entry = LocalEntry {
                time_ms: now_ms(),
                actor,
                action: method.to_string(),
                resource: seen.resource,
                outcome,
                request_id: seen.request_id,
                // Unreadable (a failing disk): the record still goes out,
                // at revision 0, rather than the request going unrecorded.
                revision: self.revision().unwrap_or(0),
            };
            if let Err(e) = self.local_audit.record(entry).await {
                if seen.took_effect && res.is_ok() {
                    return Err(Status::internal(format!(
                        "{method} took effect, but its audit record was not written ({}); do not retry it",
                        e.message()
                    )));
                }
                // A write whose outcome is unknown stays so: UNAVAILABLE
                // would say nothing was sent.
                if let Err(s) = &res {
                    if matches!(s.code(), tonic::Code::DeadlineExceeded | tonic::Code::Unknown) {
                        return Err(Status::new(
                            s.code(),
                            format!(
                                "{} (and its audit record was not written: {})",
                                s.message(),
                                e.message()
                            ),
                        ));
                    }
                }
                return Err(e);
            }
            res
        })
        .await
    }

    /// Records a request refused before any handler ran (see
    /// `crate::refusals`), on this node's local chain.
    pub async fn audit_refused(
        &self,
        action: String,
        token: Option<TokenHash>,
        request_id: String,
        status: &Status,
    ) -> Result<(), Status> {
        let entry = LocalEntry {
            time_ms: now_ms(),
            actor: token.map_or_else(|| "anonymous".to_string(), |t| self.actor_of(&t)),
            action,
            resource: String::new(),
            outcome: format!("{:?}", status.code()),
            request_id,
            revision: self.revision().unwrap_or(0),
        };
        self.local_audit.record(entry).await
    }

    /// Who a bearer token belongs to, for the audit trail.
    fn actor_of(&self, hash: &TokenHash) -> String {
        match self.node.sm.resolve_token(hash, now_ms()) {
            Ok(Ok(c)) => c.principal.to_string(),
            _ => "token:unknown".to_string(),
        }
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
        note_request(meta);
        let hash = bearer(meta)?;
        local_audit::note(|s| s.token = Some(hash));
        self.read_barrier(opts).await?;
        self.check(&hash, rpc, subject)
    }

    /// Checks a caller against the applied state of this node.
    pub fn check(&self, hash: &TokenHash, rpc: Rpc, subject: &str) -> Result<Caller, Status> {
        self.not_installing()?;
        let access = rpc.need().access(subject);
        if let Some(a) = &access {
            local_audit::note(|s| s.resource = a.resource.clone());
        }
        let caller = self.node.sm.resolve_token(hash, now_ms()).map_err(internal)?.map_err(command_status)?;
        local_audit::note(|s| s.actor = Some(caller.principal.to_string()));
        if let Some(access) = access {
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
        let request_id = request_id(opts)?;
        local_audit::note(|s| s.request_id = request_id.clone());
        let hash = self.precheck(meta, rpc, subject).await?;
        let cmd =
            Command { request_id, time_ms: now_ms(), node: self.node.id, actor: Actor::Token(hash), op };
        self.propose(cmd).await
    }

    /// `check` for requests served from local state without a barrier
    /// (cluster status): when this node says no, it asks again once caught
    /// up with the leader, so a token issued a moment ago through this very
    /// node (answered by the leader before this node applied it) works.
    /// Without a quorum the first answer stands.
    pub async fn check_caught_up(&self, hash: &TokenHash, rpc: Rpc, subject: &str) -> Result<Caller, Status> {
        let first = match self.check(hash, rpc, subject) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if self.node.read_barrier(true, 0, None, READ_TIMEOUT).await.is_err() {
            return Err(first);
        }
        self.check(hash, rpc, subject)
    }

    /// The early check of a write (also run before expensive work such as
    /// hashing a password): this node's state, caught up with the leader
    /// before saying no.
    pub async fn precheck(&self, meta: &MetadataMap, rpc: Rpc, subject: &str) -> Result<TokenHash, Status> {
        note_request(meta);
        let hash = bearer(meta)?;
        local_audit::note(|s| s.token = Some(hash));
        if self.check(&hash, rpc, subject).is_err() {
            // Boxed: the barrier's future is kilobytes, rarely run, and
            // would otherwise be part of every write's future.
            Box::pin(self.node.read_barrier(true, 0, None, READ_TIMEOUT)).await?;
            self.check(&hash, rpc, subject)?;
        }
        Ok(hash)
    }

    /// Proposes a command and waits for its answer.
    pub async fn propose(&self, cmd: Command) -> Result<Written, Status> {
        cmd.validate().map_err(command_status)?;
        let (_, resp) = Box::pin(self.node.write(cmd, WRITE_TIMEOUT)).await?;
        // Applied (accepted or refused there): the replicated chain has it.
        local_audit::note(|s| s.replicated = true);
        let outcome = resp.result.map_err(command_status)?;
        Ok(Written { outcome, revision: resp.revision, deduplicated: resp.deduplicated })
    }

    /// Applies the read options: a linearizable barrier, or a local read's
    /// staleness bound; and min_revision.
    pub async fn read_barrier(&self, opts: Option<&ReadOptions>) -> Result<(), Status> {
        if let Some(o) = opts.filter(|o| Consistency::try_from(o.consistency).is_err()) {
            return Err(Status::invalid_argument(format!(
                "options.consistency: unknown value {}; use CONSISTENCY_LINEARIZABLE (0) or CONSISTENCY_LOCAL (1)",
                o.consistency
            )));
        }
        let linearizable = opts.is_none_or(|o| o.consistency() == Consistency::Linearizable);
        let min_revision = opts.map_or(0, |o| o.min_revision);
        let staleness_max = match opts.map_or(0, |o| o.max_staleness_ms) {
            0 => self.local_read_staleness_max,
            ms => Duration::from_millis(ms).min(self.local_read_staleness_max),
        };
        // The unsafe mode reads locally where a linearizable read was asked
        // for, and unbounded: the harness must be able to catch it.
        let (linearizable, staleness_max) =
            if self.unsafe_stale_reads { (false, None) } else { (linearizable, Some(staleness_max)) };
        self.node.read_barrier(linearizable, min_revision, staleness_max, READ_TIMEOUT).await?;
        self.not_installing()
    }

    /// For what is served from this node's state with no barrier at all
    /// (the feed): refused once the node may be more stale than its bound
    /// for local reads (never in the unsafe mode).
    pub fn within_staleness(&self) -> Result<(), Status> {
        if self.unsafe_stale_reads {
            return Ok(());
        }
        Ok(self.node.within_staleness(self.local_read_staleness_max)?)
    }

    /// While a snapshot install replaces this node's state (in several
    /// batches), what it holds is partial: nothing is read from it.
    fn not_installing(&self) -> Result<(), Status> {
        let epoch = self.node.sm.install_epoch();
        if epoch % 2 == 1 {
            return Err(installing());
        }
        // The first time the request reads state: `rpc` checks no install
        // began between here and its answer.
        local_audit::note(|s| s.install_epoch = s.install_epoch.or(Some(epoch)));
        Ok(())
    }

    /// This node's applied revision. A read takes it before its data, so
    /// what it returns reflects at least the revision it reports (taken
    /// after, a write applied in between would be claimed but not seen).
    pub fn revision(&self) -> Result<u64, Status> {
        self.node.sm.revision().map_err(internal)
    }

    /// Refuses `what` (a command members of an older build cannot read)
    /// until the cluster has moved to state version `needed`.
    pub fn need_state_version(&self, needed: u32, what: &str) -> Result<(), Status> {
        let version = self.node.sm.state_version().map_err(internal)?;
        if version < needed {
            return Err(Status::failed_precondition(format!(
                "{what} needs state version {needed} (the cluster is at {version}): \
                 upgrade every node, then run `strongbox cluster upgrade-state`"
            )));
        }
        Ok(())
    }
}

/// A read has no idempotency key; a client may still name it for the audit
/// (a write's own request id comes first).
fn note_request(meta: &MetadataMap) {
    if let Some(id) = meta.get("x-request-id").and_then(|v| v.to_str().ok()) {
        if id.len() <= strongbox_store::limits::REQUEST_ID_BYTES_MAX {
            local_audit::note(|s| {
                if s.request_id.is_empty() {
                    s.request_id = id.to_string();
                }
            });
        }
    }
}

/// The bearer's hash, if the request carries a well-formed one.
/// The RPCs (`Api::rpc` names) that take no bearer token: the two that
/// issue one, and break-glass recovery on the peer port (its mutual TLS is
/// the credential).
const TOKENLESS_METHODS: &[&str] = &["auth.login", "auth.client_token", "recovery.unlock_user"];

pub fn token_of(meta: &MetadataMap) -> Option<TokenHash> {
    bearer(meta).ok()
}

pub fn installing() -> Status {
    Status::unavailable("this node is installing a snapshot from the leader; retry, or ask another node")
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
    let token = p.map(|p| p.page_token.clone()).unwrap_or_default();
    // A token is a name this API returned, and names are shorter.
    if token.len() > PAGE_TOKEN_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "page.page_token: at most {PAGE_TOKEN_BYTES_MAX} bytes, got {}; pass the next_page_token a \
             list returned",
            token.len()
        )));
    }
    Ok((size as usize, token))
}

const PAGE_TOKEN_BYTES_MAX: usize = 4096;

/// The next page token: the last name, when the page was full.
pub fn next_token<T>(items: &[T], size: usize, name: impl Fn(&T) -> String) -> String {
    if items.len() == size {
        items.last().map(name).unwrap_or_default()
    } else {
        String::new()
    }
}

/// An outcome a handler did not expect for its op. Deduplicated, it is the
/// answer to an earlier request of another kind that this caller sent with
/// the same request id; otherwise a bug, not bad input.
pub fn unexpected(o: Outcome, deduplicated: bool) -> Status {
    if deduplicated {
        return Status::failed_precondition(format!(
            "this request id was already used, within the last {} minutes, for a different kind of request; \
             send each request with its own request id",
            strongbox_store::limits::DEDUP_WINDOW_MS / 60_000
        ));
    }
    Status::internal(format!("unexpected outcome {o:?}"))
}
