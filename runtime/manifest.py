"""The versioned manifest.json that sits next to every exported model, and the graph's I/O contract.

The exporter writes it; the runtime reads only it (never guesses from file names). Reading validates every
field the runtime needs and raises ManifestError naming the field and what to run.

Graph contract (one graph serves prefill and decode; B = batch, S = new tokens, M = KV buffer capacity):
  inputs   input_ids              int64   [B, S]
           seqlens_k              int32   [B]      tokens in the cache after this step, minus 1
           total_sequence_length  int32   []       past + S (onnxruntime GroupQueryAttention semantics)
           logits_index           int64   [L]      positions (0..S-1) of this step whose logits are wanted
           past_key_values.{i}.key / .value   [B, num_key_value_heads, M, head_dim]  (kv dtype)
  outputs  logits                 float32 [B, L, vocab_size]
           present.{i}.key / .value           same buffers as the past (bound in place: shared buffer)
The cache holds keys after rotary embedding (GroupQueryAttention does RoPE inside).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError

FORMAT = "clova-edge-model"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
KV_DTYPE_BYTES = {"float32": 4, "float16": 2, "int8": 1}   # variants.<name>.kv_dtype: bytes per cached value

INPUT_IDS = "input_ids"
SEQLENS_K = "seqlens_k"
TOTAL_SEQ_LEN = "total_sequence_length"
LOGITS_INDEX = "logits_index"
LOGITS = "logits"
PAST_KEY = "past_key_values.{i}.key"
PAST_VALUE = "past_key_values.{i}.value"
PRESENT_KEY = "present.{i}.key"
PRESENT_VALUE = "present.{i}.value"


def past_names(num_layers: int) -> list[tuple[str, str]]:
    """[(past key name, past value name)] per layer."""
    return [(PAST_KEY.format(i=i), PAST_VALUE.format(i=i)) for i in range(num_layers)]


def present_names(num_layers: int) -> list[tuple[str, str]]:
    return [(PRESENT_KEY.format(i=i), PRESENT_VALUE.format(i=i)) for i in range(num_layers)]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture numbers, named as in Hugging Face config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    context_length: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**{f: _need(d, f, "model") for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Variant:
    """One exported graph of the model: fp32, int8 or int4."""

    name: str
    file: str                      # the .onnx file, relative to the folder
    data_files: tuple[str, ...]    # its external data files
    kv_dtype: str                  # "float32" (the cache's element type)
    quantization: dict[str, Any]   # {} for fp32; else scheme, bits, block_size, ... and quality figures
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    folder: Path
    raw: dict[str, Any]
    config: ModelConfig
    variants: dict[str, Variant]
    bos_token_id: int | None
    stop_token_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]
    generation: dict[str, Any]     # defaults: repetition_penalty, temperature, ...
    tokenizer_file: str
    tokenizer_config_file: str

    @property
    def default_variant(self) -> str:
        for name in ("int4", "int8", "fp32"):
            if name in self.variants:
                return name
        return next(iter(self.variants))

    def variant(self, name: str | None) -> Variant:
        name = name or self.default_variant
        if name not in self.variants:
            have = ", ".join(self.variants)
            how = (f"run `clova-edge quantize {self.folder} --bits {name[3:]}` to make it"
                   if name in ("int4", "int8") else "variant names are int4, int8 and fp32")
            raise ManifestError(f"{self.folder}: variant {name!r} was not exported (have: {have}); {how}")
        return self.variants[name]


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ManifestError(f"missing field {where + '.' if where else ''}{key}")
    return d[key]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_manifest(folder: str | Path) -> Manifest:
    """Read and validate folder/manifest.json. Raises ManifestError with what to run."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such model folder; run `make export` or "
                            f"`clova-edge export MODEL {folder}`")
    if not path.is_file():
        raise ManifestError(f"{path}: not found; this is not an exported clova-edge model folder "
                            f"(run `clova-edge export MODEL {folder}`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e}); re-export the model") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a clova-edge manifest (field 'format' must be {FORMAT!r}); "
                            f"re-export the model (`clova-edge export MODEL {folder}`)")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{path}: format_version {version!r} is not supported by this clova-edge "
                            f"(it reads version {FORMAT_VERSION}); upgrade clova-edge or re-export the model")
    try:
        config = ModelConfig.from_dict(_need(raw, "model", ""))
        variants = {}
        for name, v in _need(raw, "variants", "").items():
            variants[name] = Variant(
                name=name, file=str(_need(v, "file", f"variants.{name}")),
                data_files=tuple(v.get("data_files", ())), kv_dtype=str(v.get("kv_dtype", "float32")),
                quantization=dict(v.get("quantization") or {}), size_bytes=int(v.get("size_bytes", 0)))
        if not variants:
            raise ManifestError(f"{path}: no variants listed; re-export the model")
        tok = _need(raw, "tokenizer", "")
        stop = _need(raw, "stop", "")
        return Manifest(
            folder=folder, raw=raw, config=config, variants=variants,
            bos_token_id=tok.get("bos_token_id"),
            stop_token_ids=tuple(int(i) for i in _need(stop, "token_ids", "stop")),
            stop_strings=tuple(str(s) for s in stop.get("strings", ())),
            generation=dict(raw.get("generation") or {}),
            tokenizer_file=str(_need(tok, "file", "tokenizer")),
            tokenizer_config_file=str(_need(tok, "config_file", "tokenizer")),
        )
    except ManifestError as e:
        if str(path) in str(e):
            raise
        raise ManifestError(f"{path}: {e}; re-export the model (`clova-edge export MODEL {folder}`)") \
            from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ManifestError(f"{path}: malformed ({type(e).__name__}: {e}); re-export the model") from None


