/**
 * A validated quantization configuration and the options it gives a tensor.
 * Validation (`parseConfig`, src/config.ts) needs zod; using a configuration
 * does not, so the worker threads import this module alone.
 *
 * @module
 */
import { globToRegExp } from "./glob.ts";
import type { QuantizeOptions, ResolvedQuantizeOptions } from "./types.ts";

/** A per-tensor override. */
export interface TensorOverride {
  /** Glob over tensor names (`*` matches dots too). */
  readonly pattern: string;
  /** Options merged over the global ones, or `null` to leave matching tensors alone. */
  readonly options: QuantizeOptions | null;
}

/** A validated configuration. */
export interface QuantizeConfig {
  /** Options for every tensor, defaults filled in. */
  readonly global: ResolvedQuantizeOptions;
  /** Overrides in file order; the last matching one wins. */
  readonly tensors: readonly TensorOverride[];
}

const compiled = new WeakMap<QuantizeConfig, readonly RegExp[]>();

/**
 * The options that apply to a tensor: the global ones, with the last
 * matching override merged over them.
 *
 * @param config A configuration from `parseConfig`.
 * @param name Tensor name.
 * @returns The options, or `null` when an override leaves the tensor alone.
 */
export function optionsFor(config: QuantizeConfig, name: string): ResolvedQuantizeOptions | null {
  let patterns = compiled.get(config);
  if (!patterns) compiled.set(config, patterns = config.tensors.map((t) => globToRegExp(t.pattern)));
  for (let i = config.tensors.length - 1; i >= 0; i--) {
    if (!patterns[i].test(name)) continue;
    const options = config.tensors[i].options;
    return options === null ? null : { ...config.global, ...definedOnly(options) };
  }
  return config.global;
}

function definedOnly(options: QuantizeOptions): QuantizeOptions {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
}
