//! The replicated audit trail: one record per command that reaches apply,
//! accepted or refused (denied writes, failed logins, token grants and
//! revocations included), in log order, identical on every node.
//!
//! Records are hash-chained: each holds the SHA-256 of its predecessor and
//! its own hash covers its content and that link, so an edited, dropped,
//! inserted or reordered record breaks the chain at that point (`verify`).
//! Sensitive inputs never appear: no secret value, password, hash or token.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{Command, CommandError, Op, Outcome};
use crate::db::encode;

/// Records one query returns at most.
pub const AUDIT_READ_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... in log order, gap-free.
    pub seq: u64,
    /// The command's time (ms since the epoch), stamped by its proposer.
    pub time_ms: u64,
    /// "user:alice", "client:ci", "node", or "token:unknown" when the bearer
    /// did not resolve.
    pub actor: String,
    /// The operation ("put_secret", "issue_token", ...).
    pub action: String,
    /// What it was about (a path, a name, a principal, a ledger).
    pub resource: String,
    /// "ok", "deduplicated", or the refusal's code ("PermissionDenied", ...).
    pub outcome: String,
    pub request_id: String,
    /// The cluster revision after the command.
    pub revision: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// The hash a record must carry: over its content and its link.
    pub fn compute_hash(&self) -> [u8; 32] {
        let unsealed = AuditRecord { hash: [0; 32], ..self.clone() };
        Sha256::digest(encode(&unsealed)).into()
    }
}

/// What a record is about, whatever the outcome.
pub fn resource(op: &Op) -> String {
    match op {
        Op::PutSecret(c) => format!("secrets:{}", c.path),
        Op::DeleteSecret(c) => format!("secrets:{}", c.path),
        Op::DestroySecretVersions(c) => format!("secrets:{}", c.path),
        Op::Bootstrap(c) => format!("user:{}", c.username),
        Op::CreateUser(c) => format!("user:{}", c.username),
        Op::SetPassword(c) => format!("user:{}", c.username),
        Op::UnlockUser(c) => format!("user:{}", c.username),
        Op::RecordLoginFailure(c) => format!("user:{}", c.username),
        Op::CreateClient(c) => format!("client:{}", c.client_id),
        Op::DeletePrincipal(c) => c.principal.to_string(),
        Op::SetEnabled(c) => c.principal.to_string(),
        Op::IssueToken(c) => c.principal.to_string(),
        Op::AssignRole(c) => format!("{} role:{}", c.principal, c.role),
        Op::PutRole(c) => format!("role:{}", c.name),
        Op::DeleteRole(c) => format!("role:{}", c.name),
        Op::CreateAccounts(c) => ledgers(c.accounts.iter().map(|a| a.ledger)),
        Op::CreateTransfers(c) => ledgers(c.transfers.iter().map(|t| t.ledger)),
        Op::ChangePassword(_) | Op::RenewToken(_) | Op::RevokeToken(_) | Op::ExpirePendingTransfers(_) => {
            String::new()
        }
    }
}

fn ledgers(ids: impl Iterator<Item = u32>) -> String {
    let set: std::collections::BTreeSet<u32> = ids.filter(|l| *l != 0).collect();
    set.iter().map(|l| format!("ledgers:{l}")).collect::<Vec<_>>().join(",")
}

pub fn outcome(result: &Result<Outcome, CommandError>, deduplicated: bool) -> String {
    match (result, deduplicated) {
        (_, true) => "deduplicated".into(),
        (Ok(_), false) => "ok".into(),
        (Err(e), false) => format!("{:?}", e.code),
    }
}

/// The next record of the chain.
pub fn seal(
    prev: (u64, [u8; 32]),
    cmd: &Command,
    actor: String,
    outcome: String,
    revision: u64,
) -> AuditRecord {
    let mut r = AuditRecord {
        seq: prev.0 + 1,
        time_ms: cmd.time_ms,
        actor,
        action: cmd.op.name().to_string(),
        resource: resource(&cmd.op),
        outcome,
        request_id: cmd.request_id.clone(),
        revision,
        prev_hash: prev.1,
        hash: [0; 32],
    };
    r.hash = r.compute_hash();
    r
}

/// The first broken link of a run of consecutive records, given the record
/// before them (seq 0 and a zero hash for the start of the chain).
pub fn first_broken(prev: (u64, [u8; 32]), records: &[AuditRecord]) -> Option<(u64, String)> {
    let (mut seq, mut hash) = prev;
    for r in records {
        if r.seq != seq + 1 {
            return Some((seq + 1, format!("record {} missing (found {} next)", seq + 1, r.seq)));
        }
        if r.prev_hash != hash {
            return Some((r.seq, "does not link to the record before it".into()));
        }
        if r.compute_hash() != r.hash {
            return Some((r.seq, "content does not match its hash (edited)".into()));
        }
        (seq, hash) = (r.seq, r.hash);
    }
    None
}
