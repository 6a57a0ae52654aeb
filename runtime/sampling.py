"""Sampling: pure numpy logits processors, and the sampler factory the decode loop calls once per token.

The processors take one row of logits, shape (vocab,), and return a NEW array (inputs are never mutated);
each has exactly the semantics of its transformers counterpart (RepetitionPenaltyLogitsProcessor,
TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, min_tokens_to_keep=1), applied
in transformers' order: penalty, temperature, top_k, top_p, min_p. `make_sampler(settings)` builds that chain
once; per token it does O(vocab) work (one copy, one argmax or one exp) and never sorts the whole vocabulary.

The repetition penalty needs the distinct ids seen so far (prompt + output). Passing the whole history works
(duplicates are harmless), but the loop should keep a PenaltyState and call `add(token)` after each step:
the update is O(1) per token, and the penalty then touches each distinct id once instead of the whole history.
This module does not run the model, stop, or detokenize.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .errors import PromptError
from .settings import GenerationSettings

Sampler = Callable[[np.ndarray, np.ndarray], int]


# ---- pure processors: (vocab,) logits in, new (vocab,) logits out ------------------------------------------

def apply_repetition_penalty(logits: np.ndarray, ids: np.ndarray, penalty: float) -> np.ndarray:
    """Penalise every distinct id in `ids` once: negative logits * penalty, others / penalty (HF
    semantics)."""
    out = logits.copy()
    ids = np.asarray(ids, dtype=np.intp)
    if penalty != 1.0 and ids.size:
        picked = logits[ids]                            # duplicates read the same original value...
        out[ids] = np.where(picked < 0, picked * penalty, picked / penalty)  # ...so each id is hit once
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits / temperature (temperature > 0; 0 means greedy and is the sampler's business, not this
    one's)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 = greedy: use argmax), got {temperature}")
    return logits / np.asarray(temperature, dtype=logits.dtype)


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Set to -inf every logit below the k-th largest (ties with it survive, as in HF). k = 0: off."""
    n = logits.size
    if k <= 0 or k >= n:
        return logits.copy()
    kth = np.partition(logits, n - k)[n - k]            # O(vocab), no sort
    return np.where(logits < kth, -np.inf, logits).astype(logits.dtype, copy=False)


