/**
 * Slabs to Arrow IPC stream bytes, one IPC stream per tensor
 * (README.md, "Arrow layout").
 *
 * @module
 */
import { type BatchBody, emptyCarry, quantizedSlabBody, type ScaleCarry, slabBody } from "../src/_arrow_batches.ts";
import { padded8, recordBatchMessage, schemaMessage } from "../src/_arrow_ipc_message.ts";
import { fitsLayout, planQuantizedLayout, planSlabLayout, type StreamLayout } from "../src/_arrow_layout.ts";
import { floatDTypeOf } from "../src/safetensors_header.ts";
import type { QuantizedSlab, RawChunk, Slab } from "../src/types.ts";

/** The end-of-stream marker: continuation `0xFFFFFFFF`, then metadata length 0. */
const END_OF_STREAM: readonly number[] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/**
 * Buffers at least this long pass to the output as views of the slab's own
 * memory; shorter pieces (messages, `row` columns, scales, padding) are
 * joined. Fresh memory costs more than copying (PITFALLS 14), so a slab's
 * values are never copied.
 */
const PASS_THROUGH_BYTES = 64 * 1024;

/**
 * The output chunks of one record batch, preceded by `prefix` (the end marker
 * of the previous stream, the schema message of a new one): its message and
 * body, short pieces joined, long buffers as they are.
 */
