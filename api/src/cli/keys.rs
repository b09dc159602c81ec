//! `strongbox keys ...`: encryption at rest is per node, so these commands
//! ask every node of the profile (or each --endpoint) in turn.

use clap::Subcommand;
use strongbox_proto::v1::keys_client::KeysClient;
use strongbox_proto::v1::*;

use super::{fmt_ms, status_err, Conn};

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Data keys and re-encryption progress of every node.
    Status,
    /// New writes use a new data key at once; old values are re-encrypted
    /// in the background, then the old key is retired.
    RotateDataKey,
    /// Re-wrap the data keys under the key each node finds in
    /// `<master_key_file>.new` (0600), which then replaces master_key_file.
    RotateMasterKey,
}

fn print(s: &KeysStatusResponse) {
    if !s.encrypted {
        println!("node {}: encryption at rest OFF (--insecure-no-encryption)", s.node_id);
        return;
    }
    println!(
        "node {}: re-encryption {} (scanned {}, rewritten {}, passes {})",
        s.node_id,
        if s.reencryption_running { "RUNNING" } else { "idle" },
        s.reencryption_scanned,
        s.reencryption_rewritten,
        s.reencryption_passes
    );
    for k in &s.keys {
        println!(
            "  data key {:<3} {:<8} created {:<12} encryptions reserved {}",
            k.id,
            if k.active {
                "active"
            } else if k.retired {
                "retired"
            } else {
                "old"
            },
            fmt_ms(k.created_ms),
            k.encryptions_reserved
        );
    }
}

pub async fn keys(conn: Conn, cmd: KeysCmd) -> anyhow::Result<()> {
    let mut failed = 0;
    for ep in &conn.profile.endpoints {
        let mut c = KeysClient::new(conn.channel_to(ep)?);
        let r = match cmd {
            KeysCmd::Status => c.status(KeysStatusRequest {}).await,
            KeysCmd::RotateDataKey => c.rotate_data_key(RotateDataKeyRequest {}).await,
            KeysCmd::RotateMasterKey => c.rotate_master_key(RotateMasterKeyRequest {}).await,
        };
        match r {
            Ok(r) => print(&r.into_inner()),
            Err(s) => {
                failed += 1;
                eprintln!("{ep}: {}", status_err(s));
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} node(s) failed");
    Ok(())
}
