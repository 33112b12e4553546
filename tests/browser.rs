//! Browser tests: the built client in headless Chromium against the dev server's mock Runflow.
//! Each test gets its own mock scenario (own runs, faults and request log); `make test` starts
//! the server and passes its address in `MOCK_URL` at compile time.
#![cfg(target_arch = "wasm32")]

use gloo_net::http::Request;
use js_sys::{Array, Function, Object, Reflect};
use runflow_kontext::KontextClient;
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;
use web_sys::AbortController;

wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::*;

#[wasm_bindgen_test]
async fn a_run_goes_from_queued_to_succeeded_with_real_images() {
    let mock = Scenario::new(json!({})).await;
    let (on_status, seen) = recorder();
    let options = Object::new();
    Reflect::set(&options, &"onStatus".into(), &on_status).expect("set");
    let run = resolve(mock.client(json!({})).run(input(), options.into())).await;

    assert_eq!(run["status"], "succeeded");
    let statuses: Vec<String> = seen.iter().filter_map(|s| s.as_string()).collect();
    assert_eq!(statuses, ["queued", "dispatching", "running", "succeeded"]);
    let image = &run["output"]["outputs"][0];
    assert_eq!(image["type"], "image");
    let bytes = Request::get(image["url"].as_str().expect("url"))
        .send()
        .await
        .expect("image");
    assert_eq!(
        bytes.headers().get("content-type").as_deref(),
        Some("image/jpeg")
    );
    assert!(run["output"]["seed"].is_number());

    let log = mock.log().await;
    let creates: Vec<&Value> = log.iter().filter(|e| e["kind"] == "create").collect();
    assert_eq!(creates.len(), 1, "exactly one create");
    assert!(creates[0]["headers"]["idempotency-key"].is_string());
    assert_eq!(creates[0]["headers"]["content-type"], "application/json");
    assert!(
        creates[0]["headers"].get("authorization").is_none(),
        "no key from a browser"
    );
    assert_eq!(
        creates[0]["path"],
        "/v1/models/black-forest-labs/flux-pro/kontext/runs"
    );
    assert!(creates[0]["body"]["client_ref"].is_string());
}

#[wasm_bindgen_test]
async fn create_then_get_and_wait_separately() {
    let mock = Scenario::new(json!({"output_shape": "image_urls"})).await;
    let client = mock.client(json!({}));
    let options = to_js(&json!({"clientRef": "order-17", "metadata": {"user": "u1"}}));
    let created = resolve(client.create_run(
        to_js(&json!({"prompt": "p", "image": PIXEL_PNG, "num_images": 2, "output_format": "png"})),
        options,
    ))
    .await;
    assert_eq!(created["status"], "queued");
    assert_eq!(created["client_ref"], "order-17");
    assert_eq!(created["metadata"]["user"], "u1");
    let id = created["id"].as_str().expect("id").to_owned();
    let fetched = resolve(client.get_run(id.clone().into(), JsValue::UNDEFINED)).await;
    assert_eq!(fetched["id"], id.as_str());
    let done = resolve(client.wait_for_run(id.into(), JsValue::UNDEFINED)).await;
    let outputs = done["output"]["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["content_type"], "image/png");
}

#[wasm_bindgen_test]
async fn every_output_shape_and_sync_mode() {
    for shape in ["outputs", "images", "image"] {
        let mock = Scenario::new(json!({"output_shape": shape})).await;
        let run = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
        assert!(run["output"]["outputs"][0]["url"].is_string(), "{shape}");
    }
    let mock = Scenario::new(json!({})).await;
    let sync = to_js(&json!({"prompt": "p", "image_url": PIXEL_PNG, "sync_mode": true}));
    let run = resolve(mock.client(json!({})).run(sync, JsValue::UNDEFINED)).await;
    assert!(
        run["output"]["outputs"][0]["url"]
            .as_str()
            .expect("url")
            .starts_with("data:image/jpeg;base64,")
    );
}

#[wasm_bindgen_test]
async fn invalid_input_costs_no_request() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let cases = [
        (json!({"prompt": "", "image_url": PIXEL_PNG}), "prompt"),
        (
            json!({"prompt": "p", "image_url": PIXEL_PNG, "num_images": 5}),
            "num_images",
        ),
        (
            json!({"prompt": "p", "image_url": PIXEL_PNG, "guidance_scale": 0}),
            "guidance_scale",
        ),
        (
            json!({"prompt": "p", "image_url": PIXEL_PNG, "safety_tolerance": "9"}),
            "safety_tolerance",
        ),
        (
            json!({"prompt": "p", "image_url": PIXEL_PNG, "aspectRatio": "1:1"}),
            "aspectRatio",
        ),
        (json!({"prompt": "p"}), "image_url"),
    ];
    for (bad, name) in cases {
        let error = reject(
            client.run(to_js(&bad), JsValue::UNDEFINED),
            "validation_error",
        )
        .await;
        assert_eq!(text(&error, "field").as_deref(), Some(name));
    }
    let blob = web_sys::Blob::new().expect("blob");
    let with_blob = to_js(&json!({"prompt": "p"}));
    Reflect::set(&with_blob, &"image".into(), &blob).expect("set");
    reject(
        client.run(with_blob, JsValue::UNDEFINED),
        "validation_error",
    )
    .await;
    let bad_option = to_js(&json!({"clientRef": "x".repeat(256)}));
    reject(client.create_run(input(), bad_option), "validation_error").await;
    // A getter that throws is a validation error, not an exception thrown through the wasm.
    let throwing = to_js(&json!({"image_url": PIXEL_PNG}));
    let getter = Object::new();
    Reflect::set(
        &getter,
        &"get".into(),
        &Function::new_no_args("throw new Error('no prompt today')"),
    )
    .expect("set");
    Reflect::set(&getter, &"enumerable".into(), &JsValue::TRUE).expect("set");
    Object::define_property(
        throwing.unchecked_ref::<Object>(),
        &"prompt".into(),
        &getter,
    );
    let error = reject(client.run(throwing, JsValue::UNDEFINED), "validation_error").await;
    assert_eq!(text(&error, "field").as_deref(), Some("input"));
    assert_eq!(mock.log().await.len(), 0, "no request for invalid input");
}

