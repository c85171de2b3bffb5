import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startFileJob } from "../streams/_file_job.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { tinyGpt2 } from "../src/demo_model.ts";

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
    const job = await startFileJob(input, { config, slabBytes: 4096, reuseBuffers: fresh });
    const streamed = await quantizeSafetensors(input, { config, slabBytes: 4096 });
    assert.deepEqual(await concat(job.bytes), await concat(streamed.output), JSON.stringify(config));
    assert.deepEqual(job.report(), streamed.report(), JSON.stringify(config));
  }
});

test("cancel closes the input, whether the job started or not", async () => {
  const before = openFiles();
  const unstarted = await startFileJob(input, { slabBytes: 4096, reuseBuffers: fresh });
  await unstarted.cancel();
  assert.equal(openFiles(), before, "never started");

  const started = await startFileJob(input, { slabBytes: 4096, reuseBuffers: fresh });
  for (let k = 0; k < 3; k++) assert.equal((await started.bytes.next()).done, false);
  await started.cancel();
  assert.equal(openFiles(), before, "started");
  assert.equal((await started.bytes.next()).done, true, "no more bytes once cancelled");
});
