/**
 * The slabs of one-pass tensors quantized in Web Workers: the pool, and the
 * buffers that cross to it. Input slabs may live in the reader's ring of
 * reused buffers, so each is copied into a buffer of our own that is
 * transferred to a worker and handed back with the result; steady state
 * allocates nothing new (PITFALLS.md 14).
 *
 * @module
 */
import { PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import type { SlabResult, SlabTask } from "../src/_quantize_task.ts";
import { WorkerPool } from "../src/_worker_pool.ts";
import { wasmKernels } from "../src/wasm_kernels.ts";
import type { QuantizedTensorInfo, Slab } from "../src/types.ts";

/** Quantizes slabs in a pool of workers. */
export class SlabWorkers {
  readonly #pool: WorkerPool<SlabTask, SlabResult>;
  /** Input copies the workers handed back. */
  readonly #inputs: ArrayBuffer[] = [];
  /** Output buffers given to the consumer, oldest first, when they are recycled. */
  readonly #outputs: ArrayBuffer[] | undefined;
  readonly #errorSums: boolean;

  /**
   * Starts the workers.
   *
   * @param size How many workers.
   * @param options `recycleOutputs`: reuse a quantized slab's memory once `PIPELINE_RING_SLOTS` later slabs were
   *   given out (the `reuseBuffers` contract), else every slab gets fresh memory; `errorSums`: whether the
   *   workers compute the report's error sums.
   */
  constructor(size: number, options: { recycleOutputs: boolean; errorSums: boolean }) {
    this.#pool = new WorkerPool(new URL("../src/_quantize_worker.ts", import.meta.url), size);
    this.#outputs = options.recycleOutputs ? [] : undefined;
    this.#errorSums = options.errorSums;
  }

  /**
   * Quantizes a slab of whole rows as a layout of its own.
   *
   * @param info The tensor's recipe.
   * @param slab The slab; its memory is only read, before this returns.
   * @param rows Rows in the slab.
   * @returns The worker's result.
   */
  quantize(info: QuantizedTensorInfo, slab: Slab, rows: number): Promise<SlabResult> {
    const { data: source } = slab;
    const byteLength = source.byteLength;
    let data = this.#inputs.pop();
    if (!data || data.byteLength < byteLength) data = new ArrayBuffer(byteLength);
    new Uint8Array(data, 0, byteLength).set(new Uint8Array(source.buffer, source.byteOffset, byteLength));
    const outputs = this.#outputs;
    const out = outputs && outputs.length >= PIPELINE_RING_SLOTS ? outputs.shift() : undefined;
    const task: SlabTask = {
      info,
      rows,
      offset: slab.offset,
      length: source.length,
      data,
      out,
      errorSums: this.#errorSums,
      wasm: wasmKernels() !== undefined,
    };
    return this.#pool.run(task, out ? [data, out] : [data]).then((result) => {
      this.#inputs.push(result.data);
      return result;
    });
  }

  /**
   * Records that a quantized slab's memory went to the consumer.
   *
   * @param q The slab's buffer.
   */
  released(q: ArrayBuffer): void {
    this.#outputs?.push(q);
  }

  /** Terminates the workers. */
  close(): void {
    this.#pool.close();
  }
}
