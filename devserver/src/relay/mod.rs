//! The callback relay: `POST /api/runflow/callbacks` receives Runflow's signed callbacks, and
//! `GET /api/runflow/runs/{id}/events` streams each run's terminal event to the browsers waiting
//! on it (Server-Sent Events). Verification and parsing are the client crate's own
//! (`runflow_kontext::callback`); keeping and fanning out events is a `hub::Hub`. See
//! `docs/callbacks.md`.

mod hub;
pub(crate) mod redis;
mod streams;

use std::{convert::Infallible, fmt, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, Path, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures_util::stream::{self, StreamExt};
use runflow_kontext::callback::{parse_event, verify_signature};
use runflow_proxy_rules::MAX_ID_LEN;
use serde_json::{json, Value};

use crate::{conn::ConnHandle, MOUNT};
use hub::{Delivered, Hub, Published};
use streams::{Full, StreamGate};
pub use streams::{DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_CLIENT};

/// The discovery header on the API's answers while the relay is on (see `docs/callbacks.md`).
pub const RELAY_HEADER: &str = "runflow-kontext-relay";
/// The receiver's path, under the mount.
pub const CALLBACK_PATH: &str = "/api/runflow/callbacks";
/// The events stream's path, `{id}` standing for the run id.
pub const EVENTS_PATH: &str = "/api/runflow/runs/{id}/events";
/// The header carrying the callback's signature.
const SIGNATURE_HEADER: &str = "runflow-signature";
/// The header naming the delivery.
const REQUEST_ID_HEADER: &str = "runflow-request-id";

/// Comment lines on an idle stream, so proxies and browsers keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a run's events are kept for browsers that subscribe late (and for deduplication).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);
/// How many runs' events are kept at most; the oldest go first.
pub const DEFAULT_MAX_RUNS: usize = 10_000;
/// The longest one events stream stays open; the browser's EventSource then reconnects (and
/// checks the run), and a stream nobody will ever end does not hold its place for good.
pub const DEFAULT_MAX_STREAM_DURATION: Duration = Duration::from_secs(600);
/// Largest callback body read; above it the answer is 413.
pub const DEFAULT_CALLBACK_MAX_BYTES: usize = 32 * 1024 * 1024;

/// How to turn the relay on, for every message that says it is off.
const HOW_TO: &str = "set RUNFLOW_CALLBACK_SECRETS (the plain_secret of POST /v1/callback-secrets; two, comma-separated, while rotating) and PUBLIC_URL (where Runflow reaches this server, e.g. https://demo.example.com) and restart; see docs/callbacks.md";

/// The signing secrets callbacks are checked against (`Debug` is redacted).
#[derive(Clone)]
pub struct CallbackSecrets(Vec<String>);

impl CallbackSecrets {
    /// Parses `RUNFLOW_CALLBACK_SECRETS`: comma-separated, blanks ignored.
    ///
    /// # Errors
    /// A message (without the secrets) when none is left.
    ///
    /// # Example
    /// ```
    /// let secrets = runflow_devserver::CallbackSecrets::parse("whsec_new, whsec_old").unwrap();
    /// assert_eq!(secrets.len(), 2);
    /// assert_eq!(format!("{secrets:?}"), "CallbackSecrets(2 × <redacted>)");
    /// ```
    pub fn parse(list: &str) -> Result<CallbackSecrets, String> {
        let secrets: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if secrets.is_empty() {
            return Err(format!(
                "RUNFLOW_CALLBACK_SECRETS holds no secret: {HOW_TO}"
            ));
        }
        Ok(CallbackSecrets(secrets))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The secrets, as listed (the first is the newest).
    pub(crate) fn listed(&self) -> &[String] {
        &self.0
    }

    /// Never true once parsed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for CallbackSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackSecrets({} × <redacted>)", self.0.len())
    }
}

/// Everything the relay needs while on. Build it with `new`, then adjust the fields.
#[derive(Clone)]
pub struct RelayConfig {
    /// The secrets a callback's `Runflow-Signature` may match.
    pub secrets: CallbackSecrets,
    /// Where Runflow reaches this server (`PUBLIC_URL`, no trailing `/`); the receiver is
    /// `<public_url>/api/runflow/callbacks`.
    pub public_url: String,
    /// Interval of the streams' heartbeat comments.
    pub heartbeat: Duration,
    /// Largest callback body read.
    pub max_body_bytes: usize,
    /// The longest one events stream stays open.
    pub max_stream_duration: Duration,
    /// The header naming the client's address when a reverse proxy is in front (its last
    /// value, as the proxy's budgets read it: `PROXY_CLIENT_IP_HEADER`); the peer otherwise.
    pub client_ip_header: Option<HeaderName>,
    hub: Arc<dyn Hub>,
    streams: Arc<StreamGate>,
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("secrets", &self.secrets)
            .field("public_url", &self.public_url)
            .field("heartbeat", &self.heartbeat)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_stream_duration", &self.max_stream_duration)
            .field("client_ip_header", &self.client_ip_header)
            .field("hub", &self.hub.describe())
            .field("streams", &self.streams.describe())
            .finish()
    }
}

