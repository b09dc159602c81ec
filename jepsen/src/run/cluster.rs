//! The cluster under test: the real `strongbox serve`, one process per node,
//! each inside its own network namespace, with TLS certificates for its
//! namespace address and an encryption master key. Nodes can be killed
//! (SIGKILL), paused (SIGSTOP) and brought back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strongbox_api::client::{AuthChannel, Bearer, Profile};
use strongbox_api::config::{AuthSettings, Member, NodeConfig, RaftSettings, TlsFiles};
use strongbox_api::tls::{write_private, DevPki};
use strongbox_proto::leader::LeaderRouted;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::{StatusRequest, StatusResponse};
use tokio::process::{Child, Command};

use super::net::{namespace, node_ip};

const API_PORT: u16 = 7001;
const RAFT_PORT: u16 = 7002;
const METRICS_PORT: u16 = 7003;

pub fn api_addr(id: u64) -> String {
    format!("{}:{API_PORT}", node_ip(id))
}

pub fn raft_addr(id: u64) -> String {
    format!("{}:{RAFT_PORT}", node_ip(id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Killed,
    Paused,
}

struct Node {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    state: NodeState,
}

pub struct Cluster {
    exe: PathBuf,
    unsafe_stale_reads: bool,
    nodes: BTreeMap<u64, Node>,
    pub profile: Profile,
    pub admin_password: String,
    /// Nodes found exited that no nemesis had killed: a crash, always a bug.
    pub crashes: Vec<u64>,
}

/// Faster than the defaults so a fault and its recovery fit in seconds, and
/// snapshots every 2,000 entries so a run installs snapshots under faults.
fn raft_settings() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        snapshot_logs: 2_000,
        logs_kept_behind_snapshot: 500,
    }
}

impl Cluster {
    /// Writes certificates, keys and configs under `dir` (nothing starts).
    pub fn prepare(
        dir: &Path,
        nodes: u64,
        exe: PathBuf,
        unsafe_stale_reads: bool,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let pki = DevPki::new("strongbox jepsen CA")?;
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &pki.ca_cert_pem)?;
        let mut raw = [0u8; 18];
        rand::fill(&mut raw[..]);
        let admin_password = hex_string(&raw);
        let password_file = dir.join("admin-password");
        write_private(&password_file, &admin_password)?;
        let members: BTreeMap<u64, Member> =
            (1..=nodes).map(|id| (id, Member { raft_addr: raft_addr(id), api_addr: api_addr(id) })).collect();
        let mut out = BTreeMap::new();
        for id in 1..=nodes {
            let node_dir = dir.join(format!("n{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let cert = pki.node_cert(&format!("strongbox-node-{id}"), &[node_ip(id).into()])?;
            let (cert_path, key_path) = (node_dir.join("node.pem"), node_dir.join("node.key"));
            std::fs::write(&cert_path, &cert.cert_pem)?;
            write_private(&key_path, &cert.key_pem)?;
            let master_key_file = node_dir.join("master.key");
            let (_, hex) = strongbox_store::keyring::MasterKey::generate();
            write_private(&master_key_file, &hex)?;
            let cfg = NodeConfig {
                id,
                data_dir: node_dir.join("data"),
                api_addr: api_addr(id),
                raft_addr: raft_addr(id),
                metrics_addr: Some(format!("{}:{METRICS_PORT}", node_ip(id))),
                advertise_api_addr: None,
                advertise_raft_addr: None,
                tls: Some(TlsFiles { ca_cert: ca_path.clone(), cert: cert_path, key: key_path }),
                insecure: false,
                initial_members: members.clone(),
                raft: raft_settings(),
                log_format: "text".into(),
                auth: AuthSettings {
                    bootstrap_password_file: Some(password_file.clone()),
                    // Three argon2 hashers per node on two cores starve Raft.
                    hash_workers: 1,
                    ..AuthSettings::default()
                },
                master_key_file: Some(master_key_file),
                insecure_no_encryption: false,
                unsafe_stale_reads,
                local_read_staleness_max_ms: strongbox_api::limits::LOCAL_READ_STALENESS_MAX_MS_DEFAULT,
                secret_value_bytes_max: 64 * 1024,
                local_audit_retain_records: strongbox_store::local_audit::LOCAL_AUDIT_RETAIN_RECORDS_DEFAULT,
                local_audit_fsync: true,
                worker_threads: strongbox_api::config::shared_machine_worker_threads(nodes),
            };
            let config = node_dir.join("node.toml");
            std::fs::write(&config, cfg.to_toml())?;
            let log = node_dir.join("node.log");
            out.insert(id, Node { config, log, child: None, state: NodeState::Killed });
        }
        let profile = Profile {
            endpoints: (1..=nodes).map(api_addr).collect(),
            ca_cert: Some(ca_path),
            insecure: false,
        };
        Ok(Cluster { exe, unsafe_stale_reads, nodes: out, profile, admin_password, crashes: Vec::new() })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn state(&self, id: u64) -> NodeState {
        self.nodes[&id].state
    }

    /// Starts (or restarts) a node's process inside its namespace.
    pub fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let (exe, unsafe_reads) = (self.exe.clone(), self.unsafe_stale_reads);
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs the command, so the child's pid is the
        // node's own and signals reach it directly.
        cmd.args(["netns", "exec", &namespace(id)]).arg(&exe).arg("serve").arg("--config").arg(&node.config);
        if unsafe_reads {
            cmd.arg("--unsafe-stale-reads");
        }
        let child = cmd.stdout(log.try_clone()?).stderr(log).kill_on_drop(true).spawn()?;
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(())
    }

    fn signal(&mut self, id: u64, signal: i32) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        let pid = node
            .child
            .as_ref()
            .and_then(|c| c.id())
            .ok_or_else(|| anyhow::anyhow!("node {id} is not running"))?;
        // SAFETY: kill(2) on the pid of our own live child.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            anyhow::bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// kill -9: no chance to flush or say goodbye.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGKILL)?;
        let node = self.nodes.get_mut(&id).expect("signal checked the node");
        if let Some(mut child) = node.child.take() {
            let _ = child.wait().await;
        }
        node.state = NodeState::Killed;
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.nodes.get_mut(&id).expect("signal checked the node").state = NodeState::Paused;
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        self.nodes.get_mut(&id).expect("signal checked the node").state = NodeState::Running;
        Ok(())
    }