#[wasm_bindgen_test]
async fn bad_client_options_are_refused_by_name() {
    for (options, name) in [
        (json!({"baseURL": "/x"}), "baseURL"),
        (json!({"maxRetries": -1}), "maxRetries"),
        (json!({"model": "a//b"}), "model"),
        (json!({"baseUrl": "ftp://x"}), "baseUrl"),
        (json!({"baseUrl": "//evil.example/api"}), "baseUrl"),
        (json!({"baseUrl": "/\\evil.example/api"}), "baseUrl"),
    ] {
        let error = KontextClient::new(to_js(&options)).err().expect("refused");
        assert_eq!(text(&error, "code").as_deref(), Some("validation_error"));
        assert_eq!(text(&error, "field").as_deref(), Some(name));
    }
    // Headers whose getter throws are refused, not dropped.
    let headers = Object::new();
    let getter = Object::new();
    Reflect::set(&getter, &"get".into(), &Function::new_no_args("throw 1")).expect("set");
    Reflect::set(&getter, &"enumerable".into(), &JsValue::TRUE).expect("set");
    Object::define_property(&headers, &"x-app".into(), &getter);
    let options = Object::new();
    Reflect::set(&options, &"headers".into(), &headers).expect("set");
    let error = KontextClient::new(options.into()).err().expect("refused");
    assert_eq!(text(&error, "field").as_deref(), Some("headers"));
}

#[wasm_bindgen_test]
async fn a_key_in_the_browser_is_refused_unless_allowed_and_never_echoed() {
    let refused = KontextClient::new(to_js(&json!({"apiKey": "rf_live_secret"})))
        .err()
        .expect("refused");
    assert_eq!(
        text(&refused, "code").as_deref(),
        Some("browser_key_refused")
    );
    assert!(
        !text(&refused, "message")
            .unwrap_or_default()
            .contains("rf_live_secret")
    );

    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "raw", "status": 401, "content_type": "application/json", "body": "{\"code\":\"UNAUTHORIZED\",\"message\":\"key rf_live_secret is revoked\"}"}}]})).await;
    let client = mock.client(json!({"apiKey": "rf_live_secret", "dangerouslyAllowBrowser": true}));
    let error = reject(
        client.run(input(), JsValue::UNDEFINED),
        "authentication_error",
    )
    .await;
    let shown = to_json(&error).to_string() + &text(&error, "message").unwrap_or_default();
    assert!(!shown.contains("rf_live_secret"), "key leaked: {shown}");
    let log = mock.log().await;
    // The mock logs that a key was sent, never the key.
    assert_eq!(log[0]["headers"]["authorization"], "Bearer [redacted]");
}

