/**
 * Worker entry of `bench/machine_ceiling.ts`'s bare loop: says `ready` once
 * its modules and wasm kernels are loaded, runs the share it is then sent,
 * and posts the times.
 *
 * @module
 */
import { wasmKernels } from "../src/wasm_kernels.ts";
import { bareLoop, type BareShare, type BareTimes } from "./_bare_loop.ts";

interface WorkerScope {
  onmessage: ((event: MessageEvent<BareShare>) => void) | null;
  postMessage(message: "ready" | BareTimes | { error: string }): void;
}

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = ({ data: share }) => {
  try {
    scope.postMessage(bareLoop(share));
  } catch (e) {
    scope.postMessage({ error: String(e) });
  }
};
wasmKernels();
scope.postMessage("ready");
