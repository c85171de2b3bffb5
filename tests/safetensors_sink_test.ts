import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSafetensorsHeader, type SafetensorsHeader } from "../src/safetensors_header.ts";
import type { QuantizedSlab, QuantizedTensorInfo, RawChunk, Slab } from "../src/types.ts";
import {
  type OutputTensorSpec,
  quantizedSpecs,
  SafetensorsEncodeStream,
  writeFileAtomically,
} from "../streams/safetensors_sink.ts";
import { readSafetensors } from "../streams/safetensors_source.ts";

type Chunk = QuantizedSlab | RawChunk;

async function encode(specs: OutputTensorSpec[], chunks: Chunk[], metadata: Record<string, string> = {}) {
  const parts: Uint8Array[] = [];
  for await (const p of ReadableStream.from(chunks).pipeThrough(new SafetensorsEncodeStream(specs, metadata))) {
    parts.push(p);
  }
  const file = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    file.set(p, at);
    at += p.length;
  }
  return file;
}

/** Parses the file back (validating sizes) and returns each tensor's bytes by name. */
function tensorsOf(file: Uint8Array): { header: SafetensorsHeader; bytes: Map<string, Uint8Array> } {
  const header = parseSafetensorsHeader(file, file.length);
  const bytes = new Map(header.entries.map((e) => [e.name, file.slice(e.begin, e.end)]));
  return { header, bytes };
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Reference packing of SPEC.md Section 5, element by element. */
function packReference(values: number[]): Uint8Array {
  const out = new Uint8Array(Math.ceil(values.length / 2));
  values.forEach((v, i) => out[i >> 1] |= (v & 15) << (i % 2 === 0 ? 0 : 4));
  return out;
}

function info(over: Partial<QuantizedTensorInfo>): QuantizedTensorInfo {
  return {
    name: "w",
    sourceDType: "float32",
    dtype: "int8",
    mode: "linear_symmetric",
    granularity: "per_channel",
    axis: 0,
    shape: [3, 4],
    blockSizes: [1, 0],
    scaleShape: [3, 1],
    scaleDType: "float32",
    ...over,
  };
}

function slab(
  tensor: QuantizedTensorInfo,
  offset: number,
  data: Int8Array | Uint8Array,
  scaleOffset = 0,
  scale: Float32Array | Uint16Array = new Float32Array(0),
  zeroPoint?: Int8Array | Uint8Array,
): QuantizedSlab {
  return zeroPoint === undefined
    ? { kind: "quantized", tensor, offset, data, scaleOffset, scale }
    : { kind: "quantized", tensor, offset, data, scaleOffset, scale, zeroPoint };
}

function raw(name: string, dtype: string, shape: number[], offset: number, bytes: Uint8Array): RawChunk {
  return { kind: "raw", name, dtype, shape, offset, bytes };
}

async function rejectsRange(p: Promise<unknown>, message: string): Promise<void> {
  await assert.rejects(p, { name: "RangeError", message });
}

test("quantizedSpecs gives NAME, NAME.scale and NAME.zero_point when stored", () => {
  assert.deepEqual(quantizedSpecs(info({})), [
    { name: "w", dtype: "I8", shape: [3, 4], byteLength: 12 },
    { name: "w.scale", dtype: "F32", shape: [3, 1], byteLength: 12 },
  ]);
  assert.deepEqual(quantizedSpecs(info({ dtype: "uint8", scaleDType: "float16" })), [
    { name: "w", dtype: "U8", shape: [3, 4], byteLength: 12 },
    { name: "w.scale", dtype: "F16", shape: [3, 1], byteLength: 6 },
    { name: "w.zero_point", dtype: "U8", shape: [3, 1], byteLength: 3 },
  ]);
  assert.deepEqual(quantizedSpecs(info({ dtype: "int4", mode: "linear", shape: [3, 5], scaleShape: [1, 1] })), [
    { name: "w", dtype: "U8", shape: [8], byteLength: 8 },
    { name: "w.scale", dtype: "F32", shape: [1, 1], byteLength: 4 },
    { name: "w.zero_point", dtype: "I8", shape: [1, 1], byteLength: 1 },
  ]);
  assert.equal(quantizedSpecs(info({ dtype: "int4" })).length, 2);
});

test("SafetensorsEncodeStream writes int8 per-channel data and float32 scales", async () => {
  const t = info({});
  const q = Int8Array.from({ length: 12 }, (_, i) => i * 21 - 127);
  const scales = new Float32Array([0.5, 0.25, 1e-3]);
  const chunks = [0, 1, 2].map((r) => slab(t, r * 4, q.slice(r * 4, r * 4 + 4), r, scales.slice(r, r + 1)));
  const file = await encode(quantizedSpecs(t), chunks, { "w": '{"dtype":"int8"}' });
  const { header, bytes } = tensorsOf(file);
  assert.equal(header.dataStart % 8, 0);
  assert.deepEqual(header.metadata, { "w": '{"dtype":"int8"}' });
  assert.deepEqual(header.entries.map((e) => [e.name, e.dtype, e.shape]), [
    ["w", "I8", [3, 4]],
    ["w.scale", "F32", [3, 1]],
  ]);
  assert.deepEqual(new Int8Array(bytes.get("w")!.buffer), q);
  assert.deepEqual(new Float32Array(bytes.get("w.scale")!.buffer), scales);
});

test("SafetensorsEncodeStream writes uint8 with float16 scales and zero points, scales in any slab order", async () => {
  const t = info({ dtype: "uint8", mode: "linear", scaleDType: "float16", sourceDType: "float16" });
  const q = Uint8Array.from({ length: 12 }, (_, i) => i * 20);
  const chunks = [
    // All scales on the first slab (as for per-tensor layouts), written out of index order.
    slab(t, 0, q.slice(0, 5), 1, new Uint16Array([0x3800, 0x3400]), new Uint8Array([7, 250])),
    slab(t, 5, q.slice(5, 6), 0, new Uint16Array([0x3c00]), new Uint8Array([128])),
    slab(t, 6, q.slice(6)),
  ];
  const file = await encode(quantizedSpecs(t), chunks);
  const { header, bytes } = tensorsOf(file);
  assert.deepEqual(header.entries.map((e) => [e.name, e.dtype, e.shape]), [
    ["w", "U8", [3, 4]],
    ["w.scale", "F16", [3, 1]],
    ["w.zero_point", "U8", [3, 1]],
  ]);
  assert.deepEqual(bytes.get("w"), q);
  assert.deepEqual(new Uint16Array(bytes.get("w.scale")!.buffer), new Uint16Array([0x3c00, 0x3800, 0x3400]));
  assert.deepEqual(bytes.get("w.zero_point"), new Uint8Array([128, 7, 250]));
});

test("SafetensorsEncodeStream packs int4 over the whole tensor across odd slab boundaries", async () => {
  const t = info({ dtype: "int4", mode: "linear", shape: [3, 5], scaleShape: [1, 1], granularity: "per_tensor" });
  const values = Array.from({ length: 15 }, (_, i) => (i * 5) % 16 - 8);
  const q = Int8Array.from(values);
  for (const cuts of [[15], [3, 5, 7], [1, 1, 1, 12], [2, 2, 11], [0, 15], [7, 1, 7], [14, 1]]) {
    const chunks: QuantizedSlab[] = [];
    let at = 0;
    for (const n of cuts) {
      const first = chunks.length === 0;
      chunks.push(
        first
          ? slab(t, at, q.slice(at, at + n), 0, new Float32Array([0.125]), new Int8Array([-3]))
          : slab(t, at, q.slice(at, at + n)),
      );
      at += n;
    }
    const { header, bytes } = tensorsOf(await encode(quantizedSpecs(t), chunks));
    assert.deepEqual(header.entries.map((e) => [e.name, e.dtype, e.shape]), [
      ["w", "U8", [8]],
      ["w.scale", "F32", [1, 1]],
      ["w.zero_point", "I8", [1, 1]],
    ]);
    assert.deepEqual(bytes.get("w"), packReference(values), `cuts ${cuts}`);
    // Element 0 in the low nibble of byte 0; the odd last element leaves the high nibble 0.
    assert.equal(bytes.get("w")![0] & 15, values[0] & 15);
    assert.equal(bytes.get("w")![7] >> 4, 0);
    assert.deepEqual(new Int8Array(bytes.get("w.zero_point")!.buffer), new Int8Array([-3]));
    assert.deepEqual(new Float32Array(bytes.get("w.scale")!.buffer), new Float32Array([0.125]));
  }
});

test("SafetensorsEncodeStream writes uint4 per-block with its zero points", async () => {
  const t = info({
    dtype: "uint4",
    granularity: "per_block",
    shape: [2, 8],
    blockSizes: [1, 4],
    scaleShape: [2, 2],
  });
  const values = Array.from({ length: 16 }, (_, i) => (i * 3) % 15);
  const chunks = [
    slab(t, 0, Uint8Array.from(values.slice(0, 8)), 0, new Float32Array([1, 2]), new Uint8Array([7, 7])),
    slab(t, 8, Uint8Array.from(values.slice(8)), 2, new Float32Array([3, 4]), new Uint8Array([7, 7])),
  ];
  const { bytes } = tensorsOf(await encode(quantizedSpecs(t), chunks));
  assert.deepEqual(bytes.get("w"), packReference(values));
  assert.deepEqual(new Float32Array(bytes.get("w.scale")!.buffer), new Float32Array([1, 2, 3, 4]));
  assert.deepEqual(bytes.get("w.zero_point"), new Uint8Array([7, 7, 7, 7]));
});

test("SafetensorsEncodeStream writes raw and quantized tensors in spec order, skipping empty specs", async () => {
  const t = info({ name: "h.0.w" });
  const q = Int8Array.from({ length: 12 }, (_, i) => i - 6);
  const ids = bytesOf(BigInt64Array.from([1n, -2n, 3n]));
  const bias = bytesOf(new Float32Array([0.5, -0.5]));
  const specs: OutputTensorSpec[] = [
    { name: "ids", dtype: "I64", shape: [3], byteLength: 24 },
    { name: "none", dtype: "F32", shape: [0], byteLength: 0 },
    ...quantizedSpecs(t),
    { name: "bias", dtype: "F32", shape: [2], byteLength: 8 },
    { name: "tail", dtype: "U8", shape: [0, 2], byteLength: 0 },
  ];
  const chunks: Chunk[] = [
    raw("ids", "I64", [3], 0, ids.slice(0, 7)),
    raw("ids", "I64", [3], 7, ids.slice(7)),
    slab(t, 0, q.slice(0, 8), 0, new Float32Array([1, 2])),
    slab(t, 8, q.slice(8), 2, new Float32Array([3])),
    raw("bias", "F32", [2], 0, bias),
  ];
  const { header, bytes } = tensorsOf(await encode(specs, chunks));
  assert.deepEqual(header.entries.map((e) => e.name), ["ids", "none", "h.0.w", "h.0.w.scale", "bias", "tail"]);
  assert.deepEqual(bytes.get("ids"), ids);
  assert.deepEqual(bytes.get("h.0.w"), bytesOf(q));
  assert.deepEqual(bytes.get("bias"), bias);
  assert.deepEqual(bytes.get("none"), new Uint8Array(0));
});

test("SafetensorsEncodeStream output read by readSafetensors copies a model byte for byte", async () => {
  const w = Float32Array.from({ length: 6 * 5 }, (_, i) => Math.sin(i));
  const h = Uint16Array.from({ length: 4 }, (_, i) => 0x3c00 + i);
  const specs: OutputTensorSpec[] = [
    { name: "w", dtype: "F32", shape: [6, 5], byteLength: 120 },
    { name: "h", dtype: "F16", shape: [4], byteLength: 8 },
    { name: "m", dtype: "BOOL", shape: [2], byteLength: 2 },
  ];
  const chunks = [
    raw("w", "F32", [6, 5], 0, bytesOf(w)),
    raw("h", "F16", [4], 0, bytesOf(h)),
    raw("m", "BOOL", [2], 0, new Uint8Array([1, 0])),
  ];
  const original = await encode(specs, chunks, { format: "pt" });
  const model = await readSafetensors(original, { slabBytes: 40 });
  // Every tensor passes through unchanged: slabs become raw chunks.
  const asRaw = model.chunks.pipeThrough(
    new TransformStream<Slab | RawChunk, Chunk>({
      transform(c, controller) {
        if (c.kind === "raw") return controller.enqueue(c);
        const code = c.tensor.dtype === "float32" ? "F32" : "F16";
        const shape = [...c.tensor.shape];
        controller.enqueue(raw(c.tensor.name, code, shape, c.offset * c.data.BYTES_PER_ELEMENT, bytesOf(c.data)));
      },
    }),
  );
  const dir = mkdtempSync(join(tmpdir(), "quantflow-sink-"));
  try {
    const path = join(dir, "copy.safetensors");
    await asRaw.pipeThrough(new SafetensorsEncodeStream(specs, { ...model.header.metadata })).pipeTo(
      writeFileAtomically(path),
    );
    assert.deepEqual(new Uint8Array(readFileSync(path)), original);
    assert.deepEqual(readdirSync(dir), ["copy.safetensors"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("SafetensorsEncodeStream rejects chunks that do not match the specs", async () => {
  const t = info({});
  const specs: OutputTensorSpec[] = [{ name: "a", dtype: "U8", shape: [4], byteLength: 4 }, ...quantizedSpecs(t)];
  const a = (offset: number, n: number) => raw("a", "U8", [4], offset, new Uint8Array(n));
  const row = (r: number) => slab(t, r * 4, new Int8Array(4), r, new Float32Array([1]));
  await rejectsRange(
    encode(specs, [raw("b", "U8", [4], 0, new Uint8Array(4))]),
    'Cannot write tensor "b": it is not among the output tensors',
  );
  await rejectsRange(
    encode(specs, [a(0, 2), row(0)]),
    'Cannot write tensor "w": it came before the data of "a" was complete (2 of 4 bytes)',
  );
  await rejectsRange(encode(specs, [a(0, 5)]), 'Cannot write tensor "a": 5 bytes of data, the header says 4');
  await rejectsRange(encode(specs, [a(0, 2), a(3, 1)]), 'Cannot write tensor "a": chunk at byte 3, expected byte 2');
  await rejectsRange(
    encode(specs, [raw("a", "I8", [4], 0, new Uint8Array(4))]),
    'Cannot write tensor "a": chunk dtype I8, the header says U8',
  );
  await rejectsRange(encode(specs, [a(0, 3)]), 'Cannot write tensor "a": the input ended after 3 of 4 bytes');
  await rejectsRange(encode(specs, [a(0, 4)]), 'Cannot write tensor "w": the input ended after 0 of 12 bytes');
  await rejectsRange(
    encode(specs, [a(0, 4), row(0)]),
    'Cannot write tensor "w": the input ended after 4 of 12 elements',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), row(0), row(2)]),
    'Cannot write tensor "w": slab at element 8, expected element 4',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), row(0), a(0, 4)]),
    'Cannot write tensor "a": it came before "w" was complete',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), row(0), row(1), slab(t, 8, new Int8Array(4))]),
    'Cannot write tensor "w": all 12 elements came with 2 of 3 scales',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), row(0), row(1), row(2), a(0, 4)]),
    'Cannot write tensor "a": its data already ended; now writing "w.scale"',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), slab(t, 0, new Int8Array(13))]),
    'Cannot write tensor "w": 13 elements, the shape [3,4] has 12',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), slab(t, 0, new Int8Array(4), 0, new Uint16Array([1]))]),
    'Cannot write tensor "w": scales are a Uint16Array, scaleDType float32 needs a Float32Array',
  );
  await rejectsRange(
    encode(specs, [a(0, 4), slab(t, 0, new Int8Array(4), 2, new Float32Array([1, 1]))]),
    'Cannot write tensor "w": scales 2-3 beyond the 3 of shape [3,1]',
  );
  // The quantized tensor's recipe must match the declared specs.
  await rejectsRange(
    encode(specs, [a(0, 4), slab(info({ dtype: "uint8" }), 0, new Uint8Array(4))]),
    'Cannot write tensor "w": output spec 1 is {"name":"w","dtype":"I8","shape":[3,4],"byteLength":12}, ' +
      'the quantized tensor needs {"name":"w","dtype":"U8","shape":[3,4],"byteLength":12}',
  );
  const u = info({ dtype: "uint8" });
  await rejectsRange(
    encode(quantizedSpecs(u), [slab(u, 0, new Uint8Array(4), 0, new Float32Array([1]))]),
    'Cannot write tensor "w": a slab carries 1 scales and no zero points',
  );
  await assert.rejects(encode(specs, [{ kind: "other" } as unknown as Chunk]), {
    name: "TypeError",
    message: "Cannot encode a chunk of kind other: a safetensors encoder takes raw chunks and quantized slabs",
  });
});

