/**
 * What this machine allows a file job, measured beside it: the bounds under
 * issue 7's end-to-end targets (1 GiB in 0.4 s with one thread, 0.3 s with
 * two).
 *
 * - The I/O floor: reading the checkpoint into a reused 1 MiB buffer
 *   (`readSync`, as the file job reads its slabs), then writing a quarter of
 *   its size (the int8 output) in 1 MiB writes to a new file beside
 *   `--out-dir`. No quantization: what a one-thread job spends at least.
 * - Thread scaling: the file job with its tensors all in workers (this
 *   thread idle), with 1 worker and with 2. A tensor's time is the interval
 *   between finished tensors in steady state (the time from the first
 *   tensor of each worker to the last, over the tensors in between); 2
 *   workers over 1 is what a second thread gains.
 * - The bare loop (`bench/_bare_loop.ts`): the job without its machinery:
 *   each slab read into the wasm memory, quantized with the error sums in
 *   one pass, and written, in 1 and in 2 workers started beforehand (this
 *   thread idle), each worker a new one, as in a job. The job's time beyond
 *   this is its start (modules, header, workers) and its streams.
 * - Fresh memory: the cost of a page touched for the first time, which a
 *   job pays for its buffers and whenever its heap grows.
 *
 * ```sh
 * deno run -A bench/make_checkpoint.ts /dev/shm/b1g.safetensors --tensors 16
 * deno run -A bench/machine_ceiling.ts /dev/shm/b1g.safetensors [--out-dir /dev/shm] [--reps 3]
 * bun bench/machine_ceiling.ts /dev/shm/b1g.safetensors
 * ```
 *
 * Output: a line per measurement, then `RESULT {json}` lines.
 *
 * @module
 */
import { closeSync, openSync, readSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { quantizeFileInParallel } from "../streams/_parallel_file_job.ts";
import { readSafetensors } from "../streams/safetensors_source.ts";
import type { BareShare, BareTimes } from "./_bare_loop.ts";

const MiB = 2 ** 20;
const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { "out-dir": { type: "string" }, reps: { type: "string", default: "3" } },
  allowPositionals: true,
});
if (positionals.length !== 1) {
  console.error("usage: machine_ceiling.ts CHECKPOINT.safetensors [--out-dir DIR] [--reps N]");
  process.exit(2);
}
const [input] = positionals;
const outDir = values["out-dir"] ?? dirname(input);
const reps = Number(values.reps);
const runtime = (globalThis as { Bun?: { version: string } }).Bun
  ? `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`;
const inputBytes = statSync(input).size;

function result(json: Record<string, unknown>): void {
  console.log(`RESULT ${JSON.stringify({ bench: "machine_ceiling", runtime, inputBytes, ...json })}`);
}

/** Reads the whole file into a reused buffer; milliseconds. */
function readAll(buffer: Uint8Array): number {
  const t0 = performance.now();
  const fd = openSync(input, "r");
  try {
    for (let at = 0, n; (n = readSync(fd, buffer, 0, buffer.length, at)) > 0; at += n);
  } finally {
    closeSync(fd);
  }
  return performance.now() - t0;
}

/** Writes `bytes` in writes of the buffer's size to a new file, then removes it; milliseconds. */
function writeAll(buffer: Uint8Array, bytes: number): number {
  const path = join(outDir, `machine_ceiling_${process.pid}.tmp`);
  const t0 = performance.now();
  const fd = openSync(path, "w");
  try {
    for (let left = bytes; left > 0; left -= buffer.length) writeSync(fd, buffer, 0, Math.min(left, buffer.length));
  } finally {
    closeSync(fd);
  }
  const ms = performance.now() - t0;
  unlinkSync(path);
  return ms;
}

const buffer = new Uint8Array(MiB).fill(1);
const reads: number[] = [], writes: number[] = [];
for (let rep = 0; rep < reps; rep++) {
  reads.push(readAll(buffer));
  writes.push(writeAll(buffer, Math.ceil(inputBytes / 4)));
}
const read = Math.min(...reads), write = Math.min(...writes);
console.log(
  `${runtime}: I/O floor, best of ${reps}: read ${(inputBytes / MiB).toFixed(0)} MiB ${read.toFixed(0)} ms (${
    (inputBytes / read / 1e6).toFixed(1)
  } GB/s), write a quarter of it ${write.toFixed(0)} ms: ${((read + write) / 1000).toFixed(3)} s before any arithmetic`,
);
result({ case: "io_floor", readMs: read, writeMs: write, floorSeconds: (read + write) / 1000 });

/** The steady interval between finished tensors with `workers` workers and this thread idle; milliseconds. */
async function tensorInterval(workers: number): Promise<number> {
  const output = join(outDir, `machine_ceiling_${process.pid}.safetensors`);
  const done: number[] = [];
  const t0 = performance.now();
  try {
    await quantizeFileInParallel(input, output, { workers, onTensor: () => done.push(performance.now() - t0) }, {
      inThisThread: false,
      taskBytes: 1,
    });
  } finally {
    try {
      unlinkSync(output);
    } catch { /* not written */ }
  }
  // Each worker's first tensor carries its start; the rest come at the steady rate.
  const steady = done.length - workers;
  if (steady < 2) throw new Error(`${input} has too few tensors to time ${workers} workers`);
  return (done[done.length - 1] - done[workers - 1]) / steady;
}

