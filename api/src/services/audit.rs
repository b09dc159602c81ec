//! `Audit.Query` and `Audit.Verify` over this node's copy of the replicated
//! audit chain, or over its own local chain.

use strongbox_proto::v1::audit_server::Audit;
use strongbox_proto::v1::*;
use strongbox_store::audit::{AuditRecord as Stored, Verdict, AUDIT_READ_MAX};
use strongbox_store::local_audit::{self, LocalAuditRecord};
use tonic::{Request, Response, Status};

use super::{internal, token_of, Api};
use crate::auth::Rpc;

/// Records one request examines at most (filters may reject most of them).
const SCAN_PER_REQUEST_MAX: usize = 20_000;
const PAGE_DEFAULT: u32 = 100;

pub struct AuditService {
    api: Api,
    /// Verifications running at once: each walks a whole chain on a
    /// blocking thread, beside the log's fsyncs on the same pool.
    verifying: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Audit.Verify calls one node runs at once; more get RESOURCE_EXHAUSTED.
pub const VERIFIES_RUNNING_MAX: usize = 2;

impl AuditService {
    pub fn new(api: Api) -> Self {
        AuditService {
            api,
            verifying: std::sync::Arc::new(tokio::sync::Semaphore::new(VERIFIES_RUNNING_MAX)),
        }
    }

    /// Up to a chunk of records of `chain` from `seq` on.
    fn chunk(&self, chain: AuditChain, seq: u64) -> Result<Vec<AuditRecord>, Status> {
        let sm = &self.api.node.sm;
        Ok(match chain {
            AuditChain::Replicated => {
                sm.audit(seq, AUDIT_READ_MAX).map_err(internal)?.into_iter().map(replicated).collect()
            }
            AuditChain::Local => local_audit::read(sm.db(), seq, local_audit::LOCAL_AUDIT_READ_MAX)
                .map_err(internal)?
                .into_iter()
                .map(local)
                .collect(),
        })
    }
}

fn replicated(r: Stored) -> AuditRecord {
    AuditRecord {
        seq: r.seq,
        time_ms: r.time_ms,
        actor: r.actor,
        action: r.action,
        resource: r.resource,
        outcome: r.outcome,
        request_id: r.request_id,
        revision: r.revision,
        hash: r.hash.to_vec(),
        prev_hash: r.prev_hash.to_vec(),
        node: r.node,
    }
}

fn local(r: LocalAuditRecord) -> AuditRecord {
    AuditRecord {
        seq: r.seq,
        time_ms: r.time_ms,
        actor: r.actor,
        action: r.action,
        resource: r.resource,
        outcome: r.outcome,
        request_id: r.request_id,
        revision: r.revision,
        hash: r.hash.to_vec(),
        prev_hash: r.prev_hash.to_vec(),
        node: r.node,
    }
}

fn matches(q: &AuditQueryRequest, r: &AuditRecord) -> bool {
    (q.actor.is_empty() || q.actor == r.actor)
        && (q.action.is_empty() || q.action == r.action)
        && (q.outcome.is_empty() || q.outcome == r.outcome)
        && (q.since_ms == 0 || r.time_ms >= q.since_ms)
        && (q.until_ms == 0 || r.time_ms <= q.until_ms)
}

/// Filters that no record can match are a mistake (a misspelt outcome, a
/// reversed time range) that would otherwise read as "nothing happened".
fn check_filters(q: &AuditQueryRequest) -> Result<(), Status> {
    if q.since_ms != 0 && q.until_ms != 0 && q.since_ms > q.until_ms {
        return Err(Status::invalid_argument(format!(
            "since_ms ({}) is after until_ms ({}): no record can match",
            q.since_ms, q.until_ms
        )));
    }
    if q.outcome.is_empty() || q.outcome == "ok" || q.outcome == "deduplicated" {
        return Ok(());
    }
    // A refusal is recorded by its gRPC code's name (`PermissionDenied`).
    let codes: Vec<String> = (1..=16).map(|c| format!("{:?}", tonic::Code::from(c))).collect();
    if codes.contains(&q.outcome) {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "outcome: {:?} is never recorded; use ok, deduplicated or a gRPC code name: {}",
        q.outcome,
        codes.join(", ")
    )))
}

