/**
 * Reading a safetensors checkpoint as a stream of slabs, in bounded memory.
 *
 * @module
 */
import { type Allocate, allocatorOf, BufferRing, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { type ByteSource, memorySource, openFileSource } from "../src/byte_source.ts";
import { FormatError } from "../src/errors.ts";
import {
  dtypeSize,
  floatDTypeOf,
  parseSafetensorsHeader,
  type SafetensorsEntry,
  type SafetensorsHeader,
  safetensorsHeaderSize,
} from "../src/safetensors_header.ts";
import type { RawChunk, Slab, SlabSource, TensorInfo } from "../src/types.ts";
import { isRetired, trackRead } from "./_reads_in_flight.ts";

/** Options of {@linkcode readSafetensors}. */
export interface ReadSafetensorsOptions {
  /**
   * Byte budget of one slab or raw chunk. Slabs hold whole rows (a row is one
   * index along axis 0) up to this size; a longer row is split into equal
   * pieces whose length divides the row length.
   * @default {1048576}
   */
  slabBytes?: number;
  /**
   * Read into a ring of reused buffers instead of fresh memory per chunk (much
   * faster: fresh pages are expensive). A chunk's memory is then overwritten
   * once `ringSlots - 1` further chunks have been handed out: only
   * for consumers that are done with each chunk (or copy it) by then, as
   * `quantizeFile` is.
   * A function instead of `true` says where the buffers' memory comes from;
   * to lend that memory to something else after a failure, cancel `chunks`
   * first and wait for the cancel: a source that reads ahead may be copying
   * into a buffer until then.
   * @default {false}
   */
  reuseBuffers?: boolean | Allocate;
  /**
   * Buffers in the rings of `reuseBuffers` (the input's, and the re-read
   * ring of two-pass tensors): at least 2. The default covers the chunks a
   * chain of streams can hold in flight; a consumer that is done with each
   * chunk before it reads the next, such as a loop writing each to a file,
   * needs 2, which stay in cache better. A file source that reads ahead
   * (`ByteSource.readAsync`: Deno's files) adds one for the chunk being read.
   * @default {8}
   */
  ringSlots?: number;
}

/** A safetensors checkpoint opened for streaming. */
export interface SafetensorsModel {
  /** The validated header. */
  readonly header: SafetensorsHeader;
  /**
   * The tensors' data in file order: {@linkcode Slab}s for F32, F16 and BF16
   * tensors (`kind: "slab"`), {@linkcode RawChunk}s for every other dtype.
   * A tensor with no elements yields one empty chunk. Each chunk owns its
   * memory, unless `reuseBuffers` says otherwise. Pull-based: one chunk is
   * read per read request (and, from a source that reads off this thread,
   * the next one meanwhile). Read it to the end or cancel it, which closes
   * the file or cancels the input stream.
   */
  readonly chunks: ReadableStream<Slab | RawChunk>;
}

/** The default byte budget of a slab. */
// 1 MiB: the 1 GiB benchmark ran 15-25% faster than with 4 MiB slabs (a slab stays in cache between the
// min/max and quantize passes, and the rings touch fewer fresh pages); see bench/RESULTS.md.
export const DEFAULT_SLAB_BYTES = 1024 * 1024;

/** How one tensor is cut into chunks. */
interface TensorPlan {
  readonly entry: SafetensorsEntry;
  /** Set for float tensors: they become slabs. */
  readonly info: TensorInfo | undefined;
  readonly elementSize: number;
  readonly byteLength: number;
  /** Bytes per chunk; the last chunk of a tensor may be shorter. A multiple of `elementSize`. */
  readonly pieceBytes: number;
}

/** Where chunk bytes come from: random access (file, buffer) or one sequential stream. */
interface PieceReader {
  /** Whether the next chunk is to be read while the caller works on this one: the reads happen off this thread. */
  readonly readsAhead: boolean;
  /** Fills `into` with the bytes at absolute `position`, or throws a FormatError naming `entry`. */
  fill(position: number, into: Uint8Array, entry: SafetensorsEntry): Promise<void> | void;
  /** Called after the last tensor: checks nothing follows, then releases the input. */
  finish(): Promise<void> | void;
  /** Releases the input early (cancel, error). */
  close(reason?: unknown): Promise<void> | void;
}

/**
 * Opens a safetensors checkpoint: parses and validates its header, then
 * streams its tensors.
 *
 * For a path, a `Uint8Array` or a function opening a {@linkcode ByteSource}
 * every slab carries a `source` that reads its tensor again with the same
 * slab boundaries (a path is reopened, and the function called again, for
 * each re-read). A `ReadableStream` input is read only as far as the header before
 * the promise resolves, then on demand; its slabs carry no `source`.
 *
 * @example
 * ```ts
 * import { encodeSafetensorsHeader, readSafetensors } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const header = encodeSafetensorsHeader([{ name: "w", dtype: "F32", shape: [2, 2], byteLength: 16 }], {});
 * const file = new Uint8Array(header.length + 16);
 * file.set(header);
 * new Float32Array(file.buffer, header.length).set([1, 2, 3, 4]);
 * const model = await readSafetensors(file);
 * const chunks = await Array.fromAsync(model.chunks);
 * assert.deepEqual(chunks.map((c) => c.kind === "raw" ? [] : [...c.data]), [[1, 2, 3, 4]]);
 * ```
 *
 * @param input A file path, the file's bytes, a stream of them, or a function opening a source of them.
 * @param options Slab budget.
 * @returns The header and the stream of slabs and raw chunks.
 * @throws {RangeError} When `slabBytes` is not a positive integer, or `ringSlots` is not an integer of at least 2.
 * @throws {FormatError} When the header is malformed (the promise rejects);
 *   the `chunks` stream errors with a FormatError naming the tensor and byte
 *   positions when the data is truncated or followed by extra bytes.
 */
export async function readSafetensors(
  input: string | ReadableStream<Uint8Array> | Uint8Array | (() => ByteSource),
  options: ReadSafetensorsOptions = {},
): Promise<SafetensorsModel> {
  const slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
  if (!Number.isSafeInteger(slabBytes) || slabBytes < 1) {
    throw new RangeError(`slabBytes must be a positive integer, got ${slabBytes}`);
  }
  const { reuseBuffers, ringSlots = PIPELINE_RING_SLOTS } = options;
  if (!Number.isInteger(ringSlots) || ringSlots < 2) {
    throw new RangeError(`ringSlots must be an integer of at least 2, got ${ringSlots}`);
  }
  // `extra`: a slot for the chunk a stream reads ahead, which keeps `ringSlots` for the caller.
  const buffers = reuseBuffers
    ? (extra: number) => new BufferRing(ringSlots + extra, allocatorOf(reuseBuffers))
    : undefined;
  // Reads ahead copy into ring buffers on another thread: counted by their memory, which a job's next job may have
  // only once they are done and no more may start (_slab_memory.ts).
  const reads = typeof reuseBuffers === "function" ? reuseBuffers : undefined;
  if (typeof input === "string") {
    return openRandomAccess(() => openFileSource(input), slabBytes, buffers, reads);
  }
  if (input instanceof Uint8Array) {
    return openRandomAccess(() => memorySource(input), slabBytes, buffers, reads);
  }
  if (input instanceof ReadableStream) {
    return await openSequential(input, slabBytes, buffers);
  }
  if (typeof input === "function") {
    return openRandomAccess(input, slabBytes, buffers, reads);
  }
  throw new TypeError(
    "readSafetensors expects a path, a Uint8Array, a ReadableStream<Uint8Array> or a function returning a ByteSource",
  );
}

/** Rings of reused buffers, with `extra` slots beyond the caller's `ringSlots`. */
type Rings = (extra: number) => BufferRing;

function openRandomAccess(
  open: () => ByteSource,
  slabBytes: number,
  buffers: Rings | undefined,
  reads: Allocate | undefined,
): SafetensorsModel {
  const source = open();
  let header: SafetensorsHeader;
  try {
    const prefix = new Uint8Array(8);
    const got = source.read(0, prefix);
    const size = safetensorsHeaderSize(prefix.subarray(0, got), source.size);
    const bytes = new Uint8Array(size);
    const n = source.read(0, bytes);
    header = parseSafetensorsHeader(bytes.subarray(0, n), source.size);
  } catch (e) {
    source.close();
    throw e;
  }
  const plans = planTensors(header, slabBytes);
  // A source that reads off this thread has the next chunk read while the caller works on this one; the re-reads'
  // sources come from the same `open`, and do the same.
  const readsAhead = source.readAsync !== undefined;
  const extra = readsAhead ? 1 : 0;
  // Re-reads (two-pass tensors) happen one tensor at a time: one ring serves them all.
  const rereadRing = buffers?.(extra);
  const sources = new Map<TensorPlan, SlabSource>();
  const sourceOf = (plan: TensorPlan): SlabSource => {
    let s = sources.get(plan);
    if (s === undefined) {
      // Each re-read opens its own handle, on its first pull, and closes it at the end.
      const slabs = () => chunkStream([plan], randomAccessReader(open, readsAhead, reads), sourceOf, rereadRing);
      s = { slabs: slabs as () => ReadableStream<Slab> };
      sources.set(plan, s);
    }
    return s;
  };
  const reader = randomAccessReader(open, readsAhead, reads, source);
  return { header, chunks: chunkStream(plans, reader, sourceOf, buffers?.(extra)) };
}

/**
 * A reader over a byte source opened on first use, or already open (closed
 * like one it opened, also when the stream is cancelled before any read).
 * Reads go through `readAsync` when reading ahead; closing waits for the read
 * in flight.
 *
 * @param open Opens the source.
 * @param readsAhead Whether to read through `readAsync` (where the source has it).
 * @param reads Where the buffers read into come from, when they are reused: reads ahead are counted against it.
 * @param opened The source, already open.
 */
function randomAccessReader(
  open: () => ByteSource,
  readsAhead: boolean,
  reads: Allocate | undefined,
  opened?: ByteSource,
): PieceReader {
  let source: ByteSource | undefined = opened;
  let closed = false;
  let reading: Promise<unknown> = Promise.resolve();
  const expectFull = (n: number, position: number, into: Uint8Array, entry: SafetensorsEntry) => {
    if (n < into.length) {
      throw new FormatError(
        `Cannot read tensor "${entry.name}": data ends at byte ${position + n}, header says ${entry.end}`,
      );
    }
  };
  const close = async () => {
    closed = true;
    await reading.catch(() => {});
    source?.close();
  };
  return {
    readsAhead,
    fill(position, into, entry) {
      if (closed) throw new Error(`Cannot read tensor "${entry.name}": the source is closed`);
      // The job these buffers were lent to has ended (failed): another may have them.
      if (reads && isRetired(reads)) throw new Error(`Cannot read tensor "${entry.name}": the job has ended`);
      source ??= open();
      if (!readsAhead || !source.readAsync) return expectFull(source.read(position, into), position, into, entry);
      const read = source.readAsync(position, into).then((n) => expectFull(n, position, into, entry));
      if (reads) trackRead(reads, read);
      reading = read;
      return read;
    },
    finish: close,
    close,
  };
}

async function openSequential(
  input: ReadableStream<Uint8Array>,
  slabBytes: number,
  buffers: Rings | undefined,
): Promise<SafetensorsModel> {
  const bytes = new SequentialBytes(input.getReader());
  let header: SafetensorsHeader;
  try {
    const prefix = new Uint8Array(8);
    const got = await bytes.fill(prefix);
    const size = safetensorsHeaderSize(prefix.subarray(0, got));
    const all = new Uint8Array(size);
    all.set(prefix);
    const n = await bytes.fill(all.subarray(8));
    header = parseSafetensorsHeader(all.subarray(0, 8 + n));
  } catch (e) {
    await bytes.cancel(e);
    throw e;
  }
  const reader: PieceReader = {
    readsAhead: false,
    async fill(position, into, entry) {
      // Gaps between tensors are allowed by the header check: skip them.
      if (bytes.position < position) await bytes.skip(position - bytes.position);
      const n = bytes.position < position ? 0 : await bytes.fill(into);
      if (n < into.length) {
        throw new FormatError(
          `Cannot read tensor "${entry.name}": data ends at byte ${bytes.position}, header says ${entry.end}`,
        );
      }
    },
    async finish() {
      if (bytes.position < header.dataEnd) await bytes.skip(header.dataEnd - bytes.position);
      if (!(await bytes.atEnd())) {
        await bytes.cancel();
        throw new FormatError(
          `Cannot read safetensors file: unexpected bytes after the data section, which ends at byte ${header.dataEnd}`,
        );
      }
    },
    close: (reason) => bytes.cancel(reason),
  };
  return { header, chunks: chunkStream(planTensors(header, slabBytes), reader, undefined, buffers?.(0)) };
}

/** Sequential reads out of a byte stream whose chunks may be cut anywhere. */
class SequentialBytes {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunk: Uint8Array = new Uint8Array(0);
  #at = 0;
  #done = false;
  /** Absolute position of the next byte to be read. */
  position = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>) {
    this.#reader = reader;
  }

  /** Makes the current chunk non-empty; false at the end of the input. */
  async #ensure(): Promise<boolean> {
    while (this.#at >= this.#chunk.length) {
      if (this.#done) return false;
      const { done, value } = await this.#reader.read();
      if (done) {
        this.#done = true;
        this.#reader.releaseLock();
        return false;
      }
      if (!(value instanceof Uint8Array)) {
        throw new TypeError(`readSafetensors: the input stream yielded ${typeof value}, not a Uint8Array`);
      }
      this.#chunk = value;
      this.#at = 0;
    }
    return true;
  }

  /** Copies the next bytes into `into`; returns how many (fewer only at the end of the input). */
  async fill(into: Uint8Array): Promise<number> {
    let done = 0;
    while (done < into.length && (await this.#ensure())) {
      const n = Math.min(into.length - done, this.#chunk.length - this.#at);
      into.set(this.#chunk.subarray(this.#at, this.#at + n), done);
      this.#at += n;
      done += n;
    }
    this.position += done;
    return done;
  }

  /** Discards up to `count` bytes; returns how many. */
  async skip(count: number): Promise<number> {
    let done = 0;
    while (done < count && (await this.#ensure())) {
      const n = Math.min(count - done, this.#chunk.length - this.#at);
      this.#at += n;
      done += n;
    }
    this.position += done;
    return done;
  }

  /** Whether the input has no more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.#ensure());
  }

  /** Cancels the input, unless it already ended. */
  async cancel(reason?: unknown): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#chunk = new Uint8Array(0);
    this.#at = 0;
    await this.#reader.cancel(reason).catch(() => {});
  }
}

function planTensors(header: SafetensorsHeader, slabBytes: number): TensorPlan[] {
  return header.entries.map((entry) => {
    const elementSize = dtypeSize(entry.dtype);
    const byteLength = entry.end - entry.begin;
    const dtype = floatDTypeOf(entry.dtype);
    if (dtype === undefined) {
      const pieceBytes = Math.max(1, Math.floor(slabBytes / elementSize)) * elementSize;
      return { entry, info: undefined, elementSize, byteLength, pieceBytes };
    }
    const info: TensorInfo = { name: entry.name, dtype, shape: entry.shape };
    const numel = byteLength / elementSize;
    // Rank 0 and 1 tensors: every element is its own row.
    const rowLength = entry.shape.length >= 2 && numel > 0 ? numel / entry.shape[0] : 1;
    const rowBytes = rowLength * elementSize;
    const pieceElements = rowBytes <= slabBytes
      ? Math.floor(slabBytes / rowBytes) * rowLength
      : largestDivisorAtMost(rowLength, Math.max(1, Math.floor(slabBytes / elementSize)));
    return { entry, info, elementSize, byteLength, pieceBytes: pieceElements * elementSize };
  });
}

/** The largest divisor of `n` that is at most `limit` (at least 1). */
function largestDivisorAtMost(n: number, limit: number): number {
  let best = 1;
  for (let i = 1; i * i <= n; i++) {
    if (n % i !== 0) continue;
    if (i <= limit && i > best) best = i;
    const j = n / i;
    if (j <= limit && j > best) best = j;
  }
  return best;
}

function chunkStream(
  plans: readonly TensorPlan[],
  reader: PieceReader,
  sourceOf: ((plan: TensorPlan) => SlabSource) | undefined,
  ring: BufferRing | undefined,
): ReadableStream<Slab | RawChunk> {
  const pieces = piecesOf(plans);
  /** Reads the next chunk into its memory: a fresh buffer the chunk owns, or the ring's next one. */
  const readNext = async (): Promise<Slab | RawChunk | undefined> => {
    const next = pieces.next();
    if (next.done) return undefined;
    const { plan, offset, length } = next.value;
    // Read straight into the chunk's memory, no second copy.
    const bytes = length === 0 ? new Uint8Array(0) : ring ? ring.take(length) : new Uint8Array(length);
    if (length > 0) await reader.fill(plan.entry.begin + offset, bytes, plan.entry);
    return makeChunk(plan, offset, bytes, sourceOf);
  };
  // The chunk being read ahead; its failure is the failure of the pull that asks for it.
  let ahead: Promise<Slab | RawChunk | undefined> | undefined;
  return new ReadableStream<Slab | RawChunk>({
    async pull(controller) {
      try {
        const chunk = await (ahead ?? readNext());
        ahead = undefined;
        if (chunk === undefined) {
          await reader.finish();
          controller.close();
          return;
        }
        if (reader.readsAhead) {
          ahead = readNext();
          ahead.catch(() => {}); // handled when pulled, or dropped with the stream
        }
        controller.enqueue(chunk);
      } catch (e) {
        await reader.close(e);
        throw e;
      }
    },
    cancel(reason) {
      return reader.close(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * Where each chunk of each tensor lies, in file order: a tensor of no
 * elements gets one chunk, empty, so that it is not lost downstream.
 */
function* piecesOf(plans: readonly TensorPlan[]): Generator<{ plan: TensorPlan; offset: number; length: number }> {
  for (const plan of plans) {
    let offset = 0;
    do {
      const length = Math.min(plan.pieceBytes, plan.byteLength - offset);
      yield { plan, offset, length };
      offset += length;
    } while (offset < plan.byteLength);
  }
}

function makeChunk(
  plan: TensorPlan,
  byteOffset: number,
  bytes: Uint8Array,
  sourceOf: ((plan: TensorPlan) => SlabSource) | undefined,
): Slab | RawChunk {
  const { entry, info } = plan;
  if (info === undefined) {
    return { kind: "raw", name: entry.name, dtype: entry.dtype, shape: entry.shape, offset: byteOffset, bytes };
  }
  // Little-endian host assumed, as safetensors data is little-endian.
  const data = info.dtype === "float32"
    ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)
    : new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2);
  const offset = byteOffset / plan.elementSize;
  return sourceOf === undefined
    ? { kind: "slab", tensor: info, offset, data }
    : { kind: "slab", tensor: info, offset, data, source: sourceOf(plan) };
}
