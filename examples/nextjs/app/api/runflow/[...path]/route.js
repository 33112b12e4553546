// The proxy: the browser client's calls (create, get, search by client_ref, uploads, health) go to
// Runflow with the key added; everything else is refused. RUNFLOW_UPSTREAM is for tests (the dev
// server's mock); leave it unset for https://api.runflow.io.
import { createProxy } from "runflow-kontext/server";

// The server entry loads its .wasm with node:fs: the Node runtime, never the Edge one.
export const runtime = "nodejs";

// Made at the first request, not at import: `next build` imports this module to read its config,
// and createProxy refuses a missing key, so a build without the secret (as in CI) would fail.
let proxy;
function handler(request, context) {
  proxy ??= createProxy({ apiKey: process.env.RUNFLOW_API_KEY, upstream: process.env.RUNFLOW_UPSTREAM });
  return proxy(request, context);
}

export { handler as GET, handler as POST };
