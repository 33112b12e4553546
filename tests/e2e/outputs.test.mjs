// Outputs that expire (issue 14): each output carries `expiresAt` from its presigned URL, and
// `client.download(output)` fetches the image as a Blob, and reads a storage's refusal of an
// expired link as `output_expired`, the storage deciding rather than the device's clock. In
// headless Chromium against the mock.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createScenario, encodePng, launchBrowser, openUnemulatedPage, startServer } from "./harness.mjs";

const IMAGE = `data:image/png;base64,${encodePng(16, 12, (x, y) => [x * 16, y * 20, 90]).toString("base64")}`;

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function withPage(body) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const downloads = [];
  page.on("request", (request) => request.url().includes("/__mock/files/") && downloads.push(request.url()));
  await page.goto(`${server.url}/api/runflow/_backend`);
  try {
    await body(page, downloads);
  } finally {
    await context.close();
  }
}

test("an output carries expiresAt and downloads as a Blob of the image", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 100] });
  await withPage(async (page, downloads) => {
    const result = await page.evaluate(
      async ({ base, image }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 20 });
        const run = await client.run({ prompt: "teal", image_url: image, output_format: "png" });
        const [output] = run.output.outputs;
        const blob = await client.download(output);
        const head = [...new Uint8Array(await blob.slice(0, 8).arrayBuffer())];
        const byUrl = await client.download(output.url);
        return { expiresAt: output.expiresAt, completedAt: Date.parse(run.completed_at), type: blob.type, size: blob.size, head, sameSize: byUrl.size === blob.size };
      },
      { base: scenario.base, image: IMAGE },
    );
    // The mock's links last a day after the run ends, as Runflow's; the URL says so to the second.
    const day = 24 * 3600 * 1000;
    assert.ok(Math.abs(result.expiresAt - (result.completedAt + day)) < 1000, JSON.stringify(result));
    assert.equal(result.type, "image/png");
    assert.ok(result.size > 100);
    assert.deepEqual(result.head, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.equal(result.sameSize, true);
    assert.equal(downloads.length, 2);
  });
});

test("a download given a deadline may take longer than one API request may", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60] });
  await withPage(async (page, downloads) => {
    const result = await page.evaluate(
      async ({ base, image }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        // One request may take 400 ms; the storage answers in 1 s, as over a slow link.
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 20, timeoutMs: 400 });
        const run = await client.run({ prompt: "slow link", image_url: image });
        const direct = window.fetch;
        window.fetch = (url, init) =>
          String(url).includes("/__mock/files/") ? new Promise((resolve) => setTimeout(resolve, 1000)).then(() => direct(url, init)) : direct(url, init);
        const started = performance.now();
        const size = await client.download(run.output.outputs[0], { timeoutMs: 5000 }).then((blob) => blob.size, (error) => error.code);
        return { size, ms: performance.now() - started };
      },
      { base: scenario.base, image: IMAGE },
    );
    assert.ok(result.size > 100, `downloaded: ${result.size}`);
    assert.equal(downloads.length, 1, `in one attempt (${Math.round(result.ms)} ms)`);
  });
});

test("an expired link is refused as expired; a clock that is a day fast still downloads a live link; a storage's 403 reads as expired", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60], output_url_ttl_ms: 1000 });
  await withPage(async (page, downloads) => {
    const result = await page.evaluate(
      async ({ base, image }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 20 });
        const run = await client.run({ prompt: "teal", image_url: image, num_images: 2 });
        const [output, other] = run.output.outputs;
        // A device clock a day fast says the link has expired; the storage, which decides, serves
        // it. (The other output: the browser's cache would serve this one again, expired or not.)
        const now = Date.now;
        Date.now = () => now() + 24 * 3600 * 1000;
        const fast = await client.download(other).then((blob) => blob.size, (error) => error.code);
        Date.now = now;
        await new Promise((resolve) => setTimeout(resolve, 2200));
        const expired = await client.download(output).catch((error) => error);
        // A link whose expiry the client cannot read (the query cut): the storage says 403.
        const unreadable = await client.download(output.url.replace(/\?.*$/, "")).catch((error) => error);
        const wrong = await client.download({ width: 3 }).catch((error) => error);
        return {
          fast,
          expired: { code: expired.code, message: expired.message },
          unreadable: { code: unreadable.code, message: unreadable.message },
          wrong: { code: wrong.code, field: wrong.field },
        };
      },
      { base: scenario.base, image: IMAGE },
    );
    assert.ok(result.fast > 0, `a fast clock downloads a live link: ${result.fast}`);
    assert.equal(result.expired.code, "output_expired");
    assert.match(result.expired.message, /has expired/);
    assert.equal(result.unreadable.code, "output_expired");
    assert.match(result.unreadable.message, /refused by its storage \(403\)/);
    assert.deepEqual(result.wrong, { code: "validation_error", field: "output" });
    assert.equal(downloads.length, 3, "each link was asked for once: the storage decides");
  });
});

