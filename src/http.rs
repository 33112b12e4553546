//! Requests and sleeps under the caller's AbortSignal, the call's deadline and the per-request
//! timeout. The racing itself (fetch against a timer and the signal, a sleep against the signal)
//! is two small promises in the JS edge: the same race as Rust futures took several KB of wasm
//! in closures, timers and listeners, and more time per request.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Response};

use crate::error::{Error, ErrorCode};
use crate::json::js_key;
use crate::policy::parse_retry_after;
use crate::run::describe_body;
use crate::text::decimal;

#[wasm_bindgen(module = "/js/edge.js")]
extern "C" {
    /// Fetches and reads the body as text, racing `ms` and `signal`: `[response, text]`, or a
    /// rejection with "aborted", "timeout" or what fetch threw.
    #[wasm_bindgen(js_name = exchange)]
    fn js_exchange(
        fetch: &Function,
        url: &str,
        init: &Object,
        signal: Option<&AbortSignal>,
        ms: f64,
        as_blob: bool,
    ) -> Promise;

    /// Resolves false after `ms`, or true earlier at what `wake` names (`Wake`); rejects with
    /// "aborted" when `signal` fires first.
    #[wasm_bindgen(js_name = sleep)]
    fn js_sleep(ms: f64, signal: Option<&AbortSignal>, wake: u8) -> Promise;

    /// `value` with each secret replaced by "[redacted]" in every string it holds.
    pub fn redact(value: &JsValue, secrets: &js_sys::Array) -> JsValue;

    /// `[events, callback]` from the response's `Runflow-Kontext-Relay` header, or `[]`.
    #[wasm_bindgen(js_name = relayOf)]
    fn relay_of(response: &Response) -> JsValue;

    /// Whether the host says it has no network (`navigator.onLine === false`).
    #[wasm_bindgen(js_name = isOffline)]
    pub fn is_offline() -> bool;

    /// The asset URL of an earlier upload of the bytes `hash` to `base`, if one is remembered.
    #[wasm_bindgen(js_name = storedUpload)]
    pub fn stored_upload(base: &str, hash: &str) -> Option<String>;

    /// Remembers an upload to `base` (and keeps it in the persistent store, if there is one).
    #[wasm_bindgen(js_name = storeUpload)]
    pub fn store_upload(base: &str, hash: &str, url: &str);
}

/// A boxed future: one shared copy of a state machine awaited from several places, rather than
/// one inlined into each caller (much smaller wasm).
pub type LocalBoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// The signal and deadline one public call runs under.
#[derive(Clone, Default)]
pub struct Call {
    /// The caller's AbortSignal.
    pub signal: Option<AbortSignal>,
    /// The absolute deadline (`Date.now()` ms) and the budget it came from, for messages.
    pub deadline: Option<(f64, f64)>,
}

impl Call {
    /// A call with an optional signal and an optional overall budget starting now.
    pub fn new(signal: Option<AbortSignal>, timeout_ms: Option<f64>) -> Call {
        Call {
            signal,
            deadline: timeout_ms.map(|budget| (now_ms() + budget, budget)),
        }
    }

    /// What is left of the deadline, in ms.
    pub fn remaining_ms(&self) -> Option<f64> {
        self.deadline.map(|(at, _)| (at - now_ms()).max(0.0))
    }

    /// Whether waiting `ms` would run past the deadline.
    pub fn outlasted_by(&self, ms: u64) -> bool {
        self.remaining_ms().is_some_and(|left| left < ms as f64)
    }

    /// `aborted` or the deadline's `timeout` if either has happened already.
    pub fn check(&self) -> Result<(), Error> {
        if self.signal.as_ref().is_some_and(AbortSignal::aborted) {
            return Err(aborted());
        }
        match self.remaining_ms() {
            Some(left) if left <= 0.0 => Err(self.deadline_passed()),
            _ => Ok(()),
        }
    }

