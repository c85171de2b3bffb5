/**
 * Slabs as Arrow record batches and back (the layout of docs/arrow_layout.md).
 *
 * Internal: apache-arrow types appear here and nowhere in the public API
 * (JSR's no-slow-types rule, PITFALLS 10). Columns are built around the
 * slab's own typed arrays (`makeData`, no copy, PITFALLS 7) and read back as
 * views of the IPC body; only the `row` column, 4-bit packing and the
 * duplicated scales of split rows allocate.
 *
 * @module
 */
import {
  type Data,
  type DataType,
  Field,
  FixedSizeList,
  Float16,
  Float32,
  Int32,
  Int8,
  makeData,
  Precision,
  RecordBatch,
  Schema,
  Struct,
  Type,
  Uint16,
  Uint8,
} from "apache-arrow";
import { FormatError } from "./errors.ts";
import { bitsOf, isSigned, storesZeroPoint } from "./ranges.ts";
import type {
  FloatDType,
  Granularity,
  QuantDType,
  QuantizedSlab,
  QuantizedTensorInfo,
  QuantMode,
  ScaleDType,
  Slab,
  TensorInfo,
} from "./types.ts";

/** Schema metadata keys (docs/arrow_layout.md). */
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
  readonly schema: Schema;
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
  readonly schema: Schema;
}

/** The layout of one IPC stream. */
export type StreamLayout = SlabLayout | QuantizedLayout;

/** The scale (and zero point) of the block that split rows continue in, carried across slabs by the encoder. */
export interface ScaleCarry {
  block: number;
  scale: number;
  zeroPoint: number;
}

const FLOAT_DTYPES: readonly FloatDType[] = ["float32", "float16", "bfloat16"];
const QUANT_DTYPES: readonly QuantDType[] = ["int8", "uint8", "int4", "uint4"];
const MODES: readonly QuantMode[] = ["linear", "linear_symmetric"];
const GRANULARITIES: readonly Granularity[] = ["per_tensor", "per_channel", "per_block"];
const SCALE_DTYPES: readonly ScaleDType[] = ["float32", "float16"];

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

function product(xs: readonly number[]): number {
  let p = 1;
  for (const x of xs) p *= x;
  return p;
}

/** The length of a "row": numel / shape[0] for rank >= 2, the whole tensor for rank 0 and 1. */
export function rowLength(shape: readonly number[]): number {
  return shape.length >= 2 ? product(shape.slice(1)) : product(shape);
}

// ---------------------------------------------------------------------------
// float16 values for JSON metadata (the runtimes' Float16Array where present)

type F16Ctor = new (buffer: ArrayBufferLike, byteOffset?: number, length?: number) => ArrayLike<number> & {
  set(values: ArrayLike<number>): void;
};
const Float16ArrayCtor = (globalThis as { Float16Array?: F16Ctor }).Float16Array;

