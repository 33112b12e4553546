//! Browser tests of local images as input: File, Blob and bytes, inline `data:` URIs or the
//! three-step asset upload, against the dev server's mock (its log shows every step).
#![cfg(target_arch = "wasm32")]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use serde_json::{Value, json};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::AbortController;

wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::*;

const MIB: usize = 1024 * 1024;

/// The 8x8 PNG the other tests send as a data: URI, as bytes.
fn png() -> Vec<u8> {
    let payload = PIXEL_PNG.split_once(',').expect("data uri").1;
    STANDARD.decode(payload).expect("base64")
}

/// `len` bytes starting with `magic`, the rest zero: enough for the client, which only sniffs.
fn padded(magic: &[u8], len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    bytes[..magic.len()].copy_from_slice(magic);
    bytes
}

fn js_fn(args: &str, body: &str) -> Function {
    Function::new_with_args(args, body)
}

/// A File (when `name` is given) or a Blob of `bytes`, declared as `kind`.
fn blob(bytes: &[u8], kind: &str, name: Option<&str>) -> JsValue {
    let make = js_fn(
        "bytes, type, name",
        "return name ? new File([bytes], name, { type }) : new Blob([bytes], { type })",
    );
    let name = name.map_or(JsValue::UNDEFINED, JsValue::from);
    make.call3(
        &JsValue::NULL,
        &Uint8Array::from(bytes),
        &kind.into(),
        &name,
    )
    .expect("blob")
}

fn options(value: Value) -> Object {
    to_js(&value).unchecked_into()
}

fn set(target: &Object, key: &str, value: &JsValue) {
    Reflect::set(target, &key.into(), value).expect("set");
}

/// A JS function recording every `{loaded, total}` it is called with, as `[loaded, total]`.
fn progress_recorder() -> (Function, Array) {
    let seen = Array::new();
    let record = js_fn("seen", "return (p) => seen.push([p.loaded, p.total])")
        .call1(&JsValue::NULL, &seen)
        .expect("fn");
    (record.unchecked_into(), seen)
}

fn progress(seen: &Array) -> Vec<(f64, f64)> {
    seen.iter()
        .map(|pair| {
            let pair: Array = pair.unchecked_into();
            (
                pair.get(0).as_f64().expect("loaded"),
                pair.get(1).as_f64().expect("total"),
            )
        })
        .collect()
}

async fn upload_image(
    client: &runflow_kontext::KontextClient,
    image: JsValue,
    opts: Object,
) -> String {
    let url = JsFuture::from(client.upload_image(image, opts.into()))
        .await
        .unwrap_or_else(|e| panic!("rejected: {:?}", text(&e, "message")));
    url.as_string().expect("a string")
}

/// The `image_url` a create sends for `image`, read off the request itself (the mock's log
/// shortens `data:` URIs): what the local-image pipeline makes of it, seen from the wire.
async fn sent_image_url(mock: &Scenario, options: Value, image: JsValue) -> String {
    let capture = js_fn(
        "",
        "const seen = {}; seen.fetch = (url, init) => { \
           if (init.method === 'POST' && url.endsWith('/runs')) seen.url = JSON.parse(init.body).input.image_url; \
           return fetch(url, init); }; return seen;",
    )
    .call0(&JsValue::NULL)
    .expect("capture");
    let mut merged = json!({"baseUrl": mock.base_url});
    if let (Value::Object(merged), Value::Object(options)) = (&mut merged, options) {
        merged.extend(options);
    }
    let merged = to_js(&merged);
    set(
        merged.unchecked_ref(),
        "fetch",
        &Reflect::get(&capture, &"fetch".into()).expect("fetch"),
    );
    let client = runflow_kontext::KontextClient::new(merged).expect("client");
    let input = Object::new();
    set(&input, "prompt", &"p".into());
    set(&input, "image", &image);
    resolve(client.create_run(input.into(), JsValue::UNDEFINED)).await;
    Reflect::get(&capture, &"url".into())
        .ok()
        .and_then(|url| url.as_string())
        .expect("a create was sent")
}

