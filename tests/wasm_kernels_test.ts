import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { BlockLayout } from "../src/block_layout.ts";
import { BlockRange } from "../src/block_range.ts";
import { ErrorStats } from "../src/error_stats.ts";
import { decodeBfloat16, decodeFloat16, f16round } from "../src/float16.ts";
import { packInt4 } from "../src/pack.ts";
import { computeBlockParams } from "../src/qparams.ts";
import type { ArithmeticType } from "../src/qparams.ts";
import { type KernelParams, quantizeValues } from "../src/quantize_kernel.ts";
import { isSigned, quantRange } from "../src/ranges.ts";
import type { QuantDType, QuantMode } from "../src/types.ts";
import { createWasmKernels, setWasmKernelsEnabled, type WasmKernels } from "../src/wasm_kernels.ts";
import { rng } from "./_reference.ts";

// The references must be the JavaScript kernels even once they dispatch to wasm.
before(() => setWasmKernelsEnabled(false));
after(() => setWasmKernelsEnabled(true));

const MODES: readonly QuantMode[] = ["linear", "linear_symmetric"];
const DTYPES: readonly QuantDType[] = ["int8", "uint8", "int4", "uint4"];
const ARITHMETIC: readonly ArithmeticType[] = ["float32", "float16"];

function kernels(options = {}): WasmKernels {
  const k = createWasmKernels(options);
  assert.ok(k, "WebAssembly SIMD is available in Deno and Bun");
  return k;
}

/** Layouts covering every kernel path: runs, per-column rows, blocked rows. */
const LAYOUTS: readonly { name: string; shape: number[]; blocks: number[] }[] = [
  { name: "per channel, axis 0", shape: [24, 77], blocks: [1, 0] },
  { name: "per tensor", shape: [13, 61], blocks: [0, 0] },
  { name: "per block 32", shape: [12, 128], blocks: [1, 32] },
  { name: "per block 3 (runs shorter than a vector)", shape: [10, 21], blocks: [1, 3] },
  { name: "per channel, last axis", shape: [19, 45], blocks: [0, 1] },
  { name: "per block, channel last", shape: [16, 37], blocks: [4, 1] },
  { name: "blocked rows", shape: [6, 40], blocks: [3, 8] },
  { name: "rank 3, middle axis", shape: [3, 5, 18], blocks: [0, 1, 0] },
];

type Gen = (r: () => number, i: number) => number;

/** Value families: smooth, tie-heavy, wide-range, subnormal, mixed signs of zero. */
const VALUES: readonly { name: string; gen: Gen }[] = [
  { name: "normal", gen: (r) => (r() + r() + r() - 1.5) * 2 },
  { name: "ties", gen: (r) => (Math.floor(r() * 512) - 256) / 2 }, // multiples of 0.5
  { name: "quarter ties", gen: (r) => (Math.floor(r() * 2048) - 1024) / 8 },
  { name: "wide", gen: (r) => (r() - 0.5) * 2 ** Math.floor(r() * 60 - 30) },
  { name: "subnormal", gen: (r) => (r() - 0.5) * 2 ** -140 },
  { name: "zeros", gen: (r) => (r() < 0.5 ? 0 : -0) * (r() < 0.9 ? 1 : 0) + (r() < 0.05 ? r() - 0.5 : 0) },
];

function fill(n: number, gen: Gen, seed: number, arithmetic: ArithmeticType): Float32Array {
  const r = rng(seed);
  const round = arithmetic === "float16" ? f16round : Math.fround;
  return Float32Array.from({ length: n }, (_, i) => round(gen(r, i)));
}

/** Kernel parameters as BlockQuantizer computes them from the observed ranges. */
function paramsFor(
  values: Float32Array,
  layout: BlockLayout,
  mode: QuantMode,
  dtype: QuantDType,
  arithmetic: ArithmeticType,
): KernelParams {
  const range = new BlockRange(layout);
  range.observe(values, 0);
  const q = quantRange(dtype, mode);
  const p = computeBlockParams(range.mins, range.maxs, mode, q, arithmetic, "t");
  return { inverseScale: p.scale.map((s) => 1 / s), zeroPoint: p.zeroPoint, qmin: q.qmin, qmax: q.qmax, arithmetic };
}

function reference(values: Float32Array, offset: number, layout: BlockLayout, params: KernelParams, signed: boolean) {
  const out = signed ? new Int8Array(values.length) : new Uint8Array(values.length);
  quantizeValues(values, offset, layout, params, out);
  return out;
}

function bytes(a: Int8Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.length);
}

/**
 * Quantizes with the wasm kernels in slabs cut at `cuts`, the input staged from JS memory; with
 * `errorSums`, contiguous layouts in float32 arithmetic take the fused kernel (`quantize_contig_err`).
 */
function viaWasm(
  k: WasmKernels,
  values: Float32Array,
  layout: BlockLayout,
  params: KernelParams,
  signed: boolean,
  cuts: number[],
  errorSums?: Float64Array,
): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(values.length) : new Uint8Array(values.length);
  let from = 0;
  for (const to of [...cuts, values.length]) {
    assert.ok(k.quantize(values.subarray(from, to), from, layout, params, out.subarray(from, to), errorSums));
    from = to;
  }
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  const i = a.findIndex((x, j) => x !== b[j]);
  return i < 0 ? "none" : `element ${i}: ${a[i]} vs ${b[i]}`;
}

