//! The Ledger service: thin translation between proto and the store's
//! ledger model. Semantics live in `store::ledger`.

use std::collections::BTreeSet;

use strongbox_proto::v1::ledger_server::Ledger;
use strongbox_proto::v1::*;
use strongbox_store::auth::Caller;
use strongbox_store::command::{CreateAccounts, CreateTransfers, Outcome};
use strongbox_store::ledger::model::{self as m, AccountFilter};
use strongbox_store::ledger::{read, EVENTS_PER_BATCH_MAX, QUERY_RESULTS_MAX};
use strongbox_store::{Actor, Cf, Command, Op};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{internal, token_of, unexpected, Api};
use crate::auth::Rpc;
use crate::observe::{check_size, now_ms, request_id};

/// Results of a query when the request does not say.
const QUERY_LIMIT_DEFAULT: u32 = 100;

pub struct LedgerService {
    api: Api,
}

impl LedgerService {
    pub fn new(api: Api) -> Self {
        LedgerService { api }
    }

    /// The early check of a batch: write on every ledger it names (the
    /// apply checks again, per event, including inherited ledgers).
    async fn precheck(
        &self,
        meta: &MetadataMap,
        rpc: Rpc,
        ledgers: impl Iterator<Item = u32>,
    ) -> Result<strongbox_store::auth::TokenHash, Status> {
        let named: BTreeSet<u32> = ledgers.filter(|l| *l != 0).collect();
        let mut hash = None;
        for l in &named {
            hash = Some(self.api.precheck(meta, rpc, &l.to_string()).await?);
        }
        match hash {
            Some(h) => Ok(h),
            // Only posts and voids that inherit their ledger: a valid token
            // for now, the ledger is checked inside apply.
            None => self.api.precheck(meta, Rpc::AuthWhoAmI, "").await,
        }
    }

    /// An empty batch, which TigerBeetle answers with no results: nothing is
    /// proposed, but the caller must hold a valid token and a well-formed
    /// request id, as for any write. Answers the revision this node has
    /// applied.
    async fn nothing_to_apply(
        &self,
        meta: &MetadataMap,
        opts: Option<&WriteOptions>,
        rpc: Rpc,
    ) -> Result<u64, Status> {
        request_id(opts)?;
        self.precheck(meta, rpc, std::iter::empty()).await?;
        self.api.revision()
    }

    /// Whether a record on `ledger` is shown: `Ok(true)` with read access;
    /// `Ok(false)`, as if it did not exist, when the caller may neither read
    /// nor write that ledger (ids are global: an answer that told a foreign
    /// record from a missing one would show what other ledgers hold);
    /// PERMISSION_DENIED for a writer without read, whom that tells nothing.
    fn shown(caller: &Caller, rpc: Rpc, ledger: u32) -> Result<bool, Status> {
        let access = rpc.need().access(&ledger.to_string()).expect("ledger RPCs name a ledger");
        if caller.allows(&access) {
            return Ok(true);
        }
        let write = Rpc::LedgerCreateTransfers.need().access(&ledger.to_string()).expect("names a ledger");
        if caller.allows(&write) {
            return caller.require(&access).map(|_| true).map_err(crate::observe::command_status);
        }
        Ok(false)
    }

