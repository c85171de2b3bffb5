/**
 * Worker entry of a parallel file job: does tensor tasks
 * (`_tensor_tasks.ts`) until none is left, posting each task's reports, then
 * `done`, or the error that stopped it.
 *
 * @module
 */
import { type SerializedError, serializeError } from "../src/_quantize_task.ts";
import type { TensorReport } from "../src/report.ts";
import { setWasmKernelsEnabled } from "../src/wasm_kernels.ts";
import { runTensorTasks, SharedJobState, TaskFailure, type TensorTasks } from "./_tensor_tasks.ts";

/** What the main thread posts: the job, the shared state, and whether the wasm kernels may run. */
export interface TensorTasksMessage {
  readonly job: TensorTasks;
  readonly shared: SharedArrayBuffer;
  readonly wasm: boolean;
}

/** What the worker posts back. */
export type TensorTasksReply =
  | { readonly kind: "tensor"; readonly index: number; readonly reports: readonly TensorReport[] }
  | { readonly kind: "done" }
  | { readonly kind: "error"; readonly index: number; readonly error: SerializedError };

interface WorkerScope {
  onmessage: ((event: MessageEvent<TensorTasksMessage>) => void) | null;
  postMessage(message: TensorTasksReply): void;
}

const scope = globalThis as unknown as WorkerScope;

scope.onmessage = async ({ data: { job, shared, wasm } }) => {
  const progress = new SharedJobState(shared);
  try {
    setWasmKernelsEnabled(wasm);
    await runTensorTasks(job, progress, (index, reports) => {
      scope.postMessage({ kind: "tensor", index, reports });
    });
    scope.postMessage({ kind: "done" });
  } catch (e) {
    // An error outside any task (opening the output) counts as the first.
    const [index, error] = e instanceof TaskFailure ? [e.index, e.error] : [-1, e];
    scope.postMessage({ kind: "error", index, error: serializeError(error) });
  }
};
