/**
 * A file job on several threads: the output header is written first, then
 * this thread and the workers claim tensors (runs of small ones together) in
 * file order and write their outputs at their place, fixed by the header
 * (`_tensor_tasks.ts`).
 * The bytes and the report are those of the one-thread job.
 *
 * @module
 */
import { reviveError } from "../src/_quantize_task.ts";
import { type ModelReport, summarize, type TensorReport } from "../src/report.ts";
import { encodeSafetensorsHeader, type SafetensorsEntry } from "../src/safetensors_header.ts";
import { wasmKernels } from "../src/wasm_kernels.ts";
import { outputPlan } from "./_output_plan.ts";
import { PendingFile } from "./_pending_file.ts";
import type { TensorTasksMessage, TensorTasksReply } from "./_tensor_task_worker.ts";
import { runTensorTasks, SharedJobState, TaskFailure, type TensorTask, type TensorTasks } from "./_tensor_tasks.ts";
import { resolveConfig } from "../src/config.ts";
import type { QuantizePipelineOptions } from "./quantize_pipeline.ts";
import { DEFAULT_SLAB_BYTES, readSafetensors } from "./safetensors_source.ts";

type OnTensor = (index: number, reports: readonly TensorReport[]) => void;

/**
 * Input bytes a task gathers at least, from consecutive small tensors: a task costs ~0.5 ms of stream set-up, which
 * 2000 tensors of 256 KiB each made slower than one thread (measured).
 */
const TASK_MIN_BYTES = 32 * 1024 * 1024;

const WORKER_MODULE = new URL("./_tensor_task_worker.ts", import.meta.url);

/**
 * Quantizes a safetensors file into a new safetensors file with
 * `options.workers` Web Workers besides this thread. `onTensor` is called in
 * the order tensors finish, not file order.
 *
 * @param inputPath The checkpoint.
 * @param outputPath Where to write; the file appears only when complete.
 * @param options As for `quantizeFile`; `format` must be safetensors.
 * @param tuning For tests: `inThisThread: false` leaves the tasks to the workers (they take a while to start, and
 *   this thread would do all of a small file), `taskBytes` sets how much input a task gathers (default 32 MiB),
 *   `workerModule` replaces the workers' module.
 * @returns The report, as the one-thread job makes it.
 * @throws {FormatError} When the input is malformed (nothing is written).
 * @throws {NonFiniteError} The first bad tensor's error in file order (nothing is written). A worker that could
 *   not start or crashed is no error: this thread does its share (`onWarning` says so).
 */
export async function quantizeFileInParallel(
  inputPath: string,
  outputPath: string,
  options: QuantizePipelineOptions,
  tuning: { inThisThread?: boolean; taskBytes?: number; workerModule?: URL } = {},
): Promise<ModelReport> {
  const { inThisThread = true, taskBytes = TASK_MIN_BYTES, workerModule = WORKER_MODULE } = tuning;
  const config = resolveConfig(options.config);
  const slabBytes = options.slabBytes ?? DEFAULT_SLAB_BYTES;
  // The header only: validated before anything is written.
  const { header, chunks } = await readSafetensors(inputPath, { slabBytes });
  await chunks.cancel();
  const { groups, metadata } = outputPlan(header, config);
  const head = encodeSafetensorsHeader(groups.flat(), metadata);
  const outputBytes = groups.map((g) => g.reduce((sum, spec) => sum + spec.byteLength, 0));
  const tasks = tasksOf(header.entries, outputBytes, head.length, taskBytes);

  const total = header.dataEnd - header.dataStart;
  // Capped: a task redone after a worker crashed in it counts its bytes twice.
  const progress = (done: number) => options.onProgress?.(Math.min(done, total), total);
  const shared = new SharedJobState(undefined, progress);
  const results: (readonly TensorReport[])[] = [];
  const onTensor: OnTensor = (index, reports) => {
    results[index] = reports;
    for (const report of reports) options.onTensor?.(report);
    progress(shared.bytes);
  };
  // No more workers than tensors for them; this thread works too unless told otherwise (and always without workers).
  const workerCount = Math.min(options.workers ?? 0, tasks.length - (inThisThread ? 1 : 0));
  const file = new PendingFile(outputPath);
  try {
    file.write(head, 0);
    const job: TensorTasks = {
      inputPath,
      outputPath: file.temp,
      config,
      slabBytes,
      errorStats: options.errorStats,
      tasks,
    };
    // Workers first: they take a while to start, and this thread works meanwhile.
    const workers = Array.from(
      { length: Math.max(workerCount, 0) },
      () => runWorker(workerModule, job, shared, onTensor),
    );
    const mine = inThisThread || workerCount < 1 ? [runTensorTasks(job, shared, onTensor)] : [];
    const threads = await Promise.allSettled([...mine, ...workers]);
    const failures = threads.flatMap((t) => t.status === "rejected" ? [t.reason] : []).map((reason) =>
      reason instanceof TaskFailure ? reason : new TaskFailure(-1, reason)
    );
    // The first bad tensor in file order: the one-thread job would have met it first.
    const tensors = failures.filter((f) => f.index >= 0);
    if (tensors.length) throw tensors.reduce((a, b) => b.index < a.index ? b : a).error;
    // A thread that failed outside any tensor (a worker that could not start, or crashed) costs only speed: this
    // thread does what it left undone, where a bad tensor fails the job as it would have in the worker.
    for (const { error } of failures) {
      options.onWarning?.(
        `a worker failed (${error instanceof Error ? error.message : error}); this thread did its share`,
      );
    }
    const undone = tasks.flatMap((_, k) => results[k] === undefined ? [k] : []);
    if (undone.length) {
      await runTensorTasks(job, shared, onTensor, undone).catch((e) => {
        throw e instanceof TaskFailure ? e.error : e;
      });
    }
    file.commit(true);
  } catch (e) {
    file.discard();
    throw e;
  }
  return summarize(results.flat());
}

