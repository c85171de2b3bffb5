/**
 * The file job's quantization: the stages of `quantizeSafetensors` (slabs,
 * quantize, safetensors or Arrow IPC encoding) driven directly as async
 * generators by a loop that writes each piece of output before it asks for
 * the next.
 *
 * Only one chunk is then in flight at a time, so the rings of reused buffers
 * need 2 slots, where a chain of streams, which may hold several chunks in its
 * queues, needs more (tests fail with 2 in Bun). Fewer buffers stay in cache:
 * a 1 GiB job took 10-15% less time (bench/RESULTS.md, Addendum 7).
 *
 * @module
 */
import type { ByteSource } from "../src/byte_source.ts";
import { type Allocate, FILE_JOB_RING_SLOTS } from "../src/buffer_ring.ts";
import { type ModelReport, summarize, type TensorReport } from "../src/report.ts";
import { floatDTypeOf, type SafetensorsHeader } from "../src/safetensors_header.ts";
import type { QuantizedSlab, RawChunk, Slab } from "../src/types.ts";
import { bunGcHint } from "../src/_bun_gc_hint.ts";
import { jobMemory, quantizeChunks } from "./_quantize_chunks.ts";
import { outputPlan } from "./_output_plan.ts";
import { writeFileFrom } from "./_pending_file.ts";
import type { QuantizeConfig } from "../src/quantize_config.ts";
import type { QuantizePipelineOptions } from "./quantize_pipeline.ts";
import { type OutputTensorSpec, SafetensorsEncoder } from "./safetensors_sink.ts";
import { readSafetensors } from "./safetensors_source.ts";

/** A quantization into file bytes, pulled by the caller. */
export interface FileJob {
  /** The input's validated header. */
  readonly header: SafetensorsHeader;
  /**
   * The output file's bytes, in order. Each piece may sit in a reused
   * buffer: the caller must be done with it (write it) before asking for the
   * next. Stopping early (`return`, or leaving a `for await` loop) closes the input.
   */
  readonly bytes: AsyncGenerator<Uint8Array>;
  /** The report of the tensors done so far (all, once `bytes` is done). */
  report(): ModelReport;
  /** Stops the job and closes its input, whether or not its bytes were asked for. */
  cancel(reason?: unknown): Promise<void>;
}

/** Where a file job's chunks become bytes. */
export interface Encoder {
  start(emit: (bytes: Uint8Array) => void): void;
  write(chunk: QuantizedSlab | RawChunk, emit: (bytes: Uint8Array) => void): void;
  end(emit: (bytes: Uint8Array) => void): void;
}

/**
 * Options of a file job: as for `quantizeSafetensors`, but the configuration
 * comes validated (`resolveConfig`: the worker threads, which run file jobs,
 * need not load the validator) and `workers` does not apply (a file job splits
 * tensors between threads itself; slab workers need the streams).
 */
export interface FileJobOptions extends Omit<QuantizePipelineOptions, "config" | "workers"> {
  /** The configuration. */
  readonly config: QuantizeConfig;
  /** Where the reused buffers' memory comes from. */
  readonly reuseBuffers: Allocate;
}

/**
 * Starts a quantization into file bytes, safetensors or Arrow IPC.
 *
 * @param input The checkpoint.
 * @param options Configuration, callbacks and memory.
 * @returns The job.
 * @throws {FormatError} When the header is invalid.
 * @throws {RangeError} When an output tensor would be listed twice (the input is closed).
 */
export async function startFileJob(input: string | (() => ByteSource), options: FileJobOptions): Promise<FileJob> {
  const { config } = options;
  const { reuseBuffers } = options;
  const { header, chunks } = await readSafetensors(input, {
    slabBytes: options.slabBytes,
    reuseBuffers,
    ringSlots: FILE_JOB_RING_SLOTS,
  });
  // Non-float tensors have no place in the Arrow slab layout: they are left out and the report says so.
  const dropped: string[] = [];
  let encoder: Encoder;
  try {
    if (options.format === "arrows") encoder = await arrowEncoder(dropped);
    else {
      const { groups, metadata } = outputPlan(header, config);
      encoder = safetensorsEncoder(groups.flat(), metadata);
    }
  } catch (e) {
    await chunks.cancel(e);
    throw e;
  }
  const reports: TensorReport[] = [];
  const gcHint = bunGcHint();
  const onTensor = (report: TensorReport) => {
    reports.push(report);
    gcHint(report.originalBytes);
    options.onTensor?.(report);
  };
  const total = header.dataEnd - header.dataStart;
  async function* counted(): AsyncGenerator<Slab | RawChunk> {
    let done = 0;
    for await (const chunk of chunks) {
      done += chunk.kind === "raw" ? chunk.bytes.byteLength : chunk.data.byteLength;
      options.onProgress?.(done, total);
      yield chunk;
    }
  }
  const memory = jobMemory(reuseBuffers, FILE_JOB_RING_SLOTS);
  const output = encodePieces(
    quantizeChunks(counted(), {
      config,
      report: onTensor,
      memory,
      workers: 0,
      errorStats: options.errorStats ?? true,
      signal: new AbortController().signal,
    }),
    encoder,
  );
  return {
    header,
    bytes: output,
    report: () => markOmitted(summarize(reports), dropped),
    async cancel(reason) {
      // Started, the generators' loops end and cancel the input; never started, the input is still to cancel.
      await output.return(undefined);
      if (!chunks.locked) await chunks.cancel(reason);
    },
  };
}

