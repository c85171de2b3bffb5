/**
 * Writing a safetensors file from a stream of quantized slabs and raw chunks,
 * in one pass, and making it appear under its name only when complete.
 *
 * Output convention for a quantized tensor `NAME` (DESIGN.md, "safetensors
 * output convention"): `NAME` holds the values (int8 as I8 and uint8 as U8
 * with the original shape; int4 and uint4 packed two per byte over the whole
 * tensor, SPEC.md Section 5, as U8 of shape `[ceil(numel / 2)]`), then
 * `NAME.scale` (F32 or F16, shape `scaleShape`), then, when
 * `storesZeroPoint(dtype, mode)`, `NAME.zero_point` (one byte per block: I8
 * for signed, U8 for unsigned, shape `scaleShape`).
 *
 * @module
 */
import { bitsOf, isSigned, storesZeroPoint } from "../src/ranges.ts";
import { encodeSafetensorsHeader } from "../src/safetensors_header.ts";
import type { QuantizedSlab, QuantizedTensorInfo, RawChunk } from "../src/types.ts";
import { PendingFile } from "./_pending_file.ts";

/** One tensor of the output file. */
export interface OutputTensorSpec {
  /** Tensor name. */
  readonly name: string;
  /** safetensors dtype code, e.g. `I8`, `F16`. */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Byte length of the data: element count x dtype size. */
  readonly byteLength: number;
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

/**
 * The output tensors of a quantized tensor, in file order: `NAME`,
 * `NAME.scale` and, when the dtype and mode store zero points,
 * `NAME.zero_point`.
 *
 * @example
 * ```ts
 * import { quantizedSpecs } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const specs = quantizedSpecs({
 *   name: "w", sourceDType: "float16", dtype: "uint4", mode: "linear", granularity: "per_channel",
 *   axis: 0, shape: [3, 3], blockSizes: [1, 0], scaleShape: [3, 1], scaleDType: "float16",
 * });
 * assert.deepEqual(specs.map((s) => [s.name, s.dtype, s.byteLength]), [
 *   ["w", "U8", 5], ["w.scale", "F16", 6], ["w.zero_point", "U8", 3],
 * ]);
 * ```
 *
 * @param info How the tensor was quantized.
 * @returns Two or three specs.
 */
export function quantizedSpecs(info: QuantizedTensorInfo): OutputTensorSpec[] {
  const numel = product(info.shape);
  const blocks = product(info.scaleShape);
  const signed = isSigned(info.dtype);
  const specs: OutputTensorSpec[] = [
    bitsOf(info.dtype) === 4
      ? { name: info.name, dtype: "U8", shape: [Math.ceil(numel / 2)], byteLength: Math.ceil(numel / 2) }
      : { name: info.name, dtype: signed ? "I8" : "U8", shape: [...info.shape], byteLength: numel },
    {
      name: `${info.name}.scale`,
      dtype: info.scaleDType === "float32" ? "F32" : "F16",
      shape: [...info.scaleShape],
      byteLength: blocks * (info.scaleDType === "float32" ? 4 : 2),
    },
  ];
  if (storesZeroPoint(info.dtype, info.mode)) {
    specs.push({
      name: `${info.name}.zero_point`,
      dtype: signed ? "I8" : "U8",
      shape: [...info.scaleShape],
      byteLength: blocks,
    });
  }
  return specs;
}

/** Per-tensor state of the quantized tensor being written. */
interface QuantizedState {
  readonly info: QuantizedTensorInfo;
  readonly numel: number;
  readonly packed: boolean;
  /** Elements received so far. */
  elements: number;
  /** Low nibble waiting for its partner (4-bit), or -1. */
  pendingNibble: number;
  readonly scale: Uint8Array;
  readonly scaleElementSize: number;
  readonly zeroPoint: Uint8Array | undefined;
  /** Scales received so far. */
  scales: number;
}

function asBytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Encodes a safetensors file, synchronously: the header first (every size is
 * known up front), then the data of each spec in order, handed to a callback.
 *
 * A {@linkcode RawChunk} fills the spec of its name. A
 * {@linkcode QuantizedSlab} of tensor `NAME` fills `NAME` with its values
 * (4-bit values packed, an odd nibble carried into the next slab); its scales
 * and zero points are gathered and written as `NAME.scale` and
 * `NAME.zero_point` right after the last value. Chunks must come in spec
 * order, each tensor's from offset 0 upwards; specs of zero bytes need no
 * chunk.
 *
 * The bytes handed over may share memory with the chunks (8-bit values and raw
 * bytes pass through uncopied).
 *
 * @example
 * ```ts
 * import { SafetensorsEncoder, parseSafetensorsHeader } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const encoder = new SafetensorsEncoder([{ name: "ids", dtype: "I64", shape: [2], byteLength: 16 }], {});
 * const parts = [encoder.header];
 * encoder.write({ kind: "raw", name: "ids", dtype: "I64", shape: [2], offset: 0, bytes: new Uint8Array(16) }, (b) => {
 *   parts.push(b.slice());
 * });
 * encoder.end();
 * const file = Uint8Array.from(parts.flatMap((p) => [...p]));
 * assert.equal(parseSafetensorsHeader(file, file.length).entries[0].name, "ids");
 * ```
 */
export class SafetensorsEncoder {
  /** The file's header: its 8-byte length, then the JSON. */
  readonly header: Uint8Array;
  readonly #specs: readonly OutputTensorSpec[];
  readonly #index: Map<string, number>;
  /** Index of the spec being filled. */
  #current = 0;
  /** Bytes of `specs[current]` written. */
  #written = 0;
  #quantized: QuantizedState | undefined;

