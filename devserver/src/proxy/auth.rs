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

/// Guards against other sites' pages driving the proxy from their visitors' browsers
/// (`PROXY_SAME_ORIGIN`, `PROXY_ALLOWED_HOSTS`), in two steps:
///
/// 1. The `Host` (or HTTP/2 `:authority`) must be on the allowlist. Comparing `Origin` with `Host`
///    alone is not enough: under DNS rebinding the attacker's name resolves to this server, and
///    the browser sends `Host: evil.example:8080` with `Origin: http://evil.example:8080`.
/// 2. An `Origin`, when present, must be `http://` or `https://` followed by that same host. The
///    scheme is not compared: behind a TLS-terminating reverse proxy this server cannot know
///    which one the browser used, and the host is what rebinding or a foreign page cannot fake.
///
/// Calls without `Origin` pass step 2: browsers send it on every cross-origin request, and a
/// script outside a browser could forge it anyway. This is not authentication.
#[derive(Clone, Debug)]
pub struct SameOrigin {
    hosts: Vec<HostPattern>,
}

/// One allowed host, lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// This host name on any port (the loopback defaults, for dev servers on any `PORT`).
    AnyPort(String),
    /// Exactly this `host` or `host:port`, as the `Host` header carries it.
    Exact(String),
}

impl Default for SameOrigin {
    /// Loopback only, on any port: `localhost`, `127.0.0.1` and `[::1]`.
    fn default() -> Self {
        SameOrigin {
            hosts: ["localhost", "127.0.0.1", "[::1]"]
                .into_iter()
                .map(|host| HostPattern::AnyPort(host.into()))
                .collect(),
        }
    }
}

impl SameOrigin {
    /// Allows exactly these `host[:port]` values, comma-separated (`PROXY_ALLOWED_HOSTS`). A
    /// value without a port allows only a `Host` without one (the scheme's default port).
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
        let mut hosts = Vec::new();
        for value in list.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let Some((host, port)) = split_host(value) else {
                return Err(format!(
                    "PROXY_ALLOWED_HOSTS entry {value:?} is not a host[:port]"
                ));
            };
            let exact = match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            };
            hosts.push(HostPattern::Exact(exact));
        }
        if hosts.is_empty() {
            return Err("PROXY_ALLOWED_HOSTS lists no host".into());
        }
        Ok(SameOrigin { hosts })
    }

    /// Whether `authority` (a `Host` value) is on the list.
    fn allows(&self, authority: &str) -> bool {
        let Some((host, port)) = split_host(authority) else {
            return false;
        };
        self.hosts.iter().any(|pattern| match pattern {
            HostPattern::AnyPort(allowed) => *allowed == host,
            HostPattern::Exact(allowed) => match port {
                Some(port) => *allowed == format!("{host}:{port}"),
                None => *allowed == host,
            },
        })
    }
}

/// Splits `host[:port]` into the lowercased host (IPv6 in brackets) and the port, or `None`
/// when it is not one: no scheme, path, user info or empty parts.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        let (host, rest) = value.split_at(end + 1);
        let port = match rest {
            "" => None,
            rest => Some(rest.strip_prefix(':')?),
        };
        host[1..end].parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !host_ok {
        return None;
    }
    // Digits only: `u16::from_str` would also take a leading `+`.
    let port = match port {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(port.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Authenticate for SameOrigin {
    fn authenticate(&self, request: &Parts) -> Result<(), Refusal> {
        // HTTP/2 carries the host in `:authority`, which hyper puts in the URI, not in `Host`.
        let host = match request.headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => request.uri.authority().map(|a| a.as_str()),
        };
        let Some(host) = host.filter(|host| self.allows(host)) else {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "HOST_NOT_ALLOWED",
                "This proxy does not answer for this host name: add it to PROXY_ALLOWED_HOSTS",
            ));
        };
        let Some(origin) = request.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let authority = origin.to_str().ok().and_then(|origin| {
            let (scheme, rest) = origin.split_once("://")?;
            matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https").then_some(rest)
        });
        match authority {
            Some(authority) if authority.eq_ignore_ascii_case(host) => Ok(()),
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
    fn same_origin_compares_origin_with_an_allowed_host() {
        let hook = SameOrigin::parse("demo.example:8080").unwrap();
        let host = ("host", "demo.example:8080");
        for ok in [
            vec![host],
            vec![host, ("origin", "http://demo.example:8080")],
            vec![host, ("origin", "https://DEMO.example:8080")],
        ] {
            assert_eq!(hook.authenticate(&parts(&ok)), Ok(()), "{ok:?}");
        }
        for foreign in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://demo.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "ftp://demo.example:8080")],
        ] {
            let refusal = hook.authenticate(&parts(&foreign)).unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN, "{foreign:?}");
            assert_eq!(refusal.code, "ORIGIN_NOT_ALLOWED", "{foreign:?}");
        }
    }

    #[test]
    fn dns_rebinding_is_refused_by_the_host_allowlist() {
        // The attacker's name resolves to this server: Host and Origin agree, and are foreign.
        let rebound = [
            ("host", "evil.example:8080"),
            ("origin", "http://evil.example:8080"),
        ];
        for hook in [
            SameOrigin::default(),
            SameOrigin::parse("demo.example:8080").unwrap(),
        ] {
            let refusal = hook.authenticate(&parts(&rebound)).unwrap_err();
            assert_eq!(refusal.status, StatusCode::FORBIDDEN);
            assert_eq!(refusal.code, "HOST_NOT_ALLOWED");
            let refusal = hook
                .authenticate(&parts(&[("origin", "http://demo.example:8080")]))
                .unwrap_err();
            assert_eq!(refusal.code, "HOST_NOT_ALLOWED", "no Host at all");
        }
    }

    #[test]
    fn the_default_allows_loopback_on_any_port_only() {
        let hook = SameOrigin::default();
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:9999",
            "[::1]",
            "[::1]:8080",
        ] {
            let origin = format!("http://{host}");
            let call = parts(&[("host", host), ("origin", &origin)]);
            assert_eq!(hook.authenticate(&call), Ok(()), "{host}");
        }
        for host in [
            "localhost.evil.example",
            "127.0.0.2:8080",
            "[::2]:8080",
            "localhost:",
            "localhost:+80",
            "localhost:99999",
            "user@localhost",
            "",
        ] {
            let refusal = hook.authenticate(&parts(&[("host", host)])).unwrap_err();
            assert_eq!(refusal.code, "HOST_NOT_ALLOWED", "{host}");
        }
    }

    #[test]
    fn listed_hosts_match_their_port_exactly() {
        let hook = SameOrigin::parse(" Demo.example , demo.example:8443,[::1]:9").unwrap();
        for ok in ["demo.example", "demo.example:8443", "[::1]:9"] {
            assert_eq!(hook.authenticate(&parts(&[("host", ok)])), Ok(()), "{ok}");
        }
        for refused in ["demo.example:80", "demo.example:844", "localhost", "[::1]"] {
            let refusal = hook.authenticate(&parts(&[("host", refused)])).unwrap_err();
            assert_eq!(refusal.code, "HOST_NOT_ALLOWED", "{refused}");
        }
        for bad in [
            "",
            " , ",
            "http://demo.example",
            "demo.example/x",
            "a:b",
            "[zz]:1",
        ] {
            assert!(SameOrigin::parse(bad).is_err(), "{bad:?}");
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
