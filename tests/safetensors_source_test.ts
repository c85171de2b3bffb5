import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FormatError } from "../src/errors.ts";
import { encodeSafetensorsHeader } from "../src/safetensors_header.ts";
import type { RawChunk, Slab } from "../src/types.ts";
import { readSafetensors } from "../streams/safetensors_source.ts";
import { readsSettled } from "../streams/_reads_in_flight.ts";

interface Fixture {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function buildFile(tensors: Fixture[], metadata: Record<string, string> = {}): Uint8Array {
  const header = encodeSafetensorsHeader(
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.bytes.length })),
    metadata,
  );
  const total = header.length + tensors.reduce((a, t) => a + t.bytes.length, 0);
  const out = new Uint8Array(total);
  out.set(header);
  let at = header.length;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  return out;
}

const f32 = Float32Array.from({ length: 15 }, (_, i) => i * 0.5 - 3);
const f16 = Uint16Array.from({ length: 12 }, (_, i) => 0x3c00 + i * 17);
const bf16 = Uint16Array.from({ length: 12 }, (_, i) => 0x3f80 + i * 3);
const i64 = BigInt64Array.from({ length: 5 }, (_, i) => BigInt(i) * 1000000007n - 2n);
const FIXTURE: Fixture[] = [
  { name: "h.0.attn.weight", dtype: "F32", shape: [3, 5], bytes: bytesOf(f32) },
  { name: "ids", dtype: "I64", shape: [5], bytes: bytesOf(i64) },
  { name: "h.0.mlp.weight", dtype: "F16", shape: [4, 3], bytes: bytesOf(f16) },
  { name: "empty", dtype: "F32", shape: [0, 3], bytes: new Uint8Array(0) },
  { name: "conv", dtype: "BF16", shape: [2, 2, 3], bytes: bytesOf(bf16) },
  { name: "mask", dtype: "BOOL", shape: [3], bytes: new Uint8Array([1, 0, 1]) },
];
const FILE = buildFile(FIXTURE, { format: "pt" });

/** A plain view of a chunk for comparisons (drops `source`). */
function plain(c: Slab | RawChunk): unknown {
  if (c.kind === "raw") return { ...c };
  return { kind: c.kind, tensor: c.tensor, offset: c.offset, data: c.data };
}

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

/** `bytes` as a stream cut into pieces of the given sizes, cycled. */
function streamOf(bytes: Uint8Array, sizes: number[]): ReadableStream<Uint8Array> {
  let at = 0;
  let k = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      const n = sizes[k++ % sizes.length];
      // Copy so that no chunk shares memory with another input's.
      controller.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  }, { highWaterMark: 0 });
}

function tempPath(label: string): string {
  return join(tmpdir(), `quantflow-test-${label}-${crypto.randomUUID()}.safetensors`);
}

function withFile<T>(bytes: Uint8Array, fn: (path: string) => Promise<T>): Promise<T> {
  const path = tempPath("src");
  writeFileSync(path, bytes);
  return fn(path).finally(() => rmSync(path, { force: true }));
}

/** Open file descriptors of this process, where /proc exists (Linux). */
function openFds(): number | undefined {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return undefined;
  }
}

