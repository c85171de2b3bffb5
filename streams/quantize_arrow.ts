/**
 * Quantizing Arrow IPC slab streams into Arrow IPC: the pipeline of
 * `quantizeSafetensors` for input that is already slabs.
 *
 * @module
 */
import type { QuantizeConfig } from "../src/config.ts";
import { FormatError } from "../src/errors.ts";
import { floatByteLength, type ModelReport, type TensorReport } from "../src/report.ts";
import type { QuantizedSlab, QuantizeOptions, Slab } from "../src/types.ts";
import { arrowFileTensors, readArrowFile } from "./_arrow_file.ts";
import { ArrowIpcDecodeStream } from "./arrow_ipc_decode_stream.ts";
import { ArrowIpcEncodeStream } from "./arrow_ipc_encode_stream.ts";
import { resolveConfig } from "../src/config.ts";
import type { QuantizeJob, QuantizePipelineOptions } from "./quantize_pipeline.ts";
import { QuantizeStream } from "./quantize_stream.ts";
import { writeFileAtomically } from "./safetensors_sink.ts";

/** Options of {@linkcode quantizeArrowIPC}. */
export interface QuantizeArrowIPCOptions {
  /**
   * Options for every tensor, or a configuration with per-tensor overrides.
   * @default {{}}
   */
  config?: QuantizeConfig | QuantizeOptions;
  /**
   * The largest IPC message accepted (one is assembled whole before decoding).
   * @default {67108864}
   */
  maxMessageBytes?: number;
  /**
   * Called with each tensor's report when it is done.
   * @default {undefined}
   */
  onTensor?: (report: TensorReport) => void;
  /**
   * Measure the error each tensor's quantization introduces (the report's SNR and max abs error); `false` leaves
   * them out and saves that arithmetic (see {@linkcode QuantizeStreamOptions.errorStats}).
   * @default {true}
   */
  errorStats?: boolean;
}

/** Input slabs only: quantizing already-quantized slabs would be a silent no-op the caller did not mean. */
function floatSlabsOnly(): TransformStream<Slab | QuantizedSlab, Slab> {
  return new TransformStream({
    transform(chunk, controller) {
      if (chunk.kind === "quantized") {
        throw new FormatError(`Cannot quantize tensor "${chunk.tensor.name}": its slabs are already quantized`);
      }
      controller.enqueue(chunk);
    },
  });
}

/**
 * Quantizes Arrow IPC slab streams (the Arrow layout in the README) into
 * Arrow IPC. Arrow input can only become Arrow output while streaming: a
 * safetensors file starts with a header listing every tensor, which a slab
 * stream announces only as it goes. Nothing is read until `output` is.
 *
 * @param input The IPC bytes: one stream per tensor, concatenated.
 * @param options Configuration, message limit and callback.
 * @returns The job; `output` errors with a `FormatError` on malformed,
 *   truncated or already-quantized input, and with the quantizer's errors.
 * @throws {ConfigError} When the configuration is invalid.
 */
export function quantizeArrowIPC(
  input: ReadableStream<Uint8Array>,
  options: QuantizeArrowIPCOptions = {},
): Omit<QuantizeJob, "header"> {
  const quantizer = new QuantizeStream(resolveConfig(options.config), {
    onTensor: options.onTensor,
    errorStats: options.errorStats,
  });
  const output = input
    .pipeThrough(new ArrowIpcDecodeStream({ maxMessageBytes: options.maxMessageBytes ?? 64 * 1024 * 1024 }))
    .pipeThrough(floatSlabsOnly())
    .pipeThrough(quantizer)
    .pipeThrough(new ArrowIpcEncodeStream());
  return { output, report: () => quantizer.report };
}

/**
 * `quantizeFile` for a `.arrows` input of float slabs (such as `dequantize ... -o OUT.arrows` writes): Arrow IPC in,
 * Arrow IPC out, in this thread. The tensors are listed from the messages' metadata first (a truncated or foreign
 * file fails before anything is written); then the file is read at its positions into reused buffers.
 *
 * @param inputPath The `.arrows` file.
 * @param outputPath Where to write; it appears only when complete.
 * @param options Configuration and callbacks (`workers` and `slabBytes` do not apply: the input's batches are the slabs).
 * @returns The report.
 */
export async function quantizeArrowFile(
  inputPath: string,
  outputPath: string,
  options: QuantizePipelineOptions,
): Promise<ModelReport> {
  const tensors = await arrowFileTensors(inputPath);
  let total = 0;
  for (const { kind, tensor } of tensors) {
    if (kind === "quantized") {
      throw new FormatError(`Cannot quantize tensor "${tensor.name}": its slabs are already quantized`);
    }
    total += floatByteLength(tensor.dtype, tensor.shape);
  }
  let done = 0;
  const quantizer = new QuantizeStream(resolveConfig(options.config), {
    onTensor: options.onTensor,
    errorStats: options.errorStats,
    // The file writer is done with each chunk when its write returns, as the reader's reused buffers require.
    reuseBuffers: true,
  });
  // Created last before the reading starts: a path that cannot be written fails here, with no file left open, and
  // nothing that can still fail leaves the temporary file behind.
  const sink = writeFileAtomically(outputPath);
  await readArrowFile(inputPath)
    .pipeThrough(floatSlabsOnly())
    .pipeThrough(
      new TransformStream<Slab, Slab>({
        transform(slab, controller) {
          controller.enqueue(slab);
          options.onProgress?.(done += slab.data.byteLength, total);
        },
      }),
    )
    .pipeThrough(quantizer)
    .pipeThrough(new ArrowIpcEncodeStream())
    .pipeTo(sink);
  return quantizer.report;
}
