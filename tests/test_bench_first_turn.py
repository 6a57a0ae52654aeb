"""The benchmark's first-turn row (benchmarks/first_turn.py): the spec's prompt is the chat's own ids, the
clova-edge adapter's warm turns reuse the whole opening from the prompt cache, and the table renders."""

from __future__ import annotations

from dataclasses import replace

from clova_edge.benchmarks import first_turn
from clova_edge.benchmarks.peers.clova import ClovaAdapter
from clova_edge.benchmarks.protocol import Spec, measure


def test_first_turn_row_on_the_tiny_model(tiny_model_dir):
    inputs = first_turn.inputs(tiny_model_dir, 3)
    assert inputs["chat_system"] and len(inputs["chat_opening"]) > 20
    assert len(set(inputs["chat_texts"])) == 4 and len({len(t) for t in inputs["chat_turns"]}) == 1
    spec = replace(Spec(threads=1, repetitions=3, vocab_limit=200), **inputs)
    spec = Spec.from_dict(spec.to_dict())                 # through JSON, as the runner reads it
    adapter = ClovaAdapter(tiny_model_dir, "fp32")
    res = measure(adapter, spec, what=("chat",))["chat_first_turn"]
    assert res["reused_tokens"] == [0] + [len(inputs["chat_opening"])] * 3
    assert res["user_tokens"] == first_turn.USER_TOKENS and res["ttft_s"]["n"] == 3
    results = {"models": {"full": {"rows": {"clova-edge fp32": {"result": {"chat_first_turn": res}}}}}}
    table = "\n".join(first_turn.markdown(results, "full"))
    assert "| clova-edge fp32 |" in table and "prompt cache warm" in table
    assert first_turn.markdown({"models": {"full": {"rows": {}}}}, "full") == []


def test_the_chat_turn_is_added_to_the_clova_and_llamacpp_speed_rows(tiny_model_dir):
    from pathlib import Path

    from clova_edge.benchmarks.bench import Row
    rows = [Row(label, peer, Path(tiny_model_dir), Path("python"), 0, 1, 0) for label, peer in (
        ("clova-edge int4", "clova"), ("clova-edge int4 json-schema", "clova_json"),
        ("llama.cpp Q4_K_M", "llamacpp"), ("onnxruntime-genai int4", "ortgenai"))]
    got = {r.label: first_turn.for_row(r, rows, Spec(repetitions=2), "ttft") for r in rows}
    assert {k: w for k, (_, w) in got.items()} == {
        "clova-edge int4": "ttft,chat", "clova-edge int4 json-schema": "ttft",
        "llama.cpp Q4_K_M": "ttft,chat", "onnxruntime-genai int4": "ttft"}
    assert len(got["llama.cpp Q4_K_M"][0].chat_turns) == 3
    assert first_turn.for_row(rows[2], rows[2:], Spec(), "ttft") == (Spec(), "ttft")    # no clova folder
