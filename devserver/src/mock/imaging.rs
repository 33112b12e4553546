//! Real output images: the input image, cropped, downscaled and visibly (but deterministically)
//! edited, so tests and the demo can tell an output from its input and one output from another.

use std::{io::Cursor, path::Path};

use base64::Engine;
use image::{
    codecs::{jpeg::JpegEncoder, png::PngEncoder},
    imageops::{self, FilterType},
    DynamicImage, ImageEncoder, Rgb, RgbImage,
};
use percent_encoding::percent_decode_str;

use super::{assets::AssetStore, files::FileStore, run::Failure};

/// Longest side of an output image.
const MAX_SIDE: u32 = 1024;
/// Longest side of the gradient made for models that take no input image.
const GENERATED_SIDE: u32 = 512;
const JPEG_QUALITY: u8 = 88;

/// An output image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
        }
    }

    pub(crate) fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
        }
    }
}

/// What to produce for one run.
pub(crate) struct Job {
    /// The input `image_url`; `None` for models without one (they get a generated gradient).
    pub source: Option<String>,
    pub aspect_ratio: Option<String>,
    pub count: usize,
    pub format: Format,
    /// Prompt and seed: the edit is a function of these and the image index.
    pub key: String,
}

/// One encoded output image.
pub(crate) struct Encoded {
    pub width: u32,
    pub height: u32,
    pub format: Format,
    pub bytes: Vec<u8>,
}

/// The ratio an `aspect_ratio` value asks for, if it is one the API accepts.
pub(crate) fn parse_aspect_ratio(value: &str) -> Option<(u32, u32)> {
    let preset = match value {
        "square_hd" | "square" => Some((1, 1)),
        "portrait_4_3" => Some((3, 4)),
        "portrait_16_9" => Some((9, 16)),
        "landscape_4_3" => Some((4, 3)),
        "landscape_16_9" => Some((16, 9)),
        _ => None,
    };
    const RATIOS: [&str; 9] = [
        "21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21",
    ];
    preset.or_else(|| {
        let (w, h) = value.split_once(':').filter(|_| RATIOS.contains(&value))?;
        Some((w.parse().ok()?, h.parse().ok()?))
    })
}

/// Runs the whole pipeline. Blocking: call it from `spawn_blocking`.
///
/// # Errors
/// The failure the run reports: an unreachable or undecodable input image.
pub(crate) fn produce(
    job: &Job,
    www_dir: &Path,
    files: &FileStore,
    assets: &AssetStore,
) -> Result<Vec<Encoded>, Failure> {
    let aspect = job.aspect_ratio.as_deref().and_then(parse_aspect_ratio);
    let base = match &job.source {
        Some(url) => {
            let bytes = fetch_input(url, www_dir, files, assets)?;
            let image = image::load_from_memory(&bytes).map_err(|e| {
                Failure::new(
                    "INVALID_INPUT_IMAGE",
                    "preprocessing",
                    format!("The input image could not be decoded: {e}"),
                )
            })?;
            fit(image, aspect)
        }
        None => gradient(aspect.unwrap_or((1, 1)), hash(job.key.as_bytes())),
    };
    (0..job.count)
        .map(|index| {
            let edited = edit(&base, hash(format!("{}\0{index}", job.key).as_bytes()));
            encode(&edited, job.format)
        })
        .collect()
}

fn unreachable(url: &str) -> Failure {
    let shown: String = url.chars().take(100).collect();
    Failure::new(
        "INPUT_IMAGE_UNREACHABLE",
        "preprocessing",
        format!("The input image could not be downloaded from {shown}"),
    )
}

/// Gets the bytes behind `image_url`. Only `data:` URIs and this server's own URLs resolve:
/// the mock has no network, and any other host stands for a download that failed.
fn fetch_input(
    url: &str,
    www_dir: &Path,
    files: &FileStore,
    assets: &AssetStore,
) -> Result<Vec<u8>, Failure> {
    if let Some(rest) = url.strip_prefix("data:") {
        let invalid = |why: &str| Failure::new("INVALID_INPUT_IMAGE", "preprocessing", why);
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("Malformed data URI"))?;
        if !meta.ends_with(";base64") {
            return Err(invalid("Only base64 data URIs are supported"));
        }
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| invalid("The data URI is not valid base64"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| unreachable(url))?;
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(unreachable(url));
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = percent_decode_str(path).decode_utf8_lossy();
    if let Some(file) = path.strip_prefix("/__mock/files/") {
        let (run_id, name) = file.split_once('/').ok_or_else(|| unreachable(url))?;
        let index = name.split('.').next().and_then(|i| i.parse().ok());
        return index
            .and_then(|i| files.get(run_id, i))
            .map(|(_, bytes)| bytes.to_vec())
            .ok_or_else(|| unreachable(url));
    }
    // A confirmed upload's URL, as a run's `image_url` names it.
    if let Some(id) = path.strip_prefix("/__mock/assets/") {
        return assets
            .file(id)
            .map(|(_, bytes)| bytes.to_vec())
            .ok_or_else(|| unreachable(url));
    }
    // Only plain names below WWW_DIR: never `..` out of it.
    let mut file = www_dir.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part.contains('\\') {
            return Err(unreachable(url));
        }
        file.push(part);
    }
    std::fs::read(file).map_err(|_| unreachable(url))
}

