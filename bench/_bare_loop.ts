/**
 * The least a file job does, for `bench/machine_ceiling.ts`: read a range of
 * a float32 checkpoint's data a slab at a time into the wasm kernels' memory,
 * quantize each slab per channel (int8, symmetric, with the report's error
 * sums) in one pass, and write its bytes at their place in the output. No
 * streams, no header, no report, no scales written: what is left of a job's
 * time once its own machinery is taken away. Its bytes are the job's int8
 * tensors (checked with numpy against `quantize`'s output for the 1 GiB
 * checkpoint: the same 256 MiB).
 *
 * @module
 */
import { type OpenFile, openFile } from "../src/_file_io.ts";
import { quantRange } from "../src/ranges.ts";
import { type WasmKernels, wasmKernels, type WasmLease } from "../src/wasm_kernels.ts";

/** A share of the work: consecutive whole slabs of the input's data. */
export interface BareShare {
  /** The checkpoint (float32 tensors whose rows divide a slab). */
  readonly input: string;
  /** The output file; it must exist. */
  readonly output: string;
  /** Input offset of the share's first byte. */
  readonly inputStart: number;
  /** Output offset of the share's first byte. */
  readonly outputStart: number;
  /** Input bytes, a whole number of slabs. */
  readonly bytes: number;
  /** Row length in elements: a block of the per-channel scales. */
  readonly rowLength: number;
  /** Bytes of a slab. */
  readonly slabBytes: number;
}

/** Where the time of a share went, in milliseconds. */
export interface BareTimes {
  /** The whole share. */
  readonly ms: number;
  /** Its first 4 slabs: fresh memory and first calls. */
  readonly firstSlabsMs: number;
  /** The median of the other slabs. */
  readonly steadySlabMs: number;
}

/** How many of a share's first slabs {@linkcode BareTimes.firstSlabsMs} counts. */
const FIRST_SLABS = 4;

/**
 * Runs a share in this thread.
 *
 * @param share The share.
 * @returns Its times.
 */
export function bareLoop(share: BareShare): BareTimes {
  const kernels = wasmKernels();
  if (!kernels) throw new Error("The bare loop needs the wasm kernels");
  // A slab's float32 values and their int8 bytes, each with the arena's alignment padding.
  const lease = kernels.lease(share.slabBytes + share.slabBytes / 4 + 1024);
  if (!lease) throw new Error("The wasm kernels' memory cannot hold the bare loop's buffers");
  let input: OpenFile | undefined, output: OpenFile | undefined;
  try {
    input = openFile(share.input, "read");
    output = openFile(share.output, "update");
    return timeSlabs(share, kernels, lease, input, output);
  } finally {
    input?.close();
    output?.close();
    lease.release();
  }
}

/** The loop itself: a slab's float32 input and int8 output in the lease, reused for every slab. */
function timeSlabs(
  share: BareShare,
  kernels: WasmKernels,
  lease: WasmLease,
  input: OpenFile,
  output: OpenFile,
): BareTimes {
  const { slabBytes, rowLength } = share;
  const n = slabBytes / 4;
  const inBytes = lease.allocate(slabBytes);
  const values = new Float32Array(inBytes.buffer, inBytes.byteOffset, n);
  const out = lease.allocate(n);
  const range = quantRange("int8", "linear_symmetric");
  const sums = new Float64Array(3);
  const slabTimes: number[] = [];
  const t0 = performance.now();
  for (let done = 0; done < share.bytes; done += slabBytes) {
    const t = performance.now();
    for (let got = 0; got < slabBytes;) {
      const read = input.readAt(inBytes.subarray(got), share.inputStart + done + got);
      if (read === 0) throw new Error(`${share.input} ends inside the share`);
      got += read;
    }
    if (!kernels.observeQuantize(values, n / rowLength, rowLength, "linear_symmetric", range, out, sums)) {
      throw new Error("The kernel refused a slab");
    }
    for (let put = 0; put < n;) put += output.writeAt(out.subarray(put), share.outputStart + done / 4 + put);
    slabTimes.push(performance.now() - t);
  }
  const ms = performance.now() - t0;
  const rest = slabTimes.slice(FIRST_SLABS).sort((a, b) => a - b);
  return {
    ms,
    firstSlabsMs: slabTimes.slice(0, FIRST_SLABS).reduce((a, b) => a + b, 0),
    steadySlabMs: rest.length ? rest[rest.length >> 1] : NaN,
  };
}
