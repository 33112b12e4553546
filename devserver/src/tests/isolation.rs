//! What a page of another origin can do with the mock: by default nothing (Runflow sends no CORS
//! headers), with `MOCK_CORS=1` what the browser tests need; and who may use the control API.

use axum::extract::ConnectInfo;
use serde_json::{json, Value};

use super::*;
use crate::conn::ConnHandle;

/// A GET of `uri` from `peer`, with these extra headers.
fn from(peer: [u8; 4], uri: &str, headers: &[(&'static str, &str)]) -> Request<Body> {
    let mut req = request(Method::GET, uri, None);
    let handle = ConnHandle::detached((peer, 40000).into());
    req.extensions_mut().insert(ConnectInfo(handle));
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn the_default_mock_sends_no_cors_headers_and_mock_cors_does() {
    let origin = [("origin", "http://localhost:9999")];
    let preflight = || {
        Request::options("/api/runflow/v1/health")
            .header("host", HOST)
            .header("origin", "http://localhost:9999")
            .header("access-control-request-method", "POST")
            .body(Body::empty())
            .unwrap()
    };
    let plain = test_app();
    let base = scenario(&plain, json!({"lifecycle_ms": [0, 0, 0]})).await;
    let run = create(&plain, &base, kontext_input()).await;
    let run_url = format!("{base}/v1/runs/{}", run["id"].as_str().unwrap());
    for path in ["/api/runflow/v1/health", &run_url, &format!("{base}/log")] {
        let reply = send(&plain, from([127, 0, 0, 1], path, &origin)).await;
        let cors: Vec<_> = reply
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{path}: {cors:?}");
    }
    let reply = send(&plain, preflight()).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);

    let open = cors_app();
    let reply = send(
        &open,
        from([127, 0, 0, 1], "/api/runflow/v1/health", &origin),
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let exposed = reply.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("retry-after") && exposed.contains("x-request-id"));
    let reply = send(&open, preflight()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn the_control_api_answers_same_origin_loopback_callers_only() {
    for (app, cors) in [(test_app(), false), (cors_app(), true)] {
        let log = "/__mock/s/default/log";
        let status = |req| {
            let app = app.clone();
            async move { send(&app, req).await.status }
        };
        let ok = StatusCode::OK;
        let no = StatusCode::FORBIDDEN;
        assert_eq!(status(from([127, 0, 0, 1], log, &[])).await, ok);
        let same = [("origin", "http://127.0.0.1:8080")];
        assert_eq!(status(from([127, 0, 0, 1], log, &same)).await, ok);
        // Not from this machine, whatever the headers say.
        assert_eq!(status(from([192, 168, 1, 9], log, &same)).await, no);
        // A page of another site, or one that rebound its name to 127.0.0.1.
        let evil = [("origin", "https://evil.example")];
        assert_eq!(status(from([127, 0, 0, 1], log, &evil)).await, no);
        let rebound = [
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ];
        assert_eq!(status(from([127, 0, 0, 1], log, &rebound)).await, no);
        // The browser tests' page on another loopback port: only with MOCK_CORS.
        let harness = [("origin", "http://127.0.0.1:45678")];
        let expected = if cors { ok } else { no };
        assert_eq!(status(from([127, 0, 0, 1], log, &harness)).await, expected);
        let refused = send(&app, from([127, 0, 0, 1], log, &evil)).await;
        assert!(refused.json()["error"].is_string());
    }
    // Creating a scenario is guarded the same way.
    let app = test_app();
    let mut create = request(Method::POST, "/__mock/scenarios", Some(&json!({})));
    create
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(send(&app, create).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_log_shows_that_a_key_was_sent_never_the_key() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for auth in [
        Some("Bearer rf_live_secret"),
        Some("Basic dXNlcjpwdw=="),
        None,
    ] {
        let mut req = request(Method::GET, &format!("{base}/v1/health"), None);
        if let Some(auth) = auth {
            req.headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        send(&app, req).await;
    }
    let entries = log(&app, &base).await;
    let shown: Vec<&Value> = entries
        .iter()
        .map(|e| &e["headers"]["authorization"])
        .collect();
    assert_eq!(
        shown,
        [
            &json!("Bearer [redacted]"),
            &json!("[redacted]"),
            &Value::Null
        ]
    );
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains("rf_live_secret") && !text.contains("dXNlcjpwdw"));
    // Each entry has its arrival time, in ms since the epoch, in order.
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times[0] >= before && times[2] < before + 60_000,
        "{times:?}"
    );
}

#[tokio::test]
async fn a_scenario_with_an_api_key_accepts_that_key_only() {
    let app = test_app();
    let base = scenario(&app, json!({"api_key": "rf_live_expected"})).await;
    let url = format!("{base}/v1/health");
    let with = |auth: Option<&'static str>| {
        let mut req = request(Method::GET, &url, None);
        if let Some(auth) = auth {
            req.headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        req
    };
    assert_eq!(
        send(&app, with(Some("Bearer rf_live_expected")))
            .await
            .status,
        StatusCode::OK
    );
    for other in [Some("Bearer rf_live_other"), None] {
        assert_eq!(
            send(&app, with(other)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}
