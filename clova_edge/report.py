"""`clova-edge info`: a manifest in human form — the folder, the model's shape, each variant with its size,
memory and quality figures, and what the export verified."""

from __future__ import annotations

from typing import Any

from clova_edge.runtime import manifest as mf
from clova_edge.runtime.manifest import KV_DTYPE_BYTES, Manifest


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def kv_cache_bytes(m: Manifest, tokens: int, kv_dtype: str = "float32") -> int:
    return mf.kv_cache_bytes(m.config, kv_dtype, tokens)


def _quality_figures(q: dict[str, Any]) -> dict[str, Any] | None:
    """The overall quality figures, whichever layout the quantizer wrote: {"all": ..., "texts": ...} (per
    held-out text) or the older {"tokens", "reference": {...}, "quantized": {...}}."""
    if isinstance(q.get("all"), dict):
        return q["all"]
    if isinstance(q.get("quantized"), dict):
        ref = (q.get("reference") or {}).get("perplexity")
        return {**q["quantized"], "tokens": q.get("tokens"), "reference_perplexity": ref}
    return None


def quality_line(q: dict[str, Any]) -> str | None:
    f = _quality_figures(q)
    if not f or "perplexity" not in f:
        return None
    ref = f.get("reference_perplexity")
    against = f" (fp32 {ref:.3f}, {f['ppl_delta_pct']:+.1f} %)" if ref else ""
    parts = [f"perplexity {f['perplexity']:.3f}{against}"]
    if "mean_kl" in f:
        parts.append(f"mean KL {f['mean_kl']:.3f} nats")
    if "top1_agreement" in f:
        parts.append(f"top-1 agreement {100 * f['top1_agreement']:.1f} %")
    where = f"{f.get('tokens', '?')} tokens" + (f", windows of {q['window']}" if q.get("window") else "")
    texts = q.get("texts")
    if isinstance(texts, dict) and texts:
        where += f", {len(texts)} texts"
    return ", ".join(parts) + f" ({where})"


def verification_line(name: str, v: dict[str, Any]) -> str:
    if "max_abs_diff" not in v:
        flat = (f"{k} {val}" for k, val in v.items() if not isinstance(val, (dict, list)))
        return f"{name}: " + ", ".join(flat)
    line = (f"{name} vs PyTorch: max |diff| {v['max_abs_diff']:.2e} "
            f"(relative {v.get('max_rel_diff', 0):.2e}, tolerance {v.get('tolerance_rel', '?')})")
    if "tokens_equal" in v:
        line += f", {v.get('steps', '?')} greedy steps " + ("equal" if v["tokens_equal"] else "DIFFER")
    return line


def describe(m: Manifest) -> str:
    c, src = m.config, m.raw.get("source", {})
    kv = kv_cache_bytes(m, c.context_length)   # fp32; each variant below uses its own cache dtype
    origin = src.get("id", "?") + (f" ({src['gguf_file']})" if src.get("gguf_file") else "")
    lines = [f"folder     {m.folder}",
             f"model      {src.get('architecture', '?')}, {src.get('parameters', 0) / 1e6:.1f}M parameters, "
             f"exported from {origin} @ {str(src.get('revision') or '-')[:12]}",
             f"shape      {c.num_hidden_layers} layers, hidden {c.hidden_size}, heads "
             f"{c.num_attention_heads}/{c.num_key_value_heads} kv x {c.head_dim}, vocab {c.vocab_size}",
             f"context    {c.context_length} tokens (KV cache at full context: {_mb(kv)} fp32)",
             f"stops      ids {list(m.stop_token_ids)} strings {list(m.stop_strings)}",
             f"defaults   {m.generation or '{}'}",
             "variants"]
    for name, v in m.variants.items():
        q = v.quantization
        desc = ("fp32" if not q else q["summary"] if q.get("summary") else
                f"{q.get('scheme', '?')} {q.get('bits', '?')}-bit block {q.get('block_size', '-')}")
        if q.get("recipe"):
            desc = f"recipe {q['recipe']}: {desc}"
        v_kv = kv_cache_bytes(m, c.context_length, v.kv_dtype if v.kv_dtype in KV_DTYPE_BYTES else "float32")
        kv_text = "" if "KV cache" in desc else f", {v.kv_dtype} KV cache"
        lines.append(f"  {name:<6} {v.file:<22} {_mb(v.size_bytes):>10}  {desc}{kv_text}; "
                     f"memory at {c.context_length} tokens ~ {_mb(v.size_bytes + v_kv)}")
        quality = quality_line(q["quality"]) if q and isinstance(q.get("quality"), dict) else None
        if quality:
            lines.append(f"         quality: {quality}")
    for name, ver in (m.raw.get("verification") or {}).items():
        if isinstance(ver, dict):
            lines.append(f"verified   {verification_line(name, ver)}")
    return "\n".join(lines)
