/**
 * WebAssembly SIMD versions of the hot loops, bit-identical to the
 * JavaScript core: the quantize kernel (src/quantize_kernel.ts), the block
 * min/max (src/block_range.ts), float16/bfloat16 decoding (src/float16.ts)
 * and 4-bit packing (src/pack.ts). The kernels live in
 * `src/wasm/kernels.wat`; `scripts/build_wasm.ts` assembles them into
 * `src/wasm/_kernels_wasm.ts`. The per-block parameters and ranges and the
 * row tables they read live in `src/_wasm_tables.ts`.
 *
 * Why the numbers are the same (SPEC.md Sections 1 and 3):
 *
 * - float32 arithmetic: the JavaScript kernel computes
 *   `fround(w * (1 / s))`, which equals the correctly rounded float32
 *   `w / s` (proof in src/quantize_kernel.ts), which is `f32x4.div`. The
 *   kernels recover `s` from the stored `1 / s` as `fround(1 / (1 / s))`,
 *   exact for every float32 `s` (two float64 roundings move it by at most
 *   2^-52 relatively), and check it: parameters that fail the check are
 *   refused and the caller stays in JavaScript. Multiplying by a float32
 *   reciprocal would not match (PITFALLS.md item 14). The proof does not
 *   cover quotients below 2^-126, which only ever round to the integer 0.
 * - Rounding half to even: for |v| < 2^22, `v + 1.5 * 2^23` in float32 lies
 *   in [2^23, 2^24), where float32 spacing is 1, so the addition itself
 *   rounds v half to even and its bit pattern is `0x4B400000 + round(v)`.
 *   Subtracting `0x4B400000 - zp` as an integer gives `round(v) + zp`. v is
 *   first raised to at least -2^22; beyond +-2^22 the result is monotone in
 *   v, so it clips to qmin or qmax exactly as the JavaScript result does.
 *   NaN gives 0, what a typed array stores for the JavaScript NaN.
 * - float16 arithmetic: the JavaScript kernel computes `f16round(w / s)` of
 *   the exact quotient; the kernels round the float32 quotient to 11
 *   significant bits (integer arithmetic on its bits). This double rounding
 *   is exact when `w` and `s` have at most 11 significant bits (float16
 *   values): a float16 rounding midpoint m has 12, so `w - m * s` is a
 *   nonzero multiple of the last place of `m * s`, which puts `w / s` more
 *   than 2^-23 * m away from m, farther than a float32 rounding can move it
 *   (2^-24), and float32 rounding is monotone with m a float32 value. The
 *   kernels check both preconditions and report a violation (the caller
 *   then stays in JavaScript). Below 2^-14 (float16 subnormals) and above
 *   65504 the 11-bit rounding differs from float16's, but only where every
 *   value rounds to 0 or clips anyway.
 * - Min/max: finite runs use a vector min/max whose only possible difference
 *   from `if (x < lo) lo = x`, in order, is the sign of a zero result; a zero
 *   result is replaced by the first zero of the run in order. Runs holding
 *   NaN or an infinity are redone one value at a time. Per-column blocks
 *   (each lane its own block, in order) are exact as they are.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import type { KernelParams } from "./quantize_kernel.ts";
import type { QuantRange } from "./ranges.ts";
import type { QuantMode } from "./types.ts";
import { compileKernels, type KernelExports } from "./wasm/_kernels_module.ts";
import { unlessGrowthBlocked, WasmArena, type WasmLease } from "./_wasm_arena.ts";
import { isFloat16Compatible, KernelTables, MAGIC_BITS } from "./_wasm_tables.ts";

export type { WasmLease } from "./_wasm_arena.ts";

/** What {@linkcode WasmKernels.observeQuantize} found and used. */
export interface ObservedParams {
  /** Scale per block (float32 values). */
  readonly scale: Float64Array;
  /** Zero point per block. */
  readonly zeroPoint: Int32Array;
  /** Blocks whose computed scale was 0 (stored as 1). */
  readonly zeroRangeBlocks: number;
}

/** Options of {@linkcode createWasmKernels}. */
export interface WasmKernelsOptions {
  /**
   * Elements in each pool (`input`, `inputBits`, `output`, `packed`).
   *
   * @default {1048576}
   */
  capacity?: number;
  /**
   * Blocks (scales) reserved for parameters and ranges before the memory
   * has to grow (growing invalidates views returned earlier).
   *
   * @default {65536}
   */
  blockCapacity?: number;
}

