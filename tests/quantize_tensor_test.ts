import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ConfigError,
  dequantizeTensor,
  Float16OverflowError,
  measureError,
  NonFiniteError,
  packInt4,
  planTensor,
  quantizeTensor,
  unpackInt4,
} from "@quantflow/quantflow";
import type { FloatDType, QuantizedTensor, QuantizeOptions, Tensor } from "@quantflow/quantflow";
import { decodeFloat16, encodeBfloat16, encodeFloat16 } from "../src/float16.ts";
import { type Mode, type QType, refF16, refQuantize, rng } from "./_reference.ts";

/** A tensor whose rows all equal `row`, so per-channel results are the row's. */
function rows(row: number[], count: number): Tensor {
  return {
    name: "w",
    dtype: "float32",
    shape: [count, row.length],
    data: new Float32Array(Array(count).fill(row).flat()),
  };
}

function quantized(tensor: Tensor, options: QuantizeOptions = {}): QuantizedTensor {
  const result = quantizeTensor(tensor, { weightThreshold: 0, ...options });
  if (result.kind !== "quantized") throw new Error(`skipped: ${result.message}`);
  return result;
}

function scaleNumbers(t: QuantizedTensor): number[] {
  if (t.scaleDType === "float32") return [...t.scale];
  return [...decodeFloat16(t.scale as Uint16Array, new Float32Array(t.scale.length))];
}

describe("SPEC.md Section 9 worked examples", () => {
  test("linear_symmetric sends ties to the even neighbour", () => {
    const q = quantized(rows([127, 2.5, -2.5, 3.5, 0.5], 2));
    assert.deepEqual([...q.data.subarray(0, 5)], [127, 2, -2, 4, 0]);
    assert.deepEqual([...q.scale], [1, 1]);
    assert.equal(q.zeroPoint, undefined);
  });
  test("linear_symmetric scale is fround(2/254), a hair under 1/127", () => {
    const q = quantized(rows([-1.0, 0.5, 0.25], 4));
    assert.equal(q.scale[0], 0.007874015718698502);
    assert.deepEqual([...q.data.subarray(0, 3)], [-127, 64, 32]);
  });
  test("linear on [0, 1, 2, 3] has zero point -128", () => {
    const q = quantized(rows([0, 1, 2, 3], 3), { mode: "linear" });
    assert.equal(q.scale[0], 0.0117647061124444);
    assert.deepEqual([...q.zeroPoint!], [-128, -128, -128]);
    assert.deepEqual([...q.data.subarray(0, 4)], [-128, -43, 42, 127]);
  });
  test("linear widens hi to 0 for [-3, -1]", () => {
    const q = quantized(rows([-3, -1], 5), { mode: "linear" });
    assert.equal(q.scale[0], Math.fround(3 / 255));
    assert.equal(q.zeroPoint![0], 127);
    assert.deepEqual([...q.data.subarray(0, 2)], [-128, 42]);
  });
  test("uint8 linear_symmetric uses [0, 254] with zero point 127", () => {
    const q = quantized(rows([-2, 2], 5), { dtype: "uint8" });
    assert.equal(q.scale[0], Math.fround(4 / 254));
    assert.equal(q.zeroPoint![0], 127);
    assert.ok(q.data instanceof Uint8Array);
    assert.deepEqual([...q.data.subarray(0, 2)], [0, 254]);
  });
  test("an all-zero row gets scale 1 and q = 0", () => {
    const q = quantized(rows([0, 0, 0], 4));
    assert.deepEqual([...q.scale], [1, 1, 1, 1]);
    assert.deepEqual([...q.data], new Array(12).fill(0));
    assert.equal(q.zeroRangeBlocks, 4);
  });
});

/** Random float tensor of a dtype, with its decoded values. */
function randomTensor(
  seed: number,
  dtype: FloatDType,
  shape: number[],
  spread = 4,
): { tensor: Tensor; values: Float32Array } {
  const next = rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  // Mix magnitudes per element so channels differ, and include exact zeros.
  const raw = Float32Array.from(
    { length: size },
    (_, i) => (i % 17 === 0 ? 0 : (next() - 0.5) * spread * (1 + (i % 5))),
  );
  if (dtype === "float32") return { tensor: { name: "t", dtype, shape, data: raw }, values: raw };
  const bits = dtype === "float16"
    ? encodeFloat16(raw, new Uint16Array(size))
    : encodeBfloat16(raw, new Uint16Array(size));
  const values = dtype === "float16"
    ? decodeFloat16(bits, new Float32Array(size))
    : new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
  return { tensor: { name: "t", dtype, shape, data: bits }, values };
}

