"""Streaming detokenizer: the pieces join to exactly decode(ids), and valid UTF-8 never shows U+FFFD."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clova_edge.runtime.detokenizer import StreamingDetokenizer
from clova_edge.runtime.tokenizer import Tokenizer
from tokenizer_files import CORPUS, KOREAN, runtime_tokenizer


def tokenizer() -> Tokenizer:
    return runtime_tokenizer("hyperclovax")  # loaded once per session, shared with test_tokenizer.py


def stream(tok: Tokenizer, ids: list[int], *, skip_special: bool = True) -> list[str]:
    detok = StreamingDetokenizer(tok, skip_special=skip_special)
    return [detok.add(i) for i in ids] + [detok.finalize()]


@pytest.mark.parametrize("text", ["(안녕하세요!) 만나서 반가워요 😉", "", "한",
                                  "👩‍👩‍👧‍👦 🏳️‍🌈 🇰🇷", KOREAN[:800],
                                  "mixed 한국어 and English, 2025년", *CORPUS[20:26]])
def test_stream_joins_to_decode_without_replacement_chars(text: str):
    tok = tokenizer()
    ids = tok.encode(text)
    pieces = stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_korean_syllables_are_held_back_until_complete():
    tok = tokenizer()
    ids = tok.encode("쫇")  # a rare syllable: several byte tokens
    assert len(ids) > 1
    pieces = stream(tok, ids)
    assert pieces[:-2] == [""] * (len(ids) - 1) and pieces[-2] == "쫇" and pieces[-1] == ""


def test_special_tokens_skipped_or_kept():
    tok = tokenizer()
    ids = tok.encode("<|im_start|>assistant\n안녕<|endofturn|>", allow_special=True)
    assert "".join(stream(tok, ids)) == "assistant\n안녕" == tok.decode(ids, skip_special=True)
    assert "".join(stream(tok, ids, skip_special=False)) == tok.decode(ids)


@settings(max_examples=400, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(min_value=0, max_value=300),
                              st.integers(min_value=0, max_value=110600)),
                    max_size=16),
       skip=st.booleans())
def test_any_ids_stream_to_decode(ids: list[int], skip: bool):
    """Arbitrary ids (stray continuation bytes, cut characters): still exactly decode's text, U+FFFD
    included."""
    tok = tokenizer()
    assert "".join(stream(tok, ids, skip_special=skip)) == tok.decode(ids, skip_special=skip)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=20))
def test_any_text_streams_without_replacement_chars(text: str):
    tok = tokenizer()
    ids = tok.encode(text)
    pieces = stream(tok, ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


def test_finalize_flushes_an_incomplete_tail_and_resets():
    tok = tokenizer()
    ids = tok.encode("쫇")
    detok = StreamingDetokenizer(tok)
    assert detok.add(ids[0]) == ""
    assert detok.finalize() == tok.decode(ids[:1])  # a cut character ends as U+FFFD, as decode does
    assert "".join([detok.add(i) for i in ids] + [detok.finalize()]) == "쫇"
