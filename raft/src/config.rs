//! Raft timing and snapshot policy. Defaults suit TLS on a loaded 2-core box
//! (openraft's 50 ms heartbeat / 150-300 ms election are too tight there).

use openraft::{Config, SnapshotPolicy};

#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries, and once the log
    /// since the last one is large enough for the image (`snapshot_policy`).
    pub snapshot_logs: u64,
    /// Entries kept in the log behind a snapshot (for lagging followers).
    pub logs_kept_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            // Like etcd's --snapshot-count (100,000) and catch-up entries
            // (5,000). An entry is a batch of commands, and every snapshot
            // is a full export of the state, so 10,000 was too often.
            snapshot_logs: 100_000,
            logs_kept_behind_snapshot: 5_000,
        }
    }
}

/// Largest gRPC message between peers. Append batches are bounded below it.
pub const PEER_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Snapshot chunk size: well under the peer message limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Entries per AppendEntries RPC. An entry is a proposal of at most
/// ~320 KiB (proposer.rs: 256 KiB plus one command), so 48 stay under
/// `PEER_MESSAGE_BYTES_MAX`; beyond it openraft gets PayloadTooLarge and halves.
pub const APPEND_ENTRIES_MAX: u64 = 48;

impl RaftTuning {
    pub fn to_config(&self) -> Result<Config, openraft::ConfigError> {
        Config {
            cluster_name: "strongbox".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: 10_000, // per chunk; the 200 ms default is too tight
            max_payload_entries: APPEND_ENTRIES_MAX,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // Builds are asked for by `snapshot_policy`, which weighs the
            // entry count against the image's size.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.logs_kept_behind_snapshot,
            // The election timer is `pre_vote`'s: it campaigns only after a
            // majority agrees the leader is gone.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
    }
}
