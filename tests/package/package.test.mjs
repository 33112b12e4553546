// The npm package as users get it: packed with `npm pack`, installed from the tarball into each
// example in a temporary folder, type-checked (including lines that must not compile), built with
// Vite, and run end to end against the dev server's mock in Chromium and in Node.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { ROOT, launchBrowser, startServer, writeFixtures } from "../e2e/harness.mjs";
import { VECTORS } from "../signature-vectors.mjs";

const run = promisify(execFile);
const npm = (cwd, ...args) => run("npm", [...args, "--no-audit", "--no-fund", "--loglevel=error"], { cwd, maxBuffer: 1 << 24 });

// The browser build at the top, the server build (runflow-kontext/server and the Node entry's)
// under server/ with its loaders and handlers; each build has its own copy of the JS edge snippet,
// the server build also its server-edge snippet.
const EXPECTED_FILES = [
  "CHANGELOG.md", "LICENSE-APACHE", "LICENSE-MIT", "README.md", "durable.js", "index.js", "node.d.ts", "node.js", "orchestrate.js", "package.json", "react.d.ts", "react.js",
  "runflow_kontext.d.ts", "runflow_kontext.js", "runflow_kontext_bg.wasm",
  "server/handlers.js", "server/index.d.ts", "server/index.js", "server/workerd.js",
  "server/runflow_kontext_server.d.ts", "server/runflow_kontext_server.js",
  "server/runflow_kontext_server_bg.wasm", "server/runflow_kontext_server_bg.wasm.d.ts",
  "server/snippets/runflow-kontext-8de8267591aa868e/js/edge.js",
  "server/snippets/runflow-kontext-8de8267591aa868e/js/server-edge.js",
  "snippets/runflow-kontext-8de8267591aa868e/js/edge.js",
];

let work;
let tarball;

before(async () => {
  work = await mkdtemp(join(tmpdir(), "kontext-package-"));
  const { stdout } = await npm(join(ROOT, "pkg"), "pack", "--json", "--pack-destination", work);
  const [packed] = JSON.parse(stdout);
  tarball = join(work, packed.filename);
  const files = packed.files.map((f) => f.path).sort();
  const snippet = files.find((f) => f.startsWith("snippets/"));
  // The snippet folder's hash is wasm-bindgen's: map the expected names onto the packed one.
  const serverDir = files.find((f) => f.startsWith("server/snippets/"))?.split("/").slice(0, 3).join("/");
  const actual = (f) =>
    f.startsWith("snippets/") ? snippet : f.startsWith("server/snippets/") ? f.replace(/^server\/snippets\/[^/]+/, serverDir) : f;
  assert.deepEqual(files, EXPECTED_FILES.map(actual).sort());
  assert.match(snippet, /^snippets\/runflow-kontext-[0-9a-f]+\/js\/edge\.js$/);
  console.log(`# tarball ${packed.filename}: ${packed.size} bytes packed, ${packed.unpackedSize} unpacked, ${files.length} files`);
});

after(() => rm(work, { recursive: true, force: true }));

async function example(name) {
  const dir = join(work, name);
  await cp(join(ROOT, "examples", name), dir, { recursive: true, filter: (src) => !/node_modules|dist/.test(src) });
  await npm(dir, "install", tarball);
  return dir;
}

/**
 * Installs example `name` from the tarball, type-checks it (tsc fails if any @ts-expect-error
 * line compiles), builds it with Vite, serves its dist/ from the dev server, and runs
 * `body(page, { dir, url })` in Chromium; the page must throw nothing.
 */
async function withBuiltExample(name, body) {
  const dir = await example(name);
  await run(join(dir, "node_modules/.bin/tsc"), ["--noEmit", "-p", dir]);
  await run(join(dir, "node_modules/.bin/vite"), ["build", "--logLevel", "error"], { cwd: dir });
  const server = await startServer({ WWW_DIR: join(dir, "dist") });
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await body(page, { dir, url: server.url });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
}

test("the Vite + TypeScript example type-checks, rejects wrong types, builds and edits in Chromium", async () => {
  await withBuiltExample("vite-app", async (page, { dir, url }) => {
    assert.ok((await stat(join(dir, "dist/index.html"))).isFile());
    await page.goto(url);
    await page.click("#run");
    await page.waitForFunction(() => {
      const img = document.getElementById("result");
      return !img.hidden && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 20_000 });
    assert.equal(await page.textContent("#status"), "succeeded");
  });
});

test("the React + Vite example (useKontextRun) type-checks, builds and edits in Chromium", async () => {
  await withBuiltExample("react-vite", async (page, { url }) => {
    const statuses = [];
    await page.exposeFunction("reportStatus", (status) => statuses.push(status));
    await page.goto(url);
    await page.waitForSelector("#status");
    await page.evaluate(() => {
      const status = document.getElementById("status");
      new MutationObserver(() => window.reportStatus(status.textContent)).observe(status, { childList: true, subtree: true, characterData: true });
    });
    await page.click("#run");
    await page.waitForFunction(() => {
      const img = document.getElementById("result");
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 20_000 });
    assert.equal(await page.textContent("#status"), "succeeded");
    assert.deepEqual(statuses.slice(0, 1), ["starting"], JSON.stringify(statuses));
    assert.ok(statuses.includes("queued"), JSON.stringify(statuses));
  });
});

test("the Node example edits a file against the mock", async () => {
  const dir = await example("node-script");
  const { sunset, dir: fixtures } = writeFixtures();
  const server = await startServer();
  try {
    const { stdout, stderr } = await run(process.execPath, ["edit.mjs", sunset, "make it snow"], {
      cwd: dir,
      env: { ...process.env, RUNFLOW_BASE_URL: `${server.url}/api/runflow`, RUNFLOW_API_KEY: "rf_test_node" },
    });
    assert.match(stdout.trim(), /^http:\/\/127\.0\.0\.1:\d+\/__mock\/files\/\S+\.jpg\?/);
    assert.match(stderr, /succeeded/);
  } finally {
    await server.stop();
    await rm(fixtures, { recursive: true, force: true });
  }
});

test("the packed server entry holds to the signature vectors in Node", async () => {
  const dir = join(work, "vectors");
  await cp(join(ROOT, "tests/signature-vectors.mjs"), join(dir, "vectors.mjs"));
  await npm(dir, "init", "-y");
  await npm(dir, "install", tarball);
  const script = `
    import { verifyCallbackSignature, receiveCallback } from "runflow-kontext/server";
    import { VECTORS } from "./vectors.mjs";
    const verdicts = [];
    for (const [body, header, secrets] of VECTORS) {
      const headers = header === undefined ? {} : { "runflow-signature": header };
      const received = await receiveCallback(new Request("http://x/cb", { method: "POST", headers, body }), { secrets })
        .then(() => true, (error) => (error.code === "invalid_signature" ? false : error.code));
      verdicts.push([verifyCallbackSignature(body, header, secrets), verifyCallbackSignature(Buffer.from(body), header, secrets), received]);
    }
    console.log(JSON.stringify(verdicts));`;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: dir });
  const verdicts = JSON.parse(stdout);
  VECTORS.forEach(([, , , valid, what], n) => assert.deepEqual(verdicts[n], [valid, valid, valid], what));
});