async function rejectsFormat(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    if (typeof message === "string") assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

const EXPECTED_SMALL_BUDGET = [
  // slabBytes 24: F32 rows are 20 bytes -> one row per slab.
  {
    kind: "slab",
    tensor: { name: "h.0.attn.weight", dtype: "float32", shape: [3, 5] },
    offset: 0,
    data: f32.slice(0, 5),
  },
  {
    kind: "slab",
    tensor: { name: "h.0.attn.weight", dtype: "float32", shape: [3, 5] },
    offset: 5,
    data: f32.slice(5, 10),
  },
  {
    kind: "slab",
    tensor: { name: "h.0.attn.weight", dtype: "float32", shape: [3, 5] },
    offset: 10,
    data: f32.slice(10),
  },
  // Raw I64: 3 whole elements fit in 24 bytes.
  { kind: "raw", name: "ids", dtype: "I64", shape: [5], offset: 0, bytes: bytesOf(i64).slice(0, 24) },
  { kind: "raw", name: "ids", dtype: "I64", shape: [5], offset: 24, bytes: bytesOf(i64).slice(24) },
  // F16 rows are 6 bytes -> 4 rows (all) per slab.
  { kind: "slab", tensor: { name: "h.0.mlp.weight", dtype: "float16", shape: [4, 3] }, offset: 0, data: f16.slice() },
  // A tensor of no elements yields one empty slab, so that it reaches every output.
  { kind: "slab", tensor: { name: "empty", dtype: "float32", shape: [0, 3] }, offset: 0, data: new Float32Array(0) },
  // BF16 rows are 12 bytes -> 2 rows per slab.
  { kind: "slab", tensor: { name: "conv", dtype: "bfloat16", shape: [2, 2, 3] }, offset: 0, data: bf16.slice() },
  { kind: "raw", name: "mask", dtype: "BOOL", shape: [3], offset: 0, bytes: new Uint8Array([1, 0, 1]) },
];

test("readSafetensors reads F32, F16, BF16 and I64 tensors from a Uint8Array", async () => {
  const model = await readSafetensors(FILE, { slabBytes: 24 });
  assert.deepEqual(model.header.metadata, { format: "pt" });
  assert.deepEqual(model.header.entries.map((e) => e.name), FIXTURE.map((t) => t.name));
  const chunks = await collect(model.chunks);
  assert.deepEqual(chunks.map(plain), EXPECTED_SMALL_BUDGET);
  for (const c of chunks) {
    if (c.kind === "raw") continue;
    // Each slab owns its memory: a buffer of exactly its own bytes.
    assert.equal(c.data.byteOffset, 0);
    assert.equal(c.data.buffer.byteLength, c.data.byteLength);
  }
});

test("readSafetensors gives identical slabs from a file, a Uint8Array and streams cut anywhere", async () => {
  const reference = (await collect((await readSafetensors(FILE, { slabBytes: 24 })).chunks)).map(plain);
  const fromFile = await withFile(FILE, async (path) => {
    const model = await readSafetensors(path, { slabBytes: 24 });
    return (await collect(model.chunks)).map(plain);
  });
  assert.deepEqual(fromFile, reference);
  const cuts = [[FILE.length], [1], [7], [3, 11, 5, 1, 29, 2], [FILE.length - 1, 1], [13]];
  for (const sizes of cuts) {
    const model = await readSafetensors(streamOf(FILE, sizes), { slabBytes: 24 });
    const chunks = await collect(model.chunks);
    assert.deepEqual(chunks.map(plain), reference, `cut into ${sizes}`);
    for (const c of chunks) if (c.kind === "slab") assert.equal(c.source, undefined);
  }
  // An async iterable input, through ReadableStream.from.
  const model = await readSafetensors(ReadableStream.from([FILE.subarray(0, 100), FILE.subarray(100)]), {
    slabBytes: 24,
  });
  assert.deepEqual((await collect(model.chunks)).map(plain), reference);
});

test("readSafetensors groups whole rows under the budget", async () => {
  const data = Float32Array.from({ length: 10 }, (_, i) => i);
  const file = buildFile([{ name: "w", dtype: "F32", shape: [5, 2], bytes: bytesOf(data) }]);
  const cases: [number, number[]][] = [
    [24, [0, 6]], // 3 rows of 8 bytes, then the remaining 2 rows
    [16, [0, 4, 8]], // exactly 2 rows
    [8, [0, 2, 4, 6, 8]], // exactly 1 row
    [15, [0, 2, 4, 6, 8]], // a budget between 1 and 2 rows
    [40, [0]], // the whole tensor exactly
    [1 << 22, [0]],
  ];
  for (const [slabBytes, offsets] of cases) {
    const chunks = await collect((await readSafetensors(file, { slabBytes })).chunks) as Slab[];
    assert.deepEqual(chunks.map((c) => c.offset), offsets, `slabBytes ${slabBytes}`);
    const joined = new Float32Array(chunks.flatMap((c) => [...c.data]));
    assert.deepEqual(joined, data);
    for (const c of chunks) assert.ok(c.data.byteLength <= slabBytes);
  }
});

test("readSafetensors splits a row longer than the budget into pieces dividing the row", async () => {
  const data = Float32Array.from({ length: 24 }, (_, i) => i);
  const file = buildFile([{ name: "w", dtype: "F32", shape: [2, 12], bytes: bytesOf(data) }]);
  // 20 bytes hold 5 elements; the largest divisor of 12 not above 5 is 4.
  for (const [slabBytes, piece] of [[20, 4], [16, 4], [24, 6], [47, 6], [7, 1], [1, 1]]) {
    const chunks = await collect((await readSafetensors(file, { slabBytes })).chunks) as Slab[];
    assert.deepEqual(chunks.map((c) => c.data.length), new Array(24 / piece).fill(piece), `slabBytes ${slabBytes}`);
    assert.deepEqual(chunks.map((c) => c.offset), chunks.map((_, i) => i * piece));
    assert.deepEqual(new Float32Array(chunks.flatMap((c) => [...c.data])), data);
  }
  // A prime row length can only be split into single elements.
  const prime = buildFile([{ name: "p", dtype: "F16", shape: [1, 7], bytes: new Uint8Array(14) }]);
  const chunks = await collect((await readSafetensors(prime, { slabBytes: 12 })).chunks) as Slab[];
  assert.equal(chunks.length, 7);
});

test("readSafetensors treats each element of a rank-0 or rank-1 tensor as a row", async () => {
  const v = Uint16Array.from({ length: 7 }, (_, i) => i);
  const file = buildFile([
    { name: "scalar", dtype: "F32", shape: [], bytes: bytesOf(new Float32Array([2.5])) },
    { name: "bias", dtype: "F16", shape: [7], bytes: bytesOf(v) },
  ]);
  const chunks = await collect((await readSafetensors(file, { slabBytes: 6 })).chunks) as Slab[];
  assert.deepEqual(chunks.map((c) => [c.tensor.name, c.offset, [...c.data]]), [
    ["scalar", 0, [2.5]],
    ["bias", 0, [0, 1, 2]],
    ["bias", 3, [3, 4, 5]],
    ["bias", 6, [6]],
  ]);
});

test("readSafetensors chunks raw tensors in whole elements under the budget", async () => {
  for (const [slabBytes, sizes] of [[20, [16, 16, 8]], [3, [8, 8, 8, 8, 8]], [40, [40]]] as const) {
    const chunks = await collect((await readSafetensors(FILE, { slabBytes })).chunks);
    const ids = chunks.filter((c) => c.kind === "raw" && c.name === "ids") as RawChunk[];
    assert.deepEqual(ids.map((c) => c.bytes.length), sizes, `slabBytes ${slabBytes}`);
    assert.deepEqual(new Uint8Array(ids.flatMap((c) => [...c.bytes])), bytesOf(i64));
  }
});

test("readSafetensors uses 1 MiB slabs by default", async () => {
  const data = new Float32Array(300 * 1024).map((_, i) => i % 251);
  const file = buildFile([{ name: "big", dtype: "F32", shape: [300, 1024], bytes: bytesOf(data) }]);
  const chunks = await collect((await readSafetensors(file)).chunks) as Slab[];
  assert.deepEqual(chunks.map((c) => [c.offset, c.data.length]), [[0, 256 * 1024], [256 * 1024, 44 * 1024]]);
  assert.deepEqual(chunks[1].data, data.subarray(256 * 1024));
});

test("readSafetensors slabs of a file or buffer re-read the same tensor through source", async () => {
  const check = async (input: string | Uint8Array) => {
    const chunks = await collect((await readSafetensors(input, { slabBytes: 24 })).chunks);
    const slabs = chunks.filter((c): c is Slab => c.kind === "slab");
    for (const name of ["h.0.attn.weight", "h.0.mlp.weight", "conv"]) {
      const own = slabs.filter((s) => s.tensor.name === name);
      const source = own[0].source!;
      assert.ok(source !== undefined);
      for (const s of own) assert.equal(s.source, source, "one source per tensor");
      const again = await collect(source.slabs());
      assert.deepEqual(again.map(plain), own.map(plain));
      // And again: each call gives a fresh stream.
      assert.deepEqual((await collect(source.slabs())).map(plain), own.map(plain));
    }
  };
  await check(FILE);
  await withFile(FILE, check);
});

test("readSafetensors closes the file when chunks are read to the end or cancelled", async () => {
  const before = openFds();
  await withFile(FILE, async (path) => {
    const model = await readSafetensors(path, { slabBytes: 24 });
    if (before !== undefined) assert.equal(openFds(), before + 1);
    const reader = model.chunks.getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    await reader.cancel();
    if (before !== undefined) assert.equal(openFds(), before);

    await collect((await readSafetensors(path)).chunks);
    if (before !== undefined) assert.equal(openFds(), before);

    // A re-read opens its own handle lazily and closes it on cancel too.
    const buffers = (n: number) => new Uint8Array(n);
    const all = (await readSafetensors(path, { slabBytes: 24, reuseBuffers: buffers })).chunks;
    const slab = (await collect(all))[0] as Slab;
    const again = slab.source!.slabs().getReader();
    await again.read();
    // Counted once any read ahead is done: Deno holds a second descriptor while an async read is in flight.
    await readsSettled(buffers);
    if (before !== undefined) assert.equal(openFds(), before + 1);
    await again.cancel();
    if (before !== undefined) assert.equal(openFds(), before);
  });
});

test("readSafetensors cancels the input stream when chunks are cancelled", async () => {
  let cancelled: unknown = "no";
  let at = 0;
  const input = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(FILE.slice(at, at + 7));
      at += 7;
    },
    cancel(reason) {
      cancelled = reason;
    },
  }, { highWaterMark: 0 });
  const model = await readSafetensors(input, { slabBytes: 24 });
  // Pull-based: resolving read only the header (rounded up to the 7-byte cuts).
  assert.ok(at < model.header.dataStart + 7, `read ${at} bytes for a ${model.header.dataStart}-byte header`);
  const reader = model.chunks.getReader();
  await reader.read();
  assert.ok(at <= model.header.dataStart + 20 + 7);
  await reader.cancel("stop");
  assert.equal(cancelled, "stop");
});

