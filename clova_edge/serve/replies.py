"""OpenAI's response shapes, built from a generation's Events: one whole object, or SSE chunks as they come.

A chat answer that calls tools carries `tool_calls` (ids "call_...", arguments as a JSON string, as OpenAI
sends them) and finish_reason "tool_calls". `usage` counts prompt and answer tokens, and the prompt tokens
whose KV rows were reused from an earlier request (prompt_tokens_details.cached_tokens).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


class _Reply:
    object = kind = ""

    def __init__(self, model: str, n_prompt: int, body: Any):
        self.model, self.n_prompt = model, n_prompt
        self.id = f"{self.kind}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.text, self.n_generated, self.finish, self.calls = [], 0, None, ()
        self.started = False

    def add(self, event: Any) -> None:
        self.text.append(event.text)
        self.n_generated = event.n_generated
        if event.finish_reason is not None:
            self.finish, self.calls = event.finish_reason, tuple(event.tool_calls)

    def usage(self, reused: int) -> dict[str, Any]:
        return {"prompt_tokens": self.n_prompt, "completion_tokens": self.n_generated,
                "total_tokens": self.n_prompt + self.n_generated,
                "prompt_tokens_details": {"cached_tokens": reused}}

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunks(self, event: Any, reused: int) -> list[dict[str, Any]]:
        self.add(event)
        out = []
        first, self.started = not self.started, True
        if event.text or first or event.finish_reason is not None:
            out.append(self._chunk(event.text, first, event.finish_reason))
        if event.finish_reason is not None and self.include_usage:
            out.append({**self._head(self.chunk_object), "choices": [], "usage": self.usage(reused)})
        return out


class Chat(_Reply):
    kind, chunk_object = "chatcmpl", "chat.completion.chunk"

    def _tool_calls(self) -> list[dict[str, Any]]:
        return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in self.calls]

    def whole(self, reused: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if self.calls:
            message["tool_calls"] = self._tool_calls()
        choice = {"index": 0, "message": message, "finish_reason": self.finish, "logprobs": None}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage(reused)}

    def _chunk(self, text: str, first: bool, finish: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = ({"role": "assistant", "content": text} if first
                                 else {"content": text} if text else {})
        if finish is not None and self.calls:
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(self._tool_calls())]
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._head(self.chunk_object), "choices": [choice]}


class Completion(_Reply):
    kind, chunk_object = "cmpl", "text_completion"

    def __init__(self, model: str, n_prompt: int, body: Any, *, echo: str = ""):
        super().__init__(model, n_prompt, body)
        self.echo = echo

    def whole(self, reused: int) -> dict[str, Any]:
        choice = {"index": 0, "text": self.echo + "".join(self.text), "finish_reason": self.finish,
                  "logprobs": None}
        return {**self._head("text_completion"), "choices": [choice], "usage": self.usage(reused)}

    def _chunk(self, text: str, first: bool, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": (self.echo if first else "") + text, "finish_reason": finish,
                  "logprobs": None}
        return {**self._head(self.chunk_object), "choices": [choice]}
