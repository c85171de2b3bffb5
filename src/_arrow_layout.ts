/**
 * The layout of an Arrow tensor stream (README.md, "Arrow layout"): which columns
 * it has, how many elements a list entry holds, where the scales go, and the
 * schema (with its metadata) that records all of it. The encoder plans a
 * layout from a stream's first slab; `_arrow_schema.ts` reads one back.
 *
 * Internal. The schema is described by plain values (`SchemaSpec`), not
 * apache-arrow's classes: the encoder writes it itself
 * (`_arrow_ipc_message.ts`) and a job writing Arrow need not load apache-arrow
 * (~0.1 s in Deno, 0.06 s in Bun).
 *
 * @module
 */
import { checkQuantizedSlab, checkSlab, fullBlockSizes, product } from "./_arrow_checks.ts";
import { decodeFloat16 } from "./float16.ts";
import { bitsOf, isSigned, storesZeroPoint } from "./ranges.ts";
import type { FloatDType, QuantizedSlab, QuantizedTensorInfo, Slab, TensorInfo } from "./types.ts";

/** Schema metadata keys (README.md, "Arrow layout"). */
export const META = {
  kind: "quantflow.kind",
  name: "quantflow.name",
  dtype: "quantflow.dtype",
  shape: "quantflow.shape",
  listSize: "quantflow.list_size",
  config: "quantflow.config",
  scaleLayout: "quantflow.scale_layout",
  scale: "quantflow.scale",
  zeroPoint: "quantflow.zero_point",
} as const;

/** Column layout of one IPC stream of float slabs. */
export interface SlabLayout {
  readonly kind: "slab";
  readonly tensor: TensorInfo;
  /** Elements per list entry: a divisor of the row length. */
  readonly listSize: number;
  readonly numel: number;
  readonly schema: SchemaSpec;
}

/** How a quantized stream carries its scales. */
export type ScaleLayout =
  /** One `scale` list per entry: scales `[e * perEntry, (e + 1) * perEntry)` (listSize >= run). */
  | { readonly kind: "column"; readonly perEntry: number; readonly run: number; readonly duplicated: false }
  /** Split rows (listSize < run): each entry holds the scale of the block containing it. */
  | { readonly kind: "column"; readonly perEntry: 1; readonly run: number; readonly duplicated: true }
  /** All scales in the schema metadata. */
  | {
    readonly kind: "metadata";
    readonly scale: Float32Array | Uint16Array;
    readonly zeroPoint: Int8Array | Uint8Array | undefined;
  };

/** Column layout of one IPC stream of quantized slabs. */
export interface QuantizedLayout {
  readonly kind: "quantized";
  readonly info: QuantizedTensorInfo;
  readonly listSize: number;
  readonly numel: number;
  /** Number of scales of the tensor. */
  readonly blockCount: number;
  /** Bytes of `q` per entry: `listSize` or `ceil(listSize / 2)` for 4-bit. */
  readonly qSize: number;
  readonly zeroPoints: boolean;
  readonly scales: ScaleLayout;
  readonly schema: SchemaSpec;
}

/** The layout of one IPC stream. */
export type StreamLayout = SlabLayout | QuantizedLayout;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** The length of a "row": numel / shape[0] for rank >= 2, the whole tensor for rank 0 and 1. */
export function rowLength(shape: readonly number[]): number {
  return shape.length >= 2 ? product(shape.slice(1)) : product(shape);
}

// ---------------------------------------------------------------------------
// Arrow types and schemas

/** An Arrow type of the layout: a primitive, or a fixed-size list of non-nullable `item`s. */
export type ColumnType =
  | { readonly kind: "int"; readonly bits: 8 | 16 | 32; readonly signed: boolean }
  | { readonly kind: "float"; readonly bits: 16 | 32 }
  | { readonly kind: "list"; readonly size: number; readonly item: ColumnType };

/** A column: its name and type. Every column of the layout is non-nullable: every element of a slab is present. */
export type Column = readonly [name: string, type: ColumnType];

/** The schema of a stream. */
export interface SchemaSpec {
  readonly fields: readonly Column[];
  readonly metadata: ReadonlyMap<string, string>;
}

const INT32: ColumnType = { kind: "int", bits: 32, signed: true };

