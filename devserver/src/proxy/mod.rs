//! Proxy mode: `/api/runflow/*` forwarded to the real Runflow API with the key added server-side,
//! only for the calls the client needs, behind a rate limit and an `authenticate` hook.

mod auth;
mod body;
mod limit;
mod log;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Json, Router,
};
use futures_util::StreamExt;
use serde_json::json;

pub use auth::{Authenticate, Refusal, SameOrigin, SharedSecret};
pub use limit::RateLimit;
pub use runflow_proxy_rules::ModelAllowlist;

use crate::{conn::ConnHandle, MOUNT};
use body::{CallLog, Capped, Logged};
use limit::RateLimiter;
use runflow_proxy_rules::{check_create_body, Allowed, BodyRefused, Refused, API_MAX_IMAGES};

/// Runflow's API.
pub const DEFAULT_UPSTREAM: &str = "https://api.runflow.io";
/// The one model the client is for.
pub const DEFAULT_MODEL: &str = "black-forest-labs/flux-pro/kontext";
/// 1.5 MiB: a 1 MiB image as a base64 `data:` URI (4/3 of it) plus the rest of a create body.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 3 * 512 * 1024;
/// How long one upstream call (connection, request and response body) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting is quick or broken: fail it early rather than wait for the whole timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a body as too large from its `Content-Length`, read and discard at most this
/// much of it (for at most `DRAIN_TIME`) so the browser gets the 413 rather than a reset
/// connection; past that the connection is simply closed.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Room for a create's response (which echoes its input) beyond the request cap when reading
/// the new run's id for the log.
const CAPTURE_MARGIN: u64 = 64 * 1024;

/// Request headers passed upstream as the browser sent them; every other one is dropped
/// (Authorization and Cookie above all). `X-Organization-Id` is not among them: the deployment
/// picks the organisation (`RUNFLOW_ORGANIZATION_ID`), not a visitor.
const REQUEST_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("idempotency-key"),
];
/// Response headers passed back, with any `x-ratelimit-*`: the client reads them for retries,
/// and request ids let a user quote a failed call to Runflow's support.
const RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::RETRY_AFTER,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("runflow-request-id"),
];
const RATE_LIMIT_PREFIX: &str = "x-ratelimit-";
/// Upstream error bodies are read whole (to take the key out) up to this; a longer one is not
/// passed on. Runflow's are a few hundred bytes; a 422 may echo some input.
const ERROR_BODY_LIMIT: usize = 256 * 1024;
/// What stands for the key wherever an upstream error body echoes it.
const REDACTED: &[u8] = b"[redacted]";

/// The server-side Runflow API key; it goes into one `Authorization` header and nowhere else
/// (its `Debug` is redacted).
#[derive(Clone)]
pub struct ApiKey(HeaderValue);

impl ApiKey {
    /// Wraps `key`.
    ///
    /// # Errors
    /// A message (without the key) when it is empty or cannot be sent in a header.
    ///
    /// # Example
    /// ```
    /// let key = runflow_devserver::ApiKey::new("rf_live_abc").unwrap();
    /// assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    /// ```
    pub fn new(key: &str) -> Result<ApiKey, String> {
        let key = key.trim();
        if key.is_empty() {
            return Err("RUNFLOW_API_KEY is empty".into());
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "RUNFLOW_API_KEY holds characters a header cannot carry".to_string())?;
        // Keeps it out of HTTP/2 header compression tables and of hyper's debug output.
        value.set_sensitive(true);
        Ok(ApiKey(value))
    }
}

