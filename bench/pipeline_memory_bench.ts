/**
 * Issue 3's throughput, without the file system: the whole stream pipeline
 * (`quantizeSafetensors` on a checkpoint held in memory: slabs copied out of
 * it into the reused ring, per-channel stats, quantize, the inline error
 * report, then the Arrow IPC or safetensors encoder into a sink that drops
 * the bytes) against the bare kernel, in one process, on the same
 * 4 x [4096, 4096] float32 tensors (256 MiB), int8 per channel. Runs are
 * interleaved, best of N after a warmup; ratios are elements/s of pipeline
 * over kernel.
 *
 * Each pipeline is measured twice, like for like:
 * - with its report's error stats (the default), against the bare kernel
 *   computing the same error sums in the same pass (`BlockQuantizer` on the
 *   whole tensor with an `ErrorStats`), the "kernel + error stats" case;
 * - with `errorStats: false`, against `quantizeTensor` into a reused output,
 *   which computes no error (the "kernel" case).
 *
 * A third pipeline drives the same stages as `quantizeFile` does for a
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
 * Output: a line per measurement, then `RESULT {json}` lines (`ofReference`: elements/s over the reference's).
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { encodeSafetensorsHeader } from "../src/safetensors_header.ts";
import { quantizeTensor } from "../src/quantize_tensor.ts";
import { BlockQuantizer } from "../src/block_quantizer.ts";
import { ErrorStats } from "../src/error_stats.ts";
import { planTensor } from "../src/tensor_plan.ts";
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

// The kernel the pipeline runs by default: quantize and sum the report's errors in the same pass.
const plans = tensors.map((t) => planTensor(t, {}));
function kernelWithErrors(): number {
  let sum = 0;
  tensors.forEach((t, i) => {
    const plan = plans[i];
    if (plan.kind === "skipped") throw new Error(`${t.name} is not quantized: ${plan.message}`);
    const { kind: _, ...info } = plan;
    const errors = new ErrorStats();
    new BlockQuantizer(info).observeAndQuantize(t.data, out, errors, 0);
    sum += errors.snrDb;
  });
  return sum;
}

// Slab rings lent by the wasm kernels' memory, so that the kernels work in place, as in quantizeFile.
const memory = new SlabMemory(DEFAULT_SLAB_BYTES);
const fileJobMemory = new SlabMemory(DEFAULT_SLAB_BYTES, FILE_JOB_RING_SLOTS);
function pipeline(format: "arrows" | "safetensors", errorStats: boolean): Promise<number> {
  return memory.run(async (reuseBuffers) => {
    const job = await quantizeSafetensors(file, { format, reuseBuffers, errorStats });
    let bytes = 0;
    await job.output.pipeTo(new WritableStream({ write: (chunk) => void (bytes += chunk.byteLength) }));
    return bytes;
  });
}

function fileJob(errorStats: boolean): Promise<number> {
  return fileJobMemory.run(async (reuseBuffers) => {
    const job = await startFileJob(() => memorySource(file), { config: resolveConfig({}), reuseBuffers, errorStats });
    let bytes = 0;
    for await (const piece of job.bytes) bytes += piece.byteLength;
    return bytes;
  });
}

const NO_STATS = " (no error stats)";
const cases = {
  kernel: () => Promise.resolve(kernel()),
  "kernel + error stats": () => Promise.resolve(kernelWithErrors()),
  "pipeline .arrows": () => pipeline("arrows", true),
  "pipeline .safetensors": () => pipeline("safetensors", true),
  "file job .safetensors": () => fileJob(true),
  [`pipeline .arrows${NO_STATS}`]: () => pipeline("arrows", false),
  [`pipeline .safetensors${NO_STATS}`]: () => pipeline("safetensors", false),
  [`file job .safetensors${NO_STATS}`]: () => fileJob(false),
} as const;
type Case = keyof typeof cases;
/** What a case is measured against: the kernel doing the same arithmetic. */
function referenceOf(c: Case): Case | undefined {
  if (c === "kernel" || c === "kernel + error stats") return undefined;
  return c.endsWith(NO_STATS) ? "kernel" : "kernel + error stats";
}
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
  const reference = referenceOf(c);
  const ratio = reference ? `, ${(100 * rate(c) / rate(reference)).toFixed(0)}% of ${reference}` : "";
  console.log(
    `${runtime} ${kernels}: ${c.padEnd(39)} best ${best(c).toFixed(0).padStart(4)} ms for 256 MiB, ${
      (rate(c) / 1e6).toFixed(0)
    } Melem/s${ratio}`,
  );
}
for (const c of Object.keys(cases) as Case[]) {
  const reference = referenceOf(c);
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
        ...(reference ? { reference, ofReference: rate(c) / rate(reference), ofKernel: rate(c) / rate("kernel") } : {}),
      })
    }`,
  );
}
