import assert from "node:assert/strict";
import type { ByteSource } from "../src/byte_source.ts";
import { FILE_JOB_RING_SLOTS } from "../src/buffer_ring.ts";
import { resolveConfig } from "../src/config.ts";
import { setWasmKernelsEnabled } from "../src/wasm_kernels.ts";
import { startFileJob } from "../streams/_file_job.ts";
import { SlabMemory } from "../streams/_slab_memory.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";

type Input = string | Uint8Array | (() => ByteSource);

/** A job that fails after its consumer has taken `k` pieces: the streams', or a file job's as `quantizeFile` runs it. */
const failingJobs = {
  streams: (input: Input, memory: SlabMemory, slab: number, config: object, k: number) =>
    memory.run(async (reuseBuffers) => {
      const job = await quantizeSafetensors(input, { config, slabBytes: slab, reuseBuffers });
      let n = 0;
      await job.output.pipeTo(
        new WritableStream({
          write() {
            if (++n > k) throw new Error("disk full");
          },
        }),
      );
    }),
  "file job": (input: Input, memory: SlabMemory, slab: number, config: object, k: number) =>
    memory.run(async (reuseBuffers) => {
      if (input instanceof Uint8Array) throw new TypeError("a file job reads a path or a source");
      const job = await startFileJob(input, { config: resolveConfig(config), slabBytes: slab, reuseBuffers });
      let n = 0;
      for await (const _ of job.bytes) if (++n > k) throw new Error("disk full");
    }),
};

/**
 * Fails jobs on `input` (a consumer failing after k pieces), each followed by
 * a job that takes the buffers it is lent and watches the memory behind them
 * (the regions of the kernels' lease, when they lend one; the reused
 * JavaScript buffers otherwise): nothing may change it once the next job has it. With
 * the wasm kernels and without, for the streams and for a file job.
 *
 * @param input Opens the input anew for each job.
 * @param slab The slab size.
 */
export async function failedJobsLeaveNextJobAlone(input: () => Input, slab: number): Promise<void> {
  for (const wasm of [true, false]) {
    setWasmKernelsEnabled(wasm);
    try {
      for (const [kind, fail] of Object.entries(failingJobs)) {
        if (kind === "file job" && input() instanceof Uint8Array) continue;
        const memory = new SlabMemory(slab, kind === "file job" ? FILE_JOB_RING_SLOTS : undefined);
        for (const config of [{}, { granularity: "per_tensor" }]) {
          for (const k of [0, 8]) {
            await assert.rejects(fail(input(), memory, slab, config, k), /disk full/);
            const changed = await memory.run(async (allocate) => {
              // The buffers the failed job had, in the order it took them, or the lease's regions in turn (each
              // at least a slab): the memory from each view's start, a slab and its padding long at most.
              const regions = Array.from({ length: 64 }, () => {
                const { buffer, byteOffset } = allocate(1);
                return new Uint8Array(buffer, byteOffset, Math.min(slab + 512, buffer.byteLength - byteOffset));
              });
              const before = regions.map((r) => r.slice());
              await new Promise((resolve) => setTimeout(resolve, 20));
              return regions.reduce((sum, r, i) => sum + changedWords(before[i], r), 0);
            });
            const what = `${kind}, wasm ${wasm}, ${JSON.stringify(config)}, failing after ${k} pieces`;
            assert.equal(changed, 0, what);
          }
        }
      }
    } finally {
      setWasmKernelsEnabled(true);
    }
  }
}

/** How many 4-byte words (and trailing bytes) differ between two snapshots of the same memory. */
function changedWords(before: Uint8Array, now: Uint8Array): number {
  const words = before.length >> 2;
  const a = new Int32Array(before.buffer, before.byteOffset, words);
  const b = new Int32Array(now.buffer.slice(now.byteOffset, now.byteOffset + 4 * words));
  let changed = 0;
  for (let i = 0; i < words; i++) if (a[i] !== b[i]) changed++;
  for (let i = 4 * words; i < before.length; i++) if (before[i] !== now[i]) changed++;
  return changed;
}
