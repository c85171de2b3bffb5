import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

/**
 * The specifiers a module and the modules it imports statically (values, not
 * types; not `import()`) import, following our own relative imports.
 */
function staticImports(entry: URL): Set<string> {
  const found = new Set<string>();
  const seen = new Set<string>();
  const visit = (url: URL) => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const code = readFileSync(url, "utf8");
    // Statements start a line; doc examples are in comments (" * import ...") and do not.
    const statements = /^(?:import|export)\s+(?!type\b)(?:[^;"]*?\bfrom\s+)?"([^"]+)"/gm;
    for (const [, specifier] of code.matchAll(statements)) {
      found.add(specifier);
      if (specifier.startsWith(".")) visit(new URL(specifier, url));
    }
  };
  visit(entry);
  return found;
}

const nodeModules = (entry: string) =>
  [...staticImports(new URL(entry, import.meta.url))].filter((s) => s.startsWith("node:")).sort();

test("the module graph walk finds the node: modules a graph imports", () => {
  assert.deepEqual(nodeModules("../streams/sharded_checkpoint.ts"), ["node:fs", "node:path"]);
});

// In Deno the first node: import starts Node's compatibility layer (~35 ms of a worker's start,
// bench/RESULTS.md Addendum 11); src/_file_io.ts imports node:fs only outside Deno.
test("a file job's worker imports no node: module", () => {
  assert.deepEqual(nodeModules("../streams/_tensor_task_worker.ts"), []);
});

test("the command line imports no node: module before a command needs one", () => {
  assert.deepEqual(nodeModules("../src/cli.ts"), []);
});
