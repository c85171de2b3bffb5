/**
 * The HTTP service (DESIGN.md, "Interfaces"): quantization, dequantization,
 * calibration and inspection over the streaming pipelines, as a Hono app.
 *
 * Everything that can be checked before a response starts is checked first,
 * in this order: query parameters (400), `Content-Type` (415), `Accept`
 * (406), the declared `Content-Length` against the limit (413), a free slot
 * (503 with `Retry-After`), then the body's first bytes: the safetensors
 * header (422, or 413 past `maxHeaderBytes`) and, for streamed outputs, the
 * first output chunk. Errors are JSON, `{ error: { status, message, issues? } }`.
 * An error found once the output is streaming cannot change the status
 * (PITFALLS.md 8): the body errors, the runtime resets the connection, and
 * the client sees a failed download rather than a truncated file.
 *
 * @module
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rm } from "node:fs/promises";
import { Hono } from "hono";
import { computeActivationParams, stringifyActivationParams } from "../activation_params.ts";
import { fileStream } from "../byte_source.ts";
import type { CalibrationStats } from "../calibration_stats.ts";
import type { ModelReport } from "../report.ts";
import { CalibrateStream } from "../../streams/calibrate_stream.ts";
import { readActivationSamples } from "../../streams/activation_sample_source.ts";
import { arrowTensors, summarizeArrowTensors } from "../../streams/_arrow_file.ts";
import { ByteQueue, IpcSlabReader } from "../../streams/_ipc_slab_reader.ts";
import { dequantizeFile, quantizationRecords } from "../../streams/dequantize_pipeline.ts";
import { quantizeArrowIPC } from "../../streams/quantize_arrow.ts";
import { type OutputFormat, quantizeSafetensors } from "../../streams/quantize_pipeline.ts";
import { DEFAULT_SLAB_BYTES, readSafetensors } from "../../streams/safetensors_source.ts";
import { ByteLimitStream } from "./byte_limit_stream.ts";
import { ConcurrencyGate } from "./concurrency_gate.ts";
import { HeaderLimitStream } from "./header_limit_stream.ts";
import { errorAnswer, errorResponse, HttpError } from "./http_error.ts";
import { ARROW_STREAM_MEDIA_TYPE, mediaTypeOf, negotiateMediaType, SAFETENSORS_MEDIA_TYPE } from "./media_type.ts";
import { expectNoQuery, parseCalibrateQuery, parseQuantizeQuery } from "./query_params.ts";
import { clientGoneSignal } from "./_client_gone.ts";
import { readFirst, settledBody } from "./_response_body.ts";
import { makeTempDir, writeStreamToFile } from "./_temp_files.ts";

/** Options of {@linkcode createApp}. */
export interface CreateAppOptions {
  /**
   * Largest request body, in bytes, enforced while the body streams (a
   * declared `Content-Length` above it is refused at once).
   * @default {2147483648} (2 GiB)
   */
  maxBodyBytes?: number;
  /**
   * Requests at work at once (quantize, dequantize, calibrate, inspect);
   * more are answered 503 with `Retry-After`. A slot is held until the
   * response body has been sent, has failed or was cancelled.
   * @default {4}
   */
  maxConcurrent?: number;
  /**
   * Byte budget of one slab: with `maxConcurrent`, this bounds memory.
   * @default {1048576}
   */
  slabBytes?: number;
  /**
   * Largest safetensors header accepted (the format allows 100 MB, held in memory whole).
   * @default {16777216}
   */
  maxHeaderBytes?: number;
  /**
   * Largest Arrow IPC message accepted in a slab stream (assembled whole before decoding).
   * @default {67108864}
   */
  maxMessageBytes?: number;
  /**
   * Directory for the temporary files of `/v1/dequantize` (two-pass
   * quantization spools go to the system's temporary directory).
   * @default {os.tmpdir()}
   */
  tmpDir?: string;
  /**
   * Milliseconds a streaming response may go unread before it is cancelled
   * and its slot freed: guards against clients that stop reading, and against
   * disconnects the runtime fails to report (Bun 1.4 sometimes does).
   * @default {60000}
   */
  stalledResponseMs?: number;
  /**
   * Seconds sent in `Retry-After` with a 503.
   * @default {1}
   */
  retryAfterSeconds?: number;
  /**
   * Called with errors that are the server's fault (answered 500) and with
   * errors that broke a response already streaming (bad data found late,
   * e.g. a NaN in a later tensor). Client disconnects are not reported.
   * @default {(error) => console.error(...)}
   */
  onError?: (error: unknown, request: Request) => void;
}