impl RelayConfig {
    /// The relay with the defaults: 15 s heartbeats, 32 MiB bodies, events kept in process for
    /// 10 minutes (10 000 runs at most).
    ///
    /// # Errors
    /// A message when `public_url` is not an http(s) URL without query, fragment or credentials.
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::{CallbackSecrets, RelayConfig};
    /// let secrets = CallbackSecrets::parse("whsec_x").unwrap();
    /// let relay = RelayConfig::new(secrets, "https://demo.example.com/").unwrap();
    /// assert_eq!(relay.callback_url(), "https://demo.example.com/api/runflow/callbacks");
    /// ```
    pub fn new(secrets: CallbackSecrets, public_url: &str) -> Result<RelayConfig, String> {
        RelayConfig::with_store(secrets, public_url, DEFAULT_RETENTION, DEFAULT_MAX_RUNS)
    }

    /// `new` with events kept for `retention` (at most `max_runs` runs).
    ///
    /// # Errors
    /// As `new`.
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::{CallbackSecrets, RelayConfig};
    /// let secrets = CallbackSecrets::parse("whsec_x").unwrap();
    /// let relay = RelayConfig::with_store(secrets, "http://127.0.0.1:8080",
    ///     std::time::Duration::from_secs(60), 100).unwrap();
    /// # drop(relay);
    /// ```
    pub fn with_store(
        secrets: CallbackSecrets,
        public_url: &str,
        retention: Duration,
        max_runs: usize,
    ) -> Result<RelayConfig, String> {
        Ok(RelayConfig {
            secrets,
            public_url: parse_public_url(public_url)?,
            heartbeat: DEFAULT_HEARTBEAT,
            max_body_bytes: DEFAULT_CALLBACK_MAX_BYTES,
            max_stream_duration: DEFAULT_MAX_STREAM_DURATION,
            client_ip_header: None,
            hub: Arc::new(hub::Memory::new(retention, max_runs)),
            streams: StreamGate::new(DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_CLIENT),
        })
    }

    /// At most `max_total` events streams open at once, `max_per_client` of them per client
    /// (defaults: `DEFAULT_MAX_STREAMS`, `DEFAULT_MAX_STREAMS_PER_CLIENT`); past them a stream
    /// is refused (503 or 429), and the browser client polls.
    pub fn limit_streams(&mut self, max_total: usize, max_per_client: usize) {
        self.streams = StreamGate::new(max_total, max_per_client);
    }

    /// The same relay with its events kept in `redis` for `retention` instead of in process, and
    /// fanned out through its pub/sub: shared by every instance on that Redis.
    pub(crate) fn in_redis(
        mut self,
        redis: self::redis::Redis,
        retention: Duration,
    ) -> RelayConfig {
        self.hub = Arc::new(self::redis::RedisHub::new(redis, retention));
        self
    }

