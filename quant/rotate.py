"""Orthogonal rotations that make 4-bit blocks easier, as an exact rewrite of an fp32 graph (the "incoherence"
idea of QuaRot and SpinQuant, written here for clova-edge's export layout).

Why: a block's scale is set by its largest weight, and a few input channels of a Llama (the outlier channels
of the residual stream and of the MLP's hidden units) are much larger than the rest. Mixing the input
channels with an orthogonal matrix spreads every outlier over many of them, so blocks hold values of one
size and lose less to rounding. The function is unchanged:
  - residual stream: h' = h Q (d x d). Every RMSNorm weight g is first folded into the linears that read the
    norm (W <- diag(g) W, g <- 1), which makes the norm commute with Q (RMS is rotation-invariant); those
    linears read the rotated stream through W' = Q^T diag(g) W. The writers of the stream (o_proj,
    down_proj) get W' = W Q. The embedding table stays as it is, because the vocabulary projection shares
    it: a MatMul by Q follows the embedding lookup, and a MatMul by Q^T diag(g_final) precedes the
    projection (on the logit rows only).
  - MLP hidden units: down_proj reads u R with R block-diagonal (one random g x g block B repeated: the
    graph applies it as one MatMul on u reshaped to [k / g, g]), and W_down' = R^T W_down.
The queries, keys and values are left alone (RoPE and the int8 KV cache's per-channel scales would not
commute), so the KV cache and its calibration are untouched. Calibration statistics measured on the
unrotated graph are carried over exactly (`rotate_statistics`: H' = M^T H M for an input x' = x M).

Q and B are randomized Hadamard matrices when the size is a power of two, else random orthogonal ones (QR
of a Gaussian), from a fixed seed, so a recipe always produces the same graph. The recipes rotate the MLP
only ("mlp"); "all" is there for the study that chose that (quant/recipe.py cites it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from clova_edge.runtime.errors import QuantizeError

from .plan import ROTATION_PREFIX as PREFIX
from .plan import plan_graph

NORMS = {"RMSNormalization": 1, "SkipSimplifiedLayerNormalization": 2}   # op -> input slot of its weight
SEED = 0
GROUP = 128   # down_proj's input rotation: blocks of this many hidden units (one MatMul; see _rotate_mlp)


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n x n orthogonal matrix (float64): Hadamard with random signs when n is a power of two."""
    if n & (n - 1) == 0:
        h = np.ones((1, 1))
        while h.shape[0] < n:
            h = np.block([[h, h], [h, -h]])
        return (h / np.sqrt(n)) * rng.choice([-1.0, 1.0], size=n)[:, None]
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def group_size(n: int, largest: int = GROUP) -> int:
    """The largest power of two up to `largest` that divides n: the size of the down_proj input rotation."""
    g = 1
    while g * 2 <= largest and n % (g * 2) == 0:
        g *= 2
    return g


@dataclass
class StatisticsMap:
    """How calibration statistics of the unrotated graph become those of the rotated one:
    {new activation name: (old activation name, M)} with x_new = x_old M; M None: same tensor, new name;
    M ("blocks", B): the block-diagonal I (x) B."""

    entries: dict[str, tuple[str, np.ndarray | tuple[str, np.ndarray] | None]] = field(default_factory=dict)


def _cov(h: np.ndarray, m: np.ndarray | tuple[str, np.ndarray] | None) -> np.ndarray:
    if m is None:
        return h
    if isinstance(m, tuple):                      # ("blocks", B): I (x) B, B applied along both axes of H
        b = m[1].astype(np.float64)
        g = b.shape[0]
        n = h.shape[0] // g
        h4 = np.einsum("ijmn,jl->ilmn", h.reshape(n, g, n, g).astype(np.float64), b, optimize=True)
        h4 = np.einsum("ilmn,np->ilmp", h4, b, optimize=True)
        return h4.reshape(h.shape).astype(np.float32)
    m64 = m.astype(np.float64)
    return (m64.T @ h.astype(np.float64) @ m64).astype(np.float32)