test("SafetensorsEncodeStream validates its specs at construction", () => {
  assert.throws(
    () => new SafetensorsEncodeStream([{ name: "a", dtype: "U8", shape: [4], byteLength: 3 }], {}),
    { name: "RangeError", message: 'Tensor "a": byteLength 3, but U8 [4] needs 4' },
  );
  assert.throws(
    () => new SafetensorsEncodeStream([], { a: 1 as unknown as string }),
    TypeError,
  );
});

test("writeFileAtomically makes the file appear only when closed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "quantflow-atomic-"));
  try {
    const path = join(dir, "out.bin");
    const writer = writeFileAtomically(path).getWriter();
    await writer.write(new Uint8Array([1, 2, 3]));
    await writer.write(new Uint8Array(0));
    await writer.write(new Uint8Array([4]));
    assert.equal(existsSync(path), false);
    const temps = readdirSync(dir);
    assert.equal(temps.length, 1);
    assert.match(temps[0], /^out\.bin\.[0-9a-f]{8}\.tmp$/);
    await writer.close();
    assert.deepEqual(readdirSync(dir), ["out.bin"]);
    assert.deepEqual([...readFileSync(path)], [1, 2, 3, 4]);
    // Replaces an existing file.
    await ReadableStream.from([new Uint8Array([9])]).pipeTo(writeFileAtomically(path, { fsync: false }));
    assert.deepEqual([...readFileSync(path)], [9]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("writeFileAtomically leaves no file on abort or on a failing source", async () => {
  const dir = mkdtempSync(join(tmpdir(), "quantflow-atomic-"));
  try {
    const path = join(dir, "out.bin");
    const writer = writeFileAtomically(path).getWriter();
    await writer.write(new Uint8Array([1, 2, 3]));
    await writer.abort(new Error("stop"));
    assert.deepEqual(readdirSync(dir), []);

    const failing = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array([1]));
      },
      pull(controller) {
        controller.error(new Error("source broke"));
      },
    });
    await assert.rejects(failing.pipeTo(writeFileAtomically(path)), { message: "source broke" });
    assert.deepEqual(readdirSync(dir), []);

    // An encoder error mid-stream aborts the file too.
    const specs = [{ name: "a", dtype: "U8", shape: [4], byteLength: 4 }];
    await assert.rejects(
      ReadableStream.from([raw("a", "U8", [4], 0, new Uint8Array(2))])
        .pipeThrough(new SafetensorsEncodeStream(specs, {}))
        .pipeTo(writeFileAtomically(path)),
      RangeError,
    );
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("writeFileAtomically throws at once when the directory does not exist, naming the path given", () => {
  const path = join(tmpdir(), `quantflow-missing-${crypto.randomUUID()}`, "out.bin");
  assert.throws(() => writeFileAtomically(path), (e: Error & { code?: string }) => {
    assert.equal(e.code, "ENOENT");
    assert.ok(e.message.startsWith(`Cannot write "${path}": `), e.message);
    return true;
  });
});
