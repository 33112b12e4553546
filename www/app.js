// Kontext Studio: the demo page of runflow-kontext. Plain DOM, no framework. Every piece of text
// that comes from a person or a server is set with textContent, never parsed as HTML.

import {
  ImageInputError,
  fileFromUrl,
  formatBytes,
  inspectImageFile,
  makeThumbnail,
  probeImageUrl,
} from "./lib/image-input.js";
import { explainError, fieldControlId } from "./lib/errors.js";
import { History, IN_PROGRESS, TERMINAL } from "./lib/history.js";

const DEFAULT_BASE = "/api/runflow";
const PRICE_PER_IMAGE = 0.04;
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const STEP_ORDER = ["queued", "dispatching", "running", "done"];
const STATUS_TEXT = {
  creating: "Sending the edit…",
  queued: "Queued: waiting for a free GPU…",
  dispatching: "Dispatching to the model…",
  running: "Running: the model is editing your picture…",
  unknown: "Waiting for Runflow…",
  succeeded: "Done.",
  partial_succeeded: "Done, with fewer images than asked.",
  failed: "The edit failed.",
  canceled: "The run was canceled.",
  stopped: "Stopped waiting.",
  gone: "This run is no longer known.",
};
const HISTORY_STATUS = {
  creating: "sending",
  queued: "queued",
  dispatching: "dispatching",
  running: "running",
  unknown: "waiting",
  succeeded: "done",
  partial_succeeded: "partly done",
  failed: "failed",
  canceled: "canceled",
  stopped: "stopped",
  gone: "gone",
};

const $ = (id) => document.getElementById(id);
const history = new History();

const state = {
  base: DEFAULT_BASE,
  isMock: false,
  /**
   * The picture to send: `{ src, kind: "file"|"url", width, height, bytes, name, type, thumbnail }`;
   * a file also has `file` and `uploads` (its image_url by API root, so it is sent only once).
   */
  image: null,
  /** The file being read, if any: an edit started meanwhile waits for it rather than missing it. */
  reading: null,
  /** The run this page is following and shows: `{ entry, controller, timer }`. */
  current: null,
  /** Run id shown in the result area. */
  shownId: null,
  /** Full-size inputs of this session's runs, by run id (history keeps only thumbnails). */
  inputs: new Map(),
  /** Which output of the shown run is in the comparison. */
  selected: 0,
  lastSeed: null,
  /** Runs being followed, by id (the shown one and ones resumed in the background). */
  following: new Map(),
  /** Run ids removed from history while followed: their ending must not put them back. */
  removed: new Set(),
  /** The dev server's callback relay, as `_backend` tells it: `{ on, message? }`, or `null`. */
  relay: null,
};

// ---------------------------------------------------------------------------------------------
// The client, loaded lazily so that the page still explains itself when pkg/ is not built.

let clientModule = null;
const clients = new Map();

async function loadClient() {
  if (!clientModule) {
    clientModule = import("/pkg/index.js").then(async (module) => {
      await module.default();
      return module;
    });
  }
  try {
    return await clientModule;
  } catch (error) {
    clientModule = null;
    const wrapped = new Error("The runflow-kontext package could not be loaded. Build it with `make pkg` (or run `make demo`).");
    wrapped.code = "package_missing";
    wrapped.cause = error;
    throw wrapped;
  }
}

/**
 * The browser's fetch, watched: the client retries 429s and 5xx by itself, and this lets the page
 * say so while it happens instead of looking stuck.
 */
function watchedFetch(input, init) {
  return window.fetch(input, init).then((response) => {
    if (response.status === 429 || response.status >= 500) noteRetry(response);
    return response;
  });
}

function noteRetry(response) {
  if (!state.current) return;
  const wait = Number(response.headers.get("retry-after"));
  const after = Number.isFinite(wait) && wait > 0 ? ` in about ${Math.ceil(wait)} s` : "";
  const text = response.status === 429
    ? `Runflow asked to slow down (HTTP 429): retrying${after}…`
    : `Runflow had a hiccup (HTTP ${response.status}): retrying${after}…`;
  $("retry-note").textContent = text;
  $("retry-note").hidden = false;
  setStatusLine(text);
}

async function clientFor(baseUrl) {
  if (!clients.has(baseUrl)) {
    const { KontextClient } = await loadClient();
    // prepareImage: big phone photos are downscaled (and HEIC or BMP converted) before sending.
    clients.set(baseUrl, new KontextClient({ baseUrl, fetch: watchedFetch, prepareImage: true }));
  }
  return clients.get(baseUrl);
}

/** A signed asset URL is good for a while: an edit of the same file within this reuses it. */
const UPLOAD_REUSE_MS = 30 * 60 * 1000;

/**
 * The picked file as an image_url: uploaded by the client once per file and API root (never
 * inline, so a proxy's small body cap, such as Runflow's own 32 KiB, refuses nothing).
 */
async function imageUrlFor(entry, image, signal) {
  const kept = image.uploads.get(entry.baseUrl);
  if (kept && Date.now() - kept.at < UPLOAD_REUSE_MS) return kept.url;
  const client = await clientFor(entry.baseUrl);
  const url = await client.uploadImage(image.file, {
    signal,
    onUploadProgress: ({ loaded, total }) => {
      if (state.current?.entry !== entry || !total || loaded >= total) return;
      const text = `Uploading the picture… ${Math.floor((loaded / total) * 100)}%`;
      $("working-label").textContent = text;
      setStatusLine(text);
    },
  });
  image.uploads.set(entry.baseUrl, { url, at: Date.now() });
  return url;
}

