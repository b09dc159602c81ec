//! Node configuration (`strongbox serve --config node.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strongbox_raft::config::RaftTuning;

/// Beyond this, `worker_threads` is a typo, not a plan.
pub const WORKER_THREADS_MAX: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
// A misspelt setting is an error, not a silent default.
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique, non-zero, never reused within a cluster.
    pub id: u64,
    pub data_dir: PathBuf,
    /// Client port (TLS).
    pub api_addr: String,
    /// Peer port (mutual TLS).
    pub raft_addr: String,
    /// Prometheus `/metrics` (plain HTTP, bind to a private interface).
    pub metrics_addr: Option<String>,
    /// Address other nodes and clients use to reach us, if it differs from
    /// the bind address (e.g. 0.0.0.0 binds).
    pub advertise_api_addr: Option<String>,
    pub advertise_raft_addr: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Plaintext on both ports. Tests and debugging only.
    #[serde(default)]
    pub insecure: bool,
    /// Voters of a brand-new cluster. The node with the smallest id
    /// initializes the cluster once, if its storage is pristine.
    #[serde(default)]
    pub initial_members: BTreeMap<u64, Member>,
    #[serde(default)]
    pub raft: RaftSettings,
    /// "text" or "json".
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub auth: AuthSettings,
    /// Hex master key (64 characters), mode 0600; else $STRONGBOX_MASTER_KEY.
    /// One of the two is required unless insecure_no_encryption is set.
    pub master_key_file: Option<PathBuf>,
    /// Store data in plaintext. Tests only; `serve --insecure-no-encryption`.
    #[serde(default)]
    pub insecure_no_encryption: bool,
    /// DELIBERATELY UNSAFE: serve "linearizable" reads from local state with
    /// no barrier. Exists so the consistency harness can prove it catches
    /// stale reads; never set it anywhere else.
    #[serde(default)]
    pub unsafe_stale_reads: bool,
    /// How long this node may be out of step with a leader and still serve
    /// LOCAL reads (requests can only ask for less). Milliseconds.
    #[serde(default = "default_local_read_staleness_max_ms")]
    pub local_read_staleness_max_ms: u64,
    /// Largest secret value accepted, in bytes (the store's hard cap is 1 MiB).
    #[serde(default = "default_secret_value_bytes_max")]
    pub secret_value_bytes_max: usize,
    /// Records this node's local audit log keeps (reads and requests refused
    /// before proposing); older ones are pruned. At least 1024.
    #[serde(default = "default_local_audit_retain_records")]
    pub local_audit_retain_records: u64,
    /// Fsync the local audit log before answering (default). Off, a record
    /// is still written before the answer leaves and survives a crash of
    /// the process, but a power loss can drop the last ones; reads get
    /// faster (see BENCHMARKS.md).
    #[serde(default = "default_true")]
    pub local_audit_fsync: bool,
    /// The node's async worker threads; 0 (the default): one per core (or
    /// $TOKIO_WORKER_THREADS). Nodes that share a machine should split its
    /// cores instead: each idle worker that a new task wakes costs a context
    /// switch, and on a 2-core VM two workers per node for three nodes cost
    /// about a fifth more CPU per write than one (BENCHMARKS.md). Apply and
    /// peer I/O still overlap: fsyncs, snapshots and password hashing run on
    /// blocking threads.
    #[serde(default)]
    pub worker_threads: usize,
}

/// Worker threads for each of `nodes` nodes on this one machine: its cores
/// split between them, at least one each.
pub fn shared_machine_worker_threads(nodes: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1) as usize).max(1)
}

fn default_true() -> bool {
    true
}

fn default_secret_value_bytes_max() -> usize {
    64 * 1024
}

fn default_local_audit_retain_records() -> u64 {
    strongbox_store::local_audit::LOCAL_AUDIT_RETAIN_RECORDS_DEFAULT
}

fn default_local_read_staleness_max_ms() -> u64 {
    crate::limits::LOCAL_READ_STALENESS_MAX_MS_DEFAULT
}

