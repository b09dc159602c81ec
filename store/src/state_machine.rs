//! Applying commands: deterministic, batched, all-or-nothing per command.
//!
//! Entries are applied through an [`ApplyBatch`]: one RocksDB WriteBatch for
//! the whole group of log entries openraft hands over. Reads inside the batch
//! see the writes of earlier entries of the same batch (an overlay), so the
//! result is identical to applying entries one by one, however a node happens
//! to group them. Each command writes into its own [`Tx`] first; a refused
//! command leaves no trace but its recorded answer.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::audit::{self, AuditRecord};
use crate::auth::{self, Caller, PrincipalRecord, Read, RoleRecord, TokenHash, TokenRecord};
use crate::command::{
    Actor, Command, CommandError, Ctx, ErrorCode, Op, Outcome, Required, Response, SecretMeta, SecretVersion,
};
use crate::db::{decode, encode, Db, DbError, FLOOR_CFS};
use crate::feed::{
    self, FeedRecord, FEED_PRUNE_BYTES_PER_COMMAND_MAX, FEED_PRUNE_PER_COMMAND_MAX, FEED_RETAIN_MS,
    FEED_RETAIN_REVISIONS,
};
use crate::layout::{sm_keys, Cf};
use crate::ledger::cache::AccountCache;
use crate::ledger::model::{Account, LedgerTotals, StoredTransfer, Transfer};
use crate::limits::{DEDUP_WINDOW_MS, TOKEN_PRUNE_PER_BATCH_MAX};
use crate::names::{IndexEntry, NameKey};
use crate::overlay::{Key, Overlay};
use crate::requests::{self, RequestRecord};

#[derive(Clone)]
pub struct StateMachine {
    db: Db,
    /// The cluster's name key once known, so reads need not open it from
    /// `SmMeta` every time. Bootstrap sets it once per cluster; a snapshot
    /// install (`install`) forgets it, to be read again.
    names: std::sync::Arc<std::sync::RwLock<Option<NameKey>>>,
    /// Committed accounts, decoded (see `ledger::cache`).
    accounts: std::sync::Arc<AccountCache>,
    /// Secret folders known to be listed (see `folder_cache`).
    folders: std::sync::Arc<crate::folder_cache::FolderCache>,
    /// Odd while a snapshot is being installed (in several batches, see
    /// `snapshot::install`): the state is partial, so reads are refused.
    /// Left odd if the install fails (the node stops on that error). A
    /// reader that sees the same even value before and after its reads saw
    /// no install (a seqlock: a check before the reads alone would miss an
    /// install that starts while they run).
    install_epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Callers of requests, by token (see `caller_cache`).
    callers: std::sync::Arc<crate::caller_cache::CallerCache>,
    /// The feed's byte budget (`feed::FEED_RETAIN_BYTES`; tests set less).
    /// Apply prunes by it, so every node of a cluster must have the same.
    feed_retain_bytes: u64,
    /// The applied clock as of the last batch this process committed (0
    /// before one): token checks outside apply never run behind it.
    applied_clock_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One entry of a secret folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// `name` for a secret, `name/` for a sub-folder.
    pub name: String,
    pub folder: bool,
}

/// A secret as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretView {
    pub path: String,
    pub version: u64,
    pub value: Vec<u8>,
    pub created_ms: u64,
    pub revision: u64,
    pub latest_version: u64,
}

/// One kept version of a secret, as `secret_versions` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    pub version: u64,
    /// None: destroyed (the value is gone for good).
    pub created_ms: Option<u64>,
    /// The revision that wrote it; None: destroyed.
    pub revision: Option<u64>,
    /// When it was soft-deleted, if it is.
    pub deleted_ms: Option<u64>,
}

