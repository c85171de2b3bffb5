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
    let signal = 0;
    let error = 0;
    let maxAbs = this.maxAbsError;
    layout.forEachRun(offset, values.length, (from, to, block) => {
      const s = scale[block];
      const zp = zeroPoint[block];
      for (let i = from; i < to; i++) {
        const w = values[i];
        const e = w - s * (q[i] - zp);
        signal += w * w;
        error += e * e;
        const a = e < 0 ? -e : e;
        if (a > maxAbs) maxAbs = a;
      }
    });
    this.count += values.length;
    this.signalEnergy += signal;
    this.errorEnergy += error;
    this.maxAbsError = maxAbs;
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
