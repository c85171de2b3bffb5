/**
 * Calibration statistics as Arrow IPC: one record batch, one row per
 * activation, readable by any Arrow implementation.
 *
 * Columns: `name` (Utf8), `samples`, `count`, `non_finite` (Int64), `min`,
 * `max` (Float64, null while `count` is 0); with the `ema` observer
 * `ema_batches` (Int64), `ema_min`, `ema_max`, `ema_first_min`,
 * `ema_first_max` (Float64); with the `percentile` observer `hist_keys`
 * (List<Int32>) and `hist_counts` (List<Int64>). Schema metadata:
 * `quantflow.format` = `calibration_stats`, `quantflow.version` = `1`,
 * `quantflow.observer`, `quantflow.averaging_constant`,
 * `quantflow.histogram_bits`.
 *
 * @module
 */
import {
  Field,
  Float64,
  Int32,
  Int64,
  List,
  Table,
  tableFromIPC,
  tableToIPC,
  Utf8,
  type Vector,
  vectorFromArray,
} from "apache-arrow";
import { CalibrationStats, type CalibrationStatsJSON, type NonFinitePolicy } from "./calibration_stats.ts";
import { FormatError } from "./errors.ts";

const int64 = (values: readonly (number | null)[]): Vector =>
  vectorFromArray(values.map((v) => (v === null ? null : BigInt(v))), new Int64());
const float64 = (values: readonly (number | null)[]): Vector => vectorFromArray(values, new Float64());

/**
 * Encodes calibration statistics as an Arrow IPC stream.
 *
 * @param stats The statistics.
 * @returns The IPC stream bytes; {@linkcode calibrationStatsFromArrow} reads them back exactly.
 *
 * @example
 * ```ts
 * import { CalibrationStats, calibrationStatsFromArrow, calibrationStatsToArrow } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const stats = new CalibrationStats();
 * stats.observe("relu1", [0, 0.1, 2.75]);
 * const back = calibrationStatsFromArrow(calibrationStatsToArrow(stats));
 * assert.deepEqual(back.toJSON(), stats.toJSON());
 * ```
 */
export function calibrationStatsToArrow(stats: CalibrationStats): Uint8Array {
  const json = stats.toJSON();
  const rows = json.activations;
  const columns: Record<string, Vector> = {
    name: vectorFromArray(rows.map((r) => r.name), new Utf8()),
    samples: int64(rows.map((r) => r.samples)),
    count: int64(rows.map((r) => r.count)),
    non_finite: int64(rows.map((r) => r.nonFinite)),
    min: float64(rows.map((r) => r.min)),
    max: float64(rows.map((r) => r.max)),
  };
  if (json.observer === "ema") {
    columns.ema_batches = int64(rows.map((r) => r.ema!.batches));
    columns.ema_min = float64(rows.map((r) => r.ema!.min));
    columns.ema_max = float64(rows.map((r) => r.ema!.max));
    columns.ema_first_min = float64(rows.map((r) => r.ema!.firstMin));
    columns.ema_first_max = float64(rows.map((r) => r.ema!.firstMax));
  }
  if (json.observer === "percentile") {
    columns.hist_keys = vectorFromArray(
      rows.map((r) => r.histogram!.keys),
      new List(new Field("item", new Int32(), false)),
    );
    columns.hist_counts = vectorFromArray(
      rows.map((r) => r.histogram!.counts.map(BigInt)),
      new List(new Field("item", new Int64(), false)),
    );
  }
  const table = new Table(columns);
  const meta = table.schema.metadata;
  meta.set("quantflow.format", "calibration_stats");
  meta.set("quantflow.version", "1");
  meta.set("quantflow.observer", json.observer);
  meta.set("quantflow.averaging_constant", String(json.averagingConstant));
  meta.set("quantflow.histogram_bits", String(json.histogramBits));
  return tableToIPC(table, "stream");
}

/** A cell as a JSON number: Int64 cells arrive as bigint. */
function num(value: unknown): number | null {
  if (value === null || value === undefined) return null;
  return typeof value === "bigint" ? Number(value) : (value as number);
}

/**
 * Decodes calibration statistics written by {@linkcode calibrationStatsToArrow}.
 *
 * @param bytes An Arrow IPC stream.
 * @param options `nonFinite` policy for further observations.
 * @returns The statistics.
 * @throws {FormatError} When the bytes are not such a stream, or a value is invalid.
 */
export function calibrationStatsFromArrow(
  bytes: Uint8Array,
  options: { nonFinite?: NonFinitePolicy } = {},
): CalibrationStats {
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (cause) {
    throw new FormatError(`Invalid calibration statistics: not an Arrow IPC stream (${(cause as Error).message})`, {
      cause,
    });
  }
  const meta = table.schema.metadata;
  if (meta.get("quantflow.format") !== "calibration_stats") {
    throw new FormatError(
      `Invalid calibration statistics: schema metadata quantflow.format is ${
        JSON.stringify(meta.get("quantflow.format") ?? null)
      }, expected "calibration_stats"`,
    );
  }
  const col = (name: string): Vector | null => table.getChild(name);
  const cell = (name: string, i: number): unknown => col(name)?.get(i) ?? null;
  const list = (name: string, i: number): number[] => {
    const v = cell(name, i) as Vector | null;
    return v === null ? [] : Array.from(v.toArray() as ArrayLike<number | bigint>, (x) => Number(x));
  };
  const observer = meta.get("quantflow.observer");
  const json = {
    format: "quantflow.calibration_stats",
    version: Number(meta.get("quantflow.version")),
    observer,
    averagingConstant: Number(meta.get("quantflow.averaging_constant")),
    histogramBits: Number(meta.get("quantflow.histogram_bits")),
    activations: Array.from({ length: table.numRows }, (_, i) => ({
      name: cell("name", i),
      samples: num(cell("samples", i)),
      count: num(cell("count", i)),
      nonFinite: num(cell("non_finite", i)),
      min: num(cell("min", i)),
      max: num(cell("max", i)),
      ...(observer === "ema"
        ? {
          ema: {
            batches: num(cell("ema_batches", i)),
            min: num(cell("ema_min", i)),
            max: num(cell("ema_max", i)),
            firstMin: num(cell("ema_first_min", i)),
            firstMax: num(cell("ema_first_max", i)),
          },
        }
        : {}),
      ...(observer === "percentile"
        ? { histogram: { keys: list("hist_keys", i), counts: list("hist_counts", i) } }
        : {}),
    })),
  };
  return CalibrationStats.fromJSON(json as unknown as CalibrationStatsJSON, options);
}
