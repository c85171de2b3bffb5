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
 * Settles once no read into buffers from `allocate` is in flight, a macrotask
 * after the last one settled. A failed job's chunk stream learns of the
 * failure only once the cancel has travelled up the pipes; until then, a pull
 * waiting for a read starts the next one as that read lands. Each round waits
 * for such a read too, until a macrotask passes with none started.
 *
 * @param allocate Where the job's buffers came from.
 */
export async function readsSettled(allocate: Allocate): Promise<void> {
  const reads = inFlight.get(allocate);
  while (reads?.size) {
    await Promise.allSettled(reads);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}
