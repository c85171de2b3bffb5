/**
 * Telling a `.arrows` file from a `.safetensors` file by its first bytes.
 *
 * @module
 */
import { type ByteSource, openFileSource } from "./byte_source.ts";

/**
 * Whether a file holds Arrow IPC streams: every IPC message starts with the
 * continuation marker `FF FF FF FF`. A safetensors file cannot start so (its
 * first 8 bytes are the header's length, capped far below 2^32).
 *
 * @param source The file.
 * @returns `true` for Arrow IPC.
 */
export function isArrowIPC(source: ByteSource): boolean {
  const head = new Uint8Array(4);
  return source.read(0, head) === 4 && head.every((b) => b === 0xff);
}

/**
 * Whether the file at `path` holds Arrow IPC streams; `false` for a file that
 * cannot be opened, whose job then reports it.
 *
 * @param path The file.
 * @returns `true` for Arrow IPC.
 */
export function isArrowFile(path: string): boolean {
  let source: ByteSource | undefined;
  try {
    source = openFileSource(path);
    return isArrowIPC(source);
  } catch {
    return false;
  } finally {
    source?.close();
  }
}
