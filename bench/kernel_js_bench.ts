/**
 * Issue 2's benchmark: `quantizeTensor` (the plain JS kernels, whole tensor
 * in memory) on one float32 [4096, 4096] tensor, per-channel symmetric int8
 * and per-channel affine (`linear`) uint8. Variants are interleaved, timed
 * best-of-N after a warmup, results kept alive; throughput is elements/s and
 * GB/s of float32 input. When python3 with numpy is present,
 * `bench/numpy_quantize.py` runs the same two jobs on the same bytes as a
 * child process, its outputs are checked equal to ours, and the ratio
 * JS/numpy is printed.
 *
 * ```sh
 * deno run -A bench/kernel_js_bench.ts [--rounds 7] [--warmup 2] [--job NAME] [--no-numpy] [--no-wasm] [--keep]
 * bun bench/kernel_js_bench.ts
 * ```
 *
 * Output: a table, then one `RESULT {json}` line per job (the format
 * numpy_quantize.py prints too), which bench/run.ts collects.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";
import { quantizeTensor } from "../src/quantize_tensor.ts";
import type { QuantizeOptions, QuantizeResult } from "../src/types.ts";
import { fillValues } from "./make_checkpoint.ts";

/** One timed job, as printed on a `RESULT` line. */
export interface KernelResult {
  readonly bench: "kernel";
  /** `deno 2.9.6`, `bun 1.4.5`, `numpy 2.x`. */
  readonly runtime: string;
  readonly job: string;
  /**
   * `fresh`: a new output array per call (page-faulted in as it is written);
   * `reused`: one output array passed to every call, as the streaming pipeline
   * runs the kernel. numpy results have no such field.
   */
  readonly output?: "fresh" | "reused";
  /** Which kernels ran: the default WebAssembly SIMD ones, or the plain JavaScript ones (`--no-wasm`). */
  readonly kernels?: "wasm" | "js";
  readonly elements: number;
  readonly rounds: number;
  readonly bestMs: number;
  readonly medianMs: number;
  /** Elements per second at the best time. */
  readonly elementsPerSec: number;
  /** GB/s (1e9 bytes) of float32 input at the best time. */
  readonly gbPerSec: number;
  /** Order-sensitive checksums of the output, to compare implementations. */
  readonly checksum: { q: number; scaleBits: number; zeroPoint: number };
}

/** The two jobs of issue 2. */
export const JOBS: readonly { readonly name: string; readonly options: QuantizeOptions }[] = [
  {
    name: "int8_per_channel_symmetric",
    options: { mode: "linear_symmetric", dtype: "int8", granularity: "per_channel" },
  },
  { name: "uint8_per_channel_affine", options: { mode: "linear", dtype: "uint8", granularity: "per_channel" } },
];

export const ROWS = 4096;
export const COLS = 4096;

/** The runtime running this script. */
export function runtimeName(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  return `node ${process.versions.node}`;
}

/** The benchmark's fixed input: tensor 0 of make_checkpoint.ts at [4096, 4096]. */
export function kernelInput(): Float32Array {
  const data = new Float32Array(ROWS * COLS);
  fillValues(0, COLS, 0, data);
  return data;
}

/** sum(q[i] * (i % 251 + 1)): exact in float64 for 8-bit values and < 2^33 elements. */
function weightedSum(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * ((i % 251) + 1);
  return s;
}

function checksum(r: QuantizeResult): KernelResult["checksum"] {
  if (r.kind !== "quantized") throw new Error(`tensor was skipped: ${r.message}`);
  const scale = r.scale as Float32Array;
  let bits = 0;
  for (const b of new Uint32Array(scale.buffer, scale.byteOffset, scale.length)) bits += b;
  return { q: weightedSum(r.data), scaleBits: bits, zeroPoint: r.zeroPoint ? weightedSum(r.zeroPoint) : 0 };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Results stay reachable from here so that no work can be optimized away. */
export const keepAlive: unknown[] = [];

/**
 * Times every job on `data`: `warmup` untimed calls each, then `rounds`
 * rounds, each running every job once, in alternating order.
 *
 * @param data The [4096, 4096] float32 input.
 * @param rounds Timed calls per job.
 * @param warmup Untimed calls per job first.
 * @param jobs The jobs to run (default: both).
 * @returns One result per job.
 */
export function benchKernels(
  data: Float32Array,
  rounds: number,
  warmup: number,
  jobs: readonly (typeof JOBS)[number][] = JOBS,
): KernelResult[] {
  const tensor = { name: "bench.weight", dtype: "float32", shape: [ROWS, COLS], data } as const;
  // Every job twice: into a fresh array, and into one reused array.
  const variants = jobs.flatMap((job) =>
    (["fresh", "reused"] as const).map((output) => ({
      job,
      output,
      out: output === "fresh"
        ? undefined
        : job.options.dtype === "uint8"
        ? new Uint8Array(data.length)
        : new Int8Array(data.length),
    }))
  );
  const times = variants.map(() => [] as number[]);
  const sums = variants.map(() => undefined as KernelResult["checksum"] | undefined);
  for (let w = 0; w < warmup; w++) {
    variants.forEach((v, j) => {
      const r = quantizeTensor(tensor, v.job.options, v.out);
      sums[j] ??= checksum(r);
      keepAlive[j] = r;
    });
  }
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? [...variants.keys()].reverse() : [...variants.keys()];
    for (const j of order) {
      const t0 = performance.now();
      const r = quantizeTensor(tensor, variants[j].job.options, variants[j].out);
      times[j].push(performance.now() - t0);
      keepAlive[j] = r;
    }
  }
  const runtime = runtimeName();
  return variants.map((v, j) => {
    const bestMs = Math.min(...times[j]);
    const elements = data.length;
    return {
      bench: "kernel",
      runtime,
      job: v.job.name,
      output: v.output,
      kernels: wasmKernels() ? "wasm" : "js",
      elements,
      rounds,
      bestMs,
      medianMs: median(times[j]),
      elementsPerSec: elements / (bestMs / 1000),
      gbPerSec: (elements * 4) / (bestMs / 1000) / 1e9,
      checksum: sums[j] ?? checksum(keepAlive[j] as QuantizeResult),
    };
  });
}

