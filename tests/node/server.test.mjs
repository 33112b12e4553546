// runflow-kontext/server as an application meets it, in Node against the dev server's mock: the
// options refused by name, the hooks (authenticate, clientIp, onLog), upstream failures (timeout,
// unreachable, a redirect, an error body echoing the key), the Fetch API path without
// toNodeHandler (Next.js, Workers, Deno, Bun), Express-style parsed bodies, and the callback
// receiver's signature vectors. The security case table is tests/node/proxy-cases.test.mjs.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import http from "node:http";
import { test } from "node:test";
import {
  RunflowError, createProxy, parseCallback, receiveCallback, toNodeHandler, verifyCallbackSignature,
} from "../../pkg/server/index.js";
import * as nodeEntry from "../../pkg/node.js";

const MOCK = process.env.MOCK_URL ?? "http://127.0.0.1:18181";
const KEY = "rf_live_server_entry_key";
const HEALTH = "http://127.0.0.1/api/runflow/v1/health";

async function scenario(config = {}) {
  const response = await fetch(`${MOCK}/__mock/scenarios`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ lifecycle_ms: [0, 0, 0], api_key: KEY, ...config }),
  });
  assert.equal(response.status, 201);
  const { base_url: base } = await response.json();
  return { upstream: MOCK + base, log: async () => (await (await fetch(`${MOCK}${base}/log`)).json()).requests };
}

/** `listener` on a free loopback port for the test's duration. */
async function listen(listener, body) {
  const server = http.createServer(listener);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await body(`http://127.0.0.1:${server.address().port}`);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

const thrown = (fn) => {
  try {
    fn();
  } catch (error) {
    return error;
  }
  assert.fail("did not throw");
};

test("options are refused by name, as RunflowError validation errors", () => {
  for (const [options, field, pattern] of [
    [{ apiKey: KEY, apikey: KEY }, "apikey", /no option `apikey`/],
    [{ apiKey: KEY, rateLimit: { perSecond: "10", burst: 4 } }, "rateLimit", /false, or \{ perSecond/],
    [{ apiKey: KEY, rateLimit: { perSecond: 0, burst: 4 } }, "rateLimit", /positive/],
    [{ apiKey: KEY, maxImagesPerRun: 5 }, "maxImagesPerRun", /1 to 4/],
    [{ apiKey: KEY, upstream: "ftp://api.runflow.io" }, "upstream", /http/],
    [{ apiKey: KEY, upstream: "https://user:rf_live_x@api.runflow.io" }, "upstream", /credentials/],
    [{ apiKey: KEY, allowedHosts: ["http://studio.example"] }, "allowedHosts", /host\[:port\]/],
    [{ apiKey: KEY, allowedModels: [] }, "allowedModels", /at least one/],
    [{ apiKey: KEY, mountPath: "api" }, "mountPath", /path/],
    [{ apiKey: KEY, authenticate: "yes" }, "authenticate", /function/],
    [{ apiKey: 42 }, "apiKey", /string/],
  ]) {
    const error = thrown(() => createProxy(options));
    assert.ok(error instanceof RunflowError, String(error));
    assert.equal(error.code, "validation_error");
    assert.equal(error.field, field, error.message);
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes("rf_live_x"), "a key in the upstream URL is not quoted back");
  }
  assert.equal(thrown(() => createProxy()).field, "options");
});

test("a proxy without a key is made (a build imports it) and answers 500 without forwarding", async () => {
  const mock = await scenario();
  const proxy = createProxy({ apiKey: process.env.NO_SUCH_VARIABLE, upstream: mock.upstream });
  const response = await proxy(new Request(HEALTH));
  assert.equal(response.status, 500);
  assert.equal((await response.json()).code, "PROXY_NOT_CONFIGURED");
  assert.equal((await mock.log()).length, 0);
});

test("the Fetch API path: forwarded with the key, guarded headers, no framing copied, one log entry", async () => {
  const mock = await scenario();
  const entries = [];
  const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, onLog: (entry) => entries.push(entry), clientIp: () => "203.0.113.7" });
  const response = await proxy(new Request(HEALTH, { headers: { origin: "http://127.0.0.1", authorization: "Bearer rf_live_visitor", cookie: "s=1" } }));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { status: "ok" });
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  assert.equal(response.headers.get("content-length"), null, "the runtime frames the body");
  const [logged] = await mock.log();
  assert.equal(logged.headers.authorization, "Bearer [redacted]");
  assert.equal(logged.headers.cookie, undefined);
  assert.deepEqual(entries.map(({ durationMs, ...rest }) => rest), [
    { method: "GET", path: "/v1/health", status: 200, outcome: "forwarded", reason: null, runId: null, client: "203.0.113.7" },
  ]);
  assert.ok(entries[0].durationMs >= 0);

  const foreign = await proxy(new Request(HEALTH, { headers: { origin: "http://evil.example" } }));
  assert.equal(foreign.status, 403);
  assert.equal((await foreign.json()).code, "ORIGIN_NOT_ALLOWED");
  const outside = await proxy(new Request("http://127.0.0.1/api/other/v1/health"));
  assert.equal(outside.status, 403);
  assert.equal((await mock.log()).length, 1);
});

