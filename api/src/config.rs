//! Node configuration (`strongbox serve --config node.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strongbox_raft::config::RaftTuning;

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub raft_addr: String,
    pub api_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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
        if !self.initial_members.is_empty() {
            anyhow::ensure!(
                self.initial_members.contains_key(&self.id),
                "initial_members does not include this node's id {}",
                self.id
            );
        }
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
