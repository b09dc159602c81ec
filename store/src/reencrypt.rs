//! The background pass after a data-key rotation: walks every column family
//! in chunks and re-seals whatever an older key sealed, then retires the old
//! keys. Bounded work per step; the caller decides the pace.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::db::{Db, DbError};
use crate::layout::Cf;

/// Progress, readable while the pass runs (`keys status`).
#[derive(Debug, Default)]
pub struct Progress {
    pub running: AtomicBool,
    pub scanned: AtomicU64,
    pub rewritten: AtomicU64,
    /// Passes completed since the node started.
    pub passes: AtomicU64,
}

pub struct Reencryptor {
    cf_index: usize,
    from: Vec<u8>,
    /// The data key active when the pass began (after the open batches
    /// were waited for): every value is sealed under it or a newer key
    /// once the pass ends, so only older keys may be retired then. A key
    /// rotated in mid-pass is not one of them: values written under it in
    /// the stretch already walked were never re-sealed.
    target: Option<u32>,
}

impl Default for Reencryptor {
    fn default() -> Self {
        Self::new()
    }
}

impl Reencryptor {
    pub fn new() -> Reencryptor {
        Reencryptor { cf_index: 0, from: Vec::new(), target: None }
    }

    /// One chunk. True when every column family has been walked; the old
    /// keys are then retired (nothing sealed under them remains readable).
    pub fn step(&mut self, db: &Db, limit: usize, progress: &Progress) -> Result<bool, DbError> {
        progress.running.store(true, Ordering::Relaxed);
        if let (None, Some(k)) = (self.target, db.codec().keyring()) {
            let target = k.active();
            db.wait_for_open_batches();
            self.target = Some(target);
        }
        while self.cf_index < Cf::ALL.len() {
            let cf = Cf::ALL[self.cf_index];
            let (next, scanned, rewritten) = db.reencrypt_chunk(cf, &self.from, limit)?;
            progress.scanned.fetch_add(scanned, Ordering::Relaxed);
            progress.rewritten.fetch_add(rewritten, Ordering::Relaxed);
            match next {
                Some(k) => {
                    self.from = k;
                    return Ok(false);
                }
                None => {
                    self.cf_index += 1;
                    self.from.clear();
                    if scanned > 0 {
                        return Ok(false);
                    }
                }
            }
        }
        if let Some(k) = db.codec().keyring() {
            // Snapshot image files live outside RocksDB: re-sealed too, once
            // no image is being written, sent or received (those are sealed
            // with keys the re-seal cannot reach).
            let _retiring = db.snapshot_gate().retire();
            // What the pass re-sealed in the state machine's families went
            // in unlogged: on disk before the key it replaces goes.
            db.persist_unlogged_through(0)?;
            let files = crate::snapshot::reseal_files(db.snapshot_dir(), db.codec())?;
            progress.rewritten.fetch_add(files, Ordering::Relaxed);
            let target = self.target.expect("set at the first step");
            let retired = k.retire_older_than(target).map_err(|e| DbError::Keyring(e.to_string()))?;
            if !retired.is_empty() {
                tracing::info!(?retired, "re-encryption done; old data keys retired");
            }
        }
        progress.running.store(false, Ordering::Relaxed);
        progress.passes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}
