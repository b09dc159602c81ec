//! The RocksDB layout: one database per node, one column family per kind of
//! record. The Raft log and the state machine share the database: the log is
//! written through the WAL and fsynced; the state machine's families are
//! written without it and made durable by flushes, atomic across families
//! (see `Db::write_unlogged`).

/// Column families. The discriminant is stable: it is written into snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Cf {
    /// Raft log entries, keyed by big-endian index.
    Log = 0,
    /// Vote, committed log id, last purged log id.
    RaftMeta = 1,
    /// State machine position (last applied, membership), revision, clock.
    SmMeta = 2,
    /// Secret metadata, keyed by path.
    Secrets = 3,
    /// Secret versions, keyed by path, 0x00, big-endian version.
    SecretVersions = 4,
    /// Applied client request ids and their responses (at-most-once writes),
    /// keyed `bucket ++ H(id)` (see `requests`).
    Requests = 5,
    /// Layout 2's time index of `Requests`: emptied when a data directory
    /// is upgraded, dropped from older images as they are installed. Still
    /// opened, because RocksDB refuses to open a database without all of
    /// its column families.
    RequestsByTime = 6,
    /// The last snapshot built or installed (meta and image).
    Snapshot = 7,
    /// Users, keyed by username.
    Users = 8,
    /// Service clients, keyed by client id.
    Clients = 9,
    /// Roles, keyed by name.
    Roles = 10,
    /// Access tokens, keyed by the SHA-256 of the token.
    Tokens = 11,
    /// Token hashes ordered by expiry, for pruning `Tokens`.
    TokensByExpiry = 12,
    /// Ledger accounts, keyed by big-endian u128 id.
    Accounts = 13,
    /// Ledger transfers, keyed by big-endian u128 id.
    Transfers = 14,
    /// The state of each pending (two-phase) transfer, keyed by its id.
    PendingTransfers = 15,
    /// Pending transfers ordered by expiry: `expires_at_ns ++ id`.
    PendingExpiry = 16,
    /// Transfers of an account in time order: `account ++ timestamp`.
    AccountTransfers = 17,
    /// Balances after each change, for accounts with the history flag:
    /// `account ++ timestamp`.
    AccountHistory = 18,
    /// Per-ledger sums of account balances (the double-entry invariant).
    LedgerTotals = 19,
    /// The change feed: one record per revision, keyed by big-endian revision.
    Feed = 20,
    /// The audit chain: one record per applied command, keyed by big-endian seq.
    Audit = 21,
    /// This node's own audit log (reads, requests refused before proposing):
    /// never replicated, never in a snapshot. See `local_audit`.
    LocalAudit = 22,
    /// The direct children of each secrets folder: `H(folder) ++ H(child)`
    /// → the child's name (paths are keyed by hash, see `names`).
    SecretIndex = 23,
}

impl Cf {
    pub const ALL: [Cf; 24] = [
        Cf::Log,
        Cf::RaftMeta,
        Cf::SmMeta,
        Cf::Secrets,
        Cf::SecretVersions,
        Cf::Requests,
        Cf::RequestsByTime,
        Cf::Snapshot,
        Cf::Users,
        Cf::Clients,
        Cf::Roles,
        Cf::Tokens,
        Cf::TokensByExpiry,
        Cf::Accounts,
        Cf::Transfers,
        Cf::PendingTransfers,
        Cf::PendingExpiry,
        Cf::AccountTransfers,
        Cf::AccountHistory,
        Cf::LedgerTotals,
        Cf::Feed,
        Cf::Audit,
        Cf::LocalAudit,
        Cf::SecretIndex,
    ];

