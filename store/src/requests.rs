//! The request-id table: what makes a retried write apply at most once.
//!
//! Records are keyed `bucket ++ H(request id)`, where the bucket is the
//! state-machine time of the write divided by the dedup window. A request
//! still inside its window was recorded in the current bucket or the one
//! before it, so a lookup probes those two keys and then checks the window
//! logically, by the recorded time. Whole buckets older than that are
//! dropped with one range deletion when the clock enters a new bucket.
//!
//! Layout 2 kept `H(id)` keys plus a time index (`requests_by_time`) that
//! apply pruned record by record: one more insert per command and two
//! tombstones per expired id, which made a node older than the window
//! about a quarter slower. [`migrate_layout_2`] and [`legacy_record`] bring
//! such data into this layout.

use serde::{Deserialize, Serialize};

use crate::command::intent::Intent;
use crate::command::Response;
use crate::db::{decode, Db, DbError};
use crate::layout::Cf;
use crate::limits::DEDUP_WINDOW_MS;

/// What the table remembers of an applied request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub time_ms: u64,
    pub response: Response,
    /// What the client asked for (`Op::intent`): a request id sent again
    /// with another request is refused, not answered with this response.
    /// `None` in records written before intents were kept.
    pub intent: Option<Intent>,
}

/// A record as written before intents were kept (they leave the table one
/// window after an upgrade).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecordV1 {
    pub time_ms: u64,
    pub response: Response,
}

impl RequestRecord {
    /// Decodes a record of either form. A V1 record ends where this form's
    /// intent would start, so it never decodes as this form.
    pub(crate) fn decode(raw: &[u8]) -> Result<RequestRecord, DbError> {
        match decode::<RequestRecord>(Cf::Requests, raw) {
            Ok(rec) => Ok(rec),
            Err(e) => match decode::<RequestRecordV1>(Cf::Requests, raw) {
                Ok(v1) => Ok(RequestRecord { time_ms: v1.time_ms, response: v1.response, intent: None }),
                Err(_) => Err(e),
            },
        }
    }
}

/// Bytes of a request id's keyed hash (`names::NameKey::key`).
const ID_HASH_BYTES: usize = 32;
/// A record's key: big-endian bucket, then the id's hash.
pub(crate) const KEY_BYTES: usize = 8 + ID_HASH_BYTES;

/// The keyed hash a command's request id is recorded under: scoped by its
/// caller (the token's hash, or the node itself), so equal ids from two
/// callers are two requests.
pub(crate) fn scoped_id_hash(names: &crate::names::NameKey, cmd: &crate::Command) -> [u8; ID_HASH_BYTES] {
    match &cmd.actor {
        crate::command::Actor::Token(h) => {
            let mut scope = [0u8; 33];
            scope[0] = b't';
            scope[1..].copy_from_slice(h);
            names.scoped_request_key(&scope, &cmd.request_id)
        }
        crate::command::Actor::Node => names.scoped_request_key(b"n", &cmd.request_id),
    }
}

/// As `scoped_id_hash`, scoped by a principal (`user:alice`) instead of a
/// token (state version 3 on).
pub(crate) fn principal_id_hash(
    names: &crate::names::NameKey,
    principal: &crate::auth::Principal,
    request_id: &str,
) -> [u8; ID_HASH_BYTES] {
    let scope = [b"p:".as_slice(), principal.to_string().as_bytes()].concat();
    names.scoped_request_key(&scope, request_id)
}

/// The bucket a record written at `time_ms` lives in.
pub(crate) fn bucket(time_ms: u64) -> u64 {
    time_ms / DEDUP_WINDOW_MS
}

pub(crate) fn key(bucket: u64, id_hash: &[u8; ID_HASH_BYTES]) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&bucket.to_be_bytes());
    k[8..].copy_from_slice(id_hash);
    k
}

/// The keys a request id may be recorded under while inside its window at
/// `clock_ms`, newest first: a record written in an older bucket is more
/// than a window old.
pub(crate) fn probe_keys(clock_ms: u64, id_hash: &[u8; ID_HASH_BYTES]) -> Vec<[u8; KEY_BYTES]> {
    let now = bucket(clock_ms);
    let mut keys = vec![key(now, id_hash)];
    if now > 0 {
        keys.push(key(now - 1, id_hash));
    }
    keys
}

/// When a batch moves the clock from `from_ms` into a later bucket: the
/// end (exclusive) of the key range to drop, every bucket older than the
/// one before the new current one.
pub(crate) fn expired_range_end(from_ms: u64, to_ms: u64) -> Option<[u8; 8]> {
    let now = bucket(to_ms);
    (now > bucket(from_ms) && now >= 2).then(|| (now - 1).to_be_bytes())
}

/// A layout-2 record of an image (made by an older node) in this layout:
/// the key to install it under, or `None` to drop it (the old time index).
pub(crate) fn legacy_record(cf: Cf, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
    match cf {
        Cf::RequestsByTime => Ok(None),
        Cf::Requests if key.len() == ID_HASH_BYTES => {
            let rec = RequestRecord::decode(value)?;
            let hash: &[u8; ID_HASH_BYTES] = key.try_into().expect("checked length");
            Ok(Some(self::key(bucket(rec.time_ms), hash).to_vec()))
        }
        _ => Ok(Some(key.to_vec())),
    }
}

