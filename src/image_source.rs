//! A File, Blob or bytes given as the image, turned into an `image_url`: read (by the JS edge,
//! which also downscales with `prepareImage`), checked by its magic number, then inlined as a
//! `data:` URI or sent through Runflow's three-step asset upload (create the slot, PUT the bytes
//! to the presigned URL, confirm).

use js_sys::{Function, JsString, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

use crate::client::Client;
use crate::error::Error;
use crate::http::{Call, LocalBoxFuture, Via, aborted};
use crate::json::{Json, JsonValue as Value};
use crate::paths;
use crate::upload::{
    CHUNK, Route, data_uri_prefix, encode_chunk, encoded_len, file_name, plan, read_asset_url,
    read_upload_slot, upload_request,
};

#[wasm_bindgen(module = "/js/edge.js")]
extern "C" {
    #[wasm_bindgen(js_name = localImage)]
    fn local_image_of(value: &JsValue, inline_limit: f64) -> JsValue;

    /// `text` with ASCII `bytes` appended, decoded in JS straight from wasm memory.
    #[wasm_bindgen(js_name = appendAscii)]
    fn append_ascii(text: &JsString, bytes: &[u8]) -> JsString;

    #[wasm_bindgen(js_name = loadImage)]
    fn load_image(
        image: &JsValue,
        prepare: &JsValue,
        inline_limit: f64,
        signal: Option<&AbortSignal>,
    ) -> Promise;

    #[wasm_bindgen(js_name = uploadFetch)]
    fn upload_fetch(on_progress: &JsValue, idle_ms: f64) -> JsValue;

    #[wasm_bindgen(js_name = reportProgress)]
    fn report_progress(callback: &JsValue, loaded: f64, total: f64);
}

/// A local image: a Blob (or File), uploaded straight from the browser's storage, or bytes.
pub type Local = JsValue;

/// The local image `value` holds (File, Blob, ArrayBuffer or a view of one, or a base64 `data:`
/// URI of at least `inline_limit` bytes, to be uploaded), if it is one.
pub fn local_image(value: &JsValue, inline_limit: f64) -> Option<Local> {
    Some(local_image_of(value, inline_limit)).filter(|image| !image.is_null())
}

/// How local images are handled: the client's settings and the call's progress callback.
pub struct ImageOptions {
    /// Images under this many bytes go inline.
    pub inline_limit: f64,
    /// `prepareImage`'s options, when preparation is on.
    pub prepare: Option<JsValue>,
    /// `onUploadProgress`, or undefined.
    pub on_progress: JsValue,
}

/// The `data:` URI of `bytes`, base64 encoded chunk by chunk into one small reused buffer and
/// joined as JS strings, so the image is never held twice in wasm memory.
fn data_uri(bytes: &Uint8Array, prefix: &str) -> JsValue {
    let total = bytes.length();
    let mut input = vec![0u8; CHUNK];
    let mut output = vec![0u8; encoded_len(CHUNK)];
    let mut uri = JsString::from(prefix);
    let mut start = 0;
    while start < total {
        let end = total.min(start + CHUNK as u32);
        let chunk = input.get_mut(..(end - start) as usize).unwrap_or_default();
        bytes.subarray(start, end).copy_to(chunk);
        let written = encode_chunk(chunk, &mut output);
        // Base64 is ASCII: no UTF-8 validation (and its 0.7 KB of wasm) on the way to JS.
        uri = append_ascii(&uri, output.get(..written).unwrap_or_default());
        start = end;
    }
    uri.into()
}

impl Client {
    /// Turns a local image into an `image_url` (a JS string): inline when small, else uploaded.
    /// `field` names the input field in errors.
    ///
    /// # Errors
    /// `validation_error` for what is not an image or is too big, before any request; then the
    /// failures of the upload's steps.
    ///
    /// Boxed, so the three methods that await it share one copy of its state machine.
    pub fn image_url<'a>(
        &'a self,
        field: &'a str,
        image: Local,
        options: &'a ImageOptions,
        call: &'a Call,
    ) -> LocalBoxFuture<'a, Result<JsValue, Error>> {
        Box::pin(self.image_url_inner(field, image, options, call))
    }

    async fn image_url_inner(
        &self,
        field: &str,
        image: Local,
        options: &ImageOptions,
        call: &Call,
    ) -> Result<JsValue, Error> {
        let prepare = options.prepare.clone().unwrap_or(JsValue::NULL);
        let reading = load_image(&image, &prepare, options.inline_limit, call.signal.as_ref());
        let loaded = JsFuture::from(reading).await.map_err(|cause| {
            if cause.as_string().as_deref() == Some("aborted") {
                return aborted();
            }
            let detail = cause
                .dyn_ref::<js_sys::Error>()
                .map_or_else(String::new, |e| String::from(e.message()));
            Error::invalid(
                field,
                [
                    "The image could not be read (",
                    &detail,
                    "): the file may have been moved or deleted.",
                ]
                .concat(),
            )
        })?;
        let get = |key: &str| Reflect::get(&loaded, &key.into()).unwrap_or_default();
        let head = get("head").dyn_into::<Uint8Array>().map(|h| h.to_vec());
        let size = get("size").as_f64().unwrap_or(0.0);
        let (kind, route) = plan(field, &head.unwrap_or_default(), size, options.inline_limit)?;
        call.check()?;
        let url = match (route, get("bytes").dyn_into::<Uint8Array>()) {
            (Route::Inline, Ok(bytes)) => data_uri(&bytes, &data_uri_prefix(kind)),
            _ => {
                let hash = get("hash").as_string();
                match hash.as_deref().and_then(|hash| self.uploaded(hash)) {
                    Some(url) => url.into(),
                    None => {
                        let name = file_name(get("name").as_string().as_deref(), kind);
                        let request = upload_request(&name, kind, size);
                        let body = get("body");
                        let upload: LocalBoxFuture<'_, _> = Box::pin(self.upload(
                            &body,
                            size,
                            &request,
                            kind.mime(),
                            options,
                            call,
                        ));
                        let url = upload.await?;
                        if let Some(hash) = hash {
                            self.remember_upload(&hash, &url);
                        }
                        url.into()
                    }
                }
            }
        };
        report_progress(&options.on_progress, size, size);
        Ok(url)
    }

    async fn upload(
        &self,
        body: &JsValue,
        size: f64,
        request: &Value,
        mime: &str,
        options: &ImageOptions,
        call: &Call,
    ) -> Result<String, Error> {
        let request: Value = Json::stringify(request).unwrap_or_default().as_str().into();
        // By XMLHttpRequest where there is one, for progress; else by the global fetch.
        let with_progress = upload_fetch(&options.on_progress, self.transport.request_timeout_ms)
            .dyn_into::<Function>()
            .ok();
        let put_headers = [("content-type", mime)];
        // A presigned URL refused right away has most likely expired: one fresh slot, once.
        let mut fresh_slot_left = true;
        loop {
            let (asset_id, upload_url) = self
                .post_with_retries(paths::ASSET_UPLOADS, &request, call)
                .await
                .and_then(|slot| slot.json(read_upload_slot))
                .map_err(|e| e.at_step("upload_create"))?;
            let via = Via::Presigned {
                fetch: with_progress.as_ref(),
                bytes: size,
            };
            let put =
                self.send_with_retries("PUT", &upload_url, Some(body), &put_headers, via, call);
            match put.await {
                Ok(_) => {}
                Err(error) if error.status == Some(403) && fresh_slot_left => {
                    fresh_slot_left = false;
                    continue;
                }
                Err(error) => return Err(put_failed(error)),
            }
            let confirm = paths::confirm_asset_upload(&asset_id);
            return self
                .post_with_retries(&confirm, &"{}".into(), call)
                .await
                .and_then(|confirmed| confirmed.json(read_asset_url))
                .map_err(|e| e.at_step("upload_confirm"));
        }
    }
}

/// A PUT to the presigned URL that failed: the storage's answers (often XML) say nothing to the
/// client's API-oriented wording, so the message is rewritten for what the status means there.
fn put_failed(error: Error) -> Error {
    let message = match error.status {
        Some(403) => {
            "The presigned upload URL was refused twice (HTTP 403), even one created a moment before: it expired or is not valid. Check this machine's clock and any proxy in between, then try again."
        }
        Some(429 | 500..) => {
            "The storage behind the upload URL kept failing (HTTP 429 or 5xx) through the retries; this is usually temporary, so try again shortly."
        }
        Some(_) => {
            "The storage behind the upload URL refused the file as sent (its size or type did not match what was declared)."
        }
        None => return error.at_step("upload_put"),
    };
    Error {
        message: message.to_owned(),
        ..error.at_step("upload_put")
    }
}
