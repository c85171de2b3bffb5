/**
 * The command line's arguments, its exit code and standard error, from Deno's
 * own API in Deno: there `process` (global or from `node:process`) starts
 * Node's compatibility layer, ~35 ms of every command's start
 * (bench/RESULTS.md, Addendum 11). Elsewhere (Bun, Node), `process`.
 *
 * @module
 */

/** Standard error: text, and whether it is a terminal (a progress bar draws only there). */
export interface StandardError {
  /** Whether it is a terminal. */
  readonly isTTY?: boolean;
  /** Writes text. */
  write(text: string): unknown;
}

const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** The arguments after the program's name. */
export function commandArgs(): string[] {
  return deno ? [...deno.args] : process.argv.slice(2);
}

/** Sets the exit code the process ends with. */
export function setExitCode(code: number): void {
  if (deno) deno.exitCode = code;
  else process.exitCode = code;
}

/** Standard error. */
export function standardError(): StandardError {
  if (!deno) return process.stderr;
  const encoder = new TextEncoder();
  const stderr = deno.stderr;
  return {
    isTTY: stderr.isTerminal(),
    write(text: string) {
      const bytes = encoder.encode(text);
      for (let done = 0; done < bytes.length;) done += stderr.writeSync(bytes.subarray(done));
    },
  };
}
