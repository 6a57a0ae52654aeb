"""A chat that keeps the KV cache across turns.

Each turn renders the whole conversation with the model's chat template, keeps the longest prefix of ids that
is already in the cache, rolls the cache back to it (rows are positional, so rolling back is just a length) and
prefills only the rest. When the conversation would overflow the context, the oldest whole turns are dropped
(never the system prompt or other leading non-chat messages) and the first event of the turn says so.
A ChatSession is for one thread at a time; make one per conversation.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Iterator

from .chat_template import encode_chat
from .errors import ClovaEdgeError, PromptError
from .generate import Event, stream
from .settings import GenerationSettings

_TURN_ROLES = ("user", "assistant")


class ChatSession:
    def __init__(self, engine, *, system: str | None = None, settings: GenerationSettings | None = None):
        self.engine = engine
        self.settings = settings or engine.default_settings()
        self.messages: list[dict[str, str]] = []
        self.cache = None
        self.cache_ids: list[int] = []
        self.last: Event | None = None          # the last event of the last turn (stats for /stats)
        self._busy = threading.Lock()
        if system:
            self.set_system(system)

    def reset(self) -> None:
        """Forget the conversation but keep the system prompt; the cache is kept (rolled back on the next turn)."""
        self.messages = [m for m in self.messages if m["role"] not in _TURN_ROLES]

    def set_system(self, text: str) -> None:
        self.messages = [m for m in self.messages if m["role"] != "system"]
        self.messages.insert(0, {"role": "system", "content": text})

    @property
    def tokens_in_context(self) -> int:
        return self.cache.length if self.cache is not None else 0

    def _fit(self, reserve: int) -> tuple[list[int], int]:
        """Ids of the whole conversation + generation prompt; drop oldest turns until `reserve` tokens fit."""
        ctx = self.engine.model.config.context_length
        dropped = 0
        while True:
            ids = encode_chat(self.engine.template, self.engine.tokenizer, self.messages)
            if len(ids) + reserve <= ctx:
                return ids, dropped
            turns = [i for i, m in enumerate(self.messages) if m["role"] in _TURN_ROLES]
            if len(turns) <= 1:  # only the new user message is left: it alone is too long
                self.messages.pop()
                raise PromptError(f"this message is {len(ids)} tokens with the system prompt; the context is "
                                  f"{ctx} tokens and {reserve} are kept for the answer: shorten it")
            del self.messages[turns[0]]   # the oldest turn (a user message; its answer goes next round)
            dropped += 1

    def send(self, text: str, settings: GenerationSettings | None = None) -> Iterator[Event]:
        """Add a user message and stream the answer. Stopping the iteration early (Ctrl-C, break) keeps the
        answer as far as it went, in the conversation and in the cache."""
        if not self._busy.acquire(blocking=False):
            raise ClovaEdgeError("this ChatSession is already answering; use one ChatSession per thread")
        try:
            yield from self._send(text, settings or self.settings)
        finally:
            self._busy.release()

    def _send(self, text: str, settings: GenerationSettings) -> Iterator[Event]:
        engine, ctx = self.engine, self.engine.model.config.context_length
        text = engine.check_text(text)
        if not text.strip():
            raise PromptError("the message is empty: give some text")
        self.messages.append({"role": "user", "content": text})
        reserve = min(settings.max_new_tokens, ctx // 4)
        ids, dropped = self._fit(reserve)
        keep = 0   # the longest prefix already in the cache; at least one new token is run
        for a, b in zip(self.cache_ids, ids[:-1]):
            if a != b:
                break
            keep += 1
        if self.cache is None:
            self.cache = engine.model.new_cache(len(ids) + settings.max_new_tokens)
        self.cache.length = keep
        self.cache = engine.model.ensure_capacity(self.cache, min(ctx, len(ids) + settings.max_new_tokens))
        answer, generated = [], []
        notice = f"dropped the {dropped} oldest message(s) to fit the {ctx}-token context" if dropped else None
        try:
            for event in stream(engine.model, engine.tokenizer, self.cache, ids[keep:], settings,
                                stop_ids=engine.manifest.stop_token_ids, stop_strings=engine.manifest.stop_strings,
                                history=ids[:keep]):
                if notice:
                    event, notice = replace(event, notice=notice), None
                if event.token_id is not None:
                    generated.append(event.token_id)
                answer.append(event.text)
                self.last = event
                yield event
        finally:
            self.messages.append({"role": "assistant", "content": "".join(answer)})
            self.cache_ids = (ids + generated)[: self.cache.length]

