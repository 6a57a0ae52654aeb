"""Quality of a quantized variant against fp32 on held-out evaluation texts (quant/data/eval/*.txt).

The texts (prose, dialogue, code, technical writing, Korean; see quant/data/eval/README.md) were written for
this project and are read by nothing else in quant/: calibration and recipe choices use
quant/data/calib*.txt (quant/calibrate.py). Each text is cut into independent windows (512 tokens), each
run as one prefill with logits for every position; position t predicts token t+1. Per text and over all
texts: perplexity of each model, its relative delta, mean KL(fp32 || quantized) of the next-token
distributions (nats) and top-1 agreement.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from clova_edge.runtime.manifest import Manifest
from clova_edge.runtime.model import OnnxModel

from .calibrate import WINDOW, windows

EVAL_TEXTS = ("prose", "dialogue", "code", "technical", "korean")
# Ids per text at most (4 windows): keeps the texts' weights comparable in "all" (SmolLM2's byte-level
# fallback turns the Korean text into 7.8K tokens, the English ones into 1.8-2.8K) and the report a few
# minutes long.
TOKENS_PER_TEXT = 2048


def evaluation_texts() -> dict[str, str]:
    data = resources.files("clova_edge.quant").joinpath("data/eval")
    return {name: data.joinpath(f"{name}.txt").read_text(encoding="utf-8") for name in EVAL_TEXTS}


def evaluation_ids(manifest: Manifest, limit: int | None = TOKENS_PER_TEXT) -> dict[str, np.ndarray]:
    """{text name: ids} with the model's own tokenizer (no special tokens); `limit` ids per text at most."""
    from clova_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(manifest.folder / manifest.tokenizer_file)
    out = {}
    for name, text in evaluation_texts().items():
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        out[name] = ids[:limit] if limit else ids
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logprobs(model: OnnxModel, window: np.ndarray) -> np.ndarray:
    out = model.session.run(["logits"], model.window_feeds(window))[0]
    return _log_softmax(out[0, :-1].astype(np.float32))          # [S-1, V]: predictions of tokens 1..S-1


def reference_logprobs(manifest: Manifest, ids: dict[str, np.ndarray], *, threads: int = 2,
                       window: int = WINDOW) -> dict[str, list[np.ndarray]]:
    """Per text, per window, the fp32 log-probabilities (float16, [S-1, V]): compare many variants to one
    run."""
    ref = OnnxModel(manifest, manifest.variants["fp32"], threads=threads)
    return {name: [_logprobs(ref, w).astype(np.float16) for w in windows(x, window)]
            for name, x in ids.items()}


def _compare(ref: list[np.ndarray], model: OnnxModel, ids: np.ndarray, window: int) -> dict[str, float]:
    nll_r = nll_q = kl = 0.0
    agree = n = 0
    for lr, w in zip(ref, windows(ids, window)):
        lr = lr.astype(np.float32)
        lq = _logprobs(model, w)
        tgt, rows = w[1:], np.arange(len(w) - 1)
        nll_r -= float(lr[rows, tgt].sum(dtype=np.float64))
        nll_q -= float(lq[rows, tgt].sum(dtype=np.float64))
        kl += float((np.exp(lr) * (lr - lq)).sum(dtype=np.float64))
        agree += int((lr.argmax(-1) == lq.argmax(-1)).sum())
        n += len(tgt)
    return {"tokens": n, "nll_ref": nll_r, "nll": nll_q, "kl": kl, "agree": agree}


def _figures(s: dict[str, float]) -> dict[str, Any]:
    n = max(s["tokens"], 1)
    ppl_r, ppl_q = float(np.exp(s["nll_ref"] / n)), float(np.exp(s["nll"] / n))
    return {"tokens": int(s["tokens"]), "reference_perplexity": ppl_r, "perplexity": ppl_q,
            "ppl_delta_pct": 100.0 * (ppl_q / ppl_r - 1.0), "mean_kl": s["kl"] / n,
            "top1_agreement": s["agree"] / n}


def quality_report(manifest: Manifest, ids: dict[str, np.ndarray], *, quantized_file: Path,
                   reference: dict[str, list[np.ndarray]] | None = None, threads: int = 2,
                   window: int = WINDOW) -> dict[str, Any]:
    """Compare the fp32 variant (or precomputed `reference` log-probs) with the graph `quantized_file`, per
    text and over all of them ("all": every token of every text counted once)."""
    reference = reference if reference is not None else reference_logprobs(manifest, ids, threads=threads,
                                                                            window=window)
    model = OnnxModel.from_graph(manifest, quantized_file, threads=threads)
    per = {name: _compare(reference[name], model, x, window) for name, x in ids.items()}
    total = {k: sum(p[k] for p in per.values()) for k in ("tokens", "nll_ref", "nll", "kl", "agree")}
    return {"window": window, "texts": {name: _figures(p) for name, p in per.items()}, "all": _figures(total)}


def format_table(quality: dict[str, Any], name: str = "quantized") -> str:
    """One quality_report as a markdown table, a row per text and one for all of them."""
    lines = [f"| {name}: text | tokens | fp32 ppl | ppl | Δppl | mean KL (nats) | top-1 agree |",
             "|---|---|---|---|---|---|---|"]
    for text, r in [*quality["texts"].items(), ("all", quality["all"])]:
        lines.append(f"| {text} | {r['tokens']} | {r['reference_perplexity']:.3f} | {r['perplexity']:.3f} | "
                     f"{r['ppl_delta_pct']:+.2f}% | {r['mean_kl']:.4f} | {100 * r['top1_agreement']:.1f}% |")
    return "\n".join(lines)
