/** Aspect ratios FLUX.1 Kontext accepts: ratio strings, or the older preset names. */
export type AspectRatio =
  | "21:9" | "16:9" | "4:3" | "3:2" | "1:1" | "2:3" | "3:4" | "9:16" | "9:21"
  | "square_hd" | "square" | "portrait_4_3" | "portrait_16_9" | "landscape_4_3" | "landscape_16_9";

/** Output image encodings. */
export type OutputFormat = "jpeg" | "png";

/** Moderation strictness, "1" (strictest) to "6". Numbers are accepted and sent as strings. */
export type SafetyTolerance = "1" | "2" | "3" | "4" | "5" | "6" | 1 | 2 | 3 | 4 | 5 | 6;

/** The fields of FLUX.1 Kontext [pro] besides the image, with the API's own (snake_case) names. */
export interface KontextOptions {
  /** The edit to make, e.g. "make the sky stormy". Required, non-empty. */
  prompt: string;
  /** The output's aspect ratio; the input's when absent. */
  aspect_ratio?: AspectRatio;
  /** How many images to make, 1 to 4 (default 1). $0.04 each. */
  num_images?: 1 | 2 | 3 | 4;
  /** How closely to follow the prompt, 1 to 20 (default 3.5). */
  guidance_scale?: number;
  /** "jpeg" (default) or "png". */
  output_format?: OutputFormat;
  /** Moderation strictness, "1" (strictest) to "6" (default "2"). */
  safety_tolerance?: SafetyTolerance;
  /** Let the model rewrite the prompt first (default false). */
  enhance_prompt?: boolean;
  /** A seed for repeatable results, an integer from 0 to 2^53 - 1; random when absent. */
  seed?: number;
  /** Return images as `data:` URIs, not stored in Runflow's history. */
  sync_mode?: boolean;
}

/**
 * A picture on this device: a File (from a file input, drop or paste), a Blob, or its bytes.
 * The client checks its real type by its first bytes (JPEG, PNG, WebP, GIF or AVIF; at most
 * 50 MiB), then sends it inline as a `data:` URI when under `uploadThreshold`, else through
 * Runflow's asset upload.
 */
export type LocalImage = Blob | ArrayBuffer | ArrayBufferView;

/**
 * The input of FLUX.1 Kontext [pro]: the prompt and options, and the image to edit as
 * `image_url` (or its other name `image`, not both): an https URL, a
 * `data:image/...;base64,` URI (uploaded instead when it holds `uploadThreshold` bytes or more),
 * or a {@link LocalImage}.
 */
export type KontextInput = KontextOptions &
  ({ image_url: string | LocalImage; image?: undefined } | { image: string | LocalImage; image_url?: undefined });

/** How `prepareImage` shrinks big pictures before sending them. */
export interface PrepareImageOptions {
  /** Pictures above this many megapixels are downscaled to it (default 4). */
  maxMegapixels?: number;
  /** The format they are re-encoded to (default "image/jpeg"). */
  type?: "image/jpeg" | "image/webp" | "image/png";
  /** The encoder's quality, 0 to 1 (default 0.9). */
  quality?: number;
}

/** Progress of turning a local image into an `image_url`: bytes sent so far, of `total`. */
export interface UploadProgress {
  loaded: number;
  total: number;
}

