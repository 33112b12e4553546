//! The JS edge: names, option reading, conversion, and `Error` -> `RunflowError`. No logic lives
//! here beyond turning JS values into core types and back.

use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_sys::AbortSignal;

use crate::client::{Client, CreateRequest};
use crate::create::{LocalField, create_with_image, image_options, take_local_image};
use crate::error::{Error, ErrorCode};
use crate::http::{Call, Transport};
use crate::image_source::{ImageOptions, local_image};
use crate::input::{KONTEXT_MODEL, validate_create};
use crate::json::{Json, js_key};
use crate::paths::is_valid_model;
use crate::policy::{DEFAULT_POLL, DEFAULT_RETRY, PollSchedule, RetryPolicy};
use crate::run::Run;
use crate::text::signed;
use crate::upload::{DEFAULT_INLINE_LIMIT, MAX_UPLOAD_BYTES};
use crate::wait::{RunToEnd, WaitMode, Waiting};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = include_str!("../js/types.d.ts");
#[wasm_bindgen(typescript_custom_section)]
const TS_CODES: &str = crate::error::TS_ERROR_CODE;
#[wasm_bindgen(typescript_custom_section)]
const TS_STATUSES: &str = crate::run::TS_RUN_STATUS;

#[wasm_bindgen(module = "/js/edge.js")]
extern "C" {
    #[wasm_bindgen(extends = js_sys::Error)]
    type RunflowError;

    // Re-exports the class itself; `reexport` on the type would type it `unknown` in the .d.ts.
    #[wasm_bindgen(js_name = RunflowError, reexport, skip_typescript)]
    fn export_runflow_error();

    // For the persistence layer (js/durable.js), which keeps uploads across reloads.
    #[wasm_bindgen(js_name = persistUploads, reexport, skip_typescript)]
    fn export_persist_uploads();

    /// The `RunflowError` for a failure: redacted of `secrets`, with `reports.thrown` as its cause.
    fn failure(message: &str, props: &JsValue, secrets: &Array, reports: &JsValue) -> JsValue;

    /// The caller's callback wrapped: what it throws is reported and kept in `reports.thrown`.
    fn guard(callback: &Function, what: &str, reports: &JsValue) -> JsValue;
}

const DEFAULT_BASE_URL: &str = "https://api.runflow.io";
const DEFAULT_REQUEST_TIMEOUT_MS: f64 = 60_000.0;
const DEFAULT_WAIT_TIMEOUT_MS: f64 = 600_000.0;
/// `eventsSilenceMs`: a run followed by push with no event for a minute is polled instead (a
/// callback lost on its way; Kontext runs take seconds).
const DEFAULT_EVENTS_SILENCE_MS: f64 = 60_000.0;

/// The client for FLUX.1 Kontext [pro] on Runflow.
#[wasm_bindgen(skip_typescript)]
pub struct KontextClient {
    client: Rc<Client>,
}

