"""llama.cpp through its Python binding (llama-cpp-python, pointed at our own build with LLAMA_CPP_LIB_PATH).

Its own loop: `Llama.generate` with greedy sampling (top_k=1). n_ctx 4096, n_batch 512 (its default prompt
chunking), the same thread count for prompt and generation. Perplexity uses a second context with every
position's logits kept (logits_all). The first chat turn (first_turn.py) uses its prompt cache:
generate() keeps the KV rows of the longest common prefix of the new prompt and the one before (as the
server's cache_prompt does per slot), so a new conversation evaluates only what follows the opening. Not
Llama.save_state / load_state: this binding's load_state scans and rewrites its n_batch x vocabulary scores
array (512 x 110,592 floats, 226 MB) on every call, a cost of the binding and not of llama.cpp.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class LlamaCppAdapter:
    def __init__(self, gguf: Path):
        self.gguf, self.llm, self.threads = gguf, None, 2
        self._opening: list[int] | None = None   # the opening whose rows the context holds

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

    def first_turn(self, system: str, opening: list[int], text: str, turn: list[int]) -> tuple[float, int]:
        """A fresh chat's first turn (one token): when its first token arrived, and how many opening tokens
        were reused. The first call (cold) evaluates the whole prompt; later ones reuse the opening's KV rows
        left in the context."""
        if self._opening != opening:
            self.llm.reset()
            self._opening = list(opening)
        cached = next((i for i, (a, b) in enumerate(zip(self.llm._input_ids, opening)) if a != b),
                      min(self.llm.n_tokens, len(opening)))
        tokens = self.llm.generate(opening + turn, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0,
                                   reset=True)
        next(tokens)
        first = time.perf_counter()
        tokens.close()
        return first, cached

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
