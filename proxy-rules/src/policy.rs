//! Everything a proxy decides about a call, with its budgets' state, as one value per server.

use std::{net::IpAddr, time::Duration};

use crate::{
    check, check_create_body,
    limit::{RateLimit, RateLimiter},
    origin::HostAllowlist,
    Allowed, ModelAllowlist, Names, Refusal,
};

/// A proxy's rules and budgets. Its checks run in this order, cheapest and most abusable first:
/// `admit_rate`, `admit_origin`, then the server's own authenticate hooks (async in JS, so the
/// server runs them), `admit_route` (with the create budget), `admit_length`, and for a create
/// `admit_create_body` once its body is read.
///
/// ```
/// use std::time::Duration;
/// use runflow_proxy_rules::{origin::HostAllowlist, limit::RateLimit, ModelAllowlist, Names, Policy};
/// let policy = Policy::new(
///     ModelAllowlist::Only(vec!["black-forest-labs/flux-pro/kontext".into()]),
///     Some(HostAllowlist::any()),
///     1_572_864,
///     4,
///     Some(RateLimit::DEFAULT),
///     Some(RateLimit::CREATES),
///     Names::JS,
/// );
/// let now = Duration::ZERO;
/// policy.admit_rate(None, now).unwrap();
/// policy.admit_origin(Some("studio.example"), Some("https://studio.example")).unwrap();
/// let allowed = policy.admit_route("GET", "/v1/health", None, None, now).unwrap();
/// assert_eq!(allowed.target, "/v1/health");
/// assert_eq!(policy.admit_length(Some(2_000_000)).unwrap_err().status, 413);
/// ```
#[derive(Debug)]
pub struct Policy {
    /// Models whose runs may be created.
    pub models: ModelAllowlist,
    /// The `Host` allowlist of the same-origin check; `None` for no same-origin check at all.
    pub hosts: Option<HostAllowlist>,
    /// Largest request body forwarded.
    pub max_body_bytes: u64,
    /// Largest `input.num_images` a create may ask for.
    pub max_images_per_run: u64,
    /// The settings refusal messages name.
    pub names: Names,
    rate: Option<RateLimiter>,
    creates: Option<RateLimiter>,
}

impl Policy {
    /// A policy with fresh budgets: `rate` over every call and `creates` over creates, per
    /// client (`None`: no such limit).
    pub fn new(
        models: ModelAllowlist,
        hosts: Option<HostAllowlist>,
        max_body_bytes: u64,
        max_images_per_run: u64,
        rate: Option<RateLimit>,
        creates: Option<RateLimit>,
        names: Names,
    ) -> Policy {
        Policy {
            models,
            hosts,
            max_body_bytes,
            max_images_per_run,
            names,
            rate: rate.map(RateLimiter::new),
            creates: creates.map(RateLimiter::new),
        }
    }

    /// Spends one of `client`'s calls at `now` (the server's clock, as for `RateLimiter::take`).
    ///
    /// # Errors
    /// 429 `RATE_LIMITED` when the client has none left.
    pub fn admit_rate(&self, client: Option<IpAddr>, now: Duration) -> Result<(), Refusal> {
        match self.rate.as_ref().map(|limiter| limiter.take(client, now)) {
            Some(Err(wait)) => Err(Refusal::rate_limited(wait)),
            _ => Ok(()),
        }
    }

    /// The same-origin check of the call's `Host` and `Origin` (see `origin`); passes when
    /// `hosts` is `None`.
    ///
    /// # Errors
    /// 403 `HOST_NOT_ALLOWED` or `ORIGIN_NOT_ALLOWED`.
    pub fn admit_origin(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
        match &self.hosts {
            Some(hosts) => hosts.check(host, origin, &self.names),
            None => Ok(()),
        }
    }

    /// `check` of the call (`path` under the mount, still encoded; `query` without its `?`),
    /// then, for a create, one of `client`'s creates.
    ///
    /// # Errors
    /// 403 `path_not_allowed` or `model_not_allowed`, or 429 `create_budget_exceeded`.
    pub fn admit_route(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        client: Option<IpAddr>,
        now: Duration,
    ) -> Result<Allowed, Refusal> {
        let allowed = check(method, path, query, &self.models)
            .map_err(|refused| Refusal::route(method, path, refused, &self.names))?;
        // Creates spend credit: they have a budget of their own, far below the polling rate.
        if allowed.creates_run {
            if let Some(Err(wait)) = self.creates.as_ref().map(|l| l.take(client, now)) {
                return Err(Refusal::create_budget(wait, &self.names));
            }
        }
        Ok(allowed)
    }

    /// The body's declared length (`Content-Length`, `None` when not sent) against the cap. A
    /// body without one must still be held to `max_body_bytes` as it is read.
    ///
    /// # Errors
    /// 413 `PAYLOAD_TOO_LARGE`.
    pub fn admit_length(&self, declared: Option<u64>) -> Result<(), Refusal> {
        match declared {
            Some(len) if len > self.max_body_bytes => Err(self.too_large()),
            _ => Ok(()),
        }
    }

