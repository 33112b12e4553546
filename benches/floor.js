// The floor: the smallest hand-written fetch loop that does what our client does on the happy
// path, and nothing more (no validation, retries, deadlines, abort, normalisation). It sends the
// same requests as `KontextClient.run`: one POST with Content-Type, Idempotency-Key and a body
// `{input, client_ref}`, then GETs with the same schedule (0, initial, x1.5 ... capped at 0.8 s
// for 30 s, then 5 s)
// until the run is terminal. Bundled for the size table and run in the page for the speed ones.

const TERMINAL = new Set(["succeeded", "partial_succeeded", "failed", "canceled", "cancelled", "errored"]);
const MODEL = "black-forest-labs/flux-pro/kontext";

const hex = () => {
  let out = "";
  for (let i = 0; i < 4; i++) out += ((Math.random() * 2 ** 32) >>> 0).toString(16).padStart(8, "0");
  return out;
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function json(response) {
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/**
 * Creates a run and polls it until it is terminal.
 * `schedule(poll, elapsedMs)` gives the wait before poll number `poll` (0-based); the default is
 * our client's: `initial * 1.5^poll`, capped at 0.8 s for 30 s, then at 5 s. Pass `() => 500`
 * for a fixed 500 ms loop.
 */
export async function fetchLoopRun(baseUrl, input, { pollIntervalMs = 500, schedule, onGet } = {}) {
  const delay =
    schedule ??
    ((poll, elapsedMs) =>
      Math.min(Math.floor(pollIntervalMs * 1.5 ** poll), Math.max(elapsedMs < 30_000 ? 800 : 5000, pollIntervalMs)));
  const started = performance.now();
  let run = await json(
    await fetch(`${baseUrl}/v1/models/${MODEL}/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": `rk-idem-${hex()}` },
      body: JSON.stringify({ input, client_ref: `rk_${hex()}` }),
    }),
  );
  for (let poll = 0; ; poll++) {
    run = await json(await fetch(`${baseUrl}/v1/runs/${run.id}`));
    onGet?.(run);
    if (TERMINAL.has(run.status_code)) return run;
    await sleep(delay(poll, performance.now() - started));
  }
}
