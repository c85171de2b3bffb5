import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { tableFromIPC as flechetteFromIPC } from "@uwdata/flechette";
import {
  activationParams,
  computeActivationParams,
  parseActivationParams,
  stringifyActivationParams,
} from "../src/activation_params.ts";
import { CalibrationStats, type CalibrationStatsOptions } from "../src/calibration_stats.ts";
import { calibrationStatsFromArrow, calibrationStatsToArrow } from "../src/calibration_stats_arrow.ts";
import { ConfigError, Float16OverflowError, FormatError, NonFiniteError } from "../src/errors.ts";
import { computeBlockParams } from "../src/qparams.ts";
import { quantRange } from "../src/ranges.ts";
import { rng as prng } from "./_reference.ts";

interface Sample {
  name: string;
  data: Float32Array;
}

function makeSamples(seed: number, count: number): Sample[] {
  const rnd = prng(seed);
  const names = ["fc1.input", "fc2.input", "relu.out"];
  return Array.from({ length: count }, (_, i) => {
    const name = names[i % names.length];
    const spread = 1 + 4 * rnd();
    const data = Float32Array.from({ length: 1 + Math.floor(rnd() * 50) }, () => (rnd() - 0.4) * spread);
    return { name, data };
  });
}

function observeAll(samples: readonly Sample[], options?: CalibrationStatsOptions): CalibrationStats {
  const stats = new CalibrationStats(options);
  for (const s of samples) stats.observe(s.name, s.data);
  return stats;
}

function throwsWith(fn: () => unknown, cls: new (...args: never[]) => Error, message: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    if (typeof message === "string") assert.equal((e as Error).message, message);
    else assert.match((e as Error).message, message);
    return true;
  });
}

