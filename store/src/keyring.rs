//! The node's keyring: AES-256-GCM data keys, wrapped by a master key
//! (key-encryption key) that never touches disk inside the data directory's
//! database. Node-local: each node has its own master key and data keys (the
//! Raft log travels between nodes in plaintext over mutual TLS and is
//! encrypted by each node as it lands).
//!
//! The keyring lives next to the database in `keyring.json`, written
//! atomically (temp file, fsync, rename, fsync dir). It holds:
//! - a check value sealed under the master key, so a wrong master key is
//!   refused before anything is read or written;
//! - each data key, sealed under the master key with its id as associated
//!   data, plus how many encryptions it has been reserved for.
//!
//! Nonces are random 96-bit values from a CSPRNG. NIST SP 800-38D bounds a key
//! with random nonces to 2^32 encryptions; we rotate the active data key
//! automatically after [`KEY_ENCRYPTIONS_MAX`] = 2^31. The count survives
//! restarts: encryptions are reserved in blocks that are persisted before
//! use, and a restart assumes the whole reserved block was used.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Encryptions one data key may perform before it is rotated out.
pub const KEY_ENCRYPTIONS_MAX: u64 = 1 << 31;
/// Encryptions reserved (and persisted) at a time.
const RESERVATION_BLOCK: u64 = 1 << 20;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const CHECK_PLAINTEXT: &[u8] = b"strongbox keyring check v1";
const CHECK_AAD: &[u8] = b"strongbox keyring check";
const FILE_FORMAT: u32 = 1;
pub const KEYRING_FILE: &str = "keyring.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("the master key does not open the keyring {path}: wrong key (nothing was changed)")]
    WrongMasterKey { path: String },
    #[error("keyring {path}: {reason}")]
    File { path: String, reason: String },
}

/// The key-encryption key: 32 bytes, hex in its file or variable.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn from_hex(text: &str) -> Result<MasterKey, KeyringError> {
        let text = Zeroizing::new(text.trim().to_string());
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_bytes(), &mut key[..])
            .map_err(|_| KeyringError::MasterKey("must be 64 hex characters (32 bytes)".into()))?;
        Ok(MasterKey(key))
    }

    /// Reads a master key file; refuses one that others may read.
    pub fn load_file(path: &Path) -> Result<MasterKey, KeyringError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| KeyringError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyringError::MasterKey(format!(
                "{} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
                path.display()
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| KeyringError::MasterKey(format!("cannot read {}: {e}", path.display())))?,
        );
        Self::from_hex(&text).map_err(|e| KeyringError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// A new random master key and its hex form (for writing to a file).
    pub fn generate() -> (MasterKey, Zeroizing<String>) {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut key[..]);
        let text = Zeroizing::new(hex::encode(&key[..]));
        (MasterKey(key), text)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0[..]).expect("32-byte key")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    /// hex(nonce || ciphertext) of CHECK_PLAINTEXT under the master key.
    check: String,
    active: u32,
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    id: u32,
    /// hex(nonce || ciphertext) of the data key under the master key.
    wrapped: String,
    created_ms: u64,
    /// Encryptions this key may have performed (persisted before use).
    reserved_encryptions: u64,
    /// Retired keys encrypt nothing and open nothing.
    retired: bool,
}

/// A data key as `keys status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: u32,
    pub active: bool,
    pub retired: bool,
    pub created_ms: u64,
    pub encryptions_reserved: u64,
}

struct State {
    file: KeyringFile,
    ciphers: BTreeMap<u32, Aes256Gcm>,
    master: MasterKey,
}

pub struct Keyring {
    path: PathBuf,
    state: RwLock<State>,
    /// Encryptions by the active key, and how many are persisted as reserved.
    used: AtomicU64,
    reserved: AtomicU64,
    reserve_lock: Mutex<()>,
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal_append(cipher, aad, plain, &mut out);
    out
}

/// Appends `nonce || ciphertext || tag` to `out`, encrypting in place: apply
/// seals every record it writes, and a buffer per step was a tenth of it.
fn seal_append(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    out.reserve(NONCE_BYTES + plain.len() + TAG_BYTES);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[start..])
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    out.extend_from_slice(&tag);
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_BYTES + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_BYTES);
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

fn wrap_aad(id: u32) -> Vec<u8> {
    format!("strongbox data key {id}").into_bytes()
}

