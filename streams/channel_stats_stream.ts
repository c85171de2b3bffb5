/**
 * ChannelStatsStream: per-block min and max of each tensor, accumulated
 * across its slabs.
 *
 * @module
 */
import { BlockLayout } from "../src/block_layout.ts";
import { BlockRange } from "../src/block_range.ts";
import { type QuantizeConfig, resolveConfig } from "../src/config.ts";
import { optionsFor } from "../src/quantize_config.ts";
import { NonFiniteError } from "../src/errors.ts";
import { floatValues } from "../src/float_values.ts";
import { elementCount } from "../src/report.ts";
import { planValidatedTensor } from "../src/_tensor_plan_validated.ts";
import type { QuantizeOptions, Slab } from "../src/types.ts";

/** The block statistics of one tensor. */
export interface TensorStats {
  /** Tensor name. */
  readonly name: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Block size per axis, as the configuration gives it for this tensor. */
  readonly blockSizes: readonly number[];
  /** Shape of the per-block arrays. */
  readonly scaleShape: readonly number[];
  /** Minimum per block, row-major over `scaleShape`. */
  readonly mins: Float64Array;
  /** Maximum per block. */
  readonly maxs: Float64Array;
}

/**
 * Computes, for every float tensor the configuration quantizes, the min and
 * max of each block (the statistics scales are made from), emitting one
 * {@linkcode TensorStats} when the tensor's last slab has passed. Memory is
 * one pair of numbers per block.
 *
 * @example
 * ```ts
 * import { ChannelStatsStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const tensor = { name: "w", dtype: "float32", shape: [2, 5] } as const;
 * const slabs = [
 *   { tensor, offset: 0, data: new Float32Array([1, -2, 3, 0, 0]) },
 *   { tensor, offset: 5, data: new Float32Array([4, 5, -6, 0, 0]) },
 * ];
 * const [stats] = await Array.fromAsync(ReadableStream.from(slabs).pipeThrough(new ChannelStatsStream({ weightThreshold: 0 })));
 * assert.deepEqual([...stats.mins], [-2, -6]);
 * assert.deepEqual([...stats.maxs], [3, 5]);
 * ```
 */
export class ChannelStatsStream extends TransformStream<Slab, TensorStats> {
  /**
   * Creates the stream.
   *
   * @param config Options for every tensor, or a configuration with overrides.
   * @throws {ConfigError} When an option is invalid.
   */
  constructor(config: QuantizeConfig | QuantizeOptions = {}) {
    const resolved = resolveConfig(config);
    let current: { name: string; layout: BlockLayout; range: BlockRange; seen: number; size: number } | undefined;
    super({
      transform(slab, controller) {
        const { tensor } = slab;
        if (slab.offset === 0) {
          const plan = planValidatedTensor(tensor, optionsFor(resolved, tensor.name));
          current = undefined;
          if (plan.kind === "skipped") return;
          const layout = new BlockLayout(plan.shape, plan.blockSizes);
          current = {
            name: tensor.name,
            layout,
            range: new BlockRange(layout),
            seen: 0,
            size: elementCount(tensor.shape),
          };
        }
        if (!current || current.name !== tensor.name) return;
        const values = floatValues(slab.data, tensor.dtype);
        const bad = current.range.observe(values, slab.offset);
        if (bad >= 0) throw new NonFiniteError(tensor.name, `${values[bad]} at element ${slab.offset + bad}`);
        current.seen += values.length;
        if (current.seen < current.size) return;
        const { layout, range } = current;
        controller.enqueue({
          name: tensor.name,
          shape: layout.shape,
          blockSizes: layout.blockSizes,
          scaleShape: layout.scaleShape,
          mins: range.mins,
          maxs: range.maxs,
        });
        current = undefined;
      },
    });
  }
}
