/**
 * Starting an HTTP server on whichever runtime is running: `Deno.serve`
 * under Deno, `Bun.serve` under Bun.
 *
 * @module
 */

/** Options of {@linkcode serveApp}. */
export interface ServeAppOptions {
  /**
   * Port to listen on; 0 picks a free one (read it from the result).
   * @default {8787}
   */
  port?: number;
  /**
   * Interface to listen on; loopback unless asked otherwise.
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The runtime's own cap on request bodies (Bun only; Deno has none). Bun
   * answers bodies over it with a bare 413 before the app sees them, and caps
   * them at 128 MiB unless told otherwise; the default leaves the limit to the
   * app, whose `maxBodyBytes` answers with a JSON error.
   * @default {Number.MAX_SAFE_INTEGER}
   */
  maxRequestBodySize?: number;
}

/** A running server. */
export interface RunningServer {
  /** The port it listens on. */
  readonly port: number;
  /** The interface it listens on. */
  readonly hostname: string;
  /** `http://hostname:port` */
  readonly url: string;
  /** Which runtime serves. */
  readonly runtime: "deno" | "bun";
  /** Stops accepting connections and resolves once the server has closed. */
  shutdown(): Promise<void>;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;
}

/** The slice of `Bun.serve` used here (Bun's types are not available to `deno check`). */
interface BunServer {
  readonly port: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}
interface BunGlobal {
  serve(options: {
    port: number;
    hostname: string;
    fetch: (request: Request) => Response | Promise<Response>;
    maxRequestBodySize: number;
    idleTimeout: number;
  }): BunServer;
}

/**
 * Serves `fetch` (e.g. a Hono app's `app.fetch`) on the current runtime.
 *
 * @param fetch The request handler; under Deno its second argument is `Deno.serve`'s handler info.
 * @param options Port, interface and body cap.
 * @returns The running server, once it listens.
 * @throws {Error} On a runtime that is neither Deno nor Bun.
 *
 * @example
 * ```ts
 * import { createApp, serveApp } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 *
 * const server = await serveApp(createApp().fetch, { port: 0 });
 * const res = await fetch(`${server.url}/healthz`);
 * assert.equal(res.status, 200);
 * await res.body?.cancel();
 * await server.shutdown();
 * ```
 */
export async function serveApp(
  fetch: (request: Request, env?: unknown) => Response | Promise<Response>,
  options: ServeAppOptions = {},
): Promise<RunningServer> {
  const port = options.port ?? 8787;
  const hostname = options.hostname ?? "127.0.0.1";
  const maxRequestBodySize = options.maxRequestBodySize ?? Number.MAX_SAFE_INTEGER;
  const bun = (globalThis as { Bun?: BunGlobal }).Bun;
  const url = (p: number) => `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${p}`;
  if (bun) {
    const server = bun.serve({
      port,
      hostname,
      fetch: (request) => fetch(request),
      maxRequestBodySize,
      // Bun closes a connection silent for 10 s by default; a two-pass tensor
      // being spooled can keep a response silent longer. 255 is Bun's maximum.
      idleTimeout: 255,
    });
    let done!: () => void;
    const finished = new Promise<void>((resolve) => done = resolve);
    return {
      port: server.port,
      hostname,
      url: url(server.port),
      runtime: "bun",
      async shutdown() {
        await server.stop(true);
        done();
      },
      finished,
    };
  }
  if (typeof Deno !== "undefined" && typeof Deno.serve === "function") {
    let listening!: (p: number) => void;
    const ready = new Promise<number>((resolve) => listening = resolve);
    // The handler info goes on as Hono's env: its `completed` promise tells a client's disconnect.
    const server = Deno.serve(
      { port, hostname, onListen: ({ port }) => listening(port) },
      (request, info) => fetch(request, info),
    );
    const actual = await ready;
    return {
      port: actual,
      hostname,
      url: url(actual),
      runtime: "deno",
      async shutdown() {
        await server.shutdown();
      },
      finished: server.finished,
    };
  }
  throw new Error("serveApp needs Deno or Bun (for Node, use @hono/node-server with createApp().fetch)");
}
