import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import {
  ChannelStatsStream,
  DequantizeStream,
  dequantizeTensor,
  parseConfig,
  QuantizeStream,
  quantizeTensor,
} from "@quantflow/quantflow";
import type { QuantizedSlab, QuantizedTensorInfo, QuantizeOptions, RawChunk, Slab, Tensor } from "@quantflow/quantflow";
import { encodeFloat16 } from "../src/float16.ts";
import { rng } from "./_reference.ts";
import { assemble, slabsOf } from "./_slabs.ts";

function randomTensor(name: string, shape: number[], seed: number, dtype: "float32" | "float16" = "float32"): Tensor {
  const next = rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  const values = Float32Array.from({ length: size }, (_, i) => (next() - 0.5) * (1 + (i % 7)));
  if (dtype === "float32") return { name, dtype, shape, data: values };
  return { name, dtype, shape, data: encodeFloat16(values, new Uint16Array(size)) };
}

async function collect(slabs: (Slab | RawChunk)[], stream: QuantizeStream): Promise<(QuantizedSlab | RawChunk)[]> {
  return await Array.fromAsync(ReadableStream.from(slabs).pipeThrough(stream));
}

function spoolFiles(): string[] {
  return readdirSync(tmpdir()).filter((f) => f.startsWith("quantflow-spool-"));
}