test("readSafetensors rejects a truncated header", async () => {
  await rejectsFormat(
    readSafetensors(streamOf(FILE.subarray(0, 5), [2])),
    "Cannot read safetensors header: the file ends at byte 5, before the 8-byte header length",
  );
  const dataStart = (await readSafetensors(FILE)).header.dataStart;
  await rejectsFormat(
    readSafetensors(streamOf(FILE.subarray(0, 40), [7])),
    `Cannot read safetensors header: the file ends at byte 40, header says ${dataStart}`,
  );
  await rejectsFormat(
    readSafetensors(FILE.subarray(0, 40)),
    `Cannot read safetensors header: header ends at byte ${dataStart}, beyond the end of the 40-byte file`,
  );
});

test("readSafetensors fails on truncated data, naming the tensor and byte positions", async () => {
  const { header } = await readSafetensors(FILE);
  const conv = header.entries.find((e) => e.name === "conv")!;
  const cut = conv.begin + 10;
  const message = `Cannot read tensor "conv": data ends at byte ${cut}, header says ${conv.end}`;
  // A stream: the header is fine, the chunks stream errors.
  for (const sizes of [[1], [7], [cut]]) {
    const model = await readSafetensors(streamOf(FILE.subarray(0, cut), sizes), { slabBytes: 24 });
    await rejectsFormat(collect(model.chunks), message);
  }
  // A buffer or file: the size is known, so the header check fails at once.
  await rejectsFormat(readSafetensors(FILE.subarray(0, cut)), message);
  await withFile(FILE.subarray(0, cut), (path) => rejectsFormat(readSafetensors(path), message));
});

