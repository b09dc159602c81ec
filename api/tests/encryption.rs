//! Encryption at rest on a real cluster: values and passwords never reach
//! disk or logs in the clear, data-key and master-key rotation online, and a
//! node with the wrong master key refuses to start without touching its data.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use strongbox_proto::v1::clients_client::ClientsClient;
use strongbox_proto::v1::keys_client::KeysClient;
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::roles_client::RolesClient;
use strongbox_proto::v1::users_client::UsersClient;
use strongbox_proto::v1::*;

const VALUE_MARKER: &str = "MARKERVALUE7f3a9";
const PASSWORD_MARKER: &str = "MARKERPASS81c2d4";
/// Names users choose: a secret folder, a username, a client id, a role,
/// a request id. RocksDB keys built from them are keyed hashes.
const PATH_MARKER: &str = "MARKERPATHa41b7";
const USER_MARKER: &str = "MARKERUSERc93e2";
const CLIENT_MARKER: &str = "MARKERCLIENTd02f";
const ROLE_MARKER: &str = "MARKERROLEe71a3";
const REQUEST_MARKER: &str = "MARKERREQb55c91";
/// Account and transfer user_data_128: 16 bytes of ASCII as a number.
const LEDGER_MARKER: &[u8; 16] = b"MARKERLEDGER5e1d";

/// A 128-bit number as it could land on disk in the clear: big- and
/// little-endian bytes, its postcard varint (the record encoding), decimal.
fn u128_forms(v: u128) -> Vec<Vec<u8>> {
    vec![
        v.to_be_bytes().to_vec(),
        v.to_le_bytes().to_vec(),
        strongbox_store::db::encode(&v),
        v.to_string().into_bytes(),
    ]
}

fn u(v: u128) -> Option<U128> {
    Some(U128 { lo: v as u64, hi: (v >> 64) as u64 })
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.insert(p.display().to_string(), bytes);
        }
    }
    out
}