#[wasm_bindgen_test]
async fn rate_limited_create_honours_retry_after_and_creates_once() {
    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "error", "status": 429, "retry_after": "1"}}]})).await;
    let started = now();
    let run = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "succeeded");
    assert!(now() - started >= 950.0, "waited for Retry-After");
    assert_eq!(mock.count("create").await, 2);
    assert_eq!(mock.runs().await.len(), 1);
    let keys: Vec<Value> = mock
        .log()
        .await
        .iter()
        .filter(|e| e["kind"] == "create")
        .map(|e| e["headers"]["idempotency-key"].clone())
        .collect();
    assert_eq!(keys[0], keys[1], "one Idempotency-Key per logical create");
}

#[wasm_bindgen_test]
async fn rate_limits_and_server_errors_on_polls_are_retried() {
    let mock = Scenario::new(json!({"faults": [
        {"on": "get", "action": {"type": "error", "status": 429}},
        {"on": "get", "action": {"type": "error", "status": 502}},
        {"on": "get", "action": {"type": "drop"}},
    ]}))
    .await;
    let run = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(mock.runs().await.len(), 1);
}

#[wasm_bindgen_test]
async fn retries_stop_at_max_retries() {
    let mock = Scenario::new(json!({"faults": [{"on": "create", "times": 5, "action": {"type": "error", "status": 503, "code": "MODEL_UNAVAILABLE"}}]})).await;
    let error = reject(
        mock.client(json!({"maxRetries": 1}))
            .run(input(), JsValue::UNDEFINED),
        "server_error",
    )
    .await;
    assert_eq!(field(&error, "status").as_f64(), Some(503.0));
    assert_eq!(field(&error, "retryable"), JsValue::TRUE);
    assert_eq!(
        text(&error, "serverCode").as_deref(),
        Some("MODEL_UNAVAILABLE")
    );
    assert_eq!(mock.count("create").await, 2);
    assert_eq!(
        mock.count("search").await,
        0,
        "a 503 creates nothing: no look-up needed"
    );
}

/// A create that makes the run and then loses the connection. Chrome silently resends a request
/// once when a reused keep-alive connection closes without an answer, so the resend is dropped
/// too (creating nothing), leaving the client to find out what happened.
fn dropped_create() -> Value {
    json!([{"on": "create", "action": {"type": "create_then_drop"}}, {"on": "create", "action": {"type": "drop"}}])
}

#[wasm_bindgen_test]
async fn a_dropped_create_that_went_through_is_found_not_repeated() {
    let mock = Scenario::new(json!({"faults": dropped_create()})).await;
    let run = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "succeeded");
    let runs = mock.runs().await;
    assert_eq!(runs.len(), 1, "exactly one run");
    assert_eq!(runs[0]["id"], run["id"]);
    assert!(
        mock.count("create").await <= 2,
        "no POST from the client after the drop"
    );
    assert_eq!(mock.count("search").await, 1);
}

#[wasm_bindgen_test]
async fn a_failed_create_that_made_nothing_is_posted_again() {
    let mock = Scenario::new(json!({"faults": [
        {"on": "create", "action": {"type": "error", "status": 500}},
        {"on": "create", "action": {"type": "raw", "status": 201, "content_type": "text/html", "body": "<html>gateway</html>"}},
    ]})).await;
    let run = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(mock.runs().await.len(), 1);
    assert_eq!(mock.count("create").await, 3);
    assert_eq!(
        mock.count("search").await,
        2,
        "looked up before each repeat"
    );
}

#[wasm_bindgen_test]
async fn without_search_an_unknown_create_is_not_repeated() {
    let mock = Scenario::new(json!({"search": false, "faults": dropped_create()})).await;
    let error = reject(
        mock.client(json!({}))
            .run(input(), to_js(&json!({"clientRef": "order-9"}))),
        "connection_error",
    )
    .await;
    assert_eq!(text(&error, "clientRef").as_deref(), Some("order-9"));
    assert_eq!(field(&error, "retryable"), JsValue::FALSE);
    assert!(
        mock.count("create").await <= 2,
        "no POST from the client after the drop"
    );
    assert_eq!(mock.runs().await.len(), 1);
}

