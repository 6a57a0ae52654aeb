"""Prompt attention in float over the int8 KV cache: each int8 GroupQueryAttention becomes an If node.

Why: onnxruntime's CPU GroupQueryAttention over an int8 cache is tuned for decode; a prompt of 512 tokens
costs it ~4x what the float kernel needs (measured: 84 vs 22 ms per layer at 512 new tokens, 307 vs 94 ms
for 512 on top of 1,536), so on long prompts attention outweighed the weights. The If node takes, per layer:

- one new token per row (decode, batched decode): the int8 GroupQueryAttention as before, unchanged, whose
  present outputs are the past buffers (written in place);
- more than one (a prompt chunk): rotary on Q and K, K and V quantized to int8 with the cache's per-channel
  scales and dequantized again, the rows already in the cache dequantized, the float GroupQueryAttention
  over both, and the new int8 rows written into the cache buffer (a Concat of the rows before, the new rows
  and the rows after, so the buffer keeps its shape and bound identity).

The prompt branch computes what the int8 kernel computes (round half to even, clip to [-128, 127], attend
over dequantized keys and values), to float rounding: the two kernels sum in different orders, so a value
on an int8 rounding boundary may round the other way (benchmarks/studies/prompt_attention.py, which measured
the times above: 2-4 of 8 M cache bytes one level apart on one full-size layer, outputs within 7e-4;
tests/test_prefill_attention.py bounds it through a whole model). A prompt chunk assumes every row of the
batch has the same past length, which holds for clova-edge's prompts (one sequence per prefill).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clova_edge.runtime import manifest as mf

from .plan import attr

PREFIX = "prefill_attention."     # every name this rewrite adds starts with it
LAYOUT = "float-prompt-1"          # the manifest records it (quantization.prompt_attention)
_Q, _PK, _PV, _SL, _TOT, _COS, _SIN, _KS, _VS = 0, 3, 4, 5, 6, 7, 8, 12, 13   # GroupQueryAttention slots


def _constants(heads: int, kv_heads: int, head_dim: int) -> list[onnx.TensorProto]:
    c = {"one": np.array([1], np.int64), "zero": np.array([0], np.int64), "step": np.array(1, np.int64),
         "axis2": np.array([2], np.int64), "end": np.array([1 << 62], np.int64),
         "split": np.array([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], np.int64),
         "rows": np.array([0, -1, kv_heads, head_dim], np.int64),
         "scale_shape": np.array([1, kv_heads, 1, head_dim], np.int64),
         "lo": np.array(-128, np.float32), "hi": np.array(127, np.float32)}
    return [numpy_helper.from_array(v, PREFIX + k) for k, v in c.items()]


def _prompt_branch(gqa: onnx.NodeProto, p: str) -> onnx.GraphProto:
    """The float path for a chunk of S > 1 new tokens; `p` prefixes its names (unique per layer)."""
    heads, kv_heads = attr(gqa, "num_heads", None), attr(gqa, "kv_num_heads", None)
    i, c, n = gqa.input, (lambda k: PREFIX + k), helper.make_node
    nodes = [n("Shape", [i[_Q]], [p + "s"], start=1, end=2),                        # [S]
             n("Cast", [i[_TOT]], [p + "tot64"], to=TensorProto.INT64),
             n("Reshape", [p + "tot64", c("one")], [p + "tot1"]),
             n("Sub", [p + "tot1", p + "s"], [p + "past1"]),                          # [L] rows in the cache
             n("Squeeze", [p + "past1"], [p + "past"]), n("Squeeze", [p + "tot1"], [p + "tot"]),
             n("Range", [p + "past", p + "tot", c("step")], [p + "pos0"]),
             n("Unsqueeze", [p + "pos0", c("zero")], [p + "pos"]),                    # (1, S) positions
             n("Split", [i[_Q], c("split")], [p + "q", p + "k", p + "v"], axis=2),
             n("RotaryEmbedding", [p + "q", p + "pos", i[_COS], i[_SIN]], [p + "qr"], domain="com.microsoft",
               interleaved=attr(gqa, "rotary_interleaved", 0), num_heads=heads),
             n("RotaryEmbedding", [p + "k", p + "pos", i[_COS], i[_SIN]], [p + "kr"], domain="com.microsoft",
               interleaved=attr(gqa, "rotary_interleaved", 0), num_heads=kv_heads)]
    for x, new, past, scale in (("k", p + "kr", i[_PK], i[_KS]), ("v", p + "v", i[_PV], i[_VS])):
        q = p + x
        nodes += [n("Div", [new, scale], [q + ".div"]), n("Round", [q + ".div"], [q + ".round"]),
                  n("Clip", [q + ".round", c("lo"), c("hi")], [q + ".clip"]),
                  n("Cast", [q + ".clip"], [q + ".i8"], to=TensorProto.INT8),
                  n("Cast", [q + ".i8"], [q + ".f"], to=TensorProto.FLOAT),
                  n("Mul", [q + ".f", scale], [q + ".dq"]),                         # what the cache will hold
                  n("Reshape", [q + ".i8", c("rows")], [q + ".i8r"]),
                  n("Transpose", [q + ".i8r"], [q + ".rows"], perm=[0, 2, 1, 3]),     # (B, kv_heads, S, D)
                  n("Slice", [past, c("zero"), p + "past1", c("axis2")], [q + ".head"]),
                  n("Cast", [q + ".head"], [q + ".headf"], to=TensorProto.FLOAT),
                  n("Reshape", [scale, c("scale_shape")], [q + ".scale4"]),
                  n("Mul", [q + ".headf", q + ".scale4"], [q + ".pastf"]),
                  n("Add", [p + "past1", p + "s"], [q + ".end"]),
                  n("Slice", [past, q + ".end", c("end"), c("axis2")], [q + ".tail"]),
                  n("Concat", [q + ".head", q + ".rows", q + ".tail"], [q + ".present"], axis=2)]
    kw = {a.name: helper.get_attribute_value(a) for a in gqa.attribute
          if a.name in ("num_heads", "kv_num_heads", "scale", "softcap", "local_window_size")}
    nodes.append(n("GroupQueryAttention", [p + "qr", p + "k.dq", p + "v.dq", p + "k.pastf", p + "v.pastf",
                                           i[_SL], i[_TOT]], [p + "out", p + "fk", p + "fv"],
                   domain="com.microsoft", do_rotary=0, **kw))
    return helper.make_graph(nodes, p + "prompt", [], [
        helper.make_tensor_value_info(p + "out", TensorProto.FLOAT, None),
        helper.make_tensor_value_info(p + "k.present", TensorProto.INT8, None),
        helper.make_tensor_value_info(p + "v.present", TensorProto.INT8, None)])


def _decode_branch(gqa: onnx.NodeProto, p: str) -> onnx.GraphProto:
    node = onnx.NodeProto()
    node.CopyFrom(gqa)
    del node.output[:]
    node.output.extend([p + "dec.out", p + "dec.k", p + "dec.v"])
    return helper.make_graph([node], p + "decode", [], [
        helper.make_tensor_value_info(p + "dec.out", TensorProto.FLOAT, None),
        helper.make_tensor_value_info(p + "dec.k", TensorProto.INT8, None),
        helper.make_tensor_value_info(p + "dec.v", TensorProto.INT8, None)])


def is_int8_gqa(node: onnx.NodeProto) -> bool:
    return node.op_type == "GroupQueryAttention" and attr(node, "kv_cache_bit_width", 0) == 8


def rewrite_prefill_attention(model: onnx.ModelProto) -> int:
    """Wrap every int8-cache GroupQueryAttention of `model` in the If described above; returns how many.
    A graph already rewritten (or without an int8 cache) is left as it is."""
    g = model.graph
    targets = [k for k, node in enumerate(g.node) if is_int8_gqa(node)]
    if not targets or any(i.name.startswith(PREFIX) for i in g.initializer):
        return 0
    first = g.node[targets[0]]
    g.initializer.extend(_constants(attr(first, "num_heads", None), attr(first, "kv_num_heads", None),
                                    _head_dim(g, first.input[_PK])))
    cond = [helper.make_node("Shape", [mf.INPUT_IDS], [PREFIX + "new_tokens"], start=1, end=2),
            helper.make_node("Greater", [PREFIX + "new_tokens", PREFIX + "one"], [PREFIX + "prompt1"]),
            helper.make_node("Squeeze", [PREFIX + "prompt1"], [PREFIX + "prompt"])]
    nodes = list(g.node)
    for k in targets:
        gqa, p = nodes[k], f"{PREFIX}{k}."
        nodes[k] = helper.make_node("If", [PREFIX + "prompt"], list(gqa.output), name=p + "if",
                                    then_branch=_prompt_branch(gqa, p), else_branch=_decode_branch(gqa, p))
    del g.node[:]
    g.node.extend(cond + nodes)
    return len(targets)


def _head_dim(g: onnx.GraphProto, past: str) -> int:
    """The last dimension of the past cache input (batch, kv_heads, capacity, head_dim)."""
    vi = next(v for v in g.input if v.name == past)
    return vi.type.tensor_type.shape.dim[-1].dim_value


def strip_prefill_attention(model: onnx.ModelProto) -> int:
    """The inverse of rewrite_prefill_attention: each If back to its int8 GroupQueryAttention, the nodes and
    constants the rewrite added removed (for a check that needs the int8 kernel alone, e.g. arm/test-arm.sh's
    float-cache reference graph). Returns how many If nodes were undone."""
    g, nodes, n = model.graph, [], 0
    for node in g.node:
        if node.op_type == "If" and node.name.startswith(PREFIX):
            gqa = onnx.NodeProto()
            gqa.CopyFrom(next(a.g for a in node.attribute if a.name == "else_branch").node[0])
            del gqa.output[:]
            gqa.output.extend(node.output)
            nodes.append(gqa)
            n += 1
        elif not any(o.startswith(PREFIX) for o in node.output):
            nodes.append(node)
    keep = [t for t in g.initializer if not t.name.startswith(PREFIX)]
    del g.node[:], g.initializer[:]
    g.node.extend(nodes)
    g.initializer.extend(keep)
    return n
