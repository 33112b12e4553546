// The proxy's cost (issue 5): the same request straight to the mock and through a dev server in
// proxy mode in front of it, on loopback. Latency: sequential GETs, interleaved, p50 and p99 and
// their ratio. Throughput: requests per second with many in flight at once, each way.
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

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

// ---------------------------------------------------------------------------------------------
// The server entry's proxy (issue 12): the same GET straight to a mock scenario, through
// `toNodeHandler(createProxy(...))` on node:http in a child Node process (imported from
// pkg/server/index.js), and through the Rust dev server in proxy mode, on loopback. And the sizes
// of the two entries. `node benches/proxy.mjs` runs it alone and prints the table.

const KEY = "rf_bench_server_entry_key";
const MODEL_PATH = "/v1/models/black-forest-labs/flux-pro/kontext/runs";

// The children: the server entry on node:http (MODE=package), every budget off, or for reference
// a hand-written proxy of the same call (MODE=hand: fetch upstream with the key, res.end the
// text), each on a free loopback port. Each prints its origin and, when asked over IPC, the
// phases of the calls it served (performance.now(), per call): 'request' event → the Fetch
// handler called (toNodeHandler's Headers and Request), → fetch called (the proxy's rules), →
// the upstream's headers (undici to the mock), → the handler's Response (the body read), →
// res.end() called (the status, headers and body handed to node:http).
const NODE_PROXY = `
import http from "node:http";
const phases = [];
let current = null;
const realFetch = globalThis.fetch;
globalThis.fetch = (...args) => {
  const t = current;
  if (t) t.fetch = performance.now();
  return realFetch(...args).then((r) => { if (t) t.headers = performance.now(); return r; });
};
let listener;
if (process.env.MODE === "package") {
  const { createProxy, toNodeHandler } = await import(process.env.SERVER_ENTRY);
  const proxy = createProxy({ apiKey: process.env.BENCH_KEY, upstream: process.env.BENCH_UPSTREAM, rateLimit: false, createsPerMinute: false });
  listener = toNodeHandler(async (request) => {
    const t = current;
    t.handler = performance.now();
    const response = await proxy(request);
    t.response = performance.now();
    return response;
  });
} else {
  listener = async (req, res) => {
    const t = current;
    t.handler = performance.now();
    const r = await fetch(process.env.BENCH_UPSTREAM + req.url.slice("/api/runflow".length), { headers: { authorization: "Bearer " + process.env.BENCH_KEY } });
    const text = await r.text();
    t.response = performance.now();
    res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "application/json" });
    res.end(text);
  };
}
const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const t = (current = { request: performance.now() });
  const end = res.end;
  res.end = function (...args) {
    t.end = performance.now();
    if (phases.length < 1e6) phases.push(t);
    return end.apply(this, args);
  };
  listener(req, res);
});
server.listen(0, "127.0.0.1", () => console.log("node proxy: http://127.0.0.1:" + server.address().port));
process.on("message", () => process.send(phases.splice(0)));
process.on("SIGTERM", () => { server.closeAllConnections(); server.close(() => process.exit(0)); });
`;

function startNodeProxy(upstream, mode) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", NODE_PROXY], {
      cwd: root,
      env: { ...process.env, MODE: mode, SERVER_ENTRY: pathToFileURL(root + "pkg/server/index.js").href, BENCH_KEY: KEY, BENCH_UPSTREAM: upstream },
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const match = out.match(/node proxy: (http:\/\/127\.0\.0\.1:\d+)/);
      if (match) {
        resolve({
          origin: match[1],
          stop: () => child.exitCode === null && child.kill("SIGTERM"),
          phases: () => new Promise((res) => { child.once("message", res); child.send("phases"); }),
        });
      }
    });
    child.on("exit", (code) => reject(new Error(`node proxy exited (${code}): ${out}`)));
    setTimeout(() => reject(new Error(`node proxy did not start in 20 s: ${out}`)), 20_000);
  });
}

// A GET on a keep-alive agent; resolves with the ms to the end of the body, checks the status.
function timedGet(agent, url, headers) {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    request(url, { agent, headers }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve(performance.now() - started) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
    }).on("error", reject).end();
  });
}

function bodyOf(agent, url, headers) {
  return new Promise((resolve, reject) => {
    request(url, { agent, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    }).on("error", reject).end();
  });
}

const quantile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
const median = (list) => quantile([...list].sort((a, b) => a - b), 0.5);

/** `count` GETs with `concurrency` in flight at once: requests per second. */
async function inFlight(agent, url, headers, concurrency, count) {
  let issued = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (issued < count) {
      issued++;
      await timedGet(agent, url, headers);
    }
  }));
  return (count * 1000) / (performance.now() - started);
}

