//! The policy of a same-origin proxy to Runflow's runs API: which calls it forwards (only the
//! few the client needs, checked part by part and rebuilt from the checked parts, so that what
//! reaches Runflow is exactly what was allowed), which headers cross it, who may use it, its
//! per-client budgets, and what it answers when it says no.
//!
//! Pure functions and values over strings and bytes (no I/O, no HTTP types, no clock of its
//! own), so that the dev server and the wasm server entry answer alike: each does only the I/O
//! and asks a `Policy`.
//!
//! ```
//! use runflow_proxy_rules::{check, ModelAllowlist, Refused};
//! let models = ModelAllowlist::Only(vec!["black-forest-labs/flux-pro/kontext".into()]);
//! let get = check("GET", "/v1/runs/3f2a-b_9", Some("x=1"), &models).unwrap();
//! assert_eq!(get.target, "/v1/runs/3f2a-b_9");
//! assert_eq!(check("DELETE", "/v1/runs/a", None, &models), Err(Refused::Path));
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod headers;
pub mod limit;
pub mod origin;
mod policy;
mod refusal;
mod upstream;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

pub use policy::Policy;
pub use refusal::{Names, Refusal};
pub use upstream::Upstream;

/// Runflow's API.
pub const DEFAULT_UPSTREAM: &str = "https://api.runflow.io";
/// The one model the client is for.
pub const DEFAULT_MODEL: &str = "black-forest-labs/flux-pro/kontext";
/// Where the proxy is mounted, as with Runflow's own proxy package (the client's `baseUrl`).
pub const DEFAULT_MOUNT: &str = "/api/runflow";
/// 1.5 MiB: a 1 MiB image as a base64 `data:` URI (4/3 of it) plus the rest of a create body.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 3 * 512 * 1024;
/// How long one upstream call (connection, request and response body) may take, in ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Upstream error bodies are read whole (to take the key out) up to this; a longer one is not
/// passed on. Runflow's are a few hundred bytes; a 422 may echo some input.
pub const ERROR_BODY_LIMIT: usize = 256 * 1024;
/// Room for a create's response (which echoes its input) beyond the request cap when reading
/// the new run's id for the log.
pub const CAPTURE_MARGIN: u64 = 64 * 1024;
/// What stands for the key wherever an upstream error body echoes it.
const REDACTED: &[u8] = b"[redacted]";

/// What JS `encodeURIComponent` leaves alone, as the client encodes.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Longest run or asset id accepted (Runflow's are UUIDs; ids are opaque, so allow some room).
pub const MAX_ID_LEN: usize = 128;
/// Longest client_ref searched for, in characters: the API's own limit on the field.
pub const MAX_CLIENT_REF_CHARS: usize = 255;
/// The search's page size limits, as the API documents them.
const LIMITS: std::ops::RangeInclusive<u32> = 1..=100;
/// The API's own maximum of `input.num_images`.
pub const API_MAX_IMAGES: u64 = 4;

/// The models whose runs the proxy creates (`RUNFLOW_ALLOWED_MODELS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelAllowlist {
    /// Every model (`*`): the key's owner pays for whatever a visitor runs.
    Any,
    /// Only these model ids, compared exactly.
    Only(Vec<String>),
}

impl ModelAllowlist {
    /// Parses a comma-separated list of model ids; `*` anywhere in it allows every model.
    ///
    /// # Errors
    /// A message when the list names no model at all.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::ModelAllowlist;
    /// let list = ModelAllowlist::parse(" acme/a, acme/b ").unwrap();
    /// assert_eq!(list, ModelAllowlist::Only(vec!["acme/a".into(), "acme/b".into()]));
    /// assert_eq!(ModelAllowlist::parse("*"), Ok(ModelAllowlist::Any));
    /// ```
    pub fn parse(text: &str) -> Result<ModelAllowlist, String> {
        ModelAllowlist::from_entries(text.split(','), "RUNFLOW_ALLOWED_MODELS")
            .map_err(|e| format!("{e}, got {text:?}"))
    }

