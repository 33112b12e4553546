//! Scenarios: isolated copies of the mock API, each with its own settings, runs, request log and
//! fault queue, so that concurrent browser tests never see each other's state.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::task::JoinSet;

use super::{
    callbacks::{self, Attempt, Secret},
    run::{Failure, Run},
};

/// Scenarios kept at once; the oldest created one is forgotten first (never the default).
const MAX_SCENARIOS: usize = 2000;
/// Runs kept per scenario; the oldest is forgotten first.
const MAX_RUNS: usize = 500;
/// Log entries kept per scenario; `seq` keeps counting past evictions.
const MAX_LOG: usize = 5000;
/// Callback attempts kept per scenario; `seq` keeps counting past evictions.
const MAX_ATTEMPTS: usize = 5000;
/// Output URLs last a day unless the scenario says otherwise.
const DEFAULT_OUTPUT_URL_TTL: Duration = Duration::from_secs(24 * 3600);
/// An `upload_url` lasts 15 minutes unless the scenario says otherwise.
const DEFAULT_UPLOAD_TTL_MS: u64 = 15 * 60 * 1000;

/// The body of `POST /__mock/scenarios`: every field is optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioConfig {
    lifecycle_ms: Option<[u64; 3]>,
    final_status: Option<String>,
    output_shape: Option<OutputShape>,
    error_envelope: Option<Envelope>,
    failure_fields: Option<FailureFields>,
    failure: Option<FailureOverride>,
    search: Option<bool>,
    require_auth: Option<bool>,
    api_key: Option<String>,
    upload_ttl_ms: Option<u64>,
    output_url_ttl_ms: Option<u64>,
    idempotency: Option<bool>,
    runflow_proxy: Option<bool>,
    callback_signing: Option<Signing>,
    callback_secrets: Option<Vec<String>>,
    callback_backoff_ms: Option<[u64; 2]>,
    callback_timeout_ms: Option<u64>,
    #[serde(default)]
    faults: Vec<FaultRule>,
}

/// Which secret signs a scenario's callbacks.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Signing {
    /// The newest secret, as Runflow signs (unsigned while there is none).
    #[default]
    Newest,
    /// The second newest (still valid during a rotation); the newest while it is the only one.
    Old,
    /// No `Runflow-Signature`, even when secrets exist.
    None,
}

/// Overrides for the failure reported by `failed`/`errored` runs; missing parts keep the default.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FailureOverride {
    code: Option<String>,
    stage: Option<String>,
    message: Option<String>,
}

/// Where a successful run's images appear in `output` (the variants seen in official examples).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutputShape {
    #[default]
    Outputs,
    ImageUrls,
    Images,
    Image,
}

/// How error bodies are shaped (the API's flat body, its nested variant, or the proxy's).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Envelope {
    #[default]
    Flat,
    Nested,
    Proxy,
}

/// Which field names carry a run's failure (`failure_stage_code` or the older `failure_stage`).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailureFields {
    #[default]
    Modern,
    Legacy,
}

/// The resolved, immutable behaviour of a scenario; every run keeps a handle on its own.
#[derive(Debug)]
pub(crate) struct Settings {
    pub lifecycle: [Duration; 3],
    pub final_status: String,
    pub output_shape: OutputShape,
    pub error_envelope: Envelope,
    pub failure_fields: FailureFields,
    pub failure: Failure,
    pub search: bool,
    pub require_auth: bool,
    /// The one key the API accepts (`"api_key": "rf_..."`): any other, or none, gets 401. The
    /// log never shows keys, so this is how a test checks which key was sent.
    pub api_key: Option<String>,
    /// How long an asset's `upload_url` accepts its PUT.
    pub upload_ttl: Duration,
    /// How long a run's output URLs work after it ends (Runflow's: about a day).
    pub output_url_ttl: Duration,
    /// Whether creates honour `Idempotency-Key` (`"idempotency": false`: the key is ignored, as
    /// the API may do for singleton runs).
    pub idempotency: bool,
    /// Behave as if Runflow's official proxy sat in front (`"runflow_proxy": true`): see
    /// `api::official_proxy_refusal` and `docs/mock.md`.
    pub runflow_proxy: bool,
    /// Which secret signs callbacks (`"callback_signing"`).
    pub callback_signing: Signing,
    /// The pauses before a callback's second and third attempts.
    pub callback_backoff: [Duration; 2],
    /// How long one callback attempt may take.
    pub callback_timeout: Duration,
}

