//! Browser tests of what real use found (issue 11): values React code writes, proxies with small
//! body caps, reused refs, networks that come and go, and callbacks that throw. Each failed
//! before its fix.
#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Object, Reflect};
use runflow_kontext::KontextClient;
use serde_json::{Value, json};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::AbortController;

wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::*;

/// A JS value built by JS itself, for what JSON cannot write (`undefined`, functions).
fn js(body: &str) -> JsValue {
    Function::new_no_args(body)
        .call0(&JsValue::NULL)
        .expect("js value")
}

fn set(target: &JsValue, key: &str, value: &JsValue) {
    Reflect::set(target, &key.into(), value).expect("set");
}

fn kinds(log: &[Value]) -> Vec<&str> {
    log.iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect()
}

#[wasm_bindgen_test]
async fn undefined_members_are_absent_as_json_stringify_treats_them() {
    let mock = Scenario::new(json!({})).await;
    let options = to_js(&json!({"baseUrl": mock.base_url, "pollIntervalMs": 20}));
    set(&options, "headers", &js("return { 'x-trace': undefined }"));
    let client = KontextClient::new(options).expect("headers that are undefined are absent");
    let input = js(&format!(
        "return {{ prompt: 'snow', image_url: '{PIXEL_PNG}', seed: undefined, image: undefined, aspect_ratio: undefined, num_images: undefined }}"
    ));
    let options = js(
        "return { clientRef: undefined, metadata: undefined, signal: undefined, onStatus: undefined, timeoutMs: undefined }",
    );
    let run = resolve(client.run(input, options)).await;
    assert_eq!(run["status"], "succeeded");
    let sent = &mock.log().await[0]["body"]["input"];
    assert_eq!(
        sent.as_object().map(|o| o.len()),
        Some(2),
        "only prompt and image_url: {sent}"
    );
}

#[wasm_bindgen_test]
async fn a_data_uri_refused_as_too_large_is_uploaded_once_and_then_at_once() {
    // A proxy with a small body cap refuses the first inline create.
    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "error", "status": 413, "message": "Payload too large"}}]})).await;
    let client = mock.client(json!({}));
    let run = resolve(client.run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(run["status"], "succeeded");
    let log = mock.log().await;
    let first: Vec<&str> = kinds(&log).into_iter().filter(|k| *k != "get").collect();
    assert_eq!(
        first,
        [
            "create",
            "upload_create",
            "upload_put",
            "upload_confirm",
            "create"
        ]
    );
    let sent = log
        .iter()
        .rfind(|e| e["kind"] == "create")
        .map(|e| e["body"]["input"]["image_url"].clone())
        .expect("create");
    assert!(
        sent.as_str().is_some_and(|url| url.starts_with("http")),
        "{sent}"
    );
    assert_eq!(mock.runs().await.len(), 1);

    // The client learnt the limit for this baseUrl, and it remembers the upload of these bytes
    // (issue 14): a new client sends the run with the asset URL at once, with no 413 and no
    // second upload.
    let seen = log.len();
    let again = resolve(mock.client(json!({})).run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(again["status"], "succeeded");
    let later = mock.log().await;
    let kinds_after: Vec<&str> = kinds(&later[seen..])
        .into_iter()
        .filter(|k| *k != "get")
        .collect();
    assert_eq!(kinds_after, ["create"]);
    let resent = later
        .iter()
        .rfind(|e| e["kind"] == "create")
        .map(|e| e["body"]["input"]["image_url"].clone());
    assert_eq!(resent, Some(sent));
}

#[wasm_bindgen_test]
async fn upload_image_always_uploads() {
    let mock = Scenario::new(json!({})).await;
    let url = JsFuture::from(
        mock.client(json!({}))
            .upload_image(PIXEL_PNG.into(), JsValue::UNDEFINED),
    )
    .await
    .expect("uploaded")
    .as_string()
    .expect("a URL");
    assert!(url.starts_with("http"), "an asset URL, not inline: {url}");
    assert_eq!(
        kinds(&mock.log().await),
        ["upload_create", "upload_put", "upload_confirm"]
    );
}

#[wasm_bindgen_test]
async fn a_reused_client_ref_never_returns_an_older_run() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let ref_options = || to_js(&json!({"clientRef": "order-7"}));
    let older = resolve(client.create_run(input(), ref_options())).await;

    // The next create with that ref gets no answer and made nothing: the look-up finds only the
    // older run, with another input, which is not this call's; so it is created anew.
    let other_input = to_js(&json!({"prompt": "make it rain", "image_url": PIXEL_PNG}));
    mock.add_faults(json!([{"on": "create", "action": {"type": "drop"}}, {"on": "create", "action": {"type": "drop"}}]))
        .await;
    let run = resolve(client.create_run(other_input, ref_options())).await;
    assert_ne!(run["id"], older["id"]);
    assert_eq!(run["input"]["prompt"], "make it rain");
    assert_eq!(mock.runs().await.len(), 2);
    assert!(mock.count("search").await >= 1);
}

