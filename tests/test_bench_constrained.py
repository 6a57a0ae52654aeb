"""The benchmark's JSON-schema row (benchmarks/constrained.py, peers/clova_json.py): a fixed number of masked
decode steps whose answers all validate, the per-token mask timing, and the overhead figure and its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clova_edge.benchmarks import bench, constrained, report
from clova_edge.benchmarks.protocol import Spec, measure

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")


def test_the_row_decodes_the_tokens_asked_for_and_every_answer_validates(tiny_model_dir):
    from clova_edge.benchmarks.peers.clova_json import make_adapter

    adapter = make_adapter(Path(tiny_model_dir), "fp32")
    spec = Spec(threads=1, repetitions=2, decode_tokens=20, short_context=8, vocab_limit=200)
    res = measure(adapter, spec, what=("decode",))
    assert res["decode_short"]["tok_s"] > 0 and res["decode_short"]["tok_s_mean"] > 0
    assert len(adapter.mask_s) == 3 + 2 * 20     # the steps after each call's first token (warm-up: 4 tokens)
    paired = adapter.report(spec)["constraint"]["paired"]
    assert paired["steps"] == 2 * 2 * 20 and paired["constrained_step_ms"]["mean"] > 0
    arrivals = adapter.generate(list(range(10, 18)), 400)
    assert len(arrivals) == 400 and len(adapter.tokens) == 400
    # the ids split at the end-of-turn ids: complete answers, then a prefix of the next one
    answers, current = [], []
    for t in adapter.tokens:
        if t in adapter.ends:
            answers.append(adapter.engine.tokenizer.decode(current))
            current = []
        else:
            current.append(t)
    assert answers and adapter.report(spec)["constraint"]["answers_completed"] >= len(answers)
    for text in answers:
        jsonschema.validate(json.loads(text), constrained.SCHEMA)


def _rec(tok_s: float, mean: float, load: float, constraint: dict | None = None) -> dict:
    r = {"result": {"decode_short": {"context": 128, "tok_s": tok_s, "tok_s_mean": mean},
                    "load_avg_start": [load, 0, 0], "load_avg_end": [load, 0, 0]}}
    if constraint:
        r["result"]["constraint"] = constraint
    return r


def test_overhead_figure_and_table():
    entry = {"rows": {constrained.PLAIN: _rec(40.0, 38.0, 1.0)}}
    constrained.record(entry)
    assert "constrained_overhead" not in entry and constrained.markdown("full", entry) == []
    # the rows alone (another load: 30 % slower) are reported; the paired decodes are what is judged
    paired = {"plain_step_ms": {"median": 25.0, "mean": 26.0}, "constrained_step_ms": {"median": 26.0,
                                                                                        "mean": 28.0}}
    mask = {"median": 0.5, "mean": 1.4, "p90": 2.0, "max": 4.0, "n": 192}
    entry["rows"][constrained.LABEL] = _rec(28.0, 26.6, 3.5, {"mask_ms": mask, "paired": paired})
    constrained.record(entry)
    o = entry["constrained_overhead"]
    assert o["comparisons"]["rows"]["cost_pct"] == pytest.approx(30.0)
    p = o["comparisons"]["paired"]
    assert p["cost_pct"] == pytest.approx(100 * (1 - 25 / 26)) and p["cost_pct_mean"] == pytest.approx(
        100 * (1 - 26 / 28))
    assert o["judged_on"] == "paired" and o["met"] is True
    assert o["mask_cost_pct"] == pytest.approx(100 * 1.4 / 26.4)            # 5.3 %
    text = "\n".join(constrained.markdown("full", entry))
    assert "| paired: plain and constrained in turn, one process (judged) | 40.00 / 38.46 | 38.46 / 35.71 |" \
        in text and "+3.8 % / +7.1 % | 3.5 |" in text and "**met**" in text and "cost 5.3 % of" in text
    rows_line = "| the two rows of this run | 40.00 / 38.00 | 28.00 / 26.60 | +30.0 % / +30.0 % | 1.0, 3.5 |"
    assert rows_line in text
    del entry["rows"][constrained.LABEL]["result"]["constraint"]["paired"]
    constrained.record(entry)
    assert entry["constrained_overhead"]["judged_on"] == "rows" and not entry["constrained_overhead"]["met"]
    results = {"spec": {"prompt_lengths": [128], "long_context": 3500, "threads": 2, "repetitions": 3,
                        "perplexity_window": 512},
               "models": {"full": entry}}
    for rec in entry["rows"].values():
        rec.update(disk_bytes=1, weight_bytes_per_token=1, kv_elem_bytes=1)
        rec["result"]["ttft_s"] = {"128": {"median": 0.1, "low": 0.1, "high": 0.1}}
    assert "JSON-schema constrained decoding" in report.markdown(results)


def test_the_row_is_the_plain_int4_row_through_the_constrained_peer(tmp_path):
    row = bench.Row(constrained.PLAIN, "clova", tmp_path, Path("python"), 1, 1, 1, variant="int4")
    other = bench.Row("clova-edge int8", "clova", tmp_path, Path("python"), 1, 1, 1, variant="int8")
    (extra,) = constrained.rows([row, other])
    assert (extra.label, extra.peer, extra.variant, extra.path) == (constrained.LABEL, "clova_json", "int4",
                                                                     tmp_path)