/** Gzip -9 of each file, summed (a server entry is installed and loaded file by file, not bundled). */
async function filesSize(paths) {
  const files = await Promise.all(paths.map(async (path) => {
    const bytes = await readFile(root + path);
    return { path, bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  }));
  const sum = (k) => files.reduce((a, f) => a + f[k], 0);
  return { files, bytes: sum("bytes"), gzip: sum("gzip") };
}

/** The browser entry as scripts/size.mjs measures it (`make size`), and the server entry's files. */
export async function entrySizes() {
  const { shippedSize } = await import("../scripts/size.mjs");
  const browser = await shippedSize();
  const snippets = (await readdir(root + "pkg/server/snippets", { recursive: true }))
    .filter((p) => p.endsWith(".js"))
    .sort()
    .map((p) => `pkg/server/snippets/${p}`);
  const wasm = await filesSize(["pkg/server/runflow_kontext_server_bg.wasm"]);
  const js = await filesSize(["pkg/server/index.js", "pkg/server/handlers.js", "pkg/server/runflow_kontext_server.js", ...snippets]);
  return {
    browser,
    server: { wasm: { bytes: wasm.bytes, gzip: wasm.gzip }, js, total: { bytes: wasm.bytes + js.bytes, gzip: wasm.gzip + js.gzip } },
  };
}

/**
 * The three upstream paths of `GET /v1/runs/{id}`: `n` sequential GETs each after `warmup`,
 * round-robin over the paths with the order rotating, then `count` GETs with `concurrency` in
 * flight, `rounds` times per path (interleaved; the median round is reported). Plus the sizes.
 */
export async function benchProxy({ n = 1000, warmup = 50, concurrency = 32, count = 3000, rounds = 3 } = {}) {
  const mock = await start({});
  const stops = [mock.stop];
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    const scenario = await fetch(`${mock.origin}/__mock/scenarios`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ lifecycle_ms: [0, 0, 0], api_key: KEY }),
    }).then((r) => r.json());
    const upstream = mock.origin + scenario.base_url;
    const created = await fetch(upstream + MODEL_PATH, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ input: { prompt: "p", image_url: "https://127.0.0.1/x.png" } }),
    }).then((r) => r.json());
    if (!created.id) throw new Error(`no run created: ${JSON.stringify(created)}`);

    const node = await startNodeProxy(upstream, "package");
    stops.push(node.stop);
    const hand = await startNodeProxy(upstream, "hand");
    stops.push(hand.stop);
    const rust = await start({ RUNFLOW_API_KEY: KEY, RUNFLOW_UPSTREAM: upstream, PROXY_RATE_PER_SEC: "0", PROXY_CREATES_PER_MINUTE: "0" });
    stops.push(rust.stop);

    const paths = [
      { name: "direct", label: "mock directly", url: `${upstream}/v1/runs/${created.id}`, headers: { authorization: `Bearer ${KEY}` } },
      { name: "node", label: "runflow-kontext/server on node:http (toNodeHandler)", url: `${node.origin}/api/runflow/v1/runs/${created.id}`, headers: {}, child: node },
      { name: "rust", label: "Rust dev server, proxy mode", url: `${rust.origin}/api/runflow/v1/runs/${created.id}`, headers: {} },
      { name: "hand", label: "reference: hand-written Node proxy (fetch + res.end, no checks)", url: `${hand.origin}/api/runflow/v1/runs/${created.id}`, headers: {}, child: hand },
    ];
    // Each path answers the same run, with the key the scenario wants (a wrong or missing key is a 401).
    for (const p of paths) {
      const { status, text } = await bodyOf(agent, p.url, p.headers);
      if (status !== 200 || JSON.parse(text).id !== created.id) throw new Error(`${p.name}: HTTP ${status} ${text.slice(0, 200)}`);
      p.responseBytes = Buffer.byteLength(text);
    }

    for (let i = 0; i < warmup; i++) for (const p of paths) await timedGet(agent, p.url, p.headers);
    for (const p of paths) await p.child?.phases(); // drop the warm-up's
    const times = Object.fromEntries(paths.map((p) => [p.name, []]));
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < paths.length; k++) {
        const p = paths[(i + k) % paths.length];
        times[p.name].push(await timedGet(agent, p.url, p.headers));
      }
    }
    for (const p of paths) if (p.child) p.phases = await p.child.phases();

    const perSec = Object.fromEntries(paths.map((p) => [p.name, []]));
    for (const p of paths) await inFlight(agent, p.url, p.headers, concurrency, Math.min(count, 500)); // warm the sockets
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < paths.length; k++) {
        const p = paths[(r + k) % paths.length];
        perSec[p.name].push(await inFlight(agent, p.url, p.headers, concurrency, count));
      }
    }

    const result = { n, warmup, concurrency, count, rounds, runId: created.id, paths: {} };
    for (const p of paths) {
      const sorted = times[p.name].sort((a, b) => a - b);
      result.paths[p.name] = {
        label: p.label,
        responseBytes: p.responseBytes,
        latencyMs: { min: sorted[0], p50: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), p99: quantile(sorted, 0.99), max: sorted.at(-1) },
        perSec: median(perSec[p.name]),
        perSecRounds: perSec[p.name],
      };
      // Medians of each phase inside the Node child, over the sequential GETs (see NODE_PROXY).
      if (p.phases) {
        const ph = (from, to) => median(p.phases.map((t) => t[to] - t[from]));
        result.paths[p.name].phasesMs = {
          n: p.phases.length,
          toHandler: ph("request", "handler"),
          beforeFetch: ph("handler", "fetch"),
          upstream: ph("fetch", "headers"),
          body: ph("headers", "response"),
          write: ph("response", "end"),
          inChild: ph("request", "end"),
        };
        result.paths[p.name].phasesMs.outsideChild = result.paths[p.name].latencyMs.p50 - result.paths[p.name].phasesMs.inChild;
      }
    }
    const d = result.paths.direct;
    for (const p of Object.values(result.paths)) {
      p.addedMs = { p50: p.latencyMs.p50 - d.latencyMs.p50, p99: p.latencyMs.p99 - d.latencyMs.p99 };
    }
    result.sizes = await entrySizes();
    return result;
  } finally {
    agent.destroy();
    for (const stop of stops.reverse()) stop();
  }
}

