//! Apply's in-memory layer: the writes of a batch of entries so far, which
//! later commands of the batch read before the database.
//!
//! Keys are a column family and a RocksDB key held inline (no allocation
//! per lookup). The layer is a hash map: apply looks up and writes several
//! keys per ledger event, and an ordered map's searches, comparisons and
//! node shifts were a tenth of a cluster's CPU in batched transfers. Order
//! is needed only at commit (sorted once) and for the few column families
//! apply scans by range (`RANGED`), whose keys are also kept in order.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Range;

use crate::layout::Cf;

/// Column families apply reads by key range (the ledger's expiry sweep;
/// principals, when the last admin would lose admin rights; a secret
/// folder's entries, when a purge may leave it empty).
pub const RANGED: [Cf; 4] = [Cf::PendingExpiry, Cf::Users, Cf::Clients, Cf::SecretIndex];

/// A value as the layer holds it: `None` is a deletion.
pub type Value = Option<Vec<u8>>;

/// The map keeps std's keyed (SipHash) hasher: keys hold client-chosen ids,
/// and a hasher whose collisions can be computed would let a batch of
/// crafted ids turn every node's apply quadratic.
pub struct Overlay {
    map: HashMap<Key, Value>,
    /// The keys of `RANGED` families, in order.
    ordered: BTreeSet<Key>,
}

/// Entries the layer starts with room for: a batch of 64 single-transfer
/// commands writes about 550, and growing from empty rehashed the map
/// ten times per batch (5% of apply's instructions).
pub const OVERLAY_CAPACITY_ENTRIES: usize = 1024;

impl Default for Overlay {
    fn default() -> Self {
        Overlay { map: HashMap::with_capacity(OVERLAY_CAPACITY_ENTRIES), ordered: BTreeSet::new() }
    }
}

impl Overlay {
    /// Makes room for `entries` more writes at once: a ledger batch writes
    /// thousands, and growing the map step by step rehashed it each time.
    pub fn reserve(&mut self, entries: usize) {
        self.map.reserve(entries);
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.map.get(key)
    }

    /// Sets a key; returns what the layer held before (None: nothing).
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        if RANGED.contains(&key.cf) {
            self.ordered.insert(key);
        }
        self.map.insert(key, value)
    }

    /// Forgets a key (the database's value shows through again).
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        if RANGED.contains(&key.cf) {
            self.ordered.remove(key);
        }
        self.map.remove(key)
    }

    /// Entries with keys in `range`, in order. Only for `RANGED` families.
    pub fn range(&self, range: Range<Key>) -> impl Iterator<Item = (&Key, &Value)> + '_ {
        assert!(
            RANGED.contains(&range.start.cf) && range.start.cf == range.end.cf,
            "{} is not scanned by range in apply (overlay::RANGED)",
            range.start.cf.name()
        );
        self.ordered.range(range).map(|k| (k, self.map.get(k).expect("ordered keys are in the map")))
    }

    /// Every entry, sorted by column family then key. References are
    /// sorted, not the entries: an entry is about 100 bytes, and moving
    /// them through the sort was a twentieth of a ledger batch's apply.
    pub fn sorted(&self) -> Vec<(&Key, &Value)> {
        let mut entries: Vec<(&Key, &Value)> = self.map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries
    }
}

/// The longest key any column family uses (a folder-index key: two hashes).
pub const KEY_BYTES_MAX: usize = 64;

#[derive(Clone, Copy)]
pub struct Key {
    pub cf: Cf,
    len: u8,
    bytes: [u8; KEY_BYTES_MAX],
}

impl Key {
    pub fn new(cf: Cf, key: &[u8]) -> Key {
        assert!(
            key.len() <= KEY_BYTES_MAX,
            "{} key of {} bytes: the longest is {KEY_BYTES_MAX}",
            cf.name(),
            key.len()
        );
        let mut bytes = [0u8; KEY_BYTES_MAX];
        bytes[..key.len()].copy_from_slice(key);
        Key { cf, len: key.len() as u8, bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Column family first, then the key bytes as RocksDB orders them.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cf.cmp(&other.cf).then_with(|| self.bytes().cmp(other.bytes()))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cf == other.cf && self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

/// Two writes into the hasher, not three (the derived hashes would add the
/// family as 8 bytes and the slice's length): hashing is a tenth of apply's
/// instructions per single-transfer command. SipHash counts the bytes it
/// was given, so keys of different lengths still hash apart.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.cf as u8);
        state.write(self.bytes());
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.cf.name(), crate::codec::hex(self.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_column_family_then_bytes() {
        let k = |cf, b: &[u8]| Key::new(cf, b);
        assert!(k(Cf::Secrets, b"b") > k(Cf::Secrets, b"a"));
        assert!(k(Cf::Secrets, b"ab") > k(Cf::Secrets, b"a"), "a prefix sorts first");
        assert!(k(Cf::Secrets, b"a\0") > k(Cf::Secrets, b"a"), "trailing zero bytes are not padding");
        assert_ne!(k(Cf::Secrets, b"a\0"), k(Cf::Secrets, b"a"));
        assert!(k(Cf::Users, b"") > k(Cf::Secrets, &[0xff; 64]));
        assert_eq!(k(Cf::Secrets, b"xy").bytes(), b"xy");
    }

    #[test]
    fn ranges_and_the_sorted_commit_see_every_write_and_removal() {
        let mut o = Overlay::default();
        let k = |cf, b: &[u8]| Key::new(cf, b);
        o.insert(k(Cf::PendingExpiry, b"b"), Some(vec![2]));
        o.insert(k(Cf::PendingExpiry, b"a"), None);
        o.insert(k(Cf::PendingExpiry, b"c"), Some(vec![3]));
        o.insert(k(Cf::Accounts, b"z"), Some(vec![9]));
        assert_eq!(o.insert(k(Cf::PendingExpiry, b"b"), Some(vec![4])), Some(Some(vec![2])));
        o.remove(&k(Cf::PendingExpiry, b"c"));
        let seen: Vec<_> = o
            .range(k(Cf::PendingExpiry, b"")..k(Cf::PendingExpiry, b"z"))
            .map(|(k, v)| (k.bytes().to_vec(), v.clone()))
            .collect();
        assert_eq!(seen, [(b"a".to_vec(), None), (b"b".to_vec(), Some(vec![4]))]);
        let sorted: Vec<_> = o.sorted().into_iter().map(|(k, _)| (k.cf, k.bytes().to_vec())).collect();
        assert_eq!(
            sorted,
            [
                (Cf::Accounts, b"z".to_vec()),
                (Cf::PendingExpiry, b"a".to_vec()),
                (Cf::PendingExpiry, b"b".to_vec())
            ]
        );
    }

    #[test]
    #[should_panic(expected = "not scanned by range")]
    fn a_range_over_an_unordered_family_is_a_bug() {
        let o = Overlay::default();
        let _ = o.range(Key::new(Cf::Accounts, b"")..Key::new(Cf::Accounts, b"z")).count();
    }
}
