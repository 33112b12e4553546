// Every RunflowError code as a sentence a person can act on. Server text is only ever passed on
// as data (rendered with textContent by the caller), never as markup.

const START_PROXY =
  "Start the dev server with `make demo` (embedded mock, no key needed), or give it RUNFLOW_API_KEY to reach the real Runflow API.";

/** What a run failure code (from Runflow or the mock) means, and what to do about it. */
function explainFailure(code, context) {
  switch (code) {
    case "INPUT_IMAGE_UNREACHABLE":
      return context.isMock
        ? {
            text: "The image URL could not be downloaded. The embedded mock has no internet access: it can only read pictures served by this dev server.",
            next: "Pick a file, drop or paste a picture, or use the sample picture instead of an external URL.",
          }
        : {
            text: "Runflow could not download the image from that URL.",
            next: "Use a public https URL that opens without a login, or pick a file from your computer instead.",
          };
    case "INVALID_INPUT_IMAGE":
      return {
        text: "Runflow could not read the image: it may be damaged or in an unsupported format.",
        next: "Try a JPEG or PNG.",
      };
    case "NSFW_DETECTED":
    case "CONTENT_MODERATED":
    case "SAFETY_FILTER":
      return {
        text: "The safety filter blocked this edit.",
        next: "Rephrase the prompt, or raise the safety tolerance if your use allows it.",
      };
    default:
      return {
        text: "The run failed on Runflow's side. Failed runs are not billed.",
        next: "Try again; if it keeps failing, try another picture or prompt.",
      };
  }
}

/**
 * Describes `error` (a RunflowError, or anything thrown) for the page:
 * `{ tone, title, text, next, serverMessage, details: [[label, value], ...] }`.
 * `context`: `{ baseUrl, isMock, runId }`.
 */