function f16ToNumber(h: number): number {
  const e = (h >> 10) & 0x1f, m = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

function numberToF16(x: number): number {
  if (x !== x) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundEven(a * 2 ** 24); // subnormal; 1024 is the smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  let m = roundEven(a * 2 ** (10 - e));
  if (m === 2048) e++, m = 1024;
  return e + 15 >= 31 ? sign | 0x7c00 : sign | ((e + 15) << 10) | (m - 1024);
}

function roundEven(x: number): number {
  return (x + 6755399441055744) - 6755399441055744;
}

function f16BitsToNumbers(bits: Uint16Array): number[] {
  if (Float16ArrayCtor) return Array.from(new Float16ArrayCtor(bits.buffer, bits.byteOffset, bits.length));
  return Array.from(bits, f16ToNumber);
}

function numbersToF16Bits(values: readonly number[]): Uint16Array {
  const out = new Uint16Array(values.length);
  if (Float16ArrayCtor) new Float16ArrayCtor(out.buffer, 0, out.length).set(values);
  else for (let i = 0; i < values.length; i++) out[i] = numberToF16(values[i]);
  return out;
}

// ---------------------------------------------------------------------------
// Arrow types

function valueType(dtype: FloatDType): DataType {
  return dtype === "float32" ? new Float32() : dtype === "float16" ? new Float16() : new Uint16();
}

function listOf(size: number, type: DataType): FixedSizeList {
  return new FixedSizeList(size, new Field("item", type, false));
}

/** A short description of a type, for comparisons and messages (ignores child field names and nullability). */
function describe(type: DataType): string {
  switch (type.typeId) {
    case Type.Int: {
      const t = type as unknown as { bitWidth: number; isSigned: boolean };
      return `${t.isSigned ? "Int" : "Uint"}${t.bitWidth}`;
    }
    case Type.Float: {
      const p = (type as unknown as { precision: Precision }).precision;
      return p === Precision.HALF ? "Float16" : p === Precision.SINGLE ? "Float32" : "Float64";
    }
    case Type.FixedSizeList: {
      const t = type as FixedSizeList;
      return `FixedSizeList<${t.listSize}, ${describe(t.children[0].type)}>`;
    }
    default:
      return String(type);
  }
}

function buildSchema(fields: [string, DataType][], metadata: Map<string, string>): Schema {
  return new Schema(fields.map(([name, type]) => new Field(name, type, false)), metadata);
}

// ---------------------------------------------------------------------------
// Layouts, encoder side

function checkSlab(slab: Slab): { tensor: TensorInfo; numel: number } {
  const { tensor, offset, data } = slab;
  if (tensor === null || typeof tensor !== "object" || typeof tensor.name !== "string") {
    throw new TypeError(`Slab has no tensor info: ${JSON.stringify(tensor)}`);
  }
  if (!FLOAT_DTYPES.includes(tensor.dtype)) {
    throw new TypeError(
      `Slab of tensor "${tensor.name}" has dtype ${
        JSON.stringify(tensor.dtype)
      }; expected float32, float16 or bfloat16`,
    );
  }
  const numel = checkShape(tensor.name, tensor.shape);
  const want = tensor.dtype === "float32" ? Float32Array : Uint16Array;
  if (!(data instanceof want)) {
    throw new TypeError(
      `Slab of ${tensor.dtype} tensor "${tensor.name}" holds a ${data?.constructor?.name}; expected a ${want.name}`,
    );
  }
  checkRange(tensor.name, offset, data.length, numel);
  return { tensor, numel };
}

function checkShape(name: string, shape: readonly number[]): number {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(
      `Tensor "${name}" has shape ${JSON.stringify(shape)}; expected an array of non-negative integers`,
    );
  }
  return product(shape);
}

function checkRange(name: string, offset: number, length: number, numel: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > numel) {
    throw new RangeError(
      `Slab of tensor "${name}" covers elements [${offset}, ${offset + length}), outside the tensor's ${numel}`,
    );
  }
}

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
  const schema = buildSchema([["row", new Int32()], ["values", listOf(L, valueType(tensor.dtype))]], metadata);
  return {
    kind: "slab",
    tensor: { name: tensor.name, dtype: tensor.dtype, shape: [...tensor.shape] },
    listSize: L,
    numel,
    schema,
  };
}

/** Block sizes with 0 ("whole axis", SPEC.md Section 4) replaced by the dimension. */
function fullBlockSizes(info: QuantizedTensorInfo): number[] {
  return info.blockSizes.map((b, i) => (b === 0 ? info.shape[i] : b));
}

/**
 * Whether the scales follow the rows, and if so the length of the runs of
 * consecutive elements that share a scale within a row (blocks on axes >= 1
 * must be contiguous runs: 1s, then any size, then whole axes).
 */
function rowRun(info: QuantizedTensorInfo): number | undefined {
  if (info.granularity === "per_tensor" || info.shape.length < 2) return undefined;
  const b = fullBlockSizes(info);
  if (b[0] !== 1) return undefined;
  let k = 1;
  while (k < b.length && b[k] === 1) k++;
  for (let i = k + 1; i < b.length; i++) if (b[i] !== info.shape[i]) return undefined;
  return product(b.slice(1));
}