/** Blocks reserved for a lease: more than one slab of the default budget can hold. */
const LEASE_BLOCKS = 1 << 20;

/** Elements staged per call when the caller's arrays live outside the wasm memory (L2-sized). */
const STAGE = 1 << 16;
/** Byte address of the three float64 error sums, in the scratch bytes no kernel uses (128-1023). */
const SUMS = 512;
/** Byte address of the count of zero-range blocks `observe_quantize_err` found. */
const ZERO_RANGE = 544;

let shared: WasmKernels | undefined;
let enabled = true;

/**
 * Exact WebAssembly SIMD kernels over pools of buffers inside their own
 * memory. Fill `input(n)` (or `inputBits(n)` and decode), call a kernel,
 * read `output(n)`: nothing is allocated per call. The drop-in methods
 * {@linkcode WasmKernels.quantize} and {@linkcode WasmKernels.observe} take
 * any arrays; arrays that are views of this instance's memory are used in
 * place, others are staged through a small internal buffer.
 *
 * Views returned by the pool methods stay valid until a call needs more
 * block room than reserved: the memory then grows and earlier views are
 * detached (never while a {@linkcode WasmKernels.lease} is out). JavaScript is single
 * threaded, so one instance serves any number of callers as long as none
 * keeps data in a pool across an `await` while another uses it; give such
 * callers their own instance.
 */
export class WasmKernels {
  /** Elements each pool holds. */
  readonly capacity: number;
  readonly #x: KernelExports;
  readonly #arena: WasmArena;
  readonly #in: number;
  readonly #bits: number;
  readonly #out: number;
  readonly #packed: number;
  readonly #stageIn: number;
  readonly #stageOut: number;
  readonly #tables: KernelTables;
  /** The error sums before a fused call, to start again from. */
  readonly #sumsBefore = new Float64Array(3);

