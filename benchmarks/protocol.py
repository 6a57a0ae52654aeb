"""The fixed measurement protocol every runtime goes through, and the adapter shape a runtime must offer.

A runtime (clova-edge or a peer) is wrapped in an Adapter: `load(threads)`;
`generate(prompt_ids, n) -> arrival times` runs the runtime's OWN generation loop greedily from a fresh
state (EOS ignored) and returns the perf_counter() time at which each of the n new tokens became
available; optionally `logits(ids) -> (S, V)` for perplexity. `measure(adapter, spec)` times every runtime
the same way:
  load        seconds to construct the model (page cache warm: the files were just written or read)
  ttft        from the call to the first token, for prompts of P synthetic tokens (each P in
              spec.prompt_lengths)
  decode      gaps between consecutive tokens after a short prompt and after spec.long_context tokens;
              tok/s = 1 / median gap (the spread: from the 10th/90th percentile gaps)
  peak_rss    the runner process's peak resident memory over everything above (one process per runtime)
  chat        the first turn of a chat with the prompt cache warm (first_turn.py; adapters with first_turn)
  quality     perplexity per evaluation text, KL / top-1 against the fp32 reference, greedy answers to the
              agreement prompts (benchmarks/quality.py)
Synthetic prompts are fixed-seed random ids below the vocabulary size: speed does not depend on the text.
This module imports only numpy: runners import it inside peer virtual environments.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from . import first_turn, quality


@dataclass(frozen=True)
class Spec:
    """What one runner measures."""

    threads: int = 2
    repetitions: int = 3
    prompt_lengths: tuple[int, ...] = (128, 512, 2048)
    decode_tokens: int = 64
    short_context: int = 128
    long_context: int = 3500           # decode measured with this many tokens already in the cache
    long_decode_tokens: int = 32
    perplexity_window: int = 512
    # {text name: ids (the model's own tokenizer)}; {}: no quality
    eval_texts: dict = field(default_factory=dict)
    reference_dir: str = ""            # where the fp32 reference log-probs are (or, write_reference, go)
    write_reference: bool = False
    # chat-templated prompt ids for answer agreement (benchmarks/quality.py)
    agreement_prompts: tuple = ()
    agreement_tokens: int = 32
    repetition_penalty: float = 1.0
    stop_ids: tuple[int, ...] = ()
    vocab_limit: int = 32000           # synthetic ids are drawn below this (every tokenizer here has them)
    # the first chat turn (first_turn.inputs): system text, opening ids, per repetition user text + turn ids
    chat_system: str = ""
    chat_opening: tuple = ()
    chat_texts: tuple = ()
    chat_turns: tuple = ()
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Spec":
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                 if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adapter(Protocol):
    def load(self, threads: int) -> None: ...
    def generate(self, prompt_ids: list[int], n: int) -> list[float]: ...


@dataclass(frozen=True)
class Summary:
    median: float
    low: float      # 10th percentile (min for < 5 samples)
    high: float     # 90th percentile (max for < 5 samples)
    n: int

    @classmethod
    def of(cls, xs: Sequence[float]) -> "Summary":
        a = np.asarray(xs, np.float64)
        if a.size == 0:
            raise ValueError("no samples to summarize")
        lo, hi = (np.percentile(a, 10), np.percentile(a, 90)) if a.size >= 5 else (a.min(), a.max())
        return cls(float(np.median(a)), float(lo), float(hi), int(a.size))


def synthetic_prompt(n: int, spec: Spec, salt: int = 0) -> list[int]:
    """n fixed-seed random token ids in [10, vocab_limit) (avoids the low special ids)."""
    rng = np.random.default_rng(spec.seed * 1000 + salt)
    return rng.integers(10, spec.vocab_limit, size=n).tolist()


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB: VmHWM of /proc/self/status (KiB) where there is one.
    Not ru_maxrss: Linux carries it across fork + exec, so a runner started by a parent that once held 1.4 GB
    (the harness, after building a model) would report at least that whatever it used itself."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _time_ttft(adapter: Adapter, n: int, spec: Spec) -> list[float]:
    out = []
    for r in range(spec.repetitions):
        ids = synthetic_prompt(n, spec, salt=r + 1)
        t0 = time.perf_counter()
        arrivals = adapter.generate(ids, 1)
        out.append(arrivals[0] - t0)
    return out


def _time_decode(adapter: Adapter, context: int, steps: int, spec: Spec, salt: int) -> list[float]:
    """Seconds between consecutive tokens over `steps` decode steps after a prompt of `context` tokens."""
    arrivals = adapter.generate(synthetic_prompt(context, spec, salt=salt), steps + 1)
    if len(arrivals) != steps + 1:
        raise RuntimeError(f"the runtime produced {len(arrivals)} tokens, "
                           f"{steps + 1} were asked (stopped early?)")
    return np.diff(np.asarray(arrivals)).tolist()


def _decode_figures(times: list[float]) -> dict[str, Any]:
    s = Summary.of(times)
    # tok/s from the median step; the spread from the fast (10th pct) and slow (90th pct) steps
    # tok_s_mean: steps / their total time (an occasional slow step shows here, not in the median)
    return {"tok_s": 1.0 / s.median, "tok_s_low": 1.0 / s.high, "tok_s_high": 1.0 / s.low,
            "tok_s_mean": len(times) / sum(times), "step_ms": asdict(Summary.of([t * 1e3 for t in times]))}


def measure(adapter: Adapter, spec: Spec, *,
            what: Sequence[str] = ("ttft", "decode", "long")) -> dict[str, Any]:
    """Run the protocol on `adapter`; returns plain JSON-ready figures."""
    # eval_texts and agreement_prompts: counts, not the ids
    spec_out = {**spec.to_dict(), "eval_texts": {k: len(v) for k, v in spec.eval_texts.items()},
                "agreement_prompts": len(spec.agreement_prompts)}
    res: dict[str, Any] = {"spec": spec_out, "load_avg_start": load_average()}
    t0 = time.perf_counter()
    adapter.load(spec.threads)
    res["load_s"] = time.perf_counter() - t0
    res["rss_after_load_mb"] = peak_rss_mb()
    # warm-up (allocations, first-run graph work)
    adapter.generate(synthetic_prompt(16, spec, salt=999), 4)
    if "ttft" in what:
        res["ttft_s"] = {str(n): asdict(Summary.of(_time_ttft(adapter, n, spec)))
                         for n in spec.prompt_lengths}
    if "decode" in what:
        times: list[float] = []
        for r in range(spec.repetitions):
            times += _time_decode(adapter, spec.short_context, spec.decode_tokens, spec, salt=100 + r)
        res["decode_short"] = {"context": spec.short_context, **_decode_figures(times)}
    if "long" in what and spec.long_context:
        t1 = time.perf_counter()
        times = _time_decode(adapter, spec.long_context, spec.long_decode_tokens, spec, salt=200)
        res["decode_long"] = {"context": spec.long_context, **_decode_figures(times),
                              "prefill_and_decode_s": time.perf_counter() - t1}
    if "chat" in what and spec.chat_turns and hasattr(adapter, "first_turn"):
        res["chat_first_turn"] = first_turn.measure(adapter, spec, Summary.of)
    if spec.eval_texts and hasattr(adapter, "logits"):
        res["quality"] = quality.evaluate_texts(adapter.logits, spec.eval_texts, spec.perplexity_window,
                                                spec.reference_dir, spec.write_reference)
    if spec.agreement_prompts and (hasattr(adapter, "logits") or hasattr(adapter, "step")):
        t1 = time.perf_counter()
        res["answers"] = quality.answers(adapter, spec.agreement_prompts, spec.agreement_tokens,
                                         spec.repetition_penalty, spec.stop_ids)
        res["answers_s"] = time.perf_counter() - t1
    res["peak_rss_mb"] = peak_rss_mb()
    res["load_avg_end"] = load_average()
    return res