/**
 * Every mode and dtype over each layout, value family and arithmetic: the values (seeds from `firstSeed` on, one per
 * layout, family and arithmetic) and their parameters. Float16 overflow in linear mode, an error before any kernel
 * runs, is left out.
 */
function* quantizeCases(specs: typeof LAYOUTS, firstSeed: number) {
  let seed = firstSeed;
  for (const spec of specs) {
    const layout = new BlockLayout(spec.shape, spec.blocks);
    for (const family of VALUES) {
      for (const arithmetic of ARITHMETIC) {
        const values = fill(layout.size, family.gen, seed++, arithmetic);
        for (const mode of MODES) {
          for (const dtype of DTYPES) {
            let params: KernelParams;
            try {
              params = paramsFor(values, layout, mode, dtype, arithmetic);
            } catch {
              continue;
            }
            const label = `${spec.name} / ${family.name} / ${arithmetic} / ${mode} / ${dtype}`;
            yield { layout, values, arithmetic, dtype, params, signed: isSigned(dtype), label };
          }
        }
      }
    }
  }
}

test("quantize matches the JavaScript kernel for every mode, dtype, arithmetic, layout and value family", () => {
  const k = kernels();
  let cases = 0;
  for (const { layout, values, dtype, params, signed, label } of quantizeCases(LAYOUTS, 1)) {
    const want = reference(values, 0, layout, params, signed);
    const cuts = [7, 100, Math.floor(layout.size / 2) + 3].filter((c) => c < layout.size);
    const got = viaWasm(k, values, layout, params, signed, cuts);
    assert.deepEqual(
      bytes(got),
      bytes(want),
      `${label}: first difference at ${firstDifference(bytes(got), bytes(want))}`,
    );
    if (dtype === "int4" || dtype === "uint4") {
      const kOut = k.output(got.length);
      kOut.set(bytes(got));
      assert.deepEqual(k.pack4(got.length), packInt4(want), `${label}: packing`);
    }
    cases++;
  }
  assert.ok(cases > 700, `${cases} cases`);
});

test("quantize matches at exact ties for power-of-two and odd scales, halves going to the even neighbour", () => {
  const k = kernels();
  const layout = new BlockLayout([1, 4096], [1, 0]);
  for (const arithmetic of ARITHMETIC) {
    for (const s of [1, 0.5, 2 ** -10, 2 ** 7, 3, 0.1, 1 / 3, 0.007874015718698502, 6.103515625e-5]) {
      const scale = arithmetic === "float16" ? f16round(s) : Math.fround(s);
      const round = arithmetic === "float16" ? f16round : Math.fround;
      // Values at and next to (k + 0.5) * scale for k in [-300, 300].
      const values = Float32Array.from({ length: 4096 }, (_, i) => {
        const j = (i % 1204) - 602;
        const tie = round((j / 2) * scale);
        const step = i % 3 === 0 ? 0 : i % 3 === 1 ? 1 : -1;
        const bits = new Float32Array([tie]);
        const u = new Int32Array(bits.buffer);
        u[0] += step * (arithmetic === "float16" ? 0x2000 : 1);
        return tie === 0 ? 0 : bits[0];
      });
      for (
        const [qmin, qmax, zp] of [[-127, 127, 0], [-128, 127, -3], [0, 255, 128], [0, 254, 127], [-8, 7, 1], [
          0,
          15,
          7,
        ]]
      ) {
        const params: KernelParams = {
          inverseScale: new Float64Array([1 / scale]),
          zeroPoint: new Int32Array([zp]),
          qmin,
          qmax,
          arithmetic,
        };
        const signed = qmin < 0;
        const want = reference(values, 0, layout, params, signed);
        for (const sums of [undefined, new Float64Array(3)]) {
          const got = viaWasm(k, values, layout, params, signed, [1, 17, 2000], sums);
          const label = `${arithmetic} scale ${scale} [${qmin}, ${qmax}] zp ${zp}${sums ? " with error sums" : ""}`;
          assert.deepEqual(bytes(got), bytes(want), label);
        }
      }
    }
  }
});

