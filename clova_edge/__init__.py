"""clova-edge: run HyperCLOVAX-SEED-Text-Instruct-0.5B (and other small Llama-style models) on CPU/ARM.

    from clova_edge import Engine
    engine = Engine.load("models/hyperclovax-0.5b")          # int4 by default
    for event in engine.stream("안녕하세요! 자기소개 해 주세요."):
        print(event.text, end="", flush=True)

The public API is this module; everything here comes from clova_edge.runtime (no torch needed). Names are
imported on first use, so `import clova_edge` (and `clova-edge --help`) stays fast.
"""

from importlib import import_module

_EXPORTS = {
    "Engine": "clova_edge.runtime.engine",
    "ChatSession": "clova_edge.runtime.chat",
    "Event": "clova_edge.runtime.generate",
    "GenerationSettings": "clova_edge.runtime.settings",
    "ClovaEdgeError": "clova_edge.runtime.errors",
    "ManifestError": "clova_edge.runtime.errors",
    "PromptError": "clova_edge.runtime.errors",
    "SettingsError": "clova_edge.runtime.errors",
    "SessionError": "clova_edge.runtime.errors",
    "TokenizerError": "clova_edge.runtime.errors",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clova_edge' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
