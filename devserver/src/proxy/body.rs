//! Bodies in flight: the request body streamed upstream under the cap, and the response body
//! streamed back, logging the call once it is over.

use std::{
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::body::{BodyDataStream, Bytes};
use futures_util::Stream;
use runflow_proxy_rules::created_run_id;
use serde_json::json;
use sync_wrapper::SyncWrapper;

/// The browser's body on its way upstream, failing as soon as it passes `cap` bytes, so a body
/// without `Content-Length` is held to the cap too without being buffered.
pub(crate) struct Capped {
    // reqwest wants a `Sync` stream; the body is only ever polled through `&mut`, so wrapping
    // it costs nothing.
    inner: SyncWrapper<BodyDataStream>,
    left: u64,
    exceeded: Arc<AtomicBool>,
}

impl Capped {
    /// Wraps `inner`; `exceeded` is set when it goes over `cap`.
    pub(crate) fn new(inner: BodyDataStream, cap: u64, exceeded: Arc<AtomicBool>) -> Self {
        Capped {
            inner: SyncWrapper::new(inner),
            left: cap,
            exceeded,
        }
    }
}

impl Stream for Capped {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(this.inner.get_mut()).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                match this.left.checked_sub(len) {
                    Some(left) => {
                        this.left = left;
                        Poll::Ready(Some(Ok(chunk)))
                    }
                    None => {
                        this.exceeded.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(io::Error::other("request body over the cap"))))
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One call through the proxy, as its log line will tell it.
pub(crate) struct CallLog {
    pub method: String,
    /// Relative to the mount, without the query (it may hold a client_ref).
    pub path: String,
    pub client: Option<IpAddr>,
    pub started: Instant,
    pub run_id: Option<String>,
}

impl CallLog {
    /// Logs the call's line on stderr (through the log thread): `outcome` is `forwarded`, `refused` or `failed`; `detail` is the
    /// refusal code or the failure. Nothing here ever holds the key or a request header.
    pub(crate) fn finish(self, status: u16, outcome: &str, detail: Option<&str>) {
        let line = json!({
            "event": "proxy",
            "method": self.method,
            "path": self.path,
            "status": status,
            "duration_ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "run_id": self.run_id,
            "client": self.client.map(|ip| ip.to_string()),
            "outcome": outcome,
            "detail": detail,
        });
        // Queued for the log thread: this runs in request tasks, and from `Drop`.
        super::log::log_line(line.to_string());
    }
}

/// The upstream's response body on its way to the browser. The call is logged when it is over
/// (sent, failed or abandoned), so the duration covers the whole transfer; a create's body is
/// kept (up to a limit) to log the new run's id.
pub(crate) struct Logged<S> {
    inner: S,
    log: Option<CallLog>,
    status: u16,
    failure: Option<String>,
    capture: Option<Vec<u8>>,
    capture_limit: usize,
}

impl<S> Logged<S> {
    pub(crate) fn new(inner: S, log: CallLog, status: u16, capture_limit: Option<usize>) -> Self {
        Logged {
            inner,
            log: Some(log),
            status,
            failure: None,
            capture: capture_limit.map(|_| Vec::new()),
            capture_limit: capture_limit.unwrap_or(0),
        }
    }
}

impl<S, E> Stream for Logged<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = Pin::new(&mut this.inner).poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(chunk))) => {
                let limit = this.capture_limit;
                if let Some(capture) = &mut this.capture {
                    if capture.len() + chunk.len() <= limit {
                        capture.extend_from_slice(chunk);
                    } else {
                        this.capture = None;
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => this.failure = Some(format!("response body: {e}")),
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        item
    }
}

impl<S> Logged<S> {
    /// Logs the call, once: at the body's end, or when it is dropped before that.
    fn finish(&mut self) {
        let Some(mut log) = self.log.take() else {
            return;
        };
        if let Some(body) = &self.capture {
            log.run_id = log.run_id.or_else(|| created_run_id(body));
        }
        let outcome = if self.failure.is_some() {
            "failed"
        } else {
            "forwarded"
        };
        log.finish(self.status, outcome, self.failure.as_deref());
    }
}

impl<S> Drop for Logged<S> {
    fn drop(&mut self) {
        self.finish();
    }
}
