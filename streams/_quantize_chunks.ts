/**
 * The work of a QuantizeStream as an async generator: slabs in, quantized
 * slabs out, raw chunks passed through, each tensor reported when done.
 *
 * @module
 */
import { type Allocate, allocatorOf, BufferRing } from "../src/buffer_ring.ts";
import { optionsFor, type QuantizeConfig } from "../src/quantize_config.ts";
import { FormatError } from "../src/errors.ts";
import { dtypeSize } from "../src/safetensors_header.ts";
import { elementCount, type TensorReport } from "../src/report.ts";
import { planValidatedTensor } from "../src/_tensor_plan_validated.ts";
import type { QuantizedSlab, RawChunk, Slab } from "../src/types.ts";
import { ErrorStats } from "../src/error_stats.ts";
import { SlabWorkers } from "./_slab_workers.ts";
import { type JobMemory, OnePassJob, SkipJob, type TensorJob, TwoPassJob } from "./_tensor_jobs.ts";

/** What {@linkcode quantizeChunks} works with. */
export interface ChunkJobOptions {
  /** The configuration, checked. */
  readonly config: QuantizeConfig;
  /** Called with each tensor's report when it is done. */
  readonly report: (r: TensorReport) => void;
  /** Output ring and decoding scratch. */
  readonly memory: JobMemory;
  /** Workers besides this thread, for the slabs of one-pass tensors. */
  readonly workers: number;
  /** Whether the reports measure the error (SNR, max abs error). */
  readonly errorStats: boolean;
  /** Stops the work at the next chunk. */
  readonly signal: AbortSignal;
}

function startJob(slab: Slab, { config, memory, errorStats }: ChunkJobOptions): TensorJob {
  const { tensor } = slab;
  const plan = planValidatedTensor(tensor, optionsFor(config, tensor.name));
  if (plan.kind === "skipped") return new SkipJob(tensor, plan);
  const { kind: _, ...info } = plan;
  const Job = OnePassJob.fits(info, slab) ? OnePassJob : TwoPassJob;
  return new Job(tensor, info, memory, errorStats ? new ErrorStats() : undefined);
}

/**
 * The memory of a stream's jobs. The scratch comes from the same place as the
 * rings: inside the wasm kernels' memory under quantizeFile's lease, where
 * 16-bit slabs then decode with the wasm kernel and are quantized in place.
 * With `reuseBuffers`, outputs take turns in a ring of `slots` buffers.
 */
export function jobMemory(reuseBuffers: boolean | Allocate | undefined, slots: number): JobMemory {
  const allocate = allocatorOf(reuseBuffers);
  let scratch: Float32Array | undefined;
  return {
    outputs: reuseBuffers ? new BufferRing(slots, allocate) : undefined,
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

/** A slab in a worker; `last` is the job it finishes, reported once its output is out. */
interface Pending {
  readonly ready: Promise<() => QuantizedSlab>;
  readonly last?: TensorJob;
}

/**
 * Quantizes tensors given as slabs and passes raw chunks through, in input
 * order: the work of a `QuantizeStream`, as an async generator that a
 * file job may also drive directly (one chunk in flight at a time).
 */
export async function* quantizeChunks(
  input: AsyncIterable<Slab | RawChunk>,
  options: ChunkJobOptions,
): AsyncGenerator<QuantizedSlab | RawChunk> {
  const { report, memory, workers: workerCount, errorStats, signal } = options;
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
      if (signal.aborted) return;
      if (chunk.kind === "raw") {
        if (job) throw unfinished(job);
        while (pending.length) yield await head();
        if (chunk.offset === 0) report(rawReport(chunk));
        yield chunk;
        continue;
      }
      if (job && job.name !== chunk.tensor.name) throw unfinished(job);
      job ??= startJob(chunk, options);
      if (workerCount > 0 && job instanceof OnePassJob) {
        workers ??= new SlabWorkers(workerCount, {
          recycleOutputs: memory.outputs !== undefined,
          errorSums: errorStats,
        });
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
