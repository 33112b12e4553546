// Following runs over time: cancel mid-run, history across a reload, and a run still going when
// the page reloaded picked up again by its id.

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until the page knows the run's id (the create was answered). */
async function waitForRunId(page) {
  await page.waitForFunction(() => document.getElementById("run-id-line").textContent.includes("run "));
  return (await text(page, "#run-id-line")).replace(/^· run /, "");
}

test("cancel mid-run stops waiting, says the run may still be billed, and keeps it in history", async () => {
  await withStudioPage(session, { lifecycle_ms: [300, 300, 30000] }, async ({ page, mock }) => {
    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "make the sky stormy");
    await page.click("#run");
    const runId = await waitForRunId(page);
    assert.equal(await page.isVisible("#cancel"), true);
    assert.match(await text(page, "#cancel-note"), /may still finish and be billed/);
    await page.waitForFunction(() => document.getElementById("timeline").dataset.status === "running", null, { timeout: 10_000 });
    assert.equal(await page.getAttribute('#timeline li[data-step="running"]', "data-state"), "active");
    assert.equal(await page.isDisabled("#run"), true);
    await screenshot(page, "10-running");

    await page.click("#cancel");
    await page.waitForSelector("#alert:not([hidden])");
    assert.equal(await text(page, "#alert-title"), "Stopped waiting");
    assert.match(await text(page, "#alert-text"), /Runflow has no public cancel, so the run may still finish and be billed/);
    assert.equal(await page.getAttribute("#alert", "data-tone"), "info");
    assert.equal(await page.isEnabled("#run"), true);
    assert.equal(await page.isHidden("#cancel"), true);
    assert.equal(await text(page, '#timeline li[data-step="done"] .step-name'), "Stopped");

    const item = page.locator(`.history-item[data-run-id="${runId}"]`);
    assert.equal(await item.getAttribute("data-status"), "stopped");
    assert.equal(await item.locator("button", { hasText: "Check again" }).count(), 1);
    await screenshot(page, "11-canceled");

    // No more polling once canceled.
    const gets = await mock.count("get");
    await sleep(1500);
    assert.equal(await mock.count("get"), gets, "the page kept polling after cancel");

    // Nothing is picked up again after a reload: the person chose to stop.
    await page.reload();
    await page.waitForSelector(`.history-item[data-run-id="${runId}"]`);
    await sleep(700);
    assert.equal(await mock.count("get"), gets);
    assert.equal(await page.isHidden("#run-status"), true);
  });
});

test("history survives a reload, shows the result again and reuses the settings", async () => {
  await withStudioPage(session, {}, async ({ page }) => {
    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "turn it into a watercolour");
    await page.click("label[for=num-2]");
    await page.click("label[for=fmt-png]");
    await page.selectOption("#aspect", "1:1");
    await page.fill("#seed", "1234");
    await page.click("#run");
    await waitForResult(page);
    const runId = await waitForRunId(page);

    await page.reload();
    await page.waitForSelector(".history-item");
    assert.equal(await page.locator(".history-item").count(), 1);
    const item = page.locator(".history-item").first();
    assert.equal(await item.getAttribute("data-run-id"), runId);
    assert.equal(await item.getAttribute("data-status"), "succeeded");
    assert.equal(await item.locator(".history-prompt").textContent(), "turn it into a watercolour");
    assert.match(await item.locator(".history-meta").textContent(), /done .*2 × PNG · 1:1 · seed 1234/);
    await page.waitForFunction(() => {
      const img = document.querySelector(".history-item img");
      return img.complete && img.naturalWidth > 0 && img.src.includes("/__mock/files/");
    });
    // The last seed is remembered too.
    assert.equal(await page.isEnabled("#reuse-seed"), true);
    await screenshot(page, "12-history-after-reload", { fullPage: true });

    // Open it: the comparison is back, with both outputs and their downloads.
    await item.locator(".history-open").click();
    await waitForResult(page);
    assert.equal(await page.locator("#downloads button").count(), 2);
    assert.match(await text(page, "#facts"), new RegExp(`Run id${runId}`));
    assert.match(await page.getAttribute("#compare-before", "src"), /^data:image\/jpeg;base64,/);

    // Reuse puts prompt and options back into the form.
    await item.locator("button", { hasText: "Reuse" }).click();
    assert.equal(await page.inputValue("#prompt"), "turn it into a watercolour");
    assert.equal(await page.isChecked("#num-2"), true);
    assert.equal(await page.isChecked("#fmt-png"), true);
    assert.equal(await page.inputValue("#aspect"), "1:1");
    assert.equal(await page.inputValue("#seed"), "1234");
    assert.match(await text(page, "#cost"), /\$0\.08/);

    await page.click("#clear-history");
    assert.equal(await page.locator(".history-item").count(), 0);
    await page.reload();
    assert.equal(await page.isVisible("#history-empty"), true);
  });
});

