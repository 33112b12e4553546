//! The callback relay on real listeners: signed callbacks posted as Runflow documents them
//! (lowercase hex HMAC-SHA256 of the raw body), browsers waiting on `/runs/{id}/events`.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{get, request, send, test_config};
use crate::mock::callbacks::sign;
use crate::{
    app_with_relay, Backend, CallbackSecrets, Config, ProxyConfig, Relay, RelayConfig, Upstream,
    RELAY_HEADER,
};

const SECRET: &str = "whsec_relay_test_new";
const OLD_SECRET: &str = "whsec_relay_test_old";
/// Long enough for any event to have arrived on loopback.
const WAIT: Duration = Duration::from_secs(5);

/// A callback's payload as Runflow sends it.
fn payload(run_id: &str, event: &str, completed_at: &str) -> Vec<u8> {
    let status = match event {
        "run.failed" => "failed",
        "run.cancelled" => "cancelled",
        "run.partial_succeeded" => "partial_succeeded",
        _ => "succeeded",
    };
    json!({
        "event": event,
        "run_id": run_id,
        "status": status,
        "output": {"images": [{"url": "https://cdn.example.com/out.png"}]},
        "duration_ms": 4200,
        "created_at": "2025-01-01T10:00:00+00:00",
        "completed_at": completed_at,
        "metadata": {"note": "relay test"},
    })
    .to_string()
    .into_bytes()
}

fn relay_config(origin: &str, tweak: impl FnOnce(&mut RelayConfig)) -> RelayConfig {
    let secrets = CallbackSecrets::parse(&format!("{SECRET},{OLD_SECRET}")).unwrap();
    let mut relay = RelayConfig::new(secrets, origin).unwrap();
    tweak(&mut relay);
    relay
}

/// The mock with the relay on, on a real port (`PUBLIC_URL` is that port): its origin.
async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> String {
    start_with(test_config(), tweak).await
}

async fn start_with(config: Config, tweak: impl FnOnce(&mut RelayConfig)) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let relay = relay_config(&origin, tweak);
    let app = app_with_relay(config, Relay::On(Box::new(relay)));
    tokio::spawn(crate::serve(listener, app, std::future::pending()));
    origin
}

/// A GET's JSON answer.
async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// Posts `body` to the receiver with `signature` (none when `None`): status and JSON answer.
async fn deliver(origin: &str, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    let mut call = client()
        .post(format!("{origin}/api/runflow/callbacks"))
        .header("content-type", "application/json")
        .header("runflow-request-id", "req_test")
        .body(body.to_vec());
    if let Some(signature) = signature {
        call = call.header("runflow-signature", signature);
    }
    let response = call.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// Posts a callback signed with `SECRET`.
async fn deliver_signed(origin: &str, body: &[u8]) -> (StatusCode, Value) {
    deliver(origin, body, Some(&sign(body, SECRET))).await
}

/// Opens the run's stream (with `Last-Event-ID` when given).
async fn subscribe(origin: &str, run_id: &str, last: Option<&str>) -> reqwest::Response {
    let mut call = client()
        .get(format!("{origin}/api/runflow/runs/{run_id}/events"))
        .header("accept", "text/event-stream");
    if let Some(last) = last {
        call = call.header("last-event-id", last);
    }
    call.send().await.unwrap()
}

/// Reads a stream to its end (failing if it does not end within `WAIT`).
async fn read_to_end(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end; so far: {text:?}"));
    text
}

/// The events of an SSE text: `(id, data as JSON)`, comments skipped.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_string())
            };
            let data = field("data:")?;
            Some((
                field("id:").unwrap_or_default(),
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .collect()
}

/// Reads until `needle` appears (failing after `WAIT`); what was read.
async fn read_until(response: reqwest::Response, needle: &str) -> String {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while !text.contains(needle) {
            let chunk = body.next().await.expect("stream ended").unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} within {WAIT:?}; read {text:?}"));
    text
}

#[tokio::test]
async fn a_signed_callback_reaches_the_waiting_browser_and_the_stream_ends() {
    let origin = start(|_| {}).await;
    let waiting = subscribe(&origin, "run_live_1", None).await;
    assert_eq!(waiting.status(), 200);
    assert_eq!(waiting.headers()["cache-control"], "no-store");
    let body = payload("run_live_1", "run.completed", "2025-01-01T10:00:04+00:00");
    let (status, answer) = deliver_signed(&origin, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"received": true, "duplicate": false}));

    let got = events(&read_to_end(waiting).await);
    assert_eq!(got.len(), 1, "{got:?}");
    let (id, event) = &got[0];
    assert_eq!(id, "1");
    // The CallbackEvent in the JS API's shape.
    assert_eq!(event["event"], "run.completed");
    assert_eq!(event["runId"], "run_live_1");
    assert_eq!(event["status"], "succeeded");
    assert_eq!(event["statusCode"], "succeeded");
    assert_eq!(event["durationMs"], 4200.0);
    assert_eq!(event["completedAt"], "2025-01-01T10:00:04+00:00");
    assert_eq!(event["metadata"], json!({"note": "relay test"}));
    assert_eq!(event["requestId"], "req_test");
    assert!(event["output"].is_object(), "{event}");
}

