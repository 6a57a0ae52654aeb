"""`clova-edge bench`: one model on this machine — time to first token, prefill and decode speed, memory and
the memory bandwidth decode achieves. (benchmarks/ holds the side-by-side comparison with the peers.)

Each repeat is a fresh cache, a random prompt of ordinary tokens and `new_tokens` decoded with no stop id, so
every repeat times the same work. The result also says what share of its threads' CPU time the process got: on
a busy, shared machine the speed figures are the neighbours' as much as the model's.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np

from clova_edge.runtime.engine import Engine
from clova_edge.runtime.generate import generate_tokens
from clova_edge.runtime.settings import GenerationSettings


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB: VmHWM (not ru_maxrss, which Linux carries over fork + exec from a
    parent; see benchmarks/protocol.py)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB


def run_quick_bench(folder: Path, *, variant: str | None = None, threads: int | None = None,
                    prompt_tokens: int = 512, new_tokens: int = 64, repeats: int = 3,
                    progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _m: None)
    say(f"bench: loading {folder}")
    t0 = time.perf_counter()
    engine = Engine.load(folder, variant=variant, threads=threads)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    vocab = min(engine.model.config.vocab_size, 30000)   # ordinary tokens; no stop ids are used below
    settings = GenerationSettings(max_new_tokens=new_tokens)
    ttft, decode = [], []
    say(f"bench: {repeats} repeats of a {prompt_tokens}-token prompt + {new_tokens} new tokens")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(repeats):
        ids = rng.integers(1000, vocab, prompt_tokens).tolist()
        cache = engine.model.new_cache(prompt_tokens + new_tokens)
        t = time.perf_counter()
        tokens = generate_tokens(engine.model, cache, ids, settings, stop_ids=())
        next(tokens)
        t_first = time.perf_counter()
        n = sum(1 for _ in tokens)
        ttft.append(t_first - t)
        decode.append(n / (time.perf_counter() - t_first))
        say(f"[{i + 1}/{repeats}] repeat")
    cpu_share = (time.process_time() - cpu0) / ((time.perf_counter() - wall0) * engine.model.threads)
    v = engine.model.variant
    tps = float(np.median(decode))
    return {"model": str(folder), "variant": v.name, "threads": engine.model.threads,
            "load_s": round(load_s, 3),
            "prompt_tokens": prompt_tokens, "ttft_s": round(float(np.median(ttft)), 4),
            "prefill_tps": round(prompt_tokens / float(np.median(ttft)), 1), "decode_tokens": new_tokens - 1,
            "decode_tps": round(tps, 2), "decode_tps_spread": [round(min(decode), 2), round(max(decode), 2)],
            "weights_mb": round(v.size_bytes / 1e6, 1), "bandwidth_gbs": round(v.size_bytes * tps / 1e9, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "cpu_share": round(min(cpu_share, 1.0), 2),
            "load_average_1min": round(os.getloadavg()[0], 2)}