#[wasm_bindgen_test]
async fn offline_between_polls_waits_for_the_network_without_spending_retries() {
    let mock = Scenario::new(json!({"lifecycle_ms": [100, 100, 300]})).await;
    // navigator.onLine and the network, as the page sees them, under the test's control: while
    // "offline", every fetch fails as a real one would.
    let network = js("
        const state = { offline: false, failed: 0 };
        Object.defineProperty(navigator, 'onLine', { configurable: true, get: () => !state.offline });
        state.fetch = (url, init) => {
            if (state.offline) { state.failed++; return Promise.reject(new TypeError('Failed to fetch')); }
            return fetch(url, init);
        };
        return state;
    ");
    let options = to_js(
        &json!({"baseUrl": mock.base_url, "pollIntervalMs": 50, "retryBaseMs": 5, "retryMaxMs": 20, "maxRetries": 2}),
    );
    set(
        &options,
        "fetch",
        &Reflect::get(&network, &"fetch".into()).expect("fetch"),
    );
    let client = KontextClient::new(options).expect("client");
    let created = resolve(client.create_run(input(), JsValue::UNDEFINED)).await;
    let id = created["id"].as_str().expect("id").to_owned();

    set(&network, "offline", &JsValue::TRUE);
    let waiting = client.wait_for_run(id.as_str().into(), JsValue::UNDEFINED);
    // Offline for longer than all the retries would take, then the network returns.
    gloo_timers::future::TimeoutFuture::new(1_500).await;
    let back = now();
    set(&network, "offline", &JsValue::FALSE);
    js("window.dispatchEvent(new Event('online'))");
    let done = resolve(waiting).await;
    js("delete navigator.onLine");
    assert_eq!(done["status"], "succeeded");
    assert!(
        now() - back < 1_000.0,
        "resumed at the online event, {} ms after",
        now() - back
    );
    let failed = Reflect::get(&network, &"failed".into())
        .ok()
        .and_then(|n| n.as_f64())
        .unwrap_or(f64::NAN);
    assert_eq!(failed, 0.0, "no request was sent while offline");
}

#[wasm_bindgen_test]
async fn a_create_honours_the_retry_after_cap_and_the_deadline() {
    // Retry-After of an hour on an unknown outcome: looked up at once, not slept on.
    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "error", "status": 502, "retry_after": "3600"}}]})).await;
    let started = now();
    let error = reject(
        mock.client(json!({}))
            .create_run(input(), JsValue::UNDEFINED),
        "server_error",
    )
    .await;
    assert!(now() - started < 3_000.0, "{} ms", now() - started);
    assert_eq!(field(&error, "retryAfterMs").as_f64(), Some(3_600_000.0));
    assert!(text(&error, "clientRef").is_some());
    assert_eq!(mock.count("create").await, 1);
    assert_eq!(mock.count("search").await, 1);

    // A wait past the deadline is not made either.
    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "error", "status": 502, "retry_after": "5"}}]})).await;
    let started = now();
    reject(
        mock.client(json!({}))
            .create_run(input(), to_js(&json!({"timeoutMs": 2_000}))),
        "server_error",
    )
    .await;
    assert!(now() - started < 2_000.0, "{} ms", now() - started);
    assert_eq!(mock.count("create").await, 1);
}

