//! Kontext input: validation of every field against the documented ranges, and its wire form.

use crate::error::Error;
use crate::json::{Json, JsonValue as Value};
use crate::text::{decimal, parse_unsigned, signed};

/// The model this client types its input for.
pub const KONTEXT_MODEL: &str = "black-forest-labs/flux-pro/kontext";

/// Aspect ratios the API accepts: ratio strings and the older preset names.
pub const ASPECT_RATIOS: &[&str] = &[
    "21:9",
    "16:9",
    "4:3",
    "3:2",
    "1:1",
    "2:3",
    "3:4",
    "9:16",
    "9:21",
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
];

const FIELDS: &[&str] = &[
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

const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Validates Kontext input and returns the body's `input` object as the API wants it.
///
/// Absent and `null` fields are left out; `image` is accepted as another name for `image_url`;
/// `safety_tolerance` may be a number and is sent as a string.
///
/// # Errors
/// `validation_error` naming the first field at fault.
///
/// ```
/// # #[cfg(not(target_arch = "wasm32"))] {
/// use serde_json::json;
/// let wire = runflow_kontext::input::validate_kontext(&json!({
///     "prompt": "make it snow", "image_url": "https://example.com/a.jpg", "safety_tolerance": 3,
/// })).unwrap();
/// assert_eq!(wire["safety_tolerance"], "3");
/// # }
/// ```
pub fn validate_kontext(input: &Value) -> Result<Value, Error> {
    validate(input, false)
}

/// Validates Kontext input whose image is a local file, taken out of `input` to be uploaded
/// first: `image_url` is then not required, and must not be given besides.
///
/// # Errors
/// `validation_error` naming the first field at fault.
pub fn validate_kontext_without_image(input: &Value) -> Result<Value, Error> {
    validate(input, true)
}

fn validate(input: &Value, image_given: bool) -> Result<Value, Error> {
    as_object(input)?;
    let Some(entries) = input.entries() else {
        return Err(Error::about(
            "input",
            " could not be read (a getter threw).",
        ));
    };
    let mut wire: Vec<(&'static str, Value)> = Vec::new();
    for (name, value) in entries {
        if value.is_absent() {
            continue;
        }
        let Some(&known) = FIELDS.iter().find(|field| **field == name) else {
            return Err(unknown_field(&name));
        };
        let (wire_name, wire_value) = match known {
            "prompt" => (known, prompt(&value)?),
            "image_url" | "image" => ("image_url", image_url(known, &value)?),
            "aspect_ratio" => (known, one_of(known, &value, ASPECT_RATIOS)?),
            "num_images" => (known, integer(known, &value, 1, 4)?),
            "guidance_scale" => (known, number(known, &value, 1, 20)?),
            "output_format" => (known, one_of(known, &value, &["jpeg", "png"])?),
            "safety_tolerance" => (known, safety_tolerance(&value)?),
            "seed" => (known, integer(known, &value, 0, MAX_SAFE_INTEGER)?),
            _ => (known, boolean(known, &value)?),
        };
        if wire.iter().any(|(existing, _)| *existing == wire_name)
            || (image_given && wire_name == "image_url")
        {
            return Err(Error::invalid(
                "image",
                "Give either `image` or `image_url`, not both.",
            ));
        }
        wire.push((wire_name, wire_value));
    }
    let has = |name: &str| wire.iter().any(|(field, _)| *field == name);
    if !has("prompt") {
        return Err(Error::invalid(
            "prompt",
            "`prompt` is required: describe the edit, e.g. \"make the sky stormy\".",
        ));
    }
    if !has("image_url") && !image_given {
        return Err(Error::invalid(
            "image_url",
            "`image_url` is required: the image to edit, as an https URL or a data: URI.",
        ));
    }
    Ok(Value::object(wire))
}

/// Checks input for a model this client does not type: it must be an object; the API judges the rest.
///
/// # Errors
/// `validation_error` when it is not an object.
pub fn validate_untyped(input: &Value) -> Result<Value, Error> {
    as_object(input).map(|()| input.clone())
}

/// Checks the create options the API bounds.
///
/// # Errors
/// `validation_error` on a `client_ref` that is empty, over 255 characters or holds `"`, `\` or
/// a control character (the search that finds a run by its ref cannot carry them: Runflow
/// documents no escapes, and proxies refuse them), or a `callback_url` that is not an http(s) URL.
pub fn validate_create(client_ref: Option<&str>, callback_url: Option<&str>) -> Result<(), Error> {
    if let Some(client_ref) = client_ref {
        if client_ref.is_empty()
            || char_count(client_ref) > 255
            || client_ref
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(Error::invalid(
                "clientRef",
                "`clientRef` must be 1 to 255 characters, without `\"`, `\\` or control characters, and unique to one logical create: the client finds a run by it when a create's outcome is unknown.",
            ));
        }
    }
    if let Some(url) = callback_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::invalid(
                "callbackUrl",
                "`callbackUrl` must be an http(s) URL that Runflow can reach.",
            ));
        }
    }
    Ok(())
}