const f = (v, d = 3) => v.toFixed(d);
const kB = (b) => `${(b / 1000).toFixed(1)} KB`;

/** The report's section for {@link benchProxy}'s result. */
export function renderProxyServer(r) {
  const order = ["direct", "node", "rust", "hand"].filter((k) => r.paths[k]);
  const rows = order.map((k) => {
    const p = r.paths[k];
    return `| ${p.label} | ${f(p.latencyMs.p50)} | ${f(p.latencyMs.p99)} | ${k === "direct" ? "—" : `+${f(p.addedMs.p50)} ms`} | ${Math.round(p.perSec)} |`;
  });
  const phaseRow = (k) => {
    const ph = r.paths[k].phasesMs;
    return `| ${k === "node" ? "runflow-kontext/server" : "hand-written"} | ${f(ph.toHandler)} | ${f(ph.beforeFetch)} | ${f(ph.upstream)} | ${f(ph.body)} | ${f(ph.write)} | ${f(ph.inChild)} | ${f(ph.outsideChild)} |`;
  };
  const s = r.sizes;
  return [
    "## Proxy: the server entry in Node, next to the Rust dev server (issue 12)",
    "",
    `\`GET /v1/runs/{id}\` of one finished run in a mock scenario that accepts only the bench's key (\`api_key\`), on loopback: straight to the scenario; through \`toNodeHandler(createProxy({ apiKey, upstream, rateLimit: false, createsPerMinute: false }))\` on node:http in a child Node process (\`pkg/server/index.js\`); through the release dev server in proxy mode (\`PROXY_RATE_PER_SEC=0\`, \`PROXY_CREATES_PER_MINUTE=0\`); and, for reference, a hand-written Node proxy (node:http, \`fetch\` with the key, \`res.end\` of the text, no checks) in another child. Node's http with keep-alive (\`benches/proxy.mjs\`): ${r.n} sequential GETs per path after ${r.warmup} warm-up, round-robin over the paths; then ${r.count} GETs with ${r.concurrency} in flight, ${r.rounds} round(s) per path interleaved, the median round. The client, the mock and the proxies share the machine's cores, so req/s is a floor.`,
    "",
    "| upstream path | p50 ms | p99 ms | added p50 vs direct | req/s at 32 in flight |",
    "|---|---|---|---|---|",
    ...rows,
    "",
    `req/s rounds: ${order.map((k) => `${k} ${r.paths[k].perSecRounds.map(Math.round).join(" / ")}`).join("; ")}.`,
    "",
    "Where a sequential GET's time goes in the Node children (medians of each phase, ms, \`performance.now()\` in the child): the \`request\` event to the Fetch handler called (toNodeHandler's Headers and Request), to \`fetch\` called (the proxy's checks, in wasm), to the upstream's headers (undici to the mock), to the handler's Response (its body read), to \`res.end()\` called (the answer handed to node:http); outside is the client's p50 less the child's median: the client, two loopback hops, node:http parsing the request before its \`request\` event and sending the answer after \`res.end()\`.",
    "",
    "| Node proxy | to handler | checks | upstream headers | body | write | in the child | outside |",
    "|---|---|---|---|---|---|---|---|",
    ...["node", "hand"].filter((k) => r.paths[k]?.phasesMs).map(phaseRow),
    "",
    "| entry | wasm gzip -9 | JS gzip -9 | total gzip (raw) |",
    "|---|---|---|---|",
    `| browser (\`make size\`: the glue bundled and minified + \`runflow_kontext_bg.wasm\`) | ${kB(s.browser.wasm.gzip)} | ${kB(s.browser.js.gzip)} | ${kB(s.browser.total.gzip)} (${kB(s.browser.total.bytes)}) |`,
    `| server (\`runflow_kontext_server_bg.wasm\`; ${s.server.js.files.map((x) => `\`${x.path.replace(/^pkg\/server\//, "").replace(/snippets\/[^/]+\/js\//, "snippets/…/")}\``).join(", ")}, each file as installed) | ${kB(s.server.wasm.gzip)} | ${kB(s.server.js.gzip)} | ${kB(s.server.total.gzip)} (${kB(s.server.total.bytes)}) |`,
    "",
  ].join("\n");
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await benchProxy();
  console.log(renderProxyServer(result));
  if (process.env.BENCH_JSON) console.log(JSON.stringify(result, null, 2));
}
