"""Rewrite an exported fp32 model folder into an INT4 or INT8 variant, next to the fp32 one.

What is quantized (found structurally, never by tensor names):
  - every MatMul / Gemm whose B is a constant 2-D fp32 initializer  -> com.microsoft MatMulNBits
    (INT8 may instead use DynamicQuantizeMatMul: `int8_route`);
  - the embedding Gather on a [vocab, hidden] table and the op that reuses that table as the (tied) vocabulary
    projection -> GatherBlockQuantized + MatMulNBits reading ONE shared uint8 table (notes §3), at the
    precision `lm_head` asks for ("fp32" leaves both untouched).
Output: model.int{4,8}.onnx + .onnx.data, a `variants.int{4,8}` entry in manifest.json with the quality
figures of quant/report.py, and file checksums. Files are written into a temporary folder and renamed into
place; manifest.json is replaced last, so a crash never leaves a half-listed variant.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clova_edge.runtime.errors import ClovaEdgeError, ManifestError, QuantizeError
from clova_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file

from . import primitives as P
from .gptq import quantize_blocks_gptq

MS = "com.microsoft"
QUANT_OPS = {"MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeMatMul", "MatMulInteger",
             "QLinearMatMul", "DequantizeLinear", "QuantizeLinear", "MatMulIntegerToFloat"}
LM_HEAD_CHOICES = ("int4", "int8", "fp32")
INT8_ROUTES = ("nbits", "dynamic")
METHODS = ("rtn", "search", "act", "gptq")
DEFAULT_LM_HEAD = {4: "int8", 8: "int8"}   # chosen by measurement on SmolLM2 (see report of issue 3)
DEFAULT_INT8_ROUTE = "nbits"   # dynamic is 2-6x faster here but +78% ppl on SmolLM2 (per-tensor activations)
# Measured on the full-size model, 2 threads: int8 KV decodes 14.4 vs 8.5 tok/s at 3,500 tokens of context and
# peaks at 1.11 vs 1.80 GB RSS; prefill is slower (118 vs 163 tok/s at 512 tokens); SmolLM2 INT4 ppl +5.9% either way.
DEFAULT_KV_CACHE = {4: "int8", 8: "fp32"}
# Weights per quantization block. onnxruntime's MatMulNBits kernels pay per block (a scale, a block sum, one float
# multiply-add per block of int8 dot products), so small blocks are slow: on the full-size model (2 threads, int8 KV)
# 4-bit block 128 decodes 47-54 tok/s against 29-35 at block 32 and prefills 512 tokens ~20% faster; it also reads
# 4.25 instead of 5 bits per weight. The price is quality: SmolLM2 INT4 perplexity +15.5% against +7.2% at block 32
# (its weights are a dequantized block-32 Q4_1 grid, the worst case for any other grid), still ahead of
# onnxruntime-genai int4 (+39.7%) and llama.cpp Q4_0 (+28.0%) on the same text. `--block-size 32` restores it.
DEFAULT_BLOCK_SIZE = {4: 128, 8: 32}   # INT8 is the faithful variant: block 128 triples its KL on SmolLM2
MIN_DIM = 16                               # smaller weights stay fp32 (nothing to gain)

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class Linear:
    """One MatMul/Gemm with a constant weight. W is read as [N, K] (out, in)."""

    node: onnx.NodeProto
    weight: str
    transposed: bool               # True: the initializer is already [N, K] (Gemm transB=1 / Transpose feed)
    bias: str | None
    act_input: str                 # the activation tensor (A)


@dataclass(frozen=True)
class Plan:
    linears: list[Linear]
    embedding: onnx.NodeProto | None   # the Gather on the tied table
    table: str | None                  # its initializer
    lm_head: Linear | None             # the linear that reuses the table
    dead: set[str] = field(default_factory=set)  # nodes replaced away (e.g. a Transpose feeding lm_head)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def plan_graph(graph: onnx.GraphProto) -> Plan:
    """Find the quantizable linears, the embedding Gather and the tied projection."""
    inits = {t.name: t for t in graph.initializer}
    is_w = lambda n: n in inits and len(inits[n].dims) == 2 and inits[n].data_type == TensorProto.FLOAT  # noqa: E731
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and is_w(n.input[0])
                  and list(_attr(n, "perm", [1, 0])) == [1, 0]}
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
            if _attr(n, "transA", 0) or _attr(n, "alpha", 1.0) != 1.0 or _attr(n, "beta", 1.0) != 1.0:
                continue
            bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
            if bias is not None and (bias not in inits or len(inits[bias].dims) != 1):
                continue
            linears.append(Linear(n, n.input[1], bool(_attr(n, "transB", 0)), bias, n.input[0]))
    linears = [lin for lin in linears if min(inits[lin.weight].dims) >= MIN_DIM]
    gathers = [n for n in graph.node if n.op_type == "Gather" and is_w(n.input[0]) and _attr(n, "axis", 0) == 0]
    for g in gathers:
        heads = [lin for lin in linears if lin.weight == g.input[0] and lin.transposed]
        if len(heads) == 1:
            return Plan(linears, g, g.input[0], heads[0], dead)
    return Plan(linears, None, None, None, dead)


def _already_quantized(model: onnx.ModelProto) -> str | None:
    for n in model.graph.node:
        if n.op_type in QUANT_OPS:
            return n.op_type
    return None


def _weight_nk(arr: np.ndarray, transposed: bool) -> np.ndarray:
    return arr if transposed else arr.T


def _nbits_node(lin: Linear, mw: P.MatMulNBitsWeights, names: tuple[str, str, str | None],
                accuracy_level: int) -> onnx.NodeProto:
    b, s, z = names
    inputs = [lin.act_input, b, s, z or "", "", lin.bias or ""]
    while inputs and not inputs[-1]:
        inputs.pop()
    return helper.make_node("MatMulNBits", inputs, list(lin.node.output), name=(lin.node.name or b) + "_q",
                            domain=MS, K=mw.k, N=mw.n, bits=mw.bits, block_size=mw.block_size,
                            accuracy_level=accuracy_level)


def _dynamic_node(lin: Linear, names: tuple[str, str]) -> onnx.NodeProto:
    inputs = [lin.act_input, names[0], names[1], "", lin.bias or ""]
    while not inputs[-1]:
        inputs.pop()
    return helper.make_node("DynamicQuantizeMatMul", inputs, list(lin.node.output),
                            name=(lin.node.name or names[0]) + "_q", domain=MS)


def _gbq_nodes(gather: onnx.NodeProto, table: str, scales3: str, zp3: str | None, bits: int, block_size: int,
               hidden: int) -> list[onnx.NodeProto]:
    """GatherBlockQuantized on the shared [V, nb, bs*bits/8] table, then reshape [..., nb, bs] -> [..., nb*bs]
    (and slice to [..., H] when the last block is padded)."""
    out = gather.output[0]
    padded = -(-hidden // block_size) * block_size
    raw, shp, tail, full = (f"{out}/gbq", f"{out}/idx_shape", f"{out}/hidden", f"{out}/shape")
    flat = out if padded == hidden else f"{out}/padded"
    const = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], name=f"{name}/Const", value=numpy_helper.from_array(np.array(v, np.int64)))
    inputs = [table, gather.input[1], scales3] + ([zp3] if zp3 else [])
    nodes = [
        helper.make_node("GatherBlockQuantized", inputs, [raw], name=f"{out}/GatherBlockQuantized", domain=MS,
                         bits=bits, block_size=block_size, gather_axis=0, quantize_axis=2),
        helper.make_node("Shape", [gather.input[1]], [shp], name=f"{out}/Shape"),
        const(tail, [padded]),
        helper.make_node("Concat", [shp, tail], [full], name=f"{out}/Concat", axis=0),
        helper.make_node("Reshape", [raw, full], [flat], name=f"{out}/Reshape"),
    ]
    if flat != out:
        ends = [f"{out}/s0", f"{out}/s1", f"{out}/ax"]
        nodes += [const(ends[0], [0]), const(ends[1], [hidden]), const(ends[2], [-1]),
                  helper.make_node("Slice", [flat, *ends], [out], name=f"{out}/Slice")]
    return nodes


def rewrite_model(model: onnx.ModelProto, bits: int, *, block_size: int = 32, symmetric: bool = True,
                  accuracy_level: int = 4, lm_head: str = "int8", method: str = "search",
                  int8_route: str = DEFAULT_INT8_ROUTE, importance: dict[str, np.ndarray] | None = None,
                  hessians: dict[str, np.ndarray] | None = None,
                  progress: Progress = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return (quantized model, stats). `model` must have its weights loaded; it is not modified.
    method "gptq" needs `hessians` (quant/report.py activation_hessians); the tied vocabulary table, whose rows
    are also looked up as embeddings, keeps the activation-aware search (`importance`)."""
    graph = model.graph
    plan = plan_graph(graph)
    inits = {t.name: t for t in graph.initializer}
    importance = importance or {}
    new_inits: list[TensorProto] = []
    replaced: dict[int, list[onnx.NodeProto]] = {}   # id(old node) -> new nodes
    quantized_w: set[str] = set()
    errs: list[float] = []
    shared: dict[str, tuple[P.BlockQuant, tuple[str, str, str | None]]] = {}
    for i, lin in enumerate(plan.linears):
        tied = plan.lm_head is not None and lin.node is plan.lm_head.node
        lbits = {"int4": 4, "int8": 8}.get(lm_head) if tied else bits
        if lbits is None:
            continue
        w = _weight_nk(numpy_helper.to_array(inits[lin.weight]), lin.transposed)
        if progress:
            progress(f"[{i + 1}/{len(plan.linears)}] {lin.weight} {tuple(w.shape)} -> {lbits}-bit")
        if lbits == 8 and int8_route == "dynamic" and not tied:
            q, s = P.quantize_int8_per_channel(w.T)
            errs.append(P.error_stats(w.T, P.dequantize_int8_per_channel(q, s))["rel_rms_err"])
            names = (f"{lin.weight}_qi8", f"{lin.weight}_qi8_scale")
            new_inits += [numpy_helper.from_array(q, names[0]), numpy_helper.from_array(s, names[1])]
            replaced[id(lin.node)] = [_dynamic_node(lin, names)]
            quantized_w.add(lin.weight)
            continue
        key = f"{lin.weight}/{lin.transposed}/{lbits}"
        if key not in shared:
            imp = importance.get(lin.act_input) if method in ("act", "gptq") else None
            h = (hessians or {}).get(lin.act_input) if method == "gptq" and not tied else None
            if h is not None:
                bq = quantize_blocks_gptq(w, h, lbits, block_size, symmetric=symmetric)
            else:
                bq = P.quantize_blocks(w, lbits, block_size, symmetric=symmetric,
                                       method="rtn" if method == "rtn" else "search", importance=imp)
            errs.append(P.error_stats(w, P.dequantize_blocks(bq))["rel_rms_err"])
            mw = P.to_matmulnbits(bq)
            base = f"{lin.weight}_q{lbits}"
            names = (base, f"{base}_scales", f"{base}_zp" if mw.zero_points is not None else None)
            new_inits += [numpy_helper.from_array(mw.b, names[0]), numpy_helper.from_array(mw.scales, names[1])]
            if mw.zero_points is not None:
                new_inits.append(numpy_helper.from_array(mw.zero_points, names[2]))
            shared[key] = (bq, names)
        bq, names = shared[key]
        replaced[id(lin.node)] = [_nbits_node(lin, _mw_meta(bq), names, accuracy_level)]
        quantized_w.add(lin.weight)
        if tied and plan.embedding is not None:
            b_name, s_name, _ = names
            s3 = numpy_helper.from_array(bq.scales[..., None], f"{s_name}_gbq")
            new_inits.append(s3)
            z3 = None
            if bq.zero_points is not None:
                z3 = f"{b_name}_zp_gbq"
                new_inits.append(numpy_helper.from_array(bq.zero_points[..., None].astype(np.uint8), z3))
            hidden = bq.k
            replaced[id(plan.embedding)] = _gbq_nodes(plan.embedding, b_name, s3.name, z3, lbits, block_size,
                                                      hidden)
    nodes = []
    for n in graph.node:
        if n.output and n.output[0] in plan.dead and n.op_type == "Transpose":
            continue
        nodes.extend(replaced.get(id(n), [n]))
    still_used = {x for n in nodes for x in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in quantized_w or t.name in still_used]
    new_graph = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output),
                                  initializer=kept + new_inits, value_info=list(graph.value_info))
    opsets = [o for o in model.opset_import if o.domain != MS] + [helper.make_opsetid(MS, 1)]
    out = helper.make_model(new_graph, opset_imports=opsets, producer_name="clova-edge-quant",
                            ir_version=model.ir_version)
    stats = {"quantized_linears": len(quantized_w), "linears_found": len(plan.linears),
             "tied_embedding": plan.embedding is not None,
             "weight_rel_rms_err_mean": float(np.mean(errs)) if errs else 0.0,
             "weight_rel_rms_err_max": float(np.max(errs)) if errs else 0.0}
    return out, stats


