import { test } from "node:test";
import assert from "node:assert/strict";
import { FlagError, parseFlags } from "../src/_flags.ts";

const SPEC = {
  output: { type: "string", short: "o" },
  axis: { type: "string" },
  json: { type: "boolean" },
} as const;

test("string flags take the next argument or an inline value; switches are true; the rest is positional", () => {
  const { values, positionals } = parseFlags(["in.safetensors", "-o", "out", "--axis=2", "--json", "more"], SPEC);
  assert.deepEqual(values, { output: "out", axis: "2", json: true });
  assert.deepEqual(positionals, ["in.safetensors", "more"]);
  assert.deepEqual(parseFlags(["-oout", "--output=a=b"], SPEC).values, { output: "a=b" });
  assert.deepEqual(parseFlags(["--output", "x", "-o", "y"], SPEC).values, { output: "y" }, "the last one counts");
});

test("a multiple flag keeps every value, in order", () => {
  const spec = { resume: { type: "string", multiple: true }, json: { type: "boolean" } } as const;
  assert.deepEqual(parseFlags(["--resume", "a", "x", "--resume=b", "--json"], spec), {
    values: { resume: ["a", "b"], json: true },
    positionals: ["x"],
  });
  assert.deepEqual(parseFlags(["x"], spec).values, {});
});

test("negative numbers and a lone dash are values; -- ends the flags", () => {
  assert.deepEqual(parseFlags(["--axis", "-1", "-"], SPEC), { values: { axis: "-1" }, positionals: ["-"] });
  assert.deepEqual(parseFlags(["--axis", "-.5"], SPEC).values, { axis: "-.5" });
  assert.deepEqual(parseFlags(["--json", "--", "--axis", "-o"], SPEC), {
    values: { json: true },
    positionals: ["--axis", "-o"],
  });
});

test("an unknown flag, a missing value or a value for a switch is a FlagError naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^unknown option --bogus$/],
    [["--bogus=1"], /^unknown option --bogus$/],
    [["-x"], /^unknown option -x$/],
    [["--constructor"], /^unknown option --constructor$/],
    [["--axis"], /^--axis needs a value$/],
    [["-o", "--json"], /^-o needs a value$/],
    [["--axis", "-o", "x"], /^--axis needs a value$/],
    [["-o", "--", "x"], /^-o needs a value$/],
    [["--json=yes"], /^--json takes no value, got "yes"$/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseFlags(args, SPEC), (e: Error) => e instanceof FlagError && message.test(e.message));
  }
});
