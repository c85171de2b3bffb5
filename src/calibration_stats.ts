/**
 * Per-activation calibration statistics: the running min and max Core ML
 * Tools keeps (SPEC.md Section 6), plus two opt-in observers, all mergeable so
 * that shards calibrated apart combine into the result of one pass.
 *
 * Observers:
 * - `minmax` (default, Core ML Tools): the range is the running min and max.
 * - `ema`: PyTorch's `MovingAverageMinMaxObserver`. Each sample is a batch;
 *   the first batch sets the range, every later one moves it by
 *   `min += c * (batchMin - min)` (likewise max), `c` = 0.01 by default.
 * - `percentile`: the range is clipped to the `p`-th and `(100 - p)`-th
 *   percentiles, read from a histogram on a fixed grid (see
 *   {@linkcode CalibrationStats.range}).
 *
 * @module
 */
import { z } from "zod";
import { FormatError, NonFiniteError } from "./errors.ts";
import { binKey, binShift, histogramQuantile, sortedHistogram } from "./_float_histogram.ts";
import { formatIssues } from "./_zod_issues.ts";

/**
 * One named activation sample: the values one activation took on one input.
 * Sources and dequantization produce `ActivationSample<Float32Array>`.
 */
export interface ActivationSample<D extends Float32Array | readonly number[] = Float32Array | readonly number[]> {
  /** The activation's name, e.g. `fc1.output`. */
  readonly name: string;
  /** Its values; a `number[]` is rounded to float32 first, as activations are float32. */
  readonly data: D;
}

/** How a calibration turns observed values into a range. */
export type ObserverKind = "minmax" | "ema" | "percentile";

/** What to do with NaN and infinities in calibration samples. */
export type NonFinitePolicy = "error" | "skip";

/** Options of {@linkcode CalibrationStats}. */
export interface CalibrationStatsOptions {
  /**
   * Which range the statistics serve: `minmax` (Core ML Tools), `ema`
   * (moving average of per-sample min/max) or `percentile` (histogram).
   * The running min and max are kept for every observer.
   * @default {"minmax"}
   */
  observer?: ObserverKind;
  /**
   * Averaging constant `c` of the `ema` observer, in (0, 1].
   * @default {0.01}
   */
  averagingConstant?: number;
  /**
   * Mantissa bits kept by the `percentile` histogram's bins: each power of
   * two is split into `2 ** histogramBits` bins, so a bin is at most
   * `2 ** -histogramBits` of its values wide (0.39 % at 8). From 1 to 12.
   * @default {8}
   */
  histogramBits?: number;
  /**
   * `error` throws a {@linkcode NonFiniteError} naming the activation, the
   * sample and the element; `skip` leaves such values out of every statistic
   * and counts them in `nonFinite`.
   * @default {"error"}
   */
  nonFinite?: NonFinitePolicy;
}

/** State of the `ema` observer for one activation. */
export interface EmaState {
  /** Samples (batches) that held at least one finite value. */
  readonly batches: number;
  /** Moving-average minimum. */
  readonly min: number;
  /** Moving-average maximum. */
  readonly max: number;
  /** Minimum of the first batch; merging needs it (see {@linkcode CalibrationStats.merge}). */
  readonly firstMin: number;
  /** Maximum of the first batch. */
  readonly firstMax: number;
}

/** A sparse histogram on the fixed grid of the `percentile` observer. */
export interface HistogramState {
  /** Bin keys, ascending (ascending keys are ascending values). */
  readonly keys: readonly number[];
  /** Count of values in each bin. */
  readonly counts: readonly number[];
}

/** The statistics of one activation, as a plain snapshot. */
export interface ActivationStats {
  /** Activation name. */
  readonly name: string;
  /** Samples observed (including empty ones). */
  readonly samples: number;
  /** Finite values observed. */
  readonly count: number;
  /** Non-finite values skipped (only with `nonFinite: "skip"`). */
  readonly nonFinite: number;
  /** Smallest finite value; `Infinity` while `count` is 0. */
  readonly min: number;
  /** Largest finite value; `-Infinity` while `count` is 0. */
  readonly max: number;
  /** Present with the `ema` observer. */
  readonly ema?: EmaState;
  /** Present with the `percentile` observer. */
  readonly histogram?: HistogramState;
}