/** The per-axis block sizes SPEC.md Section 4 gives each granularity. */
function blockSizesOf(shape: number[], granularity: string, axis: number, blockSize: number): number[] {
  const rank = shape.length;
  const a = axis < 0 ? axis + rank : axis;
  const sizes = shape.map(() => 0);
  if (granularity === "per_channel") sizes[a] = 1;
  if (granularity === "per_block") {
    sizes[a] = 1;
    sizes[a === 0 ? 1 : a === rank - 1 ? rank - 2 : 0] = blockSize;
  }
  return sizes;
}

describe("quantizeTensor matches the SPEC.md reference", () => {
  const shapes = [[24, 16], [8, 6, 4], [6, 8, 2, 3]];
  const cases: [string, number][] = [["per_tensor", 0], ["per_channel", 0], ["per_channel", -1], ["per_channel", 1], [
    "per_block",
    0,
  ], ["per_block", -1]];
  let seed = 1;
  for (const dtype of ["float32", "float16", "bfloat16"] as FloatDType[]) {
    for (const mode of ["linear_symmetric", "linear"] as Mode[]) {
      for (const qtype of ["int8", "uint8", "int4", "uint4"] as QType[]) {
        test(`${dtype} ${mode} ${qtype}, every granularity, ranks 2-4`, () => {
          for (const shape of shapes) {
            for (const [granularity, axis] of cases) {
              const { tensor, values } = randomTensor(seed++, dtype, shape, dtype === "float16" ? 40 : 4);
              const options = { mode, dtype: qtype, granularity, axis, blockSize: 2 } as QuantizeOptions;
              const sizes = blockSizesOf(shape, granularity, axis, 2);
              const ref = refQuantize(values, shape, sizes, mode, qtype, dtype === "float16" ? refF16 : Math.fround);
              const q = quantized(tensor, options);
              const where = `shape [${shape}] ${granularity} axis ${axis}`;
              assert.deepEqual(q.scaleShape, ref.scaleShape, where);
              assert.deepEqual(scaleNumbers(q), ref.scale, where);
              assert.deepEqual([...(q.zeroPoint ?? new Int8Array(ref.zeroPoint.length))], ref.zeroPoint, where);
              assert.deepEqual([...q.data], ref.q, where);
              assert.equal(q.scaleDType, dtype === "float16" ? "float16" : "float32");
            }
          }
        });
      }
    }
  }
});

describe("rounding and float types", () => {
  test("values exactly between two steps round half to even", () => {
    const row = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5];
    const q = quantized(rows(row, 2));
    assert.deepEqual([...q.data.subarray(0, 10)], [127, 0, 2, 2, 0, -2, -2, 126, -126, 4]);
  });

  test("float16 weights use float16 arithmetic where float32 would differ", () => {
    // Search deterministic random float16 rows for one where emulating
    // float16 matters, then check that quantizeTensor follows float16.
    let found = 0;
    for (let seed = 1; seed < 400 && found < 5; seed++) {
      const { tensor, values } = randomTensor(seed, "float16", [4, 16], 40);
      for (const mode of ["linear", "linear_symmetric"] as Mode[]) {
        const sizes = [1, 0];
        const as16 = refQuantize(values, [4, 16], sizes, mode, "int8", refF16);
        const as32 = refQuantize(values, [4, 16], sizes, mode, "int8", Math.fround);
        if (JSON.stringify(as16.q) === JSON.stringify(as32.q)) continue;
        found++;
        const q = quantized(tensor, { mode });
        assert.deepEqual([...q.data], as16.q);
        assert.deepEqual(scaleNumbers(q), as16.scale);
      }
    }
    assert.equal(found, 5, "expected float16 rows whose float32 arithmetic differs");
  });

  test("bfloat16 weights compute in float32 and store float32 scales", () => {
    const { tensor, values } = randomTensor(7, "bfloat16", [16, 16]);
    const q = quantized(tensor);
    const ref = refQuantize(values, [16, 16], [1, 0], "linear_symmetric", "int8", Math.fround);
    assert.ok(q.scale instanceof Float32Array);
    assert.deepEqual([...q.scale], ref.scale);
    assert.deepEqual([...q.data], ref.q);
  });

  test("float16 scales are returned as float16 bits", () => {
    const { tensor } = randomTensor(3, "float16", [8, 8]);
    const q = quantized(tensor);
    assert.ok(q.scale instanceof Uint16Array);
  });
});

