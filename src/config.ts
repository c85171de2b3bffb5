/**
 * The quantization configuration, mirroring Core ML Tools'
 * `OptimizationConfig`: global options plus per-tensor overrides by name
 * pattern, where `null` leaves matching tensors alone.
 *
 * @module
 */
import { z } from "zod";
import { ConfigError } from "./errors.ts";
import { quantizeOptionsSchema, resolveQuantizeOptions } from "./quantize_options.ts";
import type { QuantizeOptions } from "./types.ts";
import type { QuantizeConfig } from "./quantize_config.ts";
import { formatIssues } from "./_zod_issues.ts";

export { optionsFor, type QuantizeConfig, type TensorOverride } from "./quantize_config.ts";

const configSchema = z.strictObject({
  global: quantizeOptionsSchema.optional(),
  tensors: z.record(z.string(), quantizeOptionsSchema.nullable()).optional(),
});

/** A `QuantizeConfig` object built by hand, checked as a configuration file is. */
const builtConfigSchema = z.strictObject({
  global: quantizeOptionsSchema,
  tensors: z.array(z.strictObject({ pattern: z.string(), options: quantizeOptionsSchema.nullable() })),
});

/**
 * The configurations this module made or checked. The jobs plan tensors from
 * them without checking options again (the worker threads do not load zod).
 */
const validated = new WeakSet<QuantizeConfig>();

function checked(config: QuantizeConfig): QuantizeConfig {
  validated.add(config);
  return config;
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
  return checked({
    global: resolveQuantizeOptions(parsed.data.global ?? {}),
    tensors: Object.entries(parsed.data.tensors ?? {}).map(([pattern, options]) => ({ pattern, options })),
  });
}

/**
 * The configuration of plain options with no overrides.
 *
 * @param options Global options.
 * @returns The configuration.
 * @throws {ConfigError} When an option is invalid.
 */
export function configOf(options: QuantizeOptions = {}): QuantizeConfig {
  return checked({ global: resolveQuantizeOptions(options), tensors: [] });
}

/**
 * A configuration from either form callers give: plain options (for every
 * tensor), or a configuration with per-tensor overrides. One made by
 * {@linkcode parseConfig} comes back as is; one built by hand is checked and
 * comes back with its global options completed.
 *
 * @example
 * ```ts
 * import { parseConfig, resolveConfig } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.equal(resolveConfig({ dtype: "int4" }).global.dtype, "int4");
 * const config = parseConfig({ tensors: { "lm_head.*": null } });
 * assert.equal(resolveConfig(config), config);
 * assert.throws(() => resolveConfig({ global: { axis: 0.5 }, tensors: [] } as never), /axis/);
 * ```
 *
 * @param config Plain options, a configuration, or nothing.
 * @returns The configuration, checked.
 * @throws {ConfigError} When an option is invalid.
 */
export function resolveConfig(config: QuantizeConfig | QuantizeOptions | undefined): QuantizeConfig {
  if (!config || !("global" in config && "tensors" in config)) return configOf(config as QuantizeOptions);
  if (validated.has(config as QuantizeConfig)) return config as QuantizeConfig;
  const parsed = builtConfigSchema.safeParse(config);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error));
  return checked({ global: resolveQuantizeOptions(parsed.data.global), tensors: parsed.data.tensors });
}
