//! The proxy handler of `runflow-kontext/server`: a Fetch API `(Request) => Promise<Response>`
//! that runs the proxy rules (the dev server's, from `runflow-proxy-rules`) in their order and
//! forwards what they allow with gloo-net. Every answer, forwarded or refused, is a `Response`.

use std::rc::Rc;
use std::time::Duration;

use js_sys::{Date, Function, Promise, Reflect, Uint8Array};
use runflow_proxy_rules::{
    CAPTURE_MARGIN, ERROR_BODY_LIMIT, Refusal, created_run_id, headers, limit, redact, strip_mount,
};
use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{
    AbortSignal, Headers, Request, RequestInit, RequestRedirect, Response, ResponseInit,
};

use super::options::ProxySettings;
use super::{read_capped, report_hook_error, warn_once};

/// Answered to every call of a proxy created without a key: a build (`next build` imports route
/// modules) must not fail for want of a secret that only the running server has.
const NO_KEY: &str = "This proxy has no Runflow API key: set createProxy's apiKey (e.g. RUNFLOW_API_KEY in the server's environment)";

/// The proxy behind `createProxy`; `handle` is the Fetch API handler.
#[wasm_bindgen(js_name = KontextProxy, skip_typescript)]
pub struct KontextProxy(Rc<Proxy>);

struct Proxy {
    settings: ProxySettings,
    /// `(request) => { method, target, host, address } | undefined`: what `toNodeHandler` saw on
    /// the socket, before the Fetch API normalised it (dot segments, method case).
    node_details: Function,
}

/// What one call looked like, for `onLog`: never a header value or a body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogEntry {
    method: String,
    path: String,
    status: u16,
    outcome: &'static str,
    reason: Option<String>,
    run_id: Option<String>,
    client: Option<String>,
    duration_ms: f64,
}

/// The request as the rules see it.
struct Incoming {
    method: String,
    /// Path and query as sent (still percent-encoded).
    path: String,
    query: Option<String>,
    host: Option<String>,
    origin: Option<String>,
    address: Option<String>,
}

#[wasm_bindgen(js_class = KontextProxy)]
impl KontextProxy {
    /// Reads and checks the options; throws a `RunflowError` (`validation_error`) naming a bad one.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue, node_details: Function) -> Result<KontextProxy, JsValue> {
        let settings = ProxySettings::read(options).map_err(crate::exports::error_to_js)?;
        Ok(KontextProxy(Rc::new(Proxy {
            settings,
            node_details,
        })))
    }

    /// Answers one request: forwarded to Runflow with the key, or refused.
    pub fn handle(&self, request: Request) -> Promise {
        let proxy = self.0.clone();
        future_to_promise(async move { proxy.serve(request).await.map(JsValue::from) })
    }
}

