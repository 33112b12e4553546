// Renders tests/matrix/cells.json (the fault matrix's expectations) as docs/reliability.md.
//   node tests/matrix/render.mjs           writes the doc
//   node tests/matrix/render.mjs --check   exits 1 when the committed doc is out of date

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, "../..");
export const CELLS_PATH = join(HERE, "cells.json");
export const DOC_PATH = join(ROOT, "docs/reliability.md");

export function loadCells() {
  return JSON.parse(readFileSync(CELLS_PATH, "utf8"));
}

/** Why a cell is not run, if it is not: not applicable, or waiting for a mock feature. */
export function skipReason(data, cell) {
  if (cell.na) return { kind: "na", why: cell.na };
  const pending = cell.pending ?? data.faults[cell.fault]?.pending ?? data.upstreams[cell.upstream]?.pending;
  if (pending) return { kind: "pending", why: pending };
  return null;
}

export const cellName = (cell) => `${cell.op} × ${cell.fault} × ${cell.upstream}`;

/** The expected outcome in a few words. */
export function describeExpect(op, expect) {
  const parts = [];
  if (expect.resolves) {
    parts.push(expect.resolves === "url" ? "resolves (asset URL)" : `resolves \`${expect.resolves}\``);
  } else {
    const r = expect.rejects;
    const details = [];
    if (r.status !== undefined) details.push(String(r.status));
    if (r.retryable !== undefined) details.push(r.retryable ? "retryable" : "not retryable");
    if (r.clientRef) details.push("`clientRef`");
    if (r.runId) details.push("`runId`");
    if (r.step) details.push(`step \`${r.step}\``);
    if (r.retryAfterMs !== undefined) details.push(`\`retryAfterMs\` ${r.retryAfterMs}`);
    parts.push(`rejects \`${r.code}\`${details.length ? ` (${details.join(", ")})` : ""}`);
  }
  if (expect.newRun) parts[0] += " (a new run, not the older one)";
  if (op === "create" || op === "lookup") {
    parts.push(`${expect.runs} run${expect.runs === 1 ? "" : "s"}`);
    parts.push(`${expect.creates} POST${expect.creates === 1 ? "" : "s"}`);
  }
  if (expect.searches !== undefined) parts.push(`${expect.searches} look-up${expect.searches === 1 ? "" : "s"}`);
  if (expect.minMs !== undefined) parts.push(`≥ ${expect.minMs} ms`);
  if (expect.maxMs !== undefined) parts.push(`≤ ${expect.maxMs} ms`);
  if (expect.offlineAttempts !== undefined) parts.push(`≤ ${expect.offlineAttempts} request offline`);
  return parts.join(" · ");
}

function describeRules(rules) {
  return rules.map((r) => {
    const { type, ...args } = r.action;
    const shown = Object.entries(args)
      .filter(([k]) => k !== "body")
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    if (args.body !== undefined) shown.push(`body: ${JSON.stringify(args.body.length > 40 ? `${args.body.slice(0, 37)}…` : args.body)}`);
    const times = r.times && r.times !== 1 ? ` ×${r.times}` : "";
    return `${r.on}: ${type}${shown.length ? ` {${shown.join(", ")}}` : ""}${times}`;
  });
}

const escape = (text) => text.replace(/\|/g, "\\|");

