/**
 * Quantizing and dequantizing one activation sample with stored parameters
 * (SPEC.md Sections 1 and 6): the kernels of the activation streams.
 *
 * @module
 */
import type { ActivationDType, ActivationParams } from "./activation_params.ts";
import { type ActivationSample, checkActivationSample } from "./calibration_stats.ts";
import { NonFiniteError } from "./errors.ts";
import { roundHalfEven } from "./float16.ts";
import { fullRange } from "./ranges.ts";

/** One quantized activation sample, carrying what dequantizing it needs. */
export interface QuantizedActivation {
  /** Activation name. */
  readonly name: string;
  /** Integer type of `data`. */
  readonly dtype: ActivationDType;
  /** Quantized values: `Int8Array` for int8, `Uint8Array` for uint8. */
  readonly data: Int8Array | Uint8Array;
  /** Scale (a float32 value). */
  readonly scale: number;
  /** Zero point. */
  readonly zeroPoint: number;
}

/**
 * Quantizes one activation sample:
 * `q = clip(roundHalfEven(fround(x / scale)) + zeroPoint, qmin, qmax)`, where
 * `[qmin, qmax]` is the dtype's FULL range ([-128, 127] for int8) whatever the
 * mode (SPEC.md Section 6), so a value below the calibrated range can reach
 * -128. `x` and `scale` are float32; the division is done in float64 and
 * rounded once to float32, which is the correctly rounded float32 quotient
 * (float64 holds more than twice float32's precision), as numpy computes it.
 *
 * @param sample The activation's name and float32 values (a `number[]` is rounded to float32 first).
 * @param params Its stored parameters.
 * @param sampleIndex Position of the sample in its stream, for error messages.
 * @returns The quantized sample.
 * @throws {NonFiniteError} On NaN or an infinity, naming the activation, sample and element.
 * @throws {TypeError} When the sample is malformed.
 *
 * @example
 * ```ts
 * import { activationParams, dequantizeActivation, quantizeActivation } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const params = activationParams("x", -1, 1); // scale = float16(2 / 254)
 * const q = quantizeActivation({ name: "x", data: [0.5, 1, -1.5] }, params);
 * assert.deepEqual([...q.data], [64, 127, -128]); // -1.5 is beyond the range: clipped to -128, not -127
 * assert.equal(dequantizeActivation(q).data[2], Math.fround(params.scale * -128));
 * ```
 */
export function quantizeActivation(
  sample: ActivationSample,
  params: ActivationParams,
  sampleIndex?: number,
): QuantizedActivation {
  const { name, data: x } = checkActivationSample(sample, sampleIndex);
  const { dtype, scale, zeroPoint } = params;
  const [qmin, qmax] = fullRange(dtype);
  const data = dtype === "int8" ? new Int8Array(x.length) : new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v - v !== 0) {
      const where = sampleIndex === undefined ? "activation sample" : `activation sample ${sampleIndex}`;
      throw new NonFiniteError(name, `${where}, element ${i} is ${v}`, "activation");
    }
    const q = roundHalfEven(Math.fround(v / scale)) + zeroPoint;
    data[i] = q < qmin ? qmin : q > qmax ? qmax : q;
  }
  return { name, dtype, data, scale, zeroPoint };
}

/**
 * Dequantizes one activation sample: `x = scale * (q - zeroPoint)` in float32
 * (the float64 product of a float32 scale and a small integer, rounded once).
 *
 * @param quantized A quantized sample.
 * @returns The activation's name and float32 values.
 */
export function dequantizeActivation(quantized: QuantizedActivation): ActivationSample<Float32Array> {
  const { name, data: q, scale, zeroPoint } = quantized;
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = scale * (q[i] - zeroPoint);
  return { name, data: out };
}
