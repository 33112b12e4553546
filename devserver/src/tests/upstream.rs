//! Upstream behaviours a scenario can switch on for the fault matrix: creates that ignore
//! `Idempotency-Key`, and Runflow's official proxy standing in front of the mock.

use serde_json::{json, Value};

use super::*;

async fn create_with_key(app: &Router, base: &str, key: &str) -> Reply {
    let mut req = request(
        Method::POST,
        &format!("{base}{KONTEXT_RUNS}"),
        Some(&json!({"input": kontext_input()})),
    );
    req.headers_mut()
        .insert("idempotency-key", key.parse().unwrap());
    send(app, req).await
}

async fn run_ids(app: &Router, base: &str) -> Vec<Value> {
    let runs = get(app, &format!("{base}/runs")).await.json();
    runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect()
}

#[tokio::test]
async fn idempotency_false_ignores_the_key() {
    let app = test_app();
    let honoured = scenario(&app, json!({})).await;
    let ignored = scenario(&app, json!({"idempotency": false})).await;
    for base in [&honoured, &ignored] {
        for _ in 0..2 {
            assert_eq!(
                create_with_key(&app, base, "k1").await.status,
                StatusCode::CREATED
            );
        }
    }
    assert_eq!(
        run_ids(&app, &honoured).await.len(),
        1,
        "the second replayed"
    );
    assert_eq!(
        run_ids(&app, &ignored).await.len(),
        2,
        "the key changed nothing"
    );
}

#[tokio::test]
async fn behind_runflows_proxy_only_content_type_comes_back_and_keys_are_dropped() {
    let app = test_app();
    let base = scenario(
        &app,
        json!({"runflow_proxy": true, "lifecycle_ms": [0, 0, 0]}),
    )
    .await;
    let first = create_with_key(&app, &base, "k1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Cache-Control is the dev server's own, on everything it serves.
    let mut names: Vec<&str> = first.headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["cache-control", "content-length", "content-type"]);
    assert_eq!(
        create_with_key(&app, &base, "k1").await.status,
        StatusCode::CREATED
    );
    let ids = run_ids(&app, &base).await;
    assert_eq!(ids.len(), 2, "no replay: the key never reached the API");
    // The log shows what the client sent, before the proxy.
    assert_eq!(
        log(&app, &base).await[0]["headers"]["idempotency-key"],
        "k1"
    );

    let id = ids[0].as_str().unwrap();
    let run = get(&app, &format!("{base}/v1/runs/{id}")).await;
    assert_eq!(run.status, StatusCode::OK);
    assert_eq!(run.header("x-request-id"), None);
    let not_allowed = json!({"error": "Path not allowed", "code": "path_not_allowed"});
    for path in [
        "/v1/runs/not-a-uuid".to_string(),
        format!("/v1/runs/{}", id.to_uppercase().replace('-', "")),
        "/v1/runs?q=client_ref:abc".into(),
        format!("/v1/runs/{id}/callback"),
    ] {
        let reply = get(&app, &format!("{base}{path}")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.json(), not_allowed, "{path}");
    }
}

#[tokio::test]
async fn behind_runflows_proxy_posts_must_be_small_json() {
    let app = test_app();
    let base = scenario(
        &app,
        json!({"runflow_proxy": true, "faults": [{"on": "create", "action": {"type": "error", "status": 500}}]}),
    )
    .await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let text = Request::post(&url)
        .header("host", HOST)
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let reply = send(&app, text).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let pad = |n: usize| json!({"input": {"prompt": "p", "image_url": "x".repeat(n)}});
    let over = pad(32 * 1024);
    assert!(over.to_string().len() > 32768);
    let reply = post(&app, &url, &over).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json(), json!({"error": "Payload too large"}));
    // Refused by the proxy, so the API's fault is still pending; then the API's error body
    // comes through unchanged, without its headers.
    let reply = post(&app, &url, &pad(100)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["code"], "INTERNAL_ERROR");
    assert_eq!(reply.header("x-request-id"), None);
    let faults: Vec<_> = log(&app, &base)
        .await
        .iter()
        .map(|e| e["fault"].clone())
        .collect();
    assert_eq!(faults, [Value::Null, Value::Null, json!("error")]);
}

#[tokio::test]
async fn behind_runflows_proxy_faults_lose_their_headers_and_a_drop_is_a_502() {
    let app = test_app();
    let base = scenario(
        &app,
        json!({"runflow_proxy": true, "faults": [
            {"on": "health", "action": {"type": "error", "status": 429, "retry_after": "3", "request_id": "req_x"}},
            {"on": "health", "skip": 1, "action": {"type": "drop"}},
            {"on": "create", "action": {"type": "create_then_drop"}},
        ]}),
    )
    .await;
    let limited = get(&app, &format!("{base}/v1/health")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), None);
    assert_eq!(limited.header("x-request-id"), None);
    assert_eq!(limited.json()["code"], "RATE_LIMITED");
    let unavailable = json!({"error": "Upstream unavailable"});
    let dropped = get(&app, &format!("{base}/v1/health")).await;
    assert_eq!(
        (dropped.status, dropped.json()),
        (StatusCode::BAD_GATEWAY, unavailable.clone())
    );
    let created = post(
        &app,
        &format!("{base}{KONTEXT_RUNS}"),
        &json!({"input": kontext_input()}),
    )
    .await;
    assert_eq!(
        (created.status, created.json()),
        (StatusCode::BAD_GATEWAY, unavailable)
    );
    assert_eq!(
        run_ids(&app, &base).await.len(),
        1,
        "the create went through"
    );
}

#[tokio::test]
async fn behind_runflows_proxy_the_presigned_put_is_not_capped() {
    let app = test_app();
    let base = scenario(&app, json!({"runflow_proxy": true})).await;
    let size = 40 * 1024;
    let upload = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": size});
    let created = post(&app, &format!("{base}/v1/asset-uploads"), &upload).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let url = created.json()["upload_url"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&format!("http://{HOST}")).unwrap();
    let put = Request::put(path)
        .header("host", HOST)
        .header("content-type", "image/png")
        .body(Body::from(vec![0u8; size]))
        .unwrap();
    let reply = send(&app, put).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("etag").is_some(), "storage's own headers");
}