test("a custom mountPath, and a mount-less path refused", async () => {
  const mock = await scenario();
  const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, mountPath: "/kontext/" });
  assert.equal((await proxy(new Request("http://127.0.0.1/kontext/v1/health"))).status, 200);
  assert.equal((await proxy(new Request(HEALTH))).status, 403);
});

test("authenticate: true forwards; false is 401; a Response is answered as is; a throw is 500", async () => {
  const mock = await scenario();
  const errors = [];
  const original = console.error;
  console.error = (...args) => errors.push(args);
  try {
    const verdicts = [
      [async () => true, 200],
      [() => false, 401],
      [() => undefined, 401],
      [() => new Response("sign in", { status: 302, headers: { location: "/login" } }), 302],
      [() => {
        throw new Error("session store down");
      }, 500],
      [async () => {
        throw new Error("async too");
      }, 500],
    ];
    for (const [authenticate, status] of verdicts) {
      const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, authenticate });
      const response = await proxy(new Request(HEALTH));
      assert.equal(response.status, status, String(authenticate));
      if (status === 401) assert.equal((await response.json()).code, "UNAUTHENTICATED");
      if (status === 302) assert.equal(response.headers.get("location"), "/login");
    }
    assert.equal((await mock.log()).length, 1, "only the accepted call reached Runflow");
    assert.equal(errors.length, 2, "each throw is reported");
  } finally {
    console.error = original;
  }
});

test("a throwing onLog or clientIp does not break the call", async () => {
  const mock = await scenario();
  const original = console.error;
  const errors = [];
  console.error = (...args) => errors.push(args);
  try {
    const proxy = createProxy({
      apiKey: KEY,
      upstream: mock.upstream,
      onLog: () => {
        throw new Error("log sink down");
      },
      clientIp: () => {
        throw new Error("no header");
      },
    });
    assert.equal((await proxy(new Request(HEALTH))).status, 200);
    assert.equal(errors.length, 2);
  } finally {
    console.error = original;
  }
});

test("upstream failures: a hang is 504 at timeoutMs, a closed port 502, with nothing leaked", async () => {
  const mock = await scenario({ faults: [{ on: "health", action: { type: "hang" } }] });
  const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, timeoutMs: 300 });
  const started = Date.now();
  const hung = await proxy(new Request(HEALTH));
  assert.equal(hung.status, 504);
  assert.equal((await hung.json()).code, "GATEWAY_TIMEOUT");
  assert.ok(Date.now() - started < 3000);

  const closed = await listen(() => {}, async (url) => url);
  const down = createProxy({ apiKey: KEY, upstream: closed });
  const answer = await down(new Request(HEALTH));
  assert.equal(answer.status, 502);
  const text = await answer.text();
  assert.ok(!text.includes(KEY));
});