impl Settings {
    /// Whether a create's `Idempotency-Key` is looked at: not when the scenario ignores keys,
    /// nor behind Runflow's proxy, which drops the header.
    pub(crate) fn honours_idempotency_keys(&self) -> bool {
        self.idempotency && !self.runflow_proxy
    }

    fn new(config: &ScenarioConfig, default_lifecycle: [u64; 3]) -> Self {
        let failure = config.failure.as_ref();
        let default = Failure::provider_error();
        let pick = |part: Option<&Option<String>>, fallback: String| {
            part.and_then(Option::clone).unwrap_or(fallback)
        };
        Settings {
            lifecycle: config
                .lifecycle_ms
                .unwrap_or(default_lifecycle)
                .map(Duration::from_millis),
            final_status: config
                .final_status
                .clone()
                .unwrap_or_else(|| "succeeded".into()),
            output_shape: config.output_shape.unwrap_or_default(),
            error_envelope: config.error_envelope.unwrap_or_default(),
            failure_fields: config.failure_fields.unwrap_or_default(),
            failure: Failure {
                code: pick(failure.map(|f| &f.code), default.code),
                stage: pick(failure.map(|f| &f.stage), default.stage),
                message: pick(failure.map(|f| &f.message), default.message),
            },
            search: config.search.unwrap_or(true),
            require_auth: config.require_auth.unwrap_or(false),
            api_key: config.api_key.clone(),
            upload_ttl: Duration::from_millis(
                config.upload_ttl_ms.unwrap_or(DEFAULT_UPLOAD_TTL_MS),
            ),
            output_url_ttl: config
                .output_url_ttl_ms
                .map_or(DEFAULT_OUTPUT_URL_TTL, Duration::from_millis),
            idempotency: config.idempotency.unwrap_or(true),
            runflow_proxy: config.runflow_proxy.unwrap_or(false),
            callback_signing: config.callback_signing.unwrap_or_default(),
            callback_backoff: config
                .callback_backoff_ms
                .unwrap_or(callbacks::DEFAULT_BACKOFF_MS)
                .map(Duration::from_millis),
            callback_timeout: Duration::from_millis(
                config
                    .callback_timeout_ms
                    .unwrap_or(callbacks::DEFAULT_TIMEOUT_MS),
            ),
        }
    }
}

/// The kinds of mock API request, as fault rules and log entries name them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Create,
    Get,
    Search,
    Health,
    UploadCreate,
    UploadPut,
    UploadConfirm,
    CallbackSecret,
    CallbackHistory,
    CallbackRedelivery,
    Other,
}

/// Which requests a fault rule applies to: every one, or one kind.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum FaultOn {
    Any,
    #[serde(untagged)]
    Only(Kind),
}

impl FaultOn {
    fn matches(self, kind: Kind) -> bool {
        match self {
            FaultOn::Any => true,
            FaultOn::Only(only) => only == kind,
        }
    }
}

/// One scripted misbehaviour: `action` on the next `times` matching requests after `skip`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRule {
    on: FaultOn,
    #[serde(default)]
    skip: u32,
    #[serde(default = "one")]
    times: u32,
    action: Action,
}

fn one() -> u32 {
    1
}

