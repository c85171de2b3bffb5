/**
 * The one-thread file job run several times in one process: what its first
 * run costs beyond a warm one (compilation, the heap growing, fresh memory at
 * ~12 µs per 4 KiB page on our VMs: PITFALLS.md 14), tensor by tensor, with
 * the minor page faults each took (from `/proc/self/stat`, Linux).
 *
 * ```sh
 * deno run -A bench/make_checkpoint.ts /dev/shm/b1g.safetensors --tensors 16
 * deno run -A bench/file_job_runs.ts /dev/shm/b1g.safetensors [--out /dev/shm/o.safetensors] [--runs 3]
 * bun bench/file_job_runs.ts /dev/shm/b1g.safetensors
 * ```
 *
 * Output: per run, its time, the growth of the JavaScript heap over it per
 * MiB of input, and each tensor's milliseconds (page faults in parentheses),
 * then `RESULT {json}` lines. The heap's growth is what the job allocated
 * when no collection ran: give Deno a young generation that holds a whole
 * run, `--v8-flags=--min-semi-space-size=128,--max-semi-space-size=128`.
 *
 * @module
 */
import { readFileSync, rmSync, statSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { quantizeFile } from "../streams/quantize_pipeline.ts";

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { out: { type: "string" }, runs: { type: "string", default: "3" } },
  allowPositionals: true,
});
if (positionals.length !== 1) {
  console.error("usage: file_job_runs.ts CHECKPOINT.safetensors [--out OUT.safetensors] [--runs N]");
  process.exit(2);
}
const [input] = positionals;
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`--runs expects a positive integer, got "${values.runs}"`);
  process.exit(2);
}
const output = values.out ?? input.replace(/\.safetensors$/, "") + ".runs.safetensors";
const runtime = "Bun" in globalThis ? "bun" : "deno";

/** Minor page faults of this process so far, or NaN where /proc is missing. */
function minorFaults(): number {
  try {
    return Number(readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ")[7]);
  } catch {
    return NaN;
  }
}

for (let run = 0; run < runs; run++) {
  const tensors: { ms: number; faults: number }[] = [];
  const start = performance.now();
  let at = start, faults = minorFaults();
  const startFaults = faults;
  const startHeap = process.memoryUsage().heapUsed;
  await quantizeFile(input, output, {
    workers: 0,
    onTensor: () => {
      const now = performance.now(), f = minorFaults();
      tensors.push({ ms: now - at, faults: f - faults });
      at = now, faults = f;
    },
  });
  const ms = performance.now() - start;
  const heapKiBPerMiB = (process.memoryUsage().heapUsed - startHeap) / 1024 / (statSync(input).size / 2 ** 20);
  console.log(
    `${runtime} run ${run}: ${ms.toFixed(0)} ms, ${minorFaults() - startFaults} page faults, heap +${
      heapKiBPerMiB.toFixed(1)
    } KiB per MiB; per tensor ms (faults): ${tensors.map((t) => `${t.ms.toFixed(0)} (${t.faults})`).join(" ")}`,
  );
  console.log(`RESULT ${JSON.stringify({ bench: "file_job_runs", runtime, run, ms, heapKiBPerMiB, tensors })}`);
}
rmSync(output, { force: true });
