// Size: what a browser app ships for one import + one run call, gzip and brotli, for us and the
// peers, all bundled the same way (esbuild --bundle --minify, ESM, browser); and a twiggy
// breakdown of our .wasm by crate and by function, from an un-stripped copy of the same build.
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir, homedir } from "node:os";
import { join } from "node:path";
import { gzipSync, brotliCompressSync, constants } from "node:zlib";
import { build } from "esbuild";
import { BUNDLE_OPTIONS, shippedSize } from "../scripts/size.mjs";

const root = new URL("../", import.meta.url).pathname;
const here = new URL("./", import.meta.url).pathname;

const gzip = (buf) => gzipSync(buf, { level: 9 }).length;
const brotli = (buf) =>
  brotliCompressSync(buf, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_GENERIC,
      [constants.BROTLI_PARAM_SIZE_HINT]: buf.length,
    },
  }).length;
const measure = (buf) => ({ bytes: buf.length, gzip: gzip(buf), brotli: brotli(buf) });
const sum = (parts) => ({
  bytes: parts.reduce((a, p) => a + p.bytes, 0),
  gzip: parts.reduce((a, p) => a + p.gzip, 0),
  brotli: parts.reduce((a, p) => a + p.brotli, 0),
});

const PEERS = [
  { name: "runflow-kontext (ours)", entry: "ours.js", pkg: "runflow-kontext" },
  { name: "@fal-ai/client", entry: "fal.js", pkg: "@fal-ai/client" },
  { name: "replicate", entry: "replicate.js", pkg: "replicate" },
  { name: "openai", entry: "openai.js", pkg: "openai" },
  { name: "hand-written fetch loop (floor)", entry: "fetch-loop.js", pkg: null },
];

async function version(name) {
  if (!name) return null;
  const file = name === "runflow-kontext" ? join(root, "pkg/package.json") : join(root, "node_modules", name, "package.json");
  return JSON.parse(await readFile(file, "utf8")).version;
}

async function bundles() {
  const out = [];
  for (const peer of PEERS) {
    const result = await build({ ...BUNDLE_OPTIONS, entryPoints: [join(here, "entries", peer.entry)] });
    const js = Buffer.from(result.outputFiles[0].contents);
    const parts = [{ file: "bundle.js", ...measure(js) }];
    if (peer.entry === "ours.js") {
      // The .wasm is fetched next to the bundle (new URL(..., import.meta.url)); it ships as is.
      parts.push({ file: "runflow_kontext_bg.wasm", ...measure(await readFile(join(root, "pkg/runflow_kontext_bg.wasm"))) });
    }
    out.push({ name: peer.name, version: await version(peer.pkg), parts, total: sum(parts) });
  }
  // Every export bundled, as `make size` counts it against the budget.
  return { bundles: out, makeSize: await shippedSize() };
}

// ---- twiggy breakdown --------------------------------------------------------------------

const TWIGGY = join(homedir(), ".cargo/bin/twiggy");
const WASM_OPT = join(root, "node_modules/.bin/wasm-opt");
const FEATURES = [
  "--enable-bulk-memory", "--enable-reference-types", "--enable-nontrapping-float-to-int",
  "--enable-sign-ext", "--enable-mutable-globals", "--enable-multivalue",
];
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28, ...opts }).toString();

/** Which crate (or kind of item) an item of twiggy's list belongs to. Monomorphised generics
 * are counted where they are defined (`core::result::Result<T,E>::and_then` instantiated with our
 * closures counts as core), which understates our own share a little. */
