/**
 * A `{ writable, readable }` pair whose output is pulled from an async
 * generator over the input: work happens only when the consumer reads, so one
 * input chunk may produce many outputs without any piling up in a queue.
 * Cancelling the readable ends the generator (its `finally` blocks run) and
 * cancels the input; an error in the generator errors the readable and
 * cancels the input.
 *
 * A generator's step (from one output to the next) may consume many inputs,
 * and `return()` waits for the step under way: the generator should stop at
 * its next input once `signal` is aborted, which a cancel does first.
 *
 * @param transform Consumes the input stream, yields outputs; `signal` says the readable was cancelled.
 * @returns The pair, usable with `pipeThrough`.
 */
export function pullTransform<I, O>(
  transform: (input: ReadableStream<I>, signal: AbortSignal) => AsyncGenerator<O>,
): { writable: WritableStream<I>; readable: ReadableStream<O> } {
  // An identity TransformStream turns the writable side into a readable the generator consumes.
  const { writable, readable: input } = new TransformStream<I, I>();
  const cancelled = new AbortController();
  let outputs: AsyncGenerator<O> | undefined;
  const readable = new ReadableStream<O>({
    async pull(controller) {
      outputs ??= transform(input, cancelled.signal);
      const { done, value } = await outputs.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel(reason) {
      cancelled.abort(reason);
      if (outputs) await outputs.return(undefined);
      await input.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  return { writable, readable };
}