test("quantize matches for huge, tiny and subnormal scales, infinities and NaN", () => {
  const k = kernels();
  const layout = new BlockLayout([8, 64], [1, 0]);
  const r = rng(99);
  const specials = [
    0,
    -0,
    Infinity,
    -Infinity,
    NaN,
    3.4e38,
    -3.4e38,
    2 ** -149,
    -(2 ** -149),
    1e-40,
    2 ** 22,
    -(2 ** 22),
    2 ** 22 + 0.5,
  ];
  const values = Float32Array.from(
    { length: 512 },
    (_, i) => i < specials.length * 4 ? specials[i % specials.length] : (r() - 0.5) * 2 ** Math.floor(r() * 280 - 140),
  );
  const scales = [2 ** -149, 1e-45, 1e-38, 1e-30, 1e-7, 1, 1e7, 1e30, 3.4e38, 2 ** 127];
  const params: KernelParams = {
    inverseScale: Float64Array.from(scales.slice(0, 8), (s) => 1 / Math.fround(s)),
    zeroPoint: Int32Array.from([0, -128, 127, 5, -5, 0, 100, -100]),
    qmin: -128,
    qmax: 127,
    arithmetic: "float32",
  };
  for (const sums of [undefined, new Float64Array(3)]) {
    assert.deepEqual(
      bytes(viaWasm(k, values, layout, params, true, [3, 200], sums)),
      bytes(reference(values, 0, layout, params, true)),
      sums ? "with error sums" : "without error sums",
    );
  }
  const f16Values = values.map((x) => f16round(x));
  const f16Params: KernelParams = {
    ...params,
    inverseScale: Float64Array.from([2 ** -24, 6e-8, 1e-4, 0.5, 1, 3, 1000, 65504], (s) => 1 / f16round(s)),
    qmin: 0,
    qmax: 255,
    zeroPoint: Int32Array.from([0, 128, 255, 5, 7, 0, 100, 200]),
    arithmetic: "float16",
  };
  assert.deepEqual(
    bytes(viaWasm(k, f16Values, layout, f16Params, false, [100])),
    bytes(reference(f16Values, 0, layout, f16Params, false)),
  );
});

test("float16 arithmetic matches for every finite float16 value over many float16 scales", () => {
  const k = kernels({ capacity: 65536 });
  const all = decodeFloat16(Uint16Array.from({ length: 65536 }, (_, i) => i), new Float32Array(65536));
  const values = all.filter((x) => Number.isFinite(x));
  const n = values.length;
  const input = k.input(n);
  input.set(values);
  const layout = new BlockLayout([n], [0]);
  const r = rng(1234);
  const scales = [2 ** -24, 2 ** -14, 1e-3, 0.0078125, 1 / 3, 1, 1.5, 3, 7, 255 / 127, 1000, 65504];
  for (let i = 0; i < 24; i++) scales.push(2 ** Math.floor(r() * 30 - 20) * (1 + r()));
  for (const s of scales) {
    const scale = f16round(s);
    for (const [qmin, qmax, zp] of [[-127, 127, 0], [-128, 127, 17], [0, 255, 201], [-8, 7, -2], [0, 14, 7]]) {
      const params: KernelParams = {
        inverseScale: new Float64Array([1 / scale]),
        zeroPoint: new Int32Array([zp]),
        qmin,
        qmax,
        arithmetic: "float16",
      };
      const want = reference(values, 0, layout, params, qmin < 0);
      assert.ok(k.quantize(input, 0, layout, params, k.output(n)));
      assert.deepEqual(k.output(n), bytes(want), `scale ${scale} [${qmin}, ${qmax}] zp ${zp}`);
    }
  }
});

test("quantize works in place on the pools and across the staging size", () => {
  const k = kernels({ capacity: 200_000 });
  for (
    const spec of [{ shape: [100, 1500], blocks: [1, 0] }, { shape: [150, 1000], blocks: [0, 1] }, {
      shape: [600, 250],
      blocks: [8, 1],
    }]
  ) {
    const layout = new BlockLayout(spec.shape, spec.blocks);
    const values = fill(layout.size, VALUES[0].gen, 7, "float32");
    const params = paramsFor(values, layout, "linear", "int8", "float32");
    const want = reference(values, 0, layout, params, true);
    // Staged (the values live in JS memory, longer than one staging buffer).
    assert.deepEqual(bytes(viaWasm(k, values, layout, params, true, [])), bytes(want));
    // In place: input and output pools.
    const input = k.input(layout.size);
    input.set(values);
    assert.ok(k.quantize(input, 0, layout, params, k.outputInt8(layout.size)));
    assert.deepEqual(k.output(layout.size), bytes(want));
    // In place, slab by slab at odd offsets.
    const cut = 77_777;
    k.input(layout.size).set(values);
    k.output(layout.size).fill(0);
    assert.ok(k.quantize(k.input(cut), 0, layout, params, k.output(cut)));
    assert.ok(k.quantize(k.input(layout.size).subarray(cut), cut, layout, params, k.output(layout.size).subarray(cut)));
    assert.deepEqual(k.output(layout.size), bytes(want));
  }
});

test("quantize refuses what it cannot reproduce, so the caller stays in JavaScript", () => {
  const k = kernels();
  const layout = new BlockLayout([2, 32], [1, 0]);
  const values = fill(64, VALUES[0].gen, 3, "float32"); // not float16 values
  const f16: KernelParams = {
    inverseScale: new Float64Array([1 / 0.125, 1 / 0.25]),
    zeroPoint: new Int32Array(2),
    qmin: -127,
    qmax: 127,
    arithmetic: "float16",
  };
  assert.equal(k.quantize(values, 0, layout, f16, new Int8Array(64)), false);
  // The caller redoes the error sums with the bytes: a refusal must not have added them already.
  const sums = new Float64Array([1, 2, 3]);
  assert.equal(k.quantize(values, 0, layout, f16, new Int8Array(64), sums), false);
  assert.deepEqual([...sums], [1, 2, 3]);
  const odd: KernelParams = { ...f16, inverseScale: new Float64Array([10, 1 / 0.1]), arithmetic: "float32" };
  assert.equal(k.quantize(values, 0, layout, odd, new Int8Array(64)), false, "1/10 is no float32's inverse");
  assert.throws(() => k.quantizeRun(4, 0.1, 0, -127, 127, "float16"), RangeError);
});

