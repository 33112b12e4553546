//! One error type for every failure, its stable codes, and the HTTP-status mapping.

use crate::json::{Json, JsonValue as Value};
use crate::literal::string_enum;
use crate::run::Run;
use crate::text::decimal;

string_enum! {
    /// What went wrong, as a stable machine-readable code.
    pub enum ErrorCode as TS_ERROR_CODE = "/** Every `RunflowError.code`. */\nexport type RunflowErrorCode =" {
        /// The input or an option is invalid (checked before any request), or the API refused it (400/422).
        ValidationError => "validation_error",
        /// An `apiKey` was given in a browser without `dangerouslyAllowBrowser`.
        BrowserKeyRefused => "browser_key_refused",
        /// The API key is missing or wrong (401).
        AuthenticationError => "authentication_error",
        /// The key, organisation or proxy does not allow this call (403).
        PermissionDenied => "permission_denied",
        /// The account has no credit left (402).
        InsufficientCredit => "insufficient_credit",
        /// The run (or path) does not exist (404).
        NotFound => "not_found",
        /// The request conflicts with an earlier one, e.g. an Idempotency-Key reused with another body (409).
        Conflict => "conflict",
        /// The body was too large for the API or the proxy (413).
        PayloadTooLarge => "payload_too_large",
        /// Too many requests (429), after the allowed retries.
        RateLimited => "rate_limited",
        /// Runflow or the proxy failed (5xx), after the allowed retries.
        ServerError => "server_error",
        /// The network failed: nothing answered, the connection dropped, or CORS refused the call.
        ConnectionError => "connection_error",
        /// A request or the overall deadline ran out.
        Timeout => "timeout",
        /// The caller's AbortSignal fired.
        Aborted => "aborted",
        /// The run reached a failed or canceled state.
        RunFailed => "run_failed",
        /// The server answered something the API does not promise (HTML, broken JSON, no id), or
        /// a callback's body is not a callback.
        InvalidResponse => "invalid_response",
        /// A callback's `Runflow-Signature` matches none of the secrets (the server entry).
        InvalidSignature => "invalid_signature",
        /// An output's presigned URL has expired (or its storage refused it): read the run again
        /// for fresh URLs, or keep the images when they come.
        OutputExpired => "output_expired",
    }
}

impl ErrorCode {
    /// Whether trying the same call again later may succeed.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::ServerError
                | ErrorCode::ConnectionError
                | ErrorCode::Timeout
        )
    }
}

/// A failure of any client call: a code, a message a person can act on, and its context.
#[derive(Debug, Clone)]
pub struct Error {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened and what to do next.
    pub message: String,
    /// The HTTP status, when a response was received.
    pub status: Option<u16>,
    /// The run concerned, whenever one exists.
    pub run_id: Option<String>,
    /// The server's request id, when it sent one.
    pub request_id: Option<String>,
    /// Whether the same call may succeed later.
    pub retryable: bool,
    /// The input field at fault, for validation errors (e.g. `"num_images"`).
    pub field: Option<String>,
    /// The `client_ref` of a create whose outcome is unknown, to look the run up by.
    pub client_ref: Option<String>,
    /// The server's own error code, e.g. `"INSUFFICIENT_CREDIT"`.
    pub server_code: Option<String>,
    /// The delay the server asked for (Retry-After), in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// The terminal run, for `run_failed`.
    pub run: Option<Box<Run>>,
    /// The step of a local image's upload that failed: `upload_create`, `upload_put` or
    /// `upload_confirm`.
    pub step: Option<&'static str>,
}

