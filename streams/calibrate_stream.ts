/**
 * Calibration as a stream: named activation samples in, their statistics out.
 *
 * @module
 */
import {
  type ActivationSample,
  CalibrationStats,
  type CalibrationStatsOptions,
  checkActivationSample,
} from "../src/calibration_stats.ts";

/** Options of {@linkcode CalibrateStream}. */
export interface CalibrateStreamOptions extends CalibrationStatsOptions {
  /**
   * Statistics to continue (for example read back with
   * `CalibrationStats.fromJSON`); they are copied, not changed. Its observer
   * settings win over `observer`, `averagingConstant` and `histogramBits`.
   * @default {undefined}
   */
  resume?: CalibrationStats;
}

/**
 * Consumes {@linkcode ActivationSample}s and, when its input ends, emits one
 * {@linkcode CalibrationStats} holding every activation's statistics. Samples
 * are numbered from 0 in arrival order; errors name the sample by that number
 * and by its activation name.
 *
 * @example
 * ```ts
 * import { CalibrateStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const samples = [
 *   { name: "fc1.input", data: new Float32Array([0.5, -1.25]) },
 *   { name: "fc1.input", data: [3, 0] },
 * ];
 * const [stats] = await Array.fromAsync(ReadableStream.from(samples).pipeThrough(new CalibrateStream()));
 * assert.deepEqual(stats.range("fc1.input"), [-1.25, 3]);
 * ```
 */
export class CalibrateStream extends TransformStream<ActivationSample, CalibrationStats> {
  /**
   * Creates the stream; options are checked at once.
   *
   * @param options Observer, non-finite policy, and statistics to resume.
   * @throws {RangeError} When an option is out of range.
   * @throws {TypeError} When `resume` is not a `CalibrationStats`.
   */
  constructor(options: CalibrateStreamOptions = {}) {
    const { resume, ...rest } = options;
    if (resume !== undefined && !(resume instanceof CalibrationStats)) {
      throw new TypeError(`resume must be a CalibrationStats, got ${Object.prototype.toString.call(resume)}`);
    }
    const stats = resume
      ? new CalibrationStats({ ...resume, nonFinite: rest.nonFinite ?? resume.nonFinite }).merge(resume)
      : new CalibrationStats(rest);
    let index = 0;
    super({
      transform(sample) {
        const i = index++;
        const { name, data } = checkActivationSample(sample, i);
        stats.observe(name, data, i);
      },
      flush(controller) {
        controller.enqueue(stats);
      },
    });
  }
}
