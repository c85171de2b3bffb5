/**
 * How QuantizeStream handles the slabs of one tensor: passed through
 * (skipped), quantized slab by slab (one pass, where the scales follow the
 * rows), or observed then quantized on a second read (two passes).
 *
 * @module
 */
import { BlockQuantizer } from "../src/block_quantizer.ts";
import { BlockLayout } from "../src/block_layout.ts";
import { FormatError } from "../src/errors.ts";
import type { ErrorStats } from "../src/error_stats.ts";
import { floatValues } from "../src/float_values.ts";
import { isSigned, storesZeroPoint } from "../src/ranges.ts";
import type { BufferRing } from "../src/buffer_ring.ts";
import type { SlabWorkers } from "./_slab_workers.ts";
import { elementCount, floatByteLength, quantizedByteLength, type TensorReport } from "../src/report.ts";
import { safetensorsCodeOf } from "../src/safetensors_header.ts";
import { SlabSpool } from "../src/spool.ts";
import type {
  QuantizedSlab,
  QuantizedTensorInfo,
  RawChunk,
  SkippedTensor,
  Slab,
  SlabSource,
  TensorInfo,
} from "../src/types.ts";

/** The slabs of one tensor, fed in order; `accept` yields the outputs. */
export interface TensorJob {
  /** Tensor name. */
  readonly name: string;
  /** Whether every element has been accepted (and its outputs yielded). */
  readonly done: boolean;
  /** Takes the next slab, yields what can be emitted now. */
  accept(slab: Slab): AsyncGenerator<QuantizedSlab | RawChunk>;
  /** The tensor's report, once done. */
  report(): TensorReport;
  /** Releases temporary files. */
  dispose(): void;
}

/** Checks that slabs arrive in order and counts elements. */
class Progress {
  readonly size: number;
  next = 0;
  constructor(readonly tensor: TensorInfo) {
    this.size = elementCount(tensor.shape);
  }
  advance(slab: Slab): void {
    if (slab.offset !== this.next) {
      throw new FormatError(
        `Slab of tensor "${this.tensor.name}" starts at element ${slab.offset}, expected ${this.next}`,
      );
    }
    if (slab.offset + slab.data.length > this.size) {
      throw new FormatError(
        `Slab of tensor "${this.tensor.name}" ends at element ${
          slab.offset + slab.data.length
        }, beyond its ${this.size} elements`,
      );
    }
    this.next += slab.data.length;
  }
  get done(): boolean {
    return this.next === this.size;
  }
}

/** A float tensor left as it is: its slabs become raw bytes. */
export class SkipJob implements TensorJob {
  readonly #progress: Progress;
  constructor(readonly tensor: TensorInfo, readonly skip: SkippedTensor) {
    this.#progress = new Progress(tensor);
  }
  get name(): string {
    return this.tensor.name;
  }
  get done(): boolean {
    return this.#progress.done;
  }
  async *accept(slab: Slab): AsyncGenerator<RawChunk> {
    this.#progress.advance(slab);
    const { data } = slab;
    yield {
      kind: "raw",
      name: this.tensor.name,
      dtype: safetensorsCodeOf(this.tensor.dtype),
      shape: this.tensor.shape,
      offset: slab.offset * data.BYTES_PER_ELEMENT,
      bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    };
  }
  report(): TensorReport {
    const bytes = floatByteLength(this.tensor.dtype, this.tensor.shape);
    return {
      name: this.name,
      shape: this.tensor.shape,
      dtype: this.tensor.dtype,
      decision: "skipped",
      reason: this.skip.reason,
      message: this.skip.message,
      originalBytes: bytes,
      quantizedBytes: bytes,
    };
  }
  dispose(): void {}
}

/** Memory the jobs of one stream share (one job runs at a time). */
export interface JobMemory {
  /** Where quantized values go: a ring of reused buffers, or fresh memory when undefined. */
  readonly outputs?: BufferRing;
  /** Float32 room to decode one 16-bit slab into, reused slab after slab. */
  scratch(length: number): Float32Array;
}

/** Shared by the quantizing jobs: progress, error sums, scratch, output slabs. */
abstract class QuantizeJob implements TensorJob {
  protected readonly progress: Progress;
  protected zeroRangeBlocks = 0;
  protected readonly outputs?: BufferRing;