test("quantizeRun quantizes one block of the input pool", () => {
  const k = kernels({ capacity: 8 });
  k.input(5).set([127, 2.5, -2.5, 3.5, 0.5]);
  assert.deepEqual([...k.quantizeRun(5, 1, 0, -127, 127, "float32")], [127, 2, 254, 4, 0]);
  k.input(2).set([-2, 2]);
  assert.deepEqual([...k.quantizeRun(2, Math.fround(4 / 254), 127, 0, 254, "float32")], [0, 254]);
  assert.throws(() => k.input(9), RangeError);
});

/** Element-wise identity including the sign of zero. */
function sameFloats(a: Float64Array, b: Float64Array, label: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      assert.fail(`${label}: block ${i}: ${Object.is(a[i], -0) ? "-0" : a[i]} vs ${Object.is(b[i], -0) ? "-0" : b[i]}`);
    }
  }
}

test("observe matches BlockRange.observe, signs of zero and first non-finite index included", () => {
  const k = kernels({ capacity: 4096 });
  let seed = 500;
  const extra: readonly { name: string; gen: Gen }[] = [
    ...VALUES,
    { name: "nan", gen: (r) => (r() < 0.01 ? NaN : r() - 0.5) },
    { name: "inf", gen: (r) => (r() < 0.01 ? (r() < 0.5 ? Infinity : -Infinity) : r() - 0.5) },
    { name: "zeros then positives", gen: (r, i) => (i % 97 < 40 ? (r() < 0.5 ? -0 : 0) : r()) },
    { name: "zeros then negatives", gen: (r, i) => (i % 97 < 40 ? (r() < 0.5 ? -0 : 0) : -r()) },
  ];
  for (
    const spec of [...LAYOUTS, { name: "long rows", shape: [4, 3000], blocks: [1, 0] }, {
      name: "long columns",
      shape: [3, 3000],
      blocks: [0, 1],
    }]
  ) {
    const layout = new BlockLayout(spec.shape, spec.blocks);
    for (const family of extra) {
      const values = fill(layout.size, family.gen, seed++, "float32");
      for (const cuts of [[], [1, 5, 33, 200], [Math.floor(layout.size / 3), Math.floor(layout.size / 3) + 1]]) {
        const js = new BlockRange(layout);
        const mins = new Float64Array(layout.blockCount).fill(Infinity);
        const maxs = new Float64Array(layout.blockCount).fill(-Infinity);
        let from = 0;
        for (const to of [...cuts.filter((c) => c < layout.size), layout.size]) {
          const slab = values.subarray(from, to);
          assert.equal(
            k.observe(slab, from, layout, mins, maxs),
            js.observe(slab, from),
            `${spec.name} / ${family.name}: index`,
          );
          from = to;
        }
        sameFloats(mins, js.mins, `${spec.name} / ${family.name} mins`);
        sameFloats(maxs, js.maxs, `${spec.name} / ${family.name} maxs`);
      }
    }
  }
});

test("observe works in place on the input pool and across the staging size", () => {
  const k = kernels({ capacity: 300_000 });
  for (
    const spec of [{ shape: [100, 3000], blocks: [1, 0] }, { shape: [300, 1000], blocks: [0, 1] }, {
      shape: [1000, 300],
      blocks: [10, 1],
    }]
  ) {
    const layout = new BlockLayout(spec.shape, spec.blocks);
    const values = fill(layout.size, VALUES[5].gen, 11, "float32");
    values[123_456] = -Infinity;
    const js = new BlockRange(layout);
    const want = js.observe(values, 0);
    const mins = new Float64Array(layout.blockCount).fill(Infinity);
    const maxs = new Float64Array(layout.blockCount).fill(-Infinity);
    assert.equal(k.observe(values, 0, layout, mins, maxs), want);
    sameFloats(mins, js.mins, "staged mins");
    sameFloats(maxs, js.maxs, "staged maxs");
    mins.fill(Infinity);
    maxs.fill(-Infinity);
    k.input(layout.size).set(values);
    assert.equal(k.observe(k.input(layout.size), 0, layout, mins, maxs), want);
    sameFloats(mins, js.mins, "in-place mins");
    sameFloats(maxs, js.maxs, "in-place maxs");
  }
});

test("minMaxRun folds the input pool like one block of BlockRange", () => {
  const k = kernels({ capacity: 1000 });
  const values = fill(1000, VALUES[0].gen, 5, "float32");
  const range = new Float64Array([Infinity, -Infinity]);
  k.input(1000).set(values);
  assert.equal(k.minMaxRun(1000, range), true);
  const js = new BlockRange(new BlockLayout([1000], [0]));
  js.observe(values, 0);
  assert.deepEqual([...range], [js.mins[0], js.maxs[0]]);
  k.input(3).set([1, NaN, -1]);
  assert.equal(k.minMaxRun(3, range), false);
});

