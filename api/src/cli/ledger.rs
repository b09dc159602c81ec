//! `strongbox account ...` and `strongbox transfer ...`: one event from
//! flags, or a batch from a JSON-lines file (`-` for stdin). Results and
//! records print as JSON lines; 128-bit numbers print as decimal strings.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use strongbox_proto::v1::ledger_client::LedgerClient;
use strongbox_proto::v1::*;
use strongbox_store::ledger::model::{account_flags as af, transfer_flags as tf};
use strongbox_store::ledger::results::{CreateAccountResult, CreateTransferResult};
use strongbox_store::ledger::EVENTS_PER_BATCH_MAX;

use super::{read_opts, status_err, write_opts, Conn};
use crate::services::ledger::{u128_in, u128_out};

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create one account (flags) or a batch (--file, JSON lines).
    Create {
        #[command(flatten)]
        event: AccountArgs,
        /// Every event flag is then refused (the file holds the events).
        #[arg(long, conflicts_with = "AccountArgs")]
        file: Option<PathBuf>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Look accounts up by id.
    Get {
        #[arg(required = true)]
        ids: Vec<u128>,
        #[arg(long)]
        local: bool,
    },
    /// An account's transfers.
    Transfers(FilterArgs),
    /// An account's balance after each change (accounts with the history flag).
    Balances(FilterArgs),
}

#[derive(Subcommand, Debug)]
pub enum TransferCmd {
    /// Create one transfer (flags) or a batch (--file, JSON lines).
    Create {
        #[command(flatten)]
        event: TransferArgs,
        /// Every event flag is then refused (the file holds the events).
        #[arg(long, conflicts_with = "TransferArgs")]
        file: Option<PathBuf>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Look transfers up by id.
    Get {
        #[arg(required = true)]
        ids: Vec<u128>,
        #[arg(long)]
        local: bool,
    },
}

#[derive(Args, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccountArgs {
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    id: Option<u128>,
    #[arg(long)]
    ledger: Option<u32>,
    #[arg(long)]
    code: Option<u16>,
    /// linked, debits_must_not_exceed_credits, credits_must_not_exceed_debits, history. Repeatable.
    #[arg(long = "flag")]
    #[serde(default)]
    flags: Vec<String>,
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    user_data_128: Option<u128>,
    #[arg(long)]
    #[serde(default)]
    user_data_64: Option<u64>,
    #[arg(long)]
    #[serde(default)]
    user_data_32: Option<u32>,
}

#[derive(Args, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TransferArgs {
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    id: Option<u128>,
    #[arg(long = "debit")]
    #[serde(default, deserialize_with = "u128_any", alias = "debit")]
    debit_account_id: Option<u128>,
    #[arg(long = "credit")]
    #[serde(default, deserialize_with = "u128_any", alias = "credit")]
    credit_account_id: Option<u128>,
    /// Omitted in a post: the whole pending amount.
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    amount: Option<u128>,
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    pending_id: Option<u128>,
    /// Seconds until a pending transfer expires.
    #[arg(long)]
    #[serde(default)]
    timeout: Option<u32>,
    #[arg(long)]
    #[serde(default)]
    ledger: Option<u32>,
    #[arg(long)]
    #[serde(default)]
    code: Option<u16>,
    /// linked, pending, post_pending_transfer, void_pending_transfer, balancing_debit,
    /// balancing_credit, closing_debit, closing_credit. Repeatable.
    #[arg(long = "flag")]
    #[serde(default)]
    flags: Vec<String>,
    #[arg(long)]
    #[serde(default, deserialize_with = "u128_any")]
    user_data_128: Option<u128>,
    #[arg(long)]
    #[serde(default)]
    user_data_64: Option<u64>,
    #[arg(long)]
    #[serde(default)]
    user_data_32: Option<u32>,
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    account_id: u128,
    /// Only transfers debiting the account (with --credits: both, the default).
    #[arg(long)]
    debits: bool,
    #[arg(long)]
    credits: bool,
    /// Newest first.
    #[arg(long)]
    reversed: bool,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    timestamp_min: u64,
    #[arg(long, default_value_t = 0)]
    timestamp_max: u64,
    #[arg(long, default_value_t = 0)]
    revision_min: u64,
    #[arg(long, default_value_t = 0)]
    revision_max: u64,
    /// Only transfers with these fields (0: any).
    #[arg(long, default_value_t = 0)]
    user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    user_data_32: u32,
    #[arg(long, default_value_t = 0)]
    code: u32,
    #[arg(long)]
    local: bool,
}

