import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Message } from "apache-arrow";
import {
  ArrowIpcEncodeStream,
  FormatError,
  memorySource,
  packInt4,
  parseConfig,
  quantizeTensor,
  readArrowIPC,
  readSafetensors,
  writeFileAtomically,
} from "@quantflow/quantflow";
import type { FloatDType, QuantizedSlab, QuantizeOptions, Tensor, TensorReport } from "@quantflow/quantflow";
import { quantizeFile, quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { failedJobsLeaveNextJobAlone } from "./_failed_jobs.ts";
import { dequantizeFile } from "../streams/dequantize_pipeline.ts";
import { main } from "../src/cli.ts";
import { decodeFloat16, encodeBfloat16, encodeFloat16 } from "../src/float16.ts";
import { tinyGpt2 } from "../src/demo_model.ts";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";
import { rng } from "./_reference.ts";
import { bytesOf, checkpoint, rawFile, readCheckpoint } from "./_checkpoint.ts";

const CODES: Record<FloatDType, string> = { float32: "F32", float16: "F16", bfloat16: "BF16" };

function randomTensor(name: string, dtype: FloatDType, shape: number[], seed: number): Tensor {
  const next = rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  const values = Float32Array.from({ length: size }, (_, i) => (next() - 0.5) * (1 + (i % 3)));
  if (dtype === "float32") return { name, dtype, shape, data: values };
  const bits = new Uint16Array(size);
  return { name, dtype, shape, data: dtype === "float16" ? encodeFloat16(values, bits) : encodeBfloat16(values, bits) };
}

function fileOf(tensors: Tensor[], extra: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }> = {}) {
  return checkpoint({
    ...Object.fromEntries(
      tensors.map((t) => [t.name, { dtype: CODES[t.dtype], shape: [...t.shape], bytes: bytesOf(t.data) }]),
    ),
    ...extra,
  });
}