test("decodeFloat16 matches the JavaScript decoder on all 65536 bit patterns", () => {
  const k = kernels({ capacity: 65536 + 5 });
  const bits = Uint16Array.from({ length: 65536 + 5 }, (_, i) => i & 0xffff);
  k.inputBits(bits.length).set(bits);
  const got = k.decodeFloat16(bits.length);
  const want = decodeFloat16(bits, new Float32Array(bits.length));
  assert.deepEqual(new Uint32Array(got.slice().buffer), new Uint32Array(want.buffer));
  for (const n of [0, 1, 7, 9, 15]) {
    k.inputBits(n).set(bits.subarray(0x3c00, 0x3c00 + n));
    assert.deepEqual([...k.decodeFloat16(n)], [
      ...decodeFloat16(bits.subarray(0x3c00, 0x3c00 + n), new Float32Array(n)),
    ]);
  }
});

test("decodeBfloat16 matches the JavaScript decoder on all 65536 bit patterns", () => {
  const k = kernels({ capacity: 65536 + 3 });
  const bits = Uint16Array.from({ length: 65536 + 3 }, (_, i) => (i * 40503) & 0xffff);
  k.inputBits(bits.length).set(bits);
  const got = k.decodeBfloat16(bits.length);
  const want = decodeBfloat16(bits, new Float32Array(bits.length));
  assert.deepEqual(new Uint32Array(got.slice().buffer), new Uint32Array(want.buffer));
});

test("decode works on any views of the kernels' memory, as the JavaScript decoders, and declines others", () => {
  const k = kernels({ capacity: 16 });
  const lease = k.lease(1 << 20);
  assert.ok(lease);
  try {
    const raw = lease.allocate(2 * 65536 + 2);
    // At an odd element offset, all 65536 patterns.
    const bits = new Uint16Array(raw.buffer, raw.byteOffset + 2, 65536);
    bits.forEach((_, i, a) => a[i] = i);
    const room = lease.allocate(4 * 65536);
    const out = new Float32Array(room.buffer, room.byteOffset, 65536);
    for (const [dtype, decodeJs] of [["float16", decodeFloat16], ["bfloat16", decodeBfloat16]] as const) {
      assert.ok(k.decode(bits, dtype, out));
      const want = decodeJs(bits, new Float32Array(bits.length));
      assert.deepEqual(new Uint32Array(out.slice().buffer), new Uint32Array(want.buffer), dtype);
    }
    assert.equal(k.decode(bits, "float16", new Float32Array(65536)), false, "destination outside");
    assert.equal(k.decode(bits.slice(), "float16", out), false, "source outside");
    assert.equal(k.decode(bits, "float16", out.subarray(0, 10)), false, "destination too short");
  } finally {
    lease.release();
  }
});

test("pack4 matches packInt4 for every length up to 100 and a long run", () => {
  const k = kernels({ capacity: 10_001 });
  const r = rng(42);
  for (const n of [...Array.from({ length: 101 }, (_, i) => i), 10_001]) {
    const values = Int8Array.from({ length: n }, () => Math.floor(r() * 16) - 8);
    k.output(n).set(new Uint8Array(values.buffer));
    assert.deepEqual(k.pack4(n), packInt4(values), `length ${n}`);
    const unsigned = Uint8Array.from({ length: n }, () => Math.floor(r() * 16));
    k.output(n).set(unsigned);
    assert.deepEqual(k.pack4(n), packInt4(unsigned), `uint4 length ${n}`);
  }
});

test("quantize adds the report's error sums as ErrorStats computes them, for contiguous layouts", () => {
  const k = kernels();
  for (
    const [shape, sizes] of [[[64, 100], [1, 0]], [[64, 100], [0, 0]], [[32, 96], [1, 8]], [[7, 333], [1, 0]]] as const
  ) {
    const layout = new BlockLayout(shape, sizes);
    for (const { name, gen } of VALUES) {
      const values = fill(layout.size, gen, 77, "float32");
      for (const mode of MODES) {
        for (const dtype of DTYPES) {
          const params = paramsFor(values, layout, mode, dtype, "float32");
          const signed = isSigned(dtype);
          const expected = new ErrorStats();
          const q = reference(values, 0, layout, params, signed);
          const scale = Float64Array.from(params.inverseScale, (inv) => Math.fround(1 / inv));
          expected.observe(values, 0, layout, q, scale, params.zeroPoint);
          // Several slabs at odd offsets, staged from JS memory, summing into one accumulator.
          const sums = new Float64Array(3);
          const out = viaWasm(
            k,
            values,
            layout,
            params,
            signed,
            [1, 1001, 4099].filter((c) => c < values.length),
            sums,
          );
          const where = `shape [${shape}] blocks [${sizes}] ${name} ${mode} ${dtype}`;
          assert.deepEqual(bytes(out), bytes(q), where);
          // The largest error is exact; the squares are summed partly in float32 (src/wasm/kernels.wat).
          assert.equal(sums[2], expected.maxAbsError, where);
          assert.ok(Math.abs(sums[0] - expected.signalEnergy) <= 1e-6 * expected.signalEnergy, where);
          assert.ok(Math.abs(sums[1] - expected.errorEnergy) <= 1e-6 * expected.errorEnergy, where);
        }
      }
    }
  }
});