function batchChunks(prefix: readonly Uint8Array[], body: BatchBody): Uint8Array[] {
  const message = recordBatchMessage(body.entries, body.columns);
  const pieces = [...prefix, message];
  for (const { values } of body.columns) {
    pieces.push(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    const padding = padded8(values.byteLength) - values.byteLength;
    if (padding > 0) pieces.push(new Uint8Array(padding));
  }
  const out: Uint8Array[] = [];
  let pending: Uint8Array[] = [];
  let pendingSize = 0;
  const join = () => {
    if (pending.length === 1) out.push(pending[0]);
    else if (pending.length > 1) {
      const joined = new Uint8Array(pendingSize);
      let at = 0;
      for (const piece of pending) joined.set(piece, at), at += piece.byteLength;
      out.push(joined);
    }
    pending = [];
    pendingSize = 0;
  };
  for (const piece of pieces) {
    if (piece.byteLength >= PASS_THROUGH_BYTES) {
      join();
      out.push(piece);
    } else {
      pending.push(piece);
      pendingSize += piece.byteLength;
    }
  }
  join();
  return out;
}

interface OpenStream {
  readonly key: string;
  readonly layout: StreamLayout;
  readonly carry: ScaleCarry;
}

function streamKey(chunk: Slab | QuantizedSlab): string {
  return `${chunk.kind === "quantized" ? "quantized" : "slab"}\0${chunk.tensor?.name}`;
}

/**
 * Encodes slabs as Arrow IPC stream bytes (README.md, "Arrow layout"). Each run of
 * consecutive chunks of one tensor (same name, same kind) becomes one IPC
 * stream: a schema message, one record batch message per slab, and the
 * end-of-stream marker when the next tensor starts or the input ends. A model
 * is thus the concatenation of its tensors' streams, which apache-arrow's
 * `RecordBatchReader.readAll()` and {@linkcode ArrowIpcDecodeStream} read
 * back.
 *
 * The encoder works one slab at a time under the stream's backpressure: each
 * slab yields a few output chunks (its message, preceded by the schema for a
 * tensor's first slab and by the end marker of the previous tensor). Values,
 * scales and 8-bit quantized data of 64 KiB or more are not copied: those
 * output chunks are views of the slab's memory, so a producer hands its
 * buffers over and must not reuse them.
 *
 * A tensor whose later slab does not fall on the list entries its first slab
 * fixed (slabs cut at irregular places inside rows) continues in a further
 * stream with the same name; the decoder joins them.
 *
 * @example Encode two tensors, decode them again
 * ```ts
 * import { ArrowIpcDecodeStream, ArrowIpcEncodeStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const slabs = [
 *   { tensor: { name: "a", dtype: "float32" as const, shape: [2, 3] }, offset: 0, data: new Float32Array([1, 2, 3, 4, 5, 6]) },
 *   { tensor: { name: "b", dtype: "float32" as const, shape: [2] }, offset: 0, data: new Float32Array([7, 8]) },
 * ];
 * const decoded = await Array.fromAsync(
 *   ReadableStream.from(slabs).pipeThrough(new ArrowIpcEncodeStream()).pipeThrough(new ArrowIpcDecodeStream()),
 * );
 * assert.deepEqual(decoded.map((s) => [s.tensor.name, Array.from(s.data)]), [["a", [1, 2, 3, 4, 5, 6]], ["b", [7, 8]]]);
 * ```
 */
export class ArrowIpcEncodeStream extends TransformStream<Slab | QuantizedSlab | RawChunk, Uint8Array> {
  /**
   * Creates the encoder. It takes no options: the layout follows from each
   * tensor's first slab.
   *
   * @throws {TypeError} (from the stream, per chunk) If a chunk is not a
   *   well-formed slab, or a quantized tensor's scales do not follow its rows
   *   and its first slab does not carry them all.
   * @throws {RangeError} (from the stream, per chunk) If a slab lies outside
   *   its tensor, or a row index exceeds Int32.
   */
  constructor() {
    const encoder = new ArrowIpcEncoder();
    super({
      transform: (chunk, controller) => encoder.write(chunk, (bytes) => controller.enqueue(bytes)),
      flush: (controller) => encoder.end((bytes) => controller.enqueue(bytes)),
    });
  }
}

/**
 * The work of {@linkcode ArrowIpcEncodeStream}, synchronously: each chunk's
 * Arrow IPC bytes are handed to a callback, which must be done with them (or
 * copy them) before the chunk's memory is reused, as a loop writing each piece
 * to a file is.
 *
 * @example
 * ```ts
 * import { ArrowIpcDecodeStream, ArrowIpcEncoder } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const encoder = new ArrowIpcEncoder();
 * const pieces: Uint8Array[] = [];
 * const keep = (bytes: Uint8Array) => pieces.push(bytes.slice());
 * encoder.write({ tensor: { name: "w", dtype: "float32", shape: [2] }, offset: 0, data: new Float32Array([1, 2]) }, keep);
 * encoder.end(keep);
 * const decoded = await Array.fromAsync(ReadableStream.from(pieces).pipeThrough(new ArrowIpcDecodeStream()));
 * assert.deepEqual(Array.from(decoded[0].data), [1, 2]);
 * ```
 */
export class ArrowIpcEncoder {
  #open: OpenStream | undefined;

  /**
   * Encodes a chunk: a float slab, a quantized slab, or raw bytes of a float tensor (written as float slabs).
   *
   * @param input The chunk.
   * @param emit Called with each piece of output, in order.
   * @throws {TypeError} If the chunk is not a well-formed slab, or a quantized tensor's scales do not follow its
   *   rows and its first slab does not carry them all.
   * @throws {RangeError} If a slab lies outside its tensor, or a row index exceeds Int32.
   */
  write(input: Slab | QuantizedSlab | RawChunk, emit: (bytes: Uint8Array) => void): void {
    // A float tensor left unquantized arrives as raw bytes; it is written as float slabs.
    const chunk = input?.kind === "raw" ? rawToSlab(input) : input;
    if (chunk === null || typeof chunk !== "object" || !ArrayBuffer.isView(chunk.data)) {
      throw new TypeError(`ArrowIpcEncodeStream expects Slab or QuantizedSlab chunks; got ${describeChunk(chunk)}`);
    }
    const key = streamKey(chunk);
    const prefix: Uint8Array[] = [];
    let open = this.#open;
    if (!open || open.key !== key || !fitsLayout(open.layout, chunk)) {
      // The same tensor continues in a new stream when a slab leaves the list entries of the open one.
      if (open) prefix.push(Uint8Array.from(END_OF_STREAM));
      open = this.#open = startStream(key, chunk, open?.key === key ? open : undefined);
      prefix.push(schemaMessage(open.layout.schema));
    }
    const body = open.layout.kind === "slab"
      ? slabBody(open.layout, chunk as Slab)
      : quantizedSlabBody(open.layout, chunk as QuantizedSlab, open.carry);
    for (const bytes of batchChunks(prefix, body)) emit(bytes);
  }

  /**
   * Ends the last tensor's stream.
   *
   * @param emit Called with the end-of-stream marker, if a stream is open.
   */
  end(emit: (bytes: Uint8Array) => void): void {
    if (this.#open) emit(Uint8Array.from(END_OF_STREAM));
    this.#open = undefined;
  }
}

function rawToSlab(chunk: RawChunk): Slab {
  const dtype = floatDTypeOf(chunk.dtype);
  if (!dtype) {
    throw new TypeError(
      `ArrowIpcEncodeStream: tensor "${chunk.name}" has dtype ${chunk.dtype}, which the Arrow slab layout cannot hold; filter it out first`,
    );
  }
  const { buffer, byteOffset, byteLength } = chunk.bytes;
  const size = dtype === "float32" ? 4 : 2;
  if (byteOffset % size !== 0 || chunk.offset % size !== 0) {
    throw new TypeError(
      `ArrowIpcEncodeStream: raw chunk of tensor "${chunk.name}" is not aligned to its ${size}-byte elements`,
    );
  }
  const data = size === 4
    ? new Float32Array(buffer, byteOffset, byteLength / 4)
    : new Uint16Array(buffer, byteOffset, byteLength / 2);
  return { kind: "slab", tensor: { name: chunk.name, dtype, shape: chunk.shape }, offset: chunk.offset / size, data };
}

function startStream(key: string, chunk: Slab | QuantizedSlab, previous: OpenStream | undefined): OpenStream {
  const layout = chunk.kind === "quantized"
    ? planQuantizedLayout(chunk, previous?.layout.kind === "quantized" ? previous.layout : undefined)
    : planSlabLayout(chunk);
  return { key, layout, carry: previous?.carry ?? emptyCarry() };
}

function describeChunk(chunk: unknown): string {
  if (chunk === null || typeof chunk !== "object") return String(chunk);
  return chunk.constructor?.name ?? "object";
}

/**
 * The Arrow IPC sink of a slab pipeline: the same as
 * `new ArrowIpcEncodeStream()`, named for symmetry with the other sinks.
 *
 * @returns A stream from slabs to Arrow IPC bytes (one IPC stream per tensor).
 *
 * @example
 * ```ts
 * import { toArrowIPC } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const slab = { tensor: { name: "w", dtype: "float32" as const, shape: [1, 2] }, offset: 0, data: new Float32Array([1, 2]) };
 * const chunks = await Array.fromAsync(ReadableStream.from([slab]).pipeThrough(toArrowIPC()));
 * assert.deepEqual(Array.from(chunks.at(-1)!), [255, 255, 255, 255, 0, 0, 0, 0]);
 * ```
 */
export function toArrowIPC(): TransformStream<Slab | QuantizedSlab | RawChunk, Uint8Array> {
  return new ArrowIpcEncodeStream();
}