/**
 * Cuts the tensors into tasks: runs of consecutive tensors, each run ending once its input reaches `taskBytes`,
 * at a gap in the input file or at the end, each with the place of its outputs, which follow one another in the
 * output file.
 *
 * @param entries The input's tensors, in file order.
 * @param outputBytes Bytes of each tensor's outputs.
 * @param dataStart Where the output's data section starts.
 * @param taskBytes Input bytes a task gathers at least.
 */
function tasksOf(
  entries: readonly SafetensorsEntry[],
  outputBytes: readonly number[],
  dataStart: number,
  taskBytes: number,
): TensorTask[] {
  const tasks: TensorTask[] = [];
  let at = dataStart;
  for (let k = 0; k < entries.length;) {
    const first = k;
    let bytes = outputBytes[k++];
    // The next tensor joins while the task is small and the tensor follows without a gap.
    const joins = () =>
      entries[k].begin === entries[k - 1].end && entries[k - 1].end - entries[first].begin < taskBytes;
    while (k < entries.length && joins()) bytes += outputBytes[k++];
    tasks.push({ entries: entries.slice(first, k), outputStart: at, outputBytes: bytes });
    at += bytes;
  }
  return tasks;
}

/**
 * Runs a worker until no task is left. Whatever fails rejects: a tensor, this thread's callbacks with its results
 * or a message that cannot be read also tell the other threads to stop; creating the worker, loading its module or
 * a crash (after which it writes nothing more) do not, so that the others go on and this thread redoes what it
 * left undone.
 *
 * @returns When the worker is done; rejects with a {@linkcode TaskFailure}.
 */
function runWorker(module: URL, job: TensorTasks, shared: SharedJobState, onTensor: OnTensor): Promise<void> {
  let worker: Worker | undefined;
  return new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (failure: TaskFailure) => {
      failed = true;
      if (failure.index >= 0) shared.stop();
      reject(failure);
    };
    worker = new Worker(module, { type: "module" });
    worker.onmessage = ({ data: reply }: MessageEvent<TensorTasksReply>) => {
      if (failed) return; // nothing more reaches the callbacks once the job failed here
      if (reply.kind === "done") return resolve();
      if (reply.kind === "error") return fail(new TaskFailure(reply.index, reviveError(reply.error)));
      try {
        onTensor(reply.index, reply.reports);
      } catch (error) {
        fail(new TaskFailure(reply.index, error));
      }
    };
    // The worker may still be writing: no redoing its tasks then, the job fails (after any bad tensor's error).
    worker.onmessageerror = () =>
      fail(new TaskFailure(job.tasks.length, new Error("A worker's message could not be read")));
    worker.onerror = (event: ErrorEvent) => {
      // The module failed to load, or an uncaught error: the job cannot count on this worker's tasks.
      event.preventDefault();
      fail(new TaskFailure(-1, new Error(`Worker failed: ${event.message}`)));
    };
    const message: TensorTasksMessage = { job, shared: shared.buffer, wasm: wasmKernels() !== undefined };
    worker.postMessage(message);
  }).catch((error) => {
    // A Worker that could not be created throws in the executor.
    throw error instanceof TaskFailure ? error : new TaskFailure(-1, error);
  }).finally(() => worker?.terminate());
}