/// What a fault does to the request it hits (the `action` of a rule, by its `type`).
///
/// | `type` | fields | what the client gets | is the work done? |
/// |---|---|---|---|
/// | `error` | `status`, `code`?, `message`?, `retry_after`?, `request_id`? | that status, an error body in the scenario's envelope (S3's XML on an upload's PUT), the two headers when given | no |
/// | `raw` | `status` (200), `content_type`?, `body` ("") | exactly that status and body | no |
/// | `status` | `status_code` (`on: "get"` only) | the run as a normal get shows it, with this `status_code` | (a get) |
/// | `delay` | `ms` | the normal answer, `ms` later | yes |
/// | `hang` | | nothing, ever (cut after 5 minutes) | no |
/// | `drop` | | the connection closed, no response | no |
/// | `truncate` | | the normal status and headers, `Content-Length` of the whole body, half of the body, then the connection closed | yes |
/// | `huge` | `bytes`, `status` (200) | `{"padding": "xxx..."}` of exactly `bytes` bytes (14 or more), JSON but not a run, streamed | no |
/// | `create_then_drop` | (`on` a create or an upload step) | the connection closed, no response | yes |
/// | `create_then_hang` | (`on` a create or an upload step) | nothing, ever | yes |
/// | `create_then_error` | `status` (400..=599; `on` a create or an upload step) | that status and an error body, after the work was done | yes |
///
/// "The work" is the create, or the upload step (the asset made, the bytes stored, the upload
/// confirmed). With `"runflow_proxy": true`, the official proxy stands in front: a `drop` or
/// `create_then_drop` becomes its `502 {"error": "Upstream unavailable"}`, and no fault answer
/// keeps a header but `Content-Type`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Action {
    /// An error response in the scenario's envelope (S3's XML on an upload's PUT); nothing is
    /// created or stored.
    Error {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        retry_after: Option<String>,
        request_id: Option<String>,
    },
    /// Exactly this body and status; nothing is created.
    Raw {
        #[serde(default = "ok")]
        status: u16,
        content_type: Option<String>,
        #[serde(default)]
        body: String,
    },
    /// Close the connection without any response; nothing is created.
    Drop,
    /// Create the run (or do the upload step: create, store the bytes, confirm), then close the
    /// connection without any response.
    CreateThenDrop,
    /// Answer normally, `ms` later.
    Delay { ms: u64 },
    /// Never answer; nothing is created.
    Hang,
    /// Create the run (or do the upload step), then never answer.
    CreateThenHang,
    /// Answer a get normally but with this `status_code`.
    Status { status_code: String },
    /// Answer normally (a create is made), but send only half of the body under a
    /// `Content-Length` of the whole, then close the connection: a body cut short.
    Truncate,
    /// A JSON body of exactly `bytes` bytes that is not a run, streamed; nothing is created.
    Huge {
        bytes: u64,
        #[serde(default = "ok")]
        status: u16,
    },
    /// Create the run (or do the upload step), then answer `status` with an error body: the
    /// server acted, but the client is told it failed.
    CreateThenError { status: u16 },
}

/// The smallest `huge` body: `{"padding":""}`.
pub(crate) const HUGE_MIN: u64 = 14;
/// The largest `huge` body: 1 GiB, far past any client's limit.
const HUGE_MAX: u64 = 1 << 30;

fn ok() -> u16 {
    200
}

impl Action {
    /// The action's `type`, as logged.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Action::Error { .. } => "error",
            Action::Raw { .. } => "raw",
            Action::Drop => "drop",
            Action::CreateThenDrop => "create_then_drop",
            Action::Delay { .. } => "delay",
            Action::Hang => "hang",
            Action::CreateThenHang => "create_then_hang",
            Action::Status { .. } => "status",
            Action::Truncate => "truncate",
            Action::Huge { .. } => "huge",
            Action::CreateThenError { .. } => "create_then_error",
        }
    }
}

