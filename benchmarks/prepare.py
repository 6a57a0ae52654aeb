"""Turn one Hugging Face folder into every runtime's own model format, and say what each weighs.

  gguf      convert_hf_to_gguf (f16) then llama-quantize: Q4_0, Q4_K_M, Q8_0
  ortgenai  onnxruntime-genai's model builder: -p int4 / int8, CPU, accuracy level 4
  optimum   optimum's text-generation-with-past ONNX export (fp32; --no-post-process: > 2 GB graphs), and the
            same quantized with onnxruntime dynamic INT8 (optimum's own quantizer, AVX-512 VNNI config)
  clova     `clova-edge export` (fp32 + int8 + int4); extra_recipe_folder: re-quantized with another recipe
Each function skips work whose output exists and returns paths; `disk_bytes` and `weight_bytes_per_token`
measure what the results report. Outputs go under the caller's work folder (.cache/bench/, ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from .envs import LlamaCpp

GGUF_TYPES = ("Q4_0", "Q4_K_M", "Q8_0")


def selected(label: str, only: list[str] | None) -> bool:
    """--only: a row runs when a word is part of its label, or equals it when the word ends with '$'."""
    return not only or any(label == s[:-1] if s.endswith("$") else s in label for s in only)


def _run(cmd: list, log: Path, env: dict | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        rc = subprocess.call(["nice", "-n", "10", *map(str, cmd)], stdout=f, stderr=subprocess.STDOUT,
                             env=env)
    if rc != 0:
        raise RuntimeError(f"{Path(str(cmd[0])).name} failed (exit {rc}); see {log}")


def gguf_models(hf: Path, out: Path, llama: LlamaCpp, logs: Path) -> dict[str, Path]:
    """{'f16': ..., 'Q4_0': ..., 'Q4_K_M': ..., 'Q8_0': ...} GGUF files converted from hf."""
    out.mkdir(parents=True, exist_ok=True)
    f16 = out / "f16.gguf"
    if not f16.is_file():
        _run([sys.executable, "-m", "clova_edge.benchmarks.gguf_convert", llama.convert_script, hf, f16],
             logs / "gguf-convert.log")
    paths = {"f16": f16}
    for qtype in GGUF_TYPES:
        paths[qtype] = out / f"{qtype}.gguf"
        if not paths[qtype].is_file():
            _run([llama.tool("llama-quantize"), f16, paths[qtype], qtype, "2"], logs / "gguf-quantize.log",
                 env=llama.env())
    return paths


def ortgenai_model(hf: Path, out: Path, python: Path, precision: str, logs: Path) -> Path:
    if not (out / "genai_config.json").is_file():
        _run([python, "-m", "onnxruntime_genai.models.builder", "-m", hf, "-o", out, "-p", precision,
              "-e", "cpu", "-c", out.parent / "hf-cache", "--extra_options", "int4_accuracy_level=4"],
             logs / f"ortgenai-{precision}.log")
    return out


def optimum_models(hf: Path, out: Path, python: Path, logs: Path) -> dict[str, Path]:
    fp32, int8 = out / "fp32", out / "int8"
    if not (fp32 / "model.onnx").is_file():
        _run([python, "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", hf, "--task",
              "text-generation-with-past", "--no-post-process", fp32], logs / "optimum-export.log")
    if not (int8 / "model_quantized.onnx").is_file():
        _run([python, "-m", "optimum.commands.optimum_cli", "onnxruntime", "quantize", "--onnx_model", fp32,
              "--avx512_vnni", "-o", int8], logs / "optimum-quantize.log")
    return {"fp32": fp32, "int8": int8}


def clova_model(hf: Path, out: Path, logs: Path, say: Callable[[str], None],
                bits: tuple[int, ...] = (8, 4)) -> Path:
    """The exported folder; a variant (of `bits`) quantized by another version of its default recipe (other
    rules or calibration text: quant/recipe.py fingerprint) is quantized again, so no row measures a stale
    one."""
    if not (out / "manifest.json").is_file():
        cli = Path(sys.executable).with_name("clova-edge")
        _run([cli, "export", hf, out, "--force"], logs / "clova-export.log")
    from clova_edge.quant import QuantSettings, quantize_model_folder

    for b in bits:
        settings = QuantSettings.make(bits=b, evaluate=False)
        if _stale(out, settings):
            say(f"  quantizing {out.name} with the current recipe {settings.recipe.name}")
            quantize_model_folder(out, settings)
        _upgrade(out, settings, say)
    return out


def _upgrade(folder: Path, settings, say: Callable[[str], None]) -> None:
    """Same weights, current graph layout (quant/apply.py upgrade_prompt_attention)."""
    from clova_edge.quant.apply import upgrade_prompt_attention

    if upgrade_prompt_attention(folder, settings.recipe.variant):
        say(f"  {folder.name}: {settings.recipe.variant} graph given the float prompt-attention path")


def _stale(folder: Path, settings) -> bool:
    """True when the folder's variant of this recipe was not made by these exact rules and calibration."""
    from clova_edge.quant.calibrate import calibration_text
    from clova_edge.runtime.manifest import read_raw

    entry = read_raw(folder)["variants"].get(settings.recipe.variant) or {}
    made = (entry.get("quantization") or {}).get("recipe_fingerprint")
    return made != settings.recipe.fingerprint(calibration_text())