const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** The report of `?report=json`. */
export interface QuantizeReportBody {
  /** Output format the bytes were produced in (then discarded). */
  readonly format: OutputFormat;
  /** Size of the output, in bytes. */
  readonly outputBytes: number;
  /** The quantization report (`snrDb` of exact tensors is `null`). */
  readonly report: ModelReport;
}

/**
 * The HTTP app: a fetch handler as `Deno.serve` and `Bun.serve` take it, and
 * `request` to call it without a server (tests). It is a Hono app; this
 * interface keeps Hono's types out of quantflow's public API.
 */
export interface QuantflowApp {
  /** Answers a request. */
  fetch(request: Request, env?: unknown, executionContext?: unknown): Response | Promise<Response>;
  /** Answers a request made from a path or URL, without a server. */
  request(input: string | URL | Request, init?: RequestInit): Response | Promise<Response>;
}

/**
 * Creates the HTTP service. Routes:
 *
 * - `POST /v1/quantize?mode=&dtype=&granularity=&axis=&block-size=&weight-threshold=&quantize-rank1=&config=JSON&report=json`:
 *   a `.safetensors` body (`application/octet-stream`) or an Arrow IPC slab
 *   stream (`application/vnd.apache.arrow.stream`); answers the quantized
 *   model in the format `Accept` asks for (default: the input's; Arrow input
 *   can only be answered as Arrow), or with `report=json` only the JSON
 *   report ({@linkcode QuantizeReportBody}).
 * - `POST /v1/dequantize`: a checkpoint quantflow quantized in (safetensors, or the Arrow IPC streams `/v1/quantize`
 *   writes), float safetensors out.
 * - `POST /v1/calibrate?mode=&dtype=&observer=&percentile=&averaging-constant=&histogram-bits=&skip-non-finite`:
 *   Arrow IPC activation samples in, activation parameters (JSON) out.
 * - `POST /v1/inspect`: a checkpoint (or just its first bytes) in, its header as JSON out; the rest of the body is not read.
 *   Arrow IPC streams in (Arrow content type): `inspect`'s summary of them out, every message read.
 * - `GET /healthz`: `{ status: "ok", active, maxConcurrent }`.
 *
 * Run it with `Deno.serve(app.fetch)`, `Bun.serve({ fetch: app.fetch,
 * maxRequestBodySize: Number.MAX_SAFE_INTEGER })` (Bun's own cap, 128 MiB by
 * default, would answer a bare 413 first) or {@linkcode serveApp}.
 *
 * @param options Limits and the temporary directory.
 * @returns The Hono app.
 * @throws {RangeError} When a limit is not a positive integer.
 *
 * @example
 * ```ts
 * import { createApp } from "@quantflow/quantflow/http";
 * import assert from "node:assert/strict";
 *
 * const app = createApp({ maxConcurrent: 2 });
 * const res = await app.request("/healthz");
 * assert.deepEqual(await res.json(), { status: "ok", active: 0, maxConcurrent: 2 });
 * const bad = await app.request("/v1/quantize?dtype=int3", { method: "POST", body: new Uint8Array(8) });
 * assert.equal(bad.status, 400);
 * ```
 */
