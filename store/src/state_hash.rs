//! A digest of the replicated state that nodes can compare (etcd's
//! `HashKV`): SHA-256 over every state-machine record in plaintext, read
//! from one RocksDB snapshot. Values are sealed under each node's own data
//! key with random nonces, so the stored bytes differ between nodes; what
//! they decrypt to must not. Two nodes at the same applied position with
//! different digests have parted: the invariant apply's determinism exists
//! for.
//!
//! `SmMeta` holds bookkeeping a node may keep its own way (counters cached
//! by one build and not another, markers of an upgrade done in place), so
//! only its keys named here, or by the caller (the Raft layer's applied
//! position), are hashed. Expired tokens are left out too: apply removes
//! them once per apply batch, a bounded number at a time, and nodes group
//! entries into batches differently, so at one applied index one node may
//! still hold a token another has pruned (every node treats it as gone).

use sha2::{Digest, Sha256};

use crate::auth::TokenRecord;
use crate::db::{decode, Db, DbError};
use crate::layout::{sm_keys, Cf};

/// `SmMeta` records that apply alone writes, the same on every node.
const REPLICATED_META_KEYS: [&[u8]; 8] = [
    sm_keys::REVISION,
    sm_keys::CLOCK_MS,
    sm_keys::BOOTSTRAPPED,
    sm_keys::LEDGER_TIMESTAMP_NS,
    sm_keys::FEED_OLDEST,
    sm_keys::AUDIT_HEAD,
    sm_keys::NAME_KEY,
    sm_keys::STATE_VERSION,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateHash {
    pub digest: [u8; 32],
    /// Records hashed.
    pub records: u64,
    /// The plaintext of the caller's `SmMeta` keys, as hashed.
    meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StateHash {
    /// One of the caller's `SmMeta` records, from the same point in time.
    pub fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| decode(Cf::SmMeta, v)).transpose()
    }

    pub fn hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// Hashes the state as of now; `meta_keys` adds `SmMeta` records to the
/// replicated ones (and returns them). Reads and decrypts every record:
/// seconds for a large state, so the caller bounds how often it runs.
pub fn state_hash(db: &Db, meta_keys: &[&[u8]]) -> Result<StateHash, DbError> {
    // A re-encryption pass must not retire a key this view still needs.
    let _keys = db.snapshot_gate().enter();
    let mut h = Sha256::new();
    let (mut records, mut meta) = (0u64, Vec::new());
    // SmMeta comes first: the state's clock is known before the tokens.
    debug_assert_eq!(Cf::STATE_MACHINE[0], Cf::SmMeta);
    let mut clock_ms = 0u64;
    db.for_each_consistent(&Cf::STATE_MACHINE, |cf, key, value| {
        match cf {
            Cf::SmMeta => {
                if key == sm_keys::CLOCK_MS {
                    clock_ms = decode(cf, &value)?;
                }
                if meta_keys.contains(&key) {
                    meta.push((key.to_vec(), value.clone()));
                } else if !REPLICATED_META_KEYS.contains(&key) {
                    return Ok(());
                }
            }
            // As apply's prune: expired at or before the state's clock.
            Cf::Tokens if decode::<TokenRecord>(cf, &value)?.expires_ms <= clock_ms => return Ok(()),
            Cf::TokensByExpiry
                if key.len() >= 8
                    && u64::from_be_bytes(key[..8].try_into().expect("8 bytes")) <= clock_ms =>
            {
                return Ok(())
            }
            _ => {}
        }
        // Lengths first: no two different record lists hash the same bytes.
        h.update([cf as u8]);
        h.update((key.len() as u64).to_be_bytes());
        h.update(key);
        h.update((value.len() as u64).to_be_bytes());
        h.update(&value);
        records += 1;
        Ok(())
    })?;
    Ok(StateHash { digest: h.finalize().into(), records, meta })
}
