r"""Pre-tokenization as `tokenizers` does it: added tokens cut out first, then Split regexes, then ByteLevel.

Pure functions over str: split_added() (leftmost-longest added tokens with their lstrip/rstrip/single_word
flags), split_text() (the Split pre-tokenizer's five behaviors and invert), and pre_tokenizer_steps(), which
turns a tokenizer.json "pre_tokenizer" into a list of str -> pieces functions. Patterns are Oniguruma's,
translated by onig_regex.translate_oniguruma.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import regex

from .errors import TokenizerError
from .onig_regex import translate_oniguruma

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
SPLIT_BEHAVIORS = ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous")
_WORD_START = regex.compile(r"\w")
_WORD_END = regex.compile(r"\w\Z")
_SPACES_AT_END = regex.compile(r"\s*\Z")
_SPACES_AT_START = regex.compile(r"\s*")


def find_spans(pattern: regex.Pattern, text: str, invert: bool) -> list[tuple[int, int, bool]]:
    """Cover text with (start, end, is_match) spans: the pattern's matches and the gaps between them."""
    spans, pos = [], 0
    for m in pattern.finditer(text):
        start, end = m.span()
        if start > pos:
            spans.append((pos, start, invert))
        spans.append((start, end, not invert))
        pos = end
    if pos < len(text):
        spans.append((pos, len(text), invert))
    return spans


def split_text(pattern: regex.Pattern, text: str, behavior: str, invert: bool = False) -> list[str]:
    """The Split pre-tokenizer: cut text where the pattern matches, keeping matches as `behavior` says."""
    if behavior == "Isolated" and not pattern.groups:
        pieces = pattern.findall(text)  # fast path: when the matches cover the text there are no gaps
        if sum(map(len, pieces)) == len(text):
            return [p for p in pieces if p]
    spans = find_spans(pattern, text, invert)
    if behavior == "Removed":
        return [text[s:e] for s, e, hit in spans if not hit and e > s]
    if behavior == "MergedWithNext":
        spans = [(-e, -s, hit) for s, e, hit in reversed(spans)]
    merged: list[list[int]] = []
    previous = False
    for s, e, hit in spans:
        glue = (hit == previous) if behavior == "Contiguous" else (hit and not previous)
        if behavior != "Isolated" and glue and merged:
            merged[-1][1] = e
        else:
            merged.append([s, e])
        previous = hit
    if behavior == "MergedWithNext":
        merged = [[-e, -s] for s, e in reversed(merged)]
    return [text[s:e] for s, e in merged if e > s]


@dataclass(frozen=True)
class AddedToken:
    """One entry of tokenizer.json's added_tokens."""

    id: int
    content: str
    special: bool = False
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False


def split_added(
    text: str, matcher: regex.Pattern | None, tokens: Mapping[str, AddedToken], allow_special: bool
) -> list[tuple[str, AddedToken | None]]:
    """Cut added tokens out of text as `tokenizers` does: leftmost-longest, honouring the token flags."""
    if matcher is None:
        return [(text, None)]
    out: list[tuple[str, AddedToken | None]] = []
    done = 0
    for m in matcher.finditer(text):
        token, (start, stop) = tokens[m.group()], m.span()
        if token.special and not allow_special:
            continue
        if token.single_word and (
            (start > 0 and _WORD_END.search(text, 0, start)) or _WORD_START.match(text, stop)
        ):
            continue
        if token.lstrip:
            start = max(_SPACES_AT_END.search(text, 0, start).start(), done)
        if token.rstrip:
            stop = _SPACES_AT_START.match(text, stop).end()
        if done < start:
            out.append((text[done:start], None))
        out.append((text[start:stop], token))
        done = stop
    if done < len(text):
        out.append((text[done:], None))
    return out


def added_matcher(tokens: Iterable[AddedToken]) -> regex.Pattern | None:
    """One alternation of the contents, longest first: leftmost-longest, like the Aho-Corasick of
    `tokenizers`."""
    contents = sorted({t.content for t in tokens if t.content}, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(c) for c in contents)) if contents else None


def pre_tokenizer_steps(spec: Mapping | None, source: str) -> list[Callable[[str], list[str]]]:
    """The pre-tokenizer as a list of str -> pieces functions: Split steps, then one final ByteLevel."""
    flat = list(spec.get("pretokenizers", [])) if spec and spec.get("type") == "Sequence" else [spec]
    if not flat or not flat[-1] or flat[-1].get("type") != "ByteLevel":
        raise TokenizerError(f"{source}: pre_tokenizer must be ByteLevel or a Sequence ending in ByteLevel; "
                             "only byte-level BPE tokenizers are supported")
    steps = []
    for step in flat[:-1]:
        if step.get("type") != "Split" or step.get("behavior") not in SPLIT_BEHAVIORS:
            raise TokenizerError(f"{source}: pre_tokenizer step {step.get('type')!r} "
                                 f"(behavior {step.get('behavior')!r}) is not supported")
        pattern = step["pattern"]
        text = _translate(pattern["Regex"], source) if "Regex" in pattern else regex.escape(pattern["String"])
        steps.append(functools.partial(split_text, _compile(text, source), behavior=step["behavior"],
                                       invert=bool(step.get("invert", False))))
    last = flat[-1]
    if last.get("add_prefix_space", False):
        steps.append(lambda piece: [piece if piece.startswith(" ") else " " + piece])
    if last.get("use_regex", True):
        steps.append(functools.partial(split_text, _compile(translate_oniguruma(GPT2_PATTERN), source),
                                       behavior="Isolated"))
    return steps


def _translate(pattern: str, source: str) -> str:
    try:
        return translate_oniguruma(pattern)
    except TokenizerError as e:
        raise TokenizerError(f"{source}: pre_tokenizer {e}") from e


def _compile(pattern: str, source: str) -> regex.Pattern:
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise TokenizerError(f"{source}: pre_tokenizer regex {pattern[:80]!r} does not compile ({e})") from e
