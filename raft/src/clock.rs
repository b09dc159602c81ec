//! The node's wall clock: the one source of the times this node stamps into
//! commands and the one its leader caps them against.
//!
//! `STRONGBOX_CLOCK_OFFSET_MS` (signed milliseconds, read once at start)
//! shifts it. It is a fault-injection knob for tests and the consistency
//! harness: nodes that share one kernel cannot otherwise run at different
//! clocks. Unset, it is the system clock.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that shifts this node's clock.
pub const CLOCK_OFFSET_ENV: &str = "STRONGBOX_CLOCK_OFFSET_MS";

/// Milliseconds since the Unix epoch, shifted by the offset if one is set.
pub fn now_ms() -> u64 {
    let system_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    system_ms.saturating_add_signed(offset_ms())
}

/// The offset set for this process (0 if none). An unparsable value is a
/// mistake worth stopping for, not a clock to guess.
pub fn offset_ms() -> i64 {
    static OFFSET_MS: OnceLock<i64> = OnceLock::new();
    *OFFSET_MS.get_or_init(|| match std::env::var(CLOCK_OFFSET_ENV) {
        Ok(v) => {
            v.trim().parse().unwrap_or_else(|_| panic!("{CLOCK_OFFSET_ENV}={v:?} is not a signed integer"))
        }
        Err(_) => 0,
    })
}
