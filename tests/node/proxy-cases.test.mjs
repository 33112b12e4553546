// The shared proxy case table (tests/proxy-cases.json) against the package's server entry:
// createProxy behind toNodeHandler on node:http, each case sent byte for byte over a raw socket
// (no client library normalises `..`, `//` or a method's case), with the dev server's mock as the
// upstream, which accepts only the proxy's key. The dev server's proxy runs the same table in
// devserver/src/tests/cases.rs.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { test } from "node:test";
import { createProxy, toNodeHandler } from "../../pkg/server/index.js";

const MOCK = process.env.MOCK_URL ?? "http://127.0.0.1:18181";
const KEY = "rf_live_case_table_key";
const TABLE = JSON.parse(readFileSync(new URL("../proxy-cases.json", import.meta.url), "utf8"));
// A 1x1 PNG, inline.
const IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/** The dev server's settings (environment names) as createProxy's options. */
function options(settings = {}) {
  const number = (name) => (settings[name] === undefined ? undefined : Number(settings[name]));
  const options = {};
  if (settings.PROXY_ALLOWED_HOSTS) options.allowedHosts = settings.PROXY_ALLOWED_HOSTS.split(",").map((h) => h.trim());
  if (settings.PROXY_MAX_BODY_BYTES) options.maxBodyBytes = number("PROXY_MAX_BODY_BYTES");
  if (settings.PROXY_MAX_IMAGES_PER_RUN) options.maxImagesPerRun = number("PROXY_MAX_IMAGES_PER_RUN");
  if (settings.PROXY_CREATES_PER_MINUTE) options.createsPerMinute = number("PROXY_CREATES_PER_MINUTE");
  if (settings.PROXY_CREATE_BURST) options.createBurst = number("PROXY_CREATE_BURST");
  if (settings.PROXY_RATE_PER_SEC) options.rateLimit = { perSecond: number("PROXY_RATE_PER_SEC"), burst: number("PROXY_BURST") ?? 40 };
  // The dev server's shared-secret hook is what `authenticate` is for in the server entry.
  if (settings.PROXY_SHARED_SECRET) options.authenticate = (request) => request.headers.get("x-proxy-secret") === settings.PROXY_SHARED_SECRET;
  const unknown = Object.keys(settings).filter((name) => !/^PROXY_(ALLOWED_HOSTS|MAX_BODY_BYTES|MAX_IMAGES_PER_RUN|CREATES_PER_MINUTE|CREATE_BURST|RATE_PER_SEC|BURST|SHARED_SECRET)$/.test(name));
  assert.deepEqual(unknown, [], "settings this runner does not map to options");
  return options;
}

function requestBytes(testCase, host) {
  const headers = new Map([["host", host]]);
  for (const [name, value] of Object.entries(testCase.headers ?? {})) headers.set(name, value.replaceAll("{host}", host));
  const body = testCase.body;
  let payload = Buffer.alloc(0);
  let chunked = false;
  let withLength = true;
  if (body?.create !== undefined) {
    payload = Buffer.from(JSON.stringify({ input: { prompt: "make it teal", image_url: IMAGE, num_images: body.create }, client_ref: "rk_case" }));
  } else if (body?.json !== undefined) payload = Buffer.from(JSON.stringify(body.json));
  else if (body?.text !== undefined) payload = Buffer.from(body.text);
  else if (body?.bytes !== undefined) payload = Buffer.alloc(body.bytes, "x");
  else if (body?.chunked !== undefined) {
    payload = Buffer.alloc(body.chunked, "x");
    chunked = true;
  } else if (body?.none !== undefined) withLength = false;
  if (body) headers.set("content-type", "application/json");
  let head = `${testCase.method} /api/runflow${testCase.path} HTTP/1.1\r\n`;
  for (const [name, value] of headers) head += `${name}: ${value}\r\n`;
  head += "connection: close\r\n";
  if (chunked) {
    const parts = [Buffer.from(head + "transfer-encoding: chunked\r\n\r\n")];
    for (let at = 0; at < payload.length; at += 1000) {
      const chunk = payload.subarray(at, at + 1000);
      parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n"));
    }
    parts.push(Buffer.from("0\r\n\r\n"));
    return Buffer.concat(parts);
  }
  if (withLength && body) head += `content-length: ${payload.length}\r\n`;
  return Buffer.concat([Buffer.from(head + "\r\n"), payload]);
}

/** Sends `bytes` as they are and reads the whole answer: status, header block, de-chunked body. */
function sendRaw(port, bytes) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(bytes));
    const received = [];
    socket.on("data", (chunk) => received.push(chunk));
    // The server may answer and close before reading a refused body.
    socket.on("error", () => {});
    socket.on("close", () => {
      const raw = Buffer.concat(received);
      const split = raw.indexOf("\r\n\r\n");
      if (split < 0) return reject(new Error(`no HTTP answer: ${JSON.stringify(raw.toString())}`));
      const head = raw.subarray(0, split).toString();
      let body = raw.subarray(split + 4);
      if (/\r\ntransfer-encoding: chunked/i.test(head)) body = dechunk(body);
      resolve({ status: Number(head.split(" ")[1]), head, body: body.toString() });
    });
  });
}

function dechunk(raw) {
  const parts = [];
  for (;;) {
    const end = raw.indexOf("\r\n");
    const size = parseInt(raw.subarray(0, end).toString(), 16);
    if (end < 0 || !size) break;
    parts.push(raw.subarray(end + 2, end + 2 + size));
    raw = raw.subarray(end + 4 + size);
  }
  return Buffer.concat(parts);
}

async function scenario() {
  const response = await fetch(`${MOCK}/__mock/scenarios`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ lifecycle_ms: [0, 0, 0], api_key: KEY }),
  });
  assert.equal(response.status, 201);
  const { base_url: base } = await response.json();
  return { upstream: MOCK + base, log: async () => (await (await fetch(`${MOCK}${base}/log`)).json()).requests };
}

for (const testCase of TABLE.cases) {
  test(`proxy case: ${testCase.name}`, async () => {
    const mock = await scenario();
    const logged = [];
    const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, ...options(testCase.settings), onLog: (entry) => logged.push(entry) });
    const server = http.createServer(toNodeHandler(proxy));
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address();
      const bytes = requestBytes(testCase, `127.0.0.1:${port}`);
      let answer;
      for (let i = 0; i < (testCase.repeat ?? 1); i++) answer = await sendRaw(port, bytes);
      const expect = testCase.expect_node_http ?? testCase.expect;
      const log = await mock.log();
      let code;
      try {
        code = JSON.parse(answer.body).code;
      } catch {}
      const summary = `${answer.status} ${answer.body.slice(0, 200)}`;
      assert.equal(answer.status, expect.status, summary);
      if (expect.code) assert.equal(code, expect.code, summary);
      assert.equal(log.length, expect.forwarded, `forwarded upstream: ${summary}`);
      if ("upstream_query" in expect) assert.equal(log.at(-1)?.query ?? null, expect.upstream_query);
      for (const [name, value] of Object.entries(expect.upstream_headers ?? {})) {
        assert.equal(log.at(-1)?.headers[name] ?? null, value, `upstream header ${name}`);
      }
      assert.ok(!answer.head.includes(KEY) && !answer.body.includes(KEY), "the key is in the answer");
      assert.ok(!JSON.stringify(logged).includes(KEY), "the key is in a log entry");
      if (!testCase.expect_node_http) assert.equal(logged.length, testCase.repeat ?? 1, "one log entry per call");
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
}