    /// The receiver's address for Runflow (a create's `callback_url`).
    pub fn callback_url(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.public_url)
    }

    /// The events stream's path as browsers reach it: `EVENTS_PATH` under `PUBLIC_URL`'s own
    /// path, for a server mounted under a prefix by the reverse proxy in front of it.
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::{CallbackSecrets, RelayConfig};
    /// let secrets = CallbackSecrets::parse("whsec_x").unwrap();
    /// let relay = RelayConfig::new(secrets, "https://example.com/kontext/").unwrap();
    /// assert_eq!(relay.events_path(), "/kontext/api/runflow/runs/{id}/events");
    /// ```
    pub fn events_path(&self) -> String {
        let after_scheme = self
            .public_url
            .split_once("://")
            .map_or("", |(_, rest)| rest);
        let prefix = after_scheme
            .find('/')
            .and_then(|at| after_scheme.get(at..))
            .unwrap_or("");
        format!("{prefix}{EVENTS_PATH}")
    }

    /// The start-up line's words for it.
    pub fn summary(&self) -> String {
        format!(
            "callback relay on: receiver {} ({} secret(s)), events {} ({}, each {:?} at most), heartbeat {:?}, {}",
            self.callback_url(),
            self.secrets.len(),
            self.events_path(),
            self.streams.describe(),
            self.max_stream_duration,
            self.heartbeat,
            self.hub.describe()
        )
    }
}

/// The relay, on or off.
#[derive(Clone, Debug)]
pub enum Relay {
    /// Receiving and streaming.
    On(Box<RelayConfig>),
    /// Both routes answer 503 with this message (how to turn it on).
    Off(String),
}

impl Relay {
    /// The secrets a mock in front should sign with, oldest first (the first listed is the
    /// newest, and the mock signs with its last); none while off.
    pub(crate) fn signing_secrets(&self) -> Vec<String> {
        match self {
            Relay::On(config) => config.secrets.listed().iter().rev().cloned().collect(),
            Relay::Off(_) => Vec::new(),
        }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay::Off(format!("The callback relay is off: {HOW_TO}."))
    }
}