impl ApiKey {
    /// The key itself, without the `Bearer ` scheme.
    fn secret(&self) -> &[u8] {
        let value = self.0.as_bytes();
        value.strip_prefix(b"Bearer ".as_slice()).unwrap_or(value)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The upstream base URL: scheme, host and an optional path prefix the API paths go under.
#[derive(Clone, Debug)]
pub struct Upstream {
    base: String,
    origin: String,
}

impl Upstream {
    /// Parses `RUNFLOW_UPSTREAM`.
    ///
    /// # Errors
    /// A message when it is not an http(s) URL without credentials, query or fragment.
    ///
    /// # Example
    /// ```
    /// let up = runflow_devserver::Upstream::parse("http://127.0.0.1:9/__mock/s/x/").unwrap();
    /// assert_eq!(up.origin(), "http://127.0.0.1:9");
    /// ```
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("RUNFLOW_UPSTREAM {text:?} {why}");
        let url =
            reqwest::Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(bad("must be an http:// or https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not hold credentials: the key goes in RUNFLOW_API_KEY",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let origin = url.origin().ascii_serialization();
        let base = format!("{origin}{}", url.path().trim_end_matches('/'));
        Ok(Upstream { base, origin })
    }

    /// Scheme, host and port: what may be shown to a visitor.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Everything proxy mode needs. Build it with `new` or `from_env`, then adjust the fields.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The key added to every forwarded call.
    pub api_key: ApiKey,
    /// Where calls go.
    pub upstream: Upstream,
    /// Sent upstream as `X-Organization-Id` when set (`RUNFLOW_ORGANIZATION_ID`).
    pub organization_id: Option<HeaderValue>,
    /// Models whose runs may be created.
    pub allowed_models: ModelAllowlist,
    /// Largest request body forwarded; above it the answer is 413.
    pub max_body_bytes: u64,
    /// Longest an upstream call may take; past it the answer is 504.
    pub timeout: Duration,
    /// Per-client limit on every call (polling included); `None` for none.
    pub rate_limit: Option<RateLimit>,
    /// Per-client budget of creates, the calls that spend credit; `None` for none.
    pub create_limit: Option<RateLimit>,
    /// Largest `input.num_images` a create may ask for (1..=4, the API's own maximum).
    pub max_images_per_run: u64,
    /// A header holding the client's address, set by a reverse proxy in front of this one
    /// (e.g. `x-forwarded-for`, whose last entry is used); `None` to use the peer address.
    pub client_ip_header: Option<HeaderName>,
    /// Hooks that must all accept a call before it is forwarded.
    pub authenticators: Vec<Arc<dyn Authenticate>>,
    client: reqwest::Client,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hooks: Vec<&str> = self.authenticators.iter().map(|a| a.name()).collect();
        f.debug_struct("ProxyConfig")
            .field("api_key", &self.api_key)
            .field("upstream", &self.upstream)
            .field("organization_id", &self.organization_id)
            .field("allowed_models", &self.allowed_models)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timeout", &self.timeout)
            .field("rate_limit", &self.rate_limit)
            .field("create_limit", &self.create_limit)
            .field("max_images_per_run", &self.max_images_per_run)
            .field("client_ip_header", &self.client_ip_header)
            .field("authenticators", &hooks)
            .finish_non_exhaustive()
    }
}

impl ProxyConfig {
    /// The defaults: Kontext only, 1.5 MiB bodies, 60 s, `RateLimit::DEFAULT`, same-origin check.
    ///
    /// # Errors
    /// A message when the HTTP client cannot be built (no usable TLS setup).
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::{ApiKey, ProxyConfig, Upstream};
    /// let upstream = Upstream::parse("https://api.runflow.io").unwrap();
    /// let config = ProxyConfig::new(ApiKey::new("rf_live_x").unwrap(), upstream).unwrap();
    /// assert_eq!(config.max_body_bytes, 1536 * 1024);
    /// ```
    pub fn new(api_key: ApiKey, upstream: Upstream) -> Result<ProxyConfig, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect would be followed with the key, somewhere the allowlist never saw.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "runflow-kontext-devserver/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(ProxyConfig {
            api_key,
            upstream,
            organization_id: None,
            allowed_models: ModelAllowlist::Only(vec![DEFAULT_MODEL.into()]),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: DEFAULT_TIMEOUT,
            rate_limit: Some(RateLimit::DEFAULT),
            create_limit: Some(RateLimit::CREATES),
            max_images_per_run: API_MAX_IMAGES,
            client_ip_header: None,
            authenticators: vec![Arc::new(SameOrigin::default())],
            client,
        })
    }

    /// Reads the configuration from environment variables through `var` (see `docs/proxy.md`):
    /// `RUNFLOW_API_KEY` (required), `RUNFLOW_UPSTREAM`, `RUNFLOW_ORGANIZATION_ID`,
    /// `RUNFLOW_ALLOWED_MODELS`, `PROXY_MAX_BODY_BYTES`, `PROXY_TIMEOUT_MS`,
    /// `PROXY_RATE_PER_SEC` (0 turns the limit off), `PROXY_BURST`, `PROXY_CLIENT_IP_HEADER`,
    /// `PROXY_SHARED_SECRET`, `PROXY_SAME_ORIGIN` (`0` turns the check off), `PROXY_ALLOWED_HOSTS`.
    ///
    /// # Errors
    /// A message naming the variable at fault (never showing the key).
    ///
    /// # Example
    /// ```
    /// let vars = |name: &str| (name == "RUNFLOW_API_KEY").then(|| "rf_test_key".to_string());
    /// let config = runflow_devserver::ProxyConfig::from_env(vars).unwrap();
    /// assert_eq!(config.upstream.origin(), "https://api.runflow.io");
    /// ```
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig, String> {
        let key = var("RUNFLOW_API_KEY").ok_or("RUNFLOW_API_KEY is not set")?;
        let upstream = var("RUNFLOW_UPSTREAM").unwrap_or_else(|| DEFAULT_UPSTREAM.into());
        let mut config = ProxyConfig::new(ApiKey::new(&key)?, Upstream::parse(&upstream)?)?;
        if let Some(org) = var("RUNFLOW_ORGANIZATION_ID").filter(|o| !o.trim().is_empty()) {
            let org = HeaderValue::from_str(org.trim())
                .map_err(|_| format!("RUNFLOW_ORGANIZATION_ID {org:?} is not a header value"))?;
            config.organization_id = Some(org);
        }
        if let Some(models) = var("RUNFLOW_ALLOWED_MODELS") {
            config.allowed_models = ModelAllowlist::parse(&models)?;
        }
        if let Some(bytes) = number::<u64>(&var, "PROXY_MAX_BODY_BYTES")? {
            config.max_body_bytes = bytes;
        }
        if let Some(ms) = number::<u64>(&var, "PROXY_TIMEOUT_MS")?.filter(|ms| *ms > 0) {
            config.timeout = Duration::from_millis(ms);
        }
        config.rate_limit = bucket(
            &var,
            "PROXY_RATE_PER_SEC",
            "PROXY_BURST",
            1.0,
            RateLimit::DEFAULT,
        )?;
        config.create_limit = bucket(
            &var,
            "PROXY_CREATES_PER_MINUTE",
            "PROXY_CREATE_BURST",
            60.0,
            RateLimit::CREATES,
        )?;
        if let Some(max) = number::<u64>(&var, "PROXY_MAX_IMAGES_PER_RUN")? {
            if !(1..=API_MAX_IMAGES).contains(&max) {
                return Err(format!(
                    "PROXY_MAX_IMAGES_PER_RUN must be from 1 to {API_MAX_IMAGES} (the API's maximum), got {max}"
                ));
            }
            config.max_images_per_run = max;
        }
        if let Some(name) = var("PROXY_CLIENT_IP_HEADER").filter(|n| !n.trim().is_empty()) {
            let header = HeaderName::try_from(name.trim())
                .map_err(|_| format!("PROXY_CLIENT_IP_HEADER {name:?} is not a header name"))?;
            config.client_ip_header = Some(header);
        }
        config.authenticators.clear();
        if let Some(secret) = var("PROXY_SHARED_SECRET").filter(|s| !s.is_empty()) {
            config
                .authenticators
                .push(Arc::new(SharedSecret::new(secret)));
        }
        match var("PROXY_SAME_ORIGIN").as_deref().map(str::trim) {
            None | Some("1" | "true" | "on") => {
                let hosts = var("PROXY_ALLOWED_HOSTS").filter(|h| !h.trim().is_empty());
                let hook = match hosts {
                    Some(hosts) => SameOrigin::parse(&hosts)?,
                    None => SameOrigin::default(),
                };
                config.authenticators.push(Arc::new(hook));
            }
            Some("0" | "false" | "off") => {}
            Some(other) => return Err(format!("PROXY_SAME_ORIGIN must be 1 or 0, got {other:?}")),
        }
        Ok(config)
    }

    /// One line for the start-up banner: what is forwarded and how it is guarded.
    pub fn summary(&self) -> String {
        let models = match &self.allowed_models {
            ModelAllowlist::Any => "any model".to_string(),
            ModelAllowlist::Only(models) => models.join(", "),
        };
        let rate = match self.rate_limit {
            Some(RateLimit { per_second, burst }) => {
                format!("{per_second}/s per client, burst {burst}")
            }
            None => "no rate limit".into(),
        };
        let creates = match self.create_limit {
            Some(RateLimit { per_second, burst }) => {
                format!(
                    "creates {}/min per client, burst {burst}",
                    per_second * 60.0
                )
            }
            None => "no create budget".into(),
        };
        let hooks: Vec<&str> = self.authenticators.iter().map(|a| a.name()).collect();
        let hooks = if hooks.is_empty() {
            "none".into()
        } else {
            hooks.join(" + ")
        };
        format!(
            "proxy to {}: models {models}, up to {} images a run; bodies up to {} bytes; timeout {:?}; {rate}; {creates}; checks: {hooks}",
            self.upstream.origin(),
            self.max_images_per_run,
            self.max_body_bytes,
            self.timeout,
        )
    }
}