test("a run still going when the page reloads is picked up again by its id", async () => {
  await withStudioPage(session, { lifecycle_ms: [300, 300, 2500] }, async ({ page, mock }) => {
    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "add a rainbow");
    await page.click("#run");
    const runId = await waitForRunId(page);

    await page.reload();
    await page.waitForSelector("#resume-note:not([hidden])");
    assert.match(await text(page, "#resume-note"), /Picked up again after the page reloaded/);
    assert.match(await text(page, "#run-id-line"), new RegExp(runId));
    assert.equal(await page.isVisible("#cancel"), true);
    await screenshot(page, "13-picked-up");
    await waitForResult(page);

    assert.equal(await mock.count("create"), 1, "the run was not created twice");
    assert.equal(await page.getAttribute(`.history-item[data-run-id="${runId}"]`, "data-status"), "succeeded");
    assert.equal(await page.locator(".history-item").count(), 1);
    const afterSrc = await page.getAttribute("#compare-after", "src");
    assert.match(afterSrc, new RegExp(`/__mock/files/${runId}/0\\.jpg`));
    // The original came back from the history thumbnail.
    assert.match(await page.getAttribute("#compare-before", "src"), /^data:image\/jpeg;base64,/);
  });
});

test("corrupt history in localStorage is repaired or dropped, and editing still works", async () => {
  const mock = await createScenario(session.server.url);
  const { context, page, problems } = await openPage(session.browser);
  try {
    await page.addInitScript((base) => {
      localStorage.setItem(
        "kontext-studio.history.v1",
        JSON.stringify([
          // Still "running", but no steps, no API root, no prompt.
          { id: "a", status: "running" },
          // Options that are not an object.
          { id: "b", options: null },
          // Still running on this page's API root, without steps: followed again, and gone.
          { id: "c", status: "running", baseUrl: base },
          // Wrong types everywhere.
          { id: "d", status: "succeeded", prompt: 5, options: { output_format: 7, num_images: "x" }, outputs: [{ url: 3 }, null, "x"], steps: "x", input: 1, error: "x" },
          // Nothing to keep.
          null, 42, "x", { status: "running" }, { id: 7 },
        ]),
      );
    }, mock.base);
    await page.goto(pageUrl(session.server.url, mock));
    await page.waitForFunction(() => document.querySelector('.history-item[data-run-id="c"]')?.dataset.status === "gone", null, { timeout: 10_000 });
    assert.deepEqual(await page.locator(".history-item").evaluateAll((items) => items.map((li) => li.dataset.runId)), ["a", "b", "c", "d"]);
    assert.equal(await page.getAttribute('.history-item[data-run-id="a"]', "data-status"), "stopped");
    assert.match(await page.locator('.history-item[data-run-id="b"] .history-meta').textContent(), /1 × JPEG/);
    assert.match(await page.locator('.history-item[data-run-id="d"] .history-meta').textContent(), /done .*1 × JPEG/);
    assert.equal(await page.isEnabled("#run"), true);

    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "add a lighthouse");
    await page.click("#run");
    await waitForResult(page);
    const runId = await waitForRunId(page);
    assert.equal(await page.getAttribute(`.history-item[data-run-id="${runId}"]`, "data-status"), "succeeded");
    assert.equal(await page.isEnabled("#run"), true);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test("Remove or Clear history during a run does not put the run back when it stops", async () => {
  await withStudioPage(session, { lifecycle_ms: [300, 300, 30000] }, async ({ page, mock }) => {
    await page.setInputFiles("#file", session.fixtures.sunset);

    // Remove on the run being followed.
    await page.fill("#prompt", "make the sky stormy");
    await page.click("#run");
    const first = await waitForRunId(page);
    const item = page.locator(`.history-item[data-run-id="${first}"]`);
    await item.waitFor();
    await item.locator("button", { hasText: "Remove" }).click();
    await page.waitForFunction(() => !document.getElementById("run").disabled);
    await sleep(300);
    assert.equal(await page.locator(".history-item").count(), 0);
    assert.equal(await text(page, "#alert-title"), "Stopped waiting");

    // Clear history with a run being followed.
    await page.fill("#prompt", "add a rainbow");
    await page.click("#run");
    const second = await waitForRunId(page);
    await page.locator(`.history-item[data-run-id="${second}"]`).waitFor();
    await page.click("#clear-history");
    await page.waitForFunction(() => !document.getElementById("run").disabled);
    await sleep(300);
    assert.equal(await page.locator(".history-item").count(), 0);

    const gets = await mock.count("get");
    await page.reload();
    assert.equal(await page.isVisible("#history-empty"), true);
    await sleep(700);
    assert.equal(await mock.count("get"), gets, "a removed run was followed again after the reload");
  });
});

test("Check again while another run is in progress does not abort that run", async () => {
  await withStudioPage(session, { lifecycle_ms: [300, 300, 30000] }, async ({ page }) => {
    await page.setInputFiles("#file", session.fixtures.sunset);
    await page.fill("#prompt", "make the sky stormy");
    await page.click("#run");
    const stopped = await waitForRunId(page);
    await page.click("#cancel");
    await page.waitForSelector("#alert:not([hidden])");

    await page.fill("#prompt", "add a rainbow");
    await page.click("#run");
    await page.waitForFunction((id) => {
      const line = document.getElementById("run-id-line").textContent;
      return line.includes("run ") && !line.includes(id);
    }, stopped);
    const current = await waitForRunId(page);
    // Running until 30 s from now: no status update can overwrite the message checked below.
    await page.waitForFunction(() => document.getElementById("timeline").dataset.status === "running", null, { timeout: 10_000 });
    const checkAgain = page.locator(`.history-item[data-run-id="${stopped}"] button`, { hasText: "Check again" });
    await checkAgain.click();
    assert.equal(await text(page, "#status-line"), "Finish or cancel the current run first.");
    await sleep(500);
    assert.equal(await text(page, "#run-id-line"), `· run ${current}`);
    assert.equal(await page.isVisible("#cancel"), true);
    assert.equal(await page.isDisabled("#run"), true);
    assert.equal(await page.isHidden("#alert"), true);
    assert.notEqual(await page.getAttribute(`.history-item[data-run-id="${current}"]`, "data-status"), "stopped");

    // Once that run is canceled, Check again follows the stopped one.
    await page.click("#cancel");
    await page.waitForFunction(() => !document.getElementById("run").disabled);
    await checkAgain.click();
    await page.waitForSelector("#resume-note:not([hidden])");
    assert.match(await text(page, "#resume-note"), /Checking on this run again/);
    assert.equal(await text(page, "#run-id-line"), `· run ${stopped}`);
    await page.click("#cancel");
  });
});
