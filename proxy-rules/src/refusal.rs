//! What the proxy answers instead of forwarding: status, code, message and JSON body, the same
//! from every server built on these rules.

use std::time::Duration;

use serde::Serialize;

use crate::{BodyRefused, Refused};

/// The setting names refusal messages point at, so that each server names its own knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    /// The largest body forwarded.
    pub max_body_bytes: &'static str,
    /// The models whose runs may be created.
    pub allowed_models: &'static str,
    /// The create budget.
    pub creates_per_minute: &'static str,
    /// The largest `input.num_images`.
    pub max_images_per_run: &'static str,
    /// The `Host` allowlist.
    pub allowed_hosts: &'static str,
}

impl Names {
    /// The dev server's environment variables.
    pub const ENV: Names = Names {
        max_body_bytes: "PROXY_MAX_BODY_BYTES",
        allowed_models: "RUNFLOW_ALLOWED_MODELS",
        creates_per_minute: "PROXY_CREATES_PER_MINUTE",
        max_images_per_run: "PROXY_MAX_IMAGES_PER_RUN",
        allowed_hosts: "PROXY_ALLOWED_HOSTS",
    };

    /// The options of the JS server's `createProxy`.
    pub const JS: Names = Names {
        max_body_bytes: "maxBodyBytes",
        allowed_models: "allowedModels",
        creates_per_minute: "createsPerMinute",
        max_images_per_run: "maxImagesPerRun",
        allowed_hosts: "allowedHosts",
    };
}

/// Which JSON a refusal is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The API's standard envelope, `{"code","errors","message"}`.
    Envelope,
    /// The shape of Runflow's own proxy's refusals, `{"code","error"}`, which the client parses.
    Proxy,
}

/// A call refused before or instead of forwarding: what every server answers, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// A machine-readable code, e.g. `ORIGIN_NOT_ALLOWED` (also the log's reason).
    pub code: String,
    /// What the caller can do about it.
    pub message: String,
    /// Whole seconds for a `Retry-After` header, when there should be one.
    pub retry_after: Option<u64>,
    shape: Shape,
}

/// The envelope as serialised: fields in this order, so the bytes do not depend on serde_json's
/// `preserve_order` feature (today's order is the sorted one).
#[derive(Serialize)]
struct EnvelopeBody<'a> {
    code: &'a str,
    errors: (),
    message: &'a str,
}

#[derive(Serialize)]
struct ProxyBody<'a> {
    code: &'a str,
    error: &'a str,
}

impl Refusal {
    /// A refusal answered in the standard envelope `{"code","message","errors":null}`.
    ///
    /// # Example
    /// ```
    /// let no = runflow_proxy_rules::Refusal::envelope(403, "NO", "Not you");
    /// assert_eq!(no.body(), r#"{"code":"NO","errors":null,"message":"Not you"}"#);
    /// ```
    pub fn envelope(status: u16, code: &str, message: &str) -> Refusal {
        Refusal {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            shape: Shape::Envelope,
        }
    }

    fn proxy(status: u16, code: &str, message: String) -> Refusal {
        Refusal {
            status,
            code: code.into(),
            message,
            retry_after: None,
            shape: Shape::Proxy,
        }
    }

