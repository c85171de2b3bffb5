/**
 * Where a file job's reused slab buffers live.
 *
 * @module
 */
import { type Allocate, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { wasmKernels } from "../src/wasm_kernels.ts";

/**
 * Runs a job whose consumer is done with each chunk before it reads the next
 * (a synchronous file writer), with reused slab buffers: inside the wasm
 * kernels' memory where it can be lent (input, re-read and output rings, the
 * 16-bit decoding scratch), so that the kernels work on slabs where they were
 * read; in JavaScript memory otherwise. Only the pages used are ever touched.
 *
 * @param slabBytes Byte budget of one slab.
 * @param work The job, given the `reuseBuffers` option to read with.
 * @returns What the job returns.
 */
export async function withSlabMemory<T>(
  slabBytes: number,
  work: (reuseBuffers: true | Allocate) => Promise<T>,
): Promise<T> {
  const lease = wasmKernels()?.lease(4 * PIPELINE_RING_SLOTS * (slabBytes + 512), slabBytes);
  try {
    return await work(lease?.allocate ?? true);
  } finally {
    lease?.release();
  }
}
