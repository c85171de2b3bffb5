/**
 * The tables the wasm kernels read and write beside the values: per block a
 * scale, a bias (the zero point in the form the rounding trick wants), a
 * minimum and a maximum, and per row of a layout the index of its first
 * block. They live in the kernels' memory (src/_wasm_arena.ts) and grow on
 * demand; growing moves them and detaches views of the memory taken
 * earlier, so callers reserve room before they take views.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import type { KernelParams } from "./quantize_kernel.ts";
import { align, type WasmArena } from "./_wasm_arena.ts";

/** Bits of 1.5 * 2^23 in float32: the integer bias of the rounding trick (a block's bias is this minus its zero point). */
export const MAGIC_BITS = 0x4b400000;

/** Where a chunk of a contiguous layout starts: its first run's length, the run length, its scale and bias. */
export interface RunsFrom {
  readonly first: number;
  readonly run: number;
  readonly sp: number;
  readonly bp: number;
}

/** Where a chunk of a layout of rows starts, and the range of row bases it touches. */
export interface RowsFrom {
  readonly col: number;
  readonly rowLength: number;
  readonly columnBlock: number;
  readonly lo: number;
  readonly hi: number;
}

/** The block and row tables of one kernels instance, and the parameters last uploaded into them. */
export class KernelTables {
  readonly #arena: WasmArena;
  #scales = 0;
  #biases = 0;
  #mins = 0;
  #maxs = 0;
  #blockCapacity = 0;
  #rowBases = 0;
  #rowCapacity = 0;
  #params: KernelParams | undefined;
  #paramsFloat16 = false;

  /**
   * @param arena The kernels' memory.
   * @param blocks Blocks to make room for at once.
   * @param rows Rows to make room for at once.
   */
  constructor(arena: WasmArena, blocks: number, rows: number) {
    this.#arena = arena;
    this.reserveBlocks(blocks);
    this.reserveRows(rows);
  }

  /** Byte address of the scales (float32). */
  get scales(): number {
    return this.#scales;
  }

  /** Byte address of the biases (int32). */
  get biases(): number {
    return this.#biases;
  }

  /** Byte address of the minimums (float32). */
  get mins(): number {
    return this.#mins;
  }

  /** Byte address of the maximums (float32). */
  get maxs(): number {
    return this.#maxs;
  }

  /** Byte address of the row bases (int32): the first block of each row. */
  get rowBases(): number {
    return this.#rowBases;
  }

