//! The server build's entry (`runflow-kontext/server`, feature `server`): the proxy handler and
//! the callback receiver. Each file converts between JS and the rules or the core, and does I/O.

mod options;
mod proxy;
mod receive;

pub use proxy::KontextProxy;
pub use receive::{parse_callback, receive_callback, verify_callback_signature};
