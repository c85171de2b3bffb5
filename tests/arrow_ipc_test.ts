import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Message,
  type RecordBatch,
  RecordBatchReader,
  RecordBatchStreamWriter,
  tableFromArrays,
  tableToIPC,
} from "apache-arrow";
import { tableFromIPC } from "@uwdata/flechette";
import { ArrowIpcEncodeStream, toArrowIPC } from "../streams/arrow_ipc_encode_stream.ts";
import { ArrowIpcDecodeStream, readArrowIPC } from "../streams/arrow_ipc_decode_stream.ts";
import { padded8, recordBatchMessage } from "../src/_arrow_ipc_message.ts";
import { FlatBufferBuilder } from "../src/_flatbuffers.ts";
import { FormatError } from "../src/errors.ts";
import type { FloatDType, QuantizedSlab, QuantizedTensorInfo, Slab } from "../src/types.ts";

// ---------------------------------------------------------------------------
// helpers

type Chunk = Slab | QuantizedSlab;

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

/** Encodes slabs, and checks every time that apache-arrow's own writer gives the same bytes (see below). */
async function encodeChunks(inputs: Chunk[]): Promise<Uint8Array[]> {
  const chunks = await collect(ReadableStream.from(inputs).pipeThrough(new ArrowIpcEncodeStream()));
  const bytes = concat(chunks);
  assert.deepEqual(rewrittenByApacheArrow(bytes), bytes, "apache-arrow's writer writes the batches it reads otherwise");
  return chunks;
}

async function encode(inputs: Chunk[]): Promise<Uint8Array> {
  return concat(await encodeChunks(inputs));
}

/**
 * The streams apache-arrow reads in `bytes`, written again by its stream writer. The encoder writes the schema and
 * record batch messages itself (src/_arrow_ipc_message.ts); equal bytes mean they are those apache-arrow would write.
 */
function rewrittenByApacheArrow(bytes: Uint8Array): Uint8Array {
  const streams: Uint8Array[] = [];
  for (const reader of RecordBatchReader.readAll(bytes)) {
    streams.push(RecordBatchStreamWriter.writeAll(reader.readAll()).toUint8Array(true));
  }
  return concat(streams);
}

function decode(chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<Chunk[]> {
  return collect(ReadableStream.from(chunks).pipeThrough(new ArrowIpcDecodeStream()));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) out.set(c, at), at += c.byteLength;
  return out;
}

/** Cuts bytes into chunks of the given sizes, cycling; each chunk is a copy at an arbitrary alignment. */
function rechunk(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length], bytes.length - at);
    out.push(bytes.slice(at, at + n));
    at += n;
  }
  return out;
}

async function* slowly(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) {
    await Promise.resolve();
    yield c;
  }
}

const CHUNKINGS: [string, (b: Uint8Array) => Iterable<Uint8Array> | AsyncIterable<Uint8Array>][] = [
  ["whole", (b) => [b]],
  ["1-byte", (b) => rechunk(b, [1])],
  ["7-byte", (b) => rechunk(b, [7])],
  ["odd-sized", (b) => rechunk(b, [13, 1, 250, 3, 4099])],
  ["async iterable", (b) => slowly(rechunk(b, [64, 5]))],
];

/** Decodes the bytes under every chunking and checks the result each time. */
async function assertDecodesTo(bytes: Uint8Array, expected: Chunk[]): Promise<void> {
  for (const [label, cut] of CHUNKINGS) {
    assert.deepEqual(await decode(cut(bytes)), expected, `chunking: ${label}`);
  }
}

function floatSlab(
  name: string,
  dtype: FloatDType,
  shape: number[],
  offset: number,
  data: Float32Array | Uint16Array,
): Slab {
  return { kind: "slab", tensor: { name, dtype, shape }, offset, data };
}

function ramp(n: number, start = 0): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => (start + i) * 0.25 - 3);
}

