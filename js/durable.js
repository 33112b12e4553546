// Waiting that survives a browser's tabs and reloads, over the wasm client's promise API.
// - One poller per run across tabs: of the tabs (and calls) waiting on one run, the one holding
//   the run's Web Lock follows it and sends each status it sees, then the result, to the others
//   over a BroadcastChannel. When that tab closes, its lock passes to a waiting tab, which goes
//   on following. Without Web Locks, and from the Node entry, every call follows its run itself.
// - `persist`: the runs a client waits on are kept (IndexedDB, else localStorage, or the
//   `storage` given) until their result is delivered, for `resumeRuns()` after a reload; so are
//   its uploads, which the wasm looks up before uploading the same bytes again.
// JS, not wasm: it is browser API plumbing, a fraction of its size as bindings.

import { anySignal } from "./orchestrate.js";

const TIMEOUT_MS = 600_000; // waitForRun's default `timeoutMs`, as in the wasm.
/** Runs older than this are not resumed: their outputs' links have expired (about 24 h). */
const RESUME_MAX_AGE_MS = 24 * 3600 * 1000;
/** Stored uploads read back per API root, the newest, as many as the edge remembers. */
const KEPT_UPLOADS = 32;
/**
 * How long the calls made while IndexedDB opens wait for it: one that never answers (seen in
 * WebKit) must not hold up every call that records a run. One that opens late is used then.
 */
const OPEN_WAIT_MS = 2000;

const isObject = (value) => typeof value === "object" && value !== null;
const TERMINAL = new Set(["succeeded", "partial_succeeded", "failed", "canceled"]);

/**
 * Who a client is to the server, as a short fingerprint (FNV-1a of its key and headers): tabs
 * share a run's news only between clients that would be answered alike, and the key itself
 * never goes into a lock's or a channel's name.
 */
function fingerprint(options) {
  let hash = 0x811c9dc5;
  for (const char of JSON.stringify([options.apiKey, options.headers]) ?? "") {
    hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0;
  }
  return hash.toString(36);
}


/**
 * Options this layer can take over: anything else goes to the wasm as is, which refuses it. (Its
 * option check here is made with a signal of its own, so the caller's is looked at here.)
 */
const plain = (options) =>
  options == null ||
  (isObject(options) &&
    (options.signal == null || (!options.signal.aborted && typeof options.signal.addEventListener === "function")) &&
    ["onStatus", "onWaiting"].every((key) => options[key] == null || typeof options[key] === "function"));

// --- One poller per run across tabs ------------------------------------------------------------

const hubs = new Map();

/**
 * The tabs' meeting point for one API root and credential (`scope`): `post` a run's status
 * (`end` with its result) to every waiter in every tab, `listen` for them, `ask` who follows a
 * run for its latest status, and `lead`, which runs `work` under the run's lock. Undefined
 * without Web Locks (which need a secure context).
 */
function hubFor(scope) {
  if (typeof BroadcastChannel !== "function" || !globalThis.navigator?.locks) return undefined;
  let hub = hubs.get(scope);
  if (hub) return hub;
  const channel = new BroadcastChannel(`runflow-kontext ${scope}`);
  // Where a channel would keep a process alive (Node), it does not.
  channel.unref?.();
  const listeners = new Map();
  // The runs this tab follows, with the latest status it saw, for the tabs that ask.
  const leading = new Map();
  const deliver = (message) => listeners.get(message.id)?.forEach((listener) => listener(message));
  const send = (message) => {
    try {
      channel.postMessage(message);
    } catch {
      // A closed channel (the page is going away): the other tabs take the lock over.
    }
  };
  channel.onmessage = ({ data }) => {
    if (!isObject(data) || typeof data.id !== "string") return;
    if (isObject(data.run)) deliver(data);
    else if (leading.get(data.id)?.()) send({ id: data.id, run: leading.get(data.id)() });
  };
  hub = {
    post(message) {
      send(message);
      deliver(message);
    },
    listen(id, listener) {
      if (!listeners.has(id)) listeners.set(id, new Set());
      listeners.get(id).add(listener);
      return () => {
        listeners.get(id).delete(listener);
        if (!listeners.get(id).size) listeners.delete(id);
      };
    },
    ask(id) {
      const run = leading.get(id)?.();
      if (run) deliver({ id, run });
      else send({ id });
    },
    /**
     * `work()` once this call holds the run's lock (`null` at once with `ifAvailable` if not);
     * `latest()` is the run as this call last saw it, for the tabs that ask.
     */
    lead(id, options, work, latest) {
      return navigator.locks.request(`runflow-kontext ${scope} ${id}`, options, async (lock) => {
        if (!lock) return null;
        leading.set(id, latest);
        try {
          return await work();
        } finally {
          leading.delete(id);
        }
      });
    },
  };
  hubs.set(scope, hub);
  return hub;
}

