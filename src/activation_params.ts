/**
 * Quantization parameters of activations (SPEC.md Section 6): per tensor,
 * from the calibrated range `[rmin, rmax]`, with Core ML Tools' float16
 * arithmetic; and their JSON file format.
 *
 * @module
 */
import { z } from "zod";
import type { CalibrationStats } from "./calibration_stats.ts";
import { ConfigError, Float16OverflowError, FormatError } from "./errors.ts";
import { f16round } from "./float16.ts";
import { computeBlockParams } from "./qparams.ts";
import { fullRange, quantRange } from "./ranges.ts";
import type { QuantMode } from "./types.ts";
import { formatIssues } from "./_zod_issues.ts";

/** Integer types activations are quantized to (SPEC.md Section 6). */
export type ActivationDType = "int8" | "uint8";

/** The stored quantization parameters of one activation. */
export interface ActivationParams {
  /** Activation name. */
  readonly name: string;
  /** Integer type of the quantized values. */
  readonly dtype: ActivationDType;
  /** Mode the scale and zero point were computed with. */
  readonly mode: QuantMode;
  /** Calibrated minimum, rounded to float16. */
  readonly rmin: number;
  /** Calibrated maximum, rounded to float16. */
  readonly rmax: number;
  /** Scale: a float16 value, stored (and used) as float32. Never 0. */
  readonly scale: number;
  /** Zero point, within the dtype's range. */
  readonly zeroPoint: number;
}

/** Options of {@linkcode computeActivationParams} and {@linkcode activationParams}. */
export interface ActivationParamsOptions {
  /**
   * `linear_symmetric` (zero point fixed) or `linear` (affine).
   * @default {"linear_symmetric"}
   */
  mode?: QuantMode;
  /**
   * Integer type of the quantized activations.
   * @default {"int8"}
   */
  dtype?: ActivationDType;
  /**
   * Percentile the `percentile` observer clips at (ignored by the others), in [50, 100].
   * @default {99.99}
   */
  percentile?: number;
}

const optionsSchema = z.strictObject({
  mode: z.enum(["linear", "linear_symmetric"]).optional(),
  dtype: z.enum(["int8", "uint8"]).optional(),
  percentile: z.number().min(50).max(100).optional(),
});

/**
 * Validates options and fills in the defaults.
 *
 * @param options Options as given (unknown input is checked).
 * @returns Every option, validated.
 * @throws {ConfigError} Listing every invalid field.
 */
export function resolveActivationParamsOptions(options: unknown = {}): Required<ActivationParamsOptions> {
  const parsed = optionsSchema.safeParse(options ?? {});
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error));
  const { mode = "linear_symmetric", dtype = "int8", percentile = 99.99 } = parsed.data;
  return { mode, dtype, percentile };
}

/**
 * The parameters of one activation from its calibrated range, exactly as
 * Core ML Tools computes them (SPEC.md Section 6): `rmin` and `rmax` are
 * rounded to float16, then the scale and zero point of the two-element block
 * `[rmin, rmax]` follow SPEC.md Section 3 with every operation rounded to
 * float16. The float16 scale is stored as float32 (exactly); a scale of 0 (a
 * range of zeros, or one so small the float16 scale underflows) becomes 1.
 *
 * @param name Activation name, for the result and error messages.
 * @param rmin Calibrated minimum.
 * @param rmax Calibrated maximum.
 * @param options Mode and dtype.
 * @returns The parameters.
 * @throws {Float16OverflowError} In `linear` mode when `|rmin|` or `|rmax|` exceeds 511
 *   (the float16 intermediate `qmin * rmax` overflows), or in either mode beyond float16's range.
 * @throws {RangeError} When `rmin > rmax` or either is not finite.
 * @throws {ConfigError} When an option is invalid.
 *
 * @example
 * ```ts
 * import { activationParams, f16round } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const p = activationParams("relu1", -1, 0.5);
 * assert.equal(p.scale, f16round(2 / 254)); // max(|rmin|, |rmax|) = 1; computed in float16, stored as float32
 * assert.equal(p.zeroPoint, 0);
 * const a = activationParams("relu1", 0, 3, { mode: "linear" });
 * assert.equal(a.zeroPoint, -128);
 * ```
 */
