// Compile-time checks of the published types: every line under @ts-expect-error must fail to
// type-check, and `tsc --noEmit` fails if one of them does not.
import { KontextClient, RunflowError, type KontextInput, type ResumableRun, type Run, type RunflowErrorCode, type RunStatus, type WaitMode, type Waiting } from "runflow-kontext";

const client = new KontextClient({ baseUrl: "/api/runflow", timeoutMs: 30_000, maxRetries: 2 });
const ok: KontextInput = { prompt: "p", image_url: "https://x/a.png", aspect_ratio: "16:9", num_images: 4, output_format: "png", safety_tolerance: "6" };
void client.run(ok, { onStatus: (run: Run) => run.status, signal: new AbortController().signal, clientRef: "r" });
const local = new KontextClient({ uploadThreshold: 0, prepareImage: { maxMegapixels: 2, type: "image/webp", quality: 0.8 } });
const fromFile: KontextInput = { prompt: "p", image: new File([], "a.png") };
const fromBytes: KontextInput = { prompt: "p", image_url: new Uint8Array(8) };
void local.run(fromFile, { onUploadProgress: ({ loaded, total }) => loaded / total });
const uploaded: Promise<string> = local.uploadImage(new Blob([]), { signal: new AbortController().signal });
void local.createRun(fromBytes).catch((e: RunflowError) => e.step === "upload_put");
// Backoff options; headers whose values may be undefined (left out, as JSON.stringify does).
const tuned = new KontextClient({ retryBaseMs: 5, retryMaxMs: 50, headers: { "x-trace": undefined } });
void tuned.run({ prompt: "p", image_url: "https://x/a.png", seed: undefined, aspect_ratio: undefined });
// Outputs as Blobs; expiresAt when the URL says.
void client.run(ok).then((run: Run) => run.output?.outputs[0] && client.download(run.output.outputs[0], { signal: new AbortController().signal }).then((blob: Blob) => blob.size + (run.output?.outputs[0]?.expiresAt ?? 0)));
// Many runs, watching, and the run store.
void client.runMany([ok, ok], { concurrency: 2, stopOnError: true }).then((results) => results.map((r) => (r.ok ? r.run.id : r.error.code)));
void (async () => {
  for await (const run of client.watch("run_1")) void run.status;
})();
const store = client.createRunStore();
const unsubscribe: () => void = store.subscribe(() => store.getSnapshot().status);
// Waiting by push, with the way reported.
const way: WaitMode = "events";
void client.waitForRun("run_1", { wait: way, eventsSilenceMs: 5_000, onWaiting: ({ via, reason }: Waiting) => `${via}: ${reason}` });
// Persisted runs, resumed after a reload; a follower tab's way of waiting.
const kept = new KontextClient({ persist: true });
const chosen = new KontextClient({ persist: "localStorage", storage: { getItem: async (key: string) => key, setItem: () => {} } });
void kept.resumeRuns().then((runs: ResumableRun[]) => runs.map((r) => r.wait({ onStatus: (run) => run.status }).then((run) => r.since + run.id.length).finally(() => r.forget())));
const follower: Waiting["via"] = "tab";

// @ts-expect-error: not an aspect ratio
const badRatio: KontextInput = { prompt: "p", image_url: "u", aspect_ratio: "5:4" };
// @ts-expect-error: "jpg" is spelled "jpeg"
const badFormat: KontextInput = { prompt: "p", image_url: "u", output_format: "jpg" };
// @ts-expect-error: safety tolerance stops at 6
const badTolerance: KontextInput = { prompt: "p", image_url: "u", safety_tolerance: "7" };
// @ts-expect-error: at most 4 images
const badCount: KontextInput = { prompt: "p", image_url: "u", num_images: 5 };
// @ts-expect-error: the prompt is required
const noPrompt: KontextInput = { image_url: "u" };
// @ts-expect-error: the image is required
const noImage: KontextInput = { prompt: "p" };
// @ts-expect-error: image and image_url are one field under two names
const twoImages: KontextInput = { prompt: "p", image: "u", image_url: "u" };
// @ts-expect-error: input fields use the API's snake_case names
const camel: KontextInput = { prompt: "p", image_url: "u", aspectRatio: "1:1" };
// @ts-expect-error: the option is baseUrl
new KontextClient({ baseURL: "/api/runflow" });
// @ts-expect-error: retries are a number
new KontextClient({ maxRetries: "3" });
// @ts-expect-error: not a create option
void client.createRun(ok, { callback: "https://x" });
// @ts-expect-error: not an error code
const code: RunflowErrorCode = "network_error";
// @ts-expect-error: statuses are normalised to "canceled"
const status: RunStatus = "cancelled";
// @ts-expect-error: prepareImage re-encodes to JPEG, WebP or PNG only
new KontextClient({ prepareImage: { type: "image/gif" } });
// @ts-expect-error: a threshold is a number of bytes
new KontextClient({ uploadThreshold: "1MB" });
// @ts-expect-error: not an upload step
const step: RunflowError["step"] = "upload";
// @ts-expect-error: a backoff is a number of milliseconds
new KontextClient({ retryBaseMs: "1s" });
// @ts-expect-error: wait is "auto", "poll" or "events"
void client.run(ok, { wait: "push" });
// @ts-expect-error: onWaiting hears "events", "poll" or "tab"
void client.run(ok, { onWaiting: (waiting: { via: "sse" }) => waiting });
// @ts-expect-error: download takes an output or its URL
void client.download(42);
// @ts-expect-error: concurrency is a number
void client.runMany([ok], { concurrency: "4" });
// @ts-expect-error: a store snapshot has no "done" status
const storeStatus: ReturnType<typeof store.getSnapshot>["status"] = "done";
// @ts-expect-error: persist names a store or is a boolean
void new KontextClient({ persist: "cookies" });
// @ts-expect-error: a storage has getItem and setItem
void new KontextClient({ storage: { get: () => null } });
// @ts-expect-error: browsers never receive callbacks: the browser entry has no verifyCallbackSignature
import("runflow-kontext").then((m) => m.verifyCallbackSignature);

export { badRatio, badFormat, badTolerance, badCount, noPrompt, noImage, twoImages, camel, code, status, step, uploaded, unsubscribe, storeStatus, chosen, follower };
