//! `fetch` with a per-request AbortController, timeouts, the caller's AbortSignal, and sleeps
//! that the same signal cuts short. Everything here is raced with `select`: the loser is dropped,
//! which clears its timer, removes its listener, or aborts its request.

use std::cell::Cell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::future::{Either, select};
use gloo_events::EventListener;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, AbortSignal, Response};

use crate::error::{Error, ErrorCode};
use crate::policy::parse_retry_after;
use crate::run::describe_body;
use crate::text::decimal;

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

    fn remaining_ms(&self) -> Option<f64> {
        self.deadline.map(|(at, _)| (at - now_ms()).max(0.0))
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

    fn deadline_passed(&self) -> Error {
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
    pub async fn sleep(&self, ms: u64) -> Result<(), Error> {
        self.check()?;
        let wait = self
            .remaining_ms()
            .map_or(ms as f64, |left| left.min(ms as f64));
        let timer = TimeoutFuture::new(clamp_ms(wait));
        match select(pin!(timer), Aborted::new(self.signal.as_ref())).await {
            Either::Left(_) if wait < ms as f64 => Err(self.deadline_passed()),
            Either::Left(_) => Ok(()),
            Either::Right(_) => Err(aborted()),
        }
    }
}

/// Completes when the signal aborts; never, without a signal.
struct Aborted {
    fired: Rc<Cell<bool>>,
    waker: Rc<Cell<Option<Waker>>>,
    _listener: Option<EventListener>,
}

impl Aborted {
    fn new(signal: Option<&AbortSignal>) -> Aborted {
        let fired = Rc::new(Cell::new(signal.is_some_and(AbortSignal::aborted)));
        let waker: Rc<Cell<Option<Waker>>> = Rc::new(Cell::new(None));
        let listener = signal.map(|signal| {
            let (fired, waker) = (fired.clone(), waker.clone());
            EventListener::once(signal, "abort", move |_| {
                fired.set(true);
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            })
        });
        Aborted {
            fired,
            waker,
            _listener: listener,
        }
    }
}

impl Future for Aborted {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.get() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Aborts its fetch when dropped, so a request whose future is dropped (timeout, abort, or the
/// caller going away) does not go on in the background. A request read to the end is disarmed:
/// aborting a finished fetch costs a few percent of a request's CPU time for nothing.
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = &self.0 {
            controller.abort();
        }
    }
}

fn aborted() -> Error {
    Error::new(
        ErrorCode::Aborted,
        "Stopped because the AbortSignal fired. Only waiting stops: Runflow has no public cancel, so a run already created goes on and may be billed.",
    )
}

/// An HTTP date in Unix ms, by `Date.parse` (NaN when it cannot read it).
fn parse_date(value: &str) -> Option<u64> {
    let ms = js_sys::Date::parse(value);
    ms.is_finite().then(|| ms.max(0.0) as u64)
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// setTimeout takes an i32 of milliseconds; anything longer would wrap around.
fn clamp_ms(ms: f64) -> u32 {
    ms.clamp(0.0, i32::MAX as f64) as u32
}

/// A response, read whole.
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body text, left a JS string: a run echoes its input, which may hold a 1 MiB data URI,
    /// so the body is parsed by the host's JSON and never copied into wasm memory.
    pub body: JsValue,
    /// `x-request-id` (or `runflow-request-id`), when sent and visible.
    pub request_id: Option<String>,
    /// `Retry-After`, in ms from now, when sent and visible.
    pub retry_after_ms: Option<u64>,
}

impl HttpResponse {
    /// The response itself when it is a success, else the error it stands for.
    pub fn success(self) -> Result<HttpResponse, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::from_response(
                self.status,
                &self.text(),
                self.request_id,
                self.retry_after_ms,
            ))
        }
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
        method: &str,
        url: &str,
        body: Option<&JsValue>,
        extra_headers: &[(&str, &str)],
        call: &Call,
    ) -> Result<HttpResponse, Error> {
        self.send_via(method, url, body, extra_headers, Via::Api, call)
            .await
    }

    /// `send`, to the API or to a presigned URL.
    pub async fn send_via(
        &self,
        method: &str,
        url: &str,
        body: Option<&JsValue>,
        extra_headers: &[(&str, &str)],
        via: Via<'_>,
        call: &Call,
    ) -> Result<HttpResponse, Error> {
        call.check()?;
        let (client_headers, fetch, budget) = match via {
            Via::Api => (true, self.fetch.as_ref(), Some(self.request_timeout_ms)),
            Via::Presigned(None) => (false, self.fetch.as_ref(), Some(self.request_timeout_ms)),
            Via::Presigned(Some(fetch)) => (false, Some(fetch), None),
        };
        let controller = AbortController::new().map_err(|e| connection(url, &e))?;
        let headers = Object::new();
        let ours = self.headers.iter().filter(|_| client_headers);
        for (name, value) in ours
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(extra_headers.iter().copied())
        {
            set(&headers, name, &value.into());
        }
        let init = Object::new();
        set(&init, "method", &method.into());
        set(&init, "headers", &headers);
        set(&init, "signal", &controller.signal());
        if let Some(body) = body {
            set(&init, "body", body);
        }

        let fetch = match fetch {
            Some(fetch) => fetch.clone(),
            None => Reflect::get(&js_sys::global(), &"fetch".into())
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::ConnectionError,
                        "No fetch is available here: pass one as the `fetch` option.",
                    )
                })?,
        };
        let exchange = async {
            let promise = fetch
                .call2(&JsValue::UNDEFINED, &url.into(), &init)
                .map_err(|e| connection(url, &e))?;
            let response = JsFuture::from(Promise::resolve(&promise))
                .await
                .map_err(|e| connection(url, &e))?;
            if !response.is_object() {
                return Err(Error::invalid_response(
                    0,
                    "something that is not an HTTP response (check the `fetch` option)",
                ));
            }
            let response: Response = response.unchecked_into();
            let status = response.status();
            let headers = response.headers();
            let header = |name: &str| headers.get(name).ok().flatten();
            let request_id = header("x-request-id").or_else(|| header("runflow-request-id"));
            let retry_after_ms = header("retry-after")
                .and_then(|value| parse_retry_after(&value, now_ms().max(0.0) as u64, parse_date));
            let text = response.text().map_err(|e| connection(url, &e))?;
            let body = JsFuture::from(text)
                .await
                .map_err(|e| connection(url, &e))?;
            Ok(HttpResponse {
                status,
                body,
                request_id,
                retry_after_ms,
            })
        };
        let what = [method, " ", url].concat();
        guarded(call, budget, &what, controller, exchange).await
    }
}

