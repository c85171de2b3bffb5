import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

/**
 * A module and the modules it imports statically (values, not types; not
 * `import()`), following our own relative imports: each file's code, and
 * every specifier imported.
 */
function staticGraph(entry: string): { code: Map<string, string>; specifiers: Set<string> } {
  const code = new Map<string, string>();
  const specifiers = new Set<string>();
  const visit = (url: URL) => {
    if (code.has(url.href)) return;
    const text = readFileSync(url, "utf8");
    code.set(url.href, text);
    // Statements start a line; doc examples are in comments (" * import ...") and do not.
    const statements = /^(?:import|export)\s+(?!type\b)(?:[^;"]*?\bfrom\s+)?"([^"]+)"/gm;
    for (const [, specifier] of text.matchAll(statements)) {
      specifiers.add(specifier);
      if (specifier.startsWith(".")) visit(new URL(specifier, url));
    }
  };
  visit(new URL(entry, import.meta.url));
  return { code, specifiers };
}

/** The `node:` modules, and the packages (bare or `npm:` specifiers), a graph imports. */
function imports(entry: string): { node: string[]; packages: string[] } {
  const all = [...staticGraph(entry).specifiers].sort();
  return {
    node: all.filter((s) => s.startsWith("node:")),
    packages: all.filter((s) => !s.startsWith(".") && !s.startsWith("node:")),
  };
}

test("the module graph walk follows relative imports to the modules they import", () => {
  const http = imports("../http.ts");
  assert.equal(/from "node:/.test(readFileSync(new URL("../http.ts", import.meta.url), "utf8")), false);
  assert.ok(http.node.includes("node:os") && http.packages.includes("hono"), JSON.stringify(http));
});

// In Deno the first node: import (or use of `process`) starts Node's compatibility layer: ~35 ms of a worker's
// start (bench/RESULTS.md, Addendum 11). src/_file_io.ts takes node:fs from `process` only outside Deno.
test("a file job's worker imports no node: module and no package", () => {
  assert.deepEqual(imports("../streams/_tensor_task_worker.ts"), { node: [], packages: [] });
});

test("in a file job's worker, only src/_file_io.ts mentions `process` or `Buffer` (for other runtimes)", () => {
  const { code } = staticGraph("../streams/_tensor_task_worker.ts");
  const users = [...code].filter(([, text]) => {
    const statements = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
    return /\b(process|Buffer)\b/.test(statements);
  }).map(([url]) => url.slice(url.lastIndexOf("/") + 1));
  assert.deepEqual(users, ["_file_io.ts"]);
});

test("the command line imports no node: module, and only zod, before a command needs more", () => {
  assert.deepEqual(imports("../src/cli.ts"), { node: [], packages: ["zod"] });
});
