//! `strongbox watch`: the change feed as JSON lines, one per revision.

use clap::Args;
use strongbox_proto::v1::feed_client::FeedClient;
use strongbox_proto::v1::WatchRequest;

use super::{status_err, Conn};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// First revision to print (0 = from now). Resume with the last seen + 1.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Only these kinds or families, e.g. --kind secret.updated --kind 'transfer.*'.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only events whose entity (path, name, id) starts with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Only events of this ledger.
    #[arg(long, default_value_t = 0)]
    pub ledger: u32,
    /// Also print progress messages (the revision reached while idle).
    #[arg(long)]
    pub progress: bool,
}

pub async fn watch(conn: Conn, args: WatchArgs) -> anyhow::Result<()> {
    let mut client = FeedClient::new(conn.channel().await?);
    let req = WatchRequest {
        start_revision: args.from,
        kinds: args.kinds,
        prefix: args.prefix,
        ledger: args.ledger,
        progress_interval_ms: 0,
    };
    let mut stream = client.watch(req).await.map_err(status_err)?.into_inner();
    while let Some(msg) = stream.message().await.map_err(status_err)? {
        if msg.progress && !args.progress {
            continue;
        }
        let events: Vec<serde_json::Value> = msg
            .events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "kind": e.kind,
                    "entity": e.entity,
                    "ledger": (e.ledger != 0).then_some(e.ledger),
                    "fields": e.fields,
                })
            })
            .collect();
        let line = if msg.progress {
            serde_json::json!({"revision": msg.revision, "progress": true})
        } else if msg.more {
            // The revision continues on the next line(s).
            serde_json::json!({"revision": msg.revision, "time_ms": msg.time_ms, "actor": msg.actor, "events": events, "more": true})
        } else {
            serde_json::json!({"revision": msg.revision, "time_ms": msg.time_ms, "actor": msg.actor, "events": events})
        };
        println!("{line}");
    }
    Ok(())
}
