//! Proxy mode on real listeners: the mock (or an echo server) as the upstream, the proxy in front,
//! and a real HTTP client, so peer addresses, streaming and timeouts are the real thing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::Request as AxumRequest,
    http::{request::Parts, HeaderName, HeaderValue},
    response::IntoResponse,
    routing::any,
    Json,
};
use reqwest::header::HeaderMap as ClientHeaders;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::*;
use crate::{
    serve, ApiKey, Backend, ModelAllowlist, ProxyConfig, RateLimit, Refusal, SameOrigin,
    SharedSecret, Upstream,
};

pub(super) const KEY: &str = "rf_test_key_123";

/// Serves `app` on a fresh loopback port for the rest of the test.
async fn listen(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, std::future::pending()));
    addr
}

/// A proxy to `upstream` (a base URL), adjusted by `tweak`.
async fn proxy(upstream: &str, tweak: impl FnOnce(&mut ProxyConfig)) -> String {
    let mut config = ProxyConfig::new(
        ApiKey::new(KEY).unwrap(),
        Upstream::parse(upstream).unwrap(),
    )
    .unwrap();
    tweak(&mut config);
    let app = crate::app(Config {
        backend: Backend::Proxy(Box::new(config)),
        ..test_config()
    });
    format!("http://{}/api/runflow", listen(app).await)
}

/// A proxy to `upstream` configured as the binary is, from environment `settings` (the key and
/// the upstream are filled in): its `host:port`.
pub(super) async fn listen_proxy(upstream: &str, settings: &[(String, String)]) -> String {
    let var = |name: &str| match name {
        "RUNFLOW_API_KEY" => Some(KEY.to_owned()),
        "RUNFLOW_UPSTREAM" => Some(upstream.to_owned()),
        _ => settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()),
    };
    let config = ProxyConfig::from_env(var).unwrap();
    let app = crate::app(Config {
        backend: Backend::Proxy(Box::new(config)),
        ..test_config()
    });
    listen(app).await.to_string()
}

/// The mock on a real port, with a fresh scenario: `(mock origin, scenario base URL)`.
pub(super) async fn mock_upstream(config: Value) -> (String, String) {
    let origin = format!("http://{}", listen(test_app()).await);
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{origin}/__mock/scenarios"))
        .json(&config)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = format!("{origin}{}", created["base_url"].as_str().unwrap());
    (origin, base)
}

pub(super) async fn upstream_log(base: &str) -> Vec<Value> {
    let log: Value = reqwest::get(format!("{base}/log"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["requests"].as_array().unwrap().clone()
}

/// An upstream that answers every call with what it received, and a few headers of its own.
async fn echo_upstream() -> String {
    let echo = any(|req: AxumRequest| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or("?"))))
            .collect();
        let body = json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
        });
        let headers = [
            ("x-ratelimit-remaining", "3"),
            ("runflow-request-id", "rr_1"),
            ("x-request-id", "req_echo"),
            ("set-cookie", "upstream=1"),
            ("server", "echo"),
        ];
        (headers, Json(body)).into_response()
    });
    let app = Router::new().route("/prefix/{*rest}", echo);
    format!("http://{}/prefix", listen(app).await)
}

struct Answer {
    status: StatusCode,
    headers: ClientHeaders,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts the key shows nowhere in what the browser got.
    fn assert_no_key(&self) -> &Self {
        assert!(!self.body.contains(KEY), "key in body: {}", self.body);
        for (name, value) in &self.headers {
            assert!(
                !value.to_str().unwrap_or("").contains(KEY),
                "key in header {name}"
            );
        }
        self
    }
}

