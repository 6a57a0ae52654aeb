"""Run llama.cpp's convert_hf_to_gguf.py (from the llama-cpp-python sdist) with one documented workaround.

    python -m clova_edge.benchmarks.gguf_convert CONVERT_SCRIPT HF_FOLDER OUT.gguf [--pre NAME]

The converter names a model's BPE pre-tokenizer by hashing how the tokenizer splits a fixed text, and stops
on a hash it does not know. The project's HyperCLOVAX tokenizer stand-in (cl100k_base with HyperCLOVAX's
special tokens) is not in its table, so when (and only when) the hash is unknown this wrapper answers with
--pre (default "dbrx": llama.cpp's pre-tokenizer with the cl100k_base split pattern). Nothing else about the
conversion changes, and the speed figures do not depend on the tokenizer; perplexity is computed on ids
from the model's own Hugging Face tokenizer, not llama.cpp's.
"""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clova_edge.benchmarks.gguf_convert")
    ap.add_argument("script", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--pre", default="dbrx",
                    help="pre-tokenizer to use when the converter does not know the hash")
    a = ap.parse_args(argv)
    root = a.script.resolve().parent
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    from conversion.base import TextModel   # the converter's own package, next to the script

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            logging.getLogger(__name__).warning("unknown BPE pre-tokenizer hash: using %r", a.pre)
            return a.pre

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(a.script), str(a.model), "--outfile", str(a.out), "--outtype", a.outtype]
    runpy.run_path(str(a.script), run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