/** Options of `new KontextClient(...)`. */
export interface KontextClientOptions {
  /** The API root. Default "https://api.runflow.io"; in a browser, your proxy, e.g. "/api/runflow". */
  baseUrl?: string;
  /** A Runflow key (`rf_live_...`). Refused in a browser unless `dangerouslyAllowBrowser`: use a proxy there. */
  apiKey?: string;
  /** Allow `apiKey` in a browser, where anyone can read it. Only for local experiments. */
  dangerouslyAllowBrowser?: boolean;
  /** The model id. Default "black-forest-labs/flux-pro/kontext"; other models take untyped input. */
  model?: string;
  /** The longest one request may take, in ms (default 60000). */
  timeoutMs?: number;
  /** Retries of a failed request after the first attempt, 0 to 10 (default 4: Runflow's five attempts). */
  maxRetries?: number;
  /** The first backoff ceiling in ms (default 1000); it doubles each retry, with full jitter. */
  retryBaseMs?: number;
  /** The largest backoff ceiling in ms (default 32000). */
  retryMaxMs?: number;
  /** The first polling interval in ms (default 500); it grows to 0.8 s for the first 30 s of a run, then to 5 s. */
  pollIntervalMs?: number;
  /**
   * Extra headers sent with every request (undefined values are left out). An Authorization
   * header is a key: refused in a browser like `apiKey`, and redacted from errors.
   */
  headers?: Record<string, string | undefined>;
  /**
   * A fetch to use for API calls instead of the global one (same signature). Not used for the PUT
   * to a presigned storage URL, which goes by XMLHttpRequest (for progress) or the global fetch.
   */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** Local images under this many bytes go inline as `data:` URIs; larger ones are uploaded (default 1048576, 1 MiB; 0 uploads all). */
  uploadThreshold?: number;
  /**
   * Downscale local images above a megapixel limit and re-encode them, upright by their EXIF
   * orientation, and convert formats Runflow does not read (BMP, HEIC where the browser decodes
   * it), before sending (default off; `true` for the defaults). Needs
   * `createImageBitmap` and `OffscreenCanvas`: where they are missing (Node), images go as they are.
   */
  prepareImage?: boolean | PrepareImageOptions;
  /**
   * Keep the runs this client creates or waits on, until their result is delivered, and its
   * uploads, so that a reload loses neither: see {@link KontextClient.resumeRuns}. `true`:
   * IndexedDB, else localStorage (`"indexedDB"` or `"localStorage"` to choose). Default off.
   */
  persist?: boolean | "indexedDB" | "localStorage";
  /** Persist in this Web Storage instead (localStorage, sessionStorage, or any getItem/setItem object, sync or async). */
  storage?: PersistStorage;
}

/** A store for `persist`: the Web Storage API's getItem and setItem (sync, or returning promises). */
export interface PersistStorage {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
}

/** A run kept by `persist` whose result was not delivered before the page went away. */
export interface ResumableRun {
  /** The run's id. */
  id: string;
  /** When this client started following it (ms since the epoch). */
  since: number;
  /** `waitForRun(id, options)`: follows it to its end, by one poller across tabs. */
  wait(options?: WaitForRunOptions): Promise<Run>;
  /** Drops the record without waiting (a run the user gave up on): it is not resumed again. */
  forget(): Promise<void>;
}

/** Options of `createRun`. */
export interface CreateRunOptions {
  /** A URL Runflow POSTs to once the run ends (check it with `verifyCallbackSignature`). */
  callbackUrl?: string;
  /** Your own key-values, echoed in the run and the callback. */
  metadata?: Record<string, unknown>;
  /**
   * Your correlation id (1 to 255 characters, without `"` or `\`); generated when absent. It
   * must be unique to one logical create: when a create's outcome is unknown, the client looks
   * the run up by it (and accepts only a run with this input, created after the call began).
   */
  clientRef?: string;
  /** The Idempotency-Key for this create; generated when absent and reused on every retry. */
  idempotencyKey?: string;
  /** Stops the call: the promise rejects with `aborted`. */
  signal?: AbortSignal;
  /** An overall deadline for the call, in ms. */
  timeoutMs?: number;
  /**
   * Progress of a local image's upload: called as bytes are sent (from 0 again if a PUT is
   * retried), and once with `loaded === total` when the image is ready (confirmed, or encoded
   * inline).
   */
  onUploadProgress?: (progress: UploadProgress) => void;
}

/** Options of `uploadImage`. */
export interface UploadImageOptions {
  /** Stops the upload: the promise rejects with `aborted`. */
  signal?: AbortSignal;
  /** An overall deadline, in ms. */
  timeoutMs?: number;
  /** See {@link CreateRunOptions.onUploadProgress}. */
  onUploadProgress?: (progress: UploadProgress) => void;
}