def rotate_statistics(smap: StatisticsMap, hessians: dict[str, np.ndarray] | None,
                      importance: dict[str, np.ndarray] | None):
    """(hessians, importance) keyed by the rotated graph's activations. Importance (E[x^2]) follows from the
    Hessian's diagonal, so a rotated input without a Hessian has no importance either."""
    hessians, importance = hessians or {}, importance or {}
    new_h, new_i = dict(hessians), dict(importance)
    for new, (old, m) in smap.entries.items():
        if old in hessians:
            new_h[new] = _cov(hessians[old], m)
            new_i[new] = new_h[new].diagonal().copy()
        elif m is None and old in importance:
            new_i[new] = importance[old]
        else:
            new_i.pop(new, None)     # the unrotated tensor's figure under the same name would mislead
    return new_h, new_i


def _fail(why: str) -> QuantizeError:
    return QuantizeError(f"cannot rotate this graph: {why}; quantize it with a recipe without rotation")


WHICH = ("none", "mlp", "all")   # a recipe's `rotate`: nothing, the MLP units only, those and the residual


@dataclass
class _Edit:
    """What the rotation changes: new weight values, nodes to insert before a node (by name) or after the
    embedding lookup, new constants, and the statistics map."""

    graph: onnx.GraphProto
    inits: dict
    new_w: dict[str, np.ndarray] = field(default_factory=dict)
    before: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    after_embedding: list[onnx.NodeProto] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    smap: StatisticsMap = field(default_factory=StatisticsMap)

    def w(self, name: str) -> np.ndarray:
        if name not in self.new_w:
            self.new_w[name] = numpy_helper.to_array(self.inits[name]).astype(np.float64)
        return self.new_w[name]


