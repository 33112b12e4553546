//! The three-step asset upload: create, presigned PUT, confirmation; the asset's URL as a run's
//! input; validation, expiry, signatures, the log and faults on each step.

use std::{net::SocketAddr, time::Duration};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::*;

const AUTH_XML: &str = "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>";

/// Step 1: `POST {base}/v1/asset-uploads`.
async fn create_upload(app: &Router, base: &str, body: Value) -> Reply {
    post(app, &format!("{base}/v1/asset-uploads"), &body).await
}

/// Step 1 for `size` bytes of `image/png`, asserted to succeed; returns the create's JSON.
async fn new_upload(app: &Router, base: &str, size: usize) -> Value {
    let body = json!({"filename": "photo.png", "mime_type": "image/png", "size_bytes": size});
    let reply = create_upload(app, base, body).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// The path of an absolute URL on the test host.
fn path_of(url: &str) -> &str {
    url.strip_prefix(&format!("http://{HOST}"))
        .expect("URL on the request's host")
}

/// Step 2: the PUT, with an optional `Content-Type` and `Authorization`.
async fn put(
    app: &Router,
    url: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    bytes: Vec<u8>,
) -> Reply {
    let mut builder = Request::put(path_of(url)).header("host", HOST);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    send(app, builder.body(Body::from(bytes)).unwrap()).await
}

/// Step 3: `POST {base}/v1/asset-uploads/{id}/confirmations` with `{}`.
async fn confirm(app: &Router, base: &str, id: &str) -> Reply {
    let url = format!("{base}/v1/asset-uploads/{id}/confirmations");
    post(app, &url, &json!({})).await
}

fn xml_code(reply: &Reply) -> String {
    assert_eq!(reply.header("content-type"), Some("application/xml"));
    let body = String::from_utf8_lossy(&reply.body);
    let code = body
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .unwrap_or_else(|| panic!("no <Code> in {body}"));
    code.0.to_string()
}

#[tokio::test]
async fn upload_confirm_fetch_and_edit() {
    let app = cors_app();
    let base = "/api/runflow";
    let image = png(64, 48);
    let created = new_upload(&app, base, image.len()).await;
    let id = created["asset_id"].as_str().unwrap();
    assert!(id.starts_with("asset_"), "{id}");
    let upload_url = created["upload_url"].as_str().unwrap();
    let prefix = format!("http://{HOST}/__mock/s/default/uploads/{id}?expires=");
    assert!(upload_url.starts_with(&prefix), "{upload_url}");
    assert!(upload_url.contains("&signature="));
    assert!(created["expires_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(created.as_object().unwrap().len(), 3);

    let stored = put(&app, upload_url, Some("image/png"), None, image.clone()).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(stored.body.is_empty());
    let etag = stored.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let asset = confirm(&app, base, id).await;
    assert_eq!(asset.status, StatusCode::CREATED);
    let asset = asset.json();
    assert_eq!(asset["id"], id);
    assert_eq!(asset["mime_type"], "image/png");
    assert_eq!(asset["size_bytes"], image.len());
    assert_eq!(asset["filename"], "photo.png");
    assert!(asset["created_at"].as_str().unwrap().ends_with("+00:00"));
    let url = asset["url"].as_str().unwrap();
    let prefix = format!("http://{HOST}/__mock/assets/{id}?expires=");
    assert!(url.starts_with(&prefix), "{url}");

    let file = send(
        &app,
        Request::get(path_of(url))
            .header("host", HOST)
            .header("origin", "http://localhost:9999")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.header("content-type"), Some("image/png"));
    assert_eq!(file.header("access-control-allow-origin"), Some("*"));
    assert_eq!(&file.body[..], &image[..]);

    // The asset's URL is a run's input: decoded, edited, output stored.
    let run = create(&app, base, json!({"prompt": "teal", "image_url": url})).await;
    let run = get_run(&app, base, &run["id"]).await;
    assert_eq!(run["status_code"], "succeeded", "{run}");
    let output = fetch_output(&app, run["output"]["outputs"][0]["url"].as_str().unwrap()).await;
    assert_eq!(output.status, StatusCode::OK);
    let decoded = image::load_from_memory(&output.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 48));
}

#[tokio::test]
async fn the_three_steps_are_logged_in_the_scenario() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let created = new_upload(&app, &base, 3).await;
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );
    assert!(url.starts_with(&format!("http://{HOST}{base}/uploads/{id}?")));
    put(
        &app,
        url,
        Some("image/png"),
        Some("Bearer rf_x"),
        vec![1, 2, 3],
    )
    .await;
    put(&app, url, Some("image/png"), None, vec![1, 2, 3]).await;
    confirm(&app, &base, id).await;

    let entries = log(&app, &base).await;
    let seen: Vec<_> = entries
        .iter()
        .map(|e| (e["kind"].clone(), e["method"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("upload_create"), json!("POST"), json!(201)),
            (json!("upload_put"), json!("PUT"), json!(400)),
            (json!("upload_put"), json!("PUT"), json!(200)),
            (json!("upload_confirm"), json!("POST"), json!(201)),
        ]
    );
    assert_eq!(
        entries[0]["body"],
        json!({"filename": "photo.png", "mime_type": "image/png", "size_bytes": 3})
    );
    assert_eq!(entries[0]["path"], "/v1/asset-uploads");
    let refused = &entries[1];
    assert_eq!(refused["headers"]["authorization"], "Bearer [redacted]");
    let stored = &entries[2];
    assert_eq!(stored["path"], format!("/uploads/{id}"));
    assert_eq!(stored["body"], json!({"bytes": 3}));
    assert_eq!(stored["headers"], json!({"content-type": "image/png"}));
    assert_eq!(stored["query"], url.split_once('?').unwrap().1);
    assert_eq!(
        entries[3]["path"],
        format!("/v1/asset-uploads/{id}/confirmations")
    );
}