impl Proxy {
    async fn serve(&self, request: Request) -> Result<Response, JsValue> {
        let started = Date::now();
        let incoming = self.incoming(&request);
        let rules = &self.settings.policy;
        let mut log = LogEntry {
            method: incoming.method.clone(),
            path: incoming.path.clone(),
            status: 0,
            outcome: "refused",
            reason: None,
            run_id: None,
            client: None,
            duration_ms: 0.0,
        };
        let (client_text, client) = self.client(&request, &incoming);
        log.client = client_text;
        let now = Duration::from_secs_f64(started.max(0.0) / 1000.0);

        let Some(path) = strip_mount(&incoming.path, &self.settings.mount).map(str::to_owned)
        else {
            let refusal = Refusal::route(
                &incoming.method,
                &incoming.path,
                runflow_proxy_rules::Refused::Path,
                &rules.names,
            );
            return self.refuse(refusal, log, started);
        };
        log.path = path.clone();
        let Some(api_key) = &self.settings.api_key else {
            warn_once(NO_KEY);
            let refusal = Refusal::envelope(500, "PROXY_NOT_CONFIGURED", NO_KEY);
            return self.refuse(refusal, log, started);
        };
        if let Err(refusal) = rules.admit_rate(client, now) {
            return self.refuse(refusal, log, started);
        }
        if let Err(refusal) =
            rules.admit_origin(incoming.host.as_deref(), incoming.origin.as_deref())
        {
            return self.refuse(refusal, log, started);
        }
        if let Some(hook) = &self.settings.authenticate {
            match authenticate(hook, &request).await {
                Verdict::Allow => {}
                Verdict::Deny => return self.refuse(Refusal::unauthenticated(), log, started),
                Verdict::Answer(response) => {
                    log.status = response.status();
                    log.reason = Some("authenticate".into());
                    self.log(log, started);
                    return Ok(response);
                }
                Verdict::Threw => {
                    let refusal = Refusal::envelope(
                        500,
                        "AUTHENTICATE_FAILED",
                        "This proxy's sign-in check failed; see the server's log",
                    );
                    return self.refuse(refusal, log, started);
                }
            }
        }
        let allowed = match rules.admit_route(
            &incoming.method,
            &path,
            incoming.query.as_deref(),
            client,
            now,
        ) {
            Ok(allowed) => allowed,
            Err(refusal) => return self.refuse(refusal, log, started),
        };
        log.run_id = allowed.run_id.clone();
        let declared = request
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|len| len.trim().parse::<u64>().ok());
        if let Err(refusal) = rules.admit_length(declared) {
            return self.refuse(refusal, log, started);
        }
        let body = if incoming.method == "POST" {
            let read =
                JsFuture::from(read_capped(request.body(), rules.max_body_bytes as f64)).await;
            match read {
                Ok(bytes) if !bytes.is_undefined() => Some(Uint8Array::new(&bytes)),
                // Over the cap, or the client went away while sending it.
                _ => {
                    let refusal = Refusal::too_large(rules.max_body_bytes, &rules.names);
                    return self.refuse(refusal, log, started);
                }
            }
        } else {
            None
        };
        if allowed.creates_run {
            let bytes = body.as_ref().map(Uint8Array::to_vec).unwrap_or_default();
            if let Err(refusal) = rules.admit_create_body(&bytes) {
                return self.refuse(refusal, log, started);
            }
        }