fn kinds(log: &[Value]) -> Vec<String> {
    log.iter()
        .map(|entry| entry["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[wasm_bindgen_test]
async fn each_input_kind_reaches_runflow() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let bytes = png();
    let buffer = Uint8Array::from(bytes.as_slice()).buffer();
    // A view into the middle of a bigger buffer: only its own bytes are the image.
    let mut framed = vec![7u8; 5];
    framed.extend(&bytes);
    framed.extend([9u8; 3]);
    let view = Uint8Array::new_with_byte_offset_and_length(
        &Uint8Array::from(framed.as_slice()).buffer(),
        5,
        bytes.len() as u32,
    );
    let inputs: [(&str, JsValue); 6] = [
        ("File", blob(&bytes, "image/png", Some("pixel.png"))),
        ("Blob", blob(&bytes, "", None)),
        ("ArrayBuffer", buffer.into()),
        ("Uint8Array view", view.into()),
        ("data: URI", PIXEL_PNG.into()),
        ("local URL", format!("{MOCK}/samples/lakeside.jpg").into()),
    ];
    for (kind, image) in inputs {
        let input = Object::new();
        set(&input, "prompt", &"make it snow".into());
        set(&input, "image", &image);
        let run = resolve(client.run(input.into(), JsValue::UNDEFINED)).await;
        assert_eq!(run["status"], "succeeded", "{kind}");
    }
    let log = mock.log().await;
    let creates: Vec<&Value> = log.iter().filter(|e| e["kind"] == "create").collect();
    assert_eq!(creates.len(), 6);
    let sent_png = format!("data:image/png;base64,… ({} bytes)", bytes.len());
    for create in &creates[..5] {
        assert_eq!(create["body"]["input"]["image_url"], sent_png.as_str());
    }
    assert!(
        !kinds(&log).iter().any(|k| k.starts_with("upload")),
        "all inline"
    );
}

#[wasm_bindgen_test]
async fn the_magic_number_decides_not_the_name() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let cases: [(&[u8], &str); 6] = [
        (b"\xFF\xD8\xFF\xE0\0\x10JFIF\0", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
        (b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\0\x01\0", "image/gif"),
        (b"\0\0\0\x1cftypavif\0\0", "image/avif"),
        (b"\0\0\0\x1cftypavis\0\0", "image/avif"),
    ];
    for (magic, mime) in cases {
        // Declared as something else entirely: the bytes win.
        let file = blob(&padded(magic, 64), "text/plain", Some("notes.txt"));
        let url = sent_image_url(&mock, json!({}), file).await;
        assert!(
            url.starts_with(&format!("data:{mime};base64,")),
            "{mime}: {url}"
        );
    }

    let refusals: [(JsValue, &str); 4] = [
        (
            blob(b"<!doctype html><p>hi", "image/png", Some("a.png")),
            "not a JPEG, PNG, WebP, GIF or AVIF",
        ),
        (
            blob(&padded(b"\0\0\0\x18ftypheic", 64), "image/heic", None),
            "HEIC",
        ),
        (blob(b"", "image/png", None), "empty"),
        (
            blob(
                &padded(b"\x89PNG\r\n\x1a\n", 50 * MIB + 1),
                "image/png",
                None,
            ),
            "50 MiB",
        ),
    ];
    let sent = mock.log().await.len();
    for (image, says) in refusals {
        let error = reject(
            client.upload_image(image.clone(), JsValue::UNDEFINED),
            "validation_error",
        )
        .await;
        assert_eq!(text(&error, "field").as_deref(), Some("image"));
        assert!(
            text(&error, "message").unwrap_or_default().contains(says),
            "{says}"
        );
        // The same refusal from run(), before any request.
        let input = Object::new();
        set(&input, "prompt", &"p".into());
        set(&input, "image_url", &image);
        let error = reject(
            client.run(input.into(), JsValue::UNDEFINED),
            "validation_error",
        )
        .await;
        assert_eq!(text(&error, "field").as_deref(), Some("image_url"));
    }
    assert_eq!(
        mock.log().await.len(),
        sent,
        "no request for what is not an image"
    );
}

#[wasm_bindgen_test]
async fn the_threshold_both_sides() {
    let inline = Scenario::new(json!({})).await;
    let under = sent_image_url(
        &inline,
        json!({"uploadThreshold": 1000}),
        blob(&padded(b"GIF89a", 999), "", None),
    )
    .await;
    assert!(under.starts_with("data:image/gif;base64,"));
    assert_eq!(kinds(&inline.log().await), ["create"]);

    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({"uploadThreshold": 1000}));

    let at = upload_image(
        &client,
        blob(&padded(b"GIF89a", 1000), "", Some("a.gif")),
        Object::new(),
    )
    .await;
    assert!(at.starts_with("http://"), "{at}");
    let log = mock.log().await;
    assert_eq!(
        kinds(&log),
        ["upload_create", "upload_put", "upload_confirm"]
    );
    assert_eq!(
        log[0]["body"],
        json!({"filename": "a.gif", "mime_type": "image/gif", "size_bytes": 1000})
    );
    // The asset URL serves the very bytes.
    let served = gloo_net::http::Request::get(&at)
        .send()
        .await
        .expect("asset");
    assert_eq!(
        served.binary().await.expect("bytes"),
        padded(b"GIF89a", 1000)
    );

    // The default threshold is 1 MiB.
    let just_under = sent_image_url(
        &inline,
        json!({}),
        blob(&padded(b"GIF89a", MIB - 1), "", None),
    )
    .await;
    assert!(just_under.starts_with("data:image/gif;base64,"));
    assert_eq!(
        just_under.len(),
        "data:image/gif;base64,".len() + (MIB - 1).div_ceil(3) * 4
    );
}

#[wasm_bindgen_test]
async fn a_run_from_an_uploaded_file_with_one_upload_and_no_key_on_the_put() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({
        "uploadThreshold": 0,
        "apiKey": "rf_test_key",
        "dangerouslyAllowBrowser": true,
        "headers": {"x-organization-id": "org_1"},
    }));
    let input = Object::new();
    set(&input, "prompt", &"make it snow".into());
    set(
        &input,
        "image",
        &blob(&png(), "image/png", Some("pixel.png")),
    );
    let (on_progress, seen) = progress_recorder();
    let opts = Object::new();
    set(&opts, "onUploadProgress", &on_progress);
    let run = resolve(client.run(input.into(), opts.into())).await;
    assert_eq!(run["status"], "succeeded");
    assert!(run["output"]["outputs"][0]["url"].is_string());

    let log = mock.log().await;
    assert_eq!(
        kinds(&log)[..4],
        ["upload_create", "upload_put", "upload_confirm", "create"]
    );
    let put = &log[1];
    assert_eq!(put["method"], "PUT");
    assert!(
        put["headers"].get("authorization").is_none(),
        "no Authorization on the presigned PUT"
    );
    assert!(
        put["headers"].get("x-organization-id").is_none(),
        "no API headers on the PUT"
    );
    assert_eq!(put["headers"]["content-type"], "image/png");
    for api_call in [&log[0], &log[2], &log[3]] {
        assert_eq!(api_call["headers"]["authorization"], "Bearer [redacted]");
    }
    let asset_url = log[3]["body"]["input"]["image_url"].as_str().expect("url");
    assert!(asset_url.contains("/__mock/assets/"), "{asset_url}");
    let events = progress(&seen);
    let total = png().len() as f64;
    assert_eq!(events.last(), Some(&(total, total)));
}

