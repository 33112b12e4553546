// One import + one run call: replicate (create prediction + wait).
import Replicate from "replicate";

new Replicate({ auth: "r8_example" })
  .run("black-forest-labs/flux-kontext-pro", { input: { prompt: "make it snow", input_image: "https://example.com/street.jpg" } })
  .then((output) => console.log(String(output)));
