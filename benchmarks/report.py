"""Render benchmark results: bench.json (everything), bench.md (the tables the README shows), bench.png
(chart).

Pure functions from the results dict to text/figures (the quality side: report_quality.py); `write_all`
writes them (bench-quality.png too) atomically enough for a run that rewrites them after every row (write
to a temporary name, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import constrained, first_turn
from . import report_quality as RQ
from . import report_serving as RS

MB = 1e6


def _fmt(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _get(d: dict, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def bandwidth(rec: dict[str, Any], key: str, model: dict[str, int]) -> float | None:
    """GB/s a decode achieved: (weights + KV cache read per token) x tok/s."""
    r = rec.get("result", {})
    tok_s, ctx = _get(r, key, "tok_s"), _get(r, key, "context")
    if tok_s is None:
        return None
    kv = 2 * model["layers"] * model["kv_heads"] * model["head_dim"] * rec["kv_elem_bytes"] * ctx
    return (rec["weight_bytes_per_token"] + kv) * tok_s / 1e9


def _load(r: dict) -> str:
    a, b = r.get("load_avg_start"), r.get("load_avg_end")
    return "-" if not a else f"{a[0]:.1f}/{b[0]:.1f}" if b else f"{a[0]:.1f}"


def _spread(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['low']:.{digits}f}-{s['high']:.{digits}f})"


def speed_table(results: dict[str, Any], name: str) -> str:
    entry = results["models"][name]
    shape = MODEL_SHAPES.get(name, MODEL_SHAPES["full"])
    bw2 = results.get("bandwidth_gbs", {}).get("2")
    lengths = [str(n) for n in results["spec"]["prompt_lengths"]]
    head = (["runtime", "disk MB", "load s"] + [f"TTFT {n} s" for n in lengths]
            + ["decode tok/s (short)", f"decode tok/s @{results['spec']['long_context']}", "peak RSS MB",
               "decode GB/s short / long (% of probe)", "load avg start/end"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rec in entry["rows"].items():
        r = rec.get("result", {})
        if "error" in r:
            lines.append(f"| {label} | " + " | ".join(["failed"] + ["-"] * (len(head) - 2)) + " |")
            continue
        ds, dl = r.get("decode_short", {}), r.get("decode_long", {})
        bws = [bandwidth(rec, k, shape) for k in ("decode_short", "decode_long")]
        bw_txt = " / ".join("-" if bw is None else f"{bw:.1f}" + (f" ({100 * bw / bw2:.0f}%)" if bw2 else "")
                            for bw in bws)
        cells = [label, _fmt(rec["disk_bytes"] / MB, 0), _fmt(r.get("load_s"), 2)]
        cells += [_spread(_get(r, "ttft_s", n)) for n in lengths]
        cells += [(f"{_fmt(ds.get('tok_s'))} ({_fmt(ds.get('tok_s_low'))}-{_fmt(ds.get('tok_s_high'))})"
                   if ds else "-"),
                  (f"{_fmt(dl.get('tok_s'))} ({_fmt(dl.get('tok_s_low'))}-{_fmt(dl.get('tok_s_high'))})"
                   if dl else "-"),
                  _fmt(r.get("peak_rss_mb"), 0), bw_txt, _load(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(results: dict[str, Any], name: str) -> str:
    lines = ["| runtime | decode tok/s 1 thread | 2 threads | x | TTFT 512 s 1 thread | 2 threads | x |",
             "|---|---|---|---|---|---|---|"]
    for label, rec in results["models"][name]["rows"].items():
        one, two = rec.get("one_thread"), rec.get("result", {})
        if not one or "error" in one or "error" in two:
            continue
        d1, d2 = _get(one, "decode_short", "tok_s"), _get(two, "decode_short", "tok_s")
        t1, t2 = _get(one, "ttft_s", "512", "median"), _get(two, "ttft_s", "512", "median")
        lines.append(f"| {label} | {_fmt(d1)} | {_fmt(d2)} | {_fmt(d2 / d1 if d1 and d2 else None, 2)} | "
                     f"{_fmt(t1, 2)} | {_fmt(t2, 2)} | {_fmt(t1 / t2 if t1 and t2 else None, 2)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def llama_bench_table(entry: dict[str, Any]) -> str:
    """llama.cpp's own llama-bench figures (pp = prompt tokens/s, tg = generated tokens/s, d = depth)."""
    lines = ["| GGUF | test | tokens/s (+- stddev) |", "|---|---|---|"]
    for item in entry.get("llama_bench", []):
        for run in item.get("runs", []):
            test = f"pp{run['n_prompt']}" if run.get("n_prompt") else f"tg{run['n_gen']}"
            test += f" @ d{run['n_depth']}" if run.get("n_depth") else ""
            lines.append(f"| {item['label']} | {test} | {run['avg_ts']:.1f} (+- {run['stddev_ts']:.1f}) |")
    return "\n".join(lines) if len(lines) > 2 else ""