  /** Use {@linkcode createWasmKernels} or {@linkcode wasmKernels}. */
  constructor(module: WebAssembly.Module, options: WasmKernelsOptions = {}) {
    const capacity = options.capacity ?? 1 << 20;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 27) {
      throw new RangeError(`WasmKernels capacity must be an integer in [1, 2^27], got ${capacity}`);
    }
    const blockCapacity = options.blockCapacity ?? 1 << 16;
    if (!Number.isInteger(blockCapacity) || blockCapacity < 1) {
      throw new RangeError(`WasmKernels blockCapacity must be a positive integer, got ${blockCapacity}`);
    }
    this.capacity = capacity;
    this.#x = new WebAssembly.Instance(module).exports as unknown as KernelExports;
    const arena = this.#arena = new WasmArena(this.#x.memory, 1024); // 0-1023: the kernels' scratch
    this.#in = arena.alloc(4 * capacity);
    this.#bits = arena.alloc(2 * capacity);
    this.#out = arena.alloc(capacity);
    this.#packed = arena.alloc((capacity + 1) >> 1);
    this.#stageIn = arena.alloc(4 * STAGE);
    this.#stageOut = arena.alloc(STAGE);
    this.#tables = new KernelTables(arena, blockCapacity, 1024);
  }

  /**
   * Lends `byteLength` bytes of this instance's memory for slab buffers, so
   * that data read into them is quantized in place, without staging copies.
   * While the lease is out the memory does not grow: a call that would need
   * more block room than reserved (more than 2^20 blocks in one call) runs
   * the JavaScript kernels instead, with the same result. One lease at a
   * time: while one is out, another is refused.
   *
   * @param byteLength Bytes wanted.
   * @param slotBytes Smallest buffer handed out (see {@linkcode WasmArena.lease}).
   * @returns The lease, or `undefined` when another lease is out or the memory cannot grow that far.
   */
  lease(byteLength: number, slotBytes = 0): WasmLease | undefined {
    if (this.#arena.leased) return undefined;
    try {
      // Room for the parameters and row tables of any slab, reserved while the memory may still grow.
      this.#tables.reserveBlocks(LEASE_BLOCKS);
      this.#tables.reserveRows(STAGE + 1);
    } catch (e) {
      if (e instanceof RangeError) return undefined;
      throw e;
    }
    return this.#arena.lease(byteLength, slotBytes);
  }

  /**
   * The input pool as float32 values.
   *
   * @param n Number of elements (at most `capacity`).
   * @returns A view of the first `n` elements.
   */
  input(n: number = this.capacity): Float32Array {
    return new Float32Array(this.#arena.buffer, this.#in, this.#count(n));
  }

  /**
   * The raw 16-bit input pool, for float16 and bfloat16 data.
   *
   * @param n Number of elements (at most `capacity`).
   * @returns A view of the first `n` elements.
   */
  inputBits(n: number = this.capacity): Uint16Array {
    return new Uint16Array(this.#arena.buffer, this.#bits, this.#count(n));
  }

  /**
   * The output pool: one quantized value per byte (uint8 values as they
   * are, int8 values as two's complement bytes).
   *
   * @param n Number of elements (at most `capacity`).
   * @returns A view of the first `n` bytes.
   */
  output(n: number = this.capacity): Uint8Array {
    return new Uint8Array(this.#arena.buffer, this.#out, this.#count(n));
  }

  /**
   * The output pool read as int8 values.
   *
   * @param n Number of elements (at most `capacity`).
   * @returns A view of the first `n` bytes.
   */
  outputInt8(n: number = this.capacity): Int8Array {
    return new Int8Array(this.#arena.buffer, this.#out, this.#count(n));
  }

  #count(n: number): number {
    if (!Number.isInteger(n) || n < 0 || n > this.capacity) {
      throw new RangeError(`Cannot use ${n} elements of a WasmKernels pool of ${this.capacity}`);
    }
    return n;
  }

  /**
   * Decodes float16 bits from `inputBits(n)` into `input(n)`, exactly as
   * `decodeFloat16` does (NaN becomes 0x7FC00000).
   *
   * @param n Number of elements.
   * @returns `input(n)`.
   */
  decodeFloat16(n: number): Float32Array {
    this.#x.decode_f16(this.#bits, this.#in, this.#count(n));
    return this.input(n);
  }

  /**
   * Decodes float16 or bfloat16 bits into float32 values, as `decodeFloat16`
   * and `decodeBfloat16` do, where both arrays are views of this instance's
   * memory (the slabs and scratch of a lease).
   *
   * @param bits The raw 16-bit values.
   * @param dtype Their type.
   * @param out Destination, at least `bits.length` long.
   * @returns Whether it decoded; if not, the caller decodes in JavaScript.
   */
  decode(bits: Uint16Array, dtype: "float16" | "bfloat16", out: Float32Array): boolean {
    const buffer = this.#arena.buffer;
    if (bits.buffer !== buffer || out.buffer !== buffer || out.length < bits.length) return false;
    (dtype === "float16" ? this.#x.decode_f16 : this.#x.decode_bf16)(bits.byteOffset, out.byteOffset, bits.length);
    return true;
  }

  /**
   * Decodes bfloat16 bits from `inputBits(n)` into `input(n)`.
   *
   * @param n Number of elements.
   * @returns `input(n)`.
   */
  decodeBfloat16(n: number): Float32Array {
    this.#x.decode_bf16(this.#bits, this.#in, this.#count(n));
    return this.input(n);
  }

  /**
   * Packs the first `n` 4-bit values of `output(n)` two to a byte, least
   * significant nibble first (SPEC.md Section 5), as `packInt4` does.
   *
   * @param n Number of values.
   * @returns A view of the `ceil(n / 2)` packed bytes in the packed pool.
   */
  pack4(n: number): Uint8Array {
    this.#x.pack4(this.#out, this.#packed, this.#count(n));
    return new Uint8Array(this.#arena.buffer, this.#packed, (n + 1) >> 1);
  }

  /**
   * Folds `input(n)` into a running `[min, max]` as `BlockRange.observe`
   * folds one block's run.
   *
   * @param n Number of elements.
   * @param range `[min, max]` so far (`[Infinity, -Infinity]` to start); updated.
   * @returns Whether every value was finite.
   */
  minMaxRun(n: number, range: Float64Array): boolean {
    const f32 = this.#arena.f32;
    const { mins, maxs } = this.#tables;
    f32[mins >> 2] = range[0];
    f32[maxs >> 2] = range[1];
    const bad = this.#x.minmax_run(this.#in, this.#count(n), mins, maxs);
    range[0] = f32[mins >> 2];
    range[1] = f32[maxs >> 2];
    return bad === 0;
  }

  /**
   * Quantizes `input(n)`, all in one block, into `output(n)`, as
   * `quantizeValues` does.
   *
   * @param n Number of elements.
   * @param scale The block's scale, a float32 (float16 for `"float16"` arithmetic) value.
   * @param zeroPoint The block's zero point.
   * @param qmin Smallest quantized value.
   * @param qmax Largest quantized value.
   * @param arithmetic Float type `w / scale` is rounded to.
   * @returns `output(n)`.
   * @throws {RangeError} When a value or the scale is not a float16 value in `"float16"` arithmetic.
   */
  quantizeRun(
    n: number,
    scale: number,
    zeroPoint: number,
    qmin: number,
    qmax: number,
    arithmetic: "float32" | "float16",
  ): Uint8Array {
    const f16 = arithmetic === "float16";
    if (f16 && !isFloat16Compatible(scale)) throw new RangeError(`Scale ${scale} is not a float16 value`);
    const bad = this.#x.quantize_run(
      this.#in,
      this.#out,
      this.#count(n),
      scale,
      MAGIC_BITS - zeroPoint,
      qmin,
      qmax,
      f16 ? 1 : 0,
    );
    if (bad) {
      throw new RangeError("float16 arithmetic needs float16 values: an input has more than 11 significant bits");
    }
    return this.output(n);
  }

  /**
   * Quantizes consecutive elements of a tensor: a drop-in for
   * `quantizeValues`, with the same arguments and identical bytes.
   *
   * @param values Element values (views of `input()` are used in place).
   * @param offset Flat index of `values[0]` in the layout.
   * @param layout The block layout.
   * @param params Per-block parameters.
   * @param out One quantized value per element (views of `output()` are written in place).
   * @param errorSums When given, the error sums of the report (`[sum w^2, sum
   *   e^2, max |e|]`, as `ErrorStats` keeps them) are added to it while the
   *   values are in wasm memory: they were added when the call returns `true`.
   *   Every error is exact, so is the maximum. For contiguous layouts in float32
   *   arithmetic the squares are summed in float32 over up to 32 elements before
   *   float64 (src/wasm/kernels.wat, `quantize_contig_err`), within 1e-6 of the
   *   exact sums, relatively; otherwise in float64 (`error_contig`, `error_rows`).
   * @returns `false` when the kernels cannot reproduce these parameters or
   *   values exactly (a scale whose `1 / scale` is not the stored inverse, or
   *   non-float16 inputs in float16 arithmetic); `out` is then unspecified,
   *   `errorSums` untouched, and the caller must use the JavaScript kernel.
   */
  quantize(
    values: Float32Array,
    offset: number,
    layout: BlockLayout,
    params: KernelParams,
    out: Int8Array | Uint8Array,
    errorSums?: Float64Array,
  ): boolean {
    return unlessGrowthBlocked(() => this.#quantize(values, offset, layout, params, out, errorSums), false);
  }

  #quantize(
    values: Float32Array,
    offset: number,
    layout: BlockLayout,
    params: KernelParams,
    out: Int8Array | Uint8Array,
    errorSums?: Float64Array,
  ): boolean {
    const n = values.length;
    if (n === 0) return true;
    if (out.length < n) throw new RangeError(`Output holds ${out.length} values, ${n} needed`);
    // Pointers first: reserving block room may grow the memory and detach views.
    const buffer = this.#arena.buffer;
    const inPtr = values.buffer === buffer ? values.byteOffset : -1;
    const outPtr = out.buffer === buffer ? out.byteOffset : -1;
    if (!this.#tables.upload(params)) return false;
    const f16 = this.#tables.uploadedFloat16 ? 1 : 0;
    const { qmin, qmax } = params;
    // Error sums ride along where the values are in wasm memory anyway.
    const sums = errorSums !== undefined;
    if (sums) this.#arena.f64.set(errorSums, SUMS >> 3);
    // How the error sums read a stored byte: as the range says, whatever the array type.
    const flip = qmin < 0 ? 128 : 0;
    // In place or staged, STAGE elements at a time: the error sums then read values still in cache.
    const done = this.#chunks(values, inPtr, out, outPtr, STAGE, (src, dst, at, len) => {
      if (sums && !f16 && layout.contiguous) {
        // Quantize and sum in one pass; no float16 check to report: in float32 arithmetic every value quantizes.
        const { first, run, sp, bp } = this.#tables.runsFrom(offset + at, layout);
        this.#float32Sums(
          () => this.#x.quantize_contig_err(src, dst, len, first, run, sp, bp, qmin, qmax, SUMS),
          () => this.#errorSums(src, dst, len, offset + at, layout, flip),
        );
        return true;
      }
      if (this.#quantizeSlab(src, dst, len, offset + at, layout, qmin, qmax, f16)) return false;
      if (sums) this.#errorSums(src, dst, len, offset + at, layout, flip);
      return true;
    });
    // Refused work is redone in JavaScript, sums and all: they must not be added twice.
    if (sums && done) errorSums!.set(this.#arena.f64.subarray(SUMS >> 3, (SUMS >> 3) + 3));
    return done;
  }

  /**
   * Runs `kernel(src, dst, at, len)` over consecutive chunks of `values` of at
   * most `step` elements each: in place where `inPtr` locates `values` in this
   * memory, else staged into the input stage; writing in place where `outPtr`
   * locates `out`, else into the output stage, copied to `out` after each
   * chunk (`out` undefined: no output). A kernel that returns `false` stops
   * the loop, and this returns `false`.
   */
  #chunks(
    values: Float32Array,
    inPtr: number,
    out: Int8Array | Uint8Array | undefined,
    outPtr: number,
    step: number,
    kernel: (src: number, dst: number, at: number, len: number) => boolean,
  ): boolean {
    const n = values.length;
    const outBytes = out && outPtr < 0 ? new Uint8Array(out.buffer, out.byteOffset, n) : undefined;
    for (let at = 0; at < n; at += step) {
      const len = Math.min(step, n - at);
      let src = inPtr + 4 * at;
      if (inPtr < 0) {
        this.#arena.f32.set(values.subarray(at, at + len), this.#stageIn >> 2);
        src = this.#stageIn;
      }
      const dst = outPtr >= 0 ? outPtr + at : this.#stageOut;
      if (!kernel(src, dst, at, len)) return false;
      if (outBytes) outBytes.set(this.#arena.u8.subarray(dst, dst + len), at);
    }
    return true;
  }

  /**
   * Runs a kernel that adds float32 error sums to the three float64 at SUMS
   * and returns 1 where it cannot vouch for them (src/wasm/kernels.wat); the
   * sums are then put back as they were and `exact` adds float64 ones.
   * Returns the kernel's status.
   */
  #float32Sums(kernel: () => number, exact: () => void): number {
    this.#sumsBefore.set(this.#arena.f64.subarray(SUMS >> 3, (SUMS >> 3) + 3));
    const status = kernel();
    if (status === 1) {
      this.#arena.f64.set(this.#sumsBefore, SUMS >> 3);
      exact();
    }
    return status;
  }

  /**
   * Observes, parameterizes and quantizes whole blocks in one pass: the
   * values are `blocks` blocks of `run` contiguous elements (a one-pass slab:
   * per channel on axis 0, or per block), in float32 arithmetic. The same
   * scales, zero points, bytes and error sums as `observe`, then
   * `computeBlockParams`, then `quantize` with `errorSums`, without reading the
   * values twice (src/wasm/kernels.wat, `observe_quantize_err`).
   *
   * @param values The values: a view of this instance's memory (a lease), used in place, or any array, staged
   *   a few blocks at a time (blocks of at most 65536 elements).
   * @param blocks Number of blocks.
   * @param run Elements per block.
   * @param mode Quantization mode.
   * @param range Quantized range.
   * @param out One quantized value per element (a view of this instance's memory apart from `values`, or any array).
   * @param errorSums The report's error sums (`[sum w^2, sum e^2, max |e|]`), added to; when omitted, none are
   *   computed (`observe_quantize`, at about the cost of the quantize pass alone).
   * @returns Each block's scale and zero point and how many blocks had a zero range; `undefined`, with `out`
   *   unspecified and `errorSums` untouched, when some value or parameter is not finite (or blocks too long to
   *   stage, an output over its input, memory that had to grow under views of it): the caller then takes the three
   *   steps, which name the culprit.
   */
  observeQuantize(
    values: Float32Array,
    blocks: number,
    run: number,
    mode: QuantMode,
    range: QuantRange,
    out: Int8Array | Uint8Array,
    errorSums?: Float64Array,
  ): ObservedParams | undefined {
    return unlessGrowthBlocked(
      () => this.#observeQuantize(values, blocks, run, mode, range, out, errorSums),
      undefined,
    );
  }

  #observeQuantize(
    values: Float32Array,
    blocks: number,
    run: number,
    mode: QuantMode,
    range: QuantRange,
    out: Int8Array | Uint8Array,
    errorSums?: Float64Array,
  ): ObservedParams | undefined {
    const n = values.length;
    if (n !== blocks * run || out.length < n || n === 0) return undefined;
    const buffer = this.#arena.buffer;
    const inPtr = values.buffer === buffer ? values.byteOffset : -1;
    const outPtr = out.buffer === buffer ? out.byteOffset : -1;
    const inPlace = inPtr >= 0 && outPtr >= 0;
    // Staged through the STAGE-sized buffers, whole blocks at a time.
    if (!inPlace && run > STAGE) return undefined;
    // Output over the input would leave the caller's fallback (and the float64 sums) nothing to read again.
    if (inPlace && outPtr < inPtr + 4 * n && inPtr < outPtr + n) return undefined;
    this.#tables.reserveBlocks(blocks + 16);
    // Had the memory grown, views of it would be detached: the caller can only take the three steps then.
    if ((inPtr >= 0 || outPtr >= 0) && this.#arena.buffer !== buffer) return undefined;
    this.#tables.overwriteParams();
    const { qmin, qmax } = range;
    const sym = mode === "linear_symmetric" ? 1 : 0;
    const fzp = range.fixedZeroPoint ?? 0;
    if (errorSums) this.#arena.f64.set(errorSums, SUMS >> 3);
    const x = this.#x;
    let zeroRangeBlocks = 0;
    // Whole blocks at a time: all of them in place, as many as the stage holds otherwise.
    const step = inPlace ? n : Math.floor(STAGE / run) * run;
    const finite = this.#chunks(values, inPtr, out, outPtr, step, (src, dst, at, len) => {
      const first = at / run, count = len / run;
      const sp = this.#tables.scales + 4 * first;
      const bp = this.#tables.biases + 4 * first;
      const status = errorSums
        ? this.#float32Sums(
          () => x.observe_quantize_err(src, dst, count, run, sym, qmin, qmax, fzp, sp, bp, SUMS, ZERO_RANGE),
          () => x.error_contig(src, dst, len, run, run, sp, bp, qmin < 0 ? 128 : 0, SUMS),
        )
        : x.observe_quantize(src, dst, count, run, sym, qmin, qmax, fzp, sp, bp, ZERO_RANGE);
      if (status === 2) return false; // a value or parameter not finite
      zeroRangeBlocks += this.#arena.i32[ZERO_RANGE >> 2];
      return true;
    });
    if (!finite) return undefined;
    if (errorSums) errorSums.set(this.#arena.f64.subarray(SUMS >> 3, (SUMS >> 3) + 3));
    return { ...this.#tables.written(blocks), zeroRangeBlocks };
  }

  /**
   * Adds the error sums of a quantized chunk, still in wasm memory, to the three float64 at SUMS, in float64
   * (`error_contig`, `error_rows`).
   */
  #errorSums(src: number, dst: number, n: number, offset: number, layout: BlockLayout, flip: number): void {
    const tables = this.#tables;
    if (layout.contiguous) {
      const { first, run, sp, bp } = tables.runsFrom(offset, layout);
      this.#x.error_contig(src, dst, n, first, run, sp, bp, flip, SUMS);
      return;
    }
    const { col, rowLength, columnBlock } = tables.rowsFrom(offset, layout, n);
    this.#x.error_rows(
      src,
      dst,
      n,
      col,
      rowLength,
      columnBlock,
      tables.rowBases,
      tables.scales,
      tables.biases,
      flip,
      SUMS,
    );
  }

  #quantizeSlab(
    src: number,
    dst: number,
    n: number,
    offset: number,
    layout: BlockLayout,
    qmin: number,
    qmax: number,
    f16: number,
  ): number {
    const tables = this.#tables;
    if (layout.contiguous) {
      const { first, run, sp, bp } = tables.runsFrom(offset, layout);
      return this.#x.quantize_contig(src, dst, n, first, run, sp, bp, qmin, qmax, f16);
    }
    const { col, rowLength, columnBlock } = tables.rowsFrom(offset, layout, n);
    return this.#x.quantize_rows(
      src,
      dst,
      n,
      col,
      rowLength,
      columnBlock,
      tables.rowBases,
      tables.scales,
      tables.biases,
      qmin,
      qmax,
      f16,
    );
  }

  /**
   * Folds consecutive elements into per-block ranges: a drop-in for
   * `BlockRange.observe`, with identical mins, maxs and result.
   *
   * @param values Element values (views of `input()` are used in place).
   * @param offset Flat index of `values[0]` in the layout.
   * @param layout The block layout.
   * @param mins Minimum per block (float32 values or +-Infinity); updated.
   * @param maxs Maximum per block; updated.
   * @returns The index in `values` of the first NaN or infinity, or -1 when all are finite; `undefined`
   *   when the memory would have to grow under a lease (the ranges then hold some of the values: folding
   *   them all again with the JavaScript kernel gives the same result).
   */
  observe(
    values: Float32Array,
    offset: number,
    layout: BlockLayout,
    mins: Float64Array,
    maxs: Float64Array,
  ): number | undefined {
    return unlessGrowthBlocked(() => this.#observe(values, offset, layout, mins, maxs), undefined);
  }

  #observe(values: Float32Array, offset: number, layout: BlockLayout, mins: Float64Array, maxs: Float64Array): number {
    const n = values.length;
    if (n === 0) return -1;
    const buffer = this.#arena.buffer;
    const inPtr = values.buffer === buffer ? values.byteOffset : -1;
    // Every value is folded in, as the JavaScript kernel does, before the first bad one is looked for.
    let bad = 0;
    this.#chunks(values, inPtr, undefined, -1, STAGE, (src, _dst, at, len) => {
      bad |= this.#observeSlab(src, len, offset + at, layout, mins, maxs);
      return true;
    });
    if (!bad) return -1;
    // values may be detached if the memory grew; read the same bytes through a fresh view.
    const view = inPtr >= 0 ? new Float32Array(this.#arena.buffer, inPtr, n) : values;
    return view.findIndex((x) => !Number.isFinite(x));
  }

  #observeSlab(
    src: number,
    n: number,
    offset: number,
    layout: BlockLayout,
    mins: Float64Array,
    maxs: Float64Array,
  ): number {
    const tables = this.#tables;
    let from: number;
    let count: number;
    let bad: number;
    if (layout.contiguous) {
      const run = layout.runLength;
      from = Math.floor(offset / run);
      count = Math.floor((offset + n - 1) / run) - from + 1;
      tables.stageRanges(mins, maxs, from, count);
      bad = this.#x.minmax_contig(src, n, (from + 1) * run - offset, run, tables.mins, tables.maxs);
    } else {
      const { col, rowLength, columnBlock, lo, hi } = tables.rowsFrom(offset, layout, n);
      from = lo;
      count = hi + rowLength / columnBlock - lo;
      tables.stageRanges(mins, maxs, from, count);
      bad = this.#x.minmax_rows(
        src,
        n,
        col,
        rowLength,
        columnBlock,
        tables.rowBases,
        tables.mins - 4 * from,
        tables.maxs - 4 * from,
      );
    }
    tables.readRanges(mins, maxs, from, count);
    return bad;
  }
}

