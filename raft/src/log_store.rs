//! The Raft log in RocksDB (column families `log` and `raft_meta`).
//!
//! Durability rules (openraft): `append` signals completion only after the
//! WriteBatch holding every entry of the call is fsynced — one batch and one
//! fsync per call, whatever the number of entries (group commit). `save_vote`
//! returns only once the vote is fsynced.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use strongbox_store::layout::u64_key;
use strongbox_store::{Cf, Db, DbError};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    /// Bytes appended since this process started (the snapshot policy
    /// weighs the log written against the image it would replace).
    appended_bytes: Arc<AtomicU64>,
    installs: PendingInstalls,
}

/// How often a purge waiting for a snapshot install looks again.
const INSTALL_POLL: Duration = Duration::from_millis(10);

/// Received snapshots handed to openraft and not yet installed, by the last
/// log index each covers (see `LogStore::purge`).
#[derive(Clone, Default)]
pub struct PendingInstalls(Arc<Mutex<Vec<u64>>>);

impl PendingInstalls {
    /// Counted from now until the guard drops (once openraft has answered
    /// the install, done or failed).
    pub fn start(&self, through: u64) -> PendingInstall {
        self.0.lock().expect("pending installs lock").push(through);
        PendingInstall { installs: self.clone(), through }
    }

    fn cover(&self, index: u64) -> bool {
        self.0.lock().expect("pending installs lock").iter().any(|t| *t >= index)
    }

    /// The state machine failed to install the image through `through`:
    /// it no longer covers a purge (which then fails rather than wait for
    /// an answer openraft cannot give while the purge holds it up).
    pub fn failed(&self, through: u64) {
        let mut v = self.0.lock().expect("pending installs lock");
        if let Some(i) = v.iter().position(|t| *t == through) {
            v.swap_remove(i);
        }
    }
}

pub struct PendingInstall {
    installs: PendingInstalls,
    through: u64,
}

impl Drop for PendingInstall {
    fn drop(&mut self) {
        self.installs.failed(self.through);
    }
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn read_err(e: DbError) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

impl LogStore {
    /// `installs`: the node's received snapshots in flight (the peer
    /// service counts them), which a purge must not overtake.
    pub fn new(db: Db, installs: PendingInstalls) -> Self {
        LogStore { db, appended_bytes: Arc::default(), installs }
    }

    fn applied_index(&self) -> Result<u64, StorageError> {
        let applied: Option<LogId> =
            self.db.get(Cf::SmMeta, crate::sm_store::META_APPLIED).map_err(read_err)?;
        Ok(applied.map_or(0, |l| l.index))
    }

    /// Waits until the state machine has applied `index`, while a received
    /// snapshot that covers it is being installed. openraft 0.9 purges a
    /// follower's log right after it hands such a snapshot to the state
    /// machine, without waiting for the install; purged then, the entries
    /// between the old applied index and the snapshot's are gone while the
    /// image is not yet in (nor its redo marker written), and a crash or a
    /// failed install leaves a node that can neither re-apply them nor
    /// start. An install that ends without reaching `index` fails the purge:
    /// the node stops with its log whole, and the leader sends the snapshot
    /// again after a restart.
    async fn wait_for_install(&self, index: u64) -> Result<(), StorageError> {
        let started = Instant::now();
        let mut waited = false;
        loop {
            if self.applied_index()? >= index {
                break;
            }
            if !self.installs.cover(index) {
                if waited {
                    return Err(io_err(
                        ErrorSubject::Logs,
                        ErrorVerb::Delete,
                        std::io::Error::other(format!(
                            "the snapshot through index {index} ended without being installed; \
                             the log is kept whole"
                        )),
                    ));
                }
                break;
            }
            if !waited {
                tracing::info!(index, "log purge waits for the snapshot install that covers it");
            }
            waited = true;
            tokio::time::sleep(INSTALL_POLL).await;
        }
        if waited {
            metrics::histogram!("strongbox_log_purge_install_wait_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// A counter of the bytes appended from now on, shared with this store.
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended_bytes.clone()
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.db.get(Cf::RaftMeta, KEY_LAST_PURGED).map_err(read_err)
    }

    /// Runs a durable (fsynced) write off the async runtime.
    async fn write_synced(
        &self,
        batch: strongbox_store::Batch,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let db = self.db.clone();
        let started = Instant::now();
        let res = tokio::task::spawn_blocking(move || db.write(batch, true))
            .await
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        metrics::histogram!("strongbox_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        res.map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i.saturating_add(1)),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let end_key = end.map(u64_key);
        let rows = self
            .db
            .scan::<Entry>(Cf::Log, &u64_key(start), end_key.as_ref().map(|k| &k[..]), usize::MAX)
            .map_err(read_err)?;
        Ok(rows.into_iter().map(|(_, e)| e).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.db.last_raw(Cf::Log).map_err(read_err)? {
            None => None,
            Some((_, raw)) => {
                let e: Entry = strongbox_store::db::decode(Cf::Log, &raw).map_err(read_err)?;
                Some(e.log_id)
            }
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut b = self.db.batch();
        b.put(Cf::RaftMeta, KEY_VOTE, vote);
        self.write_synced(b, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db.get(Cf::RaftMeta, KEY_VOTE).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: losing it only means re-applying from the snapshot or
        // applied index on restart, which is always safe.
        let mut b = self.db.batch();
        b.put(Cf::RaftMeta, KEY_COMMITTED, &committed);
        self.db.write(b, false).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.db.get::<Option<LogId>>(Cf::RaftMeta, KEY_COMMITTED).map_err(read_err)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = self.db.batch();
        let mut n = 0u64;
        for e in entries {
            b.put(Cf::Log, &u64_key(e.log_id.index), &e);
            n += 1;
        }
        metrics::histogram!("strongbox_log_append_entries").record(n as f64);
        self.appended_bytes.fetch_add(b.size_bytes() as u64, Ordering::Relaxed);
        let res = self.write_synced(b, ErrorSubject::Logs).await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut b = self.db.batch();
        b.delete_range(Cf::Log, &u64_key(log_id.index), &u64_key(u64::MAX));
        self.write_synced(b, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        assert!(self.last_purged()?.map_or(true, |p| p.index <= log_id.index), "purge only moves forward");
        self.wait_for_install(log_id.index).await?;
        // The state machine is written without the WAL: the entries go
        // only once a flush has made their applied state durable (a crash
        // would otherwise find them missing for the re-apply). Snapshot
        // builds flush, so this is rarely the one that does.
        if self.db.persisted_through() < log_id.index {
            let db = self.db.clone();
            let started = Instant::now();
            // Marked durable through what was applied before the flush, not
            // through the purge index: should a purge ever run ahead of
            // apply, the next one must still flush.
            let applied = self.applied_index()?;
            tokio::task::spawn_blocking(move || db.persist_unlogged_through(applied))
                .await
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            metrics::histogram!("strongbox_state_flush_seconds").record(started.elapsed().as_secs_f64());
        }
        // One atomic batch: the purge marker and the deletion land together.
        let mut b = self.db.batch();
        b.put(Cf::RaftMeta, KEY_LAST_PURGED, &log_id);
        b.delete_range(Cf::Log, &u64_key(0), &u64_key(log_id.index + 1));
        self.write_synced(b, ErrorSubject::Logs).await
    }
}
