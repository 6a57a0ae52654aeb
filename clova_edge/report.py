"""`clova-edge info`: a manifest in human form."""

from __future__ import annotations

from clova_edge.runtime.manifest import KV_DTYPE_BYTES, Manifest


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def kv_cache_bytes(m: Manifest, tokens: int, bytes_per_value: int = 4) -> int:
    c = m.config
    return 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * tokens * bytes_per_value


def describe(m: Manifest) -> str:
    c, src = m.config, m.raw.get("source", {})
    kv = kv_cache_bytes(m, c.context_length)   # fp32; each variant below uses its own cache dtype
    lines = [f"model      {src.get('id', '?')} @ {str(src.get('revision') or '-')[:12]} ({src.get('architecture', '?')})",
             f"folder     {m.folder}",
             f"shape      {c.num_hidden_layers} layers, hidden {c.hidden_size}, heads {c.num_attention_heads}/"
             f"{c.num_key_value_heads} kv x {c.head_dim}, vocab {c.vocab_size}",
             f"context    {c.context_length} tokens (KV cache at full context: {_mb(kv)} fp32)",
             f"stops      ids {list(m.stop_token_ids)} strings {list(m.stop_strings)}",
             f"defaults   {m.generation or '{}'}",
             "variants"]
    for name, v in m.variants.items():
        q = v.quantization
        desc = "fp32" if not q else f"{q.get('scheme', '?')} {q.get('bits', '?')}-bit block {q.get('block_size', '-')}"
        v_kv = kv_cache_bytes(m, c.context_length, KV_DTYPE_BYTES.get(v.kv_dtype, 4))
        lines.append(f"  {name:<6} {v.file:<22} {_mb(v.size_bytes):>10}  {desc}, {v.kv_dtype} KV cache; memory at "
                     f"{c.context_length} tokens ~ {_mb(v.size_bytes + v_kv)}")
        quality = q.get("quality") if q else None
        if quality:
            lines.append("         quality: " + ", ".join(f"{k} {val:.4g}" if isinstance(val, float) else f"{k} {val}"
                                                      for k, val in quality.items() if not isinstance(val, (dict, list))))
    ver = m.raw.get("verification")
    if ver:
        lines.append("verified   " + ", ".join(f"{k} {v}" for k, v in ver.items() if not isinstance(v, (dict, list))))
    return "\n".join(lines)
