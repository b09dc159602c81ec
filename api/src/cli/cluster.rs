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
    /// After upgrading every member's binary: moves the cluster to the
    /// newest state version all members support (new apply semantics
    /// switch on together). Asks each member; refuses if one does not answer.
    UpgradeState,
}

/// Each member's own status, asked directly (2 s each); None: no answer.
async fn member_status(conn: &Conn, m: &Member) -> Option<StatusResponse> {
    let mut c = ClusterClient::new(conn.channel_to(&m.api_addr).ok()?);
    let call = c.status(StatusRequest {});
    tokio::time::timeout(std::time::Duration::from_secs(2), call).await.ok()?.ok().map(|r| r.into_inner())
}

pub async fn cluster(conn: Conn, cmd: ClusterCmd) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(conn.channel().await?);
    match cmd {
        ClusterCmd::Status => {
            let s = client.status(StatusRequest {}).await.map_err(status_err)?.into_inner();
            // A leader named long ago is only what this node last knew.
            let heard = match s.leader_contact_age_ms {
                Some(ms) if ms <= 2_000 => String::new(),
                Some(ms) => {
                    format!(" (node {} last in step with it {:.1} s ago)", s.node_id, ms as f64 / 1000.0)
                }
                None => format!(" (node {} not in step with a leader since it started)", s.node_id),
            };
            println!(
                "cluster: leader {}, term {}{heard}",
                s.leader_id.map_or("none".into(), |l| l.to_string()),
                s.term
            );
            println!(
                "{:<4} {:<9} {:<22} {:<22} {:>9} {:>10} {:>9} {:>9} {:>9}",
                "id", "role", "api", "raft", "last_log", "committed", "applied", "revision", "snapshot"
            );
            for m in &s.members {
                // Each member reports its own indexes; ask it directly.
                match member_status(&conn, m).await {
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
            println!(
                "state version {} (this node's build supports up to {})",
                s.state_version, s.state_version_supported
            );
        }
        ClusterCmd::UpgradeState => {
            let s = client.status(StatusRequest {}).await.map_err(status_err)?.into_inner();
            let mut supported = u32::MAX;
            for m in &s.members {
                let Some(o) = member_status(&conn, m).await else {
                    anyhow::bail!(
                        "node {} ({}) did not answer: every member must confirm what its build supports",
                        m.id,
                        m.api_addr
                    );
                };
                println!(
                    "node {}: build {}, supports state versions up to {}",
                    m.id, o.version, o.state_version_supported
                );
                supported = supported.min(o.state_version_supported);
            }
            if supported <= s.state_version {
                println!(
                    "the state is at version {}; nothing newer is supported by every member",
                    s.state_version
                );
                return Ok(());
            }
            let r = client
                .set_state_version(SetStateVersionRequest { version: supported, options: None })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("state version is now {} (revision {})", r.version, r.revision);
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
