//! `strongbox cluster ...`.

use clap::Subcommand;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::*;

use super::{status_err, Conn};

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

pub async fn cluster(conn: Conn, cmd: ClusterCmd) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(conn.channel().await?);
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
                let own = match conn.channel_to(&m.api_addr) {
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
            match r.into_inner().leader_id {
                Some(leader) => println!("leader is now node {leader}"),
                None => {
                    println!("no leader right now (an election is under way); see `strongbox cluster status`")
                }
            }
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
