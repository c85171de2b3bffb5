/**
 * Quantizing the elements of one block layout: observe ranges, compute the
 * block parameters, quantize. A whole tensor is one layout; in one-pass
 * streaming, each slab of whole rows is a layout of its own.
 *
 * @module
 */
import { BlockLayout } from "./block_layout.ts";
import { BlockRange } from "./block_range.ts";
import { NonFiniteError } from "./errors.ts";
import type { ErrorStats } from "./error_stats.ts";
import { float16Bits } from "./float16.ts";
import { type ArithmeticType, type BlockParams, computeBlockParams } from "./qparams.ts";
import type { KernelParams } from "./quantize_kernel.ts";
import { quantizeValues } from "./quantize_kernel.ts";
import { isSigned, type QuantRange, quantRange } from "./ranges.ts";
import { wasmKernels } from "./wasm_kernels.ts";
import type { QuantizedTensorInfo } from "./types.ts";

/** Per-block parameters of a finished range. */
interface Params {
  readonly kernel: KernelParams;
  readonly scale: Float64Array;
  readonly zeroRangeBlocks: number;
}

/** Quantizes the elements of one block layout of a tensor. */
export class BlockQuantizer {
  /** The tensor's recipe. */
  readonly info: QuantizedTensorInfo;
  /** The layout quantized: the tensor's, or a slab's rows. */
  readonly layout: BlockLayout;
  /** Made on first use: the one-pass kernel (`observeAndQuantize`) keeps its ranges in its own memory. */
  #range: BlockRange | undefined;
  #params: Params | undefined;

  /**
   * @param info The tensor's recipe.
   * @param part Shape of the part quantized, when not the whole tensor (rows of a slab), or its layout (made with
   *   `info.blockSizes`: a slab's rows share one).
   */
  constructor(info: QuantizedTensorInfo, part: readonly number[] | BlockLayout = info.shape) {
    this.info = info;
    this.layout = part instanceof BlockLayout ? part : new BlockLayout(part, info.blockSizes);
  }