// ---------------------------------------------------------------------------------------------
// Backend: which API the page talks to.

/** `?base=` may point the page at another same-origin API root (a mock scenario, in tests). */
function resolveBase() {
  const raw = new URLSearchParams(location.search).get("base");
  if (!raw) return DEFAULT_BASE;
  try {
    const url = new URL(raw, location.href);
    if (url.origin !== location.origin) throw new Error("foreign origin");
    // `/.//evil.com` or `/%2e//evil.com` normalise to the pathname `//evil.com`, which `fetch`
    // reads as protocol-relative: a path must start with exactly one `/`, with no `//` and no
    // backslash anywhere (decoded too).
    for (const form of [url.pathname, decodeURIComponent(url.pathname)]) {
      if (!form.startsWith("/") || form.includes("//") || form.includes("\\")) throw new Error("unsafe path");
    }
    return url.pathname.replace(/\/+$/, "") || DEFAULT_BASE;
  } catch {
    showBanner(`Ignored ?base=${raw}: only an API path on this server is allowed. Using ${DEFAULT_BASE}.`);
    return DEFAULT_BASE;
  }
}

/** What the dev server says it is (`{ backend: "mock" | "proxy", upstream, relay }`), if it says. */
async function serverBackend() {
  try {
    const response = await fetch(`${DEFAULT_BASE}/_backend`, { cache: "no-store" });
    if (!response.ok || !(response.headers.get("content-type") ?? "").includes("json")) return null;
    const info = await response.json();
    return typeof info?.backend === "string" ? info : null;
  } catch {
    return null;
  }
}

async function detectBackend() {
  const box = $("backend");
  const label = $("backend-label");
  const [healthy, info] = await Promise.all([
    fetch(`${state.base}/v1/health`, { cache: "no-store" })
      .then((response) => response.ok && (response.headers.get("content-type") ?? "").includes("json"))
      .catch(() => false),
    serverBackend(),
  ]);
  state.relay = typeof info?.relay?.on === "boolean" ? info.relay : null;
  renderRelayHint();
  const scenario = state.base.match(/^\/__mock\/s\/([^/]+)$/)?.[1];
  // The dev server's own word when it gives it; else a local server answering is the mock.
  const mock = scenario ? true : info ? info.backend === "mock" : LOCAL_HOSTS.has(location.hostname);
  state.isMock = healthy && mock && (state.base === DEFAULT_BASE || Boolean(scenario));
  if (state.isMock) {
    box.dataset.state = "mock";
    label.textContent = scenario ? `Embedded mock · scenario ${scenario}` : "Embedded mock · free, no key";
    box.title = `Requests go to ${state.base} on this dev server, which imitates Runflow: no key, no network, no cost.`;
  } else if (healthy) {
    box.dataset.state = "remote";
    let upstream = "";
    try {
      upstream = info?.backend === "proxy" && info.upstream ? ` → ${new URL(info.upstream).host}` : "";
    } catch {
      upstream = "";
    }
    label.textContent = `Runflow via ${state.base}${upstream}`;
    box.title = `Requests go to the Runflow proxy at ${state.base}: real runs, billed to the server's key.`;
  } else {
    box.dataset.state = "down";
    label.textContent = `No backend at ${state.base}`;
    showBanner(
      `No Runflow API answers at ${state.base}. Start the dev server with “make demo” (embedded mock, no key needed), ` +
        "or give it RUNFLOW_API_KEY to reach the real Runflow API, then reload this page.",
    );
  }
  $("url-hint").textContent = state.isMock
    ? "The embedded mock has no internet access: it can only read pictures from this dev server. Files work everywhere."
    : "A public https URL that opens without a login.";
  updateCost();
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// The input picture.

function setImageMessage(text, tone = "info") {
  const message = $("image-message");
  message.textContent = text;
  message.dataset.tone = tone;
}

function setImage(image) {
  const previous = state.image;
  // A picked file's preview URL keeps the file in memory: let it go unless a run shows it.
  const shown = [...state.inputs.values(), state.pendingInput];
  if (previous?.kind === "file" && previous !== image && !shown.includes(previous.src)) {
    URL.revokeObjectURL(previous.src);
  }
  state.image = image;
  const zone = $("dropzone");
  if (!image) {
    zone.dataset.state = "empty";
    $("preview").removeAttribute("src");
    $("preview-info").textContent = "";
    return;
  }
  zone.dataset.state = "ready";
  $("preview").src = image.src;
  const parts = [];
  if (image.width && image.height) parts.push(`${image.width}×${image.height}`);
  if (image.bytes) parts.push(formatBytes(image.bytes));
  if (image.type) parts.push(image.type.replace("image/", "").toUpperCase());
  parts.push(image.name);
  $("preview-info").textContent = parts.join(" · ");
}

function acceptFile(file) {
  if (!file) return;
  const reading = readFile(file).finally(() => {
    if (state.reading === reading) state.reading = null;
  });
  state.reading = reading;
  return reading;
}

async function readFile(file) {
  setImageMessage(`Reading “${file.name || "pasted image"}”…`);
  $("dropzone").dataset.busy = "true";
  try {
    const inspected = await inspectImageFile(file);
    setImage({ ...inspected, kind: "file", uploads: new Map() });
    $("url").value = "";
    setImageMessage(inspected.note, "info");
  } catch (error) {
    const text = error instanceof ImageInputError ? error.message : `That file could not be read (${error.message}).`;
    setImageMessage(text, "error");
  } finally {
    delete $("dropzone").dataset.busy;
  }
}

async function acceptUrl(raw) {
  const text = raw.trim();
  if (!text) {
    setImageMessage("Type or paste the address of a picture first.", "error");
    $("url").focus();
    return;
  }
  let url;
  try {
    url = new URL(text);
  } catch {
    setImageMessage("That is not a web address. It should start with https://", "error");
    $("url").focus();
    return;
  }
  const localHttp = url.protocol === "http:" && LOCAL_HOSTS.has(url.hostname);
  if (url.protocol !== "https:" && !localHttp) {
    setImageMessage("Runflow downloads pictures over https: use an address starting with https://", "error");
    $("url").focus();
    return;
  }
  const name = `${url.hostname}${url.pathname.length > 1 ? url.pathname : ""}`;
  setImageMessage("Loading the preview…");
  try {
    const { width, height, img } = await probeImageUrl(url.href);
    const thumbnail = await makeThumbnail(img).catch(() => null);
    setImage({ src: url.href, kind: "url", width, height, bytes: null, type: null, name, thumbnail });
    setImageMessage(state.isMock && !localHttp && !LOCAL_HOSTS.has(url.hostname)
      ? "Heads up: the embedded mock cannot download from the internet, so this run will fail. Files work."
      : "", state.isMock ? "warning" : "info");
  } catch {
    // No preview (blocked hotlinking, offline browser...): Runflow may still reach it.
    setImage({ src: url.href, kind: "url", width: null, height: null, bytes: null, type: null, name, thumbnail: null });
    $("preview").removeAttribute("src");
    setImageMessage(
      state.isMock
        ? "No preview: this address does not load here. The embedded mock has no internet access either, so the run would fail: pick a file instead."
        : "No preview: this address does not load in the browser. Runflow will still try to download it.",
      "warning",
    );
  }
}

function wireImageInputs() {
  $("file").addEventListener("change", (event) => {
    acceptFile(event.target.files?.[0]);
    event.target.value = "";
  });
  $("sample").addEventListener("click", async () => {
    try {
      await acceptFile(await fileFromUrl("/samples/lakeside.jpg", "lakeside.jpg"));
    } catch (error) {
      setImageMessage(error.message, "error");
    }
  });
  $("replace-image").addEventListener("click", () => {
    setImage(null);
    setImageMessage("");
    $("file").focus();
  });
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    acceptUrl($("url").value);
  });

  // Drop anywhere: a dropped file must never make the browser navigate away from the page.
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const file = event.dataTransfer.files?.[0];
    if (file) acceptFile(file);
  });

  // Paste a picture anywhere; pasting text into a field keeps working as usual.
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files ?? [])][0];
    if (!file) return;
    event.preventDefault();
    acceptFile(file);
  });
}

