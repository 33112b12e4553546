// Error paths read as sentences with a next step, and text from people or servers stays text.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  createScenario,
  openPage,
  pageUrl,
  screenshot,
  studioSession,
  text,
  waitForResult,
  withStudioPage,
} from "./harness.mjs";

const session = studioSession();

async function runEdit(page, prompt = "make it brighter") {
  await page.setInputFiles("#file", session.fixtures.sunset);
  await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
  await page.fill("#prompt", prompt);
  await page.click("#run");
}

test("402 from Runflow: out of credit, add credit, nothing charged", async () => {
  const mock = await createScenario(session.server.url, {
    faults: [{ on: "create", action: { type: "error", status: 402 } }],
  });
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(pageUrl(session.server.url, mock));
    await runEdit(page);
    await page.waitForSelector("#alert:not([hidden])");
    assert.equal(await text(page, "#alert-title"), "Out of credit");
    assert.match(await text(page, "#alert-text"), /no credit left.*Nothing was charged/);
    assert.match(await text(page, "#alert-next"), /Add credit to the Runflow account/);
    assert.equal(await page.getAttribute("#alert", "data-tone"), "error");
    // The raw error stays folded away under "Technical details".
    assert.equal(await page.isVisible("#alert-details"), false);
    assert.match(await page.textContent("#alert-details"), /insufficient_credit.*402/s);
    assert.equal(await page.isEnabled("#run"), true);
    // Nothing was created, so nothing goes to history.
    assert.equal(await page.locator(".history-item").count(), 0);
    assert.equal(await mock.count("create"), 1);
    await screenshot(page, "20-error-402");
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("an upload link refused twice (expired at once): said as such, nothing created", async () => {
  await withStudioPage(session, { upload_ttl_ms: 1 }, async ({ page, mock, problems }) => {
    await page.setInputFiles("#file", session.fixtures.big);
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready", null, { timeout: 20_000 });
    await page.fill("#prompt", "make it calmer");
    await page.click("#run");
    await page.waitForSelector("#alert:not([hidden])");
    assert.equal(await text(page, "#alert-title"), "The upload link was refused");
    assert.match(await text(page, "#alert-next"), /clock/);
    assert.equal(await mock.count("upload_create"), 2, "one fresh link, once");
    assert.equal(await mock.count("create"), 0);
    assert.equal(await page.locator(".history-item").count(), 0);
    assert.equal(await page.isEnabled("#run"), true);
    await screenshot(page, "24-upload-refused");
    // The browser logs the refused PUTs (HTTP 403) by itself.
    problems.splice(0, problems.length, ...problems.filter((p) => !p.includes("403")));
  });
});

test("429 while following a run: the page says it was slowed down and is retrying, then finishes", async () => {
  const mock = await createScenario(session.server.url, {
    lifecycle_ms: [200, 200, 400],
    faults: [{ on: "get", times: 2, action: { type: "error", status: 429, retry_after: "1" } }],
  });
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(pageUrl(session.server.url, mock));
    await runEdit(page);
    await page.waitForSelector("#retry-note:not([hidden])", { timeout: 10_000 });
    assert.match(await text(page, "#retry-note"), /Runflow asked to slow down \(HTTP 429\): retrying in about 1 s/);
    await screenshot(page, "24-rate-limited-retrying");
    await waitForResult(page);
    assert.equal(await page.isHidden("#retry-note"), true);
    assert.ok((await mock.count("get")) >= 3);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("an external image URL: the mock cannot fetch it, and the page says why", async () => {
  await withStudioPage(session, {}, async ({ page, mock }) => {
    await page.fill("#url", "http://example.com/cat.jpg");
    await page.click("#url-form button");
    assert.match(await text(page, "#image-message"), /use an address starting with https:\/\//);

    await page.fill("#url", "https://example.com/cat.jpg");
    await page.press("#url", "Enter");
    await page.waitForFunction(() => document.getElementById("dropzone").dataset.state === "ready");
    assert.match(await text(page, "#image-message"), /embedded mock has no internet access/);
    await page.fill("#prompt", "make it a painting");
    await page.click("#run");
    await page.waitForSelector("#alert:not([hidden])", { timeout: 15_000 });
    assert.equal(await text(page, "#alert-title"), "The edit failed");
    assert.match(await text(page, "#alert-text"), /could not be downloaded.*can only read pictures served by this dev server/);
    assert.match(await text(page, "#alert-server"), /Runflow said: “The input image could not be downloaded from https:\/\/example\.com\/cat\.jpg”/);
    assert.equal(await page.locator('.history-item[data-status="failed"]').count(), 1);
    assert.equal(await text(page, '#timeline li[data-step="done"] .step-name'), "Failed");
    const create = (await mock.log()).find((entry) => entry.kind === "create");
    assert.equal(create.body.input.image_url, "https://example.com/cat.jpg");
    await screenshot(page, "21-error-unreachable-url");
  });
});

test("no Runflow API at the base: the page says how to start one", async () => {
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.goto(`${session.server.url}/?base=/nothing-here`);
    await page.waitForFunction(() => document.getElementById("backend").dataset.state === "down");
    assert.equal(await text(page, "#backend-label"), "No backend at /nothing-here");
    assert.match(await text(page, "#banner"), /make demo/);
    await runEdit(page);
    await page.waitForSelector("#alert:not([hidden])");
    assert.equal(await text(page, "#alert-title"), "No Runflow proxy found");
    assert.match(await text(page, "#alert-next"), /make demo.*RUNFLOW_API_KEY/);
    await screenshot(page, "22-error-no-backend");
    // Only same-origin API roots are accepted from the address bar.
    await page.goto(`${session.server.url}/?base=https://evil.example/api`);
    assert.match(await text(page, "#banner"), /Ignored \?base=https:\/\/evil\.example\/api/);
    assert.equal(await text(page, "#footer-base"), "API root: /api/runflow");
    assert.deepEqual(problems.filter((p) => !p.includes("404")), []);
  } finally {
    await context.close();
  }
});

test("?base= that normalises to a protocol-relative path is ignored", async () => {
  const { context, page, problems } = await openPage(session.browser);
  const foreign = [];
  page.on("request", (request) => {
    if (new URL(request.url()).hostname.includes("evil")) foreign.push(request.url());
  });
  try {
    // Both become the same-origin pathname `//evil.com`, i.e. `fetch("//evil.com/v1/...")`.
    for (const raw of ["/.//evil.com", "/%2e//evil.com"]) {
      await page.goto(`${session.server.url}/?base=${encodeURIComponent(raw)}`);
      assert.equal(await text(page, "#banner"), `Ignored ?base=${raw}: only an API path on this server is allowed. Using /api/runflow.`);
      assert.equal(await text(page, "#footer-base"), "API root: /api/runflow");
      await page.waitForFunction(() => document.getElementById("backend").dataset.state !== "checking");
    }
    assert.deepEqual(foreign, []);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("markup in a prompt or in server text stays inert text", async () => {
  const evil = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`;
  const mock = await createScenario(session.server.url, {
    final_status: "failed",
    failure: { code: "PROVIDER_ERROR", message: `<img src=y onerror="window.__xss=3">` },
  });
  const clean = await createScenario(session.server.url);
  const { context, page, problems } = await openPage(session.browser);
  const injected = () =>
    page.evaluate(() => ({
      flag: window.__xss ?? null,
      imgs: document.querySelectorAll('img[src="x"], img[src="y"]').length,
      scripts: [...document.scripts].filter((s) => s.textContent.includes("__xss")).length,
    }));
  try {
    // A successful run with the prompt enhanced, so the server echoes it back as well.
    await page.goto(pageUrl(session.server.url, clean));
    await page.check("#enhance");
    await runEdit(page, evil);
    await waitForResult(page);
    assert.ok((await text(page, "#facts")).includes(evil));
    assert.ok((await text(page, "#facts")).includes(`${evil}, highly detailed`));
    assert.equal(await page.locator(".history-prompt").first().textContent(), evil);

    // A failed run whose server message is markup.
    await page.goto(pageUrl(session.server.url, mock));
    await runEdit(page, evil);
    await page.waitForSelector("#alert:not([hidden])", { timeout: 15_000 });
    assert.match(await text(page, "#alert-server"), /<img src=y onerror=/);

    await page.reload();
    await page.waitForSelector(".history-item");
    assert.equal(await page.locator(".history-item").count(), 2);
    await screenshot(page, "23-xss-inert", { fullPage: true });
    assert.deepEqual(await injected(), { flag: null, imgs: 0, scripts: 0 });
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("the download fallback opens only http(s), blob: and data:image/ links", async () => {
  const { context, page, problems } = await openPage(session.browser);
  const opened = [];
  context.on("page", (popup) => opened.push(popup.url()));
  try {
    await page.addInitScript(() => {
      localStorage.setItem(
        "kontext-studio.history.v1",
        JSON.stringify([
          {
            id: "0123456789abcdef",
            baseUrl: "/api/runflow",
            prompt: "stored by someone else",
            options: { num_images: 2, output_format: "png" },
            status: "succeeded",
            outputs: [
              { url: "javascript:window.__pwned=1//x.png", width: 64, height: 64, content_type: "image/png" },
              { url: " JaVaScript:window.__pwned=2//x.png", width: 64, height: 64, content_type: "image/png" },
            ],
            startedAt: Date.now() - 5000,
            completedAt: Date.now(),
            steps: { done: 5000 },
          },
        ]),
      );
    });
    await page.goto(session.server.url);
    await page.locator(".history-open").first().click();
    await page.waitForSelector("#downloads button");
    for (const index of [0, 1]) {
      await page.locator("#downloads button").nth(index).click();
      await page.waitForFunction(() => ["error", "info"].includes(document.getElementById("download-message").dataset.tone));
      assert.match(await text(page, "#download-message"), /not a web link the page can open/);
      assert.equal(await page.getAttribute("#download-message", "data-tone"), "error");
      await page.evaluate(() => (document.getElementById("download-message").dataset.tone = ""));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(await page.evaluate(() => window.__pwned ?? null), null);
    assert.deepEqual(opened, []);
    // The page's CSP already refuses to fetch or show these; that is logged, and fine.
    assert.deepEqual(problems.filter((p) => !/Content Security Policy/.test(p)), []);
  } finally {
    await context.close();
  }
});
