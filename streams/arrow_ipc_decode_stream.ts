/**
 * Arrow IPC stream bytes to slabs (README.md, "Arrow layout"), pull-driven and
 * bounded, with truncation detection.
 *
 * @module
 */
import { Message, type RecordBatch, RecordBatchReader, type Schema } from "apache-arrow";
import { batchToSlab, type DecodeState } from "../src/_arrow_batches.ts";
import type { StreamLayout } from "../src/_arrow_layout.ts";
import { layoutFromSchema } from "../src/_arrow_schema.ts";
import { FormatError } from "../src/errors.ts";
import type { QuantizedSlab, Slab } from "../src/types.ts";

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

const CONTINUATION = 0xffffffff;
const MAX_MESSAGE_BYTES = 2 ** 30;

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Input bytes as a queue of chunks, read in exact sizes. A read inside one
 * input chunk is a view of it; a read across chunks is copied into a buffer
 * of the exact size, filled as chunks arrive (so 1-byte input chunks do not
 * pile up as objects).
 */
class ByteQueue {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  /** Bytes consumed so far: the position of the next read. */
  position = 0;
  /** Bytes received from the input so far. */
  received = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>) {
    this.#reader = reader;
  }

  async #pull(): Promise<Uint8Array | undefined> {
    if (this.#ended) return undefined;
    for (;;) {
      const { done, value } = await this.#reader.read();
      if (done) {
        this.#ended = true;
        return undefined;
      }
      if (!(value instanceof Uint8Array)) {
        throw new TypeError(
          `ArrowIpcDecodeStream expects Uint8Array chunks; got ${(value as object)?.constructor?.name ?? value}`,
        );
      }
      this.received += value.byteLength;
      if (value.byteLength > 0) return value;
    }
  }

  /** Whether no byte is left, waiting for input if needed. */
  async atEnd(): Promise<boolean> {
    if (this.#queued > 0) return false;
    const chunk = await this.#pull();
    if (!chunk) return true;
    this.#chunks.push(chunk);
    this.#queued += chunk.byteLength;
    return false;
  }

  /**
   * Consumes the next `n` bytes.
   *
   * @param align A body: its start must be 8-byte aligned so that typed arrays can view it.
   * @returns The bytes, or the number of bytes there were when the input ended first.
   */
  async read(n: number, align = false): Promise<Uint8Array | number> {
    while (this.#queued < n && this.#chunks.length <= 1) {
      // Wait for a second chunk only when the first one cannot hold the read.
      const chunk = await this.#pull();
      if (!chunk) break;
      this.#chunks.push(chunk);
      this.#queued += chunk.byteLength;
    }
    const head = this.#chunks[0];
    if (head && head.byteLength >= n && (!align || head.byteOffset % 8 === 0)) {
      const out = head.subarray(0, n);
      this.#consumeHead(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      let chunk = this.#chunks[0];
      if (!chunk) {
        const pulled = await this.#pull();
        if (!pulled) {
          this.position += filled;
          return filled;
        }
        this.#chunks.push(chunk = pulled);
        this.#queued += pulled.byteLength;
      }
      const take = Math.min(n - filled, chunk.byteLength);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      this.#consumeHead(take);
    }
    return out;
  }

  #consumeHead(n: number): void {
    const head = this.#chunks[0];
    if (n === head.byteLength) this.#chunks.shift();
    else this.#chunks[0] = head.subarray(n);
    this.#queued -= n;
    this.position += n;
  }
}

/** One IPC stream being read: its schema message bytes and layout. */
interface OpenStream {
  readonly name: string;
  readonly key: string;
  readonly schemaBytes: Uint8Array[];
  readonly layout: StreamLayout;
  readonly state: DecodeState;
  batches: number;
}

/**
 * Reads quantflow's IPC streams message by message. apache-arrow decodes
 * each record batch (from the stream's schema message and the batch's own);
 * the framing is ours, because apache-arrow (and flechette) take a stream
 * cut at a batch boundary for a complete one (PITFALLS 6).
 */
