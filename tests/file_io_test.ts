import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createTemporaryFile, openFile, removeFile, renameFile, writeFully } from "../src/_file_io.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-file-io-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const bytes = (n: number, from = 0) => Uint8Array.from({ length: n }, (_, i) => (from + i) & 255);
let files = 0;
const fileOf = (content: Uint8Array) => {
  const path = join(dir, `f${files++}`);
  writeFileSync(path, content);
  return path;
};

describe("openFile", () => {
  test("reads at the position given, short at the end and nothing past it", () => {
    const file = openFile(fileOf(bytes(10)), "read");
    const into = new Uint8Array(4);
    assert.equal(file.size(), 10);
    assert.equal(file.readAt(into, 6), 4);
    assert.deepEqual([...into], [6, 7, 8, 9]);
    assert.equal(file.readAt(into, 1), 4);
    assert.deepEqual([...into], [1, 2, 3, 4]);
    assert.equal(file.readAt(into, 8), 2);
    assert.deepEqual([...into.subarray(0, 2)], [8, 9]);
    assert.equal(file.readAt(into, 12), 0);
    file.close();
  });

  test("update writes at the positions given, in any order, and keeps the rest", () => {
    const path = fileOf(bytes(8));
    const file = openFile(path, "update");
    writeFully(file, new Uint8Array([100, 101]), 6);
    writeFully(file, new Uint8Array([200]), 0);
    assert.equal(file.size(), 8);
    file.sync();
    file.close();
    assert.deepEqual([...readFileSync(path)], [200, 1, 2, 3, 4, 5, 100, 101]);
  });

  test("calls that go on where the last one ended and calls that jump both land where they say", async () => {
    const file = openFile(fileOf(bytes(16)), "update");
    const into = new Uint8Array(4);
    const read = async (position: number, async: boolean) => {
      const n = async ? await file.readAtAsync(into, position) : file.readAt(into, position);
      return [...into.subarray(0, n)];
    };
    assert.deepEqual(await read(0, false), [0, 1, 2, 3]);
    assert.deepEqual(await read(4, true), [4, 5, 6, 7]);
    writeFully(file, new Uint8Array([80, 81]), 8);
    assert.deepEqual(await read(10, false), [10, 11, 12, 13]);
    assert.deepEqual(await read(2, true), [2, 3, 4, 5]);
    assert.deepEqual(await read(6, false), [6, 7, 80, 81]);
    assert.deepEqual(await read(14, true), [14, 15]); // short, at the end: the position is 16, not 18
    writeFully(file, new Uint8Array([90]), 18); // past the end: the file grows, with a hole of zeros
    assert.deepEqual(await read(15, false), [15, 0, 0, 90]);
    assert.throws(() => file.readAt(into, -1), RangeError);
    assert.deepEqual(await read(0, false), [0, 1, 2, 3]);
    file.close();
  });

  test("create makes a new file with the mode given, and never opens one that exists", () => {
    const path = join(dir, "created");
    const file = openFile(path, "create", 0o600);
    writeFully(file, bytes(3), 0);
    file.close();
    assert.deepEqual([...readFileSync(path)], [0, 1, 2]);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.throws(() => openFile(path, "create"), { code: "EEXIST" });
    assert.deepEqual([...readFileSync(path)], [0, 1, 2]);
  });

  test("a missing file fails with ENOENT and its path in the message", () => {
    const path = join(dir, "missing");
    for (const how of ["read", "update"] as const) {
      assert.throws(() => openFile(path, how), (e: Error & { code?: string }) => {
        assert.equal(e.code, "ENOENT");
        assert.ok(e.message.includes(path), e.message);
        return true;
      });
    }
    assert.throws(() => openFile(join(path, "x"), "create"), { code: "ENOENT" });
  });

  test("reads on another thread land in the order asked, each at its own position", async () => {
    const content = bytes(64 * 1024, 7);
    const file = openFile(fileOf(content), "read");
    const parts = [40000, 0, 12345, 65000].map((position) => ({ position, into: new Uint8Array(1000) }));
    const counts = await Promise.all(parts.map(({ position, into }) => file.readAtAsync(into, position)));
    assert.deepEqual(counts, [1000, 1000, 1000, 536]);
    for (const { position, into } of parts) {
      assert.deepEqual(into.subarray(0, 536), content.subarray(position, position + 536));
    }
    file.close();
  });

  test("nothing else moves the file's position while a read is in flight", async () => {
    const file = openFile(fileOf(bytes(100)), "update");
    const into = new Uint8Array(10);
    const read = file.readAtAsync(into, 50);
    assert.throws(() => file.readAt(new Uint8Array(1), 0), /a read in flight must settle/);
    assert.throws(() => file.writeAt(new Uint8Array(1), 0), /a read in flight must settle/);
    assert.throws(() => file.size(), /a read in flight must settle/);
    assert.throws(() => file.sync(), /a read in flight must settle/);
    assert.equal(await read, 10);
    assert.deepEqual([...into], [50, 51, 52, 53, 54, 55, 56, 57, 58, 59]);
    assert.equal(file.readAt(new Uint8Array(1), 0), 1);
    file.close();
  });

  test("closing under a read in flight lets it finish first", async () => {
    const file = openFile(fileOf(bytes(100)), "read");
    const into = new Uint8Array(5);
    const read = file.readAtAsync(into, 20);
    file.close();
    assert.equal(await read, 5);
    assert.deepEqual([...into], [20, 21, 22, 23, 24]);
  });

  test("a read at a bad position rejects, and leaves the file usable", async () => {
    const file = openFile(fileOf(bytes(8)), "read");
    for (const position of [-1, 1.5, NaN, 2 ** 53]) {
      const message = new RegExp(`a position must be a non-negative integer, got ${position}`);
      await assert.rejects(file.readAtAsync(new Uint8Array(2), position), { name: "RangeError", message });
      assert.throws(() => file.readAt(new Uint8Array(2), position), message);
      assert.throws(() => file.writeAt(new Uint8Array(2), position), message);
    }
    const into = new Uint8Array(2);
    assert.equal(file.readAt(into, 3), 2);
    assert.deepEqual([...into], [3, 4]);
    // Between two reads, a bad one keeps them in order.
    const [a, b] = [new Uint8Array(3), new Uint8Array(3)];
    const settled: number[] = [];
    const reads = [file.readAtAsync(a, 0), file.readAtAsync(into, -1), file.readAtAsync(b, 5)]
      .map((read, k) => read.finally(() => settled.push(k)));
    const results = await Promise.allSettled(reads);
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.deepEqual(settled, [0, 1, 2]);
    assert.deepEqual([...a, ...b], [0, 1, 2, 5, 6, 7]);
    file.close();
  });

  test("a failed read on another thread rejects, and the next one still runs", async () => {
    const file = openFile(dir, "read"); // a directory opens, but reading it fails (EISDIR)
    await assert.rejects(file.readAtAsync(new Uint8Array(4), 0), { code: "EISDIR" });
    await assert.rejects(file.readAtAsync(new Uint8Array(4), 0), { code: "EISDIR" });
    file.close();
  });
});

