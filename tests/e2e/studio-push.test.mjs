// The demo page waits by push when it can and shows which way it waits (issue 13): with the dev
// server's callback relay on, an edit on the default scenario is pushed (one GET for the run, the
// check when the stream opens); with it off, the page polls and says how to turn push on.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launchBrowser, openPage, pageUrl, screenshot, startRelayServer, startServer, text, waitForResult } from "./harness.mjs";

let browser;
let pushServer;
let pollServer;

// Runs of about 2 s, long enough for polling to need several GETs where push needs one.
const LIFECYCLE = { MOCK_LIFECYCLE_MS: "300,300,1400" };

before(async () => {
  [browser, pushServer, pollServer] = await Promise.all([
    launchBrowser(),
    startRelayServer("whsec_e2e_studio", LIFECYCLE),
    // Undefined leaves the variable out of the child's environment: the relay is off.
    startServer({ ...LIFECYCLE, PUBLIC_URL: undefined, RUNFLOW_CALLBACK_SECRETS: undefined }),
  ]);
});

after(async () => {
  await browser?.close();
  await Promise.all([pushServer?.stop(), pollServer?.stop()]);
});

/** Every text the waiting line shows, from now on, in `window.waitingTexts`. */
async function recordWaiting(page) {
  await page.evaluate(() => {
    window.waitingTexts = [];
    const line = document.getElementById("waiting");
    new MutationObserver(() => {
      const shown = line.hidden ? "" : document.getElementById("waiting-text").textContent;
      if (shown && window.waitingTexts.at(-1) !== shown) window.waitingTexts.push(shown);
    }).observe(line, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

/**
 * The sample picture edited on the page's default API root, `whileWaiting(page)` run once the
 * page says how it waits; resolves the run id.
 */
async function editSample(page, whileWaiting = async () => {}) {
  await page.waitForFunction(() => document.getElementById("backend").dataset.state !== "checking");
  await page.click("#sample");
  await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
  await page.fill("#prompt", "make it a snowy winter night");
  await recordWaiting(page);
  await page.click("#run");
  await page.waitForFunction(() => /^Waiting by /.test(document.getElementById("waiting-text").textContent));
  await whileWaiting(page);
  await waitForResult(page);
  return text(page, "#facts .run-id");
}

test("relay on: the page waits by push, says so, and makes one GET for the run", async () => {
  const { context, page, problems } = await openPage(browser);
  try {
    await page.goto(pageUrl(pushServer.url));
    const id = await editSample(page, async () => {
      assert.equal(await page.isVisible("#waiting"), true);
      await page.evaluate(() => window.scrollTo(0, 0));
      await screenshot(page, "40-waiting-by-push");
    });
    assert.match(id, /^[0-9a-f-]{36}$/);

    const seen = await page.evaluate(() => window.waitingTexts);
    assert.deepEqual(seen.slice(0, 1), ["Waiting by push (callback relay)"], `waiting texts: ${JSON.stringify(seen)}`);
    assert.ok(!seen.some((shown) => /polling/.test(shown)), `never polled: ${JSON.stringify(seen)}`);
    assert.equal(await page.getAttribute("#waiting", "data-via"), "events");
    assert.equal(await text(page, "#waiting-text"), "Waited by push (callback relay)");
    assert.equal(await page.isHidden("#relay-hint"), true);
    assert.match(await text(page, "#facts"), /Waitedby push \(callback relay\)/);
    await page.evaluate(() => window.scrollTo(0, 0));
    await screenshot(page, "41-waited-by-push");

    const log = (await (await fetch(`${pushServer.url}/__mock/s/default/log`)).json()).requests;
    const gets = log.filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${id}`));
    assert.equal(gets.length, 1, `GETs of run ${id}: ${JSON.stringify(gets.map((entry) => entry.path))}`);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("relay off: the page waits by polling, says why, and shows how to turn push on", async () => {
  const { context, page, problems } = await openPage(browser);
  try {
    await page.goto(pageUrl(pollServer.url));
    const id = await editSample(page);

    const seen = await page.evaluate(() => window.waitingTexts);
    assert.deepEqual(seen.slice(0, 1), ["Waiting by polling · the server advertises no callback relay"], JSON.stringify(seen));
    assert.equal(await page.getAttribute("#waiting", "data-via"), "poll");
    assert.match(await text(page, "#waiting-text"), /^Waited by polling · /);

    // The how-to, folded: the server's own words, its variables set as code.
    assert.equal(await page.isVisible("#relay-hint summary"), true);
    assert.equal(await page.isVisible("#relay-hint-text"), false);
    await page.click("#relay-hint summary");
    assert.equal(await page.isVisible("#relay-hint-text"), true);
    const hint = await text(page, "#relay-hint-text");
    assert.match(hint, /^Set RUNFLOW_CALLBACK_SECRETS .* and PUBLIC_URL .* and restart; see docs\/callbacks\.md\.$/);
    assert.deepEqual(await page.$$eval("#relay-hint-text code", (codes) => codes.map((code) => code.textContent)), [
      "RUNFLOW_CALLBACK_SECRETS",
      "PUBLIC_URL",
      "docs/callbacks.md",
    ]);
    await screenshot(page, "42-waited-by-polling-relay-off");

    // Polled: several GETs where a push makes one.
    const log = (await (await fetch(`${pollServer.url}/__mock/s/default/log`)).json()).requests;
    const gets = log.filter((entry) => entry.kind === "get" && entry.path.endsWith(`/runs/${id}`));
    assert.ok(gets.length > 1, `GETs of run ${id}: ${gets.length}`);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});
