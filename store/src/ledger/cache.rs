//! Committed accounts, decoded, for apply. Every transfer reads two
//! accounts; without this each read is a RocksDB lookup (a walk down a
//! memtable skiplist holding every recent version), an AES-GCM open and a
//! decode, on every node.
//!
//! The cache holds only what the database holds: it is filled from
//! database reads and from batches after they are written, emptied when a
//! snapshot replaces the state, and emptied whole when it reaches its bound.
//! Apply results never depend on it (a miss reads the database).

use std::collections::HashMap;
use std::sync::Mutex;

use super::model::Account;

/// Accounts kept (about 160 bytes each with the map's overhead: ~40 MiB).
pub const ACCOUNT_CACHE_MAX: usize = 1 << 18;

#[derive(Default)]
pub struct AccountCache {
    map: Mutex<HashMap<u128, Account>>,
}

impl AccountCache {
    pub fn get(&self, id: u128) -> Option<Account> {
        self.map.lock().expect("account cache lock").get(&id).copied()
    }

    /// Remembers committed accounts (`None`: the account is gone).
    pub fn store(&self, accounts: impl IntoIterator<Item = (u128, Option<Account>)>) {
        let mut map = self.map.lock().expect("account cache lock");
        for (id, account) in accounts {
            match account {
                Some(a) => {
                    if map.len() >= ACCOUNT_CACHE_MAX && !map.contains_key(&id) {
                        map.clear();
                    }
                    map.insert(id, a);
                }
                None => {
                    map.remove(&id);
                }
            }
        }
    }

    pub fn clear(&self) {
        self.map.lock().expect("account cache lock").clear();
    }
}
