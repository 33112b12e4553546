// The Node entry's types: the client (as in the browser) and the server half.
export * from "./server/runflow_kontext_server.js";
export { createProxy, toNodeHandler, receiveCallback, parseCallback, verifyCallbackSignature } from "./server/index.js";
export type {
  CallbackEvent, CallbackEventName, NodeHandler, ProxyHandler, ProxyLogEntry, ProxyOptions, RateLimit, ReceiveCallbackOptions,
} from "./server/index.js";
export { default, initSync } from "./server/runflow_kontext_server.js";