export function explainError(error, context = {}) {
  const code = error?.code ?? "unexpected";
  const status = error?.status;
  const seconds = error?.retryAfterMs ? Math.ceil(error.retryAfterMs / 1000) : null;
  const base = context.baseUrl ?? "/api/runflow";
  let tone = "error";
  let title;
  let text;
  let next;
  let serverMessage = null;

  // A 404/405 without a Runflow error body on create: whatever answers is not a Runflow API
  // (a static file server, say). The client reports a bare 405 as a validation error.
  const notAnApi = !context.runId && !error?.serverCode && (status === 405 || (status === 404 && code === "not_found"));
  // The PUT of a picture to its presigned URL goes to Runflow's storage, not through the API.
  const uploadCase = error?.step === "upload_put" &&
    { permission_denied: "upload_refused", connection_error: "upload_unreachable", timeout: "upload_unreachable" }[code];
  switch (uploadCase || (notAnApi ? "no_api" : code)) {
    case "no_api":
      title = "No Runflow proxy found";
      text = `Nothing that speaks the Runflow API answers at ${base} (HTTP ${status}).`;
      next = START_PROXY;
      break;
    case "validation_error":
      title = "Something in the edit is not valid";
      text = error.field ? `The field “${fieldLabel(error.field)}” was refused.` : "The request was refused before it was sent.";
      next = "Fix it and run again; nothing was sent or charged.";
      serverMessage = error.message;
      break;
    case "browser_key_refused":
      title = "An API key cannot be used from a web page";
      text = "Anyone could read a key put in a page.";
      next = `Keep the key on the server: ${START_PROXY}`;
      break;
    case "authentication_error":
      title = "The API key was refused";
      text = "Runflow did not accept the key the dev server sends (missing, mistyped or revoked).";
      next = "Check RUNFLOW_API_KEY where the dev server runs (keys look like rf_live_...), then restart it.";
      break;
    case "permission_denied":
      if (error.serverCode === "path_not_allowed" || error.serverCode === "model_not_allowed") {
        title = "The proxy does not allow this request";
        text = `The proxy at ${base} refused it (${error.serverCode}).`;
        next = "Allow the FLUX Kontext model in the proxy's settings.";
      } else {
        title = "This account may not use this model";
        text = "Runflow refused the request for this key (for example, the account's email is not verified yet).";
        next = "Check the account in the Runflow dashboard.";
      }
      break;
    case "insufficient_credit":
      title = "Out of credit";
      text = "The Runflow account has no credit left for this edit. Nothing was charged.";
      next = "Add credit to the Runflow account (Billing in the dashboard), then run again.";
      break;
    case "not_found":
      if (context.runId) {
        title = "This run is no longer known";
        text = `The server has no run ${context.runId}. The embedded mock forgets its runs when the dev server restarts.`;
        next = "Run the edit again.";
      } else {
        title = "No Runflow proxy found";
        text = `Nothing that speaks the Runflow API answers at ${base}.`;
        next = START_PROXY;
      }
      break;
    case "conflict":
      title = "Runflow saw a conflicting request";
      text = "The same request id was used for a different edit.";
      next = "Run the edit again; a new id is used each time.";
      break;
    case "payload_too_large":
      title = "The picture is too large to send this way";
      text = "The proxy or Runflow refused a request this big: a picture sent from your computer travels inside the request, in full.";
      next = context.isMock
        ? "Use a smaller picture, or an https URL of the picture."
        : "Use an https URL of the picture, or a smaller one. Running this dev server? Raise its limit with PROXY_MAX_BODY_BYTES.";
      break;
    case "rate_limited":
      tone = "warning";
      title = "Slowed down by Runflow";
      text = "Too many requests at once: the client already waited and retried" + (seconds ? ` (Runflow asked for ${seconds} s).` : ".");
      next = "Wait a minute, then run again.";
      break;
    case "server_error":
      title = "Runflow had a problem";
      text = `The server answered with an error${status ? ` (HTTP ${status})` : ""}, even after retries.` +
        (status === 503 ? " The model is temporarily unavailable." : "");
      next = "Try again in a minute.";
      break;
    case "upload_refused":
      title = "The upload link was refused";
      text = "Runflow's storage refused the link for uploading the picture, twice: it had expired or was not valid.";
      next = "Check that this computer's clock is right, then run the edit again.";
      break;
    case "upload_unreachable":
      title = "Cannot reach the upload storage";
      text = "The picture could not be sent to the storage Runflow uploads go to, even after retries.";
      next = "Check your connection and run the edit again; a picture under 1 MiB is sent inline, without this step.";
      break;
    case "connection_error":
      title = "Cannot reach the server";
      text = `No answer from ${base}: the dev server may have stopped, or the network is down.`;
      next = `Check your connection. ${START_PROXY}`;
      break;
    case "timeout":
      title = "This is taking too long";
      text = "The run did not finish in time, so the page stopped waiting. It may still finish on Runflow.";
      next = "Check it later from History, or run the edit again.";
      break;
    case "aborted":
      tone = "info";
      title = "Stopped waiting";
      text = "Cancel stops waiting here. Runflow has no public cancel, so the run may still finish and be billed.";
      next = context.runId ? "It is kept in History: use “Check again” to see how it ended." : "Nothing was created.";
      break;
    case "run_failed": {
      const failure = error.run?.failure ?? null;
      if (error.run?.status === "canceled") {
        title = "The run was canceled";
        text = "Runflow canceled this run before it finished. Canceled runs are not billed.";
        next = "Run the edit again.";
      } else {
        title = "The edit failed";
        ({ text, next } = explainFailure(failure?.code, context));
      }
      serverMessage = failure?.message ?? null;
      break;
    }
    case "invalid_response":
      title = "The server's answer made no sense";
      text = `What answered at ${base} does not look like the Runflow API (for example a web page instead of JSON).`;
      next = START_PROXY;
      break;
    case "package_missing":
      title = "The client package is not built";
      text = "The page could not load runflow-kontext from /pkg/.";
      next = "Build it with `make pkg` (or start everything with `make demo`), then reload.";
      break;
    default:
      title = "Something unexpected went wrong";
      text = "The page hit an error it does not know.";
      next = "Reload the page and try again.";
      serverMessage = error?.message ?? String(error);
  }

  const details = [
    ["Code", code],
    ["HTTP status", status],
    ["Server code", error?.serverCode ?? error?.run?.failure?.code],
    ["Run id", error?.runId ?? context.runId],
    ["Request id", error?.requestId],
    ["Message", error?.message],
  ].filter(([, value]) => value !== undefined && value !== null && value !== "");
  return { tone, title, text, next, serverMessage, details };
}

const FIELD_LABELS = {
  prompt: "Prompt",
  image_url: "Image",
  image: "Image",
  aspect_ratio: "Aspect ratio",
  num_images: "Number of images",
  guidance_scale: "Guidance scale",
  output_format: "Output format",
  safety_tolerance: "Safety tolerance",
  enhance_prompt: "Enhance prompt",
  seed: "Seed",
};

/** "input.seed" -> "Seed". */
export function fieldLabel(field) {
  const name = String(field).replace(/^input\./, "");
  return FIELD_LABELS[name] ?? name;
}

/** The form control a validation error's field points at, by id. */
export function fieldControlId(field) {
  const name = String(field ?? "").replace(/^input\./, "");
  return { prompt: "prompt", image_url: "url", image: "url", seed: "seed", guidance_scale: "guidance" }[name] ?? null;
}