  /**
   * @param tensor The tensor.
   * @param info Its recipe.
   * @param memory Output ring and decoding scratch.
   * @param errors Where the report's error sums go; none when the error is not measured.
   */
  constructor(
    readonly tensor: TensorInfo,
    readonly info: QuantizedTensorInfo,
    readonly memory: JobMemory,
    protected readonly errors?: ErrorStats,
  ) {
    this.progress = new Progress(tensor);
    this.outputs = memory.outputs;
  }
  get name(): string {
    return this.tensor.name;
  }
  get done(): boolean {
    return this.progress.done;
  }
  abstract accept(slab: Slab): AsyncGenerator<QuantizedSlab>;

  /** Float32 values of a slab; 16-bit types decode into the stream's scratch. */
  protected values(slab: Slab): Float32Array {
    const scratch = this.tensor.dtype === "float32" ? undefined : this.memory.scratch(slab.data.length);
    return floatValues(slab.data, this.tensor.dtype, scratch);
  }

  /**
   * Quantizes a slab's values into the output ring with `quantize` (the
   * quantizer's `quantize`, or `observeAndQuantize` in one pass) and wraps
   * them with their scales.
   */
  protected output(
    quantizer: BlockQuantizer,
    slab: Slab,
    length: number,
    quantize: (out?: Int8Array | Uint8Array) => Int8Array | Uint8Array,
    scales: { offset: number; from: number; to: number },
  ): QuantizedSlab {
    const bytes = this.outputs?.take(length);
    const out = bytes && (isSigned(this.info.dtype) ? new Int8Array(bytes.buffer, bytes.byteOffset, length) : bytes);
    const data = quantize(out);
    const zeroPoint = storesZeroPoint(this.info.dtype, this.info.mode)
      ? { zeroPoint: quantizer.zeroPoints(scales.from, scales.to) }
      : {};
    return {
      kind: "quantized",
      tensor: this.info,
      offset: slab.offset,
      data,
      scaleOffset: scales.offset,
      scale: quantizer.scales(scales.from, scales.to),
      ...zeroPoint,
    };
  }

  report(): TensorReport {
    const { info } = this;
    return {
      name: this.name,
      shape: info.shape,
      dtype: info.sourceDType,
      decision: "quantized",
      quantization: {
        mode: info.mode,
        dtype: info.dtype,
        granularity: info.granularity,
        axis: info.axis,
        blockSizes: info.blockSizes,
      },
      originalBytes: floatByteLength(info.sourceDType, info.shape),
      quantizedBytes: quantizedByteLength(info),
      ...(this.errors ? { snrDb: this.errors.snrDb, maxAbsError: this.errors.maxAbsError } : {}),
      zeroRangeBlocks: this.zeroRangeBlocks,
    };
  }
  dispose(): void {}
}

/**
 * Scales follow the rows (per channel on axis 0, per block): each slab of
 * whole rows is quantized as a tensor of its own rows, in one pass.
 */
export class OnePassJob extends QuantizeJob {
  readonly #rowLength: number;
  readonly #blocksPerRow: number;
  #layout: BlockLayout | undefined;

  constructor(tensor: TensorInfo, info: QuantizedTensorInfo, memory: JobMemory, errors?: ErrorStats) {
    super(tensor, info, memory, errors);
    this.#rowLength = elementCount(info.shape.slice(1));
    this.#blocksPerRow = elementCount(info.scaleShape.slice(1));
  }

