//! The callback receiver of `runflow-kontext/server`: the raw body's signature checked, the
//! payload parsed by the core (`callback.rs`), the same code for every server.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::Request;

use crate::callback::{parse_event, verify_signature};
use crate::error::{Error, ErrorCode};
use crate::exports::error_to_js;
use crate::json::Json;

use super::read_capped;

/// Callback bodies hold output URLs (or `data:` URIs with `sync_mode`): generous, but bounded.
const MAX_CALLBACK_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// Verifies and parses a callback delivery; see the `.d.ts` for the contract.
#[wasm_bindgen(js_name = receiveCallback, skip_typescript)]
pub fn receive_callback(request: JsValue, options: JsValue) -> Promise {
    future_to_promise(async move { receive(request, options).await.map_err(error_to_js) })
}

async fn receive(request: JsValue, options: JsValue) -> Result<JsValue, Error> {
    let Some(request) = request.dyn_ref::<Request>() else {
        return Err(Error::invalid(
            "request",
            "receiveCallback needs the Fetch API Request of the delivery.",
        ));
    };
    let secrets = secrets_option(&options)?;
    let bytes = JsFuture::from(read_capped(request.body(), MAX_CALLBACK_BYTES))
        .await
        .ok()
        .filter(|b| !b.is_undefined())
        .map(|b| Uint8Array::new(&b).to_vec())
        .ok_or_else(|| not_a_callback("its body could not be read, or is over 32 MiB"))?;
    let header = |name: &str| request.headers().get(name).ok().flatten();
    let signature = header("runflow-signature").unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    if !verify_signature(&bytes, &signature, &secrets) {
        let why = if signature.is_empty() {
            "The callback has no Runflow-Signature header, and this receiver only accepts signed deliveries."
        } else {
            "The callback's Runflow-Signature matches none of the secrets: it was not sent by Runflow with your signing secret, or its body changed on the way."
        };
        return Err(Error {
            status: Some(401),
            ..Error::new(ErrorCode::InvalidSignature, why)
        });
    }
    let body = String::from_utf8(bytes).map_err(|_| not_a_callback("its body is not UTF-8"))?;
    let request_id = header("runflow-request-id");
    Ok(parse_event(&body, request_id.as_deref())?.to_json())
}

/// Parses a callback's raw body; throws `invalid_response` when it is not one.
#[wasm_bindgen(js_name = parseCallback, skip_typescript)]
pub fn parse_callback(raw_body: JsValue, request_id: JsValue) -> Result<JsValue, JsValue> {
    let body = match body_bytes(&raw_body) {
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| error_to_js(not_a_callback("its body is not UTF-8")))?,
        None => {
            return Err(error_to_js(Error::invalid(
                "rawBody",
                "parseCallback needs the raw body as a string, Uint8Array or ArrayBuffer.",
            )));
        }
    };
    parse_event(&body, request_id.as_string().as_deref())
        .map(|event| event.to_json())
        .map_err(error_to_js)
}

/// Checks a callback's `Runflow-Signature`; see the `.d.ts` for the contract.
#[wasm_bindgen(js_name = verifyCallbackSignature, skip_typescript)]
pub fn verify_callback_signature(
    raw_body: JsValue,
    signature_header: JsValue,
    secret_or_secrets: JsValue,
) -> bool {
    let Some(body) = body_bytes(&raw_body) else {
        return false;
    };
    let Some(signature) = signature_header.as_string() else {
        return false;
    };
    let secrets = secret_list(&secret_or_secrets);
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    verify_signature(&body, &signature, &secrets)
}

fn body_bytes(raw: &JsValue) -> Option<Vec<u8>> {
    if let Some(text) = raw.as_string() {
        Some(text.into_bytes())
    } else if raw.is_instance_of::<Uint8Array>() || raw.is_instance_of::<js_sys::ArrayBuffer>() {
        Some(Uint8Array::new(raw).to_vec())
    } else {
        None
    }
}

fn secret_list(value: &JsValue) -> Vec<String> {
    match value.as_string() {
        Some(secret) => vec![secret],
        None => value
            .dyn_ref::<Array>()
            .map(|list| list.iter().filter_map(|s| s.as_string()).collect())
            .unwrap_or_default(),
    }
}

/// `options.secrets`: at least one non-empty secret, or a `validation_error` (an empty list
/// would refuse every delivery and look like Runflow's fault).
fn secrets_option(options: &JsValue) -> Result<Vec<String>, Error> {
    let secrets = secret_list(&options.member("secrets"));
    let secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(Error::invalid(
            "secrets",
            "receiveCallback needs { secrets: [...] }: your callback signing secret(s) (whsec_...), from POST /v1/callback-secrets.",
        ));
    }
    Ok(secrets)
}

fn not_a_callback(what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidResponse,
        ["This is not a Runflow callback: ", what].concat(),
    )
}
