//! The audit trail on a real cluster: failed logins, token grants, refused
//! and accepted writes all leave records, identical on every node, that
//! Query filters and Verify walks; no password or secret value appears.

mod common;

use std::time::Duration;

use common::*;
use strongbox_proto::v1::audit_client::AuditClient;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::users_client::UsersClient;
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
        let v = audit.verify(AuditVerifyRequest::default()).await.unwrap().into_inner();
        assert!(v.ok, "node {id}: {v:?}");
        assert_eq!(v.records_checked, v.head_seq);
        let q = AuditQueryRequest { limit: 1000, ..Default::default() };
        let records = audit.query(q).await.unwrap().into_inner().records;
        let head = records.iter().find(|r| r.seq == v.head_seq).expect("the head record");
        assert_eq!(v.head_hash, head.hash, "node {id}: the head hash is the head record's");
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
    assert!(has("node", "record_login_failure", "user:admin", "Unauthenticated"), "the failed login");
    assert!(has("user:admin", "issue_token", "user:admin", "ok"), "the token grant, as who logged in");
    assert!(has("user:admin", "put_secret", "secrets:audit/a", "ok"));
    assert!(has("user:admin", "put_secret", "secrets:audit/a", "FailedPrecondition"));

    // Filters and pages.
    let mut audit = AuditClient::new(c.admin(leader));
    let q = AuditQueryRequest { outcome: "FailedPrecondition".into(), ..Default::default() };
    let refusals = audit.query(q).await.unwrap().into_inner();
    assert!(
        !refusals.records.is_empty() && refusals.records.iter().all(|r| r.outcome == "FailedPrecondition")
    );
    // Filters nothing could match are refused, not answered with silence.
    for q in [
        AuditQueryRequest { outcome: "permission_denied".into(), ..Default::default() },
        AuditQueryRequest { since_ms: 2_000, until_ms: 1_000, ..Default::default() },
    ] {
        let e = audit.query(q).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    let q = AuditQueryRequest { limit: 2, ..Default::default() };
    let page = audit.query(q).await.unwrap().into_inner();
    assert_eq!(page.records.len(), 2);
    assert_eq!(page.next_after_seq, page.records[1].seq);
    let q = AuditQueryRequest { after_seq: page.next_after_seq, limit: 1, ..Default::default() };
    let next = audit.query(q).await.unwrap().into_inner();
    assert_eq!(next.records[0].seq, page.records[1].seq + 1);
    let q = AuditQueryRequest { limit: 5000, ..Default::default() };
    assert_eq!(audit.query(q).await.unwrap_err().code(), Code::InvalidArgument);
    // The last possible cursor: nothing after it (it used to overflow).
    for chain in [AuditChain::Replicated, AuditChain::Local] {
        let q = AuditQueryRequest { after_seq: u64::MAX, chain: chain as i32, ..Default::default() };
        let end = audit.query(q).await.unwrap().into_inner();
        assert!(end.records.is_empty(), "{chain:?}: {:?}", end.records);
    }
}

async fn local_records(c: &TestCluster, node: u64) -> Vec<AuditRecord> {
    let q = AuditQueryRequest { limit: 1000, chain: AuditChain::Local as i32, ..Default::default() };
    AuditClient::new(c.admin(node)).query(q).await.unwrap().into_inner().records
}