export function activationParams(
  name: string,
  rmin: number,
  rmax: number,
  options: ActivationParamsOptions = {},
): ActivationParams {
  const { mode, dtype } = resolveActivationParamsOptions(options);
  if (!Number.isFinite(rmin) || !Number.isFinite(rmax) || rmin > rmax) {
    throw new RangeError(`Activation "${name}" has an invalid calibrated range [${rmin}, ${rmax}]`);
  }
  // Core ML Tools holds the calibrated range as np.float16 before computing parameters.
  const lo = f16round(rmin);
  const hi = f16round(rmax);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    // Beyond float16 already: say which values, not the infinities they became.
    throw new Float16OverflowError(name, `the calibrated range [${rmin}, ${rmax}]`, "activation", "linear_symmetric");
  }
  // Section 3 takes min and max of the block [lo, hi]: lo and hi themselves.
  let block;
  try {
    block = computeBlockParams([lo], [hi], mode, quantRange(dtype, mode), "float16", name);
  } catch (e) {
    if (!(e instanceof Float16OverflowError)) throw e;
    const detail = e.message.slice(e.message.indexOf(": ") + 2, e.message.indexOf(" overflows"));
    throw new Float16OverflowError(name, detail, "activation", mode);
  }
  return {
    name,
    dtype,
    mode,
    rmin: lo,
    rmax: hi,
    scale: Math.fround(block.scale[0]), // exact: every float16 is a float32
    zeroPoint: block.zeroPoint[0],
  };
}

/**
 * The parameters of every activation in calibration statistics, in order of
 * first appearance, with the range each statistic's observer gives
 * ({@linkcode CalibrationStats.range}).
 *
 * @param stats Calibration statistics.
 * @param options Mode, dtype, and the percentile of the `percentile` observer.
 * @returns One entry per activation.
 * @throws {RangeError} When an activation has no finite values.
 * @throws {Float16OverflowError} As {@linkcode activationParams}.
 * @throws {ConfigError} When an option is invalid.
 *
 * @example
 * ```ts
 * import { CalibrationStats, computeActivationParams } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const stats = new CalibrationStats();
 * stats.observe("fc1.input", [-2, 0.5, 2]);
 * const [p] = computeActivationParams(stats, { dtype: "uint8" });
 * assert.deepEqual([p.rmin, p.rmax, p.zeroPoint], [-2, 2, 127]);
 * ```
 */
export function computeActivationParams(
  stats: CalibrationStats,
  options: ActivationParamsOptions = {},
): ActivationParams[] {
  const resolved = resolveActivationParamsOptions(options);
  return stats.names().map((name) => {
    const [rmin, rmax] = stats.range(name, resolved.percentile);
    return activationParams(name, rmin, rmax, resolved);
  });
}

/** The JSON file format of activation parameters. */
export interface ActivationParamsFile {
  /** Always `quantflow.activation_params`. */
  format: "quantflow.activation_params";
  /** Format version, 1. */
  version: 1;
  /** One entry per activation. */
  activations: ActivationParams[];
}

const paramsSchema = z.strictObject({
  name: z.string().min(1),
  dtype: z.enum(["int8", "uint8"]),
  mode: z.enum(["linear", "linear_symmetric"]),
  rmin: z.number(),
  rmax: z.number(),
  scale: z.number().positive().refine(
    (s) => Number.isFinite(s) && Math.fround(s) === s,
    "must be a finite float32 value",
  ),
  zeroPoint: z.int(),
});

const fileSchema = z.strictObject({
  format: z.literal("quantflow.activation_params"),
  version: z.literal(1),
  activations: z.array(paramsSchema),
});