/** The JSON form of {@linkcode CalibrationStats} (see {@linkcode CalibrationStats.toJSON}). */
export interface CalibrationStatsJSON {
  /** Always `quantflow.calibration_stats`. */
  format: "quantflow.calibration_stats";
  /** Format version, 1. */
  version: 1;
  /** The observer the statistics were kept for. */
  observer: ObserverKind;
  /** `ema` averaging constant. */
  averagingConstant: number;
  /** `percentile` histogram resolution. */
  histogramBits: number;
  /** One entry per activation, in order of first appearance; `min`/`max` are null while `count` is 0. */
  activations: Array<
    Omit<ActivationStats, "min" | "max" | "histogram"> & {
      min: number | null;
      max: number | null;
      histogram?: { keys: number[]; counts: number[] };
    }
  >;
}

const OBSERVERS: readonly ObserverKind[] = ["minmax", "ema", "percentile"];

/** Mutable per-activation state. */
interface Entry {
  samples: number;
  count: number;
  nonFinite: number;
  min: number;
  max: number;
  ema: { batches: number; min: number; max: number; firstMin: number; firstMax: number } | undefined;
  hist: Map<number, number> | undefined;
}

/** The error for an invalid sample, naming it by position and name. */
function sampleError(index: number | undefined, name: unknown, problem: string): TypeError {
  const where = index === undefined ? "Calibration sample" : `Calibration sample ${index}`;
  const named = typeof name === "string" && name !== "" ? ` ("${name}")` : "";
  return new TypeError(`${where}${named}: ${problem}`);
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === "object") return (value as object).constructor?.name ?? "object";
  return typeof value === "string" ? JSON.stringify(value) : `${typeof value} ${String(value)}`;
}

/**
 * Checks that `sample` is an {@linkcode ActivationSample} and returns its
 * values as float32.
 *
 * @param sample Anything claimed to be a sample.
 * @param index Position of the sample in its stream, for messages.
 * @returns The sample's name and its values as a `Float32Array` (the same array when given one).
 * @throws {TypeError} Naming the sample when its name or data is missing or of the wrong type.
 */
export function checkActivationSample(sample: unknown, index?: number): ActivationSample<Float32Array> {
  if (typeof sample !== "object" || sample === null) {
    throw sampleError(index, undefined, `expected an object { name, data }, got ${describe(sample)}`);
  }
  const { name, data } = sample as { name?: unknown; data?: unknown };
  if (typeof name !== "string" || name === "") {
    throw sampleError(index, undefined, `name must be a non-empty string, got ${describe(name)}`);
  }
  if (data instanceof Float32Array) return { name, data };
  if (Array.isArray(data)) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (typeof v !== "number") throw sampleError(index, name, `data[${i}] is ${describe(v)}, not a number`);
      out[i] = v;
    }
    return { name, data: out };
  }
  throw sampleError(index, name, `data must be a Float32Array or an array of numbers, got ${describe(data)}`);
}

/**
 * Mergeable calibration statistics of many named activations.
 *
 * @example
 * ```ts
 * import { CalibrationStats } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const a = new CalibrationStats();
 * a.observe("relu1", new Float32Array([0, 1.5, 3]));
 * const b = new CalibrationStats();
 * b.observe("relu1", [-0.5, 2]);
 * a.merge(b); // the same as observing both samples in one pass
 * assert.deepEqual(a.range("relu1"), [-0.5, 3]);
 * assert.equal(a.get("relu1")?.count, 5);
 * ```
 */
export class CalibrationStats {
  /** The observer these statistics serve. */
  readonly observer: ObserverKind;
  /** `ema` averaging constant. */
  readonly averagingConstant: number;
  /** `percentile` histogram resolution in mantissa bits. */
  readonly histogramBits: number;
  /** What {@linkcode CalibrationStats.observe} does with non-finite values. */
  readonly nonFinite: NonFinitePolicy;
  #entries = new Map<string, Entry>();
  #shift: number;

  /**
   * Creates empty statistics.
   *
   * @param options Observer and its parameters.
   * @throws {RangeError} When an option is out of range or unknown.
   */
  constructor(options: CalibrationStatsOptions = {}) {
    const { observer = "minmax", averagingConstant = 0.01, histogramBits = 8, nonFinite = "error" } = options;
    if (!OBSERVERS.includes(observer)) {
      throw new RangeError(`Unknown observer ${JSON.stringify(observer)}; expected minmax, ema or percentile`);
    }
    if (!(averagingConstant > 0 && averagingConstant <= 1)) {
      throw new RangeError(`averagingConstant must be in (0, 1], got ${averagingConstant}`);
    }
    if (!Number.isInteger(histogramBits) || histogramBits < 1 || histogramBits > 12) {
      throw new RangeError(`histogramBits must be an integer from 1 to 12, got ${histogramBits}`);
    }
    if (nonFinite !== "error" && nonFinite !== "skip") {
      throw new RangeError(`nonFinite must be "error" or "skip", got ${JSON.stringify(nonFinite)}`);
    }
    this.observer = observer;
    this.averagingConstant = averagingConstant;
    this.histogramBits = histogramBits;
    this.nonFinite = nonFinite;
    this.#shift = binShift(histogramBits);
  }