/** A type as the decoder's checks and messages spell it: `Int32`, `Uint8`, `Float16`, `FixedSizeList<4, Float32>`. */
export function describeType(type: ColumnType): string {
  switch (type.kind) {
    case "int":
      return `${type.signed ? "Int" : "Uint"}${type.bits}`;
    case "float":
      return `Float${type.bits}`;
    case "list":
      return `FixedSizeList<${type.size}, ${describeType(type.item)}>`;
  }
}

function valueType(dtype: FloatDType): ColumnType {
  // bfloat16 has no Arrow type: its bits travel as Uint16.
  return dtype === "bfloat16"
    ? { kind: "int", bits: 16, signed: false }
    : { kind: "float", bits: dtype === "float32" ? 32 : 16 };
}

function listOf(size: number, item: ColumnType): ColumnType {
  return { kind: "list", size, item };
}

function int8(signed: boolean): ColumnType {
  return { kind: "int", bits: 8, signed };
}

/** The schema of a stream. */
export function buildSchema(fields: Column[], metadata: ReadonlyMap<string, string>): SchemaSpec {
  return { fields, metadata };
}

/** The columns of a float slab stream. */
export function slabFields(L: number, dtype: FloatDType): Column[] {
  return [["row", INT32], ["values", listOf(L, valueType(dtype))]];
}

// ---------------------------------------------------------------------------
// Planning a layout from a stream's first slab (encoder side)

/** The list size for a stream starting with elements `[offset, offset + length)`: the largest divisor of the row length aligned to both. */
function chooseListSize(rowLen: number, offset: number, length: number): number {
  return gcd(gcd(rowLen, offset), length) || 1;
}

/** Whether a slab's elements fall on whole list entries of a layout. */
export function fitsLayout(layout: StreamLayout, slab: Slab | QuantizedSlab): boolean {
  const L = layout.listSize;
  return slab.offset % L === 0 && slab.data.length % L === 0;
}

/**
 * The layout of a float slab stream that starts with `slab`.
 *
 * @throws {TypeError} If the slab is malformed.
 * @throws {RangeError} If its elements lie outside its tensor.
 */
export function planSlabLayout(slab: Slab): SlabLayout {
  const { tensor, numel } = checkSlab(slab);
  const L = chooseListSize(rowLength(tensor.shape), slab.offset, slab.data.length);
  const metadata = new Map([
    [META.kind, "slab"],
    [META.name, tensor.name],
    [META.dtype, tensor.dtype],
    [META.shape, JSON.stringify(tensor.shape)],
    [META.listSize, String(L)],
  ]);
  const schema = buildSchema(slabFields(L, tensor.dtype), metadata);
  return {
    kind: "slab",
    tensor: { name: tensor.name, dtype: tensor.dtype, shape: [...tensor.shape] },
    listSize: L,
    numel,
    schema,
  };
}

/**
 * Whether the scales follow the rows, and if so the length of the runs of
 * consecutive elements that share a scale within a row (blocks on axes >= 1
 * must be contiguous runs: 1s, then any size, then whole axes).
 */
export function rowRun(info: QuantizedTensorInfo): number | undefined {
  if (info.granularity === "per_tensor" || info.shape.length < 2) return undefined;
  const b = fullBlockSizes(info);
  if (b[0] !== 1) return undefined;
  let k = 1;
  while (k < b.length && b[k] === 1) k++;
  for (let i = k + 1; i < b.length; i++) if (b[i] !== info.shape[i]) return undefined;
  return product(b.slice(1));
}

function quantizedMetadata(
  info: QuantizedTensorInfo,
  L: number,
  scaleLayout: "column" | "metadata",
): Map<string, string> {
  const config = {
    sourceDType: info.sourceDType,
    dtype: info.dtype,
    mode: info.mode,
    granularity: info.granularity,
    axis: info.axis,
    shape: info.shape,
    blockSizes: info.blockSizes,
    scaleShape: info.scaleShape,
    scaleDType: info.scaleDType,
  };
  return new Map([
    [META.kind, "quantized"],
    [META.name, info.name],
    [META.config, JSON.stringify(config)],
    [META.listSize, String(L)],
    [META.scaleLayout, scaleLayout],
  ]);
}

/** The columns of a quantized stream; `perEntry` is undefined when the scales are in the metadata. */
export function quantizedFields(
  info: QuantizedTensorInfo,
  qSize: number,
  perEntry: number | undefined,
  zp: boolean,
): Column[] {
  const signed = isSigned(info.dtype);
  const fields: Column[] = [["row", INT32], ["q", listOf(qSize, int8(signed))]];
  if (perEntry !== undefined) {
    fields.push(["scale", listOf(perEntry, { kind: "float", bits: info.scaleDType === "float32" ? 32 : 16 })]);
    if (zp) fields.push(["zero_point", listOf(perEntry, int8(signed))]);
  }
  return fields;
}

