// The JS side of the wasm edge: the error class, built redacted with the cause a callback
// threw; each request and sleep raced against its timer, the caller's signal and (for waits)
// the network's return; and, for local images, reading and downscaling them and the
// progress-reporting PUT to a presigned URL.

/**
 * Every failure of the client rejects with a RunflowError. Fields are always present
 * (undefined when they do not apply), so the shape is stable for logging and for editors.
 */
export class RunflowError extends Error {
  constructor(message, props = {}) {
    super(message, props.cause === undefined ? undefined : { cause: props.cause });
    this.name = "RunflowError";
    this.code = props.code;
    this.status = props.status ?? undefined;
    this.runId = props.runId ?? undefined;
    this.requestId = props.requestId ?? undefined;
    this.retryable = props.retryable === true;
    this.field = props.field ?? undefined;
    this.clientRef = props.clientRef ?? undefined;
    this.serverCode = props.serverCode ?? undefined;
    this.retryAfterMs = props.retryAfterMs ?? undefined;
    this.run = props.run ?? undefined;
    this.step = props.step ?? undefined;
  }
}

// Requests in flight, each with its deadline (performance.now() ms). One timer serves them all,
// re-armed only for a sooner deadline: a setTimeout and a clearTimeout per request cost more than
// the rest of the race. In Node it keeps the process alive only while a request is in flight.
const inFlight = new Map();
let timer;
let timerAt = Infinity;

function armTimer(at) {
  if (at >= timerAt) return;
  clearTimeout(timer);
  timerAt = at;
  timer = setTimeout(expireRequests, Math.min(at - performance.now(), 2 ** 31 - 1));
}

function expireRequests() {
  timerAt = Infinity;
  const now = performance.now();
  let next = Infinity;
  for (const [stop, at] of inFlight) {
    if (at <= now) stop("timeout");
    else next = Math.min(next, at);
  }
  if (next < Infinity) armTimer(next);
}

/**
 * One request for the wasm side: `fetchFn(url, init)` with a signal of its own, the body read as
 * text (as a Blob with `asBlob`), raced against `ms` and the caller's `signal`. Resolves
 * `[response, body]` (body null when the fetch gave something that is not a Response); rejects
 * with "aborted", "timeout" (the request is then aborted), or whatever the fetch threw.
 */
export function exchange(fetchFn, url, init, signal, ms, asBlob) {
  const controller = new AbortController();
  init.signal = controller.signal;
  return new Promise((resolve, reject) => {
    const end = (settle, value) => {
      inFlight.delete(stop);
      if (inFlight.size === 0) timer?.unref?.();
      signal?.removeEventListener("abort", onAbort);
      settle(value);
    };
    const stop = (why) => {
      end(reject, why);
      controller.abort();
    };
    const onAbort = () => stop("aborted");
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort);
    const at = performance.now() + ms;
    inFlight.set(stop, at);
    armTimer(at);
    timer.ref?.();
    // Called from a fresh microtask rather than from deep in the wasm call stack: while DevTools
    // records the network (as under test automation), Chromium captures each request's initiator
    // stack, which costs about 0.1 ms per request from down there.
    Promise.resolve()
      .then(() => fetchFn(url, init))
      .then((response) =>
        typeof response?.text === "function"
          ? (asBlob ? response.blob() : response.text()).then((body) => [response, body])
          : [response, null],
      )
      .then((answer) => end(resolve, answer), (error) => end(reject, error));
  });
}

/**
 * Resolves false after `ms`, or rejects with "aborted" as soon as `signal` fires. With `wake`
 * 1, resolves true at once when online, else at the `online` event; with 2 (between polls), true
 * when the page becomes visible again or at the `online` event.
 */
export function sleep(ms, signal, wake) {
  return new Promise((resolve, reject) => {
    const page = globalThis.document;
    const end = (settle, value) => {
      clearTimeout(timer);
      globalThis.removeEventListener?.("online", onWake);
      page?.removeEventListener("visibilitychange", onVisible);
      signal?.removeEventListener("abort", onAbort);
      settle(value);
    };
    const onWake = () => end(resolve, true);
    const onVisible = () => page.visibilityState === "visible" && onWake();
    const onAbort = () => end(reject, "aborted");
    const timer = setTimeout(() => end(resolve, false), ms);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort);
    if (wake) globalThis.addEventListener?.("online", onWake);
    if (wake === 2) page?.addEventListener("visibilitychange", onVisible);
    if (wake === 1 && !isOffline()) onWake();
  });
}

