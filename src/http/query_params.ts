/**
 * Query parameters of the endpoints, validated by zod and named after the
 * CLI flags (`block-size`, not `blockSize`), so one vocabulary serves both.
 * Validation failures become 400 {@linkcode HttpError}s listing every issue
 * with its parameter name.
 *
 * @module
 */
import { z } from "zod";
import type { ActivationDType } from "../activation_params.ts";
import type { ObserverKind } from "../calibration_stats.ts";
import { parseConfig, type QuantizeConfig } from "../config.ts";
import { ConfigError } from "../errors.ts";
import { quantizeOptionsSchema } from "../quantize_options.ts";
import type { QuantizeOptions, QuantMode } from "../types.ts";
import { HttpError } from "./http_error.ts";

const integer = z.string().regex(/^[+-]?\d+$/, "expected an integer").transform(Number);
const decimal = z.string().regex(/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/, "expected a number").transform(Number);
// A bare flag (`?quantize-rank1`) reads as true, as on the command line.
const boolean = z.enum(["", "true", "false", "1", "0"], "expected true or false")
  .transform((v) => v !== "false" && v !== "0");
const shape = quantizeOptionsSchema.shape;

const quantizeQuerySchema = z.strictObject({
  mode: shape.mode,
  dtype: shape.dtype,
  granularity: shape.granularity,
  axis: integer.pipe(z.int()).optional(),
  "block-size": integer.pipe(z.int().positive()).optional(),
  "weight-threshold": integer.pipe(z.int().nonnegative()).optional(),
  "quantize-rank1": boolean.optional(),
  config: z.string().optional(),
  report: z.enum(["json"]).optional(),
});

const calibrateQuerySchema = z.strictObject({
  mode: z.enum(["linear", "linear_symmetric"]).optional(),
  dtype: z.enum(["int8", "uint8"]).optional(),
  observer: z.enum(["minmax", "ema", "percentile"]).optional(),
  percentile: decimal.pipe(z.number().min(50).max(100)).optional(),
  "averaging-constant": decimal.pipe(z.number().gt(0).max(1)).optional(),
  "histogram-bits": integer.pipe(z.int().min(1).max(12)).optional(),
  "skip-non-finite": boolean.optional(),
});

const emptySchema = z.strictObject({});

/** What a quantize request asks for. */
export interface QuantizeQuery {
  /** The configuration: `config` JSON with the flag parameters over its `global` options. */
  readonly config: QuantizeConfig;
  /** `?report=json`: answer with the report only. */
  readonly reportOnly: boolean;
}

/** What a calibrate request asks for. */
export interface CalibrateQuery {
  /** Mode of the activation parameters. */
  readonly mode?: QuantMode;
  /** Integer type of the activation parameters. */
  readonly dtype?: ActivationDType;
  /** Observer of the statistics. */
  readonly observer?: ObserverKind;
  /** Clipping percentile of the `percentile` observer. */
  readonly percentile?: number;
  /** Averaging constant of the `ema` observer. */
  readonly averagingConstant?: number;
  /** Histogram resolution of the `percentile` observer. */
  readonly histogramBits?: number;
  /** Skip NaN and infinities instead of failing. */
  readonly skipNonFinite: boolean;
}

/** Query parameters as a record, rejecting repeated keys (which would otherwise silently pick one). */
function single(params: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  const repeated: string[] = [];
  for (const [key, value] of params) {
    if (Object.hasOwn(out, key)) repeated.push(`${key}: given more than once`);
    out[key] = value;
  }
  if (repeated.length) throw new HttpError(400, "Invalid query parameters", { issues: [...new Set(repeated)] });
  return out;
}

/** Issues named by the parameter as written in the URL (`block-size: ...`, not `["block-size"]: ...`). */
function queryIssues(error: z.ZodError): string[] {
  return error.issues.flatMap((issue) =>
    issue.code === "unrecognized_keys"
      ? issue.keys.map((key) => `${key}: unknown parameter`)
      : [`${issue.path.map(String).join(".") || "(query)"}: ${issue.message}`]
  );
}

