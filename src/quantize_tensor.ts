/**
 * Quantizing and dequantizing a whole tensor held in memory: the reference
 * entry point whose numbers every stream reproduces bit for bit.
 *
 * @module
 */
import { BlockLayout } from "./block_layout.ts";
import { BlockQuantizer } from "./block_quantizer.ts";
import { ErrorStats } from "./error_stats.ts";
import { dequantizeValues } from "./dequantize_kernel.ts";
import { decodeFloat16 } from "./float16.ts";
import { floatValues } from "./float_values.ts";
import { planTensor } from "./tensor_plan.ts";
import { isSigned } from "./ranges.ts";
import type {
  FloatDType,
  QuantizedTensor,
  QuantizedTensorInfo,
  QuantizeOptions,
  QuantizeResult,
  Tensor,
} from "./types.ts";

const FLOAT_DTYPES: readonly FloatDType[] = ["float32", "float16", "bfloat16"];

function checkTensor(tensor: Tensor): void {
  if (!FLOAT_DTYPES.includes(tensor.dtype)) {
    throw new TypeError(`Tensor "${tensor.name}" has dtype ${tensor.dtype}; expected float32, float16 or bfloat16`);
  }
  const size = tensor.shape.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== size) {
    throw new RangeError(
      `Tensor "${tensor.name}" has ${tensor.data.length} elements; shape [${tensor.shape}] needs ${size}`,
    );
  }
}

function checkOut(out: Int8Array | Uint8Array, info: QuantizedTensorInfo): void {
  const want = isSigned(info.dtype) ? Int8Array : Uint8Array;
  if (!(out instanceof want)) {
    throw new TypeError(
      `Tensor "${info.name}": out must be a ${want.name} for dtype ${info.dtype}; got ${out.constructor.name}`,
    );
  }
  const size = info.shape.reduce((a, b) => a * b, 1);
  if (out.length !== size) throw new RangeError(`Tensor "${info.name}": out has ${out.length} elements; needs ${size}`);
}

/**
 * Quantizes a tensor with Core ML Tools' numbers (SPEC.md), or says why it
 * is left in float.
 *
 * @param tensor The tensor; float16 and bfloat16 data as raw bits in a `Uint16Array`.
 * @param options Quantization options (defaults: int8, `linear_symmetric`, per channel on axis 0).
 * @param out Where to put the quantized values instead of a new array (an `Int8Array` for int8/int4, a
 *   `Uint8Array` for uint8/uint4, one element per value), for callers that quantize many tensors: fresh
 *   memory is page-faulted in 4 KiB at a time, which costs more than the kernel itself on some machines. When
 *   the call throws (NaN or an infinity in the tensor), `out` may already hold the values of the rows before it.
 * @returns The quantized tensor, or a {@linkcode SkippedTensor} with its reason.
 * @throws {NonFiniteError} When the tensor holds NaN or an infinity.
 * @throws {Float16OverflowError} When float16 arithmetic would overflow.
 * @throws {ConfigError} When an option is invalid.
 * @throws {RangeError} When the data length does not match the shape, or `out` has the wrong length.
 * @throws {TypeError} When `out` is not the array type of the dtype.
 *
 * @example
 * ```ts
 * import { quantizeTensor } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const data = new Float32Array([127, 2.5, -2.5, 3.5, 0.5, -1, 0.5, 0.25, 0, 1]);
 * const result = quantizeTensor({ name: "w", dtype: "float32", shape: [2, 5], data }, { weightThreshold: 0 });
 * assert.equal(result.kind, "quantized");
 * if (result.kind === "quantized") {
 *   assert.deepEqual([...result.data.subarray(0, 5)], [127, 2, -2, 4, 0]); // ties go to the even neighbour
 *   assert.deepEqual(result.scaleShape, [2, 1]);
 * }
 * ```
 */
export function quantizeTensor(
  tensor: Tensor,
  options: QuantizeOptions = {},
  out?: Int8Array | Uint8Array,
): QuantizeResult {
  checkTensor(tensor);
  const plan = planTensor(tensor, options);
  if (plan.kind === "skipped") return plan;
  const { kind: _, ...info } = plan;
  if (out) checkOut(out, info);
  const values = floatValues(tensor.data, tensor.dtype);
  const quantizer = new BlockQuantizer(info);
  const data = quantizer.observeAndQuantize(values, out);
  const zeroPoint = quantizer.zeroPoints();
  return {
    kind: "quantized",
    ...info,
    data,
    scale: quantizer.scales(),
    ...(zeroPoint.some((z) => z !== 0) ? { zeroPoint } : {}),
    zeroRangeBlocks: quantizer.zeroRangeBlocks,
  };
}

/**
 * The numeric value of each stored scale (float16 bits decoded).
 *
 * @param tensor Scales and their dtype.
 * @returns The scales as float32 numbers.
 */
export function scaleValues(tensor: Pick<QuantizedTensor, "scale" | "scaleDType">): Float32Array {
  const { scale, scaleDType } = tensor;
  if (scaleDType === "float16") return decodeFloat16(scale as Uint16Array, new Float32Array(scale.length));
  return scale as Float32Array;
}

/**
 * Dequantizes a tensor: `w = scale * (q - zero_point)` (SPEC.md Section 1),
 * computed in the source's float type and stored in it.
 *
 * @param tensor A quantized tensor, as {@linkcode quantizeTensor} returns it.
 * @returns The float tensor, with the source's dtype and shape.
 *
 * @example
 * ```ts
 * import { dequantizeTensor, quantizeTensor } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const data = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i));
 * const q = quantizeTensor({ name: "w", dtype: "float32", shape: [64, 64], data });
 * if (q.kind !== "quantized") throw new Error(q.message);
 * const back = dequantizeTensor(q);
 * assert.ok(Math.abs(back.data[1] - data[1]) < 0.01);
 * ```
 */
export function dequantizeTensor(tensor: QuantizedTensor): Tensor {
  const layout = new BlockLayout(tensor.shape, tensor.blockSizes);
  const { name, shape, sourceDType: dtype } = tensor;
  const data = dequantizeValues(tensor.data, 0, layout, scaleValues(tensor), tensor.zeroPoint, dtype);
  return { name, dtype, shape, data };
}

/** The error a quantization introduced in one tensor (SPEC.md Section 8). */
export interface TensorError {
  /** Largest |w - dequantize(q)|. */
  readonly maxAbsError: number;
  /** Signal-to-noise ratio in dB; Infinity when exact. */
  readonly snrDb: number;
}

/**
 * Measures the error of a quantized tensor against its original values, with
 * the dequantized values computed exactly (`scale * (q - zp)` in float64).
 *
 * @param original The tensor before quantization.
 * @param quantized Its quantized form.
 * @returns Max absolute error and SNR.
 */
export function measureError(original: Tensor, quantized: QuantizedTensor): TensorError {
  const stats = new ErrorStats();
  const layout = new BlockLayout(quantized.shape, quantized.blockSizes);
  const zp = quantized.zeroPoint ? Int32Array.from(quantized.zeroPoint) : new Int32Array(layout.blockCount);
  stats.observe(
    floatValues(original.data, original.dtype),
    0,
    layout,
    quantized.data,
    Float64Array.from(scaleValues(quantized)),
    zp,
  );
  return { maxAbsError: stats.maxAbsError, snrDb: stats.snrDb };
}