/**
 * The callback relay a response advertises in `Runflow-Kontext-Relay` (`events=<path with
 * {id}>; callback=<http(s) URL>`, parts in any order, as docs/callbacks.md specifies):
 * `[events, callback]`, or [] when it advertises none.
 */
export function relayOf(response) {
  let header = "";
  try {
    // A `fetch` option may resolve to a stand-in without headers: then there is no relay.
    header = response.headers?.get?.("runflow-kontext-relay") ?? "";
  } catch {}
  const parts = Object.fromEntries(header.split(";").map((part) => part.trim().split(/=(.*)/s)));
  return parts.events?.includes("{id}") && /^https?:\/\//.test(parts.callback) ? [parts.events, parts.callback] : [];
}

// Streams open per origin. Over HTTP/1.1 a browser keeps 6 connections to one origin, and each
// open stream holds one for the whole run: past this many, runs are polled, so that their GETs
// (and the page's other requests) never queue behind streams.
const MAX_STREAMS_PER_ORIGIN = 4;
const openStreams = new Map();

/**
 * A run's event stream on the server's callback relay: an EventSource on `path` with run `id`
 * for its `{id}` (resolved against `base`, itself against the page); null where there is no
 * EventSource (Node 20), "busy" when this origin has MAX_STREAMS_PER_ORIGIN open already.
 * `next(ms, signal)` resolves the next happening: "open" (connected or reconnected: check the
 * run), "closed" (the relay refused, or a reconnect failed: poll instead), "silent" (nothing for
 * `ms`) or an event's parsed data; it rejects with "aborted" when `signal` fires. `close()` ends it.
 */
export function listen(path, id, base) {
  if (typeof EventSource !== "function") return null;
  let url;
  try {
    url = new URL(path.replace("{id}", id), new URL(base, globalThis.location?.href));
  } catch {
    return null;
  }
  const open = openStreams.get(url.origin) ?? 0;
  if (open >= MAX_STREAMS_PER_ORIGIN) return "busy";
  const source = new EventSource(url);
  openStreams.set(url.origin, open + 1);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    source.close();
    openStreams.set(url.origin, openStreams.get(url.origin) - 1);
  };
  const queue = [];
  let waiter;
  let opened = false;
  const push = (item) => (waiter ? waiter(item) : queue.push(item));
  source.onopen = () => {
    opened = true;
    push("open");
  };
  // EventSource retries on its own; a failed first connection or a failed retry means no relay.
  source.onerror = () => {
    if (source.readyState === 2 || !opened) {
      close();
      push("closed");
    }
    opened = false;
  };
  source.onmessage = (message) => {
    try {
      push(JSON.parse(message.data));
    } catch {}
  };
  return {
    next: (ms, signal) =>
      queue.length
        ? Promise.resolve(queue.shift())
        : new Promise((resolve, reject) => {
            const end = (settle, value) => {
              waiter = undefined;
              clearTimeout(timer);
              signal?.removeEventListener("abort", onAbort);
              settle(value);
            };
            const onAbort = () => end(reject, "aborted");
            const timer = setTimeout(() => end(resolve, "silent"), ms);
            if (signal?.aborted) return onAbort();
            signal?.addEventListener("abort", onAbort);
            waiter = (item) => end(resolve, item);
          }),
    close,
  };
}

/** Whether the host says it has no network: offline, a request can only fail. */
export function isOffline() {
  return globalThis.navigator?.onLine === false;
}

/**
 * `value` with every secret replaced by "[redacted]" in every string it holds, however deep
 * (a response body, an error's message, fields and run), so no key a server echoed reaches
 * the caller.
 */
