"""Quantize an exported model folder: its fp32 variant -> an INT4 or INT8 variant beside it, per
QuantSettings.

Steps: read the fp32 graph and weights; measure the calibration statistics the recipe's method needs
(quant/calibrate.py, on the calibration text only); rewrite the graph (quant/rewrite.py); switch the KV
cache to int8 with calibrated scales if the recipe says so (quant/kvcache.py), with prompt chunks attending
in float (quant/prefill_attention.py); write model.int{4,8}.onnx +
.onnx.data into a temporary folder; evaluate it against fp32 on the held-out texts (quant/report.py); then
rename the files into place and replace manifest.json last (runtime/manifest.py writes it), so a crash
never leaves a half-listed variant.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

from clova_edge.runtime import manifest as mf
from clova_edge.runtime.errors import ClovaEdgeError, ManifestError, QuantizeError

from . import calibrate as C
from .kvcache import calibrate_kv_scales, rewrite_int8_kv
from .prefill_attention import LAYOUT, rewrite_prefill_attention
from .recipe import QuantSettings
from .report import TOKENS_PER_TEXT, evaluation_ids, format_table, quality_report
from .rewrite import Progress, rewrite_model, summarize

QUANT_OPS = {"MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeMatMul", "MatMulInteger",
             "QLinearMatMul", "DequantizeLinear", "QuantizeLinear", "MatMulIntegerToFloat"}


def _already_quantized(model: onnx.ModelProto) -> str | None:
    return next((n.op_type for n in model.graph.node if n.op_type in QUANT_OPS), None)


def memory_estimate(manifest: mf.Manifest, weight_bytes: int, kv_dtype: str,
                    context: int = 4096) -> dict[str, int]:
    """Expected resident bytes: weights (the data file) + a KV cache of `context` tokens."""
    ctx = min(context, manifest.config.context_length)
    kv = mf.kv_cache_bytes(manifest.config, kv_dtype, ctx)
    return {"weights_bytes": weight_bytes, "kv_cache_bytes": kv, "context": ctx,
            "total_bytes": weight_bytes + kv}


def _load_fp32(folder: Path) -> tuple[mf.Manifest, onnx.ModelProto]:
    try:
        manifest = mf.load_manifest(folder)
    except ManifestError as e:
        raise QuantizeError(f"{folder}: cannot quantize, no usable manifest.json ({e})") from None
    if "fp32" not in manifest.variants:
        raise QuantizeError(f"{folder}: has no fp32 variant to quantize "
                            f"(variants: {', '.join(manifest.variants)});"
                            " re-export the model")
    src = folder / manifest.variants["fp32"].file
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # onnx raises its own types (DecodeError, ValidationError)
        raise QuantizeError(f"{src}: cannot read it ({type(e).__name__}); re-export the model") from None
    op = _already_quantized(model)
    if op is not None:
        raise QuantizeError(f"{src}: already quantized (contains {op}); quantize an fp32 export instead")
    try:
        onnx.load_external_data_for_model(model, str(src.parent))
    except Exception as e:  # e.g. onnx refuses external data that is a symlink or has several hard links
        raise QuantizeError(f"{folder}: cannot read the fp32 weights ({str(e)[:200]}); "
                            "if they are links, copy the files instead, else re-export the model") from None
    return manifest, model


def _calibration(manifest: mf.Manifest, settings: QuantSettings, say) -> tuple[Any, Any, Any]:
    """(calibration ids, importance, hessians) as the recipe's method and KV cache need them."""
    r = settings.recipe
    if r.method not in ("act", "gptq") and r.kv_cache != "int8":
        return None, None, None
    try:
        ids = C.calibration_ids(manifest, settings.calibration_tokens)
    except ClovaEdgeError as e:   # e.g. a tokenizer.json the runtime tokenizer cannot read
        raise QuantizeError(f"{manifest.folder}: the calibration text could not be tokenized ({e}); method "
                            f"{r.method} and an int8 KV cache need it: "
                            "choose --recipe with method search") from None
    if r.method == "gptq":
        say("calibration: activation covariances (GPTQ)")
        hessians = C.activation_hessians(manifest, ids, threads=settings.threads)
        return ids, {a: h.diagonal().copy() for a, h in hessians.items()}, hessians   # E[x_k^2] = diag H
    if r.method == "act":
        say("calibration: activation statistics")
        return ids, C.activation_importance(manifest, ids, threads=settings.threads), None
    return ids, None, None


