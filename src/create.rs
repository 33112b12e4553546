//! A create with its image: a local image is taken out of the input (before it is validated) and
//! turned into its `image_url` first, and a create refused as too large with an image inline is
//! made once more with the image uploaded. The JS edge only reads the options and calls in here.

use js_sys::{JsString, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use crate::client::{Client, CreateRequest, random_words};
use crate::error::{Error, ErrorCode};
use crate::http::{Call, LocalBoxFuture};
use crate::image_source::{ImageOptions, Local, local_image};
use crate::input::{
    KONTEXT_MODEL, validate_kontext, validate_kontext_without_image, validate_untyped,
};
use crate::json::js_key;
use crate::policy::new_ref;
use crate::run::Run;

/// A local image taken out of the input: the field it was given as, and the wire field its
/// `image_url` goes in.
pub type LocalField = (&'static str, &'static str, Local);

/// Validates a create's input with any local image (a File, Blob or bytes as `image` or
/// `image_url`) taken out of a copy of it, to be checked and sent once the rest is valid, so
/// that a bad field costs no upload. The image's field names: as given, and on the wire.
///
/// # Errors
/// `validation_error` for the input, or for both image fields given.
pub fn take_local_image(
    client: &Client,
    input: &JsValue,
) -> Result<(JsValue, Option<LocalField>), Error> {
    let kontext = client.model == KONTEXT_MODEL;
    let mut input = input.clone();
    let mut local = None;
    for name in ["image", "image_url"] {
        let value = Reflect::get(&input, &js_key(name)).unwrap_or(JsValue::UNDEFINED);
        if let Some(image) = local_image(&value, client.inline_limit()) {
            if local.is_some() {
                return Err(Error::invalid(
                    "image",
                    "Give either `image` or `image_url`, not both.",
                ));
            }
            let copy = Object::assign(&Object::new(), input.unchecked_ref());
            let _ = Reflect::delete_property(&copy, &name.into());
            input = copy.into();
            local = Some((name, if kontext { "image_url" } else { name }, image));
        }
    }
    let wire = match (kontext, local.is_some()) {
        (true, false) => validate_kontext(&input)?,
        (true, true) => validate_kontext_without_image(&input)?,
        (false, _) => validate_untyped(&input)?,
    };
    Ok((wire, local))
}

/// Creates the run, first turning a local image taken out of the input into its `image_url`.
/// A create refused as too large (413: a proxy with a small body cap, such as Runflow's own at
/// 32 KiB) while an image went inline, whether the client inlined it or it was given as a
/// `data:` URI, is made once more with the image uploaded, and the client learns to upload
/// such images at once.
///
/// Boxed: `createRun` and `run` share one copy of it.
pub fn create_with_image<'a>(
    client: &'a Client,
    wire: JsValue,
    request: CreateRequest,
    mut local: Option<LocalField>,
    progress: &'a JsValue,
    call: &'a Call,
) -> LocalBoxFuture<'a, Result<Run, Error>> {
    Box::pin(async move {
        let mut settings = image_options(client, progress);
        // One client_ref for both attempts: it names the one logical create.
        let mut request = CreateRequest {
            client_ref: request
                .client_ref
                .or_else(|| Some(new_ref("rk_", random_words()))),
            ..request
        };
        let mut refused_once = false;
        loop {
            let (wire_name, url) = match &local {
                Some((given, wire_name, image)) => {
                    let url = client
                        .image_url(given, image.clone(), &settings, call)
                        .await?;
                    set_field(&wire, wire_name, &url)?;
                    (*wire_name, url)
                }
                None => ["image_url", "image"]
                    .into_iter()
                    .map(|name| (name, Reflect::get(&wire, &js_key(name)).unwrap_or_default()))
                    .find(|(_, url)| is_data_uri(url))
                    .unwrap_or(("image_url", JsValue::UNDEFINED)),
            };
            match client.create_run(wire.clone(), request.clone(), call).await {
                Err(error)
                    if error.code == ErrorCode::PayloadTooLarge
                        && !refused_once
                        && is_data_uri(&url) =>
                {
                    refused_once = true;
                    let length = url.dyn_ref::<JsString>().map_or(0, JsString::length);
                    client.learn_inline_refusal(f64::from(length) * 0.75);
                    settings.inline_limit = 0.0;
                    if local.is_none() {
                        let Some(image) = local_image(&url, 0.0) else {
                            return Err(error);
                        };
                        local = Some((wire_name, wire_name, image));
                    }
                    // The same key with another body would be refused as a conflict.
                    request.idempotency_key = request
                        .idempotency_key
                        .map(|key| [key.as_str(), "-upload"].concat());
                }
                created => return created,
            }
        }
    })
}

fn is_data_uri(url: &JsValue) -> bool {
    url.dyn_ref::<JsString>()
        .is_some_and(|url| url.starts_with("data:", 0))
}

fn set_field(wire: &JsValue, name: &str, value: &JsValue) -> Result<(), Error> {
    Reflect::set(wire, &name.into(), value)
        .map(drop)
        .map_err(|_| Error::invalid("input", "The input object cannot be extended."))
}

/// The client's settings for local images, with the call's guarded `onUploadProgress`.
pub fn image_options(client: &Client, progress: &JsValue) -> ImageOptions {
    ImageOptions {
        inline_limit: client.inline_limit(),
        prepare: client.prepare.clone(),
        on_progress: progress.clone(),
    }
}
