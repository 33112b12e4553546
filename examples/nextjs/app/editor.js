"use client";
// The browser client, talking to this app's own proxy (app/api/runflow/[...path]/route.js): the
// key stays on the server. `init()` fetches the .wasm, which the bundler emits as an asset.
import { useEffect, useMemo, useRef, useState } from "react";
import init, { KontextClient, RunflowError } from "runflow-kontext";

export default function Editor() {
  const client = useRef(null);
  const [ready, setReady] = useState(false);
  const [prompt, setPrompt] = useState("make it look like a watercolour");
  const [file, setFile] = useState(null);
  const [status, setStatus] = useState("");
  const [result, setResult] = useState(null);
  const preview = useMemo(() => (file ? URL.createObjectURL(file) : "/sample.png"), [file]);
  useEffect(() => () => preview.startsWith("blob:") && URL.revokeObjectURL(preview), [preview]);

  useEffect(() => {
    init().then(() => {
      client.current = new KontextClient({ baseUrl: "/api/runflow" });
      setReady(true);
    }, (error) => setStatus(`could not load the client: ${error}`));
  }, []);

  async function edit() {
    setResult(null);
    try {
      // A File (picked or dropped) or a Blob goes as it is: inline when small, else uploaded.
      const image = file ?? (await (await fetch("/sample.png")).blob());
      const run = await client.current.run(
        { prompt, image, output_format: "png" },
        {
          onStatus: (r) => setStatus(r.status),
          onUploadProgress: ({ loaded, total }) => setStatus(`sending ${Math.round((100 * loaded) / total)}%`),
        },
      );
      setResult(run.output?.outputs[0]?.url ?? null);
      setStatus(run.status);
    } catch (error) {
      setStatus(error instanceof RunflowError ? `${error.code}: ${error.message}` : String(error));
    }
  }

  return (
    <div
      onDragOver={(e) => e.preventDefault()}
      onDrop={(e) => {
        e.preventDefault();
        if (e.dataTransfer.files[0]) setFile(e.dataTransfer.files[0]);
      }}
    >
      <p>
        <label>
          Picture (or drop one here; the sample otherwise){" "}
          <input type="file" accept="image/*" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
        </label>
      </p>
      <img src={preview} alt="The picture to edit" width={256} />
      <p>
        <label>
          Prompt <input id="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} size={40} />
        </label>{" "}
        <button id="edit" type="button" disabled={!ready} onClick={edit}>
          Edit
        </button>
      </p>
      <p id="status" role="status">{status}</p>
      {result && <img id="result" src={result} alt="The edited picture" width={256} />}
    </div>
  );
}
