/**
 * Slabs as the bodies of Arrow record batches, and record batches back as
 * slabs, in the layout of their stream (`_arrow_layout.ts`, the README's
 * Arrow layout).
 *
 * Internal. A body's columns are the slab's own typed arrays (no copy); only
 * the `row` column, 4-bit packing and the duplicated scales of split rows
 * allocate. Batches read back are views of the IPC body.
 *
 * @module
 */
import type { Data, RecordBatch } from "apache-arrow";
import { checkQuantizedSlab, checkSlab } from "./_arrow_checks.ts";
import type { BodyColumn } from "./_arrow_ipc_message.ts";
import { fitsLayout, type QuantizedLayout, type SlabLayout, type StreamLayout } from "./_arrow_layout.ts";
import { FormatError } from "./errors.ts";
import { bitsOf, isSigned } from "./ranges.ts";
import type { QuantizedSlab, Slab } from "./types.ts";

/**
 * The scales (and zero points) of the slab that last carried any, kept by the
 * encoder for the split rows that continue past it: the blocks that began
 * in it, or all of them when the first slab carried them all (a two-pass
 * tensor).
 */
export interface ScaleCarry {
  /** Block index of `scale[0]`. */
  from: number;
  scale: Float32Array | Uint16Array;
  zeroPoint: Int8Array | Uint8Array | undefined;
}

/** A carry that holds no scale yet. */
export function emptyCarry(): ScaleCarry {
  return { from: 0, scale: new Float32Array(0), zeroPoint: undefined };
}

/** The body of one record batch: its table rows and its columns in schema order. */
export interface BatchBody {
  readonly entries: number;
  readonly columns: readonly BodyColumn[];
}

// ---------------------------------------------------------------------------
// Slab -> record batch body

function rowColumn(first: number, entries: number): BodyColumn {
  if (first + entries > 0x7fffffff) {
    throw new RangeError(`Row index ${first + entries - 1} does not fit the Int32 "row" column`);
  }
  const rows = new Int32Array(entries);
  for (let i = 0; i < entries; i++) rows[i] = first + i;
  return { values: rows, list: false };
}

function listColumn(values: BodyColumn["values"]): BodyColumn {
  return { values, list: true };
}

/**
 * A float slab as the body of a record batch of its stream; the values are not copied.
 *
 * @throws {TypeError} If the slab does not belong to the layout's tensor.
 * @throws {RangeError} If it does not fall on whole list entries.
 */