/// Passwords, tokens, lockout, and the first admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// argon2id cost; refused below OWASP's minimum (19 MiB, 2 passes).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password hashes computed at once, and how many more may wait.
    pub hash_workers: usize,
    pub hash_queue_max: usize,
    /// Failed logins within the window that lock a user, and for how long.
    pub lockout_failures_max: u32,
    pub lockout_window_s: u64,
    pub lockout_duration_s: u64,
    /// Token lifetime when a login asks for none, and the most any token
    /// lives counting renewals.
    pub token_ttl_default_s: u64,
    pub token_ttl_max_s: u64,
    /// The first admin, created once when this node initializes a cluster.
    pub bootstrap_admin_username: String,
    /// Where its password comes from (else $STRONGBOX_BOOTSTRAP_PASSWORD,
    /// else a random one written to `first-admin-password` in the data dir).
    pub bootstrap_password_file: Option<PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            hash_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue_max: 64,
            lockout_failures_max: 5,
            lockout_window_s: 15 * 60,
            lockout_duration_s: 15 * 60,
            token_ttl_default_s: 60 * 60,
            token_ttl_max_s: 24 * 60 * 60,
            bootstrap_admin_username: "admin".into(),
            bootstrap_password_file: None,
        }
    }
}

fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs: u64,
    pub logs_kept_behind_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        let t = RaftTuning::default();
        RaftSettings {
            heartbeat_ms: t.heartbeat_ms,
            election_timeout_min_ms: t.election_timeout_min_ms,
            election_timeout_max_ms: t.election_timeout_max_ms,
            snapshot_logs: t.snapshot_logs,
            logs_kept_behind_snapshot: t.logs_kept_behind_snapshot,
        }
    }
}

impl RaftSettings {
    pub fn tuning(&self) -> RaftTuning {
        RaftTuning {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_logs: self.snapshot_logs,
            logs_kept_behind_snapshot: self.logs_kept_behind_snapshot,
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        let cfg: NodeConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.id != 0, "id must be non-zero");
        anyhow::ensure!(
            self.insecure || self.tls.is_some(),
            "no [tls] section: give ca_cert, cert and key, or set insecure = true (plaintext, tests only)"
        );
        anyhow::ensure!(
            (1..=strongbox_store::limits::SECRET_VALUE_BYTES_MAX).contains(&self.secret_value_bytes_max),
            "secret_value_bytes_max must be 1..={}",
            strongbox_store::limits::SECRET_VALUE_BYTES_MAX
        );
        anyhow::ensure!(
            self.local_audit_retain_records >= strongbox_store::local_audit::LOCAL_AUDIT_RETAIN_RECORDS_MIN,
            "local_audit_retain_records must be at least {}",
            strongbox_store::local_audit::LOCAL_AUDIT_RETAIN_RECORDS_MIN
        );
        anyhow::ensure!(
            (1..=crate::limits::LOCAL_READ_STALENESS_MAX_MS_MAX).contains(&self.local_read_staleness_max_ms),
            "local_read_staleness_max_ms must be 1..={}",
            crate::limits::LOCAL_READ_STALENESS_MAX_MS_MAX
        );
        anyhow::ensure!(
            self.worker_threads <= WORKER_THREADS_MAX,
            "worker_threads must be 0 (one per core) or 1..={WORKER_THREADS_MAX}"
        );
        let a = &self.auth;
        anyhow::ensure!(
            (1..=100).contains(&a.lockout_failures_max),
            "auth.lockout_failures_max must be 1..=100"
        );
        anyhow::ensure!(
            a.token_ttl_default_s >= 1 && a.token_ttl_default_s <= a.token_ttl_max_s,
            "auth.token_ttl_default_s must be 1..=auth.token_ttl_max_s"
        );
        if !self.initial_members.is_empty() {
            anyhow::ensure!(
                self.initial_members.contains_key(&self.id),
                "initial_members does not include this node's id {}",
                self.id
            );
            let mine = &self.initial_members[&self.id];
            anyhow::ensure!(
                mine.raft_addr == self.public_raft_addr() && mine.api_addr == self.public_api_addr(),
                "initial_members.{} says raft_addr {} and api_addr {}, but this node serves {} and {} \
                 (set advertise_raft_addr / advertise_api_addr if it binds another address)",
                self.id,
                mine.raft_addr,
                mine.api_addr,
                self.public_raft_addr(),
                self.public_api_addr()
            );
            let mut seen = std::collections::BTreeMap::new();
            for (id, m) in &self.initial_members {
                for addr in [&m.raft_addr, &m.api_addr] {
                    if let Some(other) = seen.insert(addr.clone(), *id) {
                        anyhow::bail!("initial_members: {addr} is given to node {other} and node {id}");
                    }
                }
            }
        }
        // Checked here, before anything is created, as openraft would check
        // them after the data dir and keyring exist.
        let r = &self.raft;
        anyhow::ensure!(
            r.heartbeat_ms > 0 && r.heartbeat_ms < r.election_timeout_min_ms,
            "raft.heartbeat_ms ({}) must be above 0 and below raft.election_timeout_min_ms ({})",
            r.heartbeat_ms,
            r.election_timeout_min_ms
        );
        anyhow::ensure!(
            r.election_timeout_min_ms < r.election_timeout_max_ms,
            "raft.election_timeout_min_ms ({}) must be below raft.election_timeout_max_ms ({})",
            r.election_timeout_min_ms,
            r.election_timeout_max_ms
        );
        anyhow::ensure!(
            ["text", "json"].contains(&self.log_format.as_str()),
            "log_format must be \"text\" or \"json\", not {:?}",
            self.log_format
        );
        Ok(())
    }

