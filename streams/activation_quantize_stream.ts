/**
 * Activations to int8 (or uint8) and back, with stored parameters, as streams.
 *
 * @module
 */
import { type ActivationParams, indexActivationParams } from "../src/activation_params.ts";
import { dequantizeActivation, quantizeActivation, type QuantizedActivation } from "../src/activation_quantize.ts";
import type { ActivationSample } from "../src/calibration_stats.ts";

/** Options of {@linkcode QuantizeActivationsStream}. */
export interface QuantizeActivationsStreamOptions {
  /**
   * What to do with a sample whose name has no parameters: `error` fails the
   * stream naming it; `drop` leaves it out of the output.
   * @default {"error"}
   */
  unknown?: "error" | "drop";
}

/**
 * Quantizes `{ name, data }` activation samples with the parameters stored
 * for their name (SPEC.md Section 6): `q = clip(round(x / scale) + zp)` with
 * the division rounded to float32, ties to even, and clipping to the dtype's
 * FULL range ([-128, 127] for int8, also in `linear_symmetric` mode).
 *
 * @example
 * ```ts
 * import { activationParams, DequantizeActivationsStream, QuantizeActivationsStream } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const params = [activationParams("x", 0, 2, { mode: "linear" })];
 * const out = await Array.fromAsync(
 *   ReadableStream.from([{ name: "x", data: [0, 1, 2, -1] }])
 *     .pipeThrough(new QuantizeActivationsStream(params))
 *     .pipeThrough(new DequantizeActivationsStream()),
 * );
 * assert.ok(Math.abs(out[0].data[1] - 1) < 0.005);
 * assert.equal(out[0].data[3], 0); // below the calibrated range: clipped to -128, the zero point
 * ```
 */
export class QuantizeActivationsStream extends TransformStream<ActivationSample, QuantizedActivation> {
  /**
   * Creates the stream; the parameters are checked at once.
   *
   * @param params Stored parameters, one entry per activation name.
   * @param options What to do with unknown names.
   * @throws {TypeError} When `params` is malformed.
   * @throws {RangeError} When names repeat, a value is out of range, or an option is unknown.
   */
  constructor(params: Iterable<ActivationParams>, options: QuantizeActivationsStreamOptions = {}) {
    const byName = indexActivationParams(params);
    const { unknown = "error" } = options;
    if (unknown !== "error" && unknown !== "drop") {
      throw new RangeError(`unknown must be "error" or "drop", got ${JSON.stringify(unknown)}`);
    }
    let index = 0;
    super({
      transform(sample, controller) {
        const i = index++;
        const name = (sample as { name?: unknown } | null)?.name;
        const p = typeof name === "string" ? byName.get(name) : undefined;
        if (!p && typeof name === "string" && name !== "") {
          if (unknown === "drop") return;
          throw new RangeError(`Activation sample ${i} ("${name}"): no quantization parameters for this name`);
        }
        // A missing or mistyped name reaches quantizeActivation, which names the problem.
        controller.enqueue(quantizeActivation(sample, p!, i));
      },
    });
  }
}

/**
 * Dequantizes the output of {@linkcode QuantizeActivationsStream}:
 * `x = scale * (q - zp)` in float32, with the scale and zero point each
 * quantized sample carries.
 */
export class DequantizeActivationsStream extends TransformStream<QuantizedActivation, ActivationSample<Float32Array>> {
  /** Takes no options: every quantized sample carries its parameters. */
  constructor() {
    super({
      transform(quantized, controller) {
        controller.enqueue(dequantizeActivation(quantized));
      },
    });
  }
}
