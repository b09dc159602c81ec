//! A thin wrapper around RocksDB that forces every value through the codec
//! and every record through one serialisation (postcard). The raw handle never
//! leaves this module.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::snapshot_gate::SnapshotGate;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, CodecError};
use crate::layout::Cf;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("undecodable record in column family {cf}: {reason}")]
    Decode { cf: &'static str, reason: String },
    #[error("missing record in column family {cf}: {what}")]
    Missing { cf: &'static str, what: &'static str },
    #[error("{0}")]
    Format(String),
}

struct Inner {
    db: DB,
    codec: Codec,
    /// Where snapshot image files live: `<database dir>.snapshots`.
    snapshot_dir: std::path::PathBuf,
    /// Serialises writers with the re-encryption pass, so a value it
    /// re-seals can never overwrite a newer one.
    write_lock: std::sync::Mutex<()>,
    /// Image work against key retirement (see `snapshot_gate`).
    snapshot_gate: Arc<SnapshotGate>,
    /// Per family of `FLOOR_CFS`: a key below which the committed state
    /// holds no record (see `floor`). None: scan from the start.
    floors: std::sync::Mutex<[Option<Vec<u8>>; Cf::ALL.len()]>,
    /// See `persist_unlogged_through`.
    persisted_through: AtomicU64,
    /// Batches open (created, not yet written or dropped), by the phase
    /// they were opened in (see `wait_for_open_batches`).
    batch_phase: std::sync::atomic::AtomicUsize,
    batches_open: [AtomicU64; 2],
}

/// Families apply prunes from the low end (their keys begin with a time)
/// and scans from the start every batch. Pruning leaves a tombstone per
/// record, in the memtable and the SST files until compaction, and a scan
/// from the start steps over all of them: after the dedup window had
/// passed under load, that scan cost more than the rest of apply together
/// and throughput fell by half. Scans start at the family's floor instead.
pub const FLOOR_CFS: [Cf; 2] = [Cf::TokensByExpiry, Cf::PendingExpiry];

/// Families written at random places (an account's key, an account's
/// entries) but in order within a 16-byte prefix: an account's entries come
/// in timestamp order, its new versions one after the other. RocksDB keeps
/// an insert position per prefix in the memtable, so an insert starts next
/// to the prefix's last one instead of searching the whole skiplist from the
/// top: the memtable search was the largest single cost of a transfer's
/// apply. Reads are unaffected (this is not a read-side prefix extractor).
const INSERT_HINT_PREFIX_CFS: [Cf; 3] = [Cf::Accounts, Cf::AccountTransfers, Cf::AccountHistory];

/// Families apply writes but never probes for a key that may be missing
/// (appended in order, scanned, or read through the account cache): a
/// memtable bloom filter there costs a few cache misses per insert and
/// saves nothing.
const WRITTEN_NOT_PROBED_CFS: [Cf; 7] = [
    Cf::Audit,
    Cf::LocalAudit,
    Cf::Feed,
    Cf::Accounts,
    Cf::AccountTransfers,
    Cf::AccountHistory,
    Cf::PendingExpiry,
];

/// WAL kept at most, across all families (see `Db::open`).
pub const WAL_BYTES_MAX: u64 = 256 << 20;
/// Memtable bytes held across all families before RocksDB flushes them
/// (all at once, see `Db::open`).
pub const UNLOGGED_BYTES_MAX: usize = 256 << 20;
/// Bytes a flush or a compaction writes between two writebacks of its file.
const WRITEBACK_BYTES: u64 = 1 << 20;

fn cf_base_options(cf: Cf) -> Result<Options, DbError> {
    let mut o = Options::default();
    if INSERT_HINT_PREFIX_CFS.contains(&cf) {
        return Ok(
            o.get_options_from_string("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.16")?
        );
    }
    Ok(o)
}

