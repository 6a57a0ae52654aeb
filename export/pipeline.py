"""export_model: a Hugging Face model (Hub id, folder or .gguf) becomes a verified clova-edge model folder.

Stages, each reported through `progress`: load (resolve + read the weights), trace (ONNX with fused ops),
optimise (graph check and summary), verify (against transformers, through the shared KV cache), save
(tokenizer files, manifest.json, checksums), then the quantized variants when quant/ provides them.
Everything is written into a temporary folder next to out_dir and renamed into place only when complete, so an
interrupted export leaves nothing half-written; an existing out_dir is replaced (atomically) only with force.
"""

from __future__ import annotations

import gc
import importlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clova_edge.runtime import manifest as mf
from clova_edge.runtime.errors import ExportError
from clova_edge.runtime.manifest import ModelConfig

from . import source as S
from .llama import from_hf_state_dict
from .to_onnx import graph_summary, trace_to_onnx
from .verify import prompt_ids, verify

Progress = Callable[[str], None] | None
ONNX_FILE, DATA_FILE = "model.onnx", "model.onnx.data"
QUANT_BITS = {"int8": 8, "int4": 4}


def parameter_count(c: ModelConfig) -> int:
    h, d = c.hidden_size, c.head_dim
    layer = (h * (c.num_attention_heads + 2 * c.num_key_value_heads) * d + c.num_attention_heads * d * h
             + 3 * h * c.intermediate_size + 2 * h)
    return c.vocab_size * h * (1 if c.tie_word_embeddings else 2) + c.num_hidden_layers * layer + h


def _check_disk(folder: Path, params: int, quantize: tuple[str, ...]) -> None:
    # fp32 graph + int8 (~1.1 B/param) + int4 (~0.6 B/param) + 10% slack.
    need = int(params * (4 + 1.1 * ("int8" in quantize) + 0.6 * ("int4" in quantize)) * 1.1)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ExportError(f"{folder}: not enough disk space for the export ({free / 1e9:.1f} GB free, about "
                          f"{need / 1e9:.1f} GB needed); free some space or choose another output folder")


def _io_section(c: ModelConfig) -> dict[str, Any]:
    kv = ["batch", c.num_key_value_heads, "capacity", c.head_dim]
    inputs = {mf.INPUT_IDS: {"dtype": "int64", "shape": ["batch", "sequence"]},
              mf.SEQLENS_K: {"dtype": "int32", "shape": ["batch"]},
              mf.TOTAL_SEQ_LEN: {"dtype": "int32", "shape": []},
              mf.LOGITS_INDEX: {"dtype": "int64", "shape": ["logit_rows"]}}
    outputs = {mf.LOGITS: {"dtype": "float32", "shape": ["batch", "logit_rows", c.vocab_size]}}
    # the cache element type differs per variant (INT4 keeps it in int8): variants.<name>.kv_dtype says
    cache = {"dtype": "variants.<name>.kv_dtype", "shape": kv}
    for (pk, pv), (ok, ov) in zip(mf.past_names(c.num_hidden_layers), mf.present_names(c.num_hidden_layers)):
        inputs |= {pk: cache, pv: cache}
        outputs |= {ok: cache, ov: cache}
    return {"inputs": inputs, "outputs": outputs, "kv_layout": "BNSH", "shared_buffer": True,
            "rotary_in_cache": True}


def build_manifest(src: S.Source, config: ModelConfig, folder: Path, parity: dict[str, Any],
                   graph: dict[str, Any]) -> dict[str, Any]:
    tokenizer = S.tokenizer_section(src, folder)
    size = sum((folder / f).stat().st_size for f in (ONNX_FILE, DATA_FILE))
    return {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION,
        "source": {"id": src.id, "revision": src.revision, "architecture": src.architecture,
                   "dtype": src.dtype, "gguf_file": src.gguf_file, "parameters": parameter_count(config)},
        "model": {f: getattr(config, f) for f in ModelConfig.__dataclass_fields__},
        "io": _io_section(config),
        "tokenizer": tokenizer,
        "stop": S.stop_section(src, tokenizer),
        "generation": S.generation_section(src),
        "chat": S.chat_section(src),
        "variants": {"fp32": mf.variant_entry(file=ONNX_FILE, data_files=[DATA_FILE], kv_dtype="float32",
                                              size_bytes=size)},
        "verification": {"fp32": parity},
        "graph": graph,
        "files": {},
    }


def _check_quantize(quantize: tuple[str, ...]) -> None:
    unknown = [q for q in quantize if q not in QUANT_BITS]
    if unknown:
        raise ExportError(f"unknown quantization {unknown}; choose from {', '.join(QUANT_BITS)} "
                          f"(fp32 is always exported)")


