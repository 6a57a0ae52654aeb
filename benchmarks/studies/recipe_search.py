"""Study: which INT4 recipe? Candidates scored on the CALIBRATION text only (never quant/data/eval/).

    python -m clova_edge.benchmarks.studies.recipe_search FOLDER [FOLDER ...] [--only A;B] [--out F]

FOLDER: an exported fp32 clova-edge folder (SmolLM2 and its off-grid permutation, export/offgrid.py). The
calibration ids (quant/calibrate.py) are cut into windows of 512; every third window is set aside: the
statistics (activation energies, GPTQ Hessians, int8 KV scales) come from the other two thirds and each
candidate is scored on the third they did not see (a score on the fitted windows flatters GPTQ, which fits
them). For each candidate: the graph is rewritten (quant/rewrite.py), its int8 KV cache calibrated, and
compared with fp32: perplexity delta, mean KL, top-1; plus the bits per weight it stores. The recipe that
became the INT4 default (quant/recipe.py) cites this study's output in benchmarks/studies/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from clova_edge.quant import calibrate as C
from clova_edge.quant.kvcache import calibrate_kv_scales, rewrite_int8_kv
from clova_edge.quant.recipe import RECIPES, Recipe, TensorRule
from clova_edge.quant.report import quality_report, reference_logprobs
from clova_edge.quant.rewrite import rewrite_model
from clova_edge.runtime.manifest import load_manifest

Q4, Q4A = TensorRule(4, 128), TensorRule(4, 128, symmetric=False)
Q8 = TensorRule(8, 128)
Q4A64 = TensorRule(4, 64, symmetric=False)
DV8 = (("down", "more_bits", Q8), ("v", "more_bits", Q8))
H32, H64, H128 = (TensorRule(4, b, False, 16) for b in (32, 64, 128))     # float16 scales
Y_DV = (("down", "all", H32), ("v", "all", H32))
LM8H = TensorRule(8, 128, True, 16)                                        # the INT4 default's vocabulary


def candidates() -> dict[str, Recipe]:
    base = RECIPES["int4-first"]     # the first release's INT4: the unrotated, act-searched base
    mk = lambda name, **kw: replace(base, name=name, **kw)  # noqa: E731
    g = lambda name, default, *over, **kw: mk(name, default=default, method="gptq", overrides=over, **kw)  # noqa: E731
    return {
        # the candidates of the float16-scale study (quant/recipe.py INT4 cites their figures)
        "previous default: gptq asym/128 + down asym/64": g("prev", Q4A, ("down", "all", Q4A64)),
        "gptq asym/64 f16": g("h64", H64),
        "gptq asym/32 f16": g("h32", H32),
        "gptq asym/32 f16, 4-bit asym/32 f16 vocabulary": g("h32lm4", H32, lm_head=H32),
        "gptq asym/32 f16 + v 8-bit": g("h32v8", H32, ("v", "all", Q8)),
        "gptq asym/64 f16 + down,v 8-bit (more_bits)": g("h64dv8", H64, *DV8),
        "Y: gptq asym/64 f16, gate_up /128, down,v /32": g("Y", H64, ("gate_up", "all", H128), *Y_DV,
                                                            lm_head=TensorRule(8, 1024)),
        "Y + v 8-bit f16 (ends)": g("Z1", H64, ("gate_up", "all", H128), ("down", "all", H32),
                                    ("v", "ends", TensorRule(8, 128, True, 16)), ("v", "all", H32)),
        "Y + o /32, 8-bit f16 vocabulary": g("Z2", H64, ("gate_up", "all", H128), *Y_DV, ("o", "all", H32),
                                            lm_head=TensorRule(8, 128, True, 16)),
        "X: gptq asym/64 f16, gate_up /128, v 8-bit f16 (more_bits)": g(
            "X", H64, ("gate_up", "all", H128), ("v", "more_bits", TensorRule(8, 128, True, 16)),
            lm_head=TensorRule(8, 1024)),
        # the rotation study (quant/rotate.py): the same rules on the rotated graph
        "gptq asym/128 f16": g("h128", H128, lm_head=LM8H),
        "rotated gptq sym/128": g("r128s", Q4, rotate="all", lm_head=LM8H),
        "rotated gptq asym/128 f16": g("r128", H128, rotate="all", lm_head=LM8H),
        "rotated gptq asym/64 f16": g("r64", H64, rotate="all", lm_head=LM8H),
        "rotated gptq asym/128 f16, down /32": g("r128d32", H128, ("down", "all", H32), rotate="all",
                                                 lm_head=LM8H),
        "rotated INT4 default rules": replace(RECIPES["int4"], name="rint4", rotate="all"),
        "MLP-rotated INT4 default rules": replace(RECIPES["int4"], name="mint4", rotate="mlp"),
        "MLP-rotated gptq asym/128 f16": g("m128", H128, rotate="mlp", lm_head=LM8H),
        "MLP-rotated gptq asym/128": g("m128a", Q4A, rotate="mlp"),
        "MLP-rotated gptq sym/128": g("m128s", Q4, rotate="mlp"),
        "MLP-rotated gptq asym/64 f16, gate_up /128": g("m64", H64, ("gate_up", "all", H128), rotate="mlp",
                                                         lm_head=LM8H),
        "int4-first (sym/128)": base,
        "int4-first, accuracy level 0 (fp32 activations)": mk("acc0", accuracy_level=0),
        "int4-first, fp32 KV cache": mk("kv32", kv_cache="float32"),
        "int4-first, 8-bit/32 vocabulary": mk("lm32", lm_head=TensorRule(8, 32)),
        "asym/128": mk("asym128", default=Q4A),
        "sym/64": mk("sym64", default=TensorRule(4, 64)),
        "asym/64": mk("asym64", default=TensorRule(4, 64, False)),
        "sym/32": mk("sym32", default=TensorRule(4, 32)),
        "asym/128 + down 8-bit (more_bits)": mk("m1", default=Q4A, overrides=(("down", "more_bits", Q8),)),
        "asym/128 + down,qkv 8-bit (more_bits)": mk("m2", default=Q4A, overrides=(
            ("down", "more_bits", Q8), ("qkv", "more_bits", Q8))),
        "asym/128 + all 8-bit (ends)": mk("m3", default=Q4A, overrides=tuple(
            (r, "ends", Q8) for r in ("qkv", "o", "gate_up", "down"))),
        "gptq asym/128": mk("g1", default=Q4A, method="gptq"),
        "gptq asym/64": mk("g64", default=Q4A64, method="gptq"),
        "gptq sym/128": mk("gs128", method="gptq"),
        "gptq asym/128 + down asym/64": mk("g128d64", default=Q4A, method="gptq",
                                           overrides=(("down", "all", Q4A64),)),
        "gptq asym/128 + down 8-bit (ends)": mk("g128d8e", default=Q4A, method="gptq",
                                                overrides=(("down", "ends", Q8),)),
        "gptq asym/64 + down,v 8-bit (more_bits)": mk("g64dv", default=Q4A64, method="gptq", overrides=DV8),
        "asym/64 + down,v 8-bit (more_bits)": mk("a64dv", default=Q4A64, overrides=DV8),
        "gptq asym/32 + down,v 8-bit (more_bits)": mk("g32dv", default=TensorRule(4, 32, False),
                                                      method="gptq", overrides=DV8),
        "gptq asym/128 + down 8-bit (more_bits)": mk("g2", default=Q4A, method="gptq",
                                                     overrides=(("down", "more_bits", Q8),)),
        # the INT8 study (fp32 KV cache, as the int8 variant has)
        "int8 default (act-searched 8-bit/32)": RECIPES["int8"],
        "int8 rtn 8-bit/32": replace(RECIPES["int8"], name="i8rtn", method="rtn"),
        "int8 gptq 8-bit/32": replace(RECIPES["int8"], name="i8g", method="gptq"),
        "int8 gptq 8-bit/64": replace(RECIPES["int8"], name="i8g64", method="gptq",
                                      default=TensorRule(8, 64)),
        "int8 gptq 8-bit/32 f16 scales": replace(RECIPES["int8"], name="i8g16", method="gptq",
                                                 default=TensorRule(8, 32, True, 16)),
    }


def split_windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids of the windows the statistics see, ids of every third window, which they do not)."""
    w = [ids[i:i + C.WINDOW] for i in range(0, len(ids) - 1, C.WINDOW)]
    return (np.concatenate([x for i, x in enumerate(w) if i % 3 != 2]),
            np.concatenate([x for i, x in enumerate(w) if i % 3 == 2]))


