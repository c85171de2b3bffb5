/**
 * Validation and defaults of `QuantizeOptions`, one zod schema
 * shared by the API, the configuration file, the CLI and HTTP.
 *
 * @module
 */
import { z } from "zod";
import { ConfigError } from "./errors.ts";
import type { ResolvedQuantizeOptions } from "./types.ts";
import { formatIssues } from "./_zod_issues.ts";

/** Defaults of Core ML Tools' `OpLinearQuantizerConfig`. */
export const DEFAULT_QUANTIZE_OPTIONS: Readonly<ResolvedQuantizeOptions> = Object.freeze({
  mode: "linear_symmetric",
  dtype: "int8",
  granularity: "per_channel",
  axis: 0,
  blockSize: 32,
  weightThreshold: 2048,
  quantizeRank1: false,
});

/** @internal The options schema; every field optional, unknown fields rejected. */
export const quantizeOptionsSchema = z.strictObject({
  mode: z.enum(["linear", "linear_symmetric"]).optional(),
  dtype: z.enum(["int8", "uint8", "int4", "uint4"]).optional(),
  granularity: z.enum(["per_tensor", "per_channel", "per_block"]).optional(),
  axis: z.int().optional(),
  blockSize: z.int().positive().optional(),
  weightThreshold: z.int().nonnegative().optional(),
  quantizeRank1: z.boolean().optional(),
});

/**
 * Validates options and fills in the defaults.
 *
 * @param options Options as given (unknown input is checked).
 * @returns Every option, validated.
 * @throws {ConfigError} Listing every invalid field.
 *
 * @example
 * ```ts
 * import { resolveQuantizeOptions } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.equal(resolveQuantizeOptions({ dtype: "int4" }).mode, "linear_symmetric");
 * assert.throws(() => resolveQuantizeOptions({ axis: 0.5 }), /axis/);
 * ```
 */
export function resolveQuantizeOptions(options: unknown = {}): ResolvedQuantizeOptions {
  const parsed = quantizeOptionsSchema.safeParse(options ?? {});
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error));
  const given = Object.fromEntries(Object.entries(parsed.data).filter(([, v]) => v !== undefined));
  return { ...DEFAULT_QUANTIZE_OPTIONS, ...given };
}
