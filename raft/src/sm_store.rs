//! openraft's state machine traits over `store::StateMachine`.
//!
//! Every `apply` call is one `store::ApplyBatch`: one RocksDB WriteBatch for
//! all its entries, carrying the applied log id and membership with the data,
//! so a restart resumes exactly where the last batch left off.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};
use strongbox_store::snapshot::{self, FrameReader, FrameWriter};
use strongbox_store::{Cf, DbError, Response, StateMachine};

use crate::log_store::PendingInstalls;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The state machine's applied log id, in `SmMeta`.
pub const META_APPLIED: &[u8] = b"raft_applied";
/// The state machine's membership, in `SmMeta`.
pub const META_MEMBERSHIP: &[u8] = b"raft_membership";
/// Apply batches of at least this many command bytes run off the async
/// worker (`block_in_place`): a ledger batch of 1,000 transfers is above it.
const APPLY_OFF_WORKER_BYTES: usize = crate::proposer::LARGE_COMMAND_BYTES;
/// Command bytes one apply batch (one WriteBatch) takes at most.
const APPLY_BATCH_BYTES_MAX: usize = 16 << 20;
/// The current snapshot: its meta and the image file's name.
const KEY_CURRENT_SNAPSHOT: &[u8] = b"current_file";
/// Written by builds before image files: meta and the whole image in one
/// value. Dropped when the first image file is recorded.
const KEY_OLD_SNAPSHOT: &[u8] = b"current";
/// The redo marker of an install in progress (see `snapshot::install`).
const KEY_INSTALLING: &[u8] = b"installing";
/// A build runs beside apply on the same cores: it sleeps three times as
/// long as it works, so it takes at most a quarter of one. Installs are not
/// paced: a node installing cannot serve until it is done.
const BUILD_IDLE_PER_WORK: u32 = 3;

/// A snapshot on disk: its meta and its image file in the snapshot dir.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    file: String,
}

#[derive(Clone)]
pub struct SmStore {
    sm: StateMachine,
    snapshot_seq: Arc<AtomicU64>,
    /// A build and an install never overlap: an install's batches are not
    /// one instant to export, and each records its file and cleans up.
    files: Arc<Mutex<()>>,
    /// Installs waiting for the files lock. A paced build holding it stops
    /// pacing for them: openraft's core waits for the install (its purge
    /// behind the image does), handling nothing else meanwhile, and a paced
    /// build of a large state takes a minute.
    installs_waiting: Arc<std::sync::atomic::AtomicUsize>,
    installs: PendingInstalls,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, std::io::Error::other(e.to_string()))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DbError {
    DbError::Format(format!("{what} {}: {e}", path.display()))
}

impl SmStore {
    /// One apply batch: every command of `entries` into one WriteBatch.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Vec<Response>>, StorageError> {
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

    /// A store as found: no recovery (tests of the storage traits).
    pub fn new(sm: StateMachine) -> Self {
        SmStore {
            sm,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            files: Arc::new(Mutex::new(())),
            installs_waiting: Arc::default(),
            installs: PendingInstalls::default(),
        }
    }

    /// Reports failed installs to the log store's purge (see
    /// `LogStore::purge`).
    pub fn with_installs(mut self, installs: PendingInstalls) -> Self {
        self.installs = installs;
        self
    }

    /// Opens the store for a node: finishes a snapshot install that a crash
    /// interrupted (the same image file again, before anything reads the
    /// state), and deletes image files nothing refers to.
    pub fn open(sm: StateMachine) -> Result<Self, DbError> {
        sm.check_state_version()?;
        let this = SmStore::new(sm);
        if let Some(p) = this.sm.db().get::<StoredSnapshot>(Cf::Snapshot, KEY_INSTALLING)? {
            tracing::warn!(snapshot = %p.meta.snapshot_id, "finishing a snapshot install a restart interrupted");
            this.install_recorded(&p)?;
        }
        this.convert_old_snapshot()?;
        this.cleanup(None)?;
        // Nothing unlogged was written yet: what is visible is on disk, so
        // the first purge after a restart need not flush.
        if let (Some(applied), _) = this.read_applied()? {
            this.sm.db().mark_persisted_through(applied.index);
        }
        Ok(this)
    }

