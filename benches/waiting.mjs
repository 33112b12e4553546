// The waiting comparison computed from the poll schedules themselves, over run lengths spread
// evenly across +-1 s around each nominal length (so a fixed loop's phase is uniform).

/** Our client's wait before poll `poll`, `elapsedMs` into the wait (src/policy.rs
 * PollSchedule::delay_ms, visible page): x1.5 each poll, capped at 0.8 s for 30 s, then 5 s. */
export function pollDelay(poll, elapsedMs, initialMs = 500) {
  const cap = elapsedMs < 30_000 ? Math.max(800, initialMs) : Math.max(5000, initialMs);
  return Math.min(Math.floor(initialMs * 1.5 ** Math.min(poll, 64)), cap);
}

export const STRATEGIES = {
  ours: (poll, elapsedMs) => pollDelay(poll, elapsedMs),
  fixed500: () => 500,
  fixed2000: () => 2000,
};

/** One run of length `runMs` polled with `delay`: GETs sent and completion -> resolution delay.
 * A request takes `latencyMs`; the server answers at its midpoint. Create returns at t = latency. */
export function simulateOne(runMs, delay, latencyMs) {
  let sent = latencyMs; // the first GET goes out as soon as the create returned
  for (let poll = 0; ; poll++) {
    if (sent + latencyMs / 2 >= runMs) return { gets: poll + 1, delayMs: sent + latencyMs - runMs };
    sent += latencyMs + delay(poll, sent - latencyMs);
  }
}

export function simulateWaiting({ durations, latencyMs, samples = 2000 }) {
  const out = [];
  for (const duration of durations) {
    for (const [strategy, delay] of Object.entries(STRATEGIES)) {
      const runs = Array.from({ length: samples }, (_, i) => simulateOne(duration - 1000 + (2000 * (i + 0.5)) / samples, delay, latencyMs));
      const exact = simulateOne(duration, delay, latencyMs);
      const delays = runs.map((r) => r.delayMs).sort((a, b) => a - b);
      out.push({
        duration, strategy, latencyMs,
        exact,
        spread: {
          meanGets: runs.reduce((a, r) => a + r.gets, 0) / samples,
          medianDelayMs: delays[Math.floor(samples / 2)],
          p95DelayMs: delays[Math.floor(samples * 0.95)],
          meanDelayMs: delays.reduce((a, b) => a + b, 0) / samples,
        },
      });
    }
  }
  return out;
}
