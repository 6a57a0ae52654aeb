"""Trace an ExportLlama to ONNX (dynamo exporter, opset 23) and summarise the graph it wrote.

One graph serves prefill and decode: batch, new tokens, KV capacity and the number of logit rows are all
dynamic. Weights go to external data (model.onnx + model.onnx.data) because an fp32 0.5B model is over 2 GB.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from clova_edge.runtime import manifest as mf

from .llama import ExportLlama

OPSET = 23   # RMSNormalization is standard from 23 (passes onnx.checker, unlike the ORT-internal one)
# Example sizes for tracing: all distinct and > 1 so that no dimension is specialised or tied to another.
_B, _S, _M, _L = 2, 5, 16, 3


def input_names(num_layers: int) -> list[str]:
    return ([mf.INPUT_IDS, mf.SEQLENS_K, mf.TOTAL_SEQ_LEN, mf.LOGITS_INDEX]
            + [n for pair in mf.past_names(num_layers) for n in pair])


def output_names(num_layers: int) -> list[str]:
    return [mf.LOGITS] + [n for pair in mf.present_names(num_layers) for n in pair]


def trace_to_onnx(model: ExportLlama, path: Path) -> None:
    """Write path (model.onnx) and path + '.data' from the module (which must be in eval mode, fp32)."""
    import torch

    c = model.config
    n = c.num_hidden_layers
    kv = [torch.zeros(_B, c.num_key_value_heads, _M, c.head_dim) for _ in range(2 * n)]
    args = (torch.zeros(_B, _S, dtype=torch.int64), torch.full((_B,), _S - 1, dtype=torch.int32),
            torch.tensor(_S, dtype=torch.int32), torch.arange(_L), *kv)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    cap, rows = torch.export.Dim("capacity"), torch.export.Dim("logit_rows")
    dynamic = ({0: batch, 1: seq}, {0: batch}, {}, {0: rows}, tuple({0: batch, 2: cap} for _ in kv))
    with torch.no_grad():
        program = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dynamic, opset_version=OPSET,
                                    input_names=input_names(n), output_names=output_names(n), verbose=False)
    program.save(str(path), external_data=True)
    # onnxscript's rewrite rules (module globals) keep a reference to the last graph they matched, and through
    # it to every weight: detach the weights from the graph so the module's memory is freed when it goes.
    for value in program.model.graph.initializers.values():
        value.const_value = None


def graph_summary(path: Path) -> dict[str, Any]:
    """Operator counts and the initializer names a quantizer needs, read without loading the weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    counts = Counter(node.op_type for node in g.node)
    inits = {t.name: list(t.dims) for t in g.initializer}
    matmuls = [node.input[1] for node in g.node if node.op_type == "MatMul" and node.input[1] in inits]
    gemm = [node for node in g.node if node.op_type == "Gemm"]
    embed = [node.input[0] for node in g.node if node.op_type == "Gather" and node.input[0] in inits]
    return {"operators": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "nodes": len(g.node),
            "initializers": len(inits), "linear_weights": matmuls,
            "embedding": embed[0] if embed else None,
            "lm_head": {"node": gemm[0].name, "weight": gemm[0].input[1]} if gemm else None,
            "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import}}
