/**
 * Deciding, from a tensor's name, dtype and shape alone, whether and how it
 * is quantized (SPEC.md Section 4): the skip rules and the block sizes.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import { resolveQuantizeOptions } from "./quantize_options.ts";
import type { FloatDType, QuantizedTensorInfo, QuantizeOptions, SkippedTensor, SkipReason } from "./types.ts";

const FLOAT_DTYPES: readonly string[] = ["float32", "float16", "bfloat16"];

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
 * Decides how a tensor is quantized, or why it is not.
 *
 * @param tensor Name, dtype and shape.
 * @param options Quantization options, or `null` to leave the tensor alone.
 * @returns The recipe for the tensor, or the reason it is skipped.
 * @throws {ConfigError} When an option is invalid, or the channel axis does not exist in the tensor (a
 *   configuration problem: HTTP answers it with a 400, the CLI with exit code 1).
 *
 * @example
 * ```ts
 * import { planTensor } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const plan = planTensor({ name: "fc.weight", dtype: "float32", shape: [64, 128] }, { blockSize: 32, granularity: "per_block" });
 * assert.equal(plan.kind, "plan");
 * if (plan.kind === "plan") assert.deepEqual(plan.scaleShape, [64, 4]);
 * assert.equal(planTensor({ name: "fc.bias", dtype: "float32", shape: [64] }, {}).kind, "skipped");
 * ```
 */
export function planTensor(
  tensor: TensorDescription,
  options: QuantizeOptions | null,
): (QuantizedTensorInfo & { readonly kind: "plan" }) | SkippedTensor {
  const { name, dtype, shape } = tensor;
  if (!FLOAT_DTYPES.includes(dtype)) return skip(name, "not_float", `dtype ${dtype} is not a float type`);
  if (options === null) return skip(name, "excluded", "excluded by the configuration");
  const o = resolveQuantizeOptions(options);
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
