/**
 * One slab of whole rows quantized away from the main thread: the message a
 * worker receives, the one it answers with, and the errors carried between
 * them. The quantizing itself is {@linkcode quantizeSlabTask}, runnable in any
 * thread, so the worker entry (`_quantize_worker.ts`) stays a few lines.
 *
 * @module
 */
import { BlockQuantizer } from "./block_quantizer.ts";
import { Float16OverflowError, FormatError, NonFiniteError } from "./errors.ts";
import { ErrorStats } from "./error_stats.ts";
import { floatValues } from "./float_values.ts";
import { isSigned, storesZeroPoint } from "./ranges.ts";
import type { FloatData, QuantizedTensorInfo } from "./types.ts";

/** A slab to quantize: its buffers are transferred, never cloned. */
export interface SlabTask {
  /** The tensor's recipe. */
  readonly info: QuantizedTensorInfo;
  /** Rows in the slab. */
  readonly rows: number;
  /** Flat index of the slab's first element in the tensor (for error messages). */
  readonly offset: number;
  /** Elements in the slab. */
  readonly length: number;
  /** The stored elements (float32, or 16-bit patterns), a copy the worker may keep and hands back. */
  readonly data: ArrayBuffer;
  /** Memory for the quantized values, when the caller recycles it; the worker allocates otherwise. */
  readonly out?: ArrayBuffer;
  /** Whether to compute the error sums of the report. */
  readonly errorSums: boolean;
  /** Whether to use the WebAssembly kernels, as the sending thread does (else the JavaScript ones). */
  readonly wasm: boolean;
}

/** A quantized slab, as the worker answers. */
export interface SlabResult {
  /** The task's `data`, handed back for reuse. */
  readonly data: ArrayBuffer;
  /** Quantized values: the first `length` bytes (one per element, 4-bit values unpacked). */
  readonly q: ArrayBuffer;
  /** The slab's scales, in the scale dtype. */
  readonly scale: Float32Array | Uint16Array;
  /** Zero points, when the tensor stores them. */
  readonly zeroPoint?: Int8Array | Uint8Array;
  /** `[sum w^2, sum e^2, max |e|]` over the slab, when asked for. */
  readonly sums?: Float64Array;
  /** Blocks whose scale was 0 and stored as 1. */
  readonly zeroRangeBlocks: number;
}

/** What a worker posts back. */
export type SlabReply = { readonly ok: true; readonly result: SlabResult } | {
  readonly ok: false;
  readonly error: SerializedError;
};

/** An error as it crosses threads: enough to rebuild the same class and message. */
export interface SerializedError {
  /** `name` of the error. */
  readonly name: string;
  /** Its message. */
  readonly message: string;
  /** The tensor named by a quantflow error. */
  readonly tensor?: string;
  /** The system error code (`ENOSPC`, `EACCES`, ...) of a failed file operation. */
  readonly code?: string;
  /** Where it was thrown, in the worker. */
  readonly stack?: string;
}

/**
 * Quantizes a slab as `OnePassJob` does in the main thread: a
 * {@linkcode BlockQuantizer} over the slab's rows alone.
 *
 * @param task The slab.
 * @param scratch Reused memory for decoding 16-bit elements.
 * @returns The quantized slab and the buffers to transfer back.
 * @throws {NonFiniteError} On NaN or an infinity, naming its place in the tensor.
 * @throws {Float16OverflowError} When a float16 scale overflows.
 */
export function quantizeSlabTask(task: SlabTask, scratch?: Float32Array): SlabResult {
  const { info, rows, length } = task;
  const data: FloatData = info.sourceDType === "float32"
    ? new Float32Array(task.data, 0, length)
    : new Uint16Array(task.data, 0, length);
  const values = floatValues(data, info.sourceDType, scratch);
  const quantizer = new BlockQuantizer(info, [rows, ...info.shape.slice(1)]);
  const q = task.out && task.out.byteLength >= length ? task.out : new ArrayBuffer(length);
  const out = isSigned(info.dtype) ? new Int8Array(q, 0, length) : new Uint8Array(q, 0, length);
  const errors = task.errorSums ? new ErrorStats() : undefined;
  quantizer.observeAndQuantize(values, out, errors, task.offset);
  return {
    data: task.data,
    q,
    scale: quantizer.scales(),
    ...(storesZeroPoint(info.dtype, info.mode) ? { zeroPoint: quantizer.zeroPoints() } : {}),
    ...(errors ? { sums: Float64Array.of(errors.signalEnergy, errors.errorEnergy, errors.maxAbsError) } : {}),
    zeroRangeBlocks: quantizer.zeroRangeBlocks,
  };
}

/**
 * The buffers of a result, to transfer.
 *
 * @param result A worker's result.
 * @returns Its large buffers (the small scale arrays are cloned).
 */
export function transfersOf(result: SlabResult): ArrayBuffer[] {
  return result.q === result.data ? [result.data] : [result.data, result.q];
}

/**
 * An error as data, for `postMessage`.
 *
 * @param error Anything thrown.
 * @returns Its name, message, tensor, system error code and stack.
 */
export function serializeError(error: unknown): SerializedError {
  if (!(error instanceof Error)) return { name: "Error", message: String(error) };
  const { tensor, code } = error as { tensor?: unknown; code?: unknown };
  return {
    name: error.name,
    message: error.message,
    ...(typeof tensor === "string" ? { tensor } : {}),
    ...(typeof code === "string" ? { code } : {}),
    ...(typeof error.stack === "string" ? { stack: error.stack } : {}),
  };
}

/**
 * Rebuilds a worker's error in this thread: the same class, with the same message.
 *
 * @param error The serialized error.
 * @returns The error to throw.
 */
export function reviveError(error: SerializedError): Error {
  const { name, message, tensor = "" } = error;
  let revived: Error;
  switch (name) {
    case "NonFiniteError":
      revived = new NonFiniteError(tensor, "");
      break;
    case "Float16OverflowError":
      revived = new Float16OverflowError(tensor, "");
      break;
    case "FormatError":
      revived = new FormatError(message);
      break;
    case "RangeError":
      revived = new RangeError(message);
      break;
    case "TypeError":
      revived = new TypeError(message);
      break;
    default:
      revived = new Error(message);
      revived.name = name;
  }
  // The constructors above format their own message; the worker's is the one to keep.
  revived.message = message;
  if (error.code !== undefined) Object.assign(revived, { code: error.code });
  // The worker's stack says where it happened; this thread's would only say where the message arrived.
  if (error.stack !== undefined) revived.stack = error.stack;
  return revived;
}
