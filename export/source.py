"""Resolve what the user asked to export into a local Hugging Face model, and read what the export needs.

A source is a Hub id (downloaded with huggingface_hub), a local folder with config.json and safetensors (or
pytorch .bin) weights, or a `.gguf` file (loaded and dequantized by transformers). This module checks the
architecture (dense LlamaForCausalLM only), derives the ModelConfig, loads the reference PyTorch model, and
collects the tokenizer files, special tokens, stop tokens and generation defaults. It raises ExportError with
what to do; it never writes anything except into the folder it is given.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clova_edge.runtime.errors import ExportError
from clova_edge.runtime.manifest import ModelConfig

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
HYPERCLOVAX_CONTEXT = 4096   # the model card promises 4K although config.json says 8192
HYPERCLOVAX_STOP_STRINGS = ("<|endofturn|>", "<|stop|>")
HYPERCLOVAX_REPETITION_PENALTY = 1.2   # the model card's recommendation (HF semantics)
# The model card's system prompt: the assistant's name and today's date ({today} is filled in at chat time).
HYPERCLOVAX_SYSTEM = '- AI 언어모델의 이름은 "CLOVA X" 이며 네이버에서 만들었다.\n- 오늘은 {today}이다.'
# Tokens that end a turn or a text in the chat formats we know; whichever the vocabulary has become stop ids.
STOP_TOKEN_CANDIDATES = ("<|im_end|>", "<|endofturn|>", "<|stop|>", "<|endoftext|>", "<|eot_id|>",
                         "<|end_of_text|>")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
GENERATION_KEYS = ("temperature", "top_k", "top_p", "repetition_penalty", "do_sample", "max_new_tokens")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    """A resolved model source: a local folder (and maybe a .gguf file in it) plus its raw config."""

    id: str                  # what the user gave: Hub id, folder or .gguf path
    revision: str | None     # the Hub commit, when downloaded
    folder: Path
    gguf_file: str | None    # file name inside folder, for GGUF sources
    hf_config: dict[str, Any]

    @property
    def architecture(self) -> str:
        return (self.hf_config.get("architectures") or ["?"])[0]

    @property
    def dtype(self) -> str:
        if self.gguf_file:
            return "gguf"
        return str(self.hf_config.get("torch_dtype") or self.hf_config.get("dtype") or "float32")


def resolve(source: str | Path) -> Source:
    """Find the model locally (downloading a Hub id) and check that it can be exported."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        src = Source(str(source), None, path.parent, path.name, _gguf_config(path))
    elif path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            src = Source(str(source), None, path, ggufs[0].name, _gguf_config(ggufs[0]))
        else:
            src = Source(str(source), None, path, None, _read_config(path))
            _check_weights(path)
    elif path.exists():
        raise ExportError(f"{source}: not a model folder or a .gguf file")
    elif _HUB_ID.match(str(source)):
        folder, revision = _download(str(source))
        src = Source(str(source), revision, folder, None, _read_config(folder))
        _check_weights(folder)
    else:
        raise ExportError(f"{source}: no such folder or file, and not a Hugging Face Hub id (owner/name)")
    check_supported(src.hf_config, str(source))
    return src


def _download(repo_id: str) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not list(folder.glob("*.safetensors")):   # an older repo with PyTorch .bin weights only
            folder = Path(snapshot_download(repo_id, allow_patterns=[*patterns, "pytorch_model*.bin"]))
    except Exception as e:  # noqa: BLE001 - the hub client raises many unrelated types, all "cannot get it"
        raise ExportError(
            f"{repo_id}: cannot download from the Hugging Face Hub ({type(e).__name__}: {str(e)[:200]}). "
            "Check the internet connection and the model id, or download the model elsewhere and pass its "
            "local folder instead") from None
    return folder, folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ExportError(f"{folder}: no config.json; pass a Hugging Face model folder (config.json + "
                          f"*.safetensors), a .gguf file, or a Hub id")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None


def _gguf_config(path: Path) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, KeyError) as e:
        raise ExportError(f"{path}: cannot read as a GGUF model ({e})") from None
    d = config.to_dict()
    if not d.get("architectures"):   # GGUF carries no HF class name; LlamaConfig -> LlamaForCausalLM
        d["architectures"] = [type(config).__name__.removesuffix("Config") + "ForCausalLM"]
    return d


