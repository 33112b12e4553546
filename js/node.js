// The Node entry: the server build of the module (the browser's client, plus the server half:
// createProxy, toNodeHandler, receiveCallback, parseCallback, verifyCallbackSignature), which
// ./server/index.js instantiates from the file next to it, so Node users import and go. Calling
// the default export again is harmless (it is already done).
import { KontextClient as WasmClient, RunflowError, persistUploads } from "./server/runflow_kontext_server.js";
import { durable } from "./durable.js";
import { extend } from "./orchestrate.js";

// `persist` here needs a `storage` (Node has neither IndexedDB nor, before 22, localStorage). Waits
// are not shared, even where Node has Web Locks: a server's calls are not tabs, and may be made
// for different users.
export const KontextClient = durable(WasmClient, RunflowError, persistUploads, { share: false });
extend(KontextClient, RunflowError);

export { RunflowError };
export { createProxy, toNodeHandler, receiveCallback, parseCallback, verifyCallbackSignature } from "./server/index.js";
export { default, initSync } from "./server/runflow_kontext_server.js";