const dir = mkdtempSync(join(tmpdir(), "quantflow-test-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
function path(name = "f.safetensors"): string {
  return join(dir, `${counter++}-${name}`);
}

describe("quantizeFile", () => {
  const cases: [string, QuantizeOptions][] = [
    ["per_channel", {}],
    ["per_channel axis -1", { axis: -1 }],
    ["per_tensor affine uint8", { granularity: "per_tensor", mode: "linear", dtype: "uint8" }],
    ["per_block int4", { granularity: "per_block", blockSize: 16, dtype: "int4" }],
    ["per_channel affine uint4", { mode: "linear", dtype: "uint4" }],
  ];
  for (const dtype of ["float32", "float16", "bfloat16"] as FloatDType[]) {
    for (const [label, options] of cases) {
      test(`writes quantizeTensor's numbers: ${dtype} ${label}`, async () => {
        const tensors = [randomTensor("a.weight", dtype, [64, 48], 1), randomTensor("b.weight", dtype, [33, 16, 3], 2)];
        const input = path();
        writeFileSync(input, fileOf(tensors));
        const output = path();
        // A small slab budget makes every tensor span several slabs.
        const report = await quantizeFile(input, output, { config: options, slabBytes: 1000 });
        const { tensors: out, metadata } = readCheckpoint(readFileSync(output));
        const records = JSON.parse(metadata.quantflow).tensors;
        for (const t of tensors) {
          const expected = quantizeTensor(t, options);
          if (expected.kind === "skipped") {
            assert.deepEqual(out[t.name].bytes, bytesOf(t.data));
            continue;
          }
          const fourBit = expected.dtype.endsWith("4");
          assert.deepEqual(out[t.name].bytes, fourBit ? packInt4(expected.data) : bytesOf(expected.data), t.name);
          assert.deepEqual(out[`${t.name}.scale`].bytes, bytesOf(expected.scale));
          assert.deepEqual(out[`${t.name}.scale`].shape, expected.scaleShape);
          if (expected.zeroPoint) assert.deepEqual(out[`${t.name}.zero_point`].bytes, bytesOf(expected.zeroPoint));
          assert.equal(records[t.name].sourceDType, dtype);
          assert.deepEqual(records[t.name].shape, t.shape);
        }
        assert.equal(report.tensors.length, 2);
      });
    }
  }

  test("applies overrides and passes other dtypes through byte for byte", async () => {
    const ids = new BigInt64Array([1n, 2n, 3n]);
    const input = path();
    const a = randomTensor("h.0.attn.c_attn.weight", "float32", [64, 96], 3);
    const b = randomTensor("wte.weight", "float32", [100, 64], 4);
    writeFileSync(input, fileOf([a, b], { ids: { dtype: "I64", shape: [3], bytes: bytesOf(ids) } }));
    const output = path();
    const config = parseConfig({ tensors: { "*.c_attn.weight": { axis: -1 }, "wte.weight": null } });
    const report = await quantizeFile(input, output, { config });
    const { tensors: out } = readCheckpoint(readFileSync(output));
    assert.deepEqual(out["h.0.attn.c_attn.weight.scale"].shape, [1, 96]);
    assert.deepEqual(out["wte.weight"].bytes, bytesOf(b.data));
    assert.deepEqual(out.ids.bytes, bytesOf(ids));
    assert.deepEqual(report.tensors.map((t) => t.reason), [undefined, "excluded", "not_float"]);
  });

  test("quantize then dequantize restores shapes and dtypes within half a step", async () => {
    const input = path();
    writeFileSync(input, tinyGpt2({ layers: 1, hidden: 64 }));
    const quantized = path();
    await quantizeFile(input, quantized, { config: { dtype: "int4", granularity: "per_block", blockSize: 16 } });
    const restored = path();
    await dequantizeFile(quantized, restored, { slabBytes: 999 });
    const before = readCheckpoint(readFileSync(input)).tensors;
    const after = readCheckpoint(readFileSync(restored)).tensors;
    assert.deepEqual(Object.keys(after), Object.keys(before));
    let compared = 0;
    for (const [name, t] of Object.entries(before)) {
      assert.equal(after[name].dtype, t.dtype);
      assert.deepEqual(after[name].shape, t.shape);
      if (t.dtype !== "F32") continue;
      const x = new Float32Array(t.bytes.buffer), y = new Float32Array(after[name].bytes.buffer);
      const peak = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= peak / 7 / 2 + 1e-7, `${name}[${i}]`);
      compared++;
    }
    assert.ok(compared > 10);
  });

  test("dequantizeFile computes scale * (q - zero_point) in the source's float type, exactly", async () => {
    // Rows of 48 in a [64, 48] tensor; blocks of 16 along the row for per_block. Written out here, independently of
    // the kernels: q from the file (4-bit unpacked, least significant nibble first), the product rounded once.
    const cases: [string, QuantizeOptions, (i: number) => number][] = [
      ["int8 per channel", {}, (i) => Math.floor(i / 48)],
      ["uint8 affine per channel", { mode: "linear", dtype: "uint8" }, (i) => Math.floor(i / 48)],
      ["int4 per block", { dtype: "int4", granularity: "per_block", blockSize: 16 }, (i) => Math.floor(i / 16)],
      ["uint4 affine per channel", { mode: "linear", dtype: "uint4" }, (i) => Math.floor(i / 48)],
      ["int8 affine per channel", { mode: "linear", dtype: "int8" }, (i) => Math.floor(i / 48)],
    ];
    for (const dtype of ["float32", "float16", "bfloat16"] as FloatDType[]) {
      for (const [label, config, blockOf] of cases) {
        const input = path();
        writeFileSync(input, fileOf([randomTensor("w", dtype, [64, 48], 9), randomTensor("v", dtype, [48, 64], 10)]));
        const quantized = path();
        await quantizeFile(input, quantized, { config });
        const restored = path();
        // A small slab budget: dozens of slabs, so the reused output buffers go round several times.
        await dequantizeFile(quantized, restored, { slabBytes: 200 });
        const q = readCheckpoint(readFileSync(quantized)).tensors;
        const out = readCheckpoint(readFileSync(restored)).tensors;
        const where = `${dtype} ${label}`;
        assert.equal(out.w.dtype, CODES[dtype], where);
        const stored = q.w.bytes;
        const unsigned = config.dtype === "uint8" || config.dtype === "uint4";
        const nibble = (i: number) => (stored[i >> 1] >> ((i & 1) * 4)) & 15;
        const value = config.dtype === "int4" || config.dtype === "uint4"
          ? (i: number) => unsigned ? nibble(i) : (nibble(i) << 28) >> 28
          : (i: number) => unsigned ? stored[i] : (stored[i] << 24) >> 24;
        const scaleBytes = q["w.scale"].bytes;
        const scales = q["w.scale"].dtype === "F16"
          ? decodeFloat16(
            new Uint16Array(scaleBytes.buffer, scaleBytes.byteOffset, scaleBytes.length / 2),
            new Float32Array(scaleBytes.length / 2),
          )
          : Array.from(new Float32Array(scaleBytes.buffer, scaleBytes.byteOffset, scaleBytes.length / 4));
        const zpBytes = q["w.zero_point"]?.bytes;
        const zp = zpBytes && (unsigned ? zpBytes : new Int8Array(zpBytes.buffer, zpBytes.byteOffset, zpBytes.length));
        const expected = Float32Array.from({ length: 64 * 48 }, (_, i) => {
          const b = blockOf(i);
          const product = scales[b] * (value(i) - (zp ? zp[b] : 0));
          return dtype === "float16" ? Math.f16round(product) : product;
        });
        const bytes = dtype === "float32"
          ? bytesOf(expected)
          : bytesOf((dtype === "float16" ? encodeFloat16 : encodeBfloat16)(expected, new Uint16Array(expected.length)));
        assert.deepEqual(out.w.bytes, bytes, where);
      }
    }
  });

  test("reads the same result from a stream input, spooling two-pass tensors", async () => {
    const tensor = randomTensor("w", "float32", [40, 30], 5);
    const bytes = fileOf([tensor]);
    const options = { config: { granularity: "per_tensor" as const }, slabBytes: 512 };
    const fromStream = await quantizeSafetensors(ReadableStream.from([bytes.slice(0, 100), bytes.slice(100)]), options);
    const fromBytes = await quantizeSafetensors(bytes, options);
    const a = new Uint8Array(await new Response(fromStream.output).arrayBuffer());
    const b = new Uint8Array(await new Response(fromBytes.output).arrayBuffer());
    assert.deepEqual(a, b);
  });
});

describe("dequantize checks the quantization records first", () => {
  const record = {
    sourceDType: "float32",
    dtype: "int8",
    mode: "linear_symmetric",
    granularity: "per_channel",
    axis: 0,
    shape: [4, 8],
    blockSizes: [1, 8],
    scaleShape: [4, 1],
    scaleDType: "float32",
  };
  const file = (rec: object, scaleBytes = 16) =>
    checkpoint({
      w: { dtype: "I8", shape: [4, 8], bytes: new Uint8Array(32) },
      "w.scale": { dtype: "F32", shape: [scaleBytes / 4, 1], bytes: new Uint8Array(scaleBytes) },
    }, { quantflow: JSON.stringify({ format: 1, tensors: { w: rec } }) });
  const cases: [string, Uint8Array, RegExp][] = [
    ["a block size that does not divide", file({ ...record, blockSizes: [3, 8] }), /does not divide/],
    ["a scale tensor of the wrong size", file(record, 12), /"w.scale" holds 12 bytes, 16 expected/],
    ["an unknown dtype", file({ ...record, dtype: "int7" }), /unknown dtype "int7"/],
    [
      "a shape that does not match the data",
      file({ ...record, shape: [8, 8], blockSizes: [1, 8] }),
      /"w" holds 32 bytes, 64/,
    ],
    ["a missing zero point", file({ ...record, mode: "linear" }), /tensor "w.zero_point" is missing/],
  ];
  for (const [label, bytes, message] of cases) {
    test(`${label} is a FormatError naming the tensor, and nothing is written`, async () => {
      const input = path();
      writeFileSync(input, bytes);
      const output = path();
      await assert.rejects(
        dequantizeFile(input, output),
        (e: unknown) =>
          e instanceof FormatError && /Cannot dequantize tensor "w": /.test(e.message) && message.test(e.message),
      );
      assert.equal(existsSync(output), false);
    });
  }
});

describe("buffer reuse", () => {
  // Axis -1 and per tensor (two passes, a whole first pass through the input ring), per block, 4-bit packing.
  const configs = [
    parseConfig({ tensors: { "*.c_attn.weight": { axis: -1 }, "wte.weight": null } }),
    parseConfig({ global: { granularity: "per_tensor", dtype: "int4", mode: "linear" } }),
    parseConfig({ global: { granularity: "per_block", blockSize: 16, dtype: "uint8" } }),
  ];

  test("slabs read into the wasm kernels' memory and quantized in place give the JavaScript kernels' bytes", async () => {
    const float32 = path();
    writeFileSync(float32, tinyGpt2({ layers: 2, hidden: 64 }));
    // 16-bit slabs decode with the wasm kernel into the stream's scratch, inside the lease.
    const sixteen = path();
    writeFileSync(
      sixteen,
      fileOf([randomTensor("h.0.f16", "float16", [96, 64], 5), randomTensor("h.0.bf16", "bfloat16", [64, 96], 6)]),
    );
    for (const [input, config] of [...configs.map((c) => [float32, c] as const), [sixteen, configs[0]] as const]) {
      for (const format of ["safetensors", "arrows"] as const) {
        const ext = format === "arrows" ? ".arrows" : ".safetensors";
        // 4 KiB slabs (1024 float32 values, above the wasm threshold): the rings wrap many times.
        const leased = path() + ext;
        await quantizeFile(input, leased, { config, slabBytes: 4096 });
        const plain = path() + ext;
        setWasmKernelsEnabled(false);
        try {
          await quantizeFile(input, plain, { config, slabBytes: 4096 });
        } finally {
          setWasmKernelsEnabled(true);
        }
        assert.deepEqual(readFileSync(leased), readFileSync(plain), `${format} ${JSON.stringify(config.global)}`);
      }
    }
    const lease = wasmKernels()?.lease(1);
    assert.ok(lease, "the job released its lease");
    lease.release();
  });

  test("a job whose sink fails writes nothing more into its buffers once the next job has them", async () => {
    await failedJobsLeaveNextJobAlone(() => tinyGpt2({ layers: 2, hidden: 64 }), 2048);
  });

  test("a cancel stops the work at the next slab, even in a two-pass tensor's first pass", async () => {
    const model = fileOf([randomTensor("w", "float32", [512, 512], 11)]); // 256 slabs of 4 KiB
    let reads = 0;
    const open = () => {
      const source = memorySource(model);
      return { ...source, read: (position: number, into: Uint8Array) => (reads++, source.read(position, into)) };
    };
    const job = await quantizeSafetensors(open, { config: { granularity: "per_tensor" }, slabBytes: 4096 });
    const reader = job.output.getReader();
    const first = reader.read(); // the first output needs the whole first pass
    const before = reads;
    await reader.cancel();
    await first;
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.ok(reads - before <= 4, `${reads - before} reads after the cancel (${before} before it)`);
  });

  test("reusing slab buffers changes no byte of the output, in either format", async () => {
    const model = tinyGpt2({ layers: 2, hidden: 64 });
    for (const config of configs) {
      for (const format of ["safetensors", "arrows"] as const) {
        // 2 KiB slabs: hundreds of slabs cycle through the 8-slot rings many times over.
        const run = async (reuseBuffers: boolean, input: string | ReadableStream<Uint8Array>) => {
          const job = await quantizeSafetensors(input, { config, format, slabBytes: 2048, reuseBuffers });
          // A consumer that is done with each chunk at once (copies it), as the reuse contract asks;
          // Response.arrayBuffer() would hold every chunk to the end.
          const copies: number[][] = [];
          for await (const chunk of job.output) copies.push(Array.from(chunk));
          return Uint8Array.from(copies.flat());
        };
        const expected = await run(false, ReadableStream.from([model]));
        const file = path();
        writeFileSync(file, model);
        assert.deepEqual(await run(true, file), expected, `${format} from a file`);
        assert.deepEqual(
          await run(true, ReadableStream.from([model.slice(0, 999), model.slice(999)])),
          expected,
          `${format} from a stream`,
        );
      }
    }
  });
});

describe("Arrow IPC output", () => {
  test("carries the same numbers as the safetensors output, read back independently", async () => {
    const { tableFromIPC } = await import("@uwdata/flechette");
    const input = path();
    writeFileSync(input, tinyGpt2({ layers: 1, hidden: 64 }));
    const options = { config: { granularity: "per_block" as const, blockSize: 16, dtype: "int4" as const } };
    const st = path(), arrows = path("out.arrows");
    await quantizeFile(input, st, options);
    const report = await quantizeFile(input, arrows, options);
    const { tensors } = readCheckpoint(readFileSync(st));
    const slabs = await Array.fromAsync(readArrowIPC(new Uint8Array(readFileSync(arrows))));
    const quantized = slabs.filter((s) => s.kind === "quantized");
    const names = [...new Set(quantized.map((s) => s.tensor.name))];
    assert.equal(names.length, report.totals.quantized);
    for (const name of names) {
      const mine = quantized.filter((s) => s.tensor.name === name) as QuantizedSlab[];
      const q = new Int8Array(mine[0].tensor.shape.reduce((a, b) => a * b, 1));
      for (const s of mine) q.set(s.data, s.offset);
      assert.deepEqual(packInt4(q), tensors[name].bytes, name);
    }
    // Non-float tensors cannot be written as Arrow slabs: the report says so.
    assert.ok(report.tensors.filter((t) => t.dtype === "I64" || t.dtype === "U8").every((t) => t.omitted));
    // flechette, a second Arrow implementation, reads the first tensor's stream.
    const table = tableFromIPC(new Uint8Array(readFileSync(arrows)));
    assert.ok(table.numRows > 0);
  });
});

/** The IPC messages of a `.arrows` file: where each starts and ends, and whether it is a schema. */
function messagesOf(bytes: Uint8Array): { start: number; end: number; schema: boolean }[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: { start: number; end: number; schema: boolean }[] = [];
  for (let at = 0; at < bytes.length;) {
    const metaLength = view.getInt32(at + 4, true);
    if (metaLength === 0) {
      at += 8; // end of a stream
      continue;
    }
    const message = Message.decode(bytes.subarray(at + 8, at + 8 + metaLength));
    const end = at + 8 + metaLength + Number(message.bodyLength);
    out.push({ start: at, end, schema: message.isSchema() });
    at = end;
  }
  return out;
}

describe("Arrow IPC input", () => {
  const gpt2 = () => tinyGpt2({ layers: 1, hidden: 64 });
  const halves = () =>
    fileOf([
      randomTensor("h.weight", "float16", [64, 48], 12),
      randomTensor("b.weight", "bfloat16", [48, 64], 13),
      randomTensor("h.bias", "float16", [48], 14),
      randomTensor("empty.weight", "float32", [0, 4], 21), // no elements: an empty stream, kept
    ]);
  const configs: [string, QuantizeOptions, () => Uint8Array, number?][] = [
    ["int4 per block", { granularity: "per_block", blockSize: 16, dtype: "int4" }, gpt2],
    // Hundreds of small batches: the reader's reused buffers go round many times while slabs are in flight.
    ["int8 per channel, slabs of 2 KiB", {}, gpt2, 2048],
    // Rows longer than a slab (two passes; the first slab carries every scale, later batches repeat them).
    ["int8 per channel, rows split across slabs", {}, gpt2, 128],
    [
      "uint4 per block, rows split across slabs",
      { granularity: "per_block", blockSize: 16, mode: "linear", dtype: "uint4" },
      gpt2,
      128,
    ],
    [
      "uint8 affine per tensor (scales in the schema)",
      { granularity: "per_tensor", mode: "linear", dtype: "uint8" },
      gpt2,
    ],
    ["int8 per channel on axis -1 (scales in the schema)", { axis: -1 }, gpt2],
    ["float16 and bfloat16 sources", { mode: "linear", dtype: "uint4" }, halves],
  ];
  for (const [label, config, make, slabBytes] of configs) {
    test(`dequantize and inspect read a .arrows file as its .safetensors twin: ${label}`, async () => {
      const input = path();
      writeFileSync(input, make());
      const st = path(), arrows = path("q.arrows");
      await quantizeFile(input, st, { config });
      await quantizeFile(input, arrows, { config, slabBytes });
      const fromSt = path(), fromArrows = path(), arrowsToArrows = path("dq.arrows");
      const count = await dequantizeFile(st, fromSt);
      assert.equal(await dequantizeFile(arrows, fromArrows), count);
      assert.equal(await dequantizeFile(arrows, arrowsToArrows), count);
      // The Arrow file lacks the non-float tensors (the layout has no place for them); every other tensor matches.
      const expected = readCheckpoint(readFileSync(fromSt)).tensors;
      const got = readCheckpoint(readFileSync(fromArrows)).tensors;
      assert.ok(Object.keys(got).length >= 3);
      if (make === halves) assert.deepEqual(got["empty.weight"].shape, [0, 4]);
      for (const [name, t] of Object.entries(got)) assert.deepEqual(t, expected[name], name);
      const slabs = await Array.fromAsync(readArrowIPC(new Uint8Array(readFileSync(arrowsToArrows))));
      for (const slab of slabs) {
        const bytes = expected[slab.tensor.name].bytes;
        const at = slab.offset * slab.data.BYTES_PER_ELEMENT;
        assert.deepEqual(bytesOf(slab.data), bytes.subarray(at, at + slab.data.byteLength), slab.tensor.name);
      }
      // inspect: the same tensors and records as the safetensors twin (there, NAME.scale is a tensor of its own).
      const summary = async (file: string) => {
        const lines: string[] = [];
        const log = console.log;
        console.log = (text: string) => lines.push(text);
        try {
          assert.equal(await main(["inspect", file, "--json"]), 0);
        } finally {
          console.log = log;
        }
        return JSON.parse(lines.join("\n"));
      };
      const a = await summary(arrows), b = await summary(st);
      assert.equal(a.format, "arrows");
      const twins = new Map(b.tensors.map((t: { name: string }) => [t.name, t]));
      for (const t of a.tensors) {
        const twin = twins.get(t.name) as { quantized?: unknown; shape: number[]; dtype: string };
        assert.deepEqual(t.quantized, twin.quantized, t.name);
        if (!t.quantized) assert.deepEqual([t.dtype, t.shape], [twin.dtype, twin.shape], t.name);
      }
      assert.equal(a.tensors.filter((t: { quantized?: unknown }) => t.quantized).length, count);
    });
  }

  test("a truncated or damaged .arrows file: exit 1 and no output file", async () => {
    const input = path(), arrows = path("q.arrows");
    writeFileSync(
      input,
      fileOf([randomTensor("w", "float32", [64, 64], 9), randomTensor("v", "float32", [64, 32], 10)]),
    );
    await quantizeFile(input, arrows);
    const whole = readFileSync(arrows);
    const damaged = new Uint8Array(whole);
    damaged.fill(7, 600, 700); // inside the first schema message
    const outputs: string[] = [];
    for (
      const [label, bytes, message] of [
        ["cut", whole.subarray(0, whole.length - 3000), /truncated/],
        ["damaged", damaged, /Arrow/],
      ] as const
    ) {
      const bad = path(`${label}.arrows`);
      writeFileSync(bad, bytes);
      const output = path("out.safetensors");
      outputs.push(basename(output));
      for (const command of [["dequantize", bad, "-o", output], ["inspect", bad]]) {
        const errors: string[] = [];
        const original = console.error;
        console.error = (text: string) => errors.push(text);
        try {
          assert.equal(await main(command), 1, `${label} ${command[0]}`);
        } finally {
          console.error = original;
        }
        assert.match(errors.join("\n"), message, `${label} ${command[0]}`);
      }
    }
    // Neither the files nor their temporary twins (`NAME.<random>.tmp`).
    assert.deepEqual(readdirSync(dir).filter((f) => outputs.some((o) => f.startsWith(o))), []);
  });

  test("quantize reads a .arrows file of float slabs into the bytes its safetensors twin gives", async () => {
    const input = path(), floats = path("f.arrows");
    writeFileSync(
      input,
      fileOf([
        randomTensor("a.weight", "float32", [64, 48], 15),
        randomTensor("b.weight", "float16", [33, 16, 3], 16),
        randomTensor("c.bias", "bfloat16", [48], 17),
      ]),
    );
    const { chunks } = await readSafetensors(input, { slabBytes: 1000 });
    await chunks.pipeThrough(new ArrowIpcEncodeStream()).pipeTo(writeFileAtomically(floats));
    let quantized = "";
    for (const config of [{}, { granularity: "per_tensor", mode: "linear", dtype: "uint4" }] as QuantizeOptions[]) {
      const fromSt = quantized = path("q.arrows"), fromArrows = path("q.arrows");
      const expected = await quantizeFile(input, fromSt, { config, slabBytes: 1000 });
      const progress: number[] = [];
      const warnings: string[] = [];
      const got = await quantizeFile(floats, fromArrows, {
        config,
        workers: 1,
        onWarning: (message) => warnings.push(message),
        onProgress: (done, total) => progress.push(done / total),
      });
      assert.deepEqual(warnings, ["workers do not apply to an Arrow input: it is quantized in this thread"]);
      assert.deepEqual(readFileSync(fromArrows), readFileSync(fromSt), JSON.stringify(config));
      // The report's sums are added in an order that depends on how the values were cut (slabs here, staged
      // chunks there): within 1e-6 of each other relatively, as the kernels promise (src/wasm_kernels.ts), so
      // the SNR within 1e-5 dB. Everything else is identical.
      const withoutSnr = (r: TensorReport) => ({ ...r, snrDb: undefined });
      assert.deepEqual(got.tensors.map(withoutSnr), expected.tensors.map(withoutSnr));
      got.tensors.forEach((r, i) => {
        const want = expected.tensors[i].snrDb;
        assert.ok(r.snrDb === want || Math.abs(r.snrDb! - want!) < 1e-5, `${r.name}: ${r.snrDb} dB, ${want} dB`);
      });
      assert.equal(progress.at(-1), 1);
    }
    // Safetensors output needs a header up front; an already quantized input is refused. Neither leaves a file (nor
    // its temporary twin `NAME.<random>.tmp`).
    const refused = [path("out.safetensors"), path("out.arrows")];
    await assert.rejects(quantizeFile(floats, refused[0]), /Arrow input becomes \.arrows output/);
    await assert.rejects(quantizeFile(quantized, refused[1]), /already quantized/);
    assert.deepEqual(readdirSync(dir).filter((f) => refused.some((r) => f.startsWith(basename(r)))), []);
  });

  test("a .arrows file with batches out of order, or a length past its end, is refused early and leaves nothing", async () => {
    const input = path(), arrows = path("q.arrows");
    writeFileSync(
      input,
      fileOf([randomTensor("w", "float32", [64, 64], 18), randomTensor("v", "float32", [64, 32], 19)]),
    );
    await quantizeFile(input, arrows, { slabBytes: 4096 });
    const bytes = new Uint8Array(readFileSync(arrows));
    const batches = messagesOf(bytes).filter((m) => !m.schema);
    // The first two batches swapped: each still well formed, in the wrong place.
    const [a, b] = batches;
    const swapped = bytes.slice();
    swapped.set(bytes.subarray(b.start, b.end), a.start);
    swapped.set(bytes.subarray(a.start, a.end), a.start + (b.end - b.start));
    // A batch whose body is said to be 1 TiB: refused as truncated, with nothing allocated for it.
    const huge = bytes.slice();
    new DataView(huge.buffer).setBigInt64(batches[1].start + 8 + 24, 1n << 40n, true);
    for (const [label, bad, message] of [["swapped", swapped, /out of order/], ["huge", huge, /truncated/]] as const) {
      const file = path(`${label}.arrows`), output = path("out.safetensors");
      writeFileSync(file, bad);
      await assert.rejects(dequantizeFile(file, output), message, label);
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith(basename(output))), [], label);
    }
    // An output that cannot be created leaves no file open.
    const fds = () => (existsSync("/proc/self/fd") ? readdirSync("/proc/self/fd").length : 0);
    const floats = path("f.arrows");
    await dequantizeFile(arrows, floats);
    const before = fds();
    for (let i = 0; i < 3; i++) {
      await assert.rejects(dequantizeFile(arrows, join(dir, "missing", "x.safetensors")), { code: "ENOENT" });
      await assert.rejects(quantizeFile(floats, join(dir, "missing", "x.arrows")), { code: "ENOENT" });
    }
    assert.equal(fds(), before);
  });

  test("dequantizing to .arrows refuses a checkpoint with non-float tensors before writing anything", async () => {
    const input = path(), quantized = path(), output = path("out.arrows");
    const ids = new BigInt64Array([1n, 2n]);
    writeFileSync(
      input,
      fileOf([randomTensor("w", "float32", [64, 64], 11)], { ids: { dtype: "I64", shape: [2], bytes: bytesOf(ids) } }),
    );
    await quantizeFile(input, quantized);
    await assert.rejects(dequantizeFile(quantized, output), /"ids" \(I64\)/);
    // Neither the file nor its temporary twin (`out.arrows.<random>.tmp`).
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith(basename(output))), []);
  });
});

