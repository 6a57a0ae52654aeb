"""The prompt cache: a warm first turn prefills only the user's message and gives exactly the same logits and
ids as a chat without the cache (tiny HyperCLOVAX-format model); disk entries survive a restart and a
damaged or foreign one is ignored, never used."""

from __future__ import annotations

import numpy as np
import pytest

from clova_edge import Engine
from clova_edge.runtime.prompt_cache import PromptCache
from clova_edge.runtime.settings import GenerationSettings

SAMPLED = GenerationSettings(max_new_tokens=10, temperature=1.0, top_k=40, seed=7, repetition_penalty=1.2)
def same_logits(xs, ys) -> bool:
    """Equal logits. Byte-equal on x86-64 (measured), but a prompt prefilled in two runs instead of one may
    round differently where a CPU's kernels tile by the number of rows (arm64 under test-arm differed in
    [None] below): within 1e-5 of the largest logit, and the sampled ids are always compared exactly."""
    return len(xs) == len(ys) and all(
        np.array_equal(a, b) or np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(a).max()))
        for a, b in zip(xs, ys))


TURNS = ["서울 날씨 어때? Tell me in one short sentence, please, with some detail about the wind.",
         "And tomorrow?"]


class Recorder:
    """Wraps an OnnxModel: records every prefill's length and every logits row the generation saw."""

    def __init__(self, model):
        self.model, self.prefilled, self.logits = model, [], []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def prefill(self, cache, ids, **kw):
        self.prefilled.append(len(ids))
        out = self.model.prefill(cache, ids, **kw)
        self.logits.append(np.array(out))
        return out

    def decode(self, cache, token):
        out = self.model.decode(cache, token)
        self.logits.append(np.array(out))
        return out


def recorded(folder, **kw) -> tuple[Engine, Recorder]:
    engine = Engine.load(folder, variant="fp32", threads=1, **kw)
    engine.model = Recorder(engine.model)
    engine.prompt_cache.model = engine.model
    return engine, engine.model


def chat_run(engine, rec):
    chat = engine.chat(settings=SAMPLED)
    rec.prefilled.clear()
    rec.logits.clear()
    ids = [[e.token_id for e in chat.send(t)] for t in TURNS]
    return ids, list(rec.prefilled), list(rec.logits), chat


def test_warm_chat_is_byte_exact_and_prefills_only_the_message(tiny_model_dir):
    off, off_rec = recorded(tiny_model_dir, prompt_cache=False)
    on, on_rec = recorded(tiny_model_dir)
    want_ids, off_prefilled, want_logits, _ = chat_run(off, off_rec)
    opening = len(on.opening_ids(on.format.opening()))
    assert opening > 20                                  # the card's tool_list + system blocks
    on.chat(settings=SAMPLED)                            # the first chat of this Engine fills the cache
    assert (on.prompt_cache.misses, on.prompt_cache.hits) == (1, 0)
    ids, prefilled, logits, chat = chat_run(on, on_rec)  # warm
    assert on.prompt_cache.hits == 1
    assert ids == want_ids
    assert same_logits(logits, want_logits)
    user = len(on.encode(TURNS[0])) - opening
    assert prefilled[0] == user and off_prefilled[0] == user + opening
    assert prefilled[1:] == off_prefilled[1:]


def test_one_shot_stream_uses_it_too(tiny_model_dir):
    off, _ = recorded(tiny_model_dir, prompt_cache=False)
    on, rec = recorded(tiny_model_dir)
    want = [e.token_id for e in off.stream(TURNS[0], SAMPLED)]
    assert [e.token_id for e in on.stream(TURNS[0], SAMPLED)] == want     # cold
    rec.prefilled.clear()
    events = list(on.stream(TURNS[0], SAMPLED))                           # warm
    assert [e.token_id for e in events] == want
    assert rec.prefilled == [events[-1].n_prompt] and events[-1].n_prompt < len(on.encode(TURNS[0])) // 2
    # another system prompt, raw text: not the cached opening
    assert [e.token_id for e in on.stream("hi", SAMPLED, system="Be brief.")] == \
        [e.token_id for e in off.stream("hi", SAMPLED, system="Be brief.")]
    assert [e.token_id for e in on.stream("hi", SAMPLED, chat_template=False)] == \
        [e.token_id for e in off.stream("hi", SAMPLED, chat_template=False)]