def bits_per_weight(records: list[dict]) -> float:
    n = sum(r["shape"][0] * r["shape"][1] for r in records)
    b = sum(r["shape"][0] * r["shape"][1]
            * TensorRule(r["bits"], r["block_size"], r["symmetric"],
                         r.get("scale_bits", 32)).bits_per_weight()
            for r in records)
    return b / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--only", default="", help="';'-separated candidate labels (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    results: dict = json.loads(a.out.read_text()) if a.out and a.out.is_file() else {}
    for folder in a.folders:
        manifest = load_manifest(folder)
        fit, held = split_windows(C.calibration_ids(manifest))
        t0 = time.perf_counter()
        imp = C.activation_importance(manifest, fit)
        need_h = any(r.method == "gptq" for r in candidates().values())
        hess = C.activation_hessians(manifest, fit) if need_h else None
        kv = calibrate_kv_scales(manifest, fit)
        print(f"{folder}: {len(fit)} calibration ids fitted, {len(held)} scored, statistics "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        ref = reference_logprobs(manifest, {"calib": held})
        model = onnx.load(str(folder / manifest.variants["fp32"].file))
        out = results.setdefault(str(folder), {})
        for label, recipe in candidates().items():
            if a.only and label not in a.only.split(";"):
                continue
            t1 = time.perf_counter()
            q, records = rewrite_model(model, recipe, importance=imp, hessians=hess)
            if recipe.kv_cache == "int8":
                rewrite_int8_kv(q, kv)
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                path = Path(tmp) / "cand.onnx"
                onnx.save_model(q, str(path), save_as_external_data=True, location="cand.onnx.data")
                quality = quality_report(manifest, {"calib": held}, quantized_file=path, reference=ref)["all"]
                size = (Path(tmp) / "cand.onnx.data").stat().st_size
            out[label] = {**quality, "data_bytes": size, "linear_bpw": bits_per_weight(
                [r for r in records if r["role"] != "lm_head"]), "seconds": time.perf_counter() - t1}
            print(f"{label:45s} ppl {quality['ppl_delta_pct']:+6.2f}%  KL {quality['mean_kl']:.4f}  top1 "
                  f"{100 * quality['top1_agreement']:.1f}%  {size / 1e6:.1f} MB  "
                  f"bpw {out[label]['linear_bpw']:.3f}  {out[label]['seconds']:.0f} s", flush=True)
            if a.out:
                a.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
