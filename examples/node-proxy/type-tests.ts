// Type tests of runflow-kontext/server and the Node entry, checked by `tsc --noEmit` in make test:
// each line marked with ts-expect-error must fail to compile (tsc reports one that does not).
import http from "node:http";
import {
  createProxy, parseCallback, receiveCallback, toNodeHandler, verifyCallbackSignature, RunflowError,
  type CallbackEvent, type ProxyHandler, type ProxyLogEntry, type ProxyOptions,
} from "runflow-kontext/server";
// The Node entry: the browser client and the server half from one import.
import { KontextClient, createProxy as fromNodeEntry } from "runflow-kontext";

const proxy: ProxyHandler = createProxy({
  apiKey: process.env.RUNFLOW_API_KEY,
  allowedModels: ["black-forest-labs/flux-pro/kontext"],
  allowedHosts: ["kontext.example.com"],
  rateLimit: { perSecond: 10, burst: 40 },
  createsPerMinute: 5,
  createBurst: 10,
  maxImagesPerRun: 2,
  clientIp: (request) => request.headers.get("x-forwarded-for"),
  authenticate: async (request) => request.headers.has("cookie"),
  onLog: (entry: ProxyLogEntry) => console.log(entry.outcome satisfies "forwarded" | "refused" | "failed", entry.runId),
});
http.createServer(toNodeHandler(proxy));
const answer: Promise<Response> = proxy(new Request("http://localhost/api/runflow/v1/health"));
createProxy({ apiKey: "k", rateLimit: false, createsPerMinute: false, allowedModels: "*", sameOrigin: false });
createProxy({ apiKey: "k", authenticate: () => new Response(null, { status: 302 }) });
fromNodeEntry({ apiKey: "k" });
new KontextClient({ baseUrl: "http://127.0.0.1:3000/api/runflow" });

// @ts-expect-error apiKey is required (it may be undefined, for builds without the secret)
createProxy({});
// @ts-expect-error a rate limit needs its burst
createProxy({ apiKey: "k", rateLimit: { perSecond: 1 } });
// @ts-expect-error every model is "*", nothing else
createProxy({ apiKey: "k", allowedModels: "all" });
// @ts-expect-error authenticate answers true, false or a Response
createProxy({ apiKey: "k", authenticate: () => "yes" });
// @ts-expect-error no such option
createProxy({ apiKey: "k", apikey: "k" });

async function callback(request: Request): Promise<Response> {
  try {
    const event: CallbackEvent = await receiveCallback(request, { secrets: ["whsec_a", "whsec_b"] });
    const status: "succeeded" | "partial_succeeded" | "failed" | "canceled" | string = event.status;
    const url: string | undefined = event.output?.outputs[0]?.url;
    console.log(event.event, event.runId, event.requestId, status, url);
    // @ts-expect-error the event uses the JS API's camelCase names
    console.log(event.run_id);
    return Response.json({ ok: true });
  } catch (error) {
    if (error instanceof RunflowError && error.code === "invalid_signature") return new Response(null, { status: 401 });
    throw error;
  }
}
// @ts-expect-error the secrets are required
receiveCallback(new Request("http://localhost/"), {});
const parsed: CallbackEvent = parseCallback("{}", null);
const checked: boolean = verifyCallbackSignature(new Uint8Array(), "ab", ["whsec_a"]);
const options: ProxyOptions = { apiKey: undefined };
console.log(answer, callback, parsed, checked, options);