#[wasm_bindgen]
impl KontextClient {
    /// Makes a client; throws `RunflowError` on a bad option or an API key in a browser.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<KontextClient, JsValue> {
        let options = Options::read(
            &options,
            "options",
            &[
                "baseUrl",
                "apiKey",
                "dangerouslyAllowBrowser",
                "model",
                "timeoutMs",
                "maxRetries",
                "pollIntervalMs",
                "headers",
                "fetch",
                "uploadThreshold",
                "prepareImage",
                "retryBaseMs",
                "retryMaxMs",
            ],
        )
        .map_err(error_to_js)?;
        Self::build(&options).map_err(error_to_js)
    }

    /// The model runs are created for.
    #[wasm_bindgen(getter)]
    pub fn model(&self) -> String {
        self.client.model.clone()
    }

    /// The API root requests go to.
    #[wasm_bindgen(getter, js_name = baseUrl)]
    pub fn base_url(&self) -> String {
        self.client.base_url.clone()
    }

    /// Creates a run; resolves once Runflow accepted it.
    #[wasm_bindgen(js_name = createRun)]
    pub fn create_run(&self, input: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, reports| async move {
            let options = Options::read(&options, "options", CREATE_OPTIONS)?;
            let (input, request, local) = prepare_create(&client, &input, &options)?;
            let call = options.call(None)?;
            let progress = options.guarded("onUploadProgress", &reports)?;
            create_with_image(&client, input, request, local, &progress, &call)
                .await
                .map(|run| run.to_json())
        })
    }

    /// Fetches a run by id.
    #[wasm_bindgen(js_name = getRun)]
    pub fn get_run(&self, id: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, _reports| async move {
            let options = Options::read(&options, "options", &["signal", "timeoutMs"])?;
            let id = run_id(&id)?;
            let call = options.call(None)?;
            client.get_run(&id, &call).await.map(|run| run.to_json())
        })
    }

    /// Polls a run until it is terminal.
    #[wasm_bindgen(js_name = waitForRun)]
    pub fn wait_for_run(&self, id: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, reports| async move {
            let options = Options::read(&options, "options", WAIT_OPTIONS)?;
            let id = run_id(&id)?;
            let call = options.call(Some(DEFAULT_WAIT_TIMEOUT_MS))?;
            let status_guard = options.guarded("onStatus", &reports)?;
            let mut on_status = status_callback(&status_guard);
            let waiting_guard = options.guarded("onWaiting", &reports)?;
            let on_waiting = waiting_callback(&waiting_guard);
            let waiting = waiting(&client, &options, &on_waiting)?;
            client
                .wait_for_run(&id, None, &waiting, &mut on_status, &call)
                .await
                .map(|run| run.to_json())
        })
    }

    /// Creates a run and waits for it; rejects with `run_failed` if it fails.
    pub fn run(&self, input: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, reports| async move {
            let options = Options::read(&options, "options", RUN_OPTIONS)?;
            let (input, request, local) = prepare_create(&client, &input, &options)?;
            let call = options.call(Some(DEFAULT_WAIT_TIMEOUT_MS))?;
            let status_guard = options.guarded("onStatus", &reports)?;
            let progress = options.guarded("onUploadProgress", &reports)?;
            let mut on_status = status_callback(&status_guard);
            let waiting_guard = options.guarded("onWaiting", &reports)?;
            let on_waiting = waiting_callback(&waiting_guard);
            let to_end = RunToEnd {
                waiting: waiting(&client, &options, &on_waiting)?,
                on_status: &mut on_status,
                progress: &progress,
            };
            client
                .create_and_wait(input, request, local, to_end, &call)
                .await
                .map(|run| run.to_json())
        })
    }

    /// Fetches an output image (an entry of `run.output.outputs`, or its URL) as a Blob;
    /// rejects with `output_expired` when its storage refuses the link as expired.
    pub fn download(&self, output: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, _reports| async move {
            let options = Options::read(&options, "options", &["signal", "timeoutMs"])?;
            let field = |key| Reflect::get(&output, &js_key(key)).unwrap_or(JsValue::UNDEFINED);
            let (url, expires_at) = match output.as_string() {
                Some(url) => (Some(url), None),
                None if output.is_object() => {
                    (field("url").as_string(), field("expiresAt").as_f64())
                }
                None => (None, None),
            };
            let Some(url) = url.filter(|url| !url.is_empty()) else {
                return Err(Error::invalid(
                    "output",
                    "Pass an output of `run.output.outputs` (or its URL) to download.",
                ));
            };
            let call = options.call(None)?;
            client.download(&url, expires_at, &call).await
        })
    }

    /// Uploads a File, Blob, bytes or base64 `data:` URI to Runflow and resolves its asset URL,
    /// for `image_url`: upload once, edit many times.
    #[wasm_bindgen(js_name = uploadImage)]
    pub fn upload_image(&self, image: JsValue, options: JsValue) -> Promise {
        respond(&self.client, |client, reports| async move {
            let options = Options::read(
                &options,
                "options",
                &["signal", "timeoutMs", "onUploadProgress"],
            )?;
            // Any base64 data: URI is read as bytes here, so its type is checked like a file's.
            let Some(local) = local_image(&image, 0.0) else {
                return Err(Error::invalid(
                    "image",
                    "`image` must be a File, Blob, ArrayBuffer, Uint8Array or base64 data: URI.",
                ));
            };
            let call = options.call(None)?;
            let progress = options.guarded("onUploadProgress", &reports)?;
            // Always an asset URL, never an inline data: URI: a proxy with a small body cap
            // (Runflow's own takes 32 KiB) would refuse every create that sent one.
            let settings = ImageOptions {
                inline_limit: 0.0,
                ..image_options(&client, &progress)
            };
            client.image_url("image", local, &settings, &call).await
        })
    }
}

