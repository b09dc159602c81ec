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

use crate::command::{Command, CommandError, ErrorCode, InitStateVersion, Op, Outcome, SetStateVersion};
use crate::db::encode;

/// Records one query returns at most.
pub const AUDIT_READ_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... in log order, gap-free.
    pub seq: u64,
    /// The command's time (ms since the epoch), stamped by its proposer.
    pub time_ms: u64,
    /// The node that received the request and proposed it.
    pub node: u64,
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

/// A record of a hash chain: the replicated one or a node's local one.
pub trait Linked {
    fn seq(&self) -> u64;
    fn prev_hash(&self) -> [u8; 32];
    fn hash(&self) -> [u8; 32];
    /// The hash the record must carry: over its content and its link.
    fn compute_hash(&self) -> [u8; 32];
}

/// SHA-256 of a record's encoding with its own hash zeroed.
pub fn hash_unsealed<T: Serialize>(unsealed: &T) -> [u8; 32] {
    Sha256::digest(encode(unsealed)).into()
}

impl Linked for AuditRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev_hash(&self) -> [u8; 32] {
        self.prev_hash
    }
    fn hash(&self) -> [u8; 32] {
        self.hash
    }
    fn compute_hash(&self) -> [u8; 32] {
        hash_unsealed(&AuditRecord { hash: [0; 32], ..self.clone() })
    }
}

/// What a record is about, whatever the outcome.
/// The operation as the audit trail names it: the command's name, but for
/// the direction of a role assignment and of an enable flag (see
/// `AUDIT_ACTIONS_NAME_THE_DIRECTION`).
pub fn action(op: &Op, state_version: u32) -> &'static str {
    if state_version >= crate::command::set_state_version::AUDIT_ACTIONS_NAME_THE_DIRECTION {
        match op {
            Op::AssignRole(c) if !c.assign => return "unassign_role",
            Op::SetEnabled(c) if c.enabled => return "enable_principal",
            Op::SetEnabled(_) => return "disable_principal",
            _ => {}
        }
    }
    op.name()
}

/// The actor and outcome a record shows: a login's token is granted by the
/// node but is the principal's act, and a failed login's record is of a
/// refusal (see `LOGINS_AUDITED_AS_THEIR_PRINCIPAL`).
fn attributed(op: &Op, actor: String, outcome: String, state_version: u32) -> (String, String) {
    if state_version < crate::command::set_state_version::LOGINS_AUDITED_AS_THEIR_PRINCIPAL {
        return (actor, outcome);
    }
    match op {
        Op::IssueToken(c) if actor == "node" => (c.principal.to_string(), outcome),
        Op::RecordLoginFailure(_) if outcome == "ok" => (actor, format!("{:?}", ErrorCode::Unauthenticated)),
        _ => (actor, outcome),
    }
}