#[tokio::test]
async fn the_old_secret_is_accepted_during_rotation() {
    let origin = start(|_| {}).await;
    let body = payload("run_rotated", "run.failed", "2025-01-01T10:00:04+00:00");
    let (status, _) = deliver(&origin, &body, Some(&sign(&body, OLD_SECRET))).await;
    assert_eq!(status, StatusCode::OK);
    let got = events(&read_to_end(subscribe(&origin, "run_rotated", None).await).await);
    assert_eq!(got[0].1["status"], "failed");
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_refused_and_nothing_is_published() {
    let origin = start(|config| config.heartbeat = Duration::from_millis(50)).await;
    let body = payload("run_forged", "run.completed", "2025-01-01T10:00:04+00:00");
    let good = sign(&body, SECRET);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let truncated = &good[..63];
    for (body, signature) in [
        (&body, None),
        (&body, Some(sign(&body, "whsec_someone_else"))),
        (&tampered, Some(good.clone())),
        (&body, Some(truncated.to_string())),
        (&body, Some(String::new())),
    ] {
        let (status, answer) = deliver(&origin, body, signature.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {answer}");
        assert_eq!(answer["code"], "bad_signature");
    }
    // Nothing kept: the stream waits, heartbeats and no event.
    let text = read_until(subscribe(&origin, "run_forged", None).await, ": heartbeat").await;
    assert!(events(&text).is_empty(), "{text}");
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_callback_is_a_400() {
    let origin = start(|_| {}).await;
    let bodies: [&[u8]; 5] = [
        b"[1, 2]",
        b"{\"hello\": \"world\"}",
        b"not json",
        b"\xff\xfe",
        br#"{"event": "run.completed", "run_id": "a/../b", "status": "succeeded"}"#,
    ];
    for body in bodies {
        let (status, answer) = deliver_signed(&origin, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(answer["code"], "not_a_callback");
    }
}

#[tokio::test]
async fn a_redelivery_with_new_bytes_is_accepted_but_published_once() {
    let origin = start(|_| {}).await;
    let waiting = subscribe(&origin, "run_twice", None).await;
    let first = payload("run_twice", "run.completed", "2025-01-01T10:00:04+00:00");
    assert_eq!(deliver_signed(&origin, &first).await.1["duplicate"], false);
    // Rebuilt: other bytes, another signature (here by the other valid secret).
    let again = payload(
        "run_twice",
        "run.completed",
        "2025-01-01T10:00:04.000+00:00",
    );
    assert_ne!(first, again);
    let (status, answer) = deliver(&origin, &again, Some(&sign(&again, OLD_SECRET))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"received": true, "duplicate": true}));

    assert_eq!(events(&read_to_end(waiting).await).len(), 1);
    let late = events(&read_to_end(subscribe(&origin, "run_twice", None).await).await);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].1["completedAt"], "2025-01-01T10:00:04+00:00");
}

