/**
 * The quantflow command line: `quantize`, `dequantize`, `inspect`,
 * `calibrate`, `serve` and `demo`. Exit codes: 0 success, 1 bad input (with
 * a one-line reason), 2 bad usage.
 *
 * Run it as `deno task quantize ...`, `deno run -A src/cli.ts quantize ...`
 * or `bun src/cli.ts quantize ...`.
 *
 * @module
 */
import { FlagError, parseFlags } from "./_flags.ts";
import { fileSize, makeDirectory, readTextFile, writeWholeFile } from "./_file_io.ts";
import { commandArgs, setExitCode } from "./_process.ts";
import { ConfigError, Float16OverflowError, FormatError, NonFiniteError } from "./errors.ts";
import { parseConfig, type QuantizeConfig } from "./config.ts";
import { GPT2_CONFIG, tinyGpt2 } from "./demo_model.ts";
import { ProgressBar } from "./progress_bar.ts";
import { formatReport, type ModelReport } from "./report.ts";
import { quantizeFile } from "../streams/quantize_pipeline.ts";
import { dequantizeFile } from "../streams/dequantize_pipeline.ts";
import { formatCheckpoint, inspectFile } from "../streams/inspect.ts";
import { isShardIndexPath } from "./shard_index.ts";
import { setWasmKernelsEnabled } from "./wasm_kernels.ts";

const USAGE = `quantflow: linear quantization of safetensors checkpoints (Core ML Tools numbers)

Usage:
  quantflow quantize IN.safetensors -o OUT.safetensors|OUT.arrows [options]   (IN.arrows: float slabs, to OUT.arrows)
      --mode linear_symmetric|linear     (default linear_symmetric)
      --dtype int8|uint8|int4|uint4      (default int8)
      --granularity per_tensor|per_channel|per_block   (default per_channel)
      --axis N                           channel axis, negative from the end (default 0)
      --block-size N                     per_block block length (default 32)
      --weight-threshold N               keep tensors with <= N elements in float (default 2048)
      --quantize-rank1                   quantize rank-1 tensors per tensor
      --config FILE.json                 {"global": {...}, "tensors": {"pattern": {...} | null}}
      --report FILE.json                 also write the report as JSON
      --slab-bytes N                     slab budget in bytes (default 1048576)
      --workers N                        worker threads besides this one; same output (default: one per
                                         further core, up to 2, for a .safetensors job on 1 GiB or more)
      --js-kernels                       plain JavaScript kernels instead of WebAssembly SIMD; same output
      --no-error-stats                   leave SNR and max error out of the report (faster: no error arithmetic)
  quantflow dequantize IN.safetensors|IN.arrows -o OUT.safetensors|OUT.arrows
  quantflow inspect FILE.safetensors|FILE.arrows [--json]
  quantflow calibrate SAMPLES.arrows -o params.json [--mode ...] [--dtype int8|uint8] [--observer minmax|ema|percentile]
  quantflow serve [--port 8787] [--host 127.0.0.1] [--max-body BYTES] [--max-concurrent N]
  quantflow demo                         quantize a tiny GPT-2 checkpoint and print the report

A sharded checkpoint (IN = model.safetensors.index.json) is quantized or dequantized shard by shard into a
directory (-o DIR): the shards under their names, and a new index. inspect lists every shard.
`;

/** Bad usage: exit 2. */
class UsageError extends Error {
  override name = "UsageError";
}

