/**
 * The safetensors header: parsing with full validation, and encoding.
 *
 * A safetensors file is an 8-byte little-endian u64 `N`, then `N` bytes of
 * UTF-8 JSON, then the data section. The JSON maps each tensor name to
 * `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the data
 * section, which starts at byte `8 + N`) and may hold `"__metadata__"`, a map
 * of strings to strings.
 *
 * Everything is checked before any tensor is read, so a malformed file fails
 * before an output file is started.
 *
 * @module
 */
import { FormatError } from "./errors.ts";
import type { FloatDType } from "./types.ts";

/** Largest header accepted, as in the reference Rust implementation: bigger is corruption or abuse. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Byte size of one element of each safetensors dtype code. */
const DTYPE_SIZES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
});

const CODE_TO_FLOAT: Readonly<Record<string, FloatDType>> = Object.freeze({
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
});

const FLOAT_TO_CODE: Readonly<Record<FloatDType, "F32" | "F16" | "BF16">> = Object.freeze({
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
});

/** One tensor of a safetensors file, as described by its header. */
export interface SafetensorsEntry {
  /** Tensor name. */
  readonly name: string;
  /** safetensors dtype code, e.g. `F32`, `BF16`, `I64`. */
  readonly dtype: string;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** ABSOLUTE file offset of the tensor's first byte (`dataStart + data_offsets[0]`). */
  readonly begin: number;
  /** ABSOLUTE file offset one past the tensor's last byte (`dataStart + data_offsets[1]`). */
  readonly end: number;
}

