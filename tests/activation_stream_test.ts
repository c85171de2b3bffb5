import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Field, FixedSizeList, Float32, Float64, List, Table, tableToIPC, Utf8, vectorFromArray } from "apache-arrow";
import { activationParams } from "../src/activation_params.ts";
import type { QuantizedActivation } from "../src/activation_quantize.ts";
import { CalibrationStats } from "../src/calibration_stats.ts";
import { FormatError, NonFiniteError } from "../src/errors.ts";
import { DequantizeActivationsStream, QuantizeActivationsStream } from "../streams/activation_quantize_stream.ts";
import { readActivationSamples } from "../streams/activation_sample_source.ts";
import { CalibrateStream } from "../streams/calibrate_stream.ts";

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

async function rejectsWith(p: Promise<unknown>, cls: new (...args: never[]) => Error, message: string | RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    if (typeof message === "string") assert.equal((e as Error).message, message);
    else assert.match((e as Error).message, message);
    return true;
  });
}

const SAMPLES = [
  { name: "a", data: new Float32Array([0.5, -1.25, 3]) },
  { name: "b", data: new Float32Array([2]) },
  { name: "a", data: new Float32Array([]) },
  { name: "a", data: new Float32Array([7, -0.5]) },
];

/** The SAMPLES as an IPC stream with a List<Float32> (or FixedSizeList / Float32) `values` column. */
function listIPC(rows: { name: string; data: Float32Array }[]): Uint8Array {
  return tableToIPC(
    new Table({
      name: vectorFromArray(rows.map((r) => r.name), new Utf8()),
      values: vectorFromArray(rows.map((r) => [...r.data]), new List(new Field("item", new Float32(), true))),
    }),
    "stream",
  );
}

function chunked(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.slice(i, i + size));
  return ReadableStream.from(parts);
}

function plainSamples(samples: { name: string; data: Float32Array }[]) {
  return samples.map((s) => ({ name: s.name, data: [...s.data] }));
}

describe("CalibrateStream", () => {
  test("emits one CalibrationStats equal to observing every sample", async () => {
    const out = await collect(ReadableStream.from(SAMPLES).pipeThrough(new CalibrateStream()));
    assert.equal(out.length, 1);
    const direct = new CalibrationStats();
    for (const s of SAMPLES) direct.observe(s.name, s.data);
    assert.deepEqual(out[0].toJSON(), direct.toJSON());
    assert.deepEqual(out[0].get("a"), { name: "a", samples: 3, count: 5, nonFinite: 0, min: -1.25, max: 7 });
  });

  test("resumes from earlier statistics without changing them", async () => {
    const [first] = await collect(
      ReadableStream.from(SAMPLES.slice(0, 2)).pipeThrough(new CalibrateStream({ observer: "ema" })),
    );
    const before = JSON.stringify(first.toJSON());
    const [resumed] = await collect(
      ReadableStream.from(SAMPLES.slice(2)).pipeThrough(new CalibrateStream({ resume: first })),
    );
    const [whole] = await collect(ReadableStream.from(SAMPLES).pipeThrough(new CalibrateStream({ observer: "ema" })));
    assert.deepEqual(resumed.toJSON(), whole.toJSON());
    assert.equal(JSON.stringify(first.toJSON()), before);
  });

  test("fails naming the sample by position and activation", async () => {
    const bad = [SAMPLES[0], { name: "b", data: new Float32Array([1, Infinity]) }];
    await rejectsWith(
      collect(ReadableStream.from(bad).pipeThrough(new CalibrateStream())),
      NonFiniteError,
      'Cannot quantize activation "b": calibration sample 1, element 1 is Infinity',
    );
    await rejectsWith(
      collect(ReadableStream.from([SAMPLES[0], { data: [1] }] as never[]).pipeThrough(new CalibrateStream())),
      TypeError,
      "Calibration sample 1: name must be a non-empty string, got undefined",
    );
    await rejectsWith(
      collect(ReadableStream.from([{ name: "c", data: "1,2" }] as never[]).pipeThrough(new CalibrateStream())),
      TypeError,
      'Calibration sample 0 ("c"): data must be a Float32Array or an array of numbers, got "1,2"',
    );
    await rejectsWith(
      collect(ReadableStream.from([42] as never[]).pipeThrough(new CalibrateStream())),
      TypeError,
      /sample 0: expected an object/,
    );
  });

  test("validates its options at once", () => {
    assert.throws(() => new CalibrateStream({ observer: "kl" as "ema" }), RangeError);
    assert.throws(() => new CalibrateStream({ resume: {} as CalibrationStats }), TypeError);
  });
});