// --- Storage -----------------------------------------------------------------------------------

/**
 * Records of one API root in IndexedDB, by table ("runs", "uploads"): `all()`, `put(record)`,
 * `add(record)` (unless one of its key is there) and `delete(key)`, each a promise. Records
 * are `{ key, ... }`.
 */
function indexedDbTables(base) {
  let opened;
  const database = () =>
    (opened ??= new Promise((resolve, reject) => {
      const timer = setTimeout(reject, OPEN_WAIT_MS, new Error(`IndexedDB did not open in ${OPEN_WAIT_MS} ms`));
      const open = indexedDB.open("runflow-kontext", 1);
      open.onupgradeneeded = () => {
        for (const table of ["runs", "uploads"]) open.result.createObjectStore(table, { keyPath: ["base", "key"] });
      };
      open.onsuccess = () => {
        clearTimeout(timer);
        // A later version of this package opening the database must not wait on this tab.
        open.result.onversionchange = () => open.result.close();
        // Late, the open is still good: the calls from now on use it.
        opened = Promise.resolve(open.result);
        resolve(open.result);
      };
      open.onerror = () => (clearTimeout(timer), reject(open.error));
    }));
  const transact = (table, mode, act) =>
    database().then(
      (db) =>
        new Promise((resolve, reject) => {
          const transaction = db.transaction(table, mode);
          const request = act(transaction.objectStore(table));
          transaction.oncomplete = () => resolve(request.result);
          // A failed request aborts the transaction, whose error is set by then.
          transaction.onabort = () => reject(transaction.error);
        }),
    );
  // Arrays sort after strings in IndexedDB, so this bounds every key of `base`.
  const ofBase = () => IDBKeyRange.bound([base], [base, []]);
  return (table) => ({
    all: () => transact(table, "readonly", (store) => store.getAll(ofBase())),
    put: (record) => transact(table, "readwrite", (store) => store.put({ ...record, base })),
    add: (record) =>
      transact(table, "readwrite", (store) => {
        const known = store.getKey([base, record.key]);
        known.onsuccess = () => known.result ?? store.put({ ...record, base });
        return known;
      }),
    delete: (key) => transact(table, "readwrite", (store) => store.delete([base, key])),
  });
}

/** The same over a Web Storage (`localStorage`, or any object with getItem/setItem, sync or async). */
function webStorageTables(storage, base) {
  return (table) => {
    const name = `runflow-kontext ${table} ${base}`;
    // A storage that fails to read fails the change: writing back only the new record would
    // lose the others. What is not our JSON reads as empty.
    const read = async () => {
      const text = await storage.getItem(name);
      try {
        const records = JSON.parse(text ?? "{}");
        return isObject(records) ? records : {};
      } catch {
        return {};
      }
    };
    // One change at a time (across tabs too, under a lock where the lock manager grants one):
    // two read-modify-writes side by side would lose one. A failed change does not stop the next.
    let changes = Promise.resolve();
    const change = (edit) => {
      let started = false;
      const step = async () => {
        started = true;
        const records = await read();
        edit(records);
        await storage.setItem(name, JSON.stringify(records));
      };
      const locks = globalThis.navigator?.locks;
      const next = changes.then(() =>
        locks ? locks.request(name, step).catch((error) => (started ? Promise.reject(error) : step())) : step(),
      );
      changes = next.catch(() => {});
      return next;
    };
    return {
      all: async () => Object.values(await read()),
      put: (record) => change((records) => (records[record.key] = record)),
      add: (record) => change((records) => (records[record.key] ??= record)),
      delete: (key) => change((records) => delete records[key]),
    };
  };
}

/** What `persist` and `storage` name, as tables; throws what the constructor rejects with. */
function openTables(persist, storage, base, invalid) {
  if (storage != null) {
    if (!isObject(storage) || typeof storage.getItem !== "function" || typeof storage.setItem !== "function") {
      throw invalid("storage", "`storage` must be a Web Storage (such as localStorage): an object with getItem and setItem.");
    }
    return webStorageTables(storage, base);
  }
  if (persist == null || persist === false) return undefined;
  if (![true, "indexedDB", "localStorage"].includes(persist)) {
    throw invalid("persist", '`persist` must be true, "indexedDB" or "localStorage".');
  }
  // Reading `localStorage` throws where storage is blocked; some Nodes have an empty one.
  const local = () => {
    try {
      return typeof globalThis.localStorage?.getItem === "function" && globalThis.localStorage;
    } catch {
      return undefined;
    }
  };
  if (persist !== "localStorage" && typeof indexedDB === "object" && indexedDB) return indexedDbTables(base);
  if (persist !== "indexedDB" && local()) return webStorageTables(local(), base);
  throw invalid("persist", `There is no ${persist === true ? "IndexedDB or localStorage" : persist} here: pass a \`storage\` to persist runs.`);
}

