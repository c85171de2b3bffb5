import { encodeSafetensorsHeader } from "@quantflow/quantflow";

/** One float32 tensor of a test checkpoint; `value(i)` gives element `i`. */
export interface TestTensor {
  name: string;
  shape: number[];
  value?: (i: number) => number;
}

/** A float32 safetensors checkpoint built with `encodeSafetensorsHeader`. */
export function checkpoint(tensors: TestTensor[], metadata: Record<string, string> = {}): Uint8Array {
  const sizes = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1));
  const header = encodeSafetensorsHeader(
    tensors.map((t, k) => ({ name: t.name, dtype: "F32", shape: t.shape, byteLength: sizes[k] * 4 })),
    metadata,
  );
  const file = new Uint8Array(header.length + sizes.reduce((a, b) => a + b, 0) * 4);
  file.set(header);
  let at = header.length;
  tensors.forEach((t, k) => {
    const values = new Float32Array(file.buffer, at, sizes[k]);
    const value = t.value ?? ((i: number) => Math.sin(i * 0.37 + k) * (1 + (i % 7)));
    for (let i = 0; i < sizes[k]; i++) values[i] = value(i);
    at += sizes[k] * 4;
  });
  return file;
}

/** A small model: two quantizable matrices, a bias (rank 1, skipped by default) and a small tensor under the threshold. */
export function smallModel(): Uint8Array {
  return checkpoint([
    { name: "h.0.attn.weight", shape: [64, 48] },
    { name: "h.0.attn.bias", shape: [64] },
    { name: "h.0.mlp.weight", shape: [96, 64] },
    { name: "ln.weight", shape: [8, 8] },
  ]);
}

/** Concatenates chunks. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** All bytes of a stream. */
export async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  return concat(chunks);
}

/** The bytes cut into pieces of `size` bytes, as a stream (a chunked upload). */
export function chunked(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at += size));
    },
  }, { highWaterMark: 0 });
}
