//! Three real nodes over real sockets with TLS: elections, failover,
//! durability, snapshots, deduplication, bad input.

mod common;

use std::time::Duration;

use common::*;
use strongbox_proto::v1::*;
use tonic::Code;

#[tokio::test]
async fn writes_and_reads_through_every_node() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;

    let s = c.status(1).await.unwrap();
    assert!(s.leader_id.is_some());
    assert_eq!(s.members.len(), 3);
    assert!(s.members.iter().all(|m| m.voter));

    let mut last_revision = 0;
    for id in 1..=3u64 {
        let r = put_retry(&c, id, &format!("team/k{id}"), &format!("v{id}"), &format!("req-{id}")).await;
        assert_eq!(r.version, 1);
        assert!(r.revision > last_revision, "revisions grow");
        last_revision = r.revision;
    }
    for reader in 1..=3u64 {
        for id in 1..=3u64 {
            let got = c
                .secrets(reader)
                .get(get_req(&format!("team/k{id}"), Consistency::Linearizable, 0))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.value, format!("v{id}").as_bytes(), "linearizable read on node {reader}");
        }
        // Read-your-writes from any node with a local read at the last revision.
        let got = c
            .secrets(reader)
            .get(get_req("team/k3", Consistency::Local, last_revision))
            .await
            .unwrap()
            .into_inner();
        assert!(got.revision >= last_revision);
        assert_eq!(got.value, b"v3");
        // Every member of a healthy cluster is in step with the leader well
        // within a second (heartbeats), so a tight staleness bound serves.
        let mut tight = get_req("team/k3", Consistency::Local, last_revision);
        tight.options.as_mut().unwrap().max_staleness_ms = 1_000;
        let got = c.secrets(reader).get(tight).await.unwrap().into_inner();
        assert_eq!(got.value, b"v3", "local read within 1 s of staleness on node {reader}");
    }
}

#[tokio::test]
async fn duplicate_request_id_is_applied_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let first = put_retry(&c, 1, "dup/p", "a", "the-same-id").await;
    assert!(!first.deduplicated);
    // The retry arrives at another node (as after a timeout and reconnect).
    let again = c.secrets(2).put(put_req("dup/p", "a", "the-same-id")).await.unwrap().into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.version, first.version);
    assert_eq!(again.revision, first.revision);
    let got = c.secrets(3).get(get_req("dup/p", Consistency::Linearizable, 0)).await.unwrap().into_inner();
    assert_eq!(got.latest_version, 1, "applied exactly once");
    // The same id for another kind of request: refused, and nothing deleted.
    let reused = c
        .secrets(1)
        .delete(DeleteSecretRequest {
            options: Some(WriteOptions { request_id: "the-same-id".into() }),
            path: "dup/p".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition, "{reused:?}");
    assert!(reused.message().contains("was already used"), "{}", reused.message());
    // The same id for the same kind with another value: refused too, not
    // answered as if the new value had been written.
    let reused = c.secrets(2).put(put_req("dup/p", "b", "the-same-id")).await.unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition, "{reused:?}");
    let got = c.secrets(3).get(get_req("dup/p", Consistency::Linearizable, 0)).await.unwrap().into_inner();
    assert_eq!(got.value, b"a", "the reused id must not have changed anything");
    assert_eq!(got.latest_version, 1);
}

