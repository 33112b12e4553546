//! The mock runs API: routing, auth, validation, idempotency, search, asset uploads, and fault
//! injection.

use std::{
    collections::BTreeMap,
    io,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{ConnectInfo, Query, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    assets::{self, Confirmation, Presigned, StoreRefused, MAX_ASSET_BYTES},
    callbacks,
    imaging::parse_aspect_ratio,
    run::{rfc3339, Phase, Run, KONTEXT},
    scenario::{body_hash, Action, Claim, Envelope, Kind, LogEntry, Replay, Scenario},
    AppState,
};
use crate::conn::ConnHandle;

/// Largest request body accepted (inline `data:` images make creates big).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// An upload's body is read (and past its declared size, discarded) up to this, so that a body
/// a little too long still gets its 400 rather than a reset.
const UPLOAD_DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// A hung request is cut after this long, so forgotten ones do not pile up.
const HANG_LIMIT: Duration = Duration::from_secs(300);
const REQUEST_ID: &str = "x-request-id";
/// Runflow's proxy's default body cap (32 KiB), for `"runflow_proxy": true`.
const OFFICIAL_PROXY_MAX_BODY: usize = 32 * 1024;
/// How long a `truncate` fault waits between the half body and the cut.
const TRUNCATE_FLUSH: Duration = Duration::from_millis(50);
/// Request headers worth recording in the log (a cookie only as present: a proxy in front must
/// drop the visitor's, and the log shows whether it did).
const LOGGED_HEADERS: [&str; 5] = [
    "authorization",
    "cookie",
    "idempotency-key",
    "content-type",
    "x-organization-id",
];

/// `/api/runflow/v1/...`: the default scenario, as the API looks behind a same-origin proxy.
pub(crate) async fn default_scenario(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req
        .uri()
        .path()
        .trim_start_matches("/api/runflow")
        .to_string();
    handle(state, "default", path, req).await
}

/// `/__mock/s/{id}/v1/...`: the same API in an isolated scenario.
pub(crate) async fn named_scenario(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let rest = req.uri().path().trim_start_matches("/__mock/s/");
    let (id, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (id, path) = (
        percent_decode_str(id).decode_utf8_lossy().into_owned(),
        path.to_string(),
    );
    handle(state, &id, path, req).await
}

/// What a request asks the API for.
enum Route {
    Create { model: String },
    Get { id: String },
    Search,
    Health,
    UploadCreate,
    UploadPut { asset_id: String },
    UploadConfirm { asset_id: String },
    CallbackSecret,
    CallbackHistory { id: String },
    CallbackRedelivery { id: String },
    Other,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["v1", "health"]) => Route::Health,
            (&Method::GET, ["v1", "runs"]) => Route::Search,
            (&Method::GET, ["v1", "runs", id]) => Route::Get { id: id.to_string() },
            (&Method::POST, ["v1", "callback-secrets"]) => Route::CallbackSecret,
            (&Method::GET, ["v1", "runs", id, "callback"]) => {
                Route::CallbackHistory { id: id.to_string() }
            }
            (&Method::POST, ["v1", "runs", id, "callback-redeliveries"]) => {
                Route::CallbackRedelivery { id: id.to_string() }
            }
            (&Method::POST, ["v1", "asset-uploads"]) => Route::UploadCreate,
            (&Method::POST, ["v1", "asset-uploads", id, "confirmations"]) => Route::UploadConfirm {
                asset_id: percent_decode_str(id).decode_utf8_lossy().into_owned(),
            },
            // The presigned upload URL, outside `/v1/`.
            (&Method::PUT, ["uploads", id]) => Route::UploadPut {
                asset_id: percent_decode_str(id).decode_utf8_lossy().into_owned(),
            },
            (&Method::POST, ["v1", "models", model @ .., "runs"])
                if !model.is_empty() && model.iter().all(|s| !s.is_empty()) =>
            {
                let model: Vec<_> = model
                    .iter()
                    .map(|s| percent_decode_str(s).decode_utf8_lossy())
                    .collect();
                Route::Create {
                    model: model.join("/"),
                }
            }
            _ => Route::Other,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Route::Create { .. } => Kind::Create,
            Route::Get { .. } => Kind::Get,
            Route::Search => Kind::Search,
            Route::Health => Kind::Health,
            Route::UploadCreate => Kind::UploadCreate,
            Route::UploadPut { .. } => Kind::UploadPut,
            Route::UploadConfirm { .. } => Kind::UploadConfirm,
            Route::CallbackSecret => Kind::CallbackSecret,
            Route::CallbackHistory { .. } => Kind::CallbackHistory,
            Route::CallbackRedelivery { .. } => Kind::CallbackRedelivery,
            Route::Other => Kind::Other,
        }
    }
}

