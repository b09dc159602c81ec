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

/// Callers kept; the map is emptied when it reaches this.
pub const CALLER_CACHE_MAX: usize = 4096;

#[derive(Default)]
pub(crate) struct CallerCache {
    generation: AtomicU64,
    map: Mutex<HashMap<TokenHash, (u64, Caller)>>,
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
        let (g, caller) = map.get(hash)?;
        (*g == generation && caller.token.expires_ms > now_ms).then(|| caller.clone())
    }

    /// Remembers a caller resolved from state read after `generation`.
    pub fn store(&self, generation: u64, caller: Caller) {
        let mut map = self.map.lock().expect("caller cache lock");
        if map.len() >= CALLER_CACHE_MAX && !map.contains_key(&caller.token_hash) {
            map.clear();
        }
        map.insert(caller.token_hash, (generation, caller));
    }
}
