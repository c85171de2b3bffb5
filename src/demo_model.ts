/**
 * A tiny GPT-2-shaped checkpoint, generated deterministically, for the demo
 * and the tests: laid out as Hugging Face stores GPT-2 (`Conv1D` weights
 * [in, out]), with a `Linear` classifier [out, in], float32 weights,
 * float biases and norms, an I64 and a U8 tensor that pass through.
 *
 * @module
 */
import { encodeSafetensorsHeader, type SafetensorsEntrySpec } from "./safetensors_header.ts";

/** The per-tensor overrides a GPT-2 checkpoint needs: `Conv1D` weights are [in, out], so channels are on axis -1. */
export const GPT2_CONFIG = {
  tensors: {
    "*.c_attn.weight": { axis: -1 },
    "*.c_proj.weight": { axis: -1 },
    "*.c_fc.weight": { axis: -1 },
  },
} as const;

/** Seeded normal numbers (mulberry32 + Box-Muller), so the demo is the same everywhere. */
function normal(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** Options of {@linkcode tinyGpt2}. */
export interface TinyGpt2Options {
  /**
   * Transformer blocks.
   * @default {2}
   */
  layers?: number;
  /**
   * Hidden size.
   * @default {128}
   */
  hidden?: number;
}

/**
 * Builds the tiny GPT-2 checkpoint as safetensors bytes.
 *
 * @param options Size of the model.
 * @returns The file's bytes.
 */
export function tinyGpt2(options: TinyGpt2Options = {}): Uint8Array {
  const layers = options.layers ?? 2;
  const d = options.hidden ?? 128;
  const vocab = 1024, positions = 256, classes = 32;
  const random = normal(2024);
  const tensors: { spec: SafetensorsEntrySpec; data: Uint8Array }[] = [];
  const float = (name: string, shape: number[], make: (i: number) => number) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    // A loop, not `Float32Array.from` with a map function: that took ~85 ms of the demo's 0.37 s (Deno).
    for (let i = 0; i < size; i++) values[i] = make(i);
    tensors.push({ spec: { name, dtype: "F32", shape, byteLength: size * 4 }, data: new Uint8Array(values.buffer) });
  };
  const weight = (std: number) => () => random() * std;
  float("wte.weight", [vocab, d], weight(0.02));
  float("wpe.weight", [positions, d], weight(0.01));
  for (let l = 0; l < layers; l++) {
    const h = `h.${l}`;
    float(`${h}.ln_1.weight`, [d], () => 1 + random() * 0.05);
    float(`${h}.ln_1.bias`, [d], weight(0.01));
    float(`${h}.attn.c_attn.weight`, [d, 3 * d], weight(0.02));
    float(`${h}.attn.c_attn.bias`, [3 * d], weight(0.01));
    float(`${h}.attn.c_proj.weight`, [d, d], weight(0.02 / Math.sqrt(2 * layers)));
    float(`${h}.attn.c_proj.bias`, [d], weight(0.01));
    const mask = new Uint8Array(64 * 64).map((_, i) => (i % 64 <= Math.floor(i / 64) ? 1 : 0));
    tensors.push({
      spec: { name: `${h}.attn.bias`, dtype: "U8", shape: [1, 1, 64, 64], byteLength: mask.length },
      data: mask,
    });
    float(`${h}.ln_2.weight`, [d], () => 1 + random() * 0.05);
    float(`${h}.ln_2.bias`, [d], weight(0.01));
    // A few outlier output channels, as real MLPs have: per-channel scales keep the rest precise.
    float(`${h}.mlp.c_fc.weight`, [d, 4 * d], (i) => random() * 0.02 * (i % (4 * d) < 4 ? 8 : 1));
    float(`${h}.mlp.c_fc.bias`, [4 * d], weight(0.01));
    float(`${h}.mlp.c_proj.weight`, [4 * d, d], weight(0.02 / Math.sqrt(2 * layers)));
    float(`${h}.mlp.c_proj.bias`, [d], weight(0.01));
  }
  float("ln_f.weight", [d], () => 1 + random() * 0.05);
  float("ln_f.bias", [d], weight(0.01));
  float("classifier.weight", [classes, d], weight(0.05));
  const ids = new BigInt64Array(positions).map((_, i) => BigInt(i));
  tensors.push({
    spec: { name: "position_ids", dtype: "I64", shape: [1, positions], byteLength: positions * 8 },
    data: new Uint8Array(ids.buffer),
  });
  const header = encodeSafetensorsHeader(tensors.map((t) => t.spec), { format: "pt" });
  const out = new Uint8Array(header.length + tensors.reduce((a, t) => a + t.data.length, 0));
  out.set(header);
  let at = header.length;
  for (const t of tensors) out.set(t.data, at), at += t.data.length;
  return out;
}
