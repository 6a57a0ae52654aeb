"""Quality figures every runtime gets the same way (numpy only: runners import it inside peer environments).

  texts       per held-out evaluation text (quant/data/eval/): perplexity over independent windows of 512
              tokens, every position but a window's first scored; with a reference (the fp32 row, written
              first): mean KL(reference || this) and top-1 agreement of the next-token distributions,
              position by position
  agreement   greedy answers to fixed chat prompts with Hugging Face's repetition penalty applied to every
              runtime's logits by this module (so the comparison measures the format, not each runtime's own
              sampler), up to `tokens` new tokens or an end-of-turn id; the report compares them to the fp32
              row's
The reference row stores its log-probabilities as float16 .npy files (one per text, windows concatenated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

LogitsFn = Callable[[np.ndarray], np.ndarray]   # ids (S,) -> logits (S, V) of every position


def windows(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive chunks of `size`, each of at least 2 tokens (quant/calibrate.py's windows)."""
    return [ids[i:i + size] for i in range(0, len(ids) - 1, size) if len(ids[i:i + size]) >= 2]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def text_figures(logits_fn: LogitsFn, ids: np.ndarray, window: int, reference: np.ndarray | None = None,
                 keep: list | None = None) -> dict[str, Any]:
    """Perplexity of `ids` (and KL / top-1 against `reference` [N, V] log-probs, N = scored positions).
    keep: a list that receives this run's float16 log-probs per window (to become a reference)."""
    nll = kl = 0.0
    agree = n = 0
    for w in windows(ids, window):
        x = np.asarray(logits_fn(w))[:-1]                   # (S-1, V): predicts w[1:]
        for i in range(0, len(x), 64):                      # 64 rows at a time: bounded float64 temporaries
            lq = _log_softmax(x[i:i + 64])
            tgt = w[1 + i:1 + i + len(lq)]
            nll -= float(lq[np.arange(len(lq)), tgt].sum())
            if keep is not None:
                keep.append(lq.astype(np.float16))
            if reference is not None:
                lr = reference[n + i:n + i + len(lq)].astype(np.float64)
                kl += float((np.exp(lr) * (lr - lq)).sum())
                agree += int((lr.argmax(-1) == lq.argmax(-1)).sum())
        n += len(w) - 1
    out: dict[str, Any] = {"perplexity": float(np.exp(nll / n)), "tokens": n, "window": window, "nll": nll}
    if reference is not None:
        out.update(mean_kl=kl / n, top1_agreement=agree / n)
    return out


def evaluate_texts(logits_fn: LogitsFn, texts: dict[str, Sequence[int]], window: int, reference_dir: str,
                   write_reference: bool) -> dict[str, Any]:
    """text_figures for every text, plus "all" (every scored token of every text once)."""
    out: dict[str, Any] = {}
    folder = Path(reference_dir) if reference_dir else None
    for name, ids in texts.items():
        ref_file = folder / f"{name}.npy" if folder else None
        ref = (np.load(ref_file, mmap_mode="r")
               if ref_file and ref_file.is_file() and not write_reference else None)
        keep: list | None = [] if write_reference and folder else None
        out[name] = text_figures(logits_fn, np.asarray(ids, np.int64), window, ref, keep)
        if keep is not None:
            folder.mkdir(parents=True, exist_ok=True)
            np.save(ref_file, np.concatenate(keep))
    n = sum(r["tokens"] for r in out.values())
    total: dict[str, Any] = {"tokens": n,
                             "perplexity": float(np.exp(sum(r["nll"] for r in out.values()) / n))}
    if all("mean_kl" in r for r in out.values()):
        total["mean_kl"] = sum(r["mean_kl"] * r["tokens"] for r in out.values()) / n
        total["top1_agreement"] = sum(r["top1_agreement"] * r["tokens"] for r in out.values()) / n
    out["all"] = total
    return out


def repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' RepetitionPenaltyLogitsProcessor: every id seen so far (prompt and answer) has its logit
    divided by `penalty` if positive, multiplied if negative."""
    if penalty == 1.0 or not len(seen):
        return logits
    out = np.array(logits, np.float32, copy=True)
    s = out[seen]
    out[seen] = np.where(s < 0, s * penalty, s / penalty)
    return out


def greedy_answer(start: Callable[[list[int]], np.ndarray], step: Callable[[int], np.ndarray],
                  prompt: list[int], tokens: int, penalty: float, stop_ids: Sequence[int]) -> list[int]:
    """Greedy ids after `prompt`: start(prompt) gives the next-token logits, step(id) those after id."""
    logits = start(list(prompt))
    seen = set(prompt)
    out: list[int] = []
    while True:
        tok = int(np.argmax(repetition_penalty(logits, np.fromiter(seen, np.int64), penalty)))
        out.append(tok)
        if tok in stop_ids or len(out) == tokens:
            return out
        seen.add(tok)
        logits = step(tok)


def recompute_steps(logits_fn: LogitsFn) -> tuple[Callable, Callable]:
    """start/step for a runtime that only offers full-sequence logits (each step reruns the whole
    sequence)."""
    state: list[int] = []

    def start(prompt: list[int]) -> np.ndarray:
        state[:] = prompt
        return np.asarray(logits_fn(np.asarray(state, np.int64)))[-1]

    def step(tok: int) -> np.ndarray:
        state.append(tok)
        return np.asarray(logits_fn(np.asarray(state, np.int64)))[-1]

    return start, step


def answers(adapter: Any, prompts: Sequence[Sequence[int]], tokens: int, penalty: float,
            stop_ids: Sequence[int]) -> list[list[int]]:
    """Greedy answers of one runtime: its incremental start/step if it has them, else recomputed logits."""
    if hasattr(adapter, "start") and hasattr(adapter, "step"):
        start, step = adapter.start, adapter.step
    else:
        start, step = recompute_steps(adapter.logits)
    return [greedy_answer(start, step, list(p), tokens, penalty, stop_ids) for p in prompts]


def agreement(answers_: list[list[int]], reference: list[list[int]]) -> float:
    """Share of prompts whose answer equals the reference's (same ids up to the length limit or the stop)."""
    if not reference or len(answers_) != len(reference):
        return float("nan")
    return sum(a == r for a, r in zip(answers_, reference)) / len(reference)