async fn call(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn create_body() -> Value {
    json!({"input": kontext_input(), "client_ref": "rk_proxy_1"})
}

#[tokio::test]
async fn the_key_is_injected_upstream_and_never_returned() {
    // require_auth: the mock answers 401 to a call without a key.
    let (_, base) = mock_upstream(json!({"lifecycle_ms": [0, 0, 0], "require_auth": true})).await;
    let api = proxy(&base, |_| {}).await;
    let c = client();

    let created = call(
        c.post(format!("{api}{KONTEXT_RUNS}"))
            .header("authorization", "Bearer rf_browser_key")
            .header("cookie", "session=s3")
            .header("idempotency-key", "idem-42")
            .header("x-organization-id", "org_chosen_by_visitor")
            .json(&create_body()),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.assert_no_key();
    assert!(
        created.header("x-request-id").is_some(),
        "request ids are passed back"
    );
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let id = created.json()["id"].as_str().unwrap().to_string();

    let answers = [
        call(c.get(format!("{api}/v1/runs/{id}"))).await,
        call(c.get(format!("{api}/v1/runs?q=client_ref%3Ark_proxy_1&limit=5"))).await,
        call(c.get(format!("{api}/v1/health"))).await,
        call(c.get(format!("{api}/_backend"))).await,
    ];
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.assert_no_key();
    }
    assert_eq!(answers[1].json()["items"][0]["id"], json!(id));
    let backend = answers[3].json();
    let origin = base.split("/__mock").next().unwrap();
    assert_eq!(backend["backend"], "proxy");
    assert_eq!(backend["upstream"], json!(origin));

    let log = upstream_log(&base).await;
    assert_eq!(log.len(), 4, "{log:?}");
    // require_auth: the mock answered, so each call carried a well-formed key (the log only
    // shows that one was sent).
    for entry in &log {
        assert_eq!(
            entry["headers"]["authorization"],
            json!("Bearer [redacted]")
        );
        assert_eq!(entry["headers"].get("x-organization-id"), None);
    }
    assert_eq!(log[0]["headers"]["idempotency-key"], json!("idem-42"));
    assert_eq!(log[0]["kind"], json!("create"));
    assert_eq!(log[0]["body"]["client_ref"], json!("rk_proxy_1"));
}

#[tokio::test]
async fn only_the_allowed_headers_cross_in_either_direction() {
    let up = echo_upstream().await;
    let org = HeaderValue::from_static("org_of_the_deployment");
    let api = proxy(&up, |config| config.organization_id = Some(org)).await;
    let answer = call(
        client()
            .post(format!("{api}/v1/asset-uploads"))
            .header("authorization", "Bearer rf_browser_key")
            .header("cookie", "session=s3")
            .header("idempotency-key", "idem-7")
            .header("x-organization-id", "org_chosen_by_visitor")
            .header("x-forwarded-for", "6.6.6.6")
            .header("accept", "application/json")
            .json(&json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 10})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.json();
    assert_eq!(seen["path"], json!("/prefix/v1/asset-uploads"));
    let mut names: Vec<&str> = seen["headers"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "idempotency-key",
            "user-agent",
            "x-organization-id"
        ]
    );
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], json!(format!("Bearer {KEY}")));
    assert_eq!(headers["idempotency-key"], json!("idem-7"));
    assert_eq!(headers["x-organization-id"], json!("org_of_the_deployment"));
    assert_eq!(headers["content-type"], json!("application/json"));

    assert_eq!(answer.header("x-ratelimit-remaining"), Some("3"));
    assert_eq!(answer.header("runflow-request-id"), Some("rr_1"));
    assert_eq!(answer.header("x-request-id"), Some("req_echo"));
    assert_eq!(answer.header("set-cookie"), None);
    assert_eq!(answer.header("server"), None);

    // The search goes upstream rebuilt from what was checked.
    let search =
        call(client().get(format!("{api}/v1/runs?limit=5&q=client_ref:%22a%20b%22"))).await;
    let seen = search.json();
    assert_eq!(seen["path"], json!("/prefix/v1/runs"));
    assert_eq!(seen["query"], json!("q=client_ref%3A%22a%20b%22&limit=5"));
}

