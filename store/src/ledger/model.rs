//! Accounts and transfers as clients send them and as they are stored.

use serde::{Deserialize, Serialize};

/// Account flags (the bit positions of TigerBeetle's).
pub mod account_flags {
    /// This event's outcome is tied to the next one's (all or nothing).
    pub const LINKED: u16 = 1 << 0;
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: u16 = 1 << 1;
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: u16 = 1 << 2;
    /// Keep the balances after every change (`GetAccountBalances`).
    pub const HISTORY: u16 = 1 << 3;
    /// Set by a closing transfer; no transfer may touch the account then.
    pub const CLOSED: u16 = 1 << 5;
    pub const ALL: u16 =
        LINKED | DEBITS_MUST_NOT_EXCEED_CREDITS | CREDITS_MUST_NOT_EXCEED_DEBITS | HISTORY | CLOSED;
}

/// Transfer flags (the bit positions of TigerBeetle's).
pub mod transfer_flags {
    pub const LINKED: u16 = 1 << 0;
    /// Phase one: reserve the amount.
    pub const PENDING: u16 = 1 << 1;
    /// Phase two: move (all or part of) a pending transfer's amount.
    pub const POST_PENDING_TRANSFER: u16 = 1 << 2;
    /// Phase two: release a pending transfer's amount.
    pub const VOID_PENDING_TRANSFER: u16 = 1 << 3;
    /// Move at most what the debit account's credits allow.
    pub const BALANCING_DEBIT: u16 = 1 << 4;
    /// Move at most what the credit account's debits allow.
    pub const BALANCING_CREDIT: u16 = 1 << 5;
    /// Close the debit account (the transfer must be pending; voiding it reopens).
    pub const CLOSING_DEBIT: u16 = 1 << 6;
    pub const CLOSING_CREDIT: u16 = 1 << 7;
    pub const ALL: u16 = LINKED
        | PENDING
        | POST_PENDING_TRANSFER
        | VOID_PENDING_TRANSFER
        | BALANCING_DEBIT
        | BALANCING_CREDIT
        | CLOSING_DEBIT
        | CLOSING_CREDIT;
}

/// In a post: "the whole pending amount"; in a balancing transfer: "as
/// much as the balance allows".
pub const AMOUNT_MAX: u128 = u128::MAX;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    /// Set by the cluster: ns, unique and strictly increasing across events.
    pub timestamp: u64,
}

impl Account {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether the balance keeps within the account's limit flags (after
    /// any event, always).
    pub fn within_limits(&self) -> bool {
        let debits = self.debits_pending.checked_add(self.debits_posted);
        let credits = self.credits_pending.checked_add(self.credits_posted);
        let (Some(debits), Some(credits)) = (debits, credits) else { return false };
        !(self.has(account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits > self.credits_posted)
            && !(self.has(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits > self.debits_posted)
    }

    pub fn balance(&self) -> Balance {
        Balance {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    /// The pending transfer a post or void resolves.
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Seconds after which a pending transfer expires (0: never).
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

impl Transfer {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// When a pending transfer expires, in ns (None: never).
    pub fn expires_at_ns(&self) -> Option<u64> {
        (self.timeout > 0).then(|| self.timestamp.saturating_add(u64::from(self.timeout) * NS_PER_S))
    }
}

pub const NS_PER_S: u64 = 1_000_000_000;

/// A stored transfer: the transfer as applied (amounts and inherited fields
/// resolved) and the revision of the command that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTransfer {
    pub transfer: Transfer,
    pub revision: u64,
}

impl StoredTransfer {
    /// What `Transfers` keeps under the id of a transfer that failed for a
    /// transient reason (`CreateTransferResult::transient`): a record with
    /// timestamp 0, which no created transfer has, and the failure's code
    /// in `code`, the ledger it was refused on in `ledger`. Kept in the same
    /// family and key as transfers so that the
    /// one lookup (and the batch's prefetch) that finds an id taken also
    /// finds it failed.
    pub fn failed(id: u128, code: u16, ledger: u32) -> StoredTransfer {
        StoredTransfer { transfer: Transfer { id, code, ledger, ..Transfer::default() }, revision: 0 }
    }

    pub fn is_failed(&self) -> bool {
        self.transfer.timestamp == 0
    }
}

/// Where a pending transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// One entry of an account's history or transfer index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    pub transfer_id: u128,
    /// The account was the debit side of the transfer.
    pub debit: bool,
    pub revision: u64,
    /// Balances after the change (history only).
    pub balance: Option<Balance>,
}

/// The sums of every account balance on one ledger. Double entry means
/// debits equal credits, pending and posted, after every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

impl LedgerTotals {
    pub fn balanced(&self) -> bool {
        self.debits_pending == self.credits_pending && self.debits_posted == self.credits_posted
    }
}

/// Which transfers or balances of an account a query wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFilter {
    pub account_id: u128,
    /// Inclusive bounds on the event timestamp (0: unbounded).
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    /// Inclusive bounds on the revision (0: unbounded).
    pub revision_min: u64,
    pub revision_max: u64,
    pub debits: bool,
    pub credits: bool,
    /// Newest first.
    pub reversed: bool,
    pub limit: usize,
    /// Only transfers with these fields (0: any).
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub code: u16,
}

impl AccountFilter {
    /// Whether it filters by the transfers' own fields (each row then
    /// costs a transfer lookup).
    pub fn by_fields(&self) -> bool {
        self.user_data_128 != 0 || self.user_data_64 != 0 || self.user_data_32 != 0 || self.code != 0
    }

    pub fn fields_match(&self, t: &Transfer) -> bool {
        (self.user_data_128 == 0 || t.user_data_128 == self.user_data_128)
            && (self.user_data_64 == 0 || t.user_data_64 == self.user_data_64)
            && (self.user_data_32 == 0 || t.user_data_32 == self.user_data_32)
            && (self.code == 0 || t.code == self.code)
    }
}
