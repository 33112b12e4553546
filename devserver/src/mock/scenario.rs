//! Scenarios: isolated copies of the mock API, each with its own settings, runs, request log and
//! fault queue, so that concurrent browser tests never see each other's state.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::run::{Failure, Run};

/// Scenarios kept at once; the oldest created one is forgotten first (never the default).
const MAX_SCENARIOS: usize = 2000;
/// Runs kept per scenario; the oldest is forgotten first.
const MAX_RUNS: usize = 500;
/// Log entries kept per scenario; `seq` keeps counting past evictions.
const MAX_LOG: usize = 5000;

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
    #[serde(default)]
    faults: Vec<FaultRule>,
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
}

impl Settings {
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
    Other,
}

/// Which requests a fault rule applies to.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum FaultOn {
    Create,
    Get,
    Search,
    Health,
    Any,
}

impl FaultOn {
    fn matches(self, kind: Kind) -> bool {
        match self {
            FaultOn::Any => true,
            FaultOn::Create => kind == Kind::Create,
            FaultOn::Get => kind == Kind::Get,
            FaultOn::Search => kind == Kind::Search,
            FaultOn::Health => kind == Kind::Health,
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

/// What a fault does to the request it hits.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Action {
    /// An error response in the scenario's envelope; nothing is created.
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
    /// Create the run, then close the connection without any response.
    CreateThenDrop,
    /// Answer normally, `ms` later.
    Delay { ms: u64 },
    /// Never answer; nothing is created.
    Hang,
    /// Create the run, then never answer.
    CreateThenHang,
    /// Answer a get normally but with this `status_code`.
    Status { status_code: String },
}

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
            Action::CreateThenDrop | Action::CreateThenHang if self.on != FaultOn::Create => Err(
                format!("{} only applies to on: \"create\"", self.action.name()),
            ),
            Action::Status { .. } if self.on != FaultOn::Get => {
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
    pub body: Value,
    pub status: u16,
    pub response: Value,
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
    idempotency: HashMap<String, Replay>,
}

impl Scenario {
    fn new(settings: Settings, faults: Vec<FaultRule>) -> Self {
        Scenario {
            settings: Arc::new(settings),
            state: Mutex::new(State {
                faults,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a request and picks the fault (if any) it runs into; returns the entry's `seq`.
    pub(crate) fn begin(&self, mut entry: LogEntry) -> (u64, Option<Action>) {
        let mut state = self.lock();
        let action = pick_fault(&mut state.faults, entry.kind);
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

    pub(crate) fn replay(&self, key: &str) -> Option<Replay> {
        self.lock().idempotency.get(key).cloned()
    }

    pub(crate) fn remember(&self, key: String, replay: Replay) {
        let mut state = self.lock();
        // Bounded like the runs: keys of forgotten runs are worthless anyway.
        if state.idempotency.len() >= MAX_RUNS {
            state.idempotency.clear();
        }
        state.idempotency.insert(key, replay);
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
    pub(crate) fn new(default_lifecycle: [u64; 3]) -> Self {
        let default = Scenario::new(
            Settings::new(&ScenarioConfig::default(), default_lifecycle),
            Vec::new(),
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
        let settings = Settings::new(&config, self.default_lifecycle);
        let scenario = Arc::new(Scenario::new(settings, config.faults));
        let mut reg = self.lock();
        let id = format!("sc{}", reg.next_id);
        reg.next_id += 1;
        if reg.order.len() >= MAX_SCENARIOS {
            if let Some(old) = reg.order.pop_front() {
                reg.scenarios.remove(&old);
            }
        }
        reg.order.push_back(id.clone());
        reg.scenarios.insert(id.clone(), scenario);
        Ok(id)
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

    #[test]
    fn nonsensical_rules_are_refused() {
        for bad in [
            serde_json::json!({"on": "get", "action": {"type": "create_then_drop"}}),
            serde_json::json!({"on": "create", "action": {"type": "status", "status_code": "x"}}),
            serde_json::json!({"on": "get", "times": 0, "action": {"type": "drop"}}),
            serde_json::json!({"on": "get", "action": {"type": "error", "status": 42}}),
        ] {
            assert!(rule(bad).validate().is_err());
        }
        let unknown_field = serde_json::json!({"on": "get", "action": {"type": "error", "status": 429, "retryAfter": "2"}});
        assert!(serde_json::from_value::<FaultRule>(unknown_field).is_err());
    }
}
