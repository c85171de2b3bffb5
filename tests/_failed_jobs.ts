import assert from "node:assert/strict";
import type { ByteSource } from "../src/byte_source.ts";
import { PIPELINE_RING_SLOTS } from "../src/buffer_ring.ts";
import { SlabMemory } from "../streams/_slab_memory.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";

/**
 * Fails jobs on `input` with a sink failing after k chunks, each followed by a job that marks its buffers (the whole
 * lease, when the kernels lend one) and watches them: nothing may write into them once it has them.
 */
export async function failedJobsLeaveNextJobAlone(
  input: () => string | Uint8Array | (() => ByteSource),
  slab: number,
): Promise<void> {
  const memory = new SlabMemory(slab);
  const failingAfter = (k: number) => {
    let n = 0;
    return new WritableStream<Uint8Array>({
      write() {
        if (++n > k) throw new Error("disk full");
      },
    });
  };
  for (const config of [{}, { granularity: "per_tensor" as const }]) {
    for (const k of [0, 3, 8]) {
      await assert.rejects(
        memory.run(async (reuseBuffers) => {
          const job = await quantizeSafetensors(input(), { config, slabBytes: slab, reuseBuffers });
          await job.output.pipeTo(failingAfter(k));
        }),
        /disk full/,
      );
      const changed = await memory.run(async (allocate) => {
        const view = allocate((4 * PIPELINE_RING_SLOTS + 4) * (slab + 512) - 512);
        view.fill(0xa5);
        await new Promise((resolve) => setTimeout(resolve, 30));
        return view.filter((b) => b !== 0xa5).length;
      });
      assert.equal(changed, 0, `${JSON.stringify(config)}, sink failing after ${k} chunks`);
    }
  }
}