fn number<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, String> {
    match var(name).as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a number, got {text:?}")),
    }
}

/// A token bucket from its two settings: `rate_name` (tokens per `seconds`; 0 turns the bucket
/// off) and `burst_name`, each `default`'s where not set.
fn bucket(
    var: &impl Fn(&str) -> Option<String>,
    rate_name: &str,
    burst_name: &str,
    seconds: f64,
    default: RateLimit,
) -> Result<Option<RateLimit>, String> {
    match (
        number::<f64>(var, rate_name)?,
        number::<u32>(var, burst_name)?,
    ) {
        (Some(0.0), _) => Ok(None),
        (Some(rate), _) if !rate.is_finite() || rate < 0.0 => Err(format!(
            "{rate_name} must be a positive number (0 turns it off), got {rate}"
        )),
        (_, Some(0)) => Err(format!("{burst_name} must be at least 1")),
        (rate, burst) => Ok(Some(RateLimit {
            per_second: rate.map_or(default.per_second, |r| r / seconds),
            burst: burst.unwrap_or(default.burst),
        })),
    }
}

/// The proxy's shared state.
struct Proxy {
    config: ProxyConfig,
    limiter: Option<RateLimiter>,
    creates: Option<RateLimiter>,
}

/// `/api/runflow/{*rest}` forwarded upstream.
pub(crate) fn router(config: ProxyConfig) -> Router {
    let limiter = config.rate_limit.map(RateLimiter::new);
    let creates = config.create_limit.map(RateLimiter::new);
    let proxy = Arc::new(Proxy {
        config,
        limiter,
        creates,
    });
    // The bare mount too, so that nothing under it reaches the static files.
    Router::new()
        .route(MOUNT, any(forward))
        .route(&format!("{MOUNT}/"), any(forward))
        .route(&format!("{MOUNT}/{{*rest}}"), any(forward))
        .with_state(proxy)
}

