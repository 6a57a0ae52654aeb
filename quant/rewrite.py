"""Rewrite an fp32 graph into a quantized one, following a Recipe (quant/recipe.py), tensor by tensor.

  - every linear of the plan (quant/plan.py) -> com.microsoft MatMulNBits with the bits, block size and zero
    points its rule asks for;
  - the embedding Gather on the tied [vocab, hidden] table and the vocabulary projection that reuses it ->
    GatherBlockQuantized + MatMulNBits reading ONE shared uint8 table (MatMulNBits' B layout
    [N, blocks, bytes] is what GatherBlockQuantized takes with quantize_axis=2), at the recipe's lm_head rule
    (None leaves both fp32).
Returns the new model and a record per tensor (role, layer, format, relative RMS weight error) that the
manifest keeps. The input model is not modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import primitives as P
from .gptq import quantize_blocks_gptq
from .plan import Linear, plan_graph
from .recipe import Recipe, TensorRule
from .rotate import rotate_model, rotate_statistics

MS = "com.microsoft"
Progress = Callable[[str], None] | None


def _nbits_node(lin: Linear, rule: TensorRule, k: int, n: int, names: tuple[str, str, str | None],
                accuracy_level: int, a: str, y: str, bias: str | None) -> onnx.NodeProto:
    b, s, z = names
    inputs = [a, b, s, z or "", "", bias or ""]
    while inputs and not inputs[-1]:
        inputs.pop()
    return helper.make_node("MatMulNBits", inputs, [y], name=(lin.node.name or b) + "_q",
                            domain=MS, K=k, N=n, bits=rule.bits, block_size=rule.block_size,
                            accuracy_level=accuracy_level)


def _cast(x: str, y: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [x], [y], name=f"{y}/Cast", to=to)


def _gbq_nodes(gather: onnx.NodeProto, table: str, scales3: str, zp3: str | None, rule: TensorRule,
               hidden: int) -> list[onnx.NodeProto]:
    """GatherBlockQuantized on the shared [V, nb, bs*bits/8] table, then reshape [..., nb, bs] -> [..., nb*bs]
    (and slice to [..., H] when the last block is padded); float16 scales give float16 rows, cast back."""
    out = gather.output[0] if rule.scale_bits == 32 else f"{gather.output[0]}/gbq_f16"
    padded = -(-hidden // rule.block_size) * rule.block_size
    raw, shp, tail, full = (f"{out}/gbq", f"{out}/idx_shape", f"{out}/hidden", f"{out}/shape")
    flat = out if padded == hidden else f"{out}/padded"
    const = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], name=f"{name}/Const", value=numpy_helper.from_array(np.array(v, np.int64)))
    inputs = [table, gather.input[1], scales3] + ([zp3] if zp3 else [])
    nodes = [
        helper.make_node("GatherBlockQuantized", inputs, [raw], name=f"{out}/GatherBlockQuantized", domain=MS,
                         bits=rule.bits, block_size=rule.block_size, gather_axis=0, quantize_axis=2),
        helper.make_node("Shape", [gather.input[1]], [shp], name=f"{out}/Shape"),
        const(tail, [padded]),
        helper.make_node("Concat", [shp, tail], [full], name=f"{out}/Concat", axis=0),
        helper.make_node("Reshape", [raw, full], [flat], name=f"{out}/Reshape"),
    ]
    if flat != out:
        ends = [f"{out}/s0", f"{out}/s1", f"{out}/ax"]
        nodes += [const(ends[0], [0]), const(ends[1], [hidden]), const(ends[2], [-1]),
                  helper.make_node("Slice", [flat, *ends], [out], name=f"{out}/Slice")]
    if rule.scale_bits == 16:
        nodes.append(_cast(out, gather.output[0], TensorProto.FLOAT))
    return nodes


def _quantize_weight(w: np.ndarray, rule: TensorRule, method: str, imp: np.ndarray | None,
                     h: np.ndarray | None) -> P.BlockQuant:
    if method == "gptq" and h is not None:
        return quantize_blocks_gptq(w, h, rule.bits, rule.block_size, symmetric=rule.symmetric,
                                    scale_bits=rule.scale_bits)
    return P.quantize_blocks(w, rule.bits, rule.block_size, symmetric=rule.symmetric,
                             method="rtn" if method == "rtn" else "search",
                             importance=imp if method in ("act", "gptq") else None,
                             scale_bits=rule.scale_bits)


def _value_rows(graph: onnx.GraphProto, qkv_rows: int) -> int | None:
    """Rows of a fused [q; k; v] weight that are the values: kv_num_heads x head_dim, from
    GroupQueryAttention."""
    gqa = next((n for n in graph.node if n.op_type == "GroupQueryAttention"), None)
    if gqa is None:
        return None
    a = {x.name: helper.get_attribute_value(x) for x in gqa.attribute}
    heads, kv = a.get("num_heads"), a.get("kv_num_heads")
    if not heads or not kv or qkv_rows % (heads + 2 * kv):
        return None
    return kv * qkv_rows // (heads + 2 * kv)


def _parts(lin: Linear, role: str, w: np.ndarray, recipe: Recipe, num_layers: int, graph: onnx.GraphProto):
    """[(role, rows slice, rule)] of one linear: one part, or the fused qkv split into qk and v rows when the
    recipe gives the values another format (each part becomes its own MatMulNBits, then a Concat)."""
    rule = recipe.rule_for(role, lin.layer, num_layers)
    if role == "qkv":
        v_rule = recipe.rule_for("v", lin.layer, num_layers)
        n_v = _value_rows(graph, w.shape[0])
        if v_rule != rule and n_v:
            cut = w.shape[0] - n_v
            return [("qk", slice(0, cut), rule), ("v", slice(cut, None), v_rule)]
    return [(role, slice(None), rule)]


def rewrite_model(model: onnx.ModelProto, recipe: Recipe, *, importance: dict[str, np.ndarray] | None = None,
                  hessians: dict[str, np.ndarray] | None = None,
                  progress: Progress = None) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """(quantized model, per-tensor records). `model` must have its weights loaded. Method "act" uses
    `importance` (E[x^2] per input channel), "gptq" `hessians` (quant/calibrate.py); the tied table, whose
    rows are also looked up as embeddings, always takes the activation-weighted search.

    A rule with float16 scales makes its MatMulNBits a float16 node: its input is cast once per activation
    (shared by every node that reads it) and its output cast back to float32, so the rest of the graph, the
    residual stream included, stays float32. MatMulNBits quantizes its input to int8 at accuracy level 4
    anyway; the float16 output rounds each element by at most 2^-11 of itself, far below the 4-bit weight
    error.

    A recipe with `rotate` first rotates the graph (quant/rotate.py: the same function, outliers spread) and
    carries the statistics over."""
    if recipe.rotate != "none":
        model, smap = rotate_model(model, recipe.rotate)
        hessians, importance = rotate_statistics(smap, hessians, importance)
    graph = model.graph
    plan = plan_graph(graph)
    inits = {t.name: t for t in graph.initializer}
    importance, hessians = importance or {}, hessians or {}
    new_inits: list[TensorProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}   # id(old node) -> new nodes
    records: list[dict[str, Any]] = []
    quantized_w: set[str] = set()
    half_inputs: dict[int, set[str]] = {}           # id(old node) -> activations its nodes read in float16
    for i, lin in enumerate(plan.linears):
        role = plan.role_of(lin)
        rule = recipe.rule_for(role, lin.layer, plan.num_layers)
        if rule is None:
            continue
        arr = numpy_helper.to_array(inits[lin.weight])
        w_all = arr if lin.transposed else arr.T                           # [N, K]
        tied = role == "lm_head"
        method = "act" if tied and recipe.method == "gptq" else recipe.method
        parts = _parts(lin, role, w_all, recipe, plan.num_layers, graph)
        if progress:
            progress(f"[{i + 1}/{len(plan.linears)}] {lin.weight} {tuple(w_all.shape)} -> "
                     + ", ".join(f"{r} {t.describe()}" for r, _, t in parts))
        nodes, outs = [], []
        for part, rows, rule in parts:
            w = w_all[rows]
            bq = _quantize_weight(w, rule, method, importance.get(lin.act_input),
                                  None if tied else hessians.get(lin.act_input))
            mw = P.to_matmulnbits(bq)
            base = f"{lin.weight}_q{rule.bits}" + ("" if len(parts) == 1 else f"_{part}")
            names = (base, f"{base}_scales", f"{base}_zp" if mw.zero_points is not None else None)
            half = rule.scale_bits == 16
            new_inits += [numpy_helper.from_array(mw.b, names[0]),
                          numpy_helper.from_array(mw.scales.astype(np.float16 if half else np.float32),
                                                  names[1])]
            if mw.zero_points is not None:
                new_inits.append(numpy_helper.from_array(mw.zero_points, names[2]))
            y = lin.node.output[0] if len(parts) == 1 else f"{lin.node.output[0]}/{part}"
            a, bias = lin.act_input, lin.bias
            if half:
                a = f"{lin.act_input}/to_f16"
                half_inputs.setdefault(id(lin.node), set()).add(lin.act_input)
                if bias:
                    bias = f"{lin.bias}_f16"
                    new_inits.append(numpy_helper.from_array(
                        numpy_helper.to_array(inits[lin.bias]).astype(np.float16), bias))
            node = _nbits_node(lin, rule, mw.k, mw.n, names, recipe.accuracy_level,
                               a, f"{y}/out_f16" if half else y, bias)
            if len(parts) > 1:
                node.name += f"_{part}"
                outs.append(y)
            nodes.append(node)
            if half:
                nodes.append(_cast(f"{y}/out_f16", y, TensorProto.FLOAT))
            records.append({"weight": lin.weight + ("" if len(parts) == 1 else f"[{part}]"), "role": part,
                            "layer": lin.layer, "shape": list(w.shape), "bits": rule.bits,
                            "block_size": rule.block_size, "symmetric": rule.symmetric,
                            "scale_bits": rule.scale_bits, "method": method, "rel_rms_err": round(
                                P.error_stats(w, P.dequantize_blocks(bq))["rel_rms_err"], 5)})
        if outs:
            nodes.append(helper.make_node("Concat", outs, list(lin.node.output),
                                          name=f"{lin.node.name}_qkv_cat", axis=-1))
        replaced[id(lin.node)] = nodes
        quantized_w.add(lin.weight)
        if tied and plan.embedding is not None:
            s3 = numpy_helper.from_array(bq.scales[..., None].astype(np.float16 if half else np.float32),
                                         f"{names[1]}_gbq")
            new_inits.append(s3)
            z3 = None
            if bq.zero_points is not None:
                z3 = f"{names[0]}_zp_gbq"
                new_inits.append(numpy_helper.from_array(bq.zero_points[..., None].astype(np.uint8), z3))
            replaced[id(plan.embedding)] = _gbq_nodes(plan.embedding, names[0], s3.name, z3, rule, bq.k)
    nodes, cast_done = [], set()
    for n in graph.node:
        if n.output and n.output[0] in plan.dead and n.op_type == "Transpose":
            continue
        for act in sorted(half_inputs.get(id(n), set()) - cast_done):   # one Cast, before its first reader
            nodes.append(_cast(act, f"{act}/to_f16", TensorProto.FLOAT16))
            cast_done.add(act)
        nodes.extend(replaced.get(id(n), [n]))
    still_used = {x for n in nodes for x in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in quantized_w or t.name in still_used]
    new_graph = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output),
                                  initializer=kept + new_inits, value_info=list(graph.value_info))
    opsets = [o for o in model.opset_import if o.domain != MS] + [helper.make_opsetid(MS, 1)]
    out = helper.make_model(new_graph, opset_imports=opsets, producer_name="clova-edge-quant",
                            ir_version=model.ir_version)
    return out, records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's short form of the per-tensor records: formats used, and the weight error."""
    errs = [r["rel_rms_err"] for r in records]
    formats: dict[str, int] = {}
    for r in records:
        key = (f"{r['role']}: {r['bits']}-bit/{r['block_size']}{'' if r['symmetric'] else ' asym'}"
               f"{' f16' if r.get('scale_bits') == 16 else ''}")
        formats[key] = formats.get(key, 0) + 1
    return {"quantized_linears": len(records), "formats": formats,
            "weight_rel_rms_err_mean": float(np.mean(errs)) if errs else 0.0,
            "weight_rel_rms_err_max": float(np.max(errs)) if errs else 0.0}
