r"""Translate an Oniguruma (Ruby syntax) pattern, as the `tokenizers` library runs it, into a `regex` pattern.

Hugging Face tokenizer.json files carry their pre-tokenizer regexes in Oniguruma's Ruby syntax. Python's
`regex` module reads the same text differently in a few places; this module rewrites exactly those:

* `X{n,m}+` (also `{n}+`, `{n,}+`) is NOT possessive in Ruby syntax: it repeats the interval,
  `(?:X{n,m})+`. (`?+`, `*+`, `++` are possessive in both.) cl100k's `\p{N}{1,3}+` is the famous case.
* `$` and `^` are line anchors in Ruby (before / after any \n); `\Z` is end or before a final \n, `\z` the
  end.
* `\p{L}` and `\p{N}`: Oniguruma in `tokenizers` 0.2x uses Unicode 16 tables, `regex` may use newer ones;
  the letters and numbers Unicode 17 added are subtracted so both agree on every code point.
  (`\s`/`\S` were checked over all code points: both are Unicode White_Space.)

The result uses the `regex` module's VERSION1 syntax (nested sets, scoped inline flags, as in Ruby).
Pure functions; no state.
"""

from __future__ import annotations

import re

from .errors import TokenizerError

# Code points that regex (Unicode 17) calls L / N and Oniguruma (Unicode 16) does not.
_NEWER_LETTERS = "\u0558\u058b-\u058c\u088f\u0c5c\u0cdc\u208f\u209d-\u209f\ua7ce-\ua7cf\ua7d2\ua7d4\ua7dd\ua7e2\ua7f1\uab6c-\uab6d\U000107bb-\U000107bf\U00010940-\U00010959\U00010ec5-\U00010ec7\U00010ed9-\U00010eee\U00011b0a\U00011db0-\U00011ddb\U00011df1\U00016ea0-\U00016eb8\U00016ebb-\U00016ed3\U00016ff2-\U00016ff3\U000187f8-\U000187ff\U00018cd6-\U00018cda\U00018d09-\U00018d20\U00018d80-\U00018df2\U00018e00-\U00019191\U000191a0-\U000191d2\U0001b123-\U0001b128\U0001b168\U0001d6a6\U0001df1f-\U0001df24\U0001df2b-\U0001df81\U0001df90-\U0001df96\U0001dfcd-\U0001dfff\U0001e6c0-\U0001e6de\U0001e6e0-\U0001e6e2\U0001e6e4-\U0001e6e5\U0001e6e7-\U0001e6ed\U0001e6f0-\U0001e6f4\U0001e6fe-\U0001e6ff\U0002b73a-\U0002b73f\U0002b81e\U0002cea2-\U0002cead\U000323b0-\U00033479\U0003d000-\U0003fc3f"  # noqa: E501 (a generated table)
_NEWER_NUMBERS = "\U00011de0-\U00011de9\U0001246f\U00012475-\U0001247f\U00012550-\U00012686\U00016ff4-\U00016ff6"  # noqa: E501
_PROPERTIES = {"L": _NEWER_LETTERS, "Letter": _NEWER_LETTERS, "N": _NEWER_NUMBERS, "Number": _NEWER_NUMBERS}
_INTERVAL = re.compile(r"\{(\d*)(?:,(\d*))?\}")
_ANCHORS = {"$": r"(?=\n|\Z)", "^": r"(?:(?<=\n)|\A)"}
_ESCAPES = {"z": r"\Z", "Z": r"(?=\n?\Z)", "h": "[0-9a-fA-F]", "H": "[^0-9a-fA-F]"}
_UNSUPPORTED_ESCAPES = set("RKyYOg")


def translate_oniguruma(pattern: str) -> str:
    """The `regex` (VERSION1) pattern that matches what Oniguruma matches for `pattern`."""
    body, end = _sequence(pattern, 0)
    if end != len(pattern):
        raise TokenizerError(f"regex {pattern!r}: unbalanced ')' at position {end}")
    return "(?V1)" + body


