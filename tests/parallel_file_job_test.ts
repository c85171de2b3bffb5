import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { QuantizeOptions } from "@quantflow/quantflow";
import { quantizeFile } from "../streams/quantize_pipeline.ts";
import { main } from "../src/cli.ts";
import { quantizeFileInParallel } from "../streams/_parallel_file_job.ts";
import { GPT2_CONFIG, tinyGpt2 } from "../src/demo_model.ts";
import { parseConfig } from "../src/config.ts";
import { FormatError, NonFiniteError } from "../src/errors.ts";
import { encodeBfloat16, encodeFloat16 } from "../src/float16.ts";
import type { TensorReport } from "../src/report.ts";
import { setWasmKernelsEnabled, wasmKernels } from "../src/wasm_kernels.ts";
import { bytesOf, checkpoint, rawFile, readCheckpoint } from "./_checkpoint.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-parallel-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
function path(name = "f.safetensors"): string {
  return join(dir, `${counter++}-${name}`);
}

function wave(length: number, seed: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + ((i * seed) % 7)));
}

/** Every kind of tensor a file job meets: float32, float16, bfloat16, pass-through, too small, empty. */
function mixedCheckpoint(): Uint8Array {
  const a = wave(96 * 40, 1);
  const b = wave(40 * 96, 2);
  return checkpoint({
    "a.weight": { dtype: "F16", shape: [96, 40], bytes: bytesOf(encodeFloat16(a, new Uint16Array(a.length))) },
    "ids": { dtype: "I64", shape: [5], bytes: bytesOf(BigInt64Array.of(1n, 2n, 3n, 4n, 5n)) },
    "b.weight": { dtype: "BF16", shape: [40, 96], bytes: bytesOf(encodeBfloat16(b, new Uint16Array(b.length))) },
    "empty.weight": { dtype: "F32", shape: [0, 4], bytes: new Uint8Array(0) },
    "c.bias": { dtype: "F32", shape: [7], bytes: bytesOf(wave(7, 3)) },
    "c.weight": { dtype: "F32", shape: [33, 16, 3], bytes: bytesOf(wave(33 * 48, 4)) },
  }, { source: "test" });
}

type Options = Parameters<typeof quantizeFile>[2];

/**
 * Tasks of a few KiB: every tensor of these small files its own task, or a few together (tasks gather 32 MiB of
 * consecutive tensors by default, which would make one task of a whole test file).
 */
const TASK_BYTES = 8000;

/**
 * Quantizes a file with or without workers; the output's bytes and the report. With `workersOnly`, this thread
 * leaves every task to the workers (they take a while to start: this thread would otherwise do all of a small file).
 */
async function run(input: string, options: Options, workersOnly = false) {
  const output = path();
  const report = options?.workers
    ? await quantizeFileInParallel(input, output, options, { inThisThread: !workersOnly, taskBytes: TASK_BYTES })
    : await quantizeFile(input, output, options);
  return { bytes: readFileSync(output), report };
}

/** The error a quantization ends with, and whether anything was left in the output's directory. */
async function failure(input: string, options: Options, workersOnly = false) {
  const out = mkdtempSync(join(dir, "out-"));
  try {
    const output = join(out, "q.safetensors");
    await (options?.workers
      ? quantizeFileInParallel(input, output, options, { inThisThread: !workersOnly, taskBytes: TASK_BYTES })
      : quantizeFile(input, output, options));
  } catch (error) {
    return { error: error as Error, left: readdirSync(out) };
  }
  throw new Error("expected the quantization to fail");
}

