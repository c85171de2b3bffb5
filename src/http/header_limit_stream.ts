/**
 * A cap on the size of a safetensors header in a request body, checked on
 * its first 8 bytes, before the header is buffered.
 *
 * The format allows headers up to 100 MB (`MAX_HEADER_BYTES`), which the
 * reader holds in memory whole; a service running several requests at once
 * wants a lower cap per request.
 *
 * @module
 */
import { MAX_HEADER_BYTES } from "../safetensors_header.ts";
import { HttpError } from "./http_error.ts";

/**
 * Passes a safetensors byte stream through unchanged, and errors with a 413
 * {@linkcode HttpError} when the little-endian u64 header length in its
 * first 8 bytes exceeds `maxHeaderBytes`. Shorter prefixes, and lengths the
 * format itself forbids (over `MAX_HEADER_BYTES`: garbage rather than a big
 * header), are left for the safetensors reader to report as malformed.
 *
 * @example
 * ```ts
 * import { HeaderLimitStream } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 *
 * const prefix = new Uint8Array(8);
 * new DataView(prefix.buffer).setUint32(0, 5000, true);
 * const out = ReadableStream.from([prefix]).pipeThrough(new HeaderLimitStream(4096));
 * await assert.rejects(Array.fromAsync(out), /4096/);
 * ```
 */
export class HeaderLimitStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param maxHeaderBytes The largest header length accepted.
   * @throws {RangeError} When `maxHeaderBytes` is not a positive safe integer.
   */
  constructor(maxHeaderBytes: number) {
    if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < 1) {
      throw new RangeError(`maxHeaderBytes must be a positive integer, got ${maxHeaderBytes}`);
    }
    const prefix = new Uint8Array(8);
    let have = 0;
    super({
      transform(chunk, controller) {
        if (have < 8) {
          const take = Math.min(8 - have, chunk.byteLength);
          prefix.set(chunk.subarray(0, take), have);
          have += take;
          if (have === 8) {
            const size = new DataView(prefix.buffer).getBigUint64(0, true);
            if (size > BigInt(maxHeaderBytes) && size <= BigInt(MAX_HEADER_BYTES)) {
              throw new HttpError(
                413,
                `safetensors header of ${size} bytes exceeds this server's limit of ${maxHeaderBytes} bytes`,
              );
            }
          }
        }
        controller.enqueue(chunk);
      },
    });
  }
}