pub fn resource(op: &Op) -> String {
    match op {
        Op::PutSecret(c) => format!("secrets:{}", c.path),
        Op::DeleteSecret(c) => format!("secrets:{}", c.path),
        Op::UndeleteSecret(c) => format!("secrets:{}", c.path),
        Op::DestroySecretVersions(c) => format!("secrets:{}", c.path),
        Op::DeleteSecretVersions(c) => format!("secrets:{}", c.path),
        Op::UndeleteSecretVersions(c) => format!("secrets:{}", c.path),
        Op::PurgeSecret(c) => format!("secrets:{}", c.path),
        Op::UpdateSecretMetadata(c) => format!("secrets:{}", c.path),
        Op::Bootstrap(c) => format!("user:{}", c.username),
        Op::CreateUser(c) => format!("user:{}", c.username),
        Op::SetPassword(c) => format!("user:{}", c.username),
        Op::UnlockUser(c) => format!("user:{}", c.username),
        Op::RecordLoginFailure(c) => format!("user:{}", c.username),
        Op::CreateClient(c) => format!("client:{}", c.client_id),
        Op::RotateClientSecret(c) => format!("client:{}", c.client_id),
        Op::DeletePrincipal(c) => c.principal.to_string(),
        Op::SetEnabled(c) => c.principal.to_string(),
        Op::IssueToken(c) => c.principal.to_string(),
        Op::AssignRole(c) => format!("{} role:{}", c.principal, c.role),
        Op::PutRole(c) => format!("role:{}", c.name),
        Op::DeleteRole(c) => format!("role:{}", c.name),
        Op::CreateAccounts(c) => ledgers(c.accounts.iter().map(|a| a.ledger)),
        Op::CreateTransfers(c) => ledgers(c.transfers.iter().map(|t| t.ledger)),
        Op::SetStateVersion(SetStateVersion { version })
        | Op::InitStateVersion(InitStateVersion { version }) => format!("cluster:state_version={version}"),
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

/// The next record of the chain, and its encoding.
pub fn seal(
    prev: (u64, [u8; 32]),
    cmd: &Command,
    actor: String,
    outcome: String,
    revision: u64,
    state_version: u32,
) -> (AuditRecord, Vec<u8>) {
    let (actor, outcome) = attributed(&cmd.op, actor, outcome, state_version);
    let mut r = AuditRecord {
        seq: prev.0 + 1,
        time_ms: cmd.time_ms,
        node: cmd.node,
        actor,
        action: action(&cmd.op, state_version).to_string(),
        resource: resource(&cmd.op),
        outcome,
        request_id: cmd.request_id.clone(),
        revision,
        prev_hash: prev.1,
        hash: [0; 32],
    };
    // One encoding serves the hash and the record: the hash is the last
    // field, 32 raw bytes in postcard, zero while it is computed.
    let mut encoded = encode(&r);
    let at = encoded.len() - 32;
    assert_eq!(encoded[at..], [0; 32], "the hash is the record's last 32 bytes");
    r.hash = Sha256::digest(&encoded).into();
    encoded[at..].copy_from_slice(&r.hash);
    (r, encoded)
}

/// The first broken link of a run of consecutive records, given the record
/// before them (seq 0 and a zero hash for the start of the chain).
pub fn first_broken<R: Linked>(prev: (u64, [u8; 32]), records: &[R]) -> Option<(u64, String)> {
    let (mut seq, mut hash) = prev;
    for r in records {
        if r.seq() != seq + 1 {
            return Some((seq + 1, format!("record {} missing (found {} next)", seq + 1, r.seq())));
        }
        if r.prev_hash() != hash {
            return Some((r.seq(), "does not link to the record before it".into()));
        }
        if r.compute_hash() != r.hash() {
            return Some((r.seq(), "content does not match its hash (edited)".into()));
        }
        (seq, hash) = (r.seq(), r.hash());
    }
    None
}

/// (seq, hash) of a chain position; (0, zeros) is the start.
pub type Link = (u64, [u8; 32]);

/// What walking a chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Records that verified before the first broken one (or all of them).
    pub checked: u64,
    /// The first record missing, edited or unlinked, and why.
    pub broken: Option<(u64, String)>,
}

/// Walks a chain from `start` (the position before its first record) to
/// `head` (its last, as its metadata records it), reading chunks in order
/// with `read(from_seq)`. Blocking: callers on a runtime use spawn_blocking.
pub fn walk<R: Linked>(
    start: Link,
    head: Link,
    mut read: impl FnMut(u64) -> Result<Vec<R>, crate::DbError>,
) -> Result<Verdict, crate::DbError> {
    let (mut prev, mut checked) = (start, 0u64);
    loop {
        let chunk = read(prev.0 + 1)?;
        if chunk.is_empty() {
            let broken = (prev != head).then(|| {
                (prev.0 + 1, format!("the chain ends at {} but its head is record {}", prev.0, head.0))
            });
            return Ok(Verdict { checked, broken });
        }
        if let Some(b) = first_broken(prev, &chunk) {
            checked += b.0.saturating_sub(prev.0 + 1);
            return Ok(Verdict { checked, broken: Some(b) });
        }
        checked += chunk.len() as u64;
        let last = chunk.last().expect("not empty");
        prev = (last.seq(), last.hash());
    }
}
