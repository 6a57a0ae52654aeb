"""llama.cpp through its Python binding (llama-cpp-python, pointed at our own build with LLAMA_CPP_LIB_PATH).

Its own loop: `Llama.generate` with greedy sampling (top_k=1). n_ctx 4096, n_batch 512 (its default prompt
chunking), the same thread count for prompt and generation. Perplexity uses a second context with every
position's logits kept (logits_all).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class LlamaCppAdapter:
    def __init__(self, gguf: Path):
        self.gguf, self.llm, self.threads = gguf, None, 2

    def load(self, threads: int) -> None:
        import llama_cpp

        self.version = llama_cpp.__version__
        self.threads = threads
        self.llm = llama_cpp.Llama(str(self.gguf), n_ctx=4096, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)

    def generate(self, prompt_ids: list[int], n: int) -> list[float]:
        self.llm.reset()
        arrivals = []
        for _tok in self.llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0,
                                      reset=True):
            arrivals.append(time.perf_counter())
            if len(arrivals) == n:
                break
        return arrivals

    def start(self, prompt_ids: list[int]) -> np.ndarray:
        """Answer agreement (benchmarks/quality.py): the main context, evaluated incrementally."""
        self.llm.reset()
        self.llm.eval([int(i) for i in prompt_ids])
        return np.array(self.llm.scores[self.llm.n_tokens - 1], np.float32)

    def step(self, token: int) -> np.ndarray:
        self.llm.eval([int(token)])
        return np.array(self.llm.scores[self.llm.n_tokens - 1], np.float32)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        import llama_cpp

        # windows are at most 512 tokens (quality.py, perplexity_window)
        if getattr(self, "_ppl", None) is None:
            self._ppl = llama_cpp.Llama(str(self.gguf), n_ctx=max(512, len(ids)), n_batch=512,
                                        n_threads=self.threads, n_threads_batch=self.threads, logits_all=True,
                                        verbose=False)
        self._ppl.reset()
        self._ppl.eval([int(i) for i in ids])
        return np.array(self._ppl.scores[:len(ids)], np.float32)


def make_adapter(model: Path, variant: str | None = None) -> LlamaCppAdapter:
    return LlamaCppAdapter(model)
