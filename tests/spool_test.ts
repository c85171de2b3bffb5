import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, statSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname } from "node:path";
import { FormatError } from "../src/errors.ts";
import { SlabSpool } from "../src/spool.ts";
import type { Slab, TensorInfo } from "../src/types.ts";

const W: TensorInfo = { name: "h.0.attn.weight", dtype: "float32", shape: [3, 4] };
const H: TensorInfo = { name: "h.0.mlp.weight", dtype: "float16", shape: [2, 3] };
const B: TensorInfo = { name: "emb", dtype: "bfloat16", shape: [5] };

function slabs(): Slab[] {
  // A slab viewing the middle of a larger buffer: only its own elements are spooled.
  const big = new Float32Array([99, 8, 9, 10, 11, 99]);
  return [
    { kind: "slab", tensor: W, offset: 0, data: new Float32Array([0, 1.5, -2, 3, 4, 5, 6, 7]) },
    { kind: "slab", tensor: W, offset: 8, data: big.subarray(1, 5) },
    { kind: "slab", tensor: H, offset: 0, data: new Uint16Array([0x3c00, 0xbc00, 0x7bff]) },
    { kind: "slab", tensor: H, offset: 3, data: new Uint16Array([1, 2, 3]) },
    { kind: "slab", tensor: B, offset: 0, data: new Uint16Array([0x3f80, 0, 0xffff, 7, 8]) },
  ];
}

function plain(s: Slab): unknown {
  return { kind: "slab", tensor: s.tensor, offset: s.offset, data: s.data };
}

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

test("SlabSpool gives back the appended slabs: same tensors, offsets and data", async () => {
  const spool = new SlabSpool();
  const input = slabs();
  for (const s of input) spool.append(s);
  assert.equal(spool.byteLength, 32 + 16 + 6 + 6 + 10);
  const path = spool.path!;
  assert.equal(dirname(path), tmpdir());
  assert.equal(statSync(path).size, spool.byteLength);
  const source = spool.source();
  const out = await collect(source.slabs());
  assert.deepEqual(out.map(plain), input.map(plain));
  for (const s of out) {
    assert.equal(s.source, source);
    assert.equal(s.data.byteOffset, 0);
  }
  // Each call of slabs() is a fresh read; the tensor objects are the ones appended.
  const again = await collect(source.slabs());
  assert.deepEqual(again.map(plain), input.map(plain));
  assert.equal(again[0].tensor, W);
  spool.dispose();
  assert.equal(existsSync(path), false);
});

test("SlabSpool copies the slab: reusing the caller's buffer after append is safe", async () => {
  const spool = new SlabSpool();
  const buffer = new Float32Array([1, 2, 3, 4]);
  spool.append({ tensor: W, offset: 0, data: buffer });
  buffer.fill(0);
  spool.append({ tensor: W, offset: 4, data: buffer });
  const out = await collect(spool.source().slabs());
  assert.deepEqual(out.map((s) => [...s.data]), [[1, 2, 3, 4], [0, 0, 0, 0]]);
  spool.dispose();
});

test("SlabSpool source sees the slabs appended before it was made", async () => {
  const spool = new SlabSpool();
  const [a, b] = slabs();
  spool.append(a);
  const first = spool.source();
  spool.append(b);
  assert.equal((await collect(first.slabs())).length, 1);
  assert.equal((await collect(spool.source().slabs())).length, 2);
  spool.dispose();
});

test("SlabSpool with nothing appended creates no file and reads nothing", async () => {
  const spool = new SlabSpool();
  assert.equal(spool.path, undefined);
  assert.deepEqual(await collect(spool.source().slabs()), []);
  spool.dispose();
});

test("SlabSpool dispose is idempotent and forbids later use", async () => {
  const spool = new SlabSpool();
  spool.append(slabs()[0]);
  const source = spool.source();
  spool.dispose();
  spool.dispose();
  assert.throws(() => spool.append(slabs()[0]), { message: "Cannot append to a disposed SlabSpool" });
  await assert.rejects(collect(source.slabs()), { message: "Cannot read a disposed SlabSpool" });
});

test("SlabSpool removes its file when reading back fails", async () => {
  const spool = new SlabSpool();
  for (const s of slabs()) spool.append(s);
  const path = spool.path!;
  truncateSync(path, 40);
  await assert.rejects(collect(spool.source().slabs()), (e: unknown) => {
    assert.ok(e instanceof FormatError);
    assert.equal(
      e.message,
      'Cannot read spooled tensor "h.0.attn.weight": spool file ends at byte 40, expected 48',
    );
    return true;
  });
  assert.equal(existsSync(path), false);
});

test("SlabSpool reading stream can be cancelled part way", async () => {
  const spool = new SlabSpool();
  for (const s of slabs()) spool.append(s);
  const reader = spool.source().slabs().getReader();
  const first = await reader.read();
  assert.deepEqual(first.value && [...first.value.data], [0, 1.5, -2, 3, 4, 5, 6, 7]);
  await reader.cancel();
  spool.dispose();
  assert.equal(existsSync(spool.path!), false);
});
