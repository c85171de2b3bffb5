/**
 * The main job: a safetensors checkpoint in, a quantized checkpoint and a
 * report out, streamed end to end in bounded memory.
 *
 * @module
 */
import type { ByteSource } from "../src/byte_source.ts";
import { isArrowFile } from "../src/_file_kind.ts";
import { type QuantizeConfig, resolveConfig } from "../src/config.ts";
import type { SafetensorsHeader } from "../src/safetensors_header.ts";
import type { ModelReport, TensorReport } from "../src/report.ts";
import type { QuantizedSlab, QuantizedTensorInfo, QuantizeOptions, RawChunk, Slab } from "../src/types.ts";
import { QuantizeStream } from "./quantize_stream.ts";
import { jobOptions } from "./_job_options.ts";
import { outputPlan } from "./_output_plan.ts";
import { SafetensorsEncodeStream, writeFileAtomically } from "./safetensors_sink.ts";
import { DEFAULT_SLAB_BYTES, readSafetensors } from "./safetensors_source.ts";
import { type Allocate, FILE_JOB_RING_SLOTS } from "../src/buffer_ring.ts";
import { SlabMemory } from "./_slab_memory.ts";
import { fitsArrow, markOmitted, startFileJob, writeFileJob } from "./_file_job.ts";
import { bunGcHint } from "../src/_bun_gc_hint.ts";

/** Output formats of a quantization. */
export type OutputFormat = "safetensors" | "arrows";

export { QUANTFLOW_METADATA_KEY } from "./_output_plan.ts";

/** Options of {@linkcode quantizeSafetensors} and {@linkcode quantizeFile}. */
export interface QuantizePipelineOptions {
  /**
   * Options for every tensor, or a configuration with per-tensor overrides.
   * @default {{}}
   */
  config?: QuantizeConfig | QuantizeOptions;
  /**
   * Output format: a safetensors file, or Arrow IPC streams (one per tensor, concatenated).
   * @default {"safetensors"}
   */
  format?: OutputFormat;
  /**
   * Byte budget of one slab.
   * @default {1048576}
   */
  slabBytes?: number;
  /**
   * Called with each tensor's report when it is done.
   * @default {undefined}
   */
  onTensor?: (report: TensorReport) => void;
  /**
   * Called as input bytes are consumed, with the bytes done and the total of the data section.
   * @default {undefined}
   */
  onProgress?: (done: number, total: number) => void;
  /**
   * Called with what went wrong without failing the job: a worker that could not start or crashed (this thread
   * then does its share).
   * @default {undefined}
   */
  onWarning?: (message: string) => void;
  /**
   * Measure the error each tensor's quantization introduces (the report's SNR and max abs error); `false` leaves
   * them out and saves that arithmetic (see {@linkcode QuantizeStreamOptions.errorStats}).
   * @default {true}
   */
  errorStats?: boolean;
  /**
   * Reuse a small ring of slab buffers for input and output instead of fresh
   * memory (several times faster). Only for a consumer that is done with each
   * output chunk before it reads the next (a two-pass tensor reads its whole
   * first pass through the input ring before its first output), such as a
   * synchronous file writer; {@linkcode quantizeFile} turns it on. A function
   * instead of `true` says where the buffers' memory comes from.
   * @default {false}
   */
  reuseBuffers?: boolean | Allocate;
  /**
   * Web Workers besides this thread; the output and the report are the same whatever the count.
   * {@linkcode quantizeFile} writing safetensors splits whole tensors between this thread and the workers
   * (consecutive small ones together, 32 MiB at least; no more workers than such tasks but one), each written
   * at its place in the output (the header fixes it); then `onTensor` is called in the order tensors finish,
   * `onProgress` at least once per task, and buffers are always reused. A worker that cannot start or crashes
   * leaves its share to the others (see `onWarning`). Otherwise the slabs of one-pass tensors go to the workers (see
   * {@linkcode QuantizeStreamOptions.workers}).
   * @default {0}
   */
  workers?: number;
}

/** A quantization under way. */
export interface QuantizeJob {
  /** The input's validated header. */
  readonly header: SafetensorsHeader;
  /** The output bytes; reading them drives the work. */
  readonly output: ReadableStream<Uint8Array>;
  /** The report of the tensors done so far (all, once `output` has closed). */
  report(): ModelReport;
}

/** Per quantized tensor, what `__metadata__` records so that dequantization needs nothing else. */
export interface QuantizedTensorRecord extends Omit<QuantizedTensorInfo, "name"> {}

/** Drops non-float raw chunks, which the Arrow slab layout cannot hold, reporting each tensor once. */
function dropNonFloat(
  onDropped: (name: string) => void,
): TransformStream<QuantizedSlab | RawChunk, QuantizedSlab | RawChunk> {
  return new TransformStream({
    transform(chunk, controller) {
      if (fitsArrow(chunk, onDropped)) controller.enqueue(chunk);
    },
  });
}

/**
 * Starts quantizing a safetensors checkpoint. The header is read and
 * validated, and every tensor's plan made, before this resolves; the work
 * happens as `output` is read.
 *
 * @param input A file path or a function opening a {@linkcode ByteSource} (re-readable: two-pass tensors are read
 *   twice), the bytes, or a stream (two-pass tensors are spooled).
 * @param options Configuration, format and callbacks.
 * @returns The job: header, output bytes and report.
 * @throws {FormatError} When the header is invalid.
 * @throws {ConfigError} When the configuration is invalid.
 */