describe("an output array given by the caller", () => {
  const tensor: Tensor = { name: "w", dtype: "float32", shape: [32, 48], data: new Float32Array(32 * 48) };
  const next = rng(7);
  tensor.data.forEach((_, i, a) => a[i] = next() * 2 - 1);

  test("is filled with the same values and returned, for JS and wasm sized tensors", () => {
    for (const [shape, dtype] of [[[32, 48], "int8"], [[4, 8], "uint8"], [[32, 48], "uint4"]] as const) {
      const t = { ...tensor, shape: [...shape], data: tensor.data.subarray(0, shape[0] * shape[1]) };
      const fresh = quantized(t, { dtype });
      const out = dtype === "int8" ? new Int8Array(t.data.length).fill(99) : new Uint8Array(t.data.length).fill(99);
      const result = quantizeTensor(t, { weightThreshold: 0, dtype }, out);
      assert.equal(result.kind, "quantized");
      if (result.kind !== "quantized") return;
      assert.equal(result.data, out);
      assert.deepEqual([...out], [...fresh.data]);
      assert.deepEqual([...result.scale], [...fresh.scale]);
    }
  });

  test("of the wrong type or length is refused before any work", () => {
    assert.throws(
      () => quantizeTensor(tensor, { weightThreshold: 0, dtype: "uint8" }, new Int8Array(32 * 48)),
      (e: unknown) =>
        e instanceof TypeError && /"w": out must be a Uint8Array for dtype uint8; got Int8Array/.test(e.message),
    );
    assert.throws(
      () => quantizeTensor(tensor, { weightThreshold: 0 }, new Int8Array(10)),
      (e: unknown) => e instanceof RangeError && /"w": out has 10 elements; needs 1536/.test(e.message),
    );
  });
});

describe("zero ranges", () => {
  test("an all-zero channel in linear mode gets scale 1 and zero point 0", () => {
    const data = new Float32Array(40);
    data.set([1, -2, 3, 4, 5, 6, 7, 8, 9, 10], 0); // row 0 non-zero, rows 1-3 zero
    const q = quantized({ name: "w", dtype: "float32", shape: [4, 10], data }, { mode: "linear" });
    assert.deepEqual([...q.scale.subarray(1)], [1, 1, 1]);
    assert.deepEqual([...q.zeroPoint!.subarray(1)], [0, 0, 0]);
    assert.deepEqual([...q.data.subarray(10)], new Array(30).fill(0));
    assert.equal(q.zeroRangeBlocks, 3);
  });

  test("an all-zero channel in uint8 symmetric sits at zero point 127", () => {
    const q = quantized({ name: "w", dtype: "float32", shape: [2, 8], data: new Float32Array(16) }, { dtype: "uint8" });
    assert.deepEqual([...q.zeroPoint!], [127, 127]);
    assert.deepEqual([...q.data], new Array(16).fill(127));
    assert.deepEqual([...dequantizeTensor(q).data], new Array(16).fill(0));
  });

  test("a float16 scale that underflows is stored as 1 and flushes the block to 0", () => {
    // max |w| = 2^-20: the float16 scale 2^-19 / 254 is below half the smallest subnormal.
    const tiny = [2 ** -20, -(2 ** -21), 2 ** -22, 0, 2 ** -20, 0, 0, 0];
    const big = [1, -1, 0.5, 0.25, 0, 0, 0, 0];
    const bits = encodeFloat16([...tiny, ...big], new Uint16Array(16));
    const q = quantized({ name: "w", dtype: "float16", shape: [2, 8], data: bits });
    assert.equal(q.zeroRangeBlocks, 1);
    assert.equal(scaleNumbers(q)[0], 1);
    assert.deepEqual([...q.data.subarray(0, 8)], new Array(8).fill(0));
    assert.deepEqual([...dequantizeTensor(q).data.subarray(0, 8)], new Array(8).fill(0));
  });
});

