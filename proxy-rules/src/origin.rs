//! The same-origin check: other sites' pages must not drive the proxy from their visitors'
//! browsers. In two steps:
//!
//! 1. The `Host` (or HTTP/2 `:authority`) must be on the allowlist. Comparing `Origin` with `Host`
//!    alone is not enough: under DNS rebinding the attacker's name resolves to this server, and
//!    the browser sends `Host: evil.example:8080` with `Origin: http://evil.example:8080`.
//! 2. An `Origin`, when present, must be `http://` or `https://` followed by that same host. The
//!    scheme is not compared: behind a TLS-terminating reverse proxy the server cannot know which
//!    one the browser used, and the host is what rebinding or a foreign page cannot fake.
//!
//! Calls without `Origin` pass step 2: browsers send it on every cross-origin request, and a
//! script outside a browser could forge it anyway. This is not authentication.
//!
//! ```
//! use runflow_proxy_rules::{origin::HostAllowlist, Names};
//! let hosts = HostAllowlist::parse("demo.example", "PROXY_ALLOWED_HOSTS").unwrap();
//! let page = hosts.check(Some("demo.example"), Some("https://demo.example"), &Names::ENV);
//! assert_eq!(page, Ok(()));
//! let rebound = hosts.check(Some("evil.example"), Some("http://evil.example"), &Names::ENV);
//! assert_eq!(rebound.unwrap_err().code, "HOST_NOT_ALLOWED");
//! ```

use std::net::Ipv6Addr;

use crate::{Names, Refusal};

/// The loopback names the default allows on any port, for dev servers on any `PORT`.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Which `Host` values the proxy answers for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostAllowlist {
    /// Every host: only step 2 (an `Origin` must name the `Host`) applies.
    Any,
    /// `localhost`, `127.0.0.1` and `[::1]` on any port: for development only.
    #[default]
    Loopback,
    /// Exactly these lowercase `host` or `host:port` values, as `parse` normalises them. One
    /// without a port allows only a `Host` without one (the scheme's default port).
    Only(Vec<String>),
}

impl HostAllowlist {
    /// Every host (the JS server's default).
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{origin::HostAllowlist, Names};
    /// assert_eq!(HostAllowlist::any().check(Some("a.example"), None, &Names::JS), Ok(()));
    /// ```
    pub fn any() -> Self {
        HostAllowlist::Any
    }

    /// Parses a comma-separated `host[:port]` list; `setting` names it in messages.
    ///
    /// # Errors
    /// A message naming the entry that is not a `host[:port]`, or when there is none.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::origin::HostAllowlist;
    /// let hosts = HostAllowlist::parse(" Demo.example, demo.example:8443", "PROXY_ALLOWED_HOSTS");
    /// assert_eq!(
    ///     hosts,
    ///     Ok(HostAllowlist::Only(vec!["demo.example".into(), "demo.example:8443".into()]))
    /// );
    /// assert!(HostAllowlist::parse("http://demo.example", "PROXY_ALLOWED_HOSTS").is_err());
    /// ```
    pub fn parse(list: &str, setting: &str) -> Result<Self, String> {
        HostAllowlist::from_entries(list.split(','), setting)
    }