test("readSafetensors fails on bytes after the data section", async () => {
  const twice = new Uint8Array(FILE.length * 2);
  twice.set(FILE);
  twice.set(FILE, FILE.length);
  const model = await readSafetensors(streamOf(twice, [7]), { slabBytes: 24 });
  await rejectsFormat(
    collect(model.chunks),
    `Cannot read safetensors file: unexpected bytes after the data section, which ends at byte ${FILE.length}`,
  );
  await rejectsFormat(
    readSafetensors(twice),
    /^Cannot read safetensors file: \d+ unexpected bytes after the data section/,
  );
});

test("readSafetensors skips gaps between tensors", async () => {
  const json =
    '{"a":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
  const text = new TextEncoder().encode(json);
  const file = new Uint8Array(8 + text.length + 12);
  new DataView(file.buffer).setBigUint64(0, BigInt(text.length), true);
  file.set(text, 8);
  const data = file.subarray(8 + text.length);
  data.set([7, 9], 3);
  new DataView(file.buffer, file.byteOffset + 8 + text.length).setFloat32(8, 1.5, true);
  const expected = [
    { kind: "raw", name: "a", dtype: "U8", shape: [2], offset: 0, bytes: new Uint8Array([7, 9]) },
    { kind: "slab", tensor: { name: "b", dtype: "float32", shape: [1] }, offset: 0, data: new Float32Array([1.5]) },
  ];
  assert.deepEqual((await collect((await readSafetensors(file)).chunks)).map(plain), expected);
  assert.deepEqual((await collect((await readSafetensors(streamOf(file, [1]))).chunks)).map(plain), expected);
});

