/**
 * A tensor of a file job (or a run of small ones) as a task any thread can
 * do: read its bytes from the input file, quantize them, and write its output
 * tensors at their place in the output file. The output's layout is fixed by
 * the header before any data is read, so threads write side by side.
 *
 * @module
 */
import { type ByteSource, openFileSource } from "../src/byte_source.ts";
import { type OpenFile, openFile, writeFully } from "../src/_file_io.ts";
import type { QuantizeConfig } from "../src/quantize_config.ts";
import type { TensorReport } from "../src/report.ts";
import { encodeSafetensorsHeader, type SafetensorsEntry } from "../src/safetensors_header.ts";
import { SlabMemory } from "./_slab_memory.ts";
import { startFileJob } from "./_file_job.ts";
import { FILE_JOB_RING_SLOTS } from "../src/buffer_ring.ts";

/** Consecutive input tensors and where their outputs go. */
export interface TensorTask {
  /** The tensors, as the input's header describes them: in file order, each starting where the previous ends. */
  readonly entries: readonly SafetensorsEntry[];
  /** Offset of their first output byte in the output file. */
  readonly outputStart: number;
  /** Bytes of their output tensors. */
  readonly outputBytes: number;
}

/** A file job cut into tensor tasks; plain data, for `postMessage`. */
export interface TensorTasks {
  /** The input checkpoint. */
  readonly inputPath: string;
  /** The output file being written (its temporary name). */
  readonly outputPath: string;
  /** The configuration. */
  readonly config: QuantizeConfig;
  /** Byte budget of a slab. */
  readonly slabBytes: number;
  /** Whether the reports measure the error (default true). */
  readonly errorStats?: boolean;
  /** The tasks, in file order. */
  readonly tasks: readonly TensorTask[];
}

/**
 * The state threads share, in a `SharedArrayBuffer`: the next task to claim,
 * a stop flag, and the input bytes done (for the progress bar).
 */
export class SharedJobState {
  /** The memory; post it to the workers. */
  readonly buffer: SharedArrayBuffer;
  readonly #flags: Int32Array;
  readonly #bytes: BigInt64Array;
  readonly #onAdd: ((bytes: number) => void) | undefined;

