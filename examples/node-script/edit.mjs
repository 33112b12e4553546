// Edit a local picture from Node 20: node edit.mjs <image file> "<edit>"
// RUNFLOW_API_KEY is your key; RUNFLOW_BASE_URL defaults to the real API.
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { KontextClient, RunflowError } from "runflow-kontext";

const [file, prompt = "make it look like a watercolour"] = process.argv.slice(2);
if (!file) {
  console.error('usage: node edit.mjs <image file> "<edit>"');
  process.exit(2);
}
const types = { ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp" };
const image_url = `data:${types[extname(file).toLowerCase()] ?? "image/png"};base64,${(await readFile(file)).toString("base64")}`;

const client = new KontextClient({ baseUrl: process.env.RUNFLOW_BASE_URL, apiKey: process.env.RUNFLOW_API_KEY });
try {
  const run = await client.run({ prompt, image_url }, { onStatus: (r) => console.error(`run ${r.id}: ${r.status}`) });
  for (const image of run.output.outputs) console.log(image.url);
} catch (error) {
  if (!(error instanceof RunflowError)) throw error;
  console.error(`${error.code}: ${error.message}`);
  process.exit(1);
}
