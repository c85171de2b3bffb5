/**
 * The dequantize kernel (SPEC.md Section 1): `w = scale * (q - zero_point)`,
 * computed in the source's float type and stored in it.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import { encodeBfloat16, encodeFloat16, f16round } from "./float16.ts";
import type { FloatData, FloatDType } from "./types.ts";

/**
 * Dequantizes consecutive elements.
 *
 * @param q Quantized values of elements `[offset, offset + q.length)` of the layout.
 * @param offset Flat index of `q[0]`.
 * @param layout Block layout of `scale` and `zeroPoint`.
 * @param scale Scale value per block.
 * @param zeroPoint Zero point per block; all 0 when omitted.
 * @param dtype Float type to compute in and store: float32 data, or 16-bit raw bits.
 * @param values Where the float values go (float32 data, or the intermediate of 16-bit ones), at least `q.length`
 *   long; fresh memory when omitted. Reuse it across calls: fresh pages cost more than the work (PITFALLS.md 14).
 * @param bits Where 16-bit results go, at least `q.length` long; fresh memory when omitted.
 * @returns The float elements: a view of `values` (float32) or of `bits`, `q.length` long.
 * @throws {RangeError} When `values` or `bits` is shorter than `q`.
 */
export function dequantizeValues(
  q: Int8Array | Uint8Array,
  offset: number,
  layout: BlockLayout,
  scale: ArrayLike<number>,
  zeroPoint: ArrayLike<number> | undefined,
  dtype: FloatDType,
  values: Float32Array = new Float32Array(q.length),
  bits?: Uint16Array,
): FloatData {
  const n = q.length;
  if (values.length < n || (bits !== undefined && bits.length < n)) {
    throw new RangeError(`dequantizeValues needs room for ${n} values`);
  }
  const out = values.length === n ? values : values.subarray(0, n);
  // One byte array type and one rounding per loop keep V8's loops monomorphic (see quantize_kernel.ts).
  const bytes = q instanceof Uint8Array ? q : new Uint8Array(q.buffer, q.byteOffset, n);
  const flip = q instanceof Int8Array ? 128 : 0;
  // bfloat16 scales are float32 and its arithmetic is float32 (SPEC.md Section 3).
  const run = dtype === "float16" ? dequantizeRun16 : dequantizeRun32;
  layout.forEachRun(offset, n, (from, to, block) => {
    run(bytes, flip, out, from, to, scale[block], zeroPoint ? zeroPoint[block] : 0);
  });
  if (dtype === "float32") return out;
  const b = bits === undefined ? new Uint16Array(n) : bits.length === n ? bits : bits.subarray(0, n);
  return dtype === "float16" ? encodeFloat16(out, b) : encodeBfloat16(out, b);
}

// `s * (q - zp)` is exact in float64 (a 24-bit scale times a 9-bit integer), so rounding it once to the float type
// gives the correctly rounded product numpy computes. `(byte ^ flip) - flip` is the quantized value.

function dequantizeRun32(
  bytes: Uint8Array,
  flip: number,
  out: Float32Array,
  from: number,
  to: number,
  s: number,
  zp: number,
): void {
  const z = zp + flip;
  for (let i = from; i < to; i++) out[i] = s * ((bytes[i] ^ flip) - z);
}

function dequantizeRun16(
  bytes: Uint8Array,
  flip: number,
  out: Float32Array,
  from: number,
  to: number,
  s: number,
  zp: number,
): void {
  const z = zp + flip;
  for (let i = from; i < to; i++) out[i] = f16round(s * ((bytes[i] ^ flip) - z));
}
