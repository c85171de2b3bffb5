/**
 * An ETL job: a safetensors checkpoint -> a filter stage of your own ->
 * quantize -> an Arrow IPC file, all `pipeThrough` / `pipeTo`, in bounded
 * memory. Run: `deno run -A examples/etl_pipeline.ts` or `bun examples/etl_pipeline.ts`.
 */
import { mkdirSync } from "node:fs";
import {
  ArrowIpcEncodeStream,
  parseConfig,
  QuantizeStream,
  type RawChunk,
  readSafetensors,
  type Slab,
  writeFileAtomically,
} from "../mod.ts";
import { tinyGpt2 } from "../src/demo_model.ts";

// The source: any path, bytes or ReadableStream of a .safetensors file.
const { header, chunks } = await readSafetensors(tinyGpt2(), { slabBytes: 64 * 1024 });
console.log(`source: ${header.entries.length} tensors`);

// Your own stage: keep the transformer blocks' float weights only (drop masks, ids, embeddings).
const keepBlockWeights = new TransformStream<Slab | RawChunk, Slab | RawChunk>({
  transform(chunk, controller) {
    const name = chunk.kind === "raw" ? chunk.name : chunk.tensor.name;
    if (chunk.kind !== "raw" && name.startsWith("h.") && name.endsWith(".weight")) controller.enqueue(chunk);
  },
});

const quantize = new QuantizeStream(parseConfig({
  global: { dtype: "int8" },
  tensors: { "*.c_attn.weight": { axis: -1 }, "*.c_proj.weight": { axis: -1 }, "*.c_fc.weight": { axis: -1 } },
}));

mkdirSync(".out", { recursive: true });
await chunks
  .pipeThrough(keepBlockWeights)
  .pipeThrough(quantize)
  .pipeThrough(new ArrowIpcEncodeStream())
  .pipeTo(writeFileAtomically(".out/blocks.int8.arrows"));

const { totals } = quantize.report;
console.log(`wrote .out/blocks.int8.arrows: ${totals.quantized} tensors quantized of ${totals.tensors} kept`);
console.log(`${totals.originalBytes} -> ${totals.quantizedBytes} bytes, lowest SNR ${totals.minSnrDb!.toFixed(1)} dB`);
