//! The proxy's budgets in Redis: one hash per client and budget, taken from by a Lua script
//! that mirrors `runflow_proxy_rules::limit::RateLimit::take` (a test holds them equal), on the
//! Redis server's clock so that instances with skewed clocks agree. While Redis cannot be
//! reached, each instance holds its visitors to the same limits in process.

use std::{
    net::IpAddr,
    sync::{LazyLock, Mutex, PoisonError},
    time::{Duration, Instant},
};

use redis::Script;
use runflow_proxy_rules::{
    limit::{bucket_key, RateLimit, RateLimiter},
    Names, Refusal,
};

use super::{Redis, PREFIX};

/// `RateLimit::take` in Lua. KEYS[1]: the client's bucket (fields `tokens`, `at` in µs).
/// ARGV: tokens per second, burst, and now in µs since the Unix epoch, or '' for the server's
/// clock. Returns '' when a token was taken, else the wait in seconds. Numbers are stored and
/// returned with 17 digits (Redis would cut a returned number to an integer), and the elapsed
/// time is computed as `Duration::as_secs_f64` does, so both give the same floats.
const TAKE_LUA: &str = r"
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local kept = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = burst, now
if kept[1] and kept[2] then
  local was, last = tonumber(kept[1]), tonumber(kept[2])
  local us = math.max(now - last, 0)
  local secs = math.floor(us / 1000000)
  local elapsed = secs + ((us - secs * 1000000) * 1000) / 1e9
  tokens = math.min(was + elapsed * rate, burst)
  at = math.max(last, now)
end
local wait = ''
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = string.format('%.17g', (1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
-- Forgotten once full again: a client not seen starts full anyway.
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil((burst - tokens) / rate * 1000) + 1000))
return wait
";
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_LUA));

/// Longest a budget waits for Redis before taking from the instance's own bucket instead.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// After a failure, Redis is tried again this much later (calls meanwhile are held in process).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Takes one token of `client`'s bucket `name` in Redis: at `now` (µs since the Unix epoch),
/// or by the Redis server's clock when `None`.
///
/// # Errors
/// The outer one when Redis cannot be reached; the inner one is the wait when no token is left.
pub(crate) async fn take_at(
    redis: &Redis,
    name: &str,
    limit: RateLimit,
    client: Option<IpAddr>,
    now: Option<u64>,
) -> Result<Result<(), Duration>, String> {
    let who = bucket_key(client).map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let mut script = TAKE.key(format!("{PREFIX}budget:{name}:{who}"));
    script
        .arg(limit.per_second)
        .arg(limit.burst)
        .arg(now.map_or_else(String::new, |us| us.to_string()));
    let wait: String = redis
        .run(|mut connection| {
            let script = &script;
            async move { script.invoke_async(&mut connection).await }
        })
        .await?;
    if wait.is_empty() {
        return Ok(Ok(()));
    }
    let seconds: f64 = wait
        .parse()
        .map_err(|_| format!("the budget script answered {wait:?}"))?;
    Ok(Err(
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    ))
}

/// One budget: its limit in Redis and the same limit in process for while Redis is away.
struct Budget {
    name: &'static str,
    limit: RateLimit,
    local: RateLimiter,
}

impl Budget {
    fn new(name: &'static str, limit: RateLimit) -> Budget {
        Budget {
            name,
            limit,
            local: RateLimiter::new(limit),
        }
    }
}

/// The proxy's budgets (every call, creates) held in Redis across instances, in the order and
/// with the refusals of `runflow_proxy_rules::Policy`, whose own budgets are then off.
pub(crate) struct SharedBudgets {
    redis: Redis,
    calls: Option<Budget>,
    creates: Option<Budget>,
    /// While Redis is away: when to try it again (`None`: it answered last time).
    away: Mutex<Option<Instant>>,
}

impl SharedBudgets {
    pub(crate) fn new(
        redis: Redis,
        calls: Option<RateLimit>,
        creates: Option<RateLimit>,
    ) -> SharedBudgets {
        SharedBudgets {
            redis,
            calls: calls.map(|limit| Budget::new("calls", limit)),
            creates: creates.map(|limit| Budget::new("creates", limit)),
            away: Mutex::new(None),
        }
    }

    /// One of `client`'s calls (`Policy::admit_rate`); `now` is the instance's clock for the
    /// in-process fallback.
    ///
    /// # Errors
    /// 429 `RATE_LIMITED` when the client has none left.
    pub(crate) async fn admit_rate(
        &self,
        client: Option<IpAddr>,
        now: Duration,
    ) -> Result<(), Refusal> {
        match &self.calls {
            Some(budget) => self
                .take(budget, client, now)
                .await
                .map_err(Refusal::rate_limited),
            None => Ok(()),
        }
    }

    /// One of `client`'s creates (the create budget of `Policy::admit_route`, after its checks).
    ///
    /// # Errors
    /// 429 `create_budget_exceeded` when the client has none left.
    pub(crate) async fn admit_create(
        &self,
        client: Option<IpAddr>,
        now: Duration,
        names: &Names,
    ) -> Result<(), Refusal> {
        match &self.creates {
            Some(budget) => self
                .take(budget, client, now)
                .await
                .map_err(|wait| Refusal::create_budget(wait, names)),
            None => Ok(()),
        }
    }

    /// From Redis, or from the instance's own bucket while Redis is away (one line when it
    /// goes and one when it is back), so the proxy stays up and the limits hold per instance.
    async fn take(
        &self,
        budget: &Budget,
        client: Option<IpAddr>,
        now: Duration,
    ) -> Result<(), Duration> {
        let retry_at = *self.away.lock().unwrap_or_else(PoisonError::into_inner);
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return budget.local.take(client, now);
        }
        let shared = tokio::time::timeout(
            ANSWER_WITHIN,
            take_at(&self.redis, budget.name, budget.limit, client, None),
        )
        .await
        .unwrap_or_else(|_| Err(format!("Redis at {}: no answer", self.redis.shown())));
        let mut away = self.away.lock().unwrap_or_else(PoisonError::into_inner);
        match shared {
            Ok(taken) => {
                if away.take().is_some() {
                    eprintln!(
                        "proxy: Redis at {} is back: budgets are shared again",
                        self.redis.shown()
                    );
                }
                taken
            }
            Err(why) => {
                if away.is_none() {
                    eprintln!("proxy: budgets are held per instance, in process, until Redis is back: {why}");
                }
                *away = Some(Instant::now() + RETRY_AFTER);
                budget.local.take(client, now)
            }
        }
    }
}
