// Waiting that survives a browser's tabs and reloads, over the wasm client's promise API.
// - One poller per run across tabs: of the tabs (and calls) waiting on one run, the one holding
//   the run's Web Lock follows it and sends each status it sees, then the result, to the others
//   over a BroadcastChannel. When that tab closes, its lock passes to a waiting tab, which goes
//   on following. Where there are no Web Locks (Node) every call follows its run itself.
// - `persist`: the runs a client waits on are kept (IndexedDB, else localStorage, or the
//   `storage` given) until their result is delivered, for `resumeRuns()` after a reload; so are
//   its uploads, which the wasm looks up before uploading the same bytes again.
// JS, not wasm: it is browser API plumbing, a fraction of its size as bindings.

const TIMEOUT_MS = 600_000; // waitForRun's default `timeoutMs`, as in the wasm.
/** Runs older than this are not resumed: their outputs' links have expired (about 24 h). */
const RESUME_MAX_AGE_MS = 24 * 3600 * 1000;
/** Stored uploads read back per API root, the newest, as many as the edge remembers. */
const KEPT_UPLOADS = 32;

const isObject = (value) => typeof value === "object" && value !== null;

/** Options this layer can take over: anything else goes to the wasm as is, which refuses it. */
const plain = (options) =>
  options === undefined ||
  (isObject(options) && !options.signal?.aborted && ["onStatus", "onWaiting"].every((key) => options[key] == null || typeof options[key] === "function"));

// --- One poller per run across tabs ------------------------------------------------------------

const hubs = new Map();

/**
 * The tabs' meeting point for one API root: `post` a run's status (`end` with its result) to
 * every waiter in every tab, `listen` for them, `ask` who follows a run for its latest status,
 * and `lead`, which runs `work` under the run's lock. Undefined without Web Locks.
 */
