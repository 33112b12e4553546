//! Property tests of the pure core, on the host: normalisation never panics and is stable, retry
//! and poll delays stay in bounds, validation accepts exactly the documented ranges, the chunked
//! base64 encoder is the base64 crate's, and signatures are exactly HMAC-SHA256.
#![cfg(not(target_arch = "wasm32"))]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use runflow_kontext::callback::verify_signature;
use runflow_kontext::error::{Error, ErrorCode, classify};
use runflow_kontext::input::{ASPECT_RATIOS, validate_kontext, validate_kontext_without_image};
use runflow_kontext::policy::{
    DEFAULT_POLL, DEFAULT_RETRY, PollSchedule, RetryPolicy, parse_retry_after,
};
use runflow_kontext::run::{Status, parse_run, parse_search, run_from_json, runs_from_search};
use runflow_kontext::upload::{encode_chunk, encoded_len};
use serde_json::{Map, Value, json};
use sha2::Sha256;

// ---------------------------------------------------------------------------------------------
// JSON generators

/// Any finite JSON number, as serde_json holds them: i64, u64 or f64.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (-3i64..30).prop_map(Value::from),
    ]
}

/// Strings a run or an input might hold, and odd ones.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[a-z_]{1,10}",
        "\\PC{0,40}",
        select(vec![
            "",
            " ",
            "null",
            "https://x/1.png",
            "data:image/png;base64,AA",
            "javascript:alert(1)",
            "blob:https://x/3",
            "HTTPS://X/2.JPG",
            "é",
            "\u{0}",
            "\u{202e}",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Arbitrary JSON, several levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(string(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Either a plausible value of a field or anything at all.
fn or_any(plausible: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => plausible, 1 => json_value()].boxed()
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "https://cdn.runflow.io/o/1.png?X-Signature=abc",
            "http://127.0.0.1:8080/a.jpeg#x",
            "HTTP://X/2.WEBP",
            "data:image/jpeg;base64,AAAA",
            "data:image/png,raw",
            "blob:https://x/3",
            "javascript:alert(1)",
            "data:text/html,<script>",
            "ftp://x/1.png",
            "",
        ])
        .prop_map(str::to_owned),
        "(https?://|data:image/|blob:|)[a-z./?#]{0,16}",
    ]
}

fn image() -> impl Strategy<Value = Value> {
    let object = (
        url(),
        option::of(number()),
        option::of(number()),
        option::of(or_any(
            select(vec!["image/png", "image/jpeg", "x"]).prop_map(Value::from),
        )),
    )
        .prop_map(|(url, width, height, content_type)| {
            let mut image = Map::new();
            image.insert("type".into(), "image".into());
            image.insert("url".into(), url.into());
            if let Some(width) = width {
                image.insert("width".into(), width);
            }
            if let Some(height) = height {
                image.insert("height".into(), height);
            }
            if let Some(content_type) = content_type {
                image.insert("content_type".into(), content_type);
            }
            Value::Object(image)
        });
    or_any(prop_oneof![object, url().prop_map(Value::from)])
}

/// Every output shape: `outputs[]`, `image_urls[]`, `images[]`, `image`, with the extras.
fn output() -> impl Strategy<Value = Value> {
    let flags = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        vec(any::<bool>(), 0..4).prop_map(|f| json!(f)),
        json_value(),
    ];
    let shape = (
        option::of(vec(image(), 0..4)),
        option::of(vec(url().prop_map(Value::from), 0..4)),
        option::of(vec(image(), 0..3)),
        option::of(image()),
        option::of(flags.clone()),
        option::of(flags),
        option::of(json_value()),
        option::of(json_value()),
        option::of(json_value()),
    )
        .prop_map(
            |(outputs, image_urls, images, image, nsfw, has_nsfw, seed, model_data, timing)| {
                let mut output = Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        output.insert(key.into(), value);
                    }
                };
                put("outputs", outputs.map(Value::Array));
                put("image_urls", image_urls.map(Value::Array));
                put("images", images.map(Value::Array));
                put("image", image);
                put("nsfw_detected", nsfw);
                put("has_nsfw_concepts", has_nsfw);
                put("seed", seed);
                put("model_data", model_data);
                put("timing", timing);
                Value::Object(output)
            },
        );
    or_any(shape)
}

