//! Which headers cross the proxy, each way. Everything not listed is dropped: the browser's
//! `Authorization` and `Cookie` above all, and whatever the upstream sets that a page need not see.
//!
//! ```
//! use runflow_proxy_rules::headers::{forwards_request_header, returns_response_header};
//! assert!(forwards_request_header("Idempotency-Key"));
//! assert!(!forwards_request_header("authorization"));
//! assert!(returns_response_header("X-RateLimit-Remaining"));
//! assert!(!returns_response_header("set-cookie"));
//! ```

/// Request headers passed upstream as the browser sent them (lowercase). `X-Organization-Id` is
/// not among them: the deployment picks the organisation, not a visitor.
pub const REQUEST_HEADERS: [&str; 3] = ["content-type", "accept", "idempotency-key"];

/// Response headers passed back (lowercase), with any `x-ratelimit-*`: the client reads them for
/// retries, and request ids let a user quote a failed call to Runflow's support.
pub const RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "retry-after",
    "x-request-id",
    "runflow-request-id",
];

/// Set on every answer of the proxy, forwarded or its own: API answers are per call, so no cache
/// may keep them, and the upstream's body keeps its own `Content-Type`, which a browser must not
/// sniff into HTML or script when someone links to or embeds a proxy URL.
pub const GUARD_HEADERS: [(&str, &str); 2] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
];

/// The header a `SharedSecret`-style check reads (lowercase).
pub const SECRET_HEADER: &str = "x-proxy-secret";

const RATE_LIMIT_PREFIX: &str = "x-ratelimit-";

/// Whether a request header called `name` (any case) is passed upstream.
///
/// # Example
/// ```
/// assert!(runflow_proxy_rules::headers::forwards_request_header("Content-Type"));
/// assert!(!runflow_proxy_rules::headers::forwards_request_header("cookie"));
/// ```
pub fn forwards_request_header(name: &str) -> bool {
    REQUEST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a response header called `name` (any case) is passed back to the browser.
///
/// # Example
/// ```
/// assert!(runflow_proxy_rules::headers::returns_response_header("Retry-After"));
/// assert!(runflow_proxy_rules::headers::returns_response_header("x-ratelimit-reset"));
/// assert!(!runflow_proxy_rules::headers::returns_response_header("x-ratelimit"));
/// ```
pub fn returns_response_header(name: &str) -> bool {
    RESPONSE_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..RATE_LIMIT_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RATE_LIMIT_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_headers_cross() {
        for name in ["content-type", "ACCEPT", "Idempotency-Key"] {
            assert!(forwards_request_header(name), "{name}");
        }
        for name in [
            "authorization",
            "cookie",
            "x-organization-id",
            "x-proxy-secret",
            "host",
            "content-length",
            "",
        ] {
            assert!(!forwards_request_header(name), "{name}");
        }
        for name in [
            "Content-Type",
            "content-length",
            "retry-after",
            "X-Request-Id",
            "runflow-request-id",
            "x-ratelimit-limit",
            "X-RATELIMIT-REMAINING",
        ] {
            assert!(returns_response_header(name), "{name}");
        }
        for name in [
            "set-cookie",
            "location",
            "x-ratelimit",
            "ratelimit-x-",
            "server",
            "é-ratelimit-x",
        ] {
            assert!(!returns_response_header(name), "{name}");
        }
        // Lowercase, as HTTP/2 and the Fetch API's Headers want them.
        for name in REQUEST_HEADERS
            .iter()
            .chain(&RESPONSE_HEADERS)
            .chain(GUARD_HEADERS.iter().map(|(name, _)| name))
        {
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
}