/** Options of `waitForRun`. */
export interface WaitForRunOptions {
  /** Stops waiting: the promise rejects with `aborted` (the run itself goes on). */
  signal?: AbortSignal;
  /** The overall deadline, in ms (default 600000): then the promise rejects with `timeout`. */
  timeoutMs?: number;
  /** Called with the run each time its status changes, the first status included. */
  onStatus?: (run: Run) => void;
  /** The first polling interval in ms, for this call. */
  pollIntervalMs?: number;
  /**
   * How to wait (default `"auto"`). `"auto"`: by push through the server's callback relay
   * (Server-Sent Events on the run's stream; the run is checked once by GET when the stream
   * opens and after every reconnect) when the server advertises one (the
   * `Runflow-Kontext-Relay` header, as the dev server sends) and the run's `callback_url` is the
   * relay's receiver; by polling otherwise, and from the moment the stream is refused, a
   * reconnect fails, or no event comes for `eventsSilenceMs`. `"events"` asks for push: today
   * it behaves as `"auto"`, since a server without a relay can only be polled. `"poll"`:
   * polling only. Push needs `EventSource` (browsers; not Node 20) and a same-origin or
   * CORS-enabled relay; the client's `headers` are not sent on the stream; at most 4 runs per
   * origin wait by push at once (each stream holds one of the browser's 6 HTTP/1.1
   * connections), the others are polled.
   */
  wait?: WaitMode;
  /** With no event for this long (ms, default 60000), push gives way to polling. */
  eventsSilenceMs?: number;
  /** Told how the call waits when it starts waiting, and again if it falls back to polling. */
  onWaiting?: (waiting: Waiting) => void;
}

/** How `waitForRun` and `run` follow a run: see {@link WaitForRunOptions.wait}. */
export type WaitMode = "auto" | "poll" | "events";

/** What `onWaiting` hears. */
export interface Waiting {
  /**
   * `"events"`: by the relay's push; `"poll"`: by polling; `"tab"`: another tab of this origin
   * follows the run and passes its news on (this call takes over if that tab closes).
   */
  via: "events" | "poll" | "tab";
  /** Why, in words for a log or a status line. */
  reason: string;
}

/**
 * Options of `run`: those of `createRun` and of `waitForRun`; `timeoutMs` covers both steps.
 * Unless `wait` is `"poll"`, a run without `callbackUrl` gets the receiver of the relay the
 * server advertised (once it has seen one), so its result can be pushed.
 */
export interface RunOptions extends CreateRunOptions, WaitForRunOptions {}

/** Options of `getRun`. */
export interface GetRunOptions {
  /** Stops the call: the promise rejects with `aborted`. */
  signal?: AbortSignal;
  /** An overall deadline for the call, in ms. */
  timeoutMs?: number;
}

/** One output image. */
export interface OutputImage {
  type: "image";
  /** A presigned URL (expires in about 24 h), or a `data:` URI with `sync_mode`. */
  url: string;
  width?: number;
  height?: number;
  /** e.g. "image/jpeg"; inferred from the URL when the server did not say. */
  content_type?: string;
  /**
   * When the URL stops working, in ms since the epoch, when the URL says (S3's `X-Amz-Date` +
   * `X-Amz-Expires`, GCS's `X-Goog-Date` + `X-Goog-Expires`, or an absolute `Expires`).
   */
  expiresAt?: number;
}

/** Options of `runMany`: `run()`'s (without `signal` per run), and the batch's own. */
export interface RunManyOptions extends Omit<RunOptions, "clientRef" | "idempotencyKey"> {
  /** Runs in flight at once (default 4). */
  concurrency?: number;
  /** Called as each input settles, in the order they settle. */
  onProgress?: (progress: { index: number; result: RunManyResult; done: number; failed: number; total: number }) => void;
  /** Stop the rest at the first failure (default false: every input gets its own result). */
  stopOnError?: boolean;
}

/** One input's outcome in `runMany`. */
export type RunManyResult = { ok: true; run: Run } | { ok: false; error: RunflowError };