impl Relay {
    /// Reads the relay's settings through `var`: on when `RUNFLOW_CALLBACK_SECRETS` and
    /// `PUBLIC_URL` are both set; `RELAY_HEARTBEAT_MS`, `RELAY_RETENTION_SECS`,
    /// `RELAY_MAX_RUNS` and `RELAY_MAX_BODY_BYTES` adjust it, and with `REDIS_URL` its events
    /// are kept in Redis, shared by every instance on it.
    ///
    /// # Errors
    /// A message naming the variable at fault (never showing a secret).
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::Relay;
    /// let off = Relay::from_env(|_| None).unwrap();
    /// assert!(matches!(off, Relay::Off(_)));
    /// let vars = |name: &str| match name {
    ///     "RUNFLOW_CALLBACK_SECRETS" => Some("whsec_a,whsec_b".to_string()),
    ///     "PUBLIC_URL" => Some("http://127.0.0.1:8080".to_string()),
    ///     _ => None,
    /// };
    /// assert!(matches!(Relay::from_env(vars).unwrap(), Relay::On(_)));
    /// ```
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Relay, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        // Checked even while the relay is off: a bad value stops the server at start.
        let redis = self::redis::Redis::from_env(set)?;
        let (secrets, public_url) = match (set("RUNFLOW_CALLBACK_SECRETS"), set("PUBLIC_URL")) {
            (Some(secrets), Some(url)) => (CallbackSecrets::parse(&secrets)?, url),
            (None, None) => return Ok(Relay::default()),
            (Some(_), None) => {
                return Ok(Relay::Off(format!(
                    "The callback relay is off: PUBLIC_URL is not set, so Runflow has nowhere to deliver. {HOW_TO}."
                )))
            }
            (None, Some(_)) => {
                return Ok(Relay::Off(format!(
                    "The callback relay is off: RUNFLOW_CALLBACK_SECRETS is not set, so callbacks cannot be verified. {HOW_TO}."
                )))
            }
        };
        let number = |name: &str| -> Result<Option<u64>, String> {
            match set(name) {
                None => Ok(None),
                Some(text) => text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be a positive integer, got {text:?}")),
            }
        };
        let retention =
            number("RELAY_RETENTION_SECS")?.map_or(DEFAULT_RETENTION, Duration::from_secs);
        let max_runs = number("RELAY_MAX_RUNS")?.map_or(DEFAULT_MAX_RUNS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
        let mut config = RelayConfig::with_store(secrets, &public_url, retention, max_runs)?;
        if let Some(redis) = redis {
            config = config.in_redis(redis, retention);
        }
        if let Some(ms) = number("RELAY_HEARTBEAT_MS")? {
            config.heartbeat = Duration::from_millis(ms);
        }
        if let Some(bytes) = number("RELAY_MAX_BODY_BYTES")? {
            config.max_body_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(secs) = number("RELAY_STREAM_MAX_SECS")? {
            config.max_stream_duration = Duration::from_secs(secs);
        }
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let max_total = number("RELAY_MAX_STREAMS")?.map_or(DEFAULT_MAX_STREAMS, count);
        let max_per_client =
            number("RELAY_MAX_STREAMS_PER_CLIENT")?.map_or(DEFAULT_MAX_STREAMS_PER_CLIENT, count);
        config.limit_streams(max_total, max_per_client);
        if let Some(name) = set("PROXY_CLIENT_IP_HEADER") {
            let header = HeaderName::try_from(name.trim())
                .map_err(|_| format!("PROXY_CLIENT_IP_HEADER {name:?} is not a header name"))?;
            config.client_ip_header = Some(header);
        }
        Ok(Relay::On(Box::new(config)))
    }

    /// What `GET /api/runflow/_backend` says of it: `{"on": true, "events": ..., "callback": ...}`
    /// or `{"on": false, "message": ...}`.
    pub(crate) fn info(&self) -> Value {
        match self {
            Relay::On(config) => json!({
                "on": true,
                "events": config.events_path(),
                "callback": config.callback_url(),
            }),
            Relay::Off(message) => json!({"on": false, "message": message}),
        }
    }

    /// The receiver's address while on: what the dev server's proxy (and, in mock mode, the
    /// default scenario) puts in a create that names no `callback_url`.
    pub(crate) fn callback_url(&self) -> Option<String> {
        match self {
            Relay::On(config) => Some(config.callback_url()),
            Relay::Off(_) => None,
        }
    }

    /// The discovery header's value, while on.
    fn header(&self) -> Option<HeaderValue> {
        match self {
            Relay::On(config) => HeaderValue::from_str(&format!(
                "events={}; callback={}",
                config.events_path(),
                config.callback_url()
            ))
            .ok(),
            Relay::Off(_) => None,
        }
    }
}

/// A create's JSON body with `"callback_url":"<url>"` inserted first, when it has no
/// `callback_url` member: the run's callback then reaches the relay, and the browser can wait on
/// its stream. The rest of the body is left byte for byte (key order, number spellings), so a
/// repeat under the same Idempotency-Key is the same body. `None` leaves the body as it is: a
/// caller's own receiver, an explicit `null` (no callback wanted), or a body that is not a JSON
/// object.
pub(crate) fn fill_callback_url(body: &[u8], url: &str) -> Option<Vec<u8>> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(fields) if !fields.contains_key("callback_url") => {}
        _ => return None,
    }
    let open = body.iter().position(|b| *b == b'{')?;
    let empty = body
        .get(open + 1..)?
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    let member = format!(
        "\"callback_url\":{}{}",
        Value::String(url.into()),
        if empty { "" } else { "," }
    );
    let mut filled = Vec::with_capacity(body.len() + member.len());
    filled.extend_from_slice(body.get(..=open)?);
    filled.extend_from_slice(member.as_bytes());
    filled.extend_from_slice(body.get(open + 1..)?);
    Some(filled)
}

