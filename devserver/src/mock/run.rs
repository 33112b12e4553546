//! Runs: their lifecycle (a pure function of the time since creation) and their wire JSON.

use std::{
    sync::{atomic::AtomicU32, Arc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use super::{
    files,
    imaging::{self, Format, Job},
    scenario::{FailureFields, OutputShape, Settings},
    AppState,
};

/// The model whose input the mock validates and whose image it really edits.
pub(crate) const KONTEXT: &str = "black-forest-labs/flux-pro/kontext";
/// Runflow's price per output image, in cents.
const CENTS_PER_IMAGE: usize = 4;

/// Why a run failed, as reported in its `failure_*` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: String,
    pub stage: String,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: &str, stage: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            stage: stage.into(),
            message: message.into(),
        }
    }

    /// What `failed` and `errored` runs report unless the scenario overrides it.
    pub(crate) fn provider_error() -> Self {
        Failure::new(
            "PROVIDER_ERROR",
            "inference",
            "The provider could not process the image",
        )
    }
}

/// Where a run is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Queued,
    Dispatching,
    Running,
    /// Past `running`: the scenario's `final_status` applies.
    Done,
}

/// What a `final_status` means, whatever its spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Terminal {
    Succeeded,
    Partial,
    Failed,
    Canceled,
    /// Not a status the API documents: reported as is and never completed.
    Unknown,
}

fn terminal(status: &str) -> Terminal {
    match status {
        "succeeded" => Terminal::Succeeded,
        "partial_succeeded" => Terminal::Partial,
        "failed" | "errored" => Terminal::Failed,
        "canceled" | "cancelled" => Terminal::Canceled,
        _ => Terminal::Unknown,
    }
}

/// What producing a run's images gave.
pub(crate) enum Outcome {
    Images(Vec<OutputImage>),
    Failed(Failure),
}

/// One produced image; with `sync_mode` it travels inline instead of as a file URL.
pub(crate) struct OutputImage {
    width: u32,
    height: u32,
    format: Format,
    data_uri: Option<String>,
}

/// A created run.
pub(crate) struct Run {
    pub id: String,
    pub model: String,
    /// The input as sent, with `seed` filled in.
    pub input: Value,
    pub metadata: Value,
    pub client_ref: Option<String>,
    pub callback_url: Option<String>,
    pub settings: Arc<Settings>,
    /// The host the create came in by: output URLs in its callbacks are on it, as in the GETs
    /// of the client that made it.
    pub host: String,
    /// Redeliveries asked for so far (`POST /v1/runs/{id}/callback-redeliveries`).
    pub redeliveries: AtomicU32,
    created: Instant,
    created_at: SystemTime,
    /// Produced once, when the run is first seen finished.
    outcome: OnceCell<Arc<Outcome>>,
}

impl Run {
    pub(crate) fn new(
        model: String,
        mut input: Map<String, Value>,
        metadata: Value,
        client_ref: Option<String>,
        callback_url: Option<String>,
        settings: Arc<Settings>,
        host: String,
    ) -> Self {
        let id = uuid::Uuid::new_v4();
        if input.get("seed").is_none_or(Value::is_null) {
            // Deterministic per run, so every GET reports the same seed.
            let seed = u32::from_be_bytes([
                id.as_bytes()[0],
                id.as_bytes()[1],
                id.as_bytes()[2],
                id.as_bytes()[3],
            ]);
            input.insert("seed".into(), seed.into());
        }
        Run {
            id: id.to_string(),
            model,
            input: Value::Object(input),
            metadata,
            client_ref,
            callback_url,
            settings,
            host,
            redeliveries: AtomicU32::new(0),
            created: Instant::now(),
            created_at: SystemTime::now(),
            outcome: OnceCell::new(),
        }
    }

    fn phase(&self) -> Phase {
        let elapsed = self.created.elapsed();
        let [queued, dispatching, running] = self.settings.lifecycle;
        if elapsed < queued {
            Phase::Queued
        } else if elapsed < queued + dispatching {
            Phase::Dispatching
        } else if elapsed < queued + dispatching + running {
            Phase::Running
        } else {
            Phase::Done
        }
    }