        let upstream = match self
            .send(&incoming, &allowed.target, &request, body, api_key)
            .await
        {
            Ok(upstream) => upstream,
            Err(error) => {
                // gloo-net keeps the error's name and message, not its cause, so "nothing
                // answered" cannot be told from "the connection broke": both get the answer
                // that a create may have gone through, which sends the client to look it up.
                let (refusal, why) = match error.name.as_str() {
                    "TimeoutError" | "AbortError" => (Refusal::timed_out(), "timeout".into()),
                    _ => (Refusal::connection_failed(), error.message),
                };
                log.outcome = "failed";
                log.reason = Some(why);
                return self.answer(&refusal, log, started);
            }
        };
        let status = upstream.status();
        let headers = Headers::new()?;
        for (name, value) in upstream.headers().entries() {
            // The runtime frames the body itself (and fetch may have decoded it), so the
            // upstream's Content-Length would be wrong here.
            if headers::returns_response_header(&name)
                && !name.eq_ignore_ascii_case("content-length")
            {
                headers.append(&name, &value)?;
            }
        }
        guard(&headers)?;
        log.status = status;
        log.outcome = "forwarded";
        if !(200..300).contains(&status) {
            // Read whole, so the key can be taken out wherever an error body echoes it.
            let read = JsFuture::from(read_capped(upstream.body(), ERROR_BODY_LIMIT as f64)).await;
            let Some(bytes) = read.ok().filter(|b| !b.is_undefined()) else {
                log.outcome = "failed";
                log.reason = Some("error body over the limit or cut".into());
                return self.answer(&Refusal::error_too_large(status), log, started);
            };
            let body = redact(&Uint8Array::new(&bytes).to_vec(), api_key.as_bytes());
            self.log(log, started);
            return respond(status, &headers, Some(&body));
        }
        if allowed.creates_run {
            // Small, and its id is worth a log line: the run the visitor now pays for.
            let limit = (rules.max_body_bytes + CAPTURE_MARGIN) as f64;
            let read = JsFuture::from(read_capped(upstream.body(), limit)).await;
            let Some(bytes) = read.ok().filter(|b| !b.is_undefined()) else {
                log.outcome = "failed";
                log.reason = Some("create answer over the limit or cut".into());
                return self.answer(&Refusal::connection_failed(), log, started);
            };
            let bytes = Uint8Array::new(&bytes).to_vec();
            log.run_id = created_run_id(&bytes);
            self.log(log, started);
            return respond(status, &headers, Some(&bytes));
        }
        self.log(log, started);
        let init = ResponseInit::new();
        init.set_status(status);
        init.set_headers(&headers);
        Response::new_with_opt_readable_stream_and_init(upstream.body().as_ref(), &init)
    }

    /// Method, raw path and query, host and origin: from `toNodeHandler` when it served the
    /// request (the socket's view), else from the Request.
    fn incoming(&self, request: &Request) -> Incoming {
        let header = |name: &str| request.headers().get(name).ok().flatten();
        let url = web_sys::Url::new(&request.url()).ok();
        let details = self
            .node_details
            .call1(&JsValue::NULL, request)
            .ok()
            .filter(JsValue::is_object);
        let detail = |key: &str| {
            details
                .as_ref()
                .and_then(|d| Reflect::get(d, &JsValue::from_str(key)).ok())
                .and_then(|v| v.as_string())
        };
        let target = detail("target").unwrap_or_else(|| {
            url.as_ref()
                .map(|u| format!("{}{}", u.pathname(), u.search()))
                .unwrap_or_default()
        });
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target, None),
        };
        Incoming {
            method: detail("method").unwrap_or_else(|| request.method()),
            path,
            query: query.filter(|q| !q.is_empty()),
            host: detail("host")
                .or_else(|| header("host"))
                .or_else(|| url.as_ref().map(web_sys::Url::host)),
            origin: header("origin"),
            address: detail("address"),
        }
    }

    /// The client's address as given (for the log) and as the budgets key it.
    fn client(
        &self,
        request: &Request,
        incoming: &Incoming,
    ) -> (Option<String>, Option<std::net::IpAddr>) {
        let given = match &self.settings.client_ip {
            Some(hook) => match hook.call1(&JsValue::NULL, request) {
                Ok(value) => value.as_string(),
                Err(error) => {
                    report_hook_error("clientIp", &error);
                    None
                }
            },
            None => incoming.address.clone(),
        };
        let parsed = given.as_deref().and_then(limit::client_ip);
        if parsed.is_none() {
            warn_once(
                "the client's address is unknown, so every visitor shares one rate limit and one create budget. Pass clientIp (e.g. (r) => r.headers.get(\"x-forwarded-for\") behind a proxy you trust).",
            );
        }
        (given, parsed)
    }

    async fn send(
        &self,
        incoming: &Incoming,
        target: &str,
        request: &Request,
        body: Option<Uint8Array>,
        api_key: &str,
    ) -> Result<gloo_net::http::Response, FetchError> {
        let settings = &self.settings;
        let outgoing = Headers::new().map_err(FetchError::from)?;
        for (name, value) in gloo_net::http::Headers::from_raw(request.headers()).entries() {
            if headers::forwards_request_header(&name) {
                outgoing.append(&name, &value).map_err(FetchError::from)?;
            }
        }
        outgoing
            .set("authorization", &format!("Bearer {api_key}"))
            .map_err(FetchError::from)?;
        if let Some(org) = &settings.organization_id {
            outgoing
                .set("x-organization-id", org)
                .map_err(FetchError::from)?;
        }
        let init = RequestInit::new();
        init.set_method(&incoming.method);
        init.set_headers(&outgoing);
        // A redirect would be followed with the key, somewhere the rules never saw.
        init.set_redirect(RequestRedirect::Manual);
        init.set_signal(Some(&AbortSignal::timeout_with_u32(settings.timeout_ms)));
        if let Some(body) = &body {
            init.set_body(body);
        }
        let url = format!("{}{target}", settings.upstream.base);
        let upstream = Request::new_with_str_and_init(&url, &init).map_err(FetchError::from)?;
        gloo_net::http::Request::from(upstream)
            .send()
            .await
            .map_err(|error| match error {
                gloo_net::Error::JsError(js) => FetchError {
                    name: js.name,
                    message: js.message,
                },
                other => FetchError {
                    name: String::new(),
                    message: other.to_string(),
                },
            })
    }

    fn refuse(
        &self,
        refusal: Refusal,
        mut log: LogEntry,
        started: f64,
    ) -> Result<Response, JsValue> {
        log.outcome = "refused";
        log.reason = Some(refusal.code.clone());
        self.answer(&refusal, log, started)
    }

    fn answer(
        &self,
        refusal: &Refusal,
        mut log: LogEntry,
        started: f64,
    ) -> Result<Response, JsValue> {
        log.status = refusal.status;
        self.log(log, started);
        let headers = Headers::new()?;
        headers.set("content-type", "application/json")?;
        if let Some(seconds) = refusal.retry_after {
            headers.set("retry-after", &seconds.to_string())?;
        }
        guard(&headers)?;
        respond(refusal.status, &headers, Some(refusal.body().as_bytes()))
    }

    fn log(&self, mut entry: LogEntry, started: f64) {
        let Some(hook) = &self.settings.on_log else {
            return;
        };
        entry.duration_ms = (Date::now() - started).max(0.0);
        // `null`, as the types promise, rather than serde-wasm-bindgen's default `undefined`.
        let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
        let Ok(value) = entry.serialize(&serializer) else {
            return;
        };
        if let Err(error) = hook.call1(&JsValue::NULL, &value) {
            report_hook_error("onLog", &error);
        }
    }
}

