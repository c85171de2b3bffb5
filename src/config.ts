/**
 * The quantization configuration, mirroring Core ML Tools'
 * `OptimizationConfig`: global options plus per-tensor overrides by name
 * pattern, where `null` leaves matching tensors alone.
 *
 * @module
 */
import { z } from "zod";
import { ConfigError } from "./errors.ts";
import { globToRegExp } from "./glob.ts";
import { quantizeOptionsSchema, resolveQuantizeOptions } from "./quantize_options.ts";
import type { QuantizeOptions, ResolvedQuantizeOptions } from "./types.ts";
import { formatIssues } from "./_zod_issues.ts";

const configSchema = z.strictObject({
  global: quantizeOptionsSchema.optional(),
  tensors: z.record(z.string(), quantizeOptionsSchema.nullable()).optional(),
});

/** A per-tensor override. */
export interface TensorOverride {
  /** Glob over tensor names (`*` matches dots too). */
  readonly pattern: string;
  /** Options merged over the global ones, or `null` to leave matching tensors alone. */
  readonly options: QuantizeOptions | null;
}

/** A validated configuration. */
export interface QuantizeConfig {
  /** Options for every tensor, defaults filled in. */
  readonly global: ResolvedQuantizeOptions;
  /** Overrides in file order; the last matching one wins. */
  readonly tensors: readonly TensorOverride[];
}

/**
 * Validates a configuration such as
 * `{ "global": { "dtype": "int8" }, "tensors": { "*.c_attn.weight": { "axis": -1 }, "wte.weight": null } }`.
 *
 * @param input Parsed JSON (or any value).
 * @returns The configuration.
 * @throws {ConfigError} Listing every problem with its path, e.g.
 *   `tensors["*.c_attn.weight"].axis: Invalid input: expected int, received number`.
 *
 * @example
 * ```ts
 * import { optionsFor, parseConfig } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ tensors: { "*.c_attn.weight": { axis: -1 }, "wte.weight": null } });
 * assert.equal(optionsFor(config, "h.0.attn.c_attn.weight")?.axis, -1);
 * assert.equal(optionsFor(config, "wte.weight"), null);
 * assert.equal(optionsFor(config, "h.0.mlp.c_fc.weight")?.axis, 0);
 * ```
 */
export function parseConfig(input: unknown): QuantizeConfig {
  const parsed = configSchema.safeParse(input ?? {});
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error));
  return {
    global: resolveQuantizeOptions(parsed.data.global ?? {}),
    tensors: Object.entries(parsed.data.tensors ?? {}).map(([pattern, options]) => ({ pattern, options })),
  };
}

const compiled = new WeakMap<QuantizeConfig, readonly RegExp[]>();

/**
 * The options that apply to a tensor: the global ones, with the last
 * matching override merged over them.
 *
 * @param config A configuration from {@linkcode parseConfig}.
 * @param name Tensor name.
 * @returns The options, or `null` when an override leaves the tensor alone.
 */
export function optionsFor(config: QuantizeConfig, name: string): ResolvedQuantizeOptions | null {
  let patterns = compiled.get(config);
  if (!patterns) compiled.set(config, patterns = config.tensors.map((t) => globToRegExp(t.pattern)));
  for (let i = config.tensors.length - 1; i >= 0; i--) {
    if (!patterns[i].test(name)) continue;
    const options = config.tensors[i].options;
    return options === null ? null : { ...config.global, ...definedOnly(options) };
  }
  return config.global;
}

function definedOnly(options: QuantizeOptions): QuantizeOptions {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}

/**
 * The configuration of plain options with no overrides.
 *
 * @param options Global options.
 * @returns The configuration.
 * @throws {ConfigError} When an option is invalid.
 */
export function configOf(options: QuantizeOptions = {}): QuantizeConfig {
  return { global: resolveQuantizeOptions(options), tensors: [] };
}

/**
 * A configuration from either form callers give: plain options (for every
 * tensor), or a configuration with per-tensor overrides as is.
 *
 * @example
 * ```ts
 * import { parseConfig, resolveConfig } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.equal(resolveConfig({ dtype: "int4" }).global.dtype, "int4");
 * const config = parseConfig({ tensors: { "lm_head.*": null } });
 * assert.equal(resolveConfig(config), config);
 * ```
 *
 * @param config Plain options, a parsed configuration, or nothing.
 * @returns The configuration.
 * @throws {ConfigError} When a plain option is invalid.
 */
export function resolveConfig(config: QuantizeConfig | QuantizeOptions | undefined): QuantizeConfig {
  return config && "global" in config && "tensors" in config
    ? config as QuantizeConfig
    : configOf(config as QuantizeOptions);
}