/** A storage failure (quota, private mode, no answer) loses the record, never the run. */
const quietly = (promise) => promise.catch((error) => console.warn("runflow-kontext: the persisted store failed", error));

/** Calls the caller's `callback`: what it throws is reported, and does not stop the wait. */
function tell(callback, value) {
  try {
    callback?.(value);
  } catch (error) {
    console.error("runflow-kontext: a callback threw", error);
  }
}

// --- The client --------------------------------------------------------------------------------

/**
 * `KontextClient` over the wasm's class `Base`: the same API, with waits shared across tabs, and
 * with `persist` or `storage` the runs and uploads kept for `resumeRuns()` after a reload.
 * `persistUploads` is the wasm edge's hook for the upload cache. `share: false` leaves waits
 * unshared (Node: a server's calls are not tabs, and may be made for different users).
 */
export function durable(Base, RunflowError, persistUploads, { share = true } = {}) {
  const invalid = (field, message) => new RunflowError(message, { code: "validation_error", field });

  return class KontextClient extends Base {
    #runs;
    #ready = Promise.resolve();
    #scope;

    constructor(options) {
      const { persist, storage, ...rest } = isObject(options) ? options : {};
      super(isObject(options) ? rest : options);
      this.#scope = `${this.baseUrl} ${fingerprint(rest)}`;
      const tables = openTables(persist, storage, this.baseUrl, invalid);
      if (!tables) return;
      this.#runs = tables("runs");
      const uploads = tables("uploads");
      // The wasm looks uploads up synchronously: the stored ones are read once, before the first call.
      this.#ready = quietly(
        uploads.all().then((records) => {
          records.sort((a, b) => a.at - b.at);
          for (const old of records.splice(0, records.length - KEPT_UPLOADS)) quietly(uploads.delete(old.key));
          persistUploads(
            this.baseUrl,
            records.map((record) => [record.key, record.url]),
            (hash, url) => quietly(uploads.put({ key: hash, url, at: Date.now() })),
          );
        }),
      );
    }

    /** Runs this client (before a reload, too) created or waited on whose result it has not delivered. */
    async resumeRuns() {
      if (!this.#runs) {
        throw invalid("persist", "resumeRuns() needs a client made with `persist: true` (or a `storage`).");
      }
      const now = Date.now();
      const fresh = [];
      for (const record of await this.#runs.all()) {
        if (now - record.since < RESUME_MAX_AGE_MS) fresh.push(record);
        else quietly(this.#runs.delete(record.key));
      }
      return fresh
        .sort((a, b) => a.since - b.since)
        .map(({ key: id, since }) => ({ id, since, wait: (options) => this.waitForRun(id, options), forget: () => this.#forget(id) }));
    }

    async createRun(input, options) {
      await this.#ready;
      const run = await super.createRun(input, options);
      // Kept before the caller hears of it: a reload right after still finds it.
      await this.#keep(run.id);
      return run;
    }

    async uploadImage(image, options) {
      await this.#ready;
      return super.uploadImage(image, options);
    }

    #hub() {
      return share ? hubFor(this.#scope) : undefined;
    }

    run(input, options) {
      const hub = this.#hub();
      if ((!hub && !this.#runs) || !plain(options)) return this.#ready.then(() => super.run(input, options));
      let id;
      let latest;
      let release;
      let over = false;
      const onStatus = (run) => {
        latest = run;
        if (!id) {
          id = run.id;
          this.#keep(id);
          // A new run: no other tab can be following it yet, so the lock is this call's at once.
          // Once it is, the latest status goes out again, for the tabs that asked before.
          const hold = () => {
            if (over) return undefined;
            hub.post({ id, run: latest });
            return new Promise((resolve) => (release = resolve));
          };
          hub?.lead(id, {}, hold, () => latest).catch(() => {});
        }
        hub?.post({ id, run });
        options?.onStatus?.(run);
      };
      const ended = (run) => {
        hub?.post({ id, run, end: true });
        return this.#forget(id);
      };
      return this.#ready
        .then(() => super.run(input, { ...options, onStatus }))
        .then(
          async (run) => (await ended(run), run),
          async (error) => {
            if (error?.code === "run_failed" && error.run) await ended(error.run);
            if (error?.code === "not_found" && id) await this.#forget(id);
            throw error;
          },
        )
        .finally(() => {
          over = true;
          release?.();
        });
    }

    waitForRun(id, options) {
      const hub = this.#hub();
      if ((!hub && !this.#runs) || typeof id !== "string" || !plain(options)) return super.waitForRun(id, options);
      // Forgotten once delivered: the caller's next resumeRuns() no longer has it.
      return this.#shared(hub, id, options ?? {}).then(
        async (run) => (await this.#forget(id), run),
        async (error) => {
          if (error?.code === "not_found") await this.#forget(id);
          throw error;
        },
      );
    }

    async #shared(hub, id, options) {
      const called = Date.now();
      // The wasm checks the id and options as it would for polling: asked with a signal that has
      // already fired, it answers at once, before any request.
      const checked = await super.waitForRun(id, { ...options, signal: AbortSignal.abort() }).catch((error) => error);
      if (checked?.code !== "aborted") throw checked;
      await this.#keep(id);
      if (!hub) return super.waitForRun(id, options);
      const { signal, onStatus, onWaiting } = options;
      // As the wasm reads it: null is no timeout given.
      const timeoutMs = options.timeoutMs ?? TIMEOUT_MS;
      const deadline = called + timeoutMs;
      let latest;
      // The caller's own timeout, also when the wasm's follow (given what is left of it) ends first.
      const timedOut = () =>
        new RunflowError(
          `Gave up after the overall timeout of ${timeoutMs} ms (timeoutMs). A run may still finish on Runflow: check it later with getRun(id), or allow more time.`,
          { code: "timeout", runId: id },
        );
      const report = (run) => {
        if (run.status_code === latest?.status_code) return;
        latest = run;
        tell(onStatus, run);
      };
      return new Promise((resolve, reject) => {
        const quit = new AbortController();
        let settled = false;
        let following = false;
        const settle = (outcome, value) => {
          if (settled) return;
          settled = true;
          quit.abort();
          clearTimeout(timer);
          unlisten();
          signal?.removeEventListener?.("abort", onAbort);
          globalThis.removeEventListener?.("online", look);
          globalThis.document?.removeEventListener("visibilitychange", look);
          outcome(value);
        };
        const unlisten = hub.listen(id, (message) => {
          report(message.run);
          if (message.end) settle(resolve, message.run);
        });
        const timer = setTimeout(() => settle(reject, timedOut()), Math.min(deadline - Date.now(), 2 ** 31 - 1));
        // The wasm's own `aborted` error, for the same words and fields as when it polls.
        const onAbort = () => super.waitForRun(id, { signal }).catch((error) => settle(reject, error));
        signal?.addEventListener("abort", onAbort, { once: true });
        if (signal?.aborted) onAbort();
        // A follower shown again or back online looks once itself, as a poller would: the tab
        // that follows the run may be hidden, polling slowly.
        const look = () => {
          if (following || settled || globalThis.document?.visibilityState === "hidden") return;
          super.getRun(id, { signal: quit.signal }).then((run) => hub.post({ id, run, end: TERMINAL.has(run.status) }), () => {});
        };
        globalThis.addEventListener?.("online", look);
        globalThis.document?.addEventListener("visibilitychange", look);
        const follow = async () => {
          // The result may have come just as the lock did.
          if (settled) return null;
          following = true;
          const run = await super.waitForRun(id, {
            ...options,
            timeoutMs: Math.max(1, deadline - Date.now()),
            signal: anySignal([signal, quit.signal]),
            onStatus: (run) => {
              report(run);
              hub.post({ id, run });
            },
          });
          // Before the lock passes on, so that a tab waiting for it hears the end (see takeOver).
          hub.post({ id, run, end: true });
          return run;
        };
        const followed = (run) => run !== null && (settle(resolve, run), true);
        // The deadline's timeout (not retryable), not a request's that ran out of retries.
        const failed = (error) => settled || settle(reject, error?.code === "timeout" && !error.retryable ? timedOut() : error);
        // A lock refused, not a follow that failed (an opaque origin's lock manager answers
        // SecurityError): this call follows the run itself.
        const unlocked = (error) => (following ? failed(error) : follow().then(followed, failed));
        hub.ask(id);
        hub.lead(id, { ifAvailable: true }, follow, () => latest).then((run) => {
          if (followed(run) || settled) return;
          tell(onWaiting, { via: "tab", reason: "another tab is following this run" });
          // Another tab follows the run: this call hears its news, and takes its lock should it close.
          // Granted, the lock may have passed on at an end whose message is still on its way: a
          // moment's grace spares the GET that end would stop.
          const takeOver = () => new Promise((resolve) => setTimeout(resolve, 50)).then(follow);
          hub.lead(id, { signal: quit.signal }, takeOver, () => latest).then(followed, unlocked);
        }, unlocked);
      });
    }

    /** Records run `id`, keeping when it was first recorded: a run's age counts from then. */
    #keep(id) {
      return this.#runs && quietly(this.#runs.add({ key: id, since: Date.now() }));
    }

    #forget(id) {
      return this.#runs && quietly(this.#runs.delete(id));
    }
  };
}