    /// A data dir from before image files holds its snapshot as one value:
    /// written out once as an image file, so the snapshot behind a purged
    /// log stays available to lagging followers.
    fn convert_old_snapshot(&self) -> Result<(), DbError> {
        #[derive(Deserialize)]
        struct OldSnapshot {
            meta: SnapshotMeta,
            image: Vec<u8>,
        }
        #[derive(Deserialize)]
        struct OldImage {
            records: Vec<snapshot::Record>,
        }
        let Some(old) = self.sm.db().get::<OldSnapshot>(Cf::Snapshot, KEY_OLD_SNAPSHOT)? else {
            return Ok(());
        };
        let mut b = self.sm.db().batch();
        if self.current()?.is_none() {
            let image: OldImage = strongbox_store::db::decode(Cf::Snapshot, &old.image)?;
            let (name, _, ()) = self.write_image(false, |w| {
                for (cf, k, v) in image.records {
                    let cf =
                        Cf::from_u8(cf).ok_or_else(|| DbError::Format(format!("unknown family {cf}")))?;
                    w.push(cf, &k, v)?;
                }
                Ok(())
            })?;
            b.put(Cf::Snapshot, KEY_CURRENT_SNAPSHOT, &StoredSnapshot { meta: old.meta, file: name });
        }
        b.delete(Cf::Snapshot, KEY_OLD_SNAPSHOT);
        self.sm.db().write(b, true)
    }

    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), DbError> {
        let applied: Option<LogId> = self.sm.meta(META_APPLIED)?;
        let membership: StoredMembership = self.sm.meta(META_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    fn dir(&self) -> Result<PathBuf, DbError> {
        let dir = self.sm.db().snapshot_dir().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        Ok(dir)
    }

    /// Size of the current snapshot's image file (0: none yet).
    pub fn image_bytes(&self) -> Result<u64, DbError> {
        let Some(s) = self.current()? else { return Ok(0) };
        let path = self.sm.db().snapshot_dir().join(&s.file);
        Ok(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0))
    }

    fn current(&self) -> Result<Option<StoredSnapshot>, DbError> {
        self.sm.db().get(Cf::Snapshot, KEY_CURRENT_SNAPSHOT)
    }

    /// Writes a new image file through `fill` (temp name, fsync, rename,
    /// directory fsync); returns its name, the file (at offset 0) and what
    /// `fill` returned.
    fn write_image<T>(
        &self,
        paced: bool,
        fill: impl FnOnce(&mut FrameWriter) -> Result<T, DbError>,
    ) -> Result<(String, File, T), DbError> {
        let dir = self.dir()?;
        let name = snapshot::new_file_name();
        let tmp = dir.join(format!("{name}.tmp"));
        let mut w = FrameWriter::new(create_new(&tmp)?, self.sm.db().codec().clone())?;
        if paced {
            let waiting = self.installs_waiting.clone();
            w = w.paced(BUILD_IDLE_PER_WORK).hurry_when(move || waiting.load(Ordering::Relaxed) > 0);
        }
        let out = match fill(&mut w) {
            Ok(out) => out,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let file = w.finish()?;
        std::fs::rename(&tmp, dir.join(&name)).map_err(|e| io_err("renaming", &tmp, e))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io_err("syncing", &dir, e))?;
        Ok((name, file, out))
    }

    /// Gives a received image file (complete, fsynced) a name in the image
    /// directory without copying it: `linkat` of an O_TMPFILE, then the
    /// directory fsynced. None if the file cannot be linked (a file that was
    /// unlinked rather than created unnamed): the caller copies it.
    fn link_received(&self, file: &File) -> Result<Option<String>, DbError> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let dir = self.dir()?;
        let name = snapshot::new_file_name();
        let path = dir.join(&name);
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
        let to = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| DbError::Format(format!("{} holds a NUL byte", path.display())))?;
        // SAFETY: both paths are valid NUL-terminated strings for the call.
        let rc = unsafe {
            libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        };
        if rc != 0 {
            return Ok(None);
        }
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io_err("syncing", &dir, e))?;
        Ok(Some(name))
    }

    /// Deletes image files other than the current one, the one an install
    /// is redoing, and `keep`. Temp files too: only at start (`keep: None`),
    /// when no build or receive can be writing one.
    fn cleanup(&self, keep: Option<&str>) -> Result<(), DbError> {
        let dir = self.sm.db().snapshot_dir();
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        let current = self.current()?.map(|s| s.file);
        let installing = self.sm.db().get::<StoredSnapshot>(Cf::Snapshot, KEY_INSTALLING)?.map(|s| s.file);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let referenced = [current.as_deref(), installing.as_deref(), keep].contains(&Some(name.as_str()));
            let tmp_in_use = keep.is_some() && name.ends_with(".tmp");
            if snapshot::is_image_file_name(&name) && !referenced && !tmp_in_use {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Installs a recorded image (the redo marker is set) and makes it the
    /// current snapshot, in the install's final batch.
    fn install_recorded(&self, s: &StoredSnapshot) -> Result<(), DbError> {
        let path = self.sm.db().snapshot_dir().join(&s.file);
        let file = File::open(&path).map_err(|e| io_err("opening snapshot image", &path, e))?;
        let mut image = FrameReader::new(file, self.sm.db().codec().clone())?;
        self.sm.install(&mut image, |b| {
            b.delete(Cf::Snapshot, KEY_INSTALLING);
            b.delete(Cf::Snapshot, KEY_OLD_SNAPSHOT);
            b.put(Cf::Snapshot, KEY_CURRENT_SNAPSHOT, s);
        })?;
        // An image of a cluster that moved to a state version this build
        // does not apply: stop here rather than apply what follows by
        // other rules.
        self.sm.check_state_version()
    }

    fn build_blocking(&self) -> Result<Snapshot<TypeConfig>, DbError> {
        // Before the files lock (an install holding a use may wait for it).
        let _keys = self.sm.db().snapshot_gate().enter();
        // Not during an install: its batches are not one instant.
        let _files = self.files.lock().expect("snapshot files lock");
        // One RocksDB snapshot: data, applied log id and membership all
        // from the same instant, while apply keeps running.
        let (name, file, meta_records) = self.write_image(true, |w| snapshot::export(self.sm.db(), w))?;
        let last_log_id: Option<LogId> = meta_records.get(META_APPLIED)?;
        let last_membership: StoredMembership = meta_records.get(META_MEMBERSHIP)?.unwrap_or_default();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        // Openraft purges the log behind this image next; apply writes
        // unlogged, so its state up to here goes to disk first, here off
        // the Raft task rather than in the purge.
        if let Some(l) = &last_log_id {
            let started = Instant::now();
            self.sm.db().persist_unlogged_through(l.index)?;
            metrics::histogram!("strongbox_state_flush_seconds").record(started.elapsed().as_secs_f64());
        }
        // An install that finished meanwhile recorded a newer snapshot.
        let newer = self.current()?.is_some_and(|c| c.meta.last_log_id > meta.last_log_id);
        if !newer {
            let mut b = self.sm.db().batch();
            b.delete(Cf::Snapshot, KEY_OLD_SNAPSHOT);
            b.put(
                Cf::Snapshot,
                KEY_CURRENT_SNAPSHOT,
                &StoredSnapshot { meta: meta.clone(), file: name.clone() },
            );
            self.sm.db().write(b, true)?;
        }
        self.cleanup(Some(&name))?;
        metrics::counter!("strongbox_snapshots_built_total").increment(1);
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }

    /// The receive that handed us `received` holds a use of the snapshot
    /// gate until this returns, so its frames' keys stay while we copy.
    fn install_blocking(&self, meta: SnapshotMeta, received: File) -> Result<(), DbError> {
        self.installs_waiting.fetch_add(1, Ordering::Relaxed);
        let files = self.files.lock();
        self.installs_waiting.fetch_sub(1, Ordering::Relaxed);
        let _files = files.expect("snapshot files lock");
        let codec = self.sm.db().codec().clone();
        // The image needs a name the redo marker can point to. A received
        // image (an O_TMPFILE, sealed with our keys) is checked whole, then
        // linked into the directory as it is; anything else is copied.
        let dup = received.try_clone().map_err(|e| io_err("duplicating", Path::new("received image"), e))?;
        let checked = snapshot::read_meta(&mut FrameReader::new(dup, codec.clone())?)?;
        let (name, meta_records) = match self.link_received(&received)? {
            Some(name) => (name, checked),
            None => {
                let mut from = FrameReader::new(received, codec)?;
                let (name, _file, meta_records) = self.write_image(false, |w| {
                    let m = snapshot::copy(&mut from, w)?;
                    if !w.ended() {
                        return Err(DbError::Format("snapshot image without its end frame".into()));
                    }
                    Ok(m)
                })?;
                (name, meta_records)
            }
        };
        let image_applied: Option<LogId> = meta_records.get(META_APPLIED)?;
        if image_applied != meta.last_log_id {
            return Err(DbError::Format(format!(
                "snapshot image is at {image_applied:?} but its meta says {:?}",
                meta.last_log_id
            )));
        }
        let stored = StoredSnapshot { meta, file: name };
        let mut b = self.sm.db().batch();
        b.put(Cf::Snapshot, KEY_INSTALLING, &stored);
        self.sm.db().write(b, true)?;
        self.install_recorded(&stored)?;
        // The log behind the image is purged next, and needs no flush:
        // `install` flushed what apply had written unlogged before it, and
        // wrote the image itself logged, its last batch synced.
        if let Some(l) = &stored.meta.last_log_id {
            self.sm.db().mark_persisted_through(l.index);
        }
        self.cleanup(Some(&stored.file))?;
        metrics::counter!("strongbox_snapshots_installed_total").increment(1);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_blocking().map_err(|e| snap_err(ErrorVerb::Write, e)))
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
        // Bounded batches, each committed with its applied index: a restart
        // after a crash re-applies everything since the state was last
        // flushed (apply writes it unlogged), and a caller may hand over
        // many entries at once.
        let multi_thread =
            tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let mut responses = Vec::new();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut entries = entries.into_iter().peekable();
        while let Some(entry) = entries.next() {
            if let EntryPayload::Normal(cmds) = &entry.payload {
                chunk_bytes += cmds.iter().map(|c| c.size_bytes()).sum::<usize>();
            }
            chunk.push(entry);
            if chunk_bytes < APPLY_BATCH_BYTES_MAX && entries.peek().is_some() {
                continue;
            }
            let chunk = std::mem::take(&mut chunk);
            // A large batch (thousands of transfers) takes milliseconds: off
            // the worker, so this node's peer and client I/O go on meanwhile
            // (a node may have a single worker thread).
            let r = if chunk_bytes >= APPLY_OFF_WORKER_BYTES && multi_thread {
                tokio::task::block_in_place(|| self.apply_entries(chunk))
            } else {
                self.apply_entries(chunk)
            }?;
            responses.extend(r);
            chunk_bytes = 0;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// An unnamed file in the snapshot dir (deleted once closed). Our own
    /// peer service receives snapshots itself (`full_snapshot` streams
    /// frames); this serves openraft's generic path and its test suite.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let dir = self.dir().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let file = snapshot_receive_file(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let this = self.clone();
        let through = meta.last_log_id.map_or(0, |l| l.index);
        let meta = meta.clone();
        let res = tokio::task::spawn_blocking(move || {
            this.install_blocking(meta, received).map_err(|e| snap_err(ErrorVerb::Write, e))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))
        .and_then(|r| r);
        if res.is_err() {
            // The log purge waiting for this install (see `LogStore::purge`)
            // holds up openraft, which would otherwise hear of the failure.
            self.installs.failed(through);
        }
        res
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Without the files lock (a paced build holds it for minutes): a
        // build may record a newer image and delete this one between the
        // read and the open, and then the newer one is the answer. An error
        // here stops the node.
        let mut attempt = 0;
        loop {
            let Some(s) = self.current().map_err(|e| snap_err(ErrorVerb::Read, e))? else { return Ok(None) };
            let path = self.sm.db().snapshot_dir().join(&s.file);
            match tokio::fs::File::open(&path).await {
                Ok(file) => return Ok(Some(Snapshot { meta: s.meta, snapshot: Box::new(file) })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                Err(e) => return Err(snap_err(ErrorVerb::Read, io_err("opening snapshot image", &path, e))),
            }
        }
    }
}

/// A consistent image of the state machine for a backup: written to an
/// unnamed file (paced, as a snapshot build is) and read back frame by
/// frame, in plaintext, for the caller to seal under its own key. Not a
/// Raft snapshot: nothing is recorded and no log is purged behind it.
pub struct Export {
    pub applied: Option<LogId>,
    pub revision: u64,
    frames: FrameReader,
    /// No data key is retired while the file holds frames sealed with it.
    _keys: strongbox_store::snapshot_gate::Use,
}

impl Export {
    /// Blocking: it reads the whole state.
    /// `cancelled`: asked after each frame (the client has gone).
    pub fn start(
        sm: &StateMachine,
        cancelled: impl Fn() -> bool + Send + 'static,
    ) -> Result<Export, DbError> {
        let db = sm.db();
        let keys = db.snapshot_gate().enter();
        // An install replaces the state by batches: an export that saw part
        // of one would be a mix (refused here, not found out at restore).
        let installing = || DbError::Format("a snapshot install is running on this node; try again".into());
        let epoch = sm.install_epoch();
        if epoch % 2 == 1 {
            return Err(installing());
        }
        let dir = db.snapshot_dir().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        let mut w = FrameWriter::new(snapshot_receive_file(&dir)?, db.codec().clone())?
            .paced(BUILD_IDLE_PER_WORK)
            .cancel_when(cancelled);
        let meta = snapshot::export(db, &mut w)?;
        if sm.install_epoch() != epoch {
            return Err(installing());
        }
        let file = w.finish()?;
        let applied: Option<LogId> = meta.get(META_APPLIED)?;
        if applied.is_none() {
            return Err(DbError::Format("this node has applied nothing yet".into()));
        }
        Ok(Export {
            applied,
            revision: meta.get(strongbox_store::layout::sm_keys::REVISION)?.unwrap_or(0),
            frames: FrameReader::new(file, db.codec().clone())?,
            _keys: keys,
        })
    }

    /// The next frame (the end frame last); `None` after it. Blocking.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DbError> {
        self.frames.next_plain()
    }
}

/// A file that did not exist, open for writing and reading.
fn create_new(path: &Path) -> Result<File, DbError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err("creating", path, e))
}

