// runflow-kontext/server: the server half every deployment needs. A proxy handler that keeps the
// Runflow key on the server and forwards only the calls the browser client makes (the same Rust
// rules as the dev server's proxy), and the receiver of Runflow's callbacks.
import type { RunOutput, RunStatus } from "./runflow_kontext_server.js";

export type { Run, RunOutput, RunStatus, RunflowErrorCode } from "./runflow_kontext_server.js";
export { RunflowError } from "./runflow_kontext_server.js";

/** A token bucket per client: `perSecond` sustained, `burst` at once after a pause. */
export interface RateLimit {
  perSecond: number;
  burst: number;
}

/** One line per call through the proxy, for your logs. It never holds the key or a body. */
export interface ProxyLogEntry {
  /** The HTTP method as received. */
  method: string;
  /** The path under the mount, e.g. "/v1/runs/abc". */
  path: string;
  /** The status answered. */
  status: number;
  /** "forwarded" (Runflow answered), "refused" (the proxy said no) or "failed" (Runflow could not be reached). */
  outcome: "forwarded" | "refused" | "failed";
  /** Why, for "refused" and "failed": a code such as "path_not_allowed" or a short reason. */
  reason: string | null;
  /** The run concerned: the path's, or a create's new run. */
  runId: string | null;
  /** The client's address as `clientIp` gave it, or null. */
  client: string | null;
  /** Time from the request to the answer's headers, in ms. */
  durationMs: number;
}

/** Options of {@link createProxy}. */
export interface ProxyOptions {
  /**
   * The Runflow API key; it goes into the upstream Authorization header and nowhere else. When it
   * is missing or empty (a build, such as `next build`, that imports the route without the
   * server's secrets), the proxy is still created, answers every call 500 `PROXY_NOT_CONFIGURED`
   * and says so once on the console.
   */
  apiKey: string | undefined;
  /** Where calls go (default "https://api.runflow.io"). A path prefix is kept. */
  upstream?: string;
  /** The path the handler is mounted at (default "/api/runflow"): the part of the URL before "/v1/...". */
  mountPath?: string;
  /**
   * The models whose runs may be created (default: FLUX.1 Kontext [pro] only). `"*"` allows every
   * model, and the key's owner pays for whatever a visitor runs.
   */
  allowedModels?: readonly string[] | "*";
  /** Largest request body forwarded, in bytes (default 1,572,864: a 1 MiB image inline); above it, 413. */
  maxBodyBytes?: number;
  /**
   * The `host[:port]` values this proxy answers for (e.g. `["studio.example.com"]`), against DNS
   * rebinding. Whatever the list, a request with an `Origin` must come from its own `Host`.
   * Default: any host.
   */
  allowedHosts?: readonly string[];
  /**
   * Whether a request with an `Origin` must come from its own host (default true). Turn it off only
   * for a proxy called by other servers, behind `authenticate`.
   */
  sameOrigin?: boolean;
  /**
   * The client's address, for the per-client budgets. Behind Vercel or nginx, the header your
   * platform sets (e.g. `(r) => r.headers.get("x-forwarded-for")`, whose last entry is used).
   * Default: the socket's address through {@link toNodeHandler}; otherwise unknown, and then every
   * visitor shares one budget (safe for your credit, strict for your users: set this).
   */
  clientIp?: (request: Request) => string | null | undefined;
  /** Every call, polling included, per client (default 10/s with bursts of 40); `false` for none. */
  rateLimit?: RateLimit | false;
  /** Creates (the calls that spend credit) per client per minute (default 5); `false` or 0 for no budget. */
  createsPerMinute?: number | false;
  /** Creates a client may make at once after a pause (default 10). */
  createBurst?: number;
  /** Largest `input.num_images` a create may ask for, 1 to 4 (default 4). */
  maxImagesPerRun?: number;
  /**
   * Your own check, run before anything is forwarded (e.g. a session cookie): `true` lets the call
   * through, anything else answers 401. A `Response` is answered as it is. Read headers and
   * cookies only, not the body: the proxy forwards it.
   */
  authenticate?: (request: Request) => boolean | Response | Promise<boolean | Response>;
  /** Called once per call with what happened; what it throws is ignored. */
  onLog?: (entry: ProxyLogEntry) => void;
  /** Longest one upstream call may take, in ms (default 60,000); past it, 504. */
  timeoutMs?: number;
  /** Sent upstream as `X-Organization-Id` when set. */
  organizationId?: string;
}

