"""Encode speed of the runtime tokenizer against the `tokenizers` library on a ~4K-token Korean text.

    python -m clova_edge.benchmarks.studies.tokenizer_speed [--tokenizer PATH/tokenizer.json] [--repeat 20]

Default tokenizer: the HyperCLOVAX stand-in (cl100k_base + HyperCLOVAX's special tokens,
export/tokenizer_standin.py).
Default text: the Korean calibration prose shipped in quant/data/calib.txt, paragraphs appended (last first)
until it is at least 4096 tokens. Reports load time, the first encode (empty per-word cache: what a fresh
process pays), the median warm encode, decode and the streaming detokenizer per token, each against
`tokenizers` where it has one, and checks that both give the same ids.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EVAL_TEXT = REPO / "quant" / "data" / "calib.txt"
TARGET_TOKENS = 4096


def korean_text(count_tokens, target: int = TARGET_TOKENS) -> str:
    """calib.txt, then its paragraphs from the last one back, until count_tokens(text) >= target."""
    base = EVAL_TEXT.read_text(encoding="utf-8").strip()
    paragraphs = [p for p in base.split("\n\n") if p.strip()]
    text, extra = base, list(reversed(paragraphs))
    while count_tokens(text) < target and extra:
        text += "\n\n" + extra.pop(0)
    return text


def timed(fn, repeat: int) -> tuple[float, float]:
    """(first call seconds, median seconds of the next `repeat` calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, help="a tokenizer.json (default: the HyperCLOVAX stand-in)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    import tokenizers

    from clova_edge.runtime.detokenizer import StreamingDetokenizer
    from clova_edge.runtime.tokenizer import Tokenizer

    path = args.tokenizer
    if path is None:
        from clova_edge.export.tokenizer_standin import write_hyperclovax_standin

        folder = REPO / ".cache" / "tokenizer-standin" / "bench-hyperclovax"
        write_hyperclovax_standin(folder)
        path = folder / "tokenizer.json"

    t0 = time.perf_counter()
    ours = Tokenizer.from_file(path)
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = tokenizers.Tokenizer.from_file(str(path))
    load_ref = time.perf_counter() - t0
    ref.encode_special_tokens = True  # user text: special-token strings stay text, as in our encode()

    text = korean_text(lambda s: len(ref.encode(s, add_special_tokens=False).ids))
    ids = ref.encode(text, add_special_tokens=False).ids
    cold_ours, warm_ours = timed(lambda: ours.encode(text), args.repeat)
    cold_ref, warm_ref = timed(lambda: ref.encode(text, add_special_tokens=False), args.repeat)
    _, decode_ours = timed(lambda: ours.decode(ids), args.repeat)
    _, decode_ref = timed(lambda: ref.decode(ids, skip_special_tokens=False), args.repeat)

    def stream():
        detok = StreamingDetokenizer(ours)
        return "".join([detok.add(i) for i in ids]) + detok.finalize()

    _, stream_ours = timed(stream, args.repeat)
    same = ours.encode(text) == ids and stream() == ref.decode(ids)

    print(f"tokenizer: {path}")
    print(f"text: {len(text)} chars, {len(ids)} tokens (Korean, from {EVAL_TEXT.name}); same ids: {same}")
    print(f"{'':28}{'clova-edge':>12}{'tokenizers':>12}{'ratio':>8}")
    rows = [("load (s)", load_ours, load_ref), ("encode, first call (ms)", cold_ours * 1e3, cold_ref * 1e3),
            ("encode, warm median (ms)", warm_ours * 1e3, warm_ref * 1e3),
            ("decode (ms)", decode_ours * 1e3, decode_ref * 1e3)]
    for name, a, b in rows:
        print(f"{name:28}{a:12.2f}{b:12.2f}{a / b:8.2f}")
    print(f"{'stream detokenize (us/tok)':28}{stream_ours / len(ids) * 1e6:12.2f}")
    print(f"encode throughput: clova-edge {len(ids) / warm_ours:,.0f} tok/s warm, "
          f"{len(ids) / cold_ours:,.0f} "
          f"tok/s first call; tokenizers {len(ids) / warm_ref:,.0f} tok/s warm")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