def _mw_meta(bq: P.BlockQuant) -> P.MatMulNBitsWeights:
    """Shape-only MatMulNBitsWeights for building a node whose initializers already exist."""
    return P.MatMulNBitsWeights(b=np.empty(0, np.uint8), scales=np.empty(0, np.float32), zero_points=None,
                                k=bq.k, n=bq.codes.shape[0], bits=bq.bits, block_size=bq.block_size)


def memory_estimate(manifest: Any, weight_bytes: int, context: int = 4096, kv_bytes: int = 4) -> dict[str, int]:
    """Expected resident bytes: weights (the data file) + a KV cache of `context` tokens (4 bytes fp32, 1 int8)."""
    c = manifest.config
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * kv_bytes * min(context, c.context_length)
    return {"weights_bytes": weight_bytes, "kv_cache_bytes": kv, "context": min(context, c.context_length),
            "total_bytes": weight_bytes + kv}


def _fail(msg: str) -> QuantizeError:
    return QuantizeError(msg)


def _resolve_options(bits: int, lm_head: str | None, method: str, int8_route: str | None) -> tuple[str, str]:
    if bits not in (4, 8):
        raise _fail(f"bits must be 4 or 8, got {bits!r}")
    lm = lm_head or DEFAULT_LM_HEAD[bits]
    if lm not in LM_HEAD_CHOICES:
        raise _fail(f"lm_head must be one of {LM_HEAD_CHOICES}, got {lm_head!r}")
    if method not in METHODS:
        raise _fail(f"method must be one of {METHODS}, got {method!r}")
    route = int8_route or DEFAULT_INT8_ROUTE
    if route not in INT8_ROUTES:
        raise _fail(f"int8_route must be one of {INT8_ROUTES}, got {int8_route!r}")
    return lm, route


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.chmod(tmp, 0o644)                  # mkstemp makes 0600 files
    os.replace(tmp, path)


