// The proxy: the browser client's calls (create, get, search by client_ref, uploads, health) go to
// Runflow with the key added; everything else is refused. RUNFLOW_UPSTREAM is for tests (the dev
// server's mock); leave it unset for https://api.runflow.io.
import { createProxy } from "runflow-kontext/server";

// The server entry loads its .wasm with node:fs: the Node runtime, never the Edge one.
export const runtime = "nodejs";

// `next build` imports this module without the server's secrets: a proxy made without a key
// builds fine and answers 500 PROXY_NOT_CONFIGURED until the key is set.
const proxy = createProxy({
  apiKey: process.env.RUNFLOW_API_KEY,
  upstream: process.env.RUNFLOW_UPSTREAM,
  // Vercel (and most hosts) append the visitor's address to X-Forwarded-For.
  clientIp: (request) => request.headers.get("x-forwarded-for"),
});

export { proxy as GET, proxy as POST };