/// `run`'s options: `createRun`'s (the first seven, `CREATE_OPTIONS`), then `waitForRun`'s.
const RUN_OPTIONS: &[&str] = &[
    "callbackUrl",
    "metadata",
    "clientRef",
    "idempotencyKey",
    "signal",
    "timeoutMs",
    "onUploadProgress",
    "onStatus",
    "pollIntervalMs",
    "wait",
    "eventsSilenceMs",
    "onWaiting",
];
const CREATE_OPTIONS: &[&str] = match RUN_OPTIONS.split_at_checked(7) {
    Some((create, _)) => create,
    None => RUN_OPTIONS,
};
/// `waitForRun`'s options: `signal` and `timeoutMs`, then what follows `onUploadProgress`.
const WAIT_OPTIONS: &[&str] = &[
    "signal",
    "timeoutMs",
    "onStatus",
    "pollIntervalMs",
    "wait",
    "eventsSilenceMs",
    "onWaiting",
];

impl KontextClient {
    fn build(options: &Options) -> Result<KontextClient, Error> {
        let base_url = options
            .string("baseUrl")?
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        // A path must stay on this origin: "//host" and "/\\host" are protocol-relative URLs.
        let same_origin_path =
            base_url.starts_with('/') && !matches!(base_url.as_bytes().get(1), Some(b'/' | b'\\'));
        if !(base_url.starts_with("https://")
            || base_url.starts_with("http://")
            || same_origin_path)
        {
            return Err(Error::invalid(
                "baseUrl",
                "`baseUrl` must be an http(s) URL or a path on this origin such as \"/api/runflow\".",
            ));
        }
        let model = options
            .string("model")?
            .unwrap_or_else(|| KONTEXT_MODEL.to_owned());
        if !is_valid_model(&model) {
            return Err(Error::invalid(
                "model",
                "`model` must be a Runflow model id such as \"black-forest-labs/flux-pro/kontext\".",
            ));
        }
        let api_key = options.string("apiKey")?.filter(|key| !key.is_empty());
        let mut headers = options.headers("headers")?;
        // An Authorization header is a key by another name.
        let credential = headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, value)| value.clone());
        if (api_key.is_some() || credential.is_some())
            && in_browser()
            && options.boolean("dangerouslyAllowBrowser")? != Some(true)
        {
            return Err(Error::new(
                ErrorCode::BrowserKeyRefused,
                "An apiKey in a browser can be read by anyone who opens the page. Keep the key on a server and point baseUrl at a proxy (e.g. \"/api/runflow\"); for a local experiment only, pass dangerouslyAllowBrowser: true.",
            ));
        }
        let mut secrets = Vec::new();
        if let Some(value) = credential {
            let token = value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .and_then(|_| value.get(7..))
                .map(str::to_owned);
            secrets.extend(token);
            secrets.push(value);
        }
        if let Some(key) = &api_key {
            headers.push((
                "authorization".to_owned(),
                ["Bearer ", key.as_str()].concat(),
            ));
            secrets.push(key.clone());
        }
        // Too short to be a credential, and replacing it would garble every message.
        let secrets: Array = secrets
            .iter()
            .filter(|secret| secret.trim().len() >= 8)
            .map(|secret| JsValue::from_str(secret))
            .collect();
        let base_ms = options
            .number("retryBaseMs", 1.0, 600_000.0, false)?
            .map_or(DEFAULT_RETRY.base_ms, |ms| ms as u64);
        let retry = RetryPolicy {
            max_retries: options
                .number("maxRetries", 0.0, 10.0, true)?
                .map_or(DEFAULT_RETRY.max_retries, |n| n as u32),
            base_ms,
            cap_ms: options
                .number("retryMaxMs", 1.0, 600_000.0, false)?
                .map_or(DEFAULT_RETRY.cap_ms.max(base_ms), |ms| ms as u64)
                .max(base_ms),
            ..DEFAULT_RETRY
        };
        let poll = options
            .number("pollIntervalMs", 1.0, 3_600_000.0, false)?
            .map_or(DEFAULT_POLL, |ms| PollSchedule::starting_at(ms as u64));
        let transport = Transport {
            fetch: options.function("fetch")?,
            headers,
            request_timeout_ms: options
                .number("timeoutMs", 1.0, f64::from(i32::MAX), false)?
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            secrets,
        };
        let upload_threshold = options
            .number("uploadThreshold", 0.0, MAX_UPLOAD_BYTES, false)?
            .unwrap_or(DEFAULT_INLINE_LIMIT);
        let prepare = match options.get("prepareImage") {
            None => None,
            Some(flag) if flag.as_bool() == Some(false) => None,
            Some(flag) if flag.as_bool() == Some(true) => Some(Object::new().into()),
            Some(settings) => {
                let settings = Options::read(
                    &settings,
                    "prepareImage",
                    &["maxMegapixels", "type", "quality"],
                )?;
                // A fresh object of the checked values: nulls left out (so the defaults apply),
                // and later changes to the caller's object do not reach it.
                let checked = Object::new();
                let number = |name, min, max| -> Result<(), Error> {
                    if let Some(n) = settings.number(name, min, max, false)? {
                        let _ = Reflect::set(&checked, &name.into(), &n.into());
                    }
                    Ok(())
                };
                number("maxMegapixels", 1e-6, 1000.0)?;
                number("quality", 0.0, 1.0)?;
                if let Some(kind) = settings.string("type")? {
                    if !["image/jpeg", "image/webp", "image/png"].contains(&kind.as_str()) {
                        return Err(Error::invalid(
                            "type",
                            "`prepareImage.type` must be \"image/jpeg\", \"image/webp\" or \"image/png\".",
                        ));
                    }
                    let _ = Reflect::set(&checked, &"type".into(), &kind.into());
                }
                Some(checked.into())
            }
        };
        let client = Client {
            base_url: base_url.trim_end_matches('/').to_owned(),
            upload_threshold,
            prepare,
            model,
            transport,
            retry,
            poll,
            cooled_until: std::cell::Cell::new(0.0),
        };
        Ok(KontextClient {
            client: Rc::new(client),
        })
    }
}

