// One import + one run call: runflow-kontext as a browser app ships it (this JS + the .wasm).
import init, { KontextClient } from "../../pkg/runflow_kontext.js";

await init();
new KontextClient({ baseUrl: "/api/runflow" })
  .run({ prompt: "make it snow", image_url: "https://example.com/street.jpg" })
  .then((run) => console.log(run.output.outputs[0].url));
