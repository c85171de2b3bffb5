/**
 * The running min and max of every block, accumulated slab by slab.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import { wasmKernels } from "./wasm_kernels.ts";

/** Below this many elements a JavaScript loop is as fast as a call into wasm. */
const WASM_MIN = 256;

/** Per-block minimum and maximum, mergeable across slabs in any order. */
export class BlockRange {
  /** Minimum per block (+Infinity before any element). */
  readonly mins: Float64Array;
  /** Maximum per block (-Infinity before any element). */
  readonly maxs: Float64Array;
  readonly #layout: BlockLayout;

  /**
   * @param layout The tensor's block layout.
   */
  constructor(layout: BlockLayout) {
    this.#layout = layout;
    this.mins = new Float64Array(layout.blockCount).fill(Infinity);
    this.maxs = new Float64Array(layout.blockCount).fill(-Infinity);
  }

  /**
   * Folds in consecutive elements of the tensor.
   *
   * @param values Element values.
   * @param offset Flat index of `values[0]` in the tensor.
   * @returns The index in `values` of the first NaN or infinity, or -1 when all are finite.
   */
  observe(values: Float32Array, offset: number): number {
    const { mins, maxs } = this;
    // The exact WebAssembly SIMD kernel (src/wasm_kernels.ts) where available.
    const wasm = values.length >= WASM_MIN ? wasmKernels() : undefined;
    const bad = wasm?.observe(values, offset, this.#layout, mins, maxs);
    if (bad !== undefined) return bad;
    let finite = true;
    this.#layout.forEachRun(offset, values.length, (from, to, block) => {
      if (!rangeRun(values, from, to, mins, maxs, block)) finite = false;
    });
    return finite ? -1 : values.findIndex((x) => !Number.isFinite(x));
  }
}

/** Folds `values[from..to)` into block `block`; returns whether all were finite. A top-level loop: see quantize_kernel.ts. */
function rangeRun(
  values: Float32Array,
  from: number,
  to: number,
  mins: Float64Array,
  maxs: Float64Array,
  block: number,
): boolean {
  let lo = mins[block];
  let hi = maxs[block];
  // A float64 sum of float32 values cannot overflow, so it is finite exactly
  // when every value is: one add per element finds NaN and Inf.
  let sum = 0;
  for (let i = from; i < to; i++) {
    const x = values[i];
    if (x < lo) lo = x;
    if (x > hi) hi = x;
    sum += x;
  }
  mins[block] = lo;
  maxs[block] = hi;
  return Number.isFinite(sum);
}
