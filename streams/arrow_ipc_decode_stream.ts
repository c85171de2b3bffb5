/**
 * Arrow IPC stream bytes to slabs (README.md, "Arrow layout"), pull-driven and
 * bounded, with truncation detection.
 *
 * @module
 */
import type { QuantizedSlab, Slab } from "../src/types.ts";
import { ByteQueue, IpcSlabReader } from "./_ipc_slab_reader.ts";

/** Options of {@linkcode ArrowIpcDecodeStream}. */
export interface ArrowIpcDecodeStreamOptions {
  /**
   * The largest IPC message (metadata plus body) accepted, in bytes. A larger
   * declared length is a `FormatError`: it guards memory against corrupt or
   * hostile input, since a message is assembled whole before it is decoded.
   * @default {1073741824} (1 GiB)
   */
  maxMessageBytes?: number;
}

const MAX_MESSAGE_BYTES = 2 ** 30;

/**
 * Decodes Arrow IPC bytes written by {@linkcode ArrowIpcEncodeStream} (or by
 * any Arrow writer following the README's Arrow layout) into slabs: one
 * {@linkcode Slab} or {@linkcode QuantizedSlab} per record batch. The input
 * may be cut anywhere and may hold several IPC streams one after another (a
 * model).
 *
 * The decoder is pull-driven: it reads input only when a slab is asked for,
 * so memory stays bounded by one message (plus the input chunk it lies in).
 * Slab data are views of the input where a message lies inside one aligned
 * input chunk; otherwise the message is copied once.
 *
 * Errors, all `FormatError`s naming the tensor where known: input that is not
 * an Arrow IPC stream; a schema that is not quantflow's layout; input that
 * ends inside a message, or after a record batch without the stream's
 * end-of-stream marker (which apache-arrow and flechette do not detect).
 * An error cancels the input; cancelling the output cancels the input too.
 *
 * @example Truncation is an error
 * ```ts
 * import { ArrowIpcDecodeStream, ArrowIpcEncodeStream, FormatError } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const slab = { tensor: { name: "w", dtype: "float32" as const, shape: [2, 2] }, offset: 0, data: new Float32Array(4) };
 * const chunks = await Array.fromAsync(ReadableStream.from([slab]).pipeThrough(new ArrowIpcEncodeStream()));
 * const cut = ReadableStream.from(chunks.slice(0, -1)).pipeThrough(new ArrowIpcDecodeStream());
 * await assert.rejects(Array.fromAsync(cut), FormatError);
 * ```
 */
export class ArrowIpcDecodeStream extends TransformStream<Uint8Array, Slab | QuantizedSlab> {
  readonly #readable: ReadableStream<Slab | QuantizedSlab>;
  readonly #writable: WritableStream<Uint8Array>;

  /**
   * Creates the decoder.
   *
   * @param options Limits.
   * @throws {RangeError} If `maxMessageBytes` is not a positive integer.
   */
  constructor(options: ArrowIpcDecodeStreamOptions = {}) {
    super();
    const maxMessageBytes = options.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    if (!Number.isSafeInteger(maxMessageBytes) || maxMessageBytes <= 0) {
      throw new RangeError(`maxMessageBytes must be a positive integer; got ${maxMessageBytes}`);
    }
    // The input side is an identity stream we read on demand (std's
    // toTransformStream): the output's pull drives all work.
    const { readable: input, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const reader = input.getReader();
    const slabs = new IpcSlabReader(new ByteQueue(reader), maxMessageBytes);
    this.#writable = writable;
    this.#readable = new ReadableStream<Slab | QuantizedSlab>({
      async pull(controller) {
        let slab: Slab | QuantizedSlab | undefined;
        try {
          slab = await slabs.next();
        } catch (error) {
          controller.error(error);
          await reader.cancel(error).catch(() => {});
          return;
        }
        if (slab === undefined) controller.close();
        else controller.enqueue(slab);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
  }

  /** The slabs decoded. */
  override get readable(): ReadableStream<Slab | QuantizedSlab> {
    return this.#readable;
  }

  /** The IPC bytes to decode. */
  override get writable(): WritableStream<Uint8Array> {
    return this.#writable;
  }
}

/**
 * The Arrow IPC source of a slab pipeline: decodes bytes (a stream, an
 * iterable of chunks, or one buffer) into slabs, as
 * {@linkcode ArrowIpcDecodeStream} does.
 *
 * @param source The IPC bytes.
 * @param options Limits, as for {@linkcode ArrowIpcDecodeStream}.
 * @returns The slabs, one per record batch.
 * @throws {RangeError} If `maxMessageBytes` is not a positive integer.
 *
 * @example
 * ```ts
 * import { readArrowIPC, toArrowIPC } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const slab = { tensor: { name: "w", dtype: "float32" as const, shape: [3] }, offset: 0, data: new Float32Array([1, 2, 3]) };
 * const bytes = ReadableStream.from([slab]).pipeThrough(toArrowIPC());
 * const [back] = await Array.fromAsync(readArrowIPC(bytes));
 * assert.deepEqual(Array.from(back.data), [1, 2, 3]);
 * ```
 */
export function readArrowIPC(
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Uint8Array,
  options: ArrowIpcDecodeStreamOptions = {},
): ReadableStream<Slab | QuantizedSlab> {
  const decoder = new ArrowIpcDecodeStream(options);
  const stream = source instanceof ReadableStream
    ? source
    : ReadableStream.from(source instanceof Uint8Array ? [source] : source);
  return stream.pipeThrough(decoder);
}
