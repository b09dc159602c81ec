//! The `strongbox` command line: server (`serve`, `dev`) and client commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::secrets_client::SecretsClient;
use strongbox_proto::v1::*;

use crate::client::{default_profile_path, Profile};
use crate::config::NodeConfig;

#[derive(Parser, Debug)]
#[command(name = "strongbox", version, about = "Replicated credential and transaction store")]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Client profile (default: $STRONGBOX_PROFILE or ~/.config/strongbox/profile.toml).
    #[arg(long, global = true)]
    pub profile: Option<PathBuf>,
    /// Node client address (host:port); overrides the profile's endpoints. Repeatable.
    #[arg(long, global = true)]
    pub endpoint: Vec<String>,
    /// CA certificate for --endpoint.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Plaintext connection (only to nodes started with insecure = true).
    #[arg(long, global = true)]
    pub insecure: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node from a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Start a three-node TLS cluster on 127.0.0.1 and wait for Ctrl-C.
    Dev(crate::dev::DevArgs),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Versioned secrets.
    #[command(subcommand)]
    Secrets(SecretsCmd),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Leader, term and per-member log / committed / applied indexes.
    Status,
    AddLearner {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: String,
    },
    Promote {
        #[arg(long)]
        id: u64,
    },
    Remove {
        #[arg(long)]
        id: u64,
    },
    TransferLeader {
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    Put {
        path: String,
        value: String,
        /// Check-and-set on the current version (0 = must not exist).
        #[arg(long)]
        cas: Option<u64>,
        /// Idempotency key: retrying with the same id applies at most once.
        #[arg(long)]
        request_id: Option<String>,
    },
    Get {
        path: String,
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Serve from the contacted node without a leader round (may be stale).
        #[arg(long)]
        local: bool,
        #[arg(long, default_value_t = 0)]
        min_revision: u64,
    },
    Delete {
        path: String,
        #[arg(long)]
        request_id: Option<String>,
    },
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    if json {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

impl ConnArgs {
    pub fn profile(&self) -> anyhow::Result<Profile> {
        if !self.endpoint.is_empty() {
            return Ok(Profile {
                endpoints: self.endpoint.clone(),
                ca_cert: self.ca.clone(),
                insecure: self.insecure,
            });
        }
        let path = self.profile.clone().unwrap_or_else(default_profile_path);
        let mut p = Profile::load(&path)?;
        p.insecure |= self.insecure;
        Ok(p)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, log_json } => {
            let cfg = NodeConfig::load(&config)?;
            init_logging(log_json || cfg.log_format == "json");
            crate::server::run(cfg, shutdown_signal()).await
        }
        Command::Dev(args) => {
            init_logging(false);
            crate::dev::run(args).await
        }
        Command::Cluster(cmd) => {
            default_sigpipe();
            cluster(cli.conn.profile()?, cmd).await
        }
        Command::Secrets(cmd) => {
            default_sigpipe();
            secrets(cli.conn.profile()?, cmd).await
        }
    }
}

/// Client commands end quietly when their output is piped into `head`
/// (servers keep Rust's default of ignoring SIGPIPE).
fn default_sigpipe() {
    // SAFETY: resetting a signal disposition before any output is written.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn cluster(profile: Profile, cmd: ClusterCmd) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(profile.connect().await?);
    match cmd {
        ClusterCmd::Status => {
            let s = client.status(StatusRequest {}).await.map_err(status_err)?.into_inner();
            println!(
                "cluster: leader {}, term {}",
                s.leader_id.map_or("none".into(), |l| l.to_string()),
                s.term
            );
            println!(
                "{:<4} {:<9} {:<22} {:<22} {:>9} {:>10} {:>9} {:>9} {:>9}",
                "id", "role", "api", "raft", "last_log", "committed", "applied", "revision", "snapshot"
            );
            for m in &s.members {
                // Each member reports its own indexes; ask it directly.
                let own = match profile.channel_to(&m.api_addr) {
                    Ok(ch) => {
                        let mut c = ClusterClient::new(ch);
                        let call = c.status(StatusRequest {});
                        tokio::time::timeout(std::time::Duration::from_secs(2), call)
                            .await
                            .ok()
                            .and_then(|r| r.ok())
                    }
                    Err(_) => None,
                };
                match own.map(|r| r.into_inner()) {
                    Some(o) => println!(
                        "{:<4} {:<9} {:<22} {:<22} {:>9} {:>10} {:>9} {:>9} {:>9}",
                        m.id,
                        o.state,
                        m.api_addr,
                        m.raft_addr,
                        o.last_log_index,
                        o.committed_index,
                        o.applied_index,
                        o.revision,
                        o.snapshot_index
                    ),
                    None => println!(
                        "{:<4} {:<9} {:<22} {:<22} {:>9}",
                        m.id,
                        if m.voter { "voter" } else { "learner" },
                        m.api_addr,
                        m.raft_addr,
                        "unreachable"
                    ),
                }
            }
        }
        ClusterCmd::AddLearner { id, raft_addr, api_addr } => {
            let r = client
                .add_learner(AddLearnerRequest { id, raft_addr, api_addr })
                .await
                .map_err(status_err)?;
            print_members(&r.into_inner());
        }
        ClusterCmd::Promote { id } => {
            let r = client.promote(PromoteRequest { id }).await.map_err(status_err)?;
            print_members(&r.into_inner());
        }
        ClusterCmd::Remove { id } => {
            let r = client.remove(RemoveRequest { id }).await.map_err(status_err)?;
            print_members(&r.into_inner());
        }
        ClusterCmd::TransferLeader { id } => {
            let r = client.transfer_leader(TransferLeaderRequest { id }).await.map_err(status_err)?;
            println!("leader is now {:?}", r.into_inner().leader_id);
        }
    }
    Ok(())
}

fn print_members(r: &MembershipResponse) {
    println!("membership at log index {}:", r.log_index);
    for m in &r.members {
        println!(
            "  {} {} api={} raft={}",
            m.id,
            if m.voter { "voter" } else { "learner" },
            m.api_addr,
            m.raft_addr
        );
    }
}

async fn secrets(profile: Profile, cmd: SecretsCmd) -> anyhow::Result<()> {
    let mut client = SecretsClient::new(profile.connect().await?);
    match cmd {
        SecretsCmd::Put { path, value, cas, request_id } => {
            let r = client
                .put(PutSecretRequest {
                    options: Some(WriteOptions { request_id: request_id.unwrap_or_default() }),
                    path,
                    value: value.into_bytes(),
                    cas,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!(
                "version {} revision {}{}",
                r.version,
                r.revision,
                if r.deduplicated { " (deduplicated)" } else { "" }
            );
        }
        SecretsCmd::Get { path, version, local, min_revision } => {
            let consistency = if local { Consistency::Local } else { Consistency::Linearizable };
            let r = client
                .get(GetSecretRequest {
                    options: Some(ReadOptions { consistency: consistency as i32, min_revision }),
                    path,
                    version,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("{}", String::from_utf8_lossy(&r.value));
            eprintln!("(version {} of {}, revision {})", r.version, r.latest_version, r.revision);
        }
        SecretsCmd::Delete { path, request_id } => {
            let r = client
                .delete(DeleteSecretRequest {
                    options: Some(WriteOptions { request_id: request_id.unwrap_or_default() }),
                    path,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("deleted version {} revision {}", r.version, r.revision);
        }
    }
    Ok(())
}
