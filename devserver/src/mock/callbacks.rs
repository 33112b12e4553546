//! Callbacks, delivered as Runflow documents them: when a run with a `callback_url` ends, one
//! POST of `{event, run_id, status, output, duration_ms, created_at, completed_at, metadata}`,
//! signed (`Runflow-Signature`: lowercase hex HMAC-SHA256 of the raw body) when the scenario has
//! a secret, tried 3 times (backoff 1 s then 2 s) on 5xx, timeouts and network errors only.
//! Only loopback `http://` URLs are ever called: the mock must not become a way to make this
//! machine POST elsewhere.
//!
//! Each delivery is a task in its scenario's `JoinSet`: forgetting the scenario aborts them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Weak},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    run::{rfc3339, Phase, Run},
    scenario::Scenario,
    AppState,
};

/// Attempts per delivery, the first included.
pub(crate) const ATTEMPTS: u32 = 3;
/// The pauses before the second and the third attempt, as Runflow documents them.
pub(crate) const DEFAULT_BACKOFF_MS: [u64; 2] = [1000, 2000];
/// How long one attempt may take before it counts as failed (and is retried).
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The payload's members, in the order of the documentation (and of a first delivery).
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

/// The event Runflow sends for a terminal wire status; `None` for a status that never ends.
pub(crate) fn event_for(status: &str) -> Option<&'static str> {
    Some(match status {
        "succeeded" => "run.completed",
        "failed" | "errored" => "run.failed",
        "canceled" | "cancelled" => "run.cancelled",
        "partial_succeeded" => "run.partial_succeeded",
        _ => return None,
    })
}

/// The client deliveries go out with: no proxy from the environment, no redirects followed (a
/// loopback receiver must not bounce a delivery elsewhere), `localhost` pinned to 127.0.0.1
/// (no resolver involved), a fresh connection per attempt.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

/// A signing secret (`POST /v1/callback-secrets`). No `Debug`: the secret must not reach a log.
#[derive(Clone)]
pub(crate) struct Secret {
    pub id: String,
    pub plain: String,
    pub created_at: SystemTime,
}

impl Secret {
    /// A new secret: `whsec_` and 32 random hex digits (a v4 UUID's 122 random bits).
    pub(crate) fn generate(id: String) -> Self {
        Secret::given(id, format!("whsec_{}", uuid::Uuid::new_v4().simple()))
    }

    pub(crate) fn given(id: String, plain: String) -> Self {
        Secret {
            id,
            plain,
            created_at: SystemTime::now(),
        }
    }

