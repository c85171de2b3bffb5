/**
 * QuantizeStream: float slabs in, quantized slabs out, in bounded memory.
 *
 * @module
 */
import { type Allocate, allocatorOf, BufferRing, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { configOf, optionsFor, type QuantizeConfig } from "../src/config.ts";
import { FormatError } from "../src/errors.ts";
import { dtypeSize } from "../src/safetensors_header.ts";
import { elementCount, type ModelReport, summarize, type TensorReport } from "../src/report.ts";
import { planTensor } from "../src/tensor_plan.ts";
import type { QuantizedSlab, QuantizeOptions, RawChunk, Slab } from "../src/types.ts";
import { pullTransform } from "../src/_pull_transform.ts";
import { SlabWorkers } from "./_slab_workers.ts";
import { type JobMemory, OnePassJob, SkipJob, type TensorJob, TwoPassJob } from "./_tensor_jobs.ts";

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
}

function isConfig(value: QuantizeConfig | QuantizeOptions): value is QuantizeConfig {
  return "global" in value && "tensors" in value && Array.isArray(value.tensors);
}

function startJob(slab: Slab, config: QuantizeConfig, memory: JobMemory): TensorJob {
  const { tensor } = slab;
  const plan = planTensor(tensor, optionsFor(config, tensor.name));
  if (plan.kind === "skipped") return new SkipJob(tensor, plan);
  const { kind: _, ...info } = plan;
  return OnePassJob.fits(info, slab) ? new OnePassJob(tensor, info, memory) : new TwoPassJob(tensor, info, memory);
}

/**
 * The memory of a stream's jobs. The scratch comes from the same place as the
 * rings: inside the wasm kernels' memory under quantizeFile's lease, where
 * 16-bit slabs then decode with the wasm kernel and are quantized in place.
 */
function jobMemory(reuseBuffers: boolean | Allocate | undefined): JobMemory {
  const allocate = allocatorOf(reuseBuffers);
  let scratch: Float32Array | undefined;
  return {
    outputs: reuseBuffers ? new BufferRing(PIPELINE_RING_SLOTS, allocate) : undefined,
    scratch(length) {
      if ((scratch?.length ?? 0) < length) {
        const bytes = allocate(4 * length);
        scratch = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
      }
      return scratch!.subarray(0, length);
    },
  };
}

function rawReport(chunk: RawChunk): TensorReport {
  const bytes = elementCount(chunk.shape) * dtypeSize(chunk.dtype);
  return {
    name: chunk.name,
    shape: chunk.shape,
    dtype: chunk.dtype,
    decision: "skipped",
    reason: "not_float",
    message: `dtype ${chunk.dtype} is not a float type`,
    originalBytes: bytes,
    quantizedBytes: bytes,
  };
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
   */
  constructor(config: QuantizeConfig | QuantizeOptions = {}, options: QuantizeStreamOptions = {}) {
    const { workers = 0 } = options;
    if (!Number.isInteger(workers) || workers < 0) {
      throw new RangeError(`workers must be a non-negative integer, got ${workers}`);
    }
    const resolved = isConfig(config) ? config : configOf(config);
    const report = (r: TensorReport) => {
      this.#reports.push(r);
      options.onTensor?.(r);
    };
    const memory = jobMemory(options.reuseBuffers);
    ({ readable: this.readable, writable: this.writable } = pullTransform((input, cancelled) =>
      quantizeChunks(input, resolved, report, memory, workers, cancelled)
    ));
  }

  /** The report of the tensors finished so far (all of them once the readable closes). */
  get report(): ModelReport {
    return summarize(this.#reports);
  }
}

/** A slab in a worker; `last` is the job it finishes, reported once its output is out. */
interface Pending {
  readonly ready: Promise<() => QuantizedSlab>;
  readonly last?: TensorJob;
}

async function* quantizeChunks(
  input: ReadableStream<Slab | RawChunk>,
  config: QuantizeConfig,
  report: (r: TensorReport) => void,
  memory: JobMemory,
  workerCount: number,
  cancelled: AbortSignal,
): AsyncGenerator<QuantizedSlab | RawChunk> {
  let job: TensorJob | undefined;
  let workers: SlabWorkers | undefined;
  // Outputs of slabs in workers, in input order. Only worker outputs wait here: raw chunks and
  // in-thread outputs may sit in reused buffers (the reader's, `outputs`), so they go out at once,
  // after everything before them.
  const pending: Pending[] = [];
  const head = async (): Promise<QuantizedSlab> => {
    const { ready, last } = pending.shift()!;
    const out = (await ready)();
    if (last) report(last.report());
    workers!.released(out.data.buffer as ArrayBuffer);
    return out;
  };
  const unfinished = (job: TensorJob) => new FormatError(`Tensor "${job.name}" ended before all its elements arrived`);
  try {
    for await (const chunk of input) {
      // A cancel waits for the step under way, which may read a whole tensor's first pass: stop here instead.
      if (cancelled.aborted) return;
      if (chunk.kind === "raw") {
        if (job) throw unfinished(job);
        while (pending.length) yield await head();
        if (chunk.offset === 0) report(rawReport(chunk));
        yield chunk;
        continue;
      }
      if (job && job.name !== chunk.tensor.name) throw unfinished(job);
      job ??= startJob(chunk, config, memory);
      if (workerCount > 0 && job instanceof OnePassJob) {
        workers ??= new SlabWorkers(workerCount, memory.outputs !== undefined);
        const ready = job.submit(chunk, workers);
        // Awaited in turn; until then a rejection must not count as unhandled.
        ready.catch(() => {});
        pending.push({ ready, last: job.done ? job : undefined });
        if (job.done) job = undefined;
        while (pending.length > workerCount) yield await head();
        continue;
      }
      while (pending.length) yield await head();
      yield* job.accept(chunk);
      if (job.done) {
        report(job.report());
        job = undefined;
      }
    }
    if (job) throw unfinished(job);
    while (pending.length) yield await head();
  } finally {
    job?.dispose();
    workers?.close();
  }
}