describe("bad input leaves no output", () => {
  const good = () => fileOf([randomTensor("w", "float32", [64, 64], 6)]);
  const cases: [string, () => Uint8Array, RegExp][] = [
    ["truncated data", () => good().slice(0, -100), /data ends at byte|shorter|truncat/i],
    ["a header length beyond the file", () => {
      const f = good();
      new DataView(f.buffer).setBigUint64(0, 1n << 40n, true);
      return f;
    }, /header/i],
    ["an unknown dtype", () => rawFile('{"w":{"dtype":"F42","shape":[2],"data_offsets":[0,8]}}', 8), /dtype/],
    [
      "overlapping offsets",
      () =>
        rawFile(
          '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
          12,
        ),
      /overlap/,
    ],
    ["a wrong byte length", () => rawFile('{"w":{"dtype":"F32","shape":[3,3],"data_offsets":[0,32]}}', 32), /byte/],
    ["a NaN in a weight", () => {
      const t = randomTensor("h.0.w", "float32", [64, 64], 7);
      (t.data as Float32Array)[4000] = NaN;
      return fileOf([t]);
    }, /Cannot quantize tensor "h.0.w": NaN at element 4000/],
  ];
  for (const [label, make, message] of cases) {
    test(`${label}: exit 1 and no output file`, async () => {
      const input = path();
      writeFileSync(input, make());
      const output = path("out.safetensors");
      const errors: string[] = [];
      const original = console.error;
      console.error = (text: string) => errors.push(text);
      try {
        assert.equal(await main(["quantize", input, "-o", output]), 1);
      } finally {
        console.error = original;
      }
      assert.equal(errors.length, 1);
      assert.match(errors[0], message);
      assert.equal(existsSync(output), false);
      assert.deepEqual(readdirSync(dir).filter((f) => f.includes("out.safetensors")), []);
    });
  }

  test("an output name that is also an input's (w and w.scale) is refused before any work, its file closed", async () => {
    const input = path();
    writeFileSync(
      input,
      fileOf([randomTensor("w", "float32", [64, 64], 9), randomTensor("w.scale", "float32", [64, 1], 10)]),
    );
    const openFiles = () => readdirSync("/proc/self/fd").length;
    const before = openFiles();
    for (let k = 0; k < 3; k++) {
      await assert.rejects(quantizeSafetensors(input), {
        name: "RangeError",
        message: 'Tensor "w.scale" is listed twice',
      });
    }
    assert.equal(openFiles(), before, "every attempt closed the input");
  });

  test("a negative axis is accepted as a separate argument", async () => {
    const input = path();
    writeFileSync(input, fileOf([randomTensor("w", "float32", [64, 48], 8)]));
    const output = path();
    const log = console.log;
    console.log = () => {};
    try {
      assert.equal(await main(["quantize", input, "-o", output, "--axis", "-1"]), 0);
    } finally {
      console.log = log;
    }
    assert.deepEqual(readCheckpoint(readFileSync(output)).tensors["w.scale"].shape, [1, 48]);
  });

  test("bad usage exits 2, saying what was wrong", async () => {
    const original = console.error;
    const printed: string[] = [];
    console.error = (text: string) => printed.push(text.split("\n")[0]);
    try {
      assert.equal(await main(["quantize", "in.safetensors"]), 2);
      assert.equal(await main(["quantize", "a", "-o", "b", "--axis", "x"]), 2);
      assert.equal(await main(["quantize", "a", "-o", "b", "--dtype", "int3"]), 2);
      assert.equal(await main(["frobnicate"]), 2);
      assert.equal(await main(["quantize", "a", "-o", "b", "--bogus"]), 2);
      assert.equal(await main(["dequantize", "a", "-o"]), 2);
      assert.equal(await main(["inspect", "a", "--json=yes"]), 2);
    } finally {
      console.error = original;
    }
    assert.deepEqual(printed.slice(-3), [
      "quantflow: unknown option --bogus",
      "quantflow: -o needs a value",
      'quantflow: --json takes no value, got "yes"',
    ]);
  });

  test("--help after a command prints the usage and exits 0", async () => {
    const printed: string[] = [];
    const log = console.log;
    console.log = (text: string) => printed.push(text);
    try {
      for (const command of ["quantize", "dequantize", "inspect"]) {
        assert.equal(await main([command, "--help"]), 0, command);
      }
      assert.equal(await main(["quantize", "in.safetensors", "-h"]), 0);
    } finally {
      console.log = log;
    }
    assert.equal(printed.length, 4);
    assert.match(printed[0], /quantflow quantize IN/);
  });
});