/// The create's input split from its local image (see `create::take_local_image`), and its
/// options.
fn prepare_create(
    client: &Client,
    input: &JsValue,
    options: &Options,
) -> Result<(JsValue, CreateRequest, Option<LocalField>), Error> {
    let (wire, local) = take_local_image(client, input)?;
    let request = CreateRequest {
        callback_url: options.string("callbackUrl")?,
        metadata: options.object_value("metadata")?,
        client_ref: options.string("clientRef")?,
        idempotency_key: options
            .string("idempotencyKey")?
            .filter(|key| !key.is_empty()),
    };
    validate_create(
        request.client_ref.as_deref(),
        request.callback_url.as_deref(),
    )?;
    Ok((wire, request, local))
}

/// How the call waits: `wait`, `eventsSilenceMs`, and its poll schedule (its own
/// `pollIntervalMs`, or the client's).
fn waiting<'a>(
    client: &Client,
    options: &Options,
    on_waiting: &'a dyn Fn(&'static str, &str),
) -> Result<Waiting<'a>, Error> {
    let mode = match options.string("wait")?.as_deref() {
        None | Some("auto") => WaitMode::Auto,
        Some("poll") => WaitMode::Poll,
        Some("events") => WaitMode::Events,
        Some(_) => {
            return Err(Error::invalid(
                "wait",
                "`wait` must be \"auto\", \"poll\" or \"events\".",
            ));
        }
    };
    Ok(Waiting {
        schedule: options
            .number("pollIntervalMs", 1.0, 3_600_000.0, false)?
            .map_or(client.poll, |ms| PollSchedule::starting_at(ms as u64)),
        mode,
        silence_ms: options
            .number("eventsSilenceMs", 1.0, f64::from(i32::MAX), false)?
            .unwrap_or(DEFAULT_EVENTS_SILENCE_MS),
        on_waiting,
    })
}

