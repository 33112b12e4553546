//! `createProxy`'s options, read with serde-wasm-bindgen: the server build can afford the crate,
//! and a typo'd or mistyped option is refused by name (`rateLimit.burst: invalid type ...`).

use js_sys::Function;
use runflow_proxy_rules::limit::RateLimit;
use runflow_proxy_rules::origin::HostAllowlist;
use runflow_proxy_rules::{
    API_MAX_IMAGES, DEFAULT_MAX_BODY_BYTES, DEFAULT_MODEL, DEFAULT_MOUNT, DEFAULT_TIMEOUT_MS,
    ModelAllowlist, Names, Policy, Upstream,
};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::Error;

/// The options as JS passes them; functions are kept as JS values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    api_key: Option<String>,
    upstream: Option<String>,
    mount_path: Option<String>,
    allowed_models: Option<Models>,
    max_body_bytes: Option<f64>,
    allowed_hosts: Option<Vec<String>>,
    same_origin: Option<bool>,
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    client_ip: JsValue,
    rate_limit: Option<RateSwitch>,
    creates_per_minute: Option<CreatesSwitch>,
    create_burst: Option<u32>,
    max_images_per_run: Option<u64>,
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    authenticate: JsValue,
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    on_log: JsValue,
    timeout_ms: Option<f64>,
    organization_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Models {
    Every(String),
    Only(Vec<String>),
}

/// `false` for off (`true` for the default), or a setting.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected false, or { perSecond: number, burst: number }"
)]
enum RateSwitch {
    Flag(bool),
    Set(RawRate),
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a number of creates per minute, or false"
)]
enum CreatesSwitch {
    Flag(bool),
    Set(f64),
}

