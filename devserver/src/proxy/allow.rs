//! Which calls the proxy forwards: only the few the client needs, checked part by part and
//! rebuilt from the checked parts, so that what reaches Runflow is exactly what was allowed.

use axum::http::Method;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

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
const MAX_ID_LEN: usize = 128;
/// The search's page size limits, as the API documents them.
const LIMITS: std::ops::RangeInclusive<u32> = 1..=100;

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
    /// use runflow_devserver::ModelAllowlist;
    /// let list = ModelAllowlist::parse(" acme/a, acme/b ").unwrap();
    /// assert_eq!(list, ModelAllowlist::Only(vec!["acme/a".into(), "acme/b".into()]));
    /// assert_eq!(ModelAllowlist::parse("*"), Ok(ModelAllowlist::Any));
    /// ```
    pub fn parse(text: &str) -> Result<ModelAllowlist, String> {
        let models: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        if models.iter().any(|m| m == "*") {
            Ok(ModelAllowlist::Any)
        } else if models.is_empty() {
            Err(format!(
                "RUNFLOW_ALLOWED_MODELS must name at least one model id (or *), got {text:?}"
            ))
        } else {
            Ok(ModelAllowlist::Only(models))
        }
    }

    fn allows(&self, model: &str) -> bool {
        match self {
            ModelAllowlist::Any => true,
            ModelAllowlist::Only(models) => models.iter().any(|m| m == model),
        }
    }
}

/// A call the proxy forwards.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    /// Path and query to append to the upstream base, rebuilt from the checked parts.
    pub target: String,
    /// The run the path names, for the log.
    pub run_id: Option<String>,
    /// A create: its response names the new run.
    pub creates_run: bool,
}

/// Why a call is not forwarded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not one of the calls the client needs (or a malformed one).
    Path,
    /// A create for a model off the allowlist.
    Model(String),
}

/// Decides whether `method path?query` (the path relative to the mount, still percent-encoded)
/// is forwarded.
pub(crate) fn check(
    method: &Method,
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
        (&Method::GET, ["v1", "health"]) => Ok(plain("/v1/health".into(), None)),
        (&Method::GET, ["v1", "runs", id]) if is_id(id) => {
            Ok(plain(format!("/v1/runs/{id}"), Some(id)))
        }
        (&Method::GET, ["v1", "runs"]) => search(query).map(|target| plain(target, None)),
        (&Method::POST, ["v1", "asset-uploads"]) => Ok(plain("/v1/asset-uploads".into(), None)),
        (&Method::POST, ["v1", "asset-uploads", id, "confirmations"]) if is_id(id) => {
            Ok(plain(format!("/v1/asset-uploads/{id}/confirmations"), None))
        }
        (&Method::POST, ["v1", "models", model @ .., "runs"]) if !model.is_empty() => {
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
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
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
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `"..."` with `\` escaping the next character and no other `"`: one value, never an operator.
fn is_quoted_ref(value: &str) -> bool {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '"' => return false,
            c if c.is_control() => return false,
            _ => {}
        }
    }
    !inner.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KONTEXT: &str = "black-forest-labs/flux-pro/kontext";

    fn kontext_only() -> ModelAllowlist {
        ModelAllowlist::Only(vec![KONTEXT.into()])
    }

    fn target(method: Method, path: &str, query: Option<&str>) -> Result<String, Refused> {
        check(&method, path, query, &kontext_only()).map(|a| a.target)
    }

    #[test]
    fn the_clients_calls_are_forwarded_as_sent() {
        let create = check(
            &Method::POST,
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
        let get = check(&Method::GET, "/v1/runs/3f2a-b_9", None, &kontext_only());
        assert_eq!(get.map(|a| a.run_id), Ok(Some("3f2a-b_9".into())));
        for (method, path) in [
            (Method::GET, "/v1/health"),
            (Method::POST, "/v1/asset-uploads"),
            (Method::POST, "/v1/asset-uploads/as_1/confirmations"),
        ] {
            assert_eq!(target(method, path, None).as_deref(), Ok(path));
        }
        // Queries are never passed on where the API takes none.
        assert_eq!(
            target(Method::GET, "/v1/health", Some("x=1")).as_deref(),
            Ok("/v1/health")
        );
    }

    #[test]
    fn searches_by_one_client_ref_only() {
        let search = |q: &str| target(Method::GET, "/v1/runs", Some(q));
        assert_eq!(
            search("q=client_ref%3Ark_1a.b-c&limit=5").as_deref(),
            Ok("/v1/runs?q=client_ref%3Ark_1a.b-c&limit=5")
        );
        assert_eq!(
            search("q=client_ref%3A%22order%207%20OR%20x%22").as_deref(),
            Ok("/v1/runs?q=client_ref%3A%22order%207%20OR%20x%22")
        );
        assert_eq!(
            search("q=client_ref%3A%22a%5C%22b%22").as_deref(),
            Ok("/v1/runs?q=client_ref%3A%22a%5C%22b%22")
        );
        for refused in [
            "",
            "limit=5",
            "q=status%3Asucceeded",
            "q=client_ref%3Aa%20OR%20status%3Asucceeded",
            "q=client_ref%3A%22a%22%20OR%20status%3Asucceeded",
            "q=client_ref%3A%22a%22b%22",
            "q=client_ref%3A%22a%5C%22",
            "q=client_ref%3A",
            "q=client_ref%3Aa&q=client_ref%3Ab",
            "q=client_ref%3Aa&limit=0",
            "q=client_ref%3Aa&limit=101",
            "q=client_ref%3Aa&page=2",
        ] {
            assert_eq!(search(refused), Err(Refused::Path), "{refused}");
        }
    }

    #[test]
    fn models_are_checked_and_reencoded() {
        assert_eq!(
            target(Method::POST, "/v1/models/acme/flux/runs", None),
            Err(Refused::Model("acme/flux".into()))
        );
        let any = |path: &str| check(&Method::POST, path, None, &ModelAllowlist::Any);
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
                Method::POST,
                "/v1/models/black-forest-labs/flux-pro/kontext%20/runs",
                None
            ),
            Err(Refused::Model(format!("{KONTEXT} ")))
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for (method, path) in [
            (Method::GET, "/v1/runs/a/callback"),
            (Method::POST, "/v1/runs/a/callback-redeliveries"),
            (Method::POST, "/v1/callback-secrets"),
            (Method::DELETE, "/v1/runs/a"),
            (Method::POST, "/v1/runs/a"),
            (
                Method::GET,
                "/v1/models/black-forest-labs/flux-pro/kontext/runs",
            ),
            (Method::PUT, "/v1/asset-uploads"),
            (Method::GET, "/v1/runs/..%2Fcallback-secrets"),
            (Method::GET, "/v1/runs/%61"),
            (Method::GET, "/v2/health"),
            (Method::GET, "/v1/health/"),
            (Method::GET, "v1/health"),
            (Method::GET, "/v1/admin/runs/a/cancel"),
        ] {
            assert_eq!(
                target(method.clone(), path, None),
                Err(Refused::Path),
                "{method} {path}"
            );
        }
        let long = format!("/v1/runs/{}", "a".repeat(MAX_ID_LEN + 1));
        assert_eq!(target(Method::GET, &long, None), Err(Refused::Path));
    }

    #[test]
    fn allowlists_parse() {
        assert_eq!(
            ModelAllowlist::parse("a/b,*"),
            Ok(ModelAllowlist::Any),
            "a star allows all"
        );
        assert!(ModelAllowlist::parse(" , ").is_err());
    }
}