def test_disk_entries_survive_a_restart_and_bad_ones_are_ignored(tiny_model_dir, tmp_path):
    folder = tmp_path / "pc"
    first, _ = recorded(tiny_model_dir, prompt_cache_dir=folder)
    want, _, want_logits, _ = chat_run(first, first.model)
    files = list(folder.glob("*.kv"))
    assert len(files) == 1
    again, rec = recorded(tiny_model_dir, prompt_cache_dir=folder)          # a new process, in effect
    ids, prefilled, logits, _ = chat_run(again, rec)
    assert again.prompt_cache.disk_hits == 1 and again.prompt_cache.misses == 0
    assert ids == want and same_logits(logits, want_logits)
    assert prefilled[0] == len(again.encode(TURNS[0])) - len(again.opening_ids(again.format.opening()))

    data = bytearray(files[0].read_bytes())
    data[-5] ^= 0xFF                                                         # one flipped bit of a row
    files[0].write_bytes(bytes(data))
    damaged, rec = recorded(tiny_model_dir, prompt_cache_dir=folder)
    assert chat_run(damaged, rec)[0] == want
    assert damaged.prompt_cache.disk_hits == 0 and damaged.prompt_cache.misses == 1
    fresh, _ = recorded(tiny_model_dir, prompt_cache_dir=folder)             # rewritten after the prefill
    fresh.chat(settings=SAMPLED)
    assert fresh.prompt_cache.disk_hits == 1


def test_a_file_of_other_ids_under_the_key_is_not_used(tiny_model_dir, tmp_path):
    engine, _ = recorded(tiny_model_dir, prompt_cache_dir=tmp_path)
    engine.chat(settings=SAMPLED, system="A")
    (path,) = tmp_path.glob("*.kv")
    ids = engine.opening_ids(engine.format.opening())                       # the default opening's key
    path.rename(engine.prompt_cache._path(engine.prompt_cache.key(ids)))
    other, _ = recorded(tiny_model_dir, prompt_cache_dir=tmp_path)
    other.chat(settings=SAMPLED)
    assert other.prompt_cache.disk_hits == 0 and other.prompt_cache.misses == 1


def test_an_unwritable_folder_only_keeps_it_in_memory(tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    engine, _ = recorded(tiny_model_dir, prompt_cache_dir=blocker / "pc")
    engine.chat(settings=SAMPLED)
    engine.chat(settings=SAMPLED)
    assert (engine.prompt_cache.misses, engine.prompt_cache.hits) == (1, 1)


def test_memory_is_bounded(tiny_model_dir):
    engine, _ = recorded(tiny_model_dir)
    engine.prompt_cache = cache = PromptCache(engine.model, max_entries=2)
    for system in ("A", "B", "C"):
        engine.chat(settings=SAMPLED, system=system)
    assert len(cache._rows) == 2
    engine.chat(settings=SAMPLED, system="A")                                # the oldest was dropped
    assert cache.misses == 4
    tight = PromptCache(engine.model, max_bytes=1)                           # one entry is always kept
    engine.prompt_cache = tight
    engine.chat(settings=SAMPLED, system="A")
    engine.chat(settings=SAMPLED, system="B")
    assert len(tight._rows) == 1


@pytest.mark.parametrize("system", ["새 시스템 프롬프트", None])
def test_set_system_warms_the_new_opening(tiny_model_dir, system):
    off, off_rec = recorded(tiny_model_dir, prompt_cache=False)
    on, on_rec = recorded(tiny_model_dir)
    results = []
    for engine, rec in ((off, off_rec), (on, on_rec)):
        chat = engine.chat(settings=SAMPLED)
        list(chat.send(TURNS[0]))
        chat.set_system(system)
        rec.logits.clear()
        results.append(([e.token_id for e in chat.send(TURNS[1])], list(rec.logits)))
    assert results[0][0] == results[1][0]
    assert same_logits(results[0][1], results[1][1])
