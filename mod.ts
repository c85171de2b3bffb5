/**
 * quantflow: linear quantization of neural-network weights and activations
 * with Core ML Tools' numbers, streamed through Web `TransformStream`s in
 * bounded memory.
 *
 * ```ts
 * import { quantizeTensor } from "@quantflow/quantflow";
 * import assert from "node:assert/strict";
 *
 * const w = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.cos(i));
 * const q = quantizeTensor({ name: "fc.weight", dtype: "float32", shape: [64, 64], data: w });
 * assert.equal(q.kind, "quantized");
 * ```
 *
 * @module
 */
export * from "./src/types.ts";
export * from "./src/errors.ts";
export * from "./src/ranges.ts";
export { DEFAULT_QUANTIZE_OPTIONS, resolveQuantizeOptions } from "./src/quantize_options.ts";
export * from "./src/tensor_plan.ts";
export * from "./src/quantize_tensor.ts";
export * from "./src/pack.ts";
export { f16round, roundHalfEven } from "./src/float16.ts";
export * from "./src/config.ts";
export * from "./src/report.ts";
export * from "./streams/quantize_stream.ts";
export * from "./src/safetensors_header.ts";
export * from "./src/byte_source.ts";
export * from "./src/spool.ts";
export type { Allocate } from "./src/buffer_ring.ts";
export * from "./streams/safetensors_source.ts";
export * from "./streams/safetensors_sink.ts";
export * from "./streams/channel_stats_stream.ts";
export * from "./streams/dequantize_stream.ts";
export * from "./streams/quantize_pipeline.ts";
export * from "./streams/quantize_arrow.ts";
export * from "./streams/dequantize_pipeline.ts";
export * from "./streams/inspect.ts";
export * from "./src/shard_index.ts";
export * from "./streams/sharded_checkpoint.ts";
export * from "./streams/arrow_ipc_encode_stream.ts";
export * from "./streams/arrow_ipc_decode_stream.ts";
export * from "./src/calibration_stats.ts";
export * from "./src/calibration_stats_arrow.ts";
export * from "./src/activation_params.ts";
export * from "./src/activation_quantize.ts";
export * from "./streams/calibrate_stream.ts";
export * from "./streams/activation_quantize_stream.ts";
export * from "./streams/activation_sample_source.ts";