function checkInfo(info: QuantizedTensorInfo): { numel: number; blockCount: number } {
  const name = info?.name;
  if (typeof name !== "string") throw new TypeError(`Quantized slab has no tensor info: ${JSON.stringify(info)}`);
  const bad = (field: string, value: unknown, want: string) =>
    new TypeError(`Quantized tensor "${name}" has ${field} ${JSON.stringify(value)}; expected ${want}`);
  if (!FLOAT_DTYPES.includes(info.sourceDType)) throw bad("sourceDType", info.sourceDType, FLOAT_DTYPES.join(" | "));
  if (!QUANT_DTYPES.includes(info.dtype)) throw bad("dtype", info.dtype, QUANT_DTYPES.join(" | "));
  if (!MODES.includes(info.mode)) throw bad("mode", info.mode, MODES.join(" | "));
  if (!GRANULARITIES.includes(info.granularity)) throw bad("granularity", info.granularity, GRANULARITIES.join(" | "));
  if (!SCALE_DTYPES.includes(info.scaleDType)) throw bad("scaleDType", info.scaleDType, SCALE_DTYPES.join(" | "));
  const numel = checkShape(name, info.shape);
  const rank = info.shape.length;
  if (!Array.isArray(info.blockSizes) || info.blockSizes.length !== rank) {
    throw bad("blockSizes", info.blockSizes, `${rank} block sizes`);
  }
  if (!Array.isArray(info.scaleShape) || info.scaleShape.length !== rank) {
    throw bad("scaleShape", info.scaleShape, `${rank} dimensions`);
  }
  const full = fullBlockSizes(info);
  for (let i = 0; i < rank; i++) {
    if (!Number.isSafeInteger(full[i]) || full[i] <= 0 || info.shape[i] % full[i] !== 0) {
      throw bad("blockSizes", info.blockSizes, `block sizes dividing shape ${JSON.stringify(info.shape)}`);
    }
    if (info.scaleShape[i] !== info.shape[i] / full[i]) {
      throw bad(
        "scaleShape",
        info.scaleShape,
        `shape / blockSizes = ${JSON.stringify(info.shape.map((d, j) => d / full[j]))}`,
      );
    }
  }
  return { numel, blockCount: product(info.scaleShape) };
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

function quantizedFields(
  info: QuantizedTensorInfo,
  qSize: number,
  perEntry: number | undefined,
  zp: boolean,
): [string, DataType][] {
  const signed = isSigned(info.dtype);
  const fields: [string, DataType][] = [["row", new Int32()], ["q", listOf(qSize, signed ? new Int8() : new Uint8())]];
  if (perEntry !== undefined) {
    fields.push(["scale", listOf(perEntry, info.scaleDType === "float32" ? new Float32() : new Float16())]);
    if (zp) fields.push(["zero_point", listOf(perEntry, signed ? new Int8() : new Uint8())]);
  }
  return fields;
}

function checkQuantizedSlab(slab: QuantizedSlab): { numel: number; blockCount: number } {
  const { numel, blockCount } = checkInfo(slab.tensor);
  const { name, dtype, scaleDType, mode } = slab.tensor;
  const want = isSigned(dtype) ? Int8Array : Uint8Array;
  if (!(slab.data instanceof want)) {
    throw new TypeError(
      `Quantized slab of ${dtype} tensor "${name}" holds a ${slab.data?.constructor?.name}; expected a ${want.name}`,
    );
  }
  checkRange(name, slab.offset, slab.data.length, numel);
  const wantScale = scaleDType === "float32" ? Float32Array : Uint16Array;
  if (!(slab.scale instanceof wantScale)) {
    throw new TypeError(
      `Quantized slab of tensor "${name}" has ${slab.scale?.constructor?.name} scales; expected a ${wantScale.name} (${scaleDType})`,
    );
  }
  if (storesZeroPoint(dtype, mode)) {
    if (!(slab.zeroPoint instanceof want) || slab.zeroPoint.length !== slab.scale.length) {
      throw new TypeError(
        `Quantized slab of tensor "${name}" (${dtype}, ${mode}) needs a ${want.name} of ${slab.scale.length} zero points; got ${
          slab.zeroPoint === undefined ? "none" : `a ${slab.zeroPoint.constructor.name} of ${slab.zeroPoint.length}`
        }`,
      );
    }
  }
  if (
    !Number.isSafeInteger(slab.scaleOffset) || slab.scaleOffset < 0 || slab.scaleOffset + slab.scale.length > blockCount
  ) {
    throw new RangeError(
      `Quantized slab of tensor "${name}" carries scales [${slab.scaleOffset}, ${
        slab.scaleOffset + slab.scale.length
      }), outside the tensor's ${blockCount}`,
    );
  }
  return { numel, blockCount };
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
  const qSize = bitsOf(info.dtype) === 4 ? (L + 1) >> 1 : L;
  const metadata = quantizedMetadata(info, L, scales.kind);
  if (scales.kind === "metadata") {
    const values = scales.scale instanceof Float32Array ? Array.from(scales.scale) : f16BitsToNumbers(scales.scale);
    metadata.set(META.scale, JSON.stringify(values));
    if (scales.zeroPoint) metadata.set(META.zeroPoint, JSON.stringify(Array.from(scales.zeroPoint)));
  }
  const perEntry = scales.kind === "column" ? scales.perEntry : undefined;
  const schema = buildSchema(quantizedFields(info, qSize, perEntry, zeroPoints), metadata);
  return {
    kind: "quantized",
    info: copyInfo(info),
    listSize: L,
    numel,
    blockCount,
    qSize,
    zeroPoints,
    scales,
    schema,
  };
}

function copyInfo(info: QuantizedTensorInfo): QuantizedTensorInfo {
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

// ---------------------------------------------------------------------------
// Slab -> RecordBatch

function primitive(type: DataType, data: ArrayLike<number> & ArrayBufferView): Data {
  return makeData({ type, length: data.length, nullCount: 0, data } as never);
}

function list(type: FixedSizeList, entries: number, child: Data): Data {
  return makeData({ type, length: entries, nullCount: 0, child });
}

function rowColumn(first: number, entries: number): Data {
  if (first + entries > 0x7fffffff) {
    throw new RangeError(`Row index ${first + entries - 1} does not fit the Int32 "row" column`);
  }
  const rows = new Int32Array(entries);
  for (let i = 0; i < entries; i++) rows[i] = first + i;
  return primitive(new Int32(), rows);
}

function batchOf(schema: Schema, entries: number, columns: Data[]): RecordBatch {
  const struct = makeData({ type: new Struct(schema.fields), length: entries, nullCount: 0, children: columns });
  return new RecordBatch(schema, struct);
}

function fieldType(schema: Schema, i: number): FixedSizeList {
  return schema.fields[i].type as FixedSizeList;
}

/**
 * A float slab as a record batch of its stream; the values are not copied.
 *
 * @throws {TypeError} If the slab does not belong to the layout's tensor.
 * @throws {RangeError} If it does not fall on whole list entries.
 */
export function slabToBatch(layout: SlabLayout, slab: Slab): RecordBatch {
  const { tensor } = checkSlab(slab);
  if (tensor.name !== layout.tensor.name || tensor.dtype !== layout.tensor.dtype) {
    throw new TypeError(
      `Slab of tensor "${tensor.name}" (${tensor.dtype}) in the stream of "${layout.tensor.name}" (${layout.tensor.dtype})`,
    );
  }
  if (!fitsLayout(layout, slab)) {
    throw new RangeError(
      `Slab of tensor "${tensor.name}" at offset ${slab.offset} does not fall on entries of ${layout.listSize} elements`,
    );
  }
  const L = layout.listSize;
  const entries = slab.data.length / L;
  const valuesType = fieldType(layout.schema, 1);
  return batchOf(layout.schema, entries, [
    rowColumn(slab.offset / L, entries),
    list(valuesType, entries, primitive(valuesType.children[0].type, slab.data)),
  ]);
}

/** Packs 4-bit values two per byte, least-significant nibble first, each entry starting on a byte. */
function pack4(src: Int8Array | Uint8Array, entries: number, L: number): Uint8Array {
  const per = (L + 1) >> 1;
  const out = new Uint8Array(entries * per);
  if ((L & 1) === 0) {
    for (let i = 0, j = 0; j < out.length; i += 2, j++) out[j] = (src[i] & 15) | ((src[i + 1] & 15) << 4);
    return out;
  }
  for (let e = 0, i = 0, j = 0; e < entries; e++) {
    const end = i + L - 1;
    for (; i < end; i += 2, j++) out[j] = (src[i] & 15) | ((src[i + 1] & 15) << 4);
    out[j++] = src[i++] & 15;
  }
  return out;
}

/** Unpacks 4-bit values (see {@linkcode pack4}), sign-extending for int4. */
function unpack4(src: Uint8Array, entries: number, L: number, signed: boolean): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(entries * L) : new Uint8Array(entries * L);
  const per = (L + 1) >> 1;
  for (let e = 0, i = 0; e < entries; e++) {
    const base = e * per;
    for (let j = 0; j < per; j++) {
      const b = src[base + j];
      out[i++] = signed ? (b << 28) >> 28 : b & 15;
      if (j * 2 + 1 < L) out[i++] = signed ? (b << 24) >> 28 : b >> 4;
    }
  }
  return out;
}

/**
 * A quantized slab as a record batch of its stream. 8-bit values and
 * whole-entry scales are not copied.
 *
 * @param carry The block split rows continue in (updated).
 * @throws {TypeError} If the slab does not belong to the layout's tensor, or
 *   does not carry the scales the layout needs.
 * @throws {RangeError} If it does not fall on whole list entries.
 */
export function quantizedSlabToBatch(layout: QuantizedLayout, slab: QuantizedSlab, carry: ScaleCarry): RecordBatch {
  checkQuantizedSlab(slab);
  const { info, listSize: L, scales, schema } = layout;
  const name = info.name;
  if (slab.tensor.name !== name || slab.tensor.dtype !== info.dtype || slab.tensor.scaleDType !== info.scaleDType) {
    throw new TypeError(`Quantized slab of tensor "${slab.tensor.name}" in the stream of "${name}"`);
  }
  if (!fitsLayout(layout, slab)) {
    throw new RangeError(
      `Quantized slab of tensor "${name}" at offset ${slab.offset} does not fall on entries of ${L} elements`,
    );
  }
  const entries = slab.data.length / L;
  const first = slab.offset / L;
  const qType = fieldType(schema, 1);
  const q = bitsOf(info.dtype) === 4 ? pack4(slab.data, entries, L) : slab.data;
  const columns = [rowColumn(first, entries), list(qType, entries, primitive(qType.children[0].type, q))];
  if (scales.kind === "metadata") {
    if (slab.scale.length !== 0 && slab.scaleOffset !== 0) {
      throw new TypeError(
        `Quantized slab of tensor "${name}" at offset ${slab.offset} carries scales again; the first slab carries them all`,
      );
    }
  } else {
    const [scale, zeroPoint] = scales.duplicated
      ? duplicatedScales(layout, slab, first, entries, scales.run, carry)
      : wholeEntryScales(layout, slab, first, entries, scales.perEntry);
    const scaleType = fieldType(schema, 2);
    columns.push(list(scaleType, entries, primitive(scaleType.children[0].type, scale)));
    if (zeroPoint) {
      const zpType = fieldType(schema, 3);
      columns.push(list(zpType, entries, primitive(zpType.children[0].type, zeroPoint)));
    }
  }
  return batchOf(schema, entries, columns);
}

type ScaleArrays = [Float32Array | Uint16Array, Int8Array | Uint8Array | undefined];

function wholeEntryScales(
  layout: QuantizedLayout,
  slab: QuantizedSlab,
  first: number,
  entries: number,
  k: number,
): ScaleArrays {
  const from = first * k, count = entries * k;
  if (slab.scaleOffset !== from || slab.scale.length !== count) {
    throw new TypeError(
      `Quantized slab of tensor "${layout.info.name}" at offset ${slab.offset} carries scales [${slab.scaleOffset}, ${
        slab.scaleOffset + slab.scale.length
      }); its rows need [${from}, ${from + count})`,
    );
  }
  return [slab.scale, layout.zeroPoints ? slab.zeroPoint : undefined];
}

function duplicatedScales(
  layout: QuantizedLayout,
  slab: QuantizedSlab,
  first: number,
  entries: number,
  run: number,
  carry: ScaleCarry,
): ScaleArrays {
  const L = layout.listSize, per = run / L;
  const scale = slab.scale instanceof Float32Array ? new Float32Array(entries) : new Uint16Array(entries);
  const zeroPoint = !layout.zeroPoints
    ? undefined
    : slab.zeroPoint instanceof Int8Array
    ? new Int8Array(entries)
    : new Uint8Array(entries);
  for (let e = 0; e < entries;) {
    const block = Math.floor((first + e) / per);
    const end = Math.min(entries, (block + 1) * per - first);
    const i = block - slab.scaleOffset;
    if (i >= 0 && i < slab.scale.length) {
      carry.block = block;
      carry.scale = slab.scale[i];
      carry.zeroPoint = slab.zeroPoint?.[i] ?? 0;
    } else if (carry.block !== block) {
      throw new TypeError(
        `Quantized slab of tensor "${layout.info.name}" at offset ${slab.offset} lacks the scale of block ${block}, ` +
          `which no earlier slab carried`,
      );
    }
    scale.fill(carry.scale, e, end);
    zeroPoint?.fill(carry.zeroPoint, e, end);
    e = end;
  }
  return [scale, zeroPoint];
}

// ---------------------------------------------------------------------------
// Schema -> layout, decoder side

function parseJSON(name: string, key: string, text: string | undefined): unknown {
  if (text === undefined) {
    throw new FormatError(`Arrow stream of tensor "${name}" lacks the schema metadata key ${key}`);
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new FormatError(`Arrow stream of tensor "${name}" has invalid JSON in ${key}: ${text.slice(0, 80)}`, {
      cause,
    });
  }
}

function parseListSize(name: string, meta: Map<string, string>, rowLen: number): number {
  const text = meta.get(META.listSize);
  const L = Number(text);
  if (!Number.isSafeInteger(L) || L <= 0 || (rowLen > 0 && rowLen % L !== 0)) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has ${META.listSize} ${
        JSON.stringify(text)
      }; expected a divisor of the row length ${rowLen}`,
    );
  }
  return L;
}

function expectFields(name: string, schema: Schema, want: Schema): void {
  const got = schema.fields.map((f) => `${f.name}: ${describe(f.type)}`).join(", ");
  const expected = want.fields.map((f) => `${f.name}: ${describe(f.type)}`).join(", ");
  if (got !== expected) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has columns (${got}); its metadata calls for (${expected})`,
    );
  }
}