class IpcSlabReader {
  readonly #bytes: ByteQueue;
  readonly #maxMessageBytes: number;
  #open: OpenStream | undefined;
  /** Kind and name of the last completed stream: a stream continuing the same tensor does not repeat metadata scales. */
  #lastKey: string | undefined;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>, maxMessageBytes: number) {
    this.#bytes = new ByteQueue(reader);
    this.#maxMessageBytes = maxMessageBytes;
  }

  #where(): string {
    return this.#open ? `Arrow IPC stream of tensor "${this.#open.name}"` : "Arrow IPC stream";
  }

  #truncated(start: number, what: string): FormatError {
    return new FormatError(
      `${this.#where()} is truncated: input ends at byte ${this.#bytes.received} inside ${what} that starts at byte ${start}`,
    );
  }

  /** The next slab, or `undefined` at the clean end of the input. */
  async next(): Promise<Slab | QuantizedSlab | undefined> {
    const bytes = this.#bytes;
    for (;;) {
      const start = bytes.position;
      if (await bytes.atEnd()) {
        if (this.#open) {
          throw new FormatError(
            `${this.#where()} is truncated: input ends at byte ${start} after ${this.#open.batches} record batches, ` +
              `without the end-of-stream marker`,
          );
        }
        return undefined;
      }
      const prefix = await bytes.read(8);
      if (typeof prefix === "number") throw this.#truncated(start, "a message prefix");
      const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
      if (view.getUint32(0, true) !== CONTINUATION) {
        throw new FormatError(
          `${this.#where()} is invalid: expected the continuation marker ff ff ff ff at byte ${start}, found ${
            hex(prefix.subarray(0, 4))
          }`,
        );
      }
      const metaLength = view.getInt32(4, true);
      if (metaLength === 0) {
        if (!this.#open) {
          throw new FormatError(`Arrow IPC stream is invalid: end-of-stream marker at byte ${start} without a schema`);
        }
        this.#lastKey = this.#open.key;
        this.#open = undefined;
        continue;
      }
      if (metaLength < 0 || metaLength % 8 !== 0 || metaLength > this.#maxMessageBytes) {
        throw new FormatError(
          `${this.#where()} is invalid: message at byte ${start} declares ${metaLength} bytes of metadata`,
        );
      }
      const meta = await bytes.read(metaLength);
      if (typeof meta === "number") throw this.#truncated(start, `a message with ${metaLength} bytes of metadata`);
      let message: Message;
      let bodyLength: number;
      try {
        // Corrupt flatbuffers throw here or yield nonsense lengths, checked next.
        message = Message.decode(meta);
        bodyLength = Number(message.bodyLength);
      } catch (cause) {
        throw new FormatError(`${this.#where()} is invalid: unreadable message metadata at byte ${start}`, { cause });
      }
      if (!Number.isSafeInteger(bodyLength) || bodyLength < 0 || metaLength + bodyLength > this.#maxMessageBytes) {
        throw new FormatError(
          `${this.#where()} is invalid: message at byte ${start} declares a body of ${bodyLength} bytes`,
        );
      }
      const body = await bytes.read(bodyLength, true);
      if (typeof body === "number") {
        throw this.#truncated(start, `a ${8 + metaLength + bodyLength}-byte message`);
      }
      if (message.isSchema()) {
        this.#openStream(start, [prefix, meta], message);
        continue;
      }
      if (!this.#open) {
        throw new FormatError(`Arrow IPC stream is invalid: message at byte ${start} comes before any schema`);
      }
      if (!message.isRecordBatch()) {
        throw new FormatError(
          `${this.#where()} is invalid: unsupported message type ${message.headerType} at byte ${start}`,
        );
      }
      return this.#decodeBatch(start, [prefix, meta, body]);
    }
  }

  #openStream(start: number, schemaBytes: Uint8Array[], message: Message): void {
    if (this.#open) {
      throw new FormatError(
        `${this.#where()} is invalid: a new schema at byte ${start} before the end-of-stream marker`,
      );
    }
    let schema: Schema;
    try {
      schema = message.header() as Schema;
    } catch (cause) {
      throw new FormatError(`Arrow IPC stream is invalid: unreadable schema at byte ${start}`, { cause });
    }
    const layout = layoutFromSchema(schema);
    const name = layout.kind === "slab" ? layout.tensor.name : layout.info.name;
    const key = `${layout.kind}\0${name}`;
    this.#open = {
      name,
      key,
      // Copy the schema message: it is reused for every batch and must not pin an input chunk.
      schemaBytes: schemaBytes.map((b) => b.slice()),
      layout,
      state: { scalesEmitted: key === this.#lastKey, nextOffset: 0 },
      batches: 0,
    };
    this.#lastKey = undefined;
  }

  #decodeBatch(start: number, batchBytes: Uint8Array[]): Slab | QuantizedSlab {
    const open = this.#open!;
    let batch: RecordBatch | undefined;
    try {
      // apache-arrow reads a record batch in the context of its schema; the
      // body's buffers become views of `body` (aligned by ByteQueue.read).
      const reader = RecordBatchReader.from([...open.schemaBytes, ...batchBytes]);
      batch = reader.next().value as RecordBatch | undefined;
    } catch (cause) {
      throw new FormatError(`${this.#where()} is invalid: unreadable record batch at byte ${start}`, { cause });
    }
    if (!batch) throw new FormatError(`${this.#where()} is invalid: unreadable record batch at byte ${start}`);
    open.batches++;
    return batchToSlab(open.layout, batch, open.state);
  }
}

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
    const slabs = new IpcSlabReader(reader, maxMessageBytes);
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
