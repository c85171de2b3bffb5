/**
 * Sharded checkpoints: a model stored as several safetensors files and an
 * index (`model.safetensors.index.json`, see `src/shard_index.ts`), as Hugging
 * Face saves models too large for one file. Quantizing or dequantizing one
 * runs the file job on each shard in turn and writes a new index for the new
 * tensor names.
 *
 * @module
 */
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { openFileSource } from "../src/byte_source.ts";
import { FormatError } from "../src/errors.ts";
import { type ModelReport, summarize } from "../src/report.ts";
import type { SafetensorsHeader } from "../src/safetensors_header.ts";
import { encodeShardIndex, parseShardIndex, type ShardIndex } from "../src/shard_index.ts";
import { dequantizeFile, type DequantizeFileOptions, readHeader } from "./dequantize_pipeline.ts";
import { resolveConfig } from "../src/config.ts";
import { quantizeFile, type QuantizePipelineOptions } from "./quantize_pipeline.ts";
import { outputPlan } from "./_output_plan.ts";

/** A shard index and the headers of its shards, checked against each other. */
export interface ShardedCheckpoint {
  /** The index. */
  readonly index: ShardIndex;
  /** The directory of the index and its shards. */
  readonly directory: string;
  /** Each shard's header, in the order of `index.shards`. */
  readonly headers: readonly SafetensorsHeader[];
}

/**
 * Reads a shard index and the header of every shard, and checks that they
 * agree: each tensor the index lists is in its shard, and each shard holds
 * only tensors the index puts there.
 *
 * @example
 * ```ts
 * import { encodeSafetensorsHeader, readShardedCheckpoint } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "shards-"));
 * const shard = (name: string) => {
 *   const header = encodeSafetensorsHeader([{ name, dtype: "F32", shape: [2], byteLength: 8 }]);
 *   const file = new Uint8Array(header.length + 8);
 *   file.set(header);
 *   return file;
 * };
 * writeFileSync(join(dir, "m-1.safetensors"), shard("a"));
 * writeFileSync(join(dir, "m-2.safetensors"), shard("b"));
 * writeFileSync(
 *   join(dir, "model.safetensors.index.json"),
 *   JSON.stringify({ weight_map: { a: "m-1.safetensors", b: "m-2.safetensors" } }),
 * );
 * const checkpoint = readShardedCheckpoint(join(dir, "model.safetensors.index.json"));
 * assert.deepEqual(checkpoint.headers.map((h) => h.entries[0].name), ["a", "b"]);
 * ```
 *
 * @param indexPath The index file.
 * @returns The index, its directory and the shards' headers.
 * @throws {FormatError} When the index or a shard's header is malformed, a shard is missing, or they disagree.
 * @throws {Error} The runtime's file-system error (`ENOENT`, `EACCES`, ...) when the index cannot be read.
 */
export function readShardedCheckpoint(indexPath: string): ShardedCheckpoint {
  const name = basename(indexPath);
  const index = parseShardIndex(readFileSync(indexPath, "utf8"), name);
  const directory = dirname(indexPath);
  const headers = index.shards.map((shard) => {
    const header = readShardHeader(join(directory, shard), shard, name);
    const listed = new Set(header.entries.map((e) => e.name));
    for (const entry of header.entries) {
      const where = Object.hasOwn(index.weightMap, entry.name) ? index.weightMap[entry.name] : undefined;
      if (where !== shard) {
        throw new FormatError(
          `Shard "${shard}" holds tensor "${entry.name}", which ${name} ` +
            (where === undefined ? "does not list" : `puts in "${where}"`),
        );
      }
    }
    for (const [tensor, where] of Object.entries(index.weightMap)) {
      if (where === shard && !listed.has(tensor)) {
        throw new FormatError(`${name} puts tensor "${tensor}" in "${shard}", which does not hold it`);
      }
    }
    return header;
  });
  return { index, directory, headers };
}

