//! Callback deliveries: Runflow-Signature verification and the payload, normalised.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorCode};
use crate::json::{Json, JsonValue as Value};
use crate::run::{Output, Status, normalise_output};
use crate::text::parse_unsigned;

/// A callback's payload, normalised like a run (`CallbackEvent` in the server entry's types).
#[derive(Debug, Clone)]
pub struct CallbackEvent {
    /// `run.completed`, `run.failed`, `run.cancelled`, `run.partial_succeeded`, or an unknown one as sent.
    pub event: String,
    /// The run it is about.
    pub run_id: String,
    /// The normalised status: the payload's, or the event's when the payload has none.
    pub status: Status,
    /// The status as the server spelled it (the event's implied one when absent).
    pub status_code: String,
    /// The result, in `Run.output`'s shape.
    pub output: Option<Output>,
    /// How long the run took, in ms.
    pub duration_ms: Option<f64>,
    /// When the run was created (ISO 8601, `+00:00` offset as Runflow sends it).
    pub created_at: Option<String>,
    /// When it ended.
    pub completed_at: Option<String>,
    /// The metadata given at creation (`null` when none).
    pub metadata: Value,
    /// The `Runflow-Request-Id` header of the delivery.
    pub request_id: Option<String>,
}

/// Parses a callback's raw body (the JSON text) into a `CallbackEvent`.
///
/// # Errors
/// `invalid_response` when the body is not a JSON object naming its `run_id` and its `event`
/// (or at least its `status`).
pub fn parse_event(body: &str, request_id: Option<&str>) -> Result<CallbackEvent, Error> {
    let not_a_callback = |what: &str| {
        Error::new(
            ErrorCode::InvalidResponse,
            ["This is not a Runflow callback: ", what].concat(),
        )
    };
    let payload = Value::parse(body).ok_or_else(|| not_a_callback("the body is not JSON"))?;
    if !payload.is_plain_object() {
        return Err(not_a_callback("the body is not a JSON object"));
    }
    let text = |key: &'static str| {
        payload
            .field(key)
            .and_then(|v| Json::as_str(&v))
            .filter(|s| !s.is_empty())
    };
    let run_id = text("run_id").ok_or_else(|| not_a_callback("it has no run_id"))?;
    let status_code = text("status");
    let event = match (text("event"), &status_code) {
        (Some(event), _) => event,
        (None, Some(status)) => event_of(Status::parse(status)).to_owned(),
        (None, None) => return Err(not_a_callback("it has neither event nor status")),
    };
    let status_code = status_code
        .or_else(|| status_of(&event).map(|s| s.as_str().to_owned()))
        .unwrap_or_default();
    Ok(CallbackEvent {
        status: Status::parse(&status_code),
        output: normalise_output(&payload.member("output")),
        duration_ms: Json::as_f64(&payload.member("duration_ms")),
        created_at: text("created_at"),
        completed_at: text("completed_at"),
        metadata: payload.field("metadata").unwrap_or_else(Value::null),
        request_id: request_id.filter(|id| !id.is_empty()).map(str::to_owned),
        event,
        run_id,
        status_code,
    })
}

/// The status a documented event implies.
fn status_of(event: &str) -> Option<Status> {
    Some(match event {
        "run.completed" => Status::Succeeded,
        "run.failed" => Status::Failed,
        "run.cancelled" => Status::Canceled,
        "run.partial_succeeded" => Status::PartialSucceeded,
        _ => return None,
    })
}

/// The event Runflow sends for a terminal status.
fn event_of(status: Status) -> &'static str {
    match status {
        Status::Failed => "run.failed",
        Status::Canceled => "run.cancelled",
        Status::PartialSucceeded => "run.partial_succeeded",
        _ => "run.completed",
    }
}

impl CallbackEvent {
    /// The event as a JSON object with the server entry's names (`runId`, `durationMs`, ...).
    pub fn to_json(&self) -> Value {
        let string = |s: &Option<String>| s.as_deref().map_or_else(Value::null, Value::string);
        Value::object(vec![
            ("event", Value::string(&self.event)),
            ("runId", Value::string(&self.run_id)),
            ("status", Value::string(self.status.as_str())),
            ("statusCode", Value::string(&self.status_code)),
            (
                "output",
                self.output
                    .as_ref()
                    .map_or_else(Value::null, Output::to_json),
            ),
            (
                "durationMs",
                self.duration_ms.map_or_else(Value::null, Value::number),
            ),
            ("createdAt", string(&self.created_at)),
            ("completedAt", string(&self.completed_at)),
            ("metadata", self.metadata.clone()),
            ("requestId", string(&self.request_id)),
        ])
    }
}

