//! The leader's pulse (TigerBeetle's name): pending transfers whose timeout
//! passed are released by a command, so every node releases them at the
//! same log position. Ledger commands sweep on their own; this covers a
//! quiet ledger.

use std::time::Duration;

use strongbox_store::command::ExpirePendingTransfers;
use strongbox_store::ledger::read::next_expiry_ns;
use strongbox_store::{Actor, Command, Op};

use crate::observe::now_ms;
use crate::services::Api;

const PULSE_INTERVAL: Duration = Duration::from_secs(1);
const PULSE_WRITE_BUDGET: Duration = Duration::from_secs(5);

pub async fn run(api: Api) {
    let mut tick = tokio::time::interval(PULSE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leads = api.node.raft.metrics().borrow().current_leader == Some(api.node.id);
        if !leads {
            continue;
        }
        let now_ms = now_ms();
        let due = match next_expiry_ns(api.node.sm.db()) {
            Ok(Some(at_ns)) => at_ns <= now_ms.saturating_mul(1_000_000),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "pulse: reading the expiry index failed");
                false
            }
        };
        if !due {
            continue;
        }
        let cmd = Command {
            request_id: uuid::Uuid::new_v4().to_string(),
            time_ms: now_ms,
            node: api.node.id,
            actor: Actor::Node,
            op: Op::ExpirePendingTransfers(ExpirePendingTransfers {}),
        };
        if let Err(e) = api.node.write(cmd, PULSE_WRITE_BUDGET).await {
            tracing::warn!(error = %e, "pulse: expiring pending transfers failed; retrying next tick");
        }
    }
}
