/**
 * A ring of reusable byte buffers. Fresh memory costs about 11 µs per 4 KiB
 * page in every runtime (PITFALLS.md 14): allocating each slab anew spent
 * more time faulting pages in than reading and quantizing them. A ring hands
 * out its slots in turn, so a buffer is reused once `slots - 1` others have
 * been taken after it: only for consumers that are done with a buffer (or
 * have copied it) by then, such as the quantize pipeline writing to a file.
 *
 * @module
 */

/** Where a ring's memory comes from: at least `byteLength` fresh bytes (JavaScript memory unless told otherwise). */
export type Allocate = (byteLength: number) => Uint8Array;

/** Fresh JavaScript memory. */
const freshMemory: Allocate = (n) => new Uint8Array(n);

/** Reusable buffers, handed out in turn. */
export class BufferRing {
  readonly #slots: (Uint8Array | undefined)[];
  readonly #allocate: Allocate;
  #next = 0;

  /**
   * Creates the ring; buffers are allocated on first use.
   *
   * @param slots How many buffers take turns.
   * @param allocate Where slot memory comes from (the quantize pipeline passes a lease of the wasm kernels'
   *   memory, so that kernels work on the slabs in place).
   * @throws {RangeError} When `slots` is not an integer of at least 2.
   */
  constructor(slots: number, allocate: Allocate = freshMemory) {
    if (!Number.isInteger(slots) || slots < 2) {
      throw new RangeError(`A BufferRing needs at least 2 slots, got ${slots}`);
    }
    this.#slots = new Array(slots);
    this.#allocate = allocate;
  }

  /**
   * The next slot's memory, at least `byteLength` long; a larger buffer replaces
   * a slot too small for it.
   *
   * @param byteLength Bytes needed.
   * @returns A view of exactly `byteLength` bytes (its `byteOffset` need not be 0).
   */
  take(byteLength: number): Uint8Array {
    const k = this.#next;
    this.#next = (k + 1) % this.#slots.length;
    let slot = this.#slots[k];
    if (!slot || slot.length < byteLength) this.#slots[k] = slot = this.#allocate(byteLength);
    return slot.subarray(0, byteLength);
  }
}

/** The allocator a `reuseBuffers` option gives: its own function, or fresh JavaScript memory. */
export function allocatorOf(reuseBuffers: boolean | Allocate | undefined): Allocate {
  return typeof reuseBuffers === "function" ? reuseBuffers : freshMemory;
}

/** Slots of the rings the quantize pipeline uses: more than the chunks its streams can hold in flight. */
export const PIPELINE_RING_SLOTS = 8;

/**
 * Slots of the rings of a job whose consumer is done with each chunk before it
 * asks for the next, such as a loop writing each piece to a file
 * (streams/_file_job.ts): one chunk in use, one being read. Fewer buffers stay
 * in cache (bench/RESULTS.md, Addendum 7).
 */
export const FILE_JOB_RING_SLOTS = 2;
