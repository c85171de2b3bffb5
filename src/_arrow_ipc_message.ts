/**
 * The Arrow IPC messages of the encoder (README.md, "Arrow layout"): schema
 * and record batch messages, written here rather than by apache-arrow.
 *
 * Internal. apache-arrow's writer spent 40-190 µs per record batch (its
 * `RecordBatch`, `Data` and visitor objects, then a flatbuffers builder),
 * ~0.15 s of a 1 GiB `.arrows` job of 1024 slabs, and loading it ~0.1 s
 * more (bench/RESULTS.md, Addendum 5). Our schemas have few types, and our
 * batches one shape (a non-nullable `row` column, then non-nullable
 * fixed-size lists of primitives), so both messages are a few numbers in a
 * known layout: the bytes apache-arrow 21 writes, which tests/arrow_ipc_test.ts
 * checks for every stream it encodes.
 *
 * @module
 */
import type { ColumnType, SchemaSpec } from "./_arrow_layout.ts";
import { FlatBufferBuilder } from "./_flatbuffers.ts";

/** Every encapsulated message starts with this continuation marker (then the metadata length). */
const CONTINUATION = 0xffffffff;
/** Arrow's MetadataVersion.V5. */
const METADATA_V5 = 4;
/** Arrow's MessageHeader: Schema, RecordBatch. */
const HEADER_SCHEMA = 1;
const HEADER_RECORD_BATCH = 3;
/** Arrow's Type (the union tag of a field's type): Int, FloatingPoint, FixedSizeList. */
const TYPE_ID = { int: 2, float: 3, list: 16 } as const;
/** Arrow's Precision: HALF, SINGLE. */
const PRECISION = { 16: 0, 32: 1 } as const;

/**
 * Bytes `n` takes in an IPC body: padded to 8. Exact for every safe integer
 * (`-n & 7` wraps -n to 32 bits, a multiple of 8 away), where apache-arrow's
 * `(n + 7) & ~7` goes wrong from 2 GiB on.
 */
export function padded8(n: number): number {
  return n + (-n & 7);
}

/** A flatbuffer framed as a message: continuation, metadata length, the flatbuffer, zero padding to 8 bytes. */
function framed(flatbuffer: Uint8Array): Uint8Array {
  const length = padded8(flatbuffer.length);
  const out = new Uint8Array(8 + length);
  const view = new DataView(out.buffer);
  view.setUint32(0, CONTINUATION, true);
  view.setInt32(4, length, true);
  out.set(flatbuffer, 8);
  return out;
}

/** The `Type` table of a column type (Int, FloatingPoint or FixedSizeList), as apache-arrow's TypeAssembler builds it. */
function encodeType(b: FlatBufferBuilder, type: ColumnType): number {
  if (type.kind === "int") {
    b.startObject(2);
    b.addFieldInt32(0, type.bits, 0);
    b.addFieldInt8(1, type.signed ? 1 : 0, 0);
  } else if (type.kind === "float") {
    b.startObject(1);
    b.addFieldInt16(0, PRECISION[type.bits], 0);
  } else {
    b.startObject(1);
    b.addFieldInt32(0, type.size, 0);
  }
  return b.endObject();
}

/** A non-nullable `Field` table (a list's child is `item`), in apache-arrow's order of calls. */
function encodeField(b: FlatBufferBuilder, name: string, type: ColumnType): number {
  const typeOffset = encodeType(b, type);
  const children = b.createOffsetVector(type.kind === "list" ? [encodeField(b, "item", type.item)] : []);
  // An empty name is left out, not written as "": apache-arrow does so (readers give "" either way).
  const nameOffset = name ? b.createString(name) : 0;
  b.startObject(7);
  b.addFieldOffset(3, typeOffset);
  b.addFieldInt8(2, TYPE_ID[type.kind], 0);
  b.addFieldOffset(5, children);
  if (nameOffset) b.addFieldOffset(0, nameOffset);
  return b.endObject();
}

