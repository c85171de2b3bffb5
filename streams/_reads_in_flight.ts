/**
 * Reads in flight into reused buffers, by the allocator the buffers came
 * from: a file source that reads ahead (`ByteSource.readAsync`) copies into a
 * ring buffer on another thread, and the job's memory (`SlabMemory`) may
 * serve the next job only once no such copy is left.
 *
 * @module
 */
import type { Allocate } from "../src/buffer_ring.ts";

const inFlight = new WeakMap<Allocate, Set<Promise<unknown>>>();
const retired = new WeakSet<Allocate>();

/**
 * Counts a read as in flight into buffers from `allocate` until it settles.
 *
 * @param allocate Where the buffer read into came from.
 * @param read The read.
 */
export function trackRead(allocate: Allocate, read: Promise<unknown>): void {
  let reads = inFlight.get(allocate);
  if (reads === undefined) inFlight.set(allocate, reads = new Set());
  reads.add(read);
  const settled = () => reads.delete(read);
  read.then(settled, settled);
}

/**
 * Ends the reads into buffers from `allocate`: from now on a read into them
 * is refused ({@linkcode isRetired}), so that once the reads in flight have
 * settled nothing writes into them. A failed job's chunk stream learns of the
 * failure only when the cancel has travelled up the pipes, and may meanwhile
 * start the next read as the one it waited for lands.
 *
 * @param allocate Where the job's buffers came from.
 */
export function retire(allocate: Allocate): void {
  retired.add(allocate);
}

/**
 * Whether reads into buffers from `allocate` are refused.
 *
 * @param allocate Where the buffers came from.
 */
export function isRetired(allocate: Allocate): boolean {
  return retired.has(allocate);
}

/**
 * Settles once no read into buffers from `allocate` is in flight.
 *
 * @param allocate Where the buffers came from; {@linkcode retire} it first, or reads may start after this settles.
 */
export async function readsSettled(allocate: Allocate): Promise<void> {
  for (let reads = inFlight.get(allocate); reads?.size; reads = inFlight.get(allocate)) {
    await Promise.allSettled(reads);
  }
}