    /// 413 `PAYLOAD_TOO_LARGE` for this policy's cap: for a body found over it as it is read.
    pub fn too_large(&self) -> Refusal {
        Refusal::too_large(self.max_body_bytes, &self.names)
    }

    /// `check_create_body` of a create's whole body.
    ///
    /// # Errors
    /// 403 `too_many_images` or 400 `invalid_create_body`.
    pub fn admit_create_body(&self, body: &[u8]) -> Result<(), Refusal> {
        check_create_body(body, self.max_images_per_run)
            .map_err(|refused| Refusal::create_body(refused, &self.names))
    }

    /// The limit on every call, for a summary.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate.as_ref().map(RateLimiter::limit)
    }

    /// The limit on creates, for a summary.
    pub fn create_limit(&self) -> Option<RateLimit> {
        self.creates.as_ref().map(RateLimiter::limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KONTEXT: &str = "/v1/models/black-forest-labs/flux-pro/kontext/runs";

    fn policy(rate: Option<RateLimit>, creates: Option<RateLimit>) -> Policy {
        Policy::new(
            ModelAllowlist::Only(vec!["black-forest-labs/flux-pro/kontext".into()]),
            Some(HostAllowlist::default()),
            100,
            2,
            rate,
            creates,
            Names::ENV,
        )
    }

    fn one(burst: u32) -> Option<RateLimit> {
        Some(RateLimit {
            per_second: 1.0,
            burst,
        })
    }

    #[test]
    fn each_step_refuses_with_its_own_answer() {
        let p = policy(one(1), one(1));
        let now = Duration::ZERO;
        let code = |r: Result<(), Refusal>| r.err().map(|r| (r.status, r.code));
        assert_eq!(code(p.admit_rate(None, now)), None);
        assert_eq!(
            code(p.admit_rate(None, now)),
            Some((429, "RATE_LIMITED".into()))
        );
        assert_eq!(
            code(p.admit_origin(Some("evil.example"), None)),
            Some((403, "HOST_NOT_ALLOWED".into()))
        );
        assert_eq!(
            code(p.admit_origin(Some("localhost:1"), Some("http://evil.example"))),
            Some((403, "ORIGIN_NOT_ALLOWED".into()))
        );
        assert_eq!(code(p.admit_origin(Some("localhost:1"), None)), None);
        let route = |path: &str| {
            p.admit_route("POST", path, None, None, now)
                .map(|a| a.creates_run)
                .map_err(|r| (r.status, r.code))
        };
        assert_eq!(route("/v1/asset-uploads"), Ok(false));
        assert_eq!(route("/v1/nope"), Err((403, "path_not_allowed".into())));
        assert_eq!(
            route("/v1/models/acme/x/runs"),
            Err((403, "model_not_allowed".into()))
        );
        assert_eq!(route(KONTEXT), Ok(true));
        assert_eq!(route(KONTEXT), Err((429, "create_budget_exceeded".into())));
        assert_eq!(code(p.admit_length(None)), None);
        assert_eq!(code(p.admit_length(Some(100))), None);
        assert_eq!(
            code(p.admit_length(Some(101))),
            Some((413, "PAYLOAD_TOO_LARGE".into()))
        );
        assert_eq!(
            code(p.admit_create_body(br#"{"input":{"num_images":2}}"#)),
            None
        );
        assert_eq!(
            code(p.admit_create_body(br#"{"input":{"num_images":3}}"#)),
            Some((403, "too_many_images".into()))
        );
        assert_eq!(
            code(p.admit_create_body(b"{")),
            Some((400, "invalid_create_body".into()))
        );
    }

    #[test]
    fn refused_calls_spend_no_create_budget() {
        // The create budget is taken after the allowlist, so a refused model costs nothing,
        // and only creates take from it.
        let p = policy(None, one(1));
        let now = Duration::ZERO;
        for _ in 0..5 {
            assert!(p
                .admit_route("POST", "/v1/models/acme/x/runs", None, None, now)
                .is_err());
            assert!(p.admit_route("GET", "/v1/health", None, None, now).is_ok());
        }
        assert!(p.admit_route("POST", KONTEXT, None, None, now).is_ok());
        let spent = p.admit_route("POST", KONTEXT, None, None, now).unwrap_err();
        assert_eq!(spent.retry_after, Some(1));
        // Budgets are per client.
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(p.admit_route("POST", KONTEXT, None, other, now).is_ok());
    }

    #[test]
    fn absent_limits_and_checks_let_everything_through() {
        let p = Policy::new(ModelAllowlist::Any, None, 10, 4, None, None, Names::JS);
        let now = Duration::ZERO;
        for _ in 0..1000 {
            assert!(p.admit_rate(None, now).is_ok());
            assert!(p
                .admit_route("POST", "/v1/models/a/b/runs", None, None, now)
                .is_ok());
        }
        assert!(p.admit_origin(None, Some("https://evil.example")).is_ok());
        assert_eq!((p.rate_limit(), p.create_limit()), (None, None));
        let limited = policy(one(3), Some(RateLimit::CREATES));
        assert_eq!(limited.rate_limit(), one(3));
        assert_eq!(limited.create_limit(), Some(RateLimit::CREATES));
        assert!(p.too_large().message.contains("(maxBodyBytes)"));
    }
}
