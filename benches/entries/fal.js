// One import + one run call: @fal-ai/client (queue submit + status polling + result).
import { fal } from "@fal-ai/client";

fal
  .subscribe("fal-ai/flux-pro/kontext", { input: { prompt: "make it snow", image_url: "https://example.com/street.jpg" } })
  .then((result) => console.log(result.data.images[0].url));
