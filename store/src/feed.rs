//! The change feed: one record per revision, written in the same batch as the
//! change itself, so it is gap-free, in revision order and identical on every
//! node (apply is deterministic). Events carry what changed and who changed
//! it, never a secret value, password hash, token or token hash.
//!
//! Retention is by count, by age (state-machine time) and by encoded bytes,
//! pruned inside apply a bounded number of records per command, so every
//! node keeps exactly the same.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{InitStateVersion, Op, Outcome, SetStateVersion};
use crate::db::DbError;
use crate::ledger::model::{transfer_flags, Transfer};
use crate::ledger::results::{CreateAccountResult, CreateTransferResult};

/// Revisions kept (like etcd's auto-compaction by revision count).
pub const FEED_RETAIN_REVISIONS: u64 = 100_000;
/// And none older than this, by the state-machine clock (24 hours).
pub const FEED_RETAIN_MS: u64 = 24 * 60 * 60 * 1000;
/// And at most this many encoded bytes of records: one revision of a ledger
/// command can hold 8,189 transfer events (about a megabyte), so a count
/// alone does not bound the disk the feed takes.
pub const FEED_RETAIN_BYTES: u64 = 1 << 30;
/// Records removed per command at most for count and age; more than one so
/// a backlog (after a quiet day) drains while the feed grows by one per
/// command.
pub const FEED_PRUNE_PER_COMMAND_MAX: usize = 4;
/// Records removed per command at most while over the byte budget: a large
/// record may have to push out many small ones. The feed can then exceed
/// its budget by at most about FEED_RETAIN_REVISIONS / this many of the
/// largest records (100 MB or so), and only until the small ones are gone.
pub const FEED_PRUNE_BYTES_PER_COMMAND_MAX: usize = 1024;
/// Records one read returns at most.
pub const FEED_READ_MAX: usize = 1024;
/// And stored bytes: one record can hold 8,189 transfer events, and a read
/// is rendered in full before a watcher filters it. The record that crosses
/// the bound is still returned, so a read always makes progress.
pub const FEED_READ_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub revision: u64,
    /// The command's time (ms since the epoch), stamped by its proposer.
    pub time_ms: u64,
    /// "user:alice", "client:ci" or "node".
    pub actor: String,
    pub events: Vec<ChangeEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// "secret.updated", "user.created", "transfer.posted", ...
    pub kind: String,
    /// The path, name or id of what changed.
    pub entity: String,
    /// The ledger, for ledger events (filters by ledger use it).
    pub ledger: Option<u32>,
    /// Non-secret details (versions, roles, accounts, amounts).
    pub fields: BTreeMap<String, String>,
}

/// Every kind of event `describe` writes, by family. A command with no
/// finer description has its command's name as its kind (no family).
pub const KINDS: &[&str] = &[
    "secret.created",
    "secret.updated",
    "secret.deleted",
    "secret.undeleted",
    "secret.version_deleted",
    "secret.version_undeleted",
    "secret.destroyed",
    "secret.purged",
    "secret.metadata_updated",
    "user.created",
    "user.deleted",
    "user.enabled",
    "user.disabled",
    "user.password_changed",
    "user.unlocked",
    "user.login_failed",
    "client.created",
    "client.deleted",
    "client.enabled",
    "client.disabled",
    "client.secret_rotated",
    "role.updated",
    "role.deleted",
    "role.granted",
    "role.revoked",
    "token.issued",
    "token.revoked",
    "token.renewed",
    "cluster.state_version",
    "account.created",
    "transfer.created",
    "transfer.pending",
    "transfer.posted",
    "transfer.voided",
    "transfer.expired",
];

/// The families of `KINDS` ("secret" for "secret.*").
pub fn families() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    KINDS.iter().filter_map(move |k| {
        let family = k.split('.').next().expect("a kind has a family");
        (!seen.contains(&family)).then(|| {
            seen.push(family);
            family
        })
    })
}

fn version_events(kind: &str, path: &str, versions: &[u64], latest_version: u64) -> Vec<ChangeEvent> {
    let fields = |v: u64| [("version", v.to_string()), ("latest", (v == latest_version).to_string())];
    versions.iter().map(|v| event(kind, path, &fields(*v))).collect()
}

