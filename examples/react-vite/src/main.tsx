// A React + Vite page: one edit of a bundled sample through a same-origin proxy, its state from
// useKontextRun (the client's run store under useSyncExternalStore).
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import init, { KontextClient } from "runflow-kontext";
import { useKontextRun } from "runflow-kontext/react";
import sampleUrl from "./sample.png";

await init();
const client = new KontextClient({ baseUrl: "/api/runflow" });

function Editor() {
  const [prompt, setPrompt] = useState("make it look like a watercolour");
  const edit = useKontextRun(client);
  // Reading the sample comes before the store hears of the edit: a second click meanwhile
  // would start (and pay for) a second run.
  const [reading, setReading] = useState(false);
  const [readError, setReadError] = useState("");
  const busy = reading || !["idle", "succeeded", "partial_succeeded", "failed", "canceled", "stopped", "error"].includes(edit.status);
  const start = async () => {
    setReading(true);
    setReadError("");
    try {
      const response = await fetch(sampleUrl);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const image = await response.blob();
      // The state shows a failure too: nothing to do with the rejection here.
      edit.start({ prompt, image, output_format: "png" }).catch(() => {});
    } catch (error) {
      setReadError(`could not read the sample: ${error}`);
    } finally {
      setReading(false);
    }
  };
  const url = edit.run?.output?.outputs[0]?.url;
  return (
    <main>
      <h1>Kontext edit</h1>
      <label>
        Edit <input id="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} />
      </label>
      <button id="run" onClick={start} disabled={busy}>Edit the sample</button>
      {busy && <button id="cancel" onClick={edit.cancel}>Cancel</button>}
      <p id="status" role="status">
        {edit.status}
        {edit.upload && edit.status === "uploading" && ` ${Math.round((100 * edit.upload.loaded) / edit.upload.total)}%`}
        {edit.error && `: ${edit.error.code}`}
        {readError && ` (${readError})`}
      </p>
      {url && <img id="result" src={url} alt="The edited sample" />}
    </main>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <Editor />
  </StrictMode>,
);