fn status_string() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "queued",
            "pending",
            "dispatching",
            "running",
            "processing",
            "in_progress",
            "succeeded",
            "SUCCESS",
            "completed",
            "partial_succeeded",
            "partially_succeeded",
            "failed",
            "errored",
            "Error",
            "canceled",
            " cancelled ",
            "mystery",
            "",
        ])
        .prop_map(str::to_owned),
        string(),
    ]
}

fn text_value() -> BoxedStrategy<Value> {
    or_any(string().prop_map(Value::from))
}

/// Objects shaped like runs: a random subset of the run fields, each of a plausible type or not.
fn run_like() -> impl Strategy<Value = Value> {
    let fields: Vec<(&'static str, BoxedStrategy<Value>)> = vec![
        (
            "id",
            or_any(prop_oneof![string().prop_map(Value::from), number()]),
        ),
        ("status_code", or_any(status_string().prop_map(Value::from))),
        ("status", or_any(status_string().prop_map(Value::from))),
        ("model", text_value()),
        ("input", json_value().boxed()),
        ("output", output().boxed()),
        ("failure_code", text_value()),
        ("failure_stage_code", text_value()),
        ("failure_stage", text_value()),
        ("failure_message", text_value()),
        ("error", json_value().boxed()),
        ("metadata", json_value().boxed()),
        ("client_ref", text_value()),
        ("callback_url", text_value()),
        ("created_at", text_value()),
        ("started_at", text_value()),
        ("completed_at", text_value()),
        ("duration_ms", or_any(number())),
        (
            "cost",
            or_any(prop_oneof![string().prop_map(Value::from), number()]),
        ),
    ];
    let names: Vec<&'static str> = fields.iter().map(|(name, _)| *name).collect();
    let values: Vec<BoxedStrategy<Value>> = fields.into_iter().map(|(_, s)| s).collect();
    let count = names.len();
    (
        subsequence((0..count).collect::<Vec<_>>(), 0..=count),
        values,
    )
        .prop_map(move |(chosen, values)| {
            let mut run = Map::new();
            for at in chosen {
                run.insert(names[at].to_owned(), values[at].clone());
            }
            Value::Object(run)
        })
}