#[wasm_bindgen_test]
async fn the_last_attempts_unknown_outcome_is_looked_up() {
    let mock = Scenario::new(json!({"faults": [
        {"on": "create", "action": {"type": "create_then_drop"}},
        {"on": "create", "action": {"type": "drop"}},
    ]}))
    .await;
    let run = resolve(
        mock.client(json!({"maxRetries": 0}))
            .create_run(input(), JsValue::UNDEFINED),
    )
    .await;
    assert_eq!(mock.runs().await.len(), 1);
    assert_eq!(mock.runs().await[0]["id"], run["id"]);
    assert_eq!(mock.count("search").await, 1);
}

#[wasm_bindgen_test]
async fn keys_are_redacted_from_every_field_and_authorization_is_a_key() {
    let key = "rf_live_0123456789abcdef";
    let long = format!("{}{key}", "x".repeat(290));
    let body = json!({"code": format!("E_{key}"), "message": long, "errors": [{"field": format!("input.{key}"), "message": "bad"}]}).to_string();
    let mock = Scenario::new(json!({"faults": [{"on": "create", "action": {"type": "raw", "status": 422, "content_type": "application/json", "body": body}}]})).await;
    let client = mock.client(json!({"headers": {"Authorization": format!("Bearer {key}")}, "dangerouslyAllowBrowser": true}));
    let error = reject(client.run(input(), JsValue::UNDEFINED), "validation_error").await;
    let shown = to_json(&error).to_string() + &text(&error, "message").unwrap_or_default();
    assert!(
        !shown.contains("rf_live"),
        "key or its prefix leaked: {shown}"
    );
    assert!(shown.contains("[redacted]"));

    // In a browser, an Authorization header is refused like apiKey.
    let refused = KontextClient::new(to_js(
        &json!({"headers": {"authorization": "Bearer rf_live_x"}}),
    ))
    .err()
    .expect("refused");
    assert_eq!(
        text(&refused, "code").as_deref(),
        Some("browser_key_refused")
    );
}

#[wasm_bindgen_test]
async fn an_aborted_signal_still_names_the_run() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let controller = AbortController::new().expect("controller");
    controller.abort();
    let options = Object::new();
    set(&options, "signal", &controller.signal());
    for pending in [
        client.get_run("run-1".into(), options.clone().into()),
        client.wait_for_run("run-1".into(), options.clone().into()),
    ] {
        let error = reject(pending, "aborted").await;
        assert_eq!(text(&error, "runId").as_deref(), Some("run-1"));
    }
    assert!(mock.log().await.is_empty());
}

#[wasm_bindgen_test]
async fn throwing_callbacks_neither_stop_the_run_nor_get_lost() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let image = js(&format!(
        "return {{ prompt: 'snow', image: Uint8Array.from(atob('{}'), (c) => c.charCodeAt(0)) }}",
        PIXEL_PNG.split_once(',').expect("base64").1
    ));
    let options = js(
        "return { onStatus() { throw new Error('status bug'); }, onUploadProgress() { throw new Error('progress bug'); } }",
    );
    let run = resolve(client.run(image, options)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(mock.runs().await.len(), 1);

    // When the call then fails, what the callback threw is the error's cause.
    let failing = Scenario::new(json!({"final_status": "failed"})).await;
    let options = js("return { onStatus() { throw new Error('status bug'); } }");
    let error = reject(
        failing.client(json!({})).run(input(), options),
        "run_failed",
    )
    .await;
    let cause = field(&error, "cause");
    assert_eq!(
        text(&cause, "message").as_deref(),
        Some("status bug"),
        "cause: {cause:?}"
    );
    // The same client goes on working.
    let next = resolve(client.run(input(), JsValue::UNDEFINED)).await;
    assert_eq!(next["status"], "succeeded");
}
