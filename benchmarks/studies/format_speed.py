"""Study: how fast does onnxruntime's MatMulNBits decode and prefill each weight format on this CPU?

    python -m clova_edge.benchmarks.studies.format_speed FOLDER [--formats 4/128,4/128a,4/64a,...] [--out F]

FOLDER: an exported fp32 folder of the full-size HyperCLOVAX shape (random weights: speed does not depend on
their values). Each format (bits/block, 'a' = asymmetric, 'h' = float16 scales) is applied to every linear
with round-to-nearest (the vocabulary projection at --lm-head, default 8-bit/128, the KV cache fp32, so only
the linears differ); a recipe's name (quant/recipe.py) stands for its rules, also with round-to-nearest and
an fp32 cache; '+mlp' or '+all' adds that rotation (quant/rotate.py). Then decode
tok/s after a 128-token prompt (median of 64 steps x 3) and the time to first token of a 512-token prompt.
Rows of one run compare; the recipe that became the INT4 default (quant/recipe.py) was chosen with this and
recipe_search.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from clova_edge.quant.recipe import RECIPES, Recipe, TensorRule
from clova_edge.quant.rewrite import rewrite_model
from clova_edge.runtime.manifest import load_manifest
from clova_edge.runtime.model import OnnxModel


def parse(fmt: str) -> TensorRule:
    """bits/block, then 'a' for asymmetric blocks and 'h' for float16 scales: 4/128, 4/32a, 4/32ah."""
    bits, block = fmt.split("/")
    digits = block.rstrip("ah")
    flags = block[len(digits):]
    return TensorRule(int(bits), int(digits), symmetric="a" not in flags,
                      scale_bits=16 if "h" in flags else 32)


def recipe_of(fmt: str, lm_head: str) -> Recipe:
    """A format or recipe name, optionally with '+mlp' / '+all' (the rotation), as an RTN recipe."""
    name, _, rotate = fmt.partition("+")
    if name in RECIPES:
        r = replace(RECIPES[name], method="rtn", kv_cache="float32")
    else:
        r = Recipe(fmt, fmt, parse(name), parse(lm_head), method="rtn", kv_cache="float32")
    return replace(r, rotate=rotate or "none")


def time_model(model: OnnxModel, rng: np.random.Generator) -> dict:
    steps = []
    for _ in range(3):
        cache = model.new_cache(128 + 65)
        logits = model.prefill(cache, rng.integers(10, 30000, 128))
        for _ in range(64):
            t = time.perf_counter()
            logits = model.decode(cache, int(np.argmax(logits)))
            steps.append(time.perf_counter() - t)
    ttft = []
    for _ in range(2):
        cache = model.new_cache(512)
        t = time.perf_counter()
        model.prefill(cache, rng.integers(10, 30000, 512))
        ttft.append(time.perf_counter() - t)
    return {"decode_tok_s": 1 / float(np.median(steps)), "ttft_512_s": float(np.median(ttft))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--formats", default="4/128,4/128a,4/64,4/64a,4/32,4/32a,8/128")
    ap.add_argument("--lm-head", default="8/128", help="format of the tied vocabulary projection")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    manifest = load_manifest(a.folder)
    fp32 = onnx.load(str(a.folder / manifest.variants["fp32"].file))
    results = json.loads(a.out.read_text()) if a.out and a.out.is_file() else {}
    for fmt in a.formats.split(","):
        recipe = recipe_of(fmt, a.lm_head)
        q, records = rewrite_model(fp32, recipe)
        with tempfile.TemporaryDirectory(dir=a.folder) as tmp:
            path = Path(tmp) / "q.onnx"
            onnx.save_model(q, str(path), save_as_external_data=True, location="q.onnx.data")
            del q
            size = (Path(tmp) / "q.onnx.data").stat().st_size
            model = OnnxModel.from_graph(manifest, path, threads=a.threads)
            key = f"{fmt} vocab {a.lm_head}"
            results[key] = {"data_mb": size / 1e6, **time_model(model, np.random.default_rng(0))}
            del model
        r = results[key]
        print(f"{key:22s} {r['data_mb']:7.1f} MB  decode {r['decode_tok_s']:6.1f} tok/s  "
              f"TTFT512 {r['ttft_512_s']:.2f} s", flush=True)
        if a.out:
            a.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