    /// Whether runs of `model` (a decoded, slash-joined id) may be created.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::ModelAllowlist;
    /// assert!(ModelAllowlist::Only(vec!["a/b".into()]).allows("a/b"));
    /// assert!(!ModelAllowlist::Only(vec!["a/b".into()]).allows("a/b/c"));
    /// ```
    pub fn allows(&self, model: &str) -> bool {
        match self {
            ModelAllowlist::Any => true,
            ModelAllowlist::Only(models) => models.iter().any(|m| m == model),
        }
    }
}

impl ModelAllowlist {
    /// The list from separate model ids (blank ones skipped; `*` allows every model), for a
    /// setting that is an array; `setting` names it in the message.
    ///
    /// # Errors
    /// A message when the entries name no model at all.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::ModelAllowlist;
    /// let list = ModelAllowlist::from_entries(["acme/a", " "], "allowedModels");
    /// assert_eq!(list, Ok(ModelAllowlist::Only(vec!["acme/a".into()])));
    /// assert!(ModelAllowlist::from_entries([], "allowedModels").is_err());
    /// ```
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        setting: &str,
    ) -> Result<ModelAllowlist, String> {
        let models: Vec<String> = entries
            .into_iter()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        if models.iter().any(|m| m == "*") {
            Ok(ModelAllowlist::Any)
        } else if models.is_empty() {
            Err(format!("{setting} must name at least one model id (or *)"))
        } else {
            Ok(ModelAllowlist::Only(models))
        }
    }
}

/// The path under the mount (`/v1/...`, still percent-encoded; `""` for the mount itself), or
/// `None` when `path` is not `mount`, `mount/` or under `mount/`. A trailing `/` on `mount` is
/// ignored.
///
/// # Example
/// ```
/// use runflow_proxy_rules::strip_mount;
/// assert_eq!(strip_mount("/api/runflow/v1/health", "/api/runflow"), Some("/v1/health"));
/// assert_eq!(strip_mount("/api/runflow", "/api/runflow/"), Some(""));
/// assert_eq!(strip_mount("/api/runflowx/v1", "/api/runflow"), None);
/// ```
pub fn strip_mount<'a>(path: &'a str, mount: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(mount.trim_end_matches('/'))?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `body` with every occurrence of `secret` replaced by `[redacted]`: an upstream (or a
/// misconfigured gateway in front of it) may quote the request's `Authorization` back.
///
/// # Example
/// ```
/// let body = runflow_proxy_rules::redact(b"bad key rf_1, rf_1!", b"rf_1");
/// assert_eq!(body, b"bad key [redacted], [redacted]!");
/// ```
pub fn redact(body: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() {
        return body.to_vec();
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(secret.len()).position(|w| w == secret) {
        let (before, after) = rest.split_at(at);
        out.extend_from_slice(before);
        out.extend_from_slice(REDACTED);
        rest = after.get(secret.len()..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    out
}

/// Compares without stopping at the first difference, so timing does not reveal a secret (only
/// its length).
///
/// # Example
/// ```
/// use runflow_proxy_rules::constant_time_eq;
/// assert!(constant_time_eq(b"s3cret", b"s3cret"));
/// assert!(!constant_time_eq(b"s3cret", b"s3cre"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The new run's id from a create's response body (its JSON `id`), for the log; `None` when the
/// body is not such an object.
///
/// # Example
/// ```
/// use runflow_proxy_rules::created_run_id;
/// assert_eq!(created_run_id(br#"{"id": "run_1", "status": "queued"}"#), Some("run_1".into()));
/// assert_eq!(created_run_id(b"<html>"), None);
/// ```
pub fn created_run_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Created {
        id: Option<String>,
    }
    serde_json::from_slice::<Created>(body).ok()?.id
}

/// A call the proxy forwards.
#[derive(Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Path and query to append to the upstream base, rebuilt from the checked parts.
    pub target: String,
    /// The run the path names, for the log.
    pub run_id: Option<String>,
    /// A create: it spends credit, and its response names the new run.
    pub creates_run: bool,
}

/// Why a call is not forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not one of the calls the client needs (or a malformed one).
    Path,
    /// A create for a model off the allowlist (the decoded model id).
    Model(String),
}

/// Decides whether `method path?query` (the path relative to the mount, still percent-encoded;
/// the query without its `?`) is forwarded, and to which target. Never panics, whatever the input.
///
/// # Errors
/// `Refused::Path` for anything but the client's calls, `Refused::Model` for a create of a model
/// off the allowlist.
///
/// # Example
/// ```
/// use runflow_proxy_rules::{check, ModelAllowlist, Refused};
/// let any = ModelAllowlist::Any;
/// let search = check("GET", "/v1/runs", Some("q=client_ref%3Ark_1&limit=5"), &any).unwrap();
/// assert_eq!(search.target, "/v1/runs?q=client_ref%3Ark_1&limit=5");
/// let broad = check("GET", "/v1/runs", Some("q=status%3Asucceeded"), &any);
/// assert_eq!(broad, Err(Refused::Path));
/// ```
pub fn check(
    method: &str,
    path: &str,
    query: Option<&str>,
    models: &ModelAllowlist,
) -> Result<Allowed, Refused> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Refused::Path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let plain = |target: String, run_id: Option<&str>| Allowed {
        target,
        run_id: run_id.map(str::to_string),
        creates_run: false,
    };
    match (method, segments.as_slice()) {
        ("GET", ["v1", "health"]) => Ok(plain("/v1/health".into(), None)),
        ("GET", ["v1", "runs", id]) if is_id(id) => Ok(plain(format!("/v1/runs/{id}"), Some(id))),
        ("GET", ["v1", "runs"]) => search(query).map(|target| plain(target, None)),
        ("POST", ["v1", "asset-uploads"]) => Ok(plain("/v1/asset-uploads".into(), None)),
        ("POST", ["v1", "asset-uploads", id, "confirmations"]) if is_id(id) => {
            Ok(plain(format!("/v1/asset-uploads/{id}/confirmations"), None))
        }
        ("POST", ["v1", "models", model @ .., "runs"]) if !model.is_empty() => {
            let model = model
                .iter()
                .map(|s| model_segment(s))
                .collect::<Option<Vec<_>>>()
                .ok_or(Refused::Path)?;
            let id = model.join("/");
            if !models.allows(&id) {
                return Err(Refused::Model(id));
            }
            let encoded: Vec<String> = model
                .iter()
                .map(|s| utf8_percent_encode(s, COMPONENT).to_string())
                .collect();
            Ok(Allowed {
                target: format!("/v1/models/{}/runs", encoded.join("/")),
                run_id: None,
                creates_run: true,
            })
        }
        _ => Err(Refused::Path),
    }
}