#[tokio::test]
async fn an_event_that_came_before_the_browser_is_replayed_at_once() {
    let origin = start(|_| {}).await;
    let body = payload("run_early", "run.cancelled", "2025-01-01T10:00:04+00:00");
    assert_eq!(deliver_signed(&origin, &body).await.0, StatusCode::OK);
    let started = std::time::Instant::now();
    let got = events(&read_to_end(subscribe(&origin, "run_early", None).await).await);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["status"], "canceled");
    assert_eq!(got[0].1["event"], "run.cancelled");
}

#[tokio::test]
async fn last_event_id_replays_what_was_missed_and_204_ends_it() {
    let origin = start(|_| {}).await;
    for (event, at) in [
        ("run.partial_succeeded", "2025-01-01T10:00:04+00:00"),
        ("run.completed", "2025-01-01T10:00:05+00:00"),
    ] {
        let body = payload("run_resumed", event, at);
        assert_eq!(deliver_signed(&origin, &body).await.0, StatusCode::OK);
    }
    let all = events(&read_to_end(subscribe(&origin, "run_resumed", None).await).await);
    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);

    let missed = events(&read_to_end(subscribe(&origin, "run_resumed", Some("1")).await).await);
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].0, "2");
    assert_eq!(missed[0].1["event"], "run.completed");

    // Seen it all: 204, which tells EventSource to stop reconnecting.
    let done = subscribe(&origin, "run_resumed", Some("2")).await;
    assert_eq!(done.status(), 204);
    // An id this server never sent counts as none.
    let garbage = subscribe(&origin, "run_resumed", Some("abc")).await;
    assert_eq!(events(&read_to_end(garbage).await).len(), 2);
}

#[tokio::test]
async fn an_idle_stream_heartbeats_then_delivers() {
    let origin = start(|config| config.heartbeat = Duration::from_millis(50)).await;
    let waiting = subscribe(&origin, "run_idle", None).await;
    let mut body = waiting.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while text.matches(": heartbeat").count() < 2 {
            let chunk = body.next().await.expect("stream ended").unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("two heartbeats");
    let event = payload("run_idle", "run.completed", "2025-01-01T10:00:04+00:00");
    assert_eq!(deliver_signed(&origin, &event).await.0, StatusCode::OK);
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    })
    .await
    .expect("the stream ends after the event");
    assert_eq!(events(&text).len(), 1, "{text}");
}