#[wasm_bindgen_test]
async fn a_slow_create_times_out_and_is_found() {
    let mock = Scenario::new(
        json!({"faults": [{"on": "create", "action": {"type": "delay", "ms": 3000}}]}),
    )
    .await;
    let run = resolve(
        mock.client(json!({"timeoutMs": 300}))
            .run(input(), JsValue::UNDEFINED),
    )
    .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(mock.runs().await.len(), 1);
    assert_eq!(mock.count("create").await, 1);
}

#[wasm_bindgen_test]
async fn a_hanging_poll_hits_the_deadline() {
    let hang = json!({"on": "get", "times": 100, "action": {"type": "hang"}});
    let (error, took, id) = wait_under_deadline(hang, 400.0, "timeout").await;
    assert!((350.0..1500.0).contains(&took), "deadline kept: {took} ms");
    assert_eq!(text(&error, "runId"), Some(id));
    assert_eq!(field(&error, "retryable"), JsValue::FALSE);
}

/// Creates a run in a scenario with `fault`, then waits for it under a `timeout_ms` deadline:
/// the rejection (checked to be `code`), how long the wait took, and the run's id.
async fn wait_under_deadline(fault: Value, timeout_ms: f64, code: &str) -> (JsValue, f64, String) {
    let mock = Scenario::new(json!({ "faults": [fault] })).await;
    let client = mock.client(json!({}));
    let created = resolve(client.create_run(input(), JsValue::UNDEFINED)).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let started = now();
    let options = to_js(&json!({ "timeoutMs": timeout_ms }));
    let error = reject(client.wait_for_run(id.clone().into(), options), code).await;
    (error, now() - started, id)
}

#[wasm_bindgen_test]
async fn a_retry_wait_past_the_deadline_gives_the_real_error_at_once() {
    let slow_down =
        json!({"on": "get", "action": {"type": "error", "status": 429, "retry_after": "5"}});
    let (error, took, id) = wait_under_deadline(slow_down, 1000.0, "rate_limited").await;
    assert!(took < 500.0, "not waited out: {took} ms");
    assert_eq!(field(&error, "retryAfterMs").as_f64(), Some(5000.0));
    assert_eq!(text(&error, "runId"), Some(id));
}

#[wasm_bindgen_test]
async fn an_unknown_status_is_not_polled_forever() {
    let mock = Scenario::new(json!({"final_status": "mystery"})).await;
    let error = reject(
        mock.client(json!({}))
            .run(input(), to_js(&json!({"timeoutMs": 600}))),
        "timeout",
    )
    .await;
    assert!(text(&error, "runId").is_some());
    assert!(mock.count("get").await < 40, "polling backs off");
}

#[wasm_bindgen_test]
async fn abort_stops_waiting_at_once_and_names_the_run() {
    let mock = Scenario::new(json!({"lifecycle_ms": [5000, 0, 0]})).await;
    let controller = AbortController::new().expect("controller");
    let options = Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).expect("set");
    let promise = mock
        .client(json!({"pollIntervalMs": 2000}))
        .run(input(), options.into());
    gloo_timers::future::TimeoutFuture::new(300).await;
    let aborted_at = now();
    controller.abort();
    let error = reject(promise, "aborted").await;
    assert!(
        now() - aborted_at < 100.0,
        "rejected at once, not at the next poll"
    );
    assert!(text(&error, "runId").is_some());

    let controller = AbortController::new().expect("controller");
    controller.abort();
    let options = Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).expect("set");
    let before = mock.log().await.len();
    reject(
        mock.client(json!({})).run(input(), options.into()),
        "aborted",
    )
    .await;
    assert_eq!(
        mock.log().await.len(),
        before,
        "an aborted signal sends nothing"
    );
}

