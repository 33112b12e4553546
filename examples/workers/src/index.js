// A Cloudflare Worker in front of Runflow: the browser client's calls under /api/runflow go to
// Runflow with the key added (everything else there is refused), and Runflow's callbacks arrive at
// /api/runflow/callbacks. The key never leaves the Worker.
//
// wrangler resolves "runflow-kontext/server" through the package's `workerd` export condition,
// which imports the .wasm as a module (Workers cannot compile wasm from bytes at run time).
import { createProxy, receiveCallback } from "runflow-kontext/server";

const MOUNT = "/api/runflow";
const CALLBACKS = `${MOUNT}/callbacks`;

// One proxy per isolate, made from the first request's env (a Worker has no env at import time).
// Its rate limits and create budgets live in this isolate: each isolate counts its own.
let proxy;
function proxyFor(env) {
  proxy ??= createProxy({
    apiKey: env.RUNFLOW_API_KEY,
    upstream: env.RUNFLOW_UPSTREAM || undefined,
    mountPath: MOUNT,
    // Cloudflare sets it to the visitor's address; a client cannot pick its own.
    clientIp: (request) => request.headers.get("cf-connecting-ip"),
    // `wrangler tail` and Workers Logs show these lines; they never hold the key or a body.
    onLog: (entry) => console.log(JSON.stringify(entry)),
  });
  return proxy;
}

async function callback(request, env) {
  if (request.method !== "POST") return Response.json({ error: "method not allowed" }, { status: 405, headers: { allow: "POST" } });
  try {
    const event = await receiveCallback(request, { secrets: (env.RUNFLOW_CALLBACK_SECRETS ?? "").split(",") });
    // Handle it idempotently on (runId, event): a redelivery has new bytes and a new signature.
    // Longer work belongs in ctx.waitUntil() or a queue, after answering.
    console.log("runflow callback", JSON.stringify({ event: event.event, runId: event.runId, status: event.status, requestId: event.requestId }));
    return Response.json({ ok: true });
  } catch (error) {
    if (error?.code === "invalid_signature") return Response.json({ error: "invalid signature" }, { status: 401 });
    if (error?.code === "invalid_response") return Response.json({ error: "not a callback" }, { status: 400 });
    throw error;
  }
}

export default {
  async fetch(request, env) {
    const { pathname } = new URL(request.url);
    if (pathname === CALLBACKS) return callback(request, env);
    if (pathname === MOUNT || pathname.startsWith(`${MOUNT}/`)) return proxyFor(env)(request);
    return new Response("not found\n", { status: 404, headers: { "content-type": "text/plain" } });
  },
};