  /**
   * Builds the header at once, so that bad specs fail before any data flows.
   *
   * @param specs The output tensors, in file order (use {@linkcode quantizedSpecs} for quantized tensors).
   * @param metadata The header's `__metadata__` map.
   * @throws {RangeError} When a spec is invalid (see `encodeSafetensorsHeader`).
   * @throws {TypeError} When a metadata value is not a string.
   */
  constructor(specs: readonly OutputTensorSpec[], metadata: Readonly<Record<string, string>>) {
    this.header = encodeSafetensorsHeader(specs, metadata);
    this.#specs = specs;
    this.#index = new Map(specs.map((s, i) => [s.name, i]));
  }

  /**
   * Encodes a chunk.
   *
   * @param chunk A raw chunk or a quantized slab, in spec order.
   * @param emit Called with each piece of data, in file order; done with it when it returns, or copies it.
   * @throws {RangeError} When the chunk is out of order or does not fit its spec.
   * @throws {TypeError} When it is neither a raw chunk nor a quantized slab.
   */
  write(chunk: QuantizedSlab | RawChunk, emit: (bytes: Uint8Array) => void): void {
    if (chunk?.kind === "raw") this.#writeRaw(chunk, emit);
    else if (chunk?.kind === "quantized") this.#writeQuantized(chunk, emit);
    else {
      throw new TypeError(
        `Cannot encode a chunk of kind ${
          (chunk as { kind?: unknown } | undefined)?.kind
        }: a safetensors encoder takes raw chunks and quantized slabs`,
      );
    }
  }

  /**
   * Checks that every spec was filled.
   *
   * @throws {RangeError} When the input ended early.
   */
  end(): void {
    const q = this.#quantized;
    if (q !== undefined) fail(q.info.name, `the input ended after ${q.elements} of ${q.numel} elements`);
    const specs = this.#specs;
    for (let i = this.#current; i < specs.length; i++) {
      const done = i === this.#current ? this.#written : 0;
      if (done !== specs[i].byteLength) {
        fail(specs[i].name, `the input ended after ${done} of ${specs[i].byteLength} bytes`);
      }
    }
  }