#[tokio::test]
async fn creates_are_validated() {
    let app = test_app();
    let base = "/api/runflow";
    let ok = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 1});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    for (body, field) in [
        (with("filename", json!("")), "filename"),
        (with("filename", json!("x".repeat(256))), "filename"),
        (with("filename", json!(7)), "filename"),
        (with("mime_type", json!("text/plain")), "mime_type"),
        (with("mime_type", json!("image/")), "mime_type"),
        (with("mime_type", Value::Null), "mime_type"),
        (with("size_bytes", json!(0)), "size_bytes"),
        (with("size_bytes", json!(52_428_801)), "size_bytes"),
        (with("size_bytes", json!(1.5)), "size_bytes"),
        (with("size_bytes", json!("10")), "size_bytes"),
        (with("size_bytes", json!(-1)), "size_bytes"),
    ] {
        let reply = create_upload(&app, base, body.clone()).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let reply = reply.json();
        assert_eq!(reply["code"], "VALIDATION_ERROR");
        assert_eq!(reply["errors"][0]["field"], field, "{body}");
        assert_eq!(reply["errors"].as_array().unwrap().len(), 1);
    }
    let all = create_upload(&app, base, json!({})).await.json();
    let fields: Vec<_> = all["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, ["filename", "mime_type", "size_bytes"]);
    // The limits themselves are fine.
    let mut edges = with("size_bytes", json!(52_428_800));
    edges["filename"] = "é".repeat(255).into();
    edges["mime_type"] = "image/x-anything".into();
    assert_eq!(
        create_upload(&app, base, edges).await.status,
        StatusCode::CREATED
    );

    let url = format!("{base}/v1/asset-uploads");
    let broken = Request::post(&url)
        .header("content-type", "application/json")
        .body(Body::from("{"))
        .unwrap();
    assert_eq!(send(&app, broken).await.status, StatusCode::BAD_REQUEST);
    let array = create_upload(&app, base, json!([ok])).await;
    assert_eq!(array.status, StatusCode::BAD_REQUEST);
    let text = Request::post(&url)
        .header("content-type", "text/plain")
        .body(Body::from(ok.to_string()))
        .unwrap();
    assert_eq!(
        send(&app, text).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    let nested = scenario(&app, json!({"error_envelope": "nested"})).await;
    let reply = create_upload(&app, &nested, with("size_bytes", json!(0))).await;
    let message = "size_bytes: size_bytes must be an integer from 1 to 52428800";
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "VALIDATION_ERROR", "message": message}})
    );
}

