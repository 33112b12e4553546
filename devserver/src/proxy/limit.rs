//! A token bucket per client, so one visitor cannot spend the key's rate limit (or credit) alone.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Clients remembered at once; past this, buckets that have filled up again are forgotten
/// (they would start full anyway), so a flood of addresses cannot grow the map without bound.
const MAX_CLIENTS: usize = 10_000;

/// How fast each client may call through the proxy (`PROXY_RATE_PER_SEC`, `PROXY_BURST`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: the sustained rate.
    pub per_second: f64,
    /// Bucket size: how many calls a client may make at once after a pause.
    pub burst: u32,
}

impl RateLimit {
    /// The defaults: 10 calls per second with bursts of 40, ample for one page polling a few runs.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 40,
    };
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client seen lately, keyed by address (`None`: no address known).
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for `client` at `now`, or says how long until one is there.
    pub(crate) fn take(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        let burst = f64::from(burst);
        let refill = |bucket: Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed * per_second).min(burst)
        };
        // A panic elsewhere cannot leave a bucket half-updated: every update is one assignment.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, bucket| refill(*bucket) < burst);
            if buckets.len() >= MAX_CLIENTS {
                buckets.clear();
            }
        }
        let tokens = buckets.get(&client).map_or(burst, |b| refill(*b));
        let (tokens, result) = if tokens >= 1.0 {
            (tokens - 1.0, Ok(()))
        } else {
            let wait =
                Duration::try_from_secs_f64((1.0 - tokens) / per_second).unwrap_or(Duration::MAX);
            (tokens, Err(wait))
        };
        buckets.insert(client, Bucket { tokens, at: now });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_burst_then_the_sustained_rate_per_client() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(ip(1), t0), Ok(()));
        }
        assert_eq!(limiter.take(ip(1), t0), Err(Duration::from_millis(500)));
        assert_eq!(
            limiter.take(ip(2), t0),
            Ok(()),
            "another client has its own bucket"
        );
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take(ip(1), later), Ok(()));
        assert_eq!(limiter.take(ip(1), later), Err(Duration::from_millis(500)));
        // A long pause refills to the burst, never beyond.
        let much_later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.take(ip(1), much_later), Ok(()));
        }
        assert!(limiter.take(ip(1), much_later).is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        let t0 = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 + 10) {
            let client = Some(IpAddr::from(n.to_be_bytes()));
            assert_eq!(limiter.take(client, t0), Ok(()));
        }
        let len = limiter
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(len <= MAX_CLIENTS, "{len}");
    }
}
