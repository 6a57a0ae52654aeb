"""The benchmark harness end to end on the tiny model (PyTorch and clova-edge, one repetition), plus its pure
parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clova_edge.benchmarks import bench, report
from clova_edge.benchmarks import quality
from clova_edge.benchmarks.protocol import Spec, Summary, synthetic_prompt


def test_summary_and_synthetic_prompt():
    s = Summary.of([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    spec = Spec(vocab_limit=50)
    a = synthetic_prompt(20, spec, salt=1)
    assert a == synthetic_prompt(20, spec, salt=1) and len(a) == 20 and all(10 <= t < 50 for t in a)
    with pytest.raises(ValueError):
        Summary.of([])


def test_perplexity_of_uniform_logits_is_vocab_size():
    ids = np.arange(10) % 7
    out = quality.text_figures(lambda w: np.zeros((len(w), 7), np.float32), ids, window=4)
    assert out["perplexity"] == pytest.approx(7.0) and out["tokens"] == 3 + 3 + 1


def test_kl_and_top1_against_a_reference_and_the_reference_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(7, 7)).astype(np.float32)
    logits = lambda w: table[w]  # noqa: E731  (a bigram "model")
    ids = rng.integers(0, 7, 40)
    texts = {"a": ids.tolist()}
    ref = quality.evaluate_texts(logits, texts, 8, str(tmp_path), write_reference=True)
    same = quality.evaluate_texts(logits, texts, 8, str(tmp_path), write_reference=False)
    assert same["a"]["mean_kl"] == pytest.approx(0, abs=1e-3) and same["a"]["top1_agreement"] == 1.0
    assert same["all"]["perplexity"] == pytest.approx(ref["a"]["perplexity"])
    other = quality.evaluate_texts(lambda w: table[w] + rng.normal(size=(len(w), 7)), texts, 8, str(tmp_path),
                                   False)
    assert other["a"]["mean_kl"] > 0.05 and other["a"]["top1_agreement"] < 1.0


def test_repetition_penalty_is_transformers_and_greedy_stops():
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(1)
    logits, seen = rng.normal(size=50).astype(np.float32), np.array([3, 7, 7, 20])
    hf = RepetitionPenaltyLogitsProcessor(1.2)
    want = hf(torch.tensor(seen[None]), torch.tensor(logits[None]))[0].numpy()
    assert np.allclose(quality.repetition_penalty(logits, np.unique(seen), 1.2), want)
    table = np.eye(5, dtype=np.float32)[[1, 2, 3, 4, 0]] * 3   # token t -> t+1 mod 5
    start, step = quality.recompute_steps(lambda w: table[w])
    assert quality.greedy_answer(start, step, [0], 10, 1.0, stop_ids=(4,)) == [1, 2, 3, 4]
    assert quality.agreement([[1], [2]], [[1], [3]]) == 0.5


def test_bench_smoke_end_to_end(tiny_model_dir, tmp_path):
    assert bench.main(["--smoke", "--clova-model", str(tiny_model_dir), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    rows = results["models"]["tiny"]["rows"]
    assert {"PyTorch fp32", "clova-edge fp32"} <= set(rows)
    for label, rec in rows.items():
        r = rec["result"]
        assert "error" not in r, (label, r.get("error"))
        assert r["decode_short"]["tok_s"] > 0 and r["ttft_s"]["8"]["median"] > 0 and r["peak_rss_mb"] > 0
    # the same weights through two runtimes: the same perplexity on the evaluation texts and the same answers
    q = {k: rows[k]["result"]["quality"] for k in ("PyTorch fp32", "clova-edge fp32")}
    assert set(q["PyTorch fp32"]) == {"prose", "dialogue", "code", "technical", "korean", "all"}
    assert q["clova-edge fp32"]["all"]["perplexity"] == pytest.approx(q["PyTorch fp32"]["all"]["perplexity"],
                                                                      rel=1e-3)
    assert q["PyTorch fp32"]["all"]["mean_kl"] < 1e-3      # against the reference the fp32 row wrote
    answers = [rows[k]["result"]["answers"] for k in ("PyTorch fp32", "clova-edge fp32")]
    assert len(answers[0]) == 3 and answers[0] == answers[1]
    md = (tmp_path / "bench.md").read_text()
    assert "| clova-edge fp32 |" in md and "answers = fp32" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert report.markdown(results) == md


def test_bandwidth_probe_compiles_and_measures(tmp_path):
    import shutil

    from clova_edge.benchmarks.bandwidth import read_bandwidth
    gbs, method = read_bandwidth(1, mib=16, passes=2, work=tmp_path)
    assert gbs > 0.1
    assert method == ("c" if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang") else "numpy")