export function redact(value, secrets) {
  if (typeof value === "string") return secrets.reduce((text, secret) => text.split(secret).join("[redacted]"), value);
  if (value && typeof value === "object") for (const key of Object.keys(value)) value[key] = redact(value[key], secrets);
  return value;
}

/**
 * The RunflowError of a failed call: its strings redacted of `secrets`, and with what a
 * callback of the caller threw meanwhile (`reports.thrown`) as its `cause`.
 */
export function failure(message, props, secrets, reports) {
  props = redact(props, secrets);
  if (reports?.thrown !== undefined) props.cause = reports.thrown;
  return new RunflowError(redact(message, secrets), props);
}

/**
 * The caller's callback wrapped so that one that throws is reported on the console and does
 * not stop the call (nor leave a paid run behind); what it threw is kept in `reports.thrown`.
 */
export function guard(callback, what, reports) {
  return (value) => {
    try {
      callback(value);
    } catch (error) {
      reports.thrown = error;
      console.error(`runflow-kontext: ${what} threw; the call goes on.`, error);
    }
  };
}

const asciiDecoder = new TextDecoder();

/** `text` with `bytes` (ASCII, a view of wasm memory) appended. */
export function appendAscii(text, bytes) {
  return text + asciiDecoder.decode(bytes);
}


/**
 * A fetch for presigned-URL PUTs, over XMLHttpRequest: the one browser API that reports upload
 * progress. Like fetch it honours `init.signal` and rejects on network failure; it also gives
 * up after `idleMs` without progress. Null where there is no XMLHttpRequest (Node).
 */
export function uploadFetch(onProgress, idleMs) {
  if (typeof XMLHttpRequest !== "function") return null;
  return (url, init) =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const signal = init.signal;
      let idle;
      const end = (error) => {
        clearTimeout(idle);
        signal.removeEventListener("abort", onAbort);
        xhr.upload.onprogress = null;
        if (error) {
          xhr.abort();
          return reject(error);
        }
        try {
          // A Response as fetch gives it: no body for null-body statuses, headers kept (Retry-After).
          const headers = new Headers();
          for (const line of xhr.getAllResponseHeaders().split("\r\n")) {
            const colon = line.indexOf(":");
            if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
          }
          const body = [101, 204, 205, 304].includes(xhr.status) ? null : xhr.responseText;
          resolve(new Response(body, { status: xhr.status, headers }));
        } catch (failure) {
          reject(failure);
        }
      };
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => end(new Error(`no upload progress for ${idleMs} ms`)), idleMs);
      };
      const onAbort = () => end(new DOMException("aborted", "AbortError"));
      signal.addEventListener("abort", onAbort);
      xhr.open(init.method, url);
      for (const [name, value] of Object.entries(init.headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => {
        arm();
        // The client reports loaded === total itself, once the upload is confirmed.
        if (event.loaded < event.total) reportProgress(onProgress, event.loaded, event.total);
      };
      xhr.onload = () => end(null);
      xhr.onerror = () => end(new TypeError("the upload connection failed"));
      arm();
      xhr.send(init.body);
    });
}

/**
 * The image `value` holds as a Blob or bytes, or null when it is not a local image. A base64
 * `data:` URI too big to send inline counts as one: its bytes are uploaded instead.
 */
export function localImage(value, inlineLimit) {
  if (typeof Blob === "function" && value instanceof Blob) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  const base64 = typeof value === "string" && /^data:[^,]*;base64,/i.exec(value);
  if (base64 && ((value.length - base64[0].length) * 3) / 4 >= inlineLimit) {
    try {
      const text = atob(value.slice(base64[0].length));
      const bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      return bytes;
    } catch {
      return null; // Not valid base64: sent as the string it is, for Runflow to judge.
    }
  }
  return null;
}

/**
 * Reads what the client needs of a local image: its first 16 bytes (to tell its type), its
 * size and name, the body to upload, and all its bytes when it is small enough to go inline.
 * With `prepare`, a picture over the megapixel limit is first downscaled.
 */
export function loadImage(image, prepare, inlineLimit, signal) {
  // Decoding and re-encoding cannot be stopped, but the caller need not wait for them.
  return new Promise((resolve, reject) => {
    const onAbort = () => reject("aborted");
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    readImage(image, prepare, inlineLimit)
      .then(resolve, reject)
      .finally(() => signal?.removeEventListener("abort", onAbort));
  });
}

