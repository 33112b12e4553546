//! The server build's entry (`runflow-kontext/server`, feature `server`): the proxy handler and
//! the callback receiver. Each file converts between JS and the rules or the core, and does I/O.

use js_sys::Promise;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/server-edge.js")]
extern "C" {
    /// The whole body of `stream` as a Uint8Array, or undefined once it holds more than `max`.
    #[wasm_bindgen(js_name = readCapped)]
    fn read_capped(stream: Option<web_sys::ReadableStream>, max: f64) -> Promise;
    /// Prints `message` once per process.
    #[wasm_bindgen(js_name = warnOnce)]
    fn warn_once(message: &str);
    /// Reports what a hook threw, without stopping the call.
    #[wasm_bindgen(js_name = reportHookError)]
    fn report_hook_error(what: &str, error: &JsValue);
}

mod options;
mod proxy;
mod receive;

pub use proxy::KontextProxy;
pub use receive::{parse_callback, receive_callback, verify_callback_signature};