  /** Moves `current` to the spec named `name`, which must be next (only empty specs may be passed over). */
  #seek(name: string): void {
    const target = this.#index.get(name);
    if (target === undefined) fail(name, "it is not among the output tensors");
    if (target === this.#current) return;
    const specs = this.#specs;
    if (target! < this.#current) fail(name, `its data already ended; now writing "${specs[this.#current]?.name}"`);
    for (let i = this.#current; i < target!; i++) {
      const done = i === this.#current ? this.#written : 0;
      if (done !== specs[i].byteLength) {
        fail(
          name,
          `it came before the data of "${specs[i].name}" was complete (${done} of ${specs[i].byteLength} bytes)`,
        );
      }
    }
    this.#current = target!;
    this.#written = 0;
  }

  #emit(name: string, bytes: Uint8Array, emit: (bytes: Uint8Array) => void): void {
    const spec = this.#specs[this.#current];
    if (this.#written + bytes.length > spec.byteLength) {
      fail(name, `${this.#written + bytes.length} bytes of data, the header says ${spec.byteLength}`);
    }
    this.#written += bytes.length;
    if (bytes.length > 0) emit(bytes);
  }

  /** The next spec, for the scale and zero-point tensors that follow `NAME` (checked in #startQuantized). */
  #next(): void {
    this.#current++;
    this.#written = 0;
  }

  #writeRaw(chunk: RawChunk, emit: (bytes: Uint8Array) => void): void {
    if (this.#quantized !== undefined) fail(chunk.name, `it came before "${this.#quantized.info.name}" was complete`);
    this.#seek(chunk.name);
    const spec = this.#specs[this.#current];
    if (chunk.dtype !== spec.dtype) fail(chunk.name, `chunk dtype ${chunk.dtype}, the header says ${spec.dtype}`);
    if (chunk.offset !== this.#written) {
      fail(chunk.name, `chunk at byte ${chunk.offset}, expected byte ${this.#written}`);
    }
    this.#emit(chunk.name, chunk.bytes, emit);
  }

  #startQuantized(info: QuantizedTensorInfo): QuantizedState {
    this.#seek(info.name);
    const expected = quantizedSpecs(info);
    for (let k = 0; k < expected.length; k++) {
      const e = expected[k];
      const s = this.#specs[this.#current + k];
      if (
        s === undefined || s.name !== e.name || s.dtype !== e.dtype || s.byteLength !== e.byteLength ||
        s.shape.length !== e.shape.length || s.shape.some((d, i) => d !== e.shape[i])
      ) {
        fail(
          info.name,
          `output spec ${this.#current + k} is ${JSON.stringify(s)}, the quantized tensor needs ${JSON.stringify(e)}`,
        );
      }
    }
    const blocks = product(info.scaleShape);
    const scaleElementSize = info.scaleDType === "float32" ? 4 : 2;
    return {
      info,
      numel: product(info.shape),
      packed: bitsOf(info.dtype) === 4,
      elements: 0,
      pendingNibble: -1,
      scale: new Uint8Array(blocks * scaleElementSize),
      scaleElementSize,
      zeroPoint: storesZeroPoint(info.dtype, info.mode) ? new Uint8Array(blocks) : undefined,
      scales: 0,
    };
  }

  #writeQuantized(slab: QuantizedSlab, emit: (bytes: Uint8Array) => void): void {
    const name = slab.tensor.name;
    if (this.#quantized !== undefined && this.#quantized.info.name !== name) {
      fail(name, `it came before "${this.#quantized.info.name}" was complete`);
    }
    const q = this.#quantized ??= this.#startQuantized(slab.tensor);
    if (slab.offset !== q.elements) fail(name, `slab at element ${slab.offset}, expected element ${q.elements}`);
    if (q.elements + slab.data.length > q.numel) {
      fail(name, `${q.elements + slab.data.length} elements, the shape ${JSON.stringify(q.info.shape)} has ${q.numel}`);
    }
    gatherScales(q, slab);
    q.elements += slab.data.length;
    this.#emit(name, q.packed ? packNibbles(q, slab.data) : asBytes(slab.data), emit);
    if (q.elements < q.numel) return;
    if (q.pendingNibble >= 0) this.#emit(name, new Uint8Array([q.pendingNibble]), emit);
    const blocks = q.scale.length / q.scaleElementSize;
    if (q.scales !== blocks) fail(name, `all ${q.numel} elements came with ${q.scales} of ${blocks} scales`);
    this.#quantized = undefined;
    this.#next();
    this.#emit(`${name}.scale`, q.scale, emit);
    if (q.zeroPoint !== undefined) {
      this.#next();
      this.#emit(`${name}.zero_point`, q.zeroPoint, emit);
    }
  }
}