    /// The API's answer to its creation, the only time `plain_secret` is shown.
    pub(crate) fn created_json(&self) -> Value {
        json!({
            "id": self.id,
            "plain_secret": self.plain,
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// One delivery attempt, as the control API shows it (`GET /__mock/s/{id}/callbacks`).
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Attempt {
    pub seq: u64,
    pub run_id: String,
    /// 0 for the delivery made when the run ended, k for the k-th redelivery.
    pub delivery: u32,
    pub redelivery: bool,
    /// 1 to `ATTEMPTS` within its delivery.
    pub attempt: u32,
    pub url: String,
    /// When it was sent (or, not delivered, refused), in ms since the Unix epoch.
    pub at_ms: u64,
    pub at: String,
    /// `Runflow-Request-Id`, one per attempt; `None` when nothing was sent.
    pub request_id: Option<String>,
    /// The request headers as sent.
    pub headers: BTreeMap<&'static str, String>,
    /// The body exactly as sent.
    pub body: String,
    /// Which secret signed it, by id (`None`: unsigned).
    pub secret_id: Option<String>,
    /// The receiver's status; `None` while pending or when no answer came.
    pub status: Option<u16>,
    /// Why no answer came (timeout, network error) or why nothing was sent.
    pub error: Option<String>,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// How long the attempt took; `None` while pending or when nothing was sent.
    pub elapsed_ms: Option<u64>,
}

impl Attempt {
    /// The attempt as `GET /v1/runs/{id}/callback` shows it.
    pub(crate) fn public(&self) -> Value {
        json!({
            "delivery": self.delivery,
            "redelivery": self.redelivery,
            "attempt": self.attempt,
            "at": self.at,
            "request_id": self.request_id,
            "status": self.status,
            "error": self.error,
            "delivered": self.delivered,
        })
    }
}

/// What to do after an attempt.
enum Verdict {
    /// Delivered, or refused with a status that is not retried (4xx, 3xx).
    Done,
    /// 5xx, timeout or network error: try again after the backoff.
    Retry,
    /// The scenario or the app is gone: stop quietly.
    Gone,
}

/// Schedules the delivery of `run`'s callback for the moment it ends, if it has a
/// `callback_url` and its status ever ends.
pub(crate) fn schedule(state: &Arc<AppState>, scenario: &Arc<Scenario>, run: &Arc<Run>) {
    let Some(job) = Job::new(state, scenario, run) else {
        return;
    };
    if !run.completes() {
        return;
    }
    scenario.spawn(async move {
        tokio::time::sleep_until(job.run.done_at().into()).await;
        job.deliver(0).await;
    });
}

/// Delivers `run`'s callback again, now; returns the redelivery's number (1, 2, ...), or `None`
/// when the run has no `callback_url`.
pub(crate) fn redeliver(
    state: &Arc<AppState>,
    scenario: &Arc<Scenario>,
    run: &Arc<Run>,
) -> Option<u32> {
    let job = Job::new(state, scenario, run)?;
    let delivery = run.redeliveries.fetch_add(1, Ordering::Relaxed) + 1;
    scenario.spawn(job.deliver(delivery));
    Some(delivery)
}

/// One delivery's context. Weak handles: a pending delivery must not keep its scenario alive
/// (the scenario owns the task, and aborts it when forgotten).
struct Job {
    state: Weak<AppState>,
    scenario: Weak<Scenario>,
    run: Arc<Run>,
    url: String,
}

impl Job {
    fn new(state: &Arc<AppState>, scenario: &Arc<Scenario>, run: &Arc<Run>) -> Option<Job> {
        Some(Job {
            state: Arc::downgrade(state),
            scenario: Arc::downgrade(scenario),
            run: run.clone(),
            url: run.callback_url.clone()?,
        })
    }

    async fn deliver(self, delivery: u32) {
        let Some(body) = self.payload(delivery).await else {
            return;
        };
        if let Err(reason) = loopback_only(&self.url) {
            self.refuse(delivery, body, reason);
            return;
        }
        let settings = self.run.settings.clone();
        for attempt in 1..=ATTEMPTS {
            if let Some(pause) = attempt
                .checked_sub(2)
                .and_then(|i| settings.callback_backoff.get(i as usize))
            {
                tokio::time::sleep(*pause).await;
            }
            match self.attempt(delivery, attempt, &body).await {
                Verdict::Retry => {}
                Verdict::Done | Verdict::Gone => return,
            }
        }
    }

    /// The payload, built now from the run as a GET shows it. The first delivery lists the
    /// members in the documented order; redelivery k rotates them left by 1 + (k - 1) % 7
    /// places, so its bytes (and signature) never equal the first delivery's.
    async fn payload(&self, delivery: u32) -> Option<String> {
        let state = self.state.upgrade()?;
        let run = self
            .run
            .to_json(&state, &self.run.host, Some(Phase::Done), None)
            .await;
        drop(state);
        let event = event_for(run["status_code"].as_str()?)?;
        let values = [
            Value::from(event),
            run["id"].clone(),
            run["status_code"].clone(),
            run["output"].clone(),
            run["duration_ms"].clone(),
            run["created_at"].clone(),
            run["completed_at"].clone(),
            run["metadata"].clone(),
        ];
        Some(serialize(&values, rotation(delivery)))
    }

    fn record(&self, delivery: u32, attempt: u32) -> Attempt {
        let now = SystemTime::now();
        Attempt {
            seq: 0,
            run_id: self.run.id.clone(),
            delivery,
            redelivery: delivery > 0,
            attempt,
            url: self.url.clone(),
            at_ms: unix_ms(now),
            at: rfc3339(now),
            request_id: None,
            headers: BTreeMap::new(),
            body: String::new(),
            secret_id: None,
            status: None,
            error: None,
            delivered: false,
            elapsed_ms: None,
        }
    }

    /// Records a delivery the mock will not make (a URL off loopback).
    fn refuse(&self, delivery: u32, body: String, reason: String) {
        if let Some(scenario) = self.scenario.upgrade() {
            scenario.begin_attempt(Attempt {
                body,
                error: Some(reason),
                ..self.record(delivery, 1)
            });
        }
    }

    async fn attempt(&self, delivery: u32, attempt: u32, body: &str) -> Verdict {
        let (Some(scenario), Some(state)) = (self.scenario.upgrade(), self.state.upgrade()) else {
            return Verdict::Gone;
        };
        let request_id = state.next_request_id();
        let client = state.callback_client.clone();
        drop(state);
        let secret = scenario.signing_secret();
        let mut headers = BTreeMap::from([
            ("content-type", "application/json".to_string()),
            ("runflow-request-id", request_id.clone()),
        ]);
        if let Some(secret) = &secret {
            headers.insert("runflow-signature", sign(body.as_bytes(), &secret.plain));
        }
        let seq = scenario.begin_attempt(Attempt {
            request_id: Some(request_id),
            headers: headers.clone(),
            body: body.to_string(),
            secret_id: secret.map(|s| s.id),
            ..self.record(delivery, attempt)
        });
        // Not kept alive by a delivery under way.
        drop(scenario);
        let timeout = self.run.settings.callback_timeout;
        let mut request = client
            .post(&self.url)
            .timeout(timeout)
            .body(body.to_string());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let (status, error, verdict) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let verdict = if (500..=599).contains(&status) {
                    Verdict::Retry
                } else {
                    Verdict::Done
                };
                (Some(status), None, verdict)
            }
            Err(e) if e.is_timeout() => {
                let ms = timeout.as_millis();
                (
                    None,
                    Some(format!("timeout: no answer within {ms} ms")),
                    Verdict::Retry,
                )
            }
            Err(e) => (None, Some(network_error(&e)), Verdict::Retry),
        };
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.scenario.upgrade() {
            Some(scenario) => scenario.finish_attempt(seq, status, error, elapsed),
            None => return Verdict::Gone,
        }
        verdict
    }
}

/// How many places the members of delivery `delivery` are rotated: 0 for the first, 1 to 7 for
/// redeliveries (never 0, so never the first delivery's bytes).
fn rotation(delivery: u32) -> usize {
    match delivery {
        0 => 0,
        k => 1 + (k as usize - 1) % (MEMBERS.len() - 1),
    }
}

/// The payload as compact JSON, its members in the documented order rotated left by `shift`.
/// Nested objects (`output`, `metadata`) are serialized by serde_json, keys sorted.
fn serialize(values: &[Value; 8], shift: usize) -> String {
    let members = MEMBERS
        .iter()
        .zip(values)
        .cycle()
        .skip(shift)
        .take(MEMBERS.len());
    let members: Vec<String> = members
        .map(|(name, value)| format!("{}:{value}", Value::from(*name)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// `Runflow-Signature`: lowercase hex of HMAC-SHA256 over the raw body, keyed by the secret's
/// UTF-8 bytes.
pub(crate) fn sign(body: &[u8], secret: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length: unreachable.
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts only `http://` URLs on 127.0.0.1, localhost or [::1]; the reason otherwise.
fn loopback_only(url: &str) -> Result<(), String> {
    const RULE: &str = "the mock delivers callbacks only to http://127.0.0.1, http://localhost or http://[::1] URLs";
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("not delivered: {url:?} is not a URL ({e}); {RULE}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "not delivered: scheme {:?}; {RULE}",
            parsed.scheme()
        ));
    }
    match parsed.host_str() {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        host => Err(format!(
            "not delivered: host {:?} is not loopback; {RULE}",
            host.unwrap_or_default()
        )),
    }
}

/// A network error's message with its causes (reqwest's own says little: "error sending
/// request").
fn network_error(error: &reqwest::Error) -> String {
    let mut message = format!("network error: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn unix_ms(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> [Value; 8] {
        [
            "run.completed".into(),
            "r".into(),
            "succeeded".into(),
            json!({"b": 1, "a": 2}),
            42.into(),
            "c".into(),
            "d".into(),
            Value::Null,
        ]
    }

    #[test]
    fn a_first_delivery_lists_the_members_in_the_documented_order() {
        assert_eq!(
            serialize(&values(), 0),
            r#"{"event":"run.completed","run_id":"r","status":"succeeded","output":{"a":2,"b":1},"duration_ms":42,"created_at":"c","completed_at":"d","metadata":null}"#
        );
    }

    #[test]
    fn redeliveries_rotate_the_members_and_never_repeat_the_first_bytes() {
        assert_eq!(
            serialize(&values(), rotation(1)),
            r#"{"run_id":"r","status":"succeeded","output":{"a":2,"b":1},"duration_ms":42,"created_at":"c","completed_at":"d","metadata":null,"event":"run.completed"}"#
        );
        let first = serialize(&values(), 0);
        let first_value: Value = serde_json::from_str(&first).unwrap();
        for k in 1..=20 {
            let again = serialize(&values(), rotation(k));
            assert_ne!(again, first, "redelivery {k}");
            assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), first_value);
        }
        assert_eq!(rotation(7), 7);
        assert_eq!(rotation(8), 1);
    }

    #[test]
    fn signatures_are_lowercase_hex_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_loopback_http_urls_are_called() {
        for ok in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/",
            "http://LOCALHOST/x",
            "http://[::1]:9/",
        ] {
            assert_eq!(loopback_only(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://127.0.0.1/hook",
            "http://127.0.0.2/",
            "http://10.0.0.1/",
            "http://example.com/",
            "http://localhost.example.com/",
            "http://127.0.0.1.nip.io/",
            "ftp://127.0.0.1/",
            "not a url",
        ] {
            let reason = loopback_only(bad).unwrap_err();
            assert!(reason.starts_with("not delivered: "), "{bad}: {reason}");
        }
    }

    #[test]
    fn every_terminal_spelling_has_its_event() {
        assert_eq!(event_for("succeeded"), Some("run.completed"));
        assert_eq!(event_for("errored"), Some("run.failed"));
        assert_eq!(event_for("canceled"), Some("run.cancelled"));
        assert_eq!(event_for("cancelled"), Some("run.cancelled"));
        assert_eq!(
            event_for("partial_succeeded"),
            Some("run.partial_succeeded")
        );
        assert_eq!(event_for("mystery"), None);
    }
}