describe("activationParams (SPEC.md Section 6)", () => {
  // Expected values below were cross-checked with numpy: np.float16 arithmetic on
  // np.array([rmin, rmax], np.float32).astype(np.float16), Section 3 step by step.
  test("linear_symmetric int8 uses m = max(|rmin|, |rmax|) and a float16 scale", () => {
    const p = activationParams("x", -1, 0.5);
    assert.deepEqual(p, {
      name: "x",
      dtype: "int8",
      mode: "linear_symmetric",
      rmin: -1,
      rmax: 0.5,
      scale: 0.00787353515625, // float16(2 / 254); float32 arithmetic gives 0.007874015718698502
      zeroPoint: 0,
    });
  });

  test("linear int8 widens the range to hold 0 and computes the zero point in float16", () => {
    assert.deepEqual(
      [activationParams("x", 0, 3, { mode: "linear" })].map((p) => [p.scale, p.zeroPoint]),
      [[0.0117645263671875, -128]], // float16(3 / 255)
    );
    const neg = activationParams("x", -3, -1, { mode: "linear" });
    assert.deepEqual([neg.rmin, neg.rmax, neg.scale, neg.zeroPoint], [-3, -1, 0.0117645263671875, 127]);
  });

  test("rmin and rmax are rounded to float16 first, which changes scale and zero point (linear)", () => {
    // Found by a search over random float32 ranges in a helper script: Section 6 gives
    // a different scale AND zero point than (a) float32 arithmetic, (b) float32
    // arithmetic with only the final scale rounded to float16, and (c) float16
    // arithmetic on the unrounded rmin/rmax. Verified with numpy float16.
    const rmin = -3.7781991958618164;
    const rmax = 3.280266761779785;
    const p = activationParams("h", rmin, rmax, { mode: "linear" });
    assert.equal(p.rmin, -3.77734375); // float16(rmin)
    assert.equal(p.rmax, 3.279296875); // float16(rmax)
    assert.equal(p.scale, 0.0276641845703125);
    assert.equal(p.zeroPoint, 9);
    const range = quantRange("int8", "linear");
    const f32 = computeBlockParams([rmin], [rmax], "linear", range, "float32", "h");
    assert.equal(f32.scale[0], 0.027680259197950363);
    assert.equal(f32.zeroPoint[0], 8);
    const unrounded = computeBlockParams([rmin], [rmax], "linear", range, "float16", "h");
    assert.deepEqual([unrounded.scale[0], unrounded.zeroPoint[0]], [0.027679443359375, 8]);
  });

  test("rmin and rmax are rounded to float16 first, which changes the scale (linear_symmetric)", () => {
    // From the same search: float16(float32 scale) = 0.02667236328125 differs.
    const p = activationParams("h", -3.3879828453063965, 0.8985241651535034);
    assert.equal(p.scale, 0.0266876220703125);
    const f32 = computeBlockParams(
      [-3.3879828453063965],
      [0.8985241651535034],
      "linear_symmetric",
      quantRange("int8", "linear_symmetric"),
      "float32",
      "h",
    );
    assert.equal(f32.scale[0], 0.026677031069993973);
  });

  test("uint8: symmetric zero point fixed at 127; linear zero point from the range", () => {
    const sym = activationParams("u", -2, 2, { dtype: "uint8" });
    assert.deepEqual([sym.scale, sym.zeroPoint], [0.0157470703125, 127]); // float16(4 / 254)
    const lin = activationParams("u", -1, 3, { dtype: "uint8", mode: "linear" });
    assert.deepEqual([lin.scale, lin.zeroPoint], [0.01568603515625, 64]); // float16(4/255); round(255/4)
  });

  test("a zero range, or one whose float16 scale underflows, gets scale 1 and the fixed zero point", () => {
    assert.deepEqual([activationParams("z", 0, 0).scale, activationParams("z", 0, 0).zeroPoint], [1, 0]);
    const u = activationParams("z", 0, 0, { dtype: "uint8" });
    assert.deepEqual([u.scale, u.zeroPoint], [1, 127]);
    const l = activationParams("z", 0, 0, { mode: "linear" });
    assert.deepEqual([l.scale, l.zeroPoint], [1, 0]);
    const tiny = activationParams("z", -1e-6, 1e-6); // float16(2e-6 / 254) = 0
    assert.deepEqual([tiny.scale, tiny.zeroPoint], [1, 0]);
  });

  test("linear mode fails beyond float16's reach instead of emitting garbage", () => {
    throwsWith(
      () => activationParams("big", -600, 10, { mode: "linear" }),
      Float16OverflowError,
      /"big".*overflows float16/,
    );
    assert.equal(activationParams("big", -600, 10).scale, 4.72265625); // symmetric is fine
    throwsWith(() => activationParams("huge", -40000, 10), Float16OverflowError, /"huge".*within ±32752$/);
    throwsWith(
      () => activationParams("vast", -70000, 10),
      Float16OverflowError,
      /"vast": the calibrated range \[-70000, 10\] overflows float16/,
    );
  });

  test("rejects invalid ranges and options", () => {
    throwsWith(() => activationParams("r", 2, 1), RangeError, 'Activation "r" has an invalid calibrated range [2, 1]');
    throwsWith(() => activationParams("r", NaN, 1), RangeError, /invalid calibrated range/);
    throwsWith(() => activationParams("r", 0, 1, { dtype: "int4" as "int8" }), ConfigError, /dtype/);
  });
});

