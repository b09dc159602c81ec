//! The audit trail on a real cluster: failed logins, token grants, refused
//! and accepted writes all leave records, identical on every node, that
//! Query filters and Verify walks; no password or secret value appears.

mod common;

use std::time::Duration;

use common::*;
use strongbox_proto::v1::audit_client::AuditClient;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::*;
use tonic::Code;

const MARKER: &str = "audit-secret-marker";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_grants_and_refusals_are_audited_and_the_chain_verifies_everywhere() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;

    let wrong =
        LoginRequest { username: "admin".into(), password: format!("{MARKER}-wrong"), ttl_seconds: 0 };
    let refused = AuthClient::new(c.channel(leader)).login(wrong).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    put_retry(&c, leader, "audit/a", MARKER, "audit-1").await;
    let mut cas = put_req("audit/a", MARKER, "audit-2");
    cas.cas = Some(42);
    assert_eq!(c.secrets(leader).put(cas).await.unwrap_err().code(), Code::FailedPrecondition);
    let target = c.status(leader).await.unwrap().applied_index;

    let mut all = Vec::new();
    for id in 1..=3 {
        c.wait_applied(id, target, Duration::from_secs(10)).await;
        let mut audit = AuditClient::new(c.admin(id));
        let v = audit.verify(AuditVerifyRequest { options: None }).await.unwrap().into_inner();
        assert!(v.ok, "node {id}: {v:?}");
        assert_eq!(v.records_checked, v.head_seq);
        let q = AuditQueryRequest { limit: 1000, ..Default::default() };
        let records = audit.query(q).await.unwrap().into_inner().records;
        all.push(records);
    }
    assert!(all.windows(2).all(|w| w[0] == w[1]), "every node holds the same chain");
    let records = &all[0];
    let text = format!("{records:?}");
    assert!(!text.contains(MARKER), "a password or secret value in the audit trail");
    let has = |actor: &str, action: &str, resource: &str, outcome: &str| {
        records
            .iter()
            .any(|r| r.actor == actor && r.action == action && r.resource == resource && r.outcome == outcome)
    };
    assert!(has("node", "record_login_failure", "user:admin", "ok"), "the failed login");
    assert!(has("node", "issue_token", "user:admin", "ok"), "the token grant");
    assert!(has("user:admin", "put_secret", "secrets:audit/a", "ok"));
    assert!(has("user:admin", "put_secret", "secrets:audit/a", "FailedPrecondition"));

    // Filters and pages.
    let mut audit = AuditClient::new(c.admin(leader));
    let q = AuditQueryRequest { outcome: "FailedPrecondition".into(), ..Default::default() };
    let refusals = audit.query(q).await.unwrap().into_inner();
    assert!(
        !refusals.records.is_empty() && refusals.records.iter().all(|r| r.outcome == "FailedPrecondition")
    );
    let q = AuditQueryRequest { limit: 2, ..Default::default() };
    let page = audit.query(q).await.unwrap().into_inner();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.next_after_seq, page.records[1].seq);
    let q = AuditQueryRequest { after_seq: page.next_after_seq, limit: 1, ..Default::default() };
    let next = audit.query(q).await.unwrap().into_inner();
    assert_eq!(next.records[0].seq, page.records[1].seq + 1);
    let q = AuditQueryRequest { limit: 5000, ..Default::default() };
    assert_eq!(audit.query(q).await.unwrap_err().code(), Code::InvalidArgument);
}
