//! openraft's state machine traits over `store::StateMachine`.
//!
//! Every `apply` call is one `store::ApplyBatch`: one RocksDB WriteBatch for
//! all its entries, carrying the applied log id and membership with the data,
//! so a restart resumes exactly where the last batch left off.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};
use strongbox_store::snapshot::Image;
use strongbox_store::{Cf, DbError, Response, StateMachine};

use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const META_APPLIED: &[u8] = b"raft_applied";
const META_MEMBERSHIP: &[u8] = b"raft_membership";
const KEY_CURRENT_SNAPSHOT: &[u8] = b"current";

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    image: Vec<u8>,
}

#[derive(Clone)]
pub struct SmStore {
    sm: StateMachine,
    snapshot_seq: Arc<AtomicU64>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, std::io::Error::other(e.to_string()))
}

impl SmStore {
    pub fn new(sm: StateMachine) -> Self {
        SmStore { sm, snapshot_seq: Arc::new(AtomicU64::new(0)) }
    }

    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), DbError> {
        let applied: Option<LogId> = self.sm.meta(META_APPLIED)?;
        let membership: StoredMembership = self.sm.meta(META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    fn save_current_snapshot(&self, stored: &StoredSnapshot) -> Result<(), DbError> {
        let mut b = self.sm.db().batch();
        b.put(Cf::Snapshot, KEY_CURRENT_SNAPSHOT, stored);
        self.sm.db().write(b, true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // One RocksDB snapshot: data, applied log id and membership all
            // from the same instant, while apply keeps running.
            let image = Image::export(this.sm.db()).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let last_log_id: Option<LogId> =
                image.meta(META_APPLIED).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let last_membership: StoredMembership =
                image.meta(META_MEMBERSHIP).map_err(|e| snap_err(ErrorVerb::Read, e))?.unwrap_or_default();
            let seq = this.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &last_log_id {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
            let stored = StoredSnapshot { meta: meta.clone(), image: image.to_bytes() };
            this.save_current_snapshot(&stored).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            metrics::counter!("strongbox_snapshots_built_total").increment(1);
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.image)) })
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = SmStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied().map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (mut applied, mut membership) = self.read_applied().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let mut batch = self.sm.begin().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let mut responses = Vec::new();
        for entry in entries {
            // Invariant: the applied index only grows, one entry at a time.
            assert!(
                applied.map_or(true, |a| a.index < entry.log_id.index),
                "apply out of order: applied {applied:?}, entry {}",
                entry.log_id
            );
            applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(cmds) => cmds
                    .iter()
                    .map(|cmd| batch.apply(cmd))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| sm_err(ErrorVerb::Write, e))?,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Vec::new()
                }
            };
            responses.push(response);
        }
        if responses.is_empty() {
            return Ok(responses);
        }
        // Stored as a bare LogId (never an Option) so readers decode one type.
        if let Some(applied) = &applied {
            batch.put_meta(META_APPLIED, applied);
        }
        batch.put_meta(META_MEMBERSHIP, &membership);
        let revision = batch.revision();
        batch.commit().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        metrics::gauge!("strongbox_revision").set(revision as f64);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let image = Image::from_bytes(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let image_applied: Option<LogId> =
                image.meta(META_APPLIED).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            if image_applied != meta.last_log_id {
                return Err(snap_err(
                    ErrorVerb::Read,
                    format!(
                        "snapshot image is at {image_applied:?} but its meta says {:?}",
                        meta.last_log_id
                    ),
                ));
            }
            // Atomic: the old state machine is replaced in one WriteBatch.
            this.sm.install(&image).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            this.save_current_snapshot(&StoredSnapshot { meta, image: bytes })
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            metrics::counter!("strongbox_snapshots_installed_total").increment(1);
            Ok(())
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored: Option<StoredSnapshot> =
            self.sm.db().get(Cf::Snapshot, KEY_CURRENT_SNAPSHOT).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.image)) }))
    }
}
