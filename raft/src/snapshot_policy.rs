//! When a node builds a snapshot.
//!
//! A build exports the whole state, so building after a fixed number of
//! entries (openraft's `LogsSinceLast`) costs more and more as the state
//! grows: quadratic over a node's life. Measured: at 2.4 M transfers a build
//! wrote an 836 MB image and took about 40 s on each node under load, and
//! unbatched throughput fell by a third meanwhile (BENCHMARKS.md).
//!
//! So a build is due only when both hold: `snapshot_logs` entries were
//! applied since the last snapshot (as before), and the log written since
//! then is at least `1 / IMAGE_BYTES_PER_LOG_BYTE` of the image the build
//! would replace. Export work then stays proportional to what was written,
//! and the log kept between builds to a fraction of the state's size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sm_store::SmStore;
use crate::types::Raft;

/// A build waits for at least image bytes / this of new log.
pub const IMAGE_BYTES_PER_LOG_BYTE: u64 = 2;
/// How often the policy looks.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a build asked for may take before the policy asks again.
const BUILD_WAIT_MAX: Duration = Duration::from_secs(30 * 60);

/// Whether a build is due (see the module comment).
pub fn due(entries_since: u64, log_bytes_since: u64, image_bytes: u64, snapshot_logs: u64) -> bool {
    entries_since >= snapshot_logs && log_bytes_since >= image_bytes / IMAGE_BYTES_PER_LOG_BYTE
}

/// Runs the policy until the node shuts down. `appended_bytes` counts the
/// log bytes this node appended since it started (`LogStore`): after a
/// restart the first build waits for new log, which is harmless.
pub fn spawn(raft: Raft, sm: SmStore, appended_bytes: Arc<AtomicU64>, snapshot_logs: u64) {
    tokio::spawn(async move {
        let metrics = raft.metrics();
        // Log bytes appended when the last snapshot we saw was made.
        let mut bytes_at_snapshot = 0u64;
        let mut seen_snapshot = metrics.borrow().snapshot.map_or(0, |l| l.index);
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            if metrics.has_changed().is_err() {
                return; // Raft is gone.
            }
            let (applied, snapshot) = {
                let m = metrics.borrow();
                (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
            };
            // An installed snapshot counts as a build: the log behind it went.
            if snapshot != seen_snapshot {
                seen_snapshot = snapshot;
                bytes_at_snapshot = appended_bytes.load(Ordering::Relaxed);
            }
            let image_bytes = match sm.image_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot policy: cannot read the current image's size");
                    continue;
                }
            };
            let bytes_now = appended_bytes.load(Ordering::Relaxed);
            let log_bytes_since = bytes_now.saturating_sub(bytes_at_snapshot);
            if !due(applied.saturating_sub(snapshot), log_bytes_since, image_bytes, snapshot_logs) {
                continue;
            }
            tracing::info!(applied, snapshot, log_bytes_since, image_bytes, "building a snapshot");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            // One build at a time: wait until it shows up in the metrics.
            let asked = Instant::now();
            while metrics.borrow().snapshot.map_or(0, |l| l.index) == snapshot
                && asked.elapsed() < BUILD_WAIT_MAX
            {
                tokio::time::sleep(CHECK_INTERVAL).await;
                if metrics.has_changed().is_err() {
                    return;
                }
            }
            metrics::histogram!("strongbox_snapshot_build_seconds").record(asked.elapsed().as_secs_f64());
            seen_snapshot = metrics.borrow().snapshot.map_or(0, |l| l.index);
            bytes_at_snapshot = bytes_now;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_needs_enough_entries_and_enough_log_for_its_image() {
        // A small state: the entry count decides, as with LogsSinceLast.
        assert!(!due(99_999, 1 << 30, 1 << 20, 100_000));
        assert!(due(100_000, 1 << 20, 1 << 20, 100_000));
        // A large state: many entries of little log do NOT rebuild an
        // 836 MB image (the quadratic cost this policy exists to avoid).
        assert!(!due(100_000, 300 << 20, 836 << 20, 100_000));
        assert!(due(100_000, 418 << 20, 836 << 20, 100_000));
        // No image yet: the entry count alone.
        assert!(due(10, 0, 0, 10));
    }
}
