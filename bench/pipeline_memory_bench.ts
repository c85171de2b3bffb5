/**
 * Issue 3's throughput, without the file system: the whole stream pipeline
 * (`quantizeSafetensors` on a checkpoint held in memory: slabs copied out of
 * it into the reused ring, per-channel stats, quantize, the inline error
 * report, then the Arrow IPC or safetensors encoder into a sink that drops
 * the bytes) against the bare kernel (`quantizeTensor` on each tensor into a
 * reused output, no report), in one process, on the same 4 x [4096, 4096]
 * float32 tensors (256 MiB), int8 per channel. Runs are interleaved, best
 * of N after a warmup; ratios are elements/s of pipeline over kernel.
 *
 * A third case drives the same stages as `quantizeFile` does for a
 * safetensors output (streams/_file_job.ts): as async generators, each piece
 * consumed before the next is made, with rings of 2 buffers instead of 8.
 *
 * bench/pipeline_bench.ts measures the same pipeline from a file to a file;
 * this one says how much of the gap to the kernel is the pipeline itself.
 *
 * ```sh
 * deno run -A bench/pipeline_memory_bench.ts [--rounds 5] [--js-kernels]
 * bun bench/pipeline_memory_bench.ts
 * ```
 *
 * Output: a line per measurement, then `RESULT {json}` lines.
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { encodeSafetensorsHeader } from "../src/safetensors_header.ts";
import { quantizeTensor } from "../src/quantize_tensor.ts";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";
import { memorySource } from "../src/byte_source.ts";
import { startFileJob } from "../streams/_file_job.ts";
import { FILE_JOB_RING_SLOTS } from "../src/buffer_ring.ts";
import { SlabMemory } from "../streams/_slab_memory.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { resolveConfig } from "../src/config.ts";
import { DEFAULT_SLAB_BYTES } from "../streams/safetensors_source.ts";
import { fillValues, tensorName } from "./make_checkpoint.ts";

const ROWS = 4096, COLS = 4096, TENSORS = 4;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string", default: "5" },
    "js-kernels": { type: "boolean", default: false },
  },
});
if (values["js-kernels"]) setWasmKernelsEnabled(false);
const rounds = Number(values.rounds);
const kernels = wasmKernels() ? "wasm" : "js";
const runtime = (globalThis as { Bun?: { version: string } }).Bun
  ? `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`;

// The checkpoint, in memory.
const tensors = Array.from({ length: TENSORS }, (_, t) => {
  const data = new Float32Array(ROWS * COLS);
  fillValues(t, COLS, 0, data);
  return { name: tensorName(t), dtype: "float32" as const, shape: [ROWS, COLS], data };
});
const header = encodeSafetensorsHeader(
  tensors.map((t) => ({ name: t.name, dtype: "F32", shape: t.shape, byteLength: t.data.byteLength })),
  {},
);
const file = new Uint8Array(header.length + TENSORS * ROWS * COLS * 4);
file.set(header);
tensors.forEach((t, i) => file.set(new Uint8Array(t.data.buffer), header.length + i * ROWS * COLS * 4));
const elements = TENSORS * ROWS * COLS;

const out = new Int8Array(ROWS * COLS);
function kernel(): number {
  let sum = 0;
  for (const t of tensors) {
    const r = quantizeTensor(t, {}, out);
    if (r.kind === "quantized") sum += r.data[123];
  }
  return sum;
}

// Slab rings lent by the wasm kernels' memory, so that the kernels work in place, as in quantizeFile.
const memory = new SlabMemory(DEFAULT_SLAB_BYTES);
const fileJobMemory = new SlabMemory(DEFAULT_SLAB_BYTES, FILE_JOB_RING_SLOTS);
function pipeline(format: "arrows" | "safetensors"): Promise<number> {
  return memory.run(async (reuseBuffers) => {
    const job = await quantizeSafetensors(file, { format, reuseBuffers });
    let bytes = 0;
    await job.output.pipeTo(new WritableStream({ write: (chunk) => void (bytes += chunk.byteLength) }));
    return bytes;
  });
}

function fileJob(): Promise<number> {
  return fileJobMemory.run(async (reuseBuffers) => {
    const job = await startFileJob(() => memorySource(file), { config: resolveConfig({}), reuseBuffers });
    let bytes = 0;
    for await (const piece of job.bytes) bytes += piece.byteLength;
    return bytes;
  });
}

const cases = {
  kernel: () => Promise.resolve(kernel()),
  "pipeline .arrows": () => pipeline("arrows"),
  "pipeline .safetensors": () => pipeline("safetensors"),
  "file job .safetensors": fileJob,
} as const;
type Case = keyof typeof cases;
const times = new Map<Case, number[]>(Object.keys(cases).map((c) => [c as Case, []]));
for (let round = -1; round < rounds; round++) {
  for (const [name, run] of Object.entries(cases) as [Case, () => Promise<number>][]) {
    const t0 = performance.now();
    await run();
    if (round >= 0) times.get(name)!.push(performance.now() - t0); // round -1 warms up
  }
}
const best = (c: Case) => Math.min(...times.get(c)!);
const rate = (c: Case) => elements / (best(c) / 1000);
for (const c of Object.keys(cases) as Case[]) {
  const ratio = c === "kernel" ? "" : `, ${(100 * rate(c) / rate("kernel")).toFixed(0)}% of the kernel's elements/s`;
  console.log(
    `${runtime} ${kernels}: ${c.padEnd(21)} best ${best(c).toFixed(0).padStart(4)} ms for 256 MiB, ${
      (rate(c) / 1e6).toFixed(0)
    } Melem/s${ratio}`,
  );
}
for (const c of Object.keys(cases) as Case[]) {
  console.log(
    `RESULT ${
      JSON.stringify({
        bench: "pipeline_memory",
        runtime,
        kernels,
        case: c,
        elements,
        rounds,
        bestMs: best(c),
        elementsPerSec: rate(c),
        ofKernel: rate(c) / rate("kernel"),
      })
    }`,
  );
}
