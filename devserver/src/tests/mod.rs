//! Tests of the whole app: most through `oneshot`, the connection faults on a real listener.

mod api;
mod callbacks;
mod cases;
mod faults;
mod images;
mod isolation;
mod lifecycle;
mod proxy;
mod redis;
mod relay;
mod uploads;
mod upstream;

use std::{io::Cursor, path::PathBuf, sync::OnceLock};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, Method, Request, StatusCode},
    Router,
};
use base64::Engine;
use http_body_util::BodyExt;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, Config};

pub(crate) const KONTEXT_RUNS: &str = "/v1/models/black-forest-labs/flux-pro/kontext/runs";
const HOST: &str = "127.0.0.1:8080";

/// A fresh app whose WWW_DIR holds `photo.png` (64x48) and `index.html`, PKG_DIR `x_bg.wasm`.
pub(crate) fn test_app() -> Router {
    app(test_config())
}

/// `test_app` with `MOCK_CORS=1`: pages on other origins may call the mock.
pub(crate) fn cors_app() -> Router {
    app(Config {
        mock_cors: true,
        ..test_config()
    })
}

/// The configuration of `test_app`: the fixture directories, runs that finish at once, the mock.
pub(crate) fn test_config() -> Config {
    // One fixture directory per test process: the files never change.
    static FIXTURES: OnceLock<PathBuf> = OnceLock::new();
    let dir = FIXTURES.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("runflow-devserver-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        std::fs::write(dir.join("photo.png"), png(64, 48)).unwrap();
        std::fs::write(dir.join("index.html"), "<h1>demo</h1>").unwrap();
        std::fs::write(dir.join("pkg/x_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
        dir
    });
    Config {
        www_dir: dir.clone(),
        pkg_dir: dir.join("pkg"),
        lifecycle_ms: [0, 0, 0],
        backend: crate::Backend::Mock,
        isolated: false,
        mock_cors: false,
    }
}

/// A PNG with a horizontal gradient, so crops and edits are visible.
pub(crate) fn png(w: u32, h: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

pub(crate) fn data_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A valid Kontext input with a small inline image.
pub(crate) fn kontext_input() -> Value {
    json!({"prompt": "make it teal", "image_url": data_uri(&png(64, 48))})
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub(crate) fn request(method: Method, uri: &str, body: Option<&Value>) -> Request<Body> {
    // As from a local client: the control API answers loopback peers only.
    let peer = crate::conn::ConnHandle::detached(([127, 0, 0, 1], 40000).into());
    let builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", HOST)
        .extension(axum::extract::ConnectInfo(peer));
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub(crate) async fn get(app: &Router, uri: &str) -> Reply {
    send(app, request(Method::GET, uri, None)).await
}

pub(crate) async fn post(app: &Router, uri: &str, body: &Value) -> Reply {
    send(app, request(Method::POST, uri, Some(body))).await
}

/// Creates a scenario and returns its base URL (`/__mock/s/<id>`).
pub(crate) async fn scenario(app: &Router, config: Value) -> String {
    let reply = post(app, "/__mock/scenarios", &config).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(
        body["base_url"],
        format!("/__mock/s/{}", body["id"].as_str().unwrap())
    );
    body["base_url"].as_str().unwrap().to_string()
}

/// Creates a Kontext run in `base` and returns its JSON.
pub(crate) async fn create(app: &Router, base: &str, input: Value) -> Value {
    let reply = post(
        app,
        &format!("{base}{KONTEXT_RUNS}"),
        &json!({"input": input}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

pub(crate) async fn get_run(app: &Router, base: &str, id: &Value) -> Value {
    let reply = get(app, &format!("{base}/v1/runs/{}", id.as_str().unwrap())).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

/// The scenario's request log.
pub(crate) async fn log(app: &Router, base: &str) -> Vec<Value> {
    let reply = get(app, &format!("{base}/log")).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["requests"].as_array().unwrap().clone()
}

/// Fetches an output URL (absolute, on our host) through the app.
pub(crate) async fn fetch_output(app: &Router, url: &str) -> Reply {
    let path = url
        .strip_prefix(&format!("http://{HOST}"))
        .expect("URL on the request's host");
    get(app, path).await
}
