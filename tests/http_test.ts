import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tableFromArrays, tableToIPC } from "apache-arrow";
import { configOf, parseConfig, type RawChunk, type Slab } from "@quantflow/quantflow";
import { CalibrationStats } from "../src/calibration_stats.ts";
import { computeActivationParams, stringifyActivationParams } from "../src/activation_params.ts";
import { ArrowIpcEncodeStream } from "../streams/arrow_ipc_encode_stream.ts";
import { readSafetensors } from "../streams/safetensors_source.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { createApp, type CreateAppOptions, serveCommand } from "../http.ts";
import { checkpoint, chunked, collect, concat, smallModel } from "./_http_fixtures.ts";

const OCTET = "application/octet-stream";
const ARROW = "application/vnd.apache.arrow.stream";

/** Errors the app reports go to a list instead of the console. */
function testApp(options: CreateAppOptions = {}) {
  const errors: unknown[] = [];
  const app = createApp({ onError: (e) => errors.push(e), ...options });
  return { app, errors };
}

interface PostOptions {
  type?: string | null;
  accept?: string;
  length?: number;
  signal?: AbortSignal;
}

function post(
  app: ReturnType<typeof createApp>,
  path: string,
  body: Uint8Array | ReadableStream<Uint8Array> | null,
  o: PostOptions = {},
) {
  const headers: Record<string, string> = {};
  const type = o.type === undefined ? OCTET : o.type;
  if (type !== null) headers["content-type"] = type;
  if (o.accept) headers.accept = o.accept;
  if (o.length !== undefined) headers["content-length"] = String(o.length);
  // PITFALLS 9: streamed request bodies need duplex "half", which Deno's RequestInit type lacks.
  return app.request(
    path,
    { method: "POST", body: body as BodyInit | null, headers, duplex: "half", signal: o.signal } as RequestInit,
  );
}

async function errorOf(res: Response) {
  assert.equal(res.headers.get("content-type")?.split(";")[0], "application/json");
  const body = await res.json();
  assert.equal(body.error.status, res.status);
  return body.error as { status: number; message: string; issues?: string[] };
}

async function direct(bytes: Uint8Array, config: Parameters<typeof quantizeSafetensors>[1]) {
  const job = await quantizeSafetensors(bytes, config);
  const output = await collect(job.output);
  return { output, report: job.report() };
}

