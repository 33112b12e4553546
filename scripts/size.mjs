// `make size`: the bytes a page downloads for runflow-kontext, as an app ships them: the JS (the
// wasm-bindgen glue and its snippets, bundled and minified by esbuild, as Vite or webpack would)
// and the .wasm, each gzipped at level 9. Fails above the budget (bytes, first argument).
import { build } from "esbuild";
import { readFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";

const root = new URL("../", import.meta.url).pathname;
const budget = Number(process.argv[2] ?? 61440);
const gzip = (bytes) => gzipSync(bytes, { level: 9 }).length;

const bundle = await build({
  stdin: { contents: 'export * from "./pkg/runflow_kontext.js"; export { default } from "./pkg/runflow_kontext.js";', resolveDir: root },
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  write: false,
  logLevel: "silent",
});
const js = Buffer.from(bundle.outputFiles[0].contents);
const wasm = await readFile(`${root}pkg/runflow_kontext_bg.wasm`);
const rows = [
  ["JS: glue + snippets, bundled and minified", js.length, gzip(js)],
  ["pkg/runflow_kontext_bg.wasm", wasm.length, gzip(wasm)],
];
const total = rows.reduce((sum, [, , gz]) => sum + gz, 0);
const pad = (text, n) => String(text).padStart(n);
console.log(`${"what".padEnd(44)} ${pad("bytes", 9)} ${pad("gzip", 9)}`);
for (const [what, bytes, gz] of rows) console.log(`${what.padEnd(44)} ${pad(bytes, 9)} ${pad(gz, 9)}`);
console.log(`${"total".padEnd(44)} ${pad(rows.reduce((s, [, b]) => s + b, 0), 9)} ${pad(total, 9)}   (budget ${budget})`);
if (total > budget) {
  console.error(`size: over budget by ${total - budget} bytes`);
  process.exit(1);
}