/// Calls the guarded `onWaiting` (see `Options::guarded`), if any, with `{ via, reason }`.
fn waiting_callback(guarded: &JsValue) -> impl Fn(&'static str, &str) + '_ {
    move |via: &'static str, reason: &str| {
        if let Some(callback) = guarded.dyn_ref::<Function>() {
            let info = Object::new();
            let _ = Reflect::set(&info, &js_key("via"), &js_key(via));
            let _ = Reflect::set(&info, &js_key("reason"), &reason.into());
            let _ = callback.call1(&JsValue::UNDEFINED, &info);
        }
    }
}

/// Calls the guarded `onStatus` (see `Options::guarded`), if any.
fn status_callback(guarded: &JsValue) -> impl FnMut(&Run) + '_ {
    move |run: &Run| {
        if let Some(callback) = guarded.dyn_ref::<Function>() {
            let _ = callback.call1(&JsValue::UNDEFINED, &run.to_json());
        }
    }
}

fn run_id(id: &JsValue) -> Result<String, Error> {
    id.as_string()
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| {
            Error::invalid(
                "id",
                "The run id must be a non-empty string, such as `run.id`.",
            )
        })
}

/// Runs a call as a promise: its JS value, or a `RunflowError`. The call gets the client and
/// a fresh `reports` object, where its guarded callbacks keep what they threw.
fn respond<Call, Done>(client: &Rc<Client>, call: Call) -> Promise
where
    Call: FnOnce(Rc<Client>, JsValue) -> Done,
    Done: std::future::Future<Output = Result<JsValue, Error>> + 'static,
{
    let reports: JsValue = Object::new().into();
    let future = call(client.clone(), reports.clone());
    settle(client.clone(), reports, Box::pin(future))
}

/// One promise adapter for every method (not one per future type): smaller wasm.
fn settle(
    client: Rc<Client>,
    reports: JsValue,
    call: std::pin::Pin<Box<dyn std::future::Future<Output = Result<JsValue, Error>>>>,
) -> Promise {
    future_to_promise(async move {
        call.await.map_err(|error| {
            failure(
                &error.message,
                &error.to_json(),
                &client.transport.secrets,
                &reports,
            )
        })
    })
}

/// The `RunflowError` for `error`, for calls with no key to redact.
pub(crate) fn error_to_js(error: Error) -> JsValue {
    failure(
        &error.message,
        &error.to_json(),
        &Array::new(),
        &JsValue::UNDEFINED,
    )
}

/// Whether this is a page or a worker, where any code on the page can read a key.
fn in_browser() -> bool {
    let global = js_sys::global();
    let has = |name: &str| Reflect::has(&global, &name.into()).unwrap_or(false);
    (has("window") && has("document")) || has("importScripts")
}

/// An options object read field by field, so every mistake names its field. `None` when the
/// caller gave none: reading then asks JS nothing.
struct Options(Option<JsValue>);

impl Options {
    fn read(value: &JsValue, what: &str, known: &[&str]) -> Result<Options, Error> {
        if value.is_undefined() || value.is_null() {
            return Ok(Options(None));
        }
        let Some(object) = value
            .dyn_ref::<Object>()
            .filter(|_| !value.is_function() && !value.is_array())
        else {
            return Err(Error::about(what, " must be an object."));
        };
        for key in Object::keys(object).iter().filter_map(|k| k.as_string()) {
            if !known.contains(&key.as_str())
                && !Reflect::get(value, &key.as_str().into())
                    .unwrap_or(JsValue::UNDEFINED)
                    .is_undefined()
            {
                return Err(Error::invalid(
                    &key,
                    [
                        "Unknown option `",
                        &key,
                        "`. Known options: ",
                        &known.join(", "),
                        ".",
                    ]
                    .concat(),
                ));
            }
        }
        Ok(Options(Some(value.clone())))
    }