#[wasm_bindgen_test]
async fn a_20_mib_upload_reports_progress_to_100_percent() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({}));
    let size = 20 * MIB;
    let (on_progress, seen) = progress_recorder();
    let opts = Object::new();
    set(&opts, "onUploadProgress", &on_progress);
    let started = now();
    let url = upload_image(
        &client,
        blob(&padded(b"\xFF\xD8\xFF", size), "image/jpeg", None),
        opts,
    )
    .await;
    assert!(url.starts_with("http://"));
    let events = progress(&seen);
    // On loopback 20 MiB may go out between two progress events; the e2e test throttles the
    // uplink to see the partial ones. Either way: partial ones below total, then done once.
    let (last, partial) = events.split_last().expect("at least the final event");
    assert_eq!(*last, (size as f64, size as f64));
    assert!(
        partial
            .iter()
            .all(|&(loaded, total)| loaded < total && total == size as f64)
    );
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0),
        "never backwards"
    );
    let log = mock.log().await;
    assert_eq!(log[1]["body"]["bytes"], size);
    console_log!(
        "20 MiB upload: {} ms, {} progress events",
        now() - started,
        events.len()
    );
}

#[wasm_bindgen_test]
async fn each_step_failing() {
    let image = || blob(&padded(b"GIF89a", 64), "", None);
    let fault = |on: &str, status: u16, times: u32| json!({"on": on, "times": times, "action": {"type": "error", "status": status}});

    // Transient failures of each step are retried, and nothing is done twice.
    let mock = Scenario::new(json!({"faults": [
        fault("upload_create", 503, 1), fault("upload_put", 500, 1), fault("upload_confirm", 429, 1),
    ]}))
    .await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    upload_image(&client, image(), Object::new()).await;
    assert_eq!(
        kinds(&mock.log().await),
        [
            "upload_create",
            "upload_create",
            "upload_put",
            "upload_put",
            "upload_confirm",
            "upload_confirm"
        ]
    );

    // A PUT refused with 403 (an expired URL) gets one fresh slot.
    let mock = Scenario::new(json!({"faults": [fault("upload_put", 403, 1)]})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    upload_image(&client, image(), Object::new()).await;
    assert_eq!(
        kinds(&mock.log().await),
        [
            "upload_create",
            "upload_put",
            "upload_create",
            "upload_put",
            "upload_confirm"
        ]
    );

    // Really expired URLs, twice: said plainly.
    let mock = Scenario::new(json!({"upload_ttl_ms": 1})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let error = reject(
        client.upload_image(image(), JsValue::UNDEFINED),
        "permission_denied",
    )
    .await;
    assert!(
        text(&error, "message")
            .unwrap_or_default()
            .contains("expired")
    );
    assert_eq!(field(&error, "status").as_f64(), Some(403.0));
    assert_eq!(
        kinds(&mock.log().await),
        ["upload_create", "upload_put", "upload_create", "upload_put"]
    );

    // Refusals are not retried and keep their meaning.
    let cases = [
        ("upload_create", 422, "validation_error"),
        ("upload_create", 402, "insufficient_credit"),
        ("upload_put", 400, "validation_error"),
        ("upload_confirm", 409, "conflict"),
        ("upload_confirm", 404, "not_found"),
    ];
    for (on, status, code) in cases {
        let mock = Scenario::new(json!({"faults": [fault(on, status, 1)]})).await;
        let client = mock.client(json!({"uploadThreshold": 0}));
        let error = reject(client.upload_image(image(), JsValue::UNDEFINED), code).await;
        assert_eq!(
            field(&error, "status").as_f64(),
            Some(f64::from(status)),
            "{on}"
        );
        assert_eq!(
            text(&error, "step").as_deref(),
            Some(on),
            "the step is named"
        );
        if on == "upload_put" {
            let message = text(&error, "message").unwrap_or_default();
            assert!(message.contains("storage"), "{message}");
        }
        let log = mock.log().await;
        assert_eq!(
            log.iter().filter(|e| e["kind"] == on).count(),
            1,
            "{on} {status} not retried"
        );
    }

    // A dropped connection during the PUT is retried.
    let mock = Scenario::new(json!({"faults": [
        {"on": "upload_put", "action": {"type": "drop"}},
    ]}))
    .await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    upload_image(&client, image(), Object::new()).await;
    assert_eq!(mock.count("upload_put").await, 2);
    assert_eq!(mock.count("upload_confirm").await, 1);

    // Retry-After on the storage's 503 is honoured (it reaches the client through the XHR).
    let slow_down =
        json!({"on": "upload_put", "action": {"type": "error", "status": 503, "retry_after": "1"}});
    let mock = Scenario::new(json!({"faults": [slow_down]})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let started = now();
    upload_image(&client, image(), Object::new()).await;
    assert!(now() - started >= 950.0, "waited {} ms", now() - started);
    assert_eq!(mock.count("upload_put").await, 2);

    // A storage answering 204 with no body: taken as stored, not left hanging.
    let no_content = json!({"on": "upload_put", "action": {"type": "raw", "status": 204}});
    let mock = Scenario::new(json!({"faults": [no_content]})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    // The raw fault stores nothing, so the confirmation that follows is refused.
    let error = reject(client.upload_image(image(), JsValue::UNDEFINED), "conflict").await;
    assert_eq!(text(&error, "step").as_deref(), Some("upload_confirm"));
}

#[wasm_bindgen_test]
async fn a_create_too_large_for_the_proxy_is_made_again_with_the_image_uploaded() {
    let too_large = json!({"on": "create", "action": {"type": "error", "status": 413}});
    let mock = Scenario::new(json!({"faults": [too_large]})).await;
    let client = mock.client(json!({}));
    let input = Object::new();
    set(&input, "prompt", &"make it snow".into());
    set(
        &input,
        "image",
        &blob(&png(), "image/png", Some("pixel.png")),
    );
    let opts = options(json!({"idempotencyKey": "order-9"}));
    let run = resolve(client.run(input.into(), opts.into())).await;
    assert_eq!(run["status"], "succeeded");
    let log = mock.log().await;
    assert_eq!(
        kinds(&log)[..5],
        [
            "create",
            "upload_create",
            "upload_put",
            "upload_confirm",
            "create"
        ]
    );
    assert_eq!(log[0]["status"], 413);
    assert!(
        log[0]["body"]["input"]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:")
    );
    assert!(
        log[4]["body"]["input"]["image_url"]
            .as_str()
            .unwrap()
            .contains("/__mock/assets/")
    );
    assert_eq!(log[0]["headers"]["idempotency-key"], "order-9");
    assert_eq!(
        log[4]["headers"]["idempotency-key"], "order-9-upload",
        "another body, another key"
    );
    assert_eq!(log[0]["body"]["client_ref"], log[4]["body"]["client_ref"]);
    assert_eq!(mock.runs().await.len(), 1);

    // An https URL is not the client's to upload: the 413 stands.
    let mock = Scenario::new(json!({"faults": [too_large]})).await;
    let client = mock.client(json!({}));
    let url_input = to_js(&json!({"prompt": "p", "image_url": "https://example.com/a.png"}));
    reject(
        client.create_run(url_input, JsValue::UNDEFINED),
        "payload_too_large",
    )
    .await;
    assert_eq!(mock.log().await.len(), 1);
}

#[wasm_bindgen_test]
async fn a_fetch_option_is_for_the_api_not_for_the_storage() {
    let mock = Scenario::new(json!({})).await;
    // An app's fetch that adds its own credentials for its backend.
    let app_fetch = js_fn(
        "",
        "return (url, init) => fetch(url, { ...init, headers: { ...init.headers, authorization: 'Bearer rf_app_session' } })",
    )
    .call0(&JsValue::NULL)
    .expect("fetch");
    let client_with_fetch = {
        let options = to_js(&json!({"baseUrl": mock.base_url, "uploadThreshold": 0}));
        set(options.unchecked_ref(), "fetch", &app_fetch);
        runflow_kontext::KontextClient::new(options).expect("client")
    };
    let (on_progress, seen) = progress_recorder();
    let opts = Object::new();
    set(&opts, "onUploadProgress", &on_progress);
    upload_image(
        &client_with_fetch,
        blob(&padded(b"GIF89a", 2 * MIB), "", None),
        opts,
    )
    .await;
    let log = mock.log().await;
    assert_eq!(
        log[0]["headers"]["authorization"], "Bearer [redacted]",
        "API calls use it"
    );
    assert!(
        log[1]["headers"].get("authorization").is_none(),
        "the PUT does not"
    );
    assert_eq!(log[1]["body"]["bytes"], 2 * MIB);
    let events = progress(&seen);
    assert_eq!(
        events
            .iter()
            .filter(|(loaded, total)| loaded == total)
            .count(),
        1,
        "{events:?}"
    );

    // prepareImage options given as null take their defaults.
    let nulls = to_js(
        &json!({"baseUrl": mock.base_url, "prepareImage": {"maxMegapixels": null, "quality": null, "type": null}}),
    );
    runflow_kontext::KontextClient::new(nulls).expect("nulls are absent");
    assert_eq!(
        sent_image_url(
            &mock,
            json!({"prepareImage": {"maxMegapixels": null, "quality": null, "type": null}}),
            blob(&png(), "image/png", None)
        )
        .await,
        PIXEL_PNG
    );
}

#[wasm_bindgen_test]
async fn abort_and_deadline_stop_an_upload_mid_way() {
    let hang = json!({"faults": [{"on": "upload_put", "action": {"type": "hang"}}]});
    let mock = Scenario::new(hang.clone()).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let controller = AbortController::new().expect("controller");
    let opts = Object::new();
    set(&opts, "signal", &controller.signal());
    let input = Object::new();
    set(&input, "prompt", &"p".into());
    set(
        &input,
        "image",
        &blob(&padded(b"GIF89a", 4 * MIB), "", None),
    );
    let pending = client.run(input.into(), opts.into());
    let abort = Closure::once_into_js(move || controller.abort());
    js_fn("abort", "setTimeout(abort, 300)")
        .call1(&JsValue::NULL, &abort)
        .expect("timer");
    let started = now();
    reject(pending, "aborted").await;
    assert!(now() - started < 1500.0, "aborted at once");
    assert_eq!(
        mock.count("create").await,
        0,
        "no run after an aborted upload"
    );

    let mock = Scenario::new(hang).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let started = now();
    let opts = options(json!({"timeoutMs": 400}));
    reject(
        client.upload_image(blob(&padded(b"GIF89a", 64), "", None), opts.into()),
        "timeout",
    )
    .await;
    assert!(now() - started < 1500.0);
}

#[wasm_bindgen_test]
async fn prepare_image_downscales_upright_by_exif() {
    // A 40x20 JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6).
    let draw = js_fn(
        "",
        "const c = new OffscreenCanvas(40, 20); const x = c.getContext('2d'); \
         x.fillStyle = '#c33'; x.fillRect(0, 0, 40, 20); \
         return c.convertToBlob({ type: 'image/jpeg', quality: 0.9 }).then((b) => b.arrayBuffer());",
    );
    let plain = JsFuture::from(js_sys::Promise::from(
        draw.call0(&JsValue::NULL).expect("draw"),
    ))
    .await
    .expect("jpeg");
    let plain = Uint8Array::new(&plain).to_vec();
    let exif: &[u8] = b"\xFF\xE1\x00\x22Exif\0\0MM\0\x2A\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let mut rotated = plain[..2].to_vec();
    rotated.extend(exif);
    rotated.extend(&plain[2..]);

    let mock = Scenario::new(json!({})).await;
    let client =
        mock.client(json!({"prepareImage": {"maxMegapixels": 0.0002, "type": "image/png"}}));
    let url = sent_image_url(
        &mock,
        json!({"prepareImage": {"maxMegapixels": 0.0002, "type": "image/png"}}),
        blob(&rotated, "image/jpeg", Some("phone.jpg")),
    )
    .await;
    assert!(
        url.starts_with("data:image/png;base64,"),
        "re-encoded as asked"
    );
    let size = js_fn(
        "url",
        "return fetch(url).then((r) => r.blob()).then(createImageBitmap).then((b) => [b.width, b.height]);",
    );
    let dims = JsFuture::from(js_sys::Promise::from(
        size.call1(&JsValue::NULL, &url.into()).expect("size"),
    ))
    .await
    .expect("decoded");
    let dims: Array = dims.unchecked_into();
    let (w, h) = (dims.get(0).as_f64().unwrap(), dims.get(1).as_f64().unwrap());
    assert!(w * h <= 200.0 && w * h > 100.0, "{w}x{h} fits 200 pixels");
    assert!(h > w, "turned upright: {w}x{h}");

    // An abort does not wait for a big picture to be decoded and re-encoded.
    let big = js_fn(
        "",
        "const c = new OffscreenCanvas(8000, 6000); c.getContext('2d').fillRect(0, 0, 10, 10); \
         return c.convertToBlob({ type: 'image/png' });",
    );
    let big = JsFuture::from(js_sys::Promise::from(
        big.call0(&JsValue::NULL).expect("draw"),
    ))
    .await
    .expect("png");
    let controller = AbortController::new().expect("controller");
    let opts = Object::new();
    set(&opts, "signal", &controller.signal());
    let started = now();
    let pending = client.upload_image(big, opts.into());
    // Once the reading has begun (an abort before it is caught by the first check).
    let abort = Closure::once_into_js(move || controller.abort());
    js_fn("abort", "setTimeout(abort, 20)")
        .call1(&JsValue::NULL, &abort)
        .expect("timer");
    reject(pending, "aborted").await;
    assert!(now() - started < 80.0, "aborted in {} ms", now() - started);

    // Small pictures are left exactly as they are.
    let url = sent_image_url(
        &mock,
        json!({"prepareImage": true}),
        blob(&png(), "image/png", None),
    )
    .await;
    assert_eq!(url, PIXEL_PNG);

    let bad =
        runflow_kontext::KontextClient::new(to_js(&json!({"prepareImage": {"type": "image/bmp"}})));
    assert!(bad.is_err());
}

#[wasm_bindgen_test]
async fn a_data_uri_too_big_to_send_inline_is_uploaded() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({"uploadThreshold": 1000}));
    let small = format!(
        "data:image/gif;base64,{}",
        STANDARD.encode(padded(b"GIF89a", 999))
    );
    let big = format!(
        "data:image/gif;base64,{}",
        STANDARD.encode(padded(b"GIF89a", 1000))
    );
    for (uri, uploads) in [(&small, 0), (&big, 1)] {
        let input = Object::new();
        set(&input, "prompt", &"p".into());
        set(&input, "image_url", &uri.into());
        resolve(client.create_run(input.into(), JsValue::UNDEFINED)).await;
        assert_eq!(mock.count("upload_put").await, uploads);
    }
    let log = mock.log().await;
    let creates: Vec<&Value> = log.iter().filter(|e| e["kind"] == "create").collect();
    assert_eq!(
        creates[0]["body"]["input"]["image_url"],
        "data:image/gif;base64,… (999 bytes)"
    );
    assert!(
        creates[1]["body"]["input"]["image_url"]
            .as_str()
            .unwrap()
            .contains("/__mock/assets/")
    );
    let put = log.iter().find(|e| e["kind"] == "upload_put").unwrap();
    assert_eq!(put["body"]["bytes"], 1000);

    // uploadImage reads any data: URI as bytes, checked by its magic number, and uploads them.
    let declared_png = format!(
        "data:image/png;base64,{}",
        STANDARD.encode(padded(b"GIF89a", 10))
    );
    let url = upload_image(&client, declared_png.into(), Object::new()).await;
    assert!(url.contains("/__mock/assets/"), "{url}");
    let slot = mock
        .log()
        .await
        .into_iter()
        .rfind(|e| e["kind"] == "upload_create")
        .expect("uploaded");
    assert_eq!(slot["body"]["mime_type"], "image/gif");
    reject(
        client.upload_image("data:image/png;base64,@@@".into(), JsValue::UNDEFINED),
        "validation_error",
    )
    .await;
}

#[wasm_bindgen_test]
async fn a_bad_field_costs_no_upload() {
    let mock = Scenario::new(json!({})).await;
    let client = mock.client(json!({"uploadThreshold": 0}));
    let input = Object::new();
    set(&input, "prompt", &"p".into());
    set(&input, "num_images", &9.into());
    set(&input, "image", &blob(&png(), "image/png", None));
    let error = reject(
        client.run(input.into(), JsValue::UNDEFINED),
        "validation_error",
    )
    .await;
    assert_eq!(text(&error, "field").as_deref(), Some("num_images"));

    let both = Object::new();
    set(&both, "prompt", &"p".into());
    set(&both, "image", &blob(&png(), "image/png", None));
    set(&both, "image_url", &PIXEL_PNG.into());
    reject(
        client.create_run(both.into(), JsValue::UNDEFINED),
        "validation_error",
    )
    .await;
    reject(
        client.upload_image("https://example.com/a.png".into(), JsValue::UNDEFINED),
        "validation_error",
    )
    .await;
    assert_eq!(mock.log().await.len(), 0);
}