/** A parsed and validated safetensors header. */
export interface SafetensorsHeader {
  /** Byte length `N` of the JSON text (the u64 prefix's value). */
  readonly headerLength: number;
  /** Absolute file offset of the data section: `8 + headerLength`. */
  readonly dataStart: number;
  /** Absolute file offset one past the last tensor byte: the file's expected size. */
  readonly dataEnd: number;
  /** Tensors sorted by `begin`. */
  readonly entries: readonly SafetensorsEntry[];
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** A tensor to be described by {@linkcode encodeSafetensorsHeader}. */
export interface SafetensorsEntrySpec {
  /** Tensor name. */
  readonly name: string;
  /** safetensors dtype code. */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Byte length of the tensor's data: element count x dtype size. */
  readonly byteLength: number;
}

/**
 * Whether `code` is a safetensors dtype code quantflow knows.
 *
 * @param code A dtype code such as `F32`.
 * @returns `true` for the 15 codes of the format (F64 ... F8_E5M2).
 */
export function isSafetensorsDType(code: string): boolean {
  return Object.hasOwn(DTYPE_SIZES, code);
}

/**
 * Byte size of one element of a safetensors dtype.
 *
 * @example
 * ```ts
 * import { dtypeSize } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * assert.equal(dtypeSize("BF16"), 2);
 * ```
 *
 * @param code A safetensors dtype code, e.g. `F32`.
 * @returns The element size in bytes.
 * @throws {RangeError} When the code is not a known dtype.
 */
export function dtypeSize(code: string): number {
  if (!isSafetensorsDType(code)) {
    throw new RangeError(`Unknown safetensors dtype ${JSON.stringify(code)}`);
  }
  return DTYPE_SIZES[code];
}

/**
 * The quantflow float type of a safetensors dtype code, if it is one
 * quantflow quantizes.
 *
 * @param code A safetensors dtype code.
 * @returns `float32` for `F32`, `float16` for `F16`, `bfloat16` for `BF16`, else `undefined`.
 */
export function floatDTypeOf(code: string): FloatDType | undefined {
  return Object.hasOwn(CODE_TO_FLOAT, code) ? CODE_TO_FLOAT[code] : undefined;
}

/**
 * The safetensors dtype code of a quantflow float type.
 *
 * @param dtype A quantflow float type.
 * @returns `F32`, `F16` or `BF16`.
 * @throws {RangeError} When `dtype` is not a float type.
 */
export function safetensorsCodeOf(dtype: FloatDType): "F32" | "F16" | "BF16" {
  if (!Object.hasOwn(FLOAT_TO_CODE, dtype)) {
    throw new RangeError(`Not a float dtype: ${JSON.stringify(dtype)}`);
  }
  return FLOAT_TO_CODE[dtype];
}

/**
 * Reads the 8-byte length prefix and returns the total byte length of the
 * header (`8 + N`): how many bytes a streaming reader must gather before
 * calling {@linkcode parseSafetensorsHeader}.
 *
 * @param prefix At least the first 8 bytes of the file.
 * @param fileSize Size of the whole file, when known.
 * @returns `8 + N`, the absolute offset of the data section.
 * @throws {FormatError} When fewer than 8 bytes are given, `N` exceeds
 *   {@linkcode MAX_HEADER_BYTES} or the file, or `N` is too small for a JSON object.
 */
export function safetensorsHeaderSize(prefix: Uint8Array, fileSize?: number): number {
  if (prefix.length < 8) {
    throw new FormatError(
      `Cannot read safetensors header: the file ends at byte ${prefix.length}, before the 8-byte header length`,
    );
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  // Values past 2^32 are far beyond the cap; report them without BigInt.
  const n = hi === 0 ? lo : hi * 2 ** 32 + lo;
  if (lo === 0xffffffff) {
    // The continuation marker every Arrow IPC message starts with: a header length of 4 GiB or more otherwise.
    throw new FormatError(
      "Cannot read safetensors header: the input starts with FF FF FF FF, as an Arrow IPC stream (.arrows) does, " +
        "not with a header length",
    );
  }
  if (n > MAX_HEADER_BYTES) {
    throw new FormatError(
      `Cannot read safetensors header: header length ${n} at bytes 0-7 exceeds the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  if (n < 2) {
    throw new FormatError(
      `Cannot read safetensors header: header length ${n} at bytes 0-7 is too short for a JSON object`,
    );
  }
  if (fileSize !== undefined && 8 + n > fileSize) {
    throw new FormatError(
      `Cannot read safetensors header: header ends at byte ${8 + n}, beyond the end of the ${fileSize}-byte file`,
    );
  }
  return 8 + n;
}

function isNonNegativeSafeInteger(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Parses and validates a safetensors header.
 *
 * Checks, each failure a {@linkcode FormatError} naming the tensor and byte
 * positions: the length is sane and within the file; the JSON is valid UTF-8
 * and an object; every tensor has a known dtype, a shape of non-negative safe
 * integers and two integer `data_offsets` with `begin <= end`; its byte length
 * equals element count x dtype size; no two tensors overlap; the file is
 * exactly as long as the data section says (when `fileSize` is given);
 * metadata values are strings. Gaps between tensors are allowed (the reader
 * skips them).
 *
 * @example
 * ```ts
 * import { encodeSafetensorsHeader, parseSafetensorsHeader } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const bytes = encodeSafetensorsHeader([{ name: "w", dtype: "F32", shape: [2, 3], byteLength: 24 }], {});
 * const header = parseSafetensorsHeader(bytes, bytes.length + 24);
 * assert.deepEqual(header.entries[0], { name: "w", dtype: "F32", shape: [2, 3], begin: bytes.length, end: bytes.length + 24 });
 * ```
 *
 * @param prefix The file's first bytes: at least `8 + N` of them.
 * @param fileSize Size of the whole file, when known; enables the checks against it.
 * @returns The header, entries sorted by offset, offsets absolute.
 * @throws {FormatError} When the header is malformed or inconsistent with the file size.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize?: number): SafetensorsHeader {
  const dataStart = safetensorsHeaderSize(prefix, fileSize);
  const headerLength = dataStart - 8;
  if (prefix.length < dataStart) {
    throw new FormatError(
      `Cannot read safetensors header: the file ends at byte ${prefix.length}, header says ${dataStart}`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(prefix.subarray(8, dataStart));
  } catch (cause) {
    throw new FormatError(`Cannot read safetensors header: bytes 8-${dataStart - 1} are not valid UTF-8`, {
      cause,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new FormatError(
      `Cannot read safetensors header: bytes 8-${dataStart - 1} are not valid JSON (${(cause as Error).message})`,
      { cause },
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    const kind = json === null ? "null" : Array.isArray(json) ? "an array" : typeof json;
    throw new FormatError(
      `Cannot read safetensors header: bytes 8-${dataStart - 1} hold ${kind}, not a JSON object`,
    );
  }

  const dataSize = fileSize === undefined ? undefined : fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(value);
      continue;
    }
    entries.push(parseEntry(name, value, dataStart, dataSize));
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let dataEnd = dataStart;
  let last: SafetensorsEntry | undefined;
  for (const e of entries) {
    if (last !== undefined && e.begin < last.end && e.begin < e.end) {
      throw new FormatError(
        `Cannot read tensor "${e.name}": its data (bytes ${e.begin}-${e.end}) overlaps tensor "${last.name}" (bytes ${last.begin}-${last.end})`,
      );
    }
    // Empty tensors may sit anywhere, even inside another's range: they read nothing.
    if (e.end > dataEnd) {
      dataEnd = e.end;
      last = e;
    }
  }
  if (fileSize !== undefined && fileSize > dataEnd) {
    throw new FormatError(
      `Cannot read safetensors file: ${
        fileSize - dataEnd
      } unexpected bytes after the data section, which ends at byte ${dataEnd} (file size ${fileSize})`,
    );
  }
  return { headerLength, dataStart, dataEnd, entries, metadata };
}

function parseMetadata(value: unknown): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FormatError(`Cannot read safetensors header: "__metadata__" is not an object of strings`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== "string") {
      throw new FormatError(
        `Cannot read safetensors header: "__metadata__" value of ${JSON.stringify(k)} is ${typeof v}, not a string`,
      );
    }
    out[k] = v;
  }
  return out;
}

function parseEntry(
  name: string,
  value: unknown,
  dataStart: number,
  dataSize: number | undefined,
): SafetensorsEntry {
  const fail = (detail: string): never => {
    throw new FormatError(`Cannot read tensor "${name}": ${detail}`);
  };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail(`its header entry is not an object`);
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== "string" || !isSafetensorsDType(dtype)) {
    fail(`unknown dtype ${JSON.stringify(dtype)}`);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
    fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 || !isNonNegativeSafeInteger(offsets[0]) ||
    !isNonNegativeSafeInteger(offsets[1])
  ) {
    fail(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [b, e] = offsets as [number, number];
  const begin = dataStart + b;
  const end = dataStart + e;
  if (b > e) fail(`data_offsets [${b}, ${e}] end before they begin (bytes ${begin}-${end})`);
  if (dataSize !== undefined && e > dataSize) {
    fail(`data ends at byte ${dataStart + dataSize}, header says ${end}`);
  }
  const size = DTYPE_SIZES[dtype as string];
  let numel = 1;
  for (const d of shape as number[]) numel *= d;
  const expected = numel * size;
  if (!Number.isSafeInteger(expected)) {
    fail(`shape ${JSON.stringify(shape)} has too many elements`);
  }
  if (e - b !== expected) {
    fail(
      `data_offsets [${b}, ${e}] (bytes ${begin}-${end}) hold ${e - b} bytes, but ${dtype} ${
        JSON.stringify(shape)
      } needs ${expected}`,
    );
  }
  return { name, dtype: dtype as string, shape: [...(shape as number[])], begin, end };
}

/**
 * Encodes a safetensors header for tensors laid out one after the other in
 * the given order. The JSON is padded with spaces so that the data section
 * starts at a multiple of 8 bytes (aligned typed-array views for readers that
 * map the file).
 *
 * @example
 * ```ts
 * import { encodeSafetensorsHeader } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 * const bytes = encodeSafetensorsHeader([{ name: "b", dtype: "I8", shape: [3], byteLength: 3 }], { note: "x" });
 * assert.equal(bytes.length % 8, 0);
 * ```
 *
 * @param entries The tensors, in file order.
 * @param metadata The `__metadata__` map; omitted from the JSON when empty.
 * @returns The whole header: the 8-byte length, then the JSON.
 * @throws {TypeError} When a metadata value is not a string.
 * @throws {RangeError} When a name is repeated or `__metadata__`, a dtype is
 *   unknown, a shape is not non-negative integers, or a byte length does not
 *   match the shape and dtype.
 */
export function encodeSafetensorsHeader(
  entries: readonly SafetensorsEntrySpec[],
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array {
  // Built by hand, not with JSON.stringify of an object: objects put integer-like
  // keys ("0", "1") first, which would reorder the tensors.
  const parts: string[] = [];
  const metaKeys = Object.keys(metadata);
  if (metaKeys.length > 0) {
    for (const k of metaKeys) {
      if (typeof metadata[k] !== "string") {
        throw new TypeError(`Metadata value of ${JSON.stringify(k)} is ${typeof metadata[k]}, not a string`);
      }
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  let offset = 0;
  for (const e of entries) {
    if (e.name === "__metadata__") throw new RangeError(`A tensor cannot be named "__metadata__"`);
    if (seen.has(e.name)) throw new RangeError(`Tensor "${e.name}" is listed twice`);
    seen.add(e.name);
    const size = dtypeSize(e.dtype);
    if (!e.shape.every(isNonNegativeSafeInteger)) {
      throw new RangeError(`Tensor "${e.name}": shape ${JSON.stringify(e.shape)} is not non-negative integers`);
    }
    const numel = e.shape.reduce((a, d) => a * d, 1);
    if (e.byteLength !== numel * size) {
      throw new RangeError(
        `Tensor "${e.name}": byteLength ${e.byteLength}, but ${e.dtype} ${JSON.stringify(e.shape)} needs ${
          numel * size
        }`,
      );
    }
    const json = JSON.stringify({ dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + e.byteLength] });
    parts.push(`${JSON.stringify(e.name)}:${json}`);
    offset += e.byteLength;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const n = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = new Uint8Array(8 + n).fill(0x20, 8 + json.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, n % 2 ** 32, true);
  view.setUint32(4, Math.floor(n / 2 ** 32), true);
  out.set(json, 8);
  return out;
}
