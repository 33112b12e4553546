// `make size`: the bytes a page downloads for runflow-kontext, as an app ships them: the JS (the
// wasm-bindgen glue and its snippets, bundled and minified by esbuild, as Vite or webpack would)
// and the .wasm, each gzipped at level 9. Fails above the budget (bytes, first argument).
// `make bench` imports the same measure.
import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

const root = new URL("../", import.meta.url).pathname;

/** How JS is bundled wherever sizes are compared: esbuild, minified, ESM for browsers. */
export const BUNDLE_OPTIONS = {
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  write: false,
  logLevel: "silent",
};

/** `{ js, wasm, total }`, each `{ bytes, gzip }`: every export of the package, bundled. */
export async function shippedSize() {
  const bundle = await build({
    ...BUNDLE_OPTIONS,
    stdin: { contents: 'export * from "./pkg/index.js"; export { default } from "./pkg/index.js";', resolveDir: root },
  });
  const measure = (bytes) => ({ bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
  const js = measure(Buffer.from(bundle.outputFiles[0].contents));
  const wasm = measure(await readFile(`${root}pkg/runflow_kontext_bg.wasm`));
  return { js, wasm, total: { bytes: js.bytes + wasm.bytes, gzip: js.gzip + wasm.gzip } };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const budget = Number(process.argv[2] ?? 60000);
  const { js, wasm, total } = await shippedSize();
  const row = (what, { bytes, gzip }) => console.log(`${what.padEnd(44)} ${String(bytes).padStart(9)} ${String(gzip).padStart(9)}`);
  console.log(`${"what".padEnd(44)} ${"bytes".padStart(9)} ${"gzip".padStart(9)}`);
  row("JS: glue + snippets, bundled and minified", js);
  row("pkg/runflow_kontext_bg.wasm", wasm);
  row("total", total);
  console.log(`budget ${budget}: ${total.gzip <= budget ? `${budget - total.gzip} bytes to spare` : "over"}`);
  if (total.gzip > budget) {
    console.error(`size: over budget by ${total.gzip - budget} bytes`);
    process.exit(1);
  }
}