def verify_files(manifest: Manifest, names: list[str] | None = None) -> None:
    """Check that the listed files exist with the recorded size and sha256 (the manifest's 'files')."""
    files = manifest.raw.get("files") or {}
    for name in names if names is not None else list(files):
        entry = files.get(name)
        path = manifest.folder / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing; re-export the model (`clova-edge export ...`)")
        if entry is None:
            continue
        if path.stat().st_size != entry.get("bytes"):
            raise ManifestError(f"{path}: size {path.stat().st_size} != {entry.get('bytes')} recorded in "
                                f"manifest.json (truncated or replaced); re-export the model")
        if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{path}: checksum does not match manifest.json (corrupted); "
                                "re-export the model")


# -- writing: the exporter and the quantizer build a manifest only through these -----------------------------
def file_entry(path: Path) -> dict[str, Any]:
    """The manifest's record of one file: size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def files_section(folder: Path) -> dict[str, dict[str, Any]]:
    """file_entry of every regular file in folder but the manifest itself."""
    return {p.name: file_entry(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST_NAME}


def variant_entry(*, file: str, data_files: list[str], kv_dtype: str, size_bytes: int,
                  quantization: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """variants.<name>, validated on the way in (the reader above checks the same fields on the way out)."""
    if kv_dtype not in KV_DTYPE_BYTES:
        raise ManifestError(f"kv_dtype {kv_dtype!r} is not one of {', '.join(KV_DTYPE_BYTES)}")
    return {"file": file, "data_files": list(data_files), "kv_dtype": kv_dtype, "size_bytes": int(size_bytes),
            "quantization": dict(quantization or {}), **extra}


def read_raw(folder: Path) -> dict[str, Any]:
    """manifest.json as a dict, to be changed and written back with write_manifest (load_manifest
    validates)."""
    return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))


def write_manifest(folder: Path, raw: dict[str, Any]) -> None:
    """Write folder/manifest.json atomically (a temporary file renamed over it): a reader sees old or new."""
    import os
    import tempfile

    path = Path(folder) / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(raw, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.chmod(tmp, 0o644)                  # mkstemp makes 0600 files
    os.replace(tmp, path)


def kv_cache_bytes(config: ModelConfig, kv_dtype: str, tokens: int) -> int:
    """Bytes of the K and V caches of `tokens` positions."""
    return (2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
            * KV_DTYPE_BYTES[kv_dtype]
            * tokens)
