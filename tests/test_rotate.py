"""quant/rotate.py: the rotated graph computes the same function, its statistics carry over exactly, and a
rotated recipe quantizes end to end."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from clova_edge.quant import calibrate as C
from clova_edge.quant.apply import quantize_model_folder
from clova_edge.quant.plan import plan_graph
from clova_edge.quant.recipe import RECIPES, QuantSettings
from clova_edge.quant.report import quality_report
from clova_edge.quant.rotate import StatisticsMap, group_size, orthogonal, rotate_model, rotate_statistics
from clova_edge.runtime.errors import QuantizeError
from clova_edge.runtime.manifest import load_manifest

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("n", [1, 48, 64])
def test_orthogonal_matrices(n: int):
    q = orthogonal(n, np.random.default_rng(0))
    assert np.allclose(q @ q.T, np.eye(n), atol=1e-12)
    if n == 64:                                       # randomized Hadamard: every entry +-1/8
        assert np.allclose(np.abs(q), 1 / 8)


def test_group_size():
    assert group_size(4096) == 128 and group_size(1536) == 128 and group_size(96) == 32 and group_size(7) == 1


def test_statistics_follow_the_rotation():
    """H of x M from H of x, for a dense M and for a block-diagonal I (x) B; importance is H's diagonal,
    and an input without a Hessian loses its (now wrong) importance."""
    x = RNG.standard_normal((500, 24)) * np.linspace(0.1, 5, 24)
    b = orthogonal(6, RNG)
    dense = np.diag(1 / np.linspace(1, 2, 24)) @ orthogonal(24, RNG)
    smap = StatisticsMap({"d": ("x", dense), "k": ("x", ("blocks", b)), "same": ("x", None),
                          "lost": ("y", dense)})
    h = {"x": (x.T @ x / len(x)).astype(np.float32)}
    new_h, new_i = rotate_statistics(smap, h, {"x": h["x"].diagonal(), "y": np.ones(24)})
    for name, m in (("d", dense), ("k", np.kron(np.eye(4), b))):
        xm = x @ m
        assert np.allclose(new_h[name], xm.T @ xm / len(x), rtol=1e-4, atol=1e-4)
        assert np.allclose(new_i[name], new_h[name].diagonal())
    assert np.array_equal(new_h["same"], h["x"]) and "lost" not in new_i


def test_rotated_graph_is_the_same_function(tiny_model_dir: Path):
    m = load_manifest(tiny_model_dir)
    model = onnx.load(str(tiny_model_dir / m.variants["fp32"].file))
    rot, smap = rotate_model(model)
    inits = {t.name for t in rot.graph.initializer}
    assert {"rotation.q", "rotation.final"} <= inits
    plan = plan_graph(rot.graph)
    assert not any(lin.weight.startswith("rotation.") for lin in plan.linears)   # they stay fp32
    assert len(plan.linears) == len(plan_graph(model.graph).linears)
    downs = [lin for lin in plan.linears if lin.role == "down"]
    assert downs and all(lin.act_input.endswith("/rotated") and lin.act_input in smap.entries
                         for lin in downs)
    ids = C.calibration_ids(m)[:600]
    with tempfile.TemporaryDirectory(dir=tiny_model_dir) as tmp:
        path = Path(tmp) / "rot.onnx"
        onnx.save_model(rot, str(path), save_as_external_data=True, location="rot.onnx.data")
        q = quality_report(m, {"t": ids}, quantized_file=path)["all"]
    # float32 rounding only (a rotation off by one sign or one transpose gives KL of order 1): measured
    # KL 5e-6 on the random tiny model, 2e-6 on SmolLM2
    assert q["mean_kl"] < 5e-5 and q["top1_agreement"] > 0.99 and abs(q["ppl_delta_pct"]) < 0.05, q


def test_rotated_recipe_end_to_end(tiny_model_dir: Path, tmp_path: Path):
    """A rotated GPTQ recipe through the folder path: it records the rotation and stays close to fp32."""
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    recipe = replace(RECIPES["int4"], name="rot", rotate="all")
    quantize_model_folder(src, QuantSettings(recipe, eval_tokens=300), out_folder=tmp_path / "out")
    q = load_manifest(tmp_path / "out").variant("int4").quantization
    assert q["rotate"] == "all" and q["recipe_fingerprint"] != RECIPES["int4"].fingerprint()
    assert q["quality"]["all"]["top1_agreement"] > 0.8, q["quality"]["all"]


def test_rotation_needs_a_statistic_it_can_carry():
    with pytest.raises(QuantizeError, match="needs method gptq"):
        replace(RECIPES["int4"], method="act", rotate="all")
