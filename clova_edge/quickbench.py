"""`clova-edge bench`: one model on this machine — time to first token, prefill and decode speed, memory and the
memory bandwidth decode achieves. (benchmarks/ holds the side-by-side comparison with the peers.)"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from clova_edge.runtime.engine import Engine
from clova_edge.runtime.generate import generate_tokens
from clova_edge.runtime.settings import GenerationSettings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_quick_bench(folder: Path, *, variant: str | None = None, threads: int | None = None,
                    prompt_tokens: int = 512, new_tokens: int = 64, repeats: int = 3) -> dict:
    t0 = time.perf_counter()
    engine = Engine.load(folder, variant=variant, threads=threads)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    vocab = min(engine.model.config.vocab_size, 30000)   # ordinary tokens; no stop ids are used below
    settings = GenerationSettings(max_new_tokens=new_tokens)
    ttft, decode = [], []
    for _ in range(repeats):
        ids = rng.integers(1000, vocab, prompt_tokens).tolist()
        cache = engine.model.new_cache(prompt_tokens + new_tokens)
        t = time.perf_counter()
        tokens = generate_tokens(engine.model, cache, ids, settings, stop_ids=())
        next(tokens)
        t_first = time.perf_counter()
        n = sum(1 for _ in tokens)
        ttft.append(t_first - t)
        decode.append(n / (time.perf_counter() - t_first))
    v = engine.model.variant
    tps = float(np.median(decode))
    return {"model": str(folder), "variant": v.name, "threads": engine.model.threads, "load_s": round(load_s, 3),
            "prompt_tokens": prompt_tokens, "ttft_s": round(float(np.median(ttft)), 4),
            "prefill_tps": round(prompt_tokens / float(np.median(ttft)), 1), "decode_tps": round(tps, 2),
            "decode_tps_spread": [round(min(decode), 2), round(max(decode), 2)],
            "weights_mb": round(v.size_bytes / 1e6, 1), "bandwidth_gbs": round(v.size_bytes * tps / 1e9, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1)}