  #entry(name: string): Entry {
    let e = this.#entries.get(name);
    if (!e) {
      e = {
        samples: 0,
        count: 0,
        nonFinite: 0,
        min: Infinity,
        max: -Infinity,
        ema: this.observer === "ema" ? { batches: 0, min: 0, max: 0, firstMin: 0, firstMax: 0 } : undefined,
        hist: this.observer === "percentile" ? new Map() : undefined,
      };
      this.#entries.set(name, e);
    }
    return e;
  }

  /**
   * Adds one sample of an activation. The sample is checked whole before any
   * statistic changes, so a rejected sample leaves the statistics as they were.
   *
   * @param name Activation name.
   * @param data The values; a `number[]` is rounded to float32 first.
   * @param sampleIndex Position of the sample in its stream, used in error messages.
   * @throws {NonFiniteError} On NaN or an infinity, unless `nonFinite` is `skip`.
   * @throws {TypeError} When the name or data has the wrong type.
   */
  observe(name: string, data: Float32Array | readonly number[], sampleIndex?: number): void {
    const values = checkActivationSample({ name, data }, sampleIndex).data;
    let lo = Infinity;
    let hi = -Infinity;
    let bad = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v - v !== 0) { // NaN or an infinity, in one comparison
        if (this.nonFinite === "error") {
          const where = sampleIndex === undefined ? "calibration sample" : `calibration sample ${sampleIndex}`;
          throw new NonFiniteError(name, `${where}, element ${i} is ${v}`, "activation");
        }
        bad++;
        continue;
      }
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const e = this.#entry(name);
    e.samples++;
    e.nonFinite += bad;
    const finite = values.length - bad;
    if (finite === 0) return;
    e.count += finite;
    if (lo < e.min) e.min = lo;
    if (hi > e.max) e.max = hi;
    if (e.ema) {
      const c = this.averagingConstant;
      if (e.ema.batches === 0) {
        e.ema.min = e.ema.firstMin = lo;
        e.ema.max = e.ema.firstMax = hi;
      } else {
        e.ema.min = e.ema.min + c * (lo - e.ema.min);
        e.ema.max = e.ema.max + c * (hi - e.ema.max);
      }
      e.ema.batches++;
    }
    if (e.hist) {
      const hist = e.hist;
      const shift = this.#shift;
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (v - v !== 0) continue;
        const k = binKey(v, shift);
        hist.set(k, (hist.get(k) ?? 0) + 1);
      }
    }
  }

  /**
   * Adds the statistics of `other`, as if its samples had been observed here
   * after this one's. Counts, min, max and histograms merge exactly, in any
   * order. The `ema` observer is order dependent by definition: merging
   * `a.merge(b)` continues `a`'s average with `b`'s batches using the closed
   * form `ema = ema_b + (1 - c)^n_b * (ema_a - first_b)`, exact in real
   * arithmetic and within a few float64 ulps of the sequential update.
   *
   * @param other Statistics kept with the same observer settings.
   * @returns `this`.
   * @throws {RangeError} When the observers or their parameters differ.
   */
  merge(other: CalibrationStats): this {
    if (
      other.observer !== this.observer || other.averagingConstant !== this.averagingConstant ||
      other.histogramBits !== this.histogramBits
    ) {
      throw new RangeError(
        `Cannot merge calibration statistics kept with different observers: ` +
          `${this.#describeObserver()} and ${other.#describeObserver()}`,
      );
    }
    for (const [name, o] of other.#entries) {
      const e = this.#entry(name);
      e.samples += o.samples;
      e.count += o.count;
      e.nonFinite += o.nonFinite;
      if (o.min < e.min) e.min = o.min;
      if (o.max > e.max) e.max = o.max;
      if (e.ema && o.ema && o.ema.batches > 0) {
        if (e.ema.batches === 0) e.ema = { ...o.ema };
        else {
          const decay = (1 - this.averagingConstant) ** o.ema.batches;
          e.ema.min = o.ema.min + decay * (e.ema.min - o.ema.firstMin);
          e.ema.max = o.ema.max + decay * (e.ema.max - o.ema.firstMax);
          e.ema.batches += o.ema.batches;
        }
      }
      if (e.hist && o.hist) {
        for (const [k, n] of o.hist) e.hist.set(k, (e.hist.get(k) ?? 0) + n);
      }
    }
    return this;
  }

  #describeObserver(): string {
    if (this.observer === "ema") return `ema (averagingConstant ${this.averagingConstant})`;
    if (this.observer === "percentile") return `percentile (histogramBits ${this.histogramBits})`;
    return this.observer;
  }

  /** Number of activations seen. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The activation names, in order of first appearance.
   *
   * @returns The names.
   */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  /**
   * A snapshot of one activation's statistics.
   *
   * @param name Activation name.
   * @returns The statistics, or `undefined` when the name was never observed.
   */
  get(name: string): ActivationStats | undefined {
    const e = this.#entries.get(name);
    if (!e) return undefined;
    const snapshot: ActivationStats = {
      name,
      samples: e.samples,
      count: e.count,
      nonFinite: e.nonFinite,
      min: e.min,
      max: e.max,
      ...(e.ema ? { ema: { ...e.ema } } : {}),
      ...(e.hist ? { histogram: sortedHistogram(e.hist) } : {}),
    };
    return snapshot;
  }

  /**
   * The calibrated range `[rmin, rmax]` of an activation, by this observer:
   * - `minmax`: the running min and max.
   * - `ema`: the moving averages.
   * - `percentile`: `rmax` is the `percentile`-th percentile and `rmin` the
   *   `(100 - percentile)`-th, as numpy's default ("linear") definition:
   *   interpolating between the values of rank `floor(q * (count - 1))` and
   *   the next. The histogram only knows the bin of each rank; a bin's values
   *   are taken as evenly spaced across it, which puts each within one bin
   *   width (`2 ** -histogramBits` of its magnitude: 0.39 % at the default 8
   *   bits) of its true value, and the result is clamped to the running min
   *   and max. At percentile 100 the result is the exact max.
   *
   * @param name Activation name.
   * @param percentile Percentile of the `percentile` observer, in [50, 100].
   * @returns `[rmin, rmax]`, before the float16 rounding of SPEC.md Section 6.
   * @throws {RangeError} When the name is unknown, has no finite values, or the percentile is out of range.
   */
  range(name: string, percentile = 99.99): [number, number] {
    const e = this.#entries.get(name);
    if (!e) throw new RangeError(`No calibration statistics for activation "${name}"`);
    if (e.count === 0) {
      throw new RangeError(`Activation "${name}" has no finite calibration values (${e.samples} samples)`);
    }
    if (e.ema) return [e.ema.min, e.ema.max];
    if (e.hist) {
      if (!(percentile >= 50 && percentile <= 100)) {
        throw new RangeError(`percentile must be in [50, 100], got ${percentile}`);
      }
      const { keys, counts } = sortedHistogram(e.hist);
      const q = percentile / 100;
      const lo = histogramQuantile(keys, counts, e.count, 1 - q, this.#shift, e.min, e.max);
      const hi = histogramQuantile(keys, counts, e.count, q, this.#shift, e.min, e.max);
      return [Math.min(Math.max(lo, e.min), e.max), Math.min(Math.max(hi, e.min), e.max)];
    }
    return [e.min, e.max];
  }

  /**
   * A deep copy.
   *
   * @returns Independent statistics with the same content and options.
   */
  clone(): CalibrationStats {
    return new CalibrationStats(this).merge(this);
  }

  /**
   * The statistics as JSON-ready data: every number is kept exactly
   * (`JSON.stringify` writes float64 values in full).
   *
   * @returns A plain object; {@linkcode CalibrationStats.fromJSON} reads it back.
   */
  toJSON(): CalibrationStatsJSON {
    const activations: CalibrationStatsJSON["activations"] = [];
    for (const name of this.#entries.keys()) {
      const s = this.get(name)!;
      activations.push({
        name,
        samples: s.samples,
        count: s.count,
        nonFinite: s.nonFinite,
        min: s.count > 0 ? s.min : null,
        max: s.count > 0 ? s.max : null,
        ...(s.ema ? { ema: s.ema } : {}),
        ...(s.histogram ? { histogram: { keys: [...s.histogram.keys], counts: [...s.histogram.counts] } } : {}),
      });
    }
    return {
      format: "quantflow.calibration_stats",
      version: 1,
      observer: this.observer,
      averagingConstant: this.averagingConstant,
      histogramBits: this.histogramBits,
      activations,
    };
  }

  /**
   * Reads statistics written by {@linkcode CalibrationStats.toJSON}, so that a
   * calibration can resume or be merged with another later.
   *
   * @param json The parsed JSON value, or its text.
   * @param options `nonFinite` policy for further observations.
   * @returns The statistics.
   * @throws {FormatError} Listing every problem with its path, or on invalid JSON text.
   */
  static fromJSON(json: unknown, options: Pick<CalibrationStatsOptions, "nonFinite"> = {}): CalibrationStats {
    let value = json;
    if (typeof json === "string") {
      try {
        value = JSON.parse(json);
      } catch (cause) {
        throw new FormatError(`Invalid calibration statistics: not JSON (${(cause as Error).message})`, { cause });
      }
    }
    const parsed = statsJsonSchema.safeParse(value);
    if (!parsed.success) {
      throw new FormatError(`Invalid calibration statistics: ${formatIssues(parsed.error).join("; ")}`);
    }
    const data = parsed.data;
    const stats = new CalibrationStats({ ...data, ...options });
    for (const a of data.activations) {
      const problem = checkRecord(a, data.observer);
      if (problem) throw new FormatError(`Invalid calibration statistics for activation "${a.name}": ${problem}`);
      stats.#restore({
        ...a,
        min: a.min ?? Infinity,
        max: a.max ?? -Infinity,
      });
    }
    return stats;
  }

  #restore(s: ActivationStats): void {
    if (this.#entries.has(s.name)) throw new FormatError(`Calibration statistics list activation "${s.name}" twice`);
    const e = this.#entry(s.name);
    e.samples = s.samples;
    e.count = s.count;
    e.nonFinite = s.nonFinite;
    e.min = s.min;
    e.max = s.max;
    if (e.ema && s.ema) e.ema = { ...s.ema };
    if (e.hist && s.histogram) {
      for (let i = 0; i < s.histogram.keys.length; i++) e.hist.set(s.histogram.keys[i], s.histogram.counts[i]);
    }
  }
}

