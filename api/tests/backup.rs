//! Backups with the real binary: an image saved from a running cluster,
//! restored into the empty data directories of a new cluster (new
//! addresses, certificates and master keys), serves exactly what was
//! acknowledged before the save. A wrong key, a damaged file or a data
//! directory in use restores nothing.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::roles_client::RolesClient;
use strongbox_proto::v1::users_client::UsersClient;
use strongbox_proto::v1::{
    Consistency, CreateUserRequest, LoginRequest, Permission, PutRoleRequest, SaveSnapshotRequest,
};
use tonic::Code;

fn restore(from: &TestCluster, to: &TestCluster, id: u64, file: &Path, key: &Path) -> Output {
    strongbox(from, &[&"snapshot", &"restore", &file, &"--key-file", &key, &"--config", &to.configs[&id].0])
}

#[tokio::test]
async fn a_backup_restored_into_a_new_cluster_serves_what_was_saved() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut old = TestCluster::start(3, fast_raft()).await;
    let leader = old.wait_leader(Duration::from_secs(10)).await;
    for i in 0..30 {
        put_retry(&old, leader, &format!("backup/k{i}"), &format!("v{i}"), &format!("bk-{i}")).await;
    }
    let dir = old.dir.path().to_path_buf();
    let (key, file) = (dir.join("backup.key"), dir.join("store.backup"));
    ok(strongbox(&old, &[&"snapshot", &"new-key", &key]));
    let saved = ok(strongbox(&old, &[&"snapshot", &"save", &file, &"--key-file", &key]));
    assert!(saved.contains("saved"), "{saved}");
    // Acknowledged after the save: not in the backup.
    put_retry(&old, leader, "backup/after", "late", "bk-after").await;
    let status = ok(strongbox(&old, &[&"snapshot", &"status", &file, &"--key-file", &key]));
    assert!(status.contains("whole and readable"), "{status}");

    // `allow admin *` with any deny rule beside it is not enough: the image
    // would hold what the deny keeps from its holder.
    let rule = |effect: &str, action: &str, resource: &str| Permission {
        effect: effect.into(),
        action: action.into(),
        resource: resource.into(),
    };
    RolesClient::new(old.admin(leader))
        .put(PutRoleRequest {
            options: None,
            name: "almost-root".into(),
            permissions: vec![rule("allow", "admin", "*"), rule("deny", "read", "secrets:hr/*")],
        })
        .await
        .expect("role");
    let password = "correct horse battery staple 7";
    UsersClient::new(old.admin(leader))
        .create(CreateUserRequest {
            options: None,
            username: "operator".into(),
            password: password.into(),
            roles: vec!["almost-root".into()],
        })
        .await
        .expect("user");
    let token = AuthClient::new(old.channel(leader))
        .login(LoginRequest { username: "operator".into(), password: password.into(), ttl_seconds: 0 })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let mut as_operator = ClusterClient::new(old.authed(leader, Some(&token)));
    let denied = as_operator.save_snapshot(SaveSnapshotRequest {}).await.map(|_| ()).unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("deny read secrets:hr/*"), "{denied:?}");

    // A key that is not the backup's opens nothing.
    let wrong = dir.join("wrong.key");
    ok(strongbox(&old, &[&"snapshot", &"new-key", &wrong]));
    refused(strongbox(&old, &[&"snapshot", &"status", &file, &"--key-file", &wrong]), "does not open");
    // One flipped byte in the image is found.
    let damaged = dir.join("damaged.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    refused(strongbox(&old, &[&"snapshot", &"status", &damaged, &"--key-file", &key]), "");

    // The header is not sealed: a position edited in it is found against
    // the image's own.
    let edited = dir.join("edited.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(11).position(|w| w == b"\"revision\":").expect("a revision in the header") + 11;
    bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
    std::fs::write(&edited, bytes).unwrap();
    refused(strongbox(&old, &[&"snapshot", &"status", &edited, &"--key-file", &key]), "header was altered");

    let mut new = TestCluster::prepare(3, fast_raft());
    // A damaged backup leaves the data directory untouched: a good one
    // goes in afterwards.
    refused(restore(&old, &new, 1, &damaged, &key), "");
    for id in 1..=3 {
        let out = ok(restore(&old, &new, id, &file, &key));
        assert!(out.contains(&format!("as node {id}")), "{out}");
    }
    // A data directory that holds a node's state is refused.
    refused(restore(&old, &new, 1, &file, &key), "restore into an empty one");
    // The old cluster's tokens are in the image.
    new.start_restored(&old.admin_token.clone()).await;
    let leader = new.wait_leader(Duration::from_secs(30)).await;
    for i in [0, 17, 29] {
        let got =
            new.secrets(leader).get(get_req(&format!("backup/k{i}"), Consistency::Linearizable, 0)).await;
        assert_eq!(got.expect("restored secret").into_inner().value, format!("v{i}").as_bytes());
    }
    let late =
        new.secrets(leader).get(get_req("backup/after", Consistency::Linearizable, 0)).await.unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
    // The new cluster takes writes, on every member, under its own membership.
    put_retry(&new, leader, "backup/new", "fresh", "bk-new").await;
    let status = new.status(leader).await.expect("status");
    let addrs: Vec<String> = status.members.iter().map(|m| m.api_addr.clone()).collect();
    assert_eq!(addrs, (1..=3).map(|id| new.api_addr(id)).collect::<Vec<_>>());
    for id in 1..=3 {
        let applied = new.status(leader).await.unwrap().applied_index;
        new.wait_applied(id, applied, Duration::from_secs(10)).await;
        let got = new.secrets(id).get(get_req("backup/new", Consistency::Local, 0)).await.unwrap();
        assert_eq!(got.into_inner().value, b"fresh");
    }

    // A quorum lost for good: a survivor's own storage, saved offline (no
    // cluster, no token), holds even what came after the online save.
    let offline = dir.join("offline.backup");
    let survivor = old.configs[&3].0.clone();
    let save_offline = |old: &TestCluster| {
        strongbox(old, &[&"snapshot", &"save", &offline, &"--key-file", &key, &"--config", &survivor])
    };
    refused(save_offline(&old), "stop the node first");
    for id in 1..=3 {
        old.stop(id).await;
    }
    let out = ok(save_offline(&old));
    assert!(out.contains("offline from node 3"), "{out}");
    let status = ok(strongbox(&old, &[&"snapshot", &"status", &offline, &"--key-file", &key]));
    assert!(status.contains("whole and readable"), "{status}");
    let mut rescued = TestCluster::prepare(3, fast_raft());
    for id in 1..=3 {
        ok(restore(&old, &rescued, id, &offline, &key));
    }
    rescued.start_restored(&old.admin_token.clone()).await;
    let leader = rescued.wait_leader(Duration::from_secs(30)).await;
    let late = rescued.secrets(leader).get(get_req("backup/after", Consistency::Linearizable, 0)).await;
    assert_eq!(late.expect("written after the online save").into_inner().value, b"late");
}