#[tokio::test]
async fn run_ids_of_another_shape_are_refused() {
    let origin = start(|_| {}).await;
    let long = "a".repeat(runflow_proxy_rules::MAX_ID_LEN + 1);
    for id in ["a.b", "a%2Fb", "%20", long.as_str()] {
        let response = subscribe(&origin, id, None).await;
        assert_eq!(response.status(), 400, "{id}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "invalid_run_id", "{id}");
    }
    let longest = "a".repeat(runflow_proxy_rules::MAX_ID_LEN);
    let ok = client()
        .get(format!("{origin}/api/runflow/runs/{longest}/events"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn bodies_over_the_cap_are_a_413() {
    let origin = start(|config| config.max_body_bytes = 1024).await;
    let body = vec![b' '; 2048];
    let (status, answer) = deliver_signed(&origin, &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
}

#[tokio::test]
async fn the_relay_is_advertised_on_api_answers_and_in_backend() {
    let origin = start(|_| {}).await;
    let expected =
        format!("events=/api/runflow/runs/{{id}}/events; callback={origin}/api/runflow/callbacks");
    let health = client()
        .get(format!("{origin}/api/runflow/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.headers()[RELAY_HEADER].to_str().unwrap(), expected);
    let backend: Value = get_json(&format!("{origin}/api/runflow/_backend")).await;
    assert_eq!(
        backend["relay"],
        json!({
            "on": true,
            "events": "/api/runflow/runs/{id}/events",
            "callback": format!("{origin}/api/runflow/callbacks"),
        })
    );
    // Not on the static files.
    let page = client().get(format!("{origin}/")).send().await.unwrap();
    assert!(page.headers().get(RELAY_HEADER).is_none());
}

#[tokio::test]
async fn cross_origin_pages_may_read_the_header_with_mock_cors() {
    let config = Config {
        mock_cors: true,
        ..test_config()
    };
    let origin = start_with(config, |_| {}).await;
    let health = client()
        .get(format!("{origin}/api/runflow/v1/health"))
        .header("origin", "http://localhost:9999")
        .send()
        .await
        .unwrap();
    let exposed: Vec<&str> = health
        .headers()
        .get_all("access-control-expose-headers")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(exposed.join(",").contains(RELAY_HEADER), "{exposed:?}");
}

#[tokio::test]
async fn the_relay_answers_before_the_proxy() {
    let upstream = Upstream::parse("http://127.0.0.1:9").unwrap();
    let proxy = ProxyConfig::new(crate::ApiKey::new("rf_test_key").unwrap(), upstream).unwrap();
    let config = Config {
        backend: Backend::Proxy(Box::new(proxy)),
        ..test_config()
    };
    let origin = start_with(config, |_| {}).await;
    let body = payload("run_proxied", "run.completed", "2025-01-01T10:00:04+00:00");
    let (status, answer) = deliver_signed(&origin, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let got = events(&read_to_end(subscribe(&origin, "run_proxied", None).await).await);
    assert_eq!(got.len(), 1);
    // A proxy answer (refused by its rules) carries the header too.
    let refused = client()
        .get(format!("{origin}/api/runflow/v1/callback-secrets"))
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get(RELAY_HEADER).is_some());
}

#[tokio::test]
async fn without_secrets_the_relay_is_off_and_says_how_to_turn_it_on() {
    let app = crate::app(test_config());
    let signed = payload("run_off", "run.completed", "2025-01-01T10:00:04+00:00");
    let mut call = request(Method::POST, "/api/runflow/callbacks", None);
    *call.body_mut() = axum::body::Body::from(signed.clone());
    call.headers_mut()
        .insert("runflow-signature", sign(&signed, SECRET).parse().unwrap());
    let reply = send(&app, call).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["code"], "relay_off");
    let message = reply.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains("RUNFLOW_CALLBACK_SECRETS"), "{message}");
    assert!(message.contains("PUBLIC_URL"), "{message}");

    let events = get(&app, "/api/runflow/runs/run_off/events").await;
    assert_eq!(events.status, StatusCode::SERVICE_UNAVAILABLE);
    let health = get(&app, "/api/runflow/v1/health").await;
    assert!(health.header(RELAY_HEADER).is_none());
    let backend = get(&app, "/api/runflow/_backend").await.json();
    assert_eq!(backend["relay"]["on"], false);
    assert_eq!(backend["relay"]["message"], json!(message));

    // The binary's reading: secrets without PUBLIC_URL is still off.
    let vars = |name: &str| (name == "RUNFLOW_CALLBACK_SECRETS").then(|| SECRET.to_string());
    assert!(matches!(Relay::from_env(vars).unwrap(), Relay::Off(_)));
}

#[tokio::test]
async fn in_mock_mode_a_run_s_own_callback_reaches_the_waiting_browser() {
    // The whole path on one server: the mock signs the default scenario's deliveries with the
    // relay's newest secret, delivers to the receiver named in the relay header, and the stream
    // of the run gets the event: no GET of the run after the create.
    let origin = start(|_| {}).await;
    let created = client()
        .post(format!(
            "{origin}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs"
        ))
        .json(&json!({"input": super::kontext_input()}))
        .send()
        .await
        .unwrap();
    let advertised = created.headers()[RELAY_HEADER].to_str().unwrap().to_owned();
    let callback = advertised
        .split(';')
        .find_map(|part| part.trim().strip_prefix("callback="))
        .unwrap()
        .to_owned();
    assert_eq!(callback, format!("{origin}/api/runflow/callbacks"));
    // That first run named no callback_url: the default scenario, standing for the dev server's
    // proxy, gave it the relay's. The next names the advertised one itself.
    let first: Value = created.json().await.unwrap();
    assert_eq!(first["callback_url"], json!(callback));
    let run: Value = client()
        .post(format!(
            "{origin}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs"
        ))
        .json(&json!({"input": super::kontext_input(), "callback_url": callback, "metadata": {"n": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap();
    let got = events(&read_to_end(subscribe(&origin, id, None).await).await);
    assert_eq!(got.len(), 1, "{got:?}");
    let event = &got[0].1;
    assert_eq!(event["runId"], id);
    assert_eq!(event["event"], "run.completed");
    assert_eq!(event["metadata"], json!({"n": 1}));
    assert!(event["output"]["outputs"][0]["url"].is_string(), "{event}");
    let log: Value = get_json(&format!("{origin}/__mock/s/default/log")).await;
    let gets = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["kind"] == "get")
        .count();
    assert_eq!(gets, 0, "the browser never polled");
}

#[tokio::test]
async fn the_proxy_gives_creates_without_a_callback_url_the_relay_s() {
    let (_, upstream) = super::proxy::mock_upstream(json!({"api_key": super::proxy::KEY})).await;
    let proxy = ProxyConfig::new(
        crate::ApiKey::new(super::proxy::KEY).unwrap(),
        Upstream::parse(&upstream).unwrap(),
    )
    .unwrap();
    let config = Config {
        backend: Backend::Proxy(Box::new(proxy)),
        ..test_config()
    };
    let origin = start_with(config, |_| {}).await;
    let create = |body: Value| {
        client()
            .post(format!(
                "{origin}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs"
            ))
            .header("origin", &origin)
            .json(&body)
            .send()
    };
    let receiver = format!("{origin}/api/runflow/callbacks");
    let mine = "https://hooks.example.com/runflow";
    for (body, expected) in [
        (json!({"input": super::kontext_input()}), json!(receiver)),
        (
            json!({"input": super::kontext_input(), "callback_url": mine}),
            json!(mine),
        ),
        // An explicit null asks for no callback.
        (
            json!({"input": super::kontext_input(), "callback_url": null}),
            Value::Null,
        ),
    ] {
        let answer = create(body).await.unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        let run: Value = answer.json().await.unwrap();
        assert_eq!(run["callback_url"], expected, "{run}");
    }
    // What Runflow received: the filled-in body went upstream.
    let log = super::proxy::upstream_log(&upstream).await;
    let sent: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"] == "create")
        .map(|e| &e["body"]["callback_url"])
        .collect();
    assert_eq!(
        sent,
        [&json!(receiver), &json!(mine), &Value::Null],
        "{log:?}"
    );
}

#[tokio::test]
async fn streams_are_bounded_per_client_and_in_time() {
    let origin = start(|config| {
        config.heartbeat = Duration::from_millis(50);
        config.limit_streams(100, 2);
    })
    .await;
    let first = subscribe(&origin, "run_a", None).await;
    let second = subscribe(&origin, "run_b", None).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = subscribe(&origin, "run_c", None).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let refusal: Value = third.json().await.unwrap();
    assert_eq!(refusal["code"], "too_many_streams");
    // A browser that leaves frees its place (noticed at the next heartbeat's write).
    drop(first);
    let again = tokio::time::timeout(WAIT, async {
        loop {
            let answer = subscribe(&origin, "run_c", None).await;
            if answer.status() == StatusCode::OK {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a place came back");
    drop((second, again));

    // A stream whose run never ends is closed after max_stream_duration, without an event.
    let origin = start(|config| config.max_stream_duration = Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let text = read_to_end(subscribe(&origin, "run_forever", None).await).await;
    assert!(events(&text).is_empty(), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