test("error sums where the float32 error arithmetic is not proven exact are float64 sums", () => {
  const k = kernels();
  const layout = new BlockLayout([8, 256], [1, 0]);
  const next = rng(79);
  // Rows 0-3 clip far beyond the range (|e| up to 40 scales); rows 4-7 have scales of 2^-60 and 2^60.
  const values = Float32Array.from({ length: layout.size }, (_, i) => {
    const row = Math.floor(i / 256);
    const x = (next() - 0.5) * 2;
    return row < 4 ? x * 300 : x * 127 * (row < 6 ? 2 ** -60 : 2 ** 60);
  });
  const scale = [1, 1, 1, 1, 2 ** -60, 2 ** -60, 2 ** 60, 2 ** 60];
  const params: KernelParams = {
    inverseScale: Float64Array.from(scale, (s) => 1 / s),
    zeroPoint: new Int32Array(8),
    qmin: -128,
    qmax: 127,
    arithmetic: "float32",
  };
  const q = reference(values, 0, layout, params, true);
  const expected = new ErrorStats();
  expected.observe(values, 0, layout, q, Float64Array.from(scale), params.zeroPoint);
  for (const rows of [[0, 4], [4, 8]]) {
    const [from, to] = rows.map((r) => r * 256);
    const part = new ErrorStats();
    part.observe(
      values.subarray(from, to),
      from,
      layout,
      q.subarray(from, to),
      Float64Array.from(scale),
      params.zeroPoint,
    );
    const sums = new Float64Array(3);
    const out = new Int8Array(to - from);
    assert.ok(k.quantize(values.subarray(from, to), from, layout, params, out, sums));
    assert.deepEqual(bytes(out), bytes(q.subarray(from, to)), `rows ${rows}`);
    assert.equal(sums[2], part.maxAbsError, `rows ${rows}`);
    // Float64 sums (error_contig) differ from ErrorStats only in the order of addition.
    assert.ok(Math.abs(sums[0] - part.signalEnergy) <= 1e-12 * part.signalEnergy, `rows ${rows}`);
    assert.ok(Math.abs(sums[1] - part.errorEnergy) <= 1e-12 * part.errorEnergy, `rows ${rows}`);
  }
});

test("errors whose float32 squares would underflow are summed in float64", () => {
  const k = kernels();
  const grid = Float32Array.from({ length: 1024 }, (_, i) => ((i * 37) % 255) - 127); // on the grid of scale 1
  const cases = {
    "one error of 1e-30": grid.map((x, i) => (i === 100 ? 1e-30 : x)),
    "one error of 2.1e-22 (a subnormal square)": grid.map((x, i) => (i === 100 ? 2.1e-22 : x)),
    "subnormal values (zero range, scale 1)": grid.map((_, i) => (i % 2 ? 1 : -1) * (1 + (i % 50)) * 2 ** -149),
  };
  const layout = new BlockLayout([1, 1024], [0, 0]);
  for (const [name, values] of Object.entries(cases)) {
    const params = paramsFor(values, layout, "linear_symmetric", "int8", "float32");
    const q = reference(values, 0, layout, params, true);
    const expected = new ErrorStats();
    const scale = Float64Array.from(params.inverseScale, (inv) => Math.fround(1 / inv));
    expected.observe(values, 0, layout, q, scale, params.zeroPoint);
    const sums = new Float64Array(3);
    const out = new Int8Array(values.length);
    assert.ok(k.quantize(values, 0, layout, params, out, sums));
    assert.deepEqual(bytes(out), bytes(q), name);
    assert.ok(expected.errorEnergy > 0, name);
    assert.deepEqual([...sums], [expected.signalEnergy, expected.errorEnergy, expected.maxAbsError], name);
  }
});

test("the JavaScript kernel adds the same error sums as ErrorStats in its single pass", () => {
  const next = rng(78);
  for (const [shape, sizes] of [[[64, 100], [1, 0]], [[64, 100], [0, 0]], [[32, 96], [1, 8]]] as const) {
    const layout = new BlockLayout(shape, sizes);
    for (const arithmetic of ARITHMETIC) {
      const round = arithmetic === "float16" ? f16round : Math.fround;
      const values = Float32Array.from({ length: layout.size }, (_, i) => round((next() - 0.5) * (1 + (i % 9))));
      for (const mode of MODES) {
        for (const dtype of DTYPES) {
          const params = paramsFor(values, layout, mode, dtype, arithmetic);
          const signed = isSigned(dtype);
          const q = reference(values, 0, layout, params, signed);
          const expected = new ErrorStats();
          const scale = Float64Array.from(params.inverseScale, (inv) => Math.fround(1 / inv));
          expected.observe(values, 0, layout, q, scale, params.zeroPoint);
          const sums = new Float64Array(3);
          const out = signed ? new Int8Array(values.length) : new Uint8Array(values.length);
          assert.ok(quantizeValues(values, 0, layout, params, out, sums));
          const where = `shape [${shape}] blocks [${sizes}] ${arithmetic} ${mode} ${dtype}`;
          assert.deepEqual(bytes(out), bytes(q), where);
          assert.deepEqual([...sums], [expected.signalEnergy, expected.errorEnergy, expected.maxAbsError], where);
        }
      }
    }
  }
});

test("a lease of a size that is no byte count is refused and leaves the memory usable", () => {
  for (const bad of [NaN, -1, -1e6, 1.5]) {
    const k = kernels();
    assert.equal(k.lease(bad), undefined, `lease(${bad})`);
    const lease = k.lease(1 << 16);
    assert.ok(lease, `a lease after lease(${bad})`);
    const slab = lease.allocate(4096);
    assert.equal(slab.buffer, k.output(1).buffer, `inside the wasm memory after lease(${bad})`);
    lease.release();
  }
});

