//! Requests the mock refuses, idempotency, search, envelopes, auth, the log and the control API.

use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn health_and_request_ids() {
    let app = test_app();
    let first = get(&app, "/api/runflow/v1/health").await;
    assert_eq!(first.json(), json!({"status": "ok"}));
    let second = get(&app, "/api/runflow/v1/health").await;
    let ids = [
        first.header("x-request-id").unwrap(),
        second.header("x-request-id").unwrap(),
    ];
    assert!(ids.iter().all(|id| id.starts_with("req_")));
    assert_ne!(ids[0], ids[1]);
    let unknown = get(&app, "/api/runflow/v1/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.header("x-request-id").is_some());
}

#[tokio::test]
async fn bad_creates_get_415_400_and_422() {
    let app = test_app();
    let url = format!("/api/runflow{KONTEXT_RUNS}");
    let text = Request::post(&url)
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let reply = send(&app, text).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.json()["code"], "UNSUPPORTED_MEDIA_TYPE");

    let array = post(&app, &url, &json!([1])).await;
    assert_eq!(array.status, StatusCode::BAD_REQUEST);
    assert_eq!(array.json()["code"], "BAD_REQUEST");
    let broken = Request::post(&url)
        .header("content-type", "application/json")
        .body(Body::from("{"))
        .unwrap();
    assert_eq!(send(&app, broken).await.status, StatusCode::BAD_REQUEST);

    let invalid = post(&app, &url, &json!({"input": {"prompt": " "}})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = invalid.json();
    assert_eq!(body["code"], "VALIDATION_ERROR");
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("input.prompt"), json!("input.image_url")]);
    assert!(body["errors"][0]["message"].is_string());

    for bad in [
        json!({"input": kontext_input(), "client_ref": "x".repeat(256)}),
        json!({"input": kontext_input(), "metadata": [1]}),
        json!({"input": "nope"}),
        json!({"input": {"prompt": "p", "image_url": "u", "aspect_ratio": "5:4"}}),
        json!({"input": {"prompt": "p", "image_url": "u", "num_images": 5}}),
        json!({"input": {"prompt": "p", "image_url": "u", "output_format": "gif"}}),
    ] {
        assert_eq!(
            post(&app, &url, &bad).await.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    let ok = json!({"input": kontext_input(), "client_ref": "x".repeat(255), "metadata": {"a": 1}, "callback_url": null});
    let created = post(&app, &url, &ok).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["metadata"], json!({"a": 1}));
    let runs = get(&app, "/__mock/s/default/runs").await.json();
    assert_eq!(
        runs["items"].as_array().unwrap().len(),
        1,
        "refused creates create nothing"
    );
}