function integer(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${flag} expects an integer, got "${value}"`);
  return Number(value);
}

function nonNegative(flag: string, value: number | undefined): number | undefined {
  if (value !== undefined && value < 0) throw new UsageError(`--${flag} expects a number >= 0, got ${value}`);
  return value;
}

const QUANTIZE_FLAGS = {
  output: { type: "string", short: "o" },
  mode: { type: "string" },
  dtype: { type: "string" },
  granularity: { type: "string" },
  axis: { type: "string" },
  "block-size": { type: "string" },
  "weight-threshold": { type: "string" },
  "quantize-rank1": { type: "boolean" },
  config: { type: "string" },
  report: { type: "string" },
  "slab-bytes": { type: "string" },
  workers: { type: "string" },
  "js-kernels": { type: "boolean" },
  "no-error-stats": { type: "boolean" },
} as const;

/** The configuration from a file plus flags; flags override the file's global options. */
function configFrom(values: Record<string, string | boolean | undefined>): QuantizeConfig {
  let file: { global?: object; tensors?: object } = {};
  if (typeof values.config === "string") {
    try {
      file = JSON.parse(readTextFile(values.config));
    } catch (cause) {
      throw new FormatError(`Cannot read config ${values.config}: ${(cause as Error).message}`);
    }
  }
  const flags = Object.fromEntries(
    Object.entries({
      mode: values.mode,
      dtype: values.dtype,
      granularity: values.granularity,
      axis: integer("axis", values.axis as string | undefined),
      blockSize: integer("block-size", values["block-size"] as string | undefined),
      weightThreshold: integer("weight-threshold", values["weight-threshold"] as string | undefined),
      quantizeRank1: values["quantize-rank1"],
    }).filter(([, v]) => v !== undefined),
  );
  try {
    return parseConfig({ ...file, global: { ...(file.global ?? {}), ...flags } });
  } catch (e) {
    // A bad flag value is bad usage; a bad config file is bad input.
    if (e instanceof ConfigError && !values.config) throw new UsageError(e.message);
    throw e;
  }
}

/** The sharded checkpoints' jobs, loaded for a sharded input only: their `node:fs` would slow every start in Deno. */
const shardedJobs = () => import("../streams/sharded_checkpoint.ts");

function oneInput(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} takes one input file, got ${positionals.length}`);
  return positionals[0];
}

/**
 * Whether the input is a sharded checkpoint's index, whose output is a directory.
 *
 * @throws {UsageError} When it is, and the output names a file.
 */
function isSharded(input: string, output: string): boolean {
  if (!isShardIndexPath(input)) return false;
  if (/\.(safetensors|arrows|json)$/.test(output)) {
    throw new UsageError(`${input} is a sharded checkpoint: -o names a directory for its shards and index`);
  }
  return true;
}

function requireOutput(values: { output?: string }, command: string): string {
  if (!values.output) throw new UsageError(`${command} needs -o OUT`);
  return values.output;
}

/**
 * Inputs from which a worker is worth its start (~0.17 s in Deno to load its modules, while this thread works)
 * and its ~40 MiB: at 1 GiB it measured from no gain (Deno) to 20% faster (Bun), at 4 GiB 1.5-2.3x faster
 * (bench/RESULTS.md, Addendum 4).
 */
const PARALLEL_MIN_BYTES = 1024 * 1024 * 1024;

/**
 * Workers for a job when `--workers` is not given: for a safetensors output (tensors split between threads;
 * .arrows output would split slabs, which measured slower), one per further core, at most 2.
 */
async function defaultWorkers(input: string, output: string): Promise<number> {
  if (output.endsWith(".arrows")) return 0;
  let size = 0;
  try {
    // A sharded checkpoint is quantized a shard at a time: its largest shard decides.
    size = isShardIndexPath(input)
      ? Math.max(...(await shardedJobs()).readShardedCheckpoint(input).headers.map((h) => h.dataEnd))
      : fileSize(input);
  } catch { /* the job reports a bad input */ }
  return size >= PARALLEL_MIN_BYTES ? Math.max(0, Math.min(2, (navigator.hardwareConcurrency ?? 1) - 1)) : 0;
}

async function quantize(args: string[], out = console.log): Promise<ModelReport> {
  const { values, positionals } = parseFlags(args, QUANTIZE_FLAGS);
  const input = oneInput(positionals, "quantize");
  const output = requireOutput(values, "quantize");
  const sharded = isSharded(input, output);
  const config = configFrom(values);
  if (values["js-kernels"]) setWasmKernelsEnabled(false);
  const bar = new ProgressBar("quantizing");
  let inputBytes = 0;
  const started = performance.now();
  const workers = nonNegative("workers", integer("workers", values.workers)) ?? await defaultWorkers(input, output);
  // Printed after the progress bar is done with the terminal's line.
  const warnings: string[] = [];
  const report = await (sharded ? (await shardedJobs()).quantizeShardedCheckpoint : quantizeFile)(input, output, {
    config,
    slabBytes: integer("slab-bytes", values["slab-bytes"]),
    workers,
    errorStats: !values["no-error-stats"],
    onWarning: (message) => warnings.push(message),
    onProgress: (done, total) => {
      inputBytes = done;
      bar.update(done, total);
    },
  }).finally(() => {
    bar.finish();
    for (const warning of warnings) console.error(`warning: ${warning}`);
  });
  const seconds = (performance.now() - started) / 1000;
  out(formatReport(report));
  // Header to renamed output, without the runtime's startup: what bench/pipeline_bench.ts compares with numpy.
  // The setting, not a count: a job with fewer tasks than that starts fewer workers.
  const threads = workers ? ` (--workers ${workers})` : "";
  out(`Done in ${seconds.toFixed(3)} s${threads}: ${rate(inputBytes / seconds)} of tensor data.`);
  const omitted = report.tensors.filter((t) => t.omitted);
  if (omitted.length) {
    console.error(
      `note: ${omitted.length} tensors not written (${omitted[0].omitted}): ${omitted.map((t) => t.name).join(", ")}`,
    );
  }
  if (values.report) writeWholeFile(values.report, JSON.stringify(report, null, 2) + "\n");
  return report;
}