def extra_recipe_folder(folder: Path, recipe: str, say: Callable[[str], None]) -> Path:
    """`folder` re-quantized with another INT4 recipe into a sibling folder (made once)."""
    from clova_edge.quant import QuantSettings, quantize_model_folder

    out = folder.with_name(f"{folder.name}-{recipe}")
    settings = QuantSettings.make(recipe=recipe, evaluate=False)
    if (out / "manifest.json").is_file() and _stale(out, settings):
        shutil.rmtree(out)
    if not (out / "manifest.json").is_file():
        say(f"  quantizing {folder.name} with recipe {recipe}")
        quantize_model_folder(folder, settings, out_folder=out)
    _upgrade(out, settings, say)
    return out


def disk_bytes(path: Path) -> int:
    """Bytes on disk of a model file or folder (every file in it)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def gguf_weight_bytes(path: Path) -> int:
    """Bytes of the tensors a decode step multiplies with: all but token_embd when an output.weight exists."""
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    untied = "output.weight" in tensors
    return sum(n for name, n in tensors.items() if not (untied and name == "token_embd.weight"))


def onnx_weight_bytes(model_file: Path) -> int:
    """Bytes of initializers that some non-Gather node reads (an embedding gather reads one row per token)."""
    import onnx

    m = onnx.load(str(model_file), load_external_data=False)
    gather_only: dict[str, bool] = {}
    for node in m.graph.node:
        for name in node.input:
            is_gather = node.op_type in ("Gather", "GatherBlockQuantized")
            gather_only[name] = gather_only.get(name, True) and is_gather
    total = 0
    for init in m.graph.initializer:
        if gather_only.get(init.name, False):
            continue
        ext = {e.key: e.value for e in init.external_data}
        total += int(ext["length"]) if "length" in ext else len(init.raw_data)
    return total


def hf_weight_bytes_fp32(hf: Path) -> int:
    """fp32 bytes of every parameter in the safetensors files (the tied embedding once: it is the LM head)."""
    total = 0
    for f in hf.glob("*.safetensors"):
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, t in header.items():
            if name != "__metadata__":
                n = 1
                for d in t["shape"]:
                    n *= d
                total += 4 * n
    return total


def first_onnx(folder: Path) -> Path:
    for name in ("model_quantized.onnx", "model.onnx"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.onnx"))
    if not found:
        raise FileNotFoundError(f"{folder}: no .onnx file")
    return found[0]


def env_with_threads(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}