/// A 128-bit number from JSON: a number or a decimal string.
fn u128_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<u128>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an unsigned integer below 2^128, as a number or a decimal string")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.into()))
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse().map(Some).map_err(|_| E::custom(format!("{v:?} is not an unsigned 128-bit integer")))
        }
        // JSON numbers past 2^64 reach serde_json as floats, rounded, so
        // the number as written is gone: not repeated (5.0 would read 5).
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(
                "a number with a fraction, an exponent (1e3) or of 2^64 and above is not exact here: write \
                 whole numbers below 2^64 as digits, larger ones as a decimal string \
                 (\"340282366920938463463374607431768211455\")",
            ))
        }
    }
    d.deserialize_any(V)
}

fn flag_bits(names: &[String], table: &[(&str, u16)]) -> anyhow::Result<u16> {
    let mut bits = 0;
    for n in names {
        let n = n.replace('-', "_");
        let Some((_, b)) = table.iter().find(|(name, _)| *name == n) else {
            let known: Vec<_> = table.iter().map(|(n, _)| *n).collect();
            anyhow::bail!("unknown flag {n:?}; known: {}", known.join(", "));
        };
        bits |= b;
    }
    Ok(bits)
}

const ACCOUNT_FLAGS: &[(&str, u16)] = &[
    ("linked", af::LINKED),
    ("debits_must_not_exceed_credits", af::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ("credits_must_not_exceed_debits", af::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ("history", af::HISTORY),
    ("closed", af::CLOSED),
];

const TRANSFER_FLAGS: &[(&str, u16)] = &[
    ("linked", tf::LINKED),
    ("pending", tf::PENDING),
    ("post_pending_transfer", tf::POST_PENDING_TRANSFER),
    ("void_pending_transfer", tf::VOID_PENDING_TRANSFER),
    ("balancing_debit", tf::BALANCING_DEBIT),
    ("balancing_credit", tf::BALANCING_CREDIT),
    ("closing_debit", tf::CLOSING_DEBIT),
    ("closing_credit", tf::CLOSING_CREDIT),
];

fn flag_names(bits: u32, table: &'static [(&'static str, u16)]) -> Vec<&'static str> {
    table.iter().filter(|(_, b)| bits & u32::from(*b) != 0).map(|(n, _)| *n).collect()
}

impl AccountArgs {
    fn to_proto(&self) -> anyhow::Result<Account> {
        Ok(Account {
            id: u128_out(self.id.ok_or_else(|| anyhow::anyhow!("an account needs an id"))?),
            ledger: self.ledger.ok_or_else(|| anyhow::anyhow!("an account needs a ledger"))?,
            code: self.code.ok_or_else(|| anyhow::anyhow!("an account needs a code"))?.into(),
            flags: flag_bits(&self.flags, ACCOUNT_FLAGS)?.into(),
            user_data_128: u128_out(self.user_data_128.unwrap_or(0)),
            user_data_64: self.user_data_64.unwrap_or(0),
            user_data_32: self.user_data_32.unwrap_or(0),
            ..Default::default()
        })
    }
}

impl TransferArgs {
    fn to_proto(&self) -> anyhow::Result<Transfer> {
        let flags = flag_bits(&self.flags, TRANSFER_FLAGS)?;
        // A post without an amount posts everything that is pending; a void
        // without one voids it all (0, as TigerBeetle's clients send).
        let amount = match self.amount {
            Some(a) => a,
            None if flags & tf::POST_PENDING_TRANSFER != 0 => u128::MAX,
            None if flags & tf::VOID_PENDING_TRANSFER != 0 => 0,
            None => anyhow::bail!("a transfer needs an amount (--amount)"),
        };
        Ok(Transfer {
            id: u128_out(self.id.ok_or_else(|| anyhow::anyhow!("a transfer needs an id"))?),
            debit_account_id: u128_out(self.debit_account_id.unwrap_or(0)),
            credit_account_id: u128_out(self.credit_account_id.unwrap_or(0)),
            amount: u128_out(amount),
            pending_id: u128_out(self.pending_id.unwrap_or(0)),
            timeout: self.timeout.unwrap_or(0),
            ledger: self.ledger.unwrap_or(0),
            code: self.code.unwrap_or(0).into(),
            flags: flags.into(),
            user_data_128: u128_out(self.user_data_128.unwrap_or(0)),
            user_data_64: self.user_data_64.unwrap_or(0),
            user_data_32: self.user_data_32.unwrap_or(0),
            ..Default::default()
        })
    }
}