/// `PUBLIC_URL`, checked, without its trailing `/`.
fn parse_public_url(text: &str) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let bad = |why: &str| Err(format!("PUBLIC_URL {text:?} {why}"));
    let Some(rest) = rest else {
        return bad("must start with http:// or https://");
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return bad("has no host");
    }
    if host.contains('@') {
        return bad("must not hold credentials");
    }
    // The discovery header separates its parts with `;` and ` `: keep those out.
    if url
        .chars()
        .any(|c| matches!(c, '?' | '#' | ';' | ',' | '"' | '\\') || !c.is_ascii_graphic())
    {
        return bad("must be a plain URL: no query, fragment, spaces, quotes, `;` or `,`");
    }
    Ok(url.to_string())
}

/// An id as the proxy's rules accept one in a path.
fn is_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut response =
        (status, Json(json!({"error": message.into(), "code": code}))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The receiver and the events stream (on or off), to merge before the mock's or proxy's routes.
pub(crate) fn router(relay: &Relay) -> Router {
    match relay {
        Relay::On(config) => {
            let state = Arc::new((**config).clone());
            Router::new()
                .route(CALLBACK_PATH, post(receive))
                .route(&format!("{MOUNT}/runs/{{id}}/events"), get(events))
                .with_state(state)
        }
        Relay::Off(message) => {
            let message: Arc<str> = Arc::from(message.as_str());
            let off = move || {
                let message = message.clone();
                async move { error(StatusCode::SERVICE_UNAVAILABLE, "relay_off", &*message) }
            };
            Router::new()
                .route(CALLBACK_PATH, post(off.clone()))
                .route(&format!("{MOUNT}/runs/{{id}}/events"), get(off))
        }
    }
}

/// Adds the discovery header to the API's answers (`/api/runflow/...` and, in mock mode, the
/// scenarios' `/__mock/s/...`) while the relay is on; a no-op layer otherwise.
pub(crate) fn advertise(router: Router, relay: &Relay) -> Router {
    let Some(value) = relay.header() else {
        return router;
    };
    router.layer(middleware::from_fn(move |request: Request, next: Next| {
        let value = value.clone();
        async move {
            let path = request.uri().path();
            let api = path == MOUNT
                || path.starts_with(&format!("{MOUNT}/"))
                || path.starts_with("/__mock/s/");
            let mut response = next.run(request).await;
            if api {
                let headers = response.headers_mut();
                headers.insert(HeaderName::from_static(RELAY_HEADER), value);
                // Pages of other origins (MOCK_CORS=1) may read it too.
                if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
                    headers.append(
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        HeaderValue::from_static(RELAY_HEADER),
                    );
                }
            }
            response
        }
    }))
}

/// A header's value as it may go into a log line: printable ASCII, at most 80 characters.
fn loggable(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(80)
                .collect::<String>()
        })
        .unwrap_or_else(|| "-".into())
}