/// The host the client reached us by, for absolute output URLs.
pub(crate) fn host(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.unwrap_or("127.0.0.1").to_string()
}

async fn handle(state: Arc<AppState>, scenario_id: &str, path: String, req: Request) -> Response {
    let Some(scenario) = state.scenarios.get(scenario_id) else {
        let error = json!({"error": format!("unknown scenario {scenario_id:?}")});
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    };
    let conn = req
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, &path);
    // Read the whole body before answering anything: closing a socket with unread input makes
    // the kernel send a reset, and the log wants the body anyway.
    let (body, logged_body) = match &route {
        Route::UploadPut { asset_id } => {
            // Up to one byte more than declared: enough to tell a body that is too long.
            let keep = state
                .assets
                .get(asset_id)
                .map_or(0, |a| a.size_bytes.saturating_add(1));
            let (bytes, received) = read_upload(body, keep).await;
            (Some(bytes), json!({ "bytes": received }))
        }
        _ => {
            let body = axum::body::to_bytes(body, MAX_BODY).await.ok();
            let logged = body
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .map(elide_data_uris)
                .unwrap_or_default();
            (body, logged)
        }
    };
    let request_id = state.next_request_id();
    let headers = LOGGED_HEADERS
        .iter()
        .filter_map(|&name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            let value = if name == "authorization" {
                redact_authorization(value)
            } else if name == "cookie" {
                "[present]".to_string()
            } else {
                value.to_string()
            };
            Some((name, value))
        })
        .collect::<BTreeMap<_, _>>();
    let settings = scenario.settings.clone();
    // Runflow's proxy, when the scenario puts it in front, refuses some calls itself: those
    // never reach the API, so no fault fires on them.
    let proxy_refusal = settings
        .runflow_proxy
        .then(|| official_proxy_refusal(&parts, &route, body.as_ref()))
        .flatten();
    let (seq, fault) = scenario.begin(
        LogEntry {
            seq: 0,
            at_ms: unix_ms(SystemTime::now()),
            request_id: request_id.clone(),
            method: parts.method.to_string(),
            path,
            query: parts.uri.query().map(str::to_string),
            kind: route.kind(),
            headers,
            body: logged_body,
            status: None,
            fault: None,
        },
        proxy_refusal.is_none(),
    );
    let behind_proxy = settings.runflow_proxy && !matches!(route, Route::UploadPut { .. });
    let request = Api {
        state,
        scenario_id: scenario_id.to_string(),
        scenario: scenario.clone(),
        parts,
        body,
        route,
    };
    let mut response = if let Some(refusal) = proxy_refusal {
        refusal
    } else {
        match fault {
            Some(Action::Drop | Action::CreateThenDrop) if behind_proxy => {
                if matches!(fault, Some(Action::CreateThenDrop)) {
                    drop(request.answer(None).await);
                }
                upstream_unavailable()
            }
            Some(Action::Error {
                status,
                code,
                message,
                retry_after,
                request_id,
            }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = if let Route::UploadPut { .. } = request.route {
                    // The PUT goes to storage, not the API: its errors are S3's.
                    let code = code.unwrap_or_else(|| s3_default_code(status).into());
                    assets::s3_error(
                        status,
                        &code,
                        &message.unwrap_or_else(|| default_message(status)),
                    )
                } else {
                    let code = code.unwrap_or_else(|| default_code(status).into());
                    let message = message.unwrap_or_else(|| default_message(status));
                    request.error(status, &code, &message, None)
                };
                let headers = [
                    (header::RETRY_AFTER, retry_after),
                    (header::HeaderName::from_static(REQUEST_ID), request_id),
                ];
                for (name, value) in headers {
                    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        response.headers_mut().insert(name, value);
                    }
                }
                response
            }
            Some(Action::Raw {
                status,
                content_type,
                body,
            }) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                if let Some(value) = content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
            Some(Action::Drop) => return drop_connection(conn),
            Some(Action::Hang) => return hang(conn).await,
            Some(Action::Huge { bytes, status }) => huge(bytes, status),
            Some(Action::CreateThenError { status }) => {
                drop(request.answer(None).await);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let message = default_message(status);
                if let Route::UploadPut { .. } = request.route {
                    assets::s3_error(status, s3_default_code(status), &message)
                } else {
                    request.error(status, default_code(status), &message, None)
                }
            }
            Some(Action::Truncate) => truncate(request.answer(None).await).await,
            fault => {
                let status_override = match &fault {
                    Some(Action::Status { status_code }) => Some(status_code.as_str()),
                    _ => None,
                };
                let response = request.answer(status_override).await;
                match fault {
                    Some(Action::CreateThenDrop) => return drop_connection(conn),
                    Some(Action::CreateThenHang) => return hang(conn).await,
                    Some(Action::Delay { ms }) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    _ => {}
                }
                response
            }
        }
    };
    // Only reached when the response is really sent; dropped and hung requests keep `null`.
    scenario.finish(seq, response.status().as_u16());
    if behind_proxy {
        // Runflow's proxy copies back `Content-Type` only (the length is the framing's).
        let headers = response.headers_mut();
        let kept: Vec<_> = [header::CONTENT_TYPE, header::CONTENT_LENGTH]
            .into_iter()
            .filter_map(|name| Some((name.clone(), headers.get(&name)?.clone())))
            .collect();
        headers.clear();
        headers.extend(kept);
    } else if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().entry(REQUEST_ID).or_insert(value);
    }
    response
}