def _run_quantizers(folder: Path, quantize: tuple[str, ...], say: Callable[[str], None]) -> None:
    if not quantize:
        return
    try:
        quantize_folder = importlib.import_module("clova_edge.quant").quantize_model_folder
    except (ImportError, AttributeError):
        try:
            quantize_folder = importlib.import_module("clova_edge.quant.apply").quantize_model_folder
        except (ImportError, AttributeError) as e:
            say(f"quantize: skipped ({', '.join(quantize)}): clova_edge.quant is not available ({e})")
            return
    for name in quantize:
        say(f"quantize: {name}")
        quantize_folder(folder, QUANT_BITS[name], progress=say)


def _replace_atomically(tmp: Path, out_dir: Path, *, force: bool = True) -> None:
    old = None
    if out_dir.exists() and force:
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)   # fails if out_dir appeared meanwhile (another export): never replaced unasked
    except OSError as e:
        raise ExportError(f"{out_dir}: appeared while exporting (another export?) and was kept; "
                          f"pass --force to replace it ({e.strerror})") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out_dir: Path) -> None:
    """Tidy what a killed export left beside out_dir (only folders whose process is gone): a partial folder
    is deleted; a good model moved aside by a --force replace is put back if the new one never arrived."""
    for p in sorted(out_dir.parent.glob(f".{out_dir.name}.*-*")):
        kind, _, pid = p.name.removeprefix(f".{out_dir.name}.").rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists() and (p / mf.MANIFEST_NAME).is_file():
            p.rename(out_dir)
        else:
            shutil.rmtree(p, ignore_errors=True)


def export_model(source: str | Path, out_dir: Path, *, force: bool = False,
                 quantize: tuple[str, ...] = ("int8", "int4"), context_length: int | None = None,
                 progress: Progress = None) -> Path:
    """Export source to out_dir (model.onnx + data, tokenizer files, manifest.json); returns out_dir."""
    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    quantize = tuple(q for q in quantize if q not in ("fp32", "none"))   # fp32 is always exported
    _check_quantize(quantize)
    if out_dir.parent.is_dir():
        clean_leftovers(out_dir)
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir}: already exists; choose another folder or pass --force to replace it")
    t0 = time.monotonic()
    say(f"load: resolving {source}")
    src = S.resolve(source)
    config = S.model_config(src, context_length)
    params = parameter_count(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_disk(out_dir.parent, params, quantize)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        say(f"load: {src.architecture}, {params / 1e6:.1f}M parameters, {config.num_hidden_layers} layers, "
            f"context {config.context_length}, weights {src.dtype}")
        # The reference model is loaded twice (here and for verify) rather than kept: holding it through the
        # trace would add its fp32 size to the peak memory (the 0.5B model peaks at 5.5 GB, in verify).
        module = from_hf_state_dict(config, S.load_hf_model(src).state_dict())
        gc.collect()
        say("trace: ONNX (dynamo, GroupQueryAttention / SkipSimplifiedLayerNormalization)")
        t = time.monotonic()
        trace_to_onnx(module, tmp / ONNX_FILE)
        del module
        gc.collect()
        say(f"trace: done in {time.monotonic() - t:.1f} s")
        say("optimise: checking the graph")
        graph = graph_summary(tmp / ONNX_FILE)
        if "GroupQueryAttention" not in graph["operators"]:
            raise ExportError(f"{tmp / ONNX_FILE}: the traced graph has no GroupQueryAttention; exporter bug")
        ops = ", ".join(f"{k} {v}" for k, v in graph["operators"].items())
        say(f"optimise: {graph['nodes']} nodes: {ops}")
        S.write_tokenizer_files(src, tmp)
        if not (tmp / "tokenizer.json").is_file():
            say("save: warning: the source has no tokenizer.json; the runtime needs one")
        say("verify: PyTorch vs ONNX, prefill + 16 greedy steps through the shared KV cache")
        t = time.monotonic()
        hf = S.load_hf_model(src)
        parity = verify(tmp / ONNX_FILE, hf, config, prompt_ids(tmp, config.vocab_size))
        del hf
        gc.collect()
        say(f"verify: max |diff| {parity.max_abs_diff:.2e} (relative {parity.max_rel_diff:.2e}, "
            f"tolerance {parity.tolerance_rel:g}), greedy tokens equal: {parity.tokens_equal}, "
            f"{time.monotonic() - t:.1f} s")
        say("save: manifest.json")
        manifest = build_manifest(src, config, tmp, parity.to_dict(), graph)
        mf.write_manifest(tmp, manifest)
        _run_quantizers(tmp, quantize, say)
        manifest = mf.read_raw(tmp)
        manifest["files"] = mf.files_section(tmp)
        mf.write_manifest(tmp, manifest)
        mf.load_manifest(tmp)   # what the runtime will read must validate
        _replace_atomically(tmp, out_dir, force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sizes = ", ".join(f"{name} {v.get('size_bytes', 0) / 1e6:.0f} MB"
                      for name, v in manifest["variants"].items())
    say(f"done: {out_dir} in {time.monotonic() - t0:.0f} s; {sizes}; parity max |diff| "
        f"{parity.max_abs_diff:.2e}, tokens equal {parity.tokens_equal}")
    return out_dir
