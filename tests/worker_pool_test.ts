import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { QuantizeOptions } from "@quantflow/quantflow";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { GPT2_CONFIG, tinyGpt2 } from "../src/demo_model.ts";
import { Float16OverflowError, NonFiniteError } from "../src/errors.ts";
import { encodeFloat16 } from "../src/float16.ts";
import { parseConfig } from "../src/config.ts";
import { reviveError, serializeError } from "../src/_quantize_task.ts";
import { bytesOf, checkpoint, readCheckpoint } from "./_checkpoint.ts";

/** Runs a quantization to the end, copying each chunk (outputs may sit in reused buffers). */
async function run(
  input: Uint8Array,
  options: Parameters<typeof quantizeSafetensors>[1],
): Promise<{ bytes: Uint8Array; report: string }> {
  const job = await quantizeSafetensors(input, options);
  const chunks: Uint8Array[] = [];
  for await (const chunk of job.output) chunks.push(chunk.slice());
  const bytes = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) bytes.set(c, at), at += c.length;
  return { bytes, report: JSON.stringify(job.report()) };
}

/** The error a quantization ends with. */
async function failure(input: Uint8Array, options: Parameters<typeof quantizeSafetensors>[1]): Promise<Error> {
  try {
    await run(input, options);
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected the quantization to fail");
}

const model = tinyGpt2();

describe("QuantizeStream workers", () => {
  const configs: [string, QuantizeOptions | ReturnType<typeof parseConfig>][] = [
    ["int8 per channel", {}],
    ["per-block int4", { granularity: "per_block", blockSize: 16, dtype: "int4" }],
    ["affine uint8 per channel", { mode: "linear", dtype: "uint8" }],
    ["GPT-2 config (two-pass tensors mixed in)", parseConfig(GPT2_CONFIG)],
  ];
  for (const [label, config] of configs) {
    test(`output and report are the same for 0 to 3 workers: ${label}`, async () => {
      const expected = await run(model, { config, slabBytes: 8192 });
      for (const workers of [1, 2, 3]) {
        for (const reuseBuffers of [false, true]) {
          const got = await run(model, { config, slabBytes: 8192, workers, reuseBuffers });
          assert.deepEqual(got.bytes, expected.bytes, `${workers} workers, reuseBuffers ${reuseBuffers}`);
          assert.equal(got.report, expected.report, `${workers} workers, reuseBuffers ${reuseBuffers}`);
        }
      }
    });
  }

  test("output is the same whatever the slab size", async () => {
    const expected = await run(model, { slabBytes: 1 << 20 });
    for (const slabBytes of [512, 5000, 65536]) {
      assert.deepEqual((await run(model, { slabBytes, workers: 2 })).bytes, expected.bytes, `${slabBytes} bytes`);
    }
  });

  test("float16 tensors quantize the same in workers", async () => {
    const values = Float32Array.from({ length: 96 * 40 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    const input = checkpoint({
      "a.weight": {
        dtype: "F16",
        shape: [96, 40],
        bytes: bytesOf(encodeFloat16(values, new Uint16Array(values.length))),
      },
      "b.weight": { dtype: "F32", shape: [40, 96], bytes: bytesOf(values) },
    });
    for (
      const config of [{}, { mode: "linear", dtype: "uint4" }, { granularity: "per_block", blockSize: 8 }] as const
    ) {
      const expected = await run(input, { config, slabBytes: 1000 });
      const got = await run(input, { config, slabBytes: 1000, workers: 2 });
      assert.deepEqual(got.bytes, expected.bytes);
      assert.equal(got.report, expected.report);
      assert.ok(Object.keys(readCheckpoint(got.bytes).tensors).length > 2);
    }
  });

  test("a NaN in a later slab errors with the in-thread NonFiniteError", async () => {
    const input = model.slice();
    // A value deep inside the data section, far past the first slabs of its tensor.
    const floats = new Float32Array(input.buffer, input.length - 300_000 & ~3, 1);
    floats[0] = NaN;
    const expected = await failure(input, { slabBytes: 4096 });
    assert.ok(expected instanceof NonFiniteError);
    for (const workers of [1, 2, 3]) {
      const error = await failure(input, { slabBytes: 4096, workers });
      assert.ok(error instanceof NonFiniteError, `${workers} workers: ${error}`);
      assert.equal(error.message, expected.message);
      assert.equal(error.tensor, expected.tensor);
    }
  });

  test("a float16 overflow in a worker errors with the in-thread Float16OverflowError", async () => {
    const values = Float32Array.from({ length: 64 * 48 }, (_, i) => (i > 40 * 48 ? 1000 : 1) * Math.cos(i));
    const input = checkpoint({
      "w.weight": {
        dtype: "F16",
        shape: [64, 48],
        bytes: bytesOf(encodeFloat16(values, new Uint16Array(values.length))),
      },
    });
    const config = { mode: "linear" } as const;
    const expected = await failure(input, { config, slabBytes: 256 });
    assert.ok(expected instanceof Float16OverflowError);
    const error = await failure(input, { config, slabBytes: 256, workers: 2 });
    assert.ok(error instanceof Float16OverflowError);
    assert.equal(error.message, expected.message);
  });

  test("cancelling mid-stream terminates the workers", async () => {
    const job = await quantizeSafetensors(model, { slabBytes: 4096, workers: 2 });
    const reader = job.output.getReader();
    for (let i = 0; i < 5; i++) assert.equal((await reader.read()).done, false);
    await reader.cancel();
    // Nothing left running: the test process ends (a live worker would keep it alive).
  });

  test("workers must be a non-negative integer", async () => {
    for (const workers of [-1, 1.5]) {
      await assert.rejects(quantizeSafetensors(model, { workers }), RangeError);
    }
  });
});

describe("worker errors", () => {
  test("come back as the same class with the same message", () => {
    const errors = [
      new NonFiniteError("h.0.weight", "NaN at element 12 (index [0,12])"),
      new Float16OverflowError("w", "qmin * hi = -1e5"),
      new RangeError("bad"),
      new TypeError("worse"),
    ];
    for (const error of errors) {
      const revived = reviveError(structuredClone(serializeError(error)));
      assert.equal(revived.constructor, error.constructor);
      assert.equal(revived.name, error.name);
      assert.equal(revived.message, error.message);
      assert.equal((revived as { tensor?: string }).tensor, (error as { tensor?: string }).tensor);
    }
  });

  test("a failed file operation keeps its system error code, and the stack where it was thrown", () => {
    const error = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    const revived = reviveError(structuredClone(serializeError(error)));
    assert.equal((revived as { code?: string }).code, "ENOSPC");
    assert.equal(revived.message, error.message);
    assert.equal(revived.stack, error.stack);
  });
});
