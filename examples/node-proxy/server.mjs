// A node:http server: the Runflow proxy at /api/runflow (the key stays here), and a static page
// that uses the browser client from the installed package. No framework, no bundler.
//
//   RUNFLOW_API_KEY=rf_live_... node server.mjs
//
// Env: RUNFLOW_API_KEY (required), RUNFLOW_UPSTREAM (default https://api.runflow.io), PORT (3000;
// 0 picks a free one), HOST (127.0.0.1), ALLOWED_HOSTS (comma-separated host[:port] the public
// name answers to), TRUST_PROXY=1 (behind nginx: the client's address from X-Forwarded-For).
import http from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { createProxy, toNodeHandler } from "runflow-kontext/server";

const MOUNT = "/api/runflow";
const HERE = dirname(fileURLToPath(import.meta.url));
// The browser build (runflow_kontext.js, its .wasm and snippets/) of the installed package. The
// page maps the bare name "runflow-kontext" to it with an import map.
const PACKAGE = dirname(fileURLToPath(import.meta.resolve("runflow-kontext/package.json")));
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".wasm": "application/wasm", ".png": "image/png" };

const proxy = toNodeHandler(
  createProxy({
    apiKey: process.env.RUNFLOW_API_KEY,
    upstream: process.env.RUNFLOW_UPSTREAM || undefined,
    mountPath: MOUNT,
    allowedHosts: process.env.ALLOWED_HOSTS ? process.env.ALLOWED_HOSTS.split(",") : undefined,
    // Only behind a reverse proxy you control, which sets the header (otherwise a client could pick
    // its own address): the last X-Forwarded-For entry, the one nginx wrote. Without it, the
    // socket's address, which behind nginx is nginx's for every visitor.
    clientIp: process.env.TRUST_PROXY === "1" ? (request) => request.headers.get("x-forwarded-for") : undefined,
    onLog: (entry) => console.log(JSON.stringify(entry)),
  }),
);

// Files under `root`, never above it.
async function serveFile(res, root, relative) {
  const path = normalize(join(root, relative));
  if (path !== root && !path.startsWith(root + sep)) return notFound(res);
  try {
    const body = await readFile(path);
    res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream", "cache-control": "no-cache" });
    res.end(body);
  } catch {
    notFound(res);
  }
}

function notFound(res) {
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
}

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, "http://localhost");
  if (pathname === MOUNT || pathname.startsWith(`${MOUNT}/`)) return proxy(req, res);
  if (req.method !== "GET" && req.method !== "HEAD") return notFound(res);
  if (pathname === "/") return serveFile(res, join(HERE, "public"), "index.html");
  if (pathname === "/sample.png" || pathname === "/app.js") return serveFile(res, join(HERE, "public"), pathname);
  // The browser build only: the glue, its .wasm and its snippet (not server/, which no page needs).
  const vendor = pathname.match(/^\/vendor\/runflow-kontext\/(runflow_kontext\.js|runflow_kontext_bg\.wasm|snippets\/.+\.js)$/);
  if (vendor) return serveFile(res, PACKAGE, vendor[1]);
  notFound(res);
});

server.listen(Number(process.env.PORT ?? 3000), process.env.HOST || "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address.includes(":") ? `[${address}]` : address}:${port}`);
});

// Let open calls finish, then exit.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
