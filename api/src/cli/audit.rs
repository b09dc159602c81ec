//! `strongbox audit query|verify`.

use clap::Subcommand;
use strongbox_proto::v1::audit_client::AuditClient;
use strongbox_proto::v1::{AuditChain, AuditQueryRequest, AuditVerifyRequest};

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
    /// Walks a chain on the contacted node; exit code 1 if a link is broken.
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
                println!("{which} intact: {} records ({}..={})", r.records_checked, r.first_seq, r.head_seq);
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
