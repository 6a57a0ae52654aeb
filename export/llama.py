"""A small Llama written for export: explicit KV buffers in, onnxruntime's fused CPU ops out.

Eager mode is a plain PyTorch reference of the same maths. While `torch.onnx.export` traces it
(`torch.onnx.is_in_onnx_export()`), the attention, the norms and the rotary embedding are emitted as
onnxruntime contrib ops through `torch.onnx.ops.symbolic(_multi_out)`:
  com.microsoft GroupQueryAttention (packed QKV, do_rotary=1, cos/sin caches, shared past/present buffer),
  com.microsoft SkipSimplifiedLayerNormalization (residual add + RMSNorm in one op),
  RMSNormalization (opset 23) for the first norm of the first layer.
The linear weights are stored transposed ([in, out]) so that each projection is one MatMul against an
initializer (what onnxruntime's MatMulNBits quantizer looks for); q/k/v and gate/up are fused. The vocabulary
projection runs only on the rows picked by `logits_index`, as Gemm(transB=1) against the embedding table
itself, so a tied table is stored once.

It does not: train, handle rope scaling, biases, sliding windows or right-padded batches in eager mode.
The I/O contract (names, shapes) is the one in clova_edge.runtime.manifest.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clova_edge.runtime.manifest import ModelConfig


def rotary_caches(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of outer(position, theta^(-2i/D)): [context_length, head_dim / 2] each (Llama rotate_half)."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = torch.outer(torch.arange(config.context_length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if torch.onnx.is_in_onnx_export():
        return torch.onnx.ops.symbolic(
            "RMSNormalization", [x, weight], {"axis": -1, "epsilon": float(eps)},
            dtype=x.dtype, shape=x.shape, version=23)
    var = x.pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * weight


def _skip_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual)."""
    if torch.onnx.is_in_onnx_export():
        stat_shape = [*x.shape[:-1], 1]
        out, _mean, _inv_std, total = torch.onnx.ops.symbolic_multi_out(
            "com.microsoft::SkipSimplifiedLayerNormalization", [x, residual, weight],
            {"epsilon": float(eps)}, dtypes=[x.dtype] * 4,
            shapes=[x.shape, stat_shape, stat_shape, x.shape], version=1)
        return out, total
    total = x + residual
    return _rms_norm(total, weight, eps), total


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama rotate_half RoPE. x [B, N, S, D]; cos, sin [S, D/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    """One decoder layer: attention then gated MLP, weights as [in, out]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        qkv_out = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
        self.input_layernorm = nn.Parameter(torch.ones(c.hidden_size))
        self.qkv_proj = nn.Parameter(torch.empty(c.hidden_size, qkv_out))
        self.o_proj = nn.Parameter(torch.empty(c.num_attention_heads * c.head_dim, c.hidden_size))
        self.post_attention_layernorm = nn.Parameter(torch.ones(c.hidden_size))
        self.gate_up_proj = nn.Parameter(torch.empty(c.hidden_size, 2 * c.intermediate_size))
        self.down_proj = nn.Parameter(torch.empty(c.intermediate_size, c.hidden_size))


class ExportLlama(nn.Module):
    """forward(input_ids, seqlens_k, total_sequence_length, logits_index, *past) -> (logits, *present).

    past = (k0, v0, k1, v1, ...), each [B, num_key_value_heads, M, head_dim]; present has the same layout.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed_tokens = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = nn.Parameter(torch.ones(c.hidden_size))
        untied = not c.tie_word_embeddings
        self.lm_head = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size)) if untied else None
        cos, sin = rotary_caches(c)
        self.register_buffer("cos_cache", cos)
        self.register_buffer("sin_cache", sin)

    def forward(self, input_ids: torch.Tensor, seqlens_k: torch.Tensor, total_sequence_length: torch.Tensor,
                logits_index: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        eps = c.rms_norm_eps
        h = F.embedding(input_ids, self.embed_tokens)                      # [B, S, H]
        presents: list[torch.Tensor] = []
        residual = h
        x = _rms_norm(h, self.layers[0].input_layernorm, eps)
        for i, layer in enumerate(self.layers):
            if i > 0:
                x, residual = _skip_rms_norm(x, residual, layer.input_layernorm, eps)
            qkv = torch.matmul(x, layer.qkv_proj)                          # [B, S, (NH + 2 KVH) D]
            attn, k, v = self._attention(qkv, past[2 * i], past[2 * i + 1], seqlens_k, total_sequence_length)
            presents += [k, v]
            x = torch.matmul(attn, layer.o_proj)                           # [B, S, H]
            x, residual = _skip_rms_norm(x, residual, layer.post_attention_layernorm, eps)
            gate, up = torch.matmul(x, layer.gate_up_proj).chunk(2, dim=-1)  # [B, S, I] each
            x = torch.matmul(F.silu(gate) * up, layer.down_proj)
        x, _ = _skip_rms_norm(x, residual, self.norm, eps)
        rows = torch.index_select(x, 1, logits_index)                      # [B, L, H]
        table = self.embed_tokens if self.lm_head is None else self.lm_head
        # 2-D input: exported as Gemm(transB=1) reading the [V, H] table directly (no transposed copy).
        logits = F.linear(rows.reshape(-1, c.hidden_size), table)          # [B * L, V]
        return (logits.reshape(rows.shape[0], rows.shape[1], c.vocab_size), *presents)

    def _attention(self, qkv: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
                   seqlens_k: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        nh, kvh, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        if torch.onnx.is_in_onnx_export():
            b, s = qkv.shape[0], qkv.shape[1]
            kv_shape = past_k.shape
            return torch.onnx.ops.symbolic_multi_out(
                "com.microsoft::GroupQueryAttention",
                [qkv, None, None, past_k, past_v, seqlens_k, total, self.cos_cache, self.sin_cache],
                {"num_heads": nh, "kv_num_heads": kvh, "do_rotary": 1, "rotary_interleaved": 0,
                 "scale": 1.0 / math.sqrt(d)},
                dtypes=[qkv.dtype, past_k.dtype, past_v.dtype],
                shapes=[[b, s, nh * d], kv_shape, kv_shape], version=1)
        return self._attention_eager(qkv, past_k, past_v, int(total))

    def _attention_eager(self, qkv: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
                         total: int) -> tuple[torch.Tensor, ...]:
        """Reference: all rows of the batch share one past length (total - S)."""
        c = self.config
        nh, kvh, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        b, s, _ = qkv.shape
        p = total - s
        q, k, v = qkv.split([nh * d, kvh * d, kvh * d], dim=-1)
        q, k, v = (t.reshape(b, s, -1, d).transpose(1, 2) for t in (q, k, v))  # [B, N, S, D]
        cos, sin = self.cos_cache[p:total], self.sin_cache[p:total]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        cap = max(past_k.shape[2], total)
        present_k = past_k.new_zeros(b, kvh, cap, d)
        present_v = past_v.new_zeros(b, kvh, cap, d)
        present_k[:, :, :p], present_v[:, :, :p] = past_k[:, :, :p], past_v[:, :, :p]
        present_k[:, :, p:total], present_v[:, :, p:total] = k, v
        keys = present_k[:, :, :total].repeat_interleave(nh // kvh, dim=1)      # [B, NH, T, D]
        values = present_v[:, :, :total].repeat_interleave(nh // kvh, dim=1)
        scores = q @ keys.transpose(-1, -2) / math.sqrt(d)                        # [B, NH, S, T]
        visible = torch.arange(total)[None, :] <= torch.arange(p, total)[:, None]  # [S, T] causal
        scores = scores.masked_fill(~visible, float("-inf"))
        out = scores.softmax(-1) @ values                                           # [B, NH, S, D]
        return out.transpose(1, 2).reshape(b, s, nh * d), present_k, present_v


def from_hf_state_dict(config: ModelConfig, state: dict[str, torch.Tensor]) -> ExportLlama:
    """Build an ExportLlama (fp32) from a Hugging Face LlamaForCausalLM state dict."""
    model = ExportLlama(config)

    def w(name: str) -> torch.Tensor:
        return state[name].detach().float()

    with torch.no_grad():
        model.embed_tokens.copy_(w("model.embed_tokens.weight"))
        model.norm.copy_(w("model.norm.weight"))
        if model.lm_head is not None:
            model.lm_head.copy_(w("lm_head.weight"))
        for i, layer in enumerate(model.layers):
            p = f"model.layers.{i}."
            attn, mlp = p + "self_attn.", p + "mlp."
            layer.input_layernorm.copy_(w(p + "input_layernorm.weight"))
            layer.post_attention_layernorm.copy_(w(p + "post_attention_layernorm.weight"))
            layer.qkv_proj.copy_(torch.cat([w(attn + f"{n}_proj.weight") for n in "qkv"]).t())
            layer.o_proj.copy_(w(attn + "o_proj.weight").t())
            layer.gate_up_proj.copy_(torch.cat([w(mlp + "gate_proj.weight"), w(mlp + "up_proj.weight")]).t())
            layer.down_proj.copy_(w(mlp + "down_proj.weight").t())
    return model.eval()