    /// The list from separate `host[:port]` entries (blank ones skipped), as `parse` checks them.
    ///
    /// # Errors
    /// As `parse`.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::origin::HostAllowlist;
    /// let err = HostAllowlist::from_entries(["a.example", "a/b"], "allowedHosts").unwrap_err();
    /// assert_eq!(err, r#"allowedHosts entry "a/b" is not a host[:port]"#);
    /// ```
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a str>,
        setting: &str,
    ) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for value in entries.into_iter().map(str::trim).filter(|v| !v.is_empty()) {
            let Some((host, port)) = split_host(value) else {
                return Err(format!("{setting} entry {value:?} is not a host[:port]"));
            };
            hosts.push(match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            });
        }
        if hosts.is_empty() {
            return Err(format!("{setting} lists no host"));
        }
        Ok(HostAllowlist::Only(hosts))
    }

    /// Whether `authority` (a `Host` value) is on the list.
    fn allows(&self, authority: &str) -> bool {
        let split = || split_host(authority);
        match self {
            HostAllowlist::Any => true,
            HostAllowlist::Loopback => {
                split().is_some_and(|(host, _)| LOOPBACK.contains(&host.as_str()))
            }
            HostAllowlist::Only(hosts) => split().is_some_and(|(host, port)| {
                let exact = match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                };
                hosts.contains(&exact)
            }),
        }
    }

    /// Checks a call's `Host` (`None` when it sent none) and `Origin` (`None` when absent).
    ///
    /// # Errors
    /// 403 `HOST_NOT_ALLOWED` for a host off the list (or none, unless the list is `Any`), 403
    /// `ORIGIN_NOT_ALLOWED` for an `Origin` that is not `http(s)://` and that host.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{origin::HostAllowlist, Names};
    /// let hosts = HostAllowlist::default();
    /// assert_eq!(hosts.check(Some("localhost:8080"), Some("http://localhost:8080"), &Names::ENV), Ok(()));
    /// let foreign = hosts.check(Some("localhost:8080"), Some("https://evil.example"), &Names::ENV);
    /// assert_eq!(foreign.unwrap_err().code, "ORIGIN_NOT_ALLOWED");
    /// ```
    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        names: &Names,
    ) -> Result<(), Refusal> {
        let host = match host {
            Some(host) if self.allows(host) => Some(host),
            None if *self == HostAllowlist::Any => None,
            _ => {
                let message = format!(
                    "This proxy does not answer for this host name: add it to {}",
                    names.allowed_hosts
                );
                return Err(Refusal::envelope(403, "HOST_NOT_ALLOWED", &message));
            }
        };
        let Some(origin) = origin else {
            return Ok(());
        };
        let authority = origin.split_once("://").and_then(|(scheme, rest)| {
            matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https").then_some(rest)
        });
        match (authority, host) {
            (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => Ok(()),
            _ => Err(Refusal::envelope(
                403,
                "ORIGIN_NOT_ALLOWED",
                "Cross-origin calls are refused: serve the page from this proxy's origin",
            )),
        }
    }
}