function hubFor(base) {
  if (typeof BroadcastChannel !== "function" || !globalThis.navigator?.locks) return undefined;
  let hub = hubs.get(base);
  if (hub) return hub;
  const channel = new BroadcastChannel(`runflow-kontext ${base}`);
  const listeners = new Map();
  // The runs this tab follows, with the latest status it saw, for the tabs that ask.
  const leading = new Map();
  const deliver = (message) => listeners.get(message.id)?.forEach((listener) => listener(message));
  const send = (message) => {
    try {
      channel.postMessage(message);
    } catch {
      // A run that cannot be cloned reaches this tab only; the others follow it themselves
      // when the lock passes to them.
    }
  };
  channel.onmessage = ({ data }) => {
    if (!isObject(data) || typeof data.id !== "string") return;
    if (isObject(data.run)) deliver(data);
    else if (leading.get(data.id)) send({ id: data.id, run: leading.get(data.id) });
  };
  hub = {
    post(message) {
      if (leading.has(message.id)) leading.set(message.id, message.run);
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
      const run = leading.get(id);
      if (run) deliver({ id, run });
      else send({ id });
    },
    /**
     * `work()` once this call holds the run's lock (`null` at once with `ifAvailable` if not);
     * `latest` is the run as this call last saw it, for the tabs that ask.
     */
    lead(id, options, work, latest) {
      return navigator.locks.request(`runflow-kontext ${base} ${id}`, options, async (lock) => {
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
  hubs.set(base, hub);
  return hub;
}

// --- Storage -----------------------------------------------------------------------------------

/**
 * Records of one API root in IndexedDB, by table ("runs", "uploads"): `all()`, `put(record)`
 * and `delete(key)`, each a promise. Records are `{ key, ... }`.
 */
function indexedDbTables(base) {
  let opened;
  const database = () =>
    (opened ??= new Promise((resolve, reject) => {
      const open = indexedDB.open("runflow-kontext", 1);
      open.onupgradeneeded = () => {
        for (const table of ["runs", "uploads"]) open.result.createObjectStore(table, { keyPath: ["base", "key"] });
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    }));
  const transact = (table, mode, act) =>
    database().then(
      (db) =>
        new Promise((resolve, reject) => {
          const transaction = db.transaction(table, mode);
          const request = act(transaction.objectStore(table));
          transaction.oncomplete = () => resolve(request.result);
          transaction.onerror = transaction.onabort = () => reject(transaction.error);
        }),
    );
  // Arrays sort after strings in IndexedDB, so this bounds every key of `base`.
  const ofBase = () => IDBKeyRange.bound([base], [base, []]);
  return (table) => ({
    all: () => transact(table, "readonly", (store) => store.getAll(ofBase())),
    put: (record) => transact(table, "readwrite", (store) => store.put({ ...record, base })),
    delete: (key) => transact(table, "readwrite", (store) => store.delete([base, key])),
  });
}

/** The same over a Web Storage (`localStorage`, or any object with getItem/setItem, sync or async). */
function webStorageTables(storage, base) {
  return (table) => {
    const name = `runflow-kontext ${table} ${base}`;
    const read = async () => {
      try {
        const records = JSON.parse((await storage.getItem(name)) ?? "{}");
        return isObject(records) ? records : {};
      } catch {
        return {};
      }
    };
    // One change at a time: with an async storage, two read-modify-writes would lose one.
    let changes = Promise.resolve();
    const change = (edit) =>
      (changes = changes.then(async () => {
        const records = await read();
        edit(records);
        await storage.setItem(name, JSON.stringify(records));
      }));
    return {
      all: async () => Object.values(await read()),
      put: (record) => change((records) => (records[record.key] = record)),
      delete: (key) => change((records) => delete records[key]),
    };
  };
}

/** What `persist` and `storage` name, as tables; throws what the constructor rejects with. */
function openTables(persist, storage, base, invalid) {
  if (storage !== undefined) {
    if (!isObject(storage) || typeof storage.getItem !== "function" || typeof storage.setItem !== "function") {
      throw invalid("storage", "`storage` must be a Web Storage (such as localStorage): an object with getItem and setItem.");
    }
    return webStorageTables(storage, base);
  }
  if (persist === undefined || persist === false) return undefined;
  if (![true, "indexedDB", "localStorage"].includes(persist)) {
    throw invalid("persist", '`persist` must be true, "indexedDB" or "localStorage".');
  }
  if (persist !== "localStorage" && typeof indexedDB === "object" && indexedDB) return indexedDbTables(base);
  if (persist !== "indexedDB" && typeof localStorage === "object" && localStorage) return webStorageTables(localStorage, base);
  throw invalid("persist", `There is no ${persist === true ? "IndexedDB or localStorage" : persist} here: pass a \`storage\` to persist runs.`);
}

/** A storage failure (quota, private mode) loses the record, never the run. */
const quietly = (promise) =>
  promise.catch((error) => console.warn("runflow-kontext: could not update the persisted runs", error));

// --- The client --------------------------------------------------------------------------------

/**
 * `KontextClient` over the wasm's class `Base`: the same API, with waits shared across tabs, and
 * with `persist` or `storage` the runs and uploads kept for `resumeRuns()` after a reload.
 * `persistUploads` is the wasm edge's hook for the upload cache.
 */
export function durable(Base, RunflowError, persistUploads) {
  const invalid = (field, message) => new RunflowError(message, { code: "validation_error", field });

  return class KontextClient extends Base {
    #runs;
    #ready = Promise.resolve();

    constructor(options) {
      const { persist, storage, ...rest } = isObject(options) ? options : {};
      super(isObject(options) ? rest : options);
      const tables = openTables(persist, storage, this.baseUrl, invalid);
      if (!tables) return;
      this.#runs = tables("runs");
      const uploads = tables("uploads");
      // The wasm looks uploads up synchronously: the stored ones are read once, before the first call.
      this.#ready = uploads.all().then(
        (records) => {
          records.sort((a, b) => a.at - b.at);
          for (const old of records.splice(0, records.length - KEPT_UPLOADS)) quietly(uploads.delete(old.key));
          persistUploads(
            this.baseUrl,
            records.map((record) => [record.key, record.url]),
            (hash, url) => quietly(uploads.put({ key: hash, url, at: Date.now() })),
          );
        },
        (error) => console.warn("runflow-kontext: could not read the persisted uploads", error),
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
        .map(({ key: id, since }) => ({ id, since, wait: (options) => this.waitForRun(id, options) }));
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

    run(input, options) {
      const hub = hubFor(this.baseUrl);
      if ((!hub && !this.#runs) || !plain(options)) return this.#ready.then(() => super.run(input, options));
      let id;
      let release;
      let over = false;
      const onStatus = (run) => {
        if (!id) {
          id = run.id;
          this.#keep(id);
          // A new run: no other tab can be following it yet, so the lock is this call's at once.
          hub
            ?.lead(id, {}, () => new Promise((resolve) => (over ? resolve() : (release = resolve))), run)
            .catch(() => {});
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
            throw error;
          },
        )
        .finally(() => {
          over = true;
          release?.();
        });
    }

    waitForRun(id, options) {
      const hub = hubFor(this.baseUrl);
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
      // The wasm checks the id and options as it would for polling: asked with a signal that has
      // already fired, it answers at once, before any request.
      const checked = await super.waitForRun(id, { ...options, signal: AbortSignal.abort() }).catch((error) => error);
      if (checked?.code !== "aborted") throw checked;
      await this.#keep(id);
      if (!hub) return super.waitForRun(id, options);
      const { signal, onStatus, onWaiting, timeoutMs = TIMEOUT_MS } = options;
      const deadline = Date.now() + timeoutMs;
      let lastSeen;
      const report = (run) => {
        if (run.status_code === lastSeen) return;
        lastSeen = run.status_code;
        try {
          onStatus?.(run);
        } catch (error) {
          console.error("runflow-kontext: onStatus threw", error);
        }
      };
      return new Promise((resolve, reject) => {
        const quit = new AbortController();
        let settled = false;
        const settle = (outcome, value) => {
          if (settled) return;
          settled = true;
          quit.abort();
          clearTimeout(timer);
          unlisten();
          signal?.removeEventListener("abort", onAbort);
          outcome(value);
        };
        const unlisten = hub.listen(id, (message) => (message.end ? settle(resolve, message.run) : report(message.run)));
        const timer = setTimeout(
          () =>
            settle(
              reject,
              new RunflowError(
                `Gave up after the overall timeout of ${timeoutMs} ms (timeoutMs). A run may still finish on Runflow: check it later with getRun(id), or allow more time.`,
                { code: "timeout", runId: id },
              ),
            ),
          Math.min(timeoutMs, 2 ** 31 - 1),
        );
        // The wasm's own `aborted` error, for the same words and fields as when it polls.
        const onAbort = () => super.waitForRun(id, { signal }).catch((error) => settle(reject, error));
        signal?.addEventListener("abort", onAbort, { once: true });
        const follow = () =>
          super.waitForRun(id, {
            ...options,
            timeoutMs: Math.max(1, deadline - Date.now()),
            signal: signal ? AbortSignal.any([signal, quit.signal]) : quit.signal,
            onStatus: (run) => {
              report(run);
              hub.post({ id, run });
            },
          });
        const followed = (run) => {
          if (run === null) return false;
          hub.post({ id, run, end: true });
          settle(resolve, run);
          return true;
        };
        const failed = (error) => settled || settle(reject, error);
        hub.ask(id);
        hub.lead(id, { ifAvailable: true }, follow).then((run) => {
          if (followed(run) || settled) return;
          // Another tab follows the run: wait for its news, and for its lock should it close.
          try {
            onWaiting?.({ via: "tab", reason: "another tab is following this run" });
          } catch (error) {
            console.error("runflow-kontext: onWaiting threw", error);
          }
          hub.lead(id, { signal: quit.signal }, follow).then(followed, failed);
        }, failed);
      });
    }

    #keep(id) {
      return this.#runs && quietly(this.#runs.put({ key: id, since: Date.now() }));
    }

    #forget(id) {
      return this.#runs && quietly(this.#runs.delete(id));
    }
  };
}