/** The tensor name a schema announces, for error messages. */
export function schemaTensorName(schema: Schema): string | undefined {
  return schema.metadata.get(META.name);
}

/**
 * The layout a stream's schema describes.
 *
 * @throws {FormatError} If the schema is not one quantflow writes.
 */
export function layoutFromSchema(schema: Schema): StreamLayout {
  const meta = schema.metadata;
  const kind = meta.get(META.kind);
  const name = meta.get(META.name);
  if (name === undefined || (kind !== "slab" && kind !== "quantized")) {
    throw new FormatError(
      `Arrow stream is not a quantflow tensor stream: schema metadata ${META.kind}=${
        JSON.stringify(kind)
      }, ${META.name}=${JSON.stringify(name)}`,
    );
  }
  if (kind === "slab") {
    const dtype = meta.get(META.dtype) as FloatDType;
    if (!FLOAT_DTYPES.includes(dtype)) {
      throw new FormatError(
        `Arrow stream of tensor "${name}" has ${META.dtype} ${JSON.stringify(dtype)}; expected ${
          FLOAT_DTYPES.join(" | ")
        }`,
      );
    }
    const shape = parseJSON(name, META.shape, meta.get(META.shape)) as number[];
    try {
      checkShape(name, shape);
    } catch (cause) {
      throw new FormatError(`Arrow stream of tensor "${name}" has ${META.shape} ${JSON.stringify(shape)}`, { cause });
    }
    const L = parseListSize(name, meta, rowLength(shape));
    const layout = planSlabLayout({
      tensor: { name, dtype, shape },
      offset: 0,
      data: dtype === "float32" ? new Float32Array(0) : new Uint16Array(0),
    });
    const expected = buildSchema(
      [["row", new Int32()], ["values", listOf(L, valueType(dtype))]],
      layout.schema.metadata,
    );
    expectFields(name, schema, expected);
    return { ...layout, listSize: L, schema };
  }
  const config = parseJSON(name, META.config, meta.get(META.config)) as Omit<QuantizedTensorInfo, "name">;
  const info = { ...config, name } as QuantizedTensorInfo;
  let numel: number, blockCount: number;
  try {
    ({ numel, blockCount } = checkInfo(info));
  } catch (cause) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has an invalid ${META.config}: ${(cause as Error).message}`,
      { cause },
    );
  }
  const L = parseListSize(name, meta, rowLength(info.shape));
  const zeroPoints = storesZeroPoint(info.dtype, info.mode);
  const qSize = bitsOf(info.dtype) === 4 ? (L + 1) >> 1 : L;
  const layoutKind = meta.get(META.scaleLayout);
  let scales: ScaleLayout;
  const run = rowRun(info);
  if (layoutKind === "column" && run !== undefined && (L % run === 0 || run % L === 0)) {
    scales = L >= run
      ? { kind: "column", perEntry: L / run, run, duplicated: false }
      : { kind: "column", perEntry: 1, run, duplicated: true };
  } else if (layoutKind === "metadata") {
    const values = parseJSON(name, META.scale, meta.get(META.scale));
    if (!Array.isArray(values) || values.length !== blockCount || !values.every((v) => typeof v === "number")) {
      throw new FormatError(
        `Arrow stream of tensor "${name}" has ${META.scale} that is not an array of ${blockCount} numbers`,
      );
    }
    const scale = info.scaleDType === "float32" ? Float32Array.from(values) : numbersToF16Bits(values);
    let zeroPoint: Int8Array | Uint8Array | undefined;
    if (zeroPoints) {
      const zps = parseJSON(name, META.zeroPoint, meta.get(META.zeroPoint));
      if (!Array.isArray(zps) || zps.length !== blockCount || !zps.every((v) => Number.isInteger(v))) {
        throw new FormatError(
          `Arrow stream of tensor "${name}" has ${META.zeroPoint} that is not an array of ${blockCount} integers`,
        );
      }
      zeroPoint = isSigned(info.dtype) ? Int8Array.from(zps) : Uint8Array.from(zps);
    }
    scales = { kind: "metadata", scale, zeroPoint };
  } else {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has ${META.scaleLayout} ${
        JSON.stringify(layoutKind)
      }, which does not fit its ` +
        `${info.granularity} blockSizes ${JSON.stringify(info.blockSizes)} and list size ${L}`,
    );
  }
  const perEntry = scales.kind === "column" ? scales.perEntry : undefined;
  expectFields(name, schema, buildSchema(quantizedFields(info, qSize, perEntry, zeroPoints), new Map()));
  return { kind: "quantized", info: copyInfo(info), listSize: L, numel, blockCount, qSize, zeroPoints, scales, schema };
}

