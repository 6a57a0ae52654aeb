"""This machine's achievable memory read bandwidth, and the bandwidth a decode step achieves.

The probe reads a buffer far larger than the caches (512 MiB by default), one slice per thread, and keeps
the best of a few passes: that is the ceiling a decode step that streams its weights once per token can
approach.
It is a few lines of C (bandwidth_probe.c: 64-byte vector loads, compiled here with the system C compiler and
-march=native into the work cache) because numpy's reductions do not saturate memory: on the 2-core
benchmark VM numpy reached 16.3 GB/s, scalar C loads 20-22 GB/s, vector loads 24-26 GB/s. Without a
compiler it falls back to numpy and says so (`method`). It is a floor of what the machine can stream, not a
hard ceiling: a model whose weights partly stay in a large last-level cache can exceed it.
A decode step reads every weight that multiplies an activation once (the embedding lookup reads one row: not
counted) plus the KV cache of the tokens so far; `achieved_gbs` turns bytes per token and tokens/s into GB/s.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_SOURCE = Path(__file__).with_name("bandwidth_probe.c")


def _compiled_probe(work: Path) -> ctypes.CDLL | None:
    """The C probe as a shared library (built once per source version into `work`), or None without a
    compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    tag = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:12]
    lib = work / f"bandwidth_probe-{tag}.so"
    if not lib.exists():
        work.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(".so.part")
        for flags in (["-march=native"], []):   # some compilers/targets refuse -march=native
            r = subprocess.run([cc, "-O3", *flags, "-shared", "-fPIC", "-pthread", str(_SOURCE),
                                "-o", str(tmp)],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
        else:
            return None
        tmp.rename(lib)
    probe = ctypes.CDLL(str(lib))
    probe.read_pass.restype = ctypes.c_uint64
    probe.read_pass.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return probe


def read_bandwidth(threads: int, *, mib: int = 512, passes: int = 5,
                   work: Path | None = None) -> tuple[float, str]:
    """(best observed read bandwidth in GB/s = 1e9 bytes/s, "c" or "numpy") with `threads` threads on disjoint
    slices of one buffer."""
    raw = np.ones(mib * 2**20 // 8 + 8, np.uint64)
    off = (-raw.ctypes.data % 64) // 8                  # 64-byte aligned start for the vector loads
    buf = raw[off:off + mib * 2**20 // 8]
    probe = _compiled_probe(work or Path(".cache") / "bench")
    if probe is not None:
        one_pass, method = (lambda: probe.read_pass(buf.ctypes.data, buf.size, threads)), "c"
    else:  # numpy releases the GIL inside a reduction, so threads run in parallel
        parts, pool = np.array_split(buf, threads), ThreadPoolExecutor(threads)
        one_pass, method = (lambda: list(pool.map(np.sum, parts))), "numpy"
    one_pass()                                          # touch every page first
    best = 0.0
    for _ in range(passes):
        t0 = time.perf_counter()
        one_pass()
        best = max(best, buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return best, method


def achieved_gbs(bytes_per_token: float, tok_s: float) -> float:
    return bytes_per_token * tok_s / 1e9


def kv_bytes_per_token(context: int, *, layers: int, kv_heads: int, head_dim: int, elem_bytes: int) -> int:
    """Bytes of K and V read by one decode step with `context` positions cached."""
    return 2 * layers * kv_heads * head_dim * elem_bytes * context


def main() -> int:
    for t in (1, 2):
        gbs, method = read_bandwidth(t)
        print(f"{t} thread(s): {gbs:.1f} GB/s ({method} probe)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
