/**
 * The skip rules and block sizes of src/tensor_plan.ts, for options already
 * validated (a configuration from `resolveConfig`): no zod, so the worker
 * threads, whose configuration the main thread validated, need not load it.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import type { FloatDType, QuantizedTensorInfo, ResolvedQuantizeOptions, SkippedTensor, SkipReason } from "./types.ts";

/** The float types quantized; every other dtype is skipped. */
export const FLOAT_DTYPES: readonly string[] = ["float32", "float16", "bfloat16"];

/** A tensor's identity as a plan needs it; `dtype` may be any type name. */
export interface TensorDescription {
  /** Tensor name. */
  readonly name: string;
  /** `float32`, `float16`, `bfloat16`, or any other type name (which is skipped). */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
}

function skip(name: string, reason: SkipReason, message: string): SkippedTensor {
  return { kind: "skipped", name, reason, message };
}

/**
 * `planTensor` for validated options.
 *
 * @param tensor Name, dtype and shape.
 * @param o Validated options, or `null` to leave the tensor alone.
 * @returns The recipe for the tensor, or the reason it is skipped.
 * @throws {ConfigError} When the channel axis does not exist in the tensor.
 */
export function planValidatedTensor(
  tensor: TensorDescription,
  o: ResolvedQuantizeOptions | null,
): (QuantizedTensorInfo & { readonly kind: "plan" }) | SkippedTensor {
  const { name, dtype, shape } = tensor;
  if (!FLOAT_DTYPES.includes(dtype)) return skip(name, "not_float", `dtype ${dtype} is not a float type`);
  if (o === null) return skip(name, "excluded", "excluded by the configuration");
  const rank = shape.length;
  const size = shape.reduce((a, b) => a * b, 1);
  if (rank === 0 || (rank === 1 && !o.quantizeRank1)) {
    return skip(name, "rank_below_2", `rank ${rank} tensors stay in float (quantizeRank1 quantizes rank 1 per tensor)`);
  }
  if (size < 10) return skip(name, "too_small", `${size} elements, fewer than 10`);
  if (size <= o.weightThreshold) {
    return skip(name, "below_threshold", `${size} elements, not above weightThreshold ${o.weightThreshold}`);
  }
  const granularity = rank === 1 ? "per_tensor" : o.granularity;
  const axis = o.axis < 0 ? o.axis + rank : o.axis;
  if (granularity !== "per_tensor" && (axis < 0 || axis >= rank)) {
    throw new ConfigError([`Cannot quantize tensor "${name}": axis ${o.axis} does not exist in shape [${shape}]`]);
  }
  const blockSizes = shape.map(() => 0);
  if (granularity === "per_channel") blockSizes[axis] = 1;
  if (granularity === "per_block") {
    const inputAxis = axis === 0 ? 1 : axis === rank - 1 ? rank - 2 : axis === 1 ? 0 : -1;
    if (inputAxis < 0) {
      throw new ConfigError([
        `Cannot quantize tensor "${name}" per block: channel axis ${o.axis} has no paired input axis (use 0, 1 or -1)`,
      ]);
    }
    if (shape[inputAxis] % o.blockSize !== 0) {
      return skip(
        name,
        "block_size_mismatch",
        `block size ${o.blockSize} does not divide dimension ${shape[inputAxis]} of axis ${inputAxis}`,
      );
    }
    blockSizes[axis] = 1;
    blockSizes[inputAxis] = o.blockSize;
  }
  return {
    kind: "plan",
    name,
    sourceDType: dtype as FloatDType,
    dtype: o.dtype,
    mode: o.mode,
    granularity,
    axis: granularity === "per_tensor" ? 0 : axis,
    shape: [...shape],
    blockSizes: blockSizes.map((b, i) => (b === 0 ? shape[i] : b)),
    scaleShape: shape.map((d, i) => (blockSizes[i] === 0 ? 1 : d / blockSizes[i])),
    scaleDType: dtype === "float16" ? "float16" : "float32",
  };
}
