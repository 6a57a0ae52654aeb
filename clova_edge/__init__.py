"""clova-edge: run HyperCLOVAX-SEED-Text-Instruct-0.5B (and other small Llama-style models) on CPU/ARM.

    from clova_edge import Engine
    engine = Engine.load("models/hyperclovax-0.5b")          # int4 by default
    for event in engine.stream("안녕하세요! 자기소개 해 주세요."):
        print(event.text, end="", flush=True)

The public API is this module; everything here comes from clova_edge.runtime (no torch needed).
"""

from clova_edge.runtime.chat import ChatSession
from clova_edge.runtime.engine import Engine
from clova_edge.runtime.errors import (ClovaEdgeError, ManifestError, PromptError, SettingsError,
                                       TokenizerError)
from clova_edge.runtime.generate import Event
from clova_edge.runtime.settings import GenerationSettings

__all__ = ["Engine", "ChatSession", "Event", "GenerationSettings", "ClovaEdgeError", "ManifestError",
           "PromptError", "SettingsError", "TokenizerError"]
__version__ = "0.1.0"
