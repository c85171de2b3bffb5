/**
 * Reading calibration samples from Arrow IPC, pull-based and in bounded memory.
 *
 * Layout (one IPC stream, or several concatenated): a `name` column (Utf8,
 * or a dictionary of Utf8) and a `values` column that is one of
 * - `List<Float32>`: each row is one sample of any length (preferred);
 * - `FixedSizeList<Float32>`: each row is one sample of the list's length;
 * - `Float32`: each row is one sample holding one value.
 * Each row becomes one {@linkcode ActivationSample}, numbered from 0 across
 * the whole input. Null names and null lists are errors; null values inside a
 * list are read as NaN (so the non-finite policy applies to them).
 *
 * @module
 */
import { Precision, RecordBatchReader, Type } from "apache-arrow";
import type { ActivationSample } from "../src/calibration_stats.ts";
import { FormatError } from "../src/errors.ts";

/** The end-of-stream marker: continuation `0xFFFFFFFF`, then metadata length 0. */
const END_OF_STREAM = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/** Input bytes of {@linkcode readActivationSamples}. */
export type ByteInput = Uint8Array | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** What {@linkcode tracked} saw of the input. */
interface Tail {
  bytes: number[];
  total: number;
  error?: { error: unknown };
}

/** Passes bytes through, keeping the last 8 so that a missing end marker is seen (PITFALLS 6). */
async function* tracked(input: ByteInput, tail: Tail): AsyncGenerator<Uint8Array> {
  const chunks: AsyncIterable<Uint8Array> = input instanceof Uint8Array
    ? (async function* () {
      yield input;
    })()
    : input as AsyncIterable<Uint8Array>;
  try {
    for await (const chunk of chunks) {
      if (!(chunk instanceof Uint8Array)) {
        throw new FormatError(
          `Calibration samples: expected Uint8Array chunks, got ${Object.prototype.toString.call(chunk)}`,
        );
      }
      tail.total += chunk.length;
      const last = chunk.subarray(Math.max(0, chunk.length - 8));
      tail.bytes = [...tail.bytes, ...last].slice(-8);
      yield chunk;
    }
  } catch (error) {
    tail.error = { error }; // apache-arrow reads an erroring source as ended: keep the error
    throw error;
  }
}

/** The slice of apache-arrow's `Data` this reader touches. */
interface ArrowData {
  readonly type: { readonly typeId: Type; readonly precision?: number; readonly listSize?: number };
  readonly offset: number;
  readonly length: number;
  readonly nullCount: number;
  readonly valueOffsets: Int32Array;
  readonly values: Float32Array;
  readonly children: readonly ArrowData[];
  getValid(index: number): boolean;
}

/** The samples of one record batch. */
function* batchSamples(
  batch: { numRows: number; getChild(name: string): unknown },
  first: number,
): Generator<ActivationSample<Float32Array>> {
  const names = batch.getChild("name") as { type: { typeId: Type }; get(i: number): unknown } | null;
  const values = batch.getChild("values") as { type: { typeId: Type; listSize?: number }; data: ArrowData[] } | null;
  if (!names || !values) {
    throw new FormatError(
      `Calibration samples need columns "name" and "values"; batch at sample ${first} lacks ${
        !names ? "name" : "values"
      }`,
    );
  }
  const data = values.data[0];
  const typeId = values.type.typeId;
  const isList = typeId === Type.List || typeId === Type.FixedSizeList;
  const leaf = isList ? data.children[0] : data;
  if (leaf.type.typeId !== Type.Float || leaf.type.precision !== Precision.SINGLE) {
    throw new FormatError(
      `Calibration samples: column "values" has type ${values.type}; expected List<Float32>, FixedSizeList<Float32> or Float32`,
    );
  }
  let leafValues: Float32Array = leaf.values;
  if (leaf.nullCount > 0) { // copy once, nulls as NaN
    leafValues = Float32Array.from(leafValues);
    for (let j = 0; j < leaf.length; j++) if (!leaf.getValid(j)) leafValues[leaf.offset + j] = NaN;
  }
  for (let i = 0; i < batch.numRows; i++) {
    const index = first + i;
    const name = names.get(i);
    if (typeof name !== "string" || name === "") {
      throw new FormatError(`Calibration sample ${index}: "name" is ${name === null ? "null" : JSON.stringify(name)}`);
    }
    if (!data.getValid(i)) throw new FormatError(`Calibration sample ${index} ("${name}"): "values" is null`);
    let start: number;
    let end: number;
    if (typeId === Type.List) {
      start = data.valueOffsets[data.offset + i];
      end = data.valueOffsets[data.offset + i + 1];
    } else if (typeId === Type.FixedSizeList) {
      const size = values.type.listSize!;
      start = (data.offset + i) * size;
      end = start + size;
    } else {
      start = i;
      end = i + 1;
    }
    // Zero-copy view; the batch keeps the memory alive.
    yield { name, data: leafValues.subarray(leaf.offset + start, leaf.offset + end) };
  }
}