/**
 * The layout of a quantized slab stream that starts with `slab`.
 *
 * @param slab The first slab of the stream.
 * @param previous The layout of the tensor's previous stream, when the tensor
 *   continues in a new stream (its metadata scales are carried over).
 * @throws {TypeError} If the slab is malformed, or the scales do not follow
 *   the rows and the first slab does not carry them all.
 * @throws {RangeError} If its elements or scales lie outside its tensor.
 */
export function planQuantizedLayout(slab: QuantizedSlab, previous?: QuantizedLayout): QuantizedLayout {
  const { numel, blockCount } = checkQuantizedSlab(slab);
  const info = slab.tensor;
  const zeroPoints = storesZeroPoint(info.dtype, info.mode);
  let L = chooseListSize(rowLength(info.shape), slab.offset, slab.data.length);
  const run = rowRun(info);
  let scales: ScaleLayout;
  if (run !== undefined) {
    // Make either run | L (whole blocks per entry) or L | run (entries within one block).
    if (L % run !== 0) L = gcd(L, run);
    scales = L >= run
      ? { kind: "column", perEntry: L / run, run, duplicated: false }
      : { kind: "column", perEntry: 1, run, duplicated: true };
  } else if (previous?.scales.kind === "metadata") {
    scales = previous.scales;
  } else {
    if (slab.scaleOffset !== 0 || slab.scale.length !== blockCount) {
      throw new TypeError(
        `Cannot write tensor "${info.name}" as Arrow: its scales (${info.granularity}, blockSizes ${
          JSON.stringify(info.blockSizes)
        }) ` +
          `do not follow the rows, so its first slab must carry all ${blockCount}; it carries [${slab.scaleOffset}, ${
            slab.scaleOffset + slab.scale.length
          })`,
      );
    }
    scales = { kind: "metadata", scale: slab.scale, zeroPoint: zeroPoints ? slab.zeroPoint : undefined };
  }
  const metadata = quantizedMetadata(info, L, scales.kind);
  if (scales.kind === "metadata") {
    // float16 scales are written as their exact values (every float16 is a float32), so the reader's
    // rounding back to float16 gives the same bits. A NaN scale becomes JSON null, which the reader rejects.
    const scale = scales.scale;
    const values = Array.from(
      scale instanceof Float32Array ? scale : decodeFloat16(scale, new Float32Array(scale.length)),
    );
    metadata.set(META.scale, JSON.stringify(values));
    if (scales.zeroPoint) metadata.set(META.zeroPoint, JSON.stringify(Array.from(scales.zeroPoint)));
  }
  return quantizedLayout(info, L, numel, blockCount, scales, metadata);
}

/**
 * The layout of a quantized stream of `L` elements per list entry, its
 * scales placed as `scales`, its schema carrying `metadata`.
 */
export function quantizedLayout(
  info: QuantizedTensorInfo,
  L: number,
  numel: number,
  blockCount: number,
  scales: ScaleLayout,
  metadata: ReadonlyMap<string, string>,
): QuantizedLayout {
  const zeroPoints = storesZeroPoint(info.dtype, info.mode);
  const qSize = bitsOf(info.dtype) === 4 ? (L + 1) >> 1 : L;
  const perEntry = scales.kind === "column" ? scales.perEntry : undefined;
  return {
    kind: "quantized",
    info: copyInfo(info),
    listSize: L,
    numel,
    blockCount,
    qSize,
    zeroPoints,
    scales,
    schema: buildSchema(quantizedFields(info, qSize, perEntry, zeroPoints), metadata),
  };
}

/** A copy of a tensor's description, so that a layout shares no arrays with the caller's slab. */
export function copyInfo(info: QuantizedTensorInfo): QuantizedTensorInfo {
  return {
    name: info.name,
    sourceDType: info.sourceDType,
    dtype: info.dtype,
    mode: info.mode,
    granularity: info.granularity,
    axis: info.axis,
    shape: [...info.shape],
    blockSizes: [...info.blockSizes],
    scaleShape: [...info.scaleShape],
    scaleDType: info.scaleDType,
  };
}
