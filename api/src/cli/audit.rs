//! `strongbox audit query|verify`.

use clap::Subcommand;
use strongbox_proto::v1::audit_client::AuditClient;
use strongbox_proto::v1::{AuditChain, AuditQueryRequest, AuditVerifyRequest};

use strongbox_proto::v1::cluster_client::ClusterClient;
use strongbox_proto::v1::StatusRequest;

use super::{status_err, Conn};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Records as JSON lines, oldest first, filtered; follows pages up to --max.
    Query {
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        #[arg(long, default_value = "")]
        actor: String,
        #[arg(long, default_value = "")]
        action: String,
        /// "ok", "deduplicated", or a refusal code such as PermissionDenied.
        #[arg(long, default_value = "")]
        outcome: String,
        #[arg(long, default_value_t = 0)]
        since_ms: u64,
        #[arg(long, default_value_t = 0)]
        until_ms: u64,
        /// Records to print at most.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// The contacted node's local chain (reads, requests refused before
        /// proposing) instead of the replicated one.
        #[arg(long)]
        local: bool,
    },
    /// Walks a chain on the contacted node (the replicated one: on every
    /// member, and compares them at one record); exit code 1 if a link is
    /// broken or members differ.
    Verify {
        /// The contacted node's local chain instead of the replicated one.
        #[arg(long)]
        local: bool,
    },
}

fn chain(local: bool) -> i32 {
    if local {
        AuditChain::Local as i32
    } else {
        AuditChain::Replicated as i32
    }
}

pub async fn audit(conn: Conn, cmd: AuditCmd) -> anyhow::Result<()> {
    let mut client = AuditClient::new(conn.channel().await?);
    match cmd {
        AuditCmd::Query { after_seq, actor, action, outcome, since_ms, until_ms, max, local } => {
            let (mut after, mut printed) = (after_seq, 0);
            loop {
                let req = AuditQueryRequest {
                    options: None,
                    after_seq: after,
                    limit: (max - printed).clamp(1, 1000) as u32,
                    actor: actor.clone(),
                    action: action.clone(),
                    outcome: outcome.clone(),
                    since_ms,
                    until_ms,
                    chain: chain(local),
                };
                let r = client.query(req).await.map_err(status_err)?.into_inner();
                for rec in r.records {
                    let line = serde_json::json!({
                        "seq": rec.seq, "time_ms": rec.time_ms, "actor": rec.actor, "action": rec.action,
                        "resource": rec.resource, "outcome": rec.outcome, "request_id": rec.request_id,
                        "revision": rec.revision, "node": rec.node, "hash": hex::encode(rec.hash),
                    });
                    println!("{line}");
                    printed += 1;
                }
                if r.next_after_seq == 0 || printed >= max {
                    return Ok(());
                }
                after = r.next_after_seq;
            }
        }
        AuditCmd::Verify { local } => {
            let req = AuditVerifyRequest { options: None, chain: chain(local) };
            let r = client.verify(req).await.map_err(status_err)?.into_inner();
            let which = if local { "local audit chain" } else { "audit chain" };
            if r.ok {
                println!(
                    "{which} intact: {} records ({}..={}), head hash {}",
                    r.records_checked,
                    r.first_seq,
                    r.head_seq,
                    hex::encode(&r.head_hash)
                );
                if !local && !compare_members(&conn).await? {
                    std::process::exit(1);
                }
                Ok(())
            } else {
                eprintln!(
                    "{which} BROKEN at record {}: {} ({} records verified before it)",
                    r.first_broken_seq, r.reason, r.records_checked
                );
                std::process::exit(1);
            }
        }
    }
}

/// Verifies the replicated chain on every member and compares them at the
/// newest record all of them hold: a member whose copy differs there (a
/// rewritten or replayed chain on its disk) would otherwise pass its own
/// walk. True when every member answered, verified and agreed.
async fn compare_members(conn: &Conn) -> anyhow::Result<bool> {
    let status =
        ClusterClient::new(conn.channel().await?).status(StatusRequest {}).await.map_err(status_err)?;
    let mut heads = Vec::new();
    let mut all_ok = true;
    for m in status.into_inner().members {
        let mut member = AuditClient::new(conn.channel_to(&m.api_addr)?);
        let req = AuditVerifyRequest { options: None, chain: AuditChain::Replicated as i32 };
        match member.verify(req).await {
            Ok(r) if r.get_ref().ok => heads.push((m.id, r.into_inner().head_seq, member)),
            Ok(r) => {
                let r = r.into_inner();
                println!("node {}: BROKEN at record {}: {}", m.id, r.first_broken_seq, r.reason);
                all_ok = false;
            }
            Err(e) => {
                println!("node {}: not verified ({}: {})", m.id, e.code(), e.message());
                all_ok = false;
            }
        }
    }
    let Some(seq) = heads.iter().map(|(_, head, _)| *head).min().filter(|s| *s > 0) else {
        return Ok(all_ok);
    };
    let mut hashes = Vec::new();
    for (id, _, member) in &mut heads {
        let req = AuditQueryRequest {
            after_seq: seq - 1,
            limit: 1,
            chain: AuditChain::Replicated as i32,
            ..Default::default()
        };
        let rec = member.query(req).await.map_err(status_err)?.into_inner().records.into_iter().next();
        match rec.filter(|r| r.seq == seq) {
            Some(r) => hashes.push((*id, hex::encode(r.hash))),
            None => {
                println!("node {id}: has no record {seq}");
                all_ok = false;
            }
        }
    }
    let agree = hashes.windows(2).all(|w| w[0].1 == w[1].1);
    if agree {
        let ids: Vec<String> = hashes.iter().map(|(id, _)| id.to_string()).collect();
        let hash = hashes.first().map(|(_, h)| h.as_str()).unwrap_or("");
        println!("members {} verified and agree at record {seq} (hash {hash})", ids.join(", "));
    } else {
        println!("members DIFFER at record {seq}:");
        for (id, hash) in &hashes {
            println!("  node {id}: {hash}");
        }
    }
    Ok(all_ok && agree)
}