    /// The column families that make up the state machine: what a snapshot
    /// carries and what installing one replaces.
    pub const STATE_MACHINE: [Cf; 19] = [
        Cf::SmMeta,
        Cf::Secrets,
        Cf::SecretVersions,
        Cf::Requests,
        Cf::Users,
        Cf::Clients,
        Cf::Roles,
        Cf::Tokens,
        Cf::TokensByExpiry,
        Cf::Accounts,
        Cf::Transfers,
        Cf::PendingTransfers,
        Cf::PendingExpiry,
        Cf::AccountTransfers,
        Cf::AccountHistory,
        Cf::LedgerTotals,
        Cf::Feed,
        Cf::Audit,
        Cf::SecretIndex,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::RaftMeta => "raft_meta",
            Cf::SmMeta => "sm_meta",
            Cf::Secrets => "secrets",
            Cf::SecretVersions => "secret_versions",
            Cf::Requests => "requests",
            Cf::RequestsByTime => "requests_by_time",
            Cf::Snapshot => "snapshot",
            Cf::Users => "users",
            Cf::Clients => "clients",
            Cf::Roles => "roles",
            Cf::Tokens => "tokens",
            Cf::TokensByExpiry => "tokens_by_expiry",
            Cf::Accounts => "accounts",
            Cf::Transfers => "transfers",
            Cf::PendingTransfers => "pending_transfers",
            Cf::PendingExpiry => "pending_expiry",
            Cf::AccountTransfers => "account_transfers",
            Cf::AccountHistory => "account_history",
            Cf::LedgerTotals => "ledger_totals",
            Cf::Feed => "feed",
            Cf::Audit => "audit",
            Cf::LocalAudit => "local_audit",
            Cf::SecretIndex => "secret_index",
        }
    }

    pub fn from_u8(v: u8) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| *cf as u8 == v)
    }
}

/// Keys of single records in `SmMeta` owned by the store itself.
pub mod sm_keys {
    /// Cluster-wide revision: +1 for every applied command that changed state.
    pub const REVISION: &[u8] = b"revision";
    /// State machine clock: the largest command time applied so far.
    pub const CLOCK_MS: &[u8] = b"clock_ms";
    /// Set once the first admin credential exists.
    pub const BOOTSTRAPPED: &[u8] = b"bootstrapped";
    /// The last ledger event timestamp handed out (ns, strictly increasing).
    pub const LEDGER_TIMESTAMP_NS: &[u8] = b"ledger_timestamp_ns";
    /// The oldest change-feed record kept: (revision, time_ms).
    pub const FEED_OLDEST: &[u8] = b"feed_oldest";
    /// (encoded bytes of the feed records kept, of the oldest one, the
    /// revision they were counted at). Absent, or at another revision than
    /// the state's (written by a build that did not keep it), the sizes are
    /// counted afresh from the records.
    pub const FEED_SIZES: &[u8] = b"feed_sizes";
    /// The audit chain's last (seq, hash).
    pub const AUDIT_HEAD: &[u8] = b"audit_head";
    /// The per-cluster key that hashes names into RocksDB keys (`names`).
    pub const NAME_KEY: &[u8] = b"name_key";
    /// State-machine time from which every request id was recorded scoped
    /// by its caller (0: from the start). Before it plus the dedup window,
    /// apply also probes for records of the unscoped kind.
    pub const REQUESTS_SCOPED_SINCE_MS: &[u8] = b"requests_scoped_since_ms";
    /// When the state moved to request ids scoped by principal (state
    /// version 3); absent on a state that started there.
    pub const REQUESTS_BY_PRINCIPAL_SINCE_MS: &[u8] = b"requests_by_principal_since_ms";
    /// The state version the cluster applies by (`command::SetStateVersion`);
    /// absent: 1.
    pub const STATE_VERSION: &[u8] = b"state_version";
}

/// The on-disk layout this build reads and writes, recorded in `RaftMeta`
/// when a database is created. 2: names keyed by HMAC, commands carry the
/// proposing node. 3: request ids keyed by time bucket (`requests`). 4:
/// feed records keep transfers typed, under tagged keys (`feed`). Layout-2
/// and layout-3 directories are upgraded in place when they are opened.
/// Older data directories are refused, not misread.
pub const FORMAT_VERSION: u32 = 4;
pub const FORMAT_KEY: &[u8] = b"format_version";

/// Big-endian u64 key: sorts numerically.
pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}