describe("errors name the tensor", () => {
  test("NaN is a NonFiniteError with its position", () => {
    const data = new Float32Array(4 * 8).fill(1);
    data[13] = NaN;
    assert.throws(
      () => quantizeTensor({ name: "h.0.mlp.weight", dtype: "float32", shape: [4, 8], data }, { weightThreshold: 0 }),
      (e: unknown) =>
        e instanceof NonFiniteError &&
        e.message === 'Cannot quantize tensor "h.0.mlp.weight": NaN at element 13 (index [1,5])',
    );
  });

  test("Infinity is a NonFiniteError for per-tensor and per-block too", () => {
    for (const granularity of ["per_tensor", "per_block"] as const) {
      const data = new Float32Array(4 * 8).fill(1);
      data[31] = -Infinity;
      assert.throws(
        () =>
          quantizeTensor({ name: "w", dtype: "float32", shape: [4, 8], data }, {
            weightThreshold: 0,
            granularity,
            blockSize: 4,
          }),
        /Cannot quantize tensor "w": -Infinity at element 31 \(index \[3,7\]\)/,
      );
    }
  });

  test("float16 linear mode with large weights fails instead of overflowing", () => {
    const bits = encodeFloat16(Array.from({ length: 32 }, (_, i) => 600 + i), new Uint16Array(32));
    assert.throws(
      () =>
        quantizeTensor({ name: "big", dtype: "float16", shape: [4, 8], data: bits }, {
          weightThreshold: 0,
          mode: "linear",
        }),
      (e: unknown) =>
        e instanceof Float16OverflowError && /"big"/.test(e.message) && /linear_symmetric/.test(e.message),
    );
  });

  test("float16 symmetric mode with weights above 32752 fails instead of overflowing", () => {
    const bits = encodeFloat16(new Array(32).fill(40000), new Uint16Array(32));
    assert.throws(
      () => quantizeTensor({ name: "huge", dtype: "float16", shape: [4, 8], data: bits }, { weightThreshold: 0 }),
      (e: unknown) =>
        e instanceof Float16OverflowError && /"huge"/.test(e.message) && /use a float32 source$/.test(e.message),
    );
  });

  test("data that does not fit the shape is a RangeError", () => {
    assert.throws(
      () => quantizeTensor({ name: "w", dtype: "float32", shape: [4, 8], data: new Float32Array(31) }),
      /Tensor "w" has 31 elements; shape \[4,8\] needs 32/,
    );
  });

  test("an axis outside the tensor is a ConfigError naming the tensor", () => {
    assert.throws(
      () => quantizeTensor(rows(new Array(8).fill(1), 4), { weightThreshold: 0, axis: 2 }),
      (e: unknown) =>
        e instanceof ConfigError &&
        /Cannot quantize tensor "w": axis 2 does not exist in shape \[4,8\]/.test(e.message),
    );
  });

  test("an invalid option names the field", () => {
    assert.throws(() => quantizeTensor(rows([1, 2], 8), { dtype: "int3" as "int4" }), /dtype/);
  });
});

describe("skip rules of SPEC.md Section 4", () => {
  const plan = (shape: number[], options: QuantizeOptions | null = {}, dtype = "float32") =>
    planTensor({ name: "x", dtype, shape }, options);
  test("non-float tensors are skipped as not_float", () => {
    assert.equal((plan([64, 64], {}, "int64") as { reason: string }).reason, "not_float");
  });
  test("null options exclude a tensor", () => {
    assert.equal((plan([64, 64], null) as { reason: string }).reason, "excluded");
  });
  test("rank 0 and rank 1 are skipped unless quantizeRank1", () => {
    assert.equal((plan([]) as { reason: string }).reason, "rank_below_2");
    assert.equal((plan([4096]) as { reason: string }).reason, "rank_below_2");
    const rank1 = plan([4096], { quantizeRank1: true });
    assert.equal(rank1.kind, "plan");
    if (rank1.kind === "plan") assert.equal(rank1.granularity, "per_tensor");
  });
  test("element counts not above weightThreshold are skipped", () => {
    assert.equal((plan([32, 64]) as { reason: string }).reason, "below_threshold"); // 2048 is not above 2048
    assert.equal(plan([2049, 1]).kind, "plan");
    assert.equal((plan([3, 3], { weightThreshold: 0 }) as { reason: string }).reason, "too_small");
  });
  test("a block size that does not divide its axis is skipped", () => {
    const skipped = plan([64, 100], { granularity: "per_block", blockSize: 32 });
    assert.equal((skipped as { reason: string }).reason, "block_size_mismatch");
  });
  test("quantizeTensor returns the skip with its reason", () => {
    const result = quantizeTensor(rows([1, 2, 3], 4));
    assert.equal(result.kind, "skipped");
    if (result.kind === "skipped") assert.match(result.message, /12 elements, not above weightThreshold 2048/);
  });
});

