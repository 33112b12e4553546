//! The run object: parsing every wire variant the API is known to send into one normal form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// Declares the statuses once, for the enum, its wire names and the TypeScript union.
macro_rules! statuses {
    ($($(#[doc = $doc:literal])* $variant:ident => $text:literal,)+) => {
        /// A run's state, normalised over the spellings the API uses.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum Status {
            $($(#[doc = $doc])* #[serde(rename = $text)] $variant,)+
        }

        impl Status {
            /// The normalised name, e.g. `"canceled"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Status::$variant => $text,)+ }
            }
        }

        /// The TypeScript literal union of every normalised status.
        pub const TS_RUN_STATUS: &str =
            concat!("/** `Run.status`: the normalised state (`status_code` keeps the wire spelling). */\nexport type RunStatus =", $(" | \"", $text, "\"",)+ ";\n");
    };
}

statuses! {
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
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Output {
    /// One entry per image.
    pub outputs: Vec<OutputImage>,
    /// The seed used.
    pub seed: Option<Value>,
    /// Model-specific extras.
    pub model_data: Value,
    /// `true`/`false`, or `null` when not checked.
    pub nsfw_detected: Option<bool>,
    /// Provider timing, when sent.
    pub timing: Value,
}

/// One output image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputImage {
    /// Always `"image"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A presigned URL (expires in about a day) or a `data:` URI with `sync_mode`.
    pub url: String,
    /// Pixel width, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixel height, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// MIME type, sent or inferred from the URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// Why a run failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    /// The server's failure code, e.g. `"PROVIDER_ERROR"`.
    pub code: Option<String>,
    /// Where it failed, e.g. `"inference"`.
    pub stage: Option<String>,
    /// The server's explanation.
    pub message: Option<String>,
}

/// The fields read from the wire; everything else is ignored.
#[derive(Deserialize)]
struct WireRun {
    id: Option<Value>,
    #[serde(alias = "status")]
    status_code: Option<String>,
    model: Option<Value>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    metadata: Value,
    client_ref: Option<String>,
    callback_url: Option<String>,
    created_at: Option<String>,
    started_at: Option<String>,
    completed_at: Option<String>,
    duration_ms: Option<f64>,
    cost: Option<Value>,
    failure_code: Option<String>,
    #[serde(alias = "failure_stage")]
    failure_stage_code: Option<String>,
    failure_message: Option<String>,
    #[serde(default)]
    error: Value,
}

/// Parses a run response body. `status` is the HTTP status, for the error message.
///
/// # Errors
/// `invalid_response` when the body is not JSON, not an object, or has no id or status.
pub fn parse_run(status: u16, body: &str) -> Result<Run, Error> {
    match serde_json::from_str::<WireRun>(body) {
        Ok(wire) => run_from_wire(status, wire),
        Err(e) if e.is_data() => Err(Error::invalid_response(
            status,
            "JSON that is not a run object",
        )),
        Err(_) => Err(Error::invalid_response(status, describe_body(body))),
    }
}

/// Parses a search response (`{items: [...]}`) into runs.
///
/// # Errors
/// `invalid_response` when the body is not that shape or an item is not a run.
pub fn parse_search(status: u16, body: &str) -> Result<Vec<Run>, Error> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(alias = "data")]
        items: Vec<WireRun>,
    }
    let page: Page = serde_json::from_str(body)
        .map_err(|_| Error::invalid_response(status, "a search result without `items` of runs"))?;
    page.items
        .into_iter()
        .map(|wire| run_from_wire(status, wire))
        .collect()
}

