// Turns wasm-pack's output in pkg/ into the npm package: our package.json (version from
// Cargo.toml), the Node and server entries, README, changelog and licences. wasm-pack's own package.json
// cannot express conditional exports, so it is not used (the build runs with --no-pack).
import { readFile, writeFile, copyFile, rm } from "node:fs/promises";

const root = new URL("../", import.meta.url);
const pkg = new URL("pkg/", root);
const cargo = await readFile(new URL("Cargo.toml", root), "utf8");
const version = cargo.match(/^\[package\][^[]*?^version\s*=\s*"([^"]+)"/m)?.[1];
if (!version) throw new Error("no [package] version in Cargo.toml");

const manifest = JSON.parse(await readFile(new URL("js/package.json", root), "utf8"));
manifest.version = version;
await writeFile(new URL("package.json", pkg), JSON.stringify(manifest, null, 2) + "\n");
await copyFile(new URL("js/node.js", root), new URL("node.js", pkg));
// The browser entry (the glue's client made durable, with runMany, watch and createRunStore)
// and that orchestration, which the Node entry shares.
await copyFile(new URL("js/index.js", root), new URL("index.js", pkg));
await copyFile(new URL("js/orchestrate.js", root), new URL("orchestrate.js", pkg));
// Waits shared across tabs, and `persist` (both entries' KontextClient).
await copyFile(new URL("js/durable.js", root), new URL("durable.js", pkg));
// runflow-kontext/react: the hook over the run store, React left to the app.
await copyFile(new URL("js/react.js", root), new URL("react.js", pkg));
await copyFile(new URL("js/react.d.ts", root), new URL("react.d.ts", pkg));
await copyFile(new URL("js/node.d.ts", root), new URL("node.d.ts", pkg));
// The server entry's loaders (node:fs for Node, Deno and Bun; an imported module for Workers),
// its handlers and its types, next to the server build they load.
for (const file of ["index.js", "workerd.js", "handlers.js", "index.d.ts"]) {
  await copyFile(new URL(`js/server/${file}`, root), new URL(`server/${file}`, pkg));
}
for (const file of ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"]) {
  await copyFile(new URL(file, root), new URL(file, pkg));
}
// The server build's declarations name DOM types in its init signatures (RequestInfo,
// BufferSource, WebAssembly.*), which a Node project (lib ES2022 + @types/node, skipLibCheck off)
// does not have. Servers never call init themselves: local stand-ins keep the file checkable.
const serverTypes = new URL("server/runflow_kontext_server.d.ts", pkg);
await writeFile(
  serverTypes,
  `// Stand-ins for the DOM types of the init signatures below (see scripts/package.mjs).
type RequestInfo = string | Request;
type BufferSource = ArrayBufferView | ArrayBuffer;
declare namespace WebAssembly { interface Module {} interface Memory {} interface Table {} }

` + (await readFile(serverTypes, "utf8")),
);
// wasm-pack writes a catch-all .gitignore that would also hide files from `npm pack`.
await rm(new URL(".gitignore", pkg), { force: true });
await rm(new URL("server/.gitignore", pkg), { force: true });