/// Events from a JSON-lines file (`-`: stdin), blank lines skipped, each
/// with its line number.
fn read_events<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> anyhow::Result<Vec<(usize, T)>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == EVENTS_PER_BATCH_MAX {
            anyhow::bail!("{}: more than {EVENTS_PER_BATCH_MAX} events; split the file", path.display());
        }
        let event =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.push((i + 1, event));
    }
    Ok(out)
}

fn s(v: &Option<U128>) -> String {
    u128_in(v).to_string()
}

fn print_account(a: &Account) {
    let v = json!({
        "id": s(&a.id), "ledger": a.ledger, "code": a.code, "flags": flag_names(a.flags, ACCOUNT_FLAGS),
        "debits_pending": s(&a.debits_pending), "debits_posted": s(&a.debits_posted),
        "credits_pending": s(&a.credits_pending), "credits_posted": s(&a.credits_posted),
        "user_data_128": s(&a.user_data_128), "user_data_64": a.user_data_64, "user_data_32": a.user_data_32,
        "timestamp": a.timestamp,
    });
    println!("{v}");
}

fn print_transfer(t: &Transfer) {
    let v = json!({
        "id": s(&t.id), "debit_account_id": s(&t.debit_account_id), "credit_account_id": s(&t.credit_account_id),
        "amount": s(&t.amount), "pending_id": s(&t.pending_id), "ledger": t.ledger, "code": t.code,
        "flags": flag_names(t.flags, TRANSFER_FLAGS), "timeout": t.timeout,
        "user_data_128": s(&t.user_data_128), "user_data_64": t.user_data_64, "user_data_32": t.user_data_32,
        "timestamp": t.timestamp, "revision": t.revision,
    });
    println!("{v}");
}

fn filter(f: FilterArgs) -> AccountFilterRequest {
    AccountFilterRequest {
        account_id: u128_out(f.account_id),
        timestamp_min: f.timestamp_min,
        timestamp_max: f.timestamp_max,
        revision_min: f.revision_min,
        revision_max: f.revision_max,
        debits: f.debits,
        credits: f.credits,
        reversed: f.reversed,
        limit: f.limit,
        options: read_opts(f.local, 0),
        user_data_128: u128_out(f.user_data_128),
        user_data_64: f.user_data_64,
        user_data_32: f.user_data_32,
        code: f.code,
    }
}

fn ids(ids: &[u128]) -> Vec<U128> {
    ids.iter().map(|i| u128_out(*i).unwrap_or_default()).collect()
}

/// Where in a batch file an error is: `file:line`, as for parse errors.
fn in_event(file: &Option<PathBuf>, line: usize, e: anyhow::Error) -> anyhow::Error {
    match file {
        Some(f) => anyhow::anyhow!("{}:{line}: {e}", f.display()),
        None => e,
    }
}

/// The one event given by flags, or the batch in `file`, each with its
/// line number in the file.
fn events<T: for<'de> Deserialize<'de>>(event: T, file: &Option<PathBuf>) -> anyhow::Result<Vec<(usize, T)>> {
    match file {
        Some(f) => read_events(f),
        None => Ok(vec![(0, event)]),
    }
}

/// A lookup fails (exit 1) when some ids were not found, naming them.
fn all_found(found: impl Iterator<Item = u128>, wanted: &[u128]) -> anyhow::Result<()> {
    let found: std::collections::HashSet<u128> = found.collect();
    let missing: Vec<String> = wanted.iter().filter(|w| !found.contains(w)).map(|w| w.to_string()).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} of {} not found: {}",
        missing.len(),
        wanted.len(),
        missing.join(", ")
    );
    Ok(())
}

/// Prints one result per event; fails (exit 1) when any event failed.
/// `exists` is no failure: the same event was applied before (a retry).
fn report(
    ids: impl Iterator<Item = String>,
    results: Vec<&'static str>,
    revision: u64,
) -> anyhow::Result<()> {
    let (mut failed, mut existed) = (0, 0);
    for (index, (id, result)) in ids.zip(&results).enumerate() {
        failed += usize::from(!matches!(*result, "ok" | "exists"));
        existed += usize::from(*result == "exists");
        println!("{}", json!({ "index": index, "id": id, "result": result }));
    }
    let applied = results.len() - failed - existed;
    eprintln!("{applied} of {} applied, {existed} applied before, revision {revision}", results.len());
    anyhow::ensure!(failed == 0, "{failed} of {} events failed", results.len());
    Ok(())
}