async function readImage(image, prepare, inlineLimit) {
  // A picture the browser can decode but Runflow does not read (BMP, HEIC in Safari...) is
  // converted, whatever its size, when preparation is on.
  const convert = image instanceof Blob && /^image\//.test(image.type) && !RUNFLOW_TYPES.has(image.type);
  const body = (prepare && (await prepareImage(image, prepare, convert))) || image;
  const bytes = async (blob) => new Uint8Array(await blob.arrayBuffer());
  const isBlob = body instanceof Blob;
  const size = isBlob ? body.size : body.byteLength;
  return {
    body,
    size,
    name: body === image && typeof image.name === "string" ? image.name : undefined,
    head: isBlob ? await bytes(body.slice(0, 16)) : body.subarray(0, 16),
    bytes: size < inlineLimit ? (isBlob ? await bytes(body) : body) : undefined,
    // What an upload is remembered by: the same bytes to the same API root go up once.
    hash: size < inlineLimit ? undefined : await sha256(body),
  };
}

// Local images uploaded, by API root: SHA-256 -> asset URL, oldest first, the last 32 (the
// wasm decides whether a URL still has enough time left). With `persist`, js/durable.js fills
// them from its store at start and is told of each new one.
const uploads = new Map();
const uploadStores = new Map();
const KEPT_UPLOADS = 32;

function remember(base, hash, url) {
  const known = uploads.get(base) ?? new Map();
  uploads.set(base, known);
  known.delete(hash);
  known.set(hash, url);
  if (known.size > KEPT_UPLOADS) known.delete(known.keys().next().value);
}

/** Adds `entries` (`[hash, url]`, oldest first) to what `base` remembers; `store(hash, url)` keeps new ones. */
export function persistUploads(base, entries, store) {
  for (const [hash, url] of entries) remember(base, hash, url);
  uploadStores.set(base, store);
}

export function storedUpload(base, hash) {
  return uploads.get(base)?.get(hash);
}

export function storeUpload(base, hash, url) {
  remember(base, hash, url);
  uploadStores.get(base)?.(hash, url);
}

/** The hex SHA-256 of a Blob or bytes, by SubtleCrypto; undefined where there is none. */
async function sha256(body) {
  if (!globalThis.crypto?.subtle) return undefined;
  const data = body instanceof Blob ? await body.arrayBuffer() : body;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Downscales an image above `maxMegapixels` and re-encodes it (or only re-encodes it, to
 * `convert` it), turned upright by its EXIF orientation. Resolves the new Blob, or null to send
 * the original (small enough, not decodable here, or no canvas in this environment, as in Node).
 */
const RUNFLOW_TYPES = new Set(["image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"]);

async function prepareImage(source, { maxMegapixels = 4, type = "image/jpeg", quality = 0.9 }, convert) {
  if (typeof createImageBitmap !== "function" || typeof OffscreenCanvas !== "function") return null;
  let bitmap;
  try {
    bitmap = await createImageBitmap(source instanceof Blob ? source : new Blob([source]), {
      imageOrientation: "from-image",
    });
  } catch {
    return null;
  }
  try {
    const { width, height } = bitmap;
    const scale = Math.min(1, Math.sqrt((maxMegapixels * 1e6) / (width * height)));
    if (scale === 1 && !convert) return null;
    const w = Math.max(1, Math.floor(width * scale));
    const h = Math.max(1, Math.floor(height * scale));
    const context = new OffscreenCanvas(w, h).getContext("2d");
    // JPEG has no transparency: paint what was transparent white rather than black.
    if (type === "image/jpeg") {
      context.fillStyle = "#fff";
      context.fillRect(0, 0, w, h);
    }
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, w, h);
    return await context.canvas.convertToBlob({ type, quality });
  } finally {
    bitmap.close();
  }
}

/** Calls `onUploadProgress` (wrapped by `guard`), if any. */
export function reportProgress(callback, loaded, total) {
  if (typeof callback === "function") callback({ loaded, total });
}
