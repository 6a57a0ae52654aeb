"""Engine: an exported model folder, loaded — manifest, tokenizer, chat format and onnxruntime session.

`Engine.load(folder)` checks the folder before any long work (manifest version, files present, tokenizer
parses). Then `stream` / `generate` answer one prompt (a user message or a list of messages in the model's
chat format, see conversation.py, or raw text with `chat_template=False`), and `chat()` starts a ChatSession
that keeps the KV cache across turns. The seam a chat uses: `encode_messages`, `prepare_cache` (roll a cache
back and make room) and `stream_ids` (prefill ids onto a cache and stream). One Engine may be used from
several threads at once: every call owns its cache and buffers (onnxruntime allows concurrent runs of one
session); a ChatSession is for one thread at a time. `prompt_cache` (prompt_cache.py) keeps the KV rows of
the opening blocks every chat starts with; `load_session` continues a chat saved by ChatSession.save.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any, Iterator, Sequence

from .chat import ChatSession
from .chat_template import ChatTemplate
from .constrain import AfterToken, Constraint, Grammars
from .conversation import DEFAULT, OPENING_ROLES, ChatFormat, SystemPrompt, TurnReader
from .errors import ConstraintError, ManifestError, PromptError, TokenizerError
from .generate import Event, stream
from .manifest import Manifest, load_manifest, verify_files
from .model import KVCache, OnnxModel
from .prompt_cache import PromptCache
from .settings import GenerationSettings
from .tokenizer import Tokenizer
from .tools import Tool, normalize_tools

Messages = Sequence[dict[str, Any]]


class Engine:
    def __init__(self, manifest: Manifest, model: OnnxModel, tokenizer: Tokenizer, template: ChatTemplate, *,
                 prompt_cache: PromptCache | None = None):
        self.manifest, self.model, self.tokenizer, self.template = manifest, model, tokenizer, template
        self.prompt_cache = prompt_cache or PromptCache(model, enabled=False)
        self.format = ChatFormat(template, tokenizer,
                                 default_system=(manifest.raw.get("chat") or {}).get("default_system"))

    @classmethod
    def load(cls, folder: str | Path, *, variant: str | None = None, threads: int | None = None,
             verify_checksums: bool = False, prompt_cache: bool = True,
             prompt_cache_dir: str | Path | None = None) -> "Engine":
        """Load `folder` (written by `clova-edge export`). variant: "int4", "int8" or "fp32" (default: the
        smallest exported). verify_checksums re-hashes the weights (slow on a Pi; sizes are always
        checked). prompt_cache: keep the opening blocks' KV rows in memory (False: off); prompt_cache_dir:
        also on disk there (the CLI uses <folder>/.prompt-cache)."""
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
            raise TokenizerError(f"{manifest.folder}: cannot read the tokenizer files ({e}); "
                                 "re-export the model") from None
        except TokenizerError as e:  # names the file; add what to do
            raise TokenizerError(f"{e}; re-export the model "
                                 f"(`clova-edge export MODEL {manifest.folder}`)") from None
        model = OnnxModel(manifest, v, threads=threads)
        return cls(manifest, model, tokenizer, template,
                   prompt_cache=PromptCache(model, enabled=prompt_cache, folder=prompt_cache_dir))

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
            raise PromptError("the prompt holds invalid Unicode (a lone surrogate); "
                              "pass valid UTF-8 text") from None
        ctx, at_least = self.model.config.context_length, size // self._max_token_bytes
        if at_least >= ctx:
            raise PromptError(f"the prompt is at least {at_least} tokens; the context is {ctx}: shorten it")
        return text

    def check_message(self, text: str) -> str:
        """check_text, and not empty: the one empty-prompt check of every path (API, chat, CLI)."""
        if not self.check_text(text).strip():
            raise PromptError("the prompt is empty: give some text")
        return text

    def default_system(self, today: dt.date | None = None) -> str | None:
        """The model's default system prompt with today's date (HyperCLOVAX's card), or None."""
        return self.format.default_system(today)

    def encode(self, prompt: str | Messages, *, system: SystemPrompt = DEFAULT,
               tools: Sequence[Tool] | None = None, chat_template: bool = True,
               allow_special: bool = False) -> list[int]:
        """Prompt ids. A str is one user message (chat_template=True) or raw text; a list is the messages.
        The model's opening blocks are added (HyperCLOVAX: tool_list and system; see conversation.py);
        system: DEFAULT (the model's own), a str, or None (none). Special-token text typed by a user stays
        plain text unless allow_special=True (raw-text mode only)."""
        if isinstance(prompt, str):
            prompt = self.check_message(prompt)
            if not chat_template:
                return self.tokenizer.encode(prompt, allow_special=allow_special)
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(m, dict) for m in prompt):
            raise PromptError("the prompt must be a str or a list of message dicts, "
                              f"got {type(prompt).__name__}")
        return self.encode_messages(self.format.prepare(prompt, system, normalize_tools(tools)))

    def opening_ids(self, messages: Messages) -> list[int]:
        """Ids of the opening blocks that `messages` begin with (tool_list, system), [] if none."""
        n = next((i for i, m in enumerate(messages) if m.get("role") not in OPENING_ROLES), len(messages))
        return self.encode_messages(messages[:n], add_generation_prompt=False) if n else []

    def cached_opening(self, ids: list[int], *, room: int) -> KVCache | None:
        """A new cache holding the rows of `ids` (an opening: from the prompt cache, or prefilled once and
        kept) with room for `room` more; None when the prompt cache is off."""
        if not self.prompt_cache.enabled or not ids or len(ids) >= self.model.config.context_length:
            return None
        cache = self.prepare_cache(None, keep=0, room=len(ids) + room)
        return cache if self.prompt_cache.fill(cache, ids) else None

    def encode_messages(self, messages: Messages, *, add_generation_prompt: bool = True) -> list[int]:
        """Ids of exactly these messages in the model's chat format (no blocks added)."""
        for m in messages:
            self.check_text(m.get("content") or "")
        return self.format.encode(messages, add_generation_prompt=add_generation_prompt)

    def prepare_cache(self, cache: KVCache | None, *, keep: int, room: int) -> KVCache:
        """`cache` rolled back to its first `keep` positions (rows are positional, so that is its length) with
        room for `room` more, up to the context; a new cache if None. May return a bigger copy: use the
        result."""
        ctx = self.model.config.context_length
        if cache is None:
            return self.model.new_cache(min(ctx, keep + room))
        if not 0 <= keep <= cache.length:
            raise ValueError(f"cannot keep {keep} positions of a cache holding {cache.length}")
        cache.length = keep
        return self.model.ensure_capacity(cache, min(ctx, keep + room))

    @functools.cached_property
    def grammars(self) -> Grammars:
        """Constrained-output builder for this vocabulary (needs llguidance; built on first use)."""
        return Grammars(self.tokenizer, self.model.config.vocab_size,
                        self.format.turn_stop_ids(self.manifest.stop_token_ids, False))

    def constraint(self, *, json_schema: Any = None, regex: str | None = None) -> Constraint | None:
        """The constraint for an answer that is JSON valid against `json_schema`, or matches `regex`."""
        if json_schema is not None and regex is not None:
            raise ConstraintError("give json_schema or regex, not both")
        if json_schema is not None:
            return self.grammars.json_schema(json_schema)
        return self.grammars.regex(regex) if regex is not None else None

    def tool_constraint(self, tools: Sequence[Tool]) -> AfterToken | None:
        """HyperCLOVAX with tools: the grammar that makes any call block the model writes a valid call of
        one of `tools` (None without llguidance: calls are then parsed as the model wrote them)."""
        if not tools or not self.format.hyperclovax:
            return None
        try:
            grammars = self.grammars
        except ConstraintError:   # llguidance is optional
            return None
        return AfterToken(self.format.ids["<|im_end|>"], grammars.tool_calls(tools, self.format.ids))

    def stream_ids(self, ids: list[int], settings: GenerationSettings, *, cache: KVCache,
                   history: Sequence[int] = (), tools: bool = False,
                   constraint: Constraint | AfterToken | None = None, model: Any = None,
                   ignore_eos: bool = False) -> Iterator[Event]:
        """Prefill `ids` onto `cache` (which holds `history`) and stream the answer with the model's stop
        tokens and strings. tools=True: the turn runs on past <|im_end|> into a call block (not shown).
        model: what runs the steps (default: this engine's session; a batch.SlotModel in a server).
        ignore_eos: only settings.stop ends the answer, not the model's stop tokens (benchmarks)."""
        ctx = self.model.config.context_length
        if cache.length + len(ids) >= ctx:
            raise PromptError(f"the prompt is {cache.length + len(ids)} tokens; the context is {ctx}: "
                              "shorten it")
        stop_ids = () if ignore_eos else self.format.turn_stop_ids(self.manifest.stop_token_ids, tools)
        return stream(model or self.model, self.tokenizer, cache, ids, settings, stop_ids=stop_ids,
                      stop_strings=() if ignore_eos else self.manifest.stop_strings, history=history,
                      mute_after=self.format.mute_after(tools), constraint=constraint)

    def stream(self, prompt: str | Messages, settings: GenerationSettings | None = None, *,
               system: SystemPrompt = DEFAULT, tools: Sequence[Tool] | None = None,
               chat_template: bool = True, allow_special: bool = False, json_schema: Any = None,
               regex: str | None = None) -> Iterator[Event]:
        """Stream the answer to one prompt as Events (text deltas, then a final event with stats; with tools,
        the final event of an answer that calls tools carries them, finish_reason "tool_calls").
        json_schema / regex: every token is constrained so the answer is that (needs llguidance)."""
        settings = settings or self.default_settings()
        tools = normalize_tools(tools)
        if tools and (json_schema is not None or regex is not None):
            raise ConstraintError("constrained output and tools cannot be combined in one answer")
        constraint = self.constraint(json_schema=json_schema, regex=regex) or self.tool_constraint(tools)
        ids = self.encode(prompt, system=system, tools=tools, chat_template=chat_template,
                          allow_special=allow_special)
        opening = self._opening_of(prompt, system, tools, ids) if chat_template else []
        cache = self.cached_opening(opening, room=len(ids) - len(opening) + settings.max_new_tokens)
        keep = cache.length if cache is not None else 0
        cache = cache or self.prepare_cache(None, keep=0, room=len(ids) + settings.max_new_tokens)
        events = self.stream_ids(ids[keep:], settings, cache=cache, history=ids[:keep], tools=bool(tools),
                                 constraint=constraint)
        return TurnReader(self.format).wrap(events) if tools else events

    def _opening_of(self, prompt: str | Messages, system: SystemPrompt, tools: Sequence[Tool],
                    ids: list[int]) -> list[int]:
        """The opening ids of a prompt encoded as `ids`, if they are its prefix and leave a token to run."""
        if not self.prompt_cache.enabled:
            return []
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        opening = self.opening_ids(self.format.prepare(messages, system, tools))
        return opening if len(opening) < len(ids) and ids[:len(opening)] == opening else []

    def generate(self, prompt: str | Messages, settings: GenerationSettings | None = None, *,
                 system: SystemPrompt = DEFAULT, chat_template: bool = True, allow_special: bool = False,
                 json_schema: Any = None, regex: str | None = None) -> str:
        """The whole answer as a string."""
        events = self.stream(prompt, settings, system=system, chat_template=chat_template,
                             allow_special=allow_special, json_schema=json_schema, regex=regex)
        return "".join(e.text for e in events)

    def chat(self, *, system: SystemPrompt = DEFAULT, tools: Sequence[Tool] | None = None,
             settings: GenerationSettings | None = None, constrain_tools: bool = True) -> ChatSession:
        """A conversation that keeps the KV cache across turns (see ChatSession). system: DEFAULT (the
        model's own, with today's date), a str, or None; tools: OpenAI-style definitions (HyperCLOVAX);
        constrain_tools: a call block the model writes is always a valid call (needs llguidance)."""
        return ChatSession(self, system=system, tools=tools, settings=settings,
                           constrain_tools=constrain_tools)

    def load_session(self, path: str | Path) -> ChatSession:
        """The chat saved by ChatSession.save(path), with its KV rows: it continues without re-reading the
        conversation. A file that is damaged, of an unknown version, or of another model, variant or KV
        layout raises SessionError."""
        from .session_file import load_session

        return load_session(self, path, ChatSession)


def _check_sizes(manifest: Manifest, names: list[str]) -> None:
    """Cheap integrity check before the long load: every file present with its recorded size."""
    recorded = manifest.raw.get("files") or {}
    for name in names:
        path = manifest.folder / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing; re-export the model "
                                f"(`clova-edge export MODEL {manifest.folder}`)")
        want = (recorded.get(name) or {}).get("bytes")
        if want is not None and path.stat().st_size != want:
            raise ManifestError(f"{path}: {path.stat().st_size} bytes, manifest.json records {want} "
                                "(truncated or replaced); re-export the model")