describe("QuantizeStream", () => {
  const granularities: [string, QuantizeOptions][] = [
    ["per_channel axis 0", { granularity: "per_channel" }],
    ["per_channel axis -1", { granularity: "per_channel", axis: -1 }],
    ["per_channel axis 1 of a rank-4 tensor", { granularity: "per_channel", axis: 1 }],
    ["per_tensor", { granularity: "per_tensor" }],
    ["per_block", { granularity: "per_block", blockSize: 4 }],
    ["per_block axis -1", { granularity: "per_block", axis: -1, blockSize: 4 }],
  ];
  for (const [label, options] of granularities) {
    for (const dtype of ["float32", "float16"] as const) {
      for (const [mode, qtype] of [["linear_symmetric", "int8"], ["linear", "uint8"], ["linear", "int4"]] as const) {
        test(`equals quantizeTensor bit for bit: ${label}, ${dtype}, ${mode} ${qtype}`, async () => {
          const shape = label.includes("rank-4") ? [12, 8, 3, 3] : [24, 16];
          const tensor = randomTensor("w", shape, shape[0] + label.length, dtype);
          const opts = { ...options, mode, dtype: qtype, weightThreshold: 0 };
          const expected = quantizeTensor(tensor, opts);
          assert.equal(expected.kind, "quantized");
          if (expected.kind !== "quantized") return;
          for (
            const [cut, rereadable] of [[{ rows: 5 }, false], [{ rows: 5 }, true], [{ rows: 24 }, false], [{
              elements: 8,
            }, false]] as const
          ) {
            const out = await collect(slabsOf(tensor, cut, rereadable), new QuantizeStream(opts));
            const got = assemble(out, "w");
            assert.deepEqual(got.data, expected.data, `${JSON.stringify(cut)} rereadable=${rereadable}`);
            assert.deepEqual(got.scale, expected.scale);
            assert.deepEqual(
              [...(got.zeroPoint ?? [])].some((z) => z !== 0) ? got.zeroPoint : undefined,
              expected.zeroPoint,
            );
          }
        });
      }
    }
  }

  test("passes raw chunks and skipped tensors through, and reports every tensor", async () => {
    const weight = randomTensor("fc.weight", [64, 64], 1);
    const bias = randomTensor("fc.bias", [64, 1], 2);
    const ids: RawChunk = { kind: "raw", name: "ids", dtype: "I64", shape: [4], offset: 0, bytes: new Uint8Array(32) };
    const stream = new QuantizeStream(parseConfig({ tensors: { "*.bias": null } }));
    const out = await collect([...slabsOf(weight, { rows: 16 }), ids, ...slabsOf(bias, { rows: 64 })], stream);
    assert.deepEqual(out.map((c) => c.kind), ["quantized", "quantized", "quantized", "quantized", "raw", "raw"]);
    const skipped = out[5] as RawChunk;
    assert.equal(skipped.dtype, "F32");
    assert.deepEqual(new Float32Array(skipped.bytes.buffer, skipped.bytes.byteOffset, 64), bias.data);
    const { tensors, totals } = stream.report;
    assert.deepEqual(tensors.map((t) => [t.name, t.decision, t.reason]), [
      ["fc.weight", "quantized", undefined],
      ["ids", "skipped", "not_float"],
      ["fc.bias", "skipped", "excluded"],
    ]);
    // int8 data plus one float32 scale per row, against 4 bytes per element.
    assert.equal(tensors[0].quantizedBytes, 64 * 64 + 64 * 4);
    assert.equal(totals.ratioVsFloat32, (64 * 64 * 4 + 32 + 256) / (64 * 64 + 256 + 32 + 256));
    assert.ok(tensors[0].snrDb! > 35);
  });

  test("spools a two-pass tensor without a source and removes the spool file", async () => {
    const before = spoolFiles().length;
    const tensor = randomTensor("emb", [40, 12], 3);
    const stream = new QuantizeStream({ granularity: "per_channel", axis: -1, weightThreshold: 0 });
    const reader = ReadableStream.from(slabsOf(tensor, { rows: 8 })).pipeThrough(stream).getReader();
    const first = await reader.read();
    assert.equal(spoolFiles().length, before + 1, "spooled during the second pass");
    assert.equal((first.value as QuantizedSlab).scale.length, 12);
    while (!(await reader.read()).done);
    assert.equal(spoolFiles().length, before);
  });

  test("cancelling mid-stream removes the spool and cancels the input", async () => {
    const before = spoolFiles().length;
    let cancelled = false;
    const slabs = slabsOf(randomTensor("emb", [40, 12], 4), { rows: 8 });
    const input = new ReadableStream<Slab>({
      pull(c) {
        const next = slabs.shift();
        if (next) c.enqueue(next);
        else c.close();
      },
      cancel() {
        cancelled = true;
      },
    });
    const reader = input.pipeThrough(new QuantizeStream({ granularity: "per_tensor", weightThreshold: 0 })).getReader();
    await reader.read();
    await reader.cancel("enough");
    assert.equal(spoolFiles().length, before);
    assert.ok(cancelled || slabs.length === 0);
  });

  test("a NaN errors the stream with the tensor name and removes the spool", async () => {
    const before = spoolFiles().length;
    const tensor = randomTensor("h.0.w", [16, 16], 5);
    (tensor.data as Float32Array)[200] = NaN;
    await assert.rejects(
      collect(slabsOf(tensor, { rows: 4 }), new QuantizeStream({ granularity: "per_tensor", weightThreshold: 0 })),
      /Cannot quantize tensor "h.0.w": NaN at element 200 \(index \[12,8\]\)/,
    );
    assert.equal(spoolFiles().length, before);
    assert.ok(existsSync(tmpdir()));
  });

  test("a tensor that ends early or arrives out of order is a FormatError", async () => {
    const tensor = randomTensor("w", [16, 16], 6);
    const slabs = slabsOf(tensor, { rows: 4 });
    await assert.rejects(
      collect(slabs.slice(0, 3), new QuantizeStream({ weightThreshold: 0 })),
      /Tensor "w" ended before all its elements arrived/,
    );
    await assert.rejects(
      collect([slabs[0], slabs[2]], new QuantizeStream({ weightThreshold: 0 })),
      /Slab of tensor "w" starts at element 128, expected 64/,
    );
  });
});

