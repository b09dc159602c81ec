//! `strongbox cluster ...`.

use clap::Subcommand;
use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::*;

use super::{status_err, Conn};

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Leader, term and per-member log / committed / applied indexes.
    Status,
    /// Adds a node (started with its own data dir and no initial members)
    /// as a learner: it receives the log but does not vote.
    AddLearner {
        /// The new node's id (unique in the cluster).
        #[arg(long)]
        id: u64,
        /// Its peer address (host:port), as other nodes reach it.
        #[arg(long)]
        raft_addr: String,
        /// Its client address (host:port), as clients reach it.
        #[arg(long)]
        api_addr: String,
    },
    /// Makes a learner that has caught up a voter.
    Promote {
        /// The learner's id.
        #[arg(long)]
        id: u64,
    },
    /// Removes a member (voter or learner); it then refuses clients.
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Hands leadership to a voter that has caught up.
    TransferLeader {
        /// The voter's id.
        #[arg(long)]
        id: u64,
    },
    /// After upgrading every member's binary: moves the cluster to the
    /// newest state version all members support (new apply semantics
    /// switch on together). Asks each member; refuses if one does not answer.
    UpgradeState,
    /// Each member's digest of its replicated state (etcd's HashKV): members
    /// at the same applied index must agree. Exit 1 if two disagree, 3 if
    /// not every member answered at one index (nothing wrong seen, but not
    /// all compared: run it again while writes pause).
    Hash,
}

/// Each member's state hash, asked directly (60 s each: it reads the whole
/// state); Err: why it did not answer.
async fn member_hash(conn: &Conn, m: &Member) -> Result<StateHashResponse, String> {
    let mut c = ClusterClient::new(conn.channel_to(&m.api_addr).map_err(|e| e.to_string())?);
    let call = c.state_hash(StateHashRequest {});
    match tokio::time::timeout(std::time::Duration::from_secs(60), call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("no answer within 60 s".into()),
    }
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
        ClusterCmd::Hash => {
            let s = client.status(StatusRequest {}).await.map_err(status_err)?.into_inner();
            println!("{:<4} {:>9} {:>9} {:>9}  digest", "id", "applied", "revision", "records");
            let mut by_index: std::collections::BTreeMap<u64, Vec<(u64, String)>> = Default::default();
            for m in &s.members {
                match member_hash(&conn, m).await {
                    Ok(h) => {
                        println!(
                            "{:<4} {:>9} {:>9} {:>9}  {}",
                            m.id, h.applied_index, h.revision, h.records, h.digest
                        );
                        by_index.entry(h.applied_index).or_default().push((m.id, h.digest));
                    }
                    Err(why) => println!("{:<4} {why}", m.id),
                }
            }
            let mut parted = Vec::new();
            for (index, hashes) in &by_index {
                if hashes.iter().any(|(_, d)| *d != hashes[0].1) {
                    let ids: Vec<String> = hashes.iter().map(|(id, _)| id.to_string()).collect();
                    parted.push(format!("nodes {} at applied index {index}", ids.join(", ")));
                }
            }
            anyhow::ensure!(parted.is_empty(), "replicas disagree: {}", parted.join("; "));
            let answered: usize = by_index.values().map(Vec::len).sum();
            if by_index.len() != 1 || answered != s.members.len() {
                eprintln!(
                    "not compared in full: {answered} of {} members answered, at {} applied index(es); \
                     run again while writes pause",
                    s.members.len(),
                    by_index.len()
                );
                std::process::exit(3);
            }
            println!("all {answered} members agree");
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