/// Why a create's body is not forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRefused {
    /// Not a JSON object whose `input` (if any) is an object with each field once: the proxy
    /// cannot tell what it would create, so it does not forward it.
    Unreadable,
    /// `input.num_images` is not an integer from 1 to the limit (the limit given).
    TooManyImages(u64),
}

/// Checks a create's body before it is forwarded: `input.num_images`, when present, must be an
/// integer from 1 to `max_images`. A body the check cannot read (not JSON, or a key repeated,
/// which two parsers might resolve differently) is refused too. Never panics.
///
/// # Errors
/// The `BodyRefused` saying why.
///
/// # Example
/// ```
/// use runflow_proxy_rules::{check_create_body, BodyRefused};
/// assert_eq!(check_create_body(br#"{"input": {"num_images": 2}}"#, 4), Ok(()));
/// assert_eq!(check_create_body(br#"{"input": {"num_images": 4}}"#, 1), Err(BodyRefused::TooManyImages(1)));
/// assert_eq!(check_create_body(b"nope", 4), Err(BodyRefused::Unreadable));
/// ```
pub fn check_create_body(body: &[u8], max_images: u64) -> Result<(), BodyRefused> {
    // serde's derived visitors refuse a repeated field, so `{"num_images":1,"num_images":4}`
    // cannot pass here with one value and reach Runflow with the other.
    #[derive(Deserialize)]
    struct Create {
        input: Option<Input>,
    }
    #[derive(Deserialize)]
    struct Input {
        num_images: Option<serde_json::Value>,
    }
    let create: Create = serde_json::from_slice(body).map_err(|_| BodyRefused::Unreadable)?;
    match create.input.and_then(|input| input.num_images) {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(n) if n.as_u64().is_some_and(|n| (1..=max_images).contains(&n)) => Ok(()),
        Some(_) => Err(BodyRefused::TooManyImages(max_images)),
    }
}

