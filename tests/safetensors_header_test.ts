import { test } from "node:test";
import assert from "node:assert/strict";
import { FormatError } from "../src/errors.ts";
import {
  dtypeSize,
  encodeSafetensorsHeader,
  floatDTypeOf,
  isSafetensorsDType,
  parseSafetensorsHeader,
  safetensorsCodeOf,
  safetensorsHeaderSize,
} from "../src/safetensors_header.ts";

/** A file whose header is the given JSON text (unpadded) followed by `dataBytes` zero bytes. */
function fileWith(json: string, dataBytes = 0, declaredLength?: number): Uint8Array {
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? text.length), true);
  out.set(text, 8);
  return out;
}

function throwsFormat(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.equal(e.name, "FormatError");
    if (typeof message === "string") assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

test("header codec: round trip keeps names, dtypes, shapes, order and metadata", () => {
  const specs = [
    { name: "b", dtype: "F16", shape: [3, 5], byteLength: 30 },
    { name: "0", dtype: "I64", shape: [2], byteLength: 16 },
    { name: "a", dtype: "BOOL", shape: [], byteLength: 1 },
    { name: "empty", dtype: "F32", shape: [0, 4], byteLength: 0 },
    { name: "ünï", dtype: "F8_E4M3", shape: [7], byteLength: 7 },
  ];
  const bytes = encodeSafetensorsHeader(specs, { format: "pt", config: '{"a":1}' });
  assert.equal(bytes.length % 8, 0);
  const total = bytes.length + 54;
  const h = parseSafetensorsHeader(bytes, total);
  assert.equal(h.dataStart, bytes.length);
  assert.equal(h.headerLength, bytes.length - 8);
  assert.equal(h.dataEnd, total);
  assert.deepEqual(h.metadata, { format: "pt", config: '{"a":1}' });
  let at = bytes.length;
  const expected = specs.map((s) => {
    const e = { name: s.name, dtype: s.dtype, shape: s.shape, begin: at, end: at + s.byteLength };
    at += s.byteLength;
    return e;
  });
  // Sorted by begin; the empty tensor and its successor share an offset and keep spec order.
  assert.deepEqual(h.entries, expected);
});

test("header codec: header JSON is padded with spaces and has no __metadata__ when empty", () => {
  const bytes = encodeSafetensorsHeader([{ name: "x", dtype: "U8", shape: [1], byteLength: 1 }], {});
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(8 + n, bytes.length);
  const text = new TextDecoder().decode(bytes.subarray(8));
  assert.equal(text.trimEnd(), '{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}');
  assert.match(text, /^\{.*\} *$/);
  assert.deepEqual(parseSafetensorsHeader(bytes).metadata, {});
});

test("header codec: parses a header without a file size and reports dataEnd", () => {
  const bytes = fileWith('{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}');
  const h = parseSafetensorsHeader(bytes);
  assert.equal(h.dataEnd, h.dataStart + 16);
  assert.equal(safetensorsHeaderSize(bytes), h.dataStart);
});

test("header codec: allows gaps between tensors", () => {
  const json =
    '{"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
  const bytes = fileWith(json, 6);
  const h = parseSafetensorsHeader(bytes, bytes.length);
  assert.deepEqual(h.entries.map((e) => e.name), ["b", "a"]);
});

test("header codec: encoder rejects bad specs with RangeError / TypeError", () => {
  assert.throws(() => encodeSafetensorsHeader([{ name: "x", dtype: "Q4", shape: [1], byteLength: 1 }], {}), {
    name: "RangeError",
    message: 'Unknown safetensors dtype "Q4"',
  });
  assert.throws(() => encodeSafetensorsHeader([{ name: "x", dtype: "F32", shape: [2], byteLength: 4 }], {}), {
    name: "RangeError",
    message: 'Tensor "x": byteLength 4, but F32 [2] needs 8',
  });
  assert.throws(
    () =>
      encodeSafetensorsHeader([
        { name: "x", dtype: "U8", shape: [1], byteLength: 1 },
        { name: "x", dtype: "U8", shape: [1], byteLength: 1 },
      ], {}),
    { name: "RangeError", message: 'Tensor "x" is listed twice' },
  );
  assert.throws(
    () => encodeSafetensorsHeader([{ name: "x", dtype: "U8", shape: [-1], byteLength: 1 }], {}),
    RangeError,
  );
  assert.throws(
    () => encodeSafetensorsHeader([], { a: 1 as unknown as string }),
    { name: "TypeError", message: 'Metadata value of "a" is number, not a string' },
  );
});

test("dtypeSize knows every safetensors dtype", () => {
  const sizes = {
    F64: 8,
    F32: 4,
    F16: 2,
    BF16: 2,
    I64: 8,
    I32: 4,
    I16: 2,
    I8: 1,
    U64: 8,
    U32: 4,
    U16: 2,
    U8: 1,
    BOOL: 1,
    F8_E4M3: 1,
    F8_E5M2: 1,
  };
  for (const [code, size] of Object.entries(sizes)) {
    assert.equal(dtypeSize(code), size, code);
    assert.ok(isSafetensorsDType(code));
  }
  assert.ok(!isSafetensorsDType("toString"));
  assert.throws(() => dtypeSize("F128"), { name: "RangeError", message: 'Unknown safetensors dtype "F128"' });
});

test("float codes map both ways", () => {
  assert.equal(floatDTypeOf("F32"), "float32");
  assert.equal(floatDTypeOf("F16"), "float16");
  assert.equal(floatDTypeOf("BF16"), "bfloat16");
  assert.equal(floatDTypeOf("F64"), undefined);
  assert.equal(floatDTypeOf("constructor"), undefined);
  assert.equal(safetensorsCodeOf("float32"), "F32");
  assert.equal(safetensorsCodeOf("float16"), "F16");
  assert.equal(safetensorsCodeOf("bfloat16"), "BF16");
  assert.throws(() => safetensorsCodeOf("int8" as "float32"), RangeError);
});

const W = '"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}';

test("parseSafetensorsHeader throws FormatError on fewer than 8 bytes", () => {
  throwsFormat(
    () => parseSafetensorsHeader(new Uint8Array(5)),
    "Cannot read safetensors header: the file ends at byte 5, before the 8-byte header length",
  );
});

test("parseSafetensorsHeader throws FormatError on header length above 100 MB", () => {
  const bytes = fileWith("{}", 0, 100_000_001);
  throwsFormat(
    () => parseSafetensorsHeader(bytes),
    "Cannot read safetensors header: header length 100000001 at bytes 0-7 exceeds the 100000000-byte limit",
  );
  const huge = new Uint8Array(16).fill(0xff, 4);
  throwsFormat(() => parseSafetensorsHeader(huge), /header length 18446744069414584000 at bytes 0-7 exceeds/);
});

test("parseSafetensorsHeader says so when the input is an Arrow IPC stream", () => {
  const arrow = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, ...new Uint8Array(16)]);
  throwsFormat(
    () => parseSafetensorsHeader(arrow),
    /starts with FF FF FF FF, as an Arrow IPC stream \(\.arrows\) does/,
  );
});

