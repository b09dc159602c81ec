//! Callers resolved from bearer tokens for requests (outside apply). Every
//! request resolves its token before it is served or proposed: three
//! RocksDB reads, AES-GCM opens and name HMACs, a few percent of a loaded
//! cluster's CPU. The answer changes only when a batch that wrote tokens,
//! principals or roles commits (or a snapshot replaces the state), and
//! when the token expires; both are checked on every use.
//!
//! Entries carry the generation read before their state was, and are
//! served only while it is still current; the generation moves after the
//! write that could change them is visible. So a caller resolved from a
//! state a revocation has since replaced is never served.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::auth::{Caller, TokenHash};

/// Callers kept; the map is emptied when it reaches this many, or holds
/// about this many bytes (a caller with 32 roles of 64 rules is ~100 KiB).
pub const CALLER_CACHE_MAX: usize = 4096;
pub const CALLER_CACHE_BYTES_MAX: usize = 16 << 20;

#[derive(Default)]
pub(crate) struct CallerCache {
    generation: AtomicU64,
    map: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<TokenHash, (u64, Caller)>,
    /// `Caller::approx_bytes` of every entry stored since the last clear.
    bytes: usize,
}

impl CallerCache {
    /// Read before the state a caller is resolved from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// After a write that may change who a token is or what it may do.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn get(&self, hash: &TokenHash, now_ms: u64) -> Option<Caller> {
        let generation = self.generation();
        let map = self.map.lock().expect("caller cache lock");
        let (g, caller) = map.by_token.get(hash)?;
        (*g == generation && caller.token.expires_ms > now_ms).then(|| caller.clone())
    }

    /// Remembers a caller resolved from state read after `generation`.
    pub fn store(&self, generation: u64, caller: Caller) {
        let bytes = caller.approx_bytes();
        let mut map = self.map.lock().expect("caller cache lock");
        if map.by_token.len() >= CALLER_CACHE_MAX || map.bytes + bytes > CALLER_CACHE_BYTES_MAX {
            map.by_token.clear();
            map.bytes = 0;
        }
        map.bytes += bytes;
        map.by_token.insert(caller.token_hash, (generation, caller));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().expect("caller cache lock").by_token.len()
    }
}
