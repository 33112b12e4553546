//! Where calls go: an http(s) base URL, checked once at start-up.

/// The upstream base URL: scheme, host and an optional path prefix the API paths go under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Origin and path, without a trailing slash: an `Allowed::target` is appended to it.
    pub base: String,
    /// Scheme, host and port: what may be shown to a visitor.
    pub origin: String,
}

impl Upstream {
    /// Parses a base URL; `setting` names it in messages (`RUNFLOW_UPSTREAM`, `upstream`).
    ///
    /// # Errors
    /// A message when it is not an http(s) URL without credentials, query or fragment.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::Upstream;
    /// let up = Upstream::parse("http://127.0.0.1:9/__mock/s/x/", "upstream").unwrap();
    /// assert_eq!(up.origin, "http://127.0.0.1:9");
    /// assert_eq!(up.base, "http://127.0.0.1:9/__mock/s/x");
    /// assert!(Upstream::parse("https://api.runflow.io/?a=1", "upstream").is_err());
    /// ```
    pub fn parse(text: &str, setting: &str) -> Result<Upstream, String> {
        let bad = |why: &str| format!("{setting} {text:?} {why}");
        let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(bad("must be an http:// or https:// URL"));
        }
        // Not quoted back: what sits before the `@` may be a key, and this message is logged.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{setting} must not hold credentials: the key is a setting of its own"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let origin = url.origin().ascii_serialization();
        let base = format!("{origin}{}", url.path().trim_end_matches('/'));
        Ok(Upstream { base, origin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_bases_are_taken() {
        let up = Upstream::parse(" https://API.runflow.io:443/ ", "RUNFLOW_UPSTREAM").unwrap();
        assert_eq!(
            up,
            Upstream {
                base: "https://api.runflow.io".into(),
                origin: "https://api.runflow.io".into()
            }
        );
        for bad in [
            "",
            "api.runflow.io",
            "ftp://api.runflow.io",
            "file:///etc/passwd",
            "https://user:pw@api.runflow.io",
            "https://rf_live_x@api.runflow.io",
            "https://api.runflow.io/?x=1",
            "https://api.runflow.io/#x",
        ] {
            let err = Upstream::parse(bad, "upstream").unwrap_err();
            assert!(err.starts_with("upstream "), "{err}");
            assert!(!err.contains("rf_live_x") && !err.contains("pw@"), "{err}");
        }
    }
}