  /** The layout of a slab of `rows` rows, made once for all the slabs of that many (one each was ~0.8 KB). */
  #layoutOf(rows: number): BlockLayout {
    if (this.#layout?.shape[0] !== rows) {
      this.#layout = new BlockLayout([rows, ...this.info.shape.slice(1)], this.info.blockSizes);
    }
    return this.#layout;
  }

  /** Checks and counts a slab; its rows. */
  #rows(slab: Slab): number {
    this.progress.advance(slab);
    const rows = slab.data.length / this.#rowLength;
    if (slab.offset % this.#rowLength !== 0 || !Number.isInteger(rows)) {
      throw new FormatError(
        `Slab of tensor "${this.name}" at element ${slab.offset} does not hold whole rows of ${this.#rowLength} elements`,
      );
    }
    return rows;
  }

  async *accept(slab: Slab): AsyncGenerator<QuantizedSlab> {
    const rows = this.#rows(slab);
    const quantizer = new BlockQuantizer(this.info, this.#layoutOf(rows));
    const values = this.values(slab);
    const quantize = (out?: Int8Array | Uint8Array) =>
      quantizer.observeAndQuantize(values, out, this.errors, slab.offset);
    const blocks = quantizer.layout.blockCount;
    const quantized = this.output(quantizer, slab, values.length, quantize, {
      offset: (slab.offset / this.#rowLength) * this.#blocksPerRow,
      from: 0,
      to: blocks,
    });
    this.zeroRangeBlocks += quantizer.zeroRangeBlocks;
    yield quantized;
  }

  /**
   * Quantizes a slab in a worker, as {@linkcode accept} would here. The
   * slab is checked and copied before this returns; the error sums are
   * merged only when the returned function is called, which the caller does
   * in slab order so the report's sums add up in the same order.
   *
   * @param slab The next slab.
   * @param workers The workers.
   * @returns The worker's answer: a function that merges the report's sums and returns the output slab.
   * @throws {FormatError} When the slab is out of order or not whole rows.
   */
  submit(slab: Slab, workers: SlabWorkers): Promise<() => QuantizedSlab> {
    const rows = this.#rows(slab);
    const { offset, data: { length } } = slab;
    const scaleOffset = (offset / this.#rowLength) * this.#blocksPerRow;
    return workers.quantize(this.info, slab, rows).then((result) => () => {
      this.zeroRangeBlocks += result.zeroRangeBlocks;
      if (result.sums) this.errors?.add(result.sums, length);
      const data = isSigned(this.info.dtype) ? new Int8Array(result.q, 0, length) : new Uint8Array(result.q, 0, length);
      return {
        kind: "quantized",
        tensor: this.info,
        offset,
        data,
        scaleOffset,
        scale: result.scale,
        ...(result.zeroPoint ? { zeroPoint: result.zeroPoint } : {}),
      };
    });
  }

  /**
   * Whether a tensor can be quantized this way from slabs like `first`.
   *
   * @param info The tensor's recipe.
   * @param first Its first slab.
   */
  static fits(info: QuantizedTensorInfo, first: Slab): boolean {
    const layout = new BlockLayout(info.shape, info.blockSizes);
    return layout.blocksFollowRows && first.data.length % elementCount(info.shape.slice(1)) === 0;
  }
}

/**
 * Scales need the whole tensor (per tensor, per channel on a later axis):
 * the incoming slabs are observed, then the tensor is read again, from its
 * source or from a spool file, and quantized. The first output slab carries
 * every scale.
 */
export class TwoPassJob extends QuantizeJob {
  readonly #quantizer: BlockQuantizer;
  #source: SlabSource | undefined;
  #spool: SlabSpool | undefined;

  constructor(tensor: TensorInfo, info: QuantizedTensorInfo, memory: JobMemory, errors?: ErrorStats) {
    super(tensor, info, memory, errors);
    this.#quantizer = new BlockQuantizer(info);
  }

  async *accept(slab: Slab): AsyncGenerator<QuantizedSlab> {
    const first = slab.offset === 0;
    this.progress.advance(slab);
    const values = this.values(slab);
    this.#quantizer.observe(values, slab.offset);
    if (first && this.done) {
      // The whole tensor is in hand: no second read needed.
      yield* this.#quantizeAll([{ slab, values }]);
      return;
    }
    // The first slab decides: re-read its source, or spool every slab.
    if (first) this.#source = slab.source;
    if (!this.#source) (this.#spool ??= new SlabSpool()).append(slab);
    if (!this.done) return;
    const source = this.#source ?? this.#spool!.source();
    const second = new Progress(this.tensor);
    const reread = async function* (job: TwoPassJob) {
      for await (const again of source.slabs()) {
        second.advance(again);
        yield { slab: again, values: job.values(again) };
      }
      if (!second.done) {
        throw new FormatError(`Re-reading tensor "${job.name}" gave ${second.next} of ${second.size} elements`);
      }
    };
    try {
      yield* this.#quantizeAll(reread(this));
    } finally {
      this.dispose();
    }
  }

  async *#quantizeAll(
    parts: Iterable<{ slab: Slab; values: Float32Array }> | AsyncIterable<{ slab: Slab; values: Float32Array }>,
  ): AsyncGenerator<QuantizedSlab> {
    const quantizer = this.#quantizer;
    quantizer.finish();
    this.zeroRangeBlocks = quantizer.zeroRangeBlocks;
    const all = quantizer.layout.blockCount;
    let first = true;
    for await (const { slab, values } of parts) {
      yield this.output(
        quantizer,
        slab,
        values.length,
        (out) => quantizer.quantize(values, slab.offset, out, this.errors),
        first ? { offset: 0, from: 0, to: all } : { offset: all, from: all, to: all },
      );
      first = false;
    }
  }

  override dispose(): void {
    this.#spool?.dispose();
    this.#spool = undefined;
  }
}