describe("4-bit packing", () => {
  test("packs least significant nibble first and round-trips odd lengths", () => {
    const next = rng(5);
    for (const length of [1, 2, 7, 64, 1001]) {
      const signed = Int8Array.from({ length }, () => Math.floor(next() * 16) - 8);
      assert.deepEqual(unpackInt4(packInt4(signed), length, true), signed);
      const unsigned = Uint8Array.from({ length }, () => Math.floor(next() * 16));
      const packed = packInt4(unsigned);
      assert.equal(packed.length, (length + 1) >> 1);
      assert.deepEqual(unpackInt4(packed, length, false), unsigned);
    }
    assert.deepEqual(packInt4(new Uint8Array([0x3, 0xa, 0x5])), new Uint8Array([0xa3, 0x05]));
  });

  test("unpacks into given memory, of the right signedness only", () => {
    const into = new Int8Array(8).fill(99);
    const got = unpackInt4(new Uint8Array([0xf1, 0x07]), 3, true, into);
    assert.deepEqual(got, new Int8Array([1, -1, 7]));
    assert.equal(got.buffer, into.buffer);
    assert.equal(into[3], 99);
    assert.throws(() => unpackInt4(new Uint8Array([0xf1]), 2, false, new Int8Array(2)), TypeError);
    assert.throws(() => unpackInt4(new Uint8Array([0xf1]), 2, true, new Int8Array(1)), TypeError);
  });
});

describe("dequantize", () => {
  test("in-range values come back within half a scale step", () => {
    for (const mode of ["linear", "linear_symmetric"] as Mode[]) {
      for (const dtype of ["int8", "uint8", "int4", "uint4"] as QType[]) {
        const { tensor, values } = randomTensor(11, "float32", [16, 32]);
        const q = quantized(tensor, { mode, dtype });
        const back = dequantizeTensor(q).data as Float32Array;
        for (let i = 0; i < values.length; i++) {
          const s = q.scale[Math.floor(i / 32)];
          assert.ok(
            Math.abs(values[i] - back[i]) <= s / 2 + 1e-6 * Math.abs(values[i]),
            `${mode} ${dtype} element ${i}`,
          );
        }
        const error = measureError(tensor, q);
        assert.ok(
          error.maxAbsError > 0 && error.snrDb > (dtype.endsWith("4") ? 10 : 30),
          `${mode} ${dtype}: ${error.snrDb} dB`,
        );
      }
    }
  });

  test("returns the source dtype", () => {
    const { tensor } = randomTensor(2, "float16", [8, 8]);
    const back = dequantizeTensor(quantized(tensor));
    assert.equal(back.dtype, "float16");
    assert.ok(back.data instanceof Uint16Array);
  });

  test("error figures on the last axis equal a direct float64 computation", () => {
    const { tensor, values } = randomTensor(12, "float32", [40, 24]);
    for (
      const options of [
        { axis: -1 },
        { axis: -1, mode: "linear", dtype: "uint8" },
        { granularity: "per_block", axis: -1, blockSize: 4 },
      ] as QuantizeOptions[]
    ) {
      const q = quantized(tensor, options);
      const [rows, cols] = [40, 24];
      const per = q.scaleShape; // [1, 24] per channel, [10, 24] per block of 4 rows
      let signal = 0, error = 0, maxAbs = 0;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const block = Math.floor(r / (rows / per[0])) * cols + c;
          const w = values[r * cols + c];
          const e = w - q.scale[block] * (q.data[r * cols + c] - (q.zeroPoint?.[block] ?? 0));
          signal += w * w;
          error += e * e;
          maxAbs = Math.max(maxAbs, Math.abs(e));
        }
      }
      const measured = measureError(tensor, q);
      assert.equal(measured.maxAbsError, maxAbs, JSON.stringify(options));
      assert.ok(Math.abs(measured.snrDb - 10 * Math.log10(signal / error)) < 1e-9, JSON.stringify(options));
    }
  });

  test("an exact quantization reports infinite SNR", () => {
    const t = rows([127, 1, -2, 3], 4);
    assert.equal(measureError(t, quantized(t)).snrDb, Infinity);
  });
});