/**
 * A new set of kernels with its own memory and pools.
 *
 * @param options Pool sizes.
 * @returns The kernels, or `undefined` where WebAssembly SIMD is unavailable.
 * @throws {RangeError} When a size is invalid.
 *
 * @example
 * ```ts
 * import { createWasmKernels } from "./wasm_kernels.ts";
 * import assert from "node:assert/strict";
 *
 * const k = createWasmKernels({ capacity: 4 });
 * if (k) {
 *   k.input(4).set([2.5, -2.5, 3.5, 300]);
 *   assert.deepEqual([...k.quantizeRun(4, 1, 0, -127, 127, "float32")], [2, 254, 4, 127]);
 * }
 * ```
 */
export function createWasmKernels(options: WasmKernelsOptions = {}): WasmKernels | undefined {
  const module = compileKernels();
  return module ? new WasmKernels(module, options) : undefined;
}

/**
 * The shared kernels (created on first use with the default pool sizes),
 * or `undefined` where WebAssembly SIMD is unavailable or after
 * `setWasmKernelsEnabled(false)`: callers then use the JavaScript kernels.
 *
 * @returns The shared kernels, or `undefined`.
 */
export function wasmKernels(): WasmKernels | undefined {
  if (!enabled) return undefined;
  return shared ??= createWasmKernels();
}

/**
 * Turns the shared kernels on or off (for comparisons and benchmarks).
 *
 * @param on Whether {@linkcode wasmKernels} returns the kernels.
 */
export function setWasmKernelsEnabled(on: boolean): void {
  enabled = on;
}