export async function quantizeSafetensors(
  input: string | Uint8Array | ReadableStream<Uint8Array> | (() => ByteSource),
  options: QuantizePipelineOptions = {},
): Promise<QuantizeJob> {
  const config = resolveConfig(options.config);
  const { reuseBuffers = false } = options;
  const { header, chunks } = await readSafetensors(input, { slabBytes: options.slabBytes, reuseBuffers });
  // Every stage is made before the input is piped anywhere: one that refuses (a bad `workers`, an output name
  // listed twice) cancels the input, which closes the file, and its own error is the one thrown.
  let stream: QuantizeStream;
  let encoder: TransformStream<QuantizedSlab | RawChunk, Uint8Array>;
  const gcHint = bunGcHint();
  const onTensor = (report: TensorReport) => {
    gcHint(report.originalBytes);
    options.onTensor?.(report);
  };
  try {
    const { groups, metadata } = outputPlan(header, config);
    stream = new QuantizeStream(config, {
      onTensor,
      reuseBuffers,
      workers: options.workers,
      errorStats: options.errorStats,
    });
    // apache-arrow loads only for Arrow output: it is a tenth of a second of startup a safetensors job need not pay.
    encoder = options.format === "arrows"
      ? new (await import("./arrow_ipc_encode_stream.ts")).ArrowIpcEncodeStream()
      : new SafetensorsEncodeStream(groups.flat(), metadata);
  } catch (e) {
    await chunks.cancel(e);
    throw e;
  }
  const dropped: string[] = [];

  let done = 0;
  const total = header.dataEnd - header.dataStart;
  const counted = chunks.pipeThrough(
    new TransformStream<Slab | RawChunk, Slab | RawChunk>({
      transform(chunk, controller) {
        controller.enqueue(chunk);
        done += chunk.kind === "raw" ? chunk.bytes.byteLength : chunk.data.byteLength;
        options.onProgress?.(done, total);
      },
    }),
  );
  const quantized = counted.pipeThrough(stream);
  const output = options.format === "arrows"
    ? quantized.pipeThrough(dropNonFloat((name) => dropped.push(name))).pipeThrough(encoder)
    : quantized.pipeThrough(encoder);
  return {
    header,
    output,
    report: () => markOmitted(stream.report, dropped),
  };
}

/**
 * Quantizes a safetensors file into a new file, which appears under its
 * name only when complete. A `.arrows` file of float slabs (told apart by its
 * first bytes) is quantized too, into Arrow IPC only.
 *
 * @param inputPath The checkpoint.
 * @param outputPath Where to write; `.arrows` selects Arrow IPC unless `options.format` says otherwise.
 * @param options Configuration and callbacks.
 * @returns The report.
 * @throws {FormatError} When the input is malformed (nothing is written).
 * @throws {NonFiniteError} When a tensor to quantize holds NaN or an infinity (nothing is written).
 * @throws {RangeError} When `workers` is not a non-negative integer, or safetensors output is asked of an Arrow input.
 * @throws {TypeError} When `errorStats` is not a boolean.
 */
export async function quantizeFile(
  inputPath: string,
  outputPath: string,
  options: QuantizePipelineOptions = {},
): Promise<ModelReport> {
  const format = options.format ?? (outputPath.endsWith(".arrows") ? "arrows" : "safetensors");
  const { workers, errorStats } = jobOptions(options);
  options = { ...options, workers, errorStats };
  if (isArrowFile(inputPath)) {
    if (format !== "arrows") {
      throw new RangeError(
        `Cannot write "${outputPath}" from the Arrow IPC file "${inputPath}": Arrow input becomes .arrows output ` +
          `(a safetensors file starts with a header listing every tensor, which a slab stream gives only as it goes)`,
      );
    }
    if (workers > 0) options.onWarning?.("workers do not apply to an Arrow input: it is quantized in this thread");
    // Loaded on demand, as the Arrow encoder is: apache-arrow (the decoder's) need not load for a safetensors input.
    const { quantizeArrowFile } = await import("./quantize_arrow.ts");
    return await quantizeArrowFile(inputPath, outputPath, options);
  }
  if (format === "safetensors" && workers > 0) {
    // Loaded on demand: a one-thread job need not pay for the worker machinery.
    const { quantizeFileInParallel } = await import("./_parallel_file_job.ts");
    return await quantizeFileInParallel(inputPath, outputPath, options);
  }
  const slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
  if (workers === 0) {
    // Each piece is written before the next is made: rings of 2 buffers, which stay in cache.
    return await new SlabMemory(slabBytes, FILE_JOB_RING_SLOTS).run(async (reuseBuffers) => {
      const job = await startFileJob(inputPath, {
        ...options,
        config: resolveConfig(options.config),
        reuseBuffers,
        format,
      });
      await writeFileJob(job, outputPath);
      return job.report();
    });
  }
  // Slab workers (Arrow output) need the streams, whose queues may hold several chunks: rings of the default size.
  // The file writer is done with each chunk when its write returns: buffers can be reused.
  return await new SlabMemory(slabBytes).run(async (reuseBuffers) => {
    const job = await quantizeSafetensors(inputPath, { ...options, reuseBuffers, format });
    await job.output.pipeTo(writeFileAtomically(outputPath));
    return job.report();
  });
}