fn event(kind: &str, entity: impl Into<String>, fields: &[(&str, String)]) -> ChangeEvent {
    debug_assert!(KINDS.contains(&kind) || !kind.contains('.'), "{kind} is missing from KINDS");
    ChangeEvent {
        kind: kind.to_string(),
        entity: entity.into(),
        ledger: None,
        fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    }
}

/// The events of one applied command that changed state. Every such command
/// yields at least one event, so every revision has something to deliver.
/// `expired` are the pending transfers the command released first (every
/// ledger command sweeps what is due); `applied` looks up a transfer as the
/// command stored it (a post names its pending transfer's accounts and the
/// amount actually moved; a balancing transfer the amount it was clamped to).
pub(crate) fn describe(
    op: &Op,
    outcome: &Outcome,
    actor: &str,
    expired: &[u128],
    applied: &dyn Fn(u128) -> Result<Option<Transfer>, DbError>,
) -> Result<Vec<StoredEvent>, DbError> {
    let mut events = Vec::new();
    for id in expired {
        let p = applied(*id)?.expect("an expired transfer is stored");
        events.push(StoredEvent::Transfer(TransferEvent::of(TransferKind::Expired, &p, &p)));
    }
    let described: Vec<ChangeEvent> = match (op, outcome) {
        (Op::PutSecret(c), Outcome::SecretWritten { version }) => {
            let kind = if *version == 1 { "secret.created" } else { "secret.updated" };
            vec![event(kind, &c.path, &[("version", version.to_string())])]
        }
        (Op::DeleteSecret(c), Outcome::SecretDeleted { version }) => {
            vec![event("secret.deleted", &c.path, &[("version", version.to_string())])]
        }
        (Op::UndeleteSecret(c), Outcome::SecretUndeleted { version }) => {
            vec![event("secret.undeleted", &c.path, &[("version", version.to_string())])]
        }
        // One event per version, of kinds of their own: a consumer that
        // tracks each secret's latest version must not read the deletion
        // of an older one as the secret gone. `latest` says which it was.
        (Op::DeleteSecretVersions(c), Outcome::SecretVersionsDeleted { versions, latest_version }) => {
            version_events("secret.version_deleted", &c.path, versions, *latest_version)
        }
        (Op::UndeleteSecretVersions(c), Outcome::SecretVersionsUndeleted { versions, latest_version }) => {
            version_events("secret.version_undeleted", &c.path, versions, *latest_version)
        }
        (Op::DestroySecretVersions(c), _) => {
            let versions = c.versions.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            vec![event("secret.destroyed", &c.path, &[("versions", versions)])]
        }
        // The path is free again: a consumer drops what it holds for it.
        (Op::PurgeSecret(c), _) => vec![event("secret.purged", &c.path, &[])],
        // What changed, not the custom metadata itself (only its keys' count).
        (Op::UpdateSecretMetadata(c), _) => {
            let mut fields = Vec::new();
            if let Some(m) = c.max_versions {
                fields.push(("max_versions", m.to_string()));
            }
            if let Some(r) = c.cas_required {
                fields.push(("cas_required", r.to_string()));
            }
            if let Some(m) = &c.custom_metadata {
                fields.push(("custom_metadata_keys", m.len().to_string()));
            }
            vec![event("secret.metadata_updated", &c.path, &fields)]
        }
        (Op::Bootstrap(c), _) => vec![
            event("role.updated", crate::auth::ADMIN_ROLE, &[("rules", "1".into())]),
            event(
                "user.created",
                &c.username,
                &[("roles", crate::auth::ADMIN_ROLE.into()), ("bootstrap", "true".into())],
            ),
        ],
        (Op::CreateUser(c), _) => vec![event("user.created", &c.username, &[("roles", c.roles.join(","))])],
        (Op::CreateClient(c), _) => {
            vec![event("client.created", &c.client_id, &[("roles", c.roles.join(","))])]
        }
        (Op::DeletePrincipal(c), _) => {
            vec![event(&format!("{}.deleted", c.principal.kind()), c.principal.name(), &[])]
        }
        (Op::SetEnabled(c), _) => {
            let state = if c.enabled { "enabled" } else { "disabled" };
            vec![event(&format!("{}.{state}", c.principal.kind()), c.principal.name(), &[])]
        }
        (Op::SetPassword(c), _) => vec![event("user.password_changed", &c.username, &[])],
        (Op::RotateClientSecret(c), _) => vec![event("client.secret_rotated", &c.client_id, &[])],
        (Op::ChangePassword(_), _) => vec![event("user.password_changed", actor, &[])],
        (Op::UnlockUser(c), _) => vec![event("user.unlocked", &c.username, &[])],
        (Op::RecordLoginFailure(c), Outcome::LoginFailureRecorded { locked }) => {
            vec![event("user.login_failed", &c.username, &[("locked", locked.to_string())])]
        }
        (Op::IssueToken(c), _) => vec![event("token.issued", c.principal.to_string(), &[])],
        // About the token's principal; the revoker is the record's actor.
        // The token's hash identifies a credential: it stays out.
        (Op::RevokeToken(_), Outcome::TokenRevokedOf { principal }) => {
            vec![event("token.revoked", principal.to_string(), &[])]
        }
        // Before state version 9 the outcome did not say whose it was.
        (Op::RevokeToken(_), _) => vec![event("token.revoked", actor, &[])],
        (Op::RenewToken(_), _) => vec![event("token.renewed", actor, &[])],
        (Op::SetStateVersion(SetStateVersion { version }), _)
        | (Op::InitStateVersion(InitStateVersion { version }), _) => {
            vec![event("cluster.state_version", "cluster", &[("version", version.to_string())])]
        }
        (Op::PutRole(c), _) => vec![event("role.updated", &c.name, &[("rules", c.rules.len().to_string())])],
        (Op::DeleteRole(c), _) => vec![event("role.deleted", &c.name, &[])],
        (Op::AssignRole(c), _) => {
            let kind = if c.assign { "role.granted" } else { "role.revoked" };
            vec![event(kind, c.principal.to_string(), &[("role", c.role.clone())])]
        }
        (Op::CreateAccounts(c), Outcome::AccountsCreated { results }) => c
            .accounts
            .iter()
            .zip(results)
            .filter(|(_, r)| **r == CreateAccountResult::Ok)
            .map(|(a, _)| ChangeEvent {
                ledger: Some(a.ledger),
                ..event("account.created", a.id.to_string(), &[("code", a.code.to_string())])
            })
            .collect(),
        (Op::CreateTransfers(c), Outcome::TransfersCreated { results }) => {
            for (t, _) in c.transfers.iter().zip(results).filter(|(_, r)| **r == CreateTransferResult::Ok) {
                let stored = applied(t.id)?.expect("a created transfer is stored");
                events.push(StoredEvent::Transfer(TransferEvent::of(TransferKind::asked(t), t, &stored)));
            }
            Vec::new()
        }
        _ => Vec::new(),
    };
    events.extend(described.into_iter().map(StoredEvent::Described));
    if events.is_empty() {
        // Something changed (the revision moved) that has no finer description.
        events.push(StoredEvent::Described(event(op.name(), "", &[])));
    }
    Ok(events)
}