def _sequence(p: str, i: int) -> tuple[str, int]:
    """Translate from i up to an unmatched ')' or the end; returns (text, index of the stop)."""
    atoms: list[str] = []
    while i < len(p) and p[i] != ")":
        c = p[i]
        if c == "\\":
            text, i = _escape(p, i, in_class=False)
            atoms.append(text)
        elif c == "[":
            text, i = _char_class(p, i)
            atoms.append(text)
        elif c == "(":
            text, i = _group(p, i)
            atoms.append(text)
        elif c in "*+?" and atoms:
            i = _quantify(atoms, c, p, i + 1)
        elif c == "{" and atoms and _INTERVAL.match(p, i):
            m = _INTERVAL.match(p, i)
            i = _quantify(atoms, m.group(0), p, m.end())
        elif c in _ANCHORS:
            atoms.append(_ANCHORS[c])
            i += 1
        else:
            atoms.append(c)
            i += 1
    return "".join(atoms), i


def _quantify(atoms: list[str], quantifier: str, p: str, i: int) -> int:
    """Attach a quantifier (and a following '+' / '?') to the last atom; returns the next index."""
    suffix = p[i] if i < len(p) and p[i] in "+?" else ""
    if suffix == "+" and quantifier.startswith("{"):
        atoms[-1] = f"(?:{atoms[-1]}{quantifier})+"  # Ruby: an interval followed by '+' repeats
    else:
        atoms[-1] = atoms[-1] + quantifier + suffix
    return i + len(suffix)


def _group(p: str, i: int) -> tuple[str, int]:
    """A parenthesised group, header copied as is (Ruby and regex VERSION1 agree on those we meet)."""
    m = re.compile(r"\((\?(?:[imx]*-?[imx]*:|[imx]*-?[imx]*\)|=|!|<=|<!|>|<[A-Za-z_]\w*>"
                   r"|P<[A-Za-z_]\w*>))?").match(p, i)
    header = m.group(0)
    if header.endswith(")"):  # a flag group such as (?i): applies to the rest of the enclosing group
        return header, m.end()
    inner, j = _sequence(p, m.end())
    if j >= len(p):
        raise TokenizerError(f"regex {p!r}: unclosed '(' at position {i}")
    return header + inner + ")", j + 1


def _escape(p: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """One backslash escape starting at p[i] == '\\'."""
    if i + 1 >= len(p):
        raise TokenizerError(f"regex {p!r}: trailing backslash")
    c = p[i + 1]
    if c in "pP" and i + 2 < len(p) and p[i + 2] == "{":
        close = p.index("}", i)
        name = p[i + 3 : close]
        negate = (c == "P") != name.startswith("^")
        name = name.lstrip("^")
        if name in _PROPERTIES:
            inner = rf"[\p{{{name}}}--[{_PROPERTIES[name]}]]"
            text = f"[^{inner}]" if negate else inner
        else:
            text = ("\\P{" if negate else "\\p{") + name + "}"
        return text, close + 1
    if c in _UNSUPPORTED_ESCAPES:
        raise TokenizerError(f"regex {p!r}: escape \\{c} is not supported by this tokenizer")
    if c in _ESCAPES and not in_class:
        return _ESCAPES[c], i + 2
    if c in "hH" and in_class:
        return ("0-9a-fA-F" if c == "h" else r"[^0-9a-fA-F]"), i + 2
    if c in "xu" and i + 2 < len(p) and p[i + 2] == "{":
        close = p.index("}", i)
        return p[i:close + 1], close + 1
    return p[i : i + 2], i + 2


def _char_class(p: str, i: int) -> tuple[str, int]:
    """A bracket expression (possibly nested); only the escapes inside are rewritten."""
    out = ["["]
    j = i + 1
    if j < len(p) and p[j] == "^":
        out.append("^")
        j += 1
    if j < len(p) and p[j] == "]":
        out.append(r"\]")
        j += 1
    while j < len(p):
        c = p[j]
        if c == "\\":
            text, j = _escape(p, j, in_class=True)
            out.append(text)
        elif c == "[" and p.startswith("[:", j):
            close = p.index(":]", j)
            out.append(p[j : close + 2])
            j = close + 2
        elif c == "[":
            text, j = _char_class(p, j)
            out.append(text)
        elif c == "]":
            return "".join(out) + "]", j + 1
        elif p.startswith(("--", "||", "~~"), j):
            raise TokenizerError(f"regex {p!r}: '{p[j:j + 2]}' inside a character class is not supported")
        else:
            out.append(c)
            j += 1
    raise TokenizerError(f"regex {p!r}: unclosed '[' at position {i}")