def apply_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the most likely tokens until their mass reaches top_p (at least one); the rest become -inf."""
    if top_p >= 1.0:
        return logits.copy()
    keep = _nucleus(_softmax64(logits), top_p)
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Set to -inf every token whose probability is below min_p * the top token's probability. 0: off."""
    if min_p <= 0.0:
        return logits.copy()
    ratio = np.exp(logits.astype(np.float64) - logits.max())  # p_i / p_max, never overflows
    return np.where(ratio < min_p, -np.inf, logits).astype(logits.dtype, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (float64) of a logits row; -inf entries get exactly 0."""
    return _softmax64(logits)


def sample(probs: np.ndarray, rng: np.random.Generator, *, block: int = 1024) -> int:
    """Draw one index from a (not necessarily normalised) probability vector with ONE uniform draw.

    Inverse CDF in two levels (block sums, then one block), because a cumsum over 110k entries costs ~1 ms.
    """
    n = probs.size
    nb = -(-n // block)
    if nb <= 4:
        return _pick(probs, rng.random() * float(probs.sum(dtype=np.float64)))
    full = (n // block) * block
    sums = probs[:full].reshape(-1, block).sum(axis=1, dtype=np.float64)
    if full < n:
        sums = np.append(sums, probs[full:].sum(dtype=np.float64))
    cdf = np.cumsum(sums)
    u = rng.random() * cdf[-1]
    b = min(int(np.searchsorted(cdf, u, side="right")), nb - 1)
    while sums[b] == 0.0:                               # rounding put u at the edge of an empty block
        b -= 1
    u -= cdf[b - 1] if b else 0.0
    return b * block + _pick(probs[b * block: (b + 1) * block], u)


def _pick(probs: np.ndarray, u: float) -> int:
    cdf = np.cumsum(probs, dtype=np.float64)
    i = int(np.searchsorted(cdf, u, side="right"))
    if i >= probs.size:                                 # u fell on the total by rounding: last non-zero entry
        i = int(np.flatnonzero(probs)[-1])
    return i


# ---- the seen-ids state the decode loop keeps --------------------------------------------------------------

class PenaltyState:
    """The distinct token ids seen so far, for the repetition penalty; O(new tokens) per update.

    Make one per sequence from the prompt ids, pass `state.ids` to the sampler, and call `state.add(token)`
    after each generated token. If the cache is rebuilt from a different sequence (a chat session dropped its
    oldest turns), make a new state from the ids now in the cache: HF's penalty covers exactly the input ids.
    """

    def __init__(self, vocab_size: int, ids: Iterable[int] = ()) -> None:
        self._seen = np.zeros(vocab_size, dtype=bool)   # (vocab,) membership mask
        self._ids = np.empty(1024, dtype=np.int64)      # distinct ids in first-seen order, grown by doubling
        self._n = 0
        self.update(ids)

    @property
    def ids(self) -> np.ndarray:
        """The distinct ids seen, as a read-only view (valid until the next add/update)."""
        view = self._ids[: self._n]
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self._n

    def __contains__(self, token: int) -> bool:
        return bool(self._seen[token])

    def add(self, token: int) -> None:
        """Record one token id (the per-step call)."""
        if not 0 <= token < self._seen.size:
            raise PromptError(f"token id {token} is outside the vocabulary (0..{self._seen.size - 1})")
        if not self._seen[token]:
            self._seen[token] = True
            self._append(np.array([token], dtype=np.int64))

    def update(self, ids: Iterable[int]) -> None:
        """Record many token ids (a prompt, a new chat turn)."""
        arr = (np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray)
               else ids.astype(np.int64).ravel())
        if arr.size == 0:
            return
        if arr.min() < 0 or arr.max() >= self._seen.size:
            bad = arr[(arr < 0) | (arr >= self._seen.size)][0]
            raise PromptError(f"token id {bad} is outside the vocabulary (0..{self._seen.size - 1})")
        new = arr[~self._seen[arr]]
        new = new[np.sort(np.unique(new, return_index=True)[1])]  # distinct, first-seen order
        self._seen[new] = True
        self._append(new)

    def _append(self, new: np.ndarray) -> None:
        if self._n + new.size > self._ids.size:
            grown = np.empty(max(2 * self._ids.size, self._n + new.size), dtype=np.int64)
            grown[: self._n] = self._ids[: self._n]
            self._ids = grown
        self._ids[self._n: self._n + new.size] = new
        self._n += new.size


# ---- the factory -------------------------------------------------------------------------------------------

def make_sampler(settings: GenerationSettings, rng: np.random.Generator | None = None) -> Sampler:
    """Build `sampler(logits, seen_ids) -> token id` once, before the loop.

    logits: (vocab,) float row of the last position; seen_ids: ids for the repetition penalty
    (PenaltyState.ids, or the whole history). Greedy (temperature 0) is an explicit argmax. Otherwise the draw
    uses `rng`, or a Generator seeded from settings.seed: one sampler per request, and the same seed gives the
    same ids.
    The result equals composing the processors above and sampling from their softmax; the fast path only
    restricts the work to top_k's candidates first (top_k commutes with a positive temperature).
    """
    penalty = settings.repetition_penalty
    if settings.greedy:
        def greedy(logits: np.ndarray, seen_ids: np.ndarray) -> int:
            if penalty != 1.0 and len(seen_ids):
                logits = apply_repetition_penalty(logits, seen_ids, penalty)
            return int(np.argmax(logits))
        return greedy

    rng = rng if rng is not None else np.random.default_rng(settings.seed)
    temperature, top_k, top_p, min_p = settings.temperature, settings.top_k, settings.top_p, settings.min_p

    def draw(logits: np.ndarray, seen_ids: np.ndarray) -> int:
        if penalty != 1.0 and len(seen_ids):
            logits = apply_repetition_penalty(logits, seen_ids, penalty)
        cand = None                                     # None: every id is a candidate
        if 0 < top_k < logits.size:
            kth = np.partition(logits, logits.size - top_k)[logits.size - top_k]
            cand = np.flatnonzero(logits >= kth)        # ties with the k-th survive, as in HF
            logits = logits[cand]
        if temperature != 1.0:
            logits = logits / np.asarray(temperature, dtype=logits.dtype)
        w = logits - logits.max()                       # a fresh array, ours to overwrite
        np.exp(w, out=w)                                # unnormalised probabilities; the top token's is 1
        if top_p < 1.0:
            keep = _nucleus(w, top_p)
            w = w[keep]
            if min_p > 0.0:                             # min_p compares p_i / p_max, and p_max = 1 here
                keep, w = keep[w >= min_p], w[w >= min_p]
            i = int(keep[sample(w, rng)])
        else:
            if min_p > 0.0:
                w[w < min_p] = 0.0
            i = sample(w, rng)
        return i if cand is None else int(cand[i])
    return draw


def _softmax64(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum()


def _nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the top_p nucleus of unnormalised probabilities, most likely first, without a full sort.

    HF drops a token when the mass of it and everything less likely is <= 1 - top_p, so the kept set is a
    prefix of the descending order. Any prefix holding >= top_p of the mass contains it: try the tokens within
    a factor 1e2, 1e4, 1e6 of the top one (a cheap compare); if those are too many, partition out the k most
    likely (k = 64, x8 each round). Only the candidates get sorted.
    """
    n = weights.size
    total = float(weights.sum(dtype=np.float64))
    top_w = float(weights.max())
    for ratio in (1e-2, 1e-4, 1e-6):
        cand = np.flatnonzero(weights >= top_w * ratio)
        if cand.size > 4096:
            break
        if float(weights[cand].sum(dtype=np.float64)) >= top_p * total:
            return _cut(weights, cand, total, top_p)
    k = min(n, 64)
    while True:
        cand = np.argpartition(weights, n - k)[n - k:] if k < n else np.arange(n)
        keep = _cut(weights, cand, total, top_p)
        if keep.size < k or k == n:
            return keep
        k = min(n, k * 8)


def _cut(weights: np.ndarray, cand: np.ndarray, total: float, top_p: float) -> np.ndarray:
    """The nucleus within candidates `cand` (a prefix of the descending order), most likely first."""
    cand = cand[np.argsort(-weights[cand], kind="stable")]
    p = weights[cand].astype(np.float64) / total
    tail = 1.0 - (np.cumsum(p) - p)                     # mass of this token and all less likely ones
    return cand[: max(1, int(np.count_nonzero(tail > 1.0 - top_p)))]
