//! Every fault action; the connection faults on a real listener with a raw TCP client.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;

async fn with_faults(app: &Router, faults: Value) -> String {
    scenario(app, json!({"lifecycle_ms": [0, 0, 0], "faults": faults})).await
}

async fn run_count(app: &Router, base: &str) -> usize {
    get(app, &format!("{base}/runs")).await.json()["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn error_faults_use_the_envelope_and_headers_and_create_nothing() {
    let app = test_app();
    let action =
        json!({"type": "error", "status": 429, "retry_after": "2", "request_id": "req_custom"});
    let base = with_faults(&app, json!([{"on": "create", "action": action}])).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let reply = post(&app, &url, &json!({"input": kontext_input()})).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("x-request-id"), Some("req_custom"));
    let body = reply.json();
    assert_eq!(
        (body["code"].as_str(), body["errors"].clone()),
        (Some("RATE_LIMITED"), Value::Null)
    );
    assert_eq!(run_count(&app, &base).await, 0);
    assert_eq!(
        post(&app, &url, &json!({"input": kontext_input()}))
            .await
            .status,
        StatusCode::CREATED,
        "used up"
    );

    let nested = scenario(&app, json!({"error_envelope": "nested", "faults": [{"on": "any", "action": {"type": "error", "status": 503, "code": "BUSY", "message": "later"}}]})).await;
    let reply = get(&app, &format!("{nested}/v1/health")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json(),
        json!({"error": {"code": "BUSY", "message": "later"}})
    );
    assert_eq!(reply.header("retry-after"), None);
}

#[tokio::test]
async fn raw_faults_send_exactly_their_body() {
    let app = test_app();
    let base = with_faults(&app, json!([
        {"on": "get", "action": {"type": "raw", "status": 502, "content_type": "text/html", "body": "<html>Bad gateway</html>"}},
        {"on": "get", "skip": 1, "action": {"type": "raw", "body": "{\"id\": \"trunc"}},
    ])).await;
    let run = create(&app, &base, kontext_input()).await;
    let html = get(
        &app,
        &format!("{base}/v1/runs/{}", run["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(html.status, StatusCode::BAD_GATEWAY);
    assert_eq!(html.header("content-type"), Some("text/html"));
    assert_eq!(&html.body[..], b"<html>Bad gateway</html>");
    let truncated = get(
        &app,
        &format!("{base}/v1/runs/{}", run["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(truncated.status, StatusCode::OK);
    assert_eq!(&truncated.body[..], b"{\"id\": \"trunc");
    assert!(truncated.header("x-request-id").is_some());
    assert_eq!(
        get_run(&app, &base, &run["id"]).await["status_code"],
        "succeeded"
    );
}

#[tokio::test]
async fn skip_and_times_count_matching_requests() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([{"on": "get", "skip": 1, "times": 2, "action": {"type": "error", "status": 503}}]),
    )
    .await;
    let run = create(&app, &base, kontext_input()).await;
    let url = format!("{base}/v1/runs/{}", run["id"].as_str().unwrap());
    get(&app, &format!("{base}/v1/health")).await; // not a get: does not count
    let statuses = [
        get(&app, &url).await.status,
        get(&app, &url).await.status,
        get(&app, &url).await.status,
        get(&app, &url).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [200, 503, 503, 200]);
    let faults: Vec<_> = log(&app, &base)
        .await
        .iter()
        .map(|e| e["fault"].clone())
        .collect();
    assert_eq!(
        faults,
        [
            Value::Null,
            Value::Null,
            Value::Null,
            json!("error"),
            json!("error"),
            Value::Null
        ]
    );
}

#[tokio::test]
async fn status_faults_change_one_answer() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([{"on": "get", "action": {"type": "status", "status_code": "weird"}}]),
    )
    .await;
    let run = create(&app, &base, kontext_input()).await;
    assert_eq!(
        get_run(&app, &base, &run["id"]).await["status_code"],
        "weird"
    );
    assert_eq!(
        get_run(&app, &base, &run["id"]).await["status_code"],
        "succeeded"
    );
}

#[tokio::test]
async fn delayed_creates_exist_before_the_answer() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([{"on": "create", "action": {"type": "delay", "ms": 600}}]),
    )
    .await;
    let start = Instant::now();
    let slow = tokio::spawn({
        let (app, url) = (app.clone(), format!("{base}{KONTEXT_RUNS}"));
        async move { post(&app, &url, &json!({"input": kontext_input()})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run_count(&app, &base).await, 1, "created at arrival");
    assert_eq!(
        log(&app, &base).await[0]["status"],
        Value::Null,
        "not answered yet"
    );
    let reply = slow.await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert_eq!(reply.status, StatusCode::CREATED);
    let entry = &log(&app, &base).await[0];
    assert_eq!(
        (entry["status"].clone(), entry["fault"].clone()),
        (json!(201), json!("delay"))
    );
}

/// Serves the app on a real socket, as `devserver` does.
pub(super) async fn listen(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::serve(listener, app, std::future::pending()));
    addr
}

/// Sends one HTTP/1.1 request and reads until EOF; `None` when nothing came within `wait`.
async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    wait: Duration,
) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut received)).await {
        Ok(result) => {
            result.expect("closed cleanly, not reset");
            Some(received)
        }
        Err(_) => {
            assert!(received.is_empty(), "a hung request sends nothing");
            None
        }
    }
}

