/**
 * Worker entry: quantizes the slabs {@linkcode WorkerPool} sends, one at a
 * time, and posts each result (or error) back with its buffers transferred.
 *
 * @module
 */
import { setWasmKernelsEnabled } from "./wasm_kernels.ts";
import { quantizeSlabTask, serializeError, type SlabReply, type SlabTask, transfersOf } from "./_quantize_task.ts";

interface WorkerScope {
  onmessage: ((event: MessageEvent<SlabTask>) => void) | null;
  postMessage(message: SlabReply, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;
// Decoding 16-bit slabs reuses one scratch buffer: fresh memory costs ~11 µs per page (PITFALLS.md 14).
let scratch: Float32Array | undefined;

scope.onmessage = ({ data: task }) => {
  try {
    if (task.info.sourceDType !== "float32" && (scratch?.length ?? 0) < task.length) {
      scratch = new Float32Array(task.length);
    }
    setWasmKernelsEnabled(task.wasm);
    const result = quantizeSlabTask(task, scratch);
    scope.postMessage({ ok: true, result }, transfersOf(result));
  } catch (error) {
    scope.postMessage({ ok: false, error: serializeError(error) });
  }
};
