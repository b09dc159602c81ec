//! Authentication and authorisation on a real three-node cluster: the RBAC
//! matrix, linearizable revocation across nodes, lockout, expiry, service
//! clients, and that no secret reaches a log.

mod common;

use std::time::Duration;

use common::*;
use strongbox_api::auth::{Need, Rpc};
use strongbox_api::client::AuthChannel;
use strongbox_proto::v1::audit_client::AuditClient;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::clients_client::ClientsClient;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::feed_client::FeedClient;
use strongbox_proto::v1::keys_client::KeysClient;
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::roles_client::RolesClient;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::users_client::UsersClient;
use strongbox_proto::v1::*;
use tonic::{Code, Status};

const PASSWORD: &str = "correct horse battery";
/// The ledger the matrix's ledger RPCs work on.
const MATRIX_LEDGER: u32 = 7;

/// What a request is about, for the permission template of its RPC.
fn subject(rpc: Rpc) -> String {
    if rpc.method().starts_with("Ledger/") {
        MATRIX_LEDGER.to_string()
    } else {
        "team-a/matrix".into()
    }
}

fn wo() -> Option<WriteOptions> {
    None
}

async fn create_user(c: &TestCluster, name: &str, roles: &[&str]) {
    UsersClient::new(c.admin(1))
        .create(CreateUserRequest {
            options: wo(),
            username: name.into(),
            password: PASSWORD.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
        .await
        .unwrap_or_else(|s| panic!("create user {name}: {s:?}"));
}

async fn put_role(c: &TestCluster, name: &str, perms: &[(&str, &str, &str)]) {
    let permissions = perms
        .iter()
        .map(|(e, a, r)| Permission { effect: e.to_string(), action: a.to_string(), resource: r.to_string() })
        .collect();
    RolesClient::new(c.admin(1))
        .put(PutRoleRequest { options: wo(), name: name.into(), permissions })
        .await
        .unwrap_or_else(|s| panic!("put role {name}: {s:?}"));
}

async fn login(c: &TestCluster, node: u64, user: &str, password: &str) -> Result<TokenResponse, Status> {
    AuthClient::new(c.channel(node))
        .login(LoginRequest { username: user.into(), password: password.into(), ttl_seconds: 0 })
        .await
        .map(|r| r.into_inner())
}

async fn get(c: &TestCluster, node: u64, token: &str, path: &str) -> Result<GetSecretResponse, Status> {
    SecretsClient::new(c.authed(node, Some(token)))
        .get(get_req(path, Consistency::Linearizable, 0))
        .await
        .map(|r| r.into_inner())
}

/// Calls one RPC with harmless arguments; only the status matters.
async fn call(ch: AuthChannel, rpc: Rpc, tag: &str) -> Result<(), Status> {
    let path = "team-a/matrix".to_string();
    let read = || None::<ReadOptions>;
    macro_rules! go {
        ($e:expr) => {
            $e.await.map(|_| ())
        };
    }
    let mut secrets = SecretsClient::new(ch.clone());
    let mut auth = AuthClient::new(ch.clone());
    let mut users = UsersClient::new(ch.clone());
    let mut clients = ClientsClient::new(ch.clone());
    let mut roles = RolesClient::new(ch.clone());
    let mut keys = KeysClient::new(ch.clone());
    let mut ledger = LedgerClient::new(ch.clone());
    let cluster_ch = ch.clone();
    let mut cluster = ClusterClient::new(ch);
    let u = |v: u128| Some(U128 { lo: v as u64, hi: (v >> 64) as u64 });
    let account = |id| Account { id: u(id), ledger: MATRIX_LEDGER, code: 1, ..Default::default() };
    let filter = AccountFilterRequest { account_id: u(1), ..Default::default() };
    let user = |u: &str| UserRequest { options: wo(), username: u.into() };
    let client = |id: &str| ClientRequest { options: wo(), client_id: id.into() };
    match rpc {
        Rpc::SecretsPut => go!(secrets.put(put_req(&path, "v", ""))),
        Rpc::SecretsGet => go!(secrets.get(get_req(&path, Consistency::Linearizable, 0))),
        Rpc::SecretsDelete => go!(secrets.delete(DeleteSecretRequest { options: wo(), path })),
        Rpc::SecretsUndelete => go!(secrets.undelete(UndeleteSecretRequest { options: wo(), path })),
        Rpc::SecretsDeleteVersions => {
            go!(secrets.delete_versions(SecretVersionsRequest { options: wo(), path, versions: vec![1] }))
        }
        Rpc::SecretsUndeleteVersions => {
            go!(secrets.undelete_versions(SecretVersionsRequest { options: wo(), path, versions: vec![1] }))
        }
        Rpc::SecretsDestroy => {
            go!(secrets.destroy(DestroySecretRequest { options: wo(), path, versions: vec![1] }))
        }
        Rpc::SecretsList => {
            go!(secrets.list(ListSecretsRequest { options: read(), folder: path, page: None }))
        }
        Rpc::SecretsMetadata => go!(secrets.metadata(SecretMetadataRequest { options: read(), path })),
        Rpc::SecretsPurge => go!(secrets.purge(PurgeSecretRequest { options: wo(), path })),
        Rpc::SecretsUpdateMetadata => go!(secrets.update_metadata(UpdateSecretMetadataRequest {
            options: wo(),
            path,
            cas_required: Some(false),
            ..Default::default()
        })),
        Rpc::AuthLogin => {
            go!(auth.login(LoginRequest { username: "ghost".into(), password: "x".into(), ttl_seconds: 0 }))
        }
        Rpc::AuthClientToken => go!(auth.client_token(ClientTokenRequest {
            grant_type: String::new(),
            client_id: "ghost".into(),
            client_secret: "x".into(),
            scopes: vec![],
            ttl_seconds: 0
        })),
        Rpc::AuthLogout => go!(auth.logout(LogoutRequest { options: wo() })),
        Rpc::AuthRevoke => go!(auth.revoke(RevokeRequest { options: wo(), token: unknown_token() })),
        Rpc::AuthRenew => go!(auth.renew(RenewRequest { options: wo(), ttl_seconds: 0 })),
        Rpc::AuthWhoAmI => go!(auth.who_am_i(WhoAmIRequest { options: read() })),
        Rpc::AuthIntrospect => {
            go!(auth.introspect(IntrospectRequest { options: read(), token: unknown_token() }))
        }
        Rpc::AuthChangePassword => go!(auth.change_password(ChangePasswordRequest {
            options: wo(),
            old_password: PASSWORD.into(),
            new_password: PASSWORD.into()
        })),
        Rpc::UsersCreate => go!(users.create(CreateUserRequest {
            options: wo(),
            username: format!("new-{tag}"),
            password: PASSWORD.into(),
            roles: vec![]
        })),
        Rpc::UsersGet => go!(users.get(GetUserRequest { options: read(), username: "admin".into() })),
        Rpc::UsersList => go!(users.list(ListUsersRequest { options: read(), page: None })),
        Rpc::UsersDelete => go!(users.delete(user("ghost"))),
        Rpc::UsersDisable => go!(users.disable(user("ghost"))),
        Rpc::UsersEnable => go!(users.enable(user("ghost"))),
        Rpc::UsersSetPassword => go!(users.set_password(SetPasswordRequest {
            options: wo(),
            username: "ghost".into(),
            password: PASSWORD.into()
        })),
        Rpc::UsersUnlock => go!(users.unlock(user("ghost"))),
        Rpc::ClientsCreate => go!(clients.create(CreateClientRequest {
            options: wo(),
            client_id: format!("c-{tag}"),
            roles: vec![]
        })),
        Rpc::ClientsGet => go!(clients.get(GetClientRequest { options: read(), client_id: "ghost".into() })),
        Rpc::ClientsList => go!(clients.list(ListClientsRequest { options: read(), page: None })),
        Rpc::ClientsDelete => go!(clients.delete(client("ghost"))),
        Rpc::ClientsDisable => go!(clients.disable(client("ghost"))),
        Rpc::ClientsEnable => go!(clients.enable(client("ghost"))),
        Rpc::ClientsRotateSecret => go!(clients.rotate_secret(client("ghost"))),
        Rpc::RolesPut => {
            go!(roles.put(PutRoleRequest { options: wo(), name: format!("r-{tag}"), permissions: vec![] }))
        }
        Rpc::RolesGet => go!(roles.get(GetRoleRequest { options: read(), name: "admin".into() })),
        Rpc::RolesList => go!(roles.list(ListRolesRequest { options: read(), page: None })),
        Rpc::RolesDelete => go!(roles.delete(DeleteRoleRequest { options: wo(), name: "ghost".into() })),
        Rpc::RolesAssign => go!(roles.assign(AssignRoleRequest {
            options: wo(),
            principal: "user:ghost".into(),
            role: "ghost".into()
        })),
        Rpc::RolesUnassign => go!(roles.unassign(AssignRoleRequest {
            options: wo(),
            principal: "user:ghost".into(),
            role: "ghost".into()
        })),
        Rpc::KeysStatus => go!(keys.status(KeysStatusRequest {})),
        Rpc::KeysRotateDataKey => go!(keys.rotate_data_key(RotateDataKeyRequest {})),
        // No "<master_key_file>.new" exists: refused after the permission check.
        Rpc::KeysRotateMasterKey => go!(keys.rotate_master_key(RotateMasterKeyRequest {})),
        // Accounts 1 and 2 and transfer 1 exist once the holders of the
        // create permissions have run, so the queries have a ledger to check.
        Rpc::LedgerCreateAccounts => go!(ledger.create_accounts(CreateAccountsRequest {
            accounts: vec![account(1), account(2)],
            options: wo()
        })),
        Rpc::LedgerCreateTransfers => go!(ledger.create_transfers(CreateTransfersRequest {
            transfers: vec![Transfer {
                id: u(1),
                debit_account_id: u(1),
                credit_account_id: u(2),
                amount: u(5),
                ledger: MATRIX_LEDGER,
                code: 1,
                ..Default::default()
            }],
            options: wo()
        })),
        Rpc::LedgerLookupAccounts => {
            go!(ledger.lookup_accounts(LookupAccountsRequest { ids: vec![u(1).unwrap()], options: read() }))
        }
        Rpc::LedgerLookupTransfers => {
            go!(ledger.lookup_transfers(LookupTransfersRequest { ids: vec![u(1).unwrap()], options: read() }))
        }
        Rpc::LedgerGetAccountTransfers => go!(ledger.get_account_transfers(filter.clone())),
        Rpc::LedgerGetAccountBalances => go!(ledger.get_account_balances(filter)),
        Rpc::AuditQuery => go!(AuditClient::new(cluster_ch.clone()).query(AuditQueryRequest::default())),
        Rpc::AuditVerify => go!(AuditClient::new(cluster_ch.clone()).verify(AuditVerifyRequest::default())),
        Rpc::FeedWatch => go!(FeedClient::new(cluster_ch.clone()).watch(WatchRequest::default())),
        Rpc::ClusterStatus => go!(cluster.status(StatusRequest {})),
        // id 0 is refused as invalid only after the permission check.
        Rpc::ClusterAddLearner => go!(cluster.add_learner(AddLearnerRequest {
            id: 0,
            raft_addr: "x:1".into(),
            api_addr: "x:1".into()
        })),
        Rpc::ClusterPromote => go!(cluster.promote(PromoteRequest { id: 0 })),
        Rpc::ClusterRemove => go!(cluster.remove(RemoveRequest { id: 0 })),
        Rpc::ClusterTransferLeader => go!(cluster.transfer_leader(TransferLeaderRequest { id: 0 })),
        Rpc::ClusterSetStateVersion => {
            go!(cluster.set_state_version(SetStateVersionRequest { version: 1, options: None }))
        }
        Rpc::ClusterSaveSnapshot => go!(cluster.save_snapshot(SaveSnapshotRequest {})),
        Rpc::ClusterStateHash => go!(cluster.state_hash(StateHashRequest {})),
    }
}

/// The auth refusal of a call, if it was refused for who called.
fn auth_failure(r: &Result<(), Status>) -> Option<Code> {
    match r {
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => Some(s.code()),
        _ => None,
    }
}

/// Public RPCs may refuse the (bogus) credentials they are given, but never
/// for want of a bearer token.
fn asked_for_a_token(r: &Result<(), Status>) -> bool {
    matches!(r, Err(s) if s.message().contains("authorization"))
}

/// Shaped like a token, issued to no one.
fn unknown_token() -> String {
    format!("sbx_{}", "A".repeat(43))
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_matrix_every_rpc_allowed_and_denied() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    create_user(&c, "nobody", &[]).await;
    let nobody = login(&c, 2, "nobody", PASSWORD).await.unwrap().access_token;

    for (i, rpc) in Rpc::ALL.iter().enumerate() {
        if *rpc == Rpc::AuthLogout {
            continue; // below, on tokens of its own
        }
        let node = 1 + (i as u64 % 3);
        let tag = format!("{i}");
        // No token at all.
        let anon = call(c.authed(node, None), *rpc, &tag).await;
        match rpc.need() {
            Need::Public => assert!(!asked_for_a_token(&anon), "{rpc:?} is public: {anon:?}"),
            _ => assert_eq!(
                auth_failure(&anon),
                Some(Code::Unauthenticated),
                "{rpc:?} without a token: {anon:?}"
            ),
        }
        // A valid token without any role.
        let r = call(c.authed(node, Some(&nobody)), *rpc, &tag).await;
        match rpc.need() {
            Need::Access(..) => {
                assert_eq!(
                    auth_failure(&r),
                    Some(Code::PermissionDenied),
                    "{rpc:?} by a user without roles: {r:?}"
                )
            }
            Need::Public => assert!(!asked_for_a_token(&r), "{rpc:?} is public: {r:?}"),
            Need::Authenticated => assert_eq!(auth_failure(&r), None, "{rpc:?} needs only a token: {r:?}"),
        }
        // A user holding exactly the permission the table names.
        if let Need::Access(action, template) = rpc.need() {
            let resource = rpc.need().access(&subject(*rpc)).unwrap().resource;
            let role = format!("only-{i}");
            put_role(&c, &role, &[("allow", action.as_str(), &resource)]).await;
            let user = format!("holder-{i}");
            create_user(&c, &user, &[&role]).await;
            let token = login(&c, node, &user, PASSWORD).await.unwrap().access_token;
            let r = call(c.authed(node, Some(&token)), *rpc, &tag).await;
            assert_eq!(auth_failure(&r), None, "{rpc:?} with {} on {template}: {r:?}", action.as_str());
        }
    }

    // Logout, on a token of its own: afterwards that token is dead.
    let anon = call(c.authed(1, None), Rpc::AuthLogout, "x").await;
    assert_eq!(auth_failure(&anon), Some(Code::Unauthenticated));
    let t = login(&c, 1, "nobody", PASSWORD).await.unwrap().access_token;
    AuthClient::new(c.authed(3, Some(&t))).logout(LogoutRequest { options: wo() }).await.unwrap();
    let who = AuthClient::new(c.authed(2, Some(&t))).who_am_i(WhoAmIRequest { options: None }).await;
    assert_eq!(who.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_on_the_leader_holds_on_every_follower_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    // Rules no RPC could ever match (a typo) are refused, not stored.
    // So are rules on a scoped kind that name none of it, or a ledger by
    // something that is not an id: as a deny, each would deny nothing.
    for typo in ["secret:team-a/*", "users:alice", "nosuchkind", "secrets", "secrets:../x", "ledgers:abc"] {
        let permissions =
            vec![Permission { effect: "allow".into(), action: "read".into(), resource: typo.into() }];
        let e = RolesClient::new(c.admin(1))
            .put(PutRoleRequest { options: wo(), name: "typo".into(), permissions })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{typo}: {e:?}");
    }
    // A missing effect is refused, never read as "allow".
    let permissions =
        vec![Permission { effect: String::new(), action: "read".into(), resource: "users".into() }];
    let e = RolesClient::new(c.admin(1))
        .put(PutRoleRequest { options: wo(), name: "no-effect".into(), permissions })
        .await
        .unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("effect is required"), "{e:?}");
    put_role(&c, "team-a", &[("allow", "read", "secrets:team-a/*"), ("allow", "write", "secrets:team-a/*")])
        .await;
    create_user(&c, "carol", &["team-a"]).await;
    put_retry(&c, 1, "team-a/db", "v", "seed").await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();

    for round in 0..3 {
        let token = login(&c, followers[round % 2], "carol", PASSWORD).await.unwrap().access_token;
        for n in 1..=3 {
            get(&c, n, &token, "team-a/db").await.unwrap_or_else(|s| panic!("node {n} before revoke: {s:?}"));
        }
        AuthClient::new(c.admin(leader))
            .revoke(RevokeRequest { options: wo(), token: token.clone() })
            .await
            .unwrap();
        for &n in &followers {
            let r = get(&c, n, &token, "team-a/db").await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::Unauthenticated,
                "round {round}: follower {n} still accepts a revoked token"
            );
            let w = SecretsClient::new(c.authed(n, Some(&token))).put(put_req("team-a/db", "x", "")).await;
            assert_eq!(
                w.unwrap_err().code(),
                Code::Unauthenticated,
                "round {round}: follower {n} wrote with a revoked token"
            );
        }
    }

    // Disabling a user: its tokens die everywhere, and its login fails with
    // the same answer as a wrong password.
    let token = login(&c, 1, "carol", PASSWORD).await.unwrap().access_token;
    UsersClient::new(c.admin(leader))
        .disable(UserRequest { options: wo(), username: "carol".into() })
        .await
        .unwrap();
    for n in 1..=3 {
        assert_eq!(get(&c, n, &token, "team-a/db").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let disabled = login(&c, 2, "carol", PASSWORD).await.unwrap_err();
    let wrong = login(&c, 2, "admin", "not the password").await.unwrap_err();
    assert_eq!((disabled.code(), disabled.message()), (wrong.code(), wrong.message()));

    // A role taken away: the next read is denied on every node.
    create_user(&c, "dave", &["team-a"]).await;
    let token = login(&c, 3, "dave", PASSWORD).await.unwrap().access_token;
    get(&c, 2, &token, "team-a/db").await.unwrap();
    RolesClient::new(c.admin(leader))
        .unassign(AssignRoleRequest { options: wo(), principal: "user:dave".into(), role: "team-a".into() })
        .await
        .unwrap();
    for n in 1..=3 {
        assert_eq!(get(&c, n, &token, "team-a/db").await.unwrap_err().code(), Code::PermissionDenied);
    }

    // A password change ends the user's other sessions on every node; the
    // session that made the change goes on.
    create_user(&c, "erin", &["team-a"]).await;
    let kept = login(&c, 1, "erin", PASSWORD).await.unwrap().access_token;
    let other = login(&c, 2, "erin", PASSWORD).await.unwrap().access_token;
    AuthClient::new(c.authed(followers[0], Some(&kept)))
        .change_password(ChangePasswordRequest {
            options: wo(),
            old_password: PASSWORD.into(),
            new_password: "another horse battery".into(),
        })
        .await
        .unwrap();
    for n in 1..=3 {
        assert_eq!(
            get(&c, n, &other, "team-a/db").await.unwrap_err().code(),
            Code::Unauthenticated,
            "node {n} still accepts a session opened with the old password"
        );
        get(&c, n, &kept, "team-a/db")
            .await
            .unwrap_or_else(|s| panic!("node {n}: the changer's session: {s:?}"));
    }

    // A deleted role is taken from its holders: re-created under the same
    // name, it grants them nothing.
    RolesClient::new(c.admin(leader))
        .delete(DeleteRoleRequest { options: wo(), name: "team-a".into() })
        .await
        .unwrap();
    put_role(&c, "team-a", &[("allow", "read", "secrets:team-a/*")]).await;
    for n in 1..=3 {
        assert_eq!(get(&c, n, &kept, "team-a/db").await.unwrap_err().code(), Code::PermissionDenied);
    }
    let erin = UsersClient::new(c.admin(2))
        .get(GetUserRequest { username: "erin".into(), options: None })
        .await
        .unwrap()
        .into_inner();
    assert!(erin.roles.is_empty(), "erin still lists {:?}", erin.roles);
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_expiry_enumeration_clients_and_no_secrets_in_logs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    put_role(&c, "team-a", &[("allow", "read", "secrets:team-a/*"), ("allow", "write", "secrets:team-a/*")])
        .await;
    create_user(&c, "erin", &["team-a"]).await;
    let before_lock = login(&c, 1, "erin", PASSWORD).await.unwrap().access_token;

    // Unknown user and wrong password: the same status and message.
    let unknown = login(&c, 1, "no-such-user", "whatever-pass").await.unwrap_err();
    let wrong = login(&c, 1, "erin", "wrong-password-1").await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()));

    // Five failures (one above, four here, through different nodes) lock
    // the user: even the right password is refused, until an admin unlocks.
    for i in 0..4 {
        login(&c, 1 + i % 3, "erin", &format!("wrong-password-{i}")).await.unwrap_err();
    }
    let locked = login(&c, 2, "erin", PASSWORD).await.unwrap_err();
    assert_eq!((locked.code(), locked.message()), (wrong.code(), wrong.message()));
    for n in 1..=3 {
        let u = UsersClient::new(c.admin(n))
            .get(GetUserRequest { options: None, username: "erin".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(u.locked, "node {n} does not see the lockout");
    }
    // A session opened before the lockout cannot go on guessing through a
    // password change (a failure while locked would not extend the lock).
    let e = AuthClient::new(c.authed(1, Some(&before_lock)))
        .change_password(ChangePasswordRequest {
            options: wo(),
            old_password: "wrong-password-5".into(),
            new_password: "yet another horse".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().starts_with("erin is locked"), "{}", e.message());
    UsersClient::new(c.admin(3))
        .unlock(UserRequest { options: wo(), username: "erin".into() })
        .await
        .unwrap();
    let token = login(&c, 1, "erin", PASSWORD).await.unwrap().access_token;

    // Concurrent check-and-set through every node: exactly one winner.
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let ch = c.authed(1 + i % 3, Some(&token));
        tasks.push(tokio::spawn(async move {
            let mut req = put_req("team-a/lock", &format!("owner-{i}"), "");
            req.cas = Some(0);
            SecretsClient::new(ch).put(req).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(wins, 1, "concurrent CAS must have exactly one winner");

    // An expired token is refused.
    let short = AuthClient::new(c.channel(2))
        .login(LoginRequest { username: "erin".into(), password: PASSWORD.into(), ttl_seconds: 1 })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    get(&c, 2, &short, "team-a/lock").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = get(&c, 2, &short, "team-a/lock").await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{}", expired.message());

    // A service client: secret shown once, token with its scopes,
    // introspection (RFC 7662) and revocation (RFC 7009).
    let once = || Some(WriteOptions { request_id: "create-ci-once".into() });
    let create =
        CreateClientRequest { options: once(), client_id: "ci".into(), roles: vec!["team-a".into()] };
    let created = ClientsClient::new(c.admin(1)).create(create.clone()).await.unwrap().into_inner();
    assert!(created.client_secret.starts_with("sbxc_"), "the first answer shows the secret");
    // A retry of the same request (it generated a secret of its own) is
    // answered from the first apply: FAILED_PRECONDITION pointing at the
    // first answer and at rotation, never OK with an empty secret (nor the
    // retry's own, never kept); the first secret keeps working (below).
    let retried = ClientsClient::new(c.admin(2)).create(create).await.unwrap_err();
    assert_eq!(retried.code(), Code::FailedPrecondition, "{retried:?}");
    assert!(
        retried.message().contains("rotate-secret")
            && retried.message().contains(&format!("revision {}", created.revision)),
        "{}",
        retried.message()
    );
    let grant = |secret: String| ClientTokenRequest {
        grant_type: "client_credentials".into(),
        client_id: "ci".into(),
        client_secret: secret,
        scopes: vec![],
        ttl_seconds: 0,
    };
    let bad = AuthClient::new(c.channel(3)).client_token(grant("sbxc_wrong".into())).await.unwrap_err();
    assert_eq!(bad.code(), Code::Unauthenticated);
    let ct = AuthClient::new(c.channel(3))
        .client_token(grant(created.client_secret.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ct.scopes, vec!["team-a".to_string()]);
    SecretsClient::new(c.authed(2, Some(&ct.access_token)))
        .put(put_req("team-a/from-ci", "ci-value", ""))
        .await
        .unwrap();
    let intro = AuthClient::new(c.admin(1))
        .introspect(IntrospectRequest { options: None, token: ct.access_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(intro.active);
    assert_eq!(
        (intro.client_id.as_str(), intro.scope.as_str(), intro.sub.as_str()),
        ("ci", "team-a", "client:ci")
    );
    let denied = AuthClient::new(c.authed(1, Some(&token)))
        .introspect(IntrospectRequest { options: None, token: ct.access_token.clone() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "introspection needs read on tokens");
    // A token in the wrong form is refused, not quietly matched to nothing.
    let wrong = AuthClient::new(c.admin(2))
        .revoke(RevokeRequest { options: wo(), token: format!("{}x", ct.access_token) })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    // As a header would carry it: revoked all the same.
    AuthClient::new(c.admin(2))
        .revoke(RevokeRequest { options: wo(), token: format!(" Bearer {} ", ct.access_token) })
        .await
        .unwrap();
    let intro = AuthClient::new(c.admin(3))
        .introspect(IntrospectRequest { options: None, token: ct.access_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!intro.active);

    // Rotating the secret: a new one, shown once; the old secret and the
    // tokens it minted stop working on every node.
    let live = AuthClient::new(c.channel(1))
        .client_token(grant(created.client_secret.clone()))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let rotate = ClientRequest { options: wo(), client_id: "ci".into() };
    let denied =
        ClientsClient::new(c.authed(1, Some(&token))).rotate_secret(rotate.clone()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let rotated = ClientsClient::new(c.admin(2)).rotate_secret(rotate).await.unwrap().into_inner();
    assert!(rotated.client_secret.starts_with("sbxc_") && rotated.client_secret != created.client_secret);
    let old =
        AuthClient::new(c.channel(3)).client_token(grant(created.client_secret.clone())).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "{old:?}");
    let minted_before = SecretsClient::new(c.authed(3, Some(&live)))
        .put(put_req("team-a/from-ci", "late", ""))
        .await
        .unwrap_err();
    assert_eq!(minted_before.code(), Code::Unauthenticated, "{minted_before:?}");
    let fresh = AuthClient::new(c.channel(3))
        .client_token(grant(rotated.client_secret.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.scopes, vec!["team-a".to_string()]);
    let missing = ClientsClient::new(c.admin(1))
        .rotate_secret(ClientRequest { options: wo(), client_id: "nobody".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // Secrets: metadata names who changed it; list shows folders.
    let m = SecretsClient::new(c.admin(1))
        .metadata(SecretMetadataRequest { options: None, path: "team-a/from-ci".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.updated_by, "client:ci");
    let listed = SecretsClient::new(c.admin(2))
        .list(ListSecretsRequest { options: None, folder: String::new(), page: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["team-a/"]);

    // Nothing secret reached any node's log.
    let logs = c.all_logs();
    for needle in [
        PASSWORD,
        "ci-value",
        "owner-",
        &token,
        &created.client_secret,
        &rotated.client_secret,
        &ct.access_token,
        &fresh.access_token,
        &c.admin_password,
        &c.admin_token,
    ] {
        assert!(!logs.contains(needle), "a node log contains {needle:?}");
    }
    assert!(logs.contains("node started"), "the logs were captured");
}

/// Failed logins are throttled per source address on each node (each one
/// costs a hash and a log entry): past a burst the address is refused with
/// RESOURCE_EXHAUSTED before any work, while other nodes still answer.
#[tokio::test]
async fn failed_logins_from_one_address_are_throttled() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let mut refused = None;
    for i in 0..200 {
        match login(&c, 1, "no-such-user", &format!("guess-{i}")).await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                refused = Some((i, s));
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s:?}"),
            Ok(_) => panic!("a guess logged in"),
        }
    }
    let (i, s) = refused.expect("never throttled after 200 failures");
    // A burst of 20, less what the harness spent: it logs in as admin on
    // every node until the first admin exists, and each refusal before
    // that counted (one a second refills).
    assert!(i >= 15, "throttled after only {i} failures");
    assert!(s.message().starts_with("too many failed logins from this address"), "{s:?}");
    let other = login(&c, 2, "no-such-user", "guess").await.unwrap_err();
    assert_eq!(other.code(), Code::Unauthenticated, "another node keeps its own count: {other:?}");
}

/// A retried password change is answered as done; a request id reused for
/// another password must not be (the first password would silently stay).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_reused_for_another_password_is_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    create_user(&c, "pat", &[]).await;
    let set = |password: &str| SetPasswordRequest {
        options: Some(WriteOptions { request_id: "pw-1".into() }),
        username: "pat".into(),
        password: password.into(),
    };
    let mut users = UsersClient::new(c.admin(1));
    let first = users.set_password(set("first-password-1")).await.unwrap().into_inner();
    assert!(!first.deduplicated);
    let retry = users.set_password(set("first-password-1")).await.unwrap().into_inner();
    assert!(retry.deduplicated, "the retry is answered from the first attempt");
    let other = users.set_password(set("second-password-2")).await.unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    assert!(other.message().starts_with("options.request_id:"), "{}", other.message());
    assert!(login(&c, 2, "pat", "first-password-1").await.is_ok());
    assert!(login(&c, 2, "pat", "second-password-2").await.is_err());
}
