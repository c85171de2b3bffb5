import { encodeSafetensorsHeader } from "@quantflow/quantflow";

/** One tensor of a test checkpoint: its dtype code, shape and raw bytes. */
export interface TestTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Builds safetensors bytes from tensors in the given order. */
export function checkpoint(tensors: Record<string, TestTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const entries = Object.entries(tensors);
  const header = encodeSafetensorsHeader(
    entries.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, byteLength: t.bytes.length })),
    metadata,
  );
  const out = new Uint8Array(header.length + entries.reduce((a, [, t]) => a + t.bytes.length, 0));
  out.set(header);
  let at = header.length;
  for (const [, t] of entries) out.set(t.bytes, at), at += t.bytes.length;
  return out;
}

/** Raw bytes of a typed array. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Reads a safetensors file into `{ name: { dtype, shape, bytes } }` with a minimal independent parser. */
export function readCheckpoint(
  bytes: Uint8Array,
): { tensors: Record<string, TestTensor>; metadata: Record<string, string> } {
  const file = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength); // not a Buffer
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)));
  const tensors: Record<string, TestTensor> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [b, e] } = v as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    tensors[name] = { dtype, shape, bytes: file.slice(8 + n + b, 8 + n + e) };
  }
  return { tensors, metadata: json.__metadata__ ?? {} };
}

/** A file with a hand-written header JSON (for malformed headers the encoder refuses to write). */
export function rawFile(headerJson: string, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(headerJson.padEnd(Math.ceil(headerJson.length / 8) * 8));
  const file = new Uint8Array(8 + json.length + dataBytes);
  new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
  file.set(json, 8);
  return file;
}
