"""Typed errors of clova-edge.

Every error a user can cause (a bad model folder, a bad setting, a prompt too long) is one of these, with a
message that names the file or field and says what to do. Library code raises them; only the CLI prints.
"""


class ClovaEdgeError(Exception):
    """Base class: anything clova-edge reports on purpose."""


class ManifestError(ClovaEdgeError):
    """The model folder or its manifest.json is missing, broken, or of an unknown version."""


class TokenizerError(ClovaEdgeError):
    """tokenizer.json cannot be read, or uses a feature this tokenizer does not implement."""


class SettingsError(ClovaEdgeError, ValueError):
    """A generation setting is out of range."""


class PromptError(ClovaEdgeError, ValueError):
    """The prompt cannot be run: empty, not valid text, or longer than the context."""


class ExportError(ClovaEdgeError):
    """The export could not be done (offline, unsupported architecture, no weights, no disk...)."""


class QuantizeError(ClovaEdgeError):
    """The quantization could not be done (already quantized, unknown bits, no manifest...)."""


class ToolCallError(ClovaEdgeError, ValueError):
    """A tool definition, a tool call or a tool result cannot be used (the message says which and why)."""


class ConstraintError(ClovaEdgeError, ValueError):
    """Constrained output cannot be given: llguidance missing, or a JSON schema / regex it cannot compile."""


class SessionError(ClovaEdgeError):
    """A saved chat session (or a prompt-cache file) cannot be used: damaged, of an unknown version, or
    written by another model, variant or KV layout (the message says which)."""
