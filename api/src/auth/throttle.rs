//! Failed logins per source address, node-local: each failure writes to
//! the replicated log (the lockout counter, the revision, the feed), so one
//! address guessing fast would fill the feed's retention and hold every
//! user it names locked. A token bucket per address: a burst, then a
//! steady trickle; refused requests cost no hashing and no log entry.
//! An IPv6 client counts by its /64 (one host commonly holds a whole /64,
//! so its addresses are not separate guessers). When the table is full of
//! addresses mid-burst, the addresses it cannot hold share one bucket:
//! many addresses at once slow each other down rather than reset anyone.

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
    buckets: Mutex<HashMap<Source, Bucket>>,
}

/// What one bucket counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// Every address the full table cannot hold.
    Overflow,
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
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
        let source = Source::of(ip);
        let full = buckets.len() >= ADDRESSES_MAX;
        let bucket = buckets.get(&source).or_else(|| buckets.get(&Source::Overflow).filter(|_| full));
        match bucket.map(|b| b.refilled(now)) {
            Some(b) if b.left == 0 => {
                Err(FAILED_LOGIN_REFILL.saturating_sub(now.saturating_duration_since(b.at)))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().expect("throttle lock");
        let mut source = Source::of(ip);
        if buckets.len() >= ADDRESSES_MAX && !buckets.contains_key(&source) {
            buckets.retain(|s, b| *s == Source::Overflow || b.refilled(now).left < FAILED_LOGINS_BURST);
            if buckets.len() >= ADDRESSES_MAX {
                // Every address is mid-burst: this one shares the overflow
                // bucket (one more entry at most), rather than grow the table.
                source = Source::Overflow;
            }
        }
        let b = buckets.entry(source).or_insert(Bucket { left: FAILED_LOGINS_BURST, at: now });
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
    fn the_table_stays_bounded_and_a_full_table_forgets_nobody() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let first: IpAddr = IpAddr::from(0u32.to_be_bytes());
        for _ in 0..FAILED_LOGINS_BURST {
            t.failed(first, now);
        }
        for i in 1..(ADDRESSES_MAX as u32 + 100) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.buckets.lock().unwrap().len() <= ADDRESSES_MAX + 1);
        assert!(t.check(first, now).is_err(), "the first guesser is still held up");
        // The addresses beyond the table share one bucket: 99 failures emptied it.
        let late: IpAddr = IpAddr::from((ADDRESSES_MAX as u32 + 1000).to_be_bytes());
        assert!(t.check(late, now).is_err(), "an untracked address shares the overflow bucket");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..FAILED_LOGINS_BURST {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            t.failed(ip, now);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(t.check(same_64, now).is_err(), "one /64, one bucket");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(t.check(other_64, now).is_ok());
        for _ in 0..FAILED_LOGINS_BURST {
            t.failed("10.1.2.3".parse().unwrap(), now);
        }
        assert!(t.check("::ffff:10.1.2.3".parse().unwrap(), now).is_err(), "mapped IPv4 is the IPv4 address");
    }
}