describe("readActivationSamples", () => {
  const expected = plainSamples(SAMPLES);

  test("reads List<Float32> rows whole, as async iterable, and in 1-, 7- and 1000-byte chunks", async () => {
    const bytes = listIPC(SAMPLES);
    const read = async (input: Parameters<typeof readActivationSamples>[0]) =>
      plainSamples(await collect(readActivationSamples(input)));
    assert.deepEqual(await read(bytes), expected);
    assert.deepEqual(
      await read((async function* () {
        yield bytes.slice(0, 10);
        yield bytes.slice(10);
      })()),
      expected,
    );
    for (const size of [1, 7, 1000]) assert.deepEqual(await read(chunked(bytes, size)), expected);
  });

  test("reads FixedSizeList<Float32> and plain Float32 columns, dictionary names, concatenated streams", async () => {
    const fixed = tableToIPC(
      new Table({
        name: vectorFromArray(["x", "y"]), // dictionary-encoded
        values: vectorFromArray([[1, 2], [3, -4]], new FixedSizeList(2, new Field("item", new Float32(), false))),
      }),
      "stream",
    );
    const plain = tableToIPC(
      new Table({ name: vectorFromArray(["z", "z"], new Utf8()), values: vectorFromArray([5, 6], new Float32()) }),
      "stream",
    );
    const both = new Uint8Array([...fixed, ...plain]);
    assert.deepEqual(plainSamples(await collect(readActivationSamples(both))), [
      { name: "x", data: [1, 2] },
      { name: "y", data: [3, -4] },
      { name: "z", data: [5] },
      { name: "z", data: [6] },
    ]);
  });

  test("pipes into CalibrateStream; null values inside a list become NaN", async () => {
    const bytes = tableToIPC(
      new Table({
        name: vectorFromArray(["n", "n"], new Utf8()),
        values: vectorFromArray([[1, null, 3], [-2]], new List(new Field("item", new Float32(), true))),
      }),
      "stream",
    );
    const [stats] = await collect(readActivationSamples(bytes).pipeThrough(new CalibrateStream({ nonFinite: "skip" })));
    assert.deepEqual(stats.get("n"), { name: "n", samples: 2, count: 3, nonFinite: 1, min: -2, max: 3 });
    await rejectsWith(
      collect(readActivationSamples(bytes).pipeThrough(new CalibrateStream())),
      NonFiniteError,
      'Cannot quantize activation "n": calibration sample 0, element 1 is NaN',
    );
  });

  test("detects truncation, including a cut exactly at the end marker", async () => {
    const bytes = listIPC(SAMPLES);
    await rejectsWith(
      collect(readActivationSamples(bytes.subarray(0, bytes.length - 8))),
      FormatError,
      /truncated \(no end-of-stream marker/,
    );
    await rejectsWith(
      collect(readActivationSamples(bytes.subarray(0, bytes.length - 30))),
      FormatError,
      /calibration samples/,
    );
    await rejectsWith(
      collect(readActivationSamples(new Uint8Array(0))),
      FormatError,
      "Cannot read calibration samples: the input is empty",
    );
  });

  test("rejects wrong columns and null names or lists, naming the sample", async () => {
    const wrongType = tableToIPC(
      new Table({ name: vectorFromArray(["a"], new Utf8()), values: vectorFromArray([1], new Float64()) }),
      "stream",
    );
    await rejectsWith(
      collect(readActivationSamples(wrongType)),
      FormatError,
      /column "values" has type Float64; expected List<Float32>/,
    );
    const noName = tableToIPC(new Table({ values: vectorFromArray([1], new Float32()) }), "stream");
    await rejectsWith(
      collect(readActivationSamples(noName)),
      FormatError,
      /need columns "name" and "values"; batch at sample 0 lacks name/,
    );
    const nullName = tableToIPC(
      new Table({ name: vectorFromArray(["a", null], new Utf8()), values: vectorFromArray([1, 2], new Float32()) }),
      "stream",
    );
    await rejectsWith(collect(readActivationSamples(nullName)), FormatError, 'Calibration sample 1: "name" is null');
    const nullList = tableToIPC(
      new Table({
        name: vectorFromArray(["a", "b"], new Utf8()),
        values: vectorFromArray([[1], null], new List(new Field("item", new Float32(), true))),
      }),
      "stream",
    );
    await rejectsWith(
      collect(readActivationSamples(nullList)),
      FormatError,
      'Calibration sample 1 ("b"): "values" is null',
    );
  });

  test("an input that fails passes its own error on, not a format error", async () => {
    const bytes = listIPC(SAMPLES);
    const boom = new Error("disk on fire");
    const input = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, 40));
        c.error(boom);
      },
    });
    await assert.rejects(collect(readActivationSamples(input)), (e) => e === boom);
  });

  test("cancelling the samples cancels the input", async () => {
    let cancelled = false;
    const bytes = listIPC(SAMPLES);
    const input = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.slice(0, bytes.length - 8)); // more to come
      },
      cancel() {
        cancelled = true;
      },
    });
    const reader = readActivationSamples(input).getReader();
    assert.equal((await reader.read()).value?.name, "a");
    await reader.cancel();
    assert.ok(cancelled);
  });
});