/** What a {@link RunStore} holds, replaced (never mutated) on each change. */
export interface RunStoreSnapshot {
  /**
   * "idle", "starting", "uploading" (a local image going up), then the run's status; at the
   * end the run's terminal status, "stopped" (`cancel()`) or "error".
   */
  status: "idle" | "starting" | "uploading" | RunStatus | "stopped" | "error";
  /** The run as last seen. */
  run: Run | undefined;
  /** Why it ended without a result. */
  error: RunflowError | undefined;
  /** The local image's upload progress. */
  upload: UploadProgress | undefined;
}

/**
 * One edit's state: `start` runs an edit (replacing one under way), `cancel` stops waiting,
 * `reset` goes back to idle. `subscribe` + `getSnapshot` fit React's `useSyncExternalStore`,
 * Vue's `shallowRef` and Svelte's store contract.
 */
export interface RunStore<Input extends object = KontextInput> {
  start(input: Input, options?: RunOptions): Promise<Run>;
  cancel(): void;
  reset(): void;
  /** Calls `listener` after each change; returns the unsubscribe. */
  subscribe(listener: () => void): () => void;
  getSnapshot(): RunStoreSnapshot;
}

/** Options of `download`. */
export interface DownloadOptions {
  /** Stops the download: the promise rejects with `aborted`. */
  signal?: AbortSignal;
  /**
   * An overall deadline, in ms. Each attempt may take all of it; without one, an attempt takes
   * at most the client's `timeoutMs` (60 s), as an API request does.
   */
  timeoutMs?: number;
}

/** A run's result, the same shape whatever the server sent. */
export interface RunOutput {
  outputs: OutputImage[];
  /** The seed used. */
  seed: number | null;
  /** Model-specific extras (prompt, actual_prompt, ...). */
  model_data: Record<string, unknown> | null;
  /** true/false, or null when not checked. */
  nsfw_detected: boolean | null;
  /** Provider timing (inference_ms, ...), when sent. */
  timing: Record<string, unknown> | null;
}

/** Why a run failed. */
export interface RunFailure {
  code: string | null;
  stage: string | null;
  message: string | null;
}

/** A run, normalised over every variant the API sends. */
export interface Run {
  id: string;
  /** The normalised status. */
  status: RunStatus;
  /** The status as the server spelled it. */
  status_code: string;
  model: string | null;
  input: Record<string, unknown> | null;
  output: RunOutput | null;
  failure: RunFailure | null;
  metadata: Record<string, unknown> | null;
  client_ref: string | null;
  callback_url: string | null;
  created_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  duration_ms: number | null;
  /** A decimal string, e.g. "0.04". */
  cost: string | null;
}

/** Every failure of the client. */
export class RunflowError extends Error {
  name: "RunflowError";
  /** What went wrong, as a stable code. */
  code: RunflowErrorCode;
  /** The HTTP status, when a response was received. */
  status: number | undefined;
  /** The run concerned, whenever one exists. */
  runId: string | undefined;
  /** The server's request id, when visible. */
  requestId: string | undefined;
  /** Whether the same call may succeed later. */
  retryable: boolean;
  /** The input field or option at fault, for `validation_error`. */
  field: string | undefined;
  /** Set when a create's outcome is unknown: look the run up by this before creating again. */
  clientRef: string | undefined;
  /** The server's own code, e.g. "INSUFFICIENT_CREDIT". */
  serverCode: string | undefined;
  /** The delay the server asked for, in ms. */
  retryAfterMs: number | undefined;
  /** The terminal run, for `run_failed`. */
  run: Run | undefined;
  /**
   * Which step of a local image's upload failed: creating the upload slot, the PUT to the
   * presigned storage URL, or the confirmation. Undefined for everything else.
   */
  step: "upload_create" | "upload_put" | "upload_confirm" | undefined;
  private constructor();
}