function bits16(n: number, start = 0): Uint16Array {
  return Uint16Array.from({ length: n }, (_, i) => (0x3c00 + (start + i) * 37) & 0xffff);
}

function f16(h: number): number {
  const e = (h >> 10) & 0x1f, m = h & 0x3ff, s = h & 0x8000 ? -1 : 1;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

function info(over: Partial<QuantizedTensorInfo> & Pick<QuantizedTensorInfo, "name" | "shape">): QuantizedTensorInfo {
  const rank = over.shape.length;
  return {
    sourceDType: "float32",
    dtype: "int8",
    mode: "linear_symmetric",
    granularity: "per_channel",
    axis: 0,
    blockSizes: over.shape.map((_, i) => (i === 0 ? 1 : 0)),
    scaleShape: over.shape.map((d, i) => (i === 0 ? d : 1)),
    scaleDType: "float32",
    ...over,
    ...(rank ? {} : {}),
  };
}

function qslab(
  tensor: QuantizedTensorInfo,
  offset: number,
  data: number[],
  scaleOffset: number,
  scale: number[],
  zeroPoint?: number[],
): QuantizedSlab {
  const signed = tensor.dtype === "int8" || tensor.dtype === "int4";
  const ints = (xs: number[]) => (signed ? Int8Array.from(xs) : Uint8Array.from(xs));
  const slab: QuantizedSlab = {
    kind: "quantized",
    tensor,
    offset,
    data: ints(data),
    scaleOffset,
    scale: tensor.scaleDType === "float32" ? Float32Array.from(scale) : Uint16Array.from(scale),
  };
  return zeroPoint ? { ...slab, zeroPoint: ints(zeroPoint) } : slab;
}

function ints(n: number, lo: number, hi: number, seed = 1): number[] {
  return Array.from({ length: n }, (_, i) => lo + ((i * 7 + seed * 3) % (hi - lo + 1)));
}

/** flechette's schema metadata, as a map. */
function metaOf(table: { schema: { metadata?: Map<string, string> | null } }): Map<string, string> {
  return table.schema.metadata ?? new Map();
}

/** The entries of a flechette FixedSizeList column, as arrays of numbers. */
function entriesOf(column: unknown): number[][] {
  return Array.from(column as Iterable<ArrayLike<number>>, (entry) => Array.from(entry));
}

/** Every table apache-arrow's `readAll` finds, each read before the next stream is opened. */
function arrowTables(bytes: Uint8Array): RecordBatch[][] {
  const tables: RecordBatch[][] = [];
  for (const reader of RecordBatchReader.readAll(bytes)) tables.push(reader.readAll());
  return tables;
}

const END = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

// ---------------------------------------------------------------------------
// float slabs

test("float32 slabs of whole rows round-trip under every chunking", async () => {
  const slabs = [
    floatSlab("h.0.w", "float32", [4, 6], 0, ramp(12)),
    floatSlab("h.0.w", "float32", [4, 6], 12, ramp(12, 12)),
  ];
  const bytes = await encode(slabs);
  assert.deepEqual(Array.from(bytes.subarray(-8)), END);
  await assertDecodesTo(bytes, slabs);
});

test("float16 and bfloat16 slabs round-trip as raw bits", async () => {
  const slabs = [
    floatSlab("half", "float16", [3, 4], 0, bits16(8)),
    floatSlab("half", "float16", [3, 4], 8, bits16(4, 8)),
    floatSlab("brain", "bfloat16", [2, 3], 0, bits16(6, 100)),
  ];
  await assertDecodesTo(await encode(slabs), slabs);
});

test("rows split across slabs use a list size dividing the row and count rows in its units", async () => {
  const slabs = [0, 4, 8, 12, 16].map((o) => floatSlab("big", "float32", [2, 10], o, ramp(4, o)));
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.equal(metaOf(table).get("quantflow.list_size"), "2");
  assert.deepEqual(table.getChild("row").toArray(), Int32Array.from({ length: 10 }, (_, i) => i));
});

test("a tensor whose slabs change alignment continues in a second stream and decodes whole", async () => {
  const slabs = [
    floatSlab("odd", "float32", [2, 10], 0, ramp(4)),
    floatSlab("odd", "float32", [2, 10], 4, ramp(3, 4)),
    floatSlab("odd", "float32", [2, 10], 7, ramp(13, 7)),
  ];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const tables = arrowTables(bytes);
  assert.equal(tables.length, 2);
  assert.deepEqual(tables.map((batches) => batches[0].schema.metadata.get("quantflow.list_size")), ["2", "1"]);
});

test("rank-1 and rank-0 tensors are one row holding the whole tensor", async () => {
  const slabs = [
    floatSlab("bias", "float32", [5], 0, ramp(5)),
    floatSlab("scalar", "float32", [], 0, Float32Array.of(7)),
  ];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const [[bias]] = arrowTables(bytes);
  assert.equal(bias.numRows, 1);
  assert.equal(bias.schema.metadata.get("quantflow.list_size"), "5");
});

test("names and metadata in any script are written as apache-arrow writes them", async () => {
  const t = info({ name: "层.0.权重 ✓", shape: [2, 3], scaleShape: [2, 1] });
  const slabs = [floatSlab("ünïcödé 😀", "float32", [1, 2], 0, ramp(2)), qslab(t, 0, ints(6, -127, 127), 0, [1, 2])];
  await assertDecodesTo(await encode(slabs), slabs);
});

test("an empty tensor is a stream of one batch of no rows, which both readers take", async () => {
  const slabs = [
    floatSlab("empty", "float32", [0, 4], 0, new Float32Array(0)),
    floatSlab("w", "float32", [1, 2], 0, ramp(2)),
  ];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  assert.deepEqual(arrowTables(bytes).map((batches) => batches.map((b) => b.numRows)), [[0], [1]]);
  assert.equal(tableFromIPC(bytes).numRows, 0);
});

test("a record batch message declares bodies of 2 GiB and more exactly", () => {
  // Only the columns' lengths matter to the message: stand-ins spare the test 2.5 GiB of memory.
  const column = (length: number, bytes: number, list: boolean) =>
    ({ values: { length, byteLength: bytes } as Float32Array, list }) as const;
  const rows = 4;
  const message = recordBatchMessage(rows, [column(rows, 16, false), column(2 ** 29 + 2, 2 ** 31 + 8, true)]);
  const decoded = Message.decode(message.subarray(8));
  assert.equal(Number(decoded.bodyLength), 16 + 2 ** 31 + 8);
  const header = decoded.header() as unknown as { buffers: { offset: number; length: number }[] };
  assert.deepEqual(header.buffers.map((b) => [b.offset, b.length]), [[0, 0], [0, 16], [16, 0], [16, 0], [
    16,
    2 ** 31 + 8,
  ]]);
  assert.equal(padded8(2 ** 32 + 1), 2 ** 32 + 8);
  assert.equal(padded8(2 ** 52 + 3), 2 ** 52 + 8);
});

test("the encoder passes large values through as views of the slab's memory", async () => {
  const data = ramp(64 * 1024);
  const chunks = await encodeChunks([floatSlab("big", "float32", [64, 1024], 0, data)]);
  assert.ok(chunks.some((c) => c.buffer === data.buffer && c.byteLength === data.byteLength));
  assert.deepEqual(await decode(chunks), [floatSlab("big", "float32", [64, 1024], 0, data)]);
});

test("decoded float32 slabs view an aligned input chunk without copying", async () => {
  const bytes = await encode([floatSlab("w", "float32", [4, 256], 0, ramp(1024))]);
  const [slab] = await decode([bytes]);
  assert.equal(slab.data.buffer, bytes.buffer);
});

// ---------------------------------------------------------------------------
// quantized slabs

test("int8 per-channel scales on axis 0 travel as a column, one per row", async () => {
  const t = info({ name: "q8", shape: [3, 4], scaleShape: [3, 1] });
  const slabs = [qslab(t, 0, ints(8, -127, 127), 0, [0.5, 0.25]), qslab(t, 8, ints(4, -127, 127, 2), 2, [0.125])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.deepEqual(table.schema.fields.map((f) => f.name), ["row", "q", "scale"]);
  assert.equal(metaOf(table).get("quantflow.scale_layout"), "column");
});

test("uint8 linear per-channel slabs carry a zero_point column", async () => {
  const t = info({ name: "u8", shape: [2, 3], dtype: "uint8", mode: "linear", scaleShape: [2, 1] });
  const slabs = [qslab(t, 0, ints(6, 0, 255), 0, [0.1, 0.2], [128, 7])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.deepEqual(table.schema.fields.map((f) => f.name), ["row", "q", "scale", "zero_point"]);
  assert.deepEqual(Array.from(table.getChild("zero_point").at(0) as Uint8Array), [128]);
});

test("int4 with an odd row length packs each row into ceil(L/2) bytes, low nibble first", async () => {
  const t = info({ name: "q4", shape: [3, 5], dtype: "int4", mode: "linear", scaleShape: [3, 1] });
  const q = [-8, 7, -1, 0, 3, 1, 2, -3, -4, 5, 6, -7, -8, 4, -2];
  const slabs = [qslab(t, 0, q.slice(0, 10), 0, [1, 2], [0, -1]), qslab(t, 10, q.slice(10), 2, [3], [2])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  const row0 = Array.from(table.getChild("q").at(0) as Int8Array, (b) => b & 0xff);
  assert.deepEqual(row0, [0x78, 0x0f, 0x03]); // (-8, 7), (-1, 0), (3, pad)
});

test("uint4 per-block scales: two blocks per row in the scale column", async () => {
  const t = info({
    name: "u4",
    shape: [2, 8],
    dtype: "uint4",
    granularity: "per_block",
    blockSizes: [1, 4],
    scaleShape: [2, 2],
  });
  const slabs = [qslab(t, 0, ints(16, 0, 15), 0, [1, 2, 3, 4], [7, 7, 7, 7])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.deepEqual(Array.from(table.getChild("scale").at(1) as Float32Array), [3, 4]);
});

test("per-tensor scales travel in the schema metadata with the first slab", async () => {
  const t = info({ name: "pt", shape: [4, 2], granularity: "per_tensor", blockSizes: [0, 0], scaleShape: [1, 1] });
  const slabs = [qslab(t, 0, ints(4, -127, 127), 0, [0.03125]), qslab(t, 4, ints(4, -127, 127, 5), 1, [])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.deepEqual(table.schema.fields.map((f) => f.name), ["row", "q"]);
  assert.equal(metaOf(table).get("quantflow.scale"), "[0.03125]");
  assert.equal(metaOf(table).get("quantflow.zero_point"), undefined);
  const config = JSON.parse(metaOf(table).get("quantflow.config")!);
  assert.equal(config.granularity, "per_tensor");
  assert.equal(config.sourceDType, "float32");
});

test("per-channel float16 scales on axis 1 travel in the metadata as float values, zero points too", async () => {
  const t = info({
    name: "ax1",
    shape: [2, 3],
    sourceDType: "float16",
    dtype: "uint8",
    mode: "linear",
    axis: 1,
    blockSizes: [0, 1],
    scaleShape: [1, 3],
    scaleDType: "float16",
  });
  const scaleBits = [0x3c00, 0x3555, 0x0001]; // 1, 0.333..., smallest subnormal
  const slabs = [qslab(t, 0, ints(6, 0, 255), 0, scaleBits, [0, 128, 255])];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const meta = metaOf(tableFromIPC(bytes));
  assert.deepEqual(JSON.parse(meta.get("quantflow.scale")!), scaleBits.map(f16));
  assert.equal(meta.get("quantflow.zero_point"), "[0,128,255]");
});

test("per-channel rows split across slabs repeat each row's scale on its entries", async () => {
  const t = info({ name: "wide", shape: [2, 8], mode: "linear", scaleShape: [2, 1] });
  const slabs = [
    qslab(t, 0, ints(4, -128, 127), 0, [0.5], [1]),
    qslab(t, 4, ints(4, -128, 127, 2), 1, [], []),
    qslab(t, 8, ints(4, -128, 127, 3), 1, [0.75], [-2]),
    qslab(t, 12, ints(4, -128, 127, 4), 2, [], []),
  ];
  const bytes = await encode(slabs);
  await assertDecodesTo(bytes, slabs);
  const table = tableFromIPC(bytes);
  assert.equal(metaOf(table).get("quantflow.list_size"), "4");
  assert.deepEqual(entriesOf(table.getChild("scale")).map((e) => e[0]), [0.5, 0.5, 0.75, 0.75]);
});

test("a quantized tensor continued in a second stream keeps its metadata scales on its first slab only", async () => {
  const t = info({ name: "pt2", shape: [2, 10], granularity: "per_tensor", blockSizes: [0, 0], scaleShape: [1, 1] });
  const slabs = [
    qslab(t, 0, ints(4, -127, 127), 0, [0.5]),
    qslab(t, 4, ints(3, -127, 127, 2), 1, []),
    qslab(t, 7, ints(13, -127, 127, 3), 1, []),
  ];
  const bytes = await encode(slabs);
  assert.equal(arrowTables(bytes).length, 2);
  await assertDecodesTo(bytes, slabs);
});

test("split rows continued in a second stream carry the open row's scale across", async () => {
  const t = info({ name: "wide2", shape: [2, 10], dtype: "uint8", mode: "linear", scaleShape: [2, 1] });
  const slabs = [
    qslab(t, 0, ints(4, 0, 255), 0, [0.5], [9]),
    qslab(t, 4, ints(3, 0, 255, 2), 1, [], []),
    qslab(t, 7, ints(3, 0, 255, 3), 1, [], []),
    qslab(t, 10, ints(10, 0, 255, 4), 1, [0.25], [200]),
  ];
  const bytes = await encode(slabs);
  const tables = arrowTables(bytes);
  assert.equal(tables.length, 2);
  const zeroPoints = tables[1][0].getChild("zero_point")!.data[0].children[0].values as Uint8Array;
  assert.deepEqual(Array.from(zeroPoints.subarray(0, 3)), [9, 9, 9]);
  await assertDecodesTo(bytes, slabs);
});

// ---------------------------------------------------------------------------
// independent readers

test("flechette reads the encoder's float slabs with the same values and metadata", async () => {
  const f32 = floatSlab("f32", "float32", [2, 3], 0, ramp(6));
  const t1 = tableFromIPC(await encode([f32]));
  const meta = metaOf(t1);
  assert.equal(meta.get("quantflow.kind"), "slab");
  assert.equal(meta.get("quantflow.name"), "f32");
  assert.equal(meta.get("quantflow.dtype"), "float32");
  assert.equal(meta.get("quantflow.shape"), "[2,3]");
  assert.deepEqual(Array.from(t1.getChild("row").toArray() as Int32Array), [0, 1]);
  assert.deepEqual(entriesOf(t1.getChild("values")).flat(), Array.from(f32.data));

  const half = floatSlab("half", "float16", [2, 2], 0, bits16(4));
  const t2 = tableFromIPC(await encode([half]));
  assert.deepEqual(entriesOf(t2.getChild("values")).flat(), Array.from(half.data, f16));

  const brain = floatSlab("brain", "bfloat16", [1, 3], 0, bits16(3, 9));
  const t3 = tableFromIPC(await encode([brain]));
  assert.equal(metaOf(t3).get("quantflow.dtype"), "bfloat16");
  assert.deepEqual(Array.from(t3.getChild("values").at(0) as Uint16Array), Array.from(brain.data));
});

test("apache-arrow readAll reads concatenated tensor streams, one table each", async () => {
  const a = floatSlab("a", "float32", [2, 2], 0, ramp(4));
  const t = info({ name: "b", shape: [2, 2], scaleShape: [2, 1] });
  const b = qslab(t, 0, [1, -2, 3, -4], 0, [0.5, 0.25]);
  const bytes = await encode([a, b]);
  const tables = arrowTables(bytes);
  assert.deepEqual(tables.map((batches) => batches[0].schema.metadata.get("quantflow.name")), ["a", "b"]);
  assert.deepEqual(Array.from(tables[1][0].getChild("q")!.get(1) as Int8Array), [3, -4]);
  await assertDecodesTo(bytes, [a, b]);
});

// ---------------------------------------------------------------------------
// errors

async function rejection(chunks: Iterable<Uint8Array>): Promise<Error> {
  try {
    await decode(chunks);
  } catch (error) {
    return error as Error;
  }
  assert.fail("decoding did not fail");
}

test("a stream cut exactly at a batch boundary is a FormatError naming the tensor", async () => {
  const slabs = [
    floatSlab("cut.weight", "float32", [4, 2], 0, ramp(4)),
    floatSlab("cut.weight", "float32", [4, 2], 4, ramp(4, 4)),
  ];
  const chunks = await encodeChunks(slabs);
  const bytes = concat(chunks.slice(0, -1)); // drop the end-of-stream marker
  for (const [label, cut] of CHUNKINGS.slice(0, 4)) {
    const error = await rejection(cut(bytes) as Iterable<Uint8Array>);
    assert.ok(error instanceof FormatError, label);
    assert.match(
      error.message,
      /tensor "cut\.weight" is truncated: input ends at byte \d+ after 2 record batches, without the end-of-stream marker/,
    );
  }
  // Both apache-arrow and flechette accept these bytes (PITFALLS 6), hence the check of our own.
  assert.equal(tableFromIPC(bytes).numRows, 4);
});

test("a stream cut at the boundary between two tensors is truncated too", async () => {
  const first = await encode([floatSlab("first", "float32", [2, 2], 0, ramp(4))]);
  const second = await encode([floatSlab("second", "float32", [2, 2], 0, ramp(4))]);
  const error = await rejection([first.subarray(0, -8), second]);
  assert.ok(error instanceof FormatError);
  assert.match(error.message, /tensor "first" is invalid: a new schema at byte \d+ before the end-of-stream marker/);
});

test("a stream cut anywhere before its end is a FormatError, naming the tensor once its schema is read", async () => {
  const t = info({ name: "mid", shape: [2, 3], dtype: "uint8", mode: "linear", scaleShape: [2, 1] });
  const chunks = await encodeChunks([
    qslab(t, 0, ints(3, 0, 255), 0, [0.5], [3]),
    qslab(t, 3, ints(3, 0, 255), 1, [0.25], [4]),
  ]);
  const bytes = concat(chunks);
  // The schema message is the first one: continuation, metadata length, metadata (no body).
  const schemaEnd = 8 + new DataView(bytes.buffer, bytes.byteOffset).getInt32(4, true);
  for (let cutAt = 1; cutAt < bytes.length; cutAt++) {
    const error = await rejection(rechunk(bytes.subarray(0, cutAt), [7]));
    assert.ok(error instanceof FormatError, `cut at ${cutAt}`);
    const where = cutAt < schemaEnd ? "Arrow IPC stream" : 'Arrow IPC stream of tensor "mid"';
    assert.ok(
      error.message.startsWith(`${where} is truncated: input ends at byte ${cutAt} `),
      `cut at ${cutAt}: ${error.message}`,
    );
  }
  const inSchema = await rejection([bytes.subarray(0, 20)]);
  assert.match(inSchema.message, /^Arrow IPC stream is truncated: input ends at byte 20 inside a message/);
  const inBody = await rejection([bytes.subarray(0, bytes.length - 12)]);
  assert.match(
    inBody.message,
    /^Arrow IPC stream of tensor "mid" is truncated: input ends at byte \d+ inside a \d+-byte message/,
  );
});

test("garbage bytes are a FormatError", async () => {
  const error = await rejection([new TextEncoder().encode("hello, this is not arrow")]);
  assert.ok(error instanceof FormatError);
  assert.match(error.message, /expected the continuation marker ff ff ff ff at byte 0, found 68 65 6c 6c/);
  const bad = await rejection([Uint8Array.of(0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0, ...new Uint8Array(16).fill(0xab))]);
  assert.ok(bad instanceof FormatError);
  assert.match(bad.message, /unreadable message metadata at byte 0|declares|message at byte 0 comes before any schema/);
});

test("a schema apache-arrow reads but quantflow's layout cannot (a list without a child type) is a FormatError", async () => {
  // Written field by field: no encoder of ours or apache-arrow's would write this schema.
  const b = new FlatBufferBuilder();
  const field = (name: string, typeId: number, type: number) => {
    const children = b.createOffsetVector([]);
    const nameOffset = b.createString(name);
    b.startObject(7);
    b.addFieldOffset(3, type);
    b.addFieldInt8(2, typeId, 0);
    b.addFieldOffset(5, children);
    b.addFieldOffset(0, nameOffset);
    return b.endObject();
  };
  b.startObject(2);
  b.addFieldInt32(0, 32, 0);
  b.addFieldInt8(1, 1, 0);
  const row = field("row", 2, b.endObject());
  b.startObject(1);
  b.addFieldInt32(0, 2, 0);
  const values = field("values", 16, b.endObject()); // FixedSizeList<2> of nothing
  const fields = b.createOffsetVector([row, values]);
  const meta = [["kind", "slab"], ["name", "w"], ["dtype", "float32"], ["shape", "[2,2]"], ["list_size", "2"]].map(
    ([k, v]) => {
      const key = b.createString(`quantflow.${k}`), value = b.createString(v);
      b.startObject(2);
      b.addFieldOffset(0, key);
      b.addFieldOffset(1, value);
      return b.endObject();
    },
  );
  const metadata = b.createOffsetVector(meta);
  b.startObject(4);
  b.addFieldOffset(1, fields);
  b.addFieldOffset(2, metadata);
  const schema = b.endObject();
  b.startObject(5);
  b.addFieldInt16(0, 4, 0);
  b.addFieldOffset(2, schema);
  b.addFieldInt8(1, 1, 0);
  const flatbuffer = b.finish(b.endObject());
  const bytes = new Uint8Array(8 + padded8(flatbuffer.length));
  new DataView(bytes.buffer).setInt32(0, -1, true);
  new DataView(bytes.buffer).setInt32(4, bytes.length - 8, true);
  bytes.set(flatbuffer, 8);
  const error = await rejection([concat([bytes, Uint8Array.from(END)])]);
  assert.ok(error instanceof FormatError, String(error));
  assert.match(error.message, /schema at byte 0 is not quantflow's layout/);
});

test("an Arrow stream without quantflow metadata is a FormatError", async () => {
  const bytes = tableToIPC(tableFromArrays({ x: Float32Array.of(1, 2) }), "stream");
  const error = await rejection([bytes]);
  assert.ok(error instanceof FormatError);
  assert.match(error.message, /not a quantflow tensor stream/);
});

test("the encoder rejects non-slabs and scales it cannot place", async () => {
  const run = (inputs: unknown[]) => encodeChunks(inputs as Chunk[]);
  await assert.rejects(run([{ nope: true }]), TypeError);
  await assert.rejects(
    run([floatSlab("w", "float32", [2, 2], 0, new Uint16Array(4))]),
    { name: "TypeError", message: /float32 tensor "w" holds a Uint16Array; expected a Float32Array/ },
  );
  await assert.rejects(run([floatSlab("w", "float32", [2, 2], 2, ramp(4))]), RangeError);
  const t = info({ name: "pt", shape: [2, 2], granularity: "per_tensor", blockSizes: [0, 0], scaleShape: [1, 1] });
  await assert.rejects(run([qslab(t, 0, [1, 2], 0, [])]), {
    name: "TypeError",
    message: /tensor "pt" as Arrow: .* its first slab must carry all 1; it carries \[0, 0\)/,
  });
  assert.throws(() => new ArrowIpcDecodeStream({ maxMessageBytes: 0 }), RangeError);
});

// ---------------------------------------------------------------------------
// stream behaviour

test("cancelling the decoder's output cancels its input", async () => {
  const bytes = await encode([0, 2, 4, 6].map((o) => floatSlab("c", "float32", [8, 4], o * 4, ramp(8, o * 4))));
  const pieces = rechunk(bytes, [32]);
  let cancelled: unknown;
  let pulled = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled < pieces.length) controller.enqueue(pieces[pulled++]);
      else controller.close();
    },
    cancel(reason) {
      cancelled = reason;
    },
  }, { highWaterMark: 0 });
  const reader = source.pipeThrough(new ArrowIpcDecodeStream()).getReader();
  const first = await reader.read();
  assert.equal(first.value?.offset, 0);
  await reader.cancel("enough");
  assert.equal(cancelled, "enough");
  assert.ok(pulled < pieces.length);
});

test("an error of the input reaches the decoder's output", async () => {
  const bytes = await encode([floatSlab("e", "float32", [2, 2], 0, ramp(4))]);
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes.subarray(0, 10));
      controller.error(new Error("disk on fire"));
    },
  });
  await assert.rejects(collect(source.pipeThrough(new ArrowIpcDecodeStream())), /disk on fire/);
});

