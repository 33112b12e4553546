//! The control API tests use to create scenarios, script faults and inspect what happened.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, Path, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::conn::ConnHandle;

use super::{
    api::host,
    scenario::{FaultRule, Scenario, ScenarioConfig},
    AppState,
};

/// A refused control call: `{"error": message}` with its status.
pub(crate) struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Lets through only callers on this machine, from this origin: the peer address must be
/// loopback, the `Host` a loopback name (so a DNS-rebound name cannot pass as same-origin), and
/// an `Origin`, when sent, `http://<Host>`. With `mock_cors` a loopback page on another port
/// passes too (the browser tests' page). The log shows what runs were made and how; no page of
/// another site may read it or script the mock.
pub(crate) async fn guard(State(mock_cors): State<bool>, req: Request, next: Next) -> Response {
    match caller_allowed(&req, mock_cors) {
        Ok(()) => next.run(req).await,
        Err(message) => ControlError(StatusCode::FORBIDDEN, message.into()).into_response(),
    }
}

fn caller_allowed(req: &Request, mock_cors: bool) -> Result<(), &'static str> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.peer().ip().to_canonical());
    if !peer.is_some_and(|ip| ip.is_loopback()) {
        return Err("The mock's control API answers callers on this machine only");
    }
    let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or_default();
    if !is_loopback_authority(host) {
        return Err("The mock's control API answers only for localhost, 127.0.0.1 or [::1]");
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = origin.strip_prefix("http://").unwrap_or_default();
    if authority.eq_ignore_ascii_case(host) || (mock_cors && is_loopback_authority(authority)) {
        Ok(())
    } else {
        Err("The mock's control API answers pages of its own origin only (MOCK_CORS=1 adds loopback pages on other ports)")
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|name| host.eq_ignore_ascii_case(name))
}

fn bad_request(message: String) -> ControlError {
    ControlError(StatusCode::BAD_REQUEST, message)
}

/// Parses a JSON body; a blank one counts as `empty`.
fn parse<T: DeserializeOwned>(body: &[u8], empty: &str) -> Result<T, ControlError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        empty.as_bytes()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad_request(e.to_string()))
}

fn scenario(state: &AppState, id: &str) -> Result<Arc<Scenario>, ControlError> {
    let unknown = || ControlError(StatusCode::NOT_FOUND, format!("unknown scenario {id:?}"));
    state.scenarios.get(id).ok_or_else(unknown)
}

/// `POST /__mock/scenarios` with a `ScenarioConfig` (an empty body counts as `{}`).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let config = parse::<ScenarioConfig>(&body, "{}")?;
    let id = state.scenarios.create(config).map_err(bad_request)?;
    let body = json!({"id": id, "base_url": format!("/__mock/s/{id}")});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /__mock/s/{id}/log`: every mock API request of the scenario, oldest first.
pub(crate) async fn log(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ControlError> {
    let scenario = scenario(&state, &id)?;
    Ok(Json(json!({"requests": scenario.log()})).into_response())
}

/// `POST /__mock/s/{id}/faults` with `[FaultRule, ...]`: appended after the rules still pending.
pub(crate) async fn add_faults(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let scenario = scenario(&state, &id)?;
    let rules = parse::<Vec<FaultRule>>(&body, "[]")?;
    for rule in &rules {
        rule.validate().map_err(bad_request)?;
    }
    scenario.add_faults(rules);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /__mock/s/{id}/runs`: every run the scenario still keeps, oldest first, as GET shows it.
pub(crate) async fn runs(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ControlError> {
    let scenario = scenario(&state, &id)?;
    let host = host(&headers);
    let mut items = Vec::new();
    for run in scenario.runs() {
        items.push(run.to_json(&state, &host, None, None).await);
    }
    Ok(Json(json!({"items": Value::Array(items)})).into_response())
}

/// `GET /__mock/s/{id}/callbacks`: every callback attempt of the scenario, oldest first, with
/// the headers and the body exactly as sent, and how many deliveries are not finished.
pub(crate) async fn callbacks(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ControlError> {
    let scenario = scenario(&state, &id)?;
    let body = json!({"attempts": scenario.attempts(), "pending": scenario.pending_deliveries()});
    Ok(Json(body).into_response())
}

/// `DELETE /__mock/s/{id}`: forgets the scenario, its runs and its pending callback deliveries.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ControlError> {
    match state.scenarios.remove(&id) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ControlError(
            StatusCode::NOT_FOUND,
            format!("unknown scenario {id:?}"),
        )),
        Err(message) => Err(bad_request(message)),
    }
}
