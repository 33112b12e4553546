//! `REDIS_URL`: two dev-server instances on one real `redis-server` (started here on a free
//! loopback port, without persistence, killed on drop) share the relay's events and the
//! proxy's budgets; with Redis gone the relay answers 503 and the budgets hold per instance.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::proxy::{listen_proxy, mock_upstream, upstream_log};
use super::{kontext_input, test_config, KONTEXT_RUNS};
use crate::mock::callbacks::sign;
use crate::relay::redis::{take_at, Redis};
use crate::{app_with_relay, CallbackSecrets, ProxyConfig, Relay, RelayConfig, DEFAULT_RETENTION};
use runflow_proxy_rules::limit::{Bucket, RateLimit};

const SECRET: &str = "whsec_redis_test";
/// Long enough for anything on loopback.
const WAIT: Duration = Duration::from_secs(5);

/// A `redis-server` of this test's own, on a free port.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    async fn start() -> RedisServer {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port (empty: nothing is saved) and waits for its PONG.
    async fn restart(&mut self) {
        let binary = ["/usr/bin/redis-server", "redis-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| Command::new(path).arg("--version").output().is_ok())
            .unwrap_or_else(|| {
                panic!("redis-server is not installed: run scripts/setup.sh (it installs Debian's redis-server)")
            });
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let ready = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port)).await {
                    let mut pong = [0; 7];
                    if socket.write_all(b"PING\r\n").await.is_ok()
                        && socket.read_exact(&mut pong).await.is_ok()
                        && &pong == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "redis-server did not answer on {}",
            self.port
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The mock with the relay on and its events in Redis at `url`, on a real port: its origin.
async fn relay_instance(url: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let secrets = CallbackSecrets::parse(SECRET).unwrap();
    let relay = RelayConfig::new(secrets, &origin)
        .unwrap()
        .in_redis(Redis::parse(url).unwrap(), DEFAULT_RETENTION);
    let app = app_with_relay(test_config(), Relay::On(Box::new(relay)));
    tokio::spawn(crate::serve(listener, app, std::future::pending()));
    origin
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

fn payload(run_id: &str, event: &str, completed_at: &str) -> Vec<u8> {
    json!({
        "event": event,
        "run_id": run_id,
        "status": if event == "run.failed" { "failed" } else { "succeeded" },
        "output": {"images": [{"url": "https://cdn.example.com/out.png"}]},
        "completed_at": completed_at,
    })
    .to_string()
    .into_bytes()
}

/// Posts `body`, signed, to the receiver of `origin`: status and JSON answer.
async fn deliver(origin: &str, body: &[u8]) -> (u16, Value) {
    let response = client()
        .post(format!("{origin}/api/runflow/callbacks"))
        .header("runflow-signature", sign(body, SECRET))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Opens a run's stream; it may stay open across a whole test (`events` bounds the reading).
async fn subscribe(origin: &str, run_id: &str, last: Option<&str>) -> reqwest::Response {
    let mut call = reqwest::Client::new()
        .get(format!("{origin}/api/runflow/runs/{run_id}/events"))
        .timeout(WAIT * 6);
    if let Some(last) = last {
        call = call.header("last-event-id", last);
    }
    call.send().await.unwrap()
}

/// The `(id, event name)` of each event of a stream read to its end.
async fn events(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end; so far: {text:?}"));
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim_start)
            };
            let data: Value = serde_json::from_str(field("data:")?).unwrap();
            Some((
                field("id:")?.to_string(),
                data["event"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Retries `attempt` until it gives `Some` (Redis being reconnected to), failing after `WAIT`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_callback_to_one_instance_reaches_browsers_on_another() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        relay_instance(&redis.url()).await,
        relay_instance(&redis.url()).await,
    );
    // B's browser waits first; the callback reaches A.
    let waiting = subscribe(&b, "run_shared", None).await;
    let body = payload("run_shared", "run.completed", "2025-01-01T10:00:04+00:00");
    assert_eq!(
        deliver(&a, &body).await,
        (200, json!({"received": true, "duplicate": false}))
    );
    assert_eq!(
        events(waiting).await,
        [("1".to_string(), "run.completed".to_string())]
    );
    // A browser on B after the callback gets it at once, from the store.
    assert_eq!(
        events(subscribe(&b, "run_shared", None).await).await,
        [("1".to_string(), "run.completed".to_string())]
    );
    // Runflow redelivering to B what A received (rebuilt: other bytes) is a duplicate.
    let again = payload(
        "run_shared",
        "run.completed",
        "2025-01-01T10:00:04.000+00:00",
    );
    assert_eq!(
        deliver(&b, &again).await,
        (200, json!({"received": true, "duplicate": true}))
    );
}

#[tokio::test]
async fn last_event_id_replays_through_the_other_instance() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        relay_instance(&redis.url()).await,
        relay_instance(&redis.url()).await,
    );
    let first = payload(
        "run_resumed",
        "run.partial_succeeded",
        "2025-01-01T10:00:04+00:00",
    );
    let second = payload("run_resumed", "run.completed", "2025-01-01T10:00:05+00:00");
    assert_eq!(deliver(&a, &first).await.0, 200);
    assert_eq!(deliver(&b, &second).await.0, 200);
    let missed = events(subscribe(&b, "run_resumed", Some("1")).await).await;
    assert_eq!(missed, [("2".to_string(), "run.completed".to_string())]);
    assert_eq!(
        events(subscribe(&a, "run_resumed", None).await).await.len(),
        2
    );
    assert_eq!(subscribe(&a, "run_resumed", Some("2")).await.status(), 204);
}

#[tokio::test]
async fn budgets_hold_across_instances() {
    let redis = RedisServer::start().await;
    let (_, base) = mock_upstream(json!({})).await;
    let settings: Vec<(String, String)> = [
        ("REDIS_URL", redis.url()),
        ("PROXY_CREATES_PER_MINUTE", "1".into()),
        ("PROXY_CREATE_BURST", "3".into()),
        ("PROXY_RATE_PER_SEC", "0.01".into()),
        ("PROXY_BURST", "5".into()),
    ]
    .map(|(name, value)| (name.to_string(), value))
    .into();
    let a = listen_proxy(&base, &settings).await;
    let b = listen_proxy(&base, &settings).await;
    let c = client();
    let create = |host: &str| {
        c.post(format!("http://{host}/api/runflow{KONTEXT_RUNS}"))
            .json(&json!({"input": kontext_input()}))
            .send()
    };
    for host in [&a, &b, &a] {
        assert_eq!(create(host).await.unwrap().status(), 201);
    }
    let spent = create(&b).await.unwrap();
    assert_eq!(spent.status(), 429);
    let wait: u64 = spent.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        spent.json::<Value>().await.unwrap()["code"],
        "create_budget_exceeded"
    );
    // Five calls in all (the refused create among them): the sixth is over the rate.
    let health = |host: &str| c.get(format!("http://{host}/api/runflow/v1/health")).send();
    assert_eq!(health(&a).await.unwrap().status(), 200);
    let limited = health(&b).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "RATE_LIMITED"
    );
    assert_eq!(upstream_log(&base).await.len(), 4);
}