impl StateMachine {
    pub fn new(db: Db) -> Self {
        // Unreadable now, it is read again at the first apply.
        let clock_ms = db.get::<u64>(Cf::SmMeta, sm_keys::CLOCK_MS).ok().flatten().unwrap_or(0);
        StateMachine {
            db,
            names: Default::default(),
            accounts: Default::default(),
            folders: Default::default(),
            install_epoch: Default::default(),
            callers: Default::default(),
            feed_retain_bytes: feed::FEED_RETAIN_BYTES,
            applied_clock_ms: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(clock_ms)),
        }
    }

    /// A smaller feed byte budget than `feed::FEED_RETAIN_BYTES`, for tests:
    /// apply prunes by it, so nodes of one cluster must agree on it.
    pub fn with_feed_retain_bytes(mut self, bytes: u64) -> Self {
        self.feed_retain_bytes = bytes;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Replaces the whole state with an image (`snapshot::install`: bounded
    /// batches, the position last, with the caller's writes in the final,
    /// synced batch). Cached names and accounts are dropped; reads are
    /// refused meanwhile (`installing`).
    pub fn install(
        &self,
        image: &mut crate::snapshot::FrameReader,
        last: impl FnOnce(&mut crate::db::Batch),
    ) -> Result<(), DbError> {
        use std::sync::atomic::Ordering;
        // Installs are serialised; after a failed one the epoch is odd already.
        if !self.installing() {
            self.install_epoch.fetch_add(1, Ordering::SeqCst);
        }
        // The name key cache is emptied at both ends, its lock not held
        // across the install: a reader blocked on it would block an async
        // worker for as long as the image takes. `names` caches nothing read
        // while the epoch is odd or changes under it.
        *self.names.write().expect("names lock") = None;
        self.db.forget_floors();
        self.callers.invalidate();
        let installed = crate::snapshot::install(&self.db, image, last);
        self.db.forget_floors();
        self.callers.invalidate();
        self.accounts.clear();
        self.folders.clear();
        *self.names.write().expect("names lock") = None;
        if installed.is_ok() {
            if let Ok(Some(clock_ms)) = self.db.get::<u64>(Cf::SmMeta, sm_keys::CLOCK_MS) {
                self.applied_clock_ms.fetch_max(clock_ms, Ordering::Relaxed);
            }
            self.install_epoch.fetch_add(1, Ordering::SeqCst);
        }
        installed
    }

    /// True while a snapshot install has replaced part of the state.
    pub fn installing(&self) -> bool {
        self.install_epoch() % 2 == 1
    }

    /// Changes when an install starts and when it ends (see the field).
    pub fn install_epoch(&self) -> u64 {
        self.install_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The cluster revision of the applied state.
    pub fn revision(&self) -> Result<u64, DbError> {
        Ok(self.db.get::<u64>(Cf::SmMeta, sm_keys::REVISION)?.unwrap_or(0))
    }

    pub fn begin(&self) -> Result<ApplyBatch<'_>, DbError> {
        let clock_ms = self.db.get::<u64>(Cf::SmMeta, sm_keys::CLOCK_MS)?.unwrap_or(0);
        let scoped_since_ms = self.db.get::<u64>(Cf::SmMeta, sm_keys::REQUESTS_SCOPED_SINCE_MS)?;
        let by_principal_since_ms =
            self.db.get::<u64>(Cf::SmMeta, sm_keys::REQUESTS_BY_PRINCIPAL_SINCE_MS)?;
        let feed_oldest = self.feed_oldest_meta()?;
        let (feed_bytes, feed_oldest_bytes) = self.feed_sizes(feed_oldest)?;
        Ok(ApplyBatch {
            sm: self,
            overlay: Overlay::default(),
            callers: Default::default(),
            first_keys: Default::default(),
            revision: self.revision()?,
            clock_ms,
            begin_clock_ms: clock_ms,
            scoped_since_ms,
            by_principal_since_ms,
            audit_head: self.audit_head()?,
            feed_oldest,
            feed_oldest_bytes,
            feed_bytes,
            names: self.names()?,
            state_version: self.state_version()?,
        })
    }

    /// A record of `SmMeta` written by the Raft layer (its position, membership).
    pub fn meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db.get(Cf::SmMeta, key)
    }

    /// The state version the cluster applies by (see `SetStateVersion`).
    pub fn state_version(&self) -> Result<u32, DbError> {
        Ok(self.db.get::<u32>(Cf::SmMeta, sm_keys::STATE_VERSION)?.unwrap_or(1))
    }

    /// Refuses a state of a version this build does not apply (a newer
    /// cluster's data dir or image on an older binary).
    pub fn check_state_version(&self) -> Result<(), DbError> {
        match self.state_version()? {
            v if v > crate::command::STATE_VERSION_SUPPORTED => {
                Err(crate::command::set_state_version::unsupported(v))
            }
            _ => Ok(()),
        }
    }

    pub fn bootstrapped(&self) -> Result<bool, DbError> {
        Ok(self.db.get::<bool>(Cf::SmMeta, sm_keys::BOOTSTRAPPED)?.is_some())
    }

    /// The caller behind a token hash as of `now_ms` (the serving node's
    /// clock: reads are checked outside apply), or as of the applied clock
    /// if that is later: a node whose clock runs slow must not keep
    /// honouring a token the cluster's own time has seen expire.
    pub fn resolve_token(
        &self,
        hash: &TokenHash,
        now_ms: u64,
    ) -> Result<Result<Caller, CommandError>, DbError> {
        let now_ms = now_ms.max(self.applied_clock_ms.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(c) = self.callers.get(hash, now_ms) {
            return Ok(Ok(c));
        }
        let generation = self.callers.generation();
        // One point in time: a batch applied meanwhile (a role's rules and
        // its grant changed together, say) is seen whole or not at all.
        let resolved = auth::resolve(&View { sm: self, view: self.db.view() }, hash, now_ms)?;
        if let Ok(c) = &resolved {
            self.callers.store(generation, c.clone());
        }
        Ok(resolved)
    }

    pub fn token(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, DbError> {
        self.db.get(Cf::Tokens, hash)
    }

    pub fn principal(&self, p: &auth::Principal) -> Result<Option<PrincipalRecord>, DbError> {
        auth::principal_record(self, p)
    }

    /// Users (`clients = false`) or clients, by name, after `after`.
    pub fn list_principals(
        &self,
        clients: bool,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, PrincipalRecord)>, DbError> {
        let cf = if clients { Cf::Clients } else { Cf::Users };
        self.list_named(cf, after, limit)
    }

    pub fn role(&self, name: &str) -> Result<Option<RoleRecord>, DbError> {
        self.db.get(Cf::Roles, &self.name_key(Cf::Roles, name)?)
    }

    pub fn list_roles(&self, after: &str, limit: usize) -> Result<Vec<(String, RoleRecord)>, DbError> {
        self.list_named(Cf::Roles, after, limit)
    }

    /// Records of a name-keyed family in key (hash) order, after the one
    /// named `after`: stable for a cluster, not alphabetical.
    fn list_named<T: DeserializeOwned + Named>(
        &self,
        cf: Cf,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, DbError> {
        let from =
            if after.is_empty() { Vec::new() } else { [&self.name_key(cf, after)?[..], &[0]].concat() };
        let rows = self.db.scan::<T>(cf, &from, None, limit)?;
        Ok(rows.into_iter().map(|(_, v)| (v.name().to_string(), v)).collect())
    }

    pub fn secret_meta(&self, path: &str) -> Result<Option<SecretMeta>, DbError> {
        self.db.get(Cf::Secrets, &self.name_key(Cf::Secrets, path)?)
    }

    /// A secret's settings (cas_required, custom metadata); the defaults
    /// for a secret without a record, or no secret at all.
    pub fn secret_settings(&self, path: &str) -> Result<crate::secret_settings::SecretSettings, DbError> {
        crate::secret_settings::load(self, &self.name_key(Cf::Secrets, path)?)
    }

    /// A secret's meta and the state of each version it keeps (oldest
    /// first), all read from one point in time; None: no such secret.
    pub fn secret_versions(&self, path: &str) -> Result<Option<(SecretMeta, Vec<VersionState>)>, DbError> {
        Ok(self.secret_metadata(path)?.map(|(meta, states, _)| (meta, states)))
    }

    /// As `secret_versions`, with the secret's settings, from the same
    /// point in time (a purge and a new put between two reads would pair
    /// one secret's versions with another's settings).
    #[allow(clippy::type_complexity)]
    pub fn secret_metadata(
        &self,
        path: &str,
    ) -> Result<Option<(SecretMeta, Vec<VersionState>, crate::secret_settings::SecretSettings)>, DbError>
    {
        let names = self.names()?;
        let view = View { sm: self, view: self.db.view() };
        let key = names.key(Cf::Secrets, path);
        let Some(meta) = view.get::<SecretMeta>(Cf::Secrets, &key)? else { return Ok(None) };
        let marks = crate::secret_deletions::load(&view, &key)?;
        let mut states = Vec::new();
        // Bounded: at most SECRET_VERSIONS_LIMIT versions are kept.
        for version in meta.oldest_version..=meta.latest_version {
            let stored = view.get::<SecretVersion>(Cf::SecretVersions, &names.version_key(path, version))?;
            let deleted_ms = marks.deleted_ms(version, meta.oldest_version).or_else(|| {
                // A deletion from before state version 4 has no entry.
                (version == meta.latest_version && meta.deleted).then_some(meta.updated_ms)
            });
            states.push(VersionState {
                version,
                created_ms: stored.as_ref().map(|s| s.created_ms),
                revision: stored.as_ref().map(|s| s.revision),
                deleted_ms,
            });
        }
        let settings = crate::secret_settings::load(&view, &key)?;
        Ok(Some((meta, states, settings)))
    }

    /// The direct children of a folder (`""` is the root, else `team-a/`):
    /// secrets and sub-folders (`name/`), in index (hash) order, starting
    /// after `after`. One index scan: a folder's children share a prefix.
    pub fn list_secrets(&self, folder: &str, after: &str, limit: usize) -> Result<Vec<ListEntry>, DbError> {
        let names = self.names()?;
        let prefix = names.index_prefix(folder);
        let from = if after.is_empty() {
            prefix.to_vec()
        } else {
            [&names.index_key(folder, after)[..], &[0]].concat()
        };
        let to = [&prefix[..], &[0xff; 33]].concat();
        let rows = self.db.scan::<IndexEntry>(Cf::SecretIndex, &from, Some(&to), limit)?;
        Ok(rows
            .into_iter()
            .map(|(_, e)| {
                let folder = e.name.ends_with('/');
                ListEntry { name: e.name, folder }
            })
            .collect())
    }

    /// Change feed records from `from` on (in revision order), at most
    /// `limit` and about `FEED_READ_BYTES_MAX` stored bytes (at least one).
    pub fn feed(&self, from: u64, limit: usize) -> Result<Vec<FeedRecord>, DbError> {
        Ok(self.feed_stored(from, limit)?.into_iter().map(feed::StoredRecord::render).collect())
    }

    /// The same records as `feed`, their events not yet rendered (a tenth
    /// of the memory for ledger revisions; see `StoredRecord`).
    pub fn feed_stored(&self, from: u64, limit: usize) -> Result<Vec<feed::StoredRecord>, DbError> {
        let limit = limit.min(feed::FEED_READ_MAX);
        self.db
            .scan_raw_within(Cf::Feed, &feed::key(from), None, limit, feed::FEED_READ_BYTES_MAX)?
            .into_iter()
            .map(|(_, raw)| Ok(decode::<feed::StoredRecord>(Cf::Feed, &raw)?))
            .collect()
    }

    /// The audit chain's last record: (seq, hash); (0, zeros) when empty.
    pub fn audit_head(&self) -> Result<(u64, [u8; 32]), DbError> {
        Ok(self.db.get(Cf::SmMeta, sm_keys::AUDIT_HEAD)?.unwrap_or((0, [0; 32])))
    }

    /// Audit records from `seq` on, at most `limit`.
    pub fn audit(&self, seq: u64, limit: usize) -> Result<Vec<AuditRecord>, DbError> {
        let limit = limit.min(audit::AUDIT_READ_MAX);
        Ok(self
            .db
            .scan::<AuditRecord>(Cf::Audit, &seq.to_be_bytes(), None, limit)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Walks the whole replicated audit chain up to its head.
    pub fn verify_audit(&self) -> Result<audit::Verdict, DbError> {
        audit::walk((0, [0; 32]), self.audit_head()?, |from| self.audit(from, audit::AUDIT_READ_MAX))
    }

    /// The oldest revision the feed still holds (None: no record yet).
    pub fn feed_oldest(&self) -> Result<Option<u64>, DbError> {
        Ok(self.feed_oldest_meta()?.map(|(revision, _)| revision))
    }

    /// Encoded bytes of the feed records kept, as apply counts them for
    /// retention by bytes.
    pub fn feed_bytes(&self) -> Result<u64, DbError> {
        Ok(self.feed_sizes(self.feed_oldest_meta()?)?.0)
    }

    /// (bytes of the feed records kept, bytes of the oldest one). A state
    /// written before retention by bytes (an upgraded data dir, an older
    /// image), or changed by a build that did not keep the sizes, has none
    /// for its revision: they are counted here from the records themselves,
    /// so they are a function of the stored feed and every node arrives at
    /// the same figures.
    fn feed_sizes(&self, oldest: Option<(u64, u64)>) -> Result<(u64, u64), DbError> {
        let kept = self.db.get::<(u64, u64, u64)>(Cf::SmMeta, sm_keys::FEED_SIZES)?;
        if let Some((bytes, oldest_bytes, at)) = kept {
            if at == self.revision()? {
                return Ok((bytes, oldest_bytes));
            }
        }
        let Some((oldest, _)) = oldest else { return Ok((0, 0)) };
        let (mut total, mut first) = (0u64, None);
        let mut from = feed::key(oldest).to_vec();
        loop {
            let rows = self.db.scan_raw(Cf::Feed, &from, None, FEED_RECOUNT_CHUNK_RECORDS)?;
            let Some((last, _)) = rows.last() else { break };
            from = [&last[..], &[0]].concat();
            for (_, value) in &rows {
                first.get_or_insert(value.len() as u64);
                total += value.len() as u64;
            }
        }
        Ok((total, first.unwrap_or(0)))
    }

    /// (revision, time_ms) of the oldest feed record, as apply tracks it.
    fn feed_oldest_meta(&self) -> Result<Option<(u64, u64)>, DbError> {
        Ok(self.db.get::<Option<(u64, u64)>>(Cf::SmMeta, sm_keys::FEED_OLDEST)?.flatten())
    }

    /// Reads a secret: the latest live version, or a given one.
    pub fn get_secret(&self, path: &str, version: Option<u64>) -> Result<Option<SecretView>, DbError> {
        Ok(self.get_secret_at(path, version)?.0)
    }

    /// As `get_secret`, with the revision of the state it was read from:
    /// all from one point in time, so a reader that resyncs from it and
    /// watches the feed from the next revision misses nothing.
    pub fn get_secret_at(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<(Option<SecretView>, u64), DbError> {
        let names = self.names()?;
        let view = View { sm: self, view: self.db.view() };
        let revision = view.get::<u64>(Cf::SmMeta, sm_keys::REVISION)?.unwrap_or(0);
        let key = names.key(Cf::Secrets, path);
        let Some(meta) = view.get::<SecretMeta>(Cf::Secrets, &key)? else {
            return Ok((None, revision));
        };
        let version = match version {
            // A soft-deleted latest version is hidden however it is asked for.
            Some(v) if meta.deleted && v == meta.latest_version => return Ok((None, revision)),
            Some(v) if v < meta.latest_version => {
                let marks = crate::secret_deletions::load(&view, &key)?;
                if marks.deleted_ms(v, meta.oldest_version).is_some() {
                    return Ok((None, revision));
                }
                v
            }
            Some(v) => v,
            None if meta.deleted => return Ok((None, revision)),
            None => meta.latest_version,
        };
        let Some(v) = view.get::<SecretVersion>(Cf::SecretVersions, &names.version_key(path, version))?
        else {
            return Ok((None, revision));
        };
        let found = Some(SecretView {
            path: path.to_string(),
            version,
            value: v.value,
            created_ms: v.created_ms,
            revision: v.revision,
            latest_version: meta.latest_version,
        });
        Ok((found, revision))
    }
}

/// Applies a group of log entries as one atomic write.
pub struct ApplyBatch<'a> {
    sm: &'a StateMachine,
    overlay: Overlay,
    revision: u64,
    clock_ms: u64,
    /// The clock when the batch began (a new dedup bucket drops old ones).
    begin_clock_ms: u64,
    /// `sm_keys::REQUESTS_SCOPED_SINCE_MS`, once read or set.
    scoped_since_ms: Option<u64>,
    /// When request ids moved to principal scope (see
    /// `set_state_version::REQUEST_IDS_BY_PRINCIPAL`); read again when a
    /// command of the batch moves the state version.
    by_principal_since_ms: Option<u64>,
    /// The audit chain's last record: (seq, hash).
    audit_head: (u64, [u8; 32]),
    /// The oldest feed record kept: (revision, time_ms).
    feed_oldest: Option<(u64, u64)>,
    /// Its encoded size.
    feed_oldest_bytes: u64,
    /// Encoded bytes of the feed records kept (see `feed_bytes`).
    feed_bytes: u64,
    /// The key that hashes names (set by `Bootstrap`).
    names: NameKey,
    /// The state version (see `SetStateVersion`), as of the last command.
    state_version: u32,
    /// Callers resolved earlier in this batch (many commands of a batch
    /// carry the same token). Pure memoisation: dropped whenever a command
    /// changes tokens, principals or roles, and re-checked for expiry.
    callers: std::collections::HashMap<TokenHash, std::sync::Arc<Caller>>,
    /// The first key of a column family in the database, read once per
    /// batch (the database does not change while a batch is applied).
    first_keys: std::cell::RefCell<std::collections::HashMap<Cf, Option<Vec<u8>>>>,
}

/// Feed records read per step when the feed's size is counted afresh.
const FEED_RECOUNT_CHUNK_RECORDS: usize = 256;

/// Column families whose change can change who a token is and what it may do.
const AUTH_CFS: [Cf; 4] = [Cf::Tokens, Cf::Users, Cf::Clients, Cf::Roles];

impl<'a> ApplyBatch<'a> {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn read(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.overlay.get(&Key::new(cf, key)) {
            Some(v) => Ok(v.clone()),
            None => self.sm.db.get_raw(cf, key),
        }
    }

    /// Applies one command. `Err` is a storage failure (the node must stop);
    /// a refused command is an `Ok(Response)` carrying its error.
    pub fn apply(&mut self, cmd: &Command) -> Result<Response, DbError> {
        self.clock_ms = self.clock_ms.max(cmd.time_ms);
        if let Err(e) = cmd.validate() {
            // The proposer validated too; a command that fails here is refused
            // the same way on every node and, lacking a usable id, not recorded.
            return Ok(Response { revision: self.revision, result: Err(e), deduplicated: false });
        }

        // Request ids are scoped by caller: another caller's id, however
        // equal, is another request (and must not see this one's answer).
        // Records written before ids were scoped are probed too; they leave
        // the window ten minutes after an upgrade.
        let token_hash = requests::scoped_id_hash(&self.names, cmd);
        // From state version 3, by the principal behind a live token: a
        // retry under a new token (after logging in again) is the same
        // request. Token-scoped records stay findable for one window after
        // the move.
        let (id_hash, token_scoped_hash) = match self.live_principal(cmd)? {
            Some(p) => {
                let old = self.token_scoped_records_live().then_some(token_hash);
                (requests::principal_id_hash(&self.names, &p, &cmd.request_id), old)
            }
            None => (token_hash, None),
        };
        let unscoped_hash =
            self.unscoped_records_live()?.then(|| self.names.key(Cf::Requests, &cmd.request_id));
        for hash in std::iter::once(id_hash).chain(token_scoped_hash).chain(unscoped_hash) {
            for probe in requests::probe_keys(self.clock_ms, &hash) {
                let Some(raw) = self.read(Cf::Requests, &probe)? else { continue };
                let rec = RequestRecord::decode(&raw)?;
                // Expiry is logical (state-machine time), so it is the same on
                // every node whatever physical pruning has happened.
                if rec.time_ms + DEDUP_WINDOW_MS >= self.clock_ms {
                    let response = match rec.intent {
                        Some(intent) if intent != cmd.op.intent() => Response {
                            revision: self.revision,
                            result: Err(reused_request_id(cmd)),
                            deduplicated: false,
                        },
                        _ => Response { deduplicated: true, ..rec.response },
                    };
                    let actor = self.actor_name(cmd)?;
                    self.record_audit(cmd, actor, audit::outcome(&response.result, response.deduplicated));
                    return Ok(response);
                }
                // The newest record is out of its window: a new request, whose
                // record goes into the current bucket beside the old one.
                break;
            }
        }

        let clock_ms = self.clock_ms;
        let cached = match &cmd.actor {
            // Shared, not copied: a caller holds its roles and their rules.
            Actor::Token(h) => self.callers.get(h).filter(|c| c.token.expires_ms > clock_ms).cloned(),
            Actor::Node => None,
        };
        let mut tx = Tx::new(self);
        let mut resolved = None;
        let actor;
        let result: Result<Outcome, _> = match authorize(&tx, cmd, clock_ms, cached)? {
            Ok(caller) => {
                actor = caller.as_ref().map_or_else(|| "node".to_string(), |c| c.principal.to_string());
                let r = cmd.op.apply(&mut tx, &Ctx { caller: caller.as_deref() })?;
                resolved = caller;
                r
            }
            Err(e) => {
                actor = actor_of(&tx, cmd, clock_ms)?;
                Err(e)
            }
        };
        if result.is_err() {
            // Refused: none of its writes stay.
            tx.rollback_to(0);
        } else {
            tx.flush_ledger();
        }
        let Tx { touched_auth, bumps_revision, expired, names, state_version, .. } = tx;
        if let Ok(outcome) = &result {
            self.names = names;
            if state_version != self.state_version {
                self.by_principal_since_ms =
                    match self.read(Cf::SmMeta, sm_keys::REQUESTS_BY_PRINCIPAL_SINCE_MS)? {
                        Some(raw) => Some(decode::<u64>(Cf::SmMeta, &raw)?),
                        None => None,
                    };
            }
            self.state_version = state_version;
            let actor = actor.clone();
            if touched_auth {
                self.callers.clear();
                resolved = None;
            }
            if bumps_revision {
                self.revision += 1;
                self.record_change(cmd, outcome, actor, &expired)?;
            }
        }
        if let Some(c) = resolved {
            self.callers.insert(c.token_hash, c);
        }
        let response = Response { revision: self.revision, result, deduplicated: false };
        self.record_audit(cmd, actor, audit::outcome(&response.result, false));

        let rec = RequestRecord {
            time_ms: self.clock_ms,
            response: response.clone(),
            intent: Some(cmd.op.intent()),
        };
        // Keyed again after a bootstrap: it has just set the key.
        let id_hash = match cmd.op {
            Op::Bootstrap(_) => requests::scoped_id_hash(&self.names, cmd),
            _ => id_hash,
        };
        let key = requests::key(requests::bucket(self.clock_ms), &id_hash);
        self.overlay.insert(Key::new(Cf::Requests, &key), Some(encode(&rec)));
        Ok(response)
    }

    /// The principal a command's request id is scoped by (state version 3
    /// on): the one behind its token while the token is live by apply's
    /// clock. An expired token counts as gone whether or not the prune has
    /// deleted it on this node yet, so every node picks the same scope.
    fn live_principal(&self, cmd: &Command) -> Result<Option<crate::auth::Principal>, DbError> {
        let Actor::Token(h) = &cmd.actor else { return Ok(None) };
        if self.state_version < crate::command::set_state_version::REQUEST_IDS_BY_PRINCIPAL {
            return Ok(None);
        }
        if let Some(c) = self.callers.get(h).filter(|c| c.token.expires_ms > self.clock_ms) {
            return Ok(Some(c.principal.clone()));
        }
        let Some(raw) = self.read(Cf::Tokens, h)? else { return Ok(None) };
        let token = decode::<crate::auth::TokenRecord>(Cf::Tokens, &raw)?;
        Ok((token.expires_ms > self.clock_ms).then_some(token.principal))
    }

    /// Whether request records scoped by token (before state version 3)
    /// may still be inside their window.
    fn token_scoped_records_live(&self) -> bool {
        self.by_principal_since_ms
            .is_some_and(|since_ms| self.clock_ms <= since_ms.saturating_add(DEDUP_WINDOW_MS))
    }

    /// Whether a request record of the unscoped kind (written before ids
    /// were scoped by caller) may still be inside its window. The first
    /// batch a build with scoping applies records when that began: at once
    /// on a state that never applied anything and holds no request record
    /// (so never on a new cluster),
    /// else at its clock. The same on every node: it is apply's own state.
    fn unscoped_records_live(&mut self) -> Result<bool, DbError> {
        let since = match self.scoped_since_ms {
            Some(since) => since,
            None => {
                let fresh =
                    self.begin_clock_ms == 0 && self.sm.db.scan_raw(Cf::Requests, &[], None, 1)?.is_empty();
                let since = if fresh { 0 } else { self.clock_ms };
                self.scoped_since_ms = Some(since);
                let key = Key::new(Cf::SmMeta, sm_keys::REQUESTS_SCOPED_SINCE_MS);
                self.overlay.insert(key, Some(encode(&since)));
                since
            }
        };
        Ok(since > 0 && self.clock_ms <= since.saturating_add(DEDUP_WINDOW_MS))
    }

    /// Who a command ran as, for the audit trail.
    fn actor_name(&mut self, cmd: &Command) -> Result<String, DbError> {
        let clock_ms = self.clock_ms;
        let tx = Tx::new(self);
        actor_of(&tx, cmd, clock_ms)
    }

    /// Appends the command's audit record to the chain.
    fn record_audit(&mut self, cmd: &Command, actor: String, outcome: String) {
        let (rec, encoded) =
            audit::seal(self.audit_head, cmd, actor, outcome, self.revision, self.state_version);
        self.audit_head = (rec.seq, rec.hash);
        self.overlay.insert(Key::new(Cf::Audit, &rec.seq.to_be_bytes()), Some(encoded));
    }

    /// The change feed record of the revision just made, and the removal of
    /// the one that falls out of retention (see `feed`).
    fn record_change(
        &mut self,
        cmd: &Command,
        outcome: &Outcome,
        actor: String,
        expired: &[u128],
    ) -> Result<(), DbError> {
        let applied = |id: u128| -> Result<Option<Transfer>, DbError> {
            let raw = self.read(Cf::Transfers, &crate::ledger::id_key(id))?;
            raw.map(|r| decode::<StoredTransfer>(Cf::Transfers, &r).map(|s| s.transfer)).transpose()
        };
        let events = feed::describe(&cmd.op, outcome, &actor, expired, &applied)?;
        let record = feed::StoredRecord::new(self.revision, cmd.time_ms, actor, events);
        let encoded = encode(&record);
        let bytes = encoded.len() as u64;
        self.overlay.insert(Key::new(Cf::Feed, &feed::key(self.revision)), Some(encoded));
        self.feed_bytes += bytes;
        if self.feed_oldest.is_none() {
            self.feed_oldest = Some((self.revision, cmd.time_ms));
            self.feed_oldest_bytes = bytes;
        }
        self.prune_feed()
    }

    /// Drops the oldest feed records past retention (count or age, by the
    /// state-machine clock, a few per command; bytes, more per command): the
    /// same records on every node (sizes are of the encoded records, the
    /// same everywhere), and bounded work whatever the backlog. The record
    /// just written always stays.
    fn prune_feed(&mut self) -> Result<(), DbError> {
        for pruned in 0..FEED_PRUNE_BYTES_PER_COMMAND_MAX {
            let Some((oldest, time_ms)) = self.feed_oldest.filter(|(oldest, _)| *oldest < self.revision)
            else {
                return Ok(());
            };
            let too_many = self.revision + 1 - oldest > FEED_RETAIN_REVISIONS;
            let too_old = time_ms.saturating_add(FEED_RETAIN_MS) < self.clock_ms;
            let too_big = self.feed_bytes > self.sm.feed_retain_bytes;
            if !(too_big || ((too_many || too_old) && pruned < FEED_PRUNE_PER_COMMAND_MAX)) {
                return Ok(());
            }
            self.overlay.insert(Key::new(Cf::Feed, &feed::key(oldest)), None);
            // Always covered (the count is of the stored records); saturating
            // because a retention bound is not worth stopping apply for.
            self.feed_bytes = self.feed_bytes.saturating_sub(self.feed_oldest_bytes);
            // Revisions are gap-free: the next record is the next revision.
            (self.feed_oldest, self.feed_oldest_bytes) = match self.read(Cf::Feed, &feed::key(oldest + 1))? {
                Some(raw) => {
                    let time_ms = feed::stored_time_ms(&raw)?;
                    (Some((oldest + 1, time_ms)), raw.len() as u64)
                }
                None => (None, 0),
            };
        }
        Ok(())
    }

    /// Bounded physical removal of expired tokens, once per batch.
    fn prune_tokens(&mut self) -> Result<(), DbError> {
        let upto = (self.clock_ms + 1).to_be_bytes();
        let old = self.sm.db.scan_raw(Cf::TokensByExpiry, &[], Some(&upto), TOKEN_PRUNE_PER_BATCH_MAX)?;
        for (k, _) in old {
            // Renewed or revoked in this batch: the overlay already moved it.
            if self.overlay.get(&Key::new(Cf::TokensByExpiry, &k)) == Some(&None) {
                continue;
            }
            self.overlay.insert(Key::new(Cf::TokensByExpiry, &k), None);
            self.overlay.insert(Key::new(Cf::Tokens, &k[8..]), None);
        }
        Ok(())
    }

    /// Stages a record of `SmMeta` owned by the caller (the Raft layer's
    /// applied log id and membership), committed with the batch.
    pub fn put_meta<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.overlay.insert(Key::new(Cf::SmMeta, key), Some(encode(value)));
    }

    /// Writes everything as one RocksDB WriteBatch, without the WAL: the
    /// log entries it came from are durable, and a crash before the next
    /// flush re-applies them from the log (see `Db::write_unlogged`).
    pub fn commit(mut self) -> Result<(), DbError> {
        self.prune_tokens()?;
        self.overlay.insert(Key::new(Cf::SmMeta, sm_keys::REVISION), Some(encode(&self.revision)));
        self.overlay.insert(Key::new(Cf::SmMeta, sm_keys::CLOCK_MS), Some(encode(&self.clock_ms)));
        self.overlay.insert(Key::new(Cf::SmMeta, sm_keys::AUDIT_HEAD), Some(encode(&self.audit_head)));
        self.overlay.insert(Key::new(Cf::SmMeta, sm_keys::FEED_OLDEST), Some(encode(&self.feed_oldest)));
        let sizes = (self.feed_bytes, self.feed_oldest_bytes, self.revision);
        self.overlay.insert(Key::new(Cf::SmMeta, sm_keys::FEED_SIZES), Some(encode(&sizes)));
        let mut batch = self.sm.db.batch();
        let mut accounts = Vec::new();
        // Per family with a floor: the last key deleted (sorted order).
        let mut deleted: Vec<(Cf, Vec<u8>)> = Vec::new();
        let mut touched_auth = false;
        for (key, value) in self.overlay.sorted() {
            let (cf, key) = (key.cf, key.bytes());
            touched_auth |= AUTH_CFS.contains(&cf);
            if cf == Cf::Accounts {
                let id = u128::from_be_bytes(key.try_into().expect("account keys are 16 bytes"));
                accounts.push((id, value.as_ref().map(|v| decode::<Account>(cf, v)).transpose()?));
            }
            if FLOOR_CFS.contains(&cf) {
                match (value, deleted.last_mut()) {
                    (Some(_), _) => self.sm.db.lower_floor(cf, key),
                    (None, Some((last_cf, last))) if *last_cf == cf => *last = key.to_vec(),
                    (None, _) => deleted.push((cf, key.to_vec())),
                }
            }
            match value {
                Some(v) => batch.put_raw(cf, key, v),
                None => batch.delete(cf, key),
            }
        }
        if let Some(end) = requests::expired_range_end(self.begin_clock_ms, self.clock_ms) {
            // Whole buckets no lookup probes any more: one range tombstone
            // per window instead of one per request id.
            batch.delete_range(Cf::Requests, &[], &end);
        }
        match self.sm.db.write_unlogged(batch) {
            Ok(()) => {
                if touched_auth {
                    self.sm.callers.invalidate();
                }
                self.sm.applied_clock_ms.fetch_max(self.clock_ms, std::sync::atomic::Ordering::Relaxed);
                self.sm.accounts.store(accounts);
                for (cf, last) in deleted {
                    self.sm.db.raise_floor(cf, &last)?;
                }
                Ok(())
            }
            Err(e) => {
                self.sm.accounts.clear();
                self.sm.folders.clear();
                Err(e)
            }
        }
    }
}

/// One command's view of the state and its writes. Writes go straight
/// into the batch's overlay (one layer to search, nothing to merge); the
/// undo log takes them back out when the command is refused or a linked
/// chain fails.
pub(crate) struct Tx<'b> {
    sm: &'b StateMachine,
    overlay: &'b mut Overlay,
    first_keys: &'b std::cell::RefCell<std::collections::HashMap<Cf, Option<Vec<u8>>>>,
    revision: u64,
    clock_ms: u64,
    bumps_revision: bool,
    /// Whether a write reached a family that decides who a token is.
    touched_auth: bool,
    /// How to undo each write of this command, in order: the key and what
    /// the overlay held before (None: nothing).
    undo: Vec<(Key, Option<Option<Vec<u8>>>)>,
    /// The open savepoint: where its writes start in `undo`, and
    /// `bumps_revision` as it was (the ledger counters in `saved_ledger`).
    savepoint: Option<(usize, bool)>,
    /// The ledger counters at the open savepoint; a buffer reused by every
    /// chain (a savepoint per unlinked event must not allocate).
    saved_ledger: LedgerCounters,
    /// The ledger's event clock and per-ledger totals, decoded: every ledger
    /// event reads and changes them, so they are kept typed for the command
    /// and written to the overlay once, when it is accepted.
    ledger: LedgerCounters,
    /// Pending transfers this command expired (before its own events), for
    /// the change feed.
    pub(crate) expired: Vec<u128>,
    /// The name key as of this command (`Bootstrap` sets it).
    pub(crate) names: NameKey,
    /// The state version as of this command (`SetStateVersion` sets it).
    state_version: u32,
    /// Transfer ids the database did not hold when this command began,
    /// sorted (`prefetch_absent_transfers`). The database does not change
    /// while a batch is applied, and the overlay is read first.
    absent_transfers: Vec<[u8; 16]>,
}

/// The ledger state every event touches (see `Tx::ledger`). `None`: not
/// read yet by this command.
#[derive(Default)]
struct LedgerCounters {
    timestamp_ns: Option<u64>,
    /// Usually one ledger per command; a few at most.
    totals: Vec<(u32, LedgerTotals)>,
}

impl LedgerCounters {
    /// Copies `other` into this one's existing buffer (no allocation once
    /// it has held as many ledgers).
    fn clone_from(&mut self, other: &LedgerCounters) {
        self.timestamp_ns = other.timestamp_ns;
        self.totals.clear();
        self.totals.extend_from_slice(&other.totals);
    }
}

/// Who the command runs as, checked against what its op requires.
/// `Ok(Err)` is a refusal; the op is not applied.
/// The principal behind a command's token, even when it was refused.
/// The refusal of a request id that this caller already used, inside the
/// dedup window, for a request of another kind or with other fields.
fn reused_request_id(cmd: &Command) -> CommandError {
    CommandError::new(
        ErrorCode::FailedPrecondition,
        format!(
            "request id {:?} was already used within the last {} minutes for a different request; \
             nothing was applied. A retry must repeat the first request exactly; \
             send a new request with a new request id",
            cmd.request_id,
            DEDUP_WINDOW_MS / 60_000
        ),
    )
}

fn actor_of(tx: &Tx<'_>, cmd: &Command, now_ms: u64) -> Result<String, DbError> {
    Ok(match &cmd.actor {
        Actor::Node => "node".to_string(),
        Actor::Token(hash) => match auth::resolve(tx, hash, now_ms)? {
            Ok(c) => c.principal.to_string(),
            Err(_) => "token:unknown".to_string(),
        },
    })
}

fn authorize(
    tx: &Tx<'_>,
    cmd: &Command,
    now_ms: u64,
    cached: Option<std::sync::Arc<Caller>>,
) -> Result<Result<Option<std::sync::Arc<Caller>>, CommandError>, DbError> {
    let required = cmd.op.required();
    let hash = match (&cmd.actor, &required) {
        (Actor::Node, Required::Node) => return Ok(Ok(None)),
        (Actor::Node, Required::NodeOrAccess(_))
            if tx.state_version() >= crate::command::set_state_version::RECOVERY_BY_NODE =>
        {
            return Ok(Ok(None))
        }
        (Actor::Token(_), Required::Node) => {
            return Ok(Err(CommandError::new(
                ErrorCode::PermissionDenied,
                format!("{} is performed by nodes only", cmd.op.name()),
            )))
        }
        (Actor::Node, _) => {
            return Ok(Err(CommandError::new(ErrorCode::Unauthenticated, "this operation needs a token")))
        }
        (Actor::Token(hash), _) => hash,
    };
    let caller = match cached {
        Some(c) => c,
        None => match auth::resolve(tx, hash, now_ms)? {
            Ok(c) => std::sync::Arc::new(c),
            Err(e) => return Ok(Err(e)),
        },
    };
    if let Required::Access(access) | Required::NodeOrAccess(access) = &required {
        if let Err(e) = caller.require(access) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(Some(caller)))
}

impl Read for StateMachine {
    fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db.get(cf, key)
    }

    fn names(&self) -> Result<NameKey, DbError> {
        if let Some(k) = self.names.read().expect("names lock").as_ref() {
            return Ok(k.clone());
        }
        let epoch = self.install_epoch();
        Ok(match self.db.get::<NameKey>(Cf::SmMeta, sm_keys::NAME_KEY)? {
            Some(k) => {
                let mut cached = self.names.write().expect("names lock");
                // Not while an image goes in, nor one read before an
                // install that ended meanwhile.
                if epoch % 2 == 0 && self.install_epoch() == epoch {
                    *cached = Some(k.clone());
                }
                k
            }
            None => NameKey::unset(),
        })
    }
}

/// The state machine's records as of one RocksDB snapshot.
struct View<'a> {
    sm: &'a StateMachine,
    view: crate::db::DbView<'a>,
}

impl Read for View<'_> {
    fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        self.view.get(cf, key)
    }

    /// The name key changes only when an image is installed, which a
    /// snapshot does not order anyway (see `names` on the state machine).
    fn names(&self) -> Result<NameKey, DbError> {
        self.sm.names()
    }
}