/// An `Authorization` value as the log shows it: its scheme, never its credentials (the control
/// API is readable by every local page), so a test still sees whether one was sent.
fn redact_authorization(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => {
            format!("{scheme} [redacted]")
        }
        _ => "[redacted]".into(),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Runflow's proxy's refusal of a call it would not forward, or `None` for one it forwards: it
/// forwards no search and no path but the client's, takes only UUID run ids, takes only JSON
/// POSTs and caps their bodies. The presigned PUT goes to storage, never through it.
fn official_proxy_refusal(parts: &Parts, route: &Route, body: Option<&Bytes>) -> Option<Response> {
    let refuse = |status: StatusCode, body: Value| Some((status, Json(body)).into_response());
    let not_allowed = || {
        let body = json!({"error": "Path not allowed", "code": "path_not_allowed"});
        refuse(StatusCode::FORBIDDEN, body)
    };
    match route {
        Route::UploadPut { .. } => return None,
        // It forwards none of the callback calls either: a server makes those with its key.
        Route::Search
        | Route::Other
        | Route::CallbackSecret
        | Route::CallbackHistory { .. }
        | Route::CallbackRedelivery { .. } => return not_allowed(),
        Route::Get { id } if !is_uuid(id) => return not_allowed(),
        _ => {}
    }
    if parts.method != Method::POST {
        return None;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let json = content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default();
        essence.trim().eq_ignore_ascii_case("application/json")
    });
    if !json {
        let body = json!({"error": "Content-Type must be application/json"});
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, body);
    }
    if body.is_none_or(|b| b.len() > OFFICIAL_PROXY_MAX_BODY) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "Payload too large"}),
        );
    }
    None
}

/// A hyphenated UUID, the only run id Runflow's proxy forwards.
fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// What Runflow's proxy answers when the API did not (a dropped connection).
fn upstream_unavailable() -> Response {
    let body = json!({"error": "Upstream unavailable"});
    (StatusCode::BAD_GATEWAY, Json(body)).into_response()
}

/// A `huge` fault's answer: `{"padding":"xxx..."}`, exactly `bytes` long, streamed from one
/// static block of padding rather than built in memory.
fn huge(bytes: u64, status: u16) -> Response {
    const HEAD: &[u8] = b"{\"padding\":\"";
    const TAIL: &[u8] = b"\"}";
    static PADDING: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let mut left = bytes.saturating_sub((HEAD.len() + TAIL.len()) as u64);
    let padding = futures_util::stream::iter(std::iter::from_fn(move || {
        let take = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(PADDING.len());
        left -= take as u64;
        (take > 0).then(|| Bytes::from_static(PADDING.get(..take).unwrap_or_default()))
    }));
    let chunks = futures_util::stream::once(std::future::ready(Bytes::from_static(HEAD)))
        .chain(padding)
        .chain(futures_util::stream::once(std::future::ready(
            Bytes::from_static(TAIL),
        )))
        .map(Ok::<_, io::Error>);
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
    response
}

/// A `truncate` fault's answer: `answer`'s status and headers with the `Content-Length` of its
/// whole body, then half the body, then a failed body, which makes hyper close the connection.
async fn truncate(answer: Response) -> Response {
    let (parts, body) = answer.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let half = body.slice(..body.len() / 2);
    let length = body.len();
    let cut = futures_util::stream::once(std::future::ready(Ok(half))).chain(
        futures_util::stream::once(async {
            // A moment for hyper to flush the half before the failure closes the connection.
            tokio::time::sleep(TRUNCATE_FLUSH).await;
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "body cut short by a mock fault",
            ))
        }),
    );
    let mut response = Response::from_parts(parts, Body::from_stream(cut));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// Reads an upload's body, keeping its first `keep` bytes; also returns how many arrived in all.
