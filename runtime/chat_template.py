"""The model's own chat template (Jinja, from tokenizer_config.json), rendered the way transformers does.

`ChatTemplate.render(messages)` gives exactly transformers' `apply_chat_template(messages, tokenize=False)`:
the same sandboxed Jinja environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols), the same helpers (raise_exception, strftime_now, a JSON-faithful tojson, a restricted namespace
and dict) and the same variables (messages, tools, documents, add_generation_prompt, bos_token/eos_token/...
from the config). Templates are untrusted code from the Hub; the sandbox keeps them from reaching Python
internals.

`encode_chat` turns messages into ids SAFELY: a special token becomes its control id only where the template
itself wrote it. Special-token text inside a message (a user typing `<|im_end|><|im_start|>system`) is fenced
with unguessable markers before rendering and encoded as plain text. `encode_turn` gives the ids a chat
session must add to a KV cache that already holds an earlier rendering of the conversation. This module does
not tokenize by itself; it drives any tokenizer with `encode(text, allow_special=False)` and `special_tokens`.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import PromptError, TokenizerError

Message = Mapping[str, Any]
# The named special tokens transformers passes to every template (its SPECIAL_TOKENS_ATTRIBUTES).
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class TokenizerLike(Protocol):
    special_tokens: dict[str, int]

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]: ...


class ChatTemplate:
    """A compiled chat template plus the named special tokens it may refer to."""

    def __init__(self, source: str, named_tokens: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.named_tokens = dict(named_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TokenizerError(f"chat template: Jinja syntax error at line {e.lineno}: "
                                 f"{e.message}") from None

    @classmethod
    def from_tokenizer_config(cls, path: str | Path, *, name: str | None = None) -> "ChatTemplate":
        """Read key chat_template of tokenizer_config.json (a string, or a list of {"name", "template"} from
        which `name` or else "default" is taken), or the chat_template.jinja file next to it."""
        path = Path(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{path}: cannot read the tokenizer config ({e})") from None
        source = config.get("chat_template")
        jinja_file = path.with_name("chat_template.jinja")
        if source is None and jinja_file.is_file():
            source = jinja_file.read_text(encoding="utf-8")
        if isinstance(source, list):
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            want = name or "default"
            if want not in named:
                raise TokenizerError(f"{path}: chat_template has no template named {want!r} "
                                     f"(have: {', '.join(map(str, named))}); pass name=")
            source = named[want]
        if not isinstance(source, str):
            raise TokenizerError(f"{path}: no chat_template (a string) in the file and no "
                                 "chat_template.jinja beside it; this tokenizer has no chat format, "
                                 "use raw-text prompts")
        named_tokens = {k: t for k in NAMED_TOKENS if (t := _token_text(config.get(k))) is not None}
        return cls(source, named_tokens)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True,
               tools: Sequence[Mapping[str, Any]] | None = None,
               documents: Sequence[Mapping[str, Any]] | None = None,
               **extra: Any) -> str:
        """The prompt text for `messages`, byte-for-byte what transformers' apply_chat_template renders.

        `extra` are more template variables (e.g. a template's `enable_thinking`); they override the named
        special tokens, as in transformers. A template's raise_exception becomes a PromptError.
        """
        if not messages:
            raise PromptError("cannot render a chat with no messages: give at least one")
        chat = _alias_reasoning([_plain_message(m) for m in messages])
        variables = {**self.named_tokens, **extra}
        try:
            return self._template.render(messages=chat, tools=_plain(tools), documents=_plain(documents),
                                         add_generation_prompt=add_generation_prompt, **_plain(variables))
        except jinja2.TemplateError as e:
            raise PromptError(f"the chat template rejected these messages: {e}") from None


def encode_chat(template: ChatTemplate, tokenizer: TokenizerLike, messages: Sequence[Message], *,
                add_generation_prompt: bool = True) -> list[int]:
    """Prompt ids for `messages`; special tokens become control ids only where the template wrote them.

    Every special-token string inside the messages is fenced with random markers before rendering; after
    rendering, the text is cut at the unfenced special tokens (control ids), and each piece in between is
    encoded as ONE string with allow_special=False, so benign content gives exactly transformers' ids.
    """
    specials = tokenizer.special_tokens
    if not specials:
        return tokenizer.encode(template.render(messages, add_generation_prompt=add_generation_prompt))
    key = secrets.token_hex(8)                          # this call's fence: a user cannot type it in advance
    fence_open, fence_close = f"\ue000{key}\ue001", f"\ue002{key}\ue003"
    in_content, cutter = _patterns(tuple(sorted(specials, key=len, reverse=True)))
    fenced = [_map_strings(m, lambda s: in_content.sub(lambda t: fence_open + t.group(0) + fence_close, s))
              for m in messages]
    text = template.render(fenced, add_generation_prompt=add_generation_prompt)
    ids: list[int] = []
    pending: list[str] = []                             # plain text since the last control token
    pos = 0
    for m in cutter.finditer(text):
        pending.append(text[pos:m.start()])
        if m.group(2) is not None:                      # fenced special-token text: stays text
            ours = m.group(1) == key and m.group(3) == key
            pending.append(m.group(2) if ours else m.group(0))
        else:                                           # written by the template: a control id
            ids += _encode_plain(tokenizer, "".join(pending))
            pending = []
            ids.append(specials[m.group(4)])
        pos = m.end()
    pending.append(text[pos:])
    ids += _encode_plain(tokenizer, "".join(pending))
    return ids


@functools.lru_cache(maxsize=8)
def _patterns(specials: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    """The special-token matcher and the cutter (fence-generic: compiled once per vocabulary)."""
    alternatives = "|".join(re.escape(s) for s in specials)
    cutter = re.compile(f"\ue000([0-9a-f]{{16}})\ue001({alternatives})\ue002([0-9a-f]{{16}})\ue003"
                        f"|({alternatives})")
    return re.compile(alternatives), cutter


def encode_turn(template: ChatTemplate, tokenizer: TokenizerLike, messages: Sequence[Message],
                cached_ids: Sequence[int], *, add_generation_prompt: bool = True) -> list[int] | None:
    """The ids to append to a KV cache holding `cached_ids`, so that it holds the whole conversation.

    Renders the whole conversation; returns the new ids if `cached_ids` is a prefix of its ids, else None (the
    cache holds something the template renders differently, e.g. the generated stop token or a re-tokenized
    answer: the caller re-prefills from `common_prefix(cached_ids, full ids)`).
    """
    full = encode_chat(template, tokenizer, messages, add_generation_prompt=add_generation_prompt)
    n = len(cached_ids)
    if n > len(full) or common_prefix(cached_ids, full) != n:
        return None
    return full[n:]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode_plain(tokenizer: TokenizerLike, text: str) -> list[int]:
    return tokenizer.encode(text, allow_special=False) if text else []


# ---- the sandbox, as transformers configures it ------------------------------------------------------------

class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (assistant-mask templates): renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """jinja's namespace(), refusing underscore names so a template cannot reach Python internals."""

    def __init__(*args: Any, **pairs: Any) -> None:  # noqa: N805 - jinja's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **pairs)
        for key in attrs:
            _Namespace._check(key)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, key: str, value: Any) -> None:
        _Namespace._check(key)
        jinja2.utils.Namespace.__setitem__(self, key, value)

    @staticmethod
    def _check(key: Any) -> None:
        if isinstance(key, str) and key.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes ({key!r})")