test("a lease holds slab buffers in wasm memory that no kernel call detaches", () => {
  const k = kernels({ capacity: 1024, blockCapacity: 16 });
  const lease = k.lease(1 << 20, 4096);
  assert.ok(lease);
  assert.equal(k.lease(1024), undefined, "one lease at a time");
  const slab = lease.allocate(100);
  assert.equal(slab.length, 4096, "at least slotBytes");
  assert.equal(slab.buffer, k.input(1).buffer, "inside the kernels' memory");
  assert.notEqual(lease.allocate(1 << 20).buffer, slab.buffer, "JavaScript memory once the lease is used up");

  // A slab read into the lease is quantized in place, with the bytes of the JavaScript kernel.
  const layout = new BlockLayout([16, 64], [1, 0]);
  const next = rng(79);
  const values = new Float32Array(slab.buffer, slab.byteOffset, layout.size);
  values.forEach((_, i, a) => a[i] = next() - 0.5);
  const params = paramsFor(values, layout, "linear_symmetric", "int8", "float32");
  const room = lease.allocate(layout.size);
  assert.equal(room.buffer, slab.buffer);
  const out = new Int8Array(room.buffer, room.byteOffset, layout.size);
  assert.ok(k.quantize(values, 0, layout, params, out));
  assert.deepEqual(bytes(out), bytes(reference(values, 0, layout, params, true)));

  // More blocks than the lease reserved: the memory may not grow, so the call declines (JavaScript takes
  // over) and the slab stays readable.
  const many = new BlockLayout([(1 << 20) + 1, 1], [1, 0]);
  const wide = Float32Array.from({ length: many.size }, (_, i) => i % 7);
  const wideParams = paramsFor(wide, many, "linear_symmetric", "int8", "float32");
  const before = k.input(1).buffer.byteLength;
  assert.equal(k.quantize(wide, 0, many, wideParams, new Int8Array(many.size)), false);
  assert.equal(k.input(1).buffer.byteLength, before);
  assert.equal(values.length, layout.size, "not detached");

  lease.release();
  assert.ok(k.quantize(wide, 0, many, wideParams, new Int8Array(many.size)), "after release the memory grows");
  assert.equal(values.length, 0, "and earlier views are detached: why the lease holds growth back");
  assert.ok(k.lease(1024), "a new lease once the last was released");
  assert.equal(kernels().lease(2 ** 32), undefined, "beyond what wasm memory can hold: no lease, no error");
});

test("createWasmKernels rejects bad pool sizes", () => {
  assert.throws(() => createWasmKernels({ capacity: 0 }), RangeError);
  assert.throws(() => createWasmKernels({ capacity: 1.5 }), RangeError);
  assert.throws(() => createWasmKernels({ blockCapacity: -1 }), RangeError);
});

/**
 * observeQuantize on `values` copied into k's pools (in place), or on arrays outside k's memory (staged a few blocks
 * at a time); undefined when it refuses.
 */
function observeQuantizeVia(
  how: "in place" | "staged",
  k: WasmKernels,
  values: Float32Array,
  layout: BlockLayout,
  mode: QuantMode,
  dtype: QuantDType,
  sums?: Float64Array,
) {
  const input = how === "staged" ? values : k.input(values.length);
  if (how === "in place") input.set(values);
  const out = how === "staged" ? new Uint8Array(values.length) : k.output(values.length);
  const found = k.observeQuantize(input, layout.blockCount, layout.runLength, mode, quantRange(dtype, mode), out, sums);
  return found && { ...found, bytes: Uint8Array.from(out) };
}

