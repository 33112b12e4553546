//! The fuzz targets' bodies, one plain function per target, shared by the libFuzzer binaries in
//! `fuzz/fuzz_targets/` and the stable replay of `fuzz/corpus/<target>/` in
//! `tests/fuzz_corpus.rs`. No panic is the baseline; each also asserts the invariants that are
//! cheap to check, against a small reference written here.
#![allow(dead_code)] // Each fuzz target uses one of them.

use hmac::{Hmac, Mac};
use runflow_kontext::callback::verify_signature;
use runflow_kontext::error::{Error, ErrorCode, classify};
use runflow_kontext::input::{
    validate_create, validate_kontext, validate_kontext_without_image, validate_untyped,
};
use runflow_kontext::policy::{DEFAULT_RETRY, parse_retry_after};
use runflow_kontext::run::{Run, Status, parse_run, parse_search, run_from_json};
use serde_json::Value;
use sha2::Sha256;

/// The fields `validate_kontext` knows.
pub const INPUT_FIELDS: &[&str] = &[
    "prompt",
    "image_url",
    "image",
    "aspect_ratio",
    "num_images",
    "guidance_scale",
    "output_format",
    "safety_tolerance",
    "enhance_prompt",
    "seed",
    "sync_mode",
];

/// The text the fuzzer gave, invalid UTF-8 replaced (the client only ever sees text).
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `data` split at its first `\n`: the line and the rest (empty when there is no newline).
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// A run's invariants: a non-empty id, the status read from its wire spelling, and a normal form
/// that normalising again leaves as it is.
pub fn check_run(run: &Run) {
    assert!(!run.id.is_empty(), "a run without an id: {run:?}");
    assert_eq!(run.status, Status::parse(&run.status_code));
    if run.status.is_failure() {
        assert!(run.failure.is_some(), "a failed run without a failure");
    }
    for image in run.output.iter().flat_map(|o| &o.outputs) {
        let scheme = image
            .url
            .get(..11)
            .unwrap_or(&image.url)
            .to_ascii_lowercase();
        assert!(
            ["https://", "http://", "data:image/", "blob:"]
                .iter()
                .any(|s| scheme.starts_with(s)),
            "an output URL that could run script: {}",
            image.url
        );
        assert!(image.width.is_none_or(|w| w > 0.0));
        assert!(image.height.is_none_or(|h| h > 0.0));
    }
    let json = run.to_json();
    let again = run_from_json(200, &json)
        .expect("a run's normal form is a run")
        .to_json();
    assert_eq!(
        without_failure(&again),
        without_failure(&json),
        "normalising the normal form changed it"
    );
    // Known (see the report): `failure` in the normal form is not one of the wire shapes read
    // back, so normalising again keeps it only as the empty failure of a failed run.
    let empty = serde_json::json!({"code": null, "stage": null, "message": null});
    let expected = if run.status.is_failure() {
        empty
    } else {
        Value::Null
    };
    assert!(again["failure"] == json["failure"] || again["failure"] == expected);
}

/// A run's normal form without its `failure`.
pub fn without_failure(json: &Value) -> Value {
    let mut json = json.clone();
    if let Some(object) = json.as_object_mut() {
        object.remove("failure");
    }
    json
}

/// `parse_run`, `parse_search` and `run_from_json` on arbitrary text.
pub fn run_parsing(data: &[u8]) {
    let body = text(data);
    let status = 200;
    match parse_run(status, &body) {
        Ok(run) => check_run(&run),
        Err(error) => {
            assert_eq!(error.code, ErrorCode::InvalidResponse);
            assert_eq!(error.status, Some(status));
        }
    }
    match parse_search(status, &body) {
        Ok(runs) => runs.iter().for_each(check_run),
        Err(error) => assert_eq!(error.code, ErrorCode::InvalidResponse),
    }
    if let Ok(value) = serde_json::from_str::<Value>(&body) {
        // Also each member, so a corpus entry that wraps runs exercises them directly.
        let members: Vec<Value> = match &value {
            Value::Array(items) => items.clone(),
            Value::Object(map) => map.values().cloned().collect(),
            _ => Vec::new(),
        };
        for candidate in std::iter::once(&value).chain(&members) {
            if let Ok(run) = run_from_json(status, candidate) {
                check_run(&run);
            }
        }
    }
}

