r"""Byte-level BPE tokenizer that reads a Hugging Face tokenizer.json and gives the ids `tokenizers` gives.

encode(text) runs the same pipeline as `tokenizers`' `encode(text, add_special_tokens=False)`:
  1. added tokens are cut out of the text, leftmost-longest (special ones only with allow_special=True);
  2. every other piece goes through the pre-tokenizer steps (Split regexes, then ByteLevel);
  3. the UTF-8 bytes of every pre-token are merged by BPE: lowest merge rank first, leftmost on ties
     (results cached per pre-token in a bounded LRU).
Supported: model BPE (no dropout, no byte_fallback, no subword prefix/suffix, optional ignore_merges), no
normalizer, pre_tokenizer ByteLevel or a Sequence of Split steps ending in ByteLevel, decoder ByteLevel.
Anything else raises TokenizerError naming the file and the field.

Only the standard library and `regex` (in pretokenize.py): the patterns are Oniguruma's (possessive
quantifiers, \p{..} classes, set operations), which `re` cannot express; onig_regex.py translates them.
"""

from __future__ import annotations

import functools
import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .errors import PromptError, TokenizerError
from .pretokenize import AddedToken, added_matcher, pre_tokenizer_steps, split_added

CACHE_WORDS = 1 << 16  # pre-tokens whose BPE result is kept (LRU)
_NO_RANK = 1 << 62
LONG_WORD = 96  # bytes; longer words use the heap version of BPE

Merges = Mapping[tuple[int, int], tuple[int, int]]  # (left id, right id) -> (rank, merged id)


def byte_level_alphabet() -> tuple[str, ...]:
    """GPT-2's table byte -> printable character (index = byte value)."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    others = iter(range(256, 512))
    return tuple(chr(b) if b in printable else chr(next(others)) for b in range(256))


def byte_level_table() -> dict[int, int]:
    """str.translate table: byte-level char -> the char of its byte; other chars below 256 -> U+FFFF."""
    table = dict.fromkeys(range(256), 0xFFFF)
    table.update({ord(c): b for b, c in enumerate(byte_level_alphabet())})
    return table


def byte_level_spelled(token: str, table: Mapping[int, int]) -> bytes | None:
    """The bytes a byte-level spelling stands for; None if a char is outside GPT-2's table."""
    try:
        return token.translate(table).encode("latin-1")
    except UnicodeEncodeError:
        return None


def byte_level_decode(token: str, table: Mapping[int, int]) -> bytes:
    """The ByteLevel decoder on one token: its bytes, or its UTF-8 if any char is outside the table."""
    spelled = byte_level_spelled(token, table)
    return token.encode("utf-8") if spelled is None else spelled


def bpe(ids: list[int], merges: Merges) -> list[int]:
    """Merge adjacent ids, always the pair of lowest rank (leftmost on ties), until no pair merges."""
    if len(ids) < 2:
        return ids
    if len(ids) > LONG_WORD:
        return bpe_long(ids, merges)
    none = (_NO_RANK, -1)
    found = [merges.get(pair, none) for pair in zip(ids, ids[1:])]
    ranks = [f[0] for f in found]
    while True:
        rank = min(ranks)
        if rank == _NO_RANK:
            return ids
        i = ranks.index(rank)
        ids[i : i + 2] = [found[i][1]]
        del found[i], ranks[i]
        if i < len(found):
            found[i] = merges.get((ids[i], ids[i + 1]), none)
            ranks[i] = found[i][0]
        if i > 0:
            found[i - 1] = merges.get((ids[i - 1], ids[i]), none)
            ranks[i - 1] = found[i - 1][0]
        if not ranks:
            return ids


def bpe_long(ids: list[int], merges: Merges) -> list[int]:
    """bpe() in O(n log n) for long words (a run of 20k spaces): a heap of (rank, position) over a linked
    list."""
    n = len(ids)
    sym, nxt, prv = list(ids), list(range(1, n + 1)), list(range(-1, n - 1))
    heap = [(m[0], i, a, b) for i, (a, b) in enumerate(zip(ids, ids[1:])) if (m := merges.get((a, b)))]
    heapq.heapify(heap)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i]
        if sym[i] != a or j >= n or sym[j] != b:
            continue  # stale: one side was merged since this pair was pushed
        sym[i], sym[j] = merges[a, b][1], -1
        nxt[i] = nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        for left, right in ((prv[i], i), (i, nxt[i])):
            if left >= 0 and right < n and (m := merges.get((sym[left], sym[right]))):
                heapq.heappush(heap, (m[0], left, sym[left], sym[right]))
    return [s for s in sym if s >= 0]