    /// Brings every node back to running: resumes the paused, restarts the
    /// killed (and any that died on their own).
    pub fn revive_all(&mut self) -> anyhow::Result<Vec<u64>> {
        let mut revived = Vec::new();
        for id in self.ids() {
            let exited = match self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            match self.state(id) {
                NodeState::Paused => self.resume(id)?,
                NodeState::Running if exited => {
                    self.crashes.push(id);
                    self.start(id)?
                }
                _ if exited => self.start(id)?,
                _ => continue,
            }
            revived.push(id);
        }
        Ok(revived)
    }

    /// Every crash seen: nodes whose process exited without the nemesis
    /// killing it, now or earlier in the run.
    pub fn crashed(&mut self) -> Vec<u64> {
        for (id, node) in self.nodes.iter_mut() {
            if node.state == NodeState::Running {
                if let Some(child) = node.child.as_mut() {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        self.crashes.push(*id);
                    }
                }
            }
        }
        self.crashes.clone()
    }

    /// SIGCONT then SIGTERM, and SIGKILL after a grace period.
    pub async fn stop_all(&mut self) {
        for id in self.ids() {
            let _ = self.signal(id, libc::SIGCONT);
            let _ = self.signal(id, libc::SIGTERM);
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            node.state = NodeState::Killed;
        }
    }

    pub fn channel(&self, id: u64) -> anyhow::Result<LeaderRouted> {
        self.profile.channel_to(&api_addr(id))
    }

    /// Cluster status as node `id` sees it.
    pub async fn status(&self, id: u64, token: &str) -> anyhow::Result<StatusResponse> {
        let mut c = ClusterClient::new(AuthChannel::new(self.channel(id)?, Bearer::new(Some(token))?));
        let call = c.status(StatusRequest {});
        let r = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| anyhow::anyhow!("node {id}: no status within 2 s"))??;
        Ok(r.into_inner())
    }

    /// The leader according to the first node that names one.
    pub async fn leader(&self, token: &str) -> Option<u64> {
        for id in self.ids() {
            if self.state(id) != NodeState::Running {
                continue;
            }
            if let Ok(s) = self.status(id, token).await {
                if let Some(l) = s.leader_id {
                    return Some(l);
                }
            }
        }
        None
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
