/**
 * Dequantizing a `.arrows` file (`quantizeFile`'s Arrow output) back to
 * float, as `.safetensors` or `.arrows`.
 *
 * @module
 */
import { elementCount } from "../src/report.ts";
import { safetensorsCodeOf } from "../src/safetensors_header.ts";
import type { QuantizedSlab, RawChunk, Slab } from "../src/types.ts";
import { arrowFileTensors, readArrowFile } from "./_arrow_file.ts";
import { ArrowIpcEncodeStream } from "./arrow_ipc_encode_stream.ts";
import { DequantizeStream } from "./dequantize_stream.ts";
import { type OutputTensorSpec, SafetensorsEncodeStream, writeFileAtomically } from "./safetensors_sink.ts";

/** A float slab as the raw bytes of its tensor. */
function rawOf(slab: Slab): RawChunk {
  const { tensor, offset, data } = slab;
  return {
    kind: "raw",
    name: tensor.name,
    dtype: safetensorsCodeOf(tensor.dtype),
    shape: tensor.shape,
    offset: offset * data.BYTES_PER_ELEMENT,
    bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

/** Float slabs (and raw chunks) become raw chunks; quantized slabs pass. */
function floatsAsRaw<T>(): TransformStream<Slab | T, RawChunk | T> {
  return new TransformStream({
    transform(chunk, controller) {
      const slab = chunk as Slab;
      controller.enqueue(slab?.kind === "slab" ? rawOf(slab) : chunk as T);
    },
  });
}

/**
 * Dequantizes a `.arrows` file into a new file, `.safetensors` unless
 * `outputPath` ends in `.arrows`; tensors left in float are copied.
 *
 * @param inputPath The `.arrows` file.
 * @param outputPath Where to write; it appears only when complete.
 * @returns The number of tensors dequantized.
 * @throws {FormatError} When the input is not quantflow's Arrow layout or is truncated (nothing is written).
 */
export async function dequantizeArrowFile(inputPath: string, outputPath: string): Promise<number> {
  // The safetensors header comes first, so the tensors are read through once before.
  const tensors = await arrowFileTensors(inputPath);
  const specs: OutputTensorSpec[] = tensors.map(({ tensor }) => {
    const dtype = "sourceDType" in tensor ? tensor.sourceDType : tensor.dtype;
    return {
      name: tensor.name,
      dtype: safetensorsCodeOf(dtype),
      shape: tensor.shape,
      byteLength: elementCount(tensor.shape) * (dtype === "float32" ? 4 : 2),
    };
  });
  // Created last before the reading starts: a path that cannot be written fails here, with no file left open.
  const sink = writeFileAtomically(outputPath);
  // The file writer is done with each chunk when its write returns: buffers can be reused.
  const dequantized = readArrowFile(inputPath)
    .pipeThrough(floatsAsRaw<QuantizedSlab>())
    .pipeThrough(new DequantizeStream({ reuseBuffers: true }));
  await (outputPath.endsWith(".arrows")
    ? dequantized.pipeThrough(new ArrowIpcEncodeStream())
    : dequantized.pipeThrough(floatsAsRaw<RawChunk>()).pipeThrough(new SafetensorsEncodeStream(specs, {})))
    .pipeTo(sink);
  return tensors.filter((t) => t.kind === "quantized").length;
}
