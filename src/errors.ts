/**
 * Error classes a caller may want to catch, one per kind of failure.
 * Bad arguments use the built-in `RangeError` and `TypeError`.
 *
 * @module
 */

/** A tensor holds NaN or an infinity where it must be quantized (SPEC.md Section 3). */
export class NonFiniteError extends Error {
  /** The tensor's name. */
  readonly tensor: string;
  /**
   * Creates the error for a tensor.
   *
   * @param tensor Name of the tensor.
   * @param detail What was found and where.
   */
  constructor(tensor: string, detail: string) {
    super(`Cannot quantize tensor "${tensor}": ${detail}`);
    this.name = "NonFiniteError";
    this.tensor = tensor;
  }
}

/**
 * Computing a scale or zero point overflowed the weight's float type
 * (SPEC.md Section 4): in float16, `qmin * hi` exceeds 65504 for weights above
 * 511 in `linear` mode. Never silently emitted as garbage.
 */
export class Float16OverflowError extends Error {
  /** The tensor's name. */
  readonly tensor: string;
  /**
   * Creates the error for a tensor.
   *
   * @param tensor Name of the tensor.
   * @param detail Which intermediate overflowed, with its operands.
   */
  constructor(tensor: string, detail: string) {
    super(
      `Cannot quantize float16 tensor "${tensor}": ${detail} overflows float16 (max 65504); ` +
        `use mode "linear_symmetric" or a float32 source`,
    );
    this.name = "Float16OverflowError";
    this.tensor = tensor;
  }
}

/** A file or stream is not valid in its format (safetensors, Arrow IPC, config). */
export class FormatError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong and where (byte positions, tensor names).
   * @param options `cause` of the failure, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FormatError";
  }
}

/** A configuration failed validation; `issues` lists every problem with its path. */
export class ConfigError extends Error {
  /** Each problem as `path: message`. */
  readonly issues: readonly string[];
  /**
   * Creates the error from its list of problems.
   *
   * @param issues Each problem as `path: message`.
   */
  constructor(issues: readonly string[]) {
    super(`Invalid configuration: ${issues.join("; ")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}