/** Consistency checks the schema cannot express; returns the problem, or undefined. */
function checkRecord(
  s: Omit<ActivationStats, "min" | "max"> & { min: number | null; max: number | null },
  observer: ObserverKind,
): string | undefined {
  if (s.count > 0 && (s.min === null || s.max === null || !(s.min <= s.max))) {
    return "min and max must be numbers with min <= max";
  }
  if (s.count === 0 && (s.min !== null || s.max !== null)) return "min and max must be null when count is 0";
  if ((observer === "ema") !== (s.ema !== undefined)) return `ema state must be present exactly for the ema observer`;
  if ((observer === "percentile") !== (s.histogram !== undefined)) {
    return `histogram must be present exactly for the percentile observer`;
  }
  if (s.histogram) {
    const { keys, counts } = s.histogram;
    if (keys.length !== counts.length) return `histogram has ${keys.length} keys and ${counts.length} counts`;
    for (let i = 1; i < keys.length; i++) if (!(keys[i - 1] < keys[i])) return "histogram keys must be ascending";
    if (counts.reduce((a, b) => a + b, 0) !== s.count) return "histogram counts do not add up to count";
  }
  return undefined;
}

const countSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const finite = z.number().refine(Number.isFinite, "must be finite");

const statsJsonSchema = z.strictObject({
  format: z.literal("quantflow.calibration_stats"),
  version: z.literal(1),
  observer: z.enum(["minmax", "ema", "percentile"]),
  averagingConstant: z.number().gt(0).lte(1),
  histogramBits: z.int().min(1).max(12),
  activations: z.array(z.strictObject({
    name: z.string().min(1),
    samples: countSchema,
    count: countSchema,
    nonFinite: countSchema,
    min: finite.nullable(),
    max: finite.nullable(),
    ema: z.strictObject({
      batches: countSchema,
      min: finite,
      max: finite,
      firstMin: finite,
      firstMax: finite,
    }).optional(),
    histogram: z.strictObject({
      keys: z.array(z.int()),
      counts: z.array(countSchema),
    }).optional(),
  })),
});
