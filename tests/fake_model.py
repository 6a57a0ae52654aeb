"""A scripted stand-in for OnnxModel: it "generates" given replies, so protocol code can be tested exactly.

Each prefill starts the next scripted reply (a list of ids, or a str encoded with special tokens allowed);
each decode step gives the reply's next id as a one-hot logit vector. The cache records the ids it holds, so
tests can check what the chat fed it (`cache.ids`) and that rollback keeps the right prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clova_edge.runtime.engine import Engine


class FakeCache:
    def __init__(self, capacity: int):
        self.ids: list[int] = []
        self.capacity = capacity

    @property
    def length(self) -> int:
        return len(self.ids)

    @length.setter
    def length(self, n: int) -> None:
        del self.ids[n:]


@dataclass
class _Config:
    vocab_size: int
    context_length: int


@dataclass
class _Variant:
    name: str


class ScriptedModel:
    def __init__(self, replies: list[list[int]], vocab_size: int, context_length: int = 4096,
                 filler: int = 0):
        self.replies, self.filler = list(replies), filler
        self.config = _Config(vocab_size, context_length)
        self.variant, self.threads = _Variant("scripted"), 1     # what the CLI's banner names
        self.prompts: list[list[int]] = []      # the ids of every prefill, in order
        self._reply: list[int] = []
        self._pos = 0

    def new_cache(self, capacity: int) -> FakeCache:
        return FakeCache(min(capacity, self.config.context_length))

    def ensure_capacity(self, cache: FakeCache, needed: int) -> FakeCache:
        cache.capacity = max(cache.capacity, min(needed, self.config.context_length))
        return cache

    def _logits(self) -> np.ndarray:
        token = self._reply[self._pos] if self._pos < len(self._reply) else self.filler
        logits = np.zeros(self.config.vocab_size, np.float32)
        logits[token] = 10.0
        return logits

    def prefill(self, cache: FakeCache, ids: np.ndarray, *, all_logits: bool = False) -> np.ndarray:
        assert cache.length + len(ids) <= cache.capacity
        cache.ids += [int(i) for i in ids]
        self.prompts.append([int(i) for i in ids])
        self._reply, self._pos = (self.replies.pop(0) if self.replies else []), 0
        return self._logits()

    def decode(self, cache: FakeCache, token: int) -> np.ndarray:
        assert cache.length < cache.capacity
        cache.ids.append(int(token))
        self._pos += 1
        return self._logits()


def scripted_engine(model_dir, replies: list[list[int] | str], **kw) -> Engine:
    """An Engine on `model_dir`'s manifest, tokenizer and template whose model plays `replies`."""
    real = Engine.load(model_dir, variant="fp32", threads=1)
    tok = real.tokenizer
    ids = [r if isinstance(r, list) else tok.encode(r, allow_special=True) for r in replies]
    model = ScriptedModel(ids, real.model.config.vocab_size, real.model.config.context_length, **kw)
    return Engine(real.manifest, model, tok, real.template)


def script_input(monkeypatch, lines, *, echo: bool = False) -> None:
    """The REPL reads `lines` as the user's typing, then EOF (Ctrl-D); echo=True prints each prompt."""
    import builtins
    import io
    import sys
    it = iter(lines)

    def fake_input(prompt=""):
        if echo:
            print(prompt, end="")
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None
    monkeypatch.setattr(builtins, "input", fake_input)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
