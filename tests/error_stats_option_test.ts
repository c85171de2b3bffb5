import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  type ModelReport,
  parseConfig,
  type QuantizeConfig,
  type QuantizeOptions,
  QuantizeStream,
} from "@quantflow/quantflow";
import { quantizeFile, quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { quantizeArrowIPC } from "../streams/quantize_arrow.ts";
import { quantizeFileInParallel } from "../streams/_parallel_file_job.ts";
import { quantizeShardedCheckpoint } from "../streams/sharded_checkpoint.ts";
import { dequantizeFile } from "../streams/dequantize_pipeline.ts";
import { SlabWorkers } from "../streams/_slab_workers.ts";
import { main } from "../src/cli.ts";
import { GPT2_CONFIG, tinyGpt2 } from "../src/demo_model.ts";
import { encodeBfloat16, encodeFloat16 } from "../src/float16.ts";
import { planTensor } from "../src/tensor_plan.ts";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";
import { bytesOf, checkpoint } from "./_checkpoint.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-error-stats-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
function path(name: string): string {
  return join(dir, `${counter++}-${name}`);
}

/** The report a job without error stats should give: the same, less SNR and max error. */
function withoutErrors(report: ModelReport): ModelReport {
  const { minSnrDb: _, ...totals } = report.totals;
  return {
    tensors: report.tensors.map(({ snrDb: _s, maxAbsError: _m, ...t }) => t),
    totals,
  };
}

function wave(length: number, seed: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + ((i * seed) % 7)));
}

/** float16, bfloat16 and float32 weights, a pass-through int64 tensor and a small bias. */
function mixedModel(): Uint8Array {
  const a = wave(96 * 40, 1), b = wave(40 * 96, 2);
  return checkpoint({
    "a.weight": { dtype: "F16", shape: [96, 40], bytes: bytesOf(encodeFloat16(a, new Uint16Array(a.length))) },
    "ids": { dtype: "I64", shape: [3], bytes: bytesOf(BigInt64Array.of(1n, 2n, 3n)) },
    "b.weight": { dtype: "BF16", shape: [40, 96], bytes: bytesOf(encodeBfloat16(b, new Uint16Array(b.length))) },
    "c.bias": { dtype: "F32", shape: [7], bytes: bytesOf(wave(7, 3)) },
    "c.weight": { dtype: "F32", shape: [33, 16, 3], bytes: bytesOf(wave(33 * 48, 4)) },
  });
}

const gpt2 = path("gpt2.safetensors");
writeFileSync(gpt2, tinyGpt2());
const mixed = path("mixed.safetensors");
writeFileSync(mixed, mixedModel());

// Each model with configurations that between them take every kind of job: one pass (per channel on axis 0, per
// block), two passes (per tensor, axis -1), 4-bit packing, affine zero points, 16-bit sources.
const cases: [string, string, QuantizeConfig | QuantizeOptions][] = [
  ["GPT-2, its config (axis 0 and axis -1)", gpt2, parseConfig(GPT2_CONFIG)],
  ["mixed dtypes, affine uint8 per tensor", mixed, { mode: "linear", dtype: "uint8", granularity: "per_tensor" }],
  ["mixed dtypes, uint4 per block", mixed, { mode: "linear", dtype: "uint4", granularity: "per_block", blockSize: 8 }],
  ["mixed dtypes, int4 on axis -1", mixed, { dtype: "int4", axis: -1 }],
];

type Run = (input: string, config: QuantizeCaseConfig, errorStats: boolean) => Promise<{
  bytes: Uint8Array;
  report: ModelReport;
}>;
type QuantizeCaseConfig = QuantizeConfig | QuantizeOptions;

/** Runs a quantizeFile-like job into a new file; its bytes and report. */
function toFile(
  ext: string,
  job: (input: string, output: string, config: QuantizeCaseConfig, errorStats: boolean) => Promise<ModelReport>,
): Run {
  return async (input, config, errorStats) => {
    const output = path(`q.${ext}`);
    const report = await job(input, output, config, errorStats);
    return { bytes: readFileSync(output), report };
  };
}

