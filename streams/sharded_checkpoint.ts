/**
 * Sharded checkpoints: a model stored as several safetensors files and an
 * index (`model.safetensors.index.json`, see `src/shard_index.ts`), as Hugging
 * Face saves models too large for one file. Quantizing or dequantizing one
 * runs the file job on each shard in turn and writes a new index for the new
 * tensor names.
 *
 * @module
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { openFileSource } from "../src/byte_source.ts";
import { FormatError } from "../src/errors.ts";
import { type ModelReport, summarize } from "../src/report.ts";
import type { SafetensorsHeader } from "../src/safetensors_header.ts";
import { encodeShardIndex, parseShardIndex, type ShardIndex } from "../src/shard_index.ts";
import { dequantizeFile, type DequantizeFileOptions, readHeader } from "./dequantize_pipeline.ts";
import { quantizeFile, type QuantizePipelineOptions } from "./quantize_pipeline.ts";

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
 */
export function readShardedCheckpoint(indexPath: string): ShardedCheckpoint {
  const name = basename(indexPath);
  const index = parseShardIndex(readFileSync(indexPath, "utf8"), name);
  const directory = dirname(indexPath);
  const headers = index.shards.map((shard) => {
    const header = readShardHeader(join(directory, shard), shard, name);
    const listed = new Set(header.entries.map((e) => e.name));
    for (const entry of header.entries) {
      const where = index.weightMap[entry.name];
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
 * another, as {@linkcode quantizeFile} does a file, and appear under their
 * names only when all are done, the index last; on failure none appears.
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
 * @throws {FormatError} When the index or a shard is malformed, or they disagree (nothing is written).
 * @throws {NonFiniteError} When a tensor to quantize holds NaN or an infinity (nothing is written).
 * @throws {RangeError} When `outputDir` is the input's directory, `format` is not safetensors, or an option is bad.
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
 * @param indexPath The index file of the quantized checkpoint.
 * @param outputDir Where to write; created if missing. Not the input's directory.
 * @param options As for {@linkcode dequantizeFile}.
 * @returns The number of tensors dequantized, in all shards.
 * @throws {FormatError} When the index or a shard is malformed, or they disagree (nothing is written).
 * @throws {RangeError} When `outputDir` is the input's directory, or an option is bad.
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
 * Runs a file job on each shard into a staging name in `outputDir`, writes the
 * index of the new shards, then renames the shards and the index (last) into
 * place; on failure removes whatever it staged.
 */
async function eachShard<T>(
  indexPath: string,
  { index, directory }: ShardedCheckpoint,
  outputDir: string,
  job: (input: string, output: string, k: number) => Promise<T>,
): Promise<T[]> {
  if (existsSync(outputDir) && realpathSync(outputDir) === realpathSync(directory)) {
    throw new RangeError(
      `Cannot write a sharded checkpoint into its own directory "${outputDir}": its shards would be replaced`,
    );
  }
  mkdirSync(outputDir, { recursive: true });
  const tag = crypto.randomUUID().slice(0, 8);
  const files = [...index.shards, basename(indexPath)];
  const staged = files.map((file) => join(outputDir, `${file}.${tag}.partial`));
  try {
    const results: T[] = [];
    for (const [k, shard] of index.shards.entries()) results.push(await job(join(directory, shard), staged[k], k));
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    for (const [k, shard] of index.shards.entries()) {
      const header = readShardHeader(staged[k], shard, "the new index");
      for (const entry of header.entries) weightMap[entry.name] = shard;
      totalSize += header.dataEnd - header.dataStart;
    }
    writeFileSync(staged[files.length - 1], encodeShardIndex({ ...index.metadata, total_size: totalSize }, weightMap));
    for (const [k, file] of files.entries()) renameSync(staged[k], join(outputDir, file));
    return results;
  } catch (e) {
    for (const path of staged) rmSync(path, { force: true });
    throw e;
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