/**
 * Quantizes a sharded checkpoint into a directory: each shard, under its own
 * name, and a new index listing the quantized tensors (`NAME`, `NAME.scale`,
 * `NAME.zero_point`) with their shards. The shards are quantized one after
 * another, as {@linkcode quantizeFile} does a file, into a staging directory
 * inside `outputDir` (`.quantflow-XXXXXX`), and move out of it under their
 * names only when all are done, the index last. On failure none appears, and
 * neither does an `outputDir` the job created. Other files in `outputDir` are
 * left alone.
 *
 * @example
 * ```ts
 * import { encodeSafetensorsHeader, quantizeShardedCheckpoint } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "shards-"));
 * const weight = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i));
 * for (const [file, name] of [["m-1.safetensors", "l0.weight"], ["m-2.safetensors", "l1.weight"]]) {
 *   const header = encodeSafetensorsHeader([{ name, dtype: "F32", shape: [64, 64], byteLength: weight.byteLength }]);
 *   const bytes = new Uint8Array(header.length + weight.byteLength);
 *   bytes.set(header);
 *   bytes.set(new Uint8Array(weight.buffer), header.length);
 *   writeFileSync(join(dir, file), bytes);
 * }
 * const index = join(dir, "model.safetensors.index.json");
 * writeFileSync(index, JSON.stringify({ weight_map: { "l0.weight": "m-1.safetensors", "l1.weight": "m-2.safetensors" } }));
 *
 * const report = await quantizeShardedCheckpoint(index, join(dir, "int8"));
 * assert.equal(report.totals.quantized, 2);
 * const written = JSON.parse(readFileSync(join(dir, "int8", "model.safetensors.index.json"), "utf8"));
 * assert.equal(written.weight_map["l1.weight.scale"], "m-2.safetensors");
 * ```
 *
 * @param indexPath The index file (`*.index.json`).
 * @param outputDir Where to write the shards and the index; created if missing. Not the input's directory.
 * @param options As for {@linkcode quantizeFile}; `onProgress` counts the data of all shards, and `format` must be
 *   safetensors.
 * @returns The report of all shards' tensors, in shard order.
 * @throws {FormatError} When the index or a shard is malformed, they disagree, or two shards would hold output
 *   tensors of the same name (nothing is written).
 * @throws {NonFiniteError} When a tensor to quantize holds NaN or an infinity (nothing is written).
 * @throws {RangeError} When `outputDir` is the input's directory or a file, `format` is not safetensors, or an option
 *   is bad.
 */
export async function quantizeShardedCheckpoint(
  indexPath: string,
  outputDir: string,
  options: QuantizePipelineOptions = {},
): Promise<ModelReport> {
  if ((options.format ?? "safetensors") !== "safetensors") {
    throw new RangeError(`A sharded checkpoint is written as safetensors shards, not ${options.format}`);
  }
  const checkpoint = readShardedCheckpoint(indexPath);
  // Before any work: a tensor named like another's scale (`w` here, `w.scale` there) is caught within one file by
  // the file job, across shards only here.
  const config = resolveConfig(options.config);
  shardOf(checkpoint.index.shards, checkpoint.headers.map((h) => outputPlan(h, config).groups.flat()));
  const sizes = checkpoint.headers.map((h) => h.dataEnd - h.dataStart);
  const total = sizes.reduce((a, b) => a + b, 0);
  let before = 0;
  const reports = await eachShard(indexPath, checkpoint, outputDir, async (input, output, k) => {
    const report = await quantizeFile(input, output, {
      ...options,
      format: "safetensors",
      onProgress: options.onProgress && ((done) => options.onProgress!(before + done, total)),
    });
    before += sizes[k];
    return report;
  });
  return summarize(reports.flatMap((r) => r.tensors));
}

/**
 * Dequantizes a sharded checkpoint that {@linkcode quantizeShardedCheckpoint}
 * wrote into a directory: each shard back to float, under its own name, and a
 * new index with the original tensor names. As with quantizing, the files
 * appear only when all are done.
 *
 * @example
 * ```ts
 * import {
 *   dequantizeShardedCheckpoint,
 *   encodeSafetensorsHeader,
 *   quantizeShardedCheckpoint,
 * } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "shards-"));
 * const weight = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.cos(i));
 * const header = encodeSafetensorsHeader([{ name: "w", dtype: "F32", shape: [64, 64], byteLength: weight.byteLength }]);
 * const bytes = new Uint8Array(header.length + weight.byteLength);
 * bytes.set(header);
 * bytes.set(new Uint8Array(weight.buffer), header.length);
 * writeFileSync(join(dir, "m-1.safetensors"), bytes);
 * writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { w: "m-1.safetensors" } }));
 *
 * await quantizeShardedCheckpoint(join(dir, "model.safetensors.index.json"), join(dir, "int8"));
 * const count = await dequantizeShardedCheckpoint(join(dir, "int8", "model.safetensors.index.json"), join(dir, "f32"));
 * assert.equal(count, 1);
 * const index = JSON.parse(readFileSync(join(dir, "f32", "model.safetensors.index.json"), "utf8"));
 * assert.deepEqual(index.weight_map, { w: "m-1.safetensors" });
 * ```
 *
 * @param indexPath The index file of the quantized checkpoint.
 * @param outputDir Where to write; created if missing. Not the input's directory.
 * @param options As for {@linkcode dequantizeFile}.
 * @returns The number of tensors dequantized, in all shards.
 * @throws {FormatError} When the index or a shard is malformed, or they disagree (nothing is written).
 * @throws {RangeError} When `outputDir` is the input's directory or a file, or an option is bad.
 */
