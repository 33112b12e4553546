// The Node entry: the server build of the module (the browser's client, plus the server half:
// createProxy, toNodeHandler, receiveCallback, parseCallback, verifyCallbackSignature), which
// ./server/index.js instantiates from the file next to it, so Node users import and go. Calling
// the default export again is harmless (it is already done).
import { KontextClient, RunflowError } from "./server/runflow_kontext_server.js";
import { extend } from "./orchestrate.js";

extend(KontextClient, RunflowError);

export * from "./server/runflow_kontext_server.js";
export { createProxy, toNodeHandler, receiveCallback, parseCallback, verifyCallbackSignature } from "./server/index.js";
export { default, initSync } from "./server/runflow_kontext_server.js";
