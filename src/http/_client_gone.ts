/**
 * Knowing that a client went away while its response streams, on each
 * runtime: neither one reliably cancels a response body whose client
 * disconnected (Bun 1.4 sometimes just stops pulling it, holding the work
 * and its concurrency slot forever).
 *
 * @module
 */

/**
 * A signal that aborts when the client of `request` disconnects before its
 * response is fully sent.
 *
 * - Deno: `Deno.serve` passes its handler info (as Hono's `env`), whose
 *   `completed` promise rejects on such a disconnect. `request.signal` is no
 *   use there: Deno also aborts it after every successful response (its
 *   legacy mode) and warns when it is listened to.
 * - Bun: `request.signal` aborts only on a disconnect.
 * - Elsewhere (e.g. `app.request()` in tests): none.
 *
 * @param request The request.
 * @param env What the server passed as the second argument of `fetch` (Hono's `c.env`).
 * @returns The signal, or `undefined` when the runtime gives no way to know.
 */
export function clientGoneSignal(request: Request, env: unknown): AbortSignal | undefined {
  const completed = (env as { completed?: unknown } | undefined)?.completed;
  if (completed instanceof Promise) {
    const controller = new AbortController();
    completed.catch((reason) => controller.abort(reason));
    return controller.signal;
  }
  if (typeof (globalThis as { Bun?: unknown }).Bun !== "undefined") return request.signal;
  return undefined;
}
