"""Calibration: the text every quantization statistic is measured on, and the statistics themselves.

The calibration text is quant/data/calib*.txt (see quant/data/CALIBRATION.md: prose, dialogue, code,
technical writing and Korean, written for the project). It is kept apart from the evaluation texts of
quant/report.py (quant/data/eval/):
no activation statistic, KV-cache scale or recipe choice reads those, so the quality report measures text
the quantizer never saw.
Statistics: per-input-channel activation energy E[x^2] of every linear's input (the activation-aware method of
quant/apply.py) and the covariance E[x x^T] (GPTQ), from the fp32 graph with those tensors added as outputs.
"""

from __future__ import annotations

from importlib import resources
from typing import Callable, Iterator

import numpy as np

from clova_edge.runtime.manifest import Manifest
from clova_edge.runtime.model import OnnxModel

from .plan import plan_graph

CALIBRATION_FILES = ("calib.txt", "calib_mixed.txt", "calib_prose.txt", "calib_dialogue.txt",
                     "calib_code.txt", "calib_technical.txt", "calib_korean.txt")
WINDOW = 512
# Windows of statistics at most: 24,576 ids (the calibration texts are ~23K ids with HyperCLOVAX's tokenizer,
# ~33K with SmolLM2's byte-level Korean). GPTQ fits its Hessians: from 4,096 ids of two texts its codes fitted
# those texts (+6.5 % perplexity on them, +15 % on unseen English and code); the recipe study
# (benchmarks/studies/recipe_search.py) scores on calibration windows the statistics did not see.
MAX_WINDOWS = 48


def windows(ids: np.ndarray, size: int = WINDOW) -> Iterator[np.ndarray]:
    """Consecutive independent windows of `size` ids (the last may be shorter; at least 2 ids each)."""
    for i in range(0, len(ids) - 1, size):
        w = ids[i:i + size]
        if len(w) >= 2:
            yield w


def calibration_text() -> str:
    data = resources.files("clova_edge.quant").joinpath("data")
    return "\n\n".join(data.joinpath(f).read_text(encoding="utf-8") for f in CALIBRATION_FILES
                       if data.joinpath(f).is_file())


def calibration_ids(manifest: Manifest, limit: int | None = None) -> np.ndarray:
    """The calibration text tokenized with the model's own tokenizer (no special tokens), int64. The texts are
    interleaved window by window so that a limit still sees every language."""
    from clova_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(manifest.folder / manifest.tokenizer_file)
    data = resources.files("clova_edge.quant").joinpath("data")
    parts = [np.asarray(tok.encode(data.joinpath(f).read_text(encoding="utf-8")), np.int64)
             for f in CALIBRATION_FILES if data.joinpath(f).is_file()]
    chunks = [p[i:i + WINDOW] for i in range(0, max(map(len, parts)), WINDOW) for p in parts if i < len(p)]
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    return ids[:limit] if limit else ids


def activation_importance(manifest: Manifest, ids: np.ndarray, *, threads: int = 2) -> dict[str, np.ndarray]:
    """{activation tensor name: E[x_k^2] over tokens, [K]} for the input of every quantizable linear."""
    sums, count = _activation_sums(manifest, ids, lambda x: np.square(x.astype(np.float64)).sum(axis=0),
                                   threads)
    return {a: (s / max(count, 1)).astype(np.float32) for a, s in sums.items()}


def activation_hessians(manifest: Manifest, ids: np.ndarray, *, threads: int = 2) -> dict[str, np.ndarray]:
    """{activation tensor name: H = mean over tokens of x x^T, [K, K] float32}: what GPTQ (quant/gptq.py)
    weighs each layer's output error with. About 2 GB for HyperCLOVAX-0.5B (24 layers, K up to 4096)."""
    # float32 sums: a few thousand tokens lose nothing that matters to a damped inverse; float64 doubles the
    # 2 GB
    sums, count = _activation_sums(manifest, ids, lambda x: x.T @ x, threads)
    return {a: (s / max(count, 1)).astype(np.float32) for a, s in sums.items()}


def _activation_sums(manifest: Manifest, ids: np.ndarray, stat: Callable[[np.ndarray], np.ndarray],
                     threads: int):
    """Sum of stat(x [T, K] float32) over windows of `ids`, for the input x of every quantizable linear.

    Runs the fp32 graph with those tensors added as outputs: a copy of the graph (weights stay in the
    original external data file) is written next to the model, run, and removed.
    """
    import onnx
    from onnx import helper

    src = manifest.folder / manifest.variants["fp32"].file
    model = onnx.load(str(src), load_external_data=False)
    acts = sorted({lin.act_input for lin in plan_graph(model.graph).linears})
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None)
                              for a in acts if a not in have)
    tmp = src.with_name(f".{src.stem}.calib.onnx")
    try:
        onnx.save_model(model, str(tmp))
        model = OnnxModel.from_graph(manifest, tmp, threads=threads)
        sums: dict[str, np.ndarray] = {}
        count = 0
        for i, w in enumerate(windows(ids, WINDOW)):
            if i >= MAX_WINDOWS:
                break
            outs = model.session.run(acts, model.window_feeds(w))
            for a, x in zip(acts, outs):
                x = x.reshape(-1, x.shape[-1])
                sums[a] = sums.get(a, 0.0) + stat(x)
            count += len(w)
    finally:
        tmp.unlink(missing_ok=True)
    return sums, count