/// The marker as UTF-8, UTF-16LE, and hex.
fn forms(marker: &str) -> Vec<Vec<u8>> {
    let utf16: Vec<u8> = marker.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    vec![marker.as_bytes().to_vec(), utf16, hex_lower(marker.as_bytes()).into_bytes()]
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn keys_status(c: &TestCluster, id: u64) -> KeysStatusResponse {
    KeysClient::new(c.admin(id)).status(KeysStatusRequest {}).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn values_and_passwords_never_reach_disk_and_keys_rotate_online() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    for i in 0..50 {
        put_retry(
            &c,
            1 + i % 3,
            &format!("{PATH_MARKER}/s{i}"),
            &format!("{VALUE_MARKER}-{i}"),
            &format!("m{i}"),
        )
        .await;
    }
    UsersClient::new(c.admin(2))
        .create(CreateUserRequest {
            options: None,
            username: USER_MARKER.into(),
            password: PASSWORD_MARKER.into(),
            roles: vec![],
        })
        .await
        .unwrap();
    let perm = Permission {
        effect: "allow".into(),
        action: "read".into(),
        resource: format!("secrets:{PATH_MARKER}/*"),
    };
    RolesClient::new(c.admin(1))
        .put(PutRoleRequest { options: None, name: ROLE_MARKER.into(), permissions: vec![perm] })
        .await
        .unwrap();
    let client = CreateClientRequest {
        options: None,
        client_id: CLIENT_MARKER.into(),
        roles: vec![ROLE_MARKER.into()],
    };
    ClientsClient::new(c.admin(3)).create(client).await.unwrap();

    let marker = u128::from_be_bytes(*LEDGER_MARKER);
    let accounts = (1..=2u128)
        .map(|id| Account { id: u(id), ledger: 9, code: 1, user_data_128: u(marker), ..Default::default() })
        .collect();
    let r = LedgerClient::new(c.admin(3))
        .create_accounts(CreateAccountsRequest { accounts, options: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results, vec![0, 0]);
    let t = Transfer {
        id: u(1),
        debit_account_id: u(1),
        credit_account_id: u(2),
        amount: u(5),
        ledger: 9,
        code: 1,
        user_data_128: u(marker),
        ..Default::default()
    };
    let r = LedgerClient::new(c.admin(1))
        .create_transfers(CreateTransfersRequest { transfers: vec![t], options: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results, vec![0]);

    // Data-key rotation on every node: new writes use the new key at once,
    // the background pass re-encrypts the rest and retires the old key.
    for id in 1..=3 {
        let s =
            KeysClient::new(c.admin(id)).rotate_data_key(RotateDataKeyRequest {}).await.unwrap().into_inner();
        assert!(s.keys.iter().any(|k| k.id == 2 && k.active), "node {id}: {s:?}");
    }
    put_retry(&c, 1, "team/after-rotation", &format!("{VALUE_MARKER}-new"), REQUEST_MARKER).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in 1..=3 {
        loop {
            let s = keys_status(&c, id).await;
            if s.keys.iter().any(|k| k.id == 1 && k.retired) && s.reencryption_passes >= 1 {
                assert!(s.reencryption_rewritten > 0, "node {id}: {s:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {id} never retired the old key: {s:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Master-key rotation on node 1: re-wrap, then a restart with the new key.
    let data1 = c.configs[&1].1.data_dir.clone();
    let (_, new_hex) = strongbox_store::keyring::MasterKey::generate();
    strongbox_api::tls::write_private(&data1.join("master.key.new"), &new_hex).unwrap();
    KeysClient::new(c.admin(1)).rotate_master_key(RotateMasterKeyRequest {}).await.unwrap();
    assert_eq!(std::fs::read_to_string(data1.join("master.key")).unwrap(), *new_hex);

    // Every node stopped and restarted: all values readable.
    for id in 1..=3 {
        c.stop(id).await;
    }
    let logs = c.all_logs();
    let mut on_disk = files(c.dir.path());
    on_disk.retain(|name, _| !name.ends_with(".log"));
    for marker in
        [VALUE_MARKER, PASSWORD_MARKER, PATH_MARKER, USER_MARKER, CLIENT_MARKER, ROLE_MARKER, REQUEST_MARKER]
    {
        for form in forms(marker) {
            for (name, bytes) in &on_disk {
                assert!(!contains(bytes, &form), "{name} holds {marker} in the clear");
            }
            assert!(!contains(logs.as_bytes(), &form), "a node log holds {marker}");
        }
    }
    for form in u128_forms(marker) {
        for (name, bytes) in &on_disk {
            assert!(!contains(bytes, &form), "{name} holds account user_data in the clear");
        }
        assert!(!contains(logs.as_bytes(), &form), "a node log holds account user_data");
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(Duration::from_secs(30)).await;
    for i in 0..50u64 {
        let r = c
            .secrets(1 + i % 3)
            .get(get_req(&format!("{PATH_MARKER}/s{i}"), Consistency::Linearizable, 0))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut r = r;
        while r.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            r = c
                .secrets(1 + i % 3)
                .get(get_req(&format!("{PATH_MARKER}/s{i}"), Consistency::Linearizable, 0))
                .await;
        }
        assert_eq!(r.unwrap().into_inner().value, format!("{VALUE_MARKER}-{i}").into_bytes());
    }
    // Listing works through the keyed index: every secret of the folder,
    // once, across pages; the folder itself under the root.
    let mut secrets = c.secrets(1);
    let (mut listed, mut token) = (std::collections::BTreeSet::new(), String::new());
    loop {
        let page = Some(Page { page_size: 7, page_token: token.clone() });
        let req = ListSecretsRequest { options: None, folder: PATH_MARKER.into(), page };
        let r = secrets.list(req).await.unwrap().into_inner();
        for e in r.entries {
            assert!(listed.insert(e.name.clone()), "{} listed twice", e.name);
        }
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(listed, (0..50).map(|i| format!("s{i}")).collect());
    let root = ListSecretsRequest { options: None, folder: String::new(), page: None };
    let root = secrets.list(root).await.unwrap().into_inner().entries;
    assert!(root.iter().any(|e| e.name == format!("{PATH_MARKER}/") && e.folder), "{root:?}");
    let users = UsersClient::new(c.admin(1)).list(ListUsersRequest { options: None, page: None }).await;
    assert!(users.unwrap().into_inner().users.iter().any(|u| u.username == USER_MARKER));
    let found = LedgerClient::new(c.admin(2))
        .lookup_accounts(LookupAccountsRequest { ids: vec![u(1).unwrap()], options: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.accounts[0].user_data_128, u(marker), "ledger records decrypt after rotations");
    assert_eq!(found.accounts[0].debits_posted, u(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_master_key_is_refused_and_the_data_is_untouched() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    put_retry(&c, 1, "a/b", "v", "r1").await;
    c.stop(3).await;
    let data3 = c.configs[&3].1.data_dir.clone();
    let key_file = data3.join("master.key");
    let right = std::fs::read_to_string(&key_file).unwrap();
    let (_, wrong) = strongbox_store::keyring::MasterKey::generate();
    strongbox_api::tls::write_private(&key_file, &wrong).unwrap();
    let before = files(&data3);

    c.restart(3);
    let status = tokio::time::timeout(Duration::from_secs(20), c.children.get_mut(&3).unwrap().wait())
        .await
        .expect("a node with the wrong master key must exit")
        .unwrap();
    assert!(!status.success());
    assert!(c.log(3).contains("wrong key"), "the refusal says why: {}", c.log(3));
    c.children.remove(&3);
    assert_eq!(before, files(&data3), "a refused start changed the data dir");

    // The right key: the node starts and catches up.
    strongbox_api::tls::write_private(&key_file, &right).unwrap();
    put_retry(&c, 1, "a/c", "w", "r2").await;
    c.restart(3);
    let s = c.wait_applied(3, c.status(1).await.unwrap().applied_index, Duration::from_secs(30)).await;
    assert!(s.revision >= 2);
}