/// `Error::from_response` with the status in the first two bytes (big-endian) and the body
/// after them.
pub fn error_envelope(data: &[u8]) {
    let (status, rest) = match data {
        [high, low, rest @ ..] => (u16::from_be_bytes([*high, *low]), rest),
        _ => (0, data),
    };
    let body = text(rest);
    let retry_after = (status % 7 == 0).then_some(u64::from(status) * 1000);
    let error = Error::from_response(status, &body, Some("req_1".into()), retry_after);
    assert_eq!(error.status, Some(status));
    assert_eq!(error.request_id.as_deref(), Some("req_1"));
    assert_eq!(error.retry_after_ms, retry_after);
    assert_eq!(error.code, classify(status, error.server_code.as_deref()));
    assert_eq!(
        error.retryable,
        error.code.retryable() && status != 501,
        "{error:?}"
    );
    let prefix = ["HTTP ", &status.to_string(), ". "].concat();
    assert!(error.message.starts_with(&prefix), "{}", error.message);
    // The JS shape always has the code, and the status as a number.
    let props = error.to_json();
    assert_eq!(props["code"], error.code.as_str());
    assert_eq!(props["status"], u64::from(status));
    // Redaction of echoed keys is no longer here: the JS edge does it (js/edge.js `redact`).
}

/// The Retry-After reference: delta seconds (digits only, RFC 9110), else an HTTP date.
fn retry_after_reference(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Some(seconds) = delta_seconds(value) {
        return Some(seconds.saturating_mul(1000));
    }
    http_date(value)?.checked_sub(now_ms)
}

/// `1*DIGIT` as a number (`u64::MAX` past it: absurd, not unreadable); `None` for anything else.
fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

