// The Node entry: the server build of the module (the browser's client, plus what only servers
// need, such as verifyCallbackSignature), instantiated from the file next to it, so Node users
// import and go. Calling the default export again is harmless (it is already done).
import { readFile } from "node:fs/promises";
import init from "./server/runflow_kontext_server.js";

await init({ module_or_path: await readFile(new URL("./server/runflow_kontext_server_bg.wasm", import.meta.url)) });

export * from "./server/runflow_kontext_server.js";
export { default, initSync } from "./server/runflow_kontext_server.js";