/// Records listed from a name-keyed family carry their name.
pub trait Named {
    fn name(&self) -> &str;
}

impl Named for PrincipalRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for RoleRecord {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Read for Tx<'_> {
    fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        match self.overlay.get(&Key::new(cf, key)) {
            Some(Some(raw)) => decode(cf, raw).map(Some),
            Some(None) => Ok(None),
            None if cf == Cf::Transfers
                && self.absent_transfers.binary_search_by(|k| k[..].cmp(key)).is_ok() =>
            {
                Ok(None)
            }
            None => self.sm.db.get(cf, key),
        }
    }

    fn names(&self) -> Result<NameKey, DbError> {
        Ok(self.names.clone())
    }

    fn deny_covers_admin(&self) -> bool {
        self.state_version >= crate::command::set_state_version::DENY_COVERS_ADMIN
    }

    fn refusal_wording(&self) -> u32 {
        self.state_version
    }
}

impl<'b> Tx<'b> {
    fn new<'a: 'b>(batch: &'b mut ApplyBatch<'a>) -> Tx<'b> {
        Tx {
            sm: batch.sm,
            overlay: &mut batch.overlay,
            first_keys: &batch.first_keys,
            revision: batch.revision,
            clock_ms: batch.clock_ms,
            bumps_revision: false,
            touched_auth: false,
            undo: Vec::new(),
            savepoint: None,
            saved_ledger: LedgerCounters::default(),
            ledger: LedgerCounters::default(),
            expired: Vec::new(),
            absent_transfers: Vec::new(),
            names: batch.names.clone(),
            state_version: batch.state_version,
        }
    }
}

