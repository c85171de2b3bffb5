/**
 * The `calibrate` command: Arrow IPC calibration samples in, activation
 * quantization parameters (JSON) out.
 *
 * @module
 */
import { open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { parseFlags } from "./_flags.ts";
import { type ActivationDType, computeActivationParams, stringifyActivationParams } from "./activation_params.ts";
import { CalibrationStats, type ObserverKind } from "./calibration_stats.ts";
import { calibrationStatsFromArrow, calibrationStatsToArrow } from "./calibration_stats_arrow.ts";
import type { QuantMode } from "./types.ts";
import { CalibrateStream } from "../streams/calibrate_stream.ts";
import { readActivationSamples } from "../streams/activation_sample_source.ts";

const USAGE = `Usage: calibrate SAMPLES.arrows... -o PARAMS.json [options]

Calibrates activation quantization (SPEC.md Section 6) from named activation
samples in Arrow IPC stream files (columns "name": Utf8 and "values":
List<Float32>, FixedSizeList<Float32> or Float32; one sample per row) and
writes each activation's rmin, rmax, scale and zero point as JSON.

Options:
  -o, --output FILE             where to write the parameters (required)
      --mode MODE               linear_symmetric (default) or linear
      --dtype DTYPE             int8 (default) or uint8
      --observer KIND           minmax (default, Core ML Tools), ema or percentile
      --percentile P            percentile observer's clipping point, in [50, 100] (default 99.99)
      --averaging-constant C    ema observer's constant, in (0, 1] (default 0.01)
      --skip-non-finite         skip NaN and infinities instead of failing
      --resume FILE             start from saved statistics (JSON or Arrow); repeatable, merged in order
      --save-stats FILE         also save the statistics (JSON if FILE ends in .json, else Arrow IPC)
  -h, --help                    show this help
`;

/** Bad command-line usage: exit code 2. */
class UsageError extends Error {}

function choice<T extends string>(flag: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${flag} must be one of ${allowed.join(", ")}; got "${value}"`);
  }
  return value as T;
}

function numberFlag(
  flag: string,
  value: string | undefined,
  ok: (n: number) => boolean,
  range: string,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !ok(n)) throw new UsageError(`--${flag} must be a number in ${range}; got "${value}"`);
  return n;
}

/** A file's bytes as fresh 1 MiB chunks (the Arrow reader may keep views into them). */
async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  const handle = await open(path, "r");
  try {
    for (;;) {
      const buffer = new Uint8Array(1 << 20);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) return;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** Writes `bytes` to `path` through a temporary file in the same directory, so `path` is never partial. */
async function writeAtomically(path: string, bytes: string | Uint8Array): Promise<void> {
  const temp = join(
    dirname(path),
    `.${basename(path)}.${Date.now().toString(36)}${Math.random().toString(36).slice(2)}.tmp`,
  );
  try {
    await writeFile(temp, bytes);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

async function loadStats(path: string, skip: boolean): Promise<CalibrationStats> {
  const bytes = await readFile(path);
  const options = { nonFinite: skip ? "skip" as const : "error" as const };
  // JSON starts with "{" (after optional whitespace); an Arrow IPC stream with 0xFFFFFFFF.
  const text = new TextDecoder().decode(bytes.subarray(0, 64)).trimStart();
  try {
    if (text.startsWith("{")) return CalibrationStats.fromJSON(new TextDecoder().decode(bytes), options);
    return calibrationStatsFromArrow(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), options);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Runs `calibrate SAMPLES.arrows... -o params.json [options]` (see `--help`):
 * calibrates every sample file (each is one shard; their statistics merge
 * exactly), computes each activation's parameters and writes them as JSON,
 * atomically (temporary file, then rename). Messages go to stderr.
 *
 * @param args Command-line arguments after the command name.
 * @returns The exit code: 0 on success, 1 on bad input (with a one-line reason), 2 on bad usage.
 */
export async function calibrateCommand(args: string[]): Promise<number> {
  let options;
  try {
    const parsed = parseFlags(args, {
      output: { type: "string", short: "o" },
      mode: { type: "string" },
      dtype: { type: "string" },
      observer: { type: "string" },
      percentile: { type: "string" },
      "averaging-constant": { type: "string" },
      "skip-non-finite": { type: "boolean" },
      resume: { type: "string", multiple: true },
      "save-stats": { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    const v = parsed.values;
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    if (!v.output) throw new UsageError("missing -o PARAMS.json");
    const resume = v.resume ?? [];
    if (parsed.positionals.length === 0 && resume.length === 0) {
      throw new UsageError("give at least one SAMPLES.arrows file (or --resume FILE)");
    }
    const observer = v.observer === undefined
      ? undefined
      : choice<ObserverKind>("observer", v.observer, ["minmax", "ema", "percentile"], "minmax");
    const percentile = numberFlag("percentile", v.percentile, (n) => n >= 50 && n <= 100, "[50, 100]");
    const averagingConstant = numberFlag(
      "averaging-constant",
      v["averaging-constant"],
      (n) => n > 0 && n <= 1,
      "(0, 1]",
    );
    if (percentile !== undefined && observer !== "percentile") {
      throw new UsageError("--percentile needs --observer percentile");
    }
    if (averagingConstant !== undefined && observer !== "ema") {
      throw new UsageError("--averaging-constant needs --observer ema");
    }
    options = {
      files: parsed.positionals,
      output: v.output,
      mode: choice<QuantMode>("mode", v.mode, ["linear_symmetric", "linear"], "linear_symmetric"),
      dtype: choice<ActivationDType>("dtype", v.dtype, ["int8", "uint8"], "int8"),
      observer,
      percentile,
      averagingConstant,
      skip: v["skip-non-finite"] ?? false,
      resume,
      saveStats: v["save-stats"],
    };
  } catch (error) {
    const message = error instanceof UsageError ? error.message : (error as Error).message;
    console.error(`calibrate: ${message.split("\n")[0]}\nTry "calibrate --help".`);
    return 2;
  }

  try {
    const { files, skip } = options;
    let stats: CalibrationStats | undefined;
    for (const path of options.resume) {
      const loaded = await loadStats(path, skip);
      if (stats) stats.merge(loaded);
      else stats = loaded;
    }
    if (stats && options.observer && stats.observer !== options.observer) {
      throw new Error(
        `--observer ${options.observer} does not match the resumed statistics' observer ${stats.observer}`,
      );
    }
    const streamOptions = {
      observer: stats?.observer ?? options.observer ?? "minmax",
      averagingConstant: stats?.averagingConstant ?? options.averagingConstant,
      histogramBits: stats?.histogramBits,
      nonFinite: skip ? "skip" as const : "error" as const,
    };
    let samples = 0;
    for (const path of files) {
      try {
        const shard = readActivationSamples(fileChunks(path)).pipeThrough(new CalibrateStream(streamOptions));
        for await (const part of shard) {
          for (const name of part.names()) samples += part.get(name)!.samples;
          stats = stats ? stats.merge(part) : part;
        }
      } catch (error) {
        throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
      }
    }
    if (!stats || stats.size === 0) throw new Error("no activation samples found");
    const params = computeActivationParams(stats, {
      mode: options.mode,
      dtype: options.dtype,
      ...(options.percentile !== undefined ? { percentile: options.percentile } : {}),
    });
    if (options.saveStats) {
      const bytes = options.saveStats.endsWith(".json")
        ? JSON.stringify(stats.toJSON()) + "\n"
        : calibrationStatsToArrow(stats);
      await writeAtomically(options.saveStats, bytes);
    }
    await writeAtomically(options.output, stringifyActivationParams(params));
    // With --resume the statistics hold earlier samples too.
    let total = 0;
    for (const name of stats.names()) total += stats.get(name)!.samples;
    const counted = total === samples ? `${total} samples` : `${total} samples (${samples} new)`;
    console.error(
      `calibrate: ${params.length} activations from ${counted} (${stats.observer}, ${options.mode} ${options.dtype}) -> ${options.output}`,
    );
    return 0;
  } catch (error) {
    console.error(`calibrate: ${String((error as Error).message ?? error).replaceAll("\n", " ")}`);
    return 1;
  }
}
