/**
 * Generates a float32 safetensors checkpoint of N tensors of shape [R, C]
 * with deterministic values, written in 4 MiB chunks through one reused
 * buffer: the file is never held in memory.
 *
 * ```sh
 * deno run -A bench/make_checkpoint.ts bench/data/w1g.safetensors --tensors 16 --rows 4096 --cols 4096
 * bun bench/make_checkpoint.ts bench/data/w256m.safetensors --tensors 4
 * ```
 *
 * @module
 */
import { closeSync, mkdirSync, openSync, renameSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { encodeSafetensorsHeader } from "../src/safetensors_header.ts";
import { encodeBfloat16, encodeFloat16 } from "../src/float16.ts";

/** Shape, count and storage type of a generated checkpoint. */
export interface CheckpointShape {
  /** Storage type: the float32 values rounded to float16 or bfloat16 (nearest, ties to even). Default F32. */
  readonly dtype?: "F32" | "F16" | "BF16";
  /** Number of tensors. */
  readonly tensors: number;
  /** Rows (axis 0, the per-channel axis) of each tensor. */
  readonly rows: number;
  /** Columns of each tensor. */
  readonly cols: number;
}

/** Name of tensor `t` in a generated checkpoint. */
export function tensorName(t: number): string {
  return `layers.${t}.weight`;
}

/**
 * Fills `out` with elements `[start, start + out.length)` of generated tensor
 * `t`: a hash of the flat index, uniform in [-1, 1), times a per-row amplitude
 * in [0.02, 0.06) so that per-channel scales differ between rows. A pure
 * function of (t, index): chunking does not change the values.
 *
 * @param t Tensor index.
 * @param cols Row length.
 * @param start Flat index of `out[0]`.
 * @param out Destination.
 */
export function fillValues(t: number, cols: number, start: number, out: Float32Array): void {
  const seed = Math.imul(t + 1, 0x27d4eb2d);
  let row = Math.floor(start / cols);
  let col = start - row * cols;
  let amp = amplitude(t, row);
  for (let i = 0; i < out.length; i++) {
    let h = Math.imul((start + i) ^ seed, 0x9e3779b1);
    h ^= h >>> 15;
    h = Math.imul(h, 0x85ebca77);
    h ^= h >>> 13;
    out[i] = amp * (h * 4.656612873077393e-10); // h / 2^31, h a signed int32
    if (++col === cols) {
      col = 0;
      amp = amplitude(t, ++row);
    }
  }
}

function amplitude(t: number, row: number): number {
  return 0.02 * (1 + ((row * 7 + t * 13) % 17) / 8);
}

/**
 * Writes a generated checkpoint to `path` (through `path + ".tmp"`, renamed
 * when complete).
 *
 * @param path Output path.
 * @param shape Count and shape of the tensors.
 * @returns The file size in bytes.
 */
export function writeCheckpoint(path: string, shape: CheckpointShape): number {
  const { tensors, rows, cols, dtype = "F32" } = shape;
  const numel = rows * cols;
  const size = dtype === "F32" ? 4 : 2;
  const header = encodeSafetensorsHeader(
    Array.from({ length: tensors }, (_, t) => ({
      name: tensorName(t),
      dtype,
      shape: [rows, cols],
      byteLength: numel * size,
    })),
    { generator: "quantflow bench/make_checkpoint.ts" },
  );
  mkdirSync(dirname(path), { recursive: true });
  const temp = `${path}.tmp`;
  const fd = openSync(temp, "w");
  const chunk = new Float32Array(1 << 20); // 4 MiB, reused
  const bits = new Uint16Array(chunk.length);
  const bytes = dtype === "F32" ? new Uint8Array(chunk.buffer) : new Uint8Array(bits.buffer);
  const encode = dtype === "F16" ? encodeFloat16 : dtype === "BF16" ? encodeBfloat16 : undefined;
  const writeAll = (b: Uint8Array) => {
    let done = 0;
    while (done < b.length) done += writeSync(fd, b, done, b.length - done);
  };
  try {
    writeAll(header);
    for (let t = 0; t < tensors; t++) {
      for (let at = 0; at < numel; at += chunk.length) {
        const n = Math.min(chunk.length, numel - at);
        const part = chunk.subarray(0, n);
        fillValues(t, cols, at, part);
        encode?.(part, bits);
        writeAll(bytes.subarray(0, n * size));
      }
    }
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
  return header.length + tensors * numel * size;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    options: {
      tensors: { type: "string", default: "16" },
      rows: { type: "string", default: "4096" },
      cols: { type: "string", default: "4096" },
      dtype: { type: "string", default: "F32" },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) {
    console.error(
      "usage: make_checkpoint.ts OUT.safetensors [--tensors N] [--rows R] [--cols C] [--dtype F32|F16|BF16]",
    );
    process.exit(2);
  }
  if (!["F32", "F16", "BF16"].includes(values.dtype!)) {
    console.error(`--dtype must be F32, F16 or BF16, got ${values.dtype}`);
    process.exit(2);
  }
  const shape = {
    tensors: Number(values.tensors),
    rows: Number(values.rows),
    cols: Number(values.cols),
    dtype: values.dtype as "F32" | "F16" | "BF16",
  };
  const t0 = performance.now();
  const size = writeCheckpoint(positionals[0], shape);
  const s = (performance.now() - t0) / 1000;
  console.log(
    `wrote ${positionals[0]}: ${shape.tensors} x [${shape.rows}, ${shape.cols}] ${shape.dtype}, ${size} bytes ` +
      `(${(size / 2 ** 20).toFixed(1)} MiB) in ${s.toFixed(2)} s`,
  );
}