export function slabBody(layout: SlabLayout, slab: Slab): BatchBody {
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
  return { entries, columns: [rowColumn(slab.offset / L, entries), listColumn(slab.data)] };
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
 * A quantized slab as the body of a record batch of its stream. 8-bit values
 * and whole-entry scales are not copied.
 *
 * @param carry The scales split rows continue with (updated).
 * @throws {TypeError} If the slab does not belong to the layout's tensor, or
 *   does not carry the scales the layout needs.
 * @throws {RangeError} If it does not fall on whole list entries.
 */
export function quantizedSlabBody(layout: QuantizedLayout, slab: QuantizedSlab, carry: ScaleCarry): BatchBody {
  checkQuantizedSlab(slab);
  const { info, listSize: L, scales } = layout;
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
  const q = bitsOf(info.dtype) === 4 ? pack4(slab.data, entries, L) : slab.data;
  const columns = [rowColumn(first, entries), listColumn(q)];
  if (scales.kind === "metadata") {
    if (slab.scale.length !== 0 && slab.scaleOffset !== 0) {
      throw new TypeError(
        `Quantized slab of tensor "${name}" at offset ${slab.offset} carries scales again; the first slab carries them all`,
      );
    }
  } else {
    const [scale, zeroPoint] = scales.duplicated
      ? duplicatedScales(layout, slab, first, entries, scales.run, carry)
      : wholeEntryScales(layout, slab, first, entries, scales.perEntry, carry);
    columns.push(listColumn(scale));
    if (zeroPoint) columns.push(listColumn(zeroPoint));
  }
  return { entries, columns };
}

type ScaleArrays = [Float32Array | Uint16Array, Int8Array | Uint8Array | undefined];

/** Empty columns of `length` scales and zero points, of the layout's types. */
function scaleArrays(layout: QuantizedLayout, length: number): ScaleArrays {
  const scale = layout.info.scaleDType === "float32" ? new Float32Array(length) : new Uint16Array(length);
  const zeroPoint = !layout.zeroPoints
    ? undefined
    : isSigned(layout.info.dtype)
    ? new Int8Array(length)
    : new Uint8Array(length);
  return [scale, zeroPoint];
}

/** The scale and zero point of `block`: from the slab if it carries them, else from the carry. */
function scaleOf(layout: QuantizedLayout, slab: QuantizedSlab, carry: ScaleCarry, block: number): [number, number] {
  const i = block - slab.scaleOffset;
  if (i >= 0 && i < slab.scale.length) return [slab.scale[i], slab.zeroPoint?.[i] ?? 0];
  const j = block - carry.from;
  if (j >= 0 && j < carry.scale.length) return [carry.scale[j], carry.zeroPoint?.[j] ?? 0];
  throw new TypeError(
    `Quantized slab of tensor "${layout.info.name}" at offset ${slab.offset} lacks the scale of block ${block}, ` +
      `which no earlier slab carried`,
  );
}

/** Keeps a copy of the scales a slab carries (its memory may be reused once it is written) for the slabs after it. */
function keepScales(slab: QuantizedSlab, carry: ScaleCarry): void {
  if (slab.scale.length === 0) return;
  carry.from = slab.scaleOffset;
  carry.scale = slab.scale.slice();
  carry.zeroPoint = slab.zeroPoint?.slice();
}

/** `k` scales per entry: the slab's own, as they are, when it carries exactly those of its rows. */
function wholeEntryScales(
  layout: QuantizedLayout,
  slab: QuantizedSlab,
  first: number,
  entries: number,
  k: number,
  carry: ScaleCarry,
): ScaleArrays {
  const from = first * k, count = entries * k;
  if (slab.scaleOffset === from && slab.scale.length === count) {
    return [slab.scale, layout.zeroPoints ? slab.zeroPoint : undefined];
  }
  // A slab of a two-pass tensor: the first carried them all.
  const [scale, zeroPoint] = scaleArrays(layout, count);
  for (let b = 0; b < count; b++) {
    const [s, z] = scaleOf(layout, slab, carry, from + b);
    scale[b] = s;
    if (zeroPoint) zeroPoint[b] = z;
  }
  keepScales(slab, carry);
  return [scale, zeroPoint];
}

/** Split rows: each entry holds the scale of the block it lies in. */
function duplicatedScales(
  layout: QuantizedLayout,
  slab: QuantizedSlab,
  first: number,
  entries: number,
  run: number,
  carry: ScaleCarry,
): ScaleArrays {
  const per = run / layout.listSize;
  const [scale, zeroPoint] = scaleArrays(layout, entries);
  for (let e = 0; e < entries;) {
    const block = Math.floor((first + e) / per);
    const end = Math.min(entries, (block + 1) * per - first);
    const [s, z] = scaleOf(layout, slab, carry, block);
    scale.fill(s, e, end);
    zeroPoint?.fill(z, e, end);
    e = end;
  }
  keepScales(slab, carry);
  return [scale, zeroPoint];
}

// ---------------------------------------------------------------------------
// Record batch -> slab

/** Per-stream state of the decoder. */
export interface DecodeState {
  /** Whether the tensor's metadata scales were already emitted (a continued tensor). */
  scalesEmitted: boolean;
  /** Element offset after the previous batch (of this stream, or of the one it continues): where the next begins. */
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

/** Reads the `row` column and the first element offset; rows must be consecutive, and follow the previous batch's. */
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
  if (first * L !== state.nextOffset) {
    throw new FormatError(
      `Arrow stream of tensor "${name}" has a batch from element ${first * L} where element ${state.nextOffset} ` +
        `comes next: batches missing, repeated or out of order`,
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
