/**
 * The two media types the service speaks, and choosing between them from
 * `Content-Type` and `Accept`.
 *
 * @module
 */

/** A safetensors file. */
export const SAFETENSORS_MEDIA_TYPE = "application/octet-stream";
/** An Arrow IPC stream (quantflow's slab layout, or calibration samples). */
export const ARROW_STREAM_MEDIA_TYPE = "application/vnd.apache.arrow.stream";

/**
 * The essence of a media type header, lower-cased and without parameters.
 *
 * @param header A `Content-Type` value, or `null` when absent.
 * @returns E.g. `application/octet-stream` for `Application/Octet-Stream; q=1`, or `undefined` when absent or empty.
 *
 * @example
 * ```ts
 * import { mediaTypeOf } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 * assert.equal(mediaTypeOf("Application/Octet-Stream; charset=x"), "application/octet-stream");
 * ```
 */
export function mediaTypeOf(header: string | null): string | undefined {
  const essence = header?.split(";", 1)[0].trim().toLowerCase();
  return essence || undefined;
}

/**
 * Picks the offered media type the client prefers (RFC 9110 `Accept`, with
 * `q` weights and `type/*` and `*\/*` ranges; the most specific matching
 * range sets a type's weight). Ties go to `fallback`, then to the order of
 * `offered`.
 *
 * @param accept The `Accept` header, or `null` when absent (anything goes).
 * @param offered The types the endpoint can produce.
 * @param fallback The type to use when the client has no preference.
 * @returns The chosen type, or `undefined` when the client accepts none of them (answer 406).
 *
 * @example
 * ```ts
 * import { negotiateMediaType } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 * const offered = ["application/octet-stream", "application/vnd.apache.arrow.stream"];
 * assert.equal(negotiateMediaType(null, offered, offered[1]), offered[1]);
 * assert.equal(negotiateMediaType("application/*;q=0.5, application/octet-stream", offered, offered[1]), offered[0]);
 * assert.equal(negotiateMediaType("text/html", offered, offered[0]), undefined);
 * ```
 */
export function negotiateMediaType(
  accept: string | null,
  offered: readonly string[],
  fallback: string,
): string | undefined {
  if (accept === null || accept.trim() === "") return fallback;
  const ranges = accept.split(",").map((part) => {
    const [range, ...params] = part.split(";").map((s) => s.trim().toLowerCase());
    const q = params.find((p) => p.startsWith("q="));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    return { range, weight: Number.isFinite(weight) ? Math.min(Math.max(weight, 0), 1) : 0 };
  }).filter((r) => r.range !== "");
  const weightOf = (type: string): number => {
    let best = -1;
    let weight = 0;
    for (const { range, weight: w } of ranges) {
      const specificity = range === type ? 2 : range === `${type.split("/")[0]}/*` ? 1 : range === "*/*" ? 0 : -1;
      if (specificity > best) [best, weight] = [specificity, w];
    }
    return weight;
  };
  const candidates = [fallback, ...offered.filter((t) => t !== fallback)];
  let chosen: string | undefined;
  let chosenWeight = 0;
  for (const type of candidates) {
    const w = weightOf(type);
    if (w > chosenWeight) [chosen, chosenWeight] = [type, w];
  }
  return chosen;
}
