/**
 * The quantize kernel (SPEC.md Section 1): `q = clip(round(w / scale) + zp)`,
 * with `w / scale` rounded to the weight's float type before rounding to an
 * integer, half to even.
 *
 * @module
 */
import type { BlockLayout } from "./block_layout.ts";
import { f16round } from "./float16.ts";
import type { ArithmeticType } from "./qparams.ts";
import { wasmKernels } from "./wasm_kernels.ts";

/** 1.5 * 2^52: `(v + R) - R` rounds v to an integer, half to even. */
const R = 6755399441055744;

/** Below this many elements a JavaScript loop is as fast as a call into wasm. */
const WASM_MIN = 256;

/** Per-block parameters in the form the kernel consumes. */
export interface KernelParams {
  /** `1 / scale` per block, in float64. */
  readonly inverseScale: Float64Array;
  /** Zero point per block. */
  readonly zeroPoint: Int32Array;
  /** Smallest quantized value. */
  readonly qmin: number;
  /** Largest quantized value. */
  readonly qmax: number;
  /** Float type `w / scale` is rounded to. */
  readonly arithmetic: ArithmeticType;
}

/**
 * Quantizes consecutive elements of a tensor.
 *
 * `w * (1 / scale)` in float64 then rounded to float32 equals the correctly
 * rounded float32 `w / scale`: the float64 product is within 2^-52 (relative)
 * of the exact quotient, while an exact quotient of two float32 values is at
 * least 2^-49 away from any float32 rounding midpoint (it is never on one:
 * a midpoint has 25 significant bits, so midpoint * scale cannot be a 24-bit
 * float32). The same argument holds with more room for float16.
 *
 * Runs the exact WebAssembly SIMD kernel (src/wasm_kernels.ts: identical
 * bytes, tested) where available, these JavaScript loops otherwise.
 *
 * @param values Element values (float16 and bfloat16 decoded to float32).
 * @param offset Flat index of `values[0]` in the tensor.
 * @param layout The tensor's block layout.
 * @param params Per-block parameters.
 * @param out One quantized value per element.
 * @param errorSums Error sums of the report (`[sum w^2, sum e^2, max |e|]`) to add
 *   to, computed on the way: by the wasm kernels for any layout, by the JavaScript ones (one pass over the
 *   values, not two) where the layout is contiguous.
 * @returns Whether `errorSums` were added to; if not, the caller computes them.
 */
export function quantizeValues(
  values: Float32Array,
  offset: number,
  layout: BlockLayout,
  params: KernelParams,
  out: Int8Array | Uint8Array,
  errorSums?: Float64Array,
): boolean {
  if (values.length >= WASM_MIN && wasmKernels()?.quantize(values, offset, layout, params, out, errorSums)) {
    return errorSums !== undefined;
  }
  const { inverseScale, zeroPoint, qmin, qmax } = params;
  const f16 = params.arithmetic === "float16";
  // Stored through a byte view: an int8 store is the uint8 store of the same value mod 256, and one array type
  // keeps the loop monomorphic.
  const bytes = out instanceof Uint8Array ? out : new Uint8Array(out.buffer, out.byteOffset, out.length);
  const scale = errorSums && layout.contiguous ? scalesOf(params) : undefined;
  if (errorSums && scale) {
    const run = f16 ? quantizeErrorRun16 : quantizeErrorRun32;
    layout.forEachRun(offset, values.length, (from, to, block) => {
      run(values, bytes, from, to, inverseScale[block], scale[block], zeroPoint[block], qmin, qmax, errorSums);
    });
    return true;
  }
  const run = f16 ? quantizeRun16 : quantizeRun32;
  layout.forEachRun(offset, values.length, (from, to, block) => {
    run(values, bytes, from, to, inverseScale[block], zeroPoint[block], qmin, qmax);
  });
  return false;
}

const scaleCache = new WeakMap<KernelParams, Float64Array | null>();