fn run_from_wire(status: u16, wire: WireRun) -> Result<Run, Error> {
    let id = match wire.id {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Error::invalid_response(status, "a run without an id")),
    };
    let Some(status_code) = wire.status_code else {
        return Err(
            Error::invalid_response(status, "a run without a status_code").with_run_id(&id),
        );
    };
    let run_status = Status::parse(&status_code);
    let (error_code, error_message) = match &wire.error {
        Value::Object(e) => (
            e.get("code").and_then(Value::as_str).map(str::to_owned),
            e.get("message").and_then(Value::as_str).map(str::to_owned),
        ),
        Value::String(message) => (None, Some(message.clone())),
        _ => (None, None),
    };
    let failure = Failure {
        code: wire.failure_code.or(error_code),
        stage: wire.failure_stage_code,
        message: wire.failure_message.or(error_message),
    };
    let has_failure =
        failure.code.is_some() || failure.message.is_some() || failure.stage.is_some();
    Ok(Run {
        id,
        status: run_status,
        status_code,
        model: match wire.model {
            Some(Value::String(model)) => Some(model),
            _ => None,
        },
        input: wire.input,
        output: normalise_output(wire.output),
        failure: (has_failure || run_status.is_failure()).then_some(failure),
        metadata: wire.metadata,
        client_ref: wire.client_ref,
        callback_url: wire.callback_url,
        created_at: wire.created_at,
        started_at: wire.started_at,
        completed_at: wire.completed_at,
        duration_ms: wire.duration_ms,
        cost: match wire.cost {
            Some(Value::String(cost)) => Some(cost),
            Some(Value::Number(cost)) => Some(cost.to_string()),
            _ => None,
        },
    })
}

/// Normalises `outputs[]`, `image_urls[]`, `images[]` and `image` into `outputs[]`.
pub fn normalise_output(output: Value) -> Option<Output> {
    let Value::Object(mut map) = output else {
        return None;
    };
    let mut images: Vec<OutputImage> = Vec::new();
    for key in ["outputs", "images", "image_urls"] {
        if let Some(Value::Array(items)) = map.remove(key) {
            images.extend(items.iter().filter_map(image_from_value));
        }
    }
    if let Some(image) = map.remove("image") {
        images.extend(image_from_value(&image));
    }
    let nsfw_detected = match map
        .remove("nsfw_detected")
        .or_else(|| map.remove("has_nsfw_concepts"))
    {
        Some(Value::Bool(flag)) => Some(flag),
        Some(Value::Array(flags)) => Some(flags.iter().any(|f| f.as_bool() == Some(true))),
        _ => None,
    };
    Some(Output {
        outputs: images,
        seed: map.remove("seed").filter(|seed| !seed.is_null()),
        model_data: map.remove("model_data").unwrap_or(Value::Null),
        nsfw_detected,
        timing: map.remove("timing").unwrap_or(Value::Null),
    })
}

fn image_from_value(value: &Value) -> Option<OutputImage> {
    let empty = Map::new();
    let (url, fields) = match value {
        Value::String(url) => (url.clone(), &empty),
        Value::Object(fields) => (fields.get("url")?.as_str()?.to_owned(), fields),
        _ => return None,
    };
    let dimension = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let content_type = fields
        .get("content_type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| content_type_of(&url));
    Some(OutputImage {
        kind: "image".to_owned(),
        width: dimension("width"),
        height: dimension("height"),
        content_type,
        url,
    })
}

/// Infers a MIME type from a `data:` URI or a file extension in a URL's path.
fn content_type_of(url: &str) -> Option<String> {
    if let Some(rest) = url.strip_prefix("data:") {
        return rest
            .split([';', ','])
            .next()
            .filter(|mime| mime.contains('/'))
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

fn describe_body(body: &str) -> &'static str {
    let start = body.trim_start();
    if start.is_empty() {
        "an empty body"
    } else if start.starts_with('<') {
        "an HTML page instead of JSON"
    } else {
        "a body that is not valid JSON"
    }
}

#[cfg(test)]
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
            assert_eq!(output.outputs[0].kind, "image");
            assert_eq!(output.outputs[0].content_type.as_deref(), Some("image/png"));
        }
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
        assert_eq!(output.seed, Some(json!(42)));
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
