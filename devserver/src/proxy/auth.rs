//! The `authenticate` hook: who may use the proxy at all, so a deployed one is not an open relay.
//! The built-in hooks are thin: what they decide is in `runflow_proxy_rules`.

use axum::http::{header, request::Parts, StatusCode};
use runflow_proxy_rules::{constant_time_eq, headers::SECRET_HEADER, origin::HostAllowlist, Names};

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

    /// The rules' refusal, for a hook to answer with.
    fn from_rules(refusal: runflow_proxy_rules::Refusal) -> Self {
        let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
        Refusal::new(status, refusal.code, refusal.message)
    }
}

/// Requires `X-Proxy-Secret: <secret>` (`PROXY_SHARED_SECRET`): for a proxy whose callers are
/// servers or a page that is itself behind a login, never for a public page (it would ship the
/// secret to every visitor).
#[derive(Clone)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// The header callers must send.
    pub const HEADER: &'static str = SECRET_HEADER;

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
            Err(Refusal::from_rules(
                runflow_proxy_rules::Refusal::secret_required(),
            ))
        }
    }

    fn name(&self) -> &str {
        "shared secret"
    }
}

/// The same-origin check as a hook (`PROXY_SAME_ORIGIN`, `PROXY_ALLOWED_HOSTS`): the `Host` must
/// be on the allowlist (against DNS rebinding), and an `Origin`, when sent, must be that host.
/// The rules, and why they are these, are `runflow_proxy_rules::origin`'s.
#[derive(Clone, Debug, Default)]
pub struct SameOrigin(HostAllowlist);

impl SameOrigin {
    /// Allows exactly these `host[:port]` values, comma-separated (`PROXY_ALLOWED_HOSTS`). A
    /// value without a port allows only a `Host` without one (the scheme's default port). The
    /// default allows loopback on any port.
    ///
    /// # Errors
    /// A message naming the value that is not a `host[:port]`, or when there is none.
    ///
    /// # Example
    /// ```
    /// let hook = runflow_devserver::SameOrigin::parse("demo.example, demo.example:8443").unwrap();
    /// # drop(hook);
    /// assert!(runflow_devserver::SameOrigin::parse("http://demo.example").is_err());
    /// ```
    pub fn parse(list: &str) -> Result<SameOrigin, String> {
        HostAllowlist::parse(list, Names::ENV.allowed_hosts).map(SameOrigin)
    }
}

impl Authenticate for SameOrigin {
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal> {
        // HTTP/2 carries the host in `:authority`, which hyper puts in the URI, not in `Host`.
        let host = match request.headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => request.uri.authority().map(|a| a.as_str()),
        };
        // An `Origin` that is not text is still one, and matches no host.
        let origin = request
            .headers
            .get(header::ORIGIN)
            .map(|origin| origin.to_str().unwrap_or_default());
        self.0
            .check(host, origin, &Names::ENV)
            .map_err(Refusal::from_rules)
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
    fn same_origin_reads_host_authority_and_origin() {
        // The cases themselves are the rules' tests; this is where the hook finds its inputs.
        let hook = SameOrigin::parse("demo.example:8080").unwrap();
        let host = ("host", "demo.example:8080");
        assert_eq!(
            hook.authenticate(&parts(&[host, ("origin", "https://DEMO.example:8080")])),
            Ok(())
        );
        let foreign = hook
            .authenticate(&parts(&[host, ("origin", "http://evil.example")]))
            .unwrap_err();
        assert_eq!(
            (foreign.status, foreign.code.as_str()),
            (StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED")
        );
        let opaque = Request::builder()
            .header("host", "demo.example:8080")
            .header(
                "origin",
                axum::http::HeaderValue::from_bytes(b"http://\xff").unwrap(),
            )
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            hook.authenticate(&opaque).unwrap_err().code,
            "ORIGIN_NOT_ALLOWED"
        );
        let h2 = Request::builder()
            .uri("http://demo.example:8080/api/runflow/v1/health")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(hook.authenticate(&h2), Ok(()), ":authority stands for Host");
        let refusal = SameOrigin::default()
            .authenticate(&parts(&[("host", "evil.example")]))
            .unwrap_err();
        assert_eq!(
            refusal.message,
            "This proxy does not answer for this host name: add it to PROXY_ALLOWED_HOSTS"
        );
        assert_eq!(
            SameOrigin::parse(" , ").unwrap_err(),
            "PROXY_ALLOWED_HOSTS lists no host"
        );
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