def _check_weights(folder: Path) -> None:
    if not (list(folder.glob("*.safetensors")) or list(folder.glob("pytorch_model*.bin"))):
        raise ExportError(f"{folder}: no weights found (expected *.safetensors or pytorch_model*.bin next to "
                          f"config.json); download the complete model or pass a .gguf file")


def check_supported(cfg: dict[str, Any], where: str) -> None:
    """Raise ExportError unless cfg describes a dense Llama this exporter handles."""
    arch = (cfg.get("architectures") or ["(none)"])[0]
    if arch not in SUPPORTED_ARCHITECTURES or cfg.get("model_type", "llama") != "llama":
        raise ExportError(f"{where}: architecture {arch} (model_type {cfg.get('model_type')}) is not "
                          f"supported; "
                          f"clova-edge exports dense {', '.join(SUPPORTED_ARCHITECTURES)} models "
                          f"(e.g. HyperCLOVAX-SEED-Text-Instruct-0.5B, SmolLM2)")
    problems = []
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        problems.append("biases in attention/MLP")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {cfg.get('hidden_act')}")
    if _rope_type(cfg) != "default":
        problems.append(f"rope scaling {_rope_type(cfg)}")
    if problems:
        raise ExportError(f"{where}: this Llama variant is not supported ({', '.join(problems)}); clova-edge "
                          f"exports plain Llama (no biases, SiLU, unscaled RoPE)")
    heads = int(cfg.get("num_attention_heads") or 1)
    head_dim = int(cfg.get("head_dim") or int(cfg.get("hidden_size") or 0) // heads)
    if head_dim % 16:   # checked before tracing: onnxruntime would fail deep inside a session, much later
        raise ExportError(f"{where}: head_dim {head_dim} is not a multiple of 16, which the attention kernel "
                          f"clova-edge exports to (onnxruntime's GroupQueryAttention) requires; this model "
                          f"cannot be exported")


def _rope_type(cfg: dict[str, Any]) -> str:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return str(params.get("rope_type") or params.get("type") or "default")


def _rope_theta(cfg: dict[str, Any]) -> float:
    if "rope_theta" in cfg:
        return float(cfg["rope_theta"])
    return float((cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))


def is_hyperclovax(src: Source) -> bool:
    """HyperCLOVAX or its stand-in: by name, or by its chat format's <|endofturn|> token."""
    return "hyperclovax" in src.id.lower() or "<|endofturn|>" in special_tokens(src.folder)


def model_config(src: Source, context_length: int | None = None) -> ModelConfig:
    """The manifest's ModelConfig. context_length: explicit override, else max_position_embeddings, capped at
    4096 for HyperCLOVAX (its card promises 4K; config.json says 8192, never evaluated past 4K)."""
    c = src.hf_config
    heads = int(c["num_attention_heads"])
    if context_length is None:
        context_length = int(c.get("max_position_embeddings", 4096))
        if is_hyperclovax(src):
            context_length = min(context_length, HYPERCLOVAX_CONTEXT)
    if context_length < 16:
        raise ExportError(f"context_length must be at least 16, got {context_length}")
    return ModelConfig(
        vocab_size=int(c["vocab_size"]), hidden_size=int(c["hidden_size"]),
        intermediate_size=int(c["intermediate_size"]), num_hidden_layers=int(c["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=int(c.get("head_dim") or int(c["hidden_size"]) // heads), rope_theta=_rope_theta(c),
        rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(c.get("tie_word_embeddings", False)), context_length=int(context_length))


def load_hf_model(src: Source) -> Any:
    """The reference transformers LlamaForCausalLM in fp32, eval mode (weights dequantized for GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(src.folder, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ExportError(f"{src.id}: transformers could not load the weights "
                          f"({type(e).__name__}: {e})") from None
    return model.eval()


def write_tokenizer_files(src: Source, dest: Path) -> list[str]:
    """Copy (or, for GGUF, convert) the tokenizer files into dest; chat template inlined into
    tokenizer_config.json. Returns the names written."""
    if src.gguf_file:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src.folder, gguf_file=src.gguf_file)
        tok.save_pretrained(dest)
        for extra in set(p.name for p in dest.iterdir()) - set(TOKENIZER_FILES) - {"chat_template.jinja"}:
            if (dest / extra).is_file() and extra.endswith(".json") and "token" in extra:
                (dest / extra).unlink()
    else:
        for name in (*TOKENIZER_FILES, "chat_template.jinja"):
            if (src.folder / name).is_file():
                shutil.copyfile(src.folder / name, dest / name)
    inline_chat_template(dest)
    return [n for n in TOKENIZER_FILES if (dest / n).is_file()]


def inline_chat_template(folder: Path, *, remove_jinja: bool = True) -> None:
    """transformers 5 saves the chat template as chat_template.jinja; copy it into tokenizer_config.json."""
    jinja, cfg_path = folder / "chat_template.jinja", folder / "tokenizer_config.json"
    if jinja.is_file() and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not cfg.get("chat_template"):
            cfg["chat_template"] = jinja.read_text(encoding="utf-8")
            cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
        if remove_jinja:
            jinja.unlink()


def special_tokens(folder: Path) -> dict[str, int]:
    """{content: id} of the added/special tokens, from tokenizer.json, else tokenizer_config.json."""
    out: dict[str, int] = {}
    tj, tc = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if tj.is_file():
        for t in json.loads(tj.read_text(encoding="utf-8")).get("added_tokens", []):
            if t.get("special", True):
                out[t["content"]] = int(t["id"])
    if tc.is_file():
        for i, t in (json.loads(tc.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}).items():
            out.setdefault(t["content"], int(i))
    return out


def _token_name(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def tokenizer_section(src: Source, folder: Path) -> dict[str, Any]:
    """The manifest's tokenizer section, read from the tokenizer files already written to folder."""
    specials = special_tokens(folder)
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}

    def token_id(key: str) -> int | None:
        name = _token_name(tc.get(key))
        if name in specials:
            return specials[name]
        value = src.hf_config.get(f"{key}_id")
        return value[0] if isinstance(value, list) else value

    return {"file": "tokenizer.json", "config_file": "tokenizer_config.json",
            "bos_token_id": token_id("bos_token"), "eos_token_id": token_id("eos_token"),
            "pad_token_id": token_id("pad_token"),
            "bos_token": _token_name(tc.get("bos_token")), "eos_token": _token_name(tc.get("eos_token")),
            "has_chat_template": bool(tc.get("chat_template")), "special_tokens": specials}


def stop_section(src: Source, tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Stop token ids (turn/text ends the vocabulary has, plus eos) and stop strings (HyperCLOVAX's)."""
    specials = tokenizer["special_tokens"]
    ids = [specials[t] for t in STOP_TOKEN_CANDIDATES if t in specials]
    eos = src.hf_config.get("eos_token_id")
    for i in [*(eos if isinstance(eos, list) else [eos]), tokenizer.get("eos_token_id")]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    strings = list(HYPERCLOVAX_STOP_STRINGS) if is_hyperclovax(src) else []
    return {"token_ids": ids, "strings": strings}


def generation_section(src: Source) -> dict[str, Any]:
    """Generation defaults: generation_config.json's sampling fields; HyperCLOVAX gets its card's
    repetition_penalty 1.2 (it ships no generation_config.json); otherwise repetition_penalty 1.0."""
    path = src.folder / "generation_config.json"
    gen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and not src.gguf_file else {}
    out = {k: gen[k] for k in GENERATION_KEYS if k in gen}
    out.setdefault("repetition_penalty", 1.0)
    if is_hyperclovax(src):
        out["repetition_penalty"] = HYPERCLOVAX_REPETITION_PENALTY
    out["source"] = "generation_config.json" if gen else "defaults"
    return out


def chat_section(src: Source) -> dict[str, Any]:
    """Chat defaults the CLI uses: HyperCLOVAX's card gives a system prompt (name + today's date)."""
    return {"default_system": HYPERCLOVAX_SYSTEM} if is_hyperclovax(src) else {}
