/**
 * Quantize kernels, JavaScript versus WebAssembly SIMD: a float32
 * [4096, 4096] weight, per channel, `linear_symmetric` int8 (a min/max pass,
 * then a quantize pass; or both in one pass, with the report's error sums, as
 * file jobs run them), one thread.
 *
 *     deno run -A bench/kernel_bench.ts
 *     bun bench/kernel_bench.ts
 *
 * Variants run interleaved, round after round; each reports the best and
 * the median round as GB/s of float32 input (1 GB = 1e9 bytes) and
 * elements/s. The machine is shared and noisy: compare ratios within a run.
 *
 * @module
 */
import { quantizeTensor } from "../mod.ts";
import { BlockLayout } from "../src/block_layout.ts";
import { BlockRange } from "../src/block_range.ts";
import { computeBlockParams } from "../src/qparams.ts";
import { type KernelParams, quantizeValues } from "../src/quantize_kernel.ts";
import { quantRange } from "../src/ranges.ts";
import { createWasmKernels, setWasmKernelsEnabled } from "../src/wasm_kernels.ts";

const ROWS = 4096;
const COLS = 4096;
const N = ROWS * COLS;
const BYTES = 4 * N;
const ROUNDS = Number(
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.ROUNDS ?? 7,
);
const runtime = "Bun" in globalThis
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "unknown runtime";

// The JavaScript variants must stay JavaScript even once the core dispatches to wasm.
setWasmKernelsEnabled(false);

// Fixed input: a smooth-ish random weight (xorshift), per-row scales differ.
const data = new Float32Array(N);
let seed = 0x9e3779b9;
for (let i = 0; i < N; i++) {
  seed ^= seed << 13, seed ^= seed >>> 17, seed ^= seed << 5;
  data[i] = ((seed >>> 0) / 4294967296 - 0.5) * (1 + (i >>> 12) % 7);
}
const layout = new BlockLayout([ROWS, COLS], [1, 0]);
const range = quantRange("int8", "linear_symmetric");

function kernelParams(mins: Float64Array, maxs: Float64Array): KernelParams {
  const p = computeBlockParams(mins, maxs, "linear_symmetric", range, "float32", "w");
  return {
    inverseScale: p.scale.map((s) => 1 / s),
    zeroPoint: p.zeroPoint,
    qmin: range.qmin,
    qmax: range.qmax,
    arithmetic: "float32",
  };
}

const k = createWasmKernels({ capacity: N });
if (!k) throw new Error("WebAssembly SIMD is not available");
const pool = k.input(N);
pool.set(data);
const out = new Int8Array(N);
let sink = 0; // results kept alive
const params = kernelParams(...(() => {
  const r = new BlockRange(layout);
  r.observe(data, 0);
  return [r.mins, r.maxs] as const;
})());

interface Variant {
  name: string;
  run: () => void;
  times: number[];
}

