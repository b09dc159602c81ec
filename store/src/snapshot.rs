//! State machine images: exported from one consistent RocksDB view, installed
//! in one atomic WriteBatch.
//!
//! An image holds plaintext records (as opened by the codec); installing it
//! seals them again with the receiving node's own codec and keys.

use serde::{Deserialize, Serialize};

use crate::db::{decode, Db, DbError};
use crate::layout::Cf;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Image {
    records: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

impl Image {
    /// Exports every state machine record as of one point in time.
    pub fn export(db: &Db) -> Result<Image, DbError> {
        let mut records = Vec::new();
        db.for_each_consistent(&Cf::STATE_MACHINE, |cf, k, v| {
            records.push((cf as u8, k.to_vec(), v));
            Ok(())
        })?;
        Ok(Image { records })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::db::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Image, DbError> {
        decode(Cf::Snapshot, bytes)
    }

    /// A record of `SmMeta` in this image (e.g. the Raft layer's position).
    pub fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.records
            .iter()
            .find(|(cf, k, _)| *cf == Cf::SmMeta as u8 && k == key)
            .map(|(_, _, v)| decode(Cf::SmMeta, v))
            .transpose()
    }

    /// Replaces the whole state machine with this image, atomically, durably.
    pub fn install(&self, db: &Db) -> Result<(), DbError> {
        let mut batch = db.batch();
        for cf in Cf::STATE_MACHINE {
            if let Some((last, _)) = db.last_raw(cf)? {
                let mut end = last;
                end.push(0);
                batch.delete_range(cf, &[], &end);
            }
        }
        for (cf, k, v) in &self.records {
            let cf = Cf::from_u8(*cf).filter(|cf| Cf::STATE_MACHINE.contains(cf)).ok_or_else(|| {
                DbError::Decode { cf: "snapshot", reason: format!("unknown column family {cf}") }
            })?;
            batch.put_raw(cf, k, v);
        }
        db.write(batch, true)
    }
}
