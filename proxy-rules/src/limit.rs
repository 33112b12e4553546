//! Token buckets per client, on the caller's clock (a `Duration` since any fixed origin, as
//! `std::time::Instant` panics on wasm32). A proxy keeps two: one over every call, so one visitor polling
//! hard cannot use up the key's own request rate at Runflow (whose 429s would hit every
//! visitor), and one over creates only, the calls that spend credit. The first alone bounds
//! spend at nothing useful: at 10 calls a second a visitor could start 36,000 runs an hour.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// Clients remembered at once; past this, buckets that have filled up again are forgotten
/// (they would start full anyway), then the fullest ones, so a flood of addresses cannot grow
/// the map without bound.
const MAX_CLIENTS: usize = 10_000;
/// How many buckets one eviction forgets when none has filled up: a tenth, so the O(n) pass
/// that picks them runs once per that many new clients, not on every one.
const EVICT: usize = MAX_CLIENTS / 10;

/// How fast each client may call through the proxy: every call (`PROXY_RATE_PER_SEC`,
/// `PROXY_BURST`), or creates (`PROXY_CREATES_PER_MINUTE`, `PROXY_CREATE_BURST`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: the sustained rate.
    pub per_second: f64,
    /// Bucket size: how many calls a client may make at once after a pause.
    pub burst: u32,
}

impl RateLimit {
    /// The defaults for every call: 10 per second with bursts of 40, ample for one page polling
    /// a few runs. It protects the key's request rate, not its credit.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 40,
    };

    /// The defaults for creates: 5 a minute with bursts of 10, one person's pace (at 4 images a
    /// run, at most $0.80 a minute per visitor after the burst).
    pub const CREATES: RateLimit = RateLimit {
        per_second: 5.0 / 60.0,
        burst: 10,
    };
}

impl RateLimit {
    /// The tokens `bucket` holds at `now`: refilled at `per_second` since it was last used,
    /// never above `burst`; a client not seen (`None`) has a full burst.
    pub fn refill(self, bucket: Option<Bucket>, now: Duration) -> f64 {
        let burst = f64::from(self.burst);
        bucket.map_or(burst, |bucket| {
            let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed * self.per_second).min(burst)
        })
    }

    /// One call's take from `bucket` at `now`: the bucket to keep, and the outcome (or how long
    /// until a token is there). The one definition of the bucket's arithmetic: `RateLimiter`
    /// keeps buckets in process with it, and a shared store's script must mirror it exactly.
    ///
    /// # Errors
    /// How long until a token is there, when there is none now.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use runflow_proxy_rules::limit::RateLimit;
    /// let limit = RateLimit { per_second: 2.0, burst: 1 };
    /// let (bucket, taken) = limit.take(None, Duration::ZERO);
    /// assert_eq!((bucket.tokens, taken), (0.0, Ok(())));
    /// assert_eq!(limit.take(Some(bucket), Duration::ZERO).1, Err(Duration::from_millis(500)));
    /// ```
    pub fn take(self, bucket: Option<Bucket>, now: Duration) -> (Bucket, Result<(), Duration>) {
        let tokens = self.refill(bucket, now);
        // A clock that went back must not date the bucket earlier, or the next call is credited
        // the difference.
        let at = bucket.map_or(now, |b| b.at.max(now));
        if tokens >= 1.0 {
            return (
                Bucket {
                    tokens: tokens - 1.0,
                    at,
                },
                Ok(()),
            );
        }
        let wait =
            Duration::try_from_secs_f64((1.0 - tokens) / self.per_second).unwrap_or(Duration::MAX);
        (Bucket { tokens, at }, Err(wait))
    }
}

/// One client's bucket: the tokens it held at `at` (the caller's clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens left, from 0 to the burst.
    pub tokens: f64,
    /// When it was last used.
    pub at: Duration,
}

/// Whom a bucket belongs to: an IPv4 address, or an IPv6 client's /64 (`None`: no address
/// known). One IPv6 subscriber is routinely given a whole /64, so keying by the full address
/// would hand them 2^64 buckets.
///
/// # Example
/// ```
/// use runflow_proxy_rules::limit::bucket_key;
/// let v6 = "2001:db8:1:2::9".parse().ok();
/// assert_eq!(bucket_key(v6), "2001:db8:1:2::".parse().ok());
/// ```
pub fn bucket_key(client: Option<IpAddr>) -> Option<IpAddr> {
    match client? {
        IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
        // An IPv4 client seen through a dual-stack socket is that IPv4 address.
        IpAddr::V6(v6) => Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        }),
    }
}