/// Where a request goes.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The API: the client's headers, fetch and per-request timeout.
    Api,
    /// A presigned upload URL, which must get no Authorization nor the caller's headers meant
    /// for the API: by this fetch when given (one that reports progress and times out by
    /// itself), else the client's.
    Presigned(Option<&'a Function>),
}

/// Runs `exchange`, the request `controller` aborts, under the call's signal and deadline and
/// at most `budget_ms`: whichever ends first wins, and a request left behind is aborted.
async fn guarded(
    call: &Call,
    budget_ms: Option<f64>,
    what: &str,
    controller: AbortController,
    exchange: impl Future<Output = Result<HttpResponse, Error>>,
) -> Result<HttpResponse, Error> {
    let budget = budget_ms.unwrap_or(f64::INFINITY);
    let limit = call.remaining_ms().map_or(budget, |left| left.min(budget));
    let mut guard = AbortOnDrop(Some(controller.clone()));
    let _forward = call
        .signal
        .as_ref()
        .map(|caller| EventListener::once(caller, "abort", move |_| controller.abort()));
    let timer = TimeoutFuture::new(clamp_ms(limit));
    match select(
        pin!(exchange),
        select(pin!(timer), Aborted::new(call.signal.as_ref())),
    )
    .await
    {
        Either::Left((result, _)) => {
            guard.disarm();
            result
        }
        Either::Right((Either::Left(_), _)) if limit < budget => Err(call.deadline_passed()),
        Either::Right((Either::Left(_), _)) => Err(Error::new(
            ErrorCode::Timeout,
            [
                what,
                " took longer than ",
                &decimal(budget as u64),
                " ms (timeoutMs) and was abandoned.",
            ]
            .concat(),
        )),
        Either::Right((Either::Right(_), _)) => Err(aborted()),
    }
}

fn set(target: &Object, key: &str, value: &JsValue) {
    // Reflect.set on a fresh plain object cannot fail; a failure would only drop the field.
    let _ = Reflect::set(target, &key.into(), value);
}

fn connection(url: &str, cause: &JsValue) -> Error {
    let detail = cause
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| cause.as_string())
        .unwrap_or_else(|| "network error".to_owned());
    Error::new(
        ErrorCode::ConnectionError,
        [
            "Could not reach ",
            url,
            " (",
            &detail,
            "). Check baseUrl, the network, and that the proxy is running: browsers cannot call api.runflow.io directly, as it sends no CORS headers.",
        ]
        .concat(),
    )
}
