// Recent runs, kept in localStorage so they survive a reload, and so that a run still going when
// the page was closed can be picked up again by its id.

const KEY = "kontext-studio.history.v1";
const MAX_ENTRIES = 24;

/** Statuses after which nothing changes any more. */
export const TERMINAL = new Set(["succeeded", "partial_succeeded", "failed", "canceled"]);
/** Statuses of a run the page was still following. */
export const IN_PROGRESS = new Set(["queued", "dispatching", "running", "unknown"]);

/** Statuses the page itself gives a run it no longer follows. */
const ENDED = new Set(["stopped", "gone"]);

const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
const stringOr = (value, fallback) => (typeof value === "string" ? value : fallback);

function normalizeOptions(raw) {
  const options = {};
  if (!isObject(raw)) return options;
  if (Number.isInteger(raw.num_images) && raw.num_images >= 1 && raw.num_images <= 4) options.num_images = raw.num_images;
  if (isNumber(raw.guidance_scale)) options.guidance_scale = raw.guidance_scale;
  if (raw.output_format === "jpeg" || raw.output_format === "png") options.output_format = raw.output_format;
  if (typeof raw.safety_tolerance === "string" || isNumber(raw.safety_tolerance)) options.safety_tolerance = String(raw.safety_tolerance);
  if (typeof raw.enhance_prompt === "boolean") options.enhance_prompt = raw.enhance_prompt;
  if (typeof raw.aspect_ratio === "string" && raw.aspect_ratio) options.aspect_ratio = raw.aspect_ratio;
  if (Number.isSafeInteger(raw.seed) && raw.seed >= 0) options.seed = raw.seed;
  return options;
}

function normalizeOutput(raw) {
  if (!isObject(raw) || typeof raw.url !== "string" || !raw.url) return null;
  const output = { url: raw.url };
  if (isNumber(raw.width) && raw.width > 0) output.width = raw.width;
  if (isNumber(raw.height) && raw.height > 0) output.height = raw.height;
  if (typeof raw.content_type === "string") output.content_type = raw.content_type;
  return output;
}

/**
 * Stored entries come from older versions of the page, other tabs or hand edits: give each the
 * shape the page relies on, or drop it (`null`) when there is no run id to keep.
 */
function normalizeEntry(raw) {
  if (!isObject(raw) || typeof raw.id !== "string" || !raw.id) return null;
  const input = isObject(raw.input) ? raw.input : {};
  const steps = {};
  if (isObject(raw.steps)) {
    for (const [step, ms] of Object.entries(raw.steps)) if (isNumber(ms)) steps[step] = ms;
  }
  const entry = {
    id: raw.id,
    baseUrl: typeof raw.baseUrl === "string" && raw.baseUrl ? raw.baseUrl : undefined,
    prompt: stringOr(raw.prompt, ""),
    options: normalizeOptions(raw.options),
    input: {
      thumbnail: stringOr(input.thumbnail, null),
      url: stringOr(input.url, null),
      width: isNumber(input.width) ? input.width : null,
      height: isNumber(input.height) ? input.height : null,
      name: stringOr(input.name, null),
    },
    status: stringOr(raw.status, "stopped"),
    outputs: Array.isArray(raw.outputs) ? raw.outputs.map(normalizeOutput).filter(Boolean) : [],
    seed: isNumber(raw.seed) ? raw.seed : null,
    nsfw: typeof raw.nsfw === "boolean" ? raw.nsfw : null,
    actualPrompt: stringOr(raw.actualPrompt, null),
    startedAt: isNumber(raw.startedAt) ? raw.startedAt : isNumber(raw.completedAt) ? raw.completedAt : Date.now(),
    steps,
    error: isObject(raw.error) && typeof raw.error.title === "string"
      ? { code: stringOr(raw.error.code, "unexpected"), title: raw.error.title }
      : null,
    waiting: isObject(raw.waiting) && ["events", "poll", "tab"].includes(raw.waiting.via)
      ? { via: raw.waiting.via, reason: stringOr(raw.waiting.reason, "") }
      : null,
  };
  if (isNumber(raw.completedAt)) entry.completedAt = raw.completedAt;
  // A status the page does not know, or a run to follow without an API root to ask: not followed
  // on its own again ("Check again" is still there).
  const known = TERMINAL.has(entry.status) || IN_PROGRESS.has(entry.status) || ENDED.has(entry.status);
  if (!known || (IN_PROGRESS.has(entry.status) && entry.baseUrl === undefined)) entry.status = "stopped";
  return entry;
}

function load() {
  try {
    const parsed = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    if (!Array.isArray(parsed)) return [];
    const seen = new Set();
    const entries = [];
    for (const raw of parsed) {
      const entry = normalizeEntry(raw);
      if (!entry || seen.has(entry.id)) continue;
      seen.add(entry.id);
      entries.push(entry);
    }
    return entries.slice(0, MAX_ENTRIES);
  } catch {
    return [];
  }
}

/**
 * One entry: `{ id, baseUrl, prompt, options, input: { thumbnail?, url?, width, height },
 * status, outputs: [{url, width, height, content_type}], seed, nsfw, actualPrompt,
 * startedAt, completedAt, error: {title, code}|null, steps: {status: elapsedMs},
 * waiting: {via: "events"|"poll", reason}|null }`.
 */
export class History {
  constructor() {
    this.entries = load();
    this.listeners = new Set();
    // Another tab's edits show up here too.
    window.addEventListener("storage", (event) => {
      if (event.key === KEY) {
        this.entries = load();
        this.emit();
      }
    });
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  emit() {
    for (const listener of this.listeners) listener(this.entries);
  }

  get(id) {
    return this.entries.find((e) => e.id === id) ?? null;
  }

  /** Adds or updates `entry` (by id), newest first, and saves. */
  put(entry) {
    const index = this.entries.findIndex((e) => e.id === entry.id);
    if (index >= 0) this.entries[index] = entry;
    else this.entries.unshift(entry);
    this.entries.length = Math.min(this.entries.length, MAX_ENTRIES);
    this.save();
  }

  remove(id) {
    this.entries = this.entries.filter((e) => e.id !== id);
    this.save();
  }

  clear() {
    this.entries = [];
    this.save();
  }

  /** Entries the page was following when it was closed. */
  inProgress() {
    return this.entries.filter((e) => IN_PROGRESS.has(e.status));
  }

  save() {
    // Pictures make entries big: when storage is full, drop old thumbnails, then old entries.
    for (;;) {
      try {
        localStorage.setItem(KEY, JSON.stringify(this.entries));
        break;
      } catch {
        const withThumb = [...this.entries].reverse().find((e) => e.input?.thumbnail);
        if (withThumb && this.entries.indexOf(withThumb) > 0) delete withThumb.input.thumbnail;
        else if (this.entries.length > 1) this.entries.pop();
        else break;
      }
    }
    this.emit();
  }
}
