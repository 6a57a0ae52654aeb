"""Compare quantization methods on an exported model: perplexity / KL / top-1 against fp32 on quant/data/eval.txt.

    python -m clova_edge.benchmarks.studies.quant_methods MODEL_DIR [--configs 4:rtn:sym:int4 ...] [--out f.json]

A config is bits:method:sym|asym:lm_head[:accuracy_level] (method rtn | search | act | gptq; level 4 by default). Each one is written next to the fp32
graph under a temporary name, evaluated with clova_edge.quant.report.quality_report, and removed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnx

from clova_edge.quant.apply import rewrite_model
from clova_edge.quant.report import (activation_hessians, activation_importance, evaluation_ids, format_table,
                                     quality_report, reference_logprobs)
from clova_edge.runtime.errors import ClovaEdgeError
from clova_edge.runtime.manifest import load_manifest

DEFAULT_CONFIGS = ("4:rtn:sym:int4", "4:search:sym:int4", "4:act:sym:int4", "4:search:asym:int4",
                   "4:act:asym:int4", "4:act:sym:int8", "4:act:sym:fp32", "8:rtn:sym:int8", "8:act:sym:int8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS))
    ap.add_argument("--int8-route", default="nbits")
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    manifest = load_manifest(args.model_dir)
    src = args.model_dir / manifest.variants["fp32"].file
    model = onnx.load(str(src), load_external_data=True)
    try:
        ids = evaluation_ids(manifest)
    except ClovaEdgeError:   # runtime tokenizer cannot read it: measure with the reference implementation
        import numpy as np
        from tokenizers import Tokenizer

        from clova_edge.quant.report import evaluation_text
        tok = Tokenizer.from_file(str(args.model_dir / manifest.tokenizer_file))
        ids = np.array(tok.encode(evaluation_text(), add_special_tokens=False).ids, dtype=np.int64)
    importance = activation_importance(manifest, ids)
    hessians = activation_hessians(manifest, ids) if any(":gptq:" in c for c in args.configs) else None
    reference = reference_logprobs(manifest, ids)     # one fp32 run shared by every config (float16)
    rows, table = [], {}
    for cfg in args.configs:
        bits, method, sym, lm_head, *acc = cfg.split(":")
        t = time.perf_counter()
        q, stats = rewrite_model(model, int(bits), block_size=args.block_size, symmetric=sym == "sym",
                                 lm_head=lm_head, method=method, int8_route=args.int8_route,
                                 importance=importance, hessians=hessians, accuracy_level=int(acc[0]) if acc else 4)
        secs = time.perf_counter() - t
        path = args.model_dir / f".bench-{cfg.replace(':', '-')}.onnx"
        data = path.with_name(path.name + ".data")
        data.unlink(missing_ok=True)             # onnx appends to an existing external data file
        try:
            onnx.save_model(q, str(path), save_as_external_data=True, location=data.name, size_threshold=1024)
            size = path.stat().st_size + data.stat().st_size
            quality = quality_report(manifest, ids, quantized_file=path, reference=reference)
        finally:
            path.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
        row = {"config": cfg, "quant_seconds": round(secs, 1), "size_bytes": size, **stats,
               "reference_ppl": quality["reference"]["perplexity"], **quality["quantized"],
               "tokens": quality["tokens"]}
        rows.append(row)
        table[cfg] = quality["quantized"]
        print(json.dumps(row), flush=True)
    print(format_table({"fp32": quality["reference"], **table}))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
