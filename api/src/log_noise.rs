//! openraft log lines that repeat per attempt while a peer is away, and
//! carry nothing the node does not say once itself.
//!
//! With one voter down, every linearizable read on the leader logged an
//! ERROR naming that voter ("timeout while confirming leadership"): 8,705
//! lines in a 300 s Jepsen run, thousands of false alarms for one known
//! outage. The peer network already logs the outage once ("peer
//! unreachable") and when it ends; reads that cannot reach a quorum fail
//! with UNAVAILABLE to their caller. The WARN lines listed here are
//! openraft ignoring stale messages after a vote or membership change, as
//! designed.
//!
//! The node's default log filter drops these lines and counts them in
//! `strongbox_log_lines_dropped_total{line}`; with `RUST_LOG` set, nothing
//! is dropped.

use std::fmt::Debug;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// (metric label, how the message starts).
const NOISE: [(&str, &str); 5] = [
    ("read_quorum_timeout", "timeout while confirming leadership for read request"),
    ("vote_unreachable", "while requesting vote"),
    ("stale_after_vote_change", "A message will be ignored because vote changed"),
    ("stale_after_membership_change", "membership_log_id changed"),
    ("response_receiver_gone", "OneshotConsumer.tx.send"),
];

/// Drops openraft's per-attempt lines listed in `NOISE` (when `active`).
pub struct DropNoise {
    pub active: bool,
}

impl<S> Filter<S> for DropNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    /// Every callsite as far as this filter goes: combined with the level
    /// filter, a disabled callsite stays disabled for good (cached), and
    /// only the events that pass it reach `event_enabled`.
    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    /// No level is filtered out here, so the level filter's own maximum
    /// stays the global one (the cheap check every `debug!` makes first).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if !self.active || !event.metadata().target().starts_with("openraft") {
            return true;
        }
        let mut message = Message(None);
        event.record(&mut message);
        match message.0.and_then(|m| noise(&m)) {
            Some(label) => {
                metrics::counter!("strongbox_log_lines_dropped_total", "line" => label).increment(1);
                false
            }
            None => true,
        }
    }
}

/// The label of a noise line, if `message` is one.
fn noise(message: &str) -> Option<&'static str> {
    NOISE.iter().find(|(_, start)| message.starts_with(start)).map(|(label, _)| *label)
}

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_lines_are_noise() {
        assert_eq!(
            noise("timeout while confirming leadership for read request"),
            Some("read_quorum_timeout")
        );
        assert_eq!(
            noise("A message will be ignored because vote changed: msg sent by vote: T4"),
            Some("stale_after_vote_change")
        );
        assert_eq!(noise("quit RaftCore::main on error"), None);
        assert_eq!(noise("failed to append entries"), None);
    }
}
