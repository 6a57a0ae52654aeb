"""What in an exported fp32 graph can be quantized, and what role each piece plays.

Found structurally: every MatMul / Gemm whose B is a constant 2-D fp32 initializer (directly or through a
Transpose), the embedding Gather on a [vocab, hidden] table, and the linear that reuses that table as the tied
vocabulary projection. The role and layer of a linear (which a recipe may treat differently) come from the
parameter names export/llama.py gives its weights, `layers.{i}.{qkv_proj|o_proj|gate_up_proj|down_proj}`; a
graph from elsewhere simply has role "other" everywhere. Nothing here changes a graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto, helper

MIN_DIM = 16                               # smaller weights stay fp32 (nothing to gain)
ROTATION_PREFIX = "rotation."              # quant/rotate.py's matrices: part of the function, kept fp32
ROLES = ("qkv", "o", "gate_up", "down", "lm_head", "other")
_NAME = re.compile(r"layers\.(\d+)\.(qkv_proj|o_proj|gate_up_proj|down_proj)$")


@dataclass(frozen=True)
class Linear:
    """One MatMul/Gemm with a constant weight. W is read as [N, K] (out, in)."""

    node: onnx.NodeProto
    weight: str
    transposed: bool               # True: the initializer is already [N, K] (Gemm transB=1 / Transpose feed)
    bias: str | None
    act_input: str                 # the activation tensor (A)

    @property
    def role(self) -> str:
        m = _NAME.search(self.weight)
        return m.group(2).removesuffix("_proj") if m else "other"

    @property
    def layer(self) -> int | None:
        m = _NAME.search(self.weight)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Plan:
    linears: list[Linear]
    embedding: onnx.NodeProto | None   # the Gather on the tied table
    table: str | None                  # its initializer
    lm_head: Linear | None             # the linear that reuses the table
    dead: set[str] = field(default_factory=set)  # nodes replaced away (e.g. a Transpose feeding lm_head)

    @property
    def num_layers(self) -> int:
        layers = [lin.layer for lin in self.linears if lin.layer is not None]
        return max(layers) + 1 if layers else 0

    def role_of(self, lin: Linear) -> str:
        return "lm_head" if self.lm_head is not None and lin.node is self.lm_head.node else lin.role


def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def plan_graph(graph: onnx.GraphProto) -> Plan:
    """Find the quantizable linears, the embedding Gather and the tied projection."""
    inits = {t.name: t for t in graph.initializer}
    is_w = lambda n: (n in inits and len(inits[n].dims) == 2  # noqa: E731
                      and inits[n].data_type == TensorProto.FLOAT)
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and is_w(n.input[0])
                  and list(attr(n, "perm", [1, 0])) == [1, 0]}
    linears, dead = [], set()
    for n in graph.node:
        if n.op_type == "MatMul" and len(n.input) == 2:
            b = n.input[1]
            if is_w(b):
                linears.append(Linear(n, b, False, None, n.input[0]))
            elif b in transposes:
                linears.append(Linear(n, transposes[b].input[0], True, None, n.input[0]))
                dead.add(transposes[b].output[0])
        elif n.op_type == "Gemm" and is_w(n.input[1]):
            if attr(n, "transA", 0) or attr(n, "alpha", 1.0) != 1.0 or attr(n, "beta", 1.0) != 1.0:
                continue
            bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
            if bias is not None and (bias not in inits or len(inits[bias].dims) != 1):
                continue
            linears.append(Linear(n, n.input[1], bool(attr(n, "transB", 0)), bias, n.input[0]))
    linears = [lin for lin in linears if min(inits[lin.weight].dims) >= MIN_DIM
               and not lin.weight.startswith(ROTATION_PREFIX)]
    gathers = [n for n in graph.node
               if n.op_type == "Gather" and is_w(n.input[0]) and attr(n, "axis", 0) == 0]
    for g in gathers:
        heads = [lin for lin in linears if lin.weight == g.input[0] and lin.transposed]
        if len(heads) == 1:
            return Plan(linears, g, g.input[0], heads[0], dead)
    return Plan(linears, None, None, None, dead)
