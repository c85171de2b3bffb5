/**
 * The sparse histogram behind the `percentile` calibration observer.
 *
 * Its bins follow float32's bit layout instead of a range picked from the
 * data: a bin is a float32 bit pattern with its low mantissa bits dropped, so
 * each power of two splits into `2 ** bits` bins. Activations are float32,
 * and every finite float32 falls in exactly one bin whatever came before it,
 * so two shards' histograms merge by adding counts, exactly and in any
 * order. A grid fitted to the data's range would have to be rebinned, and so
 * blurred, whenever a merge or a new sample widened the range. The price is
 * a bin width relative to magnitude (`2 ** -bits` of it) rather than fixed.
 *
 * Internal to `calibration_stats.ts`; its JSON form carries the keys as they
 * are, so they are part of the file format.
 *
 * @module
 */

/** float32 has 23 explicit mantissa bits; a bin keeps the top `bits` of them. */
const MANTISSA_BITS = 23;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A sparse histogram as sorted parallel arrays. */
export interface SortedHistogram {
  /** Bin keys, ascending (ascending keys are ascending values). */
  keys: number[];
  /** Count of values in each bin. */
  counts: number[];
}

/**
 * The shift that drops the mantissa bits a histogram of `bits` resolution does not keep.
 *
 * @param bits Mantissa bits kept, from 1 to 12.
 * @returns The shift to pass to {@linkcode binKey} and friends.
 */
export function binShift(bits: number): number {
  return MANTISSA_BITS - bits;
}

/** The float32 value whose bit pattern is `bits`. */
function fromBits(bits: number): number {
  u32[0] = bits;
  return f32[0];
}

/**
 * The bin of a finite float32 value: its bit pattern without the sign and
 * the low `shift` bits, negated (as `-1 - index`) for negative values so
 * that key order is value order. -0 and +0 share bin 0.
 *
 * @param x A finite float32 value.
 * @param shift From {@linkcode binShift}.
 * @returns The bin key.
 */
export function binKey(x: number, shift: number): number {
  f32[0] = x;
  const idx = (u32[0] & 0x7fffffff) >>> shift;
  return x < 0 ? -1 - idx : idx;
}

/**
 * The value interval `[a, b]` a bin covers.
 *
 * @param key A bin key from {@linkcode binKey}.
 * @param shift The shift the key was made with.
 * @returns The bin's lower and upper bounds.
 */
export function binBounds(key: number, shift: number): [number, number] {
  const idx = key < 0 ? -1 - key : key;
  const lower = fromBits(idx << shift);
  const upper = fromBits(((idx + 1) << shift) >>> 0);
  return key < 0 ? [-upper, -lower] : [lower, upper];
}

/**
 * A sparse histogram's bins in ascending order.
 *
 * @param hist Counts by bin key.
 * @returns The keys, ascending, and their counts.
 */
export function sortedHistogram(hist: Map<number, number>): SortedHistogram {
  const keys = [...hist.keys()].sort((a, b) => a - b);
  return { keys, counts: keys.map((k) => hist.get(k)!) };
}

/**
 * The value at quantile `q` as numpy's default ("linear") percentile: linear
 * interpolation between the values of rank `floor(q * (n - 1))` and the next.
 * The histogram gives each rank's bin; a bin's `c` values are taken to sit at
 * the centres of `c` equal slices of it, each within one bin width of its true
 * value; the smallest and largest are the exact `min` and `max`.
 */
export function histogramQuantile(
  keys: readonly number[],
  counts: readonly number[],
  n: number,
  q: number,
  shift: number,
  min: number,
  max: number,
): number {
  const rank = q * (n - 1);
  const low = Math.floor(rank);
  const high = Math.min(low + 1, n - 1);
  let before = 0;
  let i = 0;
  const valueAt = (k: number): number => {
    if (k === 0) return min; // the extreme ranks are known exactly
    if (k === n - 1) return max;
    while (k >= before + counts[i]) before += counts[i++];
    const [a, b] = binBounds(keys[i], shift);
    if (!Number.isFinite(b - a)) return a; // the bin below float32's largest value reaches Infinity
    return a + ((k - before + 0.5) / counts[i]) * (b - a);
  };
  const x = valueAt(low);
  const y = valueAt(high);
  return x + (rank - low) * (y - x);
}
