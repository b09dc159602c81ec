//! The change feed: one record per revision, written in the same batch as the
//! change itself, so it is gap-free, in revision order and identical on every
//! node (apply is deterministic). Events carry what changed and who changed
//! it, never a secret value, password hash, token or token hash.
//!
//! Retention is by count and by age (state-machine time), pruned inside
//! apply a few records per command, so every node keeps exactly the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{Op, Outcome};
use crate::db::DbError;
use crate::ledger::model::{transfer_flags, Transfer};
use crate::ledger::results::{CreateAccountResult, CreateTransferResult};

/// Revisions kept (like etcd's auto-compaction by revision count).
pub const FEED_RETAIN_REVISIONS: u64 = 100_000;
/// And none older than this, by the state-machine clock (24 hours).
pub const FEED_RETAIN_MS: u64 = 24 * 60 * 60 * 1000;
/// Records removed per command at most; more than one so a backlog (after
/// a quiet day) drains while the feed grows by one per command.
pub const FEED_PRUNE_PER_COMMAND_MAX: usize = 4;
/// Records one read returns at most.
pub const FEED_READ_MAX: usize = 1024;

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

fn event(kind: &str, entity: impl Into<String>, fields: &[(&str, String)]) -> ChangeEvent {
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
pub fn describe(
    op: &Op,
    outcome: &Outcome,
    actor: &str,
    expired: &[u128],
    applied: &dyn Fn(u128) -> Result<Option<Transfer>, DbError>,
) -> Result<Vec<ChangeEvent>, DbError> {
    let mut events = Vec::new();
    for id in expired {
        let p = applied(*id)?.expect("an expired transfer is stored");
        events.push(ChangeEvent {
            ledger: Some(p.ledger),
            ..event(
                "transfer.expired",
                id.to_string(),
                &[
                    ("amount", p.amount.to_string()),
                    ("debit_account_id", p.debit_account_id.to_string()),
                    ("credit_account_id", p.credit_account_id.to_string()),
                ],
            )
        });
    }
    events.extend(match (op, outcome) {
        (Op::PutSecret(c), Outcome::SecretWritten { version }) => {
            let kind = if *version == 1 { "secret.created" } else { "secret.updated" };
            vec![event(kind, &c.path, &[("version", version.to_string())])]
        }
        (Op::DeleteSecret(c), Outcome::SecretDeleted { version }) => {
            vec![event("secret.deleted", &c.path, &[("version", version.to_string())])]
        }
        (Op::DestroySecretVersions(c), _) => {
            let versions = c.versions.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            vec![event("secret.destroyed", &c.path, &[("versions", versions)])]
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
        (Op::ChangePassword(_), _) => vec![event("user.password_changed", actor, &[])],
        (Op::UnlockUser(c), _) => vec![event("user.unlocked", &c.username, &[])],
        (Op::RecordLoginFailure(c), Outcome::LoginFailureRecorded { locked }) => {
            vec![event("user.login_failed", &c.username, &[("locked", locked.to_string())])]
        }
        (Op::IssueToken(c), _) => vec![event("token.issued", c.principal.to_string(), &[])],
        // The token's hash identifies a credential: it stays out.
        (Op::RevokeToken(_), _) => vec![event("token.revoked", actor, &[])],
        (Op::RenewToken(_), _) => vec![event("token.renewed", actor, &[])],
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
            let mut out = Vec::new();
            for (t, _) in c.transfers.iter().zip(results).filter(|(_, r)| **r == CreateTransferResult::Ok) {
                out.push(transfer_event(t, &applied(t.id)?.expect("a created transfer is stored")));
            }
            out
        }
        _ => Vec::new(),
    });
    if events.is_empty() {
        // Something changed (the revision moved) that has no finer description.
        events.push(event(op.name(), "", &[]));
    }
    Ok(events)
}

/// A created transfer: what was asked and what was applied.
fn transfer_event(asked: &Transfer, applied: &Transfer) -> ChangeEvent {
    let kind = if asked.has(transfer_flags::PENDING) {
        "transfer.pending"
    } else if asked.has(transfer_flags::POST_PENDING_TRANSFER) {
        "transfer.posted"
    } else if asked.has(transfer_flags::VOID_PENDING_TRANSFER) {
        "transfer.voided"
    } else {
        "transfer.created"
    };
    let mut fields = vec![
        ("amount_requested", asked.amount.to_string()),
        ("amount", applied.amount.to_string()),
        ("debit_account_id", applied.debit_account_id.to_string()),
        ("credit_account_id", applied.credit_account_id.to_string()),
    ];
    if asked.pending_id != 0 {
        fields.push(("pending_id", asked.pending_id.to_string()));
    }
    ChangeEvent {
        ledger: (applied.ledger != 0).then_some(applied.ledger),
        ..event(kind, asked.id.to_string(), &fields)
    }
}

/// Feed keys: big-endian revision, so they sort in revision order.
pub fn key(revision: u64) -> [u8; 8] {
    revision.to_be_bytes()
}