/**
 * Encodes chunks into a file's pieces, one chunk at a time: a chunk is pulled
 * only once the pieces of the one before it were taken.
 *
 * @param chunks Quantized slabs and raw chunks, in file order.
 * @param encoder The file format.
 * @returns The pieces.
 */
export async function* encodePieces(
  chunks: AsyncIterable<QuantizedSlab | RawChunk>,
  encoder: Encoder,
): AsyncGenerator<Uint8Array> {
  const pieces: Uint8Array[] = [];
  const emit = (piece: Uint8Array) => pieces.push(piece);
  const taken = function* () {
    yield* pieces;
    pieces.length = 0;
  };
  encoder.start(emit);
  yield* taken();
  for await (const chunk of chunks) {
    encoder.write(chunk, emit);
    yield* taken();
  }
  encoder.end(emit);
  yield* taken();
}

/**
 * The safetensors format as an {@linkcode Encoder}.
 *
 * @param specs The output tensors, in file order.
 * @param metadata The header's `__metadata__`.
 * @returns The encoder.
 */
export function safetensorsEncoder(
  specs: readonly OutputTensorSpec[],
  metadata: Readonly<Record<string, string>>,
): Encoder {
  const encoder = new SafetensorsEncoder(specs, metadata);
  return {
    start: (emit) => emit(encoder.header),
    write: (chunk, emit) => encoder.write(chunk, emit),
    end: () => encoder.end(),
  };
}

async function arrowEncoder(dropped: string[]): Promise<Encoder> {
  // Loaded on demand, as quantizeSafetensors does: the Arrow modules are startup a safetensors job need not pay.
  const { ArrowIpcEncoder } = await import("./arrow_ipc_encode_stream.ts");
  const encoder = new ArrowIpcEncoder();
  return {
    start: () => {},
    write(chunk, emit) {
      if (fitsArrow(chunk, (name) => dropped.push(name))) encoder.write(chunk, emit);
    },
    end: (emit) => encoder.end(emit),
  };
}

/**
 * Whether a chunk has a place in the Arrow slab layout: non-float raw chunks
 * do not, and are left out.
 *
 * @param chunk The chunk.
 * @param onDropped Called with a left-out tensor's name, once (at its first chunk).
 * @returns Whether to encode it.
 */
export function fitsArrow(chunk: QuantizedSlab | RawChunk, onDropped: (name: string) => void): boolean {
  if (chunk.kind !== "raw" || floatDTypeOf(chunk.dtype)) return true;
  if (chunk.offset === 0) onDropped(chunk.name);
  return false;
}

/**
 * A report whose tensors left out of an Arrow output say so.
 *
 * @param report The report.
 * @param dropped Names of the tensors left out.
 * @returns The report, marked.
 */
export function markOmitted(report: ModelReport, dropped: readonly string[]): ModelReport {
  if (!dropped.length) return report;
  const tensors = report.tensors.map((t) =>
    dropped.includes(t.name) ? { ...t, omitted: `dtype ${t.dtype} has no place in the Arrow slab layout` } : t
  );
  return { ...report, tensors };
}

/**
 * Runs a file job into a file that appears under its name only when
 * complete (flushed to disk first); nothing is left on failure.
 *
 * @param job The job, not started.
 * @param outputPath Where to write.
 */
export async function writeFileJob(job: FileJob, outputPath: string): Promise<void> {
  try {
    await writeFileFrom(job.bytes, outputPath);
  } catch (e) {
    // Also when the output could not even be created: the input is then still open.
    await job.cancel(e);
    throw e;
  }
}