export function render(data) {
  const cells = data.cells;
  const counts = { run: 0, na: 0, pending: 0, known: 0 };
  for (const cell of cells) {
    const skip = skipReason(data, cell);
    if (skip) counts[skip.kind] += 1;
    else {
      counts.run += 1;
      if (cell.known) counts.known += 1;
    }
  }
  const out = [];
  const line = (text = "") => out.push(text);
  line("# Reliability: the fault matrix");
  line();
  line("<!-- Generated from tests/matrix/cells.json by `node tests/matrix/render.mjs`: edit the data, not this file. -->");
  line();
  line("What the client does when the network or the server misbehaves, operation by operation. Every");
  line("cell below is an expectation written down from the behaviour contract (the design's \"How it");
  line("behaves\", README \"How it behaves\" and \"Errors\"), not from what the code happens to do, and");
  line("`make test-matrix` runs every applicable cell in headless Chromium against the dev server's mock,");
  line("each on a fresh scenario.");
  line();
  line(`**${cells.length} cells**: ${counts.run} run, ${counts.na} not applicable, ${counts.pending} pending (waiting for a mock feature)` +
    (counts.known ? `, ${counts.known} of the run ones known to fail (a client fix in progress)` : "") + ".");
  line();
  line("## How a cell runs");
  line();
  const client = Object.entries(data.client).map(([k, v]) => `\`${k}: ${v}\``).join(", ");
  line(`- A fresh mock scenario; the fault rules are injected, then the operation runs with a fresh client`);
  line(`  (${client}: the default number of retries, with backoffs of milliseconds).`);
  line("- The cell passes when the call resolves or rejects as expected (code, `status`, `retryable`,");
  line("  `clientRef`, `runId`, `step`, `retryAfterMs` where listed), the mock holds exactly the expected");
  line("  runs and received exactly the expected create POSTs, no create was POSTed again after an unknown");
  line("  outcome without a look-up in between, all POSTs of the create carried one `client_ref` and one");
  line("  Idempotency-Key (the look-ups search that `client_ref`, and `error.clientRef` is it), a");
  line("  Retry-After the client can see was waited out (\"≥ N ms\"), the page saw no unhandled rejection");
  line("  and no wasm trap, and one clean call of the same kind with the same client (same scenario) then");
  line("  succeeds (a `getRun` after a wait: a never-ending status may still be scripted).");
  line("- The page reaches the dev server through a small pass-through that answers every request with");
  line("  `Connection: close`. Chromium silently resends a request once when a *reused* keep-alive");
  line("  connection closes without an answer, which would hide `drop` faults from the client (or send a");
  line("  create twice); with no reuse, each fault reaches the client exactly as scripted. (In production that");
  line("  resend happens below the client: behind a proxy that drops Idempotency-Key, a create whose");
  line("  connection is cut after the server acted can be resent by the browser itself.)");
  line("- \"POSTs\" counts create requests the mock received; \"runs\", the runs it holds afterwards.");
  line();
  line("| upstream | what it is |");
  line("|---|---|");
  for (const [id, upstream] of Object.entries(data.upstreams)) {
    line(`| ${upstream.title} | ${escape(upstream.describe)}${upstream.pending ? ` *(pending: ${escape(upstream.pending)})*` : ""} |`);
  }
  line();
  for (const [op, operation] of Object.entries(data.operations)) {
    const opCells = cells.filter((c) => c.op === op);
    const upstreams = Object.keys(data.upstreams).filter((u) => opCells.some((c) => c.upstream === u));
    line(`## ${operation.title}`);
    line();
    line(operation.describe);
    line();
    line(`| fault | ${upstreams.map((u) => data.upstreams[u].title).join(" | ")} |`);
    line(`|---|${upstreams.map(() => "---").join("|")}|`);
    const notApplicable = [];
    for (const [fault, info] of Object.entries(data.faults)) {
      const row = upstreams.map((u) => opCells.find((c) => c.fault === fault && c.upstream === u));
      if (row.every((c) => !c)) continue;
      if (row.every((c) => c?.na)) {
        notApplicable.push(`${info.title}: ${row[0].na}`);
        continue;
      }
      const texts = row.map((cell) => {
        if (!cell) return "";
        if (cell.na) return `n/a: ${cell.na}`;
        let text = describeExpect(op, cell.expect);
        const skip = skipReason(data, cell);
        if (skip?.kind === "pending") text += " *(pending)*";
        if (cell.known) text += ` **(known: ${cell.known})**`;
        if (cell.note) text += ` — ${cell.note}`;
        return escape(text);
      });
      line(`| ${escape(info.title)} | ${texts.join(" | ")} |`);
    }
    line();
    if (notApplicable.length) {
      line("Not applicable:");
      line();
      for (const text of notApplicable) line(`- ${text}`);
      line();
    }
  }
  line("## The faults");
  line();
  line("| fault | what the mock does | rules (on the operation's request) |");
  line("|---|---|---|");
  for (const [fault, info] of Object.entries(data.faults)) {
    // Connection refused and offline are not mock rules (see their description).
    const special = fault === "refused" || fault === "offline";
    const sample = !special && cells.find((c) => c.fault === fault && !c.na && c.op !== "lookup" && c.rules?.length);
    const rules = sample ? describeRules(sample.rules.filter((r) => r.on !== "create" || sample.op === "create")).map((r) => `\`${escape(r)}\``).join("<br>") : "—";
    line(`| ${escape(info.title)} | ${escape(info.describe)}${info.pending ? ` *(pending: ${escape(info.pending)})*` : ""} | ${rules} |`);
  }
  line();
  line("`$HTTP_DATE_IN_2S` and `$CLOSED_PORT` are filled in when the cell runs.");
  return `${out.join("\n")}\n`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = render(loadCells());
  if (process.argv.includes("--check")) {
    let current = "";
    try {
      current = readFileSync(DOC_PATH, "utf8");
    } catch {}
    if (current !== text) {
      console.error("docs/reliability.md is out of date: run `node tests/matrix/render.mjs`");
      process.exit(1);
    }
  } else {
    writeFileSync(DOC_PATH, text);
    console.log(`wrote ${DOC_PATH}`);
  }
}
