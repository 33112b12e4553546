// One import + one run call: openai (images.edit, the closest job it offers).
import OpenAI from "openai";

new OpenAI({ apiKey: "sk-example", dangerouslyAllowBrowser: true }).images
  .edit({ model: "gpt-image-1", prompt: "make it snow", image: new File([new Uint8Array(8)], "street.png", { type: "image/png" }) })
  .then((result) => console.log(result.data[0].b64_json?.length));