/// `text.chars().count()` without core's word-at-a-time counter, which the wasm need not carry:
/// every character has exactly one byte that is not a UTF-8 continuation byte.
fn char_count(text: &str) -> usize {
    text.bytes().filter(|byte| byte & 0xC0 != 0x80).count()
}

fn as_object(input: &Value) -> Result<(), Error> {
    if input.is_plain_object() {
        Ok(())
    } else {
        Err(Error::invalid(
            "input",
            "The input must be an object such as { prompt, image_url }.",
        ))
    }
}

fn unknown_field(name: &str) -> Error {
    let snake = to_snake_case(name);
    let hint = if FIELDS.contains(&snake.as_str()) {
        [
            " Did you mean `",
            &snake,
            "`? Input fields use the API's snake_case names.",
        ]
        .concat()
    } else {
        [" Known fields: ", &FIELDS.join(", "), "."].concat()
    };
    Error::invalid(name, ["Unknown input field `", name, "`.", &hint].concat())
}

fn to_snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn prompt(value: &Value) -> Result<Value, Error> {
    match Json::as_str(value) {
        Some(text) if !text.trim().is_empty() => Ok(value.clone()),
        Some(_) => Err(Error::invalid(
            "prompt",
            "`prompt` is empty: describe the edit, e.g. \"make the sky stormy\".",
        )),
        None => Err(Error::invalid("prompt", "`prompt` must be a string.")),
    }
}

fn image_url(name: &str, value: &Value) -> Result<Value, Error> {
    let Some(url) = Json::as_str(value) else {
        return Err(Error::about(
            name,
            " must be a URL string here: an https URL or a data:image/...;base64 URI.",
        ));
    };
    let lower = url.get(..11).unwrap_or(&url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        if url.len() <= "https://".len() || url.contains(char::is_whitespace) {
            return Err(Error::about(name, " is not a valid URL."));
        }
        return Ok(value.clone());
    }
    if lower.starts_with("data:") {
        let header = url.split(',').next().unwrap_or_default();
        if !header.to_ascii_lowercase().starts_with("data:image/")
            || !header.ends_with(";base64")
            || !url.as_bytes().contains(&b',')
        {
            return Err(Error::about(
                name,
                " is a data: URI but not a base64 image (data:image/<type>;base64,...).",
            ));
        }
        return Ok(value.clone());
    }
    if lower.starts_with("blob:") {
        return Err(Error::about(
            name,
            " is a blob: URL, which only this browser tab can read; Runflow needs an https URL or a data: URI.",
        ));
    }
    Err(Error::about(
        name,
        " must be an https URL or a data:image/...;base64 URI.",
    ))
}

fn one_of(name: &str, value: &Value, allowed: &[&str]) -> Result<Value, Error> {
    match Json::as_str(value) {
        Some(text) if allowed.contains(&text.as_str()) => Ok(value.clone()),
        _ => Err(Error::invalid(
            name,
            [
                "`",
                name,
                "` must be one of ",
                &allowed.join(", "),
                "; got ",
                &value.brief(),
                ".",
            ]
            .concat(),
        )),
    }
}

fn integer(name: &str, value: &Value, min: i64, max: i64) -> Result<Value, Error> {
    // JS numbers are floats: 2.0 is the integer 2, 2.5 is not.
    let as_integer = Json::as_f64(value)
        .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64)
        .map(|f| f as i64);
    match as_integer {
        Some(n) if (min..=max).contains(&n) => Ok(Value::number(n as f64)),
        _ => Err(Error::invalid(
            name,
            [
                "`",
                name,
                "` must be an integer from ",
                &signed(min),
                " to ",
                &signed(max),
                "; got ",
                &value.brief(),
                ".",
            ]
            .concat(),
        )),
    }
}