#[tokio::test]
async fn leader_killed_new_leader_and_restarted_node_catches_up() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let old = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, old, "f/before", "1", "before").await;

    c.kill(old).await;
    let started = tokio::time::Instant::now();
    let new = c.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    eprintln!("new leader {new} after {:?}", started.elapsed());

    let survivor = (1..=3).find(|id| *id != old && *id != new).unwrap();
    let r = put_retry(&c, survivor, "f/after", "2", "after").await;

    c.restart(old);
    // The restarted node catches up: a local read at the acknowledged
    // revision is answered from its own state.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let mut client = c.secrets(old);
        match client.get(get_req("f/after", Consistency::Local, r.revision)).await {
            Ok(resp) => break resp.into_inner(),
            Err(s) => {
                assert!(tokio::time::Instant::now() < deadline, "restarted node never caught up: {s:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(got.value, b"2");
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_of_every_node() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    for i in 0..40 {
        put_retry(&c, leader, &format!("d/k{i}"), &i.to_string(), &format!("d{i}")).await;
    }
    for id in 1..=3 {
        c.kill(id).await;
    }
    for id in 1..=3 {
        c.restart(id);
    }
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    // A restarted node may report the leader from its persisted vote before
    // that leader's process listens again: UNAVAILABLE is retried, as any
    // client would; anything else (NOT_FOUND above all) fails the test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for i in 0..40 {
        let got = loop {
            let r = c.secrets(leader).get(get_req(&format!("d/k{i}"), Consistency::Linearizable, 0)).await;
            match r {
                Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                r => break r.unwrap_or_else(|s| panic!("d/k{i} lost after restart: {s:?}")).into_inner(),
            }
        };
        assert_eq!(got.value, i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn node_far_behind_is_caught_up_by_snapshot() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let raft = snapshot_often();
    let mut c = TestCluster::start(3, raft).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let lagger = (1..=3).find(|id| *id != leader).unwrap();
    c.stop(lagger).await;
    let mut last = None;
    for i in 0..120 {
        last = Some(put_retry(&c, leader, &format!("s/k{}", i % 10), &i.to_string(), &format!("s{i}")).await);
    }
    // openraft postpones a purge while a replication stream (here: to the
    // stopped node) has that range in flight; further writes retrigger it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut i = 120;
    let ls = loop {
        let ls = c.status(leader).await.unwrap();
        if ls.purged_index > 0 {
            break ls;
        }
        assert!(tokio::time::Instant::now() < deadline, "the leader never purged its log: {ls:?}");
        last = Some(put_retry(&c, leader, "s/k9", "119", &format!("s{i}")).await);
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    c.restart(lagger);
    let s = c.wait_applied(lagger, ls.applied_index, Duration::from_secs(30)).await;
    assert!(s.snapshot_index > 0, "the lagging node installed a snapshot: {s:?}");
    let got = c
        .secrets(lagger)
        .get(get_req("s/k9", Consistency::Local, last.unwrap().revision))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"119");
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut s = c.secrets(leader);
    let before = c.status(leader).await.unwrap().revision;

    let e = s.put(put_req("", "v", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("path"), "{}", e.message());
    // Without a token, that is what a caller hears first, whatever else is
    // wrong with the request (as from etcd or Vault).
    let e = secrets_client::SecretsClient::new(c.authed(leader, None))
        .put(put_req("", "v", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = users_client::UsersClient::new(c.authed(leader, None))
        .get(GetUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let e = s.put(put_req("a//b", "v", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for dotted in ["team-a/../app/x", "team-a/./x", ".."] {
        let e = s.put(put_req(dotted, "v", "")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{dotted}");
        assert!(e.message().contains("'..' segment"), "{}", e.message());
    }

    // Over the configured value limit (64 KiB), under the request cap.
    let big = "x".repeat(100 * 1024);
    let e = s.put(put_req("ok/path", &big, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("value"), "{}", e.message());

    let huge = "x".repeat(2 * 1024 * 1024);
    let e = s.put(put_req("ok/path", &huge, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert_eq!(e.message().matches("1572864").count(), 1, "the limit said once: {}", e.message());

    // Two authorization entries, a valid one first: refused, not picked.
    let mut two = tonic::Request::new(get_req("ok/path", Consistency::Linearizable, 0));
    two.metadata_mut().append("authorization", format!("Bearer {}", c.admin_token).parse().unwrap());
    two.metadata_mut().append("authorization", "Bearer sbx_someone_else".parse().unwrap());
    let e = secrets_client::SecretsClient::new(c.channel(leader)).get(two).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("exactly one"), "{}", e.message());

    // A body that is not the method's message (field 1, a string there,
    // holds bytes that are not UTF-8): INVALID_ARGUMENT, not the INTERNAL
    // tonic answers, and before any token is asked for.
    let mut raw = tonic::client::Grpc::new(c.channel(leader));
    raw.ready().await.unwrap();
    let garbage = strongbox_proto::raft::v1::Payload { data: vec![0xff, 0xfe], ..Default::default() };
    let e = raw
        .unary(
            tonic::Request::new(garbage),
            tonic::codegen::http::uri::PathAndQuery::from_static("/strongbox.v1.Auth/Login"),
            tonic_prost::ProstCodec::<_, strongbox_proto::raft::v1::Payload>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("UTF-8"), "{}", e.message());
    // A path nothing serves.
    let e = raw
        .unary(
            tonic::Request::new(strongbox_proto::raft::v1::Payload::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/strongbox.v1.Secrets/NoSuchMethod"),
            tonic_prost::ProstCodec::<_, strongbox_proto::raft::v1::Payload>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    // Both are counted though no handler ran: as the method routed to, and
    // as `unknown` (a client's path names no series).
    let body = c.metrics(leader).await;
    for (method, code) in [("auth.login", "InvalidArgument"), ("unknown", "Unimplemented")] {
        assert!(
            body.lines().any(|l| l.starts_with("strongbox_rpc_total{")
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("code=\"{code}\""))),
            "no strongbox_rpc_total for {method} {code} in /metrics"
        );
    }
    assert!(!body.contains("NoSuchMethod"), "an unserved path became a label");
    // Far over, on a read (refused by the transport before any handler).
    let e = s.get(get_req(&"x".repeat(9 << 20), Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("request too large"), "{}", e.message());

    // A path with the rules' wildcard; a request id with a control character.
    let e = s.put(put_req("team-a/*", "v", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = s.put(put_req("ok/rid", "v", "retry\n1")).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("control"), "{e:?}");

    // An idempotency key over its limit: refused, and nothing keeps it.
    let e = s.put(put_req("ok/rid", "v", &"r".repeat(129))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("options.request_id: at most 128 bytes"), "{}", e.message());

    let e = s.get(get_req("missing/thing", Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A consistency level this build does not know is not read as the
    // default; a revision no write ever returned is refused at once.
    let mut unknown = get_req("missing/thing", Consistency::Linearizable, 0);
    unknown.options.as_mut().unwrap().consistency = 7;
    let e = s.get(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("options.consistency: unknown value 7"), "{}", e.message());
    let e = s.get(get_req("missing/thing", Consistency::Linearizable, before + 1_000_000)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("past the cluster's latest revision"), "{}", e.message());

    put_retry(&c, leader, "cas/p", "1", "cas-1").await;
    let mut req = put_req("cas/p", "2", "cas-2");
    req.cas = Some(0);
    let e = s.put(req).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let after = c.status(leader).await.unwrap().revision;
    assert_eq!(after, before + 1, "only the one valid put changed state");
    assert!(s.get(get_req("ok/path", Consistency::Linearizable, 0)).await.is_err());

    // Soft delete, as Vault does it: the deleted latest version is hidden
    // even when named by number, the answer says why, a second delete
    // succeeds, and undelete brings the version back.
    put_retry(&c, leader, "del/p", "one", "del-1").await;
    put_retry(&c, leader, "del/p", "two", "del-2").await;
    let del = || DeleteSecretRequest { options: None, path: "del/p".into() };
    assert_eq!(s.delete(del()).await.unwrap().into_inner().version, 2);
    assert_eq!(s.delete(del()).await.unwrap().into_inner().version, 2, "deleting again succeeds");
    for version in [0, 2] {
        let e = s.get(get_req_v("del/p", version)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.message().contains("latest version (2) of secret del/p is deleted"), "{}", e.message());
    }
    let one = s.get(get_req_v("del/p", 1)).await.unwrap().into_inner();
    assert_eq!(one.value, b"one");
    assert!(0 < one.version_revision && one.version_revision < one.revision, "{one:?}");
    let e = s.get(get_req_v("del/p", 7)).await.unwrap_err();
    assert!(e.message().contains("no version 7 of secret del/p (the latest is 2)"), "{}", e.message());
    let back = s.undelete(UndeleteSecretRequest { options: None, path: "del/p".into() }).await.unwrap();
    assert_eq!(back.into_inner().version, 2);
    assert_eq!(s.get(get_req_v("del/p", 0)).await.unwrap().into_inner().value, b"two");

    // A deleted version stays deleted when a put moves the latest on
    // (Vault KV v2; before state version 4 the put made it readable again).
    s.delete(del()).await.unwrap();
    put_retry(&c, leader, "del/p", "three", "del-3").await;
    let e = s.get(get_req_v("del/p", 2)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("version 2 of secret del/p is deleted"), "{}", e.message());
    assert_eq!(s.get(get_req_v("del/p", 0)).await.unwrap().into_inner().value, b"three");

    // Versions by number: the ones that changed are named in the answer.
    let by_number =
        |versions: Vec<u64>| SecretVersionsRequest { options: None, path: "del/p".into(), versions };
    let d = s.delete_versions(by_number(vec![1, 2, 9])).await.unwrap().into_inner();
    assert_eq!(d.versions, vec![1], "2 was deleted already, 9 does not exist");
    assert_eq!(s.get(get_req_v("del/p", 1)).await.unwrap_err().code(), Code::NotFound);
    let m =
        s.metadata(SecretMetadataRequest { options: None, path: "del/p".into() }).await.unwrap().into_inner();
    let deleted: Vec<bool> = m.versions.iter().map(|v| v.deleted_ms != 0).collect();
    assert_eq!(deleted, vec![true, true, false], "{m:?}");
    assert!(!m.deleted, "the latest (3) is live");
    let u = s.undelete_versions(by_number(vec![2, 3])).await.unwrap().into_inner();
    assert_eq!(u.versions, vec![2], "3 was not deleted");
    assert_eq!(s.get(get_req_v("del/p", 2)).await.unwrap().into_inner().value, b"two");
    assert_eq!(s.get(get_req_v("del/p", 1)).await.unwrap_err().code(), Code::NotFound, "1 stays deleted");
    let bad = s.delete_versions(by_number(vec![0])).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // Purged (Vault's metadata delete): the versions, the metadata and the
    // listing go, on every node; the path starts over at version 1.
    let purge = |path: &str| PurgeSecretRequest { options: None, path: path.into() };
    let p = s.purge(purge("del/p")).await.unwrap().into_inner();
    assert_eq!(p.versions_destroyed, 3, "{p:?}");
    for node in 1..=3 {
        let mut on = c.secrets(node);
        let e = on.get(get_req_v("del/p", 2)).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "no secret at del/p"), "node {node}");
        let list = ListSecretsRequest { options: None, folder: "del".into(), page: None };
        assert!(on.list(list).await.unwrap().into_inner().entries.is_empty(), "node {node}");
    }
    let again = s.purge(purge("del/p")).await.unwrap().into_inner();
    assert_eq!((again.versions_destroyed, again.revision), (0, p.revision), "a purge again changes nothing");
    assert_eq!(s.purge(purge("del//p")).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(put_retry(&c, leader, "del/p", "again", "del-4").await.version, 1);

    // Settings without a version (Vault's metadata put): cas required,
    // custom metadata shown by Metadata on every node.
    let settings = UpdateSecretMetadataRequest {
        options: None,
        path: "del/p".into(),
        cas_required: Some(true),
        custom_metadata: Some(CustomMetadata { entries: [("owner".to_string(), "ops".to_string())].into() }),
        ..Default::default()
    };
    s.update_metadata(settings).await.unwrap();
    let e = s.put(put_req("del/p", "no-cas", "del-5")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("requires check-and-set"), "{}", e.message());
    let mut with_cas = put_req("del/p", "with-cas", "del-6");
    with_cas.cas = Some(1);
    assert_eq!(s.put(with_cas).await.unwrap().into_inner().version, 2);
    for node in 1..=3 {
        let m = c
            .secrets(node)
            .metadata(SecretMetadataRequest { options: None, path: "del/p".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(m.cas_required, "node {node}");
        assert_eq!(m.custom_metadata.get("owner").map(String::as_str), Some("ops"), "node {node}");
    }
    let empty = UpdateSecretMetadataRequest { path: "del/p".into(), ..Default::default() };
    assert_eq!(s.update_metadata(empty).await.unwrap_err().code(), Code::InvalidArgument);

    // Settings before the first version: listed with no version on every
    // node, and the first put must carry cas 0.
    let first =
        UpdateSecretMetadataRequest { path: "del/q".into(), cas_required: Some(true), ..Default::default() };
    s.update_metadata(first).await.unwrap();
    for node in 1..=3 {
        let mut on = c.secrets(node);
        let m = on
            .metadata(SecretMetadataRequest { options: None, path: "del/q".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((m.latest_version, m.versions.len(), m.cas_required), (0, 0, true), "node {node}");
        let list = ListSecretsRequest { options: None, folder: "del".into(), page: None };
        let names: Vec<_> =
            on.list(list).await.unwrap().into_inner().entries.into_iter().map(|e| e.name).collect();
        assert!(names.contains(&"q".to_string()), "node {node}: {names:?}");
        let e = on.get(get_req("del/q", Consistency::Linearizable, 0)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "node {node}");
        assert!(e.message().contains("has no version yet"), "node {node}: {}", e.message());
    }
    let e = s.put(put_req("del/q", "no-cas", "del-7")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let mut new = put_req("del/q", "first", "del-8");
    new.cas = Some(0);
    assert_eq!(s.put(new).await.unwrap().into_inner().version, 1);
}

fn get_req_v(path: &str, version: u64) -> GetSecretRequest {
    GetSecretRequest { version, ..get_req(path, Consistency::Linearizable, 0) }
}

#[tokio::test]
async fn peers_refuse_certificates_from_another_ca() {
    use strongbox_api::tls::DevPki;
    use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
    use strongbox_proto::raft::v1::Payload;
    use tonic::transport::{Certificate, Identity};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let ca = Certificate::from_pem(std::fs::read(c.dir.path().join("ca.pem")).unwrap());
    let addr = c.raft_addr(1);

    let call = |identity: Option<Identity>| {
        let addr = addr.clone();
        let ca = ca.clone();
        async move {
            match peer_channel(&addr, ca, identity).await {
                Err(e) => Err(format!("connect: {e}")),
                Ok(ch) => RaftPeerClient::new(ch)
                    .vote(Payload { data: vec![0xff], ..Default::default() })
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?} {}", s.code(), s.message())),
            }
        }
    };

    // A genuine cluster certificate gets through TLS (and then fails on the
    // garbage payload with INVALID_ARGUMENT): the check below can fail.
    let res = call(Some(node_identity(&c, 2))).await;
    assert!(res.as_ref().is_err_and(|e| e.starts_with("InvalidArgument")), "{res:?}");

    let rogue = DevPki::new("rogue CA").unwrap().node_cert("rogue", &["127.0.0.1".parse().unwrap()]).unwrap();
    let res = call(Some(Identity::from_pem(rogue.cert_pem, rogue.key_pem.as_bytes()))).await;
    assert!(
        res.as_ref().is_err_and(|e| !e.starts_with("InvalidArgument")),
        "rogue peer must be refused: {res:?}"
    );

    let res = call(None).await;
    assert!(
        res.as_ref().is_err_and(|e| !e.starts_with("InvalidArgument")),
        "peer without a cert must be refused: {res:?}"
    );
}

/// `strongbox certs` as an operator runs it: a CA, then a certificate per
/// node, and a cluster that serves with them (peers over mutual TLS,
/// clients verifying the node's address against the CA).
#[tokio::test]
async fn a_cluster_runs_on_certificates_from_strongbox_certs() {
    use std::os::unix::fs::PermissionsExt;
    let certs = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strongbox")).arg("certs").args(args).output().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = certs(&["create-ca", "--dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let ca_before = std::fs::read(dir.path().join("ca.pem")).unwrap();

    // Never overwrites: a second CA would split the cluster.
    let again = certs(&["create-ca", "--dir", d]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca_before);
    // A CA key that is not the CA certificate's is refused, nothing written.
    let other = tempfile::tempdir().unwrap();
    assert!(certs(&["create-ca", "--dir", other.path().to_str().unwrap()]).status.success());
    let other_key = other.path().join("ca.key");
    let wrong = certs(
        &["create-node", "--dir", d, "--name", "node8", "--host", "127.0.0.1", "--ca-key"]
            .iter()
            .copied()
            .chain([other_key.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not belong"), "{wrong:?}");
    assert!(!dir.path().join("node8.pem").exists() && !dir.path().join("node8.key").exists());
    // A host that is neither an address nor a name is refused up front.
    let bad = certs(&["create-node", "--dir", d, "--name", "node9", "--host", "not a host"]);
    assert!(!bad.status.success());
    assert!(!dir.path().join("node9.pem").exists());

    for id in 1..=3 {
        let name = format!("node{id}");
        let out = certs(&[
            "create-node",
            "--dir",
            d,
            "--name",
            &name,
            "--host",
            "127.0.0.1",
            "--host",
            "db.example",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start_in(dir, 3, 0, fast_raft()).await;
    assert_eq!(std::fs::read(c.dir.path().join("ca.pem")).unwrap(), ca_before, "the cluster used our CA");
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    for id in 1..=3 {
        put_retry(&c, id, &format!("certs/{id}"), "v", &format!("certs-{id}")).await;
    }
    let mut s = c.secrets(leader);
    for id in 1..=3 {
        let got = s.get(get_req(&format!("certs/{id}"), Consistency::Linearizable, 0)).await.unwrap();
        assert_eq!(got.into_inner().value, b"v");
    }
}

/// A peer-port channel presenting `identity` (or no certificate).
async fn peer_channel(
    addr: &str,
    ca: tonic::transport::Certificate,
    identity: Option<tonic::transport::Identity>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{ClientTlsConfig, Endpoint};
    let mut tls = ClientTlsConfig::new().ca_certificate(ca).domain_name("strongbox-node");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls)?.connect().await
}

/// Node `id`'s cluster certificate, to speak on the peer port as it.
fn node_identity(c: &TestCluster, id: u64) -> tonic::transport::Identity {
    tonic::transport::Identity::from_pem(
        std::fs::read(c.dir.path().join(format!("node{id}.pem"))).unwrap(),
        std::fs::read(c.dir.path().join(format!("node{id}.key"))).unwrap(),
    )
}

/// openraft 0.9 hears from a leader that streams a snapshot only when the
/// stream ends, and the leader's heartbeats to that node wait behind it: a
/// receiver must not campaign meanwhile (it would depose a healthy leader),
/// and must try again once the sender goes silent. Alone, it tries with a
/// pre-vote, which it loses: its term must not move at all.
#[tokio::test]
async fn a_node_receiving_a_snapshot_does_not_campaign() {
    use futures::StreamExt;
    use strongbox_proto::raft::v1::raft_peer_client::RaftPeerClient;
    use strongbox_raft::types::SnapshotMeta;

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let (f, g) = match (1..=3).filter(|i| *i != leader).collect::<Vec<_>>()[..] {
        [f, g] => (f, g),
        _ => unreachable!(),
    };
    let term = c.status(f).await.unwrap().term;

    // A stream as the leader would open it, whose frames never come.
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(c.dir.path().join("ca.pem")).unwrap());
    let ch = peer_channel(&c.raft_addr(f), ca, Some(node_identity(&c, leader))).await.unwrap();
    let first =
        strongbox_raft::wire::encode(&(openraft::Vote::new_committed(term, leader), SnapshotMeta::default()));
    let frames = futures::stream::once(async move { first }).chain(futures::stream::pending());
    let stream = tokio::spawn(async move { RaftPeerClient::new(ch).install_snapshot(frames).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // f is alone: nothing but the hold keeps it from campaigning.
    c.kill(g).await;
    c.kill(leader).await;
    let pre_votes = |page: String| -> u64 {
        page.lines()
            .filter(|l| l.starts_with("strongbox_pre_votes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while tokio::time::Instant::now() < quiet_until {
        let s = c.status(f).await.expect("f answers status");
        assert_eq!(s.term, term, "node {f} campaigned while a snapshot was streaming to it");
        assert_eq!(
            pre_votes(c.metrics(f).await),
            0,
            "node {f} asked for votes while a snapshot was streaming"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let ended = tokio::time::timeout(Duration::from_secs(10), stream).await.expect("receive abandoned");
    let status = ended.unwrap().expect_err("a stream without frames is refused");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pre_votes(c.metrics(f).await) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {f} never tried to campaign after the stream ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.status(f).await.unwrap().term, term, "alone, node {f} must not raise its term");
}

/// A voter cut off from the others (here: paused past its election
/// timeout) must not depose the leader when it is back: it asks for a
/// pre-vote first, the others still hear the leader and refuse, and the
/// term does not move (without pre-vote it campaigned on its own, and its
/// higher term made the leader step down).
#[tokio::test]
async fn a_voter_that_lost_touch_does_not_depose_the_leader() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let term = c.status(leader).await.unwrap().term;
    c.pause(f);
    tokio::time::sleep(Duration::from_millis(6 * fast_raft().election_timeout_max_ms)).await;
    c.resume(f);
    tokio::time::sleep(Duration::from_millis(4 * fast_raft().election_timeout_max_ms)).await;
    for n in 1..=3 {
        let s = c.status(n).await.unwrap();
        assert_eq!((s.leader_id, s.term), (Some(leader), term), "node {n}: the leader was deposed");
    }
    put_retry(&c, f, "back/k", "v", "back-1").await;
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, leader, "m/p", "v", "m1").await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel(1));
    // Readiness is evaluated every 0.5 s: SERVING soon after the node is in
    // step, as a balancer polling it would see.
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let req = tonic_health::pb::HealthCheckRequest { service: "strongbox.v1.Secrets".into() };
        let status = health.check(req).await.unwrap().into_inner().status;
        if status == serving {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node 1 not SERVING within 5 s: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for service in strongbox_api::health::SERVICES {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.to_string() }).await;
        let status = r.unwrap_or_else(|e| panic!("{service:?}: {e:?}")).into_inner().status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    // Server reflection (v1 and v1alpha) lists the client services only.
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            let call = ServerReflectionClient::new(c.channel(2))
                .server_reflection_info(tokio_stream::iter(vec![req.clone()]))
                .await;
            match call {
                Ok(s) => break s.into_inner(),
                Err(e) => {
                    eprintln!("reflection call failed (retrying): {e:?}");
                    assert!(tokio::time::Instant::now() < deadline, "reflection keeps failing: {e:?}");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let reply = stream.message().await.unwrap().expect("one reflection reply");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"strongbox.v1.Secrets".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("raft")), "peer protocol must not be advertised: {names:?}");
    }

    // Raft gauges are exported once a second.
    let wanted = [
        "strongbox_raft_term",
        "strongbox_raft_is_leader 1",
        "strongbox_log_fsync_seconds",
        "strongbox_rpc_total",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = c.metrics(leader).await;
        let missing: Vec<_> = wanted.iter().filter(|m| !body.contains(**m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing {missing:?} in /metrics");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn membership_add_learner_promote_transfer_remove() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start_with_spares(3, 1, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let w = put_retry(&c, leader, "mem/before", "1", "mem-1").await;

    // A node that is not a member is not promoted, nor removed (etcd:
    // "member not found"), and nothing is logged for it.
    let e = c.cluster(follower).promote(PromoteRequest { id: 4 }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("node 4 is not a member"), "{e:?}");
    let e = c.cluster(leader).remove(RemoveRequest { id: 9 }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Node 4 starts empty, with no initial members: it waits to be added.
    c.spawn(4);
    let add = AddLearnerRequest { id: 4, raft_addr: c.raft_addr(4), api_addr: c.api_addr(4) };
    // Through a follower: membership changes are forwarded to the leader.
    let r = c.cluster(follower).add_learner(add).await.unwrap().into_inner();
    let m4 = r.members.iter().find(|m| m.id == 4).expect("node 4 is a member");
    assert!(!m4.voter, "added as a learner");
    // The same addition again is a retry: fine. The same id elsewhere, or
    // another id at a member's address (one machine voting twice), is not.
    let again = AddLearnerRequest { id: 4, raft_addr: c.raft_addr(4), api_addr: c.api_addr(4) };
    c.cluster(leader).add_learner(again).await.expect("a retried addition");
    let moved = AddLearnerRequest { id: 4, raft_addr: c.raft_addr(4), api_addr: "127.0.0.1:1".into() };
    let e = c.cluster(leader).add_learner(moved).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let twin = AddLearnerRequest { id: 5, raft_addr: c.raft_addr(follower), api_addr: "127.0.0.1:2".into() };
    let e = c.cluster(follower).add_learner(twin).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains(&format!("node {follower}'s")), "{e:?}");
    // openraft's blocking add_learner only waits until the learner is within
    // replication_lag_threshold entries, which a short log always is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        match c.secrets(4).get(get_req("mem/before", Consistency::Local, w.revision)).await {
            Ok(r) => break r,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "node 4: {e:?}\n{}", c.log(4)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.into_inner().value, b"1", "the learner caught up");

    // Twice at once, through a follower and through the leader: the second
    // reaches the leader while the first's joint configuration is not yet
    // committed (openraft refuses it as "in progress"). It must wait for the
    // first and succeed, not fail: that is also what a change retried on a
    // new leader meets when the old leader's attempt is still in flight.
    let (mut via_follower, mut via_leader) = (c.cluster(follower), c.cluster(leader));
    let (a, b) = tokio::join!(
        via_follower.promote(PromoteRequest { id: 4 }),
        via_leader.promote(PromoteRequest { id: 4 })
    );
    let b = b.unwrap_or_else(|e| panic!("the promotion through the leader: {e:?}"));
    let r = a.unwrap_or_else(|e| panic!("the promotion through a follower: {e:?}")).into_inner();
    assert!(r.members.iter().any(|m| m.id == 4 && m.voter), "promoted: {r:?}");
    assert_eq!(r.members.iter().filter(|m| m.voter).count(), 4);
    assert!(b.into_inner().members.iter().any(|m| m.id == 4 && m.voter));

    let t = c.cluster(1).transfer_leader(TransferLeaderRequest { id: 4 }).await.unwrap().into_inner();
    assert_eq!(t.leader_id, Some(4));
    put_retry(&c, 4, "mem/after", "2", "mem-2").await;

    let t = c
        .cluster(4)
        .transfer_leader(TransferLeaderRequest { id: leader })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}\n{}", c.log(leader), c.log(4)))
        .into_inner();
    assert_eq!(t.leader_id, Some(leader));
    let r = c.cluster(leader).remove(RemoveRequest { id: 4 }).await.unwrap().into_inner();
    assert_eq!(r.members.len(), 3, "node 4 removed: {r:?}");
    assert!(r.members.iter().all(|m| m.id != 4));
    // No longer a member: NOT_FOUND, as for promote and remove, through a
    // follower (the leader's answer crosses the forward) and the leader.
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();
    for via in [follower, leader] {
        let e = c.cluster(via).transfer_leader(TransferLeaderRequest { id: 4 }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "via node {via}: {e:?}");
        assert!(e.message().contains("is not a member"), "{}", e.message());
    }
    let e = c.cluster(leader).promote(PromoteRequest { id: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Node 4 knows it was removed, whether or not the entry removing it
    // reached it (else the leader tells it when it forwards): it says so to
    // clients, as UNAVAILABLE (a client with other endpoints moves on), and
    // must not forward writes to the leader, which refuses them anyway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        let e = c.secrets(4).put(put_req("mem/via-removed", "x", "mem-removed")).await.unwrap_err();
        if e.code() == Code::Unavailable && e.message().contains("was removed from the cluster") {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "node 4 does not know: {e:?}\n{}", c.log(4));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(e.message().contains("node 4 was removed"), "{e:?}");
    let e = c.secrets(4).get(get_req("mem/before", Consistency::Linearizable, 0)).await.unwrap_err();
    assert!(e.code() == Code::Unavailable && e.message().contains("was removed"), "{e:?}");
    let e = c.secrets(4).get(get_req("mem/before", Consistency::Local, 0)).await.unwrap_err();
    assert!(e.code() == Code::Unavailable && e.message().contains("was removed"), "{e:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel(4));
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    loop {
        let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
        if health.check(req).await.unwrap().into_inner().status == not_serving {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "node 4 still reports SERVING");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e =
        c.secrets(leader).get(get_req("mem/via-removed", Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a write through the removed node was applied");
    // Added back, it serves again.
    let add = AddLearnerRequest { id: 4, raft_addr: c.raft_addr(4), api_addr: c.api_addr(4) };
    c.cluster(leader).add_learner(add).await.expect("node 4 added back");
    put_retry(&c, 4, "mem/back", "4", "mem-4").await;
    c.cluster(leader).remove(RemoveRequest { id: 4 }).await.expect("node 4 removed again");
    c.stop(4).await;
    // A peer that left is not reported up (or down) for good.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = c.metrics(leader).await;
        let gauge = body.lines().find(|l| l.starts_with("strongbox_peer_reachable{peer=\"4\"}"));
        if gauge.is_none_or(|l| l.ends_with("NaN")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a removed peer's gauge stays: {gauge:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    put_retry(&c, follower, "mem/without-4", "3", "mem-3").await;
}

#[tokio::test]
async fn a_leader_transfer_its_caller_gives_up_on_leaves_heartbeats_on() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, leader, "hb/a", "1", "hb-1").await;
    let down = (1..=3).find(|id| *id != leader).unwrap();
    // Paused, not stopped: the leader has not yet seen an RPC to it fail,
    // so the transfer passes its checks and starts. It can only keep
    // asking a target that never answers; its caller gives up first, and
    // the transfer is dropped half-way.
    c.pause(down);
    let mut req = tonic::Request::new(TransferLeaderRequest { id: down });
    // Shorter than an election timeout: heartbeats off for as long as the
    // transfer runs do not cost the leader its quorum by themselves.
    req.set_timeout(Duration::from_millis(300));
    let e = c.cluster(leader).transfer_leader(req).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    let term = c.status(leader).await.expect("leader status").term;
    // Idle for several election timeouts. Left without heartbeats, the
    // leader would hear from no quorum and fall silent, and the follower
    // still up would stop hearing it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let metrics = c.metrics(leader).await;
    let silenced = metrics
        .lines()
        .find(|l| l.starts_with("strongbox_leader_silenced_total"))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string());
    assert!(silenced.as_deref().is_none_or(|v| v == "0"), "the leader fell silent: {silenced:?}");
    let s = c.status(leader).await.expect("leader status");
    assert_eq!((s.leader_id, s.term), (Some(leader), term), "leadership moved: {s:?}");
    c.resume(down);
    put_retry(&c, leader, "hb/b", "2", "hb-2").await;
}

/// A transfer to a voter the leader cannot reach is refused before
/// anything is disturbed: heartbeats stay on, the leader and its term stay.
#[tokio::test]
async fn a_leader_transfer_to_an_unreachable_voter_is_refused_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, leader, "tr/a", "1", "tr-1").await;
    let down = (1..=3).find(|id| *id != leader).unwrap();
    c.stop(down).await;
    // Several heartbeats: the leader has seen its RPCs to the node fail.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let term = c.status(leader).await.expect("leader status").term;
    let started = std::time::Instant::now();
    let e = c.cluster(leader).transfer_leader(TransferLeaderRequest { id: down }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("unreachable"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused only after {:?}", started.elapsed());
    let s = c.status(leader).await.expect("leader status");
    assert_eq!((s.leader_id, s.term), (Some(leader), term), "leadership moved: {s:?}");
    // Removing the other follower now would need the stopped voter to
    // commit (joint consensus): refused at once, not a cluster-wide stall.
    let other = (1..=3).find(|id| *id != leader && *id != down).unwrap();
    let e = c.cluster(other).remove(RemoveRequest { id: other }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&format!("not answering: [{down}]")), "{e:?}");
    put_retry(&c, leader, "tr/b", "2", "tr-2").await;
}

#[tokio::test]
async fn no_quorum_answers_unavailable_and_loses_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, leader, "q/a", "1", "q-1").await;
    // A majority acknowledged the write; make sure the survivor applied it
    // too, so its local read below has something to show.
    let applied = c.status(leader).await.unwrap().applied_index;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    c.wait_applied(survivor, applied, Duration::from_secs(10)).await;
    for id in (1..=3).filter(|id| *id != survivor) {
        c.kill(id).await;
    }
    let cut_off = std::time::Instant::now();
    // A local read still answers from the survivor's own state, within the
    // node's staleness bound (10 s by default)...
    let got = c.secrets(survivor).get(get_req("q/a", Consistency::Local, 0)).await.unwrap();
    assert_eq!(got.into_inner().value, b"1");
    // ...but not within a tighter bound the request asks for.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tight = get_req("q/a", Consistency::Local, 0);
    tight.options.as_mut().unwrap().max_staleness_ms = 100;
    let e = c.secrets(survivor).get(tight).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("may be stale"), "{e:?}");
    // A lone node cannot elect itself: writes and linearizable reads fail
    // with UNAVAILABLE (not a hang, not a silent success).
    let e = c.secrets(survivor).put(put_req("q/b", "2", "q-2")).await.unwrap_err();
    assert!(matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded), "{e:?}");
    let e = c.secrets(survivor).get(get_req("q/a", Consistency::Linearizable, 0)).await.unwrap_err();
    assert!(matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded), "{e:?}");
    // Past the node's own bound, local reads stop too: a node cut off from
    // the cluster does not keep serving its old state (nor honouring tokens
    // revoked since) for as long as it stays cut off.
    let bound = Duration::from_millis(c.configs[&survivor].1.local_read_staleness_max_ms);
    tokio::time::sleep((bound + Duration::from_millis(500)).saturating_sub(cut_off.elapsed())).await;
    let e = c.secrets(survivor).get(get_req("q/a", Consistency::Local, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("may be stale"), "{e:?}");
    // Health says so too, for load balancers: the node as a whole ("") and
    // each service.
    use tonic_health::pb::health_check_response::ServingStatus;
    let survivor_ch = c.channel(survivor);
    let health = |service: &str| {
        let ch = survivor_ch.clone();
        let service = service.to_string();
        async move {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            h.check(tonic_health::pb::HealthCheckRequest { service }).await.unwrap().into_inner().status
        }
    };
    for service in ["", "strongbox.v1.Secrets", "strongbox.v1.Feed"] {
        assert_eq!(health(service).await, ServingStatus::NotServing as i32, "{service:?} cut off");
    }
    for id in (1..=3).filter(|id| *id != survivor) {
        c.restart(id);
    }
    c.wait_leader(Duration::from_secs(30)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health("").await != ServingStatus::Serving as i32 {
        assert!(tokio::time::Instant::now() < deadline, "health did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The failed write is "maybe applied": it may have landed or not, but a
    // retry with the same id applies it at most once.
    let r = put_retry(&c, survivor, "q/b", "2", "q-2").await;
    assert_eq!(r.version, 1);
}

/// Read-your-writes on a follower: a write through it answers with the
/// revision it reached, and a local read there that asks for that revision
/// sees the write. Without `min_revision` such a read right after the write
/// misses it most of the time (the follower answers when the leader does,
/// before its own apply), so this fails if `min_revision` stops waiting.
#[tokio::test]
async fn a_local_read_at_the_write_revision_sees_a_write_through_a_follower() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    put_retry(&c, follower, "ryw/warm", "w", "ryw-warm").await;
    let mut secrets = c.secrets(follower);
    for i in 0..60 {
        let path = format!("ryw/k{}", i % 3);
        let value = format!("v{i}");
        let w = secrets.put(put_req(&path, &value, &format!("ryw-{i}"))).await.unwrap().into_inner();
        let got = secrets.get(get_req(&path, Consistency::Local, w.revision)).await.unwrap().into_inner();
        assert_eq!(got.value, value.as_bytes(), "write {i} not seen at its own revision");
        assert!(got.revision >= w.revision);
    }
}

/// A follower names the leader's client address on its answers (success
/// and error alike), the leader names no one, and a client routed over all
/// three endpoints that starts at a follower moves to the leader after its
/// first call, and stays there.
#[tokio::test]
async fn followers_name_the_leader_and_a_routed_client_moves_there() {
    use strongbox_proto::leader::LEADER_HEADER;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    put_retry(&c, follower, "hint/k", "v", "hint-k").await;
    let hint_of =
        |md: &tonic::metadata::MetadataMap| md.get(LEADER_HEADER).map(|v| v.to_str().unwrap().to_string());
    let mut named = None;
    for _ in 0..50 {
        let r = c.secrets(follower).get(get_req("hint/k", Consistency::Linearizable, 0)).await.unwrap();
        named = hint_of(r.metadata());
        if named.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(named, Some(c.api_addr(leader)), "a follower names the leader");
    let missing =
        c.secrets(follower).get(get_req("hint/none", Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(hint_of(missing.metadata()), Some(c.api_addr(leader)), "errors name the leader too");
    let r = c.secrets(leader).get(get_req("hint/k", Consistency::Linearizable, 0)).await.unwrap();
    assert_eq!(hint_of(r.metadata()), None, "the leader names no one");

    let mut profile = c.profile.clone();
    profile.endpoints.sort_by_key(|e| *e != c.api_addr(follower));
    let routed = profile.connect().await.unwrap();
    assert_eq!(routed.preferred(), c.api_addr(follower));
    let bearer = strongbox_api::client::Bearer::new(Some(&c.admin_token)).unwrap();
    let mut secrets = strongbox_proto::v1::secrets_client::SecretsClient::new(
        strongbox_api::client::AuthChannel::new(routed.clone(), bearer),
    );
    for i in 0..5 {
        secrets.put(put_req("hint/routed", &format!("v{i}"), &format!("hint-routed-{i}"))).await.unwrap();
        assert_eq!(routed.preferred(), c.api_addr(leader), "after call {i}");
    }
}

/// Every member reports the cluster's state version (a new cluster starts
/// at the newest its first node supports) and what its build supports; the
/// RPC refuses a version beyond that before anything is logged, and the
/// version never goes back.
#[tokio::test]
async fn the_state_version_moves_only_to_what_the_build_supports() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let supported = strongbox_store::command::STATE_VERSION_SUPPORTED;
    let applied = c.status(leader).await.unwrap().applied_index;
    for id in 1..=3u64 {
        let s = c.wait_applied(id, applied, Duration::from_secs(10)).await;
        assert_eq!((s.state_version, s.state_version_supported), (supported, supported), "node {id}");
    }
    let set = |version| SetStateVersionRequest { version, options: None };
    let r = c.cluster(1).set_state_version(set(supported)).await.unwrap().into_inner();
    assert_eq!(r.version, supported);
    let beyond = c.cluster(2).set_state_version(set(supported + 1)).await.unwrap_err();
    assert_eq!(beyond.code(), Code::FailedPrecondition, "{beyond:?}");
    let back = c.cluster(3).set_state_version(set(0)).await.unwrap_err();
    assert_eq!(back.code(), Code::InvalidArgument, "{back:?}");
    let back = c.cluster(3).set_state_version(set(supported - 1)).await.unwrap_err();
    assert_eq!(back.code(), Code::FailedPrecondition, "{back:?}");
    for id in 1..=3u64 {
        assert_eq!(c.status(id).await.unwrap().state_version, supported, "node {id} still serves");
    }
}

/// A leader frozen with a proposal in flight, deposed meanwhile and caught
/// up by an image that covers its old entry, must not hold up the writes
/// sent to it after it wakes (openraft 0.9 never answers such a proposal:
/// its entry is neither applied nor truncated there).
#[tokio::test]
async fn a_deposed_leader_with_a_proposal_in_flight_serves_writes_when_it_wakes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let raft = snapshot_often();
    let c = TestCluster::start(3, raft).await;
    let old = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, old, "s/before", "0", "before").await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();

    // No quorum: the leader appends W1 and waits for an answer.
    for id in &others {
        c.pause(*id);
    }
    let mut w1_client = c.secrets(old);
    let w1 = tokio::spawn(async move { w1_client.put(put_req("s/w1", "1", "w1")).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let w1_index = loop {
        let s = c.status(old).await.expect("the old leader answers status");
        if s.last_log_index > s.committed_index {
            break s.last_log_index;
        }
        assert!(tokio::time::Instant::now() < deadline, "the leader never appended W1: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let w1_proposed = tokio::time::Instant::now();

    // The others elect, write, and purge their logs past W1's index.
    c.pause(old);
    for id in &others {
        c.resume(*id);
    }
    let new = others[0];
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        put_retry(&c, new, &format!("s/k{}", i % 5), &i.to_string(), &format!("after-{i}")).await;
        i += 1;
        let s = c.status(new).await.unwrap();
        if let Some(l) = s.leader_id.filter(|l| *l != old) {
            if c.status(l).await.is_some_and(|ls| ls.purged_index > w1_index) {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never purged past {w1_index}: {s:?}");
    }

    // The old leader wakes, learns of the new term, installs an image.
    c.resume(old);
    let woke = tokio::time::Instant::now();
    let w2 = tokio::time::timeout(Duration::from_secs(30), put_retry(&c, old, "s/w2", "2", "w2"))
        .await
        .expect("a write through the old leader completes");
    let w2_s = woke.elapsed().as_secs_f64();
    // Without the release, W2 queued behind W1 until openraft's answer
    // that never comes, or the 10 s safety net (W2 then took 7.1 s, W1
    // having been proposed 2.8 s before the wake; with it, under a second).
    assert!(
        w2_s < 5.0,
        "W2 took {w2_s:.1} s through the woken leader (W1 proposed {:.1} s before it woke)",
        (woke - w1_proposed).as_secs_f64()
    );
    assert!(w2.revision > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        // UNAVAILABLE while it installs the image.
        if let Some(s) = c.status(old).await.filter(|s| s.applied_index >= w1_index) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "the old leader never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("old caught up: snapshot_index {} w1_index {w1_index}", s.snapshot_index);
    // The release, not the 10 s safety net, let W1's proposal go. Its timer
    // runs while the node is stopped, so this tells only when the old
    // leader slept well under 10 s (about 3 s here, normally).
    let metrics = c.metrics(old).await;
    let released = |reason: &str| {
        metrics.contains(&format!("strongbox_proposals_unanswered_total{{reason=\"{reason}\"}}"))
    };
    if (woke - w1_proposed) < Duration::from_secs(8) {
        assert!(!released("timeout"), "the old leader waited out its proposal's timeout");
    }
    if s.snapshot_index >= w1_index {
        // Caught up by the image: W1 was released when the node learnt it
        // was deposed, unless openraft itself answered it first (its entry
        // truncated by the new leader's log before the image came).
        let truncated = metrics.contains("strongbox_proposals_refused_total{reason=\"forward_to_leader\"}");
        assert!(released("deposed") || truncated, "W1 neither released nor answered on the old leader");
    }
    // W1's outcome was unknown to its caller; whatever it was, it is applied
    // at most once, and a retry with its request id settles it.
    let _ = w1.await.unwrap();
    let r1 = put_retry(&c, new, "s/w1", "1", "w1").await;
    assert_eq!(r1.version, 1, "W1 applied once");
}

/// Must not happen: one node whose clock runs half an hour ahead moving the
/// cluster's time half an hour ahead, so that tokens with minutes to live
/// expire on every node at once. The leader caps the times it proposes at its own
/// clock (plus a second). The fast node is a real node process whose clock
/// is shifted by `STRONGBOX_CLOCK_OFFSET_MS`.
#[tokio::test]
async fn a_node_half_an_hour_ahead_does_not_move_the_clusters_clock() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Under the harness admin token's hour, which the fast node checks
    // against its own clock.
    let ahead_ms: u64 = 1_800_000;
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let fast = (1..=3).find(|id| *id != leader).unwrap();
    c.stop(fast).await;
    // Read by the child at its start; SERIAL keeps other tests from
    // spawning nodes meanwhile.
    std::env::set_var(strongbox_raft::clock::CLOCK_OFFSET_ENV, ahead_ms.to_string());
    c.restart(fast);
    std::env::remove_var(strongbox_raft::clock::CLOCK_OFFSET_ENV);
    c.wait_applied(fast, 0, Duration::from_secs(30)).await;

    let login = |node: u64, ttl_seconds: u64| {
        let mut auth = strongbox_proto::v1::auth_client::AuthClient::new(c.channel(node));
        let password = c.admin_password.clone();
        async move {
            auth.login(LoginRequest { username: "admin".into(), password, ttl_seconds })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Ten minutes to live, by the leader's clock.
    let short = login(leader, 600).await;
    // Writes stamped half an hour ahead by the fast node, forwarded to the
    // leader.
    for i in 0..3 {
        put_retry(&c, fast, &format!("clock/fast-{i}"), "v", &format!("clock-fast-{i}")).await;
    }
    let s = c.status(leader).await.expect("the leader answers");
    assert_eq!(s.leader_id, Some(leader), "the fast node took over; its own clock is then the reference");
    // The ten-minute token still works on the other nodes (without the cap
    // the cluster's clock is half an hour ahead and it is expired; the fast
    // node refuses it by its own clock, as a node with a wrong clock does).
    for node in (1..=3).filter(|n| *n != fast) {
        secrets_client::SecretsClient::new(c.authed(node, Some(&short.access_token)))
            .put(put_req(&format!("clock/short-{node}"), "v", &format!("clock-short-{node}")))
            .await
            .unwrap_or_else(|e| panic!("a 10-minute token was refused on node {node}: {e}"));
    }
    // A token issued through the fast node lives as long as asked from the
    // capped time, not an extra half hour.
    let through_fast = login(fast, 600).await;
    assert!(
        through_fast.expires_ms <= now_ms() + 600_000 + 5_000,
        "a token issued through the fast node expires at {} ms, {} s from now",
        through_fast.expires_ms,
        through_fast.expires_ms.saturating_sub(now_ms()) / 1000
    );
}

/// Anyone can lock a user out by guessing; the break-glass path lifts it
/// for whoever holds a member's certificate (mutual TLS on the peer port),
/// and for no one else.
#[tokio::test]
async fn a_locked_out_user_is_unlocked_through_the_peer_port_with_a_member_certificate() {
    use strongbox_api::tls::DevPki;
    use strongbox_proto::v1::auth_client::AuthClient;
    use strongbox_proto::v1::recovery_client::RecoveryClient;
    use strongbox_proto::v1::users_client::UsersClient;
    use tonic::transport::{Certificate, Identity};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let password = "correct horse battery";
    let create = CreateUserRequest {
        options: None,
        username: "erin".into(),
        password: password.into(),
        roles: vec![],
    };
    UsersClient::new(c.admin(leader)).create(create).await.unwrap();
    let login = |pw: &str| LoginRequest { username: "erin".into(), password: pw.into(), ttl_seconds: 0 };
    let mut auth = AuthClient::new(c.authed(leader, None));
    for i in 0..5 {
        auth.login(login(&format!("wrong guess {i}"))).await.unwrap_err();
    }
    assert_eq!(auth.login(login(password)).await.unwrap_err().code(), Code::Unauthenticated, "locked");

    let ca = Certificate::from_pem(std::fs::read(c.dir.path().join("ca.pem")).unwrap());
    let unlock = || RecoveryUnlockUserRequest { username: "erin".into() };
    let rogue = DevPki::new("rogue CA").unwrap().node_cert("rogue", &["127.0.0.1".parse().unwrap()]).unwrap();
    let rogue_id = Identity::from_pem(rogue.cert_pem, rogue.key_pem.as_bytes());
    if let Ok(ch) = peer_channel(&c.raft_addr(2), ca.clone(), Some(rogue_id)).await {
        assert!(RecoveryClient::new(ch).unlock_user(unlock()).await.is_err(), "a foreign certificate");
    }
    // Not on the client port, whatever the token.
    let e = RecoveryClient::new(c.admin(leader)).unlock_user(unlock()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert_eq!(auth.login(login(password)).await.unwrap_err().code(), Code::Unauthenticated, "still locked");

    let ch = peer_channel(&c.raft_addr(2), ca, Some(node_identity(&c, 2))).await.unwrap();
    RecoveryClient::new(ch).unlock_user(unlock()).await.unwrap();
    auth.login(login(password)).await.expect("unlocked");
}

/// A leader stopped cleanly hands leadership over before it exits, as
/// etcd's does: the survivors know a new leader the moment it is gone, not
/// an election timeout later, and a rolling restart costs writes no
/// election. A follower that is itself stopping is not chosen.
#[tokio::test]
async fn a_stopping_leader_hands_leadership_over_first() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    put_retry(&c, leader, "roll/a", "1", "roll-1").await;
    c.stop(leader).await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &survivors {
        // Right after the exit: without a hand-off each survivor would
        // still name the old leader for 600 ms or more.
        let s = c.status(*id).await.expect("a survivor answers");
        let now = s.leader_id.expect("a survivor knows a leader at once");
        assert_ne!(
            now,
            leader,
            "node {id} still names the stopped leader {leader}; its log:\n{}",
            c.log(leader)
        );
        assert!(survivors.contains(&now));
    }
    assert!(
        c.log(leader).contains("handed leadership over before stopping"),
        "the stopped leader's log: {}",
        c.log(leader)
    );
    let r = put_retry(&c, survivors[0], "roll/b", "2", "roll-2").await;
    assert_eq!(r.version, 1);

    // The new leader stops too: leadership moves on again, to the
    // restarted node or the third.
    c.restart(leader);
    let new_leader = c.wait_leader(Duration::from_secs(10)).await;
    c.wait_applied(leader, c.status(new_leader).await.unwrap().applied_index, Duration::from_secs(20)).await;
    c.stop(new_leader).await;
    let s = c.status(leader).await.expect("the restarted node answers");
    assert!(s.leader_id.is_some_and(|l| l != new_leader), "leadership moved on again at once: {s:?}");
    assert!(c.log(new_leader).contains("handed leadership over before stopping"));
}
