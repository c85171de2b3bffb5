import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFileJob } from "../streams/_file_job.ts";
import { resolveConfig } from "../src/config.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { tinyGpt2 } from "../src/demo_model.ts";
import { bytesOf, checkpoint } from "./_checkpoint.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-file-job-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const input = join(dir, "model.safetensors");
writeFileSync(input, tinyGpt2());
const fresh = (n: number) => new Uint8Array(n);
const openFiles = () => readdirSync("/proc/self/fd").length;

async function concat(pieces: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const piece of pieces) parts.push(piece.slice()); // each piece may sit in a reused buffer
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

test("a file job's bytes and report are the stream pipeline's, with rings of 2 buffers", async () => {
  for (const config of [{}, { granularity: "per_tensor" }, { dtype: "uint4", mode: "linear" }] as const) {
    const job = await startFileJob(input, { config: resolveConfig(config), slabBytes: 4096, reuseBuffers: fresh });
    const streamed = await quantizeSafetensors(input, { config, slabBytes: 4096 });
    assert.deepEqual(await concat(job.bytes), await concat(streamed.output), JSON.stringify(config));
    assert.deepEqual(job.report(), streamed.report(), JSON.stringify(config));
  }
});

test("to Arrow IPC too, non-float tensors left out and marked in the report as the streams do", async () => {
  const mixed = join(dir, "mixed.safetensors");
  const weight = Float32Array.from({ length: 96 * 64 }, (_, i) => Math.sin(i * 0.1) * (1 + (i % 5)));
  writeFileSync(
    mixed,
    checkpoint({
      "a.weight": { dtype: "F32", shape: [96, 64], bytes: bytesOf(weight) },
      "position_ids": { dtype: "I64", shape: [4], bytes: bytesOf(new BigInt64Array([0n, 1n, 2n, 3n])) },
      "b.weight": { dtype: "F32", shape: [64, 96], bytes: bytesOf(weight) },
    }),
  );
  for (const config of [{}, { granularity: "per_tensor" }] as const) {
    const job = await startFileJob(mixed, {
      config: resolveConfig(config),
      slabBytes: 4096,
      reuseBuffers: fresh,
      format: "arrows",
    });
    const streamed = await quantizeSafetensors(mixed, { config, slabBytes: 4096, format: "arrows" });
    assert.deepEqual(await concat(job.bytes), await concat(streamed.output), JSON.stringify(config));
    const report = job.report();
    assert.deepEqual(report, streamed.report(), JSON.stringify(config));
    assert.match(report.tensors.find((t) => t.name === "position_ids")!.omitted!, /no place in the Arrow slab layout/);
  }
});

test("cancel closes the input, whether the job started or not", async () => {
  const before = openFiles();
  const unstarted = await startFileJob(input, { config: resolveConfig({}), slabBytes: 4096, reuseBuffers: fresh });
  await unstarted.cancel();
  assert.equal(openFiles(), before, "never started");

  const started = await startFileJob(input, { config: resolveConfig({}), slabBytes: 4096, reuseBuffers: fresh });
  for (let k = 0; k < 3; k++) assert.equal((await started.bytes.next()).done, false);
  await started.cancel();
  assert.equal(openFiles(), before, "started");
  assert.equal((await started.bytes.next()).done, true, "no more bytes once cancelled");
});