#[tokio::test]
async fn kontext_tuning_fields_are_checked_like_the_real_api() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let with = |name: &str, value: Value| {
        let mut input = kontext_input();
        input[name] = value;
        json!({ "input": input })
    };
    for (name, bad) in [
        ("guidance_scale", json!(0.99)),
        ("guidance_scale", json!(20.01)),
        ("guidance_scale", json!("3")),
        ("guidance_scale", json!(true)),
        ("safety_tolerance", json!(3)),
        ("safety_tolerance", json!("0")),
        ("safety_tolerance", json!("7")),
        ("safety_tolerance", json!(" 3")),
        ("safety_tolerance", json!(true)),
        ("enhance_prompt", json!("yes")),
        ("enhance_prompt", json!(1)),
        ("sync_mode", json!(0)),
        ("sync_mode", json!("false")),
    ] {
        let reply = post(&app, &url, &with(name, bad.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {bad}"
        );
        let body = reply.json();
        assert_eq!(body["code"], "VALIDATION_ERROR");
        assert_eq!(
            body["errors"][0]["field"],
            json!(format!("input.{name}")),
            "{name}: {bad}"
        );
        assert_eq!(body["errors"].as_array().unwrap().len(), 1);
    }
    for (name, ok) in [
        ("guidance_scale", json!(1)),
        ("guidance_scale", json!(3.5)),
        ("guidance_scale", json!(20)),
        ("guidance_scale", Value::Null),
        ("safety_tolerance", json!("1")),
        ("safety_tolerance", json!("6")),
        ("enhance_prompt", json!(true)),
        ("sync_mode", json!(false)),
    ] {
        let reply = post(&app, &url, &with(name, ok.clone())).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {ok}");
    }
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let body = json!({"input": kontext_input(), "client_ref": "ref-1"});
    let keyed = |body: &Value| {
        let mut req = request(Method::POST, &url, Some(body));
        req.headers_mut()
            .insert("idempotency-key", "key-1".parse().unwrap());
        req
    };
    let first = send(&app, keyed(&body)).await;
    let replay = send(&app, keyed(&body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(first.json(), replay.json());
    let mut other = body.clone();
    other["client_ref"] = "ref-2".into();
    let conflict = send(&app, keyed(&other)).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.json()["code"], "IDEMPOTENCY_KEY_REUSED");
    let runs = get(&app, &format!("{base}/runs")).await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
    // Without a key every create is a new run.
    post(&app, &url, &body).await;
    assert_eq!(
        get(&app, &format!("{base}/runs")).await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn search_by_client_ref() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    for client_ref in ["a", "b", "a"] {
        post(
            &app,
            &url,
            &json!({"input": kontext_input(), "client_ref": client_ref}),
        )
        .await;
    }
    let found = get(&app, &format!("{base}/v1/runs?q=client_ref:a&limit=10"))
        .await
        .json();
    assert_eq!(found["total"], 2);
    assert!(found["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["client_ref"] == "a"));
    let quoted = get(&app, &format!("{base}/v1/runs?q=client_ref:%22b%22"))
        .await
        .json();
    assert_eq!(quoted["total"], 1);
    let limited = get(&app, &format!("{base}/v1/runs?q=client_ref:a&limit=1"))
        .await
        .json();
    assert_eq!(
        (
            limited["items"].as_array().unwrap().len(),
            limited["total"].clone()
        ),
        (1, json!(2))
    );
    let none = get(&app, &format!("{base}/v1/runs?q=client_ref:zzz"))
        .await
        .json();
    assert_eq!(none, json!({"items": [], "total": 0}));
    assert_eq!(
        get(&app, &format!("{base}/v1/runs?q=status:failed"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let proxied = scenario(&app, json!({"search": false})).await;
    let refused = get(&app, &format!("{proxied}/v1/runs?q=client_ref:a")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json(),
        json!({"error": "Path not allowed", "code": "path_not_allowed"})
    );
}

#[tokio::test]
async fn every_error_envelope() {
    let app = test_app();
    let missing = "/v1/runs/00000000-0000-4000-8000-000000000000";
    let flat = get(&app, &format!("/api/runflow{missing}")).await;
    assert_eq!(flat.status, StatusCode::NOT_FOUND);
    let message = "Run 00000000-0000-4000-8000-000000000000 not found";
    assert_eq!(
        flat.json(),
        json!({"code": "RUN_NOT_FOUND", "message": message, "errors": null})
    );
    let nested = scenario(&app, json!({"error_envelope": "nested"})).await;
    let body = get(&app, &format!("{nested}{missing}")).await.json();
    assert_eq!(
        body,
        json!({"error": {"code": "RUN_NOT_FOUND", "message": message}})
    );
    let proxy = scenario(&app, json!({"error_envelope": "proxy"})).await;
    let body = get(&app, &format!("{proxy}{missing}")).await.json();
    assert_eq!(body, json!({"error": message, "code": "RUN_NOT_FOUND"}));
}

#[tokio::test]
async fn auth_rules() {
    let app = test_app();
    let with_auth = |uri: &str, value: &str| {
        let mut req = request(Method::GET, uri, None);
        req.headers_mut()
            .insert("authorization", value.parse().unwrap());
        req
    };
    let open = "/api/runflow/v1/health";
    assert_eq!(
        get(&app, open).await.status,
        StatusCode::OK,
        "no key: the proxy adds it"
    );
    assert_eq!(
        send(&app, with_auth(open, "Bearer rf_live_ABC_123"))
            .await
            .status,
        StatusCode::OK
    );
    for bad in [
        "Bearer sk_live_1",
        "Bearer rf_",
        "rf_live_1",
        "Bearer rf_a-b",
        "Basic rf_x",
    ] {
        let reply = send(&app, with_auth(open, bad)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(reply.json()["code"], "UNAUTHORIZED");
    }
    let strict = scenario(&app, json!({"require_auth": true})).await;
    let url = format!("{strict}/v1/health");
    assert_eq!(get(&app, &url).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, with_auth(&url, "Bearer rf_test")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_log_records_every_api_request_but_not_preflights() {
    let app = cors_app();
    let base = scenario(
        &app,
        json!({"faults": [{"on": "create", "action": {"type": "error", "status": 500}}]}),
    )
    .await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(&url)
        .header("origin", "http://127.0.0.1:9999")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        )
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, preflight).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert!(
        log(&app, &base).await.is_empty(),
        "preflights are not logged"
    );

    let mut req = request(Method::POST, &url, Some(&json!({"input": {"prompt": "p"}})));
    for (name, value) in [
        ("authorization", "Bearer rf_x"),
        ("idempotency-key", "k"),
        ("x-organization-id", "org"),
        ("origin", "http://127.0.0.1:9999"),
    ] {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    let reply = send(&app, req).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the fault was still pending"
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert!(reply
        .header("access-control-expose-headers")
        .unwrap()
        .contains("x-request-id"));
    get(&app, &format!("{base}/v1/runs/nope?x=1")).await;
    get(&app, &format!("{base}/v1/runs?q=client_ref:a")).await;
    get(&app, &format!("{base}/v1/health")).await;
    get(&app, &format!("{base}/v1/other")).await;
    get(&app, &format!("{base}/runs")).await; // control calls are not logged

    let entries = log(&app, &base).await;
    let kinds: Vec<_> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["create", "get", "search", "health", "other"]);
    assert_eq!(
        entries[0],
        json!({
            "seq": 0, "at_ms": entries[0]["at_ms"], "request_id": entries[0]["request_id"], "method": "POST",
            "path": KONTEXT_RUNS, "query": null, "kind": "create",
            "headers": {"authorization": "Bearer [redacted]", "idempotency-key": "k", "content-type": "application/json", "x-organization-id": "org"},
            "body": {"input": {"prompt": "p"}}, "status": 500, "fault": "error",
        })
    );
    assert_eq!(entries[1]["path"], "/v1/runs/nope");
    assert_eq!(entries[1]["query"], "x=1");
    assert_eq!(entries[1]["status"], 404);
    assert_eq!(entries[1]["body"], Value::Null);
    assert_eq!(entries[1]["headers"], json!({}));
}

#[tokio::test]
async fn unknown_scenarios_and_bad_control_calls() {
    let app = test_app();
    assert_eq!(
        get(&app, "/__mock/s/nope/v1/health").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/__mock/s/nope/log").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/__mock/s/nope/runs").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&app, "/__mock/s/nope/faults", &json!([])).await.status,
        StatusCode::NOT_FOUND
    );

    let empty = request(Method::POST, "/__mock/scenarios", None);
    assert_eq!(
        send(&app, empty).await.status,
        StatusCode::CREATED,
        "an empty body means {{}}"
    );
    for bad in [
        json!({"lifecycle": [1, 2, 3]}),
        json!({"output_shape": "pictures"}),
        json!({"lifecycle_ms": [1]}),
    ] {
        let reply = post(&app, "/__mock/scenarios", &bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.json()["error"].is_string());
    }
    let base = scenario(&app, json!({})).await;
    let bad_rule = json!([{"on": "get", "action": {"type": "create_then_drop"}}]);
    assert_eq!(
        post(&app, &format!("{base}/faults"), &bad_rule)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let good = json!([{"on": "health", "action": {"type": "raw", "status": 200, "body": ""}}]);
    assert_eq!(
        post(&app, &format!("{base}/faults"), &good).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn the_log_keeps_a_short_marker_instead_of_a_data_uri() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let image = png(64, 48);
    for unpadded in [0, 1, 2] {
        // Images of each base64 length modulo 3, so the count is right with and without `=`.
        let bytes = &image[..image.len() - unpadded];
        let mut input = kontext_input();
        input["image_url"] = json!(data_uri(bytes));
        let body = json!({"input": input, "metadata": {"thumbs": ["data:text/plain,hi"]}});
        assert_eq!(post(&app, &url, &body).await.status, StatusCode::CREATED);
        let entries = log(&app, &base).await;
        let logged = &entries.last().unwrap()["body"];
        assert_eq!(
            logged["input"]["image_url"],
            json!(format!("data:image/png;base64,… ({} bytes)", bytes.len()))
        );
        assert_eq!(logged["input"]["prompt"], json!("make it teal"));
        assert_eq!(
            logged["metadata"]["thumbs"][0],
            json!("data:text/plain,… (2 bytes)")
        );
    }
    // The run itself still got the whole image: its output is made from it.
    let runs = get(&app, &format!("{base}/runs")).await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_quoted_search_value_is_unescaped() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    for client_ref in [r#"a"b\c"#, "plain"] {
        let body = json!({"input": kontext_input(), "client_ref": client_ref});
        assert_eq!(
            post(&app, &format!("{base}{KONTEXT_RUNS}"), &body)
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let search = |q: &str| {
        let url = format!("{base}/v1/runs?q={}", urlencode(q));
        let app = app.clone();
        async move {
            get(&app, &url).await.json()["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(search(r#"client_ref:"a\"b\\c""#).await, 1);
    assert_eq!(
        search(r#"client_ref:"a"b\c""#).await,
        0,
        "unescaped, not raw"
    );
    assert_eq!(search(r#"client_ref:"plain""#).await, 1);
    assert_eq!(search("client_ref:plain").await, 1);
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}
