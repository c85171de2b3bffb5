/**
 * A summary of a safetensors checkpoint from its header alone: tensors,
 * dtypes, shapes, sizes and, for a quantized checkpoint, how each tensor was
 * quantized.
 *
 * @module
 */
import type { SafetensorsHeader } from "../src/safetensors_header.ts";
import { quantizationRecords } from "./dequantize_pipeline.ts";
import type { QuantizedTensorRecord } from "./quantize_pipeline.ts";

/** One tensor of a checkpoint. */
export interface TensorSummary {
  /** Name. */
  readonly name: string;
  /** safetensors dtype code. */
  readonly dtype: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Bytes of data. */
  readonly bytes: number;
  /** How it was quantized, when quantflow wrote it. */
  readonly quantized?: QuantizedTensorRecord;
}

/** A checkpoint's summary. */
export interface CheckpointSummary {
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
    `${summary.tensors.length} tensors, ${summary.dataBytes} bytes of data` +
    (quantized ? `, ${quantized} quantized by quantflow` : ""),
  ].join("\n");
}
