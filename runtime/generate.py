"""Generation in three layers: token ids -> streamed text events with stats -> one string.

`generate_tokens` prefills the new prompt tokens in one session run and then decodes one token per run,
sampling each with the request's sampler; it knows nothing of text. `stream` turns those ids into text events
(incremental UTF-8; stop strings matched as transformers does and never shown, see stops.py) with timing
stats. `generate` joins the text. Chat turns (chat.py) call `stream` with the cache they keep across turns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .constrain import AfterToken, Constraint
from .errors import PromptError
from .model import KVCache, OnnxModel
from .sampling import make_sampler, PenaltyState
from .settings import GenerationSettings
from .stops import StopText
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Event:
    """One step of a stream. `text` is the newly visible text (may be empty while UTF-8 or a possible stop
    string is held back); the last event has `finish_reason` ("stop", "length" or "tool_calls") set."""

    text: str
    token_id: int | None
    n_prompt: int
    n_generated: int
    ttft_s: float          # time to first token: prefill + first sample
    prefill_tps: float     # prompt tokens per second in the prefill run
    decode_tps: float      # generated tokens per second after the first
    finish_reason: str | None = None
    notice: str | None = None  # something the user should know, e.g. turns dropped to fit the context
    tool_calls: tuple = ()     # on the last event of a turn that asks for tools (finish_reason "tool_calls")


def generate_tokens(model: OnnxModel, cache: KVCache, prompt_ids: list[int], settings: GenerationSettings, *,
                    stop_ids: Iterable[int] = (), history: Iterable[int] = (),
                    constraint: Constraint | AfterToken | None = None) -> Iterator[int]:
    """Yield sampled ids. The prompt ids are added to `cache` (which may already hold `history`, e.g. earlier
    chat turns); every yielded id but the last is fed back into the cache. Stops after a stop id, after
    max_new_tokens, or when the cache is full (the caller sizes it; at most the context length). A
    `constraint` (constrain.py) masks the logits before every sample."""
    if not prompt_ids:
        raise PromptError("the prompt is empty: give at least one token")
    if cache.length + len(prompt_ids) > cache.capacity:
        raise PromptError(f"prompt of {len(prompt_ids)} tokens (+{cache.length} in the cache) does not fit "
                          f"the cache of {cache.capacity}; the context is "
                          f"{model.config.context_length} tokens")
    sample = make_sampler(settings)
    # HF's repetition penalty covers the whole input
    seen = PenaltyState(model.config.vocab_size, [*history, *prompt_ids])
    stop = frozenset(stop_ids)
    logits = model.prefill(cache, np.asarray(prompt_ids, np.int64))
    for i in range(settings.max_new_tokens):
        if constraint is not None:
            logits = constraint.mask(logits)
        token = sample(logits, seen.ids)
        if constraint is not None:
            constraint.advance(token)
        yield token
        if token in stop or i + 1 == settings.max_new_tokens or cache.length >= cache.capacity:
            return
        seen.add(token)
        logits = model.decode(cache, token)


def stream(model: OnnxModel, tokenizer: Tokenizer, cache: KVCache, prompt_ids: list[int],
           settings: GenerationSettings, *, stop_ids: Iterable[int] = (), stop_strings: Iterable[str] = (),
           history: Iterable[int] = (), mute_after: Iterable[int] = (),
           constraint: Constraint | AfterToken | None = None) -> Iterator[Event]:
    """Text events for one generation; see Event. The final event carries the finish reason. No text is
    shown after an id in `mute_after` (the caller reads what follows, e.g. a tool call block)."""
    stop_set = frozenset(stop_ids)
    # transformers matches stop strings on the whole sequence's token bytes, the prompt's tail included
    history = list(history)
    visible = StopText(tokenizer, (*stop_strings, *settings.stop), [*history, *prompt_ids],
                       mute_after=mute_after)
    n, reason, cut_by_string = 0, "length", False
    t0 = time.perf_counter()
    t_first = ttft = prefill_tps = 0.0

    def event(text: str, token: int | None, finish: str | None = None) -> Event:
        decode_tps = (n - 1) / (time.perf_counter() - t_first) if n > 1 else 0.0
        return Event(text, token, len(prompt_ids), n, ttft, prefill_tps, decode_tps, finish)

    for token in generate_tokens(model, cache, prompt_ids, settings, stop_ids=stop_set, history=history,
                                 constraint=constraint):
        n += 1
        if n == 1:
            t_first = time.perf_counter()
            ttft = t_first - t0
            prefill_tps = len(prompt_ids) / ttft
        if token in stop_set:
            reason = "stop"
            break
        shown, cut_by_string = visible.add(token)
        yield event(shown, token)   # a stop string itself is never shown, nor text after it
        if cut_by_string:
            reason = "stop"
            break
    # What was held back (a possible stop string prefix, incomplete UTF-8) is shown unless a stop string
    # cut it.
    yield event("" if cut_by_string else visible.finish(), None, reason)


def generate(model: OnnxModel, tokenizer: Tokenizer, cache: KVCache, prompt_ids: list[int],
             settings: GenerationSettings, *, stop_ids: Iterable[int] = (),
             stop_strings: Iterable[str] = ()) -> str:
    """The whole answer as one string."""
    events = stream(model, tokenizer, cache, prompt_ids, settings, stop_ids=stop_ids,
                    stop_strings=stop_strings)
    return "".join(e.text for e in events)