/** Drains a job's output stream; its bytes and report. */
async function drained(job: { output: ReadableStream<Uint8Array>; report(): ModelReport }) {
  return { bytes: await new Response(job.output).bytes(), report: job.report() };
}

/** A ReadableStream of a file's bytes in odd-sized chunks: not re-readable, so two-pass tensors are spooled. */
function streamOf(file: string): ReadableStream<Uint8Array> {
  const bytes = new Uint8Array(readFileSync(file));
  const chunks = Array.from({ length: Math.ceil(bytes.length / 777) }, (_, i) => bytes.slice(i * 777, (i + 1) * 777));
  return ReadableStream.from(chunks);
}

/** The model's float tensors as float slabs in Arrow IPC (quantized to .arrows, then dequantized to .arrows). */
async function floatSlabs(input: string, config: QuantizeCaseConfig): Promise<string> {
  const quantized = path("q.arrows"), floats = path("f.arrows");
  await quantizeFile(input, quantized, { config });
  await dequantizeFile(quantized, floats);
  return floats;
}

/** The model split into two shards with an index. */
function sharded(input: string): string {
  const model = path("sharded");
  mkdirSync(model);
  const bytes = readFileSync(input);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const data = bytes.subarray(8 + headerLength);
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const weightMap: Record<string, string> = {};
  for (const [k, part] of [names.slice(0, 2), names.slice(2)].entries()) {
    const file = `model-${k + 1}-of-2.safetensors`;
    writeFileSync(
      join(model, file),
      checkpoint(Object.fromEntries(part.map((name) => {
        const { dtype, shape, data_offsets: [from, to] } = header[name];
        return [name, { dtype, shape, bytes: data.slice(from, to) }];
      }))),
    );
    for (const name of part) weightMap[name] = file;
  }
  const index = join(model, "model.safetensors.index.json");
  writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return index;
}

const paths: [string, Run][] = [
  [
    "quantizeFile, one thread, .safetensors",
    toFile("safetensors", (i, o, config, errorStats) => quantizeFile(i, o, { config, errorStats })),
  ],
  [
    "quantizeFile, one thread, .arrows",
    toFile("arrows", (i, o, config, errorStats) => quantizeFile(i, o, { config, errorStats })),
  ],
  // One-pass tensors' slabs quantized in a worker.
  [
    "quantizeFile, slab workers, .arrows",
    toFile(
      "arrows",
      (i, o, config, errorStats) => quantizeFile(i, o, { config, errorStats, workers: 1, slabBytes: 4096 }),
    ),
  ],
  // Whole tensors in the workers, none in this thread.
  [
    "quantizeFile, tensor workers, .safetensors",
    toFile(
      "safetensors",
      (i, o, config, errorStats) =>
        quantizeFileInParallel(i, o, { config, errorStats, workers: 1 }, { inThisThread: false, taskBytes: 1 }),
    ),
  ],
  [
    "quantizeSafetensors from a stream (two-pass tensors spooled)",
    async (input, config, errorStats) =>
      drained(await quantizeSafetensors(streamOf(input), { config, errorStats, slabBytes: 2048 })),
  ],
  ["quantizeFile from an .arrows file of float slabs", async (input, config, errorStats) => {
    const output = path("q.arrows");
    const report = await quantizeFile(await floatSlabs(input, config), output, { config, errorStats });
    return { bytes: readFileSync(output), report };
  }],
  ["quantizeArrowIPC", async (input, config, errorStats) => {
    const floats = await floatSlabs(input, config);
    return drained(quantizeArrowIPC(streamOf(floats), { config, errorStats }));
  }],
  ["quantizeShardedCheckpoint", async (input, config, errorStats) => {
    const index = sharded(input);
    const output = path("out");
    const report = await quantizeShardedCheckpoint(index, output, { config, errorStats });
    const shards = ["model-1-of-2.safetensors", "model-2-of-2.safetensors"].map((f) => readFileSync(join(output, f)));
    return { bytes: await new Blob(shards).bytes(), report };
  }],
];

