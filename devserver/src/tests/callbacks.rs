//! The mock's callback deliveries on real ports: the mock on one, a scripted receiver per test
//! on another (both on 127.0.0.1). Deliveries are checked with the client crate's own
//! `verify_signature` and `parse_event`. The retry tests wait out the real 1 s / 2 s backoff
//! (about 3 s for the longest); "no more attempts" is read from the control API's `pending`
//! count rather than waited out.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use runflow_kontext::callback::{parse_event, verify_signature};
use serde_json::{json, Value};

use super::{kontext_input, test_config, KONTEXT_RUNS};

/// Long enough for anything that should happen to have happened.
const WAIT: Duration = Duration::from_secs(8);
const MEMBERS: [&str; 8] = [
    "event",
    "run_id",
    "status",
    "output",
    "duration_ms",
    "created_at",
    "completed_at",
    "metadata",
];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// The app (mock backend) on a real port: its origin.
async fn start_mock() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::serve(
        listener,
        crate::app(test_config()),
        std::future::pending(),
    ));
    origin
}

/// A fresh mock with one scenario: the scenario's absolute base URL.
async fn scenario(config: Value) -> String {
    let origin = start_mock().await;
    scenario_on(&origin, config).await
}

async fn scenario_on(origin: &str, config: Value) -> String {
    let reply = client()
        .post(format!("{origin}/__mock/scenarios"))
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    let body: Value = reply.json().await.unwrap();
    format!("{origin}{}", body["base_url"].as_str().unwrap())
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_json(url: &str) -> Value {
    let (status, body) = call(client().get(url)).await;
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// Creates a Kontext run with `extra` members (`callback_url`, `metadata`) in the body.
async fn create_run(base: &str, extra: Value) -> Value {
    let mut body = json!({"input": kontext_input()});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, run) = call(client().post(format!("{base}{KONTEXT_RUNS}")).json(&body)).await;
    assert_eq!(status, 201, "{run}");
    run
}

async fn create_secret(base: &str) -> Value {
    let (status, secret) = call(
        client()
            .post(format!("{base}/v1/callback-secrets"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{secret}");
    secret
}

fn id(run: &Value) -> &str {
    run["id"].as_str().unwrap()
}

/// `GET /v1/runs/{id}/callback`'s attempts.
async fn history(base: &str, run: &Value) -> Vec<Value> {
    let body = get_json(&format!("{base}/v1/runs/{}/callback", id(run))).await;
    assert_eq!(body["run_id"], run["id"]);
    body["attempts"].as_array().unwrap().clone()
}

/// The control API's record of every attempt of the scenario.
async fn attempts(base: &str) -> Vec<Value> {
    get_json(&format!("{base}/callbacks")).await["attempts"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the scenario has no delivery left to make (none waiting, sending or between
/// attempts): from then on, no attempt can follow.
async fn settled(base: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get_json(&format!("{base}/callbacks")).await;
        if body["pending"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries still pending: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the run's history until `n` attempts are finished (have a status or an error).
async fn finished_attempts(base: &str, run: &Value, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = history(base, run).await;
        let done = all
            .iter()
            .filter(|a| !a["status"].is_null() || !a["error"].is_null())
            .count();
        if done >= n {
            return all;
        }
        assert!(Instant::now() < deadline, "{n} attempts expected: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the receiver answers its n-th request (the last answer repeats).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    After(Duration, u16),
}

struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// A callback receiver on 127.0.0.1 answering with `script`, in order.
    async fn start(script: &[Answer]) -> Receiver {
        #[derive(Clone)]
        struct Shared {
            script: Vec<Answer>,
            got: Arc<Mutex<Vec<Received>>>,
        }
        async fn receive(
            State(shared): State<Shared>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let at = Instant::now();
            let n = {
                let mut got = shared.got.lock().unwrap();
                got.push(Received { at, headers, body });
                got.len() - 1
            };
            let answer = shared
                .script
                .get(n)
                .or(shared.script.last())
                .copied()
                .unwrap_or(Answer::Status(200));
            let status = match answer {
                Answer::Status(status) => status,
                Answer::After(pause, status) => {
                    tokio::time::sleep(pause).await;
                    status
                }
            };
            StatusCode::from_u16(status).unwrap()
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            script: script.to_vec(),
            got: got.clone(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits for `n` requests (failing past `WAIT`), then takes what arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{n} deliveries expected, got {}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// Milliseconds between consecutive arrivals.
fn gaps(received: &[Received]) -> Vec<u128> {
    received
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect()
}

fn assert_near(actual: u128, expected: u128, label: &str) {
    // Never early; late by scheduling only.
    assert!(
        actual + 10 >= expected && actual <= expected + 400,
        "{label}: {actual} ms, expected ~{expected} ms"
    );
}

#[tokio::test]
async fn a_succeeded_run_delivers_once_the_documented_payload_signed() {
    let base = scenario(json!({"lifecycle_ms": [20, 20, 100]})).await;
    let secret = create_secret(&base).await;
    let plain = secret["plain_secret"].as_str().unwrap();
    assert!(plain.starts_with("whsec_") && plain.len() >= 38, "{plain}");
    assert!(secret["id"].is_string());
    assert!(secret["created_at"].as_str().unwrap().ends_with("+00:00"));

    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let created = Instant::now();
    let run = create_run(
        &base,
        json!({"callback_url": receiver.url, "metadata": {"order": 7}}),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let delivery = &got[0];
    assert!(
        delivery.at - created >= Duration::from_millis(140),
        "sent when the run ended, not before"
    );
    assert_eq!(delivery.header("content-type"), Some("application/json"));
    let request_id = delivery.header("runflow-request-id").unwrap();
    assert!(!request_id.is_empty());
    let signature = delivery.header("runflow-signature").unwrap();
    assert_eq!(signature.len(), 64);
    assert!(signature
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(verify_signature(&delivery.body, signature, &[plain]));
    assert!(!verify_signature(
        &delivery.body,
        signature,
        &["whsec_other"]
    ));
    let mut tampered = delivery.body.to_vec();
    tampered.push(b' ');
    assert!(!verify_signature(&tampered, signature, &[plain]));

    // The documented members, in the documented order, with the run as a GET shows it.
    assert!(delivery
        .text()
        .starts_with(r#"{"event":"run.completed","run_id":""#));
    let payload = delivery.json();
    let keys: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
    let mut documented = MEMBERS.map(String::from).to_vec();
    documented.sort();
    assert_eq!(keys, documented);
    let shown = get_json(&format!("{base}/v1/runs/{}", id(&run))).await;
    assert_eq!(payload["run_id"], run["id"]);
    assert_eq!(payload["status"], "succeeded");
    for field in [
        "output",
        "duration_ms",
        "created_at",
        "completed_at",
        "metadata",
    ] {
        assert_eq!(payload[field], shown[field], "{field}");
    }
    assert!(payload["output"]["outputs"][0]["url"].is_string());
    assert_eq!(payload["metadata"], json!({"order": 7}));
    for field in ["created_at", "completed_at"] {
        assert!(
            payload[field].as_str().unwrap().ends_with("+00:00"),
            "{field}"
        );
    }

    let event = parse_event(delivery.text(), Some(request_id)).unwrap();
    assert_eq!(event.event, "run.completed");
    assert_eq!(event.run_id, id(&run));
    assert_eq!(event.status_code, "succeeded");
    assert_eq!(event.request_id.as_deref(), Some(request_id));
    assert_eq!(event.duration_ms, Some(100.0));
    assert_eq!(
        event.completed_at.as_deref(),
        shown["completed_at"].as_str()
    );
    assert!(event.output.is_some());

    // Once: nothing follows a 2xx.
    settled(&base).await;
    assert_eq!(receiver.count(), 0);
    let history = history(&base, &run).await;
    assert_eq!(
        history,
        [json!({
            "delivery": 0, "redelivery": false, "attempt": 1, "at": history[0]["at"],
            "request_id": request_id, "status": 200, "error": null, "delivered": true,
        })]
    );
    assert!(history[0]["at"].as_str().unwrap().ends_with("+00:00"));
    let sent = &attempts(&base).await[0];
    assert_eq!(sent["body"], delivery.text(), "the bytes as sent");
    assert_eq!(sent["headers"]["runflow-signature"], signature);
    assert_eq!(sent["headers"]["runflow-request-id"], request_id);
    assert_eq!(sent["secret_id"], secret["id"]);
    assert_eq!(sent["url"], receiver.url);
    assert!(sent["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn every_terminal_status_delivers_its_event() {
    let origin = start_mock().await;
    let receiver = Receiver::start(&[Answer::Status(204)]).await;
    let cases = [
        ("failed", "run.failed", false),
        ("errored", "run.failed", false),
        ("canceled", "run.cancelled", false),
        ("cancelled", "run.cancelled", false),
        ("partial_succeeded", "run.partial_succeeded", true),
    ];
    let mut runs = Vec::new();
    for (status, _, _) in cases {
        let base = scenario_on(
            &origin,
            json!({"final_status": status, "lifecycle_ms": [0, 0, 30], "output_shape": "images"}),
        )
        .await;
        let mut input = kontext_input();
        input["num_images"] = 2.into();
        let run = create_run(&base, json!({"input": input, "callback_url": receiver.url})).await;
        runs.push((base, run));
    }
    let got = receiver.wait_for(cases.len()).await;
    for ((status, event, has_output), (base, run)) in cases.iter().zip(&runs) {
        let delivery = got
            .iter()
            .find(|d| d.json()["run_id"] == run["id"])
            .unwrap_or_else(|| panic!("no delivery for {status}"));
        assert_eq!(
            delivery.header("runflow-signature"),
            None,
            "no secret, no signature"
        );
        let payload = delivery.json();
        assert_eq!(payload["event"], *event, "{status}");
        assert_eq!(payload["status"], *status, "the wire status");
        assert_eq!(!payload["output"].is_null(), *has_output, "{status}");
        let shown = get_json(&format!("{base}/v1/runs/{}", id(run))).await;
        assert_eq!(payload["output"], shown["output"], "{status}");
        assert_eq!(payload["completed_at"], shown["completed_at"], "{status}");
        assert!(payload["completed_at"]
            .as_str()
            .unwrap()
            .ends_with("+00:00"));
        let parsed = parse_event(delivery.text(), delivery.header("runflow-request-id")).unwrap();
        assert_eq!(parsed.event, *event);
        assert_eq!(parsed.status_code, *status);
        // 204 counts as delivered.
        assert_eq!(history(base, run).await[0]["delivered"], true, "{status}");
    }
    assert_eq!(
        got.iter()
            .find(|d| d.json()["status"] == "partial_succeeded")
            .unwrap()
            .json()["output"]["images"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "partial: fewer images than asked"
    );
}

#[tokio::test]
async fn deliveries_are_unsigned_without_a_secret_or_when_the_scenario_says_so() {
    let origin = start_mock().await;
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    for config in [
        json!({"lifecycle_ms": [0, 0, 20]}),
        json!({"lifecycle_ms": [0, 0, 20], "callback_signing": "none", "callback_secrets": ["whsec_known"]}),
    ] {
        let base = scenario_on(&origin, config.clone()).await;
        // `localhost` is loopback too (pinned to 127.0.0.1).
        let url = receiver.url.replace("127.0.0.1", "localhost");
        create_run(&base, json!({"callback_url": url})).await;
        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].header("runflow-signature"), None, "{config}");
        assert!(got[0].header("runflow-request-id").is_some(), "{config}");
        assert_eq!(attempts(&base).await[0]["secret_id"], Value::Null);
    }
}

#[tokio::test]
async fn rotation_signs_with_the_newest_and_the_old_control_with_the_one_before() {
    let origin = start_mock().await;
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let base = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 20]})).await;
    let old = create_secret(&base).await;
    let new = create_secret(&base).await;
    assert_ne!(old["id"], new["id"]);
    assert_ne!(old["plain_secret"], new["plain_secret"]);
    let (old, new) = (
        old["plain_secret"].as_str().unwrap().to_string(),
        new["plain_secret"].as_str().unwrap().to_string(),
    );
    create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(1).await;
    let signature = got[0].header("runflow-signature").unwrap();
    assert!(verify_signature(&got[0].body, signature, &[&new]));
    assert!(!verify_signature(&got[0].body, signature, &[&old]));
    assert!(verify_signature(&got[0].body, signature, &[&new, &old]));

    // Signed with the second newest: a receiver that knows only the newest refuses it.
    let base = scenario_on(
        &origin,
        json!({"lifecycle_ms": [0, 0, 20], "callback_signing": "old", "callback_secrets": ["whsec_old_a", "whsec_new_b"]}),
    )
    .await;
    create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(1).await;
    let signature = got[0].header("runflow-signature").unwrap();
    assert!(verify_signature(&got[0].body, signature, &["whsec_old_a"]));
    assert!(!verify_signature(&got[0].body, signature, &["whsec_new_b"]));
    assert!(verify_signature(
        &got[0].body,
        signature,
        &["whsec_new_b", "whsec_old_a"]
    ));
    assert_eq!(attempts(&base).await[0]["secret_id"], "cbs_1");
    // A secret created through the API becomes the newest: "old" now means whsec_new_b.
    let third = create_secret(&base).await;
    assert_eq!(third["id"], "cbs_3");
    create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(1).await;
    let signature = got[0].header("runflow-signature").unwrap();
    assert!(verify_signature(&got[0].body, signature, &["whsec_new_b"]));
}

#[tokio::test]
async fn a_500_then_a_200_is_retried_once_a_second_later() {
    let receiver = Receiver::start(&[Answer::Status(500), Answer::Status(200)]).await;
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20]})).await;
    let run = create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(2).await;
    assert_near(gaps(&got)[0], 1000, "first backoff");
    assert_eq!(got[0].body, got[1].body, "a retry resends the same bytes");
    assert_eq!(
        got[0].header("runflow-signature"),
        got[1].header("runflow-signature")
    );
    assert_ne!(
        got[0].header("runflow-request-id"),
        got[1].header("runflow-request-id"),
        "one request id per attempt"
    );
    // Nothing after the 200.
    settled(&base).await;
    assert_eq!(receiver.count(), 0);
    let history = history(&base, &run).await;
    let summary: Vec<_> = history
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["status"].clone(),
                a["delivered"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(1), json!(500), json!(false)),
            (json!(2), json!(200), json!(true))
        ]
    );
}

#[tokio::test]
async fn three_500s_make_three_attempts_at_0_1_and_3_seconds_then_stop() {
    let receiver = Receiver::start(&[Answer::Status(503)]).await;
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20]})).await;
    let run = create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(3).await;
    let gaps = gaps(&got);
    assert_near(gaps[0], 1000, "first backoff");
    assert_near(gaps[1], 2000, "second backoff");
    assert_near((got[2].at - got[0].at).as_millis(), 3000, "third attempt");
    settled(&base).await;
    assert_eq!(receiver.count(), 0, "three attempts in all");
    let history = history(&base, &run).await;
    assert_eq!(history.len(), 3);
    for (n, attempt) in history.iter().enumerate() {
        assert_eq!(attempt["attempt"], n + 1);
        assert_eq!(attempt["status"], 503);
        assert_eq!(attempt["delivered"], false);
        assert_eq!(attempt["redelivery"], false);
    }
    // The control API's clock agrees with the receiver's.
    let at: Vec<u64> = attempts(&base)
        .await
        .iter()
        .map(|a| a["at_ms"].as_u64().unwrap())
        .collect();
    assert_near(u128::from(at[1] - at[0]), 1000, "at_ms, first backoff");
    assert_near(u128::from(at[2] - at[1]), 2000, "at_ms, second backoff");
}

#[tokio::test]
async fn a_4xx_is_never_retried() {
    let origin = start_mock().await;
    let base = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 20]})).await;
    let mut cases = Vec::new();
    for status in [404, 429, 410] {
        let receiver = Receiver::start(&[Answer::Status(status), Answer::Status(200)]).await;
        let run = create_run(&base, json!({"callback_url": receiver.url})).await;
        cases.push((status, receiver, run));
    }
    for (_, receiver, _) in &cases {
        receiver.wait_for(1).await;
    }
    settled(&base).await;
    for (status, receiver, run) in &cases {
        assert_eq!(receiver.count(), 0, "{status}: one attempt");
        let history = history(&base, run).await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["status"], *status);
        assert_eq!(history[0]["delivered"], false);
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_three_attempts() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20]})).await;
    let run = create_run(
        &base,
        json!({"callback_url": format!("http://{closed}/hook")}),
    )
    .await;
    let history = finished_attempts(&base, &run, 3).await;
    assert_eq!(history.len(), 3);
    for attempt in &history {
        assert_eq!(attempt["status"], Value::Null);
        let error = attempt["error"].as_str().unwrap();
        assert!(error.starts_with("network error"), "{error}");
        assert!(attempt["request_id"].is_string(), "sent, or tried to be");
    }
    let sent = attempts(&base).await;
    let at: Vec<u64> = sent.iter().map(|a| a["at_ms"].as_u64().unwrap()).collect();
    assert_near(u128::from(at[1] - at[0]), 1000, "first backoff");
    assert_near(u128::from(at[2] - at[1]), 2000, "second backoff");
    settled(&base).await;
    assert_eq!(history_len(&base, &run).await, 3, "then no more");
}

