import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { type ModelReport, parseConfig, QuantizeStream } from "@quantflow/quantflow";
import { quantizeFile } from "../streams/quantize_pipeline.ts";
import { dequantizeFile } from "../streams/dequantize_pipeline.ts";
import { quantizeFileInParallel } from "../streams/_parallel_file_job.ts";
import { main } from "../src/cli.ts";
import { GPT2_CONFIG, tinyGpt2 } from "../src/demo_model.ts";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";

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

// The GPT-2 demo model has one-pass tensors (per channel, axis 0) and two-pass ones (Conv1D weights on axis -1).
const input = path("gpt2.safetensors");
writeFileSync(input, tinyGpt2());
const config = parseConfig(GPT2_CONFIG);

/** Quantizes the model with and without error stats; both outputs' bytes and reports. */
async function both(
  ext: "safetensors" | "arrows",
  run: (output: string, errorStats: boolean) => Promise<ModelReport>,
) {
  const [withStats, without] = [path(`with.${ext}`), path(`without.${ext}`)];
  const expected = await run(withStats, true);
  const got = await run(without, false);
  return { expected, got, same: readFileSync(withStats).equals(readFileSync(without)) };
}

describe("errorStats: false", () => {
  const paths: [string, "safetensors" | "arrows", (output: string, errorStats: boolean) => Promise<ModelReport>][] = [
    ["one thread, safetensors", "safetensors", (o, errorStats) => quantizeFile(input, o, { config, errorStats })],
    ["one thread, .arrows", "arrows", (o, errorStats) => quantizeFile(input, o, { config, errorStats })],
    // Streams with slab workers: the one-pass tensors' slabs are quantized in a worker.
    [
      "slab workers, .arrows",
      "arrows",
      (o, errorStats) => quantizeFile(input, o, { config, errorStats, workers: 1, slabBytes: 4096 }),
    ],
    // Whole tensors in the workers, none in this thread.
    [
      "tensor workers, safetensors",
      "safetensors",
      (o, errorStats) =>
        quantizeFileInParallel(input, o, { config, errorStats, workers: 2 }, { inThisThread: false, taskBytes: 1 }),
    ],
  ];
  for (const kernels of ["wasm", "plain-JS"] as const) {
    for (const [label, ext, run] of paths) {
      test(`same bytes, report without SNR or max error: ${label}, ${kernels} kernels`, async () => {
        setWasmKernelsEnabled(kernels === "wasm");
        try {
          if (kernels === "wasm") assert.ok(wasmKernels(), "wasm kernels available");
          const { expected, got, same } = await both(ext, run);
          assert.ok(same, "output bytes");
          assert.ok(expected.totals.quantized > 0 && Number.isFinite(expected.totals.minSnrDb));
          assert.ok(expected.tensors.some((t) => t.maxAbsError! > 0));
          assert.deepEqual(got, withoutErrors(expected));
        } finally {
          setWasmKernelsEnabled(true);
        }
      });
    }
  }

  test("an .arrows input of float slabs", async () => {
    // Float slabs in Arrow IPC: the model quantized to .arrows, then dequantized to .arrows.
    const quantized = path("q.arrows"), floats = path("f.arrows");
    await quantizeFile(input, quantized, { config });
    await dequantizeFile(quantized, floats);
    const { expected, got, same } = await both("arrows", (o, errorStats) => quantizeFile(floats, o, { errorStats }));
    assert.ok(same, "output bytes");
    assert.ok(expected.totals.quantized > 0);
    assert.deepEqual(got, withoutErrors(expected));
  });

  test("QuantizeStream's report", async () => {
    const tensor = { name: "fc.weight", dtype: "float32", shape: [64, 64] } as const;
    const data = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i));
    const reports = [];
    for (const errorStats of [true, false]) {
      const stream = new QuantizeStream({}, { errorStats });
      await ReadableStream.from([{ tensor, offset: 0, data }]).pipeThrough(stream).pipeTo(new WritableStream());
      reports.push(stream.report);
    }
    assert.equal(reports[0].totals.quantized, 1);
    assert.deepEqual(reports[1], withoutErrors(reports[0]));
  });

  test("the CLI's --no-error-stats: same output, no SNR in the table or the JSON report", async () => {
    const lines: string[] = [];
    const log = console.log;
    const outputs = [path("cli-with.safetensors"), path("cli-without.safetensors")];
    const reports = [path("with.json"), path("without.json")];
    try {
      console.log = (line: string) => void lines.push(line);
      assert.equal(await main(["quantize", input, "-o", outputs[0], "--report", reports[0]]), 0);
      const table = lines.join("\n");
      lines.length = 0;
      assert.equal(
        await main(["quantize", input, "-o", outputs[1], "--report", reports[1], "--no-error-stats"]),
        0,
      );
      assert.match(table, /lowest SNR \d/);
      assert.doesNotMatch(lines.join("\n"), /lowest SNR/);
    } finally {
      console.log = log;
    }
    assert.ok(readFileSync(outputs[0]).equals(readFileSync(outputs[1])));
    const [expected, got] = reports.map((r) => JSON.parse(readFileSync(r, "utf8")));
    assert.deepEqual(got, withoutErrors(expected));
  });
});