describe("DequantizeStream", () => {
  for (
    const [label, options] of [
      ["per_channel", {}],
      ["per_tensor", { granularity: "per_tensor" }],
      ["per_channel axis -1 affine", { axis: -1, mode: "linear", dtype: "uint8" }],
      ["per_block int4", { granularity: "per_block", blockSize: 4, dtype: "int4" }],
    ] as [string, QuantizeOptions][]
  ) {
    test(`equals dequantizeTensor: ${label}`, async () => {
      const tensor = randomTensor("w", [24, 16], 9, "float16");
      const opts = { ...options, weightThreshold: 0 };
      const expected = quantizeTensor(tensor, opts);
      if (expected.kind !== "quantized") throw new Error("skipped");
      const out = await Array.fromAsync(
        ReadableStream.from(slabsOf(tensor, { rows: 5 })).pipeThrough(new QuantizeStream(opts)).pipeThrough(
          new DequantizeStream(),
        ),
      );
      const data = new Uint16Array(24 * 16);
      for (const s of out as Slab[]) data.set(s.data as Uint16Array, s.offset);
      assert.deepEqual(data, dequantizeTensor(expected).data);
    });
  }
});

describe("DequantizeStream gathers scales slab by slab", () => {
  const base = { sourceDType: "float32", dtype: "int8", mode: "linear_symmetric", scaleDType: "float32" } as const;
  const slab = (tensor: QuantizedTensorInfo, offset: number, n: number, from: number, to: number): QuantizedSlab => ({
    kind: "quantized",
    tensor,
    offset,
    data: new Int8Array(n).fill(1),
    scaleOffset: from,
    scale: Float32Array.from({ length: to - from }, (_, i) => from + i + 1),
  });
  const run = (slabs: QuantizedSlab[]) =>
    Array.fromAsync(ReadableStream.from(slabs).pipeThrough(new DequantizeStream())).then((out) =>
      (out as Slab[]).flatMap((s) => Array.from(s.data))
    );
  const rows: QuantizedTensorInfo = {
    ...base,
    name: "rows",
    granularity: "per_channel",
    axis: 0,
    shape: [4, 8],
    blockSizes: [1, 8],
    scaleShape: [4, 1],
  };

  test("split rows: the first slab carries every scale, or each slab those of the rows that begin in it", async () => {
    const expected = [1, 2, 3, 4].flatMap((s) => Array(8).fill(s));
    assert.deepEqual(await run([slab(rows, 0, 12, 0, 4), slab(rows, 12, 20, 4, 4)]), expected);
    assert.deepEqual(await run([slab(rows, 0, 12, 0, 2), slab(rows, 12, 20, 2, 4)]), expected);
    // Whole rows that carry their own scales again, after a first slab that carried all: accepted.
    assert.deepEqual(await run([slab(rows, 0, 16, 0, 4), slab(rows, 16, 16, 2, 4)]), expected);
  });

  test("a slab whose scales are missing or out of order is a FormatError, whatever the layout", async () => {
    // Channels on the last axis: any slab touches every block, so the first must carry all 8.
    const columns: QuantizedTensorInfo = {
      ...base,
      name: "columns",
      granularity: "per_channel",
      axis: 1,
      shape: [4, 8],
      blockSizes: [4, 1],
      scaleShape: [1, 8],
    };
    await assert.rejects(run([slab(columns, 0, 10, 0, 4), slab(columns, 10, 22, 4, 8)]), /without its scales/);
    await assert.rejects(run([slab(rows, 0, 8, 0, 1), slab(rows, 8, 8, 2, 3)]), /where scale 1 of 4 comes next/);
    await assert.rejects(run([slab(rows, 0, 8, 0, 1), slab(rows, 8, 8, 1, 1)]), /without its scales/);
  });
});

describe("ChannelStatsStream", () => {
  test("accumulates per-channel min and max across slabs, on any axis", async () => {
    const tensor = randomTensor("w", [24, 16], 10);
    const values = tensor.data as Float32Array;
    const [stats] = await Array.fromAsync(
      ReadableStream.from(slabsOf(tensor, { rows: 5 })).pipeThrough(
        new ChannelStatsStream({ axis: -1, weightThreshold: 0 }),
      ),
    );
    assert.deepEqual(stats.scaleShape, [1, 16]);
    for (let c = 0; c < 16; c++) {
      const column = Array.from({ length: 24 }, (_, r) => values[r * 16 + c]);
      assert.equal(stats.mins[c], Math.min(...column));
      assert.equal(stats.maxs[c], Math.max(...column));
    }
  });
});