// ---------------------------------------------------------------------------
// RecordBatch -> slab

/** Per-stream state of the decoder. */
export interface DecodeState {
  /** Whether the tensor's metadata scales were already emitted (a continued tensor). */
  scalesEmitted: boolean;
  /** Element offset after the previous batch (for empty batches). */
  nextOffset: number;
}

/** The elements of a primitive column (or a list's child) as a view, `[first, first + count)`. */
function values<T extends ArrayLike<number>>(
  name: string,
  column: string,
  data: Data,
  first: number,
  count: number,
): T {
  const v = data.values as unknown as T & { subarray(a: number, b: number): T };
  const start = data.offset + first;
  const view = v.subarray(start, start + count);
  if (view.length !== count) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has ${view.length} values in column "${column}" where ${count} are due`,
    );
  }
  return view;
}

function checkNoNulls(name: string, column: string, data: Data): void {
  if (data.nullCount > 0) throw new FormatError(`Arrow stream of tensor "${name}" has nulls in column "${column}"`);
}

/** Reads the `row` column and the first element offset; rows must be consecutive. */
function readRows(name: string, batch: RecordBatch, L: number, numel: number, state: DecodeState): number {
  const n = batch.numRows;
  if (n === 0) return state.nextOffset;
  const col = batch.data.children[0];
  checkNoNulls(name, "row", col);
  const rows = values<Int32Array>(name, "row", col, 0, n);
  const first = rows[0];
  for (let i = 1; i < n; i++) {
    if (rows[i] !== first + i) {
      throw new FormatError(
        `Arrow stream of tensor "${name}" has non-consecutive rows: ${rows[i - 1]} then ${rows[i]}`,
      );
    }
  }
  if (first < 0 || (first + n) * L > numel) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has rows [${first}, ${first + n}) of ${L} elements; the tensor has ${numel}`,
    );
  }
  return first * L;
}

