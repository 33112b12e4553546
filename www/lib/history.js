// Recent runs, kept in localStorage so they survive a reload, and so that a run still going when
// the page was closed can be picked up again by its id.

const KEY = "kontext-studio.history.v1";
const MAX_ENTRIES = 24;

/** Statuses after which nothing changes any more. */
export const TERMINAL = new Set(["succeeded", "partial_succeeded", "failed", "canceled"]);
/** Statuses of a run the page was still following. */
export const IN_PROGRESS = new Set(["queued", "dispatching", "running", "unknown"]);

function load() {
  try {
    const parsed = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(parsed) ? parsed.filter((e) => e && typeof e.id === "string") : [];
  } catch {
    return [];
  }
}

/**
 * One entry: `{ id, baseUrl, prompt, options, input: { thumbnail?, url?, width, height },
 * status, outputs: [{url, width, height, content_type}], seed, nsfw, actualPrompt,
 * startedAt, completedAt, error: {title, code}|null, steps: {status: elapsedMs} }`.
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
