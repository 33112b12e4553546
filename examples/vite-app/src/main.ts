// A Vite + TypeScript page: edit a bundled sample picture through a same-origin proxy.
import init, { KontextClient, RunflowError, type Run } from "runflow-kontext";
import sampleUrl from "./sample.png";

await init();
const client = new KontextClient({ baseUrl: "/api/runflow" });

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLParagraphElement>("status");

async function asDataUri(url: string): Promise<string> {
  const blob = await (await fetch(url)).blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result as string);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

$<HTMLButtonElement>("run").addEventListener("click", async () => {
  try {
    const run: Run = await client.run(
      { prompt: $<HTMLInputElement>("prompt").value, image_url: await asDataUri(sampleUrl), output_format: "png" },
      { onStatus: (r) => (status.textContent = r.status) },
    );
    const result = $<HTMLImageElement>("result");
    result.src = run.output?.outputs[0]?.url ?? "";
    result.hidden = false;
  } catch (error) {
    status.textContent = error instanceof RunflowError ? `${error.code}: ${error.message}` : String(error);
  }
});
