//! A node removed from the cluster learns it. openraft 0.9 stops
//! replicating to a removed node, often before the entry that removes it
//! reaches it, so such a node keeps its old membership view for good: it
//! would go on forwarding writes (and the leader accepted them), wait out
//! every linearizable read, and tell clients "no leader, retry shortly".
//! etcd tells a removed member so and it stops serving; here:
//!
//! - every peer request a node sends that the leader answers for it
//!   (forwarded writes, read index) names the sender (`FROM_NODE_HEADER`);
//! - the leader refuses one from a node its membership does not list, with
//!   FAILED_PRECONDITION saying so (`refusal`);
//! - the sender, told so, refuses clients' reads and writes with
//!   UNAVAILABLE (so clients with other endpoints move on) saying it was
//!   removed and naming the members to use instead, and reports
//!   NOT_SERVING, until Raft makes progress here again (it was added back).
//!
//! A node that applied its own removal knows without being told (its
//! membership does not list it). Nothing here changes Raft state: a wrong
//! verdict would cost availability on one node until its next applied
//! entry, never safety.

use std::sync::Mutex;

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::types::NodeId;

/// Peer request metadata: the id of the node that sent it.
pub const FROM_NODE_HEADER: &str = "strongbox-from-node";

/// How the leader's refusal reads (and is recognised by).
const NOT_LISTED: &str = "is not in the leader's membership";

/// The id a peer request names as its sender, if it names one (nodes of
/// older releases do not).
pub fn sender(meta: &MetadataMap) -> Option<NodeId> {
    meta.get(FROM_NODE_HEADER)?.to_str().ok()?.parse().ok()
}

/// Names `from` as the sender of a peer request.
pub fn stamp<T>(req: &mut tonic::Request<T>, from: NodeId) {
    if let Ok(v) = from.to_string().parse() {
        req.metadata_mut().insert(FROM_NODE_HEADER, v);
    }
}

/// The leader's answer to a peer request from a node it does not list.
pub fn refusal(from: NodeId, leader: NodeId, members: &str) -> Status {
    Status::failed_precondition(format!("node {from} {NOT_LISTED} (leader {leader}; members: {members})"))
}

pub fn is_refusal(s: &Status) -> bool {
    s.code() == tonic::Code::FailedPrecondition && s.message().contains(NOT_LISTED)
}

/// What this node was told about its own membership.
#[derive(Default)]
pub struct Removal {
    told: Mutex<Option<Told>>,
}

struct Told {
    /// This node's applied index when told: any entry applied since means
    /// a leader replicates here again.
    applied: Option<u64>,
    why: String,
}

impl Removal {
    pub fn told(&self, applied: Option<u64>, refusal: &Status) {
        let why = refusal.message().to_string();
        let mut told = self.told.lock().expect("removal lock");
        if told.is_none() {
            tracing::warn!(why = why.as_str(), "the leader says this node is no longer a member");
        }
        *told = Some(Told { applied, why });
    }

    /// Why this node is no member, if a leader said so since its last
    /// applied entry.
    pub fn current(&self, applied: Option<u64>) -> Option<String> {
        let mut told = self.told.lock().expect("removal lock");
        match told.as_ref() {
            Some(t) if t.applied == applied => Some(t.why.clone()),
            Some(_) => {
                tracing::info!("entries are applied here again: this node is a member");
                *told = None;
                None
            }
            None => None,
        }
    }
}

/// What clients of a removed node are told.
pub fn client_message(id: NodeId, why: &str) -> String {
    format!(
        "node {id} was removed from the cluster ({why}): it serves no reads or writes; send requests to a \
         member, or add this node again (`strongbox cluster add-learner`, then `promote`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_told_removal_lasts_until_an_entry_is_applied() {
        let r = Removal::default();
        assert_eq!(r.current(Some(7)), None);
        let refused = refusal(3, 1, "1, 2");
        assert!(is_refusal(&refused));
        assert!(!is_refusal(&Status::failed_precondition("not the leader")));
        r.told(Some(7), &refused);
        assert!(r.current(Some(7)).is_some_and(|w| w.contains("node 3 is not in the leader's membership")));
        assert_eq!(r.current(Some(8)), None, "applied again: added back");
        assert_eq!(r.current(Some(7)), None, "cleared for good");
    }

    #[test]
    fn the_sender_round_trips_and_garbage_names_none() {
        let mut req = tonic::Request::new(());
        stamp(&mut req, 42);
        assert_eq!(sender(req.metadata()), Some(42));
        let mut bad = MetadataMap::new();
        bad.insert(FROM_NODE_HEADER, "x1".parse().unwrap());
        assert_eq!(sender(&bad), None);
        assert_eq!(sender(&MetadataMap::new()), None);
    }
}
