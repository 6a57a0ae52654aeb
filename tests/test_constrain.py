"""Constrained output (llguidance): answers that must parse and validate whatever the model wants, on random
weights (the tiny model), generated schemas, a scripted model that wants something else, SmolLM2's real
weights on 20 prompts, and the CLI's --json-schema."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clova_edge import Engine, GenerationSettings
from clova_edge.runtime.errors import ConstraintError
from fake_model import scripted_engine

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                           "likes": {"type": "array", "maxItems": 3,
                                                     "items": {"enum": ["tea", "coffee", "김치"]}}},
          "required": ["name", "age", "likes"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Engine.load(tiny_model_dir, variant="fp32", threads=2)


def _answer(engine, prompt, schema, settings):
    events = list(engine.stream(prompt, settings, json_schema=schema))
    return "".join(e.text for e in events), events[-1]


@pytest.mark.parametrize("seed", range(4))
def test_random_weights_sampled_still_give_valid_json(tiny, seed):
    settings = GenerationSettings(max_new_tokens=120, temperature=1.0, seed=seed)
    text, last = _answer(tiny, "사람 한 명을 JSON으로", PERSON, settings)
    assert last.finish_reason == "stop", text    # the grammar closed, then only end-of-turn ids were left
    jsonschema.validate(json.loads(text), PERSON)


# small schemas whose every valid value is short, so a random model always finishes within the budget
_leaf = st.one_of(
    st.just({"type": "boolean"}), st.just({"type": "null"}),
    st.builds(lambda lo, n: {"type": "integer", "minimum": lo, "maximum": lo + n},
              st.integers(-50, 50), st.integers(0, 100)),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
    st.lists(st.sampled_from(["a", "b", "서울", "x y"]), min_size=1, max_size=3, unique=True).map(
        lambda v: {"enum": v}),
)
_schemas = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(
        lambda ps: {"type": "object", "properties": {f"k{i}": p for i, p in enumerate(ps)},
                    "required": [f"k{i}" for i in range(len(ps))], "additionalProperties": False}),
    inner.map(lambda p: {"type": "array", "items": p, "maxItems": 2}),
), max_leaves=4)


@hypothesis.settings(max_examples=12, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(schema=_schemas, seed=st.integers(0, 2**16))
def test_generated_schemas_always_validate(tiny, schema, seed):
    settings = GenerationSettings(max_new_tokens=160, temperature=0.8, seed=seed)
    text, last = _answer(tiny, "JSON please", schema, settings)
    assert last.finish_reason == "stop", (schema, text)
    jsonschema.validate(json.loads(text), schema)


def test_the_constraint_overrides_what_the_model_wants(tiny_model_dir):
    engine = scripted_engine(tiny_model_dir, ["I would rather chat.<|im_end|>"])
    text, last = _answer(engine, "hi", {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                        "required": ["ok"], "additionalProperties": False},
                         GenerationSettings(max_new_tokens=40))
    assert json.loads(text) == {"ok": False} or json.loads(text) == {"ok": True}
    assert last.finish_reason == "stop"


def test_regex(tiny):
    text = tiny.generate("phone?", GenerationSettings(max_new_tokens=30, temperature=1.0, seed=3),
                         regex=r"010-[0-9]{4}-[0-9]{4}")
    assert re.fullmatch(r"010-[0-9]{4}-[0-9]{4}", text), text


def test_bad_requests_are_constraint_errors(tiny):
    with pytest.raises(ConstraintError, match="not JSON"):
        tiny.generate("x", json_schema="{nope")
    with pytest.raises(ConstraintError, match="must be an object"):
        tiny.generate("x", json_schema=[1])
    with pytest.raises(ConstraintError, match="not both"):
        tiny.generate("x", json_schema={}, regex="a")
    with pytest.raises(ConstraintError, match="tools"):
        list(tiny.stream("x", json_schema={}, tools=[{"name": "f"}]))


CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                         "country": {"type": "string", "maxLength": 40}},
        "required": ["city", "country"], "additionalProperties": False}
PLACES = ["France", "Japan", "Korea", "Brazil", "Canada", "Egypt", "India", "Italy", "Kenya", "Mexico",
          "Norway", "Peru", "Spain", "Chile", "Greece", "Ireland", "Poland", "Turkey", "Vietnam", "Germany"]


@pytest.mark.skipif(bool(os.environ.get("CLOVA_EDGE_TEST_MODELS")),
                    reason="make test-arm: 20 SmolLM2 answers take 14 minutes emulated; the tiny-model, "
                           "hypothesis and scripted tests cover arm64")
def test_smollm2_real_weights_20_prompts_all_validate(smollm2_model_dir):
    engine = Engine.load(smollm2_model_dir, variant="fp32", threads=2)
    settings = engine.default_settings(max_new_tokens=48)
    for place in PLACES:
        text, last = _answer(engine, f"Name the capital of {place} as JSON.", CITY, settings)
        assert last.finish_reason == "stop", (place, text)
        jsonschema.validate(json.loads(text), CITY)


def test_cli_generate_json_schema(tiny_model_dir, tmp_path):
    (tmp_path / "schema.json").write_text(json.dumps(PERSON))
    cli = str(Path(sys.executable).with_name("clova-edge"))
    out = subprocess.run([cli, "generate", "사람 한 명", "-m", str(tiny_model_dir), "--json-schema",
                          str(tmp_path / "schema.json"), "--max-new-tokens", "120", "--temperature", "0.7",
                          "--seed", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    jsonschema.validate(json.loads(out.stdout), PERSON)
    out = subprocess.run([cli, "generate", "x", "-m", str(tiny_model_dir), "--json-schema",
                          str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "missing.json" in out.stderr