/// An opaque id as it may sit in a path: characters that never need encoding, so the raw
/// segment is the id and cannot smuggle `/`, `..` or a query.
fn is_id(segment: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&segment.len())
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One decoded segment of a model id, or `None` for one that could change the path's meaning.
fn model_segment(raw: &str) -> Option<String> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    let fine = !decoded.trim().is_empty()
        && decoded != "."
        && decoded != ".."
        && !decoded.contains(['/', '\\'])
        && !decoded.chars().any(char::is_control);
    fine.then(|| decoded.into_owned())
}

/// `GET /v1/runs` is forwarded only as a search by one client_ref: a broader filter would let
/// any visitor list every run made with the key.
fn search(query: Option<&str>) -> Result<String, Refused> {
    let mut q = None;
    let mut limit = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match name.as_ref() {
            "q" => &mut q,
            "limit" => &mut limit,
            _ => return Err(Refused::Path),
        };
        if slot.replace(value).is_some() {
            return Err(Refused::Path);
        }
    }
    let q = q.ok_or(Refused::Path)?;
    let value = q.strip_prefix("client_ref:").ok_or(Refused::Path)?;
    if !(is_plain_ref(value) || is_quoted_ref(value)) {
        return Err(Refused::Path);
    }
    let mut target = format!("/v1/runs?q={}", utf8_percent_encode(&q, COMPONENT));
    if let Some(limit) = limit {
        let limit = limit
            .parse::<u32>()
            .ok()
            .filter(|n| LIMITS.contains(n))
            .ok_or(Refused::Path)?;
        target.push_str(&format!("&limit={limit}"));
    }
    Ok(target)
}