/** A vector of `KeyValue` tables. */
function encodeMetadata(b: FlatBufferBuilder, metadata: ReadonlyMap<string, string>): number {
  const pairs = [...metadata].map(([key, value]) => {
    const k = b.createString(key);
    const v = b.createString(value);
    b.startObject(2);
    b.addFieldOffset(0, k);
    b.addFieldOffset(1, v);
    return b.endObject();
  });
  return b.createOffsetVector(pairs);
}

/**
 * The schema message of a stream, as apache-arrow's stream writer writes it:
 * continuation, metadata length, the flatbuffer `Message` whose header is a
 * `Schema` (little-endian, left at its default), zero padding to 8 bytes.
 *
 * @param schema The stream's schema.
 * @returns The message bytes.
 */
export function schemaMessage(schema: SchemaSpec): Uint8Array {
  const b = new FlatBufferBuilder();
  const fields = b.createOffsetVector(schema.fields.map(([name, type]) => encodeField(b, name, type)));
  const metadata = schema.metadata.size > 0 ? encodeMetadata(b, schema.metadata) : 0;
  b.startObject(4);
  b.addFieldOffset(1, fields);
  if (metadata) b.addFieldOffset(2, metadata);
  const header = b.endObject();
  b.startObject(5);
  b.addFieldInt16(0, METADATA_V5, 0);
  b.addFieldOffset(2, header);
  b.addFieldInt8(1, HEADER_SCHEMA, 0);
  return framed(b.finish(b.endObject()));
}

/** One column of a record batch body, in schema order: the `row` column, or a list column's child values. */
export interface BodyColumn {
  /** The values (for the `row` column, one per entry). */
  readonly values: Int32Array | Float32Array | Uint16Array | Int8Array | Uint8Array;
  /** Whether the values are the child of a fixed-size list (one list node and its empty validity buffer before them). */
  readonly list: boolean;
}

/**
 * The record batch message for `entries` table rows with these columns:
 * continuation, metadata length, and the flatbuffer `Message` whose header is
 * a `RecordBatch`, built with the calls apache-arrow's writer makes. Every
 * column is non-nullable, so each node has null count 0 and each validity
 * buffer is empty; each value buffer is padded to 8 bytes in the body, which
 * follows the message, and its length counts the padding (as apache-arrow's).
 *
 * @param entries Table rows of the batch.
 * @param columns The columns' values, in schema order.
 * @returns The message.
 */
export function recordBatchMessage(entries: number, columns: readonly BodyColumn[]): Uint8Array {
  const nodes: number[] = []; // (length, null count) per node
  const buffers: number[] = []; // (offset, length) per buffer in the body
  let bodyLength = 0;
  const buffer = (length: number) => {
    buffers.push(bodyLength, padded8(length));
    bodyLength += padded8(length);
  };
  for (const { values, list } of columns) {
    if (list) {
      nodes.push(entries, 0);
      buffer(0);
    }
    nodes.push(values.length, 0);
    buffer(0);
    buffer(values.byteLength);
  }
  // Room for all of it: 16 bytes per node and buffer, under 100 for the tables and vectors' counts and padding.
  const b = new FlatBufferBuilder(128 + 8 * (nodes.length + buffers.length));
  const nodesVector = b.createInt64PairVector(nodes);
  const buffersVector = b.createInt64PairVector(buffers);
  b.startObject(5);
  b.addFieldInt64(0, entries, 0);
  b.addFieldOffset(1, nodesVector);
  b.addFieldOffset(2, buffersVector);
  const header = b.endObject();
  b.startObject(5);
  b.addFieldInt16(0, METADATA_V5, 0);
  b.addFieldOffset(2, header);
  b.addFieldInt8(1, HEADER_RECORD_BATCH, 0);
  b.addFieldInt64(3, bodyLength, 0);
  return framed(b.finish(b.endObject()));
}
