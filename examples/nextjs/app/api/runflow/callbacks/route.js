// Runflow's callbacks (createRun(input, { callbackUrl: "https://<your host>/api/runflow/callbacks" })).
// A static segment wins over [...path], so these never reach the proxy.
import { receiveCallback } from "runflow-kontext/server";

export const runtime = "nodejs";

export async function POST(request) {
  try {
    const event = await receiveCallback(request, { secrets: (process.env.RUNFLOW_CALLBACK_SECRETS ?? "").split(",") });
    // Handle it idempotently on (runId, event): a redelivery has new bytes and a new signature.
    console.log("runflow callback", JSON.stringify({ event: event.event, runId: event.runId, status: event.status, requestId: event.requestId }));
    return Response.json({ ok: true });
  } catch (error) {
    if (error?.code === "invalid_signature") return Response.json({ error: "invalid signature" }, { status: 401 });
    if (error?.code === "invalid_response") return Response.json({ error: "not a callback" }, { status: 400 });
    throw error;
  }
}