    /// The `timeout` error of this call's deadline.
    pub fn deadline_passed(&self) -> Error {
        let budget = self.deadline.map_or(0.0, |(_, budget)| budget);
        Error {
            retryable: false,
            ..Error::new(
                ErrorCode::Timeout,
                [
                    "Gave up after the overall timeout of ",
                    &decimal(budget as u64),
                    " ms (timeoutMs). A run may still finish on Runflow: check it later with getRun(id), or allow more time.",
                ]
                .concat(),
            )
        }
    }

    /// Waits `ms`, or less if the signal fires (`aborted`) or the deadline comes first (`timeout`).
    pub fn sleep(&self, ms: u64) -> impl std::future::Future<Output = Result<(), Error>> + '_ {
        self.pause(ms as f64, Wake::Never)
    }

    /// `sleep` between polls: also over at once when the page becomes visible again or the
    /// network returns, the moments a run's news is most wanted (events, not timers).
    pub fn poll_pause(&self, ms: u64) -> impl std::future::Future<Output = Result<(), Error>> + '_ {
        self.pause(ms as f64, Wake::Seen)
    }

    /// Returns at once when the host is online; else waits for the `online` event (not a
    /// re-check loop), under the signal and the deadline: offline, a request can only fail.
    pub async fn until_online(&self) -> Result<(), Error> {
        if is_offline() {
            self.pause(f64::INFINITY, Wake::Online).await
        } else {
            Ok(())
        }
    }

    /// One wait for all: `ms` at most, cut short by the signal, the deadline or `wake`.
    async fn pause(&self, ms: f64, wake: Wake) -> Result<(), Error> {
        self.check()?;
        let wait = self.remaining_ms().map_or(ms, |left| left.min(ms));
        match JsFuture::from(js_sleep(clamp_ms(wait), self.signal.as_ref(), wake as u8)).await {
            Ok(online) if online.is_truthy() => Ok(()),
            Ok(_) if wait < ms => Err(self.deadline_passed()),
            Ok(_) => Ok(()),
            Err(_) => Err(aborted()),
        }
    }
}

/// What ends a wait early, besides the signal and the deadline (`sleep` in js/edge.js).
#[derive(Clone, Copy)]
enum Wake {
    /// Nothing.
    Never = 0,
    /// The network: at once when online, else at the `online` event.
    Online = 1,
    /// The page becoming visible, or the `online` event.
    Seen = 2,
}

/// The error of a call stopped by its AbortSignal.
pub fn aborted() -> Error {
    Error::new(
        ErrorCode::Aborted,
        "Stopped because the AbortSignal fired. Only waiting stops: Runflow has no public cancel, so a run already created goes on and may be billed.",
    )
}

/// An HTTP or ISO 8601 date in Unix ms, by `Date.parse` (NaN when it cannot read it).
pub fn parse_date(value: &str) -> Option<u64> {
    let ms = js_sys::Date::parse(value);
    ms.is_finite().then(|| ms.max(0.0) as u64)
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// setTimeout takes an i32 of milliseconds; anything longer would wrap around.
fn clamp_ms(ms: f64) -> f64 {
    ms.clamp(0.0, f64::from(i32::MAX))
}

/// A response, read whole.
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body text, left a JS string: a run echoes its input, which may hold a 1 MiB data URI,
    /// so the body is parsed by the host's JSON and never copied into wasm memory.
    pub body: JsValue,
    /// Its headers are read only for an error: each read crosses into JS.
    response: Response,
}

