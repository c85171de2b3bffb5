/**
 * Reading a `.arrows` file (Arrow IPC streams, one per tensor, as
 * `quantizeFile` writes them) for `inspect` and `dequantizeFile`. Such a file
 * has no header: what a safetensors header says up front is gathered by
 * reading the messages' metadata, skipping their bodies.
 *
 * @module
 */
import { BufferRing, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { type ByteSource, openFileSource } from "../src/byte_source.ts";
import { FormatError } from "../src/errors.ts";
import { bitsOf, storesZeroPoint } from "../src/ranges.ts";
import { elementCount } from "../src/report.ts";
import { safetensorsCodeOf } from "../src/safetensors_header.ts";
import type { QuantizedSlab, QuantizedTensorInfo, Slab, TensorInfo } from "../src/types.ts";
import { IpcSlabReader, type MessageBytes } from "./_ipc_slab_reader.ts";
import type { CheckpointSummary, TensorSummary } from "./inspect.ts";

/** No message is refused for its declared size alone: `FileBytes` reads (and allocates) no further than the file. */
const MAX_MESSAGE_BYTES = Number.MAX_SAFE_INTEGER;

/**
 * A file's bytes, read at their positions into rings of reused buffers
 * (fresh memory costs 11-25 µs per page here, PITFALLS 14): message bodies,
 * which slabs view, in one ring; prefixes and metadata, used only while their
 * message is decoded, in another. A body's buffer thus serves again once
 * `PIPELINE_RING_SLOTS - 1` later bodies are read.
 */
class FileBytes implements MessageBytes {
  readonly #source: ByteSource;
  readonly #bodies = new BufferRing(PIPELINE_RING_SLOTS);
  readonly #metadata = new BufferRing(PIPELINE_RING_SLOTS);
  position = 0;

  constructor(source: ByteSource) {
    this.#source = source;
  }

  get received(): number {
    return Math.min(this.position, this.#source.size);
  }

  atEnd(): Promise<boolean> {
    return Promise.resolve(this.position >= this.#source.size);
  }

  read(n: number, align = false): Promise<Uint8Array | number> {
    // An empty body (a schema's) takes no buffer: the ring's turns are for the bodies slabs view.
    if (n === 0) return Promise.resolve(new Uint8Array(0));
    const left = this.#source.size - this.position;
    if (n > left) {
      // The file ends first: say how much there was, without allocating what a damaged length claims.
      this.position = this.#source.size;
      return Promise.resolve(Math.max(0, left));
    }
    const into = (align ? this.#bodies : this.#metadata).take(n);
    const got = this.#source.read(this.position, into);
    this.position += got;
    return Promise.resolve(got < n ? got : into);
  }

  skip(n: number): Promise<number> {
    const got = Math.max(0, Math.min(n, this.#source.size - this.position));
    this.position += got;
    return Promise.resolve(got);
  }
}

/**
 * The slabs of a `.arrows` file, one per record batch, read as they are
 * pulled. Their values are views of reused buffers: a consumer must be done
 * with a slab (or have copied it) before it reads `PIPELINE_RING_SLOTS - 1`
 * more, as a synchronous file writer is.
 *
 * @param path The file.
 * @returns The slabs; the file is opened at the first read and closed at the end, on an error or on cancel.
 */
export function readArrowFile(path: string): ReadableStream<Slab | QuantizedSlab> {
  let source: ByteSource | undefined;
  let reader: IpcSlabReader | undefined;
  return new ReadableStream<Slab | QuantizedSlab>({
    async pull(controller) {
      try {
        source ??= openFileSource(path);
        reader ??= new IpcSlabReader(new FileBytes(source), MAX_MESSAGE_BYTES);
        const slab = await reader.next();
        if (slab) return controller.enqueue(slab);
        source.close();
        controller.close();
      } catch (e) {
        source?.close();
        controller.error(e);
      }
    },
    cancel() {
      source?.close();
    },
  }, { highWaterMark: 0 });
}

/** A tensor of a `.arrows` file: float values, or quantized ones. */
export type ArrowTensor =
  | { readonly kind: "slab"; readonly tensor: TensorInfo }
  | { readonly kind: "quantized"; readonly tensor: QuantizedTensorInfo };

/**
 * The tensors of a `.arrows` file in file order, from its messages' metadata
 * (a tensor continued in a second stream counts once). Bodies are skipped, so
 * their contents are not checked here; reading the slabs checks them.
 *
 * @param path The file.
 * @returns The tensors.
 * @throws {FormatError} When the file is not quantflow's Arrow layout, is
 *   truncated, does not hold every element of a tensor, or names a tensor twice.
 */
export async function arrowFileTensors(path: string): Promise<ArrowTensor[]> {
  const source = openFileSource(path);
  try {
    return await arrowTensors(new IpcSlabReader(new FileBytes(source), MAX_MESSAGE_BYTES), `Arrow file "${path}"`);
  } finally {
    source.close();
  }
}

/**
 * The tensors of Arrow IPC streams, as {@linkcode arrowFileTensors} lists them, from any reader of their messages.
 *
 * @param reader The messages.
 * @param where What the input is, for error messages.
 * @returns The tensors.
 */
export async function arrowTensors(reader: IpcSlabReader, where: string): Promise<ArrowTensor[]> {
  const tensors: ArrowTensor[] = [];
  const seen = new Set<string>();
  let elements = 0;
  const complete = () => {
    const last = tensors.at(-1);
    if (last && elements !== elementCount(last.tensor.shape)) {
      throw new FormatError(
        `${where}: tensor "${last.tensor.name}" has ${elements} of its ${elementCount(last.tensor.shape)} elements`,
      );
    }
  };
  for (let batch = await reader.nextRows(); batch; batch = await reader.nextRows()) {
    const { layout, rows } = batch;
    const tensor = layout.kind === "slab" ? layout.tensor : layout.info;
    if (tensors.at(-1)?.tensor.name !== tensor.name) {
      complete();
      if (seen.has(tensor.name)) throw new FormatError(`${where}: tensor "${tensor.name}" appears twice`);
      seen.add(tensor.name);
      tensors.push(
        layout.kind === "slab" ? { kind: "slab", tensor: layout.tensor } : { kind: "quantized", tensor: layout.info },
      );
      elements = 0;
    }
    elements += rows * layout.listSize;
  }
  complete();
  return tensors;
}

/** dtype codes of quantized values, after safetensors' (which has no 4-bit types). */
const QUANT_CODES = { int8: "I8", uint8: "U8", int4: "I4", uint4: "U4" } as const;

/**
 * The summary of Arrow tensors (one IPC stream per tensor), in file order: `inspect`'s for a `.arrows` input.
 *
 * @param tensors The tensors.
 * @returns The summary.
 */
export function summarizeArrowTensors(tensors: readonly ArrowTensor[]): CheckpointSummary {
  const summaries = tensors.map(({ kind, tensor }): TensorSummary => {
    const numel = elementCount(tensor.shape);
    if (kind === "slab") {
      const dtype = safetensorsCodeOf(tensor.dtype);
      return { name: tensor.name, dtype, shape: tensor.shape, bytes: numel * (dtype === "F32" ? 4 : 2) };
    }
    const { name, ...record } = tensor;
    const blocks = elementCount(tensor.scaleShape);
    const bytes = (bitsOf(tensor.dtype) === 4 ? Math.ceil(numel / 2) : numel) +
      blocks * (tensor.scaleDType === "float32" ? 4 : 2) + (storesZeroPoint(tensor.dtype, tensor.mode) ? blocks : 0);
    return { name, dtype: QUANT_CODES[tensor.dtype], shape: tensor.shape, bytes, quantized: record };
  });
  return {
    format: "arrows",
    tensors: summaries,
    metadata: {},
    dataBytes: summaries.reduce((sum, t) => sum + t.bytes, 0),
  };
}
