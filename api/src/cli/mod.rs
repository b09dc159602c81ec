//! The `strongbox` command line: server (`serve`, `dev`) and client commands.
//! Client commands read the profile (endpoints, CA) and the token saved by
//! `strongbox login`; secrets and passwords come from a prompt or stdin,
//! never from argv (visible to every user in `ps`).

mod admin;
mod audit;
mod certs;
mod cluster;
mod keys;
mod ledger;
mod recover;
mod secrets;
mod session;
mod snapshot;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

use crate::client::{default_profile_path, load_token, AuthChannel, Bearer, Profile};
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
    /// The token from `strongbox login` is kept next to it, in `token`.
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
        /// Keep data in plaintext on disk (tests only).
        #[arg(long)]
        insecure_no_encryption: bool,
        /// DELIBERATELY UNSAFE: answer linearizable reads from local state
        /// without asking the leader (for checking the consistency harness).
        #[arg(long)]
        unsafe_stale_reads: bool,
    },
    /// Start a three-node TLS cluster on 127.0.0.1 and wait for Ctrl-C.
    Dev(crate::dev::DevArgs),
    /// A cluster CA and node certificates for real deployments (files only).
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Log in with a username and password; the token is saved (mode 0600).
    Login(session::LoginArgs),
    /// Revoke the saved token and forget it.
    Logout,
    /// Who the saved token belongs to, its roles and expiry.
    Whoami,
    /// Change your own password (prompts, or two lines on stdin: old, new).
    Passwd {
        #[arg(long)]
        password_stdin: bool,
    },
    /// Tokens: renew, revoke, introspect, client-credentials grant.
    #[command(subcommand)]
    Token(session::TokenCmd),
    /// Users (admin).
    #[command(subcommand)]
    User(admin::UserCmd),
    /// Roles and their assignment (admin).
    #[command(subcommand)]
    Role(admin::RoleCmd),
    /// Service clients (admin).
    #[command(subcommand)]
    Client(admin::ClientCmd),
    /// Versioned secrets.
    #[command(subcommand, alias = "secrets")]
    Secret(secrets::SecretCmd),
    /// Ledger accounts: create (one or a JSON-lines batch), get, transfers, balances.
    #[command(subcommand, alias = "accounts")]
    Account(ledger::AccountCmd),
    /// Ledger transfers: create (one or a JSON-lines batch), get.
    #[command(subcommand, alias = "transfers")]
    Transfer(ledger::TransferCmd),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// The change feed as JSON lines (one per revision), from a revision or now.
    Watch(watch::WatchArgs),
    /// The replicated audit trail: query records, verify the hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Example eventually consistent service: a user directory and secret
    /// versions kept in a local file from the change feed, resumable.
    FeedDemo(crate::feed_demo::FeedDemoArgs),
    /// Encryption at rest: data keys, rotation (on every node).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// The permission every RPC needs (Markdown table).
    Permissions,
    /// Break-glass through a member's peer port, with its certificate.
    #[command(subcommand)]
    Recover(recover::RecoverCmd),
    /// Backups: save an image of the whole store, check one, restore one
    /// into a new cluster.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
}

fn init_logging(json: bool) {
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter};
    // openraft's replication logs every failed attempt to reach a peer that
    // is down (ERROR and WARN, several a second); the peer network logs the
    // change once instead ("peer unreachable" / "peer reachable again"),
    // and failed snapshot sends itself. Other per-attempt lines go too
    // (`log_noise`). RUST_LOG overrides all of this.
    let (levels, drop_noise) = match EnvFilter::try_from_default_env() {
        Ok(asked) => (asked, false),
        Err(_) => (
            EnvFilter::new(
                "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=error",
            ),
            true,
        ),
    };
    let output = if json {
        fmt::layer().json().boxed()
    } else {
        // Colour only for a terminal: `strongbox dev` sends node logs to files.
        use std::io::IsTerminal;
        fmt::layer().with_ansi(std::io::stdout().is_terminal()).boxed()
    };
    // The level filter stays global (what it disables costs nothing); the
    // noise filter sees only the events that pass it.
    tracing_subscriber::registry()
        .with(levels)
        .with(output.with_filter(crate::log_noise::DropNoise { active: drop_noise }))
        .init();
}

/// What a client command needs to talk to the cluster.
pub struct Conn {
    pub profile: Profile,
    pub profile_path: PathBuf,
    pub token: Option<String>,
}

impl Conn {
    /// A channel to the first endpoint that answers, carrying the token.
    pub async fn channel(&self) -> anyhow::Result<AuthChannel> {
        let ch = self.profile.connect().await?;
        Ok(AuthChannel::new(ch, Bearer::new(self.token.as_deref())?))
    }

    /// A channel to one endpoint, carrying the token.
    pub fn channel_to(&self, addr: &str) -> anyhow::Result<AuthChannel> {
        Ok(AuthChannel::new(self.profile.channel_to(addr)?, Bearer::new(self.token.as_deref())?))
    }
}

