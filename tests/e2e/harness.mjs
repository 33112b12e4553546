// Shared by the e2e tests of the demo page: a dev server of their own on a free port, headless
// Chromium (Debian's, through playwright-core), mock scenarios, and image fixtures written to disk.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http from "node:http";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { rm } from "node:fs/promises";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOTS = join(ROOT, "test-results/screenshots");
const SERVER_BIN = join(ROOT, "target/release/devserver");
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

/**
 * Registers the hooks most test files share: image fixtures, a dev server and a browser for the
 * whole file, torn down after it. Read them from the returned object inside tests.
 */
export function studioSession(serverEnv = {}) {
  const session = {};
  before(async () => {
    session.fixtures = writeFixtures();
    [session.server, session.browser] = await Promise.all([startServer(serverEnv), launchBrowser()]);
  });
  after(async () => {
    await session.browser?.close();
    await session.server?.stop();
    if (session.fixtures) await rm(session.fixtures.dir, { recursive: true, force: true });
  });
  return session;
}

/**
 * Opens the page on a fresh mock scenario of the session's server, runs `body` with
 * `{ page, mock, context, problems }`, then checks the page logged no problems and closes it.
 */
export async function withStudioPage(session, scenarioConfig, body) {
  const mock = await createScenario(session.server.url, scenarioConfig);
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(pageUrl(session.server.url, mock));
    await body({ page, mock, context, problems });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
}