/// The buckets of every client seen lately, keyed by `bucket_key` (an IPv6 client's /64).
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter that has seen no client yet: each starts with a full burst of `limit`.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::limit::{RateLimit, RateLimiter};
    /// assert_eq!(RateLimiter::new(RateLimit::CREATES).limit(), RateLimit::CREATES);
    /// ```
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::default(),
        }
    }

    /// The limit the buckets hold to.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token for `client` (`None`: unknown, one bucket for all such) at `now`, a time
    /// on the caller's clock that never goes back (an earlier one counts as no time passed).
    ///
    /// # Errors
    /// How long until a token is there, when there is none now.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use runflow_proxy_rules::limit::{RateLimit, RateLimiter};
    /// let limiter = RateLimiter::new(RateLimit { per_second: 2.0, burst: 1 });
    /// let t0 = Duration::ZERO;
    /// assert_eq!(limiter.take(None, t0), Ok(()));
    /// assert_eq!(limiter.take(None, t0), Err(Duration::from_millis(500)));
    /// assert_eq!(limiter.take(None, t0 + Duration::from_millis(500)), Ok(()));
    /// ```
    pub fn take(&self, client: Option<IpAddr>, now: Duration) -> Result<(), Duration> {
        let limit = self.limit;
        let burst = f64::from(limit.burst);
        let refill = |bucket: Bucket| limit.refill(Some(bucket), now);
        // A panic elsewhere cannot leave a bucket half-updated: every update is one assignment.
        let client = bucket_key(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, bucket| refill(*bucket) < burst);
            if buckets.len() >= MAX_CLIENTS {
                // Forgetting a bucket gives its client `burst - tokens` back, so forget the
                // fullest first (the oldest among equals): an abuser who has emptied theirs
                // keeps it however many new addresses flood in, never a fresh one.
                let mut victims: Vec<(Option<IpAddr>, f64, Duration)> = buckets
                    .iter()
                    .map(|(key, bucket)| (*key, refill(*bucket), bucket.at))
                    .collect();
                let evict = EVICT.min(victims.len().saturating_sub(1));
                victims
                    .select_nth_unstable_by(evict, |a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
                for (key, _, _) in victims.iter().take(evict + 1) {
                    buckets.remove(key);
                }
            }
        }
        let (bucket, result) = limit.take(buckets.get(&client).copied(), now);
        buckets.insert(client, bucket);
        result
    }
}

/// The client's address from the value of a header a trusted reverse proxy sets (e.g.
/// `X-Forwarded-For`): its last comma-separated entry, the one that proxy added (earlier ones
/// come from the client and can be forged). `None` when that entry is not an IP address.
///
/// # Example
/// ```
/// use runflow_proxy_rules::limit::client_ip;
/// assert_eq!(client_ip("203.0.113.9, 10.0.0.1 "), Some([10, 0, 0, 1].into()));
/// assert_eq!(client_ip("10.0.0.1, unknown"), None);
/// ```
pub fn client_ip(header_value: &str) -> Option<IpAddr> {
    header_value.rsplit(',').next()?.trim().parse().ok()
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
        let t0 = Duration::from_secs(7);
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
    fn ipv6_clients_share_a_bucket_per_64() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 2,
        });
        let t0 = Duration::from_secs(7);
        let v6 = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert_eq!(limiter.take(v6("2001:db8:1:2::1"), t0), Ok(()));
        assert_eq!(limiter.take(v6("2001:db8:1:2:ffff:1:2:3"), t0), Ok(()));
        assert!(
            limiter.take(v6("2001:db8:1:2::9"), t0).is_err(),
            "the same /64 is one client"
        );
        assert_eq!(
            limiter.take(v6("2001:db8:1:3::1"), t0),
            Ok(()),
            "the next /64 is another"
        );
        // An IPv4 client through a dual-stack socket is still that IPv4 client.
        assert_eq!(limiter.take(v6("::ffff:10.0.0.7"), t0), Ok(()));
        assert_eq!(limiter.take(ip(7), t0), Ok(()));
        assert!(limiter.take(ip(7), t0).is_err());
    }

    #[test]
    fn a_flood_of_new_clients_does_not_refill_an_emptied_bucket() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 5,
        });
        let t0 = Duration::from_secs(7);
        let abuser = Some(IpAddr::from([192, 0, 2, 1]));
        for _ in 0..5 {
            assert_eq!(limiter.take(abuser, t0), Ok(()));
        }
        for n in 0..(MAX_CLIENTS as u32 * 2) {
            let client = Some(IpAddr::from((10u32 << 24 | n).to_be_bytes()));
            assert_eq!(limiter.take(client, t0), Ok(()));
        }
        assert!(
            limiter.take(abuser, t0).is_err(),
            "the abuser's bucket survived"
        );
        let len = limiter
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(
            len > MAX_CLIENTS - EVICT - 2,
            "only a tenth is forgotten at a time: {len}"
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        let t0 = Duration::from_secs(7);
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

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        let t0 = Duration::from_secs(100);
        assert_eq!(limiter.take(ip(1), t0), Ok(()));
        assert_eq!(
            limiter.take(ip(1), Duration::ZERO),
            Err(Duration::from_secs(1))
        );
        assert!(
            limiter.take(ip(1), t0).is_err(),
            "going back and forth adds no time"
        );
    }

    #[test]
    fn the_client_is_the_last_entry() {
        assert_eq!(client_ip("10.0.0.1"), ip(1));
        assert_eq!(client_ip("1.2.3.4,10.0.0.2"), ip(2));
        assert_eq!(
            client_ip(" ::1 "),
            Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
        );
        for odd in ["", ",", "10.0.0.1,", "10.0.0.1:80", "[::1]", "localhost"] {
            assert_eq!(client_ip(odd), None, "{odd:?}");
        }
    }
}
