/**
 * What a quantization run reports (SPEC.md Sections 7 and 8): per tensor the
 * decision, bytes before and after, and the error; totals with size ratios.
 *
 * @module
 */
import { bitsOf, storesZeroPoint } from "./ranges.ts";
import type { FloatDType, Granularity, QuantDType, QuantizedTensorInfo, QuantMode, SkipReason } from "./types.ts";

/** The report of one tensor. */
export interface TensorReport {
  /** Tensor name. */
  readonly name: string;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Source element type: `float32`, `float16`, `bfloat16`, or a safetensors code such as `I64`. */
  readonly dtype: string;
  /** Whether the tensor was quantized or left as it was. */
  readonly decision: "quantized" | "skipped";
  /** Why it was skipped. */
  readonly reason?: SkipReason;
  /** Human-readable detail of a skip. */
  readonly message?: string;
  /** How it was quantized. */
  readonly quantization?: {
    readonly mode: QuantMode;
    readonly dtype: QuantDType;
    readonly granularity: Granularity;
    readonly axis: number;
    readonly blockSizes: readonly number[];
  };
  /** Bytes in the source. */
  readonly originalBytes: number;
  /** Bytes after quantization: data, scales and zero points (SPEC.md Section 7). */
  readonly quantizedBytes: number;
  /** Signal-to-noise ratio in dB; `Infinity` (JSON `null`) when exact. */
  readonly snrDb?: number;
  /** Largest absolute error. */
  readonly maxAbsError?: number;
  /** Blocks whose scale was 0 and stored as 1 (all zero, or float16 underflow). */
  readonly zeroRangeBlocks?: number;
  /** Why the tensor is absent from the output, when it is (non-float tensors in Arrow output). */
  readonly omitted?: string;
}

/** Totals over a model. */
export interface ReportTotals {
  /** Number of tensors. */
  readonly tensors: number;
  /** Number quantized. */
  readonly quantized: number;
  /** Bytes of the source. */
  readonly originalBytes: number;
  /** Bytes after quantization (skipped tensors at their original size). */
  readonly quantizedBytes: number;
  /** `originalBytes / quantizedBytes`. */
  readonly ratio: number;
  /** Against the model with its quantized tensors in float16 (skipped ones as they are): just under 2 for int8. */
  readonly ratioVsFloat16: number;
  /** Against the model with its quantized tensors in float32: just under 4 for int8. */
  readonly ratioVsFloat32: number;
  /**
   * Smallest SNR among the quantized tensors whose error was measured, in dB
   * (`Infinity` when none is quantized); absent when no error was measured
   * (`errorStats: false`).
   */
  readonly minSnrDb?: number;
}

/** A model's report. */
export interface ModelReport {
  /** One entry per tensor, in input order. */
  readonly tensors: readonly TensorReport[];
  /** Totals. */
  readonly totals: ReportTotals;
}

const FLOAT_BYTES: Record<FloatDType, number> = { float32: 4, float16: 2, bfloat16: 2 };

/** Elements of a shape. */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Bytes a quantized tensor takes: data (1 byte per element for 8-bit, half
 * for 4-bit, rounded up), scales, and zero points where they are stored.
 *
 * @param info The tensor's recipe.
 * @returns Its size in bytes.
 */
export function quantizedByteLength(info: QuantizedTensorInfo): number {
  const size = elementCount(info.shape);
  const blocks = elementCount(info.scaleShape);
  const data = bitsOf(info.dtype) === 4 ? Math.ceil(size / 2) : size;
  const scales = blocks * (info.scaleDType === "float16" ? 2 : 4);
  return data + scales + (storesZeroPoint(info.dtype, info.mode) ? blocks : 0);
}

/**
 * The bytes of a float tensor in the source.
 *
 * @param dtype Float type.
 * @param shape Dimensions.
 */
export function floatByteLength(dtype: FloatDType, shape: readonly number[]): number {
  return elementCount(shape) * FLOAT_BYTES[dtype];
}

/**
 * Adds up tensor reports.
 *
 * @param tensors Per-tensor reports.
 * @returns The model report with totals.
 */
export function summarize(tensors: readonly TensorReport[]): ModelReport {
  let originalBytes = 0, quantizedBytes = 0, as16 = 0, as32 = 0, quantized = 0, measured = 0, minSnrDb = Infinity;
  for (const t of tensors) {
    originalBytes += t.originalBytes;
    quantizedBytes += t.quantizedBytes;
    if (t.decision === "quantized") {
      quantized++;
      as16 += elementCount(t.shape) * 2;
      as32 += elementCount(t.shape) * 4;
      if (t.snrDb !== undefined) {
        measured++;
        minSnrDb = Math.min(minSnrDb, t.snrDb);
      }
    } else {
      as16 += t.originalBytes;
      as32 += t.originalBytes;
    }
  }
  const ratio = (a: number) => (quantizedBytes === 0 ? 1 : a / quantizedBytes);
  return {
    tensors,
    totals: {
      tensors: tensors.length,
      quantized,
      originalBytes,
      quantizedBytes,
      ratio: ratio(originalBytes),
      ratioVsFloat16: ratio(as16),
      ratioVsFloat32: ratio(as32),
      ...(quantized > 0 && measured === 0 ? {} : { minSnrDb }),
    },
  };
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, u = 0;
  while (v >= 1024 && u < units.length - 1) v /= 1024, u++;
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

function describe(t: TensorReport): string {
  if (t.decision === "skipped") return `kept (${t.reason})`;
  const q = t.quantization!;
  const where = q.granularity === "per_tensor"
    ? "tensor"
    : q.granularity === "per_channel"
    ? `ch ${q.axis}`
    : `block ${Math.max(...q.blockSizes.filter((_, i) => i !== q.axis))}`;
  return `${q.dtype} ${q.mode === "linear" ? "affine" : "sym"} ${where}`;
}

/**
 * Formats a report as a plain-text table for a terminal.
 *
 * @param report A model report.
 * @returns Lines of text, ending with the totals.
 */
export function formatReport(report: ModelReport): string {
  // The error columns only when some error was measured (not so with `errorStats: false`, or nothing quantized).
  const columns = report.tensors.some((t) => t.snrDb !== undefined) ? 8 : 6;
  const header = ["tensor", "shape", "dtype", "decision", "before", "after", "SNR dB", "max err"].slice(0, columns);
  const rows = report.tensors.map((t) =>
    [
      t.name,
      `[${t.shape.join(",")}]`,
      t.dtype,
      describe(t),
      bytes(t.originalBytes),
      bytes(t.quantizedBytes),
      t.snrDb === undefined ? "" : Number.isFinite(t.snrDb) ? t.snrDb.toFixed(1) : "exact",
      t.maxAbsError === undefined ? "" : t.maxAbsError.toPrecision(3),
    ].slice(0, columns)
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const right = new Set([4, 5, 6, 7]);
  const line = (cells: string[]) =>
    cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  const t = report.totals;
  return [
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
    "",
    `${t.quantized} of ${t.tensors} tensors quantized; ${bytes(t.originalBytes)} -> ${bytes(t.quantizedBytes)} ` +
    `(${t.ratio.toFixed(3)}x smaller; ${t.ratioVsFloat16.toFixed(3)}x vs float16, ${
      t.ratioVsFloat32.toFixed(3)
    }x vs float32)` +
    (t.quantized > 0 && t.minSnrDb !== undefined
      ? `; lowest SNR ${Number.isFinite(t.minSnrDb) ? t.minSnrDb.toFixed(1) + " dB" : "exact"}`
      : ""),
  ].join("\n");
}