// ---------------------------------------------------------------------------------------------
// The edit form.

function readOptions() {
  const form = $("edit-form");
  const options = {
    num_images: Number(form.elements.num_images.value),
    guidance_scale: Number($("guidance").value),
    output_format: form.elements.output_format.value,
    safety_tolerance: $("safety").value,
    enhance_prompt: $("enhance").checked,
  };
  if ($("aspect").value) options.aspect_ratio = $("aspect").value;
  if ($("seed").value.trim() !== "") options.seed = Number($("seed").value);
  return options;
}

function applyOptions(options = {}) {
  const form = $("edit-form");
  $("aspect").value = options.aspect_ratio ?? "";
  form.elements.num_images.value = String(options.num_images ?? 1);
  $("guidance").value = String(options.guidance_scale ?? 3.5);
  form.elements.output_format.value = options.output_format ?? "jpeg";
  $("safety").value = String(options.safety_tolerance ?? "2");
  $("enhance").checked = Boolean(options.enhance_prompt);
  $("seed").value = options.seed ?? "";
  syncOutputs();
}

function syncOutputs() {
  $("guidance-value").textContent = Number($("guidance").value).toFixed(1);
  $("safety-value").textContent = $("safety").value;
  updateCost();
}

function money(amount) {
  return `$${amount.toFixed(2)}`;
}

function updateCost() {
  const count = Number($("edit-form").elements.num_images.value);
  const price = money(count * PRICE_PER_IMAGE);
  const what = count === 1 ? "1 image" : `${count} images`;
  $("cost").textContent = state.isMock
    ? `${what} · ${price} on Runflow (free on the mock)`
    : `${what} · ${price} on Runflow`;
}

function optionsSummary(options = {}) {
  const parts = [`${options.num_images ?? 1} × ${(options.output_format ?? "jpeg").toUpperCase()}`];
  if (options.aspect_ratio) parts.push(options.aspect_ratio);
  if (options.seed !== undefined) parts.push(`seed ${options.seed}`);
  return parts.join(" · ");
}