/// Center-crops to `aspect` (if any), then downscales so the long side is at most `MAX_SIDE`.
fn fit(image: DynamicImage, aspect: Option<(u32, u32)>) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let (cw, ch) = match aspect {
        // Compare w/h with rw/rh without floats; crop whichever side is too long.
        Some((rw, rh)) if u64::from(w) * u64::from(rh) > u64::from(h) * u64::from(rw) => (
            (u64::from(h) * u64::from(rw) / u64::from(rh)).max(1) as u32,
            h,
        ),
        Some((rw, rh)) => (
            w,
            (u64::from(w) * u64::from(rh) / u64::from(rw)).max(1) as u32,
        ),
        None => (w, h),
    };
    let cropped = image.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch);
    let long = cw.max(ch);
    let scaled = if long > MAX_SIDE {
        let scale =
            |side: u32| ((u64::from(side) * u64::from(MAX_SIDE) / u64::from(long)) as u32).max(1);
        cropped.resize_exact(scale(cw), scale(ch), FilterType::Triangle)
    } else {
        cropped
    };
    scaled.into_rgb8()
}

/// A diagonal gradient in the given ratio, for models without an input image.
fn gradient((rw, rh): (u32, u32), seed: u64) -> RgbImage {
    let (w, h) = if rw >= rh {
        (GENERATED_SIDE, (GENERATED_SIDE * rh / rw).max(1))
    } else {
        ((GENERATED_SIDE * rw / rh).max(1), GENERATED_SIDE)
    };
    let blue = seed.to_le_bytes()[0];
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, blue])
    })
}

/// The visible "edit": a hue rotation of at least 60 degrees plus a coloured frame, both chosen
/// by `seed`, so outputs differ from the input and from each other yet are reproducible.
fn edit(base: &RgbImage, seed: u64) -> RgbImage {
    let [b0, b1, r, g, b, ..] = seed.to_le_bytes();
    let degrees = 60 + i32::from(u16::from_le_bytes([b0, b1]) % 240);
    let mut image = imageops::huerotate(base, degrees);
    let (w, h) = image.dimensions();
    let frame = (w.min(h) / 24).max(1);
    let colour = Rgb([r, g, b]);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        if x < frame || y < frame || x >= w - frame || y >= h - frame {
            *pixel = colour;
        }
    }
    image
}

fn encode(image: &RgbImage, format: Format) -> Result<Encoded, Failure> {
    let mut bytes = Vec::new();
    let (w, h) = image.dimensions();
    let result = match format {
        Format::Jpeg => JpegEncoder::new_with_quality(Cursor::new(&mut bytes), JPEG_QUALITY)
            .write_image(image, w, h, image::ExtendedColorType::Rgb8),
        Format::Png => PngEncoder::new(Cursor::new(&mut bytes)).write_image(
            image,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        ),
    };
    result.map_err(|e| {
        Failure::new(
            "INTERNAL_ERROR",
            "postprocessing",
            format!("Encoding failed: {e}"),
        )
    })?;
    Ok(Encoded {
        width: w,
        height: h,
        format,
        bytes,
    })
}

/// FNV-1a: stable across Rust versions and processes, unlike `DefaultHasher`.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_and_presets() {
        assert_eq!(parse_aspect_ratio("16:9"), Some((16, 9)));
        assert_eq!(parse_aspect_ratio("portrait_16_9"), Some((9, 16)));
        assert_eq!(parse_aspect_ratio("square_hd"), Some((1, 1)));
        assert_eq!(parse_aspect_ratio("5:4"), None);
        assert_eq!(parse_aspect_ratio("wide"), None);
    }

    #[test]
    fn large_images_are_cropped_then_downscaled() {
        let image = DynamicImage::ImageRgb8(RgbImage::new(3000, 1000));
        assert_eq!(fit(image.clone(), None).dimensions(), (1024, 341));
        assert_eq!(fit(image.clone(), Some((1, 1))).dimensions(), (1000, 1000));
        assert_eq!(fit(image, Some((9, 16))).dimensions(), (562, 1000));
    }

    #[test]
    fn the_edit_is_visible_and_deterministic() {
        let base = RgbImage::from_pixel(40, 40, Rgb([200, 30, 30]));
        let a = edit(&base, 1);
        assert_eq!(a, edit(&base, 1));
        assert_ne!(a, edit(&base, 2));
        assert_ne!(a.get_pixel(20, 20), base.get_pixel(20, 20));
    }

    #[test]
    fn only_local_urls_resolve() {
        let (files, assets) = (FileStore::default(), AssetStore::default());
        let www = Path::new(env!("CARGO_MANIFEST_DIR"));
        let code = |url: &str| {
            fetch_input(url, www, &files, &assets)
                .map(|_| ())
                .map_err(|f| f.code)
        };
        assert_eq!(
            code("https://example.com/a.png"),
            Err("INPUT_IMAGE_UNREACHABLE".into())
        );
        assert_eq!(
            code("http://127.0.0.1:1/../etc/passwd"),
            Err("INPUT_IMAGE_UNREACHABLE".into())
        );
        assert_eq!(code("http://localhost:9/Cargo.toml?x=1"), Ok(()));
        assert_eq!(
            code("ftp://127.0.0.1/Cargo.toml"),
            Err("INPUT_IMAGE_UNREACHABLE".into())
        );
        assert_eq!(
            code("http://127.0.0.1:8080/__mock/assets/asset_unknown"),
            Err("INPUT_IMAGE_UNREACHABLE".into())
        );
        assert_eq!(
            code("data:image/png;base64,@@"),
            Err("INVALID_INPUT_IMAGE".into())
        );
    }
}
