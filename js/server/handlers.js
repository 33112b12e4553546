// The server half's JS surface: createProxy over the wasm proxy, toNodeHandler (node:http and
// Express speak (req, res), not the Fetch API), and the callback functions as the wasm exports them.
import { KontextProxy } from "./runflow_kontext_server.js";

export { RunflowError, parseCallback, receiveCallback, verifyCallbackSignature } from "./runflow_kontext_server.js";

// What toNodeHandler saw on the socket for each Request it made: the method and target exactly
// as sent (the Fetch API upper-cases methods and resolves dot segments, which would hide them
// from the rules), the Host header, and the peer's address for the per-client budgets.
const nodeDetails = new WeakMap();

export function createProxy(options) {
  const proxy = new KontextProxy(options, (request) => nodeDetails.get(request));
  return (request) => proxy.handle(request);
}

// Hop-by-hop headers a Request may not carry on; the proxy forwards none of them anyway.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "expect", "te", "trailer", "proxy-connection", "http2-settings"]);

export function toNodeHandler(handler) {
  return (req, res, next) => {
    serveNode(handler, req, res).catch((error) => {
      if (typeof next === "function") return next(error);
      console.error("runflow-kontext/server: the handler failed", error);
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/json", "cache-control": "no-store" });
        res.end(JSON.stringify({ code: "INTERNAL_ERROR", message: "The proxy failed; see the server's log", errors: null }));
      } else {
        res.destroy();
      }
    });
  };
}

async function serveNode(handler, req, res) {
  const host = req.headers.host;
  // Express's app.use() strips its mount from req.url and keeps the whole target in originalUrl.
  const raw = req.originalUrl ?? req.url;
  const target = typeof raw === "string" ? raw : "/";
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(":") || HOP_BY_HOP.has(name) || value === undefined) continue;
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  // The socket closing before the answer is written aborts the upstream call.
  const closed = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) closed.abort();
  });
  const init = { method: req.method, headers, signal: closed.signal };
  if (req.method !== "GET" && req.method !== "HEAD") {
    const parsed = req.body;
    if (parsed !== undefined && req.readableEnded) {
      // An Express body parser ran first: forward what it read.
      init.body = typeof parsed === "string" || parsed instanceof Uint8Array ? parsed : JSON.stringify(parsed);
    } else {
      init.body = req;
      init.duplex = "half";
    }
  }
  const request = new Request(requestUrl(host, target), init);
  nodeDetails.set(request, { method: req.method, target, host, address: req.socket?.remoteAddress });
  const response = await handler(request);
  await writeResponse(response, res);
}

/** The Request's URL: only a path-absolute target under this host is kept as it is. */
function requestUrl(host, target) {
  if (host && target.startsWith("/") && !target.startsWith("//")) {
    try {
      return new URL(`http://${host}${target}`);
    } catch {
      // An odd Host; the rules see the raw one through nodeDetails.
    }
  }
  return new URL(target.startsWith("/") && !target.startsWith("//") ? target : "/", "http://localhost");
}

async function writeResponse(response, res) {
  const headers = [];
  for (const [name, value] of response.headers) {
    if (name === "set-cookie") continue;
    headers.push(name, value);
  }
  for (const cookie of response.headers.getSetCookie?.() ?? []) headers.push("set-cookie", cookie);
  res.writeHead(response.status, headers);
  if (!response.body) return void res.end();
  for await (const chunk of response.body) {
    if (!res.write(chunk)) await new Promise((resolve) => res.once("drain", resolve));
  }
  res.end();
}