#[tokio::test]
async fn every_proxy_answer_says_nosniff_and_no_store() {
    let api = proxy(&echo_upstream().await, |_| {}).await;
    let forwarded = call(client().get(format!("{api}/v1/health"))).await;
    let refused = call(client().get(format!("{api}/v1/secrets"))).await;
    assert_eq!(forwarded.status, StatusCode::OK);
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    for answer in [&forwarded, &refused] {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn calls_off_the_allowlist_are_refused_and_never_forwarded() {
    let (_, base) = mock_upstream(json!({})).await;
    let api = proxy(&base, |_| {}).await;
    let c = client();
    let paths = [
        (Method::GET, "/v1/runs"),
        (Method::GET, "/v1/runs?q=status%3Asucceeded"),
        (
            Method::GET,
            "/v1/runs?q=client_ref%3Aa%20OR%20status%3Asucceeded",
        ),
        (Method::GET, "/v1/runs/abc/callback"),
        (Method::POST, "/v1/runs/abc/callback-redeliveries"),
        (Method::POST, "/v1/callback-secrets"),
        (Method::DELETE, "/v1/runs/abc"),
        (
            Method::GET,
            "/v1/models/black-forest-labs/flux-pro/kontext/runs",
        ),
        (Method::POST, "/v1/models/acme%2F..%2Fx/runs"),
        (Method::PUT, "/v1/asset-uploads"),
        (Method::GET, "/v1/runs/..%2F..%2Fadmin"),
        (Method::GET, "/v2/health"),
        (Method::GET, "/"),
        (Method::GET, ""),
    ];
    for (method, path) in paths {
        let answer = call(
            c.request(method.clone(), format!("{api}{path}"))
                .json(&json!({})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            answer.json()["code"],
            json!("path_not_allowed"),
            "{method} {path}"
        );
        assert!(answer.json()["error"].is_string());
    }
    for model in [
        "black-forest-labs/flux-pro",
        "acme/flux",
        "black-forest-labs/flux-pro/kontext/max",
    ] {
        let url = format!("{api}/v1/models/{model}/runs");
        let answer = call(c.post(url).json(&create_body())).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{model}");
        assert_eq!(answer.json()["code"], json!("model_not_allowed"));
    }
    assert_eq!(upstream_log(&base).await, Vec::<Value>::new());

    // `*` opens every model.
    let open = proxy(&base, |config| config.allowed_models = ModelAllowlist::Any).await;
    let answer = call(
        c.post(format!("{open}/v1/models/acme/flux/runs"))
            .json(&create_body()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test]
async fn bodies_over_the_cap_get_413_and_a_1_mib_image_fits() {
    let (_, base) = mock_upstream(json!({"lifecycle_ms": [0, 0, 0]})).await;
    let api = proxy(&base, |_| {}).await;
    let url = format!("{api}{KONTEXT_RUNS}");
    let c = client();

    let image = data_uri(&vec![7u8; 1024 * 1024]);
    let fits = json!({"input": {"prompt": "teal", "image_url": image}});
    let answer = call(c.post(&url).json(&fits)).await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        &answer.body[..200.min(answer.body.len())]
    );

    let over = "x".repeat(crate::DEFAULT_MAX_BODY_BYTES as usize + 1);
    let declared = call(
        c.post(&url)
            .header("content-type", "application/json")
            .body(over.clone()),
    )
    .await;
    // Chunked, so the cap is only found out while streaming.
    let chunks = futures_util::stream::iter(
        over.into_bytes()
            .chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = call(
        c.post(&url)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    for answer in [declared, streamed] {
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let body = answer.json();
        assert_eq!(body["code"], json!("PAYLOAD_TOO_LARGE"));
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("PROXY_MAX_BODY_BYTES"));
        assert_eq!(body["errors"], Value::Null);
    }
    // A create is read whole before it is forwarded (its input is checked), so neither
    // over-cap one left; only the image that fits did.
    assert_eq!(upstream_log(&base).await.len(), 1);

    // Other POSTs stream upstream and are cut as they pass the cap.
    let chunks = futures_util::stream::iter(
        vec![b' '; crate::DEFAULT_MAX_BODY_BYTES as usize + 1]
            .chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = call(
        c.post(format!("{api}/v1/asset-uploads"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    let log = upstream_log(&base).await;
    assert_eq!(log.len(), 2, "the streamed one was cut on its way");
    assert_eq!(log[1]["body"], Value::Null, "the cut body never parsed");
}

#[tokio::test]
async fn each_client_gets_a_token_bucket_and_429_says_when_to_come_back() {
    let (_, base) = mock_upstream(json!({})).await;
    let slow = RateLimit {
        per_second: 0.5,
        burst: 2,
    };
    let api = proxy(&base, |config| config.rate_limit = Some(slow)).await;
    let health = format!("{api}/v1/health");
    for _ in 0..2 {
        assert_eq!(call(client().get(&health)).await.status, StatusCode::OK);
    }
    let limited = call(client().get(&health)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("2"));
    let body = limited.json();
    assert_eq!(body["code"], json!("RATE_LIMITED"));
    assert_eq!(body["errors"], Value::Null);
    assert_eq!(upstream_log(&base).await.len(), 2);

    // Behind a reverse proxy the client is the header's last entry, not the peer.
    let behind = proxy(&base, |config| {
        config.rate_limit = Some(slow);
        config.client_ip_header = Some(HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let from = |ip: &str| {
        client()
            .get(format!("{behind}/v1/health"))
            .header("x-forwarded-for", format!("1.1.1.1, {ip}"))
    };
    for _ in 0..2 {
        assert_eq!(call(from("10.0.0.1")).await.status, StatusCode::OK);
    }
    assert_eq!(
        call(from("10.0.0.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(from("10.0.0.2")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_closed_upstream_port_gives_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let api = proxy(&format!("http://{addr}"), |_| {}).await;
    let answer = call(client().get(format!("{api}/v1/health"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let body = answer.json();
    assert_eq!(body["code"], json!("BAD_GATEWAY"));
    assert_eq!(body["errors"], Value::Null);
    assert!(
        !answer.body.contains(&addr.to_string()),
        "no upstream detail for the browser"
    );
}

#[tokio::test]
async fn a_hung_upstream_gives_504_after_the_timeout() {
    let hang = json!({"faults": [{"on": "get", "action": {"type": "hang"}}]});
    let (_, base) = mock_upstream(hang).await;
    let api = proxy(&base, |config| config.timeout = Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let answer = call(client().get(format!("{api}/v1/runs/some-run"))).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let body = answer.json();
    assert_eq!(body["code"], json!("GATEWAY_TIMEOUT"));
    assert_eq!(body["errors"], Value::Null);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let action =
        json!({"type": "error", "status": 429, "retry_after": "7", "request_id": "req_up"});
    let (_, base) = mock_upstream(json!({"faults": [{"on": "create", "action": action}]})).await;
    let api = proxy(&base, |_| {}).await;
    let answer = call(
        client()
            .post(format!("{api}{KONTEXT_RUNS}"))
            .json(&create_body()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.header("x-request-id"), Some("req_up"));
    assert_eq!(
        answer.json(),
        json!({"code": "RATE_LIMITED", "message": "Too many requests, slow down", "errors": null})
    );
}

#[tokio::test]
async fn the_authenticate_hooks_guard_the_proxy() {
    let (_, base) = mock_upstream(json!({})).await;
    let c = client();

    // The default: same origin.
    let api = proxy(&base, |_| {}).await;
    let host = api
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let health = format!("{api}/v1/health");
    let foreign = call(c.get(&health).header("origin", "https://evil.example")).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(foreign.json()["code"], json!("ORIGIN_NOT_ALLOWED"));
    let same = call(c.get(&health).header("origin", format!("http://{host}"))).await;
    assert_eq!(same.status, StatusCode::OK);
    // DNS rebinding: the attacker's name points at this server, so Host and Origin agree.
    let port = host.rsplit(':').next().unwrap();
    let rebound = call(
        c.get(&health)
            .header("host", format!("evil.example:{port}"))
            .header("origin", format!("http://evil.example:{port}")),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    assert_eq!(
        rebound.json(),
        json!({
            "code": "HOST_NOT_ALLOWED",
            "message": "This proxy does not answer for this host name: add it to PROXY_ALLOWED_HOSTS",
            "errors": null
        })
    );
    let deployed = proxy(&base, |config| {
        let hook = SameOrigin::parse("demo.example").unwrap();
        config.authenticators = vec![Arc::new(hook)];
    })
    .await;
    let health_there = format!("{deployed}/v1/health");
    let public = call(
        c.get(&health_there)
            .header("host", "demo.example")
            .header("origin", "https://demo.example"),
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);
    let loopback = call(c.get(&health_there)).await;
    assert_eq!(loopback.json()["code"], json!("HOST_NOT_ALLOWED"));

    let guarded = proxy(&base, |config| {
        config.authenticators = vec![Arc::new(SharedSecret::new("s3cret"))];
    })
    .await;
    let health = format!("{guarded}/v1/health");
    let without = call(c.get(&health)).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    assert_eq!(without.json()["code"], json!("PROXY_SECRET_REQUIRED"));
    let with = call(c.get(&health).header("x-proxy-secret", "s3cret")).await;
    assert_eq!(with.status, StatusCode::OK);

    let custom = proxy(&base, |config| {
        let hook = |parts: &Parts| match parts.headers.get("x-user") {
            Some(_) => Ok(()),
            None => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "SIGN_IN",
                "Sign in first",
            )),
        };
        config.authenticators = vec![Arc::new(hook)];
    })
    .await;
    let refused = call(c.get(format!("{custom}/v1/health"))).await;
    assert_eq!(
        refused.json(),
        json!({"code": "SIGN_IN", "message": "Sign in first", "errors": null})
    );
    let log = upstream_log(&base).await;
    assert_eq!(log.len(), 3, "only the accepted calls went upstream");
    assert!(log
        .iter()
        .all(|e| e["headers"].get("x-proxy-secret").is_none()));
}

#[tokio::test]
async fn the_static_files_are_still_served_and_the_mock_is_gone() {
    let (_, base) = mock_upstream(json!({})).await;
    let api = proxy(&base, |_| {}).await;
    let origin = api.trim_end_matches("/api/runflow");
    let page = call(client().get(format!("{origin}/index.html"))).await;
    assert_eq!(
        (page.status, page.body.as_str()),
        (StatusCode::OK, "<h1>demo</h1>")
    );
    let wasm = call(client().get(format!("{origin}/pkg/x_bg.wasm"))).await;
    assert_eq!(wasm.status, StatusCode::OK);
    let control = call(client().get(format!("{origin}/__mock/s/default/log"))).await;
    assert_eq!(control.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_mock_says_it_is_the_mock() {
    let reply = get(&test_app(), "/api/runflow/_backend").await;
    assert_eq!(reply.json()["backend"], "mock");
    assert_eq!(reply.json()["upstream"], Value::Null);
}

#[test]
fn the_environment_configures_the_proxy() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let config = ProxyConfig::from_env(vars(&[
        ("RUNFLOW_API_KEY", KEY),
        ("RUNFLOW_UPSTREAM", "http://127.0.0.1:9/__mock/s/x/"),
        ("RUNFLOW_ALLOWED_MODELS", "acme/a, acme/b"),
        ("PROXY_MAX_BODY_BYTES", "1000"),
        ("PROXY_TIMEOUT_MS", "250"),
        ("PROXY_RATE_PER_SEC", "2.5"),
        ("PROXY_CREATES_PER_MINUTE", "3"),
        ("PROXY_MAX_IMAGES_PER_RUN", "1"),
        ("PROXY_CLIENT_IP_HEADER", "X-Real-IP"),
        ("PROXY_SHARED_SECRET", "s3cret"),
        ("PROXY_SAME_ORIGIN", "0"),
    ]))
    .unwrap();
    assert_eq!(config.upstream.origin(), "http://127.0.0.1:9");
    assert_eq!(
        config.allowed_models,
        ModelAllowlist::Only(vec!["acme/a".into(), "acme/b".into()])
    );
    assert_eq!(config.max_body_bytes, 1000);
    assert_eq!(config.timeout, Duration::from_millis(250));
    assert_eq!(
        config.rate_limit,
        Some(RateLimit {
            per_second: 2.5,
            burst: RateLimit::DEFAULT.burst
        })
    );
    assert_eq!(
        config.create_limit,
        Some(RateLimit {
            per_second: 3.0 / 60.0,
            burst: RateLimit::CREATES.burst
        })
    );
    assert_eq!(config.max_images_per_run, 1);
    assert_eq!(
        config.client_ip_header.as_ref().map(|h| h.as_str()),
        Some("x-real-ip")
    );
    let hooks: Vec<&str> = config.authenticators.iter().map(|a| a.name()).collect();
    assert_eq!(hooks, ["shared secret"]);
    let shown = format!("{config:?} {}", config.summary());
    assert!(!shown.contains(KEY) && !shown.contains("s3cret"), "{shown}");

    let defaults = ProxyConfig::from_env(vars(&[("RUNFLOW_API_KEY", KEY)])).unwrap();
    assert_eq!(defaults.max_body_bytes, 1536 * 1024);
    assert_eq!(defaults.rate_limit, Some(RateLimit::DEFAULT));
    assert_eq!(defaults.create_limit, Some(RateLimit::CREATES));
    assert_eq!(defaults.max_images_per_run, 4);
    let hooks: Vec<&str> = defaults.authenticators.iter().map(|a| a.name()).collect();
    assert_eq!(hooks, ["same origin"]);
    let listed = ProxyConfig::from_env(vars(&[
        ("RUNFLOW_API_KEY", KEY),
        ("PROXY_ALLOWED_HOSTS", "demo.example, demo.example:8443"),
    ]));
    assert_eq!(listed.unwrap().authenticators.len(), 1);
    let off = ProxyConfig::from_env(vars(&[
        ("RUNFLOW_API_KEY", KEY),
        ("PROXY_RATE_PER_SEC", "0"),
    ]));
    assert_eq!(off.unwrap().rate_limit, None);
    let no_budget = ProxyConfig::from_env(vars(&[
        ("RUNFLOW_API_KEY", KEY),
        ("PROXY_CREATES_PER_MINUTE", "0"),
    ]));
    assert_eq!(no_budget.unwrap().create_limit, None);

    for bad in [
        &[("RUNFLOW_API_KEY", " ")][..],
        &[("RUNFLOW_API_KEY", KEY), ("RUNFLOW_UPSTREAM", "ftp://x")],
        &[
            ("RUNFLOW_API_KEY", KEY),
            ("RUNFLOW_UPSTREAM", "https://u:p@x"),
        ],
        &[("RUNFLOW_API_KEY", KEY), ("RUNFLOW_ALLOWED_MODELS", ",")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_BURST", "0")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_CREATE_BURST", "0")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_CREATES_PER_MINUTE", "-2")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_MAX_IMAGES_PER_RUN", "5")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_MAX_IMAGES_PER_RUN", "0")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_RATE_PER_SEC", "-1")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_MAX_BODY_BYTES", "big")],
        &[("RUNFLOW_API_KEY", KEY), ("PROXY_SAME_ORIGIN", "maybe")],
        &[
            ("RUNFLOW_API_KEY", KEY),
            ("PROXY_ALLOWED_HOSTS", "https://demo.example"),
        ],
    ] {
        let error = ProxyConfig::from_env(vars(bad)).unwrap_err();
        assert!(!error.contains(KEY), "{error}");
    }
}

/// An upstream that refuses every call with `status`, quoting the Authorization it got (as a
/// careless gateway might), padded with `padding` bytes.
async fn quoting_upstream(status: u16, padding: usize) -> String {
    let quote = any(move |req: AxumRequest| async move {
        let auth = req.headers()["authorization"].to_str().unwrap().to_string();
        let body = json!({"code": "UNAUTHORIZED", "message": format!("Bad credentials: {auth}"), "echo": [auth], "padding": "p".repeat(padding)});
        let status = StatusCode::from_u16(status).unwrap();
        (status, [("x-request-id", "req_q")], Json(body)).into_response()
    });
    let app = Router::new().route("/{*rest}", quote);
    format!("http://{}", listen(app).await)
}

#[tokio::test]
async fn an_upstream_error_body_never_carries_the_key_back() {
    for status in [401u16, 502, 302] {
        let api = proxy(&quoting_upstream(status, 0).await, |_| {}).await;
        let answer = call(client().get(format!("{api}/v1/health"))).await;
        assert_eq!(answer.status.as_u16(), status);
        answer.assert_no_key();
        let body = answer.json();
        assert_eq!(body["message"], json!("Bad credentials: Bearer [redacted]"));
        assert_eq!(body["echo"], json!(["Bearer [redacted]"]));
        assert_eq!(answer.header("x-request-id"), Some("req_q"));
        assert_eq!(
            answer.header("content-length"),
            Some(answer.body.len().to_string().as_str())
        );
    }
    // An error body too long to read whole is not passed on at all.
    let api = proxy(&quoting_upstream(500, 300 * 1024).await, |_| {}).await;
    let answer = call(client().get(format!("{api}/v1/health"))).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    answer.assert_no_key();
    assert_eq!(answer.json()["code"], json!("UPSTREAM_ERROR_TOO_LARGE"));
}

#[tokio::test]
async fn creates_have_a_budget_of_their_own() {
    let (_, base) = mock_upstream(json!({})).await;
    let budget = RateLimit {
        per_second: 1.0 / 60.0,
        burst: 2,
    };
    let api = proxy(&base, |config| config.create_limit = Some(budget)).await;
    let c = client();
    let create = || call(c.post(format!("{api}{KONTEXT_RUNS}")).json(&create_body()));
    for _ in 0..2 {
        assert_eq!(create().await.status, StatusCode::CREATED);
    }
    let spent = create().await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = spent.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(spent.json()["code"], json!("create_budget_exceeded"));
    assert!(spent.json()["error"]
        .as_str()
        .unwrap()
        .contains("PROXY_CREATES_PER_MINUTE"));
    // Polling is not held to it.
    assert_eq!(
        call(c.get(format!("{api}/v1/health"))).await.status,
        StatusCode::OK
    );
    assert_eq!(upstream_log(&base).await.len(), 3);
}

#[tokio::test]
async fn a_create_asking_for_more_images_than_allowed_is_refused_here() {
    let (_, base) = mock_upstream(json!({})).await;
    let api = proxy(&base, |config| config.max_images_per_run = 2).await;
    let url = format!("{api}{KONTEXT_RUNS}");
    let c = client();
    let with_images = |n: Value| {
        let mut input = kontext_input();
        input["num_images"] = n;
        json!({"input": input})
    };
    let over = call(c.post(&url).json(&with_images(json!(3)))).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(over.json()["code"], json!("too_many_images"));
    assert!(over.json()["error"]
        .as_str()
        .unwrap()
        .contains("PROXY_MAX_IMAGES_PER_RUN"));
    let twice = r#"{"input": {"prompt": "p", "image_url": "https://x/y.png", "num_images": 1, "num_images": 4}}"#;
    let ambiguous = call(
        c.post(&url)
            .header("content-type", "application/json")
            .body(twice),
    )
    .await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST);
    assert_eq!(ambiguous.json()["code"], json!("invalid_create_body"));
    assert_eq!(upstream_log(&base).await.len(), 0, "neither was forwarded");
    let fine = call(c.post(&url).json(&with_images(json!(2)))).await;
    assert_eq!(fine.status, StatusCode::CREATED, "{}", fine.body);
    assert_eq!(fine.json()["input"]["num_images"], json!(2));
}