pub async fn account(conn: Conn, cmd: AccountCmd) -> anyhow::Result<()> {
    let mut client = LedgerClient::new(conn.channel().await?);
    match cmd {
        AccountCmd::Create { event, file, request_id } => {
            let accounts = events(event, &file)?
                .iter()
                .map(|(line, a)| a.to_proto().map_err(|e| in_event(&file, *line, e)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let names: Vec<String> = accounts.iter().map(|a| s(&a.id)).collect();
            let r = client
                .create_accounts(CreateAccountsRequest { accounts, options: write_opts(request_id) })
                .await
                .map_err(status_err)?
                .into_inner();
            let results = r
                .results
                .iter()
                .map(|c| CreateAccountResult::from_code(*c).map_or("unknown", |x| x.name()))
                .collect();
            report(names.into_iter(), results, r.revision)
        }
        AccountCmd::Get { ids: wanted, local } => {
            let r = client
                .lookup_accounts(LookupAccountsRequest { ids: ids(&wanted), options: read_opts(local, 0) })
                .await
                .map_err(status_err)?
                .into_inner();
            r.accounts.iter().for_each(print_account);
            all_found(r.accounts.iter().map(|a| u128_in(&a.id)), &wanted)
        }
        AccountCmd::Transfers(f) => {
            let reversed = f.reversed;
            let r = client.get_account_transfers(filter(f)).await.map_err(status_err)?.into_inner();
            r.transfers.iter().for_each(print_transfer);
            more(r.next_timestamp, reversed);
            Ok(())
        }
        AccountCmd::Balances(f) => {
            let (reversed, id, local) = (f.reversed, f.account_id, f.local);
            let r = client.get_account_balances(filter(f)).await.map_err(status_err)?.into_inner();
            if r.balances.is_empty() {
                // Nothing may mean no history kept at all: say so.
                let lookup = LookupAccountsRequest { ids: ids(&[id]), options: read_opts(local, 0) };
                let found = client.lookup_accounts(lookup).await.map_err(status_err)?.into_inner();
                if found.accounts.iter().any(|a| u32::from(af::HISTORY) & a.flags == 0) {
                    eprintln!(
                        "account {id} was created without the history flag: it keeps no balance history \
                         (`strongbox account get {id}` shows its current balances)"
                    );
                }
            }
            for b in &r.balances {
                let v = json!({
                    "timestamp": b.timestamp, "transfer_id": s(&b.transfer_id), "revision": b.revision,
                    "debits_pending": s(&b.debits_pending), "debits_posted": s(&b.debits_posted),
                    "credits_pending": s(&b.credits_pending), "credits_posted": s(&b.credits_posted),
                });
                println!("{v}");
            }
            more(r.next_timestamp, reversed);
            Ok(())
        }
    }
}

/// Says on stderr how to ask for the next page, when there may be one.
fn more(next_timestamp: u64, reversed: bool) {
    if next_timestamp != 0 {
        let flag = if reversed { "--timestamp-max" } else { "--timestamp-min" };
        eprintln!("more may match: repeat with {flag} {next_timestamp}");
    }
}

pub async fn transfer(conn: Conn, cmd: TransferCmd) -> anyhow::Result<()> {
    let mut client = LedgerClient::new(conn.channel().await?);
    match cmd {
        TransferCmd::Create { event, file, request_id } => {
            let transfers = events(event, &file)?
                .iter()
                .map(|(line, t)| t.to_proto().map_err(|e| in_event(&file, *line, e)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let names: Vec<String> = transfers.iter().map(|t| s(&t.id)).collect();
            let r = client
                .create_transfers(CreateTransfersRequest { transfers, options: write_opts(request_id) })
                .await
                .map_err(status_err)?
                .into_inner();
            let results = r
                .results
                .iter()
                .map(|c| CreateTransferResult::from_code(*c).map_or("unknown", |x| x.name()))
                .collect();
            report(names.into_iter(), results, r.revision)
        }
        TransferCmd::Get { ids: wanted, local } => {
            let r = client
                .lookup_transfers(LookupTransfersRequest { ids: ids(&wanted), options: read_opts(local, 0) })
                .await
                .map_err(status_err)?
                .into_inner();
            r.transfers.iter().for_each(print_transfer);
            all_found(r.transfers.iter().map(|t| u128_in(&t.id)), &wanted)
        }
    }
}
