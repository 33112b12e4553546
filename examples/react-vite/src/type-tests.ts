// Compile-time checks of runflow-kontext/react: every line under @ts-expect-error must fail.
import { KontextClient } from "runflow-kontext";
import { useKontextRun, type KontextRun } from "runflow-kontext/react";

export function useChecks(client: KontextClient) {
  const edit: KontextRun = useKontextRun(client);
  const status: "idle" | "starting" | "uploading" | "stopped" | "error" | string = edit.status;
  void edit.start({ prompt: "p", image_url: "https://x/a.png" }).then((run) => run.status);
  // @ts-expect-error: the prompt is required
  void edit.start({ image_url: "https://x/a.png" });
  // @ts-expect-error: not a status the store has
  const wrong: KontextRun["status"] = "uploaded";
  // @ts-expect-error: the hook takes a client
  useKontextRun("/api/runflow");
  return [status, wrong];
}
