/**
 * Quantizes a column of 384-dimension float32 embeddings (an Arrow table of
 * many rows) to int8 with one scale per dimension: channel axis -1, which
 * needs every row's values before the first row can be quantized, so the
 * stream makes two passes over a re-readable source, in bounded memory.
 *
 * Run: `deno run -A examples/embeddings.ts [ROWS]` or `bun examples/embeddings.ts [ROWS]`.
 */
import { closeSync, mkdirSync, openSync, readSync } from "node:fs";
import process from "node:process";
import {
  Field,
  FixedSizeList,
  Float32,
  makeData,
  RecordBatch,
  RecordBatchReader,
  RecordBatchStreamWriter,
  Schema,
  Struct,
} from "apache-arrow";
import { ArrowIpcEncodeStream, QuantizeStream, type Slab, type SlabSource, writeFileAtomically } from "../mod.ts";

/** The bytes of a file as a stream of 1 MiB chunks: never the whole file in memory. */
function fileChunks(path: string): ReadableStream<Uint8Array> {
  const fd = openSync(path, "r");
  return new ReadableStream({
    pull(controller) {
      const chunk = new Uint8Array(1 << 20);
      const n = readSync(fd, chunk);
      if (n === 0) {
        closeSync(fd);
        controller.close();
      } else controller.enqueue(chunk.subarray(0, n));
    },
    cancel: () => closeSync(fd),
  });
}

const DIM = 384;
const rows = Number(process.argv[2] ?? 50_000);
const batchRows = 4096;
mkdirSync(".out", { recursive: true });
const input = ".out/embeddings.arrow";

// 1. Make the input: an Arrow IPC stream with an `embedding` column of FixedSizeList<384, Float32>, written batch by batch.
const type = new FixedSizeList(DIM, new Field("item", new Float32(), false));
const schema = new Schema([new Field("embedding", type, false)]);
const writer = new RecordBatchStreamWriter();
const written = writer.toDOMStream().pipeTo(writeFileAtomically(input));
let seed = 42;
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5;
for (let start = 0; start < rows; start += batchRows) {
  const n = Math.min(batchRows, rows - start);
  // Dimension d has its own spread, as real embeddings do: per-dimension scales keep small dimensions precise.
  const values = Float32Array.from({ length: n * DIM }, (_, i) => random() * (0.05 + (i % DIM) / DIM));
  const list = makeData({ type, length: n, nullCount: 0, child: makeData({ type: new Float32(), data: values }) });
  const struct = makeData({ type: new Struct(schema.fields), length: n, nullCount: 0, children: [list] });
  writer.write(new RecordBatch(schema, struct));
  await new Promise((resolve) => setTimeout(resolve, 0)); // let the file sink drain this batch
}
writer.finish();
await written;

// 2. A re-readable source of slabs: each read walks the Arrow file batch by batch.
const tensor = { name: "embeddings", dtype: "float32", shape: [rows, DIM] } as const;
const source: SlabSource = {
  slabs() {
    return ReadableStream.from((async function* () {
      let offset = 0;
      for await (const batch of await RecordBatchReader.from(fileChunks(input))) {
        const column = batch.getChildAt(0)!;
        const data = column.data[0].children[0].values as Float32Array;
        const slab: Slab = { tensor, offset, data: data.subarray(0, batch.numRows * DIM), source };
        offset += batch.numRows * DIM;
        yield slab;
      }
    })());
  },
};

// 3. Quantize per dimension (axis -1) and write Arrow IPC.
const quantize = new QuantizeStream({ granularity: "per_channel", axis: -1 });
await source.slabs()
  .pipeThrough(quantize)
  .pipeThrough(new ArrowIpcEncodeStream())
  .pipeTo(writeFileAtomically(".out/embeddings.int8.arrows"));

const [report] = quantize.report.tensors;
console.log(`${rows} embeddings x ${DIM}: ${report.originalBytes} -> ${report.quantizedBytes} bytes`);
console.log(
  `per-dimension int8 scales: SNR ${report.snrDb!.toFixed(1)} dB, max error ${report.maxAbsError!.toPrecision(3)}`,
);