test("the decoder stays pull-driven: it reads little input ahead of its reader", async () => {
  const slabs = Array.from({ length: 50 }, (_, i) => floatSlab("p", "float32", [50, 256], i * 256, ramp(256)));
  const pieces = await encodeChunks(slabs);
  let pulled = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled < pieces.length) controller.enqueue(pieces[pulled++]);
      else controller.close();
    },
  }, { highWaterMark: 0 });
  const reader = source.pipeThrough(new ArrowIpcDecodeStream()).getReader();
  await reader.read();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(pulled <= 4, `pulled ${pulled} of ${pieces.length} chunks for one slab`);
  await reader.cancel();
});

test("the encoder stays under backpressure: one slab in, one chunk out", async () => {
  let pulled = 0;
  const source = new ReadableStream<Slab>({
    pull(controller) {
      if (pulled < 50) controller.enqueue(floatSlab("b", "float32", [50, 256], pulled++ * 256, ramp(256)));
      else controller.close();
    },
  }, { highWaterMark: 0 });
  const reader = source.pipeThrough(toArrowIPC()).getReader();
  await reader.read();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(pulled <= 4, `pulled ${pulled} slabs for one chunk`);
  await reader.cancel();
});

test("readArrowIPC decodes a buffer, an iterable and a stream", async () => {
  const slabs = [floatSlab("r", "float32", [2, 3], 0, ramp(6))];
  const bytes = await encode(slabs);
  assert.deepEqual(await collect(readArrowIPC(bytes)), slabs);
  assert.deepEqual(await collect(readArrowIPC(rechunk(bytes, [5]))), slabs);
  assert.deepEqual(await collect(readArrowIPC(ReadableStream.from([bytes]))), slabs);
});

test("MiB-sized slabs round-trip", async () => {
  const n = 1 << 20;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.sin(i);
  const slabs = [floatSlab("mib", "float32", [256, 4096], 0, data)];
  const [back] = await decode(await encodeChunks(slabs));
  assert.deepEqual(back.data, data);
});
