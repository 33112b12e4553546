// The browser client, talking to this server's proxy at /api/runflow: the page never holds a key.
import init, { KontextClient, RunflowError } from "runflow-kontext";

await init(); // fetches runflow_kontext_bg.wasm next to the glue
const client = new KontextClient({ baseUrl: "/api/runflow" });

const $ = (id) => document.getElementById(id);
const button = $("edit");
button.disabled = false;
button.addEventListener("click", async () => {
  const status = $("status");
  const result = $("result");
  result.hidden = true;
  button.disabled = true;
  try {
    // A File from the input, or the sample as a Blob: inline when small, else uploaded.
    const image = $("file").files[0] ?? (await (await fetch("/sample.png")).blob());
    const run = await client.run(
      { prompt: $("prompt").value, image, output_format: "png" },
      {
        onStatus: (r) => (status.textContent = r.status),
        onUploadProgress: ({ loaded, total }) => (status.textContent = `sending ${Math.round((100 * loaded) / total)}%`),
      },
    );
    result.src = run.output?.outputs[0]?.url ?? "";
    result.hidden = false;
    status.textContent = run.status;
  } catch (error) {
    status.textContent = error instanceof RunflowError ? `${error.code}: ${error.message}` : String(error);
  } finally {
    button.disabled = false;
  }
});