function fail(name: string, detail: string): never {
  throw new RangeError(`Cannot write tensor "${name}": ${detail}`);
}

/**
 * Encodes a safetensors file as a stream: emits the header first (every size
 * is known up front), then the data of each spec in order, as
 * {@linkcode SafetensorsEncoder} does.
 *
 * Output chunks may share memory with the input chunks (8-bit values and raw
 * bytes pass through uncopied): a producer hands its buffers over and must
 * not reuse them, unless the consumer is done with each chunk before the
 * producer makes more than a few new ones, as a synchronous file writer such
 * as {@linkcode writeFileAtomically} is (`quantizeSafetensors` with
 * `reuseBuffers` reuses a ring of 8 buffers on that ground).
 *
 * @example
 * ```ts
 * import { SafetensorsEncodeStream, parseSafetensorsHeader } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const chunk = { kind: "raw", name: "ids", dtype: "I64", shape: [2], offset: 0, bytes: new Uint8Array(16) } as const;
 * const parts = await Array.fromAsync(
 *   ReadableStream.from([chunk]).pipeThrough(
 *     new SafetensorsEncodeStream([{ name: "ids", dtype: "I64", shape: [2], byteLength: 16 }], {}),
 *   ),
 * );
 * const file = Uint8Array.from(parts.flatMap((p) => [...p]));
 * assert.equal(parseSafetensorsHeader(file, file.length).entries[0].name, "ids");
 * ```
 */
export class SafetensorsEncodeStream extends TransformStream<QuantizedSlab | RawChunk, Uint8Array> {
  /**
   * Builds the header at once, so that bad specs fail before any data flows.
   *
   * @param specs The output tensors, in file order (use
   *   {@linkcode quantizedSpecs} for quantized tensors).
   * @param metadata The header's `__metadata__` map.
   * @throws {RangeError} When a spec is invalid (see `encodeSafetensorsHeader`).
   * @throws {TypeError} When a metadata value is not a string.
   */
  constructor(specs: readonly OutputTensorSpec[], metadata: Readonly<Record<string, string>>) {
    const encoder = new SafetensorsEncoder(specs, metadata);
    super({
      start: (controller) => controller.enqueue(encoder.header),
      transform: (chunk, controller) => encoder.write(chunk, (bytes) => controller.enqueue(bytes)),
      flush: () => encoder.end(),
    });
  }
}

