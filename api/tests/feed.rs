//! The change feed on a real three-node cluster: under concurrent writes and
//! a leader kill, every acknowledged write reaches every subscriber exactly
//! once and in revision order (subscribers on every node, one reconnecting
//! midway); secret values never appear; a stalled consumer is cut off with
//! RESOURCE_EXHAUSTED naming where to resume; bad requests are refused.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use strongbox_api::client::{AuthChannel, Bearer};
use strongbox_proto::v1::feed_client::FeedClient;
use strongbox_proto::v1::{WatchRequest, WatchResponse};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Code, Streaming};

const WRITERS: usize = 4;
const PUTS_PER_WRITER: usize = 30;
const VALUE_MARKER: &str = "feed-secret-value-marker";

fn watch_req(start: u64) -> WatchRequest {
    WatchRequest {
        start_revision: start,
        kinds: vec!["secret.*".into()],
        prefix: "feed/".into(),
        ..Default::default()
    }
}

async fn open(ch: AuthChannel, start: u64) -> Streaming<WatchResponse> {
    FeedClient::new(ch).watch(watch_req(start)).await.expect("watch").into_inner()
}

/// Reads until revision `upto` has been seen; returns (revision, path, kind).
async fn read_until(stream: &mut Streaming<WatchResponse>, upto: u64, out: &mut Vec<(u64, String, String)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.last().is_none_or(|(r, _, _)| *r < upto) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .expect("feed caught up within 60 s")
            .expect("stream ok")
            .expect("stream open");
        assert!(!format!("{msg:?}").contains(VALUE_MARKER), "a secret value in the feed: {msg:?}");
        if msg.progress {
            if msg.revision >= upto {
                return;
            }
            continue;
        }
        for e in msg.events {
            out.push((msg.revision, e.entity, e.kind));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_reaches_every_subscriber_once_in_order() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;

    // Subscribers on every node from revision 1, and one that will reconnect.
    let mut streams: Vec<(u64, Streaming<WatchResponse>)> = Vec::new();
    for id in 1..=3 {
        streams.push((id, open(c.admin(id), 1).await));
    }
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut reconnecting = open(c.admin(follower), 1).await;

    // Concurrent writers through every node; the leader is killed midway.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let ch: Vec<_> = (1..=3).map(|id| (id, c.admin(id))).collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for j in 0..PUTS_PER_WRITER {
                let path = format!("feed/w{w}/k{j}");
                let req_id = format!("feed-{w}-{j}");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let mut n = w + j;
                loop {
                    let (_, chan) = &ch[n % 3];
                    let mut s = strongbox_proto::v1::secrets_client::SecretsClient::new(chan.clone());
                    match s.put(put_req(&path, VALUE_MARKER, &req_id)).await {
                        Ok(r) => {
                            out.push((path.clone(), r.into_inner().revision));
                            break;
                        }
                        Err(e) => {
                            assert!(tokio::time::Instant::now() < deadline, "{path}: {e:?}");
                            n += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill(leader).await;

    // The reconnecting subscriber reads a little, drops, resumes from the
    // last revision it saw + 1.
    let mut seen_reconnect = Vec::new();
    read_until(&mut reconnecting, 1, &mut seen_reconnect).await;
    let resume = seen_reconnect.last().map_or(1, |(r, _, _)| r + 1);
    drop(reconnecting);
    let mut reconnecting = open(c.admin(follower), resume).await;

    for t in tasks {
        for (path, revision) in t.await.unwrap() {
            acked.insert(path, revision);
        }
    }
    c.restart(leader);
    let last = *acked.values().max().unwrap();
    assert_eq!(acked.len(), WRITERS * PUTS_PER_WRITER);

    let check = |who: String, events: Vec<(u64, String, String)>| {
        let revisions: Vec<u64> = events.iter().map(|(r, _, _)| *r).collect();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{who}: revisions not strictly increasing");
        let got: BTreeMap<String, u64> = events
            .iter()
            .filter(|(r, _, _)| *r <= last)
            .map(|(r, path, kind)| {
                assert_eq!(kind, "secret.created", "{who}: {path}");
                (path.clone(), *r)
            })
            .collect();
        assert_eq!(
            got.len(),
            events.iter().filter(|(r, _, _)| *r <= last).count(),
            "{who}: a duplicate path"
        );
        assert_eq!(got, acked, "{who}: acknowledged writes and delivered events differ");
    };
    for (id, mut s) in streams.into_iter().filter(|(id, _)| *id != leader) {
        let mut events = Vec::new();
        read_until(&mut s, last, &mut events).await;
        check(format!("subscriber on node {id}"), events);
    }
    let mut rest = Vec::new();
    read_until(&mut reconnecting, last, &mut rest).await;
    seen_reconnect.extend(rest);
    check("the reconnecting subscriber".into(), seen_reconnect);

    // The killed node, back, serves the same history from its own state.
    let mut restarted = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match FeedClient::new(c.admin(leader)).watch(watch_req(1)).await {
            Ok(s) => break s.into_inner(),
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "restarted node: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    read_until(&mut s, last, &mut restarted).await;
    check(format!("restarted node {leader}"), restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_consumer_is_cut_off_and_bad_requests_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;

    let mut feed = FeedClient::new(c.admin(leader));
    let bad = WatchRequest { kinds: vec!["Secret Updated!".into()], ..Default::default() };
    assert_eq!(feed.watch(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let bad = WatchRequest { progress_interval_ms: 5, ..Default::default() };
    assert_eq!(feed.watch(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let many = WatchRequest { kinds: vec!["secret.updated".into(); 33], ..Default::default() };
    let e = feed.watch(many).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("kinds: at most 32"), "{}", e.message());
    let no_token = FeedClient::new(c.authed(leader, None)).watch(WatchRequest::default()).await;
    assert_eq!(no_token.unwrap_err().code(), Code::Unauthenticated);

    // A consumer that opens a stream and never reads, while thousands of
    // changes land (more than its buffer and the transport's windows hold).
    // Its connection has small HTTP/2 windows (hyper's default is 2 MiB per
    // stream), so the server feels the stall after a few hundred events.
    let ca = std::fs::read(c.profile.ca_cert.as_ref().unwrap()).unwrap();
    let endpoint = Endpoint::from_shared(format!("https://{}", c.api_addr(leader)))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024));
    let small = AuthChannel::new(
        strongbox_proto::leader::LeaderRouted::new(
            vec![(c.api_addr(leader), endpoint.connect().await.unwrap())],
            0,
        ),
        Bearer::new(Some(&c.admin_token)).unwrap(),
    );
    let mut stalled = open(small, 0).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let ch = c.admin(leader);
        tasks.push(tokio::spawn(async move {
            let mut s = strongbox_proto::v1::secrets_client::SecretsClient::new(ch);
            for j in 0..150 {
                let value = "x".repeat(512);
                s.put(put_req(&format!("feed/stall/{w}/{j}"), &value, &format!("stall-{w}-{j}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Writers were never slowed by it; now it reads what was buffered and
    // then learns it was cut off, and where to resume.
    let (mut last, mut received) = (0, 0);
    let status = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stalled.message()).await;
        let next =
            next.unwrap_or_else(|_| panic!("no answer after {received} messages (last revision {last})"));
        match next {
            Ok(Some(m)) => {
                (last, received) = (m.revision, received + 1);
                assert!(received < 5_000, "never cut off");
            }
            Ok(None) => panic!("stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?} after {received} messages, last {last}");
    assert!(
        status.message().contains(&format!("reconnect with start_revision {}", last + 1)),
        "{status:?} client last {last} after {received}"
    );
    let resume = status.metadata().get("strongbox-resume-revision").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(resume, Some((last + 1).to_string()), "{status:?}");
}

/// The example consumer (`strongbox feed-demo`): its read model, fed only by
/// the change feed, equals a linearizable read of the source once caught up,
/// and a second run resumes from its checkpoint instead of starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_consumer_matches_a_linearizable_read_and_resumes() {
    use strongbox_api::feed_demo::{follow, BalanceView, UserView};
    use strongbox_proto::v1::ledger_client::LedgerClient;
    use strongbox_proto::v1::roles_client::RolesClient;
    use strongbox_proto::v1::users_client::UsersClient;
    use strongbox_proto::v1::*;

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let other = (1..=3).find(|id| *id != leader).unwrap();
    let revision = |s: StatusResponse| s.revision;
    let mut roles = RolesClient::new(c.admin(leader));
    let mut users = UsersClient::new(c.admin(leader));
    let perm =
        Permission { effect: "allow".into(), action: "read".into(), resource: "secrets:demo/*".into() };
    roles
        .put(PutRoleRequest { options: None, name: "reader".into(), permissions: vec![perm] })
        .await
        .unwrap();
    for (name, roles) in [("alice", vec!["reader"]), ("bob", vec![]), ("carol", vec!["reader"])] {
        let req = CreateUserRequest {
            options: None,
            username: name.into(),
            password: "correct horse battery staple".into(),
            roles: roles.into_iter().map(String::from).collect(),
        };
        users.create(req).await.unwrap();
    }
    put_retry(&c, leader, "demo/a", "1", "demo-a1").await;
    put_retry(&c, leader, "demo/b", "1", "demo-b1").await;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("model.json");
    let first_target = revision(c.status(leader).await.unwrap());
    let first = follow(c.admin(leader), &state, Some(first_target)).await.unwrap();
    assert_eq!(first.revision, first_target);

    // More changes while the consumer is down.
    users.disable(UserRequest { options: None, username: "carol".into() }).await.unwrap();
    roles
        .assign(AssignRoleRequest { options: None, principal: "user:bob".into(), role: "reader".into() })
        .await
        .unwrap();
    users.delete(UserRequest { options: None, username: "alice".into() }).await.unwrap();
    put_retry(&c, leader, "demo/a", "2", "demo-a2").await;
    let mut secrets = c.secrets(leader);
    secrets.delete(DeleteSecretRequest { options: None, path: "demo/b".into() }).await.unwrap();
    put_retry(&c, leader, "demo/c", "1", "demo-c1").await;
    // By number: an older version of demo/a (still readable as the latest),
    // and demo/c's only one (gone as the latest too).
    for (path, version) in [("demo/a", 1), ("demo/c", 1)] {
        let del = SecretVersionsRequest { options: None, path: path.into(), versions: vec![version] };
        assert_eq!(secrets.delete_versions(del).await.unwrap().into_inner().versions, vec![version]);
    }
    // Ledger moves whose applied amount differs from the requested one: a
    // balancing debit clamped to the balance, a partial post.
    let mut ledger = LedgerClient::new(c.admin(leader));
    let u = |v: u128| Some(U128 { lo: v as u64, hi: 0 });
    let account =
        |id: u128, flags: u32| Account { id: u(id), ledger: 7, code: 1, flags, ..Default::default() };
    let accounts = vec![account(1, 0), account(2, 0), account(3, 2 /* debits ≤ credits */)];
    ledger.create_accounts(CreateAccountsRequest { accounts, options: None }).await.unwrap();
    let t = |id: u128, dr: u128, cr: u128, amount: u128, flags: u32| Transfer {
        id: u(id),
        debit_account_id: u(dr),
        credit_account_id: u(cr),
        amount: u(amount),
        ledger: 7,
        code: 1,
        flags,
        ..Default::default()
    };
    let mut post = t(14, 0, 0, 20, 4 /* post */);
    post.pending_id = u(13);
    (post.debit_account_id, post.credit_account_id, post.ledger) = (None, None, 0);
    let mut expiring = t(15, 1, 2, 5, 2 /* pending */);
    expiring.timeout = 1;
    let transfers = vec![
        t(11, 1, 3, 10, 0),
        t(12, 3, 2, 100, 16 /* balancing debit: moves 10 */),
        t(13, 1, 2, 50, 2 /* pending */),
        post,
        expiring,
        t(16, 2, 1, 3, 2 /* pending, stays open */),
    ];
    let r = ledger.create_transfers(CreateTransfersRequest { transfers, options: None }).await.unwrap();
    assert_eq!(r.into_inner().results, vec![0; 6]);
    // Transfer 15 expires after 1 s: the next ledger command sweeps it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r =
        ledger.create_transfers(CreateTransfersRequest { transfers: vec![t(17, 2, 1, 1, 0)], options: None });
    assert_eq!(r.await.unwrap().into_inner().results, vec![0]);
    // A full batch with 39-digit ids: its revision's events pass 1 MiB and
    // come in parts, which the consumer must put together.
    let big: Vec<Transfer> = (0..8_189u64)
        .map(|i| Transfer { id: Some(U128 { lo: i, hi: u64::MAX }), ..t(0, 1, 2, 1, 0) })
        .collect();
    let r = ledger.create_transfers(CreateTransfersRequest { transfers: big, options: None }).await.unwrap();
    assert!(r.into_inner().results.iter().all(|r| *r == 0));
    let big_revision = revision(c.status(leader).await.unwrap());
    let mut parts = FeedClient::new(c.admin(other))
        .watch(WatchRequest {
            start_revision: big_revision,
            kinds: vec!["transfer.*".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut events, mut messages) = (0, 0);
    loop {
        let m =
            tokio::time::timeout(Duration::from_secs(20), parts.message()).await.unwrap().unwrap().unwrap();
        assert!(!m.progress && m.revision == big_revision, "{}", m.revision);
        assert!(prost::Message::encoded_len(&m) <= strongbox_api::services::feed::MESSAGE_BYTES_MAX);
        assert!(m.events.len() <= 1024, "{} events in one message", m.events.len());
        (events, messages) = (events + m.events.len(), messages + 1);
        if !m.more {
            break;
        }
    }
    assert_eq!(events, 8_189, "every event of the revision, once");
    assert!(messages >= 2, "split: {messages} message(s)");

    // The second run, through another node, resumes from its checkpoint.
    let target = revision(c.status(leader).await.unwrap());
    let model = follow(c.admin(other), &state, Some(target)).await.unwrap();
    assert_eq!(model.revision, target);
    assert!(
        model.messages_applied - first.messages_applied <= target - first_target,
        "the second run re-applied what the first had checkpointed"
    );

    // The read model equals a linearizable read of the source.
    let listed = users.list(ListUsersRequest { options: None, page: None }).await.unwrap().into_inner();
    let expected: std::collections::BTreeMap<String, UserView> = listed
        .users
        .into_iter()
        .map(|u| (u.username, UserView { enabled: u.enabled, roles: u.roles.into_iter().collect() }))
        .collect();
    assert_eq!(model.users, expected);
    let mut expected_secrets = std::collections::BTreeMap::new();
    for path in ["demo/a", "demo/b", "demo/c"] {
        if let Ok(r) = secrets.get(get_req(path, Consistency::Linearizable, 0)).await {
            expected_secrets.insert(path.to_string(), r.into_inner().version);
        }
    }
    assert_eq!(model.secrets, expected_secrets);
    assert_eq!(model.secrets.get("demo/a"), Some(&2));
    let ids = [1u128, 2, 3].map(|i| U128 { lo: i as u64, hi: 0 }).to_vec();
    let looked = ledger.lookup_accounts(LookupAccountsRequest { ids, options: None }).await.unwrap();
    let amount = |v: &Option<U128>| v.as_ref().map_or(0, |v| (v.hi as u128) << 64 | v.lo as u128);
    let expected: std::collections::BTreeMap<String, BalanceView> = looked
        .into_inner()
        .accounts
        .iter()
        .map(|a| {
            let view = BalanceView {
                ledger: a.ledger,
                debits_pending: amount(&a.debits_pending),
                debits_posted: amount(&a.debits_posted),
                credits_pending: amount(&a.credits_pending),
                credits_posted: amount(&a.credits_posted),
            };
            (amount(&a.id).to_string(), view)
        })
        .collect();
    assert_eq!(model.accounts, expected);
    assert_eq!((model.accounts["2"].credits_posted, model.accounts["3"].debits_posted), (30 + 8_189, 10));
    assert_eq!((model.accounts["1"].debits_pending, model.accounts["2"].debits_pending), (0, 3));
    assert_eq!(model.pending.keys().collect::<Vec<_>>(), ["16"], "posted and expired reservations released");
    assert!(!model.users.contains_key("alice") && !model.users["carol"].enabled);
}

/// The watch streams a node counts (`strongbox_watch_streams`).
async fn watch_streams(c: &TestCluster, id: u64) -> f64 {
    let m = c.metrics(id).await;
    m.lines()
        .find(|l| l.starts_with("strongbox_watch_streams "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_watch_its_client_dropped_stops_working_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    for i in 0..20 {
        put_retry(&c, leader, &format!("orphan/{i}"), "v", &format!("orphan-{i}")).await;
    }
    // Matches nothing, from the oldest revision, with the longest progress
    // interval: its producer sends nothing for a minute, so it learns that
    // its client left only by watching for it.
    let req = WatchRequest {
        start_revision: 1,
        kinds: vec!["client.deleted".into()], // none happen here
        progress_interval_ms: 60_000,
        ..Default::default()
    };
    let stream = FeedClient::new(c.admin(leader)).watch(req.clone()).await.expect("watch").into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while watch_streams(&c, leader).await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the watch was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One principal holds at most 128 streams on a node; the next is refused
    // and names why, and closing one makes room again.
    let mut more = Vec::new();
    for _ in 1..128 {
        more.push(FeedClient::new(c.admin(leader)).watch(req.clone()).await.expect("watch").into_inner());
    }
    let e = FeedClient::new(c.admin(leader)).watch(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("user:admin already has 128 watch streams"), "{}", e.message());
    more.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match FeedClient::new(c.admin(leader)).watch(req.clone()).await {
            Ok(s) => break more.push(s.into_inner()),
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no room after closing one: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(more);
    drop(stream);
    // The producer ends within a moment, not at its next progress message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while watch_streams(&c, leader).await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped watch still counted (its producer runs on) after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a consumer coming from etcd's Watch relies on, and what must not
/// happen: a kind that never occurs, or a start past the end (a checkpoint
/// from before a restore), is refused rather than waited on forever; a
/// stream from "now" learns its start at once; a watcher whose rights
/// change is told (ABORTED, where to resume) instead of skipping silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kinds_start_and_rights_are_checked_not_silently_skipped() {
    use strongbox_proto::v1::auth_client::AuthClient;
    use strongbox_proto::v1::roles_client::RolesClient;
    use strongbox_proto::v1::users_client::UsersClient;
    use strongbox_proto::v1::{CreateUserRequest, LoginRequest, Permission, PutRoleRequest};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let mut feed = FeedClient::new(c.admin(follower));

    for bad in ["*.created", "secret.update", "nosuch.*", "secret.*.x", "*"] {
        let req = WatchRequest { kinds: vec![bad.into()], ..Default::default() };
        let e = feed.watch(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("families: secret"), "{bad}: {}", e.message());
    }
    let fine = WatchRequest {
        kinds: vec!["secret.*".into(), "transfer.posted".into(), "put_secret".into()],
        ..Default::default()
    };
    feed.watch(fine).await.expect("known kinds, a family and a command's name");

    // Past the end: refused, on a follower too, naming the latest revision.
    let latest = c.status(leader).await.unwrap().revision;
    let e = feed.watch(WatchRequest { start_revision: latest + 50, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let named: u64 =
        e.metadata().get("strongbox-latest-revision").unwrap().to_str().unwrap().parse().unwrap();
    assert!(named >= latest && named < latest + 50, "{named} vs {latest}");
    // The next revision is not past the end: it waits for it.
    feed.watch(WatchRequest { start_revision: named + 1, ..Default::default() })
        .await
        .expect("next revision");

    // From now: a progress message first, long before the 60 s interval.
    let req = WatchRequest { progress_interval_ms: 60_000, ..Default::default() };
    let mut now = feed.watch(req).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), now.message()).await.expect("at once");
    let first = first.unwrap().unwrap();
    assert!(first.progress && first.revision >= latest, "{first:?}");

    // A reader of secrets under feed/ watches; its role is narrowed.
    let perm = |r: &str| Permission { effect: "allow".into(), action: "read".into(), resource: r.into() };
    let mut roles = RolesClient::new(c.admin(leader));
    let role = |rules: Vec<Permission>| PutRoleRequest {
        options: None,
        name: "feed-reader".into(),
        permissions: rules,
    };
    roles.put(role(vec![perm("secrets:feed/*")])).await.unwrap();
    UsersClient::new(c.admin(leader))
        .create(CreateUserRequest {
            options: None,
            username: "feeder".into(),
            password: "correct horse battery".into(),
            roles: vec!["feed-reader".into()],
        })
        .await
        .unwrap();
    let token = AuthClient::new(c.channel(follower))
        .login(LoginRequest {
            username: "feeder".into(),
            password: "correct horse battery".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut reader = FeedClient::new(c.authed(follower, Some(&token)))
        .watch(WatchRequest { prefix: "/feed/".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut secrets = c.secrets(leader);
    secrets.put(put_req("feed/rights/1", "v", "rights-1")).await.unwrap();
    let mut last;
    loop {
        let m =
            tokio::time::timeout(Duration::from_secs(10), reader.message()).await.unwrap().unwrap().unwrap();
        last = m.revision;
        if !m.progress {
            assert_eq!(m.events[0].entity, "feed/rights/1", "a leading / in the prefix is ignored");
            break;
        }
    }
    roles.put(role(vec![perm("secrets:feed/rights/*")])).await.unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.message())
            .await
            .expect("ended within 10 s")
        {
            Ok(Some(m)) => {
                assert!(m.progress, "no event after the change: {m:?}");
                last = m.revision;
            }
            Ok(None) => panic!("ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let resume: u64 =
        status.metadata().get("strongbox-resume-revision").unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(resume, last + 1, "{status:?}");
}
