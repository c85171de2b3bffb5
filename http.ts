/**
 * quantflow's HTTP service, a separate entry point so that importing the
 * core (`@quantflow/quantflow`) never loads Hono.
 *
 * ```ts ignore
 * import { createApp } from "@quantflow/quantflow/http";
 * Deno.serve({ port: 8787 }, createApp({ maxConcurrent: 4 }).fetch);
 * ```
 *
 * Then `curl --data-binary @model.safetensors -H 'content-type: application/octet-stream'
 * 'http://127.0.0.1:8787/v1/quantize?dtype=int8' -o model.int8.safetensors`.
 *
 * @module
 */
export * from "./src/http/app.ts";
export * from "./src/http/serve_app.ts";
export * from "./src/http/serve_command.ts";
export * from "./src/http/http_error.ts";
export * from "./src/http/byte_limit_stream.ts";
export * from "./src/http/header_limit_stream.ts";
export * from "./src/http/concurrency_gate.ts";
export * from "./src/http/media_type.ts";
