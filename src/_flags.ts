/**
 * Command-line flags for the CLI's commands: `--name value`, `--name=value`,
 * `-o value`, booleans as `--name`, anything else positional, `--` ending
 * the flags; negative numbers are values (`--axis -1`). Not `node:util`'s `parseArgs`: in Deno that import alone took
 * ~17 ms of every command's start (bench/RESULTS.md, Addendum 11).
 *
 * @module
 */

/**
 * A flag: a string value or a switch, with an optional one-letter form (`short: "o"` for `-o`); a string flag that
 * is `multiple` may be given again, each value kept in order.
 */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
}

/** The values of the flags given: strings (arrays of them for `multiple` flags), or `true` for switches. */
export type FlagValues<S extends Record<string, FlagSpec>> = {
  -readonly [K in keyof S]?: {
    string: S[K]["multiple"] extends true ? string[] : string;
    boolean: boolean;
  }[S[K]["type"]];
};

/** A command line the flags do not allow: bad usage. */
export class FlagError extends Error {
  override name = "FlagError";
}

/**
 * Parses a command's arguments.
 *
 * A string flag takes the next argument as its value unless that is a flag
 * itself or `--` (`-1` is a value). A flag given twice keeps its last value, unless it is `multiple`.
 *
 * @param args The arguments after the command.
 * @param spec The flags the command takes, by long name.
 * @returns The flags' values and the positional arguments, in order.
 * @throws {FlagError} For an unknown flag, a string flag without a value, or a switch given one.
 */
export function parseFlags<S extends Record<string, FlagSpec>>(
  args: readonly string[],
  spec: S,
): { values: FlagValues<S>; positionals: string[] } {
  const values: Record<string, string | string[] | boolean> = {};
  const positionals: string[] = [];
  const byShort = new Map(Object.entries(spec).flatMap(([name, f]) => f.short ? [[f.short, name]] : []));
  const isFlag = (arg: string | undefined) => arg !== undefined && /^-(-.|[^-\d.])/.test(arg);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (!isFlag(arg)) {
      positionals.push(arg);
      continue;
    }
    // --name, --name=value, -o, -ovalue
    const long = arg.startsWith("--");
    const eq = long ? arg.indexOf("=") : -1;
    const name = long ? arg.slice(2, eq < 0 ? undefined : eq) : byShort.get(arg[1]);
    const inline = long ? (eq < 0 ? undefined : arg.slice(eq + 1)) : (arg.length > 2 ? arg.slice(2) : undefined);
    const flag = name === undefined || !Object.hasOwn(spec, name) ? undefined : spec[name];
    if (!flag) throw new FlagError(`unknown option ${long ? arg.slice(0, eq < 0 ? undefined : eq) : arg.slice(0, 2)}`);
    const shown = long ? `--${name}` : `-${arg[1]}`;
    if (flag.type === "boolean") {
      if (inline !== undefined) throw new FlagError(`${shown} takes no value, got "${inline}"`);
      values[name!] = true;
      continue;
    }
    let value = inline;
    if (value === undefined && i + 1 < args.length && !isFlag(args[i + 1]) && args[i + 1] !== "--") value = args[++i];
    if (value === undefined) throw new FlagError(`${shown} needs a value`);
    values[name!] = flag.multiple ? [...(values[name!] as string[] | undefined ?? []), value] : value;
  }
  return { values: values as FlagValues<S>, positionals };
}