/// A client_ref the client sends unquoted.
fn is_plain_ref(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLIENT_REF_CHARS
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `"..."` holding no `"`, no `\` and no control character: one value, never an operator.
/// Escapes are refused rather than trusted: nothing documents that Runflow's filter grammar
/// honours `\"`, and if it does not, `"a\" OR status:succeeded"` would be two terms there.
fn is_quoted_ref(value: &str) -> bool {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return false;
    };
    let chars = inner.chars().count();
    (1..=MAX_CLIENT_REF_CHARS).contains(&chars)
        && !inner
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KONTEXT: &str = "black-forest-labs/flux-pro/kontext";

    fn kontext_only() -> ModelAllowlist {
        ModelAllowlist::Only(vec![KONTEXT.into()])
    }

    fn target(method: &str, path: &str, query: Option<&str>) -> Result<String, Refused> {
        check(method, path, query, &kontext_only()).map(|a| a.target)
    }

    #[test]
    fn the_clients_calls_are_forwarded_as_sent() {
        let create = check(
            "POST",
            "/v1/models/black-forest-labs/flux-pro/kontext/runs",
            None,
            &kontext_only(),
        );
        assert_eq!(
            create,
            Ok(Allowed {
                target: "/v1/models/black-forest-labs/flux-pro/kontext/runs".into(),
                run_id: None,
                creates_run: true,
            })
        );
        let get = check("GET", "/v1/runs/3f2a-b_9", None, &kontext_only());
        assert_eq!(get.map(|a| a.run_id), Ok(Some("3f2a-b_9".into())));
        for (method, path) in [
            ("GET", "/v1/health"),
            ("POST", "/v1/asset-uploads"),
            ("POST", "/v1/asset-uploads/as_1/confirmations"),
        ] {
            assert_eq!(target(method, path, None).as_deref(), Ok(path));
        }
        // Queries are never passed on where the API takes none.
        assert_eq!(
            target("GET", "/v1/health", Some("x=1")).as_deref(),
            Ok("/v1/health")
        );
    }

    #[test]
    fn searches_by_one_client_ref_only() {
        let search = |q: &str| target("GET", "/v1/runs", Some(q));
        assert_eq!(
            search("q=client_ref%3Ark_1a.b-c&limit=5").as_deref(),
            Ok("/v1/runs?q=client_ref%3Ark_1a.b-c&limit=5")
        );
        assert_eq!(
            search("q=client_ref%3A%22order%207%20OR%20x%22").as_deref(),
            Ok("/v1/runs?q=client_ref%3A%22order%207%20OR%20x%22")
        );
        let longest = format!("q=client_ref%3A%22{}%22", "é".repeat(MAX_CLIENT_REF_CHARS));
        assert!(search(&longest).is_ok());
        let too_long = format!("q=client_ref%3A%22{}%22", "a".repeat(256));
        for refused in [
            "",
            "limit=5",
            "q=status%3Asucceeded",
            "q=client_ref%3Aa%20OR%20status%3Asucceeded",
            "q=client_ref%3A%22a%22%20OR%20status%3Asucceeded",
            "q=client_ref%3A%22a%22b%22",
            "q=client_ref%3A%22a%5C%22",
            "q=client_ref%3A",
            "q=client_ref%3A%22%22",
            "q=client_ref%3Aa&q=client_ref%3Ab",
            "q=client_ref%3Aa&q=status%3Asucceeded&limit=100",
            "q=client_ref%3Aa&limit=0",
            "q=client_ref%3Aa&limit=101",
            "q=client_ref%3Aa&limit=5&limit=6",
            "q=client_ref%3Aa&page=2",
            &too_long,
        ] {
            assert_eq!(search(refused), Err(Refused::Path), "{refused}");
        }
    }

    #[test]
    fn quoted_refs_hold_no_escapes() {
        let search = |q: &str| target("GET", "/v1/runs", Some(q));
        // `\"` could end the value where Runflow does not honour escapes; `\\` is refused with
        // it, so that no backslash reaches the filter at all.
        for refused in [
            "q=client_ref%3A%22a%5C%22b%22",
            "q=client_ref%3A%22a%5C%22%20OR%20status%3Asucceeded%22",
            "q=client_ref%3A%22a%5C%5Cb%22",
            "q=client_ref%3A%22a%5Cb%22",
            "q=client_ref%3A%22a%0Ab%22",
        ] {
            assert_eq!(search(refused), Err(Refused::Path), "{refused}");
        }
    }

    #[test]
    fn models_are_checked_and_reencoded() {
        assert_eq!(
            target("POST", "/v1/models/acme/flux/runs", None),
            Err(Refused::Model("acme/flux".into()))
        );
        let any = |path: &str| check("POST", path, None, &ModelAllowlist::Any);
        assert_eq!(
            any("/v1/models/acme/my%20model/runs").map(|a| a.target),
            Ok("/v1/models/acme/my%20model/runs".into())
        );
        // An encoded slash or dot segment could name another path upstream.
        for path in [
            "/v1/models/runs",
            "/v1/models/acme%2Fx/runs",
            "/v1/models/acme/%2E%2E/runs",
            "/v1/models/acme/../runs",
            "/v1/models/acme//x/runs",
            "/v1/models/acme/%FF/runs",
        ] {
            assert_eq!(any(path), Err(Refused::Path), "{path}");
        }
        // The allowlist compares decoded ids, so encoding cannot sneak a model past it.
        assert_eq!(
            target(
                "POST",
                "/v1/models/black-forest-labs/flux-pro/kontext%20/runs",
                None
            ),
            Err(Refused::Model(format!("{KONTEXT} ")))
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for (method, path) in [
            ("GET", "/v1/runs/a/callback"),
            ("POST", "/v1/runs/a/callback-redeliveries"),
            ("POST", "/v1/callback-secrets"),
            ("DELETE", "/v1/runs/a"),
            ("POST", "/v1/runs/a"),
            ("get", "/v1/health"),
            ("GET", "/v1/models/black-forest-labs/flux-pro/kontext/runs"),
            ("PUT", "/v1/asset-uploads"),
            ("GET", "/v1/runs/..%2Fcallback-secrets"),
            ("GET", "/v1/runs/%61"),
            ("GET", "/v2/health"),
            ("GET", "/v1/health/"),
            ("GET", "v1/health"),
            ("GET", ""),
            ("GET", "/v1/admin/runs/a/cancel"),
        ] {
            assert_eq!(
                target(method, path, None),
                Err(Refused::Path),
                "{method} {path}"
            );
        }
        let long = format!("/v1/runs/{}", "a".repeat(MAX_ID_LEN + 1));
        assert_eq!(target("GET", &long, None), Err(Refused::Path));
    }

    #[test]
    fn create_bodies_are_held_to_the_image_limit() {
        for fine in [
            r#"{"input": {"prompt": "p"}}"#,
            r#"{"input": {"num_images": null}}"#,
            r#"{"input": {"num_images": 2}, "client_ref": "r"}"#,
            r#"{}"#,
        ] {
            assert_eq!(check_create_body(fine.as_bytes(), 2), Ok(()), "{fine}");
        }
        for over in [
            r#"{"input": {"num_images": 3}}"#,
            r#"{"input": {"num_images": 0}}"#,
            r#"{"input": {"num_images": 1.5}}"#,
            r#"{"input": {"num_images": "2"}}"#,
        ] {
            assert_eq!(
                check_create_body(over.as_bytes(), 2),
                Err(BodyRefused::TooManyImages(2)),
                "{over}"
            );
        }
        for unreadable in [
            "",
            "[]",
            r#"{"input": []}"#,
            r#"{"input": {"num_images": 1, "num_images": 4}}"#,
            r#"{"input": {"num_images": 1}, "input": {"num_images": 4}}"#,
        ] {
            assert_eq!(
                check_create_body(unreadable.as_bytes(), 4),
                Err(BodyRefused::Unreadable),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn odd_inputs_never_panic() {
        // A cheap stand-in for the fuzz target: every short string over an alphabet of the
        // characters the rules look at, as path and as query.
        let alphabet = [
            "/", "v1", "runs", "models", "%", "%2", "%2F", "\"", "\\", "=", "&", "q", ":", "é",
            "\0", "a",
        ];
        let mut seen = 0;
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let text = format!("{a}{b}{c}");
                    for method in ["GET", "POST", ""] {
                        let _ = check(method, &text, Some(&text), &ModelAllowlist::Any);
                        let _ = check(
                            method,
                            &format!("/v1/runs{text}"),
                            Some(&text),
                            &kontext_only(),
                        );
                        seen += 1;
                    }
                    let _ = check_create_body(text.as_bytes(), 4);
                }
            }
        }
        assert!(seen > 10_000);
    }

    #[test]
    fn the_mount_is_a_whole_prefix() {
        let mount = DEFAULT_MOUNT;
        assert_eq!(
            strip_mount("/api/runflow/v1/health", mount),
            Some("/v1/health")
        );
        assert_eq!(strip_mount("/api/runflow", mount), Some(""));
        assert_eq!(strip_mount("/api/runflow/", mount), Some("/"));
        assert_eq!(strip_mount("/api/runflow//v1", mount), Some("//v1"));
        assert_eq!(strip_mount("/api/runflow/v1", "/api/runflow/"), Some("/v1"));
        assert_eq!(strip_mount("/v1/health", "/"), Some("/v1/health"));
        assert_eq!(strip_mount("/v1/health", ""), Some("/v1/health"));
        for outside in [
            "/api/runflowx/v1",
            "/api/run",
            "/api",
            "",
            "/API/runflow/v1",
        ] {
            assert_eq!(strip_mount(outside, mount), None, "{outside}");
        }
    }

    #[test]
    fn secrets_are_scrubbed_and_compared_whole() {
        assert_eq!(redact(b"kk k", b"k"), b"[redacted][redacted] [redacted]");
        assert_eq!(redact(b"abc", b""), b"abc");
        assert_eq!(redact(b"ab", b"abc"), b"ab");
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b"b"));
        assert!(!constant_time_eq(b"s3cret ", b"s3cret"));
        assert_eq!(created_run_id(br#"{"id": 7}"#), None);
        assert_eq!(created_run_id(br#"{"status": "queued"}"#), None);
    }

    #[test]
    fn allowlists_parse() {
        assert_eq!(
            ModelAllowlist::parse("a/b,*"),
            Ok(ModelAllowlist::Any),
            "a star allows all"
        );
        assert!(ModelAllowlist::parse(" , ").is_err());
        assert_eq!(
            ModelAllowlist::from_entries(["a/b", "*"], "allowedModels"),
            Ok(ModelAllowlist::Any)
        );
        assert_eq!(
            ModelAllowlist::from_entries([" "], "allowedModels"),
            Err("allowedModels must name at least one model id (or *)".into())
        );
    }
}
