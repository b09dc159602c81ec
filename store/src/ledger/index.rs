//! The account index (`AccountTransfers`: every transfer under both of its
//! accounts, keyed `account ++ timestamp`) is written in sorted runs, not
//! entry by entry. Two memtable inserts per transfer at random places were
//! about 40% of a batched transfer's apply (BENCHMARKS.md).
//!
//! Apply stages each batch's entries as one record of `AccountIndexStage`
//! (keyed by the batch's revision, entries in key order). Once
//! `STAGED_ENTRIES_MAX` entries wait, it merges them into one sorted file
//! that RocksDB takes in whole (`Db::ingest_sorted`) and deletes the staged
//! records. Queries read both families from one view.
//!
//! What must hold:
//! - Every entry is in exactly one place as far as a reader can tell: a
//!   crash may leave an entry both ingested and staged again; the two are
//!   identical and a query returns it once.
//! - No reader sees an entry above its view's revision. An ingested file is
//!   durable at once, apply's own writes only at the next flush: after a
//!   crash the file may hold entries of revisions the state has not reached
//!   again. Apply writes them again, identically (ids and timestamps come in
//!   with the commands), as it re-applies the log, and queries skip entries
//!   above the view's revision until then.
//! - Nodes split the same entries into staged records and files differently
//!   (openraft hands each node its own apply batches); the entries, and so
//!   every answer, are the same on every node.

use super::model::AccountEntry;
use crate::db::{decode, Batch, View};
use crate::layout::{sm_keys, Cf};
use crate::{Db, DbError};

/// Entries staged before they are merged into one sorted file. Bounds a
/// query's extra work (it reads every staged record) and apply's memory at
/// a merge; larger files mean fewer of them for compaction to merge.
pub const STAGED_ENTRIES_MAX: u64 = 65_536;

/// An index entry's key: account id then timestamp, big-endian.
pub type EntryKey = [u8; 24];

/// One staged record: a batch's entries, in key order.
type Run = Vec<(EntryKey, AccountEntry)>;

/// Called by commit with the batch's index entries (in key order, as the
/// overlay sorts them). Stages them, or merges everything staged into
/// `AccountTransfers` when the stage is full.
pub(crate) fn stage(db: &Db, batch: &mut Batch, revision: u64, run: Run) -> Result<(), DbError> {
    if run.is_empty() {
        return Ok(());
    }
    let staged: u64 = db.get(Cf::SmMeta, sm_keys::INDEX_STAGED)?.unwrap_or(0);
    let total = staged + run.len() as u64;
    if total < STAGED_ENTRIES_MAX {
        batch.put(Cf::AccountIndexStage, &revision.to_be_bytes(), &run);
        batch.put(Cf::SmMeta, sm_keys::INDEX_STAGED, &total);
        return Ok(());
    }
    let mut all = run;
    let mut records = 0u64;
    for (k, v) in db.scan_raw(Cf::AccountIndexStage, &[], None, usize::MAX)? {
        let staged: Run = decode(Cf::AccountIndexStage, &v)?;
        all.extend(staged);
        batch.delete(Cf::AccountIndexStage, &k);
        records += 1;
    }
    assert_eq!(all.len() as u64, total, "{records} staged records hold another count than index_staged says");
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let values: Vec<Vec<u8>> = all.iter().map(|(_, e)| crate::db::encode(e)).collect();
    let ingested =
        db.ingest_sorted(Cf::AccountTransfers, all.iter().zip(&values).map(|((k, _), v)| (&k[..], &v[..])))?;
    assert_eq!(ingested, total);
    batch.delete(Cf::SmMeta, sm_keys::INDEX_STAGED);
    Ok(())
}

/// Staged entries with `from <= key < to`, in key order.
pub(crate) fn staged_in(view: &View<'_>, from: &[u8], to: &[u8]) -> Result<Run, DbError> {
    let mut out = Run::new();
    for (_, v) in view.scan_raw(Cf::AccountIndexStage, &[], None, usize::MAX)? {
        let run: Run = decode(Cf::AccountIndexStage, &v)?;
        let lo = run.partition_point(|(k, _)| &k[..] < from);
        let hi = run.partition_point(|(k, _)| &k[..] < to);
        out.extend_from_slice(&run[lo..hi.max(lo)]);
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