impl Tx<'_> {
    /// Whether a secret folder is listed already (its index entry exists,
    /// written by an earlier command: a command's own writes never come
    /// back here, see `PutSecret::apply`). Only what the database holds is
    /// cached.
    pub(crate) fn folder_listed(&self, key: &crate::folder_cache::FolderKey) -> Result<bool, DbError> {
        let folders = &self.sm.folders;
        if folders.contains(key) {
            return Ok(true);
        }
        // Written by this batch: listed, but not cached until committed
        // (a batch that fails to commit leaves the cache as it was).
        if let Some(written) = self.overlay.get(&Key::new(Cf::SecretIndex, key)) {
            return Ok(written.is_some());
        }
        let listed = self.sm.db.get::<crate::names::IndexEntry>(Cf::SecretIndex, key)?.is_some();
        if listed {
            folders.insert(*key);
        }
        Ok(listed)
    }

    /// Whether `key` holds a value as this command sees it, without
    /// opening the value (a secret version can be a MiB).
    pub(crate) fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool, DbError> {
        match self.overlay.get(&Key::new(cf, key)) {
            Some(v) => Ok(v.is_some()),
            None => self.sm.db.contains(cf, key),
        }
    }

    /// Removes a secret folder's entry for one child; a folder entry is
    /// also dropped from the cache of listed folders at once (a batch that
    /// then fails to commit empties the cache anyway).
    pub(crate) fn unlist(&mut self, key: &crate::folder_cache::FolderKey) {
        self.sm.folders.remove(key);
        self.delete(Cf::SecretIndex, key);
    }

    /// A ledger account as this command sees it: its own writes, the
    /// batch's, then the committed state (cached decoded; see `ledger::cache`).
    pub(crate) fn account(&self, id: u128) -> Result<Option<Account>, DbError> {
        let key = Key::new(Cf::Accounts, &crate::ledger::id_key(id));
        if let Some(raw) = self.overlay.get(&key) {
            return raw.as_ref().map(|r| decode(Cf::Accounts, r)).transpose();
        }
        let sm = self.sm;
        if let Some(a) = sm.accounts.get(id) {
            return Ok(Some(a));
        }
        let found: Option<Account> = sm.db.get(Cf::Accounts, key.bytes())?;
        if let Some(a) = found {
            sm.accounts.store([(id, Some(a))]);
        }
        Ok(found)
    }

    pub fn put<T: Serialize>(&mut self, cf: Cf, key: &[u8], value: &T) {
        self.stage(Key::new(cf, key), Some(encode(value)));
    }

    /// The state version this command applies by (see `SetStateVersion`).
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    pub(crate) fn set_state_version(&mut self, version: u32) {
        self.put(Cf::SmMeta, sm_keys::STATE_VERSION, &version);
        self.state_version = version;
        // Callers resolved earlier in the batch carry the old rules.
        self.touched_auth = true;
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.stage(Key::new(cf, key), None);
    }

    fn stage(&mut self, key: Key, value: Option<Vec<u8>>) {
        self.touched_auth |= AUTH_CFS.contains(&key.cf);
        let before = self.overlay.insert(key, value);
        self.undo.push((key, before));
    }

    /// Undoes this command's writes after the first `mark` of them.
    fn rollback_to(&mut self, mark: usize) {
        for (key, before) in self.undo.drain(mark..).rev() {
            match before {
                Some(v) => self.overlay.insert(key, v),
                None => self.overlay.remove(&key),
            };
        }
    }

    /// Makes room for about `writes` more writes by this command (a ledger
    /// batch knows its size up front; growing one write at a time copied
    /// the overlay and the undo log over and over).
    pub(crate) fn expect_writes(&mut self, writes: usize) {
        self.overlay.reserve(writes);
        self.undo.reserve(writes);
    }

    /// Starts a group of writes that can be undone as one (a linked chain of
    /// ledger events). Savepoints do not nest.
    pub fn savepoint(&mut self) {
        assert!(self.savepoint.is_none(), "savepoints do not nest");
        self.savepoint = Some((self.undo.len(), self.bumps_revision));
        self.saved_ledger.clone_from(&self.ledger);
    }

    /// Keeps the writes since the savepoint.
    pub fn release(&mut self) {
        self.savepoint.take().expect("release without a savepoint");
    }

    /// Undoes every write since the savepoint.
    pub fn rollback(&mut self) {
        let (mark, bumps_revision) = self.savepoint.take().expect("rollback without a savepoint");
        self.rollback_to(mark);
        self.bumps_revision = bumps_revision;
        self.ledger.clone_from(&self.saved_ledger);
    }

    /// Looks up whether the database holds each of these transfer ids in
    /// one batched read: a batch of new transfers would otherwise pay a full
    /// lookup per id only to learn that it is free.
    pub(crate) fn prefetch_absent_transfers(
        &mut self,
        ids: impl Iterator<Item = u128>,
    ) -> Result<(), DbError> {
        let mut keys: Vec<[u8; 16]> = ids.map(crate::ledger::id_key).collect();
        keys.sort_unstable();
        keys.dedup();
        let absent = self.sm.db.absent(Cf::Transfers, &keys)?;
        let mut flags = absent.into_iter();
        keys.retain(|_| flags.next().expect("one answer per key"));
        self.absent_transfers = keys;
        Ok(())
    }

    /// The last ledger event timestamp handed out (0: none yet).
    pub(crate) fn ledger_timestamp_ns(&mut self) -> Result<u64, DbError> {
        if let Some(ts) = self.ledger.timestamp_ns {
            return Ok(ts);
        }
        let ts = self.get(Cf::SmMeta, sm_keys::LEDGER_TIMESTAMP_NS)?.unwrap_or(0);
        self.ledger.timestamp_ns = Some(ts);
        Ok(ts)
    }

    pub(crate) fn set_ledger_timestamp_ns(&mut self, ts: u64) {
        self.ledger.timestamp_ns = Some(ts);
    }

    /// A ledger's totals as this command sees them.
    pub(crate) fn ledger_totals(&mut self, ledger: u32) -> Result<LedgerTotals, DbError> {
        if let Some((_, t)) = self.ledger.totals.iter().find(|(l, _)| *l == ledger) {
            return Ok(*t);
        }
        let t = self.get(Cf::LedgerTotals, &ledger.to_be_bytes())?.unwrap_or_default();
        self.ledger.totals.push((ledger, t));
        Ok(t)
    }

    pub(crate) fn set_ledger_totals(&mut self, ledger: u32, totals: LedgerTotals) {
        match self.ledger.totals.iter_mut().find(|(l, _)| *l == ledger) {
            Some((_, t)) => *t = totals,
            None => self.ledger.totals.push((ledger, totals)),
        }
    }

    /// Writes the ledger counters this command read (and maybe changed).
    fn flush_ledger(&mut self) {
        assert!(self.savepoint.is_none(), "a command ends with its savepoint closed");
        let ledger = std::mem::take(&mut self.ledger);
        if let Some(ts) = ledger.timestamp_ns {
            self.put(Cf::SmMeta, sm_keys::LEDGER_TIMESTAMP_NS, &ts);
        }
        for (l, t) in ledger.totals {
            self.put(Cf::LedgerTotals, &l.to_be_bytes(), &t);
        }
    }

    /// Whether any record below `to` may exist as this command sees it: a
    /// cheap "no" that spares the ledger's expiry sweep an iterator per
    /// command. A "maybe" is settled by [`Tx::scan_raw`].
    pub fn may_have_below(&self, cf: Cf, to: &[u8]) -> Result<bool, DbError> {
        let range = Key::new(cf, &[])..Key::new(cf, to);
        if self.overlay.range(range).next().is_some() {
            return Ok(true);
        }
        let mut first = self.first_keys.borrow_mut();
        let key = match first.get(&cf) {
            Some(k) => k.clone(),
            None => {
                let k = self.sm.db.scan_raw(cf, &[], None, 1)?.pop().map(|(k, _)| k);
                first.insert(cf, k.clone());
                k
            }
        };
        Ok(key.is_some_and(|k| k.as_slice() < to))
    }

    /// Records with `from <= key < to` as this command sees them (the
    /// database, the batch's earlier writes, this command's own), in key
    /// order, at most `limit`. Seeing the batch's writes keeps the result
    /// independent of how a node happens to group entries into batches.
    pub fn scan_raw(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DbError> {
        let range = Key::new(cf, from)..Key::new(cf, to);
        let pending = self.overlay.range(range.clone()).count();
        // Each overlay entry can hide at most one database row.
        let fetch = limit + pending;
        let db_rows = self.sm.db.scan_raw(cf, from, Some(to), fetch)?;
        let cut = (db_rows.len() == fetch).then(|| db_rows.last().map(|(k, _)| k.clone())).flatten();
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            db_rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for (k, v) in self.overlay.range(range) {
            merged.insert(k.bytes().to_vec(), v.clone());
        }
        Ok(merged
            .into_iter()
            .take_while(|(k, _)| cut.as_ref().is_none_or(|c| k <= c))
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }

    /// The revision this command's changes carry (one per command).
    pub fn next_revision(&mut self) -> u64 {
        self.bumps_revision = true;
        self.revision + 1
    }

    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }
}
