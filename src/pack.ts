/**
 * 4-bit packing (SPEC.md Section 5): two values per byte, least significant
 * nibble first; an odd count leaves the last high nibble 0.
 *
 * @module
 */

/**
 * Packs 4-bit values two to a byte.
 *
 * @param values int4 values in [-8, 7] or uint4 values in [0, 15].
 * @returns `ceil(values.length / 2)` bytes: element 2k in bits 0-3 of byte k, element 2k+1 in bits 4-7.
 *
 * @example
 * ```ts
 * import { packInt4 } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(packInt4(new Int8Array([1, -1, 7])), new Uint8Array([0xf1, 0x07]));
 * ```
 */
export function packInt4(values: Int8Array | Uint8Array): Uint8Array {
  const out = new Uint8Array((values.length + 1) >> 1);
  const pairs = values.length >> 1;
  for (let k = 0; k < pairs; k++) out[k] = (values[2 * k] & 0xf) | ((values[2 * k + 1] & 0xf) << 4);
  if (values.length & 1) out[pairs] = values[values.length - 1] & 0xf;
  return out;
}

/**
 * Unpacks 4-bit values packed by {@linkcode packInt4}.
 *
 * @param packed Packed bytes.
 * @param count Number of values.
 * @param signed Whether the values are int4 (sign-extended) or uint4.
 * @param into Where to write them (reused memory): an `Int8Array` for int4, a `Uint8Array` for uint4, at least
 *   `count` long; fresh memory when omitted.
 * @returns One value per element (a view of `into` when given).
 * @throws {RangeError} When `packed` is too short for `count` values.
 * @throws {TypeError} When `into` is too short or of the other signedness.
 *
 * @example
 * ```ts
 * import { unpackInt4 } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(unpackInt4(new Uint8Array([0xf1, 0x07]), 3, true), new Int8Array([1, -1, 7]));
 * ```
 */
export function unpackInt4(
  packed: Uint8Array,
  count: number,
  signed: boolean,
  into?: Int8Array | Uint8Array,
): Int8Array | Uint8Array {
  if (packed.length < (count + 1) >> 1) {
    throw new RangeError(`Cannot unpack ${count} 4-bit values from ${packed.length} bytes`);
  }
  if (into && (into.length < count || (into instanceof Int8Array) !== signed)) {
    throw new TypeError(`unpackInt4 needs ${count} ${signed ? "Int8Array" : "Uint8Array"} values to write into`);
  }
  const out = into ? into.subarray(0, count) : signed ? new Int8Array(count) : new Uint8Array(count);
  // Sign-extend a nibble by moving it to the top of a 32-bit word and shifting back.
  const shift = signed ? 28 : 0;
  for (let i = 0; i < count; i++) {
    const nibble = (packed[i >> 1] >> ((i & 1) << 2)) & 0xf;
    out[i] = (nibble << shift) >> shift;
  }
  return out;
}