class _Dict:
    """dict() for templates, without exposing the dict type itself."""

    def __call__(self, *args: Any, **pairs: Any) -> dict:
        return dict(*args, **pairs)

    def fromkeys(self, *args: Any) -> dict:
        return dict.fromkeys(*args)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja's own tojson escapes <, >, & and ' for HTML; chat templates want plain JSON
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(),
                       namespace=_Namespace)
    return env


# ---- what the template may see: plain JSON-like data only --------------------------------------------------

def _plain(value: Any) -> Any:
    """Rebuild `value` from plain str/int/float/bool/None, dicts, lists, tuples (anything else: "<Type>")."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (str, bool, int, float):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item):   # numpy scalars
        return _plain(value.item())
    return f"<{type(value).__name__}>"


def _plain_message(message: Message) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise PromptError("a chat message must be a dict with 'role' and 'content', "
                          f"got {type(message).__name__}")
    return {k: _plain(v) for k, v in message.items() if v is not None}   # like transformers: None = absent


def _alias_reasoning(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Templates read reasoning as reasoning_content (or thinking); accept any of the usual names."""
    out = []
    for m in chat:
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        aliased = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(aliased if reasoning is not None else m)
    return out


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_strings(v, fn) for v in value)
    return value


def _token_text(token: Any) -> str | None:
    """A special token in tokenizer_config.json: a string, or an AddedToken dict with "content"."""
    if isinstance(token, str):
        return token
    if isinstance(token, Mapping) and isinstance(token.get("content"), str):
        return token["content"]
    return None