def quantize_model_folder(folder: Path, bits: int, *, block_size: int | None = None, symmetric: bool = True,
                          accuracy_level: int = 4, lm_head: str | None = None, method: str = "act",
                          int8_route: str | None = None, out_folder: Path | None = None,
                          evaluate: bool = True, eval_tokens: int | None = None, kv_cache: str | None = None,
                          progress: Progress = None) -> dict[str, Any]:
    """Quantize the fp32 variant of an exported folder; returns the new manifest variant entry.

    bits 4 or 8; lm_head "int4" | "int8" | "fp32" for the tied embedding + vocabulary projection (default:
    DEFAULT_LM_HEAD[bits]); method "rtn" | "search" (weight-error scale search) | "act" (the search weighted
    by each layer's input activation energy on quant/data/eval.txt); int8_route "nbits" (MatMulNBits 8-bit)
    or "dynamic" (DynamicQuantizeMatMul). out_folder None writes the variant into `folder`; otherwise a new
    folder holding the manifest, tokenizer files and only the new variant is created (atomically).
    evaluate runs quant/report.py (fp32 vs quantized on the evaluation text) and stores the figures.
    kv_cache "int8" also switches the variant's KV cache to int8 with per-channel scales calibrated on the
    evaluation text (quant/kvcache.py): a quarter of the cache memory and faster long-context decode
    (default: DEFAULT_KV_CACHE[bits] - int8 for INT4, the small and fast variant; fp32 for INT8, the faithful one).
    """
    kv_cache = kv_cache or DEFAULT_KV_CACHE.get(bits, "fp32")
    block_size = block_size or DEFAULT_BLOCK_SIZE.get(bits, 32)
    if block_size < 16 or block_size & (block_size - 1):
        raise _fail(f"block size must be a power of 2 of at least 16 (32, 64, 128, ...), got {block_size}")
    if kv_cache not in ("fp32", "int8"):
        raise _fail(f"kv_cache must be 'fp32' or 'int8', got {kv_cache!r}")
    from .report import activation_hessians, activation_importance, evaluation_ids, format_table, quality_report

    folder = Path(folder)
    lm, route = _resolve_options(bits, lm_head, method, int8_route)
    try:
        manifest = load_manifest(folder)
    except ManifestError as e:
        raise _fail(f"{folder}: cannot quantize, no usable manifest.json ({e})") from None
    if "fp32" not in manifest.variants:
        raise _fail(f"{folder}: has no fp32 variant to quantize (variants: {', '.join(manifest.variants)}); "
                    f"re-export the model")
    src = manifest.variants["fp32"]
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    if out_folder is not None and Path(out_folder).exists():
        raise _fail(f"{out_folder}: already exists; remove it or choose another out_folder")
    try:
        model = onnx.load(str(folder / src.file), load_external_data=False)
    except Exception as e:  # onnx raises its own types (DecodeError, ValidationError)
        raise _fail(f"{folder / src.file}: cannot read it ({type(e).__name__}); re-export the model") from None
    op = _already_quantized(model)
    if op is not None:
        raise _fail(f"{folder / src.file}: already quantized (contains {op}); quantize an fp32 export instead")
    try:
        onnx.load_external_data_for_model(model, str((folder / src.file).parent))
    except Exception as e:  # e.g. onnx refuses external data that is a symlink or has several hard links
        raise _fail(f"{folder}: cannot read the fp32 weights ({str(e)[:200]}); if they are links, copy the "
                    "files instead, else re-export the model") from None
    ids, skipped = None, None
    if evaluate or method in ("act", "gptq") or kv_cache == "int8":   # the text also calibrates the KV cache
        try:
            ids = evaluation_ids(manifest, eval_tokens)
        except ClovaEdgeError as e:   # e.g. a tokenizer.json the runtime tokenizer cannot read
            skipped = f"evaluation text could not be tokenized: {e}"
            say(f"warning: {skipped}; quality report skipped" + (f", method {method} -> search"
                                                                   if method in ("act", "gptq")
                                                                   else ""))
    importance, hessians = None, None
    if method == "gptq" and ids is not None:
        say("collecting activation covariances (GPTQ) on the evaluation text")
        hessians = activation_hessians(manifest, ids)
        importance = {a: np.diag(h).copy() for a, h in hessians.items()}   # E[x_k^2] is the diagonal of H
    elif method == "act" and ids is not None:
        say("collecting activation statistics on the evaluation text")
        importance = activation_importance(manifest, ids)
    name = f"int{bits}"
    used = "search" if (method in ("act", "gptq") and importance is None) else method
    qmodel, stats = rewrite_model(model, bits, block_size=block_size, symmetric=symmetric,
                                  accuracy_level=accuracy_level, lm_head=lm, method=used, int8_route=route,
                                  importance=importance, hessians=hessians, progress=progress)
    del model, hessians
    if kv_cache == "int8":
        from .kvcache import calibrate_kv_scales, rewrite_int8_kv
        if ids is None:
            raise _fail(f"{folder}: an int8 KV cache needs the evaluation text for calibration ({skipped})")
        say("calibrating int8 KV cache scales on the evaluation text")
        rewrite_int8_kv(qmodel, calibrate_kv_scales(manifest, ids))
    quant_seconds = time.perf_counter() - t0
    onnx_name, data_name = f"model.{name}.onnx", f"model.{name}.onnx.data"
    target = Path(out_folder) if out_folder is not None else folder
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent if out_folder else folder))
    try:
        say(f"writing {onnx_name}")
        onnx.save_model(qmodel, str(tmp / onnx_name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        del qmodel
        for f in (onnx_name, data_name):
            os.chmod(tmp / f, 0o644)
        entry: dict[str, Any] = {
            "file": onnx_name, "data_files": [data_name], "kv_dtype": "int8" if kv_cache == "int8" else src.kv_dtype,
            "size_bytes": (tmp / onnx_name).stat().st_size + (tmp / data_name).stat().st_size,
            "memory_estimate": memory_estimate(manifest, (tmp / data_name).stat().st_size,
                                               kv_bytes=1 if kv_cache == "int8" else 4),
            "quantization": {
                "scheme": "dynamic-int8" if (bits == 8 and route == "dynamic") else "MatMulNBits",
                "bits": bits, "block_size": block_size, "symmetric": symmetric,
                "accuracy_level": accuracy_level, "lm_head": lm, "method": used,
                "int8_route": route if bits == 8 else None, "kv_cache": kv_cache,
                "seconds": round(quant_seconds, 1), **stats},
        }
        if evaluate and ids is None:
            entry["quantization"]["quality"] = {"skipped": skipped}
        elif evaluate:
            say("evaluating fp32 vs quantized on the evaluation text")
            quality = quality_report(manifest, ids, quantized_file=tmp / onnx_name)
            entry["quantization"]["quality"] = quality
            say(format_table({"fp32": quality["reference"], name: quality["quantized"]}))
        raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = dict(raw.get("files") or {})
        files.update({onnx_name: _file_entry(tmp / onnx_name), data_name: _file_entry(tmp / data_name)})
        if out_folder is None:
            for f in (data_name, onnx_name):
                os.replace(tmp / f, folder / f)
            raw["variants"][name] = entry
            raw["files"] = files
            _write_json_atomic(folder / MANIFEST_NAME, raw)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            model_files = {x for v in manifest.variants.values() for x in (v.file, *v.data_files)}
            keep = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.name not in model_files | {MANIFEST_NAME}}
            for f in keep:
                shutil.copy2(folder / f, tmp / f)
            raw["variants"] = {name: entry}
            raw["files"] = {k: v for k, v in files.items() if k in keep | {onnx_name, data_name}}
            _write_json_atomic(tmp / MANIFEST_NAME, raw)
            os.chmod(tmp, 0o755)
            if target.exists():
                raise _fail(f"{target}: already exists; remove it or choose another out_folder")
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry
