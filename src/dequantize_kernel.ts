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
 * @returns The float elements.
 */
export function dequantizeValues(
  q: Int8Array | Uint8Array,
  offset: number,
  layout: BlockLayout,
  scale: ArrayLike<number>,
  zeroPoint: ArrayLike<number> | undefined,
  dtype: FloatDType,
): FloatData {
  const out = new Float32Array(q.length);
  // bfloat16 scales are float32 and its arithmetic is float32 (SPEC.md Section 3).
  const round = dtype === "float16" ? f16round : Math.fround;
  layout.forEachRun(offset, q.length, (from, to, block) => {
    const s = scale[block];
    const z = zeroPoint ? zeroPoint[block] : 0;
    for (let i = from; i < to; i++) out[i] = round(s * (q[i] - z));
  });
  if (dtype === "float32") return out;
  const bits = new Uint16Array(out.length);
  return dtype === "float16" ? encodeFloat16(out, bits) : encodeBfloat16(out, bits);
}