/** A loopback port free at the time of asking, so that `PUBLIC_URL` can name a server before it starts. */
export async function freePort() {
  const probe = createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * The dev server with its callback relay on (issue 13): `PUBLIC_URL` names its own port, so the
 * mock's deliveries reach its own receiver, verified with `secret`.
 */
export async function startRelayServer(secret, env = {}) {
  const port = await freePort();
  return startServer({ ...env, PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`, RUNFLOW_CALLBACK_SECRETS: secret });
}

/** Starts the dev server on a free port; resolves with `{ url, stop }`. */
export async function startServer(env = {}) {
  const child = spawn(SERVER_BIN, [], {
    cwd: ROOT,
    env: { ...process.env, HOST: "127.0.0.1", PORT: "0", MOCK_LIFECYCLE_MS: "100,100,300", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const url = await new Promise((resolveUrl, reject) => {
    let stdout = "";
    const timer = setTimeout(() => reject(new Error(`dev server did not start in 15 s: ${stderr}`)), 15_000);
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const match = stdout.match(/dev server: (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`dev server exited (${code}) before listening: ${stderr} (did \`make devserver\` run?)`));
    });
    child.on("error", reject);
  });
  return {
    url,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Headless Debian Chromium. */
export function launchBrowser() {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
}

/**
 * A Chromium of its own, driven over the DevTools protocol with Playwright's default
 * overrides off: `launchBrowser()`'s pages all get `Emulation.setFocusEmulationEnabled`, which
 * keeps every page visible whatever its window does, so only a page without it can really be
 * hidden. Resolves with `{ browser, context, page, close }`, the page its first tab.
 */
export async function openUnemulatedPage() {
  const profile = mkdtempSync(join(tmpdir(), "kontext-visibility-"));
  const child = spawn(
    "/usr/bin/chromium",
    [...CHROMIUM_ARGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    // A process group of its own, so that close() can end Chromium's helpers too.
    { stdio: ["ignore", "ignore", "pipe"], detached: true },
  );
  // Outside the runner's process group: a runner that exits without close() ends it here.
  const endGroup = () => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // The group has already gone.
    }
  };
  process.once("exit", endGroup);
  const close = async () => {
    process.off("exit", endGroup);
    await browser?.close().catch(() => {});
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    }
    endGroup();
    // A helper can still be writing the profile as it dies (ENOTEMPTY seen in CI): retry.
    await rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  };
  let browser;
  try {
    const endpoint = await new Promise((resolve, reject) => {
      let stderr = "";
      const timer = setTimeout(() => reject(new Error(`chromium did not listen in 15 s: ${stderr}`)), 15_000);
      child.stderr.on("data", (chunk) => {
        stderr += chunk;
        const match = stderr.match(/DevTools listening on (ws:\/\/\S+)/);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.on("exit", (code) => reject(new Error(`chromium exited (${code}): ${stderr}`)));
    });
    browser = await chromium.connectOverCDP(endpoint, { noDefaults: true, isLocal: true });
    const context = browser.contexts()[0];
    const page = context.pages()[0] ?? (await context.newPage());
    return { browser, context, page, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** A fresh context (own localStorage) and page at `viewport`; page errors fail loudly. */
export async function openPage(browser, { viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !/Failed to load resource/.test(message.text())) {
      problems.push(`console.error: ${message.text()}`);
    }
  });
  page.on("dialog", (dialog) => {
    problems.push(`dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return { context, page, problems };
}

/** Creates an isolated mock scenario; `base` is its API root (the page's `?base=`). */
export async function createScenario(serverUrl, config = {}) {
  const response = await fetch(`${serverUrl}/__mock/scenarios`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(config),
  });
  if (response.status !== 201) throw new Error(`scenario: HTTP ${response.status} ${await response.text()}`);
  const { id, base_url: base } = await response.json();
  return {
    id,
    base,
    async log() {
      const body = await (await fetch(`${serverUrl}${base}/log`)).json();
      return body.requests;
    },
    async count(kind) {
      return (await this.log()).filter((entry) => entry.kind === kind).length;
    },
  };
}

/** The page pointed at a scenario. */
export function pageUrl(serverUrl, scenario) {
  return scenario ? `${serverUrl}/?base=${encodeURIComponent(scenario.base)}` : `${serverUrl}/`;
}

export async function screenshot(page, name, options = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), ...options });
}

// --- Fixtures --------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** An RGB PNG of `width`×`height`, `pixel(x, y)` giving `[r, g, b]`. */
export function encodePng(width, height, pixel) {
  const row = width * 3 + 1;
  const raw = Buffer.alloc(row * height);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const [r, g, b] = pixel(x, y);
      raw.set([r, g, b], y * row + 1 + x * 3);
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** Writes fixtures into a fresh temporary folder; returns their paths. */
export function writeFixtures() {
  const dir = mkdtempSync(join(tmpdir(), "kontext-e2e-"));
  const path = (name) => join(dir, name);
  // A small picture: a sunset gradient with a dark "hill", so edits are visible.
  writeFileSync(
    path("sunset.png"),
    encodePng(320, 200, (x, y) => (y > 140 + 20 * Math.sin(x / 30) ? [30, 40, 60] : [250 - y, 120 + y / 3, 90 + x / 4])),
  );
  // Noise does not compress: well over 1 MiB, so the page must shrink it.
  const noise = randomBytes(1600 * 1200 * 3);
  writeFileSync(path("big-noise.png"), encodePng(1600, 1200, (x, y) => noise.subarray((y * 1600 + x) * 3, (y * 1600 + x) * 3 + 3)));
  writeFileSync(path("notes.txt"), "not a picture\n");
  return { dir, sunset: path("sunset.png"), big: path("big-noise.png"), text: path("notes.txt") };
}

export const isPng = (bytes) => bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
export const isJpeg = (bytes) => bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;

/** Waits until the shown run has a result in the comparison (the edited picture decoded). */
export async function waitForResult(page, timeout = 20_000) {
  await page.waitForFunction(
    () => {
      const img = document.getElementById("compare-after");
      return !document.getElementById("compare").hidden && img.complete && img.naturalWidth > 0;
    },
    null,
    { timeout },
  );
}

/** Text content of an element, trimmed. */
export async function text(page, selector) {
  return (await page.textContent(selector))?.trim() ?? "";
}

/**
 * A pass-through to `target` that answers every request with `Connection: close`. Chromium
 * silently resends a request once when a reused keep-alive connection closes with no answer,
 * which would hide `drop` faults from the client (or send a create twice): with no reuse, each
 * fault reaches the client exactly as scripted. `local(req, res)` may answer a request itself
 * (returning true) or return another path to forward it to.
 */
export function startPassThrough(target, local = () => undefined) {
  const upstream = new URL(target);
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const answered = local(req, res);
    if (answered === true) return;
    const path = typeof answered === "string" ? answered : req.url;
    const headers = { ...req.headers, connection: "close" };
    delete headers["keep-alive"];
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path, headers, agent: false }, (answer) => {
      const out = { ...answer.headers };
      for (const name of ["connection", "keep-alive", "transfer-encoding"]) delete out[name];
      res.writeHead(answer.statusCode, answer.statusMessage, { ...out, connection: "close" });
      answer.pipe(res);
      answer.on("error", () => res.destroy());
      answer.on("close", () => {
        if (!answer.complete) res.destroy();
      });
    });
    forward.on("error", () => res.destroy());
    req.pipe(forward);
    res.on("close", () => {
      if (!res.writableFinished) forward.destroy();
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        stop: () =>
          new Promise((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