/** A Fetch API handler: Next.js App Router route handlers, Workers, Deno, Bun and Hono take it as is. */
export type ProxyHandler = (request: Request, context?: unknown) => Promise<Response>;

/**
 * The proxy: forwards the browser client's calls to Runflow with the key added, refuses everything
 * else, and answers in the API's own error shapes so the client handles refusals like Runflow's.
 *
 * ```js
 * // app/api/runflow/[...path]/route.js
 * import { createProxy } from "runflow-kontext/server";
 * const proxy = createProxy({ apiKey: process.env.RUNFLOW_API_KEY });
 * export { proxy as GET, proxy as POST };
 * ```
 * @throws {RunflowError} `validation_error` (with `field`) on an unknown or mistyped option.
 */
export function createProxy(options: ProxyOptions): ProxyHandler;

/** A `(req, res)` listener for node:http, Express, Fastify's raw server or Connect. */
export type NodeHandler = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse, next?: (error?: unknown) => void) => void;

/**
 * Wraps a Fetch API handler for node:http and Express. Mount it before any body parser (it reads
 * the raw body); a body an Express parser already read is forwarded as parsed.
 */
export function toNodeHandler(handler: ProxyHandler): NodeHandler;

/** The callback's `event`. */
export type CallbackEventName = "run.completed" | "run.failed" | "run.cancelled" | "run.partial_succeeded";

/** A callback from Runflow, normalised like a {@link Run}. */
export interface CallbackEvent {
  /** The event as sent; an unknown one is kept as it is. */
  event: CallbackEventName | (string & {});
  runId: string;
  /** The normalised status. */
  status: RunStatus;
  /** The status as the server spelled it. */
  statusCode: string;
  /** The result, in the same shape as `Run.output`. */
  output: RunOutput | null;
  durationMs: number | null;
  createdAt: string | null;
  completedAt: string | null;
  metadata: Record<string, unknown> | null;
  /** The `Runflow-Request-Id` header, when there was one. */
  requestId: string | null;
}

/** Options of {@link receiveCallback}. */
export interface ReceiveCallbackOptions {
  /** The signing secrets (`whsec_...`); two during a rotation. A delivery signed by any of them is accepted. */
  secrets: readonly string[];
}

/**
 * Reads a callback delivery: the raw body, its `Runflow-Signature` checked against the secrets in
 * constant time, the payload parsed and normalised. Answer 2xx quickly after it resolves; handle
 * deliveries idempotently on (`runId`, `event`), since a redelivery has new bytes.
 * @throws {RunflowError} `invalid_signature` (answer 401), `invalid_response` for a body that is not a callback (answer 400).
 */
export function receiveCallback(request: Request, options: ReceiveCallbackOptions): Promise<CallbackEvent>;

/**
 * Parses a callback's raw body (already verified, or for tests).
 * @throws {RunflowError} `invalid_response` when it is not a callback payload.
 */
export function parseCallback(rawBody: string | Uint8Array | ArrayBuffer, requestId?: string | null): CallbackEvent;

/**
 * Checks a callback's `Runflow-Signature` header: HMAC-SHA256 of the raw body under any of the
 * secrets (two during rotation), compared in constant time. Pass the body exactly as received.
 */
export function verifyCallbackSignature(rawBody: string | Uint8Array | ArrayBuffer, signatureHeader: string | null | undefined, secretOrSecrets: string | readonly string[]): boolean;
