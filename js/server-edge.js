// The server build's I/O helpers for the wasm side: reading bodies under a cap, and warnings. Runtime-neutral (Node 20, Workers, Deno, Bun): only web APIs.

/**
 * The whole body of `stream` (a ReadableStream, or null for none) as bytes, or undefined as soon
 * as it holds more than `max` bytes (the rest is not read: the stream is cancelled).
 */
export async function readCapped(stream, max) {
  if (!stream) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

const warned = new Set();

/** Prints `message` once per process: a misconfiguration is worth one line, not one per request. */
export function warnOnce(message) {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(`runflow-kontext/server: ${message}`);
}

/** Reports what an `onLog` or `authenticate` hook threw, without stopping the call. */
export function reportHookError(what, error) {
  console.error(`runflow-kontext/server: ${what} threw`, error);
}
