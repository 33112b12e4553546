// The Node entry: the same module as the browser's, instantiated from the file next to it, so
// Node users import and go. Calling the default export again is harmless (it is already done).
import { readFile } from "node:fs/promises";
import init from "./runflow_kontext.js";

await init({ module_or_path: await readFile(new URL("./runflow_kontext_bg.wasm", import.meta.url)) });

export * from "./runflow_kontext.js";
export { default, initSync } from "./runflow_kontext.js";
