"""Engine: an exported model folder, loaded — manifest, tokenizer, chat template and onnxruntime session.

`Engine.load(folder)` checks the folder before any long work (manifest version, files present, tokenizer
parses). Then `stream` / `generate` answer one prompt (a user message run through the chat template, or raw text
with `chat_template=False`), and `chat()` starts a ChatSession that keeps the KV cache across turns. One Engine
may be used from several threads at once: every call owns its cache and buffers (onnxruntime allows concurrent
runs of one session); a ChatSession is for one thread at a time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator, Sequence

from .chat import ChatSession
from .chat_template import ChatTemplate, encode_chat
from .errors import ManifestError, PromptError, TokenizerError
from .generate import Event, stream
from .manifest import Manifest, load_manifest, verify_files
from .model import OnnxModel
from .settings import GenerationSettings
from .tokenizer import Tokenizer

Messages = Sequence[dict[str, str]]


class Engine:
    def __init__(self, manifest: Manifest, model: OnnxModel, tokenizer: Tokenizer, template: ChatTemplate):
        self.manifest, self.model, self.tokenizer, self.template = manifest, model, tokenizer, template

    @classmethod
    def load(cls, folder: str | Path, *, variant: str | None = None, threads: int | None = None,
             verify_checksums: bool = False) -> "Engine":
        """Load `folder` (written by `clova-edge export`). variant: "int4", "int8" or "fp32" (default: the
        smallest exported). verify_checksums re-hashes the weights (slow on a Pi; sizes are always checked)."""
        manifest = load_manifest(folder)
        v = manifest.variant(variant)
        files = [v.file, *v.data_files, manifest.tokenizer_file, manifest.tokenizer_config_file]
        if verify_checksums:
            verify_files(manifest, files)
        else:
            _check_sizes(manifest, files)
        try:
            tokenizer = Tokenizer.from_file(manifest.folder / manifest.tokenizer_file)
            template = ChatTemplate.from_tokenizer_config(manifest.folder / manifest.tokenizer_config_file)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{manifest.folder}: cannot read the tokenizer files ({e}); re-export the model") from None
        except TokenizerError as e:  # names the file; add what to do
            raise TokenizerError(f"{e}; re-export the model (`clova-edge export MODEL {manifest.folder}`)") from None
        return cls(manifest, OnnxModel(manifest, v, threads=threads), tokenizer, template)

    def default_settings(self, **overrides: Any) -> GenerationSettings:
        """The manifest's generation defaults (e.g. repetition_penalty 1.2 for HyperCLOVAX) with overrides."""
        return GenerationSettings.from_defaults(self.manifest.generation, **overrides)

    @functools.cached_property
    def _max_token_bytes(self) -> int:
        return max(1, *(len(self.tokenizer.token_bytes(i)) for i in range(self.tokenizer.vocab_size)))

    def check_text(self, text: str) -> str:
        """User text must be a str of valid Unicode (no lone surrogates), and not surely beyond the context:
        no token spans more than the longest token's bytes, so huge input is refused before tokenizing it."""
        if not isinstance(text, str):
            raise PromptError(f"the prompt must be a str, got {type(text).__name__}")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise PromptError("the prompt holds invalid Unicode (a lone surrogate); pass valid UTF-8 text") from None
        ctx, at_least = self.model.config.context_length, size // self._max_token_bytes
        if at_least >= ctx:
            raise PromptError(f"the prompt is at least {at_least} tokens; the context is {ctx}: shorten it")
        return text

    def encode(self, prompt: str | Messages, *, chat_template: bool = True, allow_special: bool = False) -> list[int]:
        """Prompt ids. A str is one user message (chat_template=True) or raw text; a list is the messages.
        Special-token text typed by a user stays plain text unless allow_special=True (raw-text mode only)."""
        if isinstance(prompt, str):
            prompt = self.check_text(prompt)
            if not prompt.strip():
                raise PromptError("the prompt is empty: give some text")
            if not chat_template:
                return self.tokenizer.encode(prompt, allow_special=allow_special)
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(m, dict) for m in prompt):
            raise PromptError(f"the prompt must be a str or a list of message dicts, got {type(prompt).__name__}")
        for m in prompt:
            self.check_text(m.get("content", ""))
        return encode_chat(self.template, self.tokenizer, list(prompt))

    def stream(self, prompt: str | Messages, settings: GenerationSettings | None = None, *,
               chat_template: bool = True, allow_special: bool = False) -> Iterator[Event]:
        """Stream the answer to one prompt as Events (text deltas, then a final event with stats)."""
        settings = settings or self.default_settings()
        ids = self.encode(prompt, chat_template=chat_template, allow_special=allow_special)
        ctx = self.model.config.context_length
        if not ids:
            raise PromptError("the prompt is empty: give some text")
        if len(ids) >= ctx:
            raise PromptError(f"the prompt is {len(ids)} tokens; the context is {ctx}: shorten it")
        cache = self.model.new_cache(min(ctx, len(ids) + settings.max_new_tokens))
        return stream(self.model, self.tokenizer, cache, ids, settings, stop_ids=self.manifest.stop_token_ids,
                      stop_strings=self.manifest.stop_strings)

    def generate(self, prompt: str | Messages, settings: GenerationSettings | None = None, *,
                 chat_template: bool = True, allow_special: bool = False) -> str:
        """The whole answer as a string."""
        events = self.stream(prompt, settings, chat_template=chat_template, allow_special=allow_special)
        return "".join(e.text for e in events)

    def chat(self, *, system: str | None = None, settings: GenerationSettings | None = None) -> ChatSession:
        return ChatSession(self, system=system, settings=settings)


def _check_sizes(manifest: Manifest, names: list[str]) -> None:
    """Cheap integrity check before the long load: every file present with its recorded size."""
    recorded = manifest.raw.get("files") or {}
    for name in names:
        path = manifest.folder / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing; re-export the model (`clova-edge export MODEL {manifest.folder}`)")
        want = (recorded.get(name) or {}).get("bytes")
        if want is not None and path.stat().st_size != want:
            raise ManifestError(f"{path}: {path.stat().st_size} bytes, manifest.json records {want} "
                                "(truncated or replaced); re-export the model")