#[tokio::test]
async fn with_redis_down_the_relay_answers_503_and_budgets_hold_per_instance() {
    let mut redis = RedisServer::start().await;
    let (a, b) = (
        relay_instance(&redis.url()).await,
        relay_instance(&redis.url()).await,
    );
    let (_, base) = mock_upstream(json!({})).await;
    let settings: Vec<(String, String)> = [
        ("REDIS_URL", redis.url()),
        ("PROXY_CREATES_PER_MINUTE", "1".into()),
        ("PROXY_CREATE_BURST", "2".into()),
    ]
    .map(|(name, value)| (name.to_string(), value))
    .into();
    let proxy_a = listen_proxy(&base, &settings).await;
    let proxy_b = listen_proxy(&base, &settings).await;
    let c = client();
    let create = |host: &str| {
        let call = c
            .post(format!("http://{host}/api/runflow{KONTEXT_RUNS}"))
            .json(&json!({"input": kontext_input()}))
            .send();
        async move { call.await.unwrap().status().as_u16() }
    };
    assert_eq!(create(&proxy_a).await, 201);
    // A browser on B waits across the outage.
    let waiting = subscribe(&b, "run_after", None).await;
    assert_eq!(waiting.status(), 200);

    redis.stop();
    let body = payload("run_down", "run.completed", "2025-01-01T10:00:04+00:00");
    let (status, answer) = deliver(&a, &body).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("store_unavailable"))
    );
    let refused = eventually("events 503", || async {
        let response = subscribe(&b, "run_down", None).await;
        (response.status() == 503).then_some(response)
    })
    .await;
    assert_eq!(
        refused.json::<Value>().await.unwrap()["code"],
        "store_unavailable"
    );
    // Budgets in process: each instance holds its visitors to the limit on its own.
    assert_eq!(create(&proxy_a).await, 201);
    assert_eq!(create(&proxy_a).await, 201);
    assert_eq!(create(&proxy_a).await, 429);
    assert_eq!(create(&proxy_b).await, 201);

    redis.restart().await;
    let body = payload("run_after", "run.completed", "2025-01-01T10:00:05+00:00");
    eventually("the receiver back", || async {
        (deliver(&a, &body).await.0 == 200).then_some(())
    })
    .await;
    // Published while B's pub/sub may still have been away: it re-reads the store when back.
    assert_eq!(
        events(waiting).await,
        [("1".to_string(), "run.completed".to_string())]
    );
    assert_eq!(
        events(subscribe(&b, "run_after", None).await).await.len(),
        1
    );
    // Budgets shared again (the restarted Redis kept nothing: a fresh burst of 2, for A and B).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(create(&proxy_b).await, 201);
    assert_eq!(create(&proxy_a).await, 201);
    assert_eq!(create(&proxy_b).await, 429);
}

