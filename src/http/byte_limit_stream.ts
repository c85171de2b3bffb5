/**
 * A byte limit enforced inside a body stream, so that a chunked upload is
 * never buffered to be measured (PITFALLS.md 8: `hono/body-limit` reads a
 * chunked body whole before the handler runs).
 *
 * @module
 */

/** A body went past the byte limit. */
export class BodyTooLargeError extends Error {
  /** The limit, in bytes. */
  readonly limit: number;

  /**
   * Creates the error.
   *
   * @param limit The limit in bytes.
   * @param seen Bytes received when the limit was crossed.
   */
  constructor(limit: number, seen: number) {
    super(`Request body exceeds the limit of ${limit} bytes (${seen} bytes received so far)`);
    this.name = "BodyTooLargeError";
    this.limit = limit;
  }
}

/**
 * Passes bytes through and errors with a {@linkcode BodyTooLargeError} as
 * soon as more than `maxBytes` have gone by; piping a request body through
 * it then cancels the body, so the upload stops being read.
 *
 * @example
 * ```ts
 * import { BodyTooLargeError, ByteLimitStream } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 *
 * const ok = ReadableStream.from([new Uint8Array(3), new Uint8Array(1)]).pipeThrough(new ByteLimitStream(4));
 * assert.equal((await Array.fromAsync(ok)).length, 2);
 * const tooBig = ReadableStream.from([new Uint8Array(3), new Uint8Array(2)]).pipeThrough(new ByteLimitStream(4));
 * await assert.rejects(Array.fromAsync(tooBig), BodyTooLargeError);
 * ```
 */
export class ByteLimitStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param maxBytes The most bytes allowed through.
   * @throws {RangeError} When `maxBytes` is not a non-negative safe integer.
   */
  constructor(maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new RangeError(`maxBytes must be a non-negative integer, got ${maxBytes}`);
    }
    let seen = 0;
    super({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > maxBytes) throw new BodyTooLargeError(maxBytes, seen);
        controller.enqueue(chunk);
      },
    });
  }
}