/// Splits `host[:port]` into the lowercased host (IPv6 in brackets) and the port, or `None`
/// when it is not one: no scheme, path, user info or empty parts.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        let host = value.get(..=end)?;
        let port = match value.get(end + 1..)? {
            "" => None,
            rest => Some(rest.strip_prefix(':')?),
        };
        value.get(1..end)?.parse::<Ipv6Addr>().ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        hosts: &HostAllowlist,
        host: Option<&str>,
        origin: Option<&str>,
    ) -> Result<(), String> {
        hosts.check(host, origin, &Names::ENV).map_err(|r| {
            assert_eq!(r.status, 403);
            r.code
        })
    }

    fn listed(list: &str) -> HostAllowlist {
        HostAllowlist::parse(list, "PROXY_ALLOWED_HOSTS").unwrap()
    }

    #[test]
    fn same_origin_compares_origin_with_an_allowed_host() {
        let hosts = listed("demo.example:8080");
        let host = Some("demo.example:8080");
        for origin in [
            None,
            Some("http://demo.example:8080"),
            Some("https://DEMO.example:8080"),
        ] {
            assert_eq!(check(&hosts, host, origin), Ok(()), "{origin:?}");
        }
        for foreign in [
            "http://evil.example",
            "http://demo.example",
            "null",
            "ftp://demo.example:8080",
            "",
        ] {
            assert_eq!(
                check(&hosts, host, Some(foreign)),
                Err("ORIGIN_NOT_ALLOWED".into()),
                "{foreign:?}"
            );
        }
    }

    #[test]
    fn dns_rebinding_is_refused_by_the_host_allowlist() {
        // The attacker's name resolves to this server: Host and Origin agree, and are foreign.
        for hosts in [HostAllowlist::default(), listed("demo.example:8080")] {
            let rebound = check(
                &hosts,
                Some("evil.example:8080"),
                Some("http://evil.example:8080"),
            );
            assert_eq!(rebound, Err("HOST_NOT_ALLOWED".into()));
            let no_host = check(&hosts, None, Some("http://demo.example:8080"));
            assert_eq!(no_host, Err("HOST_NOT_ALLOWED".into()), "no Host at all");
        }
    }

    #[test]
    fn the_default_allows_loopback_on_any_port_only() {
        let hosts = HostAllowlist::default();
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:9999",
            "[::1]",
            "[::1]:8080",
        ] {
            let origin = format!("http://{host}");
            assert_eq!(check(&hosts, Some(host), Some(&origin)), Ok(()), "{host}");
        }
        for host in [
            "localhost.evil.example",
            "127.0.0.2:8080",
            "[::2]:8080",
            "localhost:",
            "localhost:+80",
            "localhost:99999",
            "user@localhost",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert_eq!(
                check(&hosts, Some(host), None),
                Err("HOST_NOT_ALLOWED".into()),
                "{host}"
            );
        }
    }

    #[test]
    fn listed_hosts_match_their_port_exactly() {
        let hosts = listed(" Demo.example , demo.example:8443,[::1]:9");
        for ok in ["demo.example", "demo.example:8443", "[::1]:9"] {
            assert_eq!(check(&hosts, Some(ok), None), Ok(()), "{ok}");
        }
        for refused in ["demo.example:80", "demo.example:844", "localhost", "[::1]"] {
            assert_eq!(
                check(&hosts, Some(refused), None),
                Err("HOST_NOT_ALLOWED".into()),
                "{refused}"
            );
        }
        for bad in [
            "",
            " , ",
            "http://demo.example",
            "demo.example/x",
            "a:b",
            "[zz]:1",
        ] {
            assert!(HostAllowlist::parse(bad, "X").is_err(), "{bad:?}");
        }
        assert_eq!(
            HostAllowlist::parse(" , ", "PROXY_ALLOWED_HOSTS"),
            Err("PROXY_ALLOWED_HOSTS lists no host".into())
        );
        assert_eq!(
            HostAllowlist::from_entries(["a.example", " ", "B.example:1"], "allowedHosts"),
            Ok(HostAllowlist::Only(vec![
                "a.example".into(),
                "b.example:1".into()
            ]))
        );
        assert!(HostAllowlist::from_entries([], "allowedHosts").is_err());
    }

    #[test]
    fn any_host_still_holds_origin_to_it() {
        let any = HostAllowlist::any();
        assert_eq!(check(&any, Some("whatever.example:1"), None), Ok(()));
        assert_eq!(check(&any, None, None), Ok(()));
        assert_eq!(
            check(&any, Some("a.example"), Some("https://a.example")),
            Ok(())
        );
        for (host, origin) in [
            (Some("a.example"), "https://b.example"),
            (None, "https://a.example"),
        ] {
            assert_eq!(
                check(&any, host, Some(origin)),
                Err("ORIGIN_NOT_ALLOWED".into()),
                "{host:?} {origin}"
            );
        }
    }

    #[test]
    fn messages_name_the_servers_setting() {
        let refusal = HostAllowlist::default()
            .check(Some("evil.example"), None, &Names::JS)
            .unwrap_err();
        assert_eq!(
            refusal.message,
            "This proxy does not answer for this host name: add it to allowedHosts"
        );
        let refusal = HostAllowlist::default()
            .check(Some("evil.example"), None, &Names::ENV)
            .unwrap_err();
        assert_eq!(
            refusal.body(),
            r#"{"code":"HOST_NOT_ALLOWED","errors":null,"message":"This proxy does not answer for this host name: add it to PROXY_ALLOWED_HOSTS"}"#
        );
    }
}