test("between polls, a tab becoming visible and the network returning each check the run at once", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [50, 50, 60000] });
  const { context, page, close } = await openUnemulatedPage();
  try {
    await page.goto(`${server.url}/api/runflow/_backend`);
    const id = await page.evaluate(async ({ base, image }) => {
      window.visibility = [];
      document.addEventListener("visibilitychange", () => window.visibility.push(document.visibilityState));
      const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
      await init();
      const client = new KontextClient({ baseUrl: base });
      const run = await client.createRun({ prompt: "slow", image_url: image });
      window.stop = new AbortController();
      // A 20 s poll interval: any GET within the next seconds is a wake-up, not the schedule.
      window.waiting = client.waitForRun(run.id, { pollIntervalMs: 20000, signal: window.stop.signal }).catch((e) => e.code);
      return run.id;
    }, { base: scenario.base, image: IMAGE });
    const gets = async () => (await scenario.log()).filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${id}`)).length;
    const settle = () => new Promise((resolve) => setTimeout(resolve, 600));
    await settle();
    assert.equal(await gets(), 1, "the first check");
    assert.equal(await page.evaluate(() => document.visibilityState), "visible");
    // The tab is really hidden, then shown again: its window minimized and restored through the
    // DevTools protocol, so Chromium itself changes the page's visibility and fires the events.
    const cdp = await context.newCDPSession(page);
    const { windowId } = await cdp.send("Browser.getWindowForTarget");
    await cdp.send("Browser.setWindowBounds", { windowId, bounds: { windowState: "minimized" } });
    await page.waitForFunction(() => document.visibilityState === "hidden");
    await settle();
    assert.equal(await gets(), 1, "nothing while hidden");
    await cdp.send("Browser.setWindowBounds", { windowId, bounds: { windowState: "normal" } });
    await page.waitForFunction(() => document.visibilityState === "visible");
    await settle();
    assert.deepEqual(await page.evaluate(() => window.visibility), ["hidden", "visible"], "real visibilitychange events");
    assert.equal(await gets(), 2, "checked when the tab became visible");
    // The network goes and comes back (emulated through the DevTools protocol).
    await context.setOffline(true);
    await settle();
    assert.equal(await gets(), 2, "nothing while offline");
    await context.setOffline(false);
    await settle();
    assert.equal(await gets(), 3, "checked when the network returned");
    await page.evaluate(() => window.stop.abort());
    assert.equal(await page.evaluate(() => window.waiting), "aborted");
  } finally {
    await close();
  }
});

test("the same local image sent twice to one API root is uploaded once; other bytes are uploaded", async () => {
  const scenario = await createScenario(server.url, { lifecycle_ms: [20, 20, 60] });
  await withPage(async (page) => {
    const urls = await page.evaluate(
      async ({ base }) => {
        const { default: init, KontextClient } = await import("/pkg/runflow_kontext.js");
        await init();
        // uploadThreshold 0: every local image goes up rather than inline.
        const client = new KontextClient({ baseUrl: base, pollIntervalMs: 20, uploadThreshold: 0 });
        const png = async (shade) => {
          const canvas = new OffscreenCanvas(24, 16);
          const context = canvas.getContext("2d");
          context.fillStyle = `rgb(${shade}, 120, 200)`;
          context.fillRect(0, 0, 24, 16);
          return canvas.convertToBlob({ type: "image/png" });
        };
        const photo = await png(10);
        const first = await client.uploadImage(photo);
        const run = await client.run({ prompt: "again", image: photo });
        // Another client of the same API root knows it too; other bytes are another upload.
        const other = new KontextClient({ baseUrl: base, uploadThreshold: 0 });
        const again = await other.uploadImage(new File([await photo.arrayBuffer()], "copy.png", { type: "image/png" }));
        const different = await other.uploadImage(await png(200));
        return { first, sent: run.input.image_url, again, different };
      },
      { base: scenario.base },
    );
    assert.equal(urls.sent, urls.first, "the run was given the first upload's URL");
    assert.equal(urls.again, urls.first);
    assert.notEqual(urls.different, urls.first);
    const log = await scenario.log();
    assert.equal(log.filter((entry) => entry.kind === "upload_create").length, 2, "two distinct images, two uploads");
    assert.equal(log.filter((entry) => entry.kind === "upload_put").length, 2);
  });
});