MODEL_SHAPES = {"full": {"layers": 24, "kv_heads": 8, "head_dim": 128},
                "smollm2": {"layers": 30, "kv_heads": 3, "head_dim": 64},
                "smollm2-perm": {"layers": 30, "kv_heads": 3, "head_dim": 64},
                "tiny": {"layers": 2, "kv_heads": 2, "head_dim": 64}}


def markdown(results: dict[str, Any]) -> str:
    m, bw, spec = results.get("machine", {}), results.get("bandwidth_gbs", {}), results["spec"]
    out = [f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('memory_mib')} MiB; "
           "measured read bandwidth "
           f"{_fmt(bw.get('1'))} GB/s (1 thread), {_fmt(bw.get('2'))} GB/s (2 threads; "
           f"{results.get('bandwidth_probe', 'numpy')} probe). {spec['threads']} threads, "
           f"{spec['repetitions']} repetitions; cells are median (10th-90th percentile or min-max).", ""]
    for name in results.get("models", {}):
        if any("ttft_s" in r.get("result", {}) for r in results["models"][name]["rows"].values()):
            out += [f"### {name}: speed", "", speed_table(results, name), ""]
            out += constrained.markdown(name, results["models"][name])
            scaling = scaling_table(results, name)
            if scaling:
                out += [f"### {name}: thread scaling 1 -> 2", "", scaling, ""]
        out += first_turn.markdown(results, name)      # the first chat turn, prompt cache warm
        lb = llama_bench_table(results["models"][name])
        if lb:
            out += [f"### {name}: llama-bench (llama.cpp's own benchmark, same build and threads)", "",
                    lb, ""]
        quality = RQ.quality_table(results, name)
        if quality:
            note = RQ.GRID_NOTE.get(name, "")
            qspec = next(r["result"]["spec"] for r in results["models"][name]["rows"].values()
                         if "quality" in r.get("result", {}))     # the quality runs' own spec
            out += [f"### {name}: quality on the held-out texts of quant/data/eval/ (windows of "
                    f"{spec['perplexity_window']}; against {RQ.REFERENCE}){': ' + note if note else ''}", "",
                    "Answers = fp32: share of the agreement prompts whose greedy answer (repetition penalty "
                    f"{qspec.get('repetition_penalty', 1.0)}, up to "
                    f"{qspec.get('agreement_tokens', 32)} tokens) equals "
                    "the fp32 model's.", "", quality, ""]
    goals = RQ.targets_table(results)
    if goals:
        out += ["### Targets of the INT4 quality issue (rows of this run)", "", goals, ""]
    out += RS.markdown(results.get("serving", {}))
    if results.get("install_seconds"):
        out += ["Install times (s): "
                + ", ".join(f"{k} {v:.0f}" for k, v in results["install_seconds"].items()), ""]
    return "\n".join(out)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "full" if "full" in results.get("models", {}) else next(iter(results.get("models", {})), None)
    rows = {k: v["result"] for k, v in (results["models"][name]["rows"].items() if name else [])
            if "decode_short" in v.get("result", {})}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * max(len(rows), 2) + 1.5))
    labels = list(rows)
    y = range(len(labels))
    short = [_get(r, "decode_short", "tok_s") or 0 for r in rows.values()]
    long = [_get(r, "decode_long", "tok_s") or 0 for r in rows.values()]
    ax1.barh([i + 0.2 for i in y], short, height=0.4, label="short context")
    ax1.barh([i - 0.2 for i in y], long, height=0.4, label=f"@{results['spec']['long_context']} tokens")
    ax1.set_yticks(list(y), labels)
    ax1.set_xlabel("decode tokens/s (higher is better)")
    ax1.legend(loc="lower right")
    n = ("512" if "512" in {str(x) for x in results["spec"]["prompt_lengths"]}
         else str(results["spec"]["prompt_lengths"][0]))
    ax2.barh(list(y), [_get(r, "ttft_s", n, "median") or 0 for r in rows.values()], color="tab:green")
    ax2.set_yticks(list(y), [""] * len(labels))
    ax2.set_xlabel(f"time to first token, {n}-token prompt, s (lower is better)")
    fig.suptitle(f"{name}: {results['spec']['threads']} threads, {results.get('machine', {}).get('cpu', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write_all(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for fname, write in (("bench.json", lambda p: p.write_text(json.dumps(results, indent=1))),
                         ("bench.md", lambda p: p.write_text(markdown(results))),
                         ("bench.png", lambda p: chart(results, p)),
                         ("bench-quality.png", lambda p: RQ.quality_speed_chart(results, p))):
        tmp = out / f".{fname}.tmp"
        write(tmp)
        if tmp.exists():
            tmp.replace(out / fname)
