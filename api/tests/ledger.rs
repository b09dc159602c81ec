//! The ledger on a real three-node cluster: batches through every node,
//! linked chains, idempotency across retries, two-phase transfers and the
//! leader's expiry pulse, per-ledger permissions, and concurrent transfers
//! that conserve the total.

mod common;

use std::time::Duration;

use common::*;
use strongbox_api::client::AuthChannel;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::roles_client::RolesClient;
use strongbox_proto::v1::users_client::UsersClient;
use strongbox_proto::v1::*;
use tonic::Code;

const LEDGER: u32 = 700;
const PENDING: u32 = 2;
const POST: u32 = 4;
const LINKED: u32 = 1;
const DEBITS_MUST_NOT_EXCEED_CREDITS: u32 = 2;

type R = CreateTransferResult;

fn u(v: u128) -> Option<U128> {
    (v != 0).then_some(U128 { lo: v as u64, hi: (v >> 64) as u64 })
}

fn n(v: &Option<U128>) -> u128 {
    v.as_ref().map_or(0, |v| (v.hi as u128) << 64 | v.lo as u128)
}

fn account(id: u128, flags: u32) -> Account {
    Account { id: u(id), ledger: LEDGER, code: 1, flags, ..Default::default() }
}

fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        id: u(id),
        debit_account_id: u(dr),
        credit_account_id: u(cr),
        amount: u(amount),
        ledger: LEDGER,
        code: 1,
        ..Default::default()
    }
}

fn ledger(ch: AuthChannel) -> LedgerClient<AuthChannel> {
    LedgerClient::new(ch)
}

async fn create_transfers(
    c: &TestCluster,
    node: u64,
    transfers: Vec<Transfer>,
    request_id: &str,
) -> CreateTransfersResponse {
    let options = (!request_id.is_empty()).then(|| WriteOptions { request_id: request_id.into() });
    ledger(c.admin(node))
        .create_transfers(CreateTransfersRequest { transfers, options })
        .await
        .unwrap_or_else(|s| panic!("create_transfers via node {node}: {s:?}"))
        .into_inner()
}

fn codes(r: &CreateTransfersResponse) -> Vec<R> {
    r.results.iter().map(|c| R::try_from(*c).unwrap()).collect()
}