function listChild(name: string, column: string, list: Data): Data {
  checkNoNulls(name, column, list);
  const child = list.children[0];
  checkNoNulls(name, column, child);
  return child;
}

/**
 * A record batch of a stream as a float or quantized slab; values are views
 * of the batch's buffers where possible.
 *
 * @throws {FormatError} If the batch does not match its layout.
 */
export function batchToSlab(layout: StreamLayout, batch: RecordBatch, state: DecodeState): Slab | QuantizedSlab {
  const name = layout.kind === "slab" ? layout.tensor.name : layout.info.name;
  const L = layout.listSize, n = batch.numRows;
  const offset = readRows(name, batch, L, layout.numel, state);
  state.nextOffset = offset + n * L;
  const cols = batch.data.children;
  if (layout.kind === "slab") {
    const list = cols[1];
    const child = listChild(name, "values", list);
    const data = values<Float32Array | Uint16Array>(name, "values", child, list.offset * L, n * L);
    return { kind: "slab", tensor: layout.tensor, offset, data };
  }
  const { info, qSize, scales } = layout;
  const qList = cols[1];
  const qChild = listChild(name, "q", qList);
  const signed = isSigned(info.dtype);
  let data: Int8Array | Uint8Array;
  if (bitsOf(info.dtype) === 4) {
    const bytes = values<Int8Array | Uint8Array>(name, "q", qChild, qList.offset * qSize, n * qSize);
    const raw = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
    data = unpack4(raw, n, L, signed);
  } else {
    data = values<Int8Array | Uint8Array>(name, "q", qChild, qList.offset * L, n * L);
  }
  let scaleOffset: number;
  let scale: Float32Array | Uint16Array;
  let zeroPoint: Int8Array | Uint8Array | undefined;
  const emptyScale = () => info.scaleDType === "float32" ? new Float32Array(0) : new Uint16Array(0);
  const emptyZero = () => signed ? new Int8Array(0) : new Uint8Array(0);
  if (scales.kind === "metadata") {
    if (!state.scalesEmitted) {
      state.scalesEmitted = true;
      scaleOffset = 0;
      scale = scales.scale;
      zeroPoint = scales.zeroPoint;
    } else {
      scaleOffset = layout.blockCount;
      scale = emptyScale();
      zeroPoint = layout.zeroPoints ? emptyZero() : undefined;
    }
  } else {
    const sList = cols[2];
    const sChild = listChild(name, "scale", sList);
    const zList = layout.zeroPoints ? cols[3] : undefined;
    const zChild = zList && listChild(name, "zero_point", zList);
    const k = scales.perEntry;
    const firstEntry = offset / L;
    if (!scales.duplicated) {
      scaleOffset = firstEntry * k;
      scale = values(name, "scale", sChild, sList.offset * k, n * k);
      zeroPoint = zChild && values(name, "zero_point", zChild, zList!.offset * k, n * k);
    } else {
      // Each block's scale is carried by the slab holding the block's first element.
      const per = scales.run / L;
      const from = Math.ceil(firstEntry / per), to = Math.ceil((firstEntry + n) / per);
      const allScales = values<Float32Array | Uint16Array>(name, "scale", sChild, sList.offset, n);
      const allZeros = zChild && values<Int8Array | Uint8Array>(name, "zero_point", zChild, zList!.offset, n);
      scale = allScales instanceof Float32Array ? new Float32Array(to - from) : new Uint16Array(to - from);
      zeroPoint = allZeros && (allZeros instanceof Int8Array ? new Int8Array(to - from) : new Uint8Array(to - from));
      for (let b = from; b < to; b++) {
        const e = b * per - firstEntry;
        scale[b - from] = allScales[e];
        if (zeroPoint) zeroPoint[b - from] = allZeros![e];
      }
      scaleOffset = from;
    }
  }
  const slab: QuantizedSlab = zeroPoint === undefined
    ? { kind: "quantized", tensor: info, offset, data, scaleOffset, scale }
    : { kind: "quantized", tensor: info, offset, data, scaleOffset, scale, zeroPoint };
  return slab;
}