  /**
   * @param buffer Memory from another thread's instance, or none for new state.
   * @param onAdd Called in this thread with all threads' bytes done, when this thread adds some.
   */
  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(16), onAdd?: (bytes: number) => void) {
    this.buffer = buffer;
    this.#flags = new Int32Array(buffer, 0, 2);
    this.#bytes = new BigInt64Array(buffer, 8, 1);
    this.#onAdd = onAdd;
  }

  /**
   * Claims the next task, in file order.
   *
   * @param count How many tasks there are.
   * @returns Its index, or undefined when none is left or the job stopped.
   */
  claim(count: number): number | undefined {
    if (Atomics.load(this.#flags, 1)) return undefined;
    const index = Atomics.add(this.#flags, 0, 1);
    return index < count ? index : undefined;
  }

  /** Tells every thread to claim no more tasks (one failed). */
  stop(): void {
    Atomics.store(this.#flags, 1, 1);
  }

  /** @param bytes Input bytes just done. */
  add(bytes: number): void {
    const before = Atomics.add(this.#bytes, 0, BigInt(bytes));
    this.#onAdd?.(Number(before) + bytes);
  }

  /** Input bytes done by all threads. */
  get bytes(): number {
    return Number(Atomics.load(this.#bytes, 0));
  }
}

/** A task's error, with the index of the task: the job reports the failure of the first tensor in file order. */
export class TaskFailure {
  /**
   * @param index The task.
   * @param error What it threw.
   */
  constructor(readonly index: number, readonly error: unknown) {}
}

/**
 * Does tasks until none is left: a task's tensors are read through a window
 * of the input that looks like a checkpoint of those tensors alone, quantized
 * by the file job's stages (`_file_job.ts`: the same bytes and report as in a
 * whole-file job) and written at their place in the output.
 *
 * @param job The tasks.
 * @param shared Task claims and progress.
 * @param onTensor Called with each task's index and reports as it is done.
 * @param indices These tasks, in this order, instead of claiming tasks from `shared`.
 * @throws {TaskFailure} When a task fails (the other threads are told to stop), or another error (opening the
 *   output: the others go on).
 */
export async function runTensorTasks(
  job: TensorTasks,
  shared: SharedJobState,
  onTensor: (index: number, reports: readonly TensorReport[]) => void,
  indices?: readonly number[],
): Promise<void> {
  const { tasks, slabBytes, config, errorStats } = job;
  let k = 0;
  const next = indices ? () => indices[k++] : () => shared.claim(tasks.length);
  let output: OpenFile | undefined;
  try {
    // The temporary output exists: the main thread created it and wrote its header.
    const file = output = openFile(job.outputPath, "update");
    const memory = new SlabMemory(slabBytes, FILE_JOB_RING_SLOTS);
    for (let index = next(); index !== undefined; index = next()) {
      const task = tasks[index];
      let done = 0;
      try {
        // Each task's rings are new; they take the memory of the previous task's.
        await memory.run(async (reuseBuffers) => {
          const quantized = await startFileJob(() => tensorWindow(job.inputPath, task.entries), {
            config,
            slabBytes,
            reuseBuffers,
            errorStats,
            onProgress: (bytes) => {
              shared.add(bytes - done);
              done = bytes;
            },
          });
          const sink = tensorDataSink(file, task);
          for await (const piece of quantized.bytes) sink.write(piece);
          sink.close();
          onTensor(index, quantized.report().tensors);
        });
      } catch (error) {
        throw new TaskFailure(index, error);
      }
    }
  } catch (error) {
    // A bad tensor stops the job; an error of this thread alone (opening the output) leaves the rest to the others.
    if (error instanceof TaskFailure) shared.stop();
    throw error;
  } finally {
    output?.close();
  }
}

/**
 * A checkpoint of some tensors: a header of their own followed by their
 * bytes, read from the input file where they are.
 *
 * @param path The input file.
 * @param entries The tensors, contiguous in the file.
 * @returns The source.
 */
function tensorWindow(path: string, entries: readonly SafetensorsEntry[]): ByteSource {
  const header = encodeSafetensorsHeader(
    entries.map(({ name, dtype, shape, begin, end }) => ({ name, dtype, shape, byteLength: end - begin })),
  );
  const begin = entries[0].begin;
  const end = entries[entries.length - 1].end;
  const file = openFileSource(path);
  // No `readAsync`: with a thread per core already, reading ahead on a further thread made the job slower
  // (bench/RESULTS.md, Addendum 10).
  return {
    size: header.length + end - begin,
    read(position: number, into: Uint8Array): number {
      let n = 0;
      if (position < header.length) {
        n = Math.min(into.length, header.length - position);
        into.set(header.subarray(position, position + n));
      }
      if (n === into.length) return n;
      // Never past the last tensor's end, even where the file goes on.
      const from = begin + position + n - header.length;
      const want = Math.min(into.length - n, end - from);
      return want <= 0 ? n : n + file.read(from, into.subarray(n, n + want));
    },
    close: () => file.close(),
  };
}

/**
 * Writes a window checkpoint's data section at the task's place in the
 * output file: its header (an 8-byte length, then that many bytes) is
 * skipped; the data must be exactly the task's `outputBytes`.
 *
 * @param file The output file.
 * @param task The task.
 * @returns The sink.
 */
function tensorDataSink(file: OpenFile, task: TensorTask): { write(chunk: Uint8Array): void; close(): void } {
  const prefix = new Uint8Array(8);
  let prefixBytes = 0;
  let skip = -1; // header bytes still to skip, once the prefix is read
  let written = 0;
  const overflow = (bytes: number) =>
    new RangeError(
      `${names(task.entries)}: ${bytes} bytes of output, the header says ${task.outputBytes}`,
    );
  return {
    write(chunk) {
      let k = 0;
      while (skip < 0 && k < chunk.length) {
        prefix[prefixBytes++] = chunk[k++];
        if (prefixBytes === 8) skip = Number(new DataView(prefix.buffer).getBigUint64(0, true));
      }
      const n = Math.min(Math.max(skip, 0), chunk.length - k);
      skip -= n;
      k += n;
      if (k === chunk.length) return;
      const data = chunk.subarray(k);
      if (written + data.length > task.outputBytes) throw overflow(written + data.length);
      writeFully(file, data, task.outputStart + written);
      written += data.length;
    },
    close() {
      if (written !== task.outputBytes) throw overflow(written);
    },
  };
}

function names(entries: readonly SafetensorsEntry[]): string {
  const first = `"${entries[0].name}"`;
  return entries.length === 1 ? `Tensor ${first}` : `Tensors ${first} to "${entries[entries.length - 1].name}"`;
}