/// Bytes past `keep` are read and thrown away rather than buffered (up to `UPLOAD_DRAIN_LIMIT`).
/// A body cut short by the client ends the read: its length then shows it incomplete.
async fn read_upload(body: Body, keep: u64) -> (Bytes, u64) {
    // Sized once from Content-Length (bounded by `keep`) rather than grown by doubling.
    let expected = body.size_hint().lower();
    let mut kept = Vec::with_capacity(usize::try_from(expected.min(keep)).unwrap_or(0));
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        let room = keep.saturating_sub(received);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
        kept.extend_from_slice(&chunk[..take]);
        received += chunk.len() as u64;
        if received > UPLOAD_DRAIN_LIMIT {
            break;
        }
    }
    (Bytes::from(kept), received)
}

/// Cuts the connection with no response (see `conn`). Served without our listener (as in
/// `oneshot` tests) there is no connection to cut, so the body fails instead.
fn drop_connection(conn: Option<ConnHandle>) -> Response {
    if let Some(conn) = conn {
        conn.kill();
    }
    let failing = futures_util::stream::once(std::future::ready(Err::<Bytes, _>(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by a mock fault",
    ))));
    Response::new(Body::from_stream(failing))
}

async fn hang(conn: Option<ConnHandle>) -> Response {
    tokio::time::sleep(HANG_LIMIT).await;
    drop_connection(conn)
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        402 => "INSUFFICIENT_CREDIT",
        403 => "PERMISSION_DENIED",
        404 => "RUN_NOT_FOUND",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        422 => "VALIDATION_ERROR",
        429 => "RATE_LIMITED",
        502 => "BAD_GATEWAY",
        503 => "MODEL_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        500..=599 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// The code S3 would send with `status`, for error faults on an upload's PUT.
fn s3_default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "InvalidRequest",
        403 => "AccessDenied",
        404 => "NoSuchUpload",
        500 => "InternalError",
        503 => "SlowDown",
        _ => default_code(status),
    }
}

fn default_message(status: StatusCode) -> String {
    match status.as_u16() {
        429 => "Too many requests, slow down".into(),
        503 => "The model is temporarily unavailable".into(),
        _ => format!("Mock error: {status}"),
    }
}

/// One field-level validation problem.
struct FieldError {
    field: &'static str,
    message: &'static str,
}

/// One mock API request, once logged and past its fault.
struct Api {
    state: Arc<AppState>,
    scenario_id: String,
    scenario: Arc<Scenario>,
    parts: Parts,
    /// `None` when the body was over `MAX_BODY` (or the client stopped sending it); for an
    /// upload's PUT, at most one byte more than the asset's declared size.
    body: Option<Bytes>,
    route: Route,
}

impl Api {
    /// An error in the scenario's envelope.
    fn error(
        &self,
        status: StatusCode,
        code: &str,
        message: &str,
        errors: Option<Vec<FieldError>>,
    ) -> Response {
        let errors = errors.map(|errors| {
            errors
                .iter()
                .map(|e| json!({"field": e.field, "message": e.message}))
                .collect::<Vec<_>>()
        });
        let body = match self.scenario.settings.error_envelope {
            Envelope::Flat => json!({"code": code, "message": message, "errors": errors}),
            Envelope::Nested => json!({"error": {"code": code, "message": message}}),
            Envelope::Proxy => json!({"error": message, "code": code}),
        };
        (status, Json(body)).into_response()
    }

