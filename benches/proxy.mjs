// The proxy's cost (issue 5): the same request straight to the mock and through a dev server in
// proxy mode in front of it, on loopback. Latency: sequential GETs, interleaved, p50 and p99 and
// their ratio. Throughput: requests per second with many in flight at once, each way.
import { spawn } from "node:child_process";
import { Agent, request } from "node:http";

const root = new URL("../", import.meta.url).pathname;

function start(env) {
  const { RUNFLOW_API_KEY: _ignored, ...inherited } = process.env;
  return new Promise((resolve, reject) => {
    const child = spawn(root + "target/release/devserver", [], { cwd: root, env: { ...inherited, PORT: "0", ...env }, stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const match = out.match(/dev server: (http:\/\/127\.0\.0\.1:\d+)/);
      if (match) resolve({ origin: match[1], stop: () => child.kill("SIGTERM") });
    });
    child.on("exit", (code) => reject(new Error(`dev server exited (${code}): ${out}`)));
  });
}

// Node's http with keep-alive, so both paths reuse connections like a browser does.
function get(agent, url) {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve(performance.now() - started) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
    }).on("error", reject).end();
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

async function throughput(agent, url, concurrency, ms) {
  let done = 0;
  const until = performance.now() + ms;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      await get(agent, url);
      done++;
    }
  }));
  return (done * 1000) / ms;
}

/** Runs the comparison; `n` sequential GETs per side, then `concurrency` in flight for `ms` each. */
export async function proxyCost({ n = 2000, concurrency = 32, ms = 3000 } = {}) {
  const mock = await start({});
  const proxy = await start({ RUNFLOW_API_KEY: "rf_bench_key", RUNFLOW_UPSTREAM: `${mock.origin}/api/runflow`, PROXY_RATE_PER_SEC: "0" });
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    // A run the GETs fetch: created on the mock, read through both paths.
    const created = await fetch(`${mock.origin}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: { prompt: "p", image_url: "https://127.0.0.1/x.png" } }),
    }).then((r) => r.json());
    const direct = `${mock.origin}/api/runflow/v1/runs/${created.id}`;
    const proxied = `${proxy.origin}/api/runflow/v1/runs/${created.id}`;
    for (let i = 0; i < 100; i++) await Promise.all([get(agent, direct), get(agent, proxied)]);
    const times = { direct: [], proxied: [] };
    for (let i = 0; i < n; i++) {
      // Interleaved, alternating which goes first, so drift hits both alike.
      const order = i % 2 ? ["direct", "proxied"] : ["proxied", "direct"];
      for (const side of order) times[side].push(await get(agent, side === "direct" ? direct : proxied));
    }
    const summary = Object.fromEntries(
      Object.entries(times).map(([side, list]) => {
        const sorted = list.sort((a, b) => a - b);
        return [side, { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) }];
      }),
    );
    return {
      n,
      latencyMs: summary,
      ratio: { p50: summary.proxied.p50 / summary.direct.p50, p99: summary.proxied.p99 / summary.direct.p99 },
      addedMs: { p50: summary.proxied.p50 - summary.direct.p50, p99: summary.proxied.p99 - summary.direct.p99 },
      throughput: {
        concurrency,
        seconds: ms / 1000,
        directPerSec: await throughput(agent, direct, concurrency, ms),
        proxiedPerSec: await throughput(agent, proxied, concurrency, ms),
      },
    };
  } finally {
    agent.destroy();
    proxy.stop();
    mock.stop();
  }
}
