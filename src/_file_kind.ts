/**
 * Telling a `.arrows` file from a `.safetensors` file by its first bytes.
 *
 * @module
 */
import type { ByteSource } from "./byte_source.ts";

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
