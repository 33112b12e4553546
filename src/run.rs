//! The run object: parsing every wire variant the API is known to send into one normal form.

use crate::error::Error;
use crate::json::{Json, JsonValue as Value};
use crate::literal::string_enum;
use crate::text::signed;

string_enum! {
    /// A run's state, normalised over the spellings the API uses.
    pub enum Status as TS_RUN_STATUS = "/** `Run.status`: the normalised state (`status_code` keeps the wire spelling). */\nexport type RunStatus =" {
        /// Accepted, waiting for capacity.
        Queued => "queued",
        /// Being handed to a provider.
        Dispatching => "dispatching",
        /// The model is working.
        Running => "running",
        /// Done; `output` holds the images.
        Succeeded => "succeeded",
        /// Done with some outputs missing.
        PartialSucceeded => "partial_succeeded",
        /// Failed (also `errored` on the wire); `failure` says why.
        Failed => "failed",
        /// Canceled (also `cancelled` on the wire).
        Canceled => "canceled",
        /// A status this client does not know; treated as still in progress.
        Unknown => "unknown",
    }
}

impl Status {
    /// Reads a wire status, whatever its spelling or case.
    pub fn parse(wire: &str) -> Status {
        match wire.trim().to_ascii_lowercase().as_str() {
            "queued" | "pending" => Status::Queued,
            "dispatching" => Status::Dispatching,
            "running" | "processing" | "in_progress" => Status::Running,
            "succeeded" | "success" | "completed" => Status::Succeeded,
            "partial_succeeded" | "partially_succeeded" => Status::PartialSucceeded,
            "failed" | "errored" | "error" => Status::Failed,
            "canceled" | "cancelled" => Status::Canceled,
            _ => Status::Unknown,
        }
    }

    /// Whether the run will not change any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::PartialSucceeded | Status::Failed | Status::Canceled
        )
    }

    /// Whether the run ended without its result.
    pub const fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Canceled)
    }
}

/// A run, normalised: the same shape whatever variant the server sent.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run id (opaque).
    pub id: String,
    /// The normalised status.
    pub status: Status,
    /// The status exactly as the server sent it.
    pub status_code: String,
    /// The model id, when sent.
    pub model: Option<String>,
    /// The input as the server recorded it.
    pub input: Value,
    /// The result, once there is one.
    pub output: Option<Output>,
    /// Why the run failed, when it did.
    pub failure: Option<Failure>,
    /// The metadata given at creation.
    pub metadata: Value,
    /// The correlation id given at creation.
    pub client_ref: Option<String>,
    /// The callback URL given at creation.
    pub callback_url: Option<String>,
    /// When the run was created (ISO 8601).
    pub created_at: Option<String>,
    /// When it started running.
    pub started_at: Option<String>,
    /// When it reached a terminal state.
    pub completed_at: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: Option<f64>,
    /// What it cost, as a decimal string (e.g. `"0.04"`).
    pub cost: Option<String>,
}

/// The result of a run, whichever output shape the server used.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// One entry per image.
    pub outputs: Vec<OutputImage>,
    /// The seed used (`null` when not sent).
    pub seed: Value,
    /// Model-specific extras.
    pub model_data: Value,
    /// `true`/`false`, or `None` when not checked.
    pub nsfw_detected: Option<bool>,
    /// Provider timing, when sent.
    pub timing: Value,
}

/// One output image.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputImage {
    /// A presigned URL (expires in about a day) or a `data:` URI with `sync_mode`.
    pub url: String,
    /// Pixel width, when known.
    pub width: Option<f64>,
    /// Pixel height, when known.
    pub height: Option<f64>,
    /// MIME type, sent or inferred from the URL.
    pub content_type: Option<String>,
    /// When the URL stops working (ms since the epoch), when it says (`expiry::url_expiry`).
    pub expires_at: Option<u64>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The server's failure code, e.g. `"PROVIDER_ERROR"`.
    pub code: Option<String>,
    /// Where it failed, e.g. `"inference"`.
    pub stage: Option<String>,
    /// The server's explanation.
    pub message: Option<String>,
}

/// Parses a run response body. `status` is the HTTP status, for the error message.
///
/// # Errors
/// `invalid_response` when the body is not JSON, not an object, or has no id or status.
pub fn parse_run(status: u16, body: &str) -> Result<Run, Error> {
    let value =
        Value::parse(body).ok_or_else(|| Error::invalid_response(status, describe_body(body)))?;
    run_from_json(status, &value)
}

