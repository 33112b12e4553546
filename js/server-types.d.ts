
/**
 * Checks a callback's `Runflow-Signature` header: HMAC-SHA256 of the raw body under any of the
 * secrets (two during rotation), compared in constant time. Pass the body exactly as received.
 * Servers receive callbacks, so this is in the Node entry, not in the browser build.
 */
export function verifyCallbackSignature(rawBody: string | Uint8Array | ArrayBuffer, signatureHeader: string | null | undefined, secretOrSecrets: string | readonly string[]): boolean;
