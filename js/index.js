// The browser entry: the wasm client (wasm-bindgen's glue) as `KontextClient`, with waits shared
// across tabs and `persist` (js/durable.js), and runMany, watch and createRunStore
// (js/orchestrate.js).
import { KontextClient as WasmClient, RunflowError, persistUploads } from "./runflow_kontext.js";
import { durable } from "./durable.js";
import { extend } from "./orchestrate.js";

export const KontextClient = durable(WasmClient, RunflowError, persistUploads);
extend(KontextClient, RunflowError);

export { RunflowError, initSync, default } from "./runflow_kontext.js";