/// A new unnamed file for receiving an image, so nothing is left behind
/// whatever happens to the transfer: an O_TMPFILE in `dir` (linkable once
/// complete, see `link_received`), or where the filesystem has none, a file
/// unlinked as soon as it is created.
pub fn snapshot_receive_file(dir: &Path) -> Result<File, DbError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(file) =
        OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir)
    {
        return Ok(file);
    }
    let path = dir.join(format!("receiving-{}", snapshot::new_file_name()));
    let file = create_new(&path)?;
    std::fs::remove_file(&path).map_err(|e| io_err("unlinking", &path, e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, RaftSnapshotBuilder};
    use strongbox_store::codec::Codec;
    use strongbox_store::Db;

    use super::*;

    fn open_db(dir: &Path) -> Db {
        Db::open(&dir.join("db"), Codec::plaintext()).expect("open db")
    }

    fn write(db: &Db, records: &[(Cf, &[u8], &str)], applied_index: Option<u64>) {
        let mut b = db.batch();
        for (cf, k, v) in records {
            b.put(*cf, k, &v.to_string());
        }
        if let Some(i) = applied_index {
            b.put(Cf::SmMeta, META_APPLIED, &LogId::new(CommittedLeaderId::new(1, 1), i));
        }
        db.write(b, true).unwrap();
    }

    fn get(db: &Db, cf: Cf, k: &[u8]) -> Option<String> {
        db.get(cf, k).unwrap()
    }

    /// A crash between the first and the last batch of an install leaves a
    /// partial state and the redo marker: the next start installs the same
    /// image again before anything reads the state.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_install_a_crash_interrupted_is_finished_at_start() {
        let da = tempfile::tempdir().unwrap();
        let a_db = open_db(da.path());
        write(&a_db, &[(Cf::Secrets, b"from-a", "a1"), (Cf::Users, b"user-a", "ua")], Some(7));
        let mut a = SmStore::new(StateMachine::new(a_db));
        let snap = a.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(7));

        let db_dir = tempfile::tempdir().unwrap();
        {
            let b_db = open_db(db_dir.path());
            write(&b_db, &[(Cf::Secrets, b"only-b", "b1")], Some(3));
            let b = SmStore::new(StateMachine::new(b_db.clone()));
            let received = snap.snapshot.into_std().await;
            let (name, _, _) = b
                .write_image(false, |w| {
                    let mut r = FrameReader::new(received, Codec::plaintext())?;
                    snapshot::copy(&mut r, w)
                })
                .unwrap();
            let stored = StoredSnapshot { meta: snap.meta.clone(), file: name };
            let mut batch = b_db.batch();
            batch.put(Cf::Snapshot, KEY_INSTALLING, &stored);
            b_db.write(batch, true).unwrap();
            // The crash: the old state emptied, part of the image written,
            // its position not yet.
            let mut batch = b_db.batch();
            batch.delete(Cf::Secrets, b"only-b");
            batch.delete(Cf::SmMeta, META_APPLIED);
            b_db.write(batch, true).unwrap();
            write(&b_db, &[(Cf::Secrets, b"from-a", "a1")], None);
        }

        let b = SmStore::open(StateMachine::new(open_db(db_dir.path()))).unwrap();
        let db = b.state_machine().db();
        assert_eq!(
            get(db, Cf::Users, b"user-a").as_deref(),
            Some("ua"),
            "the rest of the image is installed"
        );
        assert_eq!(get(db, Cf::Secrets, b"only-b"), None);
        assert_eq!(b.read_applied().unwrap().0.map(|l| l.index), Some(7));
        assert!(db.get::<StoredSnapshot>(Cf::Snapshot, KEY_INSTALLING).unwrap().is_none(), "marker cleared");
        let current = b.current().unwrap().expect("the installed image is the current snapshot");
        assert_eq!(current.meta, snap.meta);
        assert!(db.snapshot_dir().join(&current.file).exists());
    }

    /// Build, then install on another store: the image files left are the
    /// current ones only, and the installed state is the built one.
    #[tokio::test(flavor = "multi_thread")]
    async fn build_and_install_keep_only_the_current_image() {
        let da = tempfile::tempdir().unwrap();
        let a_db = open_db(da.path());
        write(&a_db, &[(Cf::Secrets, b"k", "v1")], Some(4));
        let mut a = SmStore::new(StateMachine::new(a_db.clone()));
        a.build_snapshot().await.unwrap();
        write(&a_db, &[(Cf::Secrets, b"k", "v2")], Some(5));
        let snap = a.build_snapshot().await.unwrap();
        let files = |db: &Db| std::fs::read_dir(db.snapshot_dir()).unwrap().count();
        assert_eq!(files(&a_db), 1, "the older image is deleted");

        let db_dir = tempfile::tempdir().unwrap();
        let mut b = SmStore::open(StateMachine::new(open_db(db_dir.path()))).unwrap();
        b.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        let db = b.state_machine().db().clone();
        assert_eq!(get(&db, Cf::Secrets, b"k").as_deref(), Some("v2"));
        assert_eq!(files(&db), 1);
        let current = b.get_current_snapshot().await.unwrap().expect("current snapshot");
        assert_eq!(current.meta, snap.meta);
    }

    /// A received image (streamed into an O_TMPFILE, as the peer service
    /// does) becomes the current image by a link, not a second copy; a file
    /// that cannot be linked (unlinked after creation) is copied instead.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_received_image_is_linked_not_copied() {
        use std::os::unix::fs::MetadataExt;
        let da = tempfile::tempdir().unwrap();
        let a_db = open_db(da.path());
        write(&a_db, &[(Cf::Secrets, b"k", "v1")], Some(4));
        let mut a = SmStore::new(StateMachine::new(a_db.clone()));
        let snap = a.build_snapshot().await.unwrap();
        let image = std::fs::read(a_db.snapshot_dir().join(a.current().unwrap().unwrap().file)).unwrap();

        let db_dir = tempfile::tempdir().unwrap();
        let mut b = SmStore::open(StateMachine::new(open_db(db_dir.path()))).unwrap();
        let db = b.state_machine().db().clone();
        let dir = b.dir().unwrap();
        let receive = |file: File| {
            let mut r = FrameReader::new(
                {
                    let tmp = da.path().join("image");
                    std::fs::write(&tmp, &image).unwrap();
                    File::open(&tmp).unwrap()
                },
                Codec::plaintext(),
            )
            .unwrap();
            let mut w = FrameWriter::new(file, Codec::plaintext()).unwrap();
            while let Some(plain) = r.next_plain().unwrap() {
                w.push_plain(&plain).unwrap();
            }
            w.finish().unwrap()
        };

        let received = receive(snapshot_receive_file(&dir).unwrap());
        let inode = received.metadata().unwrap().ino();
        b.install_snapshot(&snap.meta, Box::new(tokio::fs::File::from_std(received))).await.unwrap();
        let current = b.current().unwrap().expect("installed");
        assert_eq!(std::fs::metadata(dir.join(&current.file)).unwrap().ino(), inode, "linked, not copied");
        assert_eq!(get(&db, Cf::Secrets, b"k").as_deref(), Some("v1"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "one image file");

        let path = dir.join("unlinked");
        let unlinked = create_new(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let received = receive(unlinked);
        let inode = received.metadata().unwrap().ino();
        b.install_snapshot(&snap.meta, Box::new(tokio::fs::File::from_std(received))).await.unwrap();
        let current = b.current().unwrap().expect("installed");
        assert_ne!(std::fs::metadata(dir.join(&current.file)).unwrap().ino(), inode, "copied");
        assert_eq!(get(&db, Cf::Secrets, b"k").as_deref(), Some("v1"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "one image file");
    }

    /// A data dir written before image files: its snapshot (one value) is
    /// written out as an image file at start and stays the current one.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_kept_in_the_old_single_value_is_converted_at_start() {
        #[derive(Serialize)]
        struct OldImage {
            records: Vec<snapshot::Record>,
        }
        #[derive(Serialize)]
        struct OldSnapshot {
            meta: SnapshotMeta,
            image: Vec<u8>,
        }
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "2-9-0".into(),
        };
        let records = vec![(Cf::Secrets as u8, b"k".to_vec(), strongbox_store::db::encode(&"v".to_string()))];
        {
            let db = open_db(dir.path());
            let image = strongbox_store::db::encode(&OldImage { records });
            let mut b = db.batch();
            b.put(Cf::Snapshot, KEY_OLD_SNAPSHOT, &OldSnapshot { meta: meta.clone(), image });
            db.write(b, true).unwrap();
        }
        let mut store = SmStore::open(StateMachine::new(open_db(dir.path()))).unwrap();
        let current = store.get_current_snapshot().await.unwrap().expect("converted");
        assert_eq!(current.meta, meta);
        let file = current.snapshot.into_std().await;
        let mut r = FrameReader::new(file, Codec::plaintext()).unwrap();
        let got = r.next_records().unwrap().expect("one frame of records");
        assert_eq!(
            got,
            vec![(Cf::Secrets as u8, b"k".to_vec(), strongbox_store::db::encode(&"v".to_string()))]
        );
        let db = store.state_machine().db();
        assert!(db.get_raw(Cf::Snapshot, KEY_OLD_SNAPSHOT).unwrap().is_none(), "the old value is dropped");
    }
}