  /**
   * Folds consecutive values into the block ranges.
   *
   * @param values Values of elements `[offset, offset + values.length)` of the layout.
   * @param offset Flat index of `values[0]`.
   * @param tensorOffset Flat index of the layout's first element in the tensor, for error messages.
   * @throws {NonFiniteError} On NaN or an infinity, naming its position.
   */
  observe(values: Float32Array, offset: number, tensorOffset = 0): void {
    const bad = (this.#range ??= new BlockRange(this.layout)).observe(values, offset);
    if (bad >= 0) {
      const flat = tensorOffset + offset + bad;
      const index = unravel(flat, this.info.shape);
      throw new NonFiniteError(this.info.name, `${values[bad]} at element ${flat} (index [${index}])`);
    }
  }

  /** Computes the block parameters from the observed ranges; call once every value was observed. */
  finish(): void {
    const { info } = this;
    const range = quantRange(info.dtype, info.mode);
    const arithmetic = info.sourceDType === "float16" ? "float16" : "float32";
    const { mins, maxs } = this.#range ??= new BlockRange(this.layout);
    const p = computeBlockParams(mins, maxs, info.mode, range, arithmetic, info.name);
    this.#setParams(p, range, arithmetic);
  }

  #setParams(p: BlockParams, range: QuantRange, arithmetic: ArithmeticType): void {
    // A loop, not `p.scale.map(...)`, which allocated a number object per block (measured in Deno): this runs for
    // every slab of a file job.
    const inverseScale = new Float64Array(p.scale.length);
    for (let k = 0; k < inverseScale.length; k++) inverseScale[k] = 1 / p.scale[k];
    this.#params = {
      kernel: {
        inverseScale,
        zeroPoint: p.zeroPoint,
        qmin: range.qmin,
        qmax: range.qmax,
        arithmetic,
      },
      scale: p.scale,
      zeroRangeBlocks: p.zeroRangeBlocks,
    };
  }

  /**
   * Observes every value of the layout, finishes and quantizes them: what
   * `observe`, `finish` and `quantize` do, in one pass over the values where
   * the wasm kernels can (whole blocks of contiguous values, in place in their
   * memory or staged, in float32 arithmetic; src/wasm_kernels.ts,
   * `observeQuantize`). Same bytes and parameters either way, the same error
   * sums within 1e-6 relatively.
   *
   * @param values Values of every element of the layout.
   * @param out Destination; a new array when omitted. When this throws, it may hold the values of the rows
   *   before the culprit (the kernel finds a non-finite value only at the end of the blocks it was given).
   * @param errors Error sums to add these elements to.
   * @param tensorOffset Flat index of the layout's first element in the tensor, for error messages.
   * @returns The quantized values.
   * @throws {NonFiniteError} On NaN or an infinity, naming its position.
   */
  observeAndQuantize(
    values: Float32Array,
    out?: Int8Array | Uint8Array,
    errors?: ErrorStats,
    tensorOffset = 0,
  ): Int8Array | Uint8Array {
    const { info, layout } = this;
    const q = out ?? (isSigned(info.dtype) ? new Int8Array(values.length) : new Uint8Array(values.length));
    const kernels = info.sourceDType !== "float16" && layout.contiguous && values.length === layout.size &&
      wasmKernels();
    if (kernels) {
      const sums = errors && new Float64Array(3);
      const range = quantRange(info.dtype, info.mode);
      const found = kernels.observeQuantize(values, layout.blockCount, layout.runLength, info.mode, range, q, sums);
      if (found) {
        this.#setParams(found, range, "float32");
        if (sums) errors!.add(sums, values.length);
        return q;
      }
    }
    this.observe(values, 0, tensorOffset);
    this.finish();
    return this.quantize(values, 0, q, errors);
  }

  get #finished(): Params {
    if (!this.#params) throw new Error("BlockQuantizer: finish() must be called before quantizing");
    return this.#params;
  }

  /** Blocks whose scale was 0 and stored as 1. */
  get zeroRangeBlocks(): number {
    return this.#finished.zeroRangeBlocks;
  }

  /**
   * Quantizes consecutive values.
   *
   * @param values Values of elements `[offset, offset + values.length)` of the layout.
   * @param offset Flat index of `values[0]`.
   * @param out Destination; a new array when omitted.
   * @param errors Error sums to add these elements to.
   * @returns The quantized values.
   */
  quantize(
    values: Float32Array,
    offset: number,
    out?: Int8Array | Uint8Array,
    errors?: ErrorStats,
  ): Int8Array | Uint8Array {
    const p = this.#finished;
    const q = out ?? (isSigned(this.info.dtype) ? new Int8Array(values.length) : new Uint8Array(values.length));
    const sums = errors && new Float64Array(3);
    if (quantizeValues(values, offset, this.layout, p.kernel, q, sums)) errors!.add(sums!, values.length);
    else errors?.observe(values, offset, this.layout, q, p.scale, p.kernel.zeroPoint);
    return q;
  }

  /**
   * The stored scales, in the scale dtype: `Float32Array`, or float16 bits.
   *
   * @param from First block.
   * @param to End block (exclusive).
   */
  scales(from = 0, to: number = this.layout.blockCount): Float32Array | Uint16Array {
    const scale = this.#finished.scale.subarray(from, to);
    if (this.info.scaleDType === "float32") return Float32Array.from(scale);
    return Uint16Array.from(scale, float16Bits);
  }

  /**
   * The zero points, `Int8Array` for signed dtypes and `Uint8Array` for unsigned.
   *
   * @param from First block.
   * @param to End block (exclusive).
   */
  zeroPoints(from = 0, to: number = this.layout.blockCount): Int8Array | Uint8Array {
    const zp = this.#finished.kernel.zeroPoint.subarray(from, to);
    return isSigned(this.info.dtype) ? Int8Array.from(zp) : Uint8Array.from(zp);
  }
}

/** The multi-index of a flat row-major index. */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length);
  for (let k = shape.length - 1; k >= 0; k--) {
    index[k] = flat % shape[k];
    flat = Math.floor(flat / shape[k]);
  }
  return index;
}