const interval = new Map<number, number>();
for (const workers of [1, 2]) {
  const runs: number[] = [];
  for (let rep = 0; rep < reps; rep++) runs.push(await tensorInterval(workers));
  interval.set(workers, Math.min(...runs));
}
const scaling = interval.get(1)! / interval.get(2)!;
console.log(
  `${runtime}: a tensor every ${interval.get(1)!.toFixed(1)} ms with 1 worker, every ${
    interval.get(2)!.toFixed(1)
  } ms with 2: a second thread gives ${scaling.toFixed(2)}x`,
);
result({ case: "thread_scaling", oneWorkerMs: interval.get(1), twoWorkersMs: interval.get(2), scaling });

/** Microseconds to allocate and fill a page of fresh memory, best of `reps` 64 MiB buffers. */
function freshPageMicros(): number {
  const runs: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    const t0 = performance.now();
    new Uint8Array(64 * MiB).fill(1);
    runs.push((performance.now() - t0) * 1000 / (64 * MiB / 4096));
  }
  return Math.min(...runs);
}
const pageMicros = freshPageMicros();
console.log(`${runtime}: a fresh 4 KiB page costs ${pageMicros.toFixed(1)} µs to allocate and fill (best of ${reps})`);
result({ case: "fresh_page", microseconds: pageMicros });

const BARE_SLAB = MiB;

/** The checkpoint's data as slabs for the bare loop, or why it cannot be: float32 rows that tile whole slabs. */
async function bareData(): Promise<{ start: number; bytes: number; rowLength: number } | string> {
  const { header, chunks } = await readSafetensors(input);
  await chunks.cancel();
  const { entries } = header;
  const rowLength = entries[0]?.shape.at(-1) ?? 0;
  const fits = entries.every((e, k) =>
    e.dtype === "F32" && e.shape.length === 2 && e.shape[1] === rowLength && (e.end - e.begin) % BARE_SLAB === 0 &&
    (k === 0 || e.begin === entries[k - 1].end)
  );
  if (!entries.length || !fits || BARE_SLAB % (4 * rowLength) !== 0) {
    return "the bare loop needs 2-D float32 tensors, one after another, whose rows tile 1 MiB slabs";
  }
  return { start: entries[0].begin, bytes: entries.at(-1)!.end - entries[0].begin, rowLength };
}

/** The next message of a worker; rejects on its errors. */
function reply<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => data?.error ? reject(new Error(data.error)) : resolve(data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(e.message));
    };
  });
}

/** The bare loop in `threads` new workers, each on an equal share of the slabs; the time from go to the last done. */
async function bareRun(data: { start: number; bytes: number; rowLength: number }, threads: number) {
  const output = join(outDir, `machine_ceiling_${process.pid}.bare`);
  const url = new URL("./_bare_loop_worker.ts", import.meta.url);
  const workers: Worker[] = [];
  try {
    writeFileSync(output, new Uint8Array(0));
    for (let k = 0; k < threads; k++) workers.push(new Worker(url, { type: "module" }));
    await Promise.all(workers.map((w) => reply<"ready">(w)));
    const slabs = data.bytes / BARE_SLAB;
    const t0 = performance.now();
    const times = await Promise.all(workers.map((w, k) => {
      const first = Math.floor(slabs * k / threads) * BARE_SLAB;
      const share: BareShare = {
        input,
        output,
        inputStart: data.start + first,
        outputStart: first / 4,
        bytes: Math.floor(slabs * (k + 1) / threads) * BARE_SLAB - first,
        rowLength: data.rowLength,
        slabBytes: BARE_SLAB,
      };
      const done = reply<BareTimes>(w);
      w.postMessage(share);
      return done;
    }));
    return { ms: performance.now() - t0, times };
  } finally {
    for (const w of workers) w.terminate();
    try {
      unlinkSync(output);
    } catch { /* not created */ }
  }
}

const data = await bareData();
if (typeof data === "string") console.log(`${runtime}: bare loop skipped: ${data}`);
else {
  for (const threads of [1, 2]) {
    const runs = [];
    for (let rep = 0; rep < reps; rep++) runs.push(await bareRun(data, threads));
    const best = runs.reduce((a, b) => b.ms < a.ms ? b : a);
    const first = Math.max(...best.times.map((t) => t.firstSlabsMs));
    const steady = Math.max(...best.times.map((t) => t.steadySlabMs));
    console.log(
      `${runtime}: bare loop, ${threads} worker${threads > 1 ? "s" : ""}, best of ${reps}: ${best.ms.toFixed(0)} ms ` +
        `(first 4 slabs ${first.toFixed(1)} ms, then ${(steady * 1000).toFixed(0)} µs a slab)`,
    );
    result({ case: "bare_loop", threads, ms: best.ms, firstSlabsMs: first, steadySlabMs: steady });
  }
}