/** Problems a schema cannot express, as `path: message`. */
function crossCheck(list: readonly z.infer<typeof paramsSchema>[], prefix: string): string[] {
  const issues: string[] = [];
  const seen = new Set<string>();
  list.forEach((p, i) => {
    const at = `${prefix}[${i}]`;
    if (seen.has(p.name)) issues.push(`${at}.name: duplicate activation "${p.name}"`);
    seen.add(p.name);
    if (!(p.rmin <= p.rmax)) issues.push(`${at}: rmin ${p.rmin} is above rmax ${p.rmax}`);
    const [qmin, qmax] = fullRange(p.dtype);
    const fixed = quantRange(p.dtype, p.mode).fixedZeroPoint;
    if (fixed !== undefined && p.zeroPoint !== fixed) {
      issues.push(`${at}.zeroPoint: ${p.mode} ${p.dtype} fixes the zero point at ${fixed}, got ${p.zeroPoint}`);
    } else if (p.zeroPoint < qmin || p.zeroPoint > qmax) {
      issues.push(`${at}.zeroPoint: ${p.zeroPoint} is outside ${p.dtype}'s range [${qmin}, ${qmax}]`);
    }
  });
  return issues;
}

/**
 * Checks a list of activation parameters (as given to the activation
 * streams) and indexes it by name.
 *
 * @param params The parameters.
 * @returns A map from activation name to its parameters.
 * @throws {TypeError} When an entry is malformed.
 * @throws {RangeError} When names repeat or a value is out of range.
 */
export function indexActivationParams(params: Iterable<ActivationParams>): Map<string, ActivationParams> {
  if (params === null || typeof params !== "object" || !(Symbol.iterator in params)) {
    throw new TypeError(
      `Activation parameters must be an iterable of { name, dtype, mode, rmin, rmax, scale, zeroPoint }`,
    );
  }
  const list = [...params];
  const parsed = z.array(paramsSchema).safeParse(list);
  if (!parsed.success) throw new TypeError(`Invalid activation parameters: ${formatIssues(parsed.error).join("; ")}`);
  const issues = crossCheck(parsed.data, "");
  if (issues.length > 0) throw new RangeError(`Invalid activation parameters: ${issues.join("; ")}`);
  return new Map(parsed.data.map((p) => [p.name, p]));
}

/**
 * Writes activation parameters as the JSON text of an {@linkcode ActivationParamsFile}.
 * Every number is written in full (float32 scales survive exactly).
 *
 * @param params The parameters, in the order to keep.
 * @returns JSON text, ending in a newline.
 */
export function stringifyActivationParams(params: readonly ActivationParams[]): string {
  const file: ActivationParamsFile = {
    format: "quantflow.activation_params",
    version: 1,
    activations: params.map(({ name, dtype, mode, rmin, rmax, scale, zeroPoint }) => ({
      name,
      dtype,
      mode,
      rmin,
      rmax,
      scale,
      zeroPoint,
    })),
  };
  return JSON.stringify(file, null, 2) + "\n";
}

/**
 * Reads activation parameters written by {@linkcode stringifyActivationParams}.
 *
 * @param input JSON text, or the parsed value.
 * @returns The parameters, in file order.
 * @throws {FormatError} On invalid JSON, listing every problem with its path.
 *
 * @example
 * ```ts
 * import { activationParams, parseActivationParams, stringifyActivationParams } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const params = [activationParams("fc1.input", -0.75, 3.2)];
 * assert.deepEqual(parseActivationParams(stringifyActivationParams(params)), params);
 * ```
 */
export function parseActivationParams(input: unknown): ActivationParams[] {
  let value = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (cause) {
      throw new FormatError(`Invalid activation parameters: not JSON (${(cause as Error).message})`, { cause });
    }
  }
  const parsed = fileSchema.safeParse(value);
  const issues = parsed.success ? crossCheck(parsed.data.activations, "activations") : formatIssues(parsed.error);
  if (issues.length > 0 || !parsed.success) {
    throw new FormatError(`Invalid activation parameters: ${issues.join("; ")}`);
  }
  return parsed.data.activations;
}