    fn invalid(&self, errors: Vec<FieldError>) -> Response {
        let message = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "The request has invalid fields".into(),
        };
        self.error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            &message,
            Some(errors),
        )
    }

    async fn answer(&self, status_override: Option<&str>) -> Response {
        if let (Route::UploadPut { asset_id }, Some(body)) = (&self.route, &self.body) {
            // Presigned: none of the API's auth, body or envelope rules apply.
            return self.upload_put(asset_id, body);
        }
        let settings = &self.scenario.settings;
        if matches!(self.route, Route::Search) && !settings.search {
            // Runflow's proxy forwards no search: its refusal has its own fixed shape.
            let body = json!({"error": "Path not allowed", "code": "path_not_allowed"});
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
        if let Err(message) = self.check_auth() {
            return self.error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message, None);
        }
        let Some(body) = &self.body else {
            return self.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "Request body too large",
                None,
            );
        };
        match &self.route {
            Route::Create { model } => self.create(model, body).await,
            Route::Get { id } => match self.scenario.run(id) {
                Some(run) => Json(
                    run.to_json(
                        &self.state,
                        &host(&self.parts.headers),
                        None,
                        status_override,
                    )
                    .await,
                )
                .into_response(),
                None => self.error(
                    StatusCode::NOT_FOUND,
                    "RUN_NOT_FOUND",
                    &format!("Run {id} not found"),
                    None,
                ),
            },
            Route::Search => self.search().await,
            Route::Health => Json(json!({"status": "ok"})).into_response(),
            Route::UploadCreate => self.upload_create(body),
            Route::UploadConfirm { asset_id } => self.upload_confirm(asset_id, body),
            Route::CallbackSecret => self.create_secret(body),
            Route::CallbackHistory { id } => self.callback_history(id),
            Route::CallbackRedelivery { id } => self.redeliver(id, body),
            Route::UploadPut { .. } | Route::Other => {
                self.error(StatusCode::NOT_FOUND, "NOT_FOUND", "No such endpoint", None)
            }
        }
    }

    fn check_auth(&self) -> Result<(), &'static str> {
        let sent = self.parts.headers.get(header::AUTHORIZATION);
        if let Some(key) = &self.scenario.settings.api_key {
            let expected = format!("Bearer {key}");
            return match sent {
                Some(value) if value.as_bytes() == expected.as_bytes() => Ok(()),
                Some(_) => Err("Invalid API key"),
                None => Err("Missing API key: send Authorization: Bearer rf_..."),
            };
        }
        match sent {
            None if self.scenario.settings.require_auth => {
                Err("Missing API key: send Authorization: Bearer rf_...")
            }
            None => Ok(()),
            Some(value) => {
                let key = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer rf_"));
                match key {
                    Some(rest)
                        if !rest.is_empty()
                            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                    {
                        Ok(())
                    }
                    _ => Err("Invalid API key"),
                }
            }
        }
    }

    /// A mutation's body: JSON (415 otherwise) holding an object (400 otherwise). The refusal is
    /// boxed: a `Response` is large, and the `Ok` path is the common one.
    fn json_object(&self, body: &Bytes) -> Result<Map<String, Value>, Box<Response>> {
        let content_type = self
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        }) {
            let message = "Content-Type must be application/json";
            return Err(Box::new(self.error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                message,
                None,
            )));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(fields),
            _ => {
                let message = "The request body must be a JSON object";
                Err(Box::new(self.error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    message,
                    None,
                )))
            }
        }
    }

    async fn create(&self, model: &str, body: &Bytes) -> Response {
        let fields = match self.json_object(body) {
            Ok(fields) => fields,
            Err(response) => return *response,
        };
        let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
        let mut errors = Vec::new();
        let input = match field("input") {
            Some(Value::Object(input)) => input.clone(),
            _ => {
                errors.push(FieldError {
                    field: "input",
                    message: "input must be an object",
                });
                Map::new()
            }
        };
        let client_ref = match field("client_ref") {
            None => None,
            Some(Value::String(s)) if s.chars().count() <= 255 => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError {
                    field: "client_ref",
                    message: "client_ref must be a string of at most 255 characters",
                });
                None
            }
        };
        let names_callback = fields.contains_key("callback_url");
        let callback_url = match field("callback_url") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError {
                    field: "callback_url",
                    message: "callback_url must be a URL string or null",
                });
                None
            }
        };
        let metadata = match field("metadata") {
            None => Value::Null,
            Some(m @ Value::Object(_)) => m.clone(),
            Some(_) => {
                errors.push(FieldError {
                    field: "metadata",
                    message: "metadata must be an object or null",
                });
                Value::Null
            }
        };
        if model == KONTEXT {
            errors.extend(validate_kontext(&input));
        }
        if !errors.is_empty() {
            return self.invalid(errors);
        }
        // Runflow's proxy drops the header; a scenario may also ignore it as the API may.
        let honoured = self.scenario.settings.honours_idempotency_keys();
        let key = self
            .parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|_| honoured);
        let reservation = match key {
            None => None,
            Some(key) => {
                let hash = body_hash(&Value::Object(fields));
                match self.scenario.claim(model, key, hash) {
                    Claim::Reserved(reservation) => Some(reservation),
                    Claim::Replay(replay) => {
                        let status =
                            StatusCode::from_u16(replay.status).unwrap_or(StatusCode::CREATED);
                        return (status, Json(replay.response)).into_response();
                    }
                    Claim::Conflict => {
                        let message =
                            "This Idempotency-Key was already used with a different request body";
                        return self.error(
                            StatusCode::CONFLICT,
                            "IDEMPOTENCY_KEY_REUSED",
                            message,
                            None,
                        );
                    }
                    Claim::InFlight => {
                        let message = "A request with this Idempotency-Key is still being processed; retry shortly";
                        return self.error(
                            StatusCode::CONFLICT,
                            "IDEMPOTENCY_KEY_IN_USE",
                            message,
                            None,
                        );
                    }
                }
            }
        };
        // As the proxy fills it: only where the create has no `callback_url` member at all.
        let callback_url = callback_url.or_else(|| {
            (self.scenario_id == "default" && !names_callback)
                .then(|| self.state.default_callback_url.clone())
                .flatten()
        });
        let settings = self.scenario.settings.clone();
        let run = Arc::new(Run::new(
            model.to_string(),
            input,
            metadata,
            client_ref,
            callback_url,
            settings,
            host(&self.parts.headers),
        ));
        self.scenario.add_run(run.clone());
        callbacks::schedule(&self.state, &self.scenario, &run);
        let response = run
            .to_json(
                &self.state,
                &host(&self.parts.headers),
                Some(Phase::Queued),
                None,
            )
            .await;
        if let Some(reservation) = reservation {
            reservation.complete(Replay {
                status: StatusCode::CREATED.as_u16(),
                response: response.clone(),
            });
        }
        (StatusCode::CREATED, Json(response)).into_response()
    }

    /// The refusal of a body that is neither blank nor a JSON object (`{}`).
    fn unless_blank_or_object(&self, body: &Bytes) -> Option<Response> {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if blank || matches!(serde_json::from_slice(body), Ok(Value::Object(_))) {
            return None;
        }
        let message = "The request body must be a JSON object";
        Some(self.error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, None))
    }

    /// `POST /v1/callback-secrets`: a new signing secret, shown this once; the newest signs.
    fn create_secret(&self, body: &Bytes) -> Response {
        if let Some(refusal) = self.unless_blank_or_object(body) {
            return refusal;
        }
        let secret = self.scenario.create_secret();
        (StatusCode::CREATED, Json(secret.created_json())).into_response()
    }

    fn run_not_found(&self, id: &str) -> Response {
        self.error(
            StatusCode::NOT_FOUND,
            "RUN_NOT_FOUND",
            &format!("Run {id} not found"),
            None,
        )
    }

    /// `GET /v1/runs/{id}/callback`: every delivery attempt for the run, oldest first.
    fn callback_history(&self, id: &str) -> Response {
        let Some(run) = self.scenario.run(id) else {
            return self.run_not_found(id);
        };
        let attempts: Vec<_> = self
            .scenario
            .attempts()
            .iter()
            .filter(|a| a.run_id == run.id)
            .map(callbacks::Attempt::public)
            .collect();
        let body =
            json!({"run_id": run.id, "callback_url": run.callback_url, "attempts": attempts});
        Json(body).into_response()
    }

    /// `POST /v1/runs/{id}/callback-redeliveries`: delivers the ended run's callback again, with
    /// the payload rebuilt.
    fn redeliver(&self, id: &str, body: &Bytes) -> Response {
        if let Some(refusal) = self.unless_blank_or_object(body) {
            return refusal;
        }
        let Some(run) = self.scenario.run(id) else {
            return self.run_not_found(id);
        };
        if !run.ended() {
            let message = "The run has not ended yet: its callback is sent when it does";
            return self.error(StatusCode::CONFLICT, "RUN_NOT_TERMINAL", message, None);
        }
        let Some(delivery) = callbacks::redeliver(&self.state, &self.scenario, &run) else {
            let message = "This run has no callback_url: there is nothing to redeliver";
            return self.error(StatusCode::CONFLICT, "NO_CALLBACK_URL", message, None);
        };
        let body = json!({"run_id": run.id, "delivery": delivery});
        (StatusCode::ACCEPTED, Json(body)).into_response()
    }

    /// Step 1 of an upload: records the asset and hands out its presigned PUT URL.
    fn upload_create(&self, body: &Bytes) -> Response {
        let fields = match self.json_object(body) {
            Ok(fields) => fields,
            Err(response) => return *response,
        };
        let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
        let mut errors = Vec::new();
        let filename = match field("filename") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => s.clone(),
            _ => {
                errors.push(FieldError {
                    field: "filename",
                    message: "filename must be a non-empty string of at most 255 characters",
                });
                String::new()
            }
        };
        let mime_type = match field("mime_type") {
            Some(Value::String(s))
                if s.len() > 6 && s.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("image/")) =>
            {
                s.clone()
            }
            _ => {
                errors.push(FieldError {
                    field: "mime_type",
                    message: "mime_type must be an image type such as image/png",
                });
                String::new()
            }
        };
        let size_bytes = match field("size_bytes").and_then(Value::as_u64) {
            Some(n @ 1..=MAX_ASSET_BYTES) => n,
            _ => {
                errors.push(FieldError {
                    field: "size_bytes",
                    message: "size_bytes must be an integer from 1 to 52428800",
                });
                0
            }
        };
        if !errors.is_empty() {
            return self.invalid(errors);
        }
        let ttl = self.scenario.settings.upload_ttl;
        let assets = &self.state.assets;
        let asset = assets.create(&self.scenario_id, filename, mime_type, size_bytes, ttl);
        let body = json!({
            "asset_id": asset.id,
            "upload_url": assets.upload_url(&host(&self.parts.headers), &asset),
            "expires_at": rfc3339(asset.upload_deadline),
        });
        (StatusCode::CREATED, Json(body)).into_response()
    }

    /// Step 2: the PUT to the presigned URL, answered as S3 would.
    fn upload_put(&self, asset_id: &str, body: &Bytes) -> Response {
        use assets::s3_error;
        let headers = &self.parts.headers;
        if headers.contains_key(header::AUTHORIZATION) {
            let message = "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified";
            return s3_error(StatusCode::BAD_REQUEST, "InvalidArgument", message);
        }
        let query = Query::<Presigned>::try_from_uri(&self.parts.uri).ok();
        let Some((expires, signature)) =
            query.and_then(|Query(q)| Some((q.expires?, q.signature?)))
        else {
            return assets::signature_missing();
        };
        let store = &self.state.assets;
        if signature != store.sign_upload(&self.scenario_id, asset_id, expires) {
            return assets::signature_mismatch();
        }
        let Some(asset) = store.get(asset_id) else {
            let message = "The upload no longer exists: the mock forgot it to make room";
            return s3_error(StatusCode::NOT_FOUND, "NoSuchUpload", message);
        };
        if SystemTime::now() > asset.upload_deadline {
            return assets::request_expired();
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(|ct| ct.trim().eq_ignore_ascii_case(&asset.mime_type)) {
            let message = format!(
                "Content-Type must be {}, as declared when the upload was created",
                asset.mime_type
            );
            return s3_error(StatusCode::BAD_REQUEST, "InvalidArgument", &message);
        }
        let length = body.len() as u64;
        if length < asset.size_bytes {
            let message = "You did not provide the number of bytes declared in size_bytes";
            return s3_error(StatusCode::BAD_REQUEST, "IncompleteBody", message);
        }
        if length > asset.size_bytes {
            let message = "Your upload exceeds the size_bytes declared when it was created";
            return s3_error(StatusCode::BAD_REQUEST, "EntityTooLarge", message);
        }
        let etag = format!("\"{:016x}\"", body_digest(body));
        match store.store(asset_id, body.clone()) {
            Ok(()) => (StatusCode::OK, [(header::ETAG, etag)]).into_response(),
            Err(StoreRefused::Gone) => {
                let message = "The upload no longer exists: the mock forgot it to make room";
                s3_error(StatusCode::NOT_FOUND, "NoSuchUpload", message)
            }
            Err(StoreRefused::Confirmed) => {
                let message = "This upload was confirmed; its file can no longer change";
                s3_error(StatusCode::CONFLICT, "InvalidRequest", message)
            }
        }
    }

    /// Step 3: turns an uploaded file into an asset whose URL a run can take as `image_url`.
    fn upload_confirm(&self, asset_id: &str, body: &Bytes) -> Response {
        // `{}` is the documented body; an empty one is accepted too.
        let blank = body.iter().all(u8::is_ascii_whitespace);
        if !blank && !matches!(serde_json::from_slice(body), Ok(Value::Object(_))) {
            let message = "The request body must be a JSON object";
            return self.error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, None);
        }
        match self.state.assets.confirm(&self.scenario_id, asset_id) {
            Confirmation::Unknown => self.error(
                StatusCode::NOT_FOUND,
                "ASSET_NOT_FOUND",
                &format!("Asset {asset_id} not found"),
                None,
            ),
            Confirmation::Incomplete => self.error(
                StatusCode::CONFLICT,
                "UPLOAD_INCOMPLETE",
                "The file has not been uploaded to upload_url yet",
                None,
            ),
            Confirmation::Done(asset) => {
                let url = self
                    .state
                    .assets
                    .download_url(&host(&self.parts.headers), &asset);
                let body = json!({
                    "id": asset.id,
                    "url": url,
                    "mime_type": asset.mime_type,
                    "size_bytes": asset.size_bytes,
                    "filename": asset.filename,
                    "created_at": rfc3339(asset.created_at),
                });
                (StatusCode::CREATED, Json(body)).into_response()
            }
        }
    }

    async fn search(&self) -> Response {
        #[derive(Deserialize)]
        struct Params {
            q: Option<String>,
            limit: Option<String>,
        }
        let bad = |message: &str| self.error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message, None);
        let Ok(Query(params)) = Query::<Params>::try_from_uri(&self.parts.uri) else {
            return bad("Malformed query string");
        };
        let limit = match params.limit.as_deref().map(str::parse::<usize>) {
            None => 20,
            Some(Ok(n @ 1..=100)) => n,
            Some(_) => return bad("limit must be an integer from 1 to 100"),
        };
        let wanted = match params.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) => match q.strip_prefix("client_ref:") {
                Some(value) => match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(quoted) => Some(unescape(quoted)),
                    None => Some(value.to_string()),
                },
                None => return bad("The mock supports only the filter client_ref:<value>"),
            },
        };
        let mut matching: Vec<_> = self
            .scenario
            .runs()
            .into_iter()
            .filter(|run| wanted.is_none() || run.client_ref == wanted)
            .collect();
        matching.reverse(); // newest first
        let host = host(&self.parts.headers);
        let mut items = Vec::new();
        for run in matching.iter().take(limit) {
            items.push(run.to_json(&self.state, &host, None, None).await);
        }
        Json(json!({"items": items, "total": matching.len()})).into_response()
    }
}

