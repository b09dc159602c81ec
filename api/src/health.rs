//! `grpc.health.v1` as readiness, as etcd's `/health` is: a node reports
//! SERVING while it can answer (it is a member, in step with a leader
//! within `local_read_staleness_max_ms`, not shutting down), NOT_SERVING
//! otherwise, so load balancers and probes route around a partitioned,
//! leaderless, removed or stopping node. The empty service name ("", the
//! server as a whole) follows the same rule.

use std::time::Duration;

use strongbox_raft::RaftNode;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Every name a health check may ask about on the client port.
pub const SERVICES: &[&str] = &[
    "",
    "strongbox.v1.Secrets",
    "strongbox.v1.Cluster",
    "strongbox.v1.Auth",
    "strongbox.v1.Users",
    "strongbox.v1.Clients",
    "strongbox.v1.Feed",
    "strongbox.v1.Audit",
    "strongbox.v1.Roles",
    "strongbox.v1.Keys",
    "strongbox.v1.Ledger",
];

/// How often readiness is evaluated.
const EVERY: Duration = Duration::from_millis(500);

/// Whether this node can serve now, and if not, why.
fn readiness(node: &RaftNode, staleness_max: Option<Duration>) -> Result<(), String> {
    if let Some(why) = node.removal() {
        return Err(why);
    }
    let member = node.raft.metrics().borrow().membership_config.membership().get_node(&node.id).is_some();
    if !member {
        return Err("not a member of the cluster (not yet added, or removed)".into());
    }
    match staleness_max {
        Some(max) => node.within_staleness(max).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Keeps the reporter's statuses in step with this node until it stops.
/// `staleness_max: None` (the unsafe stale-reads setting): in step or not,
/// a member serves.
pub async fn follow(
    reporter: HealthReporter,
    node: RaftNode,
    staleness_max: Option<Duration>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut last: Option<bool> = None;
    loop {
        let stop = *stopping.borrow();
        let why_not = if stop { Err("shutting down".to_string()) } else { readiness(&node, staleness_max) };
        let ready = why_not.is_ok();
        if last != Some(ready) {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            for s in SERVICES {
                reporter.set_service_status(*s, status).await;
            }
            match &why_not {
                Ok(()) => tracing::info!("health: SERVING"),
                Err(why) if last.is_some() => tracing::warn!(why = why.as_str(), "health: NOT_SERVING"),
                Err(why) => tracing::info!(why = why.as_str(), "health: NOT_SERVING until ready"),
            }
            last = Some(ready);
        }
        if stop {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            changed = stopping.changed() => {
                if changed.is_err() {
                    return; // the node is gone
                }
            }
        }
    }
}
