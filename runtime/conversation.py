"""The conversation a model is shown: HyperCLOVAX's block format, system prompts, and the ids of a chat.

HyperCLOVAX's card always opens with a `tool_list` block (empty without tools), then a `system` block (the
default: the assistant's name and today's date), then the turns. The family's documentation keeps a finished
assistant turn in history as `{answer}<|im_end|><|endofturn|>` and a tool call as its own block,
`<|im_start|>assistant -> tool/function_call\\n{...}<|im_end|><|stop|>`. The 0.5B's own template is the bare
ChatML loop and knows none of this, so for HyperCLOVAX `ChatFormat` builds the ids itself, block by block:
messages without assistant turns give exactly the template's ids (tested); an assistant turn gets the
markers the model itself writes (`<|endofturn|>`, or its call block), as control ids.
Other models (SmolLM2) are rendered by their own template (chat_template.py), untouched.

`system` everywhere takes DEFAULT (the model's default system prompt), a str (that prompt), or None / "" (no
system prompt: an empty system block for HyperCLOVAX, as its documentation gives it; no message otherwise).
Message text is always encoded as plain text: a user typing `<|im_end|>` never makes a control id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .chat_template import ChatTemplate, encode_chat
from .errors import PromptError, ToolCallError
from .generate import Event
from .tools import Tool, ToolCall, call_block, find_call_block, parse_tool_calls, tool_list_content

_WEEKDAYS = "월화수목금토일"
TOOL_ROLE = "tool/function_call"                    # the role of a tool's result, and of a call block
CALL_HEADER = "assistant -> tool/function_call"      # the role line of the model's call block
OPENING_ROLES = ("tool_list", "system")              # the blocks before the turns, in the card's order
HCX_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endofturn|>", "<|stop|>")


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()   # system=DEFAULT: the model's own default system prompt (with today's date)
SystemPrompt = Any          # str | None | DEFAULT


def today_korean(today: dt.date | None = None) -> str:
    """The card's date form: 2025년 04월 24일(목)."""
    d = today or dt.date.today()
    return f"{d.year}년 {d.month:02d}월 {d.day:02d}일({_WEEKDAYS[d.weekday()]})"