describe("errorStats: false leaves SNR and max error out of the report and the output as it was", () => {
  for (const kernels of ["wasm", "plain-JS"] as const) {
    for (const [label, run] of paths) {
      test(`${label}, ${kernels} kernels`, async () => {
        setWasmKernelsEnabled(kernels === "wasm");
        try {
          if (kernels === "wasm") assert.ok(wasmKernels(), "wasm kernels available");
          for (const [model, input, config] of cases) {
            const expected = await run(input, config, true);
            const got = await run(input, config, false);
            assert.deepEqual(got.bytes, expected.bytes, `${model}: output bytes`);
            assert.ok(expected.report.totals.quantized > 0 && Number.isFinite(expected.report.totals.minSnrDb));
            assert.ok(expected.report.tensors.some((t) => t.maxAbsError! > 0), model);
            assert.deepEqual(got.report, withoutErrors(expected.report), model);
          }
        } finally {
          setWasmKernelsEnabled(true);
        }
      });
    }
  }

  test("a model with nothing quantized keeps minSnrDb Infinity, measured or not", async () => {
    for (const errorStats of [true, false]) {
      const report = await quantizeFile(mixed, path("skipped.safetensors"), {
        config: { weightThreshold: 1e9 },
        errorStats,
      });
      assert.equal(report.totals.quantized, 0);
      assert.equal(report.totals.minSnrDb, Infinity);
    }
  });

  test("a non-boolean errorStats is refused before any work, by the stream and the file job", async () => {
    const refused = { name: "TypeError", message: "errorStats must be a boolean, got no" };
    assert.throws(() => new QuantizeStream({}, { errorStats: "no" as never }), refused);
    const output = path("refused.safetensors");
    for (const workers of [0, 1]) {
      await assert.rejects(quantizeFile(gpt2, output, { errorStats: "no" as never, workers }), refused);
      assert.ok(!existsSync(output));
    }
  });

  test("QuantizeStream: same slabs, report without the error", async () => {
    const tensor = { name: "fc.weight", dtype: "float32", shape: [64, 64] } as const;
    const data = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i));
    const [expected, got] = await Promise.all([true, false].map(async (errorStats) => {
      const stream = new QuantizeStream({}, { errorStats });
      const slabs = await Array.fromAsync(ReadableStream.from([{ tensor, offset: 0, data }]).pipeThrough(stream));
      return { slabs, report: stream.report };
    }));
    assert.equal(expected.report.totals.quantized, 1);
    assert.deepEqual(got.slabs, expected.slabs);
    assert.deepEqual(got.report, withoutErrors(expected.report));
  });

  test("slab workers compute the error sums only when asked", async () => {
    const shape = [32, 128];
    const data = wave(32 * 128, 9);
    const plan = planTensor({ name: "w", dtype: "float32", shape }, {});
    assert.equal(plan.kind, "plan");
    const { kind: _, ...info } = plan as Extract<typeof plan, { kind: "plan" }>;
    const slab = { tensor: { name: "w", dtype: "float32", shape }, offset: 0, data } as const;
    for (const errorSums of [true, false]) {
      const workers = new SlabWorkers(1, { recycleOutputs: false, errorSums });
      try {
        const result = await workers.quantize(info, slab, 32);
        assert.equal(result.sums !== undefined, errorSums);
      } finally {
        workers.close();
      }
    }
  });

  test("the CLI's --no-error-stats: same output, no error columns or lowest SNR, none in the JSON report", async () => {
    const lines: string[] = [];
    const log = console.log;
    const outputs = [path("cli-with.safetensors"), path("cli-without.safetensors")];
    const reports = [path("with.json"), path("without.json")];
    const tables: string[] = [];
    try {
      console.log = (line: string) => void lines.push(line);
      for (const [k, extra] of [[], ["--no-error-stats"]].entries()) {
        assert.equal(await main(["quantize", gpt2, "-o", outputs[k], "--report", reports[k], ...extra]), 0);
        tables.push(lines.splice(0).join("\n"));
      }
    } finally {
      console.log = log;
    }
    assert.match(tables[0], /SNR dB +max err/);
    assert.match(tables[0], /lowest SNR \d/);
    assert.doesNotMatch(tables[1], /SNR|max err/);
    assert.deepEqual(readFileSync(outputs[1]), readFileSync(outputs[0]));
    const [expected, got] = reports.map((r) => JSON.parse(readFileSync(r, "utf8")));
    assert.deepEqual(got, withoutErrors(expected));
  });
});