/**
 * The client for FLUX.1 Kontext [pro] on Runflow.
 *
 * ```js
 * const client = new KontextClient({ baseUrl: "/api/runflow" });
 * const run = await client.run({ prompt: "make it snow", image_url }, { onStatus: (r) => console.log(r.status) });
 * console.log(run.output.outputs[0].url);
 * ```
 *
 * For another Runflow model, pass its id as `model` and its input type as `Input`:
 * `new KontextClient<MyInput>({ model: "acme/upscaler" })`.
 */
export class KontextClient<Input extends object = KontextInput> {
  free(): void;
  /** @throws {RunflowError} `validation_error` on a bad option, `browser_key_refused` for a key in a browser. */
  constructor(options?: KontextClientOptions);
  /** Creates a run and resolves with it as soon as Runflow accepted it (status "queued"). */
  createRun(input: Input, options?: CreateRunOptions): Promise<Run>;
  /** Fetches a run by id. */
  getRun(id: string, options?: GetRunOptions): Promise<Run>;
  /**
   * Polls a run until it succeeds, fails or is canceled, and resolves with that run whatever its
   * status: check `run.status` (unlike `run()`, which rejects with `run_failed`). In a browser,
   * tabs of one origin waiting on the same run share one poller (Web Locks and a
   * BroadcastChannel; the package's entry, not the bare glue): one tab follows it and the others
   * hear each status and the result, and one of them takes over if that tab closes.
   */
  waitForRun(id: string, options?: WaitForRunOptions): Promise<Run>;
  /**
   * With `persist` (or `storage`): the runs created or waited on here, before a reload too,
   * whose result was not delivered yet (nor over 24 h old), oldest first, each with
   * `wait(options)`. Rejects with `validation_error` on a client without `persist`, and with
   * the store's own error where it cannot be read (an IndexedDB that did not open in 2 s).
   */
  resumeRuns(): Promise<ResumableRun[]>;
  /** Creates a run and waits for it; rejects with `run_failed` if it fails or is canceled. */
  run(input: Input, options?: RunOptions): Promise<Run>;
  /**
   * Uploads a local image (or a base64 `data:` URI, checked like one) to Runflow and resolves the
   * signed URL of the asset, to pass as `image_url`: upload once, edit many times. Always an
   * upload, whatever its size: a proxy with a small body cap (Runflow's own takes 32 KiB) would
   * refuse creates carrying it inline.
   */
  uploadImage(image: LocalImage | string, options?: UploadImageOptions): Promise<string>;
  /**
   * Fetches an output image (an entry of `run.output.outputs`, or its URL) as a Blob, by the
   * global fetch and without the client's headers (the URL is presigned). Rejects with
   * `output_expired` when the storage refuses the link (403; or 400, as GCS answers, once
   * `expiresAt` has passed). The storage decides, not this device's clock: a link the clock says
   * has expired is still asked for once, so a fast clock loses no result.
   */
  download(output: OutputImage | string, options?: DownloadOptions): Promise<Blob>;
  /**
   * `run()` for each input, at most `concurrency` (default 4) at a time. Resolves, in input
   * order, `{ ok: true, run }` or `{ ok: false, error }` per input: one failure stops the rest
   * only with `stopOnError` (they then reject with `aborted`). After a 429 every run of this
   * client waits out the same backoff, so a batch queues instead of hammering. Not in the
   * wasm-bindgen glue itself: import the package (its entry puts it on the class).
   */
  runMany(inputs: Iterable<Input>, options?: RunManyOptions): Promise<RunManyResult[]>;
  /**
   * Every status change of run `id`, the first included, ending after the terminal one:
   * `for await (const run of client.watch(id, { signal })) ...`. It throws what `waitForRun`
   * would reject with; leaving the loop early stops the waiting.
   */
  watch(id: string, options?: WaitForRunOptions): AsyncGenerator<Run, void, undefined>;
  /** A framework-free store of one edit, for a UI: see {@link RunStore}. */
  createRunStore(): RunStore<Input>;
  /** The model this client creates runs for. */
  readonly model: string;
  /** The API root requests go to. */
  readonly baseUrl: string;
}