/// Whether `signature` (the `Runflow-Signature` header: lowercase hex of HMAC-SHA256 over the raw
/// body, keyed by the secret's UTF-8 bytes) matches `body` under any of `secrets` (two are valid
/// while a secret is rotated). The comparison is constant-time.
///
/// ```
/// use runflow_kontext::callback::verify_signature;
/// // RFC 4231, test case 2.
/// let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
/// assert!(verify_signature(b"what do ya want for nothing?", sig, &["whsec_new", "Jefe"]));
/// ```
pub fn verify_signature(body: &[u8], signature: &str, secrets: &[&str]) -> bool {
    let signature = signature.trim();
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    // Check every secret, so the time taken does not reveal which one matched.
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(false, |matched, secret| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                return matched;
            };
            mac.update(body);
            mac.verify_slice(&expected).is_ok() | matched
        })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    // A loop rather than collecting into Option<Vec<_>>, whose adapter costs wasm bytes.
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(2) {
        let pair = hex.get(i..i + 2)?;
        bytes.push(u8::try_from(parse_unsigned(pair, 16)?).ok()?);
    }
    Some(bytes)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    // HMAC-SHA256 test vector from RFC 4231, case 2: key "Jefe".
    const BODY: &[u8] = b"what do ya want for nothing?";
    const SIG: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn known_vector() {
        assert!(verify_signature(BODY, SIG, &["Jefe"]));
        // Found by fuzzing: a pair's leading 0 written `+` was read as the digit alone.
        let mut plus = SIG.to_owned();
        assert_eq!(plus.get(18..20), Some("04"));
        plus.replace_range(18..19, "+");
        assert!(!verify_signature(BODY, &plus, &["Jefe"]));
        assert!(verify_signature(BODY, &SIG.to_uppercase(), &["Jefe"]));
        assert!(verify_signature(BODY, &format!("sha256={SIG}"), &["Jefe"]));
    }

    #[test]
    fn rotation_accepts_either_secret() {
        assert!(verify_signature(BODY, SIG, &["whsec_new", "Jefe"]));
        assert!(!verify_signature(BODY, SIG, &["whsec_new", "whsec_old"]));
    }

    #[test]
    fn a_documented_payload_is_normalised() {
        let body = r#"{"event":"run.completed","run_id":"run_1","status":"succeeded",
            "output":{"images":[{"url":"https://cdn.example/a.png","width":8,"height":8}],"seed":7},
            "duration_ms":1520,"created_at":"2026-12-01T10:00:00.000000+00:00",
            "completed_at":"2026-12-01T10:00:01.520000+00:00","metadata":{"order":7}}"#;
        let event = parse_event(body, Some("req_9")).unwrap();
        assert_eq!(
            (event.event.as_str(), event.run_id.as_str()),
            ("run.completed", "run_1")
        );
        assert_eq!(event.status, Status::Succeeded);
        let output = event.output.as_ref().unwrap();
        assert_eq!(output.outputs[0].url, "https://cdn.example/a.png");
        assert_eq!(output.outputs[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(event.duration_ms, Some(1520.0));
        assert_eq!(event.request_id.as_deref(), Some("req_9"));
        assert_eq!(
            event.completed_at.as_deref(),
            Some("2026-12-01T10:00:01.520000+00:00")
        );
        let json = event.to_json();
        assert_eq!(json["runId"], "run_1");
        assert_eq!(json["metadata"]["order"], 7);
        assert_eq!(json["output"]["outputs"][0]["type"], "image");
    }

    #[test]
    fn every_event_and_its_spellings() {
        for (event, status, normal) in [
            ("run.failed", "failed", Status::Failed),
            ("run.cancelled", "cancelled", Status::Canceled),
            ("run.cancelled", "canceled", Status::Canceled),
            (
                "run.partial_succeeded",
                "partial_succeeded",
                Status::PartialSucceeded,
            ),
        ] {
            let body =
                format!(r#"{{"event":"{event}","run_id":"r","status":"{status}","output":null}}"#);
            let parsed = parse_event(&body, None).unwrap();
            assert_eq!(
                (parsed.status, parsed.status_code.as_str()),
                (normal, status)
            );
            assert!(parsed.output.is_none() && parsed.request_id.is_none());
        }
        // Either of event and status is enough for the other.
        let parsed = parse_event(r#"{"run_id":"r","status":"errored"}"#, Some("")).unwrap();
        assert_eq!(
            (parsed.event.as_str(), parsed.status),
            ("run.failed", Status::Failed)
        );
        let parsed = parse_event(r#"{"run_id":"r","event":"run.cancelled"}"#, None).unwrap();
        assert_eq!(
            (parsed.status, parsed.status_code.as_str()),
            (Status::Canceled, "canceled")
        );
        let parsed = parse_event(r#"{"run_id":"r","event":"run.later"}"#, None).unwrap();
        assert_eq!(parsed.status, Status::Unknown);
    }

    #[test]
    fn bodies_that_are_not_callbacks_are_refused() {
        for body in [
            "",
            "<html>",
            "[]",
            "null",
            r#"{"event":"run.completed"}"#,
            r#"{"run_id":"","event":"run.completed"}"#,
            r#"{"run_id":7,"event":"run.completed"}"#,
            r#"{"run_id":"r"}"#,
        ] {
            let error = parse_event(body, None).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidResponse, "{body}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!verify_signature(
            b"what do ya want for nothing?!",
            SIG,
            &["Jefe"]
        ));
        assert!(!verify_signature(BODY, &SIG[..63], &["Jefe"]));
        assert!(!verify_signature(BODY, "", &["Jefe"]));
        assert!(!verify_signature(BODY, SIG, &[]));
        assert!(!verify_signature(BODY, SIG, &[""]));
        assert!(!verify_signature(BODY, &"zz".repeat(32), &["Jefe"]));
    }
}
