//! After the run: did the healed cluster recover, and what do the checkers
//! say about each workload's part of the history.

use std::collections::BTreeMap;
use std::time::Duration;

use jepsen::history::{last_nemesis_index, pair, Completed, Op};
use jepsen::linear::{self, key_of, Register};
use jepsen::results::{CheckerResult, Results, Validity};
use serde_json::json;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::{StateHashRequest, WhoAmIRequest};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::workload::{bank, Ctx, Workload, PROCESS_STRIDE};
use super::FINAL_PROCESS;

pub struct Recovery {
    pub converged: bool,
    pub seconds: f64,
    pub nodes: BTreeMap<u64, String>,
}

impl Recovery {
    pub fn summary(&self) -> String {
        let state = if self.converged { "every node converged and serves" } else { "NOT converged" };
        format!("{state} after {:.1} s: {:?}", self.seconds, self.nodes)
    }
}

/// Waits until every node names the same leader, has applied what the
/// leader had committed, and answers a linearizable read.
pub async fn recovery(cluster: &Mutex<Cluster>, ctx: &Ctx, limit: Duration) -> Recovery {
    let start = Instant::now();
    let mut nodes = BTreeMap::new();
    while start.elapsed() < limit {
        let c = cluster.lock().await;
        let ids = c.ids();
        let mut ok = true;
        let leader = c.leader(&ctx.admin_token).await;
        let committed = match leader {
            Some(l) => c.status(l, &ctx.admin_token).await.map(|s| s.committed_index).ok(),
            None => None,
        };
        for id in &ids {
            let state = match (c.status(*id, &ctx.admin_token).await, committed) {
                (Err(e), _) => format!("no status: {e}"),
                (Ok(_), None) => "no leader".to_string(),
                (Ok(s), Some(committed)) if s.leader_id != leader || s.applied_index < committed => {
                    format!("behind: leader {:?}, applied {} < {committed}", s.leader_id, s.applied_index)
                }
                (Ok(s), Some(_)) => {
                    let mut auth = AuthClient::new(ctx.admin(*id));
                    let read = auth.who_am_i(WhoAmIRequest { options: None });
                    match tokio::time::timeout(Duration::from_secs(3), read).await {
                        Ok(Ok(_)) => format!("ok: applied {}", s.applied_index),
                        Ok(Err(e)) => format!("read failed: {}", e.message()),
                        Err(_) => "read timed out".to_string(),
                    }
                }
            };
            ok &= state.starts_with("ok");
            nodes.insert(*id, state);
        }
        drop(c);
        if ok {
            return Recovery { converged: true, seconds: start.elapsed().as_secs_f64(), nodes };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Recovery { converged: false, seconds: start.elapsed().as_secs_f64(), nodes }
}

/// After the final reads, with no write left in flight: every node's
/// digest of its replicated state (`Cluster.StateHash`) at one applied
/// index. Two nodes at one index with two digests have parted: invalid at
/// once. All at one index and one digest: valid. Never all at one index
/// within `limit`: unknown (nothing wrong seen, nothing shown).
pub async fn replicas(cluster: &Mutex<Cluster>, ctx: &Ctx, limit: Duration) -> CheckerResult {
    let start = Instant::now();
    let mut seen: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    while start.elapsed() < limit {
        seen.clear();
        let ids = cluster.lock().await.ids();
        for id in &ids {
            let mut c = ClusterClient::new(ctx.admin(*id));
            let call = c.state_hash(StateHashRequest {});
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), call).await {
                let r = r.into_inner();
                seen.insert(*id, (r.applied_index, r.digest));
            }
        }
        let detail = json!(seen);
        for (a, (index_a, digest_a)) in &seen {
            if let Some((b, _)) = seen.iter().find(|(b, (i, d))| *b > a && i == index_a && d != digest_a) {
                return CheckerResult::new(Validity::Invalid)
                    .with_detail("parted", json!({"nodes": [a, b], "applied_index": index_a}))
                    .with_detail("nodes", detail);
            }
        }
        let first = seen.values().next().map(|(i, _)| *i);
        if let Some(index) = first.filter(|i| seen.len() == ids.len() && seen.values().all(|(j, _)| j == i)) {
            return CheckerResult::new(Validity::Valid)
                .with_count("nodes_compared", seen.len() as u64)
                .with_count("applied_index", index)
                .with_detail("nodes", detail);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    CheckerResult::new(Validity::Unknown).with_detail("nodes", json!(seen))
}

fn linear_summary(r: &linear::LinResult) -> serde_json::Value {
    match r {
        linear::LinResult::Valid => json!(true),
        linear::LinResult::Invalid { counterexample } => {
            json!({"valid": false, "counterexample": counterexample})
        }
        linear::LinResult::Unknown { reason } => json!({"valid": "unknown", "reason": reason}),
    }
}

/// Which workload a process belongs to: clients are dealt out round-robin
/// by slot, and the final readers come last.
fn workload_of(process: u64, workloads: usize) -> usize {
    if process >= FINAL_PROCESS {
        (process - FINAL_PROCESS) as usize
    } else {
        ((process % PROCESS_STRIDE) as usize) % workloads
    }
}

/// Whether each fault asked for was applied at least once: the nemesis
/// writes `start-<fault>` with an "error" when it could not (a partition
/// whose rules failed, a removal refused). A run that never had a fault
/// would otherwise pass as "under" it. Unknown, not invalid: nothing
/// wrong was seen, but the claim is not shown.
pub fn nemesis(ops: &[Op], faults: &[&str]) -> CheckerResult {
    let mut started: BTreeMap<String, u64> = faults.iter().map(|f| (f.to_string(), 0)).collect();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.process == jepsen::history::Process::Nemesis) {
        let Some(fault) = op.f.strip_prefix("start-") else { continue };
        if op.r#type != jepsen::history::OpType::Info {
            continue;
        }
        if op.value.get("error").is_some() {
            *failed.entry(fault.to_string()).or_default() += 1;
        } else {
            *started.entry(fault.to_string()).or_default() += 1;
        }
    }
    let never: Vec<&String> = started.iter().filter(|(_, n)| **n == 0).map(|(f, _)| f).collect();
    let valid = if never.is_empty() { Validity::Valid } else { Validity::Unknown };
    let mut r = CheckerResult::new(valid).with_detail("never_applied", json!(never));
    for (fault, n) in &started {
        r = r.with_count(&format!("{fault}_applied"), *n);
    }
    for (fault, n) in &failed {
        r = r.with_count(&format!("{fault}_failed"), *n);
    }
    r
}

