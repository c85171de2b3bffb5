/**
 * Error classes a caller may want to catch, one per kind of failure.
 * Bad arguments use the built-in `RangeError` and `TypeError`.
 *
 * @module
 */

/** A tensor or activation holds NaN or an infinity where it must be quantized (SPEC.md Section 3). */
export class NonFiniteError extends Error {
  /** The tensor's (or activation's) name. */
  readonly tensor: string;
  /**
   * Creates the error for a tensor or an activation.
   *
   * @param tensor Name of the tensor or activation.
   * @param detail What was found and where.
   * @param subject What is named: a weight `tensor`, or an `activation`.
   */
  constructor(tensor: string, detail: string, subject: "tensor" | "activation" = "tensor") {
    super(`Cannot quantize ${subject} "${tensor}": ${detail}`);
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
   * Creates the error for a tensor or an activation.
   *
   * @param tensor Name of the tensor or activation.
   * @param detail Which intermediate overflowed, with its operands.
   * @param subject A float16 weight `tensor`, or an `activation` (whose parameters Core ML Tools computes in float16).
   * @param mode The mode that overflowed: `linear_symmetric` is the way out only from `linear`.
   */
  constructor(
    tensor: string,
    detail: string,
    subject: "tensor" | "activation" = "tensor",
    mode: "linear" | "linear_symmetric" = "linear",
  ) {
    const symmetric = mode === "linear_symmetric";
    super(
      subject === "tensor"
        ? `Cannot quantize float16 tensor "${tensor}": ${detail} overflows float16 (max 65504); ` +
          (symmetric ? "use a float32 source" : `use mode "linear_symmetric" or a float32 source`)
        : `Cannot quantize activation "${tensor}": ${detail} overflows float16 (max 65504), in which Core ML Tools ` +
          (symmetric
            ? "computes activation parameters; the calibrated range must stay within ±32752"
            : `computes activation parameters; use mode "linear_symmetric"`),
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
