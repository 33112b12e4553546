// Turning a picked, dropped or pasted file into something the client can send today: a
// `data:` URI under 1 MiB. The client takes no File/Blob yet (asset upload comes later), so larger
// pictures are downscaled here with a canvas, which is what a person editing a photo wants anyway.

/** The largest image sent inline as a `data:` URI (Runflow recommends < 1 MiB). */
export const MAX_INLINE_BYTES = 1024 * 1024;
/** Files above this are refused outright: decoding them could exhaust a phone's memory. */
const MAX_SOURCE_BYTES = 50 * 1024 * 1024;
/** Longest side tried first when a picture must be made smaller. */
const FIRST_LONG_SIDE = 2048;
/** Formats sent as they are when small enough; anything else is re-encoded. */
const PASSTHROUGH = new Set(["image/jpeg", "image/png", "image/webp", "image/gif"]);
const IMAGE_EXT = /\.(jpe?g|png|webp|gif|bmp|avif|heic|heif|tiff?)$/i;

/** A refusal a person can act on; `message` is shown as is. */
export class ImageInputError extends Error {}

/** "1.2 MB", "640 KB", "512 bytes". */
export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function readAsDataUri(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error("FileReader failed"));
    reader.readAsDataURL(blob);
  });
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("canvas.toBlob gave nothing"))), type, quality);
  });
}

function draw(bitmap, width, height, background) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  if (background) {
    // JPEG has no transparency: put transparent areas on white rather than black.
    context.fillStyle = background;
    context.fillRect(0, 0, width, height);
  }
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  return canvas;
}

function fitInside(width, height, longSide) {
  const scale = Math.min(1, longSide / Math.max(width, height));
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

/**
 * Reads `file` into `{ dataUri, width, height, bytes, type, name, note, thumbnail }`.
 * `note` says what was done to the picture (downscaled, converted), or is empty.
 * Throws ImageInputError for anything that is not a usable image.
 */
export async function prepareImageFile(file) {
  const name = file.name || "pasted image";
  const looksLikeImage = file.type ? file.type.startsWith("image/") : IMAGE_EXT.test(name);
  if (!looksLikeImage) {
    const what = file.type ? `a ${file.type} file` : "not an image";
    throw new ImageInputError(`“${name}” is ${what}. Choose a picture: JPEG, PNG or WebP.`);
  }
  if (file.size === 0) throw new ImageInputError(`“${name}” is empty.`);
  if (file.size > MAX_SOURCE_BYTES) {
    throw new ImageInputError(
      `“${name}” is ${formatBytes(file.size)}; pictures up to ${formatBytes(MAX_SOURCE_BYTES)} can be shrunk here. ` +
        "Larger files need the upload support coming in a later version.",
    );
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new ImageInputError(
      `“${name}” could not be opened as a picture. It may be damaged, or in a format this browser cannot read (HEIC, for example): try a JPEG or PNG.`,
    );
  }
  try {
    const { width, height } = bitmap;
    const thumbnail = await makeThumbnail(bitmap);
    if (file.size <= MAX_INLINE_BYTES && PASSTHROUGH.has(file.type)) {
      const dataUri = await readAsDataUri(file);
      return { dataUri, width, height, bytes: file.size, type: file.type, name, note: "", thumbnail };
    }
    // Too big to send inline (or a format worth converting): re-encode, smaller until it fits.
    const keepPng = file.type === "image/png" && file.size <= MAX_INLINE_BYTES;
    let longSide = Math.min(FIRST_LONG_SIDE, Math.max(width, height));
    let quality = 0.9;
    for (let attempt = 0; attempt < 12; attempt += 1) {
      const [w, h] = fitInside(width, height, longSide);
      const type = keepPng ? "image/png" : "image/jpeg";
      const blob = await canvasBlob(draw(bitmap, w, h, keepPng ? null : "#ffffff"), type, quality);
      if (blob.size <= MAX_INLINE_BYTES) {
        const dataUri = await readAsDataUri(blob);
        const resized = w !== width || h !== height;
        const note = resized
          ? `Resized from ${width}×${height} (${formatBytes(file.size)}) to ${w}×${h} (${formatBytes(blob.size)}) so it can be sent inline. ` +
            "Larger files need the upload support coming in a later version."
          : `Converted to ${type === "image/png" ? "PNG" : "JPEG"} (${formatBytes(blob.size)}) so Runflow can read it.`;
        return { dataUri, width: w, height: h, bytes: blob.size, type, name, note, thumbnail };
      }
      longSide = Math.round(longSide * 0.8);
      quality = Math.max(0.7, quality - 0.04);
    }
    throw new ImageInputError(`“${name}” could not be made small enough to send inline; try a smaller picture.`);
  } finally {
    bitmap.close?.();
  }
}

/** A small JPEG `data:` URI of the picture, for the history list (localStorage is small). */
export async function makeThumbnail(source, longSide = 480) {
  const [w, h] = fitInside(source.width, source.height, longSide);
  const blob = await canvasBlob(draw(source, w, h, "#ffffff"), "image/jpeg", 0.78);
  return readAsDataUri(blob);
}

/** Loads an image URL into an <img>, resolving with its natural size (or rejecting). */
export function probeImageUrl(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight, img });
    img.onerror = () => reject(new Error("could not load"));
    img.src = url;
  });
}

/** Fetches a same-origin picture (the bundled sample) and prepares it like a picked file. */
export async function fileFromUrl(url, name) {
  const response = await fetch(url);
  if (!response.ok) throw new ImageInputError(`The sample picture could not be loaded (HTTP ${response.status}).`);
  const blob = await response.blob();
  return new File([blob], name, { type: blob.type || "image/jpeg" });
}