impl FaultRule {
    /// Rejects rules that could never do what they say.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.times == 0 {
            return Err("a fault rule needs times >= 1".into());
        }
        match &self.action {
            Action::Error { status, .. } | Action::Raw { status, .. }
                if !(200..=599).contains(status) =>
            {
                Err(format!(
                    "status {status} is not a final HTTP status (200..=599)"
                ))
            }
            Action::Huge { status, .. } if !(200..=599).contains(status) => Err(format!(
                "status {status} is not a final HTTP status (200..=599)"
            )),
            Action::Huge { bytes, .. } if !(HUGE_MIN..=HUGE_MAX).contains(bytes) => Err(format!(
                "huge takes bytes from {HUGE_MIN} to {HUGE_MAX}, got {bytes}"
            )),
            Action::CreateThenError { status } if !(400..=599).contains(status) => Err(format!(
                "create_then_error takes an error status (400..=599), got {status}"
            )),
            Action::CreateThenDrop | Action::CreateThenHang | Action::CreateThenError { .. }
                if !matches!(
                    self.on,
                    FaultOn::Only(
                        Kind::Create | Kind::UploadCreate | Kind::UploadPut | Kind::UploadConfirm
                    )
                ) =>
            {
                Err(format!(
                    "{} only applies to on: \"create\" or an upload step",
                    self.action.name()
                ))
            }
            Action::Status { .. } if self.on != FaultOn::Only(Kind::Get) => {
                Err("status only applies to on: \"get\"".into())
            }
            _ => Ok(()),
        }
    }
}

/// One mock API request as the scenario saw it.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct LogEntry {
    pub seq: u64,
    /// When the request came in, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub kind: Kind,
    pub headers: BTreeMap<&'static str, String>,
    pub body: Value,
    /// The status sent; `None` while pending, and for good when the request was dropped or hung.
    pub status: Option<u16>,
    pub fault: Option<&'static str>,
}

/// A create that succeeded with an `Idempotency-Key`: later creates with the key replay it.
#[derive(Clone)]
pub(crate) struct Replay {
    pub status: u16,
    pub response: Value,
}

/// An `Idempotency-Key` as the mock scopes it: `(model path, key)`, so one key sent to two
/// models names two creates.
type IdempotencyKey = (String, String);

/// What an `Idempotency-Key` stands for: a create under way, or its outcome. Only a hash of the
/// body is kept for the same-body check, not the body (up to megabytes with a `data:` image).
struct Claimed {
    /// Its place in `State::idempotency_order`, so the oldest is evicted first.
    seq: u64,
    body_hash: u64,
    replay: Option<Replay>,
}

/// The answer to "look the key up, else reserve it", taken under one lock.
pub(crate) enum Claim {
    /// The key was free: it is now reserved for this create until the reservation completes
    /// (or is dropped unfinished, which frees the key again).
    Reserved(Reservation),
    /// An earlier create with this key and body finished: answer as it did.
    Replay(Replay),
    /// The key was used with another body.
    Conflict,
    /// A create with this key and body is still under way.
    InFlight,
}

/// A key reserved by `Scenario::claim`.
pub(crate) struct Reservation {
    scenario: Arc<Scenario>,
    key: Option<IdempotencyKey>,
    seq: u64,
}

impl Reservation {
    /// Records the create's answer for later creates with the key to replay.
    pub(crate) fn complete(mut self, replay: Replay) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut state = self.scenario.lock();
        // Evicted meanwhile (500 newer keys came in): nothing to record it in.
        if let Some(claimed) = state
            .idempotency
            .get_mut(&key)
            .filter(|c| c.seq == self.seq)
        {
            claimed.replay = Some(replay);
        }
    }
}

impl Drop for Reservation {
    /// A create abandoned before it answered (its client went away) must not hold the key for
    /// ever: free it, unless it was completed.
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut state = self.scenario.lock();
        if state
            .idempotency
            .get(&key)
            .is_some_and(|c| c.seq == self.seq)
        {
            state.idempotency.remove(&key);
            state.idempotency_order.remove(&self.seq);
        }
    }
}

