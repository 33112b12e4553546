//! runflow-kontext: edit images with FLUX.1 Kontext [pro] through Runflow's runs API, from the
//! browser, as WebAssembly.
//!
//! The core (validation, wire types, normalisation, retry policy, signatures) is plain Rust and
//! tested natively; the JS edge, HTTP and waiting exist only on `wasm32`.
#![deny(missing_docs)]
// Errors carry their whole context to JS and only happen on the cold path: no need to box them.
#![allow(clippy::result_large_err)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod callback;
pub mod error;
pub mod expiry;
pub mod input;
pub mod json;
mod literal;
pub mod paths;
pub mod policy;
pub mod run;
mod text;
pub mod upload;

// The JS edge and everything that needs a JS host (fetch, timers) exist only on wasm32, so the
// core above builds and tests natively.
#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod create;
#[cfg(target_arch = "wasm32")]
mod exports;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod image_source;
#[cfg(all(target_arch = "wasm32", feature = "server"))]
mod server;
#[cfg(target_arch = "wasm32")]
mod wait;

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[cfg(target_arch = "wasm32")]
pub use exports::KontextClient;
#[cfg(all(target_arch = "wasm32", feature = "server"))]
pub use server::{KontextProxy, parse_callback, receive_callback, verify_callback_signature};
