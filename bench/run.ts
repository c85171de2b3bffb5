/**
 * `deno task bench`: the kernel benchmark on Deno (with the numpy
 * comparison) and on Bun, the stream pipeline in memory against the bare
 * kernel (bench/pipeline_memory_bench.ts), then a short pipeline benchmark
 * from file to file (256 MiB input, both runtimes), each as a child process,
 * and a summary table.
 *
 * ```sh
 * deno task bench                  # a few minutes
 * deno task bench --full           # pipeline on 256 MiB, 1 GiB and 2 GiB too
 * deno task bench --runtimes deno  # skip Bun
 * ```
 *
 * Other flags (`--reps`, `--keep`, `--no-numpy`, `--out-dir`) pass through to
 * bench/pipeline_bench.ts. The children's full output, `RESULT {json}` lines
 * included, is saved to bench/data/last_run.log.
 *
 * @module
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { formatKernelTable, type KernelResult, parseResults } from "./kernel_js_bench.ts";
import { type CaseSummary, formatPipelineTable } from "./pipeline_bench.ts";

/** The runtimes' executables: this Deno when running under Deno, else \`deno\` and \`bun\` from PATH. */
const DENO = (globalThis as { Deno?: { execPath(): string } }).Deno?.execPath() ?? "deno";
const BUN = "bun";
/** Every child's full stdout (RESULT lines included) lands here, for RESULTS.md. */
const LOG = join("bench", "data", "last_run.log");
mkdirSync(join("bench", "data"), { recursive: true });
/** The code measured: HEAD, and whether library files differ from it (others may be committing meanwhile). */
function revision(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).stdout?.trim() || "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "src", "streams", "mod.ts"], { encoding: "utf8" })
    .stdout?.trim();
  return dirty ? `${head} (src/streams modified)` : head;
}
const startRevision = revision();
writeFileSync(
  LOG,
  `# bench/run.ts ${process.argv.slice(2).join(" ")} at ${new Date().toISOString()}, commit ${startRevision}\n`,
);

function runTs(runtime: string, script: string, args: readonly string[]): string {
  const argv = runtime === "deno" ? [DENO, "run", "-A", script, ...args] : [BUN, script, ...args];
  console.log(`$ ${argv.join(" ")}`);
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: "utf8",
    maxBuffer: 1 << 26,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const out = r.stdout ?? "";
  appendFileSync(LOG, `$ ${argv.join(" ")}\n${out}`);
  // Progress lines (not RESULT) are shown as they were printed.
  for (const line of out.split("\n")) if (line && !line.startsWith("RESULT ")) console.log(`  ${line}`);
  if (r.status !== 0) console.error(`${script} on ${runtime} exited with ${r.status}`);
  return out;
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    full: { type: "boolean", default: false },
    runtimes: { type: "string", default: "deno,bun" },
    reps: { type: "string" },
    keep: { type: "boolean", default: false },
    "no-numpy": { type: "boolean", default: false },
    "out-dir": { type: "string" },
  },
});
const runtimes = values.runtimes!.split(",");
const started = performance.now();

const kernel: KernelResult[] = [];
for (const runtime of runtimes) {
  const numpy = runtime === runtimes[0] && !values["no-numpy"] ? [] : ["--no-numpy"];
  // Issue 2 is about the plain JavaScript kernels; the default (wasm) ones are measured too.
  for (const kernels of [["--no-wasm"], []]) {
    const args = ["--rounds", "5", ...kernels, ...(kernels.length ? numpy : ["--no-numpy"])];
    kernel.push(...parseResults<KernelResult>(runTs(runtime, "bench/kernel_js_bench.ts", args)));
  }
}

// Issue 3's pipeline against the bare kernel without the file system, in one process per runtime and kernel kind.
const memoryLines: string[] = [];
const memoryVerdicts: string[] = [];
for (const runtime of runtimes) {
  for (const kernels of [[], ["--js-kernels"]]) {
    const out = runTs(runtime, "bench/pipeline_memory_bench.ts", ["--rounds", "7", ...kernels]);
    memoryLines.push(...out.split("\n").filter((line) => line && !line.startsWith("RESULT ")));
    type Case = { runtime: string; kernels: string; case: string; reference?: string; ofReference?: number };
    const streams = parseResults<Case>(out).filter((c) => c.reference);
    if (!streams.length) continue;
    // Like for like: each pipeline against the bare kernel doing the same arithmetic (with or without the
    // report's error sums); the worst of the six decides.
    const worst = Math.min(...streams.map((c) => c.ofReference!));
    const list = (cs: Case[]) => cs.map((c) => `${(100 * c.ofReference!).toFixed(0)}% (${c.case})`).join(", ");
    memoryVerdicts.push(
      `issue 3 ${streams[0].runtime}, ${streams[0].kernels} kernels: stream pipeline in memory / bare kernel ` +
        `elements/s, with error stats / kernel + error stats = ${
          list(streams.filter((c) => c.reference !== "kernel"))
        }; without / quantizeTensor = ${list(streams.filter((c) => c.reference === "kernel"))} >= 70%: ${
          worst >= 0.7 ? "PASS" : "FAIL"
        }`,
    );
  }
}

const pipelineArgs = [
  "--runtimes",
  values.runtimes!,
  ...(values.full ? ["--full"] : []),
  ...(values.reps ? ["--reps", values.reps] : []),
  ...(values.keep ? ["--keep"] : []),
  ...(values["no-numpy"] ? ["--no-numpy"] : []),
  ...(values["out-dir"] ? ["--out-dir", values["out-dir"]] : []),
];
const pipelineOut = runTs("deno", "bench/pipeline_bench.ts", pipelineArgs);
const pipeline = parseResults<CaseSummary & { bench: string }>(pipelineOut).filter((r) =>
  r.bench === "pipeline-summary"
);
const pipelineKernel = parseResults<KernelResult & { bench: string }>(pipelineOut).filter((r) => r.bench === "kernel");

console.log(
  `\n===== Summary (${new Date().toISOString()}, ${((performance.now() - started) / 1000).toFixed(0)} s) =====`,
);
const endRevision = revision();
console.log(
  `commit ${startRevision}${
    endRevision === startRevision ? "" : ` at the start, ${endRevision} at the end: the code changed DURING the run`
  }`,
);
console.log("\nKernel: quantizeTensor on float32 [4096, 4096], both jobs interleaved in one process");
console.log(formatKernelTable(kernel));
if (pipelineKernel.length) {
  console.log("\nKernel: int8 per channel alone (monomorphic), the pipeline's reference");
  console.log(formatKernelTable(pipelineKernel));
}
console.log("\nPipeline in memory (bench/pipeline_memory_bench.ts): 256 MiB, best of 7, against the bare kernel");
for (const line of memoryLines) console.log(line);
console.log("\nPipeline: CLI child process under /usr/bin/time -v");
console.log(formatPipelineTable(pipeline));
console.log("");
for (const line of memoryVerdicts) console.log(line);
for (const line of pipelineOut.split("\n")) if (/^(issue|competitor) /.test(line)) console.log(line);