    /// A caller that may neither read nor write any ledger is refused a
    /// ledger read outright (that depends on no record, so tells nothing):
    /// an empty answer would hide that it lacks the right.
    fn reads_some_ledger(caller: &Caller) -> Result<(), Status> {
        use strongbox_store::auth::Action;
        if caller.may_on_some(Action::Read, "ledgers:") || caller.may_on_some(Action::Write, "ledgers:") {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{} may not read on any ledger: it needs `read` on `ledgers:<ledger>` (or `ledgers:*`)",
            caller.principal
        )))
    }

    /// What of `found` is shown to `caller` (see `shown`), in order.
    fn shown_only<T>(
        caller: &Caller,
        rpc: Rpc,
        found: Vec<T>,
        ledger: impl Fn(&T) -> u32,
    ) -> Result<Vec<T>, Status> {
        let mut shown = Vec::with_capacity(found.len());
        for record in found {
            if Self::shown(caller, rpc, ledger(&record))? {
                shown.push(record);
            }
        }
        Ok(shown)
    }

    async fn write(
        &self,
        meta: &MetadataMap,
        opts: Option<&WriteOptions>,
        op: Op,
    ) -> Result<super::Written, Status> {
        let (rpc, ledgers): (Rpc, Vec<u32>) = match &op {
            Op::CreateAccounts(c) => {
                (Rpc::LedgerCreateAccounts, c.accounts.iter().map(|a| a.ledger).collect())
            }
            Op::CreateTransfers(c) => {
                (Rpc::LedgerCreateTransfers, c.transfers.iter().map(|t| t.ledger).collect())
            }
            _ => unreachable!("ledger writes only"),
        };
        let request_id = request_id(opts)?;
        let hash = self.precheck(meta, rpc, ledgers.into_iter()).await?;
        let cmd =
            Command { request_id, time_ms: now_ms(), node: self.api.node.id, actor: Actor::Token(hash), op };
        self.api.propose(cmd).await
    }

    fn filter(r: &AccountFilterRequest) -> Result<AccountFilter, Status> {
        let account_id = u128_in(&r.account_id);
        if account_id == 0 {
            return Err(Status::invalid_argument("account_id: required (non-zero)"));
        }
        // Capped, as TigerBeetle caps it: a client asking for "everything"
        // gets the most one page holds, and pages on.
        let limit = if r.limit == 0 { QUERY_LIMIT_DEFAULT as usize } else { r.limit as usize };
        let limit = limit.min(QUERY_RESULTS_MAX);
        Ok(AccountFilter {
            account_id,
            timestamp_min: r.timestamp_min,
            timestamp_max: r.timestamp_max,
            revision_min: r.revision_min,
            revision_max: r.revision_max,
            debits: r.debits,
            credits: r.credits,
            reversed: r.reversed,
            limit,
            user_data_128: u128_in(&r.user_data_128),
            user_data_64: r.user_data_64,
            user_data_32: r.user_data_32,
            code: u16::try_from(r.code)
                .map_err(|_| Status::invalid_argument(format!("code must fit in 16 bits, got {}", r.code)))?,
        })
    }

    /// The account a filter names, checked for read access.
    async fn filtered(
        &self,
        meta: &MetadataMap,
        rpc: Rpc,
        r: &AccountFilterRequest,
    ) -> Result<(AccountFilter, Caller), Status> {
        let filter = Self::filter(r)?;
        let caller = self.api.read(meta, Rpc::AuthWhoAmI, "", r.options.as_ref()).await?;
        Self::reads_some_ledger(&caller)?;
        let db = self.api.node.sm.db();
        let account = read::accounts(db, &[filter.account_id]).map_err(internal)?.pop();
        match account {
            Some(a) if Self::shown(&caller, rpc, a.ledger)? => Ok((filter, caller)),
            _ => Err(Status::not_found(format!("no account {}", filter.account_id))),
        }
    }
}

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn create_accounts(
        &self,
        req: Request<CreateAccountsRequest>,
    ) -> Result<Response<CreateAccountsResponse>, Status> {
        self.api
            .rpc("ledger.create_accounts", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                if r.accounts.is_empty() {
                    let revision =
                        self.nothing_to_apply(&meta, r.options.as_ref(), Rpc::LedgerCreateAccounts).await?;
                    return Ok(CreateAccountsResponse { results: Vec::new(), revision, deduplicated: false });
                }
                batch_len("accounts", r.accounts.len())?;
                let accounts =
                    r.accounts.iter().enumerate().map(|(i, a)| account_in(i, a)).collect::<Result<_, _>>()?;
                let w = self
                    .write(&meta, r.options.as_ref(), Op::CreateAccounts(CreateAccounts { accounts }))
                    .await?;
                match w.outcome {
                    Outcome::AccountsCreated { results } => Ok(CreateAccountsResponse {
                        results: results.iter().map(|r| r.code() as i32).collect(),
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn create_transfers(
        &self,
        req: Request<CreateTransfersRequest>,
    ) -> Result<Response<CreateTransfersResponse>, Status> {
        self.api
            .rpc("ledger.create_transfers", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                if r.transfers.is_empty() {
                    let revision =
                        self.nothing_to_apply(&meta, r.options.as_ref(), Rpc::LedgerCreateTransfers).await?;
                    return Ok(CreateTransfersResponse {
                        results: Vec::new(),
                        revision,
                        deduplicated: false,
                    });
                }
                batch_len("transfers", r.transfers.len())?;
                let transfers = r
                    .transfers
                    .iter()
                    .enumerate()
                    .map(|(i, t)| transfer_in(i, t))
                    .collect::<Result<_, _>>()?;
                let w = self
                    .write(&meta, r.options.as_ref(), Op::CreateTransfers(CreateTransfers { transfers }))
                    .await?;
                match w.outcome {
                    Outcome::TransfersCreated { results } => Ok(CreateTransfersResponse {
                        results: results.iter().map(|r| r.code() as i32).collect(),
                        revision: w.revision,
                        deduplicated: w.deduplicated,
                    }),
                    other => Err(unexpected(other, w.deduplicated)),
                }
            })
            .await
    }

    async fn lookup_accounts(
        &self,
        req: Request<LookupAccountsRequest>,
    ) -> Result<Response<LookupAccountsResponse>, Status> {
        self.api
            .rpc("ledger.lookup_accounts", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let ids = ids_in(&r.ids)?;
                let caller = self.api.read(&meta, Rpc::AuthWhoAmI, "", r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                Self::reads_some_ledger(&caller)?;
                let found = read::accounts(self.api.node.sm.db(), &ids).map_err(internal)?;
                let found = Self::shown_only(&caller, Rpc::LedgerLookupAccounts, found, |a| a.ledger)?;
                Ok(LookupAccountsResponse { accounts: found.iter().map(account_out).collect(), revision })
            })
            .await
    }

    async fn lookup_transfers(
        &self,
        req: Request<LookupTransfersRequest>,
    ) -> Result<Response<LookupTransfersResponse>, Status> {
        self.api
            .rpc("ledger.lookup_transfers", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let ids = ids_in(&r.ids)?;
                let caller = self.api.read(&meta, Rpc::AuthWhoAmI, "", r.options.as_ref()).await?;
                let revision = self.api.revision()?;
                Self::reads_some_ledger(&caller)?;
                let found = read::transfers(self.api.node.sm.db(), &ids).map_err(internal)?;
                let found =
                    Self::shown_only(&caller, Rpc::LedgerLookupTransfers, found, |t| t.transfer.ledger)?;
                Ok(LookupTransfersResponse { transfers: found.iter().map(transfer_out).collect(), revision })
            })
            .await
    }

    async fn get_account_transfers(
        &self,
        req: Request<AccountFilterRequest>,
    ) -> Result<Response<GetAccountTransfersResponse>, Status> {
        self.api
            .rpc("ledger.get_account_transfers", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let (filter, _) = self.filtered(&meta, Rpc::LedgerGetAccountTransfers, &r).await?;
                let revision = self.api.revision()?;
                let db = self.api.node.sm.db();
                let page = read::account_entries(db, Cf::AccountTransfers, &filter).map_err(internal)?;
                let ids: Vec<u128> = page.entries.iter().map(|(_, e)| e.transfer_id).collect();
                let found = read::transfers(db, &ids).map_err(internal)?;
                Ok(GetAccountTransfersResponse {
                    transfers: found.iter().map(transfer_out).collect(),
                    revision,
                    next_timestamp: page.next_timestamp.unwrap_or(0),
                })
            })
            .await
    }

    async fn get_account_balances(
        &self,
        req: Request<AccountFilterRequest>,
    ) -> Result<Response<GetAccountBalancesResponse>, Status> {
        self.api
            .rpc("ledger.get_account_balances", token_of(req.metadata()), async {
                check_size(req.get_ref())?;
                let (meta, _, r) = req.into_parts();
                let (filter, _) = self.filtered(&meta, Rpc::LedgerGetAccountBalances, &r).await?;
                let revision = self.api.revision()?;
                let db = self.api.node.sm.db();
                let page = read::account_entries(db, Cf::AccountHistory, &filter).map_err(internal)?;
                let balances = page
                    .entries
                    .into_iter()
                    .filter_map(|(timestamp, e)| {
                        let b = e.balance?;
                        Some(AccountBalance {
                            timestamp,
                            transfer_id: u128_out(e.transfer_id),
                            debits_pending: u128_out(b.debits_pending),
                            debits_posted: u128_out(b.debits_posted),
                            credits_pending: u128_out(b.credits_pending),
                            credits_posted: u128_out(b.credits_posted),
                            revision: e.revision,
                        })
                    })
                    .collect();
                Ok(GetAccountBalancesResponse {
                    balances,
                    revision,
                    next_timestamp: page.next_timestamp.unwrap_or(0),
                })
            })
            .await
    }
}

fn batch_len(field: &str, n: usize) -> Result<(), Status> {
    if n > EVENTS_PER_BATCH_MAX {
        return Err(Status::resource_exhausted(format!(
            "{field}: a batch holds at most {EVENTS_PER_BATCH_MAX} events, got {n}; split it into several requests"
        )));
    }
    Ok(())
}

fn ids_in(ids: &[U128]) -> Result<Vec<u128>, Status> {
    if ids.len() > QUERY_RESULTS_MAX {
        return Err(Status::resource_exhausted(format!(
            "ids: at most {QUERY_RESULTS_MAX} per lookup, got {}",
            ids.len()
        )));
    }
    Ok(ids.iter().map(|i| (i.hi as u128) << 64 | i.lo as u128).collect())
}

pub fn u128_in(v: &Option<U128>) -> u128 {
    v.as_ref().map_or(0, |v| (v.hi as u128) << 64 | v.lo as u128)
}

pub fn u128_out(v: u128) -> Option<U128> {
    (v != 0).then(|| U128 { lo: v as u64, hi: (v >> 64) as u64 })
}

/// A u32 field that the model keeps as u16 (code, flags).
fn u16_in(event: usize, field: &str, v: u32) -> Result<u16, Status> {
    u16::try_from(v)
        .map_err(|_| Status::invalid_argument(format!("event {event}: {field} must fit in 16 bits, got {v}")))
}

fn account_in(i: usize, a: &Account) -> Result<m::Account, Status> {
    Ok(m::Account {
        id: u128_in(&a.id),
        debits_pending: u128_in(&a.debits_pending),
        debits_posted: u128_in(&a.debits_posted),
        credits_pending: u128_in(&a.credits_pending),
        credits_posted: u128_in(&a.credits_posted),
        user_data_128: u128_in(&a.user_data_128),
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        ledger: a.ledger,
        code: u16_in(i, "code", a.code)?,
        flags: u16_in(i, "flags", a.flags)?,
        timestamp: a.timestamp,
    })
}

fn transfer_in(i: usize, t: &Transfer) -> Result<m::Transfer, Status> {
    Ok(m::Transfer {
        id: u128_in(&t.id),
        debit_account_id: u128_in(&t.debit_account_id),
        credit_account_id: u128_in(&t.credit_account_id),
        amount: u128_in(&t.amount),
        pending_id: u128_in(&t.pending_id),
        user_data_128: u128_in(&t.user_data_128),
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timeout: t.timeout,
        ledger: t.ledger,
        code: u16_in(i, "code", t.code)?,
        flags: u16_in(i, "flags", t.flags)?,
        timestamp: t.timestamp,
    })
}

fn account_out(a: &m::Account) -> Account {
    Account {
        id: u128_out(a.id),
        debits_pending: u128_out(a.debits_pending),
        debits_posted: u128_out(a.debits_posted),
        credits_pending: u128_out(a.credits_pending),
        credits_posted: u128_out(a.credits_posted),
        user_data_128: u128_out(a.user_data_128),
        user_data_64: a.user_data_64,
        user_data_32: a.user_data_32,
        ledger: a.ledger,
        code: a.code.into(),
        flags: a.flags.into(),
        timestamp: a.timestamp,
    }
}

fn transfer_out(s: &m::StoredTransfer) -> Transfer {
    let t = &s.transfer;
    Transfer {
        id: u128_out(t.id),
        debit_account_id: u128_out(t.debit_account_id),
        credit_account_id: u128_out(t.credit_account_id),
        amount: u128_out(t.amount),
        pending_id: u128_out(t.pending_id),
        user_data_128: u128_out(t.user_data_128),
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timeout: t.timeout,
        ledger: t.ledger,
        code: t.code.into(),
        flags: t.flags.into(),
        timestamp: t.timestamp,
        revision: s.revision,
    }
}

#[cfg(test)]
mod tests {
    use strongbox_store::ledger::results::{CreateAccountResult, CreateTransferResult};

    /// The proto enums and the store's result codes are one list.
    #[test]
    fn result_codes_match_the_proto_enums() {
        for r in CreateAccountResult::ALL {
            let p = strongbox_proto::v1::CreateAccountResult::try_from(r.code() as i32).expect("in proto");
            assert_eq!(p.as_str_name(), format!("CREATE_ACCOUNT_RESULT_{}", r.name().to_uppercase()));
        }
        for r in CreateTransferResult::ALL {
            let p = strongbox_proto::v1::CreateTransferResult::try_from(r.code() as i32).expect("in proto");
            assert_eq!(p.as_str_name(), format!("CREATE_TRANSFER_RESULT_{}", r.name().to_uppercase()));
        }
    }

    #[test]
    fn u128_round_trips() {
        for v in [0u128, 1, u64::MAX as u128, u64::MAX as u128 + 1, u128::MAX] {
            assert_eq!(super::u128_in(&super::u128_out(v)), v);
        }
    }
}
