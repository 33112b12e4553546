//! The embedded mock of Runflow's runs API, its scenarios and its control API.

mod api;
mod assets;
pub(crate) mod callbacks;
mod control;
mod files;
mod imaging;
mod run;
mod scenario;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    http::{
        header::{ETAG, RETRY_AFTER},
        HeaderName,
    },
    middleware,
    routing::{any, delete, get, post, put},
    Router,
};
use tower_http::cors::{Any, CorsLayer};

use crate::Config;

/// Shared by every handler.
pub(crate) struct AppState {
    www_dir: PathBuf,
    scenarios: scenario::Registry,
    files: files::FileStore,
    assets: assets::AssetStore,
    requests: AtomicU64,
    /// Delivers callbacks (to loopback URLs only: see `callbacks`).
    callback_client: reqwest::Client,
    /// The relay's receiver while it is on: the default scenario stands for the dev server's
    /// proxy in front of Runflow, so its creates without a `callback_url` get this one.
    default_callback_url: Option<String>,
}

impl AppState {
    /// A fresh `x-request-id` value.
    fn next_request_id(&self) -> String {
        format!("req_{}", self.requests.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// The mock API (default scenario at `/api/runflow`, others under `/__mock/s/{id}`), the control
/// API (loopback, same-origin callers only: see `control::guard`) and the output files. With
/// `mock_cors` every route answers cross-origin pages, as the browser tests need; without it
/// none sends a CORS header, as Runflow sends none.
/// `default_secrets` sign the default scenario's callbacks (oldest first, the last signs): the
/// relay's, so that in mock mode a run's callback reaches this server's own receiver verified.
pub(crate) fn router(
    config: Config,
    default_secrets: Vec<String>,
    default_callback_url: Option<String>,
) -> Router {
    let mock_cors = config.mock_cors;
    let state = Arc::new(AppState {
        www_dir: config.www_dir,
        scenarios: scenario::Registry::new(config.lifecycle_ms, default_secrets),
        files: files::FileStore::default(),
        assets: assets::AssetStore::default(),
        requests: AtomicU64::new(0),
        callback_client: callbacks::client(),
        default_callback_url,
    });
    let control = Router::new()
        .route("/__mock/scenarios", post(control::create))
        .route("/__mock/s/{scenario}/log", get(control::log))
        .route("/__mock/s/{scenario}/faults", post(control::add_faults))
        .route("/__mock/s/{scenario}/runs", get(control::runs))
        .route("/__mock/s/{scenario}/callbacks", get(control::callbacks))
        .route("/__mock/s/{scenario}", delete(control::delete))
        .route_layer(middleware::from_fn_with_state(mock_cors, control::guard));
    let router = Router::new()
        .route("/api/runflow/v1/{*rest}", any(api::default_scenario))
        .route("/__mock/s/{scenario}/v1/{*rest}", any(api::named_scenario))
        // An asset's presigned upload URL: the PUT goes through the scenario's log and faults.
        .route(
            "/__mock/s/{scenario}/uploads/{asset_id}",
            put(api::named_scenario),
        )
        .route("/__mock/files/{run_id}/{name}", get(files::serve))
        .route("/__mock/assets/{asset_id}", get(assets::serve))
        .merge(control)
        .with_state(state);
    if !mock_cors {
        return router;
    }
    // Preflights are answered here, before the handlers: they are never logged nor hit faults.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        // ETag: an upload's PUT answers with it, as S3 does.
        .expose_headers([RETRY_AFTER, ETAG, HeaderName::from_static("x-request-id")]);
    router.layer(cors)
}
