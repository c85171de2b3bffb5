import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ByteSource, memorySource, openFileSource } from "../src/byte_source.ts";
import { resolveConfig } from "../src/config.ts";
import { tinyGpt2 } from "../src/demo_model.ts";
import { FormatError } from "../src/errors.ts";
import type { RawChunk, Slab } from "../src/types.ts";
import { startFileJob } from "../streams/_file_job.ts";
import { readSafetensors } from "../streams/safetensors_source.ts";
import { isRetired, readsSettled, retire, trackRead } from "../streams/_reads_in_flight.ts";
import { bytesOf, checkpoint } from "./_checkpoint.ts";
import { failedJobsLeaveNextJobAlone } from "./_failed_jobs.ts";

const dir = mkdtempSync(join(tmpdir(), "quantflow-read-ahead-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

const rows = Float32Array.from({ length: 8 * 4 }, (_, i) => i - 7.5);
const ids = BigInt64Array.from({ length: 5 }, (_, i) => BigInt(i) * 1000000007n);
/** Slabs of 16 bytes: a row of `w` each, then the I64 tensor in 2 whole elements at a time. */
const FILE = checkpoint({
  w: { dtype: "F32", shape: [8, 4], bytes: bytesOf(rows) },
  ids: { dtype: "I64", shape: [5], bytes: bytesOf(ids) },
  empty: { dtype: "F32", shape: [0, 4], bytes: new Uint8Array(0) },
});

interface Traced {
  /** Opens the source. */
  open: () => ByteSource;
  /** Positions of the async reads asked for, in order. */
  reads: number[];
  /** Whether a read was in flight when the source was closed. */
  closedWhileReading: boolean;
}

/**
 * A memory source with a `readAsync` that copies `delayMs` later, as a read
 * on another thread lands while this one works.
 *
 * @param bytes The file.
 * @param hook Called with each read's position before it copies: it may throw, or shorten the read.
 * @param delayMs How long a read takes.
 */
function slowSource(bytes: Uint8Array, hook: (position: number) => number | void = () => {}, delayMs = 1): Traced {
  const traced: Traced = { open, reads: [], closedWhileReading: false };
  function open(): ByteSource {
    const source = memorySource(bytes);
    let inFlight = 0;
    return {
      ...source,
      async readAsync(position, into) {
        traced.reads.push(position);
        inFlight++;
        try {
          await new Promise((resolve) => setTimeout(resolve, delayMs));
          const short = hook(position);
          return source.read(position, short === undefined ? into : into.subarray(0, short));
        } finally {
          inFlight--;
        }
      },
      close() {
        if (inFlight) traced.closedWhileReading = true;
        source.close();
      },
    };
  }
  return traced;
}

/** A chunk as plain data, its memory copied (rings reuse it). */
function plain(chunk: Slab | RawChunk): unknown {
  return chunk.kind === "raw"
    ? { ...chunk, bytes: chunk.bytes.slice() }
    : { kind: chunk.kind, tensor: chunk.tensor, offset: chunk.offset, data: chunk.data.slice() };
}

async function chunksOf(stream: ReadableStream<Slab | RawChunk>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const chunk of stream) out.push(plain(chunk));
  return out;
}

test("a source with readAsync is read a chunk ahead, into the same chunks", async () => {
  const expected = await chunksOf((await readSafetensors(FILE, { slabBytes: 16 })).chunks);
  assert.equal(expected.length, 8 + 3 + 1);
  for (const reuseBuffers of [false, true]) {
    const source = slowSource(FILE);
    const { chunks } = await readSafetensors(source.open, { slabBytes: 16, reuseBuffers, ringSlots: 2 });
    const reader = chunks.getReader();
    const first = plain((await reader.read()).value!);
    // The second chunk was asked for as the first was handed out.
    assert.equal(source.reads.length, 2);
    const rest: unknown[] = [];
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest.push(plain(r.value));
    assert.deepEqual([first, ...rest], expected, `reuseBuffers ${reuseBuffers}`);
  }
});

test("reading ahead takes one more ring buffer: each chunk stays whole until the one after next is asked for", async () => {
  for (const ringSlots of [2, 3]) {
    const { chunks } = await readSafetensors(slowSource(FILE).open, { slabBytes: 16, reuseBuffers: true, ringSlots });
    const reader = chunks.getReader();
    const buffers: ArrayBufferLike[] = [];
    let previous: { data: Float32Array; copy: number[] } | undefined;
    for (let k = 0; k < 8; k++) {
      const { value } = await reader.read();
      const data = (value as Slab).data as Float32Array;
      assert.deepEqual([...data], [...rows.subarray(4 * k, 4 * k + 4)], `${ringSlots} slots, chunk ${k}`);
      // What a consumer still holds of the chunk before is intact: ringSlots - 1 >= 1 further chunks read.
      if (previous) assert.deepEqual([...previous.data], previous.copy, `${ringSlots} slots, chunk ${k - 1}`);
      previous = { data, copy: [...data] };
      buffers.push(data.buffer);
    }
    await reader.cancel();
    assert.equal(new Set(buffers).size, ringSlots + 1, `${ringSlots} slots and one for the chunk read ahead`);
    assert.ok(buffers.every((b, k) => b === buffers[k % (ringSlots + 1)]), `${ringSlots} slots + 1, in turn`);
  }
});

test("a read ahead that fails fails the pull that asks for its chunk, not before", async () => {
  const third = 8 + new DataView(FILE.buffer).getUint32(0, true) + 32; // the third slab of w
  const failures: [string, (position: number) => number | void, RegExp | Error][] = [
    ["a short read", (p) => p === third ? 5 : undefined, /^Cannot read tensor "w": data ends at byte \d+, header says/],
    ["an I/O error", (p) => {
      if (p === third) throw Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" });
    }, /^EIO: i\/o error, read$/],
  ];
  for (const [what, hook, message] of failures) {
    const source = slowSource(FILE, hook);
    const reader = (await readSafetensors(source.open, { slabBytes: 16 })).chunks.getReader();
    await reader.read();
    await reader.read(); // the third chunk's read has failed by now, or is about to
    await new Promise((resolve) => setTimeout(resolve, 10));
    await assert.rejects(reader.read(), (e: Error) => {
      assert.match(e.message, message as RegExp, what);
      if (what === "a short read") assert.ok(e instanceof FormatError);
      return true;
    });
  }
});

test("a stream cancelled with a read in flight closes its source once the read is done, failed or not", async () => {
  const second = 8 + new DataView(FILE.buffer).getUint32(0, true) + 16; // the second slab of w, read ahead
  for (const fails of [false, true]) {
    const source = slowSource(FILE, (position) => {
      if (fails && position === second) throw new Error("EIO");
    });
    const reader = (await readSafetensors(source.open, { slabBytes: 16 })).chunks.getReader();
    await reader.read();
    assert.deepEqual(source.reads, [second - 16, second]);
    await reader.cancel();
    assert.equal(source.closedWhileReading, false, `failing read: ${fails}`);
  }
});

test("a job that fails with a read in flight writes nothing into its buffers once the next job has them", async () => {
  // Reads slower than a macrotask: the failure reaches the chunk stream only after several.
  const model = tinyGpt2({ layers: 2, hidden: 64 });
  await failedJobsLeaveNextJobAlone(() => slowSource(model, undefined, 5).open, 2048);
});

test("so does a job that fails reading a file ahead (in Deno; synchronously in Bun)", async () => {
  // 16 MiB in slabs of 1 MiB: reads long enough to land after the failure (measured in review).
  const path = join(dir, "failing.safetensors");
  const weight = bytesOf(Float32Array.from({ length: 1024 * 1024 }, (_, i) => Math.sin(i)));
  const tensors = Object.fromEntries(
    [0, 1, 2, 3].map((k) => [`t${k}`, { dtype: "F32", shape: [1024, 1024], bytes: weight }]),
  );
  writeFileSync(path, checkpoint(tensors));
  await failedJobsLeaveNextJobAlone(() => path, 1 << 20);
});

test("a re-read reads ahead too, into one more buffer of its ring", async () => {
  const source = slowSource(FILE);
  const { chunks } = await readSafetensors(source.open, { slabBytes: 16, reuseBuffers: true, ringSlots: 2 });
  const main = chunks.getReader();
  const first = (await main.read()).value as Slab;
  const readsBefore = source.reads.length;
  const reader = first.source!.slabs().getReader();
  const buffers: ArrayBufferLike[] = [];
  let previous: { data: Float32Array; copy: number[] } | undefined;
  for (let k = 0; k < 8; k++) {
    const data = (await reader.read()).value!.data as Float32Array;
    assert.deepEqual([...data], [...rows.subarray(4 * k, 4 * k + 4)], `chunk ${k}`);
    if (previous) assert.deepEqual([...previous.data], previous.copy, `chunk ${k - 1}, held`);
    previous = { data, copy: [...data] };
    buffers.push(data.buffer);
  }
  // The re-read's 8 chunks, each through readAsync (the main stream's read ahead was asked for before).
  assert.equal(source.reads.length - readsBefore, 8);
  await reader.cancel();
  await main.cancel();
  assert.equal(new Set(buffers).size, 3, "2 slots and one for the chunk read ahead");
});

test("a file job reading ahead writes the bytes and report of one that does not", async () => {
  const model = tinyGpt2({ layers: 2, hidden: 64 });
  const concat = async (pieces: AsyncIterable<Uint8Array>) => {
    const parts: number[] = [];
    for await (const piece of pieces) parts.push(...piece);
    return Uint8Array.from(parts);
  };
  for (const config of [{}, { granularity: "per_tensor" }, { dtype: "uint4", mode: "linear" }] as const) {
    const options = { config: resolveConfig(config), slabBytes: 4096 };
    const source = slowSource(model);
    const ahead = await startFileJob(source.open, { ...options, reuseBuffers: (n) => new Uint8Array(n) });
    const plainJob = await startFileJob(() => memorySource(model), {
      ...options,
      reuseBuffers: (n) => new Uint8Array(n),
    });
    assert.deepEqual(await concat(ahead.bytes), await concat(plainJob.bytes), JSON.stringify(config));
    assert.deepEqual(ahead.report(), plainJob.report(), JSON.stringify(config));
    assert.ok(source.reads.length > 10, `${source.reads.length} async reads`);
  }
});

test("file sources read asynchronously in Deno, where that pays, and read the bytes read() reads", async () => {
  const path = join(dir, "bytes.bin");
  const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 255);
  writeFileSync(path, bytes);
  const source = openFileSource(path);
  try {
    assert.equal(source.readAsync !== undefined, "Deno" in globalThis);
    if (!source.readAsync) return;
    for (const [position, length] of [[0, 8], [1000, 1024], [2990, 10], [2995, 10], [3000, 4]]) {
      const viaAsync = new Uint8Array(length).fill(1);
      const viaSync = new Uint8Array(length).fill(1);
      assert.equal(await source.readAsync(position, viaAsync), source.read(position, viaSync), `at ${position}`);
      assert.deepEqual(viaAsync, viaSync, `at ${position}`);
    }
  } finally {
    source.close();
  }
  await assert.rejects(source.readAsync!(0, new Uint8Array(4)), /the file source is closed/);
});

