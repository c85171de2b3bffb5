/**
 * The `serve` command: the HTTP service ({@linkcode createApp}) on a port.
 *
 * @module
 */
import process from "node:process";
import { parseFlags } from "../_flags.ts";
import { createApp } from "./app.ts";
import { serveApp } from "./serve_app.ts";

const USAGE = `Usage: serve [--port 8787] [--host 127.0.0.1] [--max-body BYTES] [--max-concurrent N]

Serves quantflow over HTTP: POST /v1/quantize, /v1/dequantize, /v1/calibrate,
/v1/inspect and GET /healthz. Stops on SIGINT or SIGTERM.

Options:
      --port PORT           port to listen on, 0 for any free one (default 8787)
      --host HOST           interface to listen on (default 127.0.0.1)
      --max-body BYTES      largest request body (default 2147483648, 2 GiB)
      --max-concurrent N    requests at work at once; more get 503 (default 4)
      --slab-bytes BYTES    slab budget per request (default 1048576)
      --tmp-dir DIR         directory for dequantization's temporary files
  -h, --help                show this help
`;

class UsageError extends Error {}

function integerFlag(
  flag: string,
  value: string | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new UsageError(`--${flag} must be an integer in [${min}, ${max}]; got "${value}"`);
  }
  return n;
}

/**
 * Runs `serve [--port 8787] [--host 127.0.0.1] [--max-body BYTES] [--max-concurrent N]`
 * until SIGINT or SIGTERM, under Deno (`Deno.serve`) or Bun (`Bun.serve`).
 * Prints `quantflow: listening on http://HOST:PORT` to stderr once ready.
 *
 * Under Deno: `deno task serve`, or from a checkout
 * `deno eval 'import { serveCommand } from "./http.ts"; Deno.exit(await serveCommand(["--port", "8787"]))'`.
 * Under Bun, one line from a checkout (after `bun install` or `deno install`, PITFALLS.md 2):
 * `bun -e 'import { serveCommand } from "./http.ts"; process.exit(await serveCommand(["--port", "8787"]))'`
 *
 * @param args Command-line arguments after the command name.
 * @returns The exit code: 0 after a clean shutdown, 1 when the server cannot start, 2 on bad usage.
 */
export async function serveCommand(args: string[]): Promise<number> {
  let options;
  try {
    const { values: v, positionals } = parseFlags(args, {
      port: { type: "string" },
      host: { type: "string" },
      "max-body": { type: "string" },
      "max-concurrent": { type: "string" },
      "slab-bytes": { type: "string" },
      "tmp-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (positionals.length) throw new Error(`serve takes no arguments, got "${positionals[0]}"`);
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    options = {
      port: integerFlag("port", v.port, 0, 65535) ?? 8787,
      hostname: v.host ?? "127.0.0.1",
      maxBodyBytes: integerFlag("max-body", v["max-body"], 1),
      maxConcurrent: integerFlag("max-concurrent", v["max-concurrent"], 1),
      slabBytes: integerFlag("slab-bytes", v["slab-bytes"], 1),
      tmpDir: v["tmp-dir"],
    };
  } catch (error) {
    console.error(`serve: ${(error as Error).message.split("\n")[0]}\nTry "serve --help".`);
    return 2;
  }
  try {
    const { port, hostname, ...appOptions } = options;
    const app = createApp(appOptions);
    const server = await serveApp(app.fetch, { port, hostname });
    console.error(`quantflow: listening on ${server.url}`);
    const stop = () => void server.shutdown();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    await server.finished;
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
    return 0;
  } catch (error) {
    console.error(`serve: ${String((error as Error)?.message ?? error).replaceAll("\n", " ")}`);
    return 1;
  }
}
