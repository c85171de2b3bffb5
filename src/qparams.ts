/**
 * Scale and zero point of a block from its min and max (SPEC.md Section 3),
 * with every operation rounded to the weight's float type, as Core ML Tools
 * computes them in numpy.
 *
 * @module
 */
import { Float16OverflowError } from "./errors.ts";
import { f16round, roundHalfEven } from "./float16.ts";
import type { QuantRange } from "./ranges.ts";
import type { QuantMode } from "./types.ts";

/** The float type the arithmetic is done in: the weight's (bfloat16 uses float32). */
export type ArithmeticType = "float32" | "float16";

/** Per-block quantization parameters. */
export interface BlockParams {
  /** Stored scale per block, as numbers exactly representable in the arithmetic type. */
  readonly scale: Float64Array;
  /** Zero point per block. */
  readonly zeroPoint: Int32Array;
  /** Blocks whose computed scale was 0 (stored as 1, every value at the zero point). */
  readonly zeroRangeBlocks: number;
}

/**
 * Computes the scale and zero point of every block from its min and max.
 *
 * A computed scale of 0 (an all-zero block, or a float16 range so small that
 * the scale underflows) is stored as 1 with the zero point 0 (`linear`) or the
 * fixed zero point, so that every value of the block quantizes to the zero
 * point and dequantizes to 0.
 *
 * @param mins Minimum of each block.
 * @param maxs Maximum of each block.
 * @param mode Quantization mode.
 * @param range Quantized range of the dtype and mode.
 * @param arithmetic The float type every operation is rounded to.
 * @param tensor Tensor name, for error messages.
 * @returns The parameters of each block.
 * @throws {Float16OverflowError} When a float16 intermediate overflows.
 * @throws {RangeError} When a float32 intermediate overflows (weights near 3.4e38).
 */
export function computeBlockParams(
  mins: ArrayLike<number>,
  maxs: ArrayLike<number>,
  mode: QuantMode,
  range: QuantRange,
  arithmetic: ArithmeticType,
  tensor: string,
): BlockParams {
  const round = arithmetic === "float16" ? f16round : Math.fround;
  const { qmin, qmax, fixedZeroPoint } = range;
  const steps = qmax - qmin;
  const scale = new Float64Array(mins.length);
  const zeroPoint = new Int32Array(mins.length);
  let zeroRangeBlocks = 0;
  const overflow = (detail: string): Error =>
    arithmetic === "float16"
      ? new Float16OverflowError(tensor, detail, "tensor", mode)
      : new RangeError(`Cannot quantize tensor "${tensor}": ${detail} overflows float32`);
  for (let k = 0; k < mins.length; k++) {
    let lo = mins[k];
    let hi = maxs[k];
    if (mode === "linear_symmetric") {
      hi = Math.max(Math.abs(lo), Math.abs(hi));
      lo = -hi;
    } else {
      lo = Math.min(0, lo);
      hi = Math.max(0, hi);
    }
    const width = round(hi - lo);
    let s = round(width / steps);
    let zp = fixedZeroPoint ?? 0;
    if (mode === "linear" && width !== 0) {
      const a = round(qmin * hi);
      const b = round(qmax * lo);
      const z = round(round(a - b) / width);
      if (!Number.isFinite(z)) {
        throw overflow(`the zero point (${qmin} * ${hi} - ${qmax} * ${paren(lo)}) / (${hi} - ${paren(lo)})`);
      }
      zp = Math.min(qmax, Math.max(qmin, roundHalfEven(z)));
    }
    if (!Number.isFinite(s)) throw overflow(`the range ${hi} - ${paren(lo)}`);
    if (s === 0) {
      s = 1;
      zp = fixedZeroPoint ?? 0;
      zeroRangeBlocks++;
    }
    scale[k] = s;
    zeroPoint[k] = zp;
  }
  return { scale, zeroPoint, zeroRangeBlocks };
}

/** A number as an operand after a minus sign: `(-4)`, not `- -4`. */
function paren(x: number): string {
  return x < 0 ? `(${x})` : `${x}`;
}
