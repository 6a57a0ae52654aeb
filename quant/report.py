"""Quality of a quantized variant against fp32 on the shipped evaluation text (quant/data/eval.txt).

The graphs are run directly with onnxruntime following the I/O contract of runtime/manifest.py: the text is
cut into independent windows (512 tokens by default), each run as one prefill with logits for every position
(logits_index = arange(S)) and a KV buffer of exactly S slots. Per window, position t predicts token t+1.
Figures: perplexity of each model, its relative delta, mean KL(fp32 || quantized) of the next-token
distributions (nats), and top-1 agreement. Also here: per-input-channel activation energy E[x^2] of every
linear layer's input, the calibration statistic of the activation-aware method in quant/apply.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from clova_edge.runtime.manifest import (INPUT_IDS, LOGITS, LOGITS_INDEX, SEQLENS_K, TOTAL_SEQ_LEN, Manifest,
                                         past_names)

WINDOW = 512


def evaluation_text() -> str:
    return resources.files("clova_edge.quant").joinpath("data/eval.txt").read_text(encoding="utf-8")


def evaluation_ids(manifest: Manifest, limit: int | None = None) -> np.ndarray:
    """The evaluation text tokenized with the model's own tokenizer (no special tokens), int64."""
    from clova_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer.from_file(manifest.folder / manifest.tokenizer_file)
    ids = np.asarray(tok.encode(evaluation_text()), dtype=np.int64)
    return ids[:limit] if limit else ids


def make_session(path: Path, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, manifest: Manifest, window: np.ndarray) -> dict[str, np.ndarray]:
    cfg = manifest.config
    s = len(window)
    int8_cache = any(i.name.startswith("past_") and "int8" in i.type for i in sess.get_inputs())
    kv = np.zeros((1, cfg.num_key_value_heads, s, cfg.head_dim), np.int8 if int8_cache else np.float32)  # [B,KVH,S,D]
    feeds = {INPUT_IDS: window[None].astype(np.int64), SEQLENS_K: np.array([s - 1], np.int32),
             TOTAL_SEQ_LEN: np.array(s, np.int32), LOGITS_INDEX: np.arange(s, dtype=np.int64)}
    for k, v in past_names(cfg.num_hidden_layers):
        feeds[k], feeds[v] = kv, kv
    wanted = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in feeds.items() if k in wanted}


def windows(ids: np.ndarray, size: int = WINDOW) -> Iterator[np.ndarray]:
    for i in range(0, len(ids) - 1, size):
        w = ids[i:i + size]
        if len(w) >= 2:
            yield w


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logits(sess: ort.InferenceSession, manifest: Manifest, window: np.ndarray) -> np.ndarray:
    out = sess.run([LOGITS], _feeds(sess, manifest, window))[0]
    return out[0, :-1].astype(np.float32)          # [S-1, V]: predictions of tokens 1..S-1


def reference_logprobs(manifest: Manifest, ids: np.ndarray, *, reference_file: Path | None = None,
                       window: int = WINDOW, threads: int = 2) -> list[np.ndarray]:
    """Per-window fp32 log-probabilities (float16, [S-1, V] each), to compare many variants against one run."""
    ref = make_session(reference_file or manifest.folder / manifest.variants["fp32"].file, threads)
    return [_log_softmax(_logits(ref, manifest, w)).astype(np.float16) for w in windows(ids, window)]