impl HttpResponse {
    /// The response itself when it is a success, else the error it stands for, with the
    /// request id (`x-request-id` or `runflow-request-id`) and `Retry-After` when visible.
    /// Any of `secrets` the server echoed is redacted before the body is read, so no part of
    /// one survives the cut of server text to 300 characters.
    pub fn success(self, secrets: &js_sys::Array) -> Result<HttpResponse, Error> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let headers = self.response.headers();
        let header = |name: &str| {
            let value = headers.get(name).ok().flatten()?;
            redact(&value.into(), secrets).as_string()
        };
        Err(Error::from_response(
            self.status,
            &redact(&self.body, secrets).as_string().unwrap_or_default(),
            header("x-request-id").or_else(|| header("runflow-request-id")),
            header("retry-after")
                .and_then(|value| parse_retry_after(&value, now_ms().max(0.0) as u64, parse_date)),
        ))
    }

    /// `[events, callback]` of the relay the response advertises, or `[]` (`relayOf`).
    pub fn relay(&self) -> js_sys::Array {
        relay_of(&self.response).unchecked_into()
    }

    /// The body as Rust text, for error messages.
    pub fn text(&self) -> String {
        self.body.as_string().unwrap_or_default()
    }

    /// Reads the body with `read`, or says what it was instead of JSON.
    pub fn json<T>(
        &self,
        read: impl FnOnce(u16, &JsValue) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match json_parse(&self.body) {
            Ok(value) => read(self.status, &value),
            Err(_) => Err(Error::invalid_response(
                self.status,
                describe_body(&self.text()),
            )),
        }
    }
}

#[wasm_bindgen]
extern "C" {
    /// `JSON.parse` on a JS string, without a round trip through wasm memory.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;
}

/// How requests are sent: which fetch, which headers, how long each may take.
pub struct Transport {
    /// A caller-supplied fetch; the global one is looked up at each call when absent.
    pub fetch: Option<Function>,
    /// Headers sent on every request (the caller's, plus Authorization when there is a key).
    pub headers: Vec<(String, String)>,
    /// The longest one request may take, in ms.
    pub request_timeout_ms: f64,
    /// What must never appear in an error: the API key, and the credential of an Authorization
    /// header given in `headers`.
    pub secrets: js_sys::Array,
}