def rotate_model(model: onnx.ModelProto, which: str = "all",
                 seed: int = SEED) -> tuple[onnx.ModelProto, StatisticsMap]:
    """(rotated copy of `model`, how its statistics map); `which` as in WHICH. Needs clova-edge's export
    layout (export/llama.py): norms as RMSNormalization / SkipSimplifiedLayerNormalization, layer linears as
    MatMul on [in, out] weights, a tied table read by the embedding Gather and the vocabulary Gemm."""
    if which not in WHICH:
        raise QuantizeError(f"rotate must be one of {', '.join(WHICH)}, got {which!r}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)             # not a serialization round trip: full-size fp32 weights exceed 2 GB
    model = copy
    graph = model.graph
    plan = plan_graph(graph)
    if plan.embedding is None or plan.lm_head is None:
        raise _fail("no tied embedding table and vocabulary projection")
    layer_lins = [lin for lin in plan.linears if lin is not plan.lm_head]
    if any(lin.transposed or lin.bias for lin in layer_lins):
        raise _fail("a layer linear is not a plain MatMul on an [in, out] weight")
    edit = _Edit(graph, {t.name: t for t in graph.initializer})
    rng = np.random.default_rng(seed)
    if which == "all":
        _rotate_residual(edit, plan, layer_lins, rng)
    if which != "none":
        _rotate_mlp(edit, [lin for lin in layer_lins if lin.role == "down"], rng)
    nodes = []
    for node in graph.node:
        nodes.extend(edit.before.get(node.name, []))
        nodes.append(node)
        if node is plan.embedding:
            nodes.extend(edit.after_embedding)
    del graph.node[:]
    graph.node.extend(nodes)
    for t in graph.initializer:
        if t.name in edit.new_w:
            t.CopyFrom(numpy_helper.from_array(edit.new_w[t.name].astype(np.float32), t.name))
    for name, c in edit.consts.items():
        integer = np.issubdtype(c.dtype, np.integer)
        graph.initializer.append(numpy_helper.from_array(c.astype(np.int64 if integer else np.float32), name))
    del graph.value_info[:]            # shapes of rewired tensors are no longer known to be what they were
    return model, edit.smap


def _rotate_residual(edit: _Edit, plan, layer_lins, rng: np.random.Generator) -> None:
    """h' = h Q: norm weights folded into their readers, writers times Q, Q after the embedding lookup and
    Q^T diag(g_final) before the vocabulary projection."""
    graph = edit.graph
    q = orthogonal(int(edit.inits[plan.table].dims[1]), rng)
    readers: dict[str, list] = {}
    for lin in layer_lins:
        readers.setdefault(lin.act_input, []).append(lin)
    writers = {lin.node.output[0]: lin for lin in layer_lins}
    norms = [n for n in graph.node if n.op_type in NORMS]
    sums = {m.output[3] for m in norms if len(m.output) > 3}
    emb = plan.embedding.output[0]
    final_gain = None
    for n in norms:
        for x in [n.input[0]] + ([n.input[1]] if n.op_type != "RMSNormalization" else []):
            if x in writers:
                edit.new_w[writers[x].weight] = edit.w(writers[x].weight) @ q
            elif x != emb and x not in sums:
                raise _fail(f"norm {n.name} reads {x}, neither the embedding nor the residual stream")
        g_name = n.input[NORMS[n.op_type]]
        g = edit.w(g_name).copy()
        own = readers.get(n.output[0], [])
        if not own:
            if final_gain is not None:
                raise _fail("more than one norm feeds no linear")
            final_gain = g
        for lin in own:
            edit.new_w[lin.weight] = q.T @ (g[:, None] * edit.w(lin.weight))
        if own:
            inv = np.where(g == 0, 0.0, 1.0 / np.where(g == 0, 1.0, g))
            edit.smap.entries[n.output[0]] = (n.output[0], inv[:, None] * q)   # x_new = x_old diag(1/g) Q
        edit.new_w[g_name] = np.ones_like(g)
    if final_gain is None:
        raise _fail("no final norm before the vocabulary projection")
    edit.consts.update({f"{PREFIX}q": q, f"{PREFIX}final": q.T * final_gain[None, :]})
    rot_emb = f"{emb}/rotated"
    for node in graph.node:
        if node is not plan.embedding and emb in node.input:
            ins = [rot_emb if x == emb else x for x in node.input]
            del node.input[:]
            node.input.extend(ins)
    edit.after_embedding.append(helper.make_node("MatMul", [emb, f"{PREFIX}q"], [rot_emb],
                                                 name=f"{PREFIX}embedding"))
    head = plan.lm_head
    unrot = f"{head.act_input}/unrotated"
    edit.before[head.node.name] = [helper.make_node("MatMul", [head.act_input, f"{PREFIX}final"], [unrot],
                                                    name=f"{PREFIX}final")]
    head.node.input[0] = unrot
    edit.smap.entries[unrot] = (head.act_input, None)


def _rotate_mlp(edit: _Edit, downs, rng: np.random.Generator) -> None:
    """down_proj reads u (I (x) B): u reshaped to [k / g, g] times one g x g matrix B in the graph, and
    W_down' = (I (x) B)^T W_down. Blocks of g = GROUP rather than one k x k rotation: every node costs
    decode time on a small CPU (a Kronecker A (x) B over all 4096 units needs a second MatMul per layer), and
    GROUP spans the quantization blocks an outlier unit would dominate. One B serves every layer: the model
    file grows by one g x g matrix, not one per layer."""
    shared: dict[int, str] = {}
    for lin in downs:
        k = int(edit.inits[lin.weight].dims[0])
        g = group_size(k)
        if k not in shared:
            shared[k] = tag = f"{PREFIX}mlp{k}"
            edit.consts.update({f"{tag}.b": orthogonal(g, rng), f"{tag}.shape4": np.array([0, 0, k // g, g]),
                                f"{tag}.shape3": np.array([0, 0, k])})
        tag, x = shared[k], lin.act_input
        b = edit.consts[f"{tag}.b"]
        w = edit.w(lin.weight).reshape(k // g, g, -1)
        edit.new_w[lin.weight] = np.einsum("ijd,jl->ild", w, b, optimize=True).reshape(k, -1)
        name = f"{PREFIX}{lin.weight}"
        edit.before[lin.node.name] = [
            helper.make_node("Reshape", [x, f"{tag}.shape4"], [f"{x}/4d"], name=f"{name}/reshape4"),
            helper.make_node("MatMul", [f"{x}/4d", f"{tag}.b"], [f"{x}/ub"], name=f"{name}/b"),
            helper.make_node("Reshape", [f"{x}/ub", f"{tag}.shape3"], [f"{x}/rotated"],
                             name=f"{name}/reshape3")]
        lin.node.input[0] = f"{x}/rotated"
        edit.smap.entries[f"{x}/rotated"] = (x, ("blocks", b))
