/**
 * DequantizeStream: quantized slabs back to float slabs.
 *
 * @module
 */
import { BlockLayout } from "../src/block_layout.ts";
import { type Allocate, allocatorOf, BufferRing, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { dequantizeValues } from "../src/dequantize_kernel.ts";
import { FormatError } from "../src/errors.ts";
import { decodeFloat16 } from "../src/float16.ts";
import { isSigned, storesZeroPoint } from "../src/ranges.ts";
import { elementCount } from "../src/report.ts";
import type { FloatDType, QuantizedSlab, QuantizedTensorInfo, RawChunk, Slab } from "../src/types.ts";

function scaleNumbers(slab: QuantizedSlab): Float32Array {
  if (slab.tensor.scaleDType === "float32") return slab.scale as Float32Array;
  return decodeFloat16(slab.scale as Uint16Array, new Float32Array(slab.scale.length));
}

/** A tensor whose scales are gathered slab by slab, and how many of them are known so far. */
interface Gathered {
  readonly info: QuantizedTensorInfo;
  readonly layout: BlockLayout;
  readonly scale: Float32Array;
  readonly zeroPoint: Int8Array | Uint8Array | undefined;
  known: number;
}

function startTensor(info: QuantizedTensorInfo): Gathered {
  const blockCount = elementCount(info.scaleShape);
  const zeroPoint = !storesZeroPoint(info.dtype, info.mode)
    ? undefined
    : isSigned(info.dtype)
    ? new Int8Array(blockCount)
    : new Uint8Array(blockCount);
  return {
    info,
    layout: new BlockLayout(info.shape, info.blockSizes),
    scale: new Float32Array(blockCount),
    zeroPoint,
    known: 0,
  };
}

/** Adds the scales a slab carries to its tensor's, which must be the next ones (or known already). */
function gather(tensor: Gathered, slab: QuantizedSlab): void {
  const count = slab.scale.length;
  // Scales known already: a slab of whole rows that carries its own again, after a first slab that carried all.
  if (count === 0 || slab.scaleOffset + count <= tensor.known) return;
  const { info, scale, zeroPoint } = tensor;
  if (slab.scaleOffset !== tensor.known || tensor.known + count > scale.length) {
    throw new FormatError(
      `Quantized tensor "${info.name}": slab at element ${slab.offset} carries scales [${slab.scaleOffset}, ${
        slab.scaleOffset + count
      }) where scale ${tensor.known} of ${scale.length} comes next`,
    );
  }
  if (zeroPoint && slab.zeroPoint?.length !== count) {
    throw new FormatError(
      `Quantized tensor "${info.name}": slab at element ${slab.offset} carries ${count} scales and ${
        slab.zeroPoint?.length ?? "no"
      } zero points`,
    );
  }
  scale.set(scaleNumbers(slab), tensor.known);
  if (zeroPoint) zeroPoint.set(slab.zeroPoint!, tensor.known);
  tensor.known += count;
}

/** Options of {@linkcode DequantizeStream}. */
export interface DequantizeStreamOptions {
  /**
   * Write the float values into a ring of reused buffers instead of fresh
   * memory per slab (fresh pages cost 11-25 µs each on our machines). A
   * slab's `data` is then overwritten once 7 further slabs have been
   * produced: only for consumers that are done with each slab by then, as a
   * file writer is. A function instead of `true` says where the buffers'
   * memory comes from.
   * @default {false}
   */
  reuseBuffers?: boolean | Allocate;
}

/**
 * Dequantizes quantized slabs (`w = scale * (q - zero_point)`, in the source
 * float type) into float slabs; raw chunks pass through. Where a slab carries
 * the scales of its own rows it is dequantized on its own; otherwise the
 * tensor's scales, carried by its first slab, are kept until its last.
 *
 * @example
 * ```ts
 * import { DequantizeStream, QuantizeStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const tensor = { name: "w", dtype: "float32", shape: [4, 8] } as const;
 * const data = Float32Array.from({ length: 32 }, (_, i) => i / 31);
 * const out = await Array.fromAsync(
 *   ReadableStream.from([{ tensor, offset: 0, data }])
 *     .pipeThrough(new QuantizeStream({ weightThreshold: 0 }))
 *     .pipeThrough(new DequantizeStream()),
 * );
 * assert.ok(Math.abs((out[0].kind === "raw" ? 0 : out[0].data[31]) - 1) < 0.01);
 * ```
 */
export class DequantizeStream extends TransformStream<QuantizedSlab | RawChunk, Slab | RawChunk> {
  /**
   * Creates the stream.
   *
   * @param options Memory of the output.
   */
  constructor(options: DequantizeStreamOptions = {}) {
    const reuse = options.reuseBuffers
      ? new BufferRing(PIPELINE_RING_SLOTS, allocatorOf(options.reuseBuffers))
      : undefined;
    // 16-bit results are computed in float32 first: a scratch of this stream's own, done with before the next slab.
    let scratch = new Float32Array(0);
    /** The output of `count` elements of `dtype`: fresh, or from the ring; and its float32 intermediate. */
    const outputOf = (count: number, dtype: FloatDType): [Float32Array | undefined, Uint16Array | undefined] => {
      if (!reuse) return [undefined, undefined];
      if (dtype === "float32") {
        const bytes = reuse.take(4 * count);
        return [new Float32Array(bytes.buffer, bytes.byteOffset, count), undefined];
      }
      if (scratch.length < count) scratch = new Float32Array(count);
      const bytes = reuse.take(2 * count);
      return [scratch, new Uint16Array(bytes.buffer, bytes.byteOffset, count)];
    };
    /** The tensor whose scales are being gathered. */
    let whole: Gathered | undefined;
    super({
      transform(slab, controller) {
        if (slab.kind === "raw") return controller.enqueue(slab);
        const { tensor: info } = slab;
        // A slab carries the scales of the blocks that begin in it (the first slab all of them, where they do not
        // follow the rows). From a tensor's first slab on they are gathered in order: they serve the slabs that
        // follow, whose rows may be split anywhere.
        if (slab.offset === 0) whole = startTensor(info);
        const tracked = whole?.info.name === info.name ? whole : undefined;
        if (tracked) gather(tracked, slab);
        const rowLength = elementCount(info.shape.slice(1));
        const blocksPerRow = elementCount(info.scaleShape.slice(1));
        const rows = slab.data.length / rowLength;
        const ownRows = info.blockSizes[0] === 1 && slab.offset % rowLength === 0 && Number.isInteger(rows) &&
          slab.scale.length === rows * blocksPerRow && slab.scaleOffset === (slab.offset / rowLength) * blocksPerRow;
        const [values, bits] = outputOf(slab.data.length, info.sourceDType);
        let data;
        if (ownRows) {
          // Whole rows with their own scales: dequantized on their own.
          const layout = new BlockLayout([rows, ...info.shape.slice(1)], info.blockSizes);
          const scale = scaleNumbers(slab);
          data = dequantizeValues(slab.data, 0, layout, scale, slab.zeroPoint, info.sourceDType, values, bits);
        } else {
          if (!tracked) {
            throw new FormatError(
              `Quantized tensor "${info.name}": slab at element ${slab.offset} arrived without its tensor's first slab`,
            );
          }
          // Where blocks are runs of consecutive elements, the slab's last element has its highest block; elsewhere
          // (channels on a later axis) a slab may touch any block, so all must be known.
          const { layout } = tracked;
          const needed = layout.contiguous ? layout.blockOf(slab.offset + slab.data.length - 1) + 1 : layout.blockCount;
          if (slab.data.length > 0 && needed > tracked.known) {
            throw new FormatError(
              `Quantized tensor "${info.name}": slab at element ${slab.offset} arrived without its scales`,
            );
          }
          const { scale, zeroPoint } = tracked;
          data = dequantizeValues(slab.data, slab.offset, layout, scale, zeroPoint, info.sourceDType, values, bits);
        }
        controller.enqueue({
          kind: "slab",
          tensor: { name: info.name, dtype: info.sourceDType, shape: info.shape },
          offset: slab.offset,
          data,
        });
      },
    });
  }
}