/// Text that may be JSON: run-shaped, truncated, deeply nested or random.
fn body_text() -> impl Strategy<Value = String> {
    prop_oneof![
        run_like().prop_map(|v| v.to_string()),
        (run_like(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string();
            let at = cut.index(text.len() + 1);
            text.get(..at).unwrap_or(&text).to_owned()
        }),
        vec(run_like(), 0..4).prop_map(|items| json!({"items": items}).to_string()),
        json_value().prop_map(|v| v.to_string()),
        (1usize..3000).prop_map(|depth| "[".repeat(depth) + &"]".repeat(depth)),
        (1usize..3000).prop_map(|depth| r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth)),
        "\\PC{0,64}",
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// A run's normal form, normalised again, is unchanged.
fn assert_stable(value: &Value) -> Result<(), TestCaseError> {
    if let Ok(run) = run_from_json(200, value) {
        prop_assert!(!run.id.is_empty());
        prop_assert_eq!(run.status, Status::parse(&run.status_code));
        let json = run.to_json();
        let again = run_from_json(200, &json);
        prop_assert!(again.is_ok(), "the normal form is refused: {}", json);
        let mut again = again.map(|r| r.to_json()).unwrap_or_default();
        // Known (see the ignored test below): the normal form's `failure` is not read back.
        let mut json = json;
        let failure = (again["failure"].take(), json["failure"].take());
        prop_assert_eq!(again, json);
        let empty = json!({"code": null, "stage": null, "message": null});
        let dropped = if run.status.is_failure() {
            empty
        } else {
            Value::Null
        };
        prop_assert!(
            failure.0 == failure.1 || failure.0 == dropped,
            "{:?}",
            failure
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normalising_arbitrary_json_never_panics(value in json_value()) {
        let _ = run_from_json(200, &value);
        let _ = runs_from_search(200, &value);
        let _ = runs_from_search(200, &json!({"items": [value.clone()]}));
        assert_stable(&value)?;
    }

    #[test]
    fn run_shaped_json_normalises_stably(value in run_like()) {
        assert_stable(&value)?;
        let one = run_from_json(200, &value);
        let page = runs_from_search(200, &json!({"items": [value.clone()]}));
        prop_assert_eq!(one.is_ok(), page.is_ok());
        if let Err(error) = one {
            prop_assert_eq!(error.code, ErrorCode::InvalidResponse);
        }
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(status in any::<u16>(), body in body_text()) {
        match parse_run(status, &body) {
            Ok(run) => prop_assert!(!run.id.is_empty()),
            Err(error) => {
                prop_assert_eq!(error.code, ErrorCode::InvalidResponse);
                prop_assert_eq!(error.status, Some(status));
            }
        }
        let _ = parse_search(status, &body);
    }

    #[test]
    fn any_error_response_maps_to_one_error(
        status in any::<u16>(),
        body in prop_oneof![
            body_text(),
            (option::of(string()), option::of(string()), option::of(string()), 0usize..4)
                .prop_map(|(code, message, field, shape)| match shape {
                    0 => json!({"code": code, "message": message}),
                    1 => json!({"error": {"code": code, "message": message}}),
                    2 => json!({"error": message, "code": code}),
                    _ => json!({"message": message, "errors": [{"field": field, "message": message}]}),
                }.to_string()),
        ],
        retry_after in option::of(any::<u64>()),
    ) {
        let error = Error::from_response(status, &body, Some("req".into()), retry_after);
        prop_assert_eq!(error.status, Some(status));
        prop_assert_eq!(error.retry_after_ms, retry_after);
        prop_assert_eq!(error.code, classify(status, error.server_code.as_deref()));
        prop_assert_eq!(error.retryable, error.code.retryable() && status != 501);
        let prefix = format!("HTTP {status}. ");
        prop_assert!(error.message.starts_with(&prefix));
        prop_assert!(error.message.chars().count() < 500 + error.server_code.as_ref().map_or(0, |c| c.chars().count()));
    }
}

// ---------------------------------------------------------------------------------------------
// Retries and polling

fn policy() -> impl Strategy<Value = RetryPolicy> {
    prop_oneof![
        Just(DEFAULT_RETRY),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(max_retries, base_ms, cap_ms, max_retry_after_ms)| RetryPolicy {
                max_retries,
                base_ms,
                cap_ms,
                max_retry_after_ms,
            }
        ),
        (0u32..10, 0u64..5_000, 0u64..100_000, 0u64..120_000).prop_map(
            |(max_retries, base_ms, cap_ms, max_retry_after_ms)| RetryPolicy {
                max_retries,
                base_ms,
                cap_ms,
                max_retry_after_ms,
            }
        ),
    ]
}

fn random() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..1.0f64, Just(0.0), Just(1.0 - f64::EPSILON / 2.0)]
}

fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), 0u32..70, Just(u32::MAX)]
}