/// An HTTP date as Unix ms, as the tests' `parse_date`.
pub fn http_date(value: &str) -> Option<u64> {
    let at = httpdate::parse_http_date(value).ok()?;
    u64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// `parse_retry_after` with `now` in the first eight bytes (little-endian) and the header after.
pub fn retry_after(data: &[u8]) {
    let (now_ms, rest) = match data.split_first_chunk::<8>() {
        Some((now, rest)) => (u64::from_le_bytes(*now), rest),
        None => (0, data),
    };
    let value = text(rest);
    for now in [now_ms, 0, 1_445_412_480_000] {
        let parsed = parse_retry_after(&value, now, http_date);
        assert_eq!(
            parsed,
            retry_after_reference(&value, now),
            "{value:?} at {now}"
        );
        // Whatever it gave, the policy waits exactly that long.
        if let Some(ms) = parsed {
            assert_eq!(DEFAULT_RETRY.delay_ms(0, Some(ms), 0.5), ms);
        }
    }
    // Dates never panic however odd the parser's answer.
    assert_eq!(
        parse_retry_after(&value, u64::MAX, |_| Some(0)).is_some(),
        delta_seconds(value.trim()).is_some()
    );
}

/// HMAC-SHA256 of `body` under `secret`, in lowercase hex.
pub fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The documented check, written plainly: the trimmed header, less an optional `sha256=`, is 64
/// hex digits (either case) equal to the HMAC under one of the non-empty secrets.
pub fn signature_reference(body: &[u8], header: &str, secrets: &[&str]) -> bool {
    let header = header.trim();
    let hex = header.strip_prefix("sha256=").unwrap_or(header);
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && secrets
            .iter()
            .any(|secret| !secret.is_empty() && sign(body, secret).eq_ignore_ascii_case(hex))
}

/// `verify_signature` with the header on the first line, the secrets (comma-separated) on the
/// second, and the body after.
pub fn signature_header(data: &[u8]) {
    let (header, rest) = line(data);
    let (secrets, body) = line(rest);
    let header = text(header);
    let secrets = text(secrets);
    let secrets: Vec<&str> = secrets.split(',').take(4).collect();
    // `+` for a pair's leading `0` once passed (fixed): fuzz/seeds keeps that input.
    assert_eq!(
        verify_signature(body, &header, &secrets),
        signature_reference(body, &header, &secrets),
        "header {header:?}, secrets {secrets:?}"
    );
    if let Some(secret) = secrets.iter().find(|s| !s.is_empty()) {
        let good = sign(body, secret);
        assert!(verify_signature(body, &good, &secrets));
        assert!(verify_signature(
            body,
            &[" sha256=", &good, "\t"].concat(),
            &secrets
        ));
        let mut tampered = body.to_vec();
        match tampered.first_mut() {
            Some(first) => *first ^= 1,
            None => tampered.push(0),
        }
        // Another secret matching the tampered body would be a collision: never.
        assert!(!verify_signature(&tampered, &good, &secrets));
    }
}

/// Whether a validated wire input has the documented shape.
fn check_wire(wire: &Value, image_given: bool) {
    let object = wire.as_object().expect("the wire input is an object");
    assert!(
        object
            .keys()
            .all(|k| INPUT_FIELDS.contains(&k.as_str()) && k != "image")
    );
    assert!(object.values().all(|v| !v.is_null()));
    assert!(
        object["prompt"]
            .as_str()
            .is_some_and(|p| !p.trim().is_empty())
    );
    assert_eq!(object.contains_key("image_url"), !image_given);
    if let Some(n) = object.get("num_images") {
        assert!(n.as_u64().is_some_and(|n| (1..=4).contains(&n)), "{n}");
    }
    if let Some(seed) = object.get("seed") {
        assert!(seed.as_u64().is_some_and(|n| n < 1 << 53), "{seed}");
    }
    if let Some(scale) = object.get("guidance_scale") {
        assert!(scale.as_f64().is_some_and(|g| (1.0..=20.0).contains(&g)));
    }
    if let Some(level) = object.get("safety_tolerance") {
        assert!(["1", "2", "3", "4", "5", "6"].contains(&level.as_str().unwrap_or("")));
    }
}

/// Arbitrary JSON text as Kontext input (and its string members as create options).
pub fn input_validation(data: &[u8]) {
    let Ok(input) = serde_json::from_str::<Value>(&text(data)) else {
        return;
    };
    for image_given in [false, true] {
        let checked = if image_given {
            validate_kontext_without_image(&input)
        } else {
            validate_kontext(&input)
        };
        match checked {
            Ok(wire) => {
                check_wire(&wire, image_given);
                // The wire form is valid input, and its own wire form.
                let again = if image_given {
                    validate_kontext_without_image(&wire)
                } else {
                    validate_kontext(&wire)
                };
                assert_eq!(again.ok().as_ref(), Some(&wire));
            }
            Err(error) => {
                assert_eq!(error.code, ErrorCode::ValidationError);
                // The field at fault (`""` for an unknown field of that name).
                assert!(error.field.is_some(), "{error:?}");
                assert!(!error.retryable);
            }
        }
    }
    assert_eq!(validate_untyped(&input).is_ok(), input.is_object());

    let option = |key: &str| input.get(key).and_then(Value::as_str);
    for (client_ref, callback_url) in [
        (option("client_ref"), option("callback_url")),
        (option("prompt"), option("image_url")),
    ] {
        // Documented: 1 to 255 characters, without `"` or `\`.
        let expected = client_ref
            .is_none_or(|r| (1..=255).contains(&r.chars().count()) && !r.contains(['"', '\\']))
            && callback_url.is_none_or(|u| u.starts_with("https://") || u.starts_with("http://"));
        let checked = validate_create(client_ref, callback_url);
        assert_eq!(checked.is_ok(), expected, "{client_ref:?} {callback_url:?}");
    }
}

/// `path?query` split as a server sees it.
fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The proxy's rules: lines of method, `path?query`, the allowlist, then a client_ref and a
/// model id the client would build paths for.
pub fn proxy_rules(data: &[u8]) {
    use runflow_kontext::paths;
    use runflow_proxy_rules::{ModelAllowlist, Refused, check};

    let text = text(data);
    let mut lines = text.splitn(5, '\n');
    let mut next = || lines.next().unwrap_or_default();
    let (method, target, models, client_ref, model) = (next(), next(), next(), next(), next());
    let (path, query) = split_target(target);
    let allowlist = ModelAllowlist::parse(models).unwrap_or(ModelAllowlist::Any);

    match check(method, path, query, &allowlist) {
        Ok(allowed) => {
            assert!(matches!(method, "GET" | "POST"), "{method:?} forwarded");
            assert!(allowed.target.starts_with("/v1/"), "{allowed:?}");
            assert!(
                allowed
                    .target
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'#'),
                "{allowed:?}"
            );
            let (target_path, target_query) = split_target(&allowed.target);
            assert!(
                target_path.split('/').all(|s| s != "." && s != ".."),
                "{allowed:?}"
            );
            assert!(!allowed.creates_run || method == "POST");
            // The rebuilt target is itself forwarded, unchanged.
            let again = check(method, target_path, target_query, &allowlist);
            assert_eq!(again.as_ref(), Ok(&allowed), "{path:?} {query:?}");
        }
        Err(Refused::Model(id)) => assert!(!allowlist.allows(&id), "{id:?}"),
        Err(Refused::Path) => {}
    }

    // Every search the client makes for a ref it accepted is forwarded.
    if validate_create(Some(client_ref), None).is_ok() {
        let search = paths::search_by_client_ref(client_ref);
        let (path, query) = split_target(&search);
        let forwarded = check("GET", path, query, &ModelAllowlist::Any);
        assert!(forwarded.is_ok(), "{client_ref:?}: {search} refused");
    }
    // And every create for a model it accepted, when that model is allowed.
    if paths::is_valid_model(model) {
        let create = paths::create_run(model);
        let only = ModelAllowlist::Only(vec![model.to_owned()]);
        let forwarded = check("POST", &create, None, &only);
        assert!(
            forwarded.as_ref().is_ok_and(|a| a.creates_run),
            "{model:?}: {create} gave {forwarded:?}"
        );
    }
}