  /** Makes room for `count` blocks (growing the memory detaches earlier views); uploaded parameters follow. */
  reserveBlocks(count: number): void {
    if (count <= this.#blockCapacity) return;
    const n = Math.max(count, 2 * this.#blockCapacity);
    const arena = this.#arena;
    arena.reserve(4 * align(4 * n)); // all four or none
    const old = this.#params;
    this.#scales = arena.alloc(4 * n);
    this.#biases = arena.alloc(4 * n);
    this.#mins = arena.alloc(4 * n);
    this.#maxs = arena.alloc(4 * n);
    this.#blockCapacity = n;
    this.#params = undefined;
    if (old) this.upload(old);
  }

  /** Makes room for `count` row bases. */
  reserveRows(count: number): void {
    if (count <= this.#rowCapacity) return;
    const n = Math.max(count, 2 * this.#rowCapacity);
    this.#rowBases = this.#arena.alloc(4 * n);
    this.#rowCapacity = n;
  }

  /**
   * Uploads per-block parameters (cached: the same `params` object is
   * uploaded once; do not mutate its arrays afterwards).
   *
   * @returns Whether the kernels reproduce `params` exactly (see src/wasm_kernels.ts).
   */
  upload(params: KernelParams): boolean {
    if (this.#params === params) return true;
    const { inverseScale, zeroPoint } = params;
    const count = inverseScale.length;
    this.reserveBlocks(count + 16);
    const f32 = this.#arena.f32;
    const i32 = this.#arena.i32;
    const s0 = this.#scales >> 2;
    const b0 = this.#biases >> 2;
    const f16 = params.arithmetic === "float16";
    for (let k = 0; k < count; k++) {
      const inv = inverseScale[k];
      const s = Math.fround(1 / inv);
      if (1 / s !== inv || !(s > 0) || s === Infinity || (f16 && !isFloat16Compatible(s))) return false;
      f32[s0 + k] = s;
      i32[b0 + k] = MAGIC_BITS - zeroPoint[k];
    }
    this.#params = params;
    this.#paramsFloat16 = f16;
    return true;
  }

  /** Whether the parameters last uploaded are in float16 arithmetic. */
  get uploadedFloat16(): boolean {
    return this.#paramsFloat16;
  }

  /** Forgets the upload: a kernel is about to write its own parameters where uploads go. */
  overwriteParams(): void {
    this.#params = undefined;
  }

  /**
   * The parameters a kernel wrote for the first `blocks` blocks.
   *
   * @returns Each block's scale and zero point.
   */
  written(blocks: number): { scale: Float64Array; zeroPoint: Int32Array } {
    const s0 = this.#scales >> 2;
    const b0 = this.#biases >> 2;
    const i32 = this.#arena.i32;
    // A loop, not `Int32Array.from(biases, mapFn)`, which allocated ~100 bytes per element (measured in Deno):
    // this runs for every slab.
    const zeroPoint = new Int32Array(blocks);
    for (let k = 0; k < blocks; k++) zeroPoint[k] = MAGIC_BITS - i32[b0 + k];
    return { scale: new Float64Array(this.#arena.f32.subarray(s0, s0 + blocks)), zeroPoint };
  }

  /** For a contiguous layout from element `offset`: the first run's length, the run length, its scale and bias. */
  runsFrom(offset: number, layout: BlockLayout): RunsFrom {
    const run = layout.runLength;
    const block = Math.floor(offset / run);
    return { first: (block + 1) * run - offset, run, sp: this.#scales + 4 * block, bp: this.#biases + 4 * block };
  }

  /**
   * For a layout of rows from element `offset`, `n` elements on: the first column, the row length, the column
   * block, and the lowest and highest row base; fills the row base table the row kernels read.
   */
  rowsFrom(offset: number, layout: BlockLayout, n: number): RowsFrom {
    const { rowLength, columnBlock } = layout;
    const row = Math.floor(offset / rowLength);
    const col = offset - row * rowLength;
    const rows = Math.ceil((col + n) / rowLength);
    this.reserveRows(rows);
    const i32 = this.#arena.i32;
    const r0 = this.#rowBases >> 2;
    let lo = Infinity;
    let hi = -Infinity;
    for (let r = 0; r < rows; r++) {
      const base = layout.rowBase(row + r);
      i32[r0 + r] = base;
      if (base < lo) lo = base;
      if (base > hi) hi = base;
    }
    return { col, rowLength, columnBlock, lo, hi };
  }

  /** Copies the ranges of blocks `[from, from + count)` into the tables' first `count` entries. */
  stageRanges(mins: Float64Array, maxs: Float64Array, from: number, count: number): void {
    this.reserveBlocks(count + 16);
    this.#arena.f32.set(mins.subarray(from, from + count), this.#mins >> 2);
    this.#arena.f32.set(maxs.subarray(from, from + count), this.#maxs >> 2);
  }

  /** Copies the tables' first `count` ranges back to blocks `[from, from + count)`. */
  readRanges(mins: Float64Array, maxs: Float64Array, from: number, count: number): void {
    const f32 = this.#arena.f32;
    mins.set(f32.subarray(this.#mins >> 2, (this.#mins >> 2) + count), from);
    maxs.set(f32.subarray(this.#maxs >> 2, (this.#maxs >> 2) + count), from);
  }
}

/** Whether a float32 value has at most 11 significant bits (every float16 value does). */
export function isFloat16Compatible(x: number): boolean {
  probe[0] = x;
  return (probeBits[0] & 0x1fff) === 0;
}
const probe = new Float32Array(1);
const probeBits = new Uint32Array(probe.buffer);
