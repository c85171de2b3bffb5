/**
 * The options every quantization job shares, checked once with their
 * defaults, for the stream and the file jobs alike.
 *
 * @module
 */

/** The checked options. */
export interface JobOptions {
  /** Web Workers besides this thread. */
  readonly workers: number;
  /** Whether the report measures the error. */
  readonly errorStats: boolean;
}

/**
 * Checks `workers` and `errorStats` and fills in their defaults (0, true).
 *
 * @param options The caller's options.
 * @returns The options, checked.
 * @throws {RangeError} When `workers` is not a non-negative integer.
 * @throws {TypeError} When `errorStats` is not a boolean.
 */
export function jobOptions(options: { workers?: number; errorStats?: boolean }): JobOptions {
  const { workers = 0, errorStats = true } = options;
  if (!Number.isInteger(workers) || workers < 0) {
    throw new RangeError(`workers must be a non-negative integer, got ${workers}`);
  }
  if (typeof errorStats !== "boolean") throw new TypeError(`errorStats must be a boolean, got ${errorStats}`);
  return { workers, errorStats };
}
