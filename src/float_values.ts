/**
 * Float element storage to float32 values for the kernels.
 *
 * @module
 */
import { decodeBfloat16, decodeFloat16 } from "./float16.ts";
import type { FloatData, FloatDType } from "./types.ts";
import { wasmKernels } from "./wasm_kernels.ts";

/** Below this many elements a JavaScript loop is as fast as a call into wasm. */
const WASM_MIN = 256;

/**
 * The float32 values of stored elements: the array itself for float32,
 * otherwise decoded (exactly) into `scratch` when it is large enough.
 *
 * @param data Stored elements.
 * @param dtype Their type.
 * @param scratch Reusable destination for 16-bit types.
 * @returns Float32 values, `data.length` long.
 * @throws {TypeError} When the storage does not match the dtype.
 */
export function floatValues(data: FloatData, dtype: FloatDType, scratch?: Float32Array): Float32Array {
  if (dtype === "float32") {
    if (!(data instanceof Float32Array)) {
      throw new TypeError(`float32 data must be a Float32Array, got ${data.constructor.name}`);
    }
    return data;
  }
  if (!(data instanceof Uint16Array)) {
    throw new TypeError(`${dtype} data must be a Uint16Array of raw bits, got ${data.constructor.name}`);
  }
  const out = scratch && scratch.length >= data.length
    ? scratch.subarray(0, data.length)
    : new Float32Array(data.length);
  // The wasm kernel where both live in its memory (a quantizeFile lease): the same values, 10x faster.
  if (data.length >= WASM_MIN && wasmKernels()?.decode(data, dtype, out)) return out;
  return dtype === "float16" ? decodeFloat16(data, out) : decodeBfloat16(data, out);
}