/// A hash of a JSON value that does not depend on the order of object members (two bodies are
/// the same request when they are equal as JSON). SipHash with fixed keys: stable within the
/// process, which is all a replay check needs.
pub(crate) fn body_hash(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(value: &Value, h: &mut std::collections::hash_map::DefaultHasher) {
        match value {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(items) => {
                (4u8, items.len()).hash(h);
                items.iter().for_each(|item| feed(item, h));
            }
            Value::Object(map) => {
                (5u8, map.len()).hash(h);
                let mut members: Vec<_> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (name, item) in members {
                    name.hash(h);
                    feed(item, h);
                }
            }
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    feed(value, &mut hasher);
    hasher.finish()
}

/// A scenario's settings and mutable state.
pub(crate) struct Scenario {
    pub settings: Arc<Settings>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    runs: VecDeque<Arc<Run>>,
    log: VecDeque<LogEntry>,
    next_seq: u64,
    faults: Vec<FaultRule>,
    idempotency: HashMap<IdempotencyKey, Claimed>,
    /// The keys in `idempotency` by age (`Claimed::seq`), oldest first.
    idempotency_order: BTreeMap<u64, IdempotencyKey>,
    next_claim: u64,
    /// Callback signing secrets, oldest first.
    secrets: Vec<Secret>,
    next_secret: u64,
    /// Callback attempts, oldest first.
    attempts: VecDeque<Attempt>,
    next_attempt: u64,
    /// The callback deliveries under way or waiting for their run to end: aborted when the
    /// scenario is forgotten (dropping a `JoinSet` aborts its tasks).
    deliveries: JoinSet<()>,
}

impl Scenario {
    fn new(settings: Settings, faults: Vec<FaultRule>, secrets: Vec<String>) -> Self {
        let secrets: Vec<_> = secrets
            .into_iter()
            .enumerate()
            .map(|(n, plain)| Secret::given(format!("cbs_{}", n + 1), plain))
            .collect();
        Scenario {
            settings: Arc::new(settings),
            state: Mutex::new(State {
                faults,
                next_secret: secrets.len() as u64,
                secrets,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a request and, when it reaches the API (`faultable`), picks the fault (if any) it
    /// runs into; returns the entry's `seq`.
    pub(crate) fn begin(&self, mut entry: LogEntry, faultable: bool) -> (u64, Option<Action>) {
        let mut state = self.lock();
        let action = if faultable {
            pick_fault(&mut state.faults, entry.kind)
        } else {
            None
        };
        entry.seq = state.next_seq;
        entry.fault = action.as_ref().map(Action::name);
        state.next_seq += 1;
        if state.log.len() >= MAX_LOG {
            state.log.pop_front();
        }
        state.log.push_back(entry);
        (state.next_seq - 1, action)
    }

    /// Records the status actually sent for the request logged as `seq`.
    pub(crate) fn finish(&self, seq: u64, status: u16) {
        if let Some(entry) = self.lock().log.iter_mut().rev().find(|e| e.seq == seq) {
            entry.status = Some(status);
        }
    }

    pub(crate) fn log(&self) -> Vec<LogEntry> {
        self.lock().log.iter().cloned().collect()
    }

    pub(crate) fn add_faults(&self, rules: Vec<FaultRule>) {
        self.lock().faults.extend(rules);
    }

    pub(crate) fn add_run(&self, run: Arc<Run>) {
        let mut state = self.lock();
        if state.runs.len() >= MAX_RUNS {
            state.runs.pop_front();
        }
        state.runs.push_back(run);
    }

    pub(crate) fn run(&self, id: &str) -> Option<Arc<Run>> {
        self.lock().runs.iter().find(|r| r.id == id).cloned()
    }

    /// Every run still kept, oldest first.
    pub(crate) fn runs(&self) -> Vec<Arc<Run>> {
        self.lock().runs.iter().cloned().collect()
    }

    /// Makes a new callback signing secret, the newest from now on.
    pub(crate) fn create_secret(&self) -> Secret {
        let mut state = self.lock();
        state.next_secret += 1;
        let secret = Secret::generate(format!("cbs_{}", state.next_secret));
        state.secrets.push(secret.clone());
        secret
    }

    /// The secret the scenario's callbacks are signed with now, if any.
    pub(crate) fn signing_secret(&self) -> Option<Secret> {
        let state = self.lock();
        let count = state.secrets.len();
        let index = match self.settings.callback_signing {
            Signing::Newest => count.checked_sub(1),
            Signing::Old => count.checked_sub(2).or(count.checked_sub(1)),
            Signing::None => None,
        };
        index.and_then(|i| state.secrets.get(i)).cloned()
    }

    /// Runs a callback delivery as one of the scenario's tasks (finished ones are reaped).
    pub(crate) fn spawn(&self, delivery: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut state = self.lock();
        while state.deliveries.try_join_next().is_some() {}
        state.deliveries.spawn(delivery);
    }

    /// Callback deliveries not finished yet: waiting for their run to end, sending, or
    /// between attempts.
    pub(crate) fn pending_deliveries(&self) -> usize {
        let mut state = self.lock();
        while state.deliveries.try_join_next().is_some() {}
        state.deliveries.len()
    }

    /// Stops every pending callback delivery (the scenario is being forgotten).
    pub(crate) fn abort_deliveries(&self) {
        self.lock().deliveries.abort_all();
    }

    /// Records a callback attempt as it starts; returns its `seq`.
    pub(crate) fn begin_attempt(&self, mut attempt: Attempt) -> u64 {
        let mut state = self.lock();
        attempt.seq = state.next_attempt;
        state.next_attempt += 1;
        if state.attempts.len() >= MAX_ATTEMPTS {
            state.attempts.pop_front();
        }
        state.attempts.push_back(attempt);
        state.next_attempt - 1
    }

    /// Records how the callback attempt `seq` ended.
    pub(crate) fn finish_attempt(
        &self,
        seq: u64,
        status: Option<u16>,
        error: Option<String>,
        elapsed_ms: u64,
    ) {
        let mut state = self.lock();
        if let Some(attempt) = state.attempts.iter_mut().rev().find(|a| a.seq == seq) {
            attempt.delivered = status.is_some_and(|s| (200..=299).contains(&s));
            attempt.status = status;
            attempt.error = error;
            attempt.elapsed_ms = Some(elapsed_ms);
        }
    }

    /// Every callback attempt still kept, oldest first.
    pub(crate) fn attempts(&self) -> Vec<Attempt> {
        self.lock().attempts.iter().cloned().collect()
    }

    /// Looks `key` up for a create on `model` with a body hashing to `body_hash`, and reserves
    /// it when it is free, in one locked step: two concurrent creates with one key can never
    /// both find it free.
    pub(crate) fn claim(self: &Arc<Self>, model: &str, key: &str, body_hash: u64) -> Claim {
        let mut state = self.lock();
        let scoped = (model.to_string(), key.to_string());
        if let Some(claimed) = state.idempotency.get(&scoped) {
            return match &claimed.replay {
                _ if claimed.body_hash != body_hash => Claim::Conflict,
                Some(replay) => Claim::Replay(replay.clone()),
                None => Claim::InFlight,
            };
        }
        // Bounded like the runs, forgetting the oldest keys (whose runs are likely gone too)
        // rather than every key at once.
        while state.idempotency.len() >= MAX_RUNS {
            let Some((_, oldest)) = state.idempotency_order.pop_first() else {
                break;
            };
            state.idempotency.remove(&oldest);
        }
        let seq = state.next_claim;
        state.next_claim += 1;
        state.idempotency_order.insert(seq, scoped.clone());
        let claimed = Claimed {
            seq,
            body_hash,
            replay: None,
        };
        state.idempotency.insert(scoped.clone(), claimed);
        Claim::Reserved(Reservation {
            scenario: self.clone(),
            key: Some(scoped),
            seq,
        })
    }
}

/// Every rule matching `kind` sees the request: rules still skipping count it down, and the first
/// rule in order that is done skipping fires (consuming one of its `times`).
fn pick_fault(rules: &mut Vec<FaultRule>, kind: Kind) -> Option<Action> {
    let mut fired = None;
    for rule in rules.iter_mut().filter(|r| r.on.matches(kind)) {
        if rule.skip > 0 {
            rule.skip -= 1;
        } else if fired.is_none() {
            rule.times -= 1;
            fired = Some(rule.action.clone());
        }
    }
    rules.retain(|r| r.times > 0);
    fired
}

/// All scenarios by id; `default` always exists.
pub(crate) struct Registry {
    default_lifecycle: [u64; 3],
    inner: Mutex<RegistryState>,
}

struct RegistryState {
    scenarios: HashMap<String, Arc<Scenario>>,
    order: VecDeque<String>,
    next_id: u64,
}

impl Registry {
    pub(crate) fn new(default_lifecycle: [u64; 3], default_secrets: Vec<String>) -> Self {
        let default = Scenario::new(
            Settings::new(&ScenarioConfig::default(), default_lifecycle),
            Vec::new(),
            default_secrets,
        );
        Registry {
            default_lifecycle: [50, 50, 100],
            inner: Mutex::new(RegistryState {
                scenarios: HashMap::from([("default".to_string(), Arc::new(default))]),
                order: VecDeque::new(),
                next_id: 1,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Scenario>> {
        self.lock().scenarios.get(id).cloned()
    }

    /// Creates a scenario and returns its id.
    ///
    /// # Errors
    /// A message for a fault rule that makes no sense.
    pub(crate) fn create(&self, config: ScenarioConfig) -> Result<String, String> {
        for rule in &config.faults {
            rule.validate()?;
        }
        if config.callback_timeout_ms == Some(0) {
            return Err("callback_timeout_ms must be at least 1".into());
        }
        let secrets = config.callback_secrets.clone().unwrap_or_default();
        if secrets.iter().any(String::is_empty) {
            return Err("callback_secrets must be non-empty strings".into());
        }
        let settings = Settings::new(&config, self.default_lifecycle);
        let scenario = Arc::new(Scenario::new(settings, config.faults, secrets));
        let mut reg = self.lock();
        let id = format!("sc{}", reg.next_id);
        reg.next_id += 1;
        let mut evicted = None;
        if reg.order.len() >= MAX_SCENARIOS {
            if let Some(old) = reg.order.pop_front() {
                evicted = reg.scenarios.remove(&old);
            }
        }
        reg.order.push_back(id.clone());
        reg.scenarios.insert(id.clone(), scenario);
        drop(reg);
        if let Some(evicted) = evicted {
            evicted.abort_deliveries();
        }
        Ok(id)
    }

    /// Forgets a scenario (never the default), stopping its pending callback deliveries.
    ///
    /// Returns whether it existed.
    ///
    /// # Errors
    /// A message when `id` is the default scenario.
    pub(crate) fn remove(&self, id: &str) -> Result<bool, String> {
        if id == "default" {
            return Err("the default scenario cannot be deleted".into());
        }
        let mut reg = self.lock();
        let removed = reg.scenarios.remove(id);
        reg.order.retain(|o| o != id);
        drop(reg);
        Ok(removed.inspect(|s| s.abort_deliveries()).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: Value) -> FaultRule {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rules_skip_then_fire_in_order_and_are_removed_when_exhausted() {
        let mut rules = vec![
            rule(
                serde_json::json!({"on": "get", "skip": 1, "times": 2, "action": {"type": "hang"}}),
            ),
            rule(serde_json::json!({"on": "any", "action": {"type": "drop"}})),
        ];
        // First get: rule 1 skips, rule 2 fires and is exhausted.
        assert_eq!(pick_fault(&mut rules, Kind::Get), Some(Action::Drop));
        assert_eq!(rules.len(), 1);
        assert_eq!(pick_fault(&mut rules, Kind::Create), None);
        assert_eq!(pick_fault(&mut rules, Kind::Get), Some(Action::Hang));
        assert_eq!(pick_fault(&mut rules, Kind::Get), Some(Action::Hang));
        assert!(rules.is_empty());
        assert_eq!(pick_fault(&mut rules, Kind::Get), None);
    }

    fn scenario() -> Arc<Scenario> {
        let settings = Settings::new(&ScenarioConfig::default(), [1, 1, 1]);
        Arc::new(Scenario::new(settings, Vec::new(), Vec::new()))
    }

    fn replay(n: u64) -> Replay {
        Replay {
            status: 201,
            response: serde_json::json!({"id": n}),
        }
    }

    #[test]
    fn a_key_is_looked_up_and_reserved_in_one_step() {
        let scenario = scenario();
        let Claim::Reserved(first) = scenario.claim("m", "k", 1) else {
            panic!("a fresh key is free");
        };
        // While the first create is under way, a second with the same key never creates.
        assert!(matches!(scenario.claim("m", "k", 1), Claim::InFlight));
        assert!(matches!(scenario.claim("m", "k", 2), Claim::Conflict));
        // Scoped by model: the same key on another model is another create.
        assert!(matches!(
            scenario.claim("other", "k", 1),
            Claim::Reserved(_)
        ));
        first.complete(replay(7));
        let Claim::Replay(again) = scenario.claim("m", "k", 1) else {
            panic!("a finished create is replayed");
        };
        assert_eq!(again.response, serde_json::json!({"id": 7}));
        assert!(matches!(scenario.claim("m", "k", 2), Claim::Conflict));
        // An abandoned create frees its key.
        let Claim::Reserved(abandoned) = scenario.claim("m", "gone", 1) else {
            panic!("a fresh key is free");
        };
        drop(abandoned);
        assert!(matches!(scenario.claim("m", "gone", 1), Claim::Reserved(_)));
    }

    #[test]
    fn concurrent_claims_of_one_key_reserve_it_once() {
        let scenario = scenario();
        let reserved: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let scenario = &scenario;
                    s.spawn(move || match scenario.claim("m", "race", 1) {
                        // Kept reserved so a later thread cannot take the key again.
                        Claim::Reserved(r) => {
                            std::mem::forget(r);
                            1
                        }
                        _ => 0,
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(reserved, 1);
    }

    #[test]
    fn a_full_key_table_forgets_the_oldest_keys_only() {
        let scenario = scenario();
        for n in 0..(MAX_RUNS as u64 + 10) {
            match scenario.claim("m", &format!("k{n}"), n) {
                Claim::Reserved(r) => r.complete(replay(n)),
                _ => panic!("k{n} is fresh"),
            }
        }
        assert_eq!(scenario.lock().idempotency.len(), MAX_RUNS);
        assert_eq!(scenario.lock().idempotency_order.len(), MAX_RUNS);
        for n in 0..10 {
            assert!(matches!(
                scenario.claim("m", &format!("k{n}"), n),
                Claim::Reserved(_)
            ));
        }
        let Claim::Replay(kept) = scenario.claim("m", "k509", 509) else {
            panic!("the newest keys are kept");
        };
        assert_eq!(kept.response, serde_json::json!({"id": 509}));
    }

    #[test]
    fn the_body_hash_ignores_member_order_only() {
        let a = serde_json::json!({"input": {"prompt": "p", "seed": 1}, "client_ref": "r"});
        let b: Value =
            serde_json::from_str(r#"{"client_ref":"r","input":{"seed":1,"prompt":"p"}}"#).unwrap();
        assert_eq!(body_hash(&a), body_hash(&b));
        let c = serde_json::json!({"input": {"prompt": "p", "seed": 2}, "client_ref": "r"});
        assert_ne!(body_hash(&a), body_hash(&c));
    }

    #[test]
    fn nonsensical_rules_are_refused() {
        for bad in [
            serde_json::json!({"on": "get", "action": {"type": "create_then_drop"}}),
            serde_json::json!({"on": "create", "action": {"type": "status", "status_code": "x"}}),
            serde_json::json!({"on": "get", "times": 0, "action": {"type": "drop"}}),
            serde_json::json!({"on": "get", "action": {"type": "error", "status": 42}}),
            serde_json::json!({"on": "get", "action": {"type": "create_then_error", "status": 502}}),
            serde_json::json!({"on": "create", "action": {"type": "create_then_error", "status": 200}}),
            serde_json::json!({"on": "get", "action": {"type": "huge", "bytes": 13}}),
            serde_json::json!({"on": "get", "action": {"type": "huge", "bytes": 100, "status": 700}}),
        ] {
            assert!(rule(bad).validate().is_err());
        }
        let unknown_field = serde_json::json!({"on": "get", "action": {"type": "error", "status": 429, "retryAfter": "2"}});
        assert!(serde_json::from_value::<FaultRule>(unknown_field).is_err());
    }
}