describe("QuantizeActivationsStream / DequantizeActivationsStream", () => {
  const quantize = (
    params: ReturnType<typeof activationParams>[],
    inputs: { name: string; data: number[] | Float32Array }[],
  ) => collect(ReadableStream.from(inputs).pipeThrough(new QuantizeActivationsStream(params)));

  test("clips to the FULL int8 range: -128 is reachable below the calibrated range", async () => {
    const p = activationParams("x", -1, 1); // symmetric: [-127, 127] for the scale, [-128, 127] at inference
    const [q] = await quantize([p], [{ name: "x", data: [-1, 1, -1.004, -1.01, -5, 5, 0] }]);
    assert.equal(q.dtype, "int8");
    assert.ok(q.data instanceof Int8Array);
    // -1 / float16(2/254) = -127.006 -> -127; -1.004 -> -127.5 -> -128 (tie to even); beyond: clipped.
    assert.deepEqual([...q.data], [-127, 127, -128, -128, -128, 127, 0]);
    assert.deepEqual([q.scale, q.zeroPoint], [p.scale, 0]);
  });

  test("rounds x / scale in float32, then half to even", async () => {
    const p = activationParams("t", -127, 127); // scale 1
    assert.equal(p.scale, 1);
    const [q] = await quantize([p], [{ name: "t", data: [2.5, -2.5, 3.5, 0.5, -0.5, 126.5] }]);
    assert.deepEqual([...q.data], [2, -2, 4, 0, 0, 126]);
  });

  test("matches q = clip(roundHalfEven(fround(x / scale)) + zp) and x' = fround(scale * (q - zp)) on random data", async () => {
    let seed = 1;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const data = Float32Array.from({ length: 5000 }, () => (rnd() - 0.5) * 8);
    for (
      const [mode, dtype] of [["linear_symmetric", "int8"], ["linear", "int8"], ["linear_symmetric", "uint8"], [
        "linear",
        "uint8",
      ]] as const
    ) {
      const p = activationParams("r", -1.5, 2.25, { mode, dtype });
      const [lo, hi] = dtype === "int8" ? [-128, 127] : [0, 255];
      const out = await collect(
        ReadableStream.from([{ name: "r", data }]).pipeThrough(new QuantizeActivationsStream([p])),
      );
      const back = await collect(ReadableStream.from(out).pipeThrough(new DequantizeActivationsStream()));
      for (let i = 0; i < data.length; i++) {
        const v = Math.fround(data[i] / p.scale);
        const f = Math.floor(v);
        const r = v - f === 0.5 ? (f % 2 === 0 ? f : f + 1) : Math.round(v);
        const q = Math.min(hi, Math.max(lo, r + p.zeroPoint));
        assert.equal(out[0].data[i], q, `${mode} ${dtype} element ${i}`);
        assert.equal(back[0].data[i], Math.fround(p.scale * (q - p.zeroPoint)));
      }
      assert.ok(out[0].data.includes(lo) && out[0].data.includes(hi), `${mode} ${dtype} reaches both ends`);
    }
  });

  test("uint8: symmetric zero point 127, values clipped to [0, 255]", async () => {
    const p = activationParams("u", -2, 2, { dtype: "uint8" });
    const [q] = await quantize([p], [{ name: "u", data: [-2, 2, 0, -2.02, 9] }]);
    assert.ok(q.data instanceof Uint8Array);
    assert.deepEqual([...q.data], [0, 254, 127, 0, 255]);
    const [x] = await collect(ReadableStream.from([q]).pipeThrough(new DequantizeActivationsStream()));
    assert.deepEqual([...x.data], [0, 254, 127, 0, 255].map((q) => Math.fround(p.scale * (q - 127))));
  });

  test("keeps names apart and fails or drops unknown names", async () => {
    const params = [activationParams("a", 0, 1, { mode: "linear" }), activationParams("b", -4, 4)];
    const out = await quantize(params, [{ name: "b", data: [4] }, { name: "a", data: [1] }]);
    assert.deepEqual(out.map((q: QuantizedActivation) => [q.name, q.data[0]]), [["b", 127], ["a", 127]]);
    await rejectsWith(
      quantize(params, [{ name: "a", data: [1] }, { name: "c", data: [1] }]),
      RangeError,
      'Activation sample 1 ("c"): no quantization parameters for this name',
    );
    const kept = await collect(
      ReadableStream.from([{ name: "c", data: [1] }, { name: "a", data: [0] }]).pipeThrough(
        new QuantizeActivationsStream(params, { unknown: "drop" }),
      ),
    );
    assert.deepEqual(kept.map((q) => q.name), ["a"]);
  });

  test("fails on non-finite values and malformed samples, naming them", async () => {
    const p = activationParams("x", -1, 1);
    await rejectsWith(
      quantize([p], [{ name: "x", data: [0] }, { name: "x", data: [0, 0, NaN] }]),
      NonFiniteError,
      'Cannot quantize activation "x": activation sample 1, element 2 is NaN',
    );
    await rejectsWith(
      quantize([p], [{ data: [1] } as never]),
      TypeError,
      "Calibration sample 0: name must be a non-empty string, got undefined",
    );
    await rejectsWith(
      quantize([p], [{ name: "x", data: new Int8Array(1) } as never]),
      TypeError,
      /data must be a Float32Array or an array of numbers, got Int8Array/,
    );
  });

  test("validates its parameters at once", () => {
    const p = activationParams("x", -1, 1);
    assert.throws(() => new QuantizeActivationsStream([p, p]), {
      name: "RangeError",
      message: /duplicate activation "x"/,
    });
    assert.throws(() => new QuantizeActivationsStream([{ ...p, scale: 0 }]), {
      name: "TypeError",
      message: /\[0\]\.scale/,
    });
    assert.throws(() => new QuantizeActivationsStream([{ ...p, zeroPoint: 200, mode: "linear" }]), {
      name: "RangeError",
      message: /outside int8's range/,
    });
    assert.throws(() => new QuantizeActivationsStream(null as never), TypeError);
    assert.throws(() => new QuantizeActivationsStream([p], { unknown: "keep" as "drop" }), RangeError);
  });
});
