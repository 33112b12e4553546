// What is orchestration over the client's promise API, not part of talking to Runflow: many runs
// under one concurrency bound, watching a run as an async iterator, and a store for one edit.
// Written in JS because it is JS's own work (promises, async iterators, listeners) and costs a
// fraction of its bytes in wasm; `extend` puts it on the class of each build (the browser's,
// and the server build the Node entry loads).

/** Runs at once by default in `runMany`: one page's fair share of a proxy's budgets. */
const DEFAULT_CONCURRENCY = 4;

/**
 * An AbortSignal that fires when any of `signals` does: AbortSignal.any where there is one and
 * it takes them (it refuses the signal look-alikes the wasm accepts), else linked by hand.
 */
export function anySignal(signals) {
  const present = signals.filter(Boolean);
  if (present.length < 2) return present[0];
  try {
    return AbortSignal.any(present);
  } catch {
    // No AbortSignal.any, or a look-alike among the signals.
  }
  const controller = new AbortController();
  const links = present.map((signal) => [signal, () => controller.abort(signal.reason)]);
  // Unlinked once it fires, so a long-lived signal given to call after call keeps no listener
  // for each (the callers fire theirs when they end).
  controller.signal.addEventListener("abort", () => links.forEach(([signal, link]) => signal.removeEventListener?.("abort", link)), { once: true });
  for (const [signal, link] of links) {
    if (signal.aborted) {
      controller.abort(signal.reason);
      break;
    }
    signal.addEventListener("abort", link, { once: true });
  }
  return controller.signal;
}

/**
 * `client.runMany(inputs, options)`: `run()` for each input, at most `concurrency` at a time.
 * Resolves, in input order, `{ ok: true, run }` or `{ ok: false, error }` for each; one failure
 * stops the rest only with `stopOnError`. The client's shared backoff after a 429 makes every
 * run wait, so the batch queues rather than hammers.
 */
async function runMany(inputs, options, RunflowError) {
  // null is no options, as the wasm reads it.
  const { concurrency = DEFAULT_CONCURRENCY, onProgress, stopOnError = false, signal, ...runOptions } = options ?? {};
  const list = Array.isArray(inputs) ? inputs : [...(inputs ?? [])];
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RunflowError("`concurrency` must be a whole number of at least 1.", { code: "validation_error", field: "concurrency" });
  }
  const stop = new AbortController();
  const shared = anySignal([signal, stop.signal]);
  const results = new Array(list.length);
  let next = 0;
  let done = 0;
  let failed = 0;
  const worker = async () => {
    while (next < list.length) {
      const index = next++;
      const result = await this.run(list[index], { ...runOptions, signal: shared }).then(
        (run) => ({ ok: true, run }),
        (error) => ({ ok: false, error }),
      );
      results[index] = result;
      done += 1;
      if (!result.ok) {
        failed += 1;
        if (stopOnError) stop.abort();
      }
      try {
        onProgress?.({ index, result, done, failed, total: list.length });
      } catch (error) {
        console.error("runflow-kontext: onProgress threw", error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
  // Fired at the end too, which unlinks the caller's signal (see anySignal).
  stop.abort();
  return results;
}

/**
 * `for await (const run of client.watch(id, options))`: every status change of the run, the
 * first included, ending after the terminal one (or throwing what `waitForRun` rejects with).
 * Leaving the loop early stops the waiting.
 */
async function* watch(id, options) {
  options ??= {};
  const stop = new AbortController();
  const queue = [];
  let wake;
  let ended = false;
  let failure;
  const nudge = () => wake?.();
  // The end may come after the last status was taken: the loop waits for it too.
  const settle = (error) => {
    failure = error;
    ended = true;
    nudge();
  };
  const waiting = this.waitForRun(id, {
    ...options,
    signal: anySignal([options.signal, stop.signal]),
    onStatus: (run) => {
      queue.push(run);
      options.onStatus?.(run);
      nudge();
    },
  }).then(
    () => settle(undefined),
    (error) => settle(error),
  );
  try {
    for (;;) {
      if (queue.length) yield queue.shift();
      else if (ended) break;
      else await new Promise((resolve) => (wake = resolve));
    }
    await waiting;
    if (failure) throw failure;
  } finally {
    stop.abort();
  }
}

const IDLE = Object.freeze({ status: "idle", run: undefined, error: undefined, upload: undefined });

/**
 * `client.createRunStore()`: one edit's state for a UI, framework-free: `start(input, options)`,
 * `cancel()`, `reset()`, `subscribe(listener)` (returns the unsubscribe) and `getSnapshot()`,
 * an immutable `{ status, run, error, upload }` replaced on each change (React's
 * useSyncExternalStore, Vue and Svelte stores take it as is). `status`: "idle", "starting",
 * "uploading", then the run's status, and at the end its status, "stopped" (cancelled here) or
 * "error". A new `start` replaces the edit under way (which stops being followed).
 */
function createRunStore() {
  const client = this;
  const listeners = new Set();
  let snapshot = IDLE;
  let current;
  const set = (owner, next) => {
    if (owner !== current) return;
    snapshot = Object.freeze({ ...snapshot, ...next });
    for (const listener of [...listeners]) listener();
  };
  return {
    getSnapshot: () => snapshot,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async start(input, options) {
      options ??= {};
      current?.abort();
      const owner = (current = new AbortController());
      set(owner, { status: "starting", run: undefined, error: undefined, upload: undefined });
      try {
        const run = await client.run(input, {
          ...options,
          signal: anySignal([options.signal, owner.signal]),
          onUploadProgress: (upload) => {
            set(owner, { status: "uploading", upload });
            options.onUploadProgress?.(upload);
          },
          onStatus: (run) => {
            set(owner, { status: run.status, run });
            options.onStatus?.(run);
          },
        });
        set(owner, { status: run.status, run });
        return run;
      } catch (error) {
        const stopped = error?.code === "aborted" && owner.signal.aborted;
        // A run that failed or was canceled ends with its own status, as the docs promise.
        const ended = error?.code === "run_failed" && error.run?.status;
        set(owner, { status: stopped ? "stopped" : ended || "error", error, run: error?.run ?? snapshot.run });
        throw error;
      } finally {
        // The edit is over: this unlinks the caller's signal (see anySignal).
        owner.abort();
      }
    },
    cancel: () => current?.abort(),
    reset() {
      const owner = current;
      owner?.abort();
      set(owner, IDLE);
      current = undefined;
    },
  };
}

/** Puts `runMany`, `watch` and `createRunStore` on `KontextClient`'s prototype; `RunflowError` is the build's. */
export function extend(KontextClient, RunflowError) {
  Object.assign(KontextClient.prototype, {
    runMany(inputs, options) {
      return runMany.call(this, inputs, options, RunflowError);
    },
    watch,
    createRunStore,
  });
}
