"""Render the quality side of the benchmark: a table per evaluation model, the quality-vs-speed chart, and the
targets of the INT4 quality issue computed from rows of one run.

Reference of every delta, KL, top-1 and answer agreement: the "clova-edge fp32" row of the same model (the
exported fp32 graph, equal to PyTorch fp32 within 2e-4 on the logits; its PyTorch row is in the table to
show it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .quality import agreement

REFERENCE = "clova-edge fp32"
MB = 1e6
GRID_NOTE = {"smollm2": "weights on a Q4_1 grid (blocks of 32): favours formats sharing it (Q4_1, Q4_K)",
             "smollm2-perm": "the same model with channels permuted off the grid (export/offgrid.py)"}


def _rows(results: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in results["models"][name]["rows"].items() if "quality" in v.get("result", {})}


def row_quality(results: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """{label: {ppl, delta_pct per text and 'all', mean_kl, top1, agreement, disk_mb}} against the
    reference."""
    rows = _rows(results, name)
    ref = rows.get(REFERENCE, {}).get("result", {})
    ref_q, ref_answers = ref.get("quality", {}), ref.get("answers")
    out = {}
    for label, rec in rows.items():
        q = rec["result"]["quality"]
        deltas = {t: 100 * (q[t]["perplexity"] / ref_q[t]["perplexity"] - 1) for t in q if t in ref_q}
        answers = rec["result"].get("answers")
        out[label] = {"ppl": q["all"]["perplexity"], "delta_pct": deltas, "mean_kl": q["all"].get("mean_kl"),
                      "top1": q["all"].get("top1_agreement"), "disk_mb": rec["disk_bytes"] / MB,
                      "agreement": agreement(answers, ref_answers) if answers and ref_answers else None}
    return out


def _pct(x: float | None, digits: int = 2, sign: bool = True) -> str:
    return "-" if x is None else (f"{x:+.{digits}f}%" if sign else f"{x:.{digits}f}%")


def quality_table(results: dict[str, Any], name: str) -> str:
    figures = row_quality(results, name)
    if not figures:
        return ""
    texts = [t for t in next(iter(figures.values()))["delta_pct"] if t != "all"]
    head = ["runtime", "disk MB", "perplexity", "Δppl all"] + [f"Δ {t}" for t in texts] + \
        ["mean KL", "top-1", "answers = fp32"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, f in figures.items():
        d = f["delta_pct"]
        cells = ([label, f"{f['disk_mb']:.0f}", f"{f['ppl']:.3f}", _pct(d.get("all"))]
                 + [_pct(d.get(t)) for t in texts])
        cells += ["-" if f["mean_kl"] is None else f"{f['mean_kl']:.4f}",
                  "-" if f["top1"] is None else f"{100 * f['top1']:.1f}%",
                  "-" if f["agreement"] is None else f"{100 * f['agreement']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _decode(results: dict[str, Any], label: str, key: str) -> float | None:
    r = results.get("models", {}).get("full", {}).get("rows", {}).get(label, {}).get("result", {})
    return (r.get(key) or {}).get("tok_s")


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the INT4 quality issue, from this run's rows."""
    out: list[tuple[str, str, bool | None]] = []
    for name in [n for n in results.get("models", {}) if n in GRID_NOTE]:
        f = row_quality(results, name)
        q4, i4, q8, i8 = (f.get(k, {}) for k in ("llama.cpp Q4_K_M", "clova-edge int4", "llama.cpp Q8_0",
                                                  "clova-edge int8"))
        if q4 and i4:
            a, b = i4["delta_pct"].get("all"), q4["delta_pct"].get("all")
            out.append((f"{name}: INT4 Δppl <= Q4_K_M's", f"{a:+.2f}% vs {b:+.2f}%", a <= b))
            if i4["agreement"] is not None and q4["agreement"] is not None:
                out.append((f"{name}: INT4 answer agreement >= Q4_K_M's",
                            f"{100 * i4['agreement']:.0f}% vs {100 * q4['agreement']:.0f}%",
                            i4["agreement"] >= q4["agreement"]))
        if q8 and i8:
            a, b = i8["delta_pct"].get("all"), q8["delta_pct"].get("all")
            out.append((f"{name}: INT8 Δppl <= Q8_0's", f"{a:+.2f}% vs {b:+.2f}%", a <= b))
    rows = results.get("models", {}).get("full", {}).get("rows", {})
    if "clova-edge int4" in rows and "llama.cpp Q4_K_M" in rows:
        a, b = rows["clova-edge int4"]["disk_bytes"] / MB, rows["llama.cpp Q4_K_M"]["disk_bytes"] / MB
        out.append(("full: INT4 disk <= Q4_K_M's", f"{a:.0f} vs {b:.0f} MB", a <= b))
        for key, what in (("decode_short", "short"), ("decode_long", "@3500")):
            a, b = _decode(results, "clova-edge int4", key), _decode(results, "llama.cpp Q4_K_M", key)
            if a and b:
                out.append((f"full: INT4 decode {what} >= 1.3x Q4_K_M", f"{a:.1f} / {b:.1f} = {a / b:.2f}x",
                            a / b >= 1.3))
    return out


def targets_table(results: dict[str, Any]) -> str:
    rows = targets(results)
    if not rows:
        return ""
    lines = ["| target | measured (same run) | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in rows]
    return "\n".join(lines)


def quality_speed_chart(results: dict[str, Any], path: Path, name: str = "smollm2-perm") -> bool:
    """Decode tok/s (full-size model) against Δppl (`name`), one point per runtime and format, marker area by
    disk size. Returns False (and writes nothing) when the run has no such pairs."""
    if name not in results.get("models", {}):
        return False
    f = row_quality(results, name)
    pts = [(label, _decode(results, label, "decode_short"), v["delta_pct"].get("all"),
            results["models"]["full"]["rows"][label]["disk_bytes"] / MB)
           for label, v in f.items() if label != REFERENCE and _decode(results, label, "decode_short")]
    if not pts:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, tok_s, delta, disk in pts:
        ax.scatter(delta, tok_s, s=disk / 4, alpha=0.6,
                   color="tab:red" if label.startswith("clova") else "tab:blue")
        ax.annotate(label, (delta, tok_s), fontsize=8, xytext=(5, 3), textcoords="offset points")
    ax.set_xlabel(f"perplexity increase over fp32, {name}, held-out texts (%; lower is better)")
    ax.set_ylabel("decode tokens/s, full-size HyperCLOVAX shape, short context (higher is better)")
    ax.set_title("quality vs speed (marker area ~ disk size; red: clova-edge)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return True
