"""GenerationSettings: defaults, validation (each bad value names its field), manifest defaults +
overrides."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clova_edge.runtime.errors import SettingsError
from clova_edge.runtime.settings import GenerationSettings


def test_defaults():
    s = GenerationSettings()
    assert (s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.min_p) == (512, 0.0, 0, 1.0, 0.0)
    assert (s.repetition_penalty, s.seed, s.stop) == (1.0, None, ())
    assert s.greedy


def test_frozen_and_hashable():
    s = GenerationSettings(stop=["</s>"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.temperature = 1.0
    assert s.stop == ("</s>",) and hash(s) == hash(GenerationSettings(stop=("</s>",)))


def test_numbers_are_normalised():
    s = GenerationSettings(temperature=1, top_p=np.float32(0.5), top_k=np.int64(3), seed=np.int32(7))
    assert type(s.temperature) is float and s.temperature == 1.0 and not s.greedy
    assert type(s.top_p) is float and type(s.top_k) is int and type(s.seed) is int


@pytest.mark.parametrize("field, value, message", [
    ("max_new_tokens", 0, "max_new_tokens must be >= 1, got 0"),
    ("max_new_tokens", 1.5, "max_new_tokens must be an integer"),
    ("max_new_tokens", True, "max_new_tokens must be an integer"),
    ("max_new_tokens", "10", "max_new_tokens must be an integer"),
    ("temperature", -0.1, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be a finite number, got nan"),
    ("temperature", float("inf"), "temperature must be a finite number"),
    ("temperature", "hot", "temperature must be a number"),
    ("temperature", False, "temperature must be a number"),
    ("top_k", -1, "top_k must be >= 0, got -1"),
    ("top_k", 2.0, "top_k must be an integer"),
    ("top_p", 1.5, "top_p must be in (0, 1], got 1.5"),
    ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
    ("top_p", float("nan"), "top_p must be a finite number"),
    ("min_p", 1.0, "min_p must be in [0, 1), got 1.0"),
    ("min_p", -0.01, "min_p must be in [0, 1)"),
    ("repetition_penalty", 0.0, "repetition_penalty must be > 0"),
    ("repetition_penalty", -1.2, "repetition_penalty must be > 0"),
    ("repetition_penalty", float("-inf"), "repetition_penalty must be a finite number"),
    ("seed", -1, "seed must be >= 0"),
    ("seed", 1.0, "seed must be an integer"),
    ("seed", True, "seed must be an integer"),
    ("stop", "</s>", "stop must be a tuple of strings"),
    ("stop", ("ok", 3), "stop must contain only strings"),
    ("stop", ("",), "stop strings must not be empty"),
    ("stop", None, "stop must be a tuple of strings"),
])
def test_invalid_values_raise_naming_the_field(field, value, message):
    with pytest.raises(SettingsError) as info:
        GenerationSettings(**{field: value})
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field, value", [
    ("top_p", 1.0), ("top_p", 1e-9), ("min_p", 0.0), ("min_p", 0.99), ("temperature", 0), ("top_k", 0),
    ("repetition_penalty", 0.5), ("seed", 0), ("max_new_tokens", 1), ("stop", ("a", "<|endofturn|>")),
])
def test_edge_values_are_accepted(field, value):
    assert getattr(GenerationSettings(**{field: value}), field) == value


def test_from_defaults_manifest_then_overrides():
    manifest = {"repetition_penalty": 1.2, "temperature": 0.0, "do_sample": False, "stop": ["<|stop|>"]}
    s = GenerationSettings.from_defaults(manifest)
    assert (s.repetition_penalty, s.stop) == (1.2, ("<|stop|>",))
    s = GenerationSettings.from_defaults(manifest, temperature=0.7, repetition_penalty=None, seed=3,
                                         top_p=None)
    assert (s.temperature, s.repetition_penalty, s.seed, s.top_p) == (0.7, 1.2, 3, 1.0)
    assert GenerationSettings.from_defaults(None) == GenerationSettings()
    assert GenerationSettings.from_defaults({}, repetition_penalty=1.0).repetition_penalty == 1.0


def test_from_defaults_rejects_unknown_overrides_and_bad_values():
    with pytest.raises(SettingsError, match="unknown generation setting.*temprature"):
        GenerationSettings.from_defaults({}, temprature=0.5)
    with pytest.raises(SettingsError, match="repetition_penalty must be > 0"):
        GenerationSettings.from_defaults({"repetition_penalty": 0})
    with pytest.raises(SettingsError, match="top_k must be >= 0"):
        GenerationSettings.from_defaults({"repetition_penalty": 1.2}, top_k=-5)


def test_docstring_states_the_penalty_semantics():
    doc = GenerationSettings.__doc__
    for phrase in ("Hugging Face", "DISTINCT", "prompt included", "multiplied", "divided"):
        assert phrase in doc
