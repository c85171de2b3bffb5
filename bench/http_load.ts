/**
 * Load and abuse check of the HTTP service, on loopback, bounded.
 *
 *     deno run -A bench/http_load.ts [--requests 200] [--parallel 8]
 *     bun bench/http_load.ts
 *
 * Starts `serve` in a child process (so its peak RSS, VmHWM, is read from
 * outside), then sends a fixed, seeded mix of requests, `--parallel` at a
 * time: valid checkpoints of 1-16 MiB (safetensors and Arrow answers, report
 * only, one- and two-pass configurations, whole and chunked uploads) and bad
 * ones (malformed, truncated, oversized, wrong type, bad parameters, NaN in a
 * later tensor, clients that disconnect mid-response). Every valid answer is
 * compared with `quantizeSafetensors` run here; every bad one must be a 4xx,
 * or, where the fault can only be seen after streaming began, a reset
 * response. Exits non-zero on any wrong answer or 500.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { configOf, type QuantizeOptions } from "../mod.ts";
import { quantizeSafetensors } from "../streams/quantize_pipeline.ts";
import { checkpoint, chunked, collect } from "../tests/_http_fixtures.ts";

const MiB = 1024 * 1024;
const MAX_BODY = 32 * MiB;

if (process.argv.includes("--serve")) {
  const { serveCommand } = await import("../http.ts");
  process.exit(await serveCommand(["--port", "0", "--max-body", String(MAX_BODY), "--max-concurrent", "8"]));
}

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: { requests: { type: "string", default: "200" }, parallel: { type: "string", default: "8" } },
});
const REQUESTS = Number(flags.requests);
const PARALLEL = Number(flags.parallel);

// ---- fixtures and expected answers, computed locally -------------------------------------------

const CONFIGS: { query: string; options: QuantizeOptions }[] = [
  { query: "", options: {} },
  {
    query: "dtype=int4&granularity=per_block&block-size=32",
    options: { dtype: "int4", granularity: "per_block", blockSize: 32 },
  },
  {
    query: "granularity=per_tensor&mode=linear&dtype=uint8",
    options: { granularity: "per_tensor", mode: "linear", dtype: "uint8" },
  },
];

function model(mib: number, seed: number): Uint8Array {
  const rows = (mib * MiB) / 4 / 1024 / 2;
  return checkpoint([
    { name: "a.weight", shape: [rows, 1024], value: (i) => Math.sin(i * 0.001 + seed) * (1 + (i % 13)) },
    { name: "a.bias", shape: [1024] },
    { name: "b.weight", shape: [rows, 1024], value: (i) => Math.cos(i * 0.0007 - seed) },
  ]);
}

async function digest(bytes: Uint8Array): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sizes = [1, 2, 4, 8, 16];
const models = sizes.map((mib, k) => model(mib, k));
const expected = new Map<string, { digest: string; bytes: number; quantized: number }>();
const t0 = performance.now();
for (const [m, bytes] of models.entries()) {
  for (const [c, config] of CONFIGS.entries()) {
    for (const format of ["safetensors", "arrows"] as const) {
      if (format === "arrows" && c !== 0) continue;
      const job = await quantizeSafetensors(bytes, { config: configOf(config.options), format });
      const out = await collect(job.output);
      expected.set(`${m}/${c}/${format}`, {
        digest: await digest(out),
        bytes: out.length,
        quantized: job.report().totals.quantized,
      });
    }
  }
}
const nanModel = checkpoint([
  { name: "a", shape: [1024, 1024] },
  { name: "b", shape: [1024, 1024], value: (i) => (i === 900_000 ? NaN : i % 17) },
]);
console.error(`fixtures ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

// ---- the server, in a child process ------------------------------------------------------------

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const self = new URL(import.meta.url).pathname;
const child = spawn(process.execPath, isBun ? [self, "--serve"] : ["run", "-A", self, "--serve"], {
  stdio: ["ignore", "inherit", "pipe"],
});
// Deno's node:child_process typings lack the EventEmitter methods of a spawned child; it has them at run time.
const exited = new Promise<number | null>((resolve) =>
  (child as unknown as { on(event: "exit", listener: (code: number | null) => void): void }).on("exit", resolve)
);
let serverLog = "";
const base = await new Promise<string>((resolve, reject) => {
  child.stderr!.on("data", (d: Uint8Array) => {
    serverLog += new TextDecoder().decode(d);
    const m = serverLog.match(/listening on (http:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  exited.then((code) => reject(new Error(`server exited with ${code}: ${serverLog}`)));
});
const status = (key: string) => {
  const m = readFileSync(`/proc/${child.pid}/status`, "utf8").match(new RegExp(`${key}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) * 1024 : NaN;
};
const baselineRss = status("VmRSS");

// ---- the requests ------------------------------------------------------------------------------

type Kind =
  | "valid"
  | "valid-chunked"
  | "valid-arrows"
  | "report"
  | "malformed"
  | "truncated"
  | "truncated-chunked"
  | "oversized"
  | "oversized-chunked"
  | "wrong-type"
  | "bad-params"
  | "nan-late"
  | "disconnect";
const MIX: Kind[] = [
  ...Array(5).fill("valid"),
  ...Array(3).fill("valid-chunked"),
  "valid-arrows",
  "report",
  "malformed",
  "truncated",
  "truncated-chunked",
  "oversized",
  "oversized-chunked",
  "wrong-type",
  "bad-params",
  "nan-late",
  "disconnect",
  "disconnect",
];

let seed = 12345;
const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

const counts = new Map<string, number>();
const count = (key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);
const failures: string[] = [];
let uploaded = 0;
let busyRetries = 0;

function send(
  path: string,
  body: Uint8Array | ReadableStream<Uint8Array>,
  headers: Record<string, string>,
  signal?: AbortSignal,
) {
  // PITFALLS 9: streamed bodies need duplex "half".
  return fetch(`${base}${path}`, { method: "POST", body, headers, duplex: "half", signal } as RequestInit);
}

async function one(i: number): Promise<void> {
  const kind = MIX[Math.floor(random() * MIX.length)];
  const m = Math.floor(random() * models.length);
  const c = Math.floor(random() * CONFIGS.length);
  const bytes = models[m];
  const octet = { "content-type": "application/octet-stream" };
  const query = CONFIGS[c].query;
  const label = `#${i} ${kind} ${sizes[m]} MiB ${query || "default"}`;
  const expect = (ok: boolean, what: string) => {
    if (!ok) failures.push(`${label}: ${what}`);
  };
  for (;;) {
    let res: Response;
    const controller = new AbortController();
    try {
      switch (kind) {
        case "valid":
        case "report":
          res = await send(`/v1/quantize?${query}${kind === "report" ? "&report=json" : ""}`, bytes, octet);
          uploaded += bytes.length;
          break;
        case "valid-chunked":
          res = await send(`/v1/quantize?${query}`, chunked(bytes, 256 * 1024 + 13), octet);
          uploaded += bytes.length;
          break;
        case "valid-arrows":
          res = await send(`/v1/quantize`, bytes, { ...octet, accept: "application/vnd.apache.arrow.stream" });
          uploaded += bytes.length;
          break;
        case "malformed":
          res = await send(`/v1/quantize`, crypto.getRandomValues(new Uint8Array(4096)), octet);
          break;
        case "truncated":
          res = await send(`/v1/quantize?${query}`, bytes.subarray(0, bytes.length - 1000), octet);
          break;
        case "truncated-chunked":
          res = await send(`/v1/quantize?${query}`, chunked(bytes.subarray(0, bytes.length - 1000), 1 << 18), octet);
          break;
        case "oversized":
          res = await send(`/v1/quantize`, new Uint8Array(MAX_BODY + 1), octet);
          break;
        case "oversized-chunked":
          res = await send(`/v1/quantize`, chunked(model(MAX_BODY / MiB, 9), 1 << 20), octet);
          break;
        case "wrong-type":
          res = await send(`/v1/quantize`, bytes, { "content-type": "text/plain" });
          break;
        case "bad-params":
          res = await send(`/v1/quantize?dtype=int3&axis=one`, bytes, octet);
          break;
        case "nan-late":
          res = await send(`/v1/quantize`, nanModel, octet);
          break;
        case "disconnect":
          res = await send(`/v1/quantize?${query}`, bytes, octet, controller.signal);
          break;
      }
    } catch (error) {
      // A server may answer 413 and close while a large body is still being sent: the client sees a reset.
      const fine = kind === "oversized" || kind === "oversized-chunked";
      count(`${kind}: connection reset before a response${fine ? "" : " (WRONG)"}`);
      expect(fine, `fetch failed: ${(error as Error).message}`);
      return;
    }
    if (res!.status === 503) {
      busyRetries++;
      await res!.body?.cancel();
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const s = res!.status;
    count(`${kind}: ${s}`);
    if (s >= 500) failures.push(`${label}: ${s} ${await res!.text()}`);
    try {
      switch (kind) {
        case "valid":
        case "valid-chunked":
        case "valid-arrows": {
          expect(s === 200, `status ${s}`);
          const format = kind === "valid-arrows" ? "arrows" : "safetensors";
          const want = expected.get(`${m}/${kind === "valid-arrows" ? 0 : c}/${format}`)!;
          const got = await collect(res!.body!);
          expect(
            got.length === want.bytes && (await digest(got)) === want.digest,
            "output differs from quantizeSafetensors",
          );
          break;
        }
        case "report": {
          const body = await res!.json();
          const want = expected.get(`${m}/${c}/safetensors`)!;
          expect(
            s === 200 && body.outputBytes === want.bytes && body.report.totals.quantized === want.quantized,
            "report differs",
          );
          break;
        }
        case "truncated-chunked":
        case "nan-late": {
          // Found only once streaming began: a 200 whose body must fail, never end cleanly.
          expect(s === 200, `status ${s}`);
          let ended = false;
          try {
            await collect(res!.body!);
            ended = true;
          } catch { /* the reset we want */ }
          expect(!ended, "a broken output ended as if complete");
          count(`${kind}: body reset as expected`);
          break;
        }
        case "disconnect": {
          const reader = res!.body!.getReader();
          await reader.read();
          controller.abort();
          await reader.read().catch(() => {});
          break;
        }
        default: {
          const want = {
            malformed: 422,
            truncated: 422,
            oversized: 413,
            "oversized-chunked": 413,
            "wrong-type": 415,
            "bad-params": 400,
          }[kind];
          expect(s === want, `status ${s}, want ${want}`);
          const body = await res!.json();
          expect(body.error?.status === s, "error body");
        }
      }
    } catch (error) {
      failures.push(`${label}: ${(error as Error).message}`);
    }
    return;
  }
}