/** Copies a slab's scales (and zero points) into the tensor's buffers at `scaleOffset`. */
function gatherScales(q: QuantizedState, slab: QuantizedSlab): void {
  const name = q.info.name;
  const count = slab.scale.length;
  if (count === 0) return;
  const want = q.info.scaleDType === "float32" ? Float32Array : Uint16Array;
  if (!(slab.scale instanceof want)) {
    throw new RangeError(
      `Cannot write tensor "${name}": scales are a ${slab.scale.constructor.name}, scaleDType ${q.info.scaleDType} needs a ${want.name}`,
    );
  }
  const blocks = q.scale.length / q.scaleElementSize;
  if (slab.scaleOffset + count > blocks) {
    throw new RangeError(
      `Cannot write tensor "${name}": scales ${slab.scaleOffset}-${
        slab.scaleOffset + count - 1
      } beyond the ${blocks} of shape ${JSON.stringify(q.info.scaleShape)}`,
    );
  }
  q.scale.set(asBytes(slab.scale), slab.scaleOffset * q.scaleElementSize);
  if (q.zeroPoint !== undefined) {
    if (slab.zeroPoint === undefined || slab.zeroPoint.length !== count) {
      throw new RangeError(
        `Cannot write tensor "${name}": a slab carries ${count} scales and ${
          slab.zeroPoint?.length ?? "no"
        } zero points`,
      );
    }
    q.zeroPoint.set(asBytes(slab.zeroPoint), slab.scaleOffset);
  }
  q.scales += count;
}

/** Packs 4-bit values two per byte, low nibble first (SPEC.md Section 5), across slab boundaries. */
function packNibbles(q: QuantizedState, data: Int8Array | Uint8Array): Uint8Array {
  let i = 0;
  let o = 0;
  const carry = q.pendingNibble >= 0 ? 1 : 0;
  const out = new Uint8Array((carry + data.length) >> 1);
  if (carry && data.length > 0) {
    out[o++] = q.pendingNibble | ((data[0] & 15) << 4);
    q.pendingNibble = -1;
    i = 1;
  }
  const pairsEnd = i + ((data.length - i) & ~1);
  for (; i < pairsEnd; i += 2) out[o++] = (data[i] & 15) | ((data[i + 1] & 15) << 4);
  if (i < data.length) q.pendingNibble = data[i] & 15;
  return out;
}

/** Options of {@linkcode writeFileAtomically}. */
export interface WriteFileAtomicallyOptions {
  /**
   * Flush the data to disk before renaming, so that after a crash the name
   * holds either nothing or the whole file.
   * @default {true}
   */
  fsync?: boolean;
}

/**
 * A sink that writes a file under a temporary name in the same directory
 * (`path + ".<random>.tmp"`) and renames it to `path` when the stream closes;
 * on abort or error the temporary file is removed. The file thus appears
 * under its name only when complete, replacing any previous one.
 *
 * @example
 * ```ts
 * import { writeFileAtomically } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { readFileSync, rmSync } from "node:fs";
 * import { join } from "node:path";
 * import { tmpdir } from "node:os";
 * const path = join(tmpdir(), `atomic-example-${crypto.randomUUID()}.bin`);
 * await ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3])]).pipeTo(writeFileAtomically(path));
 * assert.deepEqual([...readFileSync(path)], [1, 2, 3]);
 * rmSync(path);
 * ```
 *
 * @param path Final path of the file.
 * @param options Durability.
 * @returns A writable stream of the file's bytes.
 * @throws {Error} When the temporary file cannot be created (the runtime's
 *   `ENOENT`, `EACCES`, ...); a failed write or rename errors the stream.
 */
export function writeFileAtomically(
  path: string,
  options: WriteFileAtomicallyOptions = {},
): WritableStream<Uint8Array> {
  const fsync = options.fsync ?? true;
  const file = new PendingFile(path);
  // Synchronous writes on purpose: a chunk may sit in a reused slab buffer (quantizeFile's rings), which is
  // safe only because it is written the moment it arrives. An asynchronous write leaves it in flight while a
  // two-pass tensor reads its whole first pass through the same ring (tests/quantize_pipeline_test.ts caught
  // that in Bun), and was no faster in our measurements.
  return new WritableStream<Uint8Array>({
    // A failed write errors the stream without calling abort: PendingFile cleans up itself.
    write: (chunk) => file.write(chunk),
    close: () => file.commit(fsync),
    abort: () => file.discard(),
  });
}