impl Transport {
    /// Sends one request and reads the whole response, under the call's signal and deadline and
    /// the per-request timeout.
    ///
    /// # Errors
    /// `connection_error` when nothing usable came back, `timeout`, `aborted`, or
    /// `invalid_response` when the fetch resolved to something that is not a response.
    pub async fn send(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&JsValue>,
        extra_headers: &[(&'static str, &str)],
        call: &Call,
    ) -> Result<HttpResponse, Error> {
        self.send_via(method, url, body, extra_headers, Via::Api, call)
            .await
    }

    /// `send`, to the API or to a presigned URL.
    pub async fn send_via(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&JsValue>,
        extra_headers: &[(&'static str, &str)],
        via: Via<'_>,
        call: &Call,
    ) -> Result<HttpResponse, Error> {
        call.check()?;
        let global_fetch = || {
            Reflect::get(&js_sys::global(), &js_key("fetch"))
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok())
        };
        let presigned = !matches!(via, Via::Api);
        let (fetch, budget) = match via {
            Via::Api => (
                self.fetch.clone().or_else(global_fetch),
                Some(self.request_timeout_ms),
            ),
            Via::Presigned {
                fetch: Some(fetch), ..
            } => (Some(fetch.clone()), None),
            // The global fetch: a `fetch` option is for the API, and the credentials it may add
            // must not reach the storage. A big file gets time to go out over a slow uplink.
            Via::Presigned { fetch: None, bytes } => (
                global_fetch().or_else(|| self.fetch.clone()),
                Some(self.request_timeout_ms + bytes / MIN_UPLOAD_BYTES_PER_MS),
            ),
            // A big image over a slow link may take longer than one API request may: a download
            // given a deadline has all of it for one attempt (a cut-off attempt starts again).
            Via::Download => (
                global_fetch().or_else(|| self.fetch.clone()),
                Some(self.request_timeout_ms).filter(|_| call.remaining_ms().is_none()),
            ),
        };
        let headers = Object::new();
        for (name, value) in self.headers.iter().filter(|_| !presigned) {
            let _ = Reflect::set(&headers, &name.into(), &value.into());
        }
        for (name, value) in extra_headers {
            set(&headers, name, &(*value).into());
        }
        let init = Object::new();
        set(&init, "method", &js_key(method));
        set(&init, "headers", &headers);
        if let Some(body) = body {
            set(&init, "body", body);
        }
        let fetch = fetch.ok_or_else(|| {
            Error::new(
                ErrorCode::ConnectionError,
                "No fetch is available here: pass one as the `fetch` option.",
            )
        })?;
        // A presigned URL's query is its signature: it stays out of messages and logs.
        let shown = url.split('?').next().unwrap_or(url);

        let budget = budget.unwrap_or(f64::INFINITY);
        let limit = call.remaining_ms().map_or(budget, |left| left.min(budget));
        let as_blob = matches!(via, Via::Download);
        let exchange = js_exchange(
            &fetch,
            url,
            &init,
            call.signal.as_ref(),
            clamp_ms(limit),
            as_blob,
        );
        let answer = match JsFuture::from(exchange).await {
            Ok(answer) => answer,
            Err(why) => {
                return Err(match why.as_string().as_deref() {
                    Some("aborted") => aborted(),
                    Some("timeout") if limit < budget => call.deadline_passed(),
                    Some("timeout") => Error::new(
                        ErrorCode::Timeout,
                        [
                            method,
                            " ",
                            shown,
                            " took longer than ",
                            &decimal(budget as u64),
                            " ms (timeoutMs) and was abandoned.",
                        ]
                        .concat(),
                    ),
                    _ => connection(shown, &why, presigned),
                });
            }
        };
        let answer: js_sys::Array = answer.unchecked_into();
        let response = answer.get(0);
        if !response.is_object() || answer.get(1).is_null() || answer.get(1).is_undefined() {
            return Err(Error::invalid_response(
                0,
                "something that is not an HTTP response (check the `fetch` option)",
            ));
        }
        let response: Response = response.unchecked_into();
        Ok(HttpResponse {
            status: response.status(),
            body: answer.get(1),
            response,
        })
    }
}

/// The slowest uplink a presigned PUT by fetch is given time for, on top of `timeoutMs`:
/// 100 bytes per ms (0.8 Mbit/s), so a 50 MiB file gets about nine minutes.
const MIN_UPLOAD_BYTES_PER_MS: f64 = 100.0;

/// Where a request goes.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The API: the client's headers, its `fetch` and the per-request timeout.
    Api,
    /// A presigned upload URL of a `bytes`-long body, which must get no Authorization nor the
    /// caller's headers meant for the API. By `fetch` when given (one that reports progress and
    /// gives up by itself when progress stops), else by the global fetch with time for the size.
    Presigned {
        /// The fetch to send it with.
        fetch: Option<&'a Function>,
        /// The body's length.
        bytes: f64,
    },
    /// An output's presigned URL, read as a Blob by the global fetch, without the API's headers.
    Download,
}

fn set(target: &Object, key: &'static str, value: &JsValue) {
    // Reflect.set on a fresh plain object cannot fail; a failure would only drop the field.
    let _ = Reflect::set(target, &js_key(key), value);
}

fn connection(url: &str, cause: &JsValue, presigned: bool) -> Error {
    let detail = cause
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| cause.as_string())
        .unwrap_or_else(|| "network error".to_owned());
    let advice = if presigned {
        "). Check the network; the storage behind Runflow's URL must also accept this page's origin (CORS)."
    } else {
        "). Check baseUrl, the network, and that the proxy is running: browsers cannot call api.runflow.io directly, as it sends no CORS headers."
    };
    Error::new(
        ErrorCode::ConnectionError,
        ["Could not reach ", url, " (", &detail, advice].concat(),
    )
}