fn chain(v: i32, field: &str) -> Result<AuditChain, Status> {
    AuditChain::try_from(v).map_err(|_| Status::invalid_argument(format!("{field}: unknown audit chain {v}")))
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(&self, req: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        self.api
            .rpc("audit.query", token_of(req.metadata()), async {
                let (meta, _, q) = req.into_parts();
                self.api.read(&meta, Rpc::AuditQuery, "", q.options.as_ref()).await?;
                let chain = chain(q.chain, "chain")?;
                check_filters(&q)?;
                let limit = if q.limit == 0 { PAGE_DEFAULT } else { q.limit } as usize;
                if limit > AUDIT_READ_MAX {
                    return Err(Status::invalid_argument(format!(
                        "limit: at most {AUDIT_READ_MAX}, got {limit}"
                    )));
                }
                let revision = self.api.revision()?;
                // The local chain's oldest records may have been pruned.
                let mut next = q.after_seq.saturating_add(1);
                if chain == AuditChain::Local {
                    next = next.max(local_audit::anchor(self.api.node.sm.db()).map_err(internal)?.0 + 1);
                }
                let (mut out, mut scanned) = (Vec::new(), 0);
                let reached_end = loop {
                    let chunk = self.chunk(chain, next)?;
                    let Some(last) = chunk.last().map(|r| r.seq) else { break true };
                    for r in chunk {
                        scanned += 1;
                        next = r.seq + 1;
                        if matches(&q, &r) {
                            out.push(r);
                            if out.len() == limit {
                                break;
                            }
                        }
                    }
                    if out.len() == limit || scanned >= SCAN_PER_REQUEST_MAX {
                        break next > last && self.chunk(chain, next)?.is_empty();
                    }
                };
                let next_after_seq = if reached_end { 0 } else { next - 1 };
                Ok(AuditQueryResponse { records: out, next_after_seq, revision })
            })
            .await
    }

    async fn verify(
        &self,
        req: Request<AuditVerifyRequest>,
    ) -> Result<Response<AuditVerifyResponse>, Status> {
        self.api
            .rpc("audit.verify", token_of(req.metadata()), async {
                let (meta, _, r) = req.into_parts();
                self.api.read(&meta, Rpc::AuditVerify, "", r.options.as_ref()).await?;
                let chain = chain(r.chain, "chain")?;
                let Ok(permit) = self.verifying.clone().try_acquire_owned() else {
                    return Err(Status::resource_exhausted(format!(
                        "{VERIFIES_RUNNING_MAX} audit verifications are already running on this node; retry when one ends"
                    )));
                };
                let sm = self.api.node.sm.clone();
                // A long chain is CPU work: off the async workers. The permit
                // goes with the walk, which runs on if the caller gives up.
                let (verdict, (head_seq, head_hash), first_seq) = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let db = sm.db();
                    Ok::<_, strongbox_store::DbError>(match chain {
                        AuditChain::Replicated => (sm.verify_audit()?, sm.audit_head()?, 1),
                        AuditChain::Local => (
                            local_audit::verify(db)?,
                            local_audit::head(db)?,
                            local_audit::anchor(db)?.0 + 1,
                        ),
                    })
                })
                .await
                .map_err(internal)?
                .map_err(internal)?;
                let Verdict { checked, broken } = verdict;
                let (first_broken_seq, reason) = broken.unwrap_or_default();
                Ok(AuditVerifyResponse {
                    ok: first_broken_seq == 0,
                    records_checked: checked,
                    head_seq,
                    first_broken_seq,
                    reason,
                    first_seq,
                    head_hash: head_hash.to_vec(),
                })
            })
            .await
    }
}
