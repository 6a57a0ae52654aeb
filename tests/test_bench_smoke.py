"""The benchmark harness end to end on the tiny model (PyTorch and clova-edge, one repetition), plus its pure parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clova_edge.benchmarks import bench, report
from clova_edge.benchmarks.protocol import Spec, Summary, perplexity, synthetic_prompt


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
    out = perplexity(lambda w: np.zeros((len(w), 7), np.float32), ids, window=4)
    assert out["perplexity"] == pytest.approx(7.0) and out["tokens"] == 3 + 3 + 1


def test_bench_smoke_end_to_end(tiny_model_dir, tmp_path):
    assert bench.main(["--smoke", "--clova-model", str(tiny_model_dir), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    rows = results["models"]["tiny"]["rows"]
    assert {"PyTorch fp32", "clova-edge fp32"} <= set(rows)
    for label, rec in rows.items():
        r = rec["result"]
        assert "error" not in r, (label, r.get("error"))
        assert r["decode_short"]["tok_s"] > 0 and r["ttft_s"]["8"]["median"] > 0 and r["peak_rss_mb"] > 0
    # the same weights through two runtimes: the same perplexity on the evaluation text
    ppl = [rows[k]["result"]["perplexity"]["perplexity"] for k in ("PyTorch fp32", "clova-edge fp32")]
    assert ppl[1] == pytest.approx(ppl[0], rel=1e-3)
    md = (tmp_path / "bench.md").read_text()
    assert "| clova-edge fp32 |" in md and "perplexity" in md
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert report.markdown(results) == md


def test_bandwidth_probe_compiles_and_measures(tmp_path):
    import shutil

    from clova_edge.benchmarks.bandwidth import read_bandwidth
    gbs, method = read_bandwidth(1, mib=16, passes=2, work=tmp_path)
    assert gbs > 0.1
    assert method == ("c" if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang") else "numpy")