    fn retrying_in(self, seconds: u64) -> Refusal {
        Refusal {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// The JSON body to answer with (`Content-Type: application/json`).
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{Names, Refusal, Refused};
    /// let no = Refusal::route("DELETE", "/v1/runs/a", Refused::Path, &Names::JS);
    /// assert_eq!(
    ///     no.body(),
    ///     r#"{"code":"path_not_allowed","error":"DELETE /v1/runs/a is not forwarded by this proxy"}"#
    /// );
    /// ```
    pub fn body(&self) -> String {
        let body = match self.shape {
            Shape::Envelope => serde_json::to_string(&EnvelopeBody {
                code: &self.code,
                errors: (),
                message: &self.message,
            }),
            Shape::Proxy => serde_json::to_string(&ProxyBody {
                code: &self.code,
                error: &self.message,
            }),
        };
        // Two string fields always serialise; the fallback only keeps this free of panics.
        body.unwrap_or_else(|_| String::from("{}"))
    }

    /// A call off the allowlist: 403 `path_not_allowed`, or `model_not_allowed` for a create of
    /// a model off the list. `path` is the one under the mount, as received.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{Names, Refusal, Refused};
    /// let no = Refusal::route("POST", "/v1/models/a/runs", Refused::Model("a".into()), &Names::ENV);
    /// assert_eq!((no.status, no.code.as_str()), (403, "model_not_allowed"));
    /// assert!(no.message.ends_with("(RUNFLOW_ALLOWED_MODELS)"));
    /// ```
    pub fn route(method: &str, path: &str, refused: Refused, names: &Names) -> Refusal {
        match refused {
            Refused::Path => Refusal::proxy(
                403,
                "path_not_allowed",
                format!("{method} {path} is not forwarded by this proxy"),
            ),
            Refused::Model(model) => Refusal::proxy(
                403,
                "model_not_allowed",
                format!(
                    "Model {model:?} is not allowed by this proxy ({})",
                    names.allowed_models
                ),
            ),
        }
    }

    /// Over the per-client rate of calls: 429 `RATE_LIMITED`, to retry after `wait`.
    ///
    /// # Example
    /// ```
    /// let no = runflow_proxy_rules::Refusal::rate_limited(std::time::Duration::from_millis(1200));
    /// assert_eq!((no.status, no.retry_after), (429, Some(2)));
    /// ```
    pub fn rate_limited(wait: Duration) -> Refusal {
        let seconds = whole_seconds(wait);
        let message = format!("Too many requests through this proxy; retry in {seconds} s");
        Refusal::envelope(429, "RATE_LIMITED", &message).retrying_in(seconds)
    }

    /// Over the per-client budget of creates: 429 `create_budget_exceeded`, after `wait`.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{Names, Refusal};
    /// let no = Refusal::create_budget(std::time::Duration::from_secs(12), &Names::JS);
    /// assert_eq!((no.code.as_str(), no.retry_after), ("create_budget_exceeded", Some(12)));
    /// assert!(no.message.contains("(createsPerMinute)"));
    /// ```
    pub fn create_budget(wait: Duration, names: &Names) -> Refusal {
        let seconds = whole_seconds(wait);
        let message = format!(
            "This proxy's budget of runs per visitor is spent ({}); retry in {seconds} s",
            names.creates_per_minute
        );
        Refusal::proxy(429, "create_budget_exceeded", message).retrying_in(seconds)
    }

    /// A body over `max_body_bytes`, declared or as it streamed: 413 `PAYLOAD_TOO_LARGE`.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{Names, Refusal};
    /// let no = Refusal::too_large(1000, &Names::ENV);
    /// assert_eq!((no.status, no.code.as_str()), (413, "PAYLOAD_TOO_LARGE"));
    /// ```
    pub fn too_large(max_body_bytes: u64, names: &Names) -> Refusal {
        let message = format!(
            "The request body is over this proxy's {max_body_bytes} byte limit ({}); upload large images as assets instead",
            names.max_body_bytes
        );
        Refusal::envelope(413, "PAYLOAD_TOO_LARGE", &message)
    }

    /// A create whose body `check_create_body` refused: 403 `too_many_images`, or 400
    /// `invalid_create_body` for one it could not read.
    ///
    /// # Example
    /// ```
    /// use runflow_proxy_rules::{BodyRefused, Names, Refusal};
    /// let no = Refusal::create_body(BodyRefused::Unreadable, &Names::ENV);
    /// assert_eq!((no.status, no.code.as_str()), (400, "invalid_create_body"));
    /// ```
    pub fn create_body(refused: BodyRefused, names: &Names) -> Refusal {
        match refused {
            BodyRefused::TooManyImages(max) => Refusal::proxy(
                403,
                "too_many_images",
                format!(
                    "input.num_images must be an integer from 1 to {max} through this proxy ({})",
                    names.max_images_per_run
                ),
            ),
            BodyRefused::Unreadable => Refusal::proxy(
                400,
                "invalid_create_body",
                "A create's body must be a JSON object whose input is an object with each field once"
                    .into(),
            ),
        }
    }

    /// The upstream could not be connected to: 502 `BAD_GATEWAY`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_proxy_rules::Refusal::unreachable().status, 502);
    /// ```
    pub fn unreachable() -> Refusal {
        Refusal::envelope(
            502,
            "BAD_GATEWAY",
            "Runflow could not be reached; try again shortly",
        )
    }

    /// The upstream did not answer within the timeout: 504 `GATEWAY_TIMEOUT`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_proxy_rules::Refusal::timed_out().code, "GATEWAY_TIMEOUT");
    /// ```
    pub fn timed_out() -> Refusal {
        Refusal::envelope(
            504,
            "GATEWAY_TIMEOUT",
            "Runflow did not answer in time; a create may still have gone through",
        )
    }

    /// The connection broke after the request may have been sent: 502 `BAD_GATEWAY`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_proxy_rules::Refusal::connection_failed().status, 502);
    /// ```
    pub fn connection_failed() -> Refusal {
        Refusal::envelope(
            502,
            "BAD_GATEWAY",
            "The connection to Runflow failed; a create may still have gone through",
        )
    }

    /// An upstream error body over `ERROR_BODY_LIMIT`, not passed on: the upstream's `status`
    /// with `UPSTREAM_ERROR_TOO_LARGE`.
    ///
    /// # Example
    /// ```
    /// let no = runflow_proxy_rules::Refusal::error_too_large(422);
    /// assert_eq!((no.status, no.code.as_str()), (422, "UPSTREAM_ERROR_TOO_LARGE"));
    /// ```
    pub fn error_too_large(status: u16) -> Refusal {
        Refusal::envelope(
            status,
            "UPSTREAM_ERROR_TOO_LARGE",
            "Runflow's error answer was too long to pass on",
        )
    }

    /// An application's own authenticate hook said no: 401 `UNAUTHENTICATED`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_proxy_rules::Refusal::unauthenticated().status, 401);
    /// ```
    pub fn unauthenticated() -> Refusal {
        Refusal::envelope(401, "UNAUTHENTICATED", "This proxy requires you to sign in")
    }

    /// A call without the shared secret in `headers::SECRET_HEADER`: 401 `PROXY_SECRET_REQUIRED`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(runflow_proxy_rules::Refusal::secret_required().code, "PROXY_SECRET_REQUIRED");
    /// ```
    pub fn secret_required() -> Refusal {
        Refusal::envelope(
            401,
            "PROXY_SECRET_REQUIRED",
            "This proxy requires the X-Proxy-Secret header with the shared secret",
        )
    }
}

/// Whole seconds, rounded up: the client must not come back before a token is there.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_todays_bytes() {
        // The standard envelope, with its keys sorted as the dev server has always sent them.
        assert_eq!(
            Refusal::rate_limited(Duration::from_millis(1)).body(),
            r#"{"code":"RATE_LIMITED","errors":null,"message":"Too many requests through this proxy; retry in 1 s"}"#
        );
        assert_eq!(
            Refusal::create_body(BodyRefused::TooManyImages(1), &Names::ENV).body(),
            r#"{"code":"too_many_images","error":"input.num_images must be an integer from 1 to 1 through this proxy (PROXY_MAX_IMAGES_PER_RUN)"}"#
        );
        // Quotes and control characters in a model id stay inside the JSON string.
        let odd = Refusal::route("POST", "/p", Refused::Model("a\"\n".into()), &Names::ENV);
        let parsed: serde_json::Value = serde_json::from_str(&odd.body()).unwrap();
        assert_eq!(parsed["error"], odd.message.as_str());
        assert_eq!(parsed["code"], "model_not_allowed");
    }