function wireEditForm() {
  const form = $("edit-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    startEdit();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  $("prompt").addEventListener("input", () => $("prompt").removeAttribute("aria-invalid"));
  for (const chip of document.querySelectorAll("[data-example]")) {
    chip.addEventListener("click", () => {
      $("prompt").value = chip.dataset.example;
      $("prompt").removeAttribute("aria-invalid");
      $("prompt").focus();
    });
  }
  form.addEventListener("input", syncOutputs);
  form.addEventListener("change", syncOutputs);
  $("reuse-seed").addEventListener("click", () => {
    if (state.lastSeed !== null) $("seed").value = String(state.lastSeed);
  });
  $("cancel").addEventListener("click", () => state.current?.controller.abort());
}

function setLastSeed(seed) {
  if (typeof seed !== "number") return;
  state.lastSeed = seed;
  $("reuse-seed").disabled = false;
  $("reuse-seed").title = `Use seed ${seed} again`;
}

// ---------------------------------------------------------------------------------------------
// Running an edit, and following a run (fresh or picked up after a reload).

async function startEdit() {
  if (state.current) return;
  hideAlert();
  if (state.reading) {
    setStatusLine("Reading the picture first…");
    $("run").disabled = true;
    await state.reading;
    $("run").disabled = false;
    setStatusLine("");
    // A file that could not be read has said why in the picture's message.
    if (state.current || !state.image) return;
  }
  if (!state.image) {
    setImageMessage("Add a picture first: choose a file, drop or paste one, or try the sample picture.", "error");
    $("sample").focus();
    return;
  }
  const prompt = $("prompt").value.trim();
  if (!prompt) {
    $("prompt").setAttribute("aria-invalid", "true");
    $("prompt").focus();
    setStatusLine("Describe the edit first, e.g. “make it a snowy winter night”.");
    return;
  }
  const options = readOptions();
  if (options.seed !== undefined && !(Number.isSafeInteger(options.seed) && options.seed >= 0)) {
    $("seed").focus();
    setStatusLine("The seed must be a whole number from 0 up, or empty for a random one.");
    return;
  }
  const image = state.image;
  const entry = {
    id: null,
    baseUrl: state.base,
    prompt,
    options,
    input: {
      thumbnail: image.thumbnail ?? null,
      url: image.kind === "url" ? image.src : null,
      width: image.width,
      height: image.height,
      name: image.name,
    },
    status: "creating",
    outputs: [],
    startedAt: Date.now(),
    steps: {},
  };
  const controller = new AbortController();
  follow(entry, controller, { show: true, inputSrc: image.src });
  try {
    const client = await clientFor(entry.baseUrl);
    const imageUrl = image.kind === "file" ? await imageUrlFor(entry, image, controller.signal) : image.src;
    const run = await client.run(
      { prompt, image_url: imageUrl, ...options },
      {
        signal: controller.signal,
        metadata: { app: "kontext-studio" },
        onStatus: (update) => onStatus(entry, update, image.src),
        onWaiting: (waiting) => onWaiting(entry, waiting),
      },
    );
    finishWith(entry, run);
  } catch (error) {
    failWith(entry, error);
  }
}

/** Picks up a run that was still going when the page was closed (or that was stopped). */
async function resume(entry, { show, reason = "reload" }) {
  if (state.following.has(entry.id)) return;
  const controller = new AbortController();
  // How it waited before says nothing about how it waits now: onWaiting tells again.
  entry.waiting = null;
  try {
    follow(entry, controller, { show, resumed: reason });
    // Entries from before the page stored their API root: ask this page's, never a default.
    const client = await clientFor(entry.baseUrl ?? state.base);
    const run = await client.waitForRun(entry.id, {
      signal: controller.signal,
      onStatus: (update) => onStatus(entry, update),
      onWaiting: (waiting) => onWaiting(entry, waiting),
    });
    if (run.status === "failed" || run.status === "canceled") {
      failWith(entry, { code: "run_failed", run, runId: run.id, message: run.failure?.message ?? "" });
    } else {
      finishWith(entry, run);
    }
  } catch (error) {
    failWith(entry, error);
  }
}

function follow(entry, controller, { show, inputSrc, resumed = false }) {
  if (entry.id) state.following.set(entry.id, controller);
  if (!show) return;
  if (state.current) state.current.controller.abort();
  const timer = setInterval(() => renderElapsed(entry), 100);
  state.current = { entry, controller, timer };
  state.shownId = entry.id;
  if (inputSrc && entry.id) state.inputs.set(entry.id, inputSrc);
  state.pendingInput = inputSrc ?? null;
  $("run").disabled = true;
  $("run-label").textContent = "Editing…";
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  $("cancel-note").hidden = false;
  $("retry-note").hidden = true;
  $("resume-note").hidden = !resumed;
  $("resume-note").textContent = resumed === "check"
    ? "Checking on this run again by its id."
    : "Picked up again after the page reloaded: runs are followed by their id.";
  hideAlert();
  showWorking(entry, inputSrc);
  renderRun(entry);
  revealResult();

}

function onStatus(entry, run, inputSrc) {
  if (!entry.id) {
    entry.id = run.id;
    const current = state.current?.entry === entry;
    if (current) state.shownId = run.id;
    state.following.set(run.id, current ? state.current.controller : null);
    if (inputSrc) state.inputs.set(run.id, inputSrc);
  }
  entry.status = run.status;
  if (state.current?.entry === entry) $("retry-note").hidden = true;
  const step = TERMINAL.has(run.status) ? "done" : run.status;
  entry.steps[step] ??= Date.now() - entry.startedAt;
  keep(entry);
  if (isShown(entry)) renderRun(entry);
}

/**
 * How the client waits for the run: by the dev server's callback relay (push) or by polling, and
 * why; told when waiting starts and again if push falls back to polling.
 */
function onWaiting(entry, { via, reason }) {
  entry.waiting = { via: ["events", "tab"].includes(via) ? via : "poll", reason: typeof reason === "string" ? reason : "" };
  keep(entry);
  if (isShown(entry)) renderWaiting(entry);
}

/** Saves `entry` in history, unless it was removed from there while it was being followed. */
function keep(entry) {
  if (entry.id && !state.removed.has(entry.id)) history.put(entry);
}

function isShown(entry) {
  return state.current?.entry === entry || (entry.id && state.shownId === entry.id);
}

function finishWith(entry, run) {
  const output = run.output ?? {};
  entry.status = run.status;
  entry.outputs = (output.outputs ?? []).map(({ url, width, height, content_type }) => ({ url, width, height, content_type }));
  entry.seed = typeof output.seed === "number" ? output.seed : null;
  entry.nsfw = output.nsfw_detected ?? null;
  const actual = output.model_data?.actual_prompt;
  entry.actualPrompt = typeof actual === "string" ? actual : null;
  entry.completedAt = Date.now();
  entry.steps.done ??= entry.completedAt - entry.startedAt;
  entry.error = null;
  keep(entry);
  setLastSeed(entry.seed);
  const shown = isShown(entry);
  stopFollowing(entry);
  if (shown) {
    state.selected = 0;
    showResult(entry);
    setStatusLine(
      run.status === "partial_succeeded"
        ? `Done, but only ${entry.outputs.length} of ${entry.options.num_images} images were made.`
        : `Done in ${seconds(entry.completedAt - entry.startedAt)}.`,
    );
  }
}

function failWith(entry, error) {
  const runId = entry.id ?? error?.runId ?? null;
  if (!entry.id && runId) entry.id = runId;
  const info = explainError(error, { baseUrl: entry.baseUrl, isMock: state.isMock, runId });
  if (error?.code === "run_failed") {
    entry.status = error.run?.status === "canceled" ? "canceled" : "failed";
    entry.steps.done ??= Date.now() - entry.startedAt;
  } else if (error?.code === "not_found" && entry.id) {
    entry.status = "gone";
  } else if (entry.id) {
    // Aborted, timed out or lost the connection: the run may still be going on Runflow.
    entry.status = "stopped";
  }
  entry.error = { code: error?.code ?? "unexpected", title: info.title };
  entry.completedAt = Date.now();
  keep(entry);
  const shown = isShown(entry);
  stopFollowing(entry);
  if (shown && !entry.id) {
    // Nothing was created: no timeline to show, just what went wrong.
    $("run-status").hidden = true;
    $("working").hidden = true;
    $("stage-empty").hidden = false;
    $("result-panel").dataset.state = "error";
    showAlert(info);
    setStatusLine(info.title + ".");
    focusField(error);
  } else if (shown) {
    renderRun(entry);
    showAlert(info);
    setStatusLine(info.title + ".");
    focusField(error);
    settleWorking();
  }
}

function focusField(error) {
  if (error?.code !== "validation_error") return;
  const control = fieldControlId(error.field);
  if (control) $(control).focus();
}

function stopFollowing(entry) {
  if (entry.id) state.following.delete(entry.id);
  if (state.current?.entry !== entry) return;
  clearInterval(state.current.timer);
  renderElapsed(entry);
  state.current = null;
  $("run").disabled = false;
  $("run-label").textContent = "Edit picture";
  $("cancel").hidden = true;
  $("cancel-note").hidden = true;
  $("retry-note").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Rendering the run and its result.

function seconds(ms) {
  return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
}

function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

function setStatusLine(text) {
  $("status-line").textContent = text;
}

function renderElapsed(entry) {
  const end = state.current?.entry === entry ? Date.now() : entry.completedAt ?? Date.now();
  $("elapsed").textContent = seconds(end - entry.startedAt);
}

function renderRun(entry) {
  $("result-panel").dataset.state = "run";
  $("run-status").hidden = false;
  const status = entry.status;
  const timeline = $("timeline");
  timeline.dataset.status = status;
  const reached = TERMINAL.has(status) ? 3 : STEP_ORDER.indexOf(status);
  const ended = ["failed", "canceled", "stopped", "gone"].includes(status);
  // Where a stopped run was: the furthest step seen.
  const furthest = Math.max(-1, ...STEP_ORDER.map((s, i) => (entry.steps[s] !== undefined ? i : -1)));
  const at = ended ? (status === "failed" || status === "canceled" ? 3 : Math.max(furthest, 0)) : reached;
  for (const li of timeline.children) {
    const index = STEP_ORDER.indexOf(li.dataset.step);
    let stepState = "todo";
    if (index < at || (index === at && TERMINAL.has(status) && !ended)) stepState = "done";
    else if (index === at) stepState = ended ? "ended" : "active";
    li.dataset.state = stepState;
    if (index === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
    const time = entry.steps[li.dataset.step];
    li.querySelector(".step-time").textContent = time !== undefined ? `+${seconds(time)}` : "";
    if (li.dataset.step === "done") {
      li.querySelector(".step-name").textContent = {
        failed: "Failed",
        canceled: "Canceled",
        stopped: "Stopped",
        gone: "Gone",
        partial_succeeded: "Partly done",
      }[status] ?? "Done";
    }
  }
  $("run-id-line").textContent = entry.id ? `· run ${entry.id}` : "";
  renderElapsed(entry);
  $("working-label").textContent = STATUS_TEXT[status] ?? STATUS_TEXT.unknown;
  if (!ended && !TERMINAL.has(status)) setStatusLine(STATUS_TEXT[status] ?? STATUS_TEXT.unknown);
  renderWaiting(entry);
}

/** "by push (callback relay)", "in another tab" or "by polling · <why>", for the run's panel and its facts. */
function waitingWay(waiting) {
  if (waiting.via === "events") return "by push (callback relay)";
  if (waiting.via === "tab") return "in another tab (it shares each status with this one)";
  return waiting.reason ? `by polling · ${waiting.reason}` : "by polling";
}

/** How the shown run is followed (or was, once it ended), and the relay's how-to when it is off. */
function renderWaiting(entry) {
  const line = $("waiting");
  const waiting = entry.waiting;
  line.hidden = !waiting;
  line.dataset.via = waiting?.via ?? "";
  const following = state.current?.entry === entry;
  const text = waiting ? `${following ? "Waiting" : "Waited"} ${waitingWay(waiting)}` : "";
  // Only a change is announced (aria-live): not the same words again on every status.
  if ($("waiting-text").textContent !== text) $("waiting-text").textContent = text;
  $("relay-hint").hidden = !(waiting?.via === "poll" && state.relay?.on === false && state.relay.message);
}

/**
 * The dev server's words on turning the relay on (`_backend`'s `relay.message`), with the names
 * of variables and files set as code.
 */
function renderRelayHint() {
  const box = $("relay-hint-text");
  const message = state.relay?.on === false && typeof state.relay.message === "string" ? state.relay.message.trim() : "";
  box.replaceChildren();
  if (message) {
    // "The callback relay is off: set X and Y…": the summary already says it is off.
    const sentence = message
      .replace(/^the callback relay is off:\s*/i, "")
      .replace(/^[a-z]/, (letter) => letter.toUpperCase())
      .replace(/([a-z]{3,}[.!?]\s+)([a-z])/g, (_, end, letter) => end + letter.toUpperCase());
    for (const [index, part] of sentence.split(/\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[\w-]+(?:\/[\w-]+)*\.md)\b/).entries()) {
      if (part) box.append(index % 2 ? textEl("code", part) : document.createTextNode(part));
    }
  }
  if (state.current) renderWaiting(state.current.entry);
  else if (!$("run-status").hidden && state.shownId) {
    const shown = history.get(state.shownId);
    if (shown) renderWaiting(shown);
  }
}

/** On narrow screens the result sits below the form: bring it into view when a run starts. */
function revealResult() {
  const panel = $("result-panel");
  const box = panel.getBoundingClientRect();
  if (box.top > window.innerHeight * 0.6 || box.bottom < 0) {
    const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    panel.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
  }
}

function beforeSource(entry) {
  return state.inputs.get(entry.id) ?? (entry === state.current?.entry ? state.pendingInput : null) ??
    entry.input?.thumbnail ?? entry.input?.url ?? null;
}

function showWorking(entry, inputSrc) {
  $("stage-empty").hidden = true;
  $("compare").hidden = true;
  $("result-details").hidden = true;
  const working = $("working");
  working.hidden = false;
  working.dataset.state = "working";
  const src = inputSrc ?? beforeSource(entry);
  const img = $("working-image");
  img.onerror = () => img.removeAttribute("src");
  if (src) img.src = src;
  else img.removeAttribute("src");
}

/** After a run ends without a result: keep the original in view, still; nothing if there is none. */
function settleWorking() {
  const working = $("working");
  working.dataset.state = "stopped";
  working.hidden = !$("working-image").getAttribute("src");
}

function showResult(entry) {
  state.shownId = entry.id;
  $("result-panel").dataset.state = "result";
  renderRun(entry);
  hideAlert();
  const outputs = entry.outputs ?? [];
  if (outputs.length === 0) {
    showWorking(entry);
    settleWorking();
    return;
  }
  const index = Math.min(state.selected, outputs.length - 1);
  const output = outputs[index];
  $("stage-empty").hidden = true;
  $("working").hidden = true;
  const compare = $("compare");
  compare.hidden = false;
  if (output.width && output.height) {
    compare.style.aspectRatio = `${output.width} / ${output.height}`;
    compare.style.setProperty("--ratio", String(output.width / output.height));
  } else {
    compare.style.removeProperty("aspect-ratio");
    compare.style.removeProperty("--ratio");
  }
  const before = beforeSource(entry);
  if (before) $("compare-before").src = before;
  else $("compare-before").removeAttribute("src");
  $("compare-after").src = output.url;
  $("compare-after").onerror = () => {
    $("download-message").textContent = "This picture's link no longer opens: Runflow keeps outputs for about 24 hours.";
    $("download-message").dataset.tone = "warning";
  };
  $("compare-range").value = "50";
  updateCompare();
  renderOutputs(entry, index);
  renderDownloads(entry);
  renderFacts(entry, output);
  $("nsfw").hidden = entry.nsfw !== true;
  $("result-details").hidden = false;
}

function renderOutputs(entry, selected) {
  const box = $("outputs");
  box.replaceChildren();
  box.hidden = entry.outputs.length < 2;
  entry.outputs.forEach((output, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "output-thumb";
    button.setAttribute("aria-pressed", String(index === selected));
    button.setAttribute("aria-label", `Compare image ${index + 1} of ${entry.outputs.length}`);
    const img = document.createElement("img");
    img.src = output.url;
    img.alt = "";
    button.append(img);
    button.addEventListener("click", () => {
      state.selected = index;
      showResult(entry);
      $("outputs").children[index]?.focus();
    });
    box.append(button);
  });
}

function extensionOf(output, entry) {
  const type = output.content_type ?? "";
  if (type.includes("png")) return "png";
  if (type.includes("jpeg") || type.includes("jpg")) return "jpg";
  return entry.options?.output_format === "png" ? "png" : "jpg";
}

function renderDownloads(entry) {
  const box = $("downloads");
  box.replaceChildren();
  $("download-message").textContent = "";
  entry.outputs.forEach((output, index) => {
    const ext = extensionOf(output, entry);
    const button = document.createElement("button");
    button.type = "button";
    button.className = index === 0 ? "button button-primary" : "button";
    const label = entry.outputs.length > 1 ? `Download image ${index + 1}` : "Download";
    button.textContent = `${label} (${ext === "png" ? "PNG" : "JPEG"})`;
    button.addEventListener("click", () => download(entry, output, index, ext, button));
    box.append(button);
  });
}

async function download(entry, output, index, ext, button) {
  const filename = `kontext-${shortId(entry.id)}-${index + 1}.${ext}`;
  const message = $("download-message");
  button.disabled = true;
  try {
    const response = await fetch(output.url);
    if (response.status === 403) {
      message.textContent = "This picture's link has expired: Runflow keeps outputs for about 24 hours. Run the edit again.";
      message.dataset.tone = "error";
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const href = URL.createObjectURL(await response.blob());
    saveLink(href, filename);
    setTimeout(() => URL.revokeObjectURL(href), 30_000);
    message.textContent = `Saved ${filename}.`;
    message.dataset.tone = "info";
  } catch {
    // Storage on another origin without CORS: let the browser open the picture instead, if its
    // address is one a link may open (never `javascript:` or the like, from a server or storage).
    const href = openableUrl(output.url);
    if (!href) {
      message.textContent = "This picture's address is not a web link the page can open, so it cannot be downloaded.";
      message.dataset.tone = "error";
      return;
    }
    saveLink(href, filename, true);
    message.textContent = "Opened the picture in a new tab: save it from there.";
    message.dataset.tone = "info";
  } finally {
    button.disabled = false;
  }
}

/** `url` resolved, if it is https:, http:, blob: or a data:image/ URL; otherwise `null`. */
function openableUrl(url) {
  if (typeof url !== "string") return null;
  try {
    const parsed = new URL(url, location.href);
    if (["https:", "http:", "blob:"].includes(parsed.protocol)) return parsed.href;
    if (parsed.protocol === "data:" && /^data:image\//i.test(parsed.href)) return parsed.href;
  } catch {
    // Not a URL at all.
  }
  return null;
}

function saveLink(href, filename, newTab = false) {
  const link = document.createElement("a");
  link.href = href;
  link.download = filename;
  if (newTab) {
    link.target = "_blank";
    link.rel = "noopener";
  }
  document.body.append(link);
  link.click();
  link.remove();
}

function fact(list, term, ...content) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.append(...content);
  list.append(dt, dd);
}

function textEl(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

function smallButton(text, label, onClick) {
  const button = textEl("button", text, "link-button");
  button.type = "button";
  if (label) button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

function renderFacts(entry, output) {
  const list = $("facts");
  list.replaceChildren();
  fact(list, "Prompt", textEl("span", entry.prompt, "fact-prompt"));
  if (entry.actualPrompt && entry.actualPrompt !== entry.prompt) {
    fact(list, "As the model read it", textEl("span", entry.actualPrompt, "fact-prompt"));
  }
  if (entry.seed !== null && entry.seed !== undefined) {
    fact(
      list,
      "Seed",
      textEl("code", String(entry.seed)),
      " ",
      smallButton("Use this seed", `Use seed ${entry.seed} for the next edit`, () => {
        $("seed").value = String(entry.seed);
        $("options").open = true;
        $("seed").focus();
      }),
    );
  }
  fact(
    list,
    "Run id",
    textEl("code", entry.id, "run-id"),
    " ",
    smallButton("Copy", "Copy the run id", async (event) => {
      try {
        await navigator.clipboard.writeText(entry.id);
        event.target.textContent = "Copied";
      } catch {
        event.target.textContent = "Select and copy it";
      }
    }),
  );
  const size = output.width && output.height ? `${output.width}×${output.height} · ` : "";
  fact(list, "Image", textEl("span", `${size}${extensionOf(output, entry) === "png" ? "PNG" : "JPEG"}`));
  if (entry.completedAt) fact(list, "Time", textEl("span", seconds(entry.completedAt - entry.startedAt)));
  if (entry.waiting) fact(list, "Waited", textEl("span", waitingWay(entry.waiting)));
  const cost = entry.outputs.length * PRICE_PER_IMAGE;
  fact(list, "Cost", textEl("span", state.isMock && entry.baseUrl !== undefined ? `${money(cost)} on Runflow (free here)` : money(cost)));
}

function updateCompare() {
  $("compare").style.setProperty("--pos", `${$("compare-range").value}%`);
}

function showAlert(info) {
  const alert = $("alert");
  alert.dataset.tone = info.tone;
  $("alert-title").textContent = info.title;
  $("alert-text").textContent = info.text;
  $("alert-next").textContent = info.next;
  const server = $("alert-server");
  server.hidden = !info.serverMessage;
  server.textContent = info.serverMessage ? `Runflow said: “${info.serverMessage}”` : "";
  const details = $("alert-details");
  details.replaceChildren();
  for (const [term, value] of info.details) {
    details.append(textEl("dt", term), textEl("dd", String(value)));
  }
  alert.hidden = false;
}

function hideAlert() {
  $("alert").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// History.

function timeLabel(ms) {
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function renderHistory(entries) {
  const list = $("history-list");
  // Re-rendering on every status change must not make pictures blink: keep decoded ones.
  const decoded = new Map([...list.querySelectorAll(".history-open img")].map((img) => [img.getAttribute("src"), img]));
  list.replaceChildren();
  $("history-empty").hidden = entries.length > 0;
  $("clear-history").hidden = entries.length === 0;
  for (const entry of entries) {
    const item = document.createElement("li");
    item.className = "history-item";
    item.dataset.status = entry.status;
    item.dataset.runId = entry.id;

    const open = document.createElement("button");
    open.type = "button";
    open.className = "history-open";
    open.setAttribute("aria-label", `Show the run “${entry.prompt}”`);
    const fallback = entry.input?.thumbnail ?? entry.input?.url ?? null;
    const src = entry.outputs?.[0]?.url ?? fallback;
    const reused = src ? decoded.get(src) : undefined;
    if (reused) decoded.delete(src);
    const thumb = reused ?? document.createElement("img");
    thumb.alt = "";
    if (!reused && src) thumb.src = src;
    else if (!src) thumb.hidden = true;
    thumb.onerror = () => {
      thumb.onerror = () => (thumb.hidden = true);
      if (fallback && thumb.getAttribute("src") !== fallback) thumb.src = fallback;
      else thumb.hidden = true;
    };
    open.append(thumb);
    open.addEventListener("click", () => showHistoryEntry(entry.id));

    const body = document.createElement("div");
    body.className = "history-body";
    body.append(textEl("p", entry.prompt, "history-prompt"));
    const meta = document.createElement("p");
    meta.className = "history-meta";
    meta.append(
      textEl("span", HISTORY_STATUS[entry.status] ?? entry.status, "badge"),
      textEl("span", ` ${timeLabel(entry.startedAt)} · ${optionsSummary(entry.options)}`),
    );
    body.append(meta);

    const actions = document.createElement("div");
    actions.className = "history-actions";
    actions.append(
      smallButton("Reuse", `Reuse the prompt and options of “${entry.prompt}”`, () => {
        $("prompt").value = entry.prompt;
        applyOptions(entry.options);
        $("prompt").focus();
      }),
    );
    if (entry.status === "stopped") {
      actions.append(smallButton("Check again", `Check how the run “${entry.prompt}” ended`, () => checkAgain(entry)));
    }
    actions.append(
      smallButton("Remove", `Remove “${entry.prompt}” from history`, () => {
        if (state.following.has(entry.id)) state.removed.add(entry.id);
        state.following.get(entry.id)?.abort();
        history.remove(entry.id);
      }),
    );
    item.append(open, body, actions);
    list.append(item);
  }
}

/** Follows a stopped run again; never at the cost of the run in progress. */
function checkAgain(entry) {
  if (state.current && state.current.entry.id !== entry.id) {
    setStatusLine("Finish or cancel the current run first.");
    return;
  }
  if (state.current) return;
  resume(entry, { show: true, reason: "check" });
}

function showHistoryEntry(id) {
  const entry = history.get(id);
  if (!entry) return;
  if (state.current && state.current.entry.id !== id) {
    setStatusLine("Finish or cancel the current run first.");
    return;
  }
  if (state.current) return;
  state.selected = 0;
  if (IN_PROGRESS.has(entry.status)) {
    resume(entry, { show: true, reason: "check" });
    return;
  }
  state.shownId = entry.id;
  if (entry.outputs?.length) {
    showResult(entry);
    setStatusLine(`Run from ${timeLabel(entry.startedAt)}.`);
  } else {
    renderRun(entry);
    showWorking(entry);
    settleWorking();
    $("result-details").hidden = true;
    if (entry.error) {
      showAlert(explainError({ code: entry.error.code, runId: entry.id }, { baseUrl: entry.baseUrl, isMock: state.isMock, runId: entry.id }));
    }
    setStatusLine(STATUS_TEXT[entry.status] ?? "");
  }
  $("result-panel").scrollIntoView({ behavior: "smooth", block: "start" });
}

// ---------------------------------------------------------------------------------------------
// Start.

function main() {
  state.base = resolveBase();
  $("footer-base").textContent = `API root: ${state.base}`;
  wireImageInputs();
  wireEditForm();
  $("compare-range").addEventListener("input", updateCompare);
  $("clear-history").addEventListener("click", () => {
    for (const [id, controller] of state.following) {
      state.removed.add(id);
      controller?.abort();
    }
    history.clear();
  });
  history.onChange(renderHistory);
  renderHistory(history.entries);
  syncOutputs();
  const lastSeed = history.entries.find((e) => typeof e.seed === "number")?.seed;
  if (lastSeed !== undefined) setLastSeed(lastSeed);
  detectBackend();
  loadClient().catch((error) => showBanner(error.message));

  // Runs still going when the page was closed: follow them again by id; the newest is shown.
  const pending = history.inProgress();
  pending.forEach((entry, index) => resume(entry, { show: index === 0 }));
}

main();