async fn balances(c: &TestCluster, node: u64, ids: &[u128]) -> Vec<Account> {
    let r = ledger(c.admin(node))
        .lookup_accounts(LookupAccountsRequest {
            ids: ids.iter().map(|i| u(*i).unwrap()).collect(),
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accounts.len(), ids.len(), "every account is found via node {node}");
    r.accounts
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_chains_two_phase_and_idempotency_on_every_node() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;

    let accounts = vec![account(1, 0), account(2, 0), account(3, DEBITS_MUST_NOT_EXCEED_CREDITS)];
    let r = ledger(c.admin(2))
        .create_accounts(CreateAccountsRequest { accounts, options: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results, vec![0, 0, 0]);

    // A batch of 1,000 through a follower: one entry, 1,000 results.
    let batch: Vec<Transfer> = (0..1000).map(|i| transfer(1000 + i, 1, 2, 1)).collect();
    let r = create_transfers(&c, 3, batch.clone(), "batch-1").await;
    assert!(codes(&r).iter().all(|c| *c == R::Ok), "{:?}", &r.results[..5]);
    // The same request id again: answered from the first apply.
    let again = create_transfers(&c, 1, batch.clone(), "batch-1").await;
    assert!(again.deduplicated && again.results == r.results);
    // A new request id with the same events: the ids say `exists`, nothing moves twice.
    let retry = create_transfers(&c, 2, batch, "batch-2").await;
    assert!(codes(&retry).iter().all(|c| *c == R::Exists));
    for node in 1..=3 {
        let a = balances(&c, node, &[1, 2]).await;
        assert_eq!((n(&a[0].debits_posted), n(&a[1].credits_posted)), (1000, 1000), "via node {node}");
    }

    // A linked chain with a failing member changes nothing.
    let mut chain = vec![transfer(2000, 2, 3, 10), transfer(2001, 3, 1, 11)];
    chain[0].flags = LINKED;
    let r = create_transfers(&c, 2, chain, "").await;
    assert_eq!(codes(&r), vec![R::LinkedEventFailed, R::ExceedsCredits]);
    assert_eq!(n(&balances(&c, 1, &[3]).await[0].credits_posted), 0);

    // Two-phase: reserve via one node, post part of it via another.
    let mut p = transfer(3000, 2, 1, 100);
    p.flags = PENDING;
    assert_eq!(codes(&create_transfers(&c, 1, vec![p], "").await), vec![R::Ok]);
    let post =
        Transfer { id: u(3001), pending_id: u(3000), amount: u(40), flags: POST, ..Default::default() };
    assert_eq!(codes(&create_transfers(&c, 3, vec![post], "").await), vec![R::Ok]);
    let post_again =
        Transfer { id: u(3002), pending_id: u(3000), amount: u(1), flags: POST, ..Default::default() };
    assert_eq!(
        codes(&create_transfers(&c, 2, vec![post_again], "").await),
        vec![R::PendingTransferAlreadyPosted]
    );
    let a = balances(&c, 2, &[2]).await;
    assert_eq!((n(&a[0].debits_pending), n(&a[0].debits_posted)), (0, 40));

    // A pending transfer with a 1 s timeout is released by the leader's
    // pulse with no other ledger traffic.
    let mut short = transfer(4000, 1, 2, 7);
    short.flags = PENDING;
    short.timeout = 1;
    assert_eq!(codes(&create_transfers(&c, 1, vec![short], "").await), vec![R::Ok]);
    assert_eq!(n(&balances(&c, 3, &[1]).await[0].debits_pending), 7);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if n(&balances(&c, 3, &[1]).await[0].debits_pending) == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pulse never expired the pending transfer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = Transfer { id: u(4001), pending_id: u(4000), amount: u(7), flags: POST, ..Default::default() };
    assert_eq!(codes(&create_transfers(&c, 2, vec![late], "").await), vec![R::PendingTransferExpired]);

    // Queries: an account's transfers, newest first, via a follower.
    let r = ledger(c.admin(2))
        .get_account_transfers(AccountFilterRequest {
            account_id: u(2),
            reversed: true,
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u128> = r.transfers.iter().map(|t| n(&t.id)).collect();
    assert_eq!(ids, vec![4000, 3001, 3000]);

    // Bad input: named, refused whole.
    let too_many: Vec<Transfer> = (0..8190).map(|i| transfer(10_000 + i, 1, 2, 1)).collect();
    let s = ledger(c.admin(1))
        .create_transfers(CreateTransfersRequest { transfers: too_many, options: None })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let mut bad = transfer(5000, 1, 2, 1);
    bad.code = 70_000;
    let s = ledger(c.admin(1))
        .create_transfers(CreateTransfersRequest { transfers: vec![bad], options: None })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("event 0: code"), "{}", s.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn permissions_are_per_ledger() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::start(3, fast_raft()).await;
    let accounts = vec![
        account(1, 0),
        account(2, 0),
        Account { ledger: 800, ..account(3, 0) },
        Account { ledger: 800, ..account(4, 0) },
    ];
    ledger(c.admin(1)).create_accounts(CreateAccountsRequest { accounts, options: None }).await.unwrap();
    let permissions = vec![
        Permission { effect: "allow".into(), action: "write".into(), resource: format!("ledgers:{LEDGER}") },
        Permission { effect: "allow".into(), action: "read".into(), resource: format!("ledgers:{LEDGER}") },
    ];
    RolesClient::new(c.admin(1))
        .put(PutRoleRequest { options: None, name: "teller".into(), permissions })
        .await
        .unwrap();
    let password = "correct horse battery";
    UsersClient::new(c.admin(1))
        .create(CreateUserRequest {
            options: None,
            username: "tess".into(),
            password: password.into(),
            roles: vec!["teller".into()],
        })
        .await
        .unwrap();
    let token = AuthClient::new(c.channel(2))
        .login(LoginRequest { username: "tess".into(), password: password.into(), ttl_seconds: 0 })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut tess = ledger(c.authed(3, Some(&token)));
    let ok = tess
        .create_transfers(CreateTransfersRequest { transfers: vec![transfer(10, 1, 2, 5)], options: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results, vec![0]);
    let mixed = vec![transfer(11, 1, 2, 5), Transfer { ledger: 800, ..transfer(12, 3, 4, 5) }];
    let s =
        tess.create_transfers(CreateTransfersRequest { transfers: mixed, options: None }).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("ledgers:800"), "{}", s.message());
    // Ledger 800's records are to tess as ids nobody took: skipped by a
    // lookup (her own still found), NOT_FOUND to a query, word for word.
    let both = LookupAccountsRequest { ids: vec![u(3).unwrap(), u(1).unwrap()], options: None };
    let found = tess.lookup_accounts(both).await.unwrap().into_inner();
    assert_eq!(found.accounts.iter().map(|a| n(&a.id)).collect::<Vec<_>>(), vec![1]);
    for (id, missing) in [(3, "no account 3"), (77, "no account 77")] {
        let q = AccountFilterRequest { account_id: u(id), ..Default::default() };
        let s = tess.get_account_transfers(q).await.unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::NotFound, missing));
    }
    let found = ledger(c.admin(1))
        .lookup_transfers(LookupTransfersRequest {
            ids: vec![u(10).unwrap(), u(11).unwrap(), u(12).unwrap()],
            options: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        found.transfers.iter().map(|t| n(&t.id)).collect::<Vec<_>>(),
        vec![10],
        "nothing of the refused batch"
    );

    // An empty batch: no results, as TigerBeetle answers, and nothing
    // applied; it still needs a valid token.
    let empty =
        tess.create_transfers(CreateTransfersRequest { transfers: vec![], options: None }).await.unwrap();
    let empty = empty.into_inner();
    assert!(empty.results.is_empty() && !empty.deduplicated, "{empty:?}");
    assert!(empty.revision >= ok.revision, "the node's revision: {} < {}", empty.revision, ok.revision);
    let none = tess.create_accounts(CreateAccountsRequest { accounts: vec![], options: None }).await.unwrap();
    assert!(none.into_inner().results.is_empty());
    let s = ledger(c.authed(1, None))
        .create_transfers(CreateTransfersRequest { transfers: vec![], options: None })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
}

/// Many clients on all nodes move value between accounts that may not go
/// negative, while the leader is killed: every read through every node
/// sees the total conserved and no account below zero.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_transfers_conserve_the_total_across_a_leader_kill() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::start(3, fast_raft()).await;
    const ACCOUNTS: u128 = 8;
    const FUNDING: u128 = 1_000;
    // Account 100 funds the others; 1..=8 may not spend more than they hold.
    let mut accounts = vec![account(100, 0)];
    accounts.extend((1..=ACCOUNTS).map(|i| account(i, DEBITS_MUST_NOT_EXCEED_CREDITS)));
    ledger(c.admin(1)).create_accounts(CreateAccountsRequest { accounts, options: None }).await.unwrap();
    let funding: Vec<Transfer> = (1..=ACCOUNTS).map(|i| transfer(900 + i, 100, i, FUNDING)).collect();
    assert!(codes(&create_transfers(&c, 1, funding, "fund").await).iter().all(|c| *c == R::Ok));

    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut tasks = Vec::new();
    for w in 0..6u128 {
        let chans: Vec<AuthChannel> = (1..=3).map(|node| c.admin(node)).collect();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..60u128 {
                let id = 100_000 + w * 1_000 + i;
                let (dr, cr) = (1 + (id * 7) % ACCOUNTS, 1 + (id * 3 + 1) % ACCOUNTS);
                if dr == cr {
                    continue;
                }
                let t = transfer(id, dr, cr, 1 + id % 300);
                // Retries keep the request id: applied at most once.
                for attempt in 0..20 {
                    let ch = chans[(attempt + w as usize) % 3].clone();
                    let r = LedgerClient::new(ch)
                        .create_transfers(CreateTransfersRequest {
                            transfers: vec![t],
                            options: Some(WriteOptions { request_id: format!("w{id}") }),
                        })
                        .await;
                    match r {
                        Ok(r) => {
                            ok += usize::from(r.into_inner().results == vec![0]);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(leader).await;
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    for _ in 0..10 {
        for node in (1..=3).filter(|n| *n != leader) {
            let Ok(r) = ledger(c.admin(node))
                .lookup_accounts(LookupAccountsRequest {
                    ids: ids.iter().map(|i| u(*i).unwrap()).collect(),
                    options: None,
                })
                .await
            else {
                continue; // no leader yet: a linearizable read may be refused, never wrong
            };
            let accounts = r.into_inner().accounts;
            let total: u128 = accounts.iter().map(|a| n(&a.credits_posted) - n(&a.debits_posted)).sum();
            assert_eq!(total, ACCOUNTS * FUNDING, "the total is conserved in every read");
            for a in &accounts {
                assert!(n(&a.debits_posted) + n(&a.debits_pending) <= n(&a.credits_posted), "{a:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert!(applied > 50, "the workload must move value ({applied} transfers applied)");
    c.restart(leader);
    // The restarted node catches up and agrees.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mine = ledger(c.admin(leader))
            .lookup_accounts(LookupAccountsRequest {
                ids: ids.iter().map(|i| u(*i).unwrap()).collect(),
                options: Some(ReadOptions { consistency: Consistency::Local as i32, ..Default::default() }),
            })
            .await;
        let theirs = balances(&c, 1 + leader % 3, &ids).await;
        if let Ok(mine) = mine {
            if mine.into_inner().accounts == theirs {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the restarted node never converged");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Applied once: the balances are exactly the sum of the transfers that
    // exist (a retry applied twice would move value without a second record).
    let attempted: Vec<U128> =
        (0..6u128).flat_map(|w| (0..60u128).map(move |i| u(100_000 + w * 1_000 + i).unwrap())).collect();
    let found = ledger(c.admin(1))
        .lookup_transfers(LookupTransfersRequest { ids: attempted, options: None })
        .await
        .unwrap()
        .into_inner()
        .transfers;
    assert!(found.len() >= applied, "every acknowledged transfer exists ({} < {applied})", found.len());
    let mut expected: std::collections::HashMap<u128, (u128, u128)> =
        (1..=ACCOUNTS).map(|i| (i, (0, FUNDING))).collect();
    for t in &found {
        expected.get_mut(&n(&t.debit_account_id)).unwrap().0 += n(&t.amount);
        expected.get_mut(&n(&t.credit_account_id)).unwrap().1 += n(&t.amount);
    }
    for a in balances(&c, 2, &ids).await {
        let (debits, credits) = expected[&n(&a.id)];
        assert_eq!((n(&a.debits_posted), n(&a.credits_posted)), (debits, credits), "account {}", n(&a.id));
    }
}