async fn history_len(base: &str, run: &Value) -> usize {
    history(base, run).await.len()
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let receiver = Receiver::start(&[
        Answer::After(Duration::from_secs(3), 200),
        Answer::Status(200),
    ])
    .await;
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20], "callback_timeout_ms": 300})).await;
    let run = create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(2).await;
    // 300 ms of timeout, then the 1 s backoff.
    assert_near(gaps(&got)[0], 1300, "timeout then backoff");
    let history = finished_attempts(&base, &run, 2).await;
    assert_eq!(history[0]["status"], Value::Null);
    assert_eq!(history[0]["error"], "timeout: no answer within 300 ms");
    assert_eq!(history[0]["delivered"], false);
    assert_eq!(history[1]["status"], 200);
    assert_eq!(history[1]["delivered"], true);
    let elapsed = attempts(&base).await[0]["elapsed_ms"].as_u64().unwrap();
    assert!((300..700).contains(&elapsed), "{elapsed} ms");
}

#[tokio::test]
async fn a_shortened_backoff_spaces_the_attempts_by_it() {
    let receiver = Receiver::start(&[Answer::Status(500)]).await;
    let base =
        scenario(json!({"lifecycle_ms": [0, 0, 20], "callback_backoff_ms": [100, 250]})).await;
    create_run(&base, json!({"callback_url": receiver.url})).await;
    let got = receiver.wait_for(3).await;
    let gaps = gaps(&got);
    assert_near(gaps[0], 100, "first backoff");
    assert_near(gaps[1], 250, "second backoff");
}

