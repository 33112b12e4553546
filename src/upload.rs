//! Local images as input: what the bytes really are (magic numbers, not names), the size limits,
//! inline `data:` URI or asset upload, and the base64 of a `data:` URI, chunk by chunk.

use crate::error::Error;
use crate::json::{Json, JsonValue as Value};
use crate::text::decimal;

/// The largest file Runflow's asset upload takes (50 MiB).
pub const MAX_UPLOAD_BYTES: f64 = 52_428_800.0;
/// Images under this size go inline as a `data:` URI; larger ones are uploaded.
pub const DEFAULT_INLINE_LIMIT: f64 = 1_048_576.0;
/// Bytes encoded per step: a multiple of 3, so chunks' base64 concatenates without padding.
pub const CHUNK: usize = 3 * 64 * 1024;

/// The image formats Runflow's models read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
    /// GIF.
    Gif,
    /// AVIF.
    Avif,
}

impl ImageType {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            ImageType::Jpeg => "image/jpeg",
            ImageType::Png => "image/png",
            ImageType::Webp => "image/webp",
            ImageType::Gif => "image/gif",
            ImageType::Avif => "image/avif",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageType::Jpeg => "jpg",
            ImageType::Png => "png",
            ImageType::Webp => "webp",
            ImageType::Gif => "gif",
            ImageType::Avif => "avif",
        }
    }
}

/// The image type the first bytes announce, whatever the file's name or declared type says.
///
/// ```
/// use runflow_kontext::upload::{ImageType, sniff};
/// assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(ImageType::Png));
/// assert_eq!(sniff(b"<html>"), None);
/// ```
pub fn sniff(head: &[u8]) -> Option<ImageType> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\xFF\xD8\xFF") {
        Some(ImageType::Jpeg)
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Some(ImageType::Png)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some(ImageType::Webp)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some(ImageType::Gif)
    } else if at(4, b"ftypavif") || at(4, b"ftypavis") {
        Some(ImageType::Avif)
    } else {
        None
    }
}

/// How an image gets to Runflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// In the create request, as a `data:` URI.
    Inline,
    /// Through the three-step asset upload.
    Upload,
}

/// Checks a local image and picks its route: `field` names it in errors.
///
/// # Errors
/// `validation_error` on `field` for an empty file, one over 50 MiB, or bytes that are not an
/// image Runflow reads.
pub fn plan(
    field: &str,
    head: &[u8],
    size: f64,
    inline_limit: f64,
) -> Result<(ImageType, Route), Error> {
    if size <= 0.0 {
        return Err(Error::about(
            field,
            " is empty (0 bytes): choose a picture.",
        ));
    }
    if size > MAX_UPLOAD_BYTES {
        return Err(Error::about(
            field,
            &[
                " is ",
                &decimal(size as u64),
                " bytes; Runflow takes files up to 50 MiB (52428800 bytes). Shrink it (the prepareImage option does it in a browser) or host it at an https URL.",
            ]
            .concat(),
        ));
    }
    let Some(kind) = sniff(head) else {
        let heif = head.get(4..8) == Some(b"ftyp");
        return Err(Error::about(
            field,
            if heif {
                " is not a JPEG, PNG, WebP, GIF or AVIF image (judged by its first bytes, not its name or type): it looks like HEIC/HEIF, which Runflow does not read; convert it to JPEG first."
            } else {
                " is not a JPEG, PNG, WebP, GIF or AVIF image (judged by its first bytes, not its name or type)."
            },
        ));
    };
    let route = if size < inline_limit {
        Route::Inline
    } else {
        Route::Upload
    };
    Ok((kind, route))
}

/// The `data:` URI's header, up to and including the comma.
pub fn data_uri_prefix(kind: ImageType) -> String {
    ["data:", kind.mime(), ";base64,"].concat()
}

/// Base64 of `input` into `out`, which must hold `4 * ceil(len / 3)` bytes; returns the length.
/// Only the last chunk of a file may have a length that is not a multiple of 3.
///
/// Hand-written: the base64 crate's engine cost 1.3 KB gzip in the module for this one function;
/// the tests hold this one to the crate's output.
pub fn encode_chunk(input: &[u8], out: &mut [u8]) -> usize {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut written = 0;
    for (group, slot) in input.chunks(3).zip(out.chunks_mut(4)) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = byte(0) << 16 | byte(1) << 8 | byte(2);
        for (i, place) in slot.iter_mut().enumerate() {
            *place = if i <= group.len() {
                ALPHABET
                    .get((bits >> (18 - 6 * i) & 63) as usize)
                    .copied()
                    .unwrap_or(b'=')
            } else {
                b'='
            };
        }
        written += slot.len();
    }
    written
}

/// The base64 length of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// A file name to declare for the upload: the given one when usable, else `image.<ext>`.
pub fn file_name(given: Option<&str>, kind: ImageType) -> String {
    match given.map(str::trim) {
        // Runflow counts characters; 255 bytes are at most 255 of them.
        Some(name) if !name.is_empty() && name.len() <= 255 => name.to_owned(),
        _ => ["image.", kind.extension()].concat(),
    }
}

/// The body of `POST /v1/asset-uploads`.
pub fn upload_request(file_name: &str, kind: ImageType, size: f64) -> Value {
    Value::object(vec![
        ("filename", Value::string(file_name)),
        ("mime_type", Value::string(kind.mime())),
        ("size_bytes", Value::number(size)),
    ])
}

