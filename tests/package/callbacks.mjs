// The callback routes of the server examples (Next.js, Workers), held to one set of answers.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

/**
 * Posts to `endpoint` a completed-run callback for `run` (a mock run) signed with `secret` → 200
 * `{ok: true}`, the same body changed by one byte → 401, another secret's signature → 401, and a
 * signed body that is not a callback → 400; every post carries `requestId`.
 */
export async function assertCallbackRoute(endpoint, run, secret, requestId) {
  const body = JSON.stringify({
    event: "run.completed", run_id: run.id, status: "succeeded", output: run.output, duration_ms: 250,
    created_at: "2026-01-02T03:04:05.000000+00:00", completed_at: "2026-01-02T03:04:05.250000+00:00", metadata: { order: 7 },
  });
  const sign = (raw, key = secret) => createHmac("sha256", key).update(raw).digest("hex");
  const deliver = (raw, signature) => fetch(endpoint, {
    method: "POST",
    headers: { "content-type": "application/json", "runflow-signature": signature, "runflow-request-id": requestId },
    body: raw,
  });
  const good = await deliver(body, sign(body));
  assert.equal(good.status, 200, await good.clone().text());
  assert.deepEqual(await good.json(), { ok: true });
  assert.equal((await deliver(body.replace('"order":7', '"order":8'), sign(body))).status, 401);
  assert.equal((await deliver(body, sign(body, "whsec_someone_else"))).status, 401);
  const notCallback = JSON.stringify({ hello: "world" });
  assert.equal((await deliver(notCallback, sign(notCallback))).status, 400);
}
