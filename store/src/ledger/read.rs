//! Ledger queries, outside apply (the serving node has already passed its
//! read barrier).

use super::model::{Account, AccountEntry, AccountFilter, LedgerTotals, PendingStatus, StoredTransfer};
use super::{entry_key, id_key, QUERY_RESULTS_MAX};
use crate::layout::Cf;
use crate::{Db, DbError};

/// Rows read per scan step while filtering by side or revision.
const SCAN_CHUNK_ROWS: usize = 512;
/// Rows one query may scan before returning what it has (bounded work even
/// when a filter matches almost nothing).
const SCAN_ROWS_MAX: usize = 64 * 1024;

/// Found accounts, in the order asked, all as of one moment.
pub fn accounts(db: &Db, ids: &[u128]) -> Result<Vec<Account>, DbError> {
    lookup(db, Cf::Accounts, ids)
}

/// Found transfers, in the order asked (ids kept as failed are not found).
pub fn transfers(db: &Db, ids: &[u128]) -> Result<Vec<StoredTransfer>, DbError> {
    let mut found: Vec<StoredTransfer> = lookup(db, Cf::Transfers, ids)?;
    found.retain(|s| !s.is_failed());
    Ok(found)
}

fn lookup<T: serde::de::DeserializeOwned>(db: &Db, cf: Cf, ids: &[u128]) -> Result<Vec<T>, DbError> {
    let keys: Vec<[u8; 16]> = ids.iter().take(QUERY_RESULTS_MAX).map(|id| id_key(*id)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    Ok(db.get_many(cf, &refs)?.into_iter().flatten().collect())
}

pub fn pending_status(db: &Db, id: u128) -> Result<Option<PendingStatus>, DbError> {
    db.get(Cf::PendingTransfers, &id_key(id))
}

pub fn ledger_totals(db: &Db, ledger: u32) -> Result<LedgerTotals, DbError> {
    Ok(db.get(Cf::LedgerTotals, &ledger.to_be_bytes())?.unwrap_or_default())
}

/// The earliest timeout of a pending transfer, in ns.
pub fn next_expiry_ns(db: &Db) -> Result<Option<u64>, DbError> {
    let first = db.scan_raw(Cf::PendingExpiry, &[], None, 1)?;
    Ok(first.first().map(|(k, _)| u64::from_be_bytes(k[..8].try_into().expect("24-byte key"))))
}

/// One page of an account's entries.
#[derive(Debug)]
pub struct EntryPage {
    /// (timestamp, entry), in the filter's order.
    pub entries: Vec<(u64, AccountEntry)>,
    /// Where the next page starts when this one may not be the last: the
    /// page is full, or the scan stopped at its bound (`SCAN_ROWS_MAX` rows
    /// read) before filling it. The next `timestamp_min` (`timestamp_max`
    /// when reversed). `None`: the range is exhausted.
    pub next_timestamp: Option<u64>,
}

/// An account's entries matching the filter, from the transfer index or the
/// balance history.
pub fn account_entries(db: &Db, cf: Cf, filter: &AccountFilter) -> Result<EntryPage, DbError> {
    let (entries, last_ts) = scan_entries(db, cf, filter)?;
    // Reversed, the next page ends below `ts` (and a bound of 0 would mean
    // no bound: below timestamp 1 there is nothing).
    let next_timestamp = last_ts.and_then(|ts| match filter.reversed {
        true => ts.checked_sub(1).filter(|t| *t > 0),
        false => ts.checked_add(1),
    });
    Ok(EntryPage { entries, next_timestamp })
}

/// The matching entries, and the timestamp of the last row looked at if the
/// scan stopped before the end of the range.
fn scan_entries(
    db: &Db,
    cf: Cf,
    filter: &AccountFilter,
) -> Result<(Vec<(u64, AccountEntry)>, Option<u64>), DbError> {
    let limit = filter.limit.clamp(1, QUERY_RESULTS_MAX);
    let ts_max = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
    let mut from = entry_key(filter.account_id, filter.timestamp_min).to_vec();
    // Exclusive upper bound: one past ts_max (the next account id if ts_max is u64::MAX).
    let mut to = match ts_max.checked_add(1) {
        Some(t) => entry_key(filter.account_id, t).to_vec(),
        None => entry_key(filter.account_id.wrapping_add(1), 0).to_vec(),
    };
    let both = !filter.debits && !filter.credits;
    let (debits, credits) = (filter.debits || both, filter.credits || both);
    let rev_max = if filter.revision_max == 0 { u64::MAX } else { filter.revision_max };
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut last_ts = None;
    loop {
        if out.len() == limit || scanned >= SCAN_ROWS_MAX {
            return Ok((out, last_ts));
        }
        let rows = if filter.reversed {
            db.scan_rev_raw(cf, &from, &to, SCAN_CHUNK_ROWS)?
        } else {
            db.scan_raw(cf, &from, Some(&to), SCAN_CHUNK_ROWS)?
        };
        let Some((last, _)) = rows.last() else { return Ok((out, None)) };
        if filter.reversed {
            to = last.clone();
        } else {
            from = [last.as_slice(), &[0]].concat();
        }
        scanned += rows.len();
        let full = rows.len() == SCAN_CHUNK_ROWS;
        for (k, v) in rows {
            let e: AccountEntry = crate::db::decode(cf, &v)?;
            // Revisions grow with timestamps: past the range in scan order, stop.
            let past = if filter.reversed { e.revision < filter.revision_min } else { e.revision > rev_max };
            if past {
                return Ok((out, None));
            }
            let ts = u64::from_be_bytes(k[16..].try_into().expect("24-byte key"));
            last_ts = Some(ts);
            let in_range = e.revision >= filter.revision_min && e.revision <= rev_max;
            let side = (e.debit && debits) || (!e.debit && credits);
            if in_range && side && (!filter.by_fields() || fields_match(db, filter, &e)?) {
                out.push((ts, e));
                if out.len() == limit {
                    return Ok((out, last_ts));
                }
            }
        }
        if !full {
            return Ok((out, None));
        }
    }
}

/// The entry's transfer has the fields the filter asks for (transfers
/// never change, so reading it outside the scan's view is safe).
fn fields_match(db: &Db, filter: &AccountFilter, e: &AccountEntry) -> Result<bool, DbError> {
    let t = db.get::<StoredTransfer>(Cf::Transfers, &id_key(e.transfer_id))?;
    Ok(t.is_some_and(|t| filter.fields_match(&t.transfer)))
}