test("an upstream error body echoing the key is scrubbed; a redirect is not followed", async () => {
  let redirectedTo = 0;
  await listen((req, res) => {
    if (req.url.endsWith("/v1/health")) {
      res.writeHead(400, { "content-type": "application/json", "x-ratelimit-remaining": "3", "set-cookie": "upstream=1" });
      return res.end(JSON.stringify({ code: "BAD", message: `you sent ${req.headers.authorization}` }));
    }
    if (req.url.includes("/v1/runs/")) {
      res.writeHead(302, { location: "/elsewhere" });
      return res.end();
    }
    redirectedTo++;
    res.end("followed");
  }, async (upstream) => {
    const proxy = createProxy({ apiKey: KEY, upstream });
    const echoed = await proxy(new Request(HEALTH));
    assert.equal(echoed.status, 400);
    assert.equal(echoed.headers.get("x-ratelimit-remaining"), "3");
    assert.equal(echoed.headers.get("set-cookie"), null, "only the listed response headers come back");
    assert.deepEqual(await echoed.json(), { code: "BAD", message: "you sent Bearer [redacted]" });
    const moved = await proxy(new Request("http://127.0.0.1/api/runflow/v1/runs/abc"));
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.get("location"), null);
  });
  assert.equal(redirectedTo, 0);
});

test("toNodeHandler: a run end to end through node:http, the socket's address for the budgets", async () => {
  const mock = await scenario();
  const entries = [];
  const proxy = createProxy({ apiKey: KEY, upstream: mock.upstream, onLog: (entry) => entries.push(entry) });
  await listen(toNodeHandler(proxy), async (url) => {
    const client = new nodeEntry.KontextClient({ baseUrl: `${url}/api/runflow`, pollIntervalMs: 20 });
    const image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    const run = await client.run({ prompt: "make it snow", image_url: image });
    assert.equal(run.status, "succeeded");
    const create = entries.find((entry) => entry.path.endsWith("/runs") && entry.method === "POST");
    assert.equal(create.runId, run.id, "the create's new run is in its log entry");
    assert.ok(entries.every((entry) => entry.client === "127.0.0.1"));
  });
});