describe("CalibrationStats", () => {
  test("keeps running min, max, counts per name", () => {
    const stats = new CalibrationStats();
    stats.observe("a", new Float32Array([1, -2, 3]));
    stats.observe("b", [0.1]);
    stats.observe("a", []);
    assert.deepEqual(stats.names(), ["a", "b"]);
    assert.deepEqual(stats.get("a"), { name: "a", samples: 2, count: 3, nonFinite: 0, min: -2, max: 3 });
    assert.deepEqual(stats.get("b"), {
      name: "b",
      samples: 1,
      count: 1,
      nonFinite: 0,
      min: Math.fround(0.1),
      max: Math.fround(0.1),
    });
    assert.equal(stats.get("c"), undefined);
  });

  for (const observer of ["minmax", "percentile"] as const) {
    test(`${observer}: merging shards equals one pass, bit for bit, in any shard order`, () => {
      const samples = makeSamples(7, 300);
      const whole = observeAll(samples, { observer });
      const shards = [samples.slice(0, 17), samples.slice(17, 200), samples.slice(200)];
      const inOrder = shards.map((s) => observeAll(s, { observer })).reduce((a, b) => a.merge(b));
      assert.deepEqual(inOrder.toJSON(), whole.toJSON());
      assert.deepEqual(computeActivationParams(inOrder), computeActivationParams(whole));
      const reversed = shards.reverse().map((s) => observeAll(s, { observer })).reduce((a, b) => a.merge(b));
      for (const name of whole.names()) assert.deepEqual(reversed.get(name), whole.get(name));
      const byName = (ps: ReturnType<typeof computeActivationParams>) =>
        ps.toSorted((a, b) => a.name < b.name ? -1 : 1);
      assert.deepEqual(byName(computeActivationParams(reversed)), byName(computeActivationParams(whole)));
    });
  }

  test("ema: the first sample sets the range, later ones move it by c * (batch - ema)", () => {
    const stats = new CalibrationStats({ observer: "ema" });
    stats.observe("x", [-1, 0.5, 1]);
    stats.observe("x", [-3, 2]);
    stats.observe("x", [0, 5, 4]);
    const c = 0.01;
    let min = -1, max = 1; // batch 1
    min = min + c * (-3 - min), max = max + c * (2 - max); // -1.02, 1.01
    min = min + c * (0 - min), max = max + c * (5 - max); // -1.0098, 1.0499
    assert.deepEqual(stats.range("x"), [min, max]);
    assert.ok(Math.abs(min - -1.0098) < 1e-15 && Math.abs(max - 1.0499) < 1e-15);
    assert.deepEqual(stats.get("x")?.ema, { batches: 3, min, max, firstMin: -1, firstMax: 1 });
    assert.deepEqual([stats.get("x")?.min, stats.get("x")?.max], [-3, 5]); // the running range is kept too
  });

  test("ema: merging in stream order matches one pass to float64 rounding", () => {
    const samples = makeSamples(11, 400);
    const whole = observeAll(samples, { observer: "ema", averagingConstant: 0.05 });
    const merged = observeAll(samples.slice(0, 150), { observer: "ema", averagingConstant: 0.05 })
      .merge(observeAll(samples.slice(150), { observer: "ema", averagingConstant: 0.05 }));
    for (const name of whole.names()) {
      const [a, b] = [whole.range(name), merged.range(name)];
      assert.ok(Math.abs(a[0] - b[0]) <= 1e-14 * Math.abs(a[0]) && Math.abs(a[1] - b[1]) <= 1e-14 * Math.abs(a[1]));
      assert.equal(merged.get(name)?.ema?.batches, whole.get(name)?.ema?.batches);
    }
    assert.deepEqual(computeActivationParams(merged), computeActivationParams(whole));
    throwsWith(
      () => whole.merge(new CalibrationStats()),
      RangeError,
      /different observers: ema \(averagingConstant 0.05\) and minmax/,
    );
  });

  test("percentile: clips a lone outlier and reads quantiles of a known distribution", () => {
    // 1e6 evenly spaced values in [0, 1): numpy's 99.99th percentile is 0.9999 * (n - 1) / n.
    const n = 1_000_000;
    const stats = new CalibrationStats({ observer: "percentile" });
    const data = Float32Array.from({ length: n }, (_, i) => i / n);
    stats.observe("u", data.subarray(0, n / 2));
    stats.observe("u", data.subarray(n / 2));
    const [lo, hi] = stats.range("u", 99.99);
    const exactHi = (0.9999 * (n - 1)) / n;
    const exactLo = (0.0001 * (n - 1)) / n;
    // The documented bound: one bin width, 2^-8 of the magnitude at 8 bits.
    assert.ok(Math.abs(hi - exactHi) <= exactHi * 2 ** -8, `${hi}`);
    assert.ok(Math.abs(lo - exactLo) <= exactLo * 2 ** -8, `${lo}`);
    assert.ok(Math.abs(hi - exactHi) < 1e-6, `${hi}`); // many values per bin, evenly spread: far closer
    assert.deepEqual(stats.range("u", 100), [0, data[n - 1]]); // 100 gives the exact min and max

    const tail = new CalibrationStats({ observer: "percentile" });
    const body = makeSamples(3, 3000).map((s) => s.data);
    for (const d of body) tail.observe("t", d.map((v) => Math.max(-1, Math.min(1, v))));
    tail.observe("t", [1000]);
    const [tlo, thi] = tail.range("t", 99.9);
    // The 1000 is clipped away; many values sit exactly at +-1, within a bin width of it.
    assert.ok(Math.abs(thi - 1) <= 2 ** -8 && tlo === -1, `${tlo} ${thi}`);
    assert.equal(tail.get("t")?.max, 1000);
    throwsWith(() => tail.range("t", 40), RangeError, "percentile must be in [50, 100], got 40");
  });

  test("non-finite values fail naming the activation, sample and element; the sample is not half-applied", () => {
    const stats = new CalibrationStats();
    stats.observe("fc1.input", [1, 2]);
    throwsWith(
      () => stats.observe("fc1.input", new Float32Array([-5, NaN]), 4),
      NonFiniteError,
      'Cannot quantize activation "fc1.input": calibration sample 4, element 1 is NaN',
    );
    assert.deepEqual(stats.get("fc1.input"), { name: "fc1.input", samples: 1, count: 2, nonFinite: 0, min: 1, max: 2 });
    throwsWith(
      () => stats.observe("b", [0, -Infinity]),
      NonFiniteError,
      /"b": calibration sample, element 1 is -Infinity/,
    );
  });

  test("non-finite values are counted and left out with nonFinite: skip", () => {
    const stats = new CalibrationStats({ nonFinite: "skip", observer: "ema" });
    stats.observe("x", [NaN, Infinity]);
    stats.observe("x", [NaN, 3, -1]);
    assert.deepEqual(stats.get("x"), {
      name: "x",
      samples: 2,
      count: 2,
      nonFinite: 3,
      min: -1,
      max: 3,
      ema: { batches: 1, min: -1, max: 3, firstMin: -1, firstMax: 3 },
    });
    throwsWith(
      () => new CalibrationStats({ nonFinite: "skip" }).range("y"),
      RangeError,
      'No calibration statistics for activation "y"',
    );
    const empty = new CalibrationStats({ nonFinite: "skip" });
    empty.observe("nan", [NaN]);
    throwsWith(
      () => computeActivationParams(empty),
      RangeError,
      'Activation "nan" has no finite calibration values (1 samples)',
    );
  });

  test("bad samples fail with a TypeError naming them", () => {
    const stats = new CalibrationStats();
    throwsWith(
      () => stats.observe(undefined as unknown as string, [1], 3),
      TypeError,
      "Calibration sample 3: name must be a non-empty string, got undefined",
    );
    throwsWith(() => stats.observe("", [1]), TypeError, 'Calibration sample: name must be a non-empty string, got ""');
    throwsWith(
      () => stats.observe("x", new Float64Array([1]) as unknown as Float32Array, 0),
      TypeError,
      'Calibration sample 0 ("x"): data must be a Float32Array or an array of numbers, got Float64Array',
    );
    throwsWith(
      () => stats.observe("x", [1, "2"] as unknown as number[], 9),
      TypeError,
      'Calibration sample 9 ("x"): data[1] is "2", not a number',
    );
    assert.equal(stats.size, 0);
  });

  test("rejects invalid options", () => {
    throwsWith(
      () => new CalibrationStats({ observer: "mse" as "ema" }),
      RangeError,
      'Unknown observer "mse"; expected minmax, ema or percentile',
    );
    throwsWith(
      () => new CalibrationStats({ averagingConstant: 0 }),
      RangeError,
      "averagingConstant must be in (0, 1], got 0",
    );
    throwsWith(() => new CalibrationStats({ histogramBits: 13 }), RangeError, /histogramBits/);
  });
});

