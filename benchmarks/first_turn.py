"""The first turn of a chat with the prompt cache warm: clova-edge against llama.cpp and its prompt cache.

The prompt (issue 13's target): HyperCLOVAX's opening blocks — tool_list, then system with the card's default
system prompt and today's date, built by clova-edge's ChatFormat from the clova folder's tokenizer — then a
user message of USER_TOKENS tokens, another one in every repetition, so that only the opening can be reused.
TTFT runs from the start of a fresh conversation to its first token, through each runtime's own mechanism:
  clova-edge  engine.chat() (the opening's rows copied from the Engine's prompt cache) + send(text): the
              product path (peers/clova.py checks that its ids are exactly the spec's)
  llama.cpp   generate(opening + turn) on the context the previous turn left: llama-cpp-python keeps the
              KV rows of the longest common prefix (the opening) and evaluates only the turn, as the
              server's cache_prompt does per slot (peers/llamacpp.py says why not load_state).
The first repetition runs cold (the opening is prefilled too, then kept) and is reported apart; the warm
ones are the figure. Imported by protocol.py inside the peers' environments: numpy only at the top.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

USER_TOKENS = 20
TARGET_MS = 150.0     # issue 13: warm first-turn TTFT at most this
# one-token words (with their leading space) of the tokenizer stand-in and HyperCLOVAX's own (cl100k-based)
WORDS = ("Please tell me about the weather in Seoul today and whether I should take an umbrella to work "
         "this morning or not at all because it might rain later in the day").split()


def _message(tok: Any, r: int) -> str:
    """A message of exactly USER_TOKENS tokens, different for every r (the words rotated)."""
    words = WORDS[r % len(WORDS):] + WORDS[:r % len(WORDS)]
    for n in range(USER_TOKENS, 0, -1):
        text = " ".join(words[:n])
        if len(tok.encode(text)) <= USER_TOKENS:
            break
    while len(tok.encode(text)) < USER_TOKENS:
        text += " ok"
    return text


def inputs(folder: Path, repetitions: int) -> dict[str, Any]:
    """Spec fields of the first-turn measurement for the clova folder `folder` (its manifest's default system
    prompt, its tokenizer): the system text, the opening's ids, and per repetition (+1 cold) the user text
    and the ids of its turn (user block + generation prompt)."""
    from clova_edge.runtime.chat_template import ChatTemplate
    from clova_edge.runtime.conversation import ChatFormat
    from clova_edge.runtime.manifest import load_manifest
    from clova_edge.runtime.tokenizer import Tokenizer

    m = load_manifest(folder)
    tok = Tokenizer.from_file(m.folder / m.tokenizer_file)
    fmt = ChatFormat(ChatTemplate.from_tokenizer_config(m.folder / m.tokenizer_config_file), tok,
                     default_system=(m.raw.get("chat") or {}).get("default_system"))
    system = fmt.default_system()
    head = fmt.opening(system)
    opening = fmt.encode(head, add_generation_prompt=False)
    texts = tuple(_message(tok, r) for r in range(repetitions + 1))
    turns = []
    for text in texts:
        ids = fmt.encode(head + [{"role": "user", "content": text}])
        assert ids[:len(opening)] == opening
        turns.append(ids[len(opening):])
    return {"chat_system": system or "", "chat_opening": tuple(opening), "chat_texts": texts,
            "chat_turns": tuple(turns)}


def for_row(row: Any, rows: list[Any], spec: Any, what: str) -> tuple[Any, str]:
    """bench.py: the spec and measurements of a speed row, with the first turn added for the clova-edge and
    llama.cpp rows (not the json-schema one) when there is a clova folder to tokenize the prompt with."""
    clova = next((r.path for r in rows if r.peer == "clova"), None)
    if clova is None or row.peer not in ("clova", "llamacpp") or row.label.endswith("json-schema"):
        return spec, what
    return replace(spec, **inputs(clova, spec.repetitions)), what + ",chat"


def measure(adapter: Any, spec: Any, summarize: Any) -> dict[str, Any]:
    """Cold first turn, then the warm ones: seconds from the start of the turn to its first token, and the
    opening tokens each one reused (0 cold, all of them warm: else the cache was not used). summarize:
    protocol.Summary.of (passed in: protocol imports this module)."""
    times, reused = [], []
    for text, turn in zip(spec.chat_texts, spec.chat_turns):
        t0 = time.perf_counter()
        first, n = adapter.first_turn(spec.chat_system, list(spec.chat_opening), text, list(turn))
        times.append(first - t0)
        reused.append(n)
    return {"opening_tokens": len(spec.chat_opening), "user_tokens": USER_TOKENS,
            "turn_tokens": len(spec.chat_turns[0]), "reused_tokens": reused, "cold_s": times[0],
            "ttft_s": asdict(summarize(times[1:])), "target_s": TARGET_MS / 1e3}


def markdown(results: dict[str, Any], name: str) -> list[str]:
    """The table of the rows that measured it (empty if none)."""
    rows = [(label, rec["result"]["chat_first_turn"])
            for label, rec in results["models"][name]["rows"].items()
            if "chat_first_turn" in rec.get("result", {})]
    if not rows:
        return []
    f = rows[0][1]
    lines = [f"### {name}: first chat turn, prompt cache warm ({f['opening_tokens']} opening tokens: "
             f"tool_list + the card's system prompt; a {f['user_tokens']}-token user message, "
             f"{f['turn_tokens']} tokens with its markers; target <= {TARGET_MS:.0f} ms)", "",
             "| runtime | TTFT warm ms | opening tokens reused (warm) | TTFT cold ms (cache empty) | "
             "target met |", "|---|---|---|---|---|"]
    for label, f in rows:
        t = f["ttft_s"]
        lines.append(f"| {label} | {t['median'] * 1e3:.0f} ({t['low'] * 1e3:.0f}-{t['high'] * 1e3:.0f}) | "
                     f"{min(f['reused_tokens'][1:])} | {f['cold_s'] * 1e3:.0f} | "
                     f"{'yes' if t['median'] <= f['target_s'] else 'no'} |")
    return lines + [""]
