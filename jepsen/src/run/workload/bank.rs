//! bank: transfers between a fixed set of ledger accounts, and reads of all
//! their balances in one lookup. Money only moves between them, so every
//! read must add up to the same total, and the accounts refuse overdrafts
//! (debits must not exceed credits), so no read may show a negative balance.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jepsen::bank::BankConfig;
use rand::Rng;
use serde_json::{json, Map, Value};
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::{
    Account, AccountFlag, CreateAccountResult, CreateAccountsRequest, CreateTransferResult,
    CreateTransfersRequest, LookupAccountsRequest, LookupTransfersRequest, Transfer, U128,
};

use jepsen::history::OpType;

use super::{op, Client, Ctx, Effect};

const LEDGER: u32 = 1;
const ACCOUNTS: u64 = 5;
const FUNDING_ACCOUNT: u64 = 1_000;
const INITIAL_BALANCE: u64 = 100;
const AMOUNT_MAX: u64 = 5;
/// The first id the run's transfers take (those below are the setup's).
const FIRST_TRANSFER: u64 = 1_000_000;
/// Ids per lookup after the heal (the ledger's batch limit).
const LOOKUP_IDS_MAX: usize = 8_189;
/// Between attempts at a transfer whose outcome is unknown.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// One attempt's wait (a paused or cut-off node never answers): then the
/// next node is asked, within the op's timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct Bank {
    next_transfer: AtomicU64,
}

impl Default for Bank {
    fn default() -> Self {
        // Ids below this are the setup's.
        Bank { next_transfer: AtomicU64::new(FIRST_TRANSFER) }
    }
}

fn u128_of(v: u64) -> Option<U128> {
    Some(U128 { lo: v, hi: 0 })
}

fn lo(v: &Option<U128>) -> i128 {
    v.as_ref().map_or(0, |u| (u.lo as i128) | ((u.hi as i128) << 64))
}