/// A call refused before it went anywhere.
struct Rejection {
    status: StatusCode,
    code: String,
    body: serde_json::Value,
    retry_after: Option<u64>,
}

impl Rejection {
    /// A refusal in the standard envelope.
    fn envelope(status: StatusCode, code: &str, message: &str) -> Self {
        Rejection {
            status,
            code: code.into(),
            body: json!({"code": code, "message": message, "errors": null}),
            retry_after: None,
        }
    }

    fn retry_after(self, seconds: u64) -> Self {
        Rejection {
            retry_after: Some(seconds),
            ..self
        }
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An error in the API's standard envelope, which the client parses like Runflow's own.
fn envelope(status: StatusCode, code: &str, message: &str) -> Response {
    Rejection::envelope(status, code, message).into_response()
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.peer().ip());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let path = path.strip_prefix(MOUNT).unwrap_or(path).to_string();
    let client = proxy.client_ip(&parts.headers).or(peer);
    let mut log = CallLog {
        method: parts.method.to_string(),
        path,
        client,
        started,
        run_id: None,
    };
    let mut response = match proxy.admit(&parts, &log.path, client, started) {
        Ok(allowed) => {
            log.run_id = allowed.run_id.clone();
            proxy.send(parts, body, allowed, log).await
        }
        Err(rejection) => {
            log.finish(rejection.status.as_u16(), "refused", Some(&rejection.code));
            rejection.into_response()
        }
    };
    guard_headers(&mut response);
    response
}

/// Headers on every answer of the proxy, forwarded or its own.
fn guard_headers(response: &mut Response) {
    let headers = response.headers_mut();
    // API answers are per call: never let a cache keep them (the app sets `no-cache` otherwise).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The upstream's body comes back under its own Content-Type; a browser must not sniff it
    // into HTML or script when someone links to or embeds a proxy URL.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

impl Proxy {
    /// The client's address from the trusted header: the last entry, the one our own reverse
    /// proxy added (earlier ones come from the client and can be forged).
    fn client_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let name = self.config.client_ip_header.as_ref()?;
        let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        value.rsplit(',').next()?.trim().parse().ok()
    }

    /// The checks before forwarding, cheapest and most abusable first: rate limit, the
    /// authenticate hooks, the allowlist. A refusal comes with its code for the log.
    fn admit(
        &self,
        parts: &Parts,
        path: &str,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Allowed, Rejection> {
        if let Some(Err(wait)) = self.limiter.as_ref().map(|l| l.take(client, now)) {
            // Whole seconds, rounded up: the client must not come back before a token is there.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message = format!("Too many requests through this proxy; retry in {seconds} s");
            return Err(Rejection::envelope(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                &message,
            )
            .retry_after(seconds));
        }
        for hook in &self.config.authenticators {
            if let Err(refusal) = hook.authenticate(parts) {
                return Err(Rejection::envelope(
                    refusal.status,
                    &refusal.code,
                    &refusal.message,
                ));
            }
        }
        let query = parts.uri.query();
        let models = &self.config.allowed_models;
        let allowed = runflow_proxy_rules::check(parts.method.as_str(), path, query, models);
        let allowed = allowed.map_err(|refused| {
            let (error, code) = match refused {
                Refused::Path => (
                    format!("{} {path} is not forwarded by this proxy", parts.method),
                    "path_not_allowed",
                ),
                Refused::Model(model) => (
                    format!(
                        "Model {model:?} is not allowed by this proxy (RUNFLOW_ALLOWED_MODELS)"
                    ),
                    "model_not_allowed",
                ),
            };
            // The shape of Runflow's own proxy's refusals, which the client already parses.
            Rejection {
                status: StatusCode::FORBIDDEN,
                code: code.into(),
                body: json!({"error": error, "code": code}),
                retry_after: None,
            }
        })?;
        // Creates spend credit: they have a budget of their own, far below the polling rate.
        if allowed.creates_run {
            if let Some(Err(wait)) = self.creates.as_ref().map(|l| l.take(client, now)) {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let error = format!(
                    "This proxy's budget of runs per visitor is spent (PROXY_CREATES_PER_MINUTE); retry in {seconds} s"
                );
                let code = "create_budget_exceeded";
                return Err(Rejection {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: code.into(),
                    body: json!({"error": error, "code": code}),
                    retry_after: Some(seconds),
                });
            }
        }
        Ok(allowed)
    }

    async fn send(&self, parts: Parts, body: Body, allowed: Allowed, log: CallLog) -> Response {
        let config = &self.config;
        let too_large = || {
            let message = format!(
                "The request body is over this proxy's {} byte limit (PROXY_MAX_BODY_BYTES); upload large images as assets instead",
                config.max_body_bytes
            );
            envelope(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", &message)
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > config.max_body_bytes) {
            drain(body).await;
            log.finish(413, "refused", Some("PAYLOAD_TOO_LARGE"));
            return too_large();
        }

        let url = format!("{}{}", config.upstream.base, allowed.target);
        let mut request = config
            .client
            .request(parts.method.clone(), url)
            .timeout(config.timeout)
            .header(header::AUTHORIZATION, config.api_key.0.clone());
        for name in &REQUEST_HEADERS {
            for value in parts.headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        if let Some(org) = &config.organization_id {
            request = request.header("x-organization-id", org);
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        if allowed.creates_run {
            // A create is read whole (it is under the cap) so that its input can be checked.
            // Any failure to read it within the cap (the client gone included) is answered 413.
            let limit = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
            let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
                log.finish(413, "refused", Some("PAYLOAD_TOO_LARGE"));
                return too_large();
            };
            if let Err(refused) = check_create_body(&bytes, config.max_images_per_run) {
                let (status, code, error) = match refused {
                    BodyRefused::TooManyImages(max) => (
                        StatusCode::FORBIDDEN,
                        "too_many_images",
                        format!("input.num_images must be an integer from 1 to {max} through this proxy (PROXY_MAX_IMAGES_PER_RUN)"),
                    ),
                    BodyRefused::Unreadable => (
                        StatusCode::BAD_REQUEST,
                        "invalid_create_body",
                        "A create's body must be a JSON object whose input is an object with each field once".into(),
                    ),
                };
                log.finish(status.as_u16(), "refused", Some(code));
                return (status, Json(json!({"error": error, "code": code}))).into_response();
            }
            request = request.body(bytes);
        } else if parts.method == axum::http::Method::POST {
            let capped = Capped::new(
                body.into_data_stream(),
                config.max_body_bytes,
                exceeded.clone(),
            );
            request = request.body(reqwest::Body::wrap_stream(capped));
            // Keeps the upload a fixed-length one, as the browser sent it, rather than chunked.
            if let Some(len) = declared {
                request = request.header(header::CONTENT_LENGTH, len);
            }
        }

        let upstream = match request.send().await {
            Ok(upstream) => upstream,
            Err(_) if exceeded.load(Ordering::Acquire) => {
                log.finish(413, "refused", Some("PAYLOAD_TOO_LARGE"));
                return too_large();
            }
            Err(e) => {
                let e = e.without_url();
                let (status, code, message) = if e.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        "BAD_GATEWAY",
                        "Runflow could not be reached; try again shortly",
                    )
                } else if e.is_timeout() {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        "GATEWAY_TIMEOUT",
                        "Runflow did not answer in time; a create may still have gone through",
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        "BAD_GATEWAY",
                        "The connection to Runflow failed; a create may still have gone through",
                    )
                };
                log.finish(status.as_u16(), "failed", Some(&error_chain(&e)));
                return envelope(status, code, message);
            }
        };

        let status = upstream.status();
        let mut headers = HeaderMap::new();
        for (name, value) in upstream.headers() {
            if RESPONSE_HEADERS.contains(name) || name.as_str().starts_with(RATE_LIMIT_PREFIX) {
                headers.append(name, value.clone());
            }
        }
        if !status.is_success() {
            return scrubbed_error(upstream, status, headers, config.api_key.secret(), log).await;
        }
        let capture = allowed
            .creates_run
            .then(|| usize::try_from(config.max_body_bytes + CAPTURE_MARGIN).unwrap_or(usize::MAX));
        let stream = Logged::new(
            Box::pin(upstream.bytes_stream()),
            log,
            status.as_u16(),
            capture,
        );
        let mut response = Response::new(Body::from_stream(stream));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// An upstream answer other than a success, read whole (up to `ERROR_BODY_LIMIT`) so that the
/// key can be taken out wherever the body echoes it: an upstream (or a misconfigured gateway in
/// front of it) may quote the request's `Authorization` back. Successes stay streamed.
async fn scrubbed_error(
    mut upstream: reqwest::Response,
    status: StatusCode,
    mut headers: HeaderMap,
    secret: &[u8],
    log: CallLog,
) -> Response {
    let mut body = Vec::new();
    loop {
        match upstream.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= ERROR_BODY_LIMIT => {
                body.extend_from_slice(&chunk);
            }
            Ok(Some(_)) => {
                log.finish(status.as_u16(), "failed", Some("error body over the limit"));
                let message = "Runflow's error answer was too long to pass on";
                return envelope(status, "UPSTREAM_ERROR_TOO_LARGE", message);
            }
            Ok(None) => break,
            Err(e) => {
                log.finish(
                    502,
                    "failed",
                    Some(&format!("response body: {}", error_chain(&e.without_url()))),
                );
                let message =
                    "The connection to Runflow failed; a create may still have gone through";
                return envelope(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", message);
            }
        }
    }
    let body = redact(&body, secret);
    // The length changed with the key taken out; hyper sets the new one.
    headers.remove(header::CONTENT_LENGTH);
    log.finish(status.as_u16(), "forwarded", None);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `body` with every occurrence of `secret` replaced by `[redacted]`.
fn redact(body: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() {
        return body.to_vec();
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(secret.len()).position(|w| w == secret) {
        let (before, after) = rest.split_at(at);
        out.extend_from_slice(before);
        out.extend_from_slice(REDACTED);
        rest = after.get(secret.len()..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

/// The error and its causes on one line (reqwest's own message is only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads and discards a refused body, within `DRAIN_LIMIT` and `DRAIN_TIME`.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let discard = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}