    /// When the run leaves `running` (and, if its status ever ends, ends).
    pub(crate) fn done_at(&self) -> Instant {
        let [queued, dispatching, running] = self.settings.lifecycle;
        self.created + queued + dispatching + running
    }

    /// Whether the scenario's `final_status` is one that ends (a callback is sent for it).
    pub(crate) fn completes(&self) -> bool {
        terminal(&self.settings.final_status) != Terminal::Unknown
    }

    /// Whether the run has ended: past `running`, with a status that ends.
    pub(crate) fn ended(&self) -> bool {
        self.completes() && self.phase() == Phase::Done
    }

    fn input_str(&self, field: &str) -> Option<&str> {
        self.input.get(field).and_then(Value::as_str)
    }

    fn image_count(&self) -> usize {
        let requested = self.input.get("num_images").and_then(Value::as_u64);
        let requested = requested.unwrap_or(1).clamp(1, 4) as usize;
        if terminal(&self.settings.final_status) == Terminal::Partial {
            (requested - 1).max(1)
        } else {
            requested
        }
    }

    /// Produces the images (off the async executor) the first time anyone asks.
    async fn outcome(&self, state: &Arc<AppState>) -> Arc<Outcome> {
        let init = async {
            let job = Job {
                source: (self.model == KONTEXT)
                    .then(|| self.input_str("image_url").unwrap_or_default().to_string()),
                aspect_ratio: self.input_str("aspect_ratio").map(str::to_string),
                count: self.image_count(),
                format: match self.input_str("output_format") {
                    Some("png") => Format::Png,
                    _ => Format::Jpeg,
                },
                key: format!(
                    "{}\0{}",
                    self.input_str("prompt").unwrap_or_default(),
                    self.input["seed"]
                ),
            };
            let sync = self.input.get("sync_mode") == Some(&Value::Bool(true));
            let (state, id) = (state.clone(), self.id.clone());
            let produced = tokio::task::spawn_blocking(move || {
                let encoded = imaging::produce(&job, &state.www_dir, &state.files, &state.assets)?;
                let images = encoded
                    .iter()
                    .map(|e| OutputImage {
                        width: e.width,
                        height: e.height,
                        format: e.format,
                        data_uri: sync.then(|| {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&e.bytes);
                            format!("data:{};base64,{b64}", e.format.content_type())
                        }),
                    })
                    .collect();
                if !sync {
                    state.files.put(&id, encoded);
                }
                Ok(images)
            })
            .await;
            Arc::new(match produced {
                Ok(Ok(images)) => Outcome::Images(images),
                Ok(Err(failure)) => Outcome::Failed(failure),
                Err(_) => Outcome::Failed(Failure::new(
                    "INTERNAL_ERROR",
                    "postprocessing",
                    "The mock failed to produce the image",
                )),
            })
        };
        self.outcome.get_or_init(|| init).await.clone()
    }

    /// The run as the API sends it. `at` pins the phase (a create always answers `queued`);
    /// `status_override` replaces only the reported `status_code`.
    pub(crate) async fn to_json(
        &self,
        state: &Arc<AppState>,
        host: &str,
        at: Option<Phase>,
        status_override: Option<&str>,
    ) -> Value {
        let phase = at.unwrap_or_else(|| self.phase());
        let [queued, dispatching, running] = self.settings.lifecycle;
        let started_at = self.created_at + queued + dispatching;
        let completed_at = started_at + running;
        let final_status = self.settings.final_status.as_str();
        let mut status = match phase {
            Phase::Queued => "queued",
            Phase::Dispatching => "dispatching",
            Phase::Running => "running",
            Phase::Done => final_status,
        };
        let mut output = Value::Null;
        let mut failure = None;
        let mut cost = Value::Null;
        let done = phase == Phase::Done && terminal(final_status) != Terminal::Unknown;
        if phase == Phase::Done {
            match terminal(final_status) {
                Terminal::Succeeded | Terminal::Partial => match &*self.outcome(state).await {
                    Outcome::Images(images) => {
                        let urls = self.urls(state, images, host, completed_at);
                        output = self.output(images, &urls, running);
                        let cents = images.len() * CENTS_PER_IMAGE;
                        cost = format!("{}.{:02}", cents / 100, cents % 100).into();
                    }
                    Outcome::Failed(f) => {
                        status = "failed";
                        failure = Some(f.clone());
                    }
                },
                Terminal::Failed => failure = Some(self.settings.failure.clone()),
                Terminal::Canceled | Terminal::Unknown => {}
            }
        }
        let mut run = json!({
            "id": self.id,
            "model": self.model,
            "status_code": status_override.unwrap_or(status),
            "input": self.input,
            "output": output,
            "metadata": self.metadata,
            "client_ref": self.client_ref,
            "callback_url": self.callback_url,
            "created_at": rfc3339(self.created_at),
            "started_at": matches!(phase, Phase::Running | Phase::Done).then(|| rfc3339(started_at)),
            "completed_at": done.then(|| rfc3339(completed_at)),
            "duration_ms": done.then_some(running.as_millis() as u64),
            "cost": cost,
            "failure_code": failure.as_ref().map(|f| &f.code),
        });
        let fields = match (self.settings.failure_fields, &failure) {
            (FailureFields::Modern, f) => json!({
                "failure_stage_code": f.as_ref().map(|f| &f.stage),
                "failure_message": f.as_ref().map(|f| &f.message),
            }),
            (FailureFields::Legacy, f) => json!({
                "failure_stage": f.as_ref().map(|f| &f.stage),
                "error": f.as_ref().map(|f| json!({"code": f.code, "message": f.message})),
            }),
        };
        if let (Some(run), Value::Object(fields)) = (run.as_object_mut(), fields) {
            run.extend(fields);
        }
        run
    }

    fn urls(
        &self,
        state: &AppState,
        images: &[OutputImage],
        host: &str,
        completed_at: SystemTime,
    ) -> Vec<String> {
        let expires = unix(completed_at + self.settings.output_url_ttl);
        images
            .iter()
            .enumerate()
            .map(|(index, image)| match &image.data_uri {
                Some(uri) => uri.clone(),
                None => files::url(host, &state.files, &self.id, index, image.format, expires),
            })
            .collect()
    }

    fn output(&self, images: &[OutputImage], urls: &[String], running: Duration) -> Value {
        let describe = |(image, url): (&OutputImage, &String)| {
            json!({
                "url": url,
                "width": image.width,
                "height": image.height,
                "content_type": image.format.content_type(),
            })
        };
        let mut output = Map::new();
        match self.settings.output_shape {
            OutputShape::Outputs => {
                let outputs = images.iter().zip(urls).map(describe).map(|mut o| {
                    o["type"] = "image".into();
                    o
                });
                output.insert("outputs".into(), outputs.collect());
            }
            OutputShape::ImageUrls => {
                output.insert("image_urls".into(), urls.into());
            }
            OutputShape::Images => {
                output.insert(
                    "images".into(),
                    images.iter().zip(urls).map(describe).collect(),
                );
            }
            OutputShape::Image => {
                let first = images.iter().zip(urls).map(describe).next();
                output.insert("image".into(), first.unwrap_or_default());
            }
        }
        let prompt = self.input_str("prompt");
        let actual_prompt = match (prompt, self.input.get("enhance_prompt")) {
            (Some(p), Some(Value::Bool(true))) => {
                Some(format!("{p}, highly detailed, sharp focus"))
            }
            (p, _) => p.map(str::to_string),
        };
        output.insert("seed".into(), self.input["seed"].clone());
        output.insert(
            "model_data".into(),
            json!({"prompt": prompt, "actual_prompt": actual_prompt}),
        );
        output.insert("nsfw_detected".into(), false.into());
        output.insert(
            "timing".into(),
            json!({"inference_ms": running.as_millis() as u64}),
        );
        Value::Object(output)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// RFC 3339 with microseconds and the `+00:00` offset Runflow uses (not `Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_a_numeric_utc_offset() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123456+00:00");
    }

    #[test]
    fn spellings_map_to_terminal_kinds() {
        assert_eq!(terminal("cancelled"), Terminal::Canceled);
        assert_eq!(terminal("errored"), Terminal::Failed);
        assert_eq!(terminal("mystery"), Terminal::Unknown);
    }
}
