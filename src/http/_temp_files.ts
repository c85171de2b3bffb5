/**
 * Request bodies spooled to temporary files, for the endpoints whose
 * pipeline needs a path (dequantization reads scales before data), and files
 * streamed back as response bodies.
 *
 * @module
 */
import { mkdtemp, open, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * Creates a private temporary directory.
 *
 * @param parent Where to create it.
 * @returns Its path and a function removing it with its contents (idempotent, never throws).
 */
export async function makeTempDir(parent: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(parent, "quantflow-http-"));
  let removed: Promise<void> | undefined;
  return { path, remove: () => removed ??= rm(path, { recursive: true, force: true }).catch(() => {}) };
}

/**
 * Writes a byte stream to a new file; on failure the stream is cancelled and
 * the partial file left for the caller's directory removal.
 *
 * @param body The bytes (already limited in size by the caller).
 * @param path A path that must not exist yet.
 * @returns The number of bytes written.
 */
export async function writeStreamToFile(body: ReadableStream<Uint8Array>, path: string): Promise<number> {
  const file = await open(path, "wx", 0o600);
  let written = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let at = 0;
      while (at < value.byteLength) {
        const { bytesWritten } = await file.write(value, at, value.byteLength - at);
        at += bytesWritten;
      }
      written += value.byteLength;
    }
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  } finally {
    await file.close();
  }
  return written;
}