fn now_ms() -> u64 {
    // The keyring is node-local bookkeeping, not state-machine state: a
    // clock here does not touch determinism.
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn new_entry(master: &MasterKey, id: u32) -> (KeyEntry, Aes256Gcm) {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut key[..]);
    let wrapped = hex::encode(seal_with(&master.cipher(), &wrap_aad(id), &key[..]));
    let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("32-byte key");
    (KeyEntry { id, wrapped, created_ms: now_ms(), reserved_encryptions: 0, retired: false }, cipher)
}

impl Keyring {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(KEYRING_FILE)
    }

    pub fn exists(dir: &Path) -> bool {
        Self::path_in(dir).exists()
    }

    /// Creates a keyring with one data key. Refuses to overwrite one.
    pub fn create(dir: &Path, master: MasterKey) -> Result<Keyring, KeyringError> {
        let path = Self::path_in(dir);
        if path.exists() {
            return Err(KeyringError::File {
                path: path.display().to_string(),
                reason: "already exists".into(),
            });
        }
        let (entry, cipher) = new_entry(&master, 1);
        let check = hex::encode(seal_with(&master.cipher(), CHECK_AAD, CHECK_PLAINTEXT));
        let file = KeyringFile { format: FILE_FORMAT, check, active: 1, keys: vec![entry] };
        let state = State { file, ciphers: BTreeMap::from([(1, cipher)]), master };
        let k = Keyring {
            path,
            state: RwLock::new(state),
            used: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            reserve_lock: Mutex::new(()),
        };
        k.persist(&k.state.read().expect("keyring lock").file)?;
        Ok(k)
    }

    /// Opens an existing keyring. A wrong master key is refused before
    /// anything is changed on disk.
    pub fn open(dir: &Path, master: MasterKey) -> Result<Keyring, KeyringError> {
        let path = Self::path_in(dir);
        let err = |reason: String| KeyringError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let file: KeyringFile = serde_json::from_str(&text).map_err(|e| err(format!("unreadable: {e}")))?;
        if file.format != FILE_FORMAT {
            return Err(err(format!("unknown format {}", file.format)));
        }
        let check = hex::decode(&file.check).map_err(|_| err("check value is not hex".into()))?;
        if open_with(&master.cipher(), CHECK_AAD, &check).as_deref() != Some(CHECK_PLAINTEXT) {
            return Err(KeyringError::WrongMasterKey { path: path.display().to_string() });
        }
        let mut ciphers = BTreeMap::new();
        for e in file.keys.iter().filter(|e| !e.retired) {
            let wrapped =
                hex::decode(&e.wrapped).map_err(|_| err(format!("data key {} is not hex", e.id)))?;
            let key =
                Zeroizing::new(open_with(&master.cipher(), &wrap_aad(e.id), &wrapped).ok_or_else(|| {
                    err(format!("data key {} does not unwrap: the keyring was tampered with", e.id))
                })?);
            ciphers.insert(
                e.id,
                Aes256Gcm::new_from_slice(&key)
                    .map_err(|_| err(format!("data key {} has a bad length", e.id)))?,
            );
        }
        if !ciphers.contains_key(&file.active) {
            return Err(err(format!("the active data key {} is missing or retired", file.active)));
        }
        let used = file.keys.iter().find(|e| e.id == file.active).map_or(0, |e| e.reserved_encryptions);
        Ok(Keyring {
            path,
            state: RwLock::new(State { file, ciphers, master }),
            // Whatever was reserved may have been used before a crash.
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(used),
            reserve_lock: Mutex::new(()),
        })
    }

    fn persist(&self, file: &KeyringFile) -> Result<(), KeyringError> {
        let err = |e: std::io::Error| KeyringError::File {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(serde_json::to_string_pretty(file).expect("keyring serialises").as_bytes())
                .map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }

    /// The active key id and an encryption under it: `(key_id, nonce || ct)`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> (u32, Vec<u8>) {
        let mut out = Vec::new();
        let id = self.seal_into(aad, plain, &mut out);
        (id, out)
    }

    /// Like `seal`, appending `nonce || ct` to `out`; returns the key id.
    pub fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> u32 {
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n >= self.reserved.load(Ordering::Acquire) {
            self.reserve(n);
        }
        let s = self.state.read().expect("keyring lock");
        let id = s.file.active;
        seal_append(&s.ciphers[&id], aad, plain, out);
        id
    }

    /// Persists the next block of encryptions before they happen; rotates
    /// the key when it has done its share. A node that cannot write its
    /// keyring must stop rather than risk nonce reuse.
    fn reserve(&self, n: u64) {
        let _g = self.reserve_lock.lock().expect("keyring lock");
        if n < self.reserved.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.write().expect("keyring lock");
        let upto = n + RESERVATION_BLOCK;
        if upto > KEY_ENCRYPTIONS_MAX {
            drop(s);
            self.rotate().expect("cannot persist the keyring (data key rotation); stopping");
            return;
        }
        let active = s.file.active;
        let mut file = s.file.clone();
        file.keys.iter_mut().filter(|e| e.id == active).for_each(|e| e.reserved_encryptions = upto);
        self.persist(&file).expect("cannot persist the keyring (encryption reservation); stopping");
        s.file = file;
        self.reserved.store(upto, Ordering::Release);
    }

    /// Opens a value sealed under data key `id`; `None` if the key is
    /// unknown or retired, `Some(Err)` if authentication fails.
    pub fn decrypt(&self, id: u32, aad: &[u8], sealed: &[u8]) -> Option<Option<Vec<u8>>> {
        let s = self.state.read().expect("keyring lock");
        let cipher = s.ciphers.get(&id)?;
        Some(open_with(cipher, aad, sealed))
    }

    pub fn active(&self) -> u32 {
        self.state.read().expect("keyring lock").file.active
    }

    /// A new data key for all new writes, at once. Older keys stay usable
    /// for reading until [`Keyring::retire_older_than`].
    pub fn rotate(&self) -> Result<u32, KeyringError> {
        let mut s = self.state.write().expect("keyring lock");
        let id = s.file.keys.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let (mut entry, cipher) = new_entry(&s.master, id);
        entry.reserved_encryptions = RESERVATION_BLOCK;
        let mut file = s.file.clone();
        file.keys.push(entry);
        file.active = id;
        self.persist(&file)?;
        s.file = file;
        s.ciphers.insert(id, cipher);
        self.used.store(0, Ordering::Release);
        self.reserved.store(RESERVATION_BLOCK, Ordering::Release);
        Ok(id)
    }

    /// Retires every key older than `id` (after a re-encryption pass has
    /// re-sealed everything under `id` or newer keys). Ids only grow.
    pub fn retire_older_than(&self, id: u32) -> Result<Vec<u32>, KeyringError> {
        let mut s = self.state.write().expect("keyring lock");
        assert!(id <= s.file.active, "key {id} is newer than the active one");
        let mut file = s.file.clone();
        let mut retired = Vec::new();
        for e in file.keys.iter_mut().filter(|e| e.id < id && !e.retired) {
            e.retired = true;
            // Crypto-shredding: without the wrapped key, old ciphertexts
            // left in RocksDB's files can never be opened again.
            e.wrapped = String::new();
            retired.push(e.id);
        }
        if retired.is_empty() {
            return Ok(retired);
        }
        self.persist(&file)?;
        s.file = file;
        for id in &retired {
            s.ciphers.remove(id);
        }
        Ok(retired)
    }

    /// Re-wraps every data key under a new master key; no data is rewritten.
    pub fn rewrap(&self, new_master: MasterKey) -> Result<(), KeyringError> {
        let mut s = self.state.write().expect("keyring lock");
        let mut file = s.file.clone();
        let old = s.master.cipher();
        let new = new_master.cipher();
        for e in file.keys.iter_mut().filter(|e| !e.retired) {
            let wrapped = hex::decode(&e.wrapped).map_err(|_| KeyringError::File {
                path: self.path.display().to_string(),
                reason: format!("data key {} is not hex", e.id),
            })?;
            let key = Zeroizing::new(open_with(&old, &wrap_aad(e.id), &wrapped).ok_or_else(|| {
                KeyringError::File {
                    path: self.path.display().to_string(),
                    reason: format!("data key {} does not unwrap", e.id),
                }
            })?);
            e.wrapped = hex::encode(seal_with(&new, &wrap_aad(e.id), &key));
        }
        file.check = hex::encode(seal_with(&new, CHECK_AAD, CHECK_PLAINTEXT));
        self.persist(&file)?;
        s.file = file;
        s.master = new_master;
        Ok(())
    }

    pub fn keys(&self) -> Vec<KeyInfo> {
        let s = self.state.read().expect("keyring lock");
        s.file
            .keys
            .iter()
            .map(|e| KeyInfo {
                id: e.id,
                active: e.id == s.file.active,
                retired: e.retired,
                created_ms: e.created_ms,
                encryptions_reserved: e.reserved_encryptions,
            })
            .collect()
    }
}
