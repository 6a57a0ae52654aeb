"""The generation loop, the three API layers, the chat session and parity with transformers' generate."""

import threading

import numpy as np
import pytest

from clova_edge import Engine, GenerationSettings, PromptError
from clova_edge.runtime.generate import generate_tokens


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Engine.load(tiny_model_dir, variant="fp32", threads=2)


GREEDY = GenerationSettings(max_new_tokens=24, temperature=0.0, repetition_penalty=1.2)


def _ids(engine, prompt, settings, stop_ids=()):
    ids = engine.encode(prompt)
    cache = engine.model.new_cache(len(ids) + settings.max_new_tokens)
    return list(generate_tokens(engine.model, cache, ids, settings, stop_ids=stop_ids))


def test_prefill_then_decode_matches_one_full_forward(tiny):
    ids = np.array(tiny.encode("안녕하세요, KV cache parity! 1234"), np.int64)
    model = tiny.model
    full = model.prefill(model.new_cache(64), ids, all_logits=True)          # (S, V)
    cache = model.new_cache(64)
    got = [model.prefill(cache, ids[:5])]
    got += [model.decode(cache, int(t)).copy() for t in ids[5:]]
    np.testing.assert_allclose(np.stack(got), full[4:], atol=2e-4, rtol=1e-4)


def test_three_layers_agree(tiny):
    ids = _ids(tiny, "Tell me a story.", GREEDY)
    events = list(tiny.stream("Tell me a story.", GREEDY))
    text = "".join(e.text for e in events)
    assert [e.token_id for e in events if e.token_id is not None] == ids[:len(events) - 1]
    assert text == tiny.generate("Tell me a story.", GREEDY)
    assert text == tiny.tokenizer.decode(ids, skip_special=True)
    assert "\ufffd" not in "".join(e.text for e in events[:-1]) or "\ufffd" in text
    last = events[-1]
    assert last.finish_reason == "length" and last.n_generated == 24 and last.ttft_s > 0


def test_stop_string_is_cut_and_never_shown(tiny):
    full = tiny.generate("Count with me.", GREEDY)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assume_ok = stop.strip() and stop in full
    if not assume_ok:
        pytest.skip("random model produced no usable stop string")
    settings = GenerationSettings(max_new_tokens=24, repetition_penalty=1.2, stop=(stop,))
    events = list(tiny.stream("Count with me.", settings))
    text = "".join(e.text for e in events)
    assert text == full[: full.index(stop)]
    assert events[-1].finish_reason == "stop"


def test_prompt_errors(tiny):
    with pytest.raises(PromptError):
        list(tiny.stream("", GREEDY, chat_template=False))
    too_long = "word " * (tiny.model.config.context_length + 10)
    with pytest.raises(PromptError, match="context"):
        list(tiny.stream(too_long, GREEDY, chat_template=False))
    with pytest.raises(PromptError, match="surrogate"):
        tiny.generate("bad \ud800 text", GREEDY)


def test_generation_stops_at_the_context_with_length(tiny):
    ctx = tiny.model.config.context_length
    ids = tiny.tokenizer.encode("a " * (ctx - 5))[: ctx - 5]
    cache = tiny.model.new_cache(ctx)
    out = list(generate_tokens(tiny.model, cache, ids, GenerationSettings(max_new_tokens=50)))
    assert len(out) == 6 and cache.length == ctx  # 5 fed back + the last one sampled at the full context


def test_chat_reuses_the_cache_and_matches_a_fresh_render(tiny):
    chat = tiny.chat(system="You are terse.", settings=GREEDY)
    first = "".join(e.text for e in chat.send("Hello there"))
    events = list(chat.send("And again?"))
    second = "".join(e.text for e in events)
    conversation = chat.messages[:-1]                       # tool_list, system, user, assistant, user
    assert [m["role"] for m in conversation] == ["tool_list", "system", "user", "assistant", "user"]
    assert conversation[1]["content"] == "You are terse." and conversation[3]["content"] == first
    full_len = len(tiny.encode(conversation))
    assert events[-1].n_prompt < full_len // 2              # turn 2 prefilled only its new tokens
    assert second == tiny.generate(conversation, GREEDY)    # ... and answers as a fresh run would


def test_interrupted_stream_leaves_engine_and_chat_usable(tiny):
    chat = tiny.chat(settings=GREEDY)
    stream = chat.send("Interrupt me")
    partial = "".join(next(stream).text for _ in range(3))
    stream.close()
    assert chat.messages[-1] == {"role": "assistant", "content": partial}
    assert chat.tokens_in_context > 0
    assert "".join(e.text for e in chat.send("next")) is not None
    assert tiny.generate("Tell me a story.", GREEDY) == tiny.generate("Tell me a story.", GREEDY)


def test_one_engine_serves_several_threads(tiny):
    prompts = ["first prompt", "두 번째 질문", "third one here"]
    expected = [tiny.generate(p, GREEDY) for p in prompts]
    got = [None] * len(prompts)

    def work(i):
        got[i] = tiny.generate(prompts[i], GREEDY)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_seeded_sampling_is_reproducible(tiny):
    s = GenerationSettings(max_new_tokens=16, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    assert _ids(tiny, "sample", s) == _ids(tiny, "sample", s)


def test_chunked_prefill_equals_one_run(tiny, monkeypatch):
    from clova_edge.runtime import model as model_module
    ids = np.array(tiny.encode("chunked prefill must not change a single logit " * 6), np.int64)
    model = tiny.model
    whole = model.prefill(model.new_cache(256), ids, all_logits=True)
    monkeypatch.setattr(model_module, "PREFILL_CHUNK", 7)
    cache = model.new_cache(256)
    chunked = model.prefill(cache, ids, all_logits=True)
    np.testing.assert_allclose(chunked, whole, atol=2e-4, rtol=1e-4)
    last = model.prefill(model.new_cache(256), ids)
    np.testing.assert_allclose(last, whole[-1], atol=2e-4, rtol=1e-4)
    assert cache.length == len(ids)