def quantize_model_folder(folder: Path, settings: QuantSettings | int, *, out_folder: Path | None = None,
                          progress: Progress = None, **make: Any) -> dict[str, Any]:
    """Quantize the fp32 variant of an exported folder; returns the new manifest variant entry.

    settings: a QuantSettings, or the bits (4 or 8) of a default recipe with QuantSettings.make's words in
    `make` (recipe=, block_size=, kv_cache=, method=, evaluate=, eval_tokens=, calibration_tokens=).
    out_folder None writes the variant into `folder`; otherwise a new folder holding the manifest, the
    tokenizer files and only the new variant is created (atomically).
    """
    if not isinstance(settings, QuantSettings):
        settings = QuantSettings.make(bits=settings, **make)
    elif make:
        raise QuantizeError(f"pass either QuantSettings or keyword options, not both ({', '.join(make)})")
    folder, recipe, say = Path(folder), settings.recipe, progress or (lambda _m: None)
    if out_folder is not None and Path(out_folder).exists():
        raise QuantizeError(f"{out_folder}: already exists; remove it or choose another out_folder")
    t0 = time.perf_counter()
    manifest, model = _load_fp32(folder)
    ids, importance, hessians = _calibration(manifest, settings, say)
    qmodel, records = rewrite_model(model, recipe, importance=importance, hessians=hessians,
                                    progress=progress)
    del model, hessians
    if recipe.kv_cache == "int8":
        say("calibration: int8 KV cache scales")
        rewrite_int8_kv(qmodel, calibrate_kv_scales(manifest, ids, threads=settings.threads))
        rewrite_prefill_attention(qmodel)
    quant_seconds = time.perf_counter() - t0
    name = recipe.variant
    onnx_name, data_name = f"model.{name}.onnx", f"model.{name}.onnx.data"
    target = Path(out_folder) if out_folder is not None else folder
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent if out_folder else folder))
    try:
        say(f"writing {onnx_name}")
        onnx.save_model(qmodel, str(tmp / onnx_name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        del qmodel
        for f in (onnx_name, data_name):
            os.chmod(tmp / f, 0o644)
        data_bytes = (tmp / data_name).stat().st_size
        quantization: dict[str, Any] = {
            "scheme": "MatMulNBits", "recipe": recipe.name, "summary": recipe.summary, "bits": recipe.bits,
            "recipe_fingerprint": recipe.fingerprint(C.calibration_text()),
            "block_size": recipe.default.block_size, "symmetric": recipe.default.symmetric,
            "method": recipe.method, "rotate": recipe.rotate, "accuracy_level": recipe.accuracy_level,
            "kv_cache": recipe.kv_cache,
            **({"prompt_attention": LAYOUT} if recipe.kv_cache == "int8" else {}),
            "lm_head": None if recipe.lm_head is None else recipe.lm_head.describe(),
            "calibration": {"files": list(C.CALIBRATION_FILES), "tokens": None if ids is None else len(ids)},
            "seconds": round(quant_seconds, 1), **summarize(records), "tensors": records}
        if settings.evaluate:
            say("evaluating fp32 vs quantized on the held-out evaluation texts")
            quality = quality_report(manifest,
                                     evaluation_ids(manifest, settings.eval_tokens or TOKENS_PER_TEXT),
                                     quantized_file=tmp / onnx_name, threads=settings.threads)
            quantization["quality"] = quality
            say(format_table(quality, name))
        entry = mf.variant_entry(file=onnx_name, data_files=[data_name], kv_dtype=recipe.kv_cache,
                                 size_bytes=(tmp / onnx_name).stat().st_size + data_bytes,
                                 memory_estimate=memory_estimate(manifest, data_bytes, recipe.kv_cache),
                                 quantization=quantization)
        _install(folder, tmp, target, out_folder is not None, manifest, name, entry, (onnx_name, data_name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def upgrade_prompt_attention(folder: Path, name: str) -> bool:
    """Give variant `name` of a folder quantized before quant/prefill_attention.py its float prompt path.
    Only the graph file changes (the weights file and every number in it stay as they are); it is written
    beside the old one and renamed over it, then the manifest. Returns False when there is nothing to do."""
    folder = Path(folder)
    raw = mf.read_raw(folder)
    entry = raw["variants"].get(name) or {}
    q = entry.get("quantization") or {}
    if q.get("kv_cache") != "int8" or q.get("prompt_attention") == LAYOUT:
        return False
    model = onnx.load(str(folder / entry["file"]), load_external_data=False)
    if not rewrite_prefill_attention(model):
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{entry['file']}.", dir=folder)
    os.close(fd)
    try:
        onnx.save_model(model, tmp)       # external-data references are kept: same weights file, same offsets
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / entry["file"])
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    graph = folder / entry["file"]
    entry["quantization"] = {**q, "prompt_attention": LAYOUT}
    entry["size_bytes"] = graph.stat().st_size + sum((folder / f).stat().st_size for f in entry["data_files"])
    raw["files"] = {**(raw.get("files") or {}), entry["file"]: mf.file_entry(graph)}
    mf.write_manifest(folder, raw)
    return True


def _install(folder: Path, tmp: Path, target: Path, new_folder: bool, manifest: mf.Manifest, name: str,
             entry: dict[str, Any], written: tuple[str, str]) -> None:
    """Move the variant's files from tmp into place and list them in the manifest (replaced last)."""
    raw = mf.read_raw(folder)
    files = {**(raw.get("files") or {}), **{f: mf.file_entry(tmp / f) for f in written}}
    if not new_folder:
        for f in reversed(written):          # the data file first: a listed graph never lacks its weights
            os.replace(tmp / f, folder / f)
        raw["variants"][name] = entry
        raw["files"] = files
        mf.write_manifest(folder, raw)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    model_files = {x for v in manifest.variants.values() for x in (v.file, *v.data_files)}
    keep = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.name not in model_files | {mf.MANIFEST_NAME}}
    for f in keep:
        shutil.copy2(folder / f, tmp / f)
    raw["variants"] = {name: entry}
    raw["files"] = {k: v for k, v in files.items() if k in keep | set(written)}
    mf.write_manifest(tmp, raw)
    os.chmod(tmp, 0o755)
    if target.exists():
        raise QuantizeError(f"{target}: already exists; remove it or choose another out_folder")
    os.replace(tmp, target)