fn transfer(id: u64, from: u64, to: u64, amount: u64) -> Transfer {
    Transfer {
        id: u128_of(id),
        debit_account_id: u128_of(from),
        credit_account_id: u128_of(to),
        amount: u128_of(amount),
        ledger: LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

/// The ledger's bank as a sequential model for the linearizability check.
pub fn model() -> jepsen::linear::Bank {
    jepsen::linear::Bank { accounts: ACCOUNTS as usize, initial: INITIAL_BALANCE as i64 }
}

pub fn config() -> BankConfig {
    BankConfig {
        total: (ACCOUNTS * INITIAL_BALANCE) as i64,
        non_negative: (1..=ACCOUNTS).map(|a| a.to_string()).collect::<BTreeSet<_>>(),
    }
}

impl Bank {
    /// Opens the accounts and funds each from an account outside the set.
    /// Retried until it sticks: ids make every retry idempotent.
    pub async fn setup(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let guarded = AccountFlag::DebitsMustNotExceedCredits as u32;
        let account = |id: u64, flags: u32| Account {
            id: u128_of(id),
            ledger: LEDGER,
            code: 1,
            flags,
            ..Account::default()
        };
        let mut accounts: Vec<Account> = (1..=ACCOUNTS).map(|id| account(id, guarded)).collect();
        accounts.push(account(FUNDING_ACCOUNT, 0));
        let funding: Vec<Transfer> =
            (1..=ACCOUNTS).map(|id| transfer(id, FUNDING_ACCOUNT, id, INITIAL_BALANCE)).collect();
        let ok_account = [CreateAccountResult::Ok as i32, CreateAccountResult::Exists as i32];
        let ok_transfer = [CreateTransferResult::Ok as i32, CreateTransferResult::Exists as i32];
        let mut last = String::new();
        for attempt in 0..30 {
            let mut ledger = LedgerClient::new(ctx.admin(1 + attempt % ctx.nodes()));
            let req = CreateAccountsRequest { accounts: accounts.clone(), options: None };
            let done = match ledger.create_accounts(req).await {
                Ok(r) if r.get_ref().results.iter().all(|c| ok_account.contains(c)) => {
                    let req = CreateTransfersRequest { transfers: funding.clone(), options: None };
                    match ledger.create_transfers(req).await {
                        Ok(r) if r.get_ref().results.iter().all(|c| ok_transfer.contains(c)) => true,
                        Ok(r) => anyhow::bail!("funding the bank accounts failed: {:?}", r.get_ref().results),
                        Err(s) => {
                            last = s.to_string();
                            false
                        }
                    }
                }
                Ok(r) => anyhow::bail!("creating the bank accounts failed: {:?}", r.get_ref().results),
                Err(s) => {
                    last = s.to_string();
                    false
                }
            };
            if done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("bank setup did not complete: {last}")
    }

    pub async fn step(&self, ctx: &Ctx, c: &mut Client) {
        if c.rng.random_bool(0.5) {
            return self.read(ctx, c).await;
        }
        let from = c.rng.random_range(1..=ACCOUNTS);
        let to = (from + c.rng.random_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
        let amount = c.rng.random_range(1..=AMOUNT_MAX);
        let id = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let input = json!({"id": id, "from": from, "to": to, "amount": amount});
        let node = c.node;
        let call = async {
            // As TigerBeetle's clients do: a transfer whose outcome is unknown
            // is sent again with the same id (through the next node) until
            // the ledger answers. `exists` then means an earlier attempt
            // applied it; `ok`, that this one did. A refusal proves nothing
            // once an attempt is unknown: that attempt may still apply.
            let mut unknown = false;
            let mut attempt = 0u64;
            loop {
                let target = (node - 1 + attempt) % ctx.nodes() + 1;
                let mut ledger = LedgerClient::new(ctx.admin(target));
                let req =
                    CreateTransfersRequest { transfers: vec![transfer(id, from, to, amount)], options: None };
                let attempt_call = tokio::time::timeout(ATTEMPT_TIMEOUT, ledger.create_transfers(req));
                let status = match attempt_call.await {
                    Err(_) => tonic::Status::deadline_exceeded("no answer to this attempt"),
                    Ok(Err(status)) => status,
                    Ok(Ok(r)) => {
                        let code = r.into_inner().results.first().copied();
                        return match code {
                            Some(c) if c == CreateTransferResult::Ok as i32 => Ok(json!({"id": id})),
                            Some(c) if unknown && c == CreateTransferResult::Exists as i32 => {
                                Ok(json!({"id": id, "retries": attempt}))
                            }
                            // The id failed (a limit, say) and so can never
                            // apply: no attempt did, and none still in
                            // flight will.
                            Some(c) if c == CreateTransferResult::IdAlreadyFailed as i32 => {
                                Err(tonic::Status::failed_precondition("id_already_failed"))
                            }
                            code => {
                                let name = code
                                    .and_then(|c| CreateTransferResult::try_from(c).ok())
                                    .map_or("missing".to_string(), |c| c.as_str_name().to_string());
                                if unknown {
                                    Err(tonic::Status::unknown(format!(
                                        "a retry was refused ({name}); an earlier attempt may still apply"
                                    )))
                                } else {
                                    // A refused transfer is a definite failure.
                                    Err(tonic::Status::failed_precondition(name))
                                }
                            }
                        };
                    }
                };
                match super::classify(&status, Effect::Write) {
                    OpType::Fail if !unknown => return Err(status),
                    OpType::Fail => {}
                    _ => unknown = true,
                }
                // Bounded by the op's timeout (the op is then info).
                tokio::time::sleep(RETRY_DELAY).await;
                attempt += 1;
            }
        };
        op(&ctx.rec, c, "transfer", input, Effect::Write, call).await;
    }

    async fn read(&self, ctx: &Ctx, c: &mut Client) {
        let mut ledger = LedgerClient::new(ctx.admin(c.node));
        let call = async {
            let ids = (1..=ACCOUNTS).filter_map(u128_of).collect();
            let r = ledger.lookup_accounts(LookupAccountsRequest { ids, options: None }).await?.into_inner();
            let mut balances = Map::new();
            for a in &r.accounts {
                let balance = lo(&a.credits_posted) - lo(&a.debits_posted);
                balances.insert(lo(&a.id).to_string(), json!(balance as i64));
            }
            if balances.len() != ACCOUNTS as usize {
                return Err(tonic::Status::internal(format!("lookup returned {} accounts", balances.len())));
            }
            Ok::<Value, tonic::Status>(Value::Object(balances))
        };
        op(&ctx.rec, c, "read", json!(null), Effect::Read, call).await;
    }

    /// One read through every node once the cluster has healed, then
    /// which of the run's transfer ids the ledger holds: a transfer that
    /// failed must not be there, one acknowledged must, and one of unknown
    /// outcome is settled (the checker compares them with the history).
    pub async fn final_reads(&self, ctx: &Ctx, c: &mut Client) {
        for node in 1..=ctx.nodes() {
            c.node = node;
            self.read(ctx, c).await;
        }
        let last = self.next_transfer.load(Ordering::Relaxed);
        let mut ledger = LedgerClient::new(ctx.admin(c.node));
        let call = async {
            let mut applied = Vec::new();
            let ids: Vec<u64> = (FIRST_TRANSFER..last).collect();
            for chunk in ids.chunks(LOOKUP_IDS_MAX) {
                let req = LookupTransfersRequest {
                    ids: chunk.iter().map(|i| u128_of(*i).unwrap()).collect(),
                    options: None,
                };
                let found = ledger.lookup_transfers(req).await?.into_inner().transfers;
                for t in found {
                    let (id, from, to, amount) =
                        (lo(&t.id), lo(&t.debit_account_id), lo(&t.credit_account_id), lo(&t.amount));
                    applied.push(json!([id as u64, from as u64, to as u64, amount as u64]));
                }
            }
            Ok::<Value, tonic::Status>(json!({"asked": last - FIRST_TRANSFER, "transfers": applied}))
        };
        op(&ctx.rec, c, "applied", json!({"from": FIRST_TRANSFER, "to": last}), Effect::Read, call).await;
    }
}
