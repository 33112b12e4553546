//! The `authenticate` hook: who may use the proxy at all, so a deployed one is not an open relay.

use axum::http::{header, request::Parts, StatusCode};

/// Decides whether a call may go through the proxy, before anything else is looked at but the
/// rate limit. Every authenticator in `ProxyConfig::authenticators` must accept.
///
/// A closure `Fn(&Parts) -> Result<(), Refusal>` is one, so an application can plug in its own
/// session check without a new type.
///
/// # Errors
/// The `Refusal` to answer instead of forwarding.
///
/// # Example
/// ```
/// use runflow_devserver::{Authenticate, Refusal};
/// use axum::http::{request::Parts, StatusCode};
///
/// let signed_in = |parts: &Parts| match parts.headers.get("cookie") {
///     Some(_) => Ok(()),
///     None => Err(Refusal::new(StatusCode::UNAUTHORIZED, "SIGN_IN_REQUIRED", "Sign in first")),
/// };
/// let hook: &dyn Authenticate = &signed_in;
/// # let _ = hook;
/// ```
pub trait Authenticate: Send + Sync + 'static {
    /// Accepts the call, or says how to refuse it.
    ///
    /// # Errors
    /// The refusal, answered in the standard error envelope.
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal>;

    /// A short name for the start-up summary (never a secret).
    fn name(&self) -> &str {
        "custom"
    }
}

impl<F> Authenticate for F
where
    F: Fn(&Parts) -> Result<(), Refusal> + Send + Sync + 'static,
{
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal> {
        self(request)
    }
}

/// A refused call: answered as `{"code", "message", "errors": null}` with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status (401 or 403 usually).
    pub status: StatusCode,
    /// A machine-readable code, e.g. `ORIGIN_NOT_ALLOWED`.
    pub code: String,
    /// What the caller can do about it.
    pub message: String,
}

impl Refusal {
    /// A refusal with this status, code and message.
    ///
    /// # Example
    /// ```
    /// use runflow_devserver::Refusal;
    /// let no = Refusal::new(axum::http::StatusCode::FORBIDDEN, "NO", "Not you");
    /// assert_eq!(no.code, "NO");
    /// ```
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Requires `X-Proxy-Secret: <secret>` (`PROXY_SHARED_SECRET`): for a proxy whose callers are
/// servers or a page that is itself behind a login, never for a public page (it would ship the
/// secret to every visitor).
#[derive(Clone)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// The header callers must send.
    pub const HEADER: &'static str = "x-proxy-secret";

    /// Requires `secret`.
    ///
    /// # Example
    /// ```
    /// let hook = runflow_devserver::SharedSecret::new("s3cret");
    /// # drop(hook);
    /// ```
    pub fn new(secret: impl Into<String>) -> Self {
        SharedSecret(secret.into())
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl Authenticate for SharedSecret {
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal> {
        let sent = request.headers.get(Self::HEADER).map(|v| v.as_bytes());
        if sent.is_some_and(|sent| constant_time_eq(sent, self.0.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "PROXY_SECRET_REQUIRED",
                "This proxy requires the X-Proxy-Secret header with the shared secret",
            ))
        }
    }

    fn name(&self) -> &str {
        "shared secret"
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a call whose `Origin` names another site than the `Host` it was sent to, so other
/// sites' pages cannot drive the proxy from their visitors' browsers (`PROXY_SAME_ORIGIN`).
/// Calls without `Origin` pass: browsers send it on every cross-origin request, and a script
/// outside a browser could forge it anyway.
#[derive(Clone, Copy, Debug, Default)]
pub struct SameOrigin;

impl Authenticate for SameOrigin {
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal> {
        let Some(origin) = request.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let authority = origin.to_str().ok().and_then(|origin| {
            let (scheme, rest) = origin.split_once("://")?;
            matches!(scheme, "http" | "https").then_some(rest)
        });
        let host = request.headers.get(header::HOST).map(|h| h.as_bytes());
        match (authority, host) {
            (Some(authority), Some(host)) if authority.as_bytes().eq_ignore_ascii_case(host) => {
                Ok(())
            }
            _ => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                "Cross-origin calls are refused: serve the page from this proxy's origin",
            )),
        }
    }

    fn name(&self) -> &str {
        "same origin"
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri("/api/runflow/v1/health");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_compares_origin_with_host() {
        let host = ("host", "demo.example:8080");
        for ok in [
            vec![host],
            vec![host, ("origin", "http://demo.example:8080")],
            vec![host, ("origin", "https://DEMO.example:8080")],
        ] {
            assert_eq!(SameOrigin.authenticate(&parts(&ok)), Ok(()), "{ok:?}");
        }
        for foreign in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://demo.example")],
            vec![host, ("origin", "null")],
            vec![("origin", "http://demo.example:8080")],
        ] {
            let refusal = SameOrigin.authenticate(&parts(&foreign)).unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN, "{foreign:?}");
        }
    }

    #[test]
    fn the_shared_secret_must_match_exactly() {
        let hook = SharedSecret::new("s3cret");
        assert_eq!(
            hook.authenticate(&parts(&[("x-proxy-secret", "s3cret")])),
            Ok(())
        );
        for wrong in [
            vec![],
            vec![("x-proxy-secret", "s3cre")],
            vec![("x-proxy-secret", "s3cret ")],
        ] {
            let refusal = hook.authenticate(&parts(&wrong)).unwrap_err();
            assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
        }
        assert!(!format!("{hook:?}").contains("s3cret"));
    }
}
