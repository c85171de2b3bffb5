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

/** Reusable buffers, handed out in turn. */
export class BufferRing {
  readonly #slots: (ArrayBuffer | undefined)[];
  #next = 0;

  /**
   * Creates the ring; buffers are allocated on first use.
   *
   * @param slots How many buffers take turns.
   * @throws {RangeError} When `slots` is not an integer of at least 2.
   */
  constructor(slots: number) {
    if (!Number.isInteger(slots) || slots < 2) {
      throw new RangeError(`A BufferRing needs at least 2 slots, got ${slots}`);
    }
    this.#slots = new Array(slots);
  }

  /**
   * The next slot's memory, at least `byteLength` long; a larger buffer replaces
   * a slot too small for it.
   *
   * @param byteLength Bytes needed.
   * @returns A view of exactly `byteLength` bytes, starting at offset 0 of its buffer.
   */
  take(byteLength: number): Uint8Array {
    const k = this.#next;
    this.#next = (k + 1) % this.#slots.length;
    let buffer = this.#slots[k];
    if (!buffer || buffer.byteLength < byteLength) this.#slots[k] = buffer = new ArrayBuffer(byteLength);
    return new Uint8Array(buffer, 0, byteLength);
  }
}

/** Slots of the rings the quantize pipeline uses: more than the chunks its streams can hold in flight. */
export const PIPELINE_RING_SLOTS = 8;