/**
 * The scales behind `params.inverseScale`: `fround(1 / (1 / s))` recovers
 * every float32 (and so float16) scale exactly; checked, and `undefined` for
 * parameters it does not recover (the caller then measures the error apart).
 */
function scalesOf(params: KernelParams): Float64Array | undefined {
  let scales = scaleCache.get(params);
  if (scales === undefined) {
    scales = params.inverseScale.map((inv) => Math.fround(1 / inv));
    if (!scales.every((s, k) => 1 / s === params.inverseScale[k])) scales = null;
    scaleCache.set(params, scales);
  }
  return scales ?? undefined;
}

// The hot loops are top-level functions taking everything as arguments, with
// the float rounding called directly: loops inside closures, or rounding
// through a function-valued variable, ran 2x slower in V8.

function quantizeRun32(
  values: Float32Array,
  out: Uint8Array,
  from: number,
  to: number,
  inv: number,
  zp: number,
  qmin: number,
  qmax: number,
): void {
  // Clipping before rounding gives the same integer (rounding is monotone and the bounds are integers) and left
  // V8 and JavaScriptCore a shorter loop than Math.min/max after it: 10-15% faster in both (bench/kernel_js_bench.ts).
  const lo = qmin - zp;
  const hi = qmax - zp;
  for (let i = from; i < to; i++) {
    const x = Math.fround(values[i] * inv);
    out[i] = (((x < lo ? lo : x > hi ? hi : x) + R) - R) + zp;
  }
}

function quantizeRun16(
  values: Float32Array,
  out: Uint8Array,
  from: number,
  to: number,
  inv: number,
  zp: number,
  qmin: number,
  qmax: number,
): void {
  const lo = qmin - zp;
  const hi = qmax - zp;
  for (let i = from; i < to; i++) {
    const x = f16round(values[i] * inv);
    out[i] = (((x < lo ? lo : x > hi ? hi : x) + R) - R) + zp;
  }
}

// Quantize and measure the error in one pass, with the arithmetic of ErrorStats (src/error_stats.ts): the
// dequantized value is `s * (q - zp)` in float64, and `q - zp` is the clipped, rounded quotient itself.

function quantizeErrorRun32(
  values: Float32Array,
  out: Uint8Array,
  from: number,
  to: number,
  inv: number,
  s: number,
  zp: number,
  qmin: number,
  qmax: number,
  sums: Float64Array,
): void {
  const lo = qmin - zp;
  const hi = qmax - zp;
  let signal = 0;
  let error = 0;
  let maxAbs = sums[2];
  for (let i = from; i < to; i++) {
    const w = values[i];
    const x = Math.fround(w * inv);
    const r = ((x < lo ? lo : x > hi ? hi : x) + R) - R;
    out[i] = r + zp;
    const e = w - s * r;
    signal += w * w;
    error += e * e;
    // A comparison, not Math.max: 15% faster in both engines (finite values only reach here).
    const a = Math.abs(e);
    if (a > maxAbs) maxAbs = a;
  }
  sums[0] += signal;
  sums[1] += error;
  sums[2] = maxAbs;
}

function quantizeErrorRun16(
  values: Float32Array,
  out: Uint8Array,
  from: number,
  to: number,
  inv: number,
  s: number,
  zp: number,
  qmin: number,
  qmax: number,
  sums: Float64Array,
): void {
  const lo = qmin - zp;
  const hi = qmax - zp;
  let signal = 0;
  let error = 0;
  let maxAbs = sums[2];
  for (let i = from; i < to; i++) {
    const w = values[i];
    const x = f16round(w * inv);
    const r = ((x < lo ? lo : x > hi ? hi : x) + R) - R;
    out[i] = r + zp;
    const e = w - s * r;
    signal += w * w;
    error += e * e;
    // A comparison, not Math.max: 15% faster in both engines (finite values only reach here).
    const a = Math.abs(e);
    if (a > maxAbs) maxAbs = a;
  }
  sums[0] += signal;
  sums[1] += error;
  sums[2] = maxAbs;
}