/** Bytes per second, in GB/s from 1 GB/s up (the figure the benchmarks compare), in MB/s below. */
function rate(bytesPerSecond: number): string {
  const mb = bytesPerSecond / 1e6;
  // From 999.95 MB/s on: "1000.0 MB/s" would read oddly.
  return mb >= 999.95 ? `${(mb / 1e3).toFixed(2)} GB/s` : `${mb.toFixed(1)} MB/s`;
}

async function demo(): Promise<void> {
  const dir = ".out/demo";
  makeDirectory(dir);
  const input = `${dir}/tiny-gpt2.safetensors`;
  const output = `${dir}/tiny-gpt2.int8.safetensors`;
  const configPath = `${dir}/gpt2_config.json`;
  writeWholeFile(input, tinyGpt2());
  writeWholeFile(configPath, JSON.stringify(GPT2_CONFIG, null, 2) + "\n");
  console.log(`Generated ${input}: a tiny GPT-2 (2 blocks, hidden 128) in float32.`);
  console.log(`Config ${configPath}: Conv1D weights [in, out] use axis -1.\n`);
  await quantize([input, "-o", output, "--config", configPath]);
  console.log(`\nWrote ${output}. Try: deno task inspect ${output}`);
}

/** A file system error (`ENOENT`, `ENOTDIR`, `EACCES`, ...): the runtime's message names the path. */
function isSystemError(e: unknown): boolean {
  return /^E[A-Z]+$/.test(String((e as { code?: unknown } | null)?.code));
}

/**
 * Runs the CLI.
 *
 * @param args Command-line arguments after the program name.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  // `calibrate` and `serve` print their own help; the other commands share the usage text.
  if (
    ["quantize", "dequantize", "inspect", "demo"].includes(command) && rest.some((a) => a === "--help" || a === "-h")
  ) {
    console.log(USAGE);
    return 0;
  }
  try {
    switch (command) {
      case "quantize":
        await quantize(rest);
        return 0;
      case "dequantize": {
        const { values, positionals } = parseFlags(rest, { output: { type: "string", short: "o" } });
        const input = oneInput(positionals, "dequantize");
        const output = requireOutput(values, "dequantize");
        const job = isSharded(input, output) ? (await shardedJobs()).dequantizeShardedCheckpoint : dequantizeFile;
        const count = await job(input, output);
        console.log(`Dequantized ${count} tensors into ${output}`);
        return 0;
      }
      case "inspect": {
        const { values, positionals } = parseFlags(rest, { json: { type: "boolean" } });
        const input = oneInput(positionals, "inspect");
        if (isShardIndexPath(input)) {
          const { index, directory } = (await shardedJobs()).readShardedCheckpoint(input);
          const shards = [];
          for (const file of index.shards) shards.push({ file, ...await inspectFile(`${directory}/${file}`) });
          console.log(
            values.json
              ? JSON.stringify({ metadata: index.metadata, shards }, null, 2)
              : shards.map(({ file, ...summary }) => `${file}\n${formatCheckpoint(summary)}`).join("\n\n"),
          );
          return 0;
        }
        const summary = await inspectFile(input);
        console.log(values.json ? JSON.stringify(summary, null, 2) : formatCheckpoint(summary));
        return 0;
      }
      case "calibrate": {
        const { calibrateCommand } = await import("./calibrate_command.ts");
        return await calibrateCommand(rest);
      }
      case "serve": {
        const { serveCommand } = await import("./http/serve_command.ts");
        return await serveCommand(rest);
      }
      case "demo":
        await demo();
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof FlagError) {
      console.error(`quantflow: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    if (
      e instanceof FormatError || e instanceof ConfigError || e instanceof NonFiniteError ||
      e instanceof Float16OverflowError || e instanceof RangeError || isSystemError(e)
    ) {
      console.error(`quantflow: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) setExitCode(await main(commandArgs()));
