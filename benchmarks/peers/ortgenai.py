"""onnxruntime-genai: a folder written by its model builder, run with its own Generator loop (greedy).

Threads: the session's intra_op_num_threads is set through Config.overlay. Perplexity reads the prefill's
logits output (the builder's graph returns logits for every prompt position).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


class OrtGenaiAdapter:
    def __init__(self, folder: Path):
        self.folder, self.model = folder, None

    def load(self, threads: int) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.version = og.__version__
        config = og.Config(str(self.folder))
        config.clear_providers()
        opts = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": opts}}}))
        self.model = og.Model(config)

    def _generator(self, prompt_ids, max_length: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max_length, min_length=max_length)
        gen = self.og.Generator(self.model, params)
        gen.append_tokens(np.asarray(prompt_ids, np.int32))
        return gen

    def generate(self, prompt_ids: list[int], n: int) -> list[float]:
        gen = self._generator(prompt_ids, len(prompt_ids) + n)
        arrivals = []
        while len(arrivals) < n and not gen.is_done():
            gen.generate_next_token()
            arrivals.append(time.perf_counter())
        return arrivals

    def start(self, prompt_ids: list[int]) -> np.ndarray:
        """Answer agreement (benchmarks/quality.py): one generator per answer, tokens appended one by one."""
        self._gen = self._generator(prompt_ids, len(prompt_ids) + 64)
        return np.asarray(self._gen.get_logits(), np.float32).reshape(-1)

    def step(self, token: int) -> np.ndarray:
        self._gen.append_tokens(np.asarray([token], np.int32))
        return np.asarray(self._gen.get_logits(), np.float32).reshape(-1)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        gen = self._generator(ids, len(ids) + 1)
        out = np.asarray(gen.get_output("logits"), np.float32)
        return out.reshape(-1, out.shape[-1])[-len(ids):]


def make_adapter(model: Path, variant: str | None = None) -> OrtGenaiAdapter:
    return OrtGenaiAdapter(model)
