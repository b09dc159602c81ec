//! Secret folders known to be listed, for apply. A put to a new path walks
//! up its folders until one is listed already: with folders in place (the
//! usual case) that is one RocksDB read that hits (a memtable walk, an
//! AES-GCM open, a decode) on every node, for every new path.
//!
//! A folder entry is removed only by a purge that leaves the folder empty,
//! which drops it from the cache too, so an entry cached stays true. The
//! cache is emptied when a snapshot replaces the state or a batch fails to
//! commit, and emptied whole when it reaches its bound. Apply results never
//! depend on it (a miss reads the database).

use std::collections::HashSet;
use std::sync::Mutex;

/// Folder keys kept (64 bytes each plus the set's overhead: ~6 MiB).
pub const FOLDER_CACHE_MAX: usize = 1 << 16;

pub type FolderKey = [u8; 64];

#[derive(Default)]
pub struct FolderCache {
    keys: Mutex<HashSet<FolderKey>>,
}

impl FolderCache {
    pub fn contains(&self, key: &FolderKey) -> bool {
        self.keys.lock().expect("folder cache lock").contains(key)
    }

    /// Remembers a folder entry read from the database or from a command
    /// of the batch that precedes the reader (committed with it).
    pub fn insert(&self, key: FolderKey) {
        let mut keys = self.keys.lock().expect("folder cache lock");
        if keys.len() >= FOLDER_CACHE_MAX {
            keys.clear();
        }
        keys.insert(key);
    }

    /// Forgets a folder entry that a purge removes.
    pub fn remove(&self, key: &FolderKey) {
        self.keys.lock().expect("folder cache lock").remove(key);
    }

    pub fn clear(&self) {
        self.keys.lock().expect("folder cache lock").clear();
    }
}