/// Why an upstream call failed, as far as the Fetch API says.
struct FetchError {
    name: String,
    message: String,
}

impl From<JsValue> for FetchError {
    fn from(error: JsValue) -> Self {
        let text = |key: &str| {
            Reflect::get(&error, &JsValue::from_str(key))
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default()
        };
        FetchError {
            name: text("name"),
            message: text("message"),
        }
    }
}

/// What the application's `authenticate` hook decided.
enum Verdict {
    Allow,
    Deny,
    Answer(Response),
    Threw,
}

async fn authenticate(hook: &Function, request: &Request) -> Verdict {
    let returned = match hook.call1(&JsValue::NULL, request) {
        Ok(value) => JsFuture::from(Promise::resolve(&value)).await,
        Err(error) => Err(error),
    };
    match returned {
        Ok(value) if value.is_instance_of::<Response>() => Verdict::Answer(value.unchecked_into()),
        Ok(value) if value.as_bool() == Some(true) => Verdict::Allow,
        // Anything but `true` refuses: a hook that forgot to return must not open the proxy.
        Ok(_) => Verdict::Deny,
        Err(error) => {
            report_hook_error("authenticate", &error);
            Verdict::Threw
        }
    }
}

/// The headers on every answer of the proxy.
fn guard(headers: &Headers) -> Result<(), JsValue> {
    for (name, value) in headers::GUARD_HEADERS {
        headers.set(name, value)?;
    }
    Ok(())
}

fn respond(status: u16, headers: &Headers, body: Option<&[u8]>) -> Result<Response, JsValue> {
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(headers);
    let body = body.map(Uint8Array::from);
    Response::new_with_opt_buffer_source_and_init(body.as_ref().map(|b| b.as_ref()), &init)
}
