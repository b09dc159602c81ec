//! The leader hint on every response of a node that is not the leader (the
//! `strongbox-leader` metadata, `strongbox_proto::leader`): clients that
//! know several endpoints move to the leader and save every later request
//! the follower's hop to it. Every response carries it, health checks and
//! refusals included: who leads is not treated as a secret (the addresses
//! are the ones clients are given anyway).

use std::sync::{Arc, RwLock};

use strongbox_proto::leader::LEADER_HEADER;
use strongbox_raft::node::RaftNode;
use tonic::codegen::http::{HeaderName, HeaderValue, Response};

/// The hint this node gives now: the leader's advertised client address, or
/// nothing on the leader itself and while no leader is known.
#[derive(Clone, Default)]
pub struct LeaderHint(Arc<RwLock<Option<HeaderValue>>>);

impl LeaderHint {
    /// A hint kept current from the node's server metrics (they change on
    /// elections and membership changes, not per log entry), until the node
    /// shuts down.
    pub fn follow(node: &RaftNode) -> LeaderHint {
        let hint = LeaderHint::default();
        let mut metrics = node.raft.server_metrics();
        let kept = hint.clone();
        tokio::spawn(async move {
            loop {
                let now = {
                    let m = metrics.borrow_and_update();
                    match m.current_leader {
                        Some(leader) if leader != m.id => m
                            .membership_config
                            .membership()
                            .get_node(&leader)
                            .and_then(|n| HeaderValue::from_str(&n.api_addr).ok()),
                        _ => None,
                    }
                };
                *kept.0.write().expect("leader hint lock") = now;
                if metrics.changed().await.is_err() {
                    // Raft stopped: it names no leader any more.
                    *kept.0.write().expect("leader hint lock") = None;
                    return;
                }
            }
        });
        hint
    }

    /// Adds the hint, if any, to a response.
    pub fn stamp<B>(&self, mut resp: Response<B>) -> Response<B> {
        if let Some(v) = self.0.read().expect("leader hint lock").as_ref() {
            resp.headers_mut().insert(HeaderName::from_static(LEADER_HEADER), v.clone());
        }
        resp
    }
}
