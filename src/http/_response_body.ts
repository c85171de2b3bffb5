/**
 * Response bodies that report when they are over: finished, failed, or
 * cancelled by a client that went away.
 *
 * @module
 */

/** Options of {@linkcode settledBody}. */
export interface SettledBodyOptions {
  /**
   * Called once when the body is over, however it ends: read to the end,
   * errored, cancelled, or `signal` aborted. Runs after the source has been
   * cancelled, so the work behind it has stopped.
   */
  onSettled: (outcome: "done" | "error" | "cancel", reason?: unknown) => void;
  /**
   * The request's signal: when the client disconnects, the source is
   * cancelled even if the runtime never cancels the body.
   * @default {undefined}
   */
  signal?: AbortSignal;
  /**
   * Chunks already read from the source (see {@linkcode readFirst}), sent first.
   * @default {[]}
   */
  head?: readonly Uint8Array[];
  /**
   * Cancel the body when the runtime has not asked for more for this long
   * after a chunk: a client that stopped reading, or one that left without
   * the runtime noticing (seen with Bun 1.4, which then neither pulls nor
   * cancels the body nor aborts the request's signal).
   * @default {undefined} (no limit)
   */
  stallMs?: number;
}

/**
 * Wraps a byte stream as a response body: pull-based, so the source does
 * work only as the client reads; an error of the source errors the body
 * (the runtime then resets the connection, so no truncated file ever looks
 * complete); cancelling the body cancels the source.
 *
 * @param source The bytes to send.
 * @param options The end callback, the request's signal and any chunks read ahead.
 * @returns The body.
 */
export function settledBody(
  source: ReadableStream<Uint8Array>,
  options: SettledBodyOptions,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  const head = [...(options.head ?? [])];
  const signal = options.signal;
  let settled = false;
  const settle = (outcome: "done" | "error" | "cancel", reason?: unknown) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    options.onSettled(outcome, reason);
  };
  const cancel = async (reason: unknown) => {
    if (settled) return;
    try {
      await reader.cancel(reason);
    } catch { /* the source failed while stopping: it is stopped all the same */ }
    settle("cancel", reason);
  };
  const onAbort = () => void cancel(signal?.reason);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const watch = () => {
    if (options.stallMs === undefined || settled) return;
    timer = setTimeout(
      () => void cancel(new Error(`response stalled: not read for ${options.stallMs} ms`)),
      options.stallMs,
    );
    // A stalled response must not keep a process alive on its own.
    (timer as { unref?: () => void }).unref?.();
  };
  if (signal?.aborted) void cancel(signal.reason);
  else signal?.addEventListener("abort", onAbort, { once: true });
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      clearTimeout(timer);
      if (head.length) {
        controller.enqueue(head.shift()!);
        return watch();
      }
      try {
        const { done, value } = await reader.read();
        if (done) {
          settle("done");
          controller.close();
        } else {
          controller.enqueue(value);
          watch();
        }
      } catch (error) {
        settle("error", error);
        controller.error(error);
      }
    },
    cancel,
  }, { highWaterMark: 0 });
}

/**
 * Reads a stream's first chunk (or ends), so that errors found at its start
 * are raised before any response is committed. The stream stays readable:
 * pass the chunk as `head` to {@linkcode settledBody}.
 *
 * @param source The stream.
 * @returns The chunks read (zero or one).
 * @throws The stream's error, after which the stream is released.
 */
export async function readFirst(source: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const reader = source.getReader();
  try {
    const { done, value } = await reader.read();
    return done ? [] : [value];
  } finally {
    reader.releaseLock();
  }
}