impl ConnArgs {
    pub fn conn(&self) -> anyhow::Result<Conn> {
        let profile_path = self.profile.clone().unwrap_or_else(default_profile_path);
        let profile = if !self.endpoint.is_empty() {
            // The endpoints replace the profile's; its CA still serves
            // unless --ca or --insecure says otherwise (one node of the
            // profile's own cluster is the common case).
            let ca_cert = match (&self.ca, self.insecure) {
                (Some(ca), _) => Some(ca.clone()),
                (None, true) => None,
                (None, false) => Profile::load(&profile_path).ok().and_then(|p| p.ca_cert),
            };
            Profile { endpoints: self.endpoint.clone(), ca_cert, insecure: self.insecure }
        } else {
            let mut p = Profile::load(&profile_path)?;
            p.insecure |= self.insecure;
            p
        };
        let token = load_token(&profile_path);
        Ok(Conn { profile, profile_path, token })
    }
}

impl Cli {
    /// The worker threads `serve`'s config asks for (None: tokio's default,
    /// one per core or $TOKIO_WORKER_THREADS). A config that cannot be read
    /// gives None here; `run` then reports why.
    pub fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Serve { config, .. } => {
                NodeConfig::load(config).ok().map(|c| c.worker_threads).filter(|n| *n > 0)
            }
            _ => None,
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, log_json, insecure_no_encryption, unsafe_stale_reads } => {
            let mut cfg = NodeConfig::load(&config)?;
            cfg.insecure_no_encryption |= insecure_no_encryption;
            cfg.unsafe_stale_reads |= unsafe_stale_reads;
            init_logging(log_json || cfg.log_format == "json");
            return crate::server::run(cfg, shutdown_signal()).await;
        }
        Command::Dev(args) => {
            init_logging(false);
            return crate::dev::run(args, cli.conn.profile.clone()).await;
        }
        Command::Permissions => {
            print!("{}", crate::auth::permissions::markdown());
            return Ok(());
        }
        Command::Certs(cmd) => return certs::certs(cmd),
        Command::Recover(cmd) => return recover::recover(cmd).await,
        Command::Snapshot(ref cmd) => {
            if let Some(done) = snapshot::offline(cmd).await {
                return done;
            }
        }
        _ => {}
    }
    default_sigpipe();
    let conn = cli.conn.conn()?;
    match cli.command {
        Command::Login(args) => session::login(conn, args).await,
        Command::Logout => session::logout(conn).await,
        Command::Whoami => session::whoami(conn).await,
        Command::Passwd { password_stdin } => session::passwd(conn, password_stdin).await,
        Command::Token(cmd) => session::token(conn, cmd).await,
        Command::User(cmd) => admin::user(conn, cmd).await,
        Command::Role(cmd) => admin::role(conn, cmd).await,
        Command::Client(cmd) => admin::client(conn, cmd).await,
        Command::Secret(cmd) => secrets::secret(conn, cmd).await,
        Command::Cluster(cmd) => cluster::cluster(conn, cmd).await,
        Command::Keys(cmd) => keys::keys(conn, cmd).await,
        Command::Watch(args) => watch::watch(conn, args).await,
        Command::Audit(cmd) => audit::audit(conn, cmd).await,
        Command::FeedDemo(args) => {
            let model =
                crate::feed_demo::follow(conn.channel().await?, &args.state, args.until_revision).await?;
            println!(
                "read model at revision {}: {} users, {} secrets ({})",
                model.revision,
                model.users.len(),
                model.secrets.len(),
                args.state.display()
            );
            Ok(())
        }
        Command::Account(cmd) => ledger::account(conn, cmd).await,
        Command::Transfer(cmd) => ledger::transfer(conn, cmd).await,
        Command::Snapshot(snapshot::SnapshotCmd::Save { file, key_file, .. }) => {
            snapshot::save(conn, file, key_file).await
        }
        Command::Serve { .. }
        | Command::Dev(_)
        | Command::Permissions
        | Command::Certs(_)
        | Command::Recover(_)
        | Command::Snapshot(_) => {
            unreachable!("handled above")
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
    if s.code() == tonic::Code::Unauthenticated {
        return anyhow::anyhow!("{:?}: {} (log in with `strongbox login`)", s.code(), s.message());
    }
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// A secret from a hidden prompt, or one line of stdin when `from_stdin`
/// or when stdin is not a terminal.
pub fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!trimmed.is_empty(), "{prompt} expected on stdin, got an empty line");
        return Ok(Zeroizing::new(trimmed.to_string()));
    }
    Ok(Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?))
}

/// Idempotency key flag shared by writes.
pub fn write_opts(request_id: Option<String>) -> Option<strongbox_proto::v1::WriteOptions> {
    Some(strongbox_proto::v1::WriteOptions { request_id: request_id.unwrap_or_default() })
}

/// `--local` / `--min-revision` → read options.
pub fn read_opts(local: bool, min_revision: u64) -> Option<strongbox_proto::v1::ReadOptions> {
    use strongbox_proto::v1::{Consistency, ReadOptions};
    let consistency = if local { Consistency::Local } else { Consistency::Linearizable };
    Some(ReadOptions { consistency: consistency as i32, min_revision, max_staleness_ms: 0 })
}

pub fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let now = crate::observe::now_ms();
    if ms >= now {
        format!("in {}s", (ms - now) / 1000)
    } else {
        format!("{}s ago", (now - ms) / 1000)
    }
}