async fn verify(c: &TestCluster, node: u64, chain: AuditChain) -> AuditVerifyResponse {
    let req = AuditVerifyRequest { options: None, chain: chain as i32 };
    // The node may have just restarted: UNAVAILABLE until it has a leader.
    for _ in 0..100 {
        match AuditClient::new(c.admin(node)).verify(req.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == Code::Unavailable => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(s) => panic!("verify on node {node}: {s:?}"),
        }
    }
    panic!("node {node} did not answer Verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_early_refusals_are_audited_locally_and_edits_on_disk_are_found() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let node = leader % 3 + 1;
    put_retry(&c, leader, "local/a", MARKER, "local-1").await;
    let bob_password = "correct horse battery bob";
    let create = CreateUserRequest {
        options: None,
        username: "bob".into(),
        password: bob_password.into(),
        roles: vec![],
    };
    UsersClient::new(c.admin(leader)).create(create).await.unwrap();
    let login = LoginRequest { username: "bob".into(), password: bob_password.into(), ttl_seconds: 0 };
    let bob = AuthClient::new(c.channel(node)).login(login).await.unwrap().into_inner().access_token;

    // On one node: an accepted read (named by the client), a denied one, one
    // without a token, one with a token nobody issued, a write refused
    // before proposing, a malformed write, and an accepted write.
    let mut read = tonic::Request::new(get_req("local/a", Consistency::Linearizable, 0));
    read.metadata_mut().insert("x-request-id", "named-read-1".parse().unwrap());
    assert_eq!(c.secrets(node).get(read).await.unwrap().into_inner().value, MARKER.as_bytes());
    let as_bob = || SecretsClient::new(c.authed(node, Some(&bob)));
    let denied = as_bob().get(get_req("local/a", Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut anonymous = SecretsClient::new(c.channel(node));
    let r = anonymous.get(get_req("local/a", Consistency::Linearizable, 0)).await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    let mut forged = SecretsClient::new(c.authed(node, Some("sbx_not-a-real-token")));
    let r = forged.get(get_req("local/a", Consistency::Linearizable, 0)).await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    let bob_put = as_bob().put(put_req("local/a", MARKER, "bob-put-1")).await.unwrap_err();
    assert_eq!(bob_put.code(), Code::PermissionDenied);
    let bad = c.secrets(node).put(put_req("", MARKER, "bad-put-1")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    c.secrets(node).put(put_req("local/b", MARKER, "good-put-1")).await.unwrap();
    // Over the decode limit: tonic refuses it before any handler runs.
    let mut huge = tonic::Request::new(put_req("local/huge", &"x".repeat(2 << 20), "huge-put-1"));
    huge.metadata_mut().insert("x-request-id", "huge-put-1".parse().unwrap());
    let r = c.secrets(node).put(huge).await.unwrap_err();
    assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");

    let records = local_records(&c, node).await;
    assert!(!format!("{records:?}").contains(MARKER), "a secret value in the local audit log");
    assert!(records.iter().all(|r| r.node == node));
    let find = |actor: &str, action: &str, outcome: &str| {
        records.iter().find(|r| r.actor == actor && r.action == action && r.outcome == outcome)
    };
    let ok_read = find("user:admin", "secrets.get", "ok").expect("the accepted read");
    assert_eq!((ok_read.resource.as_str(), ok_read.request_id.as_str()), ("secrets:local/a", "named-read-1"));
    let denied = find("user:bob", "secrets.get", "PermissionDenied").expect("the denied read");
    assert_eq!(denied.resource, "secrets:local/a");
    assert!(find("anonymous", "secrets.get", "Unauthenticated").is_some(), "the read without a token");
    assert!(find("token:unknown", "secrets.get", "Unauthenticated").is_some(), "the forged token");
    let refused = find("user:bob", "secrets.put", "PermissionDenied").expect("the refused write");
    assert_eq!((refused.resource.as_str(), refused.request_id.as_str()), ("secrets:local/a", "bob-put-1"));
    assert!(find("user:admin", "secrets.put", "InvalidArgument").is_some(), "the malformed write");
    let huge = find("user:admin", "secrets.put", "ResourceExhausted").expect("the oversized write");
    assert_eq!(huge.request_id, "huge-put-1");
    assert!(
        !records.iter().any(|r| r.request_id == "good-put-1"),
        "an applied write is in the replicated chain, not the local one"
    );
    let other = (1..=3).find(|id| *id != node).unwrap();
    assert!(
        !local_records(&c, other).await.iter().any(|r| r.request_id == "named-read-1"),
        "the local log is node-local"
    );
    let v = verify(&c, node, AuditChain::Local).await;
    assert!(v.ok && v.records_checked == v.head_seq && v.first_seq == 1, "{v:?}");

    // An insider with the node's master key rewrites a record of each chain
    // on disk (validly re-encrypted): Verify on that node names them.
    c.stop(node).await;
    let cfg = c.configs[&node].1.clone();
    let db =
        strongbox_store::Db::open(&cfg.data_dir.join("db"), strongbox_api::encryption::codec(&cfg).unwrap())
            .unwrap();
    let mut local = strongbox_store::local_audit::read(&db, denied.seq, 1).unwrap().remove(0);
    local.outcome = "ok".into();
    let key3 = 3u64.to_be_bytes();
    let mut replicated: strongbox_store::audit::AuditRecord =
        db.get(strongbox_store::Cf::Audit, &key3).unwrap().unwrap();
    replicated.actor = "user:someone-else".into();
    let mut batch = db.batch();
    batch.put(strongbox_store::Cf::LocalAudit, &strongbox_store::local_audit::key(local.seq), &local);
    batch.put(strongbox_store::Cf::Audit, &key3, &replicated);
    db.write(batch, true).unwrap();
    drop(db);
    c.restart(node);

    let v = verify(&c, node, AuditChain::Replicated).await;
    assert_eq!((v.ok, v.first_broken_seq), (false, 3), "{v:?}");
    let v = verify(&c, node, AuditChain::Local).await;
    assert_eq!((v.ok, v.first_broken_seq), (false, denied.seq), "{v:?}");
    assert!(verify(&c, other, AuditChain::Replicated).await.ok, "the other nodes' copies are intact");
}