/** Formats results as the table every kernel bench prints. */
export function formatKernelTable(results: readonly KernelResult[]): string {
  const lines = [
    `${"runtime".padEnd(14)} ${"kernels".padEnd(7)} ${"job".padEnd(28)} ${"output".padEnd(7)} ${
      "best ms".padStart(9)
    } ${"median ms".padStart(10)} ${"Melem/s".padStart(9)} ${"GB/s".padStart(6)}`,
  ];
  for (const r of results) {
    lines.push(
      `${r.runtime.padEnd(14)} ${(r.kernels ?? "").padEnd(7)} ${r.job.padEnd(28)} ${(r.output ?? "").padEnd(7)} ${
        r.bestMs.toFixed(1).padStart(9)
      } ${r.medianMs.toFixed(1).padStart(10)} ${(r.elementsPerSec / 1e6).toFixed(0).padStart(9)} ${
        r.gbPerSec.toFixed(2).padStart(6)
      }`,
    );
  }
  return lines.join("\n");
}

/** Parses the `RESULT {json}` lines of a bench's output. */
export function parseResults<T>(stdout: string): T[] {
  return stdout.split("\n").filter((l) => l.startsWith("RESULT ")).map((l) => JSON.parse(l.slice(7)) as T);
}

/** Whether `python3 -c "import numpy"` works. */
export function hasNumpy(): boolean {
  const r = spawnSync("python3", ["-c", "import numpy"], { stdio: "ignore" });
  return r.status === 0;
}

function main(): void {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      rounds: { type: "string", default: "7" },
      warmup: { type: "string", default: "2" },
      "no-numpy": { type: "boolean", default: false },
      // The plain JavaScript kernels, as where WebAssembly SIMD is unavailable.
      "no-wasm": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      job: { type: "string" },
    },
  });
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  if (values["no-wasm"]) setWasmKernelsEnabled(false);
  const data = kernelInput();
  // --job NAME runs one job alone: the kernel then sees one output type only (monomorphic).
  const jobs = values.job ? JOBS.filter((j) => j.name === values.job) : JOBS;
  if (jobs.length === 0) {
    throw new RangeError(`--job must be one of ${JOBS.map((j) => j.name).join(", ")}; got ${values.job}`);
  }
  const results = benchKernels(data, rounds, warmup, jobs);
  const rows: KernelResult[] = [...results];

  let numpy: KernelResult[] = [];
  if (!values["no-numpy"] && hasNumpy()) {
    const dir = join("bench", "data");
    mkdirSync(dir, { recursive: true });
    const input = join(dir, `kernel_input_${ROWS}x${COLS}.f32`);
    writeFileSync(input, new Uint8Array(data.buffer));
    try {
      const py = spawnSync(
        "python3",
        [
          "bench/numpy_quantize.py",
          input,
          ...(values.job ? ["--job", values.job] : []),
          "--rows",
          `${ROWS}`,
          "--cols",
          `${COLS}`,
          "--rounds",
          `${rounds}`,
          "--warmup",
          `${warmup}`,
        ],
        { encoding: "utf8", maxBuffer: 1 << 24 },
      );
      if (py.status !== 0) console.error(`numpy_quantize.py failed (${py.status}):\n${py.stderr}`);
      numpy = parseResults<KernelResult>(py.stdout);
      rows.push(...numpy);
    } finally {
      if (!values.keep) rmSync(input, { force: true });
    }
  } else if (!values["no-numpy"]) {
    console.log("(python3 with numpy not found: no numpy comparison)");
  }

  console.log(
    `quantizeTensor on float32 [${ROWS}, ${COLS}] (${
      (ROWS * COLS * 4 / 2 ** 20).toFixed(0)
    } MiB), best of ${rounds} after ${warmup} warmup`,
  );
  console.log(formatKernelTable(rows));
  for (const r of results) {
    const np = numpy.find((n) => n.job === r.job);
    if (!np) continue;
    const same = np.checksum.q === r.checksum.q && np.checksum.scaleBits === r.checksum.scaleBits &&
      np.checksum.zeroPoint === r.checksum.zeroPoint;
    console.log(
      `ratio ${r.runtime} ${r.kernels} kernels (${r.output} output) / ${np.runtime} ${r.job}: ${
        (r.gbPerSec / np.gbPerSec).toFixed(2)
      }x throughput ` +
        `(outputs ${same ? "identical" : `DIFFER: ${JSON.stringify(r.checksum)} vs ${JSON.stringify(np.checksum)}`})`,
    );
  }
  for (const r of rows) console.log(`RESULT ${JSON.stringify(r)}`);
}

if (import.meta.main) main();
