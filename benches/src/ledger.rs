//! The transfer workload: strongbox's `CreateTransfers` (one request holds
//! `batch` transfers) against the usual way to build a transfer on etcd:
//! read both balances, then a Txn that compares both keys' mod revisions
//! and writes both new balances, retried on conflict.

use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use strongbox_proto::leader::LeaderRouted;
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::*;
use tonic::service::interceptor::InterceptedService;

use crate::Bearer;

pub const LEDGER: u32 = 1;
/// Accounts the transfers move between: enough that etcd's conflicts stay
/// rare at 64 clients, as in a real payment system.
pub const ACCOUNTS: u64 = 10_000;
const OPENING_BALANCE: u64 = 1_000_000_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn u(v: u128) -> Option<U128> {
    Some(U128 { lo: v as u64, hi: (v >> 64) as u64 })
}

type Ledger = LedgerClient<InterceptedService<LeaderRouted, Bearer>>;

/// Creates the accounts once (idempotent: `exists` on a re-run).
pub async fn setup_strongbox(c: &mut Ledger) -> anyhow::Result<()> {
    let ids: Vec<u64> = (1..=ACCOUNTS).collect();
    for chunk in ids.chunks(8189) {
        let accounts = chunk
            .iter()
            .map(|i| Account { id: u(*i as u128), ledger: LEDGER, code: 1, ..Default::default() })
            .collect();
        let r = c.create_accounts(CreateAccountsRequest { accounts, options: None }).await?.into_inner();
        // 0 = ok, 13 = exists.
        anyhow::ensure!(
            r.results.iter().all(|c| *c == 0 || *c == 13),
            "account setup failed: {:?}",
            &r.results[..3]
        );
    }
    Ok(())
}

/// A pseudo-random pair of distinct accounts (no rand in the hot loop).
fn pair(seed: u64) -> (u64, u64) {
    let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let dr = 1 + (x >> 11) % ACCOUNTS;
    let cr = 1 + (dr + 1 + (x >> 37) % (ACCOUNTS - 1)) % ACCOUNTS;
    (dr, if cr == dr { 1 + dr % ACCOUNTS } else { cr })
}

/// One request of `batch` transfers; Ok(transfers applied).
pub async fn strongbox_batch(c: &mut Ledger, run_id: u64, batch: usize) -> anyhow::Result<u64> {
    let base = NEXT_ID.fetch_add(batch as u64, Ordering::Relaxed);
    let transfers = (0..batch as u64)
        .map(|i| {
            let id = base + i;
            let (dr, cr) = pair(id);
            Transfer {
                id: u((run_id as u128) << 64 | id as u128),
                debit_account_id: u(dr.into()),
                credit_account_id: u(cr.into()),
                amount: u(1),
                ledger: LEDGER,
                code: 1,
                ..Default::default()
            }
        })
        .collect();
    let r = c.create_transfers(CreateTransfersRequest { transfers, options: None }).await?.into_inner();
    let ok = r.results.iter().filter(|c| **c == 0).count() as u64;
    anyhow::ensure!(ok == batch as u64, "{} of {batch} transfers failed", batch as u64 - ok);
    Ok(ok)
}

fn key(account: u64) -> String {
    format!("bench/acct/{account}")
}

pub async fn setup_etcd(c: &mut etcd_client::KvClient) -> anyhow::Result<()> {
    let ids: Vec<u64> = (1..=ACCOUNTS).collect();
    // etcd's default limit is 128 operations per Txn.
    for chunk in ids.chunks(100) {
        let ops =
            chunk.iter().map(|i| TxnOp::put(key(*i), OPENING_BALANCE.to_string(), None)).collect::<Vec<_>>();
        c.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// One transfer the etcd way; retried on conflict. Ok(1) when applied.
pub async fn etcd_transfer(c: &mut etcd_client::KvClient, seed: u64) -> anyhow::Result<u64> {
    let (dr, cr) = pair(seed);
    for _ in 0..100 {
        let a = c.get(key(dr), None).await?;
        let b = c.get(key(cr), None).await?;
        let (Some(a), Some(b)) = (a.kvs().first(), b.kvs().first()) else {
            anyhow::bail!("accounts missing")
        };
        let balance = |kv: &etcd_client::KeyValue| -> anyhow::Result<i64> { Ok(kv.value_str()?.parse()?) };
        let (da, db) = (balance(a)? - 1, balance(b)? + 1);
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(key(dr), CompareOp::Equal, a.mod_revision()),
                Compare::mod_revision(key(cr), CompareOp::Equal, b.mod_revision()),
            ])
            .and_then(vec![
                TxnOp::put(key(dr), da.to_string(), None),
                TxnOp::put(key(cr), db.to_string(), None),
            ]);
        if c.txn(txn).await?.succeeded() {
            return Ok(1);
        }
    }
    anyhow::bail!("transfer kept conflicting")
}