let peakRss = 0;
const sampler = setInterval(() => peakRss = Math.max(peakRss, status("VmRSS")), 20);
const start = performance.now();
let next = 0;
await Promise.all(Array.from({ length: PARALLEL }, async () => {
  while (next < REQUESTS) await one(next++);
}));
const seconds = (performance.now() - start) / 1000;
clearInterval(sampler);
await new Promise((r) => setTimeout(r, 200));
const health = await (await fetch(`${base}/healthz`)).json();
const hwm = status("VmHWM");
child.kill("SIGTERM");
await exited;

console.log(
  `server runtime: ${isBun ? "bun" : "deno"} (same as this script); ${REQUESTS} requests, ${PARALLEL} at a time`,
);
console.log(
  `wall ${seconds.toFixed(2)} s, ${(REQUESTS / seconds).toFixed(1)} requests/s, ` +
    `${(uploaded / MiB / seconds).toFixed(1)} MiB/s of valid checkpoints uploaded`,
);
console.log(
  `server RSS: baseline ${(baselineRss / MiB).toFixed(0)} MiB, sampled peak ${(peakRss / MiB).toFixed(0)} MiB, VmHWM ${
    (hwm / MiB).toFixed(0)
  } MiB`,
);
console.log(`503 busy answers (retried): ${busyRetries}; /healthz after: ${JSON.stringify(health)}`);
for (const [k, n] of [...counts].sort()) console.log(`  ${String(n).padStart(4)}  ${k}`);
if (failures.length) {
  console.log(`FAILURES (${failures.length}):`);
  for (const f of failures.slice(0, 20)) console.log(`  ${f}`);
  process.exit(1);
}
console.log("all answers correct; no 500s");
