#!/usr/bin/env python3
"""The competitor of bench/kernel_js_bench.ts: the same two jobs in
straightforward numpy, written the way Core ML Tools writes them
(per-row amin/amax with keepdims, scale = (hi - lo) / (qmax - qmin) in
float32, np.round(w / scale) + zp, clip, astype), timed the same way
(interleaved, warmup, best of N) and printed in the same format.

    python3 bench/numpy_quantize.py INPUT.f32 --rows 4096 --cols 4096 [--rounds 7] [--warmup 2]

INPUT.f32 is raw little-endian float32, rows x cols (kernel_js_bench.ts
writes it). Prints a table, then one `RESULT {json}` line per job.
"""
import argparse
import json
import time

import numpy as np


def int8_per_channel_symmetric(w):
    # SPEC.md Section 2: symmetric int8 is [-127, 127], zero point 0.
    qmin, qmax = -127, 127
    lo = np.amin(w, axis=1, keepdims=True)
    hi = np.amax(w, axis=1, keepdims=True)
    m = np.maximum(np.abs(lo), np.abs(hi))
    lo, hi = -m, m
    scale = (hi - lo) / np.float32(qmax - qmin)
    scale = np.where(scale == 0, np.float32(1), scale)
    zp = np.float32(0)
    q = np.clip(np.round(w / scale) + zp, qmin, qmax).astype(np.int8)
    return q, scale, None


def uint8_per_channel_affine(w):
    qmin, qmax = 0, 255
    lo = np.minimum(np.amin(w, axis=1, keepdims=True), np.float32(0))
    hi = np.maximum(np.amax(w, axis=1, keepdims=True), np.float32(0))
    width = hi - lo
    scale = width / np.float32(qmax - qmin)
    zp = np.round((np.float32(qmin) * hi - np.float32(qmax) * lo) / width)
    zp = np.clip(zp, qmin, qmax)
    scale = np.where(scale == 0, np.float32(1), scale)
    q = np.clip(np.round(w / scale) + zp, qmin, qmax).astype(np.uint8)
    return q, scale, zp.astype(np.uint8)


JOBS = [("int8_per_channel_symmetric", int8_per_channel_symmetric), ("uint8_per_channel_affine", uint8_per_channel_affine)]


def weighted_sum(a, weights):
    """sum(a[i] * (i % 251 + 1)), as kernel_js_bench.ts computes it."""
    a = a.ravel().astype(np.int64)
    return int(a @ weights[: a.size])


def checksum(result, weights):
    q, scale, zp = result
    return {
        "q": weighted_sum(q, weights),
        "scaleBits": int(scale.astype(np.float32).view(np.uint32).astype(np.int64).sum()),
        "zeroPoint": weighted_sum(zp, weights) if zp is not None else 0,
    }


def main():  # noqa: C901
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--job", help="run only this job")
    a = p.parse_args()
    jobs = [j for j in JOBS if a.job is None or j[0] == a.job]
    w = np.fromfile(a.input, dtype="<f4").reshape(a.rows, a.cols)
    weights = (np.arange(w.size, dtype=np.int64) % 251) + 1
    keep = [None] * len(jobs)
    sums = [None] * len(jobs)
    for _ in range(a.warmup):
        for j, (_, fn) in enumerate(jobs):
            keep[j] = fn(w)
            if sums[j] is None:
                sums[j] = checksum(keep[j], weights)
    del weights
    times = [[] for _ in jobs]
    for r in range(a.rounds):
        order = list(range(len(jobs)))
        if r % 2:
            order.reverse()
        for j in order:
            t0 = time.perf_counter()
            keep[j] = jobs[j][1](w)
            times[j].append((time.perf_counter() - t0) * 1000)
    runtime = f"numpy {np.__version__}"
    results = []
    for j, (name, _) in enumerate(jobs):
        best = min(times[j])
        results.append({
            "bench": "kernel",
            "runtime": runtime,
            "job": name,
            "elements": int(w.size),
            "rounds": a.rounds,
            "bestMs": best,
            "medianMs": float(np.median(times[j])),
            "elementsPerSec": w.size / (best / 1000),
            "gbPerSec": w.size * 4 / (best / 1000) / 1e9,
            "checksum": sums[j] if sums[j] is not None else checksum(keep[j], (np.arange(w.size) % 251) + 1),
        })
    print(f"{'runtime':<14} {'job':<28} {'best ms':>9} {'median ms':>10} {'Melem/s':>9} {'GB/s':>6}")
    for r in results:
        print(
            f"{r['runtime']:<14} {r['job']:<28} {r['bestMs']:>9.1f} {r['medianMs']:>10.1f} "
            f"{r['elementsPerSec'] / 1e6:>9.0f} {r['gbPerSec']:>6.2f}"
        )
    for r in results:
        print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
