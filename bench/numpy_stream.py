#!/usr/bin/env python3
"""The competitor of quantflow's file pipeline: a streaming numpy script.

Reads a safetensors header, then, per float32 tensor of rank 2, reads rows in
chunks into one reused buffer (readinto), quantizes them per channel (axis 0,
int8 linear_symmetric, Core ML Tools' numbers: SPEC.md Sections 2-3), and
writes the int8 values, then the float32 scales, in quantflow's output layout
(NAME as I8, NAME.scale as F32 [rows, 1]). Other tensors are copied. The file
is written under a temporary name, fsynced and renamed, as quantflow does.

    python3 bench/numpy_stream.py IN.safetensors OUT.safetensors [--slab-bytes 1048576]

Prints one `RESULT {json}` line (wall time inside the process, MB/s of input).
Peak RSS is measured from outside (bench/pipeline_bench.ts runs it under
/usr/bin/time -v).
"""
import argparse
import json
import os
import struct
import time

import numpy as np


def read_header(f):
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return 8 + n, entries


def encode_header(specs):
    parts, offset = [], 0
    for name, dtype, shape, nbytes in specs:
        parts.append(json.dumps(name) + ":" + json.dumps({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}))
        offset += nbytes
    body = ("{" + ",".join(parts) + "}").encode()
    pad = (-(8 + len(body))) % 8
    body += b" " * pad
    return struct.pack("<Q", len(body)) + body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--slab-bytes", type=int, default=1024 * 1024)  # faster than 4 MiB here, as for quantflow
    a = p.parse_args()
    t0 = time.perf_counter()
    qmin, qmax = -127, 127
    with open(a.input, "rb", buffering=0) as f:
        data_start, entries = read_header(f)
        specs, jobs = [], []
        for name, e in entries:
            shape, (b, end) = e["shape"], e["data_offsets"]
            if e["dtype"] == "F32" and len(shape) == 2 and shape[0] * shape[1] > 2048:
                rows, cols = shape
                specs += [(name, "I8", shape, rows * cols), (name + ".scale", "F32", [rows, 1], rows * 4)]
                jobs.append(("q", data_start + b, rows, cols))
            else:
                specs.append((name, e["dtype"], shape, end - b))
                jobs.append(("raw", data_start + b, end - b, 0))
        tmp = a.output + ".tmp"
        with open(tmp, "wb", buffering=0) as out:
            out.write(encode_header(specs))
            buf = None
            for kind, pos, n, cols in jobs:
                f.seek(pos)
                if kind == "raw":
                    left = n
                    while left:
                        chunk = f.read(min(left, a.slab_bytes))
                        out.write(chunk)
                        left -= len(chunk)
                    continue
                rows = n
                chunk_rows = max(1, a.slab_bytes // (cols * 4))
                if buf is None or buf.shape[1] != cols or buf.shape[0] < chunk_rows:
                    buf = np.empty((chunk_rows, cols), dtype=np.float32)
                scales = np.empty((rows, 1), dtype=np.float32)
                for r0 in range(0, rows, chunk_rows):
                    k = min(chunk_rows, rows - r0)
                    w = buf[:k]
                    mv = memoryview(w.reshape(-1).view(np.uint8))
                    got = 0
                    while got < len(mv):
                        m = f.readinto(mv[got:])
                        if not m:
                            raise EOFError(f"{a.input}: data ends early")
                        got += m
                    lo = np.amin(w, axis=1, keepdims=True)
                    hi = np.amax(w, axis=1, keepdims=True)
                    m_ = np.maximum(np.abs(lo), np.abs(hi))
                    scale = (m_ - (-m_)) / np.float32(qmax - qmin)
                    scale = np.where(scale == 0, np.float32(1), scale)
                    q = np.clip(np.round(w / scale), qmin, qmax).astype(np.int8)
                    out.write(q.data)
                    scales[r0 : r0 + k] = scale
                out.write(scales.data)
            os.fsync(out.fileno())
        os.replace(tmp, a.output)
        total = entries[-1][1]["data_offsets"][1] if entries else 0
    s = time.perf_counter() - t0
    print(
        "RESULT "
        + json.dumps({"bench": "numpy_stream", "runtime": f"numpy {np.__version__}", "inputBytes": total, "seconds": s, "mbPerSec": total / s / 1e6})
    )


if __name__ == "__main__":
    main()
