/**
 * The compiled kernels module (src/wasm/kernels.wat, assembled into
 * `_kernels_wasm.ts` by scripts/build_wasm.ts) and the signatures of its
 * exports. Addresses are byte offsets into its memory.
 *
 * @module
 */
import { KERNELS_WASM_BASE64 } from "./_kernels_wasm.ts";

/** The leading parameters of `quantize_contig` and `quantize_contig_err`: runs of contiguous blocks. */
type ContigRuns = [
  inp: number,
  out: number,
  n: number,
  first: number,
  run: number,
  sp: number,
  bp: number,
  lo: number,
  hi: number,
];

/** The leading parameters of `observe_quantize` and `observe_quantize_err`: blocks observed and quantized. */
type ObservedBlocks = [
  inp: number,
  out: number,
  nb: number,
  run: number,
  sym: number,
  qmin: number,
  qmax: number,
  fzp: number,
  sp: number,
  bp: number,
];

/** The exports of an instance of the kernels module. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  error_contig(
    inp: number,
    q: number,
    n: number,
    first: number,
    run: number,
    sp: number,
    bp: number,
    flip: number,
    acc: number,
  ): void;
  quantize_run(inp: number, out: number, n: number, s: number, b: number, lo: number, hi: number, f16: number): number;
  quantize_contig(...args: [...ContigRuns, f16: number]): number;
  quantize_contig_err(...args: [...ContigRuns, acc: number]): number;
  observe_quantize_err(...args: [...ObservedBlocks, acc: number, zr: number]): number;
  observe_quantize(...args: [...ObservedBlocks, zr: number]): number;
  error_rows(
    inp: number,
    q: number,
    n: number,
    col: number,
    rowLen: number,
    cb: number,
    rb: number,
    sp: number,
    bp: number,
    flip: number,
    acc: number,
  ): void;
  quantize_rows(
    inp: number,
    out: number,
    n: number,
    col: number,
    rowLen: number,
    cb: number,
    rb: number,
    sp: number,
    bp: number,
    lo: number,
    hi: number,
    f16: number,
  ): number;
  minmax_run(inp: number, n: number, minp: number, maxp: number): number;
  minmax_contig(inp: number, n: number, first: number, run: number, minp: number, maxp: number): number;
  minmax_rows(
    inp: number,
    n: number,
    col: number,
    rowLen: number,
    cb: number,
    rb: number,
    minp: number,
    maxp: number,
  ): number;
  pack4(inp: number, out: number, n: number): void;
  decode_f16(inp: number, out: number, n: number): void;
  decode_bf16(inp: number, out: number, n: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

/**
 * The kernels module, compiled once.
 *
 * @returns The module, or `null` where WebAssembly SIMD is unavailable.
 */
export function compileKernels(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    if (typeof WebAssembly !== "object") return compiled = null;
    const text = atob(KERNELS_WASM_BASE64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    // Fails to compile (caught) where WebAssembly SIMD is unavailable.
    compiled = new WebAssembly.Module(bytes);
  } catch {
    compiled = null;
  }
  return compiled;
}
