// The browser entry: the wasm client (wasm-bindgen's glue), with runMany, watch and
// createRunStore on KontextClient (js/orchestrate.js).
import { KontextClient, RunflowError } from "./runflow_kontext.js";
import { extend } from "./orchestrate.js";

extend(KontextClient, RunflowError);

export * from "./runflow_kontext.js";
export { default } from "./runflow_kontext.js";