describe("quantizeFile with workers", () => {
  const gpt2 = path();
  writeFileSync(gpt2, tinyGpt2());
  const mixed = path();
  writeFileSync(mixed, mixedCheckpoint());
  const configs: [string, string, QuantizeOptions | ReturnType<typeof parseConfig>][] = [
    ["GPT-2 config (two-pass tensors mixed in)", gpt2, parseConfig(GPT2_CONFIG)],
    ["int8 per channel, mixed dtypes", mixed, {}],
    ["per-block int4, mixed dtypes", mixed, { granularity: "per_block", blockSize: 8, dtype: "int4" }],
    ["affine uint8 per tensor, mixed dtypes", mixed, { mode: "linear", dtype: "uint8", granularity: "per_tensor" }],
    ["axis -1 uint4, mixed dtypes", mixed, { mode: "linear", dtype: "uint4", axis: -1 }],
  ];
  for (const [label, input, config] of configs) {
    test(`bytes and report are those of the one-thread job: ${label}`, async () => {
      // A small slab budget makes tensors span several slabs.
      const expected = await run(input, { config, slabBytes: 1000 });
      assert.ok(expected.report.totals.quantized > 0);
      for (const workersOnly of [false, true]) {
        const got = await run(input, { config, slabBytes: 1000, workers: 2 }, workersOnly);
        assert.deepEqual(got.bytes, expected.bytes, `workersOnly ${workersOnly}`);
        assert.deepEqual(got.report, expected.report, `workersOnly ${workersOnly}`);
      }
    });
  }

  test("tensors with gaps between them in the input", async () => {
    // a: [0, 12288), 16 bytes of nothing, b: [12304, 24592), c (I32): [24592, 24608).
    const file = rawFile(
      JSON.stringify({
        a: { dtype: "F32", shape: [64, 48], data_offsets: [0, 12288] },
        b: { dtype: "F32", shape: [48, 64], data_offsets: [12304, 24592] },
        c: { dtype: "I32", shape: [4], data_offsets: [24592, 24608] },
      }),
      24608,
    );
    const data = file.subarray(file.length - 24608);
    new Float32Array(data.buffer, data.byteOffset, 3072).set(wave(3072, 5));
    new Float32Array(data.buffer, data.byteOffset + 12304, 3072).set(wave(3072, 6));
    const input = path();
    writeFileSync(input, file);
    const expected = await run(input, { slabBytes: 1000 });
    assert.equal(expected.report.totals.quantized, 2);
    // Tasks large enough to gather all three, were it not for the gap.
    for (const inThisThread of [false, true]) {
      const output = path();
      const options = { slabBytes: 1000, workers: 1 };
      const report = await quantizeFileInParallel(input, output, options, { inThisThread, taskBytes: 1 << 20 });
      assert.deepEqual(readFileSync(output), expected.bytes);
      assert.deepEqual(report, expected.report);
    }
  });

  test("bytes are the same for 1 to 3 workers", async () => {
    const config = parseConfig(GPT2_CONFIG);
    const expected = await run(gpt2, { config, slabBytes: 1000 });
    for (const workers of [1, 3]) {
      const got = await run(gpt2, { config, slabBytes: 1000, workers }, true);
      assert.deepEqual(got.bytes, expected.bytes, `${workers} workers`);
    }
  });

  test("the workers use the plain-JS kernels when this thread does", async () => {
    const config = parseConfig(GPT2_CONFIG);
    for (const [input, options] of [[mixed, { slabBytes: 4096 }], [gpt2, { config, slabBytes: 1000 }]] as const) {
      const expected = await run(input, options);
      setWasmKernelsEnabled(false);
      try {
        const got = await run(input, { ...options, workers: 2 }, true);
        assert.deepEqual(got.bytes, expected.bytes);
        assert.deepEqual(
          got.report.tensors.map((t) => t.maxAbsError),
          expected.report.tensors.map((t) => t.maxAbsError),
        );
      } finally {
        setWasmKernelsEnabled(true);
      }
    }
    assert.ok(wasmKernels() !== undefined || typeof WebAssembly === "undefined");
  });

  test("a callback that throws fails the job with its error, leaving nothing", async () => {
    for (const workersOnly of [false, true]) {
      const boom = new Error("boom from onTensor");
      const { error, left } = await failure(mixed, {
        workers: 2,
        onTensor: () => {
          throw boom;
        },
      }, workersOnly);
      assert.equal(error, boom, `workersOnly ${workersOnly}`);
      assert.deepEqual(left, []);
    }
  });

  test("a worker that cannot start, or crashes in a task, costs only speed: this thread does its share", async () => {
    const expected = await run(mixed, { slabBytes: 1000 });
    const failing = new URL("./_failing_worker.ts", import.meta.url);
    const crashing = new URL("./_crashing_worker.ts", import.meta.url);
    // (Deno prints the workers' uncaught errors to stderr: expected here.)
    for (
      const [workerModule, inThisThread, message] of [
        [failing, true, /cannot start/],
        [failing, false, /cannot start/],
        // Alone, the crashing worker claims the first task and leaves it half done; every task is redone here.
        [crashing, false, /crashed in the middle of a task/],
      ] as const
    ) {
      const output = path();
      const warnings: string[] = [];
      const options = { slabBytes: 1000, workers: 2, onWarning: (m: string) => warnings.push(m) };
      const report = await quantizeFileInParallel(mixed, output, options, {
        inThisThread,
        taskBytes: TASK_BYTES,
        workerModule,
      });
      const where = `${workerModule.pathname.split("/").pop()}, inThisThread ${inThisThread}`;
      assert.deepEqual(report, expected.report, where);
      assert.deepEqual(readFileSync(output), expected.bytes, where);
      // One per worker started (no more workers than tasks but one when this thread works too).
      assert.equal(warnings.length, inThisThread ? 1 : 2, where);
      for (const warning of warnings) assert.match(warning, message, where);
    }
  });

  test("a bad tensor in a task a crashed worker left is still the job's error", async () => {
    const bad = mixedCheckpoint();
    const { tensors } = readCheckpoint(bad);
    tensors["a.weight"].bytes.set([0x00, 0x7e], 10); // a float16 NaN in the first tensor, which the worker claims
    const input = path();
    writeFileSync(input, checkpoint(tensors, { source: "test" }));
    const expected = await failure(input, { slabBytes: 1000 });
    assert.ok(expected.error instanceof NonFiniteError);
    const out = mkdtempSync(join(dir, "out-"));
    const crashing = new URL("./_crashing_worker.ts", import.meta.url);
    const options = { slabBytes: 1000, workers: 1 };
    const job = quantizeFileInParallel(input, join(out, "q.safetensors"), options, {
      inThisThread: false,
      taskBytes: TASK_BYTES,
      workerModule: crashing,
    });
    await assert.rejects(job, (e) => e instanceof NonFiniteError && e.message === expected.error.message);
    assert.deepEqual(readdirSync(out), []);
  });

  test(
    "file descriptors are all closed after a job, done or failed",
    { skip: !existsSync("/proc/self/fd") },
    async () => {
      // Only our files: the runtimes open sockets and event fds of their own for worker threads.
      const open = () =>
        readdirSync("/proc/self/fd").filter((fd) => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
          } catch {
            return false; // closed meanwhile (the directory listing's own fd)
          }
        }).length;
      const before = open();
      await run(mixed, { workers: 1 });
      await run(mixed, { workers: 1 }, true);
      const truncated = path();
      const whole = readFileSync(mixed);
      writeFileSync(truncated, whole.subarray(0, whole.length - 10));
      await failure(truncated, { workers: 1 });
      assert.equal(open(), before);
    },
  );

  test("every tensor is reported once, and progress reaches the data section's size", async () => {
    const tensors: TensorReport[] = [];
    let progress = [0, -1];
    const { report } = await run(mixed, {
      slabBytes: 1000,
      workers: 2,
      onTensor: (t) => tensors.push(t),
      onProgress: (done, total) => progress = [done, total],
    }, true);
    assert.deepEqual(tensors.map((t) => t.name).sort(), report.tensors.map((t) => t.name).sort());
    const { tensors: written } = readCheckpoint(readFileSync(mixed));
    const dataBytes = Object.values(written).reduce((sum, t) => sum + t.bytes.length, 0);
    assert.deepEqual(progress, [dataBytes, dataBytes]);
  });

  test("a NaN fails the job with the first bad tensor's error in file order, leaving nothing", async () => {
    const bad = mixedCheckpoint();
    const { tensors } = readCheckpoint(bad);
    // NaN in the last slab of b.weight and of c.weight: b comes first in the file.
    for (const name of ["b.weight", "c.weight"]) {
      const t = tensors[name].bytes;
      t.set(name === "b.weight" ? [0xc0, 0x7f] : [0, 0, 0xc0, 0x7f], t.length - (name === "b.weight" ? 2 : 4));
    }
    const input = path();
    writeFileSync(input, checkpoint(tensors, { source: "test" }));
    const expected = await failure(input, { slabBytes: 1000 });
    assert.ok(expected.error instanceof NonFiniteError);
    assert.equal(expected.error.tensor, "b.weight");
    for (const [workers, workersOnly] of [[1, true], [2, false], [3, true]] as const) {
      const { error, left } = await failure(input, { slabBytes: 1000, workers }, workersOnly);
      assert.ok(error instanceof NonFiniteError, `${workers} workers: ${error}`);
      assert.equal(error.message, expected.error.message);
      assert.deepEqual(left, [], `${workers} workers left ${left}`);
    }
  });

  test("a truncated input fails before any output, with the one-thread job's error", async () => {
    const input = path();
    const whole = readFileSync(mixed);
    writeFileSync(input, whole.subarray(0, whole.length - 10));
    const expected = await failure(input, {});
    assert.ok(expected.error instanceof FormatError);
    const { error, left } = await failure(input, { workers: 2 });
    assert.ok(error instanceof FormatError);
    assert.equal(error.message, expected.error.message);
    assert.deepEqual(left, []);
  });

  test("the CLI: --workers gives the same file, a bad count is bad usage", async () => {
    const [one, two] = [path(), path()];
    const log = console.log;
    const error = console.error;
    const errors: string[] = [];
    console.log = () => {};
    console.error = (text: string) => errors.push(text);
    try {
      assert.equal(await main(["quantize", mixed, "-o", one, "--workers", "0"]), 0);
      assert.equal(await main(["quantize", mixed, "-o", two, "--workers", "2"]), 0);
      assert.equal(await main(["quantize", mixed, "-o", path(), "--workers", "-1"]), 2);
    } finally {
      console.log = log;
      console.error = error;
    }
    assert.deepEqual(readFileSync(two), readFileSync(one));
    assert.match(errors[0], /--workers expects a number >= 0, got -1/);
  });

  test("workers must be a non-negative integer", async () => {
    for (const workers of [-1, 1.5]) {
      await assert.rejects(quantizeFile(mixed, path(), { workers }), RangeError);
    }
  });

  test("a missing output directory fails at once", async () => {
    const output = join(dir, "no-such-dir", "q.safetensors");
    await assert.rejects(quantizeFile(mixed, output, { workers: 2 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, "ENOENT");
      assert.ok(e.message.startsWith(`Cannot write "${output}": `), e.message);
      return true;
    });
    assert.equal(existsSync(join(dir, "no-such-dir")), false);
  });
});
