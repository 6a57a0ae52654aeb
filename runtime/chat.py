"""A chat that keeps the KV cache across turns, in the model's own format, with HyperCLOVAX's tool calls.

`messages` is the whole conversation as the model sees it: the opening blocks (HyperCLOVAX: tool_list, then
system), then the turns. Each turn renders it all (conversation.py), keeps the longest prefix of ids already
in the cache, rolls the cache back to it and prefills only the rest (through the Engine's seam:
encode_messages, prepare_cache, stream_ids). When the conversation would overflow the context, the oldest
whole turns are dropped (never the opening blocks) and the first event of the turn says so. With the
Engine's prompt cache on, a new session starts with the opening blocks' rows already in its cache (prefilled
once per Engine, or read from disk), so its first turn prefills only the user's message. save(path) writes
the conversation with its KV rows (session_file.py); Engine.load_session(path) continues it.

Tools (HyperCLOVAX): when an answer ends in a call block, its last event has finish_reason "tool_calls" and
the calls; run them and give the results with add_tool_result(...), which streams the rest of the answer. A
ChatSession is for one thread at a time; make one per conversation.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from .chat_template import common_prefix
from .conversation import DEFAULT, OPENING_ROLES, TOOL_ROLE, SystemPrompt, TurnReader
from .errors import ClovaEdgeError, PromptError, ToolCallError
from .generate import Event
from .settings import GenerationSettings
from .tools import Tool, ToolCall, normalize_tools, result_content


class ChatSession:
    def __init__(self, engine: Any, *, system: SystemPrompt = DEFAULT, tools: Sequence[Tool] | None = None,
                 settings: GenerationSettings | None = None, today: dt.date | None = None,
                 constrain_tools: bool = True, warm: bool = True):
        self.engine = engine
        self.settings = settings or engine.default_settings()
        self.tools = normalize_tools(tools)
        self.constrain_tools = constrain_tools   # tool calls through the grammar (engine.tool_constraint)
        self.messages: list[dict[str, Any]] = engine.format.opening(system, self.tools, today)
        for m in self.messages:
            engine.check_text(m["content"])
        self.pending_calls: tuple[ToolCall, ...] = ()   # asked for by the last answer, awaiting results
        self.cache = None
        self.cache_ids: list[int] = []
        self.last: Event | None = None          # the last event of the last turn (stats for /stats)
        self._busy = threading.Lock()
        if warm:
            self._warm()

    def _warm(self) -> None:
        """Start the cache with the opening blocks' rows from the Engine's prompt cache (when it is on),
        unless it holds them already."""
        ids = self.engine.opening_ids(self.messages)
        if ids and self.cache_ids[:len(ids)] == ids:
            return
        cache = self.engine.cached_opening(ids, room=self.settings.max_new_tokens)
        if cache is not None:
            self.cache, self.cache_ids = cache, ids

    def save(self, path: str | Path) -> None:
        """Write the conversation, its settings and its KV rows to `path` (atomically), for
        Engine.load_session(path)."""
        from .session_file import save_session

        if not self._busy.acquire(blocking=False):
            raise ClovaEdgeError("this ChatSession is answering; save it after the answer")
        try:
            save_session(self, path)
        finally:
            self._busy.release()

    def reset(self) -> None:
        """Forget the conversation but keep the opening blocks; the cache is kept (rolled back next turn)."""
        self.messages = [m for m in self.messages if m["role"] in OPENING_ROLES]
        self.pending_calls, self.last = (), None

    def set_system(self, system: SystemPrompt) -> None:
        """A new system prompt (DEFAULT, a str, or None) for the turns to come."""
        head = self.engine.format.opening(system, self.tools)
        self.engine.check_text(next((m["content"] for m in head if m["role"] == "system"), ""))
        new_system = [m for m in head if m["role"] == "system"]
        rest = [m for m in self.messages if m["role"] != "system"]
        at = 1 if rest and rest[0]["role"] == "tool_list" else 0    # the card's order: tool_list, system
        self.messages = rest[:at] + new_system + rest[at:]
        self._warm()          # a new opening: the rows after the old system prompt are of no use any more

    @property
    def tokens_in_context(self) -> int:
        return self.cache.length if self.cache is not None else 0

    def send(self, text: str, settings: GenerationSettings | None = None) -> Iterator[Event]:
        """Add a user message and stream the answer. Stopping the iteration early (Ctrl-C, break) keeps the
        answer as far as it went, in the conversation and in the cache."""
        if not self._busy.acquire(blocking=False):
            raise ClovaEdgeError("this ChatSession is already answering; use one ChatSession per thread")
        try:
            if self.pending_calls:
                raise ToolCallError(f"the model asked for {len(self.pending_calls)} tool call(s): give their "
                                    "results with add_tool_result(...) first (or reset())")
            yield from self._turn([{"role": "user", "content": self.engine.check_message(text)}], settings)
        finally:
            self._busy.release()

    def add_tool_result(self, *results: Any, settings: GenerationSettings | None = None) -> Iterator[Event]:
        """Give the results of the pending tool calls (one per call, in order; JSON-serializable) and stream
        the rest of the answer."""
        if not self._busy.acquire(blocking=False):
            raise ClovaEdgeError("this ChatSession is already answering; use one ChatSession per thread")
        try:
            calls = self.pending_calls
            if not calls:
                raise ToolCallError("no tool call is waiting for a result")
            if len(results) != len(calls):
                names = ", ".join(c.name for c in calls)
                raise ToolCallError(f"the model asked for {len(calls)} call(s) ({names}); "
                                    f"give {len(calls)} result(s), got {len(results)}")
            added = [{"role": TOOL_ROLE, "content": self.engine.check_text(result_content(r))}
                     for r in results]
            yield from self._turn(added, settings)
        finally:
            self._busy.release()

    def _turn(self, added: list[dict[str, Any]], settings: GenerationSettings | None) -> Iterator[Event]:
        engine, settings = self.engine, settings or self.settings
        ctx = engine.model.config.context_length
        self.messages += added
        ids, dropped = self._fit(min(settings.max_new_tokens, ctx // 4), len(added))
        keep = common_prefix(self.cache_ids, ids[:-1])   # at least one new token is run
        self.cache = engine.prepare_cache(self.cache, keep=keep,
                                          room=len(ids) - keep + settings.max_new_tokens)
        reader, answer = TurnReader(engine.format), []
        notice = f"dropped the {dropped} oldest turn(s) to fit the {ctx}-token context" if dropped else None
        self.pending_calls = ()
        try:
            constraint = engine.tool_constraint(self.tools) if self.constrain_tools else None
            events = engine.stream_ids(ids[keep:], settings, cache=self.cache, history=ids[:keep],
                                       tools=bool(self.tools), constraint=constraint)
            for event in reader.wrap(events):
                if notice:
                    event, notice = replace(event, notice=notice), None
                answer.append(event.text)
                self.last = event
                yield event
        finally:
            message = {"role": "assistant", "content": "".join(answer)}
            if reader.calls:   # the answer paused for tools: its call block is kept as the model wrote it
                message.update(tool_calls=[c.to_dict() for c in reader.calls],
                               tool_call_text=reader.call_text, final=False)
                self.pending_calls = reader.calls
            self.messages.append(message)
            self.cache_ids = (ids + reader.ids)[: self.cache.length]

    def _fit(self, reserve: int, n_added: int) -> tuple[list[int], int]:
        """Ids of the whole conversation + generation prompt; drop oldest whole turns until `reserve` fit."""
        ctx = self.engine.model.config.context_length
        dropped = 0
        while True:
            ids = self.engine.encode_messages(self.messages)
            if len(ids) + reserve <= ctx:
                return ids, dropped
            starts = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
            first = next(i for i, m in enumerate(self.messages) if m["role"] not in OPENING_ROLES)
            if len(starts) <= 1:
                # only the new turn is left: it alone is too long
                del self.messages[len(self.messages) - n_added:]
                raise PromptError(f"this message is {len(ids)} tokens with the system prompt; the context is "
                                  f"{ctx} tokens and {reserve} are kept for the answer: shorten it")
            del self.messages[first:starts[1]]   # the oldest whole turn: user, answers, calls, results
            dropped += 1
