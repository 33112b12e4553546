// The Runflow-Signature vectors every verifier is held to (in Chromium by tests/e2e, in Node
// through the packed package by tests/package): `[body, header, secrets, valid, what]`.
import { createHmac } from "node:crypto";

export const SECRET = "whsec_vectors_new";
const OLD = "whsec_vectors_old";

/** Lowercase hex HMAC-SHA256 of `body` keyed by `secret`, as Runflow signs. */
export const sign = (body, secret = SECRET) => createHmac("sha256", secret).update(body).digest("hex");

const PAYLOAD = JSON.stringify({
  event: "run.completed", run_id: "run_9", status: "succeeded",
  output: { images: [{ url: "https://cdn.runflow.io/o/1.png" }] }, duration_ms: 4200,
  created_at: "2026-12-01T10:00:00+00:00", completed_at: "2026-12-01T10:00:04+00:00", metadata: null,
});
// A redelivery rebuilds the payload: other bytes, their own signature.
const REDELIVERED = PAYLOAD.replace("4200", "4200.0");

export const VECTORS = [
  [PAYLOAD, sign(PAYLOAD), [SECRET], true, "signed with the secret"],
  [PAYLOAD, sign(PAYLOAD).toUpperCase(), [SECRET], true, "upper-case hex"],
  [PAYLOAD, ` ${sign(PAYLOAD)} `, [SECRET], true, "spaces around the header"],
  [PAYLOAD, sign(PAYLOAD, OLD), [SECRET, OLD], true, "the old secret while two are valid"],
  [REDELIVERED, sign(REDELIVERED), [SECRET], true, "a redelivery's new bytes, signed anew"],
  [PAYLOAD + " ", sign(PAYLOAD), [SECRET], false, "a tampered body"],
  [PAYLOAD, sign(PAYLOAD, "whsec_someone_else"), [SECRET], false, "a wrong secret"],
  [PAYLOAD, sign(PAYLOAD).slice(0, 63), [SECRET], false, "a truncated header"],
  [PAYLOAD, `${sign(PAYLOAD)}00`, [SECRET], false, "a header too long"],
  [PAYLOAD, sign(PAYLOAD, OLD), [SECRET], false, "a retired secret"],
  [REDELIVERED, sign(PAYLOAD), [SECRET], false, "a redelivery under the first delivery's signature"],
  [PAYLOAD, undefined, [SECRET], false, "no header"],
  [PAYLOAD, "", [SECRET], false, "an empty header"],
];
