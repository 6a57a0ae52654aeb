"""This machine's achievable memory read bandwidth, and the bandwidth a decode step achieves.

The probe reads a buffer far larger than the caches (512 MiB by default) with numpy reductions, one slice per
thread (numpy releases the GIL inside a reduction, so threads run in parallel), and keeps the best of a few
passes: that is the ceiling a decode step that streams its weights once per token can approach.
A decode step reads every weight that multiplies an activation once (the embedding lookup reads one row: not
counted) plus the KV cache of the tokens so far; `achieved_gbs` turns bytes per token and tokens/s into GB/s.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def read_bandwidth_gbs(threads: int, *, mib: int = 512, passes: int = 5) -> float:
    """Best observed read bandwidth in GB/s (1e9 bytes/s) with `threads` threads summing disjoint slices."""
    buf = np.ones(mib * 2**20 // 8, np.int64)          # int64 sum: no float pairwise work, one add per 8 bytes
    parts = np.array_split(buf, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.sum, parts))                   # touch every page first
        for _ in range(passes):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def achieved_gbs(bytes_per_token: float, tok_s: float) -> float:
    return bytes_per_token * tok_s / 1e9


def kv_bytes_per_token(context: int, *, layers: int, kv_heads: int, head_dim: int, elem_bytes: int) -> int:
    """Bytes of K and V read by one decode step with `context` positions cached."""
    return 2 * layers * kv_heads * head_dim * elem_bytes * context


def main() -> int:
    for t in (1, 2):
        print(f"{t} thread(s): {read_bandwidth_gbs(t):.1f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