/// A quoted search value's text: `\` takes the next character as it is (`\"` a quote, `\\` a
/// backslash); a lone trailing `\` is dropped.
fn unescape(quoted: &str) -> String {
    let mut text = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.extend(chars.next()),
            c => text.push(c),
        }
    }
    text
}

/// An ETag for an uploaded file: any digest of its bytes does (SipHash with fixed keys).
fn body_digest(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}

/// The longest `data:` header (before the comma) kept in a log marker: real ones are short, and a
/// long one would bring back what the marker is for leaving out.
const DATA_HEADER_MAX: usize = 64;

/// `value` with every `data:` URI string replaced by `"data:image/png;base64,… (N bytes)"`, N
/// being the bytes it carries (decoded when base64): the request log keeps up to `MAX_LOG`
/// entries per scenario, and with the images in them it would hold megabytes per create.
fn elide_data_uris(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::String(text)
                if text
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("data:")) =>
            {
                *text = data_uri_marker(text);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(members) => members.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn data_uri_marker(uri: &str) -> String {
    let Some((header, payload)) = uri
        .split_once(',')
        .filter(|(h, _)| h.len() <= DATA_HEADER_MAX)
    else {
        return format!("data:… ({} bytes)", uri.len());
    };
    let bytes = if header.to_ascii_lowercase().ends_with(";base64") {
        let padding = payload.bytes().rev().take_while(|b| *b == b'=').count();
        (payload.len() / 4 * 3 + (payload.len() % 4).saturating_sub(1)).saturating_sub(padding)
    } else {
        payload.len()
    };
    format!("{header},… ({bytes} bytes)")
}

/// Server-side checks of FLUX Kontext [pro] input, as the real API makes them.
fn validate_kontext(input: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let present = |name: &str| input.get(name).filter(|v| !v.is_null());
    if present("prompt")
        .and_then(Value::as_str)
        .is_none_or(|p| p.trim().is_empty())
    {
        errors.push(FieldError {
            field: "input.prompt",
            message: "prompt is required and must be a non-empty string",
        });
    }
    if present("image_url")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(FieldError {
            field: "input.image_url",
            message: "image_url is required and must be a URL string",
        });
    }
    if present("aspect_ratio").is_some_and(|a| a.as_str().and_then(parse_aspect_ratio).is_none()) {
        errors.push(FieldError {
            field: "input.aspect_ratio",
            message: "aspect_ratio is not a supported ratio",
        });
    }
    if present("num_images").is_some_and(|n| !n.as_u64().is_some_and(|n| (1..=4).contains(&n))) {
        errors.push(FieldError {
            field: "input.num_images",
            message: "num_images must be an integer from 1 to 4",
        });
    }
    if present("output_format").is_some_and(|f| !matches!(f.as_str(), Some("jpeg" | "png"))) {
        errors.push(FieldError {
            field: "input.output_format",
            message: "output_format must be jpeg or png",
        });
    }
    if present("seed").is_some_and(|s| !(s.is_i64() || s.is_u64())) {
        errors.push(FieldError {
            field: "input.seed",
            message: "seed must be an integer",
        });
    }
    if present("guidance_scale")
        .is_some_and(|g| !g.as_f64().is_some_and(|g| (1.0..=20.0).contains(&g)))
    {
        errors.push(FieldError {
            field: "input.guidance_scale",
            message: "guidance_scale must be a number from 1 to 20",
        });
    }
    // A string, as the API documents it (the client turns a number into one): a mock that took
    // the number too would hide a client that stopped converting.
    if present("safety_tolerance")
        .is_some_and(|t| !matches!(t.as_str(), Some("1" | "2" | "3" | "4" | "5" | "6")))
    {
        errors.push(FieldError {
            field: "input.safety_tolerance",
            message: "safety_tolerance must be one of the strings \"1\" to \"6\"",
        });
    }
    for (name, field, message) in [
        (
            "enhance_prompt",
            "input.enhance_prompt",
            "enhance_prompt must be a boolean",
        ),
        (
            "sync_mode",
            "input.sync_mode",
            "sync_mode must be a boolean",
        ),
    ] {
        if present(name).is_some_and(|b| !b.is_boolean()) {
            errors.push(FieldError { field, message });
        }
    }
    errors
}