test("readSafetensors validates its arguments", async () => {
  for (const slabBytes of [0, -1, 1.5, Number.NaN]) {
    await assert.rejects(readSafetensors(FILE, { slabBytes }), {
      name: "RangeError",
      message: `slabBytes must be a positive integer, got ${slabBytes}`,
    });
  }
  for (const ringSlots of [1, 2.5, Number.NaN]) {
    await assert.rejects(readSafetensors(FILE, { reuseBuffers: true, ringSlots }), {
      name: "RangeError",
      message: `ringSlots must be an integer of at least 2, got ${ringSlots}`,
    });
  }
  await assert.rejects(readSafetensors(42 as unknown as string), TypeError);
  const missing = tempPath("missing");
  await assert.rejects(readSafetensors(missing), { code: "ENOENT" });
  assert.equal(existsSync(missing), false);
});

test("a ring of ringSlots buffers takes turns, each chunk whole until the next is read", async () => {
  const rows = Float32Array.from({ length: 8 * 4 }, (_, i) => i);
  const file = buildFile([{ name: "w", dtype: "F32", shape: [8, 4], bytes: bytesOf(rows) }]);
  for (const ringSlots of [2, 3]) {
    const buffers: ArrayBufferLike[] = [];
    const seen: number[] = [];
    const chunks = (await readSafetensors(file, { slabBytes: 16, reuseBuffers: true, ringSlots })).chunks;
    for await (const chunk of chunks) {
      assert.equal(chunk.kind, "slab");
      const data = (chunk as Slab).data as Float32Array;
      seen.push(...data); // used up before the next read, as a file writer does
      buffers.push(data.buffer);
    }
    assert.deepEqual(seen, [...rows], `${ringSlots} slots`);
    assert.equal(new Set(buffers).size, ringSlots, `${ringSlots} slots`);
    assert.ok(buffers.every((b, k) => b === buffers[k % ringSlots]), `${ringSlots} slots, in turn`);
  }
});