describe("serialization", () => {
  for (const observer of ["minmax", "ema", "percentile"] as const) {
    test(`${observer}: JSON and Arrow round trips are exact and resume like one pass`, () => {
      const samples = makeSamples(5, 120);
      const first = observeAll(samples.slice(0, 60), { observer });
      first.observe("never.finite", [NaN].filter(Number.isFinite)); // an empty sample: count 0, min/max null
      const viaJson = CalibrationStats.fromJSON(JSON.stringify(first.toJSON()));
      const viaArrow = calibrationStatsFromArrow(calibrationStatsToArrow(first));
      assert.deepEqual(viaJson.toJSON(), first.toJSON());
      assert.deepEqual(viaArrow.toJSON(), first.toJSON());
      if (observer !== "ema") { // ema's resume is the same sequence: exact too
        for (const s of samples.slice(60)) viaJson.observe(s.name, s.data);
        const whole = observeAll(samples, { observer });
        whole.observe("never.finite", []);
        for (const name of whole.names()) assert.deepEqual(viaJson.get(name), whole.get(name));
      }
    });
  }

  test("ema resumed from JSON continues the sequential average exactly", () => {
    const samples = makeSamples(9, 50);
    const whole = observeAll(samples, { observer: "ema" });
    const resumed = CalibrationStats.fromJSON(JSON.stringify(observeAll(samples.slice(0, 20), { observer: "ema" })));
    for (const s of samples.slice(20)) resumed.observe(s.name, s.data);
    assert.deepEqual(resumed.toJSON(), whole.toJSON());
  });

  test("the Arrow form is read by an independent reader (flechette)", () => {
    const stats = observeAll(makeSamples(2, 30), { observer: "percentile" });
    const table = flechetteFromIPC(calibrationStatsToArrow(stats), { useBigInt: false });
    const rows = table.toArray() as Array<Record<string, unknown>>;
    assert.deepEqual(rows.map((r) => r.name), stats.names());
    const a = stats.get("fc1.input")!;
    const row = rows[0];
    assert.deepEqual([row.count, row.min, row.max], [a.count, a.min, a.max]);
    assert.deepEqual(Array.from(row.hist_keys as ArrayLike<number>), a.histogram!.keys);
    assert.equal(table.schema.metadata?.get("quantflow.observer"), "percentile");
  });

  test("malformed statistics fail with a FormatError naming the problem", () => {
    throwsWith(() => CalibrationStats.fromJSON("{"), FormatError, /not JSON/);
    const json = observeAll(makeSamples(1, 3)).toJSON();
    throwsWith(
      () => CalibrationStats.fromJSON({ ...json, activations: [{ ...json.activations[0], count: -1 }] }),
      FormatError,
      /activations\[0\]\.count/,
    );
    throwsWith(
      () => CalibrationStats.fromJSON({ ...json, activations: [{ ...json.activations[0], min: 5, max: 1 }] }),
      FormatError,
      /activation "fc1.input": min and max must be numbers with min <= max/,
    );
    throwsWith(
      () => calibrationStatsFromArrow(new Uint8Array([1, 2, 3])),
      FormatError,
      /Invalid calibration statistics/,
    );
  });

  test("activation parameters survive JSON exactly, and bad files are rejected with paths", () => {
    const params = computeActivationParams(observeAll(makeSamples(4, 60)), { mode: "linear", dtype: "uint8" });
    const text = stringifyActivationParams(params);
    assert.deepEqual(parseActivationParams(text), params);
    assert.deepEqual(parseActivationParams(JSON.parse(text)), params);
    const file = JSON.parse(text);
    file.activations[1].zeroPoint = 300;
    file.activations[2].name = file.activations[0].name;
    throwsWith(
      () => parseActivationParams(file),
      FormatError,
      `Invalid activation parameters: activations[1].zeroPoint: 300 is outside uint8's range [0, 255]; activations[2].name: duplicate activation "fc1.input"`,
    );
    throwsWith(() => parseActivationParams({ format: "x" }), FormatError, /format.*version.*activations/s);
    const sym = JSON.parse(stringifyActivationParams([activationParams("s", -1, 1)]));
    sym.activations[0].zeroPoint = 3;
    throwsWith(() => parseActivationParams(sym), FormatError, /linear_symmetric int8 fixes the zero point at 0, got 3/);
    sym.activations[0].zeroPoint = 0;
    sym.activations[0].scale = 0.1;
    throwsWith(
      () => parseActivationParams(sym),
      FormatError,
      /activations\[0\]\.scale: must be a finite float32 value/,
    );
  });
});