test("readsSettled waits for every read into an allocator's buffers, also those tracked meanwhile or failing", async () => {
  const allocate = (n: number) => new Uint8Array(n);
  const other = (n: number) => new Uint8Array(n);
  const settled: string[] = [];
  const read = (name: string, ms: number, fails = false) =>
    new Promise<void>((resolve, reject) =>
      setTimeout(() => {
        settled.push(name);
        if (fails) reject(new Error(name));
        else resolve();
      }, ms)
    );
  await readsSettled(allocate); // none yet
  trackRead(allocate, read("a", 5));
  trackRead(allocate, read("b", 10, true));
  trackRead(other, read("elsewhere", 60));
  // A read that starts as the first lands, as a pull waiting for it would.
  setTimeout(() => trackRead(allocate, read("c", 15)), 5);
  await readsSettled(allocate);
  assert.deepEqual(settled, ["a", "b", "c"]);
});

test("once its job has ended, a stream reads nothing more into the job's buffers", async () => {
  const allocate = (n: number) => new Uint8Array(n);
  const { chunks } = await readSafetensors(slowSource(FILE).open, { slabBytes: 16, reuseBuffers: allocate });
  const reader = chunks.getReader();
  await reader.read(); // the second chunk is being read ahead: it lands, the third is refused
  retire(allocate);
  assert.ok(isRetired(allocate));
  await reader.read();
  await assert.rejects(reader.read(), /Cannot read tensor "w": the job has ended/);
});