test("observeQuantize gives what observe, computeBlockParams and quantize give, in one pass", () => {
  const k = kernels({ capacity: 1 << 18 });
  // Staged, [40, 4096] takes three calls of 16 rows and [3, 40000] one row per call.
  const shapes: [number[], number[]][] = [
    [[1, 4096], [1, 0]],
    [[5, 100], [1, 0]],
    [[3, 1000], [0, 0]],
    [[40, 4096], [1, 0]],
    [[3, 40000], [1, 0]],
  ];
  for (const run of [1, 3, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65]) shapes.push([[4, 2 * run], [1, run]]);
  const families = [
    ...VALUES,
    { name: "zero and constant blocks", gen: ((_r, i) => (i % 7 < 3 ? 0 : i % 7 < 5 ? 0.25 : -3)) as Gen },
    // Every third span of 4096 zeros: whole zero rows of [40, 4096] in every staged call.
    { name: "zero rows", gen: ((r, i) => ((i >> 12) % 3 === 0 ? 0 : r() - 0.5)) as Gen },
  ];
  let cases = 0;
  let seed = 500;
  for (const [shape, blocks] of shapes) {
    const layout = new BlockLayout(shape, blocks);
    for (const family of families) {
      const values = fill(layout.size, family.gen, seed++, "float32");
      for (const mode of MODES) {
        for (const dtype of DTYPES) {
          const where = `[${shape}] blocks [${blocks}] ${family.name} ${mode} ${dtype}`;
          const range = new BlockRange(layout);
          assert.equal(range.observe(values, 0), -1);
          let p;
          try {
            p = computeBlockParams(range.mins, range.maxs, mode, quantRange(dtype, mode), "float32", "t");
          } catch {
            continue; // an overflow: the fallback test below covers it
          }
          const q = quantRange(dtype, mode);
          const params = {
            inverseScale: p.scale.map((s) => 1 / s),
            zeroPoint: p.zeroPoint,
            ...q,
            arithmetic: "float32" as const,
          };
          const want = reference(values, 0, layout, params, isSigned(dtype));
          const expected = new ErrorStats();
          expected.observe(values, 0, layout, want, p.scale, p.zeroPoint);
          // In place and staged, with the report's sums (observe_quantize_err) and without (observe_quantize).
          for (const how of ["in place", "staged"] as const) {
            for (const sums of [new Float64Array(3), undefined]) {
              const label = `${where} ${how}${sums ? " with sums" : ""}`;
              const got = observeQuantizeVia(how, k, values, layout, mode, dtype, sums);
              assert.ok(got, label);
              assert.deepEqual(got.bytes, bytes(want), `${label}: ${firstDifference(got.bytes, bytes(want))}`);
              assert.deepEqual(got.scale, p.scale, label);
              assert.deepEqual(got.zeroPoint, p.zeroPoint, label);
              assert.equal(got.zeroRangeBlocks, p.zeroRangeBlocks, label);
              if (!sums) continue;
              assert.equal(sums[2], expected.maxAbsError, label);
              assert.ok(Math.abs(sums[0] - expected.signalEnergy) <= 1e-6 * expected.signalEnergy, label);
              assert.ok(Math.abs(sums[1] - expected.errorEnergy) <= 1e-6 * expected.errorEnergy, label);
            }
          }
          cases++;
        }
      }
    }
  }
  assert.ok(cases > 500, `${cases} cases`);
});

test("observeQuantize refuses non-finite values and parameters, leaving the sums alone", () => {
  const k = kernels({ capacity: 1 << 12 });
  const layout = new BlockLayout([3, 40], [1, 0]);
  const base = fill(layout.size, VALUES[0].gen, 9, "float32");
  // NaN and infinities in the vector part and the scalar tail of the first, middle and last blocks.
  for (const at of [0, 5, 39, 41, 77, 80, 119]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const values = base.slice();
      values[at] = bad;
      for (const how of ["in place", "staged"] as const) {
        const sums = new Float64Array([1, 2, 3]);
        assert.equal(observeQuantizeVia(how, k, values, layout, "linear", "uint8", sums), undefined, `${bad} at ${at}`);
        assert.deepEqual([...sums], [1, 2, 3]);
        const noSums = observeQuantizeVia(how, k, values, layout, "linear_symmetric", "int8");
        assert.equal(noSums, undefined, `${bad} at ${at}, ${how}, no sums`);
      }
    }
  }
  // A range whose width overflows float32 (computeBlockParams throws).
  const huge = base.map((x, i) => (i === 50 ? 3e38 : i === 51 ? -3e38 : x));
  assert.equal(
    observeQuantizeVia("in place", k, huge, layout, "linear_symmetric", "int8", new Float64Array(3)),
    undefined,
  );
  // Output over its own input.
  const input = k.input(base.length);
  input.set(base);
  const over = new Uint8Array(input.buffer, input.byteOffset, base.length);
  assert.equal(
    k.observeQuantize(input, 3, 40, "linear", quantRange("uint8", "linear"), over, new Float64Array(3)),
    undefined,
  );
  // Blocks too long to stage.
  const long = fill(1 << 17, VALUES[0].gen, 10, "float32");
  const range = quantRange("int8", "linear");
  assert.equal(k.observeQuantize(long, 1, 1 << 17, "linear", range, new Int8Array(1 << 17)), undefined);
});

test("quantize adds the error sums in float64 for layouts of rows, as ErrorStats computes them", () => {
  const k = kernels();
  let cases = 0;
  const rows = LAYOUTS.filter((l) => !new BlockLayout(l.shape, l.blocks).contiguous);
  for (const { layout, values, arithmetic, params, signed, label } of quantizeCases(rows, 91)) {
    const q = reference(values, 0, layout, params, signed);
    const scale = Float64Array.from(
      params.inverseScale,
      (inv) => (arithmetic === "float16" ? f16round : Math.fround)(1 / inv),
    );
    const expected = new ErrorStats();
    expected.observe(values, 0, layout, q, scale, params.zeroPoint);
    // Slabs at odd offsets, staged from JS memory, summing into one accumulator.
    const sums = new Float64Array(3);
    const out = viaWasm(k, values, layout, params, signed, [1, 7, 100, 333].filter((c) => c < values.length), sums);
    assert.deepEqual(bytes(out), bytes(q), label);
    assert.equal(sums[2], expected.maxAbsError, label);
    // Float64 sums, added in another order.
    assert.ok(Math.abs(sums[0] - expected.signalEnergy) <= 1e-12 * expected.signalEnergy, label);
    assert.ok(Math.abs(sums[1] - expected.errorEnergy) <= 1e-12 * expected.errorEnergy, label);
    cases++;
  }
  assert.ok(cases > 150, `${cases} cases`);
});
