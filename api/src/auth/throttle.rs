//! Failed logins per source address, node-local: each failure writes to
//! the replicated log (the lockout counter, the revision, the feed), so one
//! address guessing fast would fill the feed's retention and hold every
//! user it names locked. A token bucket per address: a burst, then a
//! steady trickle; refused requests cost no hashing and no log entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins an address may make at once, and how fast that refills.
pub const FAILED_LOGINS_BURST: u32 = 20;
pub const FAILED_LOGIN_REFILL: Duration = Duration::from_secs(1);
/// Addresses tracked at most; when full, those back at a full bucket go.
const ADDRESSES_MAX: usize = 4096;

#[derive(Default)]
pub struct LoginThrottle {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures this address may still make.
    left: u32,
    /// When `left` was last brought up to date.
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(self.at).as_millis() / FAILED_LOGIN_REFILL.as_millis();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if earned == 0 {
            return self;
        }
        let left = self.left.saturating_add(earned).min(FAILED_LOGINS_BURST);
        // Keep the fraction of a refill already under way.
        let at = if left == FAILED_LOGINS_BURST { now } else { self.at + FAILED_LOGIN_REFILL * earned };
        Bucket { left, at }
    }
}

impl LoginThrottle {
    /// Whether `ip` may try a login now; if not, how long until it may.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().expect("throttle lock");
        match buckets.get(&ip).map(|b| b.refilled(now)) {
            Some(b) if b.left == 0 => {
                Err(FAILED_LOGIN_REFILL.saturating_sub(now.saturating_duration_since(b.at)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().expect("throttle lock");
        if buckets.len() >= ADDRESSES_MAX && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| b.refilled(now).left < FAILED_LOGINS_BURST);
            if buckets.len() >= ADDRESSES_MAX {
                // Every address is mid-burst: forget them all rather than grow.
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket { left: FAILED_LOGINS_BURST, at: now });
        *b = b.refilled(now);
        b.left = b.left.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_failure_per_refill_and_other_addresses_unaffected() {
        let t = LoginThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..FAILED_LOGINS_BURST {
            assert!(t.check(a, start).is_ok());
            t.failed(a, start);
        }
        let wait = t.check(a, start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= FAILED_LOGIN_REFILL, "{wait:?}");
        assert!(t.check(b, start).is_ok(), "another address is not held up");
        let later = start + FAILED_LOGIN_REFILL;
        assert!(t.check(a, later).is_ok(), "one refill later");
        t.failed(a, later);
        assert!(t.check(a, later).is_err(), "and only one");
        assert!(t.check(a, later + FAILED_LOGIN_REFILL * FAILED_LOGINS_BURST).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(ADDRESSES_MAX as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.buckets.lock().unwrap().len() <= ADDRESSES_MAX);
    }
}