/// A shared handle to the node's database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl Db {
    pub fn open(path: &Path, codec: Codec) -> Result<Db, DbError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        // Bounded background work on a 2-core box.
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // The WAL is shared by every family; a file can go only once every
        // family with data in it has flushed. Families written rarely (users,
        // roles) would otherwise pin gigabytes of WAL, all replayed at the
        // next open. Past this total, RocksDB flushes the families that hold
        // the oldest file.
        opts.set_max_total_wal_size(WAL_BYTES_MAX);
        // Write back flushes and compactions as they go instead of in one
        // fsync per finished file, which can hold the log's own fsync behind
        // tens of megabytes of other dirty pages.
        opts.set_bytes_per_sync(WRITEBACK_BYTES);
        // Apply is the only big writer, and the insert hints below work only
        // for writes that are not inserted concurrently.
        opts.set_allow_concurrent_memtable_write(false);
        // The state machine's families are written without the WAL (see
        // `write_unlogged`): a flush must then take every family at the same
        // sequence number, or a restart could find one family ahead of the
        // applied index kept in another.
        opts.set_atomic_flush(true);
        // Bounds what a crash can lose of the state machine, and so what a
        // restart re-applies from the log, whatever the families' sizes.
        opts.set_db_write_buffer_size(UNLOGGED_BYTES_MAX);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = cf_base_options(*cf)?;
            o.set_compression_type(rocksdb::DBCompressionType::None);
            if *cf != Cf::Log {
                // Most point lookups in apply miss (a new request id, a new
                // path): bloom filters answer those without searching the
                // memtable skiplist or reading SST blocks.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                o.set_block_based_table_factory(&table);
                if !WRITTEN_NOT_PROBED_CFS.contains(cf) {
                    o.set_memtable_whole_key_filtering(true);
                    o.set_memtable_prefix_bloom_ratio(0.05);
                }
            }
            Ok::<_, DbError>(ColumnFamilyDescriptor::new(cf.name(), o))
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs.collect::<Result<Vec<_>, _>>()?)?;
        let snapshot_dir = path.with_extension("snapshots");
        let db = Db {
            inner: Arc::new(Inner {
                db,
                codec,
                snapshot_dir,
                write_lock: std::sync::Mutex::new(()),
                snapshot_gate: Arc::default(),
                floors: Default::default(),
                persisted_through: AtomicU64::new(0),
                batch_phase: Default::default(),
                batches_open: Default::default(),
            }),
        };
        db.check_format(path)?;
        Ok(db)
    }

    /// Records the layout version in a new database; refuses one written in
    /// another layout (nothing is changed then).
    fn check_format(&self, path: &Path) -> Result<(), DbError> {
        use crate::layout::{FORMAT_KEY, FORMAT_VERSION};
        match self.get::<u32>(Cf::RaftMeta, FORMAT_KEY)? {
            Some(v) if v == FORMAT_VERSION => Ok(()),
            Some(v @ (2 | 3)) => {
                let requests = if v == 2 { crate::requests::migrate_layout_2(self)? } else { 0 };
                let feed = crate::feed::migrate_layout_3(self)?;
                let mut b = self.batch();
                b.put(Cf::RaftMeta, FORMAT_KEY, &FORMAT_VERSION);
                self.write(b, true)?;
                tracing::info!(path = %path.display(), requests, feed, "upgraded the data directory from layout {v}");
                Ok(())
            }
            Some(v) => Err(DbError::Format(format!(
                "{} holds data in layout {v}; this build reads layout {FORMAT_VERSION}",
                path.display()
            ))),
            None => {
                let pristine = Cf::ALL.iter().all(|cf| {
                    self.inner.db.iterator_cf(self.handle(*cf), IteratorMode::Start).next().is_none()
                });
                if !pristine {
                    return Err(DbError::Format(format!(
                        "{} was written by an older strongbox (layout 1: plaintext names in keys); \
                         this build reads layout {FORMAT_VERSION}. Start from an empty data dir \
                         (strongbox dev --fresh) and re-create the data",
                        path.display()
                    )));
                }
                let mut b = self.batch();
                b.put(Cf::RaftMeta, FORMAT_KEY, &FORMAT_VERSION);
                self.write(b, true)
            }
        }
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every Cf is created at open: a missing handle is a programming error.
        self.inner.db.cf_handle(cf.name()).expect("column family created at open")
    }

    /// The directory of this database's snapshot image files (created on
    /// first use by the Raft layer).
    pub fn snapshot_dir(&self) -> &Path {
        &self.inner.snapshot_dir
    }

    /// Held by image work (build, send, receive, install) so that no data
    /// key is retired under it; taken by the re-encryption pass to retire.
    pub fn snapshot_gate(&self) -> &Arc<SnapshotGate> {
        &self.inner.snapshot_gate
    }

    pub fn codec(&self) -> &Codec {
        &self.inner.codec
    }

    pub fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.inner.db.get_pinned_cf(self.handle(cf), key)? {
            None => Ok(None),
            Some(sealed) => Ok(Some(self.inner.codec.open(cf, key, &sealed)?)),
        }
    }

    /// Whether the database holds `key`, without opening its value.
    pub fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool, DbError> {
        Ok(self.inner.db.get_pinned_cf(self.handle(cf), key)?.is_some())
    }

    /// Of sorted, distinct `keys`, those the database does not hold, in
    /// one batched lookup (one pass over the memtables and each file's
    /// filter instead of a full lookup per key).
    pub(crate) fn absent<K: AsRef<[u8]>>(&self, cf: Cf, keys: &[K]) -> Result<Vec<bool>, DbError> {
        let found = self.inner.db.batched_multi_get_cf(self.handle(cf), keys.iter(), true);
        found.into_iter().map(|r| Ok(r?.is_none())).collect()
    }

    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        match self.get_raw(cf, key)? {
            None => Ok(None),
            Some(plain) => Ok(Some(decode(cf, &plain)?)),
        }
    }

    /// Several records as of one point in time (a RocksDB snapshot): a
    /// reader never sees half of an applied batch.
    pub fn get_many<T: DeserializeOwned>(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<T>>, DbError> {
        let snap = self.inner.db.snapshot();
        keys.iter()
            .map(|k| match snap.get_cf(self.handle(cf), k)? {
                None => Ok(None),
                Some(v) => Ok(Some(decode(cf, &self.inner.codec.open(cf, k, &v)?)?)),
            })
            .collect()
    }

    /// A point-in-time view (a RocksDB snapshot) for reads that must not
    /// see an apply batch half-way, such as a token's resolution (token,
    /// principal, roles).
    pub fn view(&self) -> DbView<'_> {
        DbView { db: self, snap: self.inner.db.snapshot() }
    }

    /// Records with `from <= key < to` (or to the end), in key order, at most `limit`.
    pub fn scan_raw(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DbError> {
        self.scan_raw_within(cf, from, to, limit, usize::MAX)
    }

    /// As `scan_raw`, also stopping once the values read reach `bytes_max`
    /// (the record that crosses it included, so a read always progresses).
    pub fn scan_raw_within(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DbError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // The floor is read before the iterator is made: raised only after
        // a write, it never hides a record the iterator's view still holds.
        let from = match self.floor(cf) {
            Some(floor) if floor.as_slice() > from => floor,
            _ => from.to_vec(),
        };
        // With an end, RocksDB stops there: without it, an iterator steps
        // over every deleted key past the end until it finds a live one
        // (a purged folder's run of tombstones, for each scan beside it).
        let mut ro = rocksdb::ReadOptions::default();
        if let Some(to) = to {
            ro.set_iterate_upper_bound(to.to_vec());
        }
        let iter =
            self.inner.db.iterator_cf_opt(self.handle(cf), ro, IteratorMode::From(&from, Direction::Forward));
        for item in iter {
            if out.len() >= limit || bytes >= bytes_max {
                break;
            }
            let (k, v) = item?;
            if let Some(to) = to {
                if &*k >= to {
                    break;
                }
            }
            let plain = self.inner.codec.open(cf, &k, &v)?;
            bytes = bytes.saturating_add(plain.len());
            out.push((k.into_vec(), plain));
        }
        Ok(out)
    }

    /// Records with `from <= key < to`, in reverse key order, at most `limit`.
    pub fn scan_rev_raw(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DbError> {
        let mut out = Vec::new();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(from.to_vec());
        ro.set_iterate_upper_bound(to.to_vec());
        let iter = self.inner.db.iterator_cf_opt(self.handle(cf), ro, IteratorMode::End);
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let plain = self.inner.codec.open(cf, &k, &v)?;
            out.push((k.into_vec(), plain));
        }
        Ok(out)
    }

    pub fn scan<T: DeserializeOwned>(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, DbError> {
        self.scan_raw(cf, from, to, limit)?.into_iter().map(|(k, v)| Ok((k, decode(cf, &v)?))).collect()
    }

    /// The last record of a column family, if any.
    pub fn last_raw(&self, cf: Cf) -> Result<Option<(Vec<u8>, Vec<u8>)>, DbError> {
        let mut iter = self.inner.db.iterator_cf(self.handle(cf), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item?;
                let plain = self.inner.codec.open(cf, &k, &v)?;
                Ok(Some((k.into_vec(), plain)))
            }
        }
    }

    /// A key of `cf` (one of `FLOOR_CFS`) below which the committed state
    /// holds no record; None for other families and when unknown.
    pub fn floor(&self, cf: Cf) -> Option<Vec<u8>> {
        self.inner.floors.lock().expect("floors lock")[cf as usize].clone()
    }

    /// Before a write that puts `key` into `cf`: a record below the floor
    /// lowers it (apply's time-keyed families never do that, but a wrong
    /// floor would hide records, so it is not assumed).
    pub fn lower_floor(&self, cf: Cf, key: &[u8]) {
        let mut floors = self.inner.floors.lock().expect("floors lock");
        if let Some(floor) = &mut floors[cf as usize] {
            if key < floor.as_slice() {
                *floor = key.to_vec();
            }
        }
    }

    /// After a write that deleted records of `cf` (`FLOOR_CFS`), the last
    /// of them `last_deleted`: the floor moves up to the first record left,
    /// stepping once over the tombstones between.
    pub fn raise_floor(&self, cf: Cf, last_deleted: &[u8]) -> Result<(), DbError> {
        assert!(FLOOR_CFS.contains(&cf), "{cf:?} has no floor");
        let from = self.floor(cf).unwrap_or_default();
        let mut iter =
            self.inner.db.iterator_cf(self.handle(cf), IteratorMode::From(&from, Direction::Forward));
        let floor = match iter.next() {
            Some(item) => item?.0.into_vec(),
            // Nothing is left: no record is below the successor of the last
            // one deleted (nor below the old floor).
            None => {
                let mut after = last_deleted.to_vec();
                after.push(0);
                after.max(from)
            }
        };
        self.inner.floors.lock().expect("floors lock")[cf as usize] = Some(floor);
        Ok(())
    }

    /// Forgets every floor (the state was replaced by an image).
    pub fn forget_floors(&self) {
        *self.inner.floors.lock().expect("floors lock") = Default::default();
    }

    pub fn batch(&self) -> Batch {
        let ticket = BatchTicket::take(self);
        Batch { wb: WriteBatch::default(), db: self.clone(), sealed: Vec::new(), _ticket: ticket }
    }

    /// Waits until every batch opened before this call has been written or
    /// dropped. A batch seals each value as it is added, under the data key
    /// active then: the re-encryption pass calls this once the key it
    /// re-seals to is active, so that no value sealed under an older key can
    /// land after the pass has walked past its place. One caller at a time.
    pub fn wait_for_open_batches(&self) {
        let old = self.inner.batch_phase.fetch_xor(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let mut warned = false;
        while self.inner.batches_open[old].load(Ordering::SeqCst) > 0 {
            if !warned && started.elapsed() > std::time::Duration::from_secs(10) {
                tracing::warn!("re-encryption waits for a write batch opened 10 s ago");
                warned = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Writes a batch atomically. `sync` waits for fsync of the WAL.
    ///
    /// A synced write is written under the write lock and fsynced after it
    /// is released: apply's batches (never synced) then do not queue behind
    /// every log append's fsync, which on this disk takes 0.5–5 ms. The
    /// batch is visible to readers a moment before it is durable; nothing
    /// acts on a log entry, vote or install marker before this returns.
    pub fn write(&self, batch: Batch, sync: bool) -> Result<(), DbError> {
        {
            let _g = self.inner.write_lock.lock().expect("write lock");
            self.inner.db.write_opt(batch.wb, &WriteOptions::default())?;
        }
        if sync {
            self.sync_wal()?;
        }
        Ok(())
    }

    /// Writes a batch of the state machine's families without the WAL:
    /// apply's batches, whose log entries are durable already. Cheaper
    /// (the log's fsync no longer carries them), but a crash loses what no
    /// flush has reached yet, and the state on disk is then an earlier,
    /// consistent state (flushes are atomic across families); the Raft
    /// layer re-applies the log from the applied index found there.
    ///
    /// So nothing may be written to these families *with* the WAL while
    /// the process runs (a logged write would survive a crash that loses
    /// the unlogged ones before it), and the log may be purged only behind
    /// `persist_unlogged_through`. Image installs and layout upgrades are
    /// logged on purpose: they replace or rewrite the state as a whole.
    pub fn write_unlogged(&self, batch: Batch) -> Result<(), DbError> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        let _g = self.inner.write_lock.lock().expect("write lock");
        self.inner.db.write_opt(batch.wb, &wo)?;
        Ok(())
    }

    /// Flushes every family's memtable (atomically), so that every write
    /// made before this call, unlogged ones included, survives a crash.
    /// `mark` is the caller's position that those writes reached (the
    /// applied index): `persisted_through` returns the highest mark so far.
    pub fn persist_unlogged_through(&self, mark: u64) -> Result<(), DbError> {
        let handles: Vec<_> = Cf::ALL.iter().map(|cf| self.handle(*cf)).collect();
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.inner.db.flush_cfs_opt(&handles, &fo)?;
        self.inner.persisted_through.fetch_max(mark, Ordering::AcqRel);
        Ok(())
    }

    /// The state is durable up to `mark` with no flush: nothing unlogged
    /// was written since the last flush (at open, before any apply; right
    /// after an image went in by logged writes and a synced last batch).
    pub fn mark_persisted_through(&self, mark: u64) {
        self.inner.persisted_through.fetch_max(mark, Ordering::AcqRel);
    }

    /// The highest mark `persist_unlogged_through` recorded in this process.
    pub fn persisted_through(&self) -> u64 {
        self.inner.persisted_through.load(Ordering::Acquire)
    }

    /// Makes every write so far durable (fsync of the WAL), without holding
    /// the write lock: writers that did not ask for sync share it.
    pub fn sync_wal(&self) -> Result<(), DbError> {
        self.inner.db.flush_wal(true)?;
        Ok(())
    }

    /// Re-seals, under the active data key, up to `limit` values of `cf`
    /// from `from` on that are sealed under an older key. Returns where to
    /// continue (None: the column family is done), values scanned, values
    /// rewritten.
    pub fn reencrypt_chunk(
        &self,
        cf: Cf,
        from: &[u8],
        limit: usize,
    ) -> Result<(Option<Vec<u8>>, u64, u64), DbError> {
        let _g = self.inner.write_lock.lock().expect("write lock");
        let mut wb = WriteBatch::default();
        let mut scanned = 0u64;
        let mut next = None;
        let iter = self.inner.db.iterator_cf(self.handle(cf), IteratorMode::From(from, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if scanned as usize >= limit {
                next = Some(k.into_vec());
                break;
            }
            scanned += 1;
            if self.inner.codec.stale(&v) {
                let plain = self.inner.codec.open(cf, &k, &v)?;
                wb.put_cf(self.handle(cf), &k, self.inner.codec.seal(cf, &k, &plain));
            }
        }
        let rewritten = wb.len() as u64;
        if rewritten > 0 {
            // The state machine's families are written unlogged only (see
            // `write_unlogged`); the pass flushes them before retiring a key.
            let mut wo = WriteOptions::default();
            if Cf::STATE_MACHINE.contains(&cf) {
                wo.disable_wal(true);
            } else {
                wo.set_sync(true);
            }
            self.inner.db.write_opt(wb, &wo)?;
        }
        Ok((next, scanned, rewritten))
    }

    /// Rewrites a column family in place, `chunk_records` at a time, each
    /// chunk in one atomic write: `f` sees every record (opened) and stages
    /// what replaces it, answering whether it moved it. Returns how many
    /// moved. For layout upgrades: a moved record must be recognisable as
    /// such, so that a crash part way is finished by running this again.
    pub(crate) fn rewrite_in_chunks(
        &self,
        cf: Cf,
        chunk_records: usize,
        mut f: impl FnMut(&[u8], &[u8], &mut Batch) -> Result<bool, DbError>,
    ) -> Result<u64, DbError> {
        let mut moved = 0u64;
        let mut from = Vec::new();
        loop {
            let rows = self.scan_raw(cf, &from, None, chunk_records)?;
            let Some((last, _)) = rows.last() else { return Ok(moved) };
            from = [&last[..], &[0]].concat();
            let mut batch = self.batch();
            for (k, v) in &rows {
                moved += u64::from(f(k, v, &mut batch)?);
            }
            if !batch.is_empty() {
                self.write(batch, false)?;
            }
        }
    }

    /// Visits every record of the given column families as of one point in
    /// time (a RocksDB snapshot), values opened by the codec.
    pub fn for_each_consistent(
        &self,
        cfs: &[Cf],
        mut f: impl FnMut(Cf, &[u8], Vec<u8>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let snap = self.inner.db.snapshot();
        for &cf in cfs {
            for item in snap.iterator_cf(self.handle(cf), IteratorMode::Start) {
                let (k, v) = item?;
                let plain = self.inner.codec.open(cf, &k, &v)?;
                f(cf, &k, plain)?;
            }
        }
        Ok(())
    }
}

/// An atomic group of writes, values sealed by the codec as they are added.
pub struct Batch {
    wb: WriteBatch,
    db: Db,
    /// One buffer every value of the batch is sealed into (RocksDB copies it).
    sealed: Vec<u8>,
    /// Dropped with what is left of the batch once it is written.
    _ticket: BatchTicket,
}

/// Counts a batch as open in the phase it was opened in.
struct BatchTicket {
    db: Db,
    phase: usize,
}

impl BatchTicket {
    fn take(db: &Db) -> BatchTicket {
        let inner = &db.inner;
        loop {
            let phase = inner.batch_phase.load(Ordering::SeqCst);
            inner.batches_open[phase].fetch_add(1, Ordering::SeqCst);
            // A flip in between: count in the new phase instead, so the
            // waiter never misses a batch it must wait for.
            if inner.batch_phase.load(Ordering::SeqCst) == phase {
                return BatchTicket { db: db.clone(), phase };
            }
            inner.batches_open[phase].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for BatchTicket {
    fn drop(&mut self) {
        self.db.inner.batches_open[self.phase].fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batch {
    pub fn put_raw(&mut self, cf: Cf, key: &[u8], plain: &[u8]) {
        self.db.inner.codec.seal_into(cf, key, plain, &mut self.sealed);
        self.wb.put_cf(self.db.handle(cf), key, &self.sealed);
    }

    pub fn put<T: Serialize>(&mut self, cf: Cf, key: &[u8], value: &T) {
        self.put_raw(cf, key, &encode(value));
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.wb.delete_cf(self.db.handle(cf), key);
    }

    /// Deletes `from <= key < to`.
    pub fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) {
        self.wb.delete_range_cf(self.db.handle(cf), from, to);
    }

    pub fn len(&self) -> usize {
        self.wb.len()
    }

    /// Bytes the batch would write (keys, sealed values, framing).
    pub fn size_bytes(&self) -> usize {
        self.wb.size_in_bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }
}

/// See `Db::view`.
pub struct DbView<'a> {
    db: &'a Db,
    snap: rocksdb::Snapshot<'a>,
}

impl DbView<'_> {
    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        match self.snap.get_cf(self.db.handle(cf), key)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(cf, &self.db.inner.codec.open(cf, key, &v)?)?)),
        }
    }
}

/// Room most records fit in (accounts, transfers, index entries, request
/// records): growing from empty cost four reallocations per value, about
/// 6% of apply's instructions for batches of 1,000 transfers.
const ENCODE_CAPACITY_BYTES: usize = 128;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on our own plain data types (no maps with
    // non-string keys issues, no unsized sequences).
    postcard::to_extend(value, Vec::with_capacity(ENCODE_CAPACITY_BYTES))
        .expect("postcard encodes plain data")
}

pub fn decode<T: DeserializeOwned>(cf: Cf, bytes: &[u8]) -> Result<T, DbError> {
    postcard::from_bytes(bytes).map_err(|e| DbError::Decode { cf: cf.name(), reason: e.to_string() })
}
