/**
 * Quantized value ranges per dtype and mode (SPEC.md Section 2).
 *
 * @module
 */
import type { QuantDType, QuantMode } from "./types.ts";

/** The integer range quantized values are clipped to, and the fixed zero point if any. */
export interface QuantRange {
  /** Smallest quantized value. */
  readonly qmin: number;
  /** Largest quantized value. */
  readonly qmax: number;
  /** The zero point every block uses, when the mode fixes it (symmetric modes). */
  readonly fixedZeroPoint: number | undefined;
}

const FULL: Record<QuantDType, readonly [number, number]> = {
  int8: [-128, 127],
  uint8: [0, 255],
  int4: [-8, 7],
  uint4: [0, 15],
};

/**
 * The range of SPEC.md Section 2 for a dtype and mode. Symmetric modes drop
 * one value so that the range is symmetric about the zero point: [-127, 127]
 * for int8, [0, 254] with zero point 127 for uint8.
 *
 * @param dtype Quantized integer type.
 * @param mode Quantization mode.
 * @returns The clipping range and fixed zero point.
 */
export function quantRange(dtype: QuantDType, mode: QuantMode): QuantRange {
  const [lo, hi] = FULL[dtype];
  if (mode === "linear") return { qmin: lo, qmax: hi, fixedZeroPoint: undefined };
  if (lo < 0) return { qmin: lo + 1, qmax: hi, fixedZeroPoint: 0 };
  return { qmin: 0, qmax: hi - 1, fixedZeroPoint: (hi - 1) >> 1 };
}

/**
 * The full range of a dtype, which activations are clipped to at inference
 * (SPEC.md Section 6).
 *
 * @param dtype Quantized integer type.
 * @returns `[min, max]`.
 */
export function fullRange(dtype: QuantDType): readonly [number, number] {
  return FULL[dtype];
}

/** Whether the dtype is signed. */
export function isSigned(dtype: QuantDType): boolean {
  return dtype === "int8" || dtype === "int4";
}

/** Bits per quantized value. */
export function bitsOf(dtype: QuantDType): 4 | 8 {
  return dtype === "int4" || dtype === "uint4" ? 4 : 8;
}

/**
 * Whether files store a zero-point tensor for this dtype and mode: affine
 * mode, or an unsigned type (whose symmetric zero point is fixed at the middle).
 * Signed symmetric zero points are always 0 and are not stored.
 */
export function storesZeroPoint(dtype: QuantDType, mode: QuantMode): boolean {
  return mode === "linear" || !isSigned(dtype);
}