#[tokio::test]
async fn connection_faults_on_a_real_listener() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([
            {"on": "create", "action": {"type": "drop"}},
            {"on": "create", "skip": 1, "action": {"type": "create_then_drop"}},
            {"on": "create", "skip": 2, "action": {"type": "hang"}},
            {"on": "create", "skip": 3, "action": {"type": "create_then_hang"}},
            {"on": "get", "action": {"type": "drop"}},
        ]),
    )
    .await;
    let addr = listen(app.clone()).await;
    let url = format!("{base}{KONTEXT_RUNS}");
    let body = json!({"input": kontext_input(), "client_ref": "c1"}).to_string();
    let wait = Duration::from_secs(5);

    assert_eq!(
        raw_request(addr, "POST", &url, &body, wait).await,
        Some(vec![]),
        "drop: EOF, no status line"
    );
    assert_eq!(run_count(&app, &base).await, 0);

    assert_eq!(
        raw_request(addr, "POST", &url, &body, wait).await,
        Some(vec![]),
        "create_then_drop"
    );
    let runs = get(&app, &format!("{base}/runs")).await.json();
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "the run exists");
    let id = runs["items"][0]["id"].as_str().unwrap().to_string();
    let search = get(&app, &format!("{base}/v1/runs?q=client_ref:c1"))
        .await
        .json();
    assert_eq!(search["items"][0]["id"], id.as_str());

    let short = Duration::from_millis(400);
    assert_eq!(
        raw_request(addr, "POST", &url, &body, short).await,
        None,
        "hang"
    );
    assert_eq!(run_count(&app, &base).await, 1);
    assert_eq!(
        raw_request(addr, "POST", &url, &body, short).await,
        None,
        "create_then_hang"
    );
    assert_eq!(run_count(&app, &base).await, 2);

    let get_path = format!("{base}/v1/runs/{id}");
    assert_eq!(
        raw_request(addr, "GET", &get_path, "", wait).await,
        Some(vec![]),
        "drop on get"
    );
    let ok = raw_request(addr, "GET", &get_path, "", wait).await.unwrap();
    assert!(
        ok.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "the listener still serves: {}",
        String::from_utf8_lossy(&ok)
    );

    let entries = log(&app, &base).await;
    let seen: Vec<_> = entries
        .iter()
        .map(|e| (e["fault"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("drop"), Value::Null),
            (json!("create_then_drop"), Value::Null),
            (Value::Null, json!(200)), // the search
            (json!("hang"), Value::Null),
            (json!("create_then_hang"), Value::Null),
            (json!("drop"), Value::Null),
            (Value::Null, json!(200)),
        ]
    );
}

#[tokio::test]
async fn truncate_sends_half_the_body_under_the_whole_length_then_closes() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([{"on": "create", "action": {"type": "truncate"}}]),
    )
    .await;
    let addr = listen(app.clone()).await;
    let body = json!({"input": kontext_input()}).to_string();
    let url = format!("{base}{KONTEXT_RUNS}");
    let wait = Duration::from_secs(5);
    let received = raw_request(addr, "POST", &url, &body, wait).await.unwrap();
    let text = String::from_utf8_lossy(&received);
    let (head, sent) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !sent.is_empty() && sent.len() < length,
        "{} of {length}",
        sent.len()
    );
    assert!(serde_json::from_str::<Value>(sent).is_err(), "cut JSON");
    assert!(sent.starts_with("{\""), "{sent}");
    // The server acted: the run exists.
    assert_eq!(run_count(&app, &base).await, 1);
    assert_eq!(log(&app, &base).await[0]["fault"], "truncate");
}

#[tokio::test]
async fn huge_streams_exactly_that_many_bytes_of_json_that_is_not_a_run() {
    let app = test_app();
    let bytes = 10_000_000u64;
    let base = with_faults(
        &app,
        json!([{"on": "get", "action": {"type": "huge", "bytes": bytes}},
               {"on": "health", "action": {"type": "huge", "bytes": 14, "status": 503}}]),
    )
    .await;
    let addr = listen(app.clone()).await;
    let response = reqwest::get(format!("http://{addr}{base}/v1/runs/x"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(bytes));
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as u64, bytes);
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    let padding = parsed["padding"].as_str().unwrap();
    assert!(padding.len() as u64 == bytes - 14 && padding.bytes().all(|b| b == b'x'));
    let small = get(&app, &format!("{base}/v1/health")).await;
    assert_eq!(small.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(small.json(), json!({"padding": ""}));
}

#[tokio::test]
async fn create_then_error_does_the_work_then_answers_the_error() {
    let app = test_app();
    let base = with_faults(
        &app,
        json!([{"on": "create", "action": {"type": "create_then_error", "status": 502}},
               {"on": "upload_create", "action": {"type": "create_then_error", "status": 503}}]),
    )
    .await;
    let reply = post(
        &app,
        &format!("{base}{KONTEXT_RUNS}"),
        &json!({"input": kontext_input()}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["code"], "BAD_GATEWAY");
    assert_eq!(
        run_count(&app, &base).await,
        1,
        "the run was made all the same"
    );
    let upload = json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 3});
    let reply = post(&app, &format!("{base}/v1/asset-uploads"), &upload).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["code"], "MODEL_UNAVAILABLE");
    let faults: Vec<_> = log(&app, &base)
        .await
        .iter()
        .map(|e| e["fault"].clone())
        .collect();
    assert_eq!(
        faults,
        [json!("create_then_error"), json!("create_then_error")]
    );
}
