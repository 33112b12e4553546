//! Dev server for runflow-kontext: serves the demo page and the built package, and at
//! `/api/runflow` either embeds a mock of Runflow's runs API (with isolated, scriptable
//! scenarios) so that everything runs offline, or proxies to the real API with a server-side key.
#![deny(missing_docs)]

mod conn;
mod mock;
mod proxy;
mod relay;
#[cfg(test)]
mod tests;

use std::{future::Future, io, path::PathBuf};

use axum::{
    http::{header, HeaderName, HeaderValue},
    routing::get,
    Json, Router,
};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::{services::ServeDir, set_header::SetResponseHeaderLayer};

pub use proxy::{
    ApiKey, Authenticate, ModelAllowlist, ProxyConfig, RateLimit, Refusal, SameOrigin,
    SharedSecret, Upstream, DEFAULT_MAX_BODY_BYTES, DEFAULT_MODEL, DEFAULT_TIMEOUT,
    DEFAULT_UPSTREAM,
};
pub use relay::{
    CallbackSecrets, Relay, RelayConfig, CALLBACK_PATH, DEFAULT_CALLBACK_MAX_BYTES,
    DEFAULT_HEARTBEAT, DEFAULT_MAX_RUNS, DEFAULT_RETENTION, EVENTS_PATH, RELAY_HEADER,
};

/// Where the API is mounted, as with Runflow's own proxy package (the client's `baseUrl`).
pub const MOUNT: &str = "/api/runflow";

/// What answers at `/api/runflow`.
#[derive(Clone, Debug, Default)]
pub enum Backend {
    /// The embedded mock (the default: no key, no network).
    #[default]
    Mock,
    /// The real API through the proxy.
    Proxy(Box<ProxyConfig>),
}

impl Backend {
    /// How the start-up line names it: `embedded mock` or `proxy to <origin>`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_devserver::Backend::Mock.describe(), "embedded mock");
    /// ```
    pub fn describe(&self) -> String {
        match self {
            Backend::Mock => "embedded mock".into(),
            Backend::Proxy(proxy) => format!("proxy to {}", proxy.upstream.origin()),
        }
    }
}

/// Where the static files live, how the default scenario's runs progress, and which backend
/// serves the API.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory served at `/` (the demo page).
    pub www_dir: PathBuf,
    /// Directory served at `/pkg/` (the wasm-pack output).
    pub pkg_dir: PathBuf,
    /// Milliseconds the default scenario's runs spend queued, dispatching and running.
    pub lifecycle_ms: [u64; 3],
    /// The mock or the proxy.
    pub backend: Backend,
    /// Serve every response cross-origin isolated (COOP `same-origin`, COEP `require-corp`), for
    /// pages that need precise timers: `performance.now()` is coarsened to 100 µs otherwise, to
    /// 5 µs then. Off for the demo, whose output images may come from other origins.
    pub isolated: bool,
    /// Let pages on other origins call the mock (`MOCK_CORS=1`): permissive CORS on the mock
    /// API, its files and its control API. Off by default, as Runflow sends no CORS headers; the
    /// browser tests turn it on, since wasm-pack serves their page from another port. No effect
    /// on the proxy.
    pub mock_cors: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            www_dir: "www".into(),
            pkg_dir: "pkg".into(),
            lifecycle_ms: [800, 700, 2500],
            backend: Backend::Mock,
            isolated: false,
            mock_cors: false,
        }
    }
}

/// Parses `MOCK_LIFECYCLE_MS`: three comma-separated millisecond counts.
///
/// # Errors
/// A message naming the bad value when it is not exactly three integers.
///
/// # Example
/// ```
/// assert_eq!(runflow_devserver::parse_lifecycle("1, 2,3"), Ok([1, 2, 3]));
/// ```
pub fn parse_lifecycle(text: &str) -> Result<[u64; 3], String> {
    let parts: Vec<_> = text.split(',').map(|p| p.trim().parse::<u64>()).collect();
    match parts.as_slice() {
        [Ok(a), Ok(b), Ok(c)] => Ok([*a, *b, *c]),
        _ => Err(format!(
            "MOCK_LIFECYCLE_MS must be three comma-separated milliseconds (queued,dispatching,running), got {text:?}"
        )),
    }
}

/// Builds the whole server with the callback relay off: see `app_with_relay`.
///
/// # Example
/// ```
/// let app = runflow_devserver::app(runflow_devserver::Config::default());
/// # drop(app);
/// ```
pub fn app(config: Config) -> Router {
    app_with_relay(config, Relay::default())
}

/// Builds the whole server: static files, either the mock API with its control API or the
/// proxy, and the callback relay (`POST /api/runflow/callbacks`,
/// `GET /api/runflow/runs/{id}/events`; see `docs/callbacks.md`), which answers 503 while off.
/// `GET /api/runflow/_backend` tells a page which backend, and whether the relay is on:
/// `{"backend": "mock", "upstream": null, "relay": {...}}` or
/// `{"backend": "proxy", "upstream": "<origin>", "relay": {...}}`, the relay being
/// `{"on": true, "events": "/api/runflow/runs/{id}/events", "callback": "<PUBLIC_URL>/api/runflow/callbacks"}`
/// or `{"on": false, "message": "<how to turn it on>"}`.
///
/// # Example
/// ```
/// use runflow_devserver::{app_with_relay, CallbackSecrets, Config, Relay, RelayConfig};
/// let secrets = CallbackSecrets::parse("whsec_x").unwrap();
/// let relay = RelayConfig::new(secrets, "http://127.0.0.1:8080").unwrap();
/// let app = app_with_relay(Config::default(), Relay::On(Box::new(relay)));
/// # drop(app);
/// ```
pub fn app_with_relay(config: Config, relay: Relay) -> Router {
    // Dev builds change constantly: make the browser revalidate (cheap 304s) instead of guessing.
    let no_cache = SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    let pkg = ServeDir::new(&config.pkg_dir);
    let www = ServeDir::new(&config.www_dir);
    let isolated = config.isolated;
    let relay_info = relay.info();
    let (api, backend) = match config.backend.clone() {
        Backend::Mock => (
            mock::router(config, relay.signing_secrets(), relay.callback_url()),
            json!({"backend": "mock", "upstream": null, "relay": relay_info}),
        ),
        Backend::Proxy(proxy) => {
            let upstream = proxy.upstream.origin().to_string();
            let info = json!({"backend": "proxy", "upstream": upstream, "relay": relay_info});
            (proxy::router(*proxy, relay.callback_url()), info)
        }
    };
    // The relay's routes are more specific than the proxy's `/api/runflow/{*rest}`: they win.
    let api = relay::router(&relay).merge(api);
    let app = api
        .route(
            &format!("{MOUNT}/_backend"),
            get(move || std::future::ready(Json(backend.clone()))),
        )
        .nest_service("/pkg", pkg)
        .fallback_service(www);
    let app = relay::advertise(app, &relay).layer(no_cache);
    if !isolated {
        return app;
    }
    let header = |name, value| {
        SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    app.layer(header("cross-origin-opener-policy", "same-origin"))
        .layer(header("cross-origin-embedder-policy", "require-corp"))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish.
///
/// Use this rather than `axum::serve`: the mock's `drop` faults need to close the connection
/// without any response, which only this listener wrapper can do.
///
/// # Errors
/// Whatever the underlying server returns.
///
/// # Example
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let app = runflow_devserver::app(Default::default());
/// runflow_devserver::serve(listener, app, std::future::pending()).await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        conn::KillableListener::new(listener),
        app.into_make_service_with_connect_info::<conn::ConnHandle>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
