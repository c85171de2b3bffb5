/**
 * IEEE half precision (float16) and bfloat16 helpers: correctly rounded
 * conversion, bulk decoding of raw bits, and encoding.
 *
 * Deno and Bun have `Math.f16round` and `Float16Array`; Node 20 has neither,
 * so portable fallbacks are used there.
 *
 * @module
 */

/** 1.5 * 2^52: adding and subtracting it rounds a double to an integer, half to even. */
const ROUNDER = 6755399441055744;

/**
 * `Math.f16round` for runtimes without it (Node 20); exported for tests.
 *
 * @param x Any number.
 * @returns The nearest float16 value.
 */
export function f16roundPortable(x: number): number {
  if (x !== x || x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  // 65520 is the midpoint between 65504 (the largest float16) and 65536; ties go to the even 65536 = Infinity.
  if (a >= 65520) return x > 0 ? Infinity : -Infinity;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--; // log2 may be off by one next to powers of two
  else if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10); // subnormals share the spacing 2^-24
  const r = ((a / ulp + ROUNDER) - ROUNDER) * ulp; // a / ulp is exact: ulp is a power of two
  return x > 0 ? r : -r;
}

/**
 * Rounds a number to the nearest float16 value, ties to even (`Math.f16round`).
 * For two float16 operands, `f16round(a op b)` is the correctly rounded
 * float16 result of +, -, * and /, which is how float16 arithmetic is emulated.
 *
 * @param x Any number.
 * @returns The nearest float16 value, as a number.
 */
export const f16round: (x: number) => number = (Math as unknown as { f16round?: (x: number) => number }).f16round ??
  f16roundPortable;

let decodeTable: Float32Array | undefined;

function f16BitsToNumber(h: number): number {
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/**
 * Decodes float16 bits into float32 values (exact: every float16 is a float32).
 *
 * @param bits Raw float16 bit patterns.
 * @param out Destination, at least `bits.length` long.
 * @returns `out`.
 */
export function decodeFloat16(bits: Uint16Array, out: Float32Array): Float32Array {
  // A 64 Ki-entry table beats both per-element arithmetic and Float16Array reads everywhere.
  const table = decodeTable ??= Float32Array.from({ length: 65536 }, (_, h) => f16BitsToNumber(h));
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

/**
 * Decodes bfloat16 bits into float32 values (exact: bfloat16 is the top half of a float32).
 *
 * @param bits Raw bfloat16 bit patterns.
 * @param out Destination, at least `bits.length` long.
 * @returns `out`.
 */
export function decodeBfloat16(bits: Uint16Array, out: Float32Array): Float32Array {
  const words = new Uint32Array(out.buffer, out.byteOffset, bits.length);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i] << 16;
  return out;
}

/**
 * The float16 bit pattern of a number, rounded to float16 first.
 *
 * @param x Any number.
 * @returns The 16-bit pattern.
 */
export function float16Bits(x: number): number {
  const v = f16round(x);
  if (v !== v) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | (a * 2 ** 24); // subnormal (or zero)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return sign | ((e + 15) << 10) | (a * 2 ** (10 - e) - 1024);
}

/**
 * Encodes numbers as float16 bits, rounding each to nearest, ties to even.
 *
 * @param values Numbers to encode.
 * @param out Destination, at least `values.length` long.
 * @returns `out`.
 */
export function encodeFloat16(values: ArrayLike<number>, out: Uint16Array): Uint16Array {
  for (let i = 0; i < values.length; i++) out[i] = float16Bits(values[i]);
  return out;
}

/**
 * Encodes float32 values as bfloat16 bits, rounding to nearest, ties to even.
 *
 * @param values Values to encode (rounded to float32 first).
 * @param out Destination, at least `values.length` long.
 * @returns `out`.
 */
export function encodeBfloat16(values: Float32Array, out: Uint16Array): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const w = words[i];
    if ((w & 0x7fffffff) > 0x7f800000) out[i] = (w >>> 16) | 0x40; // keep NaN a (quiet) NaN
    else out[i] = (w + 0x7fff + ((w >>> 16) & 1)) >>> 16;
  }
  return out;
}

/**
 * Rounds to the nearest integer, ties to even (numpy `np.round`, C `nearbyint`),
 * exact for |x| < 2^51. `Math.round` rounds ties up and must not be used.
 *
 * @param x A number.
 * @returns The nearest integer; halves go to the even neighbour.
 */
export function roundHalfEven(x: number): number {
  return (x + ROUNDER) - ROUNDER;
}