/// Parses a search response (`{items: [...]}`) into runs.
///
/// # Errors
/// `invalid_response` when the body is not that shape or an item is not a run.
pub fn parse_search(status: u16, body: &str) -> Result<Vec<Run>, Error> {
    let page =
        Value::parse(body).ok_or_else(|| Error::invalid_response(status, describe_body(body)))?;
    runs_from_search(status, &page)
}

/// Reads a parsed search response (`{items: [...]}`) into runs.
///
/// # Errors
/// `invalid_response` when it is not that shape or an item is not a run.
pub fn runs_from_search(status: u16, page: &Value) -> Result<Vec<Run>, Error> {
    let items = page
        .member("items")
        .items()
        .or_else(|| page.member("data").items());
    let items =
        items.ok_or_else(|| Error::invalid_response(status, "a search result without `items`"))?;
    // A loop rather than collecting into Result<Vec<_>>, whose adapter costs wasm bytes.
    let mut runs = Vec::with_capacity(items.len());
    for item in &items {
        runs.push(run_from_json(status, item)?);
    }
    Ok(runs)
}

fn text(value: &Value, key: &'static str) -> Option<String> {
    Json::as_str(&value.member(key))
}

/// Reads a parsed run; `status` is the HTTP status, for the error message.
///
/// # Errors
/// `invalid_response` when it is not an object, or has no id or status.
pub fn run_from_json(status: u16, wire: &Value) -> Result<Run, Error> {
    if !Json::is_plain_object(wire) {
        return Err(Error::invalid_response(
            status,
            "JSON that is not a run object",
        ));
    }
    let id = text(wire, "id")
        .filter(|id| !id.is_empty())
        .or_else(|| Json::as_f64(&wire.member("id")).map(|n| signed(n as i64)));
    let Some(id) = id else {
        return Err(Error::invalid_response(status, "a run without an id"));
    };
    let Some(status_code) = text(wire, "status_code").or_else(|| text(wire, "status")) else {
        return Err(
            Error::invalid_response(status, "a run without a status_code").with_run_id(&id),
        );
    };
    let run_status = Status::parse(&status_code);
    // Older payloads put the failure in `error`, as an object or a bare message; a run this
    // client normalised already has it in `failure`.
    let error = wire.member("error");
    let normal = wire.member("failure");
    let failure = Failure {
        code: text(wire, "failure_code")
            .or_else(|| text(&error, "code"))
            .or_else(|| text(&normal, "code")),
        stage: text(wire, "failure_stage_code")
            .or_else(|| text(wire, "failure_stage"))
            .or_else(|| text(&normal, "stage")),
        message: text(wire, "failure_message")
            .or_else(|| text(&error, "message"))
            .or_else(|| Json::as_str(&error))
            .or_else(|| text(&normal, "message")),
    };
    let has_failure =
        failure.code.is_some() || failure.message.is_some() || failure.stage.is_some();
    let cost = wire.member("cost");
    Ok(Run {
        id,
        status: run_status,
        status_code,
        model: text(wire, "model"),
        input: wire.member("input"),
        output: normalise_output(&wire.member("output")),
        failure: (has_failure || run_status.is_failure()).then_some(failure),
        metadata: wire.member("metadata"),
        client_ref: text(wire, "client_ref"),
        callback_url: text(wire, "callback_url"),
        created_at: text(wire, "created_at"),
        started_at: text(wire, "started_at"),
        completed_at: text(wire, "completed_at"),
        duration_ms: Json::as_f64(&wire.member("duration_ms")),
        // A number is printed by JSON, not Rust: float formatting would cost the wasm 15 KB.
        cost: Json::as_str(&cost).or_else(|| Json::as_f64(&cost).and_then(|_| cost.stringify())),
    })
}

impl Run {
    /// Takes in an event of the dev server's callback relay (a `CallbackEvent` as JSON: `status`,
    /// `statusCode`, `output`, `completedAt`, `durationMs`), so a run followed by push ends with
    /// what its callback said, without another GET. Returns whether the event was this run's
    /// and changed its status.
    pub fn apply_event(&mut self, event: &Value) -> bool {
        let status_code = text(event, "statusCode").or_else(|| text(event, "status"));
        let Some(status_code) = status_code.filter(|code| !code.is_empty()) else {
            return false;
        };
        if text(event, "runId").is_some_and(|id| id != self.id) || status_code == self.status_code {
            return false;
        }
        self.status = Status::parse(&status_code);
        self.status_code = status_code;
        let output = normalise_output(&event.member("output"));
        if output.is_some() {
            self.output = output;
        }
        self.completed_at = text(event, "completedAt").or(self.completed_at.take());
        self.duration_ms = Json::as_f64(&event.member("durationMs")).or(self.duration_ms);
        true
    }
}