/// `POST /api/runflow/callbacks`: 401 unless signed by a configured secret, 400 unless a
/// callback, 200 otherwise (a redelivery of a kept (`run_id`, `event`) is not published again).
async fn receive(State(relay): State<Arc<RelayConfig>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map_or_else(|| "-".into(), |ConnectInfo(c)| c.peer().to_string());
    let (parts, body) = request.into_parts();
    let delivery = loggable(&parts.headers, REQUEST_ID_HEADER);
    let body = match axum::body::to_bytes(body, relay.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            eprintln!("relay: 413 callback from {peer} (request id {delivery}): body over {} bytes or unreadable", relay.max_body_bytes);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "A callback body may hold at most {} bytes (RELAY_MAX_BODY_BYTES).",
                    relay.max_body_bytes
                ),
            );
        }
    };
    let signature = parts
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let secrets: Vec<&str> = relay.secrets.0.iter().map(String::as_str).collect();
    let verdict = match signature {
        None => Some("no Runflow-Signature header"),
        Some(sig) if !verify_signature(&body, sig, &secrets) => {
            Some("Runflow-Signature matches none of RUNFLOW_CALLBACK_SECRETS")
        }
        Some(_) => None,
    };
    if let Some(why) = verdict {
        // One line, without the body: it is not known to come from Runflow.
        eprintln!(
            "relay: 401 callback from {peer} (request id {delivery}, {} bytes): {why}",
            body.len()
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("{why}: this server accepts only callbacks signed with its RUNFLOW_CALLBACK_SECRETS."),
        );
    }
    let request_id = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    let parsed = std::str::from_utf8(&body)
        .map_err(|_| "This is not a Runflow callback: the body is not UTF-8".to_string())
        .and_then(|text| parse_event(text, request_id).map_err(|e| e.to_string()));
    let event = match parsed {
        Ok(event) if is_id(&event.run_id) => event,
        Ok(_) => {
            eprintln!(
                "relay: 400 callback from {peer} (request id {delivery}): run_id is not an id"
            );
            return error(
                StatusCode::BAD_REQUEST,
                "not_a_callback",
                format!("run_id must be 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, - and _."),
            );
        }
        Err(message) => {
            eprintln!("relay: 400 callback from {peer} (request id {delivery}): {message}");
            return error(StatusCode::BAD_REQUEST, "not_a_callback", message);
        }
    };
    let data = event.to_json().to_string();
    let delivered = Delivered {
        seq: 0,
        event: event.event.clone(),
        data: Arc::from(data),
    };
    match relay.hub.publish(&event.run_id, delivered).await {
        Ok(published) => {
            let (duplicate, outcome) = match published {
                Published::New(kept) => (false, format!("published as event {}", kept.seq)),
                Published::Duplicate => (true, "already relayed, not published again".into()),
            };
            eprintln!(
                "relay: {} for run {} (request id {delivery}): {outcome}",
                event.event, event.run_id
            );
            let mut response =
                Json(json!({"received": true, "duplicate": duplicate})).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(message) => {
            eprintln!(
                "relay: 503 callback for run {}: the event store failed: {message}",
                event.run_id
            );
            // 5xx: Runflow delivers again later.
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The relay could not keep this event; deliver it again later.",
            )
        }
    }
}

