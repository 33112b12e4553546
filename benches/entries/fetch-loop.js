// One import + one run call: the hand-written floor.
import { fetchLoopRun } from "../floor.js";

fetchLoopRun("/api/runflow", { prompt: "make it snow", image_url: "https://example.com/street.jpg" }).then((run) =>
  console.log(run.output.outputs[0].url),
);