/** Waits for a condition that asynchronous cancellation makes true (pipes propagate it a few ticks later). */
async function until(condition: () => boolean | Promise<boolean>, ms = 2000) {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) assert.fail(`condition not met within ${ms} ms: ${condition}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function health(app: ReturnType<typeof createApp>) {
  return await (await app.request("/healthz")).json();
}

describe("createApp", () => {
  it("answers /healthz with the slots in use", async () => {
    const { app } = testApp({ maxConcurrent: 3 });
    const res = await app.request("/healthz");
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "ok", active: 0, maxConcurrent: 3 });
  });

  it("quantizes safetensors exactly as quantizeSafetensors does, with default options", async () => {
    const { app } = testApp();
    const model = smallModel();
    const res = await post(app, "/v1/quantize", model);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), OCTET);
    const got = new Uint8Array(await res.arrayBuffer());
    assert.deepEqual(got, (await direct(model, { config: configOf({}) })).output);
  });

  it("quantizes with flag parameters, from a chunked upload", async () => {
    const { app } = testApp({ slabBytes: 1000 });
    const model = smallModel();
    const query = "dtype=int4&granularity=per_block&block-size=16&mode=linear&quantize-rank1=true&weight-threshold=0";
    const res = await post(app, `/v1/quantize?${query}`, chunked(model, 777));
    assert.equal(res.status, 200);
    const config = configOf({
      dtype: "int4",
      granularity: "per_block",
      blockSize: 16,
      mode: "linear",
      quantizeRank1: true,
      weightThreshold: 0,
    });
    assert.deepEqual(
      new Uint8Array(await res.arrayBuffer()),
      (await direct(model, { config, slabBytes: 1000 })).output,
    );
  });

  it("quantizes two-pass tensors from the body (spooled) as from the bytes", async () => {
    const { app } = testApp({ slabBytes: 4096 });
    const model = smallModel();
    const json = {
      global: { granularity: "per_tensor" },
      tensors: { "h.0.mlp.*": { granularity: "per_channel", axis: 1 }, "ln.*": null },
    };
    const res = await post(
      app,
      `/v1/quantize?config=${encodeURIComponent(JSON.stringify(json))}`,
      chunked(model, 1 << 12),
    );
    assert.equal(res.status, 200);
    const expected = await direct(model, { config: parseConfig(json), slabBytes: 4096 });
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), expected.output);
  });

  it("lets flag parameters override the config parameter's global options", async () => {
    const { app } = testApp();
    const model = smallModel();
    const json = { global: { dtype: "uint8", mode: "linear" } };
    const res = await post(app, `/v1/quantize?dtype=int8&config=${encodeURIComponent(JSON.stringify(json))}`, model);
    const expected = await direct(model, { config: parseConfig({ global: { dtype: "int8", mode: "linear" } }) });
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), expected.output);
  });

  it("answers in Arrow IPC when Accept asks for it", async () => {
    const { app } = testApp();
    const model = smallModel();
    const res = await post(app, "/v1/quantize", model, { accept: ARROW });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), ARROW);
    const expected = await direct(model, { config: configOf({}), format: "arrows" });
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), expected.output);
  });

  it("quantizes an Arrow slab stream into Arrow IPC", async () => {
    const { app } = testApp();
    const model = smallModel();
    const { chunks } = await readSafetensors(model);
    const slabs = [];
    for await (const c of chunks) {
      if (c.kind !== "raw") slabs.push({ tensor: c.tensor, offset: c.offset, data: c.data });
    }
    const ipc = await collect(ReadableStream.from(slabs).pipeThrough(new ArrowIpcEncodeStream()));
    const res = await post(app, "/v1/quantize", chunked(ipc, 5000), { type: ARROW });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), ARROW);
    const expected = await direct(model, { config: configOf({}), format: "arrows" });
    assert.deepEqual(new Uint8Array(await res.arrayBuffer()), expected.output);
  });

  it("answers ?report=json with the report only", async () => {
    const { app } = testApp();
    const model = smallModel();
    const res = await post(app, "/v1/quantize?report=json&dtype=int4", model);
    assert.equal(res.status, 200);
    const body = await res.json();
    const expected = await direct(model, { config: configOf({ dtype: "int4" }) });
    assert.equal(body.format, "safetensors");
    assert.equal(body.outputBytes, expected.output.length);
    assert.deepEqual(body.report, JSON.parse(JSON.stringify(expected.report)));
    assert.equal(body.report.totals.quantized, 2);
  });

  it("answers 400 with every issue for bad parameters", async () => {
    const { app } = testApp();
    const model = smallModel();
    let err = await errorOf(await post(app, "/v1/quantize?dtype=int3&axis=x&block-size=0&colour=red", model));
    assert.equal(err.status, 400);
    assert.equal(err.message, "Invalid query parameters");
    assert.equal(err.issues?.length, 4);
    assert.deepEqual(err.issues, [
      'dtype: Invalid option: expected one of "int8"|"uint8"|"int4"|"uint4"',
      "axis: expected an integer",
      "block-size: Too small: expected number to be >0",
      "colour: unknown parameter",
    ]);

    // An axis the checkpoint's tensors do not have is found while planning, before the response starts.
    err = await errorOf(await post(app, "/v1/quantize?axis=5", model));
    assert.equal(err.status, 400);
    assert.match(err.message, /axis 5 does not exist in shape/);

    err = await errorOf(await post(app, "/v1/quantize?config=%7Bnope", model));
    assert.equal(err.status, 400);
    assert.match(err.issues![0], /^config: not JSON/);

    err = await errorOf(await post(app, `/v1/quantize?config=${encodeURIComponent('{"global":{"axis":0.5}}')}`, model));
    assert.equal(err.status, 400);
    assert.match(err.issues![0], /^config\.global\.axis: /);

    err = await errorOf(await post(app, "/v1/quantize?mode=linear&mode=linear_symmetric", model));
    assert.deepEqual(err.issues, ["mode: given more than once"]);

    err = await errorOf(await post(app, "/v1/inspect?x=1", model));
    assert.equal(err.status, 400);
  });

  it("answers 415 for a missing or wrong Content-Type", async () => {
    const { app } = testApp();
    let err = await errorOf(await post(app, "/v1/quantize", smallModel(), { type: "text/plain" }));
    assert.equal(err.status, 415);
    assert.match(err.message, /got "text\/plain"/);
    err = await errorOf(await post(app, "/v1/quantize", smallModel(), { type: null }));
    assert.equal(err.status, 415);
    err = await errorOf(await post(app, "/v1/calibrate", smallModel()));
    assert.equal(err.status, 415);
  });

  it("answers 406 when Accept allows no format it can produce", async () => {
    const { app } = testApp();
    let err = await errorOf(await post(app, "/v1/quantize", smallModel(), { accept: "text/html" }));
    assert.equal(err.status, 406);
    err = await errorOf(await post(app, "/v1/quantize", new Uint8Array(8), { type: ARROW, accept: OCTET }));
    assert.equal(err.status, 406);
  });

  it("answers 413 for a declared length over the limit, before reading the body", async () => {
    const { app } = testApp({ maxBodyBytes: 1000 });
    let pulled = false;
    const body = new ReadableStream({ pull: () => void (pulled = true) }, { highWaterMark: 0 });
    const err = await errorOf(await post(app, "/v1/quantize", body, { length: 1001 }));
    assert.equal(err.status, 413);
    assert.equal(err.message, "Request body of 1001 bytes exceeds the limit of 1000 bytes");
    assert.equal(pulled, false);
  });

  it("answers 413 for a chunked body whose header describes a file over the limit", async () => {
    const { app } = testApp({ maxBodyBytes: 4096 });
    const err = await errorOf(await post(app, "/v1/quantize", chunked(smallModel(), 100)));
    assert.equal(err.status, 413);
    assert.match(err.message, /over the limit of 4096 bytes/);
  });

  it("answers 413 for a chunked body over the limit while spooling it", async () => {
    const { app } = testApp({ maxBodyBytes: 4096 });
    const err = await errorOf(await post(app, "/v1/dequantize", chunked(smallModel(), 1000)));
    assert.equal(err.status, 413);
    assert.match(err.message, /exceeds the limit of 4096 bytes/);
  });

  it("answers 413 for a safetensors header over maxHeaderBytes", async () => {
    const { app } = testApp({ maxHeaderBytes: 64 });
    const err = await errorOf(await post(app, "/v1/inspect", smallModel()));
    assert.equal(err.status, 413);
    assert.match(err.message, /exceeds this server's limit of 64 bytes/);
    // Whatever the declared type: /v1/dequantize tells formats apart by their bytes.
    for (const type of [OCTET, ARROW]) {
      const e = await errorOf(await post(app, "/v1/dequantize", smallModel(), { type }));
      assert.equal(e.status, 413, type);
    }
  });

  it("answers 422 for a malformed header, and for a declared length the header contradicts", async () => {
    const { app } = testApp();
    let err = await errorOf(
      await post(app, "/v1/quantize", new TextEncoder().encode("this is not a safetensors file")),
    );
    assert.equal(err.status, 422);
    const model = smallModel();
    const cut = model.subarray(0, model.length - 100);
    err = await errorOf(await post(app, "/v1/quantize", cut, { length: cut.length }));
    assert.equal(err.status, 422);
    assert.equal(
      err.message,
      `Request body is ${cut.length} bytes; its safetensors header says the file is ${model.length} bytes`,
    );
    err = await errorOf(await post(app, "/v1/quantize", new Uint8Array(0)));
    assert.equal(err.status, 422);
    err = await errorOf(await post(app, "/v1/quantize", new Uint8Array([1, 2, 3]), { type: ARROW }));
    assert.equal(err.status, 422);
    assert.deepEqual(await health(app), { status: "ok", active: 0, maxConcurrent: 4 });
  });

  it("errors the response body, never ends it cleanly, when a chunked upload is truncated", async () => {
    const { app, errors } = testApp();
    const model = smallModel();
    const res = await post(app, "/v1/quantize", chunked(model.subarray(0, model.length - 100), 500));
    assert.equal(res.status, 200);
    await assert.rejects(collect(res.body!), { name: "FormatError", message: /data ends at byte/ });
    assert.equal(errors.length, 1);
    assert.equal((await health(app)).active, 0);
  });

  it("errors the response body when a later tensor holds NaN, and keeps serving", async () => {
    const { app, errors } = testApp({ slabBytes: 1024 });
    const model = checkpoint([
      { name: "a", shape: [64, 64] },
      { name: "b", shape: [64, 64], value: (i) => (i === 4000 ? NaN : i) },
    ]);
    const res = await post(app, "/v1/quantize", model);
    assert.equal(res.status, 200);
    await assert.rejects(collect(res.body!), { name: "NonFiniteError" });
    assert.equal(errors.length, 1);
    assert.deepEqual(await health(app), { status: "ok", active: 0, maxConcurrent: 4 });
    // The same input with ?report=json is answered before any byte: a 422.
    const err = await errorOf(await post(app, "/v1/quantize?report=json", model));
    assert.equal(err.status, 422);
    assert.match(err.message, /Cannot quantize tensor "b"/);
  });

  it("answers 503 with Retry-After when every slot is taken, and frees the slot afterwards", async () => {
    const { app } = testApp({ maxConcurrent: 1, retryAfterSeconds: 3 });
    const model = smallModel();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    // The first request's body stalls inside the header, holding the only slot.
    const held = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(model.slice(0, 4));
        await gate;
        controller.enqueue(model.slice(4));
        controller.close();
      },
    });
    const first = post(app, "/v1/quantize", held);
    await new Promise((r) => setTimeout(r, 20));
    const busy = await post(app, "/v1/quantize", model);
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get("retry-after"), "3");
    assert.match((await errorOf(busy)).message, /Server busy/);
    release();
    const res = await first;
    assert.equal(res.status, 200);
    assert.equal((await health(app)).active, 1); // until its body is read
    await res.arrayBuffer();
    assert.equal((await health(app)).active, 0);
    assert.equal((await post(app, "/v1/quantize", model)).status, 200);
  });

  it("frees the slot and stops reading the upload when the client cancels the response", async () => {
    const { app, errors } = testApp({ slabBytes: 1024 });
    const model = checkpoint([{ name: "a", shape: [256, 256] }, { name: "b", shape: [256, 256] }]);
    let cancelled = false;
    let at = 0;
    const upload = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (at >= model.length) return controller.close();
        controller.enqueue(model.slice(at, at += 4096));
      },
      cancel: () => void (cancelled = true),
    }, { highWaterMark: 0 });
    const res = await post(app, "/v1/quantize", upload);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    await reader.cancel();
    await until(() => cancelled);
    assert.ok(at < model.length);
    assert.equal((await health(app)).active, 0);
    assert.deepEqual(errors, []);
  });

  it("inspects the header without reading the rest of the body", async () => {
    const { app } = testApp();
    const model = checkpoint([{ name: "w", shape: [4, 8] }, { name: "v", shape: [3] }], { source: "test" });
    const headerEnd = 8 + Number(new DataView(model.buffer).getBigUint64(0, true));
    let cancelled = false;
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // The header, then data without end: only a cancel stops the upload.
        controller.enqueue(pulls++ === 0 ? model.slice(0, headerEnd) : new Uint8Array(65536));
      },
      cancel: () => void (cancelled = true),
    }, { highWaterMark: 0 });
    const res = await post(app, "/v1/inspect", body);
    assert.equal(res.status, 200);
    const summary = await res.json();
    await until(() => cancelled);
    assert.ok(pulls <= 3, `${pulls} pulls`); // pipes read ahead a chunk or two, no more
    assert.equal(summary.dataEnd, model.length);
    assert.deepEqual(summary.metadata, { source: "test" });
    assert.deepEqual(
      summary.tensors.map((t: { name: string; shape: number[]; bytes: number }) => [t.name, t.shape, t.bytes]),
      [
        ["w", [4, 8], 128],
        ["v", [3], 12],
      ],
    );
    assert.deepEqual(summary.quantized, {});
  });

  it("round-trips quantize then dequantize, removing its temporary files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "quantflow-http-test-"));
    try {
      const { app } = testApp({ tmpDir: dir });
      const model = smallModel();
      const quantized = new Uint8Array(await (await post(app, "/v1/quantize", model)).arrayBuffer());
      const inspected = await (await post(app, "/v1/inspect", quantized)).json();
      assert.deepEqual(Object.keys(inspected.quantized), ["h.0.attn.weight", "h.0.mlp.weight"]);
      const res = await post(app, "/v1/dequantize", chunked(quantized, 999));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-quantflow-dequantized-tensors"), "2");
      const restored = new Uint8Array(await res.arrayBuffer());
      const before = await readSafetensors(model);
      const after = await readSafetensors(restored);
      assert.deepEqual(
        after.header.entries.map((e) => [e.name, e.dtype, e.shape]),
        before.header.entries.map((e) => [e.name, e.dtype, e.shape]),
      );
      await before.chunks.cancel();
      await after.chunks.cancel();
      const original = new Float32Array(
        model.buffer,
        before.header.dataStart,
        (model.length - before.header.dataStart) / 4,
      );
      const back = new Float32Array(restored.slice(after.header.dataStart).buffer);
      let worst = 0;
      for (let i = 0; i < original.length; i++) worst = Math.max(worst, Math.abs(original[i] - back[i]));
      assert.ok(worst > 0 && worst < 0.05, `max error ${worst}`);
      // Removal runs once the body is over, a few ticks after the client has the last byte.
      await until(async () => (await readdir(dir)).length === 0);
      const err = await errorOf(await post(app, "/v1/dequantize", new Uint8Array(16)));
      assert.equal(err.status, 422);
      assert.deepEqual(await readdir(dir), []); // an error response is sent after the removal
      assert.equal((await health(app)).active, 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("dequantizes and inspects the Arrow IPC output of /v1/quantize as it does its safetensors twin", async () => {
    const { app } = testApp();
    const model = smallModel();
    const arrows = new Uint8Array(await (await post(app, "/v1/quantize", model, { accept: ARROW })).arrayBuffer());
    const st = new Uint8Array(await (await post(app, "/v1/quantize", model)).arrayBuffer());
    const res = await post(app, "/v1/dequantize", chunked(arrows, 777), { type: ARROW });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-quantflow-dequantized-tensors"), "2");
    const fromArrows = await readSafetensors(new Uint8Array(await res.arrayBuffer()));
    const twin = new Uint8Array(await (await post(app, "/v1/dequantize", st)).arrayBuffer());
    const fromSt = await readSafetensors(twin);
    assert.deepEqual(
      fromArrows.header.entries.map((e) => [e.name, e.dtype, e.shape]),
      fromSt.header.entries.map((e) => [e.name, e.dtype, e.shape]),
    );
    // Every element, as float32 slabs (the model is float32 throughout).
    const values = async (chunks: ReadableStream<Slab | RawChunk>) =>
      (await Array.fromAsync(chunks)).flatMap((c) => (c.kind === "raw" ? [] : Array.from(c.data)));
    const restored = await values(fromArrows.chunks);
    assert.equal(restored.length, 64 * 48 + 64 + 96 * 64 + 8 * 8);
    assert.deepEqual(restored, await values(fromSt.chunks));
    const err = await errorOf(
      await post(app, "/v1/dequantize", arrows.subarray(0, arrows.length - 100), { type: ARROW }),
    );
    assert.equal(err.status, 422);
    assert.match(err.message, /truncated/);
    // inspect: the Arrow summary, with the records the safetensors twin's header holds.
    const summary = await (await post(app, "/v1/inspect", chunked(arrows, 500), { type: ARROW })).json();
    assert.equal(summary.format, "arrows");
    const header = await (await post(app, "/v1/inspect", st)).json();
    const quantized = summary.tensors.filter((t: { quantized?: unknown }) => t.quantized);
    assert.deepEqual(
      Object.fromEntries(quantized.map((t: { name: string; quantized: unknown }) => [t.name, t.quantized])),
      header.quantized,
    );
    const cut = await errorOf(await post(app, "/v1/inspect", arrows.subarray(0, arrows.length - 100), { type: ARROW }));
    assert.equal(cut.status, 422);
  });

  it("calibrates Arrow activation samples into activation parameters", async () => {
    const { app } = testApp();
    const ipc = tableToIPC(tableFromArrays({ name: ["a", "a", "b"], values: new Float32Array([1, -2, 5]) }), "stream");
    const res = await post(app, "/v1/calibrate?dtype=uint8", chunked(ipc, 100), { type: ARROW });
    assert.equal(res.status, 200);
    const stats = new CalibrationStats();
    stats.observe("a", [1]);
    stats.observe("a", [-2]);
    stats.observe("b", [5]);
    assert.equal(await res.text(), stringifyActivationParams(computeActivationParams(stats, { dtype: "uint8" })));

    let err = await errorOf(await post(app, "/v1/calibrate", ipc.subarray(0, ipc.length - 8), { type: ARROW }));
    assert.equal(err.status, 422);
    assert.match(err.message, /truncated/);
    err = await errorOf(await post(app, "/v1/calibrate?percentile=99", ipc, { type: ARROW }));
    assert.deepEqual(err.issues, ["percentile: needs observer=percentile"]);
    const nan = tableToIPC(tableFromArrays({ name: ["a"], values: new Float32Array([NaN]) }), "stream");
    err = await errorOf(await post(app, "/v1/calibrate", nan, { type: ARROW }));
    assert.equal(err.status, 422);
    assert.equal((await post(app, "/v1/calibrate?skip-non-finite", concat([ipc]), { type: ARROW })).status, 200);
  });

  it("answers 405 for a wrong method and 404 for an unknown path, as JSON", async () => {
    const { app } = testApp();
    const res = await app.request("/v1/quantize");
    assert.equal((await errorOf(res)).status, 405);
    assert.equal(res.headers.get("allow"), "POST");
    assert.equal((await errorOf(await app.request("/v2/nothing"))).status, 404);
  });

  it("rejects invalid limits at once", () => {
    assert.throws(() => createApp({ maxConcurrent: 0 }), RangeError);
    assert.throws(() => createApp({ maxBodyBytes: 1.5 }), RangeError);
  });

  it("serveCommand exits 2 on bad usage, before starting anything", async () => {
    const error = console.error;
    console.error = () => {};
    try {
      assert.equal(await serveCommand(["--port", "http"]), 2);
      assert.equal(await serveCommand(["--max-concurrent", "0"]), 2);
      assert.equal(await serveCommand(["--colour"]), 2);
      assert.equal(await serveCommand(["8787"]), 2); // a positional argument
      assert.equal(await serveCommand(["--port", "-1"]), 2); // a negative value, out of range
    } finally {
      console.error = error;
    }
  });
});
