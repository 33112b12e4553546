// runflow-kontext/server for Cloudflare Workers (the `workerd` export condition): Workers cannot
// compile wasm from bytes at run time, so the module is imported, which wrangler bundles.
import module from "./runflow_kontext_server_bg.wasm";
import { initSync } from "./runflow_kontext_server.js";

initSync({ module });

export * from "./handlers.js";