test("parseSafetensorsHeader throws FormatError on header length too small", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith("{}", 0, 1)),
    "Cannot read safetensors header: header length 1 at bytes 0-7 is too short for a JSON object",
  );
});

test("parseSafetensorsHeader throws FormatError on header beyond the end of the file", () => {
  const bytes = fileWith(`{${W}}`, 16, 500);
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read safetensors header: header ends at byte 508, beyond the end of the ${bytes.length}-byte file`,
  );
  // Without a file size, a short prefix is reported the same way.
  throwsFormat(
    () => parseSafetensorsHeader(bytes),
    `Cannot read safetensors header: the file ends at byte ${bytes.length}, header says 508`,
  );
});

test("parseSafetensorsHeader throws FormatError on not JSON", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"w": [1,2')),
    /^Cannot read safetensors header: bytes 8-17 are not valid JSON \(/,
  );
});

test("parseSafetensorsHeader throws FormatError on not UTF-8", () => {
  const bytes = fileWith('{"w":1}');
  bytes[10] = 0xff;
  throwsFormat(() => parseSafetensorsHeader(bytes), "Cannot read safetensors header: bytes 8-14 are not valid UTF-8");
});

test("parseSafetensorsHeader throws FormatError on not an object", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith("[1, 2]")),
    "Cannot read safetensors header: bytes 8-13 hold an array, not a JSON object",
  );
  throwsFormat(
    () => parseSafetensorsHeader(fileWith("null")),
    "Cannot read safetensors header: bytes 8-11 hold null, not a JSON object",
  );
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('"ab"')),
    "Cannot read safetensors header: bytes 8-11 hold string, not a JSON object",
  );
});

test("parseSafetensorsHeader throws FormatError on tensor entry not an object", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"w": 3}')),
    'Cannot read tensor "w": its header entry is not an object',
  );
});

test("parseSafetensorsHeader throws FormatError on unknown dtype", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"h.0.w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', 1)),
    'Cannot read tensor "h.0.w": unknown dtype "F4"',
  );
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"w":{"shape":[2],"data_offsets":[0,1]}}', 1)),
    'Cannot read tensor "w": unknown dtype undefined',
  );
});

test("parseSafetensorsHeader throws FormatError on bad shape", () => {
  for (const shape of ["[2,-1]", "[2.5]", '"2"', "[9007199254740992]", "null"]) {
    throwsFormat(
      () => parseSafetensorsHeader(fileWith(`{"w":{"dtype":"U8","shape":${shape},"data_offsets":[0,1]}}`, 1)),
      `Cannot read tensor "w": shape ${JSON.stringify(JSON.parse(shape))} is not a list of non-negative integers`,
    );
  }
});

test("parseSafetensorsHeader throws FormatError on bad data_offsets", () => {
  for (const offsets of ["[0]", "[0,1,2]", "[-1,1]", "[0,1.5]", '"0,1"']) {
    throwsFormat(
      () => parseSafetensorsHeader(fileWith(`{"w":{"dtype":"U8","shape":[1],"data_offsets":${offsets}}}`, 1)),
      `Cannot read tensor "w": data_offsets ${
        JSON.stringify(JSON.parse(offsets))
      } is not a pair of non-negative integers`,
    );
  }
  const bytes = fileWith('{"w":{"dtype":"U8","shape":[1],"data_offsets":[4,3]}}', 4);
  const start = bytes.length - 4;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read tensor "w": data_offsets [4, 3] end before they begin (bytes ${start + 4}-${start + 3})`,
  );
});

