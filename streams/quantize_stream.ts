/**
 * QuantizeStream: float slabs in, quantized slabs out, in bounded memory.
 *
 * @module
 */
import { type Allocate, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { type QuantizeConfig, resolveConfig } from "../src/config.ts";
import { type ModelReport, summarize, type TensorReport } from "../src/report.ts";
import type { QuantizedSlab, QuantizeOptions, RawChunk, Slab } from "../src/types.ts";
import { pullTransform } from "../src/_pull_transform.ts";
import { jobMemory, quantizeChunks } from "./_quantize_chunks.ts";
import { jobOptions } from "./_job_options.ts";

/** Options of {@linkcode QuantizeStream}. */
export interface QuantizeStreamOptions {
  /**
   * Called with each tensor's report as soon as the tensor is done.
   * @default {undefined}
   */
  onTensor?: (report: TensorReport) => void;
  /**
   * Write quantized values into a ring of reused buffers instead of fresh
   * memory per slab (much faster). A slab's `data` is then overwritten once 7
   * further slabs have been produced: only for consumers that are done with
   * each slab by then, as a file writer is.
   * A function instead of `true` says where the buffers' memory comes from.
   * @default {false}
   */
  reuseBuffers?: boolean | Allocate;
  /**
   * Web Workers to quantize in: with N > 0, the slabs of tensors whose scales
   * follow the rows (per channel on axis 0, per block) are quantized in N
   * workers, up to N + 1 slabs at a time, and come out in input order with
   * the same bytes. Other tensors are quantized in this thread. The workers
   * are terminated when the stream ends, errors or is cancelled.
   * @default {0}
   */
  workers?: number;
  /**
   * Measure the error each tensor's quantization introduces (the report's
   * SNR and max abs error), in the same pass. `false` leaves them out of the
   * report and saves that arithmetic, with the same output: the one-pass wasm
   * kernel (per channel on axis 0, per block) then runs about 1.7x faster
   * (bench/kernel_bench.ts); a whole job gains less, as reading and writing
   * take their share.
   * @default {true}
   */
  errorStats?: boolean;
}

/**
 * Quantizes a stream of tensors given as slabs (and passes raw chunks of
 * other tensors through), with Core ML Tools' numbers: the output of each
 * tensor is identical, bit for bit, to {@linkcode quantizeTensor} on the
 * whole tensor.
 *
 * Where the scales follow the rows (per channel on axis 0, per block) each
 * slab of whole rows is quantized as it arrives. Otherwise (per tensor, per
 * channel on a later axis) the tensor is observed first and then read again
 * through its slabs' `source`, or from a temporary spool file when the input
 * cannot be read twice. Memory stays bounded by a few slabs whatever the
 * tensor size: outputs are produced only as the consumer reads them.
 *
 * @example
 * ```ts
 * import { QuantizeStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const tensor = { name: "fc.weight", dtype: "float32", shape: [64, 64] } as const;
 * const slabs = [0, 32].map((row) => ({ tensor, offset: row * 64, data: new Float32Array(32 * 64).fill(row + 1) }));
 * const stream = new QuantizeStream({ dtype: "int8" });
 * const out = await Array.fromAsync(ReadableStream.from(slabs).pipeThrough(stream));
 * assert.equal(out.length, 2);
 * assert.equal(stream.report.totals.quantized, 1);
 * ```
 */
export class QuantizeStream {
  /** Quantized slabs and raw chunks, in input order. */
  readonly readable: ReadableStream<QuantizedSlab | RawChunk>;
  /** Slabs of float tensors, and raw chunks of others. */
  readonly writable: WritableStream<Slab | RawChunk>;
  readonly #reports: TensorReport[] = [];

  /**
   * Creates the stream.
   *
   * @param config Options for every tensor, or a configuration with per-tensor overrides ({@linkcode parseConfig}).
   * @param options Stream options.
   * @throws {ConfigError} When an option is invalid.
   * @throws {RangeError} When `workers` is not a non-negative integer.
   * @throws {TypeError} When `errorStats` is not a boolean.
   */
  constructor(config: QuantizeConfig | QuantizeOptions = {}, options: QuantizeStreamOptions = {}) {
    const { workers, errorStats } = jobOptions(options);
    const resolved = resolveConfig(config);
    const report = (r: TensorReport) => {
      this.#reports.push(r);
      options.onTensor?.(r);
    };
    const memory = jobMemory(options.reuseBuffers, PIPELINE_RING_SLOTS);
    ({ readable: this.readable, writable: this.writable } = pullTransform((input, cancelled) =>
      quantizeChunks(input, { config: resolved, report, memory, workers, errorStats, signal: cancelled })
    ));
  }

  /** The report of the tensors finished so far (all of them once the readable closes). */
  get report(): ModelReport {
    return summarize(this.#reports);
  }
}