impl Error {
    /// A new error with the code's default retryability and no context.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::with_message(code, message.into())
    }

    // One out-of-line constructor: inlined, its eleven fields cost code at every error site.
    #[inline(never)]
    fn with_message(code: ErrorCode, message: String) -> Self {
        Error {
            code,
            message,
            status: None,
            run_id: None,
            request_id: None,
            retryable: code.retryable(),
            field: None,
            client_ref: None,
            server_code: None,
            retry_after_ms: None,
            run: None,
            step: None,
        }
    }

    /// A validation error on `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::invalid_field(field, message.into())
    }

    #[inline(never)]
    fn invalid_field(field: &str, message: String) -> Self {
        Error {
            field: Some(field.to_owned()),
            ..Error::with_message(ErrorCode::ValidationError, message)
        }
    }

    /// A validation error on `field` whose message is its name in backticks, then `rest`
    /// (e.g. "`seed`" + " must be ..."): one place builds all of them, for a smaller wasm.
    pub(crate) fn about(field: &str, rest: &str) -> Self {
        Error::invalid(field, ["`", field, "`", rest].concat())
    }

    /// A response the API does not promise.
    pub fn invalid_response(status: u16, what: &str) -> Self {
        Error {
            status: Some(status),
            ..Error::new(
                ErrorCode::InvalidResponse,
                [
                    "Runflow answered HTTP ",
                    &decimal(status.into()),
                    " with ",
                    what,
                    ", not what the API promises: check that any proxy in between forwards to Runflow.",
                ]
                .concat(),
            )
        }
    }

    /// The same error, from `step` of a local image's upload.
    pub fn at_step(self, step: &'static str) -> Self {
        Error {
            step: Some(step),
            ..self
        }
    }

    /// The same error, about run `id`.
    pub fn with_run_id(mut self, id: &str) -> Self {
        if self.run_id.is_none() {
            self.run_id = Some(id.to_owned());
        }
        self
    }

    /// Maps an HTTP error response to an error. `body` is the raw text, which may be any of the
    /// envelopes in the API (flat, nested, proxy) or not JSON at all.
    pub fn from_response(
        status: u16,
        body: &str,
        request_id: Option<String>,
        retry_after_ms: Option<u64>,
    ) -> Self {
        let envelope = Envelope::parse(body);
        let server_code = envelope.code.clone();
        let code = classify(status, server_code.as_deref());
        let mut message = [
            "HTTP ",
            &decimal(status.into()),
            ". ",
            explain(code, &envelope),
        ]
        .concat();
        if let Some(said) = envelope
            .message
            .as_deref()
            .map(clean_server_text)
            .filter(|m| !m.is_empty())
        {
            message.push_str(" Runflow said: \"");
            message.push_str(&said);
            message.push('"');
            if let Some(code) = &server_code {
                message.push_str(" (");
                message.push_str(code);
                message.push(')');
            }
            message.push('.');
        }
        Error {
            status: Some(status),
            request_id,
            server_code,
            retry_after_ms,
            field: envelope.field,
            retryable: code.retryable() && status != 501,
            ..Error::new(code, message)
        }
    }
}

