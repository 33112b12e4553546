//! Proxy mode: `/api/runflow/*` forwarded to the real Runflow API with the key added server-side,
//! only for the calls the client needs, behind a rate limit and an `authenticate` hook. What is
//! forwarded, and what is answered instead, is decided by `runflow_proxy_rules` (shared with the
//! wasm server entry); this module is the I/O around it.

mod auth;
mod body;
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
    response::Response,
    routing::any,
    Router,
};
use futures_util::StreamExt;

pub use auth::{Authenticate, Refusal, SameOrigin, SharedSecret};
pub use runflow_proxy_rules::{
    limit::RateLimit, ModelAllowlist, DEFAULT_MAX_BODY_BYTES, DEFAULT_MODEL, DEFAULT_UPSTREAM,
};

use crate::{
    conn::ConnHandle,
    relay::redis::{Redis, SharedBudgets},
    MOUNT,
};
use body::{CallLog, Capped, Logged};
use runflow_proxy_rules::{
    headers::{returns_response_header, GUARD_HEADERS, REQUEST_HEADERS},
    redact, strip_mount, Allowed, Names, Policy, API_MAX_IMAGES, CAPTURE_MARGIN,
    DEFAULT_TIMEOUT_MS, ERROR_BODY_LIMIT,
};

/// How long one upstream call (connection, request and response body) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(DEFAULT_TIMEOUT_MS);
/// Connecting is quick or broken: fail it early rather than wait for the whole timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a body as too large from its `Content-Length`, read and discard at most this
/// much of it (for at most `DRAIN_TIME`) so the browser gets the 413 rather than a reset
/// connection; past that the connection is simply closed.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

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
pub struct Upstream(runflow_proxy_rules::Upstream);

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
        runflow_proxy_rules::Upstream::parse(text, "RUNFLOW_UPSTREAM").map(Upstream)
    }

    /// Scheme, host and port: what may be shown to a visitor.
    pub fn origin(&self) -> &str {
        &self.0.origin
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
    /// Where the budgets are held when not in process (`REDIS_URL`): shared by every instance
    /// on that Redis, and in process again while it cannot be reached.
    pub redis: Option<Redis>,
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
            .field("redis", &self.redis)
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
            redis: None,
            client,
        })
    }

    /// Reads the configuration from environment variables through `var` (see `docs/proxy.md`):
    /// `RUNFLOW_API_KEY` (required), `RUNFLOW_UPSTREAM`, `RUNFLOW_ORGANIZATION_ID`,
    /// `RUNFLOW_ALLOWED_MODELS`, `PROXY_MAX_BODY_BYTES`, `PROXY_TIMEOUT_MS`,
    /// `PROXY_RATE_PER_SEC` (0 turns the limit off), `PROXY_BURST`, `PROXY_CLIENT_IP_HEADER`,
    /// `PROXY_SHARED_SECRET`, `PROXY_SAME_ORIGIN` (`0` turns the check off), `PROXY_ALLOWED_HOSTS`,
    /// `REDIS_URL` (budgets shared across instances).
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
        // Same origin first, then the secret: the order every server built on the rules keeps.
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
        if let Some(secret) = var("PROXY_SHARED_SECRET").filter(|s| !s.is_empty()) {
            config
                .authenticators
                .push(Arc::new(SharedSecret::new(secret)));
        }
        config.redis = Redis::from_env(&var)?;
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
        let held = match &self.redis {
            Some(redis) => format!("in Redis at {}", redis.shown()),
            None => "in process".into(),
        };
        let hooks: Vec<&str> = self.authenticators.iter().map(|a| a.name()).collect();
        let hooks = if hooks.is_empty() {
            "none".into()
        } else {
            hooks.join(" + ")
        };
        format!(
            "proxy to {}: models {models}, up to {} images a run; bodies up to {} bytes; timeout {:?}; {rate}; {creates}; budgets {held}; checks: {hooks}",
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
    /// The rules and budgets, from `config`. Its same-origin check is off: `SameOrigin` is one
    /// of `config.authenticators`, where the configuration puts it.
    policy: Policy,
    /// The budgets' clock starts here.
    epoch: Instant,
    /// The budgets when held in Redis (`policy`'s own are off then).
    shared: Option<SharedBudgets>,
    /// The relay's receiver, put in creates that name no `callback_url` (relay on only).
    callback_url: Option<String>,
}

/// `/api/runflow/{*rest}` forwarded upstream; creates without a `callback_url` get
/// `callback_url` when the relay is on.
pub(crate) fn router(config: ProxyConfig, callback_url: Option<String>) -> Router {
    let shared = config
        .redis
        .clone()
        .map(|redis| SharedBudgets::new(redis, config.rate_limit, config.create_limit));
    // Held in one place: in Redis, or by the policy in process.
    let in_process = |limit| if shared.is_some() { None } else { limit };
    let policy = Policy::new(
        config.allowed_models.clone(),
        None,
        config.max_body_bytes,
        config.max_images_per_run,
        in_process(config.rate_limit),
        in_process(config.create_limit),
        Names::ENV,
    );
    let proxy = Arc::new(Proxy {
        config,
        policy,
        epoch: Instant::now(),
        shared,
        callback_url,
    });
    // The bare mount too, so that nothing under it reaches the static files.
    Router::new()
        .route(MOUNT, any(forward))
        .route(&format!("{MOUNT}/"), any(forward))
        .route(&format!("{MOUNT}/{{*rest}}"), any(forward))
        .with_state(proxy)
}

