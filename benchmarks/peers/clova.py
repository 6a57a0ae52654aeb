"""clova-edge: an exported folder (manifest.json) loaded with clova_edge.Engine, one variant (fp32/int8/int4).

The loop is the runtime's own step (OnnxModel.prefill, then OnnxModel.decode per token on a preallocated
in-place KV cache) with greedy argmax, EOS ignored. Perplexity: prefill with every position's logits. The
first chat turn (first_turn.py) goes through the product path instead: Engine.chat + ChatSession.send, with
the Engine's prompt cache (in memory).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class ClovaAdapter:
    def __init__(self, folder: Path, variant: str | None):
        self.folder, self.variant, self.model = folder, variant, None

    def load(self, threads: int) -> None:
        from clova_edge import Engine
        import clova_edge

        self.version = f"clova-edge {clova_edge.__version__}"
        self.engine = Engine.load(self.folder, variant=self.variant, threads=threads)
        self.model = self.engine.model

    def generate(self, prompt_ids: list[int], n: int) -> list[float]:
        cache = self.model.new_cache(len(prompt_ids) + n)
        logits = self.model.prefill(cache, np.asarray(prompt_ids, np.int64))
        arrivals = []
        while True:
            token = int(np.argmax(logits))
            arrivals.append(time.perf_counter())
            if len(arrivals) == n:
                return arrivals
            logits = self.model.decode(cache, token)

    def start(self, prompt_ids: list[int]) -> np.ndarray:
        """Answer agreement (benchmarks/quality.py): next-token logits after a fresh prompt, then per step."""
        self._cache = self.model.new_cache(len(prompt_ids) + 64)
        return np.array(self.model.prefill(self._cache, np.asarray(prompt_ids, np.int64)), np.float32)

    def step(self, token: int) -> np.ndarray:
        self._cache = self.model.ensure_capacity(self._cache, self._cache.length + 1)
        return np.array(self.model.decode(self._cache, token), np.float32)

    def first_turn(self, system: str, opening: list[int], text: str, turn: list[int]) -> tuple[float, int]:
        """A fresh chat's first turn (one token): when its first token arrived, and how many opening tokens
        came from the prompt cache."""
        chat = self.engine.chat(system=system, settings=self.engine.default_settings(max_new_tokens=1))
        reused, first = chat.tokens_in_context if self.engine.prompt_cache.hits else 0, None
        for event in chat.send(text):
            if first is None:
                first = time.perf_counter()
        if chat.cache_ids != opening + turn:
            raise RuntimeError("the chat's prompt ids are not the spec's (tokenizer or format mismatch)")
        return first, reused

    def logits(self, ids: np.ndarray) -> np.ndarray:
        cache = self.model.new_cache(len(ids))
        return np.asarray(self.model.prefill(cache, np.asarray(ids, np.int64), all_logits=True), np.float32)


def make_adapter(model: Path, variant: str | None = None) -> ClovaAdapter:
    return ClovaAdapter(model, variant)
