/**
 * Where a file job's reused slab buffers live.
 *
 * @module
 */
import { type Allocate, PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { wasmKernels } from "../src/wasm_kernels.ts";
import { readsSettled, retire } from "./_reads_in_flight.ts";

/**
 * Memory for the slab rings of jobs whose consumer is done with each chunk
 * before it reads the next (a synchronous file writer): inside the wasm
 * kernels' memory where it can be lent (input, re-read and output rings, the
 * 16-bit decoding scratch), so that the kernels work on slabs where they were
 * read; in JavaScript memory otherwise. Consecutive jobs in one thread get the
 * same buffers again: fresh memory costs 11-25 µs per 4 KiB page on first
 * touch on our VMs (PITFALLS.md 14, bench/RESULTS.md Addendum 4), which a job
 * per tensor would pay for every tensor.
 */
export class SlabMemory {
  readonly #slabBytes: number;
  readonly #slots: number;
  /** JavaScript buffers, in the order the last job asked for them. */
  readonly #buffers: Uint8Array[] = [];

  /**
   * @param slabBytes Byte budget of one slab.
   * @param slots Slots of the jobs' rings.
   */
  constructor(slabBytes: number, slots: number = PIPELINE_RING_SLOTS) {
    this.#slabBytes = slabBytes;
    this.#slots = slots;
  }

  /**
   * Runs a job; its buffers serve the next job once it has returned.
   *
   * @param work The job, given the `reuseBuffers` option to read with.
   * @returns What the job returns.
   */
  async run<T>(work: (reuseBuffers: Allocate) => Promise<T>): Promise<T> {
    const slab = this.#slabBytes;
    // In slabs (each with room for alignment): `slots` each for the input and re-read rings, and one more each for
    // the chunk a file source reads ahead (safetensors_source.ts); `slots` each for the output ring and the 16-bit
    // decoding scratch (a slab of 16-bit values is two slabs' bytes as float32, and rings have at least 2 slots);
    // plus 2 for a larger scratch should a later tensor need one (the arena does not free).
    const lease = wasmKernels()?.lease((4 * this.#slots + 4) * (slab + 512), slab);
    let next = 0;
    const buffers = this.#buffers;
    const reuse: Allocate = (byteLength) => {
      let buffer = buffers[next];
      if (!buffer || buffer.length < byteLength) buffers[next] = buffer = new Uint8Array(byteLength);
      next++;
      return buffer.subarray(0, byteLength);
    };
    const allocate = lease?.allocate ?? reuse;
    try {
      return await work(allocate);
    } catch (e) {
      // A failed job's stages stop asynchronously: a cancel travels up the pipes, and each stage finishes the
      // step it is in, writing into these buffers. Those steps are promise reactions, all run before the next
      // macrotask (measured, bench/RESULTS.md Addendum 6), but for a read ahead, which lands later: refused or
      // waited for below. Only then may another job have the buffers.
      await new Promise((resolve) => setTimeout(resolve, 0));
      throw e;
    } finally {
      // A read ahead may still be copying into one of the buffers, on another thread; none may start now.
      retire(allocate);
      await readsSettled(allocate);
      lease?.release();
    }
  }
}