function parse<T extends z.ZodType>(schema: T, params: URLSearchParams): z.output<T> {
  const parsed = schema.safeParse(single(params));
  if (!parsed.success) {
    throw new HttpError(400, "Invalid query parameters", { issues: queryIssues(parsed.error) });
  }
  return parsed.data;
}

/**
 * Reads the quantization parameters of `POST /v1/quantize`: `mode`, `dtype`,
 * `granularity`, `axis`, `block-size`, `weight-threshold`, `quantize-rank1`
 * (as the CLI flags), `config` (a JSON configuration as `parseConfig` takes;
 * the flags override its `global` options) and `report=json`.
 *
 * @param params The request's query.
 * @returns The validated configuration.
 * @throws {HttpError} 400, listing every invalid parameter (paths inside `config` are prefixed `config.`).
 */
export function parseQuantizeQuery(params: URLSearchParams): QuantizeQuery {
  const q = parse(quantizeQuerySchema, params);
  const flags: QuantizeOptions = Object.fromEntries(
    Object.entries({
      mode: q.mode,
      dtype: q.dtype,
      granularity: q.granularity,
      axis: q.axis,
      blockSize: q["block-size"],
      weightThreshold: q["weight-threshold"],
      quantizeRank1: q["quantize-rank1"],
    }).filter(([, v]) => v !== undefined),
  );
  let file: Record<string, unknown> = {};
  if (q.config !== undefined) {
    try {
      file = JSON.parse(q.config);
    } catch (cause) {
      throw new HttpError(400, "Invalid query parameters", {
        issues: [`config: not JSON (${(cause as Error).message})`],
      });
    }
    try {
      parseConfig(file); // validate the file as given, so its issues name its own paths
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      throw new HttpError(400, "Invalid configuration in the config parameter", {
        issues: error.issues.map((i) => `config.${i}`),
      });
    }
  }
  const global = { ...(file.global as QuantizeOptions | undefined), ...flags };
  return { config: parseConfig({ ...file, global }), reportOnly: q.report === "json" };
}

/**
 * Reads the parameters of `POST /v1/calibrate`, named as the `calibrate`
 * command's flags: `mode`, `dtype`, `observer`, `percentile`,
 * `averaging-constant`, `histogram-bits`, `skip-non-finite`.
 *
 * @param params The request's query.
 * @returns The validated parameters.
 * @throws {HttpError} 400, listing every invalid parameter.
 */
export function parseCalibrateQuery(params: URLSearchParams): CalibrateQuery {
  const q = parse(calibrateQuerySchema, params);
  const issues: string[] = [];
  // As the CLI: an observer's setting without that observer is a mistake, not a no-op.
  if (q.percentile !== undefined && q.observer !== "percentile") issues.push("percentile: needs observer=percentile");
  if (q["averaging-constant"] !== undefined && q.observer !== "ema") {
    issues.push("averaging-constant: needs observer=ema");
  }
  if (q["histogram-bits"] !== undefined && q.observer !== "percentile") {
    issues.push("histogram-bits: needs observer=percentile");
  }
  if (issues.length) throw new HttpError(400, "Invalid query parameters", { issues });
  return {
    mode: q.mode,
    dtype: q.dtype,
    observer: q.observer,
    percentile: q.percentile,
    averagingConstant: q["averaging-constant"],
    histogramBits: q["histogram-bits"],
    skipNonFinite: q["skip-non-finite"] ?? false,
  };
}

/**
 * Checks that a request has no query parameters (endpoints that take none
 * reject them rather than ignore a misspelt option).
 *
 * @param params The request's query.
 * @throws {HttpError} 400, naming each unexpected parameter.
 */
export function expectNoQuery(params: URLSearchParams): void {
  parse(emptySchema, params);
}
