/**
 * The error a quantization introduced (SPEC.md Section 8): max absolute error
 * and signal-to-noise ratio, accumulated slab by slab.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";

/** Sums behind the error report of one tensor; mergeable. */
export class ErrorStats {
  /** Elements observed. */
  count = 0;
  /** Sum of w^2 over the original values. */
  signalEnergy = 0;
  /** Sum of (w - dequantize(q))^2. */
  errorEnergy = 0;
  /** Largest |w - dequantize(q)|. */
  maxAbsError = 0;
  readonly #sums = new Float64Array(3);

  /**
   * Compares original values with their dequantized values `scale * (q - zp)`,
   * computed exactly in float64.
   *
   * @param values Original values.
   * @param offset Flat index of `values[0]` in the layout.
   * @param layout Block layout of `scale` and `zeroPoint`.
   * @param q Quantized values.
   * @param scale Scale per block.
   * @param zeroPoint Zero point per block.
   */
  observe(
    values: Float32Array,
    offset: number,
    layout: BlockLayout,
    q: Int8Array | Uint8Array,
    scale: Float64Array,
    zeroPoint: Int32Array,
  ): void {
    const sums = this.#sums;
    sums[0] = sums[1] = 0;
    sums[2] = this.maxAbsError;
    const { bytes, flip } = asBytes(q);
    if (layout.contiguous || layout.columnBlock > 16) {
      layout.forEachRun(offset, values.length, (from, to, block) => {
        errorRun(values, bytes, flip, from, to, scale[block], zeroPoint[block], sums);
      });
    } else {
      // Short runs (per channel on the last axis): a block lookup per element beats a call per run.
      const { columnBlock } = layout;
      layout.forEachRow(offset, values.length, (from, to, column, rowBase) => {
        errorRow(values, bytes, flip, from, to, column, rowBase, columnBlock, scale, zeroPoint, sums);
      });
    }
    this.count += values.length;
    this.signalEnergy += sums[0];
    this.errorEnergy += sums[1];
    this.maxAbsError = sums[2];
  }

  /**
   * Adds sums computed elsewhere (the wasm kernel).
   *
   * @param sums `[sum w^2, sum e^2, max |e|]` of the elements.
   * @param count How many elements they cover.
   */
  add(sums: Float64Array, count: number): void {
    this.count += count;
    this.signalEnergy += sums[0];
    this.errorEnergy += sums[1];
    this.maxAbsError = Math.max(this.maxAbsError, sums[2]);
  }

  /**
   * Adds another tensor part's sums to these.
   *
   * @param other Stats of other elements of the same tensor.
   */
  merge(other: ErrorStats): void {
    this.count += other.count;
    this.signalEnergy += other.signalEnergy;
    this.errorEnergy += other.errorEnergy;
    this.maxAbsError = Math.max(this.maxAbsError, other.maxAbsError);
  }

  /** `10 * log10(sum(w^2) / sum(error^2))` in dB; Infinity when exact. */
  get snrDb(): number {
    if (this.errorEnergy === 0) return Infinity;
    return 10 * Math.log10(this.signalEnergy / this.errorEnergy);
  }
}

/**
 * Quantized values as bytes, whatever their signedness: `(byte ^ flip) - flip`
 * is the value. One array type keeps the loop monomorphic (Bun ran 13x slower
 * when one loop saw both Int8Array and Uint8Array).
 */
export function asBytes(q: Int8Array | Uint8Array): { bytes: Uint8Array; flip: number } {
  if (q instanceof Uint8Array) return { bytes: q, flip: 0 };
  return { bytes: new Uint8Array(q.buffer, q.byteOffset, q.length), flip: 128 };
}

/** Adds a run's sums to `sums` = [signal, error, max |error|]; a top-level loop (see quantize_kernel.ts). */
function errorRun(
  values: Float32Array,
  bytes: Uint8Array,
  flip: number,
  from: number,
  to: number,
  s: number,
  zp: number,
  sums: Float64Array,
): void {
  let signal = 0;
  let error = 0;
  let maxAbs = sums[2];
  const z = zp + flip;
  for (let i = from; i < to; i++) {
    const w = values[i];
    const e = w - s * ((bytes[i] ^ flip) - z);
    signal += w * w;
    error += e * e;
    maxAbs = Math.max(maxAbs, Math.abs(e));
  }
  sums[0] += signal;
  sums[1] += error;
  sums[2] = maxAbs;
}

/** As {@linkcode errorRun} over part of a row, with each element's block looked up from its column. */
function errorRow(
  values: Float32Array,
  bytes: Uint8Array,
  flip: number,
  from: number,
  to: number,
  column: number,
  rowBase: number,
  columnBlock: number,
  scale: Float64Array,
  zeroPoint: Int32Array,
  sums: Float64Array,
): void {
  let signal = 0;
  let error = 0;
  let maxAbs = sums[2];
  for (let i = from, c = column; i < to; i++, c++) {
    const block = rowBase + (columnBlock === 1 ? c : Math.floor(c / columnBlock));
    const w = values[i];
    const e = w - scale[block] * ((bytes[i] ^ flip) - flip - zeroPoint[block]);
    signal += w * w;
    error += e * e;
    maxAbs = Math.max(maxAbs, Math.abs(e));
  }
  sums[0] += signal;
  sums[1] += error;
  sums[2] = maxAbs;
}