/// Requests share one timeout timer: a short timeout made while a long one is pending still
/// fires on time, and the long request stays under its own.
#[wasm_bindgen_test]
async fn a_short_request_timeout_fires_while_a_long_one_is_pending() {
    let mock =
        Scenario::new(json!({"faults": [{"on": "get", "times": 100, "action": {"type": "hang"}}]}))
            .await;
    let created = resolve(
        mock.client(json!({}))
            .create_run(input(), JsValue::UNDEFINED),
    )
    .await;
    let id: JsValue = created["id"].as_str().expect("id").into();
    let controller = AbortController::new().expect("controller");
    let options = Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).expect("set");
    let long = mock
        .client(json!({"timeoutMs": 60_000}))
        .get_run(id.clone(), options.into());
    gloo_timers::future::TimeoutFuture::new(50).await;
    let started = now();
    let short = mock.client(json!({"timeoutMs": 300, "maxRetries": 0}));
    reject(short.get_run(id, JsValue::UNDEFINED), "timeout").await;
    let took = now() - started;
    assert!((280.0..1500.0).contains(&took), "timed out after {took} ms");
    controller.abort();
    reject(long, "aborted").await;
}

#[wasm_bindgen_test]
async fn abort_cancels_an_in_flight_request() {
    let mock =
        Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "hang"}}]})).await;
    let controller = AbortController::new().expect("controller");
    let options = Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).expect("set");
    Reflect::set(&options, &"clientRef".into(), &"ref-abort".into()).expect("set");
    let promise = mock.client(json!({})).create_run(input(), options.into());
    gloo_timers::future::TimeoutFuture::new(200).await;
    controller.abort();
    let error = reject(promise, "aborted").await;
    assert_eq!(
        text(&error, "clientRef").as_deref(),
        Some("ref-abort"),
        "the caller can look the run up"
    );
}

