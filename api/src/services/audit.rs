//! `Audit.Query` and `Audit.Verify` over this node's copy of the replicated
//! audit chain.

use strongbox_proto::v1::audit_server::Audit;
use strongbox_proto::v1::*;
use strongbox_store::audit::{first_broken, AuditRecord as Stored, AUDIT_READ_MAX};
use tonic::{Request, Response, Status};

use super::{internal, Api};
use crate::auth::Rpc;
use crate::observe::rpc;

/// Records one request examines at most (filters may reject most of them).
const SCAN_PER_REQUEST_MAX: usize = 20_000;
const PAGE_DEFAULT: u32 = 100;

pub struct AuditService {
    api: Api,
}

impl AuditService {
    pub fn new(api: Api) -> Self {
        AuditService { api }
    }
}

fn to_proto(r: Stored) -> AuditRecord {
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
    }
}

fn matches(q: &AuditQueryRequest, r: &Stored) -> bool {
    (q.actor.is_empty() || q.actor == r.actor)
        && (q.action.is_empty() || q.action == r.action)
        && (q.outcome.is_empty() || q.outcome == r.outcome)
        && (q.since_ms == 0 || r.time_ms >= q.since_ms)
        && (q.until_ms == 0 || r.time_ms <= q.until_ms)
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn query(&self, req: Request<AuditQueryRequest>) -> Result<Response<AuditQueryResponse>, Status> {
        rpc("audit.query", async {
            let (meta, _, q) = req.into_parts();
            self.api.read(&meta, Rpc::AuditQuery, "", q.options.as_ref()).await?;
            let limit = if q.limit == 0 { PAGE_DEFAULT } else { q.limit } as usize;
            if limit > AUDIT_READ_MAX {
                return Err(Status::invalid_argument(format!(
                    "limit: at most {AUDIT_READ_MAX}, got {limit}"
                )));
            }
            let revision = self.api.revision()?;
            let (mut out, mut next, mut scanned) = (Vec::new(), q.after_seq + 1, 0);
            let reached_end = loop {
                let chunk = self.api.node.sm.audit(next, AUDIT_READ_MAX).map_err(internal)?;
                let Some(last) = chunk.last().map(|r| r.seq) else { break true };
                for r in chunk {
                    scanned += 1;
                    next = r.seq + 1;
                    if matches(&q, &r) {
                        out.push(to_proto(r));
                        if out.len() == limit {
                            break;
                        }
                    }
                }
                if out.len() == limit || scanned >= SCAN_PER_REQUEST_MAX {
                    break next > last && self.api.node.sm.audit(next, 1).map_err(internal)?.is_empty();
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
        rpc("audit.verify", async {
            let (meta, _, r) = req.into_parts();
            self.api.read(&meta, Rpc::AuditVerify, "", r.options.as_ref()).await?;
            let sm = &self.api.node.sm;
            let (head_seq, head_hash) = sm.audit_head().map_err(internal)?;
            let (mut prev, mut checked) = ((0u64, [0u8; 32]), 0u64);
            let broken = loop {
                let chunk = sm.audit(prev.0 + 1, AUDIT_READ_MAX).map_err(internal)?;
                if chunk.is_empty() {
                    break (prev != (head_seq, head_hash)).then(|| {
                        (
                            prev.0 + 1,
                            format!("the chain ends at {} but its head is record {head_seq}", prev.0),
                        )
                    });
                }
                if let Some(b) = first_broken(prev, &chunk) {
                    break Some(b);
                }
                checked += chunk.len() as u64;
                let last = chunk.last().expect("not empty");
                prev = (last.seq, last.hash);
                // Yield between chunks: a long chain must not hog a worker.
                tokio::task::yield_now().await;
            };
            Ok(match broken {
                None => {
                    AuditVerifyResponse { ok: true, records_checked: checked, head_seq, ..Default::default() }
                }
                Some((seq, reason)) => AuditVerifyResponse {
                    ok: false,
                    records_checked: checked,
                    head_seq,
                    first_broken_seq: seq,
                    reason,
                },
            })
        })
        .await
    }
}