function crateOf(name) {
  if (name.startsWith("data segment")) return "data segments (strings, tables)";
  if (name.startsWith('"function names"') || name.startsWith("custom section")) return "(custom sections)";
  if (/^(export |import |type\[|global\[|table\[|elem\[|memory\[)/.test(name)) return "wasm headers (types, imports, exports, tables)";
  // wasm-bindgen's export shims have our exported functions' bodies inlined into them.
  if (/^(kontextclient_|verifyCallbackSignature|__wbg_kontextclient)/.test(name)) return "runflow_kontext";
  if (/^(__wbg|__wbindgen|__externref|wasm_bindgen)/.test(name)) return "wasm_bindgen";
  if (/^code\[/.test(name)) return "(unnamed code)";
  if (/^(__multi3|memcmp|memcpy|memset|memmove|fmax|fmin|__rustc|__rust_)/.test(name)) return "compiler builtins / std shims";
  // `<A as B>::f` belongs to A's crate, unless A is a type parameter or a primitive: then B's.
  const inner = name.replace(/^</, "");
  let m = inner.match(/^(?:&(?:mut )?)?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)/);
  let crate = m?.[1];
  const prim = ["char", "str", "u8", "u16", "u32", "u64", "usize", "i32", "i64", "f64", "bool", "T", "F", "A", "B", "I", "S"];
  if (prim.includes(crate)) crate = inner.match(/ as ([A-Za-z_][A-Za-z0-9_]*)/)?.[1] ?? "core";
  if (!crate) return "(other)";
  crate = crate.replace(/\[.*$/, "");
  if (["core", "alloc", "std"].includes(crate) && /::fmt::|fmt\[|::fmt$|Formatter|format/.test(name)) return `${crate}::fmt`;
  return crate;
}

async function breakdown(shippedWasmBytes) {
  const dir = await mkdtemp(join(tmpdir(), "bench-twiggy-"));
  try {
    run("cargo", ["build", "--release", "--target", "wasm32-unknown-unknown", "--lib"]);
    run("wasm-bindgen", ["--keep-debug", "--target", "web", "--out-dir", dir, join(root, "target/wasm32-unknown-unknown/release/runflow_kontext.wasm")]);
    const unstripped = join(dir, "runflow_kontext_bg.wasm");
    // The same -Oz --converge as `make pkg`, but keeping the name section (-g) so twiggy can name functions.
    const named = join(dir, "named.wasm");
    run(WASM_OPT, ["-Oz", "--converge", "-g", ...FEATURES, unstripped, "-o", named]);
    const items = JSON.parse(run(TWIGGY, ["top", "-f", "json", named]));
    const retained = JSON.parse(run(TWIGGY, ["top", "--retained", "-f", "json", named]));
    const code = items.filter((i) => crateOf(i.name) !== "(custom sections)");
    const codeBytes = code.reduce((a, i) => a + i.shallow_size, 0);
    const byCrate = {};
    for (const item of code) {
      const crate = crateOf(item.name);
      byCrate[crate] ??= { crate, bytes: 0, items: 0 };
      byCrate[crate].bytes += item.shallow_size;
      byCrate[crate].items += 1;
    }
    // Fold the crumbs (section headers, a stray helper) into one row.
    for (const [key, c] of Object.entries(byCrate)) {
      if (c.bytes < 64 && key !== "(other)") {
        byCrate["(other)"] ??= { crate: "(other)", bytes: 0, items: 0 };
        byCrate["(other)"].bytes += c.bytes;
        byCrate["(other)"].items += c.items;
        delete byCrate[key];
      }
    }
    const crates = Object.values(byCrate)
      .sort((a, b) => b.bytes - a.bytes)
      .map((c) => ({ ...c, share: c.bytes / codeBytes }));
    // Groups that a size plan can act on (an item counts in the first group it matches).
    const GROUPS = [
      ["callback signatures (HMAC-SHA256, verifyCallbackSignature)", /sha2|digest|hmac|subtle|verifyCallbackSignature|callback::/],
      ["formatting (core/alloc/std fmt, Debug/Display impls)", /fmt|Formatter|format|Debug|Display|pad_integral|do_count_chars/],
      ["string searching and slicing panics (str::pattern)", /str::pattern|StrSearcher|slice_error_fail|MultiCharEq|split|str::.*find|contains/],
      ["async edge (futures, timers, fetch, closures, promise glue)", /\{\{closure\}\}|futures|gloo|Transport::send|wasm_bindgen::convert::closures|JsFuture|Aborted|AbortOnDrop|Call::sleep|Waker|task::/],
      ["data segments (messages, tables)", /^data segment/],
      ["allocator (talc)", /talc|__rust_(alloc|dealloc|realloc)|__rustc/],
      ["JS bridge (wasm-bindgen shims, headers, js_sys)", /^(kontextclient_|__wbg|__wbindgen|__externref|wasm_bindgen|js_sys|web_sys|export |import |type\[|global\[|table\[|elem\[)/],
    ];
    const groups = GROUPS.map(([name]) => ({ name, bytes: 0 }));
    let rest = 0;
    for (const item of code) {
      const g = GROUPS.findIndex(([, re]) => re.test(item.name));
      if (g >= 0) groups[g].bytes += item.shallow_size;
      else rest += item.shallow_size;
    }
    groups.push({ name: "the rest (validation, normalisation, errors, sync core)", bytes: rest });
    const top = code.slice(0, 25).map((i) => ({ name: i.name.replace(/::h[0-9a-f]{16}$/, "").replace(/\[[0-9a-f]{16}\]/g, ""), bytes: i.shallow_size, share: i.shallow_size / codeBytes }));
    const exports = retained
      .filter((i) => i.name.startsWith('export "') && !/memory|__wbindgen|__externref/.test(i.name))
      .map((i) => ({ name: i.name, retainedBytes: i.retained_size }));

    const stripped = join(dir, "stripped.wasm");
    run(WASM_OPT, ["-Oz", "--converge", ...FEATURES, "--strip-debug", "--strip-producers", named, "-o", stripped]);
    const base = measure(await readFile(stripped));

    return {
      method: "cargo build --release --target wasm32-unknown-unknown --lib; wasm-bindgen --keep-debug --target web; wasm-opt -Oz --converge -g (the make pkg flags, names kept); twiggy top",
      unstrippedBytes: (await stat(unstripped)).size,
      namedBytes: (await stat(named)).size,
      shippedWasmBytes,
      codeBytes,
      crates,
      groups,
      top,
      exports,
      rebuiltStripped: base,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function sizes() {
  const b = await bundles();
  const twiggy = await breakdown(b.makeSize.wasm.bytes);
  return { ...b, twiggy };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await sizes(), null, 2));
}