/// Records moved per write while upgrading a data directory.
const MIGRATE_CHUNK_RECORDS: usize = 1024;

/// Re-keys a layout-2 request table in place and empties the old time
/// index. Each chunk moves its records in one atomic write, and moved
/// records have the new key length, so a crash part way is finished by
/// running this again.
pub(crate) fn migrate_layout_2(db: &Db) -> Result<u64, DbError> {
    let moved = db.rewrite_in_chunks(Cf::Requests, MIGRATE_CHUNK_RECORDS, |k, v, batch| {
        if k.len() != ID_HASH_BYTES {
            return Ok(false);
        }
        let new_key = legacy_record(Cf::Requests, k, v)?.expect("request records are kept");
        batch.put_raw(Cf::Requests, &new_key, v);
        batch.delete(Cf::Requests, k);
        Ok(true)
    })?;
    if let Some((last, _)) = db.last_raw(Cf::RequestsByTime)? {
        let mut batch = db.batch();
        batch.delete_range(Cf::RequestsByTime, &[], &[&last[..], &[0]].concat());
        db.write(batch, false)?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_inside_its_window_is_under_one_of_the_probed_keys() {
        let w = DEDUP_WINDOW_MS;
        let h = [7u8; 32];
        for written in [0, 1, w - 1, w, w + 1, 5 * w - 1, 5 * w] {
            for clock in [written, written + 1, written + w / 2, written + w] {
                let probed = probe_keys(clock, &h);
                assert!(probed.contains(&key(bucket(written), &h)), "written {written}, probed at {clock}");
            }
        }
    }

    #[test]
    fn only_buckets_no_probe_can_reach_are_dropped() {
        let w = DEDUP_WINDOW_MS;
        assert_eq!(expired_range_end(0, w - 1), None, "no new bucket");
        assert_eq!(expired_range_end(w - 1, w), None, "bucket 1: nothing older than bucket 0");
        let end = expired_range_end(2 * w - 1, 2 * w).expect("bucket 2 drops bucket 0");
        assert!(key(0, &[0xff; 32])[..] < end[..]);
        assert!(key(1, &[0; 32])[..] >= end[..], "the bucket before the current one stays");
        assert_eq!(expired_range_end(3 * w, 3 * w + 5), None, "same bucket: nothing to do");
    }

    /// A data directory written in layout 2 keeps deduplicating after the
    /// upgrade: its records are re-keyed, its time index emptied.
    #[test]
    fn a_layout_2_directory_is_upgraded_in_place() {
        use crate::command::{Actor, Command, DeleteSecret, Op, Outcome};
        use crate::layout::{FORMAT_KEY, FORMAT_VERSION};
        use crate::names::NameKey;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let hash = NameKey::unset().key(Cf::Requests, "deploy-7");
        let answer = Response { revision: 9, result: Ok(Outcome::Done), deduplicated: false };
        {
            let db = Db::open(&path, crate::codec::Codec::plaintext()).unwrap();
            let mut b = db.batch();
            b.put(Cf::RaftMeta, FORMAT_KEY, &2u32);
            b.put(Cf::Requests, &hash, &RequestRecordV1 { time_ms: 5, response: answer.clone() });
            b.put(Cf::RequestsByTime, &[&5u64.to_be_bytes()[..], &hash[..]].concat(), &());
            db.write(b, true).unwrap();
        }
        let db = Db::open(&path, crate::codec::Codec::plaintext()).unwrap();
        assert_eq!(db.get::<u32>(Cf::RaftMeta, FORMAT_KEY).unwrap(), Some(FORMAT_VERSION));
        assert!(db.last_raw(Cf::RequestsByTime).unwrap().is_none(), "the old time index is emptied");
        let keys: Vec<Vec<u8>> =
            db.scan_raw(Cf::Requests, &[], None, 10).unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(keys, vec![key(0, &hash).to_vec()]);

        let sm = crate::StateMachine::new(db);
        let retry = Command {
            request_id: "deploy-7".into(),
            time_ms: 10,
            node: 1,
            actor: Actor::Node,
            op: Op::DeleteSecret(DeleteSecret { path: "p".into() }),
        };
        let mut b = sm.begin().unwrap();
        let r = b.apply(&retry).unwrap();
        b.commit().unwrap();
        assert!(r.deduplicated, "the retry is answered from the migrated record");
        assert_eq!(r.result, answer.result);
    }

    #[test]
    fn an_older_images_request_records_are_rekeyed_and_its_time_index_dropped() {
        let hash = [3u8; 32];
        let rec = RequestRecordV1 {
            time_ms: 3 * DEDUP_WINDOW_MS + 1,
            response: Response {
                revision: 1,
                result: Ok(crate::command::Outcome::Done),
                deduplicated: false,
            },
        };
        let v = crate::db::encode(&rec);
        assert_eq!(legacy_record(Cf::Requests, &hash, &v).unwrap(), Some(key(3, &hash).to_vec()));
        assert_eq!(legacy_record(Cf::RequestsByTime, &[0; 40], &[]).unwrap(), None);
        let current = key(3, &hash);
        assert_eq!(legacy_record(Cf::Requests, &current, &v).unwrap(), Some(current.to_vec()));
        assert_eq!(legacy_record(Cf::Accounts, &[1; 16], &[9]).unwrap(), Some(vec![1; 16]));
    }
}