export async function dequantizeShardedCheckpoint(
  indexPath: string,
  outputDir: string,
  options: DequantizeFileOptions = {},
): Promise<number> {
  const checkpoint = readShardedCheckpoint(indexPath);
  const counts = await eachShard(indexPath, checkpoint, outputDir, (input, output) => {
    return dequantizeFile(input, output, options);
  });
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * Runs a file job on each shard into a staging directory inside `outputDir`,
 * writes the index of the new shards there, then moves the shards and the
 * index (last) out; on failure removes the staging directory, and `outputDir`
 * if this call created it.
 */
async function eachShard<T>(
  indexPath: string,
  { index, directory }: ShardedCheckpoint,
  outputDir: string,
  job: (input: string, output: string, k: number) => Promise<T>,
): Promise<T[]> {
  const indexName = basename(indexPath);
  const files = [...index.shards, indexName];
  if (existsSync(outputDir) && !statSync(outputDir).isDirectory()) {
    throw new RangeError(`Cannot write a sharded checkpoint into "${outputDir}": it is a file, not a directory`);
  }
  const ownDirectory = () =>
    new RangeError(
      `Cannot write a sharded checkpoint into its own directory "${outputDir}": its shards would be replaced`,
    );
  // `model/new/..` names `model` before `new` exists: compare the resolved path first, creating nothing.
  if (resolve(outputDir) === resolve(directory)) throw ownDirectory();
  const created = mkdirSync(outputDir, { recursive: true });
  let staging: string | undefined;
  try {
    // Through symbolic links, only the real path of the existing directory tells.
    if (realpathSync(outputDir) === realpathSync(directory)) throw ownDirectory();
    // A directory in the way would stop the final renames halfway: refuse it before any work.
    const blocked = files.find((file) => lstatSync(join(outputDir, file), { throwIfNoEntry: false })?.isDirectory());
    if (blocked !== undefined) {
      throw new RangeError(`Cannot write "${join(outputDir, blocked)}": a directory of that name is in the way`);
    }
    // Staged inside the output directory: the same file system, so the final moves are renames; and one place to
    // look for leftovers should the process be killed.
    const stage = staging = mkdtempSync(join(outputDir, ".quantflow-"));
    const results: T[] = [];
    for (const [k, shard] of index.shards.entries()) {
      results.push(await job(join(directory, shard), join(stage, shard), k));
    }
    const headers = index.shards.map((shard) => readShardHeader(join(stage, shard), shard, "the new index"));
    const weightMap = shardOf(index.shards, headers.map((h) => h.entries));
    const totalSize = headers.reduce((a, h) => a + h.dataEnd - h.dataStart, 0);
    writeFileSync(join(stage, indexName), encodeShardIndex({ ...index.metadata, total_size: totalSize }, weightMap));
    for (const file of files) renameSync(join(stage, file), join(outputDir, file));
    rmdirSync(stage);
    return results;
  } catch (e) {
    if (staging !== undefined) rmSync(staging, { recursive: true, force: true });
    if (created !== undefined) removeEmptyDirectories(outputDir, created);
    throw e;
  }
}

/**
 * The shard of each tensor, from the tensors of each shard.
 *
 * @throws {FormatError} When two shards hold a tensor of the same name.
 */
function shardOf(shards: readonly string[], tensors: readonly (readonly { name: string }[])[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (const [k, shard] of shards.entries()) {
    for (const { name } of tensors[k]) {
      if (Object.hasOwn(map, name)) {
        throw new FormatError(`Tensor "${name}" would be written to both "${map[name]}" and "${shard}"`);
      }
      map[name] = shard;
    }
  }
  return map;
}

/** Removes `path` and its parents up to `top`, while they are empty. */
function removeEmptyDirectories(path: string, top: string): void {
  for (let dir = resolve(path); dir.startsWith(resolve(top)); dir = dirname(dir)) {
    try {
      rmdirSync(dir);
    } catch {
      return; // not empty, or gone
    }
  }
}

function readShardHeader(path: string, shard: string, indexName: string): SafetensorsHeader {
  let source;
  try {
    source = openFileSource(path);
  } catch (cause) {
    if ((cause as { code?: string }).code !== "ENOENT") throw cause;
    throw new FormatError(`Shard "${shard}" listed in ${indexName} is missing: no file ${path}`, { cause });
  }
  try {
    return readHeader(source);
  } catch (cause) {
    if (!(cause instanceof FormatError)) throw cause;
    throw new FormatError(`Shard "${shard}": ${cause.message}`, { cause });
  } finally {
    source.close();
  }
}