pub fn all(
    ops: &[Op],
    workloads: &[std::sync::Arc<Workload>],
    recovery: Recovery,
    replicas: CheckerResult,
    crashes: Vec<u64>,
    key_budget_ms: u64,
    faults: &[&str],
) -> anyhow::Result<Results> {
    let completed = pair(ops).map_err(|e| anyhow::anyhow!("malformed history: {e}"))?;
    let mut results = Results::new();
    for (i, w) in workloads.iter().enumerate() {
        let mine: Vec<Completed> =
            completed.iter().filter(|op| workload_of(op.process, workloads.len()) == i).cloned().collect();
        let result = match &**w {
            Workload::Register(_) => {
                linear::summarize(&linear::check_by_key(&Register, &mine, key_of, key_budget_ms))
            }
            Workload::Bank(_) => {
                // Totals and overdrafts read by read, then the whole history
                // against the ledger's model (one object: every op touches it).
                // The lookup of applied ids after the heal is not a bank op.
                let bank_ops: Vec<Completed> = mine.iter().filter(|op| op.f != "applied").cloned().collect();
                let linear = linear::check(&bank::model(), &bank_ops, key_budget_ms);
                let (lin_valid, gave_up) = match &linear {
                    linear::LinResult::Unknown { reason } if reason.starts_with(linear::MALFORMED) => {
                        (Validity::Invalid, 0)
                    }
                    linear::LinResult::Unknown { .. } => (Validity::Unknown, 1),
                    other => (other.validity(), 0),
                };
                let mut r = jepsen::bank::check(&mine, &bank::config());
                r.valid = r.valid.merge(lin_valid);
                r.with_count("gave_up_keys", gave_up).with_detail(
                    "linearizable",
                    serde_json::to_value(&linear_summary(&linear)).unwrap_or_default(),
                )
            }
            Workload::Set(_) => jepsen::set::check(&mine, last_nemesis_index(ops)),
            Workload::Revocation(_) => jepsen::revocation::check(&mine),
            Workload::Feed(f) => jepsen::feed::check(&f.acked(), &f.deliveries(), &f.subscribers()),
        };
        results.insert(w.name(), result.with_count("ops", mine.len() as u64));
    }
    let valid = if recovery.converged { Validity::Valid } else { Validity::Invalid };
    results.insert(
        "recovery",
        CheckerResult::new(valid)
            .with_detail("seconds", json!(recovery.seconds))
            .with_detail("nodes", json!(recovery.nodes)),
    );
    results.insert("replicas", replicas);
    let valid = if crashes.is_empty() { Validity::Valid } else { Validity::Invalid };
    results.insert("crashes", CheckerResult::new(valid).with_detail("nodes", json!(crashes)));
    results.insert("nemesis", nemesis(ops, faults));
    Ok(results)
}