export function createApp(options: CreateAppOptions = {}): QuantflowApp {
  const maxBodyBytes = positiveInteger("maxBodyBytes", options.maxBodyBytes ?? 2 * GiB);
  const gate = new ConcurrencyGate(positiveInteger("maxConcurrent", options.maxConcurrent ?? 4));
  const slabBytes = positiveInteger("slabBytes", options.slabBytes ?? DEFAULT_SLAB_BYTES);
  const maxHeaderBytes = positiveInteger("maxHeaderBytes", options.maxHeaderBytes ?? 16 * MiB);
  const maxMessageBytes = positiveInteger("maxMessageBytes", options.maxMessageBytes ?? 64 * MiB);
  const retryAfter = positiveInteger("retryAfterSeconds", options.retryAfterSeconds ?? 1);
  const stallMs = positiveInteger("stalledResponseMs", options.stalledResponseMs ?? 60_000);
  const tmpDir = options.tmpDir ?? tmpdir();
  const report = options.onError ?? ((error: unknown, request: Request) => {
    const { pathname } = new URL(request.url);
    console.error(`quantflow http: ${request.method} ${pathname}: ${(error as Error)?.stack ?? error}`);
  });

  /** The body's media type, which must be one of `allowed`. */
  const contentType = (request: Request, allowed: readonly string[]): string => {
    const type = mediaTypeOf(request.headers.get("content-type"));
    if (type !== undefined && allowed.includes(type)) return type;
    throw new HttpError(
      415,
      `Content-Type must be ${allowed.join(" or ")}; got ${type === undefined ? "none" : JSON.stringify(type)}`,
    );
  };

  /** The response's media type from `Accept`. */
  const accepted = (request: Request, offered: readonly string[], fallback: string): string => {
    const accept = request.headers.get("accept");
    const type = negotiateMediaType(accept, offered, fallback);
    if (type === undefined) {
      throw new HttpError(
        406,
        `This request can be answered as ${offered.join(" or ")}; Accept says ${JSON.stringify(accept)}`,
      );
    }
    return type;
  };

  /** The declared body length, refused at once when over the limit; `undefined` for a chunked body. */
  const declaredLength = (request: Request): number | undefined => {
    const header = request.headers.get("content-length");
    if (header === null) return undefined;
    if (!/^\d+$/.test(header.trim())) throw new HttpError(400, `Invalid Content-Length ${JSON.stringify(header)}`);
    const length = Number(header.trim());
    if (length > maxBodyBytes) {
      throw new HttpError(413, `Request body of ${length} bytes exceeds the limit of ${maxBodyBytes} bytes`);
    }
    return length;
  };

  /** The body, erroring past the limit as it streams. */
  const limitedBody = (request: Request): ReadableStream<Uint8Array> =>
    (request.body ?? ReadableStream.from<Uint8Array>([])).pipeThrough(new ByteLimitStream(maxBodyBytes));

  /** Runs `work` in a concurrency slot; `work` must release it (once its response is over) unless it throws. */
  const admitted = async (work: (release: () => void) => Promise<Response>): Promise<Response> => {
    const release = gate.tryAcquire();
    if (!release) {
      throw new HttpError(503, `Server busy: ${gate.limit} requests at work; retry later`, {
        headers: { "retry-after": String(retryAfter) },
      });
    }
    try {
      return await work(release);
    } catch (error) {
      release();
      throw error;
    }
  };

  /** A streamed response whose end (done, failed, cancelled) releases the slot and cleans up. */
  const streamed = (
    request: Request,
    clientGone: AbortSignal | undefined,
    output: ReadableStream<Uint8Array>,
    head: Uint8Array[],
    type: string,
    onOver: () => void,
    headers: Record<string, string> = {},
  ): Response => {
    const body = settledBody(output, {
      head,
      signal: clientGone,
      stallMs,
      onSettled(outcome, reason) {
        onOver();
        if (outcome === "error") report(reason, request);
      },
    });
    return new Response(body, {
      status: 200,
      headers: { "content-type": type, "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers },
    });
  };

  /** Every handler's errors become JSON answers; a body we did not read is cancelled. */
  const handle =
    (handler: (request: Request, clientGone: AbortSignal | undefined) => Promise<Response>) =>
    async (c: { req: { raw: Request }; env: unknown }) => {
      const request = c.req.raw;
      try {
        return await handler(request, clientGoneSignal(request, c.env));
      } catch (error) {
        if (!request.bodyUsed && request.body && !request.body.locked) await request.body.cancel().catch(() => {});
        const answer = errorAnswer(error);
        if (answer.internal && !request.signal.aborted) report(error, request);
        return errorResponse(error);
      }
    };

  const app = new Hono();

  app.get("/healthz", (c) => c.json({ status: "ok", active: gate.active, maxConcurrent: gate.limit }));

  app.post(
    "/v1/quantize",
    handle(async (request, clientGone) => {
      const { config, reportOnly } = parseQuantizeQuery(new URL(request.url).searchParams);
      const inputType = contentType(request, [SAFETENSORS_MEDIA_TYPE, ARROW_STREAM_MEDIA_TYPE]);
      const arrowInput = inputType === ARROW_STREAM_MEDIA_TYPE;
      // A safetensors header lists every tensor up front, which an Arrow slab stream cannot give while streaming.
      const offered = arrowInput ? [ARROW_STREAM_MEDIA_TYPE] : [SAFETENSORS_MEDIA_TYPE, ARROW_STREAM_MEDIA_TYPE];
      const outputType = reportOnly ? inputType : accepted(request, offered, inputType);
      const format: OutputFormat = outputType === ARROW_STREAM_MEDIA_TYPE ? "arrows" : "safetensors";
      const length = declaredLength(request);
      return await admitted(async (release) => {
        const body = limitedBody(request);
        let job: { output: ReadableStream<Uint8Array>; report(): ModelReport };
        if (arrowInput) {
          job = quantizeArrowIPC(body, { config, maxMessageBytes });
        } else {
          const started = await quantizeSafetensors(body.pipeThrough(new HeaderLimitStream(maxHeaderBytes)), {
            config,
            format,
            slabBytes,
          });
          // What the header promises is checked now, while a status can still say no: a file
          // over the limit, and with a declared length, a truncated or padded upload.
          if (started.header.dataEnd > maxBodyBytes) {
            await started.output.cancel().catch(() => {});
            throw new HttpError(
              413,
              `The safetensors header describes a file of ${started.header.dataEnd} bytes, over the limit of ${maxBodyBytes} bytes`,
            );
          }
          if (length !== undefined && length !== started.header.dataEnd) {
            await started.output.cancel().catch(() => {});
            throw new HttpError(
              422,
              `Request body is ${length} bytes; its safetensors header says the file is ${started.header.dataEnd} bytes`,
            );
          }
          job = started;
        }
        if (reportOnly) {
          try {
            let outputBytes = 0;
            for await (const chunk of job.output) outputBytes += chunk.byteLength;
            const answer: QuantizeReportBody = { format, outputBytes, report: job.report() };
            return Response.json(answer, { headers: { "cache-control": "no-store" } });
          } finally {
            release();
          }
        }
        // The first chunk (the safetensors header, or the first tensor's Arrow schema and batch)
        // surfaces malformed input while a status can still say so.
        const head = await readFirst(job.output);
        return streamed(request, clientGone, job.output, head, outputType, release);
      });
    }),
  );

  app.post(
    "/v1/dequantize",
    handle(async (request, clientGone) => {
      expectNoQuery(new URL(request.url).searchParams);
      contentType(request, [SAFETENSORS_MEDIA_TYPE, ARROW_STREAM_MEDIA_TYPE]);
      accepted(request, [SAFETENSORS_MEDIA_TYPE], SAFETENSORS_MEDIA_TYPE);
      declaredLength(request);
      return await admitted(async (release) => {
        // dequantizeFile reads scales (or an Arrow file's metadata) before data, so it needs a file: spool the
        // (limited) body. It tells the formats apart by their first bytes, whatever the content type says, so the
        // header limit applies to every body (an Arrow stream's first bytes are no safetensors header it would stop).
        const dir = await makeTempDir(tmpDir);
        try {
          const input = join(dir.path, "in");
          const output = join(dir.path, "out.safetensors");
          await writeStreamToFile(limitedBody(request).pipeThrough(new HeaderLimitStream(maxHeaderBytes)), input);
          const count = await dequantizeFile(input, output, { slabBytes });
          await rm(input, { force: true });
          const over = () => {
            void dir.remove();
            release();
          };
          return streamed(request, clientGone, fileStream(output), [], SAFETENSORS_MEDIA_TYPE, over, {
            "x-quantflow-dequantized-tensors": String(count),
          });
        } catch (error) {
          await dir.remove();
          throw error;
        }
      });
    }),
  );

  app.post(
    "/v1/calibrate",
    handle(async (request) => {
      const q = parseCalibrateQuery(new URL(request.url).searchParams);
      contentType(request, [ARROW_STREAM_MEDIA_TYPE]);
      declaredLength(request);
      let calibrate: CalibrateStream;
      try {
        calibrate = new CalibrateStream({
          observer: q.observer,
          averagingConstant: q.averagingConstant,
          histogramBits: q.histogramBits,
          nonFinite: q.skipNonFinite ? "skip" : "error",
        });
      } catch (error) {
        throw new HttpError(400, `Invalid calibration options: ${(error as Error).message}`, { cause: error });
      }
      return await admitted(async (release) => {
        try {
          let stats: CalibrationStats | undefined;
          for await (const s of readActivationSamples(limitedBody(request)).pipeThrough(calibrate)) stats = s;
          if (!stats || stats.size === 0) throw new HttpError(422, "The body holds no activation samples");
          let params;
          try {
            params = computeActivationParams(stats, { mode: q.mode, dtype: q.dtype, percentile: q.percentile });
          } catch (error) {
            // An activation with no finite value has no range: the data's fault, not the server's.
            if (error instanceof RangeError) throw new HttpError(422, error.message, { cause: error });
            throw error;
          }
          return new Response(stringifyActivationParams(params), {
            headers: { "content-type": "application/json", "cache-control": "no-store" },
          });
        } finally {
          release();
        }
      });
    }),
  );

  app.post(
    "/v1/inspect",
    handle(async (request) => {
      expectNoQuery(new URL(request.url).searchParams);
      const arrowInput = contentType(request, [SAFETENSORS_MEDIA_TYPE, ARROW_STREAM_MEDIA_TYPE]) ===
        ARROW_STREAM_MEDIA_TYPE;
      declaredLength(request);
      return await admitted(async (release) => {
        try {
          if (arrowInput) {
            // The messages' metadata, their bodies read past and dropped: the same summary as `inspect FILE.arrows`.
            const reader = new IpcSlabReader(new ByteQueue(limitedBody(request).getReader()), maxMessageBytes);
            const summary = summarizeArrowTensors(await arrowTensors(reader, "Arrow input"));
            return Response.json(summary, { headers: { "cache-control": "no-store" } });
          }
          const { header, chunks } = await readSafetensors(
            limitedBody(request).pipeThrough(new HeaderLimitStream(maxHeaderBytes)),
            { slabBytes },
          );
          // Only the header was wanted: stop reading the upload.
          await chunks.cancel().catch(() => {});
          return Response.json({
            headerLength: header.headerLength,
            dataStart: header.dataStart,
            dataEnd: header.dataEnd,
            metadata: header.metadata,
            tensors: header.entries.map((e) => ({
              name: e.name,
              dtype: e.dtype,
              shape: e.shape,
              begin: e.begin,
              end: e.end,
              bytes: e.end - e.begin,
            })),
            quantized: quantizationRecords(header),
          }, { headers: { "cache-control": "no-store" } });
        } finally {
          release();
        }
      });
    }),
  );

  for (const path of ["/v1/quantize", "/v1/dequantize", "/v1/calibrate", "/v1/inspect"]) {
    app.all(path, () => errorResponse(new HttpError(405, `Use POST for ${path}`, { headers: { allow: "POST" } })));
  }
  app.notFound((c) => errorResponse(new HttpError(404, `No route for ${c.req.method} ${new URL(c.req.url).pathname}`)));
  app.onError((error, c) => {
    if (errorAnswer(error).internal) report(error, c.req.raw);
    return errorResponse(error);
  });
  return app;
}