#[wasm_bindgen_test]
async fn failed_and_canceled_runs_reject_with_run_failed() {
    let mock = Scenario::new(json!({"final_status": "failed"})).await;
    let error = reject(
        mock.client(json!({})).run(input(), JsValue::UNDEFINED),
        "run_failed",
    )
    .await;
    assert_eq!(
        text(&error, "serverCode").as_deref(),
        Some("PROVIDER_ERROR")
    );
    assert!(
        text(&error, "message")
            .unwrap_or_default()
            .contains("could not process")
    );
    let run = to_json(&field(&error, "run"));
    assert_eq!(run["failure"]["stage"], "inference");
    assert_eq!(text(&error, "runId"), run["id"].as_str().map(str::to_owned));

    let legacy =
        Scenario::new(json!({"final_status": "errored", "failure_fields": "legacy"})).await;
    let error = reject(
        legacy.client(json!({})).run(input(), JsValue::UNDEFINED),
        "run_failed",
    )
    .await;
    assert_eq!(
        to_json(&field(&error, "run"))["failure"]["stage"],
        "inference"
    );

    for spelling in ["canceled", "cancelled"] {
        let mock = Scenario::new(json!({"final_status": spelling})).await;
        let error = reject(
            mock.client(json!({})).run(input(), JsValue::UNDEFINED),
            "run_failed",
        )
        .await;
        assert_eq!(to_json(&field(&error, "run"))["status"], "canceled");
    }

    let partial = Scenario::new(json!({"final_status": "partial_succeeded"})).await;
    let two = to_js(&json!({"prompt": "p", "image_url": PIXEL_PNG, "num_images": 2}));
    let run = resolve(partial.client(json!({})).run(two, JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "partial_succeeded");
    assert_eq!(run["output"]["outputs"].as_array().map(Vec::len), Some(1));
}

#[wasm_bindgen_test]
async fn error_statuses_and_envelopes_map_to_codes() {
    let cases = [
        (402, "flat", "insufficient_credit"),
        (402, "nested", "insufficient_credit"),
        (402, "proxy", "insufficient_credit"),
        (401, "flat", "authentication_error"),
        (403, "flat", "permission_denied"),
        (409, "flat", "conflict"),
        (413, "proxy", "payload_too_large"),
        (422, "flat", "validation_error"),
    ];
    for (status, envelope, code) in cases {
        let mock = Scenario::new(json!({"error_envelope": envelope, "faults": [{"on": "create", "action": {"type": "error", "status": status, "request_id": "req_test"}}]})).await;
        // An https image: a 413 with a data: URI inline is retried with the image uploaded.
        let by_url =
            to_js(&json!({"prompt": "make it snow", "image_url": "https://example.com/a.png"}));
        let error = reject(mock.client(json!({})).run(by_url, JsValue::UNDEFINED), code).await;
        assert_eq!(field(&error, "status").as_f64(), Some(f64::from(status)));
        assert_eq!(
            text(&error, "requestId").as_deref(),
            Some("req_test"),
            "{status} {envelope}"
        );
        assert_eq!(mock.count("create").await, 1, "{status} is not retried");
    }
    let mock = Scenario::new(json!({})).await;
    let error = reject(
        mock.client(json!({})).get_run(
            "00000000-0000-4000-8000-000000000000".into(),
            JsValue::UNDEFINED,
        ),
        "not_found",
    )
    .await;
    assert_eq!(
        text(&error, "runId").as_deref(),
        Some("00000000-0000-4000-8000-000000000000")
    );
}

#[wasm_bindgen_test]
async fn malformed_bodies_are_invalid_responses() {
    for body in [
        "<html><body>Bad gateway</body></html>",
        "{\"id\": \"abc\", \"status_co",
        "",
    ] {
        let mock = Scenario::new(json!({"faults": [{"on": "get", "action": {"type": "raw", "status": 200, "content_type": "text/html", "body": body}}]})).await;
        let client = mock.client(json!({}));
        let created = resolve(client.create_run(input(), JsValue::UNDEFINED)).await;
        let error = reject(
            client.get_run(
                created["id"].as_str().expect("id").into(),
                JsValue::UNDEFINED,
            ),
            "invalid_response",
        )
        .await;
        assert_eq!(text(&error, "runId").as_deref(), created["id"].as_str());
    }
}

#[wasm_bindgen_test]
async fn a_missing_proxy_says_so() {
    // What a static host answers where no proxy is mounted: an HTML 404.
    let options = to_js(&json!({"baseUrl": "/api/runflow"}));
    let static_404 = Function::new_no_args(
        "return new Response('<html><body>Not Found</body></html>', {status: 404, headers: {'content-type': 'text/html'}})",
    );
    Reflect::set(&options, &"fetch".into(), &static_404).expect("set");
    let client = KontextClient::new(options).expect("client");
    let error = reject(client.run(input(), JsValue::UNDEFINED), "not_found").await;
    assert!(
        text(&error, "message")
            .unwrap_or_default()
            .contains("proxy")
    );
    let unreachable = KontextClient::new(to_js(
        &json!({"baseUrl": "http://127.0.0.1:9", "maxRetries": 0}),
    ))
    .expect("client");
    let error = reject(
        unreachable.run(input(), JsValue::UNDEFINED),
        "connection_error",
    )
    .await;
    assert!(text(&error, "clientRef").is_some());
}

#[wasm_bindgen_test]
async fn options_reach_the_wire() {
    let mock = Scenario::new(json!({})).await;
    let calls = Array::new();
    let counting_fetch = Function::new_with_args(
        "calls",
        "return (url, init) => { calls.push(url); return fetch(url, init); }",
    )
    .call1(&JsValue::NULL, &calls)
    .expect("fn");
    let options = to_js(
        &json!({"baseUrl": mock.base_url, "pollIntervalMs": 20, "headers": {"X-Organization-Id": "org_7"}}),
    );
    Reflect::set(&options, &"fetch".into(), &counting_fetch).expect("set");
    let client = KontextClient::new(options).expect("client");
    resolve(client.run(input(), to_js(&json!({"idempotencyKey": "idem-1"})))).await;
    assert!(calls.length() >= 2, "the given fetch is used");
    let log = mock.log().await;
    assert_eq!(log[0]["headers"]["x-organization-id"], "org_7");
    assert_eq!(log[0]["headers"]["idempotency-key"], "idem-1");

    let other = Scenario::new(json!({})).await;
    let client = other.client(json!({"model": "acme/upscaler/v2"}));
    let run = resolve(client.run(
        to_js(&json!({"scale": 2, "image_url": PIXEL_PNG})),
        JsValue::UNDEFINED,
    ))
    .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        other.log().await[0]["path"],
        "/v1/models/acme/upscaler/v2/runs"
    );
}

#[wasm_bindgen_test]
async fn a_throwing_on_status_does_not_stop_the_wait() {
    let mock = Scenario::new(json!({})).await;
    let options = Object::new();
    Reflect::set(
        &options,
        &"onStatus".into(),
        &Function::new_with_args("run", "throw new Error('listener bug')"),
    )
    .expect("set");
    let run = resolve(mock.client(json!({})).run(input(), options.into())).await;
    assert_eq!(run["status"], "succeeded");
}