#[tokio::test]
async fn a_redelivery_rebuilds_the_payload_with_new_bytes_and_a_new_signature() {
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20]})).await;
    let secret = create_secret(&base).await;
    let secret = secret["plain_secret"].as_str().unwrap();
    let run = create_run(
        &base,
        json!({"callback_url": receiver.url, "metadata": {"k": "v"}}),
    )
    .await;
    let first = receiver.wait_for(1).await.remove(0);
    let mut seen = vec![first.body.clone()];
    for n in 1..=2 {
        let (status, body) = call(
            client()
                .post(format!("{base}/v1/runs/{}/callback-redeliveries", id(&run)))
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(body, json!({"run_id": run["id"], "delivery": n}));
        let again = receiver.wait_for(1).await.remove(0);
        assert!(!seen.contains(&again.body), "redelivery {n}: new bytes");
        seen.push(again.body.clone());
        let signature = again.header("runflow-signature").unwrap();
        assert_ne!(Some(signature), first.header("runflow-signature"));
        assert!(verify_signature(&again.body, signature, &[secret]));
        assert_eq!(again.json(), first.json(), "the same payload as JSON");
        let (a, b) = (
            parse_event(first.text(), None).unwrap(),
            parse_event(again.text(), None).unwrap(),
        );
        assert_eq!((a.run_id, a.event), (b.run_id, b.event));
    }
    // Redelivery 1: the documented members rotated by one place.
    assert!(std::str::from_utf8(&seen[1])
        .unwrap()
        .ends_with(r#","event":"run.completed"}"#));
    let history = history(&base, &run).await;
    let summary: Vec<_> = history
        .iter()
        .map(|a| {
            (
                a["delivery"].clone(),
                a["redelivery"].clone(),
                a["delivered"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(0), json!(false), json!(true)),
            (json!(1), json!(true), json!(true)),
            (json!(2), json!(true), json!(true)),
        ]
    );
}

#[tokio::test]
async fn redeliveries_need_an_ended_run_with_a_callback_url() {
    let origin = start_mock().await;
    let base = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 0]})).await;
    let redeliver = |base: String, id: String| async move {
        call(
            client()
                .post(format!("{base}/v1/runs/{id}/callback-redeliveries"))
                .json(&json!({})),
        )
        .await
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, body) = redeliver(base.clone(), unknown.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("RUN_NOT_FOUND"))
    );
    let (status, _) = call(client().get(format!("{base}/v1/runs/{unknown}/callback"))).await;
    assert_eq!(status, 404);

    let plain = create_run(&base, json!({})).await;
    let (status, body) = redeliver(base.clone(), id(&plain).into()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("NO_CALLBACK_URL"))
    );

    let slow = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 60_000]})).await;
    let running = create_run(&slow, json!({"callback_url": "http://127.0.0.1:9/hook"})).await;
    let (status, body) = redeliver(slow.clone(), id(&running).into()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("RUN_NOT_TERMINAL"))
    );

    let never = scenario_on(
        &origin,
        json!({"lifecycle_ms": [0, 0, 0], "final_status": "mystery"}),
    )
    .await;
    let odd = create_run(&never, json!({"callback_url": "http://127.0.0.1:9/hook"})).await;
    let (status, body) = redeliver(never.clone(), id(&odd).into()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("RUN_NOT_TERMINAL"))
    );

    // The calls take the API's auth like every other.
    let locked = scenario_on(&origin, json!({"require_auth": true})).await;
    let (status, _) = call(
        client()
            .post(format!("{locked}/v1/callback-secrets"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        client()
            .post(format!("{locked}/v1/callback-secrets"))
            .bearer_auth("rf_test_key")
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        client()
            .post(format!("{locked}/v1/callback-secrets"))
            .bearer_auth("rf_test_key")
            .header("content-type", "application/json")
            .body("[1]"),
    )
    .await;
    assert_eq!(status, 400);
    // Runflow's proxy forwards none of them.
    let proxied = scenario_on(&origin, json!({"runflow_proxy": true})).await;
    let (status, body) = call(
        client()
            .post(format!("{proxied}/v1/callback-secrets"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("path_not_allowed"))
    );
}

#[tokio::test]
async fn a_callback_url_off_loopback_is_never_called() {
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let port = receiver
        .url
        .rsplit_once(':')
        .unwrap()
        .1
        .trim_end_matches("/hook")
        .to_string();
    let base = scenario(json!({"lifecycle_ms": [0, 0, 20]})).await;
    let mut runs = Vec::new();
    for url in [
        "http://example.com/hook".to_string(),
        "http://10.255.255.1/hook".into(),
        format!("https://127.0.0.1:{port}/hook"),
        format!("http://127.0.0.2:{port}/hook"),
        "not a url".into(),
    ] {
        runs.push((
            url.clone(),
            create_run(&base, json!({"callback_url": url})).await,
        ));
    }
    for (url, run) in &runs {
        let history = finished_attempts(&base, run, 1).await;
        assert_eq!(history.len(), 1, "{url}");
        assert_eq!(history[0]["status"], Value::Null);
        assert_eq!(history[0]["request_id"], Value::Null, "nothing sent");
        assert_eq!(history[0]["delivered"], false);
        let reason = history[0]["error"].as_str().unwrap();
        assert!(reason.starts_with("not delivered: "), "{url}: {reason}");
        assert!(reason.contains("127.0.0.1"), "{reason}");
    }
    settled(&base).await;
    assert_eq!(receiver.count(), 0);
    for (_, run) in &runs {
        assert_eq!(history_len(&base, run).await, 1, "not retried");
    }
}

#[tokio::test]
async fn no_callback_url_or_a_status_that_never_ends_delivers_nothing() {
    let origin = start_mock().await;
    let receiver = Receiver::start(&[Answer::Status(200)]).await;
    let base = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 20]})).await;
    let run = create_run(&base, json!({})).await;
    let never = scenario_on(
        &origin,
        json!({"lifecycle_ms": [0, 0, 20], "final_status": "mystery"}),
    )
    .await;
    create_run(&never, json!({"callback_url": receiver.url})).await;
    // The run with a callback_url has ended, and nothing is left to send.
    tokio::time::sleep(Duration::from_millis(100)).await;
    settled(&never).await;
    settled(&base).await;
    assert_eq!(
        get_json(&format!("{base}/v1/runs/{}/callback", id(&run))).await,
        json!({"run_id": run["id"], "callback_url": null, "attempts": []})
    );
    assert!(attempts(&base).await.is_empty());
    assert!(attempts(&never).await.is_empty());
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn deleting_a_scenario_stops_its_pending_deliveries() {
    let origin = start_mock().await;
    let receiver = Receiver::start(&[Answer::Status(500)]).await;
    // One run still going, one between its retries.
    let waiting = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 300]})).await;
    create_run(&waiting, json!({"callback_url": receiver.url})).await;
    let retrying = scenario_on(&origin, json!({"lifecycle_ms": [0, 0, 0]})).await;
    create_run(&retrying, json!({"callback_url": receiver.url})).await;
    receiver.wait_for(1).await;
    for base in [&waiting, &retrying] {
        assert_eq!(get_json(&format!("{base}/callbacks")).await["pending"], 1);
        let reply = client().delete(base.as_str()).send().await.unwrap();
        assert_eq!(reply.status(), 204);
        let reply = client().delete(base.as_str()).send().await.unwrap();
        assert_eq!(reply.status(), 404);
        let reply = client()
            .get(format!("{base}/callbacks"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 404);
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(receiver.count(), 0, "no delivery, no retry");
    let reply = client()
        .delete(format!("{origin}/__mock/s/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
}

#[tokio::test]
async fn the_new_control_calls_answer_only_same_origin_loopback_callers() {
    let base = scenario(json!({})).await;
    let origin = base.split("/__mock").next().unwrap().to_string();
    for request in [
        client().get(format!("{base}/callbacks")),
        client().delete(base.clone()),
    ] {
        let reply = request
            .try_clone()
            .unwrap()
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 403);
        let reply = request
            .header("origin", origin.clone())
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "{}", reply.status());
    }
}
