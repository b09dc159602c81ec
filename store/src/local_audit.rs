//! This node's own audit log: the requests it answered without a command
//! reaching apply (reads, accepted or denied; requests refused before
//! proposing). Writes and auth events are in the replicated chain
//! (`audit`); this one is node-local, in its own column family, never
//! replicated and never in a snapshot.
//!
//! The same SHA-256 hash chain as the replicated one. Retention is by count:
//! the oldest records are dropped as new ones arrive, and the anchor (the
//! seq and hash of the last dropped record) is where verification starts.
//! Values pass the storage codec like everything else, so names and paths
//! in records are encrypted at rest.
//!
//! Keys: records at `0x00 ++ be(seq)`, the head and the anchor at `0x01 ++ name`.

use serde::{Deserialize, Serialize};

use crate::audit::{hash_unsealed, walk, Link, Linked, Verdict};
use crate::db::{Db, DbError};
use crate::layout::Cf;

/// Records one append takes at most (one WriteBatch, one WAL fsync).
pub const LOCAL_AUDIT_BATCH_MAX: usize = 1024;
/// Records one read returns at most.
pub const LOCAL_AUDIT_READ_MAX: usize = 1000;
/// Records kept by default; older ones are pruned.
pub const LOCAL_AUDIT_RETAIN_RECORDS_DEFAULT: u64 = 1_000_000;
/// Retention may not be smaller than a batch: the anchor is then always a
/// record already on disk when pruning reaches it.
pub const LOCAL_AUDIT_RETAIN_RECORDS_MIN: u64 = LOCAL_AUDIT_BATCH_MAX as u64;
/// Records pruned per append at most: more than a batch adds, so pruning
/// catches up after a retention change.
const PRUNE_PER_APPEND_MAX: u64 = 2 * LOCAL_AUDIT_BATCH_MAX as u64;

const HEAD: &[u8] = b"\x01head";
const ANCHOR: &[u8] = b"\x01anchor";

/// What a request handler knows of a request; the log adds seq, node and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub time_ms: u64,
    /// "user:alice", "client:ci", "token:unknown", or "anonymous" (no bearer).
    pub actor: String,
    /// The RPC ("secrets.get", ...).
    pub action: String,
    /// What it was about, as the permission table names it ("secrets:db/pass").
    pub resource: String,
    /// "ok" or the gRPC status code ("PermissionDenied", ...).
    pub outcome: String,
    pub request_id: String,
    /// The node's applied revision when it answered.
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAuditRecord {
    pub seq: u64,
    pub node: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub request_id: String,
    pub revision: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl Linked for LocalAuditRecord {
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
        hash_unsealed(&LocalAuditRecord { hash: [0; 32], ..self.clone() })
    }
}

pub fn key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The last record written.
pub fn head(db: &Db) -> Result<Link, DbError> {
    Ok(db.get(Cf::LocalAudit, HEAD)?.unwrap_or((0, [0; 32])))
}

/// The last record pruned: verification starts after it.
pub fn anchor(db: &Db) -> Result<Link, DbError> {
    Ok(db.get(Cf::LocalAudit, ANCHOR)?.unwrap_or((0, [0; 32])))
}

/// Records from `seq` on, in order, at most `limit`.
pub fn read(db: &Db, seq: u64, limit: usize) -> Result<Vec<LocalAuditRecord>, DbError> {
    let limit = limit.min(LOCAL_AUDIT_READ_MAX);
    Ok(db.scan(Cf::LocalAudit, &key(seq), Some(&[1]), limit)?.into_iter().map(|(_, r)| r).collect())
}

/// Walks the retained chain from the anchor to the head.
pub fn verify(db: &Db) -> Result<Verdict, DbError> {
    walk(anchor(db)?, head(db)?, |from| read(db, from, LOCAL_AUDIT_READ_MAX))
}

/// The single writer of a node's local chain.
pub struct LocalAuditLog {
    db: Db,
    node: u64,
    /// Fsync each append (else the WAL write reaches the OS, surviving a
    /// process crash but not a power loss, until the next synced write).
    fsync: bool,
    retain_records: u64,
    head: Link,
    anchor: Link,
}

impl LocalAuditLog {
    pub fn open(db: Db, node: u64, retain_records: u64, fsync: bool) -> Result<LocalAuditLog, DbError> {
        assert!(retain_records >= LOCAL_AUDIT_RETAIN_RECORDS_MIN, "retention below one batch");
        let (head, anchor) = (head(&db)?, anchor(&db)?);
        assert!(anchor.0 <= head.0, "local audit anchor {} past head {}", anchor.0, head.0);
        Ok(LocalAuditLog { db, node, fsync, retain_records, head, anchor })
    }

    pub fn head(&self) -> Link {
        self.head
    }

    /// Appends records for `entries`, in order, as one atomic write
    /// (fsynced unless configured off); prunes beyond retention in the same write. Returns the seq of
    /// the last one. On error nothing was written and the head is unchanged.
    pub fn append(&mut self, entries: Vec<LocalEntry>) -> Result<u64, DbError> {
        assert!(entries.len() <= LOCAL_AUDIT_BATCH_MAX, "local audit batch over its limit");
        let mut batch = self.db.batch();
        let mut head = self.head;
        for e in entries {
            let mut r = LocalAuditRecord {
                seq: head.0 + 1,
                node: self.node,
                time_ms: e.time_ms,
                actor: e.actor,
                action: e.action,
                resource: e.resource,
                outcome: e.outcome,
                request_id: e.request_id,
                revision: e.revision,
                prev_hash: head.1,
                hash: [0; 32],
            };
            r.hash = r.compute_hash();
            batch.put(Cf::LocalAudit, &key(r.seq), &r);
            head = (r.seq, r.hash);
        }
        let mut anchor = self.anchor;
        let excess = (head.0 - anchor.0).saturating_sub(self.retain_records);
        if excess > 0 {
            let last_pruned = anchor.0 + excess.min(PRUNE_PER_APPEND_MAX);
            // Retention is at least a batch, so that record is on disk.
            let rec = read(&self.db, last_pruned, 1)?
                .into_iter()
                .find(|r| r.seq == last_pruned)
                .ok_or(DbError::Missing { cf: Cf::LocalAudit.name(), what: "local audit record to prune" })?;
            batch.delete_range(Cf::LocalAudit, &key(anchor.0 + 1), &key(last_pruned + 1));
            anchor = (rec.seq, rec.hash);
            batch.put(Cf::LocalAudit, ANCHOR, &anchor);
        }
        batch.put(Cf::LocalAudit, HEAD, &head);
        self.db.write(batch, false)?;
        if self.fsync {
            self.db.sync_wal()?;
        }
        (self.head, self.anchor) = (head, anchor);
        Ok(head.0)
    }
}