    #[test]
    fn shapes_follow_todays_answers() {
        let proxy_shaped = [
            Refusal::route("GET", "/v1/x", Refused::Path, &Names::ENV),
            Refusal::route("GET", "/v1/x", Refused::Model("m".into()), &Names::ENV),
            Refusal::create_budget(Duration::from_secs(1), &Names::ENV),
            Refusal::create_body(BodyRefused::Unreadable, &Names::ENV),
            Refusal::create_body(BodyRefused::TooManyImages(2), &Names::ENV),
        ];
        for refusal in &proxy_shaped {
            let body: serde_json::Value = serde_json::from_str(&refusal.body()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"code": refusal.code, "error": refusal.message})
            );
        }
        let enveloped = [
            Refusal::rate_limited(Duration::from_secs(1)),
            Refusal::too_large(10, &Names::ENV),
            Refusal::unreachable(),
            Refusal::timed_out(),
            Refusal::connection_failed(),
            Refusal::error_too_large(500),
            Refusal::unauthenticated(),
            Refusal::secret_required(),
        ];
        for refusal in &enveloped {
            let body: serde_json::Value = serde_json::from_str(&refusal.body()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"code": refusal.code, "message": refusal.message, "errors": null})
            );
        }
        let statuses: Vec<u16> = enveloped.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 413, 502, 504, 502, 500, 401, 401]);
    }

    #[test]
    fn messages_name_each_servers_settings() {
        let js = [
            Refusal::route("GET", "/p", Refused::Model("m".into()), &Names::JS),
            Refusal::create_budget(Duration::from_secs(1), &Names::JS),
            Refusal::too_large(10, &Names::JS),
            Refusal::create_body(BodyRefused::TooManyImages(2), &Names::JS),
        ];
        let named: Vec<bool> = js
            .iter()
            .zip([
                "(allowedModels)",
                "(createsPerMinute)",
                "(maxBodyBytes)",
                "(maxImagesPerRun)",
            ])
            .map(|(refusal, name)| refusal.message.contains(name))
            .collect();
        assert_eq!(named, [true; 4]);
        for refusal in &js {
            assert!(!refusal.message.contains("PROXY_"), "{}", refusal.message);
        }
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        let after = |ms| Refusal::rate_limited(Duration::from_millis(ms)).retry_after;
        assert_eq!(after(1), Some(1));
        assert_eq!(after(1000), Some(1));
        assert_eq!(after(1001), Some(2));
        assert_eq!(
            Refusal::create_budget(Duration::MAX, &Names::ENV).retry_after,
            Some(u64::MAX)
        );
        assert_eq!(Refusal::too_large(1, &Names::ENV).retry_after, None);
    }
}