/// The backoff ceiling, computed in u128 so that it cannot overflow.
fn ceiling(policy: &RetryPolicy, attempt: u32) -> u64 {
    let grown = u128::from(policy.base_ms) << attempt.min(64);
    grown.min(u128::from(policy.cap_ms)) as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn retry_delays_stay_within_bounds(
        policy in policy(),
        attempt in attempt(),
        retry_after in option::of(any::<u64>()),
        random in random(),
    ) {
        let delay = policy.delay_ms(attempt, retry_after, random);
        match retry_after {
            Some(ms) => prop_assert_eq!(delay, ms),
            None => {
                prop_assert!(delay <= policy.cap_ms);
                prop_assert!(delay <= ceiling(&policy, attempt), "{} > {}", delay, ceiling(&policy, attempt));
                // The ceiling never falls: a later attempt waits at least as long, same draw.
                let next = policy.delay_ms(attempt.saturating_add(1), None, random);
                prop_assert!(delay <= next);
                prop_assert!(policy.delay_ms(attempt, None, 0.0) == 0);
            }
        }
    }

    #[test]
    fn retries_stop_past_the_limit_and_for_absurd_waits(
        policy in policy(),
        attempt in attempt(),
        retry_after in option::of(any::<u64>()),
        code in select(ErrorCode::ALL.to_vec()),
    ) {
        let error = Error { retry_after_ms: retry_after, ..Error::new(code, "x") };
        let retry = policy.should_retry(attempt, &error);
        let expected = attempt < policy.max_retries
            && code.retryable()
            && retry_after.is_none_or(|ms| ms <= policy.max_retry_after_ms);
        prop_assert_eq!(retry, expected);
    }

    #[test]
    fn retry_after_never_panics(value in "\\PC{0,40}", now in any::<u64>()) {
        let _ = parse_retry_after(&value, now, |_| None);
        let at = parse_retry_after(&value, now, |_| Some(now / 2));
        if let Some(at) = at {
            let digits = value.trim();
            prop_assert!((!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())) || at == 0);
        }
    }

    #[test]
    fn retry_after_seconds_are_ms(seconds in any::<u64>(), pad in "[ \t]{0,2}", now in any::<u64>()) {
        let text = format!("{pad}{seconds}{pad}");
        prop_assert_eq!(
            parse_retry_after(&text, now, |_| None),
            Some(seconds.saturating_mul(1000))
        );
    }

    #[test]
    fn retry_after_dates_are_relative_to_now(at in any::<u64>(), now in any::<u64>()) {
        prop_assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, |_| Some(at)),
            at.checked_sub(now)
        );
    }

    #[test]
    fn poll_delays_stay_within_bounds(
        // Below 2^53 ms (285,000 years), where the schedule's f64 holds every value exactly.
        initial in prop_oneof![0u64..20_000, 0u64..1 << 53],
        poll in attempt(),
        elapsed in any::<u64>(),
        hidden in any::<bool>(),
    ) {
        for schedule in [PollSchedule::starting_at(initial), DEFAULT_POLL] {
            let delay = schedule.delay_ms(poll, elapsed, hidden);
            let factor = if hidden { schedule.hidden_factor } else { 1 };
            let cap = if elapsed < schedule.fast_for_ms { schedule.fast_cap_ms } else { schedule.max_ms };
            let low = schedule.initial_ms.min(cap).saturating_mul(factor);
            let high = schedule.fast_cap_ms.max(schedule.max_ms).saturating_mul(factor);
            prop_assert!(low <= delay && delay <= high, "{} not in [{}, {}]", delay, low, high);
            // Within a phase, polls only slow down.
            prop_assert!(delay <= schedule.delay_ms(poll.saturating_add(1), elapsed, hidden));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

const MAX_SAFE: i128 = (1 << 53) - 1;

/// A JSON number's exact value as an integer, when it is one.
fn integral(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                    .map(|f| f as i128)
            }),
        _ => None,
    }
}

/// Whether `value` is what the documentation allows for `field`.
fn documented(field: &str, value: &Value) -> bool {
    match field {
        "prompt" => value.as_str().is_some_and(|p| !p.trim().is_empty()),
        "image_url" | "image" => value.as_str().is_some_and(|u| {
            let lower = u.to_ascii_lowercase();
            ((lower.starts_with("https://") || lower.starts_with("http://"))
                && u.len() > "https://".len()
                && !u.contains(char::is_whitespace))
                || (lower.starts_with("data:image/")
                    && u.split(',').next().is_some_and(|h| h.ends_with(";base64"))
                    && u.contains(','))
        }),
        "aspect_ratio" => value.as_str().is_some_and(|a| ASPECT_RATIOS.contains(&a)),
        "num_images" => integral(value).is_some_and(|n| (1..=4).contains(&n)),
        "guidance_scale" => value.as_f64().is_some_and(|g| (1.0..=20.0).contains(&g)),
        "seed" => integral(value).is_some_and(|n| (0..=MAX_SAFE).contains(&n)),
        "safety_tolerance" => match value {
            Value::String(s) => safety_text(s).is_some(),
            _ => integral(value).is_some_and(|n| (1..=6).contains(&n)),
        },
        "output_format" => matches!(value.as_str(), Some("jpeg" | "png")),
        "enhance_prompt" | "sync_mode" => value.is_boolean(),
        _ => false,
    }
}

