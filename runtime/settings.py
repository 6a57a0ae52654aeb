"""GenerationSettings: the one frozen, validated bundle of knobs for a generation request.

Every field is checked when the object is made, so a bad value fails at the boundary (CLI, API call) with a
SettingsError naming the field, never deep inside the decode loop. This module does not sample; see
sampling.py, which turns settings into a sampler.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from .errors import SettingsError


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick the next tokens.

    max_new_tokens      tokens to generate at most (>= 1); the loop also stops at the context limit.
    temperature         0.0 = greedy (argmax); > 0 divides the logits before sampling.
    top_k               keep the k most likely tokens (0 = off).
    top_p               nucleus: keep the smallest set of most likely tokens whose mass reaches top_p
                        (1.0 = off).
    min_p               drop tokens whose probability is below min_p times the top token's (0.0 = off).
    repetition_penalty  1.0 = off. Hugging Face semantics (RepetitionPenaltyLogitsProcessor), which the
                        model card's recommended 1.2 was tuned with: every DISTINCT token id that occurs
                        anywhere in the sequence so far - the prompt included, not just a recent window
                        (mlx-lm uses the last 20 tokens instead) - is penalised exactly once, however often
                        it occurs: a negative logit is multiplied by the penalty, a positive (or zero) one
                        divided by it. It is applied first, before temperature, top_k, top_p and min_p
                        (HF's order), and also in greedy decoding.
    seed                seeds the sampler's np.random.Generator (None = fresh entropy); same seed, same ids.
    stop                extra stop strings, on top of the model's own stop tokens and strings.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, low in (("max_new_tokens", 1), ("top_k", 0)):
            object.__setattr__(self, name, _as_int(name, getattr(self, name), low=low))
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        if self.temperature < 0:
            raise SettingsError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise SettingsError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p < 1.0:
            raise SettingsError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise SettingsError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if self.seed is not None:
            object.__setattr__(self, "seed", _as_int("seed", self.seed, low=0))
        object.__setattr__(self, "stop", _as_stop(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_defaults(cls, manifest_generation: Mapping[str, Any] | None, /,
                      **overrides: Any) -> "GenerationSettings":
        """Settings from the manifest's generation defaults (e.g. {"repetition_penalty": 1.2}), then
        overrides.

        Keys of the manifest that are not fields here are ignored (the manifest may carry more); an override
        whose value is None keeps the default (so CLI options can pass None for "not given"); an unknown
        override name is a SettingsError (a typo should not be silently dropped).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise SettingsError(f"unknown generation setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(names))}")
        base = {k: v for k, v in (manifest_generation or {}).items() if k in names and v is not None}
        if isinstance(base.get("stop"), list):
            base["stop"] = tuple(base["stop"])
        settings = cls(**base)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _as_int(name: str, value: Any, *, low: int) -> int:
    # bool is an int subclass; True as max_new_tokens is a bug, not a 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingsError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < low:
        raise SettingsError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingsError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {value}")
    return value


def _as_stop(stop: Any) -> tuple[str, ...]:
    if isinstance(stop, str) or not isinstance(stop, (tuple, list)):
        raise SettingsError(f"stop must be a tuple of strings, got {stop!r} ({type(stop).__name__})")
    for s in stop:
        if not isinstance(s, str):
            raise SettingsError(f"stop must contain only strings, got {s!r} ({type(s).__name__})")
        if not s:
            raise SettingsError("stop strings must not be empty (an empty string would stop at once)")
    return tuple(stop)
