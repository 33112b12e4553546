// A Vite + TypeScript page: edit a bundled sample picture through a same-origin proxy.
import init, { KontextClient, RunflowError, type Run } from "runflow-kontext";
import sampleUrl from "./sample.png";

await init();
const client = new KontextClient({ baseUrl: "/api/runflow" });

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $<HTMLParagraphElement>("status");

$<HTMLButtonElement>("run").addEventListener("click", async () => {
  try {
    const run: Run = await client.run(
      // A Blob (or a File from an <input type=file>) goes as it is: inline when small, else uploaded.
      { prompt: $<HTMLInputElement>("prompt").value, image: await (await fetch(sampleUrl)).blob(), output_format: "png" },
      {
        onStatus: (r) => (status.textContent = r.status),
        onUploadProgress: ({ loaded, total }) => (status.textContent = `sending ${Math.round((100 * loaded) / total)}%`),
      },
    );
    const result = $<HTMLImageElement>("result");
    result.src = run.output?.outputs[0]?.url ?? "";
    result.hidden = false;
  } catch (error) {
    status.textContent = error instanceof RunflowError ? `${error.code}: ${error.message}` : String(error);
  }
});
