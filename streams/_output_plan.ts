/**
 * What a quantized checkpoint holds, decided from the input's header and the
 * configuration before any data is read: the output tensors of each input
 * tensor, and the `__metadata__` that lets dequantization need nothing else.
 *
 * @module
 */
import { optionsFor, type QuantizeConfig } from "../src/quantize_config.ts";
import { floatDTypeOf, type SafetensorsHeader } from "../src/safetensors_header.ts";
import { planValidatedTensor } from "../src/_tensor_plan_validated.ts";
import type { QuantizedTensorRecord } from "./quantize_pipeline.ts";
import { type OutputTensorSpec, quantizedSpecs } from "./safetensors_sink.ts";

/** The `__metadata__` key under which a quantized checkpoint records how each tensor was quantized. */
export const QUANTFLOW_METADATA_KEY = "quantflow";

/** The output of a quantization, before any data. */
export interface OutputPlan {
  /** Per input tensor, in file order: its output tensors (one, unchanged, when it is not quantized). */
  readonly groups: readonly (readonly OutputTensorSpec[])[];
  /** The output header's `__metadata__`: the input's, plus the record of every quantized tensor. */
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * Plans the output of a checkpoint.
 *
 * @param header The input's header.
 * @param config The configuration.
 * @returns The output tensors and metadata.
 */
export function outputPlan(header: SafetensorsHeader, config: QuantizeConfig): OutputPlan {
  const records: Record<string, QuantizedTensorRecord> = {};
  const groups = header.entries.map((entry): OutputTensorSpec[] => {
    const dtype = floatDTypeOf(entry.dtype);
    const plan = dtype &&
      planValidatedTensor({ name: entry.name, dtype, shape: entry.shape }, optionsFor(config, entry.name));
    if (!plan || plan.kind !== "plan") {
      return [{ name: entry.name, dtype: entry.dtype, shape: entry.shape, byteLength: entry.end - entry.begin }];
    }
    const { kind: _, name, ...record } = plan;
    records[name] = record;
    return quantizedSpecs(plan);
  });
  const metadata = { ...header.metadata, [QUANTFLOW_METADATA_KEY]: JSON.stringify({ format: 1, tensors: records }) };
  return { groups, metadata };
}
