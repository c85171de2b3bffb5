/**
 * Reading quantflow's Arrow IPC streams message by message: the framing,
 * checked as it goes (truncation, lengths, order of schemas and batches), over
 * any source of bytes: a stream's chunks (`ByteQueue`, for
 * `ArrowIpcDecodeStream`) or a file read at its positions (`_arrow_file.ts`).
 *
 * @module
 */
import { Message, type RecordBatch, RecordBatchReader, type Schema } from "apache-arrow";
import { batchToSlab, type DecodeState } from "../src/_arrow_batches.ts";
import type { StreamLayout } from "../src/_arrow_layout.ts";
import { layoutFromSchema } from "../src/_arrow_schema.ts";
import { FormatError } from "../src/errors.ts";
import type { QuantizedSlab, Slab } from "../src/types.ts";

const CONTINUATION = 0xffffffff;

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** The bytes of IPC messages, read in order. */
export interface MessageBytes {
  /** Bytes consumed so far: the position of the next read. */
  readonly position: number;
  /** Bytes received from the input so far (where a truncated input ends). */
  readonly received: number;
  /** Whether no byte is left, waiting for input if needed. */
  atEnd(): Promise<boolean>;
  /**
   * Consumes the next `n` bytes.
   *
   * @param align A body: its start must be 8-byte aligned so that typed arrays can view it.
   * @returns The bytes, or the number of bytes there were when the input ended first.
   */
  read(n: number, align?: boolean): Promise<Uint8Array | number>;
  /**
   * Consumes the next `n` bytes without keeping them.
   *
   * @returns How many there were: `n`, or fewer when the input ended first.
   */
  skip(n: number): Promise<number>;
}

/**
 * Input bytes as a queue of chunks, read in exact sizes. A read inside one
 * input chunk is a view of it; a read across chunks is copied into a buffer
 * of the exact size, filled as chunks arrive (so 1-byte input chunks do not
 * pile up as objects).
 */
export class ByteQueue implements MessageBytes {
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

  /**
   * Consumes the next `n` bytes without keeping them.
   *
   * @returns How many there were: `n`, or fewer when the input ended first.
   */
  async skip(n: number): Promise<number> {
    let skipped = 0;
    while (skipped < n) {
      if (this.#queued === 0) {
        const chunk = await this.#pull();
        if (!chunk) break;
        this.#chunks.push(chunk);
        this.#queued += chunk.byteLength;
      }
      const take = Math.min(n - skipped, this.#chunks[0].byteLength);
      this.#consumeHead(take);
      skipped += take;
    }
    return skipped;
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
export class IpcSlabReader {
  readonly #bytes: MessageBytes;
  readonly #maxMessageBytes: number;
  #open: OpenStream | undefined;
  /** Kind and name of the last completed stream: a stream continuing the same tensor does not repeat metadata scales. */
  #lastKey: string | undefined;
  /** Element offset where the last completed stream ended: a stream continuing its tensor starts there. */
  #lastEnd = 0;

  /**
   * @param bytes The IPC bytes.
   * @param maxMessageBytes The largest message accepted (metadata plus body).
   */
  constructor(bytes: MessageBytes, maxMessageBytes: number) {
    this.#bytes = bytes;
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
    const batch = await this.#nextBatch(true);
    return batch && this.#decodeBatch(batch.start, batch.bytes);
  }

  /**
   * The tensor and table rows of the next record batch, without reading its
   * body (whose contents are thus not checked), or `undefined` at the clean
   * end of the input.
   */
  async nextRows(): Promise<{ readonly layout: StreamLayout; readonly rows: number } | undefined> {
    const batch = await this.#nextBatch(false);
    if (!batch) return undefined;
    const open = this.#open!;
    open.batches++;
    let rows: number;
    try {
      rows = (batch.message.header() as { length: number }).length;
    } catch (cause) {
      throw new FormatError(`${this.#where()} is invalid: unreadable record batch at byte ${batch.start}`, { cause });
    }
    if (!Number.isSafeInteger(rows) || rows < 0) {
      throw new FormatError(`${this.#where()} is invalid: record batch at byte ${batch.start} declares ${rows} rows`);
    }
    // Where its rows are is in the body, unread: the next batch is taken to follow this one.
    open.state.nextOffset += rows * open.layout.listSize;
    return { layout: open.layout, rows };
  }

  /** Reads up to the next record batch: its message, and its bytes (the body only when asked for). */
  async #nextBatch(
    withBody: boolean,
  ): Promise<{ readonly start: number; readonly message: Message; readonly bytes: Uint8Array[] } | undefined> {
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
        this.#lastEnd = this.#open.state.nextOffset;
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
      const keep = withBody || !message.isRecordBatch();
      const body = keep ? await bytes.read(bodyLength, true) : await bytes.skip(bodyLength);
      if (typeof body === "number" && (keep || body < bodyLength)) {
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
      return { start, message, bytes: typeof body === "number" ? [] : [prefix, meta, body] };
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
    let layout: StreamLayout;
    try {
      layout = layoutFromSchema(schema);
    } catch (cause) {
      if (cause instanceof FormatError) throw cause;
      // A schema apache-arrow decoded but whose parts are missing or odd (a list without a child type).
      throw new FormatError(`Arrow IPC stream is invalid: schema at byte ${start} is not quantflow's layout`, {
        cause,
      });
    }
    const name = layout.kind === "slab" ? layout.tensor.name : layout.info.name;
    const key = `${layout.kind}\0${name}`;
    const continued = key === this.#lastKey;
    this.#open = {
      name,
      key,
      // Copy the schema message: it is reused for every batch and must not pin an input chunk.
      schemaBytes: schemaBytes.map((b) => b.slice()),
      layout,
      state: { scalesEmitted: continued, nextOffset: continued ? this.#lastEnd : 0 },
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
