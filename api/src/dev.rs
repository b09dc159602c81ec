//! `strongbox dev`: a three-node TLS cluster on 127.0.0.1 in one command.
//!
//! Generates a throwaway CA and node certificates (once), writes one config
//! per node, runs each node as a child process of this binary, waits for a
//! leader, writes the client profile, and stops all nodes on Ctrl-C. Run
//! again, it reuses the data; `--fresh` starts over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use strongbox_proto::v1::auth_client::AuthClient;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::{LoginRequest, StatusRequest};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

use crate::client::{default_profile_path, save_token, AuthChannel, Bearer, Profile};
use crate::config::{AuthSettings, Member, NodeConfig, RaftSettings, TlsFiles};
use crate::tls::{write_private, DevPki};

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Where certificates, configs, data and logs go
    /// (default: ~/.local/share/strongbox/dev).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Delete any previous dev cluster in --dir first.
    #[arg(long)]
    pub fresh: bool,
    /// Plaintext instead of TLS (prints a warning).
    #[arg(long)]
    pub insecure: bool,
    /// Ports: client base+1.., peer base+11.., metrics base+21...
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Keep data in plaintext on disk (for comparing benchmarks; a new dir only).
    #[arg(long)]
    pub insecure_no_encryption: bool,
}

/// The admin token `dev` saves for the CLI lives as long as tokens may.
const DEV_TOKEN_TTL_S: u64 = 24 * 60 * 60;
const RESTART_DELAY: Duration = Duration::from_secs(10);
const RESTART_WINDOW: Duration = Duration::from_secs(60);
const RESTARTS_PER_WINDOW_MAX: usize = 3;

pub fn default_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/strongbox/dev"))
        .unwrap_or_else(|| PathBuf::from(".strongbox-dev"))
}

/// Writes certificates and one config per node, each only if missing (an
/// existing config is read back as it is); returns the config paths and
/// the client profile. Shared with the integration tests.
pub fn prepare(
    dir: &Path,
    nodes: u64,
    base_port: u16,
    insecure: bool,
    raft: RaftSettings,
) -> anyhow::Result<(Vec<(PathBuf, NodeConfig)>, Profile)> {
    std::fs::create_dir_all(dir)?;
    let ca_path = dir.join("ca.pem");
    if !insecure && !ca_path.exists() {
        let pki = DevPki::new("strongbox dev CA")?;
        let localhost: Vec<std::net::IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?];
        for id in 1..=nodes {
            let c = pki.node_cert(&format!("strongbox-node-{id}"), &localhost)?;
            std::fs::write(dir.join(format!("node{id}.pem")), &c.cert_pem)?;
            write_private(&dir.join(format!("node{id}.key")), &c.key_pem)?;
        }
        std::fs::write(&ca_path, &pki.ca_cert_pem)?;
    }
    let password_file = dir.join("admin-password");
    if !password_file.exists() {
        let mut raw = Zeroizing::new([0u8; 18]);
        rand::fill(&mut raw[..]);
        use base64::Engine;
        let pw = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]));
        write_private(&password_file, &pw)?;
    }
    let addr = |offset: u64, id: u64| node_addr(base_port, offset, id);
    let members: BTreeMap<u64, Member> =
        (1..=nodes).map(|id| (id, Member { raft_addr: addr(10, id), api_addr: addr(0, id) })).collect();
    let mut out = Vec::new();
    for id in 1..=nodes {
        let path = dir.join(format!("node{id}.toml"));
        if path.exists() {
            // A re-run keeps the operator's edits; `ensure_same_shape` has
            // checked that the addresses still match.
            let cfg = NodeConfig::load(&path)?;
            out.push((path, cfg));
            continue;
        }
        // Encryption at rest: one master key per node, in its data dir.
        let data_dir = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let master_key_file = data_dir.join("master.key");
        if !master_key_file.exists() {
            let (_, hex) = strongbox_store::keyring::MasterKey::generate();
            write_private(&master_key_file, &hex)?;
        }
        let cfg = NodeConfig {
            id,
            data_dir: dir.join(format!("node{id}")),
            api_addr: addr(0, id),
            raft_addr: addr(10, id),
            metrics_addr: Some(addr(20, id)),
            advertise_api_addr: None,
            advertise_raft_addr: None,
            tls: (!insecure).then(|| TlsFiles {
                ca_cert: ca_path.clone(),
                cert: dir.join(format!("node{id}.pem")),
                key: dir.join(format!("node{id}.key")),
            }),
            insecure,
            initial_members: members.clone(),
            raft: raft.clone(),
            log_format: "text".into(),
            auth: AuthSettings {
                bootstrap_password_file: Some(password_file.clone()),
                ..AuthSettings::default()
            },
            secret_value_bytes_max: 64 * 1024,
            master_key_file: Some(master_key_file),
            insecure_no_encryption: false,
            unsafe_stale_reads: false,
            local_read_staleness_max_ms: crate::limits::LOCAL_READ_STALENESS_MAX_MS_DEFAULT,
            local_audit_retain_records: strongbox_store::local_audit::LOCAL_AUDIT_RETAIN_RECORDS_DEFAULT,
            local_audit_fsync: true,
            worker_threads: crate::config::shared_machine_worker_threads(nodes),
        };
        std::fs::write(&path, cfg.to_toml())?;
        out.push((path, cfg));
    }
    let profile = Profile {
        endpoints: members.values().map(|m| m.api_addr.clone()).collect(),
        ca_cert: (!insecure).then(|| ca_path.clone()),
        insecure,
    };
    Ok((out, profile))
}

