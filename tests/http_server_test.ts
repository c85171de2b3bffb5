import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { configOf } from "@quantflow/quantflow";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { createApp, type RunningServer, serveApp } from "../http.ts";
import { checkpoint, chunked, collect, smallModel } from "./_http_fixtures.ts";

const OCTET = "application/octet-stream";

describe("serveApp with createApp, over a real socket", () => {
  let server: RunningServer;
  const errors: unknown[] = [];

  before(async () => {
    const app = createApp({
      slabBytes: 64 * 1024,
      maxBodyBytes: 64 * 1024 * 1024,
      // Bun 1.4 sometimes misses a client's disconnect; the stall timeout then frees the slot.
      stalledResponseMs: 1000,
      onError: (e) => errors.push(e),
    });
    server = await serveApp(app.fetch, { port: 0 });
  });

  after(async () => {
    await server.shutdown();
  });

  async function health() {
    const res = await fetch(`${server.url}/healthz`);
    assert.equal(res.status, 200);
    return await res.json();
  }

  async function waitIdle() {
    const end = Date.now() + 5000;
    while ((await health()).active !== 0) {
      if (Date.now() > end) assert.fail("the server kept a slot after the client left");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  function upload(path: string, body: Uint8Array | ReadableStream<Uint8Array>, signal?: AbortSignal) {
    // PITFALLS 9: a streamed body needs duplex "half", missing from Deno's RequestInit type.
    return fetch(`${server.url}${path}`, {
      method: "POST",
      body,
      headers: { "content-type": OCTET },
      duplex: "half",
      signal,
    } as RequestInit);
  }

  it("listens on the port it was given (0: any free one)", () => {
    assert.ok(server.port > 0);
    assert.equal(server.url, `http://127.0.0.1:${server.port}`);
  });

  it("quantizes a streamed (chunked) upload exactly as quantizeSafetensors does", async () => {
    const model = checkpoint([{ name: "a", shape: [256, 200] }, { name: "b", shape: [300, 64] }, {
      name: "c",
      shape: [7],
    }]);
    const res = await upload("/v1/quantize?dtype=int4&granularity=per_block&block-size=32", chunked(model, 10007));
    assert.equal(res.status, 200);
    const got = await collect(res.body!);
    const job = await quantizeSafetensors(model, {
      config: configOf({ dtype: "int4", granularity: "per_block", blockSize: 32 }),
    });
    assert.deepEqual(got, await collect(job.output));
  });

  it("answers a bad request with its 4xx JSON error", async () => {
    const res = await upload("/v1/quantize?granularity=sideways", smallModel());
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.status, 400);
    const bad = await upload("/v1/quantize", new TextEncoder().encode("definitely not safetensors"));
    assert.equal(bad.status, 422);
    await bad.body?.cancel();
  });

  it("keeps serving after a client aborts mid-response, and frees its slot", async () => {
    const model = checkpoint([{ name: "a", shape: [1024, 1024] }, { name: "b", shape: [1024, 1024] }]);
    const controller = new AbortController();
    const res = await upload("/v1/quantize", chunked(model, 1 << 16), controller.signal);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await assert.rejects(reader.read());
    await waitIdle();
    assert.equal((await health()).status, "ok");
  });

  it("stops the work and frees the slot when a client aborts the download of a fully sent upload", async () => {
    const model = checkpoint([{ name: "a", shape: [2048, 2048] }, { name: "b", shape: [2048, 2048] }], {});
    const controller = new AbortController();
    const res = await upload("/v1/quantize", model, controller.signal);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await assert.rejects(reader.read());
    await waitIdle();
  });

  it("resets the response, rather than ending it, when bad data shows up after streaming began", async () => {
    const model = checkpoint([
      { name: "a", shape: [512, 256] },
      { name: "b", shape: [512, 256], value: (i) => (i === 100_000 ? Infinity : i % 100) },
    ]);
    const res = await upload("/v1/quantize", model);
    assert.equal(res.status, 200);
    await assert.rejects(collect(res.body!));
    await waitIdle();
    assert.ok(errors.some((e) => (e as Error).name === "NonFiniteError"));
  });
});