class ChatFormat:
    """What a model's chat needs around the messages: opening blocks, ids, stop ids, tool protocol."""

    def __init__(self, template: ChatTemplate, tokenizer: Any, *, default_system: str | None = None):
        self.template, self.tokenizer = template, tokenizer
        specials = tokenizer.special_tokens
        # HyperCLOVAX's format: its turn/pause markers are special tokens and the template is ChatML
        self.hyperclovax = all(t in specials for t in HCX_TOKENS) and "<|im_start|>" in template.source
        self.ids = {t: specials[t] for t in HCX_TOKENS if t in specials}
        self._default_system = default_system

    def default_system(self, today: dt.date | None = None) -> str | None:
        """The model's default system prompt ({today} filled in), or None if it has none."""
        if not self._default_system:
            return None
        return self._default_system.replace("{today}", today_korean(today))

    def system_text(self, system: SystemPrompt, today: dt.date | None = None) -> str | None:
        if system is DEFAULT:
            return self.default_system(today)
        if system is not None and not isinstance(system, str):
            raise PromptError(f"system must be a str, None or DEFAULT, got {type(system).__name__}")
        return system or None

    def opening(self, system: SystemPrompt = DEFAULT, tools: Sequence[Tool] = (),
                today: dt.date | None = None) -> list[dict[str, Any]]:
        """The messages before the first turn: HyperCLOVAX's tool_list + system blocks, else a system one."""
        text = self.system_text(system, today)
        if tools and not self.hyperclovax:
            raise ToolCallError("this model's chat format has no tool protocol (only HyperCLOVAX's has); "
                                "call it without tools")
        if not self.hyperclovax:
            return [{"role": "system", "content": text}] if text else []
        return [{"role": "tool_list", "content": tool_list_content(tools)},
                {"role": "system", "content": text or ""}]

    def prepare(self, messages: Sequence[Mapping[str, Any]], system: SystemPrompt = DEFAULT,
                tools: Sequence[Tool] = (), today: dt.date | None = None) -> list[dict[str, Any]]:
        """A caller's messages with the opening blocks they lack, in the card's order (their own system or
        tool_list message is kept; giving one both ways is an error)."""
        messages = [dict(m) for m in messages]
        roles = {m.get("role") for m in messages}
        if "system" in roles and system is not DEFAULT:
            raise PromptError("the messages have a system message and system= was given too: give it once")
        if "tool_list" in roles and tools:
            raise PromptError("the messages have a tool_list message and tools= was given too: "
                              "give them once")
        head = [m for m in self.opening(system, tools, today) if m["role"] not in roles]
        return head + messages

    def encode(self, messages: Sequence[Mapping[str, Any]], *,
               add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids of the messages (HyperCLOVAX: block by block; others: their template, safely)."""
        if not self.hyperclovax:
            return encode_chat(self.template, self.tokenizer, list(messages),
                               add_generation_prompt=add_generation_prompt)
        return [i for piece in self._pieces(messages, add_generation_prompt) for i in self._piece_ids(piece)]

    def render_text(self, messages: Sequence[Mapping[str, Any]], *,
                    add_generation_prompt: bool = True) -> str:
        """The same prompt as one string (control tokens written out): what golden tests compare."""
        pieces = self._pieces(messages, add_generation_prompt)
        return "".join(p if isinstance(p, str) else p[0] for p in pieces)

    def _piece_ids(self, piece: str | tuple[str]) -> list[int]:
        if isinstance(piece, tuple):
            return [self.ids[piece[0]]]
        return self.tokenizer.encode(piece, allow_special=False) if piece else []

    def _pieces(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> list:
        """Text pieces and (control token,) tuples. Each block's `role\\ncontent` is one text piece, as
        encode_chat encodes the template's output, so plain messages give the template's ids exactly."""
        if not messages:
            raise PromptError("cannot render a chat with no messages: give at least one")
        start, end, eot, stop = ((t,) for t in HCX_TOKENS)
        out: list = []
        for m in messages:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
                raise PromptError(f"a chat message must be a dict with a str 'role', got {m!r:.80}")
            content = m.get("content") or ""
            if not isinstance(content, str):
                raise PromptError(f"message content must be a str, got {type(content).__name__}")
            out += [start, f"{m['role']}\n{content}", end]
            calls = m.get("tool_calls") if m["role"] == "assistant" else None
            if calls:               # the model's call block follows its text; <|stop|> = waiting for results
                call = m.get("tool_call_text") or call_block(calls)
                out += ["\n", start, f"{CALL_HEADER}\n{call}", end, stop]
            elif m["role"] == "assistant" and m.get("final", True):
                out.append(eot)     # a finished turn, kept as the model ends it
            out.append("\n")
        if add_generation_prompt:
            out += [start, "assistant\n"]
        return out

    def turn_stop_ids(self, stop_ids: Sequence[int], tools: bool) -> tuple[int, ...]:
        """The model's stop ids for a turn. With tools on, <|im_end|> alone does not end a turn: a call block
        may follow it (then <|stop|> pauses, <|endofturn|> ends)."""
        if tools and self.hyperclovax:
            return tuple(i for i in stop_ids if i != self.ids["<|im_end|>"])
        return tuple(stop_ids)

    def mute_after(self, tools: bool) -> tuple[int, ...]:
        """With tools on, nothing after the answer's <|im_end|> is text for the user."""
        return (self.ids["<|im_end|>"],) if tools and self.hyperclovax else ()


class TurnReader:
    """Reads one HyperCLOVAX answer as it streams: its text, then (tools on) the call block after <|im_end|>.

    wrap(events) passes the events on; the last one gets the parsed `tool_calls` and finish_reason
    "tool_calls" when the model paused for tools. Afterwards: `calls`, `call_text` (the JSON as the model
    wrote it, kept so the history renders to the ids already in the cache) and `final` (the turn is over).
    """

    def __init__(self, fmt: ChatFormat):
        self.fmt, self.ids = fmt, []
        self.calls: tuple[ToolCall, ...] = ()
        self.call_text: str | None = None
        self.final = True

    def wrap(self, events: Iterable[Event]) -> Iterator[Event]:
        for e in events:
            if e.token_id is not None:
                self.ids.append(e.token_id)
            yield self._finish(e) if e.finish_reason is not None else e

    def _finish(self, e: Event) -> Event:
        end = self.fmt.ids.get("<|im_end|>")
        if end not in self.ids:
            return e
        tail = self.fmt.tokenizer.decode(self.ids[self.ids.index(end) + 1:])   # special tokens written out
        text = find_call_block(tail)
        if text is None:
            return e
        try:
            self.calls = parse_tool_calls(text)
        except ToolCallError as err:       # kept as the model wrote it; nothing to run
            return replace(e, notice=f"{err}; no tool was called")
        self.call_text, self.final = text, False
        return replace(e, finish_reason="tool_calls", tool_calls=self.calls)
