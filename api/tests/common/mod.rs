//! A real cluster of `strongbox serve` processes over real sockets and TLS.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use strongbox_api::client::{AuthChannel, Bearer, Profile};
use strongbox_api::config::{NodeConfig, RaftSettings};
use strongbox_api::dev;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::*;
use tokio::process::Child;

/// Clusters are heavy on 2 cores: one at a time per test binary.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// The next block of 30 ports to try (`u16::MAX`: not started yet).
static NEXT_BLOCK: AtomicU16 = AtomicU16::new(u16::MAX);
/// Blocks of 30 ports between 20,000 and 32,000: below the kernel's
/// ephemeral range (32768+), where any outgoing connection could take a
/// port before a node binds it.
const PORT_BLOCKS: u16 = 400;

/// The first port of a block of 30 that is free now. Each test binary
/// starts in its own stretch (by its pid), but two binaries can still
/// meet there, and a node that cannot bind its port exits (seen in CI:
/// "Address already in use" on two nodes' metrics ports, the third alone,
/// no leader for a minute): a block with any port taken is skipped.
fn free_ports_base() -> u16 {
    let start = (std::process::id() % 20) as u16 * 20;
    let _ = NEXT_BLOCK.compare_exchange(u16::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..PORT_BLOCKS {
        let base = 20_000 + (NEXT_BLOCK.fetch_add(1, Ordering::SeqCst) % PORT_BLOCKS) * 30;
        if (base..base + 30).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
    }
    panic!("no block of 30 free ports between 20000 and 32000");
}

pub fn fast_raft() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        ..RaftSettings::default()
    }
}

/// `fast_raft`, with a snapshot every 20 entries and no log kept behind
/// it, so a node that falls behind is caught up by an image.
pub fn snapshot_often() -> RaftSettings {
    RaftSettings { snapshot_logs: 20, logs_kept_behind_snapshot: 0, ..fast_raft() }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<u64, (PathBuf, NodeConfig)>,
    pub children: BTreeMap<u64, Child>,
    pub profile: Profile,
    /// The first admin's password and a token for it.
    pub admin_password: String,
    pub admin_token: String,
}

impl TestCluster {
    pub async fn start(nodes: u64, raft: RaftSettings) -> TestCluster {
        Self::start_with_spares(nodes, 0, raft).await
    }

    /// `voters` nodes form the cluster; `spares` more get certificates and
    /// configs (without initial members) but are not started.
    pub async fn start_with_spares(voters: u64, spares: u64, raft: RaftSettings) -> TestCluster {
        Self::start_in(tempfile::tempdir().unwrap(), voters, spares, raft).await
    }

    /// As `start_with_spares`, in `dir`: TLS files already there (`ca.pem`,
    /// `node<N>.pem`, `node<N>.key`) are used as they are.
    pub async fn start_in(
        dir: tempfile::TempDir,
        voters: u64,
        spares: u64,
        raft: RaftSettings,
    ) -> TestCluster {
        let mut c = Self::prepare_in(dir, voters, spares, raft);
        for id in 1..=voters {
            c.spawn(id);
        }
        let mut voters_only = c.profile.clone();
        voters_only.endpoints.truncate(voters as usize);
        c.admin_token = dev::login_admin(&voters_only, &c.admin_password, 0, Duration::from_secs(60), None)
            .await
            .unwrap();
        c.wait_serving(voters).await;
        c
    }

    /// Configs, certificates and master keys for a cluster in a new
    /// directory; nothing started (`start_restored` starts it).
    pub fn prepare(voters: u64, raft: RaftSettings) -> TestCluster {
        Self::prepare_in(tempfile::tempdir().unwrap(), voters, 0, raft)
    }

    /// Starts a prepared cluster whose state was restored from elsewhere:
    /// `admin_token` is one valid in that state.
    pub async fn start_restored(&mut self, admin_token: &str) {
        let voters = self.configs.len() as u64;
        for id in 1..=voters {
            self.spawn(id);
        }
        self.admin_token = admin_token.to_string();
        self.wait_serving(voters).await;
    }

    async fn wait_serving(&self, voters: u64) {
        self.wait_leader(Duration::from_secs(30)).await;
        // Every voter serving, not just a quorum: on a loaded machine one can
        // still be starting when the others have elected a leader.
        for id in 1..=voters {
            self.wait_applied(id, 0, Duration::from_secs(30)).await;
        }
    }

    fn prepare_in(dir: tempfile::TempDir, voters: u64, spares: u64, raft: RaftSettings) -> TestCluster {
        let base = free_ports_base();
        let (configs, profile) = dev::prepare(dir.path(), voters + spares, base, false, raft).unwrap();
        let mut configs: BTreeMap<u64, _> = configs.into_iter().map(|(p, c)| (c.id, (p, c))).collect();
        for (path, cfg) in configs.values_mut() {
            if cfg.id > voters {
                cfg.initial_members.clear();
            } else {
                cfg.initial_members.retain(|id, _| *id <= voters);
            }
            std::fs::write(path, cfg.to_toml()).unwrap();
        }
        let admin_password = dev::admin_password(dir.path()).unwrap().to_string();
        TestCluster {
            dir,
            configs,
            children: BTreeMap::new(),
            profile,
            admin_password,
            admin_token: String::new(),
        }
    }

    pub fn spawn(&mut self, id: u64) {
        let (path, _) = &self.configs[&id];
        let log = self.dir.path().join(format!("node{id}.log"));
        let child = dev::spawn_node(&PathBuf::from(env!("CARGO_BIN_EXE_strongbox")), path, &log).unwrap();
        self.children.insert(id, child);
    }