    pub fn public_api_addr(&self) -> String {
        self.advertise_api_addr.clone().unwrap_or_else(|| self.api_addr.clone())
    }

    pub fn public_raft_addr(&self) -> String {
        self.advertise_raft_addr.clone().unwrap_or_else(|| self.raft_addr.clone())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
id = 1
data_dir = "/tmp/strongbox-config-test"
api_addr = "127.0.0.1:7001"
raft_addr = "127.0.0.1:7101"
insecure = true
"#;

    #[test]
    fn a_minimal_config_parses_and_a_misspelt_setting_is_refused() {
        let cfg: NodeConfig = toml::from_str(MINIMAL).expect("minimal config");
        assert_eq!(cfg.id, 1);
        let reparsed: Result<NodeConfig, _> = toml::from_str(&cfg.to_toml());
        assert!(reparsed.is_ok(), "what to_toml writes reads back: {reparsed:?}");
        let mut bad = cfg.clone();
        bad.raft.election_timeout_min_ms = bad.raft.heartbeat_ms;
        assert!(bad.validate().unwrap_err().to_string().contains("heartbeat_ms"));
        let mut bad = cfg.clone();
        bad.log_format = "yaml".into();
        assert!(bad.validate().is_err());
        let mut bad = cfg.clone();
        let member = |raft: &str, api: &str| Member { raft_addr: raft.into(), api_addr: api.into() };
        bad.initial_members.insert(1, member("127.0.0.1:7101", "127.0.0.1:7001"));
        bad.initial_members.insert(2, member("127.0.0.1:7101", "127.0.0.1:7002"));
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("given to node 1 and node 2"), "{e}");
        bad.initial_members.insert(1, member("127.0.0.1:9999", "127.0.0.1:7001"));
        assert!(bad.validate().unwrap_err().to_string().contains("but this node serves"));
        for typo in
            ["metrics_address = \"127.0.0.1:9\"", "[raft]\nheartbeat_interval_ms = 5", "[auth]\nlockout = 3"]
        {
            let text = format!("{MINIMAL}{typo}\n");
            let e = toml::from_str::<NodeConfig>(&text).expect_err(typo).to_string();
            assert!(e.contains("unknown field"), "{typo}: {e}");
        }
    }
}