impl Error {
    /// The error's fields as a JSON object with the JS API's names (`runId`, `clientRef`, ...).
    pub fn to_json(&self) -> Value {
        let string = |s: &Option<String>| s.as_deref().map_or_else(Value::null, Value::string);
        let number = |n: Option<f64>| n.map_or_else(Value::null, Value::number);
        Value::object(vec![
            ("code", Value::string(self.code.as_str())),
            ("status", number(self.status.map(f64::from))),
            ("runId", string(&self.run_id)),
            ("requestId", string(&self.request_id)),
            ("retryable", Value::boolean(self.retryable)),
            ("field", string(&self.field)),
            ("clientRef", string(&self.client_ref)),
            ("serverCode", string(&self.server_code)),
            (
                "retryAfterMs",
                number(self.retry_after_ms.map(|ms| ms as f64)),
            ),
            (
                "run",
                self.run
                    .as_ref()
                    .map_or_else(Value::null, |run| run.to_json()),
            ),
            ("step", self.step.map_or_else(Value::null, Value::string)),
        ])
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// The one table from HTTP status (and the server's code, which wins where it is specific) to a code.
pub fn classify(status: u16, server_code: Option<&str>) -> ErrorCode {
    match server_code.map(str::to_ascii_uppercase).as_deref() {
        Some("INSUFFICIENT_CREDIT") => return ErrorCode::InsufficientCredit,
        Some("RATE_LIMITED") => return ErrorCode::RateLimited,
        Some("UNAUTHORIZED") => return ErrorCode::AuthenticationError,
        Some("RUN_NOT_FOUND") => return ErrorCode::NotFound,
        _ => {}
    }
    match status {
        400 | 422 => ErrorCode::ValidationError,
        401 => ErrorCode::AuthenticationError,
        402 => ErrorCode::InsufficientCredit,
        403 => ErrorCode::PermissionDenied,
        // 405: the path exists on that server but is not the API, as when no proxy is mounted.
        404 | 405 => ErrorCode::NotFound,
        408 => ErrorCode::Timeout,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimited,
        500..=599 => ErrorCode::ServerError,
        400..=499 => ErrorCode::ValidationError,
        _ => ErrorCode::InvalidResponse,
    }
}

/// What the status means and what to do, without the status itself (added once by the caller).
fn explain(code: ErrorCode, envelope: &Envelope) -> &'static str {
    let proxy_refusal = matches!(
        envelope.code.as_deref(),
        Some("path_not_allowed" | "model_not_allowed")
    );
    match code {
        ErrorCode::ValidationError => {
            "Runflow refused the request as invalid: fix the input and try again."
        }
        ErrorCode::AuthenticationError => {
            "Runflow refused the API key: check the key your proxy sends (RUNFLOW_API_KEY) or the apiKey option."
        }
        ErrorCode::PermissionDenied if proxy_refusal => {
            "The proxy does not forward this call: the path or model is not on its allowlist."
        }
        ErrorCode::PermissionDenied => {
            "This key or organisation may not do this: check the key's permissions and that its email is verified."
        }
        ErrorCode::InsufficientCredit => {
            "The Runflow account is out of credit: add credit in the Runflow dashboard, then try again."
        }
        // Runflow's own 404s always carry an error body.
        ErrorCode::NotFound if envelope.is_empty() => {
            "Nothing that speaks the Runflow API answered: check baseUrl and that the proxy is running."
        }
        ErrorCode::NotFound => {
            "Not found: check the run id and that it belongs to this key's organisation."
        }
        ErrorCode::Conflict => {
            "Conflict: an Idempotency-Key was reused with a different request, or the run changed meanwhile."
        }
        ErrorCode::PayloadTooLarge => {
            "The request is too large for Runflow or the proxy: send a smaller image, or upload it and pass its URL instead of a data: URI."
        }
        ErrorCode::RateLimited => {
            "Runflow is rate limiting these requests: wait a little and try again."
        }
        ErrorCode::ServerError => {
            "Runflow or the proxy failed; this is usually temporary, so try again shortly."
        }
        ErrorCode::Timeout => "The server timed out; try again.",
        _ => "Runflow answered with neither a success nor an error.",
    }
}

/// Whatever could be read out of an error body, whichever envelope it used.
#[derive(Debug, Default)]
struct Envelope {
    code: Option<String>,
    message: Option<String>,
    field: Option<String>,
}

impl Envelope {
    fn parse(body: &str) -> Envelope {
        let Some(body) = Value::parse(body).filter(Json::is_plain_object) else {
            return Envelope::default();
        };
        let text = |value: &Value, key: &'static str| Json::as_str(&value.member(key));
        let error = body.member("error");
        // Flat {code, message}; nested {"error": {code, message}}; the proxy's {"error": "...", code?}.
        let mut envelope = Envelope {
            // The code goes into the message too: kept to one short line like the server's text.
            code: text(&body, "code")
                .or_else(|| text(&error, "code"))
                .map(|code| clean_server_text(&code)),
            message: text(&body, "message")
                .or_else(|| text(&error, "message"))
                .or_else(|| Json::as_str(&error)),
            field: None,
        };
        if let Some(first) = body
            .member("errors")
            .items()
            .and_then(|errors| errors.into_iter().next())
        {
            envelope.field = text(&first, "field")
                .or_else(|| text(&first, "loc"))
                .map(|f| f.strip_prefix("input.").map(str::to_owned).unwrap_or(f));
            envelope.message = envelope.message.or_else(|| text(&first, "message"));
        }
        envelope
    }