/// The level a `safety_tolerance` string stands for. Documented: "1" to "6". Also accepted, and
/// sent as the plain digit: leading zeros ("03", "006"), which the API would refuse as they are
/// (see the report).
fn safety_text(text: &str) -> Option<u8> {
    let level = text.trim_start_matches('0');
    (text.bytes().all(|b| b.is_ascii_digit()) && level.len() == 1)
        .then(|| level.as_bytes()[0] - b'0')
        .filter(|n| (1..=6).contains(n))
}

/// The wire form of an accepted value.
fn wire_form(field: &str, value: &Value) -> Value {
    match field {
        "num_images" | "seed" => json!(integral(value).map(|n| n as i64)),
        "safety_tolerance" => match value {
            Value::String(s) => json!(safety_text(s).map(|n| n.to_string())),
            _ => json!(integral(value).map(|n| n.to_string())),
        },
        _ => value.clone(),
    }
}

fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let near = |low: f64, high: f64| {
        prop_oneof![
            (low - 2.0..high + 2.0).prop_map(Value::from),
            ((low as i64 - 2)..=(high as i64 + 2)).prop_map(Value::from),
            select(vec![low, high, low - 0.01, high + 0.01, low + 0.5, -0.0]).prop_map(Value::from),
        ]
    };
    let plausible: BoxedStrategy<Value> = match field {
        "prompt" => prop_oneof![
            Just(json!("")),
            Just(json!("  \n")),
            string().prop_map(Value::from)
        ]
        .boxed(),
        "image_url" | "image" => url().prop_map(Value::from).boxed(),
        "aspect_ratio" => prop_oneof![
            select(ASPECT_RATIOS.to_vec()).prop_map(Value::from),
            select(vec!["5:4", "1:1 ", "SQUARE", "16/9"]).prop_map(Value::from),
        ]
        .boxed(),
        "num_images" => near(1.0, 4.0).boxed(),
        "guidance_scale" => near(1.0, 20.0).boxed(),
        "seed" => prop_oneof![
            near(0.0, 10.0),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (MAX_SAFE as i64 - 3..=MAX_SAFE as i64 + 3).prop_map(Value::from),
            select(vec![
                9_007_199_254_740_991.0,
                9_007_199_254_740_992.0,
                1e15,
                1e20,
                0.5
            ])
            .prop_map(Value::from),
        ]
        .boxed(),
        "safety_tolerance" => prop_oneof![
            near(1.0, 6.0),
            "[+0-9 a-]{0,3}".prop_map(Value::from),
            select(vec!["1", "6", "0", "7", "2.5", "03", "+3", " 3", "３"]).prop_map(Value::from),
        ]
        .boxed(),
        "output_format" => select(vec!["jpeg", "png", "jpg", "webp", "PNG", ""])
            .prop_map(Value::from)
            .boxed(),
        _ => prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            Just(json!(1)),
            Just(json!("true"))
        ]
        .boxed(),
    };
    prop_oneof![6 => plausible, 1 => Just(Value::Null), 1 => json_value()].boxed()
}

