/** @type {import("next").NextConfig} */
export default {
  // The package's Node entries (`runflow-kontext` under the "node" condition, and
  // `runflow-kontext/server`) read their .wasm with node:fs from next to themselves. Bundled into
  // .next/server, they would look for it there; left external, Node loads them from node_modules
  // as any Node script does. The browser bundle is unaffected: it takes the web build and its .wasm
  // as an asset.
  serverExternalPackages: ["runflow-kontext"],
};
