/**
 * A garbage-collection hint for Bun at tensor boundaries.
 *
 * @module
 */

/** Input bytes between two collection requests. */
const GC_HINT_BYTES = 64 * 1024 * 1024;

/** Input bytes since this thread's last request: shared by its jobs (a parallel file job runs one per tensor). */
let since = 0;

/**
 * Under Bun, a callback that asks JavaScriptCore for a collection at a tensor
 * boundary once 64 MiB of input have gone by since the last request (at most
 * once per tensor), counting the bytes of every job in this thread; elsewhere a no-op.
 *
 * Why: every 4 MiB slab (as measured) leaves some 20 KiB (safetensors output) to 50 KiB
 * (Arrow output) of short-lived objects (block parameters, apache-arrow's
 * message objects, stream promises); nothing is retained. JSC collects only
 * once the bytes allocated since the last collection reach about the heap's
 * size, which the live slab rings and wasm memory make ~70 MiB, and Bun's GC
 * timer never fires while the pipeline runs in microtasks: peak RSS grew from
 * 107 MiB (256 MiB of float32 in, Arrow out) to 136 MiB (2 GiB). With
 * `Bun.gc(false)`, which only starts a concurrent collection (~0.1 ms), it is
 * 105 -> 109 MiB. A single tensor larger than 64 MiB still grows until it ends.
 * Deno's V8 collects its young generation on its own.
 *
 * @returns Call it with each finished tensor's input bytes.
 */
export function bunGcHint(): (bytes: number) => void {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun === undefined) return () => {};
  return (bytes) => {
    since += bytes;
    if (since < GC_HINT_BYTES) return;
    since = 0;
    bun.gc(false);
  };
}