/// The answer for a refused call, as the rules word it.
fn answer(refusal: &runflow_proxy_rules::Refusal) -> Response {
    let mut response = Response::new(Body::from(refusal.body()));
    *response.status_mut() =
        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = refusal.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Logs a refusal and answers it.
fn refuse(log: CallLog, refusal: &runflow_proxy_rules::Refusal) -> Response {
    log.finish(refusal.status, "refused", Some(&refusal.code));
    answer(refusal)
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.peer().ip());
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    // The router only sends calls under the mount here.
    let path = strip_mount(path, MOUNT).unwrap_or(path).to_string();
    let client = proxy.client_ip(&parts.headers).or(peer);
    let mut log = CallLog {
        method: parts.method.to_string(),
        path,
        client,
        started,
        run_id: None,
    };
    let now = started.saturating_duration_since(proxy.epoch);
    let mut response = match proxy.admit(&parts, &log.path, client, now).await {
        Ok(allowed) => {
            log.run_id = allowed.run_id.clone();
            proxy.send(parts, body, allowed, log).await
        }
        Err(refusal) => refuse(log, &refusal),
    };
    let headers = response.headers_mut();
    for (name, value) in GUARD_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

impl Proxy {
    /// The client's address from the trusted header's last value.
    fn client_ip(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let name = self.config.client_ip_header.as_ref()?;
        let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        runflow_proxy_rules::limit::client_ip(value)
    }

    /// The checks before forwarding, in the rules' order: rate limit, the authenticate hooks
    /// (the same-origin check among them), the allowlist with the create budget.
    async fn admit(
        &self,
        parts: &Parts,
        path: &str,
        client: Option<IpAddr>,
        now: Duration,
    ) -> Result<Allowed, runflow_proxy_rules::Refusal> {
        self.policy.admit_rate(client, now)?;
        if let Some(shared) = &self.shared {
            shared.admit_rate(client, now).await?;
        }
        for hook in &self.config.authenticators {
            hook.authenticate(parts).map_err(|refusal| {
                runflow_proxy_rules::Refusal::envelope(
                    refusal.status.as_u16(),
                    &refusal.code,
                    &refusal.message,
                )
            })?;
        }
        let method = parts.method.as_str();
        let allowed = self
            .policy
            .admit_route(method, path, parts.uri.query(), client, now)?;
        // After the allowlist, as in the policy: a refused call spends no create.
        if let (true, Some(shared)) = (allowed.creates_run, &self.shared) {
            shared.admit_create(client, now, &self.policy.names).await?;
        }
        Ok(allowed)
    }

    async fn send(&self, parts: Parts, body: Body, allowed: Allowed, log: CallLog) -> Response {
        let config = &self.config;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Err(refusal) = self.policy.admit_length(declared) {
            drain(body).await;
            return refuse(log, &refusal);
        }

        let url = format!("{}{}", config.upstream.0.base, allowed.target);
        let mut request = config
            .client
            .request(parts.method.clone(), url)
            .timeout(config.timeout)
            .header(header::AUTHORIZATION, config.api_key.0.clone());
        for name in REQUEST_HEADERS {
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
                return refuse(log, &self.policy.too_large());
            };
            if let Err(refusal) = self.policy.admit_create_body(&bytes) {
                return refuse(log, &refusal);
            }
            let filled = self
                .callback_url
                .as_deref()
                .and_then(|url| crate::relay::fill_callback_url(&bytes, url));
            request = match filled {
                Some(filled) => request.body(filled),
                None => request.body(bytes),
            };
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
                return refuse(log, &self.policy.too_large());
            }
            Err(e) => {
                let e = e.without_url();
                let refusal = if e.is_connect() {
                    runflow_proxy_rules::Refusal::unreachable()
                } else if e.is_timeout() {
                    runflow_proxy_rules::Refusal::timed_out()
                } else {
                    runflow_proxy_rules::Refusal::connection_failed()
                };
                log.finish(refusal.status, "failed", Some(&error_chain(&e)));
                return answer(&refusal);
            }
        };

        let status = upstream.status();
        let mut headers = HeaderMap::new();
        for (name, value) in upstream.headers() {
            if returns_response_header(name.as_str()) {
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
                return answer(&runflow_proxy_rules::Refusal::error_too_large(
                    status.as_u16(),
                ));
            }
            Ok(None) => break,
            Err(e) => {
                let refusal = runflow_proxy_rules::Refusal::connection_failed();
                let detail = format!("response body: {}", error_chain(&e.without_url()));
                log.finish(refusal.status, "failed", Some(&detail));
                return answer(&refusal);
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