    fn is_empty(&self) -> bool {
        self.code.is_none() && self.message.is_none()
    }
}

/// Server text goes into messages shown to people: keep it short and on one line.
fn clean_server_text(text: &str) -> String {
    const LIMIT: usize = 300;
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(LIMIT) {
        Some(_) => trimmed.chars().take(LIMIT).chain(['…']).collect(),
        None => trimmed.to_owned(),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table = [
            (400, None, ErrorCode::ValidationError, false),
            (401, None, ErrorCode::AuthenticationError, false),
            (402, None, ErrorCode::InsufficientCredit, false),
            (403, None, ErrorCode::PermissionDenied, false),
            (404, None, ErrorCode::NotFound, false),
            (405, None, ErrorCode::NotFound, false),
            (408, None, ErrorCode::Timeout, true),
            (409, None, ErrorCode::Conflict, false),
            (413, None, ErrorCode::PayloadTooLarge, false),
            (415, None, ErrorCode::ValidationError, false),
            (422, None, ErrorCode::ValidationError, false),
            (429, None, ErrorCode::RateLimited, true),
            (500, None, ErrorCode::ServerError, true),
            (501, None, ErrorCode::ServerError, false),
            (502, None, ErrorCode::ServerError, true),
            (503, Some("MODEL_UNAVAILABLE"), ErrorCode::ServerError, true),
            (504, None, ErrorCode::ServerError, true),
            (
                400,
                Some("INSUFFICIENT_CREDIT"),
                ErrorCode::InsufficientCredit,
                false,
            ),
            (403, Some("RATE_LIMITED"), ErrorCode::RateLimited, true),
            (200, None, ErrorCode::InvalidResponse, false),
        ];
        for (status, server_code, code, retryable) in table {
            let body = server_code
                .map(|c| format!(r#"{{"code":"{c}","message":"m"}}"#))
                .unwrap_or_default();
            let error = Error::from_response(status, &body, None, None);
            assert_eq!(error.code, code, "status {status}");
            assert_eq!(error.retryable, retryable, "status {status}");
            assert_eq!(error.status, Some(status));
        }
    }

    #[test]
    fn every_envelope_is_read() {
        let flat = Error::from_response(
            402,
            r#"{"code":"INSUFFICIENT_CREDIT","message":"Top up","errors":null}"#,
            None,
            None,
        );
        assert_eq!(flat.server_code.as_deref(), Some("INSUFFICIENT_CREDIT"));
        assert!(flat.message.contains("Top up") && flat.message.contains("add credit"));

        let nested = Error::from_response(
            401,
            r#"{"error":{"code":"UNAUTHORIZED","message":"Bad key"}}"#,
            None,
            None,
        );
        assert_eq!(nested.code, ErrorCode::AuthenticationError);
        assert!(nested.message.contains("Bad key"));

        let proxy = Error::from_response(
            403,
            r#"{"error":"Path not allowed","code":"path_not_allowed"}"#,
            None,
            None,
        );
        assert_eq!(proxy.server_code.as_deref(), Some("path_not_allowed"));
        assert!(proxy.message.contains("allowlist"));

        let validation = Error::from_response(
            422,
            r#"{"code":"VALIDATION_ERROR","message":"bad","errors":[{"field":"input.num_images","message":"too many"}]}"#,
            None,
            None,
        );
        assert_eq!(validation.field.as_deref(), Some("num_images"));
    }

    #[test]
    fn non_json_bodies_still_give_a_useful_error() {
        let html = Error::from_response(
            404,
            "<html><body>Not Found</body></html>",
            Some("req_1".into()),
            None,
        );
        assert_eq!(html.code, ErrorCode::NotFound);
        assert!(html.message.contains("proxy"));
        assert_eq!(html.request_id.as_deref(), Some("req_1"));
        assert_eq!(
            Error::invalid_response(200, "an empty body").message,
            "Runflow answered HTTP 200 with an empty body, not what the API promises: check that any proxy in between forwards to Runflow."
        );
        let said = Error::from_response(409, r#"{"code":"C1","message":"dup"}"#, None, None);
        assert_eq!(
            said.message,
            "HTTP 409. Conflict: an Idempotency-Key was reused with a different request, or the run changed meanwhile. Runflow said: \"dup\" (C1)."
        );
        let empty = Error::from_response(502, "", None, Some(2000));
        assert_eq!(empty.code, ErrorCode::ServerError);
        assert_eq!(empty.retry_after_ms, Some(2000));
    }

    #[test]
    fn server_text_is_one_short_line() {
        let long = "x".repeat(1000);
        let error = Error::from_response(
            400,
            &format!(r#"{{"message":"line\nbreak {long}"}}"#),
            None,
            None,
        );
        assert!(!error.message.contains('\n'));
        assert!(error.message.len() < 700);
    }

    #[test]
    fn the_js_shape() {
        let error = Error::from_response(
            429,
            r#"{"code":"RATE_LIMITED","message":"slow"}"#,
            Some("req_9".into()),
            Some(1000),
        )
        .with_run_id("r1");
        let props = error.to_json();
        assert_eq!(props["code"], "rate_limited");
        assert_eq!(props["status"], 429);
        assert_eq!(props["runId"], "r1");
        assert_eq!(props["requestId"], "req_9");
        assert_eq!(props["retryable"], true);
        assert_eq!(props["retryAfterMs"], 1000);
        assert_eq!(props["serverCode"], "RATE_LIMITED");
        assert_eq!(props["field"], serde_json::Value::Null);
    }

    #[test]
    fn ts_union_lists_every_code() {
        for code in ErrorCode::ALL {
            assert!(TS_ERROR_CODE.contains(&format!("\"{code}\"")));
        }
        assert_eq!(ErrorCode::ALL.len(), 17);
    }
}