/// `(asset_id, upload_url)` from the answer to `POST /v1/asset-uploads`.
///
/// # Errors
/// `invalid_response` when either is missing or the URL is not http(s).
pub fn read_upload_slot(status: u16, body: &Value) -> Result<(String, String), Error> {
    let asset_id = Json::as_str(&body.member("asset_id")).filter(|id| !id.is_empty());
    let upload_url = Json::as_str(&body.member("upload_url")).filter(|url| is_http_url(url));
    match (asset_id, upload_url) {
        (Some(id), Some(url)) => Ok((id, url)),
        _ => Err(Error::invalid_response(
            status,
            "an upload slot without asset_id and upload_url",
        )),
    }
}

/// The signed `url` from the answer to the confirmation.
///
/// # Errors
/// `invalid_response` when it is missing or not http(s).
pub fn read_asset_url(status: u16, body: &Value) -> Result<String, Error> {
    Json::as_str(&body.member("url"))
        .filter(|url| is_http_url(url))
        .ok_or_else(|| Error::invalid_response(status, "a confirmed asset without its url"))
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && url.len() > "https://".len()
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn each_magic_number() {
        let cases: [(&[u8], Option<ImageType>); 11] = [
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", Some(ImageType::Jpeg)),
            (b"\xFF\xD8\xFF\xE1\0\x10Exif", Some(ImageType::Jpeg)),
            (PNG, Some(ImageType::Png)),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some(ImageType::Webp)),
            (b"GIF89a\x01\0\x01\0", Some(ImageType::Gif)),
            (b"GIF87a\x01\0\x01\0", Some(ImageType::Gif)),
            (b"\0\0\0\x1cftypavif\0\0", Some(ImageType::Avif)),
            (b"\0\0\0\x20ftypavis\0\0", Some(ImageType::Avif)),
            (b"RIFF\x24\0\0\0WAVEfmt ", None),
            (b"%PDF-1.7\n", None),
            (b"\xFF\xD8", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), expected, "{head:?}");
        }
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn the_threshold_both_sides() {
        let route = |size: f64| {
            plan("image", PNG, size, DEFAULT_INLINE_LIMIT)
                .ok()
                .map(|p| p.1)
        };
        assert_eq!(route(1.0), Some(Route::Inline));
        assert_eq!(route(DEFAULT_INLINE_LIMIT - 1.0), Some(Route::Inline));
        assert_eq!(route(DEFAULT_INLINE_LIMIT), Some(Route::Upload));
        assert_eq!(route(MAX_UPLOAD_BYTES), Some(Route::Upload));
        assert_eq!(
            plan("image", PNG, 10.0, 0.0).ok().map(|p| p.1),
            Some(Route::Upload)
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_limit() {
        let refuse = |head: &[u8], size: f64| {
            let error = plan("image", head, size, DEFAULT_INLINE_LIMIT).unwrap_err();
            assert_eq!(error.code, ErrorCode::ValidationError);
            assert_eq!(error.field.as_deref(), Some("image"));
            error.message
        };
        assert!(refuse(PNG, 0.0).contains("empty"));
        assert!(refuse(PNG, MAX_UPLOAD_BYTES + 1.0).contains("50 MiB"));
        assert!(refuse(b"<!doctype html>", 100.0).contains("not a JPEG, PNG, WebP, GIF or AVIF"));
        assert!(refuse(b"\0\0\0\x18ftypheic\0\0", 100.0).contains("HEIC"));
    }

    #[test]
    fn base64_in_chunks_equals_base64_of_the_whole() {
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 7)).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = vec![0; encoded_len(CHUNK)];
        let mut chunked = String::new();
        for chunk in bytes.chunks(CHUNK) {
            let n = encode_chunk(chunk, &mut out);
            chunked.push_str(std::str::from_utf8(&out[..n]).unwrap());
        }
        assert_eq!(chunked, STANDARD.encode(&bytes));
        for tail in [&b"f"[..], b"fo", b"foo", b"foob", b""] {
            let n = encode_chunk(tail, &mut out);
            assert_eq!(&out[..n], STANDARD.encode(tail).as_bytes());
        }
        assert_eq!(data_uri_prefix(ImageType::Webp), "data:image/webp;base64,");
    }

    #[test]
    fn file_names_and_answers() {
        assert_eq!(file_name(Some("cat.png"), ImageType::Png), "cat.png");
        assert_eq!(file_name(Some("  "), ImageType::Jpeg), "image.jpg");
        assert_eq!(file_name(None, ImageType::Gif), "image.gif");
        assert_eq!(
            upload_request("a.png", ImageType::Png, 12.0),
            json!({"filename": "a.png", "mime_type": "image/png", "size_bytes": 12})
        );
        let slot = json!({"asset_id": "asset_1", "upload_url": "https://s3.example/put?sig=1"});
        assert_eq!(
            read_upload_slot(201, &slot).unwrap(),
            ("asset_1".into(), "https://s3.example/put?sig=1".into())
        );
        let error = read_upload_slot(201, &json!({"asset_id": "a"})).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidResponse);
        assert_eq!(
            read_asset_url(201, &json!({"url": "https://cdn.example/a.png?sig=2"})).unwrap(),
            "https://cdn.example/a.png?sig=2"
        );
        assert!(read_asset_url(201, &json!({"url": "javascript:alert(1)"})).is_err());
    }
}