fn number(name: &str, value: &Value, min: u8, max: u8) -> Result<Value, Error> {
    match Json::as_f64(value) {
        Some(n) if (f64::from(min)..=f64::from(max)).contains(&n) => Ok(value.clone()),
        _ => Err(Error::invalid(
            name,
            [
                "`",
                name,
                "` must be a number from ",
                &decimal(min.into()),
                " to ",
                &decimal(max.into()),
                "; got ",
                &value.brief(),
                ".",
            ]
            .concat(),
        )),
    }
}

fn boolean(name: &str, value: &Value) -> Result<Value, Error> {
    match Json::as_bool(value) {
        Some(_) => Ok(value.clone()),
        None => Err(Error::invalid(
            name,
            [
                "`",
                name,
                "` must be true or false; got ",
                &value.brief(),
                ".",
            ]
            .concat(),
        )),
    }
}

fn safety_tolerance(value: &Value) -> Result<Value, Error> {
    let level = match (Json::as_str(value), Json::as_f64(value)) {
        (Some(text), _) => parse_unsigned(&text, 10).and_then(|n| u8::try_from(n).ok()),
        (None, Some(n)) if n.fract() == 0.0 && (1.0..=6.0).contains(&n) => Some(n as u8),
        _ => None,
    };
    match level {
        Some(level @ 1..=6) => Ok(Value::string(&decimal(level.into()))),
        _ => Err(Error::invalid(
            "safety_tolerance",
            [
                "`safety_tolerance` must be \"1\" (strictest) to \"6\"; got ",
                &value.brief(),
                ".",
            ]
            .concat(),
        )),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn base() -> Value {
        json!({"prompt": "make it snow", "image_url": "https://example.com/a.jpg"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut input = base();
        input[field] = value;
        input
    }

    #[test]
    fn valid_values_pass_and_take_their_wire_form() {
        let accepted = [
            ("aspect_ratio", json!("21:9"), json!("21:9")),
            ("aspect_ratio", json!("square_hd"), json!("square_hd")),
            ("num_images", json!(1), json!(1)),
            ("num_images", json!(4.0), json!(4)),
            ("guidance_scale", json!(1), json!(1)),
            ("guidance_scale", json!(3.5), json!(3.5)),
            ("guidance_scale", json!(20), json!(20)),
            ("output_format", json!("png"), json!("png")),
            ("safety_tolerance", json!("1"), json!("1")),
            ("safety_tolerance", json!(6), json!("6")),
            ("enhance_prompt", json!(true), json!(true)),
            ("sync_mode", json!(false), json!(false)),
            ("seed", json!(0), json!(0)),
            (
                "seed",
                json!(9007199254740991_i64),
                json!(9007199254740991_i64),
            ),
            (
                "image_url",
                json!("data:image/png;base64,iVBORw0KGgo="),
                json!("data:image/png;base64,iVBORw0KGgo="),
            ),
            (
                "image_url",
                json!("http://127.0.0.1:8080/sample.jpg"),
                json!("http://127.0.0.1:8080/sample.jpg"),
            ),
        ];
        for (field, value, wire) in accepted {
            let out = validate_kontext(&with(field, value.clone()))
                .unwrap_or_else(|e| panic!("{field}={value}: {e}"));
            assert_eq!(out[field], wire, "{field}");
        }
    }

    #[test]
    fn a_local_image_leaves_only_the_other_fields_to_check() {
        let rest = json!({"prompt": "make it snow", "num_images": 2});
        let wire = validate_kontext_without_image(&rest).unwrap();
        assert_eq!(wire, rest);
        let error = validate_kontext_without_image(&base()).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("image"));
        let error =
            validate_kontext_without_image(&json!({"prompt": "x", "seed": -1})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("seed"));
        assert!(validate_kontext(&rest).is_err());
    }

    #[test]
    fn each_bad_field_is_named() {
        let refused = [
            ("prompt", json!("")),
            ("prompt", json!("   ")),
            ("prompt", json!(7)),
            ("image_url", json!("ftp://x/a.jpg")),
            ("image_url", json!("blob:http://x/123")),
            ("image_url", json!("data:text/plain;base64,AAAA")),
            ("image_url", json!("data:image/png,rawbytes")),
            ("image_url", json!("https://")),
            ("image_url", json!(12)),
            ("aspect_ratio", json!("5:4")),
            ("aspect_ratio", json!(1.5)),
            ("num_images", json!(0)),
            ("num_images", json!(5)),
            ("num_images", json!(2.5)),
            ("num_images", json!("2")),
            ("guidance_scale", json!(0.99)),
            ("guidance_scale", json!(20.01)),
            ("guidance_scale", json!("3")),
            ("output_format", json!("jpg")),
            ("output_format", json!("webp")),
            ("safety_tolerance", json!("0")),
            ("safety_tolerance", json!("7")),
            ("safety_tolerance", json!(2.5)),
            ("safety_tolerance", json!(true)),
            ("enhance_prompt", json!("yes")),
            ("sync_mode", json!(1)),
            ("seed", json!(-1)),
            ("seed", json!(1.5)),
            ("seed", json!(9007199254740992_i64)),
        ];
        for (field, value) in refused {
            let error = validate_kontext(&with(field, value.clone()))
                .expect_err(&format!("{field}={value}"));
            assert_eq!(error.code, ErrorCode::ValidationError);
            assert_eq!(
                error.field.as_deref(),
                Some(field),
                "{field}={value}: {}",
                error.message
            );
        }
    }

    #[test]
    fn required_fields_and_shape() {
        assert_eq!(
            validate_kontext(&json!({"image_url": "https://x/a.jpg"}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("prompt")
        );
        assert_eq!(
            validate_kontext(&json!({"prompt": "p"}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("image_url")
        );
        assert_eq!(
            validate_kontext(&json!("p")).unwrap_err().field.as_deref(),
            Some("input")
        );
        assert_eq!(
            validate_kontext(&json!({"prompt": "p", "image_url": null}))
                .unwrap_err()
                .field
                .as_deref(),
            Some("image_url")
        );
    }

    #[test]
    fn image_alias_nulls_and_unknown_fields() {
        let out =
            validate_kontext(&json!({"prompt": "p", "image": "https://x/a.jpg", "seed": null}))
                .unwrap();
        assert_eq!(out, json!({"prompt": "p", "image_url": "https://x/a.jpg"}));
        let both = validate_kontext(
            &json!({"prompt": "p", "image": "https://x/a.jpg", "image_url": "https://x/b.jpg"}),
        );
        assert_eq!(both.unwrap_err().field.as_deref(), Some("image"));
        let range = validate_kontext(&with("num_images", json!(5))).unwrap_err();
        assert_eq!(
            range.message,
            "`num_images` must be an integer from 1 to 4; got 5."
        );
        let scale = validate_kontext(&with("guidance_scale", json!(30))).unwrap_err();
        assert_eq!(
            scale.message,
            "`guidance_scale` must be a number from 1 to 20; got 30."
        );
        let camel = validate_kontext(&with("aspectRatio", json!("1:1"))).unwrap_err();
        assert_eq!(camel.field.as_deref(), Some("aspectRatio"));
        assert!(camel.message.contains("aspect_ratio"));
    }

    #[test]
    fn create_options() {
        assert!(validate_create(Some("order-1"), Some("https://example.com/hook")).is_ok());
        assert_eq!(
            validate_create(Some(&"x".repeat(256)), None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("clientRef")
        );
        for unsearchable in ["a\"b", "a\\b", "tab\there"] {
            assert_eq!(
                validate_create(Some(unsearchable), None)
                    .unwrap_err()
                    .field
                    .as_deref(),
                Some("clientRef")
            );
        }
        assert_eq!(
            validate_create(Some(""), None)
                .unwrap_err()
                .field
                .as_deref(),
            Some("clientRef")
        );
        assert_eq!(
            validate_create(None, Some("javascript:alert(1)"))
                .unwrap_err()
                .field
                .as_deref(),
            Some("callbackUrl")
        );
        assert!(validate_create(Some(&"é".repeat(255)), None).is_ok());
        assert!(validate_create(Some(&"é".repeat(256)), None).is_err());
        assert!(validate_untyped(&json!({"anything": 1})).is_ok());
        assert!(validate_untyped(&json!([1])).is_err());
    }
}