const variants: Variant[] = [
  {
    name: "JS quantizeTensor (public API, allocates output)",
    run: () => {
      const q = quantizeTensor({ name: "w", dtype: "float32", shape: [ROWS, COLS], data });
      if (q.kind !== "quantized") throw new Error(q.message);
      sink += q.data[12345];
    },
  },
  {
    name: "wasm quantizeTensor (public API, allocates output)",
    run: () => {
      setWasmKernelsEnabled(true);
      const q = quantizeTensor({ name: "w", dtype: "float32", shape: [ROWS, COLS], data });
      setWasmKernelsEnabled(false);
      if (q.kind !== "quantized") throw new Error(q.message);
      sink += q.data[12345];
    },
  },
  {
    name: "JS BlockRange.observe + quantizeValues",
    run: () => {
      const r = new BlockRange(layout);
      r.observe(data, 0);
      quantizeValues(data, 0, layout, kernelParams(r.mins, r.maxs), out);
      sink += out[12345];
    },
  },
  {
    name: "JS quantizeValues only",
    run: () => {
      quantizeValues(data, 0, layout, params, out);
      sink += out[12345];
    },
  },
  {
    name: "wasm observe + quantize, JS arrays (staged)",
    run: () => {
      const mins = new Float64Array(ROWS).fill(Infinity);
      const maxs = new Float64Array(ROWS).fill(-Infinity);
      k.observe(data, 0, layout, mins, maxs);
      if (!k.quantize(data, 0, layout, kernelParams(mins, maxs), out)) throw new Error("refused");
      sink += out[12345];
    },
  },
  {
    name: "wasm observe + quantize, in place (pools)",
    run: () => {
      const mins = new Float64Array(ROWS).fill(Infinity);
      const maxs = new Float64Array(ROWS).fill(-Infinity);
      k.observe(pool, 0, layout, mins, maxs);
      const o = k.outputInt8(N);
      if (!k.quantize(pool, 0, layout, kernelParams(mins, maxs), o)) throw new Error("refused");
      sink += o[12345];
    },
  },
  {
    name: "wasm one pass, in place (pools)",
    run: () => {
      const o = k.outputInt8(N);
      if (!k.observeQuantize(pool, ROWS, COLS, "linear_symmetric", range, o)) throw new Error("refused");
      sink += o[12345];
    },
  },
  {
    name: "wasm one pass with error sums, in place (pools)",
    run: () => {
      const sums = new Float64Array(3);
      const o = k.outputInt8(N);
      if (!k.observeQuantize(pool, ROWS, COLS, "linear_symmetric", range, o, sums)) throw new Error("refused");
      sink += o[12345];
    },
  },
  {
    name: "wasm quantize only, in place (pools)",
    run: () => {
      const o = k.outputInt8(N);
      if (!k.quantize(pool, 0, layout, params, o)) throw new Error("refused");
      sink += o[12345];
    },
  },
  {
    name: "wasm observe only, in place (pools)",
    run: () => {
      const mins = new Float64Array(ROWS).fill(Infinity);
      const maxs = new Float64Array(ROWS).fill(-Infinity);
      k.observe(pool, 0, layout, mins, maxs);
      sink += mins[7];
    },
  },
].map((v) => ({ ...v, times: [] }));

// The variants must agree before they are timed.
{
  const js = quantizeTensor({ name: "w", dtype: "float32", shape: [ROWS, COLS], data });
  if (js.kind !== "quantized") throw new Error(js.message);
  for (const sums of [new Float64Array(3), undefined]) {
    const o = k.outputInt8(N);
    if (!k.observeQuantize(pool, ROWS, COLS, "linear_symmetric", range, o, sums)) throw new Error("refused");
    for (let i = 0; i < N; i++) if (o[i] !== js.data[i]) throw new Error(`one pass and JS differ at element ${i}`);
  }
}
{
  const js = quantizeTensor({ name: "w", dtype: "float32", shape: [ROWS, COLS], data });
  if (js.kind !== "quantized") throw new Error(js.message);
  const o = k.outputInt8(N);
  if (!k.quantize(pool, 0, layout, params, o)) throw new Error("refused");
  for (let i = 0; i < N; i++) if (o[i] !== js.data[i]) throw new Error(`wasm and JS differ at element ${i}`);
}

for (const v of variants) v.run(); // warm up
for (let round = 0; round < ROUNDS; round++) {
  for (const v of variants) {
    const t0 = performance.now();
    v.run();
    v.times.push(performance.now() - t0);
  }
}

const fmt = (x: number, d = 2): string => x.toFixed(d);
console.log(
  `${runtime}: float32 [${ROWS}, ${COLS}] per-channel linear_symmetric int8, ${ROUNDS} rounds (best / median)`,
);
const rows: [string, number][] = [];
for (const v of variants) {
  const sorted = [...v.times].sort((a, b) => a - b);
  const best = sorted[0];
  const median = sorted[sorted.length >> 1];
  rows.push([v.name, best]);
  console.log(
    `  ${v.name.padEnd(52)} ${fmt(best, 1).padStart(7)} ms / ${fmt(median, 1).padStart(7)} ms` +
      `  ${fmt(BYTES / best / 1e6).padStart(6)} / ${fmt(BYTES / median / 1e6).padStart(6)} GB/s` +
      `  ${fmt(N / best / 1e3, 0).padStart(5)} M elements/s (best)`,
  );
}
const best = (name: string): number => rows.find(([n]) => n.startsWith(name))![1];
console.log(
  `  ratios (best): two passes wasm in place / JS kernels ${
    fmt(best("JS BlockRange") / best("wasm observe + quantize, in place"), 1)
  }x,` +
    ` wasm staged / JS kernels ${fmt(best("JS BlockRange") / best("wasm observe + quantize, JS"), 1)}x,` +
    ` quantize pass wasm / JS ${fmt(best("JS quantizeValues only") / best("wasm quantize only"), 1)}x` +
    ` (sink ${sink & 1})`,
);
