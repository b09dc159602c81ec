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
use serde::{Deserialize, Serialize};

use crate::command::{secret_version_key, Command, Outcome, Response, SecretMeta, SecretVersion};
use crate::db::{decode, encode, Db, DbError};
use crate::layout::{sm_keys, Cf};
use crate::limits::{DEDUP_PRUNE_PER_BATCH_MAX, DEDUP_WINDOW_MS};

#[derive(Clone)]
pub struct StateMachine {
    db: Db,
}

/// What the request-id table remembers of an applied request.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestRecord {
    time_ms: u64,
    response: Response,
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

type Overlay = BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>;

impl StateMachine {
    pub fn new(db: Db) -> Self {
        StateMachine { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The cluster revision of the applied state.
    pub fn revision(&self) -> Result<u64, DbError> {
        Ok(self.db.get::<u64>(Cf::SmMeta, sm_keys::REVISION)?.unwrap_or(0))
    }

    pub fn begin(&self) -> Result<ApplyBatch<'_>, DbError> {
        Ok(ApplyBatch {
            sm: self,
            overlay: Overlay::new(),
            revision: self.revision()?,
            clock_ms: self.db.get::<u64>(Cf::SmMeta, sm_keys::CLOCK_MS)?.unwrap_or(0),
        })
    }

    /// A record of `SmMeta` written by the Raft layer (its position, membership).
    pub fn meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db.get(Cf::SmMeta, key)
    }

    /// Reads a secret: the latest live version, or a given one.
    pub fn get_secret(&self, path: &str, version: Option<u64>) -> Result<Option<SecretView>, DbError> {
        let Some(meta) = self.db.get::<SecretMeta>(Cf::Secrets, path.as_bytes())? else {
            return Ok(None);
        };
        let version = match version {
            Some(v) => v,
            None if meta.deleted => return Ok(None),
            None => meta.latest_version,
        };
        let Some(v) = self.db.get::<SecretVersion>(Cf::SecretVersions, &secret_version_key(path, version))?
        else {
            return Ok(None);
        };
        Ok(Some(SecretView {
            path: path.to_string(),
            version,
            value: v.value,
            created_ms: v.created_ms,
            revision: v.revision,
            latest_version: meta.latest_version,
        }))
    }
}

/// Applies a group of log entries as one atomic write.
pub struct ApplyBatch<'a> {
    sm: &'a StateMachine,
    overlay: Overlay,
    revision: u64,
    clock_ms: u64,
}

impl<'a> ApplyBatch<'a> {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn read(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.overlay.get(&(cf, key.to_vec())) {
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

        let id_key = cmd.request_id.as_bytes();
        if let Some(raw) = self.read(Cf::Requests, id_key)? {
            let rec: RequestRecord = decode(Cf::Requests, &raw)?;
            // Expiry is logical (state-machine time), so it is the same on
            // every node whatever physical pruning has happened.
            if rec.time_ms + DEDUP_WINDOW_MS >= self.clock_ms {
                let mut response = rec.response;
                response.deduplicated = true;
                return Ok(response);
            }
        }

        let mut tx = Tx { batch: self, staged: Overlay::new(), bumps_revision: false };
        let result: Result<Outcome, _> = cmd.op.apply(&mut tx)?;
        let Tx { staged, bumps_revision, .. } = tx;
        if result.is_ok() {
            self.overlay.extend(staged);
            if bumps_revision {
                self.revision += 1;
            }
        }
        let response = Response { revision: self.revision, result, deduplicated: false };

        let rec = RequestRecord { time_ms: self.clock_ms, response: response.clone() };
        self.overlay.insert((Cf::Requests, id_key.to_vec()), Some(encode(&rec)));
        self.overlay
            .insert((Cf::RequestsByTime, by_time_key(self.clock_ms, &cmd.request_id)), Some(Vec::new()));
        Ok(response)
    }

    /// Bounded physical removal of request ids past the dedup window, once
    /// per batch (an iterator per command costs more than it saves).
    fn prune_request_ids(&mut self) -> Result<(), DbError> {
        let cutoff_ms = self.clock_ms.saturating_sub(DEDUP_WINDOW_MS);
        if cutoff_ms == 0 {
            return Ok(());
        }
        let upto = cutoff_ms.to_be_bytes();
        let old = self.sm.db.scan_raw(Cf::RequestsByTime, &[], Some(&upto), DEDUP_PRUNE_PER_BATCH_MAX)?;
        for (k, _) in old {
            let id = k[8..].to_vec();
            self.overlay.insert((Cf::RequestsByTime, k), None);
            self.overlay.insert((Cf::Requests, id), None);
        }
        Ok(())
    }

    /// Stages a record of `SmMeta` owned by the caller (the Raft layer's
    /// applied log id and membership), committed with the batch.
    pub fn put_meta<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.overlay.insert((Cf::SmMeta, key.to_vec()), Some(encode(value)));
    }

    /// Writes everything as one RocksDB WriteBatch. Not synced on its own:
    /// the log entries it came from are durable, and the next log fsync
    /// (same WAL) makes it durable too; a crash re-applies from the log.
    pub fn commit(mut self) -> Result<(), DbError> {
        self.prune_request_ids()?;
        self.overlay.insert((Cf::SmMeta, sm_keys::REVISION.to_vec()), Some(encode(&self.revision)));
        self.overlay.insert((Cf::SmMeta, sm_keys::CLOCK_MS.to_vec()), Some(encode(&self.clock_ms)));
        let mut batch = self.sm.db.batch();
        for ((cf, key), value) in self.overlay {
            match value {
                Some(v) => batch.put_raw(cf, &key, &v),
                None => batch.delete(cf, &key),
            }
        }
        self.sm.db.write(batch, false)
    }
}

fn by_time_key(time_ms: u64, request_id: &str) -> Vec<u8> {
    let mut k = time_ms.to_be_bytes().to_vec();
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// One command's view and staged writes.
pub(crate) struct Tx<'b> {
    batch: &'b ApplyBatch<'b>,
    staged: Overlay,
    bumps_revision: bool,
}

impl Tx<'_> {
    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, DbError> {
        let raw = match self.staged.get(&(cf, key.to_vec())) {
            Some(v) => v.clone(),
            None => self.batch.read(cf, key)?,
        };
        raw.map(|r| decode(cf, &r)).transpose()
    }

    pub fn put<T: Serialize>(&mut self, cf: Cf, key: &[u8], value: &T) {
        self.staged.insert((cf, key.to_vec()), Some(encode(value)));
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.staged.insert((cf, key.to_vec()), None);
    }

    /// The revision this command's changes carry (one per command).
    pub fn next_revision(&mut self) -> u64 {
        self.bumps_revision = true;
        self.batch.revision + 1
    }

    pub fn clock_ms(&self) -> u64 {
        self.batch.clock_ms
    }
}