test("parseSafetensorsHeader throws FormatError on offsets outside the data section", () => {
  const bytes = fileWith(`{${W}}`, 12);
  const start = bytes.length - 12;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read tensor "w": data ends at byte ${start + 12}, header says ${start + 16}`,
  );
});

test("parseSafetensorsHeader throws FormatError on byte length does not match shape x dtype size", () => {
  const bytes = fileWith('{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}', 16);
  const start = bytes.length - 16;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read tensor "w": data_offsets [0, 16] (bytes ${start}-${start + 16}) hold 16 bytes, but F32 [2,3] needs 24`,
  );
});

test("parseSafetensorsHeader throws FormatError on overlapping tensors", () => {
  const json =
    '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}';
  const bytes = fileWith(json, 5);
  const s = bytes.length - 5;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read tensor "b": its data (bytes ${s + 3}-${s + 5}) overlaps tensor "a" (bytes ${s}-${s + 4})`,
  );
  // An empty tensor inside another's range reads nothing and is allowed.
  const ok = fileWith(
    '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}',
    4,
  );
  assert.equal(parseSafetensorsHeader(ok, ok.length).entries.length, 2);
});

test("parseSafetensorsHeader throws FormatError on file truncated", () => {
  const json = '{"h.0.attn.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}';
  const bytes = fileWith(json, 16);
  const s = bytes.length - 16;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length - 3),
    `Cannot read tensor "h.0.attn.weight": data ends at byte ${s + 13}, header says ${s + 16}`,
  );
});

test("parseSafetensorsHeader throws FormatError on bytes after the data section", () => {
  const bytes = fileWith(`{${W}}`, 20);
  const end = bytes.length - 4;
  throwsFormat(
    () => parseSafetensorsHeader(bytes, bytes.length),
    `Cannot read safetensors file: 4 unexpected bytes after the data section, which ends at byte ${end} (file size ${bytes.length})`,
  );
});

test("parseSafetensorsHeader throws FormatError on metadata not strings", () => {
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"__metadata__":{"a":"x","n":3}}')),
    'Cannot read safetensors header: "__metadata__" value of "n" is number, not a string',
  );
  throwsFormat(
    () => parseSafetensorsHeader(fileWith('{"__metadata__":["a"]}')),
    'Cannot read safetensors header: "__metadata__" is not an object of strings',
  );
});

test("parseSafetensorsHeader throws FormatError on too many elements", () => {
  throwsFormat(
    () =>
      parseSafetensorsHeader(
        fileWith('{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', 8),
      ),
    'Cannot read tensor "w": shape [4294967296,4294967296] has too many elements',
  );
});
