"""Streaming detokenizer: turns token ids into text as soon as the text is valid UTF-8.

BPE tokens often split a character (a Hangul syllable is 3 bytes, many emoji 4, ZWJ sequences more), so a
token's bytes alone may not be text yet. An incremental UTF-8 decoder holds back an incomplete tail until the
next token completes it; "".join(every add(), finalize()) == tokenizer.decode(ids, skip_special=...) exactly.
Per token: one table lookup and one incremental decode call.
"""

from __future__ import annotations

import codecs
from typing import Protocol


class ByteTokenizer(Protocol):
    def token_bytes(self, token_id: int) -> bytes: ...

    def is_special(self, token_id: int) -> bool: ...


class StreamingDetokenizer:
    """Feed ids one by one with add(); call finalize() once at the end to flush a held-back tail."""

    def __init__(self, tokenizer: ByteTokenizer, *, skip_special: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """The text completed by this token ("" while a character is still incomplete)."""
        if self._skip_special and self._tokenizer.is_special(token_id):
            return ""
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def finalize(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD, as in decode); then reset."""
        tail = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return tail