/// A node's address: client ports at base + id, peer ports 10 above,
/// metrics 20 above.
fn node_addr(base_port: u16, offset: u64, id: u64) -> String {
    format!("127.0.0.1:{}", base_port as u64 + offset + id)
}

/// Starts `strongbox serve --config` for one node, logging to `log`.
pub fn spawn_node(exe: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

/// The dev cluster's admin password (written by [`prepare`]).
pub fn admin_password(dir: &Path) -> anyhow::Result<Zeroizing<String>> {
    let p = dir.join("admin-password");
    let text =
        std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
    Ok(Zeroizing::new(text.trim().to_string()))
}

/// Logs in as the first admin, retrying until the cluster has elected a
/// leader and created the admin. `saved_in`: the file the password came
/// from, for a cluster that existed before this run; there the admin
/// exists already, so a refusal is final (retrying would only lock the
/// account) and is reported at once, naming the file.
pub async fn login_admin(
    profile: &Profile,
    password: &str,
    ttl_seconds: u64,
    timeout: Duration,
    saved_in: Option<&Path>,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no endpoint answered");
    loop {
        for ep in &profile.endpoints {
            let Ok(ch) = profile.channel_to(ep) else { continue };
            let req = LoginRequest { username: "admin".into(), password: password.into(), ttl_seconds };
            match tokio::time::timeout(Duration::from_secs(5), AuthClient::new(ch).login(req)).await {
                Ok(Ok(r)) => return Ok(r.into_inner().access_token),
                Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated && saved_in.is_some() => {
                    anyhow::bail!(
                        "the cluster refused the admin password saved in {} ({}). If the admin's password \
                         was changed, write the new one to that file; or start over with --fresh",
                        saved_in.unwrap_or(Path::new("")).display(),
                        s.message()
                    )
                }
                Ok(Err(s)) => last = format!("{ep}: {:?}: {}", s.code(), s.message()),
                Err(_) => last = format!("{ep}: no answer within 5s"),
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("could not log in as admin within {timeout:?} ({last})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls nodes until one reports a leader.
pub async fn wait_for_leader(profile: &Profile, token: &str, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        for ep in &profile.endpoints {
            if let Ok(ch) = profile.channel_to(ep) {
                let mut c = ClusterClient::new(AuthChannel::new(ch, Bearer::new(Some(token))?));
                let call = c.status(StatusRequest {});
                if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), call).await {
                    if let Some(l) = r.into_inner().leader_id {
                        return Ok(l);
                    }
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("no leader after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A dev cluster's addresses are in its Raft membership from the first
/// start: rewriting its configs for other ports, another node count or
/// plaintext would leave nodes calling peers where none listen (and would
/// change the files under a cluster still running from this dir).
fn ensure_same_shape(dir: &Path, args: &DevArgs) -> anyhow::Result<()> {
    let first = dir.join("node1.toml");
    if !first.exists() {
        return Ok(());
    }
    let old = NodeConfig::load(&first)?;
    let nodes = (1..).take_while(|id| dir.join(format!("node{id}.toml")).exists()).count() as u64;
    let api_addr = node_addr(args.base_port, 0, 1);
    let mut was = Vec::new();
    if old.api_addr != api_addr {
        was.push(format!("node 1 on {} (not {api_addr}: another --base-port)", old.api_addr));
    }
    if nodes != args.nodes {
        was.push(format!("{nodes} nodes (not --nodes {})", args.nodes));
    }
    if old.insecure != args.insecure {
        was.push(format!("--insecure {}", if old.insecure { "on" } else { "off" }));
    }
    anyhow::ensure!(
        was.is_empty(),
        "the dev cluster in {} was created with {}; run it with the same flags, \
         or add --fresh to delete it and start over",
        dir.display(),
        was.join(", ")
    );
    Ok(())
}

/// Fails at once, naming the port, when another process (often an earlier
/// `strongbox dev`) listens on one of the nodes' ports. Otherwise the new
/// nodes exit at start while the old cluster answers on those ports, and
/// the login wait runs out its whole timeout without a word.
fn ensure_ports_free(configs: &[(PathBuf, NodeConfig)]) -> anyhow::Result<()> {
    for (_, cfg) in configs {
        for addr in
            [Some(&cfg.api_addr), Some(&cfg.raft_addr), cfg.metrics_addr.as_ref()].into_iter().flatten()
        {
            if let Err(e) = std::net::TcpListener::bind(addr.as_str()) {
                anyhow::bail!(
                    "node {} cannot listen on {addr}: {e}. Is another `strongbox dev` running? \
                     Stop it (Ctrl-C), or give a second cluster its own --dir and --base-port",
                    cfg.id
                );
            }
        }
    }
    Ok(())
}

/// Resolves when a node exits before the cluster is up, with the end of
/// its log: a node that cannot start should say why at once.
async fn first_exit(children: &mut [Child], ids: &[u64], dir: &Path) -> anyhow::Error {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (child, id) in children.iter_mut().zip(ids) {
            if let Ok(Some(status)) = child.try_wait() {
                let log = dir.join(format!("node{id}.log"));
                return anyhow::anyhow!(
                    "node {id} exited during startup ({status}); the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, LOG_TAIL_LINES)
                );
            }
        }
    }
}

/// Lines of a node's log shown when it fails to start.
const LOG_TAIL_LINES: usize = 15;

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM and waits for a clean exit (SIGKILL after a grace period).
pub async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// `profile_arg`: where to write the client profile (the global `--profile`);
/// by default `$STRONGBOX_PROFILE` or ~/.config/strongbox/profile.toml.
pub async fn run(args: DevArgs, profile_arg: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!((1..=7).contains(&args.nodes), "--nodes must be 1..=7");
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    if args.fresh && dir.exists() {
        std::fs::remove_dir_all(&dir)?;
        println!("removed the previous dev cluster in {}", dir.display());
    }
    if args.insecure {
        eprintln!("WARNING: --insecure: TLS is OFF on every port. Never use this outside a test.");
    }
    ensure_same_shape(&dir, &args)?;
    let password_file = dir.join("admin-password");
    let reused = password_file.exists();
    let (mut configs, profile) =
        prepare(&dir, args.nodes, args.base_port, args.insecure, RaftSettings::default())?;
    if !args.insecure_no_encryption && configs.iter().any(|(_, c)| c.insecure_no_encryption) {
        eprintln!(
            "WARNING: this dev cluster was created with --insecure-no-encryption: its data stays in plaintext \
             (--fresh starts over with encryption)."
        );
    }
    if args.insecure_no_encryption {
        eprintln!("WARNING: --insecure-no-encryption: data is stored in plaintext.");
        for (path, cfg) in &mut configs {
            cfg.master_key_file = None;
            cfg.insecure_no_encryption = true;
            std::fs::write(path.as_path(), cfg.to_toml())?;
        }
    }
    ensure_ports_free(&configs)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for (path, cfg) in &configs {
        let log = dir.join(format!("node{}.log", cfg.id));
        children.push(spawn_node(&exe, path, &log)?);
    }
    let password = admin_password(&dir)?;
    let up = async {
        let saved_in = reused.then_some(password_file.as_path());
        let token =
            login_admin(&profile, &password, DEV_TOKEN_TTL_S, Duration::from_secs(90), saved_in).await?;
        let leader = wait_for_leader(&profile, &token, Duration::from_secs(30)).await?;
        anyhow::Ok((token, leader))
    };
    let ids: Vec<u64> = configs.iter().map(|(_, c)| c.id).collect();
    let started = tokio::select! {
        r = up => r,
        e = first_exit(&mut children, &ids, &dir) => Err(e),
    };
    let (token, leader) = match started {
        Ok(l) => l,
        Err(e) => {
            for c in &mut children {
                stop_child(c).await;
            }
            anyhow::bail!("{e}; see the node logs in {}", dir.display());
        }
    };
    let profile_path = profile_arg.unwrap_or_else(default_profile_path);
    profile.save(&profile_path)?;
    let token_file = save_token(&profile_path, &token)?;

    println!("strongbox dev cluster is up: {} nodes, leader is node {leader}", configs.len());
    for (_, cfg) in &configs {
        println!(
            "  node {}  client {}  peer {}  metrics http://{}/metrics  data {}",
            cfg.id,
            cfg.api_addr,
            cfg.raft_addr,
            cfg.metrics_addr.as_deref().unwrap_or("-"),
            cfg.data_dir.display()
        );
    }
    println!("  logs: {}/node*.log", dir.display());
    if configs.iter().any(|(_, c)| c.insecure_no_encryption) {
        println!("  encryption at rest: OFF (this dev cluster was created with --insecure-no-encryption)");
    } else {
        println!(
            "  encryption at rest: on; each node's master key is {}/node<N>/master.key (0600; keep a copy elsewhere)",
            dir.display()
        );
    }
    if let Some(ca) = &profile.ca_cert {
        println!("  CA certificate: {}", ca.display());
    }
    println!(
        "  admin: user \"admin\", password {} (also in {})",
        &*password,
        dir.join("admin-password").display()
    );
    println!(
        "client profile written to {}, an admin token to {} (valid {}h); from another terminal:",
        profile_path.display(),
        token_file.display(),
        DEV_TOKEN_TTL_S / 3600
    );
    println!("  strongbox cluster status");
    println!("  echo -n s3cr3t | strongbox secret put team-a/db/password");
    println!("  strongbox secret get team-a/db/password");
    println!("  strongbox login --username admin    # when the token expires");
    println!("Ctrl-C stops all nodes (data is kept; --fresh starts over). A node that dies is restarted.");

    // A node that dies (say, `kill -9` to watch a failover) is restarted
    // with its data after a pause; a node that keeps dying stops everything.
    let supervise = async {
        let mut restarts: Vec<Vec<tokio::time::Instant>> = vec![Vec::new(); children.len()];
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (i, (path, cfg)) in configs.iter().enumerate() {
                let Ok(Some(status)) = children[i].try_wait() else { continue };
                let now = tokio::time::Instant::now();
                restarts[i].retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                if restarts[i].len() >= RESTARTS_PER_WINDOW_MAX {
                    return format!(
                        "node {} exited {} times within {RESTART_WINDOW:?}; see {}/node{}.log",
                        cfg.id,
                        restarts[i].len() + 1,
                        dir.display(),
                        cfg.id
                    );
                }
                println!(
                    "node {} exited ({status}); restarting it in {RESTART_DELAY:?} with its data",
                    cfg.id
                );
                tokio::time::sleep(RESTART_DELAY).await;
                restarts[i].push(now);
                match spawn_node(&exe, path, &dir.join(format!("node{}.log", cfg.id))) {
                    Ok(c) => children[i] = c,
                    Err(e) => return format!("cannot restart node {}: {e}", cfg.id),
                }
            }
        }
    };
    tokio::select! {
        _ = crate::cli::shutdown_signal() => println!("stopping the cluster..."),
        why = supervise => eprintln!("{why}; stopping the cluster"),
    }
    for c in &mut children {
        stop_child(c).await;
    }
    println!("stopped.");
    Ok(())
}