/// Every option's name: serde-wasm-bindgen looks up only the fields it knows, so
/// `deny_unknown_fields` cannot see a typo; this list can.
const KNOWN: [&str; 16] = [
    "apiKey",
    "upstream",
    "mountPath",
    "allowedModels",
    "maxBodyBytes",
    "allowedHosts",
    "sameOrigin",
    "clientIp",
    "rateLimit",
    "createsPerMinute",
    "createBurst",
    "maxImagesPerRun",
    "authenticate",
    "onLog",
    "timeoutMs",
    "organizationId",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRate {
    per_second: f64,
    burst: u32,
}

/// The proxy's settings, checked.
pub struct ProxySettings {
    pub policy: Policy,
    /// `None` until configured: every call is then answered 500 (see `proxy::NO_KEY`).
    pub api_key: Option<String>,
    pub upstream: Upstream,
    pub mount: String,
    pub timeout_ms: u32,
    pub organization_id: Option<String>,
    pub client_ip: Option<Function>,
    pub authenticate: Option<Function>,
    pub on_log: Option<Function>,
}

impl ProxySettings {
    /// Reads and checks `createProxy`'s options.
    ///
    /// # Errors
    /// `validation_error` naming the option at fault (never showing the key).
    pub fn read(options: JsValue) -> Result<ProxySettings, Error> {
        if !options.is_object() {
            return Err(Error::invalid(
                "options",
                "createProxy needs an options object with at least { apiKey }.",
            ));
        }
        for key in js_sys::Object::keys(options.unchecked_ref::<js_sys::Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !KNOWN.contains(&key.as_str()) {
                return Err(Error::invalid(
                    &key,
                    format!(
                        "createProxy has no option `{key}`; its options are {}.",
                        KNOWN.join(", ")
                    ),
                ));
            }
        }
        let deserializer = serde_wasm_bindgen::Deserializer::from(options);
        let raw: Raw = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                "options".into()
            } else {
                field
            };
            let why = e.inner().to_string();
            let why = why.strip_prefix("Error: ").unwrap_or(&why);
            Error::invalid(&field, format!("createProxy option `{field}`: {why}."))
        })?;
        let api_key = raw
            .api_key
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty());
        let upstream = Upstream::parse(
            raw.upstream
                .as_deref()
                .unwrap_or(runflow_proxy_rules::DEFAULT_UPSTREAM),
            "upstream",
        )
        .map_err(|message| Error::invalid("upstream", message))?;
        let mount = raw.mount_path.as_deref().unwrap_or(DEFAULT_MOUNT);
        if !mount.starts_with('/') || mount.contains(['?', '#']) {
            return Err(Error::invalid(
                "mountPath",
                "`mountPath` must be a path such as \"/api/runflow\".",
            ));
        }
        let mount = mount.trim_end_matches('/').to_owned();
        let models = match raw.allowed_models {
            None => ModelAllowlist::Only(vec![DEFAULT_MODEL.into()]),
            Some(Models::Every(star)) if star == "*" => ModelAllowlist::Any,
            Some(Models::Every(one)) => ModelAllowlist::parse(&one).map_err(|_| {
                Error::invalid(
                    "allowedModels",
                    "`allowedModels` must be an array of model ids, or \"*\".",
                )
            })?,
            Some(Models::Only(list)) => ModelAllowlist::parse(&list.join(",")).map_err(|_| {
                Error::invalid(
                    "allowedModels",
                    "`allowedModels` must name at least one model id (or be \"*\").",
                )
            })?,
        };
        let max_body_bytes = match raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) if n.fract() == 0.0 && (1.0..=1e12).contains(&n) => n as u64,
            Some(_) => {
                return Err(Error::invalid(
                    "maxBodyBytes",
                    "`maxBodyBytes` must be a whole number of bytes, at least 1.",
                ));
            }
        };
        let timeout_ms = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT_MS as u32,
            Some(ms) if ms >= 1.0 && ms <= f64::from(u32::MAX) => ms as u32,
            Some(_) => {
                return Err(Error::invalid(
                    "timeoutMs",
                    "`timeoutMs` must be a number of ms from 1 to 4294967295.",
                ));
            }
        };
        let hosts = match (raw.same_origin, raw.allowed_hosts) {
            (Some(false), _) => None,
            (_, None) => Some(HostAllowlist::any()),
            (_, Some(list)) => Some(
                HostAllowlist::from_entries(list.iter().map(String::as_str), "allowedHosts")
                    .map_err(|message| Error::invalid("allowedHosts", message))?,
            ),
        };
        let rate = match raw.rate_limit {
            None | Some(RateSwitch::Flag(true)) => Some(RateLimit::DEFAULT),
            Some(RateSwitch::Flag(false)) => None,
            Some(RateSwitch::Set(RawRate { per_second, burst })) => {
                if !(per_second.is_finite() && per_second > 0.0) || burst == 0 {
                    return Err(Error::invalid(
                        "rateLimit",
                        "`rateLimit` must be { perSecond: a positive number, burst: at least 1 }, or false.",
                    ));
                }
                Some(RateLimit { per_second, burst })
            }
        };
        let burst = match raw.create_burst {
            None => RateLimit::CREATES.burst,
            Some(0) => {
                return Err(Error::invalid(
                    "createBurst",
                    "`createBurst` must be at least 1.",
                ));
            }
            Some(n) => n,
        };
        let creates = match raw.creates_per_minute {
            None | Some(CreatesSwitch::Flag(true)) => Some(RateLimit {
                burst,
                ..RateLimit::CREATES
            }),
            Some(CreatesSwitch::Flag(false)) => None,
            Some(CreatesSwitch::Set(0.0)) => None,
            Some(CreatesSwitch::Set(n)) if n.is_finite() && n > 0.0 => Some(RateLimit {
                per_second: n / 60.0,
                burst,
            }),
            Some(CreatesSwitch::Set(_)) => {
                return Err(Error::invalid(
                    "createsPerMinute",
                    "`createsPerMinute` must be a positive number, or false (or 0) for no budget.",
                ));
            }
        };
        let max_images = raw.max_images_per_run.unwrap_or(API_MAX_IMAGES);
        if !(1..=API_MAX_IMAGES).contains(&max_images) {
            return Err(Error::invalid(
                "maxImagesPerRun",
                "`maxImagesPerRun` must be from 1 to 4 (the API's maximum).",
            ));
        }
        let function = |value: JsValue, name: &str| -> Result<Option<Function>, Error> {
            if value.is_undefined() || value.is_null() {
                return Ok(None);
            }
            value
                .dyn_into::<Function>()
                .map(Some)
                .map_err(|_| Error::invalid(name, format!("`{name}` must be a function.")))
        };
        Ok(ProxySettings {
            policy: Policy::new(
                models,
                hosts,
                max_body_bytes,
                max_images,
                rate,
                creates,
                Names::JS,
            ),
            api_key,
            upstream,
            mount,
            timeout_ms,
            organization_id: raw
                .organization_id
                .map(|org| org.trim().to_owned())
                .filter(|org| !org.is_empty()),
            client_ip: function(raw.client_ip, "clientIp")?,
            authenticate: function(raw.authenticate, "authenticate")?,
            on_log: function(raw.on_log, "onLog")?,
        })
    }
}