/// A record as stored. Transfers (up to 8,189 per command) keep typed
/// fields and become a `ChangeEvent` only when read: building four decimal
/// strings and a map per transfer inside apply was a sixth of apply's cost
/// at 1,000 transfers per command, and the strings took about five times
/// the bytes of the typed fields (~110 against ~20 per transfer). Readers
/// that hold records a while (a watcher's buffer) keep them in this form
/// too: rendered, a revision of 8,189 transfers takes about 12 MB of
/// strings and maps against under 1 MB typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub revision: u64,
    /// The command's time (ms since the epoch), stamped by its proposer.
    pub time_ms: u64,
    /// "user:alice", "client:ci" or "node".
    pub actor: String,
    pub events: Vec<StoredEvent>,
}

/// One event as stored; `render` makes the `ChangeEvent` readers see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEvent {
    Described(ChangeEvent),
    Transfer(TransferEvent),
}

impl StoredEvent {
    /// The rendered event's kind.
    pub fn kind(&self) -> &str {
        match self {
            StoredEvent::Described(e) => &e.kind,
            StoredEvent::Transfer(t) => t.kind.name(),
        }
    }

    /// The rendered event's entity (a transfer's id is rendered for it).
    pub fn entity(&self) -> Cow<'_, str> {
        match self {
            StoredEvent::Described(e) => Cow::Borrowed(alike_entity(e)),
            StoredEvent::Transfer(t) => Cow::Owned(t.id.to_string()),
        }
    }

    /// The rendered event's ledger.
    pub fn ledger(&self) -> Option<u32> {
        match self {
            StoredEvent::Described(e) => e.ledger,
            StoredEvent::Transfer(t) => t.rendered_ledger(),
        }
    }

    pub fn render(&self) -> ChangeEvent {
        match self {
            StoredEvent::Described(e) => named_alike(e.clone()),
            StoredEvent::Transfer(t) => t.render(),
        }
    }

    /// The memory this event holds, about (its inline size and its
    /// strings): what a buffer of stored events is bounded by.
    pub fn bytes(&self) -> usize {
        let inline = std::mem::size_of::<StoredEvent>();
        match self {
            StoredEvent::Transfer(_) => inline,
            StoredEvent::Described(e) => {
                // A map entry: two strings and the tree's share per entry.
                let entry = 2 * std::mem::size_of::<String>() + 16;
                let fields: usize = e.fields.iter().map(|(k, v)| entry + k.capacity() + v.capacity()).sum();
                inline + e.kind.capacity() + e.entity.capacity() + fields
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferKind {
    Created,
    Pending,
    Posted,
    Voided,
    Expired,
}

impl TransferKind {
    fn asked(t: &Transfer) -> TransferKind {
        if t.has(transfer_flags::PENDING) {
            TransferKind::Pending
        } else if t.has(transfer_flags::POST_PENDING_TRANSFER) {
            TransferKind::Posted
        } else if t.has(transfer_flags::VOID_PENDING_TRANSFER) {
            TransferKind::Voided
        } else {
            TransferKind::Created
        }
    }

    fn name(self) -> &'static str {
        match self {
            TransferKind::Created => "transfer.created",
            TransferKind::Pending => "transfer.pending",
            TransferKind::Posted => "transfer.posted",
            TransferKind::Voided => "transfer.voided",
            TransferKind::Expired => "transfer.expired",
        }
    }
}

/// A transfer event: what was asked and what was applied (a balancing
/// transfer's clamp, a partial post, a post's accounts from its pending
/// transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferEvent {
    kind: TransferKind,
    id: u128,
    amount_requested: u128,
    amount: u128,
    debit_account_id: u128,
    credit_account_id: u128,
    pending_id: u128,
    ledger: u32,
}

impl TransferEvent {
    fn of(kind: TransferKind, asked: &Transfer, applied: &Transfer) -> TransferEvent {
        TransferEvent {
            kind,
            id: asked.id,
            amount_requested: asked.amount,
            amount: applied.amount,
            debit_account_id: applied.debit_account_id,
            credit_account_id: applied.credit_account_id,
            pending_id: asked.pending_id,
            ledger: applied.ledger,
        }
    }

    fn render(&self) -> ChangeEvent {
        let mut fields = Vec::with_capacity(5);
        if self.kind != TransferKind::Expired {
            fields.push(("amount_requested", self.amount_requested.to_string()));
        }
        fields.push(("amount", self.amount.to_string()));
        fields.push(("debit_account_id", self.debit_account_id.to_string()));
        fields.push(("credit_account_id", self.credit_account_id.to_string()));
        if self.kind != TransferKind::Expired && self.pending_id != 0 {
            fields.push(("pending_id", self.pending_id.to_string()));
        }
        ChangeEvent {
            ledger: self.rendered_ledger(),
            ..event(self.kind.name(), self.id.to_string(), &fields)
        }
    }

    fn rendered_ledger(&self) -> Option<u32> {
        match self.kind {
            TransferKind::Expired => Some(self.ledger),
            _ => (self.ledger != 0).then_some(self.ledger),
        }
    }
}

/// A password changed by its own user was recorded under the actor
/// ("user:alice"); every other user event names the bare username, which
/// prefix filters and consumers key on. Shown alike, stored as it was.
fn named_alike(mut e: ChangeEvent) -> ChangeEvent {
    let prefix_len = e.entity.len() - alike_entity(&e).len();
    e.entity.drain(..prefix_len);
    e
}

/// The entity as shown (see `named_alike`).

fn alike_entity(e: &ChangeEvent) -> &str {
    match e.kind.as_str() {
        "user.password_changed" => e.entity.strip_prefix("user:").unwrap_or(&e.entity),
        _ => &e.entity,
    }
}

/// A stored record's time (ms), decoding only the fields before it: a
/// ledger revision's events can be a megabyte, and pruning needs the time.
pub(crate) fn stored_time_ms(encoded: &[u8]) -> Result<u64, DbError> {
    // postcard encodes fields in declaration order: revision, then time_ms.
    let ((_revision, time_ms), _events): ((u64, u64), _) = postcard::take_from_bytes(encoded)
        .map_err(|e| DbError::Decode { cf: crate::layout::Cf::Feed.name(), reason: e.to_string() })?;
    Ok(time_ms)
}

impl StoredRecord {
    pub(crate) fn new(revision: u64, time_ms: u64, actor: String, events: Vec<StoredEvent>) -> StoredRecord {
        StoredRecord { revision, time_ms, actor, events }
    }

    pub fn render(self) -> FeedRecord {
        let events = self
            .events
            .into_iter()
            .map(|e| match e {
                StoredEvent::Described(e) => named_alike(e),
                StoredEvent::Transfer(t) => t.render(),
            })
            .collect();
        FeedRecord { revision: self.revision, time_ms: self.time_ms, actor: self.actor, events }
    }
}

/// Feed keys of layout 3 and before: the bare revision, over a record of
/// rendered events.
const LEGACY_KEY_BYTES: usize = 8;
/// What follows the revision in a key of this layout.
const KEY_TAG: u8 = 1;

/// Feed keys: big-endian revision, so they sort in revision order.
/// Then a tag: a record of an older layout (bare revision) is told
/// apart by its key, as installs of older images and upgrades need.
pub fn key(revision: u64) -> [u8; 9] {
    let mut k = [KEY_TAG; 9];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k
}

/// A record of an older layout as this one stores it (None: the record is
/// already current).
pub(crate) fn upgrade_legacy(key: &[u8], value: &[u8]) -> Result<Option<([u8; 9], Vec<u8>)>, DbError> {
    if key.len() != LEGACY_KEY_BYTES {
        return Ok(None);
    }
    let old: FeedRecord = crate::db::decode(crate::layout::Cf::Feed, value)?;
    let events = old.events.into_iter().map(StoredEvent::Described).collect();
    let new = StoredRecord::new(old.revision, old.time_ms, old.actor, events);
    Ok(Some((self::key(new.revision), crate::db::encode(&new))))
}

/// Records re-encoded per write while upgrading: few, because one record
/// of a ledger command can hold thousands of rendered events.
const MIGRATE_CHUNK_RECORDS: usize = 64;

/// Re-keys and re-encodes a layout-3 feed in place. Chunks are atomic and
/// a moved record has the new key length, so a crash part way is finished
/// by running this again.
pub(crate) fn migrate_layout_3(db: &crate::db::Db) -> Result<u64, DbError> {
    use crate::layout::Cf;
    db.rewrite_in_chunks(Cf::Feed, MIGRATE_CHUNK_RECORDS, |k, v, batch| {
        let Some((new_key, new_value)) = upgrade_legacy(k, v)? else { return Ok(false) };
        batch.put_raw(Cf::Feed, &new_key, &new_value);
        batch.delete(Cf::Feed, k);
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_is_read_without_the_events() {
        let events =
            vec![StoredEvent::Described(event("secret.created", "a/b", &[("version", "1".into())])); 50];
        let record = StoredRecord::new(7, 1_234_567, "user:admin".into(), events);
        assert_eq!(stored_time_ms(&crate::db::encode(&record)).unwrap(), 1_234_567);
        assert!(stored_time_ms(&[0xff]).is_err(), "a cut record is an error, not a time");
    }

    #[test]
    fn a_users_own_password_change_names_the_bare_username() {
        let own = StoredEvent::Described(event("user.password_changed", "user:alice", &[]));
        let reset = StoredEvent::Described(event("user.password_changed", "bob", &[]));
        let record = StoredRecord::new(3, 1, "user:alice".into(), vec![own, reset]).render();
        let names: Vec<&str> = record.events.iter().map(|e| e.entity.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(record.actor, "user:alice", "the actor keeps its kind");
    }

    /// Watchers filter stored events by kind, entity and ledger before
    /// rendering them: those must be what rendering shows.
    #[test]
    fn a_stored_events_kind_entity_and_ledger_are_the_rendered_ones() {
        let transfer = |kind, ledger| {
            StoredEvent::Transfer(TransferEvent {
                kind,
                id: u128::MAX,
                amount_requested: 1 << 100,
                amount: 1 << 90,
                debit_account_id: 1,
                credit_account_id: 2,
                pending_id: 3,
                ledger,
            })
        };
        let mut events = vec![
            StoredEvent::Described(event("user.password_changed", "user:alice", &[])),
            StoredEvent::Described(event("user.password_changed", "bob", &[])),
            StoredEvent::Described(ChangeEvent {
                ledger: Some(4),
                ..event("account.created", "12", &[("code", "1".into())])
            }),
        ];
        for kind in [
            TransferKind::Created,
            TransferKind::Pending,
            TransferKind::Posted,
            TransferKind::Voided,
            TransferKind::Expired,
        ] {
            events.push(transfer(kind, 5));
            events.push(transfer(kind, 0));
        }
        for e in &events {
            let shown = e.render();
            assert_eq!(
                (e.kind(), e.entity().as_ref(), e.ledger()),
                (shown.kind.as_str(), shown.entity.as_str(), shown.ledger)
            );
        }
        assert_eq!(events[0].entity(), "alice");
        // Typed, a transfer holds a fraction of its rendered strings and map.
        let typed = events[3].bytes();
        let rendered = events[3].render();
        let strings: usize = rendered.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + rendered.entity.len()
            + rendered.kind.len();
        assert!(typed < 200 && strings > 150, "{typed} bytes typed, {strings} of strings rendered");
        assert!(events[2].bytes() > std::mem::size_of::<StoredEvent>() + 20, "strings are counted");
    }
    use crate::db::Db;
    use crate::layout::{Cf, FORMAT_KEY, FORMAT_VERSION};

    fn legacy(revision: u64) -> FeedRecord {
        let fields = [
            ("amount_requested", "7".to_string()),
            ("amount", "5".to_string()),
            ("debit_account_id", "1".to_string()),
            ("credit_account_id", "2".to_string()),
        ];
        FeedRecord {
            revision,
            time_ms: 40 + revision,
            actor: "user:admin".into(),
            events: vec![ChangeEvent { ledger: Some(3), ..event("transfer.created", "99", &fields) }],
        }
    }

    /// A layout-3 directory's feed reads the same after the upgrade, under
    /// the new keys, and nothing of the old keys is left.
    #[test]
    fn a_layout_3_feed_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = Db::open(&path, crate::codec::Codec::plaintext()).unwrap();
            let mut b = db.batch();
            b.put(Cf::RaftMeta, FORMAT_KEY, &3u32);
            for r in 1..=3u64 {
                b.put(Cf::Feed, &r.to_be_bytes(), &legacy(r));
            }
            db.write(b, true).unwrap();
        }
        let db = Db::open(&path, crate::codec::Codec::plaintext()).unwrap();
        assert_eq!(db.get::<u32>(Cf::RaftMeta, FORMAT_KEY).unwrap(), Some(FORMAT_VERSION));
        let keys: Vec<Vec<u8>> =
            db.scan_raw(Cf::Feed, &[], None, 10).unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(keys, (1..=3).map(|r| key(r).to_vec()).collect::<Vec<_>>());
        let sm = crate::StateMachine::new(db);
        assert_eq!(sm.feed(1, 10).unwrap(), (1..=3).map(legacy).collect::<Vec<_>>());
    }

    /// Stored typed, a transfer event reads exactly as the rendered event
    /// older layouts stored.
    #[test]
    fn a_typed_transfer_event_renders_as_before() {
        let asked = Transfer {
            id: 99,
            amount: 7,
            debit_account_id: 1,
            credit_account_id: 2,
            ledger: 3,
            code: 1,
            ..Default::default()
        };
        let applied = Transfer { amount: 5, ..asked };
        let typed = TransferEvent::of(TransferKind::asked(&asked), &asked, &applied).render();
        assert_eq!(typed, legacy(1).events[0]);

        let expired = TransferEvent::of(TransferKind::Expired, &applied, &applied).render();
        assert_eq!(expired.kind, "transfer.expired");
        assert_eq!(expired.ledger, Some(3));
        assert!(!expired.fields.contains_key("amount_requested"));
        assert_eq!(expired.fields.get("amount").map(String::as_str), Some("5"));
    }
}