def quality_report(manifest: Manifest, ids: np.ndarray, *, quantized_file: Path,
                   reference_file: Path | None = None, window: int = WINDOW, threads: int = 2,
                   reference: list[np.ndarray] | None = None) -> dict[str, Any]:
    """Compare the reference (fp32 variant by default, or precomputed `reference` log-probs) and a quantized
    graph on `ids`."""
    ref = None if reference is not None else make_session(
        reference_file or manifest.folder / manifest.variants["fp32"].file, threads)
    qs = make_session(quantized_file, threads)
    nll_r = nll_q = kl = 0.0
    agree = n = 0
    for i, w in enumerate(windows(ids, window)):
        lr = reference[i].astype(np.float32) if reference is not None else _log_softmax(_logits(ref, manifest, w))
        lq = _log_softmax(_logits(qs, manifest, w))
        tgt = w[1:]
        rows = np.arange(len(tgt))
        nll_r -= float(lr[rows, tgt].sum(dtype=np.float64))
        nll_q -= float(lq[rows, tgt].sum(dtype=np.float64))
        kl += float((np.exp(lr) * (lr - lq)).sum(dtype=np.float64))
        agree += int((lr.argmax(-1) == lq.argmax(-1)).sum())
        n += len(tgt)
    ppl_r, ppl_q = float(np.exp(nll_r / n)), float(np.exp(nll_q / n))
    return {"tokens": n, "window": window,
            "reference": {"perplexity": ppl_r},
            "quantized": {"perplexity": ppl_q, "ppl_delta_pct": 100.0 * (ppl_q / ppl_r - 1.0),
                          "mean_kl": kl / n, "top1_agreement": agree / n}}


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """{variant: {perplexity, ppl_delta_pct?, mean_kl?, top1_agreement?}} -> a markdown table."""
    head = "| variant | perplexity | Δppl | mean KL (nats) | top-1 agree |\n|---|---|---|---|---|"
    lines = [head]
    for name, r in rows.items():
        d = r.get("ppl_delta_pct")
        lines.append(f"| {name} | {r['perplexity']:.3f} | {'' if d is None else f'{d:+.2f}%'} | "
                     f"{'' if 'mean_kl' not in r else format(r['mean_kl'], '.4f')} | "
                     f"{'' if 'top1_agreement' not in r else format(100 * r['top1_agreement'], '.1f') + '%'} |")
    return "\n".join(lines)


def activation_importance(manifest: Manifest, ids: np.ndarray, *, window: int = WINDOW,
                          threads: int = 2, max_windows: int = 4) -> dict[str, np.ndarray]:
    """{activation tensor name: E[x_k^2] over tokens, [K]} for the input of every quantizable linear."""
    sums, count = _activation_sums(manifest, ids, lambda x: np.square(x.astype(np.float64)).sum(axis=0),
                                   window, threads, max_windows)
    return {a: (s / max(count, 1)).astype(np.float32) for a, s in sums.items()}


def activation_hessians(manifest: Manifest, ids: np.ndarray, *, window: int = WINDOW,
                        threads: int = 2, max_windows: int = 4) -> dict[str, np.ndarray]:
    """{activation tensor name: H = mean over tokens of x x^T, [K, K] float32}: what GPTQ (quant/gptq.py) weighs
    each layer's output error with. About 2 GB for HyperCLOVAX-0.5B (24 layers, K up to 4096)."""
    sums, count = _activation_sums(manifest, ids, lambda x: x.T @ x, window, threads, max_windows)  # float32 sums:
    # 2048 tokens lose nothing that matters to a damped inverse, and float64 would double the 2 GB
    return {a: (s / max(count, 1)).astype(np.float32) for a, s in sums.items()}


def _activation_sums(manifest: Manifest, ids: np.ndarray, stat, window: int, threads: int, max_windows: int):
    """Sum of stat(x [T, K] float32) over windows of the evaluation ids, for the input x of every quantizable linear.

    Runs the fp32 graph with those tensors added as outputs: a copy of the graph (weights stay in the
    original external data file) is written next to the model, run, and removed.
    """
    import onnx
    from onnx import helper

    from .apply import plan_graph

    src = manifest.folder / manifest.variants["fp32"].file
    model = onnx.load(str(src), load_external_data=False)
    acts = sorted({lin.act_input for lin in plan_graph(model.graph).linears})
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None)
                              for a in acts if a not in have)
    tmp = src.with_name(f".{src.stem}.calib.onnx")
    try:
        onnx.save_model(model, str(tmp))
        sess = make_session(tmp, threads)
        sums: dict[str, np.ndarray] = {}
        count = 0
        for i, w in enumerate(windows(ids, window)):
            if i >= max_windows:
                break
            outs = sess.run(acts, _feeds(sess, manifest, w))
            for a, x in zip(acts, outs):
                x = x.reshape(-1, x.shape[-1])
                sums[a] = sums.get(a, 0.0) + stat(x)
            count += len(w)
    finally:
        tmp.unlink(missing_ok=True)
    return sums, count