test("toNodeHandler after an Express-style body parser forwards the parsed body", async () => {
  const mock = await scenario();
  const handler = toNodeHandler(createProxy({ apiKey: KEY, upstream: mock.upstream }));
  const parsing = (req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      req.body = JSON.parse(Buffer.concat(chunks).toString());
      handler(req, res, (error) => {
        res.writeHead(500);
        res.end(String(error));
      });
    });
  };
  await listen(parsing, async (url) => {
    const image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    const response = await fetch(`${url}/api/runflow/v1/models/black-forest-labs/flux-pro/kontext/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: { prompt: "p", image_url: image } }),
    });
    assert.equal(response.status, 201, await response.clone().text());
    assert.equal((await response.json()).input.prompt, "p");
  });
});

const SECRET = "whsec_current";
const OLD = "whsec_previous";
const sign = (body, secret) => createHmac("sha256", secret).update(body).digest("hex");
const delivery = (body, headers) => new Request("http://127.0.0.1/api/runflow/callbacks", { method: "POST", body, headers });
const PAYLOAD = JSON.stringify({
  event: "run.partial_succeeded",
  run_id: "run_9",
  status: "partial_succeeded",
  output: { images: [{ url: "https://cdn.example/1.jpg" }] },
  duration_ms: 4200,
  created_at: "2026-12-01T10:00:00+00:00",
  completed_at: "2026-12-01T10:00:04.2+00:00",
  metadata: { order: "7" },
});

test("receiveCallback: a signed delivery, normalised like a run", async () => {
  const event = await receiveCallback(delivery(PAYLOAD, { "runflow-signature": sign(PAYLOAD, SECRET), "runflow-request-id": "req_cb" }), { secrets: [SECRET] });
  assert.deepEqual(event, {
    event: "run.partial_succeeded",
    runId: "run_9",
    status: "partial_succeeded",
    statusCode: "partial_succeeded",
    output: { outputs: [{ type: "image", url: "https://cdn.example/1.jpg", content_type: "image/jpeg" }], seed: null, model_data: null, nsfw_detected: null, timing: null },
    durationMs: 4200,
    createdAt: "2026-12-01T10:00:00+00:00",
    completedAt: "2026-12-01T10:00:04.2+00:00",
    metadata: { order: "7" },
    requestId: "req_cb",
  });
  assert.deepEqual(parseCallback(PAYLOAD, "req_cb"), event);
  assert.deepEqual(parseCallback(new TextEncoder().encode(PAYLOAD), "req_cb"), event);
});

test("receiveCallback: the signature vectors", async () => {
  const signature = sign(PAYLOAD, SECRET);
  const accepted = [
    [PAYLOAD, signature, [SECRET]],
    [PAYLOAD, signature.toUpperCase(), [SECRET]],
    [PAYLOAD, sign(PAYLOAD, OLD), [SECRET, OLD]], // during a rotation, either secret
  ];
  for (const [body, header, secrets] of accepted) {
    assert.equal((await receiveCallback(delivery(body, { "runflow-signature": header }), { secrets })).runId, "run_9");
    assert.equal(verifyCallbackSignature(body, header, secrets), true);
  }
  // A redelivery rebuilds the payload: new bytes, its own valid signature.
  const redelivered = PAYLOAD.replace("4200", "4200.0");
  assert.equal((await receiveCallback(delivery(redelivered, { "runflow-signature": sign(redelivered, SECRET) }), { secrets: [SECRET] })).runId, "run_9");
  const refused = [
    [PAYLOAD + " ", signature, [SECRET], "a tampered body"],
    [PAYLOAD, sign(PAYLOAD, "whsec_other"), [SECRET], "another secret"],
    [PAYLOAD, signature.slice(0, 63), [SECRET], "a truncated header"],
    [PAYLOAD, undefined, [SECRET], "no header"],
    [PAYLOAD, sign(PAYLOAD, OLD), [SECRET], "a retired secret"],
    [redelivered, signature, [SECRET], "a redelivery under the first delivery's signature"],
  ];
  for (const [body, header, secrets, what] of refused) {
    const headers = header === undefined ? {} : { "runflow-signature": header };
    const error = await receiveCallback(delivery(body, headers), { secrets }).catch((e) => e);
    assert.ok(error instanceof RunflowError, what);
    assert.equal(error.code, "invalid_signature", what);
    assert.equal(error.status, 401, what);
    assert.equal(verifyCallbackSignature(body, header, secrets), false, what);
  }
});

test("receiveCallback: a signed body that is not a callback, and missing secrets", async () => {
  const body = JSON.stringify({ hello: "world" });
  const error = await receiveCallback(delivery(body, { "runflow-signature": sign(body, SECRET) }), { secrets: [SECRET] }).catch((e) => e);
  assert.equal(error.code, "invalid_response");
  assert.throws(() => parseCallback("<html>"), (e) => e instanceof RunflowError && e.code === "invalid_response");
  for (const options of [undefined, {}, { secrets: [] }, { secrets: [""] }]) {
    const missing = await receiveCallback(delivery(PAYLOAD, {}), options).catch((e) => e);
    assert.equal(missing.code, "validation_error");
    assert.equal(missing.field, "secrets");
  }
});

test("the Node entry re-exports the server half", () => {
  for (const name of ["createProxy", "toNodeHandler", "receiveCallback", "parseCallback", "verifyCallbackSignature", "KontextClient", "RunflowError"]) {
    assert.equal(typeof nodeEntry[name], "function", name);
  }
  assert.equal(nodeEntry.RunflowError, RunflowError);
});
