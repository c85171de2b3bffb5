/**
 * A summary of a checkpoint: tensors, dtypes, shapes, sizes and, for a
 * quantized checkpoint, how each tensor was quantized. A safetensors file says
 * all of it in its header; a `.arrows` file is read through.
 *
 * @module
 */
import { openFileSource } from "../src/byte_source.ts";
import { isArrowIPC } from "../src/_file_kind.ts";
import type { SafetensorsHeader } from "../src/safetensors_header.ts";
import { quantizationRecords, readHeader } from "./dequantize_pipeline.ts";
import type { QuantizedTensorRecord } from "./quantize_pipeline.ts";

/** One tensor of a checkpoint. */
export interface TensorSummary {
  /** Name. */
  readonly name: string;
  /** safetensors dtype code (in a `.arrows` file, `I4` and `U4` for 4-bit values). */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Bytes of data (in a `.arrows` file, of the values, scales and zero points together). */
  readonly bytes: number;
  /** How it was quantized, when quantflow wrote it. */
  readonly quantized?: QuantizedTensorRecord;
}

/** A checkpoint's summary. */
export interface CheckpointSummary {
  /** The file's format. */
  readonly format: "safetensors" | "arrows";
  /** Tensors in file order. */
  readonly tensors: readonly TensorSummary[];
  /** `__metadata__` other than quantflow's records. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Bytes of the data section. */
  readonly dataBytes: number;
}

/**
 * Summarizes a checkpoint's header.
 *
 * @param header A parsed, validated header.
 * @returns The summary.
 */
export function summarizeCheckpoint(header: SafetensorsHeader): CheckpointSummary {
  const records = quantizationRecords(header);
  const { quantflow: _, ...metadata } = header.metadata;
  return {
    format: "safetensors",
    tensors: header.entries.map((e) => ({
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      bytes: e.end - e.begin,
      ...(records[e.name] ? { quantized: records[e.name] } : {}),
    })),
    metadata,
    dataBytes: header.dataEnd - header.dataStart,
  };
}

/**
 * Summarizes a checkpoint file: a `.safetensors` file from its header, a
 * `.arrows` file (told apart by its first bytes) from its messages' metadata,
 * their bodies skipped.
 *
 * @param path The file.
 * @returns The summary.
 * @throws {FormatError} When the file is neither, or is malformed.
 */
export async function inspectFile(path: string): Promise<CheckpointSummary> {
  const source = openFileSource(path);
  try {
    if (!isArrowIPC(source)) return summarizeCheckpoint(readHeader(source));
  } finally {
    source.close();
  }
  // Loaded on demand: the Arrow reader brings apache-arrow, which a safetensors file does not need.
  const { arrowFileTensors, summarizeArrowTensors } = await import("./_arrow_file.ts");
  return summarizeArrowTensors(await arrowFileTensors(path));
}

/**
 * Formats a summary as a table.
 *
 * @param summary A checkpoint summary.
 * @returns Text lines.
 */
export function formatCheckpoint(summary: CheckpointSummary): string {
  const rows = summary.tensors.map((t) => {
    const q = t.quantized;
    const how = q
      ? `${q.dtype} ${q.mode} ${q.granularity}${
        q.granularity === "per_tensor" ? "" : ` axis ${q.axis}`
      } from ${q.sourceDType} [${q.shape}]`
      : "";
    return [t.name, t.dtype, `[${t.shape.join(",")}]`, String(t.bytes), how];
  });
  const header = ["tensor", "dtype", "shape", "bytes", "quantization"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  const quantized = summary.tensors.filter((t) => t.quantized).length;
  return [
    line(header),
    ...rows.map(line),
    "",
    `${summary.tensors.length} tensors${
      summary.format === "arrows" ? " (Arrow IPC)" : ""
    }, ${summary.dataBytes} bytes of data` +
    (quantized ? `, ${quantized} quantized by quantflow` : ""),
  ].join("\n");
}