const FIELDS: [&str; 11] = [
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

/// A Kontext input: a valid base most of the time, then a random subset of fields, each with a
/// value that may or may not be allowed, and sometimes an unknown field.
fn kontext_input() -> impl Strategy<Value = (Vec<(String, Value)>, bool)> {
    let values: Vec<BoxedStrategy<Value>> = FIELDS.iter().map(|f| field_value(f)).collect();
    (
        // Mostly a few fields, so that a good share of inputs is valid.
        prop_oneof![
            3 => subsequence(FIELDS.to_vec(), 0..=3),
            1 => subsequence(FIELDS.to_vec(), 0..=FIELDS.len()),
        ],
        values,
        option::of((
            "[a-zA-Z_]{1,14}",
            prop_oneof![Just(Value::Null), json_value()],
        )),
        prop::bool::weighted(0.7),
        any::<bool>(),
    )
        .prop_map(|(chosen, values, unknown, with_base, local)| {
            let mut fields: Vec<(String, Value)> = Vec::new();
            if with_base {
                fields.push(("prompt".into(), json!("make it snow")));
                fields.push(("image_url".into(), json!("https://example.com/a.jpg")));
            }
            for field in chosen {
                let at = FIELDS.iter().position(|f| *f == field).unwrap_or(0);
                fields.retain(|(name, _)| name != field);
                fields.push((field.to_owned(), values[at].clone()));
            }
            if let Some((name, value)) = unknown {
                if !FIELDS.contains(&name.as_str()) {
                    fields.push((name, value));
                }
            }
            (fields, local)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn validation_accepts_exactly_the_documented_ranges((fields, local) in kontext_input()) {
        let input = Value::Object(fields.iter().cloned().collect());
        let present: Vec<&(String, Value)> = fields.iter().filter(|(_, v)| !v.is_null()).collect();
        let has = |name: &str| present.iter().any(|(n, _)| n == name);
        let every_known = present.iter().all(|(name, _)| FIELDS.contains(&name.as_str()));
        let every_allowed = present.iter().all(|(name, value)| documented(name, value));
        let images = usize::from(has("image")) + usize::from(has("image_url")) + usize::from(local);
        let expected = every_known && every_allowed && has("prompt") && images == 1;

        let checked = if local {
            validate_kontext_without_image(&input)
        } else {
            validate_kontext(&input)
        };
        prop_assert_eq!(checked.is_ok(), expected, "{} -> {:?}", input, checked);
        match checked {
            Ok(wire) => {
                let mut want = Map::new();
                for (name, value) in &present {
                    let wire_name = if name == "image" { "image_url" } else { name.as_str() };
                    want.insert(wire_name.to_owned(), wire_form(name, value));
                }
                prop_assert_eq!(wire, Value::Object(want));
            }
            Err(error) => {
                prop_assert_eq!(error.code, ErrorCode::ValidationError);
                let field = error.field.unwrap_or_default();
                prop_assert!(
                    field == "image" || field == "image_url" || field == "prompt"
                        || present.iter().any(|(n, v)| *n == field && (!documented(n, v) || !FIELDS.contains(&n.as_str()))),
                    "{} blamed for {}", field, input
                );
            }
        }
    }
}

#[test]
fn lenient_safety_tolerance_strings_are_sent_as_the_digit() {
    for (given, sent) in [("03", "3"), ("0006", "6")] {
        let wire = validate_kontext(&json!({
            "prompt": "p", "image_url": "https://x/a.jpg", "safety_tolerance": given,
        }))
        .unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(wire["safety_tolerance"], sent, "{given}");
    }
}

// ---------------------------------------------------------------------------------------------
// Base64

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn base64_is_the_crates(bytes in vec(any::<u8>(), 0..2048)) {
        let mut out = vec![0; encoded_len(bytes.len())];
        let written = encode_chunk(&bytes, &mut out);
        prop_assert_eq!(written, encoded_len(bytes.len()));
        let expected = STANDARD.encode(&bytes);
        prop_assert_eq!(&out[..written], expected.as_bytes());
    }

    #[test]
    fn base64_in_chunks_concatenates(
        bytes in vec(any::<u8>(), 0..4096),
        sizes in vec(1usize..200, 1..20),
    ) {
        let mut chunked = Vec::new();
        let mut rest = &bytes[..];
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            // Every chunk but the last a multiple of 3.
            let size = (sizes.next().copied().unwrap_or(1) * 3).min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            let mut out = vec![0; encoded_len(chunk.len())];
            let n = encode_chunk(chunk, &mut out);
            chunked.extend_from_slice(&out[..n]);
            rest = tail;
        }
        prop_assert_eq!(chunked, STANDARD.encode(&bytes).into_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secrets() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof!["whsec_[A-Za-z0-9]{8,32}", "\\PC{1,70}", Just(String::new())],
        1..4,
    )
}

/// Whether the byte at `at` of a lowercase hex header may be replaced by `to` and still verify:
/// only by its own upper case (either case is read).
fn same_digit(original: u8, to: u8) -> bool {
    original.is_ascii_alphabetic() && to == original.to_ascii_uppercase()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signatures_are_exactly_hmac_sha256(
        body in vec(any::<u8>(), 0..512),
        secrets in secrets(),
        pick in any::<prop::sample::Index>(),
        other in "whsec_[A-Za-z0-9]{8,32}",
    ) {
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let secret = pick.get(&secrets);
        let header = sign(&body, secret);
        prop_assert_eq!(verify_signature(&body, &header, &refs), !secret.is_empty());
        prop_assert_eq!(verify_signature(&body, &format!("sha256={header}"), &refs), !secret.is_empty());
        let others: Vec<&str> = refs.iter().copied().filter(|s| *s != secret).chain([other.as_str()]).collect();
        prop_assert!(!verify_signature(&body, &header, &others) || secret.is_empty());
        prop_assert!(!verify_signature(&body, &sign(&body, &other), &refs) || refs.contains(&other.as_str()));
    }

    #[test]
    fn any_single_byte_tamper_is_refused(
        body in vec(any::<u8>(), 1..256),
        secret in "whsec_[A-Za-z0-9]{8,32}",
        at in any::<prop::sample::Index>(),
        to in prop_oneof![any::<u8>(), select(b"0123456789abcdefABCDEF+- \t=g".to_vec())],
        in_header in any::<bool>(),
    ) {
        let header = sign(&body, &secret);
        prop_assert!(verify_signature(&body, &header, &[&secret]));
        if in_header {
            let mut bytes = header.clone().into_bytes();
            let at = at.index(bytes.len());
            prop_assume!(bytes[at] != to && !same_digit(bytes[at], to));
            bytes[at] = to;
            let tampered = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(!verify_signature(&body, &tampered, &[&secret]), "{} accepted", tampered);
        } else {
            let mut tampered = body.clone();
            let at = at.index(tampered.len());
            prop_assume!(tampered[at] != to);
            tampered[at] = to;
            prop_assert!(!verify_signature(&tampered, &header, &[&secret]));
        }
    }

    #[test]
    fn arbitrary_headers_are_refused(header in "\\PC{0,80}", body in vec(any::<u8>(), 0..64)) {
        prop_assert!(!verify_signature(&body, &header, &["whsec_k"]) || header.trim().trim_start_matches("sha256=").eq_ignore_ascii_case(&sign(&body, "whsec_k")));
    }
}

/// `decode_hex` read each pair with `parse_unsigned`, which took a leading `+`: a header whose
/// pair `0x` was written `+x` still verified (found by these tests and fuzzing; fixed).
#[test]
fn a_plus_sign_is_not_a_hex_digit() {
    let body = b"what do ya want for nothing?";
    let good = sign(body, "Jefe");
    assert!(good.starts_with("5bdcc146bf60754e6a04"));
    let tampered = good.replacen("6a04", "6a+4", 1);
    assert!(!verify_signature(body, &tampered, &["Jefe"]), "{tampered}");
}

/// The server's own code goes into the message: it is kept to one short line like the server's
/// text (a code with a line break, or thousands of characters, once made the message long).
#[test]
fn a_server_code_is_kept_to_one_short_line() {
    let body = json!({"code": format!("E\n{}", "x".repeat(5000)), "message": "m"}).to_string();
    let error = Error::from_response(400, &body, None, None);
    assert!(!error.message.contains('\n'), "{}", error.message);
    assert!(error.message.chars().count() < 700);
}

/// `run_from_json` reads a failure from `failure_code`, `failure_stage_code`/`failure_stage`,
/// `failure_message`, the older `error`, and `failure`, the shape `to_json` writes: normalising
/// a run's normal form again keeps its failure (found by the stability property).
#[test]
fn normalising_the_normal_form_keeps_the_failure() {
    let wire = json!({"id": "r", "status_code": "failed", "failure_code": "PROVIDER_ERROR",
        "failure_stage_code": "inference", "failure_message": "boom"});
    let once = run_from_json(200, &wire)
        .map(|run| run.to_json())
        .unwrap_or_default();
    let twice = run_from_json(200, &once)
        .map(|run| run.to_json())
        .unwrap_or_default();
    assert_eq!(twice, once);
}
