/**
 * W8A8 in five steps: calibrate a small MLP's activations, quantize its
 * weights and activations to int8, and measure how closely it still agrees
 * with the float network.
 *
 *     deno run -A examples/w8a8.ts        bun examples/w8a8.ts
 */
import {
  type ActivationParams,
  type ActivationSample,
  CalibrateStream,
  computeActivationParams,
  dequantizeActivation,
  dequantizeTensor,
  quantizeActivation,
  quantizeTensor,
} from "../mod.ts";

// --- A tiny MLP (64 -> 128 -> 128 -> 10, ReLU) with seeded random weights.
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(42);
const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

interface Layer {
  name: string;
  inputs: number;
  outputs: number;
  weight: Float32Array; // [outputs, inputs], row-major, as PyTorch's nn.Linear stores it
  bias: Float32Array;
}
const layer = (name: string, inputs: number, outputs: number): Layer => ({
  name,
  inputs,
  outputs,
  weight: Float32Array.from({ length: outputs * inputs }, () => gauss() * Math.sqrt(2 / inputs)), // He init
  bias: Float32Array.from({ length: outputs }, () => 0.1 * gauss()),
});
const network = [layer("fc1", 64, 128), layer("fc2", 128, 128), layer("fc3", 128, 10)];

/** Runs the MLP; `atInput` sees (and may replace) each layer's input activation. */
function forward(
  layers: Layer[],
  x: Float32Array,
  atInput: (name: string, x: Float32Array) => Float32Array = (_, v) => v,
): Float32Array {
  for (const [k, { name, inputs, outputs, weight, bias }] of layers.entries()) {
    x = atInput(`${name}.input`, x);
    const y = new Float32Array(outputs);
    for (let o = 0; o < outputs; o++) {
      let s = bias[o];
      for (let i = 0; i < inputs; i++) s += weight[o * inputs + i] * x[i];
      y[o] = k < layers.length - 1 ? Math.max(0, s) : s; // ReLU except on the logits
    }
    x = y;
  }
  return x;
}

// Inputs: noisy copies of 10 prototypes, so the logits have a clear winner most of the time.
const prototypes = Array.from({ length: 10 }, () => Float32Array.from({ length: 64 }, gauss));
const sample = () => prototypes[Math.floor(rand() * 10)].map((v) => v + 0.8 * gauss());
const calibrationSet = Array.from({ length: 256 }, sample);
const testSet = Array.from({ length: 1000 }, sample);

// --- 1. Stream every layer input of the float network into calibration.
async function* activations(): AsyncGenerator<ActivationSample> {
  for (const x of calibrationSet) {
    const seen: ActivationSample[] = [];
    forward(network, x, (name, v) => {
      seen.push({ name, data: v });
      return v;
    });
    yield* seen;
  }
}
const [stats] = await Array.fromAsync(ReadableStream.from(activations()).pipeThrough(new CalibrateStream()));

// --- 2. Activation parameters (SPEC.md Section 6: int8, linear_symmetric, float16 arithmetic).
const params = new Map<string, ActivationParams>(computeActivationParams(stats).map((p) => [p.name, p]));
for (const p of params.values()) {
  console.log(`${p.name.padEnd(10)} range [${p.rmin}, ${p.rmax}]  scale ${p.scale}  zero point ${p.zeroPoint}`);
}

// --- 3. int8 weights: quantize per output channel, then dequantize for this float kernel.
const w8 = network.map((l) => {
  const q = quantizeTensor(
    { name: `${l.name}.weight`, dtype: "float32", shape: [l.outputs, l.inputs], data: l.weight },
    { weightThreshold: 0 }, // these layers are smaller than Core ML Tools' default threshold
  );
  if (q.kind !== "quantized") throw new Error(q.message);
  return { ...l, weight: dequantizeTensor(q).data as Float32Array };
});

// --- 4. int8 activations: quantize -> dequantize every layer input with its stored parameters.
const a8 = (name: string, x: Float32Array) =>
  dequantizeActivation(quantizeActivation({ name, data: x }, params.get(name)!)).data;

// --- 5. Compare float against W8A8 on held-out inputs.
const argmax = (v: Float32Array) => v.indexOf(Math.max(...v));
let signal = 0, noise = 0, agree = 0, agreeW8 = 0;
for (const x of testSet) {
  const ref = forward(network, x);
  const out = forward(w8, x, a8);
  for (let i = 0; i < ref.length; i++) {
    signal += ref[i] ** 2;
    noise += (ref[i] - out[i]) ** 2;
  }
  agree += Number(argmax(ref) === argmax(out));
  agreeW8 += Number(argmax(ref) === argmax(forward(w8, x)));
}
console.log(`output SNR, float vs W8A8: ${(10 * Math.log10(signal / noise)).toFixed(1)} dB`);
console.log(
  `top-1 agreement: W8A8 ${(agree / testSet.length * 100).toFixed(1)} %, W8 only ${
    (agreeW8 / testSet.length * 100).toFixed(1)
  } % (${testSet.length} inputs)`,
);
