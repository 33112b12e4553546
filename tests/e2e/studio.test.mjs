// The main path of the demo page: a picture from disk, an edit against the embedded mock, the
// result with its comparison slider, and downloads in the chosen format.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { join } from "node:path";
import {
  ROOT,
  isJpeg,
  isPng,
  openPage,
  pageUrl,
  screenshot,
  studioSession,
  text,
  waitForResult,
  withStudioPage,
} from "./harness.mjs";

const session = studioSession();

test("edits a picture from disk, compares before and after, downloads a PNG", async () => {
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(pageUrl(session.server.url));
    await page.waitForFunction(() => document.getElementById("backend").dataset.state !== "checking");
    assert.match(await text(page, "#backend-label"), /Embedded mock/);
    await screenshot(page, "01-empty");

    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
    assert.match(await text(page, "#preview-info"), /320×200 · \d+ (bytes|KB) · PNG · sunset\.png/);

    await page.fill("#prompt", "make it a snowy winter night");
    await page.click("label[for=fmt-png]");
    assert.match(await text(page, "#cost"), /1 image · \$0\.04/);
    await page.click("#run");
    await page.waitForFunction(() => document.getElementById("timeline").dataset.status === "queued" ||
      document.getElementById("timeline").dataset.status === "dispatching" ||
      document.getElementById("timeline").dataset.status === "running");
    await screenshot(page, "02-running");
    await waitForResult(page);

    // The timeline reached the end, every step with a time.
    const steps = await page.$$eval("#timeline li", (items) => items.map((li) => li.dataset.state));
    assert.deepEqual(steps, ["done", "done", "done", "done"]);
    assert.equal(await page.isHidden("#cancel"), true);
    assert.match(await text(page, "#status-line"), /Done in \d+\.\d s/);

    // The comparison: the original under the edit, with a slider that moves the split.
    const beforeSrc = await page.getAttribute("#compare-before", "src");
    assert.match(beforeSrc, /^blob:/);
    const afterSrc = await page.getAttribute("#compare-after", "src");
    assert.match(afterSrc, /\/__mock\/files\/.+\.png\?/);
    await page.focus("#compare-range");
    await page.keyboard.press("End");
    assert.equal(await page.$eval("#compare", (el) => el.style.getPropertyValue("--pos")), "100%");
    await page.keyboard.press("Home");
    assert.equal(await page.$eval("#compare", (el) => el.style.getPropertyValue("--pos")), "0%");
    await page.fill("#compare-range", "50");

    // Facts: seed, run id, size and format.
    const facts = await text(page, "#facts");
    assert.match(facts, /Seed\d+/);
    assert.match(facts, /Run id[0-9a-f-]{36}/);
    assert.match(facts, /320×200 · PNG/);
    assert.equal(await page.isEnabled("#reuse-seed"), true);
    await screenshot(page, "03-result", { fullPage: true });

    // Download: the file really is a PNG.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#downloads button")]);
    assert.match(download.suggestedFilename(), /^kontext-[0-9a-f]{8}-1\.png$/);
    const bytes = await readFile(await download.path());
    assert.ok(isPng(bytes), "downloaded file is a PNG");
    assert.ok(bytes.length > 1000);

    // Reuse last seed fills the seed field.
    await page.click("#reuse-seed");
    const seed = await page.inputValue("#seed");
    assert.match(facts, new RegExp(`Seed${seed}`));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the sample picture, two JPEG outputs, the second one downloaded (UPDATE_DOCS_SCREENSHOT=1 refreshes docs/screenshot.png)", async () => {
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(pageUrl(session.server.url));
    await page.click("#sample");
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
    assert.match(await text(page, "#preview-info"), /960×640 · \d+ KB · JPEG · lakeside\.jpg/);
    await page.click("text=Winter night");
    assert.match(await page.inputValue("#prompt"), /snowy winter night/);
    await page.click("label[for=num-2]");
    assert.match(await text(page, "#cost"), /2 images · \$0\.08/);
    await page.click("#run");
    await waitForResult(page);

    assert.equal(await page.locator("#outputs button").count(), 2);
    assert.equal(await page.locator("#downloads button").count(), 2);
    const first = await page.getAttribute("#compare-after", "src");
    await page.click("#outputs button:nth-child(2)");
    await waitForResult(page);
    assert.notEqual(await page.getAttribute("#compare-after", "src"), first);
    assert.equal(await page.getAttribute("#outputs button:nth-child(2)", "aria-pressed"), "true");

    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click("#downloads button:nth-child(2)"),
    ]);
    assert.match(download.suggestedFilename(), /-2\.jpg$/);
    assert.ok(isJpeg(await readFile(await download.path())), "downloaded file is a JPEG");

    await page.click("#outputs button:nth-child(1)");
    await waitForResult(page);
    await page.fill("#compare-range", "42");
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.mouse.move(0, 0);
    // The README's picture: refreshed only on request, so `make test` leaves the tree clean.
    if (process.env.UPDATE_DOCS_SCREENSHOT) await page.screenshot({ path: join(ROOT, "docs/screenshot.png") });
    await screenshot(page, "04-result-two-images");
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("phone width: everything reachable, nothing overflows sideways", async () => {
  const { context, page, problems } = await openPage(session.browser, { viewport: { width: 390, height: 844 } });
  try {
    await page.goto(pageUrl(session.server.url));
    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "Add a red hot-air balloon in the sky");
    await page.click("#run");
    await waitForResult(page);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
    await screenshot(page, "05-phone", { fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("refuses a file that is not a picture, uploads one over 1 MiB with its progress", async () => {
  await withStudioPage(session, {}, async ({ page, mock, context }) => {
    await page.setInputFiles("#file", session.fixtures.text);
    await page.waitForFunction(() => document.getElementById("image-message").dataset.tone === "error");
    assert.match(await text(page, "#image-message"), /“notes\.txt” is a text\/plain file\. Choose a picture/);
    assert.equal(await page.getAttribute("#dropzone", "data-state"), "empty");

    await page.setInputFiles("#file", session.fixtures.big);
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready", null, { timeout: 20_000 });
    assert.match(await text(page, "#image-message"), /Over 1 MiB: it will be uploaded to Runflow first/);
    await screenshot(page, "06-big-file");

    // A slow uplink, so the upload takes long enough to report its progress.
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 8 * 1024 * 1024,
    });
    await page.evaluate(() => {
      window.statusTexts = [];
      new MutationObserver(() => window.statusTexts.push(document.getElementById("status-line").textContent))
        .observe(document.getElementById("status-line"), { childList: true, characterData: true, subtree: true });
    });
    await page.fill("#prompt", "make it calmer");
    await page.click("#run");
    await page.waitForFunction(() => /Uploading the picture… \d+%/.test(document.getElementById("working-label").textContent));
    await screenshot(page, "07-uploading");
    await waitForResult(page);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const percents = (await page.evaluate(() => window.statusTexts))
      .map((t) => t.match(/Uploading the picture… (\d+)%/)?.[1])
      .filter(Boolean)
      .map(Number);
    assert.ok(percents.length >= 2, `progress shown: ${percents}`);
    assert.deepEqual(percents, [...percents].sort((a, b) => a - b), "never backwards");

    const log = (await mock.log()).filter((e) => e.kind !== "health");
    assert.deepEqual(log.map((e) => e.kind).slice(0, 4), ["upload_create", "upload_put", "upload_confirm", "create"]);
    assert.equal(log[0].body.mime_type, "image/png");
    assert.equal(log[1].headers.authorization, undefined);
    assert.match(log[3].body.input.image_url, /\/__mock\/assets\//);

    // The same picture again: uploaded once, reused.
    await page.fill("#prompt", "make it warmer");
    await page.click("#run");
    await waitForResult(page);
    assert.equal(await mock.count("upload_create"), 1);
    assert.equal(await mock.count("create"), 2);
  });
});

test("cancel while the picture is still uploading stops the PUT mid-way, and nothing is created", async () => {
  await withStudioPage(session, {}, async ({ page, mock, context }) => {
    await page.setInputFiles("#file", session.fixtures.big);
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready", null, { timeout: 20_000 });
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    // About 3 s for the picture: time to cancel in the middle.
    await cdp.send("Network.emulateNetworkConditions", {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 2 * 1024 * 1024,
    });
    await page.fill("#prompt", "make it calmer");
    await page.click("#run");
    await page.waitForFunction(() => /Uploading the picture… ([1-9]\d?)%/.test(document.getElementById("working-label").textContent));
    await page.click("#cancel");
    await page.waitForSelector("#alert:not([hidden])");
    assert.equal(await text(page, "#alert-title"), "Stopped waiting");
    assert.match(await text(page, "#alert-next"), /Nothing was created/);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const log = await mock.log();
    const put = log.find((entry) => entry.kind === "upload_put");
    const declared = log.find((entry) => entry.kind === "upload_create").body.size_bytes;
    assert.ok(put, "the PUT had started");
    assert.ok(put.body.bytes < declared, `cut off mid-way: ${put.body.bytes} of ${declared} bytes arrived`);
    assert.equal(await mock.count("upload_confirm"), 0);
    assert.equal(await mock.count("create"), 0);
    assert.equal(await page.isEnabled("#run"), true);
  });
});

test("every control has a label, and an edit can be made with the keyboard alone", async () => {
  await withStudioPage(session, {}, async ({ page, mock }) => {
    const unlabelled = await page.$$eval("input, select, textarea, button", (controls) =>
      controls
        .filter((el) => !el.closest("[hidden]"))
        .filter((el) => {
          const name = el.getAttribute("aria-label") || el.labels?.[0]?.textContent || el.textContent;
          const grouped = el.type === "radio" && el.closest("fieldset")?.querySelector("legend");
          return !(name && name.trim()) || (el.type === "radio" && !grouped);
        })
        .map((el) => el.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unlabelled, []);

    // Tab from the top of the page to the sample button, then to the prompt.
    const focusBy = async (id, max = 30) => {
      for (let i = 0; i < max; i += 1) {
        await page.keyboard.press("Tab");
        if (await page.evaluate((want) => document.activeElement?.id === want, id)) return;
      }
      assert.fail(`could not reach #${id} with Tab`);
    };
    await focusBy("sample");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
    await focusBy("prompt");
    await page.keyboard.type("make it autumn");
    await page.keyboard.press("Control+Enter");
    await waitForResult(page);
    assert.equal(await mock.count("create"), 1);
  });
});