#[tokio::test]
async fn steps_1_and_3_need_the_key_the_put_refuses_it() {
    let app = test_app();
    let base = scenario(&app, json!({"require_auth": true})).await;
    let body = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 2});
    let anonymous = create_upload(&app, &base, body.clone()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let keyed = |uri: &str, body: &Value| {
        let mut req = request(Method::POST, uri, Some(body));
        req.headers_mut()
            .insert("authorization", "Bearer rf_test".parse().unwrap());
        req
    };
    let created = send(&app, keyed(&format!("{base}/v1/asset-uploads"), &body)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );

    let key = Some("Bearer rf_test");
    let refused = put(&app, url, Some("image/png"), key, vec![1, 2]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.header("content-type"), Some("application/xml"));
    assert_eq!(String::from_utf8_lossy(&refused.body), AUTH_XML);
    // Refused before anything else is looked at, even a forged URL.
    let refused = put(&app, &format!("{url}0"), None, key, vec![]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    // The scenario requires a key, yet the PUT needs none: the URL is the credential.
    let stored = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(stored.status, StatusCode::OK);
    let confirm_url = format!("{base}/v1/asset-uploads/{id}/confirmations");
    let anonymous = post(&app, &confirm_url, &json!({})).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let confirmed = send(&app, keyed(&confirm_url, &json!({}))).await;
    assert_eq!(confirmed.status, StatusCode::CREATED);
}

#[tokio::test]
async fn expired_upload_urls_are_refused() {
    let app = test_app();
    let base = scenario(&app, json!({"upload_ttl_ms": 1})).await;
    let created = new_upload(&app, &base, 2).await;
    let url = created["upload_url"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let expired = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    assert_eq!(
        String::from_utf8_lossy(&expired.body),
        "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    );
    let id = created["asset_id"].as_str().unwrap();
    assert_eq!(confirm(&app, &base, id).await.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn forged_urls_are_refused() {
    let app = test_app();
    let base = "/api/runflow";
    let created = new_upload(&app, base, 2).await;
    let url = created["upload_url"].as_str().unwrap();
    let (unsigned, signature) = url.split_once("&signature=").unwrap();
    let mut forged = signature.to_string();
    let last = if forged.pop() == Some('0') { '1' } else { '0' };
    forged.push(last);
    let forged = format!("{unsigned}&signature={forged}");
    let reply = put(&app, &forged, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(xml_code(&reply), "SignatureDoesNotMatch");

    let expires = unsigned.split_once("expires=").unwrap().1;
    let later = format!("expires={}", expires.parse::<u64>().unwrap() + 1);
    let other = scenario(&app, json!({})).await;
    for bad in [
        unsigned.to_string(),
        url.split('?').next().unwrap().to_string(),
        url.replace(&format!("expires={expires}"), &later),
        url.replace("expires=", "expires=x"),
        url.replace("/__mock/s/default", &other),
    ] {
        let reply = put(&app, &bad, Some("image/png"), None, vec![1, 2]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{bad}");
        let code = xml_code(&reply);
        assert!(
            ["SignatureDoesNotMatch", "AccessDenied"].contains(&code.as_str()),
            "{bad}: {code}"
        );
    }
    // The real URL still works.
    let stored = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(stored.status, StatusCode::OK);

    // The download URL is signed too.
    let id = created["asset_id"].as_str().unwrap();
    let asset = confirm(&app, base, id).await.json();
    let download = asset["url"].as_str().unwrap();
    assert_eq!(get(&app, path_of(download)).await.status, StatusCode::OK);
    // An upload URL's signature does not open the download.
    let swapped = format!(
        "http://{HOST}/__mock/assets/{id}?{}",
        url.split_once('?').unwrap().1
    );
    for bad in [
        format!("{download}0"),
        download.split('?').next().unwrap().to_string(),
        download.replace("expires=", "expires=1"),
        swapped,
    ] {
        let reply = get(&app, path_of(&bad)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(reply.header("content-type"), Some("application/xml"));
    }
}

#[tokio::test]
async fn the_put_must_match_the_declared_type_and_length() {
    let app = test_app();
    let base = "/api/runflow";
    let created = new_upload(&app, base, 4).await;
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );
    for (content_type, bytes, code) in [
        (Some("image/png"), vec![1, 2, 3], "IncompleteBody"),
        (Some("image/png"), vec![], "IncompleteBody"),
        (Some("image/png"), vec![1, 2, 3, 4, 5], "EntityTooLarge"),
        (Some("image/png"), vec![0; 100_000], "EntityTooLarge"),
        (Some("image/jpeg"), vec![1, 2, 3, 4], "InvalidArgument"),
        (Some("image/png; x=y"), vec![1, 2, 3, 4], "InvalidArgument"),
        (None, vec![1, 2, 3, 4], "InvalidArgument"),
    ] {
        let reply = put(&app, url, content_type, None, bytes).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{content_type:?}");
        assert_eq!(xml_code(&reply), code);
    }
    let entries = log(&app, "/__mock/s/default").await;
    assert_eq!(entries[4]["body"], json!({"bytes": 100_000}), "all of it");
    let incomplete = confirm(&app, base, id).await;
    assert_eq!(incomplete.status, StatusCode::CONFLICT);
    // MIME types compare case-insensitively.
    let stored = put(&app, url, Some("Image/PNG"), None, vec![1, 2, 3, 4]).await;
    assert_eq!(stored.status, StatusCode::OK);
}

#[tokio::test]
async fn confirmations() {
    let app = test_app();
    let base = "/api/runflow";
    let created = new_upload(&app, base, 3).await;
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );
    let early = confirm(&app, base, id).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    let message = "The file has not been uploaded to upload_url yet";
    assert_eq!(
        early.json(),
        json!({"code": "UPLOAD_INCOMPLETE", "message": message, "errors": null})
    );

    // A second PUT replaces the first one's bytes.
    put(&app, url, Some("image/png"), None, vec![1, 1, 1]).await;
    let replaced = put(&app, url, Some("image/png"), None, vec![2, 2, 2]).await;
    assert_eq!(replaced.status, StatusCode::OK);

    // Confirming takes `{}` or nothing at all, and again gives the same asset.
    let confirm_url = format!("{base}/v1/asset-uploads/{id}/confirmations");
    let empty = Request::post(&confirm_url)
        .header("host", HOST)
        .body(Body::empty())
        .unwrap();
    let first = send(&app, empty).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = confirm(&app, base, id).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.json(), again.json());
    let download = first.json()["url"].as_str().unwrap().to_string();
    assert_eq!(&get(&app, path_of(&download)).await.body[..], &[2, 2, 2]);

    // Confirmed, the file no longer changes.
    let late = put(&app, url, Some("image/png"), None, vec![3, 3, 3]).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(xml_code(&late), "InvalidRequest");
    assert_eq!(&get(&app, path_of(&download)).await.body[..], &[2, 2, 2]);

    let not_json = Request::post(&confirm_url)
        .header("host", HOST)
        .body(Body::from("nope"))
        .unwrap();
    assert_eq!(send(&app, not_json).await.status, StatusCode::BAD_REQUEST);

    let unknown = confirm(&app, base, "asset_nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], "ASSET_NOT_FOUND");
    // Scenarios are isolated: another one cannot confirm this asset.
    let other = scenario(&app, json!({})).await;
    assert_eq!(
        confirm(&app, &other, id).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_20_mib_upload_is_accepted() {
    let app = test_app();
    let base = "/api/runflow";
    let size = 20 * 1024 * 1024;
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let created = new_upload(&app, base, size).await;
    let url = created["upload_url"].as_str().unwrap();
    let stored = put(&app, url, Some("image/png"), None, bytes.clone()).await;
    assert_eq!(stored.status, StatusCode::OK);
    let asset = confirm(&app, base, created["asset_id"].as_str().unwrap()).await;
    let file = get(&app, path_of(asset.json()["url"].as_str().unwrap())).await;
    assert_eq!(file.body.len(), size);
    assert!(file.body[..] == bytes[..]);
}

#[tokio::test]
async fn fault_rules_name_the_upload_steps() {
    let app = test_app();
    for ok in [
        json!({"on": "upload_create", "action": {"type": "create_then_drop"}}),
        json!({"on": "upload_put", "action": {"type": "create_then_hang"}}),
        json!({"on": "upload_confirm", "action": {"type": "delay", "ms": 1}}),
    ] {
        let reply = post(&app, "/__mock/scenarios", &json!({"faults": [ok]})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{ok}");
    }
    for bad in [
        json!({"faults": [{"on": "upload", "action": {"type": "drop"}}]}),
        json!({"faults": [{"on": "upload_put", "action": {"type": "status", "status_code": "x"}}]}),
        json!({"faults": [{"on": "any", "action": {"type": "create_then_drop"}}]}),
        json!({"upload_ttl_ms": "1"}),
    ] {
        let reply = post(&app, "/__mock/scenarios", &bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn error_and_raw_faults_on_each_step() {
    let app = test_app();
    let raw = json!({"type": "raw", "status": 500, "content_type": "text/plain", "body": "oops"});
    let boom = json!({"type": "error", "status": 500, "code": "BOOM", "message": "later"});
    let base = scenario(
        &app,
        json!({"faults": [
            {"on": "upload_create", "action": {"type": "error", "status": 503}},
            {"on": "upload_put", "action": {"type": "error", "status": 503, "retry_after": "1"}},
            {"on": "upload_put", "skip": 1, "action": raw},
            {"on": "upload_confirm", "skip": 1, "action": boom},
        ]}),
    )
    .await;
    let body = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 2});
    let refused = create_upload(&app, &base, body).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["code"], "MODEL_UNAVAILABLE");

    let created = new_upload(&app, &base, 2).await;
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );
    let slow_down = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(slow_down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(xml_code(&slow_down), "SlowDown");
    assert_eq!(slow_down.header("retry-after"), Some("1"));
    let not_stored = confirm(&app, &base, id).await;
    assert_eq!(not_stored.status, StatusCode::CONFLICT);
    let raw = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(raw.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(&raw.body[..], b"oops");
    let stored = put(&app, url, Some("image/png"), None, vec![1, 2]).await;
    assert_eq!(stored.status, StatusCode::OK);

    let boom = confirm(&app, &base, id).await;
    assert_eq!(boom.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        boom.json(),
        json!({"code": "BOOM", "message": "later", "errors": null})
    );
    assert_eq!(confirm(&app, &base, id).await.status, StatusCode::CREATED);

    let faults: Vec<_> = log(&app, &base)
        .await
        .iter()
        .map(|e| (e["kind"].clone(), e["fault"].clone()))
        .collect();
    assert_eq!(
        faults,
        [
            (json!("upload_create"), json!("error")),
            (json!("upload_create"), Value::Null),
            (json!("upload_put"), json!("error")),
            (json!("upload_confirm"), Value::Null),
            (json!("upload_put"), json!("raw")),
            (json!("upload_put"), Value::Null),
            (json!("upload_confirm"), json!("error")),
            (json!("upload_confirm"), Value::Null),
        ]
    );
}

#[tokio::test]
async fn any_covers_the_upload_steps() {
    let app = test_app();
    let base = scenario(&app, json!({})).await;
    let created = new_upload(&app, &base, 1).await;
    let (id, url) = (
        created["asset_id"].as_str().unwrap(),
        created["upload_url"].as_str().unwrap(),
    );
    let rules = json!([{"on": "any", "times": 3, "action": {"type": "error", "status": 502}}]);
    let added = post(&app, &format!("{base}/faults"), &rules).await;
    assert_eq!(added.status, StatusCode::NO_CONTENT);
    let body = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 1});
    let statuses = [
        create_upload(&app, &base, body).await.status,
        put(&app, url, Some("image/png"), None, vec![1])
            .await
            .status,
        confirm(&app, &base, id).await.status,
        put(&app, url, Some("image/png"), None, vec![1])
            .await
            .status,
        confirm(&app, &base, id).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [502, 502, 502, 200, 201]);
}

#[tokio::test]
async fn a_delayed_put_stores_before_it_answers() {
    let app = test_app();
    let base = scenario(
        &app,
        json!({"faults": [{"on": "upload_put", "action": {"type": "delay", "ms": 600}}]}),
    )
    .await;
    let created = new_upload(&app, &base, 1).await;
    let id = created["asset_id"].as_str().unwrap().to_string();
    let slow = tokio::spawn({
        let (app, url) = (
            app.clone(),
            created["upload_url"].as_str().unwrap().to_string(),
        );
        async move { put(&app, &url, Some("image/png"), None, vec![1]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(confirm(&app, &base, &id).await.status, StatusCode::CREATED);
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
}

/// Sends one raw HTTP/1.1 request with a binary body and reads until EOF; `None` when nothing
/// came within `wait`.
async fn raw(
    addr: SocketAddr,
    request: &str,
    content_type: &str,
    body: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{request} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut received = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut received)).await {
        Ok(result) => {
            result.expect("closed cleanly, not reset");
            Some(received)
        }
        Err(_) => None,
    }
}

#[tokio::test]
async fn connection_faults_on_each_step() {
    let app = test_app();
    let base = scenario(
        &app,
        json!({"faults": [
            {"on": "upload_create", "action": {"type": "hang"}},
            {"on": "upload_put", "action": {"type": "drop"}},
            {"on": "upload_put", "skip": 1, "action": {"type": "create_then_drop"}},
            {"on": "upload_confirm", "skip": 1, "action": {"type": "create_then_hang"}},
        ]}),
    )
    .await;
    let addr = super::faults::listen(app.clone()).await;
    let (wait, short) = (Duration::from_secs(5), Duration::from_millis(300));
    let create = format!("POST {base}/v1/asset-uploads");
    let body = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 2}).to_string();
    let json_type = "application/json";
    let hung = raw(addr, &create, json_type, body.as_bytes(), short).await;
    assert_eq!(hung, None, "hang on upload_create");

    let created = raw(addr, &create, json_type, body.as_bytes(), wait)
        .await
        .unwrap();
    let created = String::from_utf8_lossy(&created);
    let created: Value = serde_json::from_str(created.split_once("\r\n\r\n").unwrap().1).unwrap();
    let id = created["asset_id"].as_str().unwrap();
    let upload_path = created["upload_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("http://{addr}"))
        .unwrap();
    let put = format!("PUT {upload_path}");
    let dropped = raw(addr, &put, "image/png", &[1, 2], wait).await;
    assert_eq!(dropped, Some(vec![]), "drop: EOF, no status line");
    let incomplete = confirm(&app, &base, id).await;
    assert_eq!(
        incomplete.status,
        StatusCode::CONFLICT,
        "dropped before storing"
    );

    let dropped = raw(addr, &put, "image/png", &[1, 2], wait).await;
    assert_eq!(dropped, Some(vec![]), "create_then_drop: EOF");
    let confirm_line = format!("POST {base}/v1/asset-uploads/{id}/confirmations");
    let hung = raw(addr, &confirm_line, json_type, b"{}", short).await;
    assert_eq!(hung, None, "create_then_hang on upload_confirm");
    let again = confirm(&app, &base, id).await;
    assert_eq!(again.status, StatusCode::CREATED, "stored, then confirmed");

    let seen: Vec<_> = log(&app, &base)
        .await
        .iter()
        .map(|e| (e["kind"].clone(), e["fault"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("upload_create"), json!("hang"), Value::Null),
            (json!("upload_create"), Value::Null, json!(201)),
            (json!("upload_put"), json!("drop"), Value::Null),
            (json!("upload_confirm"), Value::Null, json!(409)),
            (json!("upload_put"), json!("create_then_drop"), Value::Null),
            (
                json!("upload_confirm"),
                json!("create_then_hang"),
                Value::Null
            ),
            (json!("upload_confirm"), Value::Null, json!(201)),
        ]
    );
}

#[tokio::test]
async fn the_upload_url_answers_preflights() {
    let app = cors_app();
    let created = new_upload(&app, "/api/runflow", 1).await;
    let url = created["upload_url"].as_str().unwrap();
    let preflight = Request::options(path_of(url))
        .header("host", HOST)
        .header("origin", "http://localhost:9999")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, preflight).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(log(&app, "/__mock/s/default").await.len(), 1, "not logged");

    // The PUT's answer lets a page on another origin read its ETag.
    let cross_origin = Request::put(path_of(url))
        .header("host", HOST)
        .header("origin", "http://localhost:9999")
        .header("content-type", "image/png")
        .body(Body::from(vec![1]))
        .unwrap();
    let reply = send(&app, cross_origin).await;
    assert_eq!(reply.status, StatusCode::OK);
    let exposed = reply.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("etag"), "{exposed}");
}