/// Normalises `outputs[]`, `image_urls[]`, `images[]` and `image` into `outputs[]`.
pub fn normalise_output(output: &Value) -> Option<Output> {
    if !Json::is_plain_object(output) {
        return None;
    }
    let mut images: Vec<OutputImage> = Vec::new();
    for key in ["outputs", "images", "image_urls"] {
        images.extend(
            output
                .member(key)
                .items()
                .unwrap_or_default()
                .iter()
                .filter_map(image_from_json),
        );
    }
    images.extend(image_from_json(&output.member("image")));
    let flags = output
        .field("nsfw_detected")
        .or_else(|| output.field("has_nsfw_concepts"));
    let nsfw_detected = flags.and_then(|flags| match flags.items() {
        Some(each) => Some(each.iter().any(|flag| Json::as_bool(flag) == Some(true))),
        None => Json::as_bool(&flags),
    });
    let or_null = |key: &'static str| output.field(key).unwrap_or_else(Value::null);
    Some(Output {
        outputs: images,
        seed: or_null("seed"),
        model_data: or_null("model_data"),
        nsfw_detected,
        timing: or_null("timing"),
    })
}

fn image_from_json(value: &Value) -> Option<OutputImage> {
    let url = Json::as_str(value).or_else(|| text(value, "url"))?;
    // Pages put these URLs in <img src> and download links: nothing that could run script.
    let scheme = url.get(..11).unwrap_or(&url).to_ascii_lowercase();
    if !["https://", "http://", "data:image/", "blob:"]
        .iter()
        .any(|s| scheme.starts_with(s))
    {
        return None;
    }
    let dimension = |key: &'static str| Json::as_f64(&value.member(key)).filter(|n| *n > 0.0);
    let content_type = text(value, "content_type").or_else(|| content_type_of(&url));
    Some(OutputImage {
        width: dimension("width"),
        height: dimension("height"),
        content_type,
        expires_at: crate::expiry::url_expiry(&url),
        url,
    })
}

impl Output {
    /// The output as a JSON object, in the shape the JS API promises (`Run.output`).
    pub fn to_json(&self) -> Value {
        let images = self
            .outputs
            .iter()
            .map(|image| {
                let mut fields = vec![
                    ("type", Value::string("image")),
                    ("url", Value::string(&image.url)),
                ];
                fields.extend(image.width.map(|w| ("width", Value::number(w))));
                fields.extend(image.height.map(|h| ("height", Value::number(h))));
                fields.extend(
                    image
                        .content_type
                        .as_deref()
                        .map(|c| ("content_type", Value::string(c))),
                );
                fields.extend(
                    image
                        .expires_at
                        .map(|at| ("expiresAt", Value::number(at as f64))),
                );
                Value::object(fields)
            })
            .collect();
        Value::object(vec![
            ("outputs", Value::array(images)),
            ("seed", self.seed.clone()),
            ("model_data", self.model_data.clone()),
            (
                "nsfw_detected",
                self.nsfw_detected.map_or_else(Value::null, Value::boolean),
            ),
            ("timing", self.timing.clone()),
        ])
    }
}

impl Run {
    /// The run as a JSON object, in the shape the JS API promises.
    pub fn to_json(&self) -> Value {
        let string = |s: &Option<String>| s.as_deref().map_or_else(Value::null, Value::string);
        let number = |n: Option<f64>| n.map_or_else(Value::null, Value::number);
        let output = self
            .output
            .as_ref()
            .map_or_else(Value::null, Output::to_json);
        let failure = self.failure.as_ref().map_or_else(Value::null, |failure| {
            Value::object(vec![
                ("code", string(&failure.code)),
                ("stage", string(&failure.stage)),
                ("message", string(&failure.message)),
            ])
        });
        let or_null = |value: &Value| {
            if Json::is_absent(value) {
                Value::null()
            } else {
                value.clone()
            }
        };
        Value::object(vec![
            ("id", Value::string(&self.id)),
            ("status", Value::string(self.status.as_str())),
            ("status_code", Value::string(&self.status_code)),
            ("model", string(&self.model)),
            ("input", or_null(&self.input)),
            ("output", output),
            ("failure", failure),
            ("metadata", or_null(&self.metadata)),
            ("client_ref", string(&self.client_ref)),
            ("callback_url", string(&self.callback_url)),
            ("created_at", string(&self.created_at)),
            ("started_at", string(&self.started_at)),
            ("completed_at", string(&self.completed_at)),
            ("duration_ms", number(self.duration_ms)),
            ("cost", string(&self.cost)),
        ])
    }
}

