// runflow-kontext/server for Node, Deno and Bun: the server build instantiated from the file next
// to it (node:fs, which all three have), then the handlers. Workers get ./workerd.js instead.
import { readFile } from "node:fs/promises";
import init from "./runflow_kontext_server.js";

await init({ module_or_path: await readFile(new URL("./runflow_kontext_server_bg.wasm", import.meta.url)) });

export * from "./handlers.js";
