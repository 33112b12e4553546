// A picked, dropped or pasted file, checked and described for the page. The client sends the
// File itself: inline under 1 MiB, through Runflow's asset upload above, and downscaled first
// when it is over 4 megapixels (the client's prepareImage option).

/** Files above this are refused outright: decoding them could exhaust a phone's memory. */
const MAX_SOURCE_BYTES = 50 * 1024 * 1024;
/** What the client sends inline; anything larger is uploaded. */
const INLINE_BYTES = 1024 * 1024;
/** The client's prepareImage default: bigger pictures are downscaled to this before sending. */
const MAX_MEGAPIXELS = 4;
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
 * Checks `file` and describes it: `{ file, src, width, height, bytes, type, name, note, thumbnail }`,
 * `src` being an object URL for the preview. `note` says how it will be sent when that is worth
 * knowing (downscaled, uploaded), or is empty. Throws ImageInputError for anything that is not a
 * usable image; the client checks the bytes themselves again.
 */
export async function inspectImageFile(file) {
  const name = file.name || "pasted image";
  const looksLikeImage = file.type ? file.type.startsWith("image/") : IMAGE_EXT.test(name);
  if (!looksLikeImage) {
    const what = file.type ? `a ${file.type} file` : "not an image";
    throw new ImageInputError(`“${name}” is ${what}. Choose a picture: JPEG, PNG or WebP.`);
  }
  if (file.size === 0) throw new ImageInputError(`“${name}” is empty.`);
  if (file.size > MAX_SOURCE_BYTES) {
    throw new ImageInputError(
      `“${name}” is ${formatBytes(file.size)}; pictures up to ${formatBytes(MAX_SOURCE_BYTES)} can be sent. Export a smaller copy and try again.`,
    );
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    throw new ImageInputError(
      `“${name}” could not be opened as a picture. It may be damaged, or in a format this browser cannot read (HEIC, for example): try a JPEG or PNG.`,
    );
  }
  try {
    const { width, height } = bitmap;
    const thumbnail = await makeThumbnail(bitmap);
    const megapixels = (width * height) / 1e6;
    let note = "";
    if (megapixels > MAX_MEGAPIXELS) {
      note = `${width}×${height} is ${megapixels.toFixed(1)} megapixels: it will be downscaled to about ${MAX_MEGAPIXELS} before sending, which is plenty for the model and uploads faster.`;
    } else if (file.size >= INLINE_BYTES) {
      note = `Over 1 MiB: it will be uploaded to Runflow first (you will see the progress), then edited.`;
    }
    return { file, src: URL.createObjectURL(file), width, height, bytes: file.size, type: file.type, name, note, thumbnail };
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