    fn get(&self, name: &'static str) -> Option<JsValue> {
        Reflect::get(self.0.as_ref()?, &js_key(name))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, Error> {
        self.get(name)
            .map(|v| {
                v.as_string()
                    .ok_or_else(|| Error::about(name, " must be a string."))
            })
            .transpose()
    }

    fn boolean(&self, name: &'static str) -> Result<Option<bool>, Error> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Error::about(name, " must be true or false."))
            })
            .transpose()
    }

    fn number(
        &self,
        name: &'static str,
        min: f64,
        max: f64,
        integer: bool,
    ) -> Result<Option<f64>, Error> {
        self.get(name)
            .map(|v| {
                v.as_f64()
                    .filter(|n| (min..=max).contains(n) && (!integer || n.fract() == 0.0))
                    .ok_or_else(|| {
                        Error::invalid(
                            name,
                            [
                                "`",
                                name,
                                if integer {
                                    "` must be an integer from "
                                } else {
                                    "` must be a number from "
                                },
                                &signed(min as i64),
                                " to ",
                                &signed(max as i64),
                                ".",
                            ]
                            .concat(),
                        )
                    })
            })
            .transpose()
    }

    /// The callback option `name` wrapped by `guard` (undefined when not given): one that
    /// throws is reported, kept in `reports` and does not stop the call.
    fn guarded(&self, name: &'static str, reports: &JsValue) -> Result<JsValue, Error> {
        Ok(self.function(name)?.map_or(JsValue::UNDEFINED, |callback| {
            guard(&callback, name, reports)
        }))
    }

    fn function(&self, name: &'static str) -> Result<Option<Function>, Error> {
        self.get(name)
            .map(|v| {
                v.dyn_into::<Function>()
                    .map_err(|_| Error::about(name, " must be a function."))
            })
            .transpose()
    }

    fn object_value(&self, name: &'static str) -> Result<Option<JsValue>, Error> {
        match self.get(name) {
            Some(value) if !Json::is_plain_object(&value) => {
                Err(Error::about(name, " must be a plain object."))
            }
            other => Ok(other),
        }
    }

    fn headers(&self, name: &'static str) -> Result<Vec<(String, String)>, Error> {
        let Some(headers) = self.object_value(name)? else {
            return Ok(Vec::new());
        };
        // A loop rather than collecting into Result<Vec<_>>, whose adapter costs wasm bytes.
        let mut pairs = Vec::new();
        let Some(entries) = Json::entries(&headers) else {
            return Err(Error::about(name, " could not be read (a getter threw)."));
        };
        for (key, value) in entries {
            // As JSON.stringify and fetch's own Headers treat them: not there.
            if Json::is_absent(&value) {
                continue;
            }
            let Some(value) = Json::as_str(&value) else {
                return Err(Error::invalid(
                    name,
                    ["Header `", &key, "` must be a string."].concat(),
                ));
            };
            pairs.push((key.to_ascii_lowercase(), value));
        }
        Ok(pairs)
    }

    fn signal(&self) -> Result<Option<AbortSignal>, Error> {
        let Some(value) = self.get("signal") else {
            return Ok(None);
        };
        let looks_like_signal = Reflect::has(&value, &"aborted".into()).unwrap_or(false)
            && Reflect::get(&value, &"addEventListener".into()).is_ok_and(|f| f.is_function());
        if !looks_like_signal {
            return Err(Error::invalid(
                "signal",
                "`signal` must be an AbortSignal (e.g. `new AbortController().signal`).",
            ));
        }
        Ok(Some(value.unchecked_into()))
    }

    fn call(&self, default_timeout_ms: Option<f64>) -> Result<Call, Error> {
        let timeout = self
            .number("timeoutMs", 1.0, 1e12, false)?
            .or(default_timeout_ms);
        // An aborted signal is caught by the call's first step, which knows the run it is about.
        Ok(Call::new(self.signal()?, timeout))
    }
}
