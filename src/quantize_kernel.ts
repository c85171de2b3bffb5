/**
 * The quantize kernel (SPEC.md Section 1): `q = clip(round(w / scale) + zp)`,
 * with `w / scale` rounded to the weight's float type before rounding to an
 * integer, half to even.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import { f16round } from "./float16.ts";
import type { ArithmeticType } from "./qparams.ts";

/** 1.5 * 2^52: `(v + R) - R` rounds v to an integer, half to even. */
const R = 6755399441055744;

/** Per-block parameters in the form the kernel consumes. */
export interface KernelParams {
  /** `1 / scale` per block, in float64. */
  readonly inverseScale: Float64Array;
  /** Zero point per block. */
  readonly zeroPoint: Int32Array;
  /** Smallest quantized value. */
  readonly qmin: number;
  /** Largest quantized value. */
  readonly qmax: number;
  /** Float type `w / scale` is rounded to. */
  readonly arithmetic: ArithmeticType;
}

/**
 * Quantizes consecutive elements of a tensor.
 *
 * `w * (1 / scale)` in float64 then rounded to float32 equals the correctly
 * rounded float32 `w / scale`: the float64 product is within 2^-52 (relative)
 * of the exact quotient, while an exact quotient of two float32 values is at
 * least 2^-49 away from any float32 rounding midpoint (it is never on one:
 * a midpoint has 25 significant bits, so midpoint * scale cannot be a 24-bit
 * float32). The same argument holds with more room for float16.
 *
 * @param values Element values (float16 and bfloat16 decoded to float32).
 * @param offset Flat index of `values[0]` in the tensor.
 * @param layout The tensor's block layout.
 * @param params Per-block parameters.
 * @param out One quantized value per element.
 */
export function quantizeValues(
  values: Float32Array,
  offset: number,
  layout: BlockLayout,
  params: KernelParams,
  out: Int8Array | Uint8Array,
): void {
  const { inverseScale, zeroPoint, qmin, qmax } = params;
  const toFloat = params.arithmetic === "float16" ? f16round : Math.fround;
  layout.forEachRun(offset, values.length, (from, to, block) => {
    const inv = inverseScale[block];
    const zp = zeroPoint[block];
    for (let i = from; i < to; i++) {
      const q = ((toFloat(values[i] * inv) + R) - R) + zp;
      out[i] = q < qmin ? qmin : q > qmax ? qmax : q;
    }
  });
}
