/**
 * Dequantizing a quantized safetensors checkpoint back to its source float
 * types, reading the scales first and the data in slabs.
 *
 * @module
 */
import { BlockLayout } from "../src/block_layout.ts";
import { BufferRing, FILE_JOB_RING_SLOTS, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { type ByteSource, openFileSource } from "../src/byte_source.ts";
import { dequantizeValues } from "../src/dequantize_kernel.ts";
import { isArrowIPC } from "../src/_file_kind.ts";
import { FormatError } from "../src/errors.ts";
import { decodeFloat16 } from "../src/float16.ts";
import { unpackInt4 } from "../src/pack.ts";
import { bitsOf, isSigned, storesZeroPoint } from "../src/ranges.ts";
import { elementCount } from "../src/report.ts";
import {
  floatDTypeOf,
  parseSafetensorsHeader,
  safetensorsCodeOf,
  type SafetensorsEntry,
  type SafetensorsHeader,
  safetensorsHeaderSize,
} from "../src/safetensors_header.ts";
import type { RawChunk } from "../src/types.ts";
import { DEFAULT_SLAB_BYTES } from "./safetensors_source.ts";
import { QUANTFLOW_METADATA_KEY, type QuantizedTensorRecord } from "./quantize_pipeline.ts";
import { type OutputTensorSpec, writeFileAtomically } from "./safetensors_sink.ts";
import { writeFileFrom } from "./_pending_file.ts";
import { encodePieces, safetensorsEncoder } from "./_file_job.ts";

/** Options of {@linkcode dequantizeFile}. */
export interface DequantizeFileOptions {
  /**
   * Byte budget of the quantized data read at a time.
   * @default {1048576}
   */
  slabBytes?: number;
}

/**
 * Reads and validates the header of a safetensors file.
 *
 * @param source The file.
 * @returns The header.
 * @throws {FormatError} When it is malformed.
 */
export function readHeader(source: ByteSource): SafetensorsHeader {
  const prefix = new Uint8Array(8);
  source.read(0, prefix);
  const size = safetensorsHeaderSize(prefix, source.size);
  const bytes = new Uint8Array(size);
  source.read(0, bytes);
  return parseSafetensorsHeader(bytes, source.size);
}

/**
 * The per-tensor quantization records of a quantized checkpoint's metadata.
 *
 * @param header A parsed header.
 * @returns Records by tensor name; empty for a checkpoint quantflow did not write.
 * @throws {FormatError} When the record is not valid JSON.
 */
export function quantizationRecords(header: SafetensorsHeader): Record<string, QuantizedTensorRecord> {
  const text = header.metadata[QUANTFLOW_METADATA_KEY];
  if (text === undefined) return {};
  try {
    return JSON.parse(text).tensors ?? {};
  } catch (cause) {
    throw new FormatError(`Cannot read __metadata__.${QUANTFLOW_METADATA_KEY}: not JSON`, { cause });
  }
}

const FLOATS = ["float32", "float16", "bfloat16"];
const QUANT_DTYPES = ["int8", "uint8", "int4", "uint4"];
const MODES = ["linear", "linear_symmetric"];

/**
 * Checks every quantization record against the file before anything is read
 * or written: a record comes from the file itself, so a damaged or crafted one
 * is bad input (a FormatError), never a crash or an out-of-bounds read.
 *
 * @param header The file's header.
 * @param records Its quantization records.
 * @throws {FormatError} Naming the tensor and what does not fit.
 */
export function checkRecords(header: SafetensorsHeader, records: Record<string, QuantizedTensorRecord>): void {
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  for (const [name, record] of Object.entries(records)) {
    const fail = (what: string): never => {
      throw new FormatError(`Cannot dequantize tensor "${name}": ${what}`);
    };
    if (typeof record !== "object" || record === null) fail("its __metadata__.quantflow record is not an object");
    const { sourceDType, dtype, mode, scaleDType, shape, blockSizes } = record;
    if (!FLOATS.includes(sourceDType)) fail(`unknown sourceDType ${JSON.stringify(sourceDType)}`);
    if (!QUANT_DTYPES.includes(dtype)) fail(`unknown dtype ${JSON.stringify(dtype)}`);
    if (!MODES.includes(mode)) fail(`unknown mode ${JSON.stringify(mode)}`);
    if (scaleDType !== "float32" && scaleDType !== "float16") fail(`unknown scaleDType ${JSON.stringify(scaleDType)}`);
    const whole = (xs: unknown) => Array.isArray(xs) && xs.every((x) => Number.isSafeInteger(x) && x >= 0);
    if (!whole(shape) || !whole(blockSizes)) fail("shape and blockSizes must be arrays of non-negative integers");
    let layout: BlockLayout;
    try {
      layout = new BlockLayout(shape, blockSizes);
    } catch (e) {
      return fail((e as Error).message);
    }
    const size = (entry: string, bytes: number) => {
      const found = byName.get(entry);
      if (!found) fail(`tensor "${entry}" is missing`);
      else if (found.end - found.begin !== bytes) {
        fail(`"${entry}" holds ${found.end - found.begin} bytes, ${bytes} expected`);
      }
    };
    const count = elementCount(shape);
    size(name, bitsOf(dtype) === 4 ? Math.ceil(count / 2) : count);
    size(`${name}.scale`, layout.blockCount * (scaleDType === "float16" ? 2 : 4));
    if (storesZeroPoint(dtype, mode)) size(`${name}.zero_point`, layout.blockCount);
  }
}

function readEntry(source: ByteSource, entry: SafetensorsEntry | undefined, what: string): Uint8Array {
  if (!entry) throw new FormatError(`Cannot dequantize: tensor "${what}" is missing`);
  const bytes = new Uint8Array(entry.end - entry.begin);
  source.read(entry.begin, bytes);
  return bytes;
}

async function* dequantizedChunks(
  source: ByteSource,
  header: SafetensorsHeader,
  records: Record<string, QuantizedTensorRecord>,
  slabBytes: number,
  ringSlots: number,
): AsyncGenerator<RawChunk> {
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  const auxiliary = new Set(Object.keys(records).flatMap((n) => [`${n}.scale`, `${n}.zero_point`]));
  // The file writer is done with each chunk before `ringSlots - 1` more are made (as in quantizeFile): chunks
  // come from a ring of reused buffers, and the quantized bytes and 16-bit intermediates from scratch buffers
  // consumed at once. Fresh memory for each slab cost more than dequantizing it (1 GiB: ~1 s of page faults).
  const ring = new BufferRing(ringSlots);
  let stored = new Uint8Array(0);
  let unpacked = new Uint8Array(0);
  let scratch = new Float32Array(0);
  for (const entry of header.entries) {
    if (auxiliary.has(entry.name)) continue;
    const record = records[entry.name];
    if (!record) {
      for (let at = entry.begin; at < entry.end; at += slabBytes) {
        const bytes = ring.take(Math.min(slabBytes, entry.end - at));
        source.read(at, bytes);
        yield {
          kind: "raw",
          name: entry.name,
          dtype: entry.dtype,
          shape: entry.shape,
          offset: at - entry.begin,
          bytes,
        };
      }
      continue;
    }
    const scaleBytes = readEntry(source, byName.get(`${entry.name}.scale`), `${entry.name}.scale`);
    const scale = record.scaleDType === "float16"
      ? decodeFloat16(new Uint16Array(scaleBytes.buffer), new Float32Array(scaleBytes.length / 2))
      : new Float32Array(scaleBytes.buffer);
    const signed = isSigned(record.dtype);
    const zeroPoint = storesZeroPoint(record.dtype, record.mode)
      ? (signed ? Int8Array : Uint8Array).from(
        readEntry(source, byName.get(`${entry.name}.zero_point`), `${entry.name}.zero_point`),
      )
      : undefined;
    const layout = new BlockLayout(record.shape, record.blockSizes);
    const size = elementCount(record.shape);
    const fourBit = bitsOf(record.dtype) === 4;
    // An even number of elements per slab keeps packed 4-bit slabs on byte boundaries.
    const step = Math.max(2, Math.floor(slabBytes / 2) * 2);
    const elementBytes = record.sourceDType === "float32" ? 4 : 2;
    for (let offset = 0; offset < size; offset += step) {
      const count = Math.min(step, size - offset);
      const storedBytes = fourBit ? Math.ceil(count / 2) : count;
      if (stored.length < storedBytes) stored = new Uint8Array(storedBytes);
      const packed = stored.subarray(0, storedBytes);
      source.read(entry.begin + (fourBit ? offset / 2 : offset), packed);
      if (fourBit && unpacked.length < count) unpacked = new Uint8Array(count);
      const q = fourBit
        ? unpackInt4(packed, count, signed, signed ? new Int8Array(unpacked.buffer, 0, count) : unpacked)
        : signed
        ? new Int8Array(packed.buffer, packed.byteOffset, count)
        : packed;
      const out = ring.take(count * elementBytes);
      let values;
      if (record.sourceDType === "float32") {
        const f32 = new Float32Array(out.buffer, out.byteOffset, count);
        values = dequantizeValues(q, offset, layout, scale, zeroPoint, "float32", f32);
      } else {
        if (scratch.length < count) scratch = new Float32Array(count);
        const u16 = new Uint16Array(out.buffer, out.byteOffset, count);
        values = dequantizeValues(q, offset, layout, scale, zeroPoint, record.sourceDType, scratch, u16);
      }
      yield {
        kind: "raw",
        name: entry.name,
        dtype: safetensorsCodeOf(record.sourceDType),
        shape: record.shape,
        offset: offset * elementBytes,
        bytes: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
      };
    }
  }
}

/**
 * Dequantizes a checkpoint written by quantflow back to float, each tensor
 * in its source dtype and shape; other tensors are copied unchanged. The
 * input is a quantized `.safetensors` file or `.arrows` file (told apart by
 * their first bytes); the output is `.safetensors` unless its name ends in
 * `.arrows`.
 *
 * @param inputPath A quantized checkpoint.
 * @param outputPath Where to write; it appears only when complete.
 * @param options Slab budget.
 * @returns The number of tensors dequantized.
 * @throws {FormatError} When the input is malformed or lacks a scale tensor.
 * @throws {RangeError} When `slabBytes` is not a positive integer, or `.arrows` output is asked of a checkpoint with
 *   tensors that are not float (the Arrow layout holds float tensors only). Nothing is written.
 */
export async function dequantizeFile(
  inputPath: string,
  outputPath: string,
  options: DequantizeFileOptions = {},
): Promise<number> {
  const slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
  if (!Number.isSafeInteger(slabBytes) || slabBytes < 1) {
    throw new RangeError(`slabBytes must be a positive integer, got ${slabBytes}`);
  }
  const source = openFileSource(inputPath);
  try {
    if (isArrowIPC(source)) {
      source.close();
      // Loaded on demand: apache-arrow (the Arrow decoder's) need not load for a safetensors input.
      const { dequantizeArrowFile } = await import("./_dequantize_arrow.ts");
      return await dequantizeArrowFile(inputPath, outputPath);
    }
    const header = readHeader(source);
    const records = quantizationRecords(header);
    checkRecords(header, records);
    const auxiliary = new Set(Object.keys(records).flatMap((n) => [`${n}.scale`, `${n}.zero_point`]));
    if (outputPath.endsWith(".arrows")) {
      const other = header.entries.filter((e) => !records[e.name] && !auxiliary.has(e.name) && !floatDTypeOf(e.dtype));
      if (other.length) {
        throw new RangeError(
          `Cannot write "${outputPath}": the Arrow layout holds float tensors only, and ${
            other.map((e) => `"${e.name}" (${e.dtype})`).join(", ")
          } are not; write .safetensors instead`,
        );
      }
      const { ArrowIpcEncodeStream } = await import("./arrow_ipc_encode_stream.ts");
      // Through streams, whose queues may hold several chunks: the rings' default size.
      await ReadableStream.from(dequantizedChunks(source, header, records, slabBytes, PIPELINE_RING_SLOTS))
        .pipeThrough(new ArrowIpcEncodeStream())
        .pipeTo(writeFileAtomically(outputPath));
      return Object.keys(records).length;
    }
    const specs: OutputTensorSpec[] = header.entries.filter((e) => !auxiliary.has(e.name)).map((e) => {
      const record = records[e.name];
      if (!record) return { name: e.name, dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin };
      const elementBytes = record.sourceDType === "float32" ? 4 : 2;
      return {
        name: e.name,
        dtype: safetensorsCodeOf(record.sourceDType),
        shape: record.shape,
        byteLength: elementCount(record.shape) * elementBytes,
      };
    });
    const { [QUANTFLOW_METADATA_KEY]: _, ...metadata } = header.metadata;
    // Each piece is written before the next chunk is made, as in quantizeFile: rings of 2 buffers suffice.
    const chunks = dequantizedChunks(source, header, records, slabBytes, FILE_JOB_RING_SLOTS);
    await writeFileFrom(encodePieces(chunks, safetensorsEncoder(specs, metadata)), outputPath);
    return Object.keys(records).length;
  } finally {
    source.close();
  }
}
