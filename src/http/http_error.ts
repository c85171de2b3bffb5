/**
 * HTTP errors and their JSON bodies: every failure the service answers
 * becomes `{ error: { status, message, issues? } }` with a status chosen
 * from the error's class, so bad input is never answered with a 500.
 *
 * @module
 */
import { ConfigError, Float16OverflowError, FormatError, NonFiniteError } from "../errors.ts";
import { BodyTooLargeError } from "./byte_limit_stream.ts";

/** A failure with the HTTP status to answer it with. */
export class HttpError extends Error {
  /** The HTTP status code, e.g. 415. */
  readonly status: number;
  /** Each problem as `path: message`, when the failure is a validation. */
  readonly issues: readonly string[] | undefined;
  /** Extra response headers, e.g. `Retry-After` on a 503. */
  readonly headers: Readonly<Record<string, string>>;

  /**
   * Creates the error.
   *
   * @param status HTTP status code (4xx or 5xx).
   * @param message What failed and the value seen.
   * @param options Validation issues, extra headers and the `cause`.
   */
  constructor(
    status: number,
    message: string,
    options: { issues?: readonly string[]; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.issues = options.issues;
    this.headers = options.headers ?? {};
  }
}

/** The JSON body of an error response. */
export interface ErrorBody {
  /** The error. */
  readonly error: {
    /** The HTTP status code, repeated for clients that only keep the body. */
    readonly status: number;
    /** What failed. */
    readonly message: string;
    /** Each problem as `path: message`, for validation failures. */
    readonly issues?: readonly string[];
  };
}

/** How an error is answered. */
export interface ErrorAnswer {
  /** HTTP status code. */
  readonly status: number;
  /** The JSON body. */
  readonly body: ErrorBody;
  /** Extra headers. */
  readonly headers: Readonly<Record<string, string>>;
  /** Whether the error is ours rather than the client's (a 5xx, worth logging). */
  readonly internal: boolean;
}

/**
 * Chooses the status and body for an error: 400 for a bad configuration,
 * 413 for a body over the limit, 422 for a malformed body or data that cannot
 * be quantized, the status of an {@linkcode HttpError}, and 500 (with a
 * generic message, not the internal one) for anything else.
 *
 * @param error What was thrown.
 * @returns The answer.
 *
 * @example
 * ```ts
 * import { errorAnswer } from "@quantflow/quantflow/http";
 * import { FormatError } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * assert.equal(errorAnswer(new FormatError("bad header")).status, 422);
 * assert.equal(errorAnswer(new Error("bug")).body.error.message, "Internal server error");
 * ```
 */
export function errorAnswer(error: unknown): ErrorAnswer {
  const answer = (status: number, message: string, issues?: readonly string[], headers = {}): ErrorAnswer => ({
    status,
    body: { error: issues ? { status, message, issues } : { status, message } },
    headers,
    internal: status >= 500,
  });
  if (error instanceof HttpError) return answer(error.status, error.message, error.issues, error.headers);
  if (error instanceof ConfigError) return answer(400, error.message, error.issues);
  if (error instanceof BodyTooLargeError) return answer(413, error.message);
  // A malformed file, or values SPEC.md forbids quantizing: the request can be fixed, the server is fine.
  if (error instanceof FormatError || error instanceof NonFiniteError || error instanceof Float16OverflowError) {
    return answer(422, error.message);
  }
  return answer(500, "Internal server error");
}

/**
 * The response for an error, JSON as {@linkcode errorAnswer} decides.
 *
 * @param error What was thrown.
 * @returns A JSON response with the status and any extra headers.
 */
export function errorResponse(error: unknown): Response {
  const { status, body, headers } = errorAnswer(error);
  return Response.json(body, { status, headers: { "cache-control": "no-store", ...headers } });
}
