//! Real output images: decoding, cropping, formats, sync mode, input resolution, file URLs.

use image::{GenericImageView, ImageFormat};
use serde_json::{json, Value};

use super::*;

async fn finished(app: &Router, input: Value) -> Value {
    let base = scenario(app, json!({"lifecycle_ms": [0, 0, 0]})).await;
    let run = create(app, &base, input).await;
    get_run(app, &base, &run["id"]).await
}

#[tokio::test]
async fn outputs_are_real_edited_images_cropped_to_the_aspect_ratio() {
    let app = test_app();
    let mut input = kontext_input();
    input["aspect_ratio"] = "16:9".into();
    input["output_format"] = "png".into();
    let run = finished(&app, input).await;
    let output = &run["output"]["outputs"][0];
    assert_eq!(
        (output["width"].as_u64(), output["height"].as_u64()),
        (Some(64), Some(36))
    );
    assert_eq!(output["content_type"], "image/png");
    let file = fetch_output(&app, output["url"].as_str().unwrap()).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.header("content-type"), Some("image/png"));
    assert_eq!(image::guess_format(&file.body).unwrap(), ImageFormat::Png);
    let image = image::load_from_memory(&file.body).unwrap();
    assert_eq!(image.dimensions(), (64, 36));
    // The centre pixel was edited: the input's is (128, 96, 128) after the 6-row crop.
    let source = image::load_from_memory(&png(64, 48)).unwrap().to_rgb8();
    assert_ne!(image.to_rgb8().get_pixel(32, 18), source.get_pixel(32, 24));

    let portrait = finished(&app, json!({"prompt": "p", "image_url": data_uri(&png(64, 48)), "aspect_ratio": "portrait_16_9"})).await;
    let output = &portrait["output"]["outputs"][0];
    assert_eq!(
        (output["width"].as_u64(), output["height"].as_u64()),
        (Some(27), Some(48))
    );
}

#[tokio::test]
async fn jpeg_is_the_default_and_each_image_differs() {
    let app = test_app();
    let mut input = kontext_input();
    input["num_images"] = 2.into();
    let run = finished(&app, input).await;
    let mut bodies = Vec::new();
    for output in run["output"]["outputs"].as_array().unwrap() {
        let file = fetch_output(&app, output["url"].as_str().unwrap()).await;
        assert_eq!(file.header("content-type"), Some("image/jpeg"));
        assert_eq!(image::guess_format(&file.body).unwrap(), ImageFormat::Jpeg);
        assert_eq!(
            image::load_from_memory(&file.body).unwrap().dimensions(),
            (64, 48)
        );
        bodies.push(file.body);
    }
    assert_ne!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn sync_mode_returns_data_uris() {
    let app = test_app();
    let mut input = kontext_input();
    input["sync_mode"] = true.into();
    let run = finished(&app, input).await;
    let url = run["output"]["outputs"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let b64 = url
        .strip_prefix("data:image/jpeg;base64,")
        .expect("a JPEG data URI");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        image::load_from_memory(&bytes).unwrap().dimensions(),
        (64, 48)
    );
}

#[tokio::test]
async fn local_urls_resolve_and_other_hosts_fail_the_run() {
    let app = test_app();
    let local = finished(
        &app,
        json!({"prompt": "p", "image_url": "http://localhost:8080/photo.png"}),
    )
    .await;
    assert_eq!(local["status_code"], "succeeded");

    // An output of one run can feed the next one.
    let previous = local["output"]["outputs"][0]["url"].clone();
    let chained = finished(&app, json!({"prompt": "again", "image_url": previous})).await;
    assert_eq!(chained["status_code"], "succeeded");

    let remote = finished(
        &app,
        json!({"prompt": "p", "image_url": "https://example.com/cat.png"}),
    )
    .await;
    assert_eq!(remote["status_code"], "failed");
    assert_eq!(remote["failure_code"], "INPUT_IMAGE_UNREACHABLE");
    assert_eq!(remote["failure_stage_code"], "preprocessing");
    assert_eq!(remote["output"], Value::Null);
    assert_eq!(remote["cost"], Value::Null);

    let missing = finished(
        &app,
        json!({"prompt": "p", "image_url": "http://127.0.0.1:8080/nope.png"}),
    )
    .await;
    assert_eq!(missing["failure_code"], "INPUT_IMAGE_UNREACHABLE");

    let garbage = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"not an image")
    );
    let invalid = finished(&app, json!({"prompt": "p", "image_url": garbage})).await;
    assert_eq!(invalid["status_code"], "failed");
    assert_eq!(invalid["failure_code"], "INVALID_INPUT_IMAGE");
}

#[tokio::test]
async fn other_models_accept_any_input_and_generate_an_image() {
    let app = test_app();
    let base = scenario(&app, json!({"lifecycle_ms": [0, 0, 0]})).await;
    // Deeper model path with a percent-encoded segment.
    let reply = post(
        &app,
        &format!("{base}/v1/models/acme/some%20model/v2/runs"),
        &json!({"input": {"aspect_ratio": "16:9"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.json()["model"], "acme/some model/v2");
    let run = get_run(&app, &base, &reply.json()["id"]).await;
    let output = &run["output"]["outputs"][0];
    assert_eq!(
        (output["width"].as_u64(), output["height"].as_u64()),
        (Some(512), Some(288))
    );
    let file = fetch_output(&app, output["url"].as_str().unwrap()).await;
    assert_eq!(
        image::load_from_memory(&file.body).unwrap().dimensions(),
        (512, 288)
    );
}

#[tokio::test]
async fn output_urls_are_signed() {
    let app = test_app();
    let run = finished(&app, kontext_input()).await;
    let url = run["output"]["outputs"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let tampered = format!("{}0", url);
    assert_eq!(
        fetch_output(&app, &tampered).await.status,
        StatusCode::FORBIDDEN
    );
    let other_expiry = url.replace("expires=", "expires=1");
    assert_eq!(
        fetch_output(&app, &other_expiry).await.status,
        StatusCode::FORBIDDEN
    );
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(
        fetch_output(&app, unsigned).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn static_files_and_wasm() {
    let app = test_app();
    let index = get(&app, "/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(&index.body[..], b"<h1>demo</h1>");
    let wasm = get(&app, "/pkg/x_bg.wasm").await;
    assert_eq!(wasm.status, StatusCode::OK);
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert_eq!(get(&app, "/missing.js").await.status, StatusCode::NOT_FOUND);
    assert_eq!(index.header("cross-origin-embedder-policy"), None);
}

#[tokio::test]
async fn isolated_pages_get_coop_and_coep() {
    let app = crate::app(crate::Config {
        isolated: true,
        ..super::test_config()
    });
    for path in ["/", "/pkg/x_bg.wasm"] {
        let reply = get(&app, path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("cross-origin-opener-policy"),
            Some("same-origin")
        );
        assert_eq!(
            reply.header("cross-origin-embedder-policy"),
            Some("require-corp")
        );
        assert_eq!(reply.header("cache-control"), Some("no-cache"));
    }
}