#[tokio::test]
async fn the_budget_script_agrees_with_the_rust_bucket() {
    let server = RedisServer::start().await;
    let redis = Redis::parse(&server.url()).unwrap();
    let limits = [
        RateLimit {
            per_second: 2.0,
            burst: 3,
        },
        RateLimit::CREATES,
        RateLimit::DEFAULT,
        RateLimit {
            per_second: 0.3,
            burst: 1,
        },
    ];
    // Times in µs: bursts, pauses, a long one, and the clock going back.
    let steps: [u64; 14] = [
        0,
        0,
        0,
        0,
        125_000,
        500_000,
        500_000,
        1_750_000,
        1_000_000,
        2_000_000,
        14_000_000,
        14_000_001,
        3_600_000_000,
        3_600_000_000,
    ];
    let origin: u64 = 1_700_000_000_000_000;
    for (n, limit) in limits.into_iter().enumerate() {
        let client = Some(std::net::IpAddr::from([10, 0, 0, n as u8]));
        let mut bucket: Option<Bucket> = None;
        for step in steps {
            let now = origin + step;
            let (next, expected) = limit.take(bucket, Duration::from_micros(now));
            bucket = Some(next);
            let got = take_at(&redis, "agree", limit, client, Some(now))
                .await
                .unwrap();
            assert_eq!(got, expected, "{limit:?} at {step} µs");
        }
    }
}

#[test]
fn the_start_up_lines_name_redis_without_its_password() {
    let vars = |name: &str| match name {
        "RUNFLOW_API_KEY" => Some("rf_test_key".to_string()),
        "RUNFLOW_CALLBACK_SECRETS" => Some(SECRET.to_string()),
        "PUBLIC_URL" => Some("http://127.0.0.1:8080".to_string()),
        "REDIS_URL" => Some("redis://:hunter2@127.0.0.1:6390/1".to_string()),
        _ => None,
    };
    let Relay::On(relay) = Relay::from_env(vars).unwrap() else {
        panic!("the relay is on");
    };
    let proxy = ProxyConfig::from_env(vars).unwrap();
    for line in [relay.summary(), proxy.summary()] {
        assert!(line.contains("Redis at redis://127.0.0.1:6390/1"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
    for line in [format!("{relay:?}"), format!("{proxy:?}")] {
        assert!(line.contains("redis://127.0.0.1:6390/1"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
    let bad = |name: &str| (name == "REDIS_URL").then(|| "http://:hunter2@x".to_string());
    for message in [
        Relay::from_env(bad).unwrap_err(),
        ProxyConfig::from_env(|name| match name {
            "REDIS_URL" => bad(name),
            _ => vars(name),
        })
        .unwrap_err(),
    ] {
        assert!(message.starts_with("REDIS_URL "), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[tokio::test]
async fn a_large_event_goes_through_the_store_and_the_channel_carries_only_its_name() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        relay_instance(&redis.url()).await,
        relay_instance(&redis.url()).await,
    );
    let mut channel = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    channel
        .subscribe("runflow-kontext:relay:events")
        .await
        .unwrap();
    let waiting = subscribe(&b, "run_big", None).await;
    // A sync_mode run: its image comes back inline, 2 MB of data: URI.
    let image = format!("data:image/png;base64,{}", "A".repeat(2_000_000));
    let body = json!({
        "event": "run.completed", "run_id": "run_big", "status": "succeeded",
        "output": {"images": [{"url": image}]}, "completed_at": "2025-01-01T10:00:04+00:00",
    })
    .to_string();
    assert_eq!(deliver(&a, body.as_bytes()).await.0, 200);
    let text = tokio::time::timeout(WAIT, waiting.text())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains(&image), "the whole image reached B");
    let message = tokio::time::timeout(WAIT, channel.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload_bytes(), b"run_big 1");
}
