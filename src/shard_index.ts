/**
 * The index of a sharded checkpoint: the JSON file Hugging Face writes beside
 * the shards of a model too large for one file (`model.safetensors.index.json`),
 * mapping each tensor to the shard that holds it.
 *
 * @module
 */
import { FormatError } from "./errors.ts";

/** How an index file's name ends (`model.safetensors.index.json`). */
export const SHARD_INDEX_SUFFIX = ".index.json";

/** A parsed, validated shard index. */
export interface ShardIndex {
  /** The index's `metadata`; Hugging Face records `total_size`, the bytes of all tensors. */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** The shard file of each tensor. */
  readonly weightMap: Readonly<Record<string, string>>;
  /** The shard files, each once, sorted by name (Hugging Face's `model-00001-of-00003.safetensors` first). */
  readonly shards: readonly string[];
}

/**
 * Whether a path names a shard index, by its suffix.
 *
 * @example
 * ```ts
 * import { isShardIndexPath } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isShardIndexPath("llama/model.safetensors.index.json"));
 * assert.ok(!isShardIndexPath("llama/model-00001-of-00002.safetensors"));
 * ```
 *
 * @param path A file path.
 * @returns Whether it ends with `.index.json`.
 */
export function isShardIndexPath(path: string): boolean {
  return path.endsWith(SHARD_INDEX_SUFFIX);
}

/**
 * Parses a shard index. Shards must be `.safetensors` files beside the index:
 * a name with a directory in it is refused, so that reading and writing a
 * sharded checkpoint never leaves its directories.
 *
 * @example
 * ```ts
 * import { parseShardIndex } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const index = parseShardIndex(JSON.stringify({
 *   metadata: { total_size: 96 },
 *   weight_map: { "a.weight": "m-2.safetensors", "b.weight": "m-1.safetensors", "c.bias": "m-2.safetensors" },
 * }));
 * assert.deepEqual(index.shards, ["m-1.safetensors", "m-2.safetensors"]);
 * assert.equal(index.weightMap["b.weight"], "m-1.safetensors");
 * ```
 *
 * @param text The index file's text.
 * @param where The index's name in error messages.
 * @returns The index.
 * @throws {FormatError} When the text is not JSON, lacks a `weight_map` object, or maps a tensor to anything but
 *   the name of a `.safetensors` file.
 */
export function parseShardIndex(text: string, where = "shard index"): ShardIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new FormatError(`${where} is not JSON: ${(cause as Error).message}`, { cause });
  }
  if (!isObject(json)) throw new FormatError(`${where}: expected a JSON object with "weight_map"`);
  const { metadata = {}, weight_map: weightMap } = json;
  if (!isObject(metadata)) throw new FormatError(`${where}: "metadata" must be an object`);
  if (!isObject(weightMap)) {
    throw new FormatError(`${where}: "weight_map" must be an object of tensor names to shard files`);
  }
  const shards = new Set<string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || !isShardFileName(shard)) {
      throw new FormatError(
        `${where}: tensor "${name}" maps to ${JSON.stringify(shard)}; ` +
          `a shard must be the name of a .safetensors file beside the index`,
      );
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw new FormatError(`${where}: "weight_map" lists no tensors`);
  return { metadata, weightMap: weightMap as Record<string, string>, shards: [...shards].sort() };
}

/**
 * Encodes a shard index as Hugging Face writes one: two-space indent, tensor
 * names sorted.
 *
 * @example
 * ```ts
 * import { encodeShardIndex, parseShardIndex } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const text = encodeShardIndex({ total_size: 8 }, { "b": "m-2.safetensors", "a": "m-1.safetensors" });
 * assert.deepEqual(Object.keys(JSON.parse(text).weight_map), ["a", "b"]);
 * assert.deepEqual(parseShardIndex(text).shards, ["m-1.safetensors", "m-2.safetensors"]);
 * ```
 *
 * @param metadata The index's metadata.
 * @param weightMap The shard file of each tensor.
 * @returns The file's text, ending with a newline.
 */
export function encodeShardIndex(
  metadata: Readonly<Record<string, unknown>>,
  weightMap: Readonly<Record<string, string>>,
): string {
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return JSON.stringify({ metadata, weight_map: sorted }, null, 2) + "\n";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isShardFileName(name: string): boolean {
  return name.endsWith(".safetensors") && name.length > ".safetensors".length && !/[\\/\0]/.test(name);
}