/// `GET /api/runflow/runs/{id}/events`: the run's kept events past `Last-Event-ID` at once, or
/// the next one when it comes, then the end of the stream; 204 when the browser has seen it all.
async fn events(
    State(relay): State<Arc<RelayConfig>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    if !is_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_run_id",
            format!("A run id is 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, - and _."),
        );
    }
    let headers = request.headers();
    let peer = request
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|ConnectInfo(c)| c.peer().ip());
    let client = match &relay.client_ip_header {
        Some(name) => headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(runflow_proxy_rules::limit::client_ip),
        None => peer,
    };
    let permit = match relay.streams.admit(client) {
        Ok(permit) => permit,
        Err(full) => {
            let (status, message) = match full {
                Full::Client(max) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("This client has {max} event streams open already (RELAY_MAX_STREAMS_PER_CLIENT); poll the run instead."),
                ),
                Full::Instance(max) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("This server has {max} event streams open already (RELAY_MAX_STREAMS); poll the run instead."),
                ),
            };
            eprintln!("relay: {} stream for run {id}: {message}", status.as_u16());
            return error(status, "too_many_streams", message);
        }
    };
    // An id this server never sent (or none) counts as having seen nothing.
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let subscription = match relay.hub.subscribe(&id).await {
        Ok(subscription) => subscription,
        Err(message) => {
            eprintln!("relay: cannot subscribe to run {id}: {message}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The relay cannot be reached right now; poll the run instead.",
            );
        }
    };
    let seen = subscription.kept.iter().any(|e| e.seq <= last);
    let missed: Vec<Delivered> = subscription
        .kept
        .into_iter()
        .filter(|e| e.seq > last)
        .collect();
    if missed.is_empty() && seen {
        // The terminal event was delivered: 204 tells EventSource not to reconnect.
        return StatusCode::NO_CONTENT.into_response();
    }
    let to_event = |e: Delivered| {
        Ok::<Event, Infallible>(Event::default().id(e.seq.to_string()).data(&*e.data))
    };
    let stream = if missed.is_empty() {
        let floor = last;
        subscription
            .live
            .filter(move |e| std::future::ready(e.seq > floor))
            .take(1)
            .map(to_event)
            .boxed()
    } else {
        stream::iter(missed).map(to_event).boxed()
    };
    // The place is held while the stream is: until it ends, or the browser goes.
    let stream = stream
        .take_until(tokio::time::sleep(relay.max_stream_duration))
        .map(move |event| {
            let _held = &permit;
            event
        });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(relay.heartbeat).text("heartbeat"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx and the like: pass each event on at once.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert_eq!(
            parse_public_url("https://demo.example.com/").unwrap(),
            "https://demo.example.com"
        );
        assert_eq!(
            parse_public_url("http://127.0.0.1:8080/base").unwrap(),
            "http://127.0.0.1:8080/base"
        );
        for bad in [
            "demo.example.com",
            "ftp://x",
            "https://",
            "https://u:p@x",
            "https://x/?q",
            "https://x/#f",
            "https://x/a;b",
            "https://x/a b",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fills_only_a_missing_callback_url_and_keeps_the_rest_byte_for_byte() {
        let url = "https://demo.example.com/api/runflow/callbacks";
        let body = br#" {"metadata":{"b":1,"a":2},"input":{"prompt":"x","seed":1.50}} "#;
        let filled = fill_callback_url(body, url).unwrap();
        assert_eq!(
            String::from_utf8(filled).unwrap(),
            r#" {"callback_url":"https://demo.example.com/api/runflow/callbacks","metadata":{"b":1,"a":2},"input":{"prompt":"x","seed":1.50}} "#
        );
        assert_eq!(
            fill_callback_url(b"{ }", url).unwrap(),
            br#"{"callback_url":"https://demo.example.com/api/runflow/callbacks" }"#
        );
        assert!(fill_callback_url(br#"{"callback_url":"https://mine.example/cb"}"#, url).is_none());
        assert!(fill_callback_url(br#"{"input":{},"callback_url":null}"#, url).is_none());
        assert!(fill_callback_url(b"[1]", url).is_none());
        assert!(fill_callback_url(b"not json", url).is_none());
    }

    #[test]
    fn ids() {
        assert!(is_id("run_abc-123"));
        assert!(!is_id(""));
        assert!(!is_id("a.b"));
        assert!(!is_id(&"a".repeat(MAX_ID_LEN + 1)));
        assert!(is_id(&"a".repeat(MAX_ID_LEN)));
    }

    #[test]
    fn half_configured_is_off_and_says_what_is_missing() {
        let only_secret =
            |name: &str| (name == "RUNFLOW_CALLBACK_SECRETS").then(|| "whsec_x".to_string());
        match Relay::from_env(only_secret).unwrap() {
            Relay::Off(message) => assert!(message.contains("PUBLIC_URL is not set"), "{message}"),
            Relay::On(_) => panic!("on without PUBLIC_URL"),
        }
        let bad = |name: &str| match name {
            "RUNFLOW_CALLBACK_SECRETS" => Some("whsec_x".to_string()),
            "PUBLIC_URL" => Some("http://x".to_string()),
            "RELAY_HEARTBEAT_MS" => Some("soon".to_string()),
            _ => None,
        };
        let message = Relay::from_env(bad).unwrap_err();
        assert!(message.contains("RELAY_HEARTBEAT_MS"), "{message}");
    }
}