/**
 * Reads named activation samples from Arrow IPC bytes (layout in the module
 * documentation). Pull-based: a record batch is decoded only when the
 * consumer wants more samples, so memory stays bounded by one batch.
 * Cancelling the stream cancels the input.
 *
 * @param input The IPC bytes: whole, as a stream, or as an async iterable of chunks.
 * @returns The samples, in order.
 * @throws {FormatError} (through the stream) On malformed or truncated IPC,
 *   missing columns, a wrong `values` type, or a null name or list, naming the sample.
 *
 * @example
 * ```ts
 * import { CalibrateStream, readActivationSamples } from "@quantflow/quantflow";
 * import { tableFromArrays, tableToIPC } from "apache-arrow";
 * import assert from "node:assert/strict";
 *
 * const bytes = tableToIPC(tableFromArrays({ name: ["a", "a", "b"], values: new Float32Array([1, -2, 5]) }), "stream");
 * const [stats] = await Array.fromAsync(readActivationSamples(bytes).pipeThrough(new CalibrateStream()));
 * assert.deepEqual(stats.range("a"), [-2, 1]);
 * ```
 */
export function readActivationSamples(input: ByteInput): ReadableStream<ActivationSample<Float32Array>> {
  const tail: Tail = { bytes: [], total: 0 };
  let samples: AsyncGenerator<ActivationSample<Float32Array>> | undefined;
  async function* all(): AsyncGenerator<ActivationSample<Float32Array>> {
    let index = 0;
    let streams = 0;
    try {
      // Through a ReadableStream: apache-arrow reads those exactly, whereas from an async
      // iterable it waits for one more chunk before decoding a batch that ends a chunk.
      for await (const reader of RecordBatchReader.readAll(ReadableStream.from(tracked(input, tail)))) {
        streams++;
        for await (const batch of reader) {
          yield* batchSamples(batch, index);
          index += batch.numRows;
        }
      }
    } catch (cause) {
      if (tail.error) throw tail.error.error;
      if (cause instanceof FormatError) throw cause;
      throw new FormatError(`Cannot read calibration samples at sample ${index}: ${(cause as Error).message}`, {
        cause,
      });
    }
    if (tail.error) throw tail.error.error; // the input failed (a read error, say), not the format
    if (tail.total === 0) throw new FormatError("Cannot read calibration samples: the input is empty");
    if (streams === 0 || tail.bytes.some((b, i) => b !== END_OF_STREAM[i]) || tail.bytes.length < 8) {
      throw new FormatError(
        `Cannot read calibration samples: the Arrow IPC stream is truncated (no end-of-stream marker after ${tail.total} bytes, ${index} samples)`,
      );
    }
  }
  return new ReadableStream<ActivationSample<Float32Array>>({
    async pull(controller) {
      samples ??= all();
      const next = await samples.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel(reason) {
      await samples?.return(undefined);
      if (!(input instanceof Uint8Array) && "cancel" in input && !samples) await input.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
