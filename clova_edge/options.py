"""The options the `clova-edge` commands share, and the one convention for naming the model folder.

Every command that runs a model takes the folder as its last positional argument (MODEL_DIR) or as -m/--model;
without either it is $CLOVA_EDGE_MODEL, else models/hyperclovax-0.5b (`make export`), else models/smollm2-135m
(`make demo`), else a one-line error saying which command makes one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from clova_edge.runtime.errors import ClovaEdgeError, PromptError

DEFAULT_MODEL_DIR = "models/hyperclovax-0.5b"   # where `make export` writes
DEMO_MODEL_DIR = "models/smollm2-135m"          # where `make demo` writes
VARIANTS = ("int4", "int8", "fp32")


def model_dir(path: Optional[Path], option: Optional[Path] = None) -> Path:
    """MODEL_DIR or --model, else $CLOVA_EDGE_MODEL, else the HyperCLOVAX export, else the demo's SmolLM2."""
    if path and option and Path(path) != Path(option):
        raise ClovaEdgeError(f"two model folders given ({path} and --model {option}): give one")
    if path or option:
        return Path(path or option)
    if os.environ.get("CLOVA_EDGE_MODEL"):
        return Path(os.environ["CLOVA_EDGE_MODEL"])
    for folder in (DEFAULT_MODEL_DIR, DEMO_MODEL_DIR):
        if Path(folder).is_dir():
            return Path(folder)
    raise ClovaEdgeError(f"no model: neither {DEFAULT_MODEL_DIR} nor {DEMO_MODEL_DIR} exists here; run "
                         "`make demo` (SmolLM2, offline) or `make export` (HyperCLOVAX), or give MODEL_DIR "
                         "or $CLOVA_EDGE_MODEL")


def variant_name(name: Optional[str]) -> Optional[str]:
    if name is None or name.lower() in VARIANTS:
        return name and name.lower()
    raise ClovaEdgeError(f"--variant {name!r} is not a variant; choose one of {', '.join(VARIANTS)}")


# One convention on every command that runs a model: the folder is the last positional argument or -m/--model.
ModelArg = typer.Argument(None, metavar="[MODEL_DIR]", show_default=False, help=(
    f"exported model folder (or -m) [default: $CLOVA_EDGE_MODEL, else {DEFAULT_MODEL_DIR}, "
    f"else {DEMO_MODEL_DIR}]"))
ModelOpt = typer.Option(None, "--model", "-m", help="exported model folder (same as MODEL_DIR)")
Variant = typer.Option(None, "--variant", help="int4 | int8 | fp32 [default: the smallest exported, int4]")
Threads = typer.Option(None, "--threads", help="onnxruntime threads [default: the CPU cores available]")
MaxNew = typer.Option(None, "--max-new-tokens", help="tokens to generate at most [default: 512]")
Temp = typer.Option(None, "--temperature", help="0 = greedy [default: manifest, else 0]")
TopK = typer.Option(None, "--top-k", help="keep the k most likely tokens, 0 = off")
TopP = typer.Option(None, "--top-p", help="nucleus sampling mass in (0, 1], 1 = off")
MinP = typer.Option(None, "--min-p", help="drop tokens below min_p x the top probability, 0 = off")
RepPen = typer.Option(None, "--repetition-penalty", help="1 = off [default: manifest, 1.2 for HyperCLOVAX]")
Seed = typer.Option(None, "--seed", help="seed for sampling (same seed, same answer)")
Stop = typer.Option(None, "--stop", help="extra stop string (repeatable)")
Load = typer.Option(None, "--load", help="continue a chat saved with /save FILE")
PromptCache = typer.Option(True, "--prompt-cache/--no-prompt-cache",
                           help="reuse the KV rows of the opening blocks (system prompt), in memory and in "
                                "MODEL_DIR/.prompt-cache")


def load_engine(model: Optional[Path], option: Optional[Path], variant: Optional[str],
                threads: Optional[int], prompt_cache: bool = True):
    """Engine.load of the folder the convention names; the prompt cache's files go to MODEL_DIR/.prompt-cache
    (not written, and not read, with --no-prompt-cache)."""
    from clova_edge.runtime.engine import Engine
    folder = model_dir(model, option)
    return Engine.load(folder, variant=variant_name(variant), threads=threads, prompt_cache=prompt_cache,
                       prompt_cache_dir=folder / ".prompt-cache" if prompt_cache else None)


def read_stdin() -> str:
    """All of stdin as text; bytes that are not UTF-8 are a PromptError (not a traceback, not U+FFFD)."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptError(f"stdin is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
                          "convert it first, e.g. `iconv -f cp949 -t utf-8`") from None
