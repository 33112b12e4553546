// The JS side of the wasm edge: the error class, and JSON conversion that keeps the values
// JSON.stringify would silently change (NaN, Infinity) visible to validation.

/**
 * Every failure of the client rejects with a RunflowError. Fields are always present
 * (undefined when they do not apply), so the shape is stable for logging and for editors.
 */
export class RunflowError extends Error {
  constructor(message, props = {}) {
    super(message, props.cause === undefined ? undefined : { cause: props.cause });
    this.name = "RunflowError";
    this.code = props.code;
    this.status = props.status ?? undefined;
    this.runId = props.runId ?? undefined;
    this.requestId = props.requestId ?? undefined;
    this.retryable = props.retryable === true;
    this.field = props.field ?? undefined;
    this.clientRef = props.clientRef ?? undefined;
    this.serverCode = props.serverCode ?? undefined;
    this.retryAfterMs = props.retryAfterMs ?? undefined;
    this.run = props.run ?? undefined;
  }
}

/** JSON text of a value, or undefined when it has none (a BigInt, a cycle). */
export function toJson(value) {
  try {
    return JSON.stringify(value, (_key, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
  } catch {
    return undefined;
  }
}
