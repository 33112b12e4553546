// Types of runflow-kontext/react.
import type { KontextClient, KontextInput, Run, RunOptions, RunStoreSnapshot } from "./runflow_kontext.js";

/** What `useKontextRun` returns: the store's snapshot and its controls (stable across renders). */
export interface KontextRun<Input extends object = KontextInput> extends RunStoreSnapshot {
  /** Runs an edit, replacing one under way; rejects as `client.run` does (the state shows it too). */
  start(input: Input, options?: RunOptions): Promise<Run>;
  /** Stops following the edit under way, if any (its status becomes "stopped"; the run goes on). */
  cancel(): void;
  /** Back to "idle". */
  reset(): void;
}

/** One edit's state for a component, over `client.createRunStore()` and `useSyncExternalStore`. */
export function useKontextRun<Input extends object = KontextInput>(client: KontextClient<Input>): KontextRun<Input>;
