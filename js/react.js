// runflow-kontext/react: the run store (client.createRunStore()) as a React hook. React is the
// app's own (a peer dependency): nothing of it is bundled here.
import { useEffect, useState, useSyncExternalStore } from "react";

/** Each store's pending stop, which an effect set up again at once clears. */
const stops = new WeakMap();

/**
 * One edit's state and its controls: `{ status, run, error, upload, start, cancel, reset }`.
 * The store is made once per component and client; unmounting stops following the edit under
 * way (the run itself goes on: Runflow has no public cancel).
 */
export function useKontextRun(client) {
  // State, not a memo: Fast Refresh keeps state but recomputes memos, which would drop the edit.
  // Another client gets a store of its own, set while rendering (React's pattern for this).
  const [owned, setOwned] = useState(() => ({ client, store: client.createRunStore() }));
  let { store } = owned;
  if (owned.client !== client) {
    store = client.createRunStore();
    setOwned({ client, store });
  }
  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  useEffect(() => {
    // An effect torn down and set up again at once (StrictMode, Fast Refresh) keeps the edit:
    // only a teardown that stays one, an unmount, stops following it.
    clearTimeout(stops.get(store));
    return () => void stops.set(store, setTimeout(store.cancel));
  }, [store]);
  return { ...snapshot, start: store.start, cancel: store.cancel, reset: store.reset };
}