/// Infers a MIME type from a `data:` URI or a file extension in a URL's path.
fn content_type_of(url: &str) -> Option<String> {
    if let Some(rest) = url.strip_prefix("data:") {
        return rest
            .split([';', ','])
            .next()
            .filter(|mime| mime.as_bytes().contains(&b'/'))
            .map(str::to_owned);
    }
    let path = url.split(['?', '#']).next()?;
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    let mime = match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => return None,
    };
    Some(mime.to_owned())
}

/// What a body that is not JSON looks like, for messages.
pub fn describe_body(body: &str) -> &'static str {
    let start = body.trim_start();
    if start.is_empty() {
        "an empty body"
    } else if start.starts_with('<') {
        "an HTML page instead of JSON"
    } else {
        "a body that is not valid JSON"
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn parse(value: Value) -> Run {
        parse_run(200, &value.to_string()).expect("a valid run")
    }

    #[test]
    fn every_status_spelling_is_normalised() {
        let table = [
            ("queued", Status::Queued, false),
            ("dispatching", Status::Dispatching, false),
            ("running", Status::Running, false),
            ("succeeded", Status::Succeeded, true),
            ("SUCCEEDED", Status::Succeeded, true),
            ("partial_succeeded", Status::PartialSucceeded, true),
            ("failed", Status::Failed, true),
            ("errored", Status::Failed, true),
            ("canceled", Status::Canceled, true),
            ("cancelled", Status::Canceled, true),
            ("mystery", Status::Unknown, false),
        ];
        for (wire, status, terminal) in table {
            let run = parse(json!({"id": "r1", "status_code": wire}));
            assert_eq!(run.status, status, "{wire}");
            assert_eq!(run.status_code, wire);
            assert_eq!(run.status.is_terminal(), terminal, "{wire}");
        }
    }

    #[test]
    fn a_relay_event_ends_the_run_it_belongs_to() {
        // The relay's path: Runflow's payload, parsed and sent on as `CallbackEvent` JSON.
        let payload = json!({"event": "run.completed", "run_id": "r1", "status": "succeeded",
            "output": {"images": [{"url": "https://cdn.runflow.io/o/1.png"}], "seed": 7},
            "duration_ms": 4200, "created_at": "2026-12-01T10:00:00+00:00",
            "completed_at": "2026-12-01T10:00:04+00:00", "metadata": null});
        let event = crate::callback::parse_event(&payload.to_string(), Some("req_1"))
            .expect("a callback")
            .to_json();
        let mut run =
            parse(json!({"id": "r1", "status_code": "running", "input": {"prompt": "p"}}));
        assert!(run.apply_event(&event));
        assert_eq!(
            (run.status, run.status_code.as_str()),
            (Status::Succeeded, "succeeded")
        );
        let output = run.output.as_ref().expect("the event's output");
        assert_eq!(output.outputs[0].url, "https://cdn.runflow.io/o/1.png");
        assert_eq!(output.seed, json!(7));
        assert_eq!(
            run.completed_at.as_deref(),
            Some("2026-12-01T10:00:04+00:00")
        );
        assert_eq!(run.duration_ms, Some(4200.0));
        assert_eq!(run.input, json!({"prompt": "p"}), "kept from the GET");
        // Already applied, another run's, or not an event: nothing changes.
        assert!(!run.apply_event(&event));
        let mut other = parse(json!({"id": "r2", "status_code": "running"}));
        assert!(!other.apply_event(&event));
        assert_eq!(other.status, Status::Running);
        assert!(!other.apply_event(&json!({"heartbeat": true})));
        // A failure keeps what the run knew; the event carries no output.
        let failed =
            json!({"runId": "r2", "status": "failed", "statusCode": "failed", "output": null});
        assert!(other.apply_event(&failed));
        assert!(other.status.is_failure());
        assert!(other.output.is_none());
    }

    #[test]
    fn every_output_shape_is_normalised() {
        let url = "https://cdn.runflow.io/o/1.png?X-Signature=abc";
        let shapes = [
            json!({"outputs": [{"type": "image", "url": url, "width": 1024, "height": 768, "content_type": "image/png"}]}),
            json!({"image_urls": [url]}),
            json!({"images": [{"url": url}]}),
            json!({"image": {"url": url}}),
        ];
        for shape in shapes {
            let run = parse(json!({"id": "r1", "status_code": "succeeded", "output": shape}));
            let output = run.output.expect("output");
            assert_eq!(output.outputs.len(), 1);
            assert_eq!(output.outputs[0].url, url);
            assert_eq!(output.outputs[0].content_type.as_deref(), Some("image/png"));
        }
    }

    #[test]
    fn only_image_urls_that_cannot_run_script_are_kept() {
        let run = parse(
            json!({"id": "r1", "status_code": "succeeded", "output": {"image_urls": [
                "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,<script>", "https://x/1.png", "HTTP://x/2.png", "data:image/png;base64,AA", "blob:https://x/3"
            ]}}),
        );
        let urls: Vec<&str> = run
            .output
            .as_ref()
            .map(|o| o.outputs.iter().map(|i| i.url.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            urls,
            [
                "https://x/1.png",
                "HTTP://x/2.png",
                "data:image/png;base64,AA",
                "blob:https://x/3"
            ]
        );
    }

    #[test]
    fn output_extras_are_kept() {
        let run = parse(json!({"id": "r1", "status_code": "succeeded", "output": {
            "outputs": [{"type": "image", "url": "data:image/jpeg;base64,AAAA"}, {"type": "image", "url": "https://x/2.jpg"}],
            "seed": 42, "model_data": {"prompt": "p"}, "nsfw_detected": null, "timing": {"inference_ms": 1200}
        }}));
        let output = run.output.expect("output");
        assert_eq!(output.outputs.len(), 2);
        assert_eq!(
            output.outputs[0].content_type.as_deref(),
            Some("image/jpeg")
        );
        assert_eq!(output.seed, json!(42));
        assert_eq!(output.nsfw_detected, None);
        assert_eq!(output.timing, json!({"inference_ms": 1200}));
        assert_eq!(output.model_data, json!({"prompt": "p"}));
    }

    #[test]
    fn failure_fields_modern_and_legacy() {
        let modern = parse(
            json!({"id": "r", "status_code": "failed", "failure_code": "PROVIDER_ERROR", "failure_stage_code": "inference", "failure_message": "boom"}),
        );
        assert_eq!(
            modern.failure,
            Some(Failure {
                code: Some("PROVIDER_ERROR".into()),
                stage: Some("inference".into()),
                message: Some("boom".into())
            })
        );
        let legacy = parse(
            json!({"id": "r", "status_code": "errored", "failure_stage": "inference", "error": {"code": "E", "message": "boom"}}),
        );
        assert_eq!(
            legacy.failure,
            Some(Failure {
                code: Some("E".into()),
                stage: Some("inference".into()),
                message: Some("boom".into())
            })
        );
        let ok = parse(json!({"id": "r", "status_code": "succeeded", "failure_code": null}));
        assert_eq!(ok.failure, None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_tolerated() {
        let run = parse(
            json!({"id": "r", "status_code": "queued", "future_field": [1, 2], "output": null, "metadata": null, "cost": "0.04", "duration_ms": null}),
        );
        assert_eq!(run.output, None);
        assert_eq!(run.cost.as_deref(), Some("0.04"));
    }

    #[test]
    fn malformed_bodies_are_invalid_responses() {
        for body in [
            "<html>oops</html>",
            "{\"id\": \"r\", \"status_co",
            "",
            "[]",
            "{\"status_code\": \"queued\"}",
            "{\"id\": \"r\"}",
            "null",
        ] {
            let error = parse_run(200, body).expect_err(body);
            assert_eq!(error.code, ErrorCode::InvalidResponse, "{body}");
            assert_eq!(error.status, Some(200));
        }
    }

    #[test]
    fn the_js_shape() {
        let run = parse(
            json!({"id": "r1", "status_code": "cancelled", "output": {"image_urls": ["https://x/1.png"]}, "metadata": {"k": 1}}),
        );
        assert_eq!(
            run.to_json(),
            json!({
                "id": "r1", "status": "canceled", "status_code": "cancelled", "model": null, "input": null,
                "output": {"outputs": [{"type": "image", "url": "https://x/1.png", "content_type": "image/png"}], "seed": null, "model_data": null, "nsfw_detected": null, "timing": null},
                "failure": {"code": null, "stage": null, "message": null}, "metadata": {"k": 1}, "client_ref": null, "callback_url": null,
                "created_at": null, "started_at": null, "completed_at": null, "duration_ms": null, "cost": null,
            })
        );
    }

    #[test]
    fn search_results() {
        let runs = parse_search(
            200,
            &json!({"items": [{"id": "a", "status_code": "queued"}], "total": 1}).to_string(),
        )
        .expect("items");
        assert_eq!(runs.len(), 1);
        assert!(parse_search(200, "{}").is_err());
    }
}