class Tokenizer:
    """A byte-level BPE tokenizer; build it with Tokenizer.from_file(path to tokenizer.json).

    vocab_size is 1 + the largest id (vocab or added token): the least rows an embedding needs.
    special_tokens maps the content of every added token marked special to its id.
    """

    def __init__(
        self,
        *,
        vocab: Mapping[str, int],
        merges: Sequence,
        added: Sequence[AddedToken],
        pre_steps: Sequence[Callable[[str], list[str]]],
        ignore_merges: bool = False,
        unk_token: str | None = None,
        source: str = "tokenizer.json",
    ):
        alphabet = byte_level_alphabet()
        char_table = byte_level_table()
        # A byte missing from the vocab is dropped (its neighbours may merge), as `tokenizers` does without
        # unk.
        self._byte_ids = tuple(vocab.get(c) for c in alphabet)
        self._complete = None not in self._byte_ids
        if unk_token is not None and not self._complete:
            raise TokenizerError(f"{source}: model.unk_token is set and some of the 256 byte tokens are "
                                 "missing "
                                 "from model.vocab; unknown-token handling is not supported")
        self._merges = _merge_table(vocab, merges, source)
        self._added = {t.content: t for t in added}
        self._raw_matcher = added_matcher(t for t in added if not t.normalized)
        self._normalized_matcher = added_matcher(t for t in added if t.normalized)
        self._steps = tuple(pre_steps)
        self.vocab_size = 1 + max([*vocab.values(), *(t.id for t in added)])
        table: list[bytes] = [b""] * self.vocab_size
        whole = {}
        for token, i in vocab.items():
            spelled = byte_level_spelled(token, char_table)
            table[i] = token.encode("utf-8") if spelled is None else spelled
            if ignore_merges and spelled is not None:
                whole[spelled] = i
        for t in added:
            table[t.id] = byte_level_decode(t.content, char_table)
        self._bytes = tuple(table)
        self._vocab = dict(vocab)
        self.special_tokens: dict[str, int] = {t.content: t.id for t in added if t.special}
        self._special_ids = frozenset(self.special_tokens.values())
        self._word = functools.lru_cache(maxsize=CACHE_WORDS)(functools.partial(self._bpe_word, whole))

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer.json; TokenizerError if it is unreadable or uses an unsupported feature."""
        path = Path(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path}: cannot read tokenizer.json ({e})") from e
        try:
            return from_spec(spec, str(path))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise TokenizerError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {e})") from e

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of text; special-token strings in it are plain text unless allow_special."""
        try:
            return self._encode(text, allow_special)
        except UnicodeEncodeError as e:
            raise PromptError(f"text is not valid Unicode ({e.reason} at character {e.start})") from e

    def _encode(self, text: str, allow_special: bool) -> list[int]:
        ids: list[int] = []
        word = self._word
        for raw, token in split_added(text, self._raw_matcher, self._added, allow_special):
            if token is not None:
                ids.append(token.id)
                continue
            for piece, token in split_added(raw, self._normalized_matcher, self._added, allow_special):
                if token is not None:
                    ids.append(token.id)
                    continue
                for pre in self._pretokenize(piece):
                    ids.extend(word(pre))
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """The text of ids (invalid UTF-8 becomes U+FFFD; ids without a token are dropped, as in
        `tokenizers`)."""
        special = self._special_ids if skip_special else frozenset()
        return b"".join(self.token_bytes(i) for i in ids if i not in special).decode("utf-8", "replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (special tokens: their text's UTF-8; unknown ids: b"")."""
        return self._bytes[token_id] if 0 <= token_id < self.vocab_size else b""

    def token_to_id(self, token: str) -> int | None:
        """Id of an added token's content or of a vocab entry (in its byte-level spelling, e.g. 'Ġthe')."""
        added = self._added.get(token)
        return added.id if added is not None else self._vocab.get(token)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def _pretokenize(self, text: str) -> list[str]:
        pieces = [text]
        for step in self._steps:
            pieces = [out for piece in pieces for out in step(piece)]
        return pieces

    def _bpe_word(self, whole: Mapping[bytes, int], word: str) -> tuple[int, ...]:
        data = word.encode("utf-8")
        if data in whole:
            return (whole[data],)
        ids = [self._byte_ids[b] for b in data]
        return tuple(bpe(ids if self._complete else [i for i in ids if i is not None], self._merges))


def _merge_table(vocab: Mapping[str, int], merges: Sequence, source: str) -> dict:
    """(left id, right id) -> (rank, merged id); merges are "a b" strings or [a, b] pairs."""
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    try:
        return {(vocab[a], vocab[b]): (rank, vocab[a + b]) for rank, (a, b) in enumerate(pairs)}
    except (KeyError, ValueError) as e:
        bad = next(r for r, m in enumerate(pairs)
                   if len(m) != 2 or not {m[0], m[1], "".join(m)} <= vocab.keys())
        raise TokenizerError(f"{source}: model.merges[{bad}] {merges[bad]!r} is not two tokens of "
                             "model.vocab "
                             "whose concatenation is in model.vocab too") from e


def from_spec(spec: Mapping, source: str = "tokenizer.json") -> Tokenizer:
    """Build a Tokenizer from the parsed JSON of a tokenizer.json."""
    model = spec.get("model") or {}
    if model.get("type", "BPE") != "BPE" or "merges" not in model:
        raise TokenizerError(f"{source}: model.type {model.get('type')!r} is not supported; only BPE is")
    for field, ok in [("dropout", None), ("byte_fallback", False), ("continuing_subword_prefix", ""),
                      ("end_of_word_suffix", "")]:
        if (model.get(field) or ok) != ok:
            raise TokenizerError(f"{source}: model.{field}={model[field]!r} is not supported")
    if spec.get("normalizer") is not None:
        raise TokenizerError(f"{source}: normalizer {spec['normalizer'].get('type')!r} is not supported "
                             "(byte-level BPE tokenizers have none)")
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise TokenizerError(f"{source}: decoder {decoder.get('type')!r} is not supported; only ByteLevel is")
    merges = model["merges"]
    added = [AddedToken(id=t["id"], content=t["content"], special=t.get("special", False),
                        lstrip=t.get("lstrip", False), rstrip=t.get("rstrip", False),
                        single_word=t.get("single_word", False), normalized=t.get("normalized", False))
             for t in spec.get("added_tokens") or []]
    return Tokenizer(vocab=model["vocab"], merges=merges, added=added,
                     pre_steps=pre_tokenizer_steps(spec.get("pre_tokenizer"), source),
                     ignore_merges=bool(model.get("ignore_merges", False)), unk_token=model.get("unk_token"),
                     source=source)