    /// The node's Prometheus page (plain HTTP on its metrics port).
    pub async fn metrics(&self, id: u64) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.configs[&id].1.metrics_addr.clone().expect("dev configs have a metrics port");
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        body
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{id}.log"))).unwrap_or_default()
    }

    /// kill -9: no chance to flush anything.
    pub async fn kill(&mut self, id: u64) {
        let mut c = self.children.remove(&id).expect("running node");
        c.kill().await.unwrap();
    }

    pub async fn stop(&mut self, id: u64) {
        let mut c = self.children.remove(&id).expect("running node");
        dev::stop_child(&mut c).await;
    }

    /// SIGSTOP (`resume` sends SIGCONT): the node stops mid-flight, its
    /// sockets open and silent, as in a long GC pause or a frozen VM.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.children[&id].id().expect("running node");
        let ok =
            std::process::Command::new("kill").arg(signal).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill {signal} {pid} failed");
    }

    pub fn restart(&mut self, id: u64) {
        assert!(!self.children.contains_key(&id));
        self.spawn(id);
    }

    pub fn api_addr(&self, id: u64) -> String {
        self.configs[&id].1.api_addr.clone()
    }

    pub fn raft_addr(&self, id: u64) -> String {
        self.configs[&id].1.raft_addr.clone()
    }

    /// A channel to node `id` without a token.
    pub fn channel(&self, id: u64) -> strongbox_proto::leader::LeaderRouted {
        self.profile.channel_to(&self.api_addr(id)).unwrap()
    }

    /// A channel to node `id` whose calls carry `token` (None: no token).
    pub fn authed(&self, id: u64, token: Option<&str>) -> AuthChannel {
        AuthChannel::new(self.channel(id), Bearer::new(token).unwrap())
    }

    /// As the first admin.
    pub fn admin(&self, id: u64) -> AuthChannel {
        self.authed(id, Some(&self.admin_token))
    }

    pub fn secrets(&self, id: u64) -> SecretsClient<AuthChannel> {
        SecretsClient::new(self.admin(id))
    }

    pub fn cluster(&self, id: u64) -> ClusterClient<AuthChannel> {
        ClusterClient::new(self.admin(id))
    }

    /// Every node's log so far, concatenated.
    pub fn all_logs(&self) -> String {
        self.configs.keys().map(|id| self.log(*id)).collect::<Vec<_>>().join("\n")
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let mut c = self.cluster(id);
        let call = c.status(StatusRequest {});
        tokio::time::timeout(Duration::from_secs(2), call).await.ok()?.ok().map(|r| r.into_inner())
    }

    /// The leader as seen by a running node, once one is elected.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for id in self.children.keys() {
                if let Some(s) = self.status(*id).await {
                    if let Some(l) = s.leader_id.filter(|l| self.children.contains_key(l)) {
                        return l;
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> StatusResponse {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= index {
                    return s;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} did not apply {index} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `strongbox` binary as a user runs it, against node 1 as the admin.
pub fn strongbox(c: &TestCluster, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    strongbox_with_stdin(c, args, b"")
}

/// As `strongbox`, with `stdin` piped in (a secret's value, a password).
pub fn strongbox_with_stdin(
    c: &TestCluster,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    stdin: &[u8],
) -> std::process::Output {
    strongbox_as(c, Some(&c.admin_token), args, stdin)
}

/// The binary with `token` (None: the token a `login` in this cluster's
/// scratch profile saved, as a user's CLI uses). The profile is the
/// cluster's own, never the user's `~/.config`.
pub fn strongbox_as(
    c: &TestCluster,
    token: Option<&str>,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    stdin: &[u8],
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let ca = c.profile.ca_cert.clone().expect("TLS cluster");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strongbox"));
    cmd.env("STRONGBOX_PROFILE", c.dir.path().join("cli-profile.toml")).env_remove("STRONGBOX_TOKEN");
    if let Some(t) = token {
        cmd.env("STRONGBOX_TOKEN", t);
    }
    let mut child = cmd
        .arg("--endpoint")
        .arg(c.api_addr(1))
        .arg("--ca")
        .arg(ca)
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The command's stdout; it must have succeeded.
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command must have failed, saying `why` on stderr.
pub fn refused(out: std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "went through: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

pub fn put_req(path: &str, value: &str, request_id: &str) -> PutSecretRequest {
    PutSecretRequest {
        options: Some(WriteOptions { request_id: request_id.into() }),
        path: path.into(),
        value: value.as_bytes().to_vec(),
        cas: None,
        max_versions: None,
    }
}

pub fn get_req(path: &str, consistency: Consistency, min_revision: u64) -> GetSecretRequest {
    GetSecretRequest {
        options: Some(ReadOptions { consistency: consistency as i32, min_revision, max_staleness_ms: 0 }),
        path: path.into(),
        version: 0,
    }
}

/// Puts through node `id`, retrying while the cluster elects (same request
/// id, so a retry never applies twice).
pub async fn put_retry(
    c: &TestCluster,
    id: u64,
    path: &str,
    value: &str,
    request_id: &str,
) -> PutSecretResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match c.secrets(id).put(put_req(path, value, request_id)).await {
            Ok(r) => return r.into_inner(),
            Err(s) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "put {path} via node {id} kept failing: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Drop for TestCluster {
    /// A failed test shows what the nodes said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.configs.keys() {
                let log = self.log(*id);
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("---- node {id} log (last 30 lines) ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
