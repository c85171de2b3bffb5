/**
 * A slow, obviously-correct quantizer written from SPEC.md alone, sharing no
 * code with src/: it walks multi-indices, divides directly, and rounds half
 * to even with floor arithmetic. Tests compare the fast core against it.
 */

export type Mode = "linear" | "linear_symmetric";
export type QType = "int8" | "uint8" | "int4" | "uint4";

/** SPEC.md Section 2, transcribed from the table. */
const TABLE: Record<QType, Record<Mode, [number, number, number | null]>> = {
  int8: { linear: [-128, 127, null], linear_symmetric: [-127, 127, 0] },
  uint8: { linear: [0, 255, null], linear_symmetric: [0, 254, 127] },
  int4: { linear: [-8, 7, null], linear_symmetric: [-7, 7, 0] },
  uint4: { linear: [0, 15, null], linear_symmetric: [0, 14, 7] },
};

export function refRoundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** float16 rounding via a Float16Array store (Deno and Bun have it). */
const f16 = new Float16Array(1);
export function refF16(x: number): number {
  f16[0] = x;
  return f16[0];
}

export interface RefResult {
  q: number[];
  scale: number[];
  zeroPoint: number[];
  scaleShape: number[];
}

/**
 * Quantizes `values` (already decoded numbers) of `shape` with one block size
 * per axis (0 = whole axis), every operation rounded by `r`.
 */
export function refQuantize(
  values: ArrayLike<number>,
  shape: number[],
  blockSizes: number[],
  mode: Mode,
  qtype: QType,
  r: (x: number) => number,
): RefResult {
  const [qmin, qmax, fixed] = TABLE[qtype][mode];
  const sizes = blockSizes.map((b, i) => (b === 0 ? shape[i] : b));
  const scaleShape = shape.map((d, i) => d / sizes[i]);
  const nBlocks = scaleShape.reduce((a, b) => a * b, 1);
  const numel = shape.reduce((a, b) => a * b, 1);
  const blockOf = (flat: number): number => {
    let rest = flat;
    const idx: number[] = [];
    for (let k = shape.length - 1; k >= 0; k--) {
      idx[k] = rest % shape[k];
      rest = Math.floor(rest / shape[k]);
    }
    let b = 0;
    for (let k = 0; k < shape.length; k++) b = b * scaleShape[k] + Math.floor(idx[k] / sizes[k]);
    return b;
  };
  const members: number[][] = Array.from({ length: nBlocks }, () => []);
  const block = new Array<number>(numel);
  for (let i = 0; i < numel; i++) {
    block[i] = blockOf(i);
    members[block[i]].push(values[i]);
  }
  const scale: number[] = [];
  const zeroPoint: number[] = [];
  for (const m of members) {
    let lo = Math.min(...m);
    let hi = Math.max(...m);
    if (mode === "linear_symmetric") {
      const a = Math.max(Math.abs(lo), Math.abs(hi));
      lo = -a;
      hi = a;
    } else {
      lo = Math.min(0, lo);
      hi = Math.max(0, hi);
    }
    let s = r(r(hi - lo) / (qmax - qmin));
    let zp = fixed ?? 0;
    if (fixed === null && hi - lo !== 0) {
      const z = r(r(r(qmin * hi) - r(qmax * lo)) / r(hi - lo));
      zp = Math.min(qmax, Math.max(qmin, refRoundHalfEven(z)));
    }
    if (s === 0) {
      s = 1;
      zp = fixed ?? 0;
    }
    scale.push(s);
    zeroPoint.push(zp);
  }
  const q = new Array<number>(numel);
  for (let i = 0; i < numel; i++) {
    const b = block[i];
    const v = refRoundHalfEven(r(values[i] / scale[b])) + zeroPoint[b];
    q[i] = Math.min(qmax, Math.max(qmin, v));
  }
  return { q, scale, zeroPoint, scaleShape };
}

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