describe("file names", () => {
  test("renameFile replaces the target; removeFile removes, or fails with ENOENT", () => {
    const from = fileOf(bytes(2, 5));
    const to = fileOf(bytes(9));
    renameFile(from, to);
    assert.equal(existsSync(from), false);
    assert.deepEqual([...readFileSync(to)], [5, 6]);
    removeFile(to);
    assert.equal(existsSync(to), false);
    assert.throws(() => removeFile(to), { code: "ENOENT" });
  });

  test("createTemporaryFile makes an empty file of its own in the temporary directory", () => {
    const a = createTemporaryFile("quantflow-test-", ".bin");
    const b = createTemporaryFile("quantflow-test-", ".bin");
    try {
      assert.notEqual(a.path, b.path);
      // Deno's own temporary files go by $TMPDIR alone; node:os's tmpdir() also reads $TMP and $TEMP.
      const expected = "Deno" in globalThis ? process.env.TMPDIR ?? "/tmp" : tmpdir();
      assert.equal(resolve(dirname(a.path)), resolve(expected));
      assert.match(a.path, /quantflow-test-[^/]+\.bin$/);
      assert.equal(statSync(a.path).mode & 0o777, 0o600);
      assert.equal(a.file.size(), 0);
      writeFully(a.file, bytes(4), 0);
      const into = new Uint8Array(4);
      assert.equal(a.file.readAt(into, 0), 4);
      assert.deepEqual([...into], [0, 1, 2, 3]);
    } finally {
      for (const { path, file } of [a, b]) {
        file.close();
        removeFile(path);
      }
    }
  });
});
