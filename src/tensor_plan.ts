/**
 * Deciding, from a tensor's name, dtype and shape alone, whether and how it
 * is quantized (SPEC.md Section 4): the skip rules and the block sizes.
 *
 * @module
 */
import { resolveQuantizeOptions } from "./quantize_options.ts";
import type { QuantizedTensorInfo, QuantizeOptions, SkippedTensor } from "./types.ts";
import { FLOAT_DTYPES, planValidatedTensor, type TensorDescription } from "./_tensor_plan_validated.ts";

export type { TensorDescription } from "./_tensor_plan_validated.ts";

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
  // Options are checked only where they are used: a non-float tensor is skipped whatever they say.
  const used = options !== null && FLOAT_DTYPES.includes(tensor.dtype);
  return planValidatedTensor(tensor, used ? resolveQuantizeOptions(options) : null);
}
