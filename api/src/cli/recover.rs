//! `strongbox recover ...`: break-glass through a member's peer port, with
//! that member's own certificate (read from its node config), no token.

use std::path::PathBuf;

use clap::Subcommand;
use strongbox_proto::v1::recovery_client::RecoveryClient;
use strongbox_proto::v1::RecoveryUnlockUserRequest;
use tonic::transport::Endpoint;

use super::status_err;
use crate::config::NodeConfig;

#[derive(Subcommand, Debug)]
pub enum RecoverCmd {
    /// Lift a user's lockout (e.g. the only admin, locked out by someone
    /// guessing passwords). Run where a node's config and key are readable.
    UnlockUser {
        username: String,
        /// The node config whose certificate and peer address to use
        /// (`strongbox dev`: ~/.local/share/strongbox/dev/node1.toml).
        #[arg(long)]
        config: PathBuf,
    },
}

pub async fn recover(cmd: RecoverCmd) -> anyhow::Result<()> {
    let RecoverCmd::UnlockUser { username, config } = cmd;
    let cfg = NodeConfig::load(&config)?;
    let addr = cfg.advertise_raft_addr.clone().unwrap_or_else(|| cfg.raft_addr.clone());
    let channel = match &cfg.tls {
        Some(files) => {
            let tls = crate::tls::load(files)?;
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.peer_client())?.connect().await
        }
        None => Endpoint::from_shared(format!("http://{addr}"))?.connect().await,
    }
    .map_err(|e| anyhow::anyhow!("cannot reach the peer port {addr}: {}", crate::client::error_chain(&e)))?;
    let w = RecoveryClient::new(channel)
        .unlock_user(RecoveryUnlockUserRequest { username: username.clone() })
        .await
        .map_err(status_err)?
        .into_inner();
    println!("unlocked {username} (revision {})", w.revision);
    Ok(())
}
