//! Redis (`REDIS_URL`) under the relay's hub and the proxy's budgets, so that every dev-server
//! instance on one Redis sees the same events and holds visitors to the same budgets. See
//! `docs/callbacks.md`, "Several instances: Redis".

mod budget;
mod hub;

use std::{
    fmt,
    future::Future,
    sync::{Arc, OnceLock},
    time::Duration,
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    RedisResult,
};

#[cfg(test)]
pub(crate) use budget::take_at;
pub(crate) use budget::SharedBudgets;
pub(crate) use hub::RedisHub;

/// Every key and channel starts with this, so the dev server's data is told apart from others'.
const PREFIX: &str = "runflow-kontext:";
/// One connection attempt; a refused port fails at once, a silent host after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// One command's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis server that instances share state in: where it is (shown without password) and,
/// from the first command on, one reconnecting connection (`Debug` shows no password).
#[derive(Clone)]
pub struct Redis(Arc<Inner>);

struct Inner {
    client: redis::Client,
    shown: String,
    manager: OnceLock<ConnectionManager>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis({})", self.0.shown)
    }
}

impl Redis {
    /// Parses `REDIS_URL` (`redis://[[user]:password@]host[:port][/db]`, or
    /// `redis+unix:///path`); connects only when first used.
    ///
    /// # Errors
    /// A message naming `REDIS_URL` (without its password) when it is not a Redis URL.
    pub(crate) fn parse(url: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url.trim()).map_err(|e| {
            // The error may not quote the URL, but the message must never show a password.
            format!(
                "REDIS_URL is not a Redis URL (redis://[:password@]host[:port][/db]): {}",
                e.detail().unwrap_or("it does not parse")
            )
        })?;
        let info = client.get_connection_info();
        let settings = info.redis_settings();
        let user = settings
            .username()
            .map_or(String::new(), |u| format!("{u}@"));
        let shown = match info.addr() {
            redis::ConnectionAddr::Unix(path) => {
                format!("redis+unix://{}?db={}", path.display(), settings.db())
            }
            addr => format!("redis://{user}{addr}/{}", settings.db()),
        };
        Ok(Redis(Arc::new(Inner {
            client,
            shown,
            manager: OnceLock::new(),
        })))
    }

    /// `REDIS_URL` read through `var`: `None` when unset or blank.
    ///
    /// # Errors
    /// As `parse`.
    pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Redis>, String> {
        var("REDIS_URL")
            .filter(|url| !url.trim().is_empty())
            .map(|url| Redis::parse(&url))
            .transpose()
    }

    /// Where it is, without any password: for the start-up line and log lines.
    pub(crate) fn shown(&self) -> &str {
        &self.0.shown
    }

    /// The shared connection, made on first use (within the runtime, which it needs); it
    /// reconnects by itself after Redis went away.
    fn connection(&self) -> Result<ConnectionManager, String> {
        if let Some(manager) = self.0.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Fail a command soon while Redis is away: callers have an answer for that (503,
            // or budgets in process), a long wait helps no one.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.0.client.clone(), config)
            .map_err(|e| e.to_string())?;
        // Two first calls at once: one manager wins, the other (never connected) is dropped.
        Ok(self.0.manager.get_or_init(|| manager).clone())
    }

    /// Runs `command` on the shared connection, and once more when it found the connection
    /// broken: after Redis went away and came back, the first command is what finds out (and
    /// has the manager reconnect), so without this the first caller after an outage would fail.
    ///
    /// # Errors
    /// Redis's, prefixed with where it is.
    async fn run<T, F>(&self, mut command: impl FnMut(ConnectionManager) -> F) -> Result<T, String>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let connection = self.connection()?;
        let result = match command(connection.clone()).await {
            Err(e) if e.is_io_error() || e.is_connection_dropped() => command(connection).await,
            other => other,
        };
        result.map_err(|e| format!("Redis at {}: {e}", self.shown()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password_and_bad_ones_name_the_variable() {
        let redis = Redis::parse("redis://:s3cret@127.0.0.1:6380/2").unwrap();
        assert_eq!(redis.shown(), "redis://127.0.0.1:6380/2");
        assert!(!format!("{redis:?}").contains("s3cret"));
        let redis = Redis::parse("redis://admin:s3cret@localhost").unwrap();
        assert_eq!(redis.shown(), "redis://admin@localhost:6379/0");
        for bad in ["http://x:s3cret@host", "redis://:s3cret@", "s3cret"] {
            let message = Redis::parse(bad).unwrap_err();
            assert!(message.starts_with("REDIS_URL "), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        assert!(Redis::from_env(|_| Some(" ".into())).unwrap().is_none());
    }
}
