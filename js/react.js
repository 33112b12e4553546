// runflow-kontext/react: the run store (client.createRunStore()) as a React hook. React is the
// app's own (a peer dependency): nothing of it is bundled here.
import { useEffect, useMemo, useSyncExternalStore } from "react";

/**
 * One edit's state and its controls: `{ status, run, error, upload, start, cancel, reset }`.
 * The store is made once per client; unmounting stops following the edit under way (the run
 * itself goes on: Runflow has no public cancel).
 */
export function useKontextRun(client) {
  const store = useMemo(() => client.createRunStore(), [client]);
  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  useEffect(() => () => store.cancel(), [store]);
  return { ...snapshot, start: store.start, cancel: store.cancel, reset: store.reset };
}
